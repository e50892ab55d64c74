"""Exactly-once transactions on three real brokers, replication factor 3: committed
transactions per second, and 1,000-record transactions against the same records sent without
a transaction.

Run with `python -m tests.bench.txn_bench` (`--help` lists the flags). A benchmark: it prints
figures and never asserts timing. It does fail (exit code 1) when a read-back check finds a
committed record missing or duplicated, or a record of an aborted transaction visible: the
figures are then of a broker that did not keep its promises.

1. Small transactions, for each N of `--producers` (e.g. 1,8,32,64): N transactional
   producers, each its own `Producer(bootstrap, transactional_id=f"bench-{i}")`, run
   transactions back to back for `--duration` seconds after `--warmup` transactions each. A
   transaction is `--txn-records` records of 100 bytes, record j to partition j % 3 of a fresh
   3-partition RF-3 topic per N. Figures: committed transactions/s, the latency of each
   transaction (entering `async with p.transaction()` to its commit's answer) p50/p99, CPU
   (each broker process net of its idle rate, the client, the whole machine, and what other
   processes used meanwhile: the machine may be shared), the client's requests per
   transaction by API with their mean round trip, and the brokers' driver rounds, peer
   requests and peer frames per transaction. `--client-procs K` splits the N producers over
   K client processes (to see whether one client process's CPU is the bottleneck).
2. Large transactions, for each P of `--big-producers` (1,4,8): `--big-records` records of
   100 bytes in transactions of `--big-txn-records` (1,000) by P transactional producers,
   against the same count sent by P idempotent producers without a transaction (then flush);
   records/s of each and the ratio, `--big-rounds` (3) rounds alternated (ABBA: transactional
   first, then plain first, ...).
3. After each run a read_committed Consumer reads every partition back to its last stable
   offset (which must equal the high watermark once every transaction ended): every record of
   a committed transaction exactly once, of an aborted one never, nothing else.

Client requests are counted (and timed) by wrapping `Connection.submit` in this process (and
in each client process): measurement only, the requests are unchanged. `--broker-tree DIR`
runs the brokers from another source tree (A/B runs; `git archive HEAD | tar -x -C DIR` while
the working tree is mid-edit).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from broker.config import BrokerConfig
from consumers import Admin, Consumer, Producer, TransactionAbortedError
from consumers.connection import Connection, Pending
from consumers.errors import SluiceError
from tests.bench.cluster_bench import start_cluster
from tests.support import harness
from tests.support.harness import BrokerProcess
from tests.support.sluice_cli import ROOT

PARTITIONS = 3
VALUE_BYTES = 100

# -- the cluster ---------------------------------------------------------------------------


async def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    """An RF-3 topic; returns once every partition has a leader (`Admin.create_topic`)."""
    async with Admin(bootstrap) as admin:
        await admin.create_topic(name, partitions=partitions, replication_factor=3)


# -- measuring ---------------------------------------------------------------------------------


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of process `pid` (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def machine_cpu() -> tuple[float, float, float]:
    """(busy, steal, total) jiffies of all CPUs together, from /proc/stat (busy excludes
    idle, iowait and steal: time a hypervisor gave to other guests)."""
    parts = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    parts += [0] * (8 - len(parts))
    idle, steal = parts[3] + parts[4], parts[7]
    total = sum(parts[:8])
    return float(total - idle - steal), float(steal), float(total)


def all_processes() -> dict[int, tuple[str, float]]:
    """pid -> (command name, CPU seconds) of every process now."""
    out: dict[int, tuple[str, float]] = {}
    clk = os.sysconf("SC_CLK_TCK")
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            text = (d / "stat").read_text()
        except OSError:
            continue
        head, _, rest = text.rpartition(")")
        fields = rest.split()
        out[int(d.name)] = (head.partition("(")[2], (int(fields[11]) + int(fields[12])) / clk)
    return out


@dataclass
class Snapshot:
    """The brokers' CPU and counters, and the machine's CPU, at one instant."""

    broker_pids: list[int]
    at: float
    cpu: list[float]
    stats: list[dict[str, int]]
    machine: tuple[float, float, float]
    processes: dict[int, tuple[str, float]]


def broker_counters(b: BrokerProcess) -> dict[str, int]:
    s = b.stats()
    return {
        "store_rounds": int(s["driver"]["rounds"]),
        "store_rounds_written": int(s["driver"]["rounds_written"]),
        "ops": int(s["driver"]["ops"]),
        "peer_requests": int(s["peer_requests"]["requests"]),
        "peer_requests_served": int(s["peer_requests"]["served"]),
        "peer_requests_resent": int(s["peer_requests"]["resent"]),
        "peer_requests_duplicates": int(s["peer_requests"]["duplicates"]),
        "peer_frames_sent": int(s["peers"]["sent_frames"]),
    }


def snapshot(brokers: list[BrokerProcess]) -> Snapshot:
    pids = [b.proc.pid for b in brokers if b.proc is not None]
    return Snapshot(
        broker_pids=pids,
        at=time.monotonic(),
        cpu=[proc_cpu_seconds(p) for p in pids],
        stats=[broker_counters(b) for b in brokers],
        machine=machine_cpu(),
        processes=all_processes(),
    )


@dataclass
class Delta:
    seconds: float
    cpu: list[float]
    """CPU seconds of each broker."""
    counters: dict[str, int]
    """Counters summed over the brokers."""
    machine_busy: float
    """Fraction of the whole machine (all CPUs) busy."""
    steal: float
    """Fraction of the machine's CPU time the hypervisor gave to other guests."""
    others: list[tuple[float, str, int]]
    """(CPU seconds, name, pid) of every process other than this benchmark's that ran."""


