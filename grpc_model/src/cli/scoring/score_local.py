"""`grpc-model score --in-process`: the model in this process, with the server's checks and batching rules."""

import asyncio
from pathlib import Path

from grpc_model.src.cli.scoring.backend import Answer, Backend, Options
from grpc_model.src.cli.scoring.score_io import ScoreInputError
from grpc_model.src.metadata import BundleError, load_bundle
from grpc_model.src.runtime.items import ItemResult, describe, process_items
from grpc_model.src.runtimes import model_source
from grpc_model.src.validation import InputValidator
from grpc_model.wrapper import ModelInput


def local_backend(
    model_class: str, bundles: Path, version: str, options: Options
) -> tuple[list[str], list[str], Backend]:
    """(input names, output names, backend): items are checked against model.yaml as the server would, then
    run through the wrapper in slices of maxBatchSize, one call at a time on a thread off the event loop."""
    try:
        bundle = load_bundle(bundles, version)
    except BundleError as error:
        raise ScoreInputError(str(error)) from None
    try:
        model = model_source(bundle, model_class).load()
    except BaseException as error:  # the author's __init__ may raise anything
        raise ScoreInputError(f"{model_class} failed to load: {describe(error)}") from None
    validator = InputValidator(bundle.spec)
    size = bundle.spec.features.maxBatchSize if model.batch is not None else 1
    lock = asyncio.Lock()  # one model call at a time: the wrapper need not be thread-safe

    def run(items: list[ModelInput]) -> list[Answer]:
        results: list[ItemResult | None] = [None] * len(items)
        valid = []
        for index, item in enumerate(items):
            checked, rejected = validator.check(item)
            if rejected is not None:
                results[index] = ItemResult.failure(rejected)
            else:
                valid.append((index, checked))
        for start in range(0, len(valid), size):
            chunk = valid[start : start + size]
            answers = process_items(model, [item for _, item in chunk], options.detect_drift, options.explain)
            for (index, _), result in zip(chunk, answers, strict=True):
                results[index] = result
        return [(result.success, result.output) for result in results if result is not None]

    async def backend(items: list[ModelInput]) -> list[Answer]:
        async with lock:
            return await asyncio.to_thread(run, items)

    return list(bundle.spec.inputs), list(bundle.spec.outputs), backend
