"""Protocol-level abuse and shutdown: the server keeps serving, leaks nothing, drops nothing."""

import gc
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import CodeType, CoroutineType

import grpc
import pytest

import grpc_model.src
from grpc_model.src.auto_generated.model2_template import model_pb2 as pb
from grpc_model.src.client import ModelClient
from grpc_model.src.runtime.batching import Batcher
from grpc_model.src.servicer import ModzyModelService
from grpc_model.tests.conftest import PATIENCE_SECONDS, ServerFactory, ServerThread, eventually
from grpc_model.tests.wrappers import Gated

OUR_CODE = str(Path(grpc_model.src.__file__).parent)


def suspended_coroutines(server: ServerThread, code: CodeType | None = None) -> list[str]:
    """The framework's coroutines that are alive and waiting on the server's loop (only `code`'s, if given).

    What a cancelled call could leave behind that is ours: a handler still waiting for its items.
    grpc's own tasks and threads come and go as it sees fit, so the test does not count those.
    """

    async def find() -> list[str]:
        return [
            coroutine.cr_code.co_qualname
            for coroutine in gc.get_objects()
            if isinstance(coroutine, CoroutineType)
            and coroutine.cr_frame is not None  # not finished
            and (coroutine.cr_code is code if code else coroutine.cr_code.co_filename.startswith(OUR_CODE))
        ]

    return list(server.call(find()))


def run_calls_in_progress(server: ServerThread) -> int:
    """How many Run calls the servicer is still handling."""
    return len(suspended_coroutines(server, ModzyModelService.Run.__code__))


def threads_started_since(before: set[threading.Thread]) -> list[str]:
    return [thread.name for thread in threading.enumerate() if thread not in before]


def item(value: bytes) -> pb.RunRequest:
    return pb.RunRequest(inputs=[pb.InputItem(input={"a": value})])


@pytest.fixture
def gated(serve_wrapper: ServerFactory) -> Iterator[tuple[ServerThread, Batcher]]:
    """A server of the Gated wrapper and its batcher; the held item is released however the test ends."""
    Gated.reset()
    server = serve_wrapper("Gated", shutdown_grace_seconds=60)
    server.client.status()
    assert server.running.service.runtime._batcher is not None
    yield server, server.running.service.runtime._batcher
    Gated.release.set()


def test_malformed_protobuf_gets_invalid_argument(greeter_server: ServerThread) -> None:
    greeter_server.client.status()
    raw_run: grpc.UnaryUnaryMultiCallable[bytes, bytes] = greeter_server.client.channel.unary_unary("/ModzyModel/Run")

    with pytest.raises(grpc.RpcError) as raised:
        raw_run(b"\x0a\xff\xff\xff\xff\x0f", timeout=10)  # a length that runs past the end

    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "the request is not a valid RunRequest: Error parsing message" in str(raised.value.details())
    assert greeter_server.client.run([{"input.txt": b"Hi Al"}]).outputs[0].success


def test_thousands_of_cancelled_calls_leave_nothing_behind(gated: tuple[ServerThread, Batcher]) -> None:
    server, batcher = gated
    threads_before = set(threading.enumerate())
    held = server.client.stub.Run.future(item(b"hold"), timeout=PATIENCE_SECONDS)
    assert Gated.holding.wait(timeout=PATIENCE_SECONDS)

    calls = [server.client.stub.Run.future(item(b"cancelled"), timeout=PATIENCE_SECONDS) for _ in range(2000)]
    # Every call is queued behind the held one, or was shed by grpc before it reached the service (with
    # more calls waiting to be picked up than grpc.server.max_pending_requests, 1000, it cancels some).
    eventually(lambda: batcher.queued + sum(call.done() for call in calls) == 2000, "every call to arrive")
    assert batcher.queued > 0
    for call in calls:
        call.cancel()
    eventually(lambda: run_calls_in_progress(server) == 1, "the server to drop every cancelled call")
    Gated.release.set()

    assert held.result(timeout=PATIENCE_SECONDS).outputs[0].output == {"a": b"hold"}
    eventually(lambda: batcher.queued == 0, "the cancelled items to leave the queue")
    eventually(lambda: not suspended_coroutines(server), "no coroutine of the framework to be left waiting")
    eventually(lambda: not threads_started_since(threads_before), "the threads started meanwhile to end")
    assert server.client.run([{"a": b"after"}]).outputs[0].success
    assert Gated.ran == [b"hold", b"after"]  # not one cancelled item was run


