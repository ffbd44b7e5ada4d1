"""The model runtime: loading the wrapper and running items through it."""

from grpc_model.src.runtime.items import ItemResult
from grpc_model.src.runtime.loader import WrapperImportError
from grpc_model.src.runtime.model_runtime import ModelLoadError, ModelNotLoadedError, ModelRuntime

__all__ = ["ItemResult", "ModelLoadError", "ModelNotLoadedError", "ModelRuntime", "WrapperImportError"]
