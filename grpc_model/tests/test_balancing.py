"""Client-side balancing: one client's calls spread over several servers by gRPC's round robin."""

import threading
import time
from collections import Counter
from pathlib import Path
from typing import ClassVar

import pytest
from typer.testing import CliRunner

from grpc_model.src.cli import app, testing
from grpc_model.src.client import ModelClient, TargetError, channel_target, server_list
from grpc_model.src.metadata import load_bundle, load_test_cases
from grpc_model.tests.conftest import PATIENCE_SECONDS, ServerFactory, ServerThread
from model_lib.src.model_wrapper import ModelInput, ModelOutput, ModelWrapper


class Counting(ModelWrapper):
    """Echoes `a`; counts the items each instance (one per server) answered."""

    answered: ClassVar[Counter[int]] = Counter()
    lock = threading.Lock()

    def handle_single_input(self, model_input: ModelInput, detect_drift: bool, explain: bool) -> ModelOutput:
        with type(self).lock:
            type(self).answered[id(self)] += 1
        return {"out": model_input["a"]}


@pytest.fixture(autouse=True)
def _fresh_counts() -> None:
    Counting.answered.clear()


def address(server: ServerThread) -> str:
    return f"127.0.0.1:{server.running.port}"


def test_several_servers_make_one_target_of_every_address() -> None:
    assert channel_target("127.0.0.1:1") == "127.0.0.1:1"
    assert channel_target("dns:///model-headless.default.svc.cluster.local:45000").startswith("dns:///")
    assert channel_target("127.0.0.1:1, 127.0.0.2:2") == "ipv4:127.0.0.1:1,127.0.0.2:2"
    assert channel_target(["127.0.0.1:1", "127.0.0.1:2,127.0.0.1:3"]) == "ipv4:127.0.0.1:1,127.0.0.1:2,127.0.0.1:3"
    assert channel_target(["[::1]:1", "[::1]:2"]) == "ipv6:[::1]:1,[::1]:2"
    assert channel_target(["localhost:1", "127.0.0.2:2"]).startswith("ipv4:127.0.0.1:1,")  # names resolved once
    assert server_list(["a:1,,b:2 ", " c:3"]) == ["a:1", "b:2", "c:3"]


@pytest.mark.parametrize(
    ("servers", "problem"),
    [
        (["127.0.0.1:1", "127.0.0.1"], "'127.0.0.1' is not HOST:PORT"),
        (["dns:///a:1", "127.0.0.1:2"], "stands alone"),
        (["127.0.0.1:1", "[::1]:2"], "no address family (IPv4 or IPv6) in common"),
        ([" , "], "no server given"),
    ],
)
def test_servers_that_make_no_target_are_named(servers: list[str], problem: str) -> None:
    with pytest.raises(TargetError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        channel_target(servers)


def test_one_clients_calls_spread_over_every_server(serve_wrapper: ServerFactory) -> None:
    servers = [
        serve_wrapper("Counting", model_class=f"{__name__}:Counting", load_model_at_startup=True) for _ in range(2)
    ]
    with ModelClient([address(server) for server in servers], timeout=30) as client:
        deadline = time.monotonic() + PATIENCE_SECONDS
        calls = 0
        while len(Counting.answered) < 2 and time.monotonic() < deadline:  # until round robin has both connected
            assert client.run([{"a": b"x"}]).outputs[0].success
            calls += 1
        for _ in range(20):  # then calls alternate: neither server is left out
            assert client.run([{"a": b"x"}]).outputs[0].success
    assert len(Counting.answered) == 2, "every call went to one server: the channel does not balance"
    assert sum(Counting.answered.values()) == calls + 20
    assert min(Counting.answered.values()) >= 10


def test_the_cases_run_over_several_servers_each_loaded_first(
    serve_greeter: ServerFactory, greeter_bundle: Path
) -> None:
    servers = [address(serve_greeter()), address(serve_greeter())]  # each loads its model on its first Status
    bundle = load_bundle(greeter_bundle)
    outcomes = testing.run_cases_on_server(bundle, load_test_cases(bundle), servers, timeout=30)
    assert [outcome.name for outcome in outcomes[:2]] == [f"Status of {server}" for server in servers]
    assert len(outcomes) == 2 + len(load_test_cases(bundle))
    assert all(outcome.passed for outcome in outcomes), [outcome.problems for outcome in outcomes]


def test_grpc_model_test_names_a_bad_server_list() -> None:
    result = CliRunner().invoke(app, ["test", "--server", "127.0.0.1:1,[::1]:2", "--image"])
    assert result.exit_code == 2
    assert "choose --server or --image" in result.output
