"""ONNX Runtime: any graph with numeric tensor inputs, under its own tensor names, shapes and types.

Threads per call come from resources.cpu.count; the CUDA provider is used when resources.gpu.count asks
for a GPU and onnxruntime has it (onnxruntime-gpu), which this project does not test.
"""

import logging
from typing import Any

import numpy as np
import onnxruntime

from grpc_model.src.runtime.signature import TensorSpec
from grpc_model.src.runtimes.config import RuntimeConfig, RuntimeLoadError
from grpc_model.src.runtimes.tabular import Arrays, TabularRuntime

logger = logging.getLogger(__name__)

DATATYPES = {
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(bool)": "BOOL",
}
CUDA = "CUDAExecutionProvider"


class OnnxRuntime(TabularRuntime):
    kind = "onnx"

    def load(self, config: RuntimeConfig) -> None:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = config.threads
        options.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        if config.gpu and CUDA in onnxruntime.get_available_providers():
            providers.insert(0, CUDA)
        elif config.gpu:
            logger.warning("resources.gpu asks for a GPU but onnxruntime has no %s: running on the CPU", CUDA)
        self.session = onnxruntime.InferenceSession(str(config.path), options, providers=providers)
        self.inputs = tuple(_spec(node, "input") for node in self.session.get_inputs())
        self.one_row = any(node.shape and node.shape[0] == 1 for node in self.session.get_inputs())
        outputs = []
        for node in self.session.get_outputs():
            if node.type in DATATYPES:
                outputs.append(_spec(node, "output"))
            else:
                logger.warning("ONNX output %r is %s, not a numeric tensor: it is not served", node.name, node.type)
        if not outputs:
            raise RuntimeLoadError("the graph has no numeric tensor output to serve")
        self.outputs = tuple(outputs)

    def input_specs(self) -> tuple[TensorSpec, ...]:
        return self.inputs

    def output_specs(self, inputs: tuple[TensorSpec, ...]) -> tuple[TensorSpec, ...]:
        return self.outputs

    def own_feature_names(self, width: int) -> list[str]:
        if len(self.inputs) == 1:
            return super().own_feature_names(width)
        return [
            tensor.name if tensor.row_elements == 1 else f"{tensor.name}_{index}"
            for tensor in self.inputs
            for index in range(tensor.row_elements)
        ]

    def predict(self, inputs: Arrays) -> Arrays:
        names = [tensor.name for tensor in self.outputs]
        if not self.one_row:
            return dict(zip(names, self.session.run(names, inputs), strict=True))
        # A graph exported for one row at a time (first dimension 1): a call per row.
        count = len(next(iter(inputs.values())))
        rows = [
            self.session.run(names, {name: value[i : i + 1] for name, value in inputs.items()}) for i in range(count)
        ]
        return {name: np.concatenate([row[index] for row in rows]) for index, name in enumerate(names)}


def _spec(node: Any, what: str) -> TensorSpec:
    datatype = DATATYPES.get(node.type)
    if datatype is None:
        raise RuntimeLoadError(f"ONNX {what} {node.name!r} is {node.type}: the onnx runtime serves numeric tensors")
    shape = [dimension if isinstance(dimension, int) else -1 for dimension in node.shape]
    if not shape or shape[0] not in (-1, 1):
        raise RuntimeLoadError(
            f"ONNX {what} {node.name!r} has shape {node.shape}: its first dimension must be the rows (dynamic or 1)"
        )
    if what == "input" and -1 in shape[1:]:
        raise RuntimeLoadError(
            f"ONNX input {node.name!r} has shape {node.shape}: only its first dimension (the rows) may be dynamic"
        )
    return TensorSpec(node.name, datatype, (-1, *shape[1:]))
