"""The peer protocol's pure codec: Raft messages of many groups, and controller RPCs, as CBOR.

A peer frame is a CBOR array `[kind, body]`:
- HELLO / HELLO_OK: the handshake (cluster id, node id, incarnation, peer address); a peer of
  another cluster is refused, so a leftover broker cannot join;
- RAFT: `[[group_id, message], ...]`: every message a round has for one peer, in one frame
  (heartbeats of all groups included);
- HEARTBEAT / HEARTBEAT_OK: a broker to the controller: its registration, liveness and the
  partition leaders it holds; the answer tells it whether it is registered and fenced.

Messages are arrays whose first item names the type; members are `[node_id, incarnation]`;
entries `[index, term, kind, data, conf]`; configurations `[[voters], [learners]]`. Decoding
peer input is as strict as client input: shapes and types are checked, and anything wrong
raises `PeerProtocolError` (the connection is dropped; Raft tolerates lost messages), never
another exception. A decoded Raft message also holds what the Raft core takes for granted
of any message: terms and indices in [0, MAX_INDEX], no entry term above the message's
term, entries numbered from `prev_index + 1` in order with terms that never decrease, a
configuration entry carrying a configuration (and only such an entry), no member both
voter and learner (also in a snapshot's vouched configuration), a snapshot chunk inside the
snapshot, a snapshot refusal at offset 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from broker.core.raft import ConfState, Entry, EntryKind
from broker.core.raft.types import (
    AppendEntries,
    AppendResponse,
    ConfVouch,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    ReadIndexRequest,
    ReadIndexResponse,
    RequestVote,
    SnapshotMeta,
    SnapshotResponse,
    TimeoutNow,
    TransferLeader,
    VoteResponse,
)
from broker.wire import cbor
from broker.wire.errors import WireError
from broker.wire.limits import Limits

Member = tuple[int, int]

HELLO = 0
HELLO_OK = 1
RAFT = 2
HEARTBEAT = 3
HEARTBEAT_OK = 4
REJECT = 5

PEER_FRAME_BYTES = 64 << 20
"""A frame's bound; senders split a round's messages for one peer below it."""

PEER_LIMITS = Limits(
    max_frame_bytes=PEER_FRAME_BYTES,
    max_array_items=1_000_000,
    max_frame_items=20_000_000,
    max_nesting=16,
)
"""Peers are authenticated by the handshake, but still bounded."""


MAX_INDEX = (1 << 62) - 1
"""Largest term, index or offset a peer may send (room to count up in 64-bit storage)."""
MAX_TERM = MAX_INDEX - (1 << 32)
"""Highest term a broker takes from a peer's message (see `accepted`)."""
MAX_NODE_ID = (1 << 31) - 1
MAX_INCARNATION = (1 << 64) - 1


class PeerProtocolError(Exception):
    """A peer sent something this code cannot accept."""


@dataclass(frozen=True, slots=True)
class Hello:
    cluster_id: str | None
    node_id: int
    incarnation: int
    peer_address: str
    bootstrapped: bool
    """Whether this broker already holds a metadata group (joined or created a cluster)."""


@dataclass(frozen=True, slots=True)
class BrokerHeartbeat:
    """A broker's periodic report to the controller."""

    node_id: int
    incarnation: int
    host: str
    port: int
    peer_host: str
    peer_port: int
    rack: str | None
    leaders: tuple[tuple[int, int, int], ...]
    """(group id, term, leader node id) of every partition group this broker leads."""
    caught_up: tuple[tuple[int, tuple[int, ...], int], ...] = ()
    """(group id, node ids of the replicas that have every committed entry, commit lag) of
    every group it leads; the lag is how many committed entries the slowest replica lacks."""


@dataclass(frozen=True, slots=True)
class HeartbeatAck:
    registered: bool
    controller: int | None


# -- members, entries, configurations ---------------------------------------------------------


def _member(m: object) -> list[int]:
    assert isinstance(m, tuple) and len(m) == 2
    return [int(m[0]), int(m[1])]


