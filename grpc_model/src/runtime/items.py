"""Running the wrapper on a list of items, with the fallback from batch to single items.

This is the one place that calls user code for inference, so it is the one place that
guarantees the contract: exactly one well-formed result per item, in order, whatever
the wrapper does.
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from grpc_model.src.runtime.loader import LoadedModel
from grpc_model.wrapper import ModelInput, failure_output

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ItemResult:
    """The outcome of one input item: the wrapper's output files, or `{"error": ...}`."""

    output: dict[str, bytes]
    success: bool

    @classmethod
    def failure(cls, message: str) -> "ItemResult":
        return cls(failure_output(message), success=False)


def process_items(
    model: LoadedModel, items: Sequence[ModelInput], detect_drift: bool, explain: bool
) -> list[ItemResult]:
    """Runs one batch call when it can, else (or when it misbehaves) one call per item."""
    if len(items) > 1 and model.batch is not None:
        batch_results = _try_batch(model, items, detect_drift, explain)
        if batch_results is not None:
            return batch_results
    return [_single(model, item, detect_drift, explain) for item in items]


def _try_batch(
    model: LoadedModel, items: Sequence[ModelInput], detect_drift: bool, explain: bool
) -> list[ItemResult] | None:
    assert model.batch is not None
    try:
        outputs = model.batch(list(items), detect_drift, explain)
    except NotImplementedError:
        logger.debug("%s has no batch method; processing %d items one at a time", model.name, len(items))
        return None
    # BaseException: a model calling sys.exit() must fail its items, not stop the server.
    except BaseException as error:
        # One line: a culprit item raises again when it runs alone, and logs its traceback then.
        logger.warning(
            "%s batch method raised %s; processing %d items one at a time", model.name, describe(error), len(items)
        )
        logger.debug("the batch method's traceback", exc_info=True)  # for a bug in the batch code itself
        return None
    if not isinstance(outputs, list | tuple) or len(outputs) != len(items):
        count = f"{len(outputs)} outputs" if isinstance(outputs, list | tuple) else type(outputs).__name__
        logger.error(
            "%s batch method returned %s for %d inputs; processing items one at a time", model.name, count, len(items)
        )
        return None
    return [_checked(output, model.name) for output in outputs]


def _single(model: LoadedModel, item: ModelInput, detect_drift: bool, explain: bool) -> ItemResult:
    try:
        output = model.single(item, detect_drift, explain)
    except BaseException as error:
        logger.exception("%s failed on an item", model.name)
        return ItemResult.failure(describe(error))
    return _checked(output, model.name)


def describe(error: BaseException) -> str:
    """`Type: message`, even for an exception whose str() itself raises."""
    try:
        return f"{type(error).__name__}: {error}"
    except Exception:
        return f"{type(error).__name__} (its message could not be read)"


def _checked(output: Any, model_name: str) -> ItemResult:
    """Turns a wrapper's return value into a result, or an item error if it is not dict[str, bytes]."""
    if not isinstance(output, dict):
        message = f"{model_name} returned {type(output).__name__} for this item; expected dict[str, bytes]"
        logger.error(message)
        return ItemResult.failure(message)
    files: dict[str, bytes] = {}
    for name, content in output.items():
        if not isinstance(name, str) or not isinstance(content, bytes | bytearray | memoryview):
            message = (
                f"{model_name} returned output {str(name)[:80]!r} of type {type(content).__name__}; "
                "expected file names (str) mapped to bytes"
            )
            logger.error(message)
            return ItemResult.failure(message)
        files[name] = bytes(content)
    return ItemResult(files, success=True)
