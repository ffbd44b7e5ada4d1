"""The ModzyModel protocol: turns Status, Run and Shutdown calls into runtime calls.

Nothing here knows how the model runs; nothing in the runtime knows about protobuf.
"""

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health, health_pb2

from grpc_model.src.auto_generated.model2_template import model_pb2 as pb
from grpc_model.src.auto_generated.model2_template.model_pb2_grpc import ModzyModelServicer
from grpc_model.src.inference import Inference
from grpc_model.src.metadata import ModelSpec
from grpc_model.src.runtime import (
    ModelLoadError,
    ModelNotLoadedError,
    ModelRuntime,
    ModelUnavailableError,
    QueueFullError,
)
from grpc_model.src.security.limits import OverBudgetError

logger = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ModzyModel"].full_name
SHUTDOWN_TOKEN_METADATA = "shutdown-token"
HEALTH_SERVICES = ("", SERVICE_NAME)  # "" is the whole server, as grpc health checkers expect


class ModzyModelService(ModzyModelServicer):
    def __init__(
        self,
        runtime: ModelRuntime,
        spec: ModelSpec,
        health_servicer: health.aio.HealthServicer,
        inference: Inference,
        shutdown_policy: str = "allowed",
        shutdown_token: str = "",
        status_timeout: float | None = None,
    ) -> None:
        self.status_timeout = status_timeout
        self.runtime = runtime
        self.inference = inference
        self.shutdown_policy = shutdown_policy
        self.shutdown_token = shutdown_token
        self.health = health_servicer
        self.shutdown_requested = asyncio.Event()
        self._health_updates: set[asyncio.Future[None]] = set()
        self._metadata = status_metadata(spec)

    async def ensure_model_loaded(self, wait_seconds: float | None = None) -> None:
        """Loads the model if needed and reports SERVING once it is; raises ModelLoadError.

        A load that outlives `wait_seconds` goes on in the background: health turns SERVING when
        it finishes, and a later Status reports it.
        """
        loading = asyncio.ensure_future(self._load_and_report())
        loading.add_done_callback(_retrieve_exception)
        try:
            await asyncio.wait_for(asyncio.shield(loading), wait_seconds)
        except TimeoutError:
            previous = self.runtime.last_load_error
            raise ModelLoadError(
                f"the model did not finish loading within the status timeout of {wait_seconds:g} s "
                "(timeout.status in model.yaml); it goes on loading and a later Status reports the result"
                + (f"; the last load failed: {previous}" if previous else "")
            ) from None

    async def _load_and_report(self) -> None:
        # Only the call that loads reports SERVING: later ones must not overrule what worker
        # capacity has set since (NOT_SERVING while every worker is being replaced).
        if await self.runtime.load() and not self.shutdown_requested.is_set():
            await self._set_health(health_pb2.HealthCheckResponse.SERVING)

    async def Status(self, request: pb.StatusRequest, context: grpc.aio.ServicerContext) -> pb.StatusResponse:  # type: ignore[type-arg]
        started = time.perf_counter()
        try:
            await self.ensure_model_loaded(self.status_timeout)
        except ModelLoadError as error:
            response = pb.StatusResponse(status_code=500, status="Internal Server Error", message=str(error))
        else:
            condition = self.runtime.condition
            if not self.runtime.available:
                message = f"The model is loaded but cannot take work: {condition}"
                response = pb.StatusResponse(status_code=503, status="Service Unavailable", message=message)
            else:
                message = f"Model is loaded; {condition}." if condition else "Model is loaded."
                response = pb.StatusResponse(status_code=200, status="OK", message=message)
        response.MergeFrom(self._metadata)
        logger.info("Status: %d in %.1f ms", response.status_code, (time.perf_counter() - started) * 1000)
        return response

    async def Run(self, request: pb.RunRequest, context: grpc.aio.ServicerContext) -> pb.RunResponse:  # type: ignore[type-arg]
        started = time.perf_counter()
        count = len(request.inputs)
        try:
            items = [item.input for item in request.inputs]
            results = await self.inference.run(items, request.detect_drift, request.explain, request.ByteSize())
        except ModelNotLoadedError as error:
            message = str(error)
            outputs = [pb.OutputItem(output={"error": message.encode()}, success=False) for _ in range(count)]
            return pb.RunResponse(status_code=503, status="Service Unavailable", message=message, outputs=outputs)
        except ModelUnavailableError as error:
            logger.warning("Run: %d items refused: %s", count, error)
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(error))
        except (QueueFullError, OverBudgetError) as error:
            logger.warning("Run: %d items refused: %s", count, error)
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(error))
        except Exception as error:
            # A bug in the framework itself: fail this call loudly, keep the server up.
            logger.exception("Run failed inside the framework")
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(error).__name__}: {error}")
        succeeded = sum(result.success for result in results)
        response = pb.RunResponse(
            status_code=200, status="OK", message=f"Inference executed: {succeeded} of {count} items succeeded."
        )
        for result in results:
            # Filled in place: building OutputItems first would copy every output file once more.
            response.outputs.add(success=result.success).output.update(result.output)
        elapsed = time.perf_counter() - started
        logger.info(
            "Run: %d items (%d failed) in %.1f ms, %.1f items/s",
            count,
            count - succeeded,
            elapsed * 1000,
            count / elapsed if elapsed > 0 else 0.0,
        )
        return response

    async def Shutdown(
        self,
        request: pb.ShutdownRequest,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> pb.ShutdownResponse:
        refusal = self._shutdown_refusal(context)
        if refusal:
            logger.warning("Shutdown refused for %s: %s", context.peer(), refusal)
            return pb.ShutdownResponse(status_code=403, status="Forbidden", message=refusal)
        logger.info("Shutdown requested by %s", context.peer())
        self.request_shutdown()
        await self.health.enter_graceful_shutdown()  # NOT_SERVING before the caller hears back
        return pb.ShutdownResponse(status_code=200, status="OK", message="Model server is shutting down.")

    def _shutdown_refusal(self, context: grpc.aio.ServicerContext) -> str | None:  # type: ignore[type-arg]
        """Why this Shutdown call may not stop the server, or None when it may."""
        if self.shutdown_policy == "disabled":
            return "Shutdown is disabled on this server (GRPC_MODEL_SHUTDOWN=disabled)"
        if self.shutdown_policy == "token":
            sent = dict(context.invocation_metadata() or ()).get(SHUTDOWN_TOKEN_METADATA)
            if not isinstance(sent, str) or not hmac.compare_digest(sent, self.shutdown_token):
                return f"Shutdown needs the server's token in the '{SHUTDOWN_TOKEN_METADATA}' call metadata"
        return None

    def on_capacity_change(self, available: bool) -> None:
        """Health tells the truth: NOT_SERVING while no worker process or model thread can take work."""
        if self.shutdown_requested.is_set():
            return
        status = health_pb2.HealthCheckResponse.SERVING if available else health_pb2.HealthCheckResponse.NOT_SERVING
        logger.warning(
            "model capacity %s; health %s", "back" if available else "lost", "SERVING" if available else "NOT_SERVING"
        )
        task = asyncio.ensure_future(self._set_health(status))
        self._health_updates.add(task)
        task.add_done_callback(self._health_updates.discard)

    def request_shutdown(self) -> None:
        """Wakes the serving loop, which reports NOT_SERVING, drains in-flight calls and stops."""
        self.shutdown_requested.set()

    async def _set_health(self, status: "health_pb2.HealthCheckResponse.ServingStatus.ValueType") -> None:
        for name in HEALTH_SERVICES:
            await self.health.set(name, status)


Behaviour = Callable[[Any, "grpc.aio.ServicerContext[Any, Any]"], Awaitable[Message]]


def add_to_server(service: ModzyModelService, server: grpc.aio.Server) -> None:
    """Registers the service like the generated code does, but parses requests itself.

    grpcio answers a request it cannot parse with UNKNOWN; parsing here answers INVALID_ARGUMENT
    with the message type and the parser's reason, as a client on any stack expects.
    """
    methods: dict[str, tuple[Behaviour, type[Message], type[Message]]] = {
        "Status": (service.Status, pb.StatusRequest, pb.StatusResponse),
        "Run": (service.Run, pb.RunRequest, pb.RunResponse),
        "Shutdown": (service.Shutdown, pb.ShutdownRequest, pb.ShutdownResponse),
    }
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        name: grpc.unary_unary_rpc_method_handler(
            _parsing(behaviour, request_type), response_serializer=response_type.SerializeToString
        )
        for name, (behaviour, request_type, response_type) in methods.items()
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)


