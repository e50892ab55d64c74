"""Mutation tests of the simulator's checkers: each deliberately broken Raft rule must be
reported as a safety violation within 200 seeds of the ordinary scenario generator.

`lead-before-term-durable` (a bug the simulator found in this core: rare, it needs a stalled
disk, a crash and lost appends together) is caught by its named scenario in test_scenarios.py,
and only about once in a thousand random seeds."""

from __future__ import annotations

import pytest

from tests.sim.mutations import MUTATIONS
from tests.sim.scenario import run_seed

SEED_BUDGET = 200
NOT_SAFETY = {"liveness", "too-little-work", "sim-error"}


CAUGHT_BY_RANDOM_SEEDS = [
    "commit-previous-term",
    "conf-change-before-own-term-commit",
    "read-without-quorum",
    "two-votes-per-term",
    "vote-before-persist",
]


@pytest.mark.parametrize("name", CAUGHT_BY_RANDOM_SEEDS)
def test_mutation_is_caught(name: str) -> None:
    for seed in range(SEED_BUDGET):
        result = run_seed(seed, MUTATIONS[name])
        v = result.violation
        if v is not None and v.kind not in NOT_SAFETY:
            print(f"{name}: caught at seed {seed}: {v}")
            return
    pytest.fail(f"mutation {name} survived {SEED_BUDGET} seeds")


def test_correct_node_passes_the_same_seeds() -> None:
    """The control: the unbroken node passes the seeds that catch every mutation."""
    for seed in range(40):
        result = run_seed(seed)
        assert result.violation is None, f"seed {seed}: {result.violation}"
        assert result.commits >= 20 and result.stats.faults() >= 1
