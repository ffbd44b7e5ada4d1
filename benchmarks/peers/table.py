"""The peer comparison's rows, their Markdown table and their plot (docs/bench/peers/)."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.report import Point

COLUMNS = ("profile", "peer", "protocol", "variant", "conc.", "calls/s", "items/s", "p50 ms", "p99 ms",
           "server CPU µs/call", "idle RSS MB", "cold start s", "errors")  # fmt: skip


@dataclass
class Row:
    """One peer, protocol and variant on one profile: `point` holds the load measurements."""

    peer: str
    protocol: str
    variant: str
    point: Point
    idle_rss_mb: float
    """RSS of the server and its children once ready, before any call."""
    cold_start_s: float
    """From starting the process to its readiness probe first answering."""

    @property
    def label(self) -> str:
        return f"{self.peer} {self.protocol} ({self.variant})"


@dataclass
class PeerResults:
    machine: dict[str, str]
    rows: list[Row] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)


def markdown(results: PeerResults) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|---|---|---|---|" + "---:|" * (len(COLUMNS) - 4)]
    for row in results.rows:
        p = row.point
        cells = (p.profile, row.peer, row.protocol, row.variant, p.concurrency, p.requests_per_s, p.items_per_s,
                 p.p50_ms, p.p99_ms, p.cpu_us_per_request, round(row.idle_rss_mb, 1), round(row.cold_start_s, 2),
                 p.errors)  # fmt: skip
        lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def plot(results: PeerResults, path: Path) -> None:
    """Items/s and server CPU per call, one column of bars per profile, one bar per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    profiles = list(dict.fromkeys(row.point.profile for row in results.rows))
    labels = list(dict.fromkeys(row.label for row in results.rows))
    colours = {peer: f"C{index}" for index, peer in enumerate(dict.fromkeys(row.peer for row in results.rows))}
    figure, axes = plt.subplots(
        2, len(profiles), figsize=(4.5 * len(profiles), 0.3 * len(labels) * 2 + 2), squeeze=False
    )
    for column, profile in enumerate(profiles):
        rows = {row.label: row for row in results.rows if row.point.profile == profile}
        for axis, metric, title in ((axes[0][column], "items_per_s", "items/s"),
                                    (axes[1][column], "cpu_us_per_request", "server CPU µs/call")):  # fmt: skip
            values = [getattr(rows[label].point, metric) if label in rows else 0 for label in labels]
            bar_colours = [colours[rows[label].peer] if label in rows else "none" for label in labels]
            axis.barh(range(len(labels)), values, color=bar_colours)
            axis.set_yticks(range(len(labels)), labels if column == 0 else [""] * len(labels), fontsize=7)
            axis.invert_yaxis()
            axis.set_title(f"{profile}: {title}", fontsize=9)
            axis.grid(True, axis="x", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
