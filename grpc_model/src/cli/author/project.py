"""`grpc-model new DIR`: a model project of its own, which depends on the framework as a package.

The template repository keeps the author's model beside the framework's code, tests and pins; a project made
here holds only the model (the same wrapper skeleton and bundle as `grpc-model init` writes) and what builds,
tests and ships it, with the framework as its one dependency.
"""

import importlib.metadata
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Annotated, NamedTuple

import typer
from rich.markup import escape

from grpc_model.src.cli.author import project_files, scaffold
from grpc_model.src.cli.author.file_spec import FileSpec, ScaffoldError
from grpc_model.src.cli.output import USAGE, console, errors, fail, shown
from grpc_model.src.metadata.schema import json_schema_text, slug
from grpc_model.src.settings import PROJECT_ROOT

FRAMEWORK = "grpc-model"
WHEEL_NAME = re.compile(r"grpc_model-(\d+\.\d+\.\d+)[^-]*-.+\.whl")
RELEASE = re.compile(r"(\d+)\.(\d+)\.(\d+)")
FROM_FILES = "--from serves the model file's rows as input.csv and results.json: drop --input/--output"

Version = Annotated[str, typer.Option(help="The first version.")]
Inputs = Annotated[list[str] | None, typer.Option("--input", help="An input file, FILE=MEDIA_TYPE; repeat for more.")]
Outputs = Annotated[
    list[str] | None, typer.Option("--output", help="An output file, FILE=MEDIA_TYPE; repeat for more.")
]
Author = Annotated[str, typer.Option(help="Who made the model (model.yaml's author).")]
ModelFile = Annotated[
    Path | None,
    typer.Option(
        "--from",
        help="Serve this trained model file with no code: scikit-learn (.joblib/.pkl), XGBoost (.json/.ubj), "
        "LightGBM (.txt) or ONNX (.onnx); docs/runtimes.md.",
    ),
]
Sample = Annotated[
    Path | None, typer.Option(help="With --from: a CSV of rows (with a header) to make a test case from.")
]
Trusted = Annotated[
    bool, typer.Option(help="With --from a pickle (.joblib/.pkl): you trust it, since loading it runs code.")
]


class ServedFile(NamedTuple):
    """`new --from`'s model file, and what goes with it: the same options as `init --from`."""

    model_file: Path
    sample: Path | None
    trusted: bool


def file_specs(inputs: list[str] | None, outputs: list[str] | None) -> tuple[list[FileSpec], ...]:
    """The `--input` and `--output` options of `init` and `new`, with their defaults."""
    return (
        [FileSpec.parse(text, "--input", families=True) for text in inputs or ["input.txt=text/plain"]],
        [FileSpec.parse(text, "--output") for text in outputs or ["results.json=application/json"]],
    )


def new(
    directory: Annotated[Path, typer.Argument(help="The project's directory: new, or empty.")],
    name: Annotated[str | None, typer.Argument(help="The model's name; default: the directory's name.")] = None,
    version: Version = "0.1.0",
    inputs: Inputs = None,
    outputs: Outputs = None,
    author: Author = "unknown",
    framework_wheel: Annotated[
        Path | None,
        typer.Option(
            help="The framework's wheel, copied into DIR/wheels/ for the project and its image to install; "
            "default: built from the framework's source when it runs from a checkout, else none (from the index)."
        ),
    ] = None,
    model_file: ModelFile = None,
    sample: Sample = None,
    trusted: Trusted = False,
) -> None:
    """Start a model project of its own: model_lib/, asset_bundle/, pyproject.toml (the framework as its one
    dependency) and its lock, a Dockerfile, .ci/run and a README; nothing of the framework's code or tests.

    With --from, the project serves a trained model file with no code, as `init --from` does, and depends on
    the framework with that runtime's extra, e.g. `grpc-model[sklearn]`.

    Example: `grpc-model new word-stats "Word Stats" --input input.txt=text/plain`, or
    `grpc-model new iris --from model.onnx --sample rows.csv`
    """
    served = None if model_file is None else ServedFile(model_file, sample, trusted)
    if served is not None and (inputs or outputs):
        raise fail(FROM_FILES, USAGE)
    try:
        input_files, output_files = file_specs(inputs, outputs)
        written = create_project(
            directory,
            name or directory.resolve().name,
            version,
            input_files,
            output_files,
            author,
            framework_wheel,
            served,
        )
    except ScaffoldError as error:
        raise fail(str(error), USAGE) from None
    for path in written:
        console.print(f"  wrote {escape(shown(path))}")
    poetry = find_poetry()
    if poetry is None or not lock(directory, poetry):
        errors.print("[yellow]warning:[/yellow] no poetry.lock yet: run `poetry lock` in the project")
    todo = (
        "`grpc-model test`"
        if served
        else f"fill in model_lib/src/model.py and asset_bundle/{escape(version)}/model.yaml and `grpc-model test`"
    )
    # The template's own poetry (.tools/) is not on the PATH: name it by its whole path, which holds after the `cd`.
    command = "poetry" if poetry is None or poetry == shutil.which("poetry") else poetry
    console.print(f"Next: cd {escape(shown(directory))} && {escape(command)} install, then {todo} (see its README.md).")


