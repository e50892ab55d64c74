"""Idle partitions: each broker's CPU with quiescence on and off, wake latency, failover.

Run with `python -m tests.bench.idle_bench` (`--help` lists the flags). A benchmark: it prints
figures and never asserts timing.

For each mode (`quiesce = true` / `false` in every broker's TOML): three real brokers on this
machine and one topic of `--partitions` partitions (RF 3), nothing produced to it.

1. CPU: once every partition group is quiesced on every broker (mode on; read from
   `sluice_raft_groups_quiesced` on /metrics) or after `--settle` seconds (mode off), and
   5 s more, each broker's user + system CPU time (/proc/PID/stat) over `--window` seconds,
   in cores. Nothing else runs meanwhile (no scrape, no client).
2. Wake latency: a producer that already holds the topic's metadata sends one record to each
   of `--samples` idle partitions, one at a time: send to acknowledgement (the first record a
   quiesced group has seen for a while, so it wakes the leader and then its followers); then
   one more to each of them at once (groups awake) for comparison.
3. Failover of an idle partition: its leader gets SIGKILL; from the kill, a producer offers a
   record every 5 ms (bootstrapped from the survivors); the figure is the time from the kill
   to the first acknowledgement. Then SIGSTOP of another idle partition's leader (silent,
   sockets open: with quiescence only the peer keepalive tells the others; without it, the
   Raft heartbeats do): the time until both survivors name a new leader in a newer term.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

import trio

from consumers import Producer
from consumers.cluster import Cluster
from tests.bench.cluster_bench import create_topic, start_cluster
from tests.support.harness import BrokerProcess

TOPIC = "idle"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def quiesced(b: BrokerProcess) -> int:
    url = f"http://127.0.0.1:{b.http_port}/metrics"
    with urllib.request.urlopen(url, timeout=30) as r:
        text = r.read().decode()
    m = re.search(r"^sluice_raft_groups_quiesced (\S+)$", text, re.M)
    return int(float(m.group(1))) if m else 0


def wait_quiesced(brokers: list[BrokerProcess], groups: int, timeout: float) -> float:
    """Seconds until every broker shows `groups` quiesced groups (or the timeout)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if all(quiesced(b) >= groups for b in brokers):
            break
        time.sleep(1.0)
    return time.monotonic() - started


def measure_cpu(brokers: list[BrokerProcess], window: float) -> list[float]:
    pids = [b.proc.pid for b in brokers if b.proc is not None]
    before = [cpu_seconds(p) for p in pids]
    time.sleep(window)
    after = [cpu_seconds(p) for p in pids]
    return [(a - b) / window for a, b in zip(after, before, strict=True)]


async def leaders(bootstrap: str, partitions: int) -> dict[int, tuple[int | None, int]]:
    async with Cluster(bootstrap) as c:
        await c.refresh([TOPIC])
        out: dict[int, tuple[int | None, int]] = {}
        for p in range(partitions):
            meta = c.metadata.partition((TOPIC, p))
            if meta is not None:
                out[p] = (meta.leader, meta.leader_term)
        return out


async def wake_latency(bootstrap: str, samples: list[int]) -> tuple[list[float], list[float]]:
    """(first record to each idle partition, a second one right after), in seconds."""
    cold: list[float] = []
    warm: list[float] = []
    async with Producer(bootstrap, linger_ms=0, delivery_timeout_s=60) as p:
        await p.send_and_wait(TOPIC, b"metadata", partition=samples[0])  # metadata, connections
        await trio.sleep(3.0)  # that partition quiesces again
        for part in samples:
            started = time.monotonic()
            await p.send_and_wait(TOPIC, b"cold", partition=part)
            cold.append(time.monotonic() - started)
        for part in samples:
            started = time.monotonic()
            await p.send_and_wait(TOPIC, b"warm", partition=part)
            warm.append(time.monotonic() - started)
    return cold, warm


async def sigkill_failover(brokers: list[BrokerProcess], partition: int, victim: int) -> float:
    """SIGKILL the leader of idle `partition`; seconds to the first acknowledgement of a
    record offered (every 5 ms) after the kill."""
    survivors = ",".join(b.bootstrap for i, b in enumerate(brokers) if i != victim)
    proc = brokers[victim].proc
    assert proc is not None
    done = trio.Event()
    first: list[float] = []
    async with Producer(survivors, linger_ms=0, delivery_timeout_s=60) as p:
        # Metadata and connections first; then the partition quiesces again.
        await p.send_and_wait(TOPIC, b"metadata", partition=partition)
        await trio.sleep(3.0)
        killed_at = time.monotonic()
        os.kill(proc.pid, signal.SIGKILL)

        async def watch(d: object) -> None:
            await d.wait()  # type: ignore[attr-defined]
            if not first:
                first.append(time.monotonic() - killed_at)
                done.set()

        async with trio.open_nursery() as n:
            while not done.is_set():
                n.start_soon(watch, p.send_nowait(TOPIC, b"f", partition=partition))
                with trio.move_on_after(0.005):
                    await done.wait()
    await trio.to_thread.run_sync(proc.wait)
    return first[0]


