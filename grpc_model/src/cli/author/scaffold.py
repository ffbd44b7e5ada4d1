"""`grpc-model init` and `grpc-model new-version`: the files an author starts from.

Both write only under `model_lib/` and `asset_bundle/`, the author's rooms, so starting a
model or releasing a version never touches the framework.
"""

import re
import shutil
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from grpc_model.src.cli.author import templates
from grpc_model.src.cli.author.file_spec import FileSpec, ScaffoldError
from grpc_model.src.metadata.bundle import (
    DOCKER_METADATA_YAML,
    MODEL_YAML,
    TEST_CASES_DIR,
    BundleError,
    available_versions,
    newest_version,
    version_key,
)
from grpc_model.src.metadata.schema import SEMANTIC_VERSION, slug
from grpc_model.src.metadata.test_cases import case_dirs

TEST_CASES_NOTE = "README.md"
MODEL_YAML_VERSION = re.compile(r"^(version:\s*['\"]?)([^'\"\s#]+)(['\"]?)", re.MULTILINE)


def check_version(version: str) -> None:
    if not re.fullmatch(SEMANTIC_VERSION, version):
        raise ScaffoldError(f"{version!r} is not a version of three dot-separated integers, e.g. 0.2.0")


def init_model(
    root: Path,
    bundles: Path,
    name: str,
    version: str,
    inputs: list[FileSpec],
    outputs: list[FileSpec],
    author: str = "unknown",
    force: bool = False,
) -> list[Path]:
    """Writes a wrapper skeleton, its tests and a bundle for a new model; returns the files written."""
    check_version(version)
    if not name.strip():
        raise ScaffoldError("the model's NAME must not be blank")
    for what, text in (("NAME", name), ("--author", author)):
        if problem := _text_problem(text):
            raise ScaffoldError(f"{what} {problem}")
    for kind, files in (("input", inputs), ("output", outputs)):
        names = [file.name for file in files]
        if len(set(names)) != len(names):
            raise ScaffoldError(f"an {kind} file is named twice: {names}")
    newer = [v for v in available_versions(bundles) if version_key(v) > version_key(version)]
    if newer:
        raise ScaffoldError(
            f"{bundles / newer[-1]} is newer than {version} and would be served instead; "
            f"delete it or pass --version with a newer version"
        )
    bundle = bundles / version
    wrapper, unit_tests = root / "model_lib/src/model.py", root / "model_lib/tests/test_model.py"
    existing = [path for path in (wrapper, unit_tests, bundle) if path.exists()]
    if existing and not force:
        raise ScaffoldError(
            f"{', '.join(_relative(path, root) for path in existing)} already exist(s); pass --force to replace "
            "(the example model is replaced this way)"
        )
    class_name = _class_name(name)
    if bundle.exists():
        shutil.rmtree(bundle)  # another model's test cases would fail for this one
    (bundle / TEST_CASES_DIR).mkdir(parents=True)
    written = {
        wrapper: templates.wrapper(name, class_name, version, inputs, outputs),
        unit_tests: templates.unit_tests(class_name, inputs, outputs),
        bundle / MODEL_YAML: templates.model_yaml(name, author, version, inputs, outputs),
        bundle / DOCKER_METADATA_YAML: templates.docker_metadata(slug(name)),
        bundle / TEST_CASES_DIR / TEST_CASES_NOTE: templates.test_cases_note(inputs, outputs),
    }
    for path, text in written.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return list(written)


@dataclass(frozen=True)
class NewVersion:
    old: str
    new: str
    path: Path
    copied_cases: list[str]


def new_version(bundles: Path, version: str, keep_test_cases: bool = False) -> NewVersion:
    """Starts `bundles/<version>/` from the newest bundle; test cases are copied only when asked."""
    check_version(version)
    try:
        old = newest_version(bundles)
    except BundleError as error:
        raise ScaffoldError(str(error)) from None
    target = bundles / version
    if target.exists():
        raise ScaffoldError(f"{target} already exists")
    if version_key(version) <= version_key(old):
        raise ScaffoldError(
            f"{version} is not newer than {old}, the version served now; the newest bundle is served, "
            "so a release takes a higher version"
        )
    source = bundles / old
    text, count = MODEL_YAML_VERSION.subn(rf"\g<1>{version}\g<3>", (source / MODEL_YAML).read_text("utf-8"), 1)
    if count != 1:
        raise ScaffoldError(f"{source / MODEL_YAML}: found no `version:` line to move to {version}")
    (target / TEST_CASES_DIR).mkdir(parents=True)
    (target / MODEL_YAML).write_text(text, encoding="utf-8")
    if (source / DOCKER_METADATA_YAML).exists():
        shutil.copy2(source / DOCKER_METADATA_YAML, target / DOCKER_METADATA_YAML)
    copied: list[str] = []
    if keep_test_cases and (source / TEST_CASES_DIR).is_dir():
        shutil.copytree(source / TEST_CASES_DIR, target / TEST_CASES_DIR, dirs_exist_ok=True)
        copied = [path.name for path in case_dirs(target / TEST_CASES_DIR)]
    note = source / TEST_CASES_DIR / TEST_CASES_NOTE
    if not (target / TEST_CASES_DIR / TEST_CASES_NOTE).exists() and note.exists():
        shutil.copy2(note, target / TEST_CASES_DIR / TEST_CASES_NOTE)
    return NewVersion(old=old, new=version, path=target, copied_cases=copied)


MAX_NAME_CHARS = 100
"""Longer names and authors are refused: they head Status answers, the V2 model name and the image's labels."""


def _text_problem(text: str) -> str | None:
    """Why a name or author cannot be written into model.yaml and shown to clients as it is, or None."""
    if any(0xD800 <= ord(character) <= 0xDFFF for character in text):
        return f"{text[:MAX_NAME_CHARS]!r} is not valid Unicode (bytes that are not UTF-8?)"
    if len(text) > MAX_NAME_CHARS:
        return f"has {len(text):,} characters; at most {MAX_NAME_CHARS}"
    # Control and format characters (a newline, a right-to-left override) would make a log line or a listing
    # say something other than what it shows.
    hidden = [(at, char) for at, char in enumerate(text) if unicodedata.category(char) in ("Cc", "Cf")]
    if hidden:
        at, char = hidden[0]
        return f"{text!r} holds the invisible character U+{ord(char):04X} at position {at + 1}"
    return None


def _class_name(name: str) -> str:
    words = re.findall(r"[A-Za-z0-9]+", name)
    base = "".join(word[:1].upper() + word[1:] for word in words) or "My"
    base = f"Model{base}" if base[0].isdigit() else base
    return base if base.endswith("Model") else f"{base}Model"


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
