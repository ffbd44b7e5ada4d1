"""Registering a gRPC service whose requests the framework parses itself; shared by the gRPC front ends.

grpcio answers a request it cannot parse with UNKNOWN; parsing here answers INVALID_ARGUMENT with
the message type and the parser's reason, as a client on any stack expects. Every call also gets
its request id and is counted here, so each front end's calls are observed alike.
"""

import asyncio
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message
from grpc.aio import AbortError

from grpc_model.src.observability import logs
from grpc_model.src.observability.metrics import NO_METRICS, Recorder
from grpc_model.src.security.wire import TooManyMessagesError, check_message_count

logger = logging.getLogger(__name__)

Behaviour = Callable[[Any, "grpc.aio.ServicerContext[Any, Any]"], Awaitable[Message]]
Methods = Mapping[str, tuple[Behaviour, type[Message], type[Message]]]
"""Method name -> (behaviour, request type, response type)."""


_received_bytes: contextvars.ContextVar[int] = contextvars.ContextVar("received_bytes")


def request_size(request: Message) -> int:
    """The request's size on the wire, for the budget of bytes in flight.

    The length of what arrived when this module parsed it: `ByteSize()` serialises the whole message again
    under upb (a copy, and 0.6 s holding the GIL for 150 MB), so it is only the fallback for a request made
    in-process.
    """
    size = _received_bytes.get(None)
    return request.ByteSize() if size is None else size


def add_unary_service(
    server: grpc.aio.Server, service_name: str, methods: Methods, metrics: Recorder = NO_METRICS
) -> None:
    """Registers unary methods like the generated code does, but parses requests itself."""
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        name: grpc.unary_unary_rpc_method_handler(
            _observed(name, _parsing(behaviour, request_type), metrics),
            response_serializer=response_type.SerializeToString,
        )
        for name, (behaviour, request_type, response_type) in methods.items()
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service_name, handlers),))
    server.add_registered_method_handlers(service_name, handlers)


def _parsing(behaviour: Behaviour, request_type: type[Message]) -> Behaviour:
    async def handle(raw: bytes, context: "grpc.aio.ServicerContext[Any, Any]") -> Message:
        try:
            check_message_count(raw, request_type)
        except TooManyMessagesError as error:
            logger.warning(
                "%s: a request refused unparsed from %s: %s", request_type.DESCRIPTOR.name, context.peer(), error
            )
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        try:
            request = request_type.FromString(raw)
        except (DecodeError, ValueError) as error:  # ValueError: bad UTF-8 under the pure-Python backend
            name = request_type.DESCRIPTOR.name
            logger.warning(
                "%s: a request that is not a valid %s from %s", name[: -len("Request")], name, context.peer()
            )
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"the request is not a valid {name}: {error}")
        _received_bytes.set(len(raw))  # this call's own task: the size stays with it
        return await behaviour(request, context)

    return handle


def _observed(method: str, behaviour: Behaviour, metrics: Recorder) -> Behaviour:
    """Gives the call its request id (logged with every line about it, sent back to the caller), and counts it."""

    async def handle(raw: bytes, context: "grpc.aio.ServicerContext[Any, Any]") -> Message:
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