def delta(a: Snapshot, b: Snapshot, ours_extra: Iterable[int] = ()) -> Delta:
    counters: Counter[str] = Counter()
    for before, after in zip(a.stats, b.stats, strict=True):
        for k, v in after.items():
            counters[k] += v - before[k]
    busy = b.machine[0] - a.machine[0]
    steal = b.machine[1] - a.machine[1]
    total = b.machine[2] - a.machine[2]
    ours = {os.getpid(), *ours_extra}
    others = []
    for pid, (name, cpu) in b.processes.items():
        if pid in ours or pid in b.broker_pids:
            continue
        used = cpu - a.processes.get(pid, (name, 0.0))[1]
        if used > 0:
            others.append((used, name, pid))
    return Delta(
        seconds=b.at - a.at,
        cpu=[y - x for x, y in zip(a.cpu, b.cpu, strict=True)],
        counters=dict(counters),
        machine_busy=busy / total if total else 0.0,
        steal=steal / total if total else 0.0,
        others=sorted(others, reverse=True),
    )


class RequestLog:
    """The client's requests by API (and Produce batches), with their round trips: installed
    by wrapping `Connection.submit` and `Pending.result` (measurement only)."""

    installed: RequestLog | None = None

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.rtt_sum: dict[str, float] = {}
        self.rtt_n: Counter[str] = Counter()
        self._sent: dict[int, tuple[str, float]] = {}

    @classmethod
    def install(cls) -> RequestLog:
        if cls.installed is not None:
            return cls.installed
        log = cls.installed = cls()
        submit = Connection.submit
        result = Pending.result

        async def counted_submit(
            self: Connection, request: Any, *, timeout_s: float | None = None
        ) -> Pending:
            name = type(request).__name__.removesuffix("Request")
            log.counts[name] += 1
            if name == "Produce":
                log.counts["Produce batches"] += sum(len(t.partitions) for t in request.topics)
            pending = await submit(self, request, timeout_s=timeout_s)
            log._sent[id(pending)] = (name, time.monotonic())
            return pending

        async def timed_result(self: Pending) -> Any:
            try:
                return await result(self)
            finally:
                sent = log._sent.pop(id(self), None)
                if sent is not None:
                    api = sent[0]
                    log.rtt_sum[api] = log.rtt_sum.get(api, 0.0) + time.monotonic() - sent[1]
                    log.rtt_n[api] += 1

        setattr(Connection, "submit", counted_submit)  # noqa: B010
        setattr(Pending, "result", timed_result)  # noqa: B010
        return log

    def mark(self) -> dict[str, dict[str, float]]:
        return {
            "counts": dict(self.counts),
            "rtt_sum": dict(self.rtt_sum),
            "rtt_n": dict(self.rtt_n),
        }


def since(a: dict[str, dict[str, float]], b: dict[str, dict[str, float]]) -> dict[str, Any]:
    """The requests between marks `a` and `b`: {api: [count, rtt sum, rtt n]}."""
    out: dict[str, Any] = {}
    for api, n in b["counts"].items():
        out[api] = [
            n - a["counts"].get(api, 0),
            b["rtt_sum"].get(api, 0.0) - a["rtt_sum"].get(api, 0.0),
            b["rtt_n"].get(api, 0) - a["rtt_n"].get(api, 0),
        ]
    return out


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def value_of(kind: str, producer: int, txn: int, record: int) -> bytes:
    """A 100-byte value naming its producer, transaction and record (unique per run)."""
    return (b"%s-%05d-%08d-%05d-" % (kind.encode(), producer, txn, record)).ljust(VALUE_BYTES, b"x")


# -- small transactions --------------------------------------------------------------------------


@dataclass
class SmallParams:
    bootstrap: str
    topic: str
    first: int
    count: int
    duration: float
    warmup: int
    txn_records: int
    linger_ms: float
    nowait: bool


