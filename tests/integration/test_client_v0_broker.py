"""The client library against a real broker (embedded in the test's Trio run) that serves only
version 0 of every API (`max_api_versions`): every connection negotiates version 0, and
admin, produce and consume work as against a broker of the first protocol version (FETCH v0
answers carry no next_offset: the consumer computes it from the batches)."""

from __future__ import annotations

from pathlib import Path

from broker.app import embedded
from broker.config import BrokerConfig, HostPort
from broker.wire.api import SUPPORTED_VERSIONS, ApiKey
from consumers import Admin, Consumer, Producer
from consumers.connection import Connection
from tests.support.wait import poll_records

LOCAL = HostPort("127.0.0.1", 0)
V0 = {key: 0 for key in ApiKey}


def config(data_dir: Path) -> BrokerConfig:
    return BrokerConfig(
        data_dir=data_dir,
        listen=LOCAL,
        peer_listen=LOCAL,
        http_listen=LOCAL,
        max_api_versions={key: 0 for key, (_, high) in SUPPORTED_VERSIONS.items() if high > 0},
    )


def versions(conn: Connection | None) -> dict[ApiKey, int]:
    assert conn is not None, "no open connection"
    return conn.versions


async def test_admin_produce_and_consume_against_a_version_0_broker(tmp_path: Path) -> None:
    async with embedded(config(tmp_path)) as broker:
        assert broker.driver.handler.versions == dict.fromkeys(ApiKey, (0, 0))
        addr = str(broker.addresses.clients)
        async with Admin(addr) as admin:
            await admin.create_topic("old", partitions=2)
            described = await admin.describe_topic("old")
            assert [p.partition for p in described.partitions] == [0, 1]
            assert (await admin.describe_cluster()).controller == 0

        acked: dict[int, list[tuple[int, bytes]]] = {0: [], 1: []}
        async with Producer(addr, linger_ms=1) as p:
            deliveries = [
                await p.send("old", b"value-%d" % i, key=b"k%d" % i, partition=i % 2)
                for i in range(40)
            ]
            await p.flush()
            for i, d in enumerate(deliveries):
                md = await d.wait()
                acked[md.partition].append((md.offset, b"value-%d" % i))
            assert versions(p._cluster.ready_connection(0)) == V0
        assert [o for o, _ in acked[0]] == list(range(20))
        assert [o for o, _ in acked[1]] == list(range(20))

        async with Consumer(addr) as c:
            c.assign([("old", 0), ("old", 1)])
            records = await poll_records(c, 40)
            assert versions(c._cluster.ready_connection(0, "fetch")) == V0
            for partition in (0, 1):
                got = [(r.offset, r.value) for r in records if r.partition == partition]
                assert got == acked[partition]
                assert await c.position(("old", partition)) == 20
            assert await c.poll(timeout=0.2) == []
