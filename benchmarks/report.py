"""The benchmark's results (scripts/bench.py): their records, the machine they were measured on, the
targets they are checked against, and the Markdown table and plot written to docs/bench/."""

import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from benchmarks import cost, payloads, percall, scale_out
from benchmarks.load import Load
from benchmarks.processes import Usage

CONFIGS = ("engine", "template", "bare")
LARGE_BYTES = 50 * 1024 * 1024
"""The large profile's payload."""


@dataclass
class Point:
    profile: str
    config: str
    concurrency: int
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    requests_per_s: float = 0.0
    items_per_s: float = 0.0
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p99_ms: float = 0.0
    cpu_us_per_request: float = 0.0
    peak_rss_mb: float = 0.0
    peak_pss_mb: float = 0.0


def fill(point: Point, load: Load, usage: Usage, batch: int = 1) -> None:
    """`point`'s measurements from one measured window of calls carrying `batch` items each."""
    count = load.calls
    point.requests, point.errors, point.seconds = count, load.errors, round(load.seconds, 2)
    point.requests_per_s = round(count / load.seconds, 1)
    point.items_per_s = round(count * batch / load.seconds, 1)
    point.p50_ms, point.p90_ms, point.p99_ms = (load.quantile_ms(q) for q in (0.50, 0.90, 0.99))
    point.cpu_us_per_request = round(usage.cpu_seconds / count * 1e6, 1) if count else 0.0
    point.peak_rss_mb, point.peak_pss_mb = round(usage.peak_rss_mb, 1), round(usage.peak_pss_mb, 1)


@dataclass
class Results:
    machine: dict[str, str]
    points: list[Point] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)


