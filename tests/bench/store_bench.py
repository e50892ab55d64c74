"""RocksStore commit rounds in a real Trio loop: the two durability modes compared.

Run with `python -m tests.bench.store_bench` (`--help` lists the flags). A benchmark: it prints
figures and never asserts timing.

For each durability mode (`inline`: write(sync=True); `pipelined`: write(sync=False)
then flush_wal(True), which releases the GIL while it syncs) and each shape (E entries of 100 B
per round, spread over min(E, G) of G groups, rotating, each touched group also writing a
hard state, as a Ready would), one writer task commits rounds back to back as the broker's
driver does (`store.commit(round)` on the loop thread, then a checkpoint) for `--seconds`, on
a fresh store. Reported: rounds/s,
entries/s, round latency p50/p99 (build + commit, microseconds), and the event-loop lag seen
by a concurrent task that sleeps 1 ms in a loop (p99 and max overshoot, milliseconds). An idle
loop's lag is printed first as the baseline.

`--load` adds a third task that burns the CPU in 50 us slices between checkpoints, as the rest
of a broker would (parsing, Raft stepping, sending): its column `bg %` is the share of wall
time it got.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import trio

from broker.core.raft import ConfState, Entry, EntryKind, HardState, Ready
from broker.runtime.store import DURABILITY_MODES, RocksStore, WriteRound

PAYLOAD = b"p" * 100
CONF = ConfState(frozenset({0, 1, 2}))


@dataclass
class Result:
    mode: str
    entries: int
    groups: int
    rounds: int
    seconds: float
    rounds_per_s: float
    entries_per_s: float
    p50_us: float
    p99_us: float
    lag_p99_ms: float
    lag_max_ms: float
    background_pct: float | None


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


async def lag_probe(lags: list[float], stop: trio.Event) -> None:
    while not stop.is_set():
        t0 = time.perf_counter()
        await trio.sleep(0.001)
        lags.append(time.perf_counter() - t0 - 0.001)


async def background(busy: list[float], stop: trio.Event, slice_s: float) -> None:
    """Burn the CPU in slices of `slice_s`, checkpointing between them; sum the time burnt."""
    while not stop.is_set():
        t0 = time.perf_counter()
        end = t0 + slice_s
        while time.perf_counter() < end:
            pass
        busy[0] += time.perf_counter() - t0
        await trio.lowlevel.checkpoint()


async def idle_lag(seconds: float) -> list[float]:
    lags: list[float] = []
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lag_probe, lags, stop)
        await trio.sleep(seconds)
        stop.set()
    return lags


async def run_case(
    base: Path, mode: str, n_entries: int, n_groups: int, seconds: float, load: bool
) -> Result:
    path = Path(tempfile.mkdtemp(prefix=f"store-bench-{mode}-", dir=base))
    store = RocksStore.open(path, 0, durability=mode)  # type: ignore[arg-type]
    try:
        groups = [store.create_group(g, CONF) for g in range(n_groups)]
        touched = min(n_entries, n_groups)
        per_group = [
            n_entries // touched + (1 if i < n_entries % touched else 0) for i in range(touched)
        ]
        latencies: list[float] = []
        lags: list[float] = []
        stop = trio.Event()
        rounds = 0
        busy = [0.0]

        async def writer() -> None:
            nonlocal rounds
            start = 0
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                rnd = WriteRound()
                rounds += 1
                for i, count in enumerate(per_group):
                    g = groups[(start + i) % n_groups]
                    last = g.last_index()
                    ents = [
                        Entry(last + k, 1, EntryKind.NORMAL, PAYLOAD) for k in range(1, count + 1)
                    ]
                    rnd.add_ready(
                        g, Ready(rounds, hard_state=HardState(1, None, last), entries=ents)
                    )
                store.commit(rnd)
                await trio.lowlevel.checkpoint()
                latencies.append(time.perf_counter() - t0)
                start = (start + touched) % n_groups
            stop.set()

        t_start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lag_probe, lags, stop)
            if load:
                nursery.start_soon(background, busy, stop, 50e-6)
            nursery.start_soon(writer)
        elapsed = time.perf_counter() - t_start
    finally:
        store.close()
        shutil.rmtree(path, ignore_errors=True)
    return Result(
        mode=mode,
        entries=n_entries,
        groups=n_groups,
        rounds=rounds,
        seconds=round(elapsed, 3),
        rounds_per_s=round(rounds / elapsed, 1),
        entries_per_s=round(rounds * n_entries / elapsed, 1),
        p50_us=round(pct(latencies, 0.50) * 1e6, 1),
        p99_us=round(pct(latencies, 0.99) * 1e6, 1),
        lag_p99_ms=round(pct(lags, 0.99) * 1e3, 3),
        lag_max_ms=round(max(lags, default=float("nan")) * 1e3, 3),
        background_pct=round(100 * busy[0] / elapsed, 1) if load else None,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=1.5, help="per case (default 1.5)")
    ap.add_argument("--modes", default=",".join(DURABILITY_MODES))
    ap.add_argument("--entries", default="1,10,100", help="entries per round")
    ap.add_argument("--groups", default="1,10,100", help="groups the entries spread over")
    ap.add_argument("--dir", type=Path, default=None, help="where the stores go (default: tmp)")
    ap.add_argument("--load", action="store_true", help="add a CPU-bound background task")
    ap.add_argument("--json", action="store_true", help="print JSON instead of the table")
    args = ap.parse_args(argv)
    base = args.dir or Path(tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    modes = args.modes.split(",")
    shapes = [(int(e), int(g)) for e in args.entries.split(",") for g in args.groups.split(",")]
    gc.collect()
    gc.freeze()

    async def run_all() -> tuple[list[float], list[Result]]:
        idle = await idle_lag(min(1.0, args.seconds))
        results = []
        for e, g in shapes:
            for mode in modes:
                results.append(await run_case(base, mode, e, g, args.seconds, args.load))
                if not args.json:
                    r = results[-1]
                    print(
                        f"{r.mode:>16} {r.entries:>4} {r.groups:>4} {r.rounds_per_s:>9.0f} "
                        f"{r.entries_per_s:>10.0f} {r.p50_us:>8.0f} {r.p99_us:>8.0f} "
                        f"{r.lag_p99_ms:>8.3f} {r.lag_max_ms:>8.3f}"
                        + (f" {r.background_pct:>6.1f}" if r.background_pct is not None else ""),
                        flush=True,
                    )
        return idle, results

    if not args.json:
        print(f"python {platform.python_version()}, {platform.machine()}, stores in {base}")
        print(
            f"{'mode':>16} {'E':>4} {'G':>4} {'rounds/s':>9} {'entries/s':>10} "
            f"{'p50 us':>8} {'p99 us':>8} {'lag p99':>8} {'lag max':>8}"
            + (f" {'bg %':>6}" if args.load else "")
            + "   (lag in ms)"
        )
    idle, results = trio.run(run_all)
    idle_p99 = round(pct(idle, 0.99) * 1e3, 3)
    if args.json:
        json.dump(
            {"idle_lag_p99_ms": idle_p99, "results": [asdict(r) for r in results]},
            sys.stdout,
            indent=2,
        )
        print()
    else:
        print(f"idle loop: lag p99 {idle_p99:.3f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
