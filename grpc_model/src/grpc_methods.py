"""Registering a gRPC service whose requests the framework parses itself; shared by the gRPC front ends.

grpcio answers a request it cannot parse with UNKNOWN; parsing here answers INVALID_ARGUMENT with
the message type and the parser's reason, as a client on any stack expects.
"""

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message

logger = logging.getLogger(__name__)

Behaviour = Callable[[Any, "grpc.aio.ServicerContext[Any, Any]"], Awaitable[Message]]
Methods = Mapping[str, tuple[Behaviour, type[Message], type[Message]]]
"""Method name -> (behaviour, request type, response type)."""


def add_unary_service(server: grpc.aio.Server, service_name: str, methods: Methods) -> None:
    """Registers unary methods like the generated code does, but parses requests itself."""
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        name: grpc.unary_unary_rpc_method_handler(
            _parsing(behaviour, request_type), response_serializer=response_type.SerializeToString
        )
        for name, (behaviour, request_type, response_type) in methods.items()
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service_name, handlers),))
    server.add_registered_method_handlers(service_name, handlers)


def _parsing(behaviour: Behaviour, request_type: type[Message]) -> Behaviour:
    async def handle(raw: bytes, context: "grpc.aio.ServicerContext[Any, Any]") -> Message:
        try:
            request = request_type.FromString(raw)
        except (DecodeError, ValueError) as error:  # ValueError: bad UTF-8 under the pure-Python backend
            name = request_type.DESCRIPTOR.name
            logger.warning(
                "%s: a request that is not a valid %s from %s", name[: -len("Request")], name, context.peer()
            )
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"the request is not a valid {name}: {error}")
        return await behaviour(request, context)

    return handle
