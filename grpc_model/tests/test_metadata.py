"""model.yaml validation and asset-bundle loading: every broken file gets a message naming the key."""

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from grpc_model.src.metadata import (
    BundleError,
    Tolerance,
    load_bundle,
    load_test_case,
    load_test_cases,
    newest_version,
    older_bundle_warning,
    output_differences,
)
from grpc_model.src.modzy_messages import status_metadata
from grpc_model.tests.conftest import GREETER, write_newer_bundle

EXAMPLE = GREETER  # a bundle of version 0.1.0 that the framework owns


@pytest.fixture
def bundle_root(tmp_path: Path) -> Path:
    shutil.copytree(EXAMPLE, tmp_path / "0.1.0")
    return tmp_path


def edit_model_yaml(root: Path, edit: dict[str, object]) -> None:
    """Sets (or, with None, removes) key paths like `features/maxBatchSize` in the copied model.yaml."""
    path = root / "0.1.0" / "model.yaml"
    data = yaml.safe_load(path.read_text())
    for key_path, value in edit.items():
        *parents, last = key_path.split("/")
        node = data
        for parent in parents:
            node = node[parent]
        if value is None:
            del node[last]
        else:
            node[last] = value
    path.write_text(yaml.safe_dump(data))


def test_a_full_bundle_loads(bundle_root: Path) -> None:
    bundle = load_bundle(bundle_root, "0.1.0")
    assert bundle.spec.name == "Hello World"
    assert bundle.spec.features.maxBatchSize == 8
    assert list(bundle.spec.inputs) == ["input.txt"]
    assert bundle.docker is not None
    assert bundle.docker.id == "hello-world"


