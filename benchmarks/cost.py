"""What observability costs on the per-call path: echo at c=32, server CPU per request.

`scripts/bench.py --profiles cost` runs five servers side by side and measures them in turns,
round after round, so that the machine's drift hits all of them alike; each figure is the median
over the rounds, and each ratio is given both as the ratio of the medians and as the median of
the ratios within a round (two servers measured seconds apart). CPU is the server process's
utime + stime from /proc/<pid>/stat, read before and after each measurement (the echo model
runs in the server process: there are no workers).

- bare: benchmarks/bare_server.py, a plain grpc.aio servicer that returns the input;
- engine, metrics off: this server with `--no-metrics`;
- engine: this server as it ships (metrics on, log level INFO);
- engine, access lines: the same at `--log-level DEBUG`, which logs one access line per call;
- engine, model on the event loop: the same echo declaring `run_on_event_loop = True`, which runs
  its calls on the event loop instead of handing them to a model thread.
"""

import logging
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from benchmarks.processes import Server
from grpc_model.src.observability import logs
from grpc_model.src.observability.metrics import Metrics
from grpc_model.src.runtime import ItemResult

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


def in_process_us(repeat: int = 50_000) -> dict[str, float]:
    """What one call's metric hooks and one access line cost, timed in this process (µs, best of 5).

    The interleaved server runs cannot resolve a few percent on a shared machine; these can.
    """
    metrics = Metrics("model", "1.0.0")
    results = [ItemResult({"output.bin": b"x"}, success=True)]

    def hooks() -> None:  # what the server records for a one-item Run call served in a batch of one
        for _ in range(repeat):
            metrics.items_arrived(1)
            metrics.waited((0.0001,))
            metrics.batch(1, 0.0001)
            metrics.items_answered(results, 0)
            metrics.call("Run", "OK", 0.001)

    timings = {"metric hooks per call": hooks}
    for log_format in ("text", "json"):
        logger = logging.getLogger(f"bench.access.{log_format}")
        logger.propagate = False
        handler = logging.StreamHandler(open(os.devnull, "w"))  # noqa: SIM115 (closed below)
        handler.setFormatter(logs.JsonFormatter() if log_format == "json" else logs.TextFormatter())
        handler.addFilter(logs.RequestIdFilter())
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)

        def line(logger: logging.Logger = logger) -> None:
            logs.request_id.set("3f9a1c2e-1b")
            for _ in range(repeat):
                logger.debug("Run: %d items (%d failed) in %.1f ms, %.1f items/s", 1, 0, 1.25, 800.0)

        timings[f"access line ({log_format})"] = line
    measured = {}
    for name, run in timings.items():
        best = min(_timed(run) for _ in range(5))
        measured[name] = round(best / repeat * 1e6, 2)
    for log_format in ("text", "json"):
        for each in logging.getLogger(f"bench.access.{log_format}").handlers:
            each.close()
            if isinstance(each, logging.StreamHandler):
                each.stream.close()
    return measured


def _timed(run: Callable[[], None]) -> float:
    started = time.process_time()
    run()
    return time.process_time() - started


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name).strip("-")


def _command(name: str, bundle: Path) -> list[str]:
    if name == "bare":
        return [sys.executable, "-m", "benchmarks.bare_server", "echo"]
    return [sys.executable, "-m", "grpc_model.src.model_server", "--host", "127.0.0.1",
            "--model-class", "benchmarks.models:Echo", "--asset-bundle-dir", str(bundle),
            "--batch-wait-ms", "0", "--metrics-port", "0", *CONFIGS[name]]  # fmt: skip


async def observability_cost(
    measure: Measure, bundle: Path, env: dict[str, str], seconds: float, rounds: int = 9
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
    return {
        "concurrency": CONCURRENCY,
        "rounds": rounds,
        "seconds": seconds,
        "configs": medians,
        "in_process_us": in_process_us(),
    }


def markdown(cost: dict[str, Any]) -> list[str]:
    configs = cost["configs"]
    lines = [
        "",
        f"| echo c={cost['concurrency']}, median of {cost['rounds']} interleaved rounds | req/s | server CPU µs/req |",
        "|---|---:|---:|",
    ]
    lines += [f"| {name} | {c['requests_per_s']} | {c['cpu_us_per_request']} |" for name, c in configs.items()]
    lines += [
        "",
        "| CPU/request ratio | of the medians | median of the rounds' ratios | goal |",
        "|---|---:|---:|---|",
    ]
    for label, over, under, goal in TARGETS:
        value = configs[over]["cpu_us_per_request"] / configs[under]["cpu_us_per_request"]
        pairs = zip(configs[over]["cpu_us_per_request_all"], configs[under]["cpu_us_per_request_all"], strict=True)
        paired = statistics.median(top / bottom for top, bottom in pairs)
        lines.append(f"| {label} | {value:.3f} | {paired:.3f} | {'' if goal is None else f'<= {goal}'} |")
    engine = configs["engine"]["cpu_us_per_request"]
    lines += ["", "| timed in-process, CPU | µs | share of the engine's CPU/request |", "|---|---:|---:|"]
    for name, micros in cost.get("in_process_us", {}).items():
        lines.append(f"| {name} | {micros} | {micros / engine:.1%} |")
    return lines
