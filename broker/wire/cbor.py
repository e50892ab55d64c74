"""Strict CBOR for untrusted input: `decode(buf, limits)` and `encode(obj)`.

Theory of operation
-------------------
cbor2 is permissive by default (notes/libraries.md §3): it ignores trailing bytes, accepts
duplicate map keys, indefinite lengths, arbitrary tags (bignums of megabytes, cyclic shared
references, sets, dates, regexes), and any hashable map key. A 1-byte empty array decodes to a
56-byte list and a 3-byte map to a 200-byte dict, so a byte limit on the frame does not bound
the memory a decode allocates. Decoding is therefore two passes over the buffer:

1. **Scan** (`scan`, pure Python, one pass over the item heads only): walks the RFC 8949
   item structure without building anything. String payloads are skipped by their declared
   length, so the cost is per item, not per byte: a produce request (a few dozen items around
   its batch byte strings) scans in microseconds. The scan rejects, with the offset:
   truncation and declared lengths longer than what remains; indefinite lengths and lone
   breaks; reserved additional-information values; every tag (major type 6); simple values
   other than false, true and null (floats are allowed); map keys that are not text strings;
   more than `max_nesting` containers around an item; arrays longer than `max_array_items`,
   maps with more than `max_map_items` entries, text longer than `max_text_bytes`, more than
   `max_frame_items` items in all; and bytes after the first complete item.
   When the scan passes, what cbor2 builds is bounded by the limits.
2. **Build** with cbor2's C decoder, configured strictly as a second line of defence:
   `max_depth=max_nesting`, `allow_indefinite=False`, `allow_duplicate_keys=False`,
   `strict_hashable_types=True` (text or byte-string keys only), a `tag_hook` that rejects
   every tag, and `semantic_decoders` that override every tag cbor2
   decodes natively (found by probing cbor2 6.3.0: 0-5, 25, 28-30, 35-37, 52, 54, 100, 256,
   258, 260, 261, 1004, 43000, 55799) with a rejection. Decoding runs on a `CBORDecoder`
   over `io.BytesIO`, and `tell()` must equal the length: cbor2 itself ignores trailing bytes.
   This pass also finds what the scan does not: invalid UTF-8 and duplicate keys.
   A caller that checks the whole shape of the result itself may skip the scan
   (`prescan=False`) where the input is too small for the allocation to matter.

Every rejection is `WireError(INVALID_FRAME, ...)`; no other exception leaves `decode` for any
input (a hypothesis fuzz test holds it to that). `decode` returns plain values: int, float,
bool, None, bytes, str, list and dict with str keys. Schema checks (which keys, which types)
belong to the message layer above.

`encode` is cbor2's encoder; a top-level memoryview or bytearray is turned into bytes first
(cbor2 encodes a memoryview as an array of ints). Nested values must already be bytes.
"""

from __future__ import annotations

import io
import struct
from typing import NoReturn

import cbor2

from broker.wire.errors import ErrorCode, WireError
from broker.wire.limits import DEFAULT_LIMITS, Limits

__all__ = ["BUILTIN_TAGS", "decode", "encode", "scan"]

BUILTIN_TAGS: frozenset[int] = frozenset(
    {0, 1, 2, 3, 4, 5, 25, 28, 29, 30, 35, 36, 37, 52, 54, 100, 256, 258, 260, 261, 1004}
    | {43000, 55799}
)
"""The tags cbor2 6.3.0 decodes natively (probed; see tests/unit/test_wire_cbor.py)."""


def _fail(message: str) -> NoReturn:
    raise WireError(ErrorCode.INVALID_FRAME, f"cbor: {message}")


_U16 = struct.Struct(">H").unpack_from
_U32 = struct.Struct(">I").unpack_from
_U64 = struct.Struct(">Q").unpack_from

# What an initial byte starts: a complete atom, a string, a container, or something refused.
_ATOM, _BYTES, _TEXT, _ARRAY, _MAP, _BAD = range(6)


def _head_tables() -> tuple[bytes, bytes]:
    """Per initial byte: its class, and how many argument bytes follow it (RFC 8949 §3)."""
    classes = bytearray(256)
    sizes = bytearray(256)
    for ib in range(256):
        major, info = ib >> 5, ib & 0x1F
        sizes[ib] = {24: 1, 25: 2, 26: 4, 27: 8}.get(info, 0)
        if info >= 28:  # reserved (28-30), indefinite length or break (31)
            classes[ib] = _BAD
        elif major <= 1:  # unsigned and negative integers
            classes[ib] = _ATOM
        elif major == 7:  # false, true, null, half, single and double floats only
            classes[ib] = _ATOM if info in (20, 21, 22, 25, 26, 27) else _BAD
        else:
            classes[ib] = {2: _BYTES, 3: _TEXT, 4: _ARRAY, 5: _MAP, 6: _BAD}[major]
    return bytes(classes), bytes(sizes)


_CLASS, _ARG_SIZE = _head_tables()


def _refusal(ib: int, offset: int) -> str:
    major, info = ib >> 5, ib & 0x1F
    if info == 31:
        return f"indefinite length or break at offset {offset}"
    if info >= 28:
        return f"reserved additional information {info} at offset {offset}"
    if major == 6:
        return f"tag at offset {offset}: tags are not allowed"
    return f"simple value (0x{ib:02x}) at offset {offset} is not allowed"


