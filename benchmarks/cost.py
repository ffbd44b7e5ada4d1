"""What observability costs on the per-call path: echo at c=32, server CPU per request.

`scripts/bench.py --profiles cost` runs four servers side by side and measures them in turns,
round after round, so that the machine's drift hits all of them alike; each figure is the median
over the rounds. CPU is the server process's utime + stime from /proc/<pid>/stat, read before
and after each measurement (the echo model runs in the server process: there are no workers).

- bare: benchmarks/bare_server.py, a plain grpc.aio servicer that returns the input;
- engine, metrics off: this server with `--no-metrics`;
- engine: this server as it ships (metrics on, log level INFO);
- engine, access lines: the same at `--log-level DEBUG`, which logs one access line per call;
- engine, model on the event loop: the same echo declaring `run_on_event_loop = True`, which runs
  its calls on the event loop instead of handing them to a model thread.
"""

import statistics
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from benchmarks.processes import Server

Measure = Callable[[str, int, int, float], Awaitable[tuple[float, float]]]
"""(target, server pid, concurrency, seconds) -> (requests/s, server CPU µs per request)."""

CONCURRENCY = 32
CONFIGS: dict[str, tuple[str, ...]] = {
    "bare": (),
    "engine, metrics off": ("--no-metrics", "--log-level", "WARNING"),
    "engine": ("--log-level", "INFO"),
    "engine, access lines (DEBUG)": ("--log-level", "DEBUG"),
    "engine, model on the event loop": ("--model-class", "benchmarks.models:EchoOnLoop"),
}
TARGETS = (
    ("metrics on / off", "engine", "engine, metrics off", 1.05),
    ("engine / bare", "engine", "bare", 1.2),
    ("access lines / engine", "engine, access lines (DEBUG)", "engine", None),
    ("model on the event loop / bare", "engine, model on the event loop", "bare", 1.2),
)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name).strip("-")


def _command(name: str, bundle: Path) -> list[str]:
    if name == "bare":
        return [sys.executable, "-m", "benchmarks.bare_server", "echo"]
    return [sys.executable, "-m", "grpc_model.src.model_server", "--host", "127.0.0.1",
            "--model-class", "benchmarks.models:Echo", "--asset-bundle-dir", str(bundle),
            "--batch-wait-ms", "0", "--metrics-port", "0", *CONFIGS[name]]  # fmt: skip


async def observability_cost(
    measure: Measure, bundle: Path, env: dict[str, str], seconds: float, rounds: int = 7
) -> dict[str, Any]:
    """Medians over `rounds` turns of `seconds` each: requests/s and server CPU µs per request per configuration."""
    servers = {name: Server(_command(name, bundle), env, "cost-" + _slug(name)) for name in CONFIGS}
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in CONFIGS}
    try:
        for _ in range(rounds):
            for name, server in servers.items():
                runs[name].append(await measure(server.target, server.process.pid, CONCURRENCY, seconds))
    finally:
        for server in servers.values():
            server.stop()
    medians = {
        name: {
            "requests_per_s": round(statistics.median(r for r, _ in values), 1),
            "cpu_us_per_request": round(statistics.median(c for _, c in values), 1),
            "cpu_us_per_request_all": [c for _, c in values],
        }
        for name, values in runs.items()
    }
    return {"concurrency": CONCURRENCY, "rounds": rounds, "seconds": seconds, "configs": medians}


def markdown(cost: dict[str, Any]) -> list[str]:
    configs = cost["configs"]
    lines = [
        "",
        f"| echo c={cost['concurrency']}, median of {cost['rounds']} interleaved rounds | req/s | server CPU µs/req |",
        "|---|---:|---:|",
    ]
    lines += [f"| {name} | {c['requests_per_s']} | {c['cpu_us_per_request']} |" for name, c in configs.items()]
    lines += ["", "| CPU/request ratio | value | goal |", "|---|---:|---|"]
    for label, over, under, goal in TARGETS:
        value = configs[over]["cpu_us_per_request"] / configs[under]["cpu_us_per_request"]
        lines.append(f"| {label} | {value:.3f} | {'' if goal is None else f'<= {goal}'} |")
    return lines
