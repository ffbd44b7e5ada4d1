"""The ModzyModel service over real gRPC calls: Status, Run, health and reflection."""

import json
import logging
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from grpc_model.src.auto_generated.model2_template import model_pb2 as pb
from grpc_model.src.auto_generated.v2 import grpc_predict_v2_pb2 as v2
from grpc_model.src.auto_generated.v2.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub
from grpc_model.src.client import ModelClient
from grpc_model.src.servicer import SERVICE_NAME
from grpc_model.src.settings import PROJECT_ROOT
from grpc_model.tests.conftest import (
    PATIENCE_SECONDS,
    TEST_VERSION,
    ServerFactory,
    ServerThread,
    eventually,
    write_greeter_bundle,
    write_newer_bundle,
)
from grpc_model.tests.wrappers import Counted, Echo, FailsFirstInit, Slow


def test_status_loads_the_model_and_returns_the_full_metadata(greeter_server: ServerThread) -> None:
    status = greeter_server.client.status()

    assert (status.status_code, status.status) == (200, "OK")
    assert status.model_info == pb.ModelInfo(
        model_name="Hello World", model_version=TEST_VERSION, model_author="Example Team", model_type="grpc",
        source="Example Team",
    )  # fmt: skip
    assert status.description.summary.startswith("Greets the person")
    assert "#OVERVIEW" in status.description.technical
    assert status.inputs == [
        pb.ModelInput(
            filename="input.txt",
            accepted_media_types=["text/plain"],
            max_size="1M",
            description="A UTF-8 text whose last word is the name to greet.",
        )
    ]
    assert [(o.filename, o.media_type, o.max_size) for o in status.outputs] == [
        ("results.json", "application/json", "1M")
    ]
    assert status.resources == pb.ModelResources(required_ram="256M", num_cpus=1.0, num_gpus=0)
    assert status.timeout == pb.ModelTimeout(status="20s", run="20s")
    assert status.features == pb.ModelFeatures(batch_size=8)


def test_status_twice_keeps_the_loaded_model(serve_wrapper: ServerFactory) -> None:
    Counted.instances = 0
    server = serve_wrapper("Counted")
    assert [server.client.status().status_code for _ in range(3)] == [200, 200, 200]
    assert Counted.instances == 1


def test_run_before_status_fails_every_item_clearly(greeter_server: ServerThread) -> None:
    response = greeter_server.client.run([{"input.txt": b"a"}, {"input.txt": b"b"}])

    assert response.status_code == 503
    assert len(response.outputs) == 2
    for item in response.outputs:
        assert not item.success
        assert b"not loaded" in item.output["error"]
        assert b"Status" in item.output["error"]


def test_run_answers_each_item_in_order(greeter_server: ServerThread) -> None:
    greeter_server.client.status()
    names = [f"Person{i}" for i in range(20)]  # more than maxBatchSize (8): processed in slices

    response = greeter_server.client.run([{"input.txt": f"I am {name}".encode()} for name in names])

    assert response.status_code == 200
    greetings = [json.loads(item.output["results.json"])["data"]["result"]["greeting"] for item in response.outputs]
    assert greetings == [f"Hello. Nice to meet you, {name}" for name in names]
    assert all(item.success for item in response.outputs)


def test_one_failing_item_leaves_the_others_intact(greeter_server: ServerThread) -> None:
    greeter_server.client.status()

    response = greeter_server.client.run(
        [{"input.txt": b"Hi Ann"}, {"input.txt": b"\xff\xfe"}, {"other.txt": b"x"}, {"input.txt": b"Hi Bo"}]
    )

    assert [item.success for item in response.outputs] == [True, False, False, True]
    assert response.outputs[1].output["error"] == b"input.txt: content is not text/plain"
    assert b"input.txt" in response.outputs[2].output["error"]
    assert set(response.outputs[1].output) == {"error"}
    assert b"Bo" in response.outputs[3].output["results.json"]
    assert "2 of 4" in response.message


