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
import enum
import gc
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext

from grpc_model.src.observability import logs, tracing
from grpc_model.src.observability.metrics import NO_METRICS, Recorder
from grpc_model.src.runtime.execution import Job, JobQueue, Wanted, in_daemon_thread
from grpc_model.src.runtime.items import ItemResult, describe, process_items
from grpc_model.src.runtime.loader import LoadedModel, WrapperSource
from grpc_model.wrapper import ModelInput

logger = logging.getLogger(__name__)

READY = "ready"
STOP_SECONDS = 5.0
START_SECONDS = 300.0
RETRY_SECONDS = (0.5, 60.0)
MAX_HANG_SECONDS = 7 * 24 * 3600.0  # Connection.poll cannot wait past about 24 days (2**31 ms)
NO_WORKER = "no model worker process is up"

# The loaded model a forked worker inherits; set in the server process just before forking.
_inherited_model: LoadedModel | None = None


class WorkerDiedError(Exception):
    """A worker process ended, or hung and was killed, while it held a batch."""


class WorkerStartError(Exception):
    """A worker could not load the model."""


def _worker_main(
    conn: Connection,
    source: WrapperSource | None,
    server_pid: int,
    log_level: int,
    log_format: logs.LogFormat,
    trace_mode: tracing.Mode,
) -> None:
    """The worker's loop: receive a batch, run it, send the results back with the time the model took."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the server decides
    if source is not None:  # spawned: nothing inherited
        logs.configure(log_level, log_format)
    tracing.start_worker(trace_mode)
    try:
        _serve_batches(conn, source, server_pid)
    finally:
        tracing.shutdown()  # exports the worker's last spans: a process ends without running atexit hooks


def _serve_batches(conn: Connection, source: WrapperSource | None, server_pid: int) -> None:
    try:
        model = _inherited_model if source is None else source.load()
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
        items, detect_drift, explain, request_id, trace = request
        logs.request_id.set(request_id)
        started = time.perf_counter()
        with tracing.worker_span(trace, len(items)):
            results = process_items(model, items, detect_drift, explain)
        conn.send((results, time.perf_counter() - started))
        del request, items, results  # sent: not kept alive while the worker waits for the next batch


class _Worker:
    def __init__(self, context: BaseContext, source: WrapperSource | None) -> None:
        self.conn, child_conn = context.Pipe()
        self.process: multiprocessing.process.BaseProcess = context.Process(  # type: ignore[attr-defined]
            target=_worker_main,
            args=(
                child_conn,
                source,
                os.getpid(),
                logging.getLogger().getEffectiveLevel(),
                logs.configured_format(),
                tracing.worker_mode(),
            ),
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
        self, items: list[ModelInput], job: Job, hang_seconds: float | None, trace: dict[str, str] | None = None
    ) -> tuple[list[ItemResult], float]:
        """Runs one batch of the job in the worker: its results, and the model's time in the worker.

        A worker silent for `hang_seconds` is killed as hung. `trace` carries the batch span's
        context (W3C headers), for the worker's span to be its child.
        """
        request_id = None if job.request_id is None else str(job.request_id)
        try:
            self.conn.send((items, job.detect_drift, job.explain, request_id, trace))
            if hang_seconds is not None and not self.conn.poll(hang_seconds):
                self.process.kill()
                self.process.join(timeout=STOP_SECONDS)
                raise WorkerDiedError(
                    f"the model's worker process {self.process.pid} hung for over {hang_seconds:g} s and was killed"
                )
            answer: tuple[list[ItemResult], float] = self.conn.recv()
        except (EOFError, OSError):
            self.process.join(timeout=1)
            raise WorkerDiedError(
                f"the model's worker process {self.process.pid} died (exit code {self.process.exitcode})"
            ) from None
        return answer

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(None)
        self.process.join(timeout=STOP_SECONDS)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=STOP_SECONDS)
        self.conn.close()


class _Slot(enum.Enum):
    READY = "ready"
    STARTING = "starting"  # a replacement is loading the model; batches may queue for it
    LOST = "lost"  # its replacement failed: retried with back-off, and batches fail at once meanwhile


class WorkerPool:
    """`count` worker processes behind the executor interface; one batch per worker at a time.

    Each worker has a thread in the server that feeds it batches from a shared queue and
    hands the results back to the event loop, so a batch costs one pickle each way and no
    task on the loop. A thread whose worker dies starts a replacement, retries the batch's
    items one at a time on it, and carries on. If the replacement cannot load the model, the
    slot is retried with back-off until it can; while no slot has a worker or one starting,
    every batch is answered at once with the reason, so no item waits for nobody.
    """

    def __init__(
        self,
        source: WrapperSource,
        count: int,
        loaded: LoadedModel | None,
        hang_seconds: float | None = None,
        retry_seconds: tuple[float, float] = RETRY_SECONDS,
        metrics: Recorder = NO_METRICS,
    ) -> None:
        self.source = source
        self.hang_seconds = None if hang_seconds is None else min(hang_seconds, MAX_HANG_SECONDS)
        self.retry_seconds = retry_seconds
        """The first pause before retrying a slot whose replacement failed, and the longest (it doubles)."""
        self.slots = count
        self._loaded = loaded
        self._workers: list[_Worker] = []
        self.metrics = metrics
        self._jobs = JobQueue(metrics)
        self._threads: list[threading.Thread] = []
        self._states = [_Slot.STARTING] * count
        self._state_lock = threading.Lock()
        self._failure: str | None = None  # why the last replacement could not start
        self._closing = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.on_capacity_change: Callable[[bool], None] | None = None
        """Called on the event loop when the pool goes from some ready workers to none, or back."""

    @property
    def available(self) -> bool:
        """Whether any worker can take work now (False while every worker is being replaced)."""
        return _Slot.READY in self._states

    @property
    def condition(self) -> str | None:
        ready = self._states.count(_Slot.READY)
        if ready == self.slots:
            return None
        if self._closing.is_set():
            return "the server is shutting down"
        if _Slot.LOST in self._states:
            why = f"a replacement could not start ({self._failure}); retrying in the background"
        else:
            why = "a replacement is starting; retry shortly"
        if ready == 0:
            return f"{NO_WORKER}: {why}"
        return f"{ready} of {self.slots} model worker processes are up: {why}"

    def _set_state(self, index: int, state: _Slot) -> None:
        """Moves a slot to `state`; when no slot has or expects a worker any more, answers what waits."""
        with self._state_lock:  # with start_batch's check, so no batch slips into an unread queue
            was_available, was_accepting = self.available, self._accepting()
            self._states[index] = state
            if was_accepting and not self._accepting():
                failure = ItemResult.failure(self.condition or NO_WORKER)
                for orphan in self._jobs.take_waiting():
                    orphan.resolve([failure] * len(orphan.items))
        if self.available != was_available and self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed: the server is gone
                self._loop.call_soon_threadsafe(self._report_capacity)

    def _accepting(self) -> bool:
        return _Slot.READY in self._states or _Slot.STARTING in self._states

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
        self._workers = [_Worker(context, None if fork else self.source) for _ in range(self.slots)]
        try:
            await asyncio.gather(*(in_daemon_thread(worker.wait_ready, "worker-start") for worker in self._workers))
        except WorkerStartError:
            await asyncio.gather(*(asyncio.to_thread(worker.stop) for worker in self._workers))
            raise
        self._loop = asyncio.get_running_loop()
        self._states = [_Slot.READY] * self.slots
        for index in range(self.slots):
            thread = threading.Thread(target=self._feed, args=(index,), name=f"worker-io-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)
        logger.info("%d worker processes ready (%s): %s", self.slots, context.get_start_method(), self.pids)

    def start_batch(
        self, items: Sequence[ModelInput], detect_drift: bool, explain: bool, wanted: Wanted | None = None
    ) -> "asyncio.Future[list[ItemResult]]":
        with self._state_lock:
            if self._accepting():
                return self._jobs.submit(items, detect_drift, explain, wanted)
            failure = ItemResult.failure(self.condition or NO_WORKER)
        answered: asyncio.Future[list[ItemResult]] = asyncio.get_running_loop().create_future()
        answered.set_result([failure] * len(items))
        return answered

    def _feed(self, index: int) -> None:
        """One slot's thread: batches in, results out, a replacement when the worker dies."""
        try:
            while self._restore(index) and (job := self._jobs.take()) is not None:
                try:
                    self._serve(index, job)
                except BaseException as error:  # a bug here must strand neither the batch nor the slot
                    logger.exception("a worker's feeding thread failed outside the model")
                    job.resolve([ItemResult.failure(f"internal error: {describe(error)}")] * len(job.items))
                    self._replace(index)  # what the worker holds now is unknown
                del job  # answered: a thread waiting for work must not keep a batch's files alive
        finally:
            self._set_state(index, _Slot.LOST)  # nobody feeds this slot any more

    def _serve(self, index: int, job: Job) -> None:
        """Runs one batch and answers it, replacing the worker if it dies.

        If the worker dies on a batch of several items, each is retried alone on its
        replacement, so only the item that kills a worker fails; items whose caller has its
        answer already (timed out or gone) are skipped, so a hang is not rerun for nobody.
        A lone item's caller is answered before the replacement starts.
        """
        items = list(job.items)
        trace = tracing.carrier(job.trace)
        try:
            job.resolve(*self._workers[index].call(items, job, self.hang_seconds, trace))
            return
        except WorkerDiedError as error:
            self._set_state(index, _Slot.STARTING)  # before any caller hears of the death
            logger.error("%s on a batch of %d items; starting a new worker", error, len(items))
            death = ItemResult.failure(str(error))
        if len(items) == 1:
            job.resolve([death])
            self._replace(index)
            return
        results: list[ItemResult] = []
        dead = True  # the worker in this slot has died and must be replaced before the next call
        for position, item in enumerate(items):
            if dead and not self._replace(index):
                job.resolve(results + [ItemResult.failure(self.condition or NO_WORKER)] * (len(items) - position))
                return
            dead = False
            if not job.needed(position):
                results.append(death)  # read by nobody
                continue
            try:
                answer, seconds = self._workers[index].call([item], job, self.hang_seconds, trace)
                results += answer
                job.record(1, seconds)
            except WorkerDiedError as error:
                self._set_state(index, _Slot.STARTING)
                results.append(ItemResult.failure(str(error)))
                dead = True
        job.resolve(results)
        if dead:
            self._replace(index)

    def _restore(self, index: int) -> bool:
        """Returns once slot `index` has a worker (at once if it has); False if the pool closes first.

        A slot whose replacement failed is retried with back-off, doubling up to a bound, so it
        comes back once the cause (missing weights, memory, a device) goes away.
        """
        pause, longest = self.retry_seconds
        while self._states[index] is not _Slot.READY:
            logger.warning("worker slot %d has no worker; next attempt in %g s", index, pause)
            if self._closing.wait(pause):
                return False
            self._replace(index)
            pause = min(pause * 2, longest)
        return True

    def _replace(self, index: int) -> bool:
        """One attempt at a fresh worker in slot `index`: spawned, since forking a serving process is unsafe."""
        self._set_state(index, _Slot.STARTING)
        self._workers[index].stop()
        if self._closing.is_set():
            self._set_state(index, _Slot.LOST)
            return False
        self.metrics.worker_restarted()
        try:
            worker = _Worker(multiprocessing.get_context("spawn"), self.source)
            self._workers[index] = worker
            worker.wait_ready()
        except Exception as error:
            self._failure = describe(error) if not isinstance(error, WorkerStartError) else str(error)
            logger.error("replacement worker failed to start: %s", self._failure)
            self._workers[index].stop()
            self._set_state(index, _Slot.LOST)
            return False
        logger.info("replacement worker %s ready", worker.process.pid)
        self._set_state(index, _Slot.READY)
        return True

    async def close(self) -> None:
        """Stops the feeding threads and every worker (killing any that do not stop within a few seconds)."""
        self._closing.set()
        self._jobs.stop(len(self._threads))
        await asyncio.gather(*(asyncio.to_thread(thread.join, STOP_SECONDS) for thread in self._threads))
        await asyncio.gather(*(asyncio.to_thread(worker.stop) for worker in self._workers))
