"""Peer requests: request/response between brokers over the peer links (pure).

One `PeerRequests` per broker process holds both sides. Its owner (the driver; the cluster
simulator) feeds it what arrives and sends what it gives back, all from one loop:
`on_request` / `on_response` for received frames, `peer_linked` for hellos, `tick()` with
every node tick, `run_local()`, then `take_outgoing()` (each `(dst, frame)` goes on dst's
link) and `deliver_results()` (each `PeerResult` to the listener of its kind; the rest back to
the owner). Nothing here has a clock, randomness or I/O.

Who uses it: a module of the node registers, for its kind, a handler (the serving side) and
a result listener (the asking side), then calls `request(dst, kind, body)`; e.g. forwarding
InitProducerId: `register("init_producer_id", serve)` and `listen("init_producer_id",
forwarded)` on every broker, `request(controller_id, "init_producer_id", body)` on the one a
client asked; `forwarded(result)` then answers the client by `result.correlation_id`.

Requester. `request(dst, kind, body, deadline_ticks=, retry_ticks=)` returns a correlation id
and queues a PEER_REQUEST frame; `tick()` sends it again every `retry_ticks` ticks until an
answer arrives and completes it REQUEST_TIMED_OUT after `deadline_ticks`. `on_response`
completes it with the answer, if the answer came from `dst` for this session and the request
is still pending. So every request completes exactly once (answer, error or timeout), and a
duplicated or late response is ignored: a caller never sees two results for one id, however
often the request was sent. Results are values handed on by `deliver_results()` (or drained
by `take_results()`), in the owner's loop: nothing runs inside `request()`. A request or
answer whose frame would exceed PEER_MESSAGE_BYTES is refused with MESSAGE_TOO_LARGE; every
frame is checked with the receiver's decoder before it leaves (a body that is not plain CBOR
is the caller's bug: ValueError for a request, UNKNOWN_SERVER_ERROR for an answer).

Correlation ids and sessions. Ids count up from 1 for the life of the object (one per
process), so they never collide while it lives. A restarted broker counts from 1 again, so
every frame also carries the requester's `session`, which the owner draws at random (63
bits) for each process life: a response is taken only for our session, and the responder
keys what it remembers by (source, session, id). An answer meant for (or cached for) an
earlier life of the requester therefore never completes a request of a later life (unless
two lives draw the same session: probability 2**-63).

Responder. `register(kind, handler)`: a handler gets an `Inbound` (source, kind, body and
the reply key) and returns an `Answer` at once, or None and calls `answer(key, ...)` later
(e.g. once a Raft entry commits). A request of a kind nobody registered is answered
UNSUPPORTED_VERSION (the link stays up). A handler that raises is answered
UNKNOWN_SERVER_ERROR, and the exception kept for the owner to report (`take_handler_errors`).
Built in: PING, answered with this broker's node id, incarnation, the kinds it serves and
the request's body (a diagnostic of the whole request path).

Idempotence. Retries and duplicating networks deliver the same (source, session, id) more
than once, and a requester that gives up and asks again sends the same operation under a new
id: handlers must be idempotent; the responder only narrows the window. Duplicates of an
open request (handed to its handler, not answered yet) are dropped. An answered request's
answer is kept per source (the last `answers_per_peer` answers and `answer_bytes_per_peer`
bytes of each of the last `max_peers` sources; the least recently used go first) and a
duplicate gets it again without running the handler; past that window a duplicate runs the
handler again. An open request its handler has not answered within `open_ticks` is forgotten
(a late `answer` returns False), and at most `open_per_peer` may be open per source (more are
answered BACKPRESSURE, retriable). So memory stays bounded whatever peers send.

Local path. A request to this broker itself is delivered by `run_local()` to its own handler,
and the answer to its own requester, through the same codec and completion path as a peer's,
without a frame on any link and never re-entrantly inside `request()` or `answer()`. It has
its deadline but no retries (nothing on it is lost).

Peers without peer requests. `peer_linked(peer, serves)` records whether a peer's hello lists
PEER_REQUESTS_FEATURE. A request to a peer that does not completes UNSUPPORTED_VERSION at
once, as do the ones pending for it (an older broker would close the link on the frame).
"""

from __future__ import annotations