def test_many_connections_come_and_go(greeter_server: ServerThread) -> None:
    greeter_server.client.status()
    target = f"127.0.0.1:{greeter_server.running.port}"

    def connect_once(_: int) -> int:
        with grpc.insecure_channel(target) as channel:
            response = channel.unary_unary(
                "/ModzyModel/Status",
                request_serializer=pb.StatusRequest.SerializeToString,
                response_deserializer=pb.StatusResponse.FromString,
            )(pb.StatusRequest(), timeout=30)
            return int(response.status_code)

    with ThreadPoolExecutor(16) as pool:
        assert list(pool.map(connect_once, range(16))) == [200] * 16  # whatever grpc starts once is started now
    threads_before = set(threading.enumerate())
    with ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(connect_once, range(300)))

    assert codes == [200] * 300
    eventually(lambda: not threads_started_since(threads_before), "no thread to outlive its connection")
    assert greeter_server.client.run([{"input.txt": b"Hi Al"}]).outputs[0].success


def test_shutdown_finishes_every_accepted_call_and_refuses_new_ones(gated: tuple[ServerThread, Batcher]) -> None:
    server, batcher = gated
    with ModelClient(f"127.0.0.1:{server.running.port}") as client:
        accepted = [client.stub.Run.future(item(b"hold"), timeout=PATIENCE_SECONDS)]
        assert Gated.holding.wait(timeout=PATIENCE_SECONDS)
        accepted += [client.stub.Run.future(item(bytes([i])), timeout=PATIENCE_SECONDS) for i in range(9)]
        eventually(lambda: batcher.queued == 9, "the calls to be queued behind the held one")

        stopping = threading.Thread(target=server.stop)  # what Shutdown and SIGTERM do: drain within the grace
        stopping.start()
        eventually(lambda: refused(client), "the stopping server to refuse new calls")
        with pytest.raises(grpc.RpcError) as raised:
            client.run([{"a": b"late"}])
        Gated.release.set()
        answers = [call.result(timeout=PATIENCE_SECONDS).outputs[0].output for call in accepted]
        stopping.join(timeout=PATIENCE_SECONDS)

    assert answers == [{"a": b"hold"}] + [{"a": bytes([i])} for i in range(9)]
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert Gated.ran == [b"hold"] + [bytes([i]) for i in range(9)]


def refused(client: ModelClient) -> bool:
    """Whether the server refuses a new call (a Status: it answers at once even while the model is held).

    A call that reaches the server just as it stops is CANCELLED by grpc rather than refused:
    not yet conclusive, so the caller asks again.
    """
    try:
        client.status()
    except grpc.RpcError as error:
        if error.code() == grpc.StatusCode.CANCELLED:
            return False
        if error.code() != grpc.StatusCode.UNAVAILABLE:
            raise
        return True
    return False


def test_an_expired_deadline_drops_the_queued_work(gated: tuple[ServerThread, Batcher]) -> None:
    server, batcher = gated
    held = server.client.stub.Run.future(item(b"hold"), timeout=PATIENCE_SECONDS)
    assert Gated.holding.wait(timeout=PATIENCE_SECONDS)

    expiring = server.client.stub.Run.future(item(b"expired"), timeout=2)
    eventually(lambda: batcher.queued == 1, "the call to be queued behind the held one")
    with pytest.raises(grpc.RpcError) as raised:
        expiring.result()
    eventually(lambda: run_calls_in_progress(server) == 1, "the server to give up on the expired call")
    Gated.release.set()

    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert held.result(timeout=PATIENCE_SECONDS).outputs[0].success
    assert server.client.run([{"a": b"after"}]).outputs[0].success
    assert Gated.ran == [b"hold", b"after"]  # the expired call's item never reached the model
