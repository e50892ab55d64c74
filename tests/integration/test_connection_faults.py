"""Faults contained per connection, on a broker running in the test's Trio run over real
loopback TCP: a stalled frame, a client that stops reading, an unexpected exception in a
connection or in a request's handling, fetch answers held in the byte budget, and peer
connections that misbehave before or after their handshake. Each test checks the broker's
counters and that a normal client is still served."""

from __future__ import annotations

import socket
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from broker.app import Broker, embedded
from broker.config import BrokerConfig, HostPort
from broker.core.peer_codec import BrokerHeartbeat, Hello, encode_heartbeat, encode_hello
from broker.runtime import peers, server
from broker.wire.errors import ErrorCode
from broker.wire.frames import FrameDecoder, encode_frame
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
from broker.wire.protocol import ResponseEnvelope, decode_response, encode_request
from consumers import Admin, Producer
from tests.integration.wire_client import RawClient
from tests.support.wait import wait_until_async

MAX_FRAME = 1 * MiB
BUDGET = 2 * MiB


def config(data_dir: Path, **changes: Any) -> BrokerConfig:
    return BrokerConfig(
        data_dir=data_dir,
        listen=HostPort("127.0.0.1", 0),
        peer_listen=HostPort("127.0.0.1", 0),
        http_listen=HostPort("127.0.0.1", 0),
        max_frame_bytes=MAX_FRAME,
        request_budget_bytes=BUDGET,
        stall_timeout_s=0.5,
    ).replace(**changes)


@pytest.fixture
async def b(tmp_path: Path) -> AsyncIterator[Broker]:
    async with embedded(config(tmp_path)) as broker:
        yield broker


async def served(b: Broker) -> None:
    """A normal client gets its answer."""
    c = await RawClient.connect("127.0.0.1", b.addresses.clients.port)
    with trio.fail_after(10):
        assert (await c.call(ApiVersionsRequest())).error == ErrorCode.NONE
    await c.aclose()


async def read_to_eof(stream: trio.SocketStream) -> bytes:
    out = bytearray()
    with trio.fail_after(10):
        while data := await stream.receive_some(1 << 16):
            out += data
    return bytes(out)


async def test_a_frame_stalled_half_way_is_closed_and_its_room_given_back(b: Broker) -> None:
    s = await trio.open_tcp_stream("127.0.0.1", b.addresses.clients.port)
    await s.send_all(struct.pack(">I", 512 * KiB) + b"\x00" * 1000)
    # The whole frame is reserved as soon as its length is read.
    await wait_until_async(lambda: b.server.stats.budget_in_use >= 512 * KiB, "the reservation")
    assert await read_to_eof(s) == b""  # closed after stall_timeout_s, nothing answered
    assert b.server.stats.closed_stalled == 1
    await wait_until_async(lambda: b.server.stats.budget_in_use == 0, "the room given back")
    await served(b)


async def test_a_length_prefix_alone_keeps_the_connection_mid_frame(tmp_path: Path) -> None:
    """A length prefix sent on its own, its payload after a pause longer than the quiet
    delay: the connection waits for the payload (under the stall timeout) instead of going
    quiet and forgetting the prefix (which read the payload as a new length)."""
    frame = encode_request(ApiVersionsRequest(), 9, "slow")
    async with embedded(config(tmp_path, stall_timeout_s=10.0)) as b:
        c = await RawClient.connect("127.0.0.1", b.addresses.clients.port)
        await c.send_raw(frame[:4])
        await trio.sleep(server.QUIET_AFTER_S * 1.5)
        assert b.server.stats.active_connections == 1
        await c.send_raw(frame[4:])
        with trio.fail_after(10):
            answer = await c.next_frame()
        assert answer is not None
        assert _api_versions(answer).error == ErrorCode.NONE
        await c.aclose()


def _api_versions(frame: bytes) -> ResponseEnvelope:
    return decode_response(frame, ApiVersionsRequest.API_KEY, Limits())


