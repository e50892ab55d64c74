"""Log compaction (`cleanup.policy=compact`): the latest record per key, offsets kept (pure).

A compacted partition keeps its log in two parts. Below its raw log start (the machine's
`log_start_offset`) the records are `KeptRecords`: the latest record of each key the
compacted prefix held, with its offset, timestamp, value (None: a tombstone) and headers.
They are keyed machine records (key COMPACTED_KEYS + offset, between the offset index's
keys and the aborted transactions'), and the machine's snapshot carries them all. At and
above the raw start are the Raft log's batches, as in any partition.

Compacting. The leader (retention.py's check, at its interval) reads the batches of [raw
start, X) from its Raft log, X at most the base offset of the last batch (the active tail
stays raw) and the last stable offset, the range bounded by COMPACT_SCAN_BYTES, and
proposes `compact_command`: the latest record of each key of the range (control batches,
aborted transactions' data and keyless records left out; tombstones kept, as they must
replace what the prefix holds) and a horizon, now - delete.retention.ms. Every replica
applies it from the entry alone: the raw start moves as a retain command moves it (to the
last batch boundary at or below min(X, last stable offset, the last batch's base)), each
record below the new raw start is merged (it replaces its key's record only if its offset
is higher, so a command applied twice, or one computed before another applied, changes
nothing more), then every tombstone older than the horizon is dropped: a reader had
delete.retention.ms, measured on the tombstone's own timestamp, to see it. The Raft log
behind the raw start is compacted as retention's is (retention.py), so the disk holds the
last record per key plus the raw tail.

Reading. A fetch below the raw start is served from the kept records: runs of consecutive
offsets as batches whose base offset is their first record's (a reader takes a record's
offset as its batch's base plus its position; the gaps between batches are the records
compacted away). A compacted topic's log starts at 0 for its readers: a position anywhere
below the raw start reads the next kept record. Every record of a compacted topic needs a
key: the leader refuses a batch holding a keyless record (INVALID_RECORD, as Kafka).

Limits: the kept records are held in memory and in every snapshot (and so in each capture
retention.py keeps), so a compacted partition's live keys must fit in memory and in a
follower's max_snapshot_bytes; served batches are encoded at each fetch.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from broker.core.offset_index import OffsetIndex
from broker.core.raft import Entry
from broker.core.txn.aborted import AbortedIndex, is_aborted
from broker.wire.batch import (
    BatchError,
    CorruptBatchError,
    Record,
    decode_record_fields,
    encode_batch,
    parse_header,
)
from broker.wire.cbor import decode as cbor_decode
from broker.wire.cbor import encode as cbor_encode
from broker.wire.errors import ErrorCode, WireError
from broker.wire.limits import INT32_MAX, MAX_FRAME_BYTES_CEILING, Limits

COMPACTED_KEYS = 1 << 61
"""Machine record keys in [COMPACTED_KEYS, ABORTED_KEYS) are kept records (+ offset)."""
COMPACT_OP = "compact"
COMPACT_SCAN_BYTES = 1 << 20
"""Raw batch bytes one compaction command covers at most (beyond its first batch)."""
RUN_RECORDS = 1000
"""Kept records served in one batch at most."""
_STORED = Limits(max_batch_bytes=MAX_FRAME_BYTES_CEILING, max_batch_records=INT32_MAX)


class LogReader(Protocol):
    """The leader's Raft log as compaction reads it (`RaftLog.slice`)."""

    def slice(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry] | None: ...


@dataclass(frozen=True, slots=True)
class KeptRecord:
    offset: int
    timestamp: int
    key: bytes
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()

    def to_wire(self) -> list[object]:
        headers = [[n, v] for n, v in self.headers]
        return [self.offset, self.timestamp, self.key, self.value, headers]

    @classmethod
    def from_wire(cls, raw: object) -> KeptRecord:
        """Strict (WireError INVALID_REQUEST): a logged command's or a persisted record."""
        if not isinstance(raw, list) or len(raw) != 5:
            raise WireError(ErrorCode.INVALID_REQUEST, "a kept record is 5 items")
        offset, ts, key, value, headers = raw
        if type(offset) is not int or offset < 0 or type(ts) is not int:
            raise WireError(ErrorCode.INVALID_REQUEST, "a kept record's offset or timestamp")
        if type(key) is not bytes or not (value is None or type(value) is bytes):
            raise WireError(ErrorCode.INVALID_REQUEST, "a kept record's key or value")
        if not isinstance(headers, list) or not all(
            isinstance(h, list) and len(h) == 2 and type(h[0]) is str and type(h[1]) is bytes
            for h in headers
        ):
            raise WireError(ErrorCode.INVALID_REQUEST, "a kept record's headers")
        return cls(offset, ts, key, value, tuple((n, v) for n, v in headers))


