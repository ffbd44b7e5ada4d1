"""The Open Inference Protocol's tensors as the framework's items, and results back, for every V2 transport.

Element i of each input tensor is item i's file of that name; output tensors are named by output
file. Transport-free: the gRPC service and the REST routes turn their wire form into `InferRequest`
and `InferResponse` back, so that both map tensors alike.
"""

import struct
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from grpc_model.src.metadata import ModelSpec, slug
from grpc_model.src.quoting import MAX_QUOTED, first_few, quoted, quoted_list
from grpc_model.src.runtime import ItemResult

BYTES = "BYTES"
ERROR_TENSOR = "error"
PARTIAL_RESULTS = "partial_results"
FLAG_PARAMETERS = ("detect_drift", "explain", PARTIAL_RESULTS)
MAX_LISTED_FAILURES = 10
MAX_REASON_CHARS = 300  # gRPC carries the message in a trailer, which clients cap (8 KiB by default)
LENGTH = struct.Struct("<I")  # a BYTES element's length prefix in raw and binary tensor data
COUNT_CEILING = 2**63
"""Element counts are computed up to here: past it (a shape of 50,000 dimensions) the exact number does not matter."""
ELEMENT_OVERHEAD_BYTES = 16
TENSOR_OVERHEAD_BYTES = 64
"""Framing in an answer per element (a tag and length, or a raw length) and per tensor or message (tags,
lengths, datatype, shape), generous: the estimate is never below the wire size."""

MAX_TENSORS = 1000  # input tensors, and outputs asked for
MAX_PARAMETERS = 1000
MAX_DIMENSIONS = 64  # numpy's own bound
"""Counts a request may carry, checked before any entry is read: each costs the event loop time (100,000 input
tensors in a 2 MB ModelInfer held it for 3 s; 300,000 parameters 1.5 s; a shape of 1M dimensions 0.8 s)."""

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
    """An answer's tensor; a request's is an InputTensor, read only once it passed the model's bounds."""

    name: str
    datatype: str
    shape: list[int]
    elements: list[bytes]
    """A BYTES tensor's elements."""
    raw: bytes | None = None
    """A numeric tensor's values as little-endian bytes (a runtime's outputs; v2/numeric.py)."""


Read = Callable[[int], Sequence[bytes]]
"""A request tensor's elements, at most as many as the argument says."""


@dataclass
class InputTensor:
    """A request's tensor as it came: its header, and a way to read its elements.

    The model reads a tensor only once its header passed every bound, and then no further than one
    element past its shape: data of any length costs at most maxBatchSize + 1 elements to refuse.
    """

    name: str
    datatype: str
    shape: list[int]
    read: Read
    raw: bytes | None = None
    """A numeric tensor's data as little-endian bytes (raw contents, binary data), for a runtime's model."""
    read_values: Callable[[int], Sequence[Any]] | None = None
    """A numeric tensor's values as the client listed them (typed contents, JSON data), at most as many as
    the argument says."""


@dataclass
class InferRequest:
    model_name: str
    model_version: str
    inputs: list[InputTensor]
    requested_outputs: list[str] = field(default_factory=list)
    parameters: Mapping[str, Parameter] = field(default_factory=dict)
    id: str = ""
    size: int = 0
    """The whole request's bytes as received, counted against the budget of bytes in flight."""


