"""The partition state machine: offsets, the offset index and idempotent-producer state.

Theory of operation
-------------------
The Raft log *is* the partition log. A committed NORMAL entry holds one record batch exactly
as the producer encoded it; the machine reads only the batch's fixed header (record count,
producer id/epoch, base sequence, timestamps) and never decodes the records.

Offsets are assigned at apply, from the record counts, so every replica assigns the same
offsets: a batch accepted at apply takes offsets [next_offset, next_offset + count). No-ops
and configuration entries take none; a rejected batch (a duplicate, a sequence gap, a fenced
epoch) takes none either, and its bytes are never served.

Idempotence is decided here, at apply time, not by the leader when it proposes: a leader that
only checked what it had seen would commit twice a batch that an old leader replicated without
committing and the client then re-sent. Per producer id the machine keeps the epoch, the last
sequence and the last 5 batches (first/last sequence and offsets); a batch is
- a duplicate if its sequence range equals a cached one: no offsets, answered with the first
  copy's offsets;
- accepted if its base sequence follows the last one (or is 0 in a newer epoch, or 0 for a
  producer the machine does not know);
- OUT_OF_ORDER_SEQUENCE_NUMBER if it leaves a gap, INVALID_PRODUCER_EPOCH if its epoch is
  older, UNKNOWN_PRODUCER_ID if the producer is unknown and the sequence is not 0.
Producers idle for `producer_expiry_ms` (measured on the batches' own max timestamps, so every
replica expires the same producers at the same entry) are forgotten.

The offset index (offset_index.py) maps each accepted batch's base offset to its Raft index,
max timestamp and size (sorted arrays, binary search). Fetch walks it from the batch that
contains the requested offset.

Retention and snapshots. Deleting records is compacting the Raft log: the log start offset
moves forward to a batch boundary (`retain_from`) and the index forgets the batches below it,
as Kafka's log start offset does; a fetch below it is OFFSET_OUT_OF_RANGE. Invariant: every
batch the index lists is in this replica's Raft log (so every offset in [log start, high
watermark) can be served). A Raft snapshot of the machine (`snapshot_bytes`) is its state at
its applied index with no batches (a compacted topic's kept records aside): a replica
installing it holds none of the entries it covers, so its log start offset is the
snapshot's next offset and its index starts empty.
Retention by time and size (retention.py) reaches every replica as a command entry,
`retain_command(offset)`, which the partition's leader proposes: applying it moves the log
start to the last batch boundary at or below min(offset, last stable offset, the last
batch's base offset), so no replica deletes the batch appended last nor what an open
transaction still needs, and replicas that applied the same entries have the same log start
(an installer of a snapshot has the snapshot's next offset until it applies the retain
commands after it; the broker-wide entry-count retention alone moves it per replica). The
index keeps each batch's size: `size_bytes`, the retained batches' bytes, is what
retention.bytes bounds.

Compaction (compaction.py has the design in full). A compacted topic's log is the records
compaction kept below the log start offset, which is then its *raw* start (`kept`: the
latest record per key of the compacted prefix, at its offset; keyed machine records,
carried whole by the snapshot), followed by the Raft log's batches. A compact command, which
the leader proposes with the records to keep already chosen from its log, moves the raw
start as a retain command does, merges the records below it (a higher offset wins) and
drops tombstones older than its horizon: apply reads only the entry. Readers see the log
start `first_offset` (0 while records are kept); a fetch below the raw start is served from
the kept records as batches whose base offsets skip what compaction removed. A retain
command that moves the start (retention, after a switch back to `delete`) drops every kept
record: they are older than every batch.

Transactions (broker/core/txn/). The partition is a participant of the three-phase commit:
its `TxnLedger` holds each producer's open transaction. The coordinator's requests arrive as
CBOR command entries (BEGIN, PREPARE, PRECOMMIT: they take no offset and are never served)
and as control batches (the COMMIT and ABORT markers, written by this partition's leader: a
marker takes one offset when its transaction wrote data here, none otherwise). A
transactional batch is appended only inside a transaction the coordinator registered here
(BEGIN applied), and a batch a client flags control is refused at the leader. The last stable
offset is the first offset of the earliest open transaction holding data (the high watermark
when there is none); an aborted transaction's range goes to the `AbortedIndex`, which
read_committed fetches filter by. A producer with an open transaction never expires.

Persistence (the `StateMachine` protocol of broker/core/machine.py): the offset index is
written incrementally, one record per accepted batch (key: base offset; value: Raft index,
max timestamp and batch size, offset_index.py), and deleted below a moved log start; the
rest of the state (offsets, producers: bounded by the producers active within
`producer_expiry_ms`) is the apply state, rewritten in the round after an apply changed it.
Aborted transactions are records too, keyed above every offset (aborted.py).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from broker.core.compaction import COMPACT_OP, COMPACTED_KEYS, KeptRecords, decode_compact
from broker.core.machine import Applied, MachineWrites
from broker.core.offset_index import OffsetIndex, index_value, read_index_value
from broker.core.raft import Entry, EntryKind
from broker.core.txn.aborted import ABORTED_KEYS, AbortedIndex, split_records
from broker.core.txn.ledger import LedgerResult, TxnLedger
from broker.core.txn.protocol import (
    Participant,
    Phase,
    TxnCommand,
    decode_marker,
    marker_command,
)
from broker.wire.batch import BatchError, BatchHeader, parse_header
from broker.wire.cbor import decode as cbor_decode
from broker.wire.cbor import encode as cbor_encode
from broker.wire.errors import ErrorCode, WireError
from broker.wire.limits import MAX_FRAME_BYTES_CEILING, Limits

PRODUCER_BATCHES_KEPT = 5
STATE_LIMITS = Limits(
    max_frame_bytes=MAX_FRAME_BYTES_CEILING,
    max_array_items=10_000_000,
    max_frame_items=100_000_000,
)
"""Decoding our own persisted state: trusted, but still bounded."""
SEQUENCE_MODULUS = 1 << 31
RETAIN_OP = "retain"
"""The `op` of the command entry that moves the log start offset (`retain_command`)."""


@dataclass(frozen=True, slots=True)
class PartitionConfig:
    max_message_bytes: int = 1 << 20
    producer_expiry_ms: int = 7 * 24 * 3600 * 1000
    limits: Limits = field(default_factory=Limits)


@dataclass(slots=True)
class _CachedBatch:
    first_seq: int
    last_seq: int
    base_offset: int
    last_offset: int


@dataclass(slots=True)
class ProducerState:
    epoch: int
    last_seq: int
    last_timestamp: int
    batches: deque[_CachedBatch] = field(default_factory=deque)


class Outcome(IntEnum):
    APPENDED = 0
    DUPLICATE = 1
    REJECTED = 2
    NOT_DATA = 3


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What applying one entry did; the runtime answers the waiting producer with it."""

    outcome: Outcome
    base_offset: int = -1
    last_offset: int = -1
    error: ErrorCode = ErrorCode.NONE
    message: str | None = None
    vote: bool = False
    """A PREPARE command's vote."""


