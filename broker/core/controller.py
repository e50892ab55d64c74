"""Controller: cluster membership as the metadata log decides it, from both sides.

Every broker heartbeats the controller (the metadata group's serving leader) with its
addresses and the partition leaders it holds. The controller registers it, adds it to the
metadata group as a learner (so every broker follows the metadata log), records reported
leaders in the log, and marks a broker failed when its heartbeats lapse for
`broker_lease_ticks` (alive again when they resume). A member of an older incarnation of a
broker that came back is replaced (`keep_member`). Only the serving controller proposes;
others answer a heartbeat with who they think leads.

Internal topics (`__consumer_offsets`, `__transaction_state`) are created by the controller on
first need (`ensure_internal_topic`; any other broker asks it with the peer request
ENSURE_INTERNAL_TOPIC), with the configured partition count and replication factor (capped at
the live brokers at apply). The controller waits until as many brokers are alive as the seed
list names (up to the replication factor), so a cluster still starting does not get an
internal topic with fewer replicas than it will have.

Preferred-leader balancing (leader_balance.py). Every `leader_balance_ticks` (and whenever an
operator asks: ELECT_LEADERS), the serving controller plans transfers from its view (leaders,
brokers alive, the caught-up replicas leaders report) and asks each partition's leader, with
the peer request TRANSFER_LEADER {group, target}, to hand leadership to the preferred
replica. The leader checks its own Raft progress before it starts the transfer (else it
answers an error code). A transfer stays in flight until the controller sees the new leader,
the request fails, or TRANSFER_TICKS pass; at most `max_in_flight` are in flight at once.
"""

from __future__ import annotations

from typing import NamedTuple

from broker.core.context import NodeContext
from broker.core.ids import NO_TERM, NOT_LEADING, Member, ProposalKey, Purpose, member_of
from broker.core.leader_balance import (
    BalancePlan,
    PartitionLeadership,
    max_in_flight,
    plan_transfers,
    ready_for_transfer,
)
from broker.core.membership import keep_member
from broker.core.metadata import (
    METADATA_GROUP,
    BrokerInfo,
    cmd_create_topic,
    cmd_init,
    cmd_register_broker,
    cmd_set_alive,
    cmd_set_leaders,
)
from broker.core.peer_codec import BrokerHeartbeat, HeartbeatAck
from broker.core.peer_requests import Answer, Inbound, PeerRequests, PeerResult
from broker.core.views import ClusterView
from broker.wire.errors import ErrorCode

INTERNAL_TOPICS = ("__consumer_offsets", "__transaction_state")
ENSURE_INTERNAL_TOPIC = "ensure_internal_topic"
"""Peer request kind: a broker asks the controller to create an internal topic."""
TRANSFER_LEADER = "transfer_leader"
"""Peer request kind: the controller asks a partition's leader to transfer leadership."""


class _InFlight(NamedTuple):
    """A leadership transfer the controller asked for."""

    topic: str
    partition: int
    target: int
    asked: int
    """The tick it was asked at."""
    correlation_id: int


