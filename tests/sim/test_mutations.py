"""Mutation tests of the simulator's checkers: each deliberately broken Raft rule
(tests/sim/mutations.py) must be reported as a safety violation within SEED_BUDGET seeds of the
ordinary scenario generator (CAUGHT_BY_RANDOM_SEEDS: every mutant), and the rules random seeds
once rarely exposed also by a named scenario of test_scenarios.py run against the mutant with
the rule audits off (CAUGHT_BY_NAMED_SCENARIOS), which shows the consequence checkers catching
them too.

First catching seed of `run_seed` per mutant, overall and among seeds drawn with pre-vote on /
off, and how many of seeds 0-199 catch it ("-": none; `python -m tests.sim.test_mutations`
prints this table for the tree as it is; measured 2026-12-05 with the rule audits and the
snapshot-heavy profile):

    mutant                              first  on/off  of 200  caught by
    commit-previous-term                    1   1/12      159  random seeds
    two-votes-per-term                      0   0/9        61  random seeds
    vote-before-persist                     0   0/9       198  random seeds
    read-without-quorum                     9  11/9        10  random seeds
    conf-change-before-own-term-commit      1   1/9       129  random seeds
    lead-before-term-durable                6   6/18       33  random seeds, named scenario
    keep-conflicting-suffix                 0   0/9       109  random seeds
    commit-past-last-new-entry             33  84/33        9  random seeds, named scenario
    vote-ignores-log                        0   0/9       135  random seeds, named scenario
    pre-vote-ignores-log                    0   0/-       160  random seeds, named scenario
    all-votes-ignore-log                    0   0/9       193  random seeds
    learners-count-for-commit               5   5/9        42  random seeds
    learners-vote                           9  28/9        39  random seeds, named scenario
    keep-reads-after-step-down             16  16/-         5  random seeds, named scenario
    snapshot-matches-any-term               2   2/21        9  random seeds, named scenario

Before the rule audits (tests/sim/rule_audit.py), lead-before-term-durable,
commit-past-last-new-entry and pre-vote-ignores-log survived 1,000 random seeds each (a
pre-vote decides nothing a safety checker could see; the other two need a stalled disk, a
crash and lost appends together, or a follower holding an unrepaired suffix beyond an
append); learners-vote and keep-reads-after-step-down were caught at 0.5-1.5 % per seed and
snapshot-matches-any-term first at seed 230 (21 once the named scenarios shifted the draws,
2 with the snapshot-heavy profile). The audits check each rule on every message, so a
broken rule is reported the first time it is broken.
"""

from __future__ import annotations

import argparse
from concurrent.futures import ProcessPoolExecutor

import pytest

from tests.sim import test_scenarios
from tests.sim.mutations import MUTATIONS
from tests.sim.scenario import Scenario, run_seed

SEED_BUDGET = 200
NOT_SAFETY = {"liveness", "too-little-work", "sim-error"}


CAUGHT_BY_RANDOM_SEEDS = sorted(MUTATIONS)
"""Every mutant: since the rule audits (tests/sim/rule_audit.py), random seeds catch them all."""

CAUGHT_BY_NAMED_SCENARIOS = {
    "lead-before-term-durable": "test_leading_before_the_term_is_durable_is_caught",
    "commit-past-last-new-entry": "test_commit_past_the_last_new_entry_is_caught",
    "pre-vote-ignores-log": "test_pre_vote_granted_regardless_of_log_is_caught",
    "vote-ignores-log": "test_vote_granted_regardless_of_log_is_caught",
    "learners-vote": "test_learner_votes_counted_are_caught",
    "keep-reads-after-step-down": "test_reads_kept_across_terms_are_caught",
    "snapshot-matches-any-term": "test_snapshot_matched_by_any_term_is_caught",
}

CAUGHT_WITH_PRE_VOTE_ON_AND_OFF = ["all-votes-ignore-log"]
"""Mutants of the log check of (pre-)votes that random seeds must catch both with pre-vote on
(the pre-vote grant is what lets the stale candidate run) and off (the real vote alone)."""


def _caught(seed: int, name: str) -> bool:
    v = run_seed(seed, MUTATIONS[name]).violation
    if v is not None and v.kind not in NOT_SAFETY:
        print(f"{name}: caught at seed {seed}: {v}")
        return True
    return False


def test_every_mutation_is_caught_somewhere() -> None:
    named = CAUGHT_BY_NAMED_SCENARIOS
    assert set(CAUGHT_BY_RANDOM_SEEDS) | set(named) == set(MUTATIONS)
    for test_name in named.values():
        assert callable(getattr(test_scenarios, test_name)), test_name


@pytest.mark.parametrize("name", CAUGHT_BY_RANDOM_SEEDS)
def test_mutation_is_caught(name: str) -> None:
    for seed in range(SEED_BUDGET):
        if _caught(seed, name):
            return
    pytest.fail(f"mutation {name} survived {SEED_BUDGET} seeds")


@pytest.mark.parametrize("name", CAUGHT_WITH_PRE_VOTE_ON_AND_OFF)
def test_mutation_is_caught_with_pre_vote_on_and_off(name: str) -> None:
    found: dict[bool, int] = {}
    for seed in range(SEED_BUDGET):
        pre_vote = Scenario.draw(seed).pre_vote
        if pre_vote not in found and _caught(seed, name):
            found[pre_vote] = seed
            if len(found) == 2:
                return
    pytest.fail(f"mutation {name} caught only with pre_vote in {found} in {SEED_BUDGET} seeds")


def test_correct_node_passes_the_same_seeds() -> None:
    """The control: the unbroken node passes the seeds that catch every mutation."""
    for seed in range(40):
        result = run_seed(seed)
        assert result.violation is None, f"seed {seed}: {result.violation}"
        assert result.commits >= 20 and result.stats.faults() >= 1


def _first_catches(name: str) -> tuple[str, int | None, int | None, int | None, int]:
    first: dict[bool, int] = {}
    count = 0
    for seed in range(SEED_BUDGET):
        v = run_seed(seed, MUTATIONS[name]).violation
        if v is not None and v.kind not in NOT_SAFETY:
            count += 1
            first.setdefault(Scenario.draw(seed).pre_vote, seed)
    overall = min(first.values(), default=None)
    return name, overall, first.get(True), first.get(False), count


def main() -> None:
    """Print the table of the module docstring for the tree as it is."""
    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()

    def show(x: int | None) -> str:
        return "-" if x is None else str(x)

    print(f"    {'mutant':34}  first  on/off  of {SEED_BUDGET}  caught by")
    with ProcessPoolExecutor(args.jobs) as pool:
        for name, first, on, off, count in pool.map(_first_catches, MUTATIONS):
            by = []
            if name in CAUGHT_BY_RANDOM_SEEDS:
                by.append("random seeds")
            if name in CAUGHT_BY_NAMED_SCENARIOS:
                by.append("named scenario")
            print(
                f"    {name:34}  {show(first):>5}  {show(on):>2}/{show(off):<3}  {count:>6}  "
                + ", ".join(by),
                flush=True,
            )


if __name__ == "__main__":
    main()
