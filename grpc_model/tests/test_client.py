"""The reference client CLI against a live server."""

import shutil
from pathlib import Path

import pytest

from grpc_model.src import model_client
from grpc_model.tests.conftest import GREETER, ServerThread

CASES = GREETER / "test_cases"


def cli(server: ServerThread, *args: str) -> int:
    return model_client.main(["--host", "127.0.0.1", "--port", str(server.running.port), *args])


def test_every_test_case_passes(greeter_server: ServerThread, capsys: pytest.CaptureFixture[str]) -> None:
    cases = [arg for case in sorted(CASES.iterdir()) for arg in ("--test-case", str(case))]
    assert cli(greeter_server, "--batch-size", "3", *cases) == 0
    out = capsys.readouterr().out
    assert out.count("PASS") == len(list(CASES.iterdir()))
    assert "FAIL" not in out


def test_a_wrong_expectation_fails(
    greeter_server: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    case = tmp_path / "wrong"
    shutil.copytree(CASES / "0004-one-word", case)
    (case / "results.json").write_text('{"data": {"result": {"greeting": "Bye"}, "explanation": null, "drift": null}}')

    assert cli(greeter_server, "--test-case", str(case)) == 1
    assert "FAIL wrong" in capsys.readouterr().out


def test_input_files_are_sent_and_outputs_printed(
    greeter_server: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a.txt").write_text("My name is Kim")
    assert cli(greeter_server, "--input", f"input.txt={tmp_path / 'a.txt'}", "--batch-size", "2") == 0
    out = capsys.readouterr().out
    assert out.count("Hello. Nice to meet you, Kim") == 2


def test_a_failing_item_gives_a_non_zero_exit(greeter_server: ServerThread, tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_text("   ")
    assert cli(greeter_server, "--input", f"input.txt={tmp_path / 'empty.txt'}") == 1


def test_an_unknown_input_name_is_refused(
    greeter_server: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(greeter_server, "--input", f"image.png={tmp_path}") == 2
    assert "has no input 'image.png'; its inputs are ['input.txt']" in capsys.readouterr().err


def test_health_and_unreachable_server(greeter_server: ServerThread, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(greeter_server, "--health") == 1
    assert capsys.readouterr().out.strip() == "NOT_SERVING"
    cli(greeter_server)  # Status loads the model
    capsys.readouterr()
    assert cli(greeter_server, "--health") == 0
    assert capsys.readouterr().out.strip() == "SERVING"


def test_unreachable_server_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert model_client.main(["--host", "127.0.0.1", "--port", "1", "--timeout", "2"]) == 1
    assert "UNAVAILABLE" in capsys.readouterr().err
