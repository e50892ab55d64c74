"""TxnLedger: a participant's side of the three-phase commit (pure; applied in log order).

One ledger lives in each participant's state machine: a partition log (broker/core/partition.py)
or a group coordinator (broker/core/groups/coordinator.py). Per producer id it holds at most
one open transaction and the last one it closed:

    begin       prepare (yes)     precommit          commit
    ----> OPEN ---------------> PREPARED --------> PRE_COMMITTED -----> closed, committed
            \\                     /
             +---- abort --------+------------------------------------> closed, aborted

Rules (each is a case the protocol explorer and the simulator check):
- Every command names (producer id, epoch, coordinator term). A command of a lower coordinator
  term than the highest the ledger has seen for the producer is refused
  TRANSACTION_COORDINATOR_FENCED. An epoch below the open or last closed one is refused
  PRODUCER_FENCED: a delayed message of an earlier transaction never acts on a later one.
  A repeat of a command for the last closed epoch is answered as it was (idempotent), except
  BEGIN, which cannot reopen it.
- Data of (pid, epoch) is accepted only while that transaction is OPEN; a transactional batch
  of a transaction this ledger never saw begin is refused INVALID_TXN_STATE (KIP-890's
  verification: no write the coordinator does not know of can hold the LSO).
- PREPARE votes yes iff the transaction is open here and its data ends at the sequence the
  coordinator names; then it is PREPARED and takes no more data. A transaction never begun
  here, or aborted, votes no.
- PRECOMMIT only from PREPARED, COMMIT only from PRE_COMMITTED, ABORT only before it: from
  PRE_COMMITTED the outcome is commit whatever fails, and the ledger's leader may commit on
  its own once the coordinator stays silent past a timeout.
- ABORT of an epoch the ledger never saw begin closes that epoch anyway, so a BEGIN delayed
  behind it is refused.
- A producer with an open transaction is never forgotten; closed ones are, after
  `expire(horizon)` (the owner's producer expiry).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from broker.core.txn.protocol import Phase, TxnCommand
from broker.wire.errors import ErrorCode


class TxnPhase(IntEnum):
    OPEN = 0
    PREPARED = 1
    PRE_COMMITTED = 2


@dataclass(slots=True)
class OpenTxn:
    txn_id: str
    epoch: int
    phase: TxnPhase
    opened_ms: int
    """The coordinator's timestamp on BEGIN."""
    first_offset: int = -1
    """A partition's offset of the transaction's first data batch; -1 while it has none."""
    last_seq: int = -1
    """The last sequence of the transaction's data here; -1 while it has none."""


@dataclass(slots=True)
class ProducerTxns:
    coordinator_term: int = 0
    open: OpenTxn | None = None
    closed_epoch: int = -1
    closed_committed: bool = False
    touched_ms: int = 0


@dataclass(frozen=True, slots=True)
class LedgerResult:
    """What a command did. `closed` is the transaction a COMMIT or ABORT closed (None for a
    repeat or an epoch never begun here); `vote` is PREPARE's answer."""

    error: ErrorCode = ErrorCode.NONE
    message: str | None = None
    vote: bool = False
    closed: OpenTxn | None = None

    @property
    def ok(self) -> bool:
        return self.error == ErrorCode.NONE


_OK = LedgerResult()


def _refuse(code: ErrorCode, message: str) -> LedgerResult:
    return LedgerResult(code, message)


