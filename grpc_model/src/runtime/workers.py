"""Worker processes: N copies of the model, for models that hold the GIL.

Each worker runs `process_items` on its own model instance and talks to the server over
a pipe: a batch crosses as one pickle each way. When the model was loaded before the
workers start (the default: the server loads it at start-up in this mode), workers are
forked from the loaded process, so read-only weights stay shared copy-on-write instead
of being loaded N times. A replacement for a dead worker is spawned fresh and loads its
own copy, because forking a process that already serves gRPC is unsafe.

A worker exits when told to, when its pipe closes, or within a second of the server
process disappearing, so no worker outlives the server.
"""

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext

from grpc_model.src.runtime.execution import Job, JobQueue, in_daemon_thread
from grpc_model.src.runtime.items import ItemResult, process_items
from grpc_model.src.runtime.loader import LoadedModel, import_wrapper_class, instantiate
from model_lib.src.model_wrapper import ModelInput

logger = logging.getLogger(__name__)

READY = "ready"
STOP_SECONDS = 5.0
START_SECONDS = 300.0
REPLACE_ATTEMPTS = 3
NO_WORKER = "no model worker process could be started"

# The loaded model a forked worker inherits; set in the server process just before forking.
_inherited_model: LoadedModel | None = None


class WorkerDiedError(Exception):
    """A worker process ended, or hung and was killed, while it held a batch."""


class WorkerStartError(Exception):
    """A worker could not load the model."""


