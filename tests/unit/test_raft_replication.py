"""Log replication: the no-op, commit rules, backtracking, pipelining and batching."""

from __future__ import annotations

import pytest

from broker.core.raft import ConfState, Entry, EntryKind, HardState, ProposalDropped
from broker.core.raft.errors import DropReason
from broker.core.raft.progress import ProgressState
from broker.core.raft.types import AppendEntries, AppendResponse, Message
from tests.unit.raft_harness import Net, make_storage

C3 = ConfState(frozenset({1, 2, 3}))


def appends_to(net: Net, dst: int) -> list[AppendEntries]:
    return net.sent_of(AppendEntries, dst=dst)


def test_leader_noop_is_the_first_entry_of_its_term() -> None:
    stores = {i: make_storage(C3, [1, 1], hard_state=HardState(1, None, 2)) for i in C3.voters}
    net = Net([1, 2, 3], storages=stores)
    lead = net.elect(2)
    assert (lead.term, lead.term_start_index) == (2, 3)
    (noop,) = lead.log.slice(3, 4) or []
    assert (noop.index, noop.term, noop.kind, noop.data) == (3, 2, EntryKind.NOOP, b"")
    assert lead.log.term(2) == 1
    assert lead.propose(b"x") == 4


def test_old_term_entry_is_not_committed_by_counting_replicas() -> None:
    """Figure 8, unit form: the new leader of term 3 holds (2, term 2), uncommitted. Once a
    majority holds it, it still is not committed until the term-3 no-op is."""
    stores = {
        1: make_storage(C3, [1, 2], hard_state=HardState(2, None, 1)),
        2: make_storage(C3, [1], hard_state=HardState(2, None, 1)),
        3: make_storage(C3, [1], hard_state=HardState(2, None, 1)),
    }
    net = Net([1, 2, 3], storages=stores, max_msg_bytes=1)  # one entry per append
    net.isolate(3)
    # Node 2 first rejects the no-op (it lacks index 2), then gets index 2; from then on the
    # no-op is lost.
    net.drop(
        lambda m: (
            isinstance(m, AppendEntries)
            and any(e.term == 3 for e in m.entries)
            and net.storage[2].last_index() >= 2
        )
    )
    lead = net[1]
    lead.campaign()
    net.process(1)
    net.deliver_all()
    assert (lead.is_leader, lead.term, lead.term_start_index) == (True, 3, 3)
    # Node 2 now holds (2, term 2): with the leader, a majority.
    assert net.storage[2].last_index() == 2 and net.storage[2].term(2) == 2
    assert lead.progress[2].match == 2
    assert lead.commit_index == 1
    assert [(e.index, e.term) for e in net.applied[1]] == [(1, 1)]
    # The no-op reaches node 2: both entries commit at once.
    net.heal()
    net.isolate(3)
    net.tick(1, lead.config.heartbeat_ticks)
    net.deliver_all()
    assert lead.progress[2].match == 3
    assert lead.commit_index == 3
    assert [(e.index, e.term) for e in net.applied[1]] == [(1, 1), (2, 2), (3, 3)]


def test_fast_backtracking_skips_a_divergent_term_in_one_round_trip() -> None:
    """Node 3 holds 99 entries of term 2 the others never saw; the term-4 leader finds the
    match point in O(terms) rejections, not O(entries)."""
    ours = [1, 3, 3, 3, 3, 3]
    stores = {
        1: make_storage(C3, ours, hard_state=HardState(3, None, 1)),
        2: make_storage(C3, ours, hard_state=HardState(3, None, 1)),
        3: make_storage(C3, [1] + [2] * 99, hard_state=HardState(3, None, 1)),
    }
    net = Net([1, 2, 3], storages=stores)
    lead = net.elect(1)
    assert (lead.term, lead.log.last_index()) == (4, 7)
    to3 = appends_to(net, 3)
    rejections = net.sent_of(AppendResponse, src=3, reject=True)
    assert [(m.prev_index, m.prev_term, len(m.entries)) for m in to3] == [
        (6, 3, 1),  # optimistic: just the no-op
        (1, 1, 6),  # the hint (6, term 2) skips every index of term 3 on the leader
    ]
    assert [(m.index, m.hint_index, m.hint_term) for m in rejections] == [(6, 6, 2)]
    st = net.storage[3]
    assert st.last_index() == 7
    assert [st.term(i) for i in range(1, 8)] == [1, 3, 3, 3, 3, 3, 4]