class KeptRecords:
    """The latest record per key below a compacted partition's raw log start, by offset;
    the changes since `take_changes` (offsets put and dropped) for the machine's writes."""

    __slots__ = ("_by_key", "_dropped", "_offsets", "_put", "_records", "tombstones")

    def __init__(self) -> None:
        self._by_key: dict[bytes, int] = {}
        self._records: dict[int, KeptRecord] = {}
        self._offsets: list[int] = []
        """Ascending."""
        self.tombstones: dict[int, int] = {}
        """offset -> timestamp of each kept tombstone."""
        self._put: dict[int, KeptRecord] = {}
        self._dropped: set[int] = set()

    def __len__(self) -> int:
        return len(self._offsets)

    def __iter__(self) -> Iterator[KeptRecord]:
        return (self._records[o] for o in self._offsets)

    def add(self, rec: KeptRecord) -> None:
        """Merge `rec`: it replaces its key's record if its offset is higher."""
        old = self._by_key.get(rec.key)
        if old is not None:
            if old >= rec.offset:
                return
            self._drop(old)
        self._by_key[rec.key] = rec.offset
        self._records[rec.offset] = rec
        bisect.insort(self._offsets, rec.offset)
        if rec.value is None:
            self.tombstones[rec.offset] = rec.timestamp
        self._put[rec.offset] = rec
        self._dropped.discard(rec.offset)

    def clear(self) -> None:
        """Drop every record."""
        for offset in list(self._offsets):
            self._drop(offset)

    def expire(self, horizon: int) -> None:
        """Drop the tombstones older than `horizon`."""
        for offset in [o for o, ts in self.tombstones.items() if ts < horizon]:
            self._drop(offset)

    def oldest_tombstone(self) -> int | None:
        return min(self.tombstones.values(), default=None)

    def _drop(self, offset: int) -> None:
        rec = self._records.pop(offset)
        del self._by_key[rec.key]
        del self._offsets[bisect.bisect_left(self._offsets, offset)]
        self.tombstones.pop(offset, None)
        if self._put.pop(offset, None) is None:  # else it never reached the store
            self._dropped.add(offset)

    def take_changes(self) -> tuple[list[tuple[int, bytes]], list[int]]:
        """(records put, record keys dropped) since the last call, as machine records."""
        put = [(COMPACTED_KEYS + o, cbor_encode(r.to_wire())) for o, r in sorted(self._put.items())]
        dropped = sorted(COMPACTED_KEYS + o for o in self._dropped)
        self._put, self._dropped = {}, set()
        return put, dropped

    def all_records(self) -> list[tuple[int, bytes]]:
        """Every kept record as a machine record (a rewrite after a snapshot)."""
        self._put, self._dropped = {}, set()
        return [(COMPACTED_KEYS + r.offset, cbor_encode(r.to_wire())) for r in self]

    def load(self, value: bytes, limits: Limits) -> None:
        """A persisted record (`take_changes`), at restart."""
        self.add(KeptRecord.from_wire(cbor_decode(value, limits)))
        self._put.clear()

    def to_wire(self) -> list[object]:
        return [r.to_wire() for r in self]

    @classmethod
    def from_wire(cls, raw: object) -> KeptRecords:
        kept = cls()
        if not isinstance(raw, list):
            raise WireError(ErrorCode.INVALID_REQUEST, "kept records are a list")
        for item in raw:
            kept.add(KeptRecord.from_wire(item))
        kept._put.clear()
        return kept

    def batches(
        self, offset: int, end: int, max_bytes: int, min_one: bool
    ) -> tuple[list[tuple[int, bytes]], int, int]:
        """The kept records from `offset` up to `end` as batches of consecutive offsets
        within max_bytes (with `min_one`, the first even if larger): (batches, their bytes,
        the offset to read next: past the last record served, or `end`)."""
        offsets = self._offsets
        i = bisect.bisect_left(offsets, offset)
        out: list[tuple[int, bytes]] = []
        size = 0
        while i < len(offsets) and offsets[i] < end:
            run = [self._records[offsets[i]]]
            i += 1
            while (
                i < len(offsets)
                and offsets[i] < end
                and offsets[i] == run[-1].offset + 1
                and len(run) < RUN_RECORDS
            ):
                run.append(self._records[offsets[i]])
                i += 1
            data = encode_batch(
                [Record(key=r.key, value=r.value, headers=r.headers, timestamp=r.timestamp)
                 for r in run]
            )  # fmt: skip
            if (out or not min_one) and size + len(data) > max_bytes:
                return out, size, run[0].offset
            out.append((run[0].offset, data))
            size += len(data)
            if size >= max_bytes:
                return out, size, run[-1].offset + 1
        return out, size, end


