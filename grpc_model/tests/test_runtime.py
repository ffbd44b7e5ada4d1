"""The model runtime without gRPC: loading the wrapper and the batch/single contract."""

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from grpc_model.src.runtime import EngineOptions, ModelLoadError, ModelNotLoadedError, ModelRuntime, WrapperImportError
from grpc_model.src.runtime.batching import TIMEOUT_MESSAGE
from grpc_model.src.runtime.items import ItemResult
from grpc_model.tests.conftest import TESTS
from grpc_model.tests.wrappers import Echo, Gated


def make_runtime(model_class: str, max_batch_size: int = 4, **options: Any) -> ModelRuntime:
    return ModelRuntime(model_class, EngineOptions(max_batch_size=max_batch_size, **options))


def run(model_runtime: ModelRuntime, items: list[dict[str, bytes]], drift: bool = False) -> list[ItemResult]:
    async def load_and_run() -> list[ItemResult]:
        await model_runtime.load()
        try:
            return await model_runtime.run(items, drift, False)
        finally:
            await model_runtime.close()

    return asyncio.run(load_and_run())


@pytest.mark.parametrize(
    ("model_class", "message"),
    [
        ("pkg.mod:", "must look like 'package.module' or 'package.module:ClassName'"),
        ("..relative:Model", "must look like 'package.module' or 'package.module:ClassName'"),  # TypeError before
        ("no.such.module:Model", "cannot import module 'no.such.module'"),
        ("no.such.module", "cannot import module 'no.such.module'"),
        (TESTS, "must define exactly one model class"),
        (f"{TESTS}:Missing", "has no class 'Missing'"),
        (f"{TESTS}:NoMethods", "must define one of handle_single_input or handle_discrete_input"),
    ],
)
def test_a_wrong_model_class_is_named_at_construction(model_class: str, message: str) -> None:
    with pytest.raises(WrapperImportError, match=message.replace("(", r"\(")):
        make_runtime(model_class, 4)


def write_module(directory: Path, name: str, source: str, monkeypatch: pytest.MonkeyPatch) -> str:
    (directory / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(directory))
    return name


WRAPPER_MODULE = """
from model_lib.src.model_wrapper import ModelWrapper, success_output

class Base(ModelWrapper):
    def handle_single_input(self, model_input, detect_drift, explain):
        return success_output("base")

class Mine(Base):
    pass

class Helper:
    pass
"""


def test_a_module_path_serves_its_one_model_class_whatever_its_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = write_module(tmp_path, "authors_model", WRAPPER_MODULE, monkeypatch)
    assert make_runtime(module).wrapper_class.__name__ == "Mine"  # the base class it extends is not a candidate
    assert make_runtime(f"{module}:Base").wrapper_class.__name__ == "Base"  # named explicitly, any class serves


