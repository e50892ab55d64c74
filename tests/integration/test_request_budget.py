"""Memory for requests is bounded as a whole, on a real broker process.

150 connections each declare a 16 MiB frame and send 8 MiB of it (1.2 GiB offered): the
broker reads until its request budget is spent, then stops reading (the rest waits in the
kernel's socket buffers), keeps answering a normal client from the budget's reserve, and its
RSS stays under its baseline plus the budget. Idle connections cost at most 8 KiB each.
Figures are printed; memory bounds are asserted (they are the acceptance, not a benchmark).
"""

from __future__ import annotations

import resource
import struct
import time
from collections.abc import Callable
from typing import Any

import trio

from broker.wire.batch import Record, encode_batch
from broker.wire.errors import ErrorCode
from broker.wire.limits import MiB
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
from tests.support.wait import poll_until_async

HOLDERS = 150
DECLARED = 16 * MiB
SENT = 8 * MiB
BUDGET = 128 * MiB  # the default request_budget_bytes
IDLE_CONNECTIONS = 10_000
IDLE_BOUND_BYTES = 8 * 1024


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _wait_stats(
    b: BrokerProcess, ok: Callable[[dict[str, Any]], bool], what: str, timeout: float = 60
) -> dict[str, Any]:
    """The broker's counters (GET /stats, in a thread) once `ok` accepts them."""
    return await poll_until_async(
        lambda: trio.to_thread.run_sync(b.stats),
        ok,
        what,
        timeout=timeout,
        detail=lambda stats: stats["server"],
    )


async def _normal_client_round_trip(port: int, topic: str) -> None:
    """What a well-behaved client does: every request answered, the record read back."""
    c = await RawClient.connect("127.0.0.1", port)
    assert (await c.call(ApiVersionsRequest())).error == ErrorCode.NONE
    r = await c.call(
        CreateTopicsRequest(
            topics=(NewTopic(name=topic, partitions=1, replication_factor=1, config={}),),
            timeout_ms=10_000,
        )
    )
    assert r.error == ErrorCode.NONE
    batch = encode_batch([Record(value=b"still served", timestamp=0)])
    produce = ProduceRequest(
        topics=(
            ProduceTopic(name=topic, partitions=(ProducePartition(partition=0, batch=batch),)),
        ),
        timeout_ms=10_000,
        transactional_id=None,
        acks=-1,
    )
    r = await c.call(produce)
    assert r.body.topics[0].partitions[0].error == ErrorCode.NONE  # type: ignore[union-attr]
    f = await c.call(
        FetchRequest(
            topics=(FetchTopic(name=topic, partitions=(FetchPartition(partition=0, offset=0),)),),
            max_wait_ms=0,
            min_bytes=1,
            max_bytes=1 << 20,
            isolation=IsolationLevel.READ_COMMITTED,
        )
    )
    part = f.body.topics[0].partitions[0]  # type: ignore[union-attr]
    assert part.error == ErrorCode.NONE and part.high_watermark == 1
    await c.aclose()


