"""Partition retention: deleting a log's oldest batches by time and size, compacting it by
key, and giving back the disk behind them (pure).

Deciding (the leader, with wall time). Every `NodeConfig.retention_check_ticks` ticks
(`retention_check_interval_s`, 5 s by default: Kafka's log.retention.check.interval.ms is 5
min) `RetentionCheck` visits the partition logs this broker leads and serves whose topic sets
`retention.ms` or `retention.bytes` (-1: unbounded) and computes `trim_point`, Kafka's rule on
whole batches from the log's prefix: a batch goes while its max timestamp is older than now
- retention.ms, or while the retained bytes without it are still >= retention.bytes; never
the last batch, never past the last stable offset (an open transaction's data stays).
`now` is `NodeContext.wall_ms`, the runtime's wall clock at the last tick (0: unknown, then
time decides nothing). If the point is above the log start offset the leader proposes
`retain_command(point)` (which wakes a quiesced group); nothing time-dependent happens at
apply, where every replica moves its log start the same way (partition.py). A topic with
`cleanup.policy=compact` is compacted instead (compaction.py's `plan_compaction`, its
tombstone horizon now - delete.retention.ms), and its retention.ms / retention.bytes delete
nothing (Kafka's `compact` alone). Settings are read at each check, so an altered topic's
new ones apply within one interval (its replicas get the policy below then too).

Compacting the Raft log (each replica, locally: `RetentionPolicy`, the partition group's
SnapshotPolicy). A Raft snapshot of the partition holds no batches, so the log can be
compacted only up to an index at which the machine's state was captured with a next offset
at or below the log start: then every batch the index still lists lies after it. The policy
captures the machine (`snapshot_bytes`) as it applies entries, spaced by an eighth of the
retained records (at most MAX_CAPTURES kept; when full, the capture whose removal leaves the
smallest gap goes), and after each apply compacts the log to the newest capture at or below
the log start: the Compaction's snapshot index is its compaction point, so a follower that
needs the compacted entries installs it (log start = its next offset) and receives the rest
by append, retain commands included, reaching the leader's log start. So the log keeps the
retained records plus about an eighth more. On a compacted topic a capture carries every
kept record, so one is taken only as a compact command moves the raw log start (the next one
uses it). Captures live in memory: after a restart the records kept before it are given back
once captures taken since age past them (a log that receives nothing after the restart keeps
them on disk, deleted but not reclaimed). The broker-wide entry-count retention
(`partition_retention_entries`, for tests) is the same policy with `keep`: it moves the log
start to the oldest capture `keep` entries behind the applied index (the log keeps between
`keep` and 2 x `keep` entries), whatever the topic's settings.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from broker.core.compaction import plan_compaction
from broker.core.context import NodeContext
from broker.core.host import HostedGroup
from broker.core.metadata import TopicInfo
from broker.core.partition import PartitionMachine, retain_command
from broker.core.rounds import Compaction
from broker.core.snapshot_policies import NoSnapshots

MAX_CAPTURES = 16
SPACING_PARTS = 8
"""A capture is taken once the log grew by 1/SPACING_PARTS of its retained records."""
SCAN_LIMIT = 100_000
"""Batches one check looks at per partition (more wait for the next check)."""


@dataclass(frozen=True, slots=True)
class RetentionSettings:
    """A topic's retention (-1: unbounded), or its compaction (then retention.ms and
    retention.bytes delete nothing, as with Kafka's `compact` alone)."""

    ms: int = -1
    bytes: int = -1
    compact: bool = False
    delete_retention_ms: int = 86_400_000
    """How long a tombstone stays readable (compaction.py)."""

    @classmethod
    def of(cls, topic: TopicInfo) -> RetentionSettings:
        return cls(
            int(topic.setting("retention.ms")),
            int(topic.setting("retention.bytes")),
            topic.setting("cleanup.policy") == "compact",
            int(topic.setting("delete.retention.ms")),
        )

    @property
    def bounded(self) -> bool:
        """Retention deletes by time or size."""
        return not self.compact and (self.ms >= 0 or self.bytes >= 0)

    @property
    def active(self) -> bool:
        """The topic's log start moves (retention or compaction): its replicas compact
        their Raft logs behind it."""
        return self.compact or self.bounded


def trim_point(
    m: PartitionMachine, settings: RetentionSettings, now_ms: int, limit: int = SCAN_LIMIT
) -> int:
    """The offset retention moves the log start to (the log start itself: nothing to
    delete). Pure: the index, the last stable offset, the settings and `now_ms`."""
    index = m.index
    last = len(index) - 1  # the last batch is never deleted
    horizon = now_ms - settings.ms if settings.ms >= 0 and now_ms > 0 else None
    max_bytes = settings.bytes
    lso = m.last_stable_offset
    size = index.total_bytes
    cut = 0
    while cut < min(last, limit) and index.base_at(cut + 1) <= lso:
        batch = index.size_at(cut)
        expired = horizon is not None and index.max_timestamp_at(cut) < horizon
        if not expired and not (max_bytes >= 0 and size - batch >= max_bytes):
            break
        size -= batch
        cut += 1
    return index.base_at(cut) if cut else m.log_start_offset


