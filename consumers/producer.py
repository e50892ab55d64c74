"""The asynchronous producer.

Theory of operation
-------------------
`send`/`send_nowait` build a `Record`, pick its partition (explicit, keyed through the pinned
partitioner over the topic's partition count, or sticky for keyless records) and append it
to the `Accumulator`; the returned `Delivery` resolves when its batch does. Records of a topic
whose metadata is not known yet wait, in order, in an unrouted queue (`send` instead waits
for the metadata and raises UnknownTopicError past the delivery timeout).

One sender task (in the producer's nursery) loops: seal batches that lingered, route
unrouted records, fail batches past their delivery deadline, obtain or bump the producer id,
then drain. Draining groups sendable batches by their partition's leader (from metadata;
unknown leaders trigger a refresh) and writes ONE produce request per leader holding at most
one batch per partition, while that leader's connection has a free in-flight slot
(`max_in_flight` per connection). Requests are written by the sender itself, so they leave in
drain order; a task per request awaits the answer and applies it.

Idempotence (default): InitProducerId before the first batch; `ProducerSequences` assigns
each batch's base sequence when it is first sent (the batch is encoded then, once) and
decides on every partition result:
- ACKED: the batch's deliveries resolve with base_offset + index;
- RETRY: the same bytes are resent, after backoff, to the partition's current leader
  (metadata refreshed after leadership, unknown-topic and connection errors). While a
  partition has batches to retry, nothing new is sent to it and retries go one at a time,
  oldest first, once nothing of the partition is in flight: order within a partition is kept;
- FAIL_AND_BUMP_EPOCH: the batch fails; no new sequence is assigned until every batch still
  in flight is resolved, then InitProducerId(id, epoch) bumps the epoch and all partitions
  restart at sequence 0 (no gap is ever left);
- FATAL (fenced): everything queued fails with ProducerFencedError, and so does every later
  send.
At most `max_in_flight` (<= 5, the broker's dedup window) batches per partition are in flight.
A batch still unacknowledged at its delivery deadline (`delivery_timeout_s` after its first
record) fails with its last error; if it was ever sent, the epoch is bumped after it.

Without idempotence (`idempotent=False`) batches carry producer id -1: a retry after a lost
answer may write a batch twice, and a retried batch may land after a later one.

Buffer: the estimated bytes of all unacknowledged records are bounded by `buffer_bytes`;
`send` waits for room (a record larger than the whole buffer is let in when it is empty),
`send_nowait` raises BufferFull. `flush` seals every open batch and waits for every record
queued so far; it raises the first failure since the previous flush. Leaving `async with`
normally flushes (bounded by the delivery timeout) and raises that failure; leaving with an
exception flushes likewise but raises nothing of its own. Records still queued after that
fail with ClientClosedError.
"""

from __future__ import annotations

import copy
import functools
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

import trio

from broker.wire.batch import Record, encode_batch
from broker.wire.errors import ErrorCode
from broker.wire.messages import (
    InitProducerIdRequest,
    InitProducerIdResponse,
    ProducePartition,
    ProduceRequest,
    ProduceResponse,
    ProduceTopic,
)
from broker.wire.partitioner import default_partition, murmur2_partition
from broker.wire.producer import DecisionKind, ProducerSequences, ProducerState
from consumers._accumulator import Accumulator, Batch, record_size
from consumers.cluster import (
    METADATA_RETRY_MAX_S,
    Backoff,
    Cluster,
    TopicPartition,
    needs_metadata,
)
from consumers.connection import Connection, Pending
from consumers.errors import (
    BufferFull,
    ClientClosedError,
    LeadershipError,
    MessageTooLargeError,
    ProducerFencedError,
    RequestTimedOutError,
    SluiceError,
    TransactionsNotSupported,
    UnknownTopicError,
    error_for,
)

__all__ = ["Delivery", "Producer", "RecordMetadata"]

KiB = 1024
MiB = 1024 * KiB
DEFAULT_MAX_MESSAGE_BYTES = 1 * MiB
"""The broker's default max.message.bytes when the topic's config does not name one."""
BATCH_OVERHEAD = 64
"""Bytes a batch adds to its records (42-byte header, array head), rounded up."""

Headers = Sequence[tuple[str, bytes]] | Mapping[str, bytes] | None


@dataclass(frozen=True, slots=True)
class RecordMetadata:
    """Where an acknowledged record was written."""

    topic: str
    partition: int
    offset: int
    timestamp: int