async def _half_sent_frames(b: BrokerProcess) -> dict[str, float]:
    port = b.client_port
    await _normal_client_round_trip(port, "warm")  # code paths loaded before the baseline
    baseline = b.rss_bytes()
    streams: list[trio.SocketStream] = []
    payload = b"\x00" * SENT
    header = struct.pack(">I", DECLARED)
    peak = baseline

    async def hold(stream: trio.SocketStream) -> None:
        # Blocks once the broker stops reading and the socket buffers are full.
        await stream.send_all(header + payload)

    async with trio.open_nursery() as nursery:
        for _ in range(HOLDERS):
            s = await trio.open_tcp_stream("127.0.0.1", port)
            streams.append(s)
            nursery.start_soon(hold, s)
        # A frame's whole size is reserved before its payload is read: as many frames as
        # fit under the budget's large class are being read, every other reader waits.
        fit = (BUDGET - BUDGET // 4) // (DECLARED + 4)
        stats = await _wait_stats(
            b,
            lambda st: (
                st["server"]["budget_waiting"] == HOLDERS - fit
                and st["server"]["budget_in_use"] >= fit * DECLARED
            ),
            "the budget to be spent",
        )
        peak = max(peak, b.rss_bytes())
        # A normal client is served meanwhile (its small requests use the reserve).
        with trio.fail_after(20):
            await _normal_client_round_trip(port, "meanwhile")
        for _ in range(10):
            peak = max(peak, b.rss_bytes())
            await trio.sleep(0.05)
        held = stats["server"]["budget_in_use"]
        nursery.cancel_scope.cancel()
    for s in streams:
        await trio.aclose_forcefully(s)
    after = await _wait_stats(
        b,
        lambda st: st["server"]["budget_in_use"] == 0 and st["server"]["connections"] == 0,
        "the budget to be given back",
    )
    assert b.returncode is None, b.log_tail()
    return {
        "baseline_mib": baseline / MiB,
        "peak_mib": peak / MiB,
        "growth_mib": (peak - baseline) / MiB,
        "held_mib": held / MiB,
        "budget_peak_mib": after["server"]["budget_peak"] / MiB,
        "waits": after["server"]["budget_waits"],
    }


def test_half_sent_large_frames_stay_within_the_request_budget(
    broker_factory: Callable[..., BrokerProcess],
) -> None:
    _raise_fd_limit()
    b = broker_factory(request_budget_bytes=BUDGET)
    b.start()
    b.wait_ready()
    f = trio.run(_half_sent_frames, b)
    print(
        f"\n{HOLDERS} connections x {SENT // MiB} MiB of {DECLARED // MiB} MiB frames: RSS "
        f"{f['baseline_mib']:.0f} -> {f['peak_mib']:.0f} MiB (+{f['growth_mib']:.0f} MiB; "
        f"budget {BUDGET // MiB} MiB, {f['held_mib']:.0f} MiB held, peak "
        f"{f['budget_peak_mib']:.0f} MiB, {f['waits']} reads waited)"
    )
    assert f["growth_mib"] * MiB <= BUDGET, f
    assert f["budget_peak_mib"] * MiB <= BUDGET, f


async def _idle_connections(b: BrokerProcess) -> dict[str, float]:
    port = b.client_port
    await _normal_client_round_trip(port, "warm")
    baseline = b.rss_bytes()
    limit = trio.CapacityLimiter(400)
    held: list[trio.SocketStream | RawClient] = []

    async def raw() -> None:
        async with limit:
            held.append(await trio.open_tcp_stream("127.0.0.1", port))

    async def after_a_request() -> None:
        async with limit:
            c = await RawClient.connect("127.0.0.1", port)
            assert (await c.call(ApiVersionsRequest())).error == ErrorCode.NONE
            held.append(c)

    t0 = time.monotonic()
    with trio.fail_after(120):
        async with trio.open_nursery() as n:
            for i in range(IDLE_CONNECTIONS):
                n.start_soon(raw if i % 2 else after_a_request)
    stats = await _wait_stats(
        b,
        lambda st: (
            st["server"]["connections"] == IDLE_CONNECTIONS
            and st["server"]["active_connections"] == 0
        ),
        "every connection to be quiet",
    )
    rss = b.rss_bytes()
    # Every one of them is still served.
    for c in held[:: IDLE_CONNECTIONS // 50]:
        if isinstance(c, RawClient):
            assert (await c.call(ApiVersionsRequest())).error == ErrorCode.NONE
    for c in held:
        await (c.aclose() if isinstance(c, RawClient) else trio.aclose_forcefully(c))
    assert stats["server"]["budget_in_use"] == 0
    return {
        "open_s": time.monotonic() - t0,
        "baseline_mib": baseline / MiB,
        "rss_mib": rss / MiB,
        "per_conn_kib": (rss - baseline) / IDLE_CONNECTIONS / 1024,
    }


def test_idle_connections_cost_at_most_8_kib_each(
    broker_factory: Callable[..., BrokerProcess],
) -> None:
    """Half of them never sent a byte, half made a request and went quiet."""
    _raise_fd_limit()
    b = broker_factory()
    b.start()
    b.wait_ready()
    f = trio.run(_idle_connections, b)
    print(
        f"\n{IDLE_CONNECTIONS} idle connections (opened in {f['open_s']:.1f}s): RSS "
        f"{f['baseline_mib']:.0f} -> {f['rss_mib']:.0f} MiB = {f['per_conn_kib']:.2f} KiB each"
    )
    assert f["per_conn_kib"] * 1024 <= IDLE_BOUND_BYTES, f
    assert b.returncode is None, b.log_tail()
