"""Fault isolation: a model that crashes, hangs or exhausts memory costs only its own items."""

import re
from pathlib import Path

import grpc
import pytest

from grpc_model.src.auto_generated.model2_template import model_pb2 as pb
from grpc_model.tests.conftest import (
    PATIENCE_SECONDS,
    ServerFactory,
    ServerThread,
    eventually,
    wait_until_serving_again,
)


@pytest.mark.parametrize(("action", "exit_code"), [(b"exit", 1), (b"segfault", -11), (b"kill", -9)])
def test_a_dead_worker_fails_its_items_and_is_replaced(
    serve_wrapper: ServerFactory, action: bytes, exit_code: int
) -> None:
    server = serve_wrapper("Crashes", workers=1)

    response = server.client.run([{"a": action}])

    error = response.outputs[0].output["error"].decode()
    assert re.fullmatch(rf"the model's worker process \d+ died \(exit code {exit_code}\)", error)
    wait_until_serving_again(server)


def test_running_out_of_memory_fails_the_item_only(serve_wrapper: ServerFactory) -> None:
    server = serve_wrapper("Crashes", workers=1)

    response = server.client.run([{"a": b"oom"}, {"a": b"fine"}])

    assert response.outputs[0].output == {"error": b"MemoryError: "}
    assert response.outputs[1].success


def hold_replacements(gate: Path) -> None:
    """From now on, a replacement worker waits in `__init__` until `release_replacements` (CrashesSlowToReplace)."""
    (gate / "hold").touch()


def release_replacements(gate: Path) -> None:
    (gate / "hold").unlink()


def test_health_is_not_serving_while_no_worker_is_up(serve_wrapper: ServerFactory, gate: Path) -> None:
    server = serve_wrapper("CrashesSlowToReplace", workers=1)
    assert server.client.health() == "SERVING"
    hold_replacements(gate)

    server.client.run([{"a": b"kill"}])
    eventually(lambda: list(gate.glob("loading-*")), "a replacement worker to start loading")

    assert server.client.wait_for_health("NOT_SERVING", PATIENCE_SECONDS) == "NOT_SERVING"
    with pytest.raises(grpc.RpcError) as raised:
        server.client.run([{"a": b"fine"}])
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE  # refused at once, not queued for nobody
    assert server.client.health() == "NOT_SERVING"  # still: the replacement is held
    release_replacements(gate)
    wait_until_serving_again(server)  # then health says SERVING again


def test_a_bug_in_the_framework_is_internal_and_the_server_goes_on(
    greeter_server: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    greeter_server.client.status()

    async def broken(*args: object) -> None:
        raise RuntimeError("framework bug")

    with monkeypatch.context() as patched:
        patched.setattr(greeter_server.running.service.runtime, "run", broken)
        with pytest.raises(grpc.RpcError) as raised:
            greeter_server.client.run([{"input.txt": b"Hi Al"}])
    assert raised.value.code() == grpc.StatusCode.INTERNAL
    assert "internal error: RuntimeError: framework bug" in str(raised.value.details())
    assert greeter_server.client.run([{"input.txt": b"Hi Al"}]).outputs[0].success


def test_a_crash_in_a_batch_fails_only_the_item_that_caused_it(serve_wrapper: ServerFactory) -> None:
    server = serve_wrapper("Crashes", workers=1)

    response = server.client.run([{"a": b"one"}, {"a": b"exit"}, {"a": b"three"}])

    assert [item.success for item in response.outputs] == [True, False, True]
    assert [item.output.get("a") for item in response.outputs] == [b"one", None, b"three"]
    assert b"died (exit code 1)" in response.outputs[1].output["error"]


def test_a_crash_on_the_last_item_of_a_batch_leaves_a_working_worker(serve_wrapper: ServerFactory) -> None:
    server = serve_wrapper("Crashes", workers=1)

    response = server.client.run([{"a": b"one"}, {"a": b"exit"}])
    assert [item.success for item in response.outputs] == [True, False]

    def served_by_the_replacement() -> pb.RunResponse | None:
        try:
            return server.client.run([{"a": b"two"}])
        except grpc.RpcError as error:  # refused until the replacement is up...
            if error.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            return None

    after = eventually(served_by_the_replacement, "the replacement worker to serve")
    assert after.outputs[0].output.get("a") == b"two"  # ...then served by it, never by the dead worker


def test_status_does_not_overrule_health_while_workers_restart(serve_wrapper: ServerFactory, gate: Path) -> None:
    server = serve_wrapper("CrashesSlowToReplace", workers=1)
    hold_replacements(gate)

    server.client.run([{"a": b"kill"}])  # answered at once; the replacement starts after
    assert server.client.wait_for_health("NOT_SERVING", PATIENCE_SECONDS) == "NOT_SERVING"
    status = server.client.status()

    assert status.status_code == 503  # the truth about capacity, without turning health SERVING
    assert server.client.health() == "NOT_SERVING"  # the replacement is still held: Status changed nothing
    release_replacements(gate)
    wait_until_serving_again(server)
    assert server.client.health() == "SERVING"


def test_exceptions_with_unusable_messages_fail_their_item_only(serve_wrapper: ServerFactory) -> None:
    server = serve_wrapper("BadMessages")
    server.client.status()

    first = server.client.run([{"a": b"surrogate"}, {"a": b"unprintable"}, {"a": b"fine"}])
    second = server.client.run([{"a": b"fine"}])  # the model thread is still there

    assert [item.success for item in first.outputs] == [False, False, True]
    assert first.outputs[0].output["error"] == b"ValueError: bad \\udcff"
    assert first.outputs[1].output["error"] == b"Unprintable (its message could not be read)"
    assert second.outputs[0].success
