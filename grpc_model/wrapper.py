"""The contract between your model and the server: the framework's one public module for models.

Subclass `ModelWrapper` in `model_lib/src/model.py` (or any module you like). The server never
looks inside your model; it only calls the methods below, so any library, framework or hardware
works. This module ships in the `grpc-model` package, so a model project that depends on the
package imports it as `grpc_model.wrapper`; it changes only compatibly within a major version
(docs/package.md).
"""

import json
from typing import Any, ClassVar

ModelInput = dict[str, bytes]
"""One input item: file name (as declared under `inputs` in model.yaml) to its bytes."""

ModelOutput = dict[str, bytes]
"""One output item: file name (as declared under `outputs` in model.yaml) to its bytes."""

RESULTS_FILENAME = "results.json"
ERROR_KEY = "error"


class ModelWrapper:
    """Subclass this and fill in `__init__` and `handle_single_input`.

    The server creates exactly one instance, on the first Status call (or at start-up
    when configured), so `__init__` is the place for one-time work such as loading
    weights. Raising from `__init__` makes Status answer 500 with your message; the
    server keeps running and a later Status call tries again.

    The seed template named the methods `handle_discrete_input` and
    `handle_discrete_input_batch`; wrappers written with those names work unchanged.
    """

    thread_safe: ClassVar[bool] = False
    """Set to True only if one instance may run several calls at once on different threads
    (true of most models that release the GIL, e.g. PyTorch inference without shared state).
    The server then allows `GRPC_MODEL_MODEL_THREADS` > 1; otherwise calls run one at a time."""

    run_on_event_loop: ClassVar[bool] = False
    """Set to True only if every call takes microseconds and never waits (a lookup, a formula):
    calls then run on the server's event loop, which saves the hand-off to a model thread, but
    nothing else is served while one runs and the run timeout cannot cut it short. Ignored with
    worker processes."""

    def handle_single_input(self, model_input: ModelInput, detect_drift: bool, explain: bool) -> ModelOutput:
        """Run the model on one item and return its output files.

        Raise an exception to fail this item only: the caller receives
        `success=false` and `{"error": "<ExceptionType>: <your message>"}` for it.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement handle_single_input")

    def handle_input_batch(
        self, model_inputs: list[ModelInput], detect_drift: bool, explain: bool
    ) -> list[ModelOutput]:
        """Optionally run the model on several items at once (for example one GPU pass).

        Must return exactly one output per input, in the same order. If it raises,
        or returns the wrong number of outputs, the server falls back to
        `handle_single_input` for each item, so a batch method can never lose items.
        """
        raise NotImplementedError


def results_json(result: Any, explanation: Any = None, drift: Any = None) -> bytes:
    """Encode the platform's standard results document.

    `{"data": {"result": ..., "explanation": ..., "drift": ...}}` is what clients of the
    protocol parse, so every model reports results in this envelope.
    """
    document = {"data": {"result": result, "explanation": explanation, "drift": drift}}
    return json.dumps(document, ensure_ascii=False).encode("utf-8")


def success_output(result: Any, explanation: Any = None, drift: Any = None) -> ModelOutput:
    """The standard successful output item: a single `results.json` file."""
    return {RESULTS_FILENAME: results_json(result, explanation, drift)}


def failure_output(message: str) -> ModelOutput:
    """The output the server sends for a failed item: `{"error": <message>}`.

    The server builds it from the exception a wrapper raises. To fail an item, raise: an output
    returned by your wrapper counts as a success, whatever it holds.
    """
    return {ERROR_KEY: message.encode("utf-8", "backslashreplace")}  # any str, even lone surrogates
