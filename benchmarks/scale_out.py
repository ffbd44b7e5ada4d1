"""Scale-out and scale-in, measured: replica processes behind the client's round robin.

A device-like model (`SleepBatch`: 20 ms per batch call, one call at a time: `--model-threads 1
--workers 0`) runs in 1, 2 and 4 replica processes on this host; `grpc-model score` spreads calls
over them with gRPC's round robin (`--server a,b,...`). Each call carries one full batch, so a
replica answers at most `BATCH / 20 ms` items/s and N replicas should reach N times one.

Scale-in under load: while the scorer runs against 4 replicas, one replica gets SIGTERM. It drains
what it holds and exits; calls that reach it meanwhile are refused with UNAVAILABLE and sent
again, by gRPC's retry policy or the scorer. Every item must be answered: lost calls must be 0.

Run alone: `python -m benchmarks.scale_out` (prints JSON); scripts/bench.py runs it as the
`scale-out` profile.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.bundle import write_bundle
from benchmarks.processes import Server
from benchmarks.scoring import item_folder, run_scorer
from grpc_model.src.settings import PROJECT_ROOT

REPLICAS = (1, 2, 4)
BATCH = 4  # items per call and the bundle's maxBatchSize: one call, one 20 ms model call
IN_FLIGHT_PER_REPLICA = 4  # calls waiting at each replica, so that none idles between calls
ITEMS_PER_REPLICA_SECOND = BATCH / 0.020
RETRIED = re.compile(r"(\d+) call\(s\) retried")


def start_replicas(count: int, bundle: Path, env: dict[str, str]) -> list[Server]:
    command = [
        sys.executable, "-m", "grpc_model.src.model_server", "--host", "127.0.0.1",
        "--model-class", "benchmarks.models:SleepBatch", "--asset-bundle-dir", str(bundle),
        "--model-threads", "1", "--workers", "0", "--load-model-at-startup", "--log-level", "WARNING",
    ]  # fmt: skip
    replicas: list[Server] = []
    try:
        for number in range(count):
            replicas.append(Server(command, env, f"scale-out-{count}-{number}"))
    except BaseException:
        stop(replicas)
        raise
    return replicas


def stop(replicas: list[Server]) -> None:
    for replica in replicas:
        if replica.process.poll() is None:
            replica.stop()


def throughput(replicas: int, bundle: Path, env: dict[str, str], seconds: float, work: Path) -> dict[str, float]:
    """The scorer's items/s over `replicas` replicas, for about `seconds`."""
    items = item_folder(work / f"in-{replicas}", int(ITEMS_PER_REPLICA_SECOND * replicas * seconds), b"x" * 64)
    servers = start_replicas(replicas, bundle, env)
    try:
        targets = ",".join(server.target for server in servers)
        result = run_scorer(targets, items, work / f"out-{replicas}.jsonl", BATCH, IN_FLIGHT_PER_REPLICA * replicas)
    finally:
        stop(servers)
    return {"replicas": replicas, **result}


def scale_in(bundle: Path, env: dict[str, str], seconds: float, work: Path, replicas: int = 4) -> dict[str, Any]:
    """SIGTERM to one of `replicas` while the scorer runs; what was answered, retried and lost."""
    count = int(ITEMS_PER_REPLICA_SECOND * replicas * seconds)
    items = item_folder(work / "in-scale-in", count, b"x" * 64)
    out = work / "out-scale-in.jsonl"
    servers = start_replicas(replicas, bundle, env)
    try:
        command = [sys.executable, "-m", "grpc_model", "score", str(items), "--out", str(out),
                   "--server", ",".join(server.target for server in servers),
                   "--batch-size", str(BATCH), "--concurrency", str(IN_FLIGHT_PER_REPLICA * replicas)]  # fmt: skip
        scorer = subprocess.Popen(
            command, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        deadline = time.monotonic() + 120
        while _answered(out) < count // 4 and scorer.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # a benchmark's pacing, not a test's synchronisation
        answered_before = _answered(out)
        victim = servers[0]
        victim.process.send_signal(signal.SIGTERM)
        victim_exit = victim.process.wait(timeout=60)
        output, _ = scorer.communicate(timeout=600)
    finally:
        stop(servers)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    succeeded = sum(bool(line["success"]) for line in lines)
    retried = RETRIED.search(" ".join(output.split()))
    return {
        "replicas": replicas,
        "items": count,
        "answered_before_sigterm": answered_before,
        "succeeded": succeeded,
        "failed": len(lines) - succeeded,
        "lost": count - succeeded,
        "scorer_retries": int(retried[1]) if retried else 0,
        "scorer_exit": scorer.returncode,
        "replica_exit_on_sigterm": victim_exit,
    }


def _answered(out: Path) -> int:
    try:
        return out.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def measure(env: dict[str, str], seconds: float) -> dict[str, Any]:
    """Every replica count, then scale-in; the efficiency of N replicas is items/s / (N x one replica's)."""
    work = Path(tempfile.mkdtemp(prefix="bench-scale-out-"))
    try:
        return _measure(env, seconds, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _measure(env: dict[str, str], seconds: float, work: Path) -> dict[str, Any]:
    bundle = write_bundle(work / "bundle", max_batch_size=BATCH)
    points = [throughput(replicas, bundle, env, seconds, work) for replicas in REPLICAS]
    one = points[0]["items_per_s"]
    for point in points:
        point["of_linear"] = round(point["items_per_s"] / (point["replicas"] * one), 3)
        print(f"scale-out  replicas={point['replicas']}  {point['items_per_s']:>8.1f} items/s  "
              f"{point['of_linear']:.0%} of linear", flush=True)  # fmt: skip
    drained = scale_in(bundle, env, seconds, work)
    print(f"scale-in   SIGTERM to 1 of {drained['replicas']} under load: {drained['succeeded']} of "
          f"{drained['items']} answered, {drained['lost']} lost, {drained['scorer_retries']} retried by the scorer",
          flush=True)  # fmt: skip
    return {"model_seconds_per_call": 0.020, "batch": BATCH, "points": points, "scale_in": drained}


def markdown(result: dict[str, Any]) -> str:
    rows = ["| replicas | items/s | of linear (N x one replica) |", "|---|---|---|"]
    rows += [f"| {p['replicas']} | {p['items_per_s']:.1f} | {p['of_linear']:.0%} |" for p in result["points"]]
    drained = result["scale_in"]
    rows += [
        "",
        "| scale-in under load | |",
        "|---|---|",
        f"| items sent / answered successfully | {drained['items']} / {drained['succeeded']} |",
        f"| lost | **{drained['lost']}** |",
        f"| calls retried by the scorer (after gRPC's own retries) | {drained['scorer_retries']} |",
        f"| the stopped replica's exit code | {drained['replica_exit_on_sigterm']} |",
    ]
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    measured = measure(
        {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}, float(sys.argv[1]) if len(sys.argv) > 1 else 5.0
    )
    print(json.dumps(measured, indent=2))
    print(markdown(measured))
