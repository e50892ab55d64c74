"""BrokerNode: every Raft group of one broker and their state machines, as one pure object.

The node is a facade over parts with one owner each:
- `GroupHost` (host.py): the groups, their machines, rounds of Readies (see its docstring for
  the round protocol start_round / apply_committed / finish_round), waiters and completions,
  snapshots and compactions as each group's policy decides;
- `Controller` (controller.py): heartbeats, registration, leases, metadata membership,
  internal topics;
- `PartitionService` (partitions.py): partition groups and the data path (produce, fetch,
  list offsets), retention;
- `GroupService` (groups/service.py): consumer-group coordinators, the machine kind of
  `__consumer_offsets`;
- `ProducerIdAllocator` (producer_ids.py) and `ClusterView` (views.py).
The node itself creates or reopens the metadata group, decides the cluster's bootstrap, and
routes what a metadata apply means for the other parts.

Client operations enter as calls (`produce`, `create_topic`, ...) carrying an opaque token;
those that wait for a commit complete later as `Completion`s of a round. Reads (`fetch`,
`list_offset`, views) answer at once from applied state.

Cluster membership. The metadata group's first voters are the seed controllers. A seed
controller with no metadata group yet creates it only once it has heard, through the peer
handshake, the incarnation of every other seed and none of them has joined a cluster: all
seeds then create the same configuration (a seed list naming only this broker: at once). A
broker that is not a seed, or finds a cluster already there (a seed whose data directory was
lost comes back with a new incarnation), creates an empty configuration and waits: it cannot
campaign until the controller adds it. Members of every group are `Member`s (node id,
incarnation).

Quiescence (`NodeConfig.quiesce`; GroupHost's module doc). The runtime tells the node each
peer's link (`on_peer_link`, with the features its hello advertised) and its loss
(`peer_lost`): the host lets a group quiesce only when every broker of its members
advertised `quiesce`, and wakes the groups of a broker whose link is lost or back. The
periodic work of a tick visits only the groups awake where an asleep one cannot need it:
the leader report to the controller (a quiesced group's report stands there: it is sent as
the group quiesces or wakes, and in full every FULL_PASS_HEARTBEATS reports or when the
controller changes), the replacement of members (`PartitionService.reconcile`, in full at
the same rate) and the participants' pre-commit timers (a group with one pending does not
quiesce).

Snapshots. The metadata machine is snapshotted every `metadata_snapshot_entries` applied
entries and its log compacted up to `snapshot_catchup_entries` behind (PeriodicSnapshots);
partition logs are compacted only by retention (retention.py). At restart the metadata
machine restores from its group's snapshot and replays only the entries after it; a
partition machine loads its persisted writes, or its group's snapshot when that is newer. An
installed metadata snapshot re-syncs the partition groups to the state it carries.
"""

from __future__ import annotations

from collections.abc import Iterable

from broker.core.context import NodeConfig, NodeContext
from broker.core.controller import Controller
from broker.core.groups.service import OFFSETS_TOPIC, GroupService
from broker.core.host import (
    GroupHost,
    HostedGroup,
    RaftSettings,
    Waiter,
)
from broker.core.ids import Member
from broker.core.internal_ops import InternalOps
from broker.core.leader_balance import BalancePlan
from broker.core.machine import Applied, MachineKind, MachineRegistry
from broker.core.metadata import (
    INTERNAL_PREFIX,
    METADATA_GROUP,
    TOPIC_CONFIG_KEYS,
    BrokerInfo,
    MetadataMachine,
    PartitionInfo,
    ProducerIdBlock,
    TopicInfo,
    cmd_alter_topic,
    cmd_create_topic,
    cmd_delete_topic,
    validate_topic_config,
)
from broker.core.metadata_moves import Reassigned
from broker.core.partitions import FetchResult, GroupStore, PartitionService, log_kind
from broker.core.peer_codec import QUIESCE_FEATURE, BrokerHeartbeat, HeartbeatAck
from broker.core.peer_requests import PeerRequests
from broker.core.producer_ids import ProducerIdAllocator
from broker.core.raft import CatchUpBudget, ConfState, Entry, Message, RandomSource
from broker.core.reassignment import Reassignments
from broker.core.retention import RetentionCheck
from broker.core.rounds import Compaction, Completion, Envelope, Round
from broker.core.snapshot_policies import PeriodicSnapshots
from broker.core.txn.participants import TxnParticipants
from broker.core.txn.service import TXN_TOPIC, TransactionService
from broker.core.views import ClusterView, PartitionStatus, PartitionView
from broker.wire.errors import ErrorCode

