"""The blocking facade: `Producer`, `Consumer` and `Admin` without `await`, for plain scripts.

Each object runs its own Trio loop in a daemon thread (`trio.run` in a thread; calls enter it
through `trio.from_thread.run` / `run_sync` with the loop's token). The asynchronous object is
entered (`async with`) by one task of that loop when the facade is entered, and exited by the
same task when it is left, so its nursery and cancel scopes live in one task as Trio requires.
Every method delegates into the loop and returns or raises what the asynchronous one does.

A call into the loop costs a thread round trip (tens of µs): `send_nowait` is still the fast
way to queue many records. `for record in consumer` takes records in chunks of
`max_poll_records`; records taken but not yet yielded are returned first by the next `poll`,
count as unconsumed for `position` and for `commit()`, and are dropped by `seek` of their
partition and when their partition stops being read (revoked or lost in a group: a
revocation then commits the offset of the first of them, never past a record not yielded).

Group callbacks (`on_assigned`, `on_revoked`, `on_lost`, commit callbacks) given as plain
functions run in a worker thread while the loop waits for them, so they may call the
consumer (`commit()` in `on_revoked`, say); async functions run in the loop itself.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, contextmanager, suppress
from functools import partial
from types import TracebackType
from typing import Any, Generic, Literal, Self, TypeVar, cast

import trio

from consumers import admin as _admin
from consumers import consumer as _consumer
from consumers import producer as _producer
from consumers.cluster import TopicPartition
from consumers.consumer import (
    CommitCallback,
    ConsumerRecord,
    OffsetAndTimestamp,
    RebalanceCallback,
)
from consumers.core.group_member import GroupMetadata
from consumers.durations import duration_ms
from consumers.errors import ClientClosedError, SluiceError
from consumers.producer import Headers, RecordMetadata
from consumers.rebalance import ReassignmentStatus, RebalanceResult
from consumers.txn_admin import OPEN_STATES, HeldBack, TransactionDetails, TransactionListing

__all__ = ["Admin", "Consumer", "Delivery", "Producer"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
A = TypeVar("A")


class _Loop:
    """A Trio loop in a daemon thread, holding one async context manager open."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._token: trio.lowlevel.TrioToken | None = None
        self._ready = threading.Event()
        self._stop: trio.Event | None = None
        self._nursery: trio.Nursery | None = None
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._crash: BaseException | None = None

    def start(self) -> None:
        self._thread.start()
        self._ready.wait()
        if self._crash is not None:
            raise self._crash

    def _main(self) -> None:
        try:
            trio.run(self._root)
        except BaseException as e:  # surfaced to the caller of start()
            self._crash = e
        finally:
            self._ready.set()

    async def _root(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._ready.set()
            await self._stop.wait()
            nursery.cancel_scope.cancel()

    def run(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        if self._token is None:
            raise ClientClosedError(f"{self._name} is not open")
        try:
            return trio.from_thread.run(fn, *args, trio_token=self._token)
        except trio.RunFinishedError:
            raise ClientClosedError(f"{self._name} is closed") from None

    def run_sync(self, fn: Callable[..., T], *args: Any) -> T:
        if self._token is None:
            raise ClientClosedError(f"{self._name} is not open")
        try:
            return trio.from_thread.run_sync(fn, *args, trio_token=self._token)
        except trio.RunFinishedError:
            raise ClientClosedError(f"{self._name} is closed") from None

    def stop(self) -> None:
        if self._token is not None and self._stop is not None:
            stop = self._stop
            with suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(stop.set, trio_token=self._token)
        self._thread.join()
        self._token = None


class _Holder(Generic[A]):
    """Enters an async context manager in one loop task and exits it in the same task."""

    def __init__(self, loop: _Loop, cm: AbstractAsyncContextManager[A]) -> None:
        self._loop = loop
        self._cm = cm
        self._release: trio.Event | None = None
        self._finished: trio.Event | None = None
        self._exc: BaseException | None = None
        self._exit_error: BaseException | None = None

    def enter(self) -> A:
        value: A = self._loop.run(self._start)
        return value

    async def _start(self) -> A:
        self._release = trio.Event()
        self._finished = trio.Event()
        nursery = self._loop._nursery
        assert nursery is not None
        value: A = await nursery.start(self._hold)
        return value

    async def _hold(self, *, task_status: trio.TaskStatus[A]) -> None:
        assert self._release is not None and self._finished is not None
        started = False
        try:
            async with self._cm as value:
                started = True
                task_status.started(value)
                await self._release.wait()
                if self._exc is not None:
                    raise self._exc
        except BaseException as e:
            if not started:
                raise
            if e is not self._exc:
                self._exit_error = e
        finally:
            if started:
                self._finished.set()

    def exit(self, exc: BaseException | None) -> None:
        self._exc = exc
        self._loop.run(self._finish)
        error, self._exit_error = self._exit_error, None
        if error is not None and exc is None:
            raise error

    async def _finish(self) -> None:
        assert self._release is not None and self._finished is not None
        self._release.set()
        await self._finished.wait()


class _Facade(Generic[A]):
    """Runs the async client `_async` in a loop thread of its own while the facade is open.

    Open by `with` (closed on leaving it) or, as plain scripts expect, by the first call
    (then `close()` closes it). A closed facade stays closed: calls raise ClientClosedError.
    """

    _kind = "client"
    _async: A
    _running: _Loop | None = None
    _holder: _Holder[A] | None = None
    _closed = False

    def __enter__(self) -> Self:
        if self._running is None:
            self._open_async(cast(AbstractAsyncContextManager[A], self._async))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._close_async(exc)

    def close(self) -> None:
        """Flush what the client must (a producer's queued records), then stop its loop
        thread. Closing twice is harmless."""
        self._close_async(None)

    @property
    def _loop(self) -> _Loop:
        """The running loop, opened on first use."""
        if self._running is None:
            self.__enter__()
        assert self._running is not None
        return self._running

    def _open_async(self, obj: AbstractAsyncContextManager[A]) -> A:
        if self._closed:
            raise ClientClosedError(f"this {self._kind} is closed; create a new one")
        loop = _Loop(f"sluice-{self._kind}")
        loop.start()
        holder: _Holder[A] = _Holder(loop, obj)
        try:
            value = holder.enter()
        except BaseException:
            loop.stop()
            raise
        self._running, self._holder = loop, holder
        return value

    def _close_async(self, exc: BaseException | None) -> None:
        self._closed = True
        holder, loop = self._holder, self._running
        if holder is None or loop is None:
            return
        self._holder, self._running = None, None
        try:
            holder.exit(exc)
        finally:
            loop.stop()

    def __repr__(self) -> str:
        state = "open" if self._running is not None else "closed" if self._closed else "not open"
        return f"<blocking {self._async!r} ({state})>"


# --------------------------------------------------------------------------- producer


class Delivery:
    """The outcome of one sent record: `delivery.wait()` blocks until it is known; `done`,
    `result()` and `exception()` look without waiting; `add_done_callback(fn)` calls
    `fn(delivery)` once it settles."""

    __slots__ = ("_async", "_loop")

    def __init__(self, loop: _Loop, delivery: _producer.Delivery) -> None:
        """Wrap the loop's `delivery` (the blocking Producer creates it)."""
        self._loop = loop
        self._async = delivery

    @property
    def done(self) -> bool:
        """Whether the record settled: acknowledged or failed for good."""
        return self._async.done

    def wait(self) -> RecordMetadata:
        """Block until the record is acknowledged (its metadata) or failed (its error)."""
        if self._async.done:
            return self._async.result()
        return self._loop.run(self._async.wait)

    def result(self) -> RecordMetadata:
        """The outcome now: metadata, the typed error, or RuntimeError while pending."""
        return self._async.result()

    def exception(self) -> SluiceError | None:
        """The typed error now, None once acknowledged, or RuntimeError while pending."""
        return self._async.exception()

    def add_done_callback(self, fn: Callable[[Delivery], object]) -> None:
        """Call `fn(delivery)` (this blocking Delivery) once the record settles. If it has
        already, `fn` runs at once in the calling thread (as `concurrent.futures` does);
        otherwise in the producer's loop thread when the acknowledgement or failure
        arrives: it must be quick and must not call this producer's blocking methods (they
        would wait on the very thread running them). An exception a callback raises is
        logged (logger `consumers.blocking` or `consumers.producer`), never raised."""
        if self._async.done:
            try:
                fn(self)
            except Exception:
                logger.exception("a delivery callback (%r) of %r raised", fn, self)
            return
        self._loop.run_sync(self._async.add_done_callback, lambda _: fn(self))

    def __repr__(self) -> str:
        """The loop's Delivery's: topic, state, partition and offset once known."""
        return repr(self._async)


class Producer(_Facade[_producer.Producer]):
    """`consumers.Producer` without await: `with Producer(...) as p: p.send(...)`. Each
    Producer runs its own Trio loop in a daemon thread (see the module docstring); its
    deliveries' callbacks run in that thread."""

    _kind = "producer"

    def __init__(
        self,
        bootstrap: str | Sequence[str] = "127.0.0.1:9092",
        *,
        transactional_id: str | None = None,
        transaction_timeout_ms: int = 60_000,
        idempotent: bool = True,
        linger_ms: float = 5,
        batch_bytes: int = 256 * 1024,
        buffer_bytes: int = 32 * 1024 * 1024,
        max_in_flight: int = 5,
        delivery_timeout_ms: float | None = None,
        delivery_timeout_s: float | None = None,
        request_timeout_ms: int = 30_000,
        partitioner: Literal["default", "murmur2"] = "default",
        client_id: str | None = None,
        max_request_bytes: int = 8 * 1024 * 1024,
        retry_backoff_ms: float = 50,
        retry_backoff_max_ms: float = 1000,
    ) -> None:
        """Configure (nothing connects before the first use). The parameters, their units
        (durations in milliseconds; `delivery_timeout_s` is the older name of
        `delivery_timeout_ms`, in seconds) and defaults are `consumers.Producer`'s:
        bootstrap, transactional_id, transaction_timeout_ms, idempotent, linger_ms,
        batch_bytes, buffer_bytes, max_in_flight, delivery_timeout_ms, request_timeout_ms,
        partitioner ("default": Sluice's jump hash; "murmur2": Kafka's placement),
        client_id, max_request_bytes, retry_backoff_ms, retry_backoff_max_ms."""
        self._async = _producer.Producer(
            bootstrap,
            transactional_id=transactional_id,
            transaction_timeout_ms=transaction_timeout_ms,
            idempotent=idempotent,
            linger_ms=linger_ms,
            batch_bytes=batch_bytes,
            buffer_bytes=buffer_bytes,
            max_in_flight=max_in_flight,
            delivery_timeout_ms=delivery_timeout_ms,
            delivery_timeout_s=delivery_timeout_s,
            request_timeout_ms=request_timeout_ms,
            partitioner=partitioner,
            client_id=client_id,
            max_request_bytes=max_request_bytes,
            retry_backoff_ms=retry_backoff_ms,
            retry_backoff_max_ms=retry_backoff_max_ms,
        )

    def send(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        headers: Headers = None,
        partition: int | None = None,
        timestamp: int | None = None,
    ) -> Delivery:
        """As `consumers.Producer.send`: queue a record, blocking while the buffer is full
        (and for the topic's metadata)."""

        async def send() -> _producer.Delivery:
            return await self._async.send(
                topic, value, key=key, headers=headers, partition=partition, timestamp=timestamp
            )

        return Delivery(self._loop, self._loop.run(send))

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
        """As `consumers.Producer.send_nowait`: queue a record without waiting for room
        (BufferFull when the buffer is full)."""

        def send() -> _producer.Delivery:
            return self._async.send_nowait(
                topic, value, key=key, headers=headers, partition=partition, timestamp=timestamp
            )

        return Delivery(self._loop, self._loop.run_sync(send))

    def send_and_wait(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        headers: Headers = None,
        partition: int | None = None,
        timestamp: int | None = None,
    ) -> RecordMetadata:
        """Send one record and block until it is acknowledged (its metadata) or failed."""

        async def send() -> RecordMetadata:
            return await self._async.send_and_wait(
                topic, value, key=key, headers=headers, partition=partition, timestamp=timestamp
            )

        return self._loop.run(send)

    def flush(self) -> None:
        """Block until every record queued so far is acknowledged or failed; raises the
        first failure since the previous flush."""
        self._loop.run(self._async.flush)

    def partitions_for(self, topic: str, *, timeout_ms: float | None = None) -> list[int]:
        """As `consumers.Producer.partitions_for`: the topic's partitions, read afresh."""
        return self._loop.run(partial(self._async.partitions_for, topic, timeout_ms=timeout_ms))

    def close(self, timeout_ms: float | None = None) -> None:
        """Flush for at most `timeout_ms` milliseconds (default: the delivery timeout), then
        close and stop the loop thread: records still unacknowledged fail. Raises the flush
        failure (RequestTimedOutError when records were left at the bound). Closing a
        closed producer does nothing."""
        try:
            if timeout_ms is not None and self._running is not None:
                self._running.run(partial(self._async.close, timeout_ms))
        finally:
            super().close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """`with producer.transaction():` commits on exit, aborts when the block raises."""
        self.begin_transaction()
        try:
            yield
        except BaseException:
            try:
                self.abort_transaction()
            except SluiceError as e:
                logger.warning("transaction %s: abort failed: %s", self._async.transactional_id, e)
            raise
        self.commit_transaction()

    def begin_transaction(self) -> None:
        """Start a transaction (a transactional producer only)."""
        self._loop.run(self._async.begin_transaction)

    def commit_transaction(self) -> None:
        """Flush and commit the transaction (TransactionAbortedError if it aborted)."""
        self._loop.run(self._async.commit_transaction)

    def abort_transaction(self) -> None:
        """Abort the transaction: none of it becomes visible to read_committed readers."""
        self._loop.run(self._async.abort_transaction)

    def send_offsets_to_transaction(
        self,
        offsets: Mapping[tuple[str, int], int],
        group_metadata: GroupMetadata | str,
    ) -> None:
        """Commit a group's offsets as part of the transaction (see the async Producer)."""
        self._loop.run(self._async.send_offsets_to_transaction, offsets, group_metadata)


# --------------------------------------------------------------------------- consumer


class Consumer(_Facade[_consumer.Consumer]):
    """`consumers.Consumer` without await; `for record in consumer` never ends.

    Open with `with Consumer(...) as c` (or by the first call, then `close()`). Records taken
    from the loop but not yet yielded by the iteration are returned first by `poll` (those of
    paused partitions are held back until `resume`)."""

    _kind = "consumer"

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
        fetch_max_bytes: int = 50 * 1024 * 1024,
        max_partition_fetch_bytes: int = 1024 * 1024,
        request_timeout_ms: int = 30_000,
        metadata_max_age_ms: int = 5_000,
        client_id: str | None = None,
        retry_backoff_ms: float = 100,
        retry_backoff_max_ms: float = 1000,
    ) -> None:
        """Configure (nothing connects before the first use). The parameters, their units
        (durations in milliseconds) and defaults are `consumers.Consumer`'s: bootstrap,
        group_id, group_instance_id, session_timeout_ms, group_assignor,
        auto_commit_interval_ms, isolation, auto_offset_reset, enable_auto_commit,
        max_poll_records, fetch_max_wait_ms, fetch_min_bytes, fetch_max_bytes,
        max_partition_fetch_bytes, request_timeout_ms, metadata_max_age_ms, client_id,
        retry_backoff_ms, retry_backoff_max_ms."""
        self._async = _consumer.Consumer(
            bootstrap,
            group_id=group_id,
            group_instance_id=group_instance_id,
            session_timeout_ms=session_timeout_ms,
            group_assignor=group_assignor,
            auto_commit_interval_ms=auto_commit_interval_ms,
            isolation=isolation,
            auto_offset_reset=auto_offset_reset,
            enable_auto_commit=enable_auto_commit,
            max_poll_records=max_poll_records,
            fetch_max_wait_ms=fetch_max_wait_ms,
            fetch_min_bytes=fetch_min_bytes,
            fetch_max_bytes=fetch_max_bytes,
            max_partition_fetch_bytes=max_partition_fetch_bytes,
            request_timeout_ms=request_timeout_ms,
            metadata_max_age_ms=metadata_max_age_ms,
            client_id=client_id,
            retry_backoff_ms=retry_backoff_ms,
            retry_backoff_max_ms=retry_backoff_max_ms,
        )
        self._pending: deque[ConsumerRecord] = deque()
        """Records taken from the loop, not yet yielded (guarded by `_lock`: the loop drops
        those of partitions that stop being read)."""
        self._lock = threading.Lock()
        self._maybe_paused: frozenset[TopicPartition] = frozenset()
        """What `pause` paused, as far as this thread knows (the loop's set is the truth)."""
        group = self._async._group
        if group is not None:
            group.on_stop = self._stopped

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        """As `consumers.Consumer.assign`; records not yet yielded of partitions no longer
        assigned are dropped."""
        wanted = list(partitions)
        self._loop.run_sync(self._async.assign, wanted)  # a group's hook drops what it stops
        self._drop_pending(lambda tp: tp not in set(wanted))

    def subscribe(
        self,
        topics: Iterable[str] | None = None,
        *,
        pattern: str | None = None,
        on_assigned: RebalanceCallback | None = None,
        on_revoked: RebalanceCallback | None = None,
        on_lost: RebalanceCallback | None = None,
    ) -> None:
        """As `consumers.Consumer.subscribe`; plain callbacks run in a worker thread (they may
        call this consumer), async ones in the loop."""
        names = None if topics is None else topics if isinstance(topics, str) else list(topics)

        def subscribe() -> None:
            self._async.subscribe(
                names,
                pattern=pattern,
                on_assigned=_in_worker(on_assigned),
                on_revoked=_in_worker(on_revoked),
                on_lost=_in_worker(on_lost),
            )

        self._loop.run_sync(subscribe)

    def unsubscribe(self) -> None:
        """As `consumers.Consumer.unsubscribe`; records not yet yielded are dropped."""
        self._loop.run_sync(self._async.unsubscribe)  # a group's hook drops what it stops
        with self._lock:
            self._pending.clear()

    def subscription(self) -> frozenset[str]:
        """The topics named by `subscribe`."""
        return self._loop.run_sync(self._async.subscription)

    def assignment(self) -> frozenset[TopicPartition]:
        """The partitions being read."""
        return self._loop.run_sync(self._async.assignment)

    def pause(self, partitions: Iterable[TopicPartition]) -> None:
        """Stop fetching and returning these assigned partitions' records until `resume`."""
        tps = [(t, int(p)) for t, p in partitions]
        self._loop.run_sync(self._async.pause, tps)
        self._maybe_paused |= frozenset(tps)

    def resume(self, partitions: Iterable[TopicPartition]) -> None:
        """Fetch and return these paused partitions' records again."""
        self._loop.run_sync(self._async.resume, list(partitions))
        self._maybe_paused = self.paused()

    def paused(self) -> frozenset[TopicPartition]:
        """The partitions `pause` holds back."""
        return self._loop.run_sync(self._async.paused)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        """The next record returned for `tp` will be the one at `offset`."""
        self._drop_pending(lambda other: other == tp)
        self._loop.run_sync(self._async.seek, tp, offset)

    def seek_to_beginning(self, partitions: Iterable[TopicPartition] | None = None) -> None:
        """Read these partitions (None: every assigned one) from their first record."""
        tps = None if partitions is None else list(partitions)
        self._drop_pending(lambda tp: tps is None or tp in tps)
        self._loop.run_sync(self._async.seek_to_beginning, tps)

    def seek_to_end(self, partitions: Iterable[TopicPartition] | None = None) -> None:
        """Read only records written after these partitions' (None: all) current end."""
        tps = None if partitions is None else list(partitions)
        self._drop_pending(lambda tp: tps is None or tp in tps)
        self._loop.run_sync(self._async.seek_to_end, tps)

    def skip_corrupt(self, tp: TopicPartition) -> int:
        """Move past the corrupt batch `poll` raised for `tp`; returns the new position."""
        return self._loop.run_sync(self._async.skip_corrupt, tp)

    def position(self, tp: TopicPartition) -> int:
        """The offset of the next record `poll` or the iteration returns for `tp`."""
        with self._lock:
            for record in self._pending:
                if (record.topic, record.partition) == tuple(tp):
                    return record.offset
        return self._loop.run(self._async.position, tp)

    def poll(
        self,
        timeout: float | None = None,
        max_records: int = 500,
        *,
        timeout_ms: float | None = None,
    ) -> list[ConsumerRecord]:
        """Records (at most `max_records`), waiting up to `timeout_ms` milliseconds (default
        1000) for some; possibly empty. `timeout` is the older name, in seconds (TypeError if
        both are given). Paused partitions' records are held back."""
        wait_ms = duration_ms("timeout_ms", timeout_ms, "timeout", timeout, 1000.0)
        if max_records < 1:
            raise ValueError("max_records must be >= 1")
        taken = self._take_pending(max_records)
        if taken:
            return taken

        async def poll() -> list[ConsumerRecord]:
            return await self._async.poll(max_records=max_records, timeout_ms=wait_ms)

        return self._loop.run(poll)

    def _take_pending(self, max_records: int) -> list[ConsumerRecord]:
        """Up to `max_records` records not yet yielded, leaving those of paused partitions."""
        with self._lock:
            if not self._pending:
                return []
        held = self.paused() if self._maybe_paused else frozenset()
        self._maybe_paused = held
        with self._lock:
            if not held:
                n = min(max_records, len(self._pending))
                return [self._pending.popleft() for _ in range(n)]
            taken: list[ConsumerRecord] = []
            kept: deque[ConsumerRecord] = deque()
            for r in self._pending:
                if len(taken) < max_records and (r.topic, r.partition) not in held:
                    taken.append(r)
                else:
                    kept.append(r)
            self._pending = kept
            return taken

    def partitions_for(self, topic: str, *, timeout_ms: float | None = None) -> list[int]:
        """As `consumers.Consumer.partitions_for`: the partitions of `topic`."""
        return self._loop.run(partial(self._async.partitions_for, topic, timeout_ms=timeout_ms))

    def beginning_offsets(
        self, partitions: Iterable[TopicPartition], *, timeout_ms: float | None = None
    ) -> dict[TopicPartition, int]:
        """As `consumers.Consumer.beginning_offsets`: each partition's first offset."""
        tps = list(partitions)
        return self._loop.run(partial(self._async.beginning_offsets, tps, timeout_ms=timeout_ms))

    def end_offsets(
        self, partitions: Iterable[TopicPartition], *, timeout_ms: float | None = None
    ) -> dict[TopicPartition, int]:
        """As `consumers.Consumer.end_offsets`: each partition's end (the last stable offset
        under read_committed)."""
        tps = list(partitions)
        return self._loop.run(partial(self._async.end_offsets, tps, timeout_ms=timeout_ms))

    def offsets_for_times(
        self, timestamps: Mapping[TopicPartition, int], *, timeout_ms: float | None = None
    ) -> dict[TopicPartition, OffsetAndTimestamp | None]:
        """As `consumers.Consumer.offsets_for_times`: per partition, the first record at or
        after the time (ms since the epoch), or None."""
        stamps = dict(timestamps)
        return self._loop.run(partial(self._async.offsets_for_times, stamps, timeout_ms=timeout_ms))

    def commit(self, offsets: Mapping[TopicPartition, int] | None = None) -> None:
        """As `consumers.Consumer.commit`; None commits what was yielded (records taken but
        not yet yielded are not committed)."""

        async def commit() -> None:
            await self._async.commit(self._consumed(offsets))

        self._loop.run(commit)

    def commit_async(
        self,
        offsets: Mapping[TopicPartition, int] | None = None,
        callback: CommitCallback | None = None,
    ) -> None:
        """As `consumers.Consumer.commit_async`; a plain callback runs in a worker thread."""

        def commit() -> None:
            self._async.commit_async(self._consumed(offsets), _in_worker(callback))

        self._loop.run_sync(commit)

    def committed(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int | None]:
        """The group's committed offsets (None: nothing committed)."""
        return self._loop.run(self._async.committed, list(partitions))

    def group_metadata(self) -> GroupMetadata:
        """This consumer's group and membership, for `send_offsets_to_transaction`."""
        return self._loop.run_sync(self._async.group_metadata)

    def __iter__(self) -> Iterator[ConsumerRecord]:
        """`for record in consumer`: every record, one at a time, never ending."""
        return self

    def __next__(self) -> ConsumerRecord:
        """The next record, waiting as long as it takes."""
        while True:
            taken = self._take_pending(1)
            if taken:
                return taken[0]
            self._loop.run(self._refill)

    async def _refill(self) -> None:
        """Take a chunk in the loop (no partition can stop being read between the poll and
        the chunk joining `_pending`)."""
        records = await self._async.poll(
            max_records=self._async.max_poll_records, timeout_ms=1000.0
        )
        with self._lock:
            self._pending.extend(records)

    def _consumed(
        self, offsets: Mapping[TopicPartition, int] | None
    ) -> Mapping[TopicPartition, int] | None:
        """What `commit(offsets)` commits (run in the loop): None means the positions,
        moved back to the first record not yielded yet."""
        group = self._async._group
        if offsets is not None or group is None:
            return offsets
        with self._lock:
            first = _first_offsets(self._pending)
        return {**group.current_offsets(), **first} if first else None

    def _stopped(self, tps: frozenset[TopicPartition]) -> dict[TopicPartition, int]:
        """The loop stops reading `tps`: drop their records not yielded; where they began."""
        with self._lock:
            dropped = [r for r in self._pending if (r.topic, r.partition) in tps]
            if dropped:
                kept = [r for r in self._pending if (r.topic, r.partition) not in tps]
                self._pending = deque(kept)
        return _first_offsets(dropped)

    def _drop_pending(self, drop: Callable[[TopicPartition], bool]) -> None:
        with self._lock:
            if self._pending:
                self._pending = deque(r for r in self._pending if not drop((r.topic, r.partition)))


def _first_offsets(records: Iterable[ConsumerRecord]) -> dict[TopicPartition, int]:
    first: dict[TopicPartition, int] = {}
    for r in records:
        first.setdefault((r.topic, r.partition), r.offset)
    return first


CallbackT = TypeVar("CallbackT", bound=Callable[..., Any])


def _in_worker(callback: CallbackT | None) -> CallbackT | None:
    """A plain callback wrapped to run in a worker thread (it may call the facade, which
    enters the loop); an async one as it is."""
    if callback is None or inspect.iscoroutinefunction(callback):
        return callback

    async def run(*args: Any) -> None:
        await trio.to_thread.run_sync(callback, *args)

    return cast(CallbackT, run)


# --------------------------------------------------------------------------- admin


class Admin(_Facade[_admin.Admin]):
    """`consumers.Admin` without await: the same methods, arguments (durations in
    milliseconds, `*_ms`; the older `timeout_s` / `poll_s` in seconds still work) and
    errors.

    `bootstrap`: brokers to start from; `client_id`: sent with every request;
    `request_timeout_ms`: milliseconds one request waits for its answer; `timeout_ms`:
    milliseconds a call retries retriable errors unless given its own (default 30000);
    `timeout_s`: its older name, in seconds.
    """

    _kind = "admin"

    def __init__(
        self,
        bootstrap: str | Sequence[str] = "127.0.0.1:9092",
        *,
        client_id: str | None = None,
        request_timeout_ms: int = 30_000,
        timeout_ms: float | None = None,
        timeout_s: float | None = None,
    ) -> None:
        self._async = _admin.Admin(
            bootstrap,
            client_id=client_id,
            request_timeout_ms=request_timeout_ms,
            timeout_ms=timeout_ms,
            timeout_s=timeout_s,
        )

    def __repr__(self) -> str:
        state = "open" if self._running is not None else "closed"
        return f"blocking Admin(bootstrap={self._async.bootstrap!r}, {state})"

    def create_topic(
        self,
        name: str,
        partitions: int | None = None,
        replication_factor: int | None = None,
        config: Mapping[str, str] | None = None,
        *,
        timeout_ms: float | None = None,
        timeout_s: float | None = None,
    ) -> None:
        """Create a topic and return once every partition has a leader (None: the broker's
        default partitions and replication factor); see `consumers.Admin.create_topic`."""
        self._loop.run(
            lambda: self._async.create_topic(
                name,
                partitions,
                replication_factor,
                config,
                timeout_ms=timeout_ms,
                timeout_s=timeout_s,
            )
        )

    def alter_topic(
        self,
        name: str,
        *,
        partitions: int | None = None,
        set_config: Mapping[str, str] | None = None,
        delete_config: Iterable[str] = (),
        timeout_ms: float | None = None,
        timeout_s: float | None = None,
    ) -> int:
        """Add partitions or change settings; see `consumers.Admin.alter_topic`."""
        return self._loop.run(
            lambda: self._async.alter_topic(
                name,
                partitions=partitions,
                set_config=set_config,
                delete_config=delete_config,
                timeout_ms=timeout_ms,
                timeout_s=timeout_s,
            )
        )

    def delete_topic(
        self, name: str, *, timeout_ms: float | None = None, timeout_s: float | None = None
    ) -> None:
        """Delete a topic and its data; see `consumers.Admin.delete_topic`."""
        self._loop.run(
            lambda: self._async.delete_topic(name, timeout_ms=timeout_ms, timeout_s=timeout_s)
        )

    def list_topics(self) -> list[_admin.TopicDescription]:
        """Every topic, sorted by name; see `consumers.Admin.list_topics`."""
        return self._loop.run(self._async.list_topics)

    def describe_topic(self, name: str) -> _admin.TopicDescription:
        """One topic with its offsets; see `consumers.Admin.describe_topic`."""
        return self._loop.run(self._async.describe_topic, name)

    def describe_cluster(self) -> _admin.ClusterDescription:
        """Brokers, controller and partitions; see `consumers.Admin.describe_cluster`."""
        return self._loop.run(self._async.describe_cluster)

    def elect_preferred_leaders(
        self,
        topics: Iterable[str] | None = None,
        *,
        wait: bool = False,
        timeout_ms: float | None = None,
        poll_interval_ms: float | None = None,
        timeout_s: float | None = None,
        poll_s: float | None = None,
    ) -> _admin.LeaderElection:
        """Move leaderships back to their preferred replicas (see
        `consumers.Admin.elect_preferred_leaders`); with `wait`, until balanced or
        `timeout_ms`: check `balanced`."""
        return self._loop.run(
            lambda: self._async.elect_preferred_leaders(
                topics,
                wait=wait,
                timeout_ms=timeout_ms,
                poll_interval_ms=poll_interval_ms,
                timeout_s=timeout_s,
                poll_s=poll_s,
            )
        )

    def plan_rebalance(
        self,
        *,
        exclude: Iterable[int] = (),
        timeout_ms: float | None = None,
        timeout_s: float | None = None,
    ) -> RebalanceResult:
        """See `consumers.Admin.plan_rebalance`."""
        return self._loop.run(
            lambda: self._async.plan_rebalance(
                exclude=exclude, timeout_ms=timeout_ms, timeout_s=timeout_s
            )
        )

    def rebalance(
        self,
        *,
        exclude: Iterable[int] = (),
        throttle_bytes_per_s: int | None = None,
        timeout_ms: float | None = None,
        timeout_s: float | None = None,
    ) -> RebalanceResult:
        """See `consumers.Admin.rebalance`."""
        return self._loop.run(
            lambda: self._async.rebalance(
                exclude=exclude,
                throttle_bytes_per_s=throttle_bytes_per_s,
                timeout_ms=timeout_ms,
                timeout_s=timeout_s,
            )
        )

    def drain_broker(
        self,
        broker_id: int,
        *,
        throttle_bytes_per_s: int | None = None,
        timeout_ms: float | None = None,
        timeout_s: float | None = None,
    ) -> RebalanceResult:
        """See `consumers.Admin.drain_broker`."""
        return self._loop.run(
            lambda: self._async.drain_broker(
                broker_id,
                throttle_bytes_per_s=throttle_bytes_per_s,
                timeout_ms=timeout_ms,
                timeout_s=timeout_s,
            )
        )

    def undrain_broker(
        self, broker_id: int, *, timeout_ms: float | None = None, timeout_s: float | None = None
    ) -> RebalanceResult:
        """See `consumers.Admin.undrain_broker`."""
        return self._loop.run(
            lambda: self._async.undrain_broker(
                broker_id, timeout_ms=timeout_ms, timeout_s=timeout_s
            )
        )

    def cancel_reassignments(
        self,
        *,
        throttle_bytes_per_s: int | None = None,
        timeout_ms: float | None = None,
        timeout_s: float | None = None,
    ) -> RebalanceResult:
        """See `consumers.Admin.cancel_reassignments`."""
        return self._loop.run(
            lambda: self._async.cancel_reassignments(
                throttle_bytes_per_s=throttle_bytes_per_s,
                timeout_ms=timeout_ms,
                timeout_s=timeout_s,
            )
        )

    def describe_reassignments(
        self, *, timeout_ms: float | None = None, timeout_s: float | None = None
    ) -> ReassignmentStatus:
        """See `consumers.Admin.describe_reassignments`."""
        return self._loop.run(
            lambda: self._async.describe_reassignments(timeout_ms=timeout_ms, timeout_s=timeout_s)
        )

    def wait_for_reassignments(
        self,
        *,
        timeout_ms: float | None = None,
        poll_interval_ms: float | None = None,
        on_status: Callable[[ReassignmentStatus], None] | None = None,
        timeout_s: float | None = None,
        poll_s: float | None = None,
    ) -> ReassignmentStatus:
        """See `consumers.Admin.wait_for_reassignments` (`on_status` runs on the client's
        own thread: keep it short)."""
        return self._loop.run(
            lambda: self._async.wait_for_reassignments(
                timeout_ms=timeout_ms,
                poll_interval_ms=poll_interval_ms,
                on_status=on_status,
                timeout_s=timeout_s,
                poll_s=poll_s,
            )
        )

    def list_groups(self) -> list[_admin.GroupListing]:
        """Every consumer group, sorted by id; see `consumers.Admin.list_groups`."""
        return self._loop.run(self._async.list_groups)

    def describe_group(self, group_id: str) -> _admin.GroupDescription:
        """A group's state, members and lag; see `consumers.Admin.describe_group`."""
        return self._loop.run(self._async.describe_group, group_id)

    def group_offsets(self, group_id: str) -> dict[TopicPartition, int]:
        """The group's committed offsets; see `consumers.Admin.group_offsets`."""
        return self._loop.run(self._async.group_offsets, group_id)

    def reset_offsets_plan(
        self, group_id: str, spec: _admin.OffsetResetSpec
    ) -> list[_admin.OffsetReset]:
        """What a reset would commit; see `consumers.Admin.reset_offsets_plan`."""
        return self._loop.run(self._async.reset_offsets_plan, group_id, spec)

    def reset_offsets(self, group_id: str, plan: Sequence[_admin.OffsetReset]) -> None:
        """Commit a reset plan; see `consumers.Admin.reset_offsets`."""
        self._loop.run(self._async.reset_offsets, group_id, plan)

    def list_transactions(self, states: Sequence[str] = OPEN_STATES) -> list[TransactionListing]:
        """Transactional ids in `states`; see `consumers.Admin.list_transactions`."""
        return self._loop.run(self._async.list_transactions, states)

    def describe_transaction(self, transactional_id: str) -> TransactionDetails:
        """One transactional id's state; see `consumers.Admin.describe_transaction`."""
        return self._loop.run(self._async.describe_transaction, transactional_id)

    def abort_transaction(self, transactional_id: str) -> None:
        """Abort the id's open transaction; see `consumers.Admin.abort_transaction`."""
        self._loop.run(self._async.abort_transaction, transactional_id)

    def held_back(self, partitions: Iterable[TopicPartition]) -> list[HeldBack]:
        """Last stable offsets and high watermarks; see `consumers.Admin.held_back`."""
        return self._loop.run(self._async.held_back, list(partitions))

    def delete_group(self, group_id: str) -> None:
        """Delete an empty group; see `consumers.Admin.delete_group`."""
        self._loop.run(self._async.delete_group, group_id)
