"""What tracing costs the server: CPU per request for echo at 32 concurrent callers, tracing off and on.

    .venv/bin/python -m benchmarks.tracing_cost [--runs 5] [--seconds 4]

Needs the `tracing` extra (`scripts/dev.sh install --add tracing`). Three configurations, each
started afresh in every run, in turn, so that drift in the machine's load spreads over all of them:

- `off`: the default; no OpenTelemetry is imported.
- `on, not sampled`: `--tracing otlp` with OTEL_TRACES_SAMPLER=always_off: spans are made and
  dropped at once; what instrumenting costs when a collector samples nothing.
- `on, exported`: `--tracing otlp` to a sink in this process that accepts every OTLP/HTTP export
  and drops it: the server pays for making, batching, encoding and sending every span.

It prints the median over the runs of the server's CPU per request (user + system, from /proc)
and requests/s, and the spans the sink received per request (fewer than made means the batch
processor dropped some because its queue was full).
"""

import argparse
import asyncio
import http.server
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from benchmarks.bundle import write_bundle
from benchmarks.processes import Server, cpu_seconds, process_tree
from grpc_model.src.auto_generated.model2_template import model_pb2 as pb
from grpc_model.src.auto_generated.model2_template.model_pb2_grpc import ModzyModelStub
from grpc_model.src.settings import PROJECT_ROOT

CONCURRENCY = 32
PAYLOAD = b"x" * 64
CONFIGS = {
    "off": ((), {}),
    "on, not sampled": (("--tracing", "otlp"), {"OTEL_TRACES_SAMPLER": "always_off"}),
    "on, exported": (("--tracing", "otlp"), {}),
}


class Sink(http.server.ThreadingHTTPServer):
    """An OTLP/HTTP receiver that counts the spans it is sent and keeps none."""

    spans = 0

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Export)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Export(http.server.BaseHTTPRequestHandler):
    server: Sink

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportTraceServiceRequest.FromString(body)
        self.server.spans += sum(len(scope.spans) for spans in request.resource_spans for scope in spans.scope_spans)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass


async def measure(target: str, pid: int, seconds: float) -> tuple[float, float, int]:
    """(server CPU µs per request, requests/s, calls made) for echo calls from CONCURRENCY callers.

    The calls made count the warm-up and the Status call too, which make spans as well."""
    request = pb.RunRequest(inputs=[pb.InputItem(input={"input.bin": PAYLOAD})])
    async with grpc.aio.insecure_channel(target) as channel:
        stub = ModzyModelStub(channel)
        assert (await stub.Status(pb.StatusRequest(), timeout=120)).status_code == 200

        async def caller(until: float) -> int:
            done = 0
            while time.monotonic() < until:
                response = await stub.Run(request, timeout=60)
                assert response.outputs[0].success, response.message
                done += 1
            return done

        warm_up = time.monotonic() + 0.5
        calls = 1 + sum(await asyncio.gather(*(caller(warm_up) for _ in range(CONCURRENCY))))
        cpu_before, started = cpu_seconds(process_tree(pid)), time.monotonic()
        count = sum(await asyncio.gather(*(caller(started + seconds) for _ in range(CONCURRENCY))))
        elapsed = time.monotonic() - started
        cpu_used = cpu_seconds(process_tree(pid)) - cpu_before
    return cpu_used / count * 1e6, count / elapsed, calls + count


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="runs of each configuration (default 5)")
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds measured per run (default 4)")
    args = parser.parse_args()
    sink = Sink()
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    bundle = write_bundle(Path(tempfile.mkdtemp(prefix="tracing-bundle-")))
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in CONFIGS}
    for run in range(args.runs):
        for name, (flags, extra_env) in CONFIGS.items():
            env = {"PYTHONPATH": str(PROJECT_ROOT), "OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint, **extra_env}
            command = [
                sys.executable, "-m", "grpc_model.src.model_server", "--host", "127.0.0.1",
                "--model-class", "benchmarks.models:Echo", "--asset-bundle-dir", str(bundle),
                "--log-level", "WARNING", "--batch-wait-ms", "0", *flags,
            ]  # fmt: skip
            server = Server(command, {**os.environ, **env}, f"tracing-{name.replace(', ', '-')}")
            spans_before = sink.spans
            try:
                cpu_us, per_second, calls = await measure(server.target, server.process.pid, args.seconds)
            finally:
                server.stop()  # exports what the server still buffered
            spans = (sink.spans - spans_before) / calls
            results[name].append((cpu_us, per_second, spans))
            print(f"run {run + 1} {name:16} {cpu_us:7.1f} µs/req {per_second:8.1f} req/s {spans:5.2f} spans/req")
    sink.shutdown()
    off = statistics.median(cpu for cpu, _, _ in results["off"])
    print(f"\nmedian of {args.runs} runs, echo, {CONCURRENCY} concurrent callers:")
    print("| tracing | server CPU µs/request | vs off | requests/s | spans exported/request |")
    print("|---|---:|---:|---:|---:|")
    for name, points in results.items():
        cpu = statistics.median(point[0] for point in points)
        per_second = statistics.median(point[1] for point in points)
        spans = statistics.median(point[2] for point in points)
        print(f"| {name} | {cpu:.1f} | {cpu / off:.2f}x | {per_second:.0f} | {spans:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