def _read_member(v: object) -> Member:
    if not (isinstance(v, list) and len(v) == 2):
        raise PeerProtocolError(f"bad member {v!r}")
    return (_node(v[0]), _incarnation(v[1]))


def _conf(c: ConfState) -> list[list[list[int]]]:
    return [sorted(_member(m) for m in c.voters), sorted(_member(m) for m in c.learners)]


def _read_conf(v: object) -> ConfState:
    if not (isinstance(v, list) and len(v) == 2 and all(isinstance(x, list) for x in v)):
        raise PeerProtocolError("bad configuration")
    voters = frozenset(_read_member(m) for m in v[0])
    learners = frozenset(_read_member(m) for m in v[1])
    if voters & learners:
        raise PeerProtocolError("a member is both voter and learner")
    return ConfState(voters, learners)


def _entry(e: Entry) -> list[object]:
    return [e.index, e.term, int(e.kind), e.data, None if e.conf is None else _conf(e.conf)]


def _read_entry(v: object) -> Entry:
    if not (isinstance(v, list) and len(v) == 5):
        raise PeerProtocolError("bad entry")
    index, term, kind, data, conf = v
    if not isinstance(data, bytes):
        raise PeerProtocolError("entry data must be bytes")
    if type(kind) is not int or kind not in _ENTRY_KINDS:
        raise PeerProtocolError(f"bad entry kind {kind!r}")
    k = EntryKind(kind)
    if (k == EntryKind.CONF) != (conf is not None):
        raise PeerProtocolError("a configuration entry, and only one, carries a configuration")
    return Entry(_count(index), _count(term), k, data, None if conf is None else _read_conf(conf))


_ENTRY_KINDS = frozenset(int(k) for k in EntryKind)


def _meta(m: SnapshotMeta) -> list[object]:
    return [m.index, m.term, _conf(m.conf)]


def _read_meta(v: object) -> SnapshotMeta:
    if not (isinstance(v, list) and len(v) == 3):
        raise PeerProtocolError("bad snapshot meta")
    return SnapshotMeta(_count(v[0]), _count(v[1]), _read_conf(v[2]))


def _vouch(v: ConfVouch | None) -> list[object] | None:
    return None if v is None else [v.index, _conf(v.conf)]


def _read_vouch(v: object) -> ConfVouch | None:
    if v is None:
        return None
    if not (isinstance(v, list) and len(v) == 2):
        raise PeerProtocolError("bad configuration vouch")
    return ConfVouch(_count(v[0]), _read_conf(v[1]))


def _int(v: object) -> int:
    if type(v) is not int:
        raise PeerProtocolError(f"expected an int, got {type(v).__name__}")
    return v


def _count(v: object) -> int:
    """A term, index, offset or size: an int in [0, MAX_INDEX]."""
    if type(v) is not int or not 0 <= v <= MAX_INDEX:
        raise PeerProtocolError(f"expected an int in [0, {MAX_INDEX}], got {v!r}")
    return v


def _node(v: object) -> int:
    if type(v) is not int or not 0 <= v <= MAX_NODE_ID:
        raise PeerProtocolError(f"expected a node id, got {v!r}")
    return v


def _incarnation(v: object) -> int:
    if type(v) is not int or not 0 <= v <= MAX_INCARNATION:
        raise PeerProtocolError(f"expected an incarnation, got {v!r}")
    return v


def _port(v: object) -> int:
    if type(v) is not int or not 0 <= v <= 65535:
        raise PeerProtocolError(f"expected a port, got {v!r}")
    return v


MAX_NAME = 255


def _name(v: object, what: str) -> str:
    """A host or rack a broker registers: 1..MAX_NAME characters (METADATA answers carry
    them to every client, which refuses an empty host)."""
    if not isinstance(v, str) or not 0 < len(v) <= MAX_NAME:
        raise PeerProtocolError(f"{what} must be 1..{MAX_NAME} characters of text")
    return v


def _list(v: object) -> list[object]:
    if not isinstance(v, list):
        raise PeerProtocolError(f"expected an array, got {type(v).__name__}")
    return v