def compact_command(to: int, kept: Iterable[KeptRecord], horizon: int | None) -> bytes:
    """The command entry that compacts the raw log below `to` into the kept records (see
    the module doc); `horizon`: tombstones older than it go (None: none)."""
    return cbor_encode(
        {"op": COMPACT_OP, "to": to, "keep": [r.to_wire() for r in kept], "horizon": horizon}
    )


def decode_compact(raw: dict[object, object]) -> tuple[int, list[KeptRecord], int | None]:
    """(to, records ascending by offset, horizon) of a compact command (WireError)."""
    to, keep, horizon = raw.get("to"), raw.get("keep"), raw.get("horizon")
    if len(raw) != 4 or type(to) is not int or to < 0 or not isinstance(keep, list):
        raise WireError(ErrorCode.INVALID_REQUEST, "bad compact command")
    if not (horizon is None or type(horizon) is int):
        raise WireError(ErrorCode.INVALID_REQUEST, "bad compact command horizon")
    records = [KeptRecord.from_wire(item) for item in keep]
    if any(a.offset >= b.offset for a, b in itertools.pairwise(records)):
        raise WireError(ErrorCode.INVALID_REQUEST, "compact command records out of order")
    return to, records, horizon


def check_keys(batch: bytes) -> None:
    """A compacted topic's batch: every record has a key (else BatchError INVALID_RECORD;
    CORRUPT_MESSAGE for records that do not decode)."""
    try:
        fields = decode_record_fields(batch)
    except CorruptBatchError as e:
        raise BatchError(ErrorCode.CORRUPT_MESSAGE, e.message) from None
    if any(key is None for _, key, _, _ in fields):
        raise BatchError(
            ErrorCode.INVALID_RECORD, "a compacted topic (cleanup.policy=compact) needs keys"
        )


def plan_compaction(
    index: OffsetIndex,
    kept: KeptRecords | None,
    aborted: AbortedIndex,
    last_stable_offset: int,
    log: LogReader,
    horizon: int | None,
    scan_bytes: int = COMPACT_SCAN_BYTES,
) -> bytes | None:
    """The leader's compaction command for a compacted partition now, or None when there is
    nothing to compact and no tombstone to drop (see the module doc)."""
    last = len(index) - 1
    latest: dict[bytes, KeptRecord] = {}
    ranges = aborted.covering(index.base_at(0), last_stable_offset) if last > 0 else None
    cut = scanned = 0
    while cut < last and index.base_at(cut + 1) <= last_stable_offset and scanned < scan_bytes:
        base, raft_index = index.base_at(cut), index.raft_index_at(cut)
        got = log.slice(raft_index, raft_index + 1)
        if not got:
            break  # cannot happen: the index lists only batches the log holds
        data = got[0].data
        try:
            h = parse_header(data, _STORED, check_crc=False)
            fields = [] if h.is_control else decode_record_fields(data, _STORED)
        except (BatchError, CorruptBatchError):
            break  # a damaged batch stays raw (its reader reports it)
        if ranges is None or not is_aborted(ranges, h.producer_id, base):
            for i, (ts, key, value, headers) in enumerate(fields):
                if key is not None:
                    latest[key] = KeptRecord(base + i, ts, key, value, headers)
        scanned += len(data)
        cut += 1
    if cut:
        records = sorted(latest.values(), key=lambda r: r.offset)
        return compact_command(index.base_at(cut), records, horizon)
    oldest = kept.oldest_tombstone() if kept is not None else None
    if horizon is not None and oldest is not None and oldest < horizon:
        return compact_command(index.base_at(0) if len(index) else 0, [], horizon)
    return None
