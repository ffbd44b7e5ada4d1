"""The V2 REST routes (FastAPI router) on uvicorn in the gRPC server's event loop: JSON and binary tensor data."""

import asyncio
import http.client as http_client
import json
import struct
import tracemalloc
from typing import Any

import pytest
from starlette.requests import Request

from grpc_model.src.v2.rest import _body
from grpc_model.src.v2.tensors import V2Error
from grpc_model.tests.conftest import PATIENCE_SECONDS, ServerFactory
from grpc_model.tests.http_client import HTTP, HttpClient

GREETING = {"data": {"result": {"greeting": "Hello. Nice to meet you, Ada"}, "explanation": None, "drift": None}}
INFER = "/v2/models/hello-world/infer"
JSON_ONLY = json.dumps({"inputs": [{"name": "input.txt", "datatype": "BYTES", "shape": [1], "data": ["Ada"]}]}).encode()


@pytest.fixture
def http(serve_greeter: ServerFactory) -> HttpClient:
    return HttpClient(serve_greeter(**HTTP))


def text_input(*elements: str) -> dict[str, object]:
    return {"name": "input.txt", "datatype": "BYTES", "shape": [len(elements)], "data": list(elements)}


def test_health_and_metadata(http: HttpClient) -> None:
    assert http.json("GET", "/v2/health/live") == (200, {"live": True})
    assert http.json("GET", "/v2/models/hello-world/ready") == (200, {"name": "hello-world", "ready": True})
    assert http.json("GET", "/v2/health/ready") == (200, {"ready": True})
    status, metadata = http.json("GET", "/v2/models/hello-world")
    assert status == 200
    assert metadata["versions"] == ["0.1.0"]
    assert metadata["inputs"] == [{"name": "input.txt", "datatype": "BYTES", "shape": [-1]}]
    assert http.json("GET", "/v2/models/hello-world/versions/0.1.0")[1] == metadata
    assert http.json("GET", "/v2")[1]["name"] == "grpc-model"


def test_unknown_model_and_version_are_404(http: HttpClient) -> None:
    assert http.json("GET", "/v2/models/other") == (
        404,
        {"error": "no model named 'other': this server serves 'hello-world'"},
    )
    status, answer = http.json("GET", "/v2/models/hello-world/versions/2.0.0/ready")
    assert (status, answer["error"]) == (404, "model 'hello-world' has no version '2.0.0': this server serves 0.1.0")


