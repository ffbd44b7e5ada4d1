"""Hostile V2 requests (gRPC and REST): every count and size a request controls is bounded before anything is
built for it, counted against the budget of bytes in flight, and refused with a short message and the right code."""

import json
import struct
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest

from grpc_model.src.auto_generated.v2 import grpc_predict_v2_pb2 as pb
from grpc_model.src.metadata import load_bundle
from grpc_model.src.v2.tensors import InferRequest, V2Error, V2Model
from grpc_model.tests.conftest import PATIENCE_SECONDS, ServerFactory, ServerThread
from grpc_model.tests.http_client import HTTP, HttpClient
from grpc_model.tests.test_v2 import MODEL, elements, infer, raw, refused, stub, texts
from grpc_model.tests.v2_cases import tritonclient_calls
from grpc_model.tests.wrappers import Gated

INFER = f"/v2/models/{MODEL}/infer"
SHORT_MESSAGE = 2000
"""Well under the 8 KiB that gRPC clients take in a trailer, where the message travels."""
requested = pb.ModelInferRequest.InferRequestedOutputTensor


def one_call(
    server: ServerThread, request: pb.ModelInferRequest
) -> tuple[grpc.StatusCode, str | None] | pb.ModelInferResponse:
    try:
        response: pb.ModelInferResponse = stub(server).ModelInfer(request, timeout=PATIENCE_SECONDS)
    except grpc.RpcError as error:
        return error.code(), error.details()
    return response


def rest(server: ServerThread, document: Any) -> tuple[int, Any]:
    return HttpClient(server).json("POST", INFER, document)


def raw_tensor(name: str, shape: list[int]) -> pb.ModelInferRequest.InferInputTensor:
    return pb.ModelInferRequest.InferInputTensor(name=name, datatype="BYTES", shape=shape)


# 1. Repeated outputs, and answers past max_send_message_bytes


def test_a_repeated_output_name_is_refused_by_name(serve_greeter: ServerFactory) -> None:
    server = serve_greeter(**HTTP)
    twice = [requested(name="results.json")] * 2
    error = refused(server, pb.ModelInferRequest(model_name=MODEL, inputs=[texts("input.txt", b"Ada")], outputs=twice))
    status, answer = rest(
        server,
        {
            "inputs": [{"name": "input.txt", "datatype": "BYTES", "shape": [1], "data": ["Ada"]}],
            "outputs": [{"name": "results.json"}, {"name": "results.json"}],
        },
    )

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "output 'results.json' is asked for more than once" in str(error.details())
    assert (status, answer["error"]) == (400, error.details())