def create_project(
    directory: Path,
    name: str,
    version: str,
    inputs: list[FileSpec],
    outputs: list[FileSpec],
    author: str,
    framework_wheel: Path | None,
    served: ServedFile | None = None,
) -> list[Path]:
    """Writes the project; returns the files written. A project that cannot be made leaves no directory behind.

    With `served`, the bundle serves that model file (as `init --from` writes it) and the project depends on the
    framework with the runtime's extra; else it is the wrapper skeleton `init` writes.
    """
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise ScaffoldError(f"{directory} exists and is not an empty directory; choose a new one")
    if framework_wheel is not None and not WHEEL_NAME.fullmatch(framework_wheel.name):
        raise ScaffoldError(f"{framework_wheel} is not a grpc_model-X.Y.Z-...whl wheel")
    if framework_wheel is not None and not framework_wheel.is_file():
        raise ScaffoldError(f"the framework wheel {framework_wheel} does not exist")
    created = not directory.exists()
    try:
        if served is None:
            written = scaffold.init_model(directory, directory / "asset_bundle", name, version, inputs, outputs, author)
            extra = None
        else:
            written, extra = _served_bundle(directory / "asset_bundle", name, version, author, served)
        wheel = _framework_wheel(framework_wheel, directory / "wheels")
    except ScaffoldError:
        if created:
            shutil.rmtree(directory, ignore_errors=True)
        raise
    requirement = _requirement(wheel, extra)
    files = {
        directory / "model_lib/__init__.py": "",
        directory / "model_lib/src/__init__.py": "",
        directory / "model_lib/tests/__init__.py": "",
        directory / "asset_bundle/model.schema.json": json_schema_text(),
        directory / "pyproject.toml": project_files.pyproject(
            slug(name), f"The {name} model, served over gRPC by grpc-model.", requirement, wheel
        ),
        directory / "poetry.toml": project_files.POETRY_TOML,
        directory / "Dockerfile": project_files.dockerfile(),
        directory / ".dockerignore": project_files.DOCKERIGNORE,
        directory / ".gitignore": project_files.GITIGNORE,
        directory / ".ci/run": project_files.CI_RUN,
        directory / "wheels/README.md": project_files.WHEELS_NOTE,
        directory / "README.md": project_files.readme(name, version, "input.csv" if served else inputs[0].name),
    }
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    ci = directory / ".ci/run"
    ci.chmod(ci.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return [*written, *files, *([directory / "wheels" / wheel] if wheel else [])]


def _framework_wheel(given: Path | None, wheels: Path) -> str | None:
    """The wheel the project installs the framework from: the one given, else one built from the framework's
    source when it runs from a checkout; None when it runs from an installed package (then from the index)."""
    wheels.mkdir(parents=True, exist_ok=True)
    if given is not None:
        shutil.copy2(given, wheels / given.name)
        return given.name
    if not (PROJECT_ROOT / "pyproject.toml").is_file():
        return None
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(wheels)]
    built = subprocess.run([*command, str(PROJECT_ROOT)], capture_output=True, text=True, check=False)
    found = [path.name for path in wheels.glob("grpc_model-*.whl")]
    if built.returncode != 0 or len(found) != 1:
        raise ScaffoldError(
            f"could not build the framework's wheel from {PROJECT_ROOT}: {built.stderr.strip()[-500:]}; "
            "pass --framework-wheel PATH"
        )
    return found[0]


def _requirement(wheel: str | None, extra: str | None = None) -> str:
    """The framework (with the extra its runtime needs), within the release series of the wheel (or of the
    running framework): semantic versions change the wrapper contract and model.yaml only in a new major release
    (a new minor one before 1.0)."""
    named = WHEEL_NAME.fullmatch(wheel) if wheel else None
    version = named.group(1) if named else importlib.metadata.version(FRAMEWORK)
    release = RELEASE.match(version)
    if release is None:
        raise ScaffoldError(f"the framework's version {version!r} is not a semantic version")
    major, minor, patch = (int(part) for part in release.groups())
    upper = f"{major + 1}.0.0" if major else f"0.{minor + 1}.0"
    return f"{FRAMEWORK}{f'[{extra}]' if extra else ''} (>={major}.{minor}.{patch},<{upper})"


def _served_bundle(bundles: Path, name: str, version: str, author: str, served: ServedFile) -> tuple[list[Path], str]:
    """`init --from`'s bundle in the new project, and the extra that installs its runtime's library."""
    from grpc_model.src.cli.author import from_model  # the runtimes, only for --from
    from grpc_model.src.runtimes import RUNTIMES

    written = from_model.init_from_model(
        bundles, name, version, served.model_file, served.sample, author, trusted=served.trusted
    )
    return written, RUNTIMES[from_model.detect_kind(served.model_file)].extra


def find_poetry() -> str | None:
    """The PATH's poetry, or the template repository's (scripts/dev.sh installs it into .tools/)."""
    bundled = PROJECT_ROOT / ".tools/bin/poetry"
    return shutil.which("poetry") or (str(bundled) if bundled.is_file() else None)


def lock(directory: Path, poetry: str) -> bool:
    """`poetry lock` in the new project; False if it fails."""
    console.print("  poetry lock (resolves the framework's dependencies; a minute the first time)")
    return subprocess.run([poetry, "lock", "--no-interaction"], cwd=directory, check=False).returncode == 0