class Delivery:
    """The outcome of one sent record: `await delivery.wait()`."""

    __slots__ = ("_batch", "_error", "_index", "_routed", "timestamp", "topic")

    def __init__(self, topic: str, timestamp: int) -> None:
        self.topic = topic
        self.timestamp = timestamp
        self._batch: Batch | None = None
        self._index = 0
        self._routed: trio.Event | None = None
        self._error: SluiceError | None = None

    def _bind(self, batch: Batch, index: int) -> None:
        self._batch = batch
        self._index = index
        if self._routed is not None:
            self._routed.set()

    def _fail_unrouted(self, error: SluiceError) -> None:
        self._error = error
        if self._routed is not None:
            self._routed.set()

    @property
    def done(self) -> bool:
        if self._error is not None:
            return True
        return self._batch is not None and self._batch.done.is_set()

    @property
    def settled_at(self) -> float | None:
        """Trio time at which the record's acknowledgement (or its batch's failure) arrived;
        None while pending or when it failed before it was routed."""
        return None if self._batch is None else self._batch.settled_at

    async def wait(self) -> RecordMetadata:
        """The record's metadata once acknowledged; raises its typed error if it failed."""
        if self._batch is None and self._error is None:
            assert self._routed is not None
            await self._routed.wait()
        batch = self._batch
        if batch is None:
            assert self._error is not None
            raise _fresh(self._error)
        await batch.done.wait()
        return self.result()

    def result(self) -> RecordMetadata:
        """The outcome now: metadata, the typed error, or RuntimeError while pending."""
        if self._error is not None:
            raise _fresh(self._error)
        batch = self._batch
        if batch is None or not batch.done.is_set():
            raise RuntimeError("the record is not acknowledged yet")
        if batch.error is not None:
            raise _fresh(batch.error)
        topic, partition = batch.tp
        return RecordMetadata(topic, partition, batch.base_offset + self._index, self.timestamp)


def _fresh(error: SluiceError) -> SluiceError:
    """A copy to raise (one failure is raised by every delivery of its batch)."""
    return copy.copy(error).with_traceback(None)


@dataclass(slots=True)
class _Unrouted:
    record: Record
    key: bytes | None
    partition: int | None
    size: int
    delivery: Delivery
    deadline: float


class _PartitionState:
    __slots__ = ("failed_on", "in_flight", "retry", "retry_at")

    def __init__(self) -> None:
        self.in_flight = 0
        self.retry: list[Batch] = []
        """Batches answered RETRY, oldest (send order) first."""
        self.retry_at = 0.0
        self.failed_on: tuple[int | None, int] = (None, -1)
        """(leader, term) in the metadata when the last retry was decided: a refresh that
        names another one ends the backoff (the retry goes to the new leader at once)."""


def _bytes_or_none(value: object, what: str) -> bytes | None:
    if value is None or type(value) is bytes:
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise TypeError(f"{what} must be bytes or None, not {type(value).__name__}")


def _headers(headers: Headers) -> tuple[tuple[str, bytes], ...]:
    if not headers:
        return ()
    items = headers.items() if isinstance(headers, Mapping) else headers
    out: list[tuple[str, bytes]] = []
    for name, value in items:
        if type(name) is not str:
            raise TypeError(f"a header name must be str, not {type(name).__name__}")
        data = _bytes_or_none(value, "a header value")
        if data is None:
            raise TypeError("a header value must be bytes, not None")
        out.append((name, data))
    return tuple(out)


