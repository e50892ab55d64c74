"""The client library against a real broker running in the test's Trio run (embedded mode):
admin, produce and consume round trips, positions, corrupt batches, and an idempotent
producer that resumes across a broker restart."""

from __future__ import annotations

import struct
import zlib
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

import cbor2
import pytest
import trio

from broker.app import Broker, embedded
from broker.config import BrokerConfig, HostPort
from broker.wire.messages import ProducePartition, ProduceRequest, ProduceResponse, ProduceTopic
from consumers import Admin, Consumer, ConsumerRecord, Producer
from consumers.cluster import Cluster
from consumers.errors import (
    BufferFull,
    CorruptBatch,
    InvalidConfigError,
    InvalidGroupIdError,
    InvalidPartitionsError,
    InvalidTxnStateError,
    TopicAlreadyExistsError,
    UnknownTopicError,
)
from tests.support.wait import poll_records


def config(data_dir: Path, port: int = 0) -> BrokerConfig:
    return BrokerConfig(
        data_dir=data_dir,
        listen=HostPort("127.0.0.1", port),
        peer_listen=HostPort("127.0.0.1", 0),
        http_listen=HostPort("127.0.0.1", 0),
    )


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[Broker]:
    async with embedded(config(tmp_path)) as b:
        yield b


def address(b: Broker) -> str:
    return str(b.addresses.clients)


# --------------------------------------------------------------------------- admin


async def test_admin_topic_lifecycle(broker: Broker) -> None:
    async with Admin(address(broker)) as admin:
        await admin.create_topic("orders", partitions=3, config={"max.message.bytes": "65536"})
        # Returns once led: every partition has a leader at once.
        described = await admin.describe_topic("orders")
        assert [p.partition for p in described.partitions] == [0, 1, 2]
        assert all(p.leader == 0 and p.replicas == (0,) for p in described.partitions)
        assert all(p.log_start_offset == 0 and p.high_watermark == 0 for p in described.partitions)
        assert described.replication_factor == 1
        assert described.config.get("max.message.bytes") == "65536"
        await admin.create_topic("audit")
        assert [t.name for t in await admin.list_topics()] == ["audit", "orders"]
        with pytest.raises(TopicAlreadyExistsError):
            await admin.create_topic("orders")
        with pytest.raises(InvalidPartitionsError):
            await admin.create_topic("zero", partitions=0)
        with pytest.raises(InvalidConfigError):
            await admin.create_topic("cfg", config={"no.such.key": "1"})
        cluster = await admin.describe_cluster()
        assert cluster.controller == 0 and cluster.cluster_id
        assert [(b.id, b.port) for b in cluster.brokers] == [(0, broker.addresses.clients.port)]
        await admin.delete_topic("audit")
        assert [t.name for t in await admin.list_topics()] == ["orders"]
        start = trio.current_time()
        with pytest.raises(UnknownTopicError):
            await admin.delete_topic("audit")
        with pytest.raises(UnknownTopicError):
            await admin.describe_topic("audit")
        assert trio.current_time() - start < 1  # not retried: the controller knows


async def test_misuse_is_refused_with_a_clear_error(broker: Broker) -> None:
    with pytest.raises(ValueError, match="transactional"):
        Producer(address(broker), transactional_id="tx-1", idempotent=False)
    async with Producer(address(broker)) as p:
        with pytest.raises(InvalidTxnStateError, match="transactional_id"):
            async with p.transaction():
                pass
    async with Consumer(address(broker)) as c:
        with pytest.raises(InvalidGroupIdError):
            await c.commit()  # offsets are a group's: no group, nothing to commit to


# --------------------------------------------------------------------------- round trips

TOTAL = 10_000
BASE_TS = 1_700_000_000_000


def expected(i: int) -> tuple[bytes, bytes, tuple[tuple[str, bytes], ...], int]:
    return b"k%d" % (i % 37), b"value-%d" % i, (("i", b"%d" % i), ("src", b"test")), BASE_TS + i


async def produce_all(addr: str, topic: str) -> None:
    async with Producer(addr, linger_ms=5) as p:
        for i in range(TOTAL):
            key, value, headers, ts = expected(i)
            await p.send(topic, value, key=key, headers=headers, timestamp=ts)
        await p.flush()


def check_exactly_once_in_order(records: list[ConsumerRecord]) -> None:
    assert len(records) == TOTAL
    by_partition: dict[int, list[ConsumerRecord]] = defaultdict(list)
    for r in records:
        by_partition[r.partition].append(r)
    assert len(by_partition) == 4
    seen: set[int] = set()
    for partition, rs in by_partition.items():
        assert [r.offset for r in rs] == list(range(len(rs))), partition
        last_per_key: dict[bytes, int] = {}
        for r in rs:
            i = int(r.value.removeprefix(b"value-"))  # type: ignore[union-attr]
            key, value, headers, ts = expected(i)
            assert (r.key, r.value, r.headers, r.timestamp) == (key, value, headers, ts)
            assert r.topic == "events"
            assert i not in seen
            seen.add(i)
            assert last_per_key.get(key, -1) < i  # a key's records keep their send order
            last_per_key[key] = i
    assert seen == set(range(TOTAL))


