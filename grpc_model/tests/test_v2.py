"""The Open Inference Protocol (V2) over gRPC, beside ModzyModel on the same port and through the same batcher."""

import json
import struct
from collections.abc import Sequence
from pathlib import Path

import grpc
import pytest
import yaml
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from grpc_model.src.auto_generated.model2_template import model_pb2
from grpc_model.src.auto_generated.v2 import grpc_predict_v2_pb2 as pb
from grpc_model.src.auto_generated.v2.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub
from grpc_model.src.metadata import slug
from grpc_model.tests.conftest import (
    PATIENCE_SECONDS,
    TEST_VERSION,
    TESTS,
    ServerFactory,
    ServerThread,
    eventually,
    write_test_bundle,
)
from grpc_model.tests.wrappers import GatedBatch, HeldLoad

MODEL = "hello-world"  # the greeter's model.yaml name, "Hello World", as a V2 name
GREETING = b'{"data": {"result": {"greeting": "Hello. Nice to meet you, %s"}, "explanation": null, "drift": null}}'


def stub(server: ServerThread) -> GRPCInferenceServiceStub:
    return GRPCInferenceServiceStub(server.client.channel)


def texts(name: str, *elements: bytes) -> pb.ModelInferRequest.InferInputTensor:
    return pb.ModelInferRequest.InferInputTensor(
        name=name, datatype="BYTES", shape=[len(elements)], contents=pb.InferTensorContents(bytes_contents=elements)
    )


def infer(
    server: ServerThread, *inputs: pb.ModelInferRequest.InferInputTensor, model: str = MODEL, **fields: object
) -> pb.ModelInferResponse:
    request = pb.ModelInferRequest(model_name=model, inputs=inputs, **fields)  # type: ignore[arg-type]
    response: pb.ModelInferResponse = stub(server).ModelInfer(request, timeout=PATIENCE_SECONDS)
    return response


def refused(server: ServerThread, request: pb.ModelInferRequest) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        stub(server).ModelInfer(request, timeout=PATIENCE_SECONDS)
    return raised.value


def raw(*elements: bytes) -> bytes:
    """BYTES elements as tritonclient sends them: each after its 4-byte little-endian length."""
    return b"".join(struct.pack("<I", len(element)) + element for element in elements)


def elements(response: pb.ModelInferResponse, name: str) -> list[bytes]:
    index = [output.name for output in response.outputs].index(name)
    return list(response.outputs[index].contents.bytes_contents)


def test_slug_of_a_model_name() -> None:
    assert slug("Hello World") == "hello-world"
    assert slug("  Digits (sklearn) v2 ") == "digits-sklearn-v2"


def test_reflection_lists_the_v2_service(greeter_server: ServerThread) -> None:
    reflection = reflection_pb2_grpc.ServerReflectionStub(greeter_server.client.channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    response = next(iter(reflection.ServerReflectionInfo(iter([request]), timeout=PATIENCE_SECONDS)))
    names = {service.name for service in response.list_services_response.service}
    assert {"ModzyModel", "inference.GRPCInferenceService"} <= names


def test_model_ready_loads_the_model_as_status_would(greeter_server: ServerThread) -> None:
    v2 = stub(greeter_server)
    assert v2.ServerLive(pb.ServerLiveRequest(), timeout=PATIENCE_SECONDS).live
    assert not greeter_server.running.service.runtime.is_loaded  # nobody called Status

    assert v2.ModelReady(pb.ModelReadyRequest(name=MODEL), timeout=PATIENCE_SECONDS).ready
    assert v2.ServerReady(pb.ServerReadyRequest(), timeout=PATIENCE_SECONDS).ready
    assert greeter_server.client.wait_for_health("SERVING", PATIENCE_SECONDS) == "SERVING"  # reported once loaded


def test_server_ready_starts_the_load_without_waiting(greeter_server: ServerThread) -> None:
    v2 = stub(greeter_server)
    eventually(lambda: v2.ServerReady(pb.ServerReadyRequest(), timeout=PATIENCE_SECONDS).ready, "ServerReady")


def test_metadata_from_model_yaml(greeter_server: ServerThread) -> None:
    v2 = stub(greeter_server)
    metadata = v2.ModelMetadata(pb.ModelMetadataRequest(name=MODEL), timeout=PATIENCE_SECONDS)
    assert (metadata.name, list(metadata.versions)) == (MODEL, ["0.1.0"])
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [("input.txt", "BYTES", [-1])]
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.outputs] == [("results.json", "BYTES", [-1])]
    server = v2.ServerMetadata(pb.ServerMetadataRequest(), timeout=PATIENCE_SECONDS)
    assert server.name == "grpc-model"
    assert "binary_tensor_data" in server.extensions


