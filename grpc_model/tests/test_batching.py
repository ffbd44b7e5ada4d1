"""The adaptive batcher: every caller gets exactly its own outputs, in order, whatever the mix."""

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grpc_model.src.runtime.batching import TIMEOUT_MESSAGE, Batcher, QueueFullError
from grpc_model.src.runtime.execution import ThreadExecutor, Wanted
from grpc_model.src.runtime.items import ItemResult
from grpc_model.src.runtime.loader import import_wrapper_class, instantiate
from grpc_model.tests.conftest import PATIENCE_SECONDS, TESTS
from grpc_model.wrapper import ModelInput

T = TypeVar("T")


@dataclass
class Recorded:
    flags: tuple[bool, bool]
    ids: list[bytes]
    dispatched_at: float


@dataclass
class RecordingExecutor:
    """The real thread executor around a test wrapper, recording every batch it is given.

    A batch holding an item whose id is in `held` does not finish until `release()`: tests keep a
    model slot busy for exactly as long as they need, where a delay would end on its own, early or
    late, on a loaded machine.
    """

    inner: ThreadExecutor
    held: frozenset[bytes] = frozenset()
    batches: list[Recorded] = field(default_factory=list)
    released: asyncio.Event = field(default_factory=asyncio.Event)

    available = True
    condition = None

    @property
    def slots(self) -> int:
        return self.inner.slots

    def release(self) -> None:
        self.released.set()

    def start_batch(
        self, items: Sequence[ModelInput], detect_drift: bool, explain: bool, wanted: Wanted | None = None
    ) -> "asyncio.Future[list[ItemResult]]":
        ids = [item["id"] for item in items]
        self.batches.append(Recorded((detect_drift, explain), ids, asyncio.get_running_loop().time()))
        return asyncio.ensure_future(self._run(items, detect_drift, explain, hold=not self.held.isdisjoint(ids)))

    async def _run(
        self, items: Sequence[ModelInput], detect_drift: bool, explain: bool, hold: bool
    ) -> list[ItemResult]:
        if hold:
            await self.released.wait()
        return await self.inner.start_batch(items, detect_drift, explain)

    async def close(self) -> None:
        await self.inner.close()


def executor(wrapper: str, slots: int = 1, held: bytes | None = None) -> RecordingExecutor:
    """A recording executor; a batch with the item `held` keeps its slot until the test releases it."""
    model = instantiate(import_wrapper_class(f"{TESTS}:{wrapper}"))
    return RecordingExecutor(ThreadExecutor(model, slots), frozenset([held] if held else []))


async def until(condition: Callable[[], bool], what: str) -> None:
    """Lets the loop run until `condition` holds (bounded): how a test waits for a task it started."""
    deadline = asyncio.get_running_loop().time() + PATIENCE_SECONDS
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"waited {PATIENCE_SECONDS:g} s for {what}"
        await asyncio.sleep(0.001)


@dataclass
class Call:
    items: list[ModelInput]
    flags: tuple[bool, bool]
    start_delay: float


