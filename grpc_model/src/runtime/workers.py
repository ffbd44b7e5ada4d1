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
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext

from grpc_model.src.runtime.items import ItemResult, process_items
from grpc_model.src.runtime.loader import LoadedModel, import_wrapper_class, instantiate
from model_lib.src.model_wrapper import ModelInput

logger = logging.getLogger(__name__)

READY = "ready"
STOP_SECONDS = 5.0
START_SECONDS = 300.0

# The loaded model a forked worker inherits; set in the server process just before forking.
_inherited_model: LoadedModel | None = None


class WorkerDiedError(Exception):
    """A worker process ended while it held a batch."""


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

    def call(self, items: list[ModelInput], detect_drift: bool, explain: bool) -> list[ItemResult]:
        try:
            self.conn.send((items, detect_drift, explain))
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
    """`count` worker processes behind the executor interface; one batch per worker at a time."""

    def __init__(self, model_class: str, count: int, loaded: LoadedModel | None) -> None:
        self.model_class = model_class
        self.slots = count
        self._loaded = loaded
        self._workers: list[_Worker] = []
        self._idle: asyncio.Queue[_Worker] = asyncio.Queue()
        self._io = ThreadPoolExecutor(max_workers=count, thread_name_prefix="worker-io")
        self._replacing: set[asyncio.Task[None]] = set()

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
            await asyncio.gather(*(asyncio.to_thread(worker.wait_ready) for worker in self._workers))
        except WorkerStartError:
            await self.close()
            raise
        for worker in self._workers:
            self._idle.put_nowait(worker)
        logger.info("%d worker processes ready (%s): %s", self.slots, context.get_start_method(), self.pids)

    def start_batch(
        self, items: Sequence[ModelInput], detect_drift: bool, explain: bool
    ) -> "asyncio.Future[list[ItemResult]]":
        return asyncio.ensure_future(self._run_batch(items, detect_drift, explain))

    async def _run_batch(self, items: Sequence[ModelInput], detect_drift: bool, explain: bool) -> list[ItemResult]:
        worker = await self._idle.get()
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(self._io, worker.call, list(items), detect_drift, explain)
        except WorkerDiedError as error:
            logger.error("%s; its %d items fail and a new worker starts", error, len(items))
            task = asyncio.create_task(self._replace(worker))
            self._replacing.add(task)
            task.add_done_callback(self._replacing.discard)
            return [ItemResult.failure(str(error))] * len(items)
        self._idle.put_nowait(worker)
        return results

    async def _replace(self, dead: _Worker) -> None:
        await asyncio.to_thread(dead.stop)
        self._workers.remove(dead)
        worker = _Worker(multiprocessing.get_context("spawn"), self.model_class)
        self._workers.append(worker)
        try:
            await asyncio.to_thread(worker.wait_ready)
        except WorkerStartError:
            logger.exception("a replacement worker failed to start; serving with one worker fewer")
            return
        self._idle.put_nowait(worker)
        logger.info("replacement worker %s ready", worker.process.pid)

    async def close(self) -> None:
        """Stops every worker (killing any that do not stop within a few seconds)."""
        for task in list(self._replacing):
            task.cancel()
        await asyncio.gather(*(asyncio.to_thread(worker.stop) for worker in self._workers))
        self._workers = []
        self._io.shutdown(wait=False, cancel_futures=True)