def test_infer_without_status_loads_and_answers_each_item(greeter_server: ServerThread) -> None:
    response = infer(greeter_server, texts("input.txt", b"I am Ada", b"Bob"), id="call-7")
    assert (response.model_name, response.model_version, response.id) == (MODEL, "0.1.0", "call-7")
    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [("results.json", "BYTES", [2])]
    assert [json.loads(e) for e in elements(response, "results.json")] == [
        json.loads(GREETING % b"Ada"),
        json.loads(GREETING % b"Bob"),
    ]
    assert not response.raw_output_contents  # asked in contents, answered in contents


def test_raw_inputs_get_raw_outputs(greeter_server: ServerThread) -> None:
    tensor = pb.ModelInferRequest.InferInputTensor(name="input.txt", datatype="BYTES", shape=[2, 1])
    response = infer(greeter_server, tensor, raw_input_contents=[raw(b"I am Ada", b"Bob")])
    assert not response.outputs[0].HasField("contents")
    answers = response.raw_output_contents[0]
    first = json.dumps(json.loads(GREETING % b"Ada")).encode()
    assert answers.startswith(struct.pack("<I", len(first)))  # lengths as the model wrote them, not re-dumped
    assert b"Ada" in answers
    assert b"Bob" in answers


def test_version_in_the_request(greeter_server: ServerThread) -> None:
    assert infer(greeter_server, texts("input.txt", b"Ada"), model_version="0.1.0").outputs
    error = refused(
        greeter_server,
        pb.ModelInferRequest(model_name=MODEL, model_version="9.9.9", inputs=[texts("input.txt", b"Ada")]),
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "model 'hello-world' has no version '9.9.9': this server serves 0.1.0" in str(error.details())


@pytest.mark.parametrize(
    ("request_", "code", "message"),
    [
        (
            pb.ModelInferRequest(model_name="hello", inputs=[texts("input.txt", b"x")]),
            grpc.StatusCode.NOT_FOUND,
            "no model named 'hello': this server serves 'hello-world'",
        ),
        (
            pb.ModelInferRequest(model_name=MODEL),
            grpc.StatusCode.INVALID_ARGUMENT,
            "missing input tensor 'input.txt'",
        ),
        (
            pb.ModelInferRequest(model_name=MODEL, inputs=[texts("input.txt", b"x"), texts("extra", b"y")]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "the model has no input 'extra'; its inputs are ['input.txt']",
        ),
        (
            pb.ModelInferRequest(
                model_name=MODEL,
                inputs=[pb.ModelInferRequest.InferInputTensor(name="input.txt", datatype="INT32", shape=[1])],
                raw_input_contents=[b"\x01\x00\x00\x00"],
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "input 'input.txt' has datatype 'INT32': every input is BYTES",
        ),
        (
            pb.ModelInferRequest(
                model_name=MODEL,
                inputs=[pb.ModelInferRequest.InferInputTensor(name="input.txt", datatype="BYTES", shape=[3])],
                raw_input_contents=[raw(b"a", b"b")],
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "input 'input.txt' has shape [3] (3 elements) but 2 elements",
        ),
        (
            pb.ModelInferRequest(
                model_name=MODEL,
                inputs=[pb.ModelInferRequest.InferInputTensor(name="input.txt", datatype="BYTES", shape=[1])],
                raw_input_contents=[struct.pack("<I", 100) + b"short"],
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "input 'input.txt': element 0 says 100 bytes but 5 remain",
        ),
        (
            pb.ModelInferRequest(model_name=MODEL, inputs=[texts("input.txt", *[b"x"] * 9)]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "9 items in one request, over the model's maxBatchSize of 8",
        ),
        (
            pb.ModelInferRequest(model_name=MODEL, inputs=[texts("input.txt")]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "the request has no items",
        ),
        (
            pb.ModelInferRequest(
                model_name=MODEL,
                inputs=[texts("input.txt", b"Ada")],
                parameters={"explain": pb.InferParameter(string_param="yes")},
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "parameter 'explain' must be a boolean, got 'yes'",
        ),
        (
            pb.ModelInferRequest(
                model_name=MODEL,
                inputs=[texts("input.txt", b"Ada")],
                outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name="nope.json")],
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "the model has no output 'nope.json'; its outputs are ['results.json']",
        ),
    ],
    ids=[
        "wrong-model",
        "missing",
        "extra",
        "datatype",
        "count",
        "truncated",
        "batch",
        "empty",
        "parameter",
        "output",
    ],
)
def test_bad_requests_are_refused_by_name(
    greeter_server: ServerThread, request_: pb.ModelInferRequest, code: grpc.StatusCode, message: str
) -> None:
    error = refused(greeter_server, request_)
    assert (error.code(), message in str(error.details())) == (code, True), error.details()
    assert infer(greeter_server, texts("input.txt", b"Ada")).outputs  # still serving


def test_mismatched_element_counts(serve_wrapper: ServerFactory, tmp_path_factory: pytest.TempPathFactory) -> None:
    server = serve_wrapper("Echo", asset_bundle_dir=two_input_bundle(tmp_path_factory))
    error = refused(server, pb.ModelInferRequest(model_name=MODEL, inputs=[texts("a", b"1", b"2"), texts("b", b"1")]))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "every input needs one element per item; the element counts are {'a': 2, 'b': 1}" in str(error.details())
    both = infer(server, texts("a", b"1", b"2"), texts("b", b"x", b"y"))
    assert (elements(both, "a"), elements(both, "b")) == ([b"1", b"2"], [b"x", b"y"])


def two_input_bundle(factory: pytest.TempPathFactory) -> Path:
    """The test bundle with a second input `b`."""
    root = write_test_bundle(factory.mktemp("two-inputs"))
    path = root / TEST_VERSION / "model.yaml"
    spec = yaml.safe_load(path.read_text())
    spec["inputs"]["b"] = spec["inputs"]["a"]
    path.write_text(yaml.safe_dump(spec))
    return root


def test_a_failed_item_fails_the_call_naming_it(greeter_server: ServerThread) -> None:
    error = refused(
        greeter_server, pb.ModelInferRequest(model_name=MODEL, inputs=[texts("input.txt", b"Ada", b"  ", b"Bob")])
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "1 of 3 items failed (indices [1]): item 1: ValueError: input.txt is empty" in str(error.details())
    assert "partial_results=true" in str(error.details())


def test_partial_results_add_an_error_tensor(greeter_server: ServerThread) -> None:
    partial = {"partial_results": pb.InferParameter(bool_param=True)}
    response = infer(greeter_server, texts("input.txt", b"Ada", b"  "), parameters=partial)
    assert [output.name for output in response.outputs] == ["results.json", "error"]
    results, errors = elements(response, "results.json"), elements(response, "error")
    assert json.loads(results[0]) == json.loads(GREETING % b"Ada")
    assert results[1] == b""
    assert errors[0] == b""
    assert errors[1].startswith(b"ValueError: input.txt is empty")


def test_flags_and_undeclared_outputs(serve_wrapper: ServerFactory) -> None:
    server = serve_wrapper("Echo")
    flags = {"detect_drift": pb.InferParameter(bool_param=True), "explain": pb.InferParameter(bool_param=False)}
    requested = [pb.ModelInferRequest.InferRequestedOutputTensor(name="flags.json")]
    response = infer(server, texts("a", b"1"), model=MODEL, parameters=flags, outputs=requested)
    assert [output.name for output in response.outputs] == ["flags.json"]
    assert json.loads(elements(response, "flags.json")[0]) == {"detect_drift": True, "explain": False}
    everything = infer(server, texts("a", b"1"), model=MODEL)
    assert [output.name for output in everything.outputs] == ["out", "a", "flags.json"]  # declared first
    assert elements(everything, "out") == [b""]  # declared, but this model never writes it


def test_malformed_protobuf_gets_invalid_argument(greeter_server: ServerThread) -> None:
    call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = greeter_server.client.channel.unary_unary(
        "/inference.GRPCInferenceService/ModelInfer"
    )
    with pytest.raises(grpc.RpcError) as raised:
        call(b"\xff\xff\xff", timeout=PATIENCE_SECONDS)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid ModelInferRequest" in str(raised.value.details())


def test_a_v2_call_and_a_modzy_call_share_one_batch_call(serve_wrapper: ServerFactory) -> None:
    """The model is held on one item while a V2 call and a Modzy call queue; released, both go in one batch."""
    GatedBatch.reset()
    server = serve_wrapper("GatedBatch")
    server.client.status()
    batcher = server.running.service.runtime._batcher
    assert batcher is not None
    try:
        held = server.client.stub.Run.future(model_pb2.RunRequest(inputs=[model_pb2.InputItem(input={"a": b"hold"})]))
        assert GatedBatch.holding.wait(timeout=PATIENCE_SECONDS)
        v2_call = stub(server).ModelInfer.future(
            pb.ModelInferRequest(model_name=MODEL, inputs=[texts("a", b"from-v2")]), timeout=PATIENCE_SECONDS
        )
        eventually(lambda: batcher.queued == 1, "the V2 item to queue")
        modzy_call = server.client.stub.Run.future(
            model_pb2.RunRequest(inputs=[model_pb2.InputItem(input={"a": b"from-modzy"})]), timeout=PATIENCE_SECONDS
        )
        eventually(lambda: batcher.queued == 2, "the Modzy item to queue behind it")
    finally:
        GatedBatch.release.set()

    assert elements(v2_call.result(timeout=PATIENCE_SECONDS), "a") == [b"from-v2"]
    assert modzy_call.result(timeout=PATIENCE_SECONDS).outputs[0].output["a"] == b"from-modzy"
    assert held.result(timeout=PATIENCE_SECONDS).outputs[0].success
    assert batches_with(GatedBatch.batches, b"from-v2") == [[b"from-v2", b"from-modzy"]]


def batches_with(batches: Sequence[list[bytes]], item: bytes) -> list[list[bytes]]:
    return [batch for batch in batches if item in batch]


def test_a_slow_load_answers_not_ready_then_ready(serve: ServerFactory, tmp_path: Path) -> None:
    HeldLoad.release.clear()
    server = serve(model_class=f"{TESTS}:HeldLoad", asset_bundle_dir=write_test_bundle(tmp_path, status="200ms"))
    v2 = stub(server)
    try:
        assert not v2.ModelReady(pb.ModelReadyRequest(name=MODEL), timeout=PATIENCE_SECONDS).ready
        error = refused(server, pb.ModelInferRequest(model_name=MODEL, inputs=[texts("a", b"1")]))
    finally:
        HeldLoad.release.set()

    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "did not finish loading within the status timeout of 0.2 s" in str(error.details())
    eventually(lambda: v2.ModelReady(pb.ModelReadyRequest(name=MODEL), timeout=PATIENCE_SECONDS).ready, "the load")
    assert elements(infer(server, texts("a", b"1")), "a") == [b"1"]
