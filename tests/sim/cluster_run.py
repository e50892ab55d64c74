"""Run cluster-simulator seeds: `python -m tests.sim.cluster_run --seeds N [--jobs J]`, or one
seed verbosely with `--seed S --profile P`. Each seed runs the profile `--profile` names, or
by default the seed's own (`PROFILES[seed % 5]`: quiet, crash, partition, network, mixed);
`--profile wipe` adds wiped-disk restarts, `--profile groups` runs consumer groups
(tests/sim/cluster_groups.py), `--profile txn` transactions (tests/sim/cluster_txn.py),
`--profile reassign` partition reassignment under faults (tests/sim/cluster_reassign.py). Each
seed draws how many rounds its brokers keep in flight (2 to 4); `--pipeline-depth D` sets it
(1: the unpipelined driver). Ends with `N seeds, V violations`; exits 1 on any violation,
printing the command that reproduces it and the end of its trace."""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor

from tests.sim.cluster_scenario import ALL_PROFILES, ClusterResult
from tests.sim.cluster_seed import run_cluster_seed
from tests.sim.mutations import CLUSTER_MUTATIONS

TRACE_LINES = 25


def run_one(args: tuple[int, str | None, str | None, str, int | None]) -> ClusterResult:
    seed, profile, mutation, dial_rule, depth = args
    return run_cluster_seed(
        seed,
        profile,
        CLUSTER_MUTATIONS[mutation] if mutation else None,
        dial_rule=dial_rule,
        pipeline_depth=depth,
    )


def results(
    seeds: range,
    profile: str | None,
    mutation: str | None,
    jobs: int,
    dial_rule: str = "runtime",
    pipeline_depth: int | None = None,
) -> Iterator[ClusterResult]:
    work = [(s, profile, mutation, dial_rule, pipeline_depth) for s in seeds]
    if jobs <= 1:
        yield from map(run_one, work)
        return
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("forkserver")) as pool:
        yield from pool.map(run_one, work, chunksize=4)


def describe_failure(res: ClusterResult, mutation: str | None = None) -> str:
    lines = [
        f"VIOLATION seed {res.seed} profile {res.profile}: {res.violation}",
        f"  reproduce: {res.repro(mutation)}",
        f"  scenario: {res.scenario.describe()}",
        "  trace (last events):",
    ]
    lines += [f"    {line}" for line in res.trace[-TRACE_LINES:]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, default=100)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--seed", type=int, help="run this one seed and describe it")
    ap.add_argument("--profile", choices=ALL_PROFILES, help="default: the seed's own")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--mutation", choices=sorted(CLUSTER_MUTATIONS), help="break a rule")
    ap.add_argument("--trace", action="store_true", help="with --seed: print the whole trace")
    ap.add_argument(
        "--dial-rule",
        choices=("runtime", "lower-id"),
        default="runtime",
        help="lower-id: the rule peers.py once had (the lower id dials), which strands plain "
        "brokers",
    )
    ap.add_argument(
        "--pipeline-depth",
        type=int,
        help="rounds each broker keeps in flight (default: the seed's own, 2 to 4; 1: the "
        "unpipelined driver)",
    )
    args = ap.parse_args(argv)
    if args.pipeline_depth is not None and args.pipeline_depth < 1:
        ap.error("--pipeline-depth must be at least 1")
    seeds = (
        range(args.seed, args.seed + 1)
        if args.seed is not None
        else range(args.start, args.start + args.seeds)
    )
    started = time.monotonic()
    totals: dict[str, int] = {}
    by_profile: dict[str, int] = {}
    violations = 0
    n = 0
    for res in results(
        seeds, args.profile, args.mutation, args.jobs, args.dial_rule, args.pipeline_depth
    ):
        n += 1
        by_profile[res.profile] = by_profile.get(res.profile, 0) + 1
        for k, v in vars(res.stats).items():
            totals[k] = totals.get(k, 0) + v
        totals["acked"] = totals.get("acked", 0) + res.acked
        totals["read"] = totals.get("read", 0) + res.read
        totals["elections"] = totals.get("elections", 0) + res.elections
        prefix = res.profile if res.profile in ("txn", "reassign") else "group"
        for k, v in (res.groups or {}).items():
            totals[f"{prefix}_{k}"] = totals.get(f"{prefix}_{k}", 0) + v
        if args.seed is not None:
            print(f"scenario: {res.scenario.describe()}")
            print(
                "stats: "
                + " ".join(f"{k}={v}" for k, v in vars(res.stats).items())
                + f" acked={res.acked} read={res.read} elections={res.elections}"
            )
            if res.groups is not None:
                print(f"{res.profile}: " + " ".join(f"{k}={v}" for k, v in res.groups.items()))
            if args.trace:
                print("\n".join(res.trace))
        if res.violation is not None:
            violations += 1
            print(describe_failure(res, args.mutation), flush=True)
    elapsed = time.monotonic() - started
    print(
        "totals: "
        + " ".join(f"{k}={v}" for k, v in sorted(totals.items()))
        + " profiles: "
        + " ".join(f"{k}={v}" for k, v in sorted(by_profile.items()))
        + f" elapsed={elapsed:.1f}s"
    )
    print(f"{n} seeds, {violations} violations")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
