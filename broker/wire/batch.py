"""The record batch: what a producer sends, a Raft entry holds and a fetch returns, unchanged.

Sluice batch, magic 0x53 ('S'), version 1. A 42-byte big-endian header, then the records:

    offset  size  field
         0     1  magic = 0x53
         1     1  version = 1
         2     4  crc: zlib.crc32 of bytes [6:] (attributes to the end of the records)
         6     2  attributes: bits 0-2 compression (0 = none, the only one today),
                  bit 4 transactional, bit 5 control; all other bits 0
         8     4  record_count, 1 .. limits.max_batch_records
        12     8  first_timestamp: the first record's timestamp, ms (int64)
        20     8  max_timestamp: the largest record timestamp (>= first_timestamp)
        28     8  producer_id: -1 without idempotence
        36     2  producer_epoch: -1 without idempotence
        38     4  base_sequence: the first record's sequence; -1 without idempotence and
                  in control batches
        42     -  records: ONE CBOR array of record_count items
                  [timestamp_delta int, key bytes|null, value bytes|null, headers]
                  where headers is [[name text, value bytes], ...]

Producer fields: producer_id -1 means epoch -1, base_sequence -1 and not transactional;
producer_id >= 0 needs epoch >= 0 and base_sequence >= 0 (-1 in a control batch). A control
batch (a transaction marker) is transactional and holds exactly one record.

The broker touches a batch only through `parse_header`, which validates the header, the CRC
and the CBOR array head (a definite length equal to record_count, RFC 8949 §3) without
decoding a single record, and returns a `BatchHeader`. The same bytes are replicated, stored
and served. Formats are dispatched on the magic byte in `_PARSERS`, so another format (Kafka's
RecordBatch v2, magic 2, for a later Kafka listener) can be stored as received beside
Sluice's own: it needs only a parser returning a BatchHeader.

Consumers call `decode_records`, which checks everything again and decodes the records with
the strict CBOR decoder; any problem is a CorruptBatchError (the client reports the offsets).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum

from broker.wire import cbor
from broker.wire.errors import BatchError, CorruptBatchError, ErrorCode, WireError
from broker.wire.limits import DEFAULT_LIMITS, INT64_MAX, INT64_MIN, KiB, Limits

__all__ = [
    "ATTR_CONTROL",
    "ATTR_TRANSACTIONAL",
    "HEADER_BYTES",
    "SEQUENCE_MODULUS",
    "SLUICE_MAGIC",
    "SLUICE_VERSION",
    "BatchError",
    "BatchHeader",
    "Compression",
    "CorruptBatchError",
    "Record",
    "RecordFields",
    "data_record_count",
    "decode_record_fields",
    "decode_records",
    "encode_batch",
    "new_record",
    "parse_header",
]

SLUICE_MAGIC = 0x53
SLUICE_VERSION = 1
HEADER_BYTES = 42
SEQUENCE_MODULUS = 1 << 31
"""Sequences are int32 >= 0 and wrap from 2**31 - 1 to 0, as Kafka's."""

ATTR_COMPRESSION_MASK = 0x0007
ATTR_TRANSACTIONAL = 0x0010
ATTR_CONTROL = 0x0020
_ATTR_KNOWN = ATTR_COMPRESSION_MASK | ATTR_TRANSACTIONAL | ATTR_CONTROL

_MIN_RECORD_BYTES = 5
"""The smallest encoded record, [0, null, null, []]: bounds record_count by the batch size."""

_PRESCAN_ABOVE_BYTES = 64 * KiB
"""decode_records runs the CBOR structure scan first only on batches larger than this: a
smaller batch cannot make cbor2 allocate more than a few MiB, and every record's shape is
checked after decoding anyway. The generic scan costs ~1 µs per record, so a batch of the
shape producers write is first walked by `_scan_records` (~0.3 µs per record); only a batch
it does not vouch for takes the generic scan."""

