"""uvicorn's HTTP/1.1 protocols with the deadlines they lack, so that a client that stalls is closed.

uvicorn closes a connection idle after an answer (`timeout_keep_alive`), but not a new one that says nothing,
and it waits for a request's head and body as long as the client likes. Here a new connection gets the idle
timeout too; once the first byte of a request has come, its head must be complete within `read_seconds`, and a
body may pause no longer than that between two reads. The client gets no answer: the connection is closed.
While uvicorn has paused reading (the application has not taken the body read so far), the client is not to
blame, and no clock runs.

uvicorn has two parsers: httptools (C, what its `auto` picks when installed) and h11 (pure Python, always
there). Both get the same deadlines, and the same bound on a request's head (MAX_HEAD_BYTES: httptools kept every
byte of a head until it ended); `PARSER` is the one this install uses.
"""

import asyncio
from collections.abc import Callable
from typing import Any

import h11
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.h11_impl import H11Protocol

MAX_HEAD_BYTES = 16 * 1024
"""The largest request head (request line and headers) either parser takes (h11's default, which hosting.py passes
to it); past it, 400 and the connection closes."""


class _Deadlines:
    """The deadlines, for a uvicorn protocol that says when a request is partly received (`_partly_received`)."""

    loop: asyncio.AbstractEventLoop
    flow: FlowControl
    transport: asyncio.Transport
    timeout_keep_alive: int
    timeout_keep_alive_task: asyncio.TimerHandle | None
    timeout_keep_alive_handler: Callable[[], None]

    def __init__(self, *args: Any, read_seconds: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_seconds = read_seconds
        self._read_timer: asyncio.TimerHandle | None = None
        self._read_deadline: float | None = None
        """When the request partly received stalls (loop time); None while none is, or while reading is paused."""

    def _partly_received(self) -> bool:
        raise NotImplementedError

    def _start_clocks(self, transport: asyncio.Transport) -> None:
        """After uvicorn's connection_made: the idle timeout of a new connection, and a flow control that tells."""
        self.flow = _Flow(transport, lambda: self._watch_reads(restart=True))  # resumed: a whole pause again
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def _watch_reads(self, restart: bool) -> None:
        """Sets the read deadline while a request is partly received; a head keeps the deadline of its first byte.

        Progress only moves the deadline: the one timer is re-armed when it fires early, not replaced at each
        event (three times per request, a few percent of a small request's CPU)."""
        if not self._partly_received() or self.flow.read_paused:
            self._read_deadline = None  # the timer, if armed, finds nothing to do
            return
        if restart or self._read_deadline is None:
            self._read_deadline = self.loop.time() + self._read_seconds
        if self._read_timer is None:
            self._read_timer = self.loop.call_at(self._read_deadline, self._check_reads)

    def _stop_reads(self) -> None:
        self._read_deadline = None
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _check_reads(self) -> None:
        self._read_timer = None
        if self._read_deadline is None:
            return
        if self.loop.time() < self._read_deadline:  # the request made progress since the timer was armed
            self._read_timer = self.loop.call_at(self._read_deadline, self._check_reads)
        elif not self.transport.is_closing():
            self.transport.close()


class _Flow(FlowControl):
    """uvicorn's flow control, saying when reading pauses or resumes."""

    def __init__(self, transport: asyncio.Transport, changed: Callable[[], None]) -> None:
        super().__init__(transport)
        self._changed = changed

    def pause_reading(self) -> None:
        super().pause_reading()
        self._changed()

    def resume_reading(self) -> None:
        super().resume_reading()
        self._changed()


class TimedH11(_Deadlines, H11Protocol):
    def _partly_received(self) -> bool:
        state = self.conn.their_state
        return state is h11.SEND_BODY or (state is h11.IDLE and bool(self.conn.trailing_data[0]))

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_clocks(transport)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch_reads(restart=self.conn.their_state is h11.SEND_BODY)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch_reads(restart=True)  # a pipelined request starts its own deadline

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_reads()
        super().connection_lost(exc)


PARSER: Callable[..., asyncio.Protocol] = TimedH11

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools comes with uvicorn's `standard` extra, which the `http` group does not ask for
    pass
else:

    class TimedHttpTools(_Deadlines, HttpToolsProtocol):
        _request: str | None = None  # "head" or "body" while a request is partly received
        _head_bytes = 0

        def _partly_received(self) -> bool:
            return self._request is not None

        def data_received(self, data: bytes) -> None:
            """Counts the bytes of a head that did not end in the read it began in; past MAX_HEAD_BYTES, 400.

            A head is cut at most one read (256 KiB) past the limit, and the tail of a pipelined request that
            shares the head's first read never counts against it."""
            if self.transport.is_closing():
                return
            continued = self._request == "head"
            super().data_received(data)
            if self._request != "head":
                return
            self._head_bytes = self._head_bytes + len(data) if continued else 0
            if self._head_bytes > MAX_HEAD_BYTES and not self.transport.is_closing():
                self.send_400_response(f"the request head is over {MAX_HEAD_BYTES} bytes")

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._start_clocks(transport)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._request = "head"
            self._watch_reads(restart=False)

        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            self._request = "body"  # until on_message_complete, at once when there is none
            self._watch_reads(restart=True)

        def on_body(self, body: bytes) -> None:
            super().on_body(body)
            self._watch_reads(restart=True)

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._request = None
            self._watch_reads(restart=True)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._watch_reads(restart=True)

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_reads()
            super().connection_lost(exc)

    PARSER = TimedHttpTools