def test_fast_backtracking_costs_a_round_trip_per_divergent_term() -> None:
    """Leader: 1, 2 2 2, then thirty entries of term 4. Follower: 1, 2, then sixty of term 3.
    Each rejection skips a whole term on one side or the other."""
    ours = [1, 2, 2, 2] + [4] * 30
    theirs = [1, 2] + [3] * 60
    stores = {
        1: make_storage(C3, ours, hard_state=HardState(4, None, 1)),
        2: make_storage(C3, ours, hard_state=HardState(4, None, 1)),
        3: make_storage(C3, theirs, hard_state=HardState(4, None, 1)),
    }
    net = Net([1, 2, 3], storages=stores)
    lead = net.elect(1)
    assert (lead.term, lead.log.last_index()) == (5, 35)
    assert [(m.prev_index, m.prev_term, len(m.entries)) for m in appends_to(net, 3)] == [
        (34, 4, 1),  # the no-op
        (4, 2, 31),  # hint (34, term 3): the leader skips its term-4 entries
        (2, 2, 33),  # hint (2, term 2): the follower skipped its term-3 entries
    ]
    rejections = net.sent_of(AppendResponse, src=3, reject=True)
    assert [(m.index, m.hint_index, m.hint_term) for m in rejections] == [(34, 34, 3), (4, 2, 2)]
    st = net.storage[3]
    assert st.last_index() == 35
    assert [st.term(i) for i in range(1, 36)] == [*ours, 5]


def test_lost_append_in_replicate_is_recovered_on_the_next_heartbeat_response() -> None:
    net = Net([1, 2, 3], heartbeat_ticks=1)
    lead = net.elect(1)
    pr = lead.progress[3]
    assert pr.state == ProgressState.REPLICATE
    lost: list[Message] = []

    def lose_once(m: Message) -> bool:
        if isinstance(m, AppendEntries) and m.dst == 3 and m.entries and not lost:
            lost.append(m)
            return True
        return False

    net.drop(lose_once)
    idx = net.propose(1, b"a")
    net.deliver_all()
    assert lost and net.storage[3].last_index() == idx - 1
    assert (pr.state, pr.next, len(pr.inflights)) == (ProgressState.REPLICATE, idx + 1, 1)
    net.tick(1)  # heartbeat
    net.deliver_all()
    # heartbeat response -> empty append at next -> rejected -> probe -> resent
    assert net.storage[3].last_index() == idx
    assert [(m.prev_index, len(m.entries)) for m in appends_to(net, 3)][-3:] == [
        (idx - 1, 1),  # the lost one
        (idx, 0),  # after the heartbeat response: exposes the gap
        (idx - 1, 1),  # after the rejection: resent
    ]
    assert (pr.state, pr.match) == (ProgressState.REPLICATE, idx)


def test_max_msg_bytes_splits_entries_across_messages() -> None:
    net = Net([1, 2], max_msg_bytes=100)
    lead = net.elect(1)
    first = lead.propose_many([b"x" * 18] * 5)  # 50 accounted bytes each
    net.process(1)
    sent = [m for m in net.inbox if isinstance(m, AppendEntries)]
    assert [[e.index for e in m.entries] for m in sent] == [
        [first, first + 1],
        [first + 2, first + 3],
        [first + 4],
    ]
    net.deliver_all()
    assert lead.commit_index == first + 4


def test_a_single_entry_larger_than_max_msg_bytes_is_still_sent() -> None:
    net = Net([1, 2], max_msg_bytes=10)
    lead = net.elect(1)
    idx = net.propose(1, b"y" * 500)
    (m,) = [m for m in net.inbox if isinstance(m, AppendEntries)]
    assert [e.index for e in m.entries] == [idx]
    net.deliver_all()
    assert lead.commit_index == idx