import heapq
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from broker.core.peer_codec import (
    MAX_KIND,
    MAX_MESSAGE,
    MAX_SESSION,
    PEER_MESSAGE_BYTES,
    PEER_REQUEST,
    PeerProtocolError,
    PeerRequest,
    PeerResponse,
    decode_frame,
    encode_peer_request,
    encode_peer_response,
)
from broker.wire.errors import ErrorCode

PING = "ping"
DEFAULT_RETRY_TICKS = 4
"""200 ms at the runtime's 50 ms tick."""
DEFAULT_DEADLINE_TICKS = 100
"""5 s at the runtime's 50 ms tick."""
LOCAL_BATCH = 1024
"""Most local frames one `run_local()` call delivers (a handler may keep asking itself)."""


@dataclass(frozen=True, slots=True)
class ReplyKey:
    """Names one received request: what `answer` takes."""

    src: int
    session: int
    correlation_id: int


@dataclass(frozen=True, slots=True)
class Inbound:
    """A request as its handler sees it."""

    key: ReplyKey
    kind: str
    body: object

    @property
    def src(self) -> int:
        return self.key.src


@dataclass(frozen=True, slots=True)
class Answer:
    body: object = None
    error: ErrorCode = ErrorCode.NONE
    message: str | None = None


@dataclass(frozen=True, slots=True)
class PeerResult:
    """How one request ended: the answer (`error` NONE or the handler's error), or this
    side's error (REQUEST_TIMED_OUT, UNSUPPORTED_VERSION, MESSAGE_TOO_LARGE)."""

    correlation_id: int
    dst: int
    kind: str
    error: ErrorCode
    message: str | None
    body: object

    @property
    def ok(self) -> bool:
        return self.error is ErrorCode.NONE


Handler = Callable[[Inbound], Answer | None]
"""Answers a request at once, or returns None and calls `PeerRequests.answer` later."""
Listener = Callable[[PeerResult], None]


@dataclass
class PeerRequestStats:
    requests: int = 0
    answered: int = 0
    """Requests completed by an answer from their peer (errors included)."""
    timed_out: int = 0
    refused: int = 0
    """Requests completed here without an answer: the peer does not serve peer requests,
    or the body was too large."""
    resent: int = 0
    stray_responses: int = 0
    """Responses for no pending request (late, duplicated, another session or source)."""
    served: int = 0
    """Requests handed to a handler."""
    duplicates: int = 0
    """Requests answered from the cache or dropped because their first copy is open."""
    unknown_kinds: int = 0
    backpressure: int = 0
    late_answers: int = 0
    """`answer` calls for a request no longer open (answered, forgotten)."""
    open_expired: int = 0
    handler_errors: int = 0


@dataclass(slots=True)
class _Pending:
    dst: int
    kind: str
    frame: bytes
    deadline: int
    retry_ticks: int
    """0 on the local path (no resends)."""


@dataclass
class _Answers:
    """One source's recent answers: (session, correlation id) -> response frame, oldest first."""

    frames: OrderedDict[tuple[int, int], bytes] = field(default_factory=OrderedDict)
    size: int = 0


