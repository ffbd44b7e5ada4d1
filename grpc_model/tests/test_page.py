"""The browser page in a real headless Chromium (browser.py): a test case, a failing item, images and downloads.

Set PAGE_SCREENSHOT=path to keep the screenshot of the page with a result (docs/images/page.png is one).
"""

import json
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

pytest.importorskip("fastapi", reason="the optional `http` extra is not installed")
pytest.importorskip("selenium", reason="selenium (dev group) is not installed")

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from grpc_model.src.metadata import load_bundle, load_test_cases
from grpc_model.src.settings import Settings
from grpc_model.tests.browser import case_on_the_page, chromium, open_page, shown_file, submit
from grpc_model.tests.conftest import (
    GREETER,
    PATIENCE_SECONDS,
    TEST_VERSION,
    USER_MODEL_CLASS,
    ServerFactory,
    ServerThread,
)

HTTP = {"http": "on", "http_port": 0}
BUNDLE = load_bundle(Settings().asset_bundle_dir)
CASES = load_test_cases(BUNDLE)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as driver:
        yield driver


def http_port(server: ServerThread) -> int | None:
    return None if server.running.http is None else server.running.http.port


def test_the_page_shows_the_model_and_runs_a_test_case(serve: ServerFactory, browser: Any, tmp_path: Path) -> None:
    if not CASES:
        pytest.skip(f"the served bundle has no test cases under {BUNDLE.test_cases_dir}")
    server = serve(model_class=USER_MODEL_CLASS, **HTTP)

    assert case_on_the_page(browser, http_port(server), BUNDLE, CASES[0], tmp_path) == []
    browser.save_screenshot(os.environ.get("PAGE_SCREENSHOT") or str(tmp_path / "page.png"))


def test_the_page_shows_a_failed_items_error(serve_greeter: ServerFactory, browser: Any, tmp_path: Path) -> None:
    open_page(browser, http_port(serve_greeter(**HTTP)))

    status = submit(browser, {"input.txt": b"\xff\xfe"}, tmp_path)

    assert status == "Failed (HTTP 422)"
    assert browser.find_element(By.ID, "error").text == "input.txt: content is not text/plain"
    assert browser.find_elements(By.CSS_SELECTOR, ".output") == []


def png(width: int, height: int) -> bytes:
    rows = b"".join(b"\x00" + b"\xd0\x30\x30" * width for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def test_the_page_displays_images_pretty_prints_json_and_offers_other_files(
    serve_wrapper: ServerFactory, browser: Any, tmp_path: Path
) -> None:
    spec = yaml.safe_load((GREETER / "model.yaml").read_text())
    spec["inputs"] = {
        "image.png": {"acceptedMediaTypes": ["image/png"], "maxSize": "1M"},
        "data.bin": {"acceptedMediaTypes": ["application/octet-stream"], "maxSize": "1M"},
    }
    spec["outputs"] = {
        "image.png": {"mediaType": "image/png", "maxSize": "1M"},
        "data.bin": {"mediaType": "application/octet-stream", "maxSize": "1M"},
    }
    (tmp_path / "bundle" / TEST_VERSION).mkdir(parents=True)
    (tmp_path / "bundle" / TEST_VERSION / "model.yaml").write_text(yaml.safe_dump(spec))
    open_page(browser, http_port(serve_wrapper("Echo", asset_bundle_dir=tmp_path / "bundle", **HTTP)))

    status = submit(browser, {"image.png": png(3, 2), "data.bin": b"\x00\x01\x02"}, tmp_path, explain=True)

    assert status == "Succeeded"
    shown = browser.find_element(By.CSS_SELECTOR, '.output[data-file="image.png"] img')
    WebDriverWait(browser, PATIENCE_SECONDS).until(lambda _: shown.get_attribute("complete") == "true")
    assert (shown.get_attribute("naturalWidth"), shown.get_attribute("naturalHeight")) == ("3", "2")  # decoded
    assert shown_file(browser, "data.bin") == b"\x00\x01\x02"
    assert json.loads(shown_file(browser, "flags.json")) == {"detect_drift": False, "explain": True}
    assert "\n  " in browser.find_element(By.CSS_SELECTOR, '.output[data-file="flags.json"] pre').text  # pretty
