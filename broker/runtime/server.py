"""The client listener: one task per connection, pipelined requests, responses in order.

Each connection has a reader (frames in, requests decoded and handed to the driver) and a
writer (responses out in request order, several coalesced into one send). A bounded channel
between them caps the requests in flight per connection: a client that sends faster than the
broker answers is slowed down by TCP, not buffered without bound. A frame that cannot be
decoded gets an error response when its correlation id can be read, else the connection is
closed. Idle connections are closed after `idle_timeout_s`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import trio

from broker.core.requests import Reply
from broker.runtime.driver import Driver, Op
from broker.wire.errors import ErrorCode, WireError
from broker.wire.frames import FrameDecoder
from broker.wire.limits import Limits
from broker.wire.messages import CreateTopicsRequest, DeleteTopicsRequest, ProduceRequest
from broker.wire.protocol import decode_request, encode_response

RECEIVE_BYTES = 64 * 1024


@dataclass
class ServerStats:
    connections: int = 0
    inflight: int = 0
    """Requests read but not yet answered."""
    accepted: int = 0
    closed_bad_frame: int = 0
    closed_idle: int = 0
    reset_by_client: int = 0


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
    ) -> None:
        self.driver = driver
        self.limits = limits
        self.max_inflight = max_inflight
        self.idle_timeout_s = idle_timeout_s
        self.max_connections = max_connections
        self.max_request_timeout_ms = max_request_timeout_ms
        self.stats = ServerStats()
        self.draining = False

    async def serve(self, listeners: list[trio.SocketListener]) -> None:
        await trio.serve_listeners(self.handle, listeners)

    async def handle(self, stream: trio.SocketStream) -> None:
        stats = self.stats
        if stats.connections >= self.max_connections or self.draining:
            await trio.aclose_forcefully(stream)
            return
        stats.connections += 1
        stats.accepted += 1
        try:
            send, receive = trio.open_memory_channel[Op](self.max_inflight)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._writer, stream, receive)
                async with send:
                    await self._reader(stream, send)
        except* (trio.BrokenResourceError, trio.ClosedResourceError):
            stats.reset_by_client += 1  # the client went away: nothing to answer
        finally:
            stats.connections -= 1
            await trio.aclose_forcefully(stream)

    async def _reader(self, stream: trio.SocketStream, send: trio.MemorySendChannel[Op]) -> None:
        decoder = FrameDecoder(self.limits)
        driver = self.driver
        while not self.draining:
            with trio.move_on_after(self.idle_timeout_s) as idle:
                data = await stream.receive_some(RECEIVE_BYTES)
            if idle.cancelled_caught:
                self.stats.closed_idle += 1
                return
            if not data:
                return
            try:
                decoder.receive_data(data)
                while (frame := decoder.next_frame()) is not None:
                    op = self._decode(frame)
                    if op is None:
                        self.stats.closed_bad_frame += 1
                        return
                    if op.reply is None:
                        driver.submit(op)
                    self.stats.inflight += 1
                    await send.send(op)
            except WireError as e:
                # The framing itself is broken (length out of bounds): nothing can follow.
                self.stats.closed_bad_frame += 1
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await stream.send_all(_error_frame(e, 0))
                return

    def _decode(self, frame: bytes) -> Op | None:
        try:
            header, request = decode_request(frame, self.limits)
        except WireError as e:
            if e.correlation_id is None:
                return None
            op = Op(header=None, request=None)  # type: ignore[arg-type]
            op.resolve(Reply(e.correlation_id, e.code, e.message, None))
            return op
        op = Op(header, request)
        timeout_ms = _timeout_ms(request)
        if timeout_ms is not None:
            timeout_s = min(timeout_ms, self.max_request_timeout_ms) / 1000
            op.expires_at = trio.current_time() + timeout_s
        return op

    async def _writer(
        self, stream: trio.SocketStream, receive: trio.MemoryReceiveChannel[Op]
    ) -> None:
        async with receive:
            async for op in receive:
                await self._answered(op)
                out = [_encode(op)]
                # Coalesce every further answer that is already due into one send.
                while True:
                    try:
                        nxt = receive.receive_nowait()
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                    await self._answered(nxt)
                    out.append(_encode(nxt))
                try:
                    await stream.send_all(b"".join(out))
                finally:
                    self.stats.inflight -= len(out)

    async def _answered(self, op: Op) -> None:
        if op.reply is not None:
            return
        with trio.move_on_at(op.expires_at):
            await op.done.wait()
        if op.reply is None:
            self.driver.abandon(op)
            await op.done.wait()


def _timeout_ms(request: object) -> int | None:
    if isinstance(request, (ProduceRequest, CreateTopicsRequest, DeleteTopicsRequest)):
        return request.timeout_ms
    return None


def _encode(op: Op) -> bytes:
    r = op.reply
    assert r is not None
    try:
        return encode_response(r.correlation_id, r.error, r.message, r.body)
    except ValueError as e:
        return encode_response(r.correlation_id, ErrorCode.UNKNOWN_SERVER_ERROR, str(e), None)


def _error_frame(e: WireError, correlation_id: int) -> bytes:
    return encode_response(
        e.correlation_id if e.correlation_id is not None else correlation_id,
        e.code,
        e.message,
        None,
    )
