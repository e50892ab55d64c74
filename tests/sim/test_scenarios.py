"""Named Raft scenarios, each a scripted run of the simulated world with its checkers on.

Every scenario runs against the real RaftNode and must hold; the Figure 8 and membership
scenarios, and those of the rules random seeds rarely or never expose (see
tests/sim/test_mutations.py), also run against a deliberately broken node and must then be
caught.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from broker.core.raft import (
    ConfChange,
    ConfChangeKind,
    DropReason,
    ProposalDropped,
    RaftNode,
    Role,
)
from broker.core.raft.progress import ProgressState
from broker.core.raft.types import (
    AppendEntries,
    AppendResponse,
    Heartbeat,
    InstallSnapshot,
    Message,
    RequestVote,
)
from tests.sim.checker import Violation
from tests.sim.mutations import (
    CommitPastLastNewEntry,
    CommitPreviousTermByCounting,
    ConfChangeBeforeOwnTermCommit,
    KeepReadsAfterStepDown,
    LeadBeforeTermDurable,
    LearnersVote,
    PreVoteIgnoresLog,
    SnapshotMatchesAnyTerm,
    VoteIgnoresLog,
)
from tests.sim.scenario import Scenario, run_seed
from tests.sim.world import NetOptions, NodeFactory, World

ELECTION = 10


def make_world(
    voters: int,
    *,
    learners: int = 0,
    spares: int = 0,
    seed: int = 1,
    node_factory: NodeFactory | None = None,
    **raft: object,
) -> World:
    """A scripted world. The rule audits are on for the correct core and off with a mutant
    (`node_factory`): a named scenario shows a consequence checker catching the broken rule,
    which the audits would report first (tests/sim/test_rule_audit.py covers them)."""
    raft.setdefault("election_ticks", ELECTION)
    raft.setdefault("heartbeat_ticks", 2)
    ids = list(range(voters + learners + spares))
    return World(
        random.Random(seed),
        ids[:voters],
        ids[voters : voters + learners],
        ids[voters + learners :],
        net=NetOptions(latency_min=1, latency_max=1),
        raft=raft,
        disk_latency=(1, 1),
        crash_keeps_prefix=0.0,
        node_factory=node_factory,
        audit_rules=node_factory is None,
    )


def checked_clean(w: World) -> None:
    """A control scenario with the correct core: it did real work, and the checkers and rule
    audits that ran on every event of it (any of them raises a Violation) checked it."""
    assert w.checker.commit_index > 0, "nothing committed: the scenario checked nothing"
    assert w.audit.checks > 0, "the rule audits checked nothing"


def node(w: World, nid: int) -> RaftNode:
    n = w.nodes[nid].node
    assert n is not None, f"node {nid} is down"
    return n


def wait_for(w: World, cond: Callable[[], bool], ticks: int = 20 * ELECTION) -> None:
    for _ in range(ticks):
        if cond():
            return
        w.run_ticks(1)
    assert cond(), "condition not reached in time"


def leader_id(w: World) -> int | None:
    lead = w.leader()
    return lead.id if lead is not None else None


def elect(w: World, nid: int) -> None:
    node(w, nid).campaign()
    w.process(w.nodes[nid])
    wait_for(
        w,
        lambda: (
            node(w, nid).is_leader and node(w, nid).commit_index >= node(w, nid).term_start_index
        ),
    )


def commit_all(
    w: World, nid: int, count: int, tag: str, among: tuple[int, ...] | None = None
) -> list[int]:
    """Propose `count` entries at leader `nid` and wait until every up member (or every up
    node in `among`) applied them."""
    indexes = [w.propose(nid, [f"{tag}{k}".encode()]) for k in range(count)]
    assert all(i is not None for i in indexes)
    last = max(i for i in indexes if i is not None)
    members = among if among is not None else node(w, nid).conf.members()
    nodes = [w.nodes[i] for i in members]  # type: ignore[index]
    wait_for(w, lambda: all(sn.app_index >= last for sn in nodes if sn.up))
    return [i for i in indexes if i is not None]


def entry_term(w: World, nid: int, index: int) -> int:
    return node(w, nid).log.term(index)


# --- Figure 8 ----------------------------------------------------------------------------------


def figure8(node_factory: NodeFactory | None) -> World:
    """Raft paper, Figure 8: an entry of an old term, replicated to a majority by a later
    leader, must not count as committed until an entry of the leader's own term is."""
    w = make_world(5, node_factory=node_factory, max_msg_bytes=40)
    elect(w, 0)
    commit_all(w, 0, 3, "base")
    t = node(w, 0).term
    # (a) The leader replicates X to node 1 only, then crashes.
    for d in (2, 3, 4):
        w.blocked.add((0, d))
    x_index = w.propose(0, [b"X"])
    assert x_index is not None
    wait_for(w, lambda: entry_term(w, 1, x_index) == t and w.nodes[0].disk.last_index() >= x_index)
    w.crash(0)
    w.heal()
    # (b) A node without X wins a later term; its no-op (at X's index) reaches nobody.
    w.isolate(1)
    w.drop_if = lambda m: isinstance(m, AppendEntries) and m.term > t
    wait_for(w, lambda: leader_id(w) in (2, 3, 4))
    s5 = leader_id(w)
    assert s5 is not None
    t5 = node(w, s5).term
    assert entry_term(w, s5, x_index) == t5
    wait_for(w, lambda: w.nodes[s5].disk.last_index() >= x_index)
    w.crash(s5)
    # (c) Node 0 returns and wins a term > t5 with X; X reaches a majority, its no-op nobody.
    w.heal()
    w.restart(0)

    def holds_x(nid: object) -> bool:
        sn = w.nodes[nid]  # type: ignore[index]
        return sn.node is not None and sn.node.log.term(x_index) == t

    w.drop_if = lambda m: (
        (isinstance(m, AppendEntries) and any(e.term > t5 for e in m.entries) and holds_x(m.dst))
        or (isinstance(m, RequestVote) and m.src != 0)
    )
    wait_for(w, lambda: leader_id(w) == 0 and node(w, 0).term > t5)
    wait_for(w, lambda: sum(1 for nid in w.nodes if holds_x(nid)) >= 3)
    w.run_ticks(2)
    # (d) Node 0 crashes before its own-term entry spreads; s5 returns and wins term t+3.
    w.crash(0)
    w.restart(s5)
    w.drop_if = lambda m: isinstance(m, RequestVote) and m.src != s5
    wait_for(w, lambda: leader_id(w) == s5)
    w.drop_if = None
    w.restart(0)
    commit_all(w, s5, 2, "after")
    return w