calls_strategy = st.lists(
    st.builds(
        Call,
        items=st.lists(st.sampled_from([b"ok", b"ok", b"ok", b"fail"]), max_size=12).map(
            lambda values: [{"value": value} for value in values]
        ),
        flags=st.tuples(st.booleans(), st.booleans()),
        start_delay=st.sampled_from([0.0, 0.0, 0.001, 0.003]),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    calls=calls_strategy,
    max_batch_size=st.integers(1, 8),
    slots=st.integers(1, 3),
    wrapper=st.sampled_from(["Echo", "RaisingBatch", "WrongCountBatch"]),
)
def test_every_caller_gets_its_own_outputs_in_order(
    calls: list[Call], max_batch_size: int, slots: int, wrapper: str
) -> None:
    for call_index, call in enumerate(calls):  # ids make every item traceable to its caller
        for item_index, item in enumerate(call.items):
            item["id"] = f"{call_index}:{item_index}".encode()
    recorder = executor(wrapper, slots)
    batcher = Batcher(recorder, max_batch_size, max_wait_seconds=0.002, max_queued_items=10_000)

    async def one_call(call: Call) -> list[ItemResult]:
        await asyncio.sleep(call.start_delay)
        return await batcher.submit(call.items, *call.flags)

    async def all_calls() -> list[list[ItemResult]]:
        try:
            return list(await asyncio.gather(*(one_call(call) for call in calls)))
        finally:
            await batcher.close()
            await recorder.close()

    answers = asyncio.run(all_calls())

    for call, results in zip(calls, answers, strict=True):
        assert len(results) == len(call.items)
        for item, result in zip(call.items, results, strict=True):
            if item["value"] == b"fail":
                assert result == ItemResult({"error": b"ValueError: asked to fail"}, success=False)
            else:
                assert result.success
                assert result.output["id"] == item["id"]  # its own output, in its own place
                assert (
                    result.output["flags.json"]
                    == (
                        f'{{"detect_drift": {str(call.flags[0]).lower()}, "explain": {str(call.flags[1]).lower()}}}'
                    ).encode()
                )
    dispatched = [item_id for batch in recorder.batches for item_id in batch.ids]
    expected = [item["id"] for call in calls for item in call.items]
    assert sorted(dispatched) == sorted(expected)  # nothing lost, nothing run twice
    flags_of = {item["id"]: call.flags for call in calls for item in call.items}
    for batch in recorder.batches:
        assert 1 <= len(batch.ids) <= max_batch_size
        assert {flags_of[item_id] for item_id in batch.ids} == {batch.flags}  # flags never mixed


def run_async(scenario: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(scenario())


def test_an_idle_model_gets_items_at_once() -> None:
    recorder = executor("Echo")
    batcher = Batcher(recorder, max_batch_size=8, max_wait_seconds=3600, max_queued_items=100)

    async def scenario() -> None:
        await asyncio.wait_for(batcher.submit([{"id": b"1"}], False, False), PATIENCE_SECONDS)  # not in an hour
        await batcher.close()

    run_async(scenario)
    assert [batch.ids for batch in recorder.batches] == [[b"1"]]


def test_while_busy_a_partial_batch_waits_for_more_items() -> None:
    recorder = executor("Echo", slots=2, held=b"busy")
    batcher = Batcher(recorder, max_batch_size=8, max_wait_seconds=0.2, max_queued_items=100)

    async def scenario() -> None:
        busy = asyncio.create_task(batcher.submit([{"id": b"busy"}], False, False))
        await until(lambda: len(recorder.batches) == 1, "busy to hold one of the two slots")
        # Submitted in one turn of the loop, so no timer can fire between them: with a slot free,
        # `a` would leave alone at once unless the batcher waits for more items while busy.
        second = asyncio.create_task(batcher.submit([{"id": b"a"}], False, False))
        third = asyncio.create_task(batcher.submit([{"id": b"b"}], False, False))
        await asyncio.wait_for(asyncio.gather(second, third), PATIENCE_SECONDS)  # busy is still held
        recorder.release()
        await busy
        await batcher.close()

    run_async(scenario)
    assert [batch.ids for batch in recorder.batches] == [[b"busy"], [b"a", b"b"]]


def test_the_window_bounds_the_wait_for_a_partial_batch() -> None:
    window = 0.05
    recorder = executor("Echo", slots=2, held=b"busy")
    batcher = Batcher(recorder, max_batch_size=8, max_wait_seconds=window, max_queued_items=100)

    async def scenario() -> float:
        busy = asyncio.create_task(batcher.submit([{"id": b"busy"}], False, False))
        await until(lambda: len(recorder.batches) == 1, "busy to hold one of the two slots")
        enqueued = asyncio.get_running_loop().time()
        # Answered while busy is held: the window, not a finished batch or more items, let it go.
        await asyncio.wait_for(batcher.submit([{"id": b"alone"}], False, False), PATIENCE_SECONDS)
        recorder.release()
        await busy
        await batcher.close()
        return enqueued

    enqueued = run_async(scenario)
    assert [batch.ids for batch in recorder.batches] == [[b"busy"], [b"alone"]]
    assert recorder.batches[1].dispatched_at - enqueued >= window - 0.001  # not before the window closed


def test_a_full_batch_leaves_without_waiting() -> None:
    recorder = executor("Echo", slots=2, held=b"busy")
    batcher = Batcher(recorder, max_batch_size=3, max_wait_seconds=3600, max_queued_items=100)

    async def scenario() -> None:
        busy = asyncio.create_task(batcher.submit([{"id": b"busy"}], False, False))
        await until(lambda: len(recorder.batches) == 1, "busy to hold one of the two slots")
        full = [{"id": bytes([i])} for i in range(3)]
        await asyncio.wait_for(batcher.submit(full, False, False), PATIENCE_SECONDS)  # not in an hour
        recorder.release()
        await busy
        await batcher.close()

    run_async(scenario)
    assert [len(batch.ids) for batch in recorder.batches] == [1, 3]


def test_each_call_times_out_on_its_own_and_a_later_one_too() -> None:
    recorder = executor("Echo", held=b"busy")
    batcher = Batcher(recorder, max_batch_size=8, max_wait_seconds=0, max_queued_items=100, timeout_seconds=0.05)
    timed_out = ItemResult.failure(TIMEOUT_MESSAGE)

    async def scenario() -> list[list[ItemResult]]:
        busy = asyncio.create_task(batcher.submit([{"id": b"busy"}], False, False))
        await until(lambda: len(recorder.batches) == 1, "busy to hold the only slot")
        first = await asyncio.wait_for(batcher.submit([{"id": b"a"}], False, False), PATIENCE_SECONDS)
        # Queued after the first expired: its own timeout must still end it, though busy holds the slot.
        second = await asyncio.wait_for(batcher.submit([{"id": b"b"}], False, False), PATIENCE_SECONDS)
        recorder.release()
        held = await busy
        await batcher.close()
        return [held, first, second]

    assert run_async(scenario) == [[timed_out]] * 3
    assert [batch.ids for batch in recorder.batches] == [[b"busy"]]  # the queued items never ran


def test_the_queue_is_bounded() -> None:
    recorder = executor("Echo", held=b"0")
    batcher = Batcher(recorder, max_batch_size=2, max_wait_seconds=0, max_queued_items=4)

    async def scenario() -> None:
        running = asyncio.create_task(batcher.submit([{"id": b"0"}], False, False))
        await until(lambda: len(recorder.batches) == 1, "the first item to hold the only slot")
        queued = asyncio.create_task(batcher.submit([{"id": bytes([i])} for i in range(4)], False, False))
        await until(lambda: batcher.queued == 4, "four items to be queued")
        with pytest.raises(QueueFullError, match="4 items are queued and this call adds 1, over the limit of 4"):
            await batcher.submit([{"id": b"x"}], False, False)
        recorder.release()
        await asyncio.gather(running, queued)
        await batcher.close()

    run_async(scenario)


def test_a_cancelled_caller_items_are_not_run() -> None:
    recorder = executor("Echo", held=b"first")
    batcher = Batcher(recorder, max_batch_size=8, max_wait_seconds=0, max_queued_items=100)

    async def scenario() -> None:
        running = asyncio.create_task(batcher.submit([{"id": b"first"}], False, False))
        await until(lambda: len(recorder.batches) == 1, "the first item to hold the only slot")
        gone = asyncio.create_task(batcher.submit([{"id": b"gone"}], False, False))
        await until(lambda: batcher.queued == 1, "the item to be queued")
        gone.cancel()
        kept = asyncio.create_task(batcher.submit([{"id": b"kept"}], False, False))
        recorder.release()
        assert (await kept)[0].output["id"] == b"kept"
        await running
        await batcher.close()

    run_async(scenario)
    assert [batch.ids for batch in recorder.batches] == [[b"first"], [b"kept"]]


def test_close_answers_what_is_running_and_what_is_still_queued() -> None:
    recorder = executor("Echo", held=b"1")
    batcher = Batcher(recorder, max_batch_size=1, max_wait_seconds=0, max_queued_items=100)

    async def scenario() -> list[ItemResult]:
        running = asyncio.create_task(batcher.submit([{"id": b"1"}], False, False))
        await until(lambda: len(recorder.batches) == 1, "the first item to hold the only slot")
        queued = asyncio.create_task(batcher.submit([{"id": b"2"}], False, False))
        await until(lambda: batcher.queued == 1, "the second item to be queued")
        await batcher.close()  # the server closes the batcher once the grace period is over
        recorder.release()
        return [*(await running), *(await queued)]

    assert run_async(scenario) == [
        ItemResult({"error": b"the server shut down before the model finished this item"}, success=False),
        ItemResult({"error": b"the server shut down before this item ran"}, success=False),
    ]


def test_a_group_inside_its_window_does_not_hold_up_a_full_one() -> None:
    recorder = executor("Echo", slots=2, held=b"busy")
    batcher = Batcher(recorder, max_batch_size=3, max_wait_seconds=3600, max_queued_items=100)

    async def scenario() -> None:
        busy = asyncio.create_task(batcher.submit([{"id": b"busy"}], False, False))
        await until(lambda: len(recorder.batches) == 1, "busy to hold one of the two slots")
        waiting = asyncio.create_task(batcher.submit([{"id": b"drift"}], True, False))  # older, partial
        await until(lambda: batcher.queued == 1, "the partial group to be queued")
        full = [{"id": bytes([i])} for i in range(3)]
        await asyncio.wait_for(batcher.submit(full, False, False), PATIENCE_SECONDS)  # not in an hour
        recorder.release()
        await asyncio.wait_for(asyncio.gather(busy, waiting), PATIENCE_SECONDS)  # idle again: the group goes
        await batcher.close()

    run_async(scenario)
    assert [batch.ids for batch in recorder.batches[:2]] == [[b"busy"], [b"\x00", b"\x01", b"\x02"]]
