"""The oracle: what the broker must do with the bytes a fuzz connection sends.

Each connection runs a mirror of what the broker does with its bytes: the same
`FrameDecoder` and `decode_request` (client: `ClientMirror`, `predict_request`) or
`peer_codec.decode_frame` (peer: `PeerMirror`). So it knows which frames must be answered,
with which correlation id and, for a bad request, which error code (`Expect`); where an
error frame must precede the close (broken framing); where the broker must close
(undecodable frame, bad peer frame, failed handshake); and what the handshake answer must be
(HELLO_OK or REJECT). On a peer link it also predicts the PEER_RESPONSE each request must get
(`PeerExpect`): a PING answered NONE (unless its echo may not fit), a kind nobody serves
UNSUPPORTED_VERSION, a newer peer's request-shaped frame of an unknown kind
UNSUPPORTED_VERSION, and any code for a request whose (source, session, id) the slot sent
before (the broker may answer it from its duplicate cache). A decoder raising anything but
its own error type is reported as a bug with the payload (deterministic: it is found
locally). `connections.py` holds the
broker to these predictions, reading each answer at the version of its request (an
API_VERSIONS request outside its range is answered UNSUPPORTED_VERSION with the ranges, read
at version 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import cbor2

from broker.core.peer_codec import (
    HELLO,
    HELLO_OK,
    PEER_LIMITS,
    PEER_MESSAGE_BYTES,
    PEER_PROTOCOL_VERSION,
    REJECT,
    Hello,
    PeerProtocolError,
    PeerRequest,
    UnknownFrame,
    decode_frame,
)
from broker.core.peer_requests import PING
from broker.runtime.peers import HELLO_FRAME_BYTES
from broker.wire.api import SUPPORTED_VERSIONS, ApiKey
from broker.wire.errors import ErrorCode, WireError
from broker.wire.frames import FrameDecoder
from broker.wire.limits import Limits
from broker.wire.messages import (
    CreateTopicsRequest,
    DeleteTopicsRequest,
    FetchRequest,
    ProduceRequest,
    Request,
)
from broker.wire.protocol import decode_request

DRAIN_CAP_S = 2.0
"""A session waits at most this long for answers that may legitimately take longer (a fetch
parked for its max wait); a request that may wait longer ends its session."""
HELLO_LIMITS = Limits(max_frame_bytes=HELLO_FRAME_BYTES)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the broker does with one request payload."""

    corr: int | None
    """The correlation id of its answer; None: no answer, the connection closes."""
    api: ApiKey | None = None
    """Set when the request is valid (its answer decodes as this API's response)."""
    version: int = 0
    """The version its answer is read at."""
    request: Request | None = None
    code: ErrorCode | None = None
    """The error of a bad request (None: any code, for a valid request)."""
    latency: float = 0.0
    """How long the broker may legitimately hold the answer (a fetch's max wait, a write's
    timeout)."""
    bug: str | None = None
    """The decoder raised something other than WireError."""


def predict_request(payload: bytes, limits: Limits) -> Outcome:
    """The broker's `decode_request` applied to `payload`, as `server.py` acts on it."""
    try:
        header, request = decode_request(payload, limits)
    except WireError as e:
        return Outcome(e.correlation_id, code=e.code)
    except Exception as e:
        return Outcome(None, bug=f"decode_request raised {type(e).__name__}: {e}")
    low, high = SUPPORTED_VERSIONS[header.api_key]
    if not low <= header.api_version <= high:  # API_VERSIONS: refused with the ranges
        return Outcome(header.correlation_id, header.api_key, code=ErrorCode.UNSUPPORTED_VERSION)
    latency = 0.0
    if isinstance(request, FetchRequest):
        latency = request.max_wait_ms / 1000
    elif isinstance(request, (ProduceRequest, CreateTopicsRequest, DeleteTopicsRequest)):
        latency = min(request.timeout_ms, 300_000) / 1000
    return Outcome(
        header.correlation_id, header.api_key, header.api_version, request, latency=latency
    )


@dataclass(slots=True)
class Expect:
    """One answer a client connection must receive, in this order."""

    corr: int
    api: ApiKey | None
    version: int
    code: ErrorCode | None
    latency: float
    frame: int
    """The frame's number in its connection slot's sequence (for reports)."""
    sent_at: float = 0.0