class TxnLedger:
    __slots__ = ("producers",)

    def __init__(self) -> None:
        self.producers: dict[int, ProducerTxns] = {}

    # -- coordinator commands ---------------------------------------------------------------

    def apply(self, cmd: TxnCommand) -> LedgerResult:
        p = self.producers.get(cmd.producer_id)
        if p is None:
            p = ProducerTxns()
        if not cmd.by_participant and cmd.coordinator_term < p.coordinator_term:
            return _refuse(
                ErrorCode.TRANSACTION_COORDINATOR_FENCED,
                f"coordinator term {cmd.coordinator_term} < {p.coordinator_term}",
            )
        result = self._apply(p, cmd)
        if result.ok:
            if not cmd.by_participant:
                p.coordinator_term = max(p.coordinator_term, cmd.coordinator_term)
            p.touched_ms = max(p.touched_ms, cmd.timestamp)
            if p.open is not None or p.closed_epoch >= 0:
                self.producers[cmd.producer_id] = p
        return result

    def _apply(self, p: ProducerTxns, cmd: TxnCommand) -> LedgerResult:
        epoch, phase, o = cmd.epoch, cmd.phase, p.open
        if o is not None:
            if epoch < o.epoch:
                return _refuse(ErrorCode.PRODUCER_FENCED, f"epoch {epoch} < open {o.epoch}")
            if epoch > o.epoch:
                return _refuse(
                    ErrorCode.INVALID_TXN_STATE,
                    f"epoch {epoch} while epoch {o.epoch} is still open here",
                )
            return self._step(p, o, cmd)
        if epoch < p.closed_epoch:
            return _refuse(ErrorCode.PRODUCER_FENCED, f"epoch {epoch} < closed {p.closed_epoch}")
        if epoch == p.closed_epoch:
            return self._repeat(p, phase)
        if phase == Phase.BEGIN:
            p.open = OpenTxn(cmd.txn_id, epoch, TxnPhase.OPEN, cmd.timestamp)
            return _OK
        if phase == Phase.PREPARE:
            return LedgerResult(vote=False, message="the transaction never began here")
        if phase == Phase.ABORT:
            p.closed_epoch, p.closed_committed = epoch, False
            return _OK
        return _refuse(ErrorCode.INVALID_TXN_STATE, f"{phase.name} of a transaction not open")

    @staticmethod
    def _repeat(p: ProducerTxns, phase: Phase) -> LedgerResult:
        committed = p.closed_committed
        if phase == Phase.BEGIN:
            return _refuse(ErrorCode.PRODUCER_FENCED, "the epoch's transaction already ended")
        if phase == Phase.PREPARE:
            return LedgerResult(vote=committed)
        if (phase == Phase.ABORT) == committed:
            outcome = "committed" if committed else "aborted"
            return _refuse(ErrorCode.INVALID_TXN_STATE, f"{phase.name}: it {outcome}")
        return _OK

    @staticmethod
    def _step(p: ProducerTxns, o: OpenTxn, cmd: TxnCommand) -> LedgerResult:
        phase = cmd.phase
        if phase == Phase.BEGIN:
            return _OK
        if phase == Phase.PREPARE:
            if o.phase == TxnPhase.OPEN:
                if o.last_seq != cmd.last_seq:
                    return LedgerResult(
                        vote=False,
                        message=f"holds data to sequence {o.last_seq}, not {cmd.last_seq}",
                    )
                o.phase = TxnPhase.PREPARED
            return LedgerResult(vote=True)
        if phase == Phase.PRECOMMIT:
            if o.phase == TxnPhase.OPEN:
                return _refuse(ErrorCode.INVALID_TXN_STATE, "PRECOMMIT before PREPARE")
            o.phase = TxnPhase.PRE_COMMITTED
            return _OK
        committed = phase == Phase.COMMIT
        if committed != (o.phase == TxnPhase.PRE_COMMITTED):
            why = "not pre-committed" if committed else "pre-committed: it must commit"
            return _refuse(ErrorCode.INVALID_TXN_STATE, f"{phase.name}: {why}")
        p.open = None
        p.closed_epoch, p.closed_committed = o.epoch, committed
        return LedgerResult(closed=o)

    # -- data (partition logs) --------------------------------------------------------------

    def data_problem(self, pid: int, epoch: int, transactional: bool) -> LedgerResult:
        """Whether a data batch of (pid, epoch) may be appended (it is not a duplicate)."""
        p = self.producers.get(pid)
        o = p.open if p is not None else None
        if not transactional:
            if o is not None:
                return _refuse(
                    ErrorCode.INVALID_TXN_STATE,
                    "a non-transactional batch from a producer inside a transaction",
                )
            return _OK
        if o is None:
            if p is not None and epoch <= p.closed_epoch:
                return _refuse(ErrorCode.PRODUCER_FENCED, f"epoch {epoch} ended here")
            return _refuse(
                ErrorCode.INVALID_TXN_STATE,
                "the partition is not registered in the producer's transaction",
            )
        if epoch != o.epoch:
            code = ErrorCode.PRODUCER_FENCED if epoch < o.epoch else ErrorCode.INVALID_TXN_STATE
            return _refuse(code, f"epoch {epoch}, the open transaction's is {o.epoch}")
        if o.phase != TxnPhase.OPEN:
            return _refuse(ErrorCode.INVALID_TXN_STATE, "the transaction is being committed")
        return _OK

    def note_data(self, pid: int, base_offset: int, last_seq: int) -> None:
        """An accepted transactional batch of pid's open transaction."""
        o = self.producers[pid].open
        assert o is not None and o.phase == TxnPhase.OPEN
        if o.first_offset < 0:
            o.first_offset = base_offset
        o.last_seq = last_seq

    # -- reads ------------------------------------------------------------------------------

    def has_open(self, pid: int) -> bool:
        p = self.producers.get(pid)
        return p is not None and p.open is not None

    def open_txns(self) -> Iterator[tuple[int, OpenTxn]]:
        for pid, p in self.producers.items():
            if p.open is not None:
                yield pid, p.open

    def first_unstable(self) -> int:
        """The smallest first offset of an open transaction holding data; -1 if none (the
        last stable offset is then the high watermark)."""
        low = -1
        for p in self.producers.values():
            o = p.open
            if o is not None and o.first_offset >= 0 and (low < 0 or o.first_offset < low):
                low = o.first_offset
        return low

    def has_pre_committed(self) -> bool:
        """Is a transaction PRE_COMMITTED here (a participant leader's timer runs for it)?"""
        return any(o.phase == TxnPhase.PRE_COMMITTED for _, o in self.open_txns())

    def pre_committed(self) -> list[tuple[int, OpenTxn]]:
        return [(pid, o) for pid, o in self.open_txns() if o.phase == TxnPhase.PRE_COMMITTED]

    # -- upkeep -----------------------------------------------------------------------------

    def expire(self, horizon_ms: int) -> None:
        """Forget producers without an open transaction last touched before `horizon_ms`."""
        stale = [
            pid for pid, p in self.producers.items() if p.open is None and p.touched_ms < horizon_ms
        ]
        for pid in stale:
            del self.producers[pid]

    def to_wire(self) -> list[list[object]]:
        out: list[list[object]] = []
        for pid in sorted(self.producers):
            p = self.producers[pid]
            o = p.open
            out.append(
                [
                    pid,
                    p.coordinator_term,
                    p.closed_epoch,
                    p.closed_committed,
                    p.touched_ms,
                    None
                    if o is None
                    else [o.txn_id, o.epoch, int(o.phase), o.opened_ms, o.first_offset, o.last_seq],
                ]
            )
        return out

    @classmethod
    def from_wire(cls, raw: list[Any]) -> TxnLedger:
        """Rebuild from `to_wire` (the owner's own persisted state: trusted)."""
        ledger = cls()
        for pid, term, closed, committed, touched, o in raw:
            p = ProducerTxns(term, None, closed, committed, touched)
            if o is not None:
                txn, epoch, phase, opened, first, last = o
                p.open = OpenTxn(txn, epoch, TxnPhase(phase), opened, first, last)
            ledger.producers[pid] = p
        return ledger