def _parsing(behaviour: Behaviour, request_type: type[Message]) -> Behaviour:
    async def handle(raw: bytes, context: "grpc.aio.ServicerContext[Any, Any]") -> Message:
        try:
            request = request_type.FromString(raw)
        except (DecodeError, ValueError) as error:  # ValueError: bad UTF-8 under the pure-Python backend
            name = request_type.DESCRIPTOR.name
            logger.warning(
                "%s: a request that is not a valid %s from %s", name[: -len("Request")], name, context.peer()
            )
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"the request is not a valid {name}: {error}")
        return await behaviour(request, context)

    return handle


def _retrieve_exception(task: "asyncio.Future[None]") -> None:
    """Marks a background load's failure as seen: runtime.load has logged it already."""
    if not task.cancelled():
        task.exception()


def status_metadata(spec: ModelSpec) -> pb.StatusResponse:
    """The model.yaml part of every StatusResponse, built once."""
    features = spec.features
    return pb.StatusResponse(
        model_info=pb.ModelInfo(
            model_name=spec.name,
            model_version=spec.version,
            model_author=spec.author,
            model_type=spec.type,
            source=spec.source,
        ),
        description=pb.ModelDescription(
            summary=spec.description.summary,
            details=spec.description.details,
            technical=spec.description.technical,
            performance=spec.description.performance,
        ),
        inputs=[
            pb.ModelInput(
                filename=name,
                accepted_media_types=file.acceptedMediaTypes,
                max_size=file.maxSize,
                description=file.description,
            )
            for name, file in spec.inputs.items()
        ],
        outputs=[
            pb.ModelOutput(
                filename=name, media_type=file.mediaType, max_size=file.maxSize, description=file.description
            )
            for name, file in spec.outputs.items()
        ],
        resources=pb.ModelResources(
            required_ram=spec.resources.memory.size,
            num_cpus=spec.resources.cpu.count,
            num_gpus=spec.resources.gpu.count,
        ),
        timeout=pb.ModelTimeout(status=spec.timeout.status, run=spec.timeout.run),
        features=pb.ModelFeatures(
            adversarial_defense=features.adversarialDefense,
            batch_size=features.maxBatchSize,
            retrainable=features.retrainable,
            results_format=features.resultsFormat or "",
            drift_format=features.driftFormat or "",
            explanation_format=features.explanationFormat or "",
        ),
    )