class ClientMirror:
    """The broker's view of one client connection: its FrameDecoder and decode_request."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.decoder = FrameDecoder(limits)
        self.closing = False
        """The broker will close the connection after the answers expected so far."""
        self.long = False
        """A request the broker may hold past DRAIN_CAP_S was sent."""
        self.bug: str | None = None

    def feed(self, data: bytes, hint: tuple[bytes, Outcome] | None, frame: int) -> list[Expect]:
        out: list[Expect] = []
        if self.closing:
            return out
        self.decoder.receive_data(data)
        while True:
            try:
                payload = self.decoder.next_frame()
            except WireError as e:  # broken framing: an error frame (correlation id 0), close
                out.append(Expect(0, None, 0, e.code, 0.0, frame))
                self.closing = True
                return out
            if payload is None:
                return out
            if hint is not None and payload == hint[0]:
                outcome = hint[1]
            else:
                outcome = predict_request(payload, self.limits)
            if outcome.corr is None:
                self.closing = True
                self.bug = outcome.bug
                return out
            out.append(
                Expect(
                    outcome.corr, outcome.api, outcome.version, outcome.code, outcome.latency, frame
                )
            )
            if outcome.latency > DRAIN_CAP_S:
                self.long = True


@dataclass(frozen=True, slots=True)
class PeerExpect:
    """A PEER_RESPONSE a peer connection must receive (in any order)."""

    session: int
    correlation_id: int
    code: ErrorCode | None
    """None: any code (a request the broker may answer from its duplicate cache)."""
    ping: bool
    """An exact PING answer: it names the broker's node id and incarnation."""
    frame: int


def predict_peer_request(
    req: PeerRequest, src: int, seen: set[tuple[int, int, int]], frame: int
) -> PeerExpect:
    """The answer the broker's responder gives `req` from fake broker `src`; `seen` holds the
    (source, session, id) keys the slot sent before (and gets this one)."""
    key = (src, req.session, req.correlation_id)
    code: ErrorCode | None
    if key in seen:
        code = None
    elif req.kind != PING:
        code = ErrorCode.UNSUPPORTED_VERSION
    else:  # the answer echoes the body: exact only while that surely fits a frame
        code = ErrorCode.NONE if len(cbor2.dumps(req.body)) <= PEER_MESSAGE_BYTES // 2 else None
    seen.add(key)
    return PeerExpect(req.session, req.correlation_id, code, code is ErrorCode.NONE, frame)


class PeerMirror:
    """The broker's view of one peer connection: handshake, then link (`peers.py`)."""

    def __init__(
        self,
        node_id: int,
        cluster_id: str | None,
        seen: set[tuple[int, int, int]] | None = None,
    ) -> None:
        self.node_id = node_id
        self.cluster_id = cluster_id
        self.decoder = FrameDecoder(HELLO_LIMITS)
        self.linked = False
        self.closing = False
        self.answer: int | None = None
        """HELLO_OK or REJECT: what the broker answers the hello with."""
        self.bug: str | None = None
        self.version = PEER_PROTOCOL_VERSION
        """The linked hello's version: how the broker decodes what follows."""
        self.src = -1
        self.seen = set() if seen is None else seen
        """(source, session, id) of every request the slot sent (across its sessions)."""
        self.expects: list[PeerExpect] = []
        """Answers predicted since the caller last took them."""

    def feed(self, data: bytes, frame: int = 0) -> None:
        if self.closing:
            return
        self.decoder.receive_data(data)
        while not self.closing:
            try:
                payload = self.decoder.next_frame()
            except WireError:
                self.closing = True
                return
            if payload is None:
                return
            try:
                kind, body = decode_frame(payload, self.version)
            except PeerProtocolError:
                self.closing = True
                return
            except Exception as e:
                self.bug = f"decode_frame raised {type(e).__name__}: {e} on {payload[:64].hex()}"
                self.closing = True
                return
            if self.linked:
                if isinstance(body, PeerRequest):
                    self.expects.append(predict_peer_request(body, self.src, self.seen, frame))
                elif isinstance(body, UnknownFrame) and body.request is not None:
                    session, cid = body.request
                    expect = PeerExpect(session, cid, ErrorCode.UNSUPPORTED_VERSION, False, frame)
                    self.expects.append(expect)
                continue
            if kind != HELLO or not isinstance(body, Hello):
                self.closing = True
            elif body.node_id == self.node_id or (
                self.cluster_id and body.cluster_id and body.cluster_id != self.cluster_id
            ):
                self.answer = REJECT
                self.closing = True
            else:
                self.answer = HELLO_OK
                self.linked = True
                self.version = body.version
                self.src = body.node_id
                self.decoder.set_limits(PEER_LIMITS)