def test_inflight_window_limits_outstanding_appends() -> None:
    net = Net([1, 2], max_inflight_msgs=2)
    lead = net.elect(1)
    already = len(net.sent)
    first = net.propose(1, b"0")
    for k in range(1, 5):
        net.propose(1, b"%d" % k)
    sent = [m for m in net.inbox if isinstance(m, AppendEntries)]
    assert [[e.index for e in m.entries] for m in sent] == [[first], [first + 1]]
    assert lead.progress[2].is_paused()
    net.deliver_all()
    # The first acknowledgement frees a slot; the waiting entries leave in one append.
    assert [
        [e.index for e in m.entries] for m in net.sent[already:] if isinstance(m, AppendEntries)
    ] == [
        [first],
        [first + 1],
        [first + 2, first + 3, first + 4],
    ]
    assert net.storage[2].last_index() == first + 4
    assert lead.commit_index == first + 4
    assert len(lead.progress[2].inflights) == 0


def test_follower_rejects_append_with_a_mismatching_prev_entry() -> None:
    net = Net([1, 2], storages={2: make_storage(ConfState(frozenset({1, 2})), [1, 1])})
    net.step(AppendEntries(1, 2, 2, 2, 2, [], 0))
    # A rejection promises nothing durable: it leaves with `messages`, without waiting.
    assert [m for rd in net.readies[2] for m in rd.persisted_messages] == []
    (resp,) = [m for rd in net.readies[2] for m in rd.messages]
    assert resp == AppendResponse(2, 1, 2, 2, reject=True, hint_index=2, hint_term=1)


def test_follower_commits_no_further_than_the_last_new_entry() -> None:
    """Figure 2, AppendEntries step 5: commit = min(leader commit, index of the last new
    entry). Node 2 holds (3, term 2) and (4, term 2), which the term-3 leader does not; the
    leader has committed 1..5 and its append vouches only for index 2. Node 2 must commit 2,
    not its unverified suffix (bounding by its own last index would commit index 4)."""
    c2 = ConfState(frozenset({1, 2}))
    stale = make_storage(c2, [1, 1, 2, 2], hard_state=HardState(2, None, 1))
    net = Net([1, 2], storages={2: stale})
    follower = net[2]
    net.step(AppendEntries(1, 2, 3, 1, 1, [Entry(2, 1)], 5))
    assert follower.commit_index == 2
    assert [follower.log.term(i) for i in range(1, 5)] == [1, 1, 2, 2]  # suffix kept, uncommitted
    assert [(e.index, e.term) for e in net.applied[2]] == [(1, 1), (2, 1)]
    acks = [m for rd in net.readies[2] for m in rd.persisted_messages]
    assert acks[-1] == AppendResponse(2, 1, 3, 2)
    # After a conflict the suffix is replaced; the commit again stops at the last new entry.
    net.step(AppendEntries(1, 2, 3, 2, 1, [Entry(3, 3)], 5))
    assert (follower.commit_index, follower.log.last_index(), follower.log.term(3)) == (3, 3, 3)
    assert [(e.index, e.term) for e in net.applied[2]] == [(1, 1), (2, 1), (3, 3)]


def test_propose_at_a_follower_is_refused_with_a_leader_hint() -> None:
    net = Net([1, 2, 3])
    net.elect(1)
    with pytest.raises(ProposalDropped) as exc:
        net[2].propose(b"x")
    assert (exc.value.reason, exc.value.leader) == (DropReason.NOT_LEADER, 1)


def test_an_ack_for_entries_a_later_append_truncated_in_the_same_ready_never_leaves() -> None:
    """A follower takes a deposed leader's append (indexes 2-3, term 2), then, before its
    Ready is handed out, a newer leader's append replacing them (index 2, term 3). The one
    write holds only the newer entry: the acknowledgement of index 3 must not leave after it
    (it would promise the deposed leader entries that never reached the disk)."""
    stores = {i: make_storage(C3, [1], hard_state=HardState(1, None, 1)) for i in C3.voters}
    net = Net([1, 2, 3], storages=stores)
    follower = net[3]
    old = [Entry(2, 2, EntryKind.NORMAL, b"a"), Entry(3, 2, EntryKind.NORMAL, b"b")]
    follower.step(AppendEntries(1, 3, 2, 1, 1, old, 1))
    follower.step(AppendEntries(2, 3, 3, 1, 1, [Entry(2, 3, EntryKind.NORMAL, b"c")], 1))
    rd = follower.ready()
    assert [(e.index, e.term) for e in rd.entries] == [(2, 3)]
    acks = [m for m in rd.persisted_messages if isinstance(m, AppendResponse)]
    assert [(m.dst, m.index) for m in acks] == [(2, 2)]
