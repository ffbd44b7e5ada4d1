"""The reference client CLI against a live server."""

import shutil
from pathlib import Path

import pytest

from grpc_model.src import model_client
from grpc_model.src.settings import PROJECT_ROOT
from grpc_model.tests.conftest import ServerThread

CASES = PROJECT_ROOT / "asset_bundle/0.1.0/test_cases"


def cli(server: ServerThread, *args: str) -> int:
    return model_client.main(["--host", "127.0.0.1", "--port", str(server.running.port), *args])


def test_all_bundled_test_cases_pass(example_server: ServerThread, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(example_server, "--batch-size", "3") == 0
    out = capsys.readouterr().out
    assert out.count("PASS") == len(list(CASES.iterdir()))
    assert "FAIL" not in out


def test_a_wrong_expectation_fails(
    example_server: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    case = tmp_path / "wrong"
    shutil.copytree(CASES / "0004-one-word", case)
    (case / "results.json").write_text('{"data": {"result": {"greeting": "Bye"}, "explanation": null, "drift": null}}')

    assert cli(example_server, "--test-case", str(case)) == 1
    assert "FAIL wrong" in capsys.readouterr().out


def test_input_files_are_sent_and_outputs_printed(
    example_server: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a.txt").write_text("My name is Kim")
    assert cli(example_server, "--input", f"input.txt={tmp_path / 'a.txt'}", "--batch-size", "2") == 0
    out = capsys.readouterr().out
    assert out.count("Hello. Nice to meet you, Kim") == 2


def test_a_failing_item_gives_a_non_zero_exit(example_server: ServerThread, tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_text("   ")
    assert cli(example_server, "--input", f"input.txt={tmp_path / 'empty.txt'}") == 1


def test_an_unknown_input_name_is_refused(example_server: ServerThread, tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"has no input 'image.png'; its inputs are \['input.txt'\]"):
        cli(example_server, "--input", f"image.png={tmp_path}")


def test_health_and_unreachable_server(example_server: ServerThread, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(example_server, "--health") == 1
    assert capsys.readouterr().out.strip() == "NOT_SERVING"
    cli(example_server)  # Status loads the model
    capsys.readouterr()
    assert cli(example_server, "--health") == 0
    assert capsys.readouterr().out.strip() == "SERVING"


def test_unreachable_server_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert model_client.main(["--host", "127.0.0.1", "--port", "1", "--timeout", "2"]) == 1
    assert "UNAVAILABLE" in capsys.readouterr().err
