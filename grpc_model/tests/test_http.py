"""HTTP beside gRPC: the multipart endpoint, the metadata, OpenAPI, the off switch, the drain."""

import asyncio
import base64
import http.client
import json
import os
import socket
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from grpc_model.src import web
from grpc_model.src.client import ModelClient
from grpc_model.src.server import ListenError, start_server
from grpc_model.src.settings import Settings
from grpc_model.tests.conftest import PATIENCE_SECONDS, ServerFactory, ServerThread, eventually, loopback_settings
from grpc_model.tests.http_client import HTTP, get, post_form, request
from grpc_model.tests.wrappers import Gated

pytest.importorskip("fastapi", reason="the optional `http` extra is not installed")
from grpc_model.src.web import app as web_app

STATIC = Path(web.__file__).parent / "static"


def url(server: ServerThread, path: str = "") -> str:
    assert server.running.http is not None
    return f"http://127.0.0.1:{server.running.http.port}{path}"


@pytest.fixture
def greeter_http(serve_greeter: ServerFactory) -> ServerThread:
    return serve_greeter(**HTTP)


def test_metadata_is_model_yaml_as_json(greeter_http: ServerThread) -> None:
    status, body = get(url(greeter_http, "/api/model"))

    model = json.loads(body)
    assert status == 200
    assert (model["name"], model["version"]) == ("Hello World", "0.1.0")
    assert model["inputs"]["input.txt"]["acceptedMediaTypes"] == ["text/plain"]
    assert model["outputs"]["results.json"]["mediaType"] == "application/json"


def test_an_item_runs_without_a_status_call_and_loads_the_model_for_grpc_too(greeter_http: ServerThread) -> None:
    assert greeter_http.client.health() == "NOT_SERVING"

    status, answer = post_form(url(greeter_http, "/api/model/run"), {"input.txt": b"I am Ann"})

    assert status == 200
    assert answer["success"] is True
    output = answer["outputs"]["results.json"]
    assert output["mediaType"] == "application/json"
    assert output["json"]["data"]["result"]["greeting"] == "Hello. Nice to meet you, Ann"
    assert greeter_http.client.health() == "SERVING"  # the shared load reported to gRPC health


