"""`grpc-model ray-serve`: the model on Ray Serve, configured by the server's settings and flags.

Joins the Ray cluster that `RAY_ADDRESS` names or that `ray start` made on this machine, else
starts a local Ray for as long as the command runs. Ray's gRPC proxy serves the ModzyModel
protocol on `port` (on every interface: Ray binds `[::]` whatever `host` says). Runs until
SIGINT or SIGTERM, then deletes the application, which drains and stops its replicas.
"""

import logging
import signal
import sys
import threading
from collections.abc import Sequence

import ray
from pydantic import ValidationError
from ray import serve
from ray.serve.config import gRPCOptions

from grpc_model.src.metadata import BundleError, load_bundle
from grpc_model.src.ray_serve.deployment import SERVICER_FUNCTION, build_app
from grpc_model.src.runtime import WrapperImportError
from grpc_model.src.runtime.loader import import_wrapper_class
from grpc_model.src.settings import settings_from_args

APPLICATION = "modzy-model"
logger = logging.getLogger("grpc_model.ray_serve")


def main(argv: Sequence[str] | None = None, prog: str = "grpc-model ray-serve") -> int:
    try:
        settings = settings_from_args(argv, prog)
    except ValidationError as error:
        print(f"invalid settings:\n{error}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    if settings.repository:
        logger.critical("cannot start: ray-serve serves one model; serve a repository with `grpc-model serve`")
        return 2
    try:  # what the replicas would fail on, found before Ray starts
        bundle = load_bundle(settings.asset_bundle_dir, settings.model_version)
        if bundle.spec.runtime is None:  # else model.yaml names a runtime, which the replicas load
            import_wrapper_class(settings.model_class)
    except (BundleError, WrapperImportError) as error:
        logger.critical("cannot start: %s", error)
        return 2
    ray.init(logging_level=logging.getLevelNamesMapping()[settings.log_level])
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):  # after ray.init, which installs handlers of its own
        signal.signal(signum, lambda *_: stop.set())
    try:
        start_serve(gRPCOptions(port=settings.port, grpc_servicer_functions=[SERVICER_FUNCTION]))
        try:
            serve.run(build_app(settings), name=APPLICATION)  # returns once every replica has loaded the model
        except TimeoutError as error:  # the replicas are up; Ray's controller goes on starting its proxies
            logger.warning("%s (Ray's proxies answer once they are up)", error)
        logger.info(
            "serving %s %s on Ray Serve's gRPC proxy, port %d (application %r)",
            bundle.spec.name,
            bundle.version,
            settings.port,
            APPLICATION,
        )
        stop.wait()
        logger.info("stopping: deleting application %r", APPLICATION)
        serve.delete(APPLICATION)
    finally:
        ray.shutdown()
    return 0


def start_serve(grpc_options: gRPCOptions) -> None:
    """Starts Ray Serve, or joins the one running, and lets Ray's proxies take their time.

    `serve.start` and `serve.run` wait a fixed 60 s for the proxies (Ray's HTTP_PROXY_TIMEOUT, no
    setting) and then raise TimeoutError, although the controller goes on starting them; on a loaded
    machine a proxy takes longer. Joining the controller just started serves the same.
    """
    try:
        serve.start(grpc_options=grpc_options)
    except TimeoutError as error:
        logger.warning("%s (Ray goes on starting them)", error)
        serve.start(grpc_options=grpc_options)  # the controller exists now: this joins it, without waiting