def test_infer_in_json(http: HttpClient) -> None:
    status, answer = http.json("POST", INFER, {"id": "7", "inputs": [text_input("I am Ada", "Bob")]})
    assert status == 200
    assert (answer["model_name"], answer["model_version"], answer["id"]) == ("hello-world", "0.1.0", "7")
    [output] = answer["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == ("results.json", "BYTES", [2])
    assert json.loads(output["data"][0]) == GREETING
    status, answer = http.json("POST", "/v2/models/hello-world/versions/0.1.0/infer", {"inputs": [text_input("Ada")]})
    assert status == 200


def test_infer_with_binary_data_as_tritonclient_sends_it(http: HttpClient) -> None:
    data = b"".join(struct.pack("<I", len(text)) + text for text in (b"I am Ada", b"Bob"))
    header = json.dumps(
        {
            "inputs": [
                {"name": "input.txt", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": len(data)}}
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    status, headers, body = http.request(
        "POST", INFER, header + data, {"Inference-Header-Content-Length": str(len(header))}
    )
    assert status == 200, body
    length = int(headers["inference-header-content-length"])
    answer = json.loads(body[:length])
    [output] = answer["outputs"]
    size = output["parameters"]["binary_data_size"]
    binary = body[length:]
    assert len(binary) == size
    (first,) = struct.unpack_from("<I", binary)
    assert json.loads(binary[4 : 4 + first]) == GREETING


def test_partial_results_in_json(http: HttpClient) -> None:
    status, answer = http.json(
        "POST", INFER, {"inputs": [text_input("Ada", " ")], "parameters": {"partial_results": True}}
    )
    assert status == 200
    outputs = {output["name"]: output["data"] for output in answer["outputs"]}
    assert json.loads(outputs["results.json"][0]) == GREETING
    assert outputs["results.json"][1] == ""
    assert outputs["error"][0] == ""
    assert outputs["error"][1].startswith("ValueError: input.txt is empty")


@pytest.mark.parametrize(
    ("body", "headers", "status", "message"),
    [
        (JSON_ONLY, {"Content-Encoding": "gzip"}, 400, "Content-Encoding 'gzip' is not supported: send it plain"),
        (b"{not json", {}, 400, "the request is not valid JSON"),
        (b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", {}, 400, "nested too deeply"),
        (b'{"inputs": 3}', {}, 400, 'the request must be a JSON object with a list "inputs"'),
        (
            json.dumps({"inputs": [{"name": "input.txt", "datatype": "BYTES", "shape": [1], "data": [1]}]}).encode(),
            {},
            400,
            "input 'input.txt': BYTES data must be strings",
        ),
        (json.dumps({"inputs": [text_input("Ada", " ")]}).encode(), {}, 400, "1 of 2 items failed (indices [1])"),
        (b'{"inputs": []}', {"Inference-Header-Content-Length": "999"}, 400, "Inference-Header-Content-Length is"),
        (
            json.dumps(
                {
                    "inputs": [
                        {"name": "input.txt", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 9}}
                    ]
                }
            ).encode(),
            {},
            400,
            "binary_data_size 9 does not fit the 0 bytes left",
        ),
        (
            JSON_ONLY + b"xx",
            {"Inference-Header-Content-Length": str(len(JSON_ONLY))},
            400,
            "2 bytes of binary data after the last input's",
        ),
    ],
    ids=["gzip", "json", "deep", "shape", "data-type", "failed-item", "header-length", "binary-size", "trailing"],
)
def test_bad_requests_get_an_error_naming_the_problem(
    http: HttpClient, body: bytes, headers: dict[str, str], status: int, message: str
) -> None:
    answer_status, _, answer = http.request("POST", INFER, body, {"Content-Type": "application/json", **headers})
    assert answer_status == status
    assert message in json.loads(answer)["error"]


def test_non_utf8_outputs_go_as_binary_data(serve_wrapper: ServerFactory) -> None:
    server = HttpClient(serve_wrapper("Echo", **HTTP))
    data = struct.pack("<I", 2) + b"\xff\xfe"
    header = json.dumps(
        {"inputs": [{"name": "a", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 6}}]}
    ).encode()
    status, headers, body = server.request(
        "POST", INFER, header + data, {"Inference-Header-Content-Length": str(len(header))}
    )
    assert status == 200, body
    answer = json.loads(body[: int(headers["inference-header-content-length"])])
    outputs = {output["name"]: output for output in answer["outputs"]}
    assert outputs["a"]["parameters"] == {"binary_data_size": 6}  # not text: sent as binary data
    assert json.loads(outputs["flags.json"]["data"][0]) == {"detect_drift": False, "explain": False}


def test_inference_passes_the_request_id_and_the_body_limit_as_every_route(serve_greeter: ServerFactory) -> None:
    """Inference is answered outside FastAPI's routing (web/app.py's Shortcut), still behind the HTTP port's request
    id and body limit: a body over it is 413, with its length declared or sent in chunks, and the server goes on."""
    http = HttpClient(serve_greeter(max_receive_message_bytes=1000, **HTTP))
    over = json.dumps({"inputs": [text_input("a" * 2000)]}).encode()

    answered = http.request("POST", INFER, JSON_ONLY, {"x-request-id": "rest-call-7"})
    declared = http.request("POST", INFER, over, {"Content-Type": "application/json"})
    connection = http_client.HTTPConnection(http.url, timeout=PATIENCE_SECONDS)
    try:
        connection.request("POST", INFER, iter([over[:600], over[600:]]), encode_chunked=True)
        chunked = connection.getresponse()
        chunked_answer = (chunked.status, json.loads(chunked.read()))
    finally:
        connection.close()

    assert (answered[0], answered[1]["x-request-id"]) == (200, "rest-call-7")
    assert json.loads(json.loads(answered[2])["outputs"][0]["data"][0]) == GREETING
    assert declared[0] == 413
    assert "max_receive_message_bytes" in json.loads(declared[2])["detail"]
    assert len(declared[1]["x-request-id"]) > 8
    assert chunked_answer[0] == 413
    assert "max_receive_message_bytes" in chunked_answer[1]["detail"]
    assert http.request("POST", INFER, JSON_ONLY)[0] == 200


def _streamed(declared: int, chunks: int, chunk_size: int = 65536) -> Request:
    """A request declaring `declared` bytes whose body arrives in `chunks` new chunks, as uvicorn hands them over."""
    sent = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        sent += 1
        return {"type": "http.request", "body": b"x" * chunk_size, "more_body": sent < chunks}

    headers = [(b"content-length", str(declared).encode())]
    return Request({"type": "http", "method": "POST", "path": "/", "headers": headers}, receive)


def test_a_declared_body_is_held_once_while_it_arrives() -> None:
    """Starlette's body() keeps every chunk until it joins them: two copies of a 50 MiB body at its peak."""
    size = 128 * 65536

    async def read() -> tuple[bytes | bytearray, int]:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        body = await _body(_streamed(size, 128))
        return body, tracemalloc.get_traced_memory()[1] - before

    tracemalloc.start()
    try:
        body, peak = asyncio.run(read())
    finally:
        tracemalloc.stop()
    assert body == b"x" * size
    assert peak < 1.25 * size, f"reading {size} bytes peaked at {peak} bytes over what was held before"


def test_a_declared_length_allocates_nothing_before_the_bytes_arrive() -> None:
    """A client that declares 100 MB (under the limit) and sends 64 KiB must not make the server hold 100 MB."""

    async def read() -> int:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        with pytest.raises(V2Error, match="ended after 65536 of its Content-Length of 104857600"):
            await _body(_streamed(100 * 2**20, 1))
        return tracemalloc.get_traced_memory()[1] - before

    tracemalloc.start()
    try:
        peak = asyncio.run(read())
    finally:
        tracemalloc.stop()
    assert peak < 2**20, f"a 64 KiB body of a declared 100 MB peaked at {peak} bytes"


@pytest.mark.parametrize(
    ("declared", "chunks", "problem"),
    [(65536, 2, "longer than its Content-Length of 65536"), (3 * 65536, 2, "ended after 131072 of its")],
)
def test_a_body_that_does_not_match_its_length_is_refused(declared: int, chunks: int, problem: str) -> None:
    with pytest.raises(V2Error, match=problem):
        asyncio.run(_body(_streamed(declared, chunks)))
