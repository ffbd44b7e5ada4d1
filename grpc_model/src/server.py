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

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from grpc_model.src.inference import Inference
from grpc_model.src.metadata import load_bundle
from grpc_model.src.runtime import EngineOptions, ModelLoadError, ModelRuntime
from grpc_model.src.security.auth import TokenAuthInterceptor, load_tokens
from grpc_model.src.security.limits import inflight_budget, request_size_limit
from grpc_model.src.security.tls import server_credentials
from grpc_model.src.servicer import HEALTH_SERVICES, SERVICE_NAME, ModzyModelService, add_to_server
from grpc_model.src.settings import Settings, env_var, flag
from grpc_model.src.validation import InputValidator

logger = logging.getLogger(__name__)

ANSWER_SECONDS = 1.0  # after the grace period, for the runtime's answers to reach their callers


class ListenError(Exception):
    """The server cannot listen where the host and port settings say."""


@dataclass
class RunningServer:
    server: grpc.aio.Server
    port: int
    service: ModzyModelService
    settings: Settings
    health_server: grpc.aio.Server | None = None

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
        stopping = asyncio.ensure_future(self.server.stop(grace + ANSWER_SECONDS))
        await asyncio.wait({stopping}, timeout=grace)
        await self.service.runtime.close()
        await stopping
        if self.health_server is not None:
            await self.health_server.stop(None)
        logger.info("server stopped")


async def start_server(settings: Settings) -> RunningServer:
    """Starts serving; raises BundleError, WrapperImportError, ListenError, TLSSetupError, AuthSetupError
    or LimitsSetupError when the setup is wrong."""
    bundle = load_bundle(settings.asset_bundle_dir, settings.model_version)
    credentials = server_credentials(settings)  # file problems stop start-up before the model loads
    tokens = load_tokens(settings)
    largest_request = settings.max_receive_message_bytes or request_size_limit(bundle.spec)
    budget = inflight_budget(settings.max_inflight_request_bytes, largest_request)
    if tokens and credentials is None:
        logger.warning("bearer tokens travel in plaintext: set tls_cert and tls_key, or put TLS in front")
    options = EngineOptions(
        max_batch_size=bundle.spec.features.maxBatchSize,
        model_threads=settings.model_threads,
        workers=settings.workers,
        adaptive_batching=settings.adaptive_batching,
        batch_wait_seconds=settings.batch_wait_ms / 1000,
        max_queued_items=settings.max_queued_items,
        run_timeout_seconds=bundle.spec.timeout.run_seconds,
    )
    runtime = ModelRuntime(settings.model_class, options)
    health_servicer = health.aio.HealthServicer()
    for name in HEALTH_SERVICES:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    validator = InputValidator(bundle.spec, reject_undeclared=settings.undeclared_inputs == "reject")
    service = ModzyModelService(
        runtime,
        bundle.spec,
        health_servicer,
        Inference(runtime, validator, budget),
        settings.shutdown,
        settings.shutdown_token,
        status_timeout=bundle.spec.timeout.status_seconds,
    )
    runtime.on_capacity_change = service.on_capacity_change
    if settings.load_model_at_startup or settings.workers > 0:
        # Before any gRPC server exists, so worker processes fork from a process without gRPC threads.
        try:
            await service.ensure_model_loaded()
        except ModelLoadError as error:
            logger.error("%s; the server starts anyway and the next Status call tries again", error)

    server = grpc.aio.server(
        interceptors=[TokenAuthInterceptor(tokens)] if tokens else None,
        options=[
            ("grpc.max_receive_message_length", largest_request),
            ("grpc.max_send_message_length", settings.max_send_message_bytes),
            ("grpc.so_reuseport", 0),  # a second server on the port fails, instead of taking half its calls
        ],
    )
    add_to_server(service, server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME], server
    )
    health_server = grpc.aio.server(options=[("grpc.so_reuseport", 0)]) if settings.health_port else None
    try:
        address = f"{settings.host}:{settings.port}"
        port = (
            server.add_insecure_port(address) if credentials is None else server.add_secure_port(address, credentials)
        )
        if health_server is not None:
            _bind_health_only(health_server, health_servicer, settings)
    except ListenError:
        await runtime.close()
        raise
    except RuntimeError:
        await runtime.close()  # worker processes started with the model must not outlive the failed start
        raise ListenError(_why_not_listening(settings.host, settings.port)) from None
    await server.start()
    if health_server is not None:
        await health_server.start()
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
    return RunningServer(server=server, port=port, service=service, settings=settings, health_server=health_server)


def _bind_health_only(health_server: grpc.aio.Server, servicer: health.aio.HealthServicer, settings: Settings) -> None:
    """The plaintext health port: the health service alone, for probes that cannot do TLS or tokens."""
    health_pb2_grpc.add_HealthServicer_to_server(servicer, health_server)
    try:
        health_server.add_insecure_port(f"{settings.host}:{settings.health_port}")
    except RuntimeError:
        raise ListenError(_why_not_listening(settings.host, settings.health_port, "health_port")) from None
    logger.info("health service in plaintext on %s:%d", settings.host, settings.health_port)


async def serve(settings: Settings) -> None:
    """Runs until Shutdown, SIGTERM or SIGINT, then drains gracefully."""
    running = await start_server(settings)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _on_signal, running.service, signum)
    await running.wait_for_shutdown_request()
    await running.stop()


def _why_not_listening(host: str, port: int, port_setting: str = "port") -> str:
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
                setting = "host" if error.errno == errno.EADDRNOTAVAIL else port_setting
                return (
                    f"{setting}: cannot listen on {host}:{port}: {error.strerror} "
                    f"(set with {flag(setting)} or {env_var(setting)})"
                )
    return (
        f"host, {port_setting}: cannot listen on {host}:{port}: gRPC could not bind it "
        f"(an IPv6 address goes in brackets, e.g. [::1]; set with {flag('host')} and {flag(port_setting)})"
    )


def _on_signal(service: ModzyModelService, signum: int) -> None:
    logger.info("received %s; shutting down", signal.Signals(signum).name)
    service.request_shutdown()
