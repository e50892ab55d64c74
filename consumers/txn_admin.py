"""What the Admin reports about transactions: open transactions, one transactional id's
state and participants, and the last stable offsets an open transaction holds back."""

from __future__ import annotations

from dataclasses import dataclass

from broker.wire.txn_messages import (
    GROUP_PARTICIPANT,
    ListedTransaction,
    TransactionDescription,
)

__all__ = [
    "OPEN_STATES",
    "HeldBack",
    "TransactionDetails",
    "TransactionListing",
    "TxnParticipant",
    "details",
    "listing",
]

OPEN_STATES = ("ongoing", "preparing", "pre_committed", "aborting")
"""States of a transaction that is not finished (it may hold back last stable offsets)."""


@dataclass(frozen=True, slots=True)
class TransactionListing:
    """One transactional id as LIST_TRANSACTIONS names it; `start_ms` -1: none open."""

    transactional_id: str
    producer_id: int
    state: str
    start_ms: int
    participants: int
    coordinator: int
    """The broker that answered (it leads the id's coordinator partition)."""


@dataclass(frozen=True, slots=True)
class TxnParticipant:
    """A partition (`partition` >= 0) or a consumer group's offsets (`is_group`)."""

    name: str
    partition: int
    last_sequence: int

    @property
    def is_group(self) -> bool:
        return self.partition == GROUP_PARTICIPANT


@dataclass(frozen=True, slots=True)
class TransactionDetails:
    """A transactional id's producer, epoch, timeout and its current transaction (state
    "empty": none open)."""

    transactional_id: str
    state: str
    producer_id: int
    producer_epoch: int
    timeout_ms: int
    start_ms: int
    coordinator: int
    participants: tuple[TxnParticipant, ...]


@dataclass(frozen=True, slots=True)
class HeldBack:
    """A partition's last stable offset (what read_committed readers may read up to) and
    high watermark; an open transaction with data there holds the LSO below the HW."""

    topic: str
    partition: int
    last_stable_offset: int | None
    high_watermark: int | None

    @property
    def held(self) -> int | None:
        """Offsets read_committed readers cannot read yet (None: unknown)."""
        if self.last_stable_offset is None or self.high_watermark is None:
            return None
        return self.high_watermark - self.last_stable_offset


def listing(t: ListedTransaction, coordinator: int) -> TransactionListing:
    return TransactionListing(
        t.transactional_id, t.producer_id, t.state, t.start_ms, t.participants, coordinator
    )


def details(d: TransactionDescription) -> TransactionDetails:
    return TransactionDetails(
        transactional_id=d.transactional_id,
        state=d.state,
        producer_id=d.producer_id,
        producer_epoch=d.producer_epoch,
        timeout_ms=d.timeout_ms,
        start_ms=d.start_ms,
        coordinator=d.coordinator,
        participants=tuple(
            TxnParticipant(p.name, p.partition, p.last_sequence) for p in d.participants
        ),
    )