async def test_produce_then_consume_with_assign_and_subscribe(broker: Broker) -> None:
    addr = address(broker)
    async with Admin(addr) as admin:
        await admin.create_topic("events", partitions=4)
    await produce_all(addr, "events")
    async with Admin(addr) as admin:
        described = await admin.describe_topic("events")
    assert sum(p.high_watermark or 0 for p in described.partitions) == TOTAL

    async with Consumer(addr) as c:
        c.assign([("events", p) for p in range(4)])
        records = await poll_records(c, TOTAL)
        check_exactly_once_in_order(records)
        assert await c.poll(timeout=0.2) == []  # nothing more, nothing twice
        for p in range(4):
            assert await c.position(("events", p)) == described.partitions[p].high_watermark

    async with Consumer(addr, max_poll_records=300) as c:
        c.subscribe(["events"])
        iterated: list[ConsumerRecord] = []
        with trio.fail_after(10):
            async for record in c:
                iterated.append(record)
                if len(iterated) == TOTAL:
                    break
        assert c.assignment() == {("events", p) for p in range(4)}
        check_exactly_once_in_order(iterated)


async def test_send_and_wait_offset_reads_back_and_seek(broker: Broker) -> None:
    addr = address(broker)
    async with Admin(addr) as admin:
        await admin.create_topic("t", partitions=2)
    async with Producer(addr) as p:
        for i in range(10):
            await p.send("t", b"pad-%d" % i, partition=1)
        md = await p.send_and_wait("t", b"needle", key=b"n", headers={"h": b"1"}, partition=1)
        for i in range(5):
            p.send_nowait("t", b"after-%d" % i, partition=1)
        await p.flush()
    assert (md.topic, md.partition, md.offset) == ("t", 1, 10)
    async with Consumer(addr) as c:
        c.assign([("t", 1)])
        c.seek(("t", 1), md.offset)
        [first, *_] = await poll_records(c, 1)
        assert (first.offset, first.key, first.value, first.headers) == (
            10,
            b"n",
            b"needle",
            (("h", b"1"),),
        )
        assert first.timestamp == md.timestamp
        c.seek(("t", 1), 3)
        again = await poll_records(c, 13)
        assert [r.offset for r in again] == list(range(3, 16))
        assert await c.position(("t", 1)) == 16


async def test_send_nowait_raises_buffer_full(broker: Broker) -> None:
    addr = address(broker)
    async with Admin(addr) as admin:
        await admin.create_topic("small")
    async with Producer(addr, buffer_bytes=2_000) as p:
        accepted = []
        with pytest.raises(BufferFull):
            for _ in range(100):
                accepted.append(p.send_nowait("small", b"x" * 200))
        assert 5 <= len(accepted) < 100
        await p.flush()
        assert p.buffered_bytes == 0
        assert [(await d.wait()).offset for d in accepted] == list(range(len(accepted)))
        p.send_nowait("small", b"x" * 200)  # room again


async def test_auto_offset_reset_latest(broker: Broker) -> None:
    addr = address(broker)
    async with Admin(addr) as admin:
        await admin.create_topic("late")
    async with Producer(addr) as p:
        for i in range(5):
            await p.send("late", b"old-%d" % i)
        await p.flush()
        async with Consumer(addr, auto_offset_reset="latest", fetch_max_wait_ms=100) as c:
            c.assign([("late", 0)])
            assert await c.position(("late", 0)) == 5
            for i in range(3):
                await p.send("late", b"new-%d" % i)
            await p.flush()
            records = await poll_records(c, 3)
            assert [r.value for r in records] == [b"new-0", b"new-1", b"new-2"]
            assert [r.offset for r in records] == [5, 6, 7]
    async with Consumer(addr, auto_offset_reset="earliest") as c:
        c.assign([("late", 0)])
        assert len(await poll_records(c, 8)) == 8


async def test_subscribe_picks_up_a_topic_created_later(broker: Broker) -> None:
    addr = address(broker)
    async with Consumer(addr, metadata_max_age_ms=100, fetch_max_wait_ms=100) as c:
        c.subscribe(["fresh"])
        assert await c.poll(timeout=0.3) == []
        async with Admin(addr) as admin:
            await admin.create_topic("fresh", partitions=3)
        async with Producer(addr) as p:
            for partition in range(3):
                await p.send("fresh", b"hello-%d" % partition, partition=partition)
            await p.flush()
        records = await poll_records(c, 3)
        assert sorted(r.value for r in records) == [b"hello-0", b"hello-1", b"hello-2"]  # type: ignore[type-var]
        assert c.assignment() == {("fresh", p) for p in range(3)}


