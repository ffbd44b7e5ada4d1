"""Clients written by others: tritonclient's gRPC and HTTP clients run the served bundle's test cases over V2.

They test the model in model_lib/ (or GRPC_MODEL_MODEL_CLASS), as test_functional.py does over ModzyModel.
"""

from collections.abc import Iterator

import pytest

from grpc_model.src.metadata import load_bundle, load_test_cases, slug
from grpc_model.src.settings import Settings
from grpc_model.tests.conftest import USER_MODEL_CLASS, ServerFactory, ServerThread, loopback_settings
from grpc_model.tests.http_client import HTTP, HttpClient
from grpc_model.tests.v2_cases import case_problems, tritonclient_calls

BUNDLE = load_bundle(Settings().asset_bundle_dir)
CASES = load_test_cases(BUNDLE)
MODEL = slug(BUNDLE.spec.name)


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[ServerThread, HttpClient]]:
    """One server of the user's model, V2 on its gRPC and HTTP ports; no Status call: V2 clients make none."""
    server = ServerThread(loopback_settings(model_class=USER_MODEL_CLASS, **HTTP))
    yield server, HttpClient(server)
    server.stop()


def url(servers: tuple[ServerThread, HttpClient], protocol: str) -> str:
    server, http = servers
    return f"127.0.0.1:{server.running.port}" if protocol == "grpc" else http.url


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize("batch_size", [1, 3])
def test_every_case_through_tritonclient(
    servers: tuple[ServerThread, HttpClient], protocol: str, batch_size: int
) -> None:
    if not CASES:  # a model just started with `grpc-model init`: `grpc-model test` requires some
        pytest.skip(f"the served bundle has no test cases under {BUNDLE.test_cases_dir} yet")
    problems = case_problems(protocol, url(servers, protocol), MODEL, CASES, batch_size)
    assert problems == {case.name: [] for case in CASES}


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_tritonclient_hears_errors_by_name(servers: tuple[ServerThread, HttpClient], protocol: str) -> None:
    wrong_name = {"inputs": {"not-an-input": ["eA=="]}}
    too_many = {"inputs": {name: ["eA=="] * (BUNDLE.spec.features.maxBatchSize + 1) for name in BUNDLE.spec.inputs}}
    answers = tritonclient_calls(protocol, url(servers, protocol), MODEL, [wrong_name, too_many])
    assert "the model has no input 'not-an-input'" in str(answers[0]["error"])
    assert "over the model's maxBatchSize" in str(answers[1]["error"])


def test_greeter_partial_results_through_tritonclient(serve_greeter: ServerFactory) -> None:
    server = serve_greeter(**HTTP)
    call = {"inputs": {"input.txt": ["QWRh", "IA=="]}, "parameters": {"partial_results": True}, "read": ["error"]}
    answers = {
        protocol: tritonclient_calls(protocol, address, "hello-world", [call])[0]
        for protocol, address in (("grpc", f"127.0.0.1:{server.running.port}"), ("http", HttpClient(server).url))
    }
    for answer in answers.values():
        errors = answer["outputs"]["error"]
        assert errors[0] == ""
        assert errors[1].startswith("VmFsdWVFcnJvcj")  # base64 of "ValueError"
