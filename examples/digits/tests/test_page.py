"""The digits example in the browser page: an image test case uploaded in headless Chromium, its classes shown."""

from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the optional `http` dependency group is not installed")
pytest.importorskip("selenium", reason="selenium (dev group) is not installed")

from grpc_model.src.metadata import load_bundle, load_test_cases
from grpc_model.src.settings import Settings
from grpc_model.tests.browser import case_on_the_page, chromium
from grpc_model.tests.conftest import ServerThread

BUNDLES = Path(__file__).resolve().parent.parent / "asset_bundle"


def test_the_page_classifies_an_uploaded_digit(tmp_path: Path) -> None:
    bundle = load_bundle(BUNDLES)
    case = next(case for case in load_test_cases(bundle) if "-png-rgb-" in case.name)
    with chromium() as browser:
        server = ServerThread(
            Settings(
                host="127.0.0.1", port=0, model_class="digits_model.model", asset_bundle_dir=BUNDLES, http="on",
                http_port=0, shutdown_grace_seconds=5,
            )
        )  # fmt: skip
        try:
            assert server.running.http is not None
            assert case_on_the_page(browser, server.running.http.port, bundle, case, tmp_path) == []
        finally:
            server.stop()
