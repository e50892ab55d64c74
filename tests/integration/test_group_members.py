"""Group membership through the real client and an embedded broker: a static member that
restarts within its session timeout keeps its partitions without a rebalance; two dynamic
members split a topic, each reads only its own partitions, and what they read is committed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from broker.app import Broker, embedded
from consumers import Admin, Consumer, Producer
from consumers.admin import GroupDescription
from tests.support.embedded import embedded_config
from tests.support.wait import poll_until_async

TP = tuple[str, int]


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[Broker]:
    cfg = embedded_config(tmp_path, offsets_topic_partitions=4, group_heartbeat_interval_ms=200)
    async with embedded(cfg) as b:
        yield b


async def describe(address: str, group: str) -> GroupDescription:
    async with Admin(address) as admin:
        return await admin.describe_group(group)


async def test_a_static_member_restarting_keeps_its_partitions_without_a_rebalance(
    broker: Broker,
) -> None:
    address = str(broker.addresses.clients)
    async with Admin(address) as admin:
        await admin.create_topic("s", partitions=4)
    owned: list[frozenset[TP]] = []
    async with Consumer(address, group_id="sg", group_instance_id="host-1",
                        session_timeout_ms=10_000) as c:  # fmt: skip
        c.subscribe(["s"], on_assigned=lambda tps: owned.append(frozenset(tps)))
        await poll_until_async(lambda: trio.sleep(0), lambda _: len(c.assignment()) == 4,
                               "the static member owning all four", timeout=10)  # fmt: skip
    before = await describe(address, "sg")
    assert [m.instance_id for m in before.members] == ["host-1"]  # left with -2: still there
    async with Consumer(address, group_id="sg", group_instance_id="host-1",
                        session_timeout_ms=10_000) as c:  # fmt: skip
        c.subscribe(["s"])
        await poll_until_async(
            lambda: trio.sleep(0), lambda _: len(c.assignment()) == 4,
            "the restarted member owning all four again", timeout=10,
        )  # fmt: skip
        after = await describe(address, "sg")
    assert after.group_epoch == before.group_epoch, "a restart within the session: no rebalance"
    assert [m.instance_id for m in after.members] == ["host-1"]
    assert after.members[0].member_id != before.members[0].member_id


async def test_two_members_split_a_topic_and_commit_what_they_read(broker: Broker) -> None:
    address = str(broker.addresses.clients)
    async with Admin(address) as admin:
        await admin.create_topic("d", partitions=4)
    seen: dict[str, list[tuple[int, int]]] = {"a": [], "b": []}
    owns: dict[str, frozenset[TP]] = {}

    async def member(name: str, stop: trio.Event) -> None:
        async with Consumer(address, group_id="dg") as c:
            c.subscribe(["d"])
            while not stop.is_set():
                owns[name] = c.assignment()
                for r in await c.poll(timeout=0.1):
                    assert (r.topic, r.partition) in c.assignment()
                    seen[name].append((r.partition, r.offset))

    stop = trio.Event()
    async with trio.open_nursery() as n:
        n.start_soon(member, "a", stop)
        n.start_soon(member, "b", stop)
        await poll_until_async(
            lambda: trio.sleep(0),
            lambda _: len(owns.get("a", ())) == 2 and len(owns.get("b", ())) == 2,
            "two members owning two partitions each", timeout=20,
        )  # fmt: skip
        async with Producer(address) as p:
            for i in range(400):
                await p.send("d", b"v%d" % i, partition=i % 4)
            await p.flush()
        await poll_until_async(
            lambda: trio.sleep(0), lambda _: len(seen["a"]) + len(seen["b"]) >= 400,
            "400 records read", timeout=20,
        )  # fmt: skip
        stop.set()
    assert {p for p, _ in seen["a"]}.isdisjoint({p for p, _ in seen["b"]})
    assert len(seen["a"]) == len(seen["b"]) == 200
    everything = seen["a"] + seen["b"]
    assert sorted(everything) == sorted((i % 4, i // 4) for i in range(400))
    async with Admin(address) as admin:
        committed = await admin.group_offsets("dg")
    assert committed == {("d", p): 100 for p in range(4)}