def test_figure8_old_term_entry_not_committed_by_counting() -> None:
    w = figure8(None)
    # s5's no-op replaced X everywhere: X was never committed, so nothing committed was lost.
    assert b"X" not in [w.checker.idents[i][1] for i in range(1, w.checker.commit_index + 1)]  # type: ignore[index]


def test_figure8_catches_commit_by_counting() -> None:
    with pytest.raises(Violation):
        figure8(CommitPreviousTermByCounting)


# --- elections ---------------------------------------------------------------------------------


def test_partitioned_node_rejoins_without_disrupting_leader() -> None:
    """With pre-vote, an isolated follower does not raise its term, so on rejoining it does
    not depose the leader."""
    w = make_world(3)
    elect(w, 0)
    term = node(w, 0).term
    w.isolate(2)
    w.run_ticks(10 * ELECTION)
    assert node(w, 2).term == term
    assert node(w, 2).role == Role.PRE_CANDIDATE or node(w, 2).role == Role.FOLLOWER
    w.heal()
    commit_all(w, 0, 3, "after")
    assert leader_id(w) == 0 and node(w, 0).term == term


def test_partitioned_node_without_prevote_disrupts() -> None:
    """The contrast: without pre-vote the rejoining node's higher term forces an election."""
    w = make_world(3, pre_vote=False)
    elect(w, 0)
    term = node(w, 0).term
    w.isolate(2)
    w.run_ticks(10 * ELECTION)
    assert node(w, 2).term > term
    w.heal()
    wait_for(w, lambda: leader_id(w) is not None and node(w, leader_id(w) or 0).term > term)


