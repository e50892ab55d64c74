"""Per-connection version negotiation against scripted brokers on local sockets: the highest
shared version of each API, requests and answers at that version, a broker that speaks only
version 0, and a broker that refuses the client's API_VERSIONS with its ranges."""

from __future__ import annotations

from collections.abc import Mapping

import trio

from broker.wire.api import SUPPORTED_VERSIONS, ApiKey, VersionRange, capped
from broker.wire.errors import ErrorCode
from broker.wire.messages import (
    ApiVersionRange,
    ApiVersionsResponse,
    FetchPartition,
    FetchPartitionResult,
    FetchRequest,
    FetchResponse,
    FetchTopic,
    FetchTopicResult,
)
from broker.wire.protocol import RequestHeader
from consumers.connection import Connection
from tests.support import fake_broker
from tests.support.fake_broker import Send

V0_ONLY = capped({key: 0 for key in ApiKey})
FETCH = FetchRequest(
    topics=(FetchTopic(name="t", partitions=(FetchPartition(partition=0, offset=3),)),)
)


def ranges(table: Mapping[ApiKey, VersionRange]) -> ApiVersionsResponse:
    return ApiVersionsResponse(
        apis=tuple(
            ApiVersionRange(api_key=int(k), min_version=lo, max_version=hi)
            for k, (lo, hi) in table.items()
        ),
        node_id=1,
    )


async def serve(
    nursery: trio.Nursery,
    table: Mapping[ApiKey, VersionRange],
    seen: list[tuple[ApiKey, int]],
    *,
    refuse_api_versions: bool = False,
) -> int:
    """A fake broker advertising `table`: API_VERSIONS answered with it (or refused with
    it), FETCH answered at the version asked with next_offset 4; every request's (key,
    version) noted in `seen`."""
    error = ErrorCode.UNSUPPORTED_VERSION if refuse_api_versions else ErrorCode.NONE

    async def answer(header: RequestHeader, request: object, send: Send) -> None:
        part = FetchPartitionResult(partition=0, high_watermark=4, next_offset=4)
        body = FetchResponse(topics=(FetchTopicResult(name="t", partitions=(part,)),))
        await send(header.correlation_id, ErrorCode.NONE, None, body)

    handshake = (error, "too new" if refuse_api_versions else None, ranges(table))
    return await fake_broker.serve(nursery, answer, handshake=handshake, seen=seen)


async def fetch_through(nursery: trio.Nursery, port: int) -> tuple[Connection, FetchResponse]:
    conn = Connection("127.0.0.1", port)
    await nursery.start(conn.run)
    response = await conn.request(FETCH)
    assert isinstance(response, FetchResponse)
    await conn.aclose()
    return conn, response


async def test_the_highest_shared_version_is_used_both_ways(nursery: trio.Nursery) -> None:
    seen: list[tuple[ApiKey, int]] = []
    conn, response = await fetch_through(nursery, await serve(nursery, SUPPORTED_VERSIONS, seen))
    assert conn.versions == {key: high for key, (_, high) in SUPPORTED_VERSIONS.items()}
    assert (conn.versions[ApiKey.FETCH], conn.versions[ApiKey.PRODUCE]) == (2, 1)
    assert seen == [(ApiKey.API_VERSIONS, 0), (ApiKey.FETCH, 2)]
    assert response.topics[0].partitions[0].next_offset == 4  # read as v1 and later


async def test_a_broker_of_version_0_is_spoken_to_at_version_0(nursery: trio.Nursery) -> None:
    seen: list[tuple[ApiKey, int]] = []
    conn, response = await fetch_through(nursery, await serve(nursery, V0_ONLY, seen))
    assert conn.versions == {key: 0 for key in ApiKey}
    assert seen == [(ApiKey.API_VERSIONS, 0), (ApiKey.FETCH, 0)]
    assert response.topics[0].partitions[0].next_offset is None  # v0 has none


async def test_a_refusal_with_the_ranges_still_negotiates(nursery: trio.Nursery) -> None:
    """A broker that does not speak the client's API_VERSIONS version answers
    UNSUPPORTED_VERSION with its ranges (at version 0): the client uses them."""
    seen: list[tuple[ApiKey, int]] = []
    port = await serve(nursery, V0_ONLY, seen, refuse_api_versions=True)
    conn, response = await fetch_through(nursery, port)
    assert conn.versions == {key: 0 for key in ApiKey} and conn.node_id == 1
    assert seen[-1] == (ApiKey.FETCH, 0)
    assert response.topics[0].partitions[0].high_watermark == 4
