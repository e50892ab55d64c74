"""Retention by time and size on real brokers (3 processes, RF 3, real RocksDB): the log
start offset moves by the topic's retention.ms and retention.bytes, never faster, what is
retained reads back, the data directories shrink (RocksDB compaction and payload segments
deleted while the brokers run), and a replica that was down while its leader trimmed past
everything it had catches up through a snapshot and then serves the same log.

The retention check and the reclaim pass run every 0.5 s here (5 s and 10 s by default);
batches of 64 KiB go to payload segments of 1 MiB, so whole segments die as the log start
moves past them. Disk usage is the sum of the files' sizes in each broker's data directory.
"""

from __future__ import annotations

import logging
import os
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import trio

from broker.wire.batch import decode_records
from broker.wire.errors import ErrorCode
from broker.wire.messages import (
    EARLIEST_TIMESTAMP,
    FetchedBatch,
    FetchPartition,
    FetchRequest,
    FetchResponse,
    FetchTopic,
    ListOffsetsPartition,
    ListOffsetsRequest,
    ListOffsetsResponse,
    ListOffsetsTopic,
)
from consumers import Admin, Producer
from tests.integration.cluster import Cluster
from tests.integration.wire_client import RawClient
from tests.support.wait import poll_until_async

log = logging.getLogger(__name__)

FAST = {
    "retention_check_interval_s": 0.5,
    "store_reclaim_interval_s": 0.5,
    "payload_segment_bytes": 1 << 20,
    "leader_balance_interval_s": 0,
}
VALUE = 4096
"""Record values; 16 to a 64 KiB batch."""


