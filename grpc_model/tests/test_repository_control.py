"""The V2 model-repository extension (index, load, unload) over gRPC and REST, with tritonclient, and the memory
budget (max_loaded_models) serving more models than it holds."""

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from grpc_model.src.auto_generated.model2_template import model_pb2 as pb_modzy
from grpc_model.src.auto_generated.v2 import grpc_predict_v2_pb2 as pb
from grpc_model.src.auto_generated.v2.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub
from grpc_model.src.routing import MODEL_NAME_METADATA
from grpc_model.tests.conftest import GREETER, PATIENCE_SECONDS, ServerFactory, ServerThread, eventually
from grpc_model.tests.v2_cases import run_client_job
from grpc_model.tests.wrappers import Gated

TOKEN = "repository-token"


def write_model(
    root: Path, name: str, wrapper: str = "Gated", versions: Sequence[str] = ("0.1.0",), memory: str = ""
) -> Path:
    """`root/name`: a model folder whose model_lib serves a subclass of a wrapper of wrappers.py (one binary
    input `a`, echoed), at each version."""
    folder = root / name
    for version in versions:
        spec = yaml.safe_load((GREETER / "model.yaml").read_text())
        spec.update(name=name, version=version)
        spec["inputs"] = {"a": {"acceptedMediaTypes": ["application/octet-stream"], "maxSize": "1M"}}
        spec["outputs"] = {"a": {"mediaType": "application/octet-stream", "maxSize": "1M"}}
        spec.setdefault("resources", {}).setdefault("memory", {})["size"] = memory
        (folder / "asset_bundle" / version).mkdir(parents=True)
        (folder / "asset_bundle" / version / "model.yaml").write_text(yaml.safe_dump(spec))
    source = folder / "model_lib" / "src"
    source.mkdir(parents=True)
    (folder / "model_lib" / "__init__.py").write_text("")
    (source / "__init__.py").write_text("")
    (source / "model.py").write_text(
        f"from grpc_model.tests.wrappers import {wrapper}\n\n\nclass Model({wrapper}):\n    pass\n"
    )
    return folder


@pytest.fixture
def gated() -> Iterator[type[Gated]]:
    Gated.reset()
    yield Gated
    Gated.release.set()  # whatever a test still holds, before its servers stop


def v2(server: ServerThread) -> GRPCInferenceServiceStub:
    return GRPCInferenceServiceStub(server.client.channel)


def infer(server: ServerThread, model: str, data: bytes, version: str = "") -> bytes:
    """One item through ModelInfer; its echo."""
    tensor = pb.ModelInferRequest.InferInputTensor(
        name="a", datatype="BYTES", shape=[1], contents=pb.InferTensorContents(bytes_contents=[data])
    )
    request = pb.ModelInferRequest(model_name=model, model_version=version, inputs=[tensor])
    response = v2(server).ModelInfer(request, timeout=PATIENCE_SECONDS)
    return bytes(response.outputs[0].contents.bytes_contents[0])


def index(server: ServerThread) -> dict[tuple[str, str], tuple[str, str]]:
    """(name, version) -> (state, reason), from RepositoryIndex."""
    response = v2(server).RepositoryIndex(pb.RepositoryIndexRequest(), timeout=PATIENCE_SECONDS)
    return {(model.name, model.version): (model.state, model.reason) for model in response.models}


def load(server: ServerThread, model: str, version: str = "") -> None:
    parameters = {"version": pb.ModelRepositoryParameter(string_param=version)} if version else {}
    request = pb.RepositoryModelLoadRequest(model_name=model, parameters=parameters)
    v2(server).RepositoryModelLoad(request, timeout=PATIENCE_SECONDS)


def unload(server: ServerThread, model: str, version: str = "") -> None:
    parameters = {"version": pb.ModelRepositoryParameter(string_param=version)} if version else {}
    request = pb.RepositoryModelUnloadRequest(model_name=model, parameters=parameters)
    v2(server).RepositoryModelUnload(request, timeout=PATIENCE_SECONDS)


def triton(protocol: str, server: ServerThread, calls: list[dict[str, Any]], **job: Any) -> list[dict[str, Any]]:
    """tritonclient's answers to repository `calls`, over gRPC or the HTTP port."""
    port = server.running.port if protocol == "grpc" else server.running.http.port  # type: ignore[union-attr]
    job = {"protocol": protocol, "url": f"127.0.0.1:{port}", "calls": calls, **job}
    answers: list[dict[str, Any]] = run_client_job("grpc_model.tests.v2_repository_client", job)
    return answers


