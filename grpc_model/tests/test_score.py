"""`grpc-model score`: inputs and results in every format, failures, retries, several servers, Ctrl-C, resuming."""

import asyncio
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import ClassVar

import grpc
import pytest
from rich.console import Console
from typer.testing import CliRunner

from grpc_model.src.cli import app
from grpc_model.src.cli.scoring.backend import Options
from grpc_model.src.cli.scoring.score import Reporter, Servers, Tally
from grpc_model.src.settings import env_var
from grpc_model.tests.conftest import TESTS, ServerFactory, ServerThread
from grpc_model.wrapper import ModelInput, ModelOutput, ModelWrapper


class Gated(ModelWrapper):
    """Echoes `a` as `out`; an item b"gate" holds the model until `release` is set (60 s at most)."""

    started = threading.Event()
    release = threading.Event()
    served_by: ClassVar[Counter[int]] = Counter()

    def handle_single_input(self, model_input: ModelInput, detect_drift: bool, explain: bool) -> ModelOutput:
        type(self).served_by[id(self)] += 1
        if model_input["a"] == b"gate":
            type(self).started.set()
            type(self).release.wait(timeout=60)
        if model_input["a"] == b"fail":
            raise ValueError("asked to fail")
        return {"out": model_input["a"]}


GATED = "grpc_model.tests.test_score:Gated"


@pytest.fixture(autouse=True)
def _fresh_gate() -> None:
    Gated.started.clear()
    Gated.release.clear()
    Gated.served_by.clear()


def score(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["score", *args], env={"COLUMNS": "200", **(env or {})})
    return result.exit_code, result.output


def folder(root: Path, contents: dict[str, bytes]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, content in contents.items():
        (root / name).write_bytes(content)
    return root


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def target(server: ServerThread) -> str:
    return f"127.0.0.1:{server.running.port}"


def test_a_folder_of_files_scores_into_a_csv_one_row_per_file(greeter_server: ServerThread, tmp_path: Path) -> None:
    inputs = folder(tmp_path / "in", {f"{name}.txt": f"hi {name}".encode() for name in ("ann", "bob", "cy")})
    out = tmp_path / "results.csv"
    code, output = score(str(inputs), "--server", target(greeter_server), "--out", str(out))
    assert code == 0, output
    assert out.read_text().splitlines() == [
        "id,success,results.json,error",
        *(
            f'{name}.txt,true,"{{""data"":{{""result"":{{""greeting"":""Hello. Nice to meet you, {name}""}},'
            f'""explanation"":null,""drift"":null}}}}",'
            for name in ("ann", "bob", "cy")
        ),
    ]
    assert "scored 3 item(s)" in output
    assert "3 succeeded, 0 failed" in output


def test_jsonl_inputs_take_paths_or_inline_text_and_failures_are_counted(
    greeter_server: ServerThread, tmp_path: Path
) -> None:
    folder(tmp_path / "names", {"bob.txt": b"I am Bob"})
    inputs = tmp_path / "items.jsonl"
    items = [{"input.txt": "hello Ann"}, {"input.txt": "names/bob.txt"}, {"id": "blank", "input.txt": "  "}]
    inputs.write_text("".join(json.dumps(item) + "\n" for item in items))
    out = tmp_path / "results.jsonl"
    code, output = score(str(inputs), "--server", target(greeter_server), "--out", str(out))
    assert code == 1  # an item failed
    rows = lines(out)
    assert [row["id"] for row in rows] == ["1", "2", "blank"]
    assert [row["success"] for row in rows] == [True, True, False]
    assert rows[0]["results.json"] == {
        "data": {"result": {"greeting": "Hello. Nice to meet you, Ann"}, "explanation": None, "drift": None}
    }
    assert rows[1]["results.json"]["data"]["result"] == {"greeting": "Hello. Nice to meet you, Bob"}  # type: ignore[index]
    assert rows[2]["error"] == "ValueError: input.txt is empty: expected at least one word"
    assert "1 failed: ValueError: input.txt is empty: expected at least one word" in output
    code, output = score(str(inputs), "--server", target(greeter_server), "--out", str(tmp_path / "again.jsonl"),
                         "--allow-failures")  # fmt: skip
    assert code == 0, output


def test_csv_inputs_name_their_columns_after_the_inputs(greeter_server: ServerThread, tmp_path: Path) -> None:
    inputs = tmp_path / "items.csv"
    inputs.write_text('id,input.txt\nfirst,"say hi to ""Dee"""\nsecond,plain Eve\n')
    out = tmp_path / "results.jsonl"
    code, output = score(str(inputs), "--server", target(greeter_server), "--out", str(out))
    assert code == 0, output
    greetings = [row["results.json"]["data"]["result"]["greeting"] for row in lines(out)]  # type: ignore[index]
    assert greetings == ["Hello. Nice to meet you, Dee", "Hello. Nice to meet you, Eve"]


def test_bad_arguments_are_named(greeter_server: ServerThread, tmp_path: Path) -> None:
    inputs = folder(tmp_path / "in", {"a.txt": b"hi a"})
    code, output = score(
        str(tmp_path / "missing"), "--server", target(greeter_server), "--out", str(tmp_path / "r.csv")
    )
    assert (code, "no such file or folder") == (2, output.split("missing: ")[-1].strip())
    code, output = score(str(inputs), "--server", target(greeter_server), "--out", str(tmp_path / "r.txt"))
    assert code == 2
    assert "results must be a .jsonl or a .csv file" in output
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"input.txt": "hi", "photo.png": "x.png"}\n')
    code, output = score(str(bad), "--server", target(greeter_server), "--out", str(tmp_path / "r.csv"))
    assert code == 2
    assert "bad.jsonl:1: photo.png: not an input of the model (input.txt)" in output


