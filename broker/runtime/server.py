"""The client listener: pipelined requests per connection, answers in order, every fault
contained in its connection, and one byte budget for the whole broker.

A connection is *quiet* until bytes arrive: one task waiting for the socket to be readable,
no buffer, no decoder, no channel (an idle connection costs about 5 KiB). When bytes arrive
it becomes *active*: a reader (frames in, requests decoded and handed to the driver, at most
`max_inflight` unanswered) and a queue of its requests in order. Answers leave in request
order, several coalesced into one write: the moment the request at the head of the queue is
answered, whoever answered it (the driver, as it resolves the request) writes the answered
prefix of the queue without waiting (`_flush`), so an answer never waits for a task switch.
A writer task finishes what the socket did not take at once, and abandons requests whose
time is up. After `QUIET_AFTER_S` with nothing in flight and nothing buffered it is quiet
again.

Invariants:
- One write at a time on a connection's stream, in request order: `_flush` writes only while
  no tail of an earlier write is unsent, and only the writer task sends such a tail; an error
  frame for broken framing is queued behind the answers already owed, then the connection
  closes.
- Whatever goes wrong inside a connection (a bad frame, a client that stops reading or stalls
  half-way through a frame, an unexpected exception) ends that connection only: it is
  counted in `ServerStats`, logged (an unexpected exception with its traceback, once per
  kind), and never reaches the listener.
- The bytes of requests received and not yet answered (partial frames included), plus the
  answers built and not yet sent, are accounted in one ByteBudget. While it is spent no
  connection reads (TCP pushes back on clients); fetch answers shrink to what fits.
- A frame must keep arriving: a connection silent for `stall_timeout_s` in the middle of a
  frame, or not reading its answers for as long, is closed. A quiet connection is closed
  after `idle_timeout_s`.
- Requests are decoded against the version ranges the broker serves (`versions`, the same
  table its API_VERSIONS answer lists); one outside them is answered UNSUPPORTED_VERSION and
  the connection goes on. Every answer is written at its request's version.
"""

from __future__ import annotations

import enum
import logging
import math
import os
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

import trio

from broker.core.requests import Reply
from broker.runtime.budget import ByteBudget
from broker.runtime.driver import Driver, Op
from broker.runtime.fault_log import FaultLog
from broker.runtime.frame_reader import FrameReader, Received
from broker.runtime.metrics import BrokerMetrics
from broker.wire.api import SUPPORTED_VERSIONS, ApiKey, VersionRange
from broker.wire.batch import data_record_count
from broker.wire.errors import ErrorCode, WireError
from broker.wire.frames import HEADER_BYTES as FRAME_PREFIX_BYTES
from broker.wire.frames import FrameDecoder
from broker.wire.limits import Limits
from broker.wire.messages import (
    CreateTopicsRequest,
    DeleteTopicsRequest,
    FetchRequest,
    FetchResponse,
    ProduceRequest,
    ProduceResponse,
)
from broker.wire.protocol import decode_request, encode_response

log = logging.getLogger("sluice.server")

QUIET_AFTER_S = 1.0
"""An active connection with nothing in flight and nothing buffered for this long drops its
reader state and writer task."""

_ERROR_QUEUE_TIMEOUT_S = 5.0
_LINGER_S = 1.0
_LINGER_BYTES = 1 << 20


class _After(enum.Enum):
    """How an active period of a connection ended."""

    QUIET = "quiet"
    CLOSE = "close"
    LINGER = "linger"
    """Close after `_linger`: an error frame must reach the client."""


async def _linger(stream: trio.SocketStream) -> None:
    """Send our end of stream, then read and drop what the client still sends (a little,
    briefly) until it closes too: closing with its bytes unread would make the kernel
    reset the connection, and a reset can destroy the answers and the error frame the
    client has not read yet."""
    dropped = 0
    with trio.move_on_after(_LINGER_S):
        await stream.send_eof()
        while dropped < _LINGER_BYTES:
            data = await stream.receive_some(64 * 1024)
            if not data:
                return
            dropped += len(data)