def test_empty_run_request_gets_no_outputs(greeter_server: ServerThread) -> None:
    greeter_server.client.status()
    response = greeter_server.client.run([])
    assert (response.status_code, len(response.outputs)) == (200, 0)


def test_flags_reach_the_model(serve_wrapper: ServerFactory) -> None:
    server = serve_wrapper("Echo")
    server.client.status()

    response = server.client.run([{"a": b"1"}], detect_drift=True, explain=False)

    assert json.loads(response.outputs[0].output["flags.json"]) == {"detect_drift": True, "explain": False}


def test_a_batch_is_one_call_to_the_batch_method(serve_wrapper: ServerFactory) -> None:
    server = serve_wrapper("Echo")
    server.client.status()
    Echo.batch_sizes.clear()

    response = server.client.run([{"a": bytes([i])} for i in range(8)])

    assert Echo.batch_sizes == [8]
    assert [item.output["a"] for item in response.outputs] == [bytes([i]) for i in range(8)]


@pytest.mark.parametrize("wrapper", ["RaisingBatch", "WrongCountBatch", "SingleOnly"])
def test_misbehaving_batch_method_falls_back_to_single_items(serve_wrapper: ServerFactory, wrapper: str) -> None:
    server = serve_wrapper(wrapper)
    server.client.status()

    response = server.client.run([{"a": b"1"}, {"a": b"fail"}, {"a": b"3"}])

    assert [item.success for item in response.outputs] == [True, False, True]
    assert [item.output.get("a") for item in response.outputs] == [b"1", None, b"3"]
    assert response.outputs[1].output["error"] == b"ValueError: asked to fail"


def test_failing_load_reports_500_and_the_server_stays_up(serve_wrapper: ServerFactory) -> None:
    server = serve_wrapper("FailingInit")

    status = server.client.status()

    assert (status.status_code, status.status) == (500, "Internal Server Error")
    assert "weights file /models/weights.pt not found" in status.message
    assert status.model_info.model_name == "Hello World"  # metadata is still there
    assert server.client.health() == "NOT_SERVING"
    assert server.client.status().status_code == 500  # still answering


def test_serving_an_older_bundle_warns_at_start_up(
    serve_wrapper: ServerFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = write_greeter_bundle(tmp_path / "bundles")
    write_newer_bundle(root, "0.2.0")
    with caplog.at_level(logging.WARNING, logger="grpc_model.src.server"):
        serve_wrapper("Greeter", asset_bundle_dir=root, model_version=TEST_VERSION)
    assert any(
        record.levelno == logging.WARNING
        and "serving asset bundle 0.1.0, but 0.2.0 is the newest" in record.getMessage()
        for record in caplog.records
    )


def test_run_after_a_failed_load_names_the_loads_error(serve_wrapper: ServerFactory) -> None:
    server = serve_wrapper("FailingInit")
    assert server.client.status().status_code == 500

    response = server.client.run([{"input.txt": b"a"}])

    assert response.status_code == 503
    for message in (response.message, response.outputs[0].output["error"].decode()):
        assert "RuntimeError: weights file /models/weights.pt not found" in message  # not just "call Status first"


def test_a_later_status_retries_a_failed_load(serve_wrapper: ServerFactory) -> None:
    FailsFirstInit.attempts = 0
    server = serve_wrapper("FailsFirstInit")

    first, second = server.client.status(), server.client.status()

    assert (first.status_code, second.status_code) == (500, 200)
    assert "weights not there yet" in first.message
    assert server.client.health() == "SERVING"


def test_health_is_not_serving_until_loaded_then_serving(greeter_server: ServerThread) -> None:
    client = greeter_server.client
    assert client.health() == "NOT_SERVING"
    assert client.health("ModzyModel") == "NOT_SERVING"

    client.status()

    assert client.health() == "SERVING"
    assert client.health("ModzyModel") == "SERVING"


def test_load_at_startup_serves_without_a_status_call(serve_greeter: ServerFactory) -> None:
    server = serve_greeter(load_model_at_startup=True)
    assert server.client.health() == "SERVING"
    assert server.client.run([{"input.txt": b"Hi Al"}]).outputs[0].success


def test_health_goes_not_serving_on_shutdown(greeter_server: ServerThread) -> None:
    client = greeter_server.client
    client.status()
    statuses: list[int] = []
    watch = client.health_stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=10)
    statuses.append(next(watch).status)

    assert client.shutdown().status_code == 200
    statuses.append(next(watch).status)
    watch.cancel()

    assert statuses == [health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING]