def test_binary_outputs_are_written_as_files_beside_the_results(serve_wrapper: ServerFactory, tmp_path: Path) -> None:
    server = serve_wrapper("Gated", model_class=GATED)
    inputs = folder(tmp_path / "in", {"text": b"plain", "binary": b"\xff\x00\xfe"})
    out = tmp_path / "results.jsonl"
    code, output = score(str(inputs), "--server", target(server), "--out", str(out))
    assert code == 0, output
    rows = {row["id"]: row for row in lines(out)}
    assert rows["text"]["out"] == "plain"
    assert rows["binary"]["out"] == "results.jsonl.files/binary/out"
    assert (tmp_path / "results.jsonl.files" / "binary" / "out").read_bytes() == b"\xff\x00\xfe"


def test_in_process_scoring_needs_no_server(greeter_bundle: Path, tmp_path: Path) -> None:
    inputs = folder(tmp_path / "in", {"a.txt": b"hi Al", "b.txt": b" "})
    out = tmp_path / "results.csv"
    env = {env_var("model_class"): f"{TESTS}:Greeter", env_var("asset_bundle_dir"): str(greeter_bundle)}
    code, output = score(str(inputs), "--in-process", "--out", str(out), "--allow-failures", env=env)
    assert code == 0, output
    rows = out.read_text().splitlines()
    assert rows[1].startswith("a.txt,true,")
    assert rows[2] == "b.txt,false,,ValueError: input.txt is empty: expected at least one word"


@pytest.mark.parametrize("spelling", ["comma", "repeated"])
def test_calls_are_shared_by_every_server_given(serve_wrapper: ServerFactory, tmp_path: Path, spelling: str) -> None:
    first, second = serve_wrapper("Gated", model_class=GATED), serve_wrapper("Gated", model_class=GATED)
    inputs = folder(tmp_path / "in", {f"item-{n}": str(n).encode() for n in range(64)})
    servers = (
        ["--server", f"{target(first)},{target(second)}"]
        if spelling == "comma"
        else ["--server", target(first), "--server", target(second)]
    )
    code, output = score(str(inputs), *servers, "--out", str(tmp_path / "r.csv"), "--batch-size", "1")
    assert code == 0, output
    assert sum(Gated.served_by.values()) == 64
    assert len(Gated.served_by) == 2  # round robin: both servers' models answered items


