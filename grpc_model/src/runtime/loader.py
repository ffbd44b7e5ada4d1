"""Finding and instantiating the model wrapper class: the user's, or a runtime the framework ships."""

import hashlib
import importlib
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from grpc_model.src.runtime.signature import TensorSignature
from grpc_model.wrapper import ModelInput, ModelOutput, ModelWrapper

SingleMethod = Callable[[ModelInput, bool, bool], ModelOutput]
BatchMethod = Callable[[list[ModelInput], bool, bool], list[ModelOutput]]

# Current names first; the seed template's names are accepted so old wrappers run unchanged.
SINGLE_METHOD_NAMES = ("handle_single_input", "handle_discrete_input")
BATCH_METHOD_NAMES = ("handle_input_batch", "handle_discrete_input_batch")


class WrapperImportError(Exception):
    """The configured wrapper class cannot be found or does not fulfil the contract."""


@dataclass(frozen=True)
class WrapperSource:
    """What to load, in a form that crosses to a spawned worker process (picklable).

    A user's wrapper is its class's path, and its `__init__` takes nothing; a runtime the framework
    ships is its class's path and its configuration (from model.yaml), which its `__init__` takes.
    """

    path: str
    config: object | None = None
    project: str = ""
    """The model project directory that holds the class's package, when it is one folder of a repository:
    every folder has its own `model_lib`, so each is imported apart (see `import_from_project`)."""

    def load(self) -> "LoadedModel":
        return instantiate(import_wrapper_class(self.path, self.project), self.config)


@dataclass(frozen=True)
class LoadedModel:
    """A wrapper instance with its methods resolved once, at load time."""

    name: str
    instance: Any
    single: SingleMethod
    batch: BatchMethod | None
    signature: TensorSignature | None = None
    """The numeric tensors it takes as row items, when it declares them (the runtimes do)."""


def import_wrapper_class(path: str, project: str = "") -> type:
    """Imports `package.module:ClassName`, or the one wrapper class of `package.module`, from `project` when
    given (a repository's model folder), else from the import path.

    A module path alone lets an author rename the class (or keep the seed template's name)
    without telling the server anything.
    """
    module_name, sep, class_name = path.partition(":")
    if not project:
        project_importable()
    if not module_name or module_name.startswith(".") or (sep and not class_name):  # no relative imports
        raise WrapperImportError(f"model class {path!r} must look like 'package.module' or 'package.module:ClassName'")
    try:
        module = import_from_project(project, module_name) if project else importlib.import_module(module_name)
    except ImportError as error:
        raise WrapperImportError(f"cannot import module {module_name!r} of model class {path!r}: {error}") from error
    found = _wrapper_classes(module)
    if not sep:
        if len(found) != 1:
            names = ", ".join(sorted(cls.__name__ for cls in found)) or "none"
            raise WrapperImportError(
                f"module {module_name!r} must define exactly one model class (a class with "
                f"{' or '.join(SINGLE_METHOD_NAMES)}) to serve; it defines: {names}. Keep one there, "
                f"or name one with GRPC_MODEL_MODEL_CLASS={module_name}:<ClassName>"
            )
        return found[0]
    wrapper_class = getattr(module, class_name, None)
    if not isinstance(wrapper_class, type):
        defined = ", ".join(sorted(cls.__name__ for cls in found)) or "none"
        raise WrapperImportError(
            f"module {module_name!r} has no class {class_name!r}; model classes it defines: {defined}. "
            f"Name yours with GRPC_MODEL_MODEL_CLASS={module_name}:<ClassName>, or leave the setting unset "
            f"to serve the one model class of {module_name!r}"
        )
    if _user_method(wrapper_class, SINGLE_METHOD_NAMES) is None:
        raise WrapperImportError(f"{path} must define one of {' or '.join(SINGLE_METHOD_NAMES)}")
    return wrapper_class


