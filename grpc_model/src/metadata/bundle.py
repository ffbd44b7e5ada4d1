"""Loading and checking an asset bundle: `asset_bundle/<version>/`.

Every problem is a `BundleError` whose message names the file, the key path and what
was expected, because the person reading it is a model author at start-up, not a
developer reading a traceback.
"""

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from grpc_model.src.metadata.schema import SEMANTIC_VERSION, DockerMetadata, ModelSpec

MODEL_YAML = "model.yaml"
DOCKER_METADATA_YAML = "docker_metadata.yaml"
TEST_CASES_DIR = "test_cases"

_Model = TypeVar("_Model", bound=BaseModel)


class BundleError(Exception):
    """The asset bundle is missing, malformed or out of step with the served version."""


@dataclass(frozen=True)
class AssetBundle:
    """One validated version of the model's metadata."""

    path: Path
    spec: ModelSpec
    docker: DockerMetadata | None

    @property
    def version(self) -> str:
        return self.spec.version

    @property
    def test_cases_dir(self) -> Path:
        return self.path / TEST_CASES_DIR


def load_bundle(root: Path, version: str = "") -> AssetBundle:
    """Loads the served bundle: `root/<version>/`, or the newest one when `version` is empty.

    The directory name and `version:` in its `model.yaml` must agree.
    """
    version = version or newest_version(root)
    path = root / version
    try:
        found = path.is_dir()
        available = "" if found else ", ".join(available_versions(root)) or "none"
    except OSError as error:  # a name too long, a directory we may not enter
        raise BundleError(f"{error.filename}: cannot be read: {error.strerror} (asset_bundle_dir)") from None
    if not found:
        raise BundleError(
            f"no asset bundle for version {version} at {path} (versions found: {available}). "
            f"Create it with `grpc-model new-version {version}`."
        )
    spec = parse_file(path / MODEL_YAML, ModelSpec)
    if spec.version != version:
        raise BundleError(
            f"{path / MODEL_YAML}: version: is {spec.version} but the file is in {path.name}/; "
            f"set `version: {version}`."
        )
    if spec.runtime is not None and not (path / spec.runtime.file).is_file():
        raise BundleError(
            f"{path / MODEL_YAML}: runtime.file: {spec.runtime.file} is not a file in {path}; put the model file "
            "there (the bundle directory travels into the image with it)"
        )
    docker_path = path / DOCKER_METADATA_YAML
    docker = parse_file(docker_path, DockerMetadata) if docker_path.exists() else None
    return AssetBundle(path=path, spec=spec, docker=docker)


def newest_version(root: Path) -> str:
    """The served version by default: the newest `<x.y.z>/` under `root`, so a release is one new directory."""
    versions = available_versions(root)
    if not versions:
        raise BundleError(
            f"no asset bundle under {root}: expected a directory such as {root / '0.1.0'} holding {MODEL_YAML}. "
            "Create one with `grpc-model init NAME` or `grpc-model new-version X.Y.Z`."
        )
    return versions[-1]


def available_versions(root: Path) -> list[str]:
    """The bundle versions under `root` (directories named x.y.z that hold a model.yaml), oldest first."""
    if not root.is_dir():
        return []
    versions = [p.name for p in root.iterdir() if re.fullmatch(SEMANTIC_VERSION, p.name) and (p / MODEL_YAML).is_file()]
    return sorted(versions, key=version_key)


def parse_file(path: Path, schema: type[_Model]) -> _Model:
    """Reads one YAML file into `schema`, turning every failure into a `BundleError`."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BundleError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise BundleError(f"{path}: cannot be read: {error}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise BundleError(f"{path}: not valid YAML: {error}") from None
    except (ValueError, RecursionError) as error:  # PyYAML's constructors: a bad date, a huge int, deep nesting
        raise BundleError(f"{path}: not valid YAML: {type(error).__name__}: {error}") from None
    if not isinstance(data, dict):
        raise BundleError(f"{path}: expected a mapping of keys at the top level, got {type(data).__name__}")
    try:
        return schema.model_validate(data)
    except ValidationError as error:
        raise BundleError(f"{path}: {len(error.errors())} problem(s):\n{describe_errors(error)}") from None


def describe_errors(error: ValidationError) -> str:
    """One line per problem: the key path, pydantic's message and (shortened) what was given."""
    lines = []
    for problem in error.errors():
        key_path = ".".join(str(part) for part in problem["loc"]) or "(top level)"
        given = "" if problem["type"] == "missing" else f" (got {_shorten(repr(problem['input']))})"
        lines.append(f"  {key_path}: {problem['msg']}{given}")
    return "\n".join(lines)


def _shorten(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def version_key(version: str) -> tuple[int, ...]:
    """Orders x.y.z versions numerically (0.10.0 after 0.9.0)."""
    return tuple(int(part) for part in version.split("."))
