"""BrokerNode: every Raft group of one broker and their state machines, as one pure object.

Theory of operation
-------------------
A broker hosts the metadata group (id 0) and one group per partition replica it holds. The
runtime drives the node in rounds, and every round has the shape of the Raft Ready protocol,
batched across all groups:

1. `start_round()` takes a Ready from every group that has one (and the state-machine writes
   left by the previous round's applies) and returns a `Round`: messages that may leave at
   once, and everything to persist, which the runtime writes in ONE synced write;
2. `finish_round(round)` is called once that write is durable: each group hears
   `persisted(n)`, the messages that had to wait for it are returned, committed entries are
   applied to the state machines, and the operations waiting on them complete.

Client operations enter as calls (`produce`, `create_topic`, ...) carrying an opaque token;
those that wait for a commit complete later as `Completion`s of a round. Reads (`fetch`,
`list_offsets`, `metadata`) answer at once from applied state. A new leader serves nothing and
reports no leader until the no-op of its term has committed, so the high watermark it reports
never goes back across a failover.

Members of every Raft group are (node id, incarnation) pairs. Group ids come from the
metadata state machine; a partition group is opened when a `create_topic` naming this broker
as a replica is applied (its first replica campaigns at once), and dropped when the topic is
deleted.
"""

from __future__ import annotations

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
)
from broker.core.partition import Outcome, PartitionConfig, PartitionMachine
from broker.core.raft import (
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
    default_partitions: int = 1
    default_replication_factor: int = 1
    partition: PartitionConfig = field(default_factory=PartitionConfig)

    @property
    def member(self) -> Member:
        return (self.node_id, self.incarnation)


@dataclass(frozen=True, slots=True)
class Envelope:
    """A Raft message for group `group_id` on broker `dst`."""

    dst: int
    group_id: int
    message: Message


@dataclass(slots=True)
class Round:
    readies: list[tuple[int, Ready]]
    messages: list[Envelope]
    apply_states: list[tuple[int, bytes]]
    new_offsets: list[tuple[int, int, int, int]]
    """(group, base offset, raft index, max timestamp) of batches indexed last round."""
    dropped_groups: list[int]


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


@dataclass(slots=True)
class _Waiter:
    token: int
    slot: int
    term: int


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
        controllers: Iterable[Member] | None = None,
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
        self._dropped: list[int] = []
        self._pending_creates: dict[tuple[int, int], str] = {}
        """(token, slot) -> topic of create_topic requests waiting for their leaders."""
        self._pid_next = 0
        self._pid_end = 0
        self._pid_waiting: list[tuple[int, int]] = []
        self._own: dict[str, tuple[int, int]] = {}
        """Purpose ("init", "register", "pids") -> (index, term) of this incarnation's own
        metadata proposal still waiting to be applied: one at a time per purpose."""
        self._bootstrap_cluster_id = bootstrap_cluster_id
        voters = frozenset(controllers) if controllers else frozenset({config.member})
        fresh = not store.has_group(METADATA_GROUP)
        self.metadata_group = self._open_group(
            METADATA_GROUP, ConfState(voters) if fresh else None, applied=0
        )
        if config.member in voters and len(voters) == 1:
            self.metadata_group.raft.campaign()

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
            applied=applied,
        )

    def _open_group(self, gid: int, initial: ConfState | None, applied: int) -> _Group:
        storage = self.store.open_group(gid, initial)
        raft = RaftNode(self._raft_config(applied), storage, self.rng)
        g = _Group(gid, raft, storage)
        self.groups[gid] = g
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
        default = self.config.partition
        pconf = PartitionConfig(
            max_message_bytes=int(topic.config.get("max.message.bytes", default.max_message_bytes)),
            producer_expiry_ms=default.producer_expiry_ms,
            limits=default.limits,
        )
        machine = PartitionMachine(pconf)
        if not fresh:
            machine.restore(
                self.store.load_apply_state(pi.group_id), self.store.load_offsets(pi.group_id)
            )
        g = self._open_group(
            pi.group_id, ConfState(frozenset(members)) if fresh else None, machine.applied_index
        )
        g.topic, g.partition, g.machine = topic.name, pi.partition, machine
        self.by_partition[(topic.name, pi.partition)] = g
        if pi.replicas[0] == self.config.node_id:
            g.raft.campaign()  # the preferred leader does not wait for an election timeout

    def _drop_group(self, gid: int) -> None:
        g = self.groups.pop(gid, None)
        if g is None:
            return
        if g.topic is not None:
            self.by_partition.pop((g.topic, g.partition), None)
        self._fail_waiters(g, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, "topic deleted")
        self._dropped.append(gid)

    # ---------------------------------------------------------------------------------------
    # Inputs

    def tick(self) -> None:
        for g in self.groups.values():
            g.raft.tick()

    def step(self, group_id: int, message: Message) -> None:
        g = self.groups.get(group_id)
        if g is not None:
            g.raft.step(message)

    # ---------------------------------------------------------------------------------------
    # Rounds

    def has_work(self) -> bool:
        return bool(self._completions or self._dropped) or any(
            g.raft.has_ready() or g.dirty for g in self.groups.values()
        )

    def start_round(self) -> Round:
        readies: list[tuple[int, Ready]] = []
        messages: list[Envelope] = []
        apply_states: list[tuple[int, bytes]] = []
        new_offsets: list[tuple[int, int, int, int]] = []
        for gid, g in self.groups.items():
            if g.dirty and g.machine is not None:
                apply_states.append((gid, g.machine.state_bytes()))
                new_offsets.extend((gid, b, i, t) for b, i, t in g.new_offsets)
                g.new_offsets = []
                g.dirty = False
            if g.raft.has_ready():
                rd = g.raft.ready()
                readies.append((gid, rd))
                messages.extend(self._envelopes(gid, rd.messages))
        dropped, self._dropped = self._dropped, []
        return Round(readies, messages, apply_states, new_offsets, dropped)

    def finish_round(self, rnd: Round) -> tuple[list[Envelope], list[Completion]]:
        """The round's write is durable: release acknowledgements, apply, complete."""
        after: list[Envelope] = []
        for gid, rd in rnd.readies:
            g = self.groups.get(gid)
            if g is None:
                continue
            g.raft.persisted(rd.number)
            after.extend(self._envelopes(gid, rd.persisted_messages))
            if rd.soft_state is not None and rd.soft_state.role != Role.LEADER:
                self._fail_waiters(g, ErrorCode.NOT_LEADER_OR_FOLLOWER, "leadership lost")
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
        w = g.waiters.pop(e.index, None)
        if w is None or res is None:
            return
        if w.term != e.term:
            self._complete(w, ErrorCode.NOT_LEADER_OR_FOLLOWER, "proposal lost to a new leader")
        else:
            self._complete(w, res.error, res.message, res.value)

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
        if self.metadata_group.serving():
            if self.meta.cluster_id is None and self._bootstrap_cluster_id is not None:
                self._propose_own("init", cmd_init(self._bootstrap_cluster_id))
            if self.meta.cluster_id is not None and not self.registered:
                self._propose_own("register", cmd_register_broker(self.advertised))
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
        if index is not None:
            self._own[purpose] = (index, self.metadata_group.raft.term)

    def _propose_meta(self, data: bytes) -> int | None:
        try:
            return self.metadata_group.raft.propose(data)
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
        `min_one`, the first batch even if it alone is larger (so a consumer never stalls)."""
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
                err, hw, hw, m.log_start_offset, message=f"offset {offset} not in [0, {hw}]"
            )
        if pos < 0:
            return base
        batches: list[tuple[int, bytes]] = []
        size = 0
        log = g.raft.log
        for base_offset, raft_index, _ in m.index.items(pos):
            got = log.slice(raft_index, raft_index + 1)
            if not got:
                break  # compacted away under us (retention)
            data = got[0].data
            if (batches or not min_one) and size + len(data) > max_bytes:
                break
            batches.append((base_offset, data))
            size += len(data)
            if size >= max_bytes:
                break
        return FetchResult(ErrorCode.NONE, hw, hw, m.log_start_offset, tuple(batches))

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
        if not mg.serving():
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
        if not mg.serving():
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
        if self._pid_waiting and self.metadata_group.serving():
            self._propose_own("pids", cmd_alloc_producer_ids(self.config.node_id))

    # ---------------------------------------------------------------------------------------
    # Views

    def topic_led(self, name: str) -> bool:
        t = self.meta.topics.get(name)
        if t is None:
            return False
        return all(self.partition_view(pi).leader is not None for pi in t.partitions)

    def partition_view(self, pi: PartitionInfo) -> PartitionView:
        g = self.groups.get(pi.group_id)
        leader: int | None = None
        term = -1
        if g is not None:
            term = g.raft.term
            lead = g.raft.leader
            if isinstance(lead, tuple) and (lead != self.config.member or g.serving()):
                leader = lead[0]
        return PartitionView(pi.partition, leader, term, pi.replicas)

    @property
    def controller(self) -> int | None:
        lead = self.metadata_group.raft.leader
        return lead[0] if isinstance(lead, tuple) else None

    def is_ready(self) -> bool:
        """Caught up with the metadata log, registered, and every hosted partition led."""
        mg = self.metadata_group
        if self.controller is None or self.meta.cluster_id is None:
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
