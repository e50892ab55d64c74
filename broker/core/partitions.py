"""PartitionService: the partition groups this broker holds replicas of, and their data path.

A partition group is opened when the metadata log gives this broker a replica of it (its
first replica campaigns at once) and dropped when its topic is deleted. Its machine is the
kind the registry names for its topic (the partition log unless another kind claims the
topic). Produce proposes a batch to the partition's serving leader; fetch and list offsets
answer at once from the applied state; a leader whose term's no-op has not committed serves
nothing (LEADER_NOT_AVAILABLE), so the high watermark it reports never goes back.

Retention (retention.py): a partition's leader proposes the log start offset its topic's
retention.ms / retention.bytes allow, every replica applies it, and each compacts its Raft
log behind it (`RetentionPolicy`, also the broker-wide `partition_retention_entries`). A
partition snapshot's index is its compaction point, so a replica that installs it receives
every retained entry after it by append.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Protocol

from broker.core.compaction import check_keys
from broker.core.context import NodeContext
from broker.core.host import HostedGroup, SnapshotPolicy
from broker.core.ids import NO_OFFSET, NO_TERM, Member
from broker.core.machine import GroupContext, MachineKind, MachineRegistry
from broker.core.metadata import INTERNAL_PREFIX, METADATA_GROUP, PartitionInfo, TopicInfo
from broker.core.partition import PartitionConfig, PartitionMachine
from broker.core.raft import ConfState, LogStorage, Role
from broker.core.retention import RetentionPolicy, RetentionSettings
from broker.core.snapshot_policies import NoSnapshots, PeriodicSnapshots
from broker.core.txn.aborted import is_aborted
from broker.wire.batch import BatchError, BatchHeader, parse_header
from broker.wire.errors import ErrorCode
from broker.wire.limits import INT32_MAX, MAX_FRAME_BYTES_CEILING, Limits
from broker.wire.messages import EARLIEST_TIMESTAMP, LATEST_TIMESTAMP

_STORED = Limits(max_batch_bytes=MAX_FRAME_BYTES_CEILING, max_batch_records=INT32_MAX)
"""Stored batches were checked on the way in; reading one back checks only its shape."""


def _header(data: bytes) -> BatchHeader | None:
    """A stored batch's header; None when it does not parse (a damaged disk: the batch is
    served as it is and the reader reports it)."""
    try:
        return parse_header(data, _STORED, check_crc=False)
    except BatchError:
        return None


def _record_count(data: bytes) -> int:
    """A stored batch's record count (0 for a damaged one: the reader stops at its base
    offset)."""
    h = _header(data)
    return 0 if h is None else h.record_count


class GroupStore(Protocol):
    """The runtime's storage as the node sees it: read-only, like LogStorage."""

    def open_group(self, group_id: int, initial: ConfState | None) -> LogStorage:
        """The group's log storage; `initial` seeds a group that has none on disk."""
        ...

    def has_group(self, group_id: int) -> bool: ...

    def load_apply_state(self, group_id: int) -> bytes | None: ...

    def load_records(self, group_id: int) -> Iterable[tuple[int, bytes]]:
        """The machine's keyed records (key ascending), as its writes left them."""
        ...


@dataclass(frozen=True, slots=True)
class FetchResult:
    error: ErrorCode
    high_watermark: int = NO_OFFSET
    last_stable_offset: int = NO_OFFSET
    log_start_offset: int = NO_OFFSET
    batches: tuple[tuple[int, bytes], ...] = ()
    message: str | None = None
    next_offset: int = NO_OFFSET
    """Where the reader continues: past the last batch served or left out."""

    @property
    def size(self) -> int:
        return sum(len(b) for _, b in self.batches)


def log_kind(defaults: PartitionConfig) -> MachineKind:
    """The partition log: records in, offsets out (broker/core/partition.py)."""

    def create(gc: GroupContext) -> PartitionMachine:
        max_bytes = gc.config.get("max.message.bytes")
        return PartitionMachine(
            PartitionConfig(
                max_message_bytes=(
                    int(max_bytes) if max_bytes is not None else defaults.max_message_bytes
                ),
                producer_expiry_ms=defaults.producer_expiry_ms,
                limits=defaults.limits,
            )
        )

    return MachineKind("partition-log", create)


MOVED_REPLICA_KEEP_TICKS = 1200
"""How long a replica moved off this broker keeps its storage (60 s at 50 ms ticks): a broker
replaying older metadata (a restart, a partition healing) drops a replica that newer commands
give back; opened again within this time it keeps its log, so its member id never comes back
empty while a leader still counts its old progress."""


