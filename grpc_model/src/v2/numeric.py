"""Numeric V2 tensors for a model that declares its tensors (a runtime): rows in, rows out.

Row i of every input tensor is item i (its little-endian bytes, in the datatype the model declares),
so rows from many calls share the batcher and one library call; each output tensor is the items'
rows stacked again. Shapes, datatypes and byte lengths are checked against the model's signature
before anything is allocated for them. Standard library only: the default install has no numpy.
"""

import sys
from array import array
from collections.abc import Sequence
from typing import Any

from grpc_model.src.quoting import quoted, quoted_list
from grpc_model.src.runtime import ItemResult, TensorSignature, TensorSpec
from grpc_model.src.runtime.signature import BYTES, ITEM_SIZES
from grpc_model.src.v2.tensors import (
    ERROR_TENSOR,
    MAX_LISTED_FAILURES,
    InferRequest,
    InferResponse,
    InputTensor,
    Problem,
    Tensor,
    V2Error,
    V2Model,
    element_count,
    repeated_names,
    shortened,
)

ARRAY_CODES = {
    "FP32": "f",
    "FP64": "d",
    "INT8": "b",
    "INT16": "h",
    "INT32": "i",
    "INT64": "q",
    "UINT8": "B",
    "UINT16": "H",
    "UINT32": "I",
    "UINT64": "Q",
    "BOOL": "B",
}
assert all(array(code).itemsize == ITEM_SIZES[name] for name, code in ARRAY_CODES.items())
SWAP = sys.byteorder == "big"  # V2's raw data is little-endian


def shape_text(shape: Sequence[int]) -> str:
    return "[" + ", ".join("N" if index == 0 else "*" if d < 0 else str(d) for index, d in enumerate(shape)) + "]"


def decoded(datatype: str, data: bytes) -> array:  # type: ignore[type-arg]
    """Little-endian bytes of a numeric datatype as an array of its values."""
    values = array(ARRAY_CODES[datatype])
    values.frombytes(data)
    if SWAP:
        values.byteswap()
    return values


def encoded(values: array) -> bytes:  # type: ignore[type-arg]
    if SWAP:
        values = array(values.typecode, values)
        values.byteswap()
    return values.tobytes()


def values_of(tensor: Tensor) -> list[Any]:
    """An output tensor's values, for JSON or typed contents."""
    values = decoded(tensor.datatype, tensor.raw or b"").tolist()
    return [bool(value) for value in values] if tensor.datatype == "BOOL" else values


def rows(model: V2Model, request: InferRequest, signature: TensorSignature) -> list[dict[str, bytes]]:
    """One row item per row of the input tensors; raises INVALID for tensors that do not fit the signature."""
    tensors = {tensor.name: tensor for tensor in request.inputs}
    names = [spec.name for spec in signature.inputs]
    repeated = repeated_names([tensor.name for tensor in request.inputs])
    missing = [name for name in names if name not in tensors]
    unknown = [name for name in tensors if name not in names]
    problems = [f"input tensor {quoted_list(repeated)} appears more than once"] if repeated else []
    problems += [f"missing input tensor {quoted_list(missing)}"] if missing else []
    problems += (
        [f"the model has no input {quoted_list(unknown)}; its inputs are [{quoted_list(names)}]"] if unknown else []
    )
    problems += [
        p for spec in signature.inputs if spec.name in tensors for p in _form_problems(tensors[spec.name], spec)
    ]
    if problems:
        raise V2Error(Problem.INVALID, "; ".join(problems))
    counts = {name: tensors[name].shape[0] for name in names}
    if len(set(counts.values())) > 1:
        raise V2Error(Problem.INVALID, f"every input needs the same number of rows; the rows are {counts}")
    count = next(iter(counts.values()))
    if count == 0:
        raise V2Error(Problem.INVALID, "the request has no rows")
    if count > model.max_batch_size:
        raise V2Error(
            Problem.INVALID, f"{count} rows in one request, over the model's maxBatchSize of {model.max_batch_size}"
        )
    data = {spec.name: _data(tensors[spec.name], spec) for spec in signature.inputs}
    sizes = {spec.name: spec.row_bytes for spec in signature.inputs}
    return [{name: data[name][i * sizes[name] : (i + 1) * sizes[name]] for name in names} for i in range(count)]


