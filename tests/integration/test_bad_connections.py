"""One connection's bad bytes cost that connection only: a real broker process keeps serving
everyone else, and keeps every record it acknowledged."""

from __future__ import annotations

import socket
from collections.abc import Callable

import trio

from broker.wire.errors import ErrorCode
from broker.wire.frames import FrameDecoder
from broker.wire.limits import Limits, MiB
from broker.wire.messages import (
    ApiVersionsRequest,
    FetchPartition,
    FetchRequest,
    FetchResponse,
    FetchTopic,
    IsolationLevel,
)
from broker.wire.protocol import decode_response, encode_request
from consumers import Admin, Producer
from tests.integration.wire_client import RawClient
from tests.support.harness import BrokerProcess

BIG_FETCH_BYTES = 12 * MiB


async def _fill(bootstrap: str, topic: str, total: int) -> None:
    async with Admin(bootstrap) as admin:
        await admin.create_topic(topic, partitions=1)
    async with Producer(bootstrap, linger_ms=0) as p:
        value = bytes(range(256)) * 256  # 64 KiB
        for _ in range(total // len(value)):
            await p.send(topic, value, partition=0)
        await p.flush()


async def _connect_slow_reader(port: int) -> trio.SocketStream:
    """A connection whose receive window is tiny: the broker's send of a large answer
    blocks until the test reads."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect(("127.0.0.1", port))
    return trio.SocketStream(sock)


async def _bad_prefix_during_answer(port: int, bootstrap: str) -> None:
    with trio.fail_after(60):
        await _bad_prefix_during_answer_in_time(port, bootstrap)


async def _bad_prefix_during_answer_in_time(port: int, bootstrap: str) -> None:
    await _fill(bootstrap, "big", BIG_FETCH_BYTES)
    stream = await _connect_slow_reader(port)
    fetch = FetchRequest(
        topics=(
            FetchTopic(
                name="big",
                partitions=(FetchPartition(partition=0, offset=0, max_bytes=BIG_FETCH_BYTES),),
            ),
        ),
        max_wait_ms=0,
        min_bytes=1,
        max_bytes=BIG_FETCH_BYTES,
        isolation=IsolationLevel.READ_COMMITTED,
    )
    await stream.send_all(encode_request(fetch, 1, "slow"))
    # The first bytes of the answer prove the broker is inside its send of ~12 MiB, which
    # cannot finish while this side does not read.
    first = await stream.receive_some(16)
    assert first
    await stream.send_all(b"\x00\x00\x00\x00")  # a frame with a declared length of 0

    # The bad connection gets its whole answer, then the error, then the close.
    decoder = FrameDecoder(Limits(max_frame_bytes=64 * MiB))
    decoder.receive_data(first)
    frames: list[bytes] = []
    while True:
        data = await stream.receive_some(1 << 16)
        if not data:
            break
        decoder.receive_data(data)
        while (frame := decoder.next_frame()) is not None:
            frames.append(frame)

    # Everyone else is still served.
    probe = await RawClient.connect("127.0.0.1", port)
    reply = await probe.call(ApiVersionsRequest())
    assert reply.error == ErrorCode.NONE
    await probe.aclose()

    assert decoder.at_boundary, "the connection was closed in the middle of the answer"
    assert len(frames) == 2, [len(f) for f in frames]
    answer = decode_response(frames[0], fetch.API_KEY, Limits(max_frame_bytes=64 * MiB))
    assert isinstance(answer.body, FetchResponse)
    assert answer.body.topics[0].partitions[0].error == ErrorCode.NONE
    error = decode_response(frames[1], ApiVersionsRequest.API_KEY, Limits())
    assert error.error == ErrorCode.INVALID_FRAME, error


def test_bad_length_prefix_while_an_answer_is_being_written(
    broker_factory: Callable[..., BrokerProcess],
) -> None:
    b = broker_factory()
    b.start()
    b.wait_ready()
    trio.run(_bad_prefix_during_answer, b.client_port, b.bootstrap)
    assert b.returncode is None, b.log_tail()
