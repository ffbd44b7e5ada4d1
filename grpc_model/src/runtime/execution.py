"""Where model calls run: threads of this process, or worker processes (see workers.py).

An executor offers `slots` model calls at once; `run_batch` waits for a free slot, so
callers may oversubscribe it safely. The batcher keeps at most `slots` batches in flight.
"""

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from grpc_model.src.runtime.items import ItemResult, process_items
from grpc_model.src.runtime.loader import LoadedModel
from model_lib.src.model_wrapper import ModelInput


class ModelExecutor(Protocol):
    @property
    def slots(self) -> int:
        """How many model calls may run at once."""
        ...

    async def run_batch(self, items: Sequence[ModelInput], detect_drift: bool, explain: bool) -> list[ItemResult]:
        """One result per item, in order (a batch call with per-item fallback)."""
        ...

    async def close(self) -> None: ...


class ThreadExecutor:
    """Runs the model on `threads` dedicated threads, keeping the event loop free."""

    def __init__(self, model: LoadedModel, threads: int) -> None:
        self.model = model
        self.slots = threads
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="model")

    async def run_batch(self, items: Sequence[ModelInput], detect_drift: bool, explain: bool) -> list[ItemResult]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, process_items, self.model, items, detect_drift, explain)

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
