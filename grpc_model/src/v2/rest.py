"""The V2 REST endpoints as a FastAPI router, for the HTTP app to include: JSON and the binary data extension.

BYTES elements travel as JSON strings, or, with the binary tensor data extension (what tritonclient's
HTTP client sends by default), after the JSON header whose length the `Inference-Header-Content-Length`
header gives, each element preceded by its 4-byte little-endian length.
"""

import asyncio
import functools
import json
import re
from collections.abc import Callable, Mapping
from itertools import islice
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from grpc_model.src.inference import CHECK_INLINE_BYTES
from grpc_model.src.quoting import quoted
from grpc_model.src.runtime.signature import ITEM_SIZES
from grpc_model.src.v2.numeric import values_of
from grpc_model.src.v2.protocol import ModelMetadata, V2Protocol
from grpc_model.src.v2.repository import RepositoryControl, RepositoryParameter
from grpc_model.src.v2.tensors import (
    InferRequest,
    InferResponse,
    InputTensor,
    Problem,
    V2Error,
    V2Model,
    check_dimensions,
    flattened,
    framed,
    packed,
)

HEADER_LENGTH = "Inference-Header-Content-Length"
STATUS = {
    Problem.INVALID: 400,
    Problem.NOT_FOUND: 404,
    Problem.UNAVAILABLE: 503,
    Problem.EXHAUSTED: 429,
    Problem.INTERNAL: 500,
    Problem.FORBIDDEN: 403,
}


def v2_router(protocol: V2Protocol) -> APIRouter:
    """The V2 REST routes, answering errors as `{"error": "..."}` with a status that fits, as Triton does."""
    router = APIRouter(tags=["V2 (Open Inference Protocol)"])

    @router.get("/v2", summary="Server metadata")
    async def server_metadata() -> dict[str, Any]:
        name, version, extensions = protocol.server_metadata()
        return {"name": name, "version": version, "extensions": list(extensions)}

    @router.get("/v2/health/live", summary="Whether the server is live")
    async def live() -> dict[str, bool]:
        return {"live": True}

    @router.get("/v2/health/ready", summary="Whether the model can take work (starts loading it)")
    async def ready() -> Response:
        is_ready = protocol.server_ready()
        return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)

    @router.get("/v2/models/{name}", summary="Model metadata")
    @router.get("/v2/models/{name}/versions/{version}", summary="Model metadata of a version")
    async def model_metadata(name: str, version: str = "") -> Response:
        try:
            return JSONResponse(_metadata_json(await protocol.model_metadata(name, version)))
        except V2Error as error:
            return _error(error)

    @router.get("/v2/models/{name}/ready", summary="Whether the model can take work (loads it)")
    @router.get("/v2/models/{name}/versions/{version}/ready", summary="Whether the version can take work")
    async def model_ready(name: str, version: str = "") -> Response:
        try:
            is_ready = await protocol.model_ready(name, version)
        except V2Error as error:
            return _error(error)
        return JSONResponse({"name": name, "ready": is_ready}, status_code=200 if is_ready else 503)

    @router.post("/v2/models/{name}/infer", summary="Inference: element i of each input tensor is item i's file")
    @router.post("/v2/models/{name}/versions/{version}/infer", summary="Inference with a version")
    async def infer(name: str, request: Request, version: str = "") -> Response:
        """Served by `v2_shortcut` in the server; declared here for OpenAPI."""
        return await _infer(protocol, name, version, request)

    return router


