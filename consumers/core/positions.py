"""The consumer's positions (pure): where each assigned partition is read from, and what every
fetch and reset answer does to it. The Trio `consumers.consumer.Consumer` and the cluster
simulator's reader drive one `Positions` each.

Per assigned partition (`PartitionPosition`): a `position` (the next offset `poll` returns),
a `fetch_offset` (the next offset to fetch; records between the two are buffered, decoded),
and a `generation` bumped by every assign/seek/reset: a fetch answer computed for an older
generation, or for another fetch offset, is dropped, so a seek never mixes with data fetched
before it. A position of None means "reset by auto_offset_reset" (LIST_OFFSETS, earliest -2
or latest -1; "none" makes `poll` raise OffsetOutOfRangeError).

Fetching: a partition is fetchable when its position is known, it is not stopped at a
corrupt batch or an error, its retry backoff passed, and fewer than `max_poll_records` of its
records are buffered. `fetches_due` plans ONE fetch per leader for all its fetchable
partitions, at most one in flight per leader; its long-poll wait is short while other
partitions of that leader hold buffered records (they will need a fetch soon, and a broker
answers one connection in order).

Fetch answers: batches are decoded with `decode_record_fields` (the checks of
`decode_records`, without its Record objects); records below the fetch offset are skipped (a
fetch returns whole batches); control batches are skipped. The next fetch offset is
the answer's `next_offset` (FETCH v1), or, from a broker speaking only v0, one past the last
batch's last record; never below what the batches covered. A batch that fails to decode stops
the partition: its records before it stay buffered, and once they are consumed `poll` raises
CorruptBatch (topic, partition, base offset, last offset) with the position at the batch;
`skip_corrupt(tp)` or a `seek` moves past it. OFFSET_OUT_OF_RANGE resets by auto_offset_reset
("none": OffsetOutOfRangeError from poll). Leadership, unknown-topic and connection errors ask
for metadata (a leadership error forgets the leader; an answer naming the new leader ends the
backoff) and retry with backoff; other errors are raised once by `poll`, then the fetch is
retried after a backoff. A refresh that names a partition's new leader ends its backoff too.

Subscriptions (without a group) assign every partition of their topics, and of every topic a
pattern matches (`re.fullmatch` on the name; internal `__` topics never match): new topics and
partitions are picked up by refreshes at least every `metadata_max_age_s` (a pattern lists all
topics: `listing_due`/`listed`). In a group the consumer adds and removes partitions itself
(`add`, `remove`).

Pausing: a paused partition is neither fetched nor does `take`/`next_record` return its
buffered records. A *waiting* partition (assigned, but its committed offset or the group's
`on_assigned` is still pending) is neither fetched nor reset until `start`.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from broker.wire.batch import ATTR_CONTROL, HEADER_BYTES, decode_record_fields, parse_header
from broker.wire.errors import BatchError, CorruptBatchError, ErrorCode
from broker.wire.messages import (
    EARLIEST_TIMESTAMP,
    LATEST_TIMESTAMP,
    FetchedBatch,
    FetchPartition,
    FetchPartitionResult,
    FetchRequest,
    FetchResponse,
    FetchTopic,
    IsolationLevel,
    ListOffsetsPartition,
    ListOffsetsRequest,
    ListOffsetsResponse,
    ListOffsetsTopic,
)
from consumers.core.metadata import MetadataCache, TopicPartition
from consumers.core.refresh import Backoff, MetadataRefresh, needs_metadata, unled_topics
from consumers.errors import (
    CorruptBatch,
    LeadershipError,
    OffsetOutOfRangeError,
    SluiceError,
    error_for,
)

__all__ = [
    "BUSY_MAX_WAIT_MS",
    "ConsumerRecord",
    "FetchPlan",
    "OffsetReset",
    "PartitionPosition",
    "Positions",
]

OffsetReset = Literal["earliest", "latest", "none"]
BUSY_MAX_WAIT_MS = 10
"""The long-poll wait of a fetch while other partitions of the same leader hold buffered
records."""

Snapshot = dict[TopicPartition, tuple[int, int]]
"""(generation, fetch offset) of each partition when its fetch or reset was built."""


@dataclass(frozen=True, slots=True, repr=False)
class ConsumerRecord:
    """One record as the consumer returns it: `topic`, `partition` and `offset` say where it
    is; `key` and `value` are bytes or None; `headers` are (name, bytes) pairs in the order the
    producer gave them; `timestamp` is the producer's create time, in milliseconds since the
    epoch."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp: int

    def __repr__(self) -> str:
        value = self.value
        if value is not None and len(value) > 32:
            value = value[:32] + b"..."
        return (
            f"ConsumerRecord({self.topic}[{self.partition}]@{self.offset} "
            f"key={self.key!r} value={value!r})"
        )


