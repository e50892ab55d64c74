"""Broker-to-broker links: one TCP connection per pair of brokers, carrying every group.

Exactly one side dials (`peer_codec.dials`: a plain broker dials the seed controllers, seeds
never dial plain brokers, otherwise the lower node id); the connection carries frames both
ways. A link
starts with a handshake (cluster id, node id, incarnation, address, peer protocol version,
features): a peer of another cluster, or claiming our own id, is refused, so a leftover broker
cannot join. Frames to a peer go
through a bounded outbox (by bytes). A frame for an idle link (nothing queued, no send under
way) is written at once without waiting (`send`), so a message never waits for a task
switch; otherwise, or for what the socket did not take, a writer task sends everything
queued in one `send_all`, so a round's messages for a peer (all its groups, heartbeats
included) travel together and in order. When
the outbox is full, new frames are dropped and counted: Raft recovers from lost messages, and
memory stays bounded. A dialer reconnects with exponential backoff (capped, jittered).

Bad input costs its connection only: whatever goes wrong in a handshake or a link (a bad
frame, a stall, an unexpected exception) closes that connection, is counted in `PeerStats`
(an unexpected exception is logged with its traceback once per kind), and the accept loop
and dialers go on. Before the handshake a frame may be at most `HELLO_FRAME_BYTES`, and at
most `MAX_HANDSHAKES` connections may be in their handshake at once (more are closed at
once), so unauthenticated connections cannot hold much memory. Links read through one
ByteBudget (`PEER_BUDGET_BYTES`; frame bytes are held until decoded and queued for the
driver). A Raft message whose sender is not the linked broker, or whose addressee is not
this broker, is dropped and counted. The peer port trusts brokers that pass the handshake
(peer authentication comes with TLS); it must not be reachable by clients.

Keepalive (between brokers whose hellos both list `quiesce`): a link that has sent nothing
for KEEPALIVE_INTERVAL_S sends `peer_codec.KEEPALIVE` (an empty RAFT frame), and a link on
which nothing came for KEEPALIVE_SILENT_WINDOWS windows of KEEPALIVE_WINDOW_S in a row (six
keepalive intervals) closes (`silent`), so a peer that died without closing its socket, was
stopped (SIGSTOP) or cut off is noticed within KEEPALIVE_SILENT_S: `on_link_lost` then wakes
its quiesced groups and times out those it led. The windows are counted while this broker
runs (one it spent stopped counts once), so a stall of the whole machine (every broker
stopped, then resumed) closes no link, as the ticks it missed expire no Raft timer; and a
window is two keepalive intervals, so on a live link a keepalive always comes first (a wait
as long as the interval would end just before each one: twice the wake-ups). A link to a peer
without the feature (an older broker) carries no keepalive and has no silence bound, as
before.

Peer requests and responses (`broker.core.peer_requests`) go to the handler like the other
frames. A frame of a kind this version does not know closes the link when the peer's hello
gave our version or an older one; from a newer peer it is counted (`unknown_frames`) and
skipped, and answered here with a PEER_RESPONSE of UNSUPPORTED_VERSION when it is
request-shaped (`peer_codec.UnknownFrame.request`), so the link stays up.
"""

from __future__ import annotations

import logging
import math
import os
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import trio

from broker.core.peer_codec import (
    HEARTBEAT,
    HEARTBEAT_OK,
    HELLO,
    HELLO_OK,
    KEEPALIVE,
    PEER_LIMITS,
    PEER_PROTOCOL_VERSION,
    PEER_REQUEST,
    PEER_RESPONSE,
    RAFT,
    REJECT,
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
    encode_heartbeat_ack,
    encode_hello,
    encode_peer_response,
    encode_reject,
)
from broker.core.raft import Message
from broker.runtime.budget import ByteBudget
from broker.runtime.fault_log import FaultLog
from broker.runtime.frame_reader import FrameReader, Received
from broker.wire.errors import ErrorCode, WireError
from broker.wire.frames import FrameDecoder, encode_frame
from broker.wire.limits import KiB, Limits