class PeerRequests:
    """Both sides of peer requests for one broker process (see the module docstring)."""

    def __init__(
        self,
        node_id: int,
        incarnation: int,
        session: int,
        *,
        answers_per_peer: int = 256,
        answer_bytes_per_peer: int = 4 << 20,
        max_peers: int = 256,
        open_per_peer: int = 1024,
        open_ticks: int = 1200,
    ) -> None:
        if not 0 <= session <= MAX_SESSION:
            raise ValueError(f"a session is in [0, {MAX_SESSION}]")
        self.node_id = node_id
        self.incarnation = incarnation
        self.session = session
        self.answers_per_peer = answers_per_peer
        self.answer_bytes_per_peer = answer_bytes_per_peer
        self.max_peers = max_peers
        self.open_per_peer = open_per_peer
        self.open_ticks = open_ticks
        self.stats = PeerRequestStats()
        self._now = 0
        self._next_id = 1
        self._pending: dict[int, _Pending] = {}
        self._timers: list[tuple[int, int]] = []
        """(tick, correlation id): the next resend or the deadline of a pending request."""
        self._outgoing: list[tuple[int, bytes]] = []
        self._local: deque[bytes] = deque()
        self._results: list[PeerResult] = []
        self._handlers: dict[str, Handler] = {}
        self._listeners: dict[str, Listener] = {}
        self._open: dict[ReplyKey, tuple[int, str]] = {}
        """Requests handed to a handler and not answered -> (the tick they arrived, kind), in
        arrival order (so the oldest are first)."""
        self._open_per_src: dict[int, int] = {}
        self._answers: OrderedDict[int, _Answers] = OrderedDict()
        self._serves: dict[int, bool] = {}
        self._handler_errors: list[tuple[str, Exception]] = []
        self.register(PING, self._ping)

    # -- registration -------------------------------------------------------------------------

    def register(self, kind: str, handler: Handler) -> None:
        """Serve requests of `kind` with `handler` (replacing any earlier one)."""
        _check_kind(kind)
        self._handlers[kind] = handler

    def listen(self, kind: str, listener: Listener) -> None:
        """Hand results of requests of `kind` to `listener` (see `deliver_results`)."""
        _check_kind(kind)
        self._listeners[kind] = listener

    def kinds(self) -> list[str]:
        return sorted(self._handlers)

    def peer_linked(self, peer: int, serves: bool) -> None:
        """A hello from `peer`: whether it serves peer requests. Requests pending for a peer
        that does not are completed UNSUPPORTED_VERSION."""
        if peer == self.node_id:
            return
        self._serves[peer] = serves
        if not serves:
            for cid in [c for c, p in self._pending.items() if p.dst == peer]:
                self._refuse_pending(cid, _no_requests(peer))

    # -- requester ----------------------------------------------------------------------------

    def request(
        self,
        dst: int,
        kind: str,
        body: object = None,
        *,
        deadline_ticks: int = DEFAULT_DEADLINE_TICKS,
        retry_ticks: int = DEFAULT_RETRY_TICKS,
    ) -> int:
        """Send a request; its result comes from `deliver_results()` under the returned id.
        Raises ValueError for a body that is not plain CBOR (null, bool, int, float, text,
        bytes, arrays, maps with text keys: no sets, dates, tags)."""
        _check_kind(kind)
        if deadline_ticks < 1 or retry_ticks < 1:
            raise ValueError("deadline_ticks and retry_ticks are at least 1")
        cid = self._next_id
        self._next_id += 1
        self.stats.requests += 1
        try:
            frame = encode_peer_request(PeerRequest(self.session, cid, kind, body))
        except Exception as e:  # cbor2's encoder errors
            raise ValueError(f"cannot encode this {kind!r} request: {e}") from e
        if len(frame) > PEER_MESSAGE_BYTES:
            why = f"a request of {len(frame)} bytes (at most {PEER_MESSAGE_BYTES})"
            self._refuse(cid, dst, kind, ErrorCode.MESSAGE_TOO_LARGE, why)
            return cid
        problem = _undecodable(frame)
        if problem is not None:
            raise ValueError(f"a peer could not decode this {kind!r} request: {problem}")
        local = dst == self.node_id
        if not local and self._serves.get(dst) is False:
            self._refuse(cid, dst, kind, ErrorCode.UNSUPPORTED_VERSION, _no_requests(dst))
            return cid
        deadline = self._now + deadline_ticks
        self._pending[cid] = _Pending(dst, kind, frame, deadline, 0 if local else retry_ticks)
        if local:
            self._local.append(frame)
            heapq.heappush(self._timers, (deadline, cid))
        else:
            self._outgoing.append((dst, frame))
            heapq.heappush(self._timers, (min(self._now + retry_ticks, deadline), cid))
        return cid

    def pending(self) -> int:
        return len(self._pending)

    def on_response(self, src: int, response: PeerResponse) -> None:
        """An answer from `src`: completes its request if it is still pending, for this
        session, and was sent to `src`; anything else is ignored (and counted)."""
        cid = response.correlation_id
        p = self._pending.get(cid)
        if response.session != self.session or p is None or p.dst != src:
            self.stats.stray_responses += 1
            return
        del self._pending[cid]
        self.stats.answered += 1
        self._results.append(
            PeerResult(cid, p.dst, p.kind, response.error, response.message, response.body)
        )

    def tick(self) -> None:
        """Resend what is due, time out what is past its deadline, forget open requests
        older than `open_ticks`."""
        self._now = now = self._now + 1
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, cid = heapq.heappop(timers)
            p = self._pending.get(cid)
            if p is None:
                continue
            if now >= p.deadline:
                del self._pending[cid]
                self.stats.timed_out += 1
                why = f"no answer from broker {p.dst} within the deadline"
                self._results.append(
                    PeerResult(cid, p.dst, p.kind, ErrorCode.REQUEST_TIMED_OUT, why, None)
                )
                continue
            self.stats.resent += 1
            self._outgoing.append((p.dst, p.frame))
            heapq.heappush(timers, (min(now + p.retry_ticks, p.deadline), cid))
        stale = now - self.open_ticks
        while self._open:
            key, (opened, _) = next(iter(self._open.items()))
            if opened > stale:
                break
            self._close(key)
            self.stats.open_expired += 1

    # -- responder ----------------------------------------------------------------------------

    def on_request(self, src: int, request: PeerRequest) -> None:
        """A request from `src` (this broker itself on the local path)."""
        key = ReplyKey(src, request.session, request.correlation_id)
        cached = self._cached(key)
        if cached is not None:
            self.stats.duplicates += 1
            self._send(src, cached)
            return
        if key in self._open:
            self.stats.duplicates += 1
            return
        kind = request.kind
        handler = self._handlers.get(kind)
        if handler is None:
            self.stats.unknown_kinds += 1
            why = f"broker {self.node_id} serves no peer request of kind {kind!r}"
            self._send(src, self._response(key, ErrorCode.UNSUPPORTED_VERSION, why, None))
            return
        if self._open_per_src.get(src, 0) >= self.open_per_peer:
            self.stats.backpressure += 1
            why = f"{self.open_per_peer} requests from broker {src} are being served"
            self._send(src, self._response(key, ErrorCode.BACKPRESSURE, why, None))
            return
        self._open[key] = (self._now, kind)
        self._open_per_src[src] = self._open_per_src.get(src, 0) + 1
        self.stats.served += 1
        try:
            answer = handler(Inbound(key, kind, request.body))
        except Exception as e:
            self._failed(kind, e)
            answer = Answer(None, ErrorCode.UNKNOWN_SERVER_ERROR, _failure(kind, e))
        if answer is not None:
            self.answer(key, answer.body, error=answer.error, message=answer.message)

    def answer(
        self,
        key: ReplyKey,
        body: object = None,
        *,
        error: ErrorCode = ErrorCode.NONE,
        message: str | None = None,
    ) -> bool:
        """Answer an open request; False (ignored) if it is not open any more: answered
        already, or forgotten after `open_ticks`."""
        opened = self._open.get(key)
        if opened is None:
            self.stats.late_answers += 1
            return False
        kind = opened[1]
        self._close(key)
        try:
            frame = self._response(key, error, message, body)
            problem = None if len(frame) > PEER_MESSAGE_BYTES else _undecodable(frame)
        except Exception as e:  # a body the codec cannot encode: the handler's bug
            frame, problem = b"", f"{type(e).__name__}: {e}"
        if len(frame) > PEER_MESSAGE_BYTES:
            why = f"the answer is {len(frame)} bytes (at most {PEER_MESSAGE_BYTES})"
            frame = self._response(key, ErrorCode.MESSAGE_TOO_LARGE, why, None)
        elif problem is not None:  # a peer could not decode it: the handler's bug
            self._failed(kind, ValueError(f"an answer a peer cannot decode: {problem}"))
            why = f"the broker failed to encode its answer to this {kind!r} request"
            frame = self._response(key, ErrorCode.UNKNOWN_SERVER_ERROR, why, None)
        if key.src != self.node_id:
            self._remember(key, frame)
        self._send(key.src, frame)
        return True

    def open_requests(self) -> int:
        return len(self._open)

    # -- the owner's loop ---------------------------------------------------------------------

    def run_local(self) -> int:
        """Deliver frames this broker sent itself (requests to its handlers, answers to its
        requester), at most LOCAL_BATCH; returns how many."""
        n = 0
        local = self._local
        while local and n < LOCAL_BATCH:
            n += 1
            kind, value = decode_frame(local.popleft())
            if kind == PEER_REQUEST:
                assert isinstance(value, PeerRequest)
                self.on_request(self.node_id, value)
            else:
                assert isinstance(value, PeerResponse)
                self.on_response(self.node_id, value)
        return n

    def has_work(self) -> bool:
        """Whether the owner has something to do now: local frames to deliver, frames to
        send, results or handler errors to hand on."""
        return bool(self._local or self._outgoing or self._results or self._handler_errors)

    def take_outgoing(self) -> list[tuple[int, bytes]]:
        """(destination broker, PEER_REQUEST or PEER_RESPONSE frame payload), in order."""
        out, self._outgoing = self._outgoing, []
        return out

    def take_results(self) -> list[PeerResult]:
        """Every result since the last call, listeners bypassed."""
        out, self._results = self._results, []
        return out

    def deliver_results(self) -> list[PeerResult]:
        """Hand every result since the last call to the listener of its kind; returns the
        ones of kinds without a listener. A listener that raises is recorded as a handler
        error (`take_handler_errors`) and the rest are still delivered."""
        rest = []
        for result in self.take_results():
            listener = self._listeners.get(result.kind)
            if listener is None:
                rest.append(result)
                continue
            try:
                listener(result)
            except Exception as e:
                self._failed(result.kind, e)
        return rest

    def take_handler_errors(self) -> list[tuple[str, Exception]]:
        """(kind, exception) of every handler that raised (each was answered
        UNKNOWN_SERVER_ERROR) and every listener that raised."""
        out, self._handler_errors = self._handler_errors, []
        return out

    # -- inside -------------------------------------------------------------------------------

    def _ping(self, req: Inbound) -> Answer:
        return Answer(
            {
                "node_id": self.node_id,
                "incarnation": self.incarnation,
                "kinds": self.kinds(),
                "echo": req.body,
            }
        )

    def _send(self, dst: int, frame: bytes) -> None:
        if dst == self.node_id:
            self._local.append(frame)
        else:
            self._outgoing.append((dst, frame))

    def _refuse(self, cid: int, dst: int, kind: str, error: ErrorCode, why: str) -> None:
        self.stats.refused += 1
        self._results.append(PeerResult(cid, dst, kind, error, why, None))

    def _refuse_pending(self, cid: int, why: str) -> None:
        p = self._pending.pop(cid)
        self._refuse(cid, p.dst, p.kind, ErrorCode.UNSUPPORTED_VERSION, why)

    def _response(
        self, key: ReplyKey, error: ErrorCode, message: str | None, body: object
    ) -> bytes:
        message = message[:MAX_MESSAGE] if message else None
        return encode_peer_response(
            PeerResponse(key.session, key.correlation_id, error, message, body)
        )

    def _close(self, key: ReplyKey) -> None:
        del self._open[key]
        left = self._open_per_src[key.src] - 1
        if left:
            self._open_per_src[key.src] = left
        else:
            del self._open_per_src[key.src]

    def _failed(self, what: str, e: Exception) -> None:
        self.stats.handler_errors += 1
        self._handler_errors.append((what, e))

    def _cached(self, key: ReplyKey) -> bytes | None:
        answers = self._answers.get(key.src)
        if answers is None:
            return None
        frame = answers.frames.get((key.session, key.correlation_id))
        if frame is not None:
            self._answers.move_to_end(key.src)
        return frame

    def _remember(self, key: ReplyKey, frame: bytes) -> None:
        if len(frame) > self.answer_bytes_per_peer:
            return  # a duplicate runs the handler again
        answers = self._answers.get(key.src)
        if answers is None:
            answers = self._answers[key.src] = _Answers()
            while len(self._answers) > self.max_peers:
                self._answers.popitem(last=False)
        else:
            self._answers.move_to_end(key.src)
        answers.frames[key.session, key.correlation_id] = frame
        answers.size += len(frame)
        frames = answers.frames
        while len(frames) > self.answers_per_peer or answers.size > self.answer_bytes_per_peer:
            _, old = frames.popitem(last=False)
            answers.size -= len(old)

    def cached_answers(self) -> int:
        return sum(len(a.frames) for a in self._answers.values())


def _check_kind(kind: str) -> None:
    if not 0 < len(kind) <= MAX_KIND:
        raise ValueError(f"a request kind is 1..{MAX_KIND} characters")


def _undecodable(frame: bytes) -> str | None:
    """Why a peer would refuse this frame of ours (e.g. a set or a date in the body, which
    CBOR tags and the strict decoder refuses), or None."""
    try:
        decode_frame(frame)
    except PeerProtocolError as e:
        return str(e)
    return None


def _no_requests(peer: int) -> str:
    return f"broker {peer} does not serve peer requests (an older version)"


def _failure(kind: str, e: Exception) -> str:
    return f"the broker failed to handle this {kind!r} request: {type(e).__name__}"
