"""The record batch: round trips, every corruption found by the header check, and a header check
that never decodes a record."""

from __future__ import annotations

import struct
import zlib

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.wire import batch as batch_module
from broker.wire import cbor as cbor_module
from broker.wire.batch import (
    HEADER_BYTES,
    SLUICE_MAGIC,
    BatchHeader,
    Record,
    decode_record_fields,
    decode_records,
    encode_batch,
    parse_header,
)
from broker.wire.errors import BatchError, CorruptBatchError, ErrorCode, WireError
from broker.wire.limits import DEFAULT_LIMITS, Limits

T0 = 1_700_000_000_000

RECORDS = [
    Record(key=b"k1", value=b"v1", timestamp=T0),
    Record(key=None, value=b"", headers=(("traceparent", b"00-ab-cd-01"),), timestamp=T0 + 5),
    Record(key=b"", value=None, headers=(("a", b""), ("a", b"\x00")), timestamp=T0 - 3),
]


def raw_batch(
    records: bytes,
    *,
    count: int,
    attributes: int = 0,
    first: int = T0,
    max_ts: int = T0,
    producer_id: int = -1,
    epoch: int = -1,
    sequence: int = -1,
    magic: int = SLUICE_MAGIC,
    version: int = 1,
) -> bytes:
    """A batch with arbitrary header fields and a correct CRC."""
    after = struct.pack(">HIqqqhi", attributes, count, first, max_ts, producer_id, epoch, sequence)
    crc = zlib.crc32(after + records)
    return struct.pack(">BBI", magic, version, crc) + after + records


def assert_corrupt(data: bytes, fragment: str = "", limits: Limits = DEFAULT_LIMITS) -> BatchError:
    with pytest.raises(BatchError) as info:
        parse_header(data, limits)
    assert info.value.code is ErrorCode.CORRUPT_MESSAGE, info.value
    assert fragment in info.value.message, info.value.message
    return info.value


def test_round_trip_and_header_fields() -> None:
    data = encode_batch(RECORDS, producer_id=9, producer_epoch=2, base_sequence=40)
    header = parse_header(data)
    assert header == BatchHeader(
        magic=SLUICE_MAGIC,
        version=1,
        crc=header.crc,
        attributes=0,
        record_count=3,
        first_timestamp=T0,
        max_timestamp=T0 + 5,
        producer_id=9,
        producer_epoch=2,
        base_sequence=40,
        size=len(data),
    )
    assert header.last_sequence == 42
    assert header.is_idempotent and not header.is_transactional and not header.is_control
    assert header.compression == 0
    assert decode_records(data) == RECORDS
    assert data[0] == 0x53 and data[1] == 1 and len(data) > HEADER_BYTES


def test_records_are_one_cbor_array_after_the_header() -> None:
    data = encode_batch(RECORDS)
    items = cbor2.loads(data[HEADER_BYTES:])
    assert items == [
        [0, b"k1", b"v1", []],
        [5, None, b"", [["traceparent", b"00-ab-cd-01"]]],
        [-3, b"", None, [["a", b""], ["a", b"\x00"]]],
    ]


def test_buffers_are_encoded_as_bytes() -> None:
    rec = Record(key=memoryview(b"k"), value=bytearray(b"v"), timestamp=1)  # type: ignore[arg-type]
    assert decode_records(encode_batch([rec])) == [Record(key=b"k", value=b"v", timestamp=1)]


def test_last_sequence_wraps_at_2_to_the_31() -> None:
    data = encode_batch(RECORDS, producer_id=1, producer_epoch=0, base_sequence=2**31 - 2)
    assert parse_header(data).last_sequence == 0
    assert parse_header(encode_batch(RECORDS)).last_sequence == -1