def test_a_module_with_two_model_classes_asks_which(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = WRAPPER_MODULE + "\nclass Other(Base):\n    pass\n"
    module = write_module(tmp_path, "two_models", source, monkeypatch)
    with pytest.raises(
        WrapperImportError, match=f"it defines: Mine, Other.*GRPC_MODEL_MODEL_CLASS={module}:<ClassName>"
    ):
        make_runtime(module)


def test_a_seed_template_wrapper_is_found_by_its_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = (
        "class Legacy:\n    def handle_discrete_input(self, model_input, detect_drift, explain):\n        return {}\n"
    )
    assert make_runtime(write_module(tmp_path, "seed_model", source, monkeypatch)).wrapper_class.__name__ == "Legacy"


def test_run_before_load_raises() -> None:
    runtime = make_runtime(f"{TESTS}:Echo", 4)
    with pytest.raises(ModelNotLoadedError, match="call Status first"):
        asyncio.run(runtime.run([{"a": b"1"}], False, False))


def test_load_error_carries_the_models_message() -> None:
    runtime = make_runtime(f"{TESTS}:FailingInit", 4)
    with pytest.raises(ModelLoadError, match="FailingInit failed to load: RuntimeError: weights file"):
        asyncio.run(runtime.load())
    assert not runtime.is_loaded


def test_run_after_a_failed_load_names_the_loads_error() -> None:
    runtime = make_runtime(f"{TESTS}:FailingInit", 4)
    with pytest.raises(ModelLoadError):
        asyncio.run(runtime.load())
    with pytest.raises(ModelNotLoadedError, match="the last load failed: RuntimeError: weights file"):
        asyncio.run(runtime.run([{"a": b"1"}], False, False))


def test_concurrent_loads_instantiate_once() -> None:
    runtime = make_runtime(f"{TESTS}:SlowInit", 4)

    async def load_three_times() -> list[bool]:
        return list(await asyncio.gather(runtime.load(), runtime.load(), runtime.load()))

    assert sorted(asyncio.run(load_three_times())) == [False, False, True]


def test_items_are_sliced_by_max_batch_size() -> None:
    Echo.batch_sizes.clear()
    results = run(make_runtime(f"{TESTS}:Echo", 4), [{"i": bytes([i])} for i in range(10)])

    assert Echo.batch_sizes == [4, 4, 2]
    assert [r.output["i"] for r in results] == [bytes([i]) for i in range(10)]


def test_a_single_item_uses_the_single_method() -> None:
    Echo.batch_sizes.clear()
    results = run(make_runtime(f"{TESTS}:Echo", 4), [{"i": b"x"}])
    assert Echo.batch_sizes == []
    assert results[0].success


def test_seed_template_method_names_are_used() -> None:
    runtime_results = run(make_runtime(f"{TESTS}:SeedNames", 4), [{"a": b""}, {"a": b""}])
    assert [r.output for r in runtime_results] == [{"batch.txt": b"1"}] * 2
    single = run(make_runtime(f"{TESTS}:SeedNames", 4), [{"a": b""}])
    assert single[0].output == {"single.txt": b"1"}


def test_output_that_is_not_bytes_fails_only_that_item() -> None:
    results = run(make_runtime(f"{TESTS}:BadOutput", 1), [{"a": b""}, {"not-a-dict": b""}])
    assert [r.success for r in results] == [False, False]
    assert b"output 'results.json' of type str" in results[0].output["error"]
    assert b"returned list for this item" in results[1].output["error"]


def test_sys_exit_in_the_model_fails_the_item_not_the_server() -> None:
    results = run(make_runtime(f"{TESTS}:Exiting", 1), [{"a": b""}])
    assert results == [ItemResult({"error": b"SystemExit: 3"}, success=False)]


REFUSING_MODULE = """
from model_lib.src.model_wrapper import ModelWrapper

class Refuses(ModelWrapper):
    def handle_single_input(self, model_input, detect_drift, explain):
        if model_input["a"].startswith(b"bad"):
            raise ValueError("cannot read " + model_input["a"].decode())
        if model_input["a"] == b"other":
            raise KeyError("column")
        return {"a": model_input["a"]}
"""


def test_an_item_the_model_refuses_is_one_warning_line_with_its_traceback_once_per_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    module = write_module(tmp_path, "refusing_model", REFUSING_MODULE, monkeypatch)  # a raise site of its own
    items = [{"a": b"bad-1"}, {"a": b"good"}, {"a": b"bad-2"}, {"a": b"other"}]
    with caplog.at_level(logging.DEBUG, logger="grpc_model.src.runtime.items"):
        results = run(make_runtime(module, 1), items)

    assert [result.success for result in results] == [False, True, False, False]
    records = [record for record in caplog.records if record.name == "grpc_model.src.runtime.items"]
    warnings = [record for record in records if record.levelno == logging.WARNING]
    assert [record.getMessage().split(";")[0] for record in warnings] == [
        "Refuses failed on an item: ValueError: cannot read bad-1",  # a bad input is the client's problem
        "Refuses failed on an item: ValueError: cannot read bad-2",
        "Refuses failed on an item: KeyError: 'column'",
    ]
    assert [record.exc_info is not None for record in warnings] == [True, False, True]  # once per error and place
    assert not [record for record in records if record.levelno >= logging.ERROR]
    repeated = [record for record in records if record.levelno == logging.DEBUG and record.exc_info]
    assert len(repeated) == 1  # the second ValueError's traceback, for whoever turns DEBUG on


def item_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "grpc_model.src.runtime.items" and record.levelno >= logging.WARNING
    ]


def test_a_bad_item_in_a_batch_is_one_warning_line(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="grpc_model.src.runtime.items"):
        results = run(make_runtime(f"{TESTS}:Echo", 4), [{"a": b"1"}, {"a": b"fail"}, {"a": b"3"}])
    assert [result.success for result in results] == [True, False, True]
    [line] = item_warnings(caplog)  # the item's, not also one for the batch that raised because of it
    assert line.startswith("Echo failed on an item: ValueError: asked to fail")


def test_a_batch_method_that_raises_when_every_item_succeeds_alone_is_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="grpc_model.src.runtime.items"):
        results = run(make_runtime(f"{TESTS}:RaisingBatch", 4), [{"a": b"1"}, {"a": b"2"}])
    assert all(result.success for result in results)
    [line] = item_warnings(caplog)
    assert "RaisingBatch batch method raised RuntimeError: batch exploded" in line
    assert "each of its 2 items succeeds alone" in line


def test_a_model_that_exits_on_an_item_is_an_error_with_its_traceback(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="grpc_model.src.runtime.items"):
        run(make_runtime(f"{TESTS}:Exiting", 1), [{"a": b""}])
    [record] = [record for record in caplog.records if record.name == "grpc_model.src.runtime.items"]
    assert (record.levelno, record.exc_info is not None) == (logging.ERROR, True)


def test_without_batching_the_run_timeout_still_answers_every_item() -> None:
    Gated.reset()
    model_runtime = make_runtime(f"{TESTS}:Gated", 1, adaptive_batching=False, run_timeout_seconds=1.0)
    try:
        results = run(model_runtime, [{"a": b"first"}, {"a": b"hold"}, {"a": b"never"}])  # held: never finishes
    finally:
        Gated.release.set()
    assert [r.success for r in results] == [True, False, False]
    assert results[1] == results[2] == ItemResult.failure(TIMEOUT_MESSAGE)
    assert Gated.ran == [b"first", b"hold"]  # the item after the timeout was not started
