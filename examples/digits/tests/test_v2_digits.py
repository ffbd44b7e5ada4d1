"""The digits example's test cases (PNG images in, JSON out) through tritonclient's gRPC and HTTP clients over V2."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from grpc_model.src.metadata import load_bundle, load_test_cases, slug
from grpc_model.tests.conftest import ServerThread, loopback_settings
from grpc_model.tests.http_client import HTTP, HttpClient
from grpc_model.tests.v2_cases import case_problems

BUNDLES = Path(__file__).resolve().parent.parent / "asset_bundle"
BUNDLE = load_bundle(BUNDLES)
CASES = load_test_cases(BUNDLE)


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[ServerThread, HttpClient]]:
    server = ServerThread(loopback_settings(model_class="digits_model.model", asset_bundle_dir=BUNDLES, **HTTP))
    yield server, HttpClient(server)
    server.stop()


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_every_digits_case_through_tritonclient(servers: tuple[ServerThread, HttpClient], protocol: str) -> None:
    server, http = servers
    address = f"127.0.0.1:{server.running.port}" if protocol == "grpc" else http.url
    problems = case_problems(protocol, address, slug(BUNDLE.spec.name), CASES, batch_size=2)
    assert problems == {case.name: [] for case in CASES}