def scan(
    buf: bytes | bytearray | memoryview, limits: Limits = DEFAULT_LIMITS, offset: int = 0
) -> int:
    """Check the structure of the CBOR item at `offset` in `buf` (pass 1 of `decode`) and
    return the offset just after it. Does not check UTF-8 or duplicate keys, nor that the item
    fills the buffer."""
    n = len(buf)
    pos = offset
    max_depth = limits.max_nesting
    max_array = limits.max_array_items
    max_map = limits.max_map_items
    max_text = limits.max_text_bytes
    # Each item takes at least one byte, so short buffers cannot exceed the item budget.
    budget = limits.max_frame_items if n > limits.max_frame_items else -1
    # Items still to read in each open container, the innermost in `top` (0: top level).
    # Arrays count up from 1; maps are negative and count keys and values, so a key is due
    # when a map's count is even.
    stack: list[int] = []
    top = 0
    while True:
        if pos >= n:
            _fail(f"truncated: item expected at offset {pos}")
        if budget >= 0:
            budget -= 1
            if budget < 0:
                _fail(f"more than {limits.max_frame_items} items")
        ib = buf[pos]
        cls = _CLASS[ib]
        if top < 0 and not top & 1 and cls != _TEXT:
            _fail(f"map key at offset {pos} is not a text string")
        start = pos
        pos += 1
        size = _ARG_SIZE[ib]
        if cls == _ATOM:
            pos += size
            if pos > n:
                _fail(f"truncated head at offset {start}")
        elif cls == _BAD:
            _fail(_refusal(ib, start))
        else:
            if size == 0:
                arg = ib & 0x1F
            elif pos + size > n:
                _fail(f"truncated head at offset {start}")
            elif size == 1:
                arg = buf[pos]
            elif size == 2:
                arg = _U16(buf, pos)[0]
            elif size == 4:
                arg = _U32(buf, pos)[0]
            else:
                arg = _U64(buf, pos)[0]
            pos += size
            if cls == _BYTES:
                if arg > n - pos:
                    _fail(f"truncated: byte string of {arg} bytes at offset {start}")
                pos += arg
            elif cls == _TEXT:
                if arg > max_text:
                    _fail(f"text of {arg} bytes at offset {start} exceeds {max_text}")
                if arg > n - pos:
                    _fail(f"truncated: text of {arg} bytes at offset {start}")
                pos += arg
            else:
                if cls == _ARRAY:
                    if arg > max_array:
                        _fail(f"array of {arg} items at offset {start} exceeds {max_array}")
                elif arg > max_map:
                    _fail(f"map of {arg} entries at offset {start} exceeds {max_map}")
                if arg:
                    # Its items would sit inside len(stack) + 1 containers.
                    if len(stack) >= max_depth:
                        _fail(f"nesting deeper than {max_depth} at offset {start}")
                    stack.append(top)
                    top = arg if cls == _ARRAY else -2 * arg
                    continue
        # One item is complete: count it in its container, closing the finished ones.
        while True:
            if top > 1:
                top -= 1
                break
            if top < -1:
                top += 1
                break
            if not stack:
                return pos
            top = stack.pop()


class _Rejected(Exception):
    """Raised inside cbor2's hooks; cbor2 wraps it in CBORDecodeError."""


def _reject_tag(tag: cbor2.CBORTag, immutable: bool) -> NoReturn:
    raise _Rejected(f"tag {tag.tag} is not allowed")


def _reject_semantic(value: object, immutable: bool) -> NoReturn:
    raise _Rejected("tags are not allowed")


_SEMANTIC_REJECTS = {tag: _reject_semantic for tag in BUILTIN_TAGS}


def decode(
    buf: bytes | bytearray | memoryview,
    limits: Limits = DEFAULT_LIMITS,
    *,
    offset: int = 0,
    prescan: bool = True,
) -> object:
    """Decode the one CBOR item that fills `buf[offset:]` exactly; raise
    WireError(INVALID_FRAME) on anything else.

    The caller bounds len(buf) (the frame decoder by max_frame_bytes, the batch parser by
    max_batch_bytes). `prescan=False` skips pass 1, for a caller that validates the whole
    shape of the result itself and has bounded the memory a decode may take by other means
    (`batch.decode_records` does so for small batches); cbor2's strict options still apply.
    """
    data = buf if type(buf) is bytes else bytes(buf)
    if prescan:
        end = scan(data, limits, offset)
        if end != len(data):
            _fail(f"{len(data) - end} trailing bytes after the item at offset {end}")
    fp = io.BytesIO(data)
    fp.seek(offset)
    try:
        decoder = cbor2.CBORDecoder(
            fp,
            tag_hook=_reject_tag,
            semantic_decoders=_SEMANTIC_REJECTS,
            max_depth=limits.max_nesting,
            allow_indefinite=False,
            allow_duplicate_keys=False,
            strict_hashable_types=True,
        )
        value = decoder.decode()
    except cbor2.CBORDecodeError as exc:
        cause = exc.__cause__
        detail = str(cause) if isinstance(cause, _Rejected) else str(exc)
        raise WireError(ErrorCode.INVALID_FRAME, f"cbor: {detail}") from exc
    if fp.tell() != len(data):
        _fail(f"{len(data) - fp.tell()} trailing bytes after the item at offset {fp.tell()}")
    return value


def encode(obj: object) -> bytes:
    """CBOR bytes of `obj`; a top-level memoryview or bytearray becomes a byte string.

    Nested buffers must already be `bytes`: cbor2 encodes a memoryview as an array of ints,
    and converting nested values on every call (cbor2's `encoders=`) doubles the cost of
    encoding a produce request. The typed messages and `encode_batch` convert their byte
    fields themselves.
    """
    if type(obj) is memoryview or type(obj) is bytearray:
        obj = bytes(obj)
    return cbor2.dumps(obj)
