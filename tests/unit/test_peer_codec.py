"""The peer codec: every Raft message and controller frame round-trips exactly, and bad input
is a PeerProtocolError (never another exception)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.core.peer_codec import (
    HELLO,
    MAX_CORRELATION_ID,
    MAX_KIND,
    MAX_MESSAGE,
    MAX_SESSION,
    MAX_TERM,
    PEER_FEATURES,
    PEER_MESSAGE_BYTES,
    PEER_PROTOCOL_VERSION,
    PEER_REQUEST,
    PEER_RESPONSE,
    BrokerHeartbeat,
    HeartbeatAck,
    Hello,
    PeerProtocolError,
    PeerRequest,
    PeerResponse,
    UnknownFrame,
    accepted,
    decode_frame,
    dials,
    encode_heartbeat,
    encode_heartbeat_ack,
    encode_hello,
    encode_peer_request,
    encode_peer_response,
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
from broker.wire import cbor
from broker.wire.errors import ErrorCode

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
    assert (h.version, h.features) == (PEER_PROTOCOL_VERSION, PEER_FEATURES) and h.serves_requests
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


# -- versions, peer requests and responses -------------------------------------------------------


def test_an_older_brokers_hello_is_version_0_without_features() -> None:
    _, hello = decode_frame(cbor.encode([HELLO, ["cid", 3, 99, "h:1", False]]))
    assert hello == Hello("cid", 3, 99, "h:1", False, 0, ())
    assert isinstance(hello, Hello) and not hello.serves_requests


def test_a_newer_brokers_hello_may_carry_more_fields() -> None:
    newer = ["cid", 3, 99, "h:1", True, 7, ["peer-requests", "zstd"], {"later": 1}]
    _, hello = decode_frame(cbor.encode([HELLO, newer]))
    assert hello == Hello("cid", 3, 99, "h:1", True, 7, ("peer-requests", "zstd"))


@pytest.mark.parametrize(
    "body",
    [
        ["cid", 3, 99, "h:1", True, 1],  # a version without features
        ["cid", 3, 99, "h:1", True, -1, []],
        ["cid", 3, 99, "h:1", True, "1", []],
        ["cid", 3, 99, "h:1", True, 1, "peer-requests"],
        ["cid", 3, 99, "h:1", True, 1, [""]],
        ["cid", 3, 99, "h:1", True, 1, ["f" * 65]],
        ["cid", 3, 99, "h:1", True, 1, [f"f{i}" for i in range(17)]],
        ["cid", 3, 99, "h:1"],
    ],
)
def test_bad_hellos_are_protocol_errors(body: list[object]) -> None:
    with pytest.raises(PeerProtocolError):
        decode_frame(cbor.encode([HELLO, body]))


def test_peer_requests_and_responses_round_trip() -> None:
    for req in (
        PeerRequest(0, 1, "ping", None),
        PeerRequest(MAX_SESSION, MAX_CORRELATION_ID, "k" * MAX_KIND, {"a": [1, b"x", 2.5]}),
    ):
        assert decode_frame(encode_peer_request(req)) == (PEER_REQUEST, req)
    for resp in (
        PeerResponse(5, 6, ErrorCode.NONE, None, {"node_id": 1}),
        PeerResponse(5, 6, ErrorCode.UNSUPPORTED_VERSION, "m" * MAX_MESSAGE, None),
    ):
        assert decode_frame(encode_peer_response(resp)) == (PEER_RESPONSE, resp)


def test_an_error_code_this_version_does_not_know_reads_as_unknown_server_error() -> None:
    _, resp = decode_frame(cbor.encode([PEER_RESPONSE, [1, 2, 31337, "newer", None]]))
    assert isinstance(resp, PeerResponse) and resp.error is ErrorCode.UNKNOWN_SERVER_ERROR


@pytest.mark.parametrize(
    "frame",
    [
        [PEER_REQUEST, [1, 2, "ping"]],
        [PEER_REQUEST, [1, 0, "ping", None]],  # correlation ids start at 1
        [PEER_REQUEST, [-1, 2, "ping", None]],
        [PEER_REQUEST, [MAX_SESSION + 1, 2, "ping", None]],
        [PEER_REQUEST, [1, MAX_CORRELATION_ID + 1, "ping", None]],
        [PEER_REQUEST, [1, 2, "", None]],
        [PEER_REQUEST, [1, 2, "k" * (MAX_KIND + 1), None]],
        [PEER_REQUEST, [1, 2, 7, None]],
        [PEER_REQUEST, {"session": 1}],
        [PEER_RESPONSE, [1, 2, 0, None]],
        [PEER_RESPONSE, [1, 2, "0", None, None]],
        [PEER_RESPONSE, [1, 2, 0, "", None]],
        [PEER_RESPONSE, [1, 2, 0, "m" * (MAX_MESSAGE + 1), None]],
        [PEER_RESPONSE, [1, 2, 0, b"bytes", None]],
        [PEER_REQUEST, [1, 2, "ping", b"x" * PEER_MESSAGE_BYTES]],
    ],
)
def test_bad_peer_requests_and_responses_are_protocol_errors(frame: list[object]) -> None:
    with pytest.raises(PeerProtocolError):
        decode_frame(cbor.encode(frame))


def test_an_unknown_frame_kind_is_an_error_from_our_version_and_skipped_from_a_newer_one() -> None:
    """A peer of our version (or older) knows every kind we do: an unknown one is garbage.
    A newer peer's is skipped, and answered when it is request-shaped (kinds 64-127 with
    `[session, correlation_id, ...]`)."""
    plain = cbor.encode([9, {"anything": 1}])
    shaped = cbor.encode([64, [5, 6, "more"]])
    for payload in (plain, shaped):
        for version in (0, PEER_PROTOCOL_VERSION):
            with pytest.raises(PeerProtocolError, match="unknown peer frame kind"):
                decode_frame(payload, version)
    newer = PEER_PROTOCOL_VERSION + 1
    assert decode_frame(plain, newer) == (9, UnknownFrame(9, None))
    assert decode_frame(shaped, newer) == (64, UnknownFrame(64, (5, 6)))
    for unanswerable in ([9, [5, 6]], [64, [5, 0]], [127, "x"], [128, [5, 6]], [-3, [5, 6]]):
        kind, body = decode_frame(cbor.encode(unanswerable), newer)
        assert body == UnknownFrame(kind, None)
    with pytest.raises(PeerProtocolError):  # known kinds are checked whatever the version
        decode_frame(cbor.encode([PEER_REQUEST, [1, 2]]), newer)
