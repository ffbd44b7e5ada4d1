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
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry

from grpc_model.src.listening import (
    ANSWER_SECONDS,
    HEALTH_PORT_CALLS,
    HealthService,
    ListenError,
    ModelHealth,
    bind_health_only,
    health_server_options,
    most_calls,
    serve_metrics,
    server_options,
    why_not_listening,
)
from grpc_model.src.metadata import load_bundle, older_bundle_warning
from grpc_model.src.observability import tracing
from grpc_model.src.observability.metrics import NO_METRICS, Metrics, Recorder
from grpc_model.src.repository.endpoints import (
    largest_request,
    repository_metrics,
    repository_registry,
    single_registry,
)
from grpc_model.src.repository.layout import find_models
from grpc_model.src.repository.registry import ModelRegistry
from grpc_model.src.security.auth import TokenAuthInterceptor, TokenCheck, load_tokens
from grpc_model.src.security.connections import PortGuard, bind, connection_cap
from grpc_model.src.security.limits import InflightBudget, inflight_budget, request_size_limit
from grpc_model.src.security.tls import https_context, server_credentials
from grpc_model.src.servicer import HEALTH_SERVICES, SERVICE_NAME, ModzyModelService, add_to_server
from grpc_model.src.settings import Settings, env_var, flag
from grpc_model.src.v2 import grpc_service as v2_grpc
from grpc_model.src.v2.protocol import V2Protocol
from grpc_model.src.v2.repository import RepositoryControl
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
        await self.service.registry.close()
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
    credentials = server_credentials(settings)  # file problems stop start-up before the model loads
    tls = https_context(settings)  # the same files, for the HTTP and metrics ports
    tokens = load_tokens(settings)
    check = TokenCheck(tokens) if tokens else None
    if tokens and credentials is None:
        logger.warning("bearer tokens travel in plaintext: set tls_cert and tls_key, or put TLS in front")
    registry, largest_request, budget, metrics = _registry(settings)
    health_servicer = HealthService()
    for name in HEALTH_SERVICES:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    service = ModzyModelService(registry, health_servicer, settings.shutdown, settings.shutdown_token, metrics=metrics)
    model_health = ModelHealth(health_servicer, registry, HEALTH_SERVICES, service.shutdown_requested)
    registry.on_change = model_health.update
    await model_health.update()
    if settings.repository or settings.load_model_at_startup or settings.workers > 0:
        # Before any gRPC server exists, so worker processes fork from a process without gRPC threads.
        await registry.load_all()
    interceptors = [*(tracing.server_interceptors() or []), *([TokenAuthInterceptor(check)] if check else [])]
    server = grpc.aio.server(
        interceptors=interceptors or None,
        options=server_options(settings, largest_request),
        maximum_concurrent_rpcs=most_calls(settings),
    )
    add_to_server(service, server)
    v2 = V2Protocol(registry, settings.max_send_message_bytes)
    allow = f"start it with {flag('repository_control')} ({env_var('repository_control')}=true) to allow it"
    control = RepositoryControl(registry, None if settings.repository_control else allow)
    v2_grpc.add_to_server(v2_grpc.GRPCInferenceService(v2, control), server, metrics)
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
        metrics_server = await serve_metrics(
            _scraped(settings, registry, metrics), settings, tls, None if check is None else check.refusal
        )
    except ListenError:
        if http_socket is not None:
            http_socket.close()
        await server.stop(None)  # a server never started keeps its ports until collected: the process exits
        await registry.close()  # worker processes started with the model must not outlive the failed start
        raise
    await server.start()
    if health_server is not None:
        await health_server.start()
    http = None
    if http_socket is not None:
        # FastAPI and uvicorn load on a thread while gRPC answers (their imports are most of a cold start); the
        # HTTP port listens already, so a connection made meanwhile waits for its answer, not refused.
        build = functools.partial(_http_server, settings, registry, v2, control, largest_request, check, tls)
        http = await asyncio.to_thread(build, http_socket)
        await http.start()
        logger.info(
            "HTTP%s (the page, REST and OpenAPI at /docs) on %s:%d",
            "S" if settings.tls_cert else "",
            settings.host,
            http.port,
        )
    registry.serving()
    logger.info(
        "serving %s on %s:%d%s; requests up to %d bytes, %d bytes in flight",
        _served(registry),
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
    registry: ModelRegistry,
    v2: V2Protocol,
    control: RepositoryControl,
    max_request_bytes: int,
    check: TokenCheck | None,
    tls: ssl.SSLContext | None,
    sock: socket.socket,
) -> "HttpServer":
    """The HTTP server with every front end's router, on `sock`.

    It has the gRPC port's protection: the same bearer tokens, and HTTPS from the same certificate files. The
    page and the multipart endpoint serve the default model; a repository without one has V2 REST only.
    """
    # Imported here: FastAPI and uvicorn come from the optional `http` group.
    from grpc_model.src.v2.rest import repository_router, v2_router, v2_shortcut
    from grpc_model.src.web.app import create_app
    from grpc_model.src.web.hosting import HttpServer
    from grpc_model.src.web.model_routes import model_router

    default = registry.default_inference
    routers = [] if default is None else [model_router(default, default.spec)]
    routers += [v2_router(v2), repository_router(control)]
    spec = None if default is None else default.spec
    refusal = None if check is None else check.refusal
    app = create_app(spec, routers, max_request_bytes, refusal, shortcuts=[v2_shortcut(v2)])
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


def _registry(settings: Settings) -> tuple[ModelRegistry, int, InflightBudget, Recorder]:
    """The models to serve (the repository's, or the settings' one), the largest request the port takes, the
    server-wide budget of bytes in flight, and what records the calls."""
    if settings.repository:
        directory = Path(settings.repository)
        folders = find_models(directory)
        largest = largest_request(settings, folders)
        budget = inflight_budget(settings.max_inflight_request_bytes, largest)
        calls = Metrics("", "") if settings.metrics else NO_METRICS
        return repository_registry(settings, directory, folders, budget), largest, budget, calls
    bundle = load_bundle(settings.asset_bundle_dir, settings.model_version)
    if older := older_bundle_warning(bundle):
        logger.warning("%s", older)
    largest = settings.max_receive_message_bytes or request_size_limit(bundle.spec)
    budget = inflight_budget(settings.max_inflight_request_bytes, largest)
    metrics = Metrics(bundle.spec.name, bundle.version) if settings.metrics else NO_METRICS
    return single_registry(settings, bundle, metrics, budget), largest, budget, metrics


def _scraped(settings: Settings, registry: ModelRegistry, calls: Recorder) -> CollectorRegistry | None:
    """What /metrics serves: the one model's metrics as they are, or a repository's labelled by model; None
    with metrics off."""
    if not isinstance(calls, Metrics):
        return None
    if settings.repository:
        return repository_metrics(calls, lambda: registry.endpoints)
    return calls.registry


def _served(registry: ModelRegistry) -> str:
    """The models served, for the start-up line: the wrapper class too when there is one model."""
    endpoints = registry.endpoints
    if len(endpoints) == 1 and registry.default_inference is not None:
        spec, wrapper = endpoints[0].spec, endpoints[0].runtime.wrapper_class
        return f"{spec.name} {spec.version} ({wrapper.__module__}:{wrapper.__qualname__})"
    entries = registry.index()
    ready = [f"{entry.name} {entry.version}" for entry in entries if entry.state == "READY"]
    return f"{len(ready)} of {len(entries)} model versions ({', '.join(ready) or 'none'})"


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
