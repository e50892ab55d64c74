"""Run simulator seeds: `python -m tests.sim.run --seeds N [--jobs J]`, or one seed verbosely
with `--seed S`. Ends with the line `N seeds, V violations`; exits 1 on any violation."""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from collections.abc import Iterator

from tests.sim.mutations import MUTATIONS
from tests.sim.scenario import SeedResult, run_seed


def _run(args: tuple[int, str | None]) -> SeedResult:
    seed, mutation = args
    return run_seed(seed, MUTATIONS[mutation] if mutation else None)


def _results(seeds: range, mutation: str | None, jobs: int) -> Iterator[SeedResult]:
    work = [(s, mutation) for s in seeds]
    if jobs <= 1:
        yield from map(_run, work)
        return
    with multiprocessing.get_context("fork").Pool(jobs) as pool:
        yield from pool.imap_unordered(_run, work, chunksize=8)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, default=100)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--seed", type=int, help="run this one seed and describe it")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--mutation", choices=sorted(MUTATIONS), help="break a rule on purpose")
    args = ap.parse_args(argv)
    seeds = (
        range(args.seed, args.seed + 1)
        if args.seed is not None
        else range(args.start, args.start + args.seeds)
    )
    started = time.monotonic()
    totals: dict[str, int] = {}
    violations = 0
    n = 0
    for res in _results(seeds, args.mutation, args.jobs):
        n += 1
        for k, v in vars(res.stats).items():
            totals[k] = totals.get(k, 0) + v
        totals["commits"] = totals.get("commits", 0) + res.commits
        if args.seed is not None:
            print(f"scenario: {res.scenario.describe()}")
            print("stats: " + " ".join(f"{k}={v}" for k, v in vars(res.stats).items()))
        if res.violation is not None:
            violations += 1
            repro = f"python -m tests.sim.run --seed {res.seed}"
            if args.mutation:
                repro += f" --mutation {args.mutation}"
            print(f"VIOLATION seed {res.seed}: {res.violation}", flush=True)
            print(f"  reproduce: {repro}", flush=True)
    elapsed = time.monotonic() - started
    print(
        "totals: "
        + " ".join(f"{k}={v}" for k, v in sorted(totals.items()))
        + f" elapsed={elapsed:.1f}s"
    )
    print(f"{n} seeds, {violations} violations")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
