"""V2 REST against a bare FastAPI route, REST against gRPC on one device, and the cold start: one run.

    scripts/bench.py --profiles rest,cold-start [--duration S]
    python -m benchmarks.rest_cost [--duration S] [--rounds N] [--runs N] [--before DIR]

- **echo, c=32**: this server (defaults: metrics on, validation on, HTTP on; the Echo model) and
  `benchmarks/bare_rest.py` (a FastAPI route on uvicorn that parses the same V2 JSON and echoes it) side by
  side, driven in turns, round after round, by 32 aiohttp callers with one kept-alive connection each. The
  figure is the server's CPU per request (its process tree's user + system time over the window).
- **device, c=64** (20 ms per batch call of up to 32 items, one at a time): the same server's V2 REST and
  V2 gRPC in turns; the figure is items/s.
- **cold start**: from spawning the example server (`--load-model-at-startup`, every other setting its
  default: HTTP on) to its first health answer SERVING, polled every 5 ms over one channel once the port
  accepts connections, with the server's CPU time by then and the time to its first HTTP answer; the median
  of several runs, with and without HTTP and without bytecode, interleaved run by run.

`--before DIR` adds the server of another checkout (`git archive COMMIT | tar -x -C DIR`) to every turn, for
a before-and-after comparison measured in the same run. Medians over the rounds; each ratio also as the
median of the rounds' own ratios (two measurements seconds apart), so that the drift of a shared machine
hits both sides alike.
"""

import argparse
import asyncio
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from benchmarks.load import drive
from benchmarks.models import calibrate_cpu_iterations
from benchmarks.peers import ours
from benchmarks.peers.calls import Caller, v2_rest_caller
from benchmarks.peers.probes import http_ready
from benchmarks.peers.profiles import PROFILES
from benchmarks.processes import LOGS, Launched, Usage, cpu_seconds, free_port, stop_all, usage_window
from benchmarks.report import Point, fill
from grpc_model.src.metadata import load_bundle, slug
from grpc_model.src.settings import PROJECT_ROOT

ECHO_CONCURRENCY = 32
DEVICE_CONCURRENCY = 64
BARE = "bare FastAPI"
OURS = "grpc-model"
BEFORE = "grpc-model before"
TARGETS = {  # ratio: (what, goal)
    "echo_cpu": ("echo c=32: server CPU/request, REST / bare FastAPI", "<= 1.5"),
    "device_items": ("device c=64: items/s, REST / gRPC", ">= 0.97 (the same)"),
}
COLD_START_GOAL_S = 0.5


@dataclass
class Turn(Point):
    client_cpu_us_per_request: float = 0.0
    """The load generator's own CPU per call (this process), which shares the machine's cores with the server."""


async def _turn(caller: Caller, pid: int, concurrency: int, seconds: float) -> Turn:
    usage = Usage()
    client: list[float] = []
    server_window = usage_window(pid, usage)

    @contextlib.asynccontextmanager
    async def window() -> AsyncIterator[None]:
        started = time.process_time()
        async with server_window():
            yield
        client.append(time.process_time() - started)

    async with caller(concurrency) as call:
        load = await drive(call, concurrency, seconds, window=window)
    point = Turn("rest", "", concurrency)
    fill(point, load, usage)
    point.client_cpu_us_per_request = round(client[0] / load.calls * 1e6, 1) if load.calls else 0.0
    return point


def _bare(model: str) -> tuple[Launched, Caller]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "benchmarks.bare_rest", "--port", str(port)]
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    return Launched(command, "bare-rest", http_ready(f"{base}/v2/health/ready"), env), v2_rest_caller(base, model)


def _summary(turns: list[Turn]) -> dict[str, Any]:
    def median(metric: str) -> float:
        return round(float(statistics.median(getattr(p, metric) for p in turns)), 2)

    metrics = ("requests_per_s", "items_per_s", "p50_ms", "p99_ms", "cpu_us_per_request", "client_cpu_us_per_request")
    return {
        **{metric: median(metric) for metric in metrics},
        "errors": sum(p.errors for p in turns),
        "rounds": [[p.items_per_s, p.cpu_us_per_request] for p in turns],
    }


def _ratio(over: list[Turn], under: list[Turn], metric: str) -> dict[str, float]:
    tops, bottoms = [getattr(p, metric) for p in over], [getattr(p, metric) for p in under]
    paired = [top / bottom for top, bottom in zip(tops, bottoms, strict=True) if bottom]
    return {
        "of_medians": round(statistics.median(tops) / (statistics.median(bottoms) or 1), 3),
        "median_of_rounds": round(statistics.median(paired), 3) if paired else 0.0,
    }


