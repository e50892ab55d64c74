"""ReadIndex: a read is released once a quorum confirms the leader still leads."""

from __future__ import annotations

import pytest

from broker.core.raft import DropReason, ProposalDropped, ReadState
from broker.core.raft.types import (
    AppendEntries,
    Heartbeat,
    HeartbeatResponse,
    ReadIndexRequest,
    ReadIndexResponse,
)
from tests.unit.raft_harness import Net


def test_leader_read_waits_for_a_quorum_of_heartbeat_acks_with_its_context() -> None:
    net = Net([1, 2, 3, 4, 5])
    lead = net.elect(1)
    net.tick(1, lead.config.heartbeat_ticks)  # settle followers' commit
    net.deliver_all()
    commit = lead.commit_index
    lead.read_index(b"r1")
    net.process(1)
    hbs = net.take(Heartbeat)
    assert sorted(m.dst for m in hbs) == [2, 3, 4, 5]
    assert all(m.context == b"r1" for m in hbs)
    assert net.read_states[1] == []
    # An ack without the context (a plain heartbeat's) does not count.
    net.step(HeartbeatResponse(2, 1, lead.term, None))
    net.step(HeartbeatResponse(3, 1, lead.term, b"other"))
    assert net.read_states[1] == []
    net.step(HeartbeatResponse(2, 1, lead.term, b"r1"))
    assert net.read_states[1] == []  # leader + 1 of 5
    net.step(HeartbeatResponse(3, 1, lead.term, b"r1"))
    assert net.read_states[1] == [ReadState(b"r1", commit)]  # leader + 2 of 5
    net.step(HeartbeatResponse(4, 1, lead.term, b"r1"))
    assert net.read_states[1] == [ReadState(b"r1", commit)]  # released once


def test_an_ack_for_a_later_read_releases_the_earlier_ones() -> None:
    net = Net([1, 2, 3])
    lead = net.elect(1)
    lead.read_index(b"a")
    lead.read_index(b"b")
    net.process(1)
    net.inbox.clear()
    net.step(HeartbeatResponse(2, 1, lead.term, b"b"))
    assert [rs.context for rs in net.read_states[1]] == [b"a", b"b"]


def test_read_before_the_noop_commits_waits_for_it() -> None:
    net = Net([1, 2, 3])
    net.drop(lambda m: isinstance(m, AppendEntries))
    lead = net[1]
    lead.campaign()
    net.process(1)
    net.deliver_all()
    assert lead.is_leader and lead.commit_index < lead.term_start_index
    lead.read_index(b"early")
    net.process(1)
    assert net.read_states[1] == []
    assert not [m for m in net.inbox if isinstance(m, Heartbeat)]  # not even asked yet
    net.heal()
    net.tick(1, lead.config.heartbeat_ticks)  # heartbeat -> responses -> appends resent
    net.deliver_all()
    assert lead.commit_index == lead.term_start_index == 1
    assert net.read_states[1] == [ReadState(b"early", 1)]
    assert net.sent_of(Heartbeat, src=1, context=b"early")


def test_follower_read_is_forwarded_and_answered_with_the_leader_commit() -> None:
    net = Net([1, 2, 3])
    lead = net.elect(1)
    idx = net.propose(1, b"w")
    net.deliver_all()
    assert lead.commit_index == idx
    assert net[2].commit_index < idx  # the follower has not learned it yet
    net[2].read_index(b"f")
    net.process(2)
    assert list(net.inbox) == [ReadIndexRequest(2, 1, lead.term, b"f")]
    net.deliver_all()
    assert net.sent_of(ReadIndexResponse) == [ReadIndexResponse(1, 2, lead.term, b"f", idx)]
    assert net.read_states[2] == [ReadState(b"f", idx)]
    assert net.read_states[1] == []


def test_single_voter_releases_a_read_immediately() -> None:
    net = Net([1])
    lead = net.elect(1)
    lead.read_index(b"x")
    net.process(1)
    rd = net.readies[1][-1]
    assert rd.read_states == [ReadState(b"x", lead.commit_index)]
    assert rd.messages == ()


def test_pending_reads_are_dropped_when_the_leader_steps_down() -> None:
    net = Net([1, 2, 3])
    lead = net.elect(1)
    lead.read_index(b"lost")
    net.process(1)
    acks = []
    for hb in net.take(Heartbeat):
        net.step(hb)
        acks += net.take(HeartbeatResponse)
    # A higher-term leader appears before the acks arrive.
    net.step(Heartbeat(3, 1, lead.term + 1, 0))
    assert not lead.is_leader
    for m in acks:
        net.step(m)
    net.deliver_all()
    assert net.read_states[1] == []


def test_read_without_a_known_leader_is_refused() -> None:
    net = Net([1, 2, 3])
    with pytest.raises(ProposalDropped) as exc:
        net[2].read_index(b"x")
    assert (exc.value.reason, exc.value.leader) == (DropReason.NOT_LEADER, None)


def test_too_many_pending_reads_is_backpressure() -> None:
    net = Net([1, 2, 3], max_pending_reads=2)
    lead = net.elect(1)
    lead.read_index(b"a")
    lead.read_index(b"b")
    with pytest.raises(ProposalDropped) as exc:
        lead.read_index(b"c")
    assert exc.value.reason == DropReason.BACKPRESSURE
