"""TransactionCoordinator: the state machine of one partition of `__transaction_state`.

It holds every transactional id that hashes to its partition (`coordinator_partition`): the
producer id and epoch, and the state of its current transaction:

    EMPTY --add--> ONGOING --end(commit)--> PREPARING --decide(commit)--> PRE_COMMITTED
                     |                         |                               |
                     +--end(abort), timeout ---+--decide(abort): a no vote,    |
                     |  init (a new producer)  |  a timeout, an operator       |
                     v                         v                               v
                  ABORTING ----------------complete-------------------------> EMPTY (epoch + 1)

Every state change is a command in the coordinator's Raft log, applied on every replica
before anything acts on it: the leader's `TxnDriver` (driver.py) only *sends* what the
durable state says (BEGIN to the participants of an ONGOING transaction, PREPARE in
PREPARING, PRECOMMIT then COMMIT in PRE_COMMITTED, ABORT in ABORTING) and *proposes* the
next command when the answers are in. So a new leader finds every decision in its log:
PRE_COMMITTED or later commits, PREPARING or ABORTING aborts, ONGOING keeps going until its
client ends it or its timeout aborts it.

Epochs. The epoch moves on at every `complete` (a transaction's markers carry its epoch and
each participant then refuses that epoch), so a delayed message of an earlier transaction
never acts on a later one; `init` moves it on too, fencing the previous producer. The last
completed transaction's epoch and outcome stay, so a client's retry of EndTxn after a
failover gets the same answer (lessons.md: the KAFKA-20357 pattern). A transaction aborted by
its timeout or by an operator fences its producer: it must call InitProducerId again. At
EPOCH_MAX the producer must also re-initialise (`EndAnswer.reinit`), which hands out a new
producer id.

Commands are CBOR maps with an "op"; nothing in apply reads a clock: timestamps ("ts") are
the leader's, stamped when it proposed. Persistence: one keyed record per transactional id.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from broker.core.keyed_records import KeyedRecords
from broker.core.machine import NOTHING_APPLIED, Applied, MachineWrites
from broker.core.raft import Entry, EntryKind
from broker.core.txn.protocol import EPOCH_MAX, Participant
from broker.wire import cbor
from broker.wire.errors import ErrorCode
from broker.wire.partitioner import jump_hash, key_hash64

MAX_PARTICIPANTS = 10_000
"""Partitions and groups one transaction may touch (bounds a record and a commit's fan-out)."""


def coordinator_partition(txn_id: str, partitions: int) -> int:
    """The pinned placement of a transactional id on `__transaction_state`."""
    return jump_hash(key_hash64(txn_id.encode()), partitions)


class TxnState(IntEnum):
    EMPTY = 0
    ONGOING = 1
    PREPARING = 2
    PRE_COMMITTED = 3
    ABORTING = 4


class AbortReason(IntEnum):
    NONE = 0
    REQUESTED = 1
    """The client aborted."""
    REFUSED = 2
    """A participant voted no."""
    TIMED_OUT = 3
    FENCED = 4
    """InitProducerId of a newer producer with the same transactional id."""
    OPERATOR = 5


FENCING = frozenset({AbortReason.TIMED_OUT, AbortReason.OPERATOR})
"""Aborts after which the producer must call InitProducerId again."""


@dataclass(slots=True)
class TxnEntry:
    """One transactional id. `participants` maps each to the last sequence of the data the
    client had acknowledged there (set by end(commit); -1 before, and for groups)."""

    txn_id: str
    producer_id: int
    epoch: int
    timeout_ms: int
    state: TxnState = TxnState.EMPTY
    participants: dict[Participant, int] = field(default_factory=dict)
    started_ms: int = -1
    updated_ms: int = 0
    reason: AbortReason = AbortReason.NONE
    """Why the transaction in ABORTING is aborted."""
    last_epoch: int = -1
    last_committed: bool = False
    last_reason: AbortReason = AbortReason.NONE
    fenced: bool = False
    """The producer must call InitProducerId again."""

    @property
    def committing(self) -> bool:
        return self.state == TxnState.PRE_COMMITTED

    @property
    def open(self) -> bool:
        return self.state != TxnState.EMPTY


@dataclass(frozen=True, slots=True)
class InitAnswer:
    producer_id: int
    epoch: int


@dataclass(frozen=True, slots=True)
class EndAnswer:
    """`done`: the transaction ended (else the proposer waits for its `complete`);
    `producer_id`/`epoch`: what the producer uses next; `reinit`: the epochs ran out, so it
    must call InitProducerId first."""

    done: bool
    committed: bool
    producer_id: int
    epoch: int
    reinit: bool = False


class TransactionCoordinator:
    """Implements broker.core.machine.StateMachine."""

    def __init__(self) -> None:
        self.txns: dict[str, TxnEntry] = {}
        self._applied = 0
        self._records = KeyedRecords()

    # -- StateMachine -----------------------------------------------------------------------

    @property
    def applied_index(self) -> int:
        return self._applied

    def apply_entry(self, entry: Entry) -> Applied:
        self._applied = entry.index
        if entry.kind != EntryKind.NORMAL or not entry.data:
            return NOTHING_APPLIED
        cmd = cbor.decode(entry.data)
        assert isinstance(cmd, dict), "coordinator commands are maps"
        handler = _HANDLERS.get(cmd.get("op"))
        if handler is None:
            return Applied(ErrorCode.INVALID_REQUEST, f"unknown command {cmd.get('op')!r}")
        return handler(self, cmd)

    def take_writes(self) -> MachineWrites:
        return self._records.writes(self._applied, lambda t: cbor.encode(_to_wire(self.txns[t])))

    def snapshot(self) -> bytes:
        return cbor.encode(
            {"applied": self._applied, "txns": [_to_wire(self.txns[t]) for t in sorted(self.txns)]}
        )

    def restore_snapshot(self, data: bytes) -> None:
        snap = cbor.decode(data)
        assert isinstance(snap, dict)
        self.txns = {}
        for raw in snap["txns"]:
            t = _from_wire(raw)
            self.txns[t.txn_id] = t
        self._applied = snap["applied"]
        self._records.reset(self.txns)

    def load(self, state: bytes | None, records: Iterable[tuple[int, bytes]]) -> None:
        if state is None:
            return
        self._applied = self._records.load_state(state)
        for key, value in records:
            t = _from_wire(cbor.decode(value))
            self.txns[t.txn_id] = t
            self._records.bind(t.txn_id, key)

    def leader_tick(self) -> list[bytes]:
        return []  # the TxnDriver keeps the leader's timers

    # -- apply handlers ---------------------------------------------------------------------

    def _touch(self, t: TxnEntry, ts: int) -> None:
        t.updated_ms = max(t.updated_ms, ts)
        self._records.touch(t.txn_id)

    def _init(self, cmd: dict[str, Any]) -> Applied:
        txn_id, ts = cmd["txn"], cmd["ts"]
        t = self.txns.get(txn_id)
        fresh_pid: int = cmd["pid"]
        if t is None:
            if fresh_pid < 0:
                return Applied(ErrorCode.CONCURRENT_TRANSACTIONS, "no producer id yet")
            t = self.txns[txn_id] = TxnEntry(txn_id, fresh_pid, 0, cmd["timeout_ms"])
            self._touch(t, ts)
            return Applied(value=InitAnswer(t.producer_id, t.epoch))
        if t.state in (TxnState.ONGOING, TxnState.PREPARING):
            self._abort(t, AbortReason.FENCED, ts)
        if t.open:
            return Applied(
                ErrorCode.CONCURRENT_TRANSACTIONS,
                f"the previous producer's transaction is {t.state.name.lower()}: retry",
            )
        if t.epoch >= EPOCH_MAX - 1:
            if fresh_pid < 0:
                return Applied(ErrorCode.CONCURRENT_TRANSACTIONS, "epochs ran out: new id")
            t.producer_id, t.epoch, t.last_epoch = fresh_pid, 0, -1
        else:
            t.epoch += 1
        t.timeout_ms = cmd["timeout_ms"]
        t.fenced = False
        self._touch(t, ts)
        return Applied(value=InitAnswer(t.producer_id, t.epoch))

    def _producer_problem(self, t: TxnEntry | None, pid: int, epoch: int) -> Applied | None:
        """Why a request of (pid, epoch) cannot act on `t`'s current transaction."""
        if t is None:
            return Applied(ErrorCode.TRANSACTIONAL_ID_NOT_FOUND, "call InitProducerId first")
        if pid != t.producer_id:
            return Applied(
                ErrorCode.INVALID_PRODUCER_ID_MAPPING,
                f"producer id {pid} is not the transactional id's ({t.producer_id})",
            )
        if epoch == t.epoch and t.state == TxnState.ABORTING and t.reason in FENCING:
            return _fenced_by(t.reason)
        if epoch == t.last_epoch and t.last_reason in FENCING:
            return _fenced_by(t.last_reason)
        if epoch < t.epoch:
            return Applied(ErrorCode.PRODUCER_FENCED, f"epoch {epoch} < {t.epoch}")
        if epoch > t.epoch:
            return Applied(ErrorCode.INVALID_PRODUCER_EPOCH, f"epoch {epoch} > {t.epoch}")
        if t.fenced:
            return Applied(ErrorCode.PRODUCER_FENCED, "the producer must call InitProducerId")
        return None

    def _add(self, cmd: dict[str, Any]) -> Applied:
        t = self.txns.get(cmd["txn"])
        problem = self._producer_problem(t, cmd["pid"], cmd["epoch"])
        if problem is not None:
            return problem
        assert t is not None
        wanted = [Participant(n, p) for n, p in cmd["parts"]]
        if t.state == TxnState.EMPTY:
            t.state, t.started_ms, t.participants = TxnState.ONGOING, cmd["ts"], {}
        elif t.state != TxnState.ONGOING:
            return Applied(ErrorCode.INVALID_TXN_STATE, f"the transaction is {t.state.name}")
        fresh = [p for p in wanted if p not in t.participants]
        if len(t.participants) + len(fresh) > MAX_PARTICIPANTS:
            return Applied(ErrorCode.INVALID_REQUEST, f"more than {MAX_PARTICIPANTS} participants")
        for p in fresh:
            t.participants[p] = -1
        self._touch(t, cmd["ts"])
        return Applied(value=tuple(wanted))

    def _end(self, cmd: dict[str, Any]) -> Applied:
        t = self.txns.get(cmd["txn"])
        commit: bool = cmd["commit"]
        epoch: int = cmd["epoch"]
        if t is not None and epoch == t.last_epoch and cmd["pid"] == t.producer_id:
            return self._repeat_end(t, commit)
        problem = self._producer_problem(t, cmd["pid"], epoch)
        if problem is not None:
            return problem
        assert t is not None
        ts = cmd["ts"]
        if t.state == TxnState.EMPTY:
            self._complete_entry(t, commit, AbortReason.REQUESTED, ts)
            return self._repeat_end(t, commit)
        if t.state == TxnState.ONGOING:
            if commit:
                t.state = TxnState.PREPARING
                for name, part, seq in cmd["seqs"]:
                    p = Participant(name, part)
                    if p in t.participants:
                        t.participants[p] = seq
            else:
                self._abort(t, AbortReason.REQUESTED, ts)
            self._touch(t, ts)
        elif commit != (t.state != TxnState.ABORTING):
            if t.state == TxnState.ABORTING:
                return Applied(ErrorCode.TRANSACTION_ABORTED, _why(t.reason))
            return Applied(ErrorCode.INVALID_TXN_STATE, "the transaction is committing")
        return Applied(value=EndAnswer(False, commit, t.producer_id, t.epoch))

    def _repeat_end(self, t: TxnEntry, commit: bool) -> Applied:
        """The answer for the last completed transaction (a retry after a failover), unless
        a newer producer initialised since: a zombie must not learn it may re-initialise."""
        if t.epoch > t.last_epoch + 1:
            return Applied(ErrorCode.PRODUCER_FENCED, "a newer producer initialised since")
        if commit != t.last_committed:
            if t.last_committed:
                return Applied(ErrorCode.INVALID_TXN_STATE, "the transaction committed")
            if t.last_reason == AbortReason.TIMED_OUT:
                return Applied(ErrorCode.TRANSACTION_TIMED_OUT, _why(t.last_reason))
            return Applied(ErrorCode.TRANSACTION_ABORTED, _why(t.last_reason))
        reinit = t.fenced
        return Applied(value=EndAnswer(True, commit, t.producer_id, t.epoch, reinit))

    def _decide(self, cmd: dict[str, Any]) -> Applied:
        t = self.txns.get(cmd["txn"])
        if t is None or cmd["epoch"] != t.epoch or not t.open:
            return Applied(ErrorCode.INVALID_TXN_STATE, "no such open transaction")
        if cmd["commit"]:
            if t.state != TxnState.PREPARING:
                return Applied(ErrorCode.INVALID_TXN_STATE, f"{t.state.name}: cannot commit")
            t.state = TxnState.PRE_COMMITTED
            self._touch(t, cmd["ts"])
            return NOTHING_APPLIED
        if t.state == TxnState.PRE_COMMITTED:
            return Applied(ErrorCode.INVALID_TXN_STATE, "pre-committed: it commits")
        if t.state == TxnState.ONGOING or t.state == TxnState.PREPARING:
            self._abort(t, AbortReason(cmd["reason"]), cmd["ts"])
        return NOTHING_APPLIED

    def _abort(self, t: TxnEntry, reason: AbortReason, ts: int) -> None:
        t.state, t.reason = TxnState.ABORTING, reason
        if reason in FENCING:
            t.fenced = True
        self._touch(t, ts)

    def _complete(self, cmd: dict[str, Any]) -> Applied:
        t = self.txns.get(cmd["txn"])
        if t is None or cmd["epoch"] != t.epoch:
            return NOTHING_APPLIED
        if t.state == TxnState.PRE_COMMITTED:
            self._complete_entry(t, True, AbortReason.NONE, cmd["ts"])
        elif t.state == TxnState.ABORTING:
            self._complete_entry(t, False, t.reason, cmd["ts"])
        return NOTHING_APPLIED

    def _complete_entry(self, t: TxnEntry, committed: bool, reason: AbortReason, ts: int) -> None:
        t.last_epoch, t.last_committed = t.epoch, committed
        t.last_reason = AbortReason.NONE if committed else reason
        t.state, t.reason, t.participants, t.started_ms = TxnState.EMPTY, AbortReason.NONE, {}, -1
        if t.epoch >= EPOCH_MAX - 1:
            t.fenced = True  # InitProducerId hands out a new producer id
        else:
            t.epoch += 1
        self._touch(t, ts)

    def _expire(self, cmd: dict[str, Any]) -> Applied:
        t = self.txns.get(cmd["txn"])
        if t is not None and not t.open and t.updated_ms == cmd["updated"]:
            del self.txns[t.txn_id]
            self._records.drop(t.txn_id)
        return NOTHING_APPLIED


def _fenced_by(reason: AbortReason) -> Applied:
    if reason == AbortReason.TIMED_OUT:
        return Applied(ErrorCode.TRANSACTION_TIMED_OUT, "aborted by its timeout: re-init")
    return Applied(ErrorCode.TRANSACTION_ABORTED, "aborted by an operator: re-init")


def _why(reason: AbortReason) -> str:
    return {
        AbortReason.REQUESTED: "the producer aborted it",
        AbortReason.REFUSED: "a participant refused it (its data was not all written)",
        AbortReason.TIMED_OUT: "it ran past its timeout",
        AbortReason.FENCED: "a newer producer with the same transactional id fenced it",
        AbortReason.OPERATOR: "an operator aborted it",
    }.get(reason, "it was aborted")


_HANDLERS: dict[object, Callable[[TransactionCoordinator, dict[str, Any]], Applied]] = {
    "init": TransactionCoordinator._init,
    "add": TransactionCoordinator._add,
    "end": TransactionCoordinator._end,
    "decide": TransactionCoordinator._decide,
    "complete": TransactionCoordinator._complete,
    "expire": TransactionCoordinator._expire,
}


# -- commands (what the leader proposes) ----------------------------------------------------


def cmd_init(txn_id: str, fresh_pid: int, timeout_ms: int, ts: int) -> bytes:
    return cbor.encode(
        {"op": "init", "txn": txn_id, "pid": fresh_pid, "timeout_ms": timeout_ms, "ts": ts}
    )


def cmd_add(txn_id: str, pid: int, epoch: int, parts: Iterable[Participant], ts: int) -> bytes:
    return cbor.encode(
        {
            "op": "add",
            "txn": txn_id,
            "pid": pid,
            "epoch": epoch,
            "parts": [p.to_wire() for p in parts],
            "ts": ts,
        }
    )


def cmd_end(
    txn_id: str,
    pid: int,
    epoch: int,
    commit: bool,
    seqs: Iterable[tuple[Participant, int]],
    ts: int,
) -> bytes:
    return cbor.encode(
        {
            "op": "end",
            "txn": txn_id,
            "pid": pid,
            "epoch": epoch,
            "commit": commit,
            "seqs": [[p.name, p.partition, s] for p, s in seqs],
            "ts": ts,
        }
    )


def cmd_decide(txn_id: str, epoch: int, commit: bool, reason: AbortReason, ts: int) -> bytes:
    return cbor.encode(
        {
            "op": "decide",
            "txn": txn_id,
            "epoch": epoch,
            "commit": commit,
            "reason": int(reason),
            "ts": ts,
        }
    )


def cmd_complete(txn_id: str, epoch: int, ts: int) -> bytes:
    return cbor.encode({"op": "complete", "txn": txn_id, "epoch": epoch, "ts": ts})


def cmd_expire(txn_id: str, updated_ms: int) -> bytes:
    return cbor.encode({"op": "expire", "txn": txn_id, "updated": updated_ms})


# -- persistence ----------------------------------------------------------------------------


def _to_wire(t: TxnEntry) -> list[object]:
    return [
        t.txn_id,
        t.producer_id,
        t.epoch,
        t.timeout_ms,
        int(t.state),
        [[p.name, p.partition, s] for p, s in t.participants.items()],
        t.started_ms,
        t.updated_ms,
        int(t.reason),
        t.last_epoch,
        t.last_committed,
        int(t.last_reason),
        t.fenced,
    ]


def _from_wire(raw: Any) -> TxnEntry:
    (txn, pid, epoch, timeout, state, parts, started, updated, reason, last, lc, lr, fenced) = raw
    return TxnEntry(
        txn_id=txn,
        producer_id=pid,
        epoch=epoch,
        timeout_ms=timeout,
        state=TxnState(state),
        participants={Participant(n, p): s for n, p, s in parts},
        started_ms=started,
        updated_ms=updated,
        reason=AbortReason(reason),
        last_epoch=last,
        last_committed=lc,
        last_reason=AbortReason(lr),
        fenced=fenced,
    )
