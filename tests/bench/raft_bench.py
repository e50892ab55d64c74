"""Raft-core throughput: an in-process 3-node group with instant delivery.

Run with `make bench` (= `python -m tests.bench.raft_bench`); `--help` lists the flags. This is a
benchmark that reports figures; it asserts correctness (every run is verified) but never timing.

The group: members 0, 1, 2, each a RaftNode over its own MemoryStorage (initial voters {0, 1, 2})
with its own seeded `random.Random`. Node 0 campaigns and the group is driven until it leads and
its no-op is committed everywhere; nothing ticks afterwards, so no election can interfere.

The driver (`Group.drive`) follows `types.Ready`'s procedure with "instant" network and disk: for
each node that has a Ready it steps `messages` into their destinations at once, writes snapshot,
entries and hard state to the node's MemoryStorage, reports `persisted`, steps
`persisted_messages`, counts `committed_entries` and calls `advance`; it loops until no node has a
Ready. The driver is part of what is measured; `--profile` shows how the time splits between the
driver, the Raft core and MemoryStorage.

RaftConfig is the default. Nothing needs raising at these settings: the driver quiesces after
every proposal, batch or K proposals, so at most K * (len + 32) bytes (or one 64-entry batch) are
ever uncommitted (limit 64 MiB), each follower has at most one or two appends in flight (limit
256 messages / 32 MiB), committed-but-unapplied bytes stay near one batch (limit 16 MiB) and a
64 x 1 KiB batch fits one AppendEntries (limit 1 MiB). A BACKPRESSURE refusal aborts the run.

Workloads (entries counted are the proposals' entries committed on the leader):
- one-by-one:     propose(100 B), then drive to quiescence; latency-bound, one entry per round.
- pipelined-1:    propose(100 B) K times (default 16), then drive; 1-entry proposals in flight.
- batch-64x1KiB:  propose_many([1 KiB] * 64), then drive.
As `ready()` flushes broadcasts, pipelined-1's K entries leave in one AppendEntries per follower:
it measures the per-proposal cost with the round trip shared by K, not K separate messages.

Payloads are shared bytes objects (the core only takes their len()), so MB/s counts payload
bytes committed (MB = 10**6 bytes), not bytes copied. Logs are never compacted here, so every
committed Entry (a GC-tracked object) stays alive and the cyclic GC's full collections grow with
the run (about 10 % of batch-64x1KiB at 640k entries); `--no-gc` shows the figures without it.

`--profile WORKLOAD` aggregates cProfile's raw entries by code object: pstats keys functions by
(file, line, name), under which every dataclass-generated __init__ is `<string>:2(__init__)` and
all but one of them are silently dropped.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from types import CodeType
from typing import Any

from broker.core.raft import ConfState, MemberId, MemoryStorage, RaftConfig, RaftNode, Role

IDS = (0, 1, 2)
LEADER_ID = 0
ONE_BY_ONE = "one-by-one"
PIPELINED = "pipelined-1"
BATCH = "batch-64x1KiB"
WORKLOADS = (ONE_BY_ONE, PIPELINED, BATCH)
TARGETS = {ONE_BY_ONE: 20_000, BATCH: 200_000}
"""Committed entries per second the issue aims at (informational, never asserted)."""


class BenchError(AssertionError):
    """The group ended a run in a wrong state: the figures are not to be trusted."""


# --- the group and its driver --------------------------------------------------------------------


class Group:
    """Three RaftNodes wired with instant delivery; node 0 is made leader by `elect()`."""

    __slots__ = ("applied", "disks", "leader", "nodes", "peers", "readies")

    def __init__(self, seed: int) -> None:
        conf = ConfState(frozenset(IDS))
        self.disks = [MemoryStorage(conf) for _ in IDS]
        self.nodes = [
            RaftNode(RaftConfig(id=i), self.disks[i], random.Random(seed * 1000 + i)) for i in IDS
        ]
        self.peers: dict[MemberId, RaftNode] = dict(zip(IDS, self.nodes, strict=True))
        self.leader = self.nodes[LEADER_ID]
        self.applied = [0] * len(IDS)
        """Committed entries handed to each node's application (counted by the driver)."""
        self.readies = 0

    def drive(self) -> None:
        """Process Readies on every node until none has one (see the module docstring)."""
        peers = self.peers
        nodes = self.nodes
        disks = self.disks
        applied = self.applied
        readies = 0
        busy = True
        while busy:
            busy = False
            for i, node in enumerate(nodes):
                if not node.has_ready():
                    continue
                busy = True
                readies += 1
                rd = node.ready()
                for m in rd.messages:
                    peers[m.dst].step(m)
                disk = disks[i]
                if rd.snapshot is not None:
                    disk.apply_snapshot(rd.snapshot)
                if rd.entries:
                    disk.append(rd.entries)
                if rd.hard_state is not None:
                    disk.set_hard_state(rd.hard_state)
                node.persisted(rd.number)
                for m in rd.persisted_messages:
                    peers[m.dst].step(m)
                if rd.committed_entries:
                    applied[i] += len(rd.committed_entries)
                node.advance(rd)
        self.readies += readies

    def settle(self) -> None:
        """One leader tick: followers that have nothing more to receive learn the latest
        commit index (it otherwise rides on the next append), then drive."""
        self.leader.tick()
        self.drive()

    def elect(self) -> int:
        """Make node 0 leader and commit its no-op everywhere; returns the no-op's index."""
        leader = self.leader
        leader.campaign()
        self.drive()
        self.settle()
        if leader.role != Role.LEADER:
            raise BenchError(f"node {LEADER_ID} did not win the election: {leader.role.name}")
        noop = leader.term_start_index
        for node in self.nodes:
            if node.commit_index != noop or node.leader != LEADER_ID:
                raise BenchError(f"node {node.id} did not commit the leader's no-op {noop}")
        self.applied = [0] * len(IDS)
        self.readies = 0
        return noop

    def verify(self, base: int, expected: int) -> None:
        """Raise unless all `expected` entries after `base` are committed, applied and stored
        identically on every node."""
        leader = self.leader
        last = leader.log.last_index()
        if leader.role != Role.LEADER or leader.id != LEADER_ID:
            raise BenchError("node 0 lost leadership during the run")
        if last - base != expected:
            raise BenchError(f"leader's log grew by {last - base} entries, expected {expected}")
        for node, disk, n in zip(self.nodes, self.disks, self.applied, strict=True):
            if node.commit_index != last:
                raise BenchError(f"node {node.id} commit {node.commit_index} != leader last {last}")
            if node.log.applied != last or n != expected:
                raise BenchError(
                    f"node {node.id} applied {n} entries (up to {node.log.applied}), "
                    f"expected {expected} (up to {last})"
                )
            if disk.last_index() != last or disk.hard_state.commit != last:
                raise BenchError(
                    f"node {node.id} storage holds up to {disk.last_index()} with commit "
                    f"{disk.hard_state.commit}, expected {last}"
                )
        first = max(d.first_index() for d in self.disks)
        ref = [(e.index, e.term) for e in self.disks[0].entries(first, last + 1)]
        if len(ref) != last - first + 1:
            raise BenchError("node 0 storage is not contiguous")
        for disk, nid in zip(self.disks[1:], IDS[1:], strict=True):
            if [(e.index, e.term) for e in disk.entries(first, last + 1)] != ref:
                raise BenchError(f"node {nid} storage differs from node {LEADER_ID}'s")