_HEADER = struct.Struct(">BBIHIqqqhi")
_AFTER_CRC = struct.Struct(">HIqqqhi")
assert _HEADER.size == HEADER_BYTES and _AFTER_CRC.size == HEADER_BYTES - 6
_ARRAY_COUNT = {24: struct.Struct(">B"), 25: struct.Struct(">H"), 26: struct.Struct(">I")}
_ARRAY_COUNT[27] = struct.Struct(">Q")


class Compression(IntEnum):
    NONE = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Record:
    """One record. `timestamp` is in ms; the wire stores it as a delta to the batch's first."""

    key: bytes | None = None
    value: bytes | None = None
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp: int


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchHeader:
    """What the broker knows about a batch: its header fields, checked, and its size."""

    magic: int
    version: int
    crc: int
    attributes: int
    record_count: int
    first_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    size: int
    """Length of the whole batch in bytes."""

    @property
    def compression(self) -> int:
        return self.attributes & ATTR_COMPRESSION_MASK

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & ATTR_TRANSACTIONAL)

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & ATTR_CONTROL)

    @property
    def is_idempotent(self) -> bool:
        return self.producer_id >= 0

    @property
    def last_sequence(self) -> int:
        """The last record's sequence (wrapping at 2**31), or -1 when there is none."""
        if self.base_sequence < 0:
            return -1
        return (self.base_sequence + self.record_count - 1) % SEQUENCE_MODULUS


def _producer_problem(
    producer_id: int, epoch: int, base_sequence: int, transactional: bool, control: bool
) -> str | None:
    """Why the producer fields contradict each other, or None (shared by encode and parse)."""
    if producer_id < -1 or epoch < -1 or base_sequence < -1:
        return "producer_id, producer_epoch and base_sequence must be >= -1"
    if producer_id == -1:
        if epoch != -1 or base_sequence != -1:
            return "a batch without producer_id has producer_epoch and base_sequence -1"
        if transactional or control:
            return "a transactional or control batch needs a producer_id"
        return None
    if epoch < 0:
        return "a batch with a producer_id needs producer_epoch >= 0"
    if control:
        if not transactional:
            return "a control batch is transactional"
        if base_sequence != -1:
            return "a control batch has base_sequence -1"
    elif base_sequence < 0:
        return "a batch with a producer_id needs base_sequence >= 0"
    return None


# --------------------------------------------------------------------------- encoding


def _opt_bytes(value: object, what: str) -> bytes | None:
    if value is None or type(value) is bytes:
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise TypeError(f"{what} must be bytes or None, not {type(value).__name__}")


def _header_items(headers: Sequence[tuple[str, bytes]]) -> list[list[object]]:
    items: list[list[object]] = []
    for name, value in headers:
        if type(name) is not str:
            raise TypeError(f"a header name must be str, not {type(name).__name__}")
        if value is None:
            raise TypeError("a header value must be bytes, not None")
        items.append([name, _opt_bytes(value, "a header value")])
    return items


def _head(major: int, n: int) -> bytes:
    """The CBOR head of major type bits `major` (already shifted left by 5) with argument
    0 <= n < 2**64, in its shortest form (RFC 8949 §3; what cbor2 writes)."""
    if n < 24:
        return bytes((major | n,))
    if n < 0x100:
        return bytes((major | 24, n))
    if n < 0x1_0000:
        return bytes((major | 25,)) + n.to_bytes(2, "big")
    if n < 0x1_0000_0000:
        return bytes((major | 26,)) + n.to_bytes(4, "big")
    return bytes((major | 27,)) + n.to_bytes(8, "big")


_BYTES_HEADS = tuple(_head(0x40, n) for n in range(0x100))
"""Heads of byte strings shorter than 256 bytes."""
_RECORD_STARTS = tuple(b"\x84" + _head(0x00, delta) for delta in range(0x100))
"""A record item's array head and its timestamp delta, for deltas 0 .. 255 ms."""
_NULL = b"\xf6"
_NO_HEADERS = b"\x80"


def _bytes_head(n: int) -> bytes:
    return _BYTES_HEADS[n] if n < 0x100 else _head(0x40, n)


def _delta_item(delta: int) -> bytes:
    """A timestamp delta as a CBOR integer (|delta| < 2**64: both timestamps are int64)."""
    return _head(0x00, delta) if delta >= 0 else _head(0x20, -1 - delta)