log = logging.getLogger("sluice.peers")

OUTBOX_BYTES = 64 << 20
HANDSHAKE_TIMEOUT_S = 5.0
HELLO_FRAME_BYTES = 64 * KiB
"""A handshake frame's bound (a hello is about a hundred bytes)."""
MAX_HANDSHAKES = 64
"""Accepted connections in their handshake at once; more are closed at once."""
PEER_BUDGET_BYTES = 4 * PEER_LIMITS.max_frame_bytes
STALL_TIMEOUT_S = 30.0
"""A link silent this long in the middle of a frame, or whose peer does not read, closes."""
BACKOFF_MIN_S = 0.05
BACKOFF_MAX_S = 2.0
KEEPALIVE_INTERVAL_S = 0.1
"""A link to a `quiesce` peer that has sent nothing for this long sends a keepalive."""
KEEPALIVE_WINDOW_S = 2 * KEEPALIVE_INTERVAL_S
KEEPALIVE_SILENT_WINDOWS = 3
"""A link to a `quiesce` peer on which nothing came for this many windows in a row, counted
while this process runs, closes."""
KEEPALIVE_SILENT_S = KEEPALIVE_SILENT_WINDOWS * KEEPALIVE_WINDOW_S

_HELLO_LIMITS = Limits(max_frame_bytes=HELLO_FRAME_BYTES, max_array_items=16, max_nesting=4)

_HANDSHAKE_FAILED = (
    trio.TooSlowError,
    PeerProtocolError,
    WireError,
    EOFError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    OSError,
)
"""How a handshake can fail on either side: timeout, a bad or unexpected frame, the peer
closing the connection (killed mid-handshake, a port scanner), a broken socket."""


@dataclass
class PeerStats:
    links: int = 0
    handshakes: int = 0
    """Accepted connections in their handshake now."""
    dropped_frames: int = 0
    rejected: int = 0
    refused: int = 0
    """Accepted connections closed at once: too many handshakes at the same time."""
    bad_frames: int = 0
    sent_frames: int = 0
    received_frames: int = 0
    broken: int = 0
    stalled: int = 0
    errors: int = 0
    """Links or handshakes ended by an unexpected exception (a bug)."""
    dropped_messages: int = 0
    """Raft messages dropped: not from the linked broker, not for this one, or at a term
    no real cluster reaches (`peer_codec.accepted`); and heartbeats naming another broker."""
    unknown_frames: int = 0
    """Frames of a kind this version does not know, from newer peers (skipped)."""
    unknown_answered: int = 0
    """Of those, request-shaped ones answered UNSUPPORTED_VERSION."""
    keepalives: int = 0
    """Keepalive frames sent (links to `quiesce` peers, when idle)."""
    silent: int = 0
    """Links to `quiesce` peers closed because nothing came for KEEPALIVE_SILENT_S."""


@dataclass(eq=False)
class _Link:
    peer: int
    stream: trio.SocketStream
    version: int
    """The peer protocol version its hello gave."""
    keepalive: bool = False
    """Both hellos list `quiesce`: keepalives both ways, and a silence bound."""
    outbox: deque[bytes] = field(default_factory=deque)
    outbox_bytes: int = 0
    wake: trio.Event = field(default_factory=trio.Event)
    closed: bool = False
    sending: bool = False
    """The writer task is in a `send_all`: nothing else may write."""
    last_sent: float = 0.0
    """Trio time of the last write to the socket (keepalives go after an idle interval)."""


class PeerHandler(Protocol):
    """What the network hands to the broker (the driver): every call is synchronous and only
    queues work for the driver's loop."""

    def on_hello(self, hello: Hello) -> None: ...
    def on_raft(self, batch: list[tuple[int, Message]]) -> None: ...
    def on_heartbeat(self, peer: int, hb: BrokerHeartbeat) -> None: ...
    def on_heartbeat_ack(self, peer: int, ack: HeartbeatAck) -> None: ...
    def on_peer_request(self, peer: int, request: PeerRequest) -> None: ...
    def on_peer_response(self, peer: int, response: PeerResponse) -> None: ...
    def on_link_lost(self, peer: int) -> None:
        """The link to `peer` closed and no newer link replaced it."""
        ...


