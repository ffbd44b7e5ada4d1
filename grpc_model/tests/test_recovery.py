"""Recovery: lost or stuck model slots never leave a call hanging, and health and Status say so."""

import re
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from grpc_model.src.auto_generated.model2_template import model_pb2 as pb
from grpc_model.src.runtime import workers
from grpc_model.src.runtime.batching import TIMEOUT_MESSAGE
from grpc_model.src.runtime.loader import WrapperSource
from grpc_model.tests.conftest import TESTS, ServerFactory, ServerThread, wait_until_serving_again, write_test_bundle
from grpc_model.tests.fault_wrappers import LOAD_BLOCKER
from grpc_model.tests.wrappers import Slow

FAULTS = "grpc_model.tests.fault_wrappers"


@pytest.fixture
def blocker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """While this file exists, `CrashesWhileBlocked` cannot load (replacement workers inherit the variable)."""
    path = tmp_path / "block-load"
    monkeypatch.setenv(LOAD_BLOCKER, str(path))
    return path


def run_request(*values: bytes) -> pb.RunRequest:
    return pb.RunRequest(inputs=[pb.InputItem(input={"a": value}) for value in values])


def poll(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds:g} s: {what}")
        time.sleep(0.05)


def test_queued_items_are_answered_when_the_last_worker_is_lost(
    serve: ServerFactory, tmp_path: Path, blocker: Path
) -> None:
    server = serve(
        model_class=f"{FAULTS}:CrashesWhileBlockedOneAtATime",
        asset_bundle_dir=write_test_bundle(tmp_path / "bundle", run=""),  # no run timeout to end a hang
        workers=1,
    )
    blocker.touch()  # the worker forked at start-up has its model; a replacement cannot load one

    call = server.client.stub.Run.future(run_request(b"exit", *[b"fine"] * 30), timeout=30)
    errors = [item.output["error"].decode() for item in call.result().outputs]

    assert len(errors) == 31
    assert re.fullmatch(r"the model's worker process \d+ died \(exit code 1\)", errors[0])
    for error in errors[1:]:  # each says that the workers are gone, and why
        assert error.startswith(workers.NO_WORKER), error
        assert "weights unavailable" in error


def test_a_lost_worker_slot_comes_back_once_its_cause_goes_away(
    serve: ServerFactory, tmp_path: Path, blocker: Path
) -> None:
    server = serve(
        model_class=f"{FAULTS}:CrashesWhileBlocked", asset_bundle_dir=write_test_bundle(tmp_path / "b"), workers=1
    )
    blocker.touch()
    server.client.run([{"a": b"exit"}])

    def status_names_the_cause() -> bool:
        status = server.client.status()
        return status.status_code == 503 and "weights unavailable" in status.message

    poll(status_names_the_cause, 30, "Status 503 naming why no worker can start")
    assert server.client.health() == "NOT_SERVING"
    with pytest.raises(grpc.RpcError) as refused:
        server.client.run([{"a": b"fine"}])
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE

    blocker.unlink()
    wait_until_serving_again(server)  # the pool kept retrying, with back-off

    assert server.client.health() == "SERVING"
    status = server.client.status()
    assert (status.status_code, status.message) == (200, "Model is loaded.")


def test_items_nobody_waits_for_are_not_retried_after_a_hang(
    serve: ServerFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = serve(
        model_class=f"{TESTS}:HangsOnRequest", asset_bundle_dir=write_test_bundle(tmp_path, run="2s"), workers=1
    )

    hung = server.client.run([{"a": b"hang"}] * 8)  # one batch; the worker is killed as hung

    assert [item.output for item in hung.outputs] == [{"error": TIMEOUT_MESSAGE.encode()}] * 8
    refusals: set[grpc.StatusCode] = set()
    late: list[bytes] = []
    deadline = time.monotonic() + 15  # 8 reruns alone would hang for 16 s
    while time.monotonic() < deadline:
        try:
            output = server.client.run([{"a": b"fine"}]).outputs[0].output
        except grpc.RpcError as error:  # while the one replacement starts
            refusals.add(error.code())
            time.sleep(0.05)
            continue
        if output.get("a") == b"fine":
            break
        late.append(output["error"])  # came before the hang was noticed, so waited for the hung worker
    else:
        raise AssertionError("the server did not serve again within 15 s")
    assert refusals <= {grpc.StatusCode.UNAVAILABLE}
    assert set(late) <= {TIMEOUT_MESSAGE.encode()}
    hangs = [record for record in caplog.records if "hung for over" in record.getMessage()]
    assert len(hangs) == 1  # the timed-out items were not run again, one by one


def test_the_pool_clamps_a_hang_limit_that_poll_cannot_take() -> None:
    # model.yaml refuses timeouts past poll()'s limit (test_metadata); the pool clamps whatever it is given too.
    pool = workers.WorkerPool(WrapperSource(f"{TESTS}:Echo"), 1, loaded=None, hang_seconds=600 * 3600)
    assert pool.hang_seconds == workers.MAX_HANG_SECONDS < 2**31 / 1000


def test_the_largest_run_timeout_is_served_by_workers(serve: ServerFactory, tmp_path: Path) -> None:
    server = serve(model_class=f"{TESTS}:Echo", asset_bundle_dir=write_test_bundle(tmp_path, run="2147483s"), workers=1)

    response = server.client.stub.Run.future(run_request(b"fine"), timeout=15).result()

    assert response.outputs[0].output["a"] == b"fine"


def test_a_framework_error_in_a_feeding_thread_answers_its_items(
    serve_wrapper: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = serve_wrapper("Echo", workers=1)
    original = workers._Worker.call
    failures: list[str] = []

    def fails_once(self: workers._Worker, *args: object) -> object:
        if not failures:
            failures.append("raised")
            raise RuntimeError("framework bug")
        return original(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(workers._Worker, "call", fails_once)

    response = server.client.stub.Run.future(run_request(b"one"), timeout=15).result()

    assert response.outputs[0].output == {"error": b"internal error: RuntimeError: framework bug"}
    wait_until_serving_again(server)


def test_health_is_not_serving_while_every_model_thread_is_stuck(serve: ServerFactory, tmp_path: Path) -> None:
    Slow.started.clear()
    Slow.release.clear()
    server: ServerThread = serve(model_class=f"{TESTS}:Slow", asset_bundle_dir=write_test_bundle(tmp_path, run="1s"))
    server.client.status()
    try:
        stuck = server.client.run([{"a": b"1"}])
        assert stuck.outputs[0].output == {"error": TIMEOUT_MESSAGE.encode()}

        assert server.client.wait_for_health("NOT_SERVING", 8) == "NOT_SERVING"
        with pytest.raises(grpc.RpcError) as refused:  # at once, not after another timeout
            server.client.run([{"a": b"1"}])
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "stuck" in str(refused.value.details())
        status = server.client.status()
        assert status.status_code == 503
        assert "stuck" in status.message
    finally:
        Slow.release.set()

    assert server.client.wait_for_health("SERVING", 10) == "SERVING"
    assert server.client.run([{"a": b"1"}]).outputs[0].output == {"slept.txt": b"done"}
    assert server.client.status().status_code == 200