__all__ = [
    "BrokerNode",
    "Compaction",
    "Completion",
    "Envelope",
    "FetchResult",
    "GroupStore",
    "NodeConfig",
    "PartitionStatus",
    "PartitionView",
    "Round",
    "Waiter",
]

METADATA_KIND = MachineKind("metadata", lambda _: MetadataMachine(), apply_early=False)
UNTHROTTLED_BYTES_PER_TICK = 1 << 50
"""The catch-up budget's rate on a broker configured unthrottled (`catchup_bytes_per_s` 0): a
budget all the same, so an operator's throttle (`rebalance execute --throttle`) applies."""
FULL_PASS_HEARTBEATS = 20
"""With quiescence: every this many broker heartbeats, the leader report and the member
replacement visit every group (else only those awake): 5 s at the default 50 ms ticks."""


class BrokerNode:
    def __init__(
        self,
        config: NodeConfig,
        store: GroupStore,
        rng: RandomSource,
        *,
        bootstrap_cluster_id: str | None = None,
        controllers: dict[int, str] | None = None,
        advertised: BrokerInfo,
        registry: MachineRegistry | None = None,
    ) -> None:
        self.config = config
        self.store = store
        catchup = CatchUpBudget(config.catchup_bytes_per_tick or UNTHROTTLED_BYTES_PER_TICK)
        settings = RaftSettings(
            config.member,
            config.election_ticks,
            config.heartbeat_ticks,
            config.max_msg_bytes,
            config.max_inflight_msgs,
            config.max_uncommitted_bytes,
            config.max_snapshot_chunk_bytes,
            config.quiesce,
        )
        self.host = GroupHost(settings, rng, catchup)
        self.ctx = NodeContext(config, self.host, advertised)
        self.registry = registry or MachineRegistry(log_kind(config.partition))
        self.views = ClusterView(self.ctx)
        self.seeds: dict[int, str] = dict(controllers or {})
        """Seed controllers: node id -> peer address (empty: a single-node cluster)."""
        self.controller_part = Controller(self.ctx, self.views, self.seeds, bootstrap_cluster_id)
        self.reassignments = Reassignments(self.ctx, self.views)
        self.partitions = PartitionService(self.ctx, store, self.registry, self.reassignments)
        self.group_service = GroupService(
            self.ctx, self.views, self.controller_part, self.partitions, config.groups,
            config.tick_ms,
        )  # fmt: skip
        if self.registry.kind_for(OFFSETS_TOPIC) is self.registry.default:
            self.registry.register(self.group_service.kind, [OFFSETS_TOPIC])
        self.producer_ids = ProducerIdAllocator(self.ctx, self.controller_part)
        self.ops = InternalOps(self.host)
        self.retention = RetentionCheck(self.ctx)
        txn = config.transactions
        self.txn_participants = TxnParticipants(
            self.ctx, self.partitions, self.ops, max(1, txn.precommit_timeout_ms // config.tick_ms)
        )
        self.txn_service = TransactionService(
            self.ctx, self.views, self.controller_part, self.partitions, self.producer_ids,
            self.ops, txn,
        )  # fmt: skip
        if self.registry.kind_for(TXN_TOPIC) is self.registry.default:
            self.registry.register(self.txn_service.kind, [TXN_TOPIC])
        self.peers: dict[int, tuple[int, str | None, bool]] = {}
        """What each seed said in its handshake: (incarnation, cluster id, bootstrapped)."""
        self._to_controller: list[tuple[int, BrokerHeartbeat]] = []
        self._pending_creates: dict[tuple[int, int], str] = {}
        """(token, slot) -> topic of create_topic requests waiting for their leaders."""
        self._reports = 0
        self._reported_to: int | None = None
        """The controller the last leader report went to (a new one gets a full report)."""
        if store.has_group(METADATA_GROUP):
            self._reopen_metadata_group()
            mg = self.metadata_group
            if not self.seeds and mg is not None and mg.raft.promotable():
                mg.raft.campaign()
        elif not self.seeds:
            self._create_metadata_group(frozenset({config.member}))
        elif config.node_id not in self.seeds:
            self._create_metadata_group(frozenset())
        else:
            self._bootstrap_if_every_seed_heard()  # a seed list naming only this broker

    # -- shared state, as tests and the runtime read it ---------------------------------------

    @property
    def meta(self) -> MetadataMachine:
        return self.ctx.meta

    @property
    def groups(self) -> dict[int, HostedGroup]:
        return self.host.groups

    @property
    def by_partition(self) -> dict[tuple[str, int], HostedGroup]:
        return self.partitions.by_partition

    @property
    def metadata_group(self) -> HostedGroup | None:
        return self.ctx.metadata_group

    @property
    def ticks(self) -> int:
        return self.ctx.ticks

    @property
    def controller(self) -> int | None:
        return self.ctx.controller()

    @property
    def is_controller(self) -> bool:
        """This broker is the serving controller (the metadata group's serving leader)."""
        mg = self.metadata_group
        return mg is not None and mg.serving()

    @property
    def registered(self) -> bool:
        return self.ctx.registered

    @property
    def bootstrapped(self) -> bool:
        mg = self.metadata_group
        return mg is not None and bool(mg.raft.conf.members() or self.meta.cluster_id)

    # -- the metadata group -------------------------------------------------------------------

    def _open_metadata_group(self, initial: ConfState | None) -> HostedGroup:
        storage = self.store.open_group(METADATA_GROUP, initial)
        snap = storage.snapshot()
        if snap.meta.index > 0:
            self.meta.restore(snap.data)
        c = self.config
        g = self.host.open(
            METADATA_GROUP,
            storage,
            METADATA_KIND,
            self.meta,
            PeriodicSnapshots(c.metadata_snapshot_entries, c.snapshot_catchup_entries),
            throttled=False,  # every broker depends on following the metadata log
        )
        g.on_applied = self._on_metadata_applied
        g.on_installed = self._on_metadata_installed
        return g

    def _reopen_metadata_group(self) -> None:
        """Restart: the metadata machine restores from the group's snapshot, if it has one,
        and the group replays only the entries after it; the partition groups the restored
        state names open at once (the others open as their topics are replayed)."""
        self._open_metadata_group(None)
        self.partitions.sync()
        self._set_throttle()

    def _create_metadata_group(self, voters: frozenset[Member]) -> None:
        """Bootstrap (voters: the seed controllers) or join (no voters: wait to be added)."""
        g = self._open_metadata_group(ConfState(voters))
        if voters and min(voters).node == self.config.node_id:
            g.raft.campaign()  # the lowest seed does not wait for an election timeout

    def _on_metadata_applied(self, e: Entry, res: Applied) -> None:
        value = res.value
        if res.error == ErrorCode.NONE:
            if isinstance(value, TopicInfo):
                self.partitions.on_topic(value)
            elif isinstance(value, ProducerIdBlock):
                self.producer_ids.on_block((e.index, e.term), value.start, value.size)
            elif isinstance(value, Reassigned):
                self.partitions.sync()
                self._set_throttle()
        self.producer_ids.applied(e, res)
        self.ctx.own.applied(e.index)

    def _on_metadata_installed(self, index: int) -> None:
        self.ctx.own.covered(index)
        self.producer_ids.covered(index)
        self.partitions.sync()
        self._set_throttle()

    def _set_throttle(self) -> None:
        """The catch-up budget's rate: the cluster's throttle when an operator set one (also
        on a broker configured unthrottled), else this broker's `catchup_bytes_per_tick`."""
        budget = self.host.catchup
        if budget is None:
            return
        rate = self.meta.throttle
        per_tick = -(-rate * self.config.tick_ms // 1000) if rate else 0
        budget.set_rate(
            per_tick or self.config.catchup_bytes_per_tick or UNTHROTTLED_BYTES_PER_TICK
        )

    def attach_peer_requests(self, peer: PeerRequests) -> None:
        """Serve and send this node's peer requests through `peer`, the process's one
        `PeerRequests` (its owner, the runtime, carries the frames)."""
        self.producer_ids.attach(peer)
        self.controller_part.attach(peer)
        self.reassignments.attach(peer)
        self.txn_participants.attach(peer)
        self.txn_service.attach(peer)

    # -- peers and cluster membership ---------------------------------------------------------

    def on_peer_hello(
        self, node_id: int, incarnation: int, cluster_id: str | None, bootstrapped: bool
    ) -> None:
        """A peer's handshake. A seed controller without a metadata group decides here
        whether to create the cluster (every seed heard, none bootstrapped) or to join it.
        Only seeds' hellos are kept (any peer can say hello: nothing grows with them)."""
        if self.metadata_group is not None or self.config.node_id not in self.seeds:
            return
        if bootstrapped or cluster_id is not None:
            self._create_metadata_group(frozenset())
            return
        if node_id in self.seeds:
            self.peers[node_id] = (incarnation, cluster_id, bootstrapped)
        self._bootstrap_if_every_seed_heard()

    def _bootstrap_if_every_seed_heard(self) -> None:
        """A seed controller creates the cluster once every other seed said hello without a
        cluster: the metadata group's voters are the seeds (this one alone when the seed
        list names only itself, which is then a single-node cluster)."""
        others = [n for n in self.seeds if n != self.config.node_id]
        if all(n in self.peers for n in others):
            voters = {self.config.member} | {Member(n, self.peers[n][0]) for n in others}
            self._create_metadata_group(frozenset(voters))

    def peer_addresses(self) -> dict[int, str]:
        """Every other broker this one may need to talk to: seeds and registered brokers."""
        out = {n: a for n, a in self.seeds.items() if n != self.config.node_id}
        for b in self.meta.brokers.values():
            if b.id != self.config.node_id:
                out[b.id] = f"{b.peer_host}:{b.peer_port}"
        return out

    def _serving_partition_leaders(self) -> list[tuple[int, int]]:
        """(group, term) of the partition groups this broker leads and serves: all of them,
        or with quiescence those awake or that quiesced or woke since the last report (all
        of them every FULL_PASS_HEARTBEATS reports, and to a new controller)."""
        host = self.host
        groups = host.groups
        chosen: Iterable[HostedGroup] = groups.values()
        if host.quiesce:
            flipped = host.take_flipped()
            controller = self.ctx.controller()
            if self._reports % FULL_PASS_HEARTBEATS and controller == self._reported_to:
                ids = {g.id for g in host.active_groups()} | flipped
                chosen = [groups[gid] for gid in sorted(ids) if gid in groups]
            self._reports += 1
            self._reported_to = controller
        return [(g.id, g.raft.term) for g in chosen if g.id != METADATA_GROUP and g.serving()]

    def broker_heartbeat(self) -> tuple[list[int], BrokerHeartbeat] | None:
        """This broker's report to the controller when one is due (see Controller)."""
        if self.ctx.ticks % self.config.broker_heartbeat_ticks:
            return None
        return self.controller_part.heartbeat(self._serving_partition_leaders())

    def on_broker_heartbeat(self, hb: BrokerHeartbeat) -> HeartbeatAck:
        return self.controller_part.on_heartbeat(hb)

    def on_heartbeat_ack(self, ack: HeartbeatAck) -> None:
        self.controller_part.on_ack(ack)

    def ensure_internal_topic(self, name: str) -> bool:
        return self.controller_part.ensure_internal_topic(name)

    def describe_partitions(self) -> list[PartitionStatus]:
        return self.views.describe_partitions()

    def on_peer_link(self, node_id: int, features: Iterable[str]) -> None:
        """A link to broker `node_id` is up, its hello listing `features`: whether its
        groups may quiesce; and wake the groups with a member there (it may have restarted)."""
        self.host.peer_features(node_id, QUIESCE_FEATURE in features)
        self.host.peer_back(node_id)

    # -- inputs -------------------------------------------------------------------------------

    def tick(self, wall_ms: int | None = None) -> None:
        """One tick; `wall_ms`: the runtime's wall clock now (shown; a leader's retention
        check proposes with it, retention.py)."""
        ctx = self.ctx
        ctx.ticks += 1
        if wall_ms is not None:
            ctx.wall_ms = wall_ms
        if self.host.catchup is not None:
            self.host.catchup.refill()
        self.host.tick()
        self.controller_part.check_leases()
        self.controller_part.balance_tick()
        every = self.config.broker_heartbeat_ticks
        if ctx.ticks % every == 0:
            full = not self.host.quiesce or (ctx.ticks // every) % FULL_PASS_HEARTBEATS == 0
            self.partitions.reconcile(None if full else self.host.active_groups())
        out = self.broker_heartbeat()
        if out is not None:
            targets, hb = out
            self._to_controller.extend((t, hb) for t in targets)
        self.producer_ids.serve()  # asks again after a failed or lost request
        self.txn_participants.tick()
        self.retention.tick()
        self.txn_service.tick()

    def step(self, group_id: int, message: Message) -> None:
        self.host.step(group_id, message)

    def peer_lost(self, node_id: int) -> None:
        """The connection to broker `node_id` broke (its process died, or the link did):
        every group it leads here times out soon instead of after a full election timeout
        (`RaftNode.leader_unreachable`), so a killed leader is replaced in about a tick; the
        quiesced groups with a member there wake (GroupHost.peer_lost)."""
        self.host.peer_lost(node_id)

    # -- rounds -------------------------------------------------------------------------------

    def has_work(self) -> bool:
        return bool(self._to_controller) or self.host.has_work()

    def start_round(self) -> Round:
        heartbeats, self._to_controller = self._to_controller, []
        return self.host.start_round(heartbeats)

    def apply_committed(self, rnd: Round) -> list[Completion]:
        """Apply the round's committed partition entries before its write (see GroupHost)."""
        done = self.host.apply_committed(rnd)
        self.txn_service.after_apply()
        return self.ops.route(done + self.host.take_completions())

    def finish_round(self, rnd: Round) -> tuple[list[Envelope], list[Completion]]:
        """The round's write is durable: release acknowledgements, apply, complete (the
        node's own operations' completions go to their callbacks, not to the runtime)."""
        after = self.host.finish_round(rnd)
        self._after_apply()
        self.txn_service.after_apply()
        return after, self.ops.route(self.host.take_completions())

    def _after_apply(self) -> None:
        self.controller_part.after_apply()
        self.producer_ids.serve()
        for (token, slot), topic in list(self._pending_creates.items()):
            if topic not in self.meta.topics:
                del self._pending_creates[(token, slot)]
                self.host.complete(
                    token,
                    slot,
                    ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                    "topic deleted before its partitions had leaders",
                )
            elif self.views.topic_led(topic):
                del self._pending_creates[(token, slot)]
                self.host.complete(token, slot, ErrorCode.NONE)

    def cancel(self, token: int) -> None:
        """The runtime gave up on an operation (timeout, connection closed)."""
        self.host.cancel(token)
        self.txn_service.cancel(token)
        for key in [k for k in self._pending_creates if k[0] == token]:
            del self._pending_creates[key]
        self.producer_ids.cancel(token)

    # -- client operations --------------------------------------------------------------------

    def produce(
        self, token: int, slot: int, topic: str, partition: int, batch: bytes
    ) -> tuple[ErrorCode, str | None]:
        """Propose one batch; NONE means a Completion with its ApplyResult will follow."""
        return self.partitions.produce(token, slot, topic, partition, batch)

    def fetch(
        self,
        topic: str,
        partition: int,
        offset: int,
        max_bytes: int,
        read_committed: bool,
        *,
        min_one: bool = True,
    ) -> FetchResult:
        return self.partitions.fetch(
            topic, partition, offset, max_bytes, read_committed, min_one=min_one
        )

    def fetch_watch(self, topic: str, partition: int) -> tuple[int, int, bool]:
        return self.partitions.fetch_watch(topic, partition)

    def high_watermark(self, topic: str, partition: int) -> int:
        return self.partitions.high_watermark(topic, partition)

    def list_offset(
        self, topic: str, partition: int, timestamp: int, read_committed: bool = False
    ) -> tuple[ErrorCode, int]:
        return self.partitions.list_offset(topic, partition, timestamp, read_committed)

    def create_topic(
        self,
        token: int,
        slot: int,
        name: str,
        partitions: int,
        replication_factor: int,
        config: dict[str, str],
    ) -> tuple[ErrorCode, str | None]:
        """Propose a topic. Its first Completion comes when the command is applied (value:
        the TopicInfo, or the error); the caller then calls `await_leaders` for a second one
        once every partition has a leader."""
        mg = self.metadata_group
        if mg is None or not mg.serving():
            return ErrorCode.NOT_CONTROLLER, "this broker is not the controller"
        cmd = cmd_create_topic(name, partitions, replication_factor, config)
        return self.host.propose_waiting(mg, cmd, token, slot)

    def alter_topic(
        self,
        token: int,
        slot: int,
        name: str,
        partitions: int | None,
        set_config: dict[str, str],
        delete_config: list[str],
    ) -> tuple[ErrorCode, str | None]:
        """Propose more partitions and setting changes (checked here as a create's are, and
        again at apply); completes like create_topic (then `await_leaders`)."""
        mg = self.metadata_group
        if mg is None or not mg.serving():
            return ErrorCode.NOT_CONTROLLER, "this broker is not the controller"
        if name not in self.meta.topics:
            return ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"no topic {name!r}"
        unknown = [k for k in delete_config if k not in TOPIC_CONFIG_KEYS]
        bad = validate_topic_config(set_config) or (
            f"unknown topic config {unknown[0]!r}" if unknown else None
        )
        if bad is not None:
            return ErrorCode.INVALID_CONFIG, bad
        cmd = cmd_alter_topic(name, partitions, set_config, delete_config)
        return self.host.propose_waiting(mg, cmd, token, slot)

    def await_leaders(self, token: int, slot: int, topic: str) -> None:
        """After create_topic applied: complete when every partition has a leader."""
        self._pending_creates[(token, slot)] = topic
        self._after_apply()

    def delete_topic(self, token: int, slot: int, name: str) -> tuple[ErrorCode, str | None]:
        mg = self.metadata_group
        if mg is None or not mg.serving():
            return ErrorCode.NOT_CONTROLLER, "this broker is not the controller"
        if name not in self.meta.topics:
            return ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"no topic {name!r}"
        if name.startswith(INTERNAL_PREFIX):
            return ErrorCode.INVALID_TOPIC, f"topic {name!r} is internal: it cannot be deleted"
        return self.host.propose_waiting(mg, cmd_delete_topic(name), token, slot)

    def elect_preferred_leaders(
        self, topics: frozenset[str] | None
    ) -> tuple[ErrorCode, str | None, BalancePlan | None]:
        """A preferred-leader balancing pass now (ELECT_LEADERS; `topics` None: all): the
        transfers asked and the partitions still off their preferred leader. Only the serving
        controller runs one (else NOT_CONTROLLER); unknown topics: UNKNOWN_TOPIC_OR_PARTITION."""
        mg = self.metadata_group
        if mg is None or not mg.serving():
            return ErrorCode.NOT_CONTROLLER, "this broker is not the controller", None
        missing = sorted((topics or frozenset()) - set(self.meta.topics))
        if missing:
            return ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"no topic {', '.join(missing)}", None
        plan = self.controller_part.balance(topics)
        if plan is None:
            return ErrorCode.NOT_CONTROLLER, "this broker is not the controller", None
        return ErrorCode.NONE, None, plan

    def init_producer_id(self, token: int, slot: int) -> None:
        """A new producer id, on any broker: from its block, or once it has a new one."""
        self.producer_ids.request(token, slot)

    # -- views --------------------------------------------------------------------------------

    def topic_led(self, name: str) -> bool:
        return self.views.topic_led(name)

    def partition_view(self, pi: PartitionInfo) -> PartitionView:
        return self.views.partition_view(pi)

    def leader_hint(self, topic: str, partition: int) -> tuple[int | None, int]:
        return self.views.leader_hint(topic, partition)

    def is_ready(self) -> bool:
        """Caught up with the metadata log, registered, and every hosted partition led."""
        return self.views.is_ready(self.partitions.hosted())

    def stats(self) -> dict[str, int]:
        groups = self.host.groups.values()
        return {
            "groups": len(self.host.groups),
            "leaders": sum(1 for g in groups if g.raft.is_leader),
            "quiesced": self.host.quiesced_count,
            "waiters": sum(len(g.waiters) for g in groups),
        }