class Controller:
    def __init__(
        self, ctx: NodeContext, views: ClusterView, seeds: dict[int, str], cluster_id: str | None
    ) -> None:
        self.ctx = ctx
        self.views = views
        self.seeds = seeds
        """Seed controllers: node id -> peer address (empty: a single-node cluster)."""
        self._bootstrap_cluster_id = cluster_id
        self._last_heard: dict[int, tuple[int, int]] = {}
        """Controller only: broker id -> (tick of its last heartbeat, its incarnation)."""
        self._led_since_tick = NOT_LEADING
        self.hint: int | None = None
        """The controller as the last heartbeat answer named it."""
        self._peer: PeerRequests | None = None
        self._asking: int | None = None
        """Correlation id of this broker's one ENSURE_INTERNAL_TOPIC request in flight."""
        self._transfers: dict[int, _InFlight] = {}
        """Controller only: partition group -> the leadership transfer in flight."""

    def attach(self, peer: PeerRequests) -> None:
        self._peer = peer
        peer.register(ENSURE_INTERNAL_TOPIC, self._serve_ensure)
        peer.listen(ENSURE_INTERNAL_TOPIC, self._on_ensure_answer)
        peer.register(TRANSFER_LEADER, self._serve_transfer)
        peer.listen(TRANSFER_LEADER, self._on_transfer_answer)

    def controller_to_ask(self) -> int | None:
        """The controller as this broker knows it (the named leader, else the last heartbeat
        answer's), never itself."""
        me = self.ctx.config.node_id
        known = (self.ctx.controller(), self.hint)
        return next((c for c in known if c is not None and c != me), None)

    def request_internal_topic(self, name: str) -> bool:
        """True once internal topic `name` exists; otherwise have the controller create it
        (this broker, when it is the controller; else one peer request at a time)."""
        if self.ensure_internal_topic(name):
            return True
        mg = self.ctx.metadata_group
        if mg is not None and mg.serving():
            return False
        controller = self.controller_to_ask()
        if self._peer is not None and self._asking is None and controller is not None:
            self._asking = self._peer.request(
                controller, ENSURE_INTERNAL_TOPIC, {"name": name}, deadline_ticks=40,
                retry_ticks=4,
            )  # fmt: skip
        return False

    def _serve_ensure(self, req: Inbound) -> Answer:
        body = req.body
        name = body.get("name") if isinstance(body, dict) else None
        if name not in INTERNAL_TOPICS:
            return Answer(None, ErrorCode.INVALID_REQUEST, f"{name!r} is not an internal topic")
        assert isinstance(name, str)
        return Answer({"exists": self.ensure_internal_topic(name)})

    def _on_ensure_answer(self, result: PeerResult) -> None:
        if result.correlation_id == self._asking:
            self._asking = None

    # -- the broker side --------------------------------------------------------------------

    def heartbeat(
        self, hosted_leaders: list[tuple[int, int]]
    ) -> tuple[list[int], BrokerHeartbeat] | None:
        """Every `broker_heartbeat_ticks`: this broker's report and the brokers to send it to
        (the controller if known, else every seed). The controller handles its own.
        `hosted_leaders`: (group, term) of every partition group this broker serves."""
        ctx = self.ctx
        if ctx.ticks % ctx.config.broker_heartbeat_ticks:
            return None
        a = ctx.advertised
        me = ctx.config.node_id
        leaders = tuple((gid, term, me) for gid, term in hosted_leaders)
        caught_up = tuple(
            (gid, *self.views.replica_lag(ctx.host.groups[gid])) for gid, _ in hosted_leaders
        )
        hb = BrokerHeartbeat(
            a.id, a.incarnation, a.host, a.port, a.peer_host, a.peer_port, a.rack,
            leaders, caught_up,
        )  # fmt: skip
        controller = ctx.controller()
        if controller == me:
            self.on_heartbeat(hb)
            return None
        targets = {t for t in (controller, self.hint) if t is not None}
        if not targets or not ctx.registered:
            # Not in the metadata log yet (so perhaps not followed by its leader, and our
            # view of the controller may be stale): every seed answers with who leads.
            targets |= set(self.seeds)
        targets.discard(me)
        return sorted(targets), hb

    def on_ack(self, ack: HeartbeatAck) -> None:
        """The answering broker's view of the controller is where the next heartbeats also go
        (ours may be stale: a broker the metadata leader does not yet replicate to never
        hears of a new leader from the log)."""
        if ack.controller is not None and ack.controller != self.ctx.config.node_id:
            self.hint = ack.controller

    # -- the controller side ----------------------------------------------------------------

    def on_heartbeat(self, hb: BrokerHeartbeat) -> HeartbeatAck:
        """Register the broker, keep it in the metadata group, record the leaders it
        reports. Only the serving metadata leader acts; others point to it."""
        ctx = self.ctx
        mg = ctx.metadata_group
        if mg is None or not mg.serving() or ctx.meta.cluster_id is None:
            return HeartbeatAck(False, ctx.controller())
        meta = ctx.meta
        self._last_heard[hb.node_id] = (ctx.ticks, hb.incarnation)
        info = BrokerInfo(
            hb.node_id, hb.incarnation, hb.host, hb.port, hb.peer_host, hb.peer_port, hb.rack
        )
        registered = meta.brokers.get(hb.node_id) == info
        if not registered:
            ctx.propose_own(ProposalKey(Purpose.REGISTER, hb.node_id), cmd_register_broker(info))
        elif not meta.alive.get(hb.node_id, False):
            ctx.propose_own(ProposalKey(Purpose.ALIVE, hb.node_id), cmd_set_alive(hb.node_id, True))
        keep_member(ctx.host, mg, Member(hb.node_id, hb.incarnation))
        unknown = (NO_TERM, -1)
        stale = [
            (g, t, ld)
            for g, t, ld in hb.leaders
            if meta.leaders.get(g, unknown) != (t, ld) and t >= meta.leaders.get(g, unknown)[0]
        ]
        if stale:
            # A broker leads only partitions it holds a replica of, and reports only itself.
            replicas = {
                pi.group_id: pi.replicas for t in meta.topics.values() for pi in t.partitions
            }
            stale = [
                (g, t, ld)
                for g, t, ld in stale
                if ld == hb.node_id and hb.node_id in replicas.get(g, ())
            ]
        if stale:
            ctx.propose_own(ProposalKey(Purpose.LEADERS, hb.node_id), cmd_set_leaders(stale))
        for g, ids, lag in hb.caught_up:
            self.views.caught_up[g] = (ids, lag)
        return HeartbeatAck(registered, ctx.config.node_id)

    def check_leases(self) -> None:
        """Every tick, on the controller: a broker silent for the lease is marked failed."""
        ctx = self.ctx
        mg = ctx.metadata_group
        if mg is None or not mg.serving():
            self._led_since_tick = NOT_LEADING
            return
        if self._led_since_tick == NOT_LEADING:
            # Newly in charge: nobody is late yet, whatever the previous controller saw.
            self._led_since_tick = ctx.ticks
            self._last_heard = {b: (ctx.ticks, i.incarnation) for b, i in ctx.meta.brokers.items()}
        self._last_heard[ctx.config.node_id] = (ctx.ticks, ctx.config.incarnation)
        lease = ctx.config.broker_lease_ticks
        for b in ctx.meta.brokers:
            heard = self._last_heard.get(b, (self._led_since_tick, 0))[0]
            if ctx.ticks - heard > lease and ctx.meta.alive.get(b, False):
                ctx.propose_own(ProposalKey(Purpose.ALIVE, b), cmd_set_alive(b, False))

    def after_apply(self) -> None:
        """A new cluster's first command: its id, proposed by its first controller."""
        ctx = self.ctx
        mg = ctx.metadata_group
        if (
            mg is not None
            and mg.serving()
            and ctx.meta.cluster_id is None
            and self._bootstrap_cluster_id is not None
        ):
            ctx.propose_own(ProposalKey(Purpose.INIT), cmd_init(self._bootstrap_cluster_id))

    def ensure_internal_topic(self, name: str) -> bool:
        """True once internal topic `name` exists; on the serving controller, proposes its
        creation (once at a time) when it does not. Other brokers only answer False."""
        ctx = self.ctx
        if name not in INTERNAL_TOPICS:
            raise ValueError(f"{name!r} is not an internal topic")
        if name in ctx.meta.topics:
            return True
        mg = ctx.metadata_group
        alive = sum(1 for b in ctx.meta.brokers if ctx.meta.alive.get(b, False))
        expected = min(ctx.config.internal_topic_replication_factor, max(1, len(self.seeds)))
        if (
            mg is not None
            and mg.serving()
            and ctx.meta.cluster_id is not None
            and alive >= expected
        ):
            c = ctx.config
            cmd = cmd_create_topic(
                name,
                c.internal_topic_partitions,
                c.internal_topic_replication_factor,
                {},
                internal=True,
            )
            ctx.propose_own(ProposalKey(Purpose.INTERNAL_TOPIC, name), cmd)
        return False

    # -- preferred-leader balancing -----------------------------------------------------------

    @property
    def transfer_ticks(self) -> int:
        """How long a transfer counts as in flight without news: the Raft core abandons one
        after an election timeout; the new leader's report takes up to two heartbeats."""
        c = self.ctx.config
        return 2 * c.election_ticks + 2 * c.broker_heartbeat_ticks

    def balance_tick(self) -> None:
        """Every tick: settle the transfers in flight; on the serving controller, a balancing
        pass every `leader_balance_ticks` (0: only when asked)."""
        ctx = self.ctx
        mg = ctx.metadata_group
        if mg is None or not mg.serving() or self._peer is None:
            self._transfers.clear()
            return
        if self._transfers:
            self._settle_transfers()
        every = ctx.config.leader_balance_ticks
        if every and ctx.ticks % every == 0 and ctx.ticks - self._led_since_tick >= every:
            self.balance(None)

    def leadership_view(self, topics: frozenset[str] | None) -> list[PartitionLeadership]:
        """Every partition (of `topics`, None: all) as this broker sees it: leader (its own
        group's view or the newest report), replicas, caught-up replicas (its own group's
        progress when it leads, else the leader's last report). A partition being moved is
        left out: its leader moves leadership as the move needs (reassignment.py)."""
        out = []
        views = self.views
        for t in self.ctx.meta.topics.values():
            if topics is not None and t.name not in topics:
                continue
            for pi in t.partitions:
                if pi.target is not None:
                    continue
                view = views.partition_view(pi)
                g = self.ctx.host.groups.get(pi.group_id)
                if g is not None and g.serving():
                    caught = views.replica_lag(g)[0]
                else:
                    caught = views.caught_up.get(pi.group_id, ((), -1))[0]
                out.append(
                    PartitionLeadership(
                        t.name, pi.partition, pi.group_id, pi.replicas, view.leader, caught
                    )
                )
        return out

    def balance(self, topics: frozenset[str] | None) -> BalancePlan | None:
        """One balancing pass (only the serving controller: else None): plan from this
        broker's view and ask each transfer's leader. The budget counts every partition and
        every transfer in flight, whatever `topics` narrows the pass to."""
        ctx = self.ctx
        mg = ctx.metadata_group
        peer = self._peer
        if mg is None or not mg.serving() or peer is None:
            return None
        self._settle_transfers()
        every = self.leadership_view(None)
        parts = every if topics is None else [p for p in every if p.topic in topics]
        alive = frozenset(b for b in ctx.meta.brokers if ctx.meta.alive.get(b, False))
        plan = plan_transfers(parts, alive, self._transfers.keys(), max_in_flight(len(every)))
        for t in plan.transfers:
            cid = peer.request(
                t.source,
                TRANSFER_LEADER,
                {"group": t.group, "target": t.target},
                deadline_ticks=self.transfer_ticks,
                retry_ticks=4,
            )
            self._transfers[t.group] = _InFlight(t.topic, t.partition, t.target, ctx.ticks, cid)
        return plan

    def _settle_transfers(self) -> None:
        """Forget the transfers that took effect (the target leads) or ran out of time."""
        ctx = self.ctx
        for gid, t in list(self._transfers.items()):
            pi = ctx.meta.partition(t.topic, t.partition)
            done = pi is None or self.views.partition_view(pi).leader == t.target
            if done or ctx.ticks - t.asked > self.transfer_ticks:
                del self._transfers[gid]

    def _on_transfer_answer(self, result: PeerResult) -> None:
        """A refused or failed transfer is forgotten at once (the next pass may ask again)."""
        if result.ok:
            return
        for gid, t in list(self._transfers.items()):
            if t.correlation_id == result.correlation_id:
                del self._transfers[gid]
                return

    def _serve_transfer(self, req: Inbound) -> Answer:
        """TRANSFER_LEADER {group, target} from the controller: start the transfer if this
        broker leads the group and the target's replica is a voter caught up (Raft progress)."""
        body = req.body
        if not isinstance(body, dict):
            return Answer(None, ErrorCode.INVALID_REQUEST, "expected {group, target}")
        gid, target = body.get("group"), body.get("target")
        if type(gid) is not int or type(target) is not int:
            return Answer(None, ErrorCode.INVALID_REQUEST, "group and target are integers")
        ctx = self.ctx
        g = ctx.host.groups.get(gid)
        if g is None or gid == METADATA_GROUP:
            why = f"broker {ctx.config.node_id} hosts no partition group {gid}"
            return Answer(None, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, why)
        raft = g.raft
        if not g.serving():
            why = f"broker {ctx.config.node_id} does not lead group {gid}"
            return Answer(None, ErrorCode.NOT_LEADER_OR_FOLLOWER, why)
        if target == ctx.config.node_id:
            return Answer({"started": False})  # it leads already
        member = next((m for m in map(member_of, raft.conf.voters) if m and m.node == target), None)
        pr = None if member is None else raft.progress.get(member)
        if member is None or pr is None:
            why = f"broker {target} holds no voting replica of group {gid}"
            return Answer(None, ErrorCode.LEADER_NOT_AVAILABLE, why)
        last = raft.log.last_index()
        lost = ctx.host.is_lost(target)
        if not ready_for_transfer(
            pr.match, last, pr.idle_ticks, ctx.config.election_ticks, lost=lost
        ):
            why = f"broker {target}'s replica of group {gid} is not caught up ({pr.match}/{last})"
            return Answer(None, ErrorCode.LEADER_NOT_AVAILABLE, why)
        ctx.host.transfer_leader(g, member)
        return Answer({"started": True})
