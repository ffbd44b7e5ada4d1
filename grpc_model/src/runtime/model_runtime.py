"""The model's lifecycle on the server: load once, then run items off the event loop.

Loading builds the execution strategy the configuration asks for: threads in this
process (one by default, since wrappers are not assumed thread-safe) or worker
processes, with an adaptive batcher in front unless batching is switched off.
"""

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from grpc_model.src.observability import tracing
from grpc_model.src.observability.metrics import NO_METRICS, Recorder
from grpc_model.src.runtime.batching import TIMEOUT_MESSAGE, Batcher
from grpc_model.src.runtime.execution import InlineExecutor, ModelExecutor, ThreadExecutor, in_daemon_thread
from grpc_model.src.runtime.items import ItemResult, describe
from grpc_model.src.runtime.loader import LoadedModel, WrapperImportError, WrapperSource, import_wrapper_class
from grpc_model.src.runtime.signature import TensorSignature
from grpc_model.src.runtime.workers import WorkerPool, WorkerStartError
from grpc_model.wrapper import ModelInput

logger = logging.getLogger(__name__)


class ModelLoadError(Exception):
    """The wrapper's `__init__` raised, or its workers could not start; the message says why."""


class ModelNotLoadedError(Exception):
    """Run was called before the model was loaded."""


class ModelUnavailableError(Exception):
    """The model cannot take work right now: every worker process is being replaced, or every model thread is stuck."""


@dataclass(frozen=True)
class EngineOptions:
    """How model calls are scheduled; see the README's configuration table."""

    max_batch_size: int = 1
    model_threads: int = 1
    workers: int = 0
    adaptive_batching: bool = True
    batch_wait_seconds: float = 0.005
    max_queued_items: int = 10_000
    run_timeout_seconds: float | None = None