def test_transactional_and_control_flags() -> None:
    txn = encode_batch(
        RECORDS, producer_id=3, producer_epoch=1, base_sequence=0, transactional=True
    )
    assert parse_header(txn).is_transactional
    marker = encode_batch(
        [Record(key=b"\x00\x00", value=b"commit", timestamp=T0)],
        producer_id=3,
        producer_epoch=1,
        transactional=True,
        control=True,
    )
    header = parse_header(marker)
    assert header.is_control and header.is_transactional and header.record_count == 1
    assert header.last_sequence == -1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"producer_id": 1},  # epoch and sequence missing
        {"producer_id": 1, "producer_epoch": 0},  # sequence missing
        {"producer_epoch": 0},  # no producer id
        {"base_sequence": 0},
        {"transactional": True},  # a transaction needs a producer id
        {"producer_id": 1, "producer_epoch": 0, "base_sequence": 0, "control": True},
        {"producer_id": 1, "producer_epoch": 0, "control": True},  # control is transactional
        {"producer_id": -2, "producer_epoch": -1, "base_sequence": -1},
        {"producer_id": 1, "producer_epoch": 0, "base_sequence": 2**31},
    ],
)
def test_encode_refuses_contradictory_producer_fields(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        encode_batch(RECORDS[:1], **kwargs)  # type: ignore[arg-type]


def test_encode_refuses_bad_records() -> None:
    with pytest.raises(ValueError):
        encode_batch([])
    with pytest.raises(TypeError):
        encode_batch([Record(key="text", timestamp=0)])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        encode_batch([Record(headers=((b"name", b"v"),), timestamp=0)])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        encode_batch([Record(headers=(("name", None),), timestamp=0)])  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        encode_batch([Record(timestamp=2**63)])
    control = [Record(timestamp=0), Record(timestamp=0)]
    with pytest.raises(ValueError):
        encode_batch(control, producer_id=1, producer_epoch=0, transactional=True, control=True)


def test_a_flipped_bit_anywhere_is_detected() -> None:
    data = encode_batch(RECORDS, producer_id=9, producer_epoch=2, base_sequence=40)
    for position in range(len(data)):
        for bit in (0, 7):
            damaged = bytearray(data)
            damaged[position] ^= 1 << bit
            with pytest.raises(BatchError) as info:
                parse_header(bytes(damaged))
            assert info.value.code is ErrorCode.CORRUPT_MESSAGE
            if position >= 2:
                assert "CRC" in info.value.message, (position, info.value.message)


def test_every_truncation_is_detected() -> None:
    data = encode_batch(RECORDS)
    for length in range(len(data)):
        with pytest.raises(BatchError) as info:
            parse_header(data[:length])
        assert info.value.code is ErrorCode.CORRUPT_MESSAGE


def test_check_crc_false_skips_only_the_crc() -> None:
    data = bytearray(encode_batch(RECORDS))
    data[-1] ^= 0xFF
    assert_corrupt(bytes(data), "CRC")
    assert parse_header(bytes(data), check_crc=False).record_count == 3


def test_count_must_match_the_cbor_array_head() -> None:
    records = cbor2.dumps([[0, None, b"x", []]] * 3)
    assert parse_header(raw_batch(records, count=3)).record_count == 3
    assert_corrupt(raw_batch(records, count=2), "holds 3 items, header says 2")
    assert_corrupt(raw_batch(records, count=4), "holds 3 items, header says 4")


@pytest.mark.parametrize(
    ("records", "fragment"),
    [
        (b"", "no records"),
        (cbor2.dumps({"a": 1}), "not a CBOR array"),
        (b"\x9f\x84\x00\xf6\xf6\x80\xff", "indefinite"),
        (b"\x9c", "reserved"),
        (b"\x98", "truncated"),
        (b"\x83\x84\x00\xf6\xf6\x80", "cannot hold 3 records"),
    ],
)
def test_bad_array_heads(records: bytes, fragment: str) -> None:
    assert_corrupt(raw_batch(records, count=3), fragment)


def test_long_form_array_heads_are_accepted() -> None:
    item = cbor2.dumps([0, None, None, []])
    for head in (
        b"\x98\x02",
        b"\x99\x00\x02",
        b"\x9a\x00\x00\x00\x02",
        b"\x9b" + bytes(7) + b"\x02",
    ):
        assert parse_header(raw_batch(head + item * 2, count=2)).record_count == 2


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"version": 2}, "version 2"),
        ({"magic": 2}, "magic byte 0x02"),
        ({"attributes": 0x0001}, "compression 1"),
        ({"attributes": 0x0008}, "unknown attribute bits"),
        ({"attributes": 0x8000}, "unknown attribute bits"),
        ({"count": 0}, "record_count is 0"),
        ({"first": T0 + 1, "max_ts": T0}, "before first_timestamp"),
        ({"producer_id": -1, "epoch": 0}, "producer_epoch and base_sequence -1"),
        ({"producer_id": 5, "epoch": -1, "sequence": 0}, "producer_epoch >= 0"),
        ({"producer_id": 5, "epoch": 0, "sequence": -1}, "base_sequence >= 0"),
        ({"producer_id": -7}, ">= -1"),
        ({"attributes": 0x0010}, "needs a producer_id"),
        ({"attributes": 0x0030, "producer_id": 5, "epoch": 0, "count": 2}, "one record"),
        ({"attributes": 0x0020, "producer_id": 5, "epoch": 0}, "control batch is transactional"),
    ],
)
def test_bad_header_fields(fields: dict[str, int], fragment: str) -> None:
    count = fields.pop("count", 1)
    records = cbor2.dumps([[0, None, b"x", []]] * max(count, 1))
    assert_corrupt(raw_batch(records, count=count, **fields), fragment)


