"""Elections: pre-vote, the vote itself, check-quorum leases and term adoption."""

from __future__ import annotations

from broker.core.raft import ConfState, HardState, Role
from broker.core.raft.types import (
    AppendEntries,
    Heartbeat,
    RequestVote,
    TimeoutNow,
    VoteResponse,
)
from tests.unit.raft_harness import Net, make_storage

C3 = ConfState(frozenset({1, 2, 3}))


def test_single_voter_becomes_leader_only_after_its_vote_is_persisted() -> None:
    net = Net([1])
    n = net[1]
    net.hold(1)
    n.campaign()
    net.process(1)
    rd = net.readies[1][-1]
    assert rd.hard_state == HardState(term=1, vote=1, commit=0)
    assert rd.must_sync
    assert (n.role, n.term, n.vote) == (Role.CANDIDATE, 1, 1)
    assert net.storage[1].hard_state == HardState()  # the vote is not on disk yet
    net.release(1)
    assert (n.role, n.term) == (Role.LEADER, 1)
    assert net.storage[1].hard_state.vote == 1


def test_pre_vote_changes_neither_term_nor_vote() -> None:
    net = Net([1, 2, 3], storages={i: make_storage(C3, hard_state=HardState(4)) for i in C3.voters})
    net[1].campaign()
    net.process(1)
    assert (net[1].role, net[1].term, net[1].vote) == (Role.PRE_CANDIDATE, 4, None)
    reqs = net.take(RequestVote)
    assert sorted((m.dst, m.term, m.pre_vote) for m in reqs) == [(2, 5, True), (3, 5, True)]
    for m in reqs:
        net.step(m)
    for nid in (2, 3):
        assert (net[nid].term, net[nid].vote) == (4, None)
        assert net.storage[nid].hard_state == HardState(4)
        # A pre-vote grant needs no persistence: it leaves with `messages`.
        rd = net.readies[nid][-1]
        assert rd.hard_state is None and rd.persisted_messages == ()
        assert rd.messages == [VoteResponse(nid, 1, 5, pre_vote=True, reject=False)]
    # Only once the pre-vote is won does the real campaign raise the term.
    net.deliver_all()
    assert (net[1].role, net[1].term, net[1].vote) == (Role.LEADER, 5, 1)


def test_follower_in_lease_ignores_higher_term_vote_but_not_a_transfer() -> None:
    net = Net([1, 2, 3])
    net.elect(1)
    f = net[2]
    assert (f.leader, f.term, f.vote, f.election_elapsed) == (1, 1, 1, 0)
    last, last_term = f.log.last_index(), f.log.last_term()
    net.step(RequestVote(3, 2, 2, last, last_term))
    assert (f.term, f.vote, f.leader) == (1, 1, 1)
    assert not net.inbox  # ignored outright: not even a rejection
    net.step(RequestVote(3, 2, 2, last, last_term, transfer=True))
    assert (f.term, f.vote, f.leader) == (2, 3, None)
    assert list(net.inbox) == [VoteResponse(2, 3, 2, pre_vote=False, reject=False)]


def test_vote_is_granted_at_most_once_per_term() -> None:
    net = Net([1, 2, 3])
    net.step(RequestVote(1, 2, 1, 0, 0))
    net.step(RequestVote(3, 2, 1, 0, 0))
    net.step(RequestVote(1, 2, 1, 0, 0))  # a retry from the one we voted for
    assert net[2].vote == 1
    assert [(m.dst, m.reject) for m in net.inbox] == [(1, False), (3, True), (1, False)]
    # The grants leave only after the vote is durable; the rejection does not wait.
    grants = [m for rd in net.readies[2] for m in rd.persisted_messages]
    assert [(m.dst, m.reject) for m in grants] == [(1, False), (1, False)]
    assert net.storage[2].hard_state == HardState(1, 1, 0)


def test_candidate_with_a_stale_log_is_rejected() -> None:
    st = make_storage(C3, [1, 2], hard_state=HardState(2))
    net = Net([1, 2, 3], storages={2: st})
    net.step(RequestVote(3, 2, 3, 5, 1))  # longer log, lower last term
    net.step(RequestVote(1, 2, 3, 1, 2))  # same last term, shorter log
    assert [(m.dst, m.term, m.reject) for m in net.inbox] == [(3, 3, True), (1, 3, True)]
    assert (net[2].term, net[2].vote) == (3, None)
    net.inbox.clear()
    net.step(RequestVote(1, 2, 3, 2, 2))  # as up to date: granted
    assert [(m.dst, m.reject) for m in net.inbox] == [(1, False)]
    assert net[2].vote == 1


