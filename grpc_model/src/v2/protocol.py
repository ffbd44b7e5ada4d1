"""The V2 calls, transport-free: what the gRPC service and the REST routes both answer."""

import importlib.metadata
import logging
import time
from dataclasses import dataclass

from grpc_model.src.inference import Inference, OverBudgetError
from grpc_model.src.metadata import ModelSpec
from grpc_model.src.runtime import (
    ModelLoadError,
    ModelNotLoadedError,
    ModelUnavailableError,
    QueueFullError,
    TensorSignature,
)
from grpc_model.src.v2 import numeric, repository
from grpc_model.src.v2.tensors import BYTES, InferRequest, InferResponse, Problem, V2Error, V2Model, flag

logger = logging.getLogger(__name__)

SERVER_NAME = "grpc-model"
EXTENSIONS = ("binary_tensor_data", *repository.EXTENSIONS)
"""The REST binary data extension, as tritonclient's HTTP client sends; the model-repository extension."""


@dataclass(frozen=True)
class TensorMetadata:
    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class ModelMetadata:
    name: str
    versions: tuple[str, ...]
    platform: str
    inputs: tuple[TensorMetadata, ...]
    outputs: tuple[TensorMetadata, ...]


class V2Protocol:
    def __init__(self, inference: Inference, spec: ModelSpec, max_answer_bytes: int) -> None:
        self.inference = inference
        self.model = V2Model.of(spec)
        self.load_wait_seconds = spec.timeout.status_seconds
        """V2 clients never call Status: readiness and inference wait for a load as long as Status would."""
        self.max_answer_bytes = max_answer_bytes
        """max_send_message_bytes, for REST answers too: a larger answer is refused before it is built."""

    def server_metadata(self) -> tuple[str, str, tuple[str, ...]]:
        """Name, version and extensions of the server."""
        try:
            version = importlib.metadata.version(SERVER_NAME)
        except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
            version = "unknown"
        return SERVER_NAME, version, EXTENSIONS

    def server_ready(self) -> bool:
        """Whether the model can take work now; starts loading it without waiting (readiness probes are short)."""
        if not self.inference.runtime.is_loaded:
            self.inference.start_loading()
        return self.inference.runtime.available

    async def model_ready(self, name: str, version: str) -> bool:
        """Loads the model if needed (waiting as long as Status would); whether it can take work."""
        self.model.check(name, version)
        try:
            await self._loaded()
        except ModelLoadError:
            return False
        return self.inference.runtime.available

    async def _loaded(self) -> None:
        """Loads the model unless it is loaded; the check first spares every call a load task."""
        if not self.inference.runtime.is_loaded:
            await self.inference.ensure_loaded(self.load_wait_seconds)

    async def model_metadata(self, name: str, version: str) -> ModelMetadata:
        """The model's tensors: a runtime's own (loading it, since they come from its file), else one BYTES
        tensor per file."""
        self.model.check(name, version)
        signature = await self._signature()
        if signature is not None:
            inputs = tuple(TensorMetadata(t.name, t.datatype, t.shape) for t in signature.inputs)
            outputs = tuple(TensorMetadata(t.name, t.datatype, t.shape) for t in signature.outputs)
        else:
            inputs = tuple(TensorMetadata(input_name, BYTES, (-1,)) for input_name in self.model.inputs)
            outputs = tuple(TensorMetadata(output_name, BYTES, (-1,)) for output_name in self.model.outputs)
        return ModelMetadata(self.model.name, (self.model.version,), SERVER_NAME, inputs, outputs)

    async def _signature(self) -> TensorSignature | None:
        """The numeric tensors of a model that declares them, loading it first; raises UNAVAILABLE when it cannot."""
        if not self.inference.declares_tensors:
            return None
        try:
            await self._loaded()
        except ModelLoadError as error:
            raise V2Error(Problem.UNAVAILABLE, str(error)) from None
        return self.inference.signature

    async def infer(self, request: InferRequest) -> InferResponse:
        """Runs the request's items (or rows, for a model with numeric tensors) through the shared data plane;
        raises V2Error."""
        started = time.perf_counter()
        self.model.check(request.model_name, request.model_version)
        self.model.check_outputs(request)
        signature = await self._signature()
        items = self.model.items(request) if signature is None else numeric.rows(self.model, request, signature)
        detect_drift, explain = flag(request.parameters, "detect_drift"), flag(request.parameters, "explain")
        try:
            await self._loaded()
            if signature is None:
                results = await self.inference.run(items, detect_drift, explain, request.size)
            else:
                results = await self.inference.run_rows(items, detect_drift, explain, request.size)
        except (ModelLoadError, ModelNotLoadedError, ModelUnavailableError) as error:
            raise V2Error(Problem.UNAVAILABLE, str(error)) from None
        except (QueueFullError, OverBudgetError) as error:
            raise V2Error(Problem.EXHAUSTED, str(error)) from None
        except Exception as error:
            logger.exception("ModelInfer failed inside the framework")
            raise V2Error(Problem.INTERNAL, f"internal error: {type(error).__name__}: {error}") from None
        if signature is None:
            response = self.model.response(request, results)
        else:
            response = numeric.response(self.model, request, results, signature)
        if response.size > self.max_answer_bytes:
            raise V2Error(
                Problem.INVALID,
                f"the answer would take at least {response.size} bytes, over max_send_message_bytes "
                f"({self.max_answer_bytes} bytes): send fewer items per call, or ask for fewer outputs",
            )
        if logger.isEnabledFor(logging.DEBUG):  # the access line: DEBUG, as Run's (docs/operations.md, Logs)
            failed = sum(not result.success for result in results)
            elapsed_ms = (time.perf_counter() - started) * 1000
            logger.debug("ModelInfer: %d items (%d failed) in %.1f ms", len(items), failed, elapsed_ms)
        return response