def test_oversized_batches() -> None:
    data = encode_batch(RECORDS)
    with pytest.raises(BatchError) as info:
        parse_header(data, Limits(), len(data) - 1)
    assert info.value.code is ErrorCode.MESSAGE_TOO_LARGE
    assert parse_header(data, Limits(), len(data)).size == len(data)
    with pytest.raises(BatchError) as info:
        parse_header(data, Limits(max_batch_bytes=len(data) - 1), 10**9)
    assert info.value.code is ErrorCode.MESSAGE_TOO_LARGE
    with pytest.raises(BatchError) as info:
        parse_header(data, Limits(max_batch_records=2))
    assert info.value.code is ErrorCode.MESSAGE_TOO_LARGE
    assert_corrupt(b"", "empty")


def test_parse_header_never_decodes_records(monkeypatch: pytest.MonkeyPatch) -> None:
    # Garbage after a valid array head and a valid CRC: the header check passes...
    garbage = raw_batch(b"\x82" + b"\xff" * 20, count=2)

    def refuse(*args: object, **kwargs: object) -> object:
        raise AssertionError("parse_header decoded records")

    monkeypatch.setattr(cbor_module, "decode", refuse)
    monkeypatch.setattr(cbor2, "loads", refuse)
    assert parse_header(garbage).record_count == 2
    monkeypatch.undo()
    # ...and only decode_records finds the records corrupt.
    with pytest.raises(CorruptBatchError):
        decode_records(garbage)


def test_the_magic_byte_dispatches_to_a_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bytes] = []

    def kafka_v2(data: bytes, limits: Limits, check_crc: bool) -> BatchHeader:
        seen.append(data)
        return BatchHeader(
            magic=2,
            version=2,
            crc=0,
            attributes=0,
            record_count=1,
            first_timestamp=0,
            max_timestamp=0,
            producer_id=-1,
            producer_epoch=-1,
            base_sequence=-1,
            size=len(data),
        )

    monkeypatch.setitem(batch_module._PARSERS, 2, kafka_v2)
    assert parse_header(b"\x02kafka").magic == 2 and seen == [b"\x02kafka"]
    with pytest.raises(CorruptBatchError, match=r"cannot be decoded here"):
        decode_records(b"\x02kafka")


