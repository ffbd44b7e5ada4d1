"""The Open Inference Protocol's tensors as the framework's items, and results back, for every V2 transport.

Element i of each input tensor is item i's file of that name; output tensors are named by output
file. Transport-free: the gRPC service and the REST routes turn their wire form into `InferRequest`
and `InferResponse` back, so that both map tensors alike.
"""

import struct
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from grpc_model.src.metadata import ModelSpec, slug
from grpc_model.src.runtime import ItemResult

BYTES = "BYTES"
ERROR_TENSOR = "error"
PARTIAL_RESULTS = "partial_results"
FLAG_PARAMETERS = ("detect_drift", "explain", PARTIAL_RESULTS)
MAX_LISTED_FAILURES = 10
MAX_REASON_CHARS = 300  # gRPC carries the message in a trailer, which clients cap (8 KiB by default)
LENGTH = struct.Struct("<I")  # a BYTES element's length prefix in raw and binary tensor data

Parameter = bool | int | float | str


class Problem(Enum):
    """What kind of failure a V2Error is; each transport maps it to its own status."""

    INVALID = "invalid argument"
    NOT_FOUND = "not found"
    UNAVAILABLE = "unavailable"
    EXHAUSTED = "resource exhausted"
    INTERNAL = "internal"


class V2Error(Exception):
    def __init__(self, problem: Problem, message: str) -> None:
        super().__init__(message)
        self.problem = problem


@dataclass
class Tensor:
    name: str
    datatype: str
    shape: list[int]
    elements: list[bytes]
    """A BYTES tensor's elements."""
    raw: bytes | None = None
    """A numeric tensor's values as little-endian bytes (raw contents, binary data, a numeric output)."""
    values: list[Any] | None = None
    """A numeric tensor's values as the client listed them (typed contents, JSON data), row-major."""


@dataclass
class InferRequest:
    model_name: str
    model_version: str
    inputs: list[Tensor]
    requested_outputs: list[str] = field(default_factory=list)
    parameters: Mapping[str, Parameter] = field(default_factory=dict)
    id: str = ""

    @property
    def size(self) -> int:
        """Bytes held for the request: its elements and raw data, and 8 for each listed number."""
        return sum(
            sum(len(element) for element in tensor.elements) + len(tensor.raw or b"") + 8 * len(tensor.values or [])
            for tensor in self.inputs
        )


@dataclass
class InferResponse:
    model_name: str
    model_version: str
    id: str
    outputs: list[Tensor]


@dataclass(frozen=True)
class V2Model:
    """The served model as V2 clients see it."""

    name: str
    version: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    max_batch_size: int

    @classmethod
    def of(cls, spec: ModelSpec) -> "V2Model":
        return cls(slug(spec.name), spec.version, tuple(spec.inputs), tuple(spec.outputs), spec.features.maxBatchSize)

    def check(self, name: str, version: str = "") -> None:
        """Raises NOT_FOUND unless `name` and `version` (empty: the served one) name this model."""
        if name != self.name:
            raise V2Error(Problem.NOT_FOUND, f"no model named {name!r}: this server serves {self.name!r}")
        if version not in ("", self.version):
            raise V2Error(
                Problem.NOT_FOUND, f"model {self.name!r} has no version {version!r}: this server serves {self.version}"
            )

    def items(self, request: InferRequest) -> list[dict[str, bytes]]:
        """One item per element index; raises INVALID for tensors that do not fit the model."""
        tensors = {tensor.name: tensor for tensor in request.inputs}
        problems = [f"input tensor {name!r} appears more than once" for name in repeated_names(request.inputs)]
        problems += [f"missing input tensor {name!r}" for name in self.inputs if name not in tensors]
        problems += [
            f"the model has no input {name!r}; its inputs are {list(self.inputs)}"
            for name in tensors
            if name not in self.inputs
        ]
        problems += [
            f"input {t.name!r} has datatype {t.datatype!r}: every input is BYTES (one file per element)"
            for t in tensors.values()
            if t.datatype != BYTES
        ]
        problems += [
            f"input {t.name!r} has shape {t.shape} ({element_count(t.shape)} elements) but {len(t.elements)} elements"
            for t in tensors.values()
            if element_count(t.shape) != len(t.elements)
        ]
        if problems:
            raise V2Error(Problem.INVALID, "; ".join(problems))
        counts = {name: len(tensors[name].elements) for name in self.inputs}
        if len(set(counts.values())) > 1:
            raise V2Error(Problem.INVALID, f"every input needs one element per item; the element counts are {counts}")
        count = next(iter(counts.values()), 0)
        if count == 0:
            raise V2Error(Problem.INVALID, "the request has no items: every input tensor is empty")
        if count > self.max_batch_size:
            raise V2Error(
                Problem.INVALID,
                f"{count} items in one request, over the model's maxBatchSize of {self.max_batch_size}",
            )
        return [{name: tensors[name].elements[index] for name in self.inputs} for index in range(count)]

    def response(self, request: InferRequest, results: Sequence[ItemResult]) -> InferResponse:
        """Output tensors from one result per item; raises INVALID for failed items unless partial results are asked."""
        partial = flag(request.parameters, PARTIAL_RESULTS)
        failed = [(index, result) for index, result in enumerate(results) if not result.success]
        if failed and not partial:
            raise V2Error(Problem.INVALID, _failure_message(failed, len(results)))
        produced = list(self.outputs)
        produced += sorted({name for r in results if r.success for name in r.output} - set(produced))
        names = request.requested_outputs or produced
        unknown = [name for name in names if name not in produced and not (partial and name == ERROR_TENSOR)]
        if unknown:
            raise V2Error(Problem.INVALID, f"the model has no output {unknown}; its outputs are {produced}")
        if partial and ERROR_TENSOR not in names:
            names = [*names, ERROR_TENSOR]
        return InferResponse(
            self.name,
            self.version,
            request.id,
            [Tensor(name, BYTES, [len(results)], [_element(result, name) for result in results]) for name in names],
        )


