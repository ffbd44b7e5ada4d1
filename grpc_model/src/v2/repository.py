"""The V2 model-repository extension, transport-free: index, load and unload, as Triton and MLServer define them.

The gRPC calls (RepositoryIndex, RepositoryModelLoad, RepositoryModelUnload) and the REST routes
(POST /v2/repository/index, /v2/repository/models/NAME/load and /unload) both answer through here.
Loading and unloading change what the server serves, so they are off unless `repository_control` turns them on;
the index only reads, so it always answers (ModelMetadata and ModelReady tell as much, model by model).
"""

from collections.abc import Mapping

from grpc_model.src.quoting import quoted
from grpc_model.src.repository.registry import ModelEntry, ModelRegistry, UnknownModelError
from grpc_model.src.runtime import ModelLoadError
from grpc_model.src.v2.tensors import Problem, V2Error

RepositoryParameter = bool | int | str | bytes
"""A load or unload parameter's value (gRPC's ModelRepositoryParameter; JSON for REST)."""

EXTENSIONS = ("model_repository", "model_repository(unload_dependents)")
"""What ServerMetadata lists for the extension, as Triton does."""
VERSION_PARAMETER = "version"
"""This server's own load and unload parameter: the model version (`x.y.z`) to load or unload; without it, a
load loads the newest version and an unload unloads every version."""


class RepositoryControl:
    def __init__(self, registry: ModelRegistry, refusal: str | None) -> None:
        self.registry = registry
        self.refusal = refusal
        """Why clients may not load and unload, saying how to allow it (`repository_control`); None when they may."""

    def index(self, repository_name: str, ready: bool) -> list[ModelEntry]:
        """Every model version the repository holds, loaded or not, or only the ready ones."""
        _check_repository(repository_name)
        return [entry for entry in self.registry.index() if entry.state == "READY" or not ready]

    async def load(self, repository_name: str, name: str, parameters: Mapping[str, RepositoryParameter]) -> None:
        """Loads the model (a version of it that is loaded already is loaded again, its calls served meanwhile)."""
        self._check_control("load")
        _check_repository(repository_name)
        version = _parameters(parameters, "load")
        try:
            await self.registry.load(name, version)
        except UnknownModelError as error:
            raise V2Error(Problem.NOT_FOUND, str(error)) from None
        except ModelLoadError as error:
            raise V2Error(Problem.UNAVAILABLE, str(error)) from None

    async def unload(self, repository_name: str, name: str, parameters: Mapping[str, RepositoryParameter]) -> None:
        """Unloads the model; its calls in progress are answered first (within the shutdown grace period)."""
        self._check_control("unload")
        _check_repository(repository_name)
        version = _parameters(parameters, "unload")
        try:
            await self.registry.unload(name, version)
        except UnknownModelError as error:
            raise V2Error(Problem.NOT_FOUND, str(error)) from None

    def _check_control(self, what: str) -> None:
        if self.refusal is not None:
            raise V2Error(Problem.FORBIDDEN, f"this server does not let clients {what} models: {self.refusal}")


def _check_repository(repository_name: str) -> None:
    if repository_name:
        raise V2Error(
            Problem.NOT_FOUND,
            f"no repository named {quoted(repository_name)}: this server has one, unnamed; send repository_name empty",
        )


def _parameters(parameters: Mapping[str, RepositoryParameter], call: str) -> str | None:
    """The version a load or unload names, if any; raises INVALID for a parameter this server does not take."""
    version: str | None = None
    for name, value in parameters.items():
        if name == VERSION_PARAMETER and isinstance(value, str) and value:
            version = value
        elif name == "unload_dependents" and call == "unload" and isinstance(value, bool):
            pass  # no model here depends on another: there is nothing more to unload
        elif name == "config" or name.startswith("file:"):
            raise V2Error(
                Problem.INVALID,
                f"the {call} parameter {quoted(name)} is not supported: a model's configuration is its folder's "
                "model.yaml in the repository; change it there, then load the model again",
            )
        else:
            takes = "version (a non-empty string)" + (", unload_dependents (a boolean)" if call == "unload" else "")
            raise V2Error(
                Problem.INVALID,
                f"the {call} parameter {quoted(name)} = {quoted(value)} is not one this server takes: {takes}",
            )
    return version
