"""The wrapper every runtime is: items of rows in, one vectorised library call per batch, rows out.

An item is either a file of rows (CSV or JSON, the ModzyModel way; answered with `results.json`) or
one row of each input tensor (the V2 way; answered with one row of each output tensor). Rows of all
the items of a batch go to the library in one call, and are split back by item.
"""

import json
import logging
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from grpc_model.src.runtime.signature import BYTES, ITEM_SIZES, TensorSignature, TensorSpec
from grpc_model.src.runtimes.config import RuntimeConfig, RuntimeLoadError
from grpc_model.src.runtimes.documents import InputError, read_rows
from grpc_model.wrapper import ModelInput, ModelOutput, ModelWrapper, success_output

logger = logging.getLogger(__name__)

Arrays = dict[str, npt.NDArray[Any]]

NUMPY_TYPES = {
    "FP32": "<f4",
    "FP64": "<f8",
    "INT8": "<i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "UINT8": "<u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "BOOL": "?",
}
assert NUMPY_TYPES.keys() == ITEM_SIZES.keys()
TABULAR_ACCEPTS = ("FP32", "INT32", "INT64")
"""What the scikit-learn, XGBoost and LightGBM input takes besides FP64 (converted exactly, but INT64 past 2**53)."""


def v2_datatype(dtype: np.dtype[Any]) -> str:
    """The V2 datatype of a numpy dtype; BYTES for text and objects (class labels that are strings)."""
    for name, code in NUMPY_TYPES.items():
        if dtype == np.dtype(code):
            return name
    return BYTES


