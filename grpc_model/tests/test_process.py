"""The server as users run it: a process started with `python -m grpc_model.src.model_server`."""

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from grpc_model.src.auto_generated.model2_template import model_pb2 as pb
from grpc_model.src.client import ModelClient
from grpc_model.src.settings import PROJECT_ROOT

SERVING_LINE = re.compile(r"serving .* on 127\.0\.0\.1:(\d+)")


class ServerProcess:
    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.lines: list[str] = []
        self.port_found = threading.Event()
        self.port = 0
        self.process = subprocess.Popen(
            [sys.executable, "-m", "grpc_model.src.model_server", "--host", "127.0.0.1", *args],
            cwd=PROJECT_ROOT,
            env={**os.environ, **(env or {})},
            stderr=subprocess.PIPE,
            text=True,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)
            match = SERVING_LINE.search(line)
            if match:
                self.port = int(match.group(1))
                self.port_found.set()

    def client(self) -> ModelClient:
        assert self.port_found.wait(timeout=30), self.output()
        return ModelClient(f"127.0.0.1:{self.port}", timeout=30)

    def wait(self) -> int:
        code = self.process.wait(timeout=30)
        self.reader.join(timeout=10)
        return code

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.wait()
        assert self.process.stderr is not None
        self.process.stderr.close()

    def output(self) -> str:
        return "".join(self.lines)


@pytest.fixture
def processes() -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    yield started
    for server in started:
        server.close()


def start(
    processes: list[ServerProcess], *args: str, port: int | None = 0, env: dict[str, str] | None = None
) -> ServerProcess:
    port_args = [] if port is None else ["--port", str(port)]
    processes.append(ServerProcess([*port_args, *args], env=env))
    return processes[-1]


def test_shutdown_answers_then_the_process_exits_0(processes: list[ServerProcess]) -> None:
    server = start(processes)
    with server.client() as client:
        assert client.status().status_code == 200
        response = client.shutdown()

    assert (response.status_code, response.status) == (200, "OK")
    assert server.wait() == 0
    assert "server stopped" in server.output()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_drains_in_flight_calls_and_exits_0(
    processes: list[ServerProcess], signum: signal.Signals, test_bundle: Path
) -> None:
    server = start(
        processes,
        "--model-class",
        "grpc_model.tests.wrappers:SleepsOneSecond",
        "--asset-bundle-dir",
        str(test_bundle),
    )
    with server.client() as client:
        client.status()
        in_flight = client.stub.Run.future(pb.RunRequest(inputs=[pb.InputItem(input={"a": b"1"})]), timeout=30)
        time.sleep(0.3)  # let the call reach the model; it sleeps 1 s, well inside the grace period
        server.process.send_signal(signum)
        response = in_flight.result(timeout=30)

    assert response.outputs[0].output == {"slept.txt": b"done"}
    assert server.wait() == 0
    assert f"received {signum.name}" in server.output()


def test_the_port_comes_from_psc_model_port(processes: list[ServerProcess]) -> None:
    with socket.socket() as probe:  # the platform's variable is the point here, so a concrete port is needed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = start(processes, port=None, env={"PSC_MODEL_PORT": str(port)})
    with server.client() as client:
        assert server.port == port
        assert client.status().status_code == 200
        client.shutdown()
    assert server.wait() == 0


def test_a_broken_bundle_stops_start_up_with_the_reason(processes: list[ServerProcess], tmp_path: Path) -> None:
    bundle = tmp_path / "0.1.0"
    bundle.mkdir()
    (bundle / "model.yaml").write_text((PROJECT_ROOT / "asset_bundle/0.1.0/model.yaml").read_text().replace(
        "maxBatchSize: 8", "maxBatchSize: eight"
    ))  # fmt: skip
    server = start(processes, "--asset-bundle-dir", str(tmp_path))

    assert server.wait() == 2
    assert "features.maxBatchSize" in server.output()
    assert "Traceback" not in server.output()


def test_an_unknown_model_class_stops_start_up(processes: list[ServerProcess]) -> None:
    server = start(processes, env={"GRPC_MODEL_MODEL_CLASS": "model_lib.src.model:Nope"})
    assert server.wait() == 2
    assert "has no class 'Nope'" in server.output()


def test_an_invalid_setting_is_named(processes: list[ServerProcess]) -> None:
    server = start(processes, "--max-receive-message-bytes", "lots")
    assert server.wait() == 2
    assert "max_receive_message_bytes" in server.output()
