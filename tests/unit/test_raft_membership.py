"""Single-member configuration changes: admission, on-append effect, self-removal."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from broker.core.raft import (
    ConfChange,
    ConfChangeKind,
    ConfState,
    DropReason,
    Entry,
    EntryKind,
    MemoryStorage,
    ProposalDropped,
    RaftConfig,
    RaftNode,
    Role,
)
from broker.core.raft.types import AppendEntries, Heartbeat, RequestVote, TimeoutNow, VoteResponse
from tests.unit.raft_harness import Net

C3 = ConfState(frozenset({1, 2, 3}))


def refusal(propose: Callable[[ConfChange], int], change: ConfChange) -> DropReason:
    with pytest.raises(ProposalDropped) as exc:
        propose(change)
    return exc.value.reason


def test_conf_change_refused_before_the_noop_commits() -> None:
    net = Net([1, 2, 3], spares=[4])
    net.drop(lambda m: isinstance(m, AppendEntries))
    lead = net[1]
    lead.campaign()
    net.process(1)
    net.deliver_all()
    assert lead.is_leader and lead.commit_index < lead.term_start_index
    add4 = ConfChange(ConfChangeKind.ADD_LEARNER, 4)
    assert refusal(lead.propose_conf_change, add4) == DropReason.CONF_CHANGE_PENDING
    lead.propose(b"normal proposals are fine")


def test_second_conf_change_refused_while_one_is_uncommitted() -> None:
    net = Net([1, 2, 3], spares=[4, 5])
    lead = net.elect(1)
    net.isolate(2)
    net.isolate(3)
    idx = lead.propose_conf_change(ConfChange(ConfChangeKind.ADD_LEARNER, 4))
    net.process(1)
    net.deliver_all()
    assert lead.commit_index < idx
    add5 = ConfChange(ConfChangeKind.ADD_LEARNER, 5)
    assert refusal(lead.propose_conf_change, add5) == DropReason.CONF_CHANGE_PENDING
    net.heal()
    net.tick(1, lead.config.heartbeat_ticks)
    net.deliver_all()
    assert lead.commit_index >= idx
    assert lead.propose_conf_change(add5) == idx + 1


def test_invalid_conf_changes_are_refused() -> None:
    net = Net([1], learners=[2])
    lead = net.elect(1)
    propose = lead.propose_conf_change
    invalid = DropReason.INVALID_CONF_CHANGE
    assert refusal(propose, ConfChange(ConfChangeKind.REMOVE, 1)) == invalid  # last voter
    assert refusal(propose, ConfChange(ConfChangeKind.ADD_LEARNER, 1)) == invalid  # demote it
    assert refusal(propose, ConfChange(ConfChangeKind.ADD_VOTER, 1)) == invalid  # already one
    assert refusal(propose, ConfChange(ConfChangeKind.ADD_LEARNER, 2)) == invalid  # already one
    assert refusal(propose, ConfChange(ConfChangeKind.REMOVE, 9)) == invalid  # not a member
    assert lead.conf == ConfState(frozenset({1}), frozenset({2}))
    # Promoting the learner is valid.
    lead.propose_conf_change(ConfChange(ConfChangeKind.ADD_VOTER, 2))
    assert lead.conf == ConfState(frozenset({1, 2}))


def test_configuration_takes_effect_on_append_and_reverts_on_truncation() -> None:
    net = Net([1, 2, 3], spares=[4])
    f = net[2]
    c1 = ConfState(frozenset({1, 2, 3}), frozenset({4}))
    net.step(AppendEntries(1, 2, 1, 0, 0, [Entry(1, 1, EntryKind.CONF, b"", c1)], 0))
    assert (f.conf, f.commit_index, f.conf_entry_index()) == (c1, 0, 1)
    assert net.storage[2].initial_state().confs == [(0, C3), (1, c1)]
    # A leader of term 2 that never had the entry overwrites it.
    net.step(AppendEntries(3, 2, 2, 0, 0, [Entry(1, 2, EntryKind.NOOP)], 0))
    assert (f.conf, f.conf_entry_index()) == (C3, 0)
    assert net.storage[2].initial_state().confs == [(0, C3)]


def test_leader_conf_changes_before_commit() -> None:
    net = Net([1, 2, 3], spares=[4])
    lead = net.elect(1)
    net.isolate(2)
    net.isolate(3)
    idx = lead.propose_conf_change(ConfChange(ConfChangeKind.ADD_VOTER, 4))
    assert lead.commit_index < idx
    assert lead.conf.voters == frozenset({1, 2, 3, 4})
    assert 4 in lead.progress


def test_leader_removing_itself_leads_until_commit_then_hands_over() -> None:
    net = Net([1, 2, 3], max_msg_bytes=1)  # one entry per append
    lead = net.elect(1)
    net.isolate(3)
    remove = lead.propose_conf_change(ConfChange(ConfChangeKind.REMOVE, 1))
    after = net.propose(1, b"x")
    assert (remove, after) == (2, 3)
    assert lead.conf.voters == frozenset({2, 3})
    net.deliver_all()
    # Node 2 holds both; node 3 neither: the change is uncommitted under {2, 3}.
    assert (lead.progress[2].match, lead.progress[3].match) == (3, 1)
    assert (lead.role, lead.commit_index) == (Role.LEADER, 1)
    # Node 3 catches up to the removal only.
    net.heal()
    net.drop(
        lambda m: (
            isinstance(m, AppendEntries) and m.dst == 3 and any(e.index == after for e in m.entries)
        )
    )
    net.tick(1, lead.config.heartbeat_ticks)
    net.deliver_all()
    assert lead.commit_index == remove
    assert lead.role == Role.FOLLOWER
    (handover,) = net.sent_of(TimeoutNow)
    assert handover == TimeoutNow(1, 2, 1)  # the most caught-up voter
    assert net[2].is_leader and net[2].term == 2
    assert not net.sent_of(RequestVote, dst=1)  # 1 is no voter of 2's configuration
    assert net[2].conf.voters == frozenset({2, 3})


def test_learner_never_campaigns() -> None:
    net = Net([1, 2, 3], learners=[4], election_ticks=5)
    learner = net[4]
    assert not learner.promotable()
    net.tick(4, 50)
    learner.campaign()
    net.process(4)
    net.step(TimeoutNow(1, 4, 0))
    assert (learner.role, learner.term) == (Role.FOLLOWER, 0)
    assert not net.sent_of(RequestVote)


def test_voter_whose_removal_is_uncommitted_may_still_campaign() -> None:
    net = Net([1, 2, 3], election_ticks=5)
    f = net[3]
    without3 = ConfState(frozenset({1, 2}))
    noop = Entry(1, 1, EntryKind.NOOP)
    net.step(AppendEntries(1, 3, 1, 0, 0, [noop, Entry(2, 1, EntryKind.CONF, b"", without3)], 1))
    assert (f.conf, f.commit_index) == (without3, 1)
    assert f.promotable()  # a voter of the committed configuration
    net.tick(3, 10)
    assert f.role == Role.PRE_CANDIDATE
    reqs = net.sent_of(RequestVote, src=3)
    assert sorted(m.dst for m in reqs) == [1, 2]  # asks the voters of its latest configuration
    # Once the removal commits, it may not.
    net.step(Heartbeat(1, 3, 1, 2))
    assert (f.role, f.commit_index, f.promotable()) == (Role.FOLLOWER, 2, False)


@pytest.mark.parametrize("member_votes", [False, True])
def test_with_member_votes_a_node_outside_its_configuration_grants_no_vote(
    member_votes: bool,
) -> None:
    """A replica opened empty under a member id its group once had (its log deleted when it
    moved away) must not help a candidate whose stale configuration still counts that id;
    without `member_votes` (the metadata group's bootstrap needs it) it votes as before."""
    fresh = RaftNode(
        RaftConfig(id=4, member_votes=member_votes),
        MemoryStorage(ConfState(frozenset())),
        random.Random(1),
    )
    for pre_vote in (True, False):
        fresh.step(RequestVote(2, 4, 5, 37, 2, pre_vote=pre_vote))
    rd = fresh.ready()
    answers = [m for m in [*rd.messages, *rd.persisted_messages] if isinstance(m, VoteResponse)]
    assert [m.reject for m in answers] == [member_votes, member_votes]


def test_with_member_votes_a_learner_and_a_voter_removed_uncommitted_still_vote() -> None:
    """Membership is of the latest or the committed configuration, learners included."""
    conf = ConfState(frozenset({1, 2, 3}), frozenset({4}))
    learner = RaftNode(RaftConfig(id=4, member_votes=True), MemoryStorage(conf), random.Random(1))
    learner.step(RequestVote(2, 4, 5, 0, 0))
    rd = learner.ready()
    assert [m.reject for m in rd.persisted_messages if isinstance(m, VoteResponse)] == [False]
    st = MemoryStorage(ConfState(frozenset({1, 2, 3, 4})))
    st.append([Entry(1, 1, EntryKind.CONF, b"", ConfState(frozenset({1, 2, 3})))])
    removed = RaftNode(RaftConfig(id=4, member_votes=True), st, random.Random(1))
    assert removed.conf.voters == frozenset({1, 2, 3})  # the removal, not committed
    removed.step(RequestVote(2, 4, 5, 1, 1))
    rd = removed.ready()
    assert [m.reject for m in rd.persisted_messages if isinstance(m, VoteResponse)] == [False]
