"""Partition reassignment in the cluster simulator (`--profile reassign`): whole brokers move
partition replicas one Raft membership change at a time (broker/core/reassignment.py) while
brokers crash, restart, pause and lose their links.

The cluster: four or five brokers (the three seed controllers and one or two joiners), one
topic of 3-6 partitions (RF 3, so some brokers hold no replica of a partition and every move
has somewhere to go), idempotent producers and a reader as in the other profiles. An operator
(`SimRebalancer`) sends REBALANCE requests as the CLI does, to the controller it looks up
(NOT_CONTROLLER or no answer: it looks again and retries, up to `MAX_ATTEMPTS` times): execute
(sometimes with a catch-up throttle), execute draining a random broker, execute excluding one,
cancel, and undrain the brokers it drained, every `ReassignPlan.every` units. Plans move
replicas off drained, excluded and dead brokers (the planner sees only live ones) and back
when they return, so targets change while moves run, moves are cancelled midway, and the
faults (crashes preferring the controller and the leaders of moving partitions) land
mid-move.

Checked throughout (`ReassignChecker`, on every round of every broker, besides the checks of
every profile: Raft safety per group over every broker that ever held a replica, with a
replica dropped and opened again tracked as a new one, the durability audit, the fetch rule):
- `reassign-voters`: no configuration any broker holds for a partition group (a leader's
  included) has more voters than len(desired) + 1 (desired: the target, or the replicas, in
  that broker's metadata), nor more than one learner; a leader's has at least len(desired);
- `reassign-single-change`: consecutive configurations of a group's committed history differ
  by one voter at most and by one learner at most, and any majority of one meets any majority
  of the next (`quorums_meet`);
- `reassign-promote-lagging`: a leader promotes a learner only when the learner's log (on its
  broker, in memory or on disk) ends at most PROMOTE_MAX_LAG entries behind the leader's
  commit index.
At the end (every broker up, the network whole, the operator idle): every reassignment
completes within LIVENESS_TICKS (`reassign-stuck` names what is left: a target, a
configuration that is not the replicas at their registered incarnations, a learner, a replica
still hosted by a broker outside the replicas); then every partition accepts one more record
(`reassign-quorum`: a partition left without a quorum or a leader does not); the reader reads
everything back (every acknowledged record at its offset, no duplicates: the History); and
`final_layout` checks the layout again and that DESCRIBE_REASSIGNMENTS, asked of the
controller, lists nothing.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

from broker.core.host import HostedGroup
from broker.core.ids import Member, member_of
from broker.core.metadata import METADATA_GROUP, MetadataMachine
from broker.core.node import BrokerNode, Round
from broker.core.raft import ConfState, EntryKind
from broker.core.reassignment import PROMOTE_MAX_LAG
from broker.core.requests import Reply
from broker.wire.errors import ErrorCode
from broker.wire.rebalance_messages import (
    DescribeReassignmentsRequest,
    DescribeReassignmentsResponse,
    RebalanceRequest,
    RebalanceResponse,
)
from tests.sim.checker import Violation
from tests.sim.cluster_checker import ClusterChecker
from tests.sim.cluster_clients import SimClient
from tests.sim.cluster_scenario import (
    BOOT_TICKS,
    LIVENESS_TICKS,
    TOPIC,
    ClusterDriver,
    ClusterScenario,
)
from tests.sim.cluster_world import ClusterWorld

MAX_ATTEMPTS = 8
"""Sends of one operator request before it gives up (NOT_CONTROLLER, no answer, ...)."""
KINDS = ("execute", "drain", "exclude", "cancel", "undrain")
Members = frozenset[tuple[int, int]]


def quorums_meet(a: Members, b: Members) -> bool:
    """Does every majority of voters `a` share a member with every majority of `b`? (The
    adversary fills each majority with members the other lacks first.)"""
    if not a or not b:
        return True
    common = len(a & b)
    from_a = max(0, len(a) // 2 + 1 - len(a - b))
    from_b = max(0, len(b) // 2 + 1 - len(b - a))
    return from_a + from_b > common


def _fmt(members: Iterable[tuple[int, int]]) -> str:
    return "{" + ", ".join(f"b{n}" for n, _ in sorted(members)) + "}"


def _plain(conf: ConfState) -> tuple[Members, Members]:
    return (
        frozenset((int(m[0]), int(m[1])) for m in conf.voters),  # type: ignore[index]
        frozenset((int(m[0]), int(m[1])) for m in conf.learners),  # type: ignore[index]
    )


def wanted(meta: MetadataMachine, replicas: Iterable[int]) -> Members | None:
    """Members of `replicas` at their registered incarnations (None: one is unknown)."""
    out = set()
    for r in replicas:
        b = meta.brokers.get(r)
        if b is None:
            return None
        out.add((r, b.incarnation))
    return frozenset(out)


@dataclass
class ReassignCounts:
    requests: int = 0
    """Operator requests answered NONE."""
    moves: int = 0
    """Partitions whose replica set a request changed (data moves)."""
    reorders: int = 0
    """Partitions whose replicas a request only reordered."""
    drains: int = 0
    excludes: int = 0
    cancels: int = 0
    undrains: int = 0
    refused: int = 0
    """Requests refused for good (too few eligible brokers for RF 3, ...)."""
    given_up: int = 0
    """Requests sent MAX_ATTEMPTS times without an answer that settles them."""
    conf_changes: int = 0
    """Committed configuration entries of partition groups."""
    promotions: int = 0
    removals: int = 0
    max_voters: int = 0
    hits_moving: int = 0
    """Crashes of the controller or of a leader of a moving partition while it moved."""

    def counts(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class ReassignPlan:
    """What the operator does in one seed (drawn from the seed alone)."""

    every: tuple[int, int]
    """Units between two requests (drawn in this range)."""
    kinds: tuple[str, ...]
    """Drawn from with equal chances (a kind listed twice weighs double)."""
    throttles: tuple[int | None, ...]
    """The catch-up throttle a plain execute sets (bytes/s; None: unchanged)."""

    @classmethod
    def draw(cls, seed: int) -> ReassignPlan:
        r = random.Random(seed * 1_000_033 + 24)
        return cls(
            every=r.choice([(40, 120), (80, 250), (150, 400)]),
            kinds=r.choice(
                [
                    KINDS,
                    ("execute", "drain", "drain", "exclude", "cancel", "undrain"),
                    ("execute", "exclude", "exclude", "cancel", "cancel", "undrain"),
                ]
            ),
            throttles=r.choice([(None,), (None, None, 0, 20_000, 100_000)]),
        )

    def describe(self) -> str:
        return " ".join(f"{k}={v}" for k, v in asdict(self).items())


class SimRebalancer(SimClient):
    """The operator: one REBALANCE (or DESCRIBE_REASSIGNMENTS) request at a time, to the
    controller, retried on NOT_CONTROLLER and connection errors."""

    def __init__(self, world: ClusterWorld, timeout_units: int, counts: ReassignCounts) -> None:
        super().__init__(world, "rebalancer", timeout_units)
        self.counts = counts
        self.pending: RebalanceRequest | DescribeReassignmentsRequest | None = None
        self.busy = False
        self.attempts = 0
        self.retry_at = 0
        self.draining: set[int] = set()
        """Brokers this operator drained (and has not undrained since)."""
        self.described: DescribeReassignmentsResponse | None = None

    def idle(self) -> bool:
        return self.pending is None

    def submit(self, req: RebalanceRequest | DescribeReassignmentsRequest) -> None:
        assert self.pending is None
        self.pending = req
        self.attempts = 0
        self.retry_at = self.world.now
        self.step()

    def step(self) -> None:
        if self.pending is None or self.busy or self.world.now < self.retry_at:
            return
        self.busy = True
        self.attempts += 1
        self.request_controller(self.pending, self._answered)

    def _answered(self, reply: Reply) -> None:
        self.busy = False
        req, w, counts = self.pending, self.world, self.counts
        assert req is not None
        body = reply.body
        if reply.error == ErrorCode.NONE and isinstance(body, DescribeReassignmentsResponse):
            self.described = body
            self.pending = None
            return
        if reply.error == ErrorCode.NONE and isinstance(req, RebalanceRequest):
            self.pending = None
            counts.requests += 1
            moved = reordered = 0
            if isinstance(body, RebalanceResponse):
                for m in body.moves:
                    if set(m.old) == set(m.new):
                        reordered += 1
                    else:
                        moved += 1
            counts.moves += moved
            counts.reorders += reordered
            if req.cancel:
                counts.cancels += 1
            counts.drains += bool(req.drain)
            counts.excludes += bool(req.exclude)
            counts.undrains += bool(req.undrain)
            self.draining = (self.draining | set(req.drain)) - set(req.undrain)
            w.log(f"operator: {_describe(req)} applied: {moved} moves, {reordered} reorders")
            return
        if reply.error in (ErrorCode.INVALID_REPLICATION_FACTOR, ErrorCode.INVALID_REQUEST):
            self.pending = None
            counts.refused += 1
            w.log(f"operator: {_describe(req)} refused: {reply.error.name} {reply.message}")
            return
        if self.attempts >= MAX_ATTEMPTS:
            self.pending = None
            counts.given_up += 1
            w.log(f"operator: {_describe(req)} given up: {reply.error.name} {reply.message}")
            return
        self.retry_at = w.now + self.rng.randint(5, 40)


def _describe(req: RebalanceRequest | DescribeReassignmentsRequest) -> str:
    if not isinstance(req, RebalanceRequest):
        return "describe"
    if req.cancel:
        return "cancel"
    parts = ["rebalance"]
    for name in ("drain", "undrain", "exclude"):
        ids = getattr(req, name)
        if ids:
            parts.append(f"{name}={list(ids)}")
    if req.throttle_bytes_per_s is not None:
        parts.append(f"throttle={req.throttle_bytes_per_s}")
    return " ".join(parts)


@dataclass
class ReassignChecker(ClusterChecker):
    """The membership checkers of the `reassign` profile (see the module doc), on top of
    every cluster checker."""

    world: ClusterWorld | None = None
    counts: ReassignCounts = field(default_factory=ReassignCounts)
    initial: dict[int, tuple[Members, Members]] = field(default_factory=dict)
    """Partition group -> its first configuration (placement's replicas)."""
    last_conf: dict[int, tuple[Members, Members, int]] = field(default_factory=dict)
    """Partition group -> the last configuration of its committed history (and its index)."""
    scanned: dict[int, int] = field(default_factory=dict)
    """Partition group -> how far its committed history was scanned."""

    def on_round_start(self, bid: int, life: int, node: BrokerNode, rnd: Round) -> None:
        super().on_round_start(bid, life, node, rnd)
        for gid, rd in rnd.readies:
            g = node.groups.get(gid)
            if gid == METADATA_GROUP or g is None or not g.raft.is_leader or not rd.entries:
                continue
            for e in rd.entries:
                if e.kind == EntryKind.CONF and e.conf is not None and e.term == g.raft.term:
                    self._check_change(bid, gid, g, e.index, e.conf)

    def _check_change(
        self, bid: int, gid: int, g: HostedGroup, index: int, conf: ConfState
    ) -> None:
        """Leader `bid` appended configuration `conf` at `index`: the configuration before
        it is committed (one change in flight), and a learner it promotes holds the log to
        within PROMOTE_MAX_LAG of the leader's commit index."""
        raft = g.raft
        commit = raft.commit_index
        prior_index, prior = 0, raft.conf
        for i, c in reversed(raft._confs):  # the leader's configurations, latest last
            if i < index:
                prior_index, prior = i, c
                break
        if prior_index > commit:
            v, lrn = _plain(conf)
            raise Violation(
                "reassign-single-change",
                f"b{bid} (leader, term {raft.term}) appended voters {_fmt(v)} learners "
                f"{_fmt(lrn)} to group {gid} at index {index} while the configuration at "
                f"{prior_index} was not committed (commit index {commit}): two changes in "
                "flight",
            )
        promoted = (conf.voters - prior.voters) & prior.learners
        for m in map(member_of, promoted):
            assert m is not None
            end = self._log_end(gid, m)
            if commit - end > PROMOTE_MAX_LAG:
                where = "holds no replica" if end < 0 else f"has a log ending at {end}"
                raise Violation(
                    "reassign-promote-lagging",
                    f"b{bid} (leader, term {raft.term}) promoted b{m.node} to a voter of "
                    f"group {gid} at index {index} with commit index {commit}; b{m.node} "
                    f"{where}, more than {PROMOTE_MAX_LAG} entries behind",
                )

    def _log_end(self, gid: int, m: Member) -> int:
        """The end of member `m`'s log of group `gid` on its broker (the longer of memory
        and disk: what it acknowledged is on disk); -1: it holds none."""
        assert self.world is not None
        b = self.world.brokers.get(m.node)
        if b is None or b.disk.incarnation != m.incarnation:
            return -1
        end = -1
        disk = b.disk.store.logs.get(gid)
        if disk is not None:
            end = disk.last_index()
        own = b.node.groups.get(gid) if b.node is not None else None
        if own is not None and own.raft.id == m:
            end = max(end, own.raft.log.last_index())
        return end

    def observe(self, bid: int, node: BrokerNode) -> None:
        super().observe(bid, node)
        for gid, g in node.groups.items():
            if gid != METADATA_GROUP and g.topic is not None:
                self._check_bounds(bid, node, gid, g)
                self._scan(gid)

    def _check_bounds(self, bid: int, node: BrokerNode, gid: int, g: HostedGroup) -> None:
        """The configuration broker `bid` holds for `gid`: at most len(desired) + 1 voters,
        at most one learner; a leader's at least len(desired) voters."""
        assert g.topic is not None
        pi = node.meta.partition(g.topic, g.partition)
        raft = g.raft
        conf = raft.conf
        if (
            gid not in self.initial
            and conf.voters
            and raft.conf_entry_index() == 0
            and raft.log.first_index() <= 1
        ):
            self.initial[gid] = _plain(conf)
        if pi is None:
            return
        n, rf = len(conf.voters), len(pi.desired)
        self.counts.max_voters = max(self.counts.max_voters, n)
        bad = None
        if n > rf + 1:
            bad = f"{n} voters, more than len(desired) + 1 = {rf + 1}"
        elif len(conf.learners) > 1:
            bad = f"{len(conf.learners)} learners (one catches up at a time)"
        elif raft.is_leader and n < rf:
            bad = f"{n} voters as its leader, fewer than len(desired) = {rf}"
        if bad is not None:
            v, lrn = _plain(conf)
            raise Violation(
                "reassign-voters",
                f"b{bid} holds for group {gid} ({g.topic}[{g.partition}], replicas "
                f"{list(pi.replicas)}, target {pi.target}) voters {_fmt(v)} learners "
                f"{_fmt(lrn)}: {bad}",
            )

    def _scan(self, gid: int) -> None:
        """Consecutive configurations of `gid`'s committed history: one voter and one
        learner changed at most, majorities that meet."""
        c = self.groups.get(gid)
        if c is None:
            return
        start = self.scanned.get(gid, 0)
        if start >= c.commit_index:
            return
        counts = self.counts
        for i in range(start + 1, c.commit_index + 1):
            idt = c.idents[i]
            if idt is None or idt[2] is None:
                continue
            conf: tuple[tuple[tuple[int, int], ...], tuple[tuple[int, int], ...]] = idt[2]  # type: ignore[assignment]
            voters: Members = frozenset(conf[0])
            learners: Members = frozenset(conf[1])
            counts.conf_changes += 1
            last = self.last_conf.get(gid)
            prev = (last[0], last[1]) if last is not None else self.initial.get(gid)
            self.last_conf[gid] = (voters, learners, i)
            if self.world is not None:
                self.world.log(f"g{gid} committed voters {_fmt(voters)} learners {_fmt(learners)}")
            if prev is None:
                continue
            pv, pl = prev
            counts.promotions += len((voters - pv) & pl)
            counts.removals += len(pv - voters)
            if len(pv ^ voters) > 1 or len(pl ^ learners) > 1 or not quorums_meet(pv, voters):
                raise Violation(
                    "reassign-single-change",
                    f"group {gid} committed at {i} voters {_fmt(voters)} learners "
                    f"{_fmt(learners)} after voters {_fmt(pv)} learners {_fmt(pl)}: a "
                    "membership change adds or removes one voter, or changes learners only"
                    + ("" if quorums_meet(pv, voters) else " (their majorities may not meet)"),
                )
        self.scanned[gid] = c.commit_index

    # -- end of run ---------------------------------------------------------------------------

    def layout_problems(self, world: ClusterWorld, topic: str) -> list[str]:
        """What keeps the layout from being final: a partition with a target, a replica
        whose configuration is not the replicas at their registered incarnations (all
        voters), a replica still hosted outside the replicas (every broker up)."""
        c = world.controller()
        cnode = world.brokers[c].node if c is not None else None
        if cnode is None:
            return ["no controller"]
        meta = cnode.meta
        t = meta.topics.get(topic)
        if t is None:
            return [f"no topic {topic}"]
        out = []
        for pi in t.partitions:
            name = f"{topic}[{pi.partition}] (group {pi.group_id})"
            if pi.target is not None:
                out.append(f"{name} still moves {list(pi.replicas)} -> {list(pi.target)}")
                continue
            want = wanted(meta, pi.replicas)
            for bid, b in sorted(world.brokers.items()):
                node = b.node
                if node is None:
                    out.append(f"b{bid} is down")
                    continue
                g = node.groups.get(pi.group_id)
                if bid not in pi.replicas:
                    if g is not None:
                        out.append(f"{name} still hosted by b{bid}, not a replica")
                    continue
                if g is None:
                    out.append(f"{name} not hosted by its replica b{bid}")
                    continue
                v, lrn = _plain(g.raft.conf)
                if v != want or lrn:
                    out.append(
                        f"{name} replicas {list(pi.replicas)}: b{bid} holds voters "
                        f"{_fmt(v)} learners {_fmt(lrn)}"
                    )
        return out

    def final_layout(
        self, world: ClusterWorld, topic: str, described: DescribeReassignmentsResponse
    ) -> None:
        """After the run: the layout is final, and the controller describes no
        reassignment."""
        problems = self.layout_problems(world, topic)
        if problems:
            raise Violation("reassign-final", "; ".join(problems[:6]))
        if described.reassignments:
            shown = ", ".join(
                f"{r.topic}[{r.partition}] {list(r.replicas)} -> {list(r.target)}"
                for r in described.reassignments
            )
            raise Violation("reassign-final", f"DESCRIBE_REASSIGNMENTS still lists {shown}")


class ReassignDriver(ClusterDriver):
    """The `reassign` profile: boot, rebalancing under faults, the heal, the moves finish,
    one more record per partition, the read-back, the checks."""

    def __init__(self, sc: ClusterScenario) -> None:
        self.plan = ReassignPlan.draw(sc.seed)
        self.checker = ReassignChecker()
        super().__init__(sc, checker=self.checker)
        self.checker.world = self.world
        self.counts = self.checker.counts
        self.rebalancer = SimRebalancer(self.world, 300, self.counts)
        self.next_request = 0
        self.final_producer = self.producers[0]

    def group_counts(self) -> dict[str, int] | None:
        return self.counts.counts()

    def run(self) -> None:
        w, sc = self.world, self.sc
        w.log(f"reassign plan: {self.plan.describe()}")
        w.at(1, self._client_loop)
        w.at(1, self._fault_loop)
        w.at(1, self._operator_loop)
        self._until(BOOT_TICKS, self._booted, "boot")
        w.log("booted: topic created")
        self.faulty = True
        self.sending = True
        w.run_until(w.now + sc.fault_ticks * 10)
        if w.stats.faults() == 0:
            self._crash(self._victim(), why="(forced: no fault yet)")
            w.run_until(w.now + 50 * 10)
        self._heal()
        self._until(BOOT_TICKS + LIVENESS_TICKS, self._settled, "producers settle, partitions lead")
        self._until_done(LIVENESS_TICKS)
        final = self._final_produce()
        self._until(LIVENESS_TICKS, self._settled, "the final records settle")
        self._check_final_acked(final)
        self._until(LIVENESS_TICKS, self._converged, "reads and replicas converge")
        self.rebalancer.submit(DescribeReassignmentsRequest())
        self._until(LIVENESS_TICKS, self.rebalancer.idle, "DESCRIBE_REASSIGNMENTS answered")
        for p in self.producers:
            for _, _, tp, offset, value in sorted(p.acked):
                w.checker.history.ack(tp, offset, value, producer=p.index)
        w.checker.final_checks(w, TOPIC)
        described = self.rebalancer.described
        assert described is not None
        self.checker.final_layout(w, TOPIC, described)

    # -- the operator -------------------------------------------------------------------------

    def _client_loop(self) -> None:
        super()._client_loop()
        self.rebalancer.step()

    def _operator_loop(self) -> None:
        """While faults run: the next request once the last one settled and its time
        came."""
        w, rng = self.world, self.rng
        w.at(w.now + 10, self._operator_loop)
        if not self.faulty or not self.admin.done or not self.rebalancer.idle():
            return
        if w.now < self.next_request:
            return
        self.next_request = w.now + rng.randint(*self.plan.every)
        self.rebalancer.submit(self._draw_request())

    def _draw_request(self) -> RebalanceRequest:
        rng, plan = self.rng, self.plan
        ids = sorted(self.world.brokers)
        draining = self.rebalancer.draining
        kind = rng.choice(plan.kinds)
        # Draining or excluding one more broker than RF 3 allows would only be refused: the
        # brokers drained are undrained in the same request instead.
        full = len(ids) - len(draining) <= 3
        if kind == "drain":
            b = rng.choice([b for b in ids if b not in draining] or ids)
            back = tuple(sorted(draining - {b})) if full else ()
            return RebalanceRequest(execute=True, drain=(b,), undrain=back)
        if kind == "exclude":
            back = tuple(sorted(draining)) if full else ()
            return RebalanceRequest(execute=True, exclude=(rng.choice(ids),), undrain=back)
        if kind == "cancel":
            return RebalanceRequest(cancel=True)
        if kind == "undrain" and draining:
            return RebalanceRequest(execute=True, undrain=tuple(sorted(draining)))
        return RebalanceRequest(execute=True, throttle_bytes_per_s=rng.choice(plan.throttles))

    # -- faults -------------------------------------------------------------------------------

    def _moving_leaders(self) -> set[int]:
        """The brokers serving a partition that moves (as the controller sees it)."""
        w = self.world
        c = w.controller()
        cnode = w.brokers[c].node if c is not None else None
        if cnode is None:
            return set()
        moving = {pi.group_id for _, pi in cnode.meta.reassignments()}
        return {bid for gid, bid in w.partition_leaders().items() if gid in moving}

    def _victim(self) -> int:
        """Half the time, while partitions move, the leader of one of them."""
        leaders = self._moving_leaders()
        if leaders and self.rng.random() < 0.5:
            return self.rng.choice(sorted(leaders))
        return super()._victim()

    def _crash(self, bid: int, why: str = "") -> None:
        """A crash (as every profile's); counted when it hits the controller or the leader
        of a moving partition while partitions move."""
        w = self.world
        up = w.brokers[bid].node is not None
        moving = self._moving_leaders()
        hit = bool(moving) and (bid in moving or bid == w.controller())
        super()._crash(bid, why)
        if hit and up and w.brokers[bid].node is None:
            self.counts.hits_moving += 1
            w.log(f"fault: b{bid} crashed while partitions moved")

    # -- the end ------------------------------------------------------------------------------

    def _until_done(self, ticks: int) -> None:
        """Every reassignment completes and every replica's configuration is final."""
        w = self.world
        deadline = w.now + ticks * 10
        while w.now < deadline:
            w.run_until(w.now + 50)
            if self.rebalancer.idle() and not self.checker.layout_problems(w, TOPIC):
                w.log("every reassignment complete")
                return
        left = self.checker.layout_problems(w, TOPIC)
        if not self.rebalancer.idle():
            left.insert(0, "the operator's request never settled")
        raise Violation(
            "reassign-stuck",
            f"not within {ticks} ticks of the heal: {'; '.join(left[:6])}; {self.report()}",
        )

    def _final_produce(self) -> dict[int, list[bytes]]:
        """One more record to every partition (the first live producer)."""
        p = self.producers[0]
        c = self.world.controller()
        assert c is not None
        node = self.world.brokers[c].node
        assert node is not None
        parts = len(node.meta.topics[TOPIC].partitions)
        self.final_producer = p
        return {k: p.send(1, partition=k) for k in range(parts)}

    def _check_final_acked(self, final: dict[int, list[bytes]]) -> None:
        acked = {(tp[1], value) for _, _, tp, _, value in self.final_producer.acked}
        for k, values in sorted(final.items()):
            missing = [v for v in values if (k, v) not in acked]
            if missing:
                raise Violation(
                    "reassign-quorum",
                    f"the record {missing[0]!r} produced to {TOPIC}[{k}] after the moves "
                    f"ended was never acknowledged; {self.report()}",
                )
