"""The broker's Raft ticker: one tick per period, and after a stall no burst of catch-up ticks
(a burst would expire election and check-quorum timers before the heartbeats waiting in the
sockets were read)."""

from __future__ import annotations

import trio
import trio.testing

from broker.app import _ticker


class CountingDriver:
    def __init__(self) -> None:
        self.ticks = 0

    def tick(self) -> None:
        self.ticks += 1


async def test_ticks_once_per_period(autojump_clock: trio.testing.MockClock) -> None:
    driver = CountingDriver()
    with trio.move_on_after(1.0 + 0.025):
        await _ticker(driver, 50)  # type: ignore[arg-type]
    assert driver.ticks == 20


async def test_a_stall_is_not_followed_by_a_burst_of_ticks(
    mock_clock: trio.testing.MockClock,
) -> None:
    driver = CountingDriver()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_ticker, driver, 50)
        await trio.testing.wait_all_tasks_blocked()
        mock_clock.jump(0.05)
        await trio.testing.wait_all_tasks_blocked()
        assert driver.ticks == 1
        mock_clock.jump(1.0)  # the process was stopped for a second: 20 periods passed
        await trio.testing.wait_all_tasks_blocked()
        assert driver.ticks == 2  # one tick for the stall, not twenty
        mock_clock.jump(0.05)
        await trio.testing.wait_all_tasks_blocked()
        assert driver.ticks == 3  # and the period resumes from the end of the stall
        nursery.cancel_scope.cancel()
