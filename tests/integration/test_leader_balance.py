"""Preferred-leader balancing with real brokers: after a broker is SIGKILLed and restarted, the
controller moves every partition's leadership back to its preferred replica (the first of
its replicas) on its own (`leader_balance_interval_s`), and `sluice leaders balance` does it
on demand when automatic balancing is off. Records acknowledged before, during and after are
all read back."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from collections.abc import Awaitable, Callable
from functools import partial

import trio

from consumers import Admin, ClusterDescription, Consumer, Producer
from tests.integration.cluster import Cluster
from tests.support.sluice_cli import run_sluice
from tests.support.wait import poll_records, poll_until_async

TOPIC = "balanced"
PARTITIONS = 6
MakeCluster = Callable[..., Cluster]


def in_thread(fn: Callable[..., object], *args: object) -> Awaitable[object]:
    return trio.to_thread.run_sync(fn, *args)


async def sluice(bootstrap: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    return await trio.to_thread.run_sync(partial(run_sluice, *args, bootstrap=bootstrap))


def topic_parts(desc: ClusterDescription) -> list[tuple[int, int | None, tuple[int, ...]]]:
    """(partition, leader, replicas) of TOPIC."""
    return [(p.partition, p.leader, p.replicas) for p in desc.partitions if p.topic == TOPIC]


def off_preferred(desc: ClusterDescription) -> set[int]:
    return {p for p, leader, replicas in topic_parts(desc) if leader != replicas[0]}


async def wait_preferred(admin: Admin, timeout: float) -> ClusterDescription:
    """Until every partition of TOPIC is led by its preferred replica (the controller's view)."""
    return await poll_until_async(
        admin.describe_cluster,
        lambda d: len(topic_parts(d)) == PARTITIONS and not off_preferred(d),
        f"{TOPIC}: every partition led by its preferred replica",
        timeout=timeout,
        interval=0.1,
        detail=topic_parts,
    )


async def produce_round(bootstrap: str, tag: str, acked: dict[int, list[bytes]]) -> None:
    """Two records to every partition, each acknowledged (recorded in `acked`)."""
    async with Producer(bootstrap, idempotent=True, linger_ms=1) as p:
        for partition in range(PARTITIONS):
            for i in range(2):
                value = f"{tag}-{partition}-{i}".encode()
                md = await p.send_and_wait(TOPIC, value, partition=partition)
                assert md.partition == partition
                acked.setdefault(partition, []).append(value)


async def read_back(bootstrap: str, acked: dict[int, list[bytes]]) -> None:
    """Every acknowledged record is in its partition, in order, once."""
    total = sum(len(v) for v in acked.values())
    async with Consumer(bootstrap, group_id=None, enable_auto_commit=False) as c:
        c.assign([(TOPIC, p) for p in range(PARTITIONS)])
        for p in range(PARTITIONS):
            c.seek((TOPIC, p), 0)
        records = await poll_records(c, total, timeout=20)
    got: dict[int, list[bytes]] = {}
    for r in records:
        assert r.value is not None
        got.setdefault(r.partition, []).append(r.value)
    assert got == acked


async def kill_and_fail_over(cluster: Cluster, admin: Admin) -> int:
    """SIGKILL a broker other than the controller that prefers some partitions; wait until
    none of TOPIC's partitions is led by it; returns it."""
    controller = await cluster.controller()
    desc = await admin.describe_cluster()
    victim = next(r[0] for _, _, r in topic_parts(desc) if r[0] != controller)
    cluster.kill(victim)
    await cluster.wait_leaders(TOPIC, avoid=[victim], timeout=20)
    return victim


async def test_the_controller_moves_leaders_back_after_a_restart(
    cluster_factory: MakeCluster,
) -> None:
    cluster = cluster_factory(3, leader_balance_interval_s=1)
    acked: dict[int, list[bytes]] = {}
    async with Admin(cluster.bootstrap, timeout_s=20) as admin:
        await admin.create_topic(TOPIC, partitions=PARTITIONS, replication_factor=3)
        desc = await wait_preferred(admin, timeout=15)
        counts = Counter(leader for _, leader, _ in topic_parts(desc))
        assert sorted(counts.values()) == [2, 2, 2], counts  # placement spreads them
        await produce_round(cluster.bootstrap, "before", acked)

        victim = await kill_and_fail_over(cluster, admin)
        await produce_round(cluster.bootstrap, "during", acked)
        await in_thread(cluster.start_broker, victim)

        # A few balancing intervals: a transfer in flight at a time (6 partitions).
        desc = await wait_preferred(admin, timeout=15)
        counts = Counter(leader for _, leader, _ in topic_parts(desc))
        assert max(counts.values()) - min(counts.values()) <= 1 and len(counts) == 3, counts
        await produce_round(cluster.bootstrap, "after", acked)
    await read_back(cluster.bootstrap, acked)
    assert not cluster.unexpected_exits() and not cluster.audit_failures()


async def test_cli_leaders_balance_moves_leaders_when_automatic_balancing_is_off(
    cluster_factory: MakeCluster,
) -> None:
    cluster = cluster_factory(3, leader_balance_interval_s=0)
    async with Admin(cluster.bootstrap, timeout_s=20) as admin:
        await admin.create_topic(TOPIC, partitions=PARTITIONS, replication_factor=3)
        await wait_preferred(admin, timeout=15)
        victim = await kill_and_fail_over(cluster, admin)
        await in_thread(cluster.start_broker, victim)
        # Back and alive in the controller's view. A restart stirs elections (leaderships
        # move, perhaps the controller too): wait until two views in a row agree, with
        # partitions off their preferred replica (nothing moves them back: balancing is off).
        seen: list[ClusterDescription] = []

        def settled(d: ClusterDescription) -> bool:
            seen.append(d)
            return (
                len(seen) >= 2
                and any(b.id == victim and b.alive for b in d.brokers)
                and topic_parts(seen[-2]) == topic_parts(d)
                and bool(off_preferred(d))
            )

        desc = await poll_until_async(
            admin.describe_cluster,
            settled,
            f"broker {victim} alive again, leaders settled off their preferred replicas",
            timeout=15,
            interval=0.5,
            detail=topic_parts,
        )
        preferred = {p: replicas[0] for p, _, replicas in topic_parts(desc)}

    out = await sluice(cluster.bootstrap, "leaders", "balance", "--topic", TOPIC, "--json")
    assert out.returncode == 0, out.stderr
    first = json.loads(out.stdout)
    assert first["pending"] and first["balanced"] is False, first
    pending = {p["partition"]: p for p in first["pending"]}
    for p in first["pending"]:
        assert p["topic"] == TOPIC and p["preferred"] == preferred[p["partition"]], first
        assert p["leader"] != p["preferred"], first
    assert len(first["transfers"]) <= 1, first  # 6 partitions: one transfer in flight at most
    for t in first["transfers"]:
        assert t["topic"] == TOPIC and t["partition"] in pending, first
        assert (t["from"], t["to"]) == (
            pending[t["partition"]]["leader"],
            preferred[t["partition"]],
        )

    out = await sluice(
        cluster.bootstrap, "leaders", "balance", "--wait", "--json", "--timeout", "20"
    )
    assert out.returncode == 0, out.stderr
    final = json.loads(out.stdout)
    assert final["balanced"] is True and final["pending"] == [], final
    for t in final["transfers"]:
        assert t["topic"] == TOPIC and t["to"] == preferred[t["partition"]] != t["from"], final
    assert final["transfers"] or first["transfers"], (first, final)
    async with Admin(cluster.bootstrap, timeout_s=20) as admin:
        await wait_preferred(admin, timeout=5)
    assert not cluster.unexpected_exits() and not cluster.audit_failures()
