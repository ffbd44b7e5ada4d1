"""uvicorn inside the gRPC server's process and event loop, started and stopped by the wiring.

Signals stay the gRPC server's: uvicorn installs no handlers of its own, and stops when the
wiring's graceful shutdown tells it to, draining its requests within the same grace period.

Hostile clients: the port's guard (security.connections) caps open connections and does TLS with a
deadline; uvicorn's protocol with deadlines (deadlines.py) closes a connection that is idle or stalls.
"""

import asyncio
import contextlib
import functools
import logging
import math
import socket
from collections.abc import Callable, Iterator
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from grpc_model.src.security.connections import Guarded, PortGuard
from grpc_model.src.web import deadlines

logger = logging.getLogger(__name__)


class _Config(uvicorn.Config):
    """uvicorn's configuration, carrying what each connection's protocol needs besides."""

    guard: PortGuard
    read_seconds: float
    parser: Callable[..., asyncio.Protocol]


class _GuardedTimed(Guarded):
    """What uvicorn makes for each connection, with its own arguments: its parser with deadlines, behind the guard."""

    def __init__(self, config: _Config, **uvicorn_arguments: Any) -> None:
        serve = functools.partial(config.parser, config=config, read_seconds=config.read_seconds, **uvicorn_arguments)
        super().__init__(config.guard, serve)


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # SIGTERM and SIGINT drain the whole server (server.py), not uvicorn alone

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.listening.set()


class HttpServer:
    """uvicorn serving `app` on an already bound socket, as a task on the running event loop.

    The guard caps its connections and speaks TLS when the gRPC port does (security.connections); a connection
    idle for `idle_seconds` between requests is closed, as is one whose request stalls for `read_seconds`.
    """

    def __init__(
        self,
        app: ASGIApp,
        sock: socket.socket,
        grace_seconds: float,
        guard: PortGuard,
        idle_seconds: float,
        read_seconds: float,
    ) -> None:
        self.port: int = sock.getsockname()[1]
        self.socket = sock
        config = _Config(
            app,
            lifespan="off",
            log_config=None,  # the server's logging configuration applies
            access_log=False,
            ws="none",  # no WebSocket routes: an upgrade would leave the guard
            http=_GuardedTimed,
            h11_max_incomplete_event_size=deadlines.MAX_HEAD_BYTES,  # the httptools parser's bound too
            timeout_graceful_shutdown=math.ceil(grace_seconds),
            timeout_keep_alive=idle_seconds,  # type: ignore[arg-type]  # uvicorn's timer takes a float
        )
        config.guard = guard
        config.read_seconds = read_seconds
        config.parser = deadlines.PARSER
        self._server = _Server(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.ensure_future(self._server.serve(sockets=[self.socket]))
        listening = asyncio.ensure_future(self._server.listening.wait())
        await asyncio.wait({self._task, listening}, return_when=asyncio.FIRST_COMPLETED)
        if not listening.done():
            listening.cancel()
            await self._task  # raises why uvicorn stopped
            raise RuntimeError("uvicorn stopped before listening")

    async def stop(self) -> None:
        """Refuses new connections, lets requests in flight finish (within the grace period), then returns."""
        self._server.should_exit = True
        if self._task is not None:
            await self._task
        logger.info("HTTP server stopped")
