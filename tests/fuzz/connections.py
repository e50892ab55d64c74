"""The fuzz connections (`ClientConn`, `PeerConn`): one TCP connection to the broker each, the
answers the oracle (`oracle.py`) says it must receive, a receiver task reading whatever
arrives (so its socket never fills), and waits for answers and closes.

Answers arriving out of order, with another correlation id or code, undecodable, missing, a
close that should not happen or that does not come are anomalies (`Stats.anomaly`), and fail
the run.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import cbor2
import trio

from broker.core.peer_codec import (
    HEARTBEAT,
    HEARTBEAT_OK,
    HELLO_OK,
    MAX_INDEX,
    PEER_REQUEST,
    PEER_RESPONSE,
    RAFT,
    REJECT,
    Hello,
    PeerProtocolError,
    PeerResponse,
    decode_frame,
)
from broker.wire.api import ApiKey
from broker.wire.errors import ErrorCode, WireError
from broker.wire.frames import FrameDecoder
from broker.wire.protocol import decode_response
from tests.fuzz.oracle import DRAIN_CAP_S, Expect, PeerExpect
from tests.fuzz.stats import Stats
from tests.fuzz.target import RESPONSE_LIMITS

ANSWER_GRACE_S = 10.0
"""How long past its own allowance (a fetch's max wait, a write's timeout) an answer may be
late before it counts as missing; also the wait for a close that must come."""


class _Conn:
    """One fuzz connection: the sender's expectations, a receiver task, condition waits."""

    def __init__(self, stream: trio.SocketStream, stats: Stats, where: str) -> None:
        self.stream = stream
        self.stats = stats
        self.where = where
        self.expects: deque[Expect] = deque()
        self.eof = False
        self.we_closed = False
        self.close_predicted = False
        self.unverifiable = False
        """Answers may legitimately never come (a long wait, a decoder bug)."""
        self.reset = False
        self._changed = trio.Event()

    def changed(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_until(self, cond: Callable[[], bool], deadline: float) -> bool:
        while True:
            event = self._changed
            if cond():
                return True
            if trio.current_time() >= deadline:
                return False
            with trio.move_on_at(deadline):
                await event.wait()

    async def send(self, data: bytes, pieces: int) -> bool:
        """False when the broker has closed the connection."""
        try:
            if pieces <= 1 or len(data) < pieces:
                await self.stream.send_all(data)
            else:
                step = -(-len(data) // pieces)
                for i in range(0, len(data), step):
                    await self.stream.send_all(data[i : i + step])
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        return True

    async def receive(self, on_frame: Callable[[bytes], None]) -> None:
        decoder = FrameDecoder(RESPONSE_LIMITS)
        try:
            while True:
                data = await self.stream.receive_some(1 << 16)
                if not data:
                    break
                decoder.receive_data(data)
                while (frame := decoder.next_frame()) is not None:
                    on_frame(frame)
        except trio.BrokenResourceError:
            self.reset = True  # ECONNRESET: the broker closed with our bytes unread
        except trio.ClosedResourceError:
            pass  # we closed it
        except WireError as e:
            self.stats.anomaly(
                "broken-answer-framing",
                f"{self.where}: the broker sent broken framing: {e.message}",
            )
        self.eof = True
        if not self.we_closed:
            self.stats.events["closed-by-broker"] += 1
        self.changed()


def _undecodable_class(message: str) -> str:
    """The anomaly class of an answer the client library could not decode."""
    if "exceeds" in message:
        return "answer-text-over-limit"  # a string or container past the decoder's limits
    if message.startswith("brokers["):
        return "bad-broker-in-answer"  # a registered broker the answer schema refuses
    return "undecodable-answer"


def _above_max_index(payload: bytes) -> bool:
    """Whether a RAFT frame holds a message whose term is above peer_codec.MAX_INDEX (a
    term the broker's own decoder refuses)."""
    try:
        kind, batch = cbor2.loads(payload)
        return kind == RAFT and any(type(m[3]) is int and m[3] > MAX_INDEX for _, m in batch)
    except Exception:
        return False


class ClientConn(_Conn):
    def on_frame(self, payload: bytes) -> None:
        stats = self.stats
        if not self.expects:
            stats.anomaly(
                "unasked-answer", f"{self.where}: an answer nobody asked for: {payload[:48].hex()}"
            )
            return
        e = self.expects.popleft()
        self.changed()
        try:
            env = decode_response(
                payload, e.api or ApiKey.API_VERSIONS, RESPONSE_LIMITS, api_version=e.version
            )
        except WireError as err:
            stats.anomaly(
                _undecodable_class(err.message),
                f"{self.where}: frame {e.frame}: undecodable answer: {err.message}",
            )
            return
        stats.answers[env.error.name] += 1
        if env.correlation_id != e.corr:
            stats.anomaly(
                "wrong-correlation-id",
                f"{self.where}: frame {e.frame}: answer has correlation id {env.correlation_id}, "
                f"expected {e.corr} (answers out of order?)",
            )
        elif e.code is not None and env.error is not e.code:
            stats.anomaly(
                "wrong-error-code",
                f"{self.where}: frame {e.frame}: answered {env.error.name} ({env.message}), "
                f"expected {e.code.name}",
            )

    def check_eof(self) -> None:
        if self.we_closed or self.unverifiable:
            return
        if self.expects or not self.close_predicted:
            missing = [e.frame for e in self.expects]
            self.stats.anomaly(
                # A reset that destroyed answers the broker had sent: it closed with bytes of
                # ours unread, so its kernel sent RST and dropped what it had not delivered.
                "reset-lost-answers" if self.reset and self.close_predicted else "closed-early",
                f"{self.where}: {'reset' if self.reset else 'closed'} by the broker with "
                f"{len(missing)} answers missing (frames {missing[:5]}), close predicted: "
                f"{self.close_predicted}",
            )

    def _head_moved(self, head: Expect) -> Callable[[], bool]:
        return lambda: self.eof or not self.expects or self.expects[0] is not head

    async def drain(self) -> None:
        """Wait for every expected answer (each within its allowance), then for the close
        the broker owes. An answer that may legitimately take longer than DRAIN_CAP_S (a
        parked fetch) is waited for that long, then it and those behind it are given up
        (counted, not verified)."""
        give_up = trio.current_time() + DRAIN_CAP_S
        while self.expects and not self.eof:
            head = self.expects[0]
            due = head.sent_at + head.latency + ANSWER_GRACE_S
            if due > give_up and (self.unverifiable or head.latency > DRAIN_CAP_S):
                if not await self.wait_until(self._head_moved(head), give_up):
                    self.stats.events["answers-abandoned"] += len(self.expects)
                    self.unverifiable = True
                    return
            elif not await self.wait_until(self._head_moved(head), due):
                self.stats.anomaly(
                    "no-answer",
                    f"{self.where}: frame {head.frame}: no answer (correlation id {head.corr}) "
                    f"within {head.latency + ANSWER_GRACE_S:.1f} s",
                )
                self.unverifiable = True
                return
        if self.close_predicted and not self.unverifiable:
            deadline = trio.current_time() + ANSWER_GRACE_S
            if not await self.wait_until(lambda: self.eof, deadline):
                self.stats.anomaly(
                    "not-closed", f"{self.where}: the broker did not close the connection"
                )


class PeerConn(_Conn):
    def __init__(
        self,
        stream: trio.SocketStream,
        stats: Stats,
        where: str,
        node_id: int,
        incarnation: int | None = None,
    ) -> None:
        super().__init__(stream, stats, where)
        self.node_id = node_id
        self.incarnation = incarnation
        self.answer: int | None = None
        self.received = 0
        self.peer_expects: dict[tuple[int, int], list[PeerExpect]] = {}
        """PEER_RESPONSEs owed, by (session, correlation id): they may come in any order (a
        newer frame kind is answered by the link, a request by the driver)."""

    def expect(self, expects: list[PeerExpect]) -> None:
        for e in expects:
            self.peer_expects.setdefault((e.session, e.correlation_id), []).append(e)

    def _peer_response(self, r: PeerResponse) -> None:
        owed = self.peer_expects.get((r.session, r.correlation_id))
        match = None
        if owed:
            match = next((e for e in owed if e.code is r.error), None)
            match = match or next((e for e in owed if e.code is None), None)
        if match is None:
            detail = f"(session {r.session}, id {r.correlation_id}) {r.error.name} {r.message}"
            cls = "wrong-peer-response" if owed else "unasked-peer-response"
            self.stats.anomaly(cls, f"{self.where}: peer response {detail}; owed {owed}")
            return
        assert owed is not None
        owed.remove(match)
        if not owed:
            del self.peer_expects[r.session, r.correlation_id]
        self.stats.answers[f"peer:{r.error.name}"] += 1
        if match.ping and r.error is ErrorCode.NONE and not self._mine(r.body):
            self.stats.anomaly(
                "wrong-peer-response",
                f"{self.where}: frame {match.frame}: PING answered {r.body!r}",
            )
        self.changed()

    def _mine(self, ping: object) -> bool:
        """Whether a PING answer names this broker (and echoes something)."""
        if not isinstance(ping, dict) or "echo" not in ping:
            return False
        incarnation = ping.get("incarnation")
        return ping.get("node_id") == self.node_id and self.incarnation in (None, incarnation)

    def on_frame(self, payload: bytes) -> None:
        self.received += 1
        try:
            kind, body = decode_frame(payload)
        except PeerProtocolError as e:
            cls = "term-past-max-index" if _above_max_index(payload) else "undecodable-peer-frame"
            self.stats.anomaly(cls, f"{self.where}: the broker sent an undecodable peer frame: {e}")
            return
        names = {
            HELLO_OK: "HELLO_OK", REJECT: "REJECT", RAFT: "RAFT", HEARTBEAT: "HEARTBEAT",
            HEARTBEAT_OK: "HEARTBEAT_OK", PEER_REQUEST: "PEER_REQUEST",
            PEER_RESPONSE: "PEER_RESPONSE",
        }  # fmt: skip
        self.stats.peer_received[names.get(kind, f"kind-{kind}")] += 1
        if isinstance(body, PeerResponse):
            self._peer_response(body)
        if self.received == 1:
            self.answer = kind
            if kind == HELLO_OK and not (isinstance(body, Hello) and body.node_id == self.node_id):
                self.stats.anomaly(
                    "wrong-hello-answer", f"{self.where}: HELLO_OK from the wrong broker: {body!r}"
                )
            self.changed()
