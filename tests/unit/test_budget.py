"""ByteBudget: grants only what fits its class's cap, wakes waiters in order without
over-admitting, keeps the reserve for small acquirers, and gives nothing back twice."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from broker.runtime.budget import ByteBudget


def test_try_acquire_respects_each_class_cap() -> None:
    b = ByteBudget(100, 25)
    assert b.cap(large=True) == 75 and b.cap(large=False) == 100
    assert b.try_acquire(70, large=True)
    assert not b.try_acquire(10, large=True)  # 80 > 75: the reserve is for small ones
    assert b.try_acquire(30)  # a small acquirer may use the reserve
    assert b.in_use == 100 and b.peak == 100
    assert not b.try_acquire(1)
    b.release(100)
    assert b.in_use == 0


def test_force_may_pass_the_limit_and_blocks_readers_until_released() -> None:
    b = ByteBudget(100, 25)
    b.force(150)
    assert b.in_use == 150 and not b.try_acquire(1)
    b.release(60)
    assert b.try_acquire(10)


def test_an_acquisition_that_can_never_fit_is_refused() -> None:
    b = ByteBudget(100, 25)

    async def main() -> None:
        with pytest.raises(ValueError):
            await b.acquire(80, large=True)

    trio.run(main)


async def test_waiters_are_granted_in_order_and_never_over_admitted() -> None:
    b = ByteBudget(100, 25)
    assert b.try_acquire(100)
    got: list[str] = []

    async def take(name: str, n: int, large: bool) -> None:
        await b.acquire(n, large=large)
        got.append(name)

    async with trio.open_nursery() as n:
        n.start_soon(take, "big", 60, True)
        await trio.testing.wait_all_tasks_blocked()
        n.start_soon(take, "small", 30, False)
        await trio.testing.wait_all_tasks_blocked()
        assert b.waiting == 2 and b.waits == 2
        b.release(40)  # in use 60: big (cap 75) does not fit, small (cap 100) does
        await trio.testing.wait_all_tasks_blocked()
        assert got == ["small"] and b.in_use == 90
        b.release(75)  # in use 15: big fits now (15 + 60 <= 75)
        await trio.testing.wait_all_tasks_blocked()
        assert got == ["small", "big"] and b.in_use == 75
    assert b.waiting == 0


async def test_a_cancelled_waiter_takes_nothing() -> None:
    b = ByteBudget(100, 25)
    assert b.try_acquire(100)
    with trio.move_on_after(0.01):
        await b.acquire(10)
    assert b.waiting == 0 and b.in_use == 100
    b.release(100)
    assert b.in_use == 0


def test_releasing_more_than_was_taken_is_a_bug() -> None:
    b = ByteBudget(100, 25)
    b.force(5)
    with pytest.raises(AssertionError):
        b.release(6)