def repository_router(control: RepositoryControl) -> APIRouter:
    """The model-repository extension's routes, as Triton's: JSON in (or nothing), JSON out."""
    router = APIRouter(tags=["V2 model repository"])

    @router.post("/v2/repository/index", summary="Every model version, loaded or not, with its state")
    async def index(request: Request) -> Response:
        try:
            ready = _json_body(await request.body(), "index").get("ready", False)
            if not isinstance(ready, bool):
                raise V2Error(Problem.INVALID, f'"ready" must be true or false, not {quoted(ready)}')
            entries = control.index("", ready)
        except V2Error as error:
            return _error(error)
        return JSONResponse(
            [{"name": e.name, "version": e.version, "state": e.state, "reason": e.reason} for e in entries]
        )

    @router.post("/v2/repository/models/{name}/load", summary="Load a model, or load it again")
    async def load(name: str, request: Request) -> Response:
        try:
            await control.load("", name, _repository_parameters(await request.body(), "load"))
        except V2Error as error:
            return _error(error)
        return Response()

    @router.post("/v2/repository/models/{name}/unload", summary="Unload a model, once its calls are answered")
    async def unload(name: str, request: Request) -> Response:
        try:
            await control.unload("", name, _repository_parameters(await request.body(), "unload"))
        except V2Error as error:
            return _error(error)
        return Response()

    return router


def _json_body(body: bytes, what: str) -> Mapping[str, Any]:
    """A repository request's JSON object; an empty body is an empty object, as Triton takes it."""
    if not body.strip():
        return {}
    try:
        document = json.loads(body)
    except ValueError as error:
        raise V2Error(Problem.INVALID, f"the {what} request is not valid JSON: {error}") from None
    except RecursionError:
        raise V2Error(Problem.INVALID, f"the {what} request's JSON is nested too deeply") from None
    return _object(document, f"the {what} request")


def _repository_parameters(body: bytes, what: str) -> dict[str, RepositoryParameter]:
    parameters = _object(_json_body(body, what).get("parameters"), "parameters")
    for name, value in parameters.items():
        if not isinstance(value, bool | int | str):
            raise V2Error(Problem.INVALID, f"the {what} parameter {quoted(name)} must be a string, number or boolean")
    return dict(parameters)


INFER_PATH = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?/infer")


def v2_shortcut(protocol: V2Protocol) -> Callable[[Scope], ASGIApp | None]:
    """Inference requests answered without FastAPI's routing and dependency solving (web/app.py's Shortcut),
    which cost more CPU than the whole inference of a small request; the same paths as the router's."""

    def answer(name: str, version: str) -> ASGIApp:
        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            response = await _infer(protocol, name, version, Request(scope, receive))
            await response(scope, receive, send)

        return app

    def shortcut(scope: Scope) -> ASGIApp | None:
        if scope["method"] != "POST" or not (matched := INFER_PATH.fullmatch(scope["path"])):
            return None
        return answer(matched[1], matched[2] or "")

    return shortcut


async def _infer(protocol: V2Protocol, name: str, version: str, request: Request) -> Response:
    try:
        body = await _body(request)
        endpoint = await protocol.endpoint(name, version)
        parse = functools.partial(infer_request, name, version, body, request.headers, endpoint.model)
        # a large body's JSON is parsed on a thread, as large items are checked: health goes on answering
        parsed, binary_outputs = parse() if len(body) <= CHECK_INLINE_BYTES else await asyncio.to_thread(parse)
        return infer_response(await protocol.infer(parsed, endpoint), binary_outputs)
    except V2Error as error:
        return _error(error)


async def _body(request: Request) -> bytes | bytearray:
    """The request's body, grown in one buffer as its chunks arrive: Starlette's `body()` holds every chunk and then
    their join, two copies of a large body at once. Nothing is allocated ahead of the bytes that arrived (a client
    that declares 100 MB and sends nothing costs nothing), and a large buffer grows in place (glibc's mremap)."""
    declared = request.headers.get("content-length", "")
    if not declared.isdigit():
        return await request.body()
    length, body = int(declared), bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > length:
            raise V2Error(Problem.INVALID, f"the body is longer than its Content-Length of {declared} bytes")
    if len(body) != length:
        raise V2Error(Problem.INVALID, f"the body ended after {len(body)} of its Content-Length of {declared} bytes")
    return body


