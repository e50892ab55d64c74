"""Three real brokers on this machine, replication factor 3: throughput, latency, failover.

Run with `python -m tests.bench.cluster_bench` (`--help` lists the flags). A benchmark: it
prints figures and never asserts timing.

1. Throughput: `sluice bench produce` (a separate process, as a user runs it) of `--records`
   records of 100 bytes into a 6-partition RF 3 topic, then `sluice bench consume` of them.
2. Latency: the same command offering 5,000 records/s (`--rate`) with a 1 ms linger; produce
   latency is from `send` to acknowledgement (quorum commit), per record.
3. Failover, `--kills` times: one producer offers a record every millisecond to a 1-partition
   RF 3 topic; the partition's leader gets SIGKILL; the figure is the time from the kill to
   the first acknowledgement of a record sent after it (only the successor can give that).
   The killed broker is restarted and the next round waits until it is ready again.
Every acknowledged failover record is read back at the end and checked (exactly once, in
order), so the figures are of a broker that kept its promises.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import signal
import statistics
import tempfile
import time
from pathlib import Path

import trio

from consumers import Admin, Consumer, Producer
from consumers.cluster import Cluster, PartitionMeta
from tests.support.harness import BrokerProcess, free_port
from tests.support.sluice_cli import run_sluice
from tests.support.wait import poll_until_async


def start_cluster(
    base: Path, n: int = 3, config: dict[str, object] | None = None
) -> list[BrokerProcess]:
    """`n` brokers (the first three controllers), each with `config` added to its own."""
    peer_ports = [free_port() for _ in range(n)]
    controllers = ",".join(f"{i}@127.0.0.1:{p}" for i, p in enumerate(peer_ports[:3]))
    brokers = [
        BrokerProcess(
            base / f"d{i}",
            node_id=i,
            peer_port=peer_ports[i],
            config={"controllers": controllers, **(config or {})},
        )
        for i in range(n)
    ]
    for b in brokers:
        b.start()
    for b in brokers:
        b.wait_ready()
    return brokers


def sluice(*args: str) -> dict[str, float]:
    """The figures `sluice *args --json` prints (no time limit: a benchmark runs as long as
    it takes; a failed command raises)."""
    return dict(json.loads(run_sluice(*args, "--json", timeout=None, check=True).stdout))


async def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    async with Admin(bootstrap) as admin:
        await admin.create_topic(name, partitions=partitions, replication_factor=3)


async def leader_of(
    bootstrap: str, topic: str, partition: int, timeout: float = 60.0
) -> tuple[int, int]:
    """(leader, leader_term), waiting until there is a leader (WaitTimeout after `timeout`)."""
    async with Cluster(bootstrap) as c:

        async def probe() -> PartitionMeta | None:
            await c.refresh([topic])
            return c.metadata.partition((topic, partition))

        p = await poll_until_async(
            probe,
            lambda p: p is not None and p.leader is not None,
            f"a leader of {topic}/{partition}",
            timeout=timeout,
        )
        assert p is not None and p.leader is not None
        return p.leader, p.leader_term


async def failover_rounds(brokers: list[BrokerProcess], kills: int, seed: int) -> list[float]:
    bootstrap = ",".join(b.bootstrap for b in brokers)
    await create_topic(bootstrap, "failover", 1)
    rng = random.Random(seed)
    acked: list[tuple[int, bytes]] = []
    times: list[float] = []
    async with Producer(bootstrap, linger_ms=0, delivery_timeout_s=60) as producer:
        counter = 0
        kill_at: float | None = None
        first_after: float | None = None
        got_first = trio.Event()

        async def watch(delivery: object, sent_at: float, value: bytes) -> None:
            nonlocal first_after
            md = await delivery.wait()  # type: ignore[attr-defined]
            acked.append((md.offset, value))
            if kill_at is not None and sent_at > kill_at and first_after is None:
                first_after = time.monotonic()
                got_first.set()

        async with trio.open_nursery() as nursery:

            async def offer() -> None:
                nonlocal counter
                while True:
                    value = b"%08d" % counter
                    counter += 1
                    d = producer.send_nowait("failover", value, partition=0)
                    nursery.start_soon(watch, d, time.monotonic(), value)
                    await trio.sleep(0.001)

            nursery.start_soon(offer)
            for round_no in range(kills):
                leader, _ = await leader_of(bootstrap, "failover", 0)
                await trio.sleep(0.3 + rng.random() * 0.3)
                victim = brokers[leader]
                got_first = trio.Event()
                first_after = None
                assert victim.proc is not None
                kill_at = time.monotonic()
                os.kill(victim.proc.pid, signal.SIGKILL)
                await got_first.wait()
                assert first_after is not None
                times.append(first_after - kill_at)
                kill_at = None
                await trio.to_thread.run_sync(victim.proc.wait)
                await trio.to_thread.run_sync(victim.start)
                await trio.to_thread.run_sync(victim.wait_ready)
                print(
                    f"  kill {round_no + 1}/{kills}: broker {leader}, "
                    f"{times[-1] * 1000:.0f} ms to the first ack on its successor",
                    flush=True,
                )
            nursery.cancel_scope.cancel()
        await producer.flush()
    await verify(bootstrap, acked)
    return times


async def verify(bootstrap: str, acked: list[tuple[int, bytes]]) -> None:
    """Every acknowledged record is read back at its offset, exactly once."""
    want = dict(acked)
    end = max(want) + 1 if want else 0
    seen: dict[int, bytes] = {}
    async with Consumer(bootstrap, auto_offset_reset="earliest") as consumer:
        consumer.assign([("failover", 0)])
        with trio.fail_after(60):
            while len(seen) < end:
                for rec in await consumer.poll(timeout=1.0):
                    seen[rec.offset] = rec.value or b""
    values = list(seen.values())
    assert len(values) == len(set(values)), "a record was read twice"
    lost = [o for o, v in want.items() if seen.get(o) != v]
    assert not lost, f"acknowledged records not read back at their offsets: {lost[:5]}"
    print(f"  verified: {len(want)} acknowledged failover records read back once, in order")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=500_000)
    ap.add_argument("--latency-records", type=int, default=50_000)
    ap.add_argument("--kills", type=int, default=30)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="sluice-cluster-bench-"))
    print(
        f"{platform.node()} {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        f"3 brokers, replication factor 3, data in {base}"
    )
    brokers = start_cluster(base)
    try:
        bootstrap = ",".join(b.bootstrap for b in brokers)
        trio.run(create_topic, bootstrap, "bench", 6)
        common = ("--topic", "bench", "--bootstrap", bootstrap)
        tput = sluice("bench", "produce", "--records", str(args.records), *common)
        print(
            f"produce  {tput['records_per_s']:>10,.0f} records/s  {tput['mb_per_s']:.1f} MB/s"
            f"  p50 {tput['latency_p50_ms']:.1f} ms  p99 {tput['latency_p99_ms']:.1f} ms"
        )
        cons = sluice("bench", "consume", "--records", str(args.records), *common)
        print(f"consume  {cons['records_per_s']:>10,.0f} records/s  {cons['mb_per_s']:.1f} MB/s")
        lat = sluice(
            "bench",
            "produce",
            "--records",
            str(args.latency_records),
            "--rate",
            "5000",
            "--linger-ms",
            "1",
            *common,
        )
        print(
            f"at 5,000 records/s: p50 {lat['latency_p50_ms']:.2f} ms  "
            f"p99 {lat['latency_p99_ms']:.2f} ms  p99.9 {lat['latency_p999_ms']:.2f} ms"
        )
        times = trio.run(failover_rounds, brokers, args.kills, args.seed)
        ms = sorted(t * 1000 for t in times)
        print(
            f"failover over {len(ms)} kills: median {statistics.median(ms):.0f} ms, "
            f"max {ms[-1]:.0f} ms, min {ms[0]:.0f} ms"
        )
    finally:
        for b in brokers:
            b.kill()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
