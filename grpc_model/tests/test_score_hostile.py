"""`grpc-model score` keeps inside its folders: against a hostile server's names, and paths in the inputs."""

import asyncio
import json
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import grpc
import pytest
from typer.testing import CliRunner

from grpc_model.src.auto_generated.model2_template import model_pb2 as pb
from grpc_model.src.auto_generated.model2_template.model_pb2_grpc import (
    ModzyModelServicer,
    add_ModzyModelServicer_to_server,
)
from grpc_model.src.cli import app
from grpc_model.tests.conftest import ServerFactory
from grpc_model.tests.test_score import GATED, Gated, folder, lines, score, target

SECRET = b"the user's private key"


class Hostile(ModzyModelServicer):
    """A server that declares whatever names it likes, and records every item it is sent."""

    def __init__(self, inputs: Sequence[str], outputs: Sequence[str]) -> None:
        self.inputs, self.outputs = inputs, outputs
        self.received: list[dict[str, bytes]] = []

    async def Status(self, request: pb.StatusRequest, context: grpc.aio.ServicerContext) -> pb.StatusResponse:  # type: ignore[type-arg]
        return pb.StatusResponse(
            status_code=200,
            status="OK",
            inputs=[pb.ModelInput(filename=name) for name in self.inputs],
            outputs=[pb.ModelOutput(filename=name) for name in self.outputs],
        )

    async def Run(self, request: pb.RunRequest, context: grpc.aio.ServicerContext) -> pb.RunResponse:  # type: ignore[type-arg]
        self.received.extend(dict(item.input) for item in request.inputs)
        answers = [{name: b"\xff" + name.encode() for name in self.outputs} for _ in request.inputs]
        return pb.RunResponse(
            status_code=200, outputs=[pb.OutputItem(output=answer, success=True) for answer in answers]
        )

    async def Shutdown(self, request: pb.ShutdownRequest, context: grpc.aio.ServicerContext) -> pb.ShutdownResponse:  # type: ignore[type-arg]
        return pb.ShutdownResponse(status_code=403)


class HostileServer:
    """A grpc.aio server on its own loop in a thread, on a loopback port it chose; stopped by the fixture."""

    def __init__(self, servicer: Hostile) -> None:
        self.servicer = servicer
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="hostile-server", daemon=True)
        self.thread.start()
        self.server, self.port = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(timeout=60)

    async def _start(self) -> tuple[grpc.aio.Server, int]:
        server = grpc.aio.server()  # made on its own loop: an aio server belongs to the loop it was made on
        add_ModzyModelServicer_to_server(self.servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(None), self.loop).result(timeout=60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)
        self.loop.close()


HostileFactory = Callable[[Sequence[str], Sequence[str]], HostileServer]


@pytest.fixture
def hostile() -> Iterator[HostileFactory]:
    """`hostile(inputs, outputs)` starts a lying server; every one is stopped after the test."""
    servers: list[HostileServer] = []

    def start(inputs: Sequence[str], outputs: Sequence[str]) -> HostileServer:
        servers.append(HostileServer(Hostile(inputs, outputs)))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def private_file(tmp_path: Path) -> Path:
    secret = tmp_path / "home" / ".ssh" / "id_ed25519"
    secret.parent.mkdir(parents=True)
    secret.write_bytes(SECRET)
    return secret


def items_in_subfolders(root: Path) -> Path:
    for name in ("one", "two"):
        folder(root / name, {"a": b"fine"})
    return root


@pytest.mark.parametrize("kind", ["absolute", "parent", "dot", "empty", "separator", "nul"])
def test_input_names_of_a_server_that_are_not_plain_file_names_are_refused_before_anything_is_read(
    hostile: HostileFactory, tmp_path: Path, kind: str
) -> None:
    secret = private_file(tmp_path)
    inputs = items_in_subfolders(tmp_path / "work" / "in")
    name = {
        "absolute": str(secret),
        "parent": "../../../home/.ssh/id_ed25519",
        "dot": "..",
        "empty": "",
        "separator": "sub/a",
        "nul": "a\0b",
    }[kind]
    server = hostile(["a", name], ["out"])
    out = tmp_path / "work" / "results.jsonl"
    code, output = score(str(inputs), "--server", server.target, "--out", str(out))
    assert code == 2, output
    assert "the server declares an input named" in output
    assert "which cannot be used" in " ".join(output.split())
    assert server.servicer.received == []  # nothing sent: not the secret, not the items
    assert not out.exists()


def test_an_item_file_linked_outside_the_inputs_folder_is_refused(serve_wrapper: ServerFactory, tmp_path: Path) -> None:
    secret = private_file(tmp_path)
    inputs = folder(tmp_path / "in", {"plain": b"fine"})
    (inputs / "linked").symlink_to(secret)
    server = serve_wrapper("Gated", model_class=GATED)
    Gated.served_by.clear()
    out = tmp_path / "results.jsonl"
    code, output = score(str(inputs), "--server", target(server), "--out", str(out))
    assert code == 2, output
    assert "linked" in output
    assert "outside" in output
    assert sum(Gated.served_by.values()) == 0
    code, output = score(str(inputs), "--server", target(server), "--out", str(out), "--allow-paths-outside")
    assert code == 0, output
    assert {row["id"]: row["out"] for row in lines(out)}["linked"] == SECRET.decode()