def test_lower_term_vote_request_is_rejected_with_the_higher_term() -> None:
    stores = {
        2: make_storage(C3, hard_state=HardState(5)),
        3: make_storage(C3, hard_state=HardState(3)),
    }
    net = Net([1, 2, 3], storages=stores)
    net.step(RequestVote(3, 2, 3, 9, 3))
    net.step(RequestVote(1, 2, 4, 9, 3, pre_vote=True))
    assert list(net.inbox) == [
        VoteResponse(2, 3, 5, pre_vote=False, reject=True),
        VoteResponse(2, 1, 5, pre_vote=True, reject=True),
    ]
    assert (net[2].term, net[2].vote) == (5, None)
    # A stale pre-candidate learns the term from such a rejection and gives up.
    net.inbox.clear()
    net.isolate(1)
    net[3].campaign()
    net.process(3)
    net.deliver_all()
    assert net.sent_of(VoteResponse, src=2, dst=3)[-1] == VoteResponse(2, 3, 5, True, True)
    assert (net[3].role, net[3].term) == (Role.FOLLOWER, 5)


def test_higher_term_from_a_vote_request_keeps_the_election_timer() -> None:
    st = make_storage(C3, [1], hard_state=HardState(1))
    net = Net([1, 2, 3], storages={2: st}, election_ticks=10)
    f = net[2]
    net.tick(2, 3)
    assert f.election_elapsed == 3
    net.step(RequestVote(3, 2, 5, 0, 0))  # higher term, stale log: rejected
    assert (f.term, f.vote, f.election_elapsed) == (5, None, 3)
    # A leader's append restarts the timer.
    net.step(AppendEntries(1, 2, 5, 1, 1, [], 0))
    assert (f.leader, f.election_elapsed) == (1, 0)
    net.tick(2, 2)
    net.step(AppendEntries(1, 2, 6, 1, 1, [], 0))  # a higher-term leader as well
    assert (f.term, f.leader, f.election_elapsed) == (6, 1, 0)


def test_granting_a_vote_restarts_the_election_timer() -> None:
    net = Net([1, 2, 3], election_ticks=10)
    net.tick(2, 4)
    net.step(RequestVote(3, 2, 1, 0, 0))
    assert (net[2].vote, net[2].election_elapsed) == (3, 0)


def test_three_voters_elect_one_leader_and_followers_learn_it() -> None:
    net = Net([1, 2, 3])
    lead = net.elect(1)
    assert lead.term == 1 and lead.elections_won == 1
    net.tick(1, lead.config.heartbeat_ticks)
    net.deliver_all()
    for nid in (2, 3):
        assert (net[nid].role, net[nid].leader, net[nid].term) == (Role.FOLLOWER, 1, 1)
        assert net[nid].commit_index == lead.commit_index == 1
    assert net.sent_of(Heartbeat, src=1)


def test_follower_times_out_and_campaigns_with_pre_vote() -> None:
    net = Net([1, 2, 3], election_ticks=5)
    net.tick(2, 9)  # the randomized timeout lies in [5, 10)
    assert net[2].role == Role.PRE_CANDIDATE
    net.deliver_all()
    assert net[2].is_leader and net[2].term == 1


def test_timeout_now_campaigns_at_once_without_pre_vote() -> None:
    net = Net([1, 2, 3])
    net.elect(1)
    net.step(TimeoutNow(1, 2, 1))
    assert (net[2].role, net[2].term) == (Role.CANDIDATE, 2)
    reqs = net.sent_of(RequestVote, src=2)
    assert {m.dst for m in reqs} == {1, 3}
    assert all(m.transfer and not m.pre_vote and m.term == 2 for m in reqs)


def test_check_quorum_leader_steps_down_without_a_quorum() -> None:
    net = Net([1, 2, 3], election_ticks=6)
    lead = net.elect(1)
    net.isolate(2)
    net.isolate(3)
    net.tick(1, 6)  # first check: the election itself counted as activity
    assert lead.is_leader
    net.tick(1, 5)
    assert lead.is_leader
    net.tick(1, 1)  # a full election timeout without hearing from anyone
    assert (lead.role, lead.leader, lead.term) == (Role.FOLLOWER, None, 1)


def test_check_quorum_leader_keeps_leading_with_a_quorum() -> None:
    net = Net([1, 2, 3], election_ticks=6)
    lead = net.elect(1)
    net.isolate(3)
    for _ in range(30):
        net.tick(1)
        net.deliver_all()
    assert lead.is_leader and lead.term == 1


def test_delay_election_postpones_a_followers_campaign() -> None:
    net = Net([1, 2, 3])
    n = net[2]
    n.delay_election(30)
    net.tick(2, 29)  # the longest randomized timeout (2 * election_ticks) plus the delay - 1
    assert n.role == Role.FOLLOWER and n.term == 0
    net.tick(2, 2 * n.config.election_ticks)
    assert n.role != Role.FOLLOWER or n.term > 0