def _headers_array(headers: Sequence[tuple[str, bytes]]) -> bytes:
    """The CBOR array [[name, value], ...] of a record's headers (checked like `encode_batch`
    checks every field). ASCII names are written directly; any other name goes through
    cbor2, so its UTF-8 (and a lone surrogate's refusal) is exactly cbor2's."""
    items = _header_items(headers)
    parts = [_head(0x80, len(items))]
    for item in items:
        name, value = item
        assert type(name) is str and type(value) is bytes  # _header_items checked them
        if name.isascii():
            parts += (b"\x82", _head(0x60, len(name)), name.encode("ascii"))
            parts += (_bytes_head(len(value)), value)
        else:
            parts.append(cbor.encode(item))
    return b"".join(parts)


def _records_array(records: Sequence[Record], first: int) -> tuple[bytearray, int]:
    """The CBOR records array of a batch whose first timestamp is `first`, and the largest
    timestamp. Every field is checked (ValueError for a timestamp that is not an int64,
    TypeError for a key, value or header of the wrong type, in record order).

    The bytes are exactly what cbor2 writes for the list of items
    `[timestamp - first, key, value, [[name, value], ...]]` (shortest heads, null for None):
    the heads are written here, one record at a time, because cbor2 spends ~0.7 µs on each
    nested list, more than this whole loop takes per record
    (tests/unit/test_wire_batch.py holds the two to the same bytes)."""
    out = bytearray(_head(0x80, len(records)))
    max_timestamp = first
    starts, bytes_heads = _RECORD_STARTS, _BYTES_HEADS
    for record in records:
        timestamp = record.timestamp
        if type(timestamp) is not int or not INT64_MIN <= timestamp <= INT64_MAX:
            raise ValueError(f"a record timestamp must be an int64, got {timestamp!r}")
        if timestamp > max_timestamp:
            max_timestamp = timestamp
        delta = timestamp - first
        if 0 <= delta < 0x100:
            out += starts[delta]
        else:
            out += b"\x84"
            out += _delta_item(delta)
        key = record.key
        if key is None:
            out += _NULL
        else:
            if type(key) is not bytes:
                key = _opt_bytes(key, "a record key")
                assert key is not None
            n = len(key)
            out += bytes_heads[n] if n < 0x100 else _head(0x40, n)
            out += key
        value = record.value
        if value is None:
            out += _NULL
        else:
            if type(value) is not bytes:
                value = _opt_bytes(value, "a record value")
                assert value is not None
            n = len(value)
            out += bytes_heads[n] if n < 0x100 else _head(0x40, n)
            out += value
        headers = record.headers
        out += _headers_array(headers) if headers else _NO_HEADERS
    return out, max_timestamp


def encode_batch(
    records: Sequence[Record],
    *,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    transactional: bool = False,
    control: bool = False,
) -> bytes:
    """One Sluice batch holding `records` (the records array is CBOR-encoded once).

    Raises ValueError for arguments that would make an invalid batch, TypeError for records
    whose fields have the wrong types.
    """
    count = len(records)
    if not 0 < count <= 0xFFFF_FFFF:
        raise ValueError(f"a batch holds 1 .. 2**32 - 1 records, not {count}")
    if control and count != 1:
        raise ValueError("a control batch holds exactly one record")
    problem = _producer_problem(producer_id, producer_epoch, base_sequence, transactional, control)
    if problem is not None:
        raise ValueError(problem)
    if base_sequence >= SEQUENCE_MODULUS or producer_epoch > 0x7FFF or producer_id > INT64_MAX:
        raise ValueError("producer_id, producer_epoch or base_sequence out of range")
    first = records[0].timestamp
    body, max_timestamp = _records_array(records, first)
    attributes = (ATTR_TRANSACTIONAL if transactional else 0) | (ATTR_CONTROL if control else 0)
    after_crc = _AFTER_CRC.pack(
        attributes, count, first, max_timestamp, producer_id, producer_epoch, base_sequence
    )
    crc = zlib.crc32(body, zlib.crc32(after_crc))
    return b"".join(
        (bytes((SLUICE_MAGIC, SLUICE_VERSION)), crc.to_bytes(4, "big"), after_crc, body)
    )


