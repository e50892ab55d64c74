"""Consumer groups in the cluster simulator (`--profile groups`, tests/sim/cluster_groups.py).

- SEEDS (140) seeds on two processes (`make test`) must pass every checker and do real work: members
  join, leave, crash and stall, lose their partitions by the 2/3 rule and get expired,
  partitions change hands, commits go through and late commits are refused, the coordinator
  moves, and coordinator replicas restored from snapshots or reloaded at restarts are checked;
- each group checker is seen failing on a planted fault (tests/sim/mutations.py
  GROUP_MUTATIONS) within SEED_BUDGET seeds from its FIRST_SEED (0 unless named), as the
  violation CAUGHT names, and the catching seed passes without it. Measured with `python -m
  tests.sim.cluster_run --profile groups --seeds 20 --mutation NAME` (2026-12-06, with the
  brokers' rounds pipelined):

    mutation                        checker                     first seed  seeds of 0-19
    group-eager-handout             (a) group-two-owners        0           20
    member-ignores-lost-rule        (a) group-two-owners        0           6
    group-expire-without-rebalance  (b) group-unstable          0           12
    group-assignor-not-sticky       (c) group-moves             0           19
    group-commit-unheld             (d) group-fenced-commit     0           11
    stale-commit-queue              (e) group-offset-backwards  3           12 (7 as (e),
                                                                            5 as (d), the
                                                                            first at 2)

  group-commit-unheld is caught by (d)'s member half (a late commit answered NONE) as the
  answer arrives; its coordinator half (the reference coordinator) flags the same commit
  when it catches up (test_both_halves_of_the_commit_check).

More seeds: `make sim-cluster` (GROUP_SEEDS), or `python -m tests.sim.cluster_run --profile
groups --seeds N --jobs 2`.
"""

from __future__ import annotations

import pytest

from broker.core.groups.coordinator import GroupCoordinator
from tests.sim.checker import Violation
from tests.sim.cluster_groups import GroupDriver
from tests.sim.cluster_run import describe_failure, results
from tests.sim.cluster_scenario import ClusterResult, ClusterScenario
from tests.sim.cluster_seed import run_cluster_seed
from tests.sim.mutations import GROUP_MUTATIONS

SEEDS = 140
JOBS = 2
QUICK_SEEDS = 3
SEED_BUDGET = 6
CAUGHT: dict[str, tuple[str, str]] = {
    # mutation: (violation kind, a piece of its detail)
    "group-eager-handout": ("group-two-owners", "in its own view"),
    "member-ignores-lost-rule": ("group-two-owners", "in its own view"),
    "group-expire-without-rebalance": ("group-unstable", "is owned by no member"),
    "group-assignor-not-sticky": ("group-moves", "the assignor must move only"),
    "group-commit-unheld": ("group-fenced-commit", "when it did not own the partition"),
    "stale-commit-queue": ("group-offset-backwards", "the committed offset of"),
}
FIRST_SEED = {"stale-commit-queue": 3}
"""Where a mutation's window starts, when an earlier seed catches it as another checker."""


def _check(res: list[ClusterResult]) -> None:
    failed = [r for r in res if r.violation is not None]
    if failed:
        shown = "\n\n".join(describe_failure(r) for r in failed[:3])
        pytest.fail(f"{len(failed)} of {len(res)} seeds failed:\n{shown}", pytrace=False)


@pytest.mark.slow
def test_group_seeds() -> None:
    res = list(results(range(SEEDS), "groups", None, JOBS))
    _check(res)
    total: dict[str, int] = {}
    for r in res:
        assert r.groups is not None
        assert r.groups["joins"] >= 2 and r.groups["commits"] > 0, r.seed
        for k, v in r.groups.items():
            total[k] = total.get(k, 0) + v
    # Churn of every kind, and what it must cause.
    for kind in ("leaves", "crashes", "stalls"):
        assert total[kind] >= SEEDS, kind
    assert total["lost"] >= SEEDS // 2  # stalled members stopped by the 2/3 rule
    assert total["expired"] >= SEEDS  # crashed and stalled members expired by the coordinator
    assert total["fenced"] > 0
    assert total["handovers"] >= 5 * SEEDS
    assert total["rebalances"] >= 5 * SEEDS and total["moves"] > 0
    assert total["late_commits"] >= SEEDS // 2 and total["late_refused"] >= SEEDS // 2
    assert total["coordinator_moves"] >= SEEDS
    assert total["states_checked"] >= SEEDS
    # Coordinator failover and snapshots of its partitions.
    assert sum(r.stats.crashes for r in res) >= SEEDS
    assert sum(r.stats.snapshots_installed for r in res) > 0


def test_a_few_group_seeds() -> None:
    _check([run_cluster_seed(seed, "groups") for seed in range(QUICK_SEEDS)])


def test_every_group_mutation_has_a_catching_seed() -> None:
    assert set(CAUGHT) == set(GROUP_MUTATIONS)


@pytest.mark.parametrize("name", sorted(GROUP_MUTATIONS))
def test_group_mutation_is_caught_and_the_seed_passes_without_it(name: str) -> None:
    kind, detail = CAUGHT[name]
    first = FIRST_SEED.get(name, 0)
    for seed in range(first, first + SEED_BUDGET):
        v = run_cluster_seed(seed, "groups", GROUP_MUTATIONS[name]).violation
        if v is not None:
            print(f"{name}: caught at seed {seed}: {v}")
            assert v.kind == kind and detail in v.detail, v
            break
    else:
        pytest.fail(f"group mutation {name} survived seeds {first}-{first + SEED_BUDGET - 1}")
    res = run_cluster_seed(seed, "groups")
    assert res.violation is None, describe_failure(res)


def test_both_halves_of_the_commit_check() -> None:
    """(d): the member's half (a commit answered NONE, sent when it did not own the
    partition) and the coordinator's half (the committed log accepted a commit of a partition
    the member did not hold) both flag the planted group-commit-unheld."""
    drv = GroupDriver(ClusterScenario.draw(0, "groups"))
    with GROUP_MUTATIONS["group-commit-unheld"]():
        with pytest.raises(Violation, match="when it did not own the partition"):
            drv.run()
        with pytest.raises(Violation, match="was accepted, but the member held"):
            drv.checker.catch_up(drv.world)


def test_a_divergent_coordinator_replica_is_reported() -> None:
    """`group-state`: every coordinator replica must equal the committed log replayed."""
    drv = GroupDriver(ClusterScenario.draw(1, "groups"))
    drv.run()
    gid = drv._coordinator_group()
    assert gid is not None
    bid = drv.world.partition_leaders()[gid]
    node = drv.world.brokers[bid].node
    assert node is not None
    machine = node.groups[gid].machine
    assert isinstance(machine, GroupCoordinator)
    group = machine.groups[drv.plan.group_id]
    tp = next(iter(group.offsets))
    committed = group.offsets[tp]
    group.offsets[tp] = type(committed)(committed.offset + 1, None, committed.meta_index)
    with pytest.raises(Violation, match="group-state"):
        drv._check_replicas()
