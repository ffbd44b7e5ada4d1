"""Every client names the model it calls on a server of several (issue 22): the reference client and
`grpc-model status`, `call`, `test --server` and `score` send `--model-name` and `--model-version` as the call
metadata of every Status and Run call, and nothing when they are not given.

The server is routing_proxy.py: a real grpc.aio server that records what it receives and forwards each call to
the real server of the model it names.
"""

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from grpc_model.src import model_client
from grpc_model.src.cli import app
from grpc_model.src.client import ModelClient, ModelRoute, RouteError
from grpc_model.src.metadata import load_bundle, load_test_cases
from grpc_model.tests.conftest import (
    GREETER,
    TEST_VERSION,
    TESTS,
    ServerFactory,
    ServerThread,
    copy_greeter_project,
    loopback_settings,
    write_greeter_bundle,
)
from grpc_model.tests.repository_models import marker, write_wrapper_model
from grpc_model.tests.routing_proxy import RoutingProxy, Upstream
from grpc_model.tests.test_cli import grpc_model_cli

OTHER = "Second Greeter"  # the greeter's code under another model.yaml name: the routed model
ROUTE = {"x-model-name": "second-greeter", "x-model-version": TEST_VERSION}
STATUS, RUN = "/ModzyModel/Status", "/ModzyModel/Run"


def rename_bundle(root: Path, name: str) -> Path:
    model_yaml = root / TEST_VERSION / "model.yaml"
    spec = yaml.safe_load(model_yaml.read_text())
    model_yaml.write_text(yaml.safe_dump({**spec, "name": name}))
    return root


@pytest.fixture(scope="module")
def module_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoutingProxy]:
    """hello-world (the default) and second-greeter, each on its own real server, behind one proxy."""
    default = write_greeter_bundle(tmp_path_factory.mktemp("default"))
    other = rename_bundle(write_greeter_bundle(tmp_path_factory.mktemp("other")), OTHER)
    servers = [  # loaded before they serve: the server's health is SERVING, whichever model a test calls
        ServerThread(
            loopback_settings(model_class=f"{TESTS}:Greeter", asset_bundle_dir=bundle, load_model_at_startup=True)
        )
        for bundle in (default, other)
    ]
    try:
        upstreams = {
            name: Upstream(TEST_VERSION, f"127.0.0.1:{server.running.port}")
            for name, server in zip(("hello-world", "second-greeter"), servers, strict=True)
        }
        proxy = RoutingProxy(upstreams, default="hello-world")
        try:
            yield proxy
        finally:
            proxy.stop()
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def proxy(module_proxy: RoutingProxy) -> RoutingProxy:
    module_proxy.received.clear()
    return module_proxy


def target(proxy: RoutingProxy) -> str:
    return f"127.0.0.1:{proxy.port}"


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    return result.exit_code, result.output


def test_status_asks_for_the_named_model_and_shows_its_answer(proxy: RoutingProxy) -> None:
    code, output = invoke("status", target(proxy), "--model-name", "second-greeter", "--model-version", TEST_VERSION)

    assert code == 0, output
    assert OTHER in output
    assert "x-model-name=second-greeter x-model-version=0.1.0" in output
    assert "SERVING (the health service second-greeter)" in output  # the model's own health, beside the server's
    assert proxy.routes(STATUS) == [ROUTE]


def test_status_of_a_name_a_server_does_not_route_by_fails(greeter_server: ServerThread) -> None:
    """A server of one model that knows no such name: its Status is NOT_FOUND, or (a server from before routing,
    which ignores the metadata) there is no health service of that name."""
    code, output = invoke("status", f"127.0.0.1:{greeter_server.running.port}", "--model-name", "second-greeter")
    assert code == 1
    assert "NOT_FOUND" in output


def test_without_the_options_no_routing_metadata_is_sent(proxy: RoutingProxy, tmp_path: Path) -> None:
    (tmp_path / "hello.txt").write_text("My name is Ada")

    status = invoke("status", target(proxy))
    call = invoke("call", target(proxy), "--input", f"input.txt={tmp_path / 'hello.txt'}")

    assert status[0] == 0, status
    assert "Hello World" in status[1]
    assert call[0] == 0, call
    assert proxy.routes(STATUS) == [{}, {}]
    assert proxy.routes(RUN) == [{}]


