"""`inference.GRPCInferenceService` on the ModzyModel server's port: V2 messages to and from `V2Protocol`."""

from typing import Any

import grpc

from grpc_model.src.auto_generated.v2 import grpc_predict_v2_pb2 as pb
from grpc_model.src.grpc_methods import add_unary_service, request_size
from grpc_model.src.observability.metrics import NO_METRICS, Recorder
from grpc_model.src.v2.numeric import values_of
from grpc_model.src.v2.protocol import V2Protocol
from grpc_model.src.v2.tensors import (
    InferRequest,
    InferResponse,
    InputTensor,
    Parameter,
    Problem,
    V2Error,
    V2Model,
    check_dimensions,
    joined_bytes,
    listed,
    packed,
)

CONTENTS = {
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "BOOL": "bool_contents",
}
"""The InferTensorContents field that carries each numeric datatype."""
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
CODES = {
    Problem.INVALID: grpc.StatusCode.INVALID_ARGUMENT,
    Problem.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Problem.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    Problem.EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Problem.INTERNAL: grpc.StatusCode.INTERNAL,
}
Context = grpc.aio.ServicerContext[Any, Any]
MAX_DETAILS_BYTES = 4096
"""The longest error message sent, as gRPC puts it in the trailer: percent-encoded, 3 bytes for each byte
outside printable ASCII. Clients refuse a trailer past 8 KiB with RESOURCE_EXHAUSTED, hiding the real code."""


class GRPCInferenceService:
    def __init__(self, protocol: V2Protocol) -> None:
        self.protocol = protocol

    async def ServerLive(self, request: pb.ServerLiveRequest, context: Context) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: Context) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.protocol.server_ready())

    async def ModelReady(self, request: pb.ModelReadyRequest, context: Context) -> pb.ModelReadyResponse:
        try:
            ready = await self.protocol.model_ready(request.name, request.version)
        except V2Error as error:
            await _abort(context, error)
        return pb.ModelReadyResponse(ready=ready)

    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: Context) -> pb.ServerMetadataResponse:
        name, version, extensions = self.protocol.server_metadata()
        return pb.ServerMetadataResponse(name=name, version=version, extensions=extensions)

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Context) -> pb.ModelMetadataResponse:
        try:
            metadata = await self.protocol.model_metadata(request.name, request.version)
        except V2Error as error:
            await _abort(context, error)
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=metadata.name,
            versions=metadata.versions,
            platform=metadata.platform,
            inputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in metadata.inputs],
            outputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in metadata.outputs],
        )

    async def ModelInfer(self, request: pb.ModelInferRequest, context: Context) -> pb.ModelInferResponse:
        try:
            endpoint = await self.protocol.endpoint(request.model_name, request.model_version)
            response = await self.protocol.infer(infer_request(request, endpoint.model), endpoint)
        except V2Error as error:
            await _abort(context, error)
        return infer_response(response, raw=len(request.raw_input_contents) > 0)


async def _abort(context: Context, error: V2Error) -> None:
    await context.abort(CODES[error.problem], details(str(error)))


def details(message: str) -> str:
    """The message, cut where gRPC's percent-encoding of it would pass MAX_DETAILS_BYTES."""
    size = 0
    for index, character in enumerate(message):
        size += _encoded_size(character)
        if size > MAX_DETAILS_BYTES:
            return f"{message[:index]}... (cut: {len(message):,} characters in all)"
    return message


def _encoded_size(character: str) -> int:
    """Bytes of one character in a percent-encoded grpc-message: printable ASCII but % as is, others as %XX."""
    if " " <= character <= "~" and character != "%":
        return 1
    return 3 * len(character.encode(errors="replace"))


def infer_request(request: pb.ModelInferRequest, model: V2Model) -> InferRequest:
    """The transport-free request; raises V2Error for counts past the model's (before anything is read for them)
    and raw contents that do not match the inputs."""
    model.check_counts(len(request.inputs), len(request.outputs), len(request.parameters))
    for tensor in request.inputs:
        check_dimensions(tensor.name, len(tensor.shape))
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise V2Error(
            Problem.INVALID, f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} input tensors"
        )
    if raw and any(tensor.HasField("contents") for tensor in request.inputs):
        raise V2Error(Problem.INVALID, "an input has contents as well as raw_input_contents: send one or the other")
    inputs = [_input(tensor, raw[index] if raw else None) for index, tensor in enumerate(request.inputs)]
    return InferRequest(
        request.model_name,
        request.model_version,
        inputs,
        [output.name for output in request.outputs],
        {name: _value(parameter) for name, parameter in request.parameters.items()},
        request.id,
        request_size(request),
    )


def _input(tensor: pb.ModelInferRequest.InferInputTensor, raw: bytes | None) -> InputTensor:
    """A request tensor, read when the model asks: BYTES elements, or a runtime's numbers (v2/numeric.py)."""
    shape = list(tensor.shape)
    field = CONTENTS.get(tensor.datatype)
    if field is None:
        read = packed(tensor.name, raw) if raw is not None else listed(tensor.contents.bytes_contents)
        return InputTensor(tensor.name, tensor.datatype, shape, read)
    if raw is not None:
        return InputTensor(tensor.name, tensor.datatype, shape, listed([]), raw=raw)
    values = getattr(tensor.contents, field)
    return InputTensor(tensor.name, tensor.datatype, shape, listed([]), read_values=lambda limit: values[:limit])


def infer_response(response: InferResponse, raw: bool) -> pb.ModelInferResponse:
    """Outputs in raw_output_contents when the request came raw, as Triton answers (tritonclient under
    numpy 2 reads BYTES outputs only from there), else in each tensor's bytes_contents."""
    message = pb.ModelInferResponse(
        model_name=response.model_name, model_version=response.model_version, id=response.id
    )
    for tensor in response.outputs:
        output = message.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        if tensor.raw is None and raw:
            message.raw_output_contents.append(joined_bytes(tensor.elements))
        elif tensor.raw is None:
            output.contents.bytes_contents.extend(tensor.elements)
        elif raw:
            message.raw_output_contents.append(tensor.raw)
        else:
            getattr(output.contents, CONTENTS[tensor.datatype]).extend(values_of(tensor))
    return message


def _value(parameter: pb.InferParameter) -> Parameter:
    choice = parameter.WhichOneof("parameter_choice")
    value: Parameter = getattr(parameter, choice) if choice else ""
    return value


def add_to_server(service: GRPCInferenceService, server: grpc.aio.Server, metrics: Recorder = NO_METRICS) -> None:
    add_unary_service(
        server,
        SERVICE_NAME,
        {
            "ServerLive": (service.ServerLive, pb.ServerLiveRequest, pb.ServerLiveResponse),
            "ServerReady": (service.ServerReady, pb.ServerReadyRequest, pb.ServerReadyResponse),
            "ModelReady": (service.ModelReady, pb.ModelReadyRequest, pb.ModelReadyResponse),
            "ServerMetadata": (service.ServerMetadata, pb.ServerMetadataRequest, pb.ServerMetadataResponse),
            "ModelMetadata": (service.ModelMetadata, pb.ModelMetadataRequest, pb.ModelMetadataResponse),
            "ModelInfer": (service.ModelInfer, pb.ModelInferRequest, pb.ModelInferResponse),
        },
        metrics,
    )