async def rest_against_bare(
    seconds: float, rounds: int, cpu_iterations: int, before: Path | None = None
) -> dict[str, Any]:
    """Echo over REST, this server and the bare route in turns; then the device profile over REST and gRPC."""
    roots = {OURS: PROJECT_ROOT, **({BEFORE: before} if before else {})}
    echo_turns: dict[str, list[Turn]] = {name: [] for name in [*roots, BARE]}
    device_turns: dict[str, list[Turn]] = {f"{name} V2 {p}": [] for name in roots for p in ("REST", "gRPC")}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-rest-") as directory:
            scratch = Path(directory)
            servers = {name: ours.start(PROFILES["echo"], "default", scratch / name, cpu_iterations, root)
                       for name, root in roots.items()}  # fmt: skip
            bare, bare_caller = _bare(slug(load_bundle(scratch / OURS / "bundle").spec.name))
            for _ in range(rounds):
                for name, started in servers.items():
                    caller = started.callers["V2 REST"]
                    echo_turns[name].append(await _turn(caller, started.server.pid, ECHO_CONCURRENCY, seconds))
                echo_turns[BARE].append(await _turn(bare_caller, bare.pid, ECHO_CONCURRENCY, seconds))
            stop_all()
            servers = {name: ours.start(PROFILES["device"], "default", scratch / f"{name}-device", cpu_iterations,
                                        root) for name, root in roots.items()}  # fmt: skip
            for round_ in range(rounds):
                for name, started in servers.items():
                    for protocol in ("REST", "gRPC") if round_ % 2 == 0 else ("gRPC", "REST"):  # neither always first
                        caller = started.callers[f"V2 {protocol}"]
                        point = await _turn(caller, started.server.pid, DEVICE_CONCURRENCY, seconds)
                        device_turns[f"{name} V2 {protocol}"].append(point)
    finally:
        stop_all()
    ratios = {}
    for name in roots:
        ratios[f"{name}: echo_cpu"] = _ratio(echo_turns[name], echo_turns[BARE], "cpu_us_per_request")
        device = (device_turns[f"{name} V2 REST"], device_turns[f"{name} V2 gRPC"])
        ratios[f"{name}: device_items"] = _ratio(*device, "items_per_s")
    return {
        "seconds": seconds,
        "rounds": rounds,
        "echo_c32": {name: _summary(turns) for name, turns in echo_turns.items()},
        "device_c64": {name: _summary(turns) for name, turns in device_turns.items()},
        "ratios": ratios,
    }


