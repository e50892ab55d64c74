"""Strict CBOR: every bad input of notes/libraries.md §3 is a WireError, and fuzzing finds no other
exception."""

from __future__ import annotations

import struct

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.wire import cbor
from broker.wire.errors import ErrorCode, WireError
from broker.wire.limits import DEFAULT_LIMITS, Limits


def _head(major: int, n: int) -> bytes:
    """An RFC 8949 item head with the shortest argument encoding."""
    if n < 24:
        return bytes([major << 5 | n])
    for info, fmt, bound in ((24, ">B", 1 << 8), (25, ">H", 1 << 16), (26, ">I", 1 << 32)):
        if n < bound:
            return bytes([major << 5 | info]) + struct.pack(fmt, n)
    return bytes([major << 5 | 27]) + struct.pack(">Q", n)


def _tag(tag: int, item: bytes) -> bytes:
    return _head(6, tag) + item


def _rejects(data: bytes, limits: Limits = DEFAULT_LIMITS, fragment: str = "") -> WireError:
    with pytest.raises(WireError) as info:
        cbor.decode(data, limits)
    assert info.value.code is ErrorCode.INVALID_FRAME
    assert fragment in info.value.message, info.value.message
    return info.value


GOOD = {"a": 1, "b": [b"x", None, True, False, -5, 2**64 - 1, -(2**64), 1.5], "c": {"d": "é"}}
FRAME = cbor.encode(GOOD)