_new_object = object.__new__
_SET_RECORD_FIELDS = tuple(
    vars(ConsumerRecord)[name].__set__
    for name in ("topic", "partition", "offset", "key", "value", "headers", "timestamp")
)
"""ConsumerRecord's slot setters: `_apply_batch` builds one record per fetched record through
them (a frozen dataclass's __init__ costs three times as much; the fields are checked
already)."""


@dataclass(frozen=True, slots=True)
class FetchPlan:
    """One fetch to start: the leader, its partitions and the long-poll wait to ask for."""

    leader: int
    tps: list[TopicPartition]
    max_wait_ms: int


class PartitionPosition:
    """One assigned partition: positions, the buffer of fetched records, retry state."""

    __slots__ = (
        "attempts",
        "corrupt",
        "error",
        "fetch_offset",
        "generation",
        "high_watermark",
        "position",
        "records",
        "reset_mode",
        "retry_at",
    )

    def __init__(self, reset_mode: OffsetReset) -> None:
        self.position: int | None = None
        self.fetch_offset: int | None = None
        self.generation = 0
        self.records: deque[ConsumerRecord] = deque()
        self.corrupt: CorruptBatch | None = None
        self.error: SluiceError | None = None
        self.retry_at = 0.0
        self.attempts = 0
        self.high_watermark = -1
        self.reset_mode: OffsetReset = reset_mode

    def clear(self) -> None:
        self.records.clear()
        self.corrupt = None
        self.error = None
        self.generation += 1
        self.retry_at = 0.0
        self.attempts = 0

    def fetchable(self, now: float, max_buffered: int) -> bool:
        return (
            self.fetch_offset is not None
            and self.corrupt is None
            and self.error is None
            and now >= self.retry_at
            and len(self.records) < max_buffered
        )