def test_prevote_and_check_quorum_never_leaderless() -> None:
    """etcd#9586: a node holding a higher term but a stale log (it campaigned while cut off,
    e.g. before pre-vote was enabled) must not leave the cluster leaderless."""
    w = make_world(3)
    elect(w, 0)
    commit_all(w, 0, 2, "a")
    # Node 2 falls behind and, cut off, runs up its term without pre-vote.
    w.isolate(2)
    commit_all(w, 0, 5, "b", among=(0, 1))
    w.crash(2)
    w.raft_options["pre_vote"] = False
    w.restart(2)
    w.raft_options["pre_vote"] = True
    w.run_ticks(6 * ELECTION)
    stale_term = node(w, 2).term
    assert stale_term > node(w, 0).term
    w.heal()
    # The old leader crashes too: the survivors must still elect a leader and make progress.
    w.crash(0)
    wait_for(w, lambda: leader_id(w) == 1)
    assert node(w, 1).term > stale_term
    commit_all(w, 1, 3, "c")


def test_leader_crash_mid_replication() -> None:
    w = make_world(5)
    elect(w, 0)
    commit_all(w, 0, 3, "a")
    # Entries reach only node 1 before the leader crashes: they may be lost, never half-kept.
    for d in (2, 3, 4):
        w.blocked.add((0, d))
    idx = w.propose(0, [b"u1", b"u2"])
    assert idx is not None
    w.run_ticks(1)
    w.crash(0)
    w.heal()
    wait_for(w, lambda: leader_id(w) is not None)
    new = leader_id(w)
    assert new is not None
    commit_all(w, new, 3, "b")
    w.restart(0)
    wait_for(w, lambda: w.nodes[0].app_index >= w.checker.commit_index)
    committed = [w.checker.idents[i][1] for i in range(1, w.checker.commit_index + 1)]  # type: ignore[index]
    assert (b"u1" in committed) == (b"u2" in committed)
    assert committed.count(b"a0") == 1


def test_single_voter_not_committed_before_persisted() -> None:
    w = make_world(1)
    elect(w, 0)
    sn = w.nodes[0]
    w.disk_latency = (50, 50)
    idx = w.propose(0, [b"p"])
    assert idx is not None
    w.run_until(w.now + 20)
    # Written but not yet durable: not committed, not applied.
    assert node(w, 0).commit_index < idx and sn.app_index < idx
    w.crash(0)
    w.disk_latency = (1, 1)
    w.restart(0)
    elect(w, 0)
    assert sn.disk.last_index() < idx or entry_term(w, 0, idx) != 1
    assert b"p" not in [w.checker.idents[i][1] for i in range(1, w.checker.commit_index + 1)]  # type: ignore[index]
    commit_all(w, 0, 1, "q")


# --- membership --------------------------------------------------------------------------------


def test_membership_change_while_a_node_is_down() -> None:
    w = make_world(3, spares=1)
    elect(w, 0)
    commit_all(w, 0, 2, "a")
    w.crash(2)
    idx = w.conf_change(0, ConfChange(ConfChangeKind.ADD_VOTER, 3))
    assert idx is not None
    wait_for(w, lambda: node(w, 0).commit_index >= idx)
    assert node(w, 0).conf.voters == frozenset({0, 1, 2, 3})
    commit_all(w, 0, 2, "b")
    w.restart(2)
    wait_for(w, lambda: w.nodes[2].app_index >= w.checker.commit_index)
    assert node(w, 2).conf.voters == frozenset({0, 1, 2, 3})
    # Remove the node that was down; the group keeps committing with the rest.
    idx = w.conf_change(0, ConfChange(ConfChangeKind.REMOVE, 2))
    assert idx is not None
    wait_for(w, lambda: node(w, 0).commit_index >= idx)
    w.crash(2)
    commit_all(w, 0, 2, "c")


