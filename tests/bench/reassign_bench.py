"""Moving a large partition to another broker: time, bytes, and produce latency meanwhile.

Run with `python -m tests.bench.reassign_bench` (`--help` lists the flags). A benchmark: it
prints figures and never asserts them. Per mode (`--modes`), a fresh cluster in a temp dir:

1. Brokers 0-2 (the seed controllers) start; topic `other` (6 partitions, RF 3) is created on
   them; broker 3 joins; topic `big` (1 partition, RF `--big-rf`) is created and, the joiner
   holding nothing yet, placed on broker 3 (RF 3: broker 3 and two others).
2. `big` is filled with `--gib` GiB of `--record-kib` KiB records by an idempotent Producer
   (payloads at least `external_payload_bytes`, 32 KiB, go to payload segment files); the fill
   rate is reported. Then `sync`, and with `--cold` the page cache is dropped (root only).
3. A separate process offers `--rate` records/s of `--record-size` bytes to `other` (linger
   `--linger-ms`) and logs each record's latency from `send` to acknowledgement. After a
   warm-up and a baseline window, broker 3 is drained (`Admin.drain_broker(3,
   throttle_bytes_per_s=...)`): since `other` is balanced over brokers 0-2 and broker 3 holds
   only `big`, exactly one replica moves, broker 3's copy of `big` to one of 0-2. The move is
   timed from the drain call to `wait_for_reassignments` done (and to the moment the new
   replica is first reported caught up).
4. Bytes: the target's data directory (disk usage, st_blocks) before and after, the bytes the
   target process wrote to the disk (/proc/PID/io write_bytes), the Raft entry bytes it wrote
   (`sluice_round_bytes_sum` at GET /metrics), the bytes the source sent the target over TCP
   (`ss -ti` bytes_sent of the source's sockets to the target's process; the brokers count
   no peer bytes at /stats or /metrics; a link replaced during the move makes it a lower
   bound), and the source's data directory after it dropped the partition (polled up to
   `--drop-wait` s: payload segments go at the store's next reclaim pass).
5. Latency on `other`: p50/p99/p99.9/max of the records sent during the move against those
   sent in the same length of time just before it (capped by the baseline actually run).
6. Context, since the machine may be shared: cores used by processes not ours, pressure
   stall information (/proc/pressure cpu and io), the brokers' peer-link counters (GET
   /stats: links closed silent, broken or stalled), and from the brokers' logs the event-loop
   stalls and the election campaigns of groups other than `big`'s, baseline against move.

Modes: `default` (throttle 0: each broker's own `catchup_bytes_per_s`, 50 MiB/s by default),
`throttled` (`--throttle`, e.g. 20M, set cluster-wide by the drain) and `unlimited` (every
broker configured `catchup_bytes_per_s = 0`: no catch-up budget at all; an operator's
throttle would not apply to it either). Prints one table; `--json` prints the result as
JSON on stdout (the progress and the table then go to stderr).
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import trio

from consumers import Admin, Consumer, ConsumerRecord, Producer
from consumers.errors import BufferFull, SluiceError
from consumers.rebalance import ReassignmentStatus, ReplicaMove
from tests.support.harness import BrokerProcess, free_port
from tests.support.sluice_cli import ROOT

MiB = 1 << 20
GiB = 1 << 30
SOURCE = 3
"""The broker that joins last, gets `big`, and is drained."""
OTHER_PARTITIONS = 6
MODES: dict[str, dict[str, object]] = {
    "default": {},
    "throttled": {},
    "unlimited": {"catchup_bytes_per_s": 0},
}
OUT: TextIO = sys.stdout
"""Where progress and the table go (stderr with --json)."""

_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kKmMgG]?)(i?[bB]?)(/s)?")
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def parse_rate(text: str) -> int:
    """'20M' -> 20 MiB/s in bytes/s (binary units, as `--throttle` of the CLI)."""
    m = _SIZE.fullmatch(text.strip())
    if m is None:
        raise argparse.ArgumentTypeError(f"{text!r}: expected bytes/s, e.g. 20M")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def say(*parts: object) -> None:
    print(*parts, file=OUT, flush=True)


# -- the latency load: a separate process ------------------------------------------------------


async def _load(
    bootstrap: str, topic: str, rate: float, size: int, linger_ms: float, out_path: str
) -> None:
    """Offer `rate` records/s to `topic` until SIGTERM; log one line per settled record to
    `out_path`: 'send_monotonic latency_ms' (or 'E send_monotonic error')."""
    pending: list[tuple[float, float, Any]] = []
    out = open(out_path, "w", buffering=1 << 16)  # noqa: SIM115 (closed below)
    payload = os.urandom(size)
    try:
        async with (
            Producer(bootstrap, linger_ms=linger_ms, delivery_timeout_s=120) as p,
            trio.open_nursery() as nursery,
        ):

            async def stop_on_signal() -> None:
                with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as sigs:
                    async for _ in sigs:
                        nursery.cancel_scope.cancel()
                        return

            async def reap() -> None:
                nonlocal pending
                while True:
                    await trio.sleep(0.01)
                    left = []
                    for sent_mono, sent_trio, d in pending:
                        if not d.done:
                            left.append((sent_mono, sent_trio, d))
                        elif d.exception() is not None:
                            out.write(f"E {sent_mono:.6f} {type(d.exception()).__name__}\n")
                        else:
                            lat = (d.settled_at - sent_trio) * 1000
                            out.write(f"{sent_mono:.6f} {lat:.3f}\n")
                    pending = left

            nursery.start_soon(stop_on_signal)
            nursery.start_soon(reap)
            start = time.monotonic()
            sent = 0
            dropped = 0
            while True:
                due = int((time.monotonic() - start) * rate)
                while sent < due:
                    sent += 1
                    now_mono, now_trio = time.monotonic(), trio.current_time()
                    try:
                        d = p.send_nowait(topic, b"%012d" % sent + payload[12:])
                    except BufferFull:
                        dropped += 1
                        out.write(f"E {now_mono:.6f} BufferFull\n")
                        continue
                    pending.append((now_mono, now_trio, d))
                await trio.sleep(0.001)
    finally:
        # What settled by now is logged; the rest is counted as unsettled.
        for sent_mono, sent_trio, d in pending:
            if d.done and d.exception() is None and d.settled_at is not None:
                out.write(f"{sent_mono:.6f} {(d.settled_at - sent_trio) * 1000:.3f}\n")
            else:
                out.write(f"E {sent_mono:.6f} unsettled\n")
        out.close()


def load_worker_main(argv: list[str]) -> None:
    bootstrap, topic, rate, size, linger, out_path = argv
    with suppress(KeyboardInterrupt):
        trio.run(_load, bootstrap, topic, float(rate), int(size), float(linger), out_path)


@dataclass
class LoadProcess:
    bootstrap: str
    out_path: Path
    rate: float
    size: int
    linger_ms: float
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0

    def start(self) -> None:
        cmd = [
            sys.executable,
            "-m",
            "tests.bench.reassign_bench",
            "_load",
            self.bootstrap,
            "other",
            str(self.rate),
            str(self.size),
            str(self.linger_ms),
            str(self.out_path),
        ]
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.DEVNULL)

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def samples(self) -> tuple[list[tuple[float, float]], list[tuple[float, str]]]:
        ok: list[tuple[float, float]] = []
        errors: list[tuple[float, str]] = []
        for line in self.out_path.read_text().splitlines():
            parts = line.split()
            if parts[0] == "E":
                errors.append((float(parts[1]), parts[2]))
            else:
                ok.append((float(parts[0]), float(parts[1])))
        return ok, errors


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest rank."""
    if not sorted_values:
        return math.nan
    k = max(0, min(len(sorted_values) - 1, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[k]


def latency_summary(
    ok: list[tuple[float, float]], errors: list[tuple[float, str]], lo: float, hi: float
) -> dict[str, float]:
    lats = sorted(lat for t, lat in ok if lo <= t < hi)
    errs = sum(1 for t, _ in errors if lo <= t < hi)
    return {
        "seconds": hi - lo,
        "records": len(lats),
        "errors": errs,
        "records_per_s": len(lats) / (hi - lo) if hi > lo else math.nan,
        "p50_ms": percentile(lats, 0.50),
        "p99_ms": percentile(lats, 0.99),
        "p999_ms": percentile(lats, 0.999),
        "max_ms": lats[-1] if lats else math.nan,
    }


# -- measuring brokers -------------------------------------------------------------------------


def disk_usage(root: Path) -> int:
    """Bytes allocated to the files under `root` (st_blocks)."""
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            with suppress(FileNotFoundError):
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    return total


def proc_io(b: BrokerProcess) -> dict[str, int]:
    assert b.proc is not None
    out: dict[str, int] = {}
    for line in Path(f"/proc/{b.proc.pid}/io").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key] = int(value)
    return out


def round_bytes(b: BrokerProcess) -> float:
    """`sluice_round_bytes_sum`: Raft entry payload bytes the broker's synced rounds wrote."""
    url = f"http://127.0.0.1:{b.http_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("sluice_round_bytes_sum"):
                return float(line.split()[-1])
    return math.nan


_SS_SOCKET = re.compile(r"(\S+):(\d+)\s+(\S+):(\d+)")
_SS_PID = re.compile(r"pid=(\d+)")
_SS_SENT = re.compile(r"bytes_sent:(\d+)")


def link_bytes(pid: int) -> dict[tuple[int, int], tuple[int, int | None]]:
    """The established TCP connections of process `pid` (`ss -tinp`), whichever side dialed:
    (its port, the other end's port) -> (bytes it sent, the pid at the other end)."""
    r = subprocess.run(
        ["ss", "-tinpH", "state", "established"], capture_output=True, text=True, check=False
    )
    owners: dict[int, int] = {}
    ours: dict[tuple[int, int], int] = {}
    pairs: list[list[str]] = []
    for line in r.stdout.splitlines():
        if line[:1].isspace() and pairs:
            pairs[-1][1] += line  # the socket's details
        else:
            pairs.append([line, ""])
    for head, info in pairs:
        m = _SS_SOCKET.search(head)
        owner = _SS_PID.search(head)
        if m is None or owner is None:
            continue
        local, remote = int(m.group(2)), int(m.group(4))
        owners[local] = int(owner.group(1))
        if int(owner.group(1)) == pid:
            sent = _SS_SENT.search(info)
            ours[(local, remote)] = int(sent.group(1)) if sent else 0
    return {k: (v, owners.get(k[1])) for k, v in ours.items()}


def sent_delta(
    before: dict[tuple[int, int], tuple[int, int | None]],
    after: dict[tuple[int, int], tuple[int, int | None]],
    pid: int | None,
) -> tuple[int, int]:
    """(bytes sent between the two looks over links to `pid`, or to anyone when None; links
    that were new in `after`)."""
    total = 0
    new = 0
    for key, (sent, owner) in after.items():
        if pid is not None and owner != pid:
            continue
        if key in before:
            total += sent - before[key][0]
        else:
            total += sent
            new += 1
    return total, new


def _pid(b: BrokerProcess) -> int:
    assert b.proc is not None
    return b.proc.pid


def cpu_busy_ticks() -> int:
    """Clock ticks every CPU spent not idle (user, nice, system, irq, softirq, steal)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in fields[:8]]
    return sum(values) - values[3] - values[4]


def proc_ticks(pid: int) -> int:
    """utime + stime of a process (all its threads), clock ticks."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    rest = stat[stat.rindex(")") + 2 :].split()
    return int(rest[11]) + int(rest[12])


