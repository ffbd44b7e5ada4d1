"""A client on another HTTP/2 stack: grpclib, with raw protobuf messages and asyncio's ssl."""

import asyncio
import ssl
from typing import Any

from google.protobuf.message import Message
from grpclib.client import Channel, UnaryUnaryMethod

from grpc_model.src.auto_generated.model2_template import model_pb2 as pb
from grpc_model.tests.certificates import TestPKI
from grpc_model.tests.conftest import PATIENCE_SECONDS, ServerThread

HELLO = {"input.txt": b"My name is Ada"}


def grpclib_context(pki: TestPKI, with_client_cert: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=pki.server_ca)
    context.set_alpn_protocols(["h2"])  # gRPC servers insist on HTTP/2 by ALPN
    if with_client_cert:
        context.load_cert_chain(pki.client.cert, pki.client.key)
    return context


class ClosingLoop(asyncio.SelectorEventLoop):
    """Closes every connection it made at once, and waits until their sockets are closed.

    grpclib's close() starts a TLS shutdown that waits for the server's close_notify, which gRPC
    never sends (30 s); a loop closed before that leaves the socket open (a ResourceWarning, an
    error in these tests).
    """

    def __init__(self) -> None:
        super().__init__()
        self.connections: list[tuple[list[asyncio.BaseTransport], asyncio.Event]] = []

    async def create_connection(self, protocol_factory: Any, *args: Any, **kwargs: Any) -> Any:
        transports: list[asyncio.BaseTransport] = []
        lost = asyncio.Event()
        self.connections.append((transports, lost))

        def tracked() -> Any:
            protocol = protocol_factory()
            made, connection_lost = protocol.connection_made, protocol.connection_lost

            def on_made(transport: asyncio.BaseTransport) -> None:
                transports.append(transport)
                made(transport)

            def on_lost(error: Exception | None) -> None:
                connection_lost(error)
                lost.set()

            protocol.connection_made, protocol.connection_lost = on_made, on_lost
            return protocol

        try:
            return await super().create_connection(tracked, *args, **kwargs)
        except BaseException:
            lost.set()  # asyncio closed what it opened
            raise

    async def close_connections(self) -> None:
        for transports, _ in self.connections:
            for transport in transports:
                transport.abort()  # type: ignore[attr-defined]
        await asyncio.wait_for(asyncio.gather(*(lost.wait() for _, lost in self.connections)), PATIENCE_SECONDS)


def grpclib_call(
    server: ServerThread,
    method: str,
    request: Message,
    reply_type: type[Message],
    context: ssl.SSLContext | None = None,
    metadata: dict[str, str] | None = None,
) -> Any:
    async def call() -> Any:
        channel = Channel("127.0.0.1", server.running.port, ssl=context)
        try:
            name = f"/ModzyModel/{method}"
            stub: UnaryUnaryMethod[Any, Any] = UnaryUnaryMethod(channel, name, type(request), reply_type)
            return await stub(request, timeout=30, metadata=metadata)
        finally:
            channel.close()
            loop = asyncio.get_running_loop()
            assert isinstance(loop, ClosingLoop)
            await loop.close_connections()

    with asyncio.Runner(loop_factory=ClosingLoop) as runner:
        return runner.run(call())


def grpclib_status(server: ServerThread, **options: Any) -> pb.StatusResponse:
    response: pb.StatusResponse = grpclib_call(server, "Status", pb.StatusRequest(), pb.StatusResponse, **options)
    return response


def grpclib_run(server: ServerThread, **options: Any) -> pb.RunResponse:
    request = pb.RunRequest(inputs=[pb.InputItem(input=HELLO)])
    response: pb.RunResponse = grpclib_call(server, "Run", request, pb.RunResponse, **options)
    return response
