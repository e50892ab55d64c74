"""The client library against real `sluice serve` processes: the blocking facade round trip
(with `with`, and as a plain script uses it: opened by the first call, then `close()`), and an
idempotent producer that keeps every acknowledged record exactly once across a
SIGKILL of the broker mid-stream."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import pytest
import trio

from consumers import Admin, Consumer, ConsumerRecord, Producer, blocking
from consumers.errors import BufferFull, ClientClosedError, UnknownTopicError
from tests.support.harness import BrokerProcess
from tests.support.wait import poll_records

MakeBroker = Callable[..., BrokerProcess]


@pytest.fixture(autouse=True)
def _posix() -> None:
    if os.name != "posix":  # pragma: no cover
        pytest.skip("needs POSIX signals")


def test_blocking_facade_round_trip(broker_factory: MakeBroker) -> None:
    b = broker_factory()
    b.start()
    addr = b.bootstrap
    with blocking.Admin(addr) as admin:
        admin.create_topic("plain", partitions=2)
        assert [t.name for t in admin.list_topics()] == ["plain"]
        with pytest.raises(UnknownTopicError):
            admin.describe_topic("missing")
    with blocking.Producer(addr, buffer_bytes=4096) as p:
        md = p.send_and_wait("plain", b"first", key=b"k", headers=[("h", b"v")], partition=0)
        assert (md.topic, md.partition, md.offset) == ("plain", 0, 0)
        deliveries = [p.send("plain", b"value-%d" % i, partition=i % 2) for i in range(100)]
        p.flush()
        assert all(d.done for d in deliveries)
        assert deliveries[-1].wait().offset == 49  # the 50th record of partition 1
        with pytest.raises(BufferFull):
            for _ in range(1000):
                p.send_nowait("plain", b"x" * 100, partition=1)
    with blocking.Admin(addr) as admin:
        described = admin.describe_topic("plain")
        total = sum(part.high_watermark or 0 for part in described.partitions)
        assert admin.describe_cluster().controller == 0
    with blocking.Consumer(addr, max_poll_records=7) as c:
        c.assign([("plain", 0), ("plain", 1)])
        seen = []
        for record in c:
            seen.append(record)
            if len(seen) == total:
                break
        assert len({(r.partition, r.offset) for r in seen}) == total
        first = next(r for r in seen if (r.partition, r.offset) == (0, 0))
        assert (first.key, first.value, first.headers) == (b"k", b"first", (("h", b"v"),))
        assert c.poll(timeout=0.2) == []
        c.seek(("plain", 0), 1)
        assert c.position(("plain", 0)) == 1
        assert c.poll(timeout=5, max_records=1)[0].value == b"value-0"
        assert c.assignment() == {("plain", 0), ("plain", 1)}
        with pytest.raises(ValueError):
            c.skip_corrupt(("plain", 0))


def test_blocking_clients_open_on_first_use_and_stay_closed(broker_factory: MakeBroker) -> None:
    """Without `with`: the first call opens the client, `close()` flushes and closes it, and a
    call after that raises ClientClosedError (not AttributeError)."""
    b = broker_factory()
    b.start()
    admin = blocking.Admin(b.bootstrap)
    admin.create_topic("scripted", partitions=1)
    producer = blocking.Producer(b.bootstrap, linger_ms=50)
    deliveries = [producer.send_nowait("scripted", b"r%d" % i) for i in range(5)]
    producer.close()  # flushes: every queued record is acknowledged before it returns
    assert [d.result().offset for d in deliveries] == [0, 1, 2, 3, 4]
    assert "closed" in repr(producer)
    with pytest.raises(ClientClosedError):
        producer.send_nowait("scripted", b"late")
    consumer = blocking.Consumer(b.bootstrap)
    consumer.assign([("scripted", 0)])
    records: list[ConsumerRecord] = []
    deadline = time.monotonic() + 20
    while len(records) < 5 and time.monotonic() < deadline:
        records += consumer.poll(timeout_ms=1000)
    assert [r.value for r in records] == [b"r0", b"r1", b"r2", b"r3", b"r4"]
    consumer.close()
    admin.close()
    with pytest.raises(ClientClosedError):
        admin.list_topics()


async def test_exactly_once_across_a_sigkill(broker_factory: MakeBroker) -> None:
    b = broker_factory()
    await trio.to_thread.run_sync(b.start)
    total = 4_000
    async with Admin(b.bootstrap) as admin:
        await admin.create_topic("killed", partitions=3)
    acked: dict[int, tuple[int, int]] = {}
    async with Producer(b.bootstrap, linger_ms=1, delivery_timeout_s=30) as p:
        deliveries = []
        for i in range(total):
            deliveries.append(await p.send("killed", b"%d" % i))
            if i % 100 == 0:
                await trio.sleep(0.001)
            if i == total // 2:
                b.kill()  # SIGKILL: acknowledgements in flight are lost with it
                await trio.to_thread.run_sync(b.start)  # same port, same data directory
        await p.flush()
        for i, d in enumerate(deliveries):
            md = await d.wait()
            acked[i] = (md.partition, md.offset)
    assert b.starts == 2
    async with Consumer(b.bootstrap) as c:
        c.assign([("killed", p) for p in range(3)])
        records = await poll_records(c, total, timeout=20)
        assert await c.poll(timeout=0.3) == []
    assert sorted(int(r.value) for r in records) == list(range(total))  # type: ignore[arg-type]
    for r in records:
        assert acked[int(r.value)] == (r.partition, r.offset)  # type: ignore[arg-type]