def test_blank_optional_fields_get_defaults(bundle_root: Path) -> None:
    path = bundle_root / "0.1.0" / "model.yaml"
    text = path.read_text()
    for line in ["  summary: Greets the person whose name is the last word of a text file.", "  maxBatchSize: 8"]:
        text = text.replace(line, line.split(":")[0] + ":")
    text = text.replace("tags:\n  - example\n  - text", "tags:\n  -")
    path.write_text(text)

    spec = load_bundle(bundle_root, "0.1.0").spec

    assert spec.description.summary == ""
    assert spec.features.maxBatchSize == 1
    assert spec.tags == []


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        ({"name": None}, "name: Field required"),
        ({"author": ""}, "author: String should have at least 1 character"),
        ({"features/maxBatchSize": "eight"}, "features.maxBatchSize: Input should be a valid integer"),
        ({"features/maxBatchSize": 0}, "features.maxBatchSize: Value error, must be between 1 and 1000000 items"),
        ({"features/maxBatchSise": 4}, "features.maxBatchSise: unknown key; did you mean maxBatchSize?"),
        ({"inputs/input.txt/maxsize": "1M"}, "inputs.input.txt.maxsize: unknown key; did you mean maxSize?"),
        ({"resources/gpu/cuont": 1}, "resources.gpu.cuont: unknown key; did you mean count?"),
        ({"filters": [{"lable": "x"}]}, "filters.0.lable: unknown key; did you mean label?"),
        ({"colour": "red"}, "colour: unknown key; the keys here are: specification, type, source, version, name,"),
        ({"inputs": {}}, "inputs: Dictionary should have at least 1 item"),
        ({"inputs/input.txt/maxSize": None}, "inputs.input.txt.maxSize: Field required"),
        ({"inputs/input.txt/acceptedMediaTypes": [None]}, "inputs.input.txt.acceptedMediaTypes: List should have"),
        ({"outputs/results.json/mediaType": None}, "outputs.results.json.mediaType: Field required"),
        ({"resources/gpu/count": -1}, "resources.gpu.count: Value error, must be between 0 and 1024 GPUs"),
        ({"type": "rest"}, "type: Input should be 'grpc' or 'file'"),
        ({"version": "1.0"}, "version: String should match pattern"),
        # Values the protobuf Status message cannot carry, and sizes and durations no number can hold.
        ({"inputs/input.txt/maxSize": "9" * 400}, "inputs.input.txt.maxSize: Value error, too large"),
        ({"resources/memory/size": "9" * 400}, "resources.memory.size: Value error, too large"),
        ({"timeout/run": "9" * 400 + "s"}, "timeout.run: Value error, too long"),
        (
            {"timeout/run": "600h"},
            "timeout.run: Value error, too long: a timeout is at most 2147483 s",
        ),  # poll() overflowed
        ({"features/maxBatchSize": 3_000_000_000}, "features.maxBatchSize: Value error, must be between 1 and 1000000"),
        ({"resources/gpu/count": 3_000_000_000}, "resources.gpu.count: Value error, must be between 0 and 1024 GPUs"),
        ({"resources/cpu/count": 1e39}, "resources.cpu.count: Value error, must be between 0 and 4096 CPUs"),
        ({"resources/cpu/count": float("inf")}, "resources.cpu.count: Value error, must be between 0 and 4096 CPUs"),
        ({"resources/cpu/count": float("nan")}, "resources.cpu.count: Value error, must be between 0 and 4096 CPUs"),
        # Silly sizes: a memory of 400 digits either way, a file that can hold nothing, a metric of NaN.
        (
            {"resources/memory/size": "0." + "0" * 399 + "1"},
            "resources.memory.size: Value error, too small: must be between 1048576 and 1125899906842624 bytes",
        ),
        ({"resources/memory/size": 10**400}, "resources.memory.size: Value error, too large: must be between"),
        ({"inputs/input.txt/maxSize": "0"}, "inputs.input.txt.maxSize: Value error, too small: must be between 1 and"),
        ({"metrics": [{"label": "F1", "value": float("nan")}]}, "metrics.0.value: Input should be a finite number"),
        # File names that are no plain file name, and media types that are not RFC 6838 ones.
        ({"outputs": {"../x.json": {"mediaType": "application/json", "maxSize": "1M"}}}, "outputs.../x.json.[key]"),
        ({"outputs/results.json/mediaType": "text/plain\nx: 1"}, "outputs.results.json.mediaType: Value error, is not"),
        ({"inputs/input.txt/acceptedMediaTypes": ["text"]}, "inputs.input.txt.acceptedMediaTypes.0: Value error"),
        ({"description/summary": "a\ud800"}, "description.summary: Value error, not valid Unicode"),
        ({"inputs/input.txt/description": "\udfff"}, "inputs.input.txt.description: Value error, not valid Unicode"),
    ],
)
def test_broken_model_yaml_names_the_file_and_key(bundle_root: Path, edit: dict[str, object], expected: str) -> None:
    edit_model_yaml(bundle_root, edit)
    with pytest.raises(BundleError) as raised:
        load_bundle(bundle_root, "0.1.0")
    message = str(raised.value)
    assert str(bundle_root / "0.1.0" / "model.yaml") in message
    assert expected in message


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("name: [unclosed", "not valid YAML"),
        ("- a list", "expected a mapping of keys at the top level, got list"),
        ("", "expected a mapping of keys at the top level, got NoneType"),
        # YAML that PyYAML parses, then fails to turn into Python values with errors other than YAMLError.
        ("name: " + "[" * 10_000 + "]" * 10_000, r"not valid YAML: RecursionError: maximum recursion depth"),
        ("released: 2001-13-45", r"not valid YAML: ValueError: month must be in 1\.\.12"),
        ("count: " + "9" * 5000, r"not valid YAML: ValueError: Exceeds the limit \(4300 digits\)"),
        ("count: !!float many", r"not valid YAML: ValueError: could not convert string to float: 'many'"),
    ],
)
def test_unreadable_model_yaml(bundle_root: Path, content: str, expected: str) -> None:
    (bundle_root / "0.1.0" / "model.yaml").write_text(content)
    with pytest.raises(BundleError, match=expected):
        load_bundle(bundle_root, "0.1.0")


def test_a_version_mismatch_says_what_to_change(bundle_root: Path) -> None:
    edit_model_yaml(bundle_root, {"version": "0.2.0"})
    with pytest.raises(BundleError, match=r"version: is 0.2.0 but the file is in 0.1.0/; set `version: 0.1.0`"):
        load_bundle(bundle_root, "0.1.0")


def test_a_missing_bundle_lists_the_versions_found(bundle_root: Path) -> None:
    with pytest.raises(BundleError, match=r"no asset bundle for version 9.9.9 .*versions found: 0.1.0"):
        load_bundle(bundle_root, "9.9.9")


