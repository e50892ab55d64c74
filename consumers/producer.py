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
timeout). A record sent to a partition the cached metadata does not list is held
(`consumers.held_records.HeldRecords`, with every later record of its topic, to keep their
order) until fresh metadata reads give the count (read again for up to CONFIRM_S while the
partition is missing, rotating over the brokers): routed if the topic grew, else failed with
a non-retriable UnknownTopicError. When no broker answers metadata, records that could not
be routed fail with BrokerUnavailableError (NETWORK_EXCEPTION, naming the brokers tried),
not with UnknownTopicError. `Delivery` and `RecordMetadata` live in consumers/delivery.py.

One sender task and one metadata task run in the producer's nursery (the mixin
`consumers.producer_sender.ProducerSender`, whose module docstring tells how): the sender
drains the core into produce requests, the metadata task refreshes what the core asks for.

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
between `begin_transaction()` and `commit_transaction()`/`abort_transaction()` (those
methods: the mixin `consumers.transactional.ProducerTransactions`). The
`consumers.transaction.TransactionSession` owns that conversation; the sender asks it to
register partitions before their first batch. Leaving the producer with a transaction open
aborts it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Literal

import trio

from broker.wire.batch import Record, new_record
from broker.wire.errors import WireError
from broker.wire.partitioner import default_partition, murmur2_partition
from broker.wire.txn_messages import transactional_id as valid_transactional_id
from consumers.cluster import Backoff, Cluster
from consumers.core.accumulator import Accumulator, Batch, record_size
from consumers.core.producer import ProducerCore
from consumers.core.refresh import MetadataRefresh
from consumers.delivery import Delivery, DoneCallback, RecordMetadata, Settle, call_back, fresh
from consumers.durations import duration_ms
from consumers.errors import (
    BrokerUnavailableError,
    BufferFull,
    ClientClosedError,
    RequestTimedOutError,
    SluiceError,
    UnknownTopicError,
)
from consumers.held_records import CONFIRM_S as CONFIRM_S
from consumers.held_records import HeldRecords, unreachable
from consumers.producer_sender import ProducerSender
from consumers.tracing import ProducerSpans
from consumers.transaction import GroupMetadata, TransactionSession
from consumers.transactional import ProducerTransactions

__all__ = ["Delivery", "DoneCallback", "GroupMetadata", "Producer", "RecordMetadata"]

KiB = 1024
MiB = 1024 * KiB

Headers = Sequence[tuple[str, bytes]] | Mapping[str, bytes] | None
"""A record's headers: (name, value) pairs or a mapping; None: none."""


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


def _make_record(
    value: object, key: object, headers: Headers, timestamp: int | None
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


DEFAULT_DELIVERY_TIMEOUT_MS = 30_000
"""`delivery_timeout_ms` when neither it nor `delivery_timeout_s` is given."""


class Producer(ProducerTransactions, ProducerSender):
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
        self._done: dict[Batch, Settle] = {}
        """What each unsettled batch's deliveries wait on (and their callbacks)."""
        self._metadata_failure: BrokerUnavailableError | None = None
        """Why the last metadata refresh failed, when no broker answered it."""
        self._now = trio.lowlevel.current_clock().current_time
        """trio.current_time without its indirections (the run's clock is fixed): the
        enqueue path reads it once per record."""
        self._held = HeldRecords(
            cluster=self._cluster,
            core=self._core,
            backoff=self._backoff,
            delivery_timeout_s=self.delivery_timeout_s,
            now=self._now,
            on_routed=self._routed,
            on_unroutable=self._unroutable,
            wake=self._wake_sender,
        )
        """Records waiting for a fresh partition count, per topic in send order."""
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
            raise fresh(failure)

    async def _shutdown(self) -> None:
        """Close once: fail every record still held or queued with ClientClosedError,
        cancel the tasks and close the connections."""
        if self._stack is None:
            return
        self._closing = self._core.closing = True
        self._open = False
        closed = ClientClosedError("the producer was closed")
        for h in self._held.take_all():
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
            raise fresh(self._core.fatal)

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
        record, size = _make_record(value, key, headers, timestamp)
        if partition is not None and partition < 0:
            raise ValueError("partition must be >= 0")
        deadline = trio.current_time() + self.delivery_timeout_s
        count = self._cluster.metadata.partition_count(topic)
        if count is None and topic not in self._core.unrouted:
            count = await self._held.topic_count(topic, deadline)
            self._check_sendable()
        if (
            partition is not None
            and count is not None
            and partition >= count
            and topic not in self._held
        ):
            await self._held.confirm_partition(topic, partition, deadline)
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
        record, size = _make_record(value, key, headers, timestamp)
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
        count = await self._held.confirmed_count(topic, deadline, None)
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
        unrouted += self._held.deliveries()
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
            raise fresh(failure)

    @property
    def buffered_bytes(self) -> int:
        """Estimated bytes of records queued and not yet acknowledged or failed."""
        return self._buffered if self._open else 0

    # -- enqueueing and outcomes -------------------------------------------------------------

    def _enqueue(
        self, topic: str, record: Record, key: bytes | None, partition: int | None, size: int
    ) -> Delivery:
        """Hand a checked record to the core, or hold it (`HeldRecords.must_hold`), and
        count its `size` (estimated bytes) in the buffer; returns its Delivery."""
        if (partition is not None or self._held.queues) and self._held.must_hold(topic, partition):
            delivery = self._held.hold(self._nursery, topic, record, key, partition, size)
            self._buffered += size
            return delivery
        delivery = Delivery(topic, record.timestamp)
        routed = self._core.enqueue(topic, record, key, partition, size, self._now(), delivery)
        if routed is None:
            delivery._routed = trio.Event()
        else:
            batch, index, changed = routed
            done = self._done.get(batch)
            if done is None:
                done = self._done[batch] = Settle()
            # delivery._bind(batch, index, done), inline: nothing waits on `_routed` yet
            delivery._batch = batch
            delivery._index = index
            delivery._done = done
            if changed:
                self._wake.set()
        self._buffered += size
        return delivery

    def _routed(self, delivery: Delivery, batch: Batch, index: int) -> None:
        done = self._done.get(batch)
        if done is None:
            done = self._done[batch] = Settle()
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
            return unreachable(topic, self._metadata_failure, self.delivery_timeout_s)
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
                    call_back(fn, delivery)

    def _release(self, size: int) -> None:
        self._buffered -= size
        if not self._space.is_set() and (self._buffered <= 0 or self._buffered < self.buffer_bytes):
            self._space.set()

    def _note_failure(self, error: SluiceError) -> None:
        if self._first_failure is None:
            self._first_failure = error