# --- workloads -----------------------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class Params:
    single_bytes: int = 100
    drive_every: int = 16
    batch: int = 64
    entry_bytes: int = 1024
    seed: int = 1


def _run_one_by_one(g: Group, n: int, p: Params) -> int:
    propose = g.leader.propose
    drive = g.drive
    data = b"x" * p.single_bytes
    for _ in range(n):
        propose(data)
        drive()
    return n * len(data)


def _run_pipelined(g: Group, n: int, p: Params) -> int:
    propose = g.leader.propose
    drive = g.drive
    data = b"x" * p.single_bytes
    k = p.drive_every
    rounds, rest = divmod(n, k)
    for _ in range(rounds):
        for _ in range(k):
            propose(data)
        drive()
    for _ in range(rest):
        propose(data)
    drive()
    return n * len(data)


def _run_batch(g: Group, n: int, p: Params) -> int:
    propose_many = g.leader.propose_many
    drive = g.drive
    batch = [random.Random(p.seed).randbytes(p.entry_bytes)] * p.batch
    for _ in range(n // p.batch):
        propose_many(batch)
        drive()
    return n * p.entry_bytes


RUNNERS: dict[str, Callable[[Group, int, Params], int]] = {
    ONE_BY_ONE: _run_one_by_one,
    PIPELINED: _run_pipelined,
    BATCH: _run_batch,
}


def _entries_for(workload: str, args: argparse.Namespace) -> int:
    batch: int = args.batch
    if workload == BATCH:
        batches: int = max(1, -(-args.entries_batch // batch))  # rounded up: whole batches
        return batches * batch
    single: int = args.entries_single
    return single


def _warm_entries(workload: str, n: int, p: Params) -> int:
    if workload == BATCH:
        return max(1, n // p.batch) * p.batch
    return n


@dataclass(slots=True)
class Result:
    workload: str
    entries: int
    payload_bytes: int
    wall_s: float
    cpu_s: float
    readies: int
    entries_per_s: float
    mb_per_s: float
    cpu_us_per_entry: float
    readies_per_entry: float
    target_entries_per_s: int | None
    gc_enabled: bool


def run_workload(workload: str, n: int, p: Params, *, use_gc: bool) -> Result:
    """One measured run on a fresh, elected group; verified before it is reported."""
    g = Group(p.seed)
    base = g.elect()
    runner = RUNNERS[workload]
    gc.collect()
    if not use_gc:
        gc.disable()
    try:
        w0 = time.perf_counter()
        c0 = time.process_time()
        payload = runner(g, n, p)
        c1 = time.process_time()
        w1 = time.perf_counter()
    finally:
        gc.enable()
    g.settle()
    g.verify(base, n)
    wall, cpu = w1 - w0, c1 - c0
    return Result(
        workload=workload,
        entries=n,
        payload_bytes=payload,
        wall_s=wall,
        cpu_s=cpu,
        readies=g.readies,
        entries_per_s=n / wall,
        mb_per_s=payload / wall / 1e6,
        cpu_us_per_entry=cpu / n * 1e6,
        readies_per_entry=g.readies / n,
        target_entries_per_s=TARGETS.get(workload),
        gc_enabled=use_gc,
    )


# --- profiling -----------------------------------------------------------------------------------

_HERE = Path(__file__).resolve()
_ROOT = _HERE.parents[2]
DRIVER = "driver loop (tests/bench)"
DISK_WRITES = "MemoryStorage writes (driver's disk)"
CORE = "Raft core (node/log/progress/types)"
STORAGE_READS = "MemoryStorage reads (by the core)"
OTHER = "other"
CALLER_SIDE = (DRIVER, DISK_WRITES)
_DISK_WRITES = frozenset({"append", "set_hard_state", "apply_snapshot", "create_snapshot"})


@dataclass(slots=True)
class _Func:
    label: str
    category: str | None
    """None for builtins and generated code: their time is charged to their callers."""
    ncalls: int = 0
    tottime: float = 0.0
    cumtime: float = 0.0
    callers: list[tuple[Any, float]] = field(default_factory=list)
    """(caller key, tottime spent here when called from it)."""


def _dataclass_inits() -> dict[CodeType, str]:
    """Generated dataclass __init__s all read `<string>:2(__init__)`; name them by class."""
    names: dict[CodeType, str] = {}
    for mod_name, mod in list(sys.modules.items()):
        if not mod_name.startswith("broker.core.raft"):
            continue
        for obj in vars(mod).values():
            if isinstance(obj, type) and is_dataclass(obj):
                code = getattr(obj.__init__, "__code__", None)
                if code is not None:
                    names[code] = f"{obj.__name__}.__init__ (dataclass)"
    return names


def _classify(code: CodeType) -> tuple[str, str | None]:
    path = code.co_filename.replace("\\", "/")
    qual = code.co_qualname
    if path.startswith("<"):
        return f"{path}({qual})", None
    try:
        rel = Path(path).resolve().relative_to(_ROOT).as_posix()
    except ValueError:
        rel = Path(path).name
    label = f"{rel}:{code.co_firstlineno}({qual})"
    if path == _HERE.as_posix():
        return label, DRIVER
    if path.endswith("broker/core/raft/storage.py"):
        if qual.startswith("MemoryStorage."):
            writes = qual.split(".", 1)[1] in _DISK_WRITES
            return label, DISK_WRITES if writes else STORAGE_READS
        return label, CORE  # limit_size: also applied by RaftLog to its unstable tail
    if "broker/core/raft/" in path:
        return label, CORE
    return label, OTHER


def _collect(prof: cProfile.Profile) -> dict[Any, _Func]:
    """Per-function figures keyed by code object (not by pstats' (file, line, name), which
    merges every generated dataclass __init__ into one row)."""
    inits = _dataclass_inits()
    funcs: dict[Any, _Func] = {}

    def get(code: Any) -> _Func:
        f = funcs.get(code)
        if f is None:
            if isinstance(code, str):
                f = _Func(code, None)
            elif code in inits:
                f = _Func(inits[code], None)
            else:
                f = _Func(*_classify(code))
            funcs[code] = f
        return f

    for e in prof.getstats():
        f = get(e.code)
        f.ncalls += e.callcount
        f.tottime += e.inlinetime
        f.cumtime += e.totaltime
        for sub in e.calls or ():
            get(sub.code).callers.append((e.code, sub.inlinetime))
    return funcs


def _split_by_category(funcs: dict[Any, _Func]) -> dict[str, float]:
    """tottime per category; builtins and generated code are charged to their callers'
    categories in proportion to the time they spent under each caller."""
    totals: dict[str, float] = {}

    def charge(key: Any, tt: float, depth: int) -> None:
        f = funcs[key]
        if f.category is not None or depth > 4:
            cat = f.category or OTHER
            totals[cat] = totals.get(cat, 0.0) + tt
            return
        under = sum(t for _, t in f.callers)
        if under <= 0:
            totals[OTHER] = totals.get(OTHER, 0.0) + tt
            return
        for caller, t in f.callers:
            charge(caller, tt * t / under, depth + 1)

    for key, f in funcs.items():
        charge(key, f.tottime, 0)
    return totals


def profile_workload(workload: str, n: int, p: Params, top: int) -> None:
    g = Group(p.seed)
    base = g.elect()
    runner = RUNNERS[workload]
    gc.collect()
    prof = cProfile.Profile()
    prof.enable()
    runner(g, n, p)
    prof.disable()
    g.settle()
    g.verify(base, n)
    funcs = _collect(prof)
    total_tt = sum(f.tottime for f in funcs.values())
    total_calls = sum(f.ncalls for f in funcs.values())
    print(f"profile of {workload}: {n:,} committed entries, {g.readies:,} Readies")
    print(
        f"  {total_tt:.2f} s under cProfile (the profiler inflates call-heavy code: compare "
        f"shares, not seconds)\n  {total_calls:,} Python and builtin calls = "
        f"{total_calls / n:.1f} per committed entry"
    )
    print("  tottime by category (builtins and dataclass __init__s charged to their callers):")
    split = _split_by_category(funcs)
    for cat, tt in sorted(split.items(), key=lambda kv: -kv[1]):
        print(f"    {cat:<38} {tt:7.2f} s {100 * tt / total_tt:6.1f} %")
    caller_side = sum(split.get(c, 0.0) for c in CALLER_SIDE)
    print(
        f"    => caller's side (driver + its disk) {100 * caller_side / total_tt:.1f} %, "
        f"RaftNode and what it reads {100 * (total_tt - caller_side) / total_tt:.1f} %"
    )
    print(f"  top {top} functions by tottime:")
    print(
        f"    {'tottime s':>9} {'share':>6} {'cumtime s':>9} {'ncalls':>11} {'/entry':>7} "
        f"{'µs/call':>8}  function"
    )
    ranked = sorted(funcs.values(), key=lambda f: -f.tottime)[:top]
    for f in ranked:
        print(
            f"    {f.tottime:9.3f} {100 * f.tottime / total_tt:5.1f}% {f.cumtime:9.3f} "
            f"{f.ncalls:11,} {f.ncalls / n:7.2f} {1e6 * f.tottime / max(f.ncalls, 1):8.3f}  "
            f"{f.label}"
        )


# --- reporting -----------------------------------------------------------------------------------


def _pin_to_one_cpu() -> tuple[str, int | None]:
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned (os.sched_setaffinity is not available here)", None
    allowed = sorted(os.sched_getaffinity(0))
    cpu = allowed[0]
    try:
        os.sched_setaffinity(0, {cpu})
    except OSError as exc:
        return f"not pinned ({exc})", None
    return f"pinned to CPU {cpu} with os.sched_setaffinity", cpu


def _environment(pinning: str, cpus_allowed: int | None, use_gc: bool) -> dict[str, Any]:
    cfg = RaftConfig(id=LEADER_ID)
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cpus_allowed": cpus_allowed,
        "affinity": pinning,
        "gc_enabled": use_gc,
        "raft_config": {f.name: getattr(cfg, f.name) for f in fields(cfg) if f.name != "id"},
        "raft_config_overrides": {},
    }


def _print_header(env: dict[str, Any], repeat: int) -> None:
    print(f"Python {env['python']} ({env['implementation']}) on {env['platform']}")
    print(
        f"CPUs: os.cpu_count() = {env['cpu_count']}, allowed = {env['cpus_allowed']}; "
        f"{env['affinity']}; cyclic GC {'on' if env['gc_enabled'] else 'off'}"
    )
    print("RaftConfig: defaults (nothing raised; see the module docstring)")
    if repeat > 1:
        print(f"median of {repeat} runs per workload (by entries/s)")
    sys.stdout.flush()


def _print_table(results: list[Result]) -> None:
    header = (
        f"{'workload':<15} {'entries':>9} {'wall s':>7} {'cpu s':>7} {'entries/s':>10} "
        f"{'MB/s':>7} {'µs cpu/entry':>12} {'Readies':>9} {'Rd/entry':>8} {'target/s':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        target = f"{r.target_entries_per_s:,}" if r.target_entries_per_s else "-"
        mark = ""
        if r.target_entries_per_s:
            mark = " ok" if r.entries_per_s >= r.target_entries_per_s else " MISS"
        print(
            f"{r.workload:<15} {r.entries:>9,} {r.wall_s:>7.2f} {r.cpu_s:>7.2f} "
            f"{r.entries_per_s:>10,.0f} {r.mb_per_s:>7.2f} {r.cpu_us_per_entry:>12.2f} "
            f"{r.readies:>9,} {r.readies_per_entry:>8.2f} {target:>9}{mark}"
        )
    print(
        "All runs verified: every commit index = leader's last index, all entries applied, "
        "storages identical."
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m tests.bench.raft_bench",
        description="Raft-core throughput of an in-process 3-node group with instant delivery.",
    )
    ap.add_argument(
        "-w",
        "--workload",
        action="append",
        choices=WORKLOADS,
        help="run only this workload (repeatable; default: all)",
    )
    ap.add_argument(
        "--entries-single",
        type=int,
        default=200_000,
        help="entries for one-by-one and pipelined-1 (default 200000)",
    )
    ap.add_argument(
        "--entries-batch",
        type=int,
        default=640_000,
        help="entries for batch-64x1KiB, rounded up to whole batches (default 640000)",
    )
    ap.add_argument("--single-bytes", type=int, default=100, help="1-entry payload (default 100)")
    ap.add_argument(
        "--drive-every", type=int, default=16, help="pipelined-1: proposals per drive (default 16)"
    )
    ap.add_argument("--batch", type=int, default=64, help="entries per batch (default 64)")
    ap.add_argument("--entry-bytes", type=int, default=1024, help="batch entry payload (1024)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=1, help="runs per workload; the median shows")
    ap.add_argument(
        "--warmup",
        type=int,
        default=5_000,
        help="entries of an unmeasured warm-up run per workload (default 5000; 0: none)",
    )
    ap.add_argument("--no-pin", action="store_true", help="do not pin the process to one CPU")
    ap.add_argument(
        "--no-gc", action="store_true", help="disable the cyclic GC during measured runs"
    )
    ap.add_argument("--json", action="store_true", help="print JSON instead of the table")
    ap.add_argument(
        "--profile",
        metavar="WORKLOAD",
        choices=WORKLOADS,
        help="run WORKLOAD under cProfile and print the hottest functions",
    )
    ap.add_argument("--top", type=int, default=25, help="functions listed by --profile (25)")
    args = ap.parse_args(argv)
    for name in ("entries_single", "entries_batch", "single_bytes", "drive_every", "batch"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be positive")
    if args.repeat < 1 or args.warmup < 0 or args.entry_bytes < 0:
        ap.error("--repeat must be positive, --warmup and --entry-bytes not negative")

    p = Params(
        single_bytes=args.single_bytes,
        drive_every=args.drive_every,
        batch=args.batch,
        entry_bytes=args.entry_bytes,
        seed=args.seed,
    )
    cpus_allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    pinning, _cpu = ("not pinned (--no-pin)", None) if args.no_pin else _pin_to_one_cpu()
    use_gc = not args.no_gc
    env = _environment(pinning, cpus_allowed, use_gc)

    if args.profile:
        print(f"Python {env['python']}; {env['affinity']}")
        profile_workload(args.profile, _entries_for(args.profile, args), p, args.top)
        return 0

    if not args.json:
        _print_header(env, args.repeat)
    results: list[Result] = []
    runs: list[dict[str, Any]] = []
    for workload in args.workload or WORKLOADS:
        n = _entries_for(workload, args)
        if args.warmup:
            run_workload(workload, _warm_entries(workload, min(args.warmup, n), p), p, use_gc=True)
        attempts = []
        for _ in range(args.repeat):
            r = run_workload(workload, n, p, use_gc=use_gc)
            print(
                f"  {workload}: {r.entries_per_s:,.0f} entries/s, {r.cpu_us_per_entry:.2f} µs "
                "cpu/entry",
                file=sys.stderr,
            )
            attempts.append(r)
            runs.append(asdict(r))
        median = statistics.median_low(a.entries_per_s for a in attempts)
        results.append(next(a for a in attempts if a.entries_per_s == median))

    if args.json:
        out = {**env, "repeat": args.repeat, "results": [asdict(r) for r in results], "runs": runs}
        json.dump(out, sys.stdout, indent=2)
        print()
    else:
        _print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
