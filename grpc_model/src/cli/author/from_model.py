"""`grpc-model init NAME --from MODEL_FILE [--sample DATA.csv]`: a project that serves a model file, no code.

The model file goes into the bundle, model.yaml names the runtime that reads it, and with a sample the
bundle gets a test case whose expected output is the library's own answer on the sample's rows (with a
tolerance), so that `grpc-model test` passes before the author writes anything.
"""

import csv
import shutil
import tempfile
from pathlib import Path

from grpc_model.src.cli.author import templates
from grpc_model.src.cli.author.file_spec import FileSpec, ScaffoldError
from grpc_model.src.cli.author.scaffold import TEST_CASES_NOTE, check_version
from grpc_model.src.metadata import BundleError, load_bundle, slug
from grpc_model.src.metadata.bundle import (
    DOCKER_METADATA_YAML,
    MODEL_YAML,
    TEST_CASES_DIR,
    available_versions,
    version_key,
)
from grpc_model.src.metadata.test_cases import CASE_FILE
from grpc_model.src.runtime.items import describe
from grpc_model.src.runtime.loader import LoadedModel
from grpc_model.src.runtimes import RUNTIMES, wrapper_source
from grpc_model.wrapper import RESULTS_FILENAME

INPUT = FileSpec("input.csv", "text/csv")
OUTPUT = FileSpec(RESULTS_FILENAME, "application/json")
KINDS = {".joblib": "sklearn", ".pkl": "sklearn", ".pickle": "sklearn", ".json": "xgboost", ".ubj": "xgboost"}
KINDS |= {".txt": "lightgbm", ".onnx": "onnx"}
MAX_SAMPLE_ROWS = 100
MAX_BATCH_SIZE = 64
TOLERANCE = "tolerance: {absolute: 1.0e-6, relative: 1.0e-6}\n"


def detect_kind(model_file: Path) -> str:
    """The runtime for a file, by its name's suffix: each library's own format, or a scikit-learn pickle."""
    kind = KINDS.get(model_file.suffix.lower())
    if kind is None:
        known = ", ".join(f"{suffix} ({kind})" for suffix, kind in KINDS.items())
        raise ScaffoldError(f"{model_file.name}: cannot tell which library wrote it; known kinds of file: {known}")
    return kind


def init_from_model(
    bundles: Path,
    name: str,
    version: str,
    model_file: Path,
    sample: Path | None = None,
    author: str = "unknown",
    force: bool = False,
    trusted: bool = False,
) -> list[Path]:
    """Writes the bundle that serves `model_file`; returns the files written."""
    check_version(version)
    if not name.strip():
        raise ScaffoldError("the model's NAME must not be blank")
    if not model_file.is_file():
        raise ScaffoldError(f"{model_file}: no such file")
    kind = detect_kind(model_file)
    if kind == "sklearn" and not trusted:
        raise ScaffoldError(
            f"{model_file.name} is a pickle, and loading one runs any code it holds: pass --trusted if you trust "
            "where it came from (model.yaml then says `runtime.trusted: true`), or export the model to ONNX"
        )
    newer = [v for v in available_versions(bundles) if version_key(v) > version_key(version)]
    if newer:
        raise ScaffoldError(f"{bundles / newer[-1]} is newer than {version} and would be served instead")
    bundle = bundles / version
    if bundle.exists() and not force:
        raise ScaffoldError(f"{bundle} already exists; pass --force to replace it (the example model is)")
    header = _sample_header(sample) if sample is not None else None
    with tempfile.TemporaryDirectory() as scratch:  # made whole before it replaces anything
        staged = Path(scratch) / version
        (staged / TEST_CASES_DIR).mkdir(parents=True)
        written = _write(staged, name, author, version, kind, model_file, sample, header, trusted)
        if bundle.exists():
            shutil.rmtree(bundle)
        bundles.mkdir(parents=True, exist_ok=True)
        shutil.move(staged, bundle)
    return [bundle / path.relative_to(staged) for path in written]