def _form_problems(tensor: InputTensor, spec: TensorSpec) -> list[str]:
    problems = []
    if tensor.datatype != spec.datatype and tensor.datatype not in spec.accepts:
        also = f" (or {', '.join(spec.accepts)})" if spec.accepts else ""
        problems.append(
            f"input {spec.name!r} has datatype {quoted(tensor.datatype)}; the model takes {spec.datatype}{also}"
        )
    fits = len(tensor.shape) == len(spec.shape) and all(
        want < 0 or got == want for got, want in zip(tensor.shape[1:], spec.shape[1:], strict=True)
    )
    if not fits or any(dimension < 0 for dimension in tensor.shape):
        width = f" ({spec.row_elements} values per row)" if len(spec.shape) == 2 else ""
        problems.append(
            f"input {spec.name!r} has shape {quoted(tensor.shape)}; the model takes {shape_text(spec.shape)}{width}"
        )
    return problems


def _data(tensor: InputTensor, spec: TensorSpec) -> bytes:
    """The tensor's values as little-endian bytes of the spec's datatype, their count checked against the shape."""
    elements = element_count(tensor.shape)
    if tensor.raw is not None:
        size = elements * ITEM_SIZES[tensor.datatype]
        if len(tensor.raw) != size:
            raise V2Error(
                Problem.INVALID,
                f"input {spec.name!r}: shape {list(tensor.shape)} of {tensor.datatype} is {size} bytes, "
                f"but its data has {len(tensor.raw)}",
            )
        if tensor.datatype == spec.datatype:
            return tensor.raw
        return encoded(array(ARRAY_CODES[spec.datatype], decoded(tensor.datatype, tensor.raw)))
    values = tensor.read_values(elements + 1) if tensor.read_values is not None else []
    if len(values) != elements:
        found = f"more than {elements}" if len(values) > elements else str(len(values))
        raise V2Error(
            Problem.INVALID, f"input {spec.name!r}: shape {list(tensor.shape)} is {elements} values, but it has {found}"
        )
    try:
        return encoded(array(ARRAY_CODES[spec.datatype], values))
    except (TypeError, ValueError, OverflowError):
        raise V2Error(Problem.INVALID, f"input {spec.name!r}: its values are not all {spec.datatype} numbers") from None


def response(
    model: V2Model, request: InferRequest, results: Sequence[ItemResult], signature: TensorSignature
) -> InferResponse:
    """The output tensors, each row from its item; raises INVALID when a row failed."""
    failed = [(index, result) for index, result in enumerate(results) if not result.success]
    if failed:
        reasons = [
            f"row {index}: {shortened(result.output.get(ERROR_TENSOR, b'').decode(errors='replace'))}"
            for index, result in failed[:MAX_LISTED_FAILURES]
        ]
        raise V2Error(Problem.INVALID, f"{len(failed)} of {len(results)} rows failed: " + "; ".join(reasons))
    specs = {spec.name: spec for spec in signature.outputs}
    names = request.requested_outputs or list(specs)
    unknown = [name for name in names if name not in specs]
    if unknown:
        raise V2Error(Problem.INVALID, f"the model has no output {unknown}; its outputs are {list(specs)}")
    return InferResponse(model.name, model.version, request.id, [_output(specs[name], results) for name in names])


def _output(spec: TensorSpec, results: Sequence[ItemResult]) -> Tensor:
    parts = [result.output.get(spec.name, b"") for result in results]
    if spec.datatype == BYTES:
        return Tensor(spec.name, BYTES, [len(parts)], parts)
    row_elements = len(parts[0]) // ITEM_SIZES[spec.datatype]
    if any(len(part) != len(parts[0]) for part in parts) or row_elements == 0:
        raise V2Error(Problem.INTERNAL, f"output {spec.name!r}: the model's rows differ in size")
    dimensions = list(spec.shape[1:])
    known = element_count([d for d in dimensions if d >= 0])
    if dimensions.count(-1) == 1 and known > 0:
        dimensions[dimensions.index(-1)] = row_elements // known
    elif -1 in dimensions:
        dimensions = [row_elements]
    return Tensor(spec.name, spec.datatype, [len(parts), *dimensions], [], raw=b"".join(parts))