def test_second_change_refused_while_one_is_uncommitted() -> None:
    w = make_world(3, spares=2)
    elect(w, 0)
    w.isolate(0)
    first = w.conf_change(0, ConfChange(ConfChangeKind.ADD_LEARNER, 3))
    assert first is not None
    with pytest.raises(ProposalDropped) as exc:
        node(w, 0).propose_conf_change(ConfChange(ConfChangeKind.ADD_LEARNER, 4))
    assert exc.value.reason == DropReason.CONF_CHANGE_PENDING
    w.heal()
    wait_for(w, lambda: node(w, 0).commit_index >= first)
    assert w.conf_change(0, ConfChange(ConfChangeKind.ADD_LEARNER, 4)) is not None


def test_new_leader_refuses_change_until_own_term_commits() -> None:
    w = make_world(3, spares=1)
    elect(w, 0)
    commit_all(w, 0, 2, "a")
    w.crash(0)
    # The next leader's appends are lost: its no-op cannot commit.
    w.drop_if = lambda m: isinstance(m, AppendEntries)
    wait_for(w, lambda: leader_id(w) in (1, 2))
    lead = node(w, leader_id(w) or 0)
    assert lead.commit_index < lead.term_start_index
    with pytest.raises(ProposalDropped) as exc:
        lead.propose_conf_change(ConfChange(ConfChangeKind.ADD_LEARNER, 3))
    assert exc.value.reason == DropReason.CONF_CHANGE_PENDING
    w.drop_if = None
    wait_for(w, lambda: lead.commit_index >= lead.term_start_index)
    assert w.conf_change(leader_id(w) or 0, ConfChange(ConfChangeKind.ADD_LEARNER, 3))


def ongaro(node_factory: NodeFactory | None) -> World:
    """Ongaro (raft-dev, 2015): with single-member changes, a leader that appends a change
    before committing an entry of its term can lose a committed change."""
    w = make_world(4, spares=1, node_factory=node_factory)
    elect(w, 0)
    commit_all(w, 0, 2, "base")
    t = node(w, 0).term
    # Leader 0 adds node 4 (C1); C1 reaches only node 4 (and 0).
    for d in (1, 2, 3):
        w.blocked.add((0, d))
    c1 = w.conf_change(0, ConfChange(ConfChangeKind.ADD_VOTER, 4))
    assert c1 is not None
    wait_for(w, lambda: w.nodes[4].up and entry_term(w, 4, c1) == t)
    w.crash(0)
    w.heal()
    # Node 1 wins the next term with 1, 2, 3 (old configuration); its entries reach node 2
    # only, so its no-op cannot commit under the old configuration {0, 1, 2, 3}.
    w.isolate(4)
    w.drop_if = lambda m: (
        (isinstance(m, RequestVote) and m.src != 1)
        or (isinstance(m, (AppendEntries, InstallSnapshot)) and m.dst in (0, 3))
    )
    wait_for(w, lambda: leader_id(w) == 1)
    # At once it removes node 3 (C2). Under C2 = {0, 1, 2}, nodes 1 and 2 are a quorum.
    c2: int | None = None
    try:
        c2 = node(w, 1).propose_conf_change(ConfChange(ConfChangeKind.REMOVE, 3))
    except ProposalDropped as e:
        assert e.reason == DropReason.CONF_CHANGE_PENDING  # the rule at work
    w.process(w.nodes[1])
    if c2 is not None:
        wait_for(w, lambda: node(w, 1).commit_index >= c2)
    w.run_ticks(2)
    # Node 0 returns; with 3 and 4 it is a quorum of C1 = {0, 1, 2, 3, 4}.
    w.crash(1)
    w.restart(0)
    w.heal()
    w.drop_if = lambda m: isinstance(m, RequestVote) and m.src != 0
    wait_for(w, lambda: leader_id(w) is not None, ticks=10 * ELECTION)
    w.drop_if = None
    w.restart(1)
    lead = leader_id(w)
    assert lead is not None
    commit_all(w, lead, 2, "after")
    return w