# --------------------------------------------------------------------------- parsing


def _corrupt(message: str) -> BatchError:
    return BatchError(ErrorCode.CORRUPT_MESSAGE, message)


def _parse_sluice(data: bytes, limits: Limits, check_crc: bool) -> BatchHeader:
    size = len(data)
    if size < HEADER_BYTES:
        raise _corrupt(f"batch of {size} bytes is shorter than its {HEADER_BYTES}-byte header")
    (magic, version, crc, attributes, count, first_ts, max_ts, pid, epoch, base_seq) = (
        _HEADER.unpack_from(data)
    )
    if version != SLUICE_VERSION:
        raise _corrupt(f"batch version {version} is not supported (only {SLUICE_VERSION})")
    if check_crc:
        actual = zlib.crc32(memoryview(data)[6:])
        if actual != crc:
            raise _corrupt(f"CRC mismatch: header says {crc:#010x}, bytes give {actual:#010x}")
    if attributes & ~_ATTR_KNOWN:
        raise _corrupt(f"unknown attribute bits {attributes & ~_ATTR_KNOWN:#06x}")
    if attributes & ATTR_COMPRESSION_MASK:
        raise _corrupt(f"compression {attributes & ATTR_COMPRESSION_MASK} is not supported")
    if count < 1:
        raise _corrupt("record_count is 0")
    if count > limits.max_batch_records:
        raise BatchError(
            ErrorCode.MESSAGE_TOO_LARGE,
            f"{count} records exceed the limit of {limits.max_batch_records}",
        )
    if max_ts < first_ts:
        raise _corrupt(f"max_timestamp {max_ts} is before first_timestamp {first_ts}")
    transactional = bool(attributes & ATTR_TRANSACTIONAL)
    control = bool(attributes & ATTR_CONTROL)
    problem = _producer_problem(pid, epoch, base_seq, transactional, control)
    if problem is not None:
        raise _corrupt(problem)
    if control and count != 1:
        raise _corrupt(f"a control batch holds one record, not {count}")
    _check_array_head(data, count)
    return BatchHeader(
        magic=magic,
        version=version,
        crc=crc,
        attributes=attributes,
        record_count=count,
        first_timestamp=first_ts,
        max_timestamp=max_ts,
        producer_id=pid,
        producer_epoch=epoch,
        base_sequence=base_seq,
        size=size,
    )


def _check_array_head(data: bytes, count: int) -> None:
    """The records must start with a definite-length CBOR array head (major type 4) whose
    count is record_count; only the head is read (RFC 8949 §3: initial byte, then 0-8
    argument bytes)."""
    if len(data) == HEADER_BYTES:
        raise _corrupt("no records after the header")
    initial = data[HEADER_BYTES]
    major, info = initial >> 5, initial & 0x1F
    if major != 4:
        raise _corrupt(f"records are not a CBOR array (initial byte {initial:#04x})")
    end = HEADER_BYTES + 1
    if info < 24:
        declared = info
    elif info in _ARRAY_COUNT:
        reader = _ARRAY_COUNT[info]
        end += reader.size
        if end > len(data):
            raise _corrupt("records array head is truncated")
        declared = reader.unpack_from(data, HEADER_BYTES + 1)[0]
    elif info == 31:
        raise _corrupt("records array has an indefinite length")
    else:
        raise _corrupt(f"records array head has reserved additional information {info}")
    if declared != count:
        raise _corrupt(f"records array holds {declared} items, header says {count}")
    if len(data) - end < count * _MIN_RECORD_BYTES:
        raise _corrupt(f"{len(data) - end} bytes cannot hold {count} records")


_Parser = Callable[[bytes, Limits, bool], BatchHeader]

_PARSERS: dict[int, _Parser] = {SLUICE_MAGIC: _parse_sluice}
"""Batch formats by magic byte: the one place a new format (Kafka v2) is added."""