@dataclass
class SmallResult:
    start_wall: float = 0.0
    end_wall: float = 0.0
    latencies: list[float] = field(default_factory=list)
    committed: list[tuple[int, int]] = field(default_factory=list)
    """(producer, transaction) of every committed transaction, warm-up included."""
    measured: int = 0
    """Transactions committed in the timed window."""
    aborted: list[tuple[int, int]] = field(default_factory=list)
    unknown: list[tuple[int, int]] = field(default_factory=list)
    """Transactions whose outcome is unknown (a producer failed while ending them)."""
    errors: list[str] = field(default_factory=list)
    client_cpu_s: float = 0.0
    requests: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SmallResult:
        r = cls(**d)
        r.committed = [(a, b) for a, b in r.committed]
        r.aborted = [(a, b) for a, b in r.aborted]
        r.unknown = [(a, b) for a, b in r.unknown]
        return r


async def run_small(p: SmallParams, wait_go: Callable[[], Awaitable[None]]) -> SmallResult:
    """Open p.count transactional producers, run p.warmup transactions on each, `wait_go`,
    then transactions back to back for p.duration seconds."""
    log = RequestLog.install()
    out = SmallResult()
    all_ready = trio.Event()
    go = trio.Event()
    ready = 0
    deadline = 0.0

    async def one_txn(producer: Producer, i: int, n: int, timed: bool) -> bool:
        t0 = trio.current_time()
        try:
            async with producer.transaction():
                for j in range(p.txn_records):
                    v = value_of("s", i, n, j)
                    if p.nowait:
                        producer.send_nowait(p.topic, v, partition=j % PARTITIONS)
                    else:
                        await producer.send(p.topic, v, partition=j % PARTITIONS)
        except TransactionAbortedError as e:
            out.aborted.append((i, n))
            out.errors.append(f"bench-{i} txn {n}: aborted: {e}")
            return True
        except SluiceError as e:
            out.unknown.append((i, n))
            out.errors.append(f"bench-{i} txn {n}: {type(e).__name__}: {e}")
            return False
        out.committed.append((i, n))
        if timed:
            out.latencies.append(trio.current_time() - t0)
            out.measured += 1
        return True

    async def worker(i: int) -> None:
        nonlocal ready
        n = 0
        try:
            async with Producer(
                p.bootstrap, transactional_id=f"bench-{i}", linger_ms=p.linger_ms
            ) as producer:
                ok = True
                for _ in range(p.warmup):
                    ok = ok and await one_txn(producer, i, n, False)
                    n += 1
                ready += 1
                if ready == p.count:
                    all_ready.set()
                await go.wait()
                while ok and trio.current_time() < deadline:
                    ok = await one_txn(producer, i, n, True)
                    n += 1
        except SluiceError as e:
            out.errors.append(f"bench-{i}: {type(e).__name__}: {e}")
            ready += 1
            if ready == p.count:
                all_ready.set()

    async with trio.open_nursery() as nursery:
        for i in range(p.first, p.first + p.count):
            nursery.start_soon(worker, i)
        await all_ready.wait()
        await wait_go()
        before = log.mark()
        cpu0 = own_cpu_seconds()
        out.start_wall = time.time()
        deadline = trio.current_time() + p.duration
        go.set()
    out.end_wall = time.time()
    out.client_cpu_s = own_cpu_seconds() - cpu0
    out.requests = since(before, log.mark())
    return out


def worker_main(raw: str) -> None:
    """A client process of the small-transaction sweep: 'ready' on stdout once its producers
    are open and warm, then 'go' on stdin starts the window; the result is one JSON line."""
    p = SmallParams(**json.loads(raw))

    async def wait_go() -> None:
        print("ready", flush=True)
        line = await trio.to_thread.run_sync(sys.stdin.readline)
        assert line.strip() == "go", line

    result = trio.run(run_small, p, wait_go)
    print(json.dumps(dataclasses.asdict(result)), flush=True)


def merge(results: list[SmallResult]) -> SmallResult:
    out = SmallResult(
        start_wall=min(r.start_wall for r in results),
        end_wall=max(r.end_wall for r in results),
    )
    for r in results:
        out.latencies += r.latencies
        out.committed += r.committed
        out.measured += r.measured
        out.aborted += r.aborted
        out.unknown += r.unknown
        out.errors += r.errors
        out.client_cpu_s += r.client_cpu_s
        for api, (n, s, k) in r.requests.items():
            have = out.requests.setdefault(api, [0, 0.0, 0])
            have[0] += n
            have[1] += s
            have[2] += k
    return out


