"""Answers leave a connection in request order, whoever answers first: a request answered
at once behind one that waits is held until that one is answered; an answer the socket does
not take at once is finished before anything after it; and a connection that stops reading
while a request still waits closes once that request is answered. On a broker in the test's
Trio run, over real loopback TCP, read back with a raw client."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from broker.app import Broker, embedded
from broker.config import BrokerConfig, HostPort
from broker.wire.api import ApiKey
from broker.wire.batch import decode_records
from broker.wire.errors import ErrorCode
from broker.wire.frames import FrameDecoder
from broker.wire.limits import KiB, Limits, MiB
from broker.wire.messages import (
    ApiVersionsRequest,
    FetchPartition,
    FetchRequest,
    FetchResponse,
    FetchTopic,
    IsolationLevel,
    MetadataRequest,
)
from broker.wire.protocol import decode_response, encode_request, response_correlation_id
from consumers import Admin, Producer
from tests.support.wait import wait_until_async


@pytest.fixture
async def b(tmp_path: Path) -> AsyncIterator[Broker]:
    cfg = BrokerConfig(
        data_dir=tmp_path,
        listen=HostPort("127.0.0.1", 0),
        peer_listen=HostPort("127.0.0.1", 0),
        http_listen=HostPort("127.0.0.1", 0),
        max_frame_bytes=8 * MiB,
        request_budget_bytes=64 * MiB,
    )
    async with embedded(cfg) as broker:
        yield broker


def _fetch(topic: str, max_wait_ms: int, min_bytes: int, max_bytes: int = 1 * MiB) -> FetchRequest:
    return FetchRequest(
        topics=(FetchTopic(name=topic, partitions=(FetchPartition(partition=0, offset=0),)),),
        max_wait_ms=max_wait_ms,
        min_bytes=min_bytes,
        max_bytes=max_bytes,
        isolation=IsolationLevel.READ_COMMITTED,
    )


async def _frames(stream: trio.SocketStream, n: int) -> list[tuple[int, bytes, float]]:
    """The next `n` answer frames: (correlation id, payload, Trio time it was complete)."""
    decoder = FrameDecoder(Limits(max_frame_bytes=16 * MiB))
    out: list[tuple[int, bytes, float]] = []
    while len(out) < n:
        with trio.fail_after(10):
            data = await stream.receive_some(1 << 16)
        assert data, "the broker closed the connection"
        decoder.receive_data(data)
        while (payload := decoder.next_frame()) is not None:
            cid = response_correlation_id(payload)
            assert cid is not None
            out.append((cid, payload, trio.current_time()))
    return out


async def test_an_answer_ready_at_once_waits_for_the_request_before_it(b: Broker) -> None:
    async with Admin(str(b.addresses.clients)) as admin:
        await admin.create_topic("slow", partitions=1)
    stream = await trio.open_tcp_stream("127.0.0.1", b.addresses.clients.port)
    start = trio.current_time()
    # A fetch that waits up to 600 ms for bytes that never come, then two requests the
    # broker answers at once.
    await stream.send_all(
        encode_request(_fetch("slow", 600, 1 << 20), 1, "order")
        + encode_request(ApiVersionsRequest(), 2, "order")
        + encode_request(MetadataRequest(topics=("slow",)), 3, "order")
    )
    got = await _frames(stream, 3)
    assert [cid for cid, _, _ in got] == [1, 2, 3]
    assert got[1][2] - start >= 0.5, "the second answer left before the first"
    fetch = decode_response(got[0][1], ApiKey.FETCH, Limits())
    assert isinstance(fetch.body, FetchResponse)
    assert fetch.body.topics[0].partitions[0].batches == ()
    assert decode_response(got[1][1], ApiKey.API_VERSIONS, Limits()).error == ErrorCode.NONE
    assert decode_response(got[2][1], ApiKey.METADATA, Limits()).error == ErrorCode.NONE
    await stream.aclose()


async def test_a_large_answer_the_socket_takes_in_parts_comes_whole_and_first(b: Broker) -> None:
    async with Admin(str(b.addresses.clients)) as admin:
        await admin.create_topic("big", partitions=1)
    values = [bytes([i]) * (400 * KiB) for i in range(8)]
    async with Producer(str(b.addresses.clients), linger_ms=0) as p:
        for v in values:
            await p.send("big", v, partition=0)
        await p.flush()
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect(("127.0.0.1", b.addresses.clients.port))
    stream = trio.SocketStream(sock)
    await stream.send_all(
        encode_request(_fetch("big", 0, 1, max_bytes=4 * MiB), 1, "big")
        + encode_request(ApiVersionsRequest(), 2, "big")
    )
    await trio.sleep(0.2)  # let the broker's write fill the small socket buffer first
    got = await _frames(stream, 2)
    assert [cid for cid, _, _ in got] == [1, 2]
    fetch = decode_response(got[0][1], ApiKey.FETCH, Limits(max_frame_bytes=16 * MiB))
    assert isinstance(fetch.body, FetchResponse)
    read = [r.value for batch in fetch.body.topics[0].partitions[0].batches
            for r in decode_records(batch.data)]  # fmt: skip
    assert read == values[: len(read)] and len(read) >= 2
    assert decode_response(got[1][1], ApiKey.API_VERSIONS, Limits()).error == ErrorCode.NONE
    await wait_until_async(lambda: b.server.stats.budget_in_use == 0, "the budget given back")
    await stream.aclose()


async def test_a_connection_that_stops_reading_closes_once_its_last_answer_is_out(
    b: Broker,
) -> None:
    async with Admin(str(b.addresses.clients)) as admin:
        await admin.create_topic("quiet", partitions=1)
    stream = await trio.open_tcp_stream("127.0.0.1", b.addresses.clients.port)
    await stream.send_all(encode_request(_fetch("quiet", 300, 1 << 20), 1, "half"))
    await stream.send_eof()  # the client is done sending, still reading
    got = await _frames(stream, 1)
    assert [cid for cid, _, _ in got] == [1]
    assert await stream.receive_some(1 << 16) == b"", "the broker should close after it"
    await wait_until_async(lambda: b.server.stats.connections == 0, "the connection closed")
    await stream.aclose()
