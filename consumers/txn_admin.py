"""What the Admin reports about transactions: open transactions, one transactional id's
state and participants, and the last stable offsets an open transaction holds back
(`TransactionAdmin`, a mixin of `consumers.admin.Admin`, and its result types)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from broker.wire.errors import ErrorCode
from broker.wire.group_messages import CoordinatorType
from broker.wire.messages import LATEST_TIMESTAMP
from broker.wire.txn_messages import (
    GROUP_PARTICIPANT,
    AbortTransactionRequest,
    DescribeTransactionsRequest,
    DescribeTransactionsResponse,
    ListedTransaction,
    ListTransactionsRequest,
    ListTransactionsResponse,
    TransactionDescription,
)
from consumers.admin_base import AdminBase, group_error
from consumers.cluster import TopicPartition
from consumers.errors import UnknownServerError

__all__ = [
    "OPEN_STATES",
    "HeldBack",
    "TransactionAdmin",
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
        """Whether this participant is a consumer group's offsets (not a partition)."""
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


class TransactionAdmin(AdminBase):
    """The transaction calls of the `Admin`: list, describe and abort transactions, and the
    last stable offsets they hold back."""

    async def list_transactions(
        self, states: Sequence[str] = OPEN_STATES
    ) -> list[TransactionListing]:
        """Transactional ids in one of `states` (default: every open transaction), sorted:
        LIST_TRANSACTIONS asked of every broker (each names the ids it coordinates)."""
        answers = await self._ask_every_broker(
            ListTransactionsRequest(states=tuple(states)), "transactions"
        )
        merged: dict[str, TransactionListing] = {}
        for broker in sorted(answers):
            answer = answers[broker]
            assert isinstance(answer, ListTransactionsResponse)
            for t in answer.transactions:
                merged.setdefault(t.transactional_id, listing(t, broker))
        return [merged[t] for t in sorted(merged)]

    async def describe_transaction(self, transactional_id: str) -> TransactionDetails:
        """One transactional id's state at its coordinator (TransactionalIdNotFoundError)."""
        link = self._link(transactional_id, CoordinatorType.TRANSACTION)

        async def attempt() -> TransactionDetails:
            response = await link.request(
                DescribeTransactionsRequest(transactional_ids=(transactional_id,))
            )
            assert isinstance(response, DescribeTransactionsResponse)
            for d in response.transactions:
                if d.transactional_id != transactional_id:
                    continue
                if d.error is not ErrorCode.NONE:
                    raise group_error(link, d.error, d.message)
                return details(d)
            raise UnknownServerError(f"the coordinator did not describe {transactional_id!r}")

        return await self.cluster.retry_until(self._deadline(None), attempt)

    async def abort_transaction(self, transactional_id: str) -> None:
        """An operator's abort of the id's open transaction: nothing of it becomes visible,
        and its producer is fenced (it must be created again)."""
        link = self._link(transactional_id, CoordinatorType.TRANSACTION)
        request = AbortTransactionRequest(transactional_id=transactional_id)
        await self.cluster.retry_until(self._deadline(None), lambda: link.request(request))

    async def held_back(self, partitions: Iterable[TopicPartition]) -> list[HeldBack]:
        """Each partition's last stable offset and high watermark (None where its leader
        did not answer), sorted."""
        wanted = sorted(set(partitions))
        topics = tuple(sorted({t for t, _ in wanted}))
        lso: dict[TopicPartition, int] = {}
        hw: dict[TopicPartition, int] = {}
        if topics:
            response = await self._metadata(topics)
            for info in response.topics:
                if info.error is not ErrorCode.NONE:
                    continue
                for p, o in (await self._offsets(info, LATEST_TIMESTAMP, committed=True)).items():
                    lso[(info.name, p)] = o
                for p, o in (await self._offsets(info, LATEST_TIMESTAMP)).items():
                    hw[(info.name, p)] = o
        return [HeldBack(t, p, lso.get((t, p)), hw.get((t, p))) for t, p in wanted]
