"""Registering a gRPC service whose requests the framework parses itself; shared by the gRPC front ends.

grpcio answers a request it cannot parse with UNKNOWN; parsing here answers INVALID_ARGUMENT with
the message type and the parser's reason, as a client on any stack expects. Every call also gets
its request id and is counted here, so each front end's calls are observed alike.

Large payloads are copied as few times as grpcio allows: a request's large bytes fields are read in place
from the received bytes (lifting.py, `view` and `restored` here), and the answer is serialised here, so that
its message is gone before grpcio copies the serialised bytes out (grpcio would hold the message until the
answer is sent).
"""

import asyncio
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message
from grpc.aio import AbortError

from grpc_model.src.lifting import Lifted, lift
from grpc_model.src.observability import logs
from grpc_model.src.observability.metrics import NO_METRICS, Recorder
from grpc_model.src.security.wire import TooManyMessagesError, check_message_count, write_varint

logger = logging.getLogger(__name__)

Behaviour = Callable[[Any, "grpc.aio.ServicerContext[Any, Any]"], Awaitable[Message | bytes]]
"""A method: its request message in, its answer out, as a message or already serialised."""
Handler = Callable[[bytes, "grpc.aio.ServicerContext[Any, Any]"], Awaitable[bytes]]
Methods = Mapping[str, tuple[Behaviour, type[Message]]]
"""Method name -> (behaviour, request type)."""


_received_bytes: contextvars.ContextVar[int] = contextvars.ContextVar("received_bytes")
_lifted: contextvars.ContextVar[Lifted | None] = contextvars.ContextVar("lifted", default=None)


def request_size(request: Message) -> int:
    """The request's size on the wire, for the budget of bytes in flight.

    The length of what arrived when this module parsed it: `ByteSize()` serialises the whole message again
    under upb (a copy, and 0.6 s holding the GIL for 150 MB), so it is only the fallback for a request made
    in-process.
    """
    size = _received_bytes.get(None)
    return request.ByteSize() if size is None else size


def view(value: bytes) -> bytes | memoryview:
    """A bytes field of this call's request as the client sent it, without a copy where it was lifted
    (a view of the received bytes, alive as long as the call)."""
    lifted = _lifted.get()
    return value if lifted is None else lifted.view(value)


def restored(value: bytes) -> bytes:
    """A bytes field of this call's request as the client sent it, copied out of the received bytes once."""
    content = view(value)
    return content if isinstance(content, bytes) else content.tobytes()


def restored_files(files: Mapping[str, bytes]) -> Mapping[str, bytes]:
    """A map of bytes fields (file name -> content) as the client sent it: `files` itself unless some were lifted."""
    if _lifted.get() is None:
        return files
    return {name: restored(content) for name, content in files.items()}


def length_delimited(field_number: int, parts: Sequence[bytes]) -> list[bytes]:
    """A bytes or message field on the wire, in pieces: its tag, its length, then `parts`. Appended to a
    serialised message, it adds the field (a repeated one's next entry), and one join copies `parts` once."""
    return [write_varint(field_number << 3 | 2), write_varint(sum(len(part) for part in parts)), *parts]


def add_unary_service(
    server: grpc.aio.Server, service_name: str, methods: Methods, metrics: Recorder = NO_METRICS
) -> None:
    """Registers unary methods like the generated code does, but parses requests itself."""
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        name: grpc.unary_unary_rpc_method_handler(_observed(name, _parsing(behaviour, request_type), metrics))
        for name, (behaviour, request_type) in methods.items()
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service_name, handlers),))
    server.add_registered_method_handlers(service_name, handlers)


def _parsing(behaviour: Behaviour, request_type: type[Message]) -> Handler:
    async def handle(raw: bytes, context: "grpc.aio.ServicerContext[Any, Any]") -> bytes:
        try:
            check_message_count(raw, request_type)
        except TooManyMessagesError as error:
            logger.warning(
                "%s: a request refused unparsed from %s: %s", request_type.DESCRIPTOR.name, context.peer(), error
            )
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        parsed, lifted = lift(raw, request_type)
        try:
            request = request_type.FromString(parsed)
        except (DecodeError, ValueError) as error:  # ValueError: bad UTF-8 under the pure-Python backend
            name = request_type.DESCRIPTOR.name
            logger.warning(
                "%s: a request that is not a valid %s from %s", name[: -len("Request")], name, context.peer()
            )
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"the request is not a valid {name}: {error}")
        del parsed  # the request's own copy, when large fields were cut out of it
        _received_bytes.set(len(raw))  # this call's own task: the size and the lifted fields stay with it
        _lifted.set(lifted)
        try:
            answer = await behaviour(request, context)
        finally:
            if lifted is not None:  # a timer the call armed keeps a copy of its context for as long as it waits
                lifted.release()
        return answer if isinstance(answer, bytes) else answer.SerializeToString()

    return handle


def _observed(method: str, behaviour: Handler, metrics: Recorder) -> Handler:
    """Gives the call its request id (logged with every line about it, sent back to the caller), and counts it."""

    async def handle(raw: bytes, context: "grpc.aio.ServicerContext[Any, Any]") -> bytes:
        started = time.perf_counter()
        metadata = context.invocation_metadata() or ()
        sent = next((value for key, value in metadata if key == logs.REQUEST_ID_METADATA), None)
        request_id = logs.accepted_request_id(sent if isinstance(sent, str) else None)
        logs.request_id.set(request_id)  # this call's own task: the id stays with it
        context.set_trailing_metadata(((logs.REQUEST_ID_METADATA, request_id),))
        code = "OK"
        try:
            return await behaviour(raw, context)
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        except AbortError:
            code = _code_name(context.code())
            raise
        except BaseException:
            code = "UNKNOWN"
            raise
        finally:
            metrics.call(method, code, time.perf_counter() - started)

    return handle


def _code_name(code: object) -> str:
    return code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
