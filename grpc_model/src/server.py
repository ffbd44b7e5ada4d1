"""Wiring: builds the servers from the settings and runs them until shutdown.

The only module that knows every part (settings, metadata, runtime, the front ends, health,
reflection, security, observability); nothing imports it but the entry point and the tests.
"""

import asyncio
import functools
import logging
import signal
import socket
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from grpc_model.src.inference import Inference, build_inference
from grpc_model.src.listening import (
    ANSWER_SECONDS,
    HEALTH_PORT_CALLS,
    HealthService,
    ListenError,
    bind_health_only,
    health_server_options,
    most_calls,
    serve_metrics,
    server_options,
    why_not_listening,
)
from grpc_model.src.metadata import AssetBundle, load_bundle, older_bundle_warning
from grpc_model.src.observability import tracing
from grpc_model.src.observability.metrics import NO_METRICS, Metrics
from grpc_model.src.runtime import ModelLoadError
from grpc_model.src.security.auth import TokenAuthInterceptor, TokenCheck, load_tokens
from grpc_model.src.security.connections import PortGuard, bind, connection_cap
from grpc_model.src.security.limits import inflight_budget, request_size_limit
from grpc_model.src.security.tls import https_context, server_credentials
from grpc_model.src.servicer import HEALTH_SERVICES, SERVICE_NAME, ModzyModelService, add_to_server
from grpc_model.src.settings import Settings, env_var, flag
from grpc_model.src.v2 import grpc_service as v2_grpc
from grpc_model.src.v2.protocol import V2Protocol
from grpc_model.src.web import HttpUnavailableError, serves_http

if TYPE_CHECKING:
    from grpc_model.src.web.hosting import HttpServer

__all__ = ["ListenError", "RunningServer", "serve", "start_server"]

logger = logging.getLogger(__name__)


@dataclass
class RunningServer:
    server: grpc.aio.Server
    port: int
    service: ModzyModelService
    settings: Settings
    v2: V2Protocol
    http: "HttpServer | None" = None
    """The HTTP server (page, multipart endpoint, V2 REST, OpenAPI) when the `http` setting serves it."""
    metrics_server: asyncio.Server | None = None
    health_server: grpc.aio.Server | None = None

    @property
    def metrics_port(self) -> int | None:
        """The port /metrics is served on; None with metrics off (or once stopped)."""
        sockets = () if self.metrics_server is None else self.metrics_server.sockets
        return int(sockets[0].getsockname()[1]) if sockets else None

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
        if self.health_server is not None:
            await self.health_server.stop(None)
        logger.info("server stopped")


