"""Exactly-once on three real brokers (replication factor 3).

1. A consume-transform-produce pipeline: two workers, each a group member reading `in`
   (read_committed, no auto-commit) and a transactional producer writing each record's
   transform to `out` and the consumed offsets in the same transaction. A producer feeds `in`
   while brokers are SIGKILLed and restarted: a random one, the one coordinating a worker's
   transactions, the one coordinating the group. A transaction that fails is aborted and its
   worker rewinds to the group's committed offsets; a producer that ended fenced or in doubt
   is replaced by a new one with the same transactional id. Afterwards the group has consumed
   all of `in`, and a read_committed reader of `out` finds every record of `in` transformed
   exactly once (count and set equality).
2. The coordinator's broker dies right after PRE_COMMITTED (the failpoint
   `txn.kill_after_precommit` SIGKILLs it once every participant acknowledged PRECOMMIT; the
   transaction log has replication factor 1 here, so no other broker takes over): the
   participants commit on their own after the pre-commit timeout, read_committed readers see
   the whole transaction while the coordinator is still down, and once it is back the
   client's commit, retried all along, is answered committed.
"""

from __future__ import annotations

import random
import signal
from collections import Counter
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

import pytest
import trio

from consumers import Admin, Consumer, Producer
from consumers.errors import SluiceError, TransactionAbortedError
from tests.integration.cluster import Cluster
from tests.support.reads import read_to_end
from tests.support.wait import poll_until_async

MakeCluster = Callable[..., Cluster]
IN, OUT, GROUP = "in", "out", "etl"
PARTITIONS = 4


@dataclass
class Tally:
    committed: int = 0
    aborted: int = 0
    replaced: int = 0
    errors: list[str] = field(default_factory=list)


async def rewind(c: Consumer) -> None:
    """Back to the group's committed offsets (what an aborted transaction consumed is read
    again); partitions without one start over."""
    owned = sorted(c.assignment())
    if not owned:
        return
    committed = await c.committed(owned)
    for tp in owned:
        offset = committed.get(tp)
        if offset is None:
            c.seek_to_beginning([tp])
        else:
            c.seek(tp, offset)


async def worker(name: str, bootstrap: str, done: trio.Event, tally: Tally) -> None:
    """One pipeline instance until `done`: poll, transform, produce and commit the offsets in
    one transaction."""
    async with Consumer(
        bootstrap,
        group_id=GROUP,
        enable_auto_commit=False,
        session_timeout_ms=6000,
        isolation="read_committed",
    ) as c:
        c.subscribe([IN])
        while not done.is_set():
            async with AsyncExitStack() as stack:
                p = await stack.enter_async_context(
                    Producer(bootstrap, transactional_id=name, delivery_timeout_s=20)
                )
                while not done.is_set():
                    records = await c.poll(timeout=0.3, max_records=100)
                    if not records:
                        continue
                    try:
                        async with p.transaction():
                            ends: dict[tuple[str, int], int] = {}
                            for r in records:
                                await p.send(OUT, b"out:" + (r.value or b""), partition=r.partition)
                                ends[(r.topic, r.partition)] = r.offset + 1
                            await p.send_offsets_to_transaction(ends, c.group_metadata())
                    except SluiceError as e:
                        tally.errors.append(f"{name}: {type(e).__name__}: {e}")
                        await rewind(c)
                        if isinstance(e, TransactionAbortedError):
                            tally.aborted += 1
                            continue
                        tally.replaced += 1
                        break  # fenced or in doubt: a new producer with the same id takes over
                    tally.committed += len(records)


async def feed(bootstrap: str, count: int, rate: float, failed: list[SluiceError]) -> list[bytes]:
    """Send `count` records to `in` at about `rate` per second; the acknowledged values (the
    failures go to `failed`)."""
    deliveries = []
    async with Producer(bootstrap, delivery_timeout_s=60) as p:
        for i in range(count):
            value = b"r%05d" % i
            deliveries.append((value, await p.send(IN, value, partition=i % PARTITIONS)))
            if i % 20 == 19:
                await trio.sleep(20 / rate)
        acked: list[bytes] = []
        for value, d in deliveries:
            try:
                await d.wait()
            except SluiceError as e:
                failed.append(e)
                continue
            acked.append(value)
        if failed:  # the first failure is raised once more: it is counted already
            with pytest.raises(SluiceError):
                await p.flush()
    return acked


async def read_all(bootstrap: str, topic: str) -> list[bytes]:
    """Every value of `topic` as a read_committed reader sees it."""
    return await read_to_end(bootstrap, topic, PARTITIONS)


async def lag(bootstrap: str) -> int | None:
    async with Admin(bootstrap) as admin:
        try:
            d = await admin.describe_group(GROUP)
        except SluiceError:
            return None
        if not d.offsets or any(o.lag is None for o in d.offsets):
            return None
        return sum(o.lag or 0 for o in d.offsets)