def test_single_member_changes_keep_committed_changes() -> None:
    checked_clean(ongaro(None))


def test_ongaro_bug_caught_when_rule_is_broken() -> None:
    with pytest.raises(Violation):
        ongaro(ConfChangeBeforeOwnTermCommit)


# --- snapshots and transfer --------------------------------------------------------------------


def test_snapshot_install_to_far_behind_follower() -> None:
    w = make_world(3, max_snapshot_chunk_bytes=16)
    elect(w, 0)
    w.crash(2)
    commit_all(w, 0, 30, "a")
    for nid in (0, 1):
        w.snapshot(nid, keep=0, pad=100)
    assert w.nodes[0].disk.first_index() > 20
    chunks: list[Message] = []
    w.drop_if = lambda m: isinstance(m, InstallSnapshot) and chunks.append(m) is not None
    w.restart(2)
    wait_for(w, lambda: w.nodes[2].app_index >= w.checker.commit_index)
    assert w.stats.snapshots_installed == 1
    assert len({m.offset for m in chunks if isinstance(m, InstallSnapshot)}) > 3
    commit_all(w, 0, 3, "b")


def test_a_second_voter_catches_up_from_a_snapshot_made_before_it_was_added() -> None:
    """A single voter compacts, then adds a second voter: that entry commits only once the
    new voter holds it, and the leader's only snapshot predates it (its configuration lacks
    the new voter). The new voter installs it on the leader's vouch and the change commits;
    nothing is refused."""
    w = make_world(1, spares=1, max_snapshot_chunk_bytes=8)
    elect(w, 0)
    commit_all(w, 0, 10, "a")
    w.snapshot(0, keep=0, pad=40)
    assert 1 not in w.nodes[0].disk.snapshot().meta.conf.members()
    idx = w.conf_change(0, ConfChange(ConfChangeKind.ADD_VOTER, 1))
    assert idx is not None
    wait_for(w, lambda: node(w, 0).commit_index >= idx)
    assert (w.stats.snapshots_installed, w.stats.snapshots_vouched) == (1, 1)
    assert w.stats.snapshots_refused == 0
    commit_all(w, 0, 3, "b")


def test_the_snapshot_profile_installs_snapshots_in_most_seeds() -> None:
    """The snapshot-heavy profile does what it is drawn for (scenario.snapshot_heavy): most
    of its seeds install a snapshot, and among a few dozen some install one on a vouch and
    some refuse one for its size."""
    seeds = [s for s in range(400) if Scenario.draw(s).profile == "snapshot"][:24]
    results = [run_seed(s) for s in seeds]
    assert [r.violation for r in results] == [None] * len(seeds)
    assert sum(r.stats.snapshots_installed > 0 for r in results) >= 0.6 * len(seeds)
    assert sum(r.stats.snapshots_vouched for r in results) > 0
    assert sum(r.stats.snapshots_refused for r in results) > 0


def test_leadership_transfer_under_load() -> None:
    w = make_world(3)
    elect(w, 0)
    dropped_transferring = 0
    term = node(w, 0).term
    for k in range(60):
        lead = leader_id(w)
        if lead is not None:
            try:
                node(w, lead).propose(b"load%d" % k)
                w.process(w.nodes[lead])
            except ProposalDropped as e:
                dropped_transferring += e.reason == DropReason.TRANSFERRING
        if k == 20:
            w.transfer(0, 2)
        w.run_until(w.now + 3)
    wait_for(w, lambda: leader_id(w) == 2)
    assert node(w, 2).term == term + 1
    commit_all(w, 2, 3, "after")
    assert w.stats.elections == 2


# --- durability of the leader's own term ----------------------------------------------------


