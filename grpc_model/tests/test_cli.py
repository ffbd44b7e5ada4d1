"""`grpc-model`, as an author runs it: in a copy of the project, from its root, one command per step."""

import hashlib
import json
import os
import shlex
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from grpc_model.src.cli import app
from grpc_model.src.cli.author import templates
from grpc_model.src.cli.author.file_spec import FileSpec
from grpc_model.src.cli.author.testing import run_cases_in_process
from grpc_model.src.metadata import Tolerance, load_bundle, load_test_cases
from grpc_model.src.metadata.test_cases import CaseFile
from grpc_model.src.settings import PROJECT_ROOT
from grpc_model.tests.conftest import (
    TEST_VERSION,
    TESTS,
    ServerFactory,
    ServerThread,
    copy_greeter_project,
    write_greeter_bundle,
    write_newer_bundle,
)

AUTHORS_ROOMS = ("model_lib/", "asset_bundle/")


def grpc_model_cli(project: Path, *args: str, columns: int = 200) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "grpc_model", *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": str(columns)},  # tables fit the terminal's width: wide for whole cells
        check=False,
    )


def files(project: Path) -> dict[str, str]:
    """Every file of the project by path, with a digest of its content."""
    return {
        path.relative_to(project).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in project.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


def changed(before: dict[str, str], after: dict[str, str]) -> set[str]:
    return {path for path in before.keys() | after.keys() if before.get(path) != after.get(path)}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the project serving the framework's test model, so these tests pass whatever the author's is."""
    return copy_greeter_project(tmp_path / "project")


def test_init_refuses_to_overwrite_without_force(project: Path) -> None:
    before = files(project)
    refused = grpc_model_cli(project, "init", "Word Stats")
    assert refused.returncode == 2
    assert "already exist(s); pass --force to replace" in refused.stderr
    assert files(project) == before


def readme_blocks(language: str) -> list[str]:
    """The README's fenced code blocks in `language` ("" for those without one)."""
    blocks: list[tuple[str, list[str]]] = []
    inside = False
    for line in (PROJECT_ROOT / "README.md").read_text().splitlines():
        if line.startswith("```"):
            if not inside:
                blocks.append((line[3:].strip(), []))
            inside = not inside
        elif inside:
            blocks[-1][1].append(line)
    return ["\n".join(lines) for lang, lines in blocks if lang == language]


def test_the_readme_walkthrough_works_in_a_fresh_copy(project: Path) -> None:
    """Steps 2 to 6 and the next release, exactly as the README shows them."""
    before = files(project)
    init = next(line for block in readme_blocks("bash") for line in block.splitlines() if "grpc-model init" in line)
    assert grpc_model_cli(project, *shlex.split(init)[1:]).returncode == 0
    assert "class WordStatsModel(ModelWrapper):" in (project / "model_lib/src/model.py").read_text()
    for check in (["check", "--no-cache"], ["format", "--check", "--no-cache"]):
        lint = subprocess.run(
            [sys.executable, "-m", "ruff", *check, "model_lib"],
            cwd=project,
            capture_output=True,
            text=True,
            check=False,
        )
        assert lint.returncode == 0, lint.stdout + lint.stderr  # the generated code passes the project's style
    no_cases = grpc_model_cli(project, "test")
    assert no_cases.returncode == 1
    assert "no test cases in asset_bundle/0.1.0/test_cases" in no_cases.stdout

    wrapper = next(block for block in readme_blocks("python") if "class " in block)
    (project / "model_lib/src/model.py").write_text(wrapper)
    listing = next(block for block in readme_blocks("") if "test_cases/" in block)
    for line in listing.splitlines():
        path, content = line.split(maxsplit=1)
        if not path.endswith("case.yaml"):
            (project / path).parent.mkdir(parents=True, exist_ok=True)
            (project / path).write_text(content)
    assert grpc_model_cli(project, "validate").returncode == 0
    green = grpc_model_cli(project, "test")
    assert green.returncode == 0, green.stdout + green.stderr
    assert "PASS in-process: 0001-two-words" in green.stdout

    released = grpc_model_cli(project, "new-version", "0.2.0", "--keep-test-cases")
    assert released.returncode == 0, released.stderr
    assert "copied 1 test case(s): 0001-two-words" in released.stdout
    assert all(path.startswith(AUTHORS_ROOMS) for path in changed(before, files(project)))


def test_the_test_cases_note_init_writes_names_every_key_of_case_yaml() -> None:
    inputs, outputs = [FileSpec("input.txt", "text/plain")], [FileSpec("results.json", "application/json")]
    note = templates.test_cases_note(inputs, outputs)
    for key in [*CaseFile.model_fields, *Tolerance.model_fields]:
        assert f"{key}:" in note, f"the test_cases/README.md that init writes does not show {key} of case.yaml"
    assert "`input.txt`" in note
    assert "`results.json`" in note
    example = note.split("```yaml\n")[1].split("```")[0]
    assert CaseFile.model_validate(yaml.safe_load(example)).explain is False  # the example is a valid case.yaml


def test_the_readme_and_the_skeleton_write_outputs_one_way() -> None:
    """The README's wrapper, the skeleton init writes and the example model build results.json the same way."""
    spec = [FileSpec("input.txt", "text/plain")], [FileSpec("results.json", "application/json")]
    skeleton = templates.wrapper("Word Stats", "WordStatsModel", "0.1.0", *spec)
    readme_wrapper = next(block for block in readme_blocks("python") if "class " in block)
    example = (PROJECT_ROOT / "model_lib/src/model.py").read_text()
    for source in (skeleton, readme_wrapper, example):
        assert '"results.json": results_json(' in source
        assert "success_output" not in source
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert "`data.explanation`" in readme  # where an explanation goes, said where the wrapper is
    git_status = next(line for line in readme.split("\n\n") if "`git status`" in line)
    assert "`pyproject.toml`" in git_status
    assert "`poetry.lock`" in git_status  # what adding a dependency changes besides the author's rooms


def test_new_version_releases_without_touching_the_framework(project: Path) -> None:
    before = files(project)
    old = load_bundle(project / "asset_bundle")
    kept = grpc_model_cli(project, "new-version", "0.2.0", "--keep-test-cases")
    assert kept.returncode == 0, kept.stderr
    assert f"copied {len(list(old.test_cases_dir.iterdir()))} test case(s)" in kept.stdout
    assert "update their expected outputs" in kept.stdout
    assert all(path.startswith("asset_bundle/0.2.0/") for path in changed(before, files(project)))
    assert grpc_model_cli(project, "version").stdout.strip() == "0.2.0"

    bare = grpc_model_cli(project, "new-version", "0.3.0")
    assert bare.returncode == 0, bare.stderr
    assert "copied no test cases" in bare.stdout
    new_yaml = (project / "asset_bundle/0.3.0/model.yaml").read_text()
    assert "version: 0.3.0" in new_yaml
    assert [line for line in new_yaml.splitlines() if line.startswith("#")] == [
        line for line in (old.path / "model.yaml").read_text().splitlines() if line.startswith("#")
    ]  # the author's comments are kept
    assert grpc_model_cli(project, "version").stdout.strip() == "0.3.0"
    assert "no test cases" in grpc_model_cli(project, "validate").stdout


def test_testing_an_older_bundle_warns_that_the_code_is_todays(tmp_path: Path) -> None:
    root = write_greeter_bundle(tmp_path / "asset_bundle")  # the framework's model: the author's may have no cases
    write_newer_bundle(root, "0.2.0")
    environment = {
        "GRPC_MODEL_ASSET_BUNDLE_DIR": str(root),
        "GRPC_MODEL_MODEL_VERSION": TEST_VERSION,
        "GRPC_MODEL_MODEL_CLASS": f"{TESTS}:Greeter",
        "COLUMNS": "300",
    }

    result = CliRunner().invoke(app, ["test"], env=environment)

    assert result.exit_code == 0, result.output  # a warning, not a failure
    warning = f"warning: serving asset bundle {TEST_VERSION}, but 0.2.0 is the newest"
    assert result.output.count(warning) == 2  # before the run, and again under the summary
    assert "code is not versioned with bundles" in result.output


@pytest.mark.parametrize(
    ("version", "message"),
    [("1.0", "not a version of three"), ("0.1.0", "already exists"), ("0.0.9", "not newer than 0.1.0")],
)
def test_new_version_refuses_a_version_it_cannot_serve(project: Path, version: str, message: str) -> None:
    before = files(project)
    result = grpc_model_cli(project, "new-version", version)
    assert result.returncode == 2
    assert message in result.stderr
    assert files(project) == before


def test_validate_names_every_problem_by_file_and_key_path(project: Path) -> None:
    bundle = load_bundle(project / "asset_bundle")
    first, second, third = sorted(path for path in bundle.test_cases_dir.iterdir() if path.is_dir())[:3]
    (first / "input.txt").unlink()
    (second / "notes.txt").write_text("scratch")
    (third / "case.yaml").write_text("tolerance: -1\n")

    result = grpc_model_cli(project, "validate")

    assert result.returncode == 1
    assert f"{first.name}: missing input file 'input.txt'" in result.stdout
    assert f"{second.name}: notes.txt: not an input or output declared in model.yaml" in result.stdout
    assert "tolerance.absolute: Input should be greater than or equal to 0" in result.stdout

    model_yaml = bundle.path / "model.yaml"
    model_yaml.write_text(model_yaml.read_text().replace("maxBatchSize: 8", "maxBatchSize: eight"))
    broken = grpc_model_cli(project, "validate")
    assert broken.returncode == 1
    assert "features.maxBatchSize: Input should be a valid integer" in broken.stdout
    assert grpc_model_cli(project, "validate", "9.9.9").returncode == 1


def test_a_failing_case_names_the_case_file_and_key_path(project: Path, tmp_path: Path) -> None:
    case = sorted(path for path in load_bundle(project / "asset_bundle").test_cases_dir.iterdir() if path.is_dir())[0]
    expected = json.loads((case / "results.json").read_text())
    expected["data"]["result"] = {"wrong": True}
    (case / "results.json").write_text(json.dumps(expected))

    result = grpc_model_cli(project, "test", "--junit", str(tmp_path / "results.xml"))

    assert result.returncode == 1
    assert f"FAIL in-process: {case.name}" in result.stdout
    assert "results.json: data.result.wrong: missing" in result.stdout
    report = ET.parse(tmp_path / "results.xml").getroot()
    failed = [test.get("name") for test in report.iter("testcase") if test.find("failure") is not None]
    assert case.name in failed
    assert any(suite.get("name") == "pytest" for suite in report.iter("testsuite"))  # model_lib/tests, from pytest


def test_a_case_that_fails_in_process_is_reported_once(tmp_path: Path) -> None:
    bundle_root = write_greeter_bundle(tmp_path / "bundle")
    cases = bundle_root / TEST_VERSION / "test_cases"
    (cases / "0001-full-sentence" / "results.json").write_text('{"data": {"result": {"greeting": "wrong"}}}')
    (cases / "0004-one-word" / "input.txt").write_text("   ")  # the greeter raises for it: in a batch call too
    bundle = load_bundle(bundle_root)

    outcomes = run_cases_in_process(bundle, load_test_cases(bundle), f"{TESTS}:Greeter")

    failed = {outcome.name: outcome.problems for outcome in outcomes if not outcome.passed}
    assert set(failed) == {"0001-full-sentence", "0004-one-word"}  # not again under the batch check
    assert failed["0004-one-word"] == ["the model failed: ValueError: input.txt is empty: expected at least one word"]
    assert any("handle_input_batch" in outcome.name for outcome in outcomes)  # the cases that pass still go in one


def test_the_test_cases_pass_against_a_running_server(serve: ServerFactory, project: Path) -> None:
    server = serve(model_class=f"{TESTS}:Greeter", asset_bundle_dir=project / "asset_bundle")
    result = grpc_model_cli(project, "test", "--server", f"127.0.0.1:{server.running.port}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"PASS 127.0.0.1:{server.running.port}: Status of" in result.stdout


def test_status_and_call_show_a_running_server(greeter_server: ServerThread, tmp_path: Path) -> None:
    target = f"127.0.0.1:{greeter_server.running.port}"
    (tmp_path / "hello.txt").write_text("My name is Ada")

    status = grpc_model_cli(tmp_path, "status", target)
    call = grpc_model_cli(tmp_path, "call", target, "--input", f"input.txt={tmp_path / 'hello.txt'}")
    written = grpc_model_cli(
        tmp_path, "call", target, "--input", f"input.txt={tmp_path / 'hello.txt'}", "--output-dir", str(tmp_path / "o")
    )
    unknown = grpc_model_cli(tmp_path, "call", target, "--input", f"image.png={tmp_path / 'hello.txt'}")

    assert status.returncode == 0, status.stdout
    assert "Hello World" in status.stdout
    assert "SERVING" in status.stdout
    assert call.returncode == 0, call.stdout
    assert "Hello. Nice to meet you, Ada" in call.stdout
    assert written.returncode == 0
    assert "Nice to meet you, Ada" in (tmp_path / "o/results.json").read_text()
    assert unknown.returncode == 2
    assert "the model has no input 'image.png'" in unknown.stdout


def test_a_calls_json_output_is_one_line_for_a_pipe_whatever_the_width(
    greeter_server: ServerThread, tmp_path: Path
) -> None:
    """`grpc-model call ... | jq` needs the JSON whole: rich would break it at the terminal's width (80 columns in a
    pipe) inside a string or between a key and its value."""
    (tmp_path / "hello.txt").write_text("My name is Ada")
    target = f"127.0.0.1:{greeter_server.running.port}"
    call = grpc_model_cli(tmp_path, "call", target, "--input", f"input.txt={tmp_path / 'hello.txt'}", columns=40)
    assert call.returncode == 0, call.stdout + call.stderr
    (line,) = [line for line in call.stdout.splitlines() if line.startswith("  results.json: ")]
    assert len(line) > 40
    answer = json.loads(line.removeprefix("  results.json: "))
    assert answer["data"]["result"] == {"greeting": "Hello. Nice to meet you, Ada"}


def test_call_after_a_failed_load_names_the_loads_error(serve_wrapper: ServerFactory, tmp_path: Path) -> None:
    server = serve_wrapper("FailingInit")
    (tmp_path / "a.bin").write_bytes(b"1")

    call = grpc_model_cli(tmp_path, "call", f"127.0.0.1:{server.running.port}", "--input", f"a={tmp_path / 'a.bin'}")

    assert call.returncode == 1
    assert "the last load failed: RuntimeError: weights file /models/weights.pt not found" in call.stdout


def test_an_unreachable_server_is_a_failure_not_a_traceback(tmp_path: Path) -> None:
    result = grpc_model_cli(tmp_path, "status", "127.0.0.1:1", "--timeout", "2")
    assert result.returncode == 1
    assert "UNAVAILABLE" in result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "command", ["init", "new-version", "validate", "version", "test", "serve", "status", "call", "score"]
)
def test_every_command_has_help_with_an_example(command: str) -> None:
    result = CliRunner().invoke(app, [command, "--help"])
    assert result.exit_code == 0
    assert "xample" in result.output  # "Example:" in ours, "example:" in the server's flags
    assert "grpc-model" in result.output