def test_resource_exhausted_and_unavailable_are_retried_until_answered() -> None:
    class Flaky:
        def __init__(self) -> None:
            self.codes = [grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE]

        async def __call__(self, stub: object) -> str:
            if self.codes:
                code = self.codes.pop(0)
                raise grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details="busy")
            return "answered"

    async def run() -> tuple[str, Tally]:
        tally = Tally()
        servers = Servers(["127.0.0.1:1"], Options(), tally)
        try:
            return await servers._retrying(Flaky()), tally
        finally:
            await servers.close()

    answer, tally = asyncio.run(run())
    assert answer == "answered"
    assert tally.retries == 2


def scorer(inputs: Path, out: Path, server: ServerThread) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "grpc_model", "score", str(inputs), "--server", target(server), "--out", str(out),
               "--batch-size", "1", "--concurrency", "1"]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for_gate() -> None:
    assert Gated.started.wait(timeout=60), "the scorer never reached the gated item"


def ten_items_gated_at_the_sixth(root: Path) -> Path:
    return folder(root, {f"item-{n}": (b"gate" if n == 5 else str(n).encode()) for n in range(10)})


def test_after_a_kill_mid_run_a_resume_loses_and_doubles_nothing(serve_wrapper: ServerFactory, tmp_path: Path) -> None:
    server = serve_wrapper("Gated", model_class=GATED)
    inputs = ten_items_gated_at_the_sixth(tmp_path / "in")
    out = tmp_path / "results.jsonl"
    process = scorer(inputs, out, server)
    try:
        wait_for_gate()  # items 0-4 are answered and written; item-5 is in the model
        process.kill()
        process.communicate(timeout=30)
    finally:
        Gated.release.set()
    assert [row["id"] for row in lines(out)] == [f"item-{n}" for n in range(5)]
    with out.open("a") as results:
        results.write('{"id": "item-9", "succ')  # a line torn by a kill in the middle of a write
    code, output = score(str(inputs), "--server", target(server), "--out", str(out))
    assert code == 0, output
    assert "5 already in" in output
    rows = lines(out)
    assert sorted(str(row["id"]) for row in rows) == sorted(f"item-{n}" for n in range(10))  # each once
    assert all(row["success"] for row in rows)
    assert {row["id"]: row["out"] for row in rows}["item-7"] == "7"


def test_ctrl_c_stops_with_everything_answered_written(serve_wrapper: ServerFactory, tmp_path: Path) -> None:
    server = serve_wrapper("Gated", model_class=GATED)
    inputs = ten_items_gated_at_the_sixth(tmp_path / "in")
    out = tmp_path / "results.csv"
    process = scorer(inputs, out, server)
    try:
        wait_for_gate()
        deadline = time.monotonic() + 30  # the answer to item-4 is written before item-5 is sent
        while len(out.read_text().splitlines()) < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGINT)
        output, _ = process.communicate(timeout=60)
    finally:
        Gated.release.set()
    assert process.returncode == 130, output
    assert "interrupted: scored 5 item(s)" in output
    assert "5 item(s) not scored yet: run the same command again" in output
    assert [row.split(",")[0] for row in out.read_text().splitlines()] == ["id", *(f"item-{n}" for n in range(5))]


def test_a_dns_target_is_one_channel_over_every_address(greeter_server: ServerThread, tmp_path: Path) -> None:
    inputs = folder(tmp_path / "in", {f"{n}.txt": f"hi {n}".encode() for n in range(4)})
    out = tmp_path / "results.jsonl"
    code, output = score(str(inputs), "--server", f"dns:///localhost:{greeter_server.running.port}", "--out", str(out))
    assert code == 0, output
    assert len(lines(out)) == 4


def test_a_call_past_its_deadline_fails_its_items_with_the_reason(serve_wrapper: ServerFactory, tmp_path: Path) -> None:
    server = serve_wrapper("Gated", model_class=GATED)
    inputs = folder(tmp_path / "in", {"a": b"1", "b": b"2", "z": b"gate"})  # z, last, is held past the deadline
    out = tmp_path / "results.jsonl"
    try:
        code, output = score(str(inputs), "--server", target(server), "--out", str(out), "--batch-size", "1",
                             "--concurrency", "1", "--timeout", "3")  # fmt: skip
    finally:
        Gated.release.set()
    assert code == 1
    rows = {row["id"]: row for row in lines(out)}
    assert rows["a"]["success"] is True
    assert rows["z"]["success"] is False
    assert str(rows["z"]["error"]).startswith("DEADLINE_EXCEEDED")
    assert "1 failed: DEADLINE_EXCEEDED" in output


