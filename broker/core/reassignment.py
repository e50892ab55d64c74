"""Partition reassignment: a partition's replicas move one Raft membership change at a time.

The metadata log says where each partition should be (metadata.py: `replicas`, and `target`
while a reassignment runs); the partition's Raft leader carries it out, so a reassignment
survives any controller failover (the next controller and the next leader read the same log)
and a leader failover (the next leader takes the next step from the configuration it holds).

The leader's step (`step_membership`, at most one configuration change uncommitted), toward
the desired members (the desired brokers at their registered incarnations):
1. a learner not desired is removed;
2. a desired learner at most `PROMOTE_MAX_LAG` committed entries behind, holding the
   configuration entry that added it, is promoted;
3. while the group has more voters than desired members, a voter not desired is removed;
   when the only one left to go is the leader itself, it first transfers leadership to a
   desired voter that is caught up and reachable (the target's first replica if it is one);
4. otherwise a missing desired member is added as a learner, one catching up at a time (the
   catch-up throttle paces it: broker/core/raft/progress.py `CatchUpBudget`).
Invariants: a new replica votes only once it holds (nearly) every committed entry; a group
never has more voters than desired members + 1, so moving a replica of an RF-3 group never
needs more than 3 of its 4 voters; every change is a single-member change (Raft §4.1).

Completion. When the leader's configuration is exactly the desired voters, and committed, it
asks the controller (the peer request `reassign_done`, or its own proposal when it is the
controller) to record it: the metadata command sets `replicas` to `target` only if the
target is still the one reported. The brokers no longer named drop their replica
(`PartitionService.sync`) once they are not members of their own configuration, or the
reassignment is over.
Cancellation sets every target back to its replicas: the same steps undo what was done.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from broker.core.context import NodeContext
from broker.core.host import GroupHost, HostedGroup
from broker.core.ids import Member, ProposalKey, Purpose, member_of
from broker.core.metadata import METADATA_GROUP, PartitionInfo
from broker.core.metadata_moves import cmd_reassign, cmd_reassign_cancel, cmd_reassign_done
from broker.core.peer_requests import Answer, Inbound, PeerRequests, PeerResult
from broker.core.raft import ConfChange, ConfChangeKind
from broker.core.rebalance_plan import Move, RebalancePlan, plan_rebalance
from broker.core.views import ClusterView
from broker.wire.errors import ErrorCode

REASSIGN_DONE = "reassign_done"
"""Peer request kind: a partition leader tells the controller its configuration reached the
target {group, replicas}."""
PROMOTE_MAX_LAG = 16
"""How many committed entries a learner may lack and still be promoted: under continuous
production a replica holding *every* committed entry at the instant of a check is rare, and
a voter a few entries behind costs no safety (only the quorum's speed, briefly)."""


def desired_members(ctx: NodeContext, pi: PartitionInfo) -> list[Member] | None:
    """The members `pi`'s group should have (its desired brokers at their registered
    incarnations, in order), or None while a broker is not registered yet."""
    out = []
    for r in pi.desired:
        b = ctx.meta.brokers.get(r)
        if b is None:
            return None
        out.append(Member(r, b.incarnation))
    return out


def step_membership(
    host: GroupHost, g: HostedGroup, desired: Sequence[Member], election_ticks: int
) -> bool:
    """Leader of `g`: take the next step toward `desired` (module doc). True when the
    configuration is exactly `desired`, all voters, and committed."""
    raft = g.raft
    conf = raft.conf
    want = frozenset(desired)
    if raft.conf_entry_index() > raft.commit_index:
        return False  # one change at a time; and reached only once committed
    if conf.voters == want and not conf.learners:
        return True
    stray = sorted(m for m in map(member_of, conf.learners) if m is not None and m not in want)
    if stray:
        host.propose_conf(g, ConfChange(ConfChangeKind.REMOVE, stray[0]))
        return False
    for m in desired:
        pr = raft.progress.get(m)
        near = (
            pr is not None
            and pr.match >= max(1, raft.conf_entry_index())  # it holds its own addition
            and raft.commit_index - pr.match <= PROMOTE_MAX_LAG
        )
        if m in conf.learners and near:
            host.propose_conf(g, ConfChange(ConfChangeKind.ADD_VOTER, m))
            return False
    leaving = sorted(m for m in map(member_of, conf.voters) if m is not None and m not in want)
    if leaving and len(conf.voters) > len(want):
        others = [m for m in leaving if m != raft.id]
        if others:
            host.propose_conf(g, ConfChange(ConfChangeKind.REMOVE, others[0]))
        else:
            heir = _heir(host, g, desired, election_ticks)
            if heir is not None:
                host.transfer_leader(g, heir)
        return False
    if any(m in conf.learners for m in desired):
        return False  # one catching up at a time
    missing = [m for m in desired if not conf.is_member(m)]
    if missing:
        host.propose_conf(g, ConfChange(ConfChangeKind.ADD_LEARNER, missing[0]))
    return False


def _heir(
    host: GroupHost, g: HostedGroup, desired: Sequence[Member], election_ticks: int
) -> Member | None:
    """The desired voter to hand leadership to: heard from within an election timeout, on a
    reachable broker, the least behind (the first desired on a tie)."""
    raft = g.raft
    best: tuple[int, int, Member] | None = None
    for i, m in enumerate(desired):
        pr = raft.progress.get(m)
        if m not in raft.conf.voters or pr is None or m == raft.id:
            continue
        if pr.idle_ticks >= election_ticks or host.is_lost(m.node):
            continue
        key = (raft.log.last_index() - pr.match, i, m)
        if best is None or key[:2] < best[:2]:
            best = key
    return None if best is None else best[2]


@dataclass(frozen=True, slots=True)
class ReassignmentStatus:
    """A partition moving, as the controller sees it: its replicas, its target, the replicas
    its leader last reported caught up and the commit lag of its slowest replica (-1:
    unknown)."""

    topic: str
    partition: int
    replicas: tuple[int, ...]
    target: tuple[int, ...]
    caught_up: tuple[int, ...]
    lag: int


class Reassignments:
    """Both sides of reassignment on one broker: as a partition leader, the membership steps
    and the report of completion; as the controller, the rebalancing plans, their proposal,
    completions and cancellation."""

    def __init__(self, ctx: NodeContext, views: ClusterView) -> None:
        self.ctx = ctx
        self.views = views
        self._peer: PeerRequests | None = None
        self._reporting: dict[int, int] = {}
        """Partition group -> correlation id of its one `reassign_done` request in flight."""

    def attach(self, peer: PeerRequests) -> None:
        self._peer = peer
        peer.register(REASSIGN_DONE, self._serve_done)
        peer.listen(REASSIGN_DONE, self._on_done_answer)

    # -- the partition leader's side ----------------------------------------------------------

    def step(self, g: HostedGroup, pi: PartitionInfo) -> None:
        """Leader of `pi`'s group (called with every reconcile pass): the next membership
        step; once the target is reached, have the controller record it."""
        ctx = self.ctx
        desired = desired_members(ctx, pi)
        if desired is None:
            return
        reached = step_membership(ctx.host, g, desired, ctx.config.election_ticks)
        if reached and pi.target is not None:
            self._report_done(pi.group_id, pi.target)

    def _report_done(self, group: int, replicas: tuple[int, ...]) -> None:
        ctx = self.ctx
        mg = ctx.metadata_group
        if mg is not None and mg.serving():
            key = ProposalKey(Purpose.REASSIGN, group)
            ctx.propose_own(key, cmd_reassign_done(group, replicas))
            return
        controller = ctx.controller()
        if self._peer is None or controller is None or group in self._reporting:
            return
        self._reporting[group] = self._peer.request(
            controller,
            REASSIGN_DONE,
            {"group": group, "replicas": list(replicas)},
            deadline_ticks=40,
            retry_ticks=4,
        )

    def _on_done_answer(self, result: PeerResult) -> None:
        for gid, cid in list(self._reporting.items()):
            if cid == result.correlation_id:
                del self._reporting[gid]

    # -- the controller's side ----------------------------------------------------------------

    def _serve_done(self, req: Inbound) -> Answer:
        body = req.body
        if not isinstance(body, dict):
            return Answer(None, ErrorCode.INVALID_REQUEST, "expected {group, replicas}")
        gid, replicas = body.get("group"), body.get("replicas")
        if (
            type(gid) is not int
            or not isinstance(replicas, list)
            or not all(type(r) is int for r in replicas)
        ):
            return Answer(None, ErrorCode.INVALID_REQUEST, "group: int, replicas: [int]")
        ctx = self.ctx
        mg = ctx.metadata_group
        if mg is None or not mg.serving():
            return Answer(None, ErrorCode.NOT_CONTROLLER, "this broker is not the controller")
        if gid != METADATA_GROUP:
            ctx.propose_own(
                ProposalKey(Purpose.REASSIGN, gid), cmd_reassign_done(gid, tuple(replicas))
            )
        return Answer({})

    def plan(self, leave_out: frozenset[int]) -> RebalancePlan:
        """A rebalancing plan from the metadata state: every partition's desired replicas
        spread over the live brokers not in `leave_out` (those draining, those excluded).
        Raises ValueError when a replication factor exceeds the brokers left."""
        meta = self.ctx.meta
        brokers = {
            b: info.rack
            for b, info in meta.brokers.items()
            if meta.alive.get(b, False) and b not in leave_out
        }
        layout = {
            (name, pi.partition): pi.desired
            for name, t in meta.topics.items()
            for pi in t.partitions
        }
        return plan_rebalance(brokers, layout)

    def propose(
        self,
        token: int,
        slot: int,
        moves: Sequence[Move],
        *,
        drain: frozenset[int],
        undrain: frozenset[int],
        throttle: int | None,
    ) -> tuple[ErrorCode, str | None]:
        """Propose the plan's moves (and drain marks, throttle) as one reassign command; NONE
        means a Completion follows once it applied."""
        ctx = self.ctx
        mg = ctx.metadata_group
        if mg is None or not mg.serving():
            return ErrorCode.NOT_CONTROLLER, "this broker is not the controller"
        cmd = cmd_reassign(
            ((m.topic, m.partition, m.new) for m in moves),
            drain=drain,
            undrain=undrain,
            throttle=throttle,
        )
        return ctx.host.propose_waiting(mg, cmd, token, slot)

    def cancel(self, token: int, slot: int, throttle: int | None) -> tuple[ErrorCode, str | None]:
        ctx = self.ctx
        mg = ctx.metadata_group
        if mg is None or not mg.serving():
            return ErrorCode.NOT_CONTROLLER, "this broker is not the controller"
        return ctx.host.propose_waiting(mg, cmd_reassign_cancel(throttle), token, slot)

    def describe(self) -> list[ReassignmentStatus]:
        """Every partition moving, with its leader's last report (this broker's own group's
        progress when it leads it)."""
        out = []
        for name, pi in self.ctx.meta.reassignments():
            assert pi.target is not None
            g = self.ctx.host.groups.get(pi.group_id)
            if g is not None and g.serving():
                caught, lag = self.views.replica_lag(g)
            else:
                caught, lag = self.views.caught_up.get(pi.group_id, ((), -1))
            out.append(ReassignmentStatus(name, pi.partition, pi.replicas, pi.target, caught, lag))
        return out

    def layout_counts(self) -> tuple[dict[int, int], dict[int, int]]:
        """Replicas and preferred leaders per registered broker, once every reassignment in
        progress is done."""
        meta = self.ctx.meta
        replicas = dict.fromkeys(sorted(meta.brokers), 0)
        leaders = dict.fromkeys(sorted(meta.brokers), 0)
        for t in meta.topics.values():
            for pi in t.partitions:
                for i, r in enumerate(pi.desired):
                    replicas[r] = replicas.get(r, 0) + 1
                    if i == 0:
                        leaders[r] = leaders.get(r, 0) + 1
        return replicas, leaders