def test_a_repeated_input_name_is_refused_by_name(greeter_server: ServerThread) -> None:
    error = refused(
        greeter_server,
        pb.ModelInferRequest(model_name=MODEL, inputs=[texts("input.txt", b"A"), texts("input.txt", b"B")]),
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "input tensor 'input.txt' appears more than once" in str(error.details())


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_tritonclient_hears_a_repeated_output_refused(serve_greeter: ServerFactory, protocol: str) -> None:
    server = serve_greeter(**HTTP)
    address = f"127.0.0.1:{server.running.port}" if protocol == "grpc" else HttpClient(server).url
    call = {"inputs": {"input.txt": ["QWRh"]}, "outputs": ["results.json", "results.json"]}
    [answer] = tritonclient_calls(protocol, address, MODEL, [call])
    assert "output 'results.json' is asked for more than once" in str(answer.get("error")), answer


def test_an_answer_past_max_send_message_bytes_is_refused_not_built(serve_wrapper: ServerFactory) -> None:
    """Echo answers its input: 5,000 bytes in cannot come back under a send limit of 4,096 bytes."""
    server = serve_wrapper("Echo", max_send_message_bytes=4096, **HTTP)
    big = "x" * 5000
    answer = one_call(server, pb.ModelInferRequest(model_name=MODEL, inputs=[texts("a", big.encode())]))
    status, document = rest(server, {"inputs": [{"name": "a", "datatype": "BYTES", "shape": [1], "data": [big]}]})

    assert not isinstance(answer, pb.ModelInferResponse)
    code, details = answer
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert "over max_send_message_bytes (4096 bytes)" in str(details)
    assert (status, document["error"]) == (400, details)
    assert elements(infer(server, texts("a", b"small")), "a") == [b"small"]  # a small answer still goes


# 3. The budget of bytes in flight counts the whole request


@pytest.mark.parametrize("where", ["id", "parameters"])
def test_bytes_outside_the_tensors_count_against_the_budget(serve_wrapper: ServerFactory, where: str) -> None:
    """A held call takes 600 bytes of a 1,000-byte budget; requests whose 500 bytes are not tensor data must wait."""
    Gated.reset()
    server = serve_wrapper(
        "Gated", max_receive_message_bytes=1000, max_inflight_request_bytes=1000, undeclared_inputs="ignore", **HTTP
    )
    server.client.status()  # loads the model
    filler = "f" * 500
    fields: dict[str, Any] = (
        {"id": filler} if where == "id" else {"parameters": {"note": pb.InferParameter(string_param=filler)}}
    )
    document = {
        "inputs": [{"name": "a", "datatype": "BYTES", "shape": [1], "data": ["x"]}],
        **({"id": filler} if where == "id" else {"parameters": {"note": filler}}),
    }
    try:
        with ThreadPoolExecutor(1) as pool:
            held = pool.submit(server.client.run, [{"a": b"hold", "pad": b"p" * 600}])
            assert Gated.holding.wait(PATIENCE_SECONDS)
            over_grpc = one_call(server, pb.ModelInferRequest(model_name=MODEL, inputs=[texts("a", b"x")], **fields))
            over_rest = rest(server, document)
            Gated.release.set()
            assert held.result(timeout=PATIENCE_SECONDS).outputs[0].success
    finally:
        Gated.release.set()

    assert not isinstance(over_grpc, pb.ModelInferResponse)
    assert over_grpc[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "would pass max_inflight_request_bytes (1000 bytes)" in str(over_grpc[1])
    assert over_rest[0] == 429
    assert "would pass max_inflight_request_bytes (1000 bytes)" in over_rest[1]["error"]
    assert Gated.ran == [b"hold"]
    assert elements(infer(server, texts("a", b"later"), **fields), "a") == [b"later"]  # alone, it fits


def test_the_budget_counts_the_bytes_that_arrived_not_the_parsed_message(serve_wrapper: ServerFactory) -> None:
    """A field sent twice keeps only its last value once parsed: 500 bytes of a first `id` are gone from the message
    (and from its ByteSize) but were received, and held, all the same. The budget counts what arrived."""
    Gated.reset()
    server = serve_wrapper(
        "Gated", max_receive_message_bytes=1000, max_inflight_request_bytes=1000, undeclared_inputs="ignore"
    )
    server.client.status()  # loads the model
    request = pb.ModelInferRequest(model_name=MODEL, inputs=[texts("a", b"x")], id="x")
    wire = pb.ModelInferRequest(id="f" * 500).SerializeToString() + request.SerializeToString()
    assert pb.ModelInferRequest.FromString(wire).ByteSize() < 100
    with grpc.insecure_channel(f"127.0.0.1:{server.running.port}") as channel:
        send: grpc.UnaryUnaryMultiCallable[bytes, pb.ModelInferResponse] = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer", response_deserializer=pb.ModelInferResponse.FromString
        )
        try:
            with ThreadPoolExecutor(1) as pool:
                held = pool.submit(server.client.run, [{"a": b"hold", "pad": b"p" * 600}])
                assert Gated.holding.wait(PATIENCE_SECONDS)
                with pytest.raises(grpc.RpcError) as refused_call:
                    send(wire, timeout=PATIENCE_SECONDS)
                Gated.release.set()
                assert held.result(timeout=PATIENCE_SECONDS).outputs[0].success
        finally:
            Gated.release.set()

    assert refused_call.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "would pass max_inflight_request_bytes (1000 bytes)" in str(refused_call.value.details())


# 5. Element counts come from the shapes, before any data is split


EMPTY_ELEMENTS = 2_000_000
TAIL = b"\x01\x00"
"""After the empty elements: the start of one more length, which splitting them all would trip on."""


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ([EMPTY_ELEMENTS], f"{EMPTY_ELEMENTS} items in one request, over the model's maxBatchSize of 8"),
        ([1], "input 'input.txt' has shape [1] (1 elements) but more"),
    ],
    ids=["over-max-batch-size", "more-than-the-shape"],
)
def test_raw_data_is_not_split_past_the_shape(greeter_server: ServerThread, shape: list[int], message: str) -> None:
    """2M empty raw elements (8 MB) and a broken tail: refused from the shape, so the tail is never reached."""
    data = struct.pack("<I", 0) * EMPTY_ELEMENTS + TAIL
    request = pb.ModelInferRequest(model_name=MODEL, inputs=[raw_tensor("input.txt", shape)], raw_input_contents=[data])
    error = refused(greeter_server, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in str(error.details()), error.details()


def test_rest_binary_data_is_not_split_past_the_shape(serve_greeter: ServerFactory) -> None:
    server = serve_greeter(**HTTP)
    data = struct.pack("<I", 0) * EMPTY_ELEMENTS + TAIL
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input.txt",
                    "datatype": "BYTES",
                    "shape": [EMPTY_ELEMENTS],
                    "parameters": {"binary_data_size": len(data)},
                }
            ]
        }
    ).encode()
    status, _, body = HttpClient(server).request(
        "POST", INFER, header + data, {"Inference-Header-Content-Length": str(len(header))}
    )
    assert status == 400
    assert "over the model's maxBatchSize of 8" in json.loads(body)["error"]


