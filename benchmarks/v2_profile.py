"""Benchmark: the same server through V2 (ModelInfer) and through ModzyModel (Run), in the same run.

    .venv/bin/python -m benchmarks.v2_profile [--duration S] [--concurrencies 1,32] [--mlserver PATH]

For the echo profile (no work: the protocol's own cost) and the device profile (20 ms per batch call,
GIL released: a GPU-like model), one server process serves both protocols on one port; each point
drives one protocol with plain grpc.aio stubs at a concurrency, one item per call, and records
items/s and the median and p90 latency. Prints a Markdown table (docs/v2.md keeps the last one).
With `--mlserver PATH/bin/mlserver` it also measures MLServer serving the same profiles over V2.
"""

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import grpc

from benchmarks.bundle import write_bundle
from benchmarks.load import Call, drive
from benchmarks.mlserver import MLServer
from benchmarks.processes import Server
from grpc_model.src.auto_generated.model2_template import model_pb2 as modzy
from grpc_model.src.auto_generated.model2_template.model_pb2_grpc import ModzyModelStub
from grpc_model.src.auto_generated.v2 import grpc_predict_v2_pb2 as v2
from grpc_model.src.auto_generated.v2.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub
from grpc_model.src.metadata import load_bundle, slug

PAYLOAD = b"x" * 64
PROFILES = {  # name -> (model class in benchmarks/models.py, server flags)
    "echo": ("Echo", ("--batch-wait-ms", "0")),
    "device": ("SleepBatch", ("--model-threads", "2")),
}


@dataclass
class Point:
    profile: str
    protocol: str
    concurrency: int
    items_per_s: float
    p50_ms: float
    p90_ms: float
    errors: int


def callers(channel: grpc.aio.Channel, model: str) -> dict[str, Call]:
    """One call of each protocol with one item, answering whether it succeeded."""
    run_request = modzy.RunRequest(inputs=[modzy.InputItem(input={"input.bin": PAYLOAD})])
    contents = v2.InferTensorContents(bytes_contents=[PAYLOAD])
    tensor = v2.ModelInferRequest.InferInputTensor(name="input.bin", datatype="BYTES", shape=[1], contents=contents)
    infer_request = v2.ModelInferRequest(model_name=model, inputs=[tensor])
    modzy_stub, v2_stub = ModzyModelStub(channel), GRPCInferenceServiceStub(channel)

    async def run() -> bool:
        response = await modzy_stub.Run(run_request, timeout=60)
        return all(output.success for output in response.outputs)

    async def infer() -> bool:
        response = await v2_stub.ModelInfer(infer_request, timeout=60)
        return len(response.outputs) == 1

    return {"ModzyModel Run": run, "V2 ModelInfer": infer}


async def measure(profile: str, protocol: str, call: Call, concurrency: int, seconds: float) -> Point:
    load = await drive(call, concurrency, seconds)
    latencies = load.latencies
    p50, p90 = statistics.median(latencies), statistics.quantiles(latencies, n=10)[8]
    items_per_s = load.calls / load.seconds
    return Point(
        profile, protocol, concurrency, round(items_per_s, 1), round(p50 * 1000, 2), round(p90 * 1000, 2), load.errors
    )


async def profile_points(
    profile: str, bundle: Path, concurrencies: list[int], seconds: float, mlserver: str | None
) -> list[Point]:
    """grpc-model's points for both protocols, and MLServer's when `mlserver` names its command."""
    model_class, flags = PROFILES[profile]
    command = [
        sys.executable, "-m", "grpc_model.src.model_server", "--host", "127.0.0.1", "--load-model-at-startup",
        "--model-class", f"benchmarks.models:{model_class}", "--asset-bundle-dir", str(bundle),
        "--log-level", "WARNING", *flags,
    ]  # fmt: skip
    points = []
    with tempfile.TemporaryDirectory() as directory:
        server = Server(command, dict(os.environ), f"v2-{profile}")
        other = None
        try:
            other = MLServer(mlserver, profile, Path(directory)) if mlserver else None
            async with (
                grpc.aio.insecure_channel(server.target) as channel,
                grpc.aio.insecure_channel(other.target if other else server.target) as other_channel,
            ):
                calls = callers(channel, slug(load_bundle(bundle).spec.name))
                if other:
                    calls["MLServer ModelInfer"] = callers(other_channel, other.model)["V2 ModelInfer"]
                for concurrency in concurrencies:
                    for protocol, call in calls.items():
                        points.append(await measure(profile, protocol, call, concurrency, seconds))
        finally:
            server.stop()
            if other:
                other.stop()
    return points


def markdown(points: list[Point]) -> str:
    lines = [
        "| profile | concurrency | protocol | items/s | p50 ms | p90 ms | errors |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for p in points:
        lines.append(f"| {p.profile} | {p.concurrency} | {p.protocol} | {p.items_per_s:g} ")
        lines[-1] += f"| {p.p50_ms:g} | {p.p90_ms:g} | {p.errors} |"
    return "\n".join(lines)


async def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.v2_profile", description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per point (default 5)")
    parser.add_argument("--concurrencies", default="1,32", help="comma-separated (default 1,32)")
    parser.add_argument("--profiles", default=",".join(PROFILES), help=f"comma-separated of {', '.join(PROFILES)}")
    parser.add_argument("--mlserver", help="the mlserver command of a venv with MLServer, to measure it too")
    args = parser.parse_args()
    concurrencies = [int(value) for value in args.concurrencies.split(",")]
    points = []
    with tempfile.TemporaryDirectory() as directory:
        bundle = write_bundle(Path(directory))
        for profile in args.profiles.split(","):
            points += await profile_points(profile, bundle, concurrencies, args.duration, args.mlserver)
    print(markdown(points))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
