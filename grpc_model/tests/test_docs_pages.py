"""/docs, /redoc and /openapi.json show model.yaml's text as text: markup in it never becomes a live tag."""

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from grpc_model.tests.conftest import GREETER, TEST_VERSION, ServerFactory
from grpc_model.tests.http_client import HTTP, get

pytest.importorskip("fastapi", reason="the optional `http` extra is not installed")

SCRIPT = "<script>alert(1)</script>"
IMAGE = '<img src=x onerror="alert(2)">'
LIVE = re.compile(r"<script\b[^>]*>\s*alert|<img\b[^>]*onerror", re.IGNORECASE)


@pytest.fixture
def hostile_bundle(tmp_path: Path) -> Path:
    spec = yaml.safe_load((GREETER / "model.yaml").read_text())
    spec["name"] = f"Hello {SCRIPT}</title>{SCRIPT}"
    spec["description"]["summary"] = f"Greets {IMAGE} & more"
    spec["inputs"]["input.txt"]["description"] = f"A name {IMAGE}{SCRIPT}"
    (tmp_path / TEST_VERSION).mkdir()
    for source in GREETER.iterdir():
        if source.is_file():
            (tmp_path / TEST_VERSION / source.name).write_bytes(source.read_bytes())
    (tmp_path / TEST_VERSION / "model.yaml").write_text(yaml.safe_dump(spec))
    return tmp_path


def descriptions(node: Any) -> Iterator[str]:
    """Every `description` of an OpenAPI document: ReDoc renders them as Markdown, HTML included."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "description" and isinstance(value, str):
                yield value
            else:
                yield from descriptions(value)
    elif isinstance(node, list):
        for value in node:
            yield from descriptions(value)


def test_model_text_is_inert_on_the_docs_pages_and_in_openapi(
    serve_wrapper: ServerFactory, hostile_bundle: Path
) -> None:
    server = serve_wrapper("Greeter", asset_bundle_dir=hostile_bundle, **HTTP)
    assert server.running.http is not None
    base = f"http://127.0.0.1:{server.running.http.port}"

    for page in ("/docs", "/redoc"):
        status, html = get(base + page)
        assert status == 200
        assert not LIVE.search(html.decode()), page
        assert "&lt;script&gt;" in html.decode()  # the name is still shown, as text
    assert b'<redoc untrusted-spec="true" ' in get(base + "/redoc")[1]  # and ReDoc sanitizes the rest
    status, body = get(base + "/openapi.json")
    schema = json.loads(body)
    found = list(descriptions(schema))
    assert any("A name" in text for text in found)  # the input's description is there, inert
    assert [text for text in found if LIVE.search(text)] == []
    assert schema["info"]["title"].startswith("Hello <script>")  # both pages show a title as text
    assert "&lt;img src=x" in schema["info"]["description"]
    assert "&amp; more" in schema["info"]["description"]