# (name, bytes, a fragment of the message). Every row comes from libraries.md §3.
BAD: list[tuple[str, bytes, str]] = [
    ("empty", b"", "truncated"),
    ("truncated by 5", FRAME[:-5], "truncated"),
    ("truncated to half", FRAME[: len(FRAME) // 2], "truncated"),
    ("bytes declaring 2**31", _head(2, 2**31) + b"0123456789", "truncated"),
    ("bytes declaring 2**62", _head(2, 2**62) + b"0123456789", "truncated"),
    ("bytes declaring 2**64-1", _head(2, 2**64 - 1) + b"0123456789", "truncated"),
    ("text declaring 2**31", _head(3, 2**31) + b"0123456789", "exceeds"),
    ("text declaring 2**64-1", _head(3, 2**64 - 1) + b"0123456789", "exceeds"),
    ("array declaring 2**62", _head(4, 2**62) + b"\x01\x02", "exceeds"),
    ("array declaring 2**32-1", _head(4, 2**32 - 1) + b"\x01\x02", "exceeds"),
    ("array declaring 2**30", _head(4, 2**30) + b"\x01\x02", "exceeds"),
    ("array declaring 3, holding 2", _head(4, 3) + b"\x01\x02", "truncated"),
    ("map declaring 2**62", _head(5, 2**62) + b"\x61a\x01", "exceeds"),
    ("map declaring 2**32-1", _head(5, 2**32 - 1) + b"\x61a\x01", "exceeds"),
    ("arrays nested 1000 deep", b"\x81" * 1000 + b"\x01", "nesting"),
    ("arrays nested 100000 deep", b"\x81" * 100_000 + b"\x01", "nesting"),
    ("maps nested 1000 deep", b"\xa1\x61a" * 1000 + b"\x01", "nesting"),
    ("tags nested 100000 deep", b"\xd8\x63" * 100_000 + b"\x01", "tag"),
    ("indefinite array never closed", b"\x9f\x01\x02", "indefinite"),
    ("indefinite array closed", b"\x9f\x01\xff", "indefinite"),
    ("indefinite map", b"\xbf\x61a\x01\xff", "indefinite"),
    ("indefinite bytes", b"\x5f\x41a\xff", "indefinite"),
    ("lone break", b"\xff", "break"),
    ("reserved additional information", b"\x1c", "reserved"),
    ("invalid UTF-8", b"\x62\xc3\x28", ""),
    ("invalid UTF-8 in a key", b"\xa1\x62\xc3\x28\x01", ""),
    ("trailing bytes 01 02 03", b"\x01\x02\x03", "trailing"),
    ("trailing garbage after a map", cbor2.dumps({"a": 1}) + b"garbage!", "trailing"),
    ("duplicate text keys", b"\xa2\x61a\x01\x61a\x02", "uplicate"),
    ("integer map key", b"\xa1\x01\x02", "not a text string"),
    ("array as map key", b"\xa1\x81\x01\x02", "not a text string"),
    ("bytes map key", b"\xa1\x41a\x02", "not a text string"),
    ("bignum tag 2", _tag(2, _head(2, 16) + b"\xff" * 16), "tag"),
    ("negative bignum tag 3", _tag(3, b"\x41\x01"), "tag"),
    ("decimal tag 4 with exponent -10**18", _tag(4, cbor2.dumps([-(10**18), 1])), "tag"),
    ("bigfloat tag 5", _tag(5, cbor2.dumps([1, 1])), "tag"),
    ("datetime tag 0", _tag(0, cbor2.dumps("not a date")), "tag"),
    ("epoch tag 1 of 2**63", _tag(1, _head(0, 2**63)), "tag"),
    ("shared reference tags 28/29 (a cycle)", bytes([0xD8, 28, 0x81, 0xD8, 29, 0]), "tag"),
    ("rational tag 30 with denominator 0", _tag(30, cbor2.dumps([1, 0])), "tag"),
    ("regex tag 35", _tag(35, cbor2.dumps("(")), "tag"),
    ("UUID tag 37 of bad length", _tag(37, b"\x41\x00"), "tag"),
    ("set tag 258 of arrays", _tag(258, cbor2.dumps([[1]])), "tag"),
    ("unknown tag 99999", _tag(99999, b"\x01"), "tag"),
    ("self-describe tag 55799", _tag(55799, b"\x01"), "tag"),
    ("undefined", b"\xf7", "simple value"),
    ("simple value 16", b"\xf0", "simple value"),
    ("one-byte simple value", b"\xf8\x20", "simple value"),
]


@pytest.mark.parametrize(("name", "data", "fragment"), BAD, ids=[row[0] for row in BAD])
def test_bad_input_is_a_wire_error(name: str, data: bytes, fragment: str) -> None:
    _rejects(data, fragment=fragment)


def test_bignum_tag_with_a_10_mb_payload_is_refused_at_its_head() -> None:
    data = _tag(2, _head(2, 10_000_000) + b"\x01" * 10_000_000)
    error = _rejects(data, fragment="tag")
    assert "offset 0" in error.message


def test_good_values_round_trip() -> None:
    assert cbor.decode(FRAME) == GOOD
    assert cbor.decode(bytearray(FRAME)) == GOOD
    assert cbor.decode(memoryview(FRAME)) == GOOD


def test_decode_at_an_offset() -> None:
    assert cbor.decode(b"junk" + FRAME, offset=4) == GOOD
    _rejects(b"junk" + FRAME + b"\x00", fragment="trailing")


def test_encode_turns_a_top_level_buffer_into_a_byte_string() -> None:
    # cbor2 alone encodes a memoryview as an array of ints (82 18 61 18 62).
    assert cbor2.dumps(memoryview(b"ab")) == bytes.fromhex("8218611862")
    assert cbor.encode(memoryview(b"ab")) == b"\x42ab"
    assert cbor.encode(bytearray(b"ab")) == b"\x42ab"


def test_limits_on_sizes_and_counts() -> None:
    tight = Limits(max_array_items=3, max_map_items=2, max_text_bytes=4, max_nesting=2)
    assert cbor.decode(cbor.encode([1, 2, 3]), tight) == [1, 2, 3]
    _rejects(cbor.encode([1, 2, 3, 4]), tight, "array of 4 items")
    assert cbor.decode(cbor.encode({"a": 1, "b": 2}), tight) == {"a": 1, "b": 2}
    _rejects(cbor.encode({"a": 1, "b": 2, "c": 3}), tight, "map of 3 entries")
    assert cbor.decode(cbor.encode("abcd"), tight) == "abcd"
    _rejects(cbor.encode("abcde"), tight, "text of 5 bytes")
    _rejects(cbor.encode("é" * 3), tight, "text of 6 bytes")  # UTF-8 bytes, not characters
    assert cbor.decode(cbor.encode([[1]]), tight) == [[1]]
    _rejects(cbor.encode([[[1]]]), tight, "nesting")


def test_the_item_budget_bounds_memory_for_large_frames() -> None:
    limits = Limits(max_frame_items=1000)
    # 2000 empty arrays (1 byte each) would build 2000 lists of 56 bytes from 2 KB of input.
    many = _head(4, 2000) + b"\x80" * 2000
    _rejects(many, Limits(max_frame_items=1000, max_array_items=5000), "more than 1000 items")
    assert cbor.decode(_head(4, 500) + b"\x80" * 500, limits) == [[]] * 500


@given(st.integers(min_value=0, max_value=6), st.integers(min_value=0, max_value=5))
def test_scan_depth_rule_matches_cbor2_max_depth(depth: int, max_depth: int) -> None:
    value: object = 1
    for _ in range(depth):
        value = [value]
    for empty_last in (False, True):
        data = cbor.encode(value if not empty_last else _wrap_empty(depth))
        try:
            cbor2.loads(data, max_depth=max_depth)
            expected = True
        except cbor2.CBORDecodeError:
            expected = False
        try:
            cbor.scan(data, Limits(max_nesting=max(max_depth, 1)))
            got = True
        except WireError:
            got = False
        if max_depth >= 1:
            assert got == expected, (depth, max_depth, empty_last)


def _wrap_empty(depth: int) -> object:
    value: object = []
    for _ in range(depth - 1):
        value = [value]
    return value


def test_builtin_tags_table_matches_cbor2() -> None:
    """The tags cbor2 decodes natively (so its tag_hook never sees them) are all overridden.
    If a cbor2 upgrade adds one, this fails and BUILTIN_TAGS must grow."""

    class Hooked(Exception):
        pass

    def hook(tag: cbor2.CBORTag, immutable: bool) -> object:
        raise Hooked

    payloads = [b"\x00", b"\x50" + b"\x00" * 16, cbor2.dumps("2020-01-01T00:00:00Z")]
    payloads += [cbor2.dumps([1, 2]), cbor2.dumps({"a": 1}), cbor2.dumps(1.5)]
    native = set()
    for tag in [*range(0, 300), 1004, 1005, 43000, 43001, 55799, 55800]:
        for payload in payloads:
            try:
                cbor2.loads(_tag(tag, payload), tag_hook=hook)
            except cbor2.CBORDecodeError as exc:
                if isinstance(exc.__cause__, Hooked):
                    break
        else:
            native.add(tag)
    assert native == set(cbor.BUILTIN_TAGS)


@pytest.mark.parametrize("tag", sorted(cbor.BUILTIN_TAGS))
def test_cbor2_line_of_defence_rejects_every_builtin_tag(tag: int) -> None:
    """With the scan skipped, cbor2's own configuration still refuses every tag."""
    for payload in (b"\x00", b"\x41\x00", cbor2.dumps([1, 2]), cbor2.dumps("x")):
        with pytest.raises(WireError):
            cbor.decode(_tag(tag, payload), prescan=False)


def test_cbor2_line_of_defence_without_the_scan() -> None:
    for data in (
        b"\x01\x02",
        b"\xa2\x61a\x01\x61a\x02",
        b"\x9f\x01\xff",
        b"\x81" * 40 + b"\x01",
        _tag(99999, b"\x01"),
    ):
        with pytest.raises(WireError):
            cbor.decode(data, prescan=False)


# ---------------------------------------------------------------------------- fuzzing

_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64 - 1)
    | st.binary(max_size=40)
    | st.text(max_size=20)
    | st.floats(allow_nan=False)
)
_values = st.recursive(
    _leaves,
    lambda inner: (
        st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner, max_size=6)
    ),
    max_leaves=30,
)


@settings(max_examples=200, deadline=1000)
@given(_values)
def test_fuzz_valid_values_round_trip(value: object) -> None:
    assert cbor.decode(cbor.encode(value)) == value


@settings(max_examples=400, deadline=1000)
@given(st.binary(max_size=200))
def test_fuzz_random_bytes_raise_only_wire_errors(data: bytes) -> None:
    try:
        cbor.decode(data)
    except WireError as exc:
        assert exc.code is ErrorCode.INVALID_FRAME


@settings(max_examples=300, deadline=1000)
@given(_values, st.data())
def test_fuzz_mutated_frames_raise_only_wire_errors(value: object, data: st.DataObject) -> None:
    frame = bytearray(cbor.encode(value))
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        at = data.draw(st.integers(min_value=0, max_value=len(frame)))
        if op == "flip" and at < len(frame):
            frame[at] ^= 1 << data.draw(st.integers(min_value=0, max_value=7))
        elif op == "cut":
            del frame[at:]
        else:
            frame[at:at] = data.draw(st.binary(min_size=1, max_size=9))
    try:
        cbor.decode(bytes(frame))
    except WireError as exc:
        assert exc.code is ErrorCode.INVALID_FRAME
