"""`grpc-model k8s --repository DIR`: what a repository server's manifests are made of, and the image they run.

The models travel in the image: the framework's image (what `grpc-model build` makes, with every extra the models
need) with the repository copied to /models by a two-line Dockerfile written beside the manifests. An image is
versioned, pulled and rolled out like any other, needs no storage class or volume to fill by hand, and its pods
all serve the same models; changing a model is building and rolling out a new image (docs/deploy.md).
"""

from pathlib import Path

from grpc_model.src.cli.deployment.kubernetes import REPOSITORY_MOUNT, Repository, Target
from grpc_model.src.metadata import AssetBundle, BundleError, load_bundle
from grpc_model.src.repository.layout import find_models
from grpc_model.src.runtimes import runtime_extra
from grpc_model.src.settings import Settings, env_var

DOCKERFILE = "image/Dockerfile"


def repository_target(directory: Path, settings: Settings, image: str, replicas: int, max_loaded_models: int) -> Target:
    """The repository's models, each by its newest version (the one a server loads when none is named).

    Raises BundleError (RepositoryError among them) naming every folder that cannot be served: its resources
    would be missing from the sums, and the server would report it broken from its first minute.
    """
    folders = find_models(directory)
    problems = [folder.problem for folder in folders if folder.problem]
    if problems:
        raise BundleError(f"repository {directory}: fix or remove these folders first:\n  " + "\n  ".join(problems))
    bundles = tuple(load_bundle(folder.asset_bundle_dir, folder.versions[-1]) for folder in folders)
    name = directory.resolve().name
    return Target(bundles, settings, image, replicas, Repository(name, str(directory), max_loaded_models))


def dockerfile(target: Target) -> str:
    """The repository server's image: the framework's image with the models in /models; built from DIR."""
    extras = sorted({extra for bundle in target.bundles if (extra := runtime_extra(bundle))})
    source = target.repository.source if target.repository is not None else "DIR"
    needs = (
        f"# Its runtime models need the extras {','.join(extras)} in the base:\n"
        f"#   grpc-model build --tag <base image> --build-arg POETRY_EXTRAS={','.join(extras)}\n"
        if extras
        else "# The base: `grpc-model build --tag <base image>` (with the groups and extras the models' code needs).\n"
    )
    return (
        "# The repository server's image: a framework image holding every dependency of the models, and the\n"
        f"# models in {REPOSITORY_MOUNT}. Build it from the repository directory:\n"
        f"#   docker build -f <this file> --build-arg BASE=<base image> -t {target.image} {source}\n"
        f"{needs}"
        "ARG BASE\n"
        "FROM ${BASE}\n"
        f"COPY . {REPOSITORY_MOUNT}/\n"
        f"ENV {env_var('repository')}={REPOSITORY_MOUNT}\n"
    )


def describe(bundles: tuple[AssetBundle, ...]) -> str:
    """The models named in the files' headers: `hello-world 0.1.0, word-stats 0.2.0`."""
    return ", ".join(f"{bundle.spec.name} {bundle.version}" for bundle in bundles)
