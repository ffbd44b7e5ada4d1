"""Soak test: a mixed, hostile load against a server process for a set time.

    .venv/bin/python scripts/soak.py --minutes 10 --concurrency 32

The server runs `benchmarks.models:Faulty` in 2 worker processes on 127.0.0.1, with a
64K maxSize per file, a 1 MiB message limit and a 5 s run timeout. Each call is one of:
valid items, invalid items (an undeclared or a missing file), an item over maxSize, a
message over the limit, a call cancelled mid-way, an item whose model raises, and an item
whose worker process exits. Every answer is checked against what that kind must get.
The script reports calls and outcomes by kind, items lost (an answer missing or not the
caller's own: must be 0), unexpected outcomes, and the server's RSS at the start and
the end. Loopback only; it stops by itself.
"""

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere: import the project's packages

from benchmarks.bundle import write_bundle  # noqa: E402
from benchmarks.processes import Server, memory_mb, process_tree  # noqa: E402
from grpc_model.src.auto_generated.model2_template import model_pb2 as pb  # noqa: E402
from grpc_model.src.auto_generated.model2_template.model_pb2_grpc import ModzyModelStub  # noqa: E402

if TYPE_CHECKING:
    from grpc_model.src.auto_generated.model2_template.model_pb2_grpc import ModzyModelAsyncStub

MESSAGE_LIMIT = 1024 * 1024
KINDS = {  # kind: weight
    "valid": 50,
    "invalid": 12,
    "oversized item": 8,
    "oversized message": 3,
    "cancelled": 10,
    "model raises": 10,
    "worker exits": 0.3,  # each costs a worker restart of about a second: keep them rare enough to be faults
}


def item(content: bytes) -> pb.InputItem:
    return pb.InputItem(input={"input.bin": content})


class Soak:
    def __init__(self, stub: "ModzyModelAsyncStub") -> None:
        self.stub = stub
        self.calls: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()
        self.unexpected: Counter[str] = Counter()
        self.items_sent = 0
        self.items_lost = 0

    def note(self, kind: str, outcome: str, expected: bool) -> None:
        self.outcomes[f"{kind}: {outcome}"] += 1
        if not expected:
            self.unexpected[f"{kind}: {outcome}"] += 1

    async def one_call(self, kind: str) -> None:
        self.calls[kind] += 1
        valid = [os.urandom(random.randint(1, 2048)) for _ in range(random.randint(1, 4))]
        if kind == "valid":
            inputs = [item(content) for content in valid]
        elif kind == "invalid":
            odd = pb.InputItem(input={"other.bin": b"x"}) if random.random() < 0.5 else pb.InputItem(input={})
            inputs = [odd, *(item(content) for content in valid)]
        elif kind == "oversized item":
            inputs = [item(os.urandom(65 * 1024)), *(item(content) for content in valid)]
        elif kind == "oversized message":
            inputs = [item(os.urandom(MESSAGE_LIMIT + 1024))]
        elif kind == "cancelled":
            inputs = [item(b"sleep")]
        elif kind == "model raises":
            inputs = [item(b"raise"), *(item(content) for content in valid)]
        else:
            inputs = [item(b"exit"), *(item(content) for content in valid)]
        self.items_sent += len(inputs)
        call = self.stub.Run(pb.RunRequest(inputs=inputs), timeout=30)
        if kind == "cancelled":
            await asyncio.sleep(0.02)
            call.cancel()
        try:
            response = await call
        except asyncio.CancelledError:
            self.note(kind, "cancelled by the client", expected=kind == "cancelled")
            return
        except grpc.aio.AioRpcError as error:
            code = error.code()
            expected = (kind == "oversized message" and code == grpc.StatusCode.RESOURCE_EXHAUSTED) or (
                code == grpc.StatusCode.UNAVAILABLE and "worker" in (error.details() or "")
            )  # every worker being replaced at once: fail fast, by design
            self.note(kind, code.name, expected)
            return
        self.check(kind, inputs, response)

    def check(self, kind: str, inputs: list[pb.InputItem], response: pb.RunResponse) -> None:
        if len(response.outputs) != len(inputs):
            self.items_lost += abs(len(inputs) - len(response.outputs))
            self.note(kind, "wrong number of outputs", expected=False)
            return
        for sent, answer in zip(inputs, response.outputs, strict=True):
            content = sent.input.get("input.bin")
            error = answer.output.get("error", b"").decode(errors="replace")
            if answer.success:
                if answer.output.get("output.bin") != content:
                    self.items_lost += 1  # someone else's answer, or none
                    self.note(kind, "an answer that is not the caller's own", expected=False)
                    continue
                ok = content is not None and content not in (b"raise", b"exit") and set(sent.input) == {"input.bin"}
                self.note(kind, "item succeeded", expected=ok and len(content or b"") <= 64 * 1024)
            elif "timed out" in error:
                self.note(kind, "item timed out", expected=False)
            elif content == b"raise":
                self.note(kind, "item failed: model raised", expected="ValueError: asked to raise" in error)
            elif content == b"exit":
                self.note(kind, "item failed: worker died", expected="died" in error)
            elif "larger than its maxSize" in error or "not an input" in error or "missing" in error:
                self.note(kind, "item refused by validation", expected=kind in ("invalid", "oversized item"))
            else:
                self.note(kind, f"item failed: {error[:60]}", expected=False)


