"""Flow control towards clients and the application: uncommitted and applying bytes."""

from __future__ import annotations

import pytest

from broker.core.raft import DropReason, ProposalDropped
from broker.core.raft.types import ENTRY_OVERHEAD_BYTES
from tests.unit.raft_harness import Net


def test_propose_refused_past_max_uncommitted_bytes_and_accepted_after_commit() -> None:
    net = Net([1, 2, 3], max_uncommitted_bytes=100)
    lead = net.elect(1)
    net.isolate(2)
    net.isolate(3)
    data = b"x" * (50 - ENTRY_OVERHEAD_BYTES)  # 50 accounted bytes
    first = net.propose(1, data)  # 0 uncommitted before: accepted
    net.propose(1, data)  # 50 before: accepted, now 100
    with pytest.raises(ProposalDropped) as exc:
        lead.propose(data)
    assert (exc.value.reason, exc.value.leader) == (DropReason.BACKPRESSURE, 1)
    with pytest.raises(ProposalDropped):
        lead.propose_many([b""])  # even a tiny one
    net.heal()
    net.tick(1, lead.config.heartbeat_ticks)
    net.deliver_all()
    assert lead.commit_index == first + 1
    assert net.propose(1, data) == first + 2


def test_committed_entries_are_handed_out_up_to_max_applying_bytes() -> None:
    net = Net([1], max_applying_bytes=100)
    lead = net.elect(1)
    lead.propose_many([b"y" * (60 - ENTRY_OVERHEAD_BYTES)] * 4)  # 60 bytes each, at 2..5
    # Take Readies by hand, without advance(): the application is still busy.
    rd = lead.ready()
    net.storage[1].append(list(rd.entries))
    lead.persisted(rd.number)
    first = lead.ready()
    assert [e.index for e in first.committed_entries] == [2]  # 120 bytes would exceed 100
    assert first.committed_bytes == 60
    second = lead.ready()
    assert [e.index for e in second.committed_entries] == [3]  # under budget: at least one
    assert lead.ready().committed_entries == ()  # 120 applying: nothing until advance()
    assert not lead.has_ready()
    lead.advance(first)
    assert [e.index for e in lead.ready().committed_entries] == [4]


def test_the_proposal_itself_counts_against_max_uncommitted_bytes() -> None:
    """A proposal is refused if it would take the uncommitted bytes past the limit (before,
    only the bytes already uncommitted were compared, so one proposal overshot it without
    bound), except when nothing is uncommitted: a proposal larger than the whole budget
    still goes through, alone (etcd's rule)."""
    net = Net([1, 2, 3], max_uncommitted_bytes=100)
    lead = net.elect(1)
    net.isolate(2)
    net.isolate(3)
    net.propose(1, b"x" * (60 - ENTRY_OVERHEAD_BYTES))  # 0 before: accepted, 60
    with pytest.raises(ProposalDropped) as exc:
        lead.propose(b"x" * (60 - ENTRY_OVERHEAD_BYTES))  # 120 > 100
    assert exc.value.reason == DropReason.BACKPRESSURE
    with pytest.raises(ProposalDropped):
        lead.propose_many([b""] * 2)  # a batch counts whole: 60 + 64 > 100
    net.propose(1, b"x" * (40 - ENTRY_OVERHEAD_BYTES))  # exactly 100: accepted
    net.heal()
    net.tick(1, lead.config.heartbeat_ticks)
    net.deliver_all()
    assert lead.commit_index == lead.log.last_index()
    big = net.propose(1, b"x" * 1000)  # nothing uncommitted: it goes through alone
    with pytest.raises(ProposalDropped):
        lead.propose(b"")
    net.deliver_all()
    assert lead.commit_index == big
