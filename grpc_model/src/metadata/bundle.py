"""Loading and checking an asset bundle: `asset_bundle/<version>/`.

Every problem is a `BundleError` whose message names the file, the key path and what
was expected, because the person reading it is a model author at start-up, not a
developer reading a traceback.
"""

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin

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


def older_bundle_warning(bundle: AssetBundle) -> str | None:
    """Why serving `bundle` may surprise, when a newer bundle sits beside it: only the metadata and test cases
    are that version's, the code in model_lib/ is today's, so the older cases may fail against it."""
    newest = available_versions(bundle.path.parent)[-1:]
    if not newest or version_key(bundle.version) >= version_key(newest[0]):
        return None
    return (
        f"serving asset bundle {bundle.version}, but {newest[0]} is the newest under {bundle.path.parent}: "
        f"model.yaml and the test cases are {bundle.version}'s, the code is today's: code is not versioned with "
        f"bundles, so {bundle.version}'s test cases may fail. Unset GRPC_MODEL_MODEL_VERSION (--model-version) "
        "to serve the newest"
    )


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
        raise BundleError(f"{path}: {len(error.errors())} problem(s):\n{describe_errors(error, schema)}") from None


def describe_errors(error: ValidationError, schema: type[BaseModel]) -> str:
    """One line per problem: the key path, pydantic's message and (shortened) what was given.

    An unknown key is most often a typo, so it names the key of `schema` it probably meant.
    """
    lines = []
    for problem in error.errors():
        key_path = ".".join(str(part) for part in problem["loc"]) or "(top level)"
        if problem["type"] == "extra_forbidden":
            lines.append(f"  {key_path}: {_unknown_key(schema, problem['loc'])}")
            continue
        given = "" if problem["type"] == "missing" else f" (got {_shorten(repr(problem['input']))})"
        lines.append(f"  {key_path}: {problem['msg']}{given}")
    return "\n".join(lines)


def _unknown_key(schema: type[BaseModel], location: Sequence[int | str]) -> str:
    *parents, key = location
    allowed = _keys_at(schema, parents)
    close = difflib.get_close_matches(str(key), allowed, n=1)
    if close:
        return f"unknown key; did you mean {close[0]}?"
    return f"unknown key; the keys here are: {', '.join(allowed)}" if allowed else "unknown key"


def _keys_at(schema: type[BaseModel], parents: Sequence[int | str]) -> list[str]:
    """The keys `schema` allows in the mapping at `parents`, a key path whose file names and list indices
    (`inputs.input.txt`, `filters.0`) step into a dict's or list's values."""
    annotation: Any = schema
    for part in parents:
        model = _model_in(annotation)
        if model is not None:
            field = model.model_fields.get(str(part))
            annotation = None if field is None else field.annotation
        else:
            annotation = _values_type(annotation)
    model = _model_in(annotation)
    return list(model.model_fields) if model is not None else []


def _values_type(annotation: Any) -> Any:
    """X of `dict[str, X]` or `list[X]`, also in a union with None; None for anything else."""
    if get_origin(annotation) in (dict, list):
        return get_args(annotation)[-1]
    found = [_values_type(option) for option in get_args(annotation) if option is not type(None)]
    return next((option for option in found if option is not None), None)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The schema class an annotation stands for: the class itself, or the class of `X | None`."""
    options = () if get_origin(annotation) in (dict, list) else get_args(annotation)
    for candidate in (annotation, *options):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _shorten(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def version_key(version: str) -> tuple[int, ...]:
    """Orders x.y.z versions numerically (0.10.0 after 0.9.0)."""
    return tuple(int(part) for part in version.split("."))