def test_a_failed_item_is_422_with_its_error_and_a_bad_form_4xx(greeter_http: ServerThread) -> None:
    address = url(greeter_http, "/api/model/run")

    assert post_form(address, {"input.txt": b"\xff\xfe"}) == (
        422,
        {"success": False, "error": "input.txt: content is not text/plain"},
    )
    status, answer = post_form(address, {"other.txt": b"Hi"})
    assert status == 422
    assert "input.txt" in answer["error"]
    assert post_form(address, {"input.txt": b"Hi"}, {"explain": "maybe"}) == (
        400,
        {"detail": "explain: expected true or false, got 'maybe'"},
    )
    not_a_form = urllib.request.Request(
        address, data=b'{"input.txt": "Hi"}', headers={"Content-Type": "application/json"}
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(not_a_form, timeout=60)
    assert refused.value.code == 415
    assert "send multipart/form-data" in json.loads(refused.value.read())["detail"]


def test_flags_reach_the_model_and_binary_outputs_come_in_base64(serve_wrapper: ServerFactory) -> None:
    server = serve_wrapper("Echo", **HTTP)

    status, answer = post_form(url(server, "/api/model/run"), {"a": b"\x00\x01"}, {"detect_drift": "true"})

    assert status == 200
    assert answer["outputs"]["a"] == {"mediaType": "application/octet-stream", "base64": "AAE="}
    assert answer["outputs"]["flags.json"]["json"] == {"detect_drift": True, "explain": False}
    assert base64.b64decode(answer["outputs"]["a"]["base64"]) == b"\x00\x01"


def test_an_oversized_body_is_413_and_the_server_goes_on(serve_greeter: ServerFactory) -> None:
    server = serve_greeter(max_receive_message_bytes=1000, **HTTP)
    address = url(server, "/api/model/run")

    status, answer = post_form(address, {"input.txt": b"a " * 1000})

    assert status == 413
    assert "max_receive_message_bytes" in answer["detail"]
    assert post_form(address, {"input.txt": b"Hi Bo"})[0] == 200


def test_openapi_describes_the_form_and_its_docs_page_needs_no_cdn(greeter_http: ServerThread) -> None:
    schema = json.loads(get(url(greeter_http, "/openapi.json"))[1])
    form = schema["paths"]["/api/model/run"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["required"] == ["input.txt"]
    assert form["properties"]["input.txt"]["format"] == "binary"
    assert "text/plain" in form["properties"]["input.txt"]["description"]

    status, docs = get(url(greeter_http, "/docs"))
    assert status == 200
    assert b"://" not in docs
    assert get(url(greeter_http, "/static-offline-docs/swagger-ui-bundle.js"))[0] == 200


def test_the_page_and_its_assets_are_served_and_load_nothing_from_elsewhere(greeter_http: ServerThread) -> None:
    status, page = get(url(greeter_http, "/"))
    assert status == 200
    assert b'src="page/page.js"' in page
    for asset in sorted(STATIC.iterdir()):
        assert get(url(greeter_http, f"/page/{asset.name}"))[0] == 200
        assert "://" not in asset.read_text(), f"{asset.name} refers to another site"


def test_http_off_serves_grpc_alone(serve_greeter: ServerFactory) -> None:
    server = serve_greeter(http="off")
    assert server.running.http is None
    assert server.client.status().status_code == 200


def test_http_on_without_its_group_stops_start_up_naming_the_group(
    monkeypatch: pytest.MonkeyPatch, greeter_bundle: Path
) -> None:
    monkeypatch.setattr(web, "missing_http_modules", lambda: ["uvicorn"])
    assert web.serves_http("auto") is False
    settings = Settings(host="127.0.0.1", port=0, asset_bundle_dir=greeter_bundle, http="on", http_port=0)

    with pytest.raises(ListenError, match=r"uvicorn cannot be imported: install the optional `http` extra"):
        asyncio.run(start_server(settings))


def test_a_busy_http_port_stops_start_up_naming_the_setting(greeter_bundle: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        settings = Settings(
            host="127.0.0.1",
            port=0,
            asset_bundle_dir=greeter_bundle,
            model_class="grpc_model.tests.wrappers:Greeter",
            http="on",
            http_port=port,
        )
        with pytest.raises(ListenError, match=rf"http_port: cannot listen on 127\.0\.0\.1:{port}: .*--http-port"):
            asyncio.run(start_server(settings))


def test_stop_lets_an_http_call_in_flight_finish_and_refuses_new_ones(serve_wrapper: ServerFactory) -> None:
    Gated.reset()
    server = serve_wrapper("Gated", **HTTP)
    address = url(server, "/api/model/run")
    answers: list[tuple[int, Any]] = []
    held = threading.Thread(target=lambda: answers.append(post_form(address, {"a": b"hold"})))
    held.start()
    assert Gated.holding.wait(timeout=60)

    stopping = threading.Thread(target=server.stop)
    stopping.start()

    def refused() -> bool:
        try:
            socket.create_connection(("127.0.0.1", int(address.split(":")[2].split("/")[0])), timeout=5).close()
        except ConnectionRefusedError:
            return True
        return False

    eventually(refused, "the HTTP port to refuse new connections while a call is in flight")
    Gated.release.set()
    held.join(timeout=60)
    stopping.join(timeout=60)
    assert answers == [
        (200, {"success": True, "outputs": {"a": {"mediaType": "application/octet-stream", "base64": "aG9sZA=="}}})
    ]


def test_the_v2_rest_routes_are_served_beside_the_page(greeter_http: ServerThread) -> None:
    """The wiring includes the V2 router: a KServe client finds the model on the server's own HTTP port."""
    status, body = get(url(greeter_http, "/v2/models/hello-world/ready"))

    assert (status, json.loads(body)) == (200, {"name": "hello-world", "ready": True})
    assert get(url(greeter_http, "/"))[0] == 200


def test_every_request_gets_its_id_back(greeter_http: ServerThread) -> None:
    sent = request(url(greeter_http, "/api/model"), headers={"x-request-id": "web-call-9"})
    generated = request(url(greeter_http, "/v2/health/live"))

    assert sent[1]["x-request-id"] == "web-call-9"
    assert len(generated[1]["x-request-id"]) > 8


def _server_side_socket(local_port: int, peer_port: int) -> socket.socket:
    """The server's end of a loopback connection, found among this process's descriptors (the server is in-process)."""
    for name in os.listdir("/proc/self/fd"):
        try:
            candidate = socket.socket(fileno=os.dup(int(name)))
        except OSError:
            continue
        try:
            if candidate.getsockname()[1] == local_port and candidate.getpeername()[1] == peer_port:
                return candidate
        except (OSError, IndexError, TypeError):
            pass
        candidate.close()
    raise AssertionError(f"no server socket on port {local_port} connected to port {peer_port}")


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="finds the server's socket through Linux's /proc")
def test_kept_alive_connections_send_answers_without_waiting_for_an_ack(greeter_http: ServerThread) -> None:
    """Without TCP_NODELAY on the accepted socket, each answer on a reused connection waited ~40 ms (Nagle's algorithm
    against the client's delayed ACK): every REST client paid it. Checked on the connection itself, not by timing."""
    assert greeter_http.running.http is not None
    port = greeter_http.running.http.port
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        for _ in range(2):  # the second request reuses the connection
            connection.request("GET", "/v2/health/live")
            assert connection.getresponse().read() is not None
        assert connection.sock is not None
        server_end = _server_side_socket(port, connection.sock.getsockname()[1])
        with server_end:
            assert server_end.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        connection.close()


def test_grpc_answers_serving_while_the_http_app_loads(greeter_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """FastAPI and uvicorn load on a thread once gRPC serves (their imports are most of a cold start): health says
    SERVING before the HTTP app exists, and a request sent to the HTTP port meanwhile is answered once it does."""
    building, release = threading.Event(), threading.Event()
    create_app = web_app.create_app

    def gated(*args: Any, **kwargs: Any) -> Any:
        building.set()
        assert release.wait(PATIENCE_SECONDS)
        return create_app(*args, **kwargs)

    monkeypatch.setattr(web_app, "create_app", gated)
    port, http_port = _free_port(), _free_port()
    settings = loopback_settings(
        port=port,
        http="on",
        http_port=http_port,
        asset_bundle_dir=greeter_bundle,
        model_class="grpc_model.tests.wrappers:Greeter",
        load_model_at_startup=True,
    )
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    starting = asyncio.run_coroutine_threadsafe(start_server(settings), loop)
    try:
        assert building.wait(PATIENCE_SECONDS)
        with ModelClient(f"127.0.0.1:{port}", timeout=PATIENCE_SECONDS) as client:
            health = client.health()
        early = socket.create_connection(("127.0.0.1", http_port), timeout=PATIENCE_SECONDS)
        early.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        waiting = not starting.done()
        release.set()
        with early:
            answer = early.makefile("rb").read()
    finally:
        release.set()
        running = starting.result(PATIENCE_SECONDS)
        asyncio.run_coroutine_threadsafe(running.stop(), loop).result(PATIENCE_SECONDS)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(PATIENCE_SECONDS)
        loop.close()

    assert (health, waiting) == ("SERVING", True)
    assert answer.startswith(b"HTTP/1.1 200")
    assert answer.endswith(b'{"live":true}')


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
