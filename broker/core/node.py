"""BrokerNode: every Raft group of one broker and their state machines, as one pure object.

Theory of operation
-------------------
A broker hosts the metadata group (id 0) and one group per partition replica it holds. The
runtime drives the node in rounds, and every round has the shape of the Raft Ready protocol,
batched across all groups:

1. `start_round()` takes a Ready from every group that has one (and the state-machine writes
   left by the previous round's applies) and returns a `Round`: messages that may leave at
   once, and everything to persist, which the runtime writes in ONE synced write;
2. `apply_committed(round)` (optional, before the write) applies the partitions' committed
   entries, which are durable already, and completes the produces waiting on them, so an
   acknowledgement does not wait for the sync of the next batch appended in the same round;
3. `finish_round(round)` is called once that write is durable: each group hears
   `persisted(n)`, the messages that had to wait for it are returned, the remaining committed
   entries are applied to the state machines, and the operations waiting on them complete.

Client operations enter as calls (`produce`, `create_topic`, ...) carrying an opaque token;
those that wait for a commit complete later as `Completion`s of a round. Reads (`fetch`,
`list_offsets`, `metadata`) answer at once from applied state. A new leader serves nothing and
reports no leader until the no-op of its term has committed, so the high watermark it reports
never goes back across a failover.

Members of every Raft group are (node id, incarnation) pairs. Group ids come from the
metadata state machine; a partition group is opened when a `create_topic` naming this broker
as a replica is applied (its first replica campaigns at once), and dropped when the topic is
deleted.

Cluster membership. The metadata group's first voters are the seed controllers. A seed
controller with no metadata group yet creates it only once it has heard, through the peer
handshake, the incarnation of every other seed and none of them has joined a cluster: all
seeds then create the same configuration. A broker that is not a seed, or finds a cluster
already there (a seed whose data directory was lost comes back with a new incarnation),
creates an empty configuration and waits: it cannot campaign until the controller adds it.
Every broker heartbeats the controller (the metadata leader) with its addresses and the
partition leaders it holds; the controller registers it, adds it to the metadata group as a
learner (so every broker follows the metadata log), records reported leaders in the metadata
log, and marks a broker failed when its heartbeats lapse for `broker_lease_ticks` (and alive
again when they resume). A member of an older incarnation of a broker that has come back is
replaced in the metadata group: the new incarnation is added as a learner and, once caught
up, takes the old one's place (a voter is promoted before the old incarnation is removed).

Partition groups follow the same rule, decided by the metadata log and carried out by each
group's leader (`_reconcile_replicas`): a replica whose broker registered a new incarnation
(its data directory was lost) is replaced the same way. The new incarnation opens its old
groups empty, as a non-member, and learns their configuration from the log, so it never
votes or counts toward a quorum before it holds every committed entry. Replication to a
replica that lacks committed entries is paced by one `CatchUpBudget` per broker.

Snapshots and compaction. The node decides; the runtime writes what a round lists in
`Round.compactions` (record the snapshot, then drop the log prefix) once the round's other
writes are durable, so the apply state the round carries is on disk before the entries
behind it are dropped. A follower whose next entry is compacted away receives the snapshot
(RaftNode sends the storage's latest one).
- Metadata group: every `metadata_snapshot_entries` applied entries the node snapshots the
  `MetadataMachine` at the entry just applied and compacts the log up to
  `snapshot_catchup_entries` behind it (KRaft's metadata snapshots; etcd's
  SnapshotCatchUpEntries keeps slightly lagging followers on appends).
- Partition groups: compaction deletes records (the Raft log is the partition log), so it is
  retention, off unless `partition_retention_entries` is set: each replica captures its
  machine's snapshot as it applies an entry, and once that entry is that many entries behind
  the applied index, compacts the log exactly up to it and moves the log start offset to the
  snapshot's next offset (`PartitionMachine.retain_from`; the round deletes the offset-index
  records below it). A partition snapshot's index is its compaction point, so a replica that
  installs it receives every retained entry after it by append: its log start offset is the
  leader's. Retention by time or size (the topic's retention.ms / retention.bytes) and its
  CLI are a later issue.
- Install: when a Ready carries a snapshot, `finish_round` (after the write made it durable)
  restores the group's machine from it: the metadata state (then opens or drops partition
  groups to match it), or the partition machine with no records (log start = next offset);
  the next round persists the partition's new apply state and drops its stale offset index.
  Proposals covered by the snapshot fail (NOT_LEADER_OR_FOLLOWER: their outcome is unknown
  here; an idempotent retry is answered as a duplicate).
- Restart: the metadata machine restores from its group's snapshot and replays only the
  entries after it; a partition machine restores from its apply state, or from its group's
  snapshot when that is newer (a compaction may have been written before a crash lost the
  apply state that followed it).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from broker.core.metadata import (
    METADATA_GROUP,
    BrokerInfo,
    MetadataMachine,
    MetaResult,
    PartitionInfo,
    TopicInfo,
    cmd_alloc_producer_ids,
    cmd_create_topic,
    cmd_delete_topic,
    cmd_init,
    cmd_register_broker,
    cmd_set_alive,
    cmd_set_leaders,
)
from broker.core.partition import Outcome, PartitionConfig, PartitionMachine
from broker.core.peer_codec import BrokerHeartbeat, HeartbeatAck
from broker.core.raft import (
    CatchUpBudget,
    ConfChange,
    ConfChangeKind,
    ConfState,
    DropReason,
    Entry,
    EntryKind,
    LogStorage,
    Message,
    ProposalDropped,
    RaftConfig,
    RaftNode,
    RandomSource,
    Ready,
    Role,
    Snapshot,
)
from broker.wire.batch import BatchError
from broker.wire.errors import ErrorCode

Member = tuple[int, int]
"""A Raft member: (node id, incarnation)."""


class GroupStore(Protocol):
    """The runtime's storage as the node sees it: read-only, like LogStorage."""

    def open_group(self, group_id: int, initial: ConfState | None) -> LogStorage:
        """The group's log storage; `initial` seeds a group that has none on disk."""
        ...

    def has_group(self, group_id: int) -> bool: ...

    def load_apply_state(self, group_id: int) -> bytes | None: ...

    def load_offsets(self, group_id: int) -> Iterable[tuple[int, int, int]]:
        """(base offset, raft index, max timestamp) of every indexed batch, ascending."""
        ...