def _element(result: ItemResult, name: str) -> bytes:
    """Item's file `name`; empty where the item failed or did not return that file. The error tensor's
    element is the failure's message, empty for an item that succeeded."""
    if name == ERROR_TENSOR:
        return b"" if result.success else result.output.get(ERROR_TENSOR, b"")
    return result.output.get(name, b"") if result.success else b""


def _failure_message(failed: Sequence[tuple[int, ItemResult]], count: int) -> str:
    reasons = [
        f"item {index}: {shortened(result.output.get(ERROR_TENSOR, b'').decode(errors='replace'))}"
        for index, result in failed[:MAX_LISTED_FAILURES]
    ]
    more = f"; and {len(failed) - MAX_LISTED_FAILURES} more" if len(failed) > MAX_LISTED_FAILURES else ""
    return (
        f"{len(failed)} of {count} items failed (indices {_indices([index for index, _ in failed])}): "
        + "; ".join(reasons)
        + more
        + f" (set the request parameter {PARTIAL_RESULTS}=true for the other items' outputs and an "
        f"{ERROR_TENSOR!r} tensor)"
    )


def _indices(indices: list[int], limit: int = 50) -> str:
    return str(indices) if len(indices) <= limit else str(indices[:limit])[:-1] + ", ...]"


def shortened(reason: str) -> str:
    return reason if len(reason) <= MAX_REASON_CHARS else reason[:MAX_REASON_CHARS] + "..."


def flag(parameters: Mapping[str, Parameter], name: str) -> bool:
    """A boolean request parameter; raises INVALID for a value that is not a boolean."""
    value = parameters.get(name, False)
    if not isinstance(value, bool):
        raise V2Error(Problem.INVALID, f"parameter {name!r} must be a boolean, got {value!r}")
    return value


def repeated_names(tensors: Sequence[Tensor]) -> list[str]:
    seen: set[str] = set()
    repeated = []
    for tensor in tensors:
        if tensor.name in seen:
            repeated.append(tensor.name)
        seen.add(tensor.name)
    return repeated


def element_count(shape: Sequence[int]) -> int:
    count = 1
    for dimension in shape:
        count *= dimension
    return count if all(dimension >= 0 for dimension in shape) else -1


def split_bytes(name: str, data: bytes) -> list[bytes]:
    """BYTES elements from raw or binary tensor data: each a 4-byte little-endian length, then that many bytes."""
    elements: list[bytes] = []
    view = memoryview(data)
    offset = 0
    while offset < len(view):
        if offset + LENGTH.size > len(view):
            raise V2Error(
                Problem.INVALID,
                f"input {name!r}: the data ends inside the length of element {len(elements)} "
                "(BYTES data is a 4-byte little-endian length before each element)",
            )
        (length,) = LENGTH.unpack_from(view, offset)
        offset += LENGTH.size
        if offset + length > len(view):
            raise V2Error(
                Problem.INVALID,
                f"input {name!r}: element {len(elements)} says {length} bytes but {len(view) - offset} remain",
            )
        elements.append(view[offset : offset + length].tobytes())
        offset += length
    return elements


def joined_bytes(elements: Sequence[bytes]) -> bytes:
    """The raw/binary form of BYTES elements, as `split_bytes` reads it."""
    return b"".join(part for element in elements for part in (LENGTH.pack(len(element)), element))


def flattened(data: object) -> Iterator[object]:
    """A JSON tensor's `data` in row-major order, whether nested by shape or already flat."""
    if isinstance(data, list):
        for value in data:
            yield from flattened(value)
    else:
        yield data
