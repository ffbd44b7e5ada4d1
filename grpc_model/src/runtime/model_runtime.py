"""The model's lifecycle on the server: loading once, then running items off the event loop.

The wrapper is not assumed to be thread-safe, so every call into it (the load included)
runs on one dedicated thread; the event loop stays free to answer Status and health
while the model works.
"""

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from grpc_model.src.runtime.items import ItemResult, process_items
from grpc_model.src.runtime.loader import LoadedModel, import_wrapper_class, instantiate
from model_lib.src.model_wrapper import ModelInput

logger = logging.getLogger(__name__)


class ModelLoadError(Exception):
    """The wrapper's `__init__` raised; the message says why."""


class ModelNotLoadedError(Exception):
    """Run was called before the model was loaded."""


class ModelRuntime:
    def __init__(self, model_class: str, max_batch_size: int) -> None:
        """Imports the wrapper class now, so a typo in its name stops start-up, not the first call."""
        self.wrapper_class = import_wrapper_class(model_class)
        self.max_batch_size = max_batch_size
        self._model: LoadedModel | None = None
        self._load_lock = asyncio.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")

    @property
    def is_loaded(self) -> bool:
        return self._model is not None

    async def load(self) -> bool:
        """Loads the model unless it is loaded; True when this call did the loading.

        Concurrent callers wait for one load instead of starting several. A failed load
        leaves the runtime unloaded, so a later call tries again.
        """
        async with self._load_lock:
            if self._model is not None:
                return False
            loop = asyncio.get_running_loop()
            try:
                self._model = await loop.run_in_executor(self._executor, instantiate, self.wrapper_class)
            except BaseException as error:
                logger.exception("loading %s failed", self.wrapper_class.__name__)
                raise ModelLoadError(
                    f"{self.wrapper_class.__name__} failed to load: {type(error).__name__}: {error}"
                ) from error
            logger.info("model %s loaded", self.wrapper_class.__name__)
            return True

    async def run(self, items: Sequence[ModelInput], detect_drift: bool, explain: bool) -> list[ItemResult]:
        """One result per item, in order; items are given to the model in slices of `max_batch_size`."""
        model = self._model
        if model is None:
            raise ModelNotLoadedError("the model is not loaded: call Status first, which loads it")
        loop = asyncio.get_running_loop()
        results: list[ItemResult] = []
        for start in range(0, len(items), self.max_batch_size):
            chunk = items[start : start + self.max_batch_size]
            results += await loop.run_in_executor(self._executor, process_items, model, chunk, detect_drift, explain)
        return results

    def close(self) -> None:
        """Releases the model thread; work already running finishes on its own."""
        self._executor.shutdown(wait=False, cancel_futures=True)
