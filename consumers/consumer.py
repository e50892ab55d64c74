"""The asynchronous consumer: the Trio shell over `consumers.core.positions.Positions`, and, with
a `group_id`, over the group shell `consumers.group.GroupSession` (membership, commits).

Theory of operation
-------------------
Every decision (positions, resets, which fetches to start, what each fetch and reset answer
does, backoff, when metadata is stale) is the core's; see its module docstring. This shell
owns the I/O and the waiting.

One manager task (in the consumer's nursery) loops: start a metadata refresh when the shared
refresh policy (`consumers.core.refresh.MetadataRefresh`) allows one (for partitions without
a leader, after leadership or connection errors, and for a subscription whose metadata is
older than `metadata_max_age_ms`), start the resets (LIST_OFFSETS) and fetches the core
plans, and sleep until woken or the core's next deadline. Fetches go on the connection lane
"fetch", so a parked long-poll never delays other requests; the buffer holds at most about
`max_poll_records` records per partition plus one fetch answer per leader (each bounded by
fetch_max_bytes).

`poll` first raises the group's fatal or pending error, then a pending CorruptBatch or error
of a partition with nothing buffered before it, then returns buffered records (rotating over
partitions not paused, advancing positions), waiting up to `timeout_ms` for some. `async for
record in consumer` takes records one by one from the same buffers (positions advance per
record) and never ends. Both trigger the group's auto-commit once its interval passed. A
paused partition is neither fetched nor returned until `resume`.

Lookups (`partitions_for`, `beginning_offsets`, `end_offsets`, `offsets_for_times`) ask the
cluster directly, whatever is assigned (`consumers.offset_lookup`): an unknown topic or a
partition out of range fails at once, other errors are retried until their `timeout_ms`.

Without a group, `subscribe` reads every partition of its topics (a pattern: of every topic
whose name it matches, listing all topics every `metadata_max_age_ms`). With a group,
`subscribe` joins it and the coordinator assigns the partitions (`consumers.group`); `assign`
reads exactly the partitions given, from the group's committed offsets.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

import trio
from opentelemetry.trace import Span

from broker.wire.limits import Limits
from broker.wire.messages import (
    EARLIEST_TIMESTAMP,
    LATEST_TIMESTAMP,
    FetchResponse,
    IsolationLevel,
    ListOffsetsResponse,
)
from consumers import offset_lookup
from consumers.cluster import Backoff, Cluster, TopicPartition
from consumers.core.group_member import GroupMetadata
from consumers.core.metadata import MetadataCache
from consumers.core.positions import ConsumerRecord, FetchPlan, Positions
from consumers.core.refresh import MetadataRefresh
from consumers.durations import duration_ms
from consumers.errors import (
    ClientClosedError,
    InvalidGroupIdError,
    InvalidRegularExpressionError,
    RequestTimedOutError,
    SluiceError,
)
from consumers.group import CommitCallback, GroupSession, RebalanceCallback
from consumers.tracing import ConsumerSpans, end_span, traceparent

__all__ = [
    "CommitCallback",
    "Consumer",
    "ConsumerRecord",
    "OffsetAndTimestamp",
    "RebalanceCallback",
]

MiB = 1024 * 1024
FETCH_LANE = "fetch"
ITER_YIELD_MASK = 63
"""`async for` yields to the scheduler every 64 records (a checkpoint costs ~6 µs here); it
checks cancellation on every record."""
CLOSE_TIMEOUT_S = 5.0
"""Time `close` gives the group's last commit, revocation and leave (best effort)."""
DEFAULT_POLL_TIMEOUT_MS = 1000.0
"""How long `poll` waits for records when no timeout is given."""


@dataclass(frozen=True, slots=True)
class OffsetAndTimestamp:
    """What `offsets_for_times` found: the offset of the first record at or after the time
    asked, and that record's timestamp (ms since the epoch)."""

    offset: int
    timestamp: int


