"""Quiescence (RaftConfig.quiesce): idle groups stop ticking; any input wakes them."""

from __future__ import annotations

from collections.abc import Container

import pytest

from broker.core.ids import Member
from broker.core.peer_values import PeerProtocolError
from broker.core.raft import ConfChange, ConfChangeKind, ProposalDropped, Role
from broker.core.raft.types import (
    AppendEntries,
    AppendResponse,
    Heartbeat,
    HeartbeatResponse,
    MemberId,
    ReadIndexRequest,
    RequestVote,
    TimeoutNow,
)
from broker.core.raft_codec import decode_message, encode_message
from broker.wire import cbor
from tests.unit.raft_harness import Net

NONE: frozenset[MemberId] = frozenset()


def qnet(voters: int = 3, **options: object) -> Net:
    options.setdefault("quiesce", True)
    return Net(range(1, voters + 1), **options)


def tick_all(net: Net, n: int = 1, lost: Container[MemberId] | None = NONE) -> None:
    """`n` ticks of every node (quiescing allowed, `lost` unreachable), then deliveries."""
    for _ in range(n):
        for nid, node in net.nodes.items():
            node.tick(lost)
            net.process(nid)
        net.deliver_all()


def quiesced_group(voters: int = 3) -> Net:
    """A group whose leader (1) committed an entry, then quiesced with every follower."""
    net = qnet(voters)
    net.elect(1)
    net.propose(1, b"x")
    net.deliver_all()
    tick_all(net, 6)
    assert all(n.quiesced for n in net.nodes.values())
    return net


def test_an_idle_leader_quiesces_its_caught_up_followers() -> None:
    net = qnet()
    net.elect(1)
    net.propose(1, b"x")
    net.deliver_all()
    flips: list[bool] = []
    net[1].on_quiesce = flips.append
    tick_all(net, 6)
    assert flips == [True]
    assert all(n.quiesced for n in net.nodes.values())
    last = net[1].log.last_index()
    flagged = net.sent_of(Heartbeat, quiesce=True)
    assert sorted(m.dst for m in flagged) == [2, 3]  # type: ignore[type-var]
    assert all(m.commit == last for m in flagged)
    # The followers took it silently and hold everything committed.
    i = net.sent.index(flagged[-1])
    assert not any(isinstance(m, HeartbeatResponse) for m in net.sent[i:])
    assert {n.commit_index for n in net.nodes.values()} == {last}
    # Quiesced: ticks do nothing, no message leaves, no timer runs.
    sent = len(net.sent)
    elapsed = {nid: (n.election_elapsed, n.heartbeat_elapsed) for nid, n in net.nodes.items()}
    tick_all(net, 100)
    assert len(net.sent) == sent
    assert elapsed == {
        nid: (n.election_elapsed, n.heartbeat_elapsed) for nid, n in net.nodes.items()
    }
    assert net[1].role == Role.LEADER and net[1].term == 1


def test_no_quiescence_when_off_or_not_allowed_this_tick() -> None:
    off = qnet(quiesce=False)
    off.elect(1)
    tick_all(off, 20)
    assert not any(n.quiesced for n in off.nodes.values())
    on = qnet()
    on.elect(1)
    tick_all(on, 20, lost=None)  # the caller does not allow it (a peer without the feature)
    assert not any(n.quiesced for n in on.nodes.values())
    assert not on.sent_of(Heartbeat, quiesce=True)


def test_a_lagging_follower_keeps_the_group_awake_unless_it_is_lost() -> None:
    net = qnet()
    net.elect(1)
    rule = net.drop(lambda m: isinstance(m, AppendEntries) and m.dst == 3)
    net.propose(1, b"x")
    net.deliver_all()
    assert net[1].progress[3].match < net[1].log.last_index()
    tick_all(net, 20)
    assert not net[1].quiesced
    # Known unreachable (its broker's link is lost): the others carry on and quiesce, and
    # the lost one gets no quiesce heartbeat.
    tick_all(net, 4, lost={3})
    assert net[1].quiesced and net[2].quiesced and not net[3].quiesced
    assert [m.dst for m in net.sent_of(Heartbeat, quiesce=True)] == [2]
    net.drop_rules.remove(rule)


def test_no_quiescence_without_a_reachable_quorum() -> None:
    net = qnet()
    net.elect(1)
    tick_all(net, 10, lost={2, 3})
    assert not net[1].quiesced


def test_no_quiescence_with_an_uncommitted_entry() -> None:
    net = qnet()
    net.elect(1)
    net.drop(lambda m: isinstance(m, AppendEntries))
    net.propose(1, b"x")
    tick_all(net, 20)
    assert net[1].commit_index < net[1].log.last_index()
    assert not net[1].quiesced