def small_point(
    brokers: list[BrokerProcess], n: int, procs: int, args: argparse.Namespace
) -> tuple[SmallResult, Delta, int]:
    """One N of the sweep: (merged result, broker/machine delta over the window, processes)."""
    bootstrap = ",".join(b.bootstrap for b in brokers)
    topic = f"txn-n{n}"
    trio.run(create_topic, bootstrap, topic, PARTITIONS)
    procs = max(1, min(procs, n))
    shares = [n // procs + (1 if k < n % procs else 0) for k in range(procs)]
    firsts = [sum(shares[:k]) for k in range(procs)]

    def params(first: int, count: int) -> SmallParams:
        return SmallParams(
            bootstrap=bootstrap,
            topic=topic,
            first=first,
            count=count,
            duration=args.duration,
            warmup=args.warmup,
            txn_records=args.txn_records,
            linger_ms=args.linger_ms,
            nowait=args.send == "nowait",
        )

    before: list[Snapshot] = []
    if procs == 1:

        async def wait_go() -> None:
            before.append(snapshot(brokers))

        result = trio.run(run_small, params(0, n), wait_go)
        after = snapshot(brokers)
        return result, delta(before[0], after), 1
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.bench.txn_bench",
                "--worker",
                json.dumps(dataclasses.asdict(params(f, c))),
            ],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for f, c in zip(firsts, shares, strict=True)
    ]
    try:
        for c in children:
            assert c.stdout is not None
            line = c.stdout.readline()
            if line.strip() != "ready":
                raise RuntimeError(f"client process {c.pid} did not get ready: {line!r}")
        before.append(snapshot(brokers))
        for c in children:
            assert c.stdin is not None
            c.stdin.write("go\n")
            c.stdin.flush()
        results = []
        for c in children:
            assert c.stdout is not None
            results.append(SmallResult.from_json(json.loads(c.stdout.readline())))
        after = snapshot(brokers)
        for c in children:
            c.wait(timeout=60)
    finally:
        for c in children:
            if c.poll() is None:
                c.kill()
                c.wait()
    return merge(results), delta(before[0], after, [c.pid for c in children]), procs


# -- large transactions against plain sends -------------------------------------------------------


@dataclass
class BigRun:
    records: int
    seconds: float
    delta: Delta
    client_cpu_s: float
    requests: dict[str, Any]


async def run_big_txn(
    bootstrap: str,
    topic: str,
    producers: int,
    txns: int,
    txn_records: int,
    linger_ms: float,
    tag: int,
    brokers: list[BrokerProcess],
    committed: list[tuple[int, int]],
) -> BigRun:
    """`txns` transactions of `txn_records` records, taken by `producers` transactional
    producers from one shared count; the commits are appended to `committed`."""
    log = RequestLog.install()
    left = txns
    opened = 0
    all_open = trio.Event()
    go = trio.Event()

    async def txn(p: Producer, i: int, n: int, records: int) -> None:
        async with p.transaction():
            for j in range(records):
                await p.send(topic, value_of("t", i, n, j), partition=j % PARTITIONS)
        committed.append((i, n))

    async def worker(k: int) -> None:
        nonlocal left, opened
        i = tag * 1000 + k
        async with Producer(bootstrap, transactional_id=f"bench-big-{i}", linger_ms=linger_ms) as p:
            n = 0
            await txn(p, i, n, PARTITIONS)  # warm-up: identity, metadata, registration
            n += 1
            opened += 1
            if opened == producers:
                all_open.set()
            await go.wait()
            while left > 0:
                left -= 1
                await txn(p, i, n, txn_records)
                n += 1

    async with trio.open_nursery() as nursery:
        for k in range(producers):
            nursery.start_soon(worker, k)
        await all_open.wait()
        a = snapshot(brokers)
        mark = log.mark()
        cpu0 = own_cpu_seconds()
        t0 = time.monotonic()
        go.set()
    seconds = time.monotonic() - t0
    cpu = own_cpu_seconds() - cpu0
    return BigRun(
        txns * txn_records, seconds, delta(a, snapshot(brokers)), cpu, since(mark, log.mark())
    )


async def run_big_plain(
    bootstrap: str,
    topic: str,
    producers: int,
    records: int,
    linger_ms: float,
    tag: int,
    brokers: list[BrokerProcess],
    sent: list[bytes],
) -> BigRun:
    """`records` records sent by `producers` idempotent producers (an equal share each),
    then flush; every value is appended to `sent`."""
    log = RequestLog.install()
    opened = 0
    all_open = trio.Event()
    go = trio.Event()
    shares = [
        records // producers + (1 if k < records % producers else 0) for k in range(producers)
    ]

    async def worker(k: int) -> None:
        nonlocal opened
        i = tag * 1000 + k
        async with Producer(bootstrap, linger_ms=linger_ms) as p:
            for j in range(PARTITIONS):  # warm-up: identity and metadata
                v = value_of("w", i, 0, j)
                await p.send(topic, v, partition=j)
                sent.append(v)
            await p.flush()
            opened += 1
            if opened == producers:
                all_open.set()
            await go.wait()
            for j in range(shares[k]):
                v = value_of("p", i, 1, j)
                await p.send(topic, v, partition=j % PARTITIONS)
                sent.append(v)
            await p.flush()

    async with trio.open_nursery() as nursery:
        for k in range(producers):
            nursery.start_soon(worker, k)
        await all_open.wait()
        a = snapshot(brokers)
        mark = log.mark()
        cpu0 = own_cpu_seconds()
        t0 = time.monotonic()
        go.set()
    seconds = time.monotonic() - t0
    cpu = own_cpu_seconds() - cpu0
    return BigRun(records, seconds, delta(a, snapshot(brokers)), cpu, since(mark, log.mark()))


