"""Where model calls run: threads of this process, or worker processes (see workers.py).

An executor offers `slots` model calls at once; a batch started while every slot is busy
waits for one, so callers may oversubscribe it safely. The batcher keeps at most `slots`
batches in flight.
"""

import asyncio
import concurrent.futures
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from grpc_model.src.observability import logs, tracing
from grpc_model.src.observability.metrics import NO_METRICS, Recorder
from grpc_model.src.runtime.items import ItemResult, describe, process_items
from grpc_model.src.runtime.loader import LoadedModel
from grpc_model.wrapper import ModelInput

logger = logging.getLogger(__name__)

T = TypeVar("T")
Wanted = Callable[[int], bool]
"""Whether the item at a position of a batch still has a caller waiting for it.

Called from the threads that feed the model; safe there because the answer only ever goes
from True to False, so a stale True costs at most one needless model call."""


class ModelExecutor(Protocol):
    @property
    def slots(self) -> int:
        """How many model calls may run at once."""
        ...

    @property
    def available(self) -> bool:
        """Whether a model call can start now or soon (not while no worker process is up or every thread is stuck)."""
        ...

    @property
    def condition(self) -> str | None:
        """What keeps some slot from taking work (for Status and refusals); None when every slot can."""
        ...

    def start_batch(
        self, items: Sequence[ModelInput], detect_drift: bool, explain: bool, wanted: Wanted | None = None
    ) -> "asyncio.Future[list[ItemResult]]":
        """Starts one batch (a batch call with per-item fallback); the future holds one result per item, in order.

        A future rather than a coroutine: the batcher chains on it without a task per batch.
        `wanted` lets a retry skip items that nobody waits for any more.
        """
        ...

    async def close(self) -> None: ...