def states(answer: dict[str, Any]) -> dict[str, str]:
    return {entry["name"]: entry["state"] for entry in answer["index"]}


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_tritonclient_indexes_loads_and_unloads(
    protocol: str, serve: ServerFactory, tmp_path: Path, gated: type[Gated]
) -> None:
    write_model(tmp_path, "alpha")
    write_model(tmp_path, "beta")
    server = serve(repository=str(tmp_path), repository_control=True, http="on")
    answers = triton(
        protocol,
        server,
        [
            {"call": "index"},
            {"call": "unload", "model": "alpha"},
            {"call": "ready", "model": "alpha"},
            {"call": "index"},
            {"call": "load", "model": "alpha"},
            {"call": "ready", "model": "alpha"},
            {"call": "index"},
            {"call": "load", "model": "gamma"},
        ],
    )
    assert states(answers[0]) == {"alpha": "READY", "beta": "READY"}
    assert [entry["version"] for entry in answers[0]["index"]] == ["0.1.0", "0.1.0"]
    assert answers[1] == {}
    assert answers[2] == {"ready": False}
    assert states(answers[3]) == {"alpha": "UNAVAILABLE", "beta": "READY"}
    assert answers[3]["index"][0]["reason"] == "unloaded"
    assert answers[4] == {}
    assert answers[5] == {"ready": True}
    assert states(answers[6]) == {"alpha": "READY", "beta": "READY"}
    assert "no model named 'gamma'" in answers[7]["error"]
    assert infer(server, "alpha", b"back") == b"back"


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_without_repository_control_loads_and_unloads_are_refused_naming_the_setting(
    protocol: str, serve: ServerFactory, tmp_path: Path, gated: type[Gated]
) -> None:
    write_model(tmp_path, "alpha")
    server = serve(repository=str(tmp_path), http="on")
    answers = triton(
        protocol, server, [{"call": "unload", "model": "alpha"}, {"call": "load", "model": "alpha"}, {"call": "index"}]
    )
    for answer, what in zip(answers[:2], ("unload", "load"), strict=True):
        assert answer["error"] == (
            f"this server does not let clients {what} models: start it with --repository-control "
            "(GRPC_MODEL_REPOSITORY_CONTROL=true) to allow it"
        )
        assert answer["status"] == ("StatusCode.PERMISSION_DENIED" if protocol == "grpc" else "403")
    assert states(answers[2]) == {"alpha": "READY"}  # the index only reads: it answers
    assert infer(server, "alpha", b"still served") == b"still served"


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_repository_calls_need_the_token_when_tokens_are_on(
    protocol: str, serve: ServerFactory, tmp_path: Path, gated: type[Gated]
) -> None:
    write_model(tmp_path, "alpha")
    server = serve(repository=str(tmp_path), repository_control=True, http="on", auth_token=TOKEN)
    calls = [{"call": "index"}, {"call": "unload", "model": "alpha"}, {"call": "load", "model": "alpha"}]
    refused = triton(protocol, server, calls)
    assert [answer.get("status") for answer in refused] == (
        ["StatusCode.UNAUTHENTICATED"] * 3 if protocol == "grpc" else ["401"] * 3
    )
    allowed = triton(protocol, server, [*calls, {"call": "index"}], headers={"authorization": f"Bearer {TOKEN}"})
    assert [states(allowed[0]), allowed[1], allowed[2], states(allowed[3])] == [
        {"alpha": "READY"},
        {},
        {},
        {"alpha": "READY"},
    ]


def test_a_model_whose_load_fails_is_in_the_index_with_its_error_while_the_others_serve(
    serve: ServerFactory, tmp_path: Path, gated: type[Gated]
) -> None:
    write_model(tmp_path, "alpha")
    write_model(tmp_path, "broken", wrapper="FailingInit")
    server = serve(repository=str(tmp_path), repository_control=True, http="on")
    entries = index(server)
    assert entries["alpha", "0.1.0"] == ("READY", "")
    state, reason = entries["broken", "0.1.0"]
    assert state == "UNAVAILABLE"
    assert "weights file /models/weights.pt not found" in reason
    assert infer(server, "alpha", b"served") == b"served"
    answers = triton("http", server, [{"call": "load", "model": "broken"}, {"call": "index"}])
    assert "weights file /models/weights.pt not found" in answers[0]["error"]
    assert answers[0]["status"] == "503"
    assert next(entry for entry in answers[1]["index"] if entry["name"] == "broken")["state"] == "UNAVAILABLE"


def test_the_single_model_server_takes_the_same_calls(serve_wrapper: ServerFactory, gated: type[Gated]) -> None:
    server = serve_wrapper("Gated", repository_control=True)
    assert index(server) == {("hello-world", "0.1.0"): ("READY", "")}
    unload(server, "hello-world")
    with pytest.raises(grpc.RpcError) as raised:
        load(server, "hello-world")
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "this server's one model cannot be loaded again once unloaded: restart the server" in str(
        raised.value.details()
    )
    state, reason = index(server)["hello-world", "0.1.0"]
    assert state == "UNAVAILABLE"
    assert reason.startswith("this server's one model cannot be loaded again")


