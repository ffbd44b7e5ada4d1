"""The HTTP application: the browser page, OpenAPI and its docs page, and the routers of the front ends.

The wiring passes each front end's router (the multipart endpoint here, V2 REST...), so a new
protocol plugs in with one more router and this module never imports a front end.
"""

import html
from collections.abc import Callable, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from grpc_model.src.metadata import ModelSpec
from grpc_model.src.observability import logs

STATIC = Path(__file__).parent / "static"
REQUEST_ID_HEADER = logs.REQUEST_ID_METADATA.encode()
OFFLINE = "/static-offline-docs"  # where fastapi-offline serves Swagger UI's and ReDoc's assets
OPEN_PATHS = ("/v2/health/",)
"""Paths served without a token, as gRPC's health service is: for probes that cannot send one."""
Refusal = Callable[[Sequence[bytes]], str | None]
"""Why a request's `authorization` header values are refused, or None (security.auth.TokenCheck.refusal)."""
Shortcut = Callable[[Scope], ASGIApp | None]
"""A front end's hot route, answered without FastAPI's routing, dependencies and exception layers (about half of
a small request's CPU): given a request's scope, the ASGI app that answers it, or None. The route stays declared
in the front end's router too, so that OpenAPI describes it."""


def create_app(
    spec: ModelSpec | None,
    routers: Sequence[APIRouter],
    max_request_bytes: int,
    refusal: Refusal | None = None,
    shortcuts: Sequence[Shortcut] = (),
) -> ASGIApp:
    """The HTTP app of the model `spec` (None: a repository's, with no default model for the page), behind the
    request id, the token check and the body limit, which every request passes, a shortcut's too."""
    app = FastAPIOffline(  # the /docs page's Swagger UI comes from the package, not a CDN
        docs_url=None,  # its pages put the title into HTML as it is: ours escape it
        redoc_url=None,
        static_url=OFFLINE,
        title="grpc-model repository" if spec is None else f"{spec.name} {spec.version}",
        version=version("grpc-model"),
        description=("A repository of models." if spec is None else spec.description.summary)
        + "\n\nThe browser page is at [/](/); the endpoints are described in docs/http.md.",
    )
    app.mount("/page", StaticFiles(directory=STATIC), name="page")
    _serve_docs(app)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    for router in routers:
        app.include_router(router)
    served: ASGIApp = BodyLimit(Shortcuts(shortcuts, app) if shortcuts else app, max_request_bytes)
    if refusal is not None:  # outside the limit: no body is read for a request without a token
        served = BearerToken(served, refusal)
    return RequestId(served)


def _serve_docs(app: FastAPI) -> None:
    """/docs, /redoc and /openapi.json, where model.yaml's text stays text.

    The pages' titles are HTML-escaped. Every OpenAPI `description` is too, since ReDoc renders them as Markdown
    with HTML allowed (`&lt;` shows as `<`); ReDoc also sanitizes the rest (`untrusted-spec`), such as a Markdown
    link to `javascript:`. Swagger UI sanitizes its Markdown itself, and both show titles as text.
    """
    title = html.escape(app.title)

    @app.get("/docs", include_in_schema=False)
    async def swagger() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{title} - Swagger UI",
            swagger_js_url=f"{OFFLINE}/swagger-ui-bundle.js",
            swagger_css_url=f"{OFFLINE}/swagger-ui.css",
            swagger_favicon_url=f"{OFFLINE}/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        page = get_redoc_html(
            openapi_url="/openapi.json",
            title=f"{title} - ReDoc",
            redoc_js_url=f"{OFFLINE}/redoc.standalone.js",
            redoc_favicon_url=f"{OFFLINE}/favicon.png",
            with_google_fonts=False,
        )
        return HTMLResponse(bytes(page.body).replace(b"<redoc ", b'<redoc untrusted-spec="true" ', 1))

    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _inert(build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _inert(node: Any) -> Any:
    """`node` with every `description` string HTML-escaped (a property named `description` is a schema, kept; an
    `example` value is shown as code, kept as it is)."""
    if isinstance(node, dict):
        return {
            key: html.escape(value, quote=False)
            if key == "description" and isinstance(value, str)
            else value
            if key == "example"
            else _inert(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_inert(value) for value in node]
    return node


class Shortcuts:
    """Answers a request a shortcut takes, the rest by `app`. The body limit's 413, raised while the shortcut
    reads the body, is answered as FastAPI answers it (its exception layers are not in the way here)."""

    def __init__(self, shortcuts: Sequence[Shortcut], app: ASGIApp) -> None:
        self.shortcuts = shortcuts
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for shortcut in self.shortcuts:
                answer = shortcut(scope)
                if answer is not None:
                    try:
                        await answer(scope, receive, send)
                    except HTTPException as error:
                        await JSONResponse({"detail": error.detail}, error.status_code, error.headers)(
                            scope, receive, send
                        )
                    return
        await self.app(scope, receive, send)


class RequestId:
    """Gives each request its id, as gRPC calls get theirs: from the `x-request-id` header or a new one, on every
    line logged about it, and sent back in the same header."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = _header(scope, REQUEST_ID_HEADER)
        request_id = logs.accepted_request_id(sent.decode("latin-1") if sent else None)
        logs.request_id.set(request_id)  # this request's own task: the id stays with it

        async def with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (REQUEST_ID_HEADER, request_id.encode("latin-1"))]
            await send(message)

        await self.app(scope, receive, with_id)


class BearerToken:
    """Answers 401 to a request without a valid `Authorization: Bearer` header, as the gRPC port answers
    UNAUTHENTICATED: same tokens, same check, health open."""

    def __init__(self, app: ASGIApp, refusal: Refusal) -> None:
        self.app = app
        self.refusal = refusal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or str(scope["path"]).startswith(OPEN_PATHS):
            await self.app(scope, receive, send)
            return
        why = self.refusal([value for name, value in scope["headers"] if name == b"authorization"])
        if why is None:
            await self.app(scope, receive, send)
            return
        answer = JSONResponse({"detail": why}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
        await answer(scope, receive, send)


class BodyLimit:
    """Answers 413 to a request body over the limit (the gRPC side's max_receive_message_bytes), read or not."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length") or b""
        if declared.isdigit() and int(declared) > self.limit:
            await self.app(scope, _refusing(self.limit), send)
            return
        received = 0

        async def counting() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise _too_large(self.limit)
            return message

        await self.app(scope, counting, send)


def _header(scope: Scope, name: bytes) -> bytes | None:
    """The last value of header `name` (lower case), as `dict(scope["headers"])` gives it, without the dict."""
    found = None
    for key, value in scope["headers"]:
        if key == name:
            found = value
    return found


def _too_large(limit: int) -> HTTPException:
    return HTTPException(413, f"the request body is over {limit} bytes (max_receive_message_bytes)")


def _refusing(limit: int) -> Receive:
    async def receive() -> Message:
        raise _too_large(limit)

    return receive
