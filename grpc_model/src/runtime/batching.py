"""Adaptive batching: items from concurrent Run calls share batch calls to the model.

The policy, chosen so that batching never costs latency when there is nothing to batch:

- While a model slot is idle, queued items are dispatched at once (up to `max_batch_size`).
- While batches are running, new items queue up; a partial batch waits at most `max_wait`
  (from its oldest item's arrival) for more items, and leaves at once when it is full.
- Items with different `detect_drift`/`explain` flags never share a batch call.
- The queue is bounded: beyond `max_queued_items`, `submit` raises `QueueFullError`.

Each caller awaits one future per item, so results land on their own caller, in order,
whatever order batches finish in.
"""

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from grpc_model.src.runtime.execution import ModelExecutor
from grpc_model.src.runtime.items import ItemResult
from model_lib.src.model_wrapper import ModelInput

logger = logging.getLogger(__name__)

Flags = tuple[bool, bool]  # (detect_drift, explain)


class QueueFullError(Exception):
    """More items are waiting than the configured bound allows."""


@dataclass(eq=False)
class _Pending:
    item: ModelInput
    future: "asyncio.Future[ItemResult]"
    enqueued_at: float = field(default_factory=time.monotonic)


class Batcher:
    def __init__(
        self, executor: ModelExecutor, max_batch_size: int, max_wait_seconds: float, max_queued_items: int
    ) -> None:
        if max_batch_size < 1 or max_wait_seconds < 0 or max_queued_items < 1:
            raise ValueError("max_batch_size and max_queued_items must be >= 1, max_wait_seconds >= 0")
        self.executor = executor
        self.max_batch_size = max_batch_size
        self.max_wait_seconds = max_wait_seconds
        self.max_queued_items = max_queued_items
        self._groups: dict[Flags, deque[_Pending]] = {}
        self._queued = 0
        self._in_flight = 0
        self._wakeup: asyncio.Event | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()

    @property
    def queued(self) -> int:
        return self._queued

    async def submit(self, items: Sequence[ModelInput], detect_drift: bool, explain: bool) -> list[ItemResult]:
        """Queues the items and returns their results in order."""
        if not items:
            return []
        if len(items) > self.max_queued_items:
            raise QueueFullError(
                f"this call has {len(items)} items, more than the server queues at once ({self.max_queued_items}); "
                "split it into smaller calls"
            )
        if self._queued + len(items) > self.max_queued_items:
            raise QueueFullError(
                f"server busy: {self._queued} items are queued and this call adds {len(items)}, "
                f"over the limit of {self.max_queued_items}; retry later"
            )
        loop = asyncio.get_running_loop()
        group = self._groups.setdefault((detect_drift, explain), deque())
        pending = [_Pending(item, loop.create_future()) for item in items]
        group.extend(pending)
        self._queued += len(pending)
        self._wake(loop)
        try:
            return [await entry.future for entry in pending]
        except asyncio.CancelledError:
            # The caller went away: its queued items are dropped, not run for nobody.
            for entry in pending:
                entry.future.cancel()
            raise

    async def close(self) -> None:
        """Stops dispatching and fails whatever is still queued."""
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            await asyncio.gather(self._dispatcher, return_exceptions=True)
        for group in self._groups.values():
            while group:
                entry = group.popleft()
                if not entry.future.done():
                    entry.future.set_result(ItemResult.failure("the server shut down before this item ran"))
        self._queued = 0

    def _wake(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._dispatcher is None:
            self._wakeup = asyncio.Event()
            self._dispatcher = loop.create_task(self._dispatch_forever(self._wakeup), name="batcher")
        assert self._wakeup is not None
        self._wakeup.set()

    async def _dispatch_forever(self, wakeup: asyncio.Event) -> None:
        while True:
            self._drop_cancelled()
            if self._queued == 0 or self._in_flight >= self.executor.slots:
                wakeup.clear()
                await wakeup.wait()
                continue
            flags, group = min(
                ((flags, group) for flags, group in self._groups.items() if group),
                key=lambda pair: pair[1][0].enqueued_at,
            )
            if len(group) < self.max_batch_size and self._in_flight > 0:
                remaining = group[0].enqueued_at + self.max_wait_seconds - time.monotonic()
                if remaining > 0:
                    wakeup.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wakeup.wait(), remaining)
                    continue  # look again: the batch may be full, or a slot idle, or the window over
            batch = [group.popleft() for _ in range(min(len(group), self.max_batch_size))]
            self._queued -= len(batch)
            self._in_flight += 1
            task = asyncio.create_task(self._run(batch, flags, wakeup))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    def _drop_cancelled(self) -> None:
        for group in self._groups.values():
            while group and group[0].future.cancelled():
                group.popleft()
                self._queued -= 1
        # Cancelled entries further back are skipped when their batch runs.

    async def _run(self, batch: list[_Pending], flags: Flags, wakeup: asyncio.Event) -> None:
        live = [entry for entry in batch if not entry.future.cancelled()]
        try:
            results = await self.executor.run_batch([entry.item for entry in live], *flags) if live else []
        except Exception as error:
            logger.exception("a batch of %d items failed in the executor", len(live))
            results = [ItemResult.failure(f"internal error: {type(error).__name__}: {error}")] * len(live)
        finally:
            self._in_flight -= 1
            wakeup.set()
        for entry, result in zip(live, results, strict=True):
            if not entry.future.done():
                entry.future.set_result(result)