def _rows(v: object, width: int) -> list[list[object]]:
    """An array of arrays of `width` items each."""
    rows = _list(v)
    for row in rows:
        if not isinstance(row, list) or len(row) != width:
            raise PeerProtocolError(f"expected arrays of {width} items")
    return rows  # type: ignore[return-value]


def _term_at_most(term: int, limit: int, what: str) -> None:
    if term > limit:
        raise PeerProtocolError(f"{what} {term} is above the message's term {limit}")


def _bool(v: object) -> bool:
    if type(v) is not bool:
        raise PeerProtocolError(f"expected a bool, got {type(v).__name__}")
    return v


def _opt_bytes(v: object) -> bytes | None:
    if v is None or isinstance(v, bytes):
        return v
    raise PeerProtocolError("expected bytes or null")


# -- Raft messages ----------------------------------------------------------------------------

_TAGS: dict[type, int] = {
    AppendEntries: 0,
    AppendResponse: 1,
    Heartbeat: 2,
    HeartbeatResponse: 3,
    RequestVote: 4,
    VoteResponse: 5,
    InstallSnapshot: 6,
    SnapshotResponse: 7,
    TimeoutNow: 8,
    ReadIndexRequest: 9,
    ReadIndexResponse: 10,
    TransferLeader: 11,
}


def encode_message(m: Message) -> list[object]:
    head: list[object] = [_TAGS[type(m)], _member(m.src), _member(m.dst), m.term]
    if isinstance(m, AppendEntries):
        return [*head, m.prev_index, m.prev_term, [_entry(e) for e in m.entries], m.commit]
    if isinstance(m, AppendResponse):
        return [*head, m.index, m.reject, m.hint_index, m.hint_term]
    if isinstance(m, Heartbeat):
        return [*head, m.commit, m.context]
    if isinstance(m, HeartbeatResponse):
        return [*head, m.context]
    if isinstance(m, RequestVote):
        return [*head, m.last_index, m.last_term, m.pre_vote, m.transfer]
    if isinstance(m, VoteResponse):
        return [*head, m.pre_vote, m.reject]
    if isinstance(m, InstallSnapshot):
        return [*head, _meta(m.meta), m.offset, m.data, m.total_bytes, _vouch(m.vouch)]
    if isinstance(m, SnapshotResponse):
        return [*head, m.index, m.next_offset, m.reject]
    if isinstance(m, TimeoutNow):
        return head
    if isinstance(m, ReadIndexRequest):
        return [*head, m.context]
    if isinstance(m, ReadIndexResponse):
        return [*head, m.context, m.index]
    assert isinstance(m, TransferLeader)
    return [*head, _member(m.target)]


def decode_message(v: object) -> Message:
    if not (isinstance(v, list) and len(v) >= 4):
        raise PeerProtocolError("bad message")
    tag, src, dst, term, *rest = v
    s, d, t = _read_member(src), _read_member(dst), _count(term)
    try:
        return _DECODERS[_int(tag)](s, d, t, rest)
    except KeyError:
        raise PeerProtocolError(f"unknown message type {tag!r}") from None
    except (ValueError, TypeError) as e:
        raise PeerProtocolError(f"bad message fields: {e}") from None


def _arity(rest: Sequence[object], n: int) -> None:
    if len(rest) != n:
        raise PeerProtocolError(f"expected {n} fields, got {len(rest)}")


def _d_append(s: Member, d: Member, t: int, r: list[Any]) -> Message:
    _arity(r, 4)
    if not isinstance(r[2], list):
        raise PeerProtocolError("entries must be a list")
    prev_index, prev_term = _count(r[0]), _count(r[1])
    _term_at_most(prev_term, t, "previous term")
    entries = [_read_entry(e) for e in r[2]]
    last_term = prev_term
    for i, e in enumerate(entries):
        if e.index != prev_index + 1 + i:
            raise PeerProtocolError("entries must follow prev_index in order")
        if not last_term <= e.term <= t:
            raise PeerProtocolError("entry terms must not decrease nor pass the message's")
        last_term = e.term
    return AppendEntries(s, d, t, prev_index, prev_term, entries, _count(r[3]))


