"""On-disk encodings: keys, log entries, configurations, hard states, snapshot metadata.

Keys are big-endian so that RocksDB's bytewise order is numeric order:
- group key: group_id u64;
- indexed key: group_id u64 + index u64 (raft_log, raft_confs, offsets);
- snapshot keys: group_id u64 + tag u8 (SNAP_META, SNAP_DATA).
`group_end(g)` sorts after every key of group g and before every key of group g + 1.

A log entry value is `term u64 | kind u8 | crc32 u32 | payload`, the CRC covering term, kind
and payload; an entry whose payload lives in a payload segment (payloads.py) has its kind's
high bit set and, instead of the payload, `segment u64 | position u64 | length u32`, the CRC
still covering term, kind (high bit clear) and the payload itself. `payloads` maps
(segment u64, position u64) -> (group u64, index u64) of the entry whose payload is there.
NORMAL and NOOP payloads are the entry's data; a CONF payload is the CBOR array
[voters, learners] (with the entry's data as a third element when it is not empty). Every
other record the store owns is sealed: `crc32 u32 | body`. Members are encoded by an injected
MemberCodec; member lists are sorted by their CBOR encoding, so equal configurations encode to
equal bytes.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable
from typing import Protocol

import cbor2

from broker.core.raft import ConfState, Entry, EntryKind, HardState, MemberId, SnapshotMeta
from broker.runtime.store.errors import CorruptEntryError, CorruptRecordError, StoreError

CF_LOG = "raft_log"
CF_STATE = "raft_state"
CF_CONFS = "raft_confs"
CF_SNAPSHOTS = "snapshots"
CF_APPLY = "apply"
CF_OFFSETS = "offsets"
CF_META = "meta"
CF_PAYLOADS = "payloads"
COLUMN_FAMILIES = (
    CF_LOG,
    CF_STATE,
    CF_CONFS,
    CF_SNAPSHOTS,
    CF_APPLY,
    CF_OFFSETS,
    CF_META,
    CF_PAYLOADS,
)

MAX_U64 = (1 << 64) - 1
U64 = struct.Struct(">Q")
KEY2 = struct.Struct(">QQ")
SNAP_KEY = struct.Struct(">QB")
_TERM_KIND = struct.Struct(">QB")
_CRC = struct.Struct(">I")
ENTRY_HEADER_BYTES = 13
EXTERNAL = 0x80
"""The kind byte's flag for an entry whose payload is in a payload segment."""
POINTER = struct.Struct(">QQI")
"""An external entry's payload: segment, position, length."""

SNAP_META = 0
SNAP_DATA = 1

_KINDS = {k.value: k for k in EntryKind}


def check_u64(value: int, what: str) -> None:
    if not 0 <= value <= MAX_U64:
        raise StoreError(f"{what} {value} is not an unsigned 64-bit integer")


def group_key(group: int) -> bytes:
    return U64.pack(group)


def indexed_key(group: int, index: int) -> bytes:
    return KEY2.pack(group, index)


def group_end(group: int) -> bytes:
    """Sorts after every key of `group` (16 or 9 bytes long) and before group + 1's keys."""
    return U64.pack(group) + b"\xff" * 9


def index_of(key: bytes) -> int:
    index: int = KEY2.unpack(key)[1]
    return index


class MemberCodec(Protocol):
    """Turns an opaque member id into a CBOR-encodable value and back (must round-trip)."""

    def encode(self, member: MemberId) -> object: ...

    def decode(self, value: object) -> MemberId: ...


class IntTupleCodec:
    """Members that are ints (the simulator) or int tuples (the broker's (node, incarnation))."""

    def encode(self, member: MemberId) -> object:
        if isinstance(member, int) and not isinstance(member, bool):
            return member
        if isinstance(member, tuple) and all(
            isinstance(x, int) and not isinstance(x, bool) for x in member
        ):
            return list(member)
        raise StoreError(f"member id {member!r} is neither an int nor a tuple of ints")

    def decode(self, value: object) -> MemberId:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, list) and all(
            isinstance(x, int) and not isinstance(x, bool) for x in value
        ):
            return tuple(value)
        raise ValueError(f"not an encoded member: {value!r}")


