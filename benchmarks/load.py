"""The load driver every benchmark shares: callers calling back to back, a warm-up, then a measured window."""

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

import grpc

Call = Callable[[], Awaitable[bool]]
"""One call; True when its answer is what was expected. A grpc.RpcError counts as an error."""


@dataclass
class Load:
    latencies: list[float]
    """Seconds per call in the measured window, sorted."""
    errors: int
    seconds: float
    """How long the measured window lasted."""

    @property
    def calls(self) -> int:
        return len(self.latencies)

    def quantile_ms(self, quantile: float) -> float:
        """0 when no call finished in the window (a peer that hung): a row of zeros, not a crashed run."""
        if not self.latencies:
            return 0.0
        return round(self.latencies[min(self.calls - 1, int(quantile * self.calls))] * 1000, 2)


async def drive(
    call: Call,
    concurrency: int,
    seconds: float,
    warmup_seconds: float = 0.5,
    window: Callable[[], AbstractAsyncContextManager[object]] | None = None,
) -> Load:
    """`concurrency` callers for at most `warmup_seconds` (a quarter of `seconds` at most: connections, threads,
    caches), then for `seconds` measured; `window` is entered around the measured part (CPU, memory)."""
    latencies: list[float] = []
    errors = 0
    stop_at = 0.0

    async def caller(record: bool) -> None:
        nonlocal errors
        while time.monotonic() < stop_at:
            started = time.perf_counter()
            try:
                ok = await call()
            except grpc.RpcError:
                ok = False
            if record:
                latencies.append(time.perf_counter() - started)
                errors += not ok

    stop_at = time.monotonic() + min(warmup_seconds, seconds / 4)
    await asyncio.gather(*(caller(False) for _ in range(concurrency)))
    async with window() if window is not None else contextlib.nullcontext():
        started = time.monotonic()
        stop_at = started + seconds
        await asyncio.gather(*(caller(True) for _ in range(concurrency)))
        elapsed = time.monotonic() - started
    latencies.sort()
    return Load(latencies, errors, elapsed)
