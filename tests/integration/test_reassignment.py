"""Partition reassignment with real brokers, under continuous idempotent production and a
consuming group: a 4th broker joins and `sluice rebalance execute --wait` moves partitions onto
it; `sluice broker drain 1` empties broker 1 while the controller's broker is SIGKILLed in the
middle (the reassignment finishes under the next controller); the history checker finds
nothing lost or duplicated, and `sluice cluster status --json` shows replica and leader counts
per serving broker (over every partition of the cluster, internal topics included) differing
by at most one.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable

import trio

from consumers import Consumer
from consumers.errors import SluiceError
from tests.integration.cluster import Cluster
from tests.integration.test_cluster_faults import (
    TOPIC,
    Workload,
    check,
    create_topic,
    run_with_workload,
)
from tests.support.history import History
from tests.support.sluice_cli import run_sluice


async def _group_reader(cluster: Cluster, history: History, stop: trio.Event) -> None:
    """A consumer group member reading TOPIC from the start and committing as it goes: every
    record it reads goes into `history` (a value read at two offsets is a problem)."""
    while not stop.is_set():
        try:
            async with Consumer(
                cluster.bootstrap, group_id="movers", auto_offset_reset="earliest"
            ) as c:
                c.subscribe([TOPIC])
                while not stop.is_set():
                    for r in await c.poll(timeout=0.5, max_records=2000):
                        history.read((r.topic, r.partition), r.offset, r.value or b"")
                    await c.commit()
        except SluiceError:
            await trio.sleep(0.2)  # a coordinator moving: join again


async def _cli(cluster: Cluster, *args: str, timeout: float = 90.0) -> str:
    out = await trio.to_thread.run_sync(
        lambda: run_sluice(
            *args, "--bootstrap", cluster.bootstrap, "--timeout", str(timeout),
            timeout=timeout + 30,
        )
    )  # fmt: skip
    assert out.returncode == 0, f"sluice {' '.join(args)}: {out.stderr.decode()}"
    return out.stdout.decode()


async def _controller(cluster: Cluster) -> int:
    views = await cluster.views(None)
    controllers = Counter(v.controller for v in views if v.controller is not None)
    assert controllers, "no broker names a controller"
    return controllers.most_common(1)[0][0]


def _spread(counts: dict[int, int]) -> int:
    return max(counts.values()) - min(counts.values())


def test_join_rebalance_then_drain_with_the_controller_killed(
    cluster_factory: Callable[..., Cluster],
) -> None:
    cluster = cluster_factory(4, seeds=3, offsets_topic_partitions=2, leader_balance_interval_s=2)
    history = History()
    moved_onto_3: list[int] = []

    async def scenario(w: Workload) -> None:
        stop = trio.Event()
        async with trio.open_nursery() as n:
            n.start_soon(_group_reader, cluster, history, stop)
            await trio.to_thread.run_sync(cluster.start_broker, 3)
            # The joiner holds nothing until a rebalance gives it replicas.
            out = json.loads(await _cli(cluster, "rebalance", "execute", "--wait", "--json"))
            moved_onto_3.extend(m["partition"] for m in out["moves"] if 3 in m["new"])
            assert out["replica_counts"]["3"] >= 1, out
            await w.progress(50)
            # Drain broker 1, and SIGKILL the controller while the replicas move.
            controller = await _controller(cluster)
            drained = json.loads(
                await _cli(cluster, "broker", "drain", "1", "--throttle", "16K", "--json")
            )
            assert drained["replica_counts"]["1"] == 0, drained
            moving = json.loads(await _cli(cluster, "rebalance", "status", "--json"))
            assert moving["reassignments"], "the drain finished before the controller died"
            await trio.to_thread.run_sync(cluster.kill, controller)
            await w.progress(50, timeout=60)
            await trio.to_thread.run_sync(cluster.start_broker, controller)
            status = json.loads(
                await _cli(cluster, "rebalance", "execute", "--wait", "--throttle", "0", "--json")
            )
            assert status["replica_counts"]["1"] == 0, status
            left = json.loads(await _cli(cluster, "rebalance", "status", "--json"))
            assert left["reassignments"] == [] and left["draining"] == [1], left
            await w.progress(50)
            stop.set()

    async def main() -> Workload:
        await create_topic(cluster)
        return await run_with_workload(cluster, history, scenario, budget_s=240)

    w = trio.run(main)
    check(cluster, history, w)
    assert moved_onto_3, "the rebalance moved nothing onto the new broker"

    async def final_layout() -> dict[str, object]:
        # Leaders return to the preferred replicas within a balancing interval or two.
        await _cli(cluster, "leaders", "balance", "--wait")
        return dict(json.loads(await _cli(cluster, "cluster", "status", "--json")))

    status = trio.run(final_layout)
    replicas: Counter[int] = Counter()
    leaders: Counter[int] = Counter()
    for p in status["partitions"]:  # type: ignore[attr-defined]
        replicas.update(p["replicas"])
        leaders[p["leader"]] += 1
    serving = [0, 2, 3]
    assert 1 not in replicas and 1 not in leaders, (replicas, leaders)
    assert _spread({b: replicas[b] for b in serving}) <= 1, replicas
    assert _spread({b: leaders[b] for b in serving}) <= 1, leaders


def test_cancel_sends_a_move_back_and_keeps_every_record(
    cluster_factory: Callable[..., Cluster],
) -> None:
    """A move slowed to 1 KiB/s is cancelled: the partitions end on their old replicas,
    the broker that was joining holds none, and every acknowledged record reads back."""
    cluster = cluster_factory(4, seeds=3, offsets_topic_partitions=1)
    history = History()

    async def scenario(w: Workload) -> None:
        before = json.loads(await _cli(cluster, "cluster", "status", "--json"))
        await trio.to_thread.run_sync(cluster.start_broker, 3)
        plan = json.loads(await _cli(cluster, "rebalance", "execute", "--throttle", "1K", "--json"))
        assert any(3 in m["new"] for m in plan["moves"]), plan
        moving = json.loads(await _cli(cluster, "rebalance", "status", "--json"))
        assert moving["reassignments"], moving
        cancelled = json.loads(
            await _cli(cluster, "rebalance", "cancel", "--throttle", "0", "--wait", "--json")
        )
        assert cancelled["moves"], cancelled
        assert json.loads(await _cli(cluster, "rebalance", "status", "--json")) == {
            "reassignments": [],
            "draining": [],
            "throttle_bytes_per_s": 0,
        }
        await w.progress(30)
        after = json.loads(await _cli(cluster, "cluster", "status", "--json"))
        layout = {(p["topic"], p["partition"]): sorted(p["replicas"]) for p in after["partitions"]}
        assert all(3 not in r for r in layout.values()), layout
        old = {(p["topic"], p["partition"]): sorted(p["replicas"]) for p in before["partitions"]}
        assert {k: v for k, v in layout.items() if k in old} == old

    async def main() -> Workload:
        await create_topic(cluster)
        return await run_with_workload(cluster, history, scenario, budget_s=120)

    check(cluster, history, trio.run(main))