# --------------------------------------------------------------------------- corrupt batches


def malformed_batch(count: int, timestamp: int) -> bytes:
    """A batch whose header, CRC and records-array head are valid (the broker accepts it)
    but whose items are byte strings, not [delta, key, value, headers]."""
    body = cbor2.dumps([b"not-a-record-%d" % i for i in range(count)])
    after_crc = struct.pack(">HIqqqhi", 0, count, timestamp, timestamp, -1, -1, -1)
    crc = zlib.crc32(body, zlib.crc32(after_crc))
    return bytes((0x53, 1)) + crc.to_bytes(4, "big") + after_crc + body


async def test_corrupt_batch_is_raised_with_its_offsets_and_can_be_skipped(
    broker: Broker,
) -> None:
    addr = address(broker)
    async with Admin(addr) as admin:
        await admin.create_topic("bad")
    async with Producer(addr) as p:
        for i in range(3):
            await p.send_and_wait("bad", b"good-%d" % i)
        async with Cluster(addr) as cluster:
            request = ProduceRequest(
                topics=(
                    ProduceTopic(
                        name="bad",
                        partitions=(ProducePartition(partition=0, batch=malformed_batch(2, 1)),),
                    ),
                )
            )
            response = await cluster.request_any(request)
            assert isinstance(response, ProduceResponse)
            assert response.topics[0].partitions[0].base_offset == 3
        for i in range(3, 6):
            await p.send_and_wait("bad", b"good-%d" % i)

    async with Consumer(addr) as c:
        c.assign([("bad", 0)])
        before = await poll_records(c, 3)
        assert [r.value for r in before] == [b"good-0", b"good-1", b"good-2"]
        for _ in range(2):  # raised again until skipped: the position stays at the batch
            with pytest.raises(CorruptBatch) as caught:
                await c.poll(timeout=2)
            e = caught.value
            assert (e.topic, e.partition, e.base_offset, e.last_offset) == ("bad", 0, 3, 4)
            assert "record 0" in e.reason
            assert await c.position(("bad", 0)) == 3
        assert c.skip_corrupt(("bad", 0)) == 5
        after = await poll_records(c, 3)
        assert [(r.offset, r.value) for r in after] == [
            (5, b"good-3"),
            (6, b"good-4"),
            (7, b"good-5"),
        ]

    async with Consumer(addr) as c:  # `async for` raises it too; a seek also moves past it
        c.assign([("bad", 0)])
        c.seek(("bad", 0), 2)
        seen = []
        with pytest.raises(CorruptBatch):
            async for record in c:
                seen.append(record.offset)
        assert seen == [2]
        c.seek(("bad", 0), 5)
        assert (await poll_records(c, 1))[0].offset == 5


# --------------------------------------------------------------------------- restart


async def run_broker(
    cfg: BrokerConfig, stop: trio.Event, *, task_status: trio.TaskStatus[Broker]
) -> None:
    async with embedded(cfg) as b:
        task_status.started(b)
        await stop.wait()


async def test_idempotent_producer_resumes_across_a_broker_restart(tmp_path: Path) -> None:
    total = 6_000
    async with trio.open_nursery() as nursery:
        stop_first = trio.Event()
        first = await nursery.start(run_broker, config(tmp_path), stop_first)
        port = first.addresses.clients.port
        addr = f"127.0.0.1:{port}"
        async with Admin(addr) as admin:
            await admin.create_topic("durable", partitions=4)
        second_stop = trio.Event()
        acked: dict[int, tuple[int, int]] = {}
        async with Producer(addr, linger_ms=2, delivery_timeout_s=30) as p:
            deliveries = []
            for i in range(total):
                deliveries.append(await p.send("durable", b"%d" % i, key=b"%d" % (i % 11)))
                if i % 200 == 0:
                    await trio.sleep(0.002)
                if i == total // 3:
                    stop_first.set()  # the broker drains and stops mid-stream...
                    await trio.sleep(0.2)
                    await nursery.start(run_broker, config(tmp_path, port), second_stop)
            await p.flush()
            for i, d in enumerate(deliveries):
                md = await d.wait()
                acked[i] = (md.partition, md.offset)
        async with Consumer(addr) as c:
            c.assign([("durable", p) for p in range(4)])
            records = await poll_records(c, total, timeout=20)
            assert await c.poll(timeout=0.3) == []
        second_stop.set()
    values = [int(r.value) for r in records]  # type: ignore[arg-type]
    assert sorted(values) == list(range(total))  # every record exactly once
    for r in records:
        assert acked[int(r.value)] == (r.partition, r.offset)  # type: ignore[arg-type]