def _worker_main(conn: Connection, model_class: str | None, server_pid: int, log_level: int) -> None:
    """The worker's loop: receive a batch, run it, send the results back."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the server decides
    if model_class is not None:  # spawned: nothing inherited
        logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s[worker]: %(message)s")
    try:
        model = _inherited_model if model_class is None else instantiate(import_wrapper_class(model_class))
        assert model is not None, "forked worker without an inherited model"
    except BaseException as error:
        conn.send(f"{type(error).__name__}: {error}")
        return
    conn.send(READY)
    while True:
        if not conn.poll(1.0):
            if os.getppid() != server_pid:
                return  # the server is gone
            continue
        try:
            request = conn.recv()
        except EOFError:
            return
        if request is None:
            return
        items, detect_drift, explain = request
        conn.send(process_items(model, items, detect_drift, explain))


class _Worker:
    def __init__(self, context: BaseContext, model_class: str | None) -> None:
        self.conn, child_conn = context.Pipe()
        self.process: multiprocessing.process.BaseProcess = context.Process(  # type: ignore[attr-defined]
            target=_worker_main,
            args=(child_conn, model_class, os.getpid(), logging.getLogger().getEffectiveLevel()),
            name="model-worker",
            daemon=True,
        )
        self.process.start()
        child_conn.close()

    def wait_ready(self) -> None:
        if not self.conn.poll(START_SECONDS):
            raise WorkerStartError(f"worker {self.process.pid} did not load the model within {START_SECONDS:.0f} s")
        try:
            answer = self.conn.recv()
        except EOFError:
            raise WorkerStartError(f"worker {self.process.pid} exited while loading the model") from None
        if answer != READY:
            raise WorkerStartError(f"worker {self.process.pid} failed to load the model: {answer}")

    def call(
        self, items: list[ModelInput], detect_drift: bool, explain: bool, hang_seconds: float | None
    ) -> list[ItemResult]:
        """Runs one batch in the worker; a worker silent for `hang_seconds` is killed as hung."""
        try:
            self.conn.send((items, detect_drift, explain))
            if hang_seconds is not None and not self.conn.poll(hang_seconds):
                self.process.kill()
                self.process.join(timeout=STOP_SECONDS)
                raise WorkerDiedError(
                    f"the model's worker process {self.process.pid} hung for over {hang_seconds:g} s and was killed"
                )
            results: list[ItemResult] = self.conn.recv()
        except (EOFError, OSError):
            self.process.join(timeout=1)
            raise WorkerDiedError(
                f"the model's worker process {self.process.pid} died (exit code {self.process.exitcode})"
            ) from None
        return results

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(None)
        self.process.join(timeout=STOP_SECONDS)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=STOP_SECONDS)
        self.conn.close()


class WorkerPool:
    """`count` worker processes behind the executor interface; one batch per worker at a time.

    Each worker has a thread in the server that feeds it batches from a shared queue and
    hands the results back to the event loop, so a batch costs one pickle each way and no
    task on the loop. A thread whose worker dies starts a replacement, retries the batch's
    items one at a time on it, and carries on.
    """

    def __init__(
        self, model_class: str, count: int, loaded: LoadedModel | None, hang_seconds: float | None = None
    ) -> None:
        self.model_class = model_class
        self.hang_seconds = hang_seconds
        self.slots = count
        self._loaded = loaded
        self._workers: list[_Worker] = []
        self._jobs = JobQueue()
        self._threads: list[threading.Thread] = []
        self._ready = 0
        self._feeding = 0  # feeding threads still running; the last one out fails what is left
        self._closing = False
        self._ready_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.on_capacity_change: Callable[[bool], None] | None = None
        """Called on the event loop when the pool goes from some ready workers to none, or back."""

    @property
    def available(self) -> bool:
        """Whether any worker can take work now (False while every worker is being replaced)."""
        return self._ready > 0

    def _count_ready(self, change: int) -> None:
        with self._ready_lock:
            before, self._ready = self._ready, self._ready + change
            after = self._ready
        if (before > 0) != (after > 0) and self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed: the server is gone
                self._loop.call_soon_threadsafe(self._report_capacity)

    def _report_capacity(self) -> None:
        # Reads the state when it runs, so reports from two threads cannot land in the wrong order.
        if self.on_capacity_change is not None:
            self.on_capacity_change(self.available)

    @property
    def pids(self) -> list[int]:
        return [worker.process.pid for worker in self._workers if worker.process.pid is not None]

    async def start(self) -> None:
        """Starts every worker and waits until each has its model."""
        global _inherited_model
        fork = self._loaded is not None and "fork" in multiprocessing.get_all_start_methods()
        if fork:
            _inherited_model = self._loaded
            gc.freeze()  # keep the collector from touching (and so copying) the shared pages
        context = multiprocessing.get_context("fork" if fork else "spawn")
        self._workers = [_Worker(context, None if fork else self.model_class) for _ in range(self.slots)]
        try:
            await asyncio.gather(*(in_daemon_thread(worker.wait_ready, "worker-start") for worker in self._workers))
        except WorkerStartError:
            await asyncio.gather(*(asyncio.to_thread(worker.stop) for worker in self._workers))
            raise
        self._loop = asyncio.get_running_loop()
        self._ready = self._feeding = self.slots
        for index in range(self.slots):
            thread = threading.Thread(target=self._feed, args=(index,), name=f"worker-io-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)
        logger.info("%d worker processes ready (%s): %s", self.slots, context.get_start_method(), self.pids)

    def start_batch(
        self, items: Sequence[ModelInput], detect_drift: bool, explain: bool
    ) -> "asyncio.Future[list[ItemResult]]":
        return self._jobs.submit(items, detect_drift, explain)

    def _feed(self, index: int) -> None:
        """One worker's thread: batches in, results out, a replacement when the worker dies."""
        while (job := self._jobs.take()) is not None:
            if not self._serve(index, job):
                break  # no replacement could start: this slot is gone
        with self._ready_lock:
            self._feeding -= 1
            last = self._feeding == 0
        if last:  # nobody is left to take the queued batches: answer them now
            while (orphan := self._jobs.take_nowait()) is not None:
                orphan.resolve([ItemResult.failure(NO_WORKER)] * len(orphan.items))

    def _serve(self, index: int, job: Job) -> bool:
        """Runs one batch and answers it; False when the slot has no worker any more.

        If the worker dies on a batch of several items, each is retried alone on its
        replacement, so only the item that kills a worker fails. A lone item's caller is
        answered before the replacement starts.
        """
        items = list(job.items)
        try:
            job.resolve(self._workers[index].call(items, job.detect_drift, job.explain, self.hang_seconds))
            return True
        except WorkerDiedError as error:
            logger.error("%s on a batch of %d items; starting a new worker", error, len(items))
            if len(items) == 1:
                job.resolve([ItemResult.failure(str(error))])
                return self._recover(index)
        results: list[ItemResult] = []
        dead = True  # the worker in this slot has died and must be replaced before the next call
        for item in items:
            if dead:
                if not self._recover(index):
                    job.resolve(results + [ItemResult.failure(NO_WORKER)] * (len(items) - len(results)))
                    return False
                dead = False
            try:
                results += self._workers[index].call([item], job.detect_drift, job.explain, self.hang_seconds)
            except WorkerDiedError as error:
                results.append(ItemResult.failure(str(error)))
                dead = True
        job.resolve(results)
        return not dead or self._recover(index)

    def _recover(self, index: int) -> bool:
        self._count_ready(-1)
        if not self._replace(index):
            return False
        self._count_ready(+1)
        return True

    def _replace(self, index: int) -> bool:
        """Spawns a fresh worker in slot `index` (forking a serving process is unsafe); False if it cannot."""
        self._workers[index].stop()
        if self._closing:
            return False
        for attempt in range(1, REPLACE_ATTEMPTS + 1):
            worker = _Worker(multiprocessing.get_context("spawn"), self.model_class)
            self._workers[index] = worker
            try:
                worker.wait_ready()
            except WorkerStartError:
                logger.exception("replacement worker failed to start (attempt %d of %d)", attempt, REPLACE_ATTEMPTS)
                worker.stop()
                continue
            logger.info("replacement worker %s ready", worker.process.pid)
            return True
        logger.critical("no replacement worker could start; serving with one worker fewer")
        return False

    async def close(self) -> None:
        """Stops the feeding threads and every worker (killing any that do not stop within a few seconds)."""
        self._closing = True
        self._jobs.stop(len(self._threads))
        await asyncio.gather(*(asyncio.to_thread(thread.join, STOP_SECONDS) for thread in self._threads))
        await asyncio.gather(*(asyncio.to_thread(worker.stop) for worker in self._workers))