class Positions:
    """Every assigned partition's position, and the consumer's decisions about them."""

    def __init__(
        self,
        *,
        auto_offset_reset: OffsetReset,
        isolation: IsolationLevel,
        max_poll_records: int,
        fetch_max_wait_ms: int,
        fetch_min_bytes: int,
        fetch_max_bytes: int,
        max_partition_fetch_bytes: int,
        metadata: MetadataCache,
        refresh: MetadataRefresh,
        backoff: Backoff,
        on_data: Callable[[], None],
    ) -> None:
        self.auto_offset_reset: OffsetReset = auto_offset_reset
        self.isolation = isolation
        self.max_poll_records = max_poll_records
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.fetch_min_bytes = fetch_min_bytes
        self.fetch_max_bytes = fetch_max_bytes
        self.max_partition_fetch_bytes = max_partition_fetch_bytes
        self.meta = metadata
        self.refresh = refresh
        self.backoff = backoff
        self._on_data = on_data
        """Called when `poll` has something new to raise (an error set outside an answer)."""
        self.partitions: dict[TopicPartition, PartitionPosition] = {}
        self.subscription: frozenset[str] | None = None
        self.pattern: re.Pattern[str] | None = None
        """A subscription's pattern (with `subscription`, possibly empty, its named topics)."""
        self.listing = False
        """An all-topic metadata refresh for the pattern runs."""
        self.list_at = -math.inf
        """The next one starts no earlier."""
        self.list_failures = 0
        self.paused: set[TopicPartition] = set()
        self.waiting: set[TopicPartition] = set()
        """Assigned partitions not yet to be fetched or reset (see the module docstring)."""
        self.metadata_at = -math.inf
        """When the last metadata refresh ended."""
        self.fetching: set[int] = set()
        """Leaders with a fetch in flight."""
        self.resetting: set[TopicPartition] = set()
        """Partitions with a LIST_OFFSETS in flight."""
        self.current: TopicPartition | None = None
        """The partition `next_record` reads from."""
        self._rotation = 0

    # -- assignment and positions ------------------------------------------------------------

    def set_assignment(self, wanted: set[TopicPartition]) -> None:
        """Exactly these partitions (new ones in sorted order: deterministic)."""
        self.remove([tp for tp in self.partitions if tp not in wanted])
        for tp in sorted(wanted):
            if tp not in self.partitions:
                self.partitions[tp] = PartitionPosition(self.auto_offset_reset)

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        if self.subscription is not None:
            raise ValueError("assign() and subscribe() exclude each other: unsubscribe() first")
        self.set_assignment({(t, int(p)) for t, p in partitions})

    def subscribe(self, topics: Iterable[str], pattern: re.Pattern[str] | None = None) -> None:
        names = frozenset(topics)
        if self.partitions and self.subscription is None:
            raise ValueError("assign() and subscribe() exclude each other: assign([]) first")
        self.subscription = names
        self.pattern = pattern
        self.metadata_at = self.list_at = -math.inf
        self.set_assignment({tp for tp in self.partitions if self._subscribed(tp[0])})

    def unsubscribe(self) -> None:
        self.subscription = None
        self.pattern = None
        self.set_assignment(set())

    def _subscribed(self, topic: str) -> bool:
        if self.subscription is not None and topic in self.subscription:
            return True
        return (
            self.pattern is not None
            and not topic.startswith("__")
            and self.pattern.fullmatch(topic) is not None
        )

    def add(self, offsets: Mapping[TopicPartition, int | None], *, waiting: bool = False) -> None:
        """Add partitions (keeping every other one) at these positions (None: by
        auto_offset_reset); `waiting`: not read until `start`."""
        for tp, offset in sorted(offsets.items()):
            state = self.partitions[tp] = PartitionPosition(self.auto_offset_reset)
            state.position = state.fetch_offset = offset
            if waiting:
                self.waiting.add(tp)

    def remove(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int | None]:
        """Stop reading these partitions (their buffered records are dropped, answers in
        flight for them ignored); returns the position each had."""
        out: dict[TopicPartition, int | None] = {}
        for tp in tps:
            state = self.partitions.pop(tp, None)
            if state is None:
                continue
            out[tp] = state.position
            self.paused.discard(tp)
            self.waiting.discard(tp)
            if self.current == tp:
                self.current = None
        return out

    def start(self, tps: Iterable[TopicPartition]) -> None:
        """Waiting partitions may be read from now."""
        self.waiting.difference_update(tps)

    def pause(self, tps: Iterable[TopicPartition]) -> None:
        wanted = [self._key(tp) for tp in tps]
        for tp in wanted:
            self.get(tp)
        self.paused.update(wanted)

    def resume(self, tps: Iterable[TopicPartition]) -> None:
        wanted = [self._key(tp) for tp in tps]
        for tp in wanted:
            self.get(tp)
        self.paused.difference_update(wanted)

    @staticmethod
    def _key(tp: TopicPartition) -> TopicPartition:
        return (tp[0], int(tp[1]))

    def readable(self) -> dict[TopicPartition, int]:
        """The known positions of the partitions being read (not waiting)."""
        return {
            tp: s.position
            for tp, s in self.partitions.items()
            if s.position is not None and tp not in self.waiting
        }

    def apply_subscription(self) -> None:
        """Assign every partition the metadata knows of the subscribed topics."""
        if self.subscription is None:
            return
        wanted: set[TopicPartition] = set()
        names = set(self.subscription)
        if self.pattern is not None:
            names.update(t for t in self.meta.topics if self._subscribed(t))
        for name in names:
            count = self.meta.partition_count(name)
            if count is not None:
                wanted.update((name, p) for p in range(count))
            else:
                wanted.update(tp for tp in self.partitions if tp[0] == name)
        if wanted != set(self.partitions):
            self.set_assignment(wanted)

    def get(self, tp: TopicPartition) -> PartitionPosition:
        state = self.partitions.get((tp[0], int(tp[1])))
        if state is None:
            raise ValueError(f"{tp!r} is not assigned to this consumer")
        return state

    def seek(self, tp: TopicPartition, offset: int) -> None:
        if offset < 0:
            raise ValueError("offset must be >= 0 (seek_to_beginning/seek_to_end for the ends)")
        state = self.get(tp)
        state.clear()
        state.position = state.fetch_offset = offset

    def seek_reset(self, partitions: Iterable[TopicPartition] | None, mode: OffsetReset) -> None:
        tps = list(self.partitions) if partitions is None else list(partitions)
        for tp in tps:
            state = self.get(tp)
            state.clear()
            state.position = state.fetch_offset = None
            state.reset_mode = mode

    def skip_corrupt(self, tp: TopicPartition) -> int:
        """Move past the corrupt batch `poll` raised for `tp`; returns the new position."""
        state = self.get(tp)
        corrupt = state.corrupt
        if corrupt is None or state.records:
            raise ValueError(f"{tp!r} is not stopped at a corrupt batch")
        if corrupt.last_offset is None:
            raise ValueError(
                f"the corrupt batch at {tp!r} offset {corrupt.base_offset} has an unknown "
                "extent: seek past it"
            )
        self.seek(tp, corrupt.last_offset + 1)
        return corrupt.last_offset + 1

    # -- reading -----------------------------------------------------------------------------

    def raise_pending(self) -> None:
        """Raise the CorruptBatch or error of a partition with nothing buffered before it (an
        error is raised once)."""
        for state in self.partitions.values():
            if state.records:
                continue
            if state.corrupt is not None:
                raise state.corrupt
            if state.error is not None:
                error, state.error = state.error, None
                raise error

    def take(self, max_records: int) -> list[ConsumerRecord]:
        """Buffered records, rotating over partitions; positions advance past them."""
        out: list[ConsumerRecord] = []
        paused = self.paused
        tps = [tp for tp, s in self.partitions.items() if s.records and tp not in paused]
        if not tps:
            return out
        self._rotation = (self._rotation + 1) % len(tps)
        for tp in tps[self._rotation :] + tps[: self._rotation]:
            state = self.partitions[tp]
            records = state.records
            want = max_records - len(out)
            if len(records) <= want:
                out.extend(records)
                records.clear()
            else:
                out.extend(records.popleft() for _ in range(want))
            state.position = out[-1].offset + 1
            _past_skipped(state)
            if len(out) >= max_records:
                break
        return out

    def next_record(self) -> tuple[ConsumerRecord, bool] | None:
        """The next buffered record (its position advances past it) and whether its partition
        just became fetchable again; None when nothing is buffered. Raises as `raise_pending`
        before moving to another partition."""
        tp = self.current
        state = self.partitions.get(tp) if tp is not None else None
        if state is None or not state.records or tp in self.paused:
            self.raise_pending()
            self.current = self._next_with_records()
            if self.current is None:
                return None
            state = self.partitions[self.current]
        record = state.records.popleft()
        state.position = record.offset + 1
        _past_skipped(state)
        return record, len(state.records) == self.max_poll_records - 1

    def _next_with_records(self) -> TopicPartition | None:
        tps = list(self.partitions)
        if not tps:
            return None
        self._rotation = (self._rotation + 1) % len(tps)
        for tp in tps[self._rotation :] + tps[: self._rotation]:
            if self.partitions[tp].records and tp not in self.paused:
                return tp
        return None

    # -- metadata ----------------------------------------------------------------------------

    def want_metadata(self, now: float, max_age_s: float) -> None:
        """Ask for the topics of partitions without a leader, and for the subscription once
        its metadata is older than `max_age_s` (not while a refresh runs: its answer may
        settle both)."""
        if self.refresh.running:
            return
        for tp in self.partitions:
            if self.meta.leader_for(tp) is None:
                self.refresh.want(tp[0])
        if self.subscription is not None and now >= self.metadata_at + max_age_s:
            for topic in self.subscription:
                self.refresh.want(topic)

    def leaders(self, topics: Iterable[str]) -> dict[TopicPartition, int | None]:
        """The current leader of each assigned partition of `topics` (before a refresh)."""
        names = set(topics)
        return {tp: self.meta.leader_for(tp) for tp in self.partitions if tp[0] in names}

    def refreshed(
        self,
        now: float,
        before: dict[TopicPartition, int | None],
        unreachable: Callable[[int], bool],
    ) -> set[str]:
        """A refresh ended: partitions whose leader changed are fetched at once (the backoff
        their failures against the old leader earned ends), the subscription is applied;
        returns the topics still lacking a reachable leader."""
        self.metadata_at = now
        stale = unled_topics(self.meta, before, unreachable)
        for tp, old in before.items():
            state = self.partitions.get(tp)
            leader = self.meta.leader_for(tp)
            if state is None or leader is None or leader == old or unreachable(leader):
                continue
            state.retry_at = 0.0
            state.attempts = 0
        self.apply_subscription()
        return stale

    def listing_due(self, now: float) -> bool:
        """Whether to list every topic now (a pattern subscription; marks it running)."""
        if self.pattern is None or self.listing or now < self.list_at:
            return False
        self.listing = True
        return True

    def listed(self, now: float, ok: bool, max_age_s: float) -> None:
        """The listing ended (`refreshed` applied the subscription if `ok`): the next one in
        `max_age_s`, or after a backoff if it failed."""
        self.listing = False
        self.list_failures = 0 if ok else self.list_failures + 1
        delay = max_age_s if ok else min(max_age_s, self.backoff.delay(self.list_failures - 1))
        self.list_at = now + delay

    # -- resets ------------------------------------------------------------------------------

    def resets_due(self, now: float) -> dict[int, list[TopicPartition]]:
        """Partitions to reset by auto_offset_reset now, by leader (marked resetting)."""
        by_leader: dict[int, list[TopicPartition]] = {}
        for tp, state in self.partitions.items():
            if state.position is not None or tp in self.resetting or state.error is not None:
                continue
            if tp in self.waiting:
                continue
            if now < state.retry_at:
                continue
            if state.reset_mode == "none":
                state.error = OffsetOutOfRangeError(
                    f"{tp[0]}[{tp[1]}] has no position and auto_offset_reset is 'none': seek()"
                )
                self._on_data()
                continue
            leader = self.meta.leader_for(tp)
            if leader is None:
                self.refresh.want(tp[0])
                continue
            by_leader.setdefault(leader, []).append(tp)
        for tps in by_leader.values():
            self.resetting.update(tps)
        return by_leader

    def list_offsets_request(
        self, tps: list[TopicPartition]
    ) -> tuple[ListOffsetsRequest, dict[TopicPartition, int]]:
        """The LIST_OFFSETS for these resets, and each partition's generation now."""
        generations = {tp: self.partitions[tp].generation for tp in tps if tp in self.partitions}
        topics: dict[str, list[ListOffsetsPartition]] = {}
        for tp in generations:
            mode = self.partitions[tp].reset_mode
            stamp = LATEST_TIMESTAMP if mode == "latest" else EARLIEST_TIMESTAMP
            topics.setdefault(tp[0], []).append(
                ListOffsetsPartition(partition=tp[1], timestamp=stamp)
            )
        request = ListOffsetsRequest(
            topics=tuple(ListOffsetsTopic(name=n, partitions=tuple(p)) for n, p in topics.items()),
            isolation=self.isolation,
        )
        return request, generations

    def on_list_offsets(
        self, generations: dict[TopicPartition, int], response: ListOffsetsResponse, now: float
    ) -> None:
        for t in response.topics:
            for p in t.partitions:
                tp = (t.name, p.partition)
                state = self.partitions.get(tp)
                if state is None or generations.get(tp) != state.generation:
                    continue
                if state.position is not None:
                    continue  # re-added since at a known position: this reset is moot
                if p.error is not ErrorCode.NONE:
                    self.retry_later(tp, error_for(p.error, f"list offsets of {tp}"), now)
                    continue
                state.position = state.fetch_offset = p.offset
                state.reset_mode = self.auto_offset_reset
                state.attempts = 0

    def retry_later(self, tp: TopicPartition, error: SluiceError, now: float) -> None:
        """A fetch or reset of `tp` failed: back off; a non-retriable error is raised once by
        poll; stale metadata is asked for again."""
        state = self.partitions.get(tp)
        if state is None:
            return
        if not error.retriable:
            state.error = error
            self._on_data()
        state.retry_at = now + self.backoff.delay(state.attempts)
        state.attempts += 1
        if needs_metadata(error):
            if isinstance(error, LeadershipError):
                self.meta.invalidate(tp)
            self.refresh.want(tp[0])

    # -- fetches -----------------------------------------------------------------------------

    def fetches_due(self, now: float) -> list[FetchPlan]:
        """ONE fetch per leader without one in flight, for all its fetchable partitions
        (the leaders are marked fetching)."""
        by_leader: dict[int, list[TopicPartition]] = {}
        for tp, state in self.partitions.items():
            if not state.fetchable(now, self.max_poll_records):
                continue
            if tp in self.paused or tp in self.waiting:
                continue
            leader = self.meta.leader_for(tp)
            if leader is None:
                self.refresh.want(tp[0])
                continue
            if leader not in self.fetching:
                by_leader.setdefault(leader, []).append(tp)
        plans = []
        for leader, tps in by_leader.items():
            self.fetching.add(leader)
            busy = any(
                state.records and tp not in self.paused and self.meta.leader_for(tp) == leader
                for tp, state in self.partitions.items()
            )
            wait = min(self.fetch_max_wait_ms, BUSY_MAX_WAIT_MS) if busy else None
            plans.append(FetchPlan(leader, tps, self.fetch_max_wait_ms if wait is None else wait))
        return plans

    def fetch_request(self, plan: FetchPlan) -> tuple[FetchRequest, Snapshot]:
        """The FETCH of a plan, for its partitions still assigned with a fetch offset (an
        empty snapshot: none is left)."""
        snapshot: Snapshot = {}
        topics: dict[str, list[FetchPartition]] = {}
        for tp in plan.tps:
            state = self.partitions.get(tp)
            if state is None or state.fetch_offset is None:
                continue  # removed or moved since the plan was made
            snapshot[tp] = (state.generation, state.fetch_offset)
            topics.setdefault(tp[0], []).append(
                FetchPartition(
                    partition=tp[1],
                    offset=state.fetch_offset,
                    max_bytes=self.max_partition_fetch_bytes,
                )
            )
        request = FetchRequest(
            topics=tuple(FetchTopic(name=n, partitions=tuple(p)) for n, p in topics.items()),
            max_wait_ms=plan.max_wait_ms,
            min_bytes=self.fetch_min_bytes,
            max_bytes=self.fetch_max_bytes,
            isolation=self.isolation,
        )
        return request, snapshot

    def is_current(self, tp: TopicPartition, snapshot: Snapshot) -> bool:
        """Whether an answer for `tp` built at `snapshot` still applies (no seek, reset or
        other answer moved the partition since)."""
        expected = snapshot.get(tp)
        state = self.partitions.get(tp)
        return (
            expected is not None
            and state is not None
            and (state.generation, state.fetch_offset) == expected
        )

    def on_fetch(self, snapshot: Snapshot, response: FetchResponse, now: float) -> bool:
        """Apply a fetch answer; whether poll has something new."""
        got = False
        for t in response.topics:
            for p in t.partitions:
                tp = (t.name, p.partition)
                if self.is_current(tp, snapshot):
                    got |= self.apply_fetch(tp, self.partitions[tp], p, now)
        return got

    def fetch_failed(self, tps: Iterable[TopicPartition], error: SluiceError, now: float) -> None:
        for tp in tps:
            self.retry_later(tp, error, now)

    def apply_fetch(
        self, tp: TopicPartition, state: PartitionPosition, result: FetchPartitionResult, now: float
    ) -> bool:
        """Buffer a partition's answer; whether poll has something new (records or an
        error to raise)."""
        if result.error is not ErrorCode.NONE:
            if result.error is ErrorCode.OFFSET_OUT_OF_RANGE:
                if state.reset_mode == "none" or self.auto_offset_reset == "none":
                    state.error = OffsetOutOfRangeError(
                        f"{tp[0]}[{tp[1]}] offset {state.fetch_offset}: {result.message}"
                    )
                    return True
                state.clear()
                state.position = state.fetch_offset = None
                return False
            self.retry_later(tp, error_for(result.error, result.message), now)
            if result.leader is not None and self.meta.hint(tp, result.leader, result.leader_term):
                state.retry_at = 0.0  # the answer named the new leader: fetch there at once
            return state.error is not None
        state.attempts = 0
        state.high_watermark = result.high_watermark
        offset = state.fetch_offset
        assert offset is not None
        before = len(state.records)
        batches = result.batches
        for i, batch in enumerate(batches):
            next_base = batches[i + 1].base_offset if i + 1 < len(batches) else None
            offset = self._apply_batch(tp, state, batch, offset, next_base)
            if state.corrupt is not None:
                break
        if result.next_offset is not None and state.corrupt is None:
            offset = max(offset, result.next_offset)  # v1: the broker says where to go on
        state.fetch_offset = offset
        _past_skipped(state)
        return len(state.records) > before or state.corrupt is not None

    @staticmethod
    def _apply_batch(
        tp: TopicPartition,
        state: PartitionPosition,
        batch: FetchedBatch,
        offset: int,
        next_base: int | None,
    ) -> int:
        """Decode one batch into the buffer; the next fetch offset."""
        data = batch.data
        base = batch.base_offset
        if len(data) >= HEADER_BYTES and int.from_bytes(data[6:8], "big") & ATTR_CONTROL:
            count = int.from_bytes(data[8:12], "big")
            return max(offset, base + count)
        try:
            records = decode_record_fields(data)
        except CorruptBatchError as e:
            state.corrupt = CorruptBatch(
                tp[0], tp[1], base, _last_offset(data, base, next_base), e.message
            )
            return max(offset, base) if base >= offset else offset
        topic, partition = tp
        append = state.records.append
        new, cls = _new_object, ConsumerRecord
        set_topic, set_partition, set_offset, set_key, set_value, set_headers, set_timestamp = (
            _SET_RECORD_FIELDS
        )
        skip = offset - base  # records below the fetch offset (a fetch returns whole batches)
        at = base
        for timestamp, key, value, headers in records:
            if skip > 0:
                skip -= 1
                at += 1
                continue
            # ConsumerRecord(topic, partition, at, key, value, headers, timestamp), inline
            record: ConsumerRecord = new(cls)
            set_topic(record, topic)
            set_partition(record, partition)
            set_offset(record, at)
            set_key(record, key)
            set_value(record, value)
            set_headers(record, headers)
            set_timestamp(record, timestamp)
            append(record)
            at += 1
        return max(offset, base + len(records))

    # -- time --------------------------------------------------------------------------------

    def next_deadline(self, now: float, max_age_s: float) -> float:
        """When to look again unprompted: a refresh the policy will allow, the
        subscription's metadata age, a partition's retry backoff (at most 1 s away)."""
        deadline = min(now + 1.0, self.refresh.next_at())
        if self.subscription is not None:
            deadline = min(deadline, self.metadata_at + max_age_s)
        if self.pattern is not None and not self.listing:
            deadline = min(deadline, self.list_at)
        for state in self.partitions.values():
            if state.retry_at > now:
                deadline = min(deadline, state.retry_at)
        return deadline


def _last_offset(data: bytes, base: int, next_base: int | None) -> int | None:
    """The last offset of a batch that failed to decode: from its header when that is
    intact, else from the next batch's base offset, else unknown."""
    try:
        return base + parse_header(data).record_count - 1
    except BatchError:
        return None if next_base is None else next_base - 1


def _past_skipped(state: PartitionPosition) -> None:
    """With nothing buffered, the position moves to the fetch offset: past control markers
    and aborted data the fetch skipped (nothing there is a record to consume)."""
    if state.records or state.corrupt is not None or state.error is not None:
        return
    fetch, position = state.fetch_offset, state.position
    if fetch is not None and position is not None and fetch > position:
        state.position = fetch
