"""Finding the models of a repository directory: each subfolder is one model, laid out as a model project.

A folder holds its versions in `asset_bundle/<x.y.z>/` and is served either by its own wrapper package
(`model_lib/`) or by a runtime its model.yaml names. A folder that cannot be read is still found, with the
reason, so that the server serves the others and its index says what is wrong with this one.
"""

from dataclasses import dataclass
from pathlib import Path

from grpc_model.src.metadata import BundleError, available_versions, load_bundle, slug
from grpc_model.src.metadata.bundle import MODEL_YAML

ASSET_BUNDLE = "asset_bundle"
WRAPPER_PACKAGE = "model_lib"


class RepositoryError(BundleError):
    """The repository as a whole cannot be served: missing, empty, or two folders claiming one name."""


@dataclass(frozen=True)
class ModelFolder:
    """One model of the repository: the versions its asset bundle holds, oldest first."""

    name: str
    """Its model.yaml name as V2 slugs it ("Hello World" -> "hello-world"); the folder's name slugged when no
    model.yaml can be read."""
    path: Path
    versions: tuple[str, ...]
    problem: str = ""
    """Why the folder cannot be served, naming the folder and file; empty when it can."""

    @property
    def asset_bundle_dir(self) -> Path:
        return self.path / ASSET_BUNDLE

    @property
    def has_wrapper(self) -> bool:
        """Whether the folder brings its own wrapper package (else a runtime must serve it)."""
        return (self.path / WRAPPER_PACKAGE).is_dir()


def find_models(directory: Path) -> list[ModelFolder]:
    """The repository's models, by name; raises RepositoryError when it has none or two share a name.

    Hidden folders and plain files beside the models are left out, as a checkout's `.git` is.
    """
    try:
        folders = sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as error:
        raise RepositoryError(
            f"repository {directory}: cannot be read: {error.strerror or error} (set with --repository or "
            "GRPC_MODEL_REPOSITORY: a directory with one folder per model)"
        ) from None
    models = [_model_folder(folder) for folder in folders]
    if not models:
        raise RepositoryError(
            f"repository {directory}: has no model folders; each model is a folder holding "
            f"{ASSET_BUNDLE}/<x.y.z>/{MODEL_YAML} and its {WRAPPER_PACKAGE}/ (or a runtime: section in model.yaml)"
        )
    seen: dict[str, Path] = {}
    for model in models:
        if model.name in seen:
            raise RepositoryError(
                f"repository {directory}: folders {seen[model.name].name}/ and {model.path.name}/ both serve the "
                f"model {model.name!r} (the name in model.yaml, slugged); rename one in its {MODEL_YAML}"
            )
        seen[model.name] = model.path
    return sorted(models, key=lambda model: model.name)


def _model_folder(folder: Path) -> ModelFolder:
    """The folder as a model, with the reason it cannot be served when its newest bundle does not load."""
    bundles = folder / ASSET_BUNDLE
    versions = tuple(available_versions(bundles))
    if not versions:
        problem = f"{folder.name}/: no {ASSET_BUNDLE}/<x.y.z>/{MODEL_YAML} in {bundles}"
        return ModelFolder(slug(folder.name), folder, (), problem)
    try:
        bundle = load_bundle(bundles, versions[-1])
    except BundleError as error:
        return ModelFolder(slug(folder.name), folder, versions, f"{folder.name}/: {error}")
    model = ModelFolder(slug(bundle.spec.name), folder, versions)
    if bundle.spec.runtime is None and not model.has_wrapper:
        problem = (
            f"{folder.name}/: has no {WRAPPER_PACKAGE}/ package and {bundle.path / MODEL_YAML} names no runtime: "
            "add the wrapper package, or a runtime: section"
        )
        return ModelFolder(model.name, folder, versions, problem)
    return model
