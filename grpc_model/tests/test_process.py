"""The server as users run it: a process started with `python -m grpc_model.src.model_server`."""

import re
import signal
import socket
from pathlib import Path

import pytest

from grpc_model.src.auto_generated.model2_template import model_pb2 as pb
from grpc_model.tests.conftest import (
    PATIENCE_SECONDS,
    TEST_VERSION,
    TESTS,
    ServerProcess,
    eventually,
    start,
    write_greeter_bundle,
)


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
    processes: list[ServerProcess], signum: signal.Signals, test_bundle: Path, gate: Path
) -> None:
    server = start(
        processes,
        *("--model-class", f"{TESTS}:HeldByFile", "--asset-bundle-dir", str(test_bundle)),
        *("--shutdown-grace-seconds", str(PATIENCE_SECONDS)),  # the test, not the grace, ends the call
    )
    with server.client() as client:
        client.status()
        in_flight = client.stub.Run.future(pb.RunRequest(inputs=[pb.InputItem(input={"a": b"1"})]), timeout=60)
        eventually((gate / "started").exists, "the call to reach the model")
        server.process.send_signal(signum)
        eventually(lambda: f"received {signum.name}" in server.output(), "the server to take the signal")
        (gate / "release").touch()  # the model finishes only now, while the server drains
        response = in_flight.result(timeout=PATIENCE_SECONDS)

    assert response.outputs[0].output == {"released.txt": b"done"}
    assert server.wait() == 0


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
    model_yaml = write_greeter_bundle(tmp_path) / TEST_VERSION / "model.yaml"
    model_yaml.write_text(model_yaml.read_text().replace("maxBatchSize: 8", "maxBatchSize: eight"))
    server = start(processes, "--asset-bundle-dir", str(tmp_path))

    assert server.wait() == 2
    assert "features.maxBatchSize" in server.output()
    assert "Traceback" not in server.output()


def test_an_unknown_model_class_stops_start_up(processes: list[ServerProcess]) -> None:
    server = start(processes, env={"GRPC_MODEL_MODEL_CLASS": f"{TESTS}:Nope"})
    assert server.wait() == 2
    assert re.search(rf"module '{TESTS}' has no class 'Nope'; model classes it defines: .*\bGreeter\b", server.output())
    assert f"Name yours with GRPC_MODEL_MODEL_CLASS={TESTS}:<ClassName>" in server.output()


def test_an_invalid_setting_is_named(processes: list[ServerProcess]) -> None:
    server = start(processes, "--max-receive-message-bytes", "lots")
    assert server.wait() == 2
    assert "max_receive_message_bytes" in server.output()


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("maxSize: 1M", "maxSize: " + "9" * 400, "inputs.input.txt.maxSize"),
        ("maxBatchSize: 8", "maxBatchSize: 3000000000", "features.maxBatchSize"),
        (
            "summary: Greets the person whose name is the last word of a text file.",
            'summary: "\\uD800"',
            "description.summary",
        ),
    ],
)
def test_values_the_protocol_cannot_carry_stop_start_up_with_the_key(
    processes: list[ServerProcess], tmp_path: Path, old: str, new: str, key: str
) -> None:
    model_yaml = write_greeter_bundle(tmp_path) / TEST_VERSION / "model.yaml"
    model_yaml.write_text(model_yaml.read_text().replace(old, new, 1))
    server = start(processes, "--asset-bundle-dir", str(tmp_path))

    assert server.wait() == 2
    assert f"model.yaml: 1 problem(s):\n  {key}: " in server.output()
    assert "Traceback" not in server.output()


def test_an_unknown_log_level_is_named(processes: list[ServerProcess]) -> None:
    server = start(processes, "--log-level", "VERBOSE")
    assert server.wait() == 2
    assert "log_level" in server.output()
    assert "Traceback" not in server.output()


def test_a_port_in_use_stops_start_up_naming_the_port(processes: list[ServerProcess]) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        server = start(processes, port=port)
        assert server.wait() == 2
    assert f"port: cannot listen on 127.0.0.1:{port}: Address already in use (set with --port or " in server.output()
    assert "Traceback" not in server.output()


def test_a_second_server_on_the_same_port_stops_instead_of_sharing_it(processes: list[ServerProcess]) -> None:
    first = start(processes)
    with first.client() as client:
        assert client.status().status_code == 200
    second = start(processes, port=first.port)
    assert second.wait() == 2
    assert f"port: cannot listen on 127.0.0.1:{first.port}: " in second.output()


def test_an_unresolvable_host_stops_start_up_naming_the_host(processes: list[ServerProcess]) -> None:
    server = start(processes, "--host", "no-such-host.invalid")  # .invalid never resolves (RFC 2606)
    assert server.wait() == 2
    assert "host: cannot listen on no-such-host.invalid: " in server.output()
    assert "Traceback" not in server.output()
