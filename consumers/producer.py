"""The asynchronous producer: the Trio shell over `consumers.core.producer.ProducerCore`.

Theory of operation
-------------------
Every decision (partition choice, batching, sequencing, in-flight limits, retries, epoch
bumps, delivery timeouts, what each answer means) is the core's; see its module docstring.
This shell owns the I/O and the waiting:

`send`/`send_nowait` build a `Record` (validated; timestamped from the wall clock unless
given) and hand it to the core; the returned `Delivery` resolves when its batch settles
(`await delivery`; `add_done_callback` callbacks run right when it does, in the settling
task). Records of a topic whose metadata is not known yet wait in the core's unrouted queue
(`send` instead waits for the metadata and raises UnknownTopicError past the delivery
timeout). A record sent to a partition the cached metadata does not list is held here
(with every later record of its topic, to keep their order) until fresh metadata reads
give the count (read again for up to CONFIRM_S while the partition is missing, rotating over
the brokers): routed if the topic grew, else failed with a non-retriable UnknownTopicError.
When no broker answers metadata, records that could not be routed fail with
BrokerUnavailableError (NETWORK_EXCEPTION, naming the brokers tried), not with
UnknownTopicError.

One sender task (in the producer's nursery) loops: `advance` the core (seal lingered
batches, route records, expire), start an InitProducerId when the core asks for one, then
drain: for each leader of the core's `drain_plan`, while its connection has a free in-flight
slot (`max_in_flight` per connection), write ONE produce request of the batches the core
picks. Requests are written by the sender itself, so they leave in drain order; the
connection's reader hands each answer to the core the moment it reads it (`_response_in`,
no task switch in between), and a task per request watches its deadline and the
connection's failure. A leader without a connection is
connected to in the background; if that fails, its topics' metadata is asked for again.

One metadata task refreshes the topics the core asks for, when the shared refresh policy
(`consumers.core.refresh.MetadataRefresh`) allows: at most once per base backoff, and while
a leader is unknown or unreachable every min(backoff, METADATA_RETRY_MAX_S).

Buffer: the estimated bytes of all unacknowledged records are bounded by `buffer_bytes`;
`send` waits for room (a record larger than the whole buffer is let in when it is empty),
`send_nowait` raises BufferFull. `flush` seals every open batch and waits for every record
queued so far; it raises the first failure since the previous flush. Leaving `async with`
normally flushes (bounded by the delivery timeout) and raises that failure; leaving with an
exception flushes likewise but raises nothing of its own. Records still queued after that
fail with ClientClosedError.

Transactions: with a `transactional_id`, opening the producer asks the transaction
coordinator for its identity (fencing older producers of the id) and records are sent only
inside `async with producer.transaction():` (commit on exit, abort on an exception), or
between `begin_transaction()` and `commit_transaction()`/`abort_transaction()`. The
`consumers.transaction.TransactionSession` owns that conversation; the sender asks it to
register partitions before their first batch. Leaving the producer with a transaction open
aborts it.
"""

from __future__ import annotations

import copy
import functools
import logging
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Generator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

import trio
from opentelemetry.trace import Span

from broker.wire.batch import Record, new_record
from broker.wire.errors import WireError
from broker.wire.messages import InitProducerIdRequest, InitProducerIdResponse, ProduceResponse
from broker.wire.partitioner import default_partition, murmur2_partition
from broker.wire.txn_messages import transactional_id as valid_transactional_id
from consumers.cluster import Backoff, Cluster
from consumers.connection import Connection, Pending
from consumers.core.accumulator import Accumulator, Batch, record_size
from consumers.core.metadata import out_of_range
from consumers.core.producer import ProducerCore
from consumers.core.refresh import MetadataRefresh
from consumers.durations import duration_ms
from consumers.errors import (
    BrokerUnavailableError,
    BufferFull,
    ClientClosedError,
    InvalidTxnStateError,
    RequestTimedOutError,
    SluiceError,
    UnknownTopicError,
)
from consumers.tracing import ProducerSpans, end_span, traceparent
from consumers.transaction import GroupMetadata, TransactionSession

__all__ = ["Delivery", "DoneCallback", "GroupMetadata", "Producer", "RecordMetadata"]

logger = logging.getLogger(__name__)

KiB = 1024
MiB = 1024 * KiB

Headers = Sequence[tuple[str, bytes]] | Mapping[str, bytes] | None


DoneCallback = Callable[["Delivery"], object]
"""`fn(delivery)`, called once the delivery settles (see `Delivery.add_done_callback`)."""


@dataclass(frozen=True, slots=True)
class RecordMetadata:
    """Where an acknowledged record was written: `topic`, `partition`, `offset` and the
    record's `timestamp` (milliseconds since the epoch)."""

    topic: str
    partition: int
    offset: int
    timestamp: int


class _Settle:
    """One batch's outcome as its deliveries see it: `event` is set when the batch settles;
    `callbacks` are the done-callbacks of its deliveries, run right after."""

    __slots__ = ("callbacks", "event")

    def __init__(self) -> None:
        """Not settled, no callbacks."""
        self.event = trio.Event()
        self.callbacks: list[tuple[Delivery, DoneCallback]] | None = None


