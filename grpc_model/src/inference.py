"""The data plane that every protocol front end calls: check items, run them, one result per item.

It knows no transport. A front end turns its request into items (file name -> bytes) and the
results back into its own answer, so items from every protocol share the one runtime and batcher.
"""

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

from grpc_model.src.metadata import AssetBundle, ModelSpec, slug
from grpc_model.src.observability import tracing
from grpc_model.src.observability.metrics import NO_METRICS, Recorder
from grpc_model.src.runtime import (
    EngineOptions,
    ItemResult,
    ModelLoadError,
    ModelRuntime,
    ModelUnavailableError,
    TensorSignature,
    WrapperSource,
)
from grpc_model.src.runtimes import model_source
from grpc_model.src.security.limits import InflightBudget, OverBudgetError
from grpc_model.src.settings import Settings
from grpc_model.src.validation import CheckedItem, InputValidator

__all__ = ["CHECK_INLINE_BYTES", "Inference", "OverBudgetError", "build_inference"]
"""OverBudgetError is the data plane's too: `Inference.run` raises it, and every front end answers it as busy."""

CHECK_INLINE_BYTES = 64 * 1024
"""Requests up to this size are checked on the event loop (about a millisecond); larger ones on a
thread, so that Status, health and other calls keep answering while a large file is checked."""


class Inference:
    """The endpoint of one model version: its spec, validator, runtime and metrics."""

    def __init__(
        self,
        runtime: ModelRuntime,
        validator: InputValidator,
        spec: ModelSpec,
        metrics: Recorder = NO_METRICS,
        budget: InflightBudget | None = None,
        max_request_bytes: int | None = None,
    ) -> None:
        self.runtime = runtime
        self.validator = validator
        self.spec = spec
        self.metrics = metrics
        self.budget = budget or InflightBudget(2**63)
        self.max_request_bytes = max_request_bytes
        """This model's own request-size limit, when the port takes larger requests for another model."""
        self.closed = False
        self._calls = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.on_loaded: Callable[[], Awaitable[None]] | None = None
        """Called once by the load that succeeds, whichever front end started it (the wiring sets it to
        report health SERVING)."""

    async def ensure_loaded(self, wait_seconds: float | None = None) -> None:
        """Loads the model if needed; raises ModelLoadError.

        Every front end calls it before it needs the model: Modzy clients call Status first, V2 clients
        never do. A load that outlives `wait_seconds` goes on in the background (health turns SERVING
        when it finishes, and a later call reports it).
        """
        loading = self.start_loading()
        try:
            await asyncio.wait_for(asyncio.shield(loading), wait_seconds)
        except TimeoutError:
            previous = self.runtime.last_load_error
            raise ModelLoadError(
                f"the model did not finish loading within the status timeout of {wait_seconds:g} s "
                "(timeout.status in model.yaml); it goes on loading and a later call reports the result"
                + (f"; the last load failed: {previous}" if previous else "")
            ) from None

    def start_loading(self) -> "asyncio.Future[None]":
        """Starts loading the model unless it is loaded, without waiting (for readiness probes)."""
        loading = asyncio.ensure_future(self._load_and_report())
        loading.add_done_callback(_retrieve_exception)
        return loading

    async def _load_and_report(self) -> None:
        # Only the call that loads reports: later ones must not overrule what worker capacity
        # has set since (NOT_SERVING while every worker is being replaced).
        if await self.runtime.load() and self.on_loaded is not None:
            await self.on_loaded()

    @property
    def declares_tensors(self) -> bool:
        """Whether the model takes numeric tensors (a runtime), known before it loads."""
        return self.runtime.declares_tensors

    @property
    def signature(self) -> TensorSignature | None:
        """The loaded model's numeric tensors: what `run_rows` takes; None before it loads or for a wrapper."""
        return self.runtime.signature

    async def run(
        self, items: Sequence[Mapping[str, bytes]], detect_drift: bool, explain: bool, request_bytes: int
    ) -> list[ItemResult]:
        """One result per item, in order: a failed check fails only its item, and the rest run.

        Raises the runtime's ModelNotLoadedError, ModelUnavailableError and QueueFullError, and
        OverBudgetError, which concern the whole call; `request_bytes` (the request's size) counts
        against the budget of bytes in flight and decides where items are checked.
        """
        return await self._run(items, detect_drift, explain, request_bytes, sized=False)

    async def run_rows(
        self, rows: Sequence[Mapping[str, bytes]], detect_drift: bool, explain: bool, request_bytes: int
    ) -> list[ItemResult]:
        """`run` for row items of the `signature`'s tensors, which the caller has sized to it (files are
        what model.yaml's rules check; a row is checked by its size alone)."""
        return await self._run(rows, detect_drift, explain, request_bytes, sized=True)

    async def _run(
        self, items: Sequence[Mapping[str, bytes]], detect_drift: bool, explain: bool, request_bytes: int, sized: bool
    ) -> list[ItemResult]:
        if self.closed:
            raise ModelUnavailableError(self._unloaded())
        if self.max_request_bytes is not None and request_bytes > self.max_request_bytes:
            raise OverBudgetError(
                f"the request has {request_bytes} bytes, over the {self.max_request_bytes} bytes that model "
                f"{self.spec.name!r} {self.spec.version} takes (its inputs' maxSize summed, times "
                "features.maxBatchSize, in its model.yaml)"
            )
        self.metrics.items_arrived(len(items))
        self._calls += 1
        self._idle.clear()
        try:
            with self.budget.hold(request_bytes):
                if sized:
                    checked: list[CheckedItem] = [(dict(item), None) for item in items]
                else:
                    with tracing.span(tracing.VALIDATE, len(items)):
                        checked = await self._check(items, request_bytes)
                valid = [item for item, error in checked if error is None]
                answers = iter(await self.runtime.run(valid, detect_drift, explain))
                results = [next(answers) if error is None else ItemResult.failure(error) for _, error in checked]
            if self.closed:  # unloaded while it ran: its items were answered by the closing runtime
                raise ModelUnavailableError(self._unloaded())
        except BaseException:
            self.metrics.items_refused(len(items))
            raise
        finally:
            self._calls -= 1
            if self._calls == 0:
                self._idle.set()
        self.metrics.items_answered(results, invalid=len(items) - len(valid))
        return results

    @property
    def calls_in_flight(self) -> int:
        """Calls between entering `run` and their answer."""
        return self._calls

    async def close(self, grace_seconds: float | None = None) -> None:
        """Drains, then releases the model: calls in flight have `grace_seconds` (None: as long as they take) to
        finish; those still running then, and every call after, get ModelUnavailableError saying it was unloaded."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), grace_seconds)
        self.closed = True
        await self.runtime.close()

    def _unloaded(self) -> str:
        return (
            f"model {self.spec.name!r} version {self.spec.version} was unloaded before this call finished; "
            "call again to reach the versions still served"
        )

    async def _check(self, items: Sequence[Mapping[str, bytes]], request_bytes: int) -> list[CheckedItem]:
        if request_bytes <= CHECK_INLINE_BYTES:
            return self.validator.check_all(items)
        return await asyncio.to_thread(self.validator.check_all, items)


def _retrieve_exception(task: "asyncio.Future[None]") -> None:
    """Marks a background load's failure as seen: runtime.load has logged it already."""
    if not task.cancelled():
        task.exception()


