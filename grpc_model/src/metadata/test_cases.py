"""Functional test cases: `asset_bundle/<version>/test_cases/<case>/`.

A case directory holds every input file declared under `inputs` in `model.yaml`, at least
one expected output file declared under `outputs`, and optionally `case.yaml`, which sets
the call's `detect_drift`/`explain` flags and a numeric tolerance for JSON outputs. JSON
outputs are compared as parsed JSON (key order and whitespace are not part of a model's
answer); every other file byte for byte.
"""

import json
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from grpc_model.src.metadata.bundle import AssetBundle, BundleError, parse_file

CASE_FILE = "case.yaml"
MAX_DIFFERENCES = 20


class Tolerance(BaseModel):
    """How far a number in a JSON output may be from the expected one: |got - expected| <= absolute +
    relative * |expected| (numpy's `isclose` rule), because a real model's floats differ in the last
    digits between machines."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    absolute: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    relative: float = Field(default=0.0, ge=0, allow_inf_nan=False)

    def allows(self, expected: float, actual: float) -> bool:
        return abs(actual - expected) <= self.absolute + self.relative * abs(expected)


def _bare_number_is_absolute(value: Any) -> Any:
    return {"absolute": value} if isinstance(value, int | float) and not isinstance(value, bool) else value


ToleranceSetting = Annotated[Tolerance | None, BeforeValidator(_bare_number_is_absolute)]
"""`tolerance: 0.001` or `tolerance: {absolute: 0.001, relative: 0.0001}`."""


class OutputRules(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tolerance: ToleranceSetting = None


class CaseFile(BaseModel):
    """`case.yaml`: the Run call's flags, and a tolerance for every JSON output of the case or per output file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    detect_drift: bool = False
    explain: bool = False
    tolerance: ToleranceSetting = None
    outputs: dict[str, OutputRules] = {}


@dataclass(frozen=True)
class TestCase:
    __test__ = False  # not a pytest test class, despite the name

    name: str
    inputs: dict[str, bytes]
    expected: dict[str, bytes]
    tolerances: dict[str, Tolerance] = field(default_factory=dict)
    """Per expected output file; an output without one is compared exactly."""
    detect_drift: bool = False
    explain: bool = False

    def differences(self, actual: Mapping[str, bytes]) -> list[str]:
        """What the model's outputs get wrong, by file and key path; empty when they pass."""
        return output_differences(self.expected, actual, self.tolerances)


def load_test_cases(bundle: AssetBundle) -> list[TestCase]:
    """Every case of the bundle, sorted by name; a malformed case is a `BundleError`."""
    root = bundle.test_cases_dir
    if not root.is_dir():
        return []
    return [load_test_case(path, bundle.spec.inputs, bundle.spec.outputs) for path in case_dirs(root)]


def case_dirs(root: Path) -> list[Path]:
    return sorted(path for path in root.iterdir() if path.is_dir() and not path.name.startswith("."))


def load_test_case(path: Path, input_names: Collection[str], output_names: Collection[str]) -> TestCase:
    """Reads one case; every problem found is in the `BundleError`'s message, one per line."""
    case, problems = read_test_case(path, input_names, output_names)
    if case is None:
        raise BundleError(f"{path}: {len(problems)} problem(s):\n" + "\n".join(f"  {p}" for p in problems))
    return case


