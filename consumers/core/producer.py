"""The producer's decisions (pure): routing, sequencing, in-flight limits, retries, epoch
bumps and delivery timeouts. The Trio `consumers.producer.Producer` and the cluster simulator
drive one `ProducerCore` each; they do the I/O (connections, InitProducerId, metadata
refreshes) and pass every answer in, with the time as a number.

Records
-------
`enqueue` routes a record to its partition (explicit, keyed through the pinned partitioner,
or sticky) and appends it to the `Accumulator`; a record whose topic's metadata is not known
yet waits, in order, in an unrouted queue until `advance` routes it or fails it
(UnknownTopicError) past its delivery deadline. A record larger than its topic's
max.message.bytes is refused (MessageTooLargeError). The caller hears of every outcome
through three callbacks: `on_routed(ticket, batch, index)`, `on_unroutable(ticket, size,
error)` and `on_settled(batch)` (acknowledged or failed; exactly once per batch).

Sending
-------
`drain_plan(now)` groups the sendable partitions by leader (an unknown leader asks for
metadata); `pick(tps, now)` takes at most one batch per partition within max_request_bytes
and marks them in flight; `produce_request` builds ONE produce request of them. A batch is
encoded once, when first picked: its base sequence is assigned then by `ProducerSequences`
(broker.wire.producer) and the bytes carry the producer id, epoch and sequence. At most
`max_in_flight` (<= 5, the broker's dedup window) batches per partition are in flight.

Answers (`on_response`, `on_request_error`) go through `ProducerSequences.on_result`:
- ACKED: the batch settles with its base offset;
- RETRY: the same bytes are resent, after backoff, to the partition's current leader
  (metadata asked for after leadership, unknown-topic and connection errors; a NOT_LEADER
  answer naming the new leader ends the backoff). While a partition has batches to retry,
  nothing new is sent to it and retries go one at a time, oldest first, once nothing of the
  partition is in flight: order within a partition is kept;
- FAIL_AND_BUMP_EPOCH: the batch fails; no new sequence is assigned until every batch still
  in flight is resolved, then `identity_request` asks InitProducerId(id, epoch) for the next
  epoch and all partitions restart at sequence 0 (no gap is ever left, KIP-360);
- FATAL (fenced): everything queued fails with ProducerFencedError (`fatal` is set).
A batch still unacknowledged at its delivery deadline fails with its last error; if it was
ever sent its sequence is abandoned, which bumps the epoch after it.

Transactions (`transactional=True`): the shell obtains the producer id and epoch from the
transaction coordinator (`identity_request` never asks) and registers partitions with it: a
partition is sent to only once it is in `registered` (`unregistered()` lists those holding
records). Batches are flagged transactional. The first batch failing for good sets
`txn_error` and fails every record not yet sent (`abort_unsent`): the transaction must
abort. A fenced answer (PRODUCER_FENCED, INVALID_PRODUCER_EPOCH) is fatal. Each transaction
runs under its own epoch (the coordinator hands out the next one when it ends), so every
partition starts again at sequence 0 and `last_sequences()` is what EndTxn reports.

Without idempotence batches carry producer id -1: a retry after a lost answer may write a
batch twice, and a retried batch may land after a later one.

Mutations: `MUTATIONS` is empty in use; tests add a name to break one rule on purpose
(tests/sim/mutations.py CLIENT_MUTATIONS), checked once on the retry path.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

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
from broker.wire.producer import DecisionKind, ProducerSequences, ProducerState
from consumers.core.accumulator import Accumulator, Batch
from consumers.core.metadata import MetadataCache, TopicPartition, out_of_range
from consumers.core.refresh import Backoff, MetadataRefresh, needs_metadata, unled_topics
from consumers.errors import (
    LeadershipError,
    MessageTooLargeError,
    ProducerFencedError,
    RequestTimedOutError,
    SluiceError,
    TransactionAbortedError,
    TransactionalProducerFencedError,
    UnknownTopicError,
    error_for,
)

__all__ = [
    "BATCH_OVERHEAD",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "MUTATIONS",
    "RETRY_AS_NEW_BATCH",
    "PartitionSendState",
    "ProducerCore",
    "Unrouted",
]

T = TypeVar("T")

DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024
"""The broker's default max.message.bytes when the topic's config does not name one."""
BATCH_OVERHEAD = 64
"""Bytes a batch adds to its records (42-byte header, array head), rounded up."""

RETRY_AS_NEW_BATCH = "retry-as-new-batch"
"""Mutation: a batch answered RETRY gives up its sequence and is sent again as a new batch
(re-encoded under the next epoch), so a first copy that was written is written twice."""
MUTATIONS: set[str] = set()
"""Rules broken on purpose by tests; empty in use."""

_FENCED = frozenset({ErrorCode.PRODUCER_FENCED, ErrorCode.INVALID_PRODUCER_EPOCH})
"""Answers that fence a transactional producer: a newer one has its transactional id."""


@dataclass(slots=True)
class Unrouted(Generic[T]):
    """A record waiting for its topic's metadata; `ticket` is the caller's handle."""

    ticket: T
    record: Record
    key: bytes | None
    partition: int | None
    size: int
    deadline: float


class PartitionSendState:
    """Per partition: batches in flight and batches waiting to be retried."""

    __slots__ = ("failed_on", "in_flight", "retry", "retry_at")

    def __init__(self) -> None:
        self.in_flight = 0
        self.retry: list[Batch] = []
        """Batches answered RETRY, oldest (send order) first."""
        self.retry_at = 0.0
        self.failed_on: tuple[int | None, int] = (None, -1)
        """(leader, term) in the metadata when the last retry was decided: a refresh that
        names another one ends the backoff (the retry goes to the new leader at once)."""


class ProducerCore(Generic[T]):
    """Every decision of one producer (see the module docstring)."""

    def __init__(
        self,
        *,
        accumulator: Accumulator,
        metadata: MetadataCache,
        refresh: MetadataRefresh,
        backoff: Backoff,
        idempotent: bool,
        max_in_flight: int,
        max_request_bytes: int,
        on_settled: Callable[[Batch], None],
        on_routed: Callable[[T, Batch, int], None],
        on_unroutable: Callable[[T, int, SluiceError], None],
        transactional: bool = False,
    ) -> None:
        self.acc = accumulator
        self.meta = metadata
        self.refresh = refresh
        self.backoff = backoff
        self.idempotent = idempotent
        self.max_in_flight = max_in_flight
        self.max_request_bytes = max_request_bytes
        self._on_settled = on_settled
        self._on_routed = on_routed
        self._on_unroutable = on_unroutable
        self.partitions: dict[TopicPartition, PartitionSendState] = {}
        self.unrouted: dict[str, deque[Unrouted[T]]] = {}
        self.incomplete: dict[Batch, None] = {}
        """Every routed batch not yet settled, in routing order."""
        self.sequences: ProducerSequences | None = None
        self.identity_busy = False
        """An InitProducerId is out (between `identity_request` and its answer)."""
        self.identity_at = -math.inf
        self._identity_attempts = 0
        self.fatal: SluiceError | None = None
        self.transactional = transactional
        self.registered: set[TopicPartition] = set()
        """Transactional: partitions the coordinator registered in the current transaction."""
        self.txn_error: SluiceError | None = None
        """Transactional: the first failure of the current transaction (it must abort)."""
        self.closing = False
        """Set by the shell once it stops waiting: a batch answered RETRY fails instead."""
        self._order = 0
        self._limits: dict[str, int] = {}
        self._limits_version = -1
        self._rotation = 0

    # -- records -----------------------------------------------------------------------------

    def enqueue(
        self,
        topic: str,
        record: Record,
        key: bytes | None,
        partition: int | None,
        size: int,
        now: float,
        ticket: T,
    ) -> tuple[Batch, int, bool] | None:
        """Route a record: (its batch, its index, whether the sender should look), or None
        when it waits for the topic's metadata. Raises for a bad partition or an oversized
        record."""
        count = self.meta.partition_count(topic)
        if count is not None and topic not in self.unrouted:
            return self._route(topic, count, record, key, partition, size, now)
        if partition is not None and partition < 0:
            raise ValueError("partition must be >= 0")
        waiting = self.unrouted.get(topic)
        if waiting is None:
            waiting = self.unrouted[topic] = deque()
        deadline = now + self.acc.delivery_timeout_s
        waiting.append(Unrouted(ticket, record, key, partition, size, deadline))
        self.refresh.want(topic)
        return None

    def _route(
        self,
        topic: str,
        count: int,
        record: Record,
        key: bytes | None,
        partition: int | None,
        size: int,
        now: float,
    ) -> tuple[Batch, int, bool]:
        if partition is not None and not 0 <= partition < count:
            raise UnknownTopicError(out_of_range(topic, partition, count), retriable=False)
        # _batch_limit's cache, read inline (this runs once per record)
        limit = self._limits.get(topic) if self._limits_version == self.meta.version else None
        if limit is None:
            limit = self._batch_limit(topic)
        if size > limit and size + BATCH_OVERHEAD > (most := self._max_message(topic)):
            raise MessageTooLargeError(
                f"record of ~{size} bytes is above the limit of {most} bytes"
                f" (max.message.bytes of topic {topic!r})"
            )
        tp = (topic, self.acc.choose_partition(topic, count, key, partition))
        batch, index, changed = self.acc.append(tp, record, size, now, limit)
        if index == 0:
            # A batch's first record: from here until it settles, the batch is incomplete
            # (a batch that settled is never appended to again).
            self.incomplete[batch] = None
        return batch, index, changed

    def _max_message(self, topic: str) -> int:
        t = self.meta.topics.get(topic)
        raw = None if t is None else t.config.get("max.message.bytes")
        try:
            return int(raw) if raw is not None else DEFAULT_MAX_MESSAGE_BYTES
        except ValueError:
            return DEFAULT_MAX_MESSAGE_BYTES

    def _batch_limit(self, topic: str) -> int:
        if self._limits_version != self.meta.version:
            self._limits.clear()
            self._limits_version = self.meta.version
        limit = self._limits.get(topic)
        if limit is None:
            limit = max(1, min(self.acc.batch_bytes, self._max_message(topic) - BATCH_OVERHEAD))
            self._limits[topic] = limit
        return limit

    def advance(self, now: float) -> None:
        """Seal lingered batches, route records whose metadata arrived, fail what passed its
        delivery deadline."""
        if self.acc.open:
            self.acc.seal_expired(now)
        if self.unrouted:
            self._route_unrouted(now)
        self._expire(now)

    def _route_unrouted(self, now: float) -> None:
        failed: SluiceError | None = None
        for topic in list(self.unrouted):
            waiting = self.unrouted[topic]
            count = self.meta.partition_count(topic)
            while waiting:
                u = waiting[0]
                if count is None:
                    if u.deadline > now:
                        self.refresh.want(topic)
                        break
                    waiting.popleft()
                    failed = UnknownTopicError(
                        f"topic {topic!r} unknown after the delivery timeout"
                    )
                    self._on_unroutable(u.ticket, u.size, failed)
                    continue
                waiting.popleft()
                try:
                    batch, index, _ = self._route(
                        topic, count, u.record, u.key, u.partition, u.size, now
                    )
                except SluiceError as e:
                    self._on_unroutable(u.ticket, u.size, e)
                    failed = e
                    continue
                self._on_routed(u.ticket, batch, index)
            if not waiting:
                del self.unrouted[topic]
        if failed is not None and self.transactional:
            self.txn_failed(failed, now)

    def _expire(self, now: float) -> None:
        """Fail batches not in flight whose delivery deadline passed."""
        failed: SluiceError | None = None
        for tp, queue in self.acc.ready.items():
            while queue and queue[0].deadline <= now:
                batch = queue.popleft()
                reason = batch.last_error or RequestTimedOutError(
                    f"no batch for {tp[0]}[{tp[1]}] could be sent within the delivery timeout"
                    f" ({self._blocked_reason(tp)})"
                )
                self._fail(batch, reason, now)
                failed = failed or reason
        for ps in self.partitions.values():
            if not ps.retry:
                continue
            keep: list[Batch] = []
            for batch in ps.retry:
                if batch.deadline > now:
                    keep.append(batch)
                    continue
                self._abandon(batch)
                reason = batch.last_error or RequestTimedOutError("delivery timeout passed")
                self._fail(batch, reason, now)
                failed = failed or reason
            ps.retry = keep
        if failed is not None and self.transactional:
            self.txn_failed(failed, now)

    def _blocked_reason(self, tp: TopicPartition) -> str:
        if self.meta.leader_for(tp) is None:
            return "the partition's leader is unknown"
        if self.idempotent and self.sequences is None:
            return "no producer id could be obtained"
        return "the leader was unreachable or busy"

    # -- settling ----------------------------------------------------------------------------

    def _acked(self, batch: Batch, base_offset: int, now: float) -> None:
        self.incomplete.pop(batch, None)
        if batch.complete(base_offset, now):
            self._on_settled(batch)

    def _fail(self, batch: Batch, error: SluiceError, now: float) -> None:
        self.incomplete.pop(batch, None)
        if batch.fail(error, now):
            self._on_settled(batch)

    def _abandon(self, batch: Batch) -> None:
        """Stop tracking the sequence of a batch whose outcome will not be known."""
        if self.sequences is not None and batch.base_sequence >= 0:
            self.sequences.abandon(batch.tp, batch.base_sequence)

    def fail_everything(self, error: SluiceError, now: float) -> None:
        """Fail every record not yet acknowledged (fenced, or closing)."""
        for batch in list(self.incomplete):
            self._fail(batch, error, now)
        for batch in list(self.acc.batches()):
            self._fail(batch, error, now)
        self.acc.open.clear()
        self.acc.ready.clear()
        unrouted, self.unrouted = self.unrouted, {}
        for waiting in unrouted.values():
            for u in waiting:
                self._on_unroutable(u.ticket, u.size, error)
        for ps in self.partitions.values():
            ps.retry.clear()

    def go_fatal(self, error: SluiceError, now: float) -> None:
        self.fatal = error
        self.abort_unsent(error, now)

    # -- transactions ------------------------------------------------------------------------

    def unregistered(self) -> set[TopicPartition]:
        """Partitions holding records of this transaction that are not registered yet."""
        held = set(self.acc.open)
        held.update(tp for tp, queue in self.acc.ready.items() if queue)
        held.difference_update(self.registered)
        return held

    def txn_failed(self, error: SluiceError, now: float) -> None:
        """The current transaction cannot commit: remember why, fail what is not sent."""
        if self.txn_error is None:
            self.txn_error = error
        self.abort_unsent(
            TransactionAbortedError(f"an earlier failure in the transaction: {error}"), now
        )

    def abort_unsent(self, error: SluiceError, now: float) -> None:
        """Fail every record not yet acknowledged; batches waiting for a retry give up their
        sequences (batches on the wire keep theirs until answered)."""
        for ps in self.partitions.values():
            for batch in ps.retry:
                self._abandon(batch)
        self.fail_everything(error, now)

    def new_transaction(self) -> None:
        """A transaction begins (under the epoch the last one's end handed out)."""
        self.registered.clear()
        self.txn_error = None

    def last_sequences(self) -> dict[TopicPartition, int]:
        """Per registered partition, the last sequence written in this transaction (-1:
        none): what EndTxn asks each participant to hold."""
        seq = self.sequences
        if seq is None:
            return {tp: -1 for tp in self.registered}
        return {tp: seq.next_sequence(tp) - 1 for tp in self.registered}

    def on_the_wire(self) -> int:
        """Batches sent and not answered yet (their sequences are unresolved)."""
        return 0 if self.sequences is None else self.sequences.total_in_flight()

    # -- the producer id ---------------------------------------------------------------------

    def identity_request(self, now: float) -> InitProducerIdRequest | None:
        """The InitProducerId to send now, if one is due: a new id before the first batch, or
        the next epoch once a batch failed for good and nothing is in flight."""
        if not self.idempotent or self.transactional or self.fatal is not None:
            return None
        if self.identity_busy:
            return None
        if now < self.identity_at:
            return None
        seq = self.sequences
        if seq is None:
            if not (self.acc.open or any(self.acc.ready.values())):
                return None
            request = InitProducerIdRequest()
        elif seq.state is ProducerState.BUMP_REQUIRED and seq.total_in_flight() == 0:
            request = InitProducerIdRequest(
                producer_id=seq.producer_id, producer_epoch=seq.producer_epoch
            )
        else:
            return None
        self.identity_busy = True
        return request

    def identity_answered(self, response: InitProducerIdResponse) -> None:
        self.identity_busy = False
        self._identity_attempts = 0
        if self.sequences is None:
            self.sequences = ProducerSequences(
                response.producer_id, response.producer_epoch, max_in_flight=self.max_in_flight
            )
        else:
            self.sequences.reset_for_new_epoch(response.producer_epoch, response.producer_id)

    def identity_failed(self, error: SluiceError, now: float) -> None:
        """InitProducerId failed: retried after a backoff, unless the error is final."""
        self.identity_busy = False
        if not error.retriable:
            self.go_fatal(error, now)
            return
        self.identity_at = now + self.backoff.delay(self._identity_attempts)
        self._identity_attempts += 1

    # -- sending -----------------------------------------------------------------------------

    def _pstate(self, tp: TopicPartition) -> PartitionSendState:
        ps = self.partitions.get(tp)
        if ps is None:
            ps = self.partitions[tp] = PartitionSendState()
        return ps

    def _sendable(self, tp: TopicPartition, now: float) -> bool:
        ps = self.partitions.get(tp)
        if ps is not None and ps.retry:
            return ps.in_flight == 0 and now >= ps.retry_at
        if not self.acc.ready.get(tp):
            return False
        in_flight = 0 if ps is None else ps.in_flight
        if in_flight >= self.max_in_flight:
            return False
        if self.transactional and tp not in self.registered:
            return False
        if not self.idempotent:
            return True
        return self.sequences is not None and self.sequences.can_assign(tp)

    def drain_plan(self, now: float) -> dict[int, list[TopicPartition]]:
        """Sendable partitions by leader (each leader's list rotated, so no partition always
        comes last); partitions without a known leader ask for metadata."""
        if self.fatal is not None:
            return {}
        by_leader: dict[int, list[TopicPartition]] = {}
        retrying = [tp for tp, ps in self.partitions.items() if ps.retry]
        for tp in [*self.acc.ready, *(tp for tp in retrying if tp not in self.acc.ready)]:
            if not self._sendable(tp, now):
                continue
            leader = self.meta.leader_for(tp)
            if leader is None:
                self.refresh.want(tp[0])
                continue
            by_leader.setdefault(leader, []).append(tp)
        for leader, tps in by_leader.items():
            self._rotation += 1
            shift = self._rotation % len(tps)
            by_leader[leader] = tps[shift:] + tps[:shift]
        return by_leader

    def pick(self, tps: list[TopicPartition], now: float) -> list[Batch]:
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
                queue = self.acc.ready[tp]
                batch = queue[0]
                estimate = batch.size + batch.header_bytes * len(batch.records) + BATCH_OVERHEAD
                if picked and total + estimate > self.max_request_bytes:
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
        seq = self.sequences
        records = batch.to_encode()
        if self.idempotent:
            assert seq is not None
            batch.base_sequence = seq.assign(batch.tp, len(batch.records))
            batch.data = encode_batch(
                records,
                producer_id=seq.producer_id,
                producer_epoch=seq.producer_epoch,
                base_sequence=batch.base_sequence,
                transactional=self.transactional,
            )
        else:
            batch.data = encode_batch(records)
        batch.order = self._order
        self._order += 1

    @staticmethod
    def produce_request(
        batches: list[Batch], timeout_ms: int, trace_context: str | None = None
    ) -> ProduceRequest:
        """ONE produce request carrying `batches` (at most one per partition)."""
        topics: dict[str, list[ProducePartition]] = {}
        for batch in batches:
            assert batch.data is not None
            topics.setdefault(batch.tp[0], []).append(
                ProducePartition(partition=batch.tp[1], batch=batch.data)
            )
        return ProduceRequest(
            topics=tuple(
                ProduceTopic(name=name, partitions=tuple(parts)) for name, parts in topics.items()
            ),
            timeout_ms=timeout_ms,
            trace_context=trace_context,
        )

    # -- answers -----------------------------------------------------------------------------

    def on_response(self, batches: list[Batch], response: ProduceResponse, now: float) -> None:
        results = {(t.name, p.partition): p for t in response.topics for p in t.partitions}
        for batch in batches:
            r = results.get(batch.tp)
            if r is None:
                self._on_result(
                    batch, ErrorCode.NETWORK_EXCEPTION, "no answer for the partition", now
                )
                continue
            self._on_result(batch, r.error, r.message, now, r.base_offset)
            if r.leader is not None and self.meta.hint(batch.tp, r.leader, r.leader_term):
                self._pstate(batch.tp).retry_at = 0.0  # retry at once, on the new leader

    def on_request_error(self, batches: list[Batch], error: SluiceError, now: float) -> None:
        """The request failed as a whole (connection lost, timed out, refused)."""
        for batch in batches:
            self._on_result(batch, error.code, error.message, now, error=error)

    def _on_result(
        self,
        batch: Batch,
        code: ErrorCode,
        message: str | None,
        now: float,
        base_offset: int = -1,
        *,
        error: SluiceError | None = None,
    ) -> None:
        tp = batch.tp
        ps = self._pstate(tp)
        ps.in_flight -= 1
        seq = self.sequences
        if seq is not None and batch.base_sequence >= 0:
            kind = seq.on_result(tp, batch.base_sequence, code).kind
        elif code is ErrorCode.NONE:
            kind = DecisionKind.ACKED
        else:
            kind = DecisionKind.RETRY if code.retriable else DecisionKind.FAIL_AND_BUMP_EPOCH
        if self.transactional and code in _FENCED:
            kind = DecisionKind.FATAL
        if batch.settled and kind is not DecisionKind.FATAL:
            # Failed already (an abort or close failed it while it was on the wire): only
            # its sequence is resolved.
            if kind is DecisionKind.RETRY:
                self._abandon(batch)
            return
        if kind is DecisionKind.ACKED:
            if base_offset < 0:
                self._fail(batch, error_for(ErrorCode.UNKNOWN_SERVER_ERROR, "no base offset"), now)
            else:
                self._acked(batch, base_offset, now)
            return
        failure = error or error_for(code, message)
        if kind is DecisionKind.RETRY:
            batch.last_error = failure
            if now >= batch.deadline or self.closing:
                self._abandon(batch)
                self._fail(batch, failure, now)
                return
            if RETRY_AS_NEW_BATCH in MUTATIONS:
                self._resend_as_new(batch)
                return
            ps.retry.append(batch)
            ps.retry.sort(key=_send_order)
            ps.retry_at = max(ps.retry_at, now + self.backoff.delay(batch.attempts - 1))
            current = self.meta.partition(tp)
            if current is not None:
                ps.failed_on = (current.leader, current.leader_term)
            if needs_metadata(failure):
                if isinstance(failure, LeadershipError):
                    self.meta.invalidate(tp)
                self.refresh.want(tp[0])
        elif kind is DecisionKind.FAIL_AND_BUMP_EPOCH:
            self._fail(batch, failure, now)
            if self.transactional:
                self.txn_failed(failure, now)
        else:
            who = "" if seq is None else f" {seq.producer_id} (epoch {seq.producer_epoch})"
            cls = TransactionalProducerFencedError if self.transactional else ProducerFencedError
            fenced = cls(f"producer{who} was fenced by a newer epoch: {failure.message}", code=code)
            self._fail(batch, fenced, now)
            self.go_fatal(fenced, now)

    def _resend_as_new(self, batch: Batch) -> None:
        """The RETRY_AS_NEW_BATCH mutation: the batch gives up its sequence and goes back,
        unencoded and in send order, to the head of its partition's queue."""
        self._abandon(batch)
        batch.data = None
        batch.base_sequence = -1
        queue = self.acc.ready.setdefault(batch.tp, deque())
        at = next((i for i, b in enumerate(queue) if b.order < 0 or b.order > batch.order), None)
        queue.insert(len(queue) if at is None else at, batch)

    # -- metadata ----------------------------------------------------------------------------

    def leaders_changed(self) -> None:
        """After a refresh: retries waiting out a backoff go now to a partition whose metadata
        names a leader other than the one they failed on (the election ended)."""
        for tp, ps in self.partitions.items():
            if not ps.retry or ps.retry_at == 0.0:
                continue
            p = self.meta.partition(tp)
            if p is not None and p.leader is not None and (p.leader, p.leader_term) != ps.failed_on:
                ps.retry_at = 0.0

    def stale_topics(self, topics: Iterable[str], unreachable: Callable[[int], bool]) -> set[str]:
        """Topics still unknown, or with a partition whose leader is unknown or unreachable."""
        known: list[TopicPartition] = []
        stale: set[str] = set()
        for topic in topics:
            count = self.meta.partition_count(topic)
            if count is None:
                stale.add(topic)
            else:
                known.extend((topic, p) for p in range(count))
        return stale | unled_topics(self.meta, known, unreachable)

    def has_queued(self, topic: str) -> bool:
        """Whether records of `topic` wait to be routed, sent or retried."""
        if topic in self.unrouted:
            return True
        if any(q for tp, q in self.acc.ready.items() if tp[0] == topic):
            return True
        return any(ps.retry for tp, ps in self.partitions.items() if tp[0] == topic)

    # -- time --------------------------------------------------------------------------------

    def next_deadline(self, now: float) -> float:
        """When the sender must look again without being woken: the next linger, retry
        backoff, delivery deadline or InitProducerId retry still ahead (at most 1 s away).
        Whatever is due but unsendable waits for an event (a metadata refresh, an answer, a
        connection) that wakes the sender."""
        deadline = now + 1.0
        linger = self.acc.next_linger_deadline()
        if linger is not None:
            deadline = min(deadline, linger)
        for queue in self.acc.ready.values():
            if queue:
                deadline = min(deadline, queue[0].deadline)
        for ps in self.partitions.values():
            if ps.retry:
                deadline = min(deadline, ps.retry[0].deadline)
                if ps.retry_at > now:
                    deadline = min(deadline, ps.retry_at)
        if self.identity_at > now:
            deadline = min(deadline, self.identity_at)
        return deadline


def _send_order(batch: Batch) -> int:
    return batch.order
