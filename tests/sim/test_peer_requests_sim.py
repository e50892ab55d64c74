"""Peer requests between whole simulated brokers under loss, duplication, reordering,
partitions, pauses and crashes (`peer_request_scenario.py`): over 200 seeds every request
completes exactly once (an answer or a timeout; only with the life that sent it may it die),
never twice, and every answer is the addressed broker's answer to that request. Each planted
fault is caught.

A failing seed prints `python -m tests.sim.peer_request_scenario --seed S`.
"""

from __future__ import annotations

import pytest

from tests.sim.peer_request_scenario import MUTATIONS, PeerRunResult, peer_results

SEEDS = 200
JOBS = 2
MUTATION_SEED_BUDGET = 100


def _failures(res: list[PeerRunResult], mutation: str | None = None) -> str:
    failed = [r for r in res if r.violation is not None]
    return "\n".join(f"seed {r.seed}: {r.violation}\n  {r.repro(mutation)}" for r in failed[:5])


@pytest.mark.slow
def test_every_request_completes_exactly_once_with_the_right_answer() -> None:
    res = list(peer_results(range(SEEDS), None, JOBS))
    failures = _failures(res)
    assert not failures, failures
    # Every seed did real work, and the faults and paths the checks are about all happened.
    assert all(r.sent >= 50 and r.answered >= 10 for r in res)
    assert sum(r.timed_out for r in res) >= SEEDS
    assert sum(r.unsupported for r in res) >= SEEDS
    assert sum(r.local for r in res) >= SEEDS
    assert sum(r.crashes for r in res) >= SEEDS // 4
    stats = [r.stats for r in res]
    assert sum(s.resent for s in stats) > 0
    assert sum(s.duplicates for s in stats) > 0  # served from the cache or dropped while open
    assert sum(s.stray_responses for s in stats) > 0  # late and duplicated answers ignored


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_each_planted_fault_is_caught(mutation: str) -> None:
    caught = None
    for r in peer_results(range(MUTATION_SEED_BUDGET), mutation, 1):
        if r.violation is not None:
            caught = r
            break
    assert caught is not None, f"{mutation} survived {MUTATION_SEED_BUDGET} seeds"
    assert caught.violation is not None and caught.violation.kind != "sim-error", caught.violation