def _d_append_resp(s: Member, d: Member, t: int, r: list[Any]) -> Message:
    _arity(r, 4)
    return AppendResponse(s, d, t, _count(r[0]), _bool(r[1]), _count(r[2]), _count(r[3]))


def _d_heartbeat(s: Member, d: Member, t: int, r: list[Any]) -> Message:
    _arity(r, 2)
    return Heartbeat(s, d, t, _count(r[0]), _opt_bytes(r[1]))


def _d_heartbeat_resp(s: Member, d: Member, t: int, r: list[Any]) -> Message:
    _arity(r, 1)
    return HeartbeatResponse(s, d, t, _opt_bytes(r[0]))


def _d_vote(s: Member, d: Member, t: int, r: list[Any]) -> Message:
    _arity(r, 4)
    last_index, last_term = _count(r[0]), _count(r[1])
    _term_at_most(last_term, t, "last log term")
    return RequestVote(s, d, t, last_index, last_term, _bool(r[2]), _bool(r[3]))


def _d_vote_resp(s: Member, d: Member, t: int, r: list[Any]) -> Message:
    _arity(r, 2)
    return VoteResponse(s, d, t, _bool(r[0]), _bool(r[1]))


def _d_snapshot(s: Member, d: Member, t: int, r: list[Any]) -> Message:
    _arity(r, 5)
    data = r[2]
    if not isinstance(data, bytes):
        raise PeerProtocolError("snapshot data must be bytes")
    meta, offset, total = _read_meta(r[0]), _count(r[1]), _count(r[3])
    _term_at_most(meta.term, t, "snapshot term")
    if offset + len(data) > total:
        raise PeerProtocolError("snapshot chunk ends past the snapshot")
    return InstallSnapshot(s, d, t, meta, offset, data, total, _read_vouch(r[4]))


def _d_snapshot_resp(s: Member, d: Member, t: int, r: list[Any]) -> Message:
    _arity(r, 3)
    index, next_offset, reject = _count(r[0]), _count(r[1]), _bool(r[2])
    if reject and next_offset != 0:
        raise PeerProtocolError("a refused snapshot must answer next_offset 0")
    return SnapshotResponse(s, d, t, index, next_offset, reject)


def _d_timeout_now(s: Member, d: Member, t: int, r: list[Any]) -> Message:
    _arity(r, 0)
    return TimeoutNow(s, d, t)


def _d_read_req(s: Member, d: Member, t: int, r: list[Any]) -> Message:
    _arity(r, 1)
    ctx = r[0]
    if not isinstance(ctx, bytes):
        raise PeerProtocolError("read context must be bytes")
    return ReadIndexRequest(s, d, t, ctx)


def _d_read_resp(s: Member, d: Member, t: int, r: list[Any]) -> Message:
    _arity(r, 2)
    ctx = r[0]
    if not isinstance(ctx, bytes):
        raise PeerProtocolError("read context must be bytes")
    return ReadIndexResponse(s, d, t, ctx, _count(r[1]))


def _d_transfer(s: Member, d: Member, t: int, r: list[Any]) -> Message:
    _arity(r, 1)
    return TransferLeader(s, d, t, _read_member(r[0]))


_DECODERS = {
    0: _d_append,
    1: _d_append_resp,
    2: _d_heartbeat,
    3: _d_heartbeat_resp,
    4: _d_vote,
    5: _d_vote_resp,
    6: _d_snapshot,
    7: _d_snapshot_resp,
    8: _d_timeout_now,
    9: _d_read_req,
    10: _d_read_resp,
    11: _d_transfer,
}


# -- frames -----------------------------------------------------------------------------------


def encode_hello(h: Hello, kind: int = HELLO) -> bytes:
    return cbor.encode(
        [kind, [h.cluster_id, h.node_id, h.incarnation, h.peer_address, h.bootstrapped]]
    )


def encode_reject(reason: str) -> bytes:
    return cbor.encode([REJECT, reason])


def encode_raft(batch: Sequence[tuple[int, Message]]) -> bytes:
    return cbor.encode([RAFT, [[g, encode_message(m)] for g, m in batch]])