async def start_server(settings: Settings) -> RunningServer:
    """Starts serving; raises BundleError, WrapperImportError, ListenError, TLSSetupError, AuthSetupError
    or LimitsSetupError when the setup is wrong."""
    try:
        with_http = serves_http(settings.http)
    except HttpUnavailableError as error:
        raise ListenError(str(error)) from None
    bundle = load_bundle(settings.asset_bundle_dir, settings.model_version)
    if older := older_bundle_warning(bundle):
        logger.warning("%s", older)
    credentials = server_credentials(settings)  # file problems stop start-up before the model loads
    tls = https_context(settings)  # the same files, for the HTTP and metrics ports
    tokens = load_tokens(settings)
    check = TokenCheck(tokens) if tokens else None
    largest_request = settings.max_receive_message_bytes or request_size_limit(bundle.spec)
    budget = inflight_budget(settings.max_inflight_request_bytes, largest_request)
    if tokens and credentials is None:
        logger.warning("bearer tokens travel in plaintext: set tls_cert and tls_key, or put TLS in front")
    metrics = Metrics(bundle.spec.name, bundle.version) if settings.metrics else NO_METRICS
    inference = build_inference(settings, bundle, metrics, budget)
    runtime = inference.runtime
    health_servicer = HealthService()
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
    interceptors = [*(tracing.server_interceptors() or []), *([TokenAuthInterceptor(check)] if check else [])]
    server = grpc.aio.server(
        interceptors=interceptors or None,
        options=server_options(settings, largest_request),
        maximum_concurrent_rpcs=most_calls(settings),
    )
    add_to_server(service, server)
    v2 = V2Protocol(inference, bundle.spec, settings.max_send_message_bytes)
    v2_grpc.add_to_server(v2_grpc.GRPCInferenceService(v2), server, metrics)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    services = [SERVICE_NAME, v2_grpc.SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name]
    reflection.enable_server_reflection([*services, reflection.SERVICE_NAME], server)
    health_server = (
        grpc.aio.server(options=health_server_options(settings), maximum_concurrent_rpcs=HEALTH_PORT_CALLS)
        if settings.health_port
        else None
    )
    http_socket = None
    try:
        address = f"{settings.host}:{settings.port}"
        try:
            port = (
                server.add_insecure_port(address)
                if credentials is None
                else server.add_secure_port(address, credentials)
            )
        except RuntimeError:
            raise ListenError(why_not_listening(settings.host, settings.port)) from None
        if health_server is not None:
            bind_health_only(health_server, health_servicer, settings)
        http_socket = _http_socket(settings) if with_http else None
        # Once gRPC has its port, so that a bad host is reported as such.
        metrics_server = await serve_metrics(metrics, runtime, settings, tls, None if check is None else check.refusal)
    except ListenError:
        if http_socket is not None:
            http_socket.close()
        await server.stop(None)  # a server never started keeps its ports until collected: the process exits
        await runtime.close()  # worker processes started with the model must not outlive the failed start
        raise
    await server.start()
    if health_server is not None:
        await health_server.start()
    http = None
    if http_socket is not None:
        # FastAPI and uvicorn load on a thread while gRPC answers (their imports are most of a cold start); the
        # HTTP port listens already, so a connection made meanwhile waits for its answer, not refused.
        build = functools.partial(_http_server, settings, bundle, inference, v2, largest_request, check, tls)
        http = await asyncio.to_thread(build, http_socket)
        await http.start()
        logger.info(
            "HTTP%s (the page, REST and OpenAPI at /docs) on %s:%d",
            "S" if settings.tls_cert else "",
            settings.host,
            http.port,
        )
    runtime.may_fork = False
    logger.info(
        "serving %s %s (%s:%s) on %s:%d%s; requests up to %d bytes, %d bytes in flight",
        bundle.spec.name,
        bundle.version,
        runtime.wrapper_class.__module__,
        runtime.wrapper_class.__qualname__,
        settings.host,
        port,
        (" with mutual TLS" if settings.tls_client_ca else " with TLS" if credentials else "")
        + (f", {len(tokens)} bearer token(s)" if tokens else ""),
        largest_request,
        budget.limit,
    )
    running = RunningServer(server, port, service, settings, v2, http, metrics_server, health_server)
    if running.metrics_port is not None:
        protected = settings.metrics_auth == "auto"
        logger.info(
            "metrics on http%s://%s:%d/metrics%s",
            "s" if protected and tls else "",
            settings.host,
            running.metrics_port,
            " (bearer token needed)" if protected and check else "",
        )
    return running


def _http_server(
    settings: Settings,
    bundle: AssetBundle,
    inference: Inference,
    v2: V2Protocol,
    max_request_bytes: int,
    check: TokenCheck | None,
    tls: ssl.SSLContext | None,
    sock: socket.socket,
) -> "HttpServer":
    """The HTTP server with every front end's router, on `sock`.

    It has the gRPC port's protection: the same bearer tokens, and HTTPS from the same certificate files.
    """
    # Imported here: FastAPI and uvicorn come from the optional `http` group.
    from grpc_model.src.v2.rest import v2_router, v2_shortcut
    from grpc_model.src.web.app import create_app
    from grpc_model.src.web.hosting import HttpServer
    from grpc_model.src.web.model_routes import model_router

    routers = [model_router(inference, bundle.spec), v2_router(v2)]
    refusal = None if check is None else check.refusal
    app = create_app(bundle.spec, routers, max_request_bytes, refusal, shortcuts=[v2_shortcut(v2)])
    guard = PortGuard("HTTP", connection_cap(settings.http_max_connections), tls, settings.http_read_timeout_seconds)
    grace = settings.shutdown_grace_seconds + ANSWER_SECONDS
    return HttpServer(app, sock, grace, guard, settings.http_idle_timeout_seconds, settings.http_read_timeout_seconds)


def _http_socket(settings: Settings) -> socket.socket:
    """The HTTP port, listening; raises ListenError."""
    try:
        return bind(settings.host, settings.http_port)
    except OSError as error:
        raise ListenError(
            f"http_port: cannot listen on {settings.host}:{settings.http_port}: {error.strerror or error} "
            f"(set with {flag('http_port')} or {env_var('http_port')}; {flag('http')} off turns HTTP off)"
        ) from None


async def serve(settings: Settings) -> None:
    """Runs until Shutdown, SIGTERM or SIGINT, then drains gracefully."""
    running = await start_server(settings)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _on_signal, running.service, signum)
    await running.wait_for_shutdown_request()
    await running.stop()


def _on_signal(service: ModzyModelService, signum: int) -> None:
    logger.info("received %s; shutting down", signal.Signals(signum).name)
    service.request_shutdown()
