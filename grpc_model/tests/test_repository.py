"""Many models in one server (`--repository`): each its own engine, calls routed by name and version."""

import json
import random
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from grpc_model.src.auto_generated.model2_template import model_pb2
from grpc_model.src.auto_generated.model2_template.model_pb2_grpc import ModzyModelStub
from grpc_model.src.auto_generated.v2 import grpc_predict_v2_pb2 as v2_pb
from grpc_model.src.auto_generated.v2.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub
from grpc_model.src.routing import MODEL_NAME_METADATA, MODEL_VERSION_METADATA
from grpc_model.tests.conftest import PATIENCE_SECONDS, ServerFactory, ServerThread, eventually
from grpc_model.tests.repository_models import marker, write_bundle, write_wrapper_model
from grpc_model.tests.runtime_models import iris, trained_bundle
from grpc_model.tests.test_metrics import metrics_of, value

ROWS = iris()[0][::30]  # 5 rows
VERSIONS = {"alpha": ("0.1.0", "0.2.0"), "beta": ("0.1.0",)}


def modzy_run(
    server: ServerThread,
    model: str | None,
    version: str | None,
    echoes: Sequence[str],
    markers: Sequence[str],
    channel: grpc.Channel | None = None,
) -> list[dict[str, Any]]:
    """Runs one item per echo through ModzyModel, routed by metadata; each item carries the markers' inputs.

    On the reference client's channel unless another is given (which retries a call answered UNAVAILABLE)."""
    metadata: tuple[tuple[str, str | bytes], ...] = ((MODEL_NAME_METADATA, model),) if model else ()
    metadata += ((MODEL_VERSION_METADATA, version),) if version else ()
    files = {marker(each): b"x" for each in markers}
    request = model_pb2.RunRequest(
        inputs=[model_pb2.InputItem(input={"input.txt": echo.encode(), **files}) for echo in echoes]
    )
    stub = ModzyModelStub(channel or server.client.channel)
    reply = stub.Run(request, metadata=metadata, timeout=PATIENCE_SECONDS)
    assert reply.status_code == 200, reply.message
    failed = [output.output["error"] for output in reply.outputs if not output.success]
    assert not failed, failed
    return [json.loads(output.output["results.json"]) for output in reply.outputs]


def v2_run(server: ServerThread, model: str, version: str, echo: str, markers: Sequence[str]) -> dict[str, Any]:
    request = v2_pb.ModelInferRequest(model_name=model, model_version=version)
    for name, text in [("input.txt", echo), *((marker(each), "x") for each in markers)]:
        request.inputs.add(name=name, datatype="BYTES", shape=[1]).contents.bytes_contents.append(text.encode())
    reply = GRPCInferenceServiceStub(server.client.channel).ModelInfer(request, timeout=PATIENCE_SECONDS)
    answer: dict[str, Any] = json.loads(reply.outputs[0].contents.bytes_contents[0])
    assert (reply.model_name, reply.model_version) == (model, answer["version"])
    return answer


def health(server: ServerThread, service: str) -> str:
    stub = health_pb2_grpc.HealthStub(server.client.channel)
    status = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=PATIENCE_SECONDS).status
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(status))


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    """alpha (two versions) and beta: two wrappers whose modules are both model_lib.src.model; iris, a runtime."""
    root = tmp_path / "repository"
    write_wrapper_model(root, "alpha", "alpha", VERSIONS["alpha"])
    write_wrapper_model(root, "beta", "beta", VERSIONS["beta"])
    bundles = root / "iris" / "asset_bundle"
    trained_bundle(bundles, "sklearn", ROWS)
    model_yaml = next(bundles.glob("*/model.yaml"))
    model_yaml.write_text(yaml.safe_dump({**yaml.safe_load(model_yaml.read_text()), "name": "iris"}))
    return root


@pytest.fixture
def batch_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    log = tmp_path / "batches.jsonl"
    monkeypatch.setenv("BATCH_LOG", str(log))
    return log


def batches(log: Path) -> list[tuple[str, list[str]]]:
    return [(tag, echoes) for tag, echoes in map(json.loads, log.read_text().splitlines())]


def iris_rows(server: ServerThread, version: str = "") -> list[int]:
    request = v2_pb.ModelInferRequest(model_name="iris", model_version=version)
    tensor = request.inputs.add(name="input", datatype="FP32", shape=list(ROWS.shape))
    tensor.contents.fp32_contents.extend(ROWS.reshape(-1).tolist())
    reply = GRPCInferenceServiceStub(server.client.channel).ModelInfer(request, timeout=PATIENCE_SECONDS)
    outputs = {output.name: output for output in reply.outputs}
    return list(outputs["predict"].contents.int64_contents)


