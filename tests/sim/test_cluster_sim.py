"""The cluster simulator in `make test`: whole brokers, clients and faults from one seed.

- SEEDS (140) seeds cycling through the profiles quiet, crash, partition, network and mixed, run on
  two processes, must pass every checker and do real work, snapshots included (metadata
  snapshots, partition retention and snapshot installs to lagging replicas), and InitProducerId
  sent to every broker under loss, duplication and controller failover must never hand out
  a producer id twice; the brokers' drivers pipeline their rounds (2-4 in flight, group
  commit, rounds needing no sync ending without one) and crashes are power losses or process
  kills (tests/sim/test_pipeline_sim.py checks the model itself);
- wiped-disk restarts (`wipe`): WIPE_SEEDS seeds (set it to 0 to switch them off);
- quiescence (`quiesce`): QUIESCE_SEEDS seeds, whose groups quiesce in idle phases, whose
  brokers lose leaders of quiesced groups (crashed, stopped, cut off both ways or one way)
  and fail over within the profile's bound, mixed-version clusters among them (no group
  with a replica on the broker without the feature ever quiesces);
- each broker mutation (tests/sim/mutations.py BROKER_MUTATIONS) must be caught by a safety
  checker within its window of seeds, and the same seeds pass without it.

A failing seed prints the command that reproduces it and the end of its trace. More seeds:
`make sim-cluster CLUSTER_SEEDS=N`, or `python -m tests.sim.cluster_run --seeds N --jobs 2`.
"""

from __future__ import annotations

import pytest

from tests.sim.cluster_run import describe_failure, results
from tests.sim.cluster_scenario import PROFILES, ClusterResult
from tests.sim.mutations import BROKER_MUTATIONS

SEEDS = 140
WIPE_SEEDS = 20
QUIESCE_SEEDS = 60
"""About as long as SEEDS // 2 of the default profiles (0.3 s a seed on two processes)."""
JOBS = 2
MUTATION_SEED_BUDGET = 200
NOT_SAFETY = {"liveness", "sim-error"}


def _check(res: list[ClusterResult], mutation: str | None = None) -> None:
    failed = [r for r in res if r.violation is not None]
    if failed:
        shown = "\n\n".join(describe_failure(r, mutation) for r in failed[:3])
        pytest.fail(f"{len(failed)} of {len(res)} seeds failed:\n{shown}", pytrace=False)


@pytest.mark.slow
def test_cluster_seeds() -> None:
    res = list(results(range(SEEDS), None, None, JOBS))
    _check(res)
    by_profile = {p: [r for r in res if r.profile == p] for p in PROFILES}
    assert all(len(rs) == SEEDS // len(PROFILES) for rs in by_profile.values())
    # Every seed did real work (every acknowledged record read, or deleted by retention
    # before the reader got to it), and every faulty profile really injected faults.
    assert all(r.acked >= 10 and r.read + r.stats.retention_skipped >= r.acked for r in res)
    for profile in ("crash", "partition", "mixed"):
        assert all(r.stats.faults() >= 1 for r in by_profile[profile]), profile
    assert sum(r.stats.dropped for r in by_profile["network"]) > 0
    assert sum(r.stats.crashes for r in res) >= SEEDS
    # The snapshot path runs: compactions, chunked transfers, installs on lagging replicas.
    assert sum(r.stats.compactions for r in res) >= SEEDS
    assert sum(r.stats.snapshots_installed for r in res) >= SEEDS // 4
    assert sum(r.stats.snapshot_chunks for r in res) > sum(r.stats.snapshots_installed for r in res)
    # InitProducerId to brokers drawn among all, under loss, duplication and controller
    # failover: the checker refuses any producer id handed out twice (producer-id-reused);
    # here, that the forwarded path (a non-controller asking the controller) really ran.
    assert sum(r.stats.pids_probed for r in res) >= 10 * SEEDS
    assert sum(r.stats.pids_forwarded for r in res) >= 5 * SEEDS
    assert sum(r.stats.duplicated for r in res) > 0
    # The pipelined driver: rounds begun while others were in flight, syncs that made several
    # rounds durable, rounds that needed none; crashes of both flavours with writes not yet
    # durable: some surviving a kill unacknowledged, some lost after their round had ended.
    assert sum(r.stats.pipelined for r in res) >= 10 * SEEDS
    assert sum(r.stats.group_synced for r in res) > 0
    assert sum(r.stats.unsynced_ends for r in res) > 0
    assert sum(r.stats.kills for r in res) > 0
    assert sum(r.stats.writes_survived for r in res) > 0
    assert sum(r.stats.writes_lost for r in res) > 0
    assert sum(r.stats.ended_lost for r in res) > 0


@pytest.mark.slow
def test_wiped_disk_seeds() -> None:
    if not WIPE_SEEDS:
        pytest.skip("wiped-disk restarts switched off")
    res = list(results(range(WIPE_SEEDS), "wipe", None, JOBS))
    _check(res)
    assert sum(r.stats.wipes for r in res) >= WIPE_SEEDS // 2


@pytest.mark.parametrize("name", sorted(BROKER_MUTATIONS))
def test_broker_mutation_is_caught(name: str) -> None:
    for res in results(range(MUTATION_SEED_BUDGET), None, name, JOBS):
        v = res.violation
        if v is not None and v.kind not in NOT_SAFETY:
            print(f"{name}: caught at seed {res.seed} ({res.profile}): {v}")
            return
    pytest.fail(f"mutation {name} survived {MUTATION_SEED_BUDGET} seeds")


@pytest.mark.slow
def test_quiesce_seeds() -> None:
    res = list(results(range(QUIESCE_SEEDS), "quiesce", None, JOBS))
    _check(res)
    assert all(r.acked >= 10 and r.read + r.stats.retention_skipped >= r.acked for r in res)
    # Groups really quiesced, leaders of quiesced groups were lost and replaced (some
    # noticed only by the keepalive's silence bound), mixed-version clusters ran.
    # (In a mixed-version cluster of three brokers every group has a replica on the one
    # without the feature: nothing quiesces there.)
    assert all(r.stats.quiesced > 0 for r in res if r.scenario.quiesce_off < 0)
    assert sum(r.stats.quiesced_hits for r in res) >= QUIESCE_SEEDS
    assert sum(r.stats.failovers for r in res) >= QUIESCE_SEEDS
    assert sum(r.stats.silent for r in res) >= QUIESCE_SEEDS
    assert sum(r.scenario.quiesce_off >= 0 for r in res) >= QUIESCE_SEEDS // 8


def test_lower_id_dialing_strands_plain_brokers() -> None:
    """The dialing rule peers.py once had (the lower id dials): a plain broker with a higher
    id than every seed never connects, and the liveness check says so."""
    res = list(results(range(8), "quiet", None, JOBS, dial_rule="lower-id"))
    stranded = [r for r in res if r.violation is not None and r.violation.kind == "liveness"]
    assert stranded, "no seed showed the stranded plain broker"
    assert all(r.violation is None or r.violation.kind == "liveness" for r in res)
