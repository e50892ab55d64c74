"""The broker under attack: the topics and Raft groups the run uses on it, the fake broker
ids the peer connections pose as, what the fuzzer learns of it before fuzzing (`Target`:
its addresses, node id, incarnation, cluster id and groups) and how (`api_versions`,
`learn_peer_identity`), and the limits its answers are read with."""

from __future__ import annotations

from dataclasses import dataclass

import trio

from broker.core.peer_codec import HELLO_OK, PEER_FRAME_BYTES, Hello, decode_frame, encode_hello
from broker.wire.api import ApiKey
from broker.wire.frames import FrameDecoder, encode_frame
from broker.wire.limits import MAX_FRAME_BYTES_CEILING, Limits
from broker.wire.messages import ApiVersionsRequest, ApiVersionsResponse
from broker.wire.protocol import decode_response, encode_request

CHECKED_TOPIC = "fz-checked"
"""Written only by the normal producers of this run; read back at the end."""
CHECKED_PARTITIONS = 3
RAFT_TOPIC = "fz-raft"
"""Its partition groups are what fake peers may send Raft messages to (`--raft-groups safe`)."""
RAFT_PARTITIONS = 2
MISSING_GROUP = 1_000_000
"""A group id no broker hosts."""
PEER_ID_BASE = 1000
PEER_ID_POOL = 8
"""Fake brokers claim ids PEER_ID_BASE .. + PEER_ID_POOL - 1 (a broker remembers each)."""

RESPONSE_LIMITS = Limits(
    max_frame_bytes=MAX_FRAME_BYTES_CEILING, max_array_items=1_000_000, max_frame_items=50_000_000
)


@dataclass
class Target:
    """The broker under attack, as learned before fuzzing starts."""

    client: tuple[str, int]
    peer: tuple[str, int] | None
    node_id: int
    incarnation: int
    cluster_id: str | None
    raft_groups: tuple[int, ...]
    protected_groups: frozenset[int]
    max_frame_bytes: int


async def learn_peer_identity(peer: tuple[str, int]) -> tuple[int, int, str | None]:
    """The broker's (node id, incarnation, cluster id), from the HELLO_OK it gives a fake
    broker (the first id of the pool)."""
    hello = Hello(None, PEER_ID_BASE, 1, "127.0.0.1:1", False)
    stream = await trio.open_tcp_stream(*peer)
    try:
        with trio.fail_after(10):
            await stream.send_all(encode_frame(encode_hello(hello)))
            decoder = FrameDecoder(Limits(max_frame_bytes=PEER_FRAME_BYTES))
            while (frame := decoder.next_frame()) is None:
                data = await stream.receive_some(1 << 16)
                if not data:
                    raise RuntimeError("the broker closed the peer handshake")
                decoder.receive_data(data)
        kind, body = decode_frame(frame)
        if kind != HELLO_OK or not isinstance(body, Hello):
            raise RuntimeError(f"peer handshake refused: {kind} {body!r}")
        return body.node_id, body.incarnation, body.cluster_id
    finally:
        await trio.aclose_forcefully(stream)


async def api_versions(host: str, port: int) -> ApiVersionsResponse:
    stream = await trio.open_tcp_stream(host, port)
    try:
        with trio.fail_after(10):
            await stream.send_all(encode_request(ApiVersionsRequest(), 1, "fuzz-setup"))
            decoder = FrameDecoder(RESPONSE_LIMITS)
            while (frame := decoder.next_frame()) is None:
                data = await stream.receive_some(1 << 16)
                if not data:
                    raise RuntimeError("the broker closed the connection")
                decoder.receive_data(data)
        body = decode_response(frame, ApiKey.API_VERSIONS).body
        assert isinstance(body, ApiVersionsResponse)
        return body
    finally:
        await trio.aclose_forcefully(stream)
