"""The peer codec: every Raft message and controller frame round-trips exactly, and bad input
is a PeerProtocolError (never another exception)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.core.peer_codec import (
    MAX_TERM,
    BrokerHeartbeat,
    HeartbeatAck,
    Hello,
    PeerProtocolError,
    accepted,
    decode_frame,
    dials,
    encode_heartbeat,
    encode_heartbeat_ack,
    encode_hello,
    encode_raft,
)
from broker.core.raft import ConfState, Entry, EntryKind
from broker.core.raft.types import (
    AppendEntries,
    AppendResponse,
    ConfVouch,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    ReadIndexRequest,
    ReadIndexResponse,
    RequestVote,
    SnapshotMeta,
    SnapshotResponse,
    TimeoutNow,
    TransferLeader,
    VoteResponse,
)

A, B = (0, 11), (1, 22)
CONF = ConfState(frozenset({A, B}), frozenset({(2, 33)}))
CONF3 = ConfState(frozenset({A, B}), frozenset({(2, 33), (3, 44)}))
ENTRIES = [
    Entry(5, 2, EntryKind.NORMAL, b"batch"),
    Entry(6, 2, EntryKind.NOOP),
    Entry(7, 3, EntryKind.CONF, b"", CONF),
]
MESSAGES = [
    AppendEntries(A, B, 3, 4, 2, ENTRIES, 5),
    AppendResponse(B, A, 3, 7, True, 4, 2),
    Heartbeat(A, B, 3, 6, b"ctx"),
    Heartbeat(A, B, 3, 6, None),
    HeartbeatResponse(B, A, 3, b"ctx"),
    RequestVote(A, B, 4, 7, 3, True, False),
    VoteResponse(B, A, 4, True, False),
    InstallSnapshot(A, B, 3, SnapshotMeta(9, 3, CONF), 16, b"chunk", 64),
    InstallSnapshot(A, (3, 44), 3, SnapshotMeta(9, 3, CONF), 0, b"c", 1, ConfVouch(12, CONF3)),
    SnapshotResponse(B, A, 3, 9, 21),
    SnapshotResponse(B, A, 3, 9, 0, True),
    TimeoutNow(A, B, 3),
    ReadIndexRequest(B, A, 3, b"r1"),
    ReadIndexResponse(A, B, 3, b"r1", 6),
    TransferLeader(B, A, 3, B),
]


def test_every_raft_message_round_trips() -> None:
    batch = [(g, m) for g, m in enumerate(MESSAGES)]
    _, decoded = decode_frame(encode_raft(batch))
    assert decoded == batch


def test_hello_and_heartbeats_round_trip() -> None:
    h = Hello("cid", 3, 99, "127.0.0.1:9093", True)
    assert decode_frame(encode_hello(h))[1] == h
    hb = BrokerHeartbeat(3, 99, "h", 1, "p", 2, "r1", ((7, 4, 3),), ((7, (1, 3), 12),))
    assert decode_frame(encode_heartbeat(hb))[1] == hb
    ack = HeartbeatAck(True, 0)
    assert decode_frame(encode_heartbeat_ack(ack))[1] == ack


@pytest.mark.parametrize(
    "payload",
    [b"", b"\x82\x02\x81\x81\x00", b"\x82\x07\x80", b"\xff", b"\x82\x00\x85\x01\x02\x03\x04\x05"],
)
def test_bad_frames_are_protocol_errors(payload: bytes) -> None:
    with pytest.raises(PeerProtocolError):
        decode_frame(payload)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_raise_anything_else(data: bytes) -> None:
    with contextlib.suppress(PeerProtocolError):
        decode_frame(data)


def test_exactly_one_side_of_every_pair_dials() -> None:
    seeds = frozenset({0, 1, 2})
    for a in range(6):
        for b in range(6):
            if a != b:
                assert dials(a, b, seeds) != dials(b, a, seeds), (a, b)
    assert dials(0, 1, seeds) and dials(1, 2, seeds)  # seeds: the lower id
    assert dials(3, 0, seeds) and dials(5, 2, seeds)  # plain brokers dial the seeds
    assert not dials(0, 3, seeds)  # seeds learn plain brokers only once registered
    assert dials(3, 4, seeds)  # plain brokers among themselves: the lower id


def test_a_link_takes_only_its_brokers_messages_for_this_broker_at_sane_terms() -> None:
    """From the linked broker, to this one, and at most MAX_TERM: a term adopted from a peer
    leaves room for 2**32 elections before the codec refuses it (a fake peer's heartbeat at
    the codec's bound made a group campaign at a term its peers then refused, found by the
    live fuzzer)."""
    ok = Heartbeat((1, 9), (0, 3), 5, 2, None)
    batch = [
        (1, ok),
        (1, Heartbeat((2, 9), (0, 3), 5, 2, None)),  # another broker's message
        (1, Heartbeat((1, 9), (4, 3), 5, 2, None)),  # for another broker
        (1, Heartbeat((1, 9), (0, 3), MAX_TERM + 1, 2, None)),
        (2, Heartbeat((1, 9), (0, 3), MAX_TERM, 2, None)),
    ]
    _, decoded = decode_frame(encode_raft(batch))
    assert accepted(decoded, 1, 0) == [batch[0], batch[4]]  # type: ignore[arg-type]


@pytest.mark.parametrize("host", ["", "h" * 300])
def test_a_heartbeat_with_a_host_no_client_could_use_is_refused(host: str) -> None:
    """An empty host registered from a fake peer's heartbeat made every METADATA answer
    fail to encode (found by the live fuzzer)."""
    hb = BrokerHeartbeat(3, 99, host, 1, "p", 2, None, (), ())
    with pytest.raises(PeerProtocolError):
        decode_frame(encode_heartbeat(hb))


def test_a_snapshot_refusal_must_be_at_offset_zero() -> None:
    """A refusal ends the transfer: it cannot also claim to hold part of the snapshot."""
    good = encode_raft([(1, SnapshotResponse(B, A, 3, 9, 0, True))])
    assert decode_frame(good)[1] == [(1, SnapshotResponse(B, A, 3, 9, 0, True))]
    bad = encode_raft([(1, SnapshotResponse(B, A, 3, 9, 16, True))])
    with pytest.raises(PeerProtocolError, match="refused snapshot"):
        decode_frame(bad)


def test_a_snapshot_vouch_is_checked_like_a_configuration() -> None:
    """The configuration a leader vouches for with a snapshot holds the promises of any
    configuration: members are pairs, and none is both voter and learner."""
    meta = SnapshotMeta(9, 3, CONF)
    both = ConfState(frozenset({A}))
    object.__setattr__(both, "learners", frozenset({A}))
    bad = InstallSnapshot(A, B, 3, meta, 0, b"", 0, ConfVouch(12, both))
    with pytest.raises(PeerProtocolError, match="both voter and learner"):
        decode_frame(encode_raft([(1, bad)]))
    negative = InstallSnapshot(A, B, 3, meta, 0, b"", 0, ConfVouch(-1, CONF))
    with pytest.raises(PeerProtocolError):
        decode_frame(encode_raft([(1, negative)]))
