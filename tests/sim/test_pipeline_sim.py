"""The cluster simulator's model of the pipelined driver (tests/sim/cluster_world.py): its
disk model, its crash flavours, and the planted faults its checkers must catch.

- Rounds end in the order they began, each once its write is durable (or needs no sync), with
  at most `pipeline_depth` in flight; depth 1 is the unpipelined driver.
- A process kill keeps a prefix of the writes not yet durable (any prefix, from none to all);
  a power loss keeps none of them.
- Each driver mutation (tests/sim/mutations.py PIPELINE_MUTATIONS: a round ends before its
  write is durable) must be caught by a safety checker within SEED_BUDGET seeds of the
  ordinary profiles, and the same seeds pass without it. Measured 2026-12-06 (`python -m
  tests.sim.cluster_run --seeds 30 --mutation NAME`):

    mutation                       first seed  seeds of 0-29  caught as
    pipeline-end-before-durable    0 (quiet)   30             ack-before-durable (a vote
                                                              granted before it is on disk)
    pipeline-end-out-of-order      0 (quiet)   22             ack-before-durable (21, an
                                                              append acknowledgement),
                                                              log-matching (1)

  The durability audit catches them as the acknowledgement leaves. With the audits switched
  off (ClusterChecker.audit_durable and audit_applied_early made no-ops), seeds 0-29 end in
  log-matching 5 and 7 times, and mostly in sim-errors otherwise: the core, told a Ready is
  durable, reads its entries back from a disk that lacks them (the simulated node's log
  storage is the disk itself, where the runtime's store would serve them from its views).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from broker.core.raft import Entry, Ready
from broker.core.rounds import Round
from tests.sim import cluster_world
from tests.sim.cluster_run import describe_failure
from tests.sim.cluster_seed import run_cluster_seed
from tests.sim.cluster_world import ClusterWorld, SimBroker, _InFlight, _WalRecord
from tests.sim.mutations import PIPELINE_MUTATIONS

SEED_BUDGET = 6
CAUGHT_AS = {
    "pipeline-end-before-durable": {"ack-before-durable", "apply-before-durable"},
    "pipeline-end-out-of-order": {"ack-before-durable", "apply-before-durable", "apply-order"},
}
"""The safety violations each mutation shows up as."""


def test_every_pipeline_mutation_has_an_expected_violation() -> None:
    assert set(CAUGHT_AS) == set(PIPELINE_MUTATIONS)


@pytest.mark.parametrize("name", sorted(PIPELINE_MUTATIONS))
def test_pipeline_mutation_is_caught_and_the_same_seeds_pass_without_it(name: str) -> None:
    caught_at = None
    for seed in range(SEED_BUDGET):
        v = run_cluster_seed(seed, mutation=PIPELINE_MUTATIONS[name]).violation
        if v is not None and v.kind in CAUGHT_AS[name]:
            print(f"{name}: caught at seed {seed}: {v}")
            caught_at = seed
            break
    if caught_at is None:
        pytest.fail(f"driver mutation {name} survived {SEED_BUDGET} seeds")
    for seed in range(caught_at + 1):
        res = run_cluster_seed(seed)
        assert res.violation is None, describe_failure(res)


def test_ending_out_of_order_needs_a_pipeline() -> None:
    """With one round in flight there is no later round to end first: the seed that
    catches pipeline-end-out-of-order runs exactly as without it."""
    mutant = run_cluster_seed(2, mutation=PIPELINE_MUTATIONS["pipeline-end-out-of-order"])
    assert mutant.violation is not None
    mutant = run_cluster_seed(
        2, mutation=PIPELINE_MUTATIONS["pipeline-end-out-of-order"], pipeline_depth=1
    )
    plain = run_cluster_seed(2, pipeline_depth=1)
    assert mutant.violation is None and plain.violation is None, describe_failure(mutant)
    assert mutant.stats == plain.stats and mutant.trace == plain.trace


# -- the disk model, observed on whole runs --------------------------------------------------


@dataclass
class _Life:
    """What one broker life did, as the recorder saw it."""

    begun: list[_InFlight] = field(default_factory=list)
    ended: list[_InFlight] = field(default_factory=list)
    most_in_flight: int = 0
    landed: list[int] = field(default_factory=list)
    """WAL sequence numbers, in the order they landed."""


class _Recorder:
    """Wraps the world's disk and round methods to check the driver's rules on a real run."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.lives: dict[tuple[int, int], _Life] = {}
        cw = ClusterWorld
        write, land, end = cw._write, cw._land, cw._end
        recorder = self

        def _write(w: ClusterWorld, b: SimBroker, rnd: Round, f: _InFlight | None) -> None:
            write(w, b, rnd, f)
            life = recorder.life(b)
            if f is not None:
                life.begun.append(f)
                life.most_in_flight = max(life.most_in_flight, len(b.pipeline))
                assert len(b.pipeline) <= b.pipeline_depth

        def _land(w: ClusterWorld, b: SimBroker, rec: _WalRecord) -> None:
            recorder.life(b).landed.append(rec.seq)
            land(w, b, rec)

        def _end(w: ClusterWorld, b: SimBroker, f: _InFlight) -> None:
            assert f.landed or not f.needs_sync, "a round ended before its write was durable"
            recorder.life(b).ended.append(f)
            end(w, b, f)

        monkeypatch.setattr(cw, "_write", _write)
        monkeypatch.setattr(cw, "_land", _land)
        monkeypatch.setattr(cw, "_end", _end)

    def life(self, b: SimBroker) -> _Life:
        return self.lives.setdefault((b.id, b.life), _Life())


