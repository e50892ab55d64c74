"""One connection against a scripted fake broker on a local socket: handshake, correlation
ids, the in-flight bound, typed errors, failures of every pending request."""

from __future__ import annotations

import pytest
import trio

from broker.wire.api import ApiKey
from broker.wire.errors import ErrorCode
from broker.wire.messages import MetadataRequest, MetadataResponse
from broker.wire.protocol import RequestHeader
from consumers.connection import Connection
from consumers.errors import (
    BrokerUnavailableError,
    InvalidRequestError,
    RequestTimedOutError,
    UnsupportedVersionError,
)
from tests.support.fake_broker import Send, closed_port, serve, versions
from tests.support.wait import wait_until_async


def metadata(tag: int) -> MetadataResponse:
    return MetadataResponse(cluster_id=str(tag), controller=None, brokers=(), topics=())


async def never_asked(header: RequestHeader, request: object, send: Send) -> None:
    raise AssertionError(f"no request follows a refused handshake: {request!r}")


async def open_connection(nursery: trio.Nursery, port: int, **kwargs: object) -> Connection:
    conn = Connection("127.0.0.1", port, **kwargs)  # type: ignore[arg-type]
    await nursery.start(conn.run)
    return conn


async def test_responses_are_matched_by_correlation_id(nursery: trio.Nursery) -> None:
    async def handler(header: RequestHeader, request: object, send: Send) -> None:
        assert isinstance(request, MetadataRequest) and request.topics is not None
        delay = int(request.topics[0][1:])
        await trio.sleep(delay / 100)  # later requests answered first
        await send(header.correlation_id, ErrorCode.NONE, None, metadata(delay))

    port = await serve(nursery, handler)
    conn = await open_connection(nursery, port, max_in_flight=5)
    assert conn.node_id == 7 and conn.cluster_id == "fake"
    results: dict[int, str | None] = {}

    async def ask(delay: int) -> None:
        response = await conn.request(MetadataRequest(topics=(f"d{delay}",)))
        assert isinstance(response, MetadataResponse)
        results[delay] = response.cluster_id

    async with trio.open_nursery() as n:
        for delay in (5, 1, 3):
            n.start_soon(ask, delay)
    assert results == {5: "5", 1: "1", 3: "3"}
    await conn.aclose()


async def test_in_flight_bound(nursery: trio.Nursery) -> None:
    release = trio.Event()
    seen = 0

    async def handler(header: RequestHeader, request: object, send: Send) -> None:
        nonlocal seen
        seen += 1
        await release.wait()
        await send(header.correlation_id, ErrorCode.NONE, None, metadata(0))

    port = await serve(nursery, handler)
    conn = await open_connection(nursery, port, max_in_flight=2)
    pending = [await conn.submit(MetadataRequest()) for _ in range(2)]
    assert not conn.has_capacity()
    with trio.move_on_after(0.2) as scope:
        await conn.submit(MetadataRequest())
    assert scope.cancelled_caught and seen == 2
    release.set()
    for p in pending:
        await p.result()
    assert conn.has_capacity()
    await conn.aclose()


async def test_request_level_error_is_typed(nursery: trio.Nursery) -> None:
    async def handler(header: RequestHeader, request: object, send: Send) -> None:
        await send(header.correlation_id, ErrorCode.INVALID_REQUEST, "topics[0]: bad", None)

    conn = await open_connection(nursery, await serve(nursery, handler))
    with pytest.raises(InvalidRequestError, match="topics"):
        await conn.request(MetadataRequest())
    assert not conn.closed  # a request error leaves the connection usable
    await conn.aclose()


async def test_a_dropped_connection_fails_every_pending_request(nursery: trio.Nursery) -> None:
    streams: list[trio.SocketStream] = []
    got = trio.Event()
    count = 0

    async def handler(header: RequestHeader, request: object, send: Send) -> None:
        nonlocal count
        count += 1
        if count == 3:
            got.set()
        await trio.sleep_forever()

    port = await serve(nursery, handler, streams=streams)
    conn = await open_connection(nursery, port)
    failures: list[Exception] = []

    async def ask() -> None:
        try:
            await conn.request(MetadataRequest())
        except BrokerUnavailableError as e:
            failures.append(e)

    async with trio.open_nursery() as n:
        for _ in range(3):
            n.start_soon(ask)
        await wait_until_async(got.is_set, "the three requests at the broker", timeout=2)
        await trio.aclose_forcefully(streams[0])
    assert len(failures) == 3 and all(isinstance(e, BrokerUnavailableError) for e in failures)
    assert all(e.retriable for e in failures)  # type: ignore[attr-defined]
    assert conn.closed
    with pytest.raises(BrokerUnavailableError):
        await conn.request(MetadataRequest())


async def test_timeout_closes_the_connection(nursery: trio.Nursery) -> None:
    async def handler(header: RequestHeader, request: object, send: Send) -> None:
        await trio.sleep_forever()

    conn = await open_connection(nursery, await serve(nursery, handler))
    with pytest.raises(RequestTimedOutError):
        await conn.request(MetadataRequest(), timeout_s=0.1)
    assert conn.closed
    with trio.fail_after(1):
        await conn._ended.wait()  # the reader noticed and closed the socket


async def test_handshake_refuses_a_broker_without_a_needed_api(nursery: trio.Nursery) -> None:
    handshake = (ErrorCode.NONE, None, versions(ApiKey.FETCH))
    port = await serve(nursery, never_asked, handshake=handshake)
    with pytest.raises(UnsupportedVersionError, match="FETCH"):
        await open_connection(nursery, port)


async def test_handshake_refuses_unsupported_version(nursery: trio.Nursery) -> None:
    handshake = (ErrorCode.UNSUPPORTED_VERSION, "v9", None)
    port = await serve(nursery, never_asked, handshake=handshake)
    with pytest.raises(UnsupportedVersionError):
        await open_connection(nursery, port)


async def test_connect_failure_is_broker_unavailable(nursery: trio.Nursery) -> None:
    with pytest.raises(BrokerUnavailableError):
        await open_connection(nursery, await closed_port(), connect_timeout_s=1.0)
