"""The peer protocol's pure codec: Raft messages of many groups, and controller RPCs, as CBOR.

A peer frame is a CBOR array `[kind, body]`:
- HELLO / HELLO_OK: the handshake (cluster id, node id, incarnation, peer address); a peer of
  another cluster is refused, so a leftover broker cannot join;
- RAFT: `[[group_id, message], ...]`: every message a round has for one peer, in one frame
  (heartbeats of all groups included);
- HEARTBEAT / HEARTBEAT_OK: a broker to the controller: its registration, liveness and the
  partition leaders it holds; the answer tells it whether it is registered and fenced;
- PEER_REQUEST `[session, correlation_id, kind, body]` / PEER_RESPONSE `[session,
  correlation_id, error, message, body]`: request/response between brokers
  (`broker.core.peer_requests`); `kind` is 1..MAX_KIND characters of text, `body` any CBOR
  value, `error` an ErrorCode number (one this version does not know reads as
  UNKNOWN_SERVER_ERROR), `message` 1..MAX_MESSAGE characters of text or null; the whole
  payload is at most PEER_MESSAGE_BYTES (which bounds the body).

Versions. HELLO is `[cluster_id, node_id, incarnation, address, bootstrapped, version,
features]`; a hello of 5 items is an older broker's (version 0, no features) and items past
the seventh, a newer broker's additions, are ignored. Peer requests are sent only to a peer
whose hello lists PEER_REQUESTS_FEATURE. A frame kind this version does not know is a
protocol error (the link closes) from a peer of our version or older, which knows every kind
we do; from a newer peer it decodes as `UnknownFrame` and the link skips it (counted), except
that a kind in REQUEST_SHAPED_KINDS whose body starts `[session, correlation_id, ...]` is
answered with a PEER_RESPONSE of UNSUPPORTED_VERSION: versions after 1 add exchanges that
expect an answer either as new PEER_REQUEST kinds (which the responder answers
UNSUPPORTED_VERSION) or as frame kinds in that range, so a newer broker always learns that we
cannot serve it instead of waiting for its deadline.

Raft messages inside RAFT frames are encoded by `raft_codec`; the bounds and scalar readers
are `peer_values`. Decoding peer input is as strict as client input: shapes and types are
checked, and anything wrong raises `PeerProtocolError` (the connection is dropped; Raft
tolerates lost messages), never another exception.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from broker.core.peer_values import MAX_INCARNATION as MAX_INCARNATION
from broker.core.peer_values import MAX_INDEX as MAX_INDEX
from broker.core.peer_values import MAX_NAME as MAX_NAME
from broker.core.peer_values import MAX_NODE_ID as MAX_NODE_ID
from broker.core.peer_values import MAX_TERM as MAX_TERM
from broker.core.peer_values import PeerProtocolError as PeerProtocolError
from broker.core.peer_values import (
    read_bool,
    read_count,
    read_incarnation,
    read_int,
    read_list,
    read_name,
    read_node,
    read_port,
    read_rows,
)
from broker.core.raft.types import Message
from broker.core.raft_codec import decode_message, encode_message
from broker.wire import cbor
from broker.wire.errors import ErrorCode, WireError
from broker.wire.limits import Limits

HELLO = 0
HELLO_OK = 1
RAFT = 2
HEARTBEAT = 3
HEARTBEAT_OK = 4
REJECT = 5
PEER_REQUEST = 6
PEER_RESPONSE = 7

PEER_PROTOCOL_VERSION = 1
"""This broker's peer protocol: 0 had no version in its hello and no peer requests."""
PEER_REQUESTS_FEATURE = "peer-requests"
QUIESCE_FEATURE = "quiesce"
"""The broker takes a quiesce heartbeat (`raft_codec`: the heartbeat's third item), quiesces
idle groups, and keeps a link to a peer that lists it alive (KEEPALIVE when it has sent
nothing for a while; the link closes when the peer has been silent too long: see
`broker.runtime.peers`): the broker-level liveness signal of its quiesced groups."""
PEER_FEATURES: tuple[str, ...] = (PEER_REQUESTS_FEATURE,)
"""What this broker's hello advertises (with QUIESCE_FEATURE when it quiesces:
`hello_features`)."""
MAX_FEATURES = 16
MAX_FEATURE = 64
REQUEST_SHAPED_KINDS = range(64, 128)
"""Frame kinds reserved for later versions' frames that expect a PEER_RESPONSE and start
their body with `[session, correlation_id, ...]` (see the module docstring)."""

MAX_KIND = 64
MAX_MESSAGE = 1024
MAX_SESSION = (1 << 63) - 1
MAX_CORRELATION_ID = (1 << 63) - 1
PEER_MESSAGE_BYTES = 1 << 20
"""A PEER_REQUEST or PEER_RESPONSE frame's payload bound (so its body's, less a few dozen
bytes); the sender checks it before sending, the receiver when decoding."""

