"""The per-call path against the bare grpc.aio servicers of the same protocols, measured interleaved.

    python -m benchmarks.percall [--duration S] [--rounds N] [--baseline DIR]
    scripts/bench.py --profiles percall          (part of the default run)

Two servers run side by side for the whole measurement: `benchmarks/bare_server.py` (a bare grpc.aio
servicer of ModzyModel and of V2 `ModelInfer`, echoing, with no validation, metrics, logging or hand-off)
and this server with its default settings (metrics on, input validation on, log level INFO, so the access
lines at DEBUG are off, one model thread), serving `benchmarks.models:Echo`. A third serves the device
profile: `SleepBatch` (20 ms per batch call of up to 32 items) on one model thread, one call at a time.
Each round measures, one after the other, ModzyModel `Run` and V2 `ModelInfer` at c=32 on each echo server,
then the device at c=64, for `--duration` seconds each, so the machine's drift hits them all alike. CPU is
the server process's utime + stime from /proc, read around each window. The figures are medians over the
rounds; a ratio is given both as the ratio of the medians and as the median of the ratios within a round.

`--baseline DIR` adds the same engine servers run from another checkout (a directory holding another
version's `grpc_model/`), in the same rounds: before and after a change, on one loaded machine.
"""

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from benchmarks import v2_profile
from benchmarks.bundle import write_bundle
from benchmarks.load import drive
from benchmarks.processes import Server, Usage, usage_window
from grpc_model.src.metadata import load_bundle, slug
from grpc_model.src.settings import PROJECT_ROOT

ECHO_CONCURRENCY = 32
DEVICE_CONCURRENCY = 64
PROTOCOLS = {"ModzyModel": "ModzyModel Run", "V2 gRPC": "V2 ModelInfer"}
DEVICE_CEILING = 32 / 0.020
"""Items/s of one device taking 20 ms per batch of 32: what no server can pass."""


@dataclass(frozen=True)
class Target:
    label: str
    protocol: str  # engine (or baseline) over bare, on this protocol
    metric: str  # "cpu" (µs per call) or "rate" (calls/s)
    goal: float
    at_most: bool


TARGETS = (
    Target("ModzyModel echo c=32: server CPU/call <= 1.3x bare", "ModzyModel", "cpu", 1.3, True),
    Target("ModzyModel echo c=32: calls/s >= 0.8x bare", "ModzyModel", "rate", 0.8, False),
    Target("V2 gRPC echo c=32: server CPU/call <= 1.4x bare", "V2 gRPC", "cpu", 1.4, True),
)


@dataclass(frozen=True)
class Row:
    """One server and protocol measured each round."""

    name: str
    server: str
    protocol: str
    concurrency: int


def engine_command(bundle: Path, model_class: str, *flags: str) -> list[str]:
    """This server with its defaults but for the model and the ports (metrics on a free port)."""
    return [sys.executable, "-m", "grpc_model.src.model_server", "--host", "127.0.0.1", "--load-model-at-startup",
            "--model-class", f"benchmarks.models:{model_class}", "--asset-bundle-dir", str(bundle), *flags]  # fmt: skip


async def measure(
    target: str, pid: int, protocol: str, model: str, concurrency: int, seconds: float
) -> dict[str, float]:
    """Calls/s, server CPU µs per call, p50 and p99 of one protocol's one-item echo calls at `concurrency`."""
    usage = Usage()
    async with grpc.aio.insecure_channel(target) as channel:
        call = v2_profile.callers(channel, model)[PROTOCOLS[protocol]]
        load = await drive(call, concurrency, seconds, window=usage_window(pid, usage))
    calls = max(load.calls, 1)
    return {
        "calls_per_s": load.calls / load.seconds,
        "cpu_us_per_call": usage.cpu_seconds / calls * 1e6,
        "p50_ms": load.quantile_ms(0.5),
        "p99_ms": load.quantile_ms(0.99),
        "errors": load.errors,
    }


