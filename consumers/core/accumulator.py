"""The producer's record accumulator: records -> per-partition batches (pure).

Theory of operation
-------------------
Records are appended to the OPEN batch of their partition. A batch is SEALED (frozen, moved
to its partition's ready queue, oldest first) when the next record would push its estimated
encoded size past the batch limit (the record starts a new batch), when it reaches the limit,
when it has lingered `linger_s` since its first record, or on `seal_all` (flush). A sealed
batch is encoded once, when the sender assigns its sequence; a retry resends those bytes.
Until it is encoded, the newest sealed batch of a partition still takes records (when they
fit, within half its delivery timeout) before a new batch is opened, as Kafka's accumulator
does: a backlog behind an unavailable leader becomes a few full batches.

Partition choice (`choose_partition`): an explicit partition is honoured; a keyed record goes
to `partitioner(key, n)` (the pinned hash of broker.wire.partitioner); a keyless record goes
to the topic's sticky partition, which is chosen at random (avoiding the previous one when
n > 1) and changes each time a batch of that partition is sealed (Kafka's KIP-480). The
draws come from the injected `rng` (the Trio shell passes a `random.Random()`, the simulator
its seeded one).

Size estimate: an upper bound of the record's CBOR encoding (heads sized exactly, the
timestamp delta assumed to need 5 bytes), so a sealed batch's encoded records array never
exceeds the limit by more than one record's bound: a record larger than the limit goes alone.

Time is passed in (`now`, seconds on the caller's clock), so tests can drive it without a
clock.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

from broker.wire.batch import Record, new_record
from consumers.core.metadata import TopicPartition
from consumers.errors import SluiceError

__all__ = ["Accumulator", "Batch", "RandomSource", "cbor_head_size", "record_size"]


class RandomSource(Protocol):
    """The randomness the accumulator draws (`random.Random` has it)."""

    def randrange(self, stop: int, /) -> int: ...


def cbor_head_size(n: int) -> int:
    """Bytes of a CBOR head whose argument is n >= 0."""
    if n < 24:
        return 1
    if n < 0x100:
        return 2
    if n < 0x10000:
        return 3
    if n < 0x1_0000_0000:
        return 5
    return 9


def record_size(
    key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]]
) -> int:
    """Upper bound of one record's CBOR item [delta, key, value, headers]: exact but for
    the timestamp delta, assumed to take 5 bytes (< 2**32 ms). Called once per record sent,
    so the common sizes (fields under 256 bytes, no headers) are worked out inline."""
    size = 1 + 5  # the item's array head; the timestamp delta (< 2**32 ms)
    if key is None:
        size += 1
    else:
        n = len(key)
        size += n + (2 if 24 <= n < 0x100 else 1 if n < 24 else cbor_head_size(n))
    if value is None:
        size += 1
    else:
        n = len(value)
        size += n + (2 if 24 <= n < 0x100 else 1 if n < 24 else cbor_head_size(n))
    if not headers:
        return size + 1
    size += cbor_head_size(len(headers))
    for name, hvalue in headers:
        n = len(name.encode("utf-8"))
        size += 1 + cbor_head_size(n) + n + cbor_head_size(len(hvalue)) + len(hvalue)
    return size


class Batch:
    """Records for one partition, sealed once, sent (and resent) as one encoded batch.

    Settled exactly once (`settled_at` set): acknowledged (`base_offset` >= 0) or failed
    (`error` set); `complete` and `fail` say whether they settled it.
    """

    __slots__ = (
        "attempts",
        "base_offset",
        "base_sequence",
        "created",
        "data",
        "deadline",
        "error",
        "header",
        "header_bytes",
        "last_error",
        "order",
        "records",
        "settled_at",
        "size",
        "span",
        "tp",
    )

    def __init__(self, tp: TopicPartition, created: float, deadline: float) -> None:
        self.tp = tp
        self.records: list[Record] = []
        self.size = 0
        """Estimated bytes of the records (buffer accounting uses it too)."""
        self.created = created
        self.deadline = deadline
        """Time after which the batch fails (delivery timeout)."""
        self.data: bytes | None = None
        """The encoded batch, set once when its sequence is assigned."""
        self.base_sequence = -1
        self.order = -1
        """Position in the producer's send order, set at the first send (orders retries)."""
        self.attempts = 0
        self.last_error: SluiceError | None = None
        self.base_offset = -1
        self.error: SluiceError | None = None
        self.settled_at: float | None = None
        """Time at which the outcome arrived (None while pending)."""
        self.span: object = None
        """The shell's tracing span of this batch (opaque here; None when untraced)."""
        self.header: tuple[str, bytes] | None = None
        """A header every record gets when encoded (the span's traceparent), or None."""
        self.header_bytes = 0
        """Bytes `header` adds to each record: counted against the batch limit, never in
        `size` (the buffer accounts records as the caller sized them)."""

    def __repr__(self) -> str:
        return (
            f"Batch({self.tp}, records={len(self.records)}, seq={self.base_sequence}, "
            f"attempts={self.attempts})"
        )

    def to_encode(self) -> list[Record]:
        """The records as they are encoded: each with `header` added when there is one,
        unless the record already has a header of that name (the application's own)."""
        if self.header is None:
            return self.records
        name = self.header[0]
        header = (self.header,)
        return [
            r
            if any(h[0] == name for h in r.headers)
            else new_record(r.key, r.value, r.headers + header, r.timestamp)
            for r in self.records
        ]

    @property
    def settled(self) -> bool:
        return self.settled_at is not None

    def complete(self, base_offset: int, now: float) -> bool:
        if self.settled_at is not None:
            return False
        self.base_offset = base_offset
        self.settled_at = now
        return True

    def fail(self, error: SluiceError, now: float) -> bool:
        if self.settled_at is not None:
            return False
        self.error = error
        self.settled_at = now
        return True


