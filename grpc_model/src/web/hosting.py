"""uvicorn inside the gRPC server's process and event loop, started and stopped by the wiring.

Signals stay the gRPC server's: uvicorn installs no handlers of its own, and stops when the
wiring's graceful shutdown tells it to, draining its requests within the same grace period.
"""

import asyncio
import contextlib
import logging
import math
import socket
import ssl
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI

logger = logging.getLogger(__name__)


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


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on the gRPC server's host setting (`[::]` is every interface); raises OSError."""
    name = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    family, _, _, _, address = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    dual_stack = family == socket.AF_INET6 and name == "::" and socket.has_dualstack_ipv6()
    sock = socket.create_server(address[:2], family=family, dualstack_ipv6=dual_stack)
    # Accepted connections inherit TCP_NODELAY. asyncio sets it only on sockets whose protocol number is TCP, and
    # create_server's is 0: without this, Nagle's algorithm meets the client's delayed ACK and every answer on a
    # kept-alive connection waits about 40 ms.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class HttpServer:
    """uvicorn serving `app` on an already bound socket, as a task on the running event loop.

    With `tls` (certificate, key, and the CA of client certificates or ""), it speaks HTTPS as the gRPC
    port speaks TLS, from the same files, requiring a client certificate when the gRPC port does.
    """

    def __init__(
        self, app: FastAPI, sock: socket.socket, grace_seconds: float, tls: tuple[str, str, str] | None = None
    ) -> None:
        self.port: int = sock.getsockname()[1]
        self.socket = sock
        config = uvicorn.Config(
            app,
            lifespan="off",
            log_config=None,  # the server's logging configuration applies
            access_log=False,
            timeout_graceful_shutdown=math.ceil(grace_seconds),
            ssl_certfile=None if tls is None else tls[0],
            ssl_keyfile=None if tls is None else tls[1],
            ssl_ca_certs=tls[2] if tls and tls[2] else None,
            ssl_cert_reqs=ssl.CERT_REQUIRED if tls and tls[2] else ssl.CERT_NONE,
        )
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
