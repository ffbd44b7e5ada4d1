"""The models a server serves: (name, version) -> the endpoint of that model version (an `Inference`).

Front ends resolve a call's model, then call its endpoint. The single-model server is a registry with one
entry that is also the default, so both servers take one path. Each endpoint is its own engine: batcher,
threads or workers, timeouts and limits from its own model.yaml, so a model that hangs, crashes or fails to
load costs only its own calls. Only the budget of request bytes in flight is shared, server-wide.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from grpc_model.src.inference import Inference
from grpc_model.src.metadata.bundle import version_key
from grpc_model.src.quoting import quoted
from grpc_model.src.repository.layout import ModelFolder
from grpc_model.src.runtime import ModelLoadError

logger = logging.getLogger(__name__)

State = Literal["READY", "LOADING", "UNAVAILABLE", "UNLOADING"]
Builder = Callable[[ModelFolder, str], Inference]
"""Builds the endpoint of a folder's version, its model not loaded yet; raises when it cannot (the message says
why)."""
Scan = Callable[[], Sequence[ModelFolder]]
"""The models on disk now, so that a version or folder added while the server runs can be loaded."""

NOT_LOADED = "not loaded"
UNLOADED = "unloaded"


class UnknownModelError(LookupError):
    """No model of that name, or no version of that number, is served; front ends answer NOT_FOUND (404)."""


@dataclass(frozen=True)
class ModelEntry:
    name: str
    version: str
    state: State
    reason: str = ""
    """Why the version is not READY; empty when it is."""


@dataclass
class _Slot:
    """One version: its endpoint while it is served, else why not."""

    folder: ModelFolder
    version: str
    inference: Inference | None = None
    state: State = "UNAVAILABLE"
    reason: str = NOT_LOADED
    loading: "asyncio.Future[None] | None" = field(default=None, repr=False)


class ModelRegistry:
    def __init__(self, build: Builder, scan: Scan, default: str | None = None, grace_seconds: float = 10.0) -> None:
        """`default` is the model a call that names none goes to (a ModzyModel call without `x-model-name`)."""
        self._build = build
        self._scan = scan
        self.default = default
        self.grace_seconds = grace_seconds
        """How long an unloaded version's calls may go on before they are answered UNAVAILABLE."""
        self._slots: dict[tuple[str, str], _Slot] = {}
        self._problems: dict[str, ModelFolder] = {}
        self.on_change: Callable[[], Awaitable[None]] | None = None
        """Awaited after a version becomes able, or unable, to take work (the wiring reports health)."""
        self._updates: set[asyncio.Future[None]] = set()
        self._found(scan())

    @classmethod
    def single(cls, folder: ModelFolder, inference: Inference) -> "ModelRegistry":
        """The single-model server's registry: one entry, already built, which is also the default."""
        registry = cls(lambda _folder, _version: inference, lambda: [folder], folder.name)
        registry._register(registry._slots[folder.name, folder.versions[0]], inference)
        return registry

    def _found(self, folders: Sequence[ModelFolder]) -> None:
        """Takes note of the folders on disk: their versions become loadable, their problems reported."""
        for folder in folders:
            if folder.problem:
                self._problems[folder.name] = folder
                continue
            self._problems.pop(folder.name, None)
            for version in folder.versions:
                self._slots.setdefault((folder.name, version), _Slot(folder, version))

    def build_all(self) -> None:
        """Builds an endpoint for every version found (its model not loaded yet); a failure marks only its own."""
        for slot in list(self._slots.values()):
            if slot.inference is None:
                self._build_slot(slot)

    def _build_slot(self, slot: _Slot) -> Inference | None:
        try:
            inference = self._build(slot.folder, slot.version)
        except Exception as error:  # a wrapper that cannot be imported or configured, a model.yaml that is wrong
            slot.state, slot.reason = "UNAVAILABLE", f"{slot.folder.path.name}/: {error}"
            logger.error("model %s %s cannot be served: %s", slot.folder.name, slot.version, slot.reason)
            return None
        self._register(slot, inference)
        return inference

    def _register(self, slot: _Slot, inference: Inference) -> None:
        slot.inference, slot.state, slot.reason = inference, "READY", ""
        inference.on_loaded = self._changed
        inference.runtime.on_capacity_change = lambda available: self._capacity_changed(slot, available)

    @property
    def endpoints(self) -> list[Inference]:
        """Every endpoint built and not unloaded (for metrics, and for closing them all)."""
        return [slot.inference for slot in self._slots.values() if slot.inference is not None]

    @property
    def default_inference(self) -> Inference | None:
        """The default model's newest served version, without waiting; None when there is none."""
        if self.default is None:
            return None
        served = self._served(self.default)
        return served[-1].inference if served else None

    def names(self) -> list[str]:
        """Every model's name, served or not."""
        return sorted({name for name, _ in self._slots} | set(self._problems))

    async def resolve(self, name: str | None, version: str | None) -> Inference:
        """The endpoint of `name` at `version`: None name = the default model, None or "" version = its newest
        served version. Raises UnknownModelError, or ModelLoadError for a model whose folder cannot be served."""
        if name is None:
            if self.default is None:
                raise UnknownModelError(f"name a model: this server serves {self._listing()}")
            name = self.default
        if name in self._problems:
            raise ModelLoadError(f"model {name!r} cannot be served: {self._problems[name].problem}")
        served = self._served(name)
        if not version:
            if served:
                return self._endpoint(served[-1])
            if any(known == name for known, _ in self._slots):
                raise UnknownModelError(f"model {name!r} has no version loaded: {self._reasons(name)}")
            raise UnknownModelError(f"no model named {quoted(name)}: this server serves {self._listing()}")
        slot = self._slots.get((name, version))
        if slot is not None and slot.state == "UNAVAILABLE" and slot.reason not in (NOT_LOADED, UNLOADED):
            raise ModelLoadError(f"model {name!r} version {version} cannot be served: {slot.reason}")
        if slot is None or slot not in served:
            if not any(known == name for known, _ in self._slots):
                raise UnknownModelError(f"no model named {quoted(name)}: this server serves {self._listing()}")
            versions = ", ".join(s.version for s in served) or "none"
            raise UnknownModelError(f"model {name!r} has no version {quoted(version)}: this server serves {versions}")
        return self._endpoint(slot)

    def _endpoint(self, slot: _Slot) -> Inference:
        assert slot.inference is not None  # only served slots get here
        return slot.inference

    def served_versions(self, name: str) -> list[str]:
        """The versions of `name` that take calls, oldest first."""
        return [slot.version for slot in self._served(name)]

    def _served(self, name: str) -> list[_Slot]:
        """The versions of `name` that take calls, oldest first."""
        slots = [s for (known, _), s in self._slots.items() if known == name and s.state == "READY" and s.inference]
        return sorted(slots, key=lambda slot: version_key(slot.version))

    def _listing(self) -> str:
        served = sorted({name for (name, _), slot in self._slots.items() if slot.state == "READY"})
        return ", ".join(repr(name) for name in served) or "no model"

    def _reasons(self, name: str) -> str:
        return "; ".join(f"{entry.version}: {entry.reason}" for entry in self.index() if entry.name == name)

    def index(self) -> list[ModelEntry]:
        """Every model version found, served or not, with the reason when it is not READY."""
        entries = [
            ModelEntry(f.name, f.versions[-1] if f.versions else "", "UNAVAILABLE", f.problem)
            for f in self._problems.values()
        ]
        entries += [self._entry(slot) for slot in self._slots.values()]
        return sorted(entries, key=lambda entry: (entry.name, version_key(entry.version or "0")))

    def _entry(self, slot: _Slot) -> ModelEntry:
        name, version = slot.folder.name, slot.version
        runtime = None if slot.inference is None else slot.inference.runtime
        if slot.state != "READY" or runtime is None:
            return ModelEntry(name, version, slot.state, slot.reason)
        if runtime.is_loaded and not runtime.available:
            return ModelEntry(name, version, "UNAVAILABLE", runtime.condition or "the model cannot take work now")
        if not runtime.is_loaded and runtime.last_load_error:
            return ModelEntry(name, version, "UNAVAILABLE", f"the last load failed: {runtime.last_load_error}")
        return ModelEntry(name, version, "READY", "")

    def ready(self, name: str | None = None) -> bool:
        """Whether any version (of `name`, when given) is loaded and can take work."""
        return any(
            slot.inference.runtime.available
            for (known, _), slot in self._slots.items()
            if slot.inference is not None and slot.state == "READY" and name in (None, known)
        )

    async def load_all(self) -> None:
        """Loads every endpoint's model at once; a model that fails is reported, and the others serve."""
        await asyncio.gather(*(self._load_model(inference) for inference in self.endpoints))

    async def _load_model(self, inference: Inference) -> None:
        try:
            await inference.ensure_loaded()
        except ModelLoadError as error:
            logger.error("%s; its calls are answered with this error, and the next one tries again", error)

    async def load(self, name: str, version: str | None = None) -> None:
        """Loads `name` at `version` (None: the newest on disk), found anew on disk, and serves it once its model
        has loaded, beside the versions already served. Raises UnknownModelError, or ModelLoadError."""
        self._found(self._scan())
        if name in self._problems:
            raise ModelLoadError(f"model {name!r} cannot be served: {self._problems[name].problem}")
        versions = sorted((v for known, v in self._slots if known == name), key=version_key)
        if not versions:
            raise UnknownModelError(f"no model named {quoted(name)} in the repository: it holds {self.names()}")
        version = version or versions[-1]
        slot = self._slots.get((name, version))
        if slot is None:
            raise UnknownModelError(f"model {name!r} has no version {quoted(version)}: found {', '.join(versions)}")
        if slot.loading is None:
            slot.loading = asyncio.ensure_future(self._load_slot(slot))
        await asyncio.shield(slot.loading)

    async def _load_slot(self, slot: _Slot) -> None:
        try:
            if slot.state == "READY" and slot.inference is not None:
                await slot.inference.ensure_loaded()
                return
            slot.state, slot.reason = "LOADING", ""
            inference = slot.inference if slot.inference and not slot.inference.closed else None
            if inference is None:
                inference = self._build(slot.folder, slot.version)
            await inference.ensure_loaded()
        except Exception as error:
            slot.state, slot.reason = "UNAVAILABLE", str(error)
            raise ModelLoadError(f"model {slot.folder.name!r} version {slot.version}: {error}") from error
        finally:
            slot.loading = None
        self._register(slot, inference)
        logger.info("model %s %s loaded and served", slot.folder.name, slot.version)
        await self._changed()

    async def unload(self, name: str, version: str | None = None) -> None:
        """Stops serving `name` at `version` (None: every version): new calls no longer reach it, and its calls
        in flight finish within the grace period or are answered UNAVAILABLE. Raises UnknownModelError."""
        slots = [s for (known, v), s in self._slots.items() if known == name and version in (None, v)]
        if not slots:
            raise UnknownModelError(f"no model {quoted(name)}{'' if version is None else ' ' + version} is loaded")
        await asyncio.gather(*(self._unload_slot(slot) for slot in slots))
        await self._changed()

    async def _unload_slot(self, slot: _Slot) -> None:
        inference = slot.inference
        if inference is None:
            return
        slot.state, slot.reason = "UNLOADING", ""
        await inference.close(self.grace_seconds)
        slot.inference, slot.state, slot.reason = None, "UNAVAILABLE", UNLOADED
        logger.info("model %s %s unloaded", slot.folder.name, slot.version)

    async def close(self) -> None:
        """Releases every model (the server is stopping; its calls were drained by the transports)."""
        await asyncio.gather(*(inference.runtime.close() for inference in self.endpoints))

    async def _changed(self) -> None:
        if self.on_change is not None:
            await self.on_change()

    def _capacity_changed(self, slot: _Slot, available: bool) -> None:
        logger.warning("model %s %s capacity %s", slot.folder.name, slot.version, "back" if available else "lost")
        task = asyncio.ensure_future(self._changed())
        self._updates.add(task)
        task.add_done_callback(self._updates.discard)
