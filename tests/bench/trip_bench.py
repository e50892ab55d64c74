"""One record's trip, client to broker to disk and back, in the store's two sync modes.

Run with `python -m tests.bench.trip_bench` (`--help` for flags). A benchmark: it prints figures
and never asserts them. Per sync mode (`pipelined`, `inline`) and replication factor (1, 3), it
starts brokers (real processes, 127.0.0.1), then sends `--records` 100-byte records at `--rate`
records/s on a fixed schedule with the Producer (linger 0), each timed from its send to its
acknowledgement, and splits the mean trip from what the leader's /metrics counted meanwhile:
- `broker`: mean PRODUCE request time at the leader, from its frame's arrival to its answer;
- `disk`: mean time from a round's write to its durability (`sluice_store_write_seconds`;
  pipelined: until the sync that covers it returned to the loop);
- `client+net`: the rest (the client library, both loops' scheduling, loopback TCP);
plus the CPU each side spent per record (the brokers' from /proc, the client's own).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import tempfile
import urllib.request
from pathlib import Path

import trio

from consumers import Producer
from consumers.admin import Admin
from consumers.producer import Delivery
from tests.bench.cluster_bench import start_cluster
from tests.support.harness import BrokerProcess

RECORD = os.urandom(100)
_SAMPLE = re.compile(r"^(sluice_\w+?)(?:\{([^}]*)\})? ([0-9.e+-]+)$")


def scrape(b: BrokerProcess) -> dict[tuple[str, str], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{b.http_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m:
            out[(m.group(1), m.group(2) or "")] = float(m.group(3))
    return out


def mean_of(before: dict[tuple[str, str], float], after: dict[tuple[str, str], float],
            name: str, labels: str = "") -> float:  # fmt: skip
    s = after.get((f"{name}_sum", labels), 0.0) - before.get((f"{name}_sum", labels), 0.0)
    n = after.get((f"{name}_count", labels), 0.0) - before.get((f"{name}_count", labels), 0.0)
    return s / n if n else float("nan")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def timed_sends(bootstrap: str, topic: str, n: int, rate: float) -> list[float]:
    """Send n records at `rate` on a fixed schedule; each one's send-to-acknowledgement ms."""
    latencies: list[float] = []
    async with Producer(bootstrap, linger_ms=0) as p, trio.open_nursery() as nursery:
        pending, settled = trio.open_memory_channel[tuple[float, Delivery]](100_000)

        async def settle() -> None:
            async for sent, delivery in settled:
                await delivery.wait()
                latencies.append((trio.current_time() - sent) * 1000)

        nursery.start_soon(settle)
        async with pending:
            next_at = trio.current_time()
            for _ in range(n):
                next_at += 1 / rate
                if next_at - trio.current_time() >= 0.001:
                    await trio.sleep_until(next_at)
                sent = trio.current_time()
                pending.send_nowait((sent, p.send_nowait(topic, RECORD)))
    return latencies


def run_one(base: Path, mode: str, rf: int, args: argparse.Namespace) -> dict[str, float]:
    config = {"sync_mode": mode}
    if rf == 1:
        brokers = [BrokerProcess(base / "d0", config=config)]
        brokers[0].start()
        brokers[0].wait_ready()
    else:
        brokers = start_cluster(base, 3, config=config)
    try:
        bootstrap = ",".join(b.bootstrap for b in brokers)
        topic = f"trip-{mode}-{rf}"

        async def create() -> None:
            async with Admin(bootstrap) as a:
                await a.create_topic(topic, partitions=1, replication_factor=rf)

        trio.run(create)
        trio.run(timed_sends, bootstrap, topic, 1000, args.rate)  # warm up
        leader = next(b for b in brokers if scrape(b).get(("sluice_records_produced_total",
                                                           f'topic="{topic}"'), 0) > 0)  # fmt: skip
        before = scrape(leader)
        cpu0 = sum(cpu_s(b.proc.pid) for b in brokers if b.proc is not None)
        self0 = resource.getrusage(resource.RUSAGE_SELF)
        lat = trio.run(timed_sends, bootstrap, topic, args.records, args.rate)
        self1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu1 = sum(cpu_s(b.proc.pid) for b in brokers if b.proc is not None)
        after = scrape(leader)
    finally:
        for b in brokers:
            b.kill()
    lat.sort()
    n = len(lat)
    client_cpu = (self1.ru_utime + self1.ru_stime) - (self0.ru_utime + self0.ru_stime)
    total = statistics.fmean(lat)
    broker = mean_of(before, after, "sluice_request_duration_seconds", 'api="produce"') * 1000
    disk = mean_of(before, after, "sluice_store_write_seconds") * 1000
    return {
        "mean": total,
        "p50": lat[n // 2],
        "p99": lat[min(n - 1, int(n * 0.99))],
        "broker": broker,
        "disk": disk,
        "client_net": total - broker,
        "broker_cpu_us": (cpu1 - cpu0) / n * 1e6,
        "client_cpu_us": client_cpu / n * 1e6,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=10_000)
    ap.add_argument("--rate", type=float, default=5000.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--modes", default="pipelined,inline")
    ap.add_argument("--rf", default="1,3")
    args = ap.parse_args()
    rows: dict[tuple[str, int], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="sluice-trip-") as tmp:
        for r in range(args.rounds):
            for rf in (int(x) for x in args.rf.split(",")):
                for mode in args.modes.split(","):
                    base = Path(tmp) / f"{mode}-{rf}-{r}"
                    base.mkdir()
                    rows.setdefault((mode, rf), []).append(run_one(base, mode, rf, args))
    print(f"{args.records:,} records of 100 bytes at {args.rate:,.0f}/s, linger 0; "
          f"median of {args.rounds} round(s); ms unless said")  # fmt: skip
    cols = ("mean", "p50", "p99", "broker", "disk", "client_net", "broker_cpu_us",
            "client_cpu_us")  # fmt: skip
    print("| mode | RF | " + " | ".join(cols) + " |")
    print("|---|---|" + "---|" * len(cols))
    for (mode, rf), runs in rows.items():
        cells = [f"{statistics.median(run[c] for run in runs):.2f}" for c in cols]
        print(f"| {mode} | {rf} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
