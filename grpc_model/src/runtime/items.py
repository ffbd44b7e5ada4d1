"""Running the wrapper on a list of items, with the fallback from batch to single items.

This is the one place that calls user code for inference, so it is the one place that
guarantees the contract: exactly one well-formed result per item, in order, whatever
the wrapper does.
"""

import logging
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from grpc_model.src.runtime.loader import LoadedModel
from model_lib.src.model_wrapper import ModelInput, failure_output

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
        if isinstance(batch_results, list):
            return batch_results
        results = [_single(model, item, detect_drift, explain) for item in items]
        if batch_results is not None and all(result.success for result in results):
            # No culprit item said why: the batch code itself is at fault, and every batch now costs a call per item.
            logger.warning(
                "%s batch method raised %s, though each of its %d items succeeds alone; they ran one at a time",
                model.name,
                describe(batch_results),
                len(items),
            )
        return results
    return [_single(model, item, detect_drift, explain) for item in items]


def _try_batch(
    model: LoadedModel, items: Sequence[ModelInput], detect_drift: bool, explain: bool
) -> list[ItemResult] | BaseException | None:
    """The batch's results; else None, or what the batch method raised, and its items are to run alone."""
    assert model.batch is not None
    try:
        outputs = model.batch(list(items), detect_drift, explain)
    except NotImplementedError:
        logger.debug("%s has no batch method; processing %d items one at a time", model.name, len(items))
        return None
    # BaseException: a model calling sys.exit() must fail its items, not stop the server.
    except BaseException as error:
        # At DEBUG: a culprit item raises again when it runs alone and says why then, at WARNING.
        logger.debug(
            "%s batch method raised %s; processing %d items one at a time",
            model.name,
            describe(error),
            len(items),
            exc_info=True,
        )
        return error
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
        _log_item_error(model.name, error)
        return ItemResult.failure(describe(error))
    return _checked(output, model.name)


MAX_TRACEBACKS_SHOWN = 1000
"""Distinct errors whose first traceback is shown; past that, every traceback is at DEBUG."""
_tracebacks_shown: set[tuple[str, str, int]] = set()


def _log_item_error(model_name: str, error: BaseException) -> None:
    """One WARNING line per item the model raised for: a bad input is the client's problem, and the caller has
    the error. The traceback comes with the first error of each type and place (a bug in the model shows its
    stack once), later ones at DEBUG. A model that exits (SystemExit, KeyboardInterrupt) is an ERROR."""
    if not isinstance(error, Exception):
        logger.exception("%s failed on an item: %s", model_name, describe(error))
        return
    site = traceback.extract_tb(error.__traceback__)[-1] if error.__traceback__ else None
    key = (type(error).__qualname__, site.filename if site else "", (site.lineno or 0) if site else 0)
    if key not in _tracebacks_shown and len(_tracebacks_shown) < MAX_TRACEBACKS_SHOWN:
        _tracebacks_shown.add(key)
        logger.warning(
            "%s failed on an item: %s; traceback below (once per error type and place; later ones at DEBUG)",
            model_name,
            describe(error),
            exc_info=error,
        )
        return
    logger.warning("%s failed on an item: %s", model_name, describe(error))
    logger.debug("the traceback of %s on that item", model_name, exc_info=error)


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