class RetentionCheck:
    """The leaders' side of retention and compaction (see the module doc)."""

    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        self.proposed = 0
        """Retain and compact commands proposed (tests, diagnostics)."""

    def tick(self) -> None:
        ctx = self.ctx
        every = ctx.config.retention_check_ticks
        if every and ctx.ticks % every == 0:
            self.check(ctx.wall_ms)

    def check(self, now_ms: int) -> None:
        """Give every partition log hosted here whose topic retains or compacts the policy
        that compacts its Raft log (a topic's settings may change), and propose to each one
        led here the retain or compact command its topic asks for now, if any."""
        ctx = self.ctx
        topics = ctx.meta.topics
        for g in list(ctx.host.groups.values()):
            m = g.machine
            if g.topic is None or not isinstance(m, PartitionMachine):
                continue
            topic = topics.get(g.topic)
            settings = RetentionSettings.of(topic) if topic is not None else None
            if settings is None or not settings.active:
                continue
            if isinstance(g.policy, RetentionPolicy):
                g.policy.spaced = True
            elif isinstance(g.policy, NoSnapshots):
                g.policy = RetentionPolicy(ctx.config.partition_retention_entries, spaced=True)
            if not g.serving():
                continue
            command = None
            if settings.compact:
                horizon = now_ms - settings.delete_retention_ms if now_ms > 0 else None
                command = plan_compaction(
                    m.index, m.kept, m.aborted, m.last_stable_offset, g.raft.log, horizon
                )
            else:
                point = trim_point(m, settings, now_ms)
                if point > m.log_start_offset:
                    command = retain_command(point)
            if command is not None and ctx.host.propose(g, command) is not None:
                self.proposed += 1


@dataclass(frozen=True, slots=True)
class _Capture:
    """A partition machine's snapshot as it applied `index`: a compaction point once the log
    start reaches `next_offset`."""

    index: int
    data: bytes
    next_offset: int


class RetentionPolicy:
    """Compacts a partition's Raft log behind its log start offset (see the module doc).
    `keep`: entry-count retention (0: off); `spaced`: the topic retains by time or size, or
    compacts."""

    def __init__(self, keep: int = 0, spaced: bool = False) -> None:
        self.keep = keep
        self.spaced = spaced
        self.captures: deque[_Capture] = deque()
        self._start = -1
        """The machine's log start offset after the previous apply."""

    def after_apply(self, group: HostedGroup, index: int) -> Compaction | None:
        m = group.machine
        assert isinstance(m, PartitionMachine)
        caps = self.captures
        if self.keep and caps and index - caps[0].index >= self.keep:
            m.retain_from(caps[0].next_offset)
        best = None
        while caps and caps[0].next_offset <= m.log_start_offset:
            best = caps.popleft()
        out = None
        compacted_to = group.compacted_to
        if best is not None and best.index > compacted_to:
            out = Compaction(group.id, best.index, group.conf_at(best.index), best.data, best.index)
            compacted_to = best.index
        if self._due(m, index, compacted_to):
            caps.append(_Capture(index, m.snapshot_bytes(), m.next_offset))
            if len(caps) > MAX_CAPTURES:
                self._thin(m.log_start_offset)
        self._start = m.log_start_offset
        return out

    def _due(self, m: PartitionMachine, index: int, compacted_to: int) -> bool:
        caps = self.captures
        if self.keep and not caps and index - compacted_to >= self.keep:
            return True
        if not self.spaced:
            return False
        if m.kept is not None:
            # Compaction: a capture carries every kept record, so one is taken as a compact
            # command moved the raw log start; the next one that moves past it uses it.
            moved = m.log_start_offset != self._start
            return moved and m.next_offset > (caps[-1].next_offset if caps else m.log_start_offset)
        since = caps[-1].next_offset if caps else m.log_start_offset
        grown = m.next_offset - since
        return grown > 0 and grown >= (m.next_offset - m.log_start_offset) // SPACING_PARTS

    def _thin(self, log_start: int) -> None:
        """Drop the capture (never the newest) whose removal leaves the smallest gap."""
        caps = self.captures
        drop, smallest, before = 0, -1, log_start
        for i in range(len(caps) - 1):
            gap = caps[i + 1].next_offset - before
            if smallest < 0 or gap < smallest:
                drop, smallest = i, gap
            before = caps[i].next_offset
        del caps[drop]

    def on_install(self, group: HostedGroup) -> None:
        self.captures.clear()
