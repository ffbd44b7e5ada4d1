"""Adaptive batching: items from concurrent Run calls share batch calls to the model.

The policy, chosen so that batching never costs latency when there is nothing to batch:

- While a model slot is idle, queued items are dispatched at once (up to `max_batch_size`).
- While batches are running, new items queue up; a partial batch waits at most `max_wait`
  (from its oldest item's arrival) for more items, and leaves at once when it is full.
- Items with different `detect_drift`/`explain` flags never share a batch call.
- The queue is bounded: beyond `max_queued_items`, `submit` raises `QueueFullError`.
- With a timeout, every item is answered within it, from the moment it was queued: items
  not done by then fail with a timeout error, and those still queued are never run.

Each item keeps its call and its index in that call, and each call awaits one future that
completes when its last item is answered, so results land on their own caller, in order,
whatever order batches finish in. A group of items inside its window never holds up
another group that is ready.
"""

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from grpc_model.src.observability import logs, tracing
from grpc_model.src.observability.metrics import NO_METRICS, Recorder
from grpc_model.src.runtime.execution import ModelExecutor
from grpc_model.src.runtime.items import ItemResult, describe
from grpc_model.wrapper import ModelInput

logger = logging.getLogger(__name__)

Flags = tuple[bool, bool]  # (detect_drift, explain)


class QueueFullError(Exception):
    """More items are waiting than the configured bound allows."""


class _Call:
    """One submitted call: a slot per item for its result, and one future for all of them.

    One future per call rather than per item: items are the unit of batching, but the
    caller only wakes once, when the last of its items is answered.
    """

    __slots__ = ("future", "queued", "remaining", "request_id", "results", "trace")

    def __init__(self, count: int, future: "asyncio.Future[None]", trace: tracing.CallTrace | None) -> None:
        self.results: list[ItemResult | None] = [None] * count
        self.remaining = count
        self.queued = count  # items still in the queue that count against its bound
        self.future = future
        self.trace = trace  # None while tracing is off
        self.request_id = logs.request_id.get()  # for the lines logged about its items' batches

    def needs(self, index: int) -> bool:
        """Whether item `index` still wants an answer (its caller is there and it has none yet)."""
        return not self.future.done() and self.results[index] is None

    def answer(self, index: int, result: ItemResult) -> None:
        if not self.needs(index):
            return
        self.results[index] = result
        self.remaining -= 1
        if self.remaining == 0:
            # Done, not the results: the loop's handle that wakes the caller holds the future until the
            # caller's step ends, which is once its answer is sent, and the results would live as long.
            self.future.set_result(None)

    def fail_unanswered(self, message: str) -> None:
        """Its unanswered items fail now (queued ones are then never run): the call's time is up, or the server's."""
        for index in range(len(self.results)):
            self.answer(index, ItemResult.failure(message))


@dataclass(eq=False, slots=True)
class _Expiry:
    """When a call's unanswered items fail (with a run timeout); `call` is None once the call is over, so that
    the queue of expiries holds no finished call's results."""

    deadline: float
    call: _Call | None


@dataclass(eq=False, slots=True)
class _Pending:
    item: ModelInput
    call: _Call
    index: int
    enqueued_at: float  # the event loop's clock (monotonic)

    def needed(self) -> bool:
        return self.call.needs(self.index)


TIMEOUT_MESSAGE = "timed out: the model did not answer within the run timeout (timeout.run in model.yaml)"


