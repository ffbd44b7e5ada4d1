"""The V2 REST routes on uvicorn, in the event loop of a test's server, on 127.0.0.1 and a port of its own.

Test fixture code: the HTTP app that serves them in production is the wiring's, which includes the router.
"""

import asyncio
import json
import urllib.error
import urllib.request
from typing import Any

import uvicorn
from fastapi import FastAPI

from grpc_model.src.v2.rest import v2_router
from grpc_model.tests.conftest import PATIENCE_SECONDS, ServerThread


class HttpServer:
    def __init__(self, server: ServerThread) -> None:
        app = FastAPI()
        app.include_router(v2_router(server.running.v2))
        self.grpc = server
        self.uvicorn = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        self.serving = asyncio.run_coroutine_threadsafe(self.uvicorn.serve(), server.loop)
        server.call(self._started())
        self.port = self.uvicorn.servers[0].sockets[0].getsockname()[1]
        self.url = f"127.0.0.1:{self.port}"

    async def _started(self) -> None:
        async with asyncio.timeout(PATIENCE_SECONDS):
            while not self.uvicorn.started:
                if self.serving.done():
                    self.serving.result()  # raises why uvicorn could not start
                await asyncio.sleep(0.01)

    def stop(self) -> None:
        self.uvicorn.should_exit = True
        self.serving.result(timeout=PATIENCE_SECONDS)

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """Status, headers (names in lower case) and body of one request; an error status is returned, not raised."""
        request = urllib.request.Request(f"http://{self.url}{path}", data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=PATIENCE_SECONDS) as response:
                return response.status, _lower(response.headers), response.read()
        except urllib.error.HTTPError as error:
            with error:
                return error.code, _lower(error.headers), error.read()

    def json(self, method: str, path: str, document: Any = None) -> tuple[int, Any]:
        body = None if document is None else json.dumps(document).encode()
        status, _, content = self.request(method, path, body, {"Content-Type": "application/json"})
        return status, json.loads(content)


def _lower(headers: Any) -> dict[str, str]:
    """Header names in lower case, as HTTP/1.1 servers may send them in any case."""
    return {name.lower(): value for name, value in headers.items()}