# -- reading back ------------------------------------------------------------------------------


@dataclass
class ReadBack:
    read: int
    expected: int
    missing: int
    duplicates: int
    unexpected: int
    maybe: int
    """Records of transactions whose outcome the client never learnt (either is right)."""
    seconds: float

    @property
    def ok(self) -> bool:
        return self.missing == 0 and self.duplicates == 0 and self.unexpected == 0

    def line(self) -> str:
        verdict = "OK" if self.ok else "FAILED"
        return (
            f"read back (read_committed): {self.read:,} records, expected {self.expected:,}: "
            f"missing {self.missing}, duplicated {self.duplicates}, not committed "
            f"{self.unexpected}, of unknown outcome {self.maybe} -> {verdict} "
            f"({self.seconds:.1f} s)"
        )


async def read_committed(bootstrap: str, topic: str, timeout: float = 300.0) -> list[bytes]:
    """Every record a read_committed reader sees in `topic`, read up to each partition's
    last stable offset, once every transaction there ended (LSO == HW)."""
    tps = [(topic, p) for p in range(PARTITIONS)]
    with trio.fail_after(timeout):
        async with Admin(bootstrap) as admin:
            while True:
                held = await admin.held_back(tps)
                if all(
                    h.last_stable_offset is not None and h.last_stable_offset == h.high_watermark
                    for h in held
                ):
                    break
                await trio.sleep(0.2)
        ends = {(h.topic, h.partition): h.last_stable_offset or 0 for h in held}
        values: list[bytes] = []
        async with Consumer(bootstrap, isolation="read_committed", max_poll_records=5000) as c:
            c.assign(tps)
            c.seek_to_beginning(tps)
            while True:
                positions = [await c.position(tp) for tp in tps]
                if all(pos >= ends[tp] for pos, tp in zip(positions, tps, strict=True)):
                    return values
                for rec in await c.poll(timeout=1.0, max_records=5000):
                    values.append(rec.value or b"")


def check(
    values: list[bytes], expected: Iterable[bytes], maybe: Iterable[bytes], seconds: float
) -> ReadBack:
    seen = Counter(values)
    want = set(expected)
    could = set(maybe)
    return ReadBack(
        read=len(values),
        expected=len(want),
        missing=sum(1 for v in want if v not in seen),
        duplicates=sum(n - 1 for n in seen.values() if n > 1),
        unexpected=sum(1 for v in seen if v not in want and v not in could),
        maybe=sum(1 for v in seen if v in could),
        seconds=seconds,
    )


def verify(
    bootstrap: str,
    topic: str,
    expected: Iterable[bytes],
    maybe: Iterable[bytes] = (),
) -> ReadBack:
    t0 = time.monotonic()
    values = trio.run(read_committed, bootstrap, topic)
    return check(values, expected, maybe, time.monotonic() - t0)


def txn_values(kind: str, txns: Iterable[tuple[int, int]], records: int) -> list[bytes]:
    return [value_of(kind, i, n, j) for i, n in txns for j in range(records)]


# -- printing ----------------------------------------------------------------------------------


def requests_line(requests: dict[str, Any], per: int) -> str:
    parts = []
    for api in sorted(requests, key=lambda a: -requests[a][0]):
        n, s, k = requests[api]
        if n == 0:
            continue
        rtt = f" ({s / k * 1000:.1f} ms)" if k else ""
        parts.append(f"{api} {n / per:.2f}{rtt}")
    return ", ".join(parts)


def cpu_line(d: Delta, client_cpu_s: float, per: int, what: str, idle: Delta | None) -> str:
    """CPU per unit of work: each broker net of its idle rate (gross when `idle` is None),
    the client, and the load (gross) while it ran."""
    net = [
        c - (0.0 if idle is None else i / idle.seconds * d.seconds)
        for c, i in zip(d.cpu, idle.cpu if idle is not None else d.cpu, strict=True)
    ]
    brokers = " + ".join(f"{c / per * 1000:.2f}" for c in net)
    label = "brokers net of idle" if idle is not None else "brokers"
    cpus = os.cpu_count() or 1
    other = sum(c for c, _, _ in d.others) / d.seconds
    return (
        f"CPU per {what}: {label} {brokers} = {sum(net) / per * 1000:.2f} ms, client "
        f"{client_cpu_s / per * 1000:.2f} ms; load: brokers {sum(d.cpu) / d.seconds:.2f} cores "
        f"({', '.join(f'{c / d.seconds:.2f}' for c in d.cpu)}), client "
        f"{client_cpu_s / d.seconds:.2f} cores; machine {d.machine_busy * 100:.0f}% busy of "
        f"{cpus} CPUs, {others_text(d)}; unaccounted (exited processes, interrupts) "
        f"{d.machine_busy * cpus - (sum(d.cpu) + client_cpu_s) / d.seconds - other:.2f} cores"
    )


