"""The rule audits (tests/sim/rule_audit.py), each shown firing on the mutant that breaks its
rule, within a few random seeds, before any consequence checker sees it; and silent on the
correct core (the ordinary seed runs of test_scenarios and `make sim` run with them on).

First seeds at the time of writing (`python -m tests.sim.test_mutations` for the whole table):
vote-log-check 0 (vote, pre-vote and both), lead-before-durable 6, commit-quorum 1 (a
previous-term entry) and 5 (learners counted), election-quorum 9, follower-commit 33. Before
the audits, pre-vote-ignores-log, commit-past-last-new-entry and lead-before-term-durable
survived 1,000 random seeds each.
"""

from __future__ import annotations

import pytest

from tests.sim.mutations import MUTATIONS
from tests.sim.scenario import run_seed

SEED_BUDGET = 80
NOT_SAFETY = {"liveness", "too-little-work", "sim-error"}

AUDITED = {
    "vote-ignores-log": "vote-log-check",
    "pre-vote-ignores-log": "vote-log-check",
    "all-votes-ignore-log": "vote-log-check",
    "lead-before-term-durable": "lead-before-durable",
    "commit-previous-term": "commit-quorum",
    "learners-count-for-commit": "commit-quorum",
    "learners-vote": "election-quorum",
    "commit-past-last-new-entry": "follower-commit",
}


@pytest.mark.parametrize("mutant", sorted(AUDITED))
def test_audit_fires_on_its_broken_rule(mutant: str) -> None:
    for seed in range(SEED_BUDGET):
        v = run_seed(seed, MUTATIONS[mutant]).violation
        if v is not None and v.kind not in NOT_SAFETY:
            assert v.kind == AUDITED[mutant], f"seed {seed}: {v}"
            return
    pytest.fail(f"{mutant} survived {SEED_BUDGET} seeds")
