"""The engine behind a live server: model threads, worker processes and back-pressure."""

import os
import re
import signal
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from grpc_model.src.auto_generated.model2_template import model_pb2 as pb
from grpc_model.src.runtime import WrapperImportError
from grpc_model.tests.conftest import (
    PATIENCE_SECONDS,
    ServerFactory,
    ServerProcess,
    ServerThread,
    alive,
    eventually,
    start,
)
from grpc_model.tests.wrappers import Gated, OnLoop, Overlapping


def concurrent_runs(server: ServerThread, requests: list[list[dict[str, bytes]]]) -> list[pb.RunResponse]:
    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(server.client.run, requests))


def test_model_threads_run_calls_at_once_for_a_thread_safe_model(serve_wrapper: ServerFactory) -> None:
    Overlapping.reset(wanted=4, patience=PATIENCE_SECONDS)  # each call waits until 4 have run at once
    server = serve_wrapper("Overlapping", model_threads=4)
    server.client.status()

    responses = concurrent_runs(server, [[{"a": b"1"}]] * 8)

    assert all(r.outputs[0].success for r in responses)
    assert Overlapping.most == 4


def test_by_default_model_calls_run_one_at_a_time(serve_wrapper: ServerFactory) -> None:
    Overlapping.reset(wanted=2, patience=0.2)  # each call gives a second one 0.2 s to (wrongly) join it
    server = serve_wrapper("Overlapping")
    server.client.status()
    concurrent_runs(server, [[{"a": b"1"}]] * 4)
    assert Overlapping.most == 1


def test_a_wrapper_may_run_on_the_event_loop_and_keeps_item_failures_apart(serve_wrapper: ServerFactory) -> None:
    OnLoop.threads.clear()
    server = serve_wrapper("OnLoop")
    server.client.status()

    responses = concurrent_runs(server, [[{"a": b"1"}, {"a": b"fail"}, {"a": b"2"}]] * 4)

    assert all([o.success for o in r.outputs] == [True, False, True] for r in responses)
    assert set(OnLoop.threads) == {"test-server"}  # the server's event loop thread, not a model thread
    server_with_workers = serve_wrapper("OnLoop", workers=1)  # ignored with workers: they run the model
    assert server_with_workers.client.run([{"a": b"1"}]).outputs[0].success
    assert set(OnLoop.threads) == {"test-server"}  # the worker's calls were in another process


def test_model_threads_need_a_thread_safe_wrapper(serve_wrapper: ServerFactory) -> None:
    with pytest.raises(WrapperImportError, match="does not declare `thread_safe = True`"):
        serve_wrapper("Echo", model_threads=2)


@pytest.mark.usefixtures("gate")
def test_worker_processes_share_the_load_and_are_stopped(serve_wrapper: ServerFactory) -> None:
    server = serve_wrapper("Pid", workers=2)  # a call waits until both workers answer one: they must share
    assert server.client.health() == "SERVING"  # workers imply loading at start-up

    responses = concurrent_runs(server, [[{"a": b"1"}]] * 6)

    pids = {int(r.outputs[0].output["pid"]) for r in responses}
    assert len(pids) == 2
    assert os.getpid() not in pids
    server.stop()
    assert not any(alive(pid) for pid in pids)


def test_workers_do_not_outlive_a_killed_server(processes: list[ServerProcess]) -> None:
    server = start(processes, "--workers", "2")
    server.client().close()  # serving: the workers were started before
    match = re.search(r"worker processes ready \(fork\): \[([\d, ]+)\]", server.output())
    assert match, server.output()
    worker_pids = [int(pid) for pid in match.group(1).split(",")]
    assert len(worker_pids) == 2
    server.process.send_signal(signal.SIGKILL)
    server.wait()

    eventually(lambda: not any(alive(pid) for pid in worker_pids), "the workers to notice and exit")


def test_a_full_queue_gets_resource_exhausted(serve_wrapper: ServerFactory) -> None:
    Gated.reset()
    server = serve_wrapper("Gated", max_queued_items=3)
    server.client.status()
    batcher = server.running.service.runtime._batcher
    assert batcher is not None
    try:
        busy = server.client.stub.Run.future(pb.RunRequest(inputs=[pb.InputItem(input={"a": b"hold"})] * 3))
        eventually(lambda: Gated.holding.is_set() and batcher.queued == 2, "one item held, two queued")

        with pytest.raises(grpc.RpcError) as raised:
            server.client.run([{"a": b"1"}] * 2)
    finally:
        Gated.release.set()

    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "2 items are queued and this call adds 2, over the limit of 3" in str(raised.value.details())
    assert len(busy.result(timeout=PATIENCE_SECONDS).outputs) == 3
    assert server.client.run([{"a": b"1"}]).outputs[0].success  # serving again once drained
    with pytest.raises(grpc.RpcError, match="this call has 4 items, more than the server queues at once"):
        server.client.run([{"a": b"1"}] * 4)