@dataclass
class Snapshot:
    at: float
    du: list[int]
    io: list[dict[str, int]]
    rounds: list[float]
    links: dict[tuple[int, int], tuple[int, int | None]]
    busy: int
    ours: dict[str, int]
    psi: dict[str, int]
    peers: list[dict[str, int]]


def snapshot(brokers: list[BrokerProcess], load: LoadProcess, full: bool = True) -> Snapshot:
    """What the brokers wrote and sent so far, and CPU time, now (`full`=False: CPU only)."""
    ours = {f"broker{b.node_id}": proc_ticks(b.proc.pid) for b in brokers if b.proc is not None}
    if load.proc is not None:
        ours["load"] = proc_ticks(load.proc.pid)
    ours["bench"] = proc_ticks(os.getpid())
    return Snapshot(
        time.monotonic(),
        [disk_usage(b.data_dir) for b in brokers] if full else [],
        [proc_io(b) for b in brokers] if full else [],
        [round_bytes(b) for b in brokers] if full else [],
        link_bytes(_pid(brokers[SOURCE])) if full else {},
        cpu_busy_ticks(),
        ours,
        psi(),
        peer_counters(brokers),
    )


def cpu_cores(a: Snapshot, b: Snapshot) -> dict[str, float]:
    """Cores busy between two snapshots: per process of ours, ours in all, everybody else."""
    hz = os.sysconf("SC_CLK_TCK")
    dt = b.at - a.at
    out = {k: (b.ours[k] - a.ours.get(k, 0)) / hz / dt for k in b.ours}
    ours = sum(out.values())
    out["ours"] = ours
    out["others"] = (b.busy - a.busy) / hz / dt - ours
    return out


