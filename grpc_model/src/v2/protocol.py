"""The V2 calls, transport-free: what the gRPC service and the REST routes both answer."""

import importlib.metadata
import logging
import time
from dataclasses import dataclass

from grpc_model.src.inference import Inference, OverBudgetError
from grpc_model.src.repository.registry import ModelRegistry, UnknownModelError
from grpc_model.src.runtime import (
    ModelLoadError,
    ModelNotLoadedError,
    ModelUnavailableError,
    QueueFullError,
    TensorSignature,
)
from grpc_model.src.v2 import numeric
from grpc_model.src.v2.tensors import BYTES, InferRequest, InferResponse, Problem, V2Error, V2Model, flag

logger = logging.getLogger(__name__)

SERVER_NAME = "grpc-model"
EXTENSIONS = ("binary_tensor_data",)  # the REST binary data extension, as tritonclient's HTTP client sends


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


@dataclass(frozen=True)
class V2Endpoint:
    """One served model version as V2 calls reach it: its data plane and its tensors."""

    inference: Inference
    model: V2Model


class V2Protocol:
    def __init__(self, registry: ModelRegistry, max_answer_bytes: int) -> None:
        self.registry = registry
        self.max_answer_bytes = max_answer_bytes
        """max_send_message_bytes, for REST answers too: a larger answer is refused before it is built."""
        self._models: dict[int, V2Endpoint] = {}

    async def endpoint(self, name: str, version: str) -> V2Endpoint:
        """The model version a call names (an empty version: the newest served); raises NOT_FOUND for one not
        served, UNAVAILABLE for one that cannot be."""
        try:
            inference = await self.registry.resolve(name, version)
        except UnknownModelError as error:
            raise V2Error(Problem.NOT_FOUND, str(error)) from None
        except ModelLoadError as error:
            raise V2Error(Problem.UNAVAILABLE, str(error)) from None
        endpoint = self._models.get(id(inference))
        if endpoint is None or endpoint.inference is not inference:
            endpoint = self._models[id(inference)] = V2Endpoint(inference, V2Model.of(inference.spec))
        return endpoint

    def server_metadata(self) -> tuple[str, str, tuple[str, ...]]:
        """Name, version and extensions of the server."""
        try:
            version = importlib.metadata.version(SERVER_NAME)
        except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
            version = "unknown"
        return SERVER_NAME, version, EXTENSIONS

    def server_ready(self) -> bool:
        """Whether a model can take work now; starts loading those not loaded without waiting (readiness probes
        are short)."""
        for inference in self.registry.endpoints:
            if not inference.runtime.is_loaded:
                inference.start_loading()
        return self.registry.ready()

    async def model_ready(self, name: str, version: str) -> bool:
        """Loads the model if needed (waiting as long as Status would); whether it can take work."""
        try:
            endpoint = await self.endpoint(name, version)
        except V2Error as error:
            if error.problem is Problem.UNAVAILABLE:
                return False
            raise
        try:
            await _loaded(endpoint.inference)
        except ModelLoadError:
            return False
        return endpoint.inference.runtime.available

    async def model_metadata(self, name: str, version: str) -> ModelMetadata:
        """The model's tensors: a runtime's own (loading it, since they come from its file), else one BYTES
        tensor per file."""
        endpoint = await self.endpoint(name, version)
        model = endpoint.model
        signature = await _signature(endpoint.inference)
        if signature is not None:
            inputs = tuple(TensorMetadata(t.name, t.datatype, t.shape) for t in signature.inputs)
            outputs = tuple(TensorMetadata(t.name, t.datatype, t.shape) for t in signature.outputs)
        else:
            inputs = tuple(TensorMetadata(input_name, BYTES, (-1,)) for input_name in model.inputs)
            outputs = tuple(TensorMetadata(output_name, BYTES, (-1,)) for output_name in model.outputs)
        versions = tuple(self.registry.served_versions(model.name)) or (model.version,)
        return ModelMetadata(model.name, versions, SERVER_NAME, inputs, outputs)

    async def infer(self, request: InferRequest, endpoint: V2Endpoint) -> InferResponse:
        """Runs the request's items (or rows, for a model with numeric tensors) through the endpoint's data plane;
        raises V2Error."""
        started = time.perf_counter()
        inference, model = endpoint.inference, endpoint.model
        model.check_outputs(request)
        signature = await _signature(inference)
        items = model.items(request) if signature is None else numeric.rows(model, request, signature)
        detect_drift, explain = flag(request.parameters, "detect_drift"), flag(request.parameters, "explain")
        try:
            await _loaded(inference)
            if signature is None:
                results = await inference.run(items, detect_drift, explain, request.size)
            else:
                results = await inference.run_rows(items, detect_drift, explain, request.size)
        except (ModelLoadError, ModelNotLoadedError, ModelUnavailableError) as error:
            raise V2Error(Problem.UNAVAILABLE, str(error)) from None
        except (QueueFullError, OverBudgetError) as error:
            raise V2Error(Problem.EXHAUSTED, str(error)) from None
        except Exception as error:
            logger.exception("ModelInfer failed inside the framework")
            raise V2Error(Problem.INTERNAL, f"internal error: {type(error).__name__}: {error}") from None
        if signature is None:
            response = model.response(request, results)
        else:
            response = numeric.response(model, request, results, signature)
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


async def _loaded(inference: Inference) -> None:
    """Loads the model unless it is loaded, waiting as long as Status would (V2 clients never call Status); the
    check first spares every call a load task."""
    if not inference.runtime.is_loaded:
        await inference.ensure_loaded(inference.spec.timeout.status_seconds)


async def _signature(inference: Inference) -> TensorSignature | None:
    """The numeric tensors of a model that declares them, loading it first; raises UNAVAILABLE when it cannot."""
    if not inference.declares_tensors:
        return None
    try:
        await _loaded(inference)
    except ModelLoadError as error:
        raise V2Error(Problem.UNAVAILABLE, str(error)) from None
    return inference.signature