class ThreadExecutor:
    """Runs the model on `threads` dedicated threads, keeping the event loop free.

    A plain queue and `call_soon_threadsafe` rather than `run_in_executor`: the hop to the
    model thread and back is paid once per batch, and for small models it is most of what
    the framework costs, so it is kept to the minimum.

    A model thread cannot be stopped, so a call that never returns keeps its thread. With a
    `stuck_seconds` limit (the run timeout), a watchdog on the event loop reports the
    executor unavailable while every thread has been on one call for longer than that, so
    health and Run say so instead of letting every call time out.
    """

    def __init__(
        self, model: LoadedModel, threads: int, stuck_seconds: float | None = None, metrics: Recorder = NO_METRICS
    ) -> None:
        self.model = model
        self.slots = threads
        self.stuck_seconds = stuck_seconds
        self.on_capacity_change: Callable[[bool], None] | None = None
        """Called on the event loop when every thread becomes stuck, or one comes free again."""
        self._jobs = JobQueue(metrics)
        self._since: list[float | None] = [None] * threads  # when each thread's current call began
        self._stuck = False
        self._closed = False
        self._watchdog: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop() if stuck_seconds is not None else None
        if self._loop is not None:
            self._check_stuck()
        self._threads = [
            threading.Thread(target=self._work, args=(index,), name=f"model-{index}", daemon=True)
            for index in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def available(self) -> bool:
        return not self._stuck

    @property
    def condition(self) -> str | None:
        if not self._stuck:
            return None
        return (
            f"the model is stuck: every model thread ({self.slots}) has been on one call for over "
            f"{self.stuck_seconds:g} s (timeout.run in model.yaml); retry later"
        )

    def start_batch(
        self, items: Sequence[ModelInput], detect_drift: bool, explain: bool, wanted: Wanted | None = None
    ) -> "asyncio.Future[list[ItemResult]]":
        return self._jobs.submit(items, detect_drift, explain, wanted)

    def _work(self, index: int) -> None:
        while (job := self._jobs.take()) is not None:
            logs.request_id.set(job.request_id)
            self._since[index] = started = time.monotonic()
            try:
                results = process_items(self.model, job.items, job.detect_drift, job.explain)
            except BaseException as error:  # a bug in the framework: fail the batch, keep the thread
                logger.exception("a model thread failed outside the model's own code")
                results = [ItemResult.failure(f"internal error: {describe(error)}")] * len(job.items)
            finally:
                self._since[index] = None
            job.resolve(results, time.monotonic() - started)
            del job, results  # the caller's now: a thread waiting for work must not keep a batch's files alive
            if self._stuck and self._loop is not None:  # free again: say so now, not at the next check
                with contextlib.suppress(RuntimeError):
                    self._loop.call_soon_threadsafe(self._check_stuck)

    def _check_stuck(self) -> None:
        """On the loop: updates the stuck state, and checks again when it could next change."""
        assert self._loop is not None
        assert self.stuck_seconds is not None
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self._closed:
            return
        now = time.monotonic()
        busy = [since for since in self._since if since is not None]
        all_busy = len(busy) == self.slots
        stuck = all_busy and now - max(busy) >= self.stuck_seconds
        if stuck != self._stuck:
            self._stuck = stuck
            if stuck:
                logger.error("%s", self.condition)
            if self.on_capacity_change is not None:
                self.on_capacity_change(not stuck)
        # A call that starts after now cannot be stuck before now + stuck_seconds.
        wake = max(busy) + self.stuck_seconds if all_busy and not stuck else now + self.stuck_seconds
        self._watchdog = self._loop.call_later(wake - now, self._check_stuck)

    async def close(self) -> None:
        self._closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._jobs.stop(len(self._threads))


class InlineExecutor:
    """Runs each batch on the event loop itself, for wrappers that declare `run_on_event_loop = True`.

    For models whose calls take microseconds (a lookup, a formula, an echo): the hop to a model
    thread and back (a queue, a thread wake-up, the GIL changing hands twice, the loop's wake-up)
    costs more than such a call. The loop does nothing else while the model runs, so a slow call
    holds up every other call, health included, and the run timeout cannot cut it short.
    """

    slots = 1
    available = True
    condition = None

    def __init__(self, model: LoadedModel, metrics: Recorder = NO_METRICS) -> None:
        self.model = model
        self.metrics = metrics

    def start_batch(
        self, items: Sequence[ModelInput], detect_drift: bool, explain: bool, wanted: Wanted | None = None
    ) -> "asyncio.Future[list[ItemResult]]":
        done: asyncio.Future[list[ItemResult]] = asyncio.get_running_loop().create_future()
        started = time.monotonic()
        try:
            results = process_items(self.model, items, detect_drift, explain)
        except BaseException as error:  # a bug in the framework: fail the batch, keep the loop
            logger.exception("a model call on the event loop failed outside the model's own code")
            results = [ItemResult.failure(f"internal error: {describe(error)}")] * len(items)
        self.metrics.batch(len(items), time.monotonic() - started)
        done.set_result(results)
        return done

    async def close(self) -> None:
        """Nothing to release: no thread of its own."""


def in_daemon_thread(function: Callable[[], T], name: str) -> "asyncio.Future[T]":
    """Runs `function` on a new daemon thread; the future completes on the calling loop.

    Not the loop's default executor: `asyncio.run` waits for its threads without limit when it
    ends, so a call that never returns (a hung model load) would keep the process from exiting.
    """
    done: concurrent.futures.Future[T] = concurrent.futures.Future()

    def target() -> None:
        if not done.set_running_or_notify_cancel():
            return
        try:
            done.set_result(function())
        except BaseException as error:  # delivered to the awaiting coroutine, which decides
            done.set_exception(error)

    threading.Thread(target=target, name=name, daemon=True).start()
    return asyncio.wrap_future(done)


class JobQueue:
    """Batches handed from the event loop to the threads that run them, each with its way back."""

    def __init__(self, metrics: Recorder = NO_METRICS) -> None:
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self.metrics = metrics

    def submit(
        self, items: Sequence[ModelInput], detect_drift: bool, explain: bool, wanted: Wanted | None = None
    ) -> "asyncio.Future[list[ItemResult]]":
        """Called on the event loop: queues the batch; the future completes there too.

        The batch takes the request id(s) of the current context along, for the lines its model call logs.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[ItemResult]] = loop.create_future()
        self._jobs.put(
            Job(
                loop,
                future,
                items,
                detect_drift,
                explain,
                wanted,
                tracing.capture(),
                logs.request_id.get(),
                self.metrics,
            )
        )
        return future

    def take(self) -> "Job | None":
        """Called on a worker thread: the next batch, or None when the thread should stop."""
        return self._jobs.get()

    def take_waiting(self) -> "list[Job]":
        """Every batch waiting now, leaving any stop markers for the threads they are meant for."""
        jobs: list[Job] = []
        stops = 0
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is None:
                stops += 1
            else:
                jobs.append(job)
        self.stop(stops)
        return jobs

    def stop(self, threads: int) -> None:
        for _ in range(threads):
            self._jobs.put(None)


@dataclass(slots=True)
class Job:
    """A batch handed from the event loop to a thread, and the way back (not frozen: one is made per batch,
    and a frozen dataclass sets each field through object.__setattr__)."""

    loop: asyncio.AbstractEventLoop
    future: "asyncio.Future[list[ItemResult]]"
    items: Sequence[ModelInput]
    detect_drift: bool
    explain: bool
    wanted: Wanted | None = None
    trace: "tracing.Context | None" = None  # the batch span's context, for a worker process; None while off
    request_id: object = None
    metrics: Recorder = NO_METRICS

    def needed(self, position: int) -> bool:
        """Whether the item at `position` still has a caller waiting for it."""
        return self.wanted is None or self.wanted(position)

    def resolve(self, results: list[ItemResult], model_seconds: float | None = None) -> None:
        """Called from the thread: completes the future on the loop's own thread, and records the model's time there."""
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody is waiting
            self.loop.call_soon_threadsafe(_set_result, self, results, model_seconds)

    def record(self, size: int, model_seconds: float) -> None:
        """Called from the thread: records one more model call for this batch (a retry) on the loop."""
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.metrics.batch, size, model_seconds)


def _set_result(job: Job, results: list[ItemResult], model_seconds: float | None) -> None:
    if not job.future.done():
        job.future.set_result(results)
    if model_seconds is not None:
        job.metrics.batch(len(results), model_seconds)
