"""Log compaction on real brokers (3 processes, RF 3, real RocksDB): a consumer reads back the
last value per key at the offsets they were written at, every record it gets is the one
written there, tombstones are gone once older than delete.retention.ms, and a keyless
record is refused. The client reads batches whose offsets skip what compaction removed.

The compaction check runs every 0.5 s here (the retention check, 5 s by default).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

import trio

from broker.wire.batch import Record, encode_batch
from broker.wire.errors import ErrorCode
from broker.wire.messages import (
    ProducePartition,
    ProduceRequest,
    ProduceResponse,
    ProduceTopic,
)
from consumers import Admin, Consumer, Producer
from tests.integration.cluster import Cluster
from tests.integration.wire_client import RawClient
from tests.support.wait import poll_until_async

log = logging.getLogger(__name__)

FAST = {
    "retention_check_interval_s": 0.5,
    "store_reclaim_interval_s": 0.5,
    "leader_balance_interval_s": 0,
}
KEYS = 40
ROUNDS = 12
Read = list[tuple[int, bytes | None, bytes | None]]


async def read_all(cluster: Cluster, topic: str) -> Read:
    """(offset, key, value) of every record a consumer reads from offset 0 up to the high
    watermark."""
    async with Admin(cluster.bootstrap) as admin:
        (p,) = (await admin.describe_topic(topic)).partitions
    end = p.high_watermark
    assert end is not None
    out: Read = []
    async with Consumer(cluster.bootstrap, auto_offset_reset="none") as c:
        c.assign([(topic, 0)])
        c.seek((topic, 0), 0)
        with trio.fail_after(30):
            while not out or out[-1][0] < end - 1:
                for r in await c.poll(timeout=1.0, max_records=5000):
                    out.append((r.offset, r.key, r.value))
    return out


def test_a_consumer_reads_the_last_value_per_key_and_tombstones_go(
    cluster_factory: Callable[..., Cluster],
) -> None:
    cluster = cluster_factory(3, **FAST)
    delete_retention_ms = 10_000

    async def main() -> None:
        async with Admin(cluster.bootstrap) as admin:
            await admin.create_topic(
                "c",
                1,
                3,
                {"cleanup.policy": "compact", "delete.retention.ms": str(delete_retention_ms)},
            )
        # A keyless record is refused.
        leader = await cluster.leader_of("c", 0)
        b = cluster.brokers[leader]
        client = await RawClient.connect("127.0.0.1", b.client_port)
        keyless = encode_batch([Record(key=None, value=b"x", timestamp=1)])
        part = ProducePartition(partition=0, batch=keyless)
        env = await client.call(
            ProduceRequest(topics=(ProduceTopic(name="c", partitions=(part,)),))
        )
        await client.aclose()
        assert isinstance(env.body, ProduceResponse)
        assert env.body.topics[0].partitions[0].error == ErrorCode.INVALID_RECORD

        # ROUNDS values for each of KEYS keys; the last round deletes a quarter of them;
        # then a few records of another key, so the tombstones are not in the raw tail.
        written: dict[int, tuple[bytes, bytes | None]] = {}
        async with Producer(cluster.bootstrap, batch_bytes=16 << 10, linger_ms=5) as p:
            deliveries = []
            tombstoned_at = 0
            for r in range(ROUNDS):
                if r == ROUNDS - 1:
                    tombstoned_at = int(time.time() * 1000)  # at most the tombstones' stamps
                for k in range(KEYS):
                    key = b"key-%02d" % k
                    gone = r == ROUNDS - 1 and k % 4 == 0
                    value = None if gone else b"%d:%d:" % (r, k) + os.urandom(1000)
                    deliveries.append((key, value, await p.send("c", value, key=key, partition=0)))
                await p.flush()
            for i in range(20):
                value = b"tail-%d" % i
                deliveries.append((b"tail", value, await p.send("c", value, key=b"tail")))
            await p.flush()
            for key, value, d in deliveries:
                written[(await d.wait()).offset] = (key, value)
        last: dict[bytes, tuple[int, bytes | None]] = {}
        for offset in sorted(written):
            key, value = written[offset]
            last[key] = (offset, value)

        dead = {k for k, (_, v) in last.items() if v is None}
        assert len(dead) == KEYS // 4

        def check(got: Read) -> None:
            """Every record read is the one written at its offset, in order; the values per
            key, folded, are the last ones written (a deleted key: a tombstone, or nothing
            once delete.retention.ms passed, never before)."""
            offsets = [o for o, _, _ in got]
            assert offsets == sorted(set(offsets))
            for o, k, v in got:
                assert written[o] == (k, v), o
            folded: dict[bytes | None, bytes | None] = {}
            for _, k, v in got:
                folded[k] = v
            assert {k: v for k, v in folded.items() if k not in dead} == {
                k: v for k, (_, v) in last.items() if k not in dead
            }
            assert all(folded.get(k) is None for k in dead)
            if any(k not in folded for k in dead):
                swept_ms = int(time.time() * 1000) - tombstoned_at
                assert swept_ms >= delete_retention_ms, "a tombstone went before its time"

        # Compacted: far fewer records, the last per key at its offset, tombstones kept
        # while younger than delete.retention.ms.
        def compacted(got: Read) -> bool:
            check(got)
            return len(got) <= KEYS + 20 + 2 * (16 << 10) // 1000

        got = await poll_until_async(
            lambda: read_all(cluster, "c"), compacted, "compaction", timeout=60, interval=0.3
        )
        for key, (offset, value) in last.items():
            if value is not None:
                assert (offset, key, value) in got  # the last value, at its offset
        seen_ms = int(time.time() * 1000) - tombstoned_at
        log.info("compacted: %d records read back, %d ms after the tombstones", len(got), seen_ms)
        assert seen_ms < delete_retention_ms, "compacted too late to see the tombstones"
        assert {k for _, k, v in got if v is None} == dead

        # Tombstones go once older than delete.retention.ms, never before (check).
        def swept(got: Read) -> bool:
            check(got)
            return not any(k in dead for _, k, _ in got)

        await poll_until_async(
            lambda: read_all(cluster, "c"), swept, "tombstones to go", timeout=60, interval=0.3
        )

    trio.run(main)
    assert not cluster.unexpected_exits() and not cluster.audit_failures()
