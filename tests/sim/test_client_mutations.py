"""The cluster simulator verifies the client library itself: its producers drive the pure
producer core (`consumers.core.producer`), so a rule broken there is a rule broken in the
simulated producers, and the history checker must catch it.

Each client mutation (tests/sim/mutations.py CLIENT_MUTATIONS) must be caught as a history
problem within SEED_BUDGET seeds of the ordinary profiles, and the seeds up to the catching
one must pass without it. Measured 2026-12-06 (`python -m tests.sim.cluster_run --seeds 30
--mutation NAME`):

    mutation              first catching seed   seeds of 0-29 that catch it
    retry-as-new-batch    1 (crash)             12 (duplicates of acknowledged records)

A quiet seed (no faults, so no retry after a written batch) cannot catch it: seed 0 passes.
"""

from __future__ import annotations

import pytest

from tests.sim.cluster_run import describe_failure
from tests.sim.cluster_seed import run_cluster_seed
from tests.sim.mutations import CLIENT_MUTATIONS

SEED_BUDGET = 8
"""Seeds 0..7 run in about 5 s here; retry-as-new-batch is first caught at seed 1."""
CAUGHT_AS = {"retry-as-new-batch": "duplicate"}
"""The history problem each mutation shows up as."""


def test_every_client_mutation_has_an_expected_problem() -> None:
    assert set(CAUGHT_AS) == set(CLIENT_MUTATIONS)


@pytest.mark.parametrize("name", sorted(CLIENT_MUTATIONS))
def test_client_mutation_is_caught_and_the_same_seeds_pass_without_it(name: str) -> None:
    caught_at = None
    for seed in range(SEED_BUDGET):
        v = run_cluster_seed(seed, mutation=CLIENT_MUTATIONS[name]).violation
        if v is not None and v.kind == "history" and CAUGHT_AS[name] in v.detail:
            print(f"{name}: caught at seed {seed}: {v}")
            caught_at = seed
            break
    if caught_at is None:
        pytest.fail(f"client mutation {name} survived {SEED_BUDGET} seeds")
    for seed in range(caught_at + 1):
        res = run_cluster_seed(seed)
        assert res.violation is None, describe_failure(res)