class Producer:
    """Publishes records to topics; use as `async with Producer(...) as p`."""

    def __init__(
        self,
        bootstrap: str | Sequence[str] = "127.0.0.1:9092",
        *,
        transactional_id: str | None = None,
        idempotent: bool = True,
        linger_ms: float = 5,
        batch_bytes: int = 256 * KiB,
        buffer_bytes: int = 32 * MiB,
        max_in_flight: int = 5,
        delivery_timeout_s: float = 30.0,
        request_timeout_ms: int = 30_000,
        partitioner: Literal["default", "murmur2"] = "default",
        client_id: str | None = None,
        max_request_bytes: int = 8 * MiB,
        retry_backoff_ms: float = 50,
        retry_backoff_max_ms: float = 1000,
    ) -> None:
        if transactional_id is not None:
            raise TransactionsNotSupported(
                "transactional producers are not available yet (transactional_id must be None)"
            )
        if not 1 <= max_in_flight <= 5:
            raise ValueError("max_in_flight must be 1..5 (the broker's dedup window is 5)")
        if batch_bytes < 1 or buffer_bytes < 1 or max_request_bytes < 1:
            raise ValueError("batch_bytes, buffer_bytes and max_request_bytes must be >= 1")
        if linger_ms < 0 or delivery_timeout_s <= 0 or request_timeout_ms < 1:
            raise ValueError("need linger_ms >= 0, delivery_timeout_s > 0, request_timeout_ms > 0")
        partitioners: dict[str, Callable[[bytes, int], int]] = {
            "default": default_partition,
            "murmur2": murmur2_partition,
        }
        if partitioner not in partitioners:
            raise ValueError("partitioner must be 'default' or 'murmur2'")
        self.bootstrap = bootstrap
        self.idempotent = idempotent
        self.linger_s = linger_ms / 1000
        self.batch_bytes = batch_bytes
        self.buffer_bytes = buffer_bytes
        self.max_in_flight = max_in_flight
        self.delivery_timeout_s = delivery_timeout_s
        self.request_timeout_ms = request_timeout_ms
        self.client_id = client_id
        self.max_request_bytes = max_request_bytes
        self._partitioner = partitioners[partitioner]
        self._backoff = Backoff(
            retry_backoff_ms / 1000, max(retry_backoff_ms, retry_backoff_max_ms) / 1000
        )
        self._open = False
        self._closing = False
        self._stack: AsyncExitStack | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Producer:
        if self._open or self._stack is not None:
            raise RuntimeError("a Producer is entered once")
        self._cluster = self._make_cluster()
        self._acc = Accumulator(
            batch_bytes=self.batch_bytes,
            linger_s=self.linger_s,
            delivery_timeout_s=self.delivery_timeout_s,
            partitioner=self._partitioner,
        )
        self._partitions: dict[TopicPartition, _PartitionState] = {}
        self._unrouted: dict[str, deque[_Unrouted]] = {}
        self._incomplete: set[Batch] = set()
        self._buffered = 0
        self._space = trio.Event()
        self._space.set()
        self._wake = trio.Event()
        self._want_topics: set[str] = set()
        self._want_event = trio.Event()
        self._seq: ProducerSequences | None = None
        self._identity_busy = False
        self._fatal: SluiceError | None = None
        self._first_failure: SluiceError | None = None
        self._order = 0
        self._limits: dict[str, int] = {}
        self._limits_version = -1
        self._rotation = 0
        stack = AsyncExitStack()
        self._stack = stack
        try:
            await stack.enter_async_context(self._cluster)
            self._nursery = await stack.enter_async_context(trio.open_nursery())
            self._nursery.start_soon(self._sender)
            self._nursery.start_soon(self._metadata_task)
        except BaseException:
            await stack.aclose()
            raise
        self._open = True
        return self

    def _make_cluster(self) -> Cluster:
        """The cluster this producer talks to (tests substitute a fake with the same
        interface)."""
        return Cluster(
            self.bootstrap,
            client_id=self.client_id,
            request_timeout_s=self.request_timeout_ms / 1000,
            max_in_flight_per_connection=self.max_in_flight,
            backoff=self._backoff,
        )

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        failure: SluiceError | None = None
        if exc is None or isinstance(exc, Exception):
            try:
                await self._close_flush()
            except SluiceError as e:
                failure = e
        await self._shutdown()
        if failure is not None and exc is None:
            raise failure

    async def close(self) -> None:
        """Flush (bounded by the delivery timeout), then close. Raises the flush failure."""
        failure: SluiceError | None = None
        try:
            await self._close_flush()
        except SluiceError as e:
            failure = e
        await self._shutdown()
        if failure is not None:
            raise failure

    async def _close_flush(self) -> None:
        if not self._open or self._closing or self._fatal is not None:
            return  # a fenced producer already failed everything it held
        with trio.move_on_after(self.delivery_timeout_s + 1) as scope:
            await self.flush()
        self._closing = True
        if scope.cancelled_caught:
            raise RequestTimedOutError("close: records were still unacknowledged after the timeout")

    async def _shutdown(self) -> None:
        if self._stack is None:
            return
        self._closing = True
        self._open = False
        self._fail_everything(ClientClosedError("the producer was closed"))
        self._nursery.cancel_scope.cancel()
        stack, self._stack = self._stack, None
        await stack.aclose()

    def _check_open(self) -> None:
        if not self._open or self._closing:
            raise ClientClosedError("the producer is not open (use `async with Producer(...)`)")
        if self._fatal is not None:
            raise _fresh(self._fatal)

    # -- public API --------------------------------------------------------------------------

    async def send(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        headers: Headers = None,
        partition: int | None = None,
        timestamp: int | None = None,
    ) -> Delivery:
        """Queue a record; returns once it is queued (waiting while the buffer is full, and
        for the topic's metadata: UnknownTopicError past the delivery timeout)."""
        await trio.lowlevel.checkpoint()
        self._check_open()
        record, size = self._make_record(value, key, headers, timestamp)
        if self._cluster.metadata.partition_count(topic) is None and topic not in self._unrouted:
            deadline = trio.current_time() + self.delivery_timeout_s
            await self._cluster.topic(topic, deadline)
            self._check_open()
        while self._buffered and self._buffered + size > self.buffer_bytes:
            if self._space.is_set():
                self._space = trio.Event()
            await self._space.wait()
            self._check_open()
        return self._enqueue(topic, record, key, partition, size)

    def send_nowait(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        headers: Headers = None,
        partition: int | None = None,
        timestamp: int | None = None,
    ) -> Delivery:
        """Queue a record without waiting; raises BufferFull when the buffer is full."""
        self._check_open()
        record, size = self._make_record(value, key, headers, timestamp)
        if self._buffered and self._buffered + size > self.buffer_bytes:
            raise BufferFull(
                f"{self._buffered} bytes buffered, limit {self.buffer_bytes}: "
                "await send() or flush() to let it drain"
            )
        return self._enqueue(topic, record, key, partition, size)

    async def send_and_wait(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        headers: Headers = None,
        partition: int | None = None,
        timestamp: int | None = None,
    ) -> RecordMetadata:
        """Send one record and wait for its acknowledgement (flushing its batch at once)."""
        delivery = await self.send(
            topic, value, key=key, headers=headers, partition=partition, timestamp=timestamp
        )
        batch = delivery._batch
        if batch is not None and self._acc.seal(batch):
            self._wake_sender()
        return await delivery.wait()

    async def flush(self) -> None:
        """Send every queued record now and wait until each is acknowledged or failed;
        raises the first failure since the previous flush."""
        self._check_open()
        self._acc.seal_all()
        self._wake_sender()
        unrouted = [u.delivery for q in self._unrouted.values() for u in q]
        batches = list(self._incomplete)
        for delivery in unrouted:
            if delivery._routed is not None:
                await delivery._routed.wait()
            if delivery._batch is not None:
                batches.append(delivery._batch)
        self._acc.seal_all()
        self._wake_sender()
        for batch in batches:
            await batch.done.wait()
        await trio.lowlevel.checkpoint()
        failure, self._first_failure = self._first_failure, None
        if failure is not None:
            raise _fresh(failure)

    def transaction(self) -> AbstractAsyncContextManager[None]:
        """Transactions arrive in a later stage: raises TransactionsNotSupported."""
        raise TransactionsNotSupported("transactions are not available yet")

    async def send_offsets_to_transaction(self, offsets: object, group_metadata: object) -> None:
        """Transactions arrive in a later stage: raises TransactionsNotSupported."""
        await trio.lowlevel.checkpoint()
        raise TransactionsNotSupported("transactions are not available yet")

    @property
    def buffered_bytes(self) -> int:
        """Estimated bytes of records queued and not yet acknowledged or failed."""
        return self._buffered if self._open else 0

    # -- enqueueing --------------------------------------------------------------------------

    def _make_record(
        self, value: object, key: object, headers: Headers, timestamp: int | None
    ) -> tuple[Record, int]:
        v = _bytes_or_none(value, "value")
        k = _bytes_or_none(key, "key")
        h = _headers(headers)
        if timestamp is None:
            timestamp = time.time_ns() // 1_000_000
        elif type(timestamp) is not int:
            raise TypeError("timestamp must be an int (milliseconds)")
        return Record(key=k, value=v, headers=h, timestamp=timestamp), record_size(k, v, h)

    def _batch_limit(self, topic: str) -> int:
        meta = self._cluster.metadata
        if self._limits_version != meta.version:
            self._limits.clear()
            self._limits_version = meta.version
        limit = self._limits.get(topic)
        if limit is None:
            t = meta.topics.get(topic)
            raw = None if t is None else t.config.get("max.message.bytes")
            try:
                max_message = int(raw) if raw is not None else DEFAULT_MAX_MESSAGE_BYTES
            except ValueError:
                max_message = DEFAULT_MAX_MESSAGE_BYTES
            limit = self._limits[topic] = max(
                1, min(self.batch_bytes, max_message - BATCH_OVERHEAD)
            )
        return limit

    def _enqueue(
        self, topic: str, record: Record, key: bytes | None, partition: int | None, size: int
    ) -> Delivery:
        delivery = Delivery(topic, record.timestamp)
        waiting = self._unrouted.get(topic)
        count = self._cluster.metadata.partition_count(topic)
        if waiting is None and count is not None:
            self._route(topic, count, record, key, partition, size, delivery)
        else:
            if partition is not None and partition < 0:
                raise ValueError("partition must be >= 0")
            if waiting is None:
                waiting = self._unrouted[topic] = deque()
            delivery._routed = trio.Event()
            deadline = trio.current_time() + self.delivery_timeout_s
            waiting.append(_Unrouted(record, key, partition, size, delivery, deadline))
            self._want_metadata(topic)
        self._buffered += size
        return delivery

    def _route(
        self,
        topic: str,
        count: int,
        record: Record,
        key: bytes | None,
        partition: int | None,
        size: int,
        delivery: Delivery,
    ) -> None:
        """Append to the accumulator (raises for a bad partition or an oversized record)."""
        if partition is not None and not 0 <= partition < count:
            raise UnknownTopicError(
                f"topic {topic!r} has partitions 0..{count - 1}, not {partition}"
            )
        limit = self._batch_limit(topic)
        if size > limit and size + BATCH_OVERHEAD > self._max_message(topic):
            raise MessageTooLargeError(
                f"a record of ~{size} bytes exceeds {topic!r}'s max.message.bytes"
            )
        tp = (topic, self._acc.choose_partition(topic, count, key, partition))
        batch, index, changed = self._acc.append(tp, record, size, trio.current_time(), limit)
        self._incomplete.add(batch)
        delivery._bind(batch, index)
        if changed:
            self._wake_sender()

    def _max_message(self, topic: str) -> int:
        t = self._cluster.metadata.topics.get(topic)
        raw = None if t is None else t.config.get("max.message.bytes")
        try:
            return int(raw) if raw is not None else DEFAULT_MAX_MESSAGE_BYTES
        except ValueError:
            return DEFAULT_MAX_MESSAGE_BYTES

    def _route_unrouted(self, now: float) -> None:
        meta = self._cluster.metadata
        for topic in list(self._unrouted):
            waiting = self._unrouted[topic]
            count = meta.partition_count(topic)
            while waiting:
                u = waiting[0]
                if count is None:
                    if u.deadline > now:
                        self._want_metadata(topic)
                        break
                    waiting.popleft()
                    self._release(u.size)
                    self._note_failure(
                        UnknownTopicError(f"topic {topic!r} unknown after the delivery timeout")
                    )
                    u.delivery._fail_unrouted(
                        UnknownTopicError(f"topic {topic!r} unknown after the delivery timeout")
                    )
                    continue
                waiting.popleft()
                try:
                    self._route(topic, count, u.record, u.key, u.partition, u.size, u.delivery)
                except SluiceError as e:
                    self._release(u.size)
                    self._note_failure(e)
                    u.delivery._fail_unrouted(e)
            if not waiting:
                del self._unrouted[topic]

    # -- accounting --------------------------------------------------------------------------

    def _release(self, size: int) -> None:
        self._buffered -= size
        if not self._space.is_set() and (self._buffered <= 0 or self._buffered < self.buffer_bytes):
            self._space.set()

    def _note_failure(self, error: SluiceError) -> None:
        if self._first_failure is None:
            self._first_failure = error

    def _acked(self, batch: Batch, base_offset: int) -> None:
        self._incomplete.discard(batch)
        if not batch.done.is_set():
            self._release(batch.size)
            batch.complete(base_offset, trio.current_time())

    def _failed(self, batch: Batch, error: SluiceError) -> None:
        self._incomplete.discard(batch)
        if not batch.done.is_set():
            self._release(batch.size)
            self._note_failure(error)
            batch.fail(error, trio.current_time())

    def _fail_everything(self, error: SluiceError) -> None:
        """Fail every record not yet acknowledged (fenced, or closing)."""
        for batch in list(self._incomplete):
            self._failed(batch, error)
        for batch in list(self._acc.batches()):
            self._failed(batch, error)
        self._acc.open.clear()
        self._acc.ready.clear()
        for waiting in self._unrouted.values():
            for u in waiting:
                self._release(u.size)
                u.delivery._fail_unrouted(error)
        self._unrouted.clear()
        for ps in self._partitions.values():
            ps.retry.clear()
        self._space.set()

    def _pstate(self, tp: TopicPartition) -> _PartitionState:
        ps = self._partitions.get(tp)
        if ps is None:
            ps = self._partitions[tp] = _PartitionState()
        return ps

    # -- the sender --------------------------------------------------------------------------

    def _wake_sender(self) -> None:
        self._wake.set()

    def _want_metadata(self, topic: str) -> None:
        if topic not in self._want_topics:
            self._want_topics.add(topic)
            self._want_event.set()

    async def _sender(self) -> None:
        while True:
            self._wake = trio.Event()
            now = trio.current_time()
            if self._acc.open:
                self._acc.seal_expired(now)
            if self._unrouted:
                self._route_unrouted(now)
            self._expire(now)
            if self.idempotent and self._fatal is None:
                self._maybe_identity()
            await self._drain(now)
            deadline = self._next_deadline()
            if deadline > trio.current_time():
                with trio.move_on_at(deadline):
                    await self._wake.wait()
            else:
                await trio.lowlevel.checkpoint()

    def _next_deadline(self) -> float:
        """When the sender must look again without being woken: the next linger, retry
        backoff or delivery deadline still ahead. Whatever is due but unsendable waits for
        an event (a metadata refresh, an answer, a connection) that wakes the sender."""
        now = trio.current_time()
        deadline = now + 1.0
        linger = self._acc.next_linger_deadline()
        if linger is not None:
            deadline = min(deadline, linger)
        for queue in self._acc.ready.values():
            if queue:
                deadline = min(deadline, queue[0].deadline)
        for ps in self._partitions.values():
            if ps.retry:
                deadline = min(deadline, ps.retry[0].deadline)
                if ps.retry_at > now:
                    deadline = min(deadline, ps.retry_at)
        return deadline

    def _expire(self, now: float) -> None:
        """Fail batches not in flight whose delivery deadline passed."""
        for tp, queue in self._acc.ready.items():
            while queue and queue[0].deadline <= now:
                batch = queue.popleft()
                reason = batch.last_error or RequestTimedOutError(
                    f"no batch for {tp[0]}[{tp[1]}] could be sent within the delivery timeout"
                    f" ({self._blocked_reason(tp)})"
                )
                self._failed(batch, reason)
        for tp, ps in self._partitions.items():
            if not ps.retry:
                continue
            keep: list[Batch] = []
            for batch in ps.retry:
                if batch.deadline > now:
                    keep.append(batch)
                    continue
                if self._seq is not None and batch.base_sequence >= 0:
                    self._seq.abandon(tp, batch.base_sequence)
                self._failed(
                    batch,
                    batch.last_error or RequestTimedOutError("delivery timeout passed"),
                )
            ps.retry = keep

    def _blocked_reason(self, tp: TopicPartition) -> str:
        if self._cluster.metadata.leader_for(tp) is None:
            return "the partition's leader is unknown"
        if self.idempotent and self._seq is None:
            return "no producer id could be obtained"
        return "the leader was unreachable or busy"

    def _maybe_identity(self) -> None:
        if self._identity_busy:
            return
        seq = self._seq
        if seq is None:
            if any(self._acc.ready.values()) or self._acc.open:
                self._identity_busy = True
                self._nursery.start_soon(self._identity, False)
        elif seq.state is ProducerState.BUMP_REQUIRED and seq.total_in_flight() == 0:
            self._identity_busy = True
            self._nursery.start_soon(self._identity, True)

    async def _identity(self, bump: bool) -> None:
        """InitProducerId: a new id, or (bump) a new epoch for the current id."""
        attempt = 0
        try:
            while True:
                seq = self._seq
                request = (
                    InitProducerIdRequest(
                        producer_id=seq.producer_id, producer_epoch=seq.producer_epoch
                    )
                    if bump and seq is not None
                    else InitProducerIdRequest()
                )
                try:
                    # Producer ids come from the controller's blocks (the metadata log).
                    response = await self._cluster.request_controller(request)
                except SluiceError as e:
                    if not e.retriable:
                        self._fatal = e
                        self._fail_everything(e)
                        return
                    await trio.sleep(self._backoff.delay(attempt))
                    attempt += 1
                    continue
                assert isinstance(response, InitProducerIdResponse)
                if seq is None:
                    self._seq = ProducerSequences(
                        response.producer_id,
                        response.producer_epoch,
                        max_in_flight=self.max_in_flight,
                    )
                else:
                    seq.reset_for_new_epoch(response.producer_epoch, response.producer_id)
                return
        finally:
            self._identity_busy = False
            self._wake_sender()

    def _sendable(self, tp: TopicPartition, now: float) -> bool:
        ps = self._partitions.get(tp)
        if ps is not None and ps.retry:
            return ps.in_flight == 0 and now >= ps.retry_at
        if not self._acc.ready.get(tp):
            return False
        in_flight = 0 if ps is None else ps.in_flight
        if in_flight >= self.max_in_flight:
            return False
        if not self.idempotent:
            return True
        return self._seq is not None and self._seq.can_assign(tp)

    async def _drain(self, now: float) -> None:
        if self._fatal is not None:
            return
        meta = self._cluster.metadata
        by_leader: dict[int, list[TopicPartition]] = {}
        candidates = set(self._acc.ready) | {tp for tp, ps in self._partitions.items() if ps.retry}
        for tp in candidates:
            if not self._sendable(tp, now):
                continue
            leader = meta.leader_for(tp)
            if leader is None:
                self._want_metadata(tp[0])
                continue
            by_leader.setdefault(leader, []).append(tp)
        for leader, tps in by_leader.items():
            conn = self._cluster.ready_connection(leader)
            if conn is None:
                topics = {tp[0] for tp in tps}
                self._cluster.start_connecting(
                    leader, on_done=functools.partial(self._connect_done, leader, topics)
                )
                continue
            self._rotation += 1
            shift = self._rotation % len(tps)
            tps = tps[shift:] + tps[:shift]
            while conn.has_capacity():
                picked = self._pick(tps, now)
                if not picked:
                    break
                await self._submit(conn, picked)
                if self._is_fatal():
                    return

    def _connect_done(self, leader: int, topics: set[str]) -> None:
        """A connection attempt to `leader` ended: if it failed, the leader may have moved
        (an election after a crash), so the topics' metadata is asked for again."""
        if self._cluster.ready_connection(leader) is None:
            for topic in topics:
                self._want_metadata(topic)
        self._wake_sender()

    def _is_fatal(self) -> bool:
        return self._fatal is not None

    def _pick(self, tps: list[TopicPartition], now: float) -> list[Batch]:
        """At most one batch per partition, within max_request_bytes; marks them in flight
        (assigning sequences and encoding new batches)."""
        picked: list[Batch] = []
        total = 0
        for tp in tps:
            if not self._sendable(tp, now):
                continue
            ps = self._pstate(tp)
            if ps.retry:
                batch = ps.retry[0]
                assert batch.data is not None
                if picked and total + len(batch.data) > self.max_request_bytes:
                    continue
                ps.retry.pop(0)
            else:
                queue = self._acc.ready[tp]
                batch = queue[0]
                if picked and total + batch.size + BATCH_OVERHEAD > self.max_request_bytes:
                    continue
                queue.popleft()
                self._encode(batch)
            batch.attempts += 1
            ps.in_flight += 1
            assert batch.data is not None
            total += len(batch.data)
            picked.append(batch)
        return picked

    def _encode(self, batch: Batch) -> None:
        seq = self._seq
        if self.idempotent:
            assert seq is not None
            batch.base_sequence = seq.assign(batch.tp, len(batch.records))
            batch.data = encode_batch(
                batch.records,
                producer_id=seq.producer_id,
                producer_epoch=seq.producer_epoch,
                base_sequence=batch.base_sequence,
            )
        else:
            batch.data = encode_batch(batch.records)
        batch.order = self._order
        self._order += 1

    async def _submit(self, conn: Connection, picked: list[Batch]) -> None:
        topics: dict[str, list[ProducePartition]] = {}
        for batch in picked:
            assert batch.data is not None
            topics.setdefault(batch.tp[0], []).append(
                ProducePartition(partition=batch.tp[1], batch=batch.data)
            )
        request = ProduceRequest(
            topics=tuple(
                ProduceTopic(name=name, partitions=tuple(parts)) for name, parts in topics.items()
            ),
            timeout_ms=self.request_timeout_ms,
        )
        try:
            pending = await conn.submit(request, timeout_s=self.request_timeout_ms / 1000 + 5.0)
        except SluiceError as e:
            self._on_request_error(picked, e)
            return
        self._nursery.start_soon(self._await_response, pending, picked)

    async def _await_response(self, pending: Pending, picked: list[Batch]) -> None:
        try:
            response = await pending.result()
        except SluiceError as e:
            self._on_request_error(picked, e)
            return
        assert isinstance(response, ProduceResponse)
        results = {(t.name, p.partition): p for t in response.topics for p in t.partitions}
        for batch in picked:
            r = results.get(batch.tp)
            if r is None:
                self._on_result(batch, ErrorCode.NETWORK_EXCEPTION, "no answer for the partition")
            else:
                self._on_result(batch, r.error, r.message, r.base_offset)
                if r.leader is not None and self._cluster.metadata.hint(
                    batch.tp, r.leader, r.leader_term
                ):
                    self._pstate(batch.tp).retry_at = 0.0  # retry at once, on the new leader
        self._wake_sender()

    def _on_request_error(self, picked: list[Batch], error: SluiceError) -> None:
        for batch in picked:
            self._on_result(batch, error.code, error.message, error=error)
        self._wake_sender()

    def _on_result(
        self,
        batch: Batch,
        code: ErrorCode,
        message: str | None,
        base_offset: int = -1,
        *,
        error: SluiceError | None = None,
    ) -> None:
        tp = batch.tp
        ps = self._pstate(tp)
        ps.in_flight -= 1
        seq = self._seq
        answered = code
        if seq is not None and batch.base_sequence >= 0:
            kind = seq.on_result(tp, batch.base_sequence, code).kind
        elif code is ErrorCode.NONE:
            kind = DecisionKind.ACKED
        else:
            kind = DecisionKind.RETRY if code.retriable else DecisionKind.FAIL_AND_BUMP_EPOCH
        if kind is DecisionKind.ACKED:
            if base_offset < 0:
                self._failed(batch, error_for(ErrorCode.UNKNOWN_SERVER_ERROR, "no base offset"))
            else:
                self._acked(batch, base_offset)
            return
        failure = error or error_for(answered, message)
        if kind is DecisionKind.RETRY:
            batch.last_error = failure
            now = trio.current_time()
            if now >= batch.deadline or self._closing:
                if self._seq is not None and batch.base_sequence >= 0:
                    self._seq.abandon(tp, batch.base_sequence)
                self._failed(batch, failure)
                return
            ps.retry.append(batch)
            ps.retry.sort(key=_send_order)
            ps.retry_at = max(ps.retry_at, now + self._backoff.delay(batch.attempts - 1))
            current = self._cluster.metadata.partition(tp)
            if current is not None:
                ps.failed_on = (current.leader, current.leader_term)
            if needs_metadata(failure):
                if isinstance(failure, LeadershipError):
                    self._cluster.metadata.invalidate(tp)
                self._want_metadata(tp[0])
        elif kind is DecisionKind.FAIL_AND_BUMP_EPOCH:
            self._failed(batch, failure)
        else:
            seq = self._seq
            who = "" if seq is None else f" {seq.producer_id} (epoch {seq.producer_epoch})"
            fenced = ProducerFencedError(
                f"producer{who} was fenced by a newer epoch: {failure.message}", code=code
            )
            self._failed(batch, fenced)
            self._fatal = fenced
            self._fail_everything(fenced)

    # -- metadata ----------------------------------------------------------------------------

    async def _metadata_task(self) -> None:
        """Refresh the topics the sender asked about. While a topic has a partition without a
        leader, or led by a broker the last connection attempt failed to reach (a crashed
        leader, until the election's winner is reported), it is asked for again after a
        backoff capped at `METADATA_RETRY_MAX_S`: the new leader is found within about that
        much of its election, however long connection attempts to the dead one back off."""
        attempt = 0
        cluster = self._cluster
        while True:
            await self._want_event.wait()
            self._want_event = trio.Event()
            topics, self._want_topics = self._want_topics, set()
            try:
                await cluster.refresh(topics)
                failed = False
            except SluiceError:
                failed = True
            meta = cluster.metadata
            self._end_backoff_on_new_leaders()
            pending = {
                t
                for t in topics
                if failed
                or meta.partition_count(t) is None
                or any(p.leader is None or cluster.unreachable(p.leader)
                       for p in meta.topics[t].partitions)
            }  # fmt: skip
            self._wake_sender()
            if not pending:
                attempt = 0
                await trio.sleep(self._backoff.base_s)
                continue
            await trio.sleep(min(self._backoff.delay(attempt), METADATA_RETRY_MAX_S))
            attempt += 1
            for t in pending:
                if self._has_queued(t):
                    self._want_metadata(t)

    def _end_backoff_on_new_leaders(self) -> None:
        """Retries waiting out a backoff go now to a partition whose metadata names a
        leader other than the one they failed on (the election ended)."""
        meta = self._cluster.metadata
        for tp, ps in self._partitions.items():
            if not ps.retry or ps.retry_at == 0.0:
                continue
            p = meta.partition(tp)
            if p is not None and p.leader is not None and (p.leader, p.leader_term) != ps.failed_on:
                ps.retry_at = 0.0

    def _has_queued(self, topic: str) -> bool:
        """Whether records of `topic` wait to be routed, sent or retried."""
        if topic in self._unrouted:
            return True
        if any(q for tp, q in self._acc.ready.items() if tp[0] == topic):
            return True
        return any(ps.retry for tp, ps in self._partitions.items() if tp[0] == topic)


def _send_order(batch: Batch) -> int:
    return batch.order
