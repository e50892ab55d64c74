"""The three-phase commit, explored exhaustively within small bounds (tests/model/txn_model.py),
and each planted protocol fault (txn_mutations.py) caught by it. `make soak` runs larger
bounds."""

from __future__ import annotations

import pytest

from tests.model.txn_model import Bounds, Violation, explore
from tests.model.txn_mutations import MUTATIONS

# Each set of bounds on its own (their product is for make soak): what every test run covers.
BOUNDS = {
    "fault-free": Bounds(losses=0, duplicates=0, crashes=0, zombie=False),
    "one-loss": Bounds(losses=1, duplicates=0, crashes=0, zombie=False, ticks=2),
    "one-duplicate": Bounds(losses=0, duplicates=1, crashes=0, zombie=False, ticks=2),
    "one-crash": Bounds(losses=0, duplicates=0, crashes=1, zombie=False, ticks=1),
    "zombie": Bounds(losses=0, duplicates=0, crashes=0, zombie=True, ticks=0),
    "three-with-group": Bounds(
        participants=3, group=True, losses=0, duplicates=0, crashes=0, zombie=False, ticks=2
    ),
}


@pytest.mark.parametrize("name", sorted(BOUNDS))
def test_every_interleaving_within_bounds_is_atomic_and_terminates(name: str) -> None:
    report = explore(BOUNDS[name])
    # The exploration reached both ends of the protocol, and healed within its bound.
    assert report.outcomes.get("committed", 0) > 0, report
    assert report.outcomes.get("aborted", 0) + report.outcomes.get("TRANSACTION_TIMED_OUT", 0)
    assert report.max_heal_rounds <= 6, report


CATCHING = {
    "commit-on-first-yes": Bounds(losses=0, duplicates=0, crashes=0, zombie=False),
    "new-leader-commits-preparing": Bounds(
        losses=0, duplicates=0, crashes=1, zombie=False, ticks=1
    ),
    "complete-before-commit-acks": Bounds(losses=0, duplicates=0, crashes=0, zombie=False),
    "participant-commits-prepared": Bounds(losses=0, duplicates=0, crashes=0, zombie=False),
    "reopen-closed-epoch": Bounds(losses=0, duplicates=1, crashes=0, zombie=False),
    "abort-on-timeout-after-precommit": Bounds(losses=0, duplicates=0, crashes=0, zombie=False),
}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_planted_protocol_fault_is_caught(mutation: str) -> None:
    with MUTATIONS[mutation](), pytest.raises(Violation):
        explore(CATCHING[mutation])
