"""The asynchronous consumer (without groups: assign or subscribe, positions kept locally).

Theory of operation
-------------------
Per assigned partition the consumer keeps a `position` (the next offset `poll` returns),
a `fetch_offset` (the next offset to fetch; records between the two are buffered, decoded),
and a `generation` bumped by every assign/seek/reset: a fetch answer computed for an older
generation, or for another fetch offset, is dropped, so a seek never mixes with data fetched
before it. A position of None means "reset by auto_offset_reset" (LIST_OFFSETS, earliest -2
or latest -1).

One manager task (in the consumer's nursery) loops: refresh metadata when asked or when the
subscription's metadata is older than `metadata_max_age_ms` (a subscription assigns every
partition of its topics, so new topics and partitions are picked up), start resets, and start
fetches: ONE fetch per leader for all its fetchable partitions, at most one in flight per
leader (on the connection lane "fetch", so a parked long-poll never delays other requests).
A partition is fetchable when its position is known, it is not stopped at a corrupt batch or
an error, its retry backoff passed, and fewer than `max_poll_records` of its records are
buffered: the buffer holds at most about that many records per partition plus one fetch
answer per leader (each bounded by fetch_max_bytes).

Fetch answers: batches are decoded with `decode_records`; records below the fetch offset are
skipped (a fetch returns whole batches); control batches are skipped. A batch that fails to
decode stops the partition: its records before it stay buffered, and once they are consumed
`poll` raises CorruptBatch (topic, partition, base offset, last offset) with the position at
the batch; `skip_corrupt(tp)` or a `seek` moves past it. OFFSET_OUT_OF_RANGE resets by
auto_offset_reset ("none": OffsetOutOfRangeError from poll). Leadership, unknown-topic and
connection errors refresh metadata and retry with backoff; other errors are raised once by
`poll`, then the fetch is retried after a backoff.

`poll` first raises a pending CorruptBatch or error of a partition with nothing buffered
before it, then returns buffered records (rotating over partitions, advancing positions),
waiting up to `timeout` for some. `async for record in consumer` takes records one by one
from the same buffers (positions advance per record) and never ends.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

import trio

from broker.wire.batch import ATTR_CONTROL, HEADER_BYTES, parse_header
from broker.wire.batch import decode_records as _decode_records
from broker.wire.errors import BatchError, CorruptBatchError, ErrorCode
from broker.wire.limits import Limits
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
from consumers.cluster import (
    METADATA_RETRY_MAX_S,
    Backoff,
    Cluster,
    TopicPartition,
    needs_metadata,
)
from consumers.errors import (
    ClientClosedError,
    CorruptBatch,
    GroupsNotSupported,
    LeadershipError,
    OffsetOutOfRangeError,
    RequestTimedOutError,
    SluiceError,
    error_for,
)

__all__ = ["Consumer", "ConsumerRecord"]

MiB = 1024 * 1024
FETCH_LANE = "fetch"
ITER_YIELD_MASK = 63
"""`async for` yields to the scheduler every 64 records (a checkpoint costs ~6 µs here); it
checks cancellation on every record."""
BUSY_MAX_WAIT_MS = 10
"""The long-poll wait of a fetch while other partitions of the same leader hold buffered
records: they will need a fetch soon, and a broker answers one connection in order."""


@dataclass(frozen=True, slots=True)
class ConsumerRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp: int


class _PartitionState:
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

    def __init__(self, reset_mode: str) -> None:
        self.position: int | None = None
        self.fetch_offset: int | None = None
        self.generation = 0
        self.records: deque[ConsumerRecord] = deque()
        self.corrupt: CorruptBatch | None = None
        self.error: SluiceError | None = None
        self.retry_at = 0.0
        self.attempts = 0
        self.high_watermark = -1
        self.reset_mode = reset_mode

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


class Consumer:
    """Reads records from assigned partitions; use as `async with Consumer(...) as c`."""

    def __init__(
        self,
        bootstrap: str | Sequence[str] = "127.0.0.1:9092",
        *,
        group_id: str | None = None,
        isolation: Literal["read_committed", "read_uncommitted"] = "read_committed",
        auto_offset_reset: Literal["earliest", "latest", "none"] = "earliest",
        enable_auto_commit: bool = True,
        max_poll_records: int = 500,
        fetch_max_wait_ms: int = 500,
        fetch_min_bytes: int = 1,
        fetch_max_bytes: int = 50 * MiB,
        max_partition_fetch_bytes: int = 1 * MiB,
        request_timeout_ms: int = 30_000,
        metadata_max_age_ms: int = 5_000,
        client_id: str | None = None,
        retry_backoff_ms: float = 100,
        retry_backoff_max_ms: float = 1000,
    ) -> None:
        if group_id is not None:
            raise GroupsNotSupported(
                "consumer groups are not available yet: use group_id=None with assign() or "
                "subscribe()"
            )
        if isolation not in ("read_committed", "read_uncommitted"):
            raise ValueError("isolation must be 'read_committed' or 'read_uncommitted'")
        if auto_offset_reset not in ("earliest", "latest", "none"):
            raise ValueError("auto_offset_reset must be 'earliest', 'latest' or 'none'")
        if max_poll_records < 1 or fetch_max_bytes < 1 or max_partition_fetch_bytes < 1:
            raise ValueError("max_poll_records and the fetch byte limits must be >= 1")
        if fetch_max_wait_ms < 0 or fetch_min_bytes < 0 or metadata_max_age_ms < 1:
            raise ValueError("need fetch_max_wait_ms >= 0, fetch_min_bytes >= 0")
        self.bootstrap = bootstrap
        self.isolation = (
            IsolationLevel.READ_COMMITTED
            if isolation == "read_committed"
            else IsolationLevel.READ_UNCOMMITTED
        )
        self.auto_offset_reset = auto_offset_reset
        self.enable_auto_commit = enable_auto_commit
        """Kept for the contract; without groups there is nothing to commit."""
        self.max_poll_records = max_poll_records
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.fetch_min_bytes = fetch_min_bytes
        self.fetch_max_bytes = fetch_max_bytes
        self.max_partition_fetch_bytes = min(max_partition_fetch_bytes, fetch_max_bytes)
        self.request_timeout_s = request_timeout_ms / 1000
        self.metadata_max_age_s = metadata_max_age_ms / 1000
        self.client_id = client_id
        self._backoff = Backoff(
            retry_backoff_ms / 1000, max(retry_backoff_ms, retry_backoff_max_ms) / 1000
        )
        self._states: dict[TopicPartition, _PartitionState] = {}
        self._subscription: frozenset[str] | None = None
        self._open = False
        self._stack: AsyncExitStack | None = None
        self._rotation = 0
        self._current: TopicPartition | None = None
        self._iterated = 0

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Consumer:
        if self._stack is not None:
            raise RuntimeError("a Consumer is entered once")
        self._cluster = Cluster(
            self.bootstrap,
            client_id=self.client_id,
            request_timeout_s=self.request_timeout_s,
            max_in_flight_per_connection=5,
            limits=Limits(max_frame_bytes=max(16 * MiB, self.fetch_max_bytes + MiB)),
            backoff=self._backoff,
        )
        self._wake = trio.Event()
        self._data = trio.Event()
        self._fetching: set[int] = set()
        self._resetting: set[TopicPartition] = set()
        self._want_metadata: set[str] = set()
        self._metadata_at = -1e9
        self._metadata_allowed_at = -1e9
        self._metadata_failures = 0
        self._refreshing = False
        stack = AsyncExitStack()
        self._stack = stack
        try:
            await stack.enter_async_context(self._cluster)
            self._nursery = await stack.enter_async_context(trio.open_nursery())
            self._nursery.start_soon(self._manager)
        except BaseException:
            await stack.aclose()
            raise
        self._open = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._stack is None:
            return
        self._open = False
        self._nursery.cancel_scope.cancel()
        self._data.set()
        stack, self._stack = self._stack, None
        await stack.aclose()

    def _check_open(self) -> None:
        if not self._open:
            raise ClientClosedError("the consumer is not open (use `async with Consumer(...)`)")

    # -- assignment and positions ------------------------------------------------------------

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        """Read exactly these partitions (replacing any assignment); new ones start at
        auto_offset_reset unless `seek` says otherwise."""
        if self._subscription is not None:
            raise ValueError("assign() and subscribe() exclude each other: unsubscribe() first")
        self._set_assignment({(t, int(p)) for t, p in partitions})

    def subscribe(self, topics: Iterable[str]) -> None:
        """Read every partition of these topics (no group: this consumer alone), following
        partitions and topics as they appear in metadata."""
        names = frozenset(topics)
        if self._states and self._subscription is None:
            raise ValueError("assign() and subscribe() exclude each other: assign([]) first")
        self._subscription = names
        self._metadata_at = -1e9
        self._set_assignment({tp for tp in self._states if tp[0] in names})
        self._poke()

    def unsubscribe(self) -> None:
        self._subscription = None
        self._set_assignment(set())

    def subscription(self) -> frozenset[str]:
        return self._subscription or frozenset()

    def assignment(self) -> frozenset[TopicPartition]:
        return frozenset(self._states)

    def _set_assignment(self, wanted: set[TopicPartition]) -> None:
        for tp in list(self._states):
            if tp not in wanted:
                del self._states[tp]
                if self._current == tp:
                    self._current = None
        for tp in wanted:
            if tp not in self._states:
                self._states[tp] = _PartitionState(self.auto_offset_reset)
        self._poke()

    def _state(self, tp: TopicPartition) -> _PartitionState:
        state = self._states.get((tp[0], int(tp[1])))
        if state is None:
            raise ValueError(f"{tp!r} is not assigned to this consumer")
        return state

    def seek(self, tp: TopicPartition, offset: int) -> None:
        """The next record returned for `tp` will be the one at `offset`."""
        if offset < 0:
            raise ValueError("offset must be >= 0 (seek_to_beginning/seek_to_end for the ends)")
        state = self._state(tp)
        state.clear()
        state.position = state.fetch_offset = offset
        self._poke()

    def seek_to_beginning(self, partitions: Iterable[TopicPartition] | None = None) -> None:
        self._seek_reset(partitions, "earliest")

    def seek_to_end(self, partitions: Iterable[TopicPartition] | None = None) -> None:
        self._seek_reset(partitions, "latest")

    def _seek_reset(self, partitions: Iterable[TopicPartition] | None, mode: str) -> None:
        tps = list(self._states) if partitions is None else list(partitions)
        for tp in tps:
            state = self._state(tp)
            state.clear()
            state.position = state.fetch_offset = None
            state.reset_mode = mode
        self._poke()

    def skip_corrupt(self, tp: TopicPartition) -> int:
        """Move past the corrupt batch `poll` raised for `tp`; returns the new position.
        ValueError when `tp` is not stopped at a corrupt batch, or its extent is unknown
        (then seek past it)."""
        state = self._state(tp)
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

    async def position(self, tp: TopicPartition) -> int:
        """The offset of the next record `poll` would return for `tp` (resolving
        auto_offset_reset first if needed; RequestTimedOutError after request_timeout)."""
        self._check_open()
        state = self._state(tp)
        with trio.move_on_after(self.request_timeout_s):
            while state.position is None:
                if state.error is not None:
                    error, state.error = state.error, None
                    raise error
                self._poke()
                await self._wait_data()
                self._check_open()
                state = self._state(tp)
            return state.position
        raise RequestTimedOutError(f"the position of {tp!r} could not be resolved in time")

    async def commit(self) -> None:
        """Consumer groups arrive in a later stage: raises GroupsNotSupported (positions
        without a group live only in this consumer)."""
        await trio.lowlevel.checkpoint()
        raise GroupsNotSupported("commit() needs a consumer group; groups are not available yet")

    # -- reading -----------------------------------------------------------------------------

    async def poll(self, timeout: float = 1.0, max_records: int = 500) -> list[ConsumerRecord]:
        """Buffered records (at most `max_records`), waiting up to `timeout` seconds for
        some; possibly empty. Raises CorruptBatch / a partition's error (see the module)."""
        self._check_open()
        if max_records < 1:
            raise ValueError("max_records must be >= 1")
        deadline = trio.current_time() + max(0.0, timeout)
        while True:
            self._raise_pending()
            records = self._take(max_records)
            if records:
                self._poke()
                await trio.lowlevel.checkpoint()
                return records
            if trio.current_time() >= deadline:
                await trio.lowlevel.checkpoint()
                return []
            with trio.move_on_at(deadline):
                await self._wait_data()
            self._check_open()

    def __aiter__(self) -> Consumer:
        return self

    async def __anext__(self) -> ConsumerRecord:
        """The next record, waiting as long as it takes (the iteration never ends)."""
        while True:
            self._check_open()
            tp = self._current
            state = self._states.get(tp) if tp is not None else None
            if state is not None and state.records:
                record = state.records.popleft()
                state.position = record.offset + 1
                if len(state.records) == self.max_poll_records - 1:
                    self._poke()  # the partition just became fetchable again
                self._iterated += 1
                if self._iterated & ITER_YIELD_MASK:
                    await trio.lowlevel.checkpoint_if_cancelled()
                else:
                    await trio.lowlevel.checkpoint()
                return record
            self._raise_pending()
            self._current = self._next_with_records()
            if self._current is None:
                self._poke()
                await self._wait_data()

    def _next_with_records(self) -> TopicPartition | None:
        tps = list(self._states)
        if not tps:
            return None
        self._rotation = (self._rotation + 1) % len(tps)
        for tp in tps[self._rotation :] + tps[: self._rotation]:
            if self._states[tp].records:
                return tp
        return None

    def _raise_pending(self) -> None:
        for state in self._states.values():
            if state.records:
                continue
            if state.corrupt is not None:
                raise state.corrupt
            if state.error is not None:
                error, state.error = state.error, None
                raise error

    def _take(self, max_records: int) -> list[ConsumerRecord]:
        out: list[ConsumerRecord] = []
        tps = [tp for tp, s in self._states.items() if s.records]
        if not tps:
            return out
        self._rotation = (self._rotation + 1) % len(tps)
        for tp in tps[self._rotation :] + tps[: self._rotation]:
            state = self._states[tp]
            records = state.records
            want = max_records - len(out)
            if len(records) <= want:
                out.extend(records)
                records.clear()
            else:
                out.extend(records.popleft() for _ in range(want))
            state.position = out[-1].offset + 1
            if len(out) >= max_records:
                break
        return out

    async def _wait_data(self) -> None:
        if self._data.is_set():
            self._data = trio.Event()
        await self._data.wait()

    def _signal_data(self) -> None:
        self._data.set()

    def _poke(self) -> None:
        if self._open:
            self._wake.set()

    # -- the manager -------------------------------------------------------------------------

    async def _manager(self) -> None:
        while True:
            self._wake = trio.Event()
            now = trio.current_time()
            deadline = min(now + 1.0, self._maybe_refresh(now))
            self._start_resets()
            self._start_fetches(now)
            if self._subscription is not None:
                deadline = min(deadline, self._metadata_at + self.metadata_max_age_s)
            for state in self._states.values():
                if state.retry_at > now:
                    deadline = min(deadline, state.retry_at)
            with trio.move_on_at(max(deadline, now + 0.001)):
                await self._wake.wait()

    def _maybe_refresh(self, now: float) -> float:
        """Start a metadata refresh if one is needed and allowed now; when to look again."""
        if self._refreshing:
            return math.inf
        meta = self._cluster.metadata
        topics = set(self._want_metadata)
        topics.update(tp[0] for tp in self._states if meta.leader_for(tp) is None)
        if self._subscription is not None and now >= self._metadata_at + self.metadata_max_age_s:
            topics |= self._subscription
        if not topics:
            return math.inf
        allowed = self._metadata_allowed_at
        if now < allowed:
            return allowed  # rate limit
        self._want_metadata.clear()
        self._refreshing = True
        self._nursery.start_soon(self._refresh, frozenset(topics))
        return math.inf

    async def _refresh(self, topics: frozenset[str]) -> None:
        """Refresh `topics`; the next refresh is allowed after a backoff that grows while
        refreshes fail or leave assigned partitions without a reachable leader (capped at
        METADATA_RETRY_MAX_S). A partition whose leader changed is fetched at once, without
        waiting out the backoff its failures against the old leader had earned."""
        ok = False
        cluster = self._cluster
        before = {tp: cluster.metadata.leader_for(tp) for tp in self._states if tp[0] in topics}
        try:
            await cluster.refresh(topics)
            ok = True
        except SluiceError:
            self._want_metadata |= topics
        finally:
            now = self._metadata_at = trio.current_time()
            meta = cluster.metadata
            stale = False
            for tp, old in before.items():
                leader = meta.leader_for(tp)
                state = self._states.get(tp)
                if leader is None or cluster.unreachable(leader):
                    stale = True
                    self._want_metadata.add(tp[0])
                elif leader != old and state is not None:
                    state.retry_at = 0.0
                    state.attempts = 0
            if ok and not stale:
                self._metadata_failures = 0
                self._metadata_allowed_at = now + self._backoff.base_s
            else:
                delay = min(self._backoff.delay(self._metadata_failures), METADATA_RETRY_MAX_S)
                self._metadata_allowed_at = now + delay
                self._metadata_failures += 1
            self._refreshing = False
            self._apply_subscription()
            self._poke()

    def _apply_subscription(self) -> None:
        if self._subscription is None:
            return
        wanted: set[TopicPartition] = set()
        for name in self._subscription:
            count = self._cluster.metadata.partition_count(name)
            if count is not None:
                wanted.update((name, p) for p in range(count))
            else:
                wanted.update(tp for tp in self._states if tp[0] == name)
        if wanted != set(self._states):
            self._set_assignment(wanted)

    def _start_resets(self) -> None:
        by_leader: dict[int, list[TopicPartition]] = {}
        meta = self._cluster.metadata
        now = trio.current_time()
        for tp, state in self._states.items():
            if state.position is not None or tp in self._resetting or state.error is not None:
                continue
            if now < state.retry_at:
                continue
            if state.reset_mode == "none":
                state.error = OffsetOutOfRangeError(
                    f"{tp[0]}[{tp[1]}] has no position and auto_offset_reset is 'none': seek()"
                )
                self._signal_data()
                continue
            leader = meta.leader_for(tp)
            if leader is None:
                self._want_metadata.add(tp[0])
                continue
            by_leader.setdefault(leader, []).append(tp)
        for leader, tps in by_leader.items():
            self._resetting.update(tps)
            self._nursery.start_soon(self._reset, leader, tps)

    async def _reset(self, leader: int, tps: list[TopicPartition]) -> None:
        generations = {tp: self._states[tp].generation for tp in tps if tp in self._states}
        topics: dict[str, list[ListOffsetsPartition]] = {}
        for tp in generations:
            mode = self._states[tp].reset_mode
            stamp = LATEST_TIMESTAMP if mode == "latest" else EARLIEST_TIMESTAMP
            topics.setdefault(tp[0], []).append(
                ListOffsetsPartition(partition=tp[1], timestamp=stamp)
            )
        request = ListOffsetsRequest(
            topics=tuple(ListOffsetsTopic(name=n, partitions=tuple(p)) for n, p in topics.items()),
            isolation=self.isolation,
        )
        try:
            response = await self._cluster.request(leader, request)
        except SluiceError as e:
            for tp in generations:
                self._retry_later(tp, e)
            return
        finally:
            self._resetting.difference_update(tps)
            self._poke()
        assert isinstance(response, ListOffsetsResponse)
        for t in response.topics:
            for p in t.partitions:
                tp = (t.name, p.partition)
                state = self._states.get(tp)
                if state is None or generations.get(tp) != state.generation:
                    continue
                if p.error is not ErrorCode.NONE:
                    self._retry_later(tp, error_for(p.error, f"list offsets of {tp}"))
                    continue
                state.position = state.fetch_offset = p.offset
                state.reset_mode = self.auto_offset_reset
                state.attempts = 0
        self._signal_data()

    def _retry_later(self, tp: TopicPartition, error: SluiceError) -> None:
        state = self._states.get(tp)
        if state is None:
            return
        if not error.retriable:
            state.error = error  # raised once by poll; the fetch is retried after backoff
            self._signal_data()
        state.retry_at = trio.current_time() + self._backoff.delay(state.attempts)
        state.attempts += 1
        if needs_metadata(error):
            if isinstance(error, LeadershipError):
                self._cluster.metadata.invalidate(tp)
            self._want_metadata.add(tp[0])

    def _start_fetches(self, now: float) -> None:
        meta = self._cluster.metadata
        by_leader: dict[int, list[TopicPartition]] = {}
        for tp, state in self._states.items():
            if not state.fetchable(now, self.max_poll_records):
                continue
            leader = meta.leader_for(tp)
            if leader is None:
                self._want_metadata.add(tp[0])
                continue
            if leader not in self._fetching:
                by_leader.setdefault(leader, []).append(tp)
        for leader, tps in by_leader.items():
            self._fetching.add(leader)
            busy = any(
                state.records and meta.leader_for(tp) == leader
                for tp, state in self._states.items()
            )
            wait_ms = min(self.fetch_max_wait_ms, BUSY_MAX_WAIT_MS) if busy else None
            self._nursery.start_soon(self._fetch, leader, tps, wait_ms)

    async def _fetch(
        self, leader: int, tps: list[TopicPartition], wait_ms: int | None = None
    ) -> None:
        try:
            snapshot: dict[TopicPartition, tuple[int, int]] = {}
            topics: dict[str, list[FetchPartition]] = {}
            for tp in tps:
                state = self._states[tp]
                assert state.fetch_offset is not None
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
                max_wait_ms=self.fetch_max_wait_ms if wait_ms is None else wait_ms,
                min_bytes=self.fetch_min_bytes,
                max_bytes=self.fetch_max_bytes,
                isolation=self.isolation,
            )
            try:
                response = await self._cluster.request(
                    leader,
                    request,
                    lane=FETCH_LANE,
                    timeout_s=self.request_timeout_s + self.fetch_max_wait_ms / 1000,
                )
            except SluiceError as e:
                for tp in tps:
                    self._retry_later(tp, e)
                return
            assert isinstance(response, FetchResponse)
            got = False
            for t in response.topics:
                for p in t.partitions:
                    tp = (t.name, p.partition)
                    expected = snapshot.get(tp)
                    current = self._states.get(tp)
                    if expected is None or current is None:
                        continue
                    if (current.generation, current.fetch_offset) != expected:
                        continue  # a seek or reset happened meanwhile
                    got |= self._apply_fetch(tp, current, p)
            if got:
                self._signal_data()
        finally:
            self._fetching.discard(leader)
            self._poke()

    def _apply_fetch(
        self, tp: TopicPartition, state: _PartitionState, result: FetchPartitionResult
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
            self._retry_later(tp, error_for(result.error, result.message))
            if result.leader is not None and self._cluster.metadata.hint(
                tp, result.leader, result.leader_term
            ):
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
        state.fetch_offset = offset
        return len(state.records) > before or state.corrupt is not None

    def _apply_batch(
        self,
        tp: TopicPartition,
        state: _PartitionState,
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
            records = _decode_records(data)
        except CorruptBatchError as e:
            state.corrupt = CorruptBatch(
                tp[0], tp[1], base, _last_offset(data, base, next_base), e.message
            )
            return max(offset, base) if base >= offset else offset
        topic, partition = tp
        append = state.records.append
        for i, r in enumerate(records):
            at = base + i
            if at < offset:
                continue
            append(ConsumerRecord(topic, partition, at, r.key, r.value, r.headers, r.timestamp))
        return max(offset, base + len(records))


def _last_offset(data: bytes, base: int, next_base: int | None) -> int | None:
    """The last offset of a batch that failed to decode: from its header when that is
    intact, else from the next batch's base offset, else unknown."""
    try:
        return base + parse_header(data).record_count - 1
    except BatchError:
        return None if next_base is None else next_base - 1
