"""The models a server serves: (name, version) -> the endpoint of that model version (an `Inference`).

Front ends resolve a call's model, then call its endpoint. The single-model server is a registry with one
entry that is also the default, so both servers take one path. Each endpoint is its own engine: batcher,
threads or workers, timeouts and limits from its own model.yaml, so a model that hangs, crashes or fails to
load costs only its own calls. Only the budget of request bytes in flight is shared, server-wide.
"""

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from grpc_model.src.inference import Inference
from grpc_model.src.metadata import BundleError, load_bundle
from grpc_model.src.metadata.bundle import version_key
from grpc_model.src.quoting import quoted
from grpc_model.src.repository.budget import LoadBudget
from grpc_model.src.repository.layout import ModelFolder
from grpc_model.src.runtime import ModelLoadError, WrapperImportError
from grpc_model.src.runtime.items import describe

logger = logging.getLogger(__name__)

State = Literal["READY", "LOADING", "UNAVAILABLE", "UNLOADING"]
Builder = Callable[[ModelFolder, str], Inference]
"""Builds the endpoint of a folder's version, its model not loaded yet; raises when it cannot (the message says
why)."""
Scan = Callable[[], Sequence[ModelFolder]]
"""The models on disk now, so that a version or folder added while the server runs can be loaded."""

NOT_LOADED = "not loaded"
UNLOADED = "unloaded"
IDLE = (NOT_LOADED, UNLOADED)
"""The reasons of a version that is not served but not broken either."""
ON_DEMAND = "a call loads it again"
ON_DEMAND_ATTEMPTS = 3
"""The end of the reason of a version the memory budget unloaded: it is not loaded, but a call loads it."""


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
    unloading: "asyncio.Future[None] | None" = field(default=None, repr=False)