@dataclass
class InferResponse:
    model_name: str
    model_version: str
    id: str
    outputs: list[Tensor]

    @property
    def size(self) -> int:
        """At least the bytes the answer takes on the wire, counted before they are built (from references)."""
        texts = [self.model_name, self.model_version, self.id, *(tensor.name for tensor in self.outputs)]
        framing = TENSOR_OVERHEAD_BYTES * (1 + len(self.outputs))
        elements = sum(len(element) + ELEMENT_OVERHEAD_BYTES for tensor in self.outputs for element in tensor.elements)
        elements += sum(len(tensor.raw or b"") for tensor in self.outputs)
        return framing + sum(len(text.encode()) for text in texts) + elements


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
            raise V2Error(Problem.NOT_FOUND, f"no model named {quoted(name)}: this server serves {self.name!r}")
        if version not in ("", self.version):
            raise V2Error(
                Problem.NOT_FOUND,
                f"model {self.name!r} has no version {quoted(version)}: this server serves {self.version}",
            )

    def check_counts(self, inputs: int, outputs: int, parameters: int) -> None:
        """Raises INVALID for more input tensors or outputs asked for than MAX_TENSORS, or parameters than
        MAX_PARAMETERS: before the transport reads one of them. Fewer get their names checked one by one."""
        problems = []
        if inputs > MAX_TENSORS:
            problems.append(f"{inputs:,} input tensors, over {MAX_TENSORS} (the model has {len(self.inputs)})")
        if outputs > MAX_TENSORS:
            problems.append(f"{outputs:,} outputs asked for, over {MAX_TENSORS}")
        if parameters > MAX_PARAMETERS:
            problems.append(f"{parameters:,} parameters, over {MAX_PARAMETERS}")
        if problems:
            raise V2Error(Problem.INVALID, "; ".join(problems))

    def items(self, request: InferRequest) -> list[dict[str, bytes]]:
        """One item per element index; raises INVALID for tensors that do not fit the model.

        Names, datatypes and counts are checked from the tensors' headers before any data is read.
        """
        tensors = self._inputs(request.inputs)
        count = self._count(tensors)
        elements = {name: _read(tensors[name], count) for name in self.inputs}
        return [{name: elements[name][index] for name in self.inputs} for index in range(count)]

    def _inputs(self, inputs: Sequence[InputTensor]) -> dict[str, InputTensor]:
        """The request's inputs by name; raises INVALID for repeated, missing or unknown ones and other datatypes."""
        tensors = {tensor.name: tensor for tensor in inputs}
        repeated = repeated_names([tensor.name for tensor in inputs])
        missing = [name for name in self.inputs if name not in tensors]
        unknown = [name for name in tensors if name not in self.inputs]
        typed = [tensor for tensor in tensors.values() if tensor.datatype != BYTES]
        problems = []
        if repeated:
            problems.append(f"input tensor {quoted_list(repeated)} appears more than once")
        if missing:
            problems.append(f"missing input tensor {quoted_list(missing)}")
        if unknown:
            problems.append(
                f"the model has no input {quoted_list(unknown)}; its inputs are [{quoted_list(self.inputs)}]"
            )
        if typed:
            shown = [f"{quoted(t.name)} has datatype {quoted(t.datatype)}" for t in typed[:MAX_QUOTED]]
            problems.append(f"input {first_few(shown, len(typed))}: every input is BYTES (one file per element)")
        if problems:
            raise V2Error(Problem.INVALID, "; ".join(problems))
        return tensors

    def _count(self, tensors: Mapping[str, InputTensor]) -> int:
        """The number of items, from the inputs' shapes alone; raises INVALID unless it is one to maxBatchSize."""
        counts = {name: element_count(tensors[name].shape) for name in self.inputs}
        negative = [f"{quoted(name)} has shape {quoted(tensors[name].shape)}" for name, n in counts.items() if n < 0]
        if negative:
            raise V2Error(Problem.INVALID, f"input {first_few(negative, len(negative))}: a dimension is negative")
        if len(set(counts.values())) > 1:
            raise V2Error(Problem.INVALID, f"every input needs one element per item; the element counts are {counts}")
        count = next(iter(counts.values()), 0)
        if count == 0:
            raise V2Error(Problem.INVALID, "the request has no items: every input tensor is empty")
        if count > self.max_batch_size:
            raise V2Error(
                Problem.INVALID,
                f"{_count_text(count)} items in one request, over the model's maxBatchSize of {self.max_batch_size}",
            )
        return count

    def check_outputs(self, request: InferRequest) -> None:
        """Raises INVALID for an output asked for twice: before the model runs, since each copy would be answered."""
        repeated = repeated_names(request.requested_outputs)
        if repeated:
            raise V2Error(Problem.INVALID, f"output {quoted_list(repeated)} is asked for more than once")

    def response(self, request: InferRequest, results: Sequence[ItemResult]) -> InferResponse:
        """Output tensors from one result per item; raises INVALID for failed items unless partial results are asked."""
        partial = flag(request.parameters, PARTIAL_RESULTS)
        failed = [(index, result) for index, result in enumerate(results) if not result.success]
        if failed and not partial:
            raise V2Error(Problem.INVALID, _failure_message(failed, len(results)))
        produced = list(self.outputs)
        produced += sorted({name for r in results if r.success for name in r.output} - set(produced))
        names = request.requested_outputs or produced
        answerable = {*produced, *([ERROR_TENSOR] if partial else [])}
        unknown = [name for name in names if name not in answerable]
        if unknown:
            raise V2Error(
                Problem.INVALID,
                f"the model has no output {quoted_list(unknown)}; its outputs are [{quoted_list(produced)}]",
            )
        if partial and ERROR_TENSOR not in names:
            names = [*names, ERROR_TENSOR]
        return InferResponse(
            self.name,
            self.version,
            request.id,
            [Tensor(name, BYTES, [len(results)], [_element(result, name) for result in results]) for name in names],
        )


