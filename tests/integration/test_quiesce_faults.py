"""Quiescence with real broker processes: three brokers, a topic of idle partitions (RF 3).

The groups quiesce (`sluice_raft_groups_quiesced` on /metrics); then the broker leading idle
partitions is SIGKILLed, or stopped (SIGSTOP: silent, its sockets open, so only the peer
keepalive's silence bound tells the others): new leaders are elected and a produce to every
partition it led succeeds within a few seconds, and the survivors' groups quiesce again
without it. Every acknowledged record is read back at its offset (History), the durability
audit is on in every broker, and no broker exits unasked.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections.abc import Callable, Iterable

import trio

from consumers import Admin, Producer
from tests.integration.cluster import Cluster, Leaders, read_back
from tests.support.history import History

MakeCluster = Callable[..., Cluster]
TOPIC = "idle"
PARTITIONS = 12
FAILOVER_S = 5.0
"""New leaders for every partition the lost broker led, and a record produced to each, within
this (the keepalive's 0.6 s silence bound, an election, a new producer's metadata)."""


def quiesced(cluster: Cluster, i: int) -> int:
    """Broker i's `sluice_raft_groups_quiesced` gauge."""
    url = f"http://127.0.0.1:{cluster.brokers[i].http_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
    m = re.search(r"^sluice_raft_groups_quiesced (\S+)$", text, re.M)
    assert m is not None, "no sluice_raft_groups_quiesced on /metrics"
    return int(float(m.group(1)))


async def wait_quiesced(
    cluster: Cluster, brokers: Iterable[int], at_least: int, timeout: float = 20.0
) -> None:
    wanted = list(brokers)
    with trio.move_on_after(timeout):
        while True:
            counts = [await trio.to_thread.run_sync(quiesced, cluster, i) for i in wanted]
            if all(c >= at_least for c in counts):
                return
            await trio.sleep(0.2)
    raise AssertionError(
        f"brokers {wanted} quiesced {counts} groups, wanted {at_least} each; logs {cluster.root}"
    )


async def setup(cluster: Cluster, history: History) -> None:
    async with Admin(cluster.bootstrap) as admin:
        await admin.create_topic(TOPIC, partitions=PARTITIONS, replication_factor=3)
    await cluster.wait_stable(TOPIC)
    await produce(cluster, history, range(PARTITIONS), "warm")
    # Every partition group, on every broker, goes quiet; /stats counts them as /metrics does.
    await wait_quiesced(cluster, range(cluster.size), PARTITIONS)
    url = f"http://127.0.0.1:{cluster.brokers[0].http_port}/stats"
    with urllib.request.urlopen(url, timeout=5) as r:
        assert json.loads(r.read())["node"]["quiesced"] >= PARTITIONS


async def produce(
    cluster: Cluster, history: History, partitions: Iterable[int], tag: str, bootstrap: str = ""
) -> float:
    """One record to each partition, every acknowledgement recorded; the seconds it took."""
    started = time.monotonic()
    async with Producer(
        bootstrap or cluster.bootstrap,
        idempotent=True,
        linger_ms=0,
        request_timeout_ms=1000,
        delivery_timeout_s=30,
    ) as p:
        sent = []
        for part in partitions:
            value = f"{tag}-{part}".encode()
            sent.append((part, value, await p.send(TOPIC, value, partition=part)))
        for part, value, d in sent:
            md = await d.wait()
            assert md.partition == part
            history.ack((TOPIC, part), md.offset, value, producer=tag)
    return time.monotonic() - started


async def led_by(cluster: Cluster, broker: int) -> list[int]:
    leaders = await cluster.wait_leaders(TOPIC)
    return sorted(p for p, (leader, _) in leaders.items() if leader == broker)


async def failover(
    cluster: Cluster, victim: int, orphans: list[int], before: Leaders, started: float
) -> float:
    """Seconds from `started` until every other broker names a leader other than `victim`,
    in a term newer than `before` (the leaders before the fault), for every partition in
    `orphans` (polled every 50 ms)."""
    others = [i for i in range(cluster.size) if i != victim]
    with trio.fail_after(30):
        while True:
            views = await cluster.views(TOPIC, others)
            if len(views) == len(others) and all(
                v.leaders[p][0] not in (None, victim) and v.leaders[p][1] > before[p][1]
                for v in views
                for p in orphans
            ):
                return time.monotonic() - started
            await trio.sleep(0.05)