def _error(error: V2Error) -> Response:
    return JSONResponse({"error": str(error)}, status_code=STATUS[error.problem])


def _metadata_json(metadata: ModelMetadata) -> dict[str, Any]:
    def tensors(items: Any) -> list[dict[str, Any]]:
        return [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in items]

    return {
        "name": metadata.name,
        "versions": list(metadata.versions),
        "platform": metadata.platform,
        "inputs": tensors(metadata.inputs),
        "outputs": tensors(metadata.outputs),
    }


def infer_request(
    name: str, version: str, body: bytes | bytearray, headers: Mapping[str, str], model: V2Model
) -> tuple[InferRequest, set[str]]:
    """The transport-free request, and the outputs to send as binary data; raises V2Error."""
    if headers.get("content-encoding", "identity") != "identity":
        raise V2Error(
            Problem.INVALID, f"Content-Encoding {quoted(headers['content-encoding'])} is not supported: send it plain"
        )
    header, binary = _split_body(body, headers.get(HEADER_LENGTH))
    try:
        document = json.loads(header)
    except ValueError as error:
        raise V2Error(Problem.INVALID, f"the request is not valid JSON: {error}") from None
    except RecursionError:
        raise V2Error(Problem.INVALID, "the request's JSON is nested too deeply") from None
    if not isinstance(document, dict) or not isinstance(document.get("inputs"), list):
        raise V2Error(Problem.INVALID, 'the request must be a JSON object with a list "inputs"')
    parameters = _object(document.get("parameters"), "parameters")
    listed_outputs = _list(document.get("outputs"), "outputs")
    model.check_counts(len(document["inputs"]), len(listed_outputs), len(parameters))
    outputs = [_object(output, "an entry of outputs") for output in listed_outputs]
    inputs = []
    offset = 0
    for entry in document["inputs"]:
        tensor, size = _input_tensor(_object(entry, "an entry of inputs"), binary, offset)
        inputs.append(tensor)
        offset += size
    if offset != len(binary):
        raise V2Error(Problem.INVALID, f"{len(binary) - offset} bytes of binary data after the last input's")
    requested = [str(output.get("name", "")) for output in outputs]
    binary_outputs = {
        str(output.get("name", ""))
        for output in outputs
        if _object(output.get("parameters"), "parameters").get("binary_data")
    }
    if parameters.get("binary_data_output") is True:
        binary_outputs.add("*")
    request_id = str(document.get("id", ""))
    _utf8(request_id, "id")  # echoed in the answer
    return InferRequest(name, version, inputs, requested, parameters, request_id, len(body)), binary_outputs


def _split_body(body: bytes | bytearray, header_length: str | None) -> tuple[bytes | bytearray, memoryview]:
    """The JSON header, and the binary data after it as a view (files are copied once, into the model's items)."""
    if header_length is None:
        return body, memoryview(b"")
    try:
        length = int(header_length)
    except ValueError:
        length = -1
    if not 0 <= length <= len(body):
        raise V2Error(
            Problem.INVALID, f"{HEADER_LENGTH} is {quoted(header_length)}: expected the JSON header's length in bytes"
        )
    return body[:length], memoryview(body)[length:]