@pytest.mark.parametrize("workers", [0, 1])
def test_three_models_serve_side_by_side_each_with_its_own_batches(
    serve: ServerFactory, repository: Path, batch_log: Path, workers: int
) -> None:
    """Two wrappers with the same module path answer as themselves, in this process or each in its own worker
    processes; a batch never mixes models; the runtime model answers its own library's numbers beside them."""
    server = serve(repository=str(repository), workers=workers, undeclared_inputs="ignore")
    markers = [*VERSIONS["alpha"], *VERSIONS["beta"]]

    def call(index: int) -> tuple[str, list[dict[str, Any]]]:
        model = ("alpha", "beta")[index % 2]
        return model, modzy_run(server, model, None, [f"{model}:{index}:{item}" for item in range(3)], markers)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(call, range(40)))
        predictions = list(pool.map(lambda _: iris_rows(server), range(4)))

    for model, items in answers:
        assert {(item["by"], item["version"]) for item in items} == {(model, VERSIONS[model][-1])}
    logged = batches(batch_log)
    assert sum(len(echoes) for _, echoes in logged) == 40 * 3
    assert [(tag, echoes) for tag, echoes in logged if any(not e.startswith(tag + ":") for e in echoes)] == []
    assert predictions == [predictions[0]] * 4
    assert len(predictions[0]) == len(ROWS)


def test_random_routing_across_models_versions_and_protocols_loses_and_misroutes_nothing(
    serve: ServerFactory, repository: Path
) -> None:
    """Each version takes its own marker input: a call that reached another version than it named would fail
    that version's input checks (undeclared inputs are dropped, so a call naming no version sends them all)."""
    server = serve(repository=str(repository), undeclared_inputs="ignore")
    chooser = random.Random(22)
    plan = [
        (chooser.choice(["alpha", "beta"]), chooser.choice([None, "0.1.0", "0.2.0"]), chooser.choice(["modzy", "v2"]))
        for _ in range(200)
    ]
    plan = [(model, None if version not in VERSIONS[model] else version, way) for model, version, way in plan]

    def call(index: int) -> tuple[str, str]:
        model, version, way = plan[index]
        markers = [version] if version else list(VERSIONS[model])  # without a version: the newest keeps its own
        echo = f"{model}:{index}"
        if way == "modzy":
            (answer,) = modzy_run(server, model, version, [echo], markers)
        else:  # V2 takes no undeclared tensor: the newest's own, which another version would refuse
            answer = v2_run(server, model, version or "", echo, [version or VERSIONS[model][-1]])
        assert answer["echo"] == echo
        return answer["by"], answer["version"]

    with ThreadPoolExecutor(8) as pool:
        answered = list(pool.map(call, range(len(plan))))

    expected = [(model, version or VERSIONS[model][-1]) for model, version, _ in plan]
    assert answered == expected
    assert iris_rows(server, "0.1.0") == iris_rows(server)


def test_a_call_for_a_model_not_served_is_not_found_naming_the_models_served(
    serve: ServerFactory, repository: Path
) -> None:
    server = serve(repository=str(repository), default_model="beta")
    with pytest.raises(grpc.RpcError) as unknown:
        modzy_run(server, "gamma", None, ["x"], [])
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    assert unknown.value.details() == "no model named 'gamma': this server serves 'alpha', 'beta', 'iris'"
    with pytest.raises(grpc.RpcError) as old:
        v2_run(server, "beta", "0.2.0", "x", [])
    assert old.value.code() == grpc.StatusCode.NOT_FOUND
    assert old.value.details() == "model 'beta' has no version '0.2.0': this server serves 0.1.0"
    (answer,) = modzy_run(server, None, None, ["to the default"], ["0.1.0"])
    assert answer["by"] == "beta"
    status = ModzyModelStub(server.client.channel).Status(
        model_pb2.StatusRequest(), metadata=((MODEL_NAME_METADATA, "alpha"),), timeout=PATIENCE_SECONDS
    )
    assert (status.status_code, status.model_info.model_name, status.model_info.model_version) == (
        200,
        "alpha",
        "0.2.0",
    )


def test_a_model_that_fails_to_load_costs_only_its_own_calls(
    serve: ServerFactory, repository: Path, batch_log: Path
) -> None:
    write_wrapper_model(repository, "failing", "Failing")
    server = serve(repository=str(repository))
    registry = server.running.service.registry

    failing = {entry.version: entry for entry in registry.index() if entry.name == "failing"}
    assert failing["0.1.0"].state == "UNAVAILABLE"
    assert "this model never loads" in failing["0.1.0"].reason
    assert {entry.state for entry in registry.index() if entry.name != "failing"} == {"READY"}
    assert (health(server, ""), health(server, "alpha"), health(server, "failing")) == (
        "SERVING",
        "SERVING",
        "NOT_SERVING",
    )
    with pytest.raises(grpc.RpcError) as refused:
        v2_run(server, "failing", "", "x", ["0.1.0"])
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "this model never loads" in str(refused.value.details())
    assert modzy_run(server, "beta", None, ["still here"], ["0.1.0"])[0]["by"] == "beta"


