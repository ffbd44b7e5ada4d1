"""The registry on its own (repository/registry.py): which version a call reaches while versions load and unload."""

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from grpc_model.src.inference import Inference, build_inference
from grpc_model.src.metadata import load_bundle
from grpc_model.src.repository.layout import ModelFolder, find_models
from grpc_model.src.repository.registry import ModelRegistry, UnknownModelError
from grpc_model.src.runtime import ModelLoadError
from grpc_model.src.settings import Settings
from grpc_model.tests.conftest import PATIENCE_SECONDS, TESTS
from grpc_model.tests.repository_models import write_bundle, write_wrapper_model
from grpc_model.tests.wrappers import HeldLoad

WRAPPERS = {"0.1.0": "Echo", "0.2.0": "HeldLoad", "0.3.0": "FailingInit"}
"""The test wrapper each version of `alpha` runs: what the registry does around a load, not the model, matters."""


def builder(folder: ModelFolder, version: str) -> Inference:
    settings = Settings(model_class=f"{TESTS}:{WRAPPERS[version]}")
    return build_inference(settings, load_bundle(folder.asset_bundle_dir, version))


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    write_wrapper_model(tmp_path, "alpha", "alpha", ("0.1.0",))
    write_wrapper_model(tmp_path, "beta", "beta")
    return tmp_path


async def until(condition: Callable[[], bool], what: str) -> None:
    """Polls `condition` on the event loop within PATIENCE_SECONDS."""
    deadline = asyncio.get_running_loop().time() + PATIENCE_SECONDS
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"waited {PATIENCE_SECONDS:g} s for {what}"
        await asyncio.sleep(0.01)


def test_a_version_takes_calls_only_once_it_has_loaded(repository: Path) -> None:
    HeldLoad.release.clear()

    async def scenario() -> None:
        registry = ModelRegistry(builder, lambda: find_models(repository), default="alpha")
        await registry.load("alpha")
        write_bundle(repository / "alpha" / "asset_bundle", "alpha", "0.2.0")
        loading = asyncio.ensure_future(registry.load("alpha"))  # the newest on disk, found now
        await until(lambda: ("alpha", "0.2.0", "LOADING") in states(registry), "0.2.0 to be loading")

        assert (await registry.resolve(None, None)).spec.version == "0.1.0"
        with pytest.raises(UnknownModelError, match=r"model 'alpha' has no version '0.2.0': this server serves 0.1.0"):
            await registry.resolve("alpha", "0.2.0")
        HeldLoad.release.set()
        await loading

        assert (await registry.resolve(None, "")).spec.version == "0.2.0"
        assert (await registry.resolve("alpha", "0.1.0")).spec.version == "0.1.0"
        assert registry.served_versions("alpha") == ["0.1.0", "0.2.0"]
        await registry.close()

    asyncio.run(scenario())


def test_a_failed_load_is_in_the_index_with_its_reason_and_the_old_version_serves_on(repository: Path) -> None:
    async def scenario() -> None:
        registry = ModelRegistry(builder, lambda: find_models(repository), default="alpha")
        await registry.load("alpha")
        write_bundle(repository / "alpha" / "asset_bundle", "alpha", "0.3.0")

        with pytest.raises(ModelLoadError, match=r"model 'alpha' version 0\.3\.0: .*FailingInit failed to load"):
            await registry.load("alpha", "0.3.0")

        (failed,) = [entry for entry in registry.index() if entry.version == "0.3.0"]
        assert failed.state == "UNAVAILABLE"
        assert "FailingInit failed to load" in failed.reason
        assert (await registry.resolve("alpha", None)).spec.version == "0.1.0"
        with pytest.raises(ModelLoadError, match=r"model 'alpha' version 0\.3\.0 cannot be served"):
            await registry.resolve("alpha", "0.3.0")
        await registry.close()

    asyncio.run(scenario())


def test_unknown_names_are_refused_naming_what_there_is(repository: Path) -> None:
    async def scenario() -> None:
        registry = ModelRegistry(builder, lambda: find_models(repository))
        registry.build_all()
        with pytest.raises(UnknownModelError, match=r"^name a model: this server serves 'alpha', 'beta'$"):
            await registry.resolve(None, None)
        with pytest.raises(UnknownModelError, match=r"no model named 'gamma' in the repository: it holds"):
            await registry.load("gamma")
        with pytest.raises(UnknownModelError, match=r"no model 'gamma' is loaded"):
            await registry.unload("gamma")
        await registry.unload("beta")
        with pytest.raises(UnknownModelError, match=r"model 'beta' has no version loaded: 0.1.0: unloaded"):
            await registry.resolve("beta", None)
        await registry.close()

    asyncio.run(scenario())


def states(registry: ModelRegistry) -> list[tuple[str, str, str]]:
    return [(entry.name, entry.version, entry.state) for entry in registry.index()]