def _input_tensor(entry: Mapping[str, Any], binary: memoryview, offset: int) -> tuple[InputTensor, int]:
    """One input tensor, and how many bytes of the binary data it took."""
    name, datatype, shape = entry.get("name"), entry.get("datatype"), entry.get("shape")
    if not isinstance(name, str) or not isinstance(datatype, str):
        raise V2Error(Problem.INVALID, "every input needs a string name and datatype")
    if isinstance(shape, list):
        check_dimensions(name, len(shape))
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise V2Error(Problem.INVALID, f"input {quoted(name)}: shape must be a list of integers")
    size = _object(entry.get("parameters"), "parameters").get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= len(binary) - offset:
            raise V2Error(
                Problem.INVALID,
                f"input {quoted(name)}: binary_data_size {quoted(size)} does not fit the {len(binary) - offset} "
                "bytes left",
            )
        data = binary[offset : offset + size]
        if datatype in ITEM_SIZES:  # numbers, for a runtime's model (v2/numeric.py)
            return InputTensor(name, datatype, shape, lambda limit: [], raw=data.tobytes()), size
        return InputTensor(name, datatype, shape, packed(name, data)), size
    json_data = entry.get("data", [])
    if datatype in ITEM_SIZES:
        return InputTensor(name, datatype, shape, lambda limit: [], read_values=_json_values(name, json_data)), 0
    return InputTensor(name, datatype, shape, lambda limit: _json_elements(name, json_data, limit)), 0


def _json_values(name: str, data: Any) -> Callable[[int], list[Any]]:
    """Reads up to `limit` numbers of a JSON tensor's `data`, nested by shape or flat."""

    def read(limit: int) -> list[Any]:
        try:
            return list(islice(flattened(data), limit))
        except RecursionError:
            raise V2Error(Problem.INVALID, f"input {quoted(name)}: data is nested too deeply") from None

    return read


def _json_elements(name: str, data: Any, limit: int) -> list[bytes]:
    """Up to `limit` elements of a JSON tensor's `data`: strings, each the UTF-8 bytes of one file."""
    try:
        values = list(islice(flattened(data), limit))
    except RecursionError:
        raise V2Error(Problem.INVALID, f"input {quoted(name)}: data is nested too deeply") from None
    texts = [value for value in values if isinstance(value, str)]
    if len(texts) != len(values):
        raise V2Error(Problem.INVALID, f"input {quoted(name)}: BYTES data must be strings (or use binary data)")
    return [_utf8(text, f"input {quoted(name)}: a string") for text in texts]


def _utf8(text: str, what: str) -> bytes:
    """The UTF-8 bytes of a JSON string; raises INVALID for one that has none: a lone surrogate, which JSON
    may escape (\\ud800)."""
    try:
        return text.encode()
    except UnicodeEncodeError:
        raise V2Error(
            Problem.INVALID, f"{what} is not valid Unicode: it holds a lone surrogate (such as \\ud800)"
        ) from None


def _object(value: Any, what: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise V2Error(Problem.INVALID, f"{what} must be a JSON object")
    return value


def _list(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise V2Error(Problem.INVALID, f"{what} must be a JSON list")
    return value


def infer_response(response: InferResponse, binary_outputs: set[str]) -> Response:
    """JSON strings where they can be; binary data for the outputs asked so, and for any that is not UTF-8."""
    outputs = []
    binary = []
    for tensor in response.outputs:
        entry: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": tensor.shape}
        as_binary = bool({"*", tensor.name} & binary_outputs)
        values: list[Any] | None
        if tensor.raw is not None:
            data, values = ([tensor.raw], None) if as_binary else ([], values_of(tensor))
        else:
            values = None if as_binary else _texts(tensor.elements)
            data = framed(tensor.elements) if values is None else []  # pieces: joined once, into the answer
        if values is None:
            entry["parameters"] = {"binary_data_size": sum(len(part) for part in data)}
            binary += data
        else:
            entry["data"] = values
        outputs.append(entry)
    document: dict[str, Any] = {"model_name": response.model_name, "model_version": response.model_version}
    if response.id:
        document["id"] = response.id
    document["outputs"] = outputs
    header = json.dumps(document, ensure_ascii=False).encode()
    if not binary:
        return Response(header, media_type="application/json")
    return Response(
        b"".join([header, *binary]),
        media_type="application/octet-stream",
        headers={HEADER_LENGTH: str(len(header))},
    )


def _texts(elements: list[bytes]) -> list[str] | None:
    try:
        return [element.decode("utf-8") for element in elements]
    except UnicodeDecodeError:
        return None