async def per_call(
    env: dict[str, str], seconds: float, rounds: int = 7, baseline: Path | None = None
) -> dict[str, Any]:
    """Medians over `rounds` interleaved rounds of every row (see the module's docstring)."""
    directory = Path(tempfile.mkdtemp(prefix="bench-percall-"))
    bundle = write_bundle(directory)
    model = slug(load_bundle(bundle).spec.name)
    commands: dict[str, tuple[list[str], Path]] = {
        "bare": ([sys.executable, "-m", "benchmarks.bare_server", "echo"], PROJECT_ROOT),
        "engine": (engine_command(bundle, "Echo"), PROJECT_ROOT),
        "device": (engine_command(bundle, "SleepBatch", "--model-threads", "1"), PROJECT_ROOT),
    }
    if baseline is not None:
        commands["baseline"] = (engine_command(bundle, "Echo"), baseline)
        commands["baseline device"] = (engine_command(bundle, "SleepBatch", "--model-threads", "1"), baseline)
    rows = [Row(f"{server} {protocol}", server, protocol, ECHO_CONCURRENCY)
            for server in commands if "device" not in server for protocol in PROTOCOLS]  # fmt: skip
    rows += [Row(server, server, "ModzyModel", DEVICE_CONCURRENCY) for server in commands if "device" in server]
    servers: dict[str, Server] = {}
    runs: dict[str, list[dict[str, float]]] = {row.name: [] for row in rows}
    try:
        for name, (command, cwd) in commands.items():
            server_env = {**env, "PYTHONPATH": str(cwd), "GRPC_MODEL_HTTP_PORT": "0"}  # HTTP on, as by default
            servers[name] = Server(command, server_env, f"percall-{name.replace(' ', '-')}", cwd)
        for number in range(rounds):
            for row in rows:
                server = servers[row.server]
                point = await measure(server.target, server.process.pid, row.protocol, model, row.concurrency, seconds)
                runs[row.name].append(point)
            print(f"percall round {number + 1}/{rounds}: " + ", ".join(
                f"{name} {values[-1]['calls_per_s']:.0f}/s {values[-1]['cpu_us_per_call']:.0f} µs"
                for name, values in runs.items()), flush=True)  # fmt: skip
    finally:
        for server in servers.values():
            server.stop()
    medians = {
        name: {key: round(statistics.median(point[key] for point in values), 2) for key in values[0]}
        for name, values in runs.items()
    }
    return {"rounds": rounds, "seconds": seconds, "medians": medians, "runs": runs}


def _ratios(runs: dict[str, list[dict[str, float]]], over: str, under: str, key: str) -> tuple[float, float]:
    """(ratio of the medians, median of the rounds' ratios) of `key`."""
    tops, bottoms = [p[key] for p in runs[over]], [p[key] for p in runs[under]]
    of_medians = statistics.median(tops) / statistics.median(bottoms)
    return of_medians, statistics.median(top / bottom for top, bottom in zip(tops, bottoms, strict=True))


def markdown(result: dict[str, Any]) -> list[str]:
    medians, runs = result["medians"], result["runs"]
    lines = [
        "",
        f"| per-call path, median of {result['rounds']} interleaved rounds of {result['seconds']:g} s | conc. "
        "| calls/s | server CPU µs/call | p50 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, m in medians.items():
        concurrency = DEVICE_CONCURRENCY if "device" in name else ECHO_CONCURRENCY
        lines.append(f"| {name} | {concurrency} | {m['calls_per_s']:.1f} | {m['cpu_us_per_call']:.1f} | "
                     f"{m['p50_ms']} | {m['p99_ms']} | {m['errors']:g} |")  # fmt: skip
    lines += ["", "| target | of the medians | median of the rounds' ratios | met |", "|---|---:|---:|---|"]
    for prefix in ("engine", "baseline"):
        for target in TARGETS:
            over = f"{prefix} {target.protocol}"
            if over not in runs:
                continue
            key = "cpu_us_per_call" if target.metric == "cpu" else "calls_per_s"
            value, paired = _ratios(runs, over, f"bare {target.protocol}", key)
            label = target.label if prefix == "engine" else f"{target.label} (baseline)"
            met = value <= target.goal if target.at_most else value >= target.goal
            lines.append(f"| {label} | {value:.3f} | {paired:.3f} | {'yes' if met else '**no**'} |")
    for name in (n for n in medians if "device" in n):
        rate, p99 = medians[name]["calls_per_s"], medians[name]["p99_ms"]
        lines.append(f"| {name} c=64: items/s >= 1,550 ({rate / DEVICE_CEILING:.1%} of the ceiling) | {rate:.1f} | "
                     f"| {'yes' if rate >= 1550 else '**no**'} |")  # fmt: skip
        lines.append(f"| {name} c=64: p99 <= 40 ms | {p99} | | {'yes' if p99 <= 40 else '**no**'} |")
    return lines


async def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.percall", description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per row and round (default 3)")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default 7)")
    parser.add_argument("--baseline", type=Path, help="another checkout's root, measured as `baseline` rows")
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args()
    result = await per_call(dict(os.environ), args.duration, args.rounds, args.baseline)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    print("\n".join(markdown(result)))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