@dataclass(frozen=True, slots=True)
class NodeConfig:
    node_id: int
    incarnation: int
    election_ticks: int = 6
    heartbeat_ticks: int = 2
    max_msg_bytes: int = 1 << 20
    max_inflight_msgs: int = 256
    max_uncommitted_bytes: int = 64 << 20
    broker_heartbeat_ticks: int = 5
    broker_lease_ticks: int = 40
    """The controller marks a broker failed after this many ticks without its heartbeat."""
    catchup_bytes_per_tick: int = 0
    """Bytes per tick this broker's leaders may send, all groups together, to replicas that
    lack committed entries (catching up); 0: unthrottled."""
    default_partitions: int = 1
    default_replication_factor: int = 1
    partition: PartitionConfig = field(default_factory=PartitionConfig)
    metadata_snapshot_entries: int = 10_000
    """Snapshot the metadata state machine every this many applied entries and compact its
    log behind the snapshot; 0: never."""
    snapshot_catchup_entries: int = 5_000
    """Entries a metadata compaction keeps behind its snapshot: a follower lagging by fewer
    catches up by append, not by snapshot."""
    partition_retention_entries: int = 0
    """Retention of every partition replica, in Raft entries: the log keeps between this many
    and twice as many entries behind the applied index; older records are deleted (the log
    start offset moves). 0: records are kept for ever."""
    max_snapshot_chunk_bytes: int = 1 << 20
    """Snapshot bytes per InstallSnapshot message."""

    @property
    def member(self) -> Member:
        return (self.node_id, self.incarnation)


@dataclass(frozen=True, slots=True)
class Envelope:
    """A Raft message for group `group_id` on broker `dst`."""

    dst: int
    group_id: int
    message: Message


@dataclass(frozen=True, slots=True)
class Compaction:
    """Group `group_id`'s state machine as a snapshot at Raft index `index` (`conf`: the
    configuration in effect there), and the log prefix to drop behind it. The runtime, once
    the round's other writes are durable: `create_snapshot(index, conf, data)`, then
    `compact(compact_to)` (compact_to <= index; an index the storage already passed, by an
    installed snapshot or an earlier compaction, is a no-op)."""

    group_id: int
    index: int
    conf: ConfState
    data: bytes
    compact_to: int


@dataclass(slots=True)
class Round:
    readies: list[tuple[int, Ready]]
    messages: list[Envelope]
    apply_states: list[tuple[int, bytes]]
    new_offsets: list[tuple[int, int, int, int]]
    """(group, base offset, raft index, max timestamp) of batches indexed last round."""
    dropped_groups: list[int]
    heartbeats: list[tuple[int, BrokerHeartbeat]]
    """Reports for the controller: (destination broker, heartbeat)."""
    applied_early: set[int] = field(default_factory=set)
    """Groups whose committed entries `apply_committed` applied before the round's write
    (empty when it applied nothing)."""
    log_starts: list[tuple[int, int]] = field(default_factory=list)
    """(group, log start offset): retention or a snapshot install moved the partition's log
    start; its offset-index records below it are deleted in this round's write (its
    `apply_states` carry the same log start)."""
    compactions: list[Compaction] = field(default_factory=list)
    """Written after the rest of the round is durable (see Compaction)."""


@dataclass(frozen=True, slots=True)
class Completion:
    token: int
    slot: int
    error: ErrorCode
    message: str | None = None
    value: Any = None


@dataclass(frozen=True, slots=True)
class FetchResult:
    error: ErrorCode
    high_watermark: int = -1
    last_stable_offset: int = -1
    log_start_offset: int = -1
    batches: tuple[tuple[int, bytes], ...] = ()
    message: str | None = None

    @property
    def size(self) -> int:
        return sum(len(b) for _, b in self.batches)


@dataclass(frozen=True, slots=True)
class PartitionView:
    partition: int
    leader: int | None
    leader_term: int
    replicas: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class PartitionStatus:
    """One partition as `sluice cluster status` shows it."""

    topic: str
    view: PartitionView
    caught_up: tuple[int, ...]
    """Replicas (node ids) holding every committed entry."""
    commit_lag: int
    """Committed entries the slowest replica lacks; -1 when unknown to this broker."""


@dataclass(slots=True)
class _Waiter:
    token: int
    slot: int
    term: int


@dataclass(frozen=True, slots=True)
class _Capture:
    """A partition machine's snapshot as it applied `index`: the next retention point."""

    index: int
    data: bytes
    next_offset: int


