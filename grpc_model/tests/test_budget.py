"""The memory budget's policy (repository/budget.py): which model gives up its room, and when a load waits."""

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from grpc_model.src.repository.budget import BudgetError, LoadBudget, ModelKey

A, B, C, D = ("a", "1.0.0"), ("b", "1.0.0"), ("c", "1.0.0"), ("d", "1.0.0")
MIB = 1024**2


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 60))


async def settled() -> None:
    """Lets every task that can run, run (a waiting admit stays waiting: nothing else can wake it)."""
    for _ in range(10):
        await asyncio.sleep(0)


async def load(budget: LoadBudget, key: ModelKey, size: int = 0) -> list[ModelKey]:
    """What the registry does: room, then unload what the budget names, then the load succeeds."""
    victims = await budget.admit(key, size)
    for victim in victims:
        budget.unloaded(victim)
    budget.loaded(key)
    return victims


def test_the_least_recently_used_model_gives_up_its_room() -> None:
    async def test() -> None:
        budget = LoadBudget(max_models=2)
        assert await load(budget, A) == []
        assert await load(budget, B) == []
        with budget.use(A):
            pass
        assert budget.order() == [B, A]
        assert await load(budget, C) == [B]
        assert budget.order() == [A, C]

    run(test)


def test_a_model_in_use_is_never_chosen_even_when_least_recently_used() -> None:
    async def test() -> None:
        budget = LoadBudget(max_models=2)
        await load(budget, A)
        await load(budget, B)
        with budget.use(A):
            with budget.use(B):
                pass
            assert budget.order() == [A, B]  # A's call started first: A is the least recently used
            assert await load(budget, C) == [B]  # but A is busy

    run(test)


def test_a_load_waits_while_every_loaded_model_is_busy_then_takes_the_first_freed() -> None:
    async def test() -> None:
        budget = LoadBudget(max_models=2)
        await load(budget, A)
        await load(budget, B)
        with budget.use(A):
            call_b = budget.use(B)
            call_b.__enter__()
            waiting = asyncio.ensure_future(budget.admit(C, 0))
            await settled()
            assert not waiting.done()
            call_b.__exit__(None, None, None)
            assert await waiting == [B]
            assert budget.counts(C)

    run(test)


def test_without_limits_nothing_is_unloaded() -> None:
    async def test() -> None:
        budget = LoadBudget()
        for key in (A, B, C, D):
            assert await load(budget, key) == []
        assert not budget.limited

    run(test)


def test_a_byte_budget_unloads_as_many_models_as_the_new_one_needs() -> None:
    async def test() -> None:
        budget = LoadBudget(max_bytes=10 * MIB)
        await load(budget, A, 4 * MIB)
        await load(budget, B, 3 * MIB)
        await load(budget, C, 3 * MIB)
        assert await load(budget, D, 7 * MIB) == [A, B]  # A alone frees 4 MiB: 10 - 4 + 7 > 10
        assert budget.order() == [C, D]

    run(test)


def test_both_limits_hold_at_once() -> None:
    async def test() -> None:
        budget = LoadBudget(max_models=3, max_bytes=10 * MIB)
        await load(budget, A, MIB)
        await load(budget, B, MIB)
        await load(budget, C, MIB)
        assert await load(budget, D, MIB) == [A]  # the count, not the bytes

    run(test)


def test_a_model_being_unloaded_holds_its_room_until_it_is_gone() -> None:
    async def test() -> None:
        budget = LoadBudget(max_models=2)
        await load(budget, A)
        await load(budget, B)
        assert await budget.admit(C, 0) == [A]  # A is being unloaded, C loading
        waiting = asyncio.ensure_future(budget.admit(D, 0))
        await settled()
        assert not waiting.done()  # B alone could go, but A still holds memory until it is gone
        budget.unloaded(A)
        assert await waiting == [B]

    run(test)


def test_a_failed_load_frees_its_room() -> None:
    async def test() -> None:
        budget = LoadBudget(max_models=1)
        await budget.admit(A, 0)
        waiting = asyncio.ensure_future(budget.admit(B, 0))
        await settled()
        assert not waiting.done()  # a loading model is never unloaded to make room
        budget.failed(A)
        assert await waiting == []
        assert not budget.counts(A)

    run(test)


def test_a_wait_given_up_reserves_nothing() -> None:
    async def test() -> None:
        budget = LoadBudget(max_models=1)
        await load(budget, A)
        with budget.use(A), pytest.raises(TimeoutError):
            await asyncio.wait_for(budget.admit(B, 0), 0.01)  # the subject is the wait given up, not its length
        assert not budget.counts(B)
        assert await budget.admit(C, 0) == [A]

    run(test)


def test_a_call_for_a_model_the_budget_does_not_count_is_left_alone() -> None:
    async def test() -> None:
        budget = LoadBudget(max_models=1)
        with budget.use(A):
            pass
        assert budget.order() == []

    run(test)


def test_costs_come_from_model_yaml_and_models_that_never_fit_are_named() -> None:
    assert LoadBudget(max_models=2).cost(A, "") == 0  # no byte budget: sizes do not matter
    budget = LoadBudget(max_bytes=10 * MIB)
    assert budget.cost(A, "4M") == 4 * MIB
    with pytest.raises(BudgetError, match=r"a 1\.0\.0: model.yaml has no resources.memory.size.*max_loaded_bytes"):
        budget.cost(A, "")
    with pytest.raises(BudgetError, match=r"a 1\.0\.0: resources.memory.size \(11M, 11534336 bytes\) is over"):
        budget.cost(A, "11M")