def cold_start_s(
    flags: tuple[str, ...] = (), root: Path = PROJECT_ROOT, bytecode: Path | None = None
) -> tuple[float, float, float | None]:
    """Seconds from spawning the example server of the checkout at `root` to its first health answer SERVING, the
    server's CPU seconds by then (what a loaded machine disturbs least), and seconds to its first HTTP answer.

    `bytecode` is the folder the server's bytecode is read from and written to (PYTHONPYCACHEPREFIX); without it,
    none is read or written: every module imported is compiled at start."""
    cache = {"PYTHONPYCACHEPREFIX": str(bytecode), "PYTHONDONTWRITEBYTECODE": ""} if bytecode else {}
    nothing = {"PYTHONPYCACHEPREFIX": str(Path(tempfile.gettempdir()) / "no-bytecode"), "PYTHONDONTWRITEBYTECODE": "1"}
    env = {**os.environ, "PYTHONPATH": str(root), "GRPC_MODEL_METRICS_PORT": "0", **(cache or nothing)}
    LOGS.mkdir(parents=True, exist_ok=True)
    port, http_port = free_port(), free_port()
    command = [sys.executable, "-m", "grpc_model.src.model_server", "--host", "127.0.0.1", "--port", str(port),
               "--http-port", str(http_port), "--load-model-at-startup", *flags]  # fmt: skip
    with open(LOGS / "cold-start.log", "wb") as log:
        started = time.monotonic()
        process = subprocess.Popen(command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_serving(port, process)
        serving, cpu = time.monotonic() - started, cpu_seconds([process.pid])
        if "off" in flags:
            return serving, cpu, None
        ready = http_ready(f"http://127.0.0.1:{http_port}/v2/health/live")
        while not ready():
            time.sleep(0.005)
        return serving, cpu, time.monotonic() - started
    finally:
        process.terminate()
        process.wait(timeout=30)


def _wait_serving(port: int, process: "subprocess.Popen[bytes]", timeout: float = 60) -> None:
    """Returns at the first SERVING. A new gRPC channel backs off for a second after a refused connection, so
    the port is polled with plain connects first."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the example server did not start; see {LOGS / 'cold-start.log'}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.005)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                answer = health.Check(health_pb2.HealthCheckRequest(), timeout=1, wait_for_ready=True)
            except grpc.RpcError:  # a loaded machine: a start without bytecode may not answer within a second
                continue
            if answer.status == health_pb2.HealthCheckResponse.SERVING:
                return
            time.sleep(0.005)
    raise RuntimeError("the example server was not SERVING in time")


def cold_start(runs: int = 5, before: Path | None = None) -> dict[str, Any]:
    """Medians of the cold start as it ships (HTTP on), with `--http off`, and with no bytecode, the configurations
    interleaved run by run.

    Bytecode is compiled once per checkout by a first start, into a folder of the benchmark's own: every module
    then starts from bytecode, as in the image (Dockerfile) and in a package installed by pip, whatever the
    development environment's PYTHONDONTWRITEBYTECODE and its venv's state. "no bytecode" compiles every module
    at start, as the image did before it compiled its bytecode at build."""
    roots = {OURS: PROJECT_ROOT, **({BEFORE: before} if before else {})}
    flags = {"default (HTTP on)": (), "--http off": ("--http", "off")}
    timings: dict[str, list[tuple[float, float, float | None]]] = {
        f"{n}, {w}": [] for n in roots for w in [*flags, "default, no bytecode"]
    }
    with tempfile.TemporaryDirectory(prefix="bench-bytecode-") as directory:
        caches = {name: Path(directory) / name.replace(" ", "-") for name in roots}
        for name, root in roots.items():
            for extra in flags.values():
                cold_start_s(extra, root, caches[name])
        for _ in range(runs):
            for name, root in roots.items():
                for what, extra in flags.items():
                    timings[f"{name}, {what}"].append(cold_start_s(extra, root, caches[name]))
                timings[f"{name}, default, no bytecode"].append(cold_start_s((), root))
    summary = {}
    for name, runs_of in timings.items():
        https = [http for _, _, http in runs_of if http is not None]
        summary[name] = {
            "serving_s": round(statistics.median(serving for serving, _, _ in runs_of), 3),
            "cpu_s": round(statistics.median(cpu for _, cpu, _ in runs_of), 3),
            "http_s": round(statistics.median(https), 3) if https else None,
            "runs_serving_s": [round(serving, 3) for serving, _, _ in runs_of],
        }
    return summary


def markdown(rest: dict[str, Any] | None, cold: dict[str, Any] | None) -> list[str]:
    lines: list[str] = []
    if rest is not None:
        lines += [
            "",
            f"| V2 REST, median of {rest['rounds']} interleaved rounds | conc. | req/s | items/s | p50 ms | p99 ms "
            "| server CPU µs/req | load generator CPU µs/req | errors |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for key, profile, concurrency in (("echo_c32", "echo", 32), ("device_c64", "device", 64)):
            for name, s in rest[key].items():
                figures = [s[m] for m in ("requests_per_s", "items_per_s", "p50_ms", "p99_ms", "cpu_us_per_request",
                                          "client_cpu_us_per_request")]  # fmt: skip
                lines.append(f"| {profile}: {name} | {concurrency} | {' | '.join(map(str, figures))} | {s['errors']} |")
        lines += ["", "| target | of the medians | median of the rounds' ratios | goal |", "|---|---:|---:|---|"]
        for name, ratio in rest["ratios"].items():
            server, target = name.rsplit(": ", 1)
            what, goal = TARGETS[target]
            lines.append(f"| {server}, {what} | {ratio['of_medians']} | {ratio['median_of_rounds']} | {goal} |")
    if cold is not None:
        lines += [
            "",
            f"| cold start, example model (goal: SERVING within {COLD_START_GOAL_S} s) | to SERVING s | "
            "server CPU by then s | to the first HTTP answer s | runs, to SERVING s |",
            "|---|---:|---:|---:|---|",
        ]
        for name, c in cold.items():
            runs = ", ".join(map(str, c["runs_serving_s"]))
            lines.append(f"| {name} | {c['serving_s']} | {c['cpu_s']} | {c['http_s'] or ''} | {runs} |")
    return lines


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per turn (default 3)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=5, help="cold starts per configuration")
    parser.add_argument("--before", type=Path, help="another checkout of this project, measured beside this one")
    parser.add_argument("--skip", choices=("rest", "cold-start"), help="leave one part out")
    args = parser.parse_args()
    rest = None
    if args.skip != "rest":
        rest = await rest_against_bare(args.duration, args.rounds, calibrate_cpu_iterations(), args.before)
    cold = None if args.skip == "cold-start" else cold_start(args.runs, args.before)
    print("\n".join(markdown(rest, cold)))


if __name__ == "__main__":
    asyncio.run(main())