def _read(tensor: InputTensor, count: int) -> Sequence[bytes]:
    """The tensor's `count` elements, reading at most one more; raises INVALID when its data holds another number."""
    elements = tensor.read(count + 1)
    if len(elements) != count:
        found = f"more than {count}" if len(elements) > count else str(len(elements))
        raise V2Error(
            Problem.INVALID,
            f"input {quoted(tensor.name)} has shape {quoted(tensor.shape)} ({count} elements) but {found} elements",
        )
    return elements


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
        raise V2Error(Problem.INVALID, f"parameter {quoted(name)} must be a boolean, got {quoted(value)}")
    return value


def repeated_names(names: Sequence[str]) -> list[str]:
    """Each name that appears more than once, once, in order."""
    seen: set[str] = set()
    repeated: dict[str, None] = {}
    for name in names:
        if name in seen:
            repeated[name] = None
        seen.add(name)
    return list(repeated)


def element_count(shape: Sequence[int]) -> int:
    """How many elements a shape declares, up to COUNT_CEILING; -1 when a dimension is negative."""
    if any(dimension < 0 for dimension in shape):
        return -1
    if 0 in shape:
        return 0
    count = 1
    for dimension in shape:
        count = min(count * dimension, COUNT_CEILING)
    return count


def _count_text(count: int) -> str:
    return str(count) if count < COUNT_CEILING else f"over {COUNT_CEILING}"


def check_dimensions(name: str, dimensions: int) -> None:
    """Raises INVALID for a shape of more than MAX_DIMENSIONS, before the transport reads it."""
    if dimensions > MAX_DIMENSIONS:
        raise V2Error(Problem.INVALID, f"input {quoted(name)}: {dimensions:,} dimensions, over {MAX_DIMENSIONS}")


def listed(elements: Sequence[bytes]) -> Read:
    """Reads elements that came one by one (gRPC contents): a slice, whatever their number."""
    return lambda limit: elements[:limit]


def packed(name: str, data: bytes) -> Read:
    """Reads BYTES elements from raw or binary tensor data (`split_bytes`) when the model asks."""
    return lambda limit: split_bytes(name, data, limit)


def split_bytes(name: str, data: bytes, limit: int) -> list[bytes]:
    """Up to `limit` BYTES elements from raw or binary tensor data: each a 4-byte little-endian length, then
    that many bytes. Stops at the limit, so a tensor of millions of elements costs no more than the limit."""
    elements: list[bytes] = []
    view = memoryview(data)
    offset = 0
    while offset < len(view) and len(elements) < limit:
        if offset + LENGTH.size > len(view):
            raise V2Error(
                Problem.INVALID,
                f"input {quoted(name)}: the data ends inside the length of element {len(elements)} "
                "(BYTES data is a 4-byte little-endian length before each element)",
            )
        (length,) = LENGTH.unpack_from(view, offset)
        offset += LENGTH.size
        if offset + length > len(view):
            raise V2Error(
                Problem.INVALID,
                f"input {quoted(name)}: element {len(elements)} says {length} bytes but {len(view) - offset} remain",
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