def parse_header(
    data: bytes | bytearray | memoryview,
    limits: Limits = DEFAULT_LIMITS,
    max_bytes: int | None = None,
    *,
    check_crc: bool = True,
) -> BatchHeader:
    """Validate a batch without decoding its records; raise BatchError with the code to
    answer (MESSAGE_TOO_LARGE, CORRUPT_MESSAGE).

    `max_bytes` is the topic's limit (max.message.bytes); `limits.max_batch_bytes` always
    applies too. `check_crc=False` is for bytes whose CRC was already checked (a replica
    applying an entry the leader validated, which the Raft entry checksum protects).
    """
    raw = data if type(data) is bytes else bytes(data)
    size = len(raw)
    if size == 0:
        raise _corrupt("empty batch")
    limit = limits.max_batch_bytes if max_bytes is None else min(max_bytes, limits.max_batch_bytes)
    if size > limit:
        raise BatchError(
            ErrorCode.MESSAGE_TOO_LARGE, f"batch of {size} bytes exceeds the limit of {limit}"
        )
    parser = _PARSERS.get(raw[0])
    if parser is None:
        raise _corrupt(f"unknown batch magic byte {raw[0]:#04x}")
    return parser(raw, limits, check_crc)


_COUNT_FIELDS = struct.Struct(">HI")
"""attributes and record_count, at byte 6 of a Sluice batch header."""


def data_record_count(data: bytes) -> int:
    """The data records a batch's header states, read without any check (for batches
    `parse_header` accepted already: counting them costs one field read, never a record
    decoded). 0 for a control batch, a batch of another format and a truncated one."""
    if len(data) < HEADER_BYTES or data[0] != SLUICE_MAGIC:
        return 0
    attributes, count = _COUNT_FIELDS.unpack_from(data, 6)
    return 0 if attributes & ATTR_CONTROL else int(count)


# --------------------------------------------------------------------------- decoding


def decode_records(
    data: bytes | bytearray | memoryview, limits: Limits = DEFAULT_LIMITS
) -> list[Record]:
    """The records of a Sluice batch, every byte checked; raise CorruptBatchError."""
    raw = data if type(data) is bytes else bytes(data)
    try:
        header = parse_header(raw, limits)
    except BatchError as exc:
        raise CorruptBatchError(exc.message) from exc
    if header.magic != SLUICE_MAGIC:
        raise CorruptBatchError(f"batch format {header.magic:#04x} cannot be decoded here")
    return [
        new_record(key, value, headers, timestamp)
        for timestamp, key, value, headers in _decode_fields(raw, header, limits)
    ]


RecordFields = tuple[int, bytes | None, bytes | None, tuple[tuple[str, bytes], ...]]
"""A decoded record as (timestamp, key, value, headers)."""


def decode_record_fields(
    data: bytes | bytearray | memoryview, limits: Limits = DEFAULT_LIMITS
) -> list[RecordFields]:
    """`decode_records` as (timestamp, key, value, headers) tuples, the same checks made:
    for a reader that builds its own record objects (the consumer), one object per record
    fewer."""
    raw = data if type(data) is bytes else bytes(data)
    try:
        header = parse_header(raw, limits)
    except BatchError as exc:
        raise CorruptBatchError(exc.message) from exc
    if header.magic != SLUICE_MAGIC:
        raise CorruptBatchError(f"batch format {header.magic:#04x} cannot be decoded here")
    return _decode_fields(raw, header, limits)


def _decode_fields(raw: bytes, header: BatchHeader, limits: Limits) -> list[RecordFields]:
    prescan = len(raw) > _PRESCAN_ABOVE_BYTES and not _scan_records(
        raw, header.record_count, limits
    )
    try:
        items = cbor.decode(raw, limits, offset=HEADER_BYTES, prescan=prescan)
    except WireError as exc:
        raise CorruptBatchError(f"records: {exc.message}") from exc
    if type(items) is not list or len(items) != header.record_count:
        raise CorruptBatchError("records are not an array of record_count items")
    return _records(items, header, limits)


