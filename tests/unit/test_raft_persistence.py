"""Persistence ordering: nothing that promises durability leaves before `persisted`."""

from __future__ import annotations

import random

from broker.core.raft import ConfState, Entry, HardState, RaftConfig, RaftNode, Role
from broker.core.raft.types import AppendEntries, AppendResponse, RequestVote, VoteResponse
from tests.unit.raft_harness import Net, make_storage

C3 = ConfState(frozenset({1, 2, 3}))
C5 = ConfState(frozenset({1, 2, 3, 4, 5}))


def test_vote_grant_and_append_ack_leave_only_with_persisted_messages() -> None:
    net = Net([1, 2, 3])
    net.hold(2)
    net.step(RequestVote(1, 2, 1, 0, 0))
    (rd,) = net.readies[2]
    assert rd.messages == ()
    assert rd.persisted_messages == [VoteResponse(2, 1, 1, pre_vote=False, reject=False)]
    assert rd.hard_state == HardState(1, 1, 0) and rd.must_sync
    net.step(AppendEntries(1, 2, 1, 0, 0, [Entry(1, 1)], 0))
    rd = net.readies[2][-1]
    assert rd.messages == ()
    assert rd.persisted_messages == [AppendResponse(2, 1, 1, 1)]
    assert [e.index for e in rd.entries] == [1]
    assert not net.inbox  # held: nothing left yet
    assert net.storage[2].last_index() == 0 and net.storage[2].hard_state == HardState()
    net.release(2)
    assert list(net.inbox) == [
        VoteResponse(2, 1, 1, pre_vote=False, reject=False),
        AppendResponse(2, 1, 1, 1),
    ]
    assert net.storage[2].last_index() == 1 and net.storage[2].hard_state.vote == 1


def test_single_voter_entry_is_not_committed_before_it_is_persisted() -> None:
    net = Net([1])
    lead = net.elect(1)
    net.hold(1)
    idx = net.propose(1, b"p")
    rd = net.readies[1][-1]
    assert [e.index for e in rd.entries] == [idx]
    assert rd.committed_entries == ()
    assert lead.commit_index == idx - 1
    net.release(1)
    assert lead.commit_index == idx
    assert [e.data for e in net.readies[1][-1].committed_entries] == [b"p"]
    assert net.applied[1][-1].index == idx


def test_follower_hands_out_committed_entries_only_once_they_are_durable() -> None:
    net = Net([1, 2, 3])
    net.hold(2)
    net.step(AppendEntries(1, 2, 1, 0, 0, [Entry(1, 1, data=b"a"), Entry(2, 1, data=b"b")], 2))
    f = net[2]
    rd = net.readies[2][-1]
    assert f.commit_index == 2  # known committed ...
    assert rd.hard_state == HardState(1, None, 2)
    assert rd.committed_entries == ()  # ... but not yet on this node's disk
    assert not f.has_ready()
    net.release(2)
    assert [e.data for e in net.applied[2]] == [b"a", b"b"]


def test_candidate_counts_its_own_vote_only_after_persisting_it() -> None:
    net = Net([1, 2, 3], pre_vote=False)
    net.hold(1)
    net[1].campaign()
    net.process(1)
    net.isolate(3)
    net.deliver_all()  # node 2's grant arrives: 1 of 3 counted, since our own is not durable
    assert net[1].role == Role.CANDIDATE
    net.release(1)
    assert net[1].is_leader


def test_leader_counts_its_own_log_only_after_persisting_it() -> None:
    net = Net([1, 2, 3])
    lead = net.elect(1)
    net.isolate(3)
    net.hold(1)
    idx = net.propose(1, b"x")
    net.deliver_all()  # node 2 acknowledges: 2 of 3 hold it, but the leader's copy is volatile
    assert lead.progress[2].match == idx
    assert lead.commit_index == idx - 1
    net.release(1)
    assert lead.commit_index == idx


