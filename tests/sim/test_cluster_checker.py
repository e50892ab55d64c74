"""The cluster simulator's end-of-run checkers must complain about planted faults (the Raft
and history checkers are shown failing by the mutations in test_cluster_sim.py)."""

from __future__ import annotations

import pytest

from broker.wire.errors import ErrorCode
from broker.wire.messages import FetchPartitionResult
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


def _answer(drv: ClusterDriver) -> tuple[int, int, int]:
    """(broker, group, high watermark) of partition 0's leader after the run."""
    w = drv.world
    controller = w.brokers[w.controller() or 0].node
    assert controller is not None
    gid = controller.meta.topics[TOPIC].partitions[0].group_id
    bid = w.partition_leaders()[gid]
    node = w.brokers[bid].node
    assert node is not None
    machine = node.groups[gid].machine
    assert machine is not None and machine.high_watermark > 2
    return bid, gid, machine.high_watermark


@pytest.mark.parametrize(
    ("error", "offset", "log_start", "kind"),
    [
        # The run has no retention: records deleted at all is a violation.
        (ErrorCode.OFFSET_OUT_OF_RANGE, 0, 1, "log-start-ahead"),
        # A fetch inside [log start, high watermark] refused as out of range.
        (ErrorCode.OFFSET_OUT_OF_RANGE, 1, 0, "fetch-out-of-range"),
        # A fetch inside the retained range answered without the batch holding the offset.
        (ErrorCode.NONE, 1, 0, "fetch-retained-missing"),
    ],
)
def test_bad_fetch_answers_about_retention_are_reported(
    finished: ClusterDriver, error: ErrorCode, offset: int, log_start: int, kind: str
) -> None:
    bid, gid, hw = _answer(finished)
    part = FetchPartitionResult(
        partition=0, error=error, high_watermark=hw, log_start_offset=log_start
    )
    node = finished.world.brokers[bid].node
    assert node is not None
    with pytest.raises(Violation, match=kind):
        finished.world.checker.check_fetch(bid, gid, node.config.partition, offset, part, 0)


def test_fetch_below_log_start_must_be_out_of_range(finished: ClusterDriver) -> None:
    bid, gid, hw = _answer(finished)
    checker = finished.world.checker
    node = finished.world.brokers[bid].node
    assert node is not None
    config = node.config.partition
    # With retention of one entry the first batch may be deleted: log start at the second.
    start = sorted(checker.references[gid].bases)[1]
    ok = FetchPartitionResult(
        partition=0, error=ErrorCode.OFFSET_OUT_OF_RANGE, high_watermark=hw, log_start_offset=start
    )
    checker.check_fetch(bid, gid, config, 0, ok, 1)
    served = FetchPartitionResult(partition=0, high_watermark=hw, log_start_offset=start)
    with pytest.raises(Violation, match="fetch-below-log-start"):
        checker.check_fetch(bid, gid, config, 0, served, 1)


def test_restored_machine_unlike_the_history_is_reported(finished: ClusterDriver) -> None:
    w = finished.world
    node = w.brokers[1].node
    assert node is not None
    g = next(g for (t, _), g in node.by_partition.items() if t == TOPIC)
    assert g.machine is not None
    w.checker.check_restored(1, node, g.id, g.machine.applied_index)
    g.machine.next_offset += 1
    try:
        with pytest.raises(Violation, match="snapshot-restore"):
            w.checker.check_restored(1, node, g.id, g.machine.applied_index)
    finally:
        g.machine.next_offset -= 1
    w.checker.check_restored(1, node, 0, node.meta.applied_index)
    node.meta.next_group_id += 1
    try:
        with pytest.raises(Violation, match="snapshot-restore"):
            w.checker.check_restored(1, node, 0, node.meta.applied_index)
    finally:
        node.meta.next_group_id -= 1
