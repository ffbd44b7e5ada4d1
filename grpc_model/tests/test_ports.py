"""The HTTP and metrics ports against hostile clients: a bound on open connections, idle and read timeouts, and
the metrics port's TLS and token."""

import errno
import socket
import ssl
import urllib.error
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from grpc_model.src.security.connections import connection_cap
from grpc_model.tests.certificates import TestPKI, make_pki
from grpc_model.tests.conftest import PATIENCE_SECONDS, ServerFactory, ServerThread, eventually
from grpc_model.tests.http_client import HTTP, request
from grpc_model.tests.test_security import unused_port as unused_port  # the fixture

pytest.importorskip("fastapi", reason="the optional `http` extra is not installed")

TOKEN = "metrics-token-123"
SMALL = {"http_max_connections": 3, "http_read_timeout_seconds": 0.3, "http_idle_timeout_seconds": 1}
"""Small caps and timeouts, so that a test reaches them; the tests poll for their effect, never time it."""


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


def port_of(server: ServerThread, which: str) -> int:
    if which == "http":
        assert server.running.http is not None
        return server.running.http.port
    assert server.running.metrics_port is not None
    return server.running.metrics_port


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=PATIENCE_SECONDS)
    return sock


def closed_by_server(sock: socket.socket) -> bool:
    """Waits (bounded by the socket's timeout) until the server closes the connection; False if it answers."""
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True


def answers(port: int, path: str) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=PATIENCE_SECONDS) as response:
        return int(response.status)


PATHS = {"http": "/v2/health/live", "metrics": "/metrics"}


