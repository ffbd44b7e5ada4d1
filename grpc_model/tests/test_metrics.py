"""Prometheus metrics: one scrape over HTTP counts the work of every worker process."""

import json
import re
import socket
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from grpc_model.src.auto_generated.v2 import grpc_predict_v2_pb2 as v2
from grpc_model.src.auto_generated.v2.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub
from grpc_model.src.observability.logs import REQUEST_ID_METADATA
from grpc_model.src.observability.metrics import Metrics
from grpc_model.src.server import ListenError
from grpc_model.src.settings import PROJECT_ROOT
from grpc_model.tests.conftest import ServerFactory, ServerThread, eventually

DASHBOARD = PROJECT_ROOT / "deploy" / "grafana" / "grpc-model.json"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int, path: str = "/metrics") -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as response:
        return str(response.read().decode())


def samples(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(found: Samples, metric: str, **labels: str) -> float | None:
    return found.get((metric, frozenset(labels.items())))


def metrics_of(server: ServerThread) -> Samples:
    assert server.running.metrics_port is not None
    return samples(scrape(server.running.metrics_port))


@pytest.mark.usefixtures("gate")
def test_one_scrape_counts_the_calls_and_items_of_every_worker_process(serve_wrapper: ServerFactory) -> None:
    server = serve_wrapper("PidOrFail", workers=2, max_queued_items=20)
    calls = 6
    # Per call: two items for the model, one that the model fails, one that validation refuses.
    items = [{"a": b"1"}, {"a": b"2"}, {"a": b"fail"}, {"undeclared": b"x"}]
    with ThreadPoolExecutor(calls) as pool:  # a call's items wait until both workers answer one
        responses = list(pool.map(server.client.run, [items] * calls))
    with pytest.raises(grpc.RpcError) as refused:
        server.client.run([{"a": b"1"}] * 21)  # more than max_queued_items: refused whole
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

    pids = {int(r.outputs[index].output["pid"]) for r in responses for index in (0, 1)}
    assert len(pids) == 2  # both workers did part of the work counted below

    found = metrics_of(server)
    assert value(found, "grpc_model_calls_total", method="Run", code="OK") == calls
    assert value(found, "grpc_model_calls_total", method="Run", code="RESOURCE_EXHAUSTED") == 1
    assert value(found, "grpc_model_call_seconds_count", method="Run") == calls + 1
    assert value(found, "grpc_model_items_total", outcome="ok") == 2 * calls
    assert value(found, "grpc_model_items_total", outcome="failed") == calls
    assert value(found, "grpc_model_items_total", outcome="invalid") == calls
    assert value(found, "grpc_model_items_total", outcome="refused") == 21
    # Every item that reached the model ran in a worker: one model call each (PidOrFail has no batch method).
    assert value(found, "grpc_model_batch_size_sum") == 3 * calls
    assert value(found, "grpc_model_batch_size_count") == 3 * calls
    assert value(found, "grpc_model_batch_seconds_count") == 3 * calls
    assert value(found, "grpc_model_queue_wait_seconds_count") == 3 * calls
    assert value(found, "grpc_model_in_flight_items") == 0
    assert value(found, "grpc_model_queued_items") == 0
    assert value(found, "grpc_model_model_loaded") == 1
    assert value(found, "grpc_model_model_available") == 1
    assert value(found, "grpc_model_worker_restarts_total") == 0
    assert (value(found, "grpc_model_model_load_seconds") or 0) > 0
    assert value(found, "grpc_model_model_load_duration_seconds_count") == 1
    assert value(found, "grpc_model_model_info", name="Hello World", version="0.1.0") == 1
    assert not [key for key in found if key[0] == "grpc_model_calls_total" and ("method", "Status") in key[1]]


def test_status_calls_and_queued_items_are_counted(serve_wrapper: ServerFactory, gate: Path) -> None:
    server = serve_wrapper("HeldByFile")
    server.client.status()
    with ThreadPoolExecutor(2) as pool:
        held = pool.submit(server.client.run, [{"a": b"1"}])
        eventually(lambda: value(metrics_of(server), "grpc_model_in_flight_items") == 1, "the item in the model")
        queued = pool.submit(server.client.run, [{"a": b"2"}, {"a": b"3"}])
        eventually(lambda: value(metrics_of(server), "grpc_model_queued_items") == 2, "two queued items")
        found = metrics_of(server)  # nothing moves while the model is held
        assert value(found, "grpc_model_in_flight_items") == 3
        assert value(found, "grpc_model_calls_total", method="Status", code="OK") == 1
        (gate / "release").touch()
        held.result(timeout=60)
        queued.result(timeout=60)
    found = metrics_of(server)
    assert value(found, "grpc_model_queued_items") == 0
    assert value(found, "grpc_model_in_flight_items") == 0
    assert value(found, "grpc_model_items_total", outcome="ok") == 3


def test_a_replaced_worker_is_counted(serve_wrapper: ServerFactory) -> None:
    server = serve_wrapper("Crashes", workers=1)
    assert not server.client.run([{"a": b"exit"}]).outputs[0].success
    eventually(lambda: value(metrics_of(server), "grpc_model_worker_restarts_total") == 1, "the restart to be counted")


def test_only_the_metrics_path_is_served(serve_wrapper: ServerFactory) -> None:
    server = serve_wrapper("Echo")
    assert server.running.metrics_port is not None
    with pytest.raises(urllib.error.HTTPError) as missing:
        scrape(server.running.metrics_port, "/")
    missing.value.close()
    assert missing.value.code == 404


def test_metrics_can_be_switched_off(serve_wrapper: ServerFactory) -> None:
    server = serve_wrapper("Echo", metrics=False)
    assert server.running.metrics_port is None
    server.client.status()
    assert server.client.run([{"a": b"1"}]).outputs[0].success


def test_a_metrics_port_in_use_stops_start_up_naming_the_setting(serve_wrapper: ServerFactory) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(ListenError, match=r"metrics_port: cannot serve metrics on 127\.0\.0\.1:"):
            serve_wrapper("Echo", metrics_port=taken.getsockname()[1])


def test_histogram_buckets_count_a_value_equal_to_a_bound_in_that_bucket() -> None:
    metrics = Metrics("model", "1.0.0")
    metrics.batch(2, 0.001)
    metrics.batch(3, 0.5)
    found = samples(generate_latest(metrics.registry).decode())
    assert [value(found, "grpc_model_batch_size_bucket", le=le) for le in ("1.0", "2.0", "4.0", "+Inf")] == [0, 1, 2, 2]
    assert value(found, "grpc_model_batch_size_sum") == 5
    assert value(found, "grpc_model_batch_seconds_bucket", le="0.001") == 1
    assert value(found, "grpc_model_batch_seconds_bucket", le="0.25") == 1
    assert value(found, "grpc_model_batch_seconds_count") == 2


def every_sample_name() -> set[str]:
    """The names a server exposes once each metric has seen something."""
    metrics = Metrics("model", "1.0.0")
    metrics.call("Run", "OK", 0.01)
    metrics.watch(queued=lambda: 0, loaded=lambda: 1, available=lambda: 1)
    metrics.model_loaded(0.5)
    return {name for name, _ in samples(generate_latest(metrics.registry).decode())}


def test_the_dashboard_queries_only_metrics_that_exist() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] >= 30
    assert dashboard["title"]
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert (variables["datasource"]["type"], variables["datasource"]["query"]) == ("datasource", "prometheus")
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    assert len(expressions) >= 8
    named = {name for expr in expressions for name in re.findall(r"\bgrpc_model_\w+", expr)}
    exposed = every_sample_name()
    assert sorted(named - exposed) == []
    assert {"grpc_model_calls_total", "grpc_model_queued_items", "grpc_model_batch_seconds_bucket"} <= named
    for panel in dashboard["panels"]:
        assert panel.get("datasource", {}).get("uid") == "${datasource}", panel["title"]


