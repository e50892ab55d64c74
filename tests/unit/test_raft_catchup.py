"""Catch-up throttling: a replica that lacks committed entries is fed at most the shared
budget per tick (plus less than one entry), resumes when the budget is refilled, and
replication of new entries to up-to-date followers is never throttled."""

from __future__ import annotations

import pytest

from broker.core.raft import CatchUpBudget
from broker.core.raft.types import AppendEntries, entries_size
from tests.unit.raft_harness import Net

ENTRY = b"x" * 1000
PER_TICK = 4_000


def _lagging_follower(budget: CatchUpBudget) -> Net:
    """Leader 1 with 60 committed entries of 1000 bytes; follower 3 has none of them."""
    net = Net([1, 2, 3], max_msg_bytes=64_000)
    lead = net.elect(1)
    lead.catchup = budget
    net.isolate(3)
    for _ in range(60):
        net.propose(1, ENTRY)
    net.deliver_all()
    assert lead.commit_index >= 61 and net.storage[3].last_index() <= 1
    return net


def _entry_bytes_to(net: Net, dst: int, start: int) -> int:
    return sum(entries_size(m.entries) for m in net.sent[start:] if
               isinstance(m, AppendEntries) and m.dst == dst)  # fmt: skip


def test_catch_up_is_paced_by_the_budget_and_completes() -> None:
    budget = CatchUpBudget(PER_TICK, burst_ticks=1)
    net = _lagging_follower(budget)
    lead = net[1]
    net.heal()
    one_entry = entries_size(lead.log.slice(2, 3) or [])
    ticks = 0
    while net.storage[3].last_index() < lead.log.last_index():
        start = len(net.sent)
        budget.refill()
        net.tick(1)
        net.deliver_all()
        sent = _entry_bytes_to(net, 3, start)
        # Each tick: the refill (the overdraft of the previous tick repaid first) plus less
        # than one entry of overdraft.
        assert sent < PER_TICK + one_entry, (ticks, sent)
        ticks += 1
        assert ticks < 200, "catch-up did not finish"
    total = entries_size(lead.log.slice(2, lead.log.last_index() + 1) or [])
    # It took as many ticks as the budget implies (within one tick of rounding).
    assert ticks >= total // (PER_TICK + one_entry)
    assert lead.progress[3].match == lead.log.last_index()


def test_new_entries_to_up_to_date_followers_are_not_throttled() -> None:
    budget = CatchUpBudget(1, burst_ticks=1)
    net = Net([1, 2, 3], max_msg_bytes=64_000)
    lead = net.elect(1)
    lead.catchup = budget
    start = len(net.sent)
    for _ in range(20):
        net.propose(1, ENTRY)
    net.deliver_all()
    assert lead.commit_index == lead.log.last_index()
    assert net.storage[2].last_index() == net.storage[3].last_index() == lead.log.last_index()
    assert _entry_bytes_to(net, 2, start) >= 20 * len(ENTRY)


def test_budget_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        CatchUpBudget(0)
    b = CatchUpBudget(10, burst_ticks=2)
    b.spend(25)
    assert b.available == -5
    b.refill()
    b.refill()
    b.refill()
    assert b.available == 20