def lead_twice_scenario(node_factory: NodeFactory | None) -> World:
    """A candidate whose disk stalls gets a quorum of votes from others before its own new
    term is durable. It must not lead until then: if it did and crashed, it would come back
    in the older term, win the same term again with the same voters, and lead it twice."""
    w = make_world(3, node_factory=node_factory)
    elect(w, 0)
    commit_all(w, 0, 2, "a")
    w.crash(0)
    w.restart(0)
    w.drop_if = lambda m: isinstance(m, RequestVote)
    w.run_ticks(2 * ELECTION)  # every lease has expired; nobody could campaign
    # Only node 2 campaigns, and whatever it sends as a leader is lost.
    w.drop_if = lambda m: (
        (isinstance(m, RequestVote) and m.src != 2)
        or (isinstance(m, (AppendEntries, Heartbeat)) and m.src == 2)
    )
    w.stall_disk(2, 1000 * w.tick_units)
    term = node(w, 2).term
    node(w, 2).campaign()
    w.process(w.nodes[2])
    wait_for(w, lambda: all(w.nodes[i].disk.hard_state.vote == 2 for i in (0, 1)))
    w.run_ticks(2)
    w.crash(2)  # its stalled writes are lost: it restarts in the older term
    w.drop_if = lambda m: isinstance(m, RequestVote) and m.src != 2
    w.restart(2)
    assert node(w, 2).term == term
    wait_for(w, lambda: leader_id(w) == 2)
    w.drop_if = None
    commit_all(w, 2, 2, "b")
    return w


def test_candidate_leads_only_once_its_term_is_durable() -> None:
    w = lead_twice_scenario(None)
    assert w.stats.elections == 2  # node 0's term, then node 2's: never node 2 twice


def test_leading_before_the_term_is_durable_is_caught() -> None:
    with pytest.raises(Violation, match="election-safety"):
        lead_twice_scenario(LeadBeforeTermDurable)


# --- rules random seeds rarely or never expose (tests/sim/test_mutations.py) ------------------


def commit_bounded_by_append(node_factory: NodeFactory | None) -> World:
    """A follower commits min(leader commit, last new entry) on an append (Figure 2). With
    fast backtracking a correct leader's first accepted append always reaches the follower's
    first conflicting entry, so this leader probes from further back: Raft allows any
    nextIndex at or below the true one (it is only a hint; a leader may probe from its commit
    index after a restart, or bisect). Node 2 holds M1 M2 (which the leader holds too), then
    S1 S2 (which it does not); the leader's append carries M1 alone and a commit index past
    S1's index. Committing by the follower's own last index would commit S1."""
    w = make_world(5, node_factory=node_factory, max_msg_bytes=40)  # one entry per append
    elect(w, 0)
    commit_all(w, 0, 2, "base")
    t = node(w, 0).term
    # M1, M2 reach nodes 1-3, but no acknowledgement returns: they stay uncommitted.
    w.blocked.add((0, 4))
    w.drop_if = lambda m: isinstance(m, AppendResponse) and m.dst == 0
    m1 = w.propose(0, [b"M1"])
    m2 = w.propose(0, [b"M2"])
    assert m1 is not None and m2 == m1 + 1
    wait_for(w, lambda: all(entry_term(w, i, m2) == t for i in (1, 2, 3)))
    # S1, S2 reach node 2 only.
    w.blocked |= {(0, 1), (0, 3)}
    s1 = w.propose(0, [b"S1"])
    assert s1 == m2 + 1 and w.propose(0, [b"S2"]) == s1 + 1
    wait_for(w, lambda: entry_term(w, 2, s1 + 1) == t)
    w.crash(0)
    w.heal()
    w.drop_if = None
    w.isolate(2)
    # Node 1 or 3 leads the next term; its no-op takes S1's index and commits.
    wait_for(w, lambda: leader_id(w) in (1, 3))
    lead = leader_id(w)
    assert lead is not None
    commit_all(w, lead, 2, "new", among=(1, 3, 4))
    leader = node(w, lead)
    assert leader.log.term(s1) == leader.term and leader.commit_index > s1
    pr = leader.progress[2]
    assert pr.state == ProgressState.PROBE and pr.match < m1
    pr.next = m1  # probe node 2 from M1: its first append carries M1 and nothing more
    w.rejoin(2)
    wait_for(w, lambda: w.nodes[2].app_index >= w.checker.commit_index)
    commit_all(w, lead, 2, "after", among=(1, 2, 3, 4))
    return w