def test_no_quiescence_with_a_pending_read() -> None:
    net = qnet()
    net.elect(1)
    net.drop(lambda m: isinstance(m, HeartbeatResponse) and m.context is not None)
    net[1].read_index(b"r1")
    net.process(1)
    net.deliver_all()
    assert net[1]._reads  # confirmed by no quorum yet
    tick_all(net, 5)  # within the election timeout: check-quorum keeps it leading
    assert net[1].is_leader and not net[1].quiesced


def test_no_quiescence_while_a_transfer_is_pending() -> None:
    net = qnet()
    net.elect(1)
    net.drop(lambda m: isinstance(m, TimeoutNow))
    net[1].transfer_leadership(3)
    net.process(1)
    net.deliver_all()
    assert net[1].lead_transferee == 3
    tick_all(net, 5)
    assert not net[1].quiesced
    # Abandoned after an election timeout: then the idle group quiesces.
    tick_all(net, 6)
    assert net[1].lead_transferee is None and net[1].quiesced


def test_a_woken_leader_waits_for_every_follower_to_answer_again() -> None:
    net = quiesced_group()
    net.isolate(3)  # alive as far as anyone knows, but silent
    net[1].wake()
    tick_all(net, 20)
    assert not net[1].quiesced
    net.heal()
    tick_all(net, 4)
    assert net[1].quiesced


def follower(voters: int = 3) -> Net:
    net = qnet(voters)
    net.elect(1)
    net.propose(1, b"x")
    net.deliver_all()
    tick_all(net, 1, lost=None)  # the commit index reaches the followers
    return net


def test_a_follower_takes_the_flag_only_from_its_leader_in_its_term_with_a_matching_log() -> None:
    net = follower()
    f = net[2]
    last = f.log.last_index()
    assert (f.leader, f.term, f.commit_index) == (1, 1, last)
    # From a member that is not its leader: answered as a plain heartbeat.
    net.step(Heartbeat(3, 2, 1, last, None, True))
    assert not f.quiesced
    # From an older term: told the newer one, not quiesced.
    f.term = 2  # as if it had moved on (the harness lets a test set it)
    net.step(Heartbeat(1, 2, 1, last, None, True))
    assert not f.quiesced and f.term == 2
    f.term = 1
    # Its log does not end at the leader's commit index (a gap, or a longer tail).
    net.step(Heartbeat(1, 2, 1, last - 1, None, True))
    assert not f.quiesced
    assert f.commit_index == last
    net.step(Heartbeat(1, 2, 1, last + 1, None, True))
    assert not f.quiesced
    assert len(net.sent_of(HeartbeatResponse, src=2)) >= 3  # each answered as a heartbeat
    # Its leader, its term, its log ending there: taken, unanswered.
    answers = len(net.sent_of(HeartbeatResponse, src=2))
    net.step(Heartbeat(1, 2, 1, last, None, True))
    assert f.quiesced
    assert len(net.sent_of(HeartbeatResponse, src=2)) == answers


def test_a_higher_term_quiesce_heartbeat_is_followed_not_taken() -> None:
    net = follower()
    f = net[2]
    last = f.log.last_index()
    net.step(Heartbeat(3, 2, 5, last, None, True))
    assert (f.term, f.leader, f.quiesced) == (5, 3, False)


def test_the_flag_is_ignored_by_a_node_that_does_not_quiesce() -> None:
    net = Net([1, 2, 3])
    net.elect(1)
    f = net[2]
    net.step(Heartbeat(1, 2, 1, f.log.last_index(), None, True))
    assert not f.quiesced


def test_the_follower_commits_what_the_quiesce_heartbeat_carries() -> None:
    net = qnet()
    net.elect(1)
    # Drop the commit-only appends and heartbeats: the followers hold the entry, uncommitted.
    rule = net.drop(lambda m: isinstance(m, AppendEntries) and not m.entries)
    net.propose(1, b"x")
    net.deliver_all()
    last = net[1].log.last_index()
    assert net[1].commit_index == last and net[2].commit_index < last
    net.drop_rules.remove(rule)
    net.drop(lambda m: isinstance(m, Heartbeat) and not m.quiesce)
    net.drop(lambda m: isinstance(m, AppendEntries))
    tick_all(net, 6)
    assert net[1].quiesced and net[2].quiesced and net[3].quiesced
    assert net[2].commit_index == net[3].commit_index == last
    assert [e.data for e in net.applied[2] if e.data] == [b"x"]


