"""A cluster with something to show, for tests of the status views: a replicated topic, a
consumer group that read and committed part of it with the real client, and more records
after that, so the group's lag is known exactly."""

from __future__ import annotations

from consumers import Admin, Consumer, Producer
from tests.support.wait import poll_records


async def lagging_group(
    bootstrap: str,
    *,
    topic: str = "orders",
    group: str = "billing",
    partitions: int = 3,
    consumed: int = 30,
    behind: int = 12,
) -> None:
    """`topic` (replication factor 3) whose first `consumed` records group `group` read and
    committed (the group is then empty), followed by `behind` more: its lag is `behind`."""
    async with Admin(bootstrap) as admin:
        await admin.create_topic(topic, partitions=partitions, replication_factor=3)
    async with Producer(bootstrap) as p:
        for i in range(consumed):
            await p.send(topic, b"r%d" % i, key=b"k%d" % i)
        await p.flush()
    async with Consumer(bootstrap, group_id=group, enable_auto_commit=False) as c:
        c.subscribe([topic])
        got = await poll_records(c, consumed, timeout=30.0)
        assert len(got) == consumed, len(got)
        await c.commit()
    async with Producer(bootstrap) as p:
        for i in range(behind):
            await p.send(topic, b"late%d" % i, key=b"late%d" % i)
        await p.flush()