def _int_head_sizes() -> bytes:
    """Per initial byte: the length of the head of an integer (major type 0 or 1) it starts,
    argument bytes included; 0 for anything else."""
    sizes = bytearray(256)
    for ib in range(256):
        if ib >> 5 <= 1 and ib & 0x1F <= 27:
            sizes[ib] = 1 + {24: 1, 25: 2, 26: 4, 27: 8}.get(ib & 0x1F, 0)
    return bytes(sizes)


_INT_HEAD_SIZES = _int_head_sizes()
_from_bytes = int.from_bytes


def _scan_records(data: bytes, count: int, limits: Limits) -> bool:
    """Whether the records of a batch (after its header) are an array stating `count`, of
    exactly `count` items [int, bytes|null, bytes|null, [[text, bytes], ...]] filling the
    buffer, within `limits`. True only when
    `cbor.scan` would pass them as well (definite lengths, no tags, nesting 4 deep at most,
    arrays, text and the item count within the limits, nothing truncated or trailing), so
    the generic scan can be skipped; False for anything else, which then takes the generic
    scan (and its error) as before: this walk decides nothing on its own."""
    max_array = limits.max_array_items
    max_text = limits.max_text_bytes
    if limits.max_nesting < 4 or max_array < 4 or count > max_array:
        return False
    int_head = _INT_HEAD_SIZES
    n = len(data)
    pos = HEADER_BYTES
    items = 1 + 5 * count
    try:
        ib = data[pos]  # the records array: its head must state `count`
        if 0x80 <= ib < 0x98:
            stated = ib - 0x80
            pos += 1
        elif 0x98 <= ib <= 0x9B:
            size = 1 << (ib - 0x98)
            stated = _from_bytes(data[pos + 1 : pos + 1 + size], "big")
            pos += 1 + size
        else:
            return False
        if stated != count:
            return False
        for _ in range(count):
            if data[pos] != 0x84:
                return False
            size = int_head[data[pos + 1]]  # the timestamp delta
            if not size:
                return False
            pos += 1 + size
            ib = data[pos]  # the key
            if ib == 0xF6:
                pos += 1
            elif 0x40 <= ib < 0x58:
                pos += ib - 0x3F
            elif ib == 0x58:
                pos += 2 + data[pos + 1]
            elif 0x59 <= ib <= 0x5B:
                size = 1 << (ib - 0x58)
                pos += 1 + size + _from_bytes(data[pos + 1 : pos + 1 + size], "big")
            else:
                return False
            ib = data[pos]  # the value
            if ib == 0xF6:
                pos += 1
            elif 0x40 <= ib < 0x58:
                pos += ib - 0x3F
            elif ib == 0x58:
                pos += 2 + data[pos + 1]
            elif 0x59 <= ib <= 0x5B:
                size = 1 << (ib - 0x58)
                pos += 1 + size + _from_bytes(data[pos + 1 : pos + 1 + size], "big")
            else:
                return False
            ib = data[pos]  # the headers
            if ib == 0x80:
                pos += 1
                continue
            if 0x81 <= ib < 0x98:
                pairs = ib - 0x80
                pos += 1
            elif 0x98 <= ib <= 0x9B:
                size = 1 << (ib - 0x98)
                pairs = _from_bytes(data[pos + 1 : pos + 1 + size], "big")
                pos += 1 + size
            else:
                return False
            if pairs > max_array:
                return False
            items += 3 * pairs
            for _ in range(pairs):
                if data[pos] != 0x82:
                    return False
                ib = data[pos + 1]  # the name
                if 0x60 <= ib < 0x78:
                    length = ib - 0x60
                    pos += 2
                elif 0x78 <= ib <= 0x7B:
                    size = 1 << (ib - 0x78)
                    length = _from_bytes(data[pos + 2 : pos + 2 + size], "big")
                    pos += 2 + size
                else:
                    return False
                if length > max_text:
                    return False
                pos += length
                ib = data[pos]  # the value
                if 0x40 <= ib < 0x58:
                    pos += ib - 0x3F
                elif ib == 0x58:
                    pos += 2 + data[pos + 1]
                elif 0x59 <= ib <= 0x5B:
                    size = 1 << (ib - 0x58)
                    pos += 1 + size + _from_bytes(data[pos + 1 : pos + 1 + size], "big")
                else:
                    return False
    except IndexError:
        return False  # truncated
    return pos == n and (n <= limits.max_frame_items or items <= limits.max_frame_items)