async def soak(minutes: float, concurrency: int, seed: int) -> int:
    random.seed(seed)
    bundle = write_bundle(Path(tempfile.mkdtemp(prefix="soak-bundle-")), max_size="64K", run_timeout="5s")
    command = [sys.executable, "-m", "grpc_model.src.model_server", "--host", "127.0.0.1",
               "--model-class", "benchmarks.models:Faulty", "--asset-bundle-dir", str(bundle), "--workers", "2",
               "--max-receive-message-bytes", str(MESSAGE_LIMIT), "--log-level", "WARNING"]  # fmt: skip
    server = Server(command, {**os.environ, "PYTHONPATH": str(ROOT)}, "soak")
    kinds, weights = list(KINDS), list(KINDS.values())
    try:
        async with grpc.aio.insecure_channel(server.target) as channel:
            soak = Soak(ModzyModelStub(channel))  # typed as the async stub for an aio channel
            await soak.stub.Status(pb.StatusRequest(), timeout=60)
            for _ in range(200):  # warm-up, so that the start figure is the steady state's
                await soak.one_call("valid")
            started = time.monotonic()
            stop_at = started + minutes * 60
            rss_peak = 0.0

            async def caller() -> None:
                while time.monotonic() < stop_at:
                    await soak.one_call(random.choices(kinds, weights)[0])

            # (minutes, server process RSS, total RSS, total PSS), every tenth of the run
            timeline: list[tuple[float, float, float, float]] = []

            async def watch_memory() -> None:
                nonlocal rss_peak
                while True:
                    rss, pss = memory_mb(process_tree(server.process.pid))
                    rss_peak = max(rss_peak, rss)
                    elapsed_minutes = (time.monotonic() - started) / 60
                    if not timeline or elapsed_minutes - timeline[-1][0] >= minutes / 10:
                        timeline.append((elapsed_minutes, memory_mb([server.process.pid])[0], rss, pss))
                    await asyncio.sleep(1)

            watcher = asyncio.create_task(watch_memory())
            await asyncio.gather(*(caller() for _ in range(concurrency)))
            watcher.cancel()
            elapsed = time.monotonic() - started
            await asyncio.sleep(2)  # let replaced workers settle before the last reading
            rss_end, pss_end = memory_mb(process_tree(server.process.pid))
            main_end = memory_mb([server.process.pid])[0]
            # The baseline is the first reading after a tenth of the run under the full mix: by then
            # buffers have grown to the largest messages and the forked workers have been replaced
            # by spawned ones (which load their own copy); growth from there on would be a leak.
            _, main_start, rss_start, pss_start = timeline[min(1, len(timeline) - 1)]
            checked = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            health = health_pb2.HealthCheckResponse.ServingStatus.Name(checked.status)
    finally:
        server.stop()

    total = sum(soak.calls.values()) - 200
    print(f"## Soak: {minutes:g} min at concurrency {concurrency} (seed {seed})\n")
    print(f"- calls: {total} in {elapsed:.0f} s ({total / elapsed:.0f}/s); items sent: {soak.items_sent}")
    print(f"- items lost: {soak.items_lost}")
    print(f"- unexpected outcomes: {sum(soak.unexpected.values())} {dict(soak.unexpected) or ''}")

    def growth(before: float, after: float) -> str:
        return f"{before:.1f} MB to {after:.1f} MB ({100 * (after - before) / before:+.1f}%)"

    print("- memory, from a tenth of the run to the end:")
    print(f"  - server process RSS: {growth(main_start, main_end)}")
    print(f"  - server + workers RSS: {growth(rss_start, rss_end)}; peak {rss_peak:.1f} MB")
    print(f"  - server + workers PSS (shared pages counted once): {growth(pss_start, pss_end)}")
    print(f"- health at the end: {health}\n")
    print("| minute | server RSS MB | server + workers RSS MB | server + workers PSS MB |")
    print("|---:|---:|---:|---:|")
    for at, main_rss, rss, pss in timeline:
        print(f"| {at:.1f} | {main_rss:.1f} | {rss:.1f} | {pss:.1f} |")
    print("\n| kind | calls |\n|---|---:|")
    for kind in kinds:
        print(f"| {kind} | {soak.calls[kind] - (200 if kind == 'valid' else 0)} |")
    print("\n| outcome | count |\n|---|---:|")
    for outcome, count in sorted(soak.outcomes.items()):
        print(f"| {outcome} | {count} |")
    return 1 if soak.items_lost or soak.unexpected else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=1.0, help="how long to run (default 1)")
    parser.add_argument("--concurrency", type=int, default=32, help="calls in flight (default 32)")
    parser.add_argument("--seed", type=int, default=1, help="random seed of the mix")
    args = parser.parse_args()
    if not 0 < args.minutes <= 120 or not 0 < args.concurrency <= 1024:
        parser.error("--minutes must be in (0, 120] and --concurrency in (0, 1024]")
    return asyncio.run(soak(args.minutes, args.concurrency, args.seed))


if __name__ == "__main__":
    sys.exit(main())
