"""Requests to a test server's HTTP port (the page, the multipart endpoint, V2 REST), as any HTTP client sends them."""

import json
import ssl
import urllib.error
import urllib.request
import uuid
from typing import Any

from grpc_model.tests.conftest import PATIENCE_SECONDS, ServerThread

HTTP = {"http": "on", "http_port": 0}
"""The settings that serve HTTP in a test: on, whatever the environment says, on a port the OS picks."""


def request(
    address: str,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (names in lower case) and body of one request; an error status is returned, not raised.

    `context` trusts the CA of an HTTPS server."""
    sent = urllib.request.Request(address, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(sent, timeout=PATIENCE_SECONDS, context=context) as response:
            return response.status, _lower(response.headers), response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, _lower(error.headers), error.read()


def get(address: str) -> tuple[int, bytes]:
    status, _, body = request(address)
    return status, body


def post_form(
    address: str,
    files: dict[str, bytes],
    fields: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
) -> tuple[int, Any]:
    """A multipart/form-data POST as a browser or `curl -F` sends it; the status and the JSON answer."""
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{name}"\r\n'
        f"Content-Type: application/octet-stream\r\n\r\n".encode()
        + data
        + b"\r\n"
        for name, data in files.items()
    ]
    parts += [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in (fields or {}).items()
    ]
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    content_type = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    status, _, answer = request(address, "POST", body, {**content_type, **(headers or {})}, context)
    return status, json.loads(answer)


class HttpClient:
    """The HTTP port of a test server started with `HTTP`."""

    def __init__(self, server: ServerThread) -> None:
        assert server.running.http is not None, "start the server with the settings in HTTP"
        self.url = f"127.0.0.1:{server.running.http.port}"
        """HOST:PORT, as tritonclient takes it."""

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        return request(f"http://{self.url}{path}", method, body, headers)

    def json(self, method: str, path: str, document: Any = None) -> tuple[int, Any]:
        body = None if document is None else json.dumps(document).encode()
        status, _, content = self.request(method, path, body, {"Content-Type": "application/json"})
        return status, json.loads(content)


def _lower(headers: Any) -> dict[str, str]:
    """Header names in lower case, as HTTP/1.1 servers may send them in any case."""
    return {name.lower(): value for name, value in headers.items()}
