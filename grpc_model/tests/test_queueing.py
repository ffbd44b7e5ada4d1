"""The queue bound counts the items that still wait for an answer, not the leftovers of calls that went away."""

import asyncio
from collections.abc import Sequence

import pytest

from grpc_model.src.runtime.batching import Batcher, QueueFullError
from grpc_model.src.runtime.execution import Wanted
from grpc_model.src.runtime.items import ItemResult
from grpc_model.wrapper import ModelInput


class HeldExecutor:
    """One slot whose batches finish only when the test says so."""

    slots = 1
    available = True
    condition = None

    def __init__(self) -> None:
        self.batches: list[tuple[list[ModelInput], asyncio.Future[list[ItemResult]]]] = []

    def start_batch(
        self,
        items: Sequence[ModelInput],
        detect_drift: bool,
        explain: bool,
        wanted: Wanted | None = None,
    ) -> "asyncio.Future[list[ItemResult]]":
        future: asyncio.Future[list[ItemResult]] = asyncio.get_running_loop().create_future()
        self.batches.append((list(items), future))
        return future

    def finish_next(self) -> None:
        for items, future in self.batches:
            if not future.done():
                future.set_result([ItemResult({"a": item["a"]}, success=True) for item in items])
                return

    async def close(self) -> None:
        pass


@pytest.mark.parametrize("gone", ["cancelled", "timed out"])
def test_items_of_calls_that_went_away_do_not_count_against_the_limit(gone: str) -> None:
    executor = HeldExecutor()
    timeout = 0.3 if gone == "timed out" else None
    batcher = Batcher(executor, max_batch_size=1, max_wait_seconds=0, max_queued_items=20, timeout_seconds=timeout)

    async def scenario() -> list[ItemResult]:
        running = asyncio.create_task(batcher.submit([{"a": b"running"}], False, False))
        await asyncio.sleep(0)
        if gone == "cancelled":  # a live item at the head of the queue, the dead ones behind it
            live = asyncio.create_task(batcher.submit([{"a": b"live"}], False, False))
            await asyncio.sleep(0)
        left = asyncio.create_task(batcher.submit([{"a": bytes([i])} for i in range(18)], False, False))
        await asyncio.sleep(0)
        if gone == "cancelled":
            assert batcher.queued == 19
            left.cancel()
            with pytest.raises(asyncio.CancelledError):
                await left
            assert batcher.queued == 1
        else:
            assert batcher.queued == 18
            await left  # its items timed out behind the one that runs
            assert batcher.queued == 0

        new = asyncio.create_task(batcher.submit([{"a": b"new"}] * 10, False, False))
        await asyncio.sleep(0)
        if new.done():
            new.result()  # raises QueueFullError if refused
        while not new.done():
            executor.finish_next()
            await asyncio.sleep(0)
        await running
        if gone == "cancelled":
            await live
        return await new

    try:
        results = asyncio.run(scenario())
    except QueueFullError as error:
        pytest.fail(f"refused: {error}")
    assert [result.output for result in results] == [{"a": b"new"}] * 10