class Consumer:
    """Reads records from assigned partitions; use as `async with Consumer(...) as c`.

    Without a group: `assign` the partitions (or `subscribe` to every partition of topics).
    With `group_id`: `subscribe` joins the consumer group (the coordinator assigns the
    partitions); commits go to the group, automatically unless `enable_auto_commit` is False.
    Records come from `poll` or `async for record in consumer`."""

    def __init__(
        self,
        bootstrap: str | Sequence[str] = "127.0.0.1:9092",
        *,
        group_id: str | None = None,
        group_instance_id: str | None = None,
        session_timeout_ms: int = 10_000,
        group_assignor: str | None = None,
        auto_commit_interval_ms: int = 5_000,
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
        """Configure (nothing connects before `async with`). Durations are in milliseconds.

        - `bootstrap`: brokers to start from, "host:port[,host:port...]" or a list of them.
        - `group_id`: the consumer group to join or commit to (1-255 characters); None: no
          group (no commits).
        - `group_instance_id`: makes the member static (it keeps its partitions across a
          restart within the session timeout); needs `group_id`.
        - `session_timeout_ms`: how long the coordinator waits for a silent member before it
          hands its partitions to others (default 10 s).
        - `group_assignor`: "uniform" or "range"; None: the broker's default.
        - `auto_commit_interval_ms`: how often positions are committed when
          `enable_auto_commit` (default 5 s); they are also committed at close.
        - `isolation`: "read_committed" (default: only committed transactions' records; end
          offsets are last stable offsets) or "read_uncommitted".
        - `auto_offset_reset`: where a partition without a position starts: "earliest"
          (default: its first record), "latest" (only records written from now on) or "none"
          (`poll` raises OffsetOutOfRangeError; `seek` first).
        - `enable_auto_commit`: commit positions every `auto_commit_interval_ms` and at close.
        - `max_poll_records`: records buffered per partition (and fetched ahead) at most.
        - `fetch_max_wait_ms`: how long a broker may hold a fetch waiting for data (0.5 s).
        - `fetch_min_bytes`: the bytes a broker waits for before answering a fetch (1).
        - `fetch_max_bytes`: bytes per fetch answer at most (50 MiB).
        - `max_partition_fetch_bytes`: bytes per partition in a fetch answer at most (1 MiB;
          the first batch comes whole even if larger).
        - `request_timeout_ms`: how long one request may take (30 s); also the default
          timeout of `position` and of the offset lookups.
        - `metadata_max_age_ms`: how often a subscription looks for new partitions (5 s).
        - `client_id`: the name sent with every request (brokers' logs and metrics); None:
          none.
        - `retry_backoff_ms`, `retry_backoff_max_ms`: the first and the longest wait between
          retries of a failed request (0.1 s, 1 s; exponential with jitter between).
        """
        if group_id is not None and not 0 < len(group_id) <= 255:
            raise ValueError("group_id must have 1 to 255 characters")
        if group_instance_id is not None and (group_id is None or not group_instance_id):
            raise ValueError("group_instance_id needs a group_id (and must not be empty)")
        if session_timeout_ms < 1 or auto_commit_interval_ms < 1:
            raise ValueError("session_timeout_ms and auto_commit_interval_ms must be >= 1")
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
        self.group_id = group_id
        self.enable_auto_commit = enable_auto_commit
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
        self._metadata = MetadataCache()
        self._refresh = MetadataRefresh(self._backoff)
        self._positions = Positions(
            auto_offset_reset=auto_offset_reset,
            isolation=self.isolation,
            max_poll_records=max_poll_records,
            fetch_max_wait_ms=fetch_max_wait_ms,
            fetch_min_bytes=fetch_min_bytes,
            fetch_max_bytes=fetch_max_bytes,
            max_partition_fetch_bytes=self.max_partition_fetch_bytes,
            metadata=self._metadata,
            refresh=self._refresh,
            backoff=self._backoff,
            on_data=self._signal_data,
        )
        self._group = (
            None
            if group_id is None
            else GroupSession(
                group_id=group_id,
                instance_id=group_instance_id,
                session_timeout_ms=session_timeout_ms,
                assignor=group_assignor,
                positions=self._positions,
                backoff=self._backoff,
                request_timeout_s=self.request_timeout_s,
                enable_auto_commit=enable_auto_commit,
                auto_commit_interval_s=auto_commit_interval_ms / 1000,
                on_change=self._poke,
                on_data=self._signal_data,
            )
        )
        self._spans = ConsumerSpans(group_id, client_id)
        self._open = False
        self._closed = False
        self._stack: AsyncExitStack | None = None
        self._iterated = 0
        self._wake = trio.Event()
        self._data = trio.Event()

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Consumer:
        """Connect (bootstrap) and start the background tasks; a Consumer is entered once."""
        if self._stack is not None:
            raise RuntimeError("a Consumer is entered once")
        self._cluster = Cluster(
            self.bootstrap,
            client_id=self.client_id,
            request_timeout_s=self.request_timeout_s,
            max_in_flight_per_connection=5,
            limits=Limits(max_frame_bytes=max(16 * MiB, self.fetch_max_bytes + MiB)),
            backoff=self._backoff,
            metadata=self._metadata,
        )
        stack = AsyncExitStack()
        self._stack = stack
        try:
            await stack.enter_async_context(self._cluster)
            self._nursery = await stack.enter_async_context(trio.open_nursery())
            self._nursery.start_soon(self._manager)
            if self._group is not None:
                self._group.start(self._cluster, self._nursery)
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
        """Close (see `close`)."""
        await self.close()

    async def close(self) -> None:
        """Close; with a group, first commit (auto-commit), revoke and leave, within
        CLOSE_TIMEOUT_S (a callback's exception is raised once the consumer is closed).

        Closed from a cancelled scope (the task around `async with` was cancelled), the
        consumer's connections are being cancelled with it: nothing can be sent, so it closes
        at once without committing or leaving (its partitions move when its session times
        out; what it read since its last commit is read again by their next owner)."""
        if self._stack is None:
            return
        self._spans.done_processing()
        cancelled = trio.current_effective_deadline() == float("-inf")
        try:
            if self._group is not None and self._open and not cancelled:
                with trio.CancelScope(deadline=trio.current_time() + CLOSE_TIMEOUT_S, shield=True):
                    await self._group.close()
        finally:
            await self._shutdown()

    async def _shutdown(self) -> None:
        if self._stack is None:
            return
        self._open = False
        self._closed = True
        self._nursery.cancel_scope.cancel()
        self._data.set()
        stack, self._stack = self._stack, None
        await stack.aclose()

    def _check_open(self) -> None:
        if not self._open:
            raise ClientClosedError("the consumer is not open (use `async with Consumer(...)`)")

    def __repr__(self) -> str:
        """`<Consumer bootstrap=... group_id=... topics=[...] open>`: what it reads, briefly."""
        parts = [f"bootstrap={self.bootstrap!r}"]
        if self.group_id is not None:
            parts.append(f"group_id={self.group_id!r}")
        topics = sorted(self.subscription())
        pattern = self._positions.pattern
        if topics:
            parts.append(f"topics={topics}")
        if pattern is not None:
            parts.append(f"pattern={pattern.pattern!r}")
        if not topics and pattern is None and self._positions.partitions:
            parts.append(f"assigned={len(self._positions.partitions)} partitions")
        parts.append("open" if self._open else "closed" if self._closed else "not open")
        return f"<Consumer {' '.join(parts)}>"

    # -- assignment and positions ------------------------------------------------------------

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        """Read exactly these partitions (replacing any assignment); new ones start at the
        group's committed offset (with a group_id), else at auto_offset_reset, unless `seek`
        says otherwise.

        With a group_id this is a "simple consumer": it does not join the group, and its
        commits carry member id "" and epoch -1, which the coordinator accepts only while the
        group has no live members."""
        group = self._group
        if group is None:
            self._positions.assign(partitions)
        elif group.member_mode:
            raise ValueError("assign() and subscribe() exclude each other: unsubscribe() first")
        else:
            wanted = {(t, int(p)) for t, p in partitions}
            before = set(self._positions.partitions)
            removed = group.stop_reading(before - wanted)
            self._positions.assign(wanted)
            group.manual_assign(frozenset(wanted - before), removed)
        self._poke()

    def subscribe(
        self,
        topics: Iterable[str] | None = None,
        *,
        pattern: str | None = None,
        on_assigned: RebalanceCallback | None = None,
        on_revoked: RebalanceCallback | None = None,
        on_lost: RebalanceCallback | None = None,
    ) -> None:
        """Read these topics and/or every topic whose whole name `pattern` matches (Python
        `re`; internal `__` topics never match).

        Without a group: every partition, this consumer alone, following partitions and
        topics as they appear in metadata. With a group: join it (or change the
        subscription); the coordinator assigns partitions. The callbacks (plain or async,
        called with a frozenset of (topic, partition), in the consumer's background task, one
        at a time) say: `on_assigned` the partitions are this member's (their positions are
        the committed offsets: `seek` may move them before the first fetch); `on_revoked`
        they stop being read (their positions were committed with auto-commit; called for
        everything at close); `on_lost` they were lost without a commit (fenced, or the
        coordinator unreachable for 2/3 of the session timeout; `on_revoked` if not given)."""
        names = frozenset(
            () if topics is None else ([topics] if isinstance(topics, str) else topics)
        )
        if not names and pattern is None:
            raise ValueError("subscribe to topics, a pattern, or both")
        compiled: re.Pattern[str] | None = None
        if pattern is not None:
            try:
                compiled = re.compile(pattern)
            except re.error as e:
                raise InvalidRegularExpressionError(f"pattern {pattern!r}: {e}") from None
        group = self._group
        if group is None:
            if on_assigned is not None or on_revoked is not None or on_lost is not None:
                raise ValueError("on_assigned/on_revoked/on_lost need a group_id")
            self._positions.subscribe(names, compiled)
        else:
            if self._positions.partitions and not group.member_mode:
                raise ValueError("assign() and subscribe() exclude each other: assign([]) first")
            group.on_assigned, group.on_revoked, group.on_lost = on_assigned, on_revoked, on_lost
            group.subscribe(names, pattern)
        self._poke()

    def unsubscribe(self) -> None:
        """Stop reading; with a group, revoke every partition (committing with auto-commit)
        and leave the group, in the background."""
        group = self._group
        if group is not None and group.member_mode:
            group.unsubscribe()
        elif group is not None:
            self.assign([])  # a simple consumer: commits what it read (auto-commit)
        else:
            self._positions.unsubscribe()
        self._poke()

    def subscription(self) -> frozenset[str]:
        """The topics named by `subscribe` (not those a pattern matches)."""
        if self._group is not None and self._group.member.subscribed:
            return frozenset(self._group.member.subscription.topics)
        return self._positions.subscription or frozenset()

    def assignment(self) -> frozenset[TopicPartition]:
        """The partitions being read: in a group, those owned and handed over by
        `on_assigned`, until their revocation starts."""
        return frozenset(self._positions.partitions)

    def pause(self, partitions: Iterable[TopicPartition]) -> None:
        """Stop fetching these assigned partitions, and hold back their buffered records,
        until `resume` (ValueError for a partition not assigned)."""
        self._positions.pause(partitions)
        self._poke()

    def resume(self, partitions: Iterable[TopicPartition]) -> None:
        """Fetch and return these paused partitions' records again (ValueError for a
        partition not assigned)."""
        self._positions.resume(partitions)
        self._signal_data()
        self._poke()

    def paused(self) -> frozenset[TopicPartition]:
        """The partitions `pause` holds back."""
        return frozenset(self._positions.paused)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        """The next record returned for `tp` will be the one at `offset`."""
        self._positions.seek(tp, offset)
        self._poke()

    def seek_to_beginning(self, partitions: Iterable[TopicPartition] | None = None) -> None:
        """Read these partitions (None: every assigned one) from their first record (the log
        start, looked up before the next fetch)."""
        self._positions.seek_reset(partitions, "earliest")
        self._poke()

    def seek_to_end(self, partitions: Iterable[TopicPartition] | None = None) -> None:
        """Read only records written after the end these partitions (None: every assigned
        one) have when it is looked up (the last stable offset under read_committed)."""
        self._positions.seek_reset(partitions, "latest")
        self._poke()

    def skip_corrupt(self, tp: TopicPartition) -> int:
        """Move past the corrupt batch `poll` raised for `tp`; returns the new position.
        ValueError when `tp` is not stopped at a corrupt batch, or its extent is unknown
        (then seek past it)."""
        position = self._positions.skip_corrupt(tp)
        self._poke()
        return position

    async def position(self, tp: TopicPartition) -> int:
        """The offset of the next record `poll` would return for `tp` (resolving
        auto_offset_reset first if needed; RequestTimedOutError after request_timeout)."""
        self._check_open()
        state = self._positions.get(tp)
        with trio.move_on_after(self.request_timeout_s):
            while state.position is None:
                if state.error is not None:
                    error, state.error = state.error, None
                    raise error
                self._poke()
                await self._wait_data()
                self._check_open()
                state = self._positions.get(tp)
            return state.position
        raise RequestTimedOutError(f"the position of {tp!r} could not be resolved in time")

    async def commit(self, offsets: Mapping[TopicPartition, int] | None = None) -> None:
        """Commit to the group and return once the coordinator applied it. `offsets`: the
        next offset to read per partition; None: the current positions of the partitions
        being read. Raises the typed error (StaleMemberEpochError for a partition this member
        no longer owns, FencedMemberEpochError when the member lost everything,
        RequestTimedOutError after request_timeout)."""
        self._spans.done_processing()
        await self._committer().commit(offsets)

    def commit_async(
        self,
        offsets: Mapping[TopicPartition, int] | None = None,
        callback: CommitCallback | None = None,
    ) -> None:
        """Start a commit (as `commit`, taken in order after earlier ones) and return at once;
        `callback(offsets, error or None)` runs when it ended (a failure without a callback
        is logged)."""
        self._committer().commit_async(offsets, callback)

    async def committed(
        self, partitions: Iterable[TopicPartition]
    ) -> dict[TopicPartition, int | None]:
        """The group's committed offsets (None: nothing committed)."""
        return await self._committer().committed(partitions)

    def group_metadata(self) -> GroupMetadata:
        """This consumer's group and membership, for `Producer.send_offsets_to_transaction`
        (offsets committed in a transaction are refused once the member's epoch moved on)."""
        session = self._committer()
        if session.member_mode:
            member = session.member
            return GroupMetadata(session.group_id, member.member_id, member.member_epoch)
        return GroupMetadata(session.group_id)

    def _committer(self) -> GroupSession:
        self._check_open()
        if self._group is None:
            raise InvalidGroupIdError("commits need a consumer with a group_id")
        return self._group

    # -- lookups -----------------------------------------------------------------------------

    async def partitions_for(self, topic: str, *, timeout_ms: float | None = None) -> list[int]:
        """The partitions of `topic` (0 to n-1), from fresh metadata. UnknownTopicError (not
        retriable) at once when the topic does not exist; other errors (no broker reachable)
        are retried for `timeout_ms` (default: request_timeout_ms), then raised."""
        self._check_open()
        counts = await offset_lookup.topic_partitions(
            self._cluster, (topic,), self._lookup_deadline(timeout_ms)
        )
        return list(range(counts[topic]))

    async def beginning_offsets(
        self, partitions: Iterable[TopicPartition], *, timeout_ms: float | None = None
    ) -> dict[TopicPartition, int]:
        """The first offset of each partition (its log start), assigned or not.
        UnknownTopicError (not retriable) at once for a missing topic or a partition out of
        range; other errors are retried for `timeout_ms` (default: request_timeout_ms)."""
        return await self._list_offsets(partitions, EARLIEST_TIMESTAMP, timeout_ms)

    async def end_offsets(
        self, partitions: Iterable[TopicPartition], *, timeout_ms: float | None = None
    ) -> dict[TopicPartition, int]:
        """The end of each partition, the offset the next record written will take as this
        consumer's isolation sees it: the high watermark, or under read_committed the last
        stable offset (as Kafka's endOffsets). Errors as `beginning_offsets`."""
        return await self._list_offsets(partitions, LATEST_TIMESTAMP, timeout_ms)

    async def offsets_for_times(
        self, timestamps: Mapping[TopicPartition, int], *, timeout_ms: float | None = None
    ) -> dict[TopicPartition, OffsetAndTimestamp | None]:
        """For each partition, the first record whose timestamp is at or after the time given
        (ms since the epoch): its offset and timestamp; None where no record (this consumer's
        isolation may read) is that new. Errors as `beginning_offsets`; ValueError for a
        negative time."""
        self._check_open()
        stamps = {(t, int(p)): int(ms) for (t, p), ms in timestamps.items()}
        if any(ms < 0 for ms in stamps.values()):
            raise ValueError("timestamps are milliseconds since the epoch, >= 0")
        deadline = self._lookup_deadline(timeout_ms)
        await offset_lookup.check_partitions(self._cluster, stamps, deadline)
        starts = await offset_lookup.list_offsets(self._cluster, stamps, self.isolation, deadline)
        out: dict[TopicPartition, OffsetAndTimestamp | None] = {}
        for tp, ms in stamps.items():
            found = await offset_lookup.first_at_or_after(
                self._cluster,
                tp,
                starts[tp],
                ms,
                isolation=self.isolation,
                max_bytes=self.max_partition_fetch_bytes,
                deadline=deadline,
            )
            out[tp] = None if found is None else OffsetAndTimestamp(*found)
        return out

    async def _list_offsets(
        self, partitions: Iterable[TopicPartition], stamp: int, timeout_ms: float | None
    ) -> dict[TopicPartition, int]:
        self._check_open()
        deadline = self._lookup_deadline(timeout_ms)
        tps = await offset_lookup.check_partitions(self._cluster, partitions, deadline)
        stamps = dict.fromkeys(tps, stamp)
        return await offset_lookup.list_offsets(self._cluster, stamps, self.isolation, deadline)

    def _lookup_deadline(self, timeout_ms: float | None) -> float:
        """The trio deadline of a lookup given `timeout_ms` (None: request_timeout_ms)."""
        if timeout_ms is not None and timeout_ms < 0:
            raise ValueError(f"timeout_ms must not be negative, got {timeout_ms}")
        wait_s = self.request_timeout_s if timeout_ms is None else timeout_ms / 1000
        return trio.current_time() + wait_s

    # -- reading -----------------------------------------------------------------------------

    async def poll(
        self,
        timeout: float | None = None,
        max_records: int = 500,
        *,
        timeout_ms: float | None = None,
    ) -> list[ConsumerRecord]:
        """Buffered records (at most `max_records`), waiting up to `timeout_ms` milliseconds
        (default 1000) for some; possibly empty. `timeout` is the older name, in seconds
        (TypeError if both are given). Paused partitions' records are held back. Raises
        CorruptBatch / a partition's error (see the module)."""
        wait_ms = duration_ms("timeout_ms", timeout_ms, "timeout", timeout, DEFAULT_POLL_TIMEOUT_MS)
        assert wait_ms is not None
        self._check_open()
        if max_records < 1:
            raise ValueError("max_records must be >= 1")
        self._spans.done_processing()
        called_ns = time.time_ns()
        now = trio.current_time()
        deadline = now + wait_ms / 1000
        group = self._group
        if group is not None:
            group.maybe_auto_commit(now)
        while True:
            if group is not None:
                group.raise_pending()
            self._positions.raise_pending()
            records = self._positions.take(max_records)
            if records:
                self._poke()
                self._spans.polled(records, called_ns)
                await trio.lowlevel.checkpoint()
                return records
            if trio.current_time() >= deadline:
                await trio.lowlevel.checkpoint()
                return []
            with trio.move_on_at(deadline):
                await self._wait_data()
            self._check_open()

    def __aiter__(self) -> Consumer:
        """`async for record in consumer`: every record, one at a time, never ending."""
        return self

    async def __anext__(self) -> ConsumerRecord:
        """The next record, waiting as long as it takes (the iteration never ends)."""
        group = self._group
        if group is not None and not self._iterated & ITER_YIELD_MASK:
            # Every 64 records (and when waiting for data): the group's errors, and the
            # auto-commit of what the iteration returned before.
            group.raise_pending()
            group.maybe_auto_commit(trio.current_time())
        while True:
            self._check_open()
            taken = self._positions.next_record()
            if taken is not None:
                record, refetch = taken
                if refetch:
                    self._poke()  # the partition just became fetchable again
                self._iterated += 1
                if self._iterated & ITER_YIELD_MASK:
                    await trio.lowlevel.checkpoint_if_cancelled()
                else:
                    await trio.lowlevel.checkpoint()
                return record
            if group is not None:
                group.raise_pending()
                group.maybe_auto_commit(trio.current_time())
            self._poke()
            await self._wait_data()

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
        positions = self._positions
        while True:
            self._wake = trio.Event()
            now = trio.current_time()
            positions.want_metadata(now, self.metadata_max_age_s)
            topics = self._refresh.start(now, _always)
            if topics is not None:
                self._nursery.start_soon(self._refresh_metadata, topics)
            for leader, tps in positions.resets_due(now).items():
                self._nursery.start_soon(self._reset, leader, tps)
            for plan in positions.fetches_due(now):
                self._nursery.start_soon(self._fetch, plan)
            if positions.listing_due(now):
                self._nursery.start_soon(self._list_topics)
            deadline = positions.next_deadline(now, self.metadata_max_age_s)
            with trio.move_on_at(max(deadline, now + 0.001)):
                await self._wake.wait()

    async def _refresh_metadata(self, topics: frozenset[str]) -> None:
        """Refresh `topics`; the policy spaces the next refresh (see consumers.core.refresh)."""
        cluster = self._cluster
        before = self._positions.leaders(topics)
        ok = False
        try:
            await cluster.refresh(topics)
            ok = True
        except SluiceError:
            pass
        finally:
            now = trio.current_time()
            stale = self._positions.refreshed(now, before, cluster.unreachable)
            self._refresh.finish(now, topics, ok, stale)
            self._poke()

    async def _list_topics(self) -> None:
        """List every topic for a pattern subscription (then apply it)."""
        cluster = self._cluster
        positions = self._positions
        before = positions.leaders(t for t, _ in positions.partitions)
        try:
            await cluster.refresh(None)
        except SluiceError:
            positions.listed(trio.current_time(), False, self.metadata_max_age_s)
        else:
            now = trio.current_time()
            positions.refreshed(now, before, cluster.unreachable)
            positions.listed(now, True, self.metadata_max_age_s)
        self._poke()

    async def _reset(self, leader: int, tps: list[TopicPartition]) -> None:
        positions = self._positions
        request, generations = positions.list_offsets_request(tps)
        try:
            response = await self._cluster.request(leader, request)
        except SluiceError as e:
            for tp in generations:
                positions.retry_later(tp, e, trio.current_time())
            return
        finally:
            positions.resetting.difference_update(tps)
            self._poke()
        assert isinstance(response, ListOffsetsResponse)
        positions.on_list_offsets(generations, response, trio.current_time())
        self._signal_data()

    async def _fetch(self, plan: FetchPlan) -> None:
        positions = self._positions
        span: Span | None = None
        try:
            request, snapshot = positions.fetch_request(plan)
            if not snapshot:
                return
            leader = self._metadata.brokers.get(plan.leader)
            span = self._spans.fetch_started(
                (tp[0] for tp in plan.tps), None if leader is None else leader.address
            )
            if span is not None:
                request = dataclasses.replace(request, trace_context=traceparent(span))
            try:
                response = await self._cluster.request(
                    plan.leader,
                    request,
                    lane=FETCH_LANE,
                    timeout_s=self.request_timeout_s + self.fetch_max_wait_ms / 1000,
                )
            except SluiceError as e:
                positions.fetch_failed(plan.tps, e, trio.current_time())
                if span is not None:
                    end_span(span, e)
                    span = None
                return
            assert isinstance(response, FetchResponse)
            if positions.on_fetch(snapshot, response, trio.current_time()):
                self._signal_data()
        finally:
            if span is not None:
                span.end()
            positions.fetching.discard(plan.leader)
            self._poke()


def _always(topic: str) -> bool:
    """A consumer asks again for every topic a refresh left stale."""
    return True
