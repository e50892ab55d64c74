"""A real broker process holds 10,000 concurrent client connections while it keeps serving
produce and fetch. Latencies are printed (a benchmark figure), never asserted."""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable

import trio

from broker.wire.batch import Record, encode_batch
from broker.wire.errors import ErrorCode
from broker.wire.messages import (
    ApiVersionsRequest,
    CreateTopicsRequest,
    FetchPartition,
    FetchRequest,
    FetchTopic,
    IsolationLevel,
    NewTopic,
    ProducePartition,
    ProduceRequest,
    ProduceTopic,
)
from tests.integration.wire_client import RawClient
from tests.support.harness import BrokerProcess

CONNECTIONS = 10_000


def _raise_fd_limit(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need <= hard or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def test_ten_thousand_connections(broker_factory: Callable[..., BrokerProcess]) -> None:
    _raise_fd_limit(CONNECTIONS + 500)
    b = broker_factory()
    b.start()
    b.wait_ready()
    figures = trio.run(_hold_and_probe, b.client_port)
    print(
        f"\n{CONNECTIONS} connections opened in {figures['connect_s']:.2f}s; "
        f"produce p50 {figures['p50_ms']:.2f} ms p99 {figures['p99_ms']:.2f} ms "
        f"(200 requests while all were open)"
    )
    assert figures["answered"] == CONNECTIONS
    assert b.returncode is None, b.log_tail()


async def _hold_and_probe(port: int) -> dict[str, float]:
    clients: list[RawClient] = []
    limit = trio.CapacityLimiter(400)
    answered = 0

    async def open_one() -> None:
        nonlocal answered
        async with limit:
            c = await RawClient.connect("127.0.0.1", port)
            r = await c.call(ApiVersionsRequest())
            if r.error == ErrorCode.NONE:
                answered += 1
            clients.append(c)

    t0 = time.monotonic()
    with trio.fail_after(120):
        async with trio.open_nursery() as n:
            for _ in range(CONNECTIONS):
                n.start_soon(open_one)
    connect_s = time.monotonic() - t0
    probe = await RawClient.connect("127.0.0.1", port)
    r = await probe.call(
        CreateTopicsRequest(
            topics=(NewTopic(name="conn", partitions=1, replication_factor=1, config={}),),
            timeout_ms=10_000,
        )
    )
    assert r.error == ErrorCode.NONE
    batch = encode_batch([Record(value=b"x" * 100, timestamp=0)])
    produce = ProduceRequest(
        topics=(
            ProduceTopic(name="conn", partitions=(ProducePartition(partition=0, batch=batch),)),
        ),
        timeout_ms=10_000,
        transactional_id=None,
        acks=-1,
    )
    latencies = []
    for _ in range(200):
        s = time.perf_counter()
        r = await probe.call(produce)
        latencies.append((time.perf_counter() - s) * 1000)
        assert r.body.topics[0].partitions[0].error == ErrorCode.NONE  # type: ignore[union-attr]
    f = await probe.call(
        FetchRequest(
            topics=(
                FetchTopic(
                    name="conn",
                    partitions=(FetchPartition(partition=0, offset=0, max_bytes=1 << 20),),
                ),
            ),
            max_wait_ms=0,
            min_bytes=1,
            max_bytes=1 << 20,
            isolation=IsolationLevel.READ_COMMITTED,
        )
    )
    assert f.body.topics[0].partitions[0].high_watermark == 200  # type: ignore[union-attr]
    # Every held connection is still served.
    for c in clients[:: CONNECTIONS // 20]:
        r = await c.call(ApiVersionsRequest())
        assert r.error == ErrorCode.NONE
    for c in [*clients, probe]:
        await c.aclose()
    latencies.sort()
    return {
        "connect_s": connect_s,
        "answered": answered,
        "p50_ms": statistics.median(latencies),
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1],
    }