def test_call_sends_status_and_run_to_the_named_model(proxy: RoutingProxy, tmp_path: Path) -> None:
    (tmp_path / "hello.txt").write_text("My name is Ada")

    code, output = invoke(
        "call", target(proxy), "--input", f"input.txt={tmp_path / 'hello.txt'}", "--model-name", "second-greeter"
    )

    assert code == 0, output
    assert "Nice to meet you, Ada" in output
    assert proxy.routes(STATUS) == proxy.routes(RUN) == [{"x-model-name": "second-greeter"}]


def test_an_unknown_model_is_not_found_and_named(proxy: RoutingProxy) -> None:
    code, output = invoke("status", target(proxy), "--model-name", "nope")

    assert code == 1
    assert "NOT_FOUND" in output
    assert "'nope'" in output


@pytest.mark.parametrize(
    ("option", "value"), [("--model-name", "café"), ("--model-name", ""), ("--model-version", " 0.1.0")]
)
@pytest.mark.parametrize("command", ["status", "call", "score"])
def test_a_name_grpc_cannot_carry_is_a_usage_error_naming_the_option(
    proxy: RoutingProxy, tmp_path: Path, command: str, option: str, value: str
) -> None:
    extra = [str(tmp_path), "--out", str(tmp_path / "out.jsonl"), "--server"] if command == "score" else []
    code, output = invoke(command, *extra, target(proxy), option, value)

    assert code == 2, output
    assert f"error: {option}:" in output
    assert proxy.received == []  # refused before any call


def test_the_reference_client_runs_cases_against_the_named_model(
    proxy: RoutingProxy, capsys: pytest.CaptureFixture[str]
) -> None:
    case = next(iter(sorted((GREETER / "test_cases").iterdir())))
    args = ["--host", "127.0.0.1", "--port", str(proxy.port), "--test-case", str(case), "--batch-size", "2"]

    assert model_client.main([*args, "--model-name", "second-greeter", "--model-version", TEST_VERSION]) == 0
    assert f"Model: {OTHER} {TEST_VERSION}" in capsys.readouterr().out
    assert proxy.routes(STATUS) == proxy.routes(RUN) == [ROUTE]
    assert model_client.main([*args, "--model-name", "caf\u00e9"]) == 2
    assert "x-model-name 'café'" in capsys.readouterr().err
    assert model_client.main([*args[:4], "--health", "--model-name", "second-greeter"]) == 0  # that model's health
    assert capsys.readouterr().out == "SERVING\n"


def test_test_server_checks_that_the_named_model_is_the_projects(proxy: RoutingProxy, tmp_path: Path) -> None:
    project = copy_greeter_project(tmp_path / "project")
    rename_bundle(project / "asset_bundle", OTHER)

    routed = grpc_model_cli(project, "test", "--server", target(proxy), "--model-name", "second-greeter")
    cases = len(load_test_cases(load_bundle(project / "asset_bundle")))
    assert routed.returncode == 0, routed.stdout + routed.stderr
    assert proxy.routes(STATUS) == [{"x-model-name": "second-greeter"}]
    assert proxy.routes(RUN) == [{"x-model-name": "second-greeter"}] * cases

    unrouted = grpc_model_cli(project, "test", "--server", target(proxy))  # the default model is another one
    assert unrouted.returncode == 1
    assert "the server answers for model 'Hello World', the cases are those of 'Second Greeter'" in unrouted.stdout
    assert len(proxy.routes(RUN)) == cases  # none sent to the wrong model


def test_test_without_server_refuses_the_model_options(tmp_path: Path) -> None:
    code, output = invoke("test", "--model-name", "second-greeter")
    assert code == 2
    assert "add --server" in output