async def test_a_client_that_stops_reading_its_answers_is_closed(b: Broker) -> None:
    async with Admin(str(b.addresses.clients)) as admin:
        await admin.create_topic("big", partitions=1)
    async with Producer(str(b.addresses.clients), linger_ms=0) as p:
        for _ in range(8):
            await p.send("big", b"v" * (500 * KiB), partition=0)
        await p.flush()
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect(("127.0.0.1", b.addresses.clients.port))
    s = trio.SocketStream(sock)
    fetch = _fetch("big", 900 * KiB)
    for corr in range(1, 40):  # answers of ~900 KiB each, never read
        await s.send_all(encode_request(fetch, corr, "sleepy"))
    await wait_until_async(
        lambda: b.server.stats.closed_stalled == 1, "the stall timeout", timeout=20
    )
    await wait_until_async(lambda: b.server.stats.budget_in_use == 0, "the room given back")
    await served(b)
    await s.aclose()


async def test_fetch_answers_shrink_to_the_room_left_and_are_held_until_sent(
    b: Broker,
) -> None:
    async with Admin(str(b.addresses.clients)) as admin:
        await admin.create_topic("t", partitions=1)
    async with Producer(str(b.addresses.clients), linger_ms=0) as p:
        for _ in range(4):
            await p.send("t", b"v" * (300 * KiB), partition=0)
        await p.flush()
    # A stalled frame holds 1 MiB of the 2 MiB budget.
    hog = await trio.open_tcp_stream("127.0.0.1", b.addresses.clients.port)
    await hog.send_all(struct.pack(">I", MAX_FRAME - 64) + b"\x00")
    await wait_until_async(lambda: b.server.stats.budget_in_use >= MAX_FRAME - 64, "the hog")
    c = await RawClient.connect("127.0.0.1", b.addresses.clients.port)
    c.decoder = FrameDecoder(Limits(max_frame_bytes=8 * MiB))
    r = await c.call(_fetch("t", 4 * MiB))
    assert isinstance(r.body, FetchResponse)
    size = sum(len(x.data) for x in r.body.topics[0].partitions[0].batches)
    # About 1 MiB of room: the answer carries some batches, not all 1.2 MiB of them,
    # and it was accounted in the budget while it waited to be sent.
    assert 300 * KiB <= size < 1200 * KiB, size
    assert b.server.stats.budget_peak >= MAX_FRAME - 64 + size
    await hog.aclose()
    await wait_until_async(lambda: b.server.stats.budget_in_use == 0, "the room given back")
    r = await c.call(_fetch("t", 4 * MiB))
    assert isinstance(r.body, FetchResponse)
    assert sum(len(x.data) for x in r.body.topics[0].partitions[0].batches) >= 1200 * KiB
    await c.aclose()


