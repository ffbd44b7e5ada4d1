"""Wiring: builds the gRPC server from the settings and runs it until shutdown.

The only module that knows every part (settings, metadata, runtime, servicer, health,
reflection); nothing imports it but the entry point and the tests.
"""

import asyncio
import errno
import logging
import signal
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from grpc_model.src.inference import Inference, build_inference
from grpc_model.src.metadata import AssetBundle, load_bundle
from grpc_model.src.observability import tracing
from grpc_model.src.observability.metrics import NO_METRICS, Metrics, MetricsServer, Recorder
from grpc_model.src.runtime import ModelLoadError, ModelRuntime
from grpc_model.src.servicer import HEALTH_SERVICES, SERVICE_NAME, ModzyModelService, add_to_server
from grpc_model.src.settings import INT32_MAX, Settings, env_var, flag
from grpc_model.src.v2 import grpc_service as v2_grpc
from grpc_model.src.v2.protocol import V2Protocol
from grpc_model.src.web import HttpUnavailableError, serves_http

if TYPE_CHECKING:
    from grpc_model.src.web.hosting import HttpServer

logger = logging.getLogger(__name__)

ANSWER_SECONDS = 1.0  # after the grace period, for the runtime's answers to reach their callers


class ListenError(Exception):
    """The server cannot listen where the host, port and http settings say."""


@dataclass
class RunningServer:
    server: grpc.aio.Server
    port: int
    service: ModzyModelService
    settings: Settings
    v2: V2Protocol
    http: "HttpServer | None" = None
    """The HTTP server (page, multipart endpoint, V2 REST, OpenAPI) when the `http` setting serves it."""
    metrics_server: MetricsServer | None = None

    @property
    def metrics_port(self) -> int | None:
        """The port /metrics is served on; None with metrics off."""
        return None if self.metrics_server is None else self.metrics_server.port

    async def wait_for_shutdown_request(self) -> None:
        await self.service.shutdown_requested.wait()

    async def stop(self) -> None:
        """Refuses new calls, lets in-flight calls finish within the grace period, then releases the model.

        Items still unfinished when the grace period ends are answered by the runtime, with an
        error saying that the server shut down, and a moment later gRPC cancels whatever call
        is left (with a bare "Cancelling all calls").
        """
        self.service.request_shutdown()
        await self.service.health.enter_graceful_shutdown()
        grace = self.settings.shutdown_grace_seconds
        stopping = {asyncio.ensure_future(self.server.stop(grace + ANSWER_SECONDS))}
        if self.http is not None:
            stopping.add(asyncio.ensure_future(self.http.stop()))
        await asyncio.wait(stopping, timeout=grace)
        await self.service.runtime.close()
        await asyncio.gather(*stopping)
        if self.metrics_server is not None:
            self.metrics_server.close()
        logger.info("server stopped")


async def start_server(settings: Settings) -> RunningServer:
    """Starts serving; raises BundleError, WrapperImportError or ListenError when the setup is wrong."""
    try:
        with_http = serves_http(settings.http)
    except HttpUnavailableError as error:
        raise ListenError(str(error)) from None
    bundle = load_bundle(settings.asset_bundle_dir, settings.model_version)
    metrics = Metrics(bundle.spec.name, bundle.version) if settings.metrics else NO_METRICS
    inference = build_inference(settings, bundle.spec, metrics)
    runtime = inference.runtime
    health_servicer = health.aio.HealthServicer()
    for name in HEALTH_SERVICES:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    service = ModzyModelService(
        runtime,
        bundle.spec,
        health_servicer,
        inference,
        settings.shutdown,
        settings.shutdown_token,
        status_timeout=bundle.spec.timeout.status_seconds,
        metrics=metrics,
    )
    runtime.on_capacity_change = service.on_capacity_change
    inference.on_loaded = service.report_loaded
    if settings.load_model_at_startup or settings.workers > 0:
        # Before any gRPC server exists, so worker processes fork from a process without gRPC threads.
        try:
            await inference.ensure_loaded()
        except ModelLoadError as error:
            logger.error("%s; the server starts anyway and the next Status call tries again", error)
    server = grpc.aio.server(
        interceptors=tracing.server_interceptors(),  # None while tracing is off
        options=server_options(settings),
    )
    add_to_server(service, server)
    v2 = V2Protocol(inference, bundle.spec)
    v2_grpc.add_to_server(v2_grpc.GRPCInferenceService(v2), server, metrics)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    services = [SERVICE_NAME, v2_grpc.SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name]
    reflection.enable_server_reflection([*services, reflection.SERVICE_NAME], server)
    try:
        port = server.add_insecure_port(f"{settings.host}:{settings.port}")
        http = _http_server(settings, bundle, inference, v2) if with_http else None
    except (RuntimeError, ListenError) as error:
        await runtime.close()  # worker processes started with the model must not outlive the failed start
        if isinstance(error, ListenError):
            raise
        raise ListenError(_why_not_listening(settings.host, settings.port)) from None
    try:  # once gRPC has its port, so that a bad host is reported as such; after the workers forked: it is a thread
        metrics_server = _serve_metrics(metrics, runtime, settings)
    except ListenError:
        await server.stop(None)
        await runtime.close()
        raise
    await server.start()
    if http is not None:
        await http.start()
        logger.info("HTTP (the page, REST and OpenAPI at /docs) on %s:%d", settings.host, http.port)
    runtime.may_fork = False
    logger.info(
        "serving %s %s (%s:%s) on %s:%d",
        bundle.spec.name,
        bundle.version,
        runtime.wrapper_class.__module__,
        runtime.wrapper_class.__qualname__,
        settings.host,
        port,
    )
    if metrics_server is not None:
        logger.info("metrics on http://%s:%d/metrics", settings.host, metrics_server.port)
    return RunningServer(
        server=server,
        port=port,
        service=service,
        settings=settings,
        v2=v2,
        http=http,
        metrics_server=metrics_server,
    )