def test_follower_never_applies_an_entry_overwritten_while_writes_are_in_flight() -> None:
    # Five voters. Node 5 holds 1..4 (term 1), committed.
    stores = {5: make_storage(C5, [1, 1, 1, 1], hard_state=HardState(1, None, 4))}
    net = Net([1, 2, 3, 4, 5], storages=stores)
    f = net[5]
    net.hold(5)  # a slow disk: every write below is still in flight

    def e(index: int, term: int, data: bytes) -> Entry:
        return Entry(index, term, data=data)

    # Term 2, leader 1: 5..7.
    net.step(AppendEntries(1, 5, 2, 4, 1, [e(5, 2, b"a"), e(6, 2, b"b"), e(7, 2, b"c")], 4))
    # Term 3, leader 2 (which never saw 6..7): overwrites 6.
    net.step(AppendEntries(2, 5, 3, 5, 2, [e(6, 3, b"stray")], 4))
    # Term 4, leader 1 again (elected by nodes 3 and 4): restores 6..7, adds its no-op.
    net.step(AppendEntries(1, 5, 4, 5, 2, [e(6, 2, b"b"), e(7, 2, b"c"), e(8, 4, b"")], 4))
    assert [[(x.index, x.term) for x in rd.entries] for rd in net.readies[5]] == [
        [(5, 2), (6, 2), (7, 2)],
        [(6, 3)],
        [(6, 2), (7, 2), (8, 4)],
    ]
    first, second, _third = net.readies[5]
    # The first two writes complete; the third is still in flight.
    net.release(5, upto=second.number)
    assert first.number < second.number
    assert net.storage[5].term(6) == 3
    # Leader 1 commits up to 6 (its no-op at 8 reached a majority).
    net.step(AppendEntries(1, 5, 4, 8, 4, [], 6))
    assert f.commit_index == 6
    net.release(5)
    assert [(x.index, x.term, x.data) for x in net.applied[5]] == [
        *[(i, 1, b"") for i in range(1, 5)],
        (5, 2, b"a"),
        (6, 2, b"b"),
    ]


def test_restart_replays_committed_entries_after_applied() -> None:
    st = make_storage(C3, [1, 1, 1, 1, 1, 1], hard_state=HardState(1, 2, 5))
    node = RaftNode(RaftConfig(1, applied=2), st, random.Random(1))
    assert (node.term, node.vote, node.commit_index, node.log.applied) == (1, 2, 5, 2)
    rd = node.ready()
    assert [e.index for e in rd.committed_entries] == [3, 4, 5]
    assert rd.hard_state is None and list(rd.entries) == [] and not rd.must_sync
    assert node.conf == C3 and node.role == Role.FOLLOWER


def test_replies_that_promise_nothing_new_leave_at_once_while_the_disk_stalls() -> None:
    """A rejection, and a reply to an append below our commit index whose committed entries
    are already durable, promise nothing the disk does not hold: they leave with `messages`,
    so a stalled disk does not stall the leader's probing. An acknowledgement of entries not
    yet durable still waits for the write, even when it answers an append below commit."""
    net = Net([1, 2, 3])
    lead = net.elect(1)
    net.propose(1, b"a")
    net.propose(1, b"b")
    net.deliver_all()
    net.tick(1, lead.config.heartbeat_ticks)
    net.deliver_all()
    f = net[2]
    assert (f.commit_index, f.log.persisted_index()) == (3, 3)
    net.inbox.clear()
    net.hold(2)
    # A gap: rejected with a hint, at once.
    net.step(AppendEntries(1, 2, 1, 9, 1, [], 3))
    assert list(net.inbox) == [AppendResponse(2, 1, 1, 9, True, 3, 1)]
    net.inbox.clear()
    # Below our (durable) commit index: we hold everything up to it, at once.
    net.step(AppendEntries(1, 2, 1, 1, 1, [], 3))
    assert list(net.inbox) == [AppendResponse(2, 1, 1, 3)]
    net.inbox.clear()
    # New entries: acknowledged only once durable.
    net.step(AppendEntries(1, 2, 1, 3, 1, [Entry(4, 1, data=b"c")], 4))
    assert not net.inbox and f.commit_index == 4
    # Below a commit index that covers the entry still unsynced: that reply waits as well.
    net.step(AppendEntries(1, 2, 1, 2, 1, [], 4))
    assert not net.inbox
    net.release(2)
    assert list(net.inbox) == [AppendResponse(2, 1, 1, 4), AppendResponse(2, 1, 1, 4)]
