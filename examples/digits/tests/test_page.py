"""The digits example in the browser page: an image test case uploaded in headless Chromium, its classes shown."""

from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the optional `http` extra is not installed")
pytest.importorskip("selenium", reason="selenium (dev group) is not installed")

from grpc_model.src.metadata import load_bundle, load_test_cases
from grpc_model.tests.browser import case_on_the_page, chromium
from grpc_model.tests.conftest import ServerThread, loopback_settings
from grpc_model.tests.http_client import HTTP

BUNDLES = Path(__file__).resolve().parent.parent / "asset_bundle"


def test_the_page_classifies_an_uploaded_digit(tmp_path: Path) -> None:
    bundle = load_bundle(BUNDLES)
    case = next(case for case in load_test_cases(bundle) if "-png-rgb-" in case.name)
    with chromium() as browser:
        server = ServerThread(loopback_settings(model_class="digits_model.model", asset_bundle_dir=BUNDLES, **HTTP))
        try:
            assert server.running.http is not None
            assert case_on_the_page(browser, server.running.http.port, bundle, case, tmp_path) == []
        finally:
            server.stop()