DEFAULT_MEMBER_CODEC: MemberCodec = IntTupleCodec()


# -- sealed records ---------------------------------------------------------------------------


def seal(body: bytes) -> bytes:
    return _CRC.pack(zlib.crc32(body)) + body


def unseal(value: bytes, what: str) -> bytes:
    if len(value) < 4:
        raise CorruptRecordError(what, "truncated")
    body = value[4:]
    if zlib.crc32(body) != _CRC.unpack_from(value)[0]:
        raise CorruptRecordError(what)
    return body


# -- configurations ---------------------------------------------------------------------------


def _members(codec: MemberCodec, members: Iterable[MemberId]) -> list[object]:
    encoded = [codec.encode(m) for m in members]
    encoded.sort(key=cbor2.dumps)
    return encoded


def _conf_from(codec: MemberCodec, voters: object, learners: object) -> ConfState:
    if not isinstance(voters, list) or not isinstance(learners, list):
        raise ValueError("configuration members must be lists")
    return ConfState(
        frozenset(codec.decode(v) for v in voters), frozenset(codec.decode(v) for v in learners)
    )


def encode_conf_record(codec: MemberCodec, term: int, conf: ConfState) -> bytes:
    """raft_confs value: the configuration in effect at the key's index, and that index's term."""
    body = [term, _members(codec, conf.voters), _members(codec, conf.learners)]
    return seal(cbor2.dumps(body))


def decode_conf_record(codec: MemberCodec, value: bytes, what: str) -> tuple[int, ConfState]:
    body = unseal(value, what)
    try:
        term, voters, learners = cbor2.loads(body)
        if not isinstance(term, int):
            raise ValueError("term must be an int")
        return term, _conf_from(codec, voters, learners)
    except (ValueError, TypeError, AssertionError, cbor2.CBORError) as exc:
        raise CorruptRecordError(what, f"undecodable: {exc}") from exc


# -- log entries ------------------------------------------------------------------------------


def encode_entry(codec: MemberCodec, e: Entry) -> bytes:
    if e.kind == EntryKind.CONF:
        if e.conf is None:
            raise StoreError(f"CONF entry {e.index} has no configuration")
        body: list[object] = [_members(codec, e.conf.voters), _members(codec, e.conf.learners)]
        if e.data:
            body.append(bytes(e.data))
        payload = cbor2.dumps(body)
    else:
        payload = e.data
    head = _TERM_KIND.pack(e.term, e.kind)
    return head + _CRC.pack(zlib.crc32(payload, zlib.crc32(head))) + payload


def encode_external_entry(e: Entry, segment: int, position: int) -> bytes:
    """The record of a NORMAL or NOOP entry whose payload was staged at `position` of
    `segment` (the caller writes the payload there before this record)."""
    head = _TERM_KIND.pack(e.term, e.kind)
    crc = zlib.crc32(e.data, zlib.crc32(head))
    return (
        _TERM_KIND.pack(e.term, e.kind | EXTERNAL)
        + _CRC.pack(crc)
        + POINTER.pack(segment, position, len(e.data))
    )


def external_pointer(value: bytes) -> tuple[int, int, int] | None:
    """(segment, position, length) of an external entry's record; None for any other."""
    if len(value) != ENTRY_HEADER_BYTES + POINTER.size or not value[8] & EXTERNAL:
        return None
    segment, position, length = POINTER.unpack_from(value, ENTRY_HEADER_BYTES)
    return segment, position, length


class PayloadReader(Protocol):
    def __call__(self, segment: int, position: int, length: int) -> bytes: ...