@dataclass(slots=True)
class _Group:
    id: int
    raft: RaftNode
    storage: LogStorage
    topic: str | None = None
    partition: int = -1
    machine: PartitionMachine | None = None
    waiters: dict[int, _Waiter] = field(default_factory=dict)
    dirty: bool = False
    """Applied entries since its state was last handed out for persistence."""
    new_offsets: list[tuple[int, int, int]] = field(default_factory=list)
    log_start_moved: bool = False
    """The partition's log start moved since its state was last handed out."""
    snapshot_index: int = 0
    """Index of the group's latest snapshot, on disk or listed in a Compaction."""
    compacted_to: int = 0
    """The log is compacted up to here, on disk or by a listed Compaction."""
    capture: _Capture | None = None
    """Partition retention: the snapshot the next compaction will use."""

    def serving(self) -> bool:
        """Leader with its term's no-op committed: may serve produce, fetch and metadata."""
        r = self.raft
        return r.role == Role.LEADER and r.commit_index >= r.term_start_index


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
    ) -> None:
        self.config = config
        self.store = store
        self.rng = rng
        self.advertised = advertised
        self.meta = MetadataMachine()
        self.groups: dict[int, _Group] = {}
        self.by_partition: dict[tuple[str, int], _Group] = {}
        self._completions: list[Completion] = []
        self._touched: set[int] = set()
        """Groups that may have work for the next round: every group after a tick, and any
        group given a message, a proposal or a campaign, or part of the last round. Rounds
        look only at these, so an idle broker with thousands of groups does not scan them
        all on every loop (a group missed here is still seen at the next tick)."""
        self._dropped: list[int] = []
        self._compactions: list[Compaction] = []
        self._pending_creates: dict[tuple[int, int], str] = {}
        """(token, slot) -> topic of create_topic requests waiting for their leaders."""
        self._pid_next = 0
        self._pid_end = 0
        self._pid_waiting: list[tuple[int, int]] = []
        self._own: dict[str, tuple[int, int]] = {}
        """Purpose ("init", "register", "pids", ...) -> (index, term) of this incarnation's
        own metadata proposal still waiting to be applied: one at a time per purpose."""
        self._bootstrap_cluster_id = bootstrap_cluster_id
        self.seeds: dict[int, str] = dict(controllers or {})
        """Seed controllers: node id -> peer address (empty: a single-node cluster)."""
        self.peers: dict[int, tuple[int, str | None, bool]] = {}
        """What each peer said in its handshake: (incarnation, cluster id, bootstrapped)."""
        self.ticks = 0
        self._last_heard: dict[int, tuple[int, int]] = {}
        """Controller only: broker id -> (tick of its last heartbeat, its incarnation)."""
        self._caught_up: dict[int, tuple[tuple[int, ...], int]] = {}
        """Controller only: partition group -> (replicas caught up, commit lag) as its leader
        last reported."""
        self._led_since_tick = -1
        self._to_controller: list[tuple[int, BrokerHeartbeat]] = []
        self._controller_hint: int | None = None
        """The controller as the last heartbeat answer named it."""
        self.catchup = (
            CatchUpBudget(config.catchup_bytes_per_tick) if config.catchup_bytes_per_tick else None
        )
        self.metadata_group: _Group | None = None
        if store.has_group(METADATA_GROUP):
            self.metadata_group = self._reopen_metadata_group()
            if not self.seeds and self.metadata_group.raft.promotable():
                self.metadata_group.raft.campaign()
        elif not self.seeds:
            self._create_metadata_group(frozenset({config.member}))
        elif config.node_id not in self.seeds:
            self._create_metadata_group(frozenset())
        else:
            self._bootstrap_if_every_seed_heard()  # a seed list naming only this broker

    def _reopen_metadata_group(self) -> _Group:
        """Restart: the metadata machine restores from the group's snapshot, if it has one,
        and the group replays only the entries after it; the partition groups the restored
        state names open at once (the others open as their topics are replayed)."""
        storage = self.store.open_group(METADATA_GROUP, None)
        snap = storage.snapshot()
        if snap.meta.index > 0:
            self.meta.restore(snap.data)
        g = self._open_group(METADATA_GROUP, None, snap.meta.index, storage)
        g.snapshot_index = snap.meta.index
        self._sync_partitions()
        return g

    def _create_metadata_group(self, voters: frozenset[Member]) -> None:
        """Bootstrap (voters: the seed controllers) or join (no voters: wait to be added)."""
        g = self._open_group(METADATA_GROUP, ConfState(voters), applied=0)
        self.metadata_group = g
        if voters and min(voters)[0] == self.config.node_id:
            g.raft.campaign()  # the lowest seed does not wait for an election timeout

    # -- peers and cluster membership --------------------------------------------------------

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
            voters = {self.config.member} | {(n, self.peers[n][0]) for n in others}
            self._create_metadata_group(frozenset(voters))

    @property
    def bootstrapped(self) -> bool:
        return self.metadata_group is not None and bool(
            self.metadata_group.raft.conf.members() or self.meta.cluster_id
        )

    def peer_addresses(self) -> dict[int, str]:
        """Every other broker this one may need to talk to: seeds and registered brokers."""
        out = {n: a for n, a in self.seeds.items() if n != self.config.node_id}
        for b in self.meta.brokers.values():
            if b.id != self.config.node_id:
                out[b.id] = f"{b.peer_host}:{b.peer_port}"
        return out

    def broker_heartbeat(self) -> tuple[list[int], BrokerHeartbeat] | None:
        """Every `broker_heartbeat_ticks`: this broker's report and the brokers to send it to
        (the controller if known, else every seed). The controller handles its own."""
        if self.ticks % self.config.broker_heartbeat_ticks:
            return None
        a = self.advertised
        leaders = []
        caught_up = []
        for g in self.groups.values():
            if g.id != METADATA_GROUP and g.serving():
                leaders.append((g.id, g.raft.term, self.config.node_id))
                caught_up.append((g.id, *self._replica_lag(g)))
        hb = BrokerHeartbeat(
            a.id, a.incarnation, a.host, a.port, a.peer_host, a.peer_port, a.rack,
            tuple(leaders), tuple(caught_up),
        )  # fmt: skip
        controller = self.controller
        if controller == self.config.node_id:
            self.on_broker_heartbeat(hb)
            return None
        targets = {t for t in (controller, self._controller_hint) if t is not None}
        if not targets or not self.registered:
            # Not in the metadata log yet (so perhaps not followed by its leader, and our
            # view of the controller may be stale): every seed answers with who leads.
            targets |= set(self.seeds)
        targets.discard(self.config.node_id)
        return sorted(targets), hb

    def _replica_lag(self, g: _Group) -> tuple[tuple[int, ...], int]:
        """Leader side: the replicas holding every committed entry and heard from within the
        last election timeout (a silent one may be dead), and how many committed entries the
        slowest replica lacks."""
        raft = g.raft
        commit = raft.commit_index
        caught: list[int] = []
        lag = 0
        for m, pr in raft.progress.items():
            if not isinstance(m, tuple):
                continue
            if pr.match >= commit and (m == raft.id or pr.idle_ticks < self.config.election_ticks):
                caught.append(m[0])
            else:
                lag = max(lag, commit - pr.match)
        return tuple(sorted(caught)), lag

    def on_broker_heartbeat(self, hb: BrokerHeartbeat) -> HeartbeatAck:
        """Controller side: register the broker, keep it in the metadata group, record the
        leaders it reports. Only the serving metadata leader acts; others point to it."""
        mg = self.metadata_group
        if mg is None or not mg.serving() or self.meta.cluster_id is None:
            return HeartbeatAck(False, self.controller)
        self._last_heard[hb.node_id] = (self.ticks, hb.incarnation)
        info = BrokerInfo(
            hb.node_id, hb.incarnation, hb.host, hb.port, hb.peer_host, hb.peer_port, hb.rack
        )
        registered = self.meta.brokers.get(hb.node_id) == info
        if not registered:
            self._propose_own(f"register:{hb.node_id}", cmd_register_broker(info))
        elif not self.meta.alive.get(hb.node_id, False):
            self._propose_own(f"alive:{hb.node_id}", cmd_set_alive(hb.node_id, True))
        self._keep_member(mg, (hb.node_id, hb.incarnation))
        stale = [
            (g, t, ld)
            for g, t, ld in hb.leaders
            if self.meta.leaders.get(g, (-1, -1)) != (t, ld)
            and t >= self.meta.leaders.get(g, (-1, -1))[0]
        ]
        if stale:
            # A broker leads only partitions it holds a replica of, and reports only itself.
            replicas = self._group_replicas()
            stale = [
                (g, t, ld)
                for g, t, ld in stale
                if ld == hb.node_id and hb.node_id in replicas.get(g, ())
            ]
        if stale:
            self._propose_own(f"leaders:{hb.node_id}", cmd_set_leaders(stale))
        for g, ids, lag in hb.caught_up:
            self._caught_up[g] = (ids, lag)
        return HeartbeatAck(registered, self.config.node_id)

    def _group_replicas(self) -> dict[int, tuple[int, ...]]:
        """Partition group id -> the brokers holding its replicas, per the metadata log."""
        return {pi.group_id: pi.replicas for t in self.meta.topics.values() for pi in t.partitions}

    def _keep_member(self, mg: _Group, member: Member) -> None:
        """Leader of group `mg`: make `member` a member: add it (or a new incarnation of its
        broker) as a learner; once it holds every committed entry, let it take the old
        incarnation's place: a voter is promoted before the old incarnation is removed, so
        it never counts toward a quorum before it has caught up. One change at a time."""
        raft = mg.raft
        conf = raft.conf
        older = [m for m in conf.members() if isinstance(m, tuple) and m[0] == member[0]
                 and m != member]  # fmt: skip
        if member not in conf.members():
            self._propose_conf(mg, ConfChange(ConfChangeKind.ADD_LEARNER, member))
            return
        if not older:
            return
        pr = raft.progress.get(member)
        if pr is None or pr.match < raft.commit_index:
            return  # still catching up
        old = older[0]
        if old in conf.voters and member in conf.learners:
            self._propose_conf(mg, ConfChange(ConfChangeKind.ADD_VOTER, member))
        else:
            self._propose_conf(mg, ConfChange(ConfChangeKind.REMOVE, old))

    def _propose_conf(self, g: _Group, change: ConfChange) -> None:
        # Refused while another change is uncommitted: the next heartbeat tries again.
        self._touched.add(g.id)
        with contextlib.suppress(ProposalDropped):
            g.raft.propose_conf_change(change)

    def _reconcile_replicas(self) -> None:
        """Partition leaders: keep each group's members at the incarnations the metadata log
        registers for its replicas. A broker whose data directory was lost registers a new
        incarnation; the controller's metadata log is the decision, and the leader of every
        group it held carries it out through `_keep_member`."""
        brokers = self.meta.brokers
        for g in self.by_partition.values():
            if not g.serving() or g.topic is None:
                continue
            pi = self.meta.partition(g.topic, g.partition)
            if pi is None:
                continue
            members = g.raft.conf.members()
            for r in pi.replicas:
                b = brokers.get(r)
                if b is None:
                    continue
                want = (r, b.incarnation)
                stale = any(isinstance(m, tuple) and m[0] == r and m != want for m in members)
                if want not in members or stale:
                    self._keep_member(g, want)
                    break  # at most one change per group in flight

    def on_heartbeat_ack(self, ack: HeartbeatAck) -> None:
        """Broker side: the answering broker's view of the controller is where the next
        heartbeats also go (ours may be stale: a broker the metadata leader does not yet
        replicate to never hears of a new leader from the log)."""
        if ack.controller is not None and ack.controller != self.config.node_id:
            self._controller_hint = ack.controller

    def _check_leases(self) -> None:
        """Controller, every tick: a broker silent for the lease is marked failed."""
        mg = self.metadata_group
        if mg is None or not mg.serving():
            self._led_since_tick = -1
            return
        if self._led_since_tick < 0:
            # Newly in charge: nobody is late yet, whatever the previous controller saw.
            self._led_since_tick = self.ticks
            self._last_heard = {
                b: (self.ticks, i.incarnation) for b, i in self.meta.brokers.items()
            }
        self._last_heard[self.config.node_id] = (self.ticks, self.config.incarnation)
        lease = self.config.broker_lease_ticks
        for b in self.meta.brokers:
            heard = self._last_heard.get(b, (self._led_since_tick, 0))[0]
            if self.ticks - heard > lease and self.meta.alive.get(b, False):
                self._propose_own(f"alive:{b}", cmd_set_alive(b, False))

    def describe_partitions(self) -> list[PartitionStatus]:
        """For cluster status: every partition with its view, caught-up replicas and commit
        lag (from this broker's own group when it leads it, else as the controller last heard
        from the leader; unknown elsewhere: no replicas, lag -1)."""
        out = []
        for t in self.meta.topics.values():
            for pi in t.partitions:
                view = self.partition_view(pi)
                g = self.groups.get(pi.group_id)
                if g is not None and g.serving():
                    caught, lag = self._replica_lag(g)
                else:
                    caught, lag = self._caught_up.get(pi.group_id, ((), -1))
                out.append(PartitionStatus(t.name, view, caught, lag))
        return out

    # ---------------------------------------------------------------------------------------
    # Groups

    def _raft_config(self, applied: int) -> RaftConfig:
        c = self.config
        return RaftConfig(
            id=c.member,
            election_ticks=c.election_ticks,
            heartbeat_ticks=c.heartbeat_ticks,
            max_msg_bytes=c.max_msg_bytes,
            max_inflight_msgs=c.max_inflight_msgs,
            max_uncommitted_bytes=c.max_uncommitted_bytes,
            max_snapshot_chunk_bytes=c.max_snapshot_chunk_bytes,
            applied=applied,
        )

    def _open_group(
        self,
        gid: int,
        initial: ConfState | None,
        applied: int,
        storage: LogStorage | None = None,
    ) -> _Group:
        if storage is None:
            storage = self.store.open_group(gid, initial)
        # The metadata group is never throttled: every broker depends on following it.
        catchup = None if gid == METADATA_GROUP else self.catchup
        raft = RaftNode(self._raft_config(applied), storage, self.rng, catchup=catchup)
        g = _Group(gid, raft, storage, compacted_to=storage.first_index() - 1)
        self.groups[gid] = g
        self._touched.add(gid)
        return g

    def _open_partition(self, topic: TopicInfo, pi: PartitionInfo) -> None:
        if pi.group_id in self.groups:
            return
        members = []
        for r in pi.replicas:
            b = self.meta.brokers.get(r)
            if b is None:
                return  # placement named a broker this node does not know yet
            members.append((b.id, b.incarnation))
        fresh = not self.store.has_group(pi.group_id)
        # A group created for an earlier incarnation of this broker (its data directory was
        # lost since): join it empty, as a non-member, until its leader adds this incarnation
        # (`_reconcile_replicas`); the configuration arrives with the log.
        initial = ConfState(frozenset(members) if self.config.member in members else frozenset())
        default = self.config.partition
        pconf = PartitionConfig(
            max_message_bytes=int(topic.config.get("max.message.bytes", default.max_message_bytes)),
            producer_expiry_ms=default.producer_expiry_ms,
            limits=default.limits,
        )
        storage = self.store.open_group(pi.group_id, initial if fresh else None)
        machine = PartitionMachine(pconf)
        snapshot_index = 0
        from_snapshot = False
        if not fresh:
            machine.restore(
                self.store.load_apply_state(pi.group_id), self.store.load_offsets(pi.group_id)
            )
            snap = storage.snapshot()
            snapshot_index = snap.meta.index
            if snapshot_index > machine.applied_index:
                # Compacted past the persisted apply state (a crash between the two writes,
                # or an install whose apply state was not written yet): the snapshot it is.
                machine = PartitionMachine(pconf)
                machine.restore_snapshot(snap.data)
                from_snapshot = True
        g = self._open_group(pi.group_id, None, machine.applied_index, storage)
        g.topic, g.partition, g.machine = topic.name, pi.partition, machine
        g.snapshot_index = snapshot_index
        # Persist the restored state, and drop offset-index records it no longer lists.
        g.dirty = g.log_start_moved = from_snapshot
        self.by_partition[(topic.name, pi.partition)] = g
        if pi.replicas[0] == self.config.node_id:
            g.raft.campaign()  # the preferred leader does not wait for an election timeout
        elif fresh:
            # Its first campaign may reach replicas that have not opened the group yet: the
            # others wait an extra election timeout, so it also wins with its second one and
            # initial leaders stay spread as placement chose.
            g.raft.delay_election(2 * self.config.election_ticks)

    def _drop_group(self, gid: int) -> None:
        g = self.groups.pop(gid, None)
        if g is None:
            return
        if g.topic is not None:
            self.by_partition.pop((g.topic, g.partition), None)
        self._fail_waiters(g, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, "topic deleted")
        self._compactions = [c for c in self._compactions if c.group_id != gid]
        self._dropped.append(gid)

    def _sync_partitions(self) -> None:
        """Open every partition group the metadata state gives this broker a replica of, and
        drop every open one whose topic it no longer holds (after a snapshot replaced the
        state without the commands that would have done so one by one)."""
        wanted: set[int] = set()
        for topic in self.meta.topics.values():
            for pi in topic.partitions:
                wanted.add(pi.group_id)
                if self.config.node_id in pi.replicas:
                    self._open_partition(topic, pi)
        for gid in [gid for gid in self.groups if gid != METADATA_GROUP and gid not in wanted]:
            self._drop_group(gid)

    # ---------------------------------------------------------------------------------------
    # Inputs

    def tick(self) -> None:
        self.ticks += 1
        if self.catchup is not None:
            self.catchup.refill()
        for g in self.groups.values():
            g.raft.tick()
        self._touched.update(self.groups)
        self._check_leases()
        if self.ticks % self.config.broker_heartbeat_ticks == 0:
            self._reconcile_replicas()
        out = self.broker_heartbeat()
        if out is not None:
            targets, hb = out
            self._to_controller.extend((t, hb) for t in targets)

    def step(self, group_id: int, message: Message) -> None:
        """A Raft message from a peer. One addressed to another member (an earlier
        incarnation of this broker, or a confused peer) is dropped."""
        g = self.groups.get(group_id)
        if g is not None and message.dst == g.raft.id:
            g.raft.step(message)
            self._touched.add(group_id)

    def peer_lost(self, node_id: int) -> None:
        """The connection to broker `node_id` broke (its process died, or the link did):
        every group it leads here times out soon instead of after a full election timeout
        (`RaftNode.leader_unreachable`), so a killed leader is replaced in about a tick."""
        for gid, g in self.groups.items():
            leader = g.raft.leader
            if isinstance(leader, tuple) and leader[0] == node_id:
                g.raft.leader_unreachable(leader)
                self._touched.add(gid)

    # ---------------------------------------------------------------------------------------
    # Rounds

    def has_work(self) -> bool:
        if self._completions or self._dropped or self._to_controller or self._compactions:
            return True
        for gid in list(self._touched):
            g = self.groups.get(gid)
            if g is not None and (g.dirty or g.raft.has_ready()):
                return True
            self._touched.discard(gid)  # nothing to do: forget it until touched again
        return False

    def start_round(self) -> Round:
        readies: list[tuple[int, Ready]] = []
        messages: list[Envelope] = []
        apply_states: list[tuple[int, bytes]] = []
        new_offsets: list[tuple[int, int, int, int]] = []
        log_starts: list[tuple[int, int]] = []
        touched, self._touched = sorted(self._touched), set()
        for gid in touched:
            g = self.groups.get(gid)
            if g is None:
                continue
            if g.dirty and g.machine is not None:
                apply_states.append((gid, g.machine.state_bytes()))
                if g.log_start_moved:
                    log_starts.append((gid, g.machine.log_start_offset))
                    g.log_start_moved = False
                new_offsets.extend((gid, b, i, t) for b, i, t in g.new_offsets)
                g.new_offsets = []
                g.dirty = False
            if g.raft.has_ready():
                rd = g.raft.ready()
                readies.append((gid, rd))
                messages.extend(self._envelopes(gid, rd.messages))
        dropped, self._dropped = self._dropped, []
        heartbeats, self._to_controller = self._to_controller, []
        compactions, self._compactions = self._compactions, []
        return Round(
            readies,
            messages,
            apply_states,
            new_offsets,
            dropped,
            heartbeats,
            log_starts=log_starts,
            compactions=compactions,
        )

    def apply_committed(self, rnd: Round) -> list[Completion]:
        """Apply the round's committed partition entries before its write, and complete the
        produces waiting on them.

        Safe because a Ready's committed entries never run ahead of the local log's persisted
        index: they are durable here and on a quorum already. So an acknowledgement does not
        wait for the sync of entries appended in the same round (a leader's round usually
        carries both: the followers' acknowledgements of one batch and the next batch). The
        metadata group, and a Ready that installs a snapshot, still apply in `finish_round`.
        Optional: a runtime that skips it gets the same results from `finish_round`."""
        for gid, rd in rnd.readies:
            g = self.groups.get(gid)
            if (
                gid == METADATA_GROUP
                or g is None
                or not rd.committed_entries
                or rd.snapshot is not None
            ):
                continue
            rnd.applied_early.add(gid)
            for e in rd.committed_entries:
                self._apply_partition(g, e)
            g.raft.advance(rd)
        done, self._completions = self._completions, []
        return done

    def finish_round(self, rnd: Round) -> tuple[list[Envelope], list[Completion]]:
        """The round's write is durable: release acknowledgements, apply, complete."""
        after: list[Envelope] = []
        for gid, rd in rnd.readies:
            g = self.groups.get(gid)
            if g is None:
                continue
            self._touched.add(gid)
            g.raft.persisted(rd.number)
            after.extend(self._envelopes(gid, rd.persisted_messages))
            if rd.soft_state is not None and rd.soft_state.role != Role.LEADER:
                self._fail_waiters(g, ErrorCode.NOT_LEADER_OR_FOLLOWER, "leadership lost")
            if rd.snapshot is not None:
                self._install(g, rd.snapshot)
            if gid in rnd.applied_early:
                continue
            for e in rd.committed_entries:
                if gid == METADATA_GROUP:
                    self._apply_metadata(g, e)
                else:
                    self._apply_partition(g, e)
            g.raft.advance(rd)
        self._after_apply()
        done, self._completions = self._completions, []
        return after, done

    def _envelopes(self, gid: int, msgs: Iterable[Message]) -> list[Envelope]:
        out = []
        for m in msgs:
            dst = m.dst
            assert isinstance(dst, tuple)
            out.append(Envelope(dst[0], gid, m))
        return out

    # ---------------------------------------------------------------------------------------
    # Apply

    def _apply_partition(self, g: _Group, e: Entry) -> None:
        machine = g.machine
        assert machine is not None
        res = machine.apply(e)
        if res.outcome == Outcome.APPENDED:
            g.new_offsets.append(machine.last_indexed())
        g.dirty = True
        if self.config.partition_retention_entries:
            self._retain(g, e.index)
        w = g.waiters.pop(e.index, None)
        if w is None:
            return
        if w.term != e.term:
            self._complete(w, ErrorCode.NOT_LEADER_OR_FOLLOWER, "proposal lost to a new leader")
            return
        self._complete(w, res.error, None, res)

    def _apply_metadata(self, g: _Group, e: Entry) -> None:
        mine = [p for p, (index, _) in self._own.items() if index == e.index]
        if e.kind != EntryKind.NORMAL or not e.data:
            self.meta.applied_index = e.index
            res = None
        else:
            res = self.meta.apply(e.index, e.data)
            if res.error == ErrorCode.NONE:
                self._on_metadata_applied(res, (e.index, e.term))
        for purpose in mine:
            # Applied, or lost to a new leader (another entry holds its index): either way
            # the next round may propose again if it is still needed.
            del self._own[purpose]
        every = self.config.metadata_snapshot_entries
        if every and e.index - g.snapshot_index >= every:
            self._snapshot_metadata(g, e.index)
        w = g.waiters.pop(e.index, None)
        if w is None or res is None:
            return
        if w.term != e.term:
            self._complete(w, ErrorCode.NOT_LEADER_OR_FOLLOWER, "proposal lost to a new leader")
        else:
            self._complete(w, res.error, res.message, res.value)

    # ---------------------------------------------------------------------------------------
    # Snapshots, compaction and retention

    def _conf_at(self, g: _Group, index: int) -> ConfState:
        """The configuration in effect at `index`, which the storage holds (applied entries
        are durable, and nothing at or after its first index - 1 is compacted)."""
        confs = g.storage.initial_state().confs
        conf = confs[0][1]
        for i, c in confs:
            if i > index:
                break
            conf = c
        return conf

    def _snapshot_metadata(self, g: _Group, index: int) -> None:
        """The metadata state just applied `index`: snapshot it, compact behind it."""
        compact_to = max(g.compacted_to, index - self.config.snapshot_catchup_entries)
        data = self.meta.state_bytes()
        self._compactions.append(Compaction(g.id, index, self._conf_at(g, index), data, compact_to))
        g.snapshot_index, g.compacted_to = index, compact_to

    def _retain(self, g: _Group, index: int) -> None:
        """Partition retention, as the machine has just applied `index` (see the module doc):
        compact to the captured snapshot once it is `partition_retention_entries` behind,
        and capture the next one once the log holds that many entries past the compaction
        point. So the log keeps between that many and twice as many entries."""
        keep = self.config.partition_retention_entries
        machine = g.machine
        assert machine is not None
        cap = g.capture
        if cap is not None and index - cap.index >= keep:
            g.capture = None
            machine.retain_from(cap.next_offset)
            g.new_offsets = [o for o in g.new_offsets if o[0] >= cap.next_offset]
            g.log_start_moved = True
            conf = self._conf_at(g, cap.index)
            self._compactions.append(Compaction(g.id, cap.index, conf, cap.data, cap.index))
            g.snapshot_index = g.compacted_to = cap.index
        if g.capture is None and index - g.compacted_to >= keep:
            g.capture = _Capture(index, machine.snapshot_bytes(), machine.next_offset)

    def _install(self, g: _Group, snap: Snapshot) -> None:
        """A snapshot received from the leader is durable: restore the group's machine from
        it (the Raft log is now the snapshot; entries after it follow by append)."""
        index = snap.meta.index
        for i in sorted(i for i in g.waiters if i <= index):
            self._complete(
                g.waiters.pop(i),
                ErrorCode.NOT_LEADER_OR_FOLLOWER,
                "proposal covered by a snapshot from the leader; its outcome is unknown here",
            )
        g.snapshot_index = g.compacted_to = index
        g.capture = None
        self._compactions = [c for c in self._compactions if c.group_id != g.id]
        if g.id == METADATA_GROUP:
            self.meta.restore(snap.data)
            for purpose in [p for p, (i, _) in self._own.items() if i <= index]:
                del self._own[purpose]
            self._sync_partitions()
            return
        old = g.machine
        assert old is not None
        machine = PartitionMachine(old.config)
        machine.restore_snapshot(snap.data)
        assert machine.applied_index == index, "a partition snapshot is its state at its index"
        g.machine = machine
        g.new_offsets = []
        g.dirty = g.log_start_moved = True

    def _on_metadata_applied(self, res: MetaResult, position: tuple[int, int]) -> None:
        value = res.value
        if isinstance(value, TopicInfo):
            if value.name in self.meta.topics:
                for pi in value.partitions:
                    if self.config.node_id in pi.replicas:
                        self._open_partition(value, pi)
            else:
                for pi in value.partitions:
                    self._drop_group(pi.group_id)
        elif isinstance(value, tuple) and len(value) == 3 and position == self._own.get("pids"):
            # Only the block this incarnation asked for: a block replayed from before a
            # restart was handed out then, and must never be handed out again.
            _, start, count = value
            self._pid_next, self._pid_end = start, start + count

    def _after_apply(self) -> None:
        mg = self.metadata_group
        if (
            mg is not None
            and mg.serving()
            and self.meta.cluster_id is None
            and self._bootstrap_cluster_id is not None
        ):
            self._propose_own("init", cmd_init(self._bootstrap_cluster_id))
        self._serve_producer_ids()
        for (token, slot), topic in list(self._pending_creates.items()):
            if topic not in self.meta.topics:
                del self._pending_creates[(token, slot)]
                self._completions.append(
                    Completion(
                        token,
                        slot,
                        ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                        "topic deleted before its partitions had leaders",
                    )
                )
            elif self.topic_led(topic):
                del self._pending_creates[(token, slot)]
                self._completions.append(Completion(token, slot, ErrorCode.NONE))

    @property
    def registered(self) -> bool:
        """The metadata log holds this broker as it advertises itself now."""
        return self.meta.brokers.get(self.config.node_id) == self.advertised

    def _propose_own(self, purpose: str, data: bytes) -> None:
        """Propose a command of this broker's own, unless one for `purpose` is in flight."""
        if purpose in self._own:
            return
        index = self._propose_meta(data)
        if index is not None and self.metadata_group is not None:
            self._own[purpose] = (index, self.metadata_group.raft.term)

    def _propose_meta(self, data: bytes) -> int | None:
        if self.metadata_group is None:
            return None
        try:
            index = self.metadata_group.raft.propose(data)
            self._touched.add(METADATA_GROUP)
            return index
        except ProposalDropped:
            return None

    # ---------------------------------------------------------------------------------------
    # Waiters and completions

    def _complete(
        self, w: _Waiter, error: ErrorCode, message: str | None, value: Any = None
    ) -> None:
        self._completions.append(Completion(w.token, w.slot, error, message, value))

    def _fail_waiters(self, g: _Group, error: ErrorCode, message: str) -> None:
        for w in g.waiters.values():
            self._complete(w, error, message)
        g.waiters.clear()

    def cancel(self, token: int) -> None:
        """The runtime gave up on an operation (timeout, connection closed)."""
        for g in self.groups.values():
            for index in [i for i, w in g.waiters.items() if w.token == token]:
                del g.waiters[index]
        for key in [k for k in self._pending_creates if k[0] == token]:
            del self._pending_creates[key]
        self._pid_waiting = [(t, s) for t, s in self._pid_waiting if t != token]

    def _propose_waiting(
        self, g: _Group, data: bytes, token: int, slot: int
    ) -> tuple[ErrorCode, str | None]:
        try:
            index = g.raft.propose(data)
            self._touched.add(g.id)
        except ProposalDropped as e:
            if e.reason == DropReason.BACKPRESSURE:
                return ErrorCode.BACKPRESSURE, "too many uncommitted bytes; retry"
            return ErrorCode.NOT_LEADER_OR_FOLLOWER, str(e)
        g.waiters[index] = _Waiter(token, slot, g.raft.term)
        return ErrorCode.NONE, None

    # ---------------------------------------------------------------------------------------
    # Client operations

    def _partition_group(self, topic: str, partition: int) -> tuple[ErrorCode, _Group | None]:
        if self.meta.partition(topic, partition) is None:
            return ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, None
        g = self.by_partition.get((topic, partition))
        if g is None or g.raft.role != Role.LEADER:
            return ErrorCode.NOT_LEADER_OR_FOLLOWER, None
        if not g.serving():
            return ErrorCode.LEADER_NOT_AVAILABLE, None
        return ErrorCode.NONE, g

    def produce(
        self, token: int, slot: int, topic: str, partition: int, batch: bytes
    ) -> tuple[ErrorCode, str | None]:
        """Propose one batch; NONE means a Completion with its ApplyResult will follow."""
        err, g = self._partition_group(topic, partition)
        if g is None:
            return err, None
        assert g.machine is not None
        try:
            g.machine.validate(batch)
        except BatchError as e:
            return e.code, e.message
        return self._propose_waiting(g, batch, token, slot)

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
        """Whole batches from `offset` up to the high watermark (read_committed: the last
        stable offset, equal to it until transactions exist), within max_bytes; with
        `min_one`, the first batch even if it alone is larger (so a consumer never stalls).
        OFFSET_OUT_OF_RANGE outside [log start offset, high watermark] (below it: deleted by
        retention; the answer carries the log start offset to move to)."""
        err, g = self._partition_group(topic, partition)
        if g is None:
            return FetchResult(err)
        m = g.machine
        assert m is not None
        hw = m.high_watermark
        base = FetchResult(ErrorCode.NONE, hw, hw, m.log_start_offset)
        err, pos = m.locate(offset)
        if err != ErrorCode.NONE:
            return FetchResult(
                err,
                hw,
                hw,
                m.log_start_offset,
                message=f"offset {offset} not in [{m.log_start_offset}, {hw}]",
            )
        if pos < 0:
            return base
        batches: list[tuple[int, bytes]] = []
        size = 0
        log = g.raft.log
        for base_offset, raft_index, _ in m.index.items(pos):
            got = log.slice(raft_index, raft_index + 1)
            if not got:
                break  # cannot happen: the index lists only batches the log holds
            data = got[0].data
            if (batches or not min_one) and size + len(data) > max_bytes:
                break
            batches.append((base_offset, data))
            size += len(data)
            if size >= max_bytes:
                break
        return FetchResult(ErrorCode.NONE, hw, hw, m.log_start_offset, tuple(batches))

    def fetch_watch(self, topic: str, partition: int) -> tuple[int, int, bool]:
        """(high watermark, Raft term, serving) of a hosted partition; (-1, -1, False) for
        one this broker does not host."""
        g = self.by_partition.get((topic, partition))
        if g is None or g.machine is None:
            return (-1, -1, False)
        return (g.machine.high_watermark, g.raft.term, g.serving())

    def high_watermark(self, topic: str, partition: int) -> int:
        g = self.by_partition.get((topic, partition))
        return g.machine.high_watermark if g is not None and g.machine is not None else -1

    def list_offset(self, topic: str, partition: int, timestamp: int) -> tuple[ErrorCode, int]:
        err, g = self._partition_group(topic, partition)
        if g is None:
            return err, -1
        m = g.machine
        assert m is not None
        if timestamp == -1:
            return ErrorCode.NONE, m.high_watermark
        if timestamp == -2:
            return ErrorCode.NONE, m.log_start_offset
        return ErrorCode.NONE, m.offset_for_timestamp(timestamp)

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
        err, msg = self._propose_waiting(
            mg, cmd_create_topic(name, partitions, replication_factor, config), token, slot
        )
        return err, msg

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
        return self._propose_waiting(mg, cmd_delete_topic(name), token, slot)

    def init_producer_id(self, token: int, slot: int) -> None:
        """A new producer id: from this broker's block, or once a new block is allocated."""
        self._pid_waiting.append((token, slot))
        self._serve_producer_ids()

    def _serve_producer_ids(self) -> None:
        while self._pid_waiting and self._pid_next < self._pid_end:
            token, slot = self._pid_waiting.pop(0)
            self._completions.append(Completion(token, slot, ErrorCode.NONE, None, self._pid_next))
            self._pid_next += 1
        mg = self.metadata_group
        if self._pid_waiting and mg is not None and mg.serving():
            self._propose_own("pids", cmd_alloc_producer_ids(self.config.node_id))

    # ---------------------------------------------------------------------------------------
    # Views

    def topic_led(self, name: str) -> bool:
        t = self.meta.topics.get(name)
        if t is None:
            return False
        return all(self.partition_view(pi).leader is not None for pi in t.partitions)

    def partition_view(self, pi: PartitionInfo) -> PartitionView:
        """Leader and term as this broker knows them: its own group when it holds a replica
        (a leader counts only once it serves), else the leader last reported in the
        metadata log; the newer term wins, so a client never steps back. A report naming this
        broker is ignored: a deposed leader must not point clients at itself."""
        g = self.groups.get(pi.group_id)
        leader: int | None = None
        term = -1
        if g is not None:
            term = g.raft.term
            lead = g.raft.leader
            if isinstance(lead, tuple) and (lead != self.config.member or g.serving()):
                leader = lead[0]
        reported = self.meta.leaders.get(pi.group_id)
        if (
            reported is not None
            and reported[1] != self.config.member[0]  # about itself its own group knows best
            and (reported[0] > term or (leader is None and reported[0] >= term))
        ):
            term, leader = reported
            if not self.meta.alive.get(leader, False):
                leader = None  # its broker is known to be down: no leader to point to
        return PartitionView(pi.partition, leader, term, pi.replicas)

    def leader_hint(self, topic: str, partition: int) -> tuple[int | None, int]:
        """(leader, term) of a partition as this broker knows it, for NOT_LEADER answers;
        (None, -1) for an unknown partition."""
        pi = self.meta.partition(topic, partition)
        if pi is None:
            return None, -1
        view = self.partition_view(pi)
        return view.leader, view.leader_term

    @property
    def controller(self) -> int | None:
        mg = self.metadata_group
        lead = mg.raft.leader if mg is not None else None
        return lead[0] if isinstance(lead, tuple) else None

    def is_ready(self) -> bool:
        """Caught up with the metadata log, registered, and every hosted partition led."""
        mg = self.metadata_group
        if mg is None or self.controller is None or self.meta.cluster_id is None:
            return False
        if mg.raft.log.applied < mg.raft.commit_index or not self.registered:
            return False
        return all(
            self.partition_view(self.meta.topics[g.topic].partitions[g.partition]).leader
            is not None
            for g in self.by_partition.values()
            if g.topic in self.meta.topics
        )

    def stats(self) -> dict[str, int]:
        return {
            "groups": len(self.groups),
            "leaders": sum(1 for g in self.groups.values() if g.raft.is_leader),
            "waiters": sum(len(g.waiters) for g in self.groups.values()),
        }