def request_budget(limit: int) -> ByteBudget:
    """The broker-wide budget for client requests: a quarter kept for small requests."""
    return ByteBudget(limit, limit // 4)


@dataclass
class ServerStats:
    connections: int = 0
    active_connections: int = 0
    """Connections with a reader and a writer (the rest are quiet: one waiting task)."""
    inflight: int = 0
    """Requests read but not yet answered."""
    accepted: int = 0
    refused: int = 0
    """Connections closed at once: over `max_connections`, or the broker draining."""
    closed_bad_frame: int = 0
    closed_idle: int = 0
    closed_stalled: int = 0
    """Silent in the middle of a frame, or not reading answers, for `stall_timeout_s`."""
    closed_error: int = 0
    """Ended by an unexpected exception (a bug): logged, contained in the connection."""
    reset_by_client: int = 0
    budget_bytes: int = 0
    """The request budget's limit."""
    budget_in_use: int = 0
    budget_peak: int = 0
    budget_waiting: int = 0
    """Connections not being read right now because the budget is spent."""
    budget_waits: int = 0


class _Active:
    """The state of an active connection (dropped when it goes quiet)."""

    __slots__ = (
        "answers", "armed", "budget", "closed", "fd", "held", "inflight", "linger", "reader",
        "reading", "room", "scope", "sending", "stalled", "unsent", "wake",
    )  # fmt: skip

    def __init__(self, reader: FrameReader, budget: ByteBudget, fd: int) -> None:
        self.reader = reader
        self.budget = budget
        self.fd = fd
        self.inflight = 0
        self.answers: deque[Op] = deque()
        """Requests read and not yet written, in request order."""
        self.unsent: memoryview | None = None
        """The tail of a write the socket did not take at once (the writer task sends it)."""
        self.sending: list[Op] = []
        """The requests whose answers that tail finishes."""
        self.held = 0
        """Budget bytes of this connection's requests and answers not yet sent."""
        self.reading = True
        self.stalled = False
        self.closed = False
        self.linger = False
        """An error frame was the last thing sent: close gently, so the client reads it."""
        self.scope: trio.CancelScope | None = None
        self.wake = trio.Event()
        """The writer task looks again (a tail to send, an earlier deadline, the end)."""
        self.room: trio.Event | None = None
        """Set when the reader waits for the requests in flight to drop below the bound."""
        self.armed = math.inf
        """The deadline the writer task waits for (the earliest `expires_at` it saw)."""

    def account_answer(self, nbytes: int) -> None:
        """The driver built an answer of `nbytes` for one of this connection's requests
        (after the connection ended, nobody will send it: nothing to account)."""
        if not self.closed:
            self.budget.force(nbytes)
            self.held += nbytes

    def close(self) -> None:
        self.closed = True
        self.budget.release(self.held)
        self.held = 0
        self.reader.close()


class ClientServer:
    def __init__(
        self,
        driver: Driver,
        limits: Limits,
        *,
        max_inflight: int,
        idle_timeout_s: float,
        max_connections: int,
        max_request_timeout_ms: int,
        budget: ByteBudget,
        stall_timeout_s: float,
        versions: Mapping[ApiKey, VersionRange] = SUPPORTED_VERSIONS,
        metrics: BrokerMetrics | None = None,
    ) -> None:
        self.driver = driver
        self.limits = limits
        self.metrics = metrics
        """Counts and times every answered request (None: not measured)."""
        self.versions = versions
        """The API versions this broker accepts (as its API_VERSIONS answer lists them)."""
        self.max_inflight = max_inflight
        self.idle_timeout_s = idle_timeout_s
        self.max_connections = max_connections
        self.max_request_timeout_ms = max_request_timeout_ms
        self.budget = budget
        self.stall_timeout_s = stall_timeout_s
        self._stats = ServerStats()
        self._faults = FaultLog(log)
        self.draining = False

    @property
    def stats(self) -> ServerStats:
        s = self._stats
        b = self.budget
        s.budget_bytes, s.budget_in_use, s.budget_peak = b.limit, b.in_use, b.peak
        s.budget_waiting, s.budget_waits = b.waiting, b.waits
        return s

    async def serve(self, listeners: list[trio.SocketListener]) -> None:
        await trio.serve_listeners(self.handle, listeners)

    async def handle(self, stream: trio.SocketStream) -> None:
        """One connection, start to end; nothing it does escapes to the listener."""
        stats = self._stats
        if stats.connections >= self.max_connections or self.draining:
            stats.refused += 1
            await trio.aclose_forcefully(stream)
            return
        stats.connections += 1
        stats.accepted += 1
        try:
            await self._serve(stream)
        except* (trio.BrokenResourceError, trio.ClosedResourceError):
            stats.reset_by_client += 1  # the client went away: nothing to answer
        except* Exception as group:
            stats.closed_error += 1
            self._faults.report("client connection", group)
        finally:
            stats.connections -= 1
            await trio.aclose_forcefully(stream)

    async def _serve(self, stream: trio.SocketStream) -> None:
        while not self.draining:
            with trio.move_on_after(self.idle_timeout_s) as idle:
                await trio.lowlevel.wait_readable(stream.socket)
            if idle.cancelled_caught:
                self._stats.closed_idle += 1
                return
            after = await self._active(stream)
            if after is _After.LINGER:
                await _linger(stream)
            if after is not _After.QUIET:
                return

    async def _active(self, stream: trio.SocketStream) -> _After:
        """Serve until the connection is quiet or over."""
        stats = self._stats
        conn = _Active(
            FrameReader(stream, FrameDecoder(self.limits), self.budget), self.budget,
            stream.socket.fileno(),
        )  # fmt: skip
        stats.active_connections += 1
        try:
            async with trio.open_nursery() as nursery:
                conn.scope = nursery.cancel_scope
                nursery.start_soon(self._writer, stream, conn)
                try:
                    quiet = await self._read_requests(conn)
                finally:
                    conn.reader.close()  # a partial frame is dropped now, not after the answers
                    conn.reading = False
                    conn.wake.set()
            if conn.linger:
                return _After.LINGER
            return _After.QUIET if quiet and not conn.stalled else _After.CLOSE
        finally:
            self._abandon(conn, fetches_only=False)  # ended early: nobody will read them
            stats.active_connections -= 1
            stats.inflight -= conn.inflight
            conn.close()

    async def _read_requests(self, conn: _Active) -> bool:
        reader = conn.reader
        stats = self._stats
        driver = self.driver
        while not self.draining:
            try:
                frame = reader.next_buffered()
            except WireError as e:
                # The framing itself is broken (length out of bounds): nothing can follow.
                stats.closed_bad_frame += 1
                await self._queue(conn, _error_op(e), _ERROR_QUEUE_TIMEOUT_S)
                conn.linger = True
                return False
            if frame is None:
                driver.start_submitted()
                mid_frame = not reader.decoder.at_boundary
                timeout = self.stall_timeout_s if mid_frame else QUIET_AFTER_S
                got = await reader.receive(timeout)
                if got is Received.EOF:
                    # The client is done sending: what it asked is answered, but a parked
                    # fetch is answered now, with what there is, not after its wait.
                    self._abandon(conn, fetches_only=True)
                    return False
                if got is Received.TIMEOUT:
                    if mid_frame:
                        stats.closed_stalled += 1
                        return False
                    if conn.inflight == 0:
                        return True
                continue
            conn.held += len(frame)  # from here on released with the answer, or at close
            op = self._decode(frame)
            if op is None:
                stats.closed_bad_frame += 1  # not even a correlation id: cannot answer
                return False
            op.held = len(frame)
            op.account = conn.account_answer
            if op.reply is None:
                driver.submit(op)
            await self._queue(conn, op, math.inf)
        return False

    async def _queue(self, conn: _Active, op: Op, timeout: float) -> None:
        """Queue `op` for its answer (waiting while `max_inflight` are in flight), or give up
        after `timeout`. Its answer is written as soon as it and every request before it
        are answered."""
        if len(conn.answers) >= self.max_inflight:
            with trio.move_on_after(timeout):
                while len(conn.answers) >= self.max_inflight:
                    conn.room = trio.Event()
                    await conn.room.wait()
            if len(conn.answers) >= self.max_inflight:
                return
        conn.inflight += 1
        self._stats.inflight += 1
        conn.answers.append(op)
        if op.reply is not None:
            self._flush(conn)
            return
        op.on_answer = lambda: self._answered(conn)
        if op.expires_at < conn.armed:
            conn.wake.set()  # the writer task waits for an earlier deadline now

    def _abandon(self, conn: _Active, *, fetches_only: bool) -> None:
        """Tell the driver to stop waiting on this connection's unanswered requests."""
        for op in conn.answers:
            if op.reply is None and (not fetches_only or isinstance(op.request, FetchRequest)):
                self.driver.abandon(op)

    def _decode(self, frame: bytes) -> Op | None:
        """The request as an Op; an Op already answered when the request is bad but names
        its correlation id; None when it does not."""
        try:
            header, request = decode_request(frame, self.limits, self.versions)
        except WireError as e:
            if e.correlation_id is None:
                return None
            return _error_op(e)
        op = Op(header, request, started=trio.current_time())
        tracing = self.driver.tracing
        if tracing is not None:
            op.span = tracing.request_started(header, request)
        timeout_ms = _timeout_ms(request)
        if timeout_ms is not None:
            timeout_s = min(timeout_ms, self.max_request_timeout_ms) / 1000
            op.expires_at = trio.current_time() + timeout_s
        return op

    def _answered(self, conn: _Active) -> None:
        """One of the connection's requests was answered (called by whoever resolved it):
        write what is due. A failure ends this connection only, never the caller."""
        try:
            self._flush(conn)
        except Exception as e:
            self._stats.closed_error += 1
            self._faults.report("client connection", e)
            conn.closed = True
            if conn.scope is not None:
                conn.scope.cancel()

    def _flush(self, conn: _Active) -> None:
        """Write the answered prefix of the queue in one write, without waiting; what the
        socket does not take is left to the writer task (and nothing is written until it
        has sent it)."""
        answers = conn.answers
        if conn.closed or conn.unsent is not None or not answers or answers[0].reply is None:
            return
        ops = [answers.popleft()]
        while answers and answers[0].reply is not None:
            ops.append(answers.popleft())
        frames = [_encode(op) for op in ops]
        payload = b"".join(frames)
        if self.metrics is not None:
            try:
                _measure(self.metrics, ops, frames)
            except Exception as e:  # measuring must never cost an answer
                self._faults.report("request metrics", e)
        try:
            sent = _write_nowait(conn.fd, payload)
        except trio.BrokenResourceError:
            self._stats.reset_by_client += 1
            conn.closed = True
            if conn.scope is not None:
                conn.scope.cancel()
            return
        if sent < len(payload):
            conn.unsent = memoryview(payload)[sent:]
            conn.sending = ops
            conn.wake.set()
        else:
            self._sent(conn, ops)

    def _sent(self, conn: _Active, ops: list[Op]) -> None:
        """`ops`' answers are written: release what they held."""
        done = 0
        for op in ops:
            done += op.held + op.reply_bytes
        conn.held -= done
        self.budget.release(done)
        conn.inflight -= len(ops)
        self._stats.inflight -= len(ops)
        room = conn.room
        if room is not None and len(conn.answers) < self.max_inflight:
            conn.room = None
            room.set()
        if not conn.reading and not conn.answers:
            conn.wake.set()  # the last answer of a connection that stopped reading: end

    async def _writer(self, stream: trio.SocketStream, conn: _Active) -> None:
        """Sends the tails of writes the socket did not take at once, abandons requests
        whose time is up (the driver then answers them), and ends once reading has ended
        and every answer is sent. It never writes an answer itself: `_flush` does."""
        stats = self._stats
        answers = conn.answers
        while True:
            unsent = conn.unsent
            if unsent is not None:
                with trio.move_on_after(self.stall_timeout_s) as sending:
                    await stream.send_all(unsent)
                if sending.cancelled_caught:
                    stats.closed_stalled += 1  # the client does not read its answers
                    conn.stalled = True
                    if conn.scope is not None:
                        conn.scope.cancel()
                    return
                ops, conn.sending, conn.unsent = conn.sending, [], None
                self._sent(conn, ops)
                self._flush(conn)
                continue
            if not answers and not conn.reading:
                return
            now = trio.current_time()
            armed = math.inf
            for op in answers:
                if op.reply is None and op.expires_at <= now:
                    op.expires_at = math.inf  # abandoned once; the driver answers it
                    self.driver.abandon(op)
                elif op.reply is None and op.expires_at < armed:
                    armed = op.expires_at
            conn.armed = armed
            conn.wake = trio.Event()
            with trio.move_on_at(armed):
                await conn.wake.wait()


_API_NAMES = {key: key.name.lower() for key in ApiKey}


def _measure(metrics: BrokerMetrics, ops: list[Op], frames: list[bytes]) -> None:
    """Count, time and size answered requests (`frames`: their answers as sent; a bad frame
    without a header is not counted); count the records of produce and fetch answers from
    their batch headers, per topic. Work per request and per batch, never per record."""
    now = trio.current_time()
    for op, frame in zip(ops, frames, strict=True):
        header, reply = op.header, op.reply
        if header is None or reply is None:
            continue
        key = header.api_key
        seconds = now - op.started
        metrics.request_answered(
            _API_NAMES[key], reply.error.name, seconds, op.held + FRAME_PREFIX_BYTES, len(frame)
        )
        if key is ApiKey.PRODUCE:
            _produced(metrics, op.request, reply, seconds)
        elif key is ApiKey.FETCH and isinstance(reply.body, FetchResponse):
            for t in reply.body.topics:
                n = 0
                for p in t.partitions:
                    if p.error == ErrorCode.NONE:
                        for b in p.batches:
                            n += data_record_count(b.data)
                if n:
                    metrics.records_fetched(t.name, n)


def _produced(metrics: BrokerMetrics, req: object, reply: Reply, seconds: float) -> None:
    """Records of the batches a produce answer acknowledged, per topic; the commit latency
    of an answer without any error."""
    body = reply.body
    if not isinstance(req, ProduceRequest) or not isinstance(body, ProduceResponse):
        return
    clean = reply.error == ErrorCode.NONE
    for t, tr in zip(req.topics, body.topics, strict=True):
        n = 0
        for p, pr in zip(t.partitions, tr.partitions, strict=True):
            if pr.error == ErrorCode.NONE:
                n += data_record_count(p.batch)
            else:
                clean = False
        if n:
            metrics.records_produced(t.name, n)
    if clean:
        metrics.produce_committed(seconds)


def _write_nowait(fd: int, payload: bytes) -> int:
    """Bytes of `payload` the socket took at once (0 when its buffer is full): answers
    usually leave in one system call, with no trip through the scheduler."""
    try:
        return os.write(fd, payload)
    except BlockingIOError:
        return 0
    except OSError as e:  # the client reset the connection, and the like
        raise trio.BrokenResourceError(f"write failed: {e}") from e


def _timeout_ms(request: object) -> int | None:
    if isinstance(request, (ProduceRequest, CreateTopicsRequest, DeleteTopicsRequest)):
        return request.timeout_ms
    return None


def _encode(op: Op) -> bytes:
    """The answer's frame, its body at the request's version."""
    r = op.reply
    assert r is not None
    version = 0 if op.header is None else op.header.api_version
    try:
        return encode_response(r.correlation_id, r.error, r.message, r.body, api_version=version)
    except ValueError as e:
        return encode_response(r.correlation_id, ErrorCode.UNKNOWN_SERVER_ERROR, str(e), None)


def _error_op(e: WireError) -> Op:
    """An answered Op carrying the error of broken framing (correlation id 0 when the
    frame could not name one)."""
    op = Op(header=None, request=None)  # type: ignore[arg-type]
    op.resolve(Reply(e.correlation_id if e.correlation_id is not None else 0, e.code,
                     e.message, None))  # fmt: skip
    return op
