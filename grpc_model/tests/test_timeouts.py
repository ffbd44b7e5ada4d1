"""timeout.run and timeout.status from model.yaml are enforced."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from grpc_model.src.auto_generated.model2_template import model_pb2 as pb
from grpc_model.src.runtime.batching import TIMEOUT_MESSAGE
from grpc_model.src.runtime.workers import WorkerPool
from grpc_model.tests.conftest import (
    PATIENCE_SECONDS,
    TESTS,
    ServerFactory,
    alive,
    eventually,
    wait_until_serving_again,
    write_test_bundle,
)
from grpc_model.tests.wrappers import Gated, HeldLoad


@pytest.fixture
def gated() -> Iterator[None]:
    """Gated starts afresh, and its held item is released however the test ends."""
    Gated.reset()
    yield
    Gated.release.set()


@pytest.mark.usefixtures("gated")
def test_an_item_over_the_run_timeout_fails_and_the_server_goes_on(serve: ServerFactory, tmp_path: Path) -> None:
    server = serve(model_class=f"{TESTS}:Gated", asset_bundle_dir=write_test_bundle(tmp_path, run="1s"))
    server.client.status()

    response = server.client.run([{"a": b"hold"}])  # the model holds it until released

    assert response.outputs[0].output == {"error": TIMEOUT_MESSAGE.encode()}  # answered at the timeout
    Gated.release.set()
    assert server.client.run([{"a": b"after"}]).outputs[0].output == {"a": b"after"}  # the model thread is back
    assert Gated.ran == [b"hold", b"after"]


@pytest.mark.usefixtures("gated")
def test_the_run_timeout_also_bounds_the_wait_in_the_queue(serve: ServerFactory, tmp_path: Path) -> None:
    server = serve(model_class=f"{TESTS}:Gated", asset_bundle_dir=write_test_bundle(tmp_path, run="1s"))
    server.client.status()
    held = server.client.stub.Run.future(pb.RunRequest(inputs=[pb.InputItem(input={"a": b"hold"})]), timeout=60)
    assert Gated.holding.wait(timeout=PATIENCE_SECONDS)

    queued = server.client.run([{"a": b"1"}, {"a": b"2"}])  # one model thread: these wait behind the held item

    assert [item.output for item in queued.outputs] == [{"error": TIMEOUT_MESSAGE.encode()}] * 2
    assert held.result(timeout=PATIENCE_SECONDS).outputs[0].output == {"error": TIMEOUT_MESSAGE.encode()}
    Gated.release.set()
    assert server.client.run([{"a": b"after"}]).outputs[0].success
    assert Gated.ran == [b"hold", b"after"]  # the queued items timed out without reaching the model


def test_a_hung_worker_is_killed_and_replaced(serve: ServerFactory, tmp_path: Path) -> None:
    server = serve(
        model_class=f"{TESTS}:HangsOnRequest", asset_bundle_dir=write_test_bundle(tmp_path, run="500ms"), workers=1
    )
    pool = server.running.service.runtime._executor
    assert isinstance(pool, WorkerPool)
    [hung_pid] = pool.pids

    hung = server.client.run([{"a": b"hang"}])

    # The batcher's timer and the pool's hang detector both fire at the run timeout; either answer is right.
    error = hung.outputs[0].output["error"].decode()
    assert error in (TIMEOUT_MESSAGE, f"the model's worker process {hung_pid} hung for over 0.5 s and was killed")
    wait_until_serving_again(server)  # a fresh worker loads the model
    assert hung_pid not in pool.pids
    eventually(lambda: not alive(hung_pid), "the hung worker to be gone")


def test_a_load_over_the_status_timeout_reports_500_then_finishes(serve: ServerFactory, tmp_path: Path) -> None:
    HeldLoad.release.clear()
    server = serve(model_class=f"{TESTS}:HeldLoad", asset_bundle_dir=write_test_bundle(tmp_path, status="200ms"))
    try:
        first = server.client.status()  # the load is held until the test releases it
    finally:
        HeldLoad.release.set()

    assert first.status_code == 500
    assert "did not finish loading within the status timeout of 0.2 s" in first.message
    assert server.client.wait_for_health("SERVING", PATIENCE_SECONDS) == "SERVING"  # the load went on
    assert server.client.status().status_code == 200
