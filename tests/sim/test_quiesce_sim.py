"""Quiescence in the Raft simulator: named scenarios (idle then load; a quiesced leader
crashed, cut off, stopped; the same without the liveness signal, which then never recovers;
a leader quiescing with a follower behind, caught), and the random `quiesce` profile's seeds.

Every scenario runs the world's checkers and rule audits on every event (a Violation fails
it), with the liveness signal of `World(liveness_ticks=...)` standing in for the broker's
peer links (tests/sim/world.py).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Container

import pytest

from broker.core.raft import RaftNode, Role
from broker.core.raft.types import MemberId
from tests.sim.scenario import RandomDriver, Scenario, run_seed
from tests.sim.world import NetOptions, NodeFactory, World

ELECTION = 10
LIVENESS = 8
"""Ticks of silence before a node's view of a peer goes lost."""
FAILOVER_TICKS = LIVENESS + 6 * ELECTION


def make_world(voters: int = 3, node_factory: NodeFactory | None = None) -> World:
    return World(
        random.Random(3),
        list(range(voters)),
        net=NetOptions(latency_min=1, latency_max=2),
        raft={"election_ticks": ELECTION, "heartbeat_ticks": 2, "quiesce": True},
        disk_latency=(1, 2),
        crash_keeps_prefix=0.0,
        liveness_ticks=LIVENESS,
        node_factory=node_factory,
        audit_rules=node_factory is None,
    )


def node(w: World, nid: int) -> RaftNode:
    n = w.nodes[nid].node
    assert n is not None, f"node {nid} is down"
    return n


def wait_for(w: World, cond: Callable[[], bool], ticks: int = 20 * ELECTION) -> int:
    """Ticks until `cond` held (fails if not within `ticks`)."""
    for t in range(ticks):
        if cond():
            return t
        w.run_ticks(1)
    assert cond(), "condition not reached in time"
    return ticks


def elect(w: World, nid: int) -> None:
    node(w, nid).campaign()
    w.process(w.nodes[nid])
    wait_for(w, lambda: node(w, nid).is_leader and node(w, nid).commit_index > 0)


def commit(
    w: World, nid: int, tag: str, count: int = 3, among: Container[int] | None = None
) -> None:
    """Propose `count` entries at leader `nid`; wait until every up node (of `among`) has
    applied them."""
    indexes = [w.propose(nid, [f"{tag}{k}".encode()]) for k in range(count)]
    assert all(i is not None for i in indexes)
    last = max(i for i in indexes if i is not None)
    wait_for(
        w,
        lambda: all(
            sn.app_index >= last
            for sn in w.nodes.values()
            if sn.up and (among is None or sn.id in among)
        ),
    )


def all_quiesced(w: World, among: Container[int] | None = None) -> bool:
    return all(
        sn.node is not None and sn.node.quiesced
        for sn in w.nodes.values()
        if among is None or sn.id in among
    )


def new_leader(w: World, old: int, term: int) -> int | None:
    for sn in w.nodes.values():
        n = sn.node
        if sn.id != old and n is not None and n.is_leader and n.term > term:
            return sn.id
    return None


def quiesced_world(voters: int = 3, node_factory: NodeFactory | None = None) -> World:
    w = make_world(voters, node_factory)
    elect(w, 0)
    commit(w, 0, "a")
    wait_for(w, lambda: all_quiesced(w))
    return w


def test_an_idle_group_quiesces_and_load_wakes_it() -> None:
    w = quiesced_world()
    delivered = w.stats.delivered
    w.run_ticks(20 * ELECTION)
    assert w.stats.delivered == delivered, "a quiesced group sends nothing"
    assert w.stats.quiesces == 3 and node(w, 0).is_leader
    commit(w, 0, "b", 5)
    assert not all_quiesced(w)
    wait_for(w, lambda: all_quiesced(w))
    assert w.stats.quiesces == 6
    assert {node(w, i).commit_index for i in range(3)} == {node(w, 0).log.last_index()}
    assert w.checker.commit_index == node(w, 0).commit_index and w.audit.checks > 0