class TabularRuntime(ModelWrapper):
    """Subclasses read the file in `load` and make the one library call in `predict`."""

    kind: ClassVar[str]

    def __init__(self, config: RuntimeConfig) -> None:
        self.config = config
        self.load(config)
        inputs = self.input_specs()
        if config.input_file in {tensor.name for tensor in inputs}:
            raise RuntimeLoadError(
                f"the model's input tensor and model.yaml's input file are both named {config.input_file!r}: "
                "rename the file under inputs in model.yaml (e.g. input.csv)"
            )
        width = sum(tensor.row_elements for tensor in inputs)
        self.features = list(config.features) or self.own_feature_names(width)
        if len(self.features) != width:
            raise RuntimeLoadError(
                f"runtime.features names {len(self.features)} features but the model takes {width} per row"
            )
        self._signature = TensorSignature(inputs, self.output_specs(inputs))

    def tensor_signature(self) -> TensorSignature:
        return self._signature

    # What each runtime provides.
    def load(self, config: RuntimeConfig) -> None:
        """Reads the model file; raises RuntimeLoadError (or the library's own error) when it cannot."""
        raise NotImplementedError

    def input_specs(self) -> tuple[TensorSpec, ...]:
        raise NotImplementedError

    def predict(self, inputs: Arrays) -> Arrays:
        """One library call on every row; outputs by name, each with one entry per row."""
        raise NotImplementedError

    def own_feature_names(self, width: int) -> list[str]:
        """The column names when model.yaml names none: the model's own where it keeps them."""
        return [f"x{index}" for index in range(width)]

    def output_specs(self, inputs: tuple[TensorSpec, ...]) -> tuple[TensorSpec, ...]:
        """The outputs, found by running the model on one row of zeros (their widths depend on the model)."""
        probe = {tensor.name: np.zeros((1, *tensor.shape[1:]), dtype=NUMPY_TYPES[tensor.datatype]) for tensor in inputs}
        try:
            outputs = self.predict(probe)
        except Exception as error:
            raise RuntimeLoadError(f"the model fails on a row of zeros: {type(error).__name__}: {error}") from error
        return tuple(
            TensorSpec(name, v2_datatype(value.dtype), (-1, *value.shape[1:])) for name, value in outputs.items()
        )

    def row_result(self, outputs: Arrays, row: int) -> object:
        """One row's entry in results.json: each output's value by name."""
        return {name: value[row].tolist() for name, value in outputs.items()}

    # The wrapper contract.
    def handle_single_input(self, model_input: ModelInput, detect_drift: bool, explain: bool) -> ModelOutput:
        return self.handle_input_batch([model_input], detect_drift, explain)[0]

    def handle_input_batch(
        self, model_inputs: list[ModelInput], detect_drift: bool, explain: bool
    ) -> list[ModelOutput]:
        """Raises InputError for an item that cannot be read: the server then runs each item alone, so that
        only that item fails, with this message."""
        parts = [self._arrays(item) for item in model_inputs]
        counts = [len(next(iter(part.values()))) for part in parts]
        stacked = {
            tensor.name: np.concatenate([part[tensor.name] for part in parts]) for tensor in self._signature.inputs
        }
        outputs = self.predict(stacked)
        answers = []
        start = 0
        for item, count in zip(model_inputs, counts, strict=True):
            rows = {name: value[start : start + count] for name, value in outputs.items()}
            answers.append(
                self._document_output(rows, count) if self.config.input_file in item else self._row_output(rows)
            )
            start += count
        return answers

    def _arrays(self, item: ModelInput) -> Arrays:
        """The item's rows as one array per input tensor."""
        document = item.get(self.config.input_file)
        if document is not None:
            matrix = read_rows(document, self.features)
            arrays = {}
            column = 0
            for tensor in self._signature.inputs:
                width = tensor.row_elements
                part = matrix[:, column : column + width].reshape(len(matrix), *tensor.shape[1:])
                arrays[tensor.name] = self._cast(part, tensor)
                column += width
            return arrays
        arrays = {}
        for tensor in self._signature.inputs:
            data = item.get(tensor.name)
            if data is None or len(data) != tensor.row_bytes:
                raise InputError(f"a row item needs {tensor.row_bytes} bytes of input {tensor.name!r}")
            row = np.frombuffer(data, dtype=NUMPY_TYPES[tensor.datatype])
            arrays[tensor.name] = row.reshape(1, *tensor.shape[1:])
        return arrays

    @staticmethod
    def _cast(values: npt.NDArray[np.float64], tensor: TensorSpec) -> npt.NDArray[Any]:
        dtype = np.dtype(NUMPY_TYPES[tensor.datatype])
        if dtype.kind in "iub" and not np.all(np.isfinite(values) & (values == np.round(values))):
            raise InputError(f"input {tensor.name!r} takes {tensor.datatype}: every value must be a whole number")
        return values.astype(dtype)

    def _row_output(self, rows: Arrays) -> ModelOutput:
        output = {}
        for tensor in self._signature.outputs:
            value = rows[tensor.name][0]
            if tensor.datatype == BYTES:
                output[tensor.name] = str(value.item() if isinstance(value, np.generic) else value).encode()
            else:
                output[tensor.name] = np.ascontiguousarray(value, dtype=NUMPY_TYPES[tensor.datatype]).tobytes()
        return output

    def _document_output(self, rows: Arrays, count: int) -> ModelOutput:
        return success_output([self.row_result(rows, row) for row in range(count)])


def classifier_outputs(predicted: npt.NDArray[Any], probabilities: npt.NDArray[Any] | None) -> Arrays:
    """MLServer's output names: `predict`, and `predict_proba` where the model has it."""
    outputs = {"predict": predicted}
    if probabilities is not None:
        outputs["predict_proba"] = probabilities
    return outputs


def labelled_row(outputs: Arrays, row: int, classes: Sequence[Any]) -> dict[str, Any]:
    """A row of a scikit-learn-like model: its prediction, and each class's probability by label."""
    result: dict[str, Any] = {"prediction": _plain(outputs["predict"][row])}
    if "predict_proba" in outputs:
        probabilities = outputs["predict_proba"][row].tolist()
        result["probabilities"] = {str(label): p for label, p in zip(classes, probabilities, strict=True)}
    return result


def _plain(value: Any) -> Any:
    """A JSON value from a numpy scalar or array."""
    plain = value.tolist() if isinstance(value, np.ndarray | np.generic) else value
    return plain if isinstance(plain, int | float | str | bool | list) or plain is None else json.dumps(plain)