class PeerNetwork:
    def __init__(
        self,
        node_id: int,
        local_hello: Callable[[], Hello],
        handler: PeerHandler,
        addresses: Callable[[], dict[int, str]],
        seeds: frozenset[int] = frozenset(),
    ) -> None:
        self.node_id = node_id
        self.seeds = seeds
        self.local_hello = local_hello
        self.handler = handler
        self.addresses = addresses
        self.links: dict[int, _Link] = {}
        self.stats = PeerStats()
        self._dialing: set[int] = set()
        self._rng = random.Random()
        self.budget = ByteBudget(PEER_BUDGET_BYTES, PEER_BUDGET_BYTES // 4)
        self._faults = FaultLog(log)
        self.cut: set[int] = set()
        """Peers to refuse (tests of partitions use a proxy instead; this is for shutdown)."""

    # -- sending ------------------------------------------------------------------------------

    def send(self, peer: int, payload: bytes) -> bool:
        """Queue one frame for a peer; False (and counted) if not connected or full."""
        link = self.links.get(peer)
        if link is None or link.closed:
            self.stats.dropped_frames += 1
            return False
        frame = encode_frame(payload)
        if link.outbox_bytes + len(frame) > OUTBOX_BYTES:
            self.stats.dropped_frames += 1
            return False
        if not link.outbox and not link.sending:
            try:
                sent = os.write(link.stream.socket.fileno(), frame)
            except OSError:  # full (BlockingIOError) or broken: the writer task finds out
                sent = 0
            if sent:
                link.last_sent = trio.current_time()
            if sent == len(frame):
                self.stats.sent_frames += 1
                return True
            frame = frame[sent:]
        link.outbox.append(frame)
        link.outbox_bytes += len(frame)
        link.wake.set()
        return True

    def connected(self) -> list[int]:
        return sorted(p for p, link in self.links.items() if not link.closed)

    # -- accepting and dialing ----------------------------------------------------------------

    async def serve(self, listeners: list[trio.SocketListener]) -> None:
        await trio.serve_listeners(self._accepted, listeners)

    async def _accepted(self, stream: trio.SocketStream) -> None:
        stats = self.stats
        if stats.handshakes >= MAX_HANDSHAKES:
            stats.refused += 1
            await trio.aclose_forcefully(stream)
            return
        try:
            stats.handshakes += 1
            try:
                hello, decoder = await self._answer_hello(stream)
            finally:
                stats.handshakes -= 1
            if hello is not None:
                await self._run_link(hello, stream, decoder)
        except* Exception as group:
            self._contain(group)
        finally:
            await trio.aclose_forcefully(stream)

    async def _answer_hello(self, stream: trio.SocketStream) -> tuple[Hello | None, FrameDecoder]:
        """The accepting side's handshake: the peer's hello, or None when it failed or was
        refused (counted)."""
        decoder = FrameDecoder(_HELLO_LIMITS)
        try:
            with trio.fail_after(HANDSHAKE_TIMEOUT_S):
                kind, body = await _read_frame(stream, decoder)
                if kind != HELLO or not isinstance(body, Hello):
                    raise PeerProtocolError("expected a hello")
                problem = self._refusal(body)
                if problem is not None:
                    self.stats.rejected += 1
                    await stream.send_all(encode_frame(encode_reject(problem)))
                    return None, decoder
                await stream.send_all(encode_frame(encode_hello(self.local_hello(), HELLO_OK)))
        except _HANDSHAKE_FAILED:
            self.stats.bad_frames += 1
            return None, decoder
        decoder.set_limits(PEER_LIMITS)
        return body, decoder

    def _contain(self, group: BaseExceptionGroup[Exception]) -> None:
        """An unexpected exception in one connection: counted, reported (see FaultLog)."""
        self.stats.errors += 1
        self._faults.report("peer connection", group)

    async def dial_forever(self) -> None:
        """Keep a link to every peer this broker is the dialing side for."""
        async with trio.open_nursery() as nursery:
            while True:
                for peer in self.addresses():
                    if dials(self.node_id, peer, self.seeds) and peer not in self._dialing:
                        self._dialing.add(peer)
                        nursery.start_soon(self._dial, peer)
                await trio.sleep(0.2)

    async def _dial(self, peer: int) -> None:
        """Keep one link to `peer`: dial, handshake, run the link, back off, again. A failure
        of any kind ends that attempt only."""
        backoff = BACKOFF_MIN_S
        while True:
            linked = False
            try:
                linked = await self._dial_once(peer)
            except* Exception as group:
                self._contain(group)
            if linked:
                backoff = BACKOFF_MIN_S
                continue
            await trio.sleep(backoff * (0.5 + self._rng.random()))
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def _dial_once(self, peer: int) -> bool:
        """One attempt; True if it linked (and the link has ended since)."""
        address = self.addresses().get(peer)
        if address is None:
            return False
        host, _, port = address.rpartition(":")
        try:
            stream = await trio.open_tcp_stream(host, int(port))
        except (OSError, ValueError):
            return False
        try:
            decoder = FrameDecoder(_HELLO_LIMITS)
            try:
                await stream.send_all(encode_frame(encode_hello(self.local_hello())))
                with trio.fail_after(HANDSHAKE_TIMEOUT_S):
                    kind, body = await _read_frame(stream, decoder)
                if kind == REJECT:
                    self.stats.rejected += 1
                    raise PeerProtocolError(f"refused by {address}: {body}")
                if kind != HELLO_OK or not isinstance(body, Hello):
                    raise PeerProtocolError("expected a hello")
                problem = self._refusal(body)
                if problem is not None:
                    raise PeerProtocolError(problem)
            except _HANDSHAKE_FAILED:
                return False
            decoder.set_limits(PEER_LIMITS)
            await self._run_link(body, stream, decoder)
            return True
        finally:
            await trio.aclose_forcefully(stream)

    def _refusal(self, hello: Hello) -> str | None:
        mine = self.local_hello()
        if hello.node_id == self.node_id:
            return f"node id {hello.node_id} is mine"
        if mine.cluster_id and hello.cluster_id and mine.cluster_id != hello.cluster_id:
            return f"cluster {hello.cluster_id} is not this cluster ({mine.cluster_id})"
        return None

    # -- a link -------------------------------------------------------------------------------

    async def _run_link(
        self, hello: Hello, stream: trio.SocketStream, decoder: FrameDecoder
    ) -> None:
        old = self.links.get(hello.node_id)
        if old is not None:
            old.closed = True
            old.wake.set()
        link = _Link(
            hello.node_id, stream, hello.version, hello.quiesces and self.local_hello().quiesces
        )
        self.links[hello.node_id] = link
        self.stats.links += 1
        self.handler.on_hello(hello)
        reader = FrameReader(stream, decoder, self.budget)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._writer, link, nursery.cancel_scope)
                await self._reader(link, reader)
                nursery.cancel_scope.cancel()
        except* (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            self.stats.broken += 1  # the peer went away; the dialer (if it is us) reconnects
        finally:
            reader.close()
            link.closed = True
            self.stats.links -= 1
            if self.links.get(hello.node_id) is link:
                del self.links[hello.node_id]
                self.handler.on_link_lost(hello.node_id)

    async def _writer(self, link: _Link, scope: trio.CancelScope) -> None:
        while not link.closed:
            if not link.outbox:
                link.wake = trio.Event()
                if not link.keepalive:
                    await link.wake.wait()
                    continue
                idle = trio.current_time() - link.last_sent
                with trio.move_on_after(max(0.0, KEEPALIVE_INTERVAL_S - idle)):
                    await link.wake.wait()
                idle = trio.current_time() - link.last_sent
                if not link.outbox and not link.closed and idle >= KEEPALIVE_INTERVAL_S:
                    self.stats.keepalives += 1
                    self.send(link.peer, KEEPALIVE)  # written at once, as any frame
                continue
            frames = list(link.outbox)
            link.outbox.clear()
            link.outbox_bytes = 0
            link.sending = True
            with trio.move_on_after(STALL_TIMEOUT_S) as sending:
                await link.stream.send_all(b"".join(frames))
            link.sending = False
            link.last_sent = trio.current_time()
            if sending.cancelled_caught:
                self.stats.stalled += 1  # the peer does not read
                break
            self.stats.sent_frames += len(frames)
        scope.cancel()

    async def _reader(self, link: _Link, reader: FrameReader) -> None:
        handler = self.handler
        stats = self.stats
        me = self.node_id
        quiet = 0
        """Keepalive windows in a row in which nothing came (counted while this process runs:
        one it spent stopped, with every other broker of a paused machine, counts once)."""
        while not link.closed:
            try:
                frame = reader.next_buffered()
                if frame is None:
                    if link.keepalive:
                        got = await reader.receive(KEEPALIVE_WINDOW_S)
                        if got is Received.TIMEOUT:
                            quiet += 1
                            if quiet >= KEEPALIVE_SILENT_WINDOWS:
                                stats.silent += 1
                                return
                            continue
                        quiet = 0
                    else:
                        mid_frame = not reader.decoder.at_boundary
                        got = await reader.receive(STALL_TIMEOUT_S if mid_frame else math.inf)
                        if got is Received.TIMEOUT:
                            stats.stalled += 1
                            return
                    if got is Received.EOF:
                        return
                    continue
                try:
                    kind, body = decode_frame(frame, link.version)
                finally:
                    reader.budget.release(len(frame))
            except (PeerProtocolError, WireError):
                stats.bad_frames += 1
                return
            stats.received_frames += 1
            if kind == RAFT and isinstance(body, list):
                mine = accepted(body, link.peer, me)
                if len(mine) != len(body):
                    stats.dropped_messages += len(body) - len(mine)
                if mine:
                    handler.on_raft(mine)
            elif kind == HEARTBEAT and isinstance(body, BrokerHeartbeat):
                if body.node_id == link.peer:
                    handler.on_heartbeat(link.peer, body)
                else:
                    stats.dropped_messages += 1
            elif kind == HEARTBEAT_OK and isinstance(body, HeartbeatAck):
                handler.on_heartbeat_ack(link.peer, body)
            elif kind == PEER_REQUEST and isinstance(body, PeerRequest):
                handler.on_peer_request(link.peer, body)
            elif kind == PEER_RESPONSE and isinstance(body, PeerResponse):
                handler.on_peer_response(link.peer, body)
            elif isinstance(body, UnknownFrame):
                self._unknown_frame(link.peer, body)

    def _unknown_frame(self, peer: int, frame: UnknownFrame) -> None:
        """A newer peer's frame of a kind we do not know: skipped, and answered when it
        expects an answer."""
        self.stats.unknown_frames += 1
        if frame.request is None:
            return
        session, correlation_id = frame.request
        why = f"peer frame kind {frame.kind} is newer than this broker's protocol"
        why += f" (version {PEER_PROTOCOL_VERSION})"
        answer = PeerResponse(session, correlation_id, ErrorCode.UNSUPPORTED_VERSION, why, None)
        if self.send(peer, encode_peer_response(answer)):
            self.stats.unknown_answered += 1

    def reply_heartbeat(self, peer: int, ack: HeartbeatAck) -> None:
        self.send(peer, encode_heartbeat_ack(ack))


async def _read_frame(stream: trio.SocketStream, decoder: FrameDecoder) -> tuple[int, object]:
    while True:
        frame = decoder.next_frame()
        if frame is not None:
            return decode_frame(frame)
        data = await stream.receive_some(1 << 16)
        if not data:
            raise EOFError
        decoder.receive_data(data)
