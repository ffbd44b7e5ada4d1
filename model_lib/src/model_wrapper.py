"""The wrapper contract, re-exported so that models written against this path run unchanged.

The contract lives in the framework's package (`grpc_model.wrapper`), which ships in its wheel;
new code imports it from there.
"""

from grpc_model.wrapper import (
    ERROR_KEY,
    RESULTS_FILENAME,
    ModelInput,
    ModelOutput,
    ModelWrapper,
    failure_output,
    results_json,
    success_output,
)

__all__ = [
    "ERROR_KEY",
    "RESULTS_FILENAME",
    "ModelInput",
    "ModelOutput",
    "ModelWrapper",
    "failure_output",
    "results_json",
    "success_output",
]