def test_follower_commit_is_bounded_by_the_append() -> None:
    checked_clean(commit_bounded_by_append(None))


def test_commit_past_the_last_new_entry_is_caught() -> None:
    with pytest.raises(Violation, match="state-machine-safety"):
        commit_bounded_by_append(CommitPastLastNewEntry)


def snapshot_over_conflicting_log(node_factory: NodeFactory | None) -> World:
    """A follower keeps its log past a snapshot only if it holds the snapshot's last entry
    with the same term. Node 0, a deposed leader, holds eight uncommitted entries of its term
    at the indices where the next leader wrote and then compacted its own: the snapshot it
    receives ends at an index where node 0 holds an entry of another term."""
    w = make_world(3, node_factory=node_factory)
    elect(w, 0)
    commit_all(w, 0, 2, "base")
    t = node(w, 0).term
    w.isolate(0)
    first = w.propose(0, [b"x%d" % k for k in range(8)])
    assert first is not None
    wait_for(w, lambda: leader_id(w) in (1, 2))
    lead = leader_id(w)
    assert lead is not None
    commit_all(w, lead, 2, "new", among=(1, 2))
    for nid in (1, 2):
        w.snapshot(nid, keep=0, pad=10)
    snap = w.nodes[lead].disk.snapshot().meta
    assert first <= snap.index <= node(w, 0).log.last_index()
    assert entry_term(w, 0, snap.index) == t != snap.term
    w.heal()
    wait_for(w, lambda: w.nodes[0].app_index >= w.checker.commit_index)
    assert w.stats.snapshots_installed >= 1
    commit_all(w, lead, 2, "after")
    return w


def test_snapshot_replaces_a_conflicting_log() -> None:
    checked_clean(snapshot_over_conflicting_log(None))


def test_snapshot_matched_by_any_term_is_caught() -> None:
    with pytest.raises(Violation, match="state-machine-safety"):
        snapshot_over_conflicting_log(SnapshotMatchesAnyTerm)


def read_across_terms(node_factory: NodeFactory | None) -> World:
    """A leader cut off (without check-quorum, so it keeps believing it leads) takes a read
    after the others elected a new leader and committed more: the read waits for a quorum
    that never comes. It must be dropped when the node steps down; kept, it would be released
    at its stale index once the node leads again and a quorum answers its heartbeats."""
    w = make_world(3, node_factory=node_factory, check_quorum=False)
    elect(w, 0)
    commit_all(w, 0, 2, "a")
    w.isolate(0)
    wait_for(w, lambda: node(w, 1).is_leader or node(w, 2).is_leader)
    lead = 1 if node(w, 1).is_leader else 2
    commit_all(w, lead, 3, "b", among=(1, 2))
    assert node(w, 0).is_leader
    assert w.read(0, b"stale")
    w.heal()
    wait_for(w, lambda: not node(w, 0).is_leader)
    wait_for(w, lambda: w.nodes[0].app_index >= w.checker.commit_index)
    w.transfer(lead, 0)
    wait_for(
        w, lambda: leader_id(w) == 0 and node(w, 0).commit_index >= node(w, 0).term_start_index
    )
    commit_all(w, 0, 2, "c")
    w.run_ticks(ELECTION)  # heartbeat rounds of the new term
    return w


def test_pending_reads_die_with_the_term() -> None:
    w = read_across_terms(None)
    assert b"stale" in w.read_floor  # never served (its client times out and retries)


def test_reads_kept_across_terms_are_caught() -> None:
    with pytest.raises(Violation, match="linearizable-read"):
        read_across_terms(KeepReadsAfterStepDown)