def machine() -> dict[str, str]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())  # fmt: skip
    memory = Path("/proc/meminfo").read_text().split()[1]
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "memory": f"{int(memory) // 1024 // 1024} GiB",
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "os": platform.platform(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def find(results: Results, profile: str, config: str, concurrency: int) -> Point | None:
    return next(
        (p for p in results.points if (p.profile, p.config, p.concurrency) == (profile, config, concurrency)), None
    )


def ratio(results: Results, profile: str, concurrency: int, metric: str, over: str, under: str) -> float | None:
    top, bottom = find(results, profile, over, concurrency), find(results, profile, under, concurrency)
    if top is None or bottom is None or not getattr(bottom, metric):
        return None
    return float(getattr(top, metric)) / float(getattr(bottom, metric))


def targets(results: Results) -> list[tuple[str, str, float | None, Callable[[float], bool]]]:
    """(target, measured as, value, check) for each target of the engine issue."""
    cold = results.extras.get("cold_start_s")
    return [
        ("echo c=32: server CPU/request <= 1.2x bare", "engine/bare", ratio(results, "echo", 32, "cpu_us_per_request", "engine", "bare"), lambda v: v <= 1.2),
        ("echo c=32: requests/s >= 0.9x bare", "engine/bare", ratio(results, "echo", 32, "requests_per_s", "engine", "bare"), lambda v: v >= 0.9),
        ("echo c=1: p99 <= 1.3x bare", "engine/bare", ratio(results, "echo", 1, "p99_ms", "engine", "bare"), lambda v: v <= 1.3),
        ("sleep-item c=32: requests/s >= 25x template", "engine/template", ratio(results, "sleep-item", 32, "requests_per_s", "engine", "template"), lambda v: v >= 25),
        ("sleep-batch c=64: items/s >= 25x template", "engine/template", ratio(results, "sleep-batch", 64, "items_per_s", "engine", "template"), lambda v: v >= 25),
        ("sleep-batch c=64: p99 <= 3x 20 ms", "p99 ms / 20", (find(results, "sleep-batch", "engine", 64) or Point("", "", 0)).p99_ms / 20 or None, lambda v: v <= 3),
        ("cpu c=8, 2 workers: >= 1.6x template", "engine/template", ratio(results, "cpu", 8, "requests_per_s", "engine", "template"), lambda v: v >= 1.6),
        ("large c=1: latency <= 1.5x bare", "engine/bare p50", ratio(results, "large", 1, "p50_ms", "engine", "bare"), lambda v: v <= 1.5),
        ("cold start to SERVING <= 0.5 s", "seconds (median of 5)", cold, lambda v: v <= 0.5),
        *payload_targets(results),
    ]  # fmt: skip


def payload_targets(results: Results) -> list[tuple[str, str, float | None, Callable[[float], bool]]]:
    """Issue 23's memory target, per front end and concurrency of the `payloads` profile (benchmarks/payloads.py)."""
    points = [payloads.Point(**point) for point in results.extras.get("payloads", [])]
    return [
        (f"50 MiB echo, {front_end}, c={concurrency}: peak RSS <= {payloads.TARGET:g}x payload per call",
         "(peak - idle RSS) / (calls x payload), median", ratio, lambda v: v <= payloads.TARGET)
        for (front_end, concurrency), ratio in payloads.medians(points).items()
    ]  # fmt: skip


def markdown(results: Results) -> str:
    lines = ["| profile | config | conc. | req/s | items/s | p50 ms | p90 ms | p99 ms | server CPU µs/req | peak RSS MB | peak PSS MB | errors |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for p in results.points:
        lines.append(
            f"| {p.profile} | {p.config} | {p.concurrency} | {p.requests_per_s} | {p.items_per_s} | {p.p50_ms} | "
            f"{p.p90_ms} | {p.p99_ms} | {p.cpu_us_per_request} | {p.peak_rss_mb} | {p.peak_pss_mb} | {p.errors} |"
        )
    lines += ["", "| target | measured as | value | met |", "|---|---|---:|---|"]
    for name, measured_as, value, check in targets(results):
        shown = "n/a" if value is None else f"{value:.2f}"
        met = "n/a" if value is None else ("yes" if check(value) else "**no**")
        lines.append(f"| {name} | {measured_as} | {shown} | {met} |")
    if "one_call_of_256_items_ms" in results.extras:
        lines += [
            "",
            "| one call of 256 items, median of 40 interleaved | engine ms | template ms |",
            "|---|---:|---:|",
        ]
        for name, pair in results.extras["one_call_of_256_items_ms"].items():
            lines.append(f"| {name} | {pair['engine']} | {pair['template']} |")
    if "digits" in results.extras:
        lines += ["", "| digits example, 64 concurrent one-image calls | items/s | p50 ms | p99 ms | server CPU µs/item | peak RSS MB |",
                  "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
        for p in (Point(**point) for point in results.extras["digits"]):
            lines.append(
                f"| {p.config} | {p.items_per_s} | {p.p50_ms} | {p.p99_ms} | {p.cpu_us_per_request} | {p.peak_rss_mb} |"
            )
    if "score" in results.extras:
        score = results.extras["score"]
        lines += ["", "| grpc-model score, 5,000 items, sleep-batch | items/s |", "|---|---:|",
                  f"| closed-loop load generator, 64 calls of 1 item | {score['single_items_per_s']:.1f} |",
                  f"| closed-loop load generator, 4 calls of 32 items | {score['batched_items_per_s']:.1f} |",
                  f"| grpc-model score --batch-size 32 --concurrency 4 | {score['items_per_s']:.1f} |",
                  f"| the same, over the whole process (start-up, listing, writing) | {score['process_items_per_s']:.1f} |",
                  f"| score / the faster load generator (target >= 0.90) | {score['ratio']:.2f} |"]  # fmt: skip
    if "payloads" in results.extras:
        lines += ["", payloads.markdown([payloads.Point(**point) for point in results.extras["payloads"]]).rstrip("\n")]
    if "cost" in results.extras:
        lines += cost.markdown(results.extras["cost"])
    if "percall" in results.extras:
        lines += percall.markdown(results.extras["percall"])
    if "scale_out" in results.extras:
        lines += ["", scale_out.markdown(results.extras["scale_out"]).rstrip("\n")]
    if "worker_memory" in results.extras:
        lines += ["", "| 256 MB weights | total RSS MB | total PSS MB |", "|---|---:|---:|"]
        for name, memory in results.extras["worker_memory"].items():
            lines.append(f"| {name} | {memory['rss_mb']} | {memory['pss_mb']} |")
    return "\n".join(lines) + "\n"


def plot(results: Results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    profiles = list(dict.fromkeys(p.profile for p in results.points))
    figure, axes = plt.subplots(1, len(profiles), figsize=(4 * len(profiles), 3.6), squeeze=False)
    for axis, profile in zip(axes[0], profiles, strict=True):
        for config in CONFIGS:
            points = [p for p in results.points if p.profile == profile and p.config == config]
            if points:
                axis.plot([p.concurrency for p in points], [p.items_per_s for p in points], marker="o", label=config)
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_title(profile)
        axis.set_xlabel("concurrent calls")
        axis.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("items/s")
    axes[0][0].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
