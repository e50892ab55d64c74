"""Durable-write designs compared by how long they stop the Trio event loop.

Run with `python -m tests.bench.write_path_bench` (`--help` lists the flags). A benchmark: it
prints figures and never asserts timing. It touches no broker code; it opens RocksDB with the
same options as `broker.runtime.store.RocksStore` and writes in a temp dir on the disk of this
checkout.

Candidates (each writes one round, then waits until the round is durable, back to back):
  inline      `db.write(batch, sync=True)` on the loop thread (the broker today);
  to_thread   the same call in `trio.to_thread.run_sync`;
  flush_wal   `db.write(batch, sync=False)` on the loop, then `db.flush_wal(True)` in a
              long-lived worker thread;
  segment     `os.writev` of the round's entries and `os.fdatasync` in a long-lived worker
              thread, on an append-only file;
  process     a writer process fed through a pipe (length-prefixed round), which writes and
              fdatasyncs, then answers one byte.
The thread candidates run with several `sys.setswitchinterval` values (the time a thread that
wants the GIL waits before the holder is asked to drop it).

Per candidate and round shape, two runs of `--seconds` each:
  sleep  a ticker task sleeps 0.2 ms in a loop and records its lateness. Python's epoll wait has
         1 ms resolution (the timeout is rounded up), so an idle loop already shows about
         0.8-0.9 ms; the `idle` row gives that floor, and the excess over it is the stall.
  busy   a ticker task yields (`trio.lowlevel.checkpoint`) in a tight loop and records the gap
         between its resumptions: the loop is never idle, as in a loaded broker, so a worker
         thread returning from a GIL-free call competes with it for the GIL.
Reported: writes/s, submit-to-durable latency p50/p99 (as seen by the writing task), and the
ticker's lateness/gap p50/p99/max, then a verdict line per candidate (thresholds printed). The
raw row (writev + fdatasync, no loop, no threads) is the disk's own latency. A GIL probe first
times a second thread's progress during each blocking call (1.0 = the call released the GIL
throughout, 0 = it held it).
"""

from __future__ import annotations

import abc
import argparse
import contextlib
import fcntl
import os
import platform
import queue
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio
import trio.lowlevel
from rocksdict import Options, Rdict, WriteBatch, WriteOptions

from broker.runtime.store.codec import CF_LOG, COLUMN_FAMILIES

SHAPES: dict[str, tuple[int, int]] = {"1x150B": (1, 150), "64x16KiB": (64, 16 << 10)}
TICK = 0.0002
KEY = struct.Struct(">QQ")
LEN = struct.Struct(">I")
DEFAULT_SWITCH = sys.getswitchinterval()


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def open_rocks(path: Path) -> tuple[Rdict, Any]:
    """RocksDB with RocksStore's options (broker/runtime/store/db.py, RocksStore.__init__)."""
    opts = Options(raw_mode=True)
    opts.create_if_missing(True)
    opts.create_missing_column_families(True)
    opts.set_max_background_jobs(2)
    opts.set_keep_log_file_num(4)
    opts.set_max_total_wal_size(256 << 20)
    cfs = {name: Options(raw_mode=True) for name in COLUMN_FAMILIES}
    db = Rdict(str(path), opts, column_families=cfs)
    return db, db.get_column_family_handle(CF_LOG)


def write_opts(sync: bool) -> WriteOptions:
    wo = WriteOptions()
    wo.sync = sync
    return wo


