"""The Modzy-style HTTP front end: the model's metadata, and one item in as a multipart form, its outputs out.

A sibling of the gRPC servicer: both call the data plane (inference.py), so validation, batching,
timeouts and the model load are the same whichever protocol an item comes by.
"""

import base64
import json
import logging
import mimetypes
import time
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile

from grpc_model.src.inference import Inference, OverBudgetError
from grpc_model.src.metadata import ModelSpec
from grpc_model.src.runtime import (
    ItemResult,
    ModelLoadError,
    ModelNotLoadedError,
    ModelUnavailableError,
    QueueFullError,
)

logger = logging.getLogger(__name__)

FLAGS = ("detect_drift", "explain")
FORMS = ("multipart/form-data", "application/x-www-form-urlencoded")
TRUE, FALSE = {"true", "on", "1", "yes"}, {"false", "off", "0", "no", ""}


def model_router(inference: Inference, spec: ModelSpec) -> APIRouter:
    router = APIRouter(prefix="/api/model", tags=["model"])
    metadata = spec.model_dump(mode="json")

    @router.get("", summary="The model's metadata: model.yaml as JSON")
    async def get_metadata() -> dict[str, Any]:
        return metadata

    @router.post(
        "/run",
        summary="Run one item: one file field per input of model.yaml",
        openapi_extra={"requestBody": _run_body(spec)},
        responses=RUN_RESPONSES,
    )
    async def run(request: Request) -> JSONResponse:
        item, flags = await _read_form(request)
        started = time.perf_counter()
        result = await _run_item(inference, spec, item, flags)
        if logger.isEnabledFor(logging.DEBUG):  # the access line: DEBUG, as Run's (docs/operations.md, Logs)
            outcome = "succeeded" if result.success else "failed"
            logger.debug("HTTP run: 1 item (%s) in %.1f ms", outcome, (time.perf_counter() - started) * 1000)
        if not result.success:
            return JSONResponse({"success": False, "error": _error_text(result)}, status_code=422)
        outputs = {name: _output_file(name, data, spec) for name, data in result.output.items()}
        return JSONResponse({"success": True, "outputs": outputs})

    return router


async def _read_form(request: Request) -> tuple[dict[str, bytes], dict[str, bool]]:
    """The item's files by field name, and the flags; a text field is a file of its UTF-8 bytes (curl -F a=text)."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type not in FORMS:
        raise HTTPException(415, f"the body is {media_type or 'untyped'}: send multipart/form-data, one file per input")
    item: dict[str, bytes] = {}
    flags = dict.fromkeys(FLAGS, False)
    seen: set[str] = set()
    async with request.form() as form:
        for name, value in form.multi_items():
            if name in seen:
                raise HTTPException(400, f"{name}: sent twice; an item has one file of each name")
            seen.add(name)
            if name in flags:
                flags[name] = _flag(name, value)
            elif isinstance(value, UploadFile):
                if value.filename or value.size:  # a browser sends an empty part for a file field left empty
                    item[name] = await value.read()
            else:
                item[name] = value.encode()
    return item, flags


def _flag(name: str, value: str | UploadFile) -> bool:
    text = value.lower() if isinstance(value, str) else None
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    raise HTTPException(400, f"{name}: expected true or false, got {value!r}")


async def _run_item(
    inference: Inference, spec: ModelSpec, item: dict[str, bytes], flags: dict[str, bool]
) -> ItemResult:
    try:
        await inference.ensure_loaded(spec.timeout.status_seconds)  # no client calls Status first here
        [result] = await inference.run([item], request_bytes=sum(map(len, item.values())), **flags)
    except (ModelLoadError, ModelNotLoadedError, ModelUnavailableError) as error:
        raise HTTPException(503, str(error)) from None
    except (QueueFullError, OverBudgetError) as error:
        raise HTTPException(429, str(error)) from None
    return result


def _error_text(result: ItemResult) -> str:
    return result.output.get("error", b"").decode("utf-8", "replace")


def _output_file(name: str, data: bytes, spec: ModelSpec) -> dict[str, Any]:
    """A JSON output inline (`json`), any other file as `base64`, each with its media type."""
    declared = spec.outputs.get(name)
    media_type = declared.mediaType if declared else mimetypes.guess_type(name)[0] or "application/octet-stream"
    if media_type == "application/json" or media_type.endswith("+json"):
        try:
            return {"mediaType": media_type, "json": json.loads(data)}
        except (ValueError, UnicodeDecodeError):
            pass  # not valid JSON after all: sent as bytes, as any other file
    return {"mediaType": media_type, "base64": base64.b64encode(data).decode("ascii")}


def _run_body(spec: ModelSpec) -> dict[str, Any]:
    """The request body for OpenAPI: declared inputs are only known at start-up, from model.yaml."""
    files = {
        name: {
            "type": "string",
            "format": "binary",
            "description": f"{file.description} Accepted: {', '.join(file.acceptedMediaTypes)}; "
            f"at most {file.maxSize}.".strip(),
        }
        for name, file in spec.inputs.items()
    }
    flags = {name: {"type": "boolean", "default": False} for name in FLAGS}
    schema = {"type": "object", "required": list(spec.inputs), "properties": {**files, **flags}}
    return {"required": True, "content": {"multipart/form-data": {"schema": schema}}}


def _answer(description: str, example: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"example": example}}}


RUN_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: _answer(
        "The item succeeded: every output file, JSON inline, others in base64",
        {
            "success": True,
            "outputs": {
                "results.json": {"mediaType": "application/json", "json": {"data": {"result": {}}}},
                "mask.png": {"mediaType": "image/png", "base64": "iVBORw0KGgo..."},
            },
        },
    ),
    400: _answer("The form is malformed", {"detail": "explain: expected true or false, got 'maybe'"}),
    413: _answer("The body is over max_receive_message_bytes", {"detail": "the request body is over ..."}),
    415: _answer("The body is not a form", {"detail": "the body is application/json: send multipart/form-data, ..."}),
    422: _answer("The item failed its checks or in the model", {"success": False, "error": "input.txt: missing"}),
    429: _answer(
        "Too many items are queued (max_queued_items) or bytes in flight (max_inflight_request_bytes)",
        {"detail": "..."},
    ),
    503: _answer("The model did not load, or cannot take work now", {"detail": "..."}),
}
