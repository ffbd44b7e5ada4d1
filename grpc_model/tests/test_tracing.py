"""OpenTelemetry tracing (the `tracing` group): the spans a call makes, how a batch links its callers, and off.

Spans are read from the SDK's in-memory exporter in this process, and from the console exporter's
JSON lines on stdout for a server process and its worker (which export when they stop).
"""

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from grpc_model.src.auto_generated.model2_template import model_pb2 as pb
from grpc_model.src.observability import tracing
from grpc_model.tests.conftest import PATIENCE_SECONDS, TESTS, ServerFactory, ServerProcess, eventually, start
from grpc_model.tests.wrappers import GatedBatch

RUN = "/ModzyModel/Run"
CLIENT_TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
CLIENT_SPAN_ID = 0xB7AD6B7169203331
# The server's entry point, in a process where OpenTelemetry cannot be imported: as without the `tracing` group.
WITHOUT_OPENTELEMETRY = (
    "import sys; sys.modules['opentelemetry'] = None; from grpc_model.src.model_server import main; sys.exit(main())"
)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on in this process, every span kept in memory as it ends; asked for before the server starts."""
    exporter = InMemorySpanExporter()
    tracing.install(SimpleSpanProcessor(exporter))
    yield exporter
    tracing.shutdown()


def request(value: bytes) -> pb.RunRequest:
    return pb.RunRequest(inputs=[pb.InputItem(input={"a": value})])


def named(exporter: InMemorySpanExporter, name: str, count: int) -> list[ReadableSpan]:
    """The `count` finished spans called `name`, once they have all ended (a server span ends after its answer)."""

    def finished() -> list[ReadableSpan] | None:
        found = [span for span in exporter.get_finished_spans() if span.name == name]
        return found if len(found) == count else None

    return eventually(finished, f"{count} finished {name} spans")


def children(parent: ReadableSpan, candidates: list[ReadableSpan]) -> list[ReadableSpan]:
    assert parent.context is not None
    return [span for span in candidates if span.parent is not None and span.parent.span_id == parent.context.span_id]


def test_one_batch_call_for_two_callers_is_one_span_linked_to_both_call_spans(
    spans: InMemorySpanExporter, serve_wrapper: ServerFactory
) -> None:
    GatedBatch.reset()
    server = serve_wrapper("GatedBatch")
    server.client.status()
    batcher = server.running.service.runtime._batcher
    assert batcher is not None
    try:
        held = server.client.stub.Run.future(request(b"hold"), timeout=PATIENCE_SECONDS)
        eventually(GatedBatch.holding.is_set, "the model to hold the first call's item")
        first = server.client.stub.Run.future(request(b"x"), timeout=PATIENCE_SECONDS)
        eventually(lambda: batcher.queued == 1, "the first caller's item to queue")
        second = server.client.stub.Run.future(request(b"y"), timeout=PATIENCE_SECONDS)
        eventually(lambda: batcher.queued == 2, "the second caller's item to queue")
    finally:
        GatedBatch.release.set()
    assert all(call.result(timeout=PATIENCE_SECONDS).outputs[0].success for call in (held, first, second))
    assert GatedBatch.batches == [[b"x", b"y"]]  # one batch call served both callers

    runs = named(spans, RUN, 3)
    batches = named(spans, tracing.BATCH, 2)
    shared = next(batch for batch in batches if (batch.attributes or {}).get("grpc_model.callers") == 2)
    alone = next(batch for batch in batches if batch is not shared)
    assert alone.parent is not None
    callers = {run.context.span_id: run for run in runs if run.context and run.context.span_id != alone.parent.span_id}
    assert len(callers) == 2
    assert {link.context.span_id for link in shared.links} == set(callers)
    assert {link.context.trace_id for link in shared.links} == {run.context.trace_id for run in callers.values()}
    assert shared.parent is not None
    assert shared.parent.span_id in callers
    assert shared.attributes is not None
    assert shared.attributes["grpc_model.items"] == 2
    for run in runs:  # every call checked its items and waited in the queue, under its own span
        assert [span.name for span in children(run, list(spans.get_finished_spans()))].count(tracing.VALIDATE) == 1
        assert len(children(run, named(spans, tracing.QUEUE, 3))) == 1


def test_a_clients_traceparent_is_the_parent_of_its_call_span(
    spans: InMemorySpanExporter, serve_wrapper: ServerFactory
) -> None:
    server = serve_wrapper("Echo")
    server.client.status()
    traceparent = f"00-{CLIENT_TRACE_ID:032x}-{CLIENT_SPAN_ID:016x}-01"

    response = server.client.stub.Run(request(b"x"), metadata=(("traceparent", traceparent),), timeout=30)

    assert response.outputs[0].success
    (run,) = named(spans, RUN, 1)
    assert run.context is not None
    assert run.parent is not None
    assert (run.context.trace_id, run.parent.span_id, run.parent.is_remote) == (CLIENT_TRACE_ID, CLIENT_SPAN_ID, True)
    (batch,) = named(spans, tracing.BATCH, 1)
    assert batch.context is not None
    assert batch.context.trace_id == CLIENT_TRACE_ID
    assert [span.name for span in children(run, list(spans.get_finished_spans()))].count(tracing.QUEUE) == 1


def test_a_refused_call_keeps_its_status_code_and_its_span_records_the_code(
    spans: InMemorySpanExporter, serve_wrapper: ServerFactory
) -> None:
    server = serve_wrapper("Echo")
    raw_run: grpc.UnaryUnaryMultiCallable[bytes, bytes] = server.client.channel.unary_unary(RUN)

    with pytest.raises(grpc.RpcError) as raised:
        raw_run(b"\x0a\xff\xff\xff\xff\x0f", timeout=30)  # not a RunRequest: a length past the end

    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    (run,) = named(spans, RUN, 1)
    assert run.attributes is not None
    assert run.attributes["rpc.grpc.status_code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]


def test_without_adaptive_batching_each_slice_is_a_batch_span_under_its_call(
    spans: InMemorySpanExporter, serve_wrapper: ServerFactory
) -> None:
    server = serve_wrapper("Echo", adaptive_batching=False)
    server.client.status()

    assert server.client.run([{"a": b"x"}]).outputs[0].success

    (run,) = named(spans, RUN, 1)
    assert [span.name for span in children(run, list(spans.get_finished_spans()))] == [tracing.VALIDATE, tracing.BATCH]


def console_spans(path: Path) -> list[dict[str, Any]]:
    """The spans a server process printed with `--tracing console`, one JSON object a line."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def test_a_worker_process_span_is_a_child_of_the_batch_span_in_the_callers_trace(
    processes: list[ServerProcess], test_bundle: Path, tmp_path: Path
) -> None:
    output = tmp_path / "spans.jsonl"
    with output.open("w") as stdout:
        server = start(
            processes,
            *("--model-class", f"{TESTS}:Echo", "--asset-bundle-dir", str(test_bundle)),
            *("--workers", "1", "--tracing", "console"),
            stdout=stdout,
        )
        with server.client() as client:
            client.status()
            assert client.run([{"a": b"x"}]).outputs[0].success
            client.shutdown()
        assert server.wait() == 0  # the worker, then the server, print their spans as they stop

    found = console_spans(output)
    (run,) = (span for span in found if span["name"] == RUN)
    (batch,) = (span for span in found if span["name"] == tracing.BATCH)
    (worker,) = (span for span in found if span["name"] == tracing.WORKER_BATCH)
    assert worker["context"]["trace_id"] == batch["context"]["trace_id"] == run["context"]["trace_id"]
    assert worker["parent_id"] == batch["context"]["span_id"]
    assert worker["attributes"]["process.pid"] != server.process.pid  # exported by the worker itself


def test_off_the_server_and_its_workers_run_without_opentelemetry_and_print_no_spans(
    processes: list[ServerProcess], test_bundle: Path, tmp_path: Path
) -> None:
    output = tmp_path / "stdout.txt"
    with output.open("w") as stdout:
        server = start(
            processes,
            *("--model-class", f"{TESTS}:Echo", "--asset-bundle-dir", str(test_bundle), "--workers", "1"),
            command=[sys.executable, "-c", WITHOUT_OPENTELEMETRY],
            stdout=stdout,
        )
        with server.client() as client:
            client.status()
            assert client.run([{"a": b"x"}]).outputs[0].success
            client.shutdown()
        assert server.wait() == 0
    assert output.read_text() == ""


def test_tracing_on_without_the_group_stops_start_up_naming_the_group_and_the_install_command(
    processes: list[ServerProcess],
) -> None:
    server = start(processes, "--tracing", "otlp", command=[sys.executable, "-c", WITHOUT_OPENTELEMETRY])

    assert server.wait() == 2
    assert "cannot start: tracing is 'otlp', but OpenTelemetry is not installed" in server.output()
    assert f"the optional `tracing` extra; install it with {tracing.INSTALL}" in server.output()
