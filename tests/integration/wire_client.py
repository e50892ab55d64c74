"""A minimal raw-protocol client for tests that must not depend on the client library:
frames in and out, one request at a time."""

from __future__ import annotations

import itertools

import trio

from broker.wire import cbor
from broker.wire.api import ApiKey
from broker.wire.frames import FrameDecoder, encode_frame
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

    async def call(self, request: Request, *, api_version: int = 0) -> ResponseEnvelope:
        """`request` at `api_version`; its answer read at the same version."""
        frame = encode_request(request, next(self.ids), "test", api_version=api_version)
        await self.stream.send_all(frame)
        answer = await self.next_frame()
        assert answer is not None, "connection closed"
        return decode_response(answer, request.API_KEY, Limits(), api_version=api_version)

    async def call_raw(
        self, api_key: ApiKey, api_version: int, body: object, *, read_at: int = 0
    ) -> ResponseEnvelope:
        """A request envelope built by hand (any version, any body); its answer read as
        `api_key`'s at version `read_at`."""
        payload = cbor.encode([int(api_key), api_version, next(self.ids), "test", body])
        await self.stream.send_all(encode_frame(payload))
        answer = await self.next_frame()
        assert answer is not None, "connection closed"
        return decode_response(answer, api_key, Limits(), api_version=read_at)

    async def aclose(self) -> None:
        await self.stream.aclose()