PEER_FRAME_BYTES = 64 << 20
"""A frame's bound; senders split a round's messages for one peer below it."""

PEER_LIMITS = Limits(
    max_frame_bytes=PEER_FRAME_BYTES,
    max_array_items=1_000_000,
    max_frame_items=20_000_000,
    max_nesting=16,
)
"""Peers are authenticated by the handshake, but still bounded."""


@dataclass(frozen=True, slots=True)
class Hello:
    cluster_id: str | None
    node_id: int
    incarnation: int
    peer_address: str
    bootstrapped: bool
    """Whether this broker already holds a metadata group (joined or created a cluster)."""
    version: int = PEER_PROTOCOL_VERSION
    """The sender's peer protocol version (0: an older broker's hello without one)."""
    features: tuple[str, ...] = PEER_FEATURES

    @property
    def serves_requests(self) -> bool:
        return PEER_REQUESTS_FEATURE in self.features

    @property
    def quiesces(self) -> bool:
        return QUIESCE_FEATURE in self.features


def hello_features(quiesce: bool) -> tuple[str, ...]:
    """The features a broker's hello lists: QUIESCE_FEATURE only when it quiesces."""
    return (*PEER_FEATURES, QUIESCE_FEATURE) if quiesce else PEER_FEATURES


@dataclass(frozen=True, slots=True)
class PeerRequest:
    session: int
    """The requester's process life (see `broker.core.peer_requests`)."""
    correlation_id: int
    kind: str
    body: object


@dataclass(frozen=True, slots=True)
class PeerResponse:
    session: int
    correlation_id: int
    error: ErrorCode
    message: str | None
    body: object


@dataclass(frozen=True, slots=True)
class UnknownFrame:
    """A frame of a kind this version does not know, from a newer peer (skipped)."""

    kind: int
    request: tuple[int, int] | None
    """(session, correlation id) when the frame is request-shaped: it is answered
    UNSUPPORTED_VERSION."""


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


# -- frames -----------------------------------------------------------------------------------


def encode_hello(h: Hello, kind: int = HELLO) -> bytes:
    return cbor.encode(
        [
            kind,
            [
                h.cluster_id, h.node_id, h.incarnation, h.peer_address, h.bootstrapped,
                h.version, list(h.features),
            ],
        ]
    )  # fmt: skip


def encode_reject(reason: str) -> bytes:
    return cbor.encode([REJECT, reason])


def encode_raft(batch: Sequence[tuple[int, Message]]) -> bytes:
    return cbor.encode([RAFT, [[g, encode_message(m)] for g, m in batch]])


KEEPALIVE = cbor.encode([RAFT, []])
"""An empty RAFT frame: what a link to a QUIESCE_FEATURE peer carries when idle. Any version
reads it (and skips it), but only such peers are sent it, and only they are expected to."""


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


def encode_peer_request(r: PeerRequest) -> bytes:
    """The frame; the sender checks its size against PEER_MESSAGE_BYTES."""
    return cbor.encode([PEER_REQUEST, [r.session, r.correlation_id, r.kind, r.body]])


def encode_peer_response(r: PeerResponse) -> bytes:
    """The frame; the sender checks its size against PEER_MESSAGE_BYTES."""
    return cbor.encode(
        [PEER_RESPONSE, [r.session, r.correlation_id, int(r.error), r.message, r.body]]
    )


PeerFrame = (
    tuple[int, Hello]
    | tuple[int, str]
    | tuple[int, list[tuple[int, Message]]]
    | tuple[int, BrokerHeartbeat]
    | tuple[int, HeartbeatAck]
    | tuple[int, PeerRequest]
    | tuple[int, PeerResponse]
    | tuple[int, UnknownFrame]
)


def _read_hello(body: object) -> Hello:
    if not (isinstance(body, list) and (len(body) == 5 or len(body) >= 7)):
        raise PeerProtocolError("a hello has 5 items (version 0) or at least 7")
    cid, nid, inc, addr, boot = body[:5]
    if cid is not None and not isinstance(cid, str):
        raise PeerProtocolError("cluster id must be text")
    if not isinstance(addr, str):
        raise PeerProtocolError("peer address must be text")
    version = 0
    features: tuple[str, ...] = ()
    if len(body) >= 7:
        version = _version(body[5])
        features = tuple(_text(f, MAX_FEATURE, "a feature") for f in read_list(body[6]))
        if len(features) > MAX_FEATURES:
            raise PeerProtocolError(f"a hello lists at most {MAX_FEATURES} features")
    return Hello(
        cid, read_node(nid), read_incarnation(inc), addr, read_bool(boot), version, features
    )