def test_a_large_rest_body_is_parsed_off_the_event_loop(
    serve_greeter: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from grpc_model.src.v2 import rest as rest_module

    threads: list[str] = []

    def recording(*arguments: Any) -> Any:
        threads.append(threading.current_thread().name)
        return parse(*arguments)

    parse = rest_module.infer_request
    monkeypatch.setattr(rest_module, "infer_request", recording)
    server = serve_greeter(**HTTP)
    small = {"inputs": [{"name": "input.txt", "datatype": "BYTES", "shape": [1], "data": ["Ada"]}]}
    large = {"inputs": [{"name": "input.txt", "datatype": "BYTES", "shape": [1], "data": [""] * 100_000}]}

    assert rest(server, small)[0] == 200
    assert rest(server, large)[0] == 400
    assert threads[0] == server.thread.name  # a small body: on the loop, no thread hop
    assert threads[1] != server.thread.name


def test_a_tensor_is_read_only_after_its_shape_passed_and_no_further(greeter_bundle: Any) -> None:
    from grpc_model.src.v2.tensors import InputTensor

    model = V2Model.of(load_bundle(greeter_bundle, "").spec)  # maxBatchSize 8
    asked: list[int] = []

    def read(limit: int) -> list[bytes]:
        asked.append(limit)
        return [b"x"] * limit

    with pytest.raises(V2Error, match="over the model's maxBatchSize of 8"):
        model.items(InferRequest(MODEL, "", [InputTensor("input.txt", "BYTES", [10**9], read)]))
    assert asked == []
    with pytest.raises(V2Error, match=r"has shape \[2\] \(2 elements\) but more"):
        model.items(InferRequest(MODEL, "", [InputTensor("input.txt", "BYTES", [2], read)]))
    assert asked == [3]


# Counts a request carries are checked before any entry is read (the second review of issue 19)

TENSOR = pb.ModelInferRequest.InferInputTensor(name="input.txt", datatype="BYTES", shape=[1])
JSON_TENSOR = {"name": "input.txt", "datatype": "BYTES", "shape": [1], "data": ["Ada"]}
COUNTS = [
    pytest.param(
        pb.ModelInferRequest(model_name=MODEL, inputs=[TENSOR] * 100_000),
        {"inputs": [JSON_TENSOR] * 100_000},
        "100,000 input tensors, over 1000",
        id="inputs",
    ),
    pytest.param(
        pb.ModelInferRequest(model_name=MODEL, inputs=[TENSOR], outputs=[requested(name="o")] * 1001),
        {"inputs": [JSON_TENSOR], "outputs": [{"name": "o"}] * 1001},
        "1,001 outputs asked for, over 1000",
        id="outputs",
    ),
    pytest.param(
        pb.ModelInferRequest(
            model_name=MODEL,
            inputs=[TENSOR],
            parameters={f"p{index}": pb.InferParameter(bool_param=True) for index in range(1001)},
        ),
        {"inputs": [JSON_TENSOR], "parameters": {f"p{index}": True for index in range(1001)}},
        "1,001 parameters, over 1000",
        id="parameters",
    ),
    pytest.param(
        pb.ModelInferRequest(
            model_name=MODEL,
            inputs=[texts("input.txt", b"Ada")] * 1000,
            outputs=[requested(name="o")] * 1000,
            parameters={f"p{index}": pb.InferParameter(bool_param=True) for index in range(1000)},
        ),
        {
            "inputs": [JSON_TENSOR] * 1000,
            "outputs": [{"name": "o"}] * 1000,
            "parameters": {f"p{index}": True for index in range(1000)},
        },
        None,
        id="at-the-bounds",
    ),
]


@pytest.mark.parametrize(("request_", "document", "message"), COUNTS)
def test_counts_past_the_bounds_are_refused_before_any_entry_is_read(
    greeter_bundle: Any, request_: pb.ModelInferRequest, document: dict[str, Any], message: str | None
) -> None:
    """A 2 MB ModelInfer of 100,000 input tensors held the event loop (and health) for 3 s, 300,000 parameters
    for 1.5 s: each transport now refuses them from their counts, before it builds anything for them."""
    from grpc_model.src.v2 import grpc_service, rest

    model = V2Model.of(load_bundle(greeter_bundle, "").spec)
    body = json.dumps(document).encode()
    if message is None:  # the protocol refuses the repeated names later, by name
        grpc_service.infer_request(request_, model)
        rest.infer_request(MODEL, "", body, {}, model)
        return
    with pytest.raises(V2Error, match=message):
        grpc_service.infer_request(request_, model)
    with pytest.raises(V2Error, match=message):
        rest.infer_request(MODEL, "", body, {}, model)


def test_a_shape_of_too_many_dimensions_is_refused_before_it_is_read(greeter_bundle: Any) -> None:
    from grpc_model.src.v2 import grpc_service, rest

    model = V2Model.of(load_bundle(greeter_bundle, "").spec)
    request = pb.ModelInferRequest(model_name=MODEL, inputs=[raw_tensor("input.txt", [1] * 1_000_000)])
    with pytest.raises(V2Error, match=r"input 'input\.txt': 1,000,000 dimensions, over 64"):
        grpc_service.infer_request(request, model)
    body = {"inputs": [{"name": "input.txt", "datatype": "BYTES", "shape": [1] * 65, "data": ["Ada"]}]}
    with pytest.raises(V2Error, match=r"input 'input\.txt': 65 dimensions, over 64"):
        rest.infer_request(MODEL, "", json.dumps(body).encode(), {}, model)


# 7. Error messages quote client data briefly, keeping their code


HUGE = "n" * 1_000_000
MANY = 20_000


def many_inputs() -> list[pb.ModelInferRequest.InferInputTensor]:
    return [texts("input.txt", b"Ada")] + [texts(f"unknown-{index}", b"x") for index in range(MANY)]


@pytest.mark.parametrize(
    ("request_", "code", "start"),
    [
        (pb.ModelInferRequest(model_name=HUGE), grpc.StatusCode.NOT_FOUND, "no model named 'nnnn"),
        (
            pb.ModelInferRequest(model_name=MODEL, model_version=HUGE),
            grpc.StatusCode.NOT_FOUND,
            "model 'hello-world' has no version 'nnnn",
        ),
        (
            pb.ModelInferRequest(model_name=MODEL, inputs=[texts("input.txt", b"Ada"), texts(HUGE, b"x")]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "the model has no input 'nnnn",
        ),
        (
            pb.ModelInferRequest(model_name=MODEL, inputs=many_inputs()),
            grpc.StatusCode.INVALID_ARGUMENT,
            "20,001 input tensors, over 1000 (the model has 1)",
        ),
        (
            pb.ModelInferRequest(model_name=MODEL, inputs=[texts("input.txt", b"Ada")] * MANY),
            grpc.StatusCode.INVALID_ARGUMENT,
            "20,000 input tensors, over 1000",
        ),
        (
            pb.ModelInferRequest(
                model_name=MODEL,
                inputs=[texts("input.txt", b"Ada")],
                outputs=[requested(name=f"unknown-{index}") for index in range(MANY)],
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "20,000 outputs asked for, over 1000",
        ),
        (
            pb.ModelInferRequest(
                model_name=MODEL, inputs=[raw_tensor("input.txt", [1] * 50_000)], raw_input_contents=[raw(b"A", b"B")]
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "input 'input.txt': 50,000 dimensions, over 64",
        ),
        (
            pb.ModelInferRequest(
                model_name=MODEL,
                inputs=[texts("input.txt", b"Ada")],
                parameters={"explain": pb.InferParameter(string_param=HUGE)},
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "parameter 'explain' must be a boolean, got 'nnnn",
        ),
        (
            pb.ModelInferRequest(
                model_name=MODEL, inputs=[texts(f"\u00e9\u20ac{index}" * 1000, b"x") for index in range(9)]
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "missing input tensor 'input.txt'",
        ),
    ],
    ids=[
        "model-name",
        "version",
        "input-name",
        "unknown-inputs",
        "repeated-inputs",
        "unknown-outputs",
        "shape",
        "parameter",
        "non-ascii-names",
    ],
)
def test_errors_about_huge_requests_are_short_and_keep_their_code(
    greeter_server: ServerThread, request_: pb.ModelInferRequest, code: grpc.StatusCode, start: str
) -> None:
    error = refused(greeter_server, request_)
    assert error.code() == code, error.details()
    details = str(error.details())
    assert start in details
    assert len(details.encode()) < SHORT_MESSAGE


def test_metadata_and_readiness_of_a_huge_name_are_not_found(greeter_server: ServerThread) -> None:
    v2 = stub(greeter_server)
    with pytest.raises(grpc.RpcError) as ready:
        v2.ModelReady(pb.ModelReadyRequest(name=HUGE), timeout=PATIENCE_SECONDS)
    with pytest.raises(grpc.RpcError) as metadata:
        v2.ModelMetadata(pb.ModelMetadataRequest(name=HUGE), timeout=PATIENCE_SECONDS)
    for raised in (ready, metadata):
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
        assert len(str(raised.value.details())) < SHORT_MESSAGE


def test_long_failure_reasons_outside_ascii_keep_invalid_argument(serve_wrapper: ServerFactory) -> None:
    """Eight items whose model raises 4,000 characters outside ASCII each: gRPC would percent-encode the
    listed reasons to about 20 KB, past what a client takes in a trailer."""
    server = serve_wrapper("BadMessages")
    error = refused(server, pb.ModelInferRequest(model_name=MODEL, inputs=[texts("a", *[b"long"] * 8)]))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert str(error.details()).startswith("8 of 8 items failed (indices [0, 1, 2, 3, 4, 5, 6, 7])")


def test_rest_errors_about_huge_requests_are_short(serve_greeter: ServerFactory) -> None:
    server = serve_greeter(**HTTP)
    text = {"datatype": "BYTES", "shape": [1], "data": ["x"]}
    status, answer = rest(server, {"inputs": [{"name": f"unknown-{index}", **text} for index in range(MANY)]})
    assert status == 400
    assert "20,000 input tensors, over 1000" in answer["error"]
    assert len(answer["error"]) < SHORT_MESSAGE


# 11. Text that is not Unicode in REST JSON


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            b'{"inputs": [{"name": "input.txt", "datatype": "BYTES", "shape": [1], "data": ["\\ud800"]}]}',
            "input 'input.txt': a string is not valid Unicode",
        ),
        (
            b'{"id": "\\ud800", "inputs": [{"name": "input.txt", "datatype": "BYTES", "shape": [1], "data": ["Ada"]}]}',
            "id is not valid Unicode",
        ),
    ],
    ids=["data", "id"],
)
def test_a_lone_surrogate_in_rest_json_is_a_bad_request(
    serve_greeter: ServerFactory, body: bytes, message: str
) -> None:
    http = HttpClient(serve_greeter(**HTTP))
    status, headers, answer = http.request("POST", INFER, body, {"Content-Type": "application/json"})
    assert (status, headers["content-type"]) == (400, "application/json")
    assert message in json.loads(answer)["error"]