def tree_bytes(path: Path) -> int:
    """The bytes of every file under `path` (one vanishing mid-walk is skipped)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                continue
    return total


def disk(cluster: Cluster) -> list[int]:
    return [tree_bytes(b.data_dir) for b in cluster.brokers]


async def earliest(cluster: Cluster, broker: int, topic: str) -> int:
    """LIST_OFFSETS earliest at `broker` (-1 while it does not lead the partition)."""
    b = cluster.brokers[broker]
    client = await RawClient.connect("127.0.0.1", b.client_port)
    try:
        part_req = ListOffsetsPartition(partition=0, timestamp=EARLIEST_TIMESTAMP)
        req = ListOffsetsRequest(topics=(ListOffsetsTopic(name=topic, partitions=(part_req,)),))
        env = await client.call(req)
    finally:
        await client.aclose()
    assert isinstance(env.body, ListOffsetsResponse)
    part = env.body.topics[0].partitions[0]
    return part.offset if part.error == ErrorCode.NONE else -1


async def fetch_from(
    cluster: Cluster, broker: int, topic: str, offset: int
) -> tuple[ErrorCode, int, int, list[FetchedBatch]]:
    """Every batch `broker` serves from `offset` to its high watermark: (error, log start,
    high watermark, batches); the error of the first answer that has one."""
    b = cluster.brokers[broker]
    client = await RawClient.connect("127.0.0.1", b.client_port)
    batches: list[FetchedBatch] = []
    try:
        while True:
            part_req = FetchPartition(partition=0, offset=offset, max_bytes=4 << 20)
            req = FetchRequest(
                topics=(FetchTopic(name=topic, partitions=(part_req,)),), max_wait_ms=0
            )
            env = await client.call(req, api_version=1)
            assert isinstance(env.body, FetchResponse), env
            part = env.body.topics[0].partitions[0]
            if part.error != ErrorCode.NONE:
                return part.error, part.log_start_offset, part.high_watermark, batches
            batches.extend(part.batches)
            assert part.next_offset is not None
            if not part.batches or part.next_offset >= part.high_watermark:
                return ErrorCode.NONE, part.log_start_offset, part.high_watermark, batches
            offset = part.next_offset
    finally:
        await client.aclose()


def offsets_of(batches: list[FetchedBatch]) -> list[tuple[int, bytes | None]]:
    return [
        (b.base_offset + i, r.value) for b in batches for i, r in enumerate(decode_records(b.data))
    ]


async def produce(
    cluster: Cluster, topic: str, n: int, timestamp: int | None, tag: bytes
) -> dict[int, bytes]:
    """`n` records (VALUE bytes each, `timestamp` or now), flushed; offset -> value."""
    out: dict[int, bytes] = {}
    async with Producer(cluster.bootstrap, batch_bytes=64 << 10, linger_ms=20) as p:
        deliveries = []
        for i in range(n):
            value = tag + b"%08d" % i + os.urandom(VALUE - len(tag) - 8)
            deliveries.append((value, await p.send(topic, value, partition=0, timestamp=timestamp)))
        await p.flush()
        for value, d in deliveries:
            out[(await d.wait()).offset] = value
    return out


async def scrape(cluster: Cluster, broker: int, name: str, topic: str) -> float:
    """The value of metric `name` for `topic` partition 0 on `broker` (0 when absent)."""
    url = f"http://127.0.0.1:{cluster.brokers[broker].http_port}/metrics"

    def get() -> str:
        with urllib.request.urlopen(url, timeout=5) as r:
            return str(r.read().decode())

    text = await trio.to_thread.run_sync(get)
    for line in text.splitlines():
        if line.startswith(name + "{") and f'topic="{topic}"' in line and 'partition="0"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_retention_by_time_and_size_frees_the_disk(
    cluster_factory: Callable[..., Cluster],
) -> None:
    cluster = cluster_factory(3, **FAST)
    retention_ms = 30_000
    retention_bytes = 12 << 20

    async def main() -> None:
        async with Admin(cluster.bootstrap) as admin:
            await admin.create_topic(
                "r",
                1,
                3,
                {"retention.ms": str(retention_ms), "retention.bytes": str(retention_bytes)},
            )
        # Phase 1: 8 MiB stamped to expire about 15 s from now; phase 2: 0.5 MiB stamped
        # now. Together below retention.bytes: only time deletes anything here.
        old = int(time.time() * 1000) - retention_ms + 15_000
        phase1 = await produce(cluster, "r", 2048, old, b"old")
        phase2 = await produce(cluster, "r", 128, None, b"new")
        start2 = min(phase2)
        leader = await cluster.leader_of("r", 0)
        assert await earliest(cluster, leader, "r") == 0, "deleted before its time"
        before = disk(cluster)
        log.info("disk before the time trim: %s", before)

        # Time: phase 1 goes once older than retention.ms, not before; phase 2 stays.
        async def moved() -> int:
            start = await earliest(cluster, await cluster.leader_of("r", 0), "r")
            seen_ms = int(time.time() * 1000)
            assert start <= 0 or seen_ms - old > retention_ms, "deleted before its time"
            return start

        start = await poll_until_async(
            moved, lambda s: s > 0, "the log start to move by time", timeout=60, interval=0.2
        )
        assert start == start2, (start, start2)  # exactly the expired batches
        leader = await cluster.leader_of("r", 0)
        err, log_start, hw, batches = await fetch_from(cluster, leader, "r", start)
        assert err == ErrorCode.NONE and log_start == start2 and hw == max(phase2) + 1
        assert offsets_of(batches) == sorted(phase2.items())
        low = await fetch_from(cluster, leader, "r", start - 1)
        assert low[0] == ErrorCode.OFFSET_OUT_OF_RANGE and low[1] == start2

        # The disk: every replica gives back most of phase 1.
        async def shrunk() -> list[int]:
            return disk(cluster)

        freed = await poll_until_async(
            shrunk,
            lambda now: all(n < b - (4 << 20) for n, b in zip(now, before, strict=True)),
            "every data directory to shrink by over 4 MiB",
            timeout=60,
            interval=0.2,
        )
        log.info("disk after the time trim: %s", freed)

        # Size: 14 MiB more, stamped now: the log start moves until fewer than
        # retention.bytes would be left without the oldest batch, never further.
        phase3 = await produce(cluster, "r", 3584, None, b"big")

        async def sized() -> tuple[int, list[FetchedBatch]]:
            lead = await cluster.leader_of("r", 0)
            start = await earliest(cluster, lead, "r")
            err, _, _, batches = await fetch_from(cluster, lead, "r", max(start, 0))
            return (start if err == ErrorCode.NONE else -1), batches

        def trimmed(got: tuple[int, list[FetchedBatch]]) -> bool:
            start, batches = got
            size = sum(len(b.data) for b in batches)
            return start > start2 and size - len(batches[0].data) < retention_bytes

        start, batches = await poll_until_async(
            sized, trimmed, "the log start to move by size", timeout=60, interval=0.2
        )
        assert sum(len(b.data) for b in batches) >= retention_bytes, "deleted beyond the size"
        log.info("disk after the size trim: %s", disk(cluster))
        everything = {**phase1, **phase2, **phase3}
        assert offsets_of(batches) == [(o, everything[o]) for o in range(start, max(phase3) + 1)]

    trio.run(main)
    assert not cluster.unexpected_exits() and not cluster.audit_failures()


def test_a_replica_behind_the_trimmed_log_catches_up_through_a_snapshot(
    cluster_factory: Callable[..., Cluster],
) -> None:
    cluster = cluster_factory(3, **FAST)
    retention_bytes = 1 << 20

    async def main() -> None:
        async with Admin(cluster.bootstrap) as admin:
            await admin.create_topic("f", 1, 3, {"retention.bytes": str(retention_bytes)})
            desc = await admin.describe_topic("f")
        preferred = desc.partitions[0].replicas[0]
        await produce(cluster, "f", 64, None, b"a")
        # The preferred replica stops (SIGKILL); another leads, and trims far past what
        # the stopped one holds.
        await trio.to_thread.run_sync(cluster.kill, preferred)
        leader = await cluster.leader_of("f", 0)
        assert leader != preferred
        await produce(cluster, "f", 2048, None, b"b")

        async def retained() -> tuple[int, int, list[FetchedBatch]]:
            """The leader's log start, high watermark and batches."""
            lead = await cluster.leader_of("f", 0)
            start = await earliest(cluster, lead, "f")
            err, _, hw, batches = await fetch_from(cluster, lead, "f", max(start, 0))
            return (start if err == ErrorCode.NONE else -1), hw, batches

        def trimmed(got: tuple[int, int, list[FetchedBatch]]) -> bool:
            """Trimmed as far as retention.bytes allows (the state stays so from here)."""
            start, _, batches = got
            size = sum(len(b.data) for b in batches)
            return start > 64 and size - len(batches[0].data) < retention_bytes

        start, hw, batches = await poll_until_async(
            retained, trimmed, "the leader to trim", timeout=60, interval=0.2
        )
        assert hw == 64 + 2048 and sum(len(b.data) for b in batches) >= retention_bytes
        below = await fetch_from(cluster, await cluster.leader_of("f", 0), "f", start - 1)
        assert below[0] == ErrorCode.OFFSET_OUT_OF_RANGE

        # Back: it installs a snapshot (it is behind the leader's compacted log) and
        # appends the rest.
        await trio.to_thread.run_sync(cluster.start_broker, preferred)

        async def installed() -> float:
            return await scrape(cluster, preferred, "sluice_raft_snapshots_installed_total", "f")

        await poll_until_async(
            installed, lambda n: n >= 1, "a snapshot installed", timeout=60, interval=0.2
        )

        async def applied() -> tuple[float, float]:
            name = "sluice_raft_applied_index"
            lead = await cluster.leader_of("f", 0)
            return (
                await scrape(cluster, preferred, name, "f"),
                await scrape(cluster, lead, name, "f"),
            )

        await poll_until_async(
            applied, lambda a: a[0] == a[1] > 0, "the replica to catch up", timeout=60
        )

        # It leads again (preferred: asked until the controller sees it alive and caught
        # up), and serves the same log start and records.
        async def leads() -> bool:
            async with Admin(cluster.bootstrap) as admin:
                await admin.elect_preferred_leaders(["f"])
            return (await cluster.leaders("f")).get(0, (None, 0))[0] == preferred

        await poll_until_async(leads, bool, "the preferred replica to lead", timeout=60)
        # A new leader serves once its term's no-op committed (LEADER_NOT_AVAILABLE until then).
        got = await poll_until_async(
            lambda: fetch_from(cluster, preferred, "f", start),
            lambda r: r[0] != ErrorCode.LEADER_NOT_AVAILABLE,
            "the preferred replica to serve",
            timeout=30,
            interval=0.1,
        )
        assert got[0] == ErrorCode.NONE
        assert (got[1], got[2]) == (start, hw)
        assert [(b.base_offset, b.data) for b in got[3]] == [
            (b.base_offset, b.data) for b in batches
        ]
        assert await earliest(cluster, preferred, "f") == start
        below = await fetch_from(cluster, preferred, "f", start - 1)
        assert below[0] == ErrorCode.OFFSET_OUT_OF_RANGE

    trio.run(main)
    assert not cluster.unexpected_exits() and not cluster.audit_failures()