def test_consume_transform_produce_is_exactly_once_across_broker_kills(
    cluster_factory: MakeCluster,
) -> None:
    cluster = cluster_factory(3, offsets_topic_partitions=4, group_heartbeat_interval_ms=500)
    rng = random.Random(12)

    async def main() -> None:
        bootstrap = cluster.bootstrap
        async with Admin(bootstrap) as admin:
            for topic in (IN, OUT):
                await admin.create_topic(topic, partitions=PARTITIONS, replication_factor=3)
        tally = Tally()
        done = trio.Event()
        async with trio.open_nursery() as nursery:
            for i in range(2):
                nursery.start_soon(worker, f"etl-{i}", bootstrap, done, tally)
            fed: list[list[bytes]] = []
            feed_failures: list[SluiceError] = []

            async def feeding() -> None:
                fed.append(await feed(bootstrap, 2400, 200, feed_failures))

            nursery.start_soon(feeding)
            await poll_until_async(lambda: trio.sleep(0), lambda _: tally.committed > 200,
                                   "the pipeline committing", timeout=60)  # fmt: skip
            async with Admin(bootstrap) as admin:
                targets = [
                    rng.choice(cluster.live()),
                    (await admin.describe_transaction("etl-0")).coordinator,
                    (await admin.describe_transaction("etl-1")).coordinator,
                ]
            for victim in targets:
                before = tally.committed
                await trio.to_thread.run_sync(cluster.kill, victim)
                await trio.sleep(1.5)
                await trio.to_thread.run_sync(cluster.restart, victim)
                await poll_until_async(
                    lambda: trio.sleep(0), lambda _, b=before: tally.committed > b,
                    f"the pipeline committing again after broker {victim} came back",
                    timeout=60,
                )  # fmt: skip
            with trio.fail_after(120):
                while not fed:
                    await trio.sleep(0.2)
            await poll_until_async(lambda: lag(bootstrap), lambda n: n == 0,
                                   "the group consuming all of `in`", timeout=90)  # fmt: skip
            done.set()
        inputs = await read_all(bootstrap, IN)
        outputs = await read_all(bootstrap, OUT)
        assert set(fed[0]) <= set(inputs)  # every acknowledged input is there
        expected = Counter(b"out:" + v for v in inputs)
        got = Counter(outputs)
        duplicated = {v: n for v, n in got.items() if n > 1}
        assert not duplicated, f"written twice: {sorted(duplicated)[:10]}"
        assert got == expected, (len(outputs), len(inputs), sorted(set(expected) - set(got))[:10])
        print(f"pipeline: {len(inputs)} records exactly once; {tally}")

    trio.run(main)


def test_participants_finish_a_pre_committed_transaction_without_its_coordinator(
    cluster_factory: MakeCluster,
) -> None:
    cluster = cluster_factory(
        3,
        offsets_topic_replication_factor=1,
        transaction_precommit_timeout_ms=2000,
        failpoints="txn.kill_after_precommit",
    )

    async def main() -> None:
        bootstrap = cluster.bootstrap
        async with Admin(bootstrap) as admin:
            await admin.create_topic(OUT, partitions=PARTITIONS, replication_factor=3)
        values = [b"v%d" % i for i in range(12)]
        async with Producer(bootstrap, transactional_id="hang-1", delivery_timeout_s=60) as p:
            async with Admin(bootstrap) as admin:
                await p.begin_transaction()
                for i, v in enumerate(values):
                    await p.send(OUT, v, partition=i % PARTITIONS)
                await p.flush()
                coordinator = (await admin.describe_transaction("hang-1")).coordinator
                proc = cluster.brokers[coordinator].proc
                assert proc is not None
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(p.commit_transaction)
                    # The coordinator's broker kills itself once PRECOMMIT is acknowledged.
                    code = await trio.to_thread.run_sync(proc.wait, 30)
                    assert code == -signal.SIGKILL
                    cluster.killed.add(coordinator)
                    killed_at = trio.current_time()
                    # Participants commit on their own: read_committed readers see it all.
                    seen = await poll_until_async(
                        lambda: read_all(bootstrap, OUT),
                        lambda got: sorted(got) == sorted(values),
                        "the participants committing without their coordinator",
                        timeout=30,
                    )
                    waited = trio.current_time() - killed_at
                    assert cluster.brokers[coordinator].proc is proc  # still down
                    assert sorted(seen) == sorted(values)
                    print(f"participants committed {waited:.1f} s after the coordinator died")
                    cluster.brokers[coordinator].config.pop("failpoints")
                    await trio.to_thread.run_sync(cluster.start_broker, coordinator)
                # The client's EndTxn, retried through the outage, was answered committed.
            async with p.transaction():
                await p.send(OUT, b"after", partition=0)
        assert sorted(await read_all(bootstrap, OUT)) == sorted([*values, b"after"])

    trio.run(main)
