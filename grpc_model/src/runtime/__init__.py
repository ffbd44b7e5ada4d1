"""The model runtime: loading the wrapper and scheduling items through it."""

from grpc_model.src.runtime.batching import QueueFullError
from grpc_model.src.runtime.items import ItemResult
from grpc_model.src.runtime.loader import WrapperImportError, WrapperSource
from grpc_model.src.runtime.model_runtime import (
    EngineOptions,
    ModelLoadError,
    ModelNotLoadedError,
    ModelRuntime,
    ModelUnavailableError,
)
from grpc_model.src.runtime.signature import TensorSignature, TensorSpec

__all__ = [
    "EngineOptions",
    "ItemResult",
    "ModelLoadError",
    "ModelNotLoadedError",
    "ModelRuntime",
    "ModelUnavailableError",
    "QueueFullError",
    "TensorSignature",
    "TensorSpec",
    "WrapperImportError",
    "WrapperSource",
]