def _record_problem(item: object) -> str:
    """What is wrong with a record that failed the combined check in `_records`."""
    if type(item) is not list or len(item) != 4:
        return "not [timestamp_delta, key, value, headers]"
    delta, key, value, _headers = item
    if type(delta) is not int:
        return "timestamp delta is not an int"
    if key is not None and type(key) is not bytes:
        return "key is not bytes or null"
    if value is not None and type(value) is not bytes:
        return "value is not bytes or null"
    return "headers are not an array"


_new_record = object.__new__
_set_key, _set_value, _set_headers, _set_timestamp = (
    vars(Record)[name].__set__ for name in ("key", "value", "headers", "timestamp")
)


def new_record(
    key: bytes | None, value: bytes | None, headers: tuple[tuple[str, bytes], ...], ts: int
) -> Record:
    """Record(key=key, value=value, headers=headers, timestamp=ts) for values of the right
    types already (nothing is checked), through the slot descriptors: a frozen dataclass's
    __init__ costs 0.65 µs, this 0.25 µs. For the paths that build one per record:
    `decode_records` (a third of its time otherwise) and the producer's `send`."""
    record: Record = _new_record(Record)
    _set_key(record, key)
    _set_value(record, value)
    _set_headers(record, headers)
    _set_timestamp(record, ts)
    return record


def _records(items: list[object], header: BatchHeader, limits: Limits) -> list[RecordFields]:
    """Every decoded item checked as a record: (timestamp, key, value, headers) each."""
    first = header.first_timestamp
    max_items = limits.max_array_items
    max_text = limits.max_text_bytes
    records: list[RecordFields] = []
    append = records.append
    max_seen = INT64_MIN
    min_seen = INT64_MAX
    for index, item in enumerate(items):
        if type(item) is not list or len(item) != 4:
            raise CorruptBatchError(f"record {index}: {_record_problem(item)}")
        delta, key, value, raw_headers = item
        if (
            type(delta) is not int
            or (key is not None and type(key) is not bytes)
            or (value is not None and type(value) is not bytes)
            or type(raw_headers) is not list
        ):
            raise CorruptBatchError(f"record {index}: {_record_problem(item)}")
        timestamp = first + delta
        if timestamp > max_seen:
            max_seen = timestamp
        if timestamp < min_seen:
            min_seen = timestamp
        headers = _headers(raw_headers, index, max_items, max_text) if raw_headers else ()
        append((timestamp, key, value, headers))
    first_record = items[0]
    assert type(first_record) is list  # checked in the loop
    if first_record[0] != 0:
        raise CorruptBatchError("record 0: timestamp delta is not 0")
    if max_seen != header.max_timestamp:
        raise CorruptBatchError(
            f"max_timestamp {header.max_timestamp} is not the records' maximum {max_seen}"
        )
    if min_seen < INT64_MIN:  # max_seen is max_timestamp, an int64
        raise CorruptBatchError("a record timestamp is out of the int64 range")
    return records


def _headers(
    raw: list[object], index: int, max_items: int, max_text: int
) -> tuple[tuple[str, bytes], ...]:
    if len(raw) > max_items:
        raise CorruptBatchError(f"record {index}: more than {max_items} headers")
    pairs: list[tuple[str, bytes]] = []
    for pair in raw:
        if (
            type(pair) is not list
            or len(pair) != 2
            or type(pair[0]) is not str
            or type(pair[1]) is not bytes
        ):
            raise CorruptBatchError(f"record {index}: a header is not [text, bytes]")
        name: str = pair[0]
        if len(name) * 4 > max_text and len(name.encode()) > max_text:
            raise CorruptBatchError(f"record {index}: a header name is too long")
        pairs.append((name, pair[1]))
    return tuple(pairs)
