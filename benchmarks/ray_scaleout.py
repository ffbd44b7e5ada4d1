"""Ray Serve scale-out: 1 against 2 replicas in the same run, and what Ray costs per call.

    python -m benchmarks.ray_scaleout [--seconds S] [--out FILE]     (as root; needs the `ray` group)

The model is a device: 20 ms per batch call, one call at a time per replica (benchmarks.models
SleepBatch, one model thread), with `maxBatchSize` 8. Throughput: 8 callers, each sending calls
of 8 items, so one call is one batch and the replicas are the bottleneck, not Ray's proxy. Cost
per call: one caller sending one item, against the standalone server with the same model. Ray
CPU is that of every process in the namespace but the load generator (proxy, replicas, raylet,
GCS, controller, the `grpc-model ray-serve` driver); the server's is its process tree.

Ray binds every interface, so the whole run happens in a private network and PID namespace
(grpc_model/tests/ray_cluster.py): this module starts itself again inside one.
"""

import argparse
import asyncio
import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc

from benchmarks import load as load_driver
from benchmarks.bundle import write_bundle
from benchmarks.processes import LOGS, Server, cpu_seconds, process_tree
from grpc_model.src.auto_generated.model2_template import model_pb2 as pb
from grpc_model.src.auto_generated.model2_template.model_pb2_grpc import ModzyModelStub
from grpc_model.src.client import ModelClient
from grpc_model.src.settings import PROJECT_ROOT
from grpc_model.tests.ray_cluster import LocalRay, in_namespace, namespace_problem, wait_for

BATCH = 8  # items per call and maxBatchSize: one call is one batch call of the model
CALLERS = 8
RAY_PORT = 45000
MODEL = ["--model-class", "benchmarks.models:SleepBatch"]
INSIDE = "--inside-namespace"


@dataclass
class Point:
    name: str
    callers: int
    items_per_call: int
    calls: int = 0
    errors: int = 0
    items_per_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    cpu_ms_per_call: float = 0.0


async def drive(target: str, point: Point, seconds: float, cpu_pids: Callable[[], list[int]]) -> Point:
    """`point.callers` callers sending calls of `point.items_per_call` items for `seconds`, after a warm-up."""
    request = pb.RunRequest(inputs=[pb.InputItem(input={"input.bin": b"x" * 64})] * point.items_per_call)
    cpu_used = 0.0

    @contextlib.asynccontextmanager
    async def counting_cpu() -> AsyncIterator[None]:
        nonlocal cpu_used
        before = cpu_seconds(cpu_pids())
        yield
        cpu_used = cpu_seconds(cpu_pids()) - before

    async with grpc.aio.insecure_channel(target) as channel:
        stub = ModzyModelStub(channel)

        async def call() -> bool:
            response = await stub.Run(request, timeout=120)
            return all(output.success for output in response.outputs)

        load = await load_driver.drive(call, point.callers, seconds, warmup_seconds=2.0, window=counting_cpu)
    point.calls, point.errors = load.calls, load.errors
    point.items_per_s = round(point.calls * point.items_per_call / load.seconds, 1)
    point.p50_ms = round(load.latencies[point.calls // 2] * 1000, 2)
    point.p99_ms = load.quantile_ms(0.99)
    point.cpu_ms_per_call = round(cpu_used / point.calls * 1000, 2)
    print(point, file=sys.stderr, flush=True)
    return point


def namespace_pids() -> list[int]:
    """Every process of the PID namespace but this one (the load generator): all of them are Ray's here."""
    return [
        int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit() and int(entry.name) != os.getpid()
    ]


class RayApp:
    """`grpc-model ray-serve` with `replicas` replicas of the bench model, answering once `__init__` returns."""

    def __init__(self, cluster: LocalRay, bundle: Path, replicas: int) -> None:
        self.log = LOGS / f"ray-serve-{replicas}.log"
        LOGS.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "grpc_model", "ray-serve", "--port", str(RAY_PORT),
                   "--asset-bundle-dir", str(bundle), "--ray-replicas", str(replicas), *MODEL]  # fmt: skip
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                command, cwd=PROJECT_ROOT, env={**os.environ, "RAY_ADDRESS": cluster.address}, stdout=log, stderr=log
            )
        wait_for(lambda: self.process.poll() is not None or b"serving " in self.log.read_bytes(), "ray-serve", 600)
        if self.process.poll() is not None:
            raise RuntimeError(f"grpc-model ray-serve exited with {self.process.returncode}; see {self.log}")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=180)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


async def measure(seconds: float) -> list[Point]:
    points = []
    with tempfile.TemporaryDirectory() as scratch:
        bundle = write_bundle(Path(scratch), max_batch_size=BATCH)
        command = [sys.executable, "-m", "grpc_model.src.model_server", "--host", "127.0.0.1", "--log-level", "WARNING",
                   "--asset-bundle-dir", str(bundle), "--load-model-at-startup", *MODEL]  # fmt: skip
        server = Server(command, dict(os.environ), "ray-scaleout-plain")
        try:
            tree = functools.partial(process_tree, server.process.pid)
            points.append(await drive(server.target, Point("standalone server", 1, 1), seconds, tree))
            points.append(await drive(server.target, Point("standalone server", CALLERS, BATCH), seconds, tree))
        finally:
            server.stop()
        # Two CPUs on one node: each replica asks for model.yaml's one CPU.
        with LocalRay(nodes=1, cpus=2) as cluster:
            for replicas in (1, 2):
                app = RayApp(cluster, bundle, replicas)
                try:
                    target = f"127.0.0.1:{RAY_PORT}"
                    with ModelClient(target, timeout=60) as client:
                        assert client.status().status_code == 200
                    name = f"Ray Serve, {replicas} replica(s)"
                    if replicas == 1:
                        points.append(await drive(target, Point(name, 1, 1), seconds, namespace_pids))
                    points.append(await drive(target, Point(name, CALLERS, BATCH), seconds, namespace_pids))
                finally:
                    app.stop()
    return points


def markdown(points: list[Point]) -> str:
    lines = [
        "| configuration | callers x items per call | items/s | p50 ms | p99 ms | CPU ms per call | errors |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {p.name} | {p.callers} x {p.items_per_call} | {p.items_per_s:,.0f} | {p.p50_ms:.1f} | {p.p99_ms:.1f} "
        f"| {p.cpu_ms_per_call:.2f} | {p.errors} |"
        for p in points
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="Measured seconds per point.")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "docs/bench/ray_scaleout.json")
    parser.add_argument(INSIDE, action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.inside_namespace:
        problem = namespace_problem()
        if problem:
            print(f"cannot run: {problem}", file=sys.stderr)
            return 2
        inner = [sys.executable, "-m", "benchmarks.ray_scaleout", INSIDE, "--seconds", str(args.seconds)]
        return subprocess.run(in_namespace([*inner, "--out", str(args.out)]), cwd=PROJECT_ROOT, check=False).returncode
    started = time.monotonic()
    points = asyncio.run(measure(args.seconds))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    machine = {"cpus": os.cpu_count(), "load_average": os.getloadavg(), "seconds": round(time.monotonic() - started)}
    args.out.write_text(json.dumps({"machine": machine, "points": [asdict(p) for p in points]}, indent=2) + "\n")
    print(markdown(points))
    return 0


if __name__ == "__main__":
    sys.exit(main())