class Worker:
    """A long-lived thread running one blocking call at a time for the Trio loop."""

    def __init__(self) -> None:
        self._q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._t = threading.Thread(target=self._main, daemon=True)
        self._t.start()

    def _main(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            fn, args, token, box, ev = item
            try:
                box.append(fn(*args))
            except BaseException as exc:  # handed back to the loop
                box.append(exc)
            token.run_sync_soon(ev.set)

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        ev = trio.Event()
        box: list[Any] = []
        self._q.put((fn, args, trio.lowlevel.current_trio_token(), box, ev))
        await ev.wait()
        if isinstance(box[0], BaseException):
            raise box[0]
        return box[0]

    def close(self) -> None:
        self._q.put(None)
        self._t.join()


class Candidate(abc.ABC):
    """One durable-write design: `write` returns once the entries are durable."""

    name = ""

    def __init__(self, workdir: Path, switch: float = DEFAULT_SWITCH) -> None:
        self.dir = workdir
        self.switch = switch
        self.index = 0

    def open(self) -> None:  # noqa: B027 (an optional hook: nothing by default)
        pass

    async def start(self) -> None:  # noqa: B027 (an optional hook: nothing by default)
        pass

    @abc.abstractmethod
    async def write(self, entries: list[bytes]) -> None: ...

    async def stop(self) -> None:  # noqa: B027 (an optional hook: nothing by default)
        pass

    def close(self) -> None:  # noqa: B027 (an optional hook: nothing by default)
        pass


class RocksCandidate(Candidate):
    def open(self) -> None:
        self.db, self.cf = open_rocks(self.dir / "db")
        self.wo_sync = write_opts(True)
        self.wo_nosync = write_opts(False)

    def batch(self, entries: list[bytes]) -> WriteBatch:
        wb = WriteBatch(raw_mode=True)
        for e in entries:
            self.index += 1
            wb.put(KEY.pack(7, self.index), e, self.cf)
        return wb

    def close(self) -> None:
        self.db.close()


class Inline(RocksCandidate):
    name = "inline write(sync=True)"

    async def write(self, entries: list[bytes]) -> None:
        self.db.write(self.batch(entries), self.wo_sync)


class ToThread(RocksCandidate):
    name = "to_thread write(sync=True)"

    async def write(self, entries: list[bytes]) -> None:
        await trio.to_thread.run_sync(self.db.write, self.batch(entries), self.wo_sync)


class FlushWal(RocksCandidate):
    name = "write(nosync)+flush_wal thread"

    def open(self) -> None:
        super().open()
        self.worker = Worker()

    async def write(self, entries: list[bytes]) -> None:
        self.db.write(self.batch(entries), self.wo_nosync)
        await self.worker.run(self.db.flush_wal, True)

    def close(self) -> None:
        self.worker.close()
        super().close()


def writev_all(fd: int, entries: list[bytes]) -> None:
    total = sum(map(len, entries))
    n = os.writev(fd, entries)
    if n != total:  # a short write: finish it with plain writes
        rest = b"".join(entries)[n:]
        while rest:
            rest = rest[os.write(fd, rest) :]


def writev_fdatasync(fd: int, entries: list[bytes]) -> None:
    writev_all(fd, entries)
    os.fdatasync(fd)


class Segment(Candidate):
    name = "segment writev+fdatasync thread"

    def open(self) -> None:
        self.fd = os.open(self.dir / "seg.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.worker = Worker()

    async def write(self, entries: list[bytes]) -> None:
        await self.worker.run(writev_fdatasync, self.fd, entries)

    def close(self) -> None:
        self.worker.close()
        os.close(self.fd)


CHILD = r"""
import os, struct, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
def read_exact(n):
    parts = []
    while n:
        b = os.read(0, min(n, 1 << 20))
        if not b:
            sys.exit(0)
        parts.append(b)
        n -= len(b)
    return b"".join(parts)
while True:
    (n,) = struct.unpack(">I", read_exact(4))
    data = read_exact(n)
    while data:
        data = data[os.write(fd, data):]
    os.fdatasync(fd)
    os.write(1, b"\x01")
"""


class Process(Candidate):
    name = "writer process (pipe)"

    def open(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(self.dir / "seg.log")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.proc.stdin is not None
        # A 1 MiB pipe takes a whole 64 x 16 KiB round without waking the child per 64 KiB.
        with contextlib.suppress(OSError):
            fcntl.fcntl(self.proc.stdin.fileno(), fcntl.F_SETPIPE_SZ, 1 << 20)

    async def start(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.tx = trio.lowlevel.FdStream(os.dup(self.proc.stdin.fileno()))
        self.rx = trio.lowlevel.FdStream(os.dup(self.proc.stdout.fileno()))

    async def write(self, entries: list[bytes]) -> None:
        await self.tx.send_all(LEN.pack(sum(map(len, entries))))
        for e in entries:
            await self.tx.send_all(e)
        ack = await self.rx.receive_some(1)
        if ack != b"\x01":
            raise RuntimeError("writer process died")

    async def stop(self) -> None:
        await self.tx.aclose()
        await self.rx.aclose()

    def close(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        self.proc.stdout.close()
        self.proc.wait(timeout=10)


# ---------------------------------------------------------------------------------------------


async def run_one(
    cand: Candidate | None, entries: list[bytes], seconds: float, ticker: str
) -> dict[str, Any]:
    lat: list[float] = []
    ticks: list[float] = []
    round_gaps: list[float] = []  # busy ticker: the longest gap during each write
    cur_gap = 0.0
    done = False

    async def tick_sleep() -> None:
        while not done:
            t = time.perf_counter()
            await trio.sleep(TICK)
            ticks.append(time.perf_counter() - t - TICK)

    async def tick_busy() -> None:
        nonlocal cur_gap
        t = time.perf_counter()
        while not done:
            await trio.lowlevel.checkpoint()
            now = time.perf_counter()
            gap = now - t
            ticks.append(gap)
            cur_gap = max(cur_gap, gap)
            t = now

    async def writer() -> None:
        nonlocal done, cur_gap
        assert cand is not None
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            t = time.perf_counter()
            cur_gap = 0.0
            await cand.write(entries)
            lat.append(time.perf_counter() - t)
            await trio.lowlevel.checkpoint()
            round_gaps.append(cur_gap)
        done = True

    async def idle() -> None:
        nonlocal done
        await trio.sleep(seconds)
        done = True

    if cand is not None:
        await cand.start()
    t0 = time.perf_counter()
    async with trio.open_nursery() as n:
        n.start_soon(tick_sleep if ticker == "sleep" else tick_busy)
        n.start_soon(idle if cand is None else writer)
    wall = time.perf_counter() - t0
    if cand is not None:
        await cand.stop()
    ms = 1e3
    return {
        "wps": len(lat) / wall if cand is not None else float("nan"),
        "lat50": pct(lat, 0.5) * ms,
        "lat99": pct(lat, 0.99) * ms,
        "t50": pct(ticks, 0.5) * ms,
        "t99": pct(ticks, 0.99) * ms,
        "tmax": max(ticks) * ms if ticks else float("nan"),
        # busy ticker: per write, the longest the loop ran nothing else (idle: per 1 ms slice)
        "g50": pct(round_gaps or slices(ticks), 0.5) * ms,
        "g99": pct(round_gaps or slices(ticks), 0.99) * ms,
    }


def slices(gaps: list[float], width: float = 0.001) -> list[float]:
    """The longest gap in each `width` of time (the idle row's stand-in for per-write maxima)."""
    out: list[float] = []
    acc = top = 0.0
    for g in gaps:
        acc += g
        top = max(top, g)
        if acc >= width:
            out.append(top)
            acc = top = 0.0
    return out


def measure(
    factory: Callable[[Path], Candidate] | None,
    switch: float,
    entries: list[bytes],
    seconds: float,
    ticker: str,
    base: Path,
) -> dict[str, Any]:
    d = Path(tempfile.mkdtemp(prefix="wpb-", dir=base))
    cand = factory(d) if factory is not None else None
    sys.setswitchinterval(switch)
    try:
        if cand is not None:
            cand.open()
        try:
            return trio.run(run_one, cand, entries, seconds, ticker)
        finally:
            if cand is not None:
                cand.close()
    finally:
        sys.setswitchinterval(DEFAULT_SWITCH)
        shutil.rmtree(d, ignore_errors=True)


# ------------------------------------------------------------------------------ GIL probe


def gil_probe(base: Path, entries: list[bytes], calls: int = 40) -> dict[str, tuple[float, float]]:
    """For each call: (median ms per call, median share of a spinning thread's free rate that it
    got during the call). ~1.0 means the call released the GIL, ~0 that it held it."""
    d = Path(tempfile.mkdtemp(prefix="wpb-gil-", dir=base))
    count = 0
    stop = False

    def spin() -> None:
        nonlocal count
        while not stop:
            count += 1

    old = sys.getswitchinterval()
    sys.setswitchinterval(0.0001)
    th = threading.Thread(target=spin, daemon=True)
    th.start()
    try:
        time.sleep(0.05)
        c0, t0 = count, time.perf_counter()
        time.sleep(0.2)  # the main thread sleeps: the spinner runs alone
        free_rate = (count - c0) / (time.perf_counter() - t0)
        db, cf = open_rocks(d / "db")
        wo_sync, wo_nosync = write_opts(True), write_opts(False)
        fd = os.open(d / "seg.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        idx = 0

        def batch() -> WriteBatch:
            nonlocal idx
            wb = WriteBatch(raw_mode=True)
            for e in entries:
                idx += 1
                wb.put(KEY.pack(7, idx), e, cf)
            return wb

        probes: dict[str, tuple[Callable[[], Any], Callable[[], Any]]] = {
            "rocksdict write(sync=True)": (lambda: None, lambda: db.write(batch(), wo_sync)),
            "rocksdict write(sync=False)": (lambda: None, lambda: db.write(batch(), wo_nosync)),
            "rocksdict flush_wal(True)": (
                lambda: db.write(batch(), wo_nosync),
                lambda: db.flush_wal(True),
            ),
            "os.writev": (lambda: None, lambda: writev_all(fd, entries)),
            "os.fdatasync": (lambda: writev_all(fd, entries), lambda: os.fdatasync(fd)),
        }
        out: dict[str, tuple[float, float]] = {}
        for name, (prep, call) in probes.items():
            durs: list[float] = []
            shares: list[float] = []
            for _ in range(calls):
                prep()
                c0, t0 = count, time.perf_counter()
                call()
                t1, c1 = time.perf_counter(), count
                durs.append(t1 - t0)
                shares.append((c1 - c0) / ((t1 - t0) * free_rate))
            out[name] = (pct(durs, 0.5) * 1e3, pct(shares, 0.5))
        os.close(fd)
        db.close()
        return out
    finally:
        stop = True
        th.join()
        sys.setswitchinterval(old)
        shutil.rmtree(d, ignore_errors=True)


def raw_fsync(base: Path, entries: list[bytes], seconds: float) -> tuple[float, float, float]:
    """writev + fdatasync on an append-only file, no loop, no threads: the disk's own figure."""
    d = Path(tempfile.mkdtemp(prefix="wpb-raw-", dir=base))
    fd = os.open(d / "seg.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    lat: list[float] = []
    try:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            t = time.perf_counter()
            writev_fdatasync(fd, entries)
            lat.append(time.perf_counter() - t)
    finally:
        os.close(fd)
        shutil.rmtree(d, ignore_errors=True)
    return pct(lat, 0.5) * 1e3, pct(lat, 0.99) * 1e3, len(lat) / seconds


def judge(
    label: str, s: dict[str, Any], b: dict[str, Any], idle_late99: float, raw50: float
) -> str:
    stall_ok = b["g99"] < 0.5 and s["t99"] < idle_late99 + 0.5
    lat_ok = max(s["lat50"], b["lat50"]) <= 2 * raw50 + 0.1
    marks = f"loop {'ok ' if stall_ok else 'BLOCKED'}  latency {'ok' if lat_ok else 'SLOW'}"
    return f"{label:<42} {marks}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=2.0, help="per run (default 2)")
    ap.add_argument("--shapes", default=",".join(SHAPES), help="comma list of " + ",".join(SHAPES))
    ap.add_argument("--dir", default=tempfile.gettempdir(), help="parent of the temp dirs")
    args = ap.parse_args()
    base = Path(args.dir)
    here = Path(__file__).resolve()
    if base.stat().st_dev != here.stat().st_dev:
        print(f"warning: {base} is not on the same device as {here}", file=sys.stderr)
    sec = args.seconds

    candidates: list[tuple[str, Callable[[Path], Candidate] | None, float]] = [
        ("idle loop (no writes)", None, DEFAULT_SWITCH),
        (Inline.name, Inline, DEFAULT_SWITCH),
        (ToThread.name, ToThread, DEFAULT_SWITCH),
    ]
    for si in (DEFAULT_SWITCH, 0.0005, 0.0001):
        candidates.append((FlushWal.name, FlushWal, si))
    for si in (DEFAULT_SWITCH, 0.0005, 0.0001):
        candidates.append((Segment.name, Segment, si))
    candidates.append((Process.name, Process, DEFAULT_SWITCH))

    print(
        f"# write_path_bench  python {platform.python_version()}  trio {trio.__version__}  "
        f"cpus {os.cpu_count()}  dir {base}  {sec:g} s per run  "
        f"{time.strftime('%Y-%m-%d %H:%M:%S')}"
    )
    for shape in args.shapes.split(","):
        count, size = SHAPES[shape]
        entries = [os.urandom(size) for _ in range(count)]
        print(f"\n## round {shape} ({count} x {size} B)")
        print("GIL probe (median ms/call, spinner share during the call; 1 = GIL released):")
        for name, (ms, share) in gil_probe(base, entries).items():
            print(f"  {name:<30} {ms:7.3f} ms  share {share:4.2f}")
        r50, r99, rps = raw_fsync(base, entries, min(sec, 1.0))
        print(f"raw writev+fdatasync, no loop: p50 {r50:.3f} ms  p99 {r99:.3f} ms  {rps:.0f}/s")
        hdr = (
            f"{'candidate':<33} {'swi ms':>6} | {'w/s':>5} {'lat50':>6} {'lat99':>6} "
            f"{'late50':>6} {'late99':>6} {'lateMx':>6} | {'w/s':>5} {'lat50':>6} {'lat99':>6} "
            f"{'gap50':>6} {'gap99':>6} {'gapMx':>6}"
        )
        print(f"{'':<40} | {'sleep ticker (0.2 ms), ms':^41} | {'busy ticker (yields), ms':^41}")
        print(hdr)
        print("-" * len(hdr))
        idle_late99 = float("nan")
        verdict: list[str] = []
        for name, factory, si in candidates:
            s = measure(factory, si, entries, sec, "sleep", base)
            b = measure(factory, si, entries, sec, "busy", base)
            if factory is None:
                idle_late99 = s["t99"]
            else:
                verdict.append(judge(f"{name} @{si * 1e3:g} ms", s, b, idle_late99, r50))
            print(
                f"{name:<33} {si * 1e3:6.1f} | {s['wps']:5.0f} {s['lat50']:6.2f} "
                f"{s['lat99']:6.2f} {s['t50']:6.2f} {s['t99']:6.2f} {s['tmax']:6.2f} | "
                f"{b['wps']:5.0f} {b['lat50']:6.2f} {b['lat99']:6.2f} {b['g50']:6.3f} "
                f"{b['g99']:6.3f} {b['tmax']:6.2f}",
                flush=True,
            )
        print(
            f"\nverdict for {shape} (stall: busy gap99 < 0.5 ms and sleep late99 < idle + 0.5 ms;"
        )
        print(
            f"latency: lat50 under both tickers <= 2 x raw p50 + 0.1 ms = {2 * r50 + 0.1:.2f} ms):"
        )
        for line in verdict:
            print("  " + line)
    print(
        "\nlat = submit to durable as the writing task sees it; late = sleep-ticker lateness "
        "(floor ~0.8-0.9 ms\nfrom epoll's 1 ms resolution when the loop "
        "really sleeps, see the idle row); gap50/99 = over\nwrites, the longest time during "
        "one write that the loop ran nothing else (idle row: per 1 ms);\ngapMx = the longest "
        "over the run (machine hiccups show here too, see the idle row)."
    )


if __name__ == "__main__":
    main()
