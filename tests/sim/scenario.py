"""One seed -> one scenario: a Raft group under drawn faults, then a liveness phase.

Safety phase: clients propose (batched, retried), read with ReadIndex, an operator keeps
changing the membership from the current leader's view, nodes snapshot and compact, leaders
transfer leadership; faults crash (losing unsynced writes), restart, pause, partition
(symmetric and asymmetric) and disturb the network (loss, duplication, reordering). Checkers
run after every event.

Liveness phase: heal everything (restart, resume, reconnect, a clean network, no snapshot
size limits; without pre-vote and check-quorum, stop the servers removed without knowing
it); within LIVENESS_BOUND_ELECTIONS election timeouts of healing a leader must emerge and
every pending proposal commit; within CONVERGE_BOUND_ELECTIONS more every read must complete
and every member converge on the same applied state. Either bound missed is a "liveness"
violation.

Profiles (drawn per seed): mixed; churn (short-lived leaders); membership (changes racing
leader changes); snapshot (compaction racing followers that fall behind); quiesce (idle
groups quiesce: load and idle phases, the world's liveness signal standing in for heartbeats,
and faults aimed at a quiesced leader: crashed, stopped, cut off). When a quiesced leader
crashes or is cut off from everyone while the rest of the group is healthy, a new leader must
be elected within FAILOVER_BOUND_ELECTIONS election timeouts of the liveness signal's window
(checked in the safety phase: a "liveness" violation otherwise), so that liveness rests on
the signal, not on healing.
"""

from __future__ import annotations

import random
import traceback
from dataclasses import asdict, dataclass

from broker.core.raft import (
    ConfChange,
    ConfChangeKind,
    ConfState,
    DropReason,
    EntryKind,
    Ready,
    Role,
)
from tests.sim.checker import Violation
from tests.sim.world import NetOptions, NodeFactory, SimNode, Stats, World, is_grant

MIN_COMMITS = 20
CHURN_SHARE = 0.35
MEMBERSHIP_SHARE = 0.2
SNAPSHOT_SHARE = 0.15
QUIESCE_SHARE = 0.15
"""The shares of seeds drawn with the leader-churn, membership-churn, snapshot-heavy and
quiesce fault profiles (the rest: mixed; the quiesce share was mixed's before it existed)."""
PROFILES = ("mixed", "churn", "membership", "snapshot", "quiesce")
LIVENESS_BOUND_ELECTIONS = 48
"""Recovery: within this many election timeouts of healing, a leader must lead and every
proposal pending at healing must have committed (`Stats.liveness_ticks`; checked once per
election timeout, so it is a whole number of them).

Measured with `python -m tests.sim.run --seeds 50000 --jobs 2 --liveness` (the committed Raft
core, before this bound: seeds that failed no check), in election timeouts after healing:
median 6, p90 10, p99 15, p99.9 22, max 45 (seed 32508); over seeds 0-19999 alone max 38
(seeds 14191, 10718, 1170: 38, 37, 36). The same 20,000 seeds with the Raft core's liveness
fixes in progress: median 6, p99 15, p99.9 21, max 36. The bound is the largest of the 20,000
seeds `make`'s runs and the acceptance use, plus 25 % (38 * 1.25 = 47.5), which also covers
the largest of the 50,000. The tail is sporadic, not tied to one timing: slow disks (writes
up to 30 units, half an election timeout) give p99.9 32 against 18-22 for the others, and the
slowest seeds churn membership (conf_rate 0.5) or run without pre-vote and check-quorum
(repeated split votes, a removed voter disrupting). Two of the 50,000 seeds (28431, 38035)
failed even the earlier bound of 60 (a livelock, and a member never caught up): defects, not
slow recoveries, and not in the measurement."""
FAILOVER_BOUND_ELECTIONS = 13
"""The quiesce profile: after a quiesced leader's crash or isolation, with the rest of the
group up and connected (and no other fault drawn until then), a new leader within the
liveness window plus this many election timeouts. Measured over the 1,469 quiesce seeds of
0-9999 (483 such failovers), in election timeouts after the window: median 0.7, p90 1.8, p99
6.1, max 9.7 (seed 6699); the bound is that max plus 25 %, rounded up. The tail is frame loss
(up to 15 % each way: a pre-vote or vote lost, the next try after a randomized timeout)."""
CONVERGE_BOUND_ELECTIONS = 60
"""Convergence: within this many election timeouts after recovery (LIVENESS_BOUND_ELECTIONS),
every pending proposal and read must be done and every member of the leader's configuration
must have applied the leader's commit index (`Stats.converge_ticks` counts from healing).

Measured with the same runs, convergence minus recovery: median 2, p99 10, p99.9 19, max 51
(seed 18915, 46 seed 13185; 44 with the liveness fixes in progress). So 51 + 18 %, which is
no tighter than before: what takes long here is catch-up, not elections (in seed 18915 a
learner 800 entries behind, with 100-byte messages and a 30-unit disk, applies about 10
entries per election timeout), and it grows with how much the safety phase committed."""


