"""The data plane that every protocol front end calls: check items, run them, one result per item.

It knows no transport. A front end turns its request into items (file name -> bytes) and the
results back into its own answer, so items from every protocol share the one runtime and batcher.
"""

import asyncio
from collections.abc import Mapping, Sequence

from grpc_model.src.runtime import ItemResult, ModelRuntime
from grpc_model.src.security.limits import InflightBudget
from grpc_model.src.validation import CheckedItem, InputValidator

CHECK_INLINE_BYTES = 64 * 1024
"""Requests up to this size are checked on the event loop (about a millisecond); larger ones on a
thread, so that Status, health and other calls keep answering while a large file is checked."""


class Inference:
    def __init__(self, runtime: ModelRuntime, validator: InputValidator, budget: InflightBudget | None = None) -> None:
        self.runtime = runtime
        self.validator = validator
        self.budget = budget or InflightBudget(2**63)

    async def run(
        self, items: Sequence[Mapping[str, bytes]], detect_drift: bool, explain: bool, request_bytes: int
    ) -> list[ItemResult]:
        """One result per item, in order: a failed check fails only its item, and the rest run.

        Raises the runtime's ModelNotLoadedError, ModelUnavailableError and QueueFullError, and
        OverBudgetError, which concern the whole call; `request_bytes` (the request's size) counts
        against the budget of bytes in flight and decides where items are checked.
        """
        with self.budget.hold(request_bytes):
            checked = await self._check(items, request_bytes)
            answers = iter(
                await self.runtime.run([item for item, error in checked if error is None], detect_drift, explain)
            )
            return [next(answers) if error is None else ItemResult.failure(error) for _, error in checked]

    async def _check(self, items: Sequence[Mapping[str, bytes]], request_bytes: int) -> list[CheckedItem]:
        if request_bytes <= CHECK_INLINE_BYTES:
            return self.validator.check_all(items)
        return await asyncio.to_thread(self.validator.check_all, items)
