"""Functional test cases: `asset_bundle/<version>/test_cases/<case>/`.

A case directory holds every input file named in `model.yaml` `inputs` and the expected
output files. JSON outputs are compared as parsed JSON (key order and whitespace are not
part of a model's answer); every other file byte for byte.
"""

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grpc_model.src.metadata.bundle import AssetBundle, BundleError


@dataclass(frozen=True)
class TestCase:
    __test__ = False  # not a pytest test class, despite the name

    name: str
    inputs: dict[str, bytes]
    expected: dict[str, bytes]


def load_test_cases(bundle: AssetBundle) -> list[TestCase]:
    """Every case of the bundle, sorted by name; a case missing an input file is an error."""
    root = bundle.test_cases_dir
    if not root.is_dir():
        return []
    return [load_test_case(path, bundle.spec.inputs) for path in sorted(root.iterdir()) if path.is_dir()]


def load_test_case(path: Path, input_names: Collection[str]) -> TestCase:
    """Reads one case: the files named in `input_names` are its inputs, the others its expected outputs."""
    input_names = set(input_names)
    if not path.is_dir():
        raise BundleError(f"{path}: test case directory not found")
    files = {p.name: p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")}
    missing = sorted(input_names - files.keys())
    if missing:
        raise BundleError(f"{path}: test case is missing input file(s) {missing} declared in model.yaml")
    expected = {name: files[name].read_bytes() for name in sorted(files.keys() - input_names)}
    if not expected:
        raise BundleError(f"{path}: test case has no expected output files")
    return TestCase(
        name=path.name,
        inputs={name: files[name].read_bytes() for name in sorted(input_names)},
        expected=expected,
    )


def output_differences(expected: Mapping[str, bytes], actual: Mapping[str, bytes]) -> list[str]:
    """Human-readable differences between expected and actual output files; empty when equal."""
    problems = [f"missing output file {name!r}" for name in sorted(expected.keys() - actual.keys())]
    for name in sorted(expected.keys() & actual.keys()):
        parsed = _parsed_json(name, expected[name], actual[name])
        if parsed is not None:
            differences = _json_differences(*parsed)
            problems += [f"{name}: {difference}" for difference in differences[:MAX_DIFFERENCES]]
            if len(differences) > MAX_DIFFERENCES:
                problems.append(f"{name}: and {len(differences) - MAX_DIFFERENCES} more differences")
        elif expected[name] != actual[name]:
            problems.append(f"{name}: expected {_preview(expected[name])}, got {_preview(actual[name])}")
    return problems


MAX_DIFFERENCES = 20


def _parsed_json(name: str, expected: bytes, actual: bytes) -> tuple[Any, Any] | None:
    if name.endswith(".json"):
        try:
            return json.loads(expected), json.loads(actual)
        except ValueError:
            pass
    return None


def _json_differences(expected: Any, actual: Any, path: str = "") -> list[str]:
    """Where two JSON documents differ, by key path, so that a long document's one wrong value shows."""
    where = path or "the document"
    if isinstance(expected, dict) and isinstance(actual, dict):
        differences = [f"{path}{key}: missing" for key in expected if key not in actual]
        differences += [
            f"{path}{key}: not expected, got {_json_preview(actual[key])}" for key in actual if key not in expected
        ]
        for key in expected:
            if key in actual:
                differences += _json_differences(expected[key], actual[key], f"{path}{key}.")
        return differences
    if isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        return [
            d
            for i, (e, a) in enumerate(zip(expected, actual, strict=True))
            for d in _json_differences(e, a, f"{path}{i}.")
        ]
    if expected == actual:
        return []
    return [f"{where.removesuffix('.')}: expected {_json_preview(expected)}, got {_json_preview(actual)}"]


def _json_preview(value: Any, limit: int = 200) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[:limit] + "..."


def _preview(content: bytes, limit: int = 200) -> str:
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        return f"<{len(content)} bytes of binary data>"
    return repr(text if len(text) <= limit else text[:limit] + "...")