@pytest.mark.parametrize(
    ("records", "max_ts", "fragment"),
    [
        ([[0, b"k", b"v"]], T0, "record 0: not [timestamp_delta"),
        ([[0, "k", b"v", []]], T0, "key is not bytes"),
        ([[0, b"k", 5, []]], T0, "value is not bytes"),
        ([[0.5, b"k", b"v", []]], T0, "timestamp delta is not an int"),
        ([[0, b"k", b"v", {}]], T0, "headers are not an array"),
        ([[0, b"k", b"v", [["n"]]]], T0, "a header is not [text, bytes]"),
        ([[0, b"k", b"v", [[b"n", b"v"]]]], T0, "a header is not [text, bytes]"),
        ([[0, b"k", b"v", [["n", "v"]]]], T0, "a header is not [text, bytes]"),
        ([[1, b"k", b"v", []]], T0 + 1, "record 0: timestamp delta is not 0"),
        ([[0, b"k", b"v", []]], T0 + 1, "is not the records' maximum"),
        ([[0, b"k", b"v", []], [2**64 - 1, None, None, []]], T0, "maximum"),
        ([[0, b"k", b"v", [], 9]], T0, "not [timestamp_delta"),
        ([b"abcd"], T0, "not [timestamp_delta"),
    ],
)
def test_decode_records_finds_bad_records(
    records: list[object], max_ts: int, fragment: str
) -> None:
    data = raw_batch(cbor2.dumps(records), count=len(records), max_ts=max_ts)
    parse_header(data)  # the header is fine: only the records are bad
    with pytest.raises(CorruptBatchError) as info:
        decode_records(data)
    assert info.value.code is ErrorCode.CORRUPT_MESSAGE
    assert fragment in info.value.message, info.value.message


def test_decode_records_applies_strict_cbor() -> None:
    tagged = b"\x81\x84\x00\xc2\x41\x01\xf6\x80"  # a bignum tag where a key belongs
    with pytest.raises(CorruptBatchError, match="tag"):
        decode_records(raw_batch(tagged, count=1))
    trailing = cbor2.dumps([[0, None, None, []]]) + b"\x00"
    with pytest.raises(CorruptBatchError, match="trailing"):
        decode_records(raw_batch(trailing, count=1))


def test_large_batches_are_scanned_before_they_are_built() -> None:
    # 100,000 empty header arrays: cbor2 would build 100,000 lists; the scan refuses first.
    headers = b"\x9a" + struct.pack(">I", 100_000) + b"\x80" * 100_000
    records = b"\x81\x84\x00\xf6\xf6" + headers
    data = raw_batch(records, count=1)
    with pytest.raises(CorruptBatchError, match="items"):
        decode_records(data, Limits(max_frame_items=50_000))


def test_control_record_round_trip() -> None:
    marker = [Record(key=b"\x00\x01", value=b"\x00", timestamp=5)]
    data = encode_batch(marker, producer_id=1, producer_epoch=3, transactional=True, control=True)
    assert decode_records(data) == marker


# ---------------------------------------------------------------------------- properties