def test_an_unreadable_bundle_directory_is_named(tmp_path: Path) -> None:
    too_long = tmp_path / ("x" * 300)  # longer than a file name may be
    with pytest.raises(BundleError, match=r"x{300}/0\.1\.0: cannot be read: File name too long \(asset_bundle_dir\)"):
        load_bundle(too_long, "0.1.0")


def test_missing_model_yaml(tmp_path: Path) -> None:
    (tmp_path / "0.1.0").mkdir()
    with pytest.raises(BundleError, match=r"model\.yaml: file not found"):
        load_bundle(tmp_path, "0.1.0")


def test_test_cases_are_loaded_with_inputs_and_expectations(bundle_root: Path) -> None:
    cases = load_test_cases(load_bundle(bundle_root, "0.1.0"))
    assert len(cases) >= 4
    assert all(set(case.inputs) == {"input.txt"} and "results.json" in case.expected for case in cases)


def test_a_test_case_missing_an_input_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "results.json").write_text("{}")
    with pytest.raises(BundleError, match=r"missing input file 'input.txt'"):
        load_test_case(tmp_path, ["input.txt"], ["results.json"])


EXACTLY = "compared exactly: case.yaml sets no tolerance"


def test_json_outputs_compare_as_json_and_others_as_bytes() -> None:
    expected = {"r.json": b'{"a": 1, "b": [1, 2]}', "img.png": b"\x89PNG"}
    assert output_differences(expected, {"r.json": b'{"b":[1,2],"a":1}', "img.png": b"\x89PNG"}) == []
    assert output_differences(expected, {"r.json": b'{"a": 2, "b": [1, 2]}', "img.png": b"\x89PNG"}) == [
        f"r.json: a: expected 1, got 2 (off by 1; {EXACTLY})"
    ]
    assert output_differences(expected, {"r.json": expected["r.json"], "img.png": b"\x89PNh"}) == [
        "img.png: expected <4 bytes of binary data>, got <4 bytes of binary data>"
    ]
    assert output_differences(expected, {"r.json": expected["r.json"]}) == ["missing output file 'img.png'"]


def test_json_differences_name_the_key_path() -> None:
    expected = {
        "results.json": json.dumps({"data": {"result": {"top": ["a", "b"], "n": 3}, "explanation": None}}).encode()
    }
    actual = {
        "results.json": json.dumps({"data": {"result": {"top": ["a", "c"], "m": 3}, "explanation": None}}).encode()
    }
    assert sorted(output_differences(expected, actual)) == [
        "results.json: data.result.m: not expected, got 3",
        "results.json: data.result.n: missing",
        'results.json: data.result.top.1: expected "b", got "c"',  # values as JSON
    ]
    assert output_differences({"r.json": b"[1, 2]"}, {"r.json": b"[1]"}) == [
        "r.json: the document: expected [1, 2], got [1]"
    ]
    many = output_differences(
        {"r.json": json.dumps(list(range(30))).encode()}, {"r.json": json.dumps([-1] * 30).encode()}
    )
    assert many[:2] == [
        f"r.json: 0: expected 0, got -1 (off by 1; {EXACTLY})",
        f"r.json: 1: expected 1, got -1 (off by 2; {EXACTLY})",
    ]
    assert many[20:] == ["r.json: and 10 more differences"]
    assert output_differences({"r.json": b"{}"}, {"r.json": b"not json"}) == ["r.json: expected '{}', got 'not json'"]


def test_numbers_match_within_a_tolerance_and_true_is_not_one() -> None:
    expected = {"r.json": b'{"p": [0.5, 100.0], "ok": true}'}
    actual = {"r.json": b'{"p": [0.5004, 100.9], "ok": true}'}
    assert output_differences(expected, actual) == [
        f"r.json: p.0: expected 0.5, got 0.5004 (off by 0.0004; {EXACTLY})",
        f"r.json: p.1: expected 100.0, got 100.9 (off by 0.9; {EXACTLY})",
    ]
    assert output_differences(expected, actual, {"r.json": Tolerance(absolute=0.001, relative=0.001)}) == [
        "r.json: p.1: expected 100.0, got 100.9 (off by 0.9; tolerance: absolute 0.001, relative 0.001, "
        "so at most 0.101 here)"  # the tolerance in force, and what it allows for this number
    ]
    assert output_differences(expected, actual, {"r.json": Tolerance(absolute=0.001, relative=0.01)}) == []
    assert output_differences({"r.json": b"[true]"}, {"r.json": b"[1]"}, {"r.json": Tolerance(absolute=1)}) == [
        "r.json: 0: expected true, got 1"
    ]