def test_leader_unreachable_replaces_a_dead_leader_within_a_few_ticks() -> None:
    """Both followers lost the link to the leader's broker: the first in rank (voters other
    than the leader, rotated by term) campaigns at the next tick, where a plain election
    timeout would take at least six."""
    net = Net([1, 2, 3])
    net.elect(1)
    net.isolate(1)  # killed
    for nid in (2, 3):
        net[nid].leader_unreachable(1)
    net.tick(3)  # rank 0 in term 1 (node 2 is rank 1 and would wait 1 + 3 ticks)
    net.tick(2)
    net.deliver_all()
    assert (net[3].role, net[3].term) == (Role.LEADER, 2)
    assert (net[2].role, net[2].leader, net[2].term) == (Role.FOLLOWER, 3, 2)


def test_leader_unreachable_falls_back_to_the_next_in_rank() -> None:
    """The first in rank cannot win (its own link loss arrived, the other's has not, so the
    other still holds the lease and ignores it): the next in rank campaigns after 1 + 3
    ticks, still before a plain timeout."""
    net = Net([1, 2, 3])
    net.elect(1)
    net.isolate(1)
    net[3].leader_unreachable(1)
    net.tick(3)
    net.deliver_all()
    assert net[3].role == Role.PRE_CANDIDATE and net[2].term == 1  # ignored: in lease
    net[2].leader_unreachable(1)
    for _ in range(4):
        net.tick(2)
        net.tick(3)
        net.deliver_all()
    assert (net[2].role, net[2].term) == (Role.LEADER, 2)


def test_a_lost_link_to_a_live_leader_changes_nothing() -> None:
    """Only one follower's link broke; the leader still reaches the other, which keeps its
    lease and ignores the pre-vote: same leader, same term, after healing too."""
    net = Net([1, 2, 3])
    net.elect(1)
    net.drop(lambda m: {m.src, m.dst} == {1, 2})
    net[2].leader_unreachable(1)
    for _ in range(12):
        net.tick(1)
        net.tick(2)
        net.tick(3)
        net.deliver_all()
    assert (net[1].role, net[1].term, net[3].term, net[3].leader) == (Role.LEADER, 1, 1, 1)
    net.heal()
    for _ in range(4):
        net.tick(1)
        net.deliver_all()
    assert (net[1].role, net[1].term, net[2].leader, net[2].term) == (Role.LEADER, 1, 1, 1)


def test_leader_unreachable_ignores_other_leaders_and_leaders() -> None:
    net = Net([1, 2, 3])
    net.elect(1)
    before = (net[2].election_elapsed, net[1].election_elapsed)
    net[2].leader_unreachable(3)  # not its leader
    net[1].leader_unreachable(1)  # a leader has no leader to lose
    assert (net[2].election_elapsed, net[1].election_elapsed) == before


def test_a_follower_past_its_lease_campaigns_when_a_behind_pre_candidate_asks() -> None:
    """The first in rank after a link loss is a few entries behind: the other survivor
    rejects its pre-vote and campaigns at once, rather than after its own 1 + 3 ticks."""
    net = Net([1, 2, 3])
    net.elect(1)
    rule = net.drop(lambda m: m.dst == 3 and isinstance(m, AppendEntries))
    net.propose(1, b"x")
    net.deliver_all()
    net.drop_rules.remove(rule)
    assert net[2].log.last_index() > net[3].log.last_index()
    net.isolate(1)
    for nid in (2, 3):
        net[nid].leader_unreachable(1)
    net.tick(3)  # rank 0 in term 1, but behind
    net.deliver_all()
    assert (net[2].role, net[2].term) == (Role.LEADER, 2)
    assert net[3].leader == 2


def test_campaign_outside_tick_restarts_the_election_timer() -> None:
    """campaign() called from outside tick (by the runtime, or when a behind pre-candidate
    asks a follower past its lease) starts an election as a timeout does: the timer
    restarts, so the campaigner does not time out at the next tick and throw away the round
    it just began (here the timer had run out after a link loss: 1 tick left)."""
    net = Net([1, 2, 3])
    net.elect(1)
    n = net[3]
    et = n.config.election_ticks
    net.isolate(1)
    net.isolate(2)
    n.leader_unreachable(1)  # rank 0 in term 1: would campaign at the next tick
    n.campaign()
    net.process(3)
    assert (n.role, n.election_elapsed) == (Role.PRE_CANDIDATE, 0)
    rounds = len(net.sent_of(RequestVote, src=3))
    net.tick(3, et - 1)  # less than any randomized timeout
    assert len(net.sent_of(RequestVote, src=3)) == rounds