def learners_outvote(node_factory: NodeFactory | None) -> World:
    """Three voters and two learners split {0, 1} | {2, 3, 4}; voters 0 and 1 commit more.
    Node 2 with the two learners is three of five members but one of three voters: it must
    not win an election there."""
    w = make_world(3, learners=2, node_factory=node_factory)
    elect(w, 0)
    commit_all(w, 0, 2, "a")
    for a in (0, 1):
        for b in (2, 3, 4):
            w.blocked |= {(a, b), (b, a)}
    commit_all(w, 0, 3, "b", among=(0, 1))
    w.run_ticks(6 * ELECTION)
    w.heal()
    wait_for(w, lambda: leader_id(w) is not None)
    commit_all(w, leader_id(w) or 0, 2, "c")
    return w


def test_learners_do_not_vote() -> None:
    checked_clean(learners_outvote(None))


def test_learner_votes_counted_are_caught() -> None:
    with pytest.raises(Violation, match="leader-completeness"):
        learners_outvote(LearnersVote)


def stale_pre_candidate(node_factory: NodeFactory | None) -> World:
    """A node that missed committed entries asks for pre-votes once the leader is gone. Its
    log is behind, so no pre-vote may be granted and it must not raise the term. No safety
    property depends on it (the real vote checks the log again), so what catches a pre-vote
    granted regardless of the log is this scenario's check: the stale node's term."""
    w = make_world(3, node_factory=node_factory)
    elect(w, 0)
    commit_all(w, 0, 2, "a")
    w.isolate(2)
    commit_all(w, 0, 3, "b", among=(0, 1))
    term = node(w, 0).term
    w.crash(0)
    w.heal()
    # Node 1's lease runs out, but its own (pre-)vote requests are lost.
    w.drop_if = lambda m: isinstance(m, RequestVote) and m.src == 1
    w.run_ticks(ELECTION)
    node(w, 2).campaign()
    w.process(w.nodes[2])
    w.run_ticks(2)
    assert node(w, 2).term == term, f"stale node 2 raised the term to {node(w, 2).term}"
    w.drop_if = None
    wait_for(w, lambda: leader_id(w) == 1)
    assert node(w, 1).term == term + 1
    return w


def test_stale_node_passes_no_pre_vote() -> None:
    checked_clean(stale_pre_candidate(None))


def test_pre_vote_granted_regardless_of_log_is_caught() -> None:
    with pytest.raises(AssertionError, match="raised the term"):
        stale_pre_candidate(PreVoteIgnoresLog)


def vote_after_log_grew(node_factory: NodeFactory | None) -> World:
    """Pre-vote on, check-quorum off: node 2, cut off from leader 0 only, passes pre-vote at
    node 1 while their logs are equal; its vote request is delayed until node 1 has helped
    commit one more entry. The real vote must check the log again."""
    w = make_world(3, node_factory=node_factory, check_quorum=False)
    elect(w, 0)
    commit_all(w, 0, 2, "a")
    w.blocked |= {(0, 2), (2, 0)}
    held: list[Message] = []

    def hold_vote_requests(m: Message) -> bool:
        if isinstance(m, RequestVote) and not m.pre_vote and m.src == 2:
            held.append(m)
            return True
        return False

    w.drop_if = hold_vote_requests
    node(w, 2).campaign()
    w.process(w.nodes[2])
    wait_for(w, lambda: bool(held))
    w.drop_if = lambda m: isinstance(m, RequestVote) and m.src == 2
    commit_all(w, 0, 1, "b", among=(0, 1))
    w.drop_if = None
    for m in held:
        w.send(m)  # the delayed copy arrives
    w.run_ticks(ELECTION)
    w.heal()
    wait_for(w, lambda: leader_id(w) is not None)
    commit_all(w, leader_id(w) or 0, 2, "c")
    return w


def test_real_vote_checks_the_log_again() -> None:
    checked_clean(vote_after_log_grew(None))


def test_vote_granted_regardless_of_log_is_caught() -> None:
    with pytest.raises(Violation, match="leader-completeness"):
        vote_after_log_grew(VoteIgnoresLog)
