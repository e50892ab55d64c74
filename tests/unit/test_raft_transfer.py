"""Leadership transfer: catch the target up, send TimeoutNow, refuse proposals meanwhile."""

from __future__ import annotations

import pytest

from broker.core.raft import DropReason, ProposalDropped, Role
from broker.core.raft.types import AppendEntries, TimeoutNow, TransferLeader
from tests.unit.raft_harness import Net


def test_caught_up_target_gets_timeout_now_at_once() -> None:
    net = Net([1, 2, 3])
    lead = net.elect(1)
    assert lead.progress[2].match == lead.log.last_index()
    lead.transfer_leadership(2)
    net.process(1)
    assert list(net.inbox) == [TimeoutNow(1, 2, 1)]
    net.deliver_all()
    assert (net[2].role, net[2].term) == (Role.LEADER, 2)
    assert (lead.role, lead.leader) == (Role.FOLLOWER, 2)


def test_lagging_target_is_caught_up_before_timeout_now() -> None:
    net = Net([1, 2, 3])
    lead = net.elect(1)
    net.isolate(3)
    idx = net.propose(1, b"a")
    net.deliver_all()
    assert net.storage[3].last_index() == idx - 1
    net.heal()
    lead.transfer_leadership(3)
    net.process(1)
    assert not [m for m in net.inbox if isinstance(m, TimeoutNow)]
    assert [m.dst for m in net.inbox if isinstance(m, AppendEntries)] == [3]
    net.deliver_all()
    sent = [m for m in net.sent if isinstance(m, (TimeoutNow, AppendEntries)) and m.dst == 3]
    assert isinstance(sent[-1], TimeoutNow)
    assert [e.data for e in net.storage[3].entries(idx, idx + 1)] == [b"a"]
    assert net[3].is_leader and net[3].term == 2
    assert net[3].term_start_index == idx + 1


def test_proposals_during_a_transfer_are_refused() -> None:
    net = Net([1, 2, 3])
    lead = net.elect(1)
    net.isolate(3)
    net.propose(1, b"a")
    net.deliver_all()
    lead.transfer_leadership(3)
    with pytest.raises(ProposalDropped) as exc:
        lead.propose(b"b")
    assert (exc.value.reason, exc.value.leader) == (DropReason.TRANSFERRING, 1)


def test_transfer_is_abandoned_after_an_election_timeout() -> None:
    net = Net([1, 2, 3], election_ticks=6)
    lead = net.elect(1)
    net.isolate(3)
    net.propose(1, b"a")
    net.deliver_all()
    lead.transfer_leadership(3)
    for _ in range(5):
        net.tick(1)
        net.deliver_all()
    assert lead.lead_transferee == 3
    net.tick(1)
    net.deliver_all()
    assert (lead.is_leader, lead.lead_transferee) == (True, None)
    assert lead.propose(b"b") > 0


def test_follower_forwards_a_transfer_request_to_the_leader() -> None:
    net = Net([1, 2, 3])
    net.elect(1)
    net[2].transfer_leadership(2)
    net.process(2)
    assert list(net.inbox) == [TransferLeader(2, 1, 1, 2)]
    net.deliver_all()
    assert net[2].is_leader


def test_transfer_to_self_or_a_non_voter_is_ignored() -> None:
    net = Net([1, 2, 3], learners=[4])
    lead = net.elect(1)
    lead.transfer_leadership(1)
    lead.transfer_leadership(4)
    net.process(1)
    assert lead.lead_transferee is None
    assert not net.sent_of(TimeoutNow)