@pytest.mark.parametrize(
    "how",
    [
        "append",
        "propose",
        "propose_many",
        "conf_change",
        "read_index",
        "transfer",
        "campaign",
        "leader_unreachable",
        "wake",
        "other_message",
    ],
)
def test_every_input_wakes_a_quiesced_node(how: str) -> None:
    net = quiesced_group()
    leader, f = net[1], net[2]
    last = leader.log.last_index()
    flips: list[bool] = []
    f.on_quiesce = flips.append
    leader.on_quiesce = flips.append
    f.election_elapsed = 5  # frozen timers are restarted by waking
    node = f
    if how == "append":
        net.step(AppendEntries(1, 2, 1, last, 1, [], last))
    elif how == "propose":
        node = leader
        leader.propose(b"y")
    elif how == "propose_many":
        node = leader
        leader.propose_many([b"y", b"z"])
    elif how == "conf_change":
        node = leader
        leader.propose_conf_change(ConfChange(ConfChangeKind.ADD_LEARNER, 4))
    elif how == "read_index":
        node = leader
        leader.read_index(b"r")
    elif how == "transfer":
        node = leader
        leader.transfer_leadership(3)
    elif how == "campaign":
        f.campaign()
    elif how == "leader_unreachable":
        f.leader_unreachable(1)
    elif how == "wake":
        f.wake()
    elif how == "other_message":
        net.step(ReadIndexRequest(3, 2, 1, b"q"))  # any message but the two without news
    assert not node.quiesced
    assert flips[0] is False
    if node is f and how not in ("leader_unreachable", "campaign"):
        assert f.election_elapsed == 0  # a follower does not campaign at once


def test_a_follower_refuses_or_forwards_client_requests_without_waking() -> None:
    """Only its leader's word or the runtime's liveness signal wakes a quiesced follower: a
    client's request to it (which a broker refuses or forwards) does not."""
    net = quiesced_group()
    f = net[2]
    with pytest.raises(ProposalDropped):
        f.propose(b"y")
    with pytest.raises(ProposalDropped):
        f.propose_conf_change(ConfChange(ConfChangeKind.ADD_LEARNER, 4))
    f.read_index(b"r")
    f.transfer_leadership(3)
    net.process(2)
    assert f.quiesced
    assert [type(m).__name__ for m in net.inbox] == ["ReadIndexRequest", "TransferLeader"]


def test_messages_without_news_keep_a_node_quiesced() -> None:
    net = quiesced_group()
    last = net[1].log.last_index()
    net.step(Heartbeat(1, 2, 1, last, None, True))  # a duplicate of the leader's last word
    assert net[2].quiesced
    net.step(HeartbeatResponse(2, 1, 1, None))  # a late answer to a plain heartbeat
    assert net[1].quiesced
    net.step(HeartbeatResponse(2, 1, 1, b"ctx"))  # a read's answer asks for something
    assert not net[1].quiesced
    net.step(Heartbeat(1, 3, 1, last, None))  # a plain heartbeat wants an answer
    assert not net[3].quiesced


def test_a_proposal_on_a_quiesced_leader_commits_and_the_group_quiesces_again() -> None:
    net = quiesced_group()
    net.propose(1, b"y")
    net.deliver_all()
    assert not any(n.quiesced for n in (net[1], net[2], net[3]))
    last = net[1].log.last_index()
    assert net[1].commit_index == last
    tick_all(net, 1, lost=None)  # the commit index reaches the followers
    assert {n.commit_index for n in net.nodes.values()} == {last}
    assert [e.data for e in net.applied[3] if e.data] == [b"x", b"y"]
    tick_all(net, 6)
    assert all(n.quiesced for n in net.nodes.values())


def test_quiesced_followers_of_a_lost_leader_elect_a_new_one() -> None:
    net = quiesced_group()
    net.isolate(1)
    # Nothing happens by itself: the followers do not tick.
    tick_all(net, 50, lost=NONE)
    assert net[2].leader == 1 and net[3].leader == 1 and net[2].quiesced
    # The runtime's liveness signal: broker 1's link is lost.
    for nid in (2, 3):
        net[nid].leader_unreachable(1)
    tick_all(net, 30, lost={1})
    leaders = [n for n in (net[2], net[3]) if n.is_leader]
    assert len(leaders) == 1 and leaders[0].term == 2
    # The new leader's group quiesces in turn, the lost member excused.
    assert leaders[0].quiesced
    # The old leader, back, is woken by the new term and follows.
    net.heal()
    net[1].wake()
    tick_all(net, 10)
    assert net[1].role == Role.FOLLOWER and net[1].term == 2


def test_a_quiesced_leader_steps_down_once_woken_without_a_quorum() -> None:
    net = quiesced_group()
    net.isolate(1)
    net[1].wake()  # its broker lost the links to both followers' brokers
    for _ in range(20):
        net[1].tick({2, 3})
        net.process(1)
    assert net[1].role != Role.LEADER