@pytest.fixture
def held(gate: Path) -> Iterator[Path]:
    """The gate through which a Recorder's "hold" item waits for the test."""
    yield gate
    (gate / "release").touch()


def test_a_new_version_takes_over_from_the_old_without_dropping_a_call(
    serve: ServerFactory, tmp_path: Path, held: Path
) -> None:
    """Loading 0.2.0 beside 0.1.0, then unloading 0.1.0 while it runs a call: that call finishes, and the calls
    that name no version go to 0.1.0, then 0.2.0, every one answered."""
    root = tmp_path / "repository"
    write_wrapper_model(root, "alpha", "alpha", ("0.1.0",))
    server = serve(repository=str(root), undeclared_inputs="ignore", shutdown_grace_seconds=PATIENCE_SECONDS)
    registry = server.running.service.registry
    markers = ["0.1.0", "0.2.0"]
    with ThreadPoolExecutor(32) as pool:  # a thread for every call at once
        running = pool.submit(modzy_run, server, "alpha", None, ["hold"], markers)
        eventually(lambda: (held / "holding").exists() or None, "the held call to reach 0.1.0")
        before = [pool.submit(modzy_run, server, "alpha", None, [f"before:{i}"], markers) for i in range(10)]
        write_bundle(root / "alpha" / "asset_bundle", "alpha", "0.2.0")
        server.call(registry.load("alpha", "0.2.0"))
        unloading = pool.submit(server.call, registry.unload("alpha", "0.1.0"))
        eventually(lambda: registry.served_versions("alpha") == ["0.2.0"] or None, "0.1.0 to stop taking calls")
        after = [pool.submit(modzy_run, server, "alpha", None, [f"after:{i}"], markers) for i in range(10)]
        assert {call.result()[0]["version"] for call in after} == {"0.2.0"}
        (held / "release").touch()
        assert running.result()[0]["version"] == "0.1.0"
        unloading.result()
        assert all(call.result()[0]["by"] == "alpha" for call in before)
    assert [(entry.version, entry.state, entry.reason) for entry in registry.index()] == [
        ("0.1.0", "UNAVAILABLE", "unloaded"),
        ("0.2.0", "READY", ""),
    ]


def test_a_call_still_running_when_the_grace_period_ends_is_answered_unavailable(
    serve: ServerFactory, tmp_path: Path, held: Path
) -> None:
    root = tmp_path / "repository"
    write_wrapper_model(root, "alpha", "alpha", ("0.1.0",))
    server = serve(repository=str(root), shutdown_grace_seconds=0)
    registry = server.running.service.registry
    without_retries = grpc.insecure_channel(f"127.0.0.1:{server.running.port}", [("grpc.enable_retries", 0)])
    with without_retries, ThreadPoolExecutor(2) as pool:
        running = pool.submit(modzy_run, server, "alpha", None, ["hold"], ["0.1.0"], without_retries)
        eventually(lambda: (held / "holding").exists() or None, "the held call to reach the model")
        server.call(registry.unload("alpha"))
        with pytest.raises(grpc.RpcError) as unloaded:
            running.result()
    assert unloaded.value.code() == grpc.StatusCode.UNAVAILABLE
    assert unloaded.value.details() == (
        "model 'alpha' version 0.1.0 was unloaded before this call finished; call again to reach the versions "
        "still served"
    )
    with pytest.raises(grpc.RpcError) as gone:
        modzy_run(server, "alpha", None, ["x"], ["0.1.0"])
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND


def test_metrics_carry_the_model_and_version(serve: ServerFactory, repository: Path) -> None:
    server = serve(repository=str(repository))
    modzy_run(server, "alpha", "0.1.0", ["a", "b"], ["0.1.0"])
    modzy_run(server, "beta", None, ["c"], ["0.1.0"])

    found = metrics_of(server)

    assert value(found, "grpc_model_items_total", model="alpha", version="0.1.0", outcome="ok") == 2
    assert value(found, "grpc_model_items_total", model="alpha", version="0.2.0", outcome="ok") == 0
    assert value(found, "grpc_model_items_total", model="beta", version="0.1.0", outcome="ok") == 1
    assert value(found, "grpc_model_model_loaded", model="iris", version="0.1.0") == 1
    assert value(found, "grpc_model_calls_total", method="Run", code="OK") == 2