def _write(
    bundle: Path,
    name: str,
    author: str,
    version: str,
    kind: str,
    model_file: Path,
    sample: Path | None,
    header: list[str] | None,
    trusted: bool,
) -> list[Path]:
    shutil.copy2(model_file, bundle / model_file.name)
    spec = bundle / MODEL_YAML
    trusted = trusted and kind == "sklearn"
    spec.write_text(_model_yaml(name, author, version, kind, model_file.name, trusted, []), encoding="utf-8")
    model = _load(bundle)
    features: list[str] = model.instance.features
    if header is not None and set(header) != set(features):
        if len(header) != len(features):
            raise ScaffoldError(
                f"{sample}: its header names {len(header)} columns, the model takes {len(features)} features "
                f"({', '.join(features[:20])}); keep only the feature columns"
            )
        features = header  # the model keeps no names of its own: the sample's, in its order
        spec.write_text(_model_yaml(name, author, version, kind, model_file.name, trusted, header), encoding="utf-8")
        model = _load(bundle)
    written = [bundle / model_file.name, spec]
    if sample is not None:
        written += _test_case(bundle / TEST_CASES_DIR / f"0001-{slug(sample.stem)}", model, sample)
    (bundle / DOCKER_METADATA_YAML).write_text(templates.docker_metadata(slug(name)), encoding="utf-8")
    (bundle / TEST_CASES_DIR / TEST_CASES_NOTE).write_text(templates.test_cases_note([INPUT], [OUTPUT]), "utf-8")
    return [*written, bundle / DOCKER_METADATA_YAML]


def _load(bundle: Path) -> LoadedModel:
    try:
        source = wrapper_source(load_bundle(bundle.parent, bundle.name))
        assert source is not None, "model.yaml names a runtime"
        return source.load()
    except BundleError as error:
        raise ScaffoldError(str(error)) from None
    except Exception as error:
        raise ScaffoldError(f"the model file does not load: {describe(error)}") from None


def _sample_header(sample: Path) -> list[str]:
    try:
        first = sample.read_text(encoding="utf-8-sig").splitlines()[:1]
    except (OSError, UnicodeDecodeError) as error:
        raise ScaffoldError(f"{sample}: cannot be read as UTF-8 text: {error}") from None
    header = [column.strip() for column in next(csv.reader(first), [])]
    if not header:
        raise ScaffoldError(f"{sample}: expected a CSV whose first line names the columns")
    return header


def _test_case(case: Path, model: LoadedModel, sample: Path) -> list[Path]:
    """The sample's first rows, and the model's own answer on them, compared with a tolerance."""
    lines = sample.read_text(encoding="utf-8-sig").splitlines()
    rows = [line for line in lines if line.strip()][: MAX_SAMPLE_ROWS + 1]
    content = ("\n".join(rows) + "\n").encode()
    try:
        expected = model.single({INPUT.name: content}, False, False)
    except Exception as error:
        raise ScaffoldError(f"{sample}: the model cannot answer its rows: {describe(error)}") from None
    case.mkdir()
    written = {
        case / INPUT.name: content,
        case / OUTPUT.name: expected[OUTPUT.name],
        case / CASE_FILE: TOLERANCE.encode(),
    }
    for path, data in written.items():
        path.write_bytes(data)
    return list(written)


def _model_yaml(name: str, author: str, version: str, kind: str, file: str, trusted: bool, features: list[str]) -> str:
    text = templates.model_yaml(name, author, version, [INPUT], [OUTPUT])
    text = text.replace("      - text/csv\n", "      - text/csv\n      - application/json\n", 1)
    text = text.replace("  maxBatchSize: 8\n", f"  maxBatchSize: {MAX_BATCH_SIZE}\n", 1)
    names = "".join(f"\n    - {_quoted(feature)}" for feature in features) if features else " []"
    return text + (
        "\n# The model file this bundle serves, with the runtime that reads it: no model_lib code runs.\n"
        "# Rows come as input.csv (a CSV with a header, or a JSON list of rows); docs/runtimes.md.\n"
        "runtime:\n"
        f"  # {', '.join(RUNTIMES)}\n"
        f"  kind: {kind}\n"
        f"  file: {_quoted(file)}\n"
        + (
            "  # A pickle runs code when it loads: this says you trust where it came from.\n  trusted: true\n"
            if trusted
            else ""
        )
        + "  # The CSV columns in the model's order; [] for the model's own names (else x0, x1, ...).\n"
        f"  features:{names}\n"
    )


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