class ModelRegistry:
    def __init__(
        self,
        build: Builder,
        scan: Scan,
        default: str | None = None,
        grace_seconds: float = 10.0,
        memory: LoadBudget | None = None,
    ) -> None:
        """`default` is the model a call that names none goes to (a ModzyModel call without `x-model-name`)."""
        self._build = build
        self._scan = scan
        self.default = default
        self.grace_seconds = grace_seconds
        """How long an unloaded version's calls may go on before they are answered UNAVAILABLE."""
        self.memory = memory or LoadBudget()
        """Which versions stay loaded (max_loaded_models, max_loaded_bytes); with a limit, a call for a version
        that is not loaded loads it, after the least recently used idle ones make room (repository/budget.py)."""
        self._slots: dict[tuple[str, str], _Slot] = {}
        self._routes: dict[str, list[_Slot]] = {}
        """Each model's served versions, oldest first: what `resolve` reads, kept by `_mark`."""
        self._problems: dict[str, ModelFolder] = {}
        self.on_change: Callable[[], Awaitable[None]] | None = None
        """Awaited after a version becomes able, or unable, to take work (the wiring reports health)."""
        self._updates: set[asyncio.Future[None]] = set()
        self.may_fork = True
        """Whether the endpoints built from now on may fork their worker processes (until `serving`)."""
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

    def _build_slot(self, slot: _Slot) -> None:
        try:
            inference = self._built(slot)
        except Exception as error:  # a wrapper that cannot be imported or configured, a model.yaml that is wrong
            explained = isinstance(error, WrapperImportError | BundleError)  # their messages say what to do
            self._mark(slot, "UNAVAILABLE", f"{slot.folder.path.name}/: {error if explained else describe(error)}")
            logger.error("model %s %s cannot be served: %s", slot.folder.name, slot.version, slot.reason)
            return
        self._register(slot, inference)

    def _built(self, slot: _Slot) -> Inference:
        inference = self._build(slot.folder, slot.version)
        inference.runtime.may_fork = self.may_fork
        return inference

    def serving(self) -> None:
        """The server serves now: worker processes of every model, and of those loaded later, are spawned from
        here on, since forking a process with gRPC threads is unsafe."""
        self.may_fork = False
        for inference in self.endpoints:
            inference.runtime.may_fork = False

    def _register(self, slot: _Slot, inference: Inference) -> None:
        slot.inference = inference
        self._mark(slot, "READY", "")
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
        served version. Raises UnknownModelError, or ModelLoadError for a version (or a folder) that cannot be
        served; a folder that turns bad on disk leaves its versions already served serving."""
        if name is None:
            if self.default is None:
                raise UnknownModelError(f"name a model: this server serves {self._listing()}")
            name = self.default
        if self.memory.limited:
            await self._load_on_demand(name, version)
        served = self._served(name)
        slot = served[-1] if served and not version else self._slots.get((name, version or ""))
        if slot is not None and slot in served:
            return self._endpoint(slot)
        if slot is not None and slot.state == "UNAVAILABLE" and slot.reason not in (*IDLE, self._evicted):
            raise ModelLoadError(f"model {name!r} version {version} cannot be served: {slot.reason}")
        if name in self._problems:
            raise ModelLoadError(f"model {name!r} cannot be served: {self._problems[name].problem}")
        if not any(known == name for known, _ in self._slots):
            raise UnknownModelError(f"no model named {quoted(name)}: this server serves {self._listing()}")
        if version:
            versions = ", ".join(s.version for s in served) or "none"
            raise UnknownModelError(f"model {name!r} has no version {quoted(version)}: this server serves {versions}")
        if any(s.reason not in ("", *IDLE) for (known, _), s in self._slots.items() if known == name):
            raise ModelLoadError(f"model {name!r} cannot be served: {self._reasons(name)}")
        raise UnknownModelError(f"model {name!r} has no version loaded: {self._reasons(name)}")

    async def _load_on_demand(self, name: str, version: str | None) -> None:
        """Loads the version a call needs when the memory budget left it unloaded (or never loaded it): the version
        named, else the newest, unless some version is served. One a client unloaded stays unloaded. While every
        other model is busy, the budget may unload it again before this call reaches it: then it loads again."""
        for _ in range(ON_DEMAND_ATTEMPTS):
            slots = sorted(
                (s for (known, _), s in self._slots.items() if known == name), key=lambda s: version_key(s.version)
            )
            slots = [slot for slot in slots if slot.version == version] if version else slots
            if not slots or any(slot in self._served(name) for slot in slots):
                return
            slot = slots[-1]
            if slot.unloading is not None and slot.reason == self._evicted:
                await asyncio.shield(slot.unloading)  # being unloaded to make room: loaded again once it is gone
            if not (slot.loading or (slot.inference is None and slot.reason in (NOT_LOADED, self._evicted))):
                return
            await self.load(name, slot.version)

    @property
    def _evicted(self) -> str:
        """The reason of a version the memory budget unloaded."""
        return f"unloaded to make room ({self.memory}); {ON_DEMAND}"

    def _endpoint(self, slot: _Slot) -> Inference:
        assert slot.inference is not None  # only served slots get here
        return slot.inference

    def served_versions(self, name: str) -> list[str]:
        """The versions of `name` that take calls, oldest first."""
        return [slot.version for slot in self._served(name)]

    def _served(self, name: str) -> list[_Slot]:
        """The versions of `name` that take calls, oldest first."""
        return self._routes.get(name, [])

    def _mark(self, slot: _Slot, state: State, reason: str) -> None:
        """Sets the version's state, and the routes with it: calls reach READY versions only."""
        slot.state, slot.reason = state, reason
        name = slot.folder.name
        served = [s for (known, _), s in self._slots.items() if known == name and s.state == "READY" and s.inference]
        self._routes[name] = sorted(served, key=lambda each: version_key(each.version))

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
        """Loads every endpoint's model at once; a model that fails is reported, and the others serve. With a
        memory budget, the versions that fit, by name and newest first; the others load on their first call."""
        if not self.memory.limited:
            await asyncio.gather(*(self._load_model(inference) for inference in self.endpoints))
            return
        newest_first = sorted(self._slots.values(), key=lambda slot: version_key(slot.version), reverse=True)
        for slot in sorted(newest_first, key=lambda slot: slot.folder.name):
            key = (slot.folder.name, slot.version)
            try:
                size = self.memory.cost(
                    key, load_bundle(slot.folder.asset_bundle_dir, slot.version).spec.resources.memory.size
                )
            except Exception as error:  # the load reports it, on the first call
                size = 0
                logger.debug("model %s %s: %s", *key, error)
            if self.memory.has_room(size):
                try:
                    await self.load(*key)
                except ModelLoadError as error:
                    logger.error("%s; its calls are answered with this error, and the next one tries again", error)

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
        """Loads the version; one loaded already is loaded again (Triton's reload): a new instance serves once it
        has loaded, and the old one answers its calls before it is released."""
        key = (slot.folder.name, slot.version)
        current = slot.inference if slot.state == "READY" else None
        admitted = False
        try:
            if current is not None and not current.runtime.is_loaded:  # built at start-up, loaded on first use
                await current.ensure_loaded()
                return
            if current is None:
                self._mark(slot, "LOADING", "")
                inference = slot.inference if slot.inference and not slot.inference.closed else None
                inference = inference or self._built(slot)
                if inference.closed:  # the single-model server builds its one instance once
                    raise ModelLoadError(
                        "this server's one model cannot be loaded again once unloaded: restart the server (a "
                        "repository server, --repository, builds a model anew for each load)"
                    )
                await self._make_room(key, inference)
                admitted = True
            else:
                inference = self._built(slot)
                if inference is current:  # the single-model server's one instance
                    return
            await inference.ensure_loaded()
        except Exception as error:
            if current is None:
                self._mark(slot, "UNAVAILABLE", str(error))
            if admitted:
                self.memory.failed(key)
            raise ModelLoadError(f"model {slot.folder.name!r} version {slot.version}: {error}") from error
        finally:
            slot.loading = None
        self._register(slot, inference)
        if current is None:
            self.memory.loaded(key)
        inference.lease = functools.partial(self.memory.use, key)
        logger.info(
            "model %s %s %s and served", slot.folder.name, slot.version, "loaded" if current is None else "reloaded"
        )
        if current is not None:
            await current.close(self.grace_seconds)
        await self._changed()

    async def _make_room(self, key: tuple[str, str], inference: Inference) -> None:
        """Reserves the version's room in the memory budget, first unloading what it names; waits while every
        loaded model is busy, as long as the model's timeout.status."""
        size = self.memory.cost(key, inference.spec.resources.memory.size)
        try:
            victims = await asyncio.wait_for(self.memory.admit(key, size), inference.spec.timeout.status_seconds)
        except TimeoutError:
            raise ModelLoadError(
                f"no room to load it ({self.memory}) while every loaded model is answering calls; call again"
            ) from None
        for victim in victims:
            logger.info("model %s %s unloaded to make room for %s %s", *victim, *key)
        await asyncio.gather(*(self._unload_slot(self._slots[victim], self._evicted) for victim in victims))

    async def unload(self, name: str, version: str | None = None) -> None:
        """Stops serving `name` at `version` (None: every version): new calls no longer reach it, and its calls
        in flight finish within the grace period or are answered UNAVAILABLE. Raises UnknownModelError."""
        slots = [s for (known, v), s in self._slots.items() if known == name and version in (None, v)]
        if not slots:
            raise UnknownModelError(f"no model {quoted(name)}{'' if version is None else ' ' + version} is loaded")
        await asyncio.gather(*(self._unload_slot(slot) for slot in slots))
        await self._changed()

    async def _unload_slot(self, slot: _Slot, reason: str = UNLOADED) -> None:
        """`reason` says why, in the index: a client's unload, or the memory budget's (shown while unloading)."""
        inference = slot.inference
        if inference is None:
            return
        self._mark(slot, "UNLOADING", "" if reason == UNLOADED else reason)
        logger.info(
            "model %s %s unloading: %d call(s) in flight have %g s to finish",
            slot.folder.name,
            slot.version,
            inference.calls_in_flight,
            self.grace_seconds,
        )
        unloaded = slot.unloading = asyncio.get_running_loop().create_future()
        try:
            await inference.close(self.grace_seconds)
        finally:
            slot.inference, slot.unloading = None, None
            self._mark(slot, "UNAVAILABLE", reason)
            self.memory.unloaded((slot.folder.name, slot.version))
            unloaded.set_result(None)
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
