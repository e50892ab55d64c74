"""The cluster simulator's end-of-run checkers must complain about planted faults (the Raft
and history checkers are shown failing by the mutations in test_cluster_sim.py)."""

from __future__ import annotations

import pytest

from tests.sim.checker import Violation
from tests.sim.cluster_scenario import TOPIC, ClusterDriver, ClusterScenario


@pytest.fixture(scope="module")
def finished() -> ClusterDriver:
    """A quiet run that passed every check."""
    drv = ClusterDriver(ClusterScenario.draw(3, "quiet"))
    drv.run()
    assert sum(len(p.acked) for p in drv.producers) > 0
    return drv


def test_clean_run_passes_again(finished: ClusterDriver) -> None:
    finished.world.checker.final_checks(finished.world, TOPIC)


def test_metadata_divergence_is_reported(finished: ClusterDriver) -> None:
    w = finished.world
    node = w.brokers[1].node
    assert node is not None
    node.meta.next_producer_id += 1
    try:
        with pytest.raises(Violation, match="different states"):
            w.checker.check_metadata(w)
    finally:
        node.meta.next_producer_id -= 1


def test_divergent_replica_is_reported(finished: ClusterDriver) -> None:
    w = finished.world
    node = w.brokers[2].node
    assert node is not None
    machines = [g.machine for (t, _), g in node.by_partition.items() if t == TOPIC]
    machine = next(m for m in machines if m is not None and len(m.index) > 1)
    raft_indexes = machine.index._indexes
    saved = raft_indexes[0]
    raft_indexes[0] = raft_indexes[1]  # this replica now serves another batch at offset 0
    try:
        w.checker.read_replicas(w, TOPIC)
    finally:
        raft_indexes[0] = saved
    assert "inconsistent" in {p.kind for p in w.checker.history.check()}


def test_reused_producer_id_is_reported(finished: ClusterDriver) -> None:
    checker = finished.world.checker
    pid = next(iter(checker.producer_ids))
    with pytest.raises(Violation, match="producer-id-reused"):
        checker.on_producer_id(pid, "a second producer")
