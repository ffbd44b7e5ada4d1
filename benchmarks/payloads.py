"""Large payloads: the server's memory per call in flight, for a 50 MiB echo on each front end.

    .venv/bin/python -m benchmarks.payloads [--rounds 3] [--duration 3] [--concurrencies 1,8]

Also part of `scripts/bench.py`'s default run (`--profiles payloads`). For each round, each front end gets a
server of its own (the echo model, default settings but for gRPC's message limits), which answers one small
call first (the model loads); its RSS then is the idle RSS. Each concurrency then runs for `--duration`
seconds on that server, one 50 MiB item per call, and its peak RSS is the larger of the kernel's high-water
mark (VmHWM, reset when the window opens) and RSS sampled every millisecond. The ratio is

    (peak RSS - idle RSS) / (calls in flight x payload)

the copies of a payload the server holds at once per call. Rounds take the front ends in turns, so that the
machine's drift hits them alike; the table gives each ratio's median over the rounds.
"""

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import grpc

from benchmarks.bundle import write_bundle
from benchmarks.load import Call, drive
from benchmarks.processes import Server, free_port, reset_peak_rss
from grpc_model.src.auto_generated.model2_template import model_pb2 as modzy
from grpc_model.src.auto_generated.model2_template.model_pb2_grpc import ModzyModelStub
from grpc_model.src.auto_generated.v2 import grpc_predict_v2_pb2 as v2
from grpc_model.src.auto_generated.v2.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub
from grpc_model.src.metadata import load_bundle, slug

ROOT = Path(__file__).resolve().parent.parent
PAYLOAD_BYTES = 50 * 1024 * 1024
MESSAGE_LIMIT = 300 * 1024 * 1024
GRPC_FRONT_ENDS = ("ModzyModel Run", "V2 ModelInfer raw", "V2 ModelInfer contents")
REST = "V2 REST binary"
"""POST /v2/models/NAME/infer with the file as binary data, the answer asked as binary data too."""
FRONT_ENDS = (*GRPC_FRONT_ENDS, REST)
TARGET = 4.0
"""Copies of the payload per call in flight that the server may hold at its peak (issue 23)."""
SAMPLE_SECONDS = 0.001


@dataclass
class Point:
    front_end: str
    concurrency: int
    calls: int
    errors: int
    idle_rss_mb: float
    peak_rss_mb: float

    @property
    def ratio(self) -> float:
        return (self.peak_rss_mb - self.idle_rss_mb) * 1024 * 1024 / (self.concurrency * PAYLOAD_BYTES)


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    return 0


def rss_mb(pid: int) -> float:
    return _status_kb(pid, "VmRSS:") / 1024


