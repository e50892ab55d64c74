"""Run simulator seeds: `python -m tests.sim.run --seeds N [--jobs J]`, or one seed verbosely
with `--seed S`. Ends with a `totals:` line (every Stats field summed) and the line
`N seeds, V violations`; exits 1 on any violation.

Before those, one line per fault profile (scenario.PROFILES): its seeds, violations, how many
seeds installed at least one snapshot, and its snapshot counts. `--profile P` runs only the
seeds, among those asked for, that draw profile P.

`--liveness` also prints how long the liveness phase took, per seed in election timeouts
(the measurement behind `scenario.LIVENESS_BOUND_ELECTIONS`): median, p90, p99, p99.9, max
and the slowest seeds, for the first step (leader and pending proposals committed) and for
convergence (everything applied everywhere), both counted from healing."""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from tests.sim.mutations import MUTATIONS
from tests.sim.scenario import PROFILES, Scenario, SeedResult, run_seed


def _run(args: tuple[int, str | None]) -> SeedResult:
    seed, mutation = args
    return run_seed(seed, MUTATIONS[mutation] if mutation else None)


def _results(seeds: Iterable[int], mutation: str | None, jobs: int) -> Iterator[SeedResult]:
    work = [(s, mutation) for s in seeds]
    if jobs <= 1:
        yield from map(_run, work)
        return
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("forkserver")) as pool:
        yield from pool.map(_run, work, chunksize=8)


def _percentile(sorted_values: list[int], q: float) -> int:
    """The nearest-rank q-quantile of already sorted values."""
    if not sorted_values:
        return 0
    rank = max(1, -(-len(sorted_values) * q // 1))
    return sorted_values[min(len(sorted_values), int(rank)) - 1]


@dataclass
class ProfileTotals:
    """One fault profile's share of a run."""

    seeds: int = 0
    violations: int = 0
    installing: int = 0
    """Seeds in which at least one snapshot was installed."""
    snapshots_taken: int = 0
    snapshots_installed: int = 0
    snapshots_refused: int = 0
    snapshots_vouched: int = 0

    def add(self, res: SeedResult) -> None:
        st = res.stats
        self.seeds += 1
        self.violations += res.violation is not None
        self.installing += st.snapshots_installed > 0
        self.snapshots_taken += st.snapshots_taken
        self.snapshots_installed += st.snapshots_installed
        self.snapshots_refused += st.snapshots_refused
        self.snapshots_vouched += st.snapshots_vouched

    def line(self, name: str) -> str:
        share = 100 * self.installing / self.seeds if self.seeds else 0.0
        return (
            f"profile {name}: {self.seeds} seeds, {self.violations} violations, "
            f"{self.installing} installed a snapshot ({share:.0f} %); "
            f"snapshots_taken={self.snapshots_taken} "
            f"snapshots_installed={self.snapshots_installed} "
            f"snapshots_refused={self.snapshots_refused} "
            f"snapshots_vouched={self.snapshots_vouched}"
        )


def liveness_report(samples: list[tuple[int, int, int]]) -> list[str]:
    """Lines describing (seed, election timeouts to recover, to converge) samples."""
    out = []
    for label, k in (("recover", 1), ("converge", 2)):
        values = sorted(s[k] for s in samples)
        if not values:
            continue
        slowest = sorted(samples, key=lambda s: -s[k])[:5]
        out.append(
            f"liveness {label} (election timeouts after healing, {len(values)} seeds): "
            f"median={_percentile(values, 0.5)} p90={_percentile(values, 0.9)} "
            f"p99={_percentile(values, 0.99)} p99.9={_percentile(values, 0.999)} "
            f"max={values[-1]}; slowest seeds " + ", ".join(f"{s[0]}:{s[k]}" for s in slowest)
        )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, default=100)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--seed", type=int, help="run this one seed and describe it")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--mutation", choices=sorted(MUTATIONS), help="break a rule on purpose")
    ap.add_argument("--profile", choices=PROFILES, help="only the seeds drawn with this profile")
    ap.add_argument(
        "--liveness", action="store_true", help="print the liveness phase's duration per seed"
    )
    ap.add_argument(
        "--liveness-out", metavar="PATH", help="write `seed recover converge` lines there"
    )
    args = ap.parse_args(argv)
    seeds: Iterable[int] = (
        range(args.seed, args.seed + 1)
        if args.seed is not None
        else range(args.start, args.start + args.seeds)
    )
    if args.profile is not None:
        seeds = [s for s in seeds if Scenario.draw(s).profile == args.profile]
    started = time.monotonic()
    totals: dict[str, int] = {}
    profiles = {name: ProfileTotals() for name in PROFILES}
    violations = 0
    n = 0
    liveness: list[tuple[int, int, int]] = []
    for res in _results(seeds, args.mutation, args.jobs):
        n += 1
        for k, v in vars(res.stats).items():
            totals[k] = totals.get(k, 0) + v
        totals["commits"] = totals.get("commits", 0) + res.commits
        profiles[res.scenario.profile].add(res)
        if res.violation is None:
            et = res.scenario.election_ticks
            st = res.stats
            liveness.append((res.seed, st.liveness_ticks // et, st.converge_ticks // et))
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
    if args.liveness:
        for line in liveness_report(liveness):
            print(line)
    if args.liveness_out:
        with open(args.liveness_out, "w") as f:
            f.writelines(f"{s} {r} {c}\n" for s, r, c in sorted(liveness))
    for name, pt in profiles.items():
        if pt.seeds:
            print(pt.line(name))
    print(
        "totals: "
        + " ".join(f"{k}={v}" for k, v in sorted(totals.items()))
        + f" elapsed={elapsed:.1f}s"
    )
    print(f"{n} seeds, {violations} violations")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