class MembershipSteps(Protocol):
    """Who takes a partition leader's membership steps (reassignment.py `Reassignments`)."""

    def step(self, g: HostedGroup, pi: PartitionInfo) -> None: ...


class PartitionService:
    def __init__(
        self,
        ctx: NodeContext,
        store: GroupStore,
        registry: MachineRegistry,
        steps: MembershipSteps,
    ) -> None:
        self.ctx = ctx
        self.store = store
        self.registry = registry
        self.steps = steps
        self.moving: set[int] = set()
        """Partition groups with a reassignment in progress: reconciled at every pass, awake
        or not."""
        self.by_partition: dict[tuple[str, int], HostedGroup] = {}
        self._by_topic: dict[str, dict[int, HostedGroup]] = {}
        """by_partition per topic (in the same order), so one topic's groups are found
        without a scan of all."""

    # -- groups -----------------------------------------------------------------------------

    def open(self, topic: TopicInfo, pi: PartitionInfo) -> None:
        """Open the replica of `pi` this broker holds (no-op if open, or if placement named a
        broker this node does not know yet)."""
        ctx = self.ctx
        if pi.group_id in ctx.host.groups:
            return
        members = []
        for r in pi.replicas:
            b = ctx.meta.brokers.get(r)
            if b is None:
                return
            members.append(Member(b.id, b.incarnation))
        fresh = not self.store.has_group(pi.group_id)
        # A group created for an earlier incarnation of this broker (its data directory was
        # lost since): join it empty, as a non-member, until its leader adds this incarnation
        # (`reconcile`); the configuration arrives with the log.
        mine = ctx.config.member in members
        initial = ConfState(frozenset(members) if mine else frozenset())
        storage = self.store.open_group(pi.group_id, initial if fresh else None)
        kind = self.registry.kind_for(topic.name)
        gc = GroupContext(pi.group_id, topic.name, pi.partition, topic.config)
        machine = kind.create(gc)
        from_snapshot = False
        if not fresh:
            machine.load(
                self.store.load_apply_state(pi.group_id), self.store.load_records(pi.group_id)
            )
            snap = storage.snapshot()
            if snap.meta.index > machine.applied_index:
                # Compacted past the persisted apply state (a crash between the two writes,
                # or an install whose apply state was not written yet): the snapshot it is.
                machine = kind.create(gc)
                machine.restore_snapshot(snap.data)
                from_snapshot = True
        # A replica deleted when it moved away comes back empty under the same member id:
        # it must not vote before its group adds it again (RaftConfig.member_votes).
        g = ctx.host.open(
            pi.group_id, storage, kind, machine, self._policy(kind, topic), member_votes=True
        )
        g.topic, g.partition = topic.name, pi.partition
        g.dirty = from_snapshot  # persist the restored state, drop the records it lacks
        self.by_partition[(topic.name, pi.partition)] = g
        self._by_topic.setdefault(topic.name, {})[pi.partition] = g
        if pi.replicas[0] == ctx.config.node_id:
            g.raft.campaign()  # the preferred leader does not wait for an election timeout
        elif fresh:
            # Its first campaign may reach replicas that have not opened the group yet: the
            # others wait an extra election timeout, so it also wins with its second one and
            # initial leaders stay spread as placement chose.
            g.raft.delay_election(2 * ctx.config.election_ticks)

    def _policy(self, kind: MachineKind, topic: TopicInfo) -> SnapshotPolicy:
        c = self.ctx.config
        if kind is not self.registry.default:
            return PeriodicSnapshots(c.metadata_snapshot_entries, c.snapshot_catchup_entries)
        spaced = RetentionSettings.of(topic).active
        if c.partition_retention_entries or spaced:
            return RetentionPolicy(c.partition_retention_entries, spaced)
        return NoSnapshots()

    def drop(
        self,
        gid: int,
        why: str = "topic deleted",
        error: ErrorCode = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
        keep_ticks: int = 0,
    ) -> None:
        """Stop hosting `gid`: its waiters fail with `error`, its storage is deleted (after
        `keep_ticks` unless it is opened again: GroupHost.drop)."""
        self.moving.discard(gid)
        g = self.ctx.host.drop(gid, error, why, keep_ticks=keep_ticks)
        if g is not None and g.topic is not None:
            self.by_partition.pop((g.topic, g.partition), None)
            of_topic = self._by_topic.get(g.topic, {})
            of_topic.pop(g.partition, None)
            if not of_topic:
                self._by_topic.pop(g.topic, None)

    def on_topic(self, topic: TopicInfo) -> None:
        """A create, alter or delete of `topic` applied: open the partitions this broker
        hosts (an alter's new ones), give the open ones the topic's settings, or drop them."""
        if topic.name in self.ctx.meta.topics:
            raw = topic.config.get("max.message.bytes")
            limit = int(raw) if raw is not None else self.ctx.config.partition.max_message_bytes
            for g in self.topic_groups(topic.name):
                if isinstance(g.machine, PartitionMachine):
                    g.machine.config = replace(g.machine.config, max_message_bytes=limit)
            for pi in topic.partitions:
                if self.ctx.config.node_id in pi.hosts:
                    self.open(topic, pi)
        else:
            for pi in topic.partitions:
                self.drop(pi.group_id)

    def sync(self) -> None:
        """Open every partition group the metadata state has this broker host (a replica, or
        a reassignment's target), and drop every open one it no longer hosts (its topic was
        deleted, or a reassignment moved the replica away: dropped once this broker is not
        a member of its own configuration, or the reassignment is over, so a group never
        loses a voter it may still need: a learner's leader, its metadata behind, may still
        promote it). Called at restart, after a metadata snapshot install and after every
        reassignment command."""
        ctx = self.ctx
        me = ctx.config.node_id
        hosted: dict[int, PartitionInfo] = {}
        self.moving.clear()
        for topic in ctx.meta.topics.values():
            for pi in topic.partitions:
                hosted[pi.group_id] = pi
                if pi.target is not None:
                    self.moving.add(pi.group_id)
                if me in pi.hosts:
                    self.open(topic, pi)
        for gid, g in list(ctx.host.groups.items()):
            if gid == METADATA_GROUP:
                continue
            held = hosted.get(gid)
            if held is None:
                self.drop(gid)
            elif me not in held.hosts and (
                held.target is None or not g.raft.conf.is_member(g.raft.id)
            ):
                why = "the partition's replica moved off this broker"
                self.drop(gid, why, ErrorCode.NOT_LEADER_OR_FOLLOWER, MOVED_REPLICA_KEEP_TICKS)

    def reconcile(self, groups: Iterable[HostedGroup] | None = None) -> None:
        """Partition leaders: step each group's members toward what the metadata log wants
        (reassignment.py): its desired replicas at their registered incarnations (a broker
        whose data directory was lost registers a new incarnation, and the leader of every
        group it held carries out the replacement). `groups`: only these (the awake ones;
        None: every partition group); the groups moving are always stepped."""
        ctx = self.ctx
        chosen = list(self.by_partition.values()) if groups is None else list(groups)
        if groups is not None and self.moving:
            seen = {g.id for g in chosen}
            chosen += [
                g for gid in self.moving
                if gid not in seen and (g := ctx.host.groups.get(gid)) is not None
            ]  # fmt: skip
        for g in chosen:
            if not g.serving() or g.topic is None:
                continue
            pi = ctx.meta.partition(g.topic, g.partition)
            if pi is not None:
                self.steps.step(g, pi)

    def topic_groups(self, topic: str) -> list[HostedGroup]:
        """The groups of `topic`'s partitions this broker holds, in `by_partition`'s order."""
        return list(self._by_topic.get(topic, {}).values())

    def hosted(self) -> list[tuple[str, int]]:
        return list(self.by_partition)

    # -- the data path ----------------------------------------------------------------------

    def serving_log(
        self, topic: str, partition: int
    ) -> tuple[ErrorCode, str | None, HostedGroup | None]:
        """The serving leader's group of a partition log, or why there is none."""
        if self.ctx.meta.partition(topic, partition) is None:
            return ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, None, None
        g = self.by_partition.get((topic, partition))
        if g is None or g.raft.role != Role.LEADER:
            return ErrorCode.NOT_LEADER_OR_FOLLOWER, None, None
        if not g.serving():
            return ErrorCode.LEADER_NOT_AVAILABLE, None, None
        if not isinstance(g.machine, PartitionMachine):
            return ErrorCode.INVALID_TOPIC, f"{topic!r} runs {g.kind.name}, not a log", None
        return ErrorCode.NONE, None, g

    def produce(
        self, token: int, slot: int, topic: str, partition: int, batch: bytes
    ) -> tuple[ErrorCode, str | None]:
        """Propose one batch; NONE means a Completion with its ApplyResult will follow. A
        compacted topic's batch needs a key on every record (INVALID_RECORD)."""
        if topic.startswith(INTERNAL_PREFIX):
            return ErrorCode.INVALID_TOPIC, f"topic {topic!r} is internal: clients cannot write it"
        err, msg, g = self.serving_log(topic, partition)
        if g is None:
            return err, msg
        assert isinstance(g.machine, PartitionMachine)
        try:
            g.machine.validate(batch)
            if self.ctx.meta.topics[topic].setting("cleanup.policy") == "compact":
                check_keys(batch)
        except BatchError as e:
            return e.code, e.message
        return self.ctx.host.propose_waiting(g, batch, token, slot)

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
        """Whole batches from `offset` up to the high watermark (read_committed: up to the
        last stable offset, without control batches and aborted transactions' data), within
        max_bytes; with
        `min_one`, the first batch even if it alone is larger (so a consumer never stalls).
        OFFSET_OUT_OF_RANGE outside [log start offset, high watermark] (below it: deleted by
        retention; the answer carries the log start offset to move to). A compacted topic
        serves below its raw log start from its kept records (compaction.py)."""
        err, msg, g = self.serving_log(topic, partition)
        if g is None:
            return FetchResult(err, message=msg)
        m = g.machine
        assert isinstance(m, PartitionMachine)
        hw, first, lso = m.high_watermark, m.first_offset, m.last_stable_offset
        batches: list[tuple[int, bytes]] = []
        size = 0
        if m.kept is not None and first <= offset < m.log_start_offset:
            batches, size, offset = m.kept.batches(offset, m.log_start_offset, max_bytes, min_one)
            if offset < m.log_start_offset:  # max_bytes reached
                return FetchResult(
                    ErrorCode.NONE, hw, lso, first, tuple(batches), next_offset=offset
                )
        err, pos = m.locate(offset)
        if err != ErrorCode.NONE:
            return FetchResult(
                err, hw, hw, first, message=f"offset {offset} not in [{first}, {hw}]"
            )
        if pos < 0 or (read_committed and offset >= lso):
            return FetchResult(ErrorCode.NONE, hw, lso, first, tuple(batches), next_offset=offset)
        end = lso if read_committed else hw
        # read_committed on a partition that saw transactions: each batch's header decides
        # (control batches and aborted transactions' data are left out; the answer's
        # next offset moves past them, so a consumer never stalls on a filtered stretch).
        ranges = m.aborted.covering(offset, end) if read_committed and m.aborted else None
        screen = read_committed and (ranges is not None or bool(m.ledger.producers))
        next_offset = offset
        log = g.raft.log
        for base_offset, raft_index, _ in m.index.items(pos):
            if base_offset >= end:
                break
            got = log.slice(raft_index, raft_index + 1)
            if not got:
                break  # cannot happen: the index lists only batches the log holds
            data = got[0].data
            count = -1
            h = _header(data) if screen else None
            if h is not None:
                count = h.record_count
                if h.is_control or (
                    ranges is not None and is_aborted(ranges, h.producer_id, base_offset)
                ):
                    next_offset = base_offset + count
                    continue
            if (batches or not min_one) and size + len(data) > max_bytes:
                break
            batches.append((base_offset, data))
            next_offset = base_offset + (count if count >= 0 else _record_count(data))
            size += len(data)
            if size >= max_bytes:
                break
        return FetchResult(ErrorCode.NONE, hw, lso, first, tuple(batches), next_offset=next_offset)

    def _machine(self, topic: str, partition: int) -> tuple[HostedGroup, PartitionMachine] | None:
        g = self.by_partition.get((topic, partition))
        if g is None or not isinstance(g.machine, PartitionMachine):
            return None
        return g, g.machine

    def fetch_watch(self, topic: str, partition: int) -> tuple[int, int, bool]:
        """(high watermark, Raft term, serving) of a hosted partition; (NO_OFFSET, NO_TERM,
        False) for one this broker does not host."""
        found = self._machine(topic, partition)
        if found is None:
            return (NO_OFFSET, NO_TERM, False)
        g, m = found
        return (m.high_watermark, g.raft.term, g.serving())

    def high_watermark(self, topic: str, partition: int) -> int:
        found = self._machine(topic, partition)
        return NO_OFFSET if found is None else found[1].high_watermark

    def list_offset(
        self, topic: str, partition: int, timestamp: int, read_committed: bool = False
    ) -> tuple[ErrorCode, int]:
        """The offset for `timestamp`: latest is the last stable offset for read_committed
        (what such a reader can reach), the high watermark otherwise."""
        err, _, g = self.serving_log(topic, partition)
        if g is None:
            return err, NO_OFFSET
        m = g.machine
        assert isinstance(m, PartitionMachine)
        if timestamp == LATEST_TIMESTAMP:
            return ErrorCode.NONE, m.last_stable_offset if read_committed else m.high_watermark
        if timestamp == EARLIEST_TIMESTAMP:
            return ErrorCode.NONE, m.first_offset
        return ErrorCode.NONE, m.offset_for_timestamp(timestamp)
