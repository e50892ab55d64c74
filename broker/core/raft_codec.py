"""Raft messages, entries, members and configurations as CBOR values, for the peer frames.

Messages are arrays whose first item names the type; members are `[node_id, incarnation]`
(decoded as typed `Member`s); entries `[index, term, kind, data, conf]`; configurations
`[[voters], [learners]]`. Decoding is as strict as for client input: shapes and types are
checked, and anything wrong raises `PeerProtocolError`. A decoded message also holds what the
Raft core takes for granted of any message: terms and indices in [0, MAX_INDEX], no entry term
above the message's term, entries numbered from `prev_index + 1` in order with terms that never
decrease, a configuration entry carrying a configuration (and only such an entry), no member
both voter and learner (also in a snapshot's vouched configuration), a snapshot chunk inside
the snapshot, a snapshot refusal at offset 0.

A heartbeat is `[commit, context]`, or `[commit, context, true]` for a leader's last heartbeat
before it quiesces (`Heartbeat.quiesce`). The flag is written only when set, so a broker that
never quiesces sends what brokers before it did; an older broker refuses the three-item form,
so a leader quiesces only groups whose brokers all advertise the `quiesce` peer feature.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from broker.core.ids import Member
from broker.core.peer_values import (
    PeerProtocolError,
    check_term_at_most,
    read_bool,
    read_count,
    read_incarnation,
    read_int,
    read_node,
    read_opt_bytes,
)
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

# -- members, entries, configurations ---------------------------------------------------------


def _member(m: object) -> list[int]:
    assert isinstance(m, tuple) and len(m) == 2
    return [int(m[0]), int(m[1])]


def _read_member(v: object) -> Member:
    if not (isinstance(v, list) and len(v) == 2):
        raise PeerProtocolError(f"bad member {v!r}")
    return Member(read_node(v[0]), read_incarnation(v[1]))


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
    return Entry(
        read_count(index), read_count(term), k, data, None if conf is None else _read_conf(conf)
    )


_ENTRY_KINDS = frozenset(int(k) for k in EntryKind)


def _meta(m: SnapshotMeta) -> list[object]:
    return [m.index, m.term, _conf(m.conf)]


def _read_meta(v: object) -> SnapshotMeta:
    if not (isinstance(v, list) and len(v) == 3):
        raise PeerProtocolError("bad snapshot meta")
    return SnapshotMeta(read_count(v[0]), read_count(v[1]), _read_conf(v[2]))


def _vouch(v: ConfVouch | None) -> list[object] | None:
    return None if v is None else [v.index, _conf(v.conf)]


def _read_vouch(v: object) -> ConfVouch | None:
    if v is None:
        return None
    if not (isinstance(v, list) and len(v) == 2):
        raise PeerProtocolError("bad configuration vouch")
    return ConfVouch(read_count(v[0]), _read_conf(v[1]))


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
        if m.quiesce:
            return [*head, m.commit, m.context, True]
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
    s, d, t = _read_member(src), _read_member(dst), read_count(term)
    try:
        return _DECODERS[read_int(tag)](s, d, t, rest)
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
    prev_index, prev_term = read_count(r[0]), read_count(r[1])
    check_term_at_most(prev_term, t, "previous term")
    entries = [_read_entry(e) for e in r[2]]
    last_term = prev_term
    for i, e in enumerate(entries):
        if e.index != prev_index + 1 + i:
            raise PeerProtocolError("entries must follow prev_index in order")
        if not last_term <= e.term <= t:
            raise PeerProtocolError("entry terms must not decrease nor pass the message's")
        last_term = e.term
    return AppendEntries(s, d, t, prev_index, prev_term, entries, read_count(r[3]))


def _d_append_resp(s: Member, d: Member, t: int, r: list[Any]) -> Message:
    _arity(r, 4)
    return AppendResponse(
        s, d, t, read_count(r[0]), read_bool(r[1]), read_count(r[2]), read_count(r[3])
    )


def _d_heartbeat(s: Member, d: Member, t: int, r: list[Any]) -> Message:
    if len(r) == 3:
        if r[2] is not True:
            raise PeerProtocolError("a heartbeat's third item, the quiesce flag, is only true")
        return Heartbeat(s, d, t, read_count(r[0]), read_opt_bytes(r[1]), True)
    _arity(r, 2)
    return Heartbeat(s, d, t, read_count(r[0]), read_opt_bytes(r[1]))


def _d_heartbeat_resp(s: Member, d: Member, t: int, r: list[Any]) -> Message:
    _arity(r, 1)
    return HeartbeatResponse(s, d, t, read_opt_bytes(r[0]))


def _d_vote(s: Member, d: Member, t: int, r: list[Any]) -> Message:
    _arity(r, 4)
    last_index, last_term = read_count(r[0]), read_count(r[1])
    check_term_at_most(last_term, t, "last log term")
    return RequestVote(s, d, t, last_index, last_term, read_bool(r[2]), read_bool(r[3]))


def _d_vote_resp(s: Member, d: Member, t: int, r: list[Any]) -> Message:
    _arity(r, 2)
    return VoteResponse(s, d, t, read_bool(r[0]), read_bool(r[1]))


def _d_snapshot(s: Member, d: Member, t: int, r: list[Any]) -> Message:
    _arity(r, 5)
    data = r[2]
    if not isinstance(data, bytes):
        raise PeerProtocolError("snapshot data must be bytes")
    meta, offset, total = _read_meta(r[0]), read_count(r[1]), read_count(r[3])
    check_term_at_most(meta.term, t, "snapshot term")
    if offset + len(data) > total:
        raise PeerProtocolError("snapshot chunk ends past the snapshot")
    return InstallSnapshot(s, d, t, meta, offset, data, total, _read_vouch(r[4]))


def _d_snapshot_resp(s: Member, d: Member, t: int, r: list[Any]) -> Message:
    _arity(r, 3)
    index, next_offset, reject = read_count(r[0]), read_count(r[1]), read_bool(r[2])
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
    return ReadIndexResponse(s, d, t, ctx, read_count(r[1]))


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
