"""Numeric V2 tensors against a runtime's signature: every size a request controls is checked first."""

import struct

import pytest

from grpc_model.src.runtime import ItemResult, TensorSignature, TensorSpec
from grpc_model.src.v2 import numeric
from grpc_model.src.v2.tensors import InferRequest, InputTensor, Problem, V2Error, V2Model

SIGNATURE = TensorSignature(
    (TensorSpec("input", "FP64", (-1, 2), ("FP32", "INT32", "INT64")),),
    (TensorSpec("predict", "INT64", (-1,)), TensorSpec("predict_proba", "FP64", (-1, 2))),
)
MODEL = V2Model("m", "1.0.0", ("input.csv",), ("results.json",), max_batch_size=3)


def tensor(
    name: str, datatype: str, shape: list[int], raw: bytes | None = None, values: list[object] | None = None
) -> InputTensor:
    """A request tensor as the transports make it: raw bytes, or listed values read when asked."""
    read = None if values is None else (lambda limit: values[:limit])
    return InputTensor(name, datatype, shape, lambda limit: [], raw=raw, read_values=read)


def request(*tensors: InputTensor, outputs: tuple[str, ...] = ()) -> InferRequest:
    return InferRequest("m", "", list(tensors), list(outputs))


def refusal(*tensors: InputTensor) -> str:
    with pytest.raises(V2Error) as error:
        numeric.rows(MODEL, request(*tensors), SIGNATURE)
    assert error.value.problem is Problem.INVALID
    return str(error.value)


def test_rows_of_raw_fp32_become_fp64_rows_of_the_signature() -> None:
    raw = struct.pack("<4f", 1.5, 2.0, -3.25, 4.0)
    rows = numeric.rows(MODEL, request(tensor("input", "FP32", [2, 2], raw=raw)), SIGNATURE)
    assert [struct.unpack("<2d", row["input"]) for row in rows] == [(1.5, 2.0), (-3.25, 4.0)]


def test_listed_values_become_rows_too() -> None:
    rows = numeric.rows(MODEL, request(tensor("input", "INT64", [1, 2], values=[7, 8])), SIGNATURE)
    assert struct.unpack("<2d", rows[0]["input"]) == (7.0, 8.0)


def test_a_byte_length_that_disagrees_with_the_shape_is_refused() -> None:
    message = refusal(tensor("input", "FP64", [1000000, 2], raw=b"\0" * 16))
    assert "1000000 rows in one request, over the model's maxBatchSize of 3" in message
    message = refusal(tensor("input", "FP64", [2, 2], raw=b"\0" * 24))
    assert "shape [2, 2] of FP64 is 32 bytes, but its data has 24" in message
    assert "is 4 values, but it has 3" in refusal(tensor("input", "FP64", [2, 2], values=[1.0, 2.0, 3.0]))


def test_wrong_widths_datatypes_names_and_values_are_named() -> None:
    assert "has shape [1, 3]; the model takes [N, 2] (2 values per row)" in refusal(
        tensor("input", "FP64", [1, 3], values=[1.0, 2.0, 3.0])
    )
    assert "has shape [-1, 2]" in refusal(tensor("input", "FP64", [-1, 2], values=[]))
    assert "datatype 'BYTES'; the model takes FP64 (or FP32, INT32, INT64)" in refusal(tensor("input", "BYTES", [1, 2]))
    assert "missing input tensor 'input'" in refusal(tensor("other", "FP64", [1, 2], values=[1.0, 2.0]))
    assert "its values are not all FP64 numbers" in refusal(tensor("input", "FP64", [1, 2], values=["a", 1]))
    assert "the request has no rows" in refusal(tensor("input", "FP64", [0, 2], raw=b""))


def test_outputs_stack_the_rows_and_failed_rows_are_named() -> None:
    results = [
        ItemResult({"predict": struct.pack("<q", k), "predict_proba": struct.pack("<2d", 0.25, 0.75)}, True)
        for k in (1, 0)
    ]
    response = numeric.response(MODEL, request(outputs=("predict_proba",)), results, SIGNATURE)
    assert [(t.name, t.shape, numeric.values_of(t)) for t in response.outputs] == [
        ("predict_proba", [2, 2], [0.25, 0.75, 0.25, 0.75])
    ]
    with pytest.raises(V2Error, match="1 of 2 rows failed: row 1: ValueError: no"):
        numeric.response(MODEL, request(), [results[0], ItemResult.failure("ValueError: no")], SIGNATURE)
