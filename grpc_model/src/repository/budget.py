"""Which models stay loaded: a budget of loaded models that unloads the least recently used idle one to make room.

A repository of many small models rarely needs all of them at once (KServe's ModelMesh keeps only those in use;
MLServer and Triton load what they are told to). The budget is a count of loaded models (`max_loaded_models`)
and/or a sum of bytes, each model costing its model.yaml's `resources.memory.size` (`max_loaded_bytes`). A call for
a model that is not loaded asks the budget for room; when there is none, the least recently used model that no
call is using gives it up. A model some call is using is never chosen: while every loaded model is busy, the new
load waits for one to finish (its caller bounds the wait).

This module is the policy only: it decides, and the registry loads and unloads. Its order of use is a logical
clock (one tick per use), not wall-clock time, so ties and order are exact.
"""

import asyncio
import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum

from grpc_model.src.metadata import BundleError
from grpc_model.src.metadata.units import parse_size

__all__ = ["BudgetError", "LoadBudget", "ModelKey"]

ModelKey = tuple[str, str]
"""A model version: (name, version)."""


class BudgetError(BundleError):
    """A model the budget can never hold (larger than the byte budget, or of unknown size under one): its
    model.yaml is wrong for this server, which start-up reports as it reports any model.yaml problem."""


class _State(Enum):
    LOADING = "loading"
    LOADED = "loaded"
    EVICTING = "evicting"


@dataclass
class _Entry:
    state: _State
    size: int
    busy: int = 0
    last_used: int = 0


class LoadBudget:
    """Room for loaded models; 0 for a limit means none.

    Every method runs on the server's event loop. The registry calls, for a model it is about to load,
    `admit` (which may name models to unload first), then `loaded` or `failed`; `unloaded` when a model is gone,
    whoever unloaded it; and wraps every call that uses a model in `use`.
    """

    def __init__(self, max_models: int = 0, max_bytes: int = 0) -> None:
        self.max_models = max_models
        self.max_bytes = max_bytes
        self._entries: dict[ModelKey, _Entry] = {}
        self._clock = itertools.count(1)
        self._changed = asyncio.Event()
        """Set (and replaced) whenever room may have been freed: what a waiting `admit` waits for."""

    @property
    def limited(self) -> bool:
        return self.max_models > 0 or self.max_bytes > 0

    def __str__(self) -> str:
        """The limits, as error messages and the index name them."""
        limits = [f"max_loaded_models {self.max_models}"] if self.max_models else []
        return ", ".join(limits + ([f"max_loaded_bytes {self.max_bytes}"] if self.max_bytes else [])) or "no limit"

    def has_room(self, size: int) -> bool:
        """Whether a model of `size` bytes fits beside every model that holds room, none unloaded."""
        return self._fits(len(self._entries) + 1, sum(entry.size for entry in self._entries.values()) + size)

    def cost(self, key: ModelKey, memory: str) -> int:
        """The bytes a model counts for, from its model.yaml's `resources.memory.size` (`memory`); 0 without a byte
        budget. Raises BudgetError for a model that could never fit, so that start-up says so."""
        if not self.max_bytes:
            return 0
        name = f"{key[0]} {key[1]}"
        if not memory:
            raise BudgetError(
                f"{name}: model.yaml has no resources.memory.size, which max_loaded_bytes ({self.max_bytes} bytes) "
                "needs of every model: set it to what one loaded instance takes"
            )
        size = parse_size(memory)
        if size > self.max_bytes:
            raise BudgetError(
                f"{name}: resources.memory.size ({memory}, {size} bytes) is over max_loaded_bytes "
                f"({self.max_bytes} bytes): it could never be loaded"
            )
        return size

    async def admit(self, key: ModelKey, size: int) -> list[ModelKey]:
        """Reserves room for `key`, about to load; returns the models to unload first, least recently used first.

        Waits while the room can only be made by unloading a model that a call is using; the caller bounds the
        wait (a cancelled wait reserves nothing). The models returned are the caller's to unload; until each
        is `unloaded`, it still counts, so that no other load takes the room meanwhile.
        """
        if key in self._entries:
            raise ValueError(f"{key[0]} {key[1]} already holds room")  # the registry loads a model once at a time
        while (victims := self._victims(size)) is None:
            await self._changed.wait()
        for victim in victims:
            self._entries[victim].state = _State.EVICTING
        self._entries[key] = _Entry(_State.LOADING, size)
        return victims

    def _victims(self, size: int) -> list[ModelKey] | None:
        """The fewest least recently used idle models whose unloading makes room for a model of `size` bytes;
        None when unloading every idle one would not."""
        models = len(self._entries) + 1
        total = sum(entry.size for entry in self._entries.values()) + size
        idle = sorted(
            (entry.last_used, key)
            for key, entry in self._entries.items()
            if entry.state is _State.LOADED and entry.busy == 0
        )
        victims: list[ModelKey] = []
        candidates = iter(idle)
        while not self._fits(models, total):
            candidate = next(candidates, None)
            if candidate is None:
                return None
            victims.append(candidate[1])
            models -= 1
            total -= self._entries[candidate[1]].size
        return victims

    def _fits(self, models: int, total: int) -> bool:
        return (not self.max_models or models <= self.max_models) and (not self.max_bytes or total <= self.max_bytes)

    def loaded(self, key: ModelKey) -> None:
        """The load that `admit` made room for succeeded; the model counts as just used."""
        self._entries[key] = _Entry(_State.LOADED, self._entries[key].size, last_used=next(self._clock))

    def failed(self, key: ModelKey) -> None:
        """The load that `admit` made room for failed: its room is free again."""
        self.unloaded(key)

    def unloaded(self, key: ModelKey) -> None:
        """The model is gone (evicted, unloaded through the repository API, or never loaded): its room is free."""
        if self._entries.pop(key, None) is not None:
            self._notify()

    def counts(self, key: ModelKey) -> bool:
        """Whether the model holds room: loading, loaded, or being unloaded."""
        return key in self._entries

    @contextmanager
    def use(self, key: ModelKey) -> Iterator[None]:
        """Marks the model busy for a call (it cannot be chosen to unload) and as the most recently used."""
        entry = self._entries.get(key)
        if entry is None:  # not counted (no budget, or unloaded meanwhile): nothing to protect
            yield
            return
        entry.busy += 1
        entry.last_used = next(self._clock)
        try:
            yield
        finally:
            entry.busy -= 1
            entry.last_used = next(self._clock)
            if entry.busy == 0:
                self._notify()

    def order(self) -> list[ModelKey]:
        """The loaded models, least recently used first (for the index and tests)."""
        loaded = [(entry.last_used, key) for key, entry in self._entries.items() if entry.state is _State.LOADED]
        return [key for _, key in sorted(loaded)]

    def _notify(self) -> None:
        """Wakes every load waiting for room, to look again."""
        self._changed.set()
        self._changed = asyncio.Event()