def read_test_case(
    path: Path, input_names: Collection[str], output_names: Collection[str]
) -> tuple[TestCase | None, list[str]]:
    """The case, or None and every problem with it (for `grpc-model validate`, which lists them all)."""
    if not path.is_dir():
        return None, ["test case directory not found"]
    files = {p.name: p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")}
    problems = [
        f"missing input file {name!r} (declared under inputs in model.yaml)"
        for name in sorted(input_names)
        if name not in files
    ]
    undeclared = sorted(files.keys() - set(input_names) - set(output_names) - {CASE_FILE})
    problems += [
        f"{name}: not an input or output declared in model.yaml (outputs: {sorted(output_names)})"
        for name in undeclared
    ]
    expected_names = sorted(files.keys() & set(output_names))
    if not expected_names:
        problems.append(f"no expected output file; add one of {sorted(output_names)}")
    rules = CaseFile()
    if CASE_FILE in files:
        try:
            rules = parse_file(files[CASE_FILE], CaseFile)
        except BundleError as error:
            problems.append(str(error).removeprefix(f"{files[CASE_FILE]}: ").replace("\n", "\n  "))
        problems += [
            f"{CASE_FILE}: outputs.{name}: not an expected output file of this case"
            for name in sorted(rules.outputs.keys() - set(expected_names))
        ]
    if problems:
        return None, problems
    tolerances = {name: tolerance for name in expected_names if (tolerance := _tolerance_of(rules, name))}
    case = TestCase(
        name=path.name,
        inputs={name: files[name].read_bytes() for name in sorted(input_names)},
        expected={name: files[name].read_bytes() for name in expected_names},
        tolerances=tolerances,
        detect_drift=rules.detect_drift,
        explain=rules.explain,
    )
    return case, []


def _tolerance_of(rules: CaseFile, output: str) -> Tolerance | None:
    own = rules.outputs.get(output)
    return own.tolerance if own is not None and own.tolerance is not None else rules.tolerance


def output_differences(
    expected: Mapping[str, bytes], actual: Mapping[str, bytes], tolerances: Mapping[str, Tolerance] | None = None
) -> list[str]:
    """Human-readable differences between expected and actual output files; empty when they match."""
    tolerances = tolerances or {}
    problems = [f"missing output file {name!r}" for name in sorted(expected.keys() - actual.keys())]
    for name in sorted(expected.keys() & actual.keys()):
        parsed = _parsed_json(name, expected[name], actual[name])
        if parsed is not None:
            differences = _json_differences(*parsed, tolerances.get(name))
            problems += [f"{name}: {difference}" for difference in differences[:MAX_DIFFERENCES]]
            if len(differences) > MAX_DIFFERENCES:
                problems.append(f"{name}: and {len(differences) - MAX_DIFFERENCES} more differences")
        elif expected[name] != actual[name]:
            problems.append(f"{name}: expected {_preview(expected[name])}, got {_preview(actual[name])}")
    return problems


def _parsed_json(name: str, expected: bytes, actual: bytes) -> tuple[Any, Any] | None:
    if name.endswith(".json"):
        try:
            return json.loads(expected), json.loads(actual)
        except ValueError:
            pass
    return None


def _json_differences(expected: Any, actual: Any, tolerance: Tolerance | None, path: str = "") -> list[str]:
    """Where two JSON documents differ, by key path, so that a long document's one wrong value shows."""
    where = path or "the document"
    if isinstance(expected, dict) and isinstance(actual, dict):
        differences = [f"{path}{key}: missing" for key in expected if key not in actual]
        differences += [
            f"{path}{key}: not expected, got {_json_preview(actual[key])}" for key in actual if key not in expected
        ]
        for key in expected:
            if key in actual:
                differences += _json_differences(expected[key], actual[key], tolerance, f"{path}{key}.")
        return differences
    if isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        return [
            d
            for i, (e, a) in enumerate(zip(expected, actual, strict=True))
            for d in _json_differences(e, a, tolerance, f"{path}{i}.")
        ]
    same = expected == actual and isinstance(expected, bool) == isinstance(actual, bool)  # JSON: true is not 1
    if same or (tolerance is not None and _close(expected, actual, tolerance)):
        return []
    values = f"expected {_json_preview(expected)}, got {_json_preview(actual)}"
    return [f"{where.removesuffix('.')}: {values}{_number_note(expected, actual, tolerance)}"]


def _number_note(expected: Any, actual: Any, tolerance: Tolerance | None) -> str:
    """How far off a number is and the tolerance it failed, so the author sees whether to fix the model or the
    tolerance; empty for values that are not both finite numbers."""
    if not _finite_numbers(expected, actual):
        return ""
    off = f"off by {abs(actual - expected):.6g}"
    if tolerance is None:
        return f" ({off}; compared exactly: case.yaml sets no tolerance)"
    bound = tolerance.absolute + tolerance.relative * abs(expected)
    limits = f"absolute {tolerance.absolute:g}, relative {tolerance.relative:g}"
    return f" ({off}; tolerance: {limits}, so at most {bound:.6g} here)"


def _close(expected: Any, actual: Any, tolerance: Tolerance) -> bool:
    return _finite_numbers(expected, actual) and tolerance.allows(expected, actual)


def _finite_numbers(*values: Any) -> bool:
    """Whether a tolerance applies: JSON numbers that are finite (true is not 1 in JSON)."""
    return all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in values)


def _json_preview(value: Any, limit: int = 200) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[:limit] + "..."


def _preview(content: bytes, limit: int = 200) -> str:
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        return f"<{len(content)} bytes of binary data>"
    return repr(text if len(text) <= limit else text[:limit] + "...")
