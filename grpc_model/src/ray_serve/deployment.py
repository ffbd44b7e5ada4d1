"""The model as a Ray Serve deployment behind Ray's gRPC proxy, speaking the ModzyModel protocol.

Ray replaces what the standalone server does itself: its proxy accepts the calls, its router
spreads them over replicas, its controller starts, health-checks, scales and stops the
replicas. Each replica keeps what the framework adds: the checks against model.yaml, the
batcher and runtime, one result per item. Ray passes the parsed request to the method named
like the RPC and sends back what it returns; a status other than OK is set on `grpc_context`.
"""

import logging
from typing import Any

import grpc
from ray import serve
from ray.serve import Application
from ray.serve.grpc_util import RayServegRPCContext

from grpc_model.src.auto_generated.model2_template import model_pb2 as pb
from grpc_model.src.inference import build_inference
from grpc_model.src.metadata import ModelSpec, load_bundle
from grpc_model.src.modzy_messages import loaded_status, run_response, status_metadata
from grpc_model.src.runtime import ModelNotLoadedError, ModelUnavailableError, QueueFullError
from grpc_model.src.settings import Settings

logger = logging.getLogger(__name__)

SERVICER_FUNCTION = "grpc_model.src.auto_generated.model2_template.model_pb2_grpc.add_ModzyModelServicer_to_server"
"""What Ray's gRPC proxy registers (gRPCOptions.grpc_servicer_functions): the generated ModzyModel service."""
DEPLOYMENT_NAME = "ModzyModel"
SHUTDOWN_REFUSAL = (
    "Shutdown is not served under Ray Serve: Ray starts and stops the replicas; stop the application "
    "with `serve delete <application>` (or everything with `serve shutdown`)"
)


class ModzyModelDeployment:
    """One replica: the configured wrapper and bundle behind the framework's data plane."""

    async def __init__(self, settings: Settings) -> None:  # type: ignore[misc]  # Ray awaits an async __init__
        """Loads the model before the replica takes calls; a load that fails fails the replica, which Ray
        reports (`serve status`) and starts again."""
        logging.getLogger("grpc_model").setLevel(settings.log_level)
        bundle = load_bundle(settings.asset_bundle_dir, settings.model_version)
        spec = bundle.spec
        self.inference = build_inference(settings, bundle)
        self.runtime = self.inference.runtime
        self.runtime.may_fork = False  # a replica has Ray's threads: worker processes are spawned, never forked
        self.metadata = status_metadata(spec)
        await self.runtime.load()

    async def Status(self, request: pb.StatusRequest) -> pb.StatusResponse:
        response = loaded_status(self.runtime)
        response.MergeFrom(self.metadata)
        return response

    async def Run(self, request: pb.RunRequest, grpc_context: RayServegRPCContext) -> pb.RunResponse:
        items = [item.input for item in request.inputs]
        try:
            results = await self.inference.run(items, request.detect_drift, request.explain, request.ByteSize())
        except (ModelNotLoadedError, ModelUnavailableError) as error:
            logger.warning("Run: %d items refused: %s", len(items), error)
            return _refused(grpc_context, grpc.StatusCode.UNAVAILABLE, str(error))
        except QueueFullError as error:
            logger.warning("Run: %d items refused: %s", len(items), error)
            return _refused(grpc_context, grpc.StatusCode.RESOURCE_EXHAUSTED, str(error))
        except Exception as error:
            # A bug in the framework: the client gets its type and message, never Ray's traceback.
            logger.exception("Run failed inside the framework")
            return _refused(grpc_context, grpc.StatusCode.INTERNAL, f"internal error: {type(error).__name__}: {error}")
        return run_response(results)

    async def Shutdown(self, request: pb.ShutdownRequest) -> pb.ShutdownResponse:
        return pb.ShutdownResponse(status_code=403, status="Forbidden", message=SHUTDOWN_REFUSAL)

    def check_health(self) -> None:
        """Ray's periodic health check: a replica whose model cannot take work is failing, and Ray replaces it."""
        if not self.runtime.available:
            raise RuntimeError(f"the model cannot take work: {self.runtime.condition}")

    async def __del__(self) -> None:
        """Ray calls this once when it stops the replica: fail what is queued, release threads and workers."""
        await self.runtime.close()


def _refused(context: RayServegRPCContext, code: grpc.StatusCode, message: str) -> pb.RunResponse:
    context.set_code(code)
    context.set_details(message)
    return pb.RunResponse()


def deployment_options(settings: Settings, spec: ModelSpec) -> dict[str, Any]:
    """Replicas or autoscaling from the settings, each replica's CPUs and GPUs from model.yaml's resources."""
    options: dict[str, Any] = {
        "name": DEPLOYMENT_NAME,
        "max_ongoing_requests": settings.ray_max_ongoing_requests,
        "ray_actor_options": {"num_cpus": spec.resources.cpu.count, "num_gpus": spec.resources.gpu.count},
    }
    if settings.ray_max_replicas:
        options["autoscaling_config"] = {
            "min_replicas": settings.ray_replicas,
            "max_replicas": settings.ray_max_replicas,
            "target_ongoing_requests": settings.ray_target_ongoing_requests,
        }
    else:
        options["num_replicas"] = settings.ray_replicas
    return options


def build_app(settings: Settings) -> Application:
    """The Ray Serve application: one deployment of the model, configured by `settings`."""
    spec = load_bundle(settings.asset_bundle_dir, settings.model_version).spec
    return serve.deployment(**deployment_options(settings, spec))(ModzyModelDeployment).bind(settings)


def app_builder(args: dict[str, Any]) -> Application:
    """For `serve run` and `serve deploy` (import path `grpc_model.src.ray_serve:app_builder`): the config's
    `args` are settings by name, over the GRPC_MODEL_* environment."""
    return build_app(Settings(**args))
