"""The transaction methods of the Producer (`ProducerTransactions`, a mixin of
`consumers.producer.Producer`).

With a `transactional_id`, records are sent only inside `async with producer.transaction():`
(commit on exit, abort on an exception), or between `begin_transaction()` and
`commit_transaction()`/`abort_transaction()`; `send_offsets_to_transaction` commits a
consumer group's offsets as part of the transaction. The `TransactionSession`
(consumers/transaction.py) owns the conversation with the coordinator; these methods check
the producer's state and hand each step to it.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import trio

from consumers.core.producer import ProducerCore
from consumers.delivery import Delivery
from consumers.errors import ClientClosedError, InvalidTxnStateError, SluiceError
from consumers.transaction import GroupMetadata, TransactionSession

__all__ = ["ProducerTransactions"]

logger = logging.getLogger("consumers.producer")
"""Where a failed abort is logged (the Producer's logger)."""


class ProducerTransactions(ABC):
    """The transaction methods of the `Producer`, and what they use of it (declared here,
    set or implemented by the Producer)."""

    transactional_id: str | None
    delivery_timeout_s: float
    _open: bool
    _first_failure: SluiceError | None
    _core: ProducerCore[Delivery]
    _txn: TransactionSession | None

    @abstractmethod
    def _check_open(self) -> None:
        """Raise unless the producer is open and not fenced."""

    @abstractmethod
    async def flush(self) -> None:
        """Send every queued record now and wait until each is acknowledged or failed;
        raises the first failure since the previous flush."""

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
        """The transaction session (InvalidTxnStateError without a `transactional_id`)."""
        if self._txn is None:
            raise InvalidTxnStateError(
                "transactions need a transactional producer: Producer(transactional_id=...)"
            )
        return self._txn

    def _op_bound(self) -> float:
        """How long an abort may take at most: the answers on the wire, then EndTxn."""
        return 2 * self.delivery_timeout_s + 1

    async def _abort_open_transaction(self) -> None:
        """Abort the transaction left open, if any, when the producer closes (bounded by the
        delivery timeout; nothing to do once the producer is fenced)."""
        txn = self._txn
        if txn is not None and txn.open and not txn.ending and self._core.fatal is None:
            with trio.move_on_after(self.delivery_timeout_s + 1):
                await txn.abort()