def _version(v: object) -> int:
    if type(v) is not int or not 0 <= v <= MAX_NODE_ID:
        raise PeerProtocolError(f"expected a protocol version, got {v!r}")
    return v


def _text(v: object, limit: int, what: str) -> str:
    if not isinstance(v, str) or not 0 < len(v) <= limit:
        raise PeerProtocolError(f"{what} must be 1..{limit} characters of text")
    return v


def _session(v: object) -> int:
    if type(v) is not int or not 0 <= v <= MAX_SESSION:
        raise PeerProtocolError(f"expected a session in [0, {MAX_SESSION}], got {v!r}")
    return v


def _correlation_id(v: object) -> int:
    if type(v) is not int or not 0 < v <= MAX_CORRELATION_ID:
        raise PeerProtocolError(
            f"expected a correlation id in [1, {MAX_CORRELATION_ID}], got {v!r}"
        )
    return v


def _read_request(payload: bytes, body: object) -> PeerRequest:
    _message_size(payload)
    if not (isinstance(body, list) and len(body) == 4):
        raise PeerProtocolError("a peer request is [session, correlation_id, kind, body]")
    session, corr, kind, value = body
    return PeerRequest(
        _session(session), _correlation_id(corr), _text(kind, MAX_KIND, "a request kind"), value
    )


def _read_response(payload: bytes, body: object) -> PeerResponse:
    _message_size(payload)
    if not (isinstance(body, list) and len(body) == 5):
        raise PeerProtocolError(
            "a peer response is [session, correlation_id, error, message, body]"
        )
    session, corr, error, message, value = body
    if message is not None:
        message = _text(message, MAX_MESSAGE, "a response message")
    return PeerResponse(
        _session(session),
        _correlation_id(corr),
        ErrorCode.from_wire(read_int(error)),
        message,
        value,
    )


def _message_size(payload: bytes) -> None:
    if len(payload) > PEER_MESSAGE_BYTES:
        raise PeerProtocolError(
            f"a peer request or response of {len(payload)} bytes (at most {PEER_MESSAGE_BYTES})"
        )


def _unknown(kind: int, body: object, peer_version: int) -> UnknownFrame:
    if peer_version <= PEER_PROTOCOL_VERSION:
        raise PeerProtocolError(
            f"unknown peer frame kind {kind} from a peer of version {peer_version}"
        )
    request = None
    if kind in REQUEST_SHAPED_KINDS and isinstance(body, list) and len(body) >= 2:
        try:
            request = (_session(body[0]), _correlation_id(body[1]))
        except PeerProtocolError:
            request = None
    return UnknownFrame(kind, request)


def decode_frame(payload: bytes, peer_version: int = PEER_PROTOCOL_VERSION) -> PeerFrame:
    """One frame from a peer whose hello said `peer_version` (this version's own during the
    handshake): an unknown kind is an error unless the peer is newer (see the docstring)."""
    try:
        v = cbor.decode(payload, PEER_LIMITS)
    except WireError as e:
        raise PeerProtocolError(f"undecodable peer frame: {e.message}") from None
    if not (isinstance(v, list) and len(v) == 2 and type(v[0]) is int):
        raise PeerProtocolError("peer frame must be [kind, body]")
    kind, body = v
    try:
        if kind in (HELLO, HELLO_OK):
            return kind, _read_hello(body)
        if kind == PEER_REQUEST:
            return kind, _read_request(payload, body)
        if kind == PEER_RESPONSE:
            return kind, _read_response(payload, body)
        if kind == REJECT:
            return kind, str(body)
        if kind == RAFT:
            if not isinstance(body, list):
                raise PeerProtocolError("raft batch must be a list")
            return kind, [(read_count(g), decode_message(m)) for g, m in body]
        if kind == HEARTBEAT:
            nid, inc, host, port, phost, pport, rack, leaders, caught = body
            return kind, BrokerHeartbeat(
                read_node(nid),
                read_incarnation(inc),
                read_name(host, "host"),
                read_port(port),
                read_name(phost, "peer host"),
                read_port(pport),
                None if rack is None else read_name(rack, "rack"),
                tuple(
                    (read_count(g), read_count(t), read_node(ld))
                    for g, t, ld in read_rows(leaders, 3)
                ),
                tuple(
                    (read_count(g), tuple(read_node(i) for i in read_list(ids)), read_count(lag))
                    for g, ids, lag in read_rows(caught, 3)
                ),
            )
        if kind == HEARTBEAT_OK:
            reg, ctl = body
            return kind, HeartbeatAck(read_bool(reg), None if ctl is None else read_node(ctl))
    except (ValueError, TypeError) as e:
        raise PeerProtocolError(f"bad peer frame body: {e}") from None
    return kind, _unknown(kind, body, peer_version)


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