_NOT_DATA = ApplyResult(Outcome.NOT_DATA)


def is_command(data: bytes) -> bool:
    """A participant command entry (a CBOR map), not a record batch."""
    return 0xA0 <= data[0] <= 0xBF


def retain_command(offset: int) -> bytes:
    """The command entry that moves the log start offset up to `offset` (a leader's
    retention decision; see the module doc for where it lands)."""
    return cbor_encode({"op": RETAIN_OP, "from": offset})


def _aborted_below(key: int, offset: int) -> bool:
    return ABORTED_KEYS <= key < ABORTED_KEYS + offset


def _from_ledger(res: LedgerResult) -> ApplyResult:
    return ApplyResult(Outcome.NOT_DATA, error=res.error, message=res.message, vote=res.vote)


class PartitionMachine:
    """One partition's state, rebuilt by applying its committed Raft entries in order."""

    __slots__ = (
        "_dropped_records",
        "_new_records",
        "_rewrite_kept",
        "_start_moved",
        "aborted",
        "applied_index",
        "config",
        "index",
        "kept",
        "ledger",
        "log_start_offset",
        "max_timestamp",
        "next_offset",
        "producers",
    )

    def __init__(self, config: PartitionConfig | None = None) -> None:
        self.config = config or PartitionConfig()
        self.next_offset = 0
        self.log_start_offset = 0
        self.applied_index = 0
        self.max_timestamp = -1
        self.index = OffsetIndex()
        self.producers: dict[int, ProducerState] = {}
        self.ledger = TxnLedger()
        self.aborted = AbortedIndex()
        self._new_records: list[tuple[int, bytes]] = []
        """Offset-index and aborted-transaction records added since the writes were last
        taken."""
        self._dropped_records: list[int] = []
        self._start_moved = False
        """The log start offset moved since the writes were last taken."""
        self.kept: KeptRecords | None = None
        """The records below the log start that compaction kept (compaction.py; None until
        a compact command applies)."""
        self._rewrite_kept = False

    @property
    def high_watermark(self) -> int:
        """Every applied entry is committed, so the log end is the high watermark."""
        return self.next_offset

    @property
    def first_offset(self) -> int:
        """The log start readers see: 0 while compaction keeps records below the (raw) log
        start offset, else the log start offset."""
        return 0 if self.kept else self.log_start_offset

    @property
    def size_bytes(self) -> int:
        """The retained batches' bytes (what retention.bytes bounds)."""
        return self.index.total_bytes

    @property
    def last_stable_offset(self) -> int:
        """Below it every transaction has ended: the first offset of the earliest open
        transaction holding data, or the high watermark."""
        first = self.ledger.first_unstable()
        return self.next_offset if first < 0 else first

    # -- validation at the leader (fail fast; apply decides) --------------------------------

    def validate(self, batch: bytes) -> BatchHeader:
        """Check a client's batch before proposing it (raises BatchError with the code to
        answer): its shape, and that it is no control batch (markers are the broker's) and
        no transactional batch of a transaction not registered here."""
        h = parse_header(batch, self.config.limits, self.config.max_message_bytes)
        if h.is_control:
            raise BatchError(ErrorCode.INVALID_REQUEST, "control batches are written by brokers")
        if h.is_transactional:
            res = self.ledger.data_problem(h.producer_id, h.producer_epoch, True)
            if not res.ok:
                raise BatchError(res.error, res.message or res.error.description)
        return h

    # -- apply ------------------------------------------------------------------------------

    def apply(self, entry: Entry) -> ApplyResult:
        assert entry.index > self.applied_index, "entries are applied once, in order"
        self.applied_index = entry.index
        if entry.kind != EntryKind.NORMAL or not entry.data:
            return _NOT_DATA
        if is_command(entry.data):
            return self._apply_command(entry.data)
        try:
            header = parse_header(entry.data, self.config.limits, None, check_crc=False)
        except BatchError as e:
            # Validated by the leader before proposing: only a different limit on another
            # replica's configuration could get here. Reject deterministically.
            return ApplyResult(Outcome.REJECTED, error=e.code)
        if header.max_timestamp > self.max_timestamp:
            self.max_timestamp = header.max_timestamp
        pid = header.producer_id
        if pid < 0:
            return self._append(entry.index, header)
        if header.is_control:
            return self._apply_marker(entry, header)
        return self._apply_idempotent(entry.index, header)

    def _apply_command(self, data: bytes) -> ApplyResult:
        try:
            raw = cbor_decode(data, STATE_LIMITS)
            if isinstance(raw, dict) and raw.get("op") == RETAIN_OP:
                return self._apply_retain(raw)
            if isinstance(raw, dict) and raw.get("op") == COMPACT_OP:
                return self._apply_compact(raw)
            cmd = TxnCommand.from_wire(raw)
        except WireError as e:
            return ApplyResult(Outcome.REJECTED, error=e.code, message=e.message)
        if cmd.phase in (Phase.COMMIT, Phase.ABORT):
            return ApplyResult(
                Outcome.REJECTED, error=ErrorCode.INVALID_REQUEST, message="markers are batches"
            )
        return _from_ledger(self.ledger.apply(cmd))

    def _apply_retain(self, raw: dict[object, object]) -> ApplyResult:
        """A leader's retention decision: move the log start to the last batch boundary at
        or below min(offset, last stable offset, the last batch's base offset); never back."""
        offset = raw.get("from")
        if type(offset) is not int or len(raw) != 2 or offset < 0:
            return ApplyResult(
                Outcome.REJECTED, error=ErrorCode.INVALID_REQUEST, message="bad retain command"
            )
        before = self.log_start_offset
        self._retain_bounded(offset)
        if self.kept and self.log_start_offset > before:
            self.kept.clear()  # older than every batch: retention deletes them first
        return _NOT_DATA

    def _retain_bounded(self, offset: int) -> None:
        """retain_from the last batch boundary at or below min(offset, last stable offset,
        the last batch's base offset)."""
        if len(self.index):
            bound = min(offset, self.last_stable_offset, self.index.last()[0])
            pos = self.index.position(bound)
            if pos > 0:
                self.retain_from(self.index.base_at(pos))

    def _apply_compact(self, raw: dict[object, object]) -> ApplyResult:
        """A leader's compaction (compaction.py): the raw start moves as a retain command
        moves it, the records below it are merged, old tombstones go."""
        to, records, horizon = decode_compact(raw)
        if self.kept is None:
            self.kept = KeptRecords()
        self._retain_bounded(to)
        for rec in records:
            if rec.offset < self.log_start_offset:
                self.kept.add(rec)
        if horizon is not None:
            self.kept.expire(horizon)
        return _NOT_DATA

    def _apply_marker(self, entry: Entry, h: BatchHeader) -> ApplyResult:
        """A COMMIT or ABORT marker: it closes the producer's transaction here, and takes an
        offset only when that transaction wrote data here."""
        try:
            marker = decode_marker(entry.data)
        except BatchError as e:
            return ApplyResult(Outcome.REJECTED, error=e.code, message=e.message)
        cmd = marker_command(
            marker, h.producer_id, h.producer_epoch, h.max_timestamp, Participant("", 0)
        )
        res = self.ledger.apply(cmd)
        closed = res.closed
        if not res.ok or closed is None or closed.first_offset < 0:
            return _from_ledger(res)
        appended = self._append(entry.index, h)
        if cmd.phase == Phase.ABORT:
            self._new_records.append(
                self.aborted.add(h.producer_id, closed.first_offset, appended.base_offset)
            )
        return appended

    def _append(self, raft_index: int, h: BatchHeader) -> ApplyResult:
        base = self.next_offset
        self.index.append(base, raft_index, h.max_timestamp, h.size)
        self.next_offset = base + h.record_count
        return ApplyResult(Outcome.APPENDED, base, self.next_offset - 1)

    def last_indexed(self) -> tuple[int, int, int]:
        """(base offset, raft index, max timestamp) of the batch appended last."""
        return self.index.last()

    def _apply_idempotent(self, raft_index: int, h: BatchHeader) -> ApplyResult:
        self._expire_producers()
        pid, epoch, first = h.producer_id, h.producer_epoch, h.base_sequence
        last = (first + h.record_count - 1) % SEQUENCE_MODULUS
        state = self.producers.get(pid)
        if state is not None and epoch == state.epoch:
            for cached in state.batches:
                if cached.first_seq == first and cached.last_seq == last:
                    return ApplyResult(
                        Outcome.DUPLICATE,
                        cached.base_offset,
                        cached.last_offset,
                        ErrorCode.NONE,
                    )
        txn = self.ledger.data_problem(pid, epoch, h.is_transactional)
        if not txn.ok:
            return ApplyResult(Outcome.REJECTED, error=txn.error, message=txn.message)
        if state is None:
            if first != 0:
                return ApplyResult(Outcome.REJECTED, error=ErrorCode.UNKNOWN_PRODUCER_ID)
            state = self.producers[pid] = ProducerState(epoch, -1, h.max_timestamp)
        elif epoch < state.epoch:
            return ApplyResult(Outcome.REJECTED, error=ErrorCode.INVALID_PRODUCER_EPOCH)
        elif epoch > state.epoch:
            if first != 0:
                return ApplyResult(Outcome.REJECTED, error=ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER)
            state.epoch = epoch
            state.last_seq = -1
            state.batches.clear()
        elif first != (state.last_seq + 1) % SEQUENCE_MODULUS:
            return ApplyResult(Outcome.REJECTED, error=ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER)
        result = self._append(raft_index, h)
        state.last_seq = last
        state.last_timestamp = max(state.last_timestamp, h.max_timestamp)
        state.batches.append(_CachedBatch(first, last, result.base_offset, result.last_offset))
        if len(state.batches) > PRODUCER_BATCHES_KEPT:
            state.batches.popleft()
        if h.is_transactional:
            self.ledger.note_data(pid, result.base_offset, last)
        return result

    def _expire_producers(self) -> None:
        horizon = self.max_timestamp - self.config.producer_expiry_ms
        if not self.producers or horizon <= 0:
            return
        stale = [
            pid
            for pid, s in self.producers.items()
            if s.last_timestamp < horizon and not self.ledger.has_open(pid)
        ]
        for pid in stale:
            del self.producers[pid]
        self.ledger.expire(horizon)

    # -- the StateMachine protocol (broker/core/machine.py) ---------------------------------

    def apply_entry(self, entry: Entry) -> Applied:
        res = self.apply(entry)
        if res.outcome == Outcome.APPENDED:
            base, raft_index, max_ts = self.index.last()
            size = self.index.size_at(len(self.index) - 1)
            self._new_records.append((base, index_value(raft_index, max_ts, size)))
        return Applied(res.error, res.message, res)

    def take_writes(self) -> MachineWrites:
        records, self._new_records = self._new_records, []
        dropped, self._dropped_records = self._dropped_records, []
        moved, self._start_moved = self._start_moved, False
        below = self.log_start_offset if moved else None
        if self._rewrite_kept:  # after a snapshot: every stored index and kept record
            self._rewrite_kept = False
            below = ABORTED_KEYS
            records.extend(self.kept.all_records() if self.kept is not None else ())
        elif self.kept is not None:
            put, gone = self.kept.take_changes()
            records.extend(put)
            dropped.extend(gone)
        return MachineWrites(self.state_bytes(), below, tuple(records), tuple(dropped))

    def snapshot(self) -> bytes:
        return self.snapshot_bytes()

    def load(self, state: bytes | None, records: Iterable[tuple[int, bytes]]) -> None:
        """Rebuild from what `take_writes` persisted (see `restore`)."""
        index, aborted = split_records(records)
        kept = [v for k, v in index if k >= COMPACTED_KEYS]
        index = [r for r in index if r[0] < COMPACTED_KEYS]
        self.restore(state, ((k, *read_index_value(v)) for k, v in index))
        if state is not None:
            for key, value in aborted:
                self.aborted.load(key, value)
            if kept:
                self.kept = KeptRecords()
                for value in kept:
                    self.kept.load(value, STATE_LIMITS)
            self._dropped_records.extend(self.aborted.drop_before(self.log_start_offset))

    def leader_tick(self) -> list[bytes]:
        return []

    def timers_pending(self) -> bool:
        """A transaction pre-committed here: its leader's PrecommitWatch must keep counting
        (TxnParticipants), so the group does not quiesce."""
        return self.ledger.has_pre_committed()

    # -- reads ------------------------------------------------------------------------------

    def locate(self, offset: int) -> tuple[ErrorCode, int]:
        """(NONE, position in the index) of the batch holding `offset`; (NONE, -1) when
        offset is the log end (nothing yet); OFFSET_OUT_OF_RANGE otherwise."""
        if offset == self.next_offset:
            return ErrorCode.NONE, -1
        if offset < self.log_start_offset or offset > self.next_offset:
            return ErrorCode.OFFSET_OUT_OF_RANGE, -1
        return ErrorCode.NONE, self.index.position(offset)

    def offset_for_timestamp(self, timestamp: int) -> int:
        """First offset of the first batch whose max timestamp >= `timestamp`; the log end
        if there is none."""
        pos = self.index.first_at_or_after(timestamp)
        return self.index.base_at(pos) if pos >= 0 else self.next_offset

    # -- persistence ------------------------------------------------------------------------

    def state_bytes(self) -> bytes:
        """Everything but the offset index and kept records (persisted beside it)."""
        return self._encode(self.log_start_offset)

    def snapshot_bytes(self) -> bytes:
        """The machine as a Raft snapshot at `applied_index`: `state_bytes` with the log start
        offset at the next offset (a snapshot carries no batches; see the module doc), and a
        compacted topic's kept records."""
        return self._encode(self.next_offset, kept=True)

    def _encode(self, log_start: int, *, kept: bool = False) -> bytes:
        producers = [
            [
                pid,
                s.epoch,
                s.last_seq,
                s.last_timestamp,
                [[b.first_seq, b.last_seq, b.base_offset, b.last_offset] for b in s.batches],
            ]
            for pid, s in self.producers.items()
        ]
        state = {
            "v": 1,
            "applied": self.applied_index,
            "next": self.next_offset,
            "start": log_start,
            "max_ts": self.max_timestamp,
            "producers": producers,
            "txns": self.ledger.to_wire(),
        }
        if kept and self.kept:
            state["kept"] = self.kept.to_wire()
        return cbor_encode(state)

    def restore(
        self,
        state: bytes | None,
        offsets: Iterable[tuple[int, int, int] | tuple[int, int, int, int]],
    ) -> None:
        """Rebuild from persisted state and index: (base offset, Raft index, max timestamp,
        batch bytes, 0 when left out); records below the state's log start offset, or
        applied after it, are not indexed. The caller replays entries after
        `applied_index`."""
        if state is None:
            return
        self._decode(state)
        for rec in offsets:
            base, raft_index, max_ts = rec[0], rec[1], rec[2]
            if raft_index <= self.applied_index and base >= self.log_start_offset:
                self.index.append(base, raft_index, max_ts, rec[3] if len(rec) > 3 else 0)

    def restore_snapshot(self, data: bytes) -> None:
        """Rebuild from `snapshot_bytes` (an installed snapshot, or this replica's own at
        restart): no records, so the log start offset is the next offset, the index empty."""
        d = self._decode(data)
        self.log_start_offset = self.next_offset
        self.index = OffsetIndex()
        self.kept = KeptRecords.from_wire(d["kept"]) if "kept" in d else None
        self._rewrite_kept = True
        self._dropped_records.extend(self.aborted.drop_before(self.log_start_offset))
        self._new_records = []
        self._start_moved = True

    def _decode(self, state: bytes) -> dict[str, Any]:
        """Restore the apply state's fields; the decoded map."""
        d = cbor_decode(state, STATE_LIMITS)
        assert isinstance(d, dict) and d.get("v") == 1, "unknown partition state format"
        self.applied_index = int(d["applied"])
        self.next_offset = int(d["next"])
        self.log_start_offset = int(d["start"])
        self.max_timestamp = int(d["max_ts"])
        self.producers = {}
        for pid, epoch, last_seq, last_ts, batches in d["producers"]:
            st = ProducerState(int(epoch), int(last_seq), int(last_ts))
            for first, last, base, last_off in batches:
                st.batches.append(_CachedBatch(first, last, base, last_off))
            self.producers[int(pid)] = st
        self.ledger = TxnLedger.from_wire(d.get("txns", []))
        return d

    # -- retention --------------------------------------------------------------------------

    def retain_from(self, offset: int) -> None:
        """Delete the records below `offset`, which must be a batch boundary at or below the
        log end (the caller compacts the Raft log behind them): the log start offset moves
        there (never back) and the index forgets the batches below it."""
        assert offset <= self.next_offset, "retention cannot pass the log end"
        if offset <= self.log_start_offset:
            return
        self.log_start_offset = offset
        self.index.drop_before(offset)
        self._dropped_records.extend(self.aborted.drop_before(offset))
        self._new_records = [
            r for r in self._new_records if r[0] >= offset and not _aborted_below(r[0], offset)
        ]
        self._start_moved = True
        assert not len(self.index) or self.index.base_at(0) == offset, "not a batch boundary"