@pytest.fixture(params=["h11", "httptools"])
def small_ports(
    serve_greeter: ServerFactory, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> ServerThread:
    """A server with small caps and timeouts, on each of uvicorn's two parsers."""
    from grpc_model.src.web import deadlines

    if request.param == "httptools":
        pytest.importorskip("httptools", reason="uvicorn uses h11 alone where httptools is not installed")
    monkeypatch.setattr(
        deadlines, "PARSER", getattr(deadlines, "TimedH11" if request.param == "h11" else "TimedHttpTools")
    )
    return serve_greeter(**HTTP, **SMALL)


LONG = {"http_max_connections": 3, "http_read_timeout_seconds": 3600, "http_idle_timeout_seconds": 3600}
"""A small cap and timeouts far beyond the tests' patience: a connection closed within it was closed by the cap."""


@pytest.mark.parametrize("which", ["http", "metrics"])
def test_connections_past_the_cap_are_closed_while_grpc_answers(serve_greeter: ServerFactory, which: str) -> None:
    server = serve_greeter(**HTTP, **LONG)
    port = port_of(server, which)
    with ExitStack() as stack:
        held = [stack.enter_context(connect(port)) for _ in range(3)]  # accepted first: the kernel queue is FIFO
        extra = [stack.enter_context(connect(port)) for _ in range(5)]

        assert all(closed_by_server(sock) for sock in extra)
        assert server.client.status().status_code == 200  # gRPC is not starved
        for sock in held:  # the held ones were the counted ones, and are still served
            sock.sendall(f"GET {PATHS[which]} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            assert sock.recv(12) == b"HTTP/1.1 200"
        held[0].close()  # (the metrics port closed all three after answering)
        eventually(lambda: _answered_once(port, PATHS[which]), f"a new connection to the {which} port is served")


def _answered_once(port: int, path: str) -> bool | None:
    try:
        return answers(port, path) == 200 or None
    except (OSError, urllib.error.URLError):
        return None


HALF_SENT = [
    pytest.param("http", b"", id="http-nothing"),
    pytest.param("http", b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n", id="http-half-a-head"),
    pytest.param(
        "http",
        b'POST /v2/models/hello-world/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"inputs"',
        id="http-half-a-body",
    ),
    pytest.param("metrics", b"", id="metrics-nothing"),
    pytest.param("metrics", b"GET /metrics HTTP/1.1\r\nHost: x\r\n", id="metrics-half-a-head"),
]


@pytest.mark.parametrize(("which", "sent"), HALF_SENT)
def test_a_connection_that_stalls_is_closed_without_an_answer(
    small_ports: ServerThread, which: str, sent: bytes
) -> None:
    with connect(port_of(small_ports, which)) as sock:
        sock.sendall(sent)
        assert closed_by_server(sock)


def test_a_kept_alive_connection_is_closed_when_idle(small_ports: ServerThread) -> None:
    with connect(port_of(small_ports, "http")) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):  # until the server closes: the socket's timeout bounds the wait
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200")


def test_a_body_sent_in_pieces_is_answered(small_ports: ServerThread) -> None:
    body = b'{"inputs": [{"name": "input.txt", "datatype": "BYTES", "shape": [1], "data": ["Ada"]}]}'
    with connect(port_of(small_ports, "http")) as sock:
        head = f"POST /v2/models/hello-world/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
        sock.sendall(head.encode())
        for start in range(0, len(body), 20):
            sock.sendall(body[start : start + 20])
        assert sock.recv(12) == b"HTTP/1.1 200"


def test_a_request_head_past_the_limit_is_refused(small_ports: ServerThread) -> None:
    """httptools kept every byte of a head (400 MB of headers took 400 MB): each parser stops at h11's 16 KiB."""
    line = b"X-Padding: " + b"a" * 1000 + b"\r\n"
    sent = 0
    with connect(port_of(small_ports, "http")) as sock:
        try:
            sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n")
            while sent < 4 * 2**20:  # far past the limit, and bounded if the server keeps reading
                sock.sendall(line)
                sent += len(line)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused while sending
        try:
            answer = sock.recv(65536)
        except ConnectionResetError:  # the server closed with our bytes unread: the reset may overtake its answer
            answer = b"reset"
    # Before the limit, httptools read all 4 MB and closed at the read timeout without an answer: b"".
    assert answer.startswith(b"HTTP/1.1 400") or answer == b"reset", answer[:200]


HTTP2_PREFACE = (
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
    + b"\x00\x00\x00\x04\x01\x00\x00\x00\x00"
)
"""HTTP/2's preface, an empty SETTINGS and the ACK of the server's (gRPC closes a connection that never sends it)."""


@pytest.mark.parametrize("which", ["grpc", "health"])
def test_grpc_ports_close_connections_past_their_cap(
    serve_greeter: ServerFactory, monkeypatch: pytest.MonkeyPatch, unused_port: int, which: str
) -> None:
    """Connections that sent HTTP/2's preface and then nothing were held: 1,100 to the health port (no
    credential needed) took the open files and the gRPC port stopped answering. Each gRPC port now has a cap."""
    from grpc_model.src import listening

    share = connection_cap(0, 1) // 3  # the open-file limit as the cap counts it, by 3
    monkeypatch.setattr(listening, "GRPC_SHARE_OF_OPEN_FILES", share)  # the gRPC port's cap: 3 or a little more
    server = serve_greeter(health_port=unused_port, http_max_connections=3)
    assert server.client.status().status_code == 200  # the client's connection counts on the gRPC port
    port = server.running.port if which == "grpc" else unused_port
    cap = connection_cap(0, share) - 1 if which == "grpc" else 3
    with ExitStack() as stack:
        sockets = [stack.enter_context(connect(port)) for _ in range(cap + 3)]
        for sock in sockets:
            sock.sendall(HTTP2_PREFACE)
            sock.setblocking(False)
        closed: set[socket.socket] = set()

        def three_closed() -> bool | None:  # any three: gRPC core may finish the handshakes in any order
            closed.update(sock for sock in sockets if sock not in closed and _closed_by_now(sock))
            return len(closed) >= 3 or None

        eventually(three_closed, "the connections past the cap are closed")
        assert server.client.status().status_code == 200  # the client's connection, the first, is served
        three_closed()
        assert len(closed) == 3


def _closed_by_now(sock: socket.socket) -> bool:
    """Whether the server has closed the connection, reading (and dropping) what it sent: SETTINGS, a GOAWAY."""
    try:
        while sock.recv(65536):
            pass
    except BlockingIOError:
        return False
    except ConnectionResetError:
        pass
    return True


def test_the_default_cap_is_an_eighth_of_the_open_file_limit() -> None:
    import resource

    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert connection_cap(0) == max(1, min(soft, 2**20) // 8)
    assert connection_cap(5) == 5


# The metrics port's protection follows the gRPC port's


def scrape(url: str, headers: dict[str, str] | None = None, context: ssl.SSLContext | None = None) -> int:
    """The status of a scrape, after checking that a 200 holds metrics and a 401 says why."""
    status, answer_headers, body = request(url, headers=headers, context=context)
    if status == 401:
        assert answer_headers["www-authenticate"] == "Bearer"
        assert b"bearer token" in body
    else:
        assert b"grpc_model_model_info" in body
    return status


def test_with_tokens_on_metrics_need_the_token(serve_greeter: ServerFactory) -> None:
    server = serve_greeter(auth_token=TOKEN)
    url = f"http://127.0.0.1:{port_of(server, 'metrics')}/metrics"

    assert scrape(url) == 401
    assert scrape(url, {"Authorization": "Bearer wrong"}) == 401
    assert scrape(url, {"Authorization": f"Bearer {TOKEN}"}) == 200


def tls(pki: TestPKI, mutual: bool = False) -> dict[str, Any]:
    settings = {"tls_cert": str(pki.server.cert), "tls_key": str(pki.server.key)}
    return {**settings, "tls_client_ca": str(pki.client_ca)} if mutual else settings


def trusting(pki: TestPKI, client: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.server_ca))
    if client is not None:
        context.load_cert_chain(str(client[0]), str(client[1]))
    return context


def test_with_tls_on_metrics_are_served_over_tls_only(serve_greeter: ServerFactory, pki: TestPKI) -> None:
    server = serve_greeter(**tls(pki))
    port = port_of(server, "metrics")

    with pytest.raises((ConnectionError, urllib.error.URLError)):
        scrape(f"http://127.0.0.1:{port}/metrics")
    assert scrape(f"https://127.0.0.1:{port}/metrics", context=trusting(pki)) == 200


def test_with_mutual_tls_metrics_need_a_client_certificate(serve_greeter: ServerFactory, pki: TestPKI) -> None:
    server = serve_greeter(**tls(pki, mutual=True), auth_token=TOKEN)
    url = f"https://127.0.0.1:{port_of(server, 'metrics')}/metrics"
    bearer = {"Authorization": f"Bearer {TOKEN}"}

    with pytest.raises((OSError, urllib.error.URLError)):  # the handshake fails: ssl.SSLError is an OSError
        scrape(url, bearer, trusting(pki))
    with pytest.raises((OSError, urllib.error.URLError)):
        scrape(url, bearer, trusting(pki, (pki.stranger.cert, pki.stranger.key)))
    assert scrape(url, context=trusting(pki, (pki.client.cert, pki.client.key))) == 401
    assert scrape(url, bearer, trusting(pki, (pki.client.cert, pki.client.key))) == 200


def test_metrics_auth_open_keeps_metrics_in_plaintext_without_a_token(
    serve_greeter: ServerFactory, pki: TestPKI
) -> None:
    server = serve_greeter(**tls(pki), auth_token=TOKEN, metrics_auth="open")

    assert scrape(f"http://127.0.0.1:{port_of(server, 'metrics')}/metrics") == 200


def test_a_tls_handshake_that_stalls_counts_against_the_cap_and_is_closed(
    serve_greeter: ServerFactory, pki: TestPKI
) -> None:
    server = serve_greeter(**HTTP, **SMALL, **tls(pki))
    for which in ("http", "metrics"):
        port = port_of(server, which)
        with ExitStack() as stack:
            silent = [stack.enter_context(connect(port)) for _ in range(3)]  # no ClientHello
            extra = stack.enter_context(connect(port))
            assert closed_by_server(extra)
            assert all(closed_by_server(sock) for sock in silent)  # the handshake times out
        eventually(
            lambda port=port, which=which: _tls_answered_once(port, PATHS[which], pki),  # type: ignore[misc]
            f"the {which} port serves again",
        )


def _tls_answered_once(port: int, path: str, pki: TestPKI) -> bool | None:
    try:
        with urllib.request.urlopen(
            f"https://127.0.0.1:{port}{path}", timeout=PATIENCE_SECONDS, context=trusting(pki)
        ) as response:
            return response.status == 200 or None
    except (OSError, urllib.error.URLError) as error:
        if isinstance(error, OSError) and error.errno not in (None, errno.ECONNRESET):
            raise
        return None


def test_a_client_that_does_not_read_its_answer_is_cut(serve_greeter: ServerFactory) -> None:
    """With room for one connection, a client that asks for a large answer and never reads it gives its place up.

    Small socket buffers on both sides (accepted sockets inherit the listening socket's), so that the answer
    stays in the server's own buffer and not in the kernel's."""
    server = serve_greeter(
        **HTTP, http_max_connections=1, http_read_timeout_seconds=0.3, http_idle_timeout_seconds=3600
    )
    assert server.running.http is not None
    server.running.http.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    port = server.running.http.port
    with socket.socket() as never_reads:
        never_reads.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        never_reads.connect(("127.0.0.1", port))
        never_reads.sendall(b"GET /static-offline-docs/swagger-ui-bundle.js HTTP/1.1\r\nHost: x\r\n\r\n")

        eventually(lambda: _answered_once(port, PATHS["http"]), "the HTTP port serves another client")
