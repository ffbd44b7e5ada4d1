"""The schema of `model.yaml` (specification 0.4) and `docker_metadata.yaml`.

Field names follow the YAML (camelCase) so that validation errors and the generated
JSON Schema speak the user's language: `features.maxBatchSize`, not `max_batch_size`.
"""

import json
import re
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from grpc_model.src.metadata.names import file_name_problem, media_type_problem
from grpc_model.src.metadata.units import Range, parse_duration, parse_size

SEMANTIC_VERSION = r"\d+\.\d+\.\d+"
SemanticVersion = Annotated[str, StringConstraints(pattern=f"^{SEMANTIC_VERSION}$")]
NonBlank = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


def _checked_size(text: str) -> str:
    if text:
        parse_size(text, low=1)
    return text


def _checked_memory(text: str) -> str:
    if text:
        parse_size(text, low=MIN_MEMORY_BYTES, high=MAX_MEMORY_BYTES)
    return text


def _checked_file_name(name: str) -> str:
    if problem := file_name_problem(name):
        raise ValueError(problem)
    return name


def _checked_media_type(text: str) -> str:
    if problem := media_type_problem(text):
        raise ValueError(problem)
    return text


def _checked_media_range(text: str) -> str:
    if problem := media_type_problem(text, families=True):
        raise ValueError(problem)
    return text


def _checked_duration(text: str) -> str:
    if text:
        parse_duration(text)
    return text


Duration = Annotated[str, StringConstraints(strip_whitespace=True), AfterValidator(_checked_duration)]
"""A duration as written (`20s`, `1500ms`, `2m`); kept as text for Status, checked at load."""
FileName = Annotated[str, AfterValidator(_checked_file_name)]
MediaType = Annotated[NonBlank, AfterValidator(_checked_media_type)]
MediaRange = Annotated[NonBlank, AfterValidator(_checked_media_range)]
"""A media type, or a family of them (`image/*`, `*/*`): what an input accepts."""
RequiredSize = Annotated[NonBlank, AfterValidator(_checked_size)]
"""A file's size as written (`512K`, `1.5MB`, `1G`, bytes); kept as text for Status, checked at load."""
MemorySize = Annotated[str, StringConstraints(strip_whitespace=True), AfterValidator(_checked_memory)]
"""An instance's memory as written, blank for unknown; between 1 MiB and 1 PiB."""

# Sensible bounds, well inside what the Status message's fields carry (int32, float32).
MIN_MEMORY_BYTES = 1024**2
MAX_MEMORY_BYTES = 1024**5  # 1 PiB
MAX_CPUS = 4096
MAX_GPUS = 1024
MAX_BATCH_SIZE = 1_000_000