def test_progress_off_a_terminal_is_plain_lines() -> None:
    log = io.StringIO()
    reporter = Reporter(Console(file=log, force_terminal=False), total=10, done=4, every=0.0)
    reporter.advance(3)
    reporter.stop()
    assert reporter.progress is None
    assert log.getvalue().startswith("scored 7 of 10 items, ")
    assert "items/s, about " in log.getvalue()
    assert "\x1b" not in log.getvalue()  # no terminal codes in a log file


def test_ids_that_escape_alike_keep_their_own_output_files(serve_wrapper: ServerFactory, tmp_path: Path) -> None:
    server = serve_wrapper("Gated", model_class=GATED)
    ids = ["a b.bin", "a_b.bin", "é.bin", "ü.bin", "report (1).bin", "report _1_.bin", "Case.bin", "case.bin"]
    inputs = folder(tmp_path / "in", {name: b"\xff" + name.encode() for name in ids})
    out = tmp_path / "results.csv"
    code, output = score(str(inputs), "--server", target(server), "--out", str(out))
    assert code == 0, output
    rows = {row.split(",")[0]: row.split(",")[2] for row in out.read_text().splitlines()[1:]}
    assert sorted(rows) == sorted(ids)
    for item_id, path in rows.items():
        assert (tmp_path / path).read_bytes() == b"\xff" + item_id.encode(), item_id
    folders = [Path(path).parent.name for path in rows.values()]
    assert len({name.casefold() for name in folders}) == len(ids)  # apart on a file system that folds case too
    assert "a_b.bin" in folders  # a plain id keeps its name...
    assert "Case.bin" not in folders  # ...unless another differs from it only in case


RESUMED = b'{"id": "a.txt", "success": true}\n'


@pytest.mark.parametrize(
    ("name", "content", "what"),
    [
        ("results.jsonl", b'{"id": "caf\xe9", "success": true}\n', "not UTF-8"),
        ("results.jsonl", b"[" * 100_000 + b"]" * 100_000 + b"\n", "line 1: nested too deeply"),
        ("results.jsonl", RESUMED + b"[1, 2]\n", "line 2: not a JSON object with an id"),
        ("results.jsonl", b"my notes, not results", "line 1 is not a line of grpc-model score"),
        ("results.csv", b"my notes, not results", "line 1 is not a line of grpc-model score"),
        ("results.csv", b"name,age\nann,3\nbob,4", "its columns ['name', 'age'] are not"),
        ("results.csv", b"id,success,results.json,error\na,true\n", "line 2: 2 cells, not 4"),
    ],
    ids=["not-utf8", "deep", "not-an-object", "note-jsonl", "note-csv", "foreign-csv", "short-row"],
)
def test_a_results_file_that_is_not_ours_is_refused_untouched(
    greeter_server: ServerThread, tmp_path: Path, name: str, content: bytes, what: str
) -> None:
    inputs = folder(tmp_path / "in", {"a.txt": b"hi a"})
    out = tmp_path / name
    out.write_bytes(content)
    code, output = score(str(inputs), "--server", target(greeter_server), "--out", str(out))
    assert code == 2, output
    assert f"{out}: " in output.replace("\n", "")
    assert what in " ".join(output.split())
    assert out.read_bytes() == content
    assert not (tmp_path / f"{name}.files").exists()


def test_a_folder_as_the_results_file_is_refused(greeter_server: ServerThread, tmp_path: Path) -> None:
    inputs = folder(tmp_path / "in", {"a.txt": b"hi a"})
    out = tmp_path / "results.csv"
    out.mkdir()
    code, output = score(str(inputs), "--server", target(greeter_server), "--out", str(out))
    assert code == 2, output
    assert "results.csv: is a folder, not a results file" in " ".join(output.split())