def write_case(path: Path, case_yaml: str | None = None, **files: str) -> Path:
    path.mkdir()
    for name, content in {"input.txt": "Hi Al", "results.json": '{"n": 1.0}', **files}.items():
        (path / name.replace("_", ".")).write_text(content)
    if case_yaml is not None:
        (path / "case.yaml").write_text(case_yaml)
    return path


def test_case_yaml_sets_flags_and_tolerances(tmp_path: Path) -> None:
    yaml_text = "explain: true\ntolerance: 0.5\noutputs:\n  results.json: {tolerance: {relative: 0.01}}\n"
    case = load_test_case(write_case(tmp_path / "c", yaml_text), ["input.txt"], ["results.json", "other.json"])
    assert (case.explain, case.detect_drift) == (True, False)
    assert case.tolerances == {"results.json": Tolerance(relative=0.01)}  # the output's own tolerance wins
    assert case.differences({"results.json": b'{"n": 1.005}'}) == []
    assert case.differences({"results.json": b'{"n": 1.5}'}) == [
        "results.json: n: expected 1.0, got 1.5 (off by 0.5; tolerance: absolute 0, relative 0.01, "
        "so at most 0.01 here)"
    ]


@pytest.mark.parametrize(
    ("case_yaml", "files", "problem"),
    [
        ("tolerance: -1\n", {}, "tolerance.absolute: Input should be greater than or equal to 0"),
        ("tolerence: 1\n", {}, "tolerence: unknown key; did you mean tolerance?"),
        ("outputs: {other.json: {tolerance: 1}}\n", {}, "outputs.other.json: not an expected output file"),
        (None, {"notes_txt": "scratch"}, "notes.txt: not an input or output declared in model.yaml"),
    ],
)
def test_a_malformed_case_names_the_file_and_key(
    tmp_path: Path, case_yaml: str | None, files: dict[str, str], problem: str
) -> None:
    with pytest.raises(BundleError, match=re.escape(problem)):
        load_test_case(write_case(tmp_path / "c", case_yaml, **files), ["input.txt"], ["results.json", "other.json"])


def test_serving_an_older_bundle_than_the_newest_says_the_code_is_todays(bundle_root: Path) -> None:
    write_newer_bundle(bundle_root, "0.10.0")
    older = older_bundle_warning(load_bundle(bundle_root, "0.1.0"))
    assert older is not None
    assert "serving asset bundle 0.1.0, but 0.10.0 is the newest" in older
    assert "the code is today's: code is not versioned with bundles" in older
    assert older_bundle_warning(load_bundle(bundle_root, "0.10.0")) is None
    assert older_bundle_warning(load_bundle(bundle_root)) is None


def test_the_newest_version_is_served(tmp_path: Path) -> None:
    for version in ("0.9.0", "0.10.0", "1.0.0", "notes"):
        (tmp_path / version).mkdir()
    for version in ("0.9.0", "0.10.0", "notes"):
        (tmp_path / version / "model.yaml").write_text("")
    assert newest_version(tmp_path) == "0.10.0"  # numeric order; 1.0.0 has no model.yaml, "notes" is no version
    with pytest.raises(BundleError, match=r"no asset bundle under .*grpc-model init NAME"):
        newest_version(tmp_path / "missing")


def test_the_largest_accepted_values_fit_the_status_message(bundle_root: Path) -> None:
    edit_model_yaml(
        bundle_root,
        {"features/maxBatchSize": 1_000_000, "resources/gpu/count": 1024, "resources/cpu/count": 4096},
    )
    status = status_metadata(load_bundle(bundle_root, "0.1.0").spec)
    assert (status.features.batch_size, status.resources.num_gpus) == (1_000_000, 1024)
    assert status.resources.num_cpus == 4096