@pytest.mark.parametrize(("seed", "profile"), [(2, "crash"), (5, "mixed"), (1, "txn")])
@pytest.mark.parametrize("depth", [1, 3])
def test_rounds_end_in_order_once_durable(
    monkeypatch: pytest.MonkeyPatch, seed: int, profile: str, depth: int
) -> None:
    rec = _Recorder(monkeypatch)
    res = run_cluster_seed(seed, profile, pipeline_depth=depth)
    assert res.violation is None, describe_failure(res)
    for life in rec.lives.values():
        # In the order they began (a crash cuts the tail off), durable first (`_end`).
        assert life.ended == life.begun[: len(life.ended)]
        # What lands is the WAL in order, with no write skipped.
        if life.landed:
            first = life.landed[0]
            assert life.landed == list(range(first, first + len(life.landed)))
    most = max(life.most_in_flight for life in rec.lives.values())
    assert most == depth if depth == 1 else 1 < most <= depth
    assert (res.stats.pipelined == 0) == (depth == 1)
    assert res.stats.unsynced_ends > 0  # ticks' heartbeats need no sync


# -- crash flavours ---------------------------------------------------------------------------

GROUP = 99
WRITES = 4


def _unsynced_writes(seed: int, kill_share: float) -> Iterator[tuple[ClusterWorld, Entry]]:
    """A fresh world whose broker 0 has WRITES rounds in flight, each appending one entry
    of group GROUP, none durable yet."""
    w = ClusterWorld(random.Random(seed), 3, 3, kill_share=kill_share, pipeline_depth=WRITES)
    b = w.brokers[0]
    b.disk.store.open_group(GROUP, None)
    for i in range(1, WRITES + 1):
        rd = Ready(i, entries=[Entry(i, 1)], must_sync=True)
        rnd = Round([(GROUP, rd)], [], [], [], [])
        f = _InFlight(rnd, True)
        b.pipeline.append(f)
        w._write(b, rnd, f)
        yield w, rd.entries[0]


def test_a_process_kill_keeps_a_prefix_of_the_unsynced_writes() -> None:
    kept_counts = set()
    for seed in range(40):
        *_, (w, _) = _unsynced_writes(seed, kill_share=1.0)
        w.crash(0)
        disk = w.brokers[0].disk.store.logs[GROUP]
        kept = disk.last_index()
        if kept:
            assert [e.index for e in disk.entries(1, kept + 1)] == list(range(1, kept + 1))
        assert w.stats.kills == 1
        assert w.stats.writes_survived == kept and w.stats.writes_lost == WRITES - kept
        kept_counts.add(kept)
    assert kept_counts == set(range(WRITES + 1)), "every prefix, from none to all"


def test_a_power_loss_keeps_none_of_the_unsynced_writes() -> None:
    for seed in range(5):
        *_, (w, _) = _unsynced_writes(seed, kill_share=0.0)
        w.crash(0)
        assert w.brokers[0].disk.store.logs[GROUP].last_index() == 0
        assert w.stats.kills == 0 and w.stats.writes_lost == WRITES
    *_, (w, _) = _unsynced_writes(0, kill_share=1.0)
    w.crash(0, power_loss=True)  # the scenario's power loss, whatever the kill share
    assert w.brokers[0].disk.store.logs[GROUP].last_index() == 0


def test_a_sync_covers_the_writes_that_returned_before_it_started() -> None:
    """Group commit: writes that return while a sync runs wait for the next one, which
    covers all of them."""
    gen = _unsynced_writes(0, kill_share=1.0)
    w, _ = next(gen)
    b = w.brokers[0]
    b.disk_latency = (10, 10)
    w._want_sync(b, b.life)  # covers write 1
    for w, _ in gen:
        w._want_sync(b, b.life)  # writes 2-4 return while it runs
    disk = b.disk.store.logs[GROUP]
    b.paused_until = 10**9  # stopped: nothing ends, the syncer waits; the disk still syncs
    w.run_until(w.now + 9)
    assert disk.last_index() == 0
    w.run_until(w.now + 1)
    assert disk.last_index() == 1 and not b.syncing and b.sync_wanted
    w._start_sync(b, b.life)  # as the syncer does once the process runs again
    assert b.syncing and not b.sync_wanted
    before = w.stats.group_synced
    w.run_until(w.now + 9)
    assert disk.last_index() == 1
    w.run_until(w.now + 1)
    assert disk.last_index() == WRITES
    assert w.stats.group_synced - before == WRITES - 2  # one sync for writes 2-4


def test_faults_are_off_unless_planted() -> None:
    assert not cluster_world.PIPELINE_FAULTS