def test_an_unload_answers_the_call_in_the_model_first(
    serve: ServerFactory, tmp_path: Path, gated: type[Gated]
) -> None:
    write_model(tmp_path, "alpha")
    server = serve(repository=str(tmp_path), repository_control=True, shutdown_grace_seconds=PATIENCE_SECONDS)
    held: list[bytes] = []
    caller = threading.Thread(target=lambda: held.append(infer(server, "alpha", b"hold")))
    caller.start()
    assert gated.holding.wait(PATIENCE_SECONDS)
    unloading = threading.Thread(target=unload, args=(server, "alpha"))
    unloading.start()
    eventually(lambda: index(server)["alpha", "0.1.0"][0] == "UNLOADING", "the unload to begin")
    assert unloading.is_alive()  # it waits for the call in the model
    gated.release.set()
    caller.join(PATIENCE_SECONDS)
    unloading.join(PATIENCE_SECONDS)
    assert held == [b"hold"]
    assert index(server)["alpha", "0.1.0"] == ("UNAVAILABLE", "unloaded")


class Traffic:
    """Threads calling one model without a version, each call's echo checked, until stopped."""

    def __init__(self, server: ServerThread, model: str, threads: int = 3) -> None:
        self.answered = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._call, args=(server, model, number)) for number in range(threads)]
        for thread in self._threads:
            thread.start()

    def _call(self, server: ServerThread, model: str, number: int) -> None:
        sent = 0
        while not self._stop.is_set():
            data = f"{number}-{sent}".encode()
            try:
                echo = infer(server, model, data)
                problem = None if echo == data else f"{data!r} answered {echo!r}"
            except grpc.RpcError as error:
                problem = f"{data!r}: {error.code()} {error.details()}"
            with self._lock:
                self.answered += 1
                if problem:
                    self.failures.append(problem)
            sent += 1

    def more(self, calls: int = 20) -> None:
        """Waits until `calls` more calls were answered."""
        target = self.answered + calls
        eventually(lambda: self.answered >= target, f"{calls} more calls to be answered")

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(PATIENCE_SECONDS)


def test_loads_unloads_and_reloads_under_load_drop_no_call(
    serve: ServerFactory, tmp_path: Path, gated: type[Gated]
) -> None:
    write_model(tmp_path, "alpha", versions=("0.1.0", "0.2.0"))
    server = serve(repository=str(tmp_path), repository_control=True)
    traffic = Traffic(server, "alpha")
    try:
        traffic.more()
        unload(server, "alpha", "0.1.0")
        traffic.more()
        load(server, "alpha", "0.1.0")
        traffic.more()
        load(server, "alpha", "0.2.0")  # loaded already: loaded again, served meanwhile
        traffic.more()
        unload(server, "alpha", "0.2.0")  # the calls go to 0.1.0 from now on
        traffic.more()
        load(server, "alpha")  # the newest, 0.2.0, back beside 0.1.0
        traffic.more()
    finally:
        traffic.stop()
    assert traffic.failures == []
    assert index(server) == {("alpha", "0.1.0"): ("READY", ""), ("alpha", "0.2.0"): ("READY", "")}
    loads = scrape(server)  # a reload loads a new instance: at start-up, reloaded, loaded after its unload
    assert 'grpc_model_model_load_duration_seconds_count{model="alpha",version="0.2.0"} 3.0' in loads
    assert 'grpc_model_model_load_duration_seconds_count{model="alpha",version="0.1.0"} 2.0' in loads


def post(server: ServerThread, path: str, body: bytes) -> tuple[int, str]:
    """A REST call's status and body."""
    port = server.running.http.port  # type: ignore[union-attr]
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=PATIENCE_SECONDS) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_parameters_this_server_does_not_take_are_refused_by_name(
    serve: ServerFactory, tmp_path: Path, gated: type[Gated]
) -> None:
    write_model(tmp_path, "alpha", versions=("0.1.0", "0.2.0"))
    server = serve(repository=str(tmp_path), repository_control=True, http="on")
    load_path, unload_path = "/v2/repository/models/alpha/load", "/v2/repository/models/alpha/unload"
    status, body = post(server, load_path, b'{"parameters": {"config": "{}"}}')
    assert status == 400
    assert "the load parameter 'config' is not supported: a model's configuration is its folder's model.yaml" in body
    status, body = post(server, unload_path, b'{"parameters": {"force": true}}')
    assert (status, json.loads(body)) == (
        400,
        {
            "error": "the unload parameter 'force' = True is not one this server takes: version (a non-empty "
            "string), unload_dependents (a boolean)"
        },
    )
    assert post(server, "/v2/repository/index", b'{"ready": "yes"}')[0] == 400
    assert post(server, load_path, b"{not json")[0] == 400
    assert post(server, unload_path, b'{"parameters": {"version": "0.1.0", "unload_dependents": false}}') == (200, "")
    assert json.loads(post(server, "/v2/repository/index", b'{"ready": true}')[1]) == [
        {"name": "alpha", "version": "0.2.0", "state": "READY", "reason": ""}
    ]
    with pytest.raises(grpc.RpcError) as raised:
        v2(server).RepositoryIndex(pb.RepositoryIndexRequest(repository_name="models"), timeout=PATIENCE_SECONDS)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert "no repository named 'models': this server has one, unnamed" in str(raised.value.details())


