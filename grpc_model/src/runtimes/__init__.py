"""Runtimes: wrappers the framework ships, which serve a model file named in model.yaml with no model_lib code.

Each library is an optional extra of the package; nothing here imports one. The runtime's module is
imported (by its path, like a user's wrapper) only once its extra is known to be installed.
"""

import importlib.util
import math
from dataclasses import dataclass
from typing import get_args

from grpc_model.src.metadata import AssetBundle, RuntimeKind
from grpc_model.src.runtime import WrapperImportError, WrapperSource
from grpc_model.src.runtimes.config import RuntimeConfig, RuntimeLoadError

__all__ = [
    "RUNTIMES",
    "RuntimeConfig",
    "RuntimeLoadError",
    "RuntimeModule",
    "model_source",
    "runtime_extra",
    "wrapper_source",
]


@dataclass(frozen=True)
class RuntimeModule:
    wrapper: str
    """The runtime's wrapper class, `package.module:Class`."""
    extra: str
    """The package's extra (pyproject.toml's optional-dependencies) that installs its library."""
    modules: tuple[str, ...]
    """What it imports from that extra."""


RUNTIMES: dict[str, RuntimeModule] = {
    "sklearn": RuntimeModule(
        "grpc_model.src.runtimes.sklearn_runtime:SklearnRuntime", "sklearn", ("numpy", "sklearn", "joblib")
    ),
    "xgboost": RuntimeModule("grpc_model.src.runtimes.xgboost_runtime:XGBoostRuntime", "xgboost", ("numpy", "xgboost")),
    "lightgbm": RuntimeModule(
        "grpc_model.src.runtimes.lightgbm_runtime:LightGBMRuntime", "lightgbm", ("numpy", "lightgbm")
    ),
    "onnx": RuntimeModule("grpc_model.src.runtimes.onnx_runtime:OnnxRuntime", "onnx", ("numpy", "onnxruntime")),
}
assert set(RUNTIMES) == set(get_args(RuntimeKind)), "every kind model.yaml accepts has a runtime"


def runtime_extra(bundle: AssetBundle) -> str | None:
    """The extra the bundle's runtime needs; None for a model_lib wrapper."""
    runtime = bundle.spec.runtime
    return None if runtime is None else RUNTIMES[runtime.kind].extra


def wrapper_source(bundle: AssetBundle) -> WrapperSource | None:
    """The runtime model.yaml names, configured from the bundle; None when it names none (a model_lib wrapper).

    Raises WrapperImportError, naming the extra to install, when the runtime's library is missing.
    """
    runtime = bundle.spec.runtime
    if runtime is None:
        return None
    module = RUNTIMES[runtime.kind]
    missing = [name for name in module.modules if importlib.util.find_spec(name) is None]
    if missing:
        raise WrapperImportError(
            f"model.yaml's runtime.kind {runtime.kind} needs the package's optional extra `{module.extra}` "
            f'({", ".join(missing)} not installed): `pip install "grpc-model[{module.extra}]"`, or in a project '
            f"the dependency `grpc-model[{module.extra}]` (docs/package.md); in the template repository "
            f"`scripts/dev.sh install --add {module.extra}`"
        )
    resources = bundle.spec.resources
    config = RuntimeConfig(
        kind=runtime.kind,
        path=(bundle.path / runtime.file).resolve(),
        features=tuple(runtime.features),
        input_file=next(iter(bundle.spec.inputs)),
        threads=max(1, math.floor(resources.cpu.count)),
        gpu=resources.gpu.count > 0,
    )
    return WrapperSource(module.wrapper, config)


def model_source(bundle: AssetBundle, model_class: str) -> WrapperSource:
    """What serves the bundle: the runtime its model.yaml names, else the model class of the settings."""
    return wrapper_source(bundle) or WrapperSource(model_class)