class Batcher:
    """Event-driven: a submit, a finished batch or the window's timer each run `_pump` once."""

    def __init__(
        self,
        executor: ModelExecutor,
        max_batch_size: int,
        max_wait_seconds: float,
        max_queued_items: int,
        timeout_seconds: float | None = None,
        metrics: Recorder = NO_METRICS,
    ) -> None:
        if max_batch_size < 1 or max_wait_seconds < 0 or max_queued_items < 1:
            raise ValueError("max_batch_size and max_queued_items must be >= 1, max_wait_seconds >= 0")
        self.executor = executor
        self.max_batch_size = max_batch_size
        self.max_wait_seconds = max_wait_seconds
        self.max_queued_items = max_queued_items
        self.timeout_seconds = timeout_seconds
        self.metrics = metrics
        self._groups: dict[Flags, deque[_Pending]] = {}
        self._queued = 0
        self._in_flight = 0
        self._calls: set[_Call] = set()  # submitted and not over
        self._timer: asyncio.TimerHandle | None = None
        # With a run timeout: the calls' expiries in the order they came in, which is the order they fall due,
        # since every call has the same timeout; one timer for the first, rather than one per call on the loop.
        self._expiring: deque[_Expiry] = deque()
        self._expiry: asyncio.TimerHandle | None = None

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
        now = loop.time()
        call = _Call(len(items), loop.create_future(), tracing.queued(len(items)))
        group = self._groups.get((detect_drift, explain))
        if group is None:
            group = self._groups[(detect_drift, explain)] = deque()
        group.extend(_Pending(item, call, index, now) for index, item in enumerate(items))
        self._queued += len(items)
        self._calls.add(call)
        self._pump()
        expiry = None
        if self.timeout_seconds is not None and not call.future.done():  # a model on the loop may have answered
            expiry = self._expire_later(call, now + self.timeout_seconds)
        try:
            await call.future
            return cast(list[ItemResult], call.results)  # no None is left
        except asyncio.CancelledError:
            call.future.cancel()  # the caller went away: its queued items are dropped, not run for nobody
            raise
        finally:
            if expiry is not None:
                expiry.call = None
            # Answered, timed out or gone: whatever of it is still queued waits for nobody. It leaves
            # the queue lazily, but stops counting against the bound now.
            self._queued -= call.queued
            call.queued = 0
            self._calls.discard(call)
            if call.trace is not None:
                call.trace.dequeued()

    def _expire_later(self, call: _Call, deadline: float) -> _Expiry:
        """Fails the call's unanswered items at `deadline`, which is no earlier than any queued before it."""
        expiring = self._expiring
        while expiring and expiring[0].call is None:  # calls that are over
            expiring.popleft()
        expiry = _Expiry(deadline, call)
        expiring.append(expiry)
        if self._expiry is None:
            self._expiry = asyncio.get_running_loop().call_at(expiring[0].deadline, self._expire)
        return expiry

    def _expire(self) -> None:
        """The first call's time is up: it fails, and so does every other whose time is up too."""
        self._expiry = None
        loop = asyncio.get_running_loop()
        expiring, now = self._expiring, loop.time()
        while expiring and (expiring[0].call is None or expiring[0].deadline <= now):
            call = expiring.popleft().call
            if call is not None:
                call.fail_unanswered(TIMEOUT_MESSAGE)
        if expiring:
            self._expiry = loop.call_at(expiring[0].deadline, self._expire)

    async def close(self) -> None:
        """Stops dispatching and answers every item still waiting, queued or with the model."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        for group in self._groups.values():
            while group:
                entry = self._dequeue(group)
                entry.call.answer(entry.index, ItemResult.failure("the server shut down before this item ran"))
        for call in list(self._calls):
            call.fail_unanswered("the server shut down before the model finished this item")

    def _pump(self) -> None:
        """Starts every batch that may start now; arms the timer for partial batches that must wait."""
        loop = asyncio.get_running_loop()
        while self._in_flight < self.executor.slots:
            self._drop_answered()
            if self._queued == 0:
                return
            ready, earliest = self._next_ready(loop.time())
            if ready is None:
                if earliest is not None and (self._timer is None or self._timer.when() > earliest):
                    if self._timer is not None:
                        self._timer.cancel()
                    self._timer = loop.call_at(earliest, self._on_timer)
                return
            flags, group = ready
            self._start([self._dequeue(group) for _ in range(min(len(group), self.max_batch_size))], flags)

    def _next_ready(self, now: float) -> tuple[tuple[Flags, deque[_Pending]] | None, float | None]:
        """The oldest group that may go now (full, idle model or window over), else the earliest deadline.

        A group still inside its window never holds up another group that is ready.
        """
        earliest: float | None = None
        waiting = [(flags, group) for flags, group in self._groups.items() if group]
        if len(waiting) > 1:
            waiting.sort(key=lambda pair: pair[1][0].enqueued_at)
        for flags, group in waiting:
            deadline = group[0].enqueued_at + self.max_wait_seconds
            if len(group) >= self.max_batch_size or self._in_flight == 0 or now >= deadline:
                return (flags, group), None
            earliest = deadline if earliest is None else min(earliest, deadline)
        return None, earliest

    def _on_timer(self) -> None:
        self._timer = None
        self._pump()

    def _drop_answered(self) -> None:
        """Removes queued items that need no run any more: their caller left, or their time ran out."""
        for group in self._groups.values():
            while group and not group[0].needed():
                self._dequeue(group)

    def _dequeue(self, group: deque[_Pending]) -> _Pending:
        entry = group.popleft()
        if entry.call.queued:  # else its call is over and no longer counted
            entry.call.queued -= 1
            self._queued -= 1
            if not entry.call.queued and entry.call.trace is not None:
                entry.call.trace.dequeued()
        return entry

    def _start(self, batch: list[_Pending], flags: Flags) -> None:
        live = [entry for entry in batch if entry.needed()]
        if not live:
            return
        span = None if tracing.tracer is None else tracing.start_batch((entry.call.trace for entry in live), len(live))
        now = asyncio.get_running_loop().time()
        self.metrics.waited(now - entry.enqueued_at for entry in live)
        # The executor takes the batch's request ids from the context, for lines logged while it runs.
        ids = logs.request_id.set(logs.BatchIds([entry.call.request_id for entry in live]))
        try:
            with tracing.current(span):  # the executor keeps the batch span's context for a worker process
                running = self.executor.start_batch(
                    [entry.item for entry in live], *flags, wanted=lambda position: live[position].needed()
                )
        except Exception as error:  # never leave another caller's item unanswered
            logger.exception("a batch of %d items could not start", len(live))
            tracing.end_batch(span, error=describe(error))
            for entry in live:
                entry.call.answer(entry.index, ItemResult.failure(f"internal error: {describe(error)}"))
            return
        finally:
            logs.request_id.reset(ids)
        if running.done():  # it ran on the event loop: answer now, without a wake-up; `_pump`'s loop goes on
            self._answer(live, running, span)
        else:
            self._in_flight += 1
            running.add_done_callback(lambda done: self._finish(live, done, span))

    def _finish(
        self, live: list[_Pending], done: "asyncio.Future[list[ItemResult]]", span: "tracing.Span | None"
    ) -> None:
        self._in_flight -= 1
        try:
            self._pump()  # the next batch before this one's answers: the slot idles no longer than it must
        finally:
            self._answer(live, done, span)

    def _answer(
        self, live: list[_Pending], done: "asyncio.Future[list[ItemResult]]", span: "tracing.Span | None"
    ) -> None:
        if done.cancelled() or done.exception() is not None:
            error = "cancelled" if done.cancelled() else f"{type(done.exception()).__name__}: {done.exception()}"
            logger.error("a batch of %d items failed in the executor: %s", len(live), error)
            results = [ItemResult.failure(f"internal error: {error}")] * len(live)
        else:
            results = done.result()
        tracing.end_batch(span, results)
        try:
            for entry, result in zip(live, results, strict=True):
                entry.call.answer(entry.index, result)
        finally:
            for entry in live:  # a wrong count from an executor still answers everyone
                if entry.needed():
                    entry.call.answer(entry.index, ItemResult.failure("internal error: no result for this item"))