class Delivery:
    """The outcome of one sent record: `md = await delivery` (or `await delivery.wait()`)
    gives its `RecordMetadata` once acknowledged and raises its typed error if it failed;
    `done`, `result()` and `exception()` look without waiting; `add_done_callback(fn)` calls
    `fn(delivery)` once it settles."""

    __slots__ = (
        "_batch",
        "_callbacks",
        "_done",
        "_error",
        "_index",
        "_routed",
        "timestamp",
        "topic",
    )

    def __init__(self, topic: str, timestamp: int) -> None:
        """A pending delivery of a record of `topic` stamped `timestamp` (milliseconds since
        the epoch); the producer creates it."""
        self.topic = topic
        self.timestamp = timestamp
        self._batch: Batch | None = None
        self._done: _Settle | None = None
        """The batch's outcome (its event is set when the batch settles)."""
        self._index = 0
        self._routed: trio.Event | None = None
        self._error: SluiceError | None = None
        self._callbacks: list[DoneCallback] | None = None
        """Callbacks added before the record was routed to a batch."""

    def _bind(self, batch: Batch, index: int, done: _Settle) -> None:
        self._batch = batch
        self._index = index
        self._done = done
        if self._callbacks is not None:
            if done.callbacks is None:
                done.callbacks = []
            done.callbacks.extend((self, fn) for fn in self._callbacks)
            self._callbacks = None
        if self._routed is not None:
            self._routed.set()

    def _fail_unrouted(self, error: SluiceError) -> None:
        self._error = error
        if self._routed is not None:
            self._routed.set()
        callbacks, self._callbacks = self._callbacks, None
        for fn in callbacks or ():
            _call_back(fn, self)

    @property
    def done(self) -> bool:
        """Whether the record settled: acknowledged or failed for good."""
        if self._error is not None:
            return True
        return self._batch is not None and self._batch.settled

    @property
    def settled_at(self) -> float | None:
        """Trio time at which the record's acknowledgement (or its batch's failure) arrived;
        None while pending or when it failed before it was routed."""
        return None if self._batch is None else self._batch.settled_at

    def __await__(self) -> Generator[Any, None, RecordMetadata]:
        """`md = await delivery` is `md = await delivery.wait()`."""
        return self.wait().__await__()

    async def wait(self) -> RecordMetadata:
        """The record's metadata once acknowledged; raises its typed error if it failed."""
        if self._batch is None and self._error is None:
            assert self._routed is not None
            await self._routed.wait()
        if self._batch is None:
            assert self._error is not None
            raise _fresh(self._error)
        assert self._done is not None
        await self._done.event.wait()
        return self.result()

    def add_done_callback(self, fn: DoneCallback) -> None:
        """Call `fn(delivery)` once the record settles (acknowledged or failed), at once if
        it already has; each callback is called once. Callbacks run synchronously in the
        producer's Trio loop, in whichever of its tasks settled the record (the reader of
        the connection the acknowledgement came on, the sender, or the task closing the
        producer), so they must not block or await; `send_nowait` may be called. An
        exception a callback raises is logged (logger `consumers.producer`) and does not
        reach the producer."""
        if self.done:
            _call_back(fn, self)
            return
        settle = self._done
        if settle is None:
            if self._callbacks is None:
                self._callbacks = []
            self._callbacks.append(fn)
            return
        if settle.callbacks is None:
            settle.callbacks = []
        settle.callbacks.append((self, fn))

    def exception(self) -> SluiceError | None:
        """The record's typed error now (a fresh copy), None once it was acknowledged, or
        RuntimeError while pending: `result()` without building its metadata."""
        if self._error is not None:
            return _fresh(self._error)
        batch = self._batch
        if batch is None or batch.settled_at is None:
            raise RuntimeError("the record is not acknowledged yet")
        return None if batch.error is None else _fresh(batch.error)

    def result(self) -> RecordMetadata:
        """The outcome now: metadata, the typed error, or RuntimeError while pending."""
        if self._error is not None:
            raise _fresh(self._error)
        batch = self._batch
        if batch is None or not batch.settled:
            raise RuntimeError("the record is not acknowledged yet")
        if batch.error is not None:
            raise _fresh(batch.error)
        topic, partition = batch.tp
        return RecordMetadata(topic, partition, batch.base_offset + self._index, self.timestamp)

    def __repr__(self) -> str:
        """`<Delivery topic='t' partition=2 offset=17 acknowledged>`; the partition once the
        record is routed, the offset once acknowledged, the error once failed."""
        fields = [f"topic={self.topic!r}"]
        batch = self._batch
        if batch is not None:
            fields.append(f"partition={batch.tp[1]}")
        error = self._error or (batch.error if batch is not None else None)
        if error is not None:
            state = f"failed ({error})"
        elif batch is None or not batch.settled:
            state = "pending"
        else:
            fields.append(f"offset={batch.base_offset + self._index}")
            state = "acknowledged"
        return f"<Delivery {' '.join(fields)} {state}>"


def _call_back(fn: DoneCallback, delivery: Delivery) -> None:
    """Run one done-callback; its exception is logged, never raised into the producer."""
    try:
        fn(delivery)
    except Exception:
        logger.exception("a delivery callback (%r) of %r raised", fn, delivery)


def _out_of_range(topic: str, partition: int, count: int) -> UnknownTopicError:
    """The final error of a record sent to a partition the topic does not have."""
    return UnknownTopicError(out_of_range(topic, partition, count), retriable=False)


def _fresh(error: SluiceError) -> SluiceError:
    """A copy to raise (one failure is raised by every delivery of its batch)."""
    return copy.copy(error).with_traceback(None)


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