async def test_an_unexpected_exception_in_a_connection_closes_only_that_connection(
    b: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = server.decode_request

    def buggy(frame: bytes, limits: Limits, versions: Any) -> object:
        header, request = real(frame, limits, versions)
        if header.client_id == "trigger":
            raise RuntimeError("a bug in request decoding")
        return header, request

    monkeypatch.setattr(server, "decode_request", buggy)
    s = await trio.open_tcp_stream("127.0.0.1", b.addresses.clients.port)
    await s.send_all(encode_request(ApiVersionsRequest(), 7, "trigger"))
    assert await read_to_eof(s) == b""
    assert b.server.stats.closed_error == 1
    await served(b)
    await wait_until_async(lambda: b.server.stats.connections == 0, "every connection closed")
    assert b.server.stats.budget_in_use == 0


async def test_a_request_whose_handling_raises_is_answered_unknown_server_error(
    b: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    handler = b.driver.handler
    real = handler.handle

    def buggy(token: int, header: object, request: object) -> object:
        if isinstance(request, MetadataRequest):
            raise KeyError("a bug in the metadata handler")
        return real(token, header, request)  # type: ignore[arg-type]

    monkeypatch.setattr(handler, "handle", buggy)
    c = await RawClient.connect("127.0.0.1", b.addresses.clients.port)
    r = await c.call(MetadataRequest(topics=None))
    assert r.error == ErrorCode.UNKNOWN_SERVER_ERROR and "KeyError" in (r.message or "")
    assert (await c.call(ApiVersionsRequest())).error == ErrorCode.NONE  # same connection
    assert b.driver.stats().request_errors == 1
    await c.aclose()


async def test_peer_connections_that_misbehave_cost_only_themselves(
    b: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = b.addresses.peers.port
    net = b.network
    # A pre-handshake frame above the hello bound is refused before it is read.
    s = await trio.open_tcp_stream("127.0.0.1", port)
    await s.send_all(struct.pack(">I", peers.HELLO_FRAME_BYTES + 1) + b"\x00" * 100)
    assert await read_to_eof(s) == b""
    assert net.stats.bad_frames == 1
    # An unexpected exception inside a link closes that link only.
    monkeypatch.setattr(peers, "decode_frame", _raises)
    s = await trio.open_tcp_stream("127.0.0.1", port)
    hello = Hello(None, 1001, 5, "127.0.0.1:1", False)
    await s.send_all(encode_frame(encode_hello(hello)) + encode_frame(b"\x80"))
    await read_to_eof(s)
    assert net.stats.errors == 1
    monkeypatch.undo()
    # Too many handshakes at once: the extra connections are closed at once.
    monkeypatch.setattr(peers, "MAX_HANDSHAKES", 3)
    silent = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(3)]
    await wait_until_async(lambda: net.stats.handshakes == 3, "three pending handshakes")
    extra = await trio.open_tcp_stream("127.0.0.1", port)
    assert await read_to_eof(extra) == b""
    assert net.stats.refused == 1
    for x in silent:
        await x.aclose()
    await wait_until_async(lambda: net.stats.handshakes == 0, "the handshakes to end")
    assert net.budget.in_use == 0
    await served(b)


def _raises(payload: bytes) -> object:
    raise RuntimeError("a bug in the peer codec")


def _fetch(topic: str, max_bytes: int) -> FetchRequest:
    return FetchRequest(
        topics=(
            FetchTopic(
                name=topic, partitions=(FetchPartition(partition=0, offset=0, max_bytes=max_bytes),)
            ),
        ),
        max_wait_ms=0,
        min_bytes=1,
        max_bytes=max_bytes,
        isolation=IsolationLevel.READ_COMMITTED,
    )


def _parked_fetch(topic: str, max_wait_ms: int) -> FetchRequest:
    return FetchRequest(
        topics=(FetchTopic(name=topic, partitions=(FetchPartition(partition=0, offset=0),)),),
        max_wait_ms=max_wait_ms,
        min_bytes=1 << 30,
        max_bytes=1 << 20,
        isolation=IsolationLevel.READ_COMMITTED,
    )


async def test_parked_fetches_end_with_their_client_and_within_the_wait_cap(
    tmp_path: Path,
) -> None:
    """A fetch waiting for data its client will never read is answered when the client
    hangs up (it kept the connection and its budget for up to max_wait_ms, 24 days at
    most); and no fetch waits longer than request_timeout_ms_max."""
    async with embedded(config(tmp_path, request_timeout_ms_max=1000)) as b:
        async with Admin(str(b.addresses.clients)) as admin:
            await admin.create_topic("quiet", partitions=1)
        port = b.addresses.clients.port
        gone = [await RawClient.connect("127.0.0.1", port) for _ in range(5)]
        for c in gone:
            await c.send_raw(encode_request(_parked_fetch("quiet", 3_600_000), 1, "gone"))
        await wait_until_async(lambda: b.driver.stats().parked_fetches == 5, "five parked fetches")
        for c in gone:
            await c.aclose()
        await wait_until_async(
            lambda: b.driver.stats().parked_fetches == 0, "the fetches released", timeout=0.9
        )
        await wait_until_async(
            lambda: b.server.stats.connections == 0, "the connections closed", timeout=0.9
        )
        c = await RawClient.connect("127.0.0.1", port)
        start = trio.current_time()
        r = await c.call(_parked_fetch("quiet", 3_600_000))  # capped at 1 s
        assert r.error == ErrorCode.NONE and trio.current_time() - start < 5
        await c.aclose()


async def test_a_parked_fetch_runs_again_only_when_its_partitions_change(
    b: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    handler = b.driver.handler
    real = handler.fetch
    runs: list[str] = []

    def counting(req: FetchRequest, cap: int | None = None) -> object:
        runs.append(req.topics[0].name)
        return real(req, cap)

    monkeypatch.setattr(handler, "fetch", counting)
    async with Admin(str(b.addresses.clients)) as admin:
        await admin.create_topic("watched", partitions=1)
        await admin.create_topic("busy", partitions=1)
    c = await RawClient.connect("127.0.0.1", b.addresses.clients.port)
    await c.send_raw(encode_request(_parked_fetch("watched", 60_000), 1, "w"))
    await wait_until_async(lambda: b.driver.stats().parked_fetches == 1, "the parked fetch")
    async with Producer(str(b.addresses.clients), linger_ms=0) as p:
        for i in range(50):
            await p.send_and_wait("busy", b"%d" % i, partition=0)
        assert runs.count("watched") == 1  # 50 rounds moved another partition only
        await p.send_and_wait("watched", b"x", partition=0)
    await wait_until_async(
        lambda: runs.count("watched") == 2, "a run after its own partition moved"
    )
    assert b.driver.stats().parked_fetches == 1  # still short of min_bytes
    await c.aclose()


def _reset(stream: trio.SocketStream) -> None:
    """Close with a reset (SO_LINGER 0), as a crashed or hostile peer does."""
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    stream.socket.close()


async def test_connections_reset_mid_read_give_back_all_their_room(b: Broker) -> None:
    """A reset seen by a read gave back nothing of the room taken for it: 16 MiB of the
    request budget and 64 MiB of the peer budget leaked per reset (found by the live
    fuzzer)."""
    hello = encode_frame(encode_hello(Hello(None, 1002, 5, "127.0.0.1:1", False)))
    for i in range(20):
        c = await trio.open_tcp_stream("127.0.0.1", b.addresses.clients.port)
        await c.send_all(encode_request(ApiVersionsRequest(), i, "r")[: 3 + i % 5])
        p = await trio.open_tcp_stream("127.0.0.1", b.addresses.peers.port)
        await p.send_all(hello + struct.pack(">I", 1000)[: 1 + i % 4])
        await trio.sleep(0.01)  # let the broker read what was sent before the reset
        _reset(c)
        _reset(p)
    await wait_until_async(
        lambda: b.server.stats.connections == 0 and b.network.stats.links == 0, "the resets"
    )
    assert b.server.stats.budget_in_use == 0
    assert b.network.budget.in_use == 0
    await served(b)


async def test_a_peer_cannot_claim_leadership_of_partitions_it_does_not_hold(b: Broker) -> None:
    """A heartbeat from a broker that registered a moment ago claiming a partition at a huge
    term: the controller records only leaders reported by a replica of the partition about
    itself (such a claim hid the real leader from every client, found by the live fuzzer)."""
    async with Admin(str(b.addresses.clients)) as admin:
        await admin.create_topic("led", partitions=1)
    gid = b.node.meta.topics["led"].partitions[0].group_id
    s = await trio.open_tcp_stream("127.0.0.1", b.addresses.peers.port)
    hb = BrokerHeartbeat(1003, 5, "127.0.0.1", 1, "127.0.0.1", 2, None, ((gid, 1 << 40, 1003),))
    await s.send_all(
        encode_frame(encode_hello(Hello(None, 1003, 5, "127.0.0.1:2", False)))
        + encode_frame(encode_heartbeat(hb)) * 3
    )
    await wait_until_async(lambda: 1003 in b.node.meta.brokers, "the fake broker's registration")
    await s.aclose()
    async with Admin(str(b.addresses.clients)) as admin:
        described = await admin.describe_topic("led")
    assert described.partitions[0].leader == 0
    assert gid not in b.node.meta.leaders or b.node.meta.leaders[gid][1] != 1003