@pytest.mark.parametrize(
    "names",
    [[".."], ["."], [""], ["a/x.bin", "b/x.bin"], ["/tmp/x.bin"], ["X.bin", "x.bin"], ["out", "id"]],
    ids=["parent", "dot", "empty", "subfolders", "absolute", "case", "a-column"],
)
def test_output_names_that_are_not_plain_file_names_are_refused_and_nothing_is_written(
    hostile: HostileFactory, tmp_path: Path, names: list[str]
) -> None:
    server = hostile(["a"], names)
    inputs = folder(tmp_path / "in", {"one": b"1", "two": b"2"})
    out = tmp_path / "results.jsonl"
    code, output = score(str(inputs), "--server", server.target, "--out", str(out))
    assert code == 2, output
    assert "the server declares an output named" in output
    assert server.servicer.received == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]  # no results, no files folder


def test_binary_outputs_of_a_hostile_server_with_plain_names_are_written(
    hostile: HostileFactory, tmp_path: Path
) -> None:
    server = hostile(["a"], ["x.bin", "y.bin"])
    inputs = folder(tmp_path / "in", {"one": b"1"})
    out = tmp_path / "results.jsonl"
    code, output = score(str(inputs), "--server", server.target, "--out", str(out))
    assert code == 0, output
    row = lines(out)[0]
    assert (tmp_path / str(row["x.bin"])).read_bytes() == b"\xffx.bin"
    assert (tmp_path / str(row["y.bin"])).read_bytes() == b"\xffy.bin"


def write_jsonl(path: Path, records: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def write_csv(path: Path, records: list[dict[str, str]]) -> Path:
    path.write_text("id,a\n" + "".join(f"{record['id']},{record['a']}\n" for record in records))
    return path


@pytest.mark.parametrize("write", [write_jsonl, write_csv], ids=["jsonl", "csv"])
@pytest.mark.parametrize("spelling", ["parent", "absolute", "link"])
def test_paths_in_csv_and_jsonl_stay_in_their_folder_unless_allowed(
    serve_wrapper: ServerFactory, tmp_path: Path, write: object, spelling: str
) -> None:
    secret = private_file(tmp_path)
    work = folder(tmp_path / "work", {"inside.bin": b"inside"})
    (work / "link.bin").symlink_to(secret)
    value = {"parent": "../home/.ssh/id_ed25519", "absolute": str(secret), "link": "link.bin"}[spelling]
    records = [{"id": "first", "a": "inside.bin"}, {"id": "second", "a": value}]
    inputs = write(work / ("items.jsonl" if write is write_jsonl else "items.csv"), records)  # type: ignore[operator]
    server = serve_wrapper("Gated", model_class=GATED)
    Gated.served_by.clear()
    out = tmp_path / "results.jsonl"
    code, output = score(str(inputs), "--server", target(server), "--out", str(out))
    assert code == 2, output
    where = "items.jsonl:2" if write is write_jsonl else "items.csv: row 2"
    assert where in " ".join(output.split())
    assert value in output.replace("\n", "")
    assert "outside" in output
    assert sum(Gated.served_by.values()) == 0
    assert not out.exists()
    code, output = score(str(inputs), "--server", target(server), "--out", str(out), "--allow-paths-outside")
    assert code == 0, output
    assert {row["id"]: row["out"] for row in lines(out)} == {"first": "inside", "second": SECRET.decode()}


@pytest.mark.parametrize("spelling", ["file-name", "jsonl-id", "jsonl-text"])
def test_ids_and_text_that_are_not_unicode_are_refused_before_anything_is_sent(
    serve_wrapper: ServerFactory, tmp_path: Path, spelling: str
) -> None:
    if spelling == "file-name":
        inputs = folder(tmp_path / "in", {"plain": b"fine"})
        with open(os.fsencode(inputs) + b"/latin-\xe9", "wb") as latin:  # a name in another encoding than UTF-8
            latin.write(b"fine")
    else:
        record = {"id": "\ud800"} if spelling == "jsonl-id" else {"id": "x", "a": "lone \ud800"}
        inputs = write_jsonl(tmp_path / "items.jsonl", [{"a": "fine"}, {"a": "fine", **record}])
    server = serve_wrapper("Gated", model_class=GATED)
    Gated.served_by.clear()
    out = tmp_path / "results.jsonl"
    code, output = score(str(inputs), "--server", target(server), "--out", str(out))
    assert code == 2, output
    assert "not valid UTF-8" in output
    assert sum(Gated.served_by.values()) == 0


@pytest.mark.parametrize("name", ["..", ".", "", "a/x.bin", "/tmp/x.bin"])
def test_call_writes_no_output_a_server_names_outside_its_folder(
    hostile: HostileFactory, tmp_path: Path, name: str
) -> None:
    """`grpc-model call --output-dir` wrote `..` or "" onto the folder itself (IsADirectoryError), and `a/x.bin` and
    `b/x.bin` to one file: the server's name chose where its bytes landed."""
    server = hostile(["a"], [name, "fine.bin"])
    (tmp_path / "a.txt").write_bytes(b"hi")
    out = tmp_path / "out"

    result = CliRunner().invoke(
        app, ["call", server.target, "--input", f"a={tmp_path / 'a.txt'}", "--output-dir", str(out)],
        env={"COLUMNS": "200"},
    )  # fmt: skip

    assert result.exit_code == 2, result.output
    assert "not plain file names" in result.output
    assert repr(name) in result.output
    assert not out.exists()
