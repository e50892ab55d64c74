"""Mutation tests of the simulator's checkers: each deliberately broken Raft rule must be
reported as a safety violation within 200 seeds of the ordinary scenario generator."""

from __future__ import annotations

import pytest

from tests.sim.mutations import MUTATIONS
from tests.sim.scenario import run_seed

SEED_BUDGET = 200
NOT_SAFETY = {"liveness", "too-little-work", "sim-error"}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
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
