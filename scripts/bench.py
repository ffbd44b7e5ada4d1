"""Benchmark: this engine against the original template's behaviour and a bare grpcio servicer.

    scripts/dev.sh bench [--duration S] [--profiles echo,cpu] [--out DIR]
    scripts/dev.sh bench --peers [--duration S] [--profiles echo,device,cpu] [--peer-names LitServe,...]

With --peers it runs the comparison with MLServer, LitServe and BentoML instead (benchmarks/peers/run.py),
each installed in a venv of its own, and writes docs/bench/peers/.

For each model profile (benchmarks/models.py) and each configuration it starts a server
process on 127.0.0.1, drives it with a grpc.aio load generator at several concurrencies
and records requests/s, items/s, latency percentiles, the server's CPU time per request
(user+system of the server and its workers, from /proc) and its peak memory (RSS and
PSS summed over the server and its workers). It writes results.json, results.md and
throughput.png to --out (default docs/bench) and prints the table and the targets.
Loopback only; every run is bounded by --duration.
"""

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere: import the project's packages

from benchmarks import cost, examples, payloads, percall, rest_cost, scale_out, scoring  # noqa: E402
from benchmarks import load as load_driver  # noqa: E402
from benchmarks.bundle import write_bundle  # noqa: E402
from benchmarks.models import calibrate_cpu_iterations  # noqa: E402
from benchmarks.peers import profiles as peer_profiles  # noqa: E402
from benchmarks.peers import run as peer_run  # noqa: E402
from benchmarks.processes import Server, Usage, memory_mb, process_tree, usage_window  # noqa: E402
from benchmarks.report import CONFIGS, LARGE_BYTES, Point, Results, fill, machine, markdown, plot  # noqa: E402
from grpc_model.src.auto_generated.model2_template import model_pb2 as pb  # noqa: E402
from grpc_model.src.auto_generated.model2_template.model_pb2_grpc import ModzyModelStub  # noqa: E402