DEFAULT_DELIVERY_TIMEOUT_MS = 30_000
"""`delivery_timeout_ms` when neither it nor `delivery_timeout_s` is given."""
CONFIRM_S = 0.5
"""Seconds a missing topic or partition is read again before it is taken as missing."""


@dataclass(slots=True)
class _Held:
    """A record sent to a partition the cached metadata does not list, waiting for a fresh
    metadata read to confirm the topic's partition count (it may have grown)."""

    delivery: Delivery
    record: Record
    key: bytes | None
    partition: int | None
    size: int
    deadline: float


class Producer:
    """Publishes records to topics; use as `async with Producer(...) as p`.

    Partitioning: a record sent with `partition=N` goes to partition N (one the topic does
    not have fails with a non-retriable UnknownTopicError once a fresh metadata read
    confirms the count). A keyed record goes where the `partitioner` puts its key; a record
    without key or partition goes to the topic's current "sticky" partition, which changes
    (at random) each time a batch of it is sealed, so small records still form full batches.
    """

    def __init__(
        self,
        bootstrap: str | Sequence[str] = "127.0.0.1:9092",
        *,
        transactional_id: str | None = None,
        transaction_timeout_ms: int = 60_000,
        idempotent: bool = True,
        linger_ms: float = 5,
        batch_bytes: int = 256 * KiB,
        buffer_bytes: int = 32 * MiB,
        max_in_flight: int = 5,
        delivery_timeout_ms: float | None = None,
        delivery_timeout_s: float | None = None,
        request_timeout_ms: int = 30_000,
        partitioner: Literal["default", "murmur2"] = "default",
        client_id: str | None = None,
        max_request_bytes: int = 8 * MiB,
        retry_backoff_ms: float = 50,
        retry_backoff_max_ms: float = 1000,
    ) -> None:
        """A producer, not connected until entered (`async with`).

        - `bootstrap`: brokers to start from, "host:port[,host:port...]" or a list of them.
        - `transactional_id`: makes the producer transactional (records only inside
          `transaction()`); opening it fences older producers of the same id.
        - `transaction_timeout_ms`: milliseconds the coordinator lets a transaction stay open
          before aborting it (transactional producers only).
        - `idempotent`: the broker drops duplicates of retried batches and keeps each
          partition's order (a producer id and sequence numbers); False sends without them.
        - `linger_ms`: milliseconds a batch waits for more records before it is sent (0: at
          once).
        - `batch_bytes`: bytes of records per batch at most (a batch is sent once full);
          a topic's smaller `max.message.bytes` wins.
        - `buffer_bytes`: bytes of records queued and not yet acknowledged at most: `send`
          waits for room, `send_nowait` raises BufferFull.
        - `max_in_flight`: produce requests in flight per connection and batches per
          partition, 1..5 (the broker's duplicate window is 5).
        - `delivery_timeout_ms`: milliseconds a record may take from `send` to its
          acknowledgement, retries included (default 30 000); past it the record fails with
          its last error. `delivery_timeout_s` is its older name, in seconds (give one).
        - `request_timeout_ms`: milliseconds the broker may take to answer one produce
          request.
        - `partitioner`: where a keyed record goes. "default" is Sluice's pinned function,
          the same in every client: Lamping and Veach's jump consistent hash of the key's
          8-byte blake2b digest; growing a topic from n to n + 1 partitions moves about
          1/(n + 1) of the keys, all to the new partition. It is NOT Kafka's: keyed data
          moved from Kafka lands on other partitions than Kafka's Java client put it.
          "murmur2" is Kafka's default (`toPositive(murmur2(key)) % n`): keys land where
          Kafka put them (same partition count), but growing a topic moves most keys.
        - `client_id`: the name brokers log and count this client's requests under.
        - `max_request_bytes`: bytes of one produce request at most (several batches).
        - `retry_backoff_ms`, `retry_backoff_max_ms`: milliseconds of the first wait before
          a retry and the cap of its exponential growth (with jitter).

        Raises ValueError for a value out of range and TypeError when both
        `delivery_timeout_ms` and `delivery_timeout_s` are given.
        """
        timeout_ms = duration_ms(
            "delivery_timeout_ms",
            delivery_timeout_ms,
            "delivery_timeout_s",
            delivery_timeout_s,
            DEFAULT_DELIVERY_TIMEOUT_MS,
        )
        assert timeout_ms is not None
        if transactional_id is not None:
            try:
                valid_transactional_id(transactional_id, "transactional_id")
            except WireError as e:
                raise ValueError(str(e)) from None
            if not idempotent:
                raise ValueError("a transactional producer is idempotent (idempotent=True)")
            if not 1 <= transaction_timeout_ms < 2**31:
                raise ValueError("transaction_timeout_ms must be in [1, 2**31)")
        if not 1 <= max_in_flight <= 5:
            raise ValueError("max_in_flight must be 1..5 (the broker's dedup window is 5)")
        if batch_bytes < 1 or buffer_bytes < 1 or max_request_bytes < 1:
            raise ValueError("batch_bytes, buffer_bytes and max_request_bytes must be >= 1")
        if linger_ms < 0 or timeout_ms <= 0 or request_timeout_ms < 1:
            raise ValueError("need linger_ms >= 0, delivery_timeout_ms > 0, request_timeout_ms > 0")
        partitioners: dict[str, Callable[[bytes, int], int]] = {
            "default": default_partition,
            "murmur2": murmur2_partition,
        }
        if partitioner not in partitioners:
            raise ValueError("partitioner must be 'default' or 'murmur2'")
        self.bootstrap = bootstrap
        self.transactional_id = transactional_id
        self.transaction_timeout_ms = transaction_timeout_ms
        self.idempotent = idempotent
        self.linger_s = linger_ms / 1000
        self.batch_bytes = batch_bytes
        self.buffer_bytes = buffer_bytes
        self.max_in_flight = max_in_flight
        self.delivery_timeout_ms = timeout_ms
        self.delivery_timeout_s = timeout_ms / 1000
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

    def __repr__(self) -> str:
        """`<Producer bootstrap=... transactional_id=... idempotent=... open buffered_bytes=N>`."""
        if self._open:
            state = "open"
        elif self._stack is not None:
            state = "closing" if self._closing else "opening"
        else:
            state = "closed" if self._closing else "not open"
        return (
            f"<Producer bootstrap={self.bootstrap!r} transactional_id={self.transactional_id!r}"
            f" idempotent={self.idempotent} {state} buffered_bytes={self.buffered_bytes}>"
        )

    async def __aenter__(self) -> Producer:
        """Open: start the sender and metadata tasks (connections are made on demand); a
        transactional producer also obtains its identity from its coordinator. Entered once."""
        if self._open or self._stack is not None:
            raise RuntimeError("a Producer is entered once")
        self._cluster = self._make_cluster()
        self._want_event = trio.Event()
        self._refresh = MetadataRefresh(self._backoff, on_want=self._signal_metadata)
        accumulator = Accumulator(
            batch_bytes=self.batch_bytes,
            linger_s=self.linger_s,
            delivery_timeout_s=self.delivery_timeout_s,
            partitioner=self._partitioner,
            rng=random.Random(),
        )
        self._spans = ProducerSpans(self.client_id)
        accumulator.on_open = self._spans.batch_opened
        self._core: ProducerCore[Delivery] = ProducerCore(
            accumulator=accumulator,
            metadata=self._cluster.metadata,
            refresh=self._refresh,
            backoff=self._backoff,
            idempotent=self.idempotent,
            max_in_flight=self.max_in_flight,
            max_request_bytes=self.max_request_bytes,
            on_settled=self._settled,
            on_routed=self._routed,
            on_unroutable=self._unroutable,
            transactional=self.transactional_id is not None,
        )
        self._txn: TransactionSession | None = None
        if self.transactional_id is not None:
            self._txn = TransactionSession(
                cluster=self._cluster,
                core=self._core,
                transactional_id=self.transactional_id,
                transaction_timeout_ms=self.transaction_timeout_ms,
                op_timeout_s=self.delivery_timeout_s,
                wake=self._wake_sender,
            )
        self._done: dict[Batch, _Settle] = {}
        """What each unsettled batch's deliveries wait on (and their callbacks)."""
        self._held: dict[str, deque[_Held]] = {}
        """Per topic, records waiting for a fresh partition count (`_hold`), in send order."""
        self._metadata_failure: BrokerUnavailableError | None = None
        """Why the last metadata refresh failed, when no broker answered it."""
        self._now = trio.lowlevel.current_clock().current_time
        """trio.current_time without its indirections (the run's clock is fixed): the
        enqueue path reads it once per record."""
        self._buffered = 0
        self._space = trio.Event()
        self._space.set()
        self._wake = trio.Event()
        self._first_failure: SluiceError | None = None
        stack = AsyncExitStack()
        self._stack = stack
        try:
            await stack.enter_async_context(self._cluster)
            self._nursery = await stack.enter_async_context(trio.open_nursery())
        except BaseException:
            await stack.aclose()
            raise
        self._nursery.start_soon(self._sender)
        self._nursery.start_soon(self._metadata_task)
        if self._txn is not None:
            try:
                await self._txn.init()
            except BaseException:
                # Closed as `close` does (its tasks cancelled first): an InitProducerId
                # refused for good never leaves the exit waiting for them.
                await self._shutdown()
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
        """Close. Leaving normally flushes (bounded by the delivery timeout) and raises its
        failure; leaving with an exception flushes likewise and raises nothing of its own;
        leaving cancelled (or after `close()`) does not wait. Aborts an open transaction."""
        failure: SluiceError | None = None
        if exc is None or isinstance(exc, Exception):
            try:
                await self._abort_open_transaction()
                await self._close_flush(self.delivery_timeout_s + 1)
            except SluiceError as e:
                failure = e
        await self._shutdown()
        if failure is not None and exc is None:
            raise failure

    async def close(self, timeout_ms: float | None = None) -> None:
        """Flush for at most `timeout_ms` milliseconds (default: the delivery timeout), then
        close: records still unacknowledged fail with ClientClosedError. Raises the flush
        failure: RequestTimedOutError when records were still unacknowledged at the bound
        (`timeout_ms=0` closes without waiting). Closing a closed producer does nothing."""
        failure: SluiceError | None = None
        bound_s = self.delivery_timeout_s + 1 if timeout_ms is None else timeout_ms / 1000
        try:
            await self._abort_open_transaction()
            await self._close_flush(bound_s)
        except SluiceError as e:
            failure = e
        await self._shutdown()
        if failure is not None:
            raise failure

    async def _abort_open_transaction(self) -> None:
        txn = self._txn
        if txn is not None and txn.open and not txn.ending and self._core.fatal is None:
            with trio.move_on_after(self.delivery_timeout_s + 1):
                await txn.abort()

    async def _close_flush(self, bound_s: float) -> None:
        """Flush for at most `bound_s` seconds; from then on nothing is retried."""
        if not self._open or self._closing or self._core.fatal is not None:
            return  # a fenced producer already failed everything it held
        with trio.move_on_after(bound_s) as scope:
            await self.flush()
        self._closing = self._core.closing = True
        if not scope.cancelled_caught:
            return
        if self._buffered > 0:
            raise RequestTimedOutError(
                f"close: {self._buffered} bytes of records were still unacknowledged after"
                f" {bound_s:g} s"
            )
        failure, self._first_failure = self._first_failure, None
        if failure is not None:
            raise _fresh(failure)

    async def _shutdown(self) -> None:
        if self._stack is None:
            return
        self._closing = self._core.closing = True
        self._open = False
        closed = ClientClosedError("the producer was closed")
        held, self._held = self._held, {}
        for queue in held.values():
            for h in queue:
                self._unroutable(h.delivery, h.size, closed)
        self._core.fail_everything(closed, trio.current_time())
        self._space.set()
        self._nursery.cancel_scope.cancel()
        stack, self._stack = self._stack, None
        await stack.aclose()

    def _check_open(self) -> None:
        if not self._open or self._closing:
            raise ClientClosedError("the producer is not open (use `async with Producer(...)`)")
        if self._core.fatal is not None:
            raise _fresh(self._core.fatal)

    def _check_sendable(self) -> None:
        self._check_open()
        if self._txn is not None:
            self._txn.check_can_send()

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
        """Queue a record; returns the record's `Delivery` once it is queued. `value`, `key`
        and header values are bytes; `headers` is a sequence of (name, value) pairs or a
        mapping; `partition` picks the partition (default: the partitioner's choice, see
        the class); `timestamp` is in milliseconds since the epoch (default: now).

        Waits while the buffer is full and for the topic's metadata: past the delivery
        timeout UnknownTopicError (no such topic) or BrokerUnavailableError (no broker could
        be reached). A partition the topic does not have raises UnknownTopicError (not
        retriable) once a fresh metadata read confirms the count."""
        await trio.lowlevel.checkpoint()
        self._check_sendable()
        record, size = self._make_record(value, key, headers, timestamp)
        if partition is not None and partition < 0:
            raise ValueError("partition must be >= 0")
        deadline = trio.current_time() + self.delivery_timeout_s
        count = self._cluster.metadata.partition_count(topic)
        if count is None and topic not in self._core.unrouted:
            count = await self._topic_count(topic, deadline)
            self._check_sendable()
        if (
            partition is not None
            and count is not None
            and partition >= count
            and topic not in self._held
        ):
            await self._confirm_partition(topic, partition, deadline)
            self._check_sendable()
        while self._buffered and self._buffered + size > self.buffer_bytes:
            if self._space.is_set():
                self._space = trio.Event()
            await self._space.wait()
            self._check_sendable()
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
        """Queue a record without waiting (as `send`, same arguments); raises BufferFull when
        the buffer is full. A record whose topic's metadata is not known yet waits for it
        in the producer (its Delivery fails past the delivery timeout); one sent to a
        partition the cached metadata does not list waits for a fresh read of the count."""
        if not self._open or self._closing or self._txn is not None or self._core.fatal is not None:
            self._check_sendable()  # raises unless a transaction allows sending
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
        if batch is not None and self._core.acc.seal(batch):
            self._wake_sender()
        return await delivery.wait()

    async def partitions_for(self, topic: str, *, timeout_ms: float | None = None) -> list[int]:
        """The topic's partitions, `[0, 1, ..., n - 1]`, from a fresh metadata read (which
        also updates what `send` routes by). Raises UnknownTopicError (not retriable) when
        the topic does not exist, BrokerUnavailableError when no broker answered within
        `timeout_ms` milliseconds (default: the delivery timeout)."""
        await trio.lowlevel.checkpoint()
        self._check_open()
        bound_s = self.delivery_timeout_s if timeout_ms is None else timeout_ms / 1000
        deadline = trio.current_time() + bound_s
        count = await self._confirmed_count(topic, deadline, None)
        if count is None:
            raise UnknownTopicError(f"topic {topic!r} does not exist", retriable=False)
        return list(range(count))

    async def flush(self) -> None:
        """Send every queued record now and wait until each is acknowledged or failed;
        raises the first failure since the previous flush."""
        self._check_open()
        self._core.acc.seal_all()
        self._wake_sender()
        unrouted = [u.ticket for q in self._core.unrouted.values() for u in q]
        unrouted += [h.delivery for q in self._held.values() for h in q]
        waits = [settle.event for settle in self._done.values()]
        for delivery in unrouted:
            if delivery._routed is not None:
                await delivery._routed.wait()
            if delivery._done is not None:
                waits.append(delivery._done.event)
        self._core.acc.seal_all()
        self._wake_sender()
        for done in waits:
            await done.wait()
        await trio.lowlevel.checkpoint()
        failure, self._first_failure = self._first_failure, None
        if failure is not None:
            raise _fresh(failure)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """`async with producer.transaction():` commits on exit (raising
        TransactionAbortedError if it had to abort instead) and aborts when the block
        raises (the block's exception goes on)."""
        await self.begin_transaction()
        try:
            yield
        except BaseException:
            with trio.CancelScope(shield=True, deadline=trio.current_time() + self._op_bound()):
                try:
                    await self.abort_transaction()
                except SluiceError as e:
                    logger.warning("transaction %s: abort failed: %s", self.transactional_id, e)
            raise
        await self.commit_transaction()

    async def begin_transaction(self) -> None:
        """Start a transaction (records may then be sent until it commits or aborts)."""
        await trio.lowlevel.checkpoint()
        self._check_open()
        self._transactional().begin()
        self._first_failure = None

    async def commit_transaction(self) -> None:
        """Flush and commit: every record and offset of the transaction becomes visible to
        read_committed readers at once. Raises TransactionAbortedError if a record of it
        failed or a participant refused (it was aborted instead)."""
        self._check_open()
        await self._transactional().commit(self.flush)

    async def abort_transaction(self) -> None:
        """Abort: nothing of the transaction is ever visible to read_committed readers."""
        await trio.lowlevel.checkpoint()
        if not self._open:
            raise ClientClosedError("the producer is not open (use `async with Producer(...)`)")
        await self._transactional().abort()

    async def send_offsets_to_transaction(
        self,
        offsets: Mapping[tuple[str, int], int],
        group_metadata: GroupMetadata | str,
    ) -> None:
        """Commit consumer offsets (`{(topic, partition): next offset to read}`) of a group
        as part of the transaction: visible when it commits, never if it aborts.
        `group_metadata` is `consumer.group_metadata()` (or a group id, to commit without a
        membership)."""
        await trio.lowlevel.checkpoint()
        self._check_open()
        group = GroupMetadata(group_metadata) if isinstance(group_metadata, str) else group_metadata
        checked: dict[tuple[str, int], int] = {}
        for (topic, partition), offset in offsets.items():
            if type(offset) is not int or offset < 0:
                raise ValueError(f"offset of {topic}[{partition}] must be an int >= 0")
            checked[(topic, int(partition))] = offset
        await self._transactional().send_offsets(checked, group)

    def _transactional(self) -> TransactionSession:
        if self._txn is None:
            raise InvalidTxnStateError(
                "transactions need a transactional producer: Producer(transactional_id=...)"
            )
        return self._txn

    def _op_bound(self) -> float:
        """How long an abort may take at most: the answers on the wire, then EndTxn."""
        return 2 * self.delivery_timeout_s + 1

    @property
    def buffered_bytes(self) -> int:
        """Estimated bytes of records queued and not yet acknowledged or failed."""
        return self._buffered if self._open else 0

    # -- enqueueing and outcomes -------------------------------------------------------------

    def _make_record(
        self, value: object, key: object, headers: Headers, timestamp: int | None
    ) -> tuple[Record, int]:
        """The checked record and its size estimate (`record_size`). Runs once per record:
        the record is built through `new_record` (a frozen dataclass's __init__ costs
        three times as much), its fields checked by `_bytes_or_none` only when they are
        not plain bytes or None already."""
        v = value if value is None or type(value) is bytes else _bytes_or_none(value, "value")
        k = key if key is None or type(key) is bytes else _bytes_or_none(key, "key")
        h = _headers(headers) if headers else ()
        if timestamp is None:
            timestamp = time.time_ns() // 1_000_000
        elif type(timestamp) is not int:
            raise TypeError("timestamp must be an int (milliseconds)")
        return new_record(k, v, h, timestamp), record_size(k, v, h)

    def _enqueue(
        self, topic: str, record: Record, key: bytes | None, partition: int | None, size: int
    ) -> Delivery:
        if (partition is not None or self._held) and self._must_hold(topic, partition):
            return self._hold(topic, record, key, partition, size)
        delivery = Delivery(topic, record.timestamp)
        routed = self._core.enqueue(topic, record, key, partition, size, self._now(), delivery)
        if routed is None:
            delivery._routed = trio.Event()
        else:
            batch, index, changed = routed
            done = self._done.get(batch)
            if done is None:
                done = self._done[batch] = _Settle()
            # delivery._bind(batch, index, done), inline: nothing waits on `_routed` yet
            delivery._batch = batch
            delivery._index = index
            delivery._done = done
            if changed:
                self._wake.set()
        self._buffered += size
        return delivery

    def _must_hold(self, topic: str, partition: int | None) -> bool:
        """Whether a record must wait for a fresh partition count: records of the topic are
        held already (order is kept), or its partition is beyond the cached count."""
        if topic in self._held:
            return True
        if partition is None:
            return False
        if partition < 0:
            raise ValueError("partition must be >= 0")
        count = self._cluster.metadata.partition_count(topic)
        return count is not None and partition >= count and topic not in self._core.unrouted

    def _hold(
        self, topic: str, record: Record, key: bytes | None, partition: int | None, size: int
    ) -> Delivery:
        delivery = Delivery(topic, record.timestamp)
        delivery._routed = trio.Event()
        queue = self._held.get(topic)
        if queue is None:
            queue = self._held[topic] = deque()
            self._nursery.start_soon(self._route_held, topic, queue)
        deadline = self._now() + self.delivery_timeout_s
        queue.append(_Held(delivery, record, key, partition, size, deadline))
        self._buffered += size
        return delivery

    async def _route_held(self, topic: str, queue: deque[_Held]) -> None:
        """Read the topic's partition count afresh, then route the held records in order:
        to the core when their partition exists (or the topic is unknown: the core waits
        for it), failed for good when it does not."""
        failure: SluiceError | None = None
        try:
            wanted = max(h.partition for h in queue if h.partition is not None)
            count = await self._confirmed_count(topic, queue[0].deadline, wanted)
        except SluiceError as e:
            failure = e
            count = self._cluster.metadata.partition_count(topic)
        if self._held.get(topic) is not queue:
            return  # closed meanwhile: `_shutdown` failed them
        del self._held[topic]
        now = self._now()
        for h in queue:
            if h.partition is not None and count is not None and h.partition >= count:
                reason = failure or _out_of_range(topic, h.partition, count)
                self._unroutable(h.delivery, h.size, reason)
                continue
            try:
                routed = self._core.enqueue(
                    topic, h.record, h.key, h.partition, h.size, now, h.delivery
                )
            except SluiceError as e:
                self._unroutable(h.delivery, h.size, e)
                continue
            if routed is not None:
                self._routed(h.delivery, routed[0], routed[1])
        self._wake_sender()

    async def _topic_count(self, topic: str, deadline: float) -> int:
        """The topic's partition count, waiting for its metadata until `deadline` (Trio
        time): UnknownTopicError past it, or BrokerUnavailableError if no broker answered."""
        try:
            meta = await self._cluster.topic(topic, deadline)
        except RequestTimedOutError as e:
            if isinstance(e.__cause__, BrokerUnavailableError):
                raise self._unreachable(topic, e.__cause__, self.delivery_timeout_s) from None
            raise
        except BrokerUnavailableError as e:
            raise self._unreachable(topic, e, self.delivery_timeout_s) from None
        return len(meta.partitions)

    async def _confirm_partition(self, topic: str, partition: int, deadline: float) -> None:
        """Raise UnknownTopicError (not retriable) unless a fresh metadata read lists
        `partition` (the topic may have grown since the cached read)."""
        count = await self._confirmed_count(topic, deadline, partition)
        if count is None:
            raise UnknownTopicError(f"topic {topic!r} does not exist", retriable=False)
        if partition >= count:
            raise _out_of_range(topic, partition, count)

    async def _confirmed_count(
        self, topic: str, deadline: float, partition: int | None
    ) -> int | None:
        """The topic's partition count from fresh metadata reads; while the topic (or its
        `partition`) is missing, read again with backoff for up to CONFIRM_S: successive
        reads rotate over the brokers, so one that has not applied the topic's creation or
        growth yet does not decide alone. None: the topic does not exist."""
        until = min(deadline, trio.current_time() + CONFIRM_S)
        attempt = 0
        while True:
            count = await self._fresh_count(topic, deadline)
            if count is not None and (partition is None or partition < count):
                return count
            if trio.current_time() >= until:
                return count
            await trio.sleep(self._backoff.delay(attempt))
            attempt += 1

    async def _fresh_count(self, topic: str, deadline: float) -> int | None:
        """The topic's partition count (None: no such topic) from a metadata read made now,
        retried with backoff while no broker answers, until `deadline` (Trio time; then
        BrokerUnavailableError)."""
        last: SluiceError | None = None
        attempt = 0
        start = trio.current_time()
        with trio.move_on_at(deadline):
            while True:
                try:
                    await self._cluster.refresh([topic])
                except SluiceError as e:
                    if not e.retriable:
                        raise
                    last = e
                else:
                    return self._cluster.metadata.partition_count(topic)
                await trio.sleep(self._backoff.delay(attempt))
                attempt += 1
        if last is None:
            last = RequestTimedOutError("no broker answered metadata in time")
        raise self._unreachable(topic, last, trio.current_time() - start)

    @staticmethod
    def _unreachable(topic: str, error: SluiceError, waited_s: float) -> BrokerUnavailableError:
        """NETWORK_EXCEPTION for `topic` when no broker could be reached in `waited_s`
        seconds; `error` (the last metadata failure) names the brokers tried."""
        return BrokerUnavailableError(
            f"topic {topic!r}: no broker reachable in {waited_s:.1f} s: {error.message}"
        )

    def _routed(self, delivery: Delivery, batch: Batch, index: int) -> None:
        done = self._done.get(batch)
        if done is None:
            done = self._done[batch] = _Settle()
        delivery._bind(batch, index, done)

    def _unroutable(self, delivery: Delivery, size: int, error: SluiceError) -> None:
        error = self._unroutable_reason(delivery.topic, error)
        self._release(size)
        self._note_failure(error)
        delivery._fail_unrouted(error)

    def _unroutable_reason(self, topic: str, error: SluiceError) -> SluiceError:
        """What a record that could not be routed failed with: the core's UnknownTopicError
        is final when the topic is known (its partition does not exist: the metadata was
        just read), and NETWORK_EXCEPTION when the metadata could not be read at all."""
        if not isinstance(error, UnknownTopicError):
            return error
        if self._cluster.metadata.partition_count(topic) is not None:
            return UnknownTopicError(error.message, retriable=False)
        if self._metadata_failure is not None:
            return self._unreachable(topic, self._metadata_failure, self.delivery_timeout_s)
        return error

    def _settled(self, batch: Batch) -> None:
        self._spans.batch_settled(batch)
        self._release(batch.size)
        if batch.error is not None:
            self._note_failure(batch.error)
        done = self._done.pop(batch, None)
        if done is not None:
            done.event.set()
            if done.callbacks is not None:
                for delivery, fn in done.callbacks:
                    _call_back(fn, delivery)

    def _release(self, size: int) -> None:
        self._buffered -= size
        if not self._space.is_set() and (self._buffered <= 0 or self._buffered < self.buffer_bytes):
            self._space.set()

    def _note_failure(self, error: SluiceError) -> None:
        if self._first_failure is None:
            self._first_failure = error

    # -- the sender --------------------------------------------------------------------------

    def _wake_sender(self) -> None:
        self._wake.set()

    def _signal_metadata(self) -> None:
        """The core asked for a topic's metadata: the metadata task looks."""
        self._want_event.set()

    async def _sender(self) -> None:
        core = self._core
        while True:
            self._wake = trio.Event()
            now = trio.current_time()
            core.advance(now)
            request = core.identity_request(now)
            if request is not None:
                self._nursery.start_soon(self._identity, request)
            if self._txn is not None:
                self._txn.register_due(self._nursery)
            await self._drain(now)
            now = trio.current_time()
            deadline = core.next_deadline(now)
            if deadline > now:
                with trio.move_on_at(deadline):
                    await self._wake.wait()
            else:
                await trio.lowlevel.checkpoint()

    async def _identity(self, request: InitProducerIdRequest) -> None:
        """InitProducerId, from any broker (each hands out ids from blocks the metadata log
        allocates): a new id, or a new epoch for the current one."""
        try:
            response = await self._cluster.request_any(request)
        except SluiceError as e:
            self._core.identity_failed(e, trio.current_time())
        else:
            assert isinstance(response, InitProducerIdResponse)
            self._core.identity_answered(response)
        finally:
            self._wake_sender()

    async def _drain(self, now: float) -> None:
        core = self._core
        for leader, tps in core.drain_plan(now).items():
            conn = self._cluster.ready_connection(leader)
            if conn is None:
                topics = {tp[0] for tp in tps}
                self._cluster.start_connecting(
                    leader, on_done=functools.partial(self._connect_done, leader, topics)
                )
                continue
            while conn.has_capacity():
                picked = core.pick(tps, now)
                if not picked:
                    break
                await self._submit(conn, picked)
                if core.fatal is not None:
                    return

    def _connect_done(self, leader: int, topics: set[str]) -> None:
        """A connection attempt to `leader` ended: if it failed, the leader may have moved
        (an election after a crash), so the topics' metadata is asked for again."""
        if self._cluster.ready_connection(leader) is None:
            for topic in topics:
                self._refresh.want(topic)
        self._wake_sender()

    async def _submit(self, conn: Connection, picked: list[Batch]) -> None:
        span = self._spans.request_started(picked, conn)
        request = ProducerCore.produce_request(
            picked, self.request_timeout_ms, None if span is None else traceparent(span)
        )
        try:
            pending = await conn.submit(request, timeout_s=self.request_timeout_ms / 1000 + 5.0)
        except SluiceError as e:
            if span is not None:
                end_span(span, e)
            self._core.on_request_error(picked, e, trio.current_time())
            self._answered()
            return
        except BaseException as e:  # cancelled while submitting: the span still ends
            if span is not None:
                end_span(span, e)
            raise
        pending.on_done = functools.partial(self._response_in, pending, picked, span)
        self._nursery.start_soon(self._await_deadline, pending, picked, span)

    def _response_in(self, pending: Pending, picked: list[Batch], span: Span | None) -> None:
        """The answer (or the connection's failure) is in: settle the batches now, in the
        connection's reader (no task switch between the answer and its deliveries)."""
        error: SluiceError | None = None
        try:
            response = pending.outcome()
        except SluiceError as e:
            error = e
            self._core.on_request_error(picked, e, self._now())
        else:
            assert isinstance(response, ProduceResponse)
            self._core.on_response(picked, response, self._now())
        finally:
            if span is not None:
                end_span(span, error)
        self._answered()

    async def _await_deadline(
        self, pending: Pending, picked: list[Batch], span: Span | None
    ) -> None:
        """Wait for the request's end: an answer was handled by `_response_in` already; a
        failed connection or the deadline (the connection is then closed) fails the batches
        here."""
        timed_out = await pending.wait()
        if pending.on_done is None:
            return
        pending.on_done = None
        if timed_out is None:
            self._response_in(pending, picked, span)
            return
        if span is not None:
            end_span(span, timed_out)
        self._core.on_request_error(picked, timed_out, trio.current_time())
        self._answered()

    def _answered(self) -> None:
        if self._txn is not None:
            self._txn.note_answer()
        self._wake_sender()

    # -- metadata ----------------------------------------------------------------------------

    async def _metadata_task(self) -> None:
        """Refresh the topics the core asks about, when the refresh policy allows (stale
        topics again while records of them are queued)."""
        cluster, core, refresh = self._cluster, self._core, self._refresh
        while True:
            topics = refresh.start(trio.current_time(), core.has_queued)
            if topics is None:
                with trio.move_on_at(refresh.next_at()):
                    await self._want_event.wait()
                self._want_event = trio.Event()
                continue
            try:
                await cluster.refresh(topics)
                ok = True
                self._metadata_failure = None
            except SluiceError as e:
                ok = False
                self._metadata_failure = e if isinstance(e, BrokerUnavailableError) else None
            core.leaders_changed()
            stale = core.stale_topics(topics, cluster.unreachable)
            refresh.finish(trio.current_time(), topics, ok, stale)
            self._wake_sender()