class _Section(BaseModel):
    """Shared rules: unknown keys are errors, blank (null) values fall back to defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)

    @model_validator(mode="before")
    @classmethod
    def _drop_blank_values(cls, data: Any) -> Any:
        # A key left empty in YAML (`summary:`) is null: treat it as absent so its default
        # applies, and a required key reports "Field required" rather than a type error.
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if value is not None}
        return data

    @field_validator("*")
    @classmethod
    def _valid_unicode(cls, value: Any) -> Any:
        # Status sends every text as a protobuf string, which must be UTF-8: a lone surrogate
        # (YAML's "\uD800") cannot be, and would crash the server at start-up.
        texts = [value] if isinstance(value, str) else value if isinstance(value, list | dict) else []
        for text in texts:  # a dict's texts are its keys (file names); its values validated themselves
            if isinstance(text, str):
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError as error:
                    raise ValueError(f"not valid Unicode: {error.reason} at position {error.start}") from None
        return value


def _without_blanks(items: Any) -> Any:
    """Drops the empty entries the template leaves in lists (`tags: [-]`)."""
    if isinstance(items, list):
        return [item for item in items if item not in (None, {}, "")]
    return items


class Description(_Section):
    summary: str = ""
    details: str = ""
    technical: str = ""
    performance: str = ""


class Filter(_Section):
    type: str = ""
    label: str = ""


class Metric(_Section):
    label: str = ""
    type: str = ""
    value: float | None = Field(default=None, allow_inf_nan=False)
    description: str = ""


class InputFile(_Section):
    acceptedMediaTypes: list[MediaRange] = Field(min_length=1)
    maxSize: RequiredSize
    description: str = ""

    @model_validator(mode="before")
    @classmethod
    def _clean_media_types(cls, data: Any) -> Any:
        if isinstance(data, dict) and "acceptedMediaTypes" in data:
            data = {**data, "acceptedMediaTypes": _without_blanks(data["acceptedMediaTypes"])}
        return data


class OutputFile(_Section):
    mediaType: MediaType
    maxSize: RequiredSize
    description: str = ""


class Memory(_Section):
    size: MemorySize = ""


class Cpu(_Section):
    count: Annotated[float, Range(0, MAX_CPUS, "CPUs")] = 1.0


class Gpu(_Section):
    count: Annotated[int, Range(0, MAX_GPUS, "GPUs")] = 0


class Resources(_Section):
    memory: Memory = Memory()
    cpu: Cpu = Cpu()
    gpu: Gpu = Gpu()


class Timeout(_Section):
    status: Duration = ""
    run: Duration = ""

    @property
    def status_seconds(self) -> float | None:
        """`status` in seconds; None when blank (no limit)."""
        return parse_duration(self.status) if self.status else None

    @property
    def run_seconds(self) -> float | None:
        """`run` in seconds; None when blank (no limit)."""
        return parse_duration(self.run) if self.run else None


class Internal(_Section):
    recommended: bool = False
    experimental: bool = False
    available: bool = True


class Features(_Section):
    adversarialDefense: bool = False
    maxBatchSize: Annotated[int, Range(1, MAX_BATCH_SIZE, "items")] = 1
    retrainable: bool = False
    resultsFormat: str | None = None
    driftFormat: str | None = None
    explanationFormat: str | None = None


RuntimeKind = Literal["sklearn", "xgboost", "lightgbm", "onnx"]
"""The model libraries the framework serves from a file, with no wrapper code (docs/runtimes.md)."""
PICKLE_KINDS = ("sklearn",)
"""Kinds whose files are pickles: loading one runs whatever code the file holds."""


def _relative_path(text: str) -> str:
    path = PurePosixPath(text)
    if path.is_absolute() or ".." in path.parts or "\\" in text:
        raise ValueError("must be a path relative to this bundle directory, inside it (e.g. model.onnx)")
    return text


class Runtime(_Section):
    """Serve a model file with a runtime the framework ships instead of a `model_lib` wrapper."""

    kind: RuntimeKind = Field(description="The library that reads the file: sklearn, xgboost, lightgbm or onnx.")
    file: Annotated[NonBlank, AfterValidator(_relative_path)] = Field(
        description="The model file, relative to this bundle directory: a joblib or pickle file (sklearn), "
        "XGBoost's JSON or UBJ, LightGBM's text model, or an ONNX graph."
    )
    trusted: bool = Field(
        default=False,
        description="Required for pickle and joblib files (sklearn): loading one runs any code it holds, "
        "so say that you trust where it came from.",
    )
    features: list[NonBlank] = Field(
        default=[],
        description="The feature (column) names in the order the model takes them; empty: the model's own names, "
        "else x0, x1, ...",
    )

    @model_validator(mode="after")
    def _trusted_pickle(self) -> "Runtime":
        if self.kind in PICKLE_KINDS and not self.trusted:
            raise ValueError(
                f"a {self.kind} model file is a pickle, and loading a pickle runs any code it holds: set "
                "`runtime.trusted: true` if you trust where the file came from (or export the model to ONNX "
                "and use kind: onnx)"
            )
        if len(set(self.features)) != len(self.features):
            raise ValueError(
                f"features: names repeat: {sorted({n for n in self.features if self.features.count(n) > 1})}"
            )
        return self


class ModelSpec(_Section):
    """`asset_bundle/<version>/model.yaml`."""

    specification: NonBlank
    type: Literal["grpc", "file"] = "grpc"
    source: str = ""
    version: SemanticVersion
    name: NonBlank
    author: NonBlank
    description: Description = Description()
    releaseNotes: str = ""
    tags: list[str] = []
    filters: list[Filter] = []
    metrics: list[Metric] = []
    inputs: dict[FileName, InputFile] = Field(min_length=1)
    outputs: dict[FileName, OutputFile] = Field(min_length=1)
    resources: Resources = Resources()
    timeout: Timeout = Timeout()
    internal: Internal = Internal()
    features: Features = Features()
    runtime: Runtime | None = None
    """Set: the model is this file, served by a runtime the framework ships; no model_lib code runs."""

    @model_validator(mode="after")
    def _runtime_input(self) -> "ModelSpec":
        if self.runtime is not None and len(self.inputs) != 1:
            raise ValueError(
                "runtime: a runtime reads one input file per item (rows as CSV or JSON); "
                f"inputs has {len(self.inputs)}: {sorted(self.inputs)}"
            )
        return self

    @model_validator(mode="before")
    @classmethod
    def _clean_lists(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {
                key: _without_blanks(value) if key in ("tags", "filters", "metrics") else value
                for key, value in data.items()
            }
        return data


class DockerImage(_Section):
    registry: str = ""
    repo_prefix: str = ""
    repo_suffix: str = ""


class DockerMetadata(_Section):
    """`asset_bundle/<version>/docker_metadata.yaml`."""

    dockerMetadata: list[DockerImage] = []
    id: str = ""


def slug(name: str) -> str:
    """A model.yaml name as one lower-case URL, image or Kubernetes name segment: "Hello World" -> "hello-world"."""
    return "-".join(re.findall(r"[a-z0-9]+", name.lower())) or "model"


def json_schema_text() -> str:
    """model.yaml's JSON Schema as the file editors read: the `# yaml-language-server: $schema=` line at the top of
    model.yaml points at it, so editors complete keys and flag mistakes as the author types."""
    schema = ModelSpec.model_json_schema()
    schema["title"] = "model.yaml (specification 0.4)"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"