PEER_COUNTERS = ("silent", "broken", "stalled", "dropped_frames", "dropped_messages")
"""GET /stats `peers` counters compared between windows (links closed: silent, broken,
stalled)."""


def peer_counters(brokers: list[BrokerProcess]) -> list[dict[str, int]]:
    out = []
    for b in brokers:
        try:
            peers = b.stats()["peers"]
            out.append({k: int(peers.get(k, 0)) for k in PEER_COUNTERS})
        except (OSError, ValueError, KeyError):
            out.append({})
    return out


def psi() -> dict[str, int]:
    """Pressure stall totals (µs): some task waiting for the CPU; for I/O, some and all."""
    out: dict[str, int] = {}
    for kind in ("cpu", "io"):
        try:
            text = Path(f"/proc/pressure/{kind}").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            scope, *fields = line.split()
            total = dict(f.split("=") for f in fields)["total"]
            out[f"{kind}_{scope}"] = int(total)
    return out


_LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (.*)$")
_STALL = re.compile(r"event loop stalled for (\d+) ms")
_CAMPAIGN = re.compile(r"group (\d+): term \d+, (pre_candidate|candidate),")
_GROUP = re.compile(r"group (\d+): ")
WALL_OFFSET = time.time() - time.monotonic()
"""Wall clock minus monotonic clock: log timestamps onto the benchmark's windows."""