MESSAGE_LIMIT = 300 * 1024 * 1024
SMALL = b"x" * 64
LARGE = os.urandom(1024) * (LARGE_BYTES // 1024)


@dataclass(frozen=True)
class Profile:
    name: str
    model: str
    payload: bytes
    concurrencies: tuple[int, ...]
    engine_flags: tuple[str, ...]  # the engine's best settings for this profile


PROFILES = [
    Profile("echo", "Echo", SMALL, (1, 8, 32, 128), ("--batch-wait-ms", "0")),
    Profile("sleep-item", "SleepItem", SMALL, (1, 8, 32, 128), ("--model-threads", "128")),
    Profile("sleep-batch", "SleepBatch", SMALL, (1, 8, 32, 64, 128), ("--model-threads", "2")),
    Profile("cpu", "Cpu", SMALL, (1, 8, 32, 128), ("--workers", "2")),
    # 128 x 50 MiB in flight would need ~13 GB on each side of the connection: not on this machine.
    Profile("large", "Echo", LARGE, (1, 8), ()),
]
TEMPLATE_FLAGS = ("--no-adaptive-batching", "--model-threads", "1", "--workers", "0")


def start_server(profile: Profile, config: str, bundle: Path, env: dict[str, str]) -> Server:
    if config == "bare":
        return Server([sys.executable, "-m", "benchmarks.bare_server", profile.name], env, f"{profile.name}-bare")
    flags = profile.engine_flags if config == "engine" else TEMPLATE_FLAGS
    command = [
        sys.executable, "-m", "grpc_model.src.model_server", "--host", "127.0.0.1",
        "--model-class", f"benchmarks.models:{profile.model}", "--asset-bundle-dir", str(bundle),
        "--max-receive-message-bytes", str(MESSAGE_LIMIT), "--max-send-message-bytes", str(MESSAGE_LIMIT),
        "--log-level", "WARNING", *flags,
    ]  # fmt: skip
    return Server(command, env, f"{profile.name}-{config}")


# ---- load generation --------------------------------------------------------------------


async def drive(
    target: str,
    payload: bytes,
    concurrency: int,
    seconds: float,
    pids: list[int],
    point: Point,
    name: str = "input.bin",
    batch: int = 1,
) -> None:
    """Fills `point` from `concurrency` callers sending calls of `batch` items; CPU and memory of `pids[0]`'s tree."""
    request = pb.RunRequest(inputs=[pb.InputItem(input={name: payload})] * batch)
    options = [("grpc.max_receive_message_length", MESSAGE_LIMIT), ("grpc.max_send_message_length", MESSAGE_LIMIT)]
    usage = Usage()
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        stub = ModzyModelStub(channel)
        status = await stub.Status(pb.StatusRequest(), timeout=120)
        assert status.status_code == 200, status.message

        async def call() -> bool:
            response = await stub.Run(request, timeout=120)
            return len(response.outputs) == batch and all(output.success for output in response.outputs)

        load = await load_driver.drive(call, concurrency, seconds, window=usage_window(pids[0], usage))
    fill(point, load, usage, batch)


# ---- single measurements ------------------------------------------------------------------


async def cpu_per_request(target: str, pid: int, concurrency: int, seconds: float) -> tuple[float, float]:
    """(requests/s, server CPU µs per request) of echo calls: what benchmarks/cost.py compares."""
    point = Point("echo", "cost", concurrency)
    await drive(target, SMALL, concurrency, seconds, [pid], point)
    return point.requests_per_s, point.cpu_us_per_request


async def one_big_call(
    bundle: Path, env: dict[str, str], items: int = 256, rounds: int = 50
) -> dict[str, dict[str, float]]:
    """Median latency of calls carrying `items` items, with and without the batcher (echo, sleep-batch).

    The two servers run side by side and take turns, call by call, so that the machine's
    drift hits both alike; the first 10 rounds are warm-up.
    """
    request = pb.RunRequest(inputs=[pb.InputItem(input={"input.bin": SMALL})] * items)
    latencies: dict[str, dict[str, float]] = {}
    for profile in (p for p in PROFILES if p.name in ("echo", "sleep-batch")):
        servers = {config: start_server(profile, config, bundle, env) for config in ("engine", "template")}
        timings: dict[str, list[float]] = {config: [] for config in servers}
        try:
            channels = {config: grpc.aio.insecure_channel(server.target) for config, server in servers.items()}
            stubs = {config: ModzyModelStub(channel) for config, channel in channels.items()}
            for stub in stubs.values():
                await stub.Status(pb.StatusRequest(), timeout=60)
            for _ in range(rounds):
                for config, stub in stubs.items():
                    started = time.perf_counter()
                    response = await stub.Run(request, timeout=60)
                    timings[config].append(time.perf_counter() - started)
                    assert len(response.outputs) == items
            for channel in channels.values():
                await channel.close()
        finally:
            for server in servers.values():
                server.stop()
        latencies[profile.name] = {
            config: round(statistics.median(values[10:]) * 1000, 2) for config, values in timings.items()
        }
    return latencies


async def worker_memory(bundle: Path, env: dict[str, str]) -> dict[str, dict[str, float]]:
    """Total RSS and PSS of a server holding 256 MB of weights, in-process and with 1 and 2 workers."""
    memory = {}
    for workers in (0, 1, 2):
        command = [sys.executable, "-m", "grpc_model.src.model_server", "--host", "127.0.0.1",
                   "--model-class", "benchmarks.models:Weights", "--asset-bundle-dir", str(bundle),
                   "--load-model-at-startup", "--workers", str(workers)]  # fmt: skip
        server = Server(command, env, f"weights-{workers}")
        point = Point("weights", f"workers={workers}", 8)
        await drive(server.target, SMALL, 8, 1.0, [server.process.pid], point)
        rss, pss = memory_mb(process_tree(server.process.pid))
        memory[f"workers={workers}"] = {"rss_mb": round(rss, 1), "pss_mb": round(pss, 1)}
        server.stop()
    return memory


async def digits_batching(env: dict[str, str], seconds: float, concurrency: int = 64) -> list[Point]:
    """The digits example under `concurrency` one-image calls, served one item per model call and in batches."""
    points = []
    for max_batch_size in (1, 32):
        bundle = examples.digits_bundle(Path(tempfile.mkdtemp(prefix="bench-digits-")), max_batch_size)
        server = Server(examples.digits_command(sys.executable, bundle), examples.digits_env(env), "digits")
        try:
            point = Point("digits", f"maxBatchSize={max_batch_size}", concurrency)
            pids = [server.process.pid]
            await drive(
                server.target, examples.digits_image(), concurrency, seconds, pids, point, examples.DIGITS_INPUT
            )
            points.append(point)
        finally:
            server.stop()
            shutil.rmtree(bundle, ignore_errors=True)
    return points


async def scorer_speed(bundle: Path, env: dict[str, str], seconds: float, count: int = 5000) -> dict[str, Any]:
    """grpc-model score on `count` items against sleep-batch (20 ms per batch call of up to 32), beside a
    closed-loop load generator (64 one-item calls in flight) on the same server, one after the other."""
    profile = next(p for p in PROFILES if p.name == "sleep-batch")
    server = start_server(profile, "engine", bundle, env)
    scratch = Path(tempfile.mkdtemp(prefix="bench-score-"))
    try:
        singles, batches = Point("score", "64 x 1 item", 64), Point("score", "4 x 32 items", 4)
        await drive(server.target, SMALL, 64, seconds, [server.process.pid], singles)
        await drive(server.target, SMALL, 4, seconds, [server.process.pid], batches, batch=32)
        items = scoring.item_folder(scratch / "items", count, SMALL)
        scored = scoring.run_scorer(server.target, items, scratch / "results.csv", batch_size=32, concurrency=4)
    finally:
        server.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    best = max(singles.items_per_s, batches.items_per_s)
    return {"single_items_per_s": singles.items_per_s, "batched_items_per_s": batches.items_per_s, **scored,
            "ratio": scored["items_per_s"] / best}  # fmt: skip


async def peer_comparison(args: argparse.Namespace) -> int:
    """`--peers`: every chosen peer, variant and protocol on every chosen profile, at one concurrency each."""
    profiles = [
        peer_profiles.PROFILES[name] for name in peer_run.choose(args.profiles, peer_profiles.PROFILES, "profile")
    ]
    peers = [peer_run.PEERS[name] for name in peer_run.choose(args.peer_names, peer_run.PEERS, "peer")]
    variants = peer_run.choose(args.variants, dict.fromkeys(("default", "lean")), "variant")
    concurrency = int(args.concurrencies.split(",")[0]) if args.concurrencies else None
    results = await peer_run.compare(peers, profiles, variants, args.duration, calibrate_cpu_iterations(), concurrency)
    peer_run.write(results, args.out or ROOT / "docs" / "bench" / "peers")
    return 0


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=4.0, help="seconds measured per point (default 4)")
    parser.add_argument("--profiles", help="comma-separated profiles (default: all)")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated configurations")
    parser.add_argument("--concurrencies", help="comma-separated, instead of each profile's own")
    parser.add_argument("--engine-flags", help="server flags for the engine configuration, instead of the profile's")
    parser.add_argument("--out", type=Path, help="output directory (default docs/bench, docs/bench/peers)")
    parser.add_argument("--peers", action="store_true", help="the comparison with MLServer, LitServe and BentoML")
    parser.add_argument("--peer-names", help=f"with --peers: comma-separated of {', '.join(peer_run.PEERS)}")
    parser.add_argument("--variants", help="with --peers: comma-separated of default,lean")
    args = parser.parse_args()
    if args.peers:
        return await peer_comparison(args)
    extras = ["payloads", "digits", "score", "cost", "percall", "rest", "scale-out"]
    args.profiles = args.profiles or ",".join([*(p.name for p in PROFILES), *extras])
    args.out = args.out or ROOT / "docs" / "bench"
    chosen = [
        replace(
            profile,
            concurrencies=tuple(int(c) for c in args.concurrencies.split(","))
            if args.concurrencies
            else profile.concurrencies,
            engine_flags=tuple(args.engine_flags.split()) if args.engine_flags is not None else profile.engine_flags,
        )
        for profile in PROFILES
        if profile.name in args.profiles.split(",")
    ]
    args.out.mkdir(parents=True, exist_ok=True)

    env = {**os.environ, "BENCH_CPU_ITERATIONS": str(calibrate_cpu_iterations()), "PYTHONPATH": str(ROOT)}
    results = Results(machine=machine())
    results.extras["cpu_iterations_for_5ms"] = int(env["BENCH_CPU_ITERATIONS"])
    bundle = write_bundle(Path(tempfile.mkdtemp(prefix="bench-bundle-")))
    try:
        results.extras["cold_start"] = rest_cost.cold_start()
        results.extras["cold_start_s"] = results.extras["cold_start"]["grpc-model, default (HTTP on)"]["serving_s"]
        for profile in chosen:
            for config in args.configs.split(","):
                server = start_server(profile, config, bundle, env)
                try:
                    for concurrency in profile.concurrencies:
                        point = Point(profile.name, config, concurrency)
                        await drive(
                            server.target, profile.payload, concurrency, args.duration, [server.process.pid], point
                        )
                        results.points.append(point)
                        print(f"{profile.name:12} {config:9} c={concurrency:<4} {point.requests_per_s:>9} req/s "
                              f"p50 {point.p50_ms:>8} ms p99 {point.p99_ms:>8} ms  "
                              f"cpu {point.cpu_us_per_request:>8} us/req  "
                              f"rss {point.peak_rss_mb:>7} MB  errors {point.errors}", flush=True)  # fmt: skip
                finally:
                    server.stop()
        if "payloads" in args.profiles.split(","):  # memory per 50 MiB call in flight, per front end
            points = await payloads.measure(env, seconds=args.duration, report=payloads.print_point)
            results.extras["payloads"] = [asdict(point) for point in points]
        if "cost" in args.profiles.split(","):  # what metrics and logs cost per call
            results.extras["cost"] = await cost.observability_cost(cpu_per_request, bundle, env, args.duration)
        if "percall" in args.profiles.split(","):  # the per-call path against the bare servicers, both protocols
            results.extras["percall"] = await percall.per_call(env, args.duration)
        if "rest" in args.profiles.split(","):  # V2 REST against a bare FastAPI route, and against gRPC
            iterations = int(env["BENCH_CPU_ITERATIONS"])
            results.extras["rest"] = await rest_cost.rest_against_bare(args.duration, 5, iterations)
        if "score" in args.profiles.split(","):
            results.extras["score"] = await scorer_speed(bundle, env, args.duration)
        if "scale-out" in args.profiles.split(","):  # replicas behind round robin; SIGTERM under load
            results.extras["scale_out"] = scale_out.measure(env, args.duration)
        if "digits" in args.profiles.split(","):  # the example's batching; needs the examples group
            results.extras["digits"] = [asdict(point) for point in await digits_batching(env, args.duration)]
        if "cpu" in args.profiles:
            results.extras["worker_memory"] = await worker_memory(bundle, env)
        if "echo" in args.profiles and "sleep-batch" in args.profiles:
            results.extras["one_call_of_256_items_ms"] = await one_big_call(bundle, env)
    finally:
        shutil.rmtree(bundle, ignore_errors=True)

    (args.out / "results.json").write_text(json.dumps({**asdict(results)}, indent=2))
    table = markdown(results) + "\n".join(rest_cost.markdown(results.extras.get("rest"), results.extras["cold_start"]))
    (args.out / "results.md").write_text(table)
    if results.points:  # only the profiles compared across configurations are plotted
        plot(results, args.out / "throughput.png")
    print(table)
    print(f"machine: {json.dumps(results.machine)}")
    print(f"wrote {args.out}/results.json, results.md, throughput.png")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
