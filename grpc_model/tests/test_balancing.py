"""Client-side balancing: one client's calls spread over several servers by gRPC's round robin."""

import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ClassVar

import grpc
import pytest
from typer.testing import CliRunner

from grpc_model.src.auto_generated.model2_template import model_pb2 as pb
from grpc_model.src.cli import app
from grpc_model.src.cli.author import testing
from grpc_model.src.client import ModelClient, TargetError, channel_target, server_list
from grpc_model.src.metadata import load_bundle, load_test_cases
from grpc_model.tests.conftest import PATIENCE_SECONDS, ServerFactory, ServerThread, eventually
from grpc_model.wrapper import ModelInput, ModelOutput, ModelWrapper


class Counting(ModelWrapper):
    """Echoes `a`; counts the items each instance (one per server) answered. The item b"hold" keeps its
    server's model until the test sets `release`: a call in flight for as long as the test needs."""

    answered: ClassVar[Counter[int]] = Counter()
    lock = threading.Lock()
    holding = threading.Event()
    release = threading.Event()

    def handle_single_input(self, model_input: ModelInput, detect_drift: bool, explain: bool) -> ModelOutput:
        if model_input["a"] == b"hold":
            type(self).holding.set()
            if not type(self).release.wait(timeout=PATIENCE_SECONDS):
                raise TimeoutError("the test never released the held item")
        with type(self).lock:
            type(self).answered[id(self)] += 1
        return {"out": model_input["a"]}


@pytest.fixture(autouse=True)
def _fresh_counts() -> Iterator[None]:
    Counting.answered.clear()
    Counting.holding.clear()
    Counting.release.clear()
    yield
    Counting.release.set()  # whatever the test's outcome, nothing stays held


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


def test_a_replica_that_stops_under_load_loses_no_call(serve_wrapper: ServerFactory) -> None:
    model = f"{__name__}:Counting"
    leaving, staying = (serve_wrapper("Counting", model_class=model, load_model_at_startup=True) for _ in range(2))
    with ModelClient([address(leaving), address(staying)], timeout=30) as client:
        eventually(lambda: client.run([{"a": b"x"}]).outputs[0].success and len(Counting.answered) == 2, "both serving")
        before = Counting.answered.copy()
        held: list[bool] = []
        with ModelClient(address(leaving), timeout=30) as direct:
            holder = threading.Thread(target=lambda: held.append(direct.run([{"a": b"hold"}]).outputs[0].success))
            holder.start()
            assert Counting.holding.wait(PATIENCE_SECONDS)
            stopper = threading.Thread(target=leaving.stop)  # SIGTERM's path: refuse new calls, drain, stop
            stopper.start()
            eventually(lambda: direct.wait_for_health("SERVING", 0) != "SERVING", "the leaving replica to drain")
            answers = [client.run([{"a": b"x"}]).outputs[0].success for _ in range(20)]  # no exception: none lost
            Counting.release.set()
            holder.join(PATIENCE_SECONDS)
            stopper.join(PATIENCE_SECONDS)
    assert answers == [True] * 20
    assert held == [True]  # the call in flight when the replica was told to stop was answered
    assert sum(Counting.answered.values()) - sum(before.values()) == 21


@pytest.fixture(params=[grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED])
def refusing(request: pytest.FixtureRequest) -> Iterator[tuple[str, list[str]]]:
    """A server whose every Run is refused, as a replica with no worker up (UNAVAILABLE) or one that stops
    with calls not yet started (CANCELLED) answers; its address and the calls it refused."""
    refused: list[str] = []
    code: grpc.StatusCode = request.param

    def run(request: pb.RunRequest, context: grpc.ServicerContext) -> pb.RunResponse:
        refused.append("Run")
        context.abort(code, "refused")

    handler = grpc.unary_unary_rpc_method_handler(
        run, request_deserializer=pb.RunRequest.FromString, response_serializer=pb.RunResponse.SerializeToString
    )
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("ModzyModel", {"Run": handler})])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}", refused
    server.stop(grace=None)


def test_a_refused_call_is_sent_again_to_another_server(
    serve_wrapper: ServerFactory, refusing: tuple[str, list[str]]
) -> None:
    healthy = serve_wrapper("Counting", model_class=f"{__name__}:Counting", load_model_at_startup=True)
    refuser, refused = refusing
    with ModelClient([refuser, address(healthy)], timeout=30) as client:
        answers = []
        deadline = time.monotonic() + PATIENCE_SECONDS
        while not refused and time.monotonic() < deadline:  # until round robin has sent one to the refuser
            answers.append(client.run([{"a": b"x"}]).outputs[0].success)  # raises if a refusal reached us
        answers += [client.run([{"a": b"x"}]).outputs[0].success for _ in range(10)]
    assert refused, "no call went to the refusing server"
    assert all(answers)
    assert sum(Counting.answered.values()) == len(answers)  # each answered once, by the healthy server


def test_connections_are_renewed_after_max_connection_age(serve_wrapper: ServerFactory) -> None:
    # A renewed connection is what makes a DNS-balancing client resolve again and find new replicas.
    server = serve_wrapper("Counting", model_class=f"{__name__}:Counting", max_connection_age_seconds=0.2)
    states: list[str] = []
    with ModelClient(address(server), timeout=30) as client:
        client.channel.subscribe(lambda state: states.append(state.name), try_to_connect=True)

        def reconnected() -> bool:
            assert client.status().status_code == 200  # every call answered while connections come and go
            return "READY" in states and "READY" in states[states.index("READY") + 1 :]

        eventually(reconnected, "the connection to be closed and opened again")


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