def check(cluster: Cluster, history: History) -> None:
    problems = history.check()
    assert not problems, f"{len(problems)} problems, first: {problems[:10]}; logs {cluster.root}"
    assert not cluster.audit_failures(), cluster.audit_failures()
    assert not cluster.unexpected_exits(), cluster.unexpected_exits()


async def set_up_victim(
    cluster: Cluster, history: History
) -> tuple[int, list[int], list[int], str, Leaders]:
    """The quiesced cluster set up; the broker leading partition 0 (the victim), the
    partitions it leads, the other brokers, their bootstrap, and the leaders before."""
    await setup(cluster, history)
    victim = (await cluster.leaders(TOPIC))[0][0]
    assert victim is not None
    orphans = await led_by(cluster, victim)
    others = [i for i in range(cluster.size) if i != victim]
    bootstrap = ",".join(cluster.brokers[i].bootstrap for i in others)
    before = await cluster.leaders(TOPIC)
    return victim, orphans, others, bootstrap, before


def test_sigkill_of_the_leader_of_quiesced_partitions(cluster_factory: MakeCluster) -> None:
    """... and once the survivors are quiet again, the killed broker restarts: it follows,
    every group quiesces again, and no leadership moves (no election anywhere: a restarted
    member, with no leader yet, grants any vote, so a follower woken for nothing would have
    timed out and won one). Leader balancing is off here, so only elections could move one."""
    cluster = cluster_factory(3, leader_balance_interval_s=0)
    history = History()

    async def main() -> None:
        victim, orphans, others, bootstrap, before = await set_up_victim(cluster, history)
        started = time.monotonic()
        await trio.to_thread.run_sync(cluster.kill, victim)
        elected = await failover(cluster, victim, orphans, before, started)
        took = await produce(cluster, history, orphans, "after-kill", bootstrap)
        print(
            f"\nSIGKILL of broker {victim} (led {orphans}): new leaders named in "
            f"{elected:.2f} s, a record produced to each in {took:.2f} s more"
        )
        assert elected + took < FAILOVER_S
        # The survivors quiesce again, the lost broker's members excused.
        await wait_quiesced(cluster, others, PARTITIONS)
        settled = await cluster.leaders(TOPIC)
        await trio.to_thread.run_sync(cluster.start_broker, victim)
        await wait_quiesced(cluster, range(cluster.size), PARTITIONS)
        after = await cluster.leaders(TOPIC)
        moved = {p: (settled[p], after[p]) for p in settled if after[p] != settled[p]}
        assert not moved, f"the restart moved leaderships (partition: before, after): {moved}"
        await produce(cluster, history, range(PARTITIONS), "back")
        await wait_quiesced(cluster, range(cluster.size), PARTITIONS)
        await read_back(cluster, history, TOPIC, PARTITIONS)

    trio.run(main)
    check(cluster, history)


def test_sigstop_of_the_leader_of_quiesced_partitions(cluster_factory: MakeCluster) -> None:
    cluster = cluster_factory(3)
    history = History()

    async def main() -> None:
        victim, orphans, others, bootstrap, before = await set_up_victim(cluster, history)
        started = time.monotonic()
        await trio.to_thread.run_sync(cluster.pause, victim)
        try:
            # Stopped, its sockets open: only the keepalive's silence bound tells the others.
            elected = await failover(cluster, victim, orphans, before, started)
            took = await produce(cluster, history, orphans, "after-stop", bootstrap)
            print(
                f"\nSIGSTOP of broker {victim} (led {orphans}): new leaders named in "
                f"{elected:.2f} s, a record produced to each in {took:.2f} s more"
            )
            assert elected + took < FAILOVER_S
            await wait_quiesced(cluster, others, PARTITIONS)
        finally:
            await trio.to_thread.run_sync(cluster.resume, victim)
        # Resumed, it finds its links closed and newer terms: it follows; all quiesce again.
        await produce(cluster, history, range(PARTITIONS), "resumed")
        await wait_quiesced(cluster, range(cluster.size), PARTITIONS)
        await read_back(cluster, history, TOPIC, PARTITIONS)

    trio.run(main)
    check(cluster, history)
