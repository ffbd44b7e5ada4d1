"""Loading the model on the first Status: one load at a time, its error reported, and never in the way of a stop."""

import signal
import subprocess
import time
from pathlib import Path

import pytest

from grpc_model.src.auto_generated.model2_template import model_pb2 as pb
from grpc_model.tests.conftest import ServerFactory, ServerProcess, start, write_test_bundle
from grpc_model.tests.fault_wrappers import FailsAfterRelease

FAULTS = "grpc_model.tests.fault_wrappers"


@pytest.mark.parametrize("stop", ["SIGTERM", "SIGINT", "Shutdown"])
def test_a_stop_during_a_load_that_never_ends_exits_within_the_grace_period(
    processes: list[ServerProcess], test_bundle: Path, stop: str
) -> None:
    server = start(
        processes,
        "--model-class",
        f"{FAULTS}:LoadsForever",
        "--asset-bundle-dir",
        str(test_bundle),
        "--shutdown-grace-seconds",
        "1",
    )
    with server.client() as client:
        loading = client.stub.Status.future(pb.StatusRequest(), timeout=60)
        deadline = time.monotonic() + 30
        while "loading forever" not in server.output():
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.05)
        if stop == "Shutdown":
            assert client.shutdown().status_code == 200
        else:
            server.process.send_signal(signal.Signals[stop])

        try:
            code = server.process.wait(timeout=10)  # the grace period (1 s) plus a few seconds
        except subprocess.TimeoutExpired:
            pytest.fail("the server did not exit while the model was loading")
        loading.cancel()

    assert code == 0
    assert "server stopped" in server.output()


def test_status_calls_during_a_failing_load_share_it_and_report_its_error(serve: ServerFactory, tmp_path: Path) -> None:
    FailsAfterRelease.loads = 0
    FailsAfterRelease.release.clear()
    server = serve(
        model_class=f"{FAULTS}:FailsAfterRelease", asset_bundle_dir=write_test_bundle(tmp_path, status="500ms")
    )
    try:
        waiting = [server.client.status() for _ in range(3)]  # each gives up after 0.5 s; the load goes on
        assert [status.status_code for status in waiting] == [500] * 3
        assert all("did not finish loading within the status timeout" in status.message for status in waiting)
        assert FailsAfterRelease.loads == 1

        FailsAfterRelease.release.set()  # the load fails now
        failed = server.client.status()  # waits for that load, or retries once it has failed

        assert failed.status_code == 500
        assert "FailsAfterRelease failed to load: RuntimeError: load" in failed.message
        assert FailsAfterRelease.loads <= 2  # no load ran for the callers that had given up

        FailsAfterRelease.release.clear()  # the next load blocks: Status gives up on it...
        slow = server.client.status()
        assert "did not finish loading within the status timeout" in slow.message
        assert "the last load failed: RuntimeError: load" in slow.message  # ...and says what went wrong before
    finally:
        FailsAfterRelease.release.set()
