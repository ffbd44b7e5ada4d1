"""The data plane that every protocol front end calls: check items, run them, one result per item.

It knows no transport. A front end turns its request into items (file name -> bytes) and the
results back into its own answer, so items from every protocol share the one runtime and batcher.
"""

import asyncio
from collections.abc import Mapping, Sequence

from grpc_model.src.metadata import ModelSpec
from grpc_model.src.runtime import EngineOptions, ItemResult, ModelRuntime
from grpc_model.src.settings import Settings
from grpc_model.src.validation import CheckedItem, InputValidator

CHECK_INLINE_BYTES = 64 * 1024
"""Requests up to this size are checked on the event loop (about a millisecond); larger ones on a
thread, so that Status, health and other calls keep answering while a large file is checked."""


class Inference:
    def __init__(self, runtime: ModelRuntime, validator: InputValidator) -> None:
        self.runtime = runtime
        self.validator = validator

    async def run(
        self, items: Sequence[Mapping[str, bytes]], detect_drift: bool, explain: bool, request_bytes: int
    ) -> list[ItemResult]:
        """One result per item, in order: a failed check fails only its item, and the rest run.

        Raises the runtime's ModelNotLoadedError, ModelUnavailableError and QueueFullError, which
        concern the whole call; `request_bytes` (the request's size) decides where items are checked.
        """
        checked = await self._check(items, request_bytes)
        answers = iter(
            await self.runtime.run([item for item, error in checked if error is None], detect_drift, explain)
        )
        return [next(answers) if error is None else ItemResult.failure(error) for _, error in checked]

    async def _check(self, items: Sequence[Mapping[str, bytes]], request_bytes: int) -> list[CheckedItem]:
        if request_bytes <= CHECK_INLINE_BYTES:
            return self.validator.check_all(items)
        return await asyncio.to_thread(self.validator.check_all, items)


def build_inference(settings: Settings, spec: ModelSpec) -> Inference:
    """The data plane as the settings and model.yaml configure it, its model not loaded yet.

    Raises WrapperImportError when the model class cannot be imported or configured.
    """
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
    return Inference(ModelRuntime(settings.model_class, options), validator)
