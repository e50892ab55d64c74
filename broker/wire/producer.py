"""Idempotent-producer sequencing, pure: the client library and the simulator drive it.

A producer with id P and epoch E numbers the records it sends to each partition 0, 1, 2, ...
(int32, wrapping from 2**31 - 1 to 0). A batch carries its first sequence; the partition
state machine accepts a batch only if it continues the partition's sequence for (P, E),
answers a retry of one of the last 5 batches as a duplicate, and rejects a gap with
OUT_OF_ORDER_SEQUENCE_NUMBER. So a retried batch must keep its sequence, and a sequence range
the broker never wrote must never be skipped: after a batch fails for good the producer gets
a new epoch and starts every partition again at 0 (Kafka's KIP-360 lesson).

State machine
-------------
`ProducerSequences` is in one of three states:

    ACTIVE          assign() hands out sequences
    BUMP_REQUIRED   some batch failed for good; no new sequences until reset_for_new_epoch()
    FENCED          a newer epoch of this producer exists; terminal

Per partition it keeps the next sequence and the batches in flight, oldest first, as
(base_sequence, record_count). At most `max_in_flight` (default 5, the broker's dedup window)
batches are in flight per partition.

`on_result(tp, base_sequence, error)` removes or keeps the batch and returns a Decision:

    error                                       decision              batch     state
    NONE, DUPLICATE_SEQUENCE_NUMBER             ACKED                 removed   unchanged
    INVALID_PRODUCER_EPOCH                      FATAL                 removed   FENCED
    OUT_OF_ORDER_SEQUENCE_NUMBER or
      UNKNOWN_PRODUCER_ID, and an older
      batch of the partition in flight          RETRY                 kept      unchanged
    OUT_OF_ORDER_SEQUENCE_NUMBER or
      UNKNOWN_PRODUCER_ID (oldest)              FAIL_AND_BUMP_EPOCH   removed   BUMP_REQUIRED
    any other retriable code                    RETRY                 kept      unchanged
    any other non-retriable code                FAIL_AND_BUMP_EPOCH   removed   BUMP_REQUIRED

and in FENCED every result is FATAL. An out-of-order answer to a batch behind an older one in
flight means the older one has not been written yet (it was refused or is being retried), so
the later batch is resent after it, as Kafka does; only the oldest batch's gap is final.

RETRY means: send the same bytes (same epoch and base_sequence) again. In BUMP_REQUIRED the
batches still in flight are resolved under the old epoch (their retries are still valid) or
given up with `abandon(tp, base_sequence)` when the client stops waiting (their outcome is
unknown). `reset_for_new_epoch(epoch)` requires that nothing is in flight: a batch of the old
epoch whose answer was not seen could otherwise be written twice. It sets every partition's
next sequence to 0 and returns to ACTIVE; the client resends the records of failed batches, if
it chooses to, as new batches.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import Enum

from broker.wire.errors import ErrorCode

__all__ = [
    "DEFAULT_MAX_IN_FLIGHT",
    "SEQUENCE_MODULUS",
    "Decision",
    "DecisionKind",
    "ProducerSequences",
    "ProducerState",
    "ProducerStateError",
    "TopicPartition",
]

SEQUENCE_MODULUS = 1 << 31
DEFAULT_MAX_IN_FLIGHT = 5
EPOCH_MAX = (1 << 15) - 1

TopicPartition = tuple[str, int]
"""(topic, partition)."""


class ProducerState(Enum):
    ACTIVE = "active"
    BUMP_REQUIRED = "bump_required"
    FENCED = "fenced"


class DecisionKind(Enum):
    ACKED = "acked"
    """Written (or already written: a duplicate). Report success."""
    RETRY = "retry"
    """Resend the same batch with the same epoch and sequence."""
    FAIL_AND_BUMP_EPOCH = "fail_and_bump_epoch"
    """The batch failed for good; fail its records, obtain a new epoch (InitProducerId with
    the current id and epoch), then reset_for_new_epoch()."""
    FATAL = "fatal"
    """The producer was fenced by a newer instance; close it."""


@dataclass(frozen=True, slots=True)
class Decision:
    kind: DecisionKind
    error: ErrorCode
    """The error the broker answered (NONE for a plain success)."""


class ProducerStateError(Exception):
    """The caller misused ProducerSequences (a local bug, never a broker answer)."""

    def __init__(self, message: str, state: ProducerState) -> None:
        super().__init__(message)
        self.state = state


@dataclass(slots=True)
class _PartitionSequence:
    next_sequence: int = 0
    in_flight: deque[tuple[int, int]] | None = None

    def batches(self) -> deque[tuple[int, int]]:
        if self.in_flight is None:
            self.in_flight = deque()
        return self.in_flight


_FINAL_GAP = frozenset({ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER, ErrorCode.UNKNOWN_PRODUCER_ID})


class ProducerSequences:
    """Sequence numbers and in-flight batches of one idempotent producer (one id + epoch)."""

    __slots__ = ("_max_in_flight", "_partitions", "_state", "producer_epoch", "producer_id")

    def __init__(
        self, producer_id: int, producer_epoch: int, *, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    ) -> None:
        _check_identity(producer_id, producer_epoch)
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.producer_id = producer_id
        self.producer_epoch = producer_epoch
        self._max_in_flight = max_in_flight
        self._state = ProducerState.ACTIVE
        self._partitions: dict[TopicPartition, _PartitionSequence] = {}

    @property
    def state(self) -> ProducerState:
        return self._state

    def next_sequence(self, tp: TopicPartition) -> int:
        entry = self._partitions.get(tp)
        return 0 if entry is None else entry.next_sequence

    def in_flight(self, tp: TopicPartition) -> tuple[tuple[int, int], ...]:
        """(base_sequence, record_count) of the batches in flight to `tp`, oldest first."""
        entry = self._partitions.get(tp)
        return () if entry is None or not entry.in_flight else tuple(entry.in_flight)

    def total_in_flight(self) -> int:
        return sum(len(e.in_flight or ()) for e in self._partitions.values())

    def can_assign(self, tp: TopicPartition) -> bool:
        """True when assign(tp, ...) would succeed now."""
        if self._state is not ProducerState.ACTIVE:
            return False
        entry = self._partitions.get(tp)
        return entry is None or len(entry.in_flight or ()) < self._max_in_flight

    def assign(self, tp: TopicPartition, record_count: int) -> int:
        """The base sequence for a new batch of `record_count` records to `tp`; the batch is
        in flight until on_result() acknowledges or fails it, or abandon()."""
        if self._state is not ProducerState.ACTIVE:
            raise ProducerStateError(
                f"cannot assign sequences while {self._state.value}", self._state
            )
        if not 1 <= record_count < SEQUENCE_MODULUS:
            raise ValueError(f"record_count must be in [1, 2**31), got {record_count}")
        entry = self._partitions.get(tp)
        if entry is None:
            entry = self._partitions[tp] = _PartitionSequence()
        batches = entry.batches()
        if len(batches) >= self._max_in_flight:
            raise ProducerStateError(
                f"{len(batches)} batches already in flight to {tp!r}", self._state
            )
        base = entry.next_sequence
        entry.next_sequence = (base + record_count) % SEQUENCE_MODULUS
        batches.append((base, record_count))
        return base

    def on_result(self, tp: TopicPartition, base_sequence: int, error: ErrorCode) -> Decision:
        """Record the broker's answer for the in-flight batch starting at `base_sequence`."""
        batches, position = self._find(tp, base_sequence)
        if self._state is ProducerState.FENCED:
            del batches[position]
            return Decision(DecisionKind.FATAL, error)
        if error is ErrorCode.NONE or error is ErrorCode.DUPLICATE_SEQUENCE_NUMBER:
            del batches[position]
            return Decision(DecisionKind.ACKED, error)
        if error is ErrorCode.INVALID_PRODUCER_EPOCH:
            del batches[position]
            self._state = ProducerState.FENCED
            return Decision(DecisionKind.FATAL, error)
        if error in _FINAL_GAP and position > 0:
            # An older batch of this partition is still in flight: once it lands (or is
            # retried) this one fits. A new producer's first batch refused, say by a leader
            # change, makes its successors look like an unknown producer's: the same case.
            return Decision(DecisionKind.RETRY, error)
        if error.retriable and error not in _FINAL_GAP:
            return Decision(DecisionKind.RETRY, error)
        del batches[position]
        self._state = ProducerState.BUMP_REQUIRED
        return Decision(DecisionKind.FAIL_AND_BUMP_EPOCH, error)

    def abandon(self, tp: TopicPartition, base_sequence: int) -> None:
        """Stop tracking an in-flight batch whose outcome will not be known (the client gave
        up waiting). It may or may not have been written, so a new epoch is required."""
        batches, position = self._find(tp, base_sequence)
        del batches[position]
        if self._state is ProducerState.ACTIVE:
            self._state = ProducerState.BUMP_REQUIRED

    def reset_for_new_epoch(self, producer_epoch: int, producer_id: int | None = None) -> None:
        """Adopt the epoch (and, when the epoch space ran out, the id) InitProducerId returned:
        every partition starts again at sequence 0."""
        if self._state is ProducerState.FENCED:
            raise ProducerStateError("a fenced producer cannot continue", self._state)
        in_flight = self.total_in_flight()
        if in_flight:
            raise ProducerStateError(
                f"{in_flight} batches of the old epoch are still in flight", self._state
            )
        new_id = self.producer_id if producer_id is None else producer_id
        _check_identity(new_id, producer_epoch)
        if new_id == self.producer_id and producer_epoch <= self.producer_epoch:
            raise ValueError(
                f"the new epoch {producer_epoch} must exceed the current {self.producer_epoch}"
            )
        self.producer_id = new_id
        self.producer_epoch = producer_epoch
        self._partitions.clear()
        self._state = ProducerState.ACTIVE

    def _find(self, tp: TopicPartition, base_sequence: int) -> tuple[deque[tuple[int, int]], int]:
        entry = self._partitions.get(tp)
        if entry is not None and entry.in_flight:
            for position, (base, _count) in enumerate(entry.in_flight):
                if base == base_sequence:
                    return entry.in_flight, position
        raise ProducerStateError(
            f"no batch with base_sequence {base_sequence} in flight to {tp!r}", self._state
        )


def _check_identity(producer_id: int, producer_epoch: int) -> None:
    if producer_id < 0 or not 0 <= producer_epoch <= EPOCH_MAX:
        raise ValueError(
            f"need producer_id >= 0 and producer_epoch in [0, {EPOCH_MAX}]: "
            f"{producer_id}, {producer_epoch}"
        )