_records = st.lists(
    st.builds(
        Record,
        key=st.none() | st.binary(max_size=20),
        value=st.none() | st.binary(max_size=50),
        headers=st.lists(st.tuples(st.text(max_size=10), st.binary(max_size=10)), max_size=3).map(
            tuple
        ),
        timestamp=st.integers(min_value=-(2**40), max_value=2**45),
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=150, deadline=1000)
@given(_records, st.booleans())
def test_property_round_trip(records: list[Record], idempotent: bool) -> None:
    kwargs = {"producer_id": 77, "producer_epoch": 1, "base_sequence": 5} if idempotent else {}
    data = encode_batch(records, **kwargs)  # type: ignore[arg-type]
    header = parse_header(data)
    assert header.record_count == len(records)
    assert header.first_timestamp == records[0].timestamp
    assert header.max_timestamp == max(r.timestamp for r in records)
    assert decode_records(data) == records


@settings(max_examples=400, deadline=1000)
@given(st.binary(max_size=120))
def test_fuzz_parse_header_raises_only_batch_errors(data: bytes) -> None:
    try:
        parse_header(data)
    except BatchError as exc:
        assert exc.code in (ErrorCode.CORRUPT_MESSAGE, ErrorCode.MESSAGE_TOO_LARGE)


@settings(max_examples=300, deadline=1000)
@given(_records, st.data())
def test_fuzz_damaged_batches(records: list[Record], data: st.DataObject) -> None:
    """Damage with the CRC fixed up afterwards, so the field checks themselves are exercised:
    parse_header and decode_records raise only their own errors, never crash."""
    batch = bytearray(encode_batch(records))
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        at = data.draw(st.integers(min_value=0, max_value=len(batch) - 1))
        batch[at] = data.draw(st.integers(min_value=0, max_value=255))
    if data.draw(st.booleans()):
        del batch[data.draw(st.integers(min_value=0, max_value=len(batch))) :]
    if len(batch) >= 6:
        batch[2:6] = zlib.crc32(batch[6:]).to_bytes(4, "big")
    try:
        parse_header(bytes(batch))
    except BatchError as exc:
        assert exc.code in (ErrorCode.CORRUPT_MESSAGE, ErrorCode.MESSAGE_TOO_LARGE)
    try:
        decode_records(bytes(batch))
    except CorruptBatchError as exc:
        assert exc.code is ErrorCode.CORRUPT_MESSAGE


# ------------------------------------------------------- the direct encoder and record scan


def _reference_batch(records: list[Record], **kwargs: object) -> bytes:
    """`encode_batch` as it was before it wrote CBOR heads itself: the items built as lists
    (every field checked by the same helpers, in the same order) and encoded by cbor2 in one
    call. The direct encoder must match it byte for byte, and raise what it raises."""
    first = records[0].timestamp
    max_timestamp = first
    items: list[list[object]] = []
    for record in records:
        timestamp = record.timestamp
        if type(timestamp) is not int or not -(2**63) <= timestamp < 2**63:
            raise ValueError(f"a record timestamp must be an int64, got {timestamp!r}")
        max_timestamp = max(max_timestamp, timestamp)
        items.append(
            [
                timestamp - first,
                batch_module._opt_bytes(record.key, "a record key"),
                batch_module._opt_bytes(record.value, "a record value"),
                batch_module._header_items(record.headers) if record.headers else [],
            ]
        )
    body = cbor2.dumps(items)
    producer_id = kwargs.get("producer_id", -1)
    epoch = kwargs.get("producer_epoch", -1)
    sequence = kwargs.get("base_sequence", -1)
    fields = (0, len(records), first, max_timestamp, producer_id, epoch, sequence)
    after = struct.pack(">HIqqqhi", *fields)
    return struct.pack(">BBI", SLUICE_MAGIC, 1, zlib.crc32(after + body)) + after + body


_lengths = st.sampled_from([0, 1, 23, 24, 100, 255, 256, 1000, 65535, 65536])
_any_bytes = st.binary(max_size=40) | _lengths.map(lambda n: b"\x07" * n)
_buffers = _any_bytes | _any_bytes.map(bytearray) | _any_bytes.map(memoryview)
_names = st.sampled_from(["traceparent", "", "a" * 23, "a" * 24, "n" * 300, "é", "名前", "\ud800"])
_wide_records = st.lists(
    st.builds(
        Record,
        key=st.none() | _buffers,
        value=st.none() | _buffers,
        headers=st.lists(st.tuples(_names | st.text(max_size=8), _buffers), max_size=3).map(tuple),
        timestamp=st.sampled_from([-(2**63), 2**63 - 1, 0, -1, T0])
        | st.integers(min_value=T0 - 2**33, max_value=T0 + 2**33)
        | st.integers(min_value=T0 - 300, max_value=T0 + 300),
    ),
    min_size=1,
    max_size=8,
)


def _outcome(encode: object, records: list[Record]) -> object:
    try:
        return encode(records, producer_id=4, producer_epoch=1, base_sequence=7)  # type: ignore[operator]
    except (TypeError, ValueError, UnicodeEncodeError, cbor2.CBOREncodeError) as exc:
        return (type(exc), str(exc))


@settings(max_examples=400, deadline=None)
@given(_wide_records)
def test_the_direct_encoder_writes_what_cbor2_writes(records: list[Record]) -> None:
    """Across None and buffer keys and values, every head length (1, 2, 3 and 5 bytes),
    ASCII and other header names (a lone surrogate included), deltas of both signs and every
    width: the same bytes, or the same exception."""
    assert _outcome(encode_batch, records) == _outcome(_reference_batch, records)


@pytest.mark.parametrize(
    "bad",
    [
        Record(key="text", timestamp=T0),  # type: ignore[arg-type]
        Record(value=5, timestamp=T0),  # type: ignore[arg-type]
        Record(headers=((b"name", b"v"),), timestamp=T0),  # type: ignore[arg-type]
        Record(headers=(("name", None),), timestamp=T0),  # type: ignore[arg-type]
        Record(headers=(("name", "v"),), timestamp=T0),  # type: ignore[arg-type]
        Record(timestamp=2**63),
        Record(timestamp=1.5),  # type: ignore[arg-type]
        Record(timestamp=True),
    ],
)
def test_the_direct_encoder_refuses_what_the_reference_refuses(bad: Record) -> None:
    good = Record(value=b"v", timestamp=T0)
    for records in ([bad], [good, bad], [good, bad, Record(key="k", timestamp=T0)]):  # type: ignore[arg-type]
        outcome = _outcome(encode_batch, records)
        assert isinstance(outcome, tuple) and outcome == _outcome(_reference_batch, records)


def _big_batch(headers: tuple[tuple[str, bytes], ...] = ()) -> tuple[list[Record], bytes]:
    records = [
        Record(
            key=None if i % 3 else b"k%d" % i,
            value=b"v" * (i % 300),
            headers=headers,
            timestamp=T0 + i // 7 - (i % 5),
        )
        for i in range(1500)
    ]
    data = encode_batch(records, producer_id=1, producer_epoch=0, base_sequence=0)
    assert len(data) > batch_module._PRESCAN_ABOVE_BYTES
    return records, data


@pytest.mark.parametrize("headers", [(), (("traceparent", b"00-" + b"a" * 52),), (("é", b""),)])
def test_the_record_scan_vouches_for_what_producers_write(
    headers: tuple[tuple[str, bytes], ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large batch of the producer's shape passes the record walk, so the generic scan is
    skipped; the records decode the same either way."""
    records, data = _big_batch(headers)
    assert batch_module._scan_records(data, len(records), DEFAULT_LIMITS)
    assert cbor_module.scan(data, DEFAULT_LIMITS, HEADER_BYTES) == len(data)
    scans: list[int] = []
    generic = cbor_module.scan

    def counted(*args: object, **kwargs: object) -> int:
        scans.append(1)
        return generic(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(cbor_module, "scan", counted)
    assert decode_records(data) == records
    assert scans == []
    assert decode_record_fields(data) == [(r.timestamp, r.key, r.value, r.headers) for r in records]


@pytest.mark.parametrize(
    "limits",
    [
        Limits(max_nesting=3),
        Limits(max_array_items=3),
        Limits(max_array_items=1499),
        Limits(max_text_bytes=10),
        Limits(max_frame_items=8000),
    ],
)
def test_the_record_scan_leaves_every_limit_to_the_generic_scan(limits: Limits) -> None:
    """Where the generic scan refuses a batch for a limit, the record walk does not vouch
    for it: the generic scan runs and its error is the answer, as before."""
    records, data = _big_batch((("a-long-header-name", b"x"),))
    with pytest.raises(WireError):
        cbor_module.scan(data, limits, HEADER_BYTES)
    assert not batch_module._scan_records(data, len(records), limits)


_HEAD_BYTES = [0x00, 0x18, 0x1B, 0x40, 0x58, 0x5B, 0x60, 0x78, 0x80, 0x82, 0x84, 0x9F, 0xC2]
_HEAD_BYTES += [0xF6, 0xF9, 0xFF]
"""Initial bytes to plant: heads of every kind and width, a tag, a float, a break."""


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_the_record_scan_vouches_only_for_what_the_generic_scan_passes(
    data: st.DataObject,
) -> None:
    """Damaged records (the header left intact): whenever the walk says yes, the generic scan
    passes the bytes to their end too."""
    records, good = _big_batch((("h", b"x"),) if data.draw(st.booleans()) else ())
    batch = bytearray(good)
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        at = data.draw(st.integers(min_value=HEADER_BYTES, max_value=len(batch) - 1))
        batch[at] = data.draw(st.sampled_from(_HEAD_BYTES))
    if data.draw(st.booleans()):
        del batch[data.draw(st.integers(min_value=HEADER_BYTES + 3, max_value=len(batch))) :]
    raw = bytes(batch)
    if batch_module._scan_records(raw, len(records), DEFAULT_LIMITS):
        assert cbor_module.scan(raw, DEFAULT_LIMITS, HEADER_BYTES) == len(raw)