class ModelRuntime:
    def __init__(
        self,
        model_class: str | WrapperSource,
        options: EngineOptions,
        metrics: Recorder = NO_METRICS,
        label: str = "",
    ) -> None:
        """Imports the wrapper class now, so a wrong name stops start-up, not the first call.

        `label` names the model in log lines (a repository's model and version); the wrapper class's name
        when empty."""
        self.source = model_class if isinstance(model_class, WrapperSource) else WrapperSource(model_class)
        self.metrics = metrics
        self.wrapper_class = import_wrapper_class(self.source.path, self.source.project)
        self.label = label or self.wrapper_class.__name__
        self.options = options
        thread_safe = bool(getattr(self.wrapper_class, "thread_safe", False))
        if options.model_threads > 1 and not thread_safe:
            raise WrapperImportError(
                f"model_threads is {options.model_threads}, but {self.wrapper_class.__name__} does not declare "
                "`thread_safe = True`; declare it if one instance can serve several threads at once, "
                "or use worker processes"
            )
        self._executor: ModelExecutor | None = None
        self._batcher: Batcher | None = None
        self.may_fork = True
        """Whether worker processes may be forked from this process; the server clears it once it
        serves, because forking a process with gRPC threads is unsafe (workers are spawned then)."""
        self.on_capacity_change: Callable[[bool], None] | None = None
        """Told (on the event loop) when the model goes from able to take work to not, or back."""
        self.last_load_error: str | None = None
        """Why the last load failed, for callers that give up waiting on the next one."""
        self._loading: asyncio.Task[ModelLoadError | None] | None = None
        self._signature: TensorSignature | None = None

    @property
    def declares_tensors(self) -> bool:
        """Whether the wrapper declares numeric tensors (known before it loads; which ones, only after)."""
        return callable(getattr(self.wrapper_class, "tensor_signature", None))

    @property
    def signature(self) -> TensorSignature | None:
        """The loaded model's numeric tensors; None before it loads or when it declares none."""
        return self._signature

    @property
    def is_loaded(self) -> bool:
        return self._executor is not None

    @property
    def queued_items(self) -> int:
        """Items waiting for a model slot (only the batcher queues items)."""
        return 0 if self._batcher is None else self._batcher.queued

    @property
    def available(self) -> bool:
        """Whether the loaded model can take work now (not while every worker or model thread is lost or stuck)."""
        return self._executor is not None and self._executor.available

    @property
    def condition(self) -> str | None:
        """What limits the loaded model's capacity now; None when nothing does."""
        return None if self._executor is None else self._executor.condition

    async def load(self) -> bool:
        """Loads the model unless it is loaded; True when this call started the load that succeeded.

        One load at a time: a caller that arrives during a load shares its outcome, so callers
        that stop waiting (a Status timeout) leave no loads of their own queued behind it. A
        failed load leaves the runtime unloaded, so a later call starts a new one.
        """
        if self._executor is not None:
            return False
        started = self._loading is None
        if self._loading is None:
            self._loading = asyncio.ensure_future(self._load())
        failure = await asyncio.shield(self._loading)
        if failure is not None:
            raise failure
        return started

    async def _load(self) -> ModelLoadError | None:
        """The one running load; returns its error rather than raising it, for every caller to raise."""
        name = self.label
        started = time.perf_counter()
        try:
            model = await in_daemon_thread(self.source.load, f"load-{name}")
            executor = await self._start_executor(model)
        except asyncio.CancelledError:
            raise
        except BaseException as error:
            logger.exception("loading %s failed", name)
            self.last_load_error = describe(error)
            failure = ModelLoadError(f"{name} failed to load: {self.last_load_error}")
            failure.__cause__ = error
            return failure
        finally:
            self._loading = None
        if self.options.adaptive_batching:
            # Without a batch method, a "batch" is a loop of single calls: keep items apart
            # so that they spread over the slots instead.
            batch_size = self.options.max_batch_size if model.batch is not None else 1
            self._batcher = Batcher(
                executor,
                batch_size,
                self.options.batch_wait_seconds,
                self.options.max_queued_items,
                self.options.run_timeout_seconds,
                self.metrics,
            )
        self._executor = executor
        self._signature = model.signature
        self.metrics.model_loaded(time.perf_counter() - started)
        logger.info("model %s loaded; %d model call(s) at once", name, executor.slots)
        return None

    async def _start_executor(self, model: LoadedModel) -> ModelExecutor:
        if self.options.workers == 0 and getattr(self.wrapper_class, "run_on_event_loop", False):
            return InlineExecutor(model, self.metrics)
        if self.options.workers == 0:
            threads = ThreadExecutor(model, self.options.model_threads, self.options.run_timeout_seconds, self.metrics)
            threads.on_capacity_change = self._capacity_changed
            return threads
        pool = WorkerPool(
            self.source,
            self.options.workers,
            loaded=model if self.may_fork else None,
            hang_seconds=self.options.run_timeout_seconds,
            metrics=self.metrics,
        )
        pool.on_capacity_change = self._capacity_changed
        try:
            await pool.start()
        except WorkerStartError as error:
            raise ModelLoadError(str(error)) from error
        return pool

    def _capacity_changed(self, available: bool) -> None:
        if self.on_capacity_change is not None:
            self.on_capacity_change(available)

    async def run(self, items: Sequence[ModelInput], detect_drift: bool, explain: bool) -> list[ItemResult]:
        """One result per item, in order."""
        executor = self._executor
        if executor is None:
            raise ModelNotLoadedError(self._not_loaded_reason())
        if items and not executor.available:
            raise ModelUnavailableError(executor.condition or "the model cannot take work now; retry shortly")
        if self._batcher is not None:
            return await self._batcher.submit(items, detect_drift, explain)
        results: list[ItemResult] = []
        size = self.options.max_batch_size
        timeout = self.options.run_timeout_seconds
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        for start in range(0, len(items), size):
            with tracing.span(tracing.BATCH, min(size, len(items) - start)):  # a child of the call's span
                batch = executor.start_batch(items[start : start + size], detect_drift, explain)
                remaining = None if deadline is None else deadline - asyncio.get_running_loop().time()
                try:
                    results += await asyncio.wait_for(asyncio.shield(batch), remaining)
                except TimeoutError:
                    break
        return results + [ItemResult.failure(TIMEOUT_MESSAGE)] * (len(items) - len(results))

    def _not_loaded_reason(self) -> str:
        """Why Run cannot run: a client that called Status and saw it fail is told that load's error again."""
        if self.last_load_error is None:
            return "the model is not loaded: call Status first, which loads it"
        name = self.label
        return f"the model is not loaded: the last load failed: {self.last_load_error} (Status loads {name} again)"

    async def close(self) -> None:
        """Fails what is still queued and releases threads and worker processes."""
        if self._batcher is not None:
            await self._batcher.close()
        if self._executor is not None:
            await self._executor.close()
