"""Protocol-level abuse and shutdown: the server keeps serving, leaks nothing, drops nothing."""

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from grpc_model.src.auto_generated.model2_template import model_pb2 as pb
from grpc_model.src.client import ModelClient
from grpc_model.tests.conftest import ServerFactory, ServerThread
from grpc_model.tests.wrappers import SleepsAsAsked


def server_tasks(server: ServerThread) -> int:
    async def count() -> int:
        return len(asyncio.all_tasks())

    return int(server.call(count()))


def test_malformed_protobuf_gets_invalid_argument(greeter_server: ServerThread) -> None:
    greeter_server.client.status()
    raw_run: grpc.UnaryUnaryMultiCallable[bytes, bytes] = greeter_server.client.channel.unary_unary("/ModzyModel/Run")

    with pytest.raises(grpc.RpcError) as raised:
        raw_run(b"\x0a\xff\xff\xff\xff\x0f", timeout=10)  # a length that runs past the end

    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "the request is not a valid RunRequest: Error parsing message" in str(raised.value.details())
    assert greeter_server.client.run([{"input.txt": b"Hi Al"}]).outputs[0].success


def test_thousands_of_cancelled_calls_leave_nothing_behind(serve_wrapper: ServerFactory) -> None:
    server = serve_wrapper("SleepsAsAsked")
    server.client.status()
    baseline_tasks, baseline_threads = server_tasks(server), threading.active_count()
    request = pb.RunRequest(inputs=[pb.InputItem(input={"a": b"0.01"})])

    calls = [server.client.stub.Run.future(request, timeout=30) for _ in range(2000)]
    time.sleep(0.2)
    for call in calls:
        call.cancel()

    deadline = time.monotonic() + 20
    while server_tasks(server) > baseline_tasks and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server_tasks(server) <= baseline_tasks
    assert server.running.service.runtime._batcher is not None
    assert server.running.service.runtime._batcher.queued == 0  # cancelled items were dropped, not run
    assert threading.active_count() <= baseline_threads
    assert server.client.run([{"a": b"0"}]).outputs[0].success


def test_many_connections_come_and_go(greeter_server: ServerThread) -> None:
    greeter_server.client.status()
    target = f"127.0.0.1:{greeter_server.running.port}"
    baseline_threads = threading.active_count()

    def connect_once(_: int) -> int:
        with grpc.insecure_channel(target) as channel:
            response = channel.unary_unary(
                "/ModzyModel/Status",
                request_serializer=pb.StatusRequest.SerializeToString,
                response_deserializer=pb.StatusResponse.FromString,
            )(pb.StatusRequest(), timeout=30)
            return int(response.status_code)

    with ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(connect_once, range(300)))

    assert codes == [200] * 300
    assert threading.active_count() <= baseline_threads + 2  # grpc keeps a couple of its own threads
    assert greeter_server.client.run([{"input.txt": b"Hi Al"}]).outputs[0].success


def test_shutdown_finishes_every_accepted_call_and_refuses_new_ones(serve_wrapper: ServerFactory) -> None:
    server = serve_wrapper("SleepsAsAsked", model_threads=1)
    server.client.status()
    request = pb.RunRequest(inputs=[pb.InputItem(input={"a": b"0.1"})])
    with ModelClient(f"127.0.0.1:{server.running.port}") as client:
        accepted = [client.stub.Run.future(request, timeout=30) for _ in range(10)]
        time.sleep(0.15)

        stopping = threading.Thread(target=server.stop)  # what Shutdown and SIGTERM do: drain within the grace
        stopping.start()
        time.sleep(0.2)
        late = client.stub.Run.future(request, timeout=30)
        stopping.join(timeout=30)

    assert [call.result().outputs[0].output for call in accepted] == [{"slept.txt": b"0.1"}] * 10
    with pytest.raises(grpc.RpcError) as raised:
        late.result()
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE


def test_an_expired_deadline_drops_the_queued_work(serve_wrapper: ServerFactory) -> None:
    SleepsAsAsked.ran.clear()
    server = serve_wrapper("SleepsAsAsked")  # one model thread: the second call queues
    server.client.status()
    busy = server.client.stub.Run.future(pb.RunRequest(inputs=[pb.InputItem(input={"a": b"0.5"})]), timeout=30)
    time.sleep(0.05)

    with pytest.raises(grpc.RpcError) as raised:
        server.client.stub.Run(pb.RunRequest(inputs=[pb.InputItem(input={"a": b"0.3"})]), timeout=0.2)

    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert busy.result().outputs[0].success
    assert server.client.run([{"a": b"0"}]).outputs[0].success
    assert SleepsAsAsked.ran == [b"0.5", b"0"]  # the expired call's item never reached the model
