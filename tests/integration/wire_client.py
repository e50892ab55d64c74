"""A minimal raw-protocol client for tests that must not depend on the client library:
frames in and out, one request at a time."""

from __future__ import annotations

import itertools

import trio

from broker.wire.frames import FrameDecoder
from broker.wire.limits import Limits
from broker.wire.messages import Request
from broker.wire.protocol import ResponseEnvelope, decode_response, encode_request


class RawClient:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.decoder = FrameDecoder(Limits())
        self.ids = itertools.count(1)

    @classmethod
    async def connect(cls, host: str, port: int) -> RawClient:
        return cls(await trio.open_tcp_stream(host, port))

    async def send_raw(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def next_frame(self) -> bytes | None:
        """The next response frame, or None if the broker closed the connection."""
        while True:
            frame = self.decoder.next_frame()
            if frame is not None:
                return frame
            data = await self.stream.receive_some(1 << 16)
            if not data:
                return None
            self.decoder.receive_data(data)

    async def call(self, request: Request) -> ResponseEnvelope:
        await self.stream.send_all(encode_request(request, next(self.ids), "test"))
        frame = await self.next_frame()
        assert frame is not None, "connection closed"
        return decode_response(frame, request.API_KEY, Limits())

    async def aclose(self) -> None:
        await self.stream.aclose()