def _http_server(settings: Settings, bundle: AssetBundle, inference: Inference, v2: V2Protocol) -> "HttpServer":
    """The HTTP server with every front end's router, its port bound; raises ListenError."""
    # Imported here: FastAPI and uvicorn come from the optional `http` group.
    from grpc_model.src.v2.rest import v2_router
    from grpc_model.src.web.app import create_app
    from grpc_model.src.web.hosting import HttpServer, bind
    from grpc_model.src.web.model_routes import model_router

    routers = [model_router(inference, bundle.spec), v2_router(v2)]
    app = create_app(bundle.spec, routers, settings.max_receive_message_bytes)
    try:
        sock = bind(settings.host, settings.http_port)
    except OSError as error:
        raise ListenError(
            f"http_port: cannot listen on {settings.host}:{settings.http_port}: {error.strerror or error} "
            f"(set with {flag('http_port')} or {env_var('http_port')}; {flag('http')} off turns HTTP off)"
        ) from None
    return HttpServer(app, sock, settings.shutdown_grace_seconds + ANSWER_SECONDS)


async def serve(settings: Settings) -> None:
    """Runs until Shutdown, SIGTERM or SIGINT, then drains gracefully."""
    running = await start_server(settings)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _on_signal, running.service, signum)
    await running.wait_for_shutdown_request()
    await running.stop()


def _serve_metrics(metrics: Recorder, runtime: ModelRuntime, settings: Settings) -> MetricsServer | None:
    """The /metrics endpoint, or None with metrics off; raises ListenError naming metrics_port."""
    if not isinstance(metrics, Metrics):
        return None
    metrics.watch(
        queued=lambda: runtime.queued_items, loaded=lambda: runtime.is_loaded, available=lambda: runtime.available
    )
    try:
        return MetricsServer(metrics.registry, settings.host, settings.metrics_port)
    except OSError as error:
        raise ListenError(
            f"metrics_port: cannot serve metrics on {settings.host}:{settings.metrics_port}: "
            f"{error.strerror or error} (set with {flag('metrics_port')} or {env_var('metrics_port')}, "
            "or turn metrics off with --no-metrics)"
        ) from None


def server_options(settings: Settings) -> list[tuple[str, Any]]:
    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", settings.max_receive_message_bytes),
        ("grpc.max_send_message_length", settings.max_send_message_bytes),
        ("grpc.so_reuseport", 0),  # a second server on the port fails, instead of taking half its calls
    ]
    if settings.max_connection_age_seconds > 0:  # GOAWAY after the age; calls in flight get the drain's time
        options += [
            ("grpc.max_connection_age_ms", max(1, round(settings.max_connection_age_seconds * 1000))),
            (
                "grpc.max_connection_age_grace_ms",
                min(INT32_MAX, round((settings.shutdown_grace_seconds + ANSWER_SECONDS) * 1000)),
            ),
        ]
    return options


def _why_not_listening(host: str, port: int) -> str:
    """gRPC only says that binding failed; asking the OS the same question names the setting at fault."""
    try:
        name = host[1:-1] if host.startswith("[") and host.endswith("]") else host  # gRPC's [::1] is ::1
        addresses = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        return f"host: cannot listen on {host}: {error.strerror} (set with {flag('host')} or {env_var('host')})"
    for family, kind, protocol, _, address in addresses:
        with socket.socket(family, kind, protocol) as probe:
            try:
                probe.bind(address)
            except OSError as error:
                setting = "host" if error.errno == errno.EADDRNOTAVAIL else "port"
                return (
                    f"{setting}: cannot listen on {host}:{port}: {error.strerror} "
                    f"(set with {flag(setting)} or {env_var(setting)})"
                )
    return (
        f"host, port: cannot listen on {host}:{port}: gRPC could not bind it (an IPv6 address goes in brackets, "
        f"e.g. [::1]; set with {flag('host')} and {flag('port')})"
    )


def _on_signal(service: ModzyModelService, signum: int) -> None:
    logger.info("received %s; shutting down", signal.Signals(signum).name)
    service.request_shutdown()