class Accumulator:
    """Open and sealed batches per partition (see the module docstring)."""

    def __init__(
        self,
        *,
        batch_bytes: int,
        linger_s: float,
        delivery_timeout_s: float,
        partitioner: Callable[[bytes, int], int],
        rng: RandomSource,
    ) -> None:
        if batch_bytes < 1:
            raise ValueError("batch_bytes must be >= 1")
        if linger_s < 0:
            raise ValueError("linger must be >= 0")
        self.batch_bytes = batch_bytes
        self.linger_s = linger_s
        self.delivery_timeout_s = delivery_timeout_s
        self.partitioner = partitioner
        self._rng = rng
        self.open: dict[TopicPartition, Batch] = {}
        """Open batches, oldest first (dict order = creation order)."""
        self.ready: dict[TopicPartition, deque[Batch]] = {}
        self._sticky: dict[str, int] = {}
        self._last_sticky: dict[str, int] = {}
        self.sealed_count = 0
        self.on_open: Callable[[Batch], None] | None = None
        """Called with each new batch before its first record is added (the shell starts
        the batch's span there and may set `header` and `extra`)."""

    def choose_partition(
        self, topic: str, num_partitions: int, key: bytes | None, partition: int | None
    ) -> int:
        if partition is not None:
            return partition
        if key is not None:
            return self.partitioner(key, num_partitions)
        sticky = self._sticky.get(topic)
        if sticky is None or sticky >= num_partitions:
            previous = self._last_sticky.get(topic)
            if num_partitions > 1 and previous is not None and previous < num_partitions:
                sticky = self._rng.randrange(num_partitions - 1)
                if sticky >= previous:
                    sticky += 1
            else:
                sticky = self._rng.randrange(num_partitions)
            self._sticky[topic] = sticky
        return sticky

    def append(
        self, tp: TopicPartition, record: Record, size: int, now: float, limit: int | None = None
    ) -> tuple[Batch, int, bool]:
        """Add a record; (its batch, its index in the batch, whether a batch was opened or
        sealed — the sender should look)."""
        limit = self.batch_bytes if limit is None else limit
        batch = self.open.get(tp)
        changed = False
        if batch is not None and (
            batch.size + size + batch.header_bytes * (len(batch.records) + 1) > limit
        ):  # _bytes(batch) + size + header_bytes, inline: this runs once per record
            self._seal(batch)
            batch = None
        if batch is None:
            batch = self._unsent_tail(tp, size, limit, now)
        if batch is None:
            batch = Batch(tp, now, now + self.delivery_timeout_s)
            self.open[tp] = batch
            changed = True
            if self.on_open is not None:
                self.on_open(batch)
                if batch.header_bytes and size + batch.header_bytes > limit:
                    # A record alone at the limit: its header would push the batch past it
                    # (and past max.message.bytes), so this batch goes without one.
                    batch.header, batch.header_bytes = None, 0
        records = batch.records
        index = len(records)
        records.append(record)
        batch.size += size
        if batch.size + batch.header_bytes * (index + 1) >= limit and self.open.get(tp) is batch:
            self._seal(batch)
            changed = True
        return batch, index, changed

    def _unsent_tail(self, tp: TopicPartition, size: int, limit: int, now: float) -> Batch | None:
        """The newest sealed batch of `tp` if it was never sent (not yet encoded), has room
        for `size` more bytes and used at most half its delivery timeout: while a partition
        cannot be sent to (its leader is being elected), its backlog grows into full batches
        rather than a long queue of lingered small ones that would drain one round trip
        each."""
        queue = self.ready.get(tp)
        if not queue:
            return None
        tail = queue[-1]
        if tail.data is not None or _bytes(tail) + size + tail.header_bytes > limit:
            return None
        if now - tail.created > self.delivery_timeout_s / 2:
            return None
        return tail

    def _seal(self, batch: Batch) -> None:
        tp = batch.tp
        del self.open[tp]
        queue = self.ready.get(tp)
        if queue is None:
            queue = self.ready[tp] = deque()
        queue.append(batch)
        self.sealed_count += 1
        topic, partition = tp
        if self._sticky.get(topic) == partition:
            del self._sticky[topic]
            self._last_sticky[topic] = partition

    def seal(self, batch: Batch) -> bool:
        """Seal `batch` now if it is still open; whether it was."""
        if self.open.get(batch.tp) is not batch:
            return False
        self._seal(batch)
        return True

    def seal_expired(self, now: float) -> int:
        """Seal the batches that lingered long enough; how many were sealed."""
        sealed = 0
        linger = self.linger_s
        for batch in list(self.open.values()):
            if batch.created + linger > now:
                break  # creation order: the rest are younger
            self._seal(batch)
            sealed += 1
        return sealed

    def seal_all(self) -> None:
        for batch in list(self.open.values()):
            self._seal(batch)

    def next_linger_deadline(self) -> float | None:
        for batch in self.open.values():
            return batch.created + self.linger_s
        return None

    def batches(self) -> Iterator[Batch]:
        """Every open and sealed (not yet sent) batch."""
        yield from self.open.values()
        for queue in self.ready.values():
            yield from queue

    def pending_records(self) -> int:
        return sum(len(b.records) for b in self.batches())


def _bytes(batch: Batch) -> int:
    """Estimated encoded bytes of a batch's records, their added headers included."""
    return batch.size + batch.header_bytes * len(batch.records)