def test_score_sends_every_call_to_the_named_model(proxy: RoutingProxy, tmp_path: Path) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for name in ("Ada", "Kim", "Lin"):
        (inputs / f"{name}.txt").write_text(f"I am {name}")

    code, output = invoke(
        "score", str(inputs), "--server", target(proxy), "--out", str(tmp_path / "out.jsonl"), "--batch-size", "1",
        "--model-name", "second-greeter", "--model-version", TEST_VERSION,
    )  # fmt: skip

    assert code == 0, output
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [row["success"] for row in rows] == [True] * 3
    assert proxy.routes(STATUS) == [ROUTE]
    assert proxy.routes(RUN) == [ROUTE] * 3


def test_score_in_process_refuses_the_model_options(tmp_path: Path) -> None:
    code, output = invoke(
        "score", str(tmp_path), "--out", str(tmp_path / "o.jsonl"), "--in-process", "--model-name", "a"
    )
    assert code == 2
    assert "--in-process" in output


def test_the_model_client_routes_status_and_run_but_not_health(proxy: RoutingProxy) -> None:
    with ModelClient(target(proxy), timeout=30, route=ModelRoute("second-greeter")) as client:
        assert client.status().model_info.model_name == OTHER
        assert client.run([{"input.txt": b"I am Bo"}]).outputs[0].success
        assert client.health() == "SERVING"  # the server's health: not a model's
    assert proxy.routes(STATUS) == proxy.routes(RUN) == [{"x-model-name": "second-greeter"}]
    assert proxy.routes("/grpc.health.v1.Health/Check") == [{}]


@pytest.mark.parametrize(
    ("name", "version"), [("", None), ("a\nb", None), ("ok", "1.0\u00a0"), (" ok", None), ("ok", "\t")]
)
def test_a_route_grpc_cannot_carry_is_refused(name: str, version: str | None) -> None:
    with pytest.raises(RouteError):
        ModelRoute(name, version)


def test_an_empty_version_is_the_newest_and_sends_nothing() -> None:
    assert ModelRoute("a", "").metadata == (("x-model-name", "a"),)
    assert ModelRoute(None, "0.2.0").metadata == (("x-model-version", "0.2.0"),)
    assert ModelRoute().metadata == ()


@pytest.fixture
def repository_server(serve: ServerFactory, tmp_path: Path) -> ServerThread:
    """A real repository server (serve --repository): alpha at 0.1.0 and 0.2.0, and beta, each answering its name
    and the version whose input checks passed."""
    root = tmp_path / "repository"
    write_wrapper_model(root, "alpha", "alpha", ("0.1.0", "0.2.0"))
    write_wrapper_model(root, "beta", "beta")
    return serve(repository=str(root), undeclared_inputs="ignore")


def test_the_commands_route_to_a_repository_servers_models(repository_server: ServerThread, tmp_path: Path) -> None:
    address = f"127.0.0.1:{repository_server.running.port}"
    (tmp_path / "in.txt").write_text("hello")
    marked = [f"--input=input.txt={tmp_path / 'in.txt'}"] + [
        f"--input={marker(version)}={tmp_path / 'in.txt'}" for version in ("0.1.0", "0.2.0")
    ]

    older = invoke("status", address, "--model-name", "alpha", "--model-version", "0.1.0")
    beta = invoke("call", address, "--model-name", "beta", *marked[:2])
    alpha = invoke("call", address, "--model-name", "alpha", "--model-version", "0.1.0", *marked[:2])
    newest = invoke("call", address, "--model-name", "alpha", marked[0], marked[2])
    unknown = invoke("status", address, "--model-name", "gamma")

    assert older[0] == 0, older[1]
    assert "alpha 0.1.0" in older[1]
    assert "SERVING (the health service alpha)" in older[1]
    assert beta[0] == 0, beta[1]
    assert '"by": "beta"' in beta[1]
    assert alpha[0] == 0, alpha[1]
    assert '"by": "alpha", "version": "0.1.0"' in alpha[1]
    assert newest[0] == 0, newest[1]
    assert '"version": "0.2.0"' in newest[1]  # no version: the newest loaded
    assert unknown[0] == 1
    assert "NOT_FOUND" in unknown[1]
    assert "alpha" in unknown[1]  # the answer names what the server serves
