"""uvicorn inside the gRPC server's process and event loop, started and stopped by the wiring.

Signals stay the gRPC server's: uvicorn installs no handlers of its own, and stops when the
wiring's graceful shutdown tells it to, draining its requests within the same grace period.

Hostile clients: the port's guard (security.connections) caps open connections and does TLS with a
deadline; uvicorn closes a connection idle between requests (`timeout_keep_alive`), and `_Timed` adds
what h11 and uvicorn lack, a deadline for the request itself.
"""

import asyncio
import contextlib
import functools
import logging
import math
import socket
from collections.abc import Iterator
from typing import Any

import h11
import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

from grpc_model.src.security.connections import Guarded, PortGuard

logger = logging.getLogger(__name__)


class _Config(uvicorn.Config):
    """uvicorn's configuration, carrying what each connection's protocol needs besides."""

    guard: PortGuard
    read_seconds: float


class _Timed(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, closing a connection whose client stalls.

    A new connection gets the idle timeout that uvicorn gives only to one that has had an answer. Once the
    first byte of a request has come, its head must be complete within `read_seconds`; a body may pause no
    longer than that between two reads. The client gets no answer: the connection is closed.
    """

    def __init__(self, *args: Any, read_seconds: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_seconds = read_seconds
        self._read_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch_reads(restart=self.conn.their_state is h11.SEND_BODY)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch_reads(restart=True)  # a pipelined request starts its own deadline

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_reads()
        super().connection_lost(exc)

    def _watch_reads(self, restart: bool) -> None:
        """Arms the read deadline while a request is partly received; a head keeps the deadline of its first byte."""
        state = self.conn.their_state
        partial_head = state is h11.IDLE and bool(self.conn.trailing_data[0])
        if restart or not (partial_head or state is h11.SEND_BODY):
            self._stop_reads()
        if (partial_head or state is h11.SEND_BODY) and self._read_timer is None:
            self._read_timer = self.loop.call_later(self._read_seconds, self._stalled)

    def _stop_reads(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _stalled(self) -> None:
        self._read_timer = None
        if not self.transport.is_closing():
            self.transport.close()


class _GuardedTimed(Guarded):
    """What uvicorn makes for each connection, with its own arguments: `_Timed` behind the port's guard."""

    def __init__(self, config: _Config, **uvicorn_arguments: Any) -> None:
        serve = functools.partial(_Timed, config=config, read_seconds=config.read_seconds, **uvicorn_arguments)
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
        app: FastAPI,
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
            timeout_graceful_shutdown=math.ceil(grace_seconds),
            timeout_keep_alive=idle_seconds,  # type: ignore[arg-type]  # uvicorn's timer takes a float
        )
        config.guard = guard
        config.read_seconds = read_seconds
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