def test_health_watches_past_the_cap_are_refused(serve_greeter: ServerFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each Watch held about 22 KB of the server's memory, with no bound and no token needed (10,000 streams on
    one connection: +226 MB); a few load balancers watch, the rest Check."""
    from grpc_model.src import listening

    monkeypatch.setattr(listening, "MAX_HEALTH_WATCHES", 3)
    client = serve_greeter().client
    client.status()
    request = health_pb2.HealthCheckRequest(service="")
    held = [client.health_stub.Watch(request, timeout=PATIENCE_SECONDS) for _ in range(3)]
    for watch in held:
        next(watch)  # its first answer: the server counts it

    refused = client.health_stub.Watch(request, timeout=PATIENCE_SECONDS)
    with pytest.raises(grpc.RpcError) as error:
        next(refused)
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "health watches" in str(error.value.details())
    assert client.health() == "SERVING"  # Check is not capped

    held.pop().cancel()
    eventually(lambda: _watches(client, request), "a watch is taken again once one ends")
    for watch in held:
        watch.cancel()


def _watches(client: ModelClient, request: health_pb2.HealthCheckRequest) -> bool | None:
    watch = client.health_stub.Watch(request, timeout=PATIENCE_SECONDS)
    try:
        next(watch)
    except grpc.RpcError:
        return None
    watch.cancel()
    return True


def test_calls_past_the_cap_are_refused_while_others_never_finish_sending(
    serve_greeter: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A call that sends its headers and never its message held 10-25 KB, with no bound (15,000: +280 MB); the
    port now takes one call per item that may queue, and CALLS_BESIDE_THE_QUEUE more."""
    from grpc_model.src import listening

    monkeypatch.setattr(listening, "CALLS_BESIDE_THE_QUEUE", 2)
    server = serve_greeter(max_queued_items=1)
    never = threading.Event()

    def unfinished() -> Iterator[bytes]:
        never.wait(PATIENCE_SECONDS)
        yield b""

    status: grpc.StreamUnaryMultiCallable[bytes, bytes] = server.client.channel.stream_unary(f"/{SERVICE_NAME}/Status")
    held: list[grpc.Future[bytes]] = []

    def refused_with_one_more_held() -> grpc.RpcError | None:
        # One more held call before each probe: a probe that reaches the server before the last held call takes
        # that call's place, and the held one is refused instead; the next round holds another.
        if len(held) < 20:
            held.append(status.future(unfinished(), timeout=PATIENCE_SECONDS))
        return _refused(server.client)

    try:
        error = eventually(refused_with_one_more_held, "a call past the cap is refused")
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        never.set()
        for call in held:
            call.cancel()
    eventually(lambda: _refused(server.client) is None or None, "calls are served again")


def _refused(client: ModelClient) -> grpc.RpcError | None:
    try:
        client.status()
    except grpc.RpcError as error:
        return error
    return None


def test_status_and_health_answer_while_the_model_is_busy(serve_wrapper: ServerFactory) -> None:
    Slow.started.clear()
    Slow.release.clear()
    server = serve_wrapper("Slow")
    server.client.status()
    busy = server.client.stub.Run.future(pb.RunRequest(inputs=[pb.InputItem(input={"a": b"1"})]))
    assert Slow.started.wait(timeout=10)

    # While the model thread is held: every readiness answer comes from the event loop, which the model never holds.
    assert server.client.status().status_code == 200
    assert server.client.health() == "SERVING"
    v2_stub = GRPCInferenceServiceStub(server.client.channel)
    assert v2_stub.ServerLive(v2.ServerLiveRequest(), timeout=PATIENCE_SECONDS).live
    assert v2_stub.ServerReady(v2.ServerReadyRequest(), timeout=PATIENCE_SECONDS).ready
    assert not busy.done()  # all of the above answered while the model was still computing

    Slow.release.set()
    assert busy.result(timeout=10).outputs[0].output == {"slept.txt": b"done"}