def scrape(server: ServerThread) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.running.metrics_port}/metrics", timeout=30) as answer:
        text: str = answer.read().decode()
        return text


def loaded_models(server: ServerThread) -> set[str]:
    return {name for (name, _), (state, _) in index(server).items() if state == "READY"}


def test_a_budget_of_two_models_serves_three_unloading_the_least_recently_used(
    serve: ServerFactory, tmp_path: Path, gated: type[Gated]
) -> None:
    for name in ("alpha", "beta", "gamma"):
        write_model(tmp_path, name)
    server = serve(repository=str(tmp_path), max_loaded_models=2)
    assert loaded_models(server) == {"alpha", "beta"}  # start-up loads what fits
    assert index(server)["gamma", "0.1.0"] == ("UNAVAILABLE", "not loaded")
    for model in ("alpha", "beta", "alpha"):
        assert infer(server, model, model.encode()) == model.encode()
    assert infer(server, "gamma", b"on demand") == b"on demand"  # loads gamma; beta is the least recently used
    assert loaded_models(server) == {"alpha", "gamma"}
    state, reason = index(server)["beta", "0.1.0"]
    assert (state, reason) == ("UNAVAILABLE", "unloaded to make room (max_loaded_models 2); a call loads it again")
    assert infer(server, "beta", b"again") == b"again"  # gamma's call came after alpha's: alpha goes
    assert loaded_models(server) == {"beta", "gamma"}
    run = pb_modzy.RunRequest(inputs=[pb_modzy.InputItem(input={"a": b"by Run"})])
    reply = server.client.stub.Run(run, metadata=((MODEL_NAME_METADATA, "alpha"),), timeout=PATIENCE_SECONDS)
    assert reply.outputs[0].output["a"] == b"by Run"  # ModzyModel loads on demand too; gamma goes
    assert loaded_models(server) == {"alpha", "beta"}
    metrics = scrape(server)
    assert 'grpc_model_model_load_duration_seconds_count{model="alpha",version="0.1.0"} 2.0' in metrics
    assert 'grpc_model_model_load_duration_seconds_count{model="beta",version="0.1.0"} 2.0' in metrics


def test_a_model_in_use_is_not_unloaded_and_every_call_is_answered(
    serve: ServerFactory, tmp_path: Path, gated: type[Gated]
) -> None:
    for name in ("alpha", "beta", "gamma"):
        write_model(tmp_path, name)
    server = serve(repository=str(tmp_path), max_loaded_models=2)
    held: list[bytes] = []
    caller = threading.Thread(target=lambda: held.append(infer(server, "alpha", b"hold")))
    caller.start()
    assert gated.holding.wait(PATIENCE_SECONDS)
    assert infer(server, "beta", b"b") == b"b"  # alpha is now the least recently used, but busy
    assert infer(server, "gamma", b"c") == b"c"
    assert loaded_models(server) == {"alpha", "gamma"}
    gated.release.set()
    caller.join(PATIENCE_SECONDS)
    assert held == [b"hold"]
    answers: list[bytes] = []
    callers = [
        threading.Thread(target=lambda name=name: answers.append(infer(server, name, name.encode())))
        for name in ("alpha", "beta", "gamma") * 4
    ]
    for thread in callers:
        thread.start()
    for thread in callers:
        thread.join(PATIENCE_SECONDS)
    assert sorted(answers) == sorted(name.encode() for name in ("alpha", "beta", "gamma") * 4)
    assert len(loaded_models(server)) <= 2


def test_a_byte_budget_needs_every_models_memory(serve: ServerFactory, tmp_path: Path) -> None:
    write_model(tmp_path, "alpha", memory="4M")
    write_model(tmp_path, "beta")
    with pytest.raises(Exception, match=r"beta 0\.1\.0: model.yaml has no resources.memory.size"):
        serve(repository=str(tmp_path), max_loaded_bytes=8 * 1024**2)
