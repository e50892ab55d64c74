"""Crash safety with a real broker process: idempotent producers stream while the broker is
killed with SIGKILL at random moments and restarted; afterwards every acknowledged record is
read back exactly once, in order, with offsets without gaps; and the durability audit, on
throughout, never stopped the broker for an acknowledgement ahead of its sync."""

from __future__ import annotations

import random
import signal
from collections.abc import Callable

import trio

from consumers import Consumer, Producer
from tests.support.harness import BrokerProcess
from tests.support.history import History

TOPIC = "crash"
PARTITIONS = 3
KILLS = 6


def test_sigkill_loses_no_acknowledged_record(
    broker_factory: Callable[..., BrokerProcess],
) -> None:
    b = broker_factory(durability_audit=True)
    b.start()
    b.wait_ready()
    history = History()
    stats = trio.run(_run, b, history, random.Random(20261126))
    problems = history.check()
    assert not problems, problems[:10]
    assert stats["acked"] > 1000, stats
    assert stats["kills"] >= 5
    assert "DurabilityViolation" not in b.log_text(), b.log_tail()
    print(f"\ncrash safety: {stats}")


async def _run(b: BrokerProcess, history: History, rng: random.Random) -> dict[str, int]:
    from consumers import Admin

    async with Admin(b.bootstrap) as admin:
        await admin.create_topic(TOPIC, partitions=PARTITIONS, replication_factor=1)
    stats = {"acked": 0, "failed": 0, "kills": 0}
    stop = trio.Event()

    async def produce(worker: int) -> None:
        async with Producer(b.bootstrap, idempotent=True, linger_ms=2) as p:
            n = 0
            pending = []
            while not stop.is_set():
                n += 1
                value = b"w%d-%d" % (worker, n)
                partition = n % PARTITIONS
                d = await p.send(TOPIC, value, partition=partition)
                pending.append((partition, value, d))
                if len(pending) >= 200:
                    await _settle(worker, pending, history, stats)
                    pending = []
                await trio.sleep(0)
            await p.flush()
            await _settle(worker, pending, history, stats)

    async def kill_and_restart() -> None:
        for _ in range(KILLS):
            await trio.sleep(rng.uniform(0.4, 1.2))
            assert b.returncode is None, f"the broker died on its own: {b.log_tail()}"
            b.kill(signal.SIGKILL)
            stats["kills"] += 1
            await trio.sleep(rng.uniform(0.0, 0.3))
            await trio.to_thread.run_sync(b.start)
            await trio.to_thread.run_sync(b.wait_ready)
        await trio.sleep(1.0)
        stop.set()

    with trio.fail_after(240):
        async with trio.open_nursery() as n:
            for w in range(2):
                n.start_soon(produce, w)
            n.start_soon(kill_and_restart)
    assert b.returncode is None, b.log_tail()
    await _read_back(b, history)
    return stats


async def _settle(
    worker: int,
    pending: list[tuple[int, bytes, object]],
    history: History,
    stats: dict[str, int],
) -> None:
    for partition, value, d in pending:
        try:
            md = await d.wait()  # type: ignore[attr-defined]
        except Exception:
            stats["failed"] += 1  # not acknowledged: it may or may not be in the log
            continue
        assert md.partition == partition
        history.ack((TOPIC, partition), md.offset, value, producer=worker)
        stats["acked"] += 1


async def _read_back(b: BrokerProcess, history: History) -> None:
    async with Consumer(b.bootstrap, auto_offset_reset="earliest") as c:
        tps = [(TOPIC, p) for p in range(PARTITIONS)]
        c.assign(tps)
        for tp in tps:
            c.seek(tp, 0)
        ends = {tp: await _high_watermark(b, tp) for tp in tps}
        seen = {tp: 0 for tp in tps}
        with trio.fail_after(60):
            while any(seen[tp] < ends[tp] for tp in tps):
                for r in await c.poll(timeout=1.0, max_records=5000):
                    tp = (r.topic, r.partition)
                    history.read(tp, r.offset, r.value or b"")
                    seen[tp] = max(seen[tp], r.offset + 1)


async def _high_watermark(b: BrokerProcess, tp: tuple[str, int]) -> int:
    from consumers import Admin

    async with Admin(b.bootstrap) as admin:
        desc = await admin.describe_topic(tp[0])
        return next(p.high_watermark for p in desc.partitions if p.partition == tp[1])
