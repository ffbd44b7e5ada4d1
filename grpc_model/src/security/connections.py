"""The HTTP and metrics ports' guard against hostile clients: a cap on open connections, and TLS with a deadline.

A connection counts from the moment it is accepted until it is closed, its TLS handshake included, so that
clients that connect and then say nothing cannot hold more than a share of the process's open files: each port
takes at most an eighth of RLIMIT_NOFILE by default, so neither of these ports can starve the other, the gRPC
port or the model of file descriptors. A connection past the cap is closed at once, without an answer.
A client that stalls the TLS handshake, or stops reading an answer (the server's buffer stays over asyncio's
high-water mark), is cut after `stall_seconds`.

The guard knows no protocol: it wraps whatever protocol serves the port (uvicorn's, or the metrics endpoint's),
which bounds the time it waits for a request itself.
"""

import asyncio
import logging
import resource
import socket
import ssl
from collections.abc import Callable
from typing import cast

logger = logging.getLogger(__name__)

SHARE_OF_OPEN_FILES = 8
"""Each guarded port may hold this fraction of the open-file limit."""
UNLIMITED_OPEN_FILES = 2**20  # what an unlimited RLIMIT_NOFILE counts as


def connection_cap(setting: int, share: int = SHARE_OF_OPEN_FILES) -> int:
    """Open connections one port may hold: the setting, or with 0 the `share`th part of the open-file limit."""
    if setting:
        return setting
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    limit = UNLIMITED_OPEN_FILES if soft == resource.RLIM_INFINITY else min(soft, UNLIMITED_OPEN_FILES)
    return max(1, limit // share)


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


class PortGuard:
    """One port's count of open connections, its cap, and its TLS (None: plaintext)."""

    def __init__(self, name: str, cap: int, tls: ssl.SSLContext | None, stall_seconds: float) -> None:
        self.name = name
        self.cap = cap
        self.tls = tls
        self.stall_seconds = stall_seconds
        self.open = 0
        self._full_reported = False

    def protocol(self, serve: Callable[[], asyncio.Protocol]) -> asyncio.Protocol:
        """What a listening socket's server creates for each accepted connection; `serve` makes the real one."""
        return Guarded(self, serve)

    def admit(self) -> bool:
        if self.open >= self.cap:
            if not self._full_reported:  # once until the port has room again, not once per refused connection
                logger.warning(
                    "%s port: %d connections are open, its cap; closing new ones (http_max_connections)",
                    self.name,
                    self.cap,
                )
                self._full_reported = True
            return False
        self.open += 1
        return True

    def release(self) -> None:
        self.open -= 1
        if self.open < self.cap:
            self._full_reported = False


class Guarded(asyncio.Protocol):
    """Counts one connection, makes it TLS when the port is, then hands every event to the port's protocol."""

    def __init__(self, guard: PortGuard, serve: Callable[[], asyncio.Protocol]) -> None:
        self._guard = guard
        self._serve = serve
        self._inner: asyncio.Protocol | None = None
        self._counted = False
        self._lost = False
        self._early: list[bytes] = []  # application data that TLS delivered before the handshake's task resumed
        self._handshake: asyncio.Task[None] | None = None
        self._transport: asyncio.Transport | None = None
        self._write_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._guard.admit():
            transport.close()
            return
        self._counted = True
        if self._guard.tls is None:
            self._start(transport)
            return
        cast(asyncio.Transport, transport).pause_reading()  # the ClientHello is for start_tls, not for us
        self._handshake = asyncio.ensure_future(self._start_tls(cast(asyncio.Transport, transport)))

    async def _start_tls(self, transport: asyncio.Transport) -> None:
        assert self._guard.tls is not None
        try:
            secure = await asyncio.get_running_loop().start_tls(
                transport,
                self,
                self._guard.tls,
                server_side=True,
                ssl_handshake_timeout=self._guard.stall_seconds,
            )
        except OSError:  # SSLError, TimeoutError and ConnectionError are OSErrors; start_tls closed the connection
            self._release()
            return
        if secure is None or self._lost:
            self._release()
            return
        self._start(secure)

    def _start(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._inner = self._serve()
        self._inner.connection_made(transport)
        for data in self._early:
            self._inner.data_received(data)
        self._early.clear()

    def _release(self) -> None:
        if self._counted:
            self._counted = False
            self._guard.release()

    def data_received(self, data: bytes) -> None:
        if self._inner is None:
            self._early.append(data)
        else:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return None if self._inner is None else self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._stop_write_timer()
        self._release()
        if self._inner is not None:
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._write_timer is None and self._transport is not None:  # the client reads too slowly, or not at all
            self._write_timer = asyncio.get_running_loop().call_later(self._guard.stall_seconds, self._transport.abort)
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._stop_write_timer()
        if self._inner is not None:
            self._inner.resume_writing()

    def _stop_write_timer(self) -> None:
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None
