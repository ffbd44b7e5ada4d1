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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from grpc_model.src.runtime.items import ItemResult, describe, process_items
from grpc_model.src.runtime.loader import LoadedModel
from model_lib.src.model_wrapper import ModelInput

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
        """Whether a model call can start now or soon (False while no worker process is up)."""
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
    """

    available = True  # a model thread survives whatever its batch does
    condition = None

    def __init__(self, model: LoadedModel, threads: int) -> None:
        self.model = model
        self.slots = threads
        self._jobs = JobQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"model-{index}", daemon=True) for index in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    def start_batch(
        self, items: Sequence[ModelInput], detect_drift: bool, explain: bool, wanted: Wanted | None = None
    ) -> "asyncio.Future[list[ItemResult]]":
        return self._jobs.submit(items, detect_drift, explain, wanted)

    def _work(self) -> None:
        while (job := self._jobs.take()) is not None:
            try:
                results = process_items(self.model, job.items, job.detect_drift, job.explain)
            except BaseException as error:  # a bug in the framework: fail the batch, keep the thread
                logger.exception("a model thread failed outside the model's own code")
                results = [ItemResult.failure(f"internal error: {describe(error)}")] * len(job.items)
            job.resolve(results)

    async def close(self) -> None:
        self._jobs.stop(len(self._threads))


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

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()

    def submit(
        self, items: Sequence[ModelInput], detect_drift: bool, explain: bool, wanted: Wanted | None = None
    ) -> "asyncio.Future[list[ItemResult]]":
        """Called on the event loop: queues the batch; the future completes there too."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[ItemResult]] = loop.create_future()
        self._jobs.put(Job(loop, future, items, detect_drift, explain, wanted))
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


@dataclass(frozen=True)
class Job:
    """A batch handed from the event loop to a thread, and the way back."""

    loop: asyncio.AbstractEventLoop
    future: "asyncio.Future[list[ItemResult]]"
    items: Sequence[ModelInput]
    detect_drift: bool
    explain: bool
    wanted: Wanted | None = None

    def needed(self, position: int) -> bool:
        """Whether the item at `position` still has a caller waiting for it."""
        return self.wanted is None or self.wanted(position)

    def resolve(self, results: list[ItemResult]) -> None:
        """Called from the thread: completes the future on the loop's own thread."""
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody is waiting
            self.loop.call_soon_threadsafe(_set_result, self.future, results)


def _set_result(future: "asyncio.Future[list[ItemResult]]", results: list[ItemResult]) -> None:
    if not future.done():
        future.set_result(results)
