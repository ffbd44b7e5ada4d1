"""A model's numeric tensors: what a runtime declares so that V2 clients can send numbers, not files.

A wrapper with a `tensor_signature()` method takes, besides its file items, row items: one per row
of its input tensors, each input's row as little-endian bytes of its datatype, keyed by input name.
It answers a row item with each output's row the same way. The first dimension of every tensor is the
row (batch) dimension, -1 in `shape`.
"""

from dataclasses import dataclass

ITEM_SIZES = {"FP32": 4, "FP64": 8, "INT8": 1, "INT16": 2, "INT32": 4, "INT64": 8, "UINT8": 1, "UINT16": 2}
ITEM_SIZES |= {"UINT32": 4, "UINT64": 8, "BOOL": 1}
"""Bytes per element of the numeric V2 datatypes a signature may use (BYTES, variable, is the other)."""
BYTES = "BYTES"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str
    shape: tuple[int, ...]
    """The first dimension is the rows (-1); a later -1 is a size only known per call (outputs only)."""
    accepts: tuple[str, ...] = ()
    """Other datatypes a client may send for this input, converted to `datatype` before the model sees them."""

    @property
    def row_elements(self) -> int:
        """Elements per row; -1 when a dimension after the first is not fixed."""
        count = 1
        for dimension in self.shape[1:]:
            if dimension < 0:
                return -1
            count *= dimension
        return count

    @property
    def row_bytes(self) -> int:
        """Bytes per row of a numeric tensor with fixed dimensions; -1 otherwise."""
        elements = self.row_elements
        return -1 if elements < 0 or self.datatype not in ITEM_SIZES else elements * ITEM_SIZES[self.datatype]


@dataclass(frozen=True)
class TensorSignature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def __post_init__(self) -> None:
        for tensor in self.inputs:
            if tensor.row_bytes < 0:
                raise ValueError(
                    f"input {tensor.name!r}: {tensor.datatype} {list(tensor.shape)}: every input needs a numeric "
                    "datatype and a fixed size per row"
                )