@pytest.mark.parametrize("fault", ["crash", "cut off", "stop"])
def test_a_quiesced_leader_lost_is_replaced_through_the_liveness_signal(fault: str) -> None:
    w = quiesced_world()
    term = node(w, 0).term
    if fault == "crash":
        w.crash(0)
    elif fault == "cut off":
        w.isolate(0)
    else:
        w.pause(0, 30 * ELECTION * w.tick_units)
    took = wait_for(w, lambda: new_leader(w, 0, term) is not None, FAILOVER_TICKS)
    assert took >= LIVENESS, "the followers heard of the loss only through the signal"
    lead = new_leader(w, 0, term)
    assert lead is not None
    commit(w, lead, "b", among={1, 2})
    wait_for(w, lambda: all_quiesced(w, {1, 2}))
    # The old leader returns: it follows the new term and catches up.
    if fault == "crash":
        w.restart(0)
    elif fault == "cut off":
        w.heal()
    else:
        w.nodes[0].paused_until = 0
        w.on_resume(w.nodes[0])
    wait_for(w, lambda: node(w, 0).role == Role.FOLLOWER and node(w, 0).term > term)
    wait_for(w, lambda: w.nodes[0].app_index == node(w, lead).commit_index)
    wait_for(w, lambda: all_quiesced(w))
    assert w.checker.commit_index == node(w, lead).commit_index


def test_without_the_liveness_signal_quiesced_followers_never_elect(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The liveness signal is what recovers a group whose quiesced leader died: with it
    planted away (views go lost, nobody is told), the followers sleep on."""
    monkeypatch.setattr(World, "_lose", lambda self, sn, v, peer: setattr(v, "linked", False))
    w = quiesced_world()
    w.crash(0)
    w.run_ticks(50 * ELECTION)
    assert new_leader(w, 0, 1) is None
    assert all_quiesced(w, {1, 2})


class QuiesceWithLaggard(RaftNode):
    """Planted fault: a leader quiesces whatever its followers hold."""

    def _idle(self, lost: Container[MemberId]) -> bool:
        log = self.log
        return log.committed == log.last_index() == log.applied and not self._applying_bytes


def test_a_leader_quiescing_with_a_follower_behind_is_caught() -> None:
    """The simulator's convergence check catches a group quiesced with a follower that lacks
    committed entries (nothing would ever bring it up to date)."""
    w = make_world(3, node_factory=QuiesceWithLaggard)
    elect(w, 0)
    w.blocked.add((0, 2))
    for k in range(3):
        w.propose(0, [b"x%d" % k])
    w.run_ticks(5)
    w.blocked.clear()
    w.run_ticks(20 * ELECTION)
    assert node(w, 0).quiesced
    assert node(w, 2).log.last_index() < node(w, 0).commit_index  # never caught up
    # The random scenarios' end check (every member applied the leader's commit index).
    drv = RandomDriver.__new__(RandomDriver)
    drv.__dict__.update(w.__dict__)
    assert not drv._converged()


QUIESCE_SEEDS = [s for s in range(400) if Scenario.draw(s).profile == "quiesce"][:40]


def test_the_quiesce_profile_seeds_hold_and_fail_over() -> None:
    results = [run_seed(s) for s in QUIESCE_SEEDS]
    failed = [(r.seed, r.violation) for r in results if r.violation is not None]
    assert failed == []
    assert len(results) == 40
    assert sum(r.stats.quiesces for r in results) > 40 * 10
    assert sum(r.stats.quiesced_hits for r in results) >= 20
    # Failovers of wholly quiesced groups happened, each seen within its bound.
    assert sum(r.stats.failovers for r in results) >= 5


def test_a_quiesce_seed_fails_without_the_signal(monkeypatch: pytest.MonkeyPatch) -> None:
    """The profile's failover check is what needs the liveness signal."""
    monkeypatch.setattr(World, "_lose", lambda self, sn, v, peer: setattr(v, "linked", False))
    monkeypatch.setattr(World, "_peer_back", lambda self, sn, peer: None)
    for seed in QUIESCE_SEEDS:
        res = run_seed(seed)
        if res.violation is not None:
            assert res.violation.kind == "liveness"
            assert "quiesced leader" in res.violation.detail
            return
    pytest.fail("no seed noticed the missing liveness signal")
