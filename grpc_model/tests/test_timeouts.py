"""timeout.run and timeout.status from model.yaml are enforced."""

import time
from pathlib import Path

from grpc_model.src.auto_generated.model2_template import model_pb2 as pb
from grpc_model.src.runtime.batching import TIMEOUT_MESSAGE
from grpc_model.tests.conftest import TESTS, ServerFactory, wait_until_serving_again, write_test_bundle


def test_an_item_over_the_run_timeout_fails_and_the_server_goes_on(serve: ServerFactory, tmp_path: Path) -> None:
    server = serve(model_class=f"{TESTS}:SleepsAsAsked", asset_bundle_dir=write_test_bundle(tmp_path, run="300ms"))
    server.client.status()

    started = time.monotonic()
    response = server.client.run([{"a": b"1"}])
    waited = time.monotonic() - started

    assert response.outputs[0].output == {"error": TIMEOUT_MESSAGE.encode()}
    assert waited < 0.9  # answered at the timeout, not when the model finished
    time.sleep(1.0)  # the model thread finishes its call; then it serves again
    assert server.client.run([{"a": b"0"}]).outputs[0].output == {"slept.txt": b"0"}


def test_the_run_timeout_also_bounds_the_wait_in_the_queue(serve: ServerFactory, tmp_path: Path) -> None:
    server = serve(model_class=f"{TESTS}:SleepsAsAsked", asset_bundle_dir=write_test_bundle(tmp_path, run="1500ms"))
    server.client.status()
    request = pb.RunRequest(inputs=[pb.InputItem(input={"a": b"1"})])

    started = time.monotonic()
    calls = [server.client.stub.Run.future(request, timeout=30) for _ in range(3)]  # one model thread: they queue
    answers = [call.result().outputs[0] for call in calls]
    waited = time.monotonic() - started

    assert sum(answer.success for answer in answers) == 1
    assert [answer.output for answer in answers if not answer.success] == [{"error": TIMEOUT_MESSAGE.encode()}] * 2
    assert waited < 2.5  # the queued calls were answered at their timeout, not after 3 s of model time


def test_a_hung_worker_is_killed_and_replaced(serve: ServerFactory, tmp_path: Path) -> None:
    server = serve(
        model_class=f"{TESTS}:HangsOnRequest", asset_bundle_dir=write_test_bundle(tmp_path, run="500ms"), workers=1
    )

    hung = server.client.run([{"a": b"hang"}])

    assert hung.outputs[0].output == {"error": TIMEOUT_MESSAGE.encode()}
    wait_until_serving_again(server)  # a fresh worker loads the model


def test_a_load_over_the_status_timeout_reports_500_then_finishes(serve: ServerFactory, tmp_path: Path) -> None:
    server = serve(model_class=f"{TESTS}:LoadsSlowly", asset_bundle_dir=write_test_bundle(tmp_path, status="200ms"))

    first = server.client.status()

    assert first.status_code == 500
    assert "did not finish loading within the status timeout of 0.2 s" in first.message
    assert server.client.wait_for_health("SERVING", 10) == "SERVING"  # the load went on
    assert server.client.status().status_code == 200