def test_reflection_lists_the_services(greeter_server: ServerThread) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(greeter_server.client.channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")

    response = next(iter(stub.ServerReflectionInfo(iter([request]), timeout=10)))

    names = {service.name for service in response.list_services_response.service}
    assert {"ModzyModel", "grpc.health.v1.Health"} <= names


def test_message_over_the_limit_is_resource_exhausted(serve_greeter: ServerFactory) -> None:
    server = serve_greeter(max_receive_message_bytes=1024)
    server.client.status()

    with pytest.raises(grpc.RpcError) as raised:
        server.client.run([{"input.txt": b"x" * 4096}])

    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert server.client.run([{"input.txt": b"small"}]).outputs[0].success  # still serving


def test_shutdown_can_be_disabled(serve_greeter: ServerFactory) -> None:
    server = serve_greeter(shutdown="disabled")
    response = server.client.shutdown()
    assert (response.status_code, response.status) == (403, "Forbidden")
    assert "disabled" in response.message
    assert server.client.status().status_code == 200  # still serving
    assert server.client.health() == "SERVING"


def test_shutdown_can_require_a_token(serve_greeter: ServerFactory) -> None:
    server = serve_greeter(shutdown="token", shutdown_token="s3cret")
    server.client.status()
    assert server.client.shutdown().status_code == 403
    assert server.client.shutdown("wrong").status_code == 403
    assert server.client.health() == "SERVING"
    assert server.client.shutdown("s3cret").status_code == 200
    assert server.client.health() == "NOT_SERVING"


def test_each_call_logs_one_debug_line_with_count_duration_and_rate(
    greeter_server: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    greeter_server.client.status()
    with caplog.at_level("INFO", logger="grpc_model.src.servicer"):
        greeter_server.client.run([{"input.txt": b"Hi Al"}])
    assert not [r for r in caplog.records if r.getMessage().startswith("Run:")]  # not at INFO: it costs
    with caplog.at_level("DEBUG", logger="grpc_model.src.servicer"):
        greeter_server.client.run([{"input.txt": b"Hi Al"}, {"input.txt": b""}])
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Run:")]
    assert len(lines) == 1
    assert re.fullmatch(r"Run: 2 items \(1 failed\) in [\d.]+ ms, [\d.]+ items/s", lines[0])


OPTIONAL_LIBRARIES = ("fastapi", "starlette", "uvicorn", "opentelemetry", "ray")
STARTS_AND_STOPS = """
import asyncio, sys
from grpc_model.src.server import start_server
from grpc_model.src.settings import Settings

async def main():
    settings = Settings(host="127.0.0.1", port=0, metrics_port=0, http="off", tracing="off",
                        asset_bundle_dir=sys.argv[1], model_class="grpc_model.tests.wrappers:Greeter",
                        load_model_at_startup=True)
    running = await start_server(settings)
    await running.stop()

asyncio.run(main())
print(" ".join(sorted({name.split(".")[0] for name in sys.modules})))
"""


def test_a_server_without_http_or_tracing_imports_none_of_their_libraries(greeter_bundle: Path) -> None:
    """Optional parts load only when they are on: their imports would lengthen every cold start (issue 23)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("GRPC_MODEL_")}
    done = subprocess.run(
        [sys.executable, "-c", STARTS_AND_STOPS, str(greeter_bundle)],
        env={**env, "PYTHONPATH": str(PROJECT_ROOT)},
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=PATIENCE_SECONDS,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    loaded = set(done.stdout.split())
    assert "grpc" in loaded  # the list is the server's
    assert loaded.isdisjoint(OPTIONAL_LIBRARIES), sorted(loaded & set(OPTIONAL_LIBRARIES))
