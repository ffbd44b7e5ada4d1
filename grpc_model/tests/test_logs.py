"""Logs: JSON or text lines, each carrying the request id of its call; the id goes back to the caller."""

import json
import logging
import re
import sys
from pathlib import Path

import grpc
import pytest

from grpc_model.src.auto_generated.model2_template import model_pb2 as pb
from grpc_model.src.auto_generated.v2 import grpc_predict_v2_pb2 as v2
from grpc_model.src.auto_generated.v2.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub
from grpc_model.src.client import ModelClient
from grpc_model.src.observability import logs
from grpc_model.tests.conftest import TESTS, ServerFactory, ServerProcess, eventually, start

GENERATED = re.compile(r"[0-9a-f]{8}-[0-9a-f]+")


def run_with_id(client: ModelClient, items: list[dict[str, bytes]], request_id: str | None) -> tuple[str, object]:
    """Sends a Run call (with `x-request-id` when given); returns the id the server sent back, and the response."""
    request = pb.RunRequest(inputs=[pb.InputItem(input=item) for item in items])
    metadata = ((logs.REQUEST_ID_METADATA, request_id),) if request_id else None
    answer: object
    try:
        answer, call = client.stub.Run.with_call(request, metadata=metadata, timeout=30)
        trailing = call.trailing_metadata()
    except grpc.RpcError as error:
        answer, trailing = error, error.trailing_metadata()  # type: ignore[assignment]  # a grpc.Call too
    return str(dict(trailing or ())[logs.REQUEST_ID_METADATA]), answer


def json_lines(server: ServerProcess) -> list[dict[str, object]]:
    return [json.loads(line) for line in server.output().splitlines()]


@pytest.mark.parametrize("workers", ["0", "1"])
def test_json_lines_carry_the_request_id_sent_in_metadata(
    processes: list[ServerProcess], test_bundle: Path, workers: str
) -> None:
    server = start(
        processes,
        *("--model-class", f"{TESTS}:Echo", "--asset-bundle-dir", str(test_bundle), "--workers", workers),
        *("--load-model-at-startup", "--log-format", "json", "--log-level", "DEBUG"),
    )
    with server.client() as client:
        returned, response = run_with_id(client, [{"a": b"secret-payload-x"}, {"a": b"fail"}], "req-42")
    assert returned == "req-42"
    assert isinstance(response, pb.RunResponse)
    assert [output.success for output in response.outputs] == [True, False]

    def about_the_call() -> list[dict[str, object]]:
        lines = [line for line in json_lines(server) if line.get("request_id") == "req-42"]
        return lines if any(str(line["message"]).startswith("Run: 2 items (1 failed)") for line in lines) else []

    lines = eventually(about_the_call, "the access line of the call")
    for line in json_lines(server):  # every line is one JSON object with the fields
        assert {"time", "level", "logger", "message"} <= line.keys()
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", str(line["time"]))
    failure = next(line for line in lines if "failed on an item" in str(line["message"]))  # logged by the model side
    assert failure["level"] == "WARNING"  # a bad item is the client's problem; its traceback is shown once
    assert "Traceback" in str(failure["exc_info"])
    assert "ValueError: asked to fail" in str(failure["exc_info"])
    assert "secret-payload-x" not in server.output()  # payload bytes are never logged


def test_the_request_id_comes_back_and_one_is_made_when_none_is_sent(serve_wrapper: ServerFactory) -> None:
    server = serve_wrapper("Echo", max_queued_items=2)
    server.client.status()
    assert run_with_id(server.client, [{"a": b"1"}], "mine-1")[0] == "mine-1"
    first, second = (run_with_id(server.client, [{"a": b"1"}], None)[0] for _ in range(2))
    assert GENERATED.fullmatch(first)
    assert GENERATED.fullmatch(second)
    assert first != second
    returned, refused = run_with_id(server.client, [{"a": b"1"}] * 3, "mine-2")  # over max_queued_items
    assert isinstance(refused, grpc.RpcError)
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert returned == "mine-2"  # an aborted call is answered with its id too


def test_a_long_request_id_is_cut_and_an_unprintable_one_replaced(serve_wrapper: ServerFactory) -> None:
    server = serve_wrapper("Echo")
    server.client.status()
    assert run_with_id(server.client, [{"a": b"1"}], "x" * 500)[0] == "x" * logs.MAX_REQUEST_ID_CHARS
    assert GENERATED.fullmatch(logs.accepted_request_id("tab\there"))  # grpcio refuses to send one; others may


def test_text_lines_show_the_request_id_and_keep_tracebacks() -> None:
    formatter = logs.TextFormatter()
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("grpc_model.x", logging.ERROR, __file__, 1, "failed %s", ("here",), sys.exc_info())
    token = logs.request_id.set(logs.BatchIds(["a", None, "b", "a"]))
    try:
        logs.RequestIdFilter().filter(record)
    finally:
        logs.request_id.reset(token)
    text = formatter.format(record)
    assert re.match(r"\S+ \S+ ERROR grpc_model\.x \[a,b\]: failed here\nTraceback", text)
    assert text.endswith("ValueError: boom")


def test_no_front_end_writes_an_access_line_at_info(
    serve_greeter: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """The per-call line costs 10-15% of a small call: at DEBUG only, for V2 and HTTP as for Run."""
    pytest.importorskip("fastapi", reason="the optional `http` extra is not installed")
    from grpc_model.tests.http_client import HTTP, HttpClient, post_form

    server = serve_greeter(**HTTP)
    caplog.set_level(logging.INFO)
    tensor = v2.ModelInferRequest.InferInputTensor(
        name="input.txt", datatype="BYTES", shape=[1], contents=v2.InferTensorContents(bytes_contents=[b"Ada"])
    )
    GRPCInferenceServiceStub(server.client.channel).ModelInfer(
        v2.ModelInferRequest(model_name="hello-world", inputs=[tensor]), timeout=60
    )
    assert post_form(f"http://{HttpClient(server).url}/api/model/run", {"input.txt": b"Bo"})[0] == 200
    server.client.run([{"input.txt": b"Cy"}])

    per_call = [
        record.getMessage()
        for record in caplog.records
        if " in " in record.getMessage() and "ms" in record.getMessage()
    ]
    assert per_call == []