def log_events(b: BrokerProcess) -> list[tuple[float, str]]:
    """(monotonic time, message) of every timestamped line of a broker's log."""
    out = []
    for line in b.log_text().splitlines():
        m = _LOG_LINE.match(line)
        if m is None:
            continue
        wall = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        out.append((wall - WALL_OFFSET, m.group(2)))
    return out


def log_window(
    events: list[list[tuple[float, str]]], skip_groups: set[int], lo: float, hi: float
) -> dict[str, float]:
    """Event-loop stalls (every broker) and campaigns (groups not in `skip_groups`) logged
    in [lo, hi)."""
    stalls: list[int] = []
    campaigns = 0
    for per_broker in events:
        for t, msg in per_broker:
            if not lo <= t < hi:
                continue
            m = _STALL.search(msg)
            if m is not None:
                stalls.append(int(m.group(1)))
            c = _CAMPAIGN.search(msg)
            if c is not None and int(c.group(1)) not in skip_groups:
                campaigns += 1
    return {
        "stalls": len(stalls),
        "stall_ms_total": sum(stalls),
        "stall_ms_max": max(stalls, default=0),
        "campaigns_other_groups": campaigns,
    }


def context(a: Snapshot, b: Snapshot) -> dict[str, Any]:
    """What else went on between two snapshots: CPU cores, pressure (% of the time), the
    brokers' peer-link counters (summed)."""
    dt_us = (b.at - a.at) * 1e6
    pressure = {k: 100 * (b.psi[k] - a.psi.get(k, 0)) / dt_us for k in b.psi}
    links = {
        k: sum(pb.get(k, 0) - pa.get(k, 0) for pa, pb in zip(a.peers, b.peers, strict=True))
        for k in PEER_COUNTERS
    }
    return {"cpu_cores": cpu_cores(a, b), "pressure_pct": pressure, "peer_links": links}


