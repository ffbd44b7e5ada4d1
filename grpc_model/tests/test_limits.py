"""Memory-safe limits: the largest request follows model.yaml, compressed requests are refused by their
decompressed size, and a budget bounds the bytes of requests in flight."""

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from grpc_model.src.auto_generated.model2_template import model_pb2 as pb
from grpc_model.src.auto_generated.v2 import grpc_predict_v2_pb2 as v2
from grpc_model.src.auto_generated.v2.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub
from grpc_model.src.metadata import load_bundle
from grpc_model.src.security.limits import (
    InflightBudget,
    LimitsSetupError,
    OverBudgetError,
    inflight_budget,
    memory_limit_bytes,
    request_size_limit,
)
from grpc_model.src.server import start_server
from grpc_model.src.settings import MIB, Settings
from grpc_model.tests.conftest import PATIENCE_SECONDS, ServerFactory, ServerThread
from grpc_model.tests.wrappers import Gated


def test_the_largest_request_is_a_full_batch_of_full_size_inputs(greeter_bundle: Path) -> None:
    spec = load_bundle(greeter_bundle, "").spec  # one input of maxSize 1M, maxBatchSize 8
    assert 8 * MIB < request_size_limit(spec) < 8 * MIB + 128 * 1024


def test_a_full_batch_passes_and_one_item_more_is_refused_by_size(greeter_server: ServerThread) -> None:
    greeter_server.client.status()  # loads the model
    full = {"input.txt": b"a" * (MIB - 4) + b" Ada"}  # exactly maxSize

    answer = greeter_server.client.run([full] * 8)
    with pytest.raises(grpc.RpcError) as raised:
        greeter_server.client.run([full] * 9)

    assert all(output.success for output in answer.outputs)
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in str(raised.value.details())


def test_a_compressed_request_is_refused_by_its_decompressed_size(greeter_server: ServerThread) -> None:
    """64 MiB of zeros is a few dozen KB in gzip: gRPC inflates it only as far as the limit, then refuses."""
    client = greeter_server.client
    client.status()  # loads the model
    bomb = pb.RunRequest(inputs=[pb.InputItem(input={"input.txt": bytes(64 * MIB)})])

    with pytest.raises(grpc.RpcError) as raised:
        client.stub.Run(bomb, timeout=PATIENCE_SECONDS, compression=grpc.Compression.Gzip)

    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "Decompressed message larger than max" in str(raised.value.details())
    assert client.run([{"input.txt": b"My name is Ada"}]).outputs[0].success  # and the server goes on serving
    small = pb.RunRequest(inputs=[pb.InputItem(input={"input.txt": b"Hi Bo"})])
    assert client.stub.Run(small, timeout=PATIENCE_SECONDS, compression=grpc.Compression.Gzip).outputs[0].success


def test_requests_past_the_budget_of_bytes_in_flight_are_refused_until_it_frees(serve_wrapper: ServerFactory) -> None:
    Gated.reset()
    server = serve_wrapper(
        "Gated", max_receive_message_bytes=1000, max_inflight_request_bytes=1000, undeclared_inputs="ignore"
    )
    server.client.status()  # loads the model
    padding = b"p" * 600  # an undeclared input: counted in the request's bytes, dropped before the model
    try:
        with ThreadPoolExecutor(1) as pool:
            held = pool.submit(server.client.run, [{"a": b"hold", "pad": padding}])
            assert Gated.holding.wait(PATIENCE_SECONDS)
            with pytest.raises(grpc.RpcError) as raised:
                server.client.run([{"a": b"refused", "pad": padding}])
            Gated.release.set()
            assert held.result(timeout=PATIENCE_SECONDS).outputs[0].success
    finally:
        Gated.release.set()

    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "would pass max_inflight_request_bytes (1000 bytes)" in str(raised.value.details())
    assert server.client.run([{"a": b"later", "pad": padding}]).outputs[0].success
    assert b"refused" not in Gated.ran


def test_a_budget_below_the_largest_request_stops_the_start(greeter_bundle: Path) -> None:
    settings = Settings(
        host="127.0.0.1",
        port=0,
        model_class="grpc_model.tests.wrappers:Greeter",
        asset_bundle_dir=greeter_bundle,
        max_inflight_request_bytes=MIB,
    )
    with pytest.raises(LimitsSetupError, match=r"max_inflight_request_bytes \(1048576\) is smaller than the largest"):
        asyncio.run(start_server(settings))


def test_the_default_budget_is_a_share_of_memory_and_never_below_one_request() -> None:
    assert inflight_budget(0, 10).limit == memory_limit_bytes() // 4
    assert inflight_budget(0, 2**62).limit == 2**62
    assert inflight_budget(5000, 4000).limit == 5000

    budget = InflightBudget(100)
    with budget.hold(60):
        with pytest.raises(OverBudgetError), budget.hold(41):
            pass
        assert budget.held == 60
    assert budget.held == 0


def test_every_front_end_answers_past_the_budget_as_busy(serve_wrapper: ServerFactory) -> None:
    """V2 (gRPC and REST) and the multipart endpoint share the budget, and answer like a full queue, not INTERNAL."""
    pytest.importorskip("fastapi", reason="the optional `http` extra is not installed")
    from grpc_model.tests.http_client import HTTP, HttpClient, post_form

    Gated.reset()
    server = serve_wrapper(
        "Gated", max_receive_message_bytes=1000, max_inflight_request_bytes=1000, undeclared_inputs="ignore", **HTTP
    )
    server.client.status()
    http = HttpClient(server)
    item = b"x" * 500  # with the held call's bytes, past the budget
    try:
        with ThreadPoolExecutor(1) as pool:
            held = pool.submit(server.client.run, [{"a": b"hold", "pad": b"p" * 600}])
            assert Gated.holding.wait(PATIENCE_SECONDS)
            tensor = v2.ModelInferRequest.InferInputTensor(
                name="a", datatype="BYTES", shape=[1], contents=v2.InferTensorContents(bytes_contents=[item])
            )
            with pytest.raises(grpc.RpcError) as v2_grpc:
                GRPCInferenceServiceStub(server.client.channel).ModelInfer(
                    v2.ModelInferRequest(model_name="hello-world", inputs=[tensor]), timeout=PATIENCE_SECONDS
                )
            v2_rest = http.json(
                "POST",
                "/v2/models/hello-world/infer",
                {"inputs": [{"name": "a", "datatype": "BYTES", "shape": [1], "data": [item.decode()]}]},
            )
            form = post_form(f"http://{http.url}/api/model/run", {"a": item})
            Gated.release.set()
            assert held.result(timeout=PATIENCE_SECONDS).outputs[0].success
    finally:
        Gated.release.set()

    assert v2_grpc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_inflight_request_bytes" in str(v2_grpc.value.details())
    assert v2_rest[0] == 429
    assert "max_inflight_request_bytes" in v2_rest[1]["error"]
    assert form[0] == 429
    assert "max_inflight_request_bytes" in form[1]["detail"]
    assert Gated.ran == [b"hold"]