def others_text(d: Delta) -> str:
    """What else used the machine meanwhile: other processes (the top three) and steal."""
    total = sum(c for c, _, _ in d.others) / d.seconds
    top = ", ".join(f"{n} {c / d.seconds:.2f}" for c, n, _ in d.others[:3] if c / d.seconds >= 0.01)
    return (
        f"other processes {total:.2f} cores{f' ({top})' if top else ''}, steal {d.steal * 100:.0f}%"
    )


def counters_line(d: Delta, per: int, what: str, idle: Delta | None) -> str:
    """The brokers' counters per unit of work, summed over the three, net of idle."""

    def net(key: str) -> float:
        base = 0.0 if idle is None else idle.counters[key] / idle.seconds * d.seconds
        return (d.counters[key] - base) / per

    return (
        f"brokers per {what} (3 summed, net of idle): driver rounds "
        f"{net('store_rounds_written'):.1f}, peer requests {net('peer_requests'):.1f} "
        f"(resent {net('peer_requests_resent'):.1f}, duplicates seen "
        f"{net('peer_requests_duplicates'):.1f}), peer frames sent {net('peer_frames_sent'):.1f}, "
        f"client requests {net('ops'):.1f}"
    )


def idle_line(d: Delta) -> str:
    c, s = d.counters, d.seconds
    return (
        f"idle brokers over {s:.1f} s (after __transaction_state exists): CPU "
        f"{', '.join(f'{x / s:.3f}' for x in d.cpu)} cores; per second (3 summed): driver rounds "
        f"{c['store_rounds_written'] / s:.0f}, peer frames sent {c['peer_frames_sent'] / s:.0f}; "
        + others_text(d)
    )


async def open_txn_topic(bootstrap: str) -> None:
    """Open (and close) a transactional producer: `__transaction_state` then exists."""
    async with Producer(bootstrap, transactional_id="bench-idle"):
        pass


def print_header(base: Path, brokers: list[BrokerProcess], args: argparse.Namespace) -> None:
    cfg_path = base / "broker-0.toml"
    cfg = BrokerConfig.load(cfg_path if cfg_path.exists() else None)
    print(
        f"{datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; {platform.node()}: "
        f"{platform.platform()}, {os.cpu_count()} CPUs "
        f"({_cpu_model()}), Python {platform.python_version()}"
    )
    shown = (
        "tick_ms",
        "election_ticks",
        "heartbeat_ticks",
        "sync_mode",
        "max_inflight_per_connection",
        "offsets_topic_partitions",
        "offsets_topic_replication_factor",
        "transaction_max_timeout_ms",
        "transaction_precommit_timeout_ms",
    )
    root = Path(getattr(harness, "ROOT", ROOT))
    print(f"brokers run from {root} ({_tree_state(root)})")
    print(
        f"3 brokers (separate processes), replication factor 3, data in {base}; broker config: "
        + ", ".join(f"{k}={getattr(cfg, k)}" for k in shown)
        + f" (so __transaction_state: {cfg.offsets_topic_partitions} partitions, RF "
        f"{cfg.offsets_topic_replication_factor}); controllers "
        + ",".join(f"{c.node_id}@{c.address}" for c in cfg.controllers)
    )
    print(
        f"client: {args.txn_records} x {VALUE_BYTES} B records per transaction over "
        f"{PARTITIONS} partitions (record j -> partition j % {PARTITIONS}), "
        f"linger_ms={args.linger_ms}, send={args.send}, warm-up {args.warmup} txn/producer, "
        f"window {args.duration:g} s per N"
    )


