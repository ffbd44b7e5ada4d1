"""The server's ports besides the front ends: gRPC channel options, the metrics endpoint, the plaintext
health port, and the errors that name the setting at fault when one cannot be bound.

Kept apart from the wiring (server.py) so that it stays a list of steps; nothing here knows a protocol.
"""

import asyncio
import errno
import logging
import socket
import ssl
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from grpc_model.src.observability.metrics import Refusal, Scrape
from grpc_model.src.repository.registry import ModelRegistry
from grpc_model.src.security.connections import PortGuard, bind, connection_cap
from grpc_model.src.settings import INT32_MAX, Settings, env_var, flag

logger = logging.getLogger(__name__)

ANSWER_SECONDS = 1.0  # after the grace period, for the runtime's answers to reach their callers
MAX_HEALTH_WATCHES = 100
"""Health Watch streams open at once, on every port together. Each holds ~22 KB of the server's memory as long
as its client likes, and health needs no token: without a cap, one connection's streams could take gigabytes."""
CALLS_BESIDE_THE_QUEUE = 1000
"""Calls the gRPC port takes at once besides one per item that may queue (Status, metadata, health, reflection)."""
HEALTH_PORT_CALLS = 1000
"""Calls the plaintext health port takes at once."""
GRPC_SHARE_OF_OPEN_FILES = 2
"""The gRPC port may hold half the open-file limit in connections; the health port, like the HTTP and metrics
ports, an eighth. Without a cap, 1,100 connections that sent HTTP/2's preface and its settings' acknowledgement
to the health port (no credential needed) were held for ever, and at 1,024 open files the gRPC port stopped
answering."""


class ListenError(Exception):
    """The server cannot listen where the host and port settings say."""


def most_calls(settings: Settings) -> int:
    """Calls the gRPC port serves at once; past it RESOURCE_EXHAUSTED. Every call holds 10-25 KB from its
    headers on, and a client that never finishes sending its message (or keeps a stream open) held it for as
    long as it liked: 15,000 such calls took 280 MB, with no bound. A full queue of one-item calls still fits."""
    return settings.max_queued_items + CALLS_BESIDE_THE_QUEUE


def server_options(settings: Settings, max_receive_bytes: int) -> list[tuple[str, Any]]:
    """The gRPC server's options: message sizes, one server per port, and connection ages when set."""
    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", max_receive_bytes),
        ("grpc.max_send_message_length", settings.max_send_message_bytes),
        ("grpc.so_reuseport", 0),  # a second server on the port fails, instead of taking half its calls
        ("grpc.max_allowed_incoming_connections", connection_cap(0, GRPC_SHARE_OF_OPEN_FILES)),
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


async def serve_metrics(
    registry: CollectorRegistry | None, settings: Settings, tls: ssl.SSLContext | None, refusal: Refusal | None
) -> asyncio.Server | None:
    """The /metrics endpoint of `registry` on the event loop, or None with metrics off (no registry); raises
    ListenError naming metrics_port.

    It has the gRPC port's TLS and tokens (`tls`, `refusal`) unless `metrics_auth` is `open`, and the HTTP port's
    cap on connections and read timeout."""
    if registry is None:
        return None
    if settings.metrics_auth == "open":
        tls = refusal = None
    read_seconds = settings.http_read_timeout_seconds
    guard = PortGuard("metrics", connection_cap(settings.http_max_connections), tls, read_seconds)
    try:
        sock = bind(settings.host, settings.metrics_port)
    except OSError as error:
        raise ListenError(
            f"metrics_port: cannot serve metrics on {settings.host}:{settings.metrics_port}: "
            f"{error.strerror or error} (set with {flag('metrics_port')} or {env_var('metrics_port')}, "
            "or turn metrics off with --no-metrics)"
        ) from None
    return await asyncio.get_running_loop().create_server(
        lambda: guard.protocol(lambda: Scrape(registry, refusal, read_seconds)), sock=sock
    )


class HealthService(health.aio.HealthServicer):  # type: ignore[misc]  # grpc_health has no types
    """grpc's health service, with at most MAX_HEALTH_WATCHES watches open; past it RESOURCE_EXHAUSTED (Check
    stays uncapped: it holds nothing)."""

    def __init__(self) -> None:
        super().__init__()
        self._watches = 0

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: Any) -> None:
        if self._watches >= MAX_HEALTH_WATCHES:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{MAX_HEALTH_WATCHES} health watches are open, the server's cap: use Check, or watch later",
            )
        self._watches += 1
        try:
            await super().Watch(request, context)
        finally:
            self._watches -= 1


class ModelHealth:
    """The health service's statuses, kept from the registry's: each of `overall` (the whole server) is SERVING
    while a model version can take work, and each model's name while one of its versions can, so that a probe
    can watch one model. NOT_SERVING for good once the server is stopping."""

    def __init__(
        self,
        servicer: health.aio.HealthServicer,
        registry: ModelRegistry,
        overall: tuple[str, ...],
        stopping: asyncio.Event,
    ) -> None:
        self.servicer = servicer
        self.registry = registry
        self.overall = overall
        self.stopping = stopping

    async def update(self) -> None:
        if self.stopping.is_set():
            return
        statuses = {name: self.registry.ready() for name in self.overall}
        statuses |= {name: self.registry.ready(name) for name in self.registry.names()}
        for name, ready in statuses.items():
            serving = health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
            await self.servicer.set(name, serving)


def health_server_options(settings: Settings) -> list[tuple[str, Any]]:
    """The plaintext health port's options: one server per port, and the HTTP port's cap on connections."""
    return [
        ("grpc.so_reuseport", 0),
        ("grpc.max_allowed_incoming_connections", connection_cap(settings.http_max_connections)),
    ]


def bind_health_only(health_server: grpc.aio.Server, servicer: health.aio.HealthServicer, settings: Settings) -> None:
    """The plaintext health port: the health service alone, for probes that cannot do TLS or tokens."""
    health_pb2_grpc.add_HealthServicer_to_server(servicer, health_server)
    try:
        health_server.add_insecure_port(f"{settings.host}:{settings.health_port}")
    except RuntimeError:
        raise ListenError(why_not_listening(settings.host, settings.health_port, "health_port")) from None
    logger.info("health service in plaintext on %s:%d", settings.host, settings.health_port)


def why_not_listening(host: str, port: int, port_setting: str = "port") -> str:
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
