"""A stand-in for a server of several models, for the clients' tests: a real grpc.aio server that records the
call metadata of every call it receives and forwards the call, unparsed, to the real server of the model that
its `x-model-name` names (the default model's without one), or answers NOT_FOUND as docs/protocol.md says. A
health check of a model's name is that model's server's health.
"""

import asyncio
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health_pb2

from grpc_model.src.routing import MODEL_NAME_METADATA, MODEL_VERSION_METADATA

HEALTH_CHECK = "/grpc.health.v1.Health/Check"


@dataclass(frozen=True)
class Upstream:
    """One model version behind the proxy: the real server that serves it."""

    version: str
    target: str


@dataclass(frozen=True)
class Received:
    """One call as the proxy saw it: the method and its routing metadata (nothing else of the caller's)."""

    method: str
    route: dict[str, str]


class RoutingProxy:
    """On its own event loop in a background thread, bound to 127.0.0.1:0 (`port`)."""

    def __init__(self, models: Mapping[str, Upstream], default: str) -> None:
        self.models, self.default = dict(models), default
        self.received: list[Received] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="routing-proxy", daemon=True)
        self.thread.start()
        self.port: int = self._call(self._start())

    def _call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=60)

    async def _start(self) -> int:
        self.channels = {name: grpc.aio.insecure_channel(upstream.target) for name, upstream in self.models.items()}
        self.server = grpc.aio.server()
        self.server.add_generic_rpc_handlers([_Forwarding(self)])
        port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        return port

    async def forward(self, method: str, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        metadata = {key: str(value) for key, value in context.invocation_metadata() or ()}
        routing = (MODEL_NAME_METADATA, MODEL_VERSION_METADATA)
        self.received.append(Received(method, {key: metadata[key] for key in routing if key in metadata}))
        name = metadata.get(MODEL_NAME_METADATA, self.default)
        if method == HEALTH_CHECK:  # a model's health service is its name: its own server's whole health
            service = health_pb2.HealthCheckRequest.FromString(request).service
            if service in self.models:
                name, request = service, health_pb2.HealthCheckRequest().SerializeToString()
        version = metadata.get(MODEL_VERSION_METADATA, "")
        if name not in self.models or version not in ("", self.models[name].version):
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no model {name!r} version {version or 'any'!r} here")
        try:
            forwarded: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = self.channels[name].unary_unary(method)
            answer = await forwarded(request, timeout=60)
        except grpc.aio.AioRpcError as error:
            await context.abort(error.code(), error.details() or "")
        return answer

    def routes(self, method: str) -> list[dict[str, str]]:
        """The routing metadata of every call of `method` (e.g. "/ModzyModel/Run") received so far, in order."""
        return [call.route for call in list(self.received) if call.method == method]

    def stop(self) -> None:
        async def stop() -> None:
            await self.server.stop(None)
            for channel in self.channels.values():
                await channel.close()

        self._call(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)
        self.loop.close()


class _Forwarding(grpc.GenericRpcHandler):
    def __init__(self, proxy: RoutingProxy) -> None:
        self.proxy = proxy

    def service(self, details: grpc.HandlerCallDetails) -> "grpc.RpcMethodHandler[bytes, bytes] | None":
        method = details.method

        async def forward(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
            return await self.proxy.forward(method, request, context)

        return grpc.unary_unary_rpc_method_handler(forward)