def encode_heartbeat(hb: BrokerHeartbeat) -> bytes:
    return cbor.encode(
        [
            HEARTBEAT,
            [
                hb.node_id, hb.incarnation, hb.host, hb.port, hb.peer_host, hb.peer_port,
                hb.rack, [list(x) for x in hb.leaders],
                [[g, list(ids), lag] for g, ids, lag in hb.caught_up],
            ],
        ]
    )  # fmt: skip


def encode_heartbeat_ack(ack: HeartbeatAck) -> bytes:
    return cbor.encode([HEARTBEAT_OK, [ack.registered, ack.controller]])


PeerFrame = (
    tuple[int, Hello]
    | tuple[int, str]
    | tuple[int, list[tuple[int, Message]]]
    | tuple[int, BrokerHeartbeat]
    | tuple[int, HeartbeatAck]
)


def decode_frame(payload: bytes) -> PeerFrame:
    try:
        v = cbor.decode(payload, PEER_LIMITS)
    except WireError as e:
        raise PeerProtocolError(f"undecodable peer frame: {e.message}") from None
    if not (isinstance(v, list) and len(v) == 2 and type(v[0]) is int):
        raise PeerProtocolError("peer frame must be [kind, body]")
    kind, body = v
    try:
        if kind in (HELLO, HELLO_OK):
            cid, nid, inc, addr, boot = body
            if cid is not None and not isinstance(cid, str):
                raise PeerProtocolError("cluster id must be text")
            if not isinstance(addr, str):
                raise PeerProtocolError("peer address must be text")
            return kind, Hello(cid, _node(nid), _incarnation(inc), addr, _bool(boot))
        if kind == REJECT:
            return kind, str(body)
        if kind == RAFT:
            if not isinstance(body, list):
                raise PeerProtocolError("raft batch must be a list")
            return kind, [(_count(g), decode_message(m)) for g, m in body]
        if kind == HEARTBEAT:
            nid, inc, host, port, phost, pport, rack, leaders, caught = body
            return kind, BrokerHeartbeat(
                _node(nid),
                _incarnation(inc),
                _name(host, "host"),
                _port(port),
                _name(phost, "peer host"),
                _port(pport),
                None if rack is None else _name(rack, "rack"),
                tuple((_count(g), _count(t), _node(ld)) for g, t, ld in _rows(leaders, 3)),
                tuple(
                    (_count(g), tuple(_node(i) for i in _list(ids)), _count(lag))
                    for g, ids, lag in _rows(caught, 3)
                ),
            )
        if kind == HEARTBEAT_OK:
            reg, ctl = body
            return kind, HeartbeatAck(_bool(reg), None if ctl is None else _node(ctl))
    except (ValueError, TypeError) as e:
        raise PeerProtocolError(f"bad peer frame body: {e}") from None
    raise PeerProtocolError(f"unknown peer frame kind {kind}")


def accepted(batch: list[tuple[int, Message]], peer: int, me: int) -> list[tuple[int, Message]]:
    """The messages of a decoded RAFT batch that this broker (`me`) takes from broker
    `peer`: from one of its members, to one of ours (a link never carries another broker's
    messages), at a term no higher than MAX_TERM (so that a term adopted from a peer leaves
    room for 2**32 elections before the codec's bound)."""
    out = []
    for g, m in batch:
        src, dst = m.src, m.dst
        assert isinstance(src, tuple) and isinstance(dst, tuple), "decoded members are pairs"
        if src[0] == peer and dst[0] == me and m.term <= MAX_TERM:
            out.append((g, m))
    return out


def dials(me: int, peer: int, seeds: frozenset[int] | set[int]) -> bool:
    """Whether broker `me` opens the link to `peer` (exactly one side of a pair does). A
    broker that is not a seed controller dials the seeds (they learn its address only from
    the metadata log, once it has registered over such a link) and seeds never dial it;
    otherwise the lower node id dials."""
    me_seed, peer_seed = me in seeds, peer in seeds
    if me_seed != peer_seed:
        return peer_seed
    return me < peer