def test_v2_calls_are_counted_and_get_a_request_id(greeter_server: ServerThread) -> None:
    """V2 calls go through the same observation as ModzyModel's: counted by method and code, their items too."""
    stub = GRPCInferenceServiceStub(greeter_server.client.channel)
    tensor = v2.ModelInferRequest.InferInputTensor(
        name="input.txt", datatype="BYTES", shape=[1], contents=v2.InferTensorContents(bytes_contents=[b"Ada"])
    )
    _, call = stub.ModelInfer.with_call(
        v2.ModelInferRequest(model_name="hello-world", inputs=[tensor]),
        metadata=((REQUEST_ID_METADATA, "v2-call-7"),),
        timeout=60,
    )
    with pytest.raises(grpc.RpcError) as unknown:
        stub.ModelInfer(v2.ModelInferRequest(model_name="no-such-model", inputs=[tensor]), timeout=60)

    assert (REQUEST_ID_METADATA, "v2-call-7") in call.trailing_metadata()
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    found = metrics_of(greeter_server)
    assert value(found, "grpc_model_calls_total", method="ModelInfer", code="OK") == 1
    assert value(found, "grpc_model_calls_total", method="ModelInfer", code="NOT_FOUND") == 1
    assert value(found, "grpc_model_call_seconds_count", method="ModelInfer") == 2
    assert value(found, "grpc_model_items_total", outcome="ok") == 1
