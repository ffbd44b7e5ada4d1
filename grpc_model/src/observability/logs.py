"""Log lines as text or JSON, each carrying the request id of the call it is about.

The request id lives in a context variable: a front end sets it at the start of a call (each
gRPC call runs in its own asyncio task, so it stays with that call), and a filter on the handler
copies it onto every record. Model threads and worker processes are handed the ids of the calls
whose items are in their batch, so the lines they log about a batch carry them too.
"""

import contextvars
import itertools
import json
import logging
import os
import time
from collections.abc import Iterable
from typing import Literal

LogFormat = Literal["text", "json"]
REQUEST_ID_METADATA = "x-request-id"
MAX_REQUEST_ID_CHARS = 128

request_id: contextvars.ContextVar[object] = contextvars.ContextVar("request_id", default=None)
"""The id of the call being served (a str), or a `BatchIds` in a model thread; None outside a call."""

_PREFIX = os.urandom(4).hex()
_COUNTER = itertools.count(1)
_configured: LogFormat = "text"


def new_request_id() -> str:
    """Unique per process run: a random prefix and a counter (cheaper than a uuid4 per call)."""
    return f"{_PREFIX}-{next(_COUNTER):x}"


def accepted_request_id(sent: str | None) -> str:
    """The caller's id when it sent a usable one, else a new one; never longer than MAX_REQUEST_ID_CHARS."""
    if sent and sent.isprintable():
        return sent[:MAX_REQUEST_ID_CHARS]
    return new_request_id()


class BatchIds:
    """The request ids of the calls whose items share a batch, joined only when a line is logged."""

    __slots__ = ("ids",)

    def __init__(self, ids: Iterable[object]) -> None:
        self.ids = ids

    def __str__(self) -> str:
        return ",".join(dict.fromkeys(str(each) for each in self.ids if each is not None))


class RequestIdFilter(logging.Filter):
    """Puts the current request id (or None) on every record that passes the handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            current = request_id.get()
            record.request_id = None if current is None else str(current) or None
        return True


class TextFormatter(logging.Formatter):
    """`time level logger [request id]: message`, with the traceback below for errors."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(request_tag)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        current = getattr(record, "request_id", None)
        record.request_tag = f" [{current}]" if current else ""
        return super().format(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id when known, exc_info for errors."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        current = getattr(record, "request_id", None)
        if current:
            entry["request_id"] = current
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc_info"] = record.exc_text
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure(level: str | int, log_format: LogFormat = "text") -> None:
    """Sets up the root logger for the server (and for spawned worker processes, with the server's choice)."""
    global _configured
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(RequestIdFilter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # grpc's Python layer logs a DEBUG line per call ("Loaded running loop"): noise that would double
    # the cost of DEBUG. Its C core has its own switches (GRPC_VERBOSITY, GRPC_TRACE).
    logging.getLogger("grpc").setLevel(max(logging.getLogger().level, logging.INFO))
    _configured = log_format


def configured_format() -> LogFormat:
    """The format `configure` last set, which worker processes started later take over."""
    return _configured