@contextlib.contextmanager
def sampled_peak(pid: int, peak: list[float]) -> Iterator[None]:
    """Fills `peak[0]` with the process's peak RSS in MB while the block runs: VmHWM (reset on entry), and RSS
    sampled by a thread every SAMPLE_SECONDS in case the kernel's mark cannot be reset."""
    reset_peak_rss([pid])
    done = threading.Event()

    def sample() -> None:
        while not done.wait(SAMPLE_SECONDS):
            peak[0] = max(peak[0], rss_mb(pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield
    finally:
        done.set()
        sampler.join()
        peak[0] = max(peak[0], _status_kb(pid, "VmHWM:") / 1024)


def callers(channel: grpc.aio.Channel, model: str, payload: bytes) -> dict[str, Call]:
    """One echo call per gRPC front end, answering whether the same bytes came back."""
    run_request = modzy.RunRequest(inputs=[modzy.InputItem(input={"input.bin": payload})])
    tensor = v2.ModelInferRequest.InferInputTensor
    raw_request = v2.ModelInferRequest(
        model_name=model,
        inputs=[tensor(name="input.bin", datatype="BYTES", shape=[1])],
        raw_input_contents=[len(payload).to_bytes(4, "little") + payload],
    )
    contents = v2.InferTensorContents(bytes_contents=[payload])
    contents_request = v2.ModelInferRequest(
        model_name=model, inputs=[tensor(name="input.bin", datatype="BYTES", shape=[1], contents=contents)]
    )
    modzy_stub, v2_stub = ModzyModelStub(channel), GRPCInferenceServiceStub(channel)

    async def run() -> bool:
        response = await modzy_stub.Run(run_request, timeout=120)
        return response.outputs[0].output["output.bin"] == payload

    async def infer_raw() -> bool:
        response = await v2_stub.ModelInfer(raw_request, timeout=120)
        return response.raw_output_contents[0][4:] == payload

    async def infer_contents() -> bool:
        response = await v2_stub.ModelInfer(contents_request, timeout=120)
        return response.outputs[0].contents.bytes_contents[0] == payload

    return dict(zip(GRPC_FRONT_ENDS, (run, infer_raw, infer_contents), strict=True))


def rest_caller(session: aiohttp.ClientSession, url: str, payload: bytes) -> Call:
    """One echo over REST: the file as binary data (a 4-byte length, then the file), the answer asked the same."""
    size = len(payload) + 4
    header = json.dumps({
        "inputs": [{"name": "input.bin", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": size}}],
        "outputs": [{"name": "output.bin", "parameters": {"binary_data": True}}],
    }).encode()  # fmt: skip
    body = header + len(payload).to_bytes(4, "little") + payload
    headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))}

    async def infer() -> bool:
        async with session.post(url, data=body, headers=headers) as response:
            answer = await response.read()
            return response.status == 200 and answer.endswith(payload)

    return infer


async def front_end_points(
    front_end: str, bundle: Path, env: dict[str, str], concurrencies: list[int], seconds: float, payload: bytes
) -> list[Point]:
    """A fresh server: its idle RSS after a first small call, then one point per concurrency."""
    http_port = free_port()
    command = [
        sys.executable, "-m", "grpc_model.src.model_server", "--host", "127.0.0.1",
        "--model-class", "benchmarks.models:Echo", "--asset-bundle-dir", str(bundle),
        "--max-receive-message-bytes", str(MESSAGE_LIMIT), "--max-send-message-bytes", str(MESSAGE_LIMIT),
        "--log-level", "WARNING", "--http", "on" if front_end == REST else "off", "--http-port", str(http_port),
    ]  # fmt: skip
    server = Server(command, env, f"payloads-{front_end.replace(' ', '-')}")
    options = [("grpc.max_receive_message_length", MESSAGE_LIMIT), ("grpc.max_send_message_length", MESSAGE_LIMIT)]
    points = []
    model = slug(load_bundle(bundle).spec.name)
    try:
        async with (
            grpc.aio.insecure_channel(server.target, options=options) as channel,
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session,
        ):
            await ModzyModelStub(channel).Status(modzy.StatusRequest(), timeout=120)  # loads the model
            url = f"http://127.0.0.1:{http_port}/v2/models/{model}/infer"
            small = (
                rest_caller(session, url, b"x" * 64) if front_end == REST else callers(channel, model, b"x")[front_end]
            )
            assert await small(), f"{front_end} did not echo a small payload"
            idle = rss_mb(server.process.pid)
            call = (
                rest_caller(session, url, payload) if front_end == REST else callers(channel, model, payload)[front_end]
            )
            for concurrency in concurrencies:
                peak = [0.0]

                @contextlib.asynccontextmanager
                async def window() -> AsyncIterator[None]:
                    with sampled_peak(server.process.pid, peak):  # noqa: B023 (used before the loop goes on)
                        yield

                load = await drive(call, concurrency, seconds, window=window)
                points.append(Point(front_end, concurrency, load.calls, load.errors, round(idle, 1), round(peak[0], 1)))
    finally:
        server.stop()
    return points


async def measure(
    env: dict[str, str],
    rounds: int = 3,
    seconds: float = 3.0,
    concurrencies: tuple[int, ...] = (1, 8),
    front_ends: tuple[str, ...] = FRONT_ENDS,
    report: Callable[[Point], None] = lambda point: None,
) -> list[Point]:
    """Every front end at every concurrency, `rounds` times, front ends in turns; `report` hears of each point."""
    payload = os.urandom(1024) * (PAYLOAD_BYTES // 1024)
    points = []
    with tempfile.TemporaryDirectory() as directory:
        bundle = write_bundle(Path(directory))
        for _ in range(rounds):
            for front_end in front_ends:
                for point in await front_end_points(front_end, bundle, env, list(concurrencies), seconds, payload):
                    report(point)
                    points.append(point)
    return points


def medians(points: list[Point]) -> dict[tuple[str, int], float]:
    """Each (front end, concurrency)'s median ratio over the rounds."""
    groups: dict[tuple[str, int], list[float]] = {}
    for point in points:
        groups.setdefault((point.front_end, point.concurrency), []).append(point.ratio)
    return {key: statistics.median(ratios) for key, ratios in groups.items()}


def markdown(points: list[Point]) -> str:
    lines = [
        f"| 50 MiB echo | calls in flight | (peak - idle RSS) / (calls x payload), median | rounds | "
        f"idle RSS MB | peak RSS MB | target <= {TARGET:g} |",
        "|---|---:|---:|---|---:|---:|---|",
    ]
    for (front_end, concurrency), ratio in medians(points).items():
        group = [p for p in points if (p.front_end, p.concurrency) == (front_end, concurrency)]
        each = ", ".join(f"{p.ratio:.2f}" for p in group)
        idle = statistics.median(p.idle_rss_mb for p in group)
        peak = statistics.median(p.peak_rss_mb for p in group)
        met = "yes" if ratio <= TARGET else "**no**"
        lines.append(f"| {front_end} | {concurrency} | {ratio:.2f} | {each} | {idle:.1f} | {peak:.1f} | {met} |")
    errors = sum(p.errors for p in points)
    if errors:
        lines.append(f"\n{errors} calls failed or answered other bytes: see /tmp/grpc-model-bench/payloads-*.log")
    return "\n".join(lines) + "\n"


def print_point(point: Point) -> None:
    print(
        f"{point.front_end:24} c={point.concurrency:<2} calls {point.calls:>4} errors {point.errors} "
        f"idle {point.idle_rss_mb:>7} MB peak {point.peak_rss_mb:>7} MB ratio {point.ratio:.2f}",
        flush=True,
    )


async def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.payloads", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="servers per front end, in turns (default 3)")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per point (default 3)")
    parser.add_argument("--concurrencies", default="1,8", help="comma-separated (default 1,8)")
    parser.add_argument("--front-ends", default=",".join(FRONT_ENDS), help="comma-separated, of the table's")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    concurrencies = tuple(int(value) for value in args.concurrencies.split(","))
    front_ends = tuple(args.front_ends.split(","))
    points = await measure(env, args.rounds, args.duration, concurrencies, front_ends, print_point)
    print(markdown(points))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
