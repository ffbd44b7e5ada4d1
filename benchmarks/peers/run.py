"""The peer comparison: each peer, variant and protocol on each profile, one after the other, one run.

    scripts/dev.sh bench --peers [--duration S] [--profiles echo,device,cpu] [--peer-names ...] [--variants ...]

Every peer is installed into its own venv under .bench-venvs/ first (benchmarks/peers/venvs.py), then
started once per profile and variant on free loopback ports and driven by the shared load driver
(benchmarks/load.py): gRPC through one grpc.aio channel, HTTP through aiohttp with one kept-alive
connection per caller. Every server started is stopped at the end, on an error and on Ctrl-C too.
"""

import json
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks.load import drive
from benchmarks.peers import bentoml, litserve, mlserver, ours, venvs
from benchmarks.peers.calls import Started
from benchmarks.peers.profiles import PeerProfile
from benchmarks.peers.table import PeerResults, Row, markdown, plot
from benchmarks.processes import Usage, memory_mb, process_tree, stop_all, usage_window
from benchmarks.report import Point, fill, machine

Start = Callable[[PeerProfile, str, Path, int], Started]
"""A peer module's `start(profile, variant, scratch directory, burn_cpu iterations for 5 ms)`."""


@dataclass(frozen=True)
class Peer:
    name: str
    start: Start
    variants: tuple[str, ...]
    profiles: tuple[str, ...]
    """The profiles it has model code for; it is left out of the others' rows."""
    pin: venvs.Pin | None = None


PEERS = {
    peer.name: peer
    for peer in (
        Peer("grpc-model", ours.start, tuple(ours.VARIANTS), tuple(ours.PROFILES)),
        Peer("MLServer", mlserver.start, tuple(mlserver.VARIANTS), tuple(mlserver.PROFILES), venvs.MLSERVER),
        Peer("LitServe", litserve.start, tuple(litserve.VARIANTS), tuple(litserve.PROFILES), venvs.LITSERVE),
        Peer("BentoML", bentoml.start, tuple(bentoml.VARIANTS), tuple(bentoml.PROFILES), venvs.BENTOML),
    )
}


async def measure(
    peer: Peer, profile: PeerProfile, variant: str, seconds: float, cpu_iterations: int, concurrency: int
) -> list[Row]:
    """One server of `peer` for `profile` in `variant`; a row per protocol it answers on."""
    rows = []
    with tempfile.TemporaryDirectory(prefix=f"bench-{peer.name}-") as directory:
        started = peer.start(profile, variant, Path(directory), cpu_iterations)
        try:
            idle_rss_mb, _ = memory_mb(process_tree(started.server.pid))
            for protocol, caller in started.callers.items():
                usage = Usage()
                async with caller(concurrency) as call:
                    load = await drive(call, concurrency, seconds, window=usage_window(started.server.pid, usage))
                point = Point(profile.name, f"{peer.name} {protocol} {variant}", concurrency)
                fill(point, load, usage)
                rows.append(Row(peer.name, protocol, variant, point, idle_rss_mb, started.server.cold_start_s))
                print(f"{profile.name:7} {rows[-1].label:34} c={concurrency:<3} {point.requests_per_s:>8} calls/s "
                      f"p50 {point.p50_ms:>7} ms p99 {point.p99_ms:>7} ms cpu {point.cpu_us_per_request:>7} µs/call "
                      f"idle {idle_rss_mb:6.1f} MB start {started.server.cold_start_s:5.2f} s errors {point.errors}",
                      flush=True)  # fmt: skip
        finally:
            started.server.stop()
    return rows


async def compare(
    peers: list[Peer], profiles: list[PeerProfile], variants: list[str], seconds: float, cpu_iterations: int,
    concurrency: int | None = None,
) -> PeerResults:  # fmt: skip
    """Every row, with every server stopped before it returns or raises (KeyboardInterrupt included)."""
    results = PeerResults(machine=machine(), extras={"cpu_iterations_for_5ms": cpu_iterations})
    try:
        for peer in peers:
            if peer.pin is not None:
                results.extras[f"{peer.name} venv"] = " ".join(peer.pin.requirements)
                venvs.ensure(peer.pin)
        for profile in profiles:
            for peer in (peer for peer in peers if profile.name in peer.profiles):
                for variant in (variant for variant in variants if variant in peer.variants):
                    results.rows += await measure(
                        peer, profile, variant, seconds, cpu_iterations, concurrency or profile.concurrency
                    )
    finally:
        stop_all()
    return results


def write(results: PeerResults, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(asdict(results), indent=2))
    table = markdown(results)
    (out / "results.md").write_text(table)
    if results.rows:
        plot(results, out / "peers.png")
    print(table)
    print(f"machine: {json.dumps(results.machine)}")
    print(f"wrote {out}/results.json, results.md, peers.png")


def choose(names: str | None, known: Mapping[str, object], what: str) -> list[str]:
    """The comma-separated `names`, all of `known` when None; an unknown name is an error that lists the known."""
    chosen = list(known) if names is None else [name for name in names.split(",") if name]
    unknown = [name for name in chosen if name not in known]
    if unknown:
        sys.exit(f"unknown {what}: {', '.join(unknown)} (known: {', '.join(known)})")
    return chosen