def project_importable(directory: str | None = None) -> None:
    """Puts the model project's directory (default: the working directory) on the import path, last.

    A model project that depends on the framework as a package is not installed itself: its `model_lib/` sits in
    the directory the author runs `grpc-model` from. `python -m` finds it there, but an installed command
    (`grpc-model serve`, `grpc-model-server`) puts only its own directory on the path, so the server would not.
    Last, so that nothing installed is shadowed by a file of the project's; the template repository's model is
    found first through the editable install, as before. Worker processes inherit the path.
    """
    project = os.path.abspath(directory or os.getcwd())
    if project not in (os.path.abspath(entry or os.curdir) for entry in sys.path):
        sys.path.append(project)


_ISOLATED_IMPORTS = threading.Lock()


def import_from_project(project: str, module_name: str) -> ModuleType:
    """Imports `module_name` from the project directory, apart from every other project's package of that name.

    Every folder of a repository has a package called `model_lib`, and sys.modules holds one module per name.
    So the package is imported while only this project's copy is visible (its own absolute imports of
    `model_lib...` find its own files), and then kept in sys.modules under a name of this project's alone,
    `_grpc_model_project_<hash>.model_lib...`, which the next import of the same folder finds. A package that
    the project does not hold (an installed one) is imported as usual. Imports the wrapper makes later, at call
    time, of its own package find none: a wrapper imports its modules when it is imported, as most do.
    """
    top = module_name.partition(".")[0]
    root = Path(project)
    if not ((root / top).is_dir() or (root / f"{top}.py").is_file()):
        return importlib.import_module(module_name)
    alias = "_grpc_model_project_" + hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    with _ISOLATED_IMPORTS:
        if (done := sys.modules.get(f"{alias}.{module_name}")) is not None:
            return done
        others = _take_modules(top)
        sys.path.insert(0, str(root))
        importlib.invalidate_caches()
        try:
            return importlib.import_module(module_name)
        finally:
            sys.path.remove(str(root))
            for name, module in _take_modules(top).items():
                sys.modules[f"{alias}.{name}"] = module
            sys.modules.update(others)


def _take_modules(top: str) -> dict[str, ModuleType]:
    """Removes the package `top` and its submodules from sys.modules, and returns them."""
    names = [name for name in sys.modules if name == top or name.startswith(top + ".")]
    return {name: sys.modules.pop(name) for name in names}


def _wrapper_classes(module: ModuleType) -> list[type]:
    """The module's own model classes, leaving out those that only serve as a base for another."""
    candidates = [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and value.__module__ == module.__name__
        and _user_method(value, SINGLE_METHOD_NAMES) is not None
    ]
    return [cls for cls in candidates if not any(other is not cls and issubclass(other, cls) for other in candidates)]


def instantiate(wrapper_class: type, config: object | None = None) -> LoadedModel:
    """Runs the wrapper's `__init__` (the one-time load) and resolves its methods."""
    instance = wrapper_class() if config is None else wrapper_class(config)
    declare = getattr(instance, "tensor_signature", None)
    signature = declare() if callable(declare) else None
    if signature is not None and not isinstance(signature, TensorSignature):
        raise WrapperImportError(f"{wrapper_class.__name__}.tensor_signature() returned {type(signature).__name__}")
    single_name = _user_method(wrapper_class, SINGLE_METHOD_NAMES)
    batch_name = _user_method(wrapper_class, BATCH_METHOD_NAMES)
    assert single_name is not None  # checked by import_wrapper_class
    return LoadedModel(
        name=wrapper_class.__name__,
        instance=instance,
        single=getattr(instance, single_name),
        batch=getattr(instance, batch_name) if batch_name else None,
        signature=signature,
    )


def _user_method(wrapper_class: type, names: tuple[str, ...]) -> str | None:
    """The first of `names` that the user's class implements (the base class only has stubs)."""
    for name in names:
        implementation = getattr(wrapper_class, name, None)
        if callable(implementation) and implementation is not getattr(ModelWrapper, name, None):
            return name
    return None