def build_inference(
    settings: Settings,
    bundle: AssetBundle,
    metrics: Recorder = NO_METRICS,
    budget: InflightBudget | None = None,
    project: Path | None = None,
    max_request_bytes: int | None = None,
) -> Inference:
    """The data plane as the settings and model.yaml configure it, its model not loaded yet: the runtime
    model.yaml names, else the settings' model class (from the model folder `project`, for a repository).

    Raises WrapperImportError when the model class cannot be imported or configured.
    """
    spec = bundle.spec
    options = EngineOptions(
        max_batch_size=spec.features.maxBatchSize,
        model_threads=settings.model_threads,
        workers=settings.workers,
        adaptive_batching=settings.adaptive_batching,
        batch_wait_seconds=settings.batch_wait_ms / 1000,
        max_queued_items=settings.max_queued_items,
        run_timeout_seconds=spec.timeout.run_seconds,
    )
    validator = InputValidator(spec, reject_undeclared=settings.undeclared_inputs == "reject")
    source = model_source(bundle, settings.model_class)
    if project is not None and source.config is None:
        source = WrapperSource(source.path, project=str(project))
    label = "" if project is None else f"{slug(spec.name)} {spec.version}"
    runtime = ModelRuntime(source, options, metrics, label)
    return Inference(runtime, validator, spec, metrics, budget, max_request_bytes)
