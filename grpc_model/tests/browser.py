"""A real headless Chromium (Debian's `chromium` and `chromium-driver`) driven by selenium, for the page tests.

Nothing here downloads a browser: it uses /usr/bin/chromium and /usr/bin/chromedriver, which
`scripts/dev.sh test` installs with apt where it runs as root; the tests are skipped where they are missing.
"""

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from grpc_model.src.metadata import AssetBundle, TestCase
from grpc_model.tests.conftest import PATIENCE_SECONDS

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1100,1300",
)  # fmt: skip


@contextmanager
def chromium() -> Iterator[Any]:
    """A browser with a new empty profile; skips the test where Debian's chromium is not installed."""
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        pytest.skip(f"needs Debian's {CHROMIUM} and {CHROMEDRIVER}: apt-get install chromium chromium-driver")
    profile = tempfile.mkdtemp(prefix="page-test-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def open_page(browser: Any, port: int | None) -> None:
    """Loads the page and waits until it has shown the model's metadata."""
    assert port is not None, "the server serves no HTTP"
    browser.get(f"http://127.0.0.1:{port}/")
    body = browser.find_element(By.TAG_NAME, "body")
    WebDriverWait(browser, PATIENCE_SECONDS).until(lambda _: body.get_attribute("data-ready"))


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


def case_on_the_page(browser: Any, port: int | None, bundle: AssetBundle, case: TestCase, folder: Path) -> list[str]:
    """Checks the metadata the page shows, runs the case's inputs through its form: the differences from the
    expected outputs, as `grpc-model test` words them; empty when the page shows what is expected."""
    open_page(browser, port)
    assert browser.find_element(By.ID, "model-name").text == bundle.spec.name
    assert bundle.version in browser.find_element(By.ID, "model-version").text
    for name, file in bundle.spec.inputs.items():
        types = file.acceptedMediaTypes
        assert browser.find_element(By.NAME, name).get_attribute("accept") == ",".join(types)
        assert f"{name} {', '.join(types)} {file.maxSize}" in browser.find_element(By.ID, "inputs").text
    for name in bundle.spec.outputs:
        assert name in browser.find_element(By.ID, "outputs").text

    status = submit(browser, case.inputs, folder, case.explain, case.detect_drift)

    assert status == "Succeeded", browser.find_element(By.ID, "error").text
    return case.differences({name: shown_file(browser, name) for name in case.expected})