@dataclass
class Sampler:
    """Every `period` s, in a thread: each broker's data-dir usage and RSS."""

    brokers: list[BrokerProcess]
    period: float = 1.0
    rows: list[tuple[float, list[int], list[int]]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                rss = [b.rss_bytes() for b in self.brokers]
            except (OSError, RuntimeError):
                rss = [0] * len(self.brokers)
            self.rows.append(
                (time.monotonic(), [disk_usage(b.data_dir) for b in self.brokers], rss)
            )
            self._stop.wait(self.period)

    def __enter__(self) -> Sampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def drop_caches() -> bool:
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


# -- the cluster -------------------------------------------------------------------------------


def make_brokers(base: Path, config: dict[str, object]) -> list[BrokerProcess]:
    """Four brokers; the first three are the seed controllers, the fourth joins later."""
    peer_ports = [free_port() for _ in range(4)]
    controllers = ",".join(f"{i}@127.0.0.1:{p}" for i, p in enumerate(peer_ports[:3]))
    return [
        BrokerProcess(
            base / f"data-{i}",
            node_id=i,
            peer_port=peer_ports[i],
            config={"controllers": controllers, **config},
        )
        for i in range(4)
    ]


async def wait_alive(bootstrap: str, broker: int, timeout: float) -> None:
    with trio.fail_after(timeout):
        async with Admin(bootstrap) as a:
            while True:
                try:
                    desc = await a.describe_cluster()
                    if any(b.id == broker and b.alive for b in desc.brokers):
                        return
                except SluiceError:
                    pass
                await trio.sleep(0.2)


async def create_other(bootstrap: str) -> None:
    async with Admin(bootstrap) as a:
        await a.create_topic("other", partitions=OTHER_PARTITIONS, replication_factor=3)


async def create_big(bootstrap: str, rf: int, timeout: float) -> tuple[int, ...]:
    await wait_alive(bootstrap, SOURCE, timeout)
    async with Admin(bootstrap) as a:
        await a.create_topic("big", partitions=1, replication_factor=rf)
        return (await a.describe_topic("big")).partitions[0].replicas


def value_of(i: int, blob: bytes) -> bytes:
    return b"%012d" % i + blob[12:]


async def fill(bootstrap: str, nbytes: int, record_bytes: int) -> tuple[int, float]:
    """(records, seconds) to produce `nbytes` to big/0, every record acknowledged."""
    blob = os.urandom(record_bytes)
    records = max(1, nbytes // record_bytes)
    async with Producer(bootstrap, linger_ms=5, delivery_timeout_s=120) as p:
        start = time.monotonic()
        for i in range(records):
            await p.send("big", value_of(i, blob), partition=0)
        await p.flush()
        return records, time.monotonic() - start


async def verify(bootstrap: str, records: int, target: tuple[int, ...]) -> str:
    """'ok' when big/0 has the target replicas, `records` records, and its first and last
    records read back from the new leader carry their numbers."""
    async with Admin(bootstrap) as a:
        # The high watermark is asked of the leader, best effort: known once it settled.
        with trio.move_on_after(30):
            while True:
                p = (await a.describe_topic("big")).partitions[0]
                if p.high_watermark is not None and set(p.replicas) == set(target):
                    break
                await trio.sleep(0.5)
    if tuple(sorted(p.replicas)) != tuple(sorted(target)):
        return f"replicas {p.replicas}, expected {target}"
    if p.high_watermark != records:
        return f"high watermark {p.high_watermark}, expected {records}"
    async with Consumer(bootstrap, auto_offset_reset="earliest") as c:
        c.assign([("big", 0)])
        for offset in (0, records - 1):
            c.seek(("big", 0), offset)
            got: list[ConsumerRecord] = []
            with trio.move_on_after(30):
                while not got:
                    got = [r for r in await c.poll(timeout=1.0, max_records=1)]
            if (
                not got
                or got[0].offset != offset
                or (got[0].value or b"")[:12] != b"%012d" % offset
            ):
                return f"record {offset} not read back"
    return "ok"


@dataclass
class MoveResult:
    started: float
    executed: float
    caught_up: float | None
    done: float
    moves: tuple[ReplicaMove, ...]
    lag_first: int
    lag_max: int
    statuses: int


async def move(bootstrap: str, throttle: int, timeout: float) -> MoveResult:
    """Drain SOURCE and wait until nothing moves."""
    async with Admin(bootstrap, timeout_s=30) as a:
        started = time.monotonic()
        result = await a.drain_broker(SOURCE, throttle_bytes_per_s=throttle)
        executed = time.monotonic()
        targets = {(m.topic, m.partition): set(m.added) for m in result.moves}
        caught_up: float | None = None
        lag_first = -1
        lag_max = -1
        count = 0

        def on_status(s: ReassignmentStatus) -> None:
            nonlocal caught_up, lag_first, lag_max, count
            count += 1
            for r in s.reassignments:
                if (r.topic, r.partition) != ("big", 0):
                    continue
                if lag_first < 0 and r.lag >= 0:
                    lag_first = r.lag
                lag_max = max(lag_max, r.lag)
                if caught_up is None and targets[("big", 0)] <= set(r.caught_up):
                    caught_up = time.monotonic()

        last = await a.wait_for_reassignments(timeout_s=timeout, poll_s=0.2, on_status=on_status)
        done = time.monotonic()
        if not last.done:
            raise TimeoutError(f"still moving after {timeout:g}s: {last.reassignments}")
        return MoveResult(
            started,
            executed,
            caught_up,
            done,
            result.moves,
            lag_first,
            lag_max,
            count,
        )


# -- one run -----------------------------------------------------------------------------------


def run_mode(base: Path, mode: str, args: argparse.Namespace) -> dict[str, Any]:
    config: dict[str, object] = dict(MODES[mode])
    config.update(args.config)
    throttle = args.throttle if mode == "throttled" else 0
    nbytes = int(args.gib * GiB)
    record_bytes = args.record_kib << 10
    brokers = make_brokers(base, config)
    seeds = ",".join(b.bootstrap for b in brokers[:3])
    bootstrap = ",".join(b.bootstrap for b in brokers)
    load = LoadProcess(bootstrap, base / "latency.txt", args.rate, args.record_size, args.linger_ms)
    out: dict[str, Any] = {
        "mode": mode,
        "throttle_bytes_per_s": throttle,
        "broker_config": config,
        "big_rf": args.big_rf,
        "load_avg_start": os.getloadavg(),
    }
    try:
        for b in brokers[:3]:
            b.start()
        for b in brokers[:3]:
            b.wait_ready(60)
        trio.run(create_other, seeds)
        brokers[SOURCE].start()
        brokers[SOURCE].wait_ready(60)
        replicas = trio.run(create_big, bootstrap, args.big_rf, 60.0)
        out["big_replicas_before"] = list(replicas)
        if SOURCE not in replicas:
            raise RuntimeError(f"big was placed on {replicas}, not on broker {SOURCE}")

        say(f"[{mode}] filling big with {nbytes / GiB:.2f} GiB of {args.record_kib} KiB records")

        async def timed_fill() -> tuple[int, float]:
            with trio.fail_after(max(120.0, args.gib * 900)):
                return await fill(bootstrap, nbytes, record_bytes)

        records, fill_s = trio.run(timed_fill)
        produced = records * record_bytes
        out["fill"] = {
            "records": records,
            "bytes": produced,
            "seconds": fill_s,
            "mib_per_s": produced / MiB / fill_s,
        }
        say(
            f"[{mode}] filled: {records} records in {fill_s:.1f} s = "
            f"{produced / MiB / fill_s:.1f} MiB/s"
        )
        os.sync()
        out["cold"] = drop_caches() if args.cold else False

        # The expected move time sets the baseline: the same length of time just before it.
        rate = throttle or int(config.get("catchup_bytes_per_s", 50 * MiB)) or 50 * MiB  # type: ignore[call-overload]
        estimate = produced / rate
        baseline = min(args.max_baseline, max(10.0, estimate * 1.1 + 2))
        load.start()
        say(
            f"[{mode}] load on other: {args.rate:g} records/s of {args.record_size} bytes; "
            f"warm-up {args.warmup:g} s, baseline {baseline:.0f} s"
        )
        time.sleep(args.warmup)
        calm = snapshot(brokers, load, full=False)
        time.sleep(baseline)
        if load.proc is None or load.proc.poll() is not None:
            raise RuntimeError("the load process ended early")

        before = snapshot(brokers, load)
        with Sampler(brokers) as sampler:
            label = "0 (each broker its own)" if throttle == 0 else f"{throttle} B/s"
            say(f"[{mode}] draining broker {SOURCE} (throttle {label})")
            mv = trio.run(move, bootstrap, throttle, args.move_timeout)
            after = snapshot(brokers, load)
            time.sleep(1.0)  # records sent in the last moments of the move get their acks
        load.stop()
        added = [b for m in mv.moves if m.topic == "big" for b in m.added]
        target = added[0] if added else -1
        out["moves"] = [
            {"topic": m.topic, "partition": m.partition, "old": list(m.old), "new": list(m.new)}
            for m in mv.moves
        ]
        copies = [m for m in mv.moves if m.topic != "big" and m.added]
        out["clean_single_copy"] = len(added) == 1 and not copies
        move_s = mv.done - mv.started
        copy_s = (mv.caught_up or mv.done) - mv.started
        t_dir = brokers[target].data_dir
        s_dir = brokers[SOURCE].data_dir

        # The source drops the partition: how much of its data directory goes, and when.
        # Watched until it is down by 90% of what was produced, or unchanged for 25 s (two
        # reclaim passes: nothing more will go), or `--drop-wait` s.
        drop_deadline = time.monotonic() + args.drop_wait
        source_du = disk_usage(s_dir)
        source_drop_s = 0.0
        changed = time.monotonic()
        while source_du > before.du[SOURCE] - produced * 0.9:
            now = time.monotonic()
            if now >= drop_deadline or now - changed >= 25:
                break
            time.sleep(0.5)
            du = disk_usage(s_dir)
            if du != source_du:
                changed = time.monotonic()
                source_drop_s = changed - mv.done
            source_du = du
        segments_left = {
            f.name: f.stat().st_size for f in sorted((s_dir / "payloads").glob("*.seg"))
        }
        os.sync()
        target_du_after = disk_usage(t_dir)

        ok, errors = load.samples()
        t0 = mv.started
        window = min(move_s, t0 - calm.at)
        base_lat = latency_summary(ok, errors, t0 - window, t0)
        move_lat = latency_summary(ok, errors, t0, mv.done)
        rss_peak = {
            "source": max((r[2][SOURCE] for r in sampler.rows), default=0),
            "target": max((r[2][target] for r in sampler.rows), default=0),
        }
        io_b, io_a = before.io, after.io
        events = [log_events(b) for b in brokers]
        big_groups = {int(m.group(1)) for _, msg in events[SOURCE] if (m := _GROUP.search(msg))} - {
            0
        }
        target_proc = brokers[target].proc
        target_pid = None if target_proc is None else target_proc.pid
        to_target, relinked = sent_delta(before.links, after.links, target_pid)
        sent_all, _ = sent_delta(before.links, after.links, None)
        out.update(
            target=target,
            move_seconds=move_s,
            copy_seconds=copy_s,
            drain_call_seconds=mv.executed - mv.started,
            lag_first_reported_entries=mv.lag_first,
            lag_max_reported_entries=mv.lag_max,
            describe_polls=mv.statuses,
            effective_mib_per_s=produced / MiB / copy_s,
            effective_mib_per_s_to_done=produced / MiB / move_s,
            bytes={
                "produced": produced,
                "source_sent_to_target": to_target,
                "source_sent_to_all_peers": sent_all,
                "links_new_during_move": relinked,
                "source_du_before": before.du[SOURCE],
                "source_du_after_drop": source_du,
                "source_drop_seconds_after_done": source_drop_s,
                "source_segments_left": segments_left,
                "target_du_before": before.du[target],
                "target_du_after": target_du_after,
                "target_du_growth": target_du_after - before.du[target],
                "target_disk_write_bytes": io_a[target]["write_bytes"]
                - io_b[target]["write_bytes"],
                "target_round_bytes": after.rounds[target] - before.rounds[target],
                "source_disk_read_bytes": io_a[SOURCE]["read_bytes"] - io_b[SOURCE]["read_bytes"],
            },
            target_peak_mib_per_s_1s=_peak_rates(sampler.rows, target),
            rss_peak_bytes=rss_peak,
            context={"baseline": context(calm, before), "move": context(before, after)},
            logs={
                "baseline": log_window(events, big_groups, t0 - window, t0),
                "move": log_window(events, big_groups, t0, mv.done),
            },
            latency={
                "baseline": base_lat,
                "move": move_lat,
                "p50_ratio": move_lat["p50_ms"] / base_lat["p50_ms"],
                "p99_ratio": move_lat["p99_ms"] / base_lat["p99_ms"],
                "max_ratio": move_lat["max_ms"] / base_lat["max_ms"],
            },
            series=[[round(t - t0, 2), d[target], d[SOURCE]] for t, d, _ in sampler.rows],
        )
        after_replicas = (
            (target,) if args.big_rf == 1 else (*sorted(set(replicas) - {SOURCE}), target)
        )
        out["verify"] = trio.run(verify, bootstrap, records, after_replicas)
        out["load_avg_end"] = os.getloadavg()
        say(
            f"[{mode}] moved to broker {target}: {move_s:.1f} s "
            f"(caught up at {copy_s:.1f} s), {produced / MiB / copy_s:.1f} MiB/s; "
            f"other p99 {base_lat['p99_ms']:.1f} -> {move_lat['p99_ms']:.1f} ms; "
            f"verify {out['verify']}"
        )
        return out
    finally:
        load.stop()
        out["exits"] = [b.returncode for b in brokers]
        for b in brokers:
            b.kill()
        crashed = [
            f"broker {b.node_id}: {b.log_tail(1500)}"
            for b in brokers
            if "Traceback" in b.log_text()
        ]
        if crashed:
            out["broker_tracebacks"] = crashed
            say(f"[{mode}] a broker logged a traceback:\n" + "\n".join(crashed))


def _peak_rates(rows: list[tuple[float, list[int], list[int]]], broker: int) -> float:
    """The fastest growth of a broker's data directory between two samples, MiB/s."""
    best = 0.0
    for (t1, d1, _), (t2, d2, _) in itertools.pairwise(rows):
        if t2 > t1:
            best = max(best, (d2[broker] - d1[broker]) / MiB / (t2 - t1))
    return best


# -- output ------------------------------------------------------------------------------------


def machine() -> dict[str, object]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "broker", "consumers", "cli"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split("\n")
        commit += f" (+{len([d for d in dirty if d])} changed files)" if any(dirty) else ""
    except OSError:
        commit = ""
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "kernel": platform.release(),
        "cpu": model,
        "python": platform.python_version(),
        "commit": commit,
        "load_avg": os.getloadavg(),
    }


def table(results: list[dict[str, Any]]) -> str:
    """Two tables: the move (time, bytes, latency on `other` before -> during), then what
    else went on (baseline -> move)."""
    lines = [
        f"{'mode':10} {'throttle':>8} {'fill MiB/s':>10} {'copy s':>7} {'done s':>7} "
        f"{'MiB/s':>6} {'tgt +MiB':>8} {'tgt wr MiB':>10} {'sent MiB':>9} {'src left':>8} "
        f"{'p50 ms':>14} {'p99 ms':>15} {'max ms':>15} {'p99 x':>6}"
    ]
    ctx = [
        f"{'mode':10} {'others cores':>12} {'cpu psi %':>11} {'io psi %':>11} "
        f"{'loop stalls':>11} {'worst stall ms':>14} {'campaigns':>9} {'links closed':>12}"
    ]
    for r in results:
        if "error" in r:
            lines.append(f"{r['mode']:10} failed: {r['error']}")
            continue
        by = r["bytes"]
        bl, mv = r["latency"]["baseline"], r["latency"]["move"]
        thr = "own" if r["throttle_bytes_per_s"] == 0 else f"{r['throttle_bytes_per_s'] / MiB:g}M"
        if r["mode"] == "unlimited":
            thr = "none"
        sent = f"{by['source_sent_to_target'] / MiB:.0f}" + (
            "+" if by["links_new_during_move"] else ""
        )
        lines.append(
            f"{r['mode']:10} {thr:>8} {r['fill']['mib_per_s']:10.1f} {r['copy_seconds']:7.1f} "
            f"{r['move_seconds']:7.1f} {r['effective_mib_per_s']:6.1f} "
            f"{by['target_du_growth'] / MiB:8.0f} {by['target_disk_write_bytes'] / MiB:10.0f} "
            f"{sent:>9} {by['source_du_after_drop'] / MiB:8.0f} "
            f"{bl['p50_ms']:6.2f}->{mv['p50_ms']:6.2f} {bl['p99_ms']:6.1f}->{mv['p99_ms']:7.1f} "
            f"{bl['max_ms']:6.1f}->{mv['max_ms']:7.1f} {r['latency']['p99_ratio']:6.2f}"
        )
        b, m = r["context"]["baseline"], r["context"]["move"]
        lb, lm = r["logs"]["baseline"], r["logs"]["move"]

        def closed(c: dict[str, Any]) -> int:
            return sum(c["peer_links"][k] for k in ("silent", "broken", "stalled"))

        ctx.append(
            f"{r['mode']:10} "
            f"{b['cpu_cores']['others']:5.2f}->{m['cpu_cores']['others']:5.2f} "
            f"{b['pressure_pct'].get('cpu_some', math.nan):4.0f}->"
            f"{m['pressure_pct'].get('cpu_some', math.nan):4.0f}  "
            f"{b['pressure_pct'].get('io_some', math.nan):4.0f}->"
            f"{m['pressure_pct'].get('io_some', math.nan):4.0f}  "
            f"{lb['stalls']:4d}->{lm['stalls']:4d}  "
            f"{lb['stall_ms_max']:5d}->{lm['stall_ms_max']:6d}  "
            f"{lb['campaigns_other_groups']:3d}->{lm['campaigns_other_groups']:3d}  "
            f"{closed(b):4d}->{closed(m):4d}"
        )
    legend = (
        "copy: drain call to the new replica first reported caught up; done: to "
        "wait_for_reassignments done; MiB/s: GiB moved / copy time; tgt +MiB: the target's "
        "data directory growth; tgt wr: bytes it wrote to the disk; sent: bytes the source "
        "sent the target over TCP (ss; '+': a link was replaced, a lower bound); src left: the "
        "source's data directory after the drop; latency of 'other' records, the same length "
        "of time before the move -> during it. Context: cores used by processes not ours, "
        "PSI (% of time some task waited for CPU / I/O), event-loop stalls logged by the "
        "brokers, election campaigns of groups other than big's, peer links closed (silent, "
        "broken, stalled; /stats)."
    )
    return "\n".join([*lines, "", *ctx, "", legend])


@contextmanager
def terminated_as_exit() -> Iterator[None]:
    """SIGTERM ends the benchmark through its `finally` blocks (brokers killed)."""

    def handler(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def main() -> None:
    global OUT
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gib", type=float, default=1.0, help="size of big, GiB (default 1)")
    ap.add_argument(
        "--modes",
        default="default,throttled",
        help="comma-separated: default, throttled, unlimited",
    )
    ap.add_argument(
        "--throttle",
        type=parse_rate,
        default=parse_rate("20M"),
        help="the throttled mode's rate, bytes/s, K/M/G suffixes (default 20M)",
    )
    ap.add_argument("--big-rf", type=int, choices=(1, 3), default=1)
    ap.add_argument("--record-kib", type=int, default=64, help="big's record size, KiB")
    ap.add_argument("--rate", type=float, default=2000, help="records/s offered to other")
    ap.add_argument("--record-size", type=int, default=100, help="other's record size")
    ap.add_argument("--linger-ms", type=float, default=1.0, help="the load producer's linger")
    ap.add_argument("--warmup", type=float, default=3.0, help="load seconds not measured")
    ap.add_argument("--max-baseline", type=float, default=120.0, help="longest baseline window, s")
    ap.add_argument("--move-timeout", type=float, default=900.0)
    ap.add_argument(
        "--drop-wait",
        type=float,
        default=60.0,
        help="seconds to watch the source's directory shrink after the move",
    )
    ap.add_argument(
        "--cold", action="store_true", help="drop the page cache before the move (root only)"
    )
    ap.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra broker config (integers as such), repeatable",
    )
    ap.add_argument("--json", action="store_true", help="the result as JSON on stdout")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    args = ap.parse_args()
    extra: dict[str, object] = {}
    for item in args.config:
        k, _, v = item.partition("=")
        extra[k] = int(v) if v.lstrip("-").isdigit() else v
    args.config = extra
    modes = [m for m in args.modes.split(",") if m]
    for m in modes:
        if m not in MODES:
            ap.error(f"unknown mode {m!r} (known: {', '.join(MODES)})")
    if args.json:
        OUT = sys.stderr
    info = machine()
    say(
        f"{platform.node()}: {info['nproc']} CPUs, kernel {info['kernel']}, {info['cpu']}, "
        f"Python {info['python']}, commit {info['commit']}, {info['date']}"
    )
    say(
        f"big: {args.gib:g} GiB, RF {args.big_rf}, {args.record_kib} KiB records; other: "
        f"{OTHER_PARTITIONS} partitions RF 3, {args.rate:g} records/s of {args.record_size} B"
    )
    results: list[dict[str, Any]] = []
    base = Path(tempfile.mkdtemp(prefix="sluice-reassign-bench-"))
    try:
        with terminated_as_exit():
            for mode in modes:
                run_dir = base / mode
                run_dir.mkdir()
                started = time.monotonic()
                try:
                    r = run_mode(run_dir, mode, args)
                except Exception as e:  # a failed run is a figure too: report and go on
                    r = {"mode": mode, "error": f"{type(e).__name__}: {e}"}
                    say(f"[{mode}] FAILED: {r['error']} (logs in {run_dir})")
                    args.keep = True
                r["run_seconds"] = time.monotonic() - started
                results.append(r)
                if "error" not in r and not args.keep:
                    shutil.rmtree(run_dir, ignore_errors=True)
    finally:
        if args.keep:
            say(f"data and logs kept in {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    say(table(results))
    if args.json:
        print(
            json.dumps(
                {"machine": info, "args": {k: v for k, v in vars(args).items()}, "runs": results},
                indent=1,
                default=str,
            )
        )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_load":
        load_worker_main(sys.argv[2:])
    else:
        main()