def _tree_state(tree: Path) -> str:
    """The commit of `tree` and whether its broker code differs from it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=tree, capture_output=True, text=True
        )
        if head.returncode != 0:
            return "not a git checkout"
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "broker", "cli"],
            cwd=tree,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return f"commit {head.stdout.strip()}" + (", broker/cli modified" if dirty else "")
    except OSError:
        return "git not available"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


# -- main --------------------------------------------------------------------------------------


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main() -> None:
    ap = argparse.ArgumentParser(
        prog="python -m tests.bench.txn_bench",
        description=" ".join(__doc__.split("\n\n")[0].split()),
    )
    ap.add_argument(
        "--producers", type=ints, default=[1, 8, 32, 64], help="the N to sweep (1,8,32,64)"
    )
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per N (10)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed transactions per producer")
    ap.add_argument("--txn-records", type=int, default=10, help="records per transaction (10)")
    ap.add_argument(
        "--send",
        choices=("await", "nowait"),
        default="await",
        help="`await send` per record (default) or `send_nowait` (no checkpoint between them)",
    )
    ap.add_argument("--linger-ms", type=float, default=5.0, help="producer linger (5)")
    ap.add_argument(
        "--client-procs",
        type=int,
        default=1,
        help="client processes to split the N producers over (1: all in this process)",
    )
    ap.add_argument(
        "--big-producers", type=ints, default=[1, 4, 8], help="P of the large-transaction runs"
    )
    ap.add_argument("--big-records", type=int, default=100_000, help="records per run (100,000)")
    ap.add_argument("--big-txn-records", type=int, default=1000, help="records per big txn")
    ap.add_argument("--big-rounds", type=int, default=3, help="alternated rounds per P (3)")
    ap.add_argument("--skip-small", action="store_true", help="only the large-transaction part")
    ap.add_argument("--skip-big", action="store_true", help="only the small-transaction part")
    ap.add_argument(
        "--hold",
        action="store_true",
        help="print the broker pids and wait for Enter before the runs (to attach py-spy)",
    )
    ap.add_argument(
        "--broker-tree",
        type=Path,
        help="run the brokers from this source tree (e.g. `git archive HEAD | tar -x -C DIR`) "
        "instead of the working tree: for A/B runs, or while the working tree is mid-edit",
    )
    ap.add_argument(
        "--idle-seconds", type=float, default=3.0, help="idle baseline of the brokers (3)"
    )
    ap.add_argument(
        "--keep-data", action="store_true", help="keep the data directory and broker logs"
    )
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker is not None:
        worker_main(args.worker)
        return

    if args.broker_tree is not None:
        # BrokerProcess runs `python -m cli.main serve` in harness.ROOT: there, that tree's code.
        setattr(harness, "ROOT", args.broker_tree.resolve())  # noqa: B010
    base = Path(tempfile.mkdtemp(prefix="sluice-txn-bench-"))
    brokers = start_cluster(base)
    failed = False
    try:
        print_header(base, brokers, args)
        bootstrap = ",".join(b.bootstrap for b in brokers)
        print("broker pids: " + ", ".join(str(b.proc.pid) for b in brokers if b.proc))
        trio.run(open_txn_topic, bootstrap)
        time.sleep(1.0)
        a = snapshot(brokers)
        time.sleep(args.idle_seconds)
        idle = delta(a, snapshot(brokers))
        print(idle_line(idle))
        if args.hold:
            input("press Enter to start ")
        summary: list[str] = []
        if not args.skip_small:
            print("\n== 1. small transactions: committed transactions/s per N producers")
            for n in args.producers:
                ok, line = small(brokers, bootstrap, n, args, idle)
                failed |= not ok
                summary.append(line)
        if not args.skip_big:
            print(
                f"\n== 2. transactions of {args.big_txn_records:,} records against the same "
                "records without a transaction (idempotent producer, then flush)"
            )
            medians: dict[int, tuple[float, float, float]] = {}
            for p in args.big_producers:
                ok, medians[p] = big(brokers, bootstrap, p, args, idle)
                failed |= not ok
            one = medians.get(1)
            for p, (t_rate, p_rate, ratio) in medians.items():
                line = (
                    f"{args.big_txn_records:,}-record transactions, {p} producer(s): "
                    f"{t_rate:,.0f} records/s; plain with {p}: {p_rate:,.0f} records/s; "
                    f"ratio (round by round, median) {ratio:.0%}"
                )
                if one is not None and p != 1:
                    line += (
                        f"; against one idempotent producer's {one[1]:,.0f}: {t_rate / one[1]:.0%}"
                    )
                summary.append(line)
        print("\n== summary (figures above; the machine's other load is shown with each)")
        for line in summary:
            print("  " + line)
    finally:
        for b in brokers:
            b.kill()
        if args.keep_data:
            print(f"data and broker logs kept in {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    if failed:
        print("\nFAILED: a read-back check found the brokers did not keep their promises")
        sys.exit(1)


def small(
    brokers: list[BrokerProcess], bootstrap: str, n: int, args: argparse.Namespace, idle: Delta
) -> tuple[bool, str]:
    result, d, procs = small_point(brokers, n, args.client_procs, args)
    secs = result.end_wall - result.start_wall
    m = max(1, result.measured)
    lat = [x * 1000 for x in result.latencies]
    print(
        f"N={n:>3}: {result.measured / secs:>7,.1f} txn/s  "
        f"({result.measured / secs * args.txn_records:,.0f} records/s)  "
        f"latency p50 {pct(lat, 0.5):.1f} ms  p99 {pct(lat, 0.99):.1f} ms  "
        f"max {max(lat, default=float('nan')):.1f} ms  ({result.measured:,} committed in "
        f"{secs:.1f} s, {procs} client process{'es' if procs > 1 else ''})",
        flush=True,
    )
    print("       " + cpu_line(d, result.client_cpu_s, m, "txn", idle))
    per_proc = result.client_cpu_s / procs / secs
    if procs > 1:
        print(f"       client CPU per process: {per_proc:.2f} cores (mean)")
    if per_proc > 0.8:
        print(
            f"       note: a client process used {per_proc:.2f} cores: the client may be the "
            "bottleneck (try --client-procs)"
        )
    print("       client requests per txn (mean round trip): " + requests_line(result.requests, m))
    print("       " + counters_line(d, m, "txn", idle))
    if result.aborted or result.unknown or result.errors:
        print(
            f"       {len(result.aborted)} aborted, {len(result.unknown)} of unknown outcome; "
            f"first errors: {result.errors[:3]}"
        )
    rb = verify(
        bootstrap,
        f"txn-n{n}",
        txn_values("s", result.committed, args.txn_records),
        txn_values("s", result.unknown, args.txn_records),
    )
    print(
        f"       {len(result.committed):,} committed transactions (warm-up included); " + rb.line(),
        flush=True,
    )
    return rb.ok, (
        f"N={n:>3}: {result.measured / secs:>7,.1f} txn/s, p50 {pct(lat, 0.5):.1f} ms, "
        f"p99 {pct(lat, 0.99):.1f} ms, read back {'OK' if rb.ok else 'FAILED'}"
    )


def big(
    brokers: list[BrokerProcess], bootstrap: str, p: int, args: argparse.Namespace, idle: Delta
) -> tuple[bool, tuple[float, float, float]]:
    """(read-back checks passed, (median transactional records/s, median plain records/s,
    median ratio))."""
    txns = max(1, args.big_records // args.big_txn_records)
    records = txns * args.big_txn_records
    t_topic, p_topic = f"big-txn-p{p}", f"big-plain-p{p}"
    trio.run(create_topic, bootstrap, t_topic, PARTITIONS)
    trio.run(create_topic, bootstrap, p_topic, PARTITIONS)
    committed: list[tuple[int, int]] = []
    sent: list[bytes] = []
    ratios = []
    t_rates: list[float] = []
    p_rates: list[float] = []
    for r in range(args.big_rounds):

        def run_txn(r: int = r) -> BigRun:
            return trio.run(
                run_big_txn,
                bootstrap,
                t_topic,
                p,
                txns,
                args.big_txn_records,
                args.linger_ms,
                r,
                brokers,
                committed,
            )

        def run_plain(r: int = r) -> BigRun:
            return trio.run(
                run_big_plain, bootstrap, p_topic, p, records, args.linger_ms, r, brokers, sent
            )

        if r % 2 == 0:  # alternated (ABBA...): the machine's drift hits both sides alike
            tx = run_txn()
            pl = run_plain()
        else:
            pl = run_plain()
            tx = run_txn()
        t_rate, p_rate = tx.records / tx.seconds, pl.records / pl.seconds
        ratios.append(t_rate / p_rate)
        t_rates.append(t_rate)
        p_rates.append(p_rate)
        print(
            f"P={p} round {r + 1} ({'txn first' if r % 2 == 0 else 'plain first'}): "
            f"transactional {t_rate:>9,.0f} records/s "
            f"({txns} x {args.big_txn_records:,} in {tx.seconds:.2f} s, "
            f"{txns / tx.seconds:.1f} txn/s); plain {p_rate:>9,.0f} records/s "
            f"({records:,} in {pl.seconds:.2f} s); ratio {t_rate / p_rate:.0%}",
            flush=True,
        )
        for what, run in (("txn  ", tx), ("plain", pl)):
            print(
                f"       {what}: "
                + cpu_line(run.delta, run.client_cpu_s, run.records // 1000, "1,000 records", idle)
            )
            print(
                f"       {what}: requests per 1,000 records: "
                + requests_line(run.requests, run.records // 1000)
            )
    print(
        f"P={p}: transactional median {statistics.median(t_rates):,.0f} records/s, plain median "
        f"{statistics.median(p_rates):,.0f} records/s; ratio transactional/plain, round by "
        f"round: median {statistics.median(ratios):.0%} "
        f"({', '.join(f'{x:.0%}' for x in ratios)})"
    )
    expected_txn = [
        value_of("t", i, n, j)
        for i, n in committed
        for j in range(PARTITIONS if n == 0 else args.big_txn_records)
    ]
    rb_t = verify(bootstrap, t_topic, expected_txn)
    print(f"       transactional topic: {len(committed)} committed transactions; " + rb_t.line())
    rb_p = verify(bootstrap, p_topic, sent)
    print("       plain topic: " + rb_p.line(), flush=True)
    medians = (statistics.median(t_rates), statistics.median(p_rates), statistics.median(ratios))
    return rb_t.ok and rb_p.ok, medians


if __name__ == "__main__":
    main()