def test_a_follower_that_missed_the_flag_campaigns_and_wakes_the_group() -> None:
    net = qnet()
    net.elect(1)
    net.drop(lambda m: isinstance(m, Heartbeat) and m.quiesce and m.dst == 3)
    tick_all(net, 4)
    assert net[1].quiesced and net[2].quiesced and not net[3].quiesced
    tick_all(net, 30)
    # Its pre-vote woke the leader (the quiesced follower ignored it, in its lease), whose
    # heartbeats brought it back; the leader kept leading; all quiet again.
    assert net[1].is_leader and net[1].term == 1
    assert net.sent_of(Heartbeat, quiesce=True, dst=2)
    assert all(n.commit_index == net[1].commit_index for n in net.nodes.values())


# -- the codec ------------------------------------------------------------------------------


def test_the_quiesce_flag_round_trips_as_an_optional_third_item() -> None:
    a, b = Member(1, 7), Member(2, 9)
    plain = Heartbeat(a, b, 3, 10, None)
    flagged = Heartbeat(a, b, 3, 10, None, True)
    assert len(encode_message(plain)) == 6  # tag, src, dst, term, commit, context
    assert encode_message(flagged) == [*encode_message(plain), True]
    assert decode_message(cbor.decode(cbor.encode(encode_message(flagged)))) == flagged
    assert decode_message(cbor.decode(cbor.encode(encode_message(plain)))) == plain
    # An older broker's two-item heartbeat reads as a plain one.
    old = [2, [1, 7], [2, 9], 3, 10, None]
    assert decode_message(old) == plain
    with pytest.raises(PeerProtocolError):
        decode_message([*old, False])
    with pytest.raises(PeerProtocolError):
        decode_message([*old, True, True])


def test_a_learner_that_missed_the_flag_wakes_its_leader() -> None:
    """A learner never campaigns: after a timeout without a word it acknowledges its commit
    index, which wakes the leader; the group quiesces again, the learner up to date."""
    net = Net([1, 2, 3], learners=[4], quiesce=True)
    net.elect(1)
    rule = net.drop(lambda m: isinstance(m, Heartbeat) and m.quiesce and m.dst == 4)
    net.drop(lambda m: isinstance(m, AppendEntries) and not m.entries and m.dst == 4)
    net.propose(1, b"x")
    net.deliver_all()
    tick_all(net, 4)
    last = net[1].log.last_index()
    assert net[1].quiesced and not net[4].quiesced
    assert net[4].commit_index < last  # the commit index never reached it
    net.heal()
    del rule
    tick_all(net, 30)
    assert net.sent_of(AppendResponse, src=4, dst=1)
    assert all(n.quiesced for n in net.nodes.values())
    assert net[4].commit_index == last and net[1].term == 1


def test_a_member_that_lost_the_leader_alone_cannot_depose_it() -> None:
    """Follower 3 loses its link to the leader (the runtime says leader_unreachable) while
    follower 2 still has one: 3's pre-votes reach only the quiesced 2, which holds its lease
    and stays asleep, so 2 never times out to join 3 against a leader it still reaches."""
    net = quiesced_group()
    net.drop(lambda m: {m.src, m.dst} == {1, 3})
    net[3].leader_unreachable(1)
    for _ in range(60):
        for nid in (2, 3):
            net[nid].tick(NONE)
            net.process(nid)
        net.deliver_all()
    assert net.sent_of(RequestVote, src=3, dst=2, pre_vote=True)
    assert net[1].is_leader and net[1].term == 1 and net[1].quiesced
    assert net[2].quiesced and net[2].leader == 1 and net[2].term == 1
    assert net[3].role != Role.LEADER and net[3].term == 1


def test_a_vote_request_from_its_own_leader_wakes_a_quiesced_follower() -> None:
    """The leader woke for a proposal none of its followers heard, lost check-quorum and
    stepped down, all within the runtime's silence bound (no liveness signal): its own
    pre-vote is what tells the quiesced followers that it no longer leads."""
    net = quiesced_group()
    rule = net.drop(lambda m: 1 in (m.src, m.dst))
    net.propose(1, b"lost")
    for _ in range(15):
        net[1].tick(NONE)
        net.process(1)
        net.deliver_all()
    assert net[1].role != Role.LEADER
    assert net[2].quiesced and net[3].quiesced and net[2].leader == 1
    net.drop_rules.remove(rule)
    tick_all(net, 60)
    leaders = [n for n in net.nodes.values() if n.is_leader]
    assert len(leaders) == 1 and leaders[0].term >= 2
    assert len({n.commit_index for n in net.nodes.values()}) == 1