async def sigstop_failover(
    brokers: list[BrokerProcess], partitions: list[int], victim: int
) -> float:
    """SIGSTOP broker `victim`, leader of idle `partitions`: seconds until every survivor
    names another leader in a newer term for all of them (polled every 50 ms)."""
    proc = brokers[victim].proc
    assert proc is not None
    survivors = [b for i, b in enumerate(brokers) if i != victim]
    before = await leaders(survivors[0].bootstrap, max(partitions) + 1)
    stopped_at = time.monotonic()
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        with trio.fail_after(60):
            while True:
                views = [await leaders(b.bootstrap, max(partitions) + 1) for b in survivors]
                if all(
                    v[p][0] not in (None, victim) and v[p][1] > before[p][1]
                    for v in views
                    for p in partitions
                ):
                    return time.monotonic() - stopped_at
                await trio.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGCONT)


def run_mode(quiesce: bool, args: argparse.Namespace) -> dict[str, object]:
    base = Path(tempfile.mkdtemp(prefix=f"sluice-idle-{'on' if quiesce else 'off'}-"))
    brokers = start_cluster(base, 3, {"quiesce": quiesce})
    bootstrap = ",".join(b.bootstrap for b in brokers)
    out: dict[str, object] = {"quiesce": quiesce}
    try:
        started = time.monotonic()
        trio.run(create_topic, bootstrap, TOPIC, args.partitions)
        out["create_s"] = round(time.monotonic() - started, 1)
        if quiesce:
            out["settle_s"] = round(wait_quiesced(brokers, args.partitions, args.settle * 4), 1)
        else:
            time.sleep(args.settle)
            out["settle_s"] = args.settle
        time.sleep(5.0)
        out["quiesced"] = [quiesced(b) for b in brokers]
        time.sleep(2.0)  # the scrape's own work out of the window
        out["cpu_cores"] = [round(c, 4) for c in measure_cpu(brokers, args.window)]
        leads = trio.run(leaders, bootstrap, args.partitions)
        samples = list(range(1, args.partitions, max(1, args.partitions // args.samples)))
        samples = samples[: args.samples]
        if quiesce:
            wait_quiesced(brokers, args.partitions, 30)
        cold, warm = trio.run(wake_latency, bootstrap, samples)
        out["wake_ms"] = _summary(cold)
        out["awake_ms"] = _summary(warm)
        # Failover of idle partitions: the leader of one (SIGKILL), then another's (SIGSTOP).
        if quiesce:
            wait_quiesced(brokers, args.partitions, 30)
        else:
            time.sleep(3.0)
        part = samples[-1] + 1
        victim = leads[part][0]
        assert victim is not None
        out["sigkill_failover_ms"] = round(
            1000 * trio.run(sigkill_failover, brokers, part, victim), 1
        )
        brokers[victim].start()
        brokers[victim].wait_ready(120)
        if quiesce:
            wait_quiesced(brokers, args.partitions, 60)
        else:
            time.sleep(5.0)
        leads = trio.run(leaders, bootstrap, args.partitions)
        victim = leads[0][0]
        assert victim is not None
        led = [p for p, (leader, _) in leads.items() if leader == victim]
        out["sigstop_partitions"] = len(led)
        out["sigstop_failover_ms"] = round(1000 * trio.run(sigstop_failover, brokers, led, victim))
    finally:
        for b in brokers:
            b.kill()
        shutil.rmtree(base, ignore_errors=True)
    return out


def _summary(values: list[float]) -> dict[str, float]:
    ms = sorted(1000 * v for v in values)
    return {
        "median": round(statistics.median(ms), 2),
        "p90": round(ms[int(0.9 * (len(ms) - 1))], 2),
        "max": round(ms[-1], 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--partitions", type=int, default=1000)
    ap.add_argument("--window", type=float, default=20.0, help="CPU measured over this")
    ap.add_argument("--settle", type=float, default=20.0, help="mode off: wait this long")
    ap.add_argument("--samples", type=int, default=20, help="idle partitions woken")
    ap.add_argument("--modes", default="on,off", help="on, off or both (on,off)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    results = [run_mode(mode == "on", args) for mode in args.modes.split(",")]
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(
        f"{args.partitions} idle partitions, RF 3, 3 brokers on {platform.node()} "
        f"({os.cpu_count()} cores, {platform.python_version()}); CPU over {args.window:.0f} s"
    )
    head = (
        "quiesce  CPU per broker (cores)      wake ms (p50/p90/max)   awake ms p50  "
        "SIGKILL failover  SIGSTOP failover"
    )
    print(head)
    for r in results:
        cpu = " ".join(f"{c:.4f}" for c in r["cpu_cores"])  # type: ignore[attr-defined]
        wake = r["wake_ms"]
        awake = r["awake_ms"]
        print(
            f"{'on' if r['quiesce'] else 'off':7}  {cpu:26}  "
            f"{wake['median']:.1f}/{wake['p90']:.1f}/{wake['max']:.1f}"  # type: ignore[index]
            f"{'':10}{awake['median']:.1f}{'':10}"  # type: ignore[index]
            f"{r['sigkill_failover_ms']} ms{'':9}{r['sigstop_failover_ms']} ms "
            f"({r['sigstop_partitions']} partitions)"
        )
    for r in results:
        print(
            f"  quiesce {'on' if r['quiesce'] else 'off'}: topic created in {r['create_s']} s, "
            f"settled in {r['settle_s']} s, quiesced groups per broker {r['quiesced']}"
        )


if __name__ == "__main__":
    main()