def decode_entry(
    codec: MemberCodec,
    group: int,
    index: int,
    value: bytes,
    read_payload: PayloadReader | None = None,
) -> Entry:
    """Decode and CRC-check one entry (an external one's payload read with `read_payload`);
    raise CorruptEntryError(group, index) on any defect."""
    if len(value) < ENTRY_HEADER_BYTES:
        raise CorruptEntryError(group, index, "truncated")
    term, kind_value = _TERM_KIND.unpack_from(value)
    if kind_value & EXTERNAL:
        pointer = external_pointer(value)
        if pointer is None or read_payload is None:
            raise CorruptEntryError(group, index, "bad payload pointer")
        segment, position, length = pointer
        try:
            payload = read_payload(segment, position, length)
        except OSError as exc:
            raise CorruptEntryError(group, index, f"payload unreadable: {exc}") from exc
        if len(payload) != length:
            raise CorruptEntryError(group, index, "payload truncated")
        kind_value &= ~EXTERNAL
        crc = zlib.crc32(payload, zlib.crc32(_TERM_KIND.pack(term, kind_value)))
    else:
        payload = value[ENTRY_HEADER_BYTES:]
        crc = zlib.crc32(payload, zlib.crc32(memoryview(value)[:9]))
    if crc != _CRC.unpack_from(value, 9)[0]:
        raise CorruptEntryError(group, index)
    kind = _KINDS.get(kind_value)
    if kind is None:
        raise CorruptEntryError(group, index, f"unknown kind {kind_value}")
    if kind != EntryKind.CONF:
        return Entry(index, term, kind, payload)
    try:
        body = cbor2.loads(payload)
        if not isinstance(body, list) or len(body) not in (2, 3):
            raise ValueError("a CONF payload is [voters, learners] or [voters, learners, data]")
        data = body[2] if len(body) == 3 else b""
        if not isinstance(data, bytes):
            raise ValueError("CONF data must be bytes")
        conf = _conf_from(codec, body[0], body[1])
    except (ValueError, TypeError, AssertionError, cbor2.CBORError) as exc:
        raise CorruptEntryError(group, index, f"undecodable configuration: {exc}") from exc
    return Entry(index, term, kind, data, conf)


# -- hard state and snapshot metadata ---------------------------------------------------------


def encode_hard_state(codec: MemberCodec, hs: HardState) -> bytes:
    """Sealed `term u64 | commit u64 | vote` (the vote's CBOR, absent when there is none)."""
    body = KEY2.pack(hs.term, hs.commit)
    if hs.vote is not None:
        body += cbor2.dumps(codec.encode(hs.vote))
    return seal(body)


def decode_hard_state(codec: MemberCodec, value: bytes, what: str) -> HardState:
    body = unseal(value, what)
    if len(body) < KEY2.size:
        raise CorruptRecordError(what, "truncated")
    term, commit = KEY2.unpack_from(body)
    if len(body) == KEY2.size:
        return HardState(term, None, commit)
    try:
        vote = codec.decode(cbor2.loads(body[KEY2.size :]))
    except (ValueError, TypeError, cbor2.CBORError) as exc:
        raise CorruptRecordError(what, f"undecodable vote: {exc}") from exc
    return HardState(term, vote, commit)


def encode_snapshot_meta(codec: MemberCodec, meta: SnapshotMeta) -> bytes:
    body = [
        meta.index,
        meta.term,
        _members(codec, meta.conf.voters),
        _members(codec, meta.conf.learners),
    ]
    return seal(cbor2.dumps(body))


def decode_snapshot_meta(codec: MemberCodec, value: bytes, what: str) -> SnapshotMeta:
    body = unseal(value, what)
    try:
        index, term, voters, learners = cbor2.loads(body)
        if not isinstance(index, int) or not isinstance(term, int):
            raise ValueError("index and term must be ints")
        return SnapshotMeta(index, term, _conf_from(codec, voters, learners))
    except (ValueError, TypeError, AssertionError, cbor2.CBORError) as exc:
        raise CorruptRecordError(what, f"undecodable: {exc}") from exc