@dataclass
class Scenario:
    seed: int
    voters: int
    learners: int
    spares: int
    election_ticks: int
    pre_vote: bool
    check_quorum: bool
    max_inflight_msgs: int
    max_msg_bytes: int
    max_uncommitted_bytes: int
    snapshot_chunk_bytes: int
    latency_max: int
    drop: float
    duplicate: float
    long_delay: float
    disk_latency_max: int
    drift: int
    safety_ticks: int
    propose_rate: float
    read_rate: float
    conf_rate: float
    transfer_rate: float
    snapshot_rate: float
    crash_rate: float
    pause_rate: float
    partition_rate: float
    crash_after_grant: float
    kill_new_leader: float
    crash_after_commit: float
    crash_after_persist: float
    isolate_after_propose: float
    stall_rate: float
    quick_restart: float
    slow_disk_latency: int = 0
    """If set, one node's writes take up to this many units (a slow disk)."""
    isolate_new_leader: float = 0.5
    """Of the new leaders hit by kill_new_leader, the share cut off rather than crashed."""
    pause_leader: float = 0.7
    """The share of pauses that stop the leader (the rest stop a random node)."""
    snapshot_keep: int = 5
    """A snapshot compacts the log up to its index minus 0..snapshot_keep entries."""
    snapshot_pad: int = 120
    """The application state's size in a snapshot: 0..snapshot_pad bytes after (index, hash)."""
    snapshot_at_leader: float = 0.0
    """The share of snapshots taken at the leader (the rest at a random node)."""
    snapshot_limit: int = 0
    snapshot_limited: tuple[int, ...] = ()
    """If snapshot_limit is set, the max_snapshot_bytes of these nodes until healing (then,
    like every other node's, the default)."""
    profile: str = "mixed"
    quiesce: bool = False
    """RaftConfig.quiesce, with the world's liveness signal (`liveness_ticks`)."""
    liveness_ticks: int = 0
    """Ticks of silence after which a node's view of a peer goes lost (World)."""
    load_ticks: tuple[int, int] = (0, 0)
    idle_ticks: tuple[int, int] = (0, 0)
    """With quiesce: the safety phase alternates load phases and idle phases (no client, no
    operator) of these many ticks (ranges)."""
    idle_fault: float = 0.0
    """Per idle phase: a fault hits the leader once its group has had time to quiesce."""

    @classmethod
    def draw(cls, seed: int) -> Scenario:
        r = random.Random(seed)
        voters = r.choice([1, 2, 3, 3, 4, 5, 5, 7])
        max_msg_bytes = r.choice([40, 100, 400, 4096, 1 << 20])
        # One entry per message needs a deep pipeline to keep up with the clients.
        inflight = r.choice([16, 256] if max_msg_bytes < 100 else [2, 4, 16, 256])
        sc = cls(
            seed=seed,
            voters=voters,
            learners=r.choice([0, 0, 1, 2]),
            spares=r.choice([0, 1, 2]),
            election_ticks=r.choice([6, 6, 10]),
            pre_vote=r.random() < 0.85,
            check_quorum=r.random() < 0.85,
            max_inflight_msgs=inflight,
            max_msg_bytes=max_msg_bytes,
            max_uncommitted_bytes=r.choice([2048, 8192, 1 << 20]),
            snapshot_chunk_bytes=r.choice([8, 32, 1 << 20]),
            latency_max=r.choice([2, 5, 10, 20]),
            drop=r.choice([0.0, 0.01, 0.05, 0.15]),
            duplicate=r.choice([0.0, 0.02, 0.1]),
            long_delay=r.choice([0.0, 0.01, 0.05]),
            disk_latency_max=r.choice([2, 5, 15, 30]),
            drift=r.choice([0, 1, 3]),
            safety_ticks=r.randint(150, 300),
            propose_rate=r.choice([0.3, 0.6, 1.0]),
            read_rate=r.choice([0.0, 0.1, 0.3]),
            conf_rate=r.choice([0.0, 0.02, 0.1, 0.5]),
            transfer_rate=r.choice([0.0, 0.01, 0.05]),
            snapshot_rate=r.choice([0.0, 0.02, 0.1]),
            crash_rate=r.choice([0.0, 0.005, 0.02, 0.05]),
            pause_rate=r.choice([0.005, 0.02, 0.05]),
            partition_rate=r.choice([0.0, 0.01, 0.03]),
            crash_after_grant=r.choice([0.0, 0.02, 0.1, 0.3]),
            kill_new_leader=r.choice([0.0, 0.0, 0.1, 0.3, 0.6]),
            crash_after_commit=r.choice([0.0, 0.0, 0.05, 0.2]),
            crash_after_persist=r.choice([0.0, 0.0, 0.05, 0.2]),
            isolate_after_propose=r.choice([0.0, 0.0, 0.05, 0.2]),
            stall_rate=r.choice([0.0, 0.005, 0.02]),
            quick_restart=r.choice([0.2, 0.5, 0.8]),
        )
        pick = r.random()
        if pick < CHURN_SHARE:
            sc.churn(r)
        elif pick < CHURN_SHARE + MEMBERSHIP_SHARE:
            sc.membership_churn(r)
        elif pick < CHURN_SHARE + MEMBERSHIP_SHARE + SNAPSHOT_SHARE:
            sc.snapshot_heavy(r)
        elif pick >= 1 - QUIESCE_SHARE:
            sc.quiescent(r)
        return sc

    def quiescent(self, r: random.Random) -> None:
        """Idle groups quiesce: load phases alternate with idle ones in which clients and the
        operator stop, so the group quiesces; then a fault hits the quiesced leader (a crash,
        a pause long enough to be noticed, or a cut from everyone or some), and only the
        liveness signal tells the quiesced followers. Ordinary faults go on meanwhile."""
        self.profile = "quiesce"
        self.quiesce = True
        self.voters = r.choice([2, 3, 3, 3, 5, 5])
        self.liveness_ticks = r.choice([4, 8, 12])
        self.load_ticks = (5, r.choice([15, 40]))
        self.idle_ticks = (20, r.choice([40, 80]))
        self.idle_fault = r.choice([0.3, 0.6, 0.9])
        self.safety_ticks = r.randint(300, 500)
        self.crash_rate = r.choice([0.0, 0.005, 0.01])
        self.pause_rate = r.choice([0.0, 0.005, 0.01])
        self.partition_rate = r.choice([0.0, 0.005, 0.01])
        self.conf_rate = r.choice([0.0, 0.02, 0.05])

    def snapshot_heavy(self, r: random.Random) -> None:
        """Compaction racing followers that fall behind: the application (mostly the
        leader's) snapshots every few ticks and keeps at most two entries, while followers
        are down, cut off, paused or on a slow disk; snapshots travel in many small chunks,
        so leaders change in mid-transfer; some nodes refuse snapshots over a size limit
        that some exceed; members are added after the leader's latest snapshot (caught up
        with it on the leader's vouch); leaders cut off right after a proposal leave
        divergent tails that a snapshot may end inside."""
        self.profile = "snapshot"
        self.voters = r.choice([2, 3, 3, 4, 5])
        self.learners = r.choice([0, 1])
        self.spares = r.choice([1, 2])
        self.snapshot_rate = r.choice([0.2, 0.35, 0.5])
        self.snapshot_keep = r.choice([0, 1, 2])
        self.snapshot_pad = r.choice([40, 120, 200])
        self.snapshot_at_leader = 0.7
        self.snapshot_chunk_bytes = r.choice([8, 16, 32])
        self.conf_rate = r.choice([0.0, 0.02, 0.05])
        self.crash_rate = r.choice([0.02, 0.05])
        self.quick_restart = r.choice([0.2, 0.4])
        self.partition_rate = r.choice([0.02, 0.05])
        self.pause_rate = r.choice([0.02, 0.05])
        self.pause_leader = 0.3
        self.stall_rate = r.choice([0.0, 0.02])
        self.slow_disk_latency = r.choice([0, 0, 60])
        self.isolate_after_propose = r.choice([0.05, 0.2])
        self.kill_new_leader = r.choice([0.1, 0.3])
        self.propose_rate = r.choice([0.6, 1.0])
        self.crash_after_grant = r.choice([0.0, 0.02])
        if r.random() < 0.5:
            # Some snapshots (index, hash and up to snapshot_pad bytes) exceed this.
            total = self.voters + self.learners + self.spares
            self.snapshot_limit = 16 + self.snapshot_pad // 2
            self.snapshot_limited = tuple(r.sample(range(total), r.randint(1, 2)))

    def membership_churn(self, r: random.Random) -> None:
        """Membership changes racing leader changes: the operator changes the configuration
        at every new leader, leaders die right after appending a change, and new leaders are
        cut off from part of the group at once."""
        self.churn(r)
        self.profile = "membership"
        self.voters = r.choice([2, 4, 4, 3])
        self.conf_rate = 0.5
        self.drop = r.choice([0.05, 0.15])
        self.crash_after_commit = 0.3
        self.kill_new_leader = 0.6
        self.isolate_new_leader = 0.8
        self.quick_restart = 0.3

    def churn(self, r: random.Random) -> None:
        """Leader churn: every leader is short-lived, logs diverge across terms, entries
        travel one per message. The interleavings of Figure 8 and of Ongaro's membership
        bug live here."""
        self.profile = "churn"
        # Even sizes too: single-member changes from an even-sized configuration are where
        # Ongaro's bug lives.
        self.voters = r.choice([2, 3, 4, 4, 5])
        self.learners = 0
        self.spares = r.choice([1, 2])
        self.conf_rate = r.choice([0.2, 0.5])
        self.max_msg_bytes = 40
        self.max_inflight_msgs = 256
        self.drop = self.duplicate = self.long_delay = 0.0
        self.partition_rate = 0.0
        self.pause_rate = 0.02
        self.kill_new_leader = 0.6
        self.crash_after_commit = r.choice([0.1, 0.3])
        self.crash_after_persist = r.choice([0.05, 0.2])
        self.isolate_after_propose = r.choice([0.1, 0.3])
        self.quick_restart = 0.8
        self.propose_rate = 1.0
        self.stall_rate = 0.03
        self.slow_disk_latency = r.choice([0, 100, 300])

    def describe(self) -> str:
        return " ".join(f"{k}={v}" for k, v in asdict(self).items())


