"""The browser page in a real headless Chromium (Debian's `chromium` and `chromium-driver`), driven by selenium.

Nothing here downloads a browser: the test uses /usr/bin/chromium and /usr/bin/chromedriver, which
`scripts/dev.sh test` installs with apt where it runs as root, and is skipped where they are missing.
Set PAGE_SCREENSHOT=path to keep the screenshot of the page with a result (docs/images/page.png is one).
"""

import json
import os
import shutil
import struct
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from grpc_model.src.metadata import load_bundle, load_test_cases
from grpc_model.src.settings import Settings
from grpc_model.tests.conftest import GREETER, PATIENCE_SECONDS, TEST_VERSION, USER_MODEL_CLASS, ServerFactory
from grpc_model.tests.conftest import ServerThread as ServerThread

pytest.importorskip("fastapi", reason="the optional `http` dependency group is not installed")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium (dev group) is not installed")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1100,1500",
)  # fmt: skip
HTTP = {"http": "on", "http_port": 0}
BUNDLE = load_bundle(Settings().asset_bundle_dir)
CASES = load_test_cases(BUNDLE)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        pytest.skip(f"needs Debian's {CHROMIUM} and {CHROMEDRIVER}: apt-get install chromium chromium-driver")
    profile = tempfile.mkdtemp(prefix="page-test-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(CHROMEDRIVER))
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def open_page(browser: Any, server: ServerThread) -> None:
    assert server.running.http is not None
    browser.get(f"http://127.0.0.1:{server.running.http.port}/")
    WebDriverWait(browser, PATIENCE_SECONDS).until(
        lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-ready")
    )


def submit(browser: Any, files: dict[str, bytes], folder: Path, explain: bool = False, drift: bool = False) -> str:
    """Chooses the files, sets the toggles, runs, and returns the status line the page shows."""
    for name, data in files.items():
        (folder / name).write_bytes(data)
        browser.find_element(By.NAME, name).send_keys(str(folder / name))
    for toggle, wanted in (("explain", explain), ("detect_drift", drift)):
        if browser.find_element(By.ID, toggle).is_selected() != wanted:
            browser.find_element(By.ID, toggle).click()
    browser.find_element(By.ID, "run").click()
    status = browser.find_element(By.ID, "result-status")
    WebDriverWait(browser, PATIENCE_SECONDS).until(lambda _: status.text.startswith(("Succeeded", "Failed")))
    return str(status.text)


def shown_file(browser: Any, name: str) -> bytes:
    """An output as the page shows it: the text of its pretty-printed JSON, else the bytes its download link holds."""
    box = browser.find_element(By.CSS_SELECTOR, f'.output[data-file="{name}"]')
    pretty = box.find_elements(By.CSS_SELECTOR, "pre.json")
    if pretty:
        return str(pretty[0].text).encode()
    link = box.find_element(By.CSS_SELECTOR, "a.download")
    assert link.get_attribute("download") == name
    script = """const done = arguments[arguments.length - 1];
        fetch(arguments[0]).then((r) => r.arrayBuffer()).then((b) => done(Array.from(new Uint8Array(b))));"""
    return bytes(browser.execute_async_script(script, link.get_attribute("href")))


def test_the_page_shows_the_model_and_runs_a_test_case(serve: ServerFactory, browser: Any, tmp_path: Path) -> None:
    if not CASES:
        pytest.skip(f"the served bundle has no test cases under {BUNDLE.test_cases_dir}")
    case = CASES[0]
    open_page(browser, serve(model_class=USER_MODEL_CLASS, **HTTP))

    assert browser.find_element(By.ID, "model-name").text == BUNDLE.spec.name
    assert BUNDLE.version in browser.find_element(By.ID, "model-version").text
    for name, file in BUNDLE.spec.inputs.items():
        assert browser.find_element(By.NAME, name).get_attribute("accept") == ",".join(file.acceptedMediaTypes)
        assert (
            f"{name} {', '.join(file.acceptedMediaTypes)} {file.maxSize}" in browser.find_element(By.ID, "inputs").text
        )
    for name in BUNDLE.spec.outputs:
        assert name in browser.find_element(By.ID, "outputs").text

    status = submit(browser, case.inputs, tmp_path, case.explain, case.detect_drift)

    assert status == "Succeeded", browser.find_element(By.ID, "error").text
    assert case.differences({name: shown_file(browser, name) for name in case.expected}) == []
    screenshot = os.environ.get("PAGE_SCREENSHOT")
    browser.save_screenshot(screenshot or str(tmp_path / "page.png"))


def test_the_page_shows_a_failed_items_error(serve_greeter: ServerFactory, browser: Any, tmp_path: Path) -> None:
    open_page(browser, serve_greeter(**HTTP))

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
    open_page(browser, serve_wrapper("Echo", asset_bundle_dir=tmp_path / "bundle", **HTTP))

    image = png(3, 2)
    status = submit(browser, {"image.png": image, "data.bin": b"\x00\x01\x02"}, tmp_path, explain=True)

    assert status == "Succeeded"
    shown = browser.find_element(By.CSS_SELECTOR, '.output[data-file="image.png"] img')
    WebDriverWait(browser, PATIENCE_SECONDS).until(lambda _: shown.get_attribute("complete") == "true")
    assert (shown.get_attribute("naturalWidth"), shown.get_attribute("naturalHeight")) == ("3", "2")  # decoded
    assert shown_file(browser, "data.bin") == b"\x00\x01\x02"
    assert json.loads(shown_file(browser, "flags.json")) == {"detect_drift": False, "explain": True}
    assert "\n  " in browser.find_element(By.CSS_SELECTOR, '.output[data-file="flags.json"] pre').text  # pretty
