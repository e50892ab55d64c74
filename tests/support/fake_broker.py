"""Scripted fake brokers on local sockets, for the client library's tests.

`serve` starts a server in the test's nursery that speaks the wire protocol: it answers the
API_VERSIONS handshake itself and hands every other request to the test's `Handler`, each in
its own task, which answers through `send` (in any order, late, or never). `local_metadata`
is a METADATA answer naming such brokers; `closed_port` is a port on which nothing listens: a
broker that is down.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

import trio

from broker.wire.api import SUPPORTED_VERSIONS, ApiKey
from broker.wire.errors import ErrorCode
from broker.wire.frames import FrameDecoder
from broker.wire.messages import (
    ApiVersionRange,
    ApiVersionsResponse,
    BrokerInfo,
    MetadataResponse,
    Response,
)
from broker.wire.protocol import RequestHeader, decode_request, encode_response

Send = Callable[[int, ErrorCode, str | None, Response | None], Awaitable[None]]
"""send(correlation id, error, error message, body): one response frame."""
Handler = Callable[[RequestHeader, object, Send], Awaitable[None]]
Answer = tuple[ErrorCode, str | None, Response | None]
"""(error, error message, body) of a response."""


def versions(skip: ApiKey | None = None) -> ApiVersionsResponse:
    """Every API the client supports, at every version (but `skip`), from node 7 of cluster
    "fake"."""
    return ApiVersionsResponse(
        apis=tuple(
            ApiVersionRange(api_key=int(k), min_version=lo, max_version=hi)
            for k, (lo, hi) in SUPPORTED_VERSIONS.items()
            if k is not skip
        ),
        node_id=7,
        cluster_id="fake",
    )


def local_metadata(
    ports: Mapping[int, int], *, controller: int | None = 0, cluster_id: str = "c"
) -> MetadataResponse:
    """A METADATA answer naming brokers on 127.0.0.1 (node id -> port, in id order) and no
    topics."""
    return MetadataResponse(
        cluster_id=cluster_id,
        controller=controller,
        brokers=tuple(BrokerInfo(id=i, host="127.0.0.1", port=p) for i, p in sorted(ports.items())),
        topics=(),
    )


async def serve(
    nursery: trio.Nursery,
    handler: Handler,
    port: int = 0,
    *,
    handshake: Answer | None = None,
    streams: list[trio.SocketStream] | None = None,
    seen: list[tuple[ApiKey, int]] | None = None,
    ordered: bool = False,
) -> int:
    """A fake broker listening on `port` (0: any free one); returns the port. It answers
    API_VERSIONS with `handshake` (default: no error, `versions()`) and hands every other
    request to `handler`, at the version it came in. Each connection it accepts is appended to
    `streams` if given: a test may close one itself (`trio.aclose_forcefully`), which ends that
    connection; `seen`, if given, gets every request's (API, version). `ordered`: a
    connection's requests are handled one at a time, in order (as a real broker answers
    them), so a request the handler holds back holds back the rest of its connection."""
    error, message, body = handshake or (ErrorCode.NONE, None, versions())

    async def connection(stream: trio.SocketStream) -> None:
        if streams is not None:
            streams.append(stream)
        decoder = FrameDecoder()
        lock = trio.Lock()
        version_of: dict[int, int] = {}
        """correlation id -> the version its request was sent at (answered at the same)."""

        async def send(cid: int, error: ErrorCode, msg: str | None, body: Response | None) -> None:
            frame = encode_response(cid, error, msg, body, api_version=version_of.pop(cid, 0))
            async with lock:
                await stream.send_all(frame)

        async with trio.open_nursery() as tasks:
            while True:
                try:
                    data = await stream.receive_some(65536)
                except trio.ClosedResourceError:
                    return  # the test closed this connection
                if not data:
                    return
                decoder.receive_data(data)
                while (frame := decoder.next_frame()) is not None:
                    header, request = decode_request(frame)
                    version_of[header.correlation_id] = header.api_version
                    if seen is not None:
                        seen.append((header.api_key, header.api_version))
                    if header.api_key is ApiKey.API_VERSIONS:
                        await send(header.correlation_id, error, message, body)
                    elif ordered:
                        await handler(header, request, send)
                    else:
                        tasks.start_soon(handler, header, request, send)

    listeners = await nursery.start(trio.serve_tcp, connection, port)
    return int(listeners[0].socket.getsockname()[1])


async def closed_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago and on which nothing listens now."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = int(listeners[0].socket.getsockname()[1])
    for listener in listeners:
        await listener.aclose()
    return port