class RandomDriver(World):
    """Clients, operator and faults of a drawn scenario."""

    def __init__(self, sc: Scenario, node_factory: NodeFactory | None = None) -> None:
        rng = random.Random(sc.seed * 7919 + 1)
        ids = list(range(sc.voters + sc.learners + sc.spares))
        super().__init__(
            rng,
            ids[: sc.voters],
            ids[sc.voters : sc.voters + sc.learners],
            ids[sc.voters + sc.learners :],
            net=NetOptions(
                latency_min=1,
                latency_max=sc.latency_max,
                drop=sc.drop,
                duplicate=sc.duplicate,
                long_delay=sc.long_delay,
                long_delay_max=10 * sc.election_ticks,
            ),
            raft={
                "election_ticks": sc.election_ticks,
                "heartbeat_ticks": 2,
                "pre_vote": sc.pre_vote,
                "check_quorum": sc.check_quorum,
                "max_inflight_msgs": sc.max_inflight_msgs,
                "max_msg_bytes": sc.max_msg_bytes,
                "max_uncommitted_bytes": sc.max_uncommitted_bytes,
                "max_snapshot_chunk_bytes": sc.snapshot_chunk_bytes,
                "quiesce": sc.quiesce,
            },
            raft_per_node={
                n: {"max_snapshot_bytes": sc.snapshot_limit} for n in sc.snapshot_limited
            },
            tick_units=10,
            drift=sc.drift,
            disk_latency=(1, sc.disk_latency_max),
            crash_loses_in_flight=0.5,
            node_factory=node_factory,
            liveness_ticks=sc.liveness_ticks,
        )
        self.sc = sc
        self.ids = ids
        if sc.slow_disk_latency:
            slow = self.nodes[self.rng.choice(ids)]
            slow.disk_latency = (sc.slow_disk_latency // 4, sc.slow_disk_latency)
        self.faulty = True
        self.next_op = 0
        self.pending_ops: dict[bytes, int] = {}
        self.acked: set[bytes] = set()
        self.next_read = 0
        self.pending_reads: dict[bytes, int] = {}
        self.retry_units = 4 * sc.election_ticks * self.tick_units
        self.proposing = True
        self.plan: list[ConfChange] = []
        self.on_apply = self._applied
        self.idle = False
        self.phase_ends = 0
        self.idle_fault_at = -1
        """With quiesce: the tick of this idle phase at which the leader is hit (-1: none)."""
        self.phase_tick = 0
        self.watch: tuple[int, int, int, int] | None = None
        """With quiesce: (victim, its term, when it was hit, deadline) of a failover under
        watch (faults wait until it is over)."""

    # -- clients ------------------------------------------------------------------------------

    def _applied(self, sn: SimNode, data: bytes) -> None:
        if data in self.pending_ops:
            del self.pending_ops[data]
            self.acked.add(data)
            self.stats.acked_ops += 1

    def read_served(self, ctx: bytes) -> None:
        self.pending_reads.pop(ctx, None)

    def _target(self) -> int | None:
        """Where a client sends: mostly the leader, sometimes a stale or random node."""
        rng = self.rng
        lead = self.leader()
        if lead is not None and rng.random() < 0.8:
            return lead.id
        up = [sn for sn in self.nodes.values() if sn.up]
        if not up:
            return None
        sn = rng.choice(up)
        hint = sn.node.leader if sn.node is not None else None
        return hint if isinstance(hint, int) and rng.random() < 0.7 else sn.id

    def _propose(self, new: int) -> None:
        target = self._target()
        if target is None:
            return
        now = self.now
        batch = [d for d, t in self.pending_ops.items() if now - t >= self.retry_units][:8]
        if len(self.pending_ops) < 64:
            for _ in range(new):
                self.next_op += 1
                batch.append(b"w%d" % self.next_op)
        if not batch:
            return
        for d in batch:
            self.pending_ops[d] = now
        if self.propose(target, batch) is not None:
            self._maybe_isolate(target)

    def _maybe_isolate(self, nid: int) -> None:
        """Cut a leader off (from some or all peers) right after it accepted a proposal: the
        entries stay local or reach a minority, and logs diverge across terms (the raw
        material of Figure 8 and of overwrites racing in-flight writes)."""
        p = self.sc.isolate_after_propose
        if self._injecting and p and self.rng.random() < p:
            self._cut_off(nid, everyone=self.rng.random() < 0.5)

    def _read(self) -> None:
        up = [sn.id for sn in self.nodes.values() if sn.up]
        if not up:
            return
        self._read_at(self.rng.choice(up))

    def _read_at(self, nid: int) -> None:
        self.next_read += 1
        ctx = b"r%d" % self.next_read
        self.pending_reads[ctx] = self.now
        if not self.read(nid, ctx):
            del self.pending_reads[ctx]

    # -- operator -----------------------------------------------------------------------------

    def _change_membership(self) -> None:
        lead = self.leader()
        if lead is not None:
            self._change_membership_at(lead.id)

    def _change_membership_at(self, nid: int) -> None:
        """The operator works through a plan, one step per attempt, at whichever node leads
        now. Half the plans move a replica (add one voter, then remove another), the way a
        rebalancer does; the next step is tried as soon as the previous one was accepted."""
        sn = self.nodes[nid]
        if sn.node is None or not sn.node.is_leader:
            return
        conf = sn.node.conf
        if not self.plan:
            self.plan = self._draw_plan(conf)
        if not self.plan:
            return
        step = self.plan[0]
        if step.member is None:
            # "Remove the replica we are replacing": one this leader cannot reach, if any.
            step = ConfChange(ConfChangeKind.REMOVE, self._replaced_voter(nid, conf))
        got = self.conf_change(nid, step)
        if isinstance(got, int) or got == DropReason.INVALID_CONF_CHANGE:
            self.plan.pop(0)

    def _draw_plan(self, conf: ConfState) -> list[ConfChange]:
        """Half the time replace a replica: add a new voter, then remove the one that is
        unreachable (resolved when that step runs); otherwise one random change."""
        rng = self.rng
        others = [i for i in self.ids if i not in conf.voters and i not in conf.learners]
        if others and len(conf.voters) > 1 and rng.random() < 0.5:
            return [
                ConfChange(ConfChangeKind.ADD_VOTER, rng.choice(others)),
                ConfChange(ConfChangeKind.REMOVE, None),
            ]
        change = self._draw_change(conf)
        return [change] if change is not None else []

    def _replaced_voter(self, leader: int, conf: ConfState) -> int:
        voters = [v for v in sorted(conf.voters) if v != leader]  # type: ignore[type-var]
        if not voters:
            return leader
        gone = [v for v in voters if (leader, v) in self.blocked or not self.nodes[v].up]
        return self.rng.choice(gone or voters)

    def _draw_change(self, conf: ConfState) -> ConfChange | None:
        rng = self.rng
        voters, learners = sorted(conf.voters), sorted(conf.learners)  # type: ignore[type-var]
        others = [i for i in self.ids if i not in conf.voters and i not in conf.learners]
        options: list[ConfChange] = []
        if len(voters) < 7:
            options += [ConfChange(ConfChangeKind.ADD_VOTER, i) for i in learners]
            options += [ConfChange(ConfChangeKind.ADD_VOTER, i) for i in others]
        options += [ConfChange(ConfChangeKind.ADD_LEARNER, i) for i in others]
        options += [ConfChange(ConfChangeKind.REMOVE, i) for i in learners]
        if len(voters) > 1:
            options += [ConfChange(ConfChangeKind.REMOVE, i) for i in voters]
            options += [ConfChange(ConfChangeKind.ADD_LEARNER, i) for i in voters]
        return rng.choice(options) if options else None

    # -- faults -------------------------------------------------------------------------------

    def after_send(self, sn: SimNode, rd: Ready) -> None:
        """Crash a node just after it granted a vote or acknowledged an append, or a leader
        just after its commit index advanced or it appended a configuration change: the
        moments where ordering bugs hide."""
        if not self._injecting:
            return
        sc, rng = self.sc, self.rng
        nid = sn.id
        if (
            sc.crash_after_commit
            and rd.hard_state is not None
            and sn.node is not None
            and sn.node.is_leader
            and rd.hard_state.commit > sn.last_commit_sent
            and rng.random() < sc.crash_after_commit
        ):
            self.at(self.now, lambda: self._crash(nid))
            return
        if (
            sc.crash_after_commit
            and sn.node is not None
            and sn.node.is_leader
            and any(e.kind == EntryKind.CONF for e in rd.entries)
            and rng.random() < sc.crash_after_commit
        ):
            if rng.random() < 0.5:
                self.at(self.now, lambda: self._crash(nid))
            else:
                self._cut_off(nid)
            return
        if rd.hard_state is not None:
            sn.last_commit_sent = rd.hard_state.commit
        if not sc.crash_after_grant or rng.random() >= sc.crash_after_grant:
            return
        if any(is_grant(m) for m in rd.messages) or any(is_grant(m) for m in rd.persisted_messages):
            self.at(self.now + rng.randint(0, sc.disk_latency_max), lambda: self._crash(nid))

    def after_persist(self, sn: SimNode, rd: Ready) -> None:
        """A leader crashes right after its entries reached its own disk, perhaps before
        they reached any other (its in-flight appends may die with it)."""
        p = self.sc.crash_after_persist
        if (
            self._injecting
            and p
            and rd.entries
            and sn.node is not None
            and sn.node.is_leader
            and self.rng.random() < p
        ):
            self._crash(sn.id)

    def on_leader_elected(self, sn: SimNode) -> None:
        # An operator retrying a membership change reaches a new leader at once.
        if self._injecting and self.sc.conf_rate and self.rng.random() < self.sc.conf_rate:
            nid = sn.id
            self.at(self.now, lambda: self._change_membership_at(nid))
        p = self.sc.kill_new_leader
        if self._injecting and p and self.rng.random() < p:
            nid, inc = sn.id, sn.incarnation
            if self.rng.random() < self.sc.isolate_new_leader:
                self._cut_off(nid, everyone=self.rng.random() < 0.5)
            else:
                delay = self.rng.randint(0, self.tick_units)
                self.at(self.now + delay, lambda: self._crash_incarnation(nid, inc))

    def _cut_off(self, nid: int, everyone: bool = False) -> None:
        """Cut a node off from some (or all) peers at once: what it just sent dies on the cut
        links, so its latest entries reach only part of the group."""
        rng = self.rng
        others = [i for i in self.ids if i != nid] or [nid]
        count = len(others) if everyone else rng.randint(1, len(others))
        for peer in rng.sample(others, count):
            self.blocked.add((nid, peer))
            self.blocked.add((peer, nid))
        self.stats.partitions += 1
        delay = rng.randint(1, 4 * self.sc.election_ticks) * self.tick_units
        self.at(self.now + delay, lambda: self.faulty and self.rejoin(nid))

    def _crash_incarnation(self, nid: int, incarnation: int) -> None:
        if self.nodes[nid].incarnation == incarnation:
            self._crash(nid)

    def _crash(self, nid: int) -> None:
        if not self._injecting or not self.nodes[nid].up:
            return
        self.crash(nid)
        if self.rng.random() < self.sc.quick_restart:
            delay = self.rng.randint(0, self.tick_units)  # a supervisor restarts it at once
        else:
            delay = self.rng.randint(2, 40) * self.tick_units
        self.at(self.now + delay, lambda: self.faulty and self.restart(nid))

    def on_resume(self, sn: SimNode) -> None:
        # A client request that queued while the process was stopped is handled first.
        self._read_at(sn.id)

    def _partition(self) -> None:
        rng = self.rng
        ids = self.ids
        if len(ids) < 2:
            return
        kind = rng.randrange(3)
        if kind == 0:
            self.isolate(rng.choice(ids))
        elif kind == 1:
            side = set(rng.sample(ids, rng.randint(1, len(ids) - 1)))
            for a in ids:
                for b in ids:
                    if (a in side) != (b in side):
                        self.blocked.add((a, b))
        else:
            for _ in range(rng.randint(1, 3)):
                a, b = rng.sample(ids, 2)
                self.blocked.add((a, b))
        self.stats.partitions += 1
        self.at(self.now + rng.randint(5, 60) * self.tick_units, self._heal_if_faulty)

    def _heal_if_faulty(self) -> None:
        if self.faulty:
            self.heal()

    @property
    def _injecting(self) -> bool:
        """Faults are drawn: in the faulty phase, unless a failover is under watch."""
        return self.faulty and self.watch is None

    def _phase(self) -> bool:
        """With quiesce: move through load and idle phases; True while idle (no client, no
        operator: the group quiesces), hitting the leader at the drawn tick of the phase."""
        sc, rng = self.sc, self.rng
        self.phase_tick += 1
        if self.phase_tick >= self.phase_ends:
            self.idle = not self.idle
            self.phase_tick = 0
            span = sc.idle_ticks if self.idle else sc.load_ticks
            self.phase_ends = rng.randint(*span)
            self.idle_fault_at = -1
            if self.idle and rng.random() < sc.idle_fault:
                # Once the group has had time to quiesce (a few heartbeats).
                self.idle_fault_at = rng.randint(min(12, self.phase_ends), self.phase_ends)
        if self.idle and self.phase_tick == self.idle_fault_at:
            self._hit_quiesced_leader()
        return self.idle

    def _hit_quiesced_leader(self) -> None:
        lead = self.leader()
        if lead is None or lead.node is None or self.watch is not None:
            return
        if lead.node.quiesced:
            self.stats.quiesced_hits += 1
        rng, et = self.rng, self.sc.election_ticks
        kind = rng.randrange(4)
        if kind < 2 and self._watchable(lead):
            # Crashed or cut off from everyone for good (until the failover is seen): only
            # the liveness signal can tell its quiesced followers.
            node = lead.node
            bound = (self.sc.liveness_ticks + FAILOVER_BOUND_ELECTIONS * et) * self.tick_units
            self.watch = (lead.id, node.term, self.now, self.now + bound)
            if kind == 0:
                self.crash(lead.id)
            else:
                self.isolate(lead.id)
                self.stats.partitions += 1
            return
        if kind == 0:
            self._crash(lead.id)
        elif kind == 1:
            self.pause(lead.id, rng.randint(et, 5 * et) * self.tick_units)
        elif kind == 2:
            self._cut_off(lead.id, everyone=True)
        else:
            self._cut_off(lead.id)

    def _watchable(self, lead: SimNode) -> bool:
        """Is the whole group quiesced, and can the rest of it elect without `lead`: three
        voters or more, every other voter up, running and connected, no disk stalled? Then
        only the liveness signal can tell the others."""
        assert lead.node is not None
        voters = lead.node.conf.voters
        if len(voters) < 3 or self.blocked or not lead.node.quiesced:
            return False
        for v in voters:
            sn = self.nodes[v]  # type: ignore[index]
            if sn is lead:
                continue
            n = sn.node
            if (
                n is None
                or not n.quiesced
                or sn.paused_until > self.now
                or sn.disk_stalled_until > self.now
            ):
                return False
        return True

    def _check_failover(self) -> None:
        """A quiesced leader was crashed or cut off: a new leader must come, in time."""
        assert self.watch is not None
        victim, term, hit_at, deadline = self.watch
        for sn in self.nodes.values():
            n = sn.node
            if sn.id != victim and n is not None and n.is_leader and n.term > term:
                self.stats.failovers += 1
                self.stats.failover_ticks += (self.now - hit_at) // self.tick_units
                self.watch = None
                if self.nodes[victim].up:
                    self.rejoin(victim)
                else:
                    self.restart(victim)
                return
        if self.now >= deadline:
            raise Violation(
                "liveness",
                f"quiesced leader {victim} (term {term}) lost at t={hit_at}: no new leader "
                f"by t={self.now}; {self._convergence_report()}",
            )

    def _safety_tick(self) -> None:
        sc, rng = self.sc, self.rng
        if self.watch is not None:
            self._check_failover()
        if sc.quiesce and self._phase():
            self._idle_faults()
            return
        if rng.random() < sc.propose_rate:
            self._propose(rng.randint(1, 4))
        if sc.read_rate and rng.random() < sc.read_rate:
            self._read()
        if sc.conf_rate and rng.random() < sc.conf_rate:
            self._change_membership()
        if sc.transfer_rate and rng.random() < sc.transfer_rate:
            lead = self.leader()
            if lead is not None and lead.node is not None:
                voters = [v for v in lead.node.conf.voters if v != lead.id]
                if voters:
                    self.transfer(lead.id, rng.choice(voters))  # type: ignore[arg-type]
        if sc.snapshot_rate and rng.random() < sc.snapshot_rate:
            self._snapshot(sc.snapshot_pad)
        self._idle_faults()

    def _idle_faults(self) -> None:
        """The faults that need no client: crashes, pauses, partitions, disk stalls."""
        sc, rng = self.sc, self.rng
        if self.watch is not None:
            return
        up = [i for i in self.ids if self.nodes[i].up]
        if sc.crash_rate and up and rng.random() < sc.crash_rate:
            self._crash(rng.choice(up))
        if sc.pause_rate and up and rng.random() < sc.pause_rate:
            # Mostly the leader: a stopped leader that wakes up still believes it leads.
            lead = self.leader()
            stop_leader = lead is not None and rng.random() < sc.pause_leader
            victim = lead.id if lead is not None and stop_leader else rng.choice(up)
            et = sc.election_ticks
            ticks = rng.randint(3, 40) if rng.random() < 0.5 else rng.randint(2 * et, 5 * et)
            self.pause(victim, ticks * self.tick_units)
        if sc.partition_rate and not self.blocked and rng.random() < sc.partition_rate:
            self._partition()
        if sc.stall_rate and up and rng.random() < sc.stall_rate:
            self.stall_disk(rng.choice(up), rng.randint(2, 30) * self.tick_units)

    def _snapshot(self, pad: int) -> None:
        """The application snapshots at one node (the leader, snapshot_at_leader of the
        time) with up to `pad` bytes of state, and compacts all but 0..snapshot_keep."""
        sc, rng = self.sc, self.rng
        if not sc.snapshot_at_leader:
            self.snapshot(
                rng.choice(self.ids), rng.randint(0, sc.snapshot_keep), rng.randint(0, pad)
            )
            return
        lead = self.leader()
        if lead is not None and rng.random() < sc.snapshot_at_leader:
            nid = lead.id
        else:
            nid = rng.choice(self.ids)
        self.snapshot(nid, rng.randint(0, sc.snapshot_keep), rng.randint(0, pad))

    def _liveness_tick(self) -> None:
        rng = self.rng
        sc = self.sc
        if sc.profile == "snapshot" and rng.random() < sc.snapshot_rate / 2:
            # The application goes on snapshotting while the nodes that were down catch up.
            self._snapshot(sc.snapshot_pad)
        stale = [c for c, t in self.pending_reads.items() if self.now - t >= self.retry_units]
        for ctx in stale:
            # The client times out and asks the leader again; the read still must complete.
            del self.pending_reads[ctx]
            lead = self.leader()
            if lead is not None:
                self._read_at(lead.id)
        if self.proposing and rng.random() < 0.5:
            self._propose(1)
        elif not self.proposing:
            self._propose(0)
        if self.proposing and self.sc.read_rate and rng.random() < self.sc.read_rate:
            self._read()

    # -- the run ------------------------------------------------------------------------------

    def run(self) -> None:
        sc = self.sc
        third = sc.safety_ticks // 3
        self.run_ticks(third, self._safety_tick)
        if self.stats.faults() == 0:
            self._forced_fault()
        self.run_ticks(sc.safety_ticks - third, self._safety_tick)
        self._liveness()

    def _forced_fault(self) -> None:
        if len(self.ids) == 1 or self.rng.random() < 0.5:
            self._crash(self.rng.choice(self.ids))
        else:
            self._partition()

    def _liveness(self) -> None:
        sc = self.sc
        self.faulty = False
        self.heal()
        self.net.drop = self.net.duplicate = self.net.long_delay = 0.0
        for nid, sn in self.nodes.items():
            if not sn.up:
                self.restart(nid)
            sn.paused_until = sn.disk_stalled_until = 0
            sn.disk_latency = None  # a disk slower than the election timeout is a fault too
        for nid in sc.snapshot_limited:
            # A limit below the state's size is a fault too: a voter that refuses every
            # snapshot its leader has may leave no quorum. Lifted (the default, now).
            self.reset_node_options(nid)
        if not (sc.pre_vote or sc.check_quorum):
            self._decommission_removed()
        self.proposing = True
        self.pending_reads.clear()  # reads of the faulty phase may be lost; clients gave up
        start_ops = set(self.pending_ops)
        # Checked once per election timeout, so a step's time is a whole number of them.
        et = sc.election_ticks
        healed_at = self.now
        bound = LIVENESS_BOUND_ELECTIONS * et
        while True:
            self.run_ticks(et, self._liveness_tick)
            elapsed = (self.now - healed_at) // self.tick_units
            lead = self.leader()
            if lead is not None and not (start_ops & self.pending_ops.keys()):
                self.stats.liveness_ticks = elapsed
                break
            if elapsed >= bound:
                raise Violation(
                    "liveness",
                    f"after {elapsed} healed ticks ({LIVENESS_BOUND_ELECTIONS} election "
                    f"timeouts): leader={lead.id if lead else None}, "
                    f"{len(start_ops & self.pending_ops.keys())} proposals still pending",
                )
        # Stop new work; every pending op and read must finish and all members converge.
        self.proposing = False
        recovered_at = self.now
        bound = CONVERGE_BOUND_ELECTIONS * et
        while True:
            self.run_ticks(et, self._liveness_tick)
            if not self.pending_ops and not self.pending_reads and self._converged():
                self.stats.converge_ticks = (self.now - healed_at) // self.tick_units
                break
            elapsed = (self.now - recovered_at) // self.tick_units
            if elapsed >= bound:
                raise Violation(
                    "liveness",
                    f"not converged {elapsed} ticks after recovery ({CONVERGE_BOUND_ELECTIONS} "
                    f"election timeouts): {len(self.pending_ops)} ops, "
                    f"{len(self.pending_reads)} reads pending; {self._convergence_report()}",
                )
        if self.checker.commit_index < MIN_COMMITS:
            raise Violation(
                "too-little-work", f"only {self.checker.commit_index} entries committed"
            )

    def _decommission_removed(self) -> None:
        """The operator stops the servers removed from the group that do not know it: not
        in the committed configuration nor in any other node's latest one, yet members of
        their own. Without pre-vote or check-quorum such a server campaigns for ever and each
        of its ever higher terms deposes the leader (dissertation §4.2.3), so a group run
        that way relies on removed servers being stopped (seed 6036: a voter removed while
        it was down deposed every leader of the liveness phase)."""
        committed = self._committed_conf()
        for nid, sn in self.nodes.items():
            n = sn.node
            if n is None or committed.is_member(nid) or not n.conf.is_member(nid):
                continue
            others = (o.node for o in self.nodes.values() if o.node is not None and o.id != nid)
            if not any(o.conf.is_member(nid) for o in others):
                self.crash(nid)

    def _committed_conf(self) -> ConfState:
        """The configuration of the committed history (the initial one if none committed)."""
        idents = self.checker.idents
        for i in range(self.checker.commit_index, 0, -1):
            ident = idents[i]
            if ident is not None and ident[2] is not None:
                voters, learners = ident[2]  # type: ignore[misc]
                return ConfState(frozenset(voters), frozenset(learners))
        sc = self.sc
        return ConfState(
            frozenset(self.ids[: sc.voters]),
            frozenset(self.ids[sc.voters : sc.voters + sc.learners]),
        )

    def _converged(self) -> bool:
        lead = self.leader()
        if lead is None or lead.node is None:
            return False
        commit = lead.node.log.committed
        for m in lead.node.conf.members():
            sn = self.nodes[m]  # type: ignore[index]
            if sn.node is None or sn.app_index != commit or sn.node.log.committed != commit:
                return False
        return True

    def _convergence_report(self) -> str:
        parts = []
        for sn in self.nodes.values():
            n = sn.node
            if n is None:
                parts.append(f"{sn.id}:down")
            else:
                parts.append(
                    f"{sn.id}:{Role(n.role).name}/t{n.term}/c{n.log.committed}/a{sn.app_index}"
                )
        return " ".join(parts)


@dataclass
class SeedResult:
    seed: int
    stats: Stats
    commits: int
    violation: Violation | None
    scenario: Scenario


def run_seed(seed: int, node_factory: NodeFactory | None = None) -> SeedResult:
    sc = Scenario.draw(seed)
    drv = RandomDriver(sc, node_factory)
    violation: Violation | None = None
    try:
        drv.run()
    except Violation as v:
        violation = v
    except Exception as e:  # a bug of the simulator itself: still a failing, reproducible seed
        tb = traceback.extract_tb(e.__traceback__)[-1]
        violation = Violation("sim-error", f"{e!r} at {tb.filename}:{tb.lineno}")
    return SeedResult(seed, drv.stats, drv.checker.commit_index, violation, sc)
