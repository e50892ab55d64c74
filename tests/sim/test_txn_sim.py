"""Transactions in the cluster simulator (`--profile txn`, tests/sim/cluster_txn.py).

- SEEDS (140) seeds on two processes (in `make test` and `make unit`: not marked slow) must pass
  every checker and do real work: transactions committed and aborted (by their producers,
  midway, by the coordinator), outcomes left unknown, zombies started (some as the coordinator
  logs PREPARING or PRE_COMMITTED) and fenced, client crashes, the broker crashed at every kind
  of step boundary, coordinator replicas checked after snapshots and restarts, participants
  committing on their own, and every partition's LSO back at its high watermark after the heal
  (within the transaction timeout plus cluster_txn.LSO_BOUND);
- each checker is seen failing on a planted fault (tests/sim/mutations.py TXN_MUTATIONS), as
  the table CAUGHT names, within its window of seeds, and the catching seed passes without
  the fault. Some are shown with an earlier checker switched off (cluster_txn.CHECKS_OFF), so
  that the later one is seen catching the fault on its own. Measured with `python -m
  tests.sim.cluster_run --profile txn --seeds 40 --mutation NAME` (2026-12-06, with the
  brokers' rounds pipelined: every seed's trajectory changed, so did the windows):

    mutation                          checker                    first seed  seeds caught
    participant-commits-prepared      txn-decision               1           37 of 0-39
      ... without txn-decision and    (a) txn-atomicity          8
          txn-stuck
    complete-before-commit-acks       (a) txn-told-early         1           32 of 0-39
    txn-fetch-past-lso                (b) txn-read-uncommitted   0           40 of 0-39
    txn-fetch-aborted                 (b) txn-read-aborted       0           36 of 0-39
    txn-fetch-skips-after-gap         (b) txn-read-skipped       5           35 of 0-199
    txn-init-ends-precommitted        (c) txn-order              111         2 of 0-199 (and
                                                                             12 as (d))
    txn-timeout-never-fires           (d) txn-lso-stuck          0           30 of 0-39
    commit-on-first-yes               (d) txn-lso-stuck          5           9 of 0-39
    new-leader-commits-preparing      (d) txn-lso-stuck          1           35 of 0-39
    reopen-closed-epoch               (d) txn-stuck              14          3 of 0-199
    txn-dedup-lost                    (e) txn-duplicate          4           38 of 0-199
    txn-init-reuses-epoch             txn-zombie                 0           22 of 0-39
    abort-on-timeout-after-precommit  txn-decision               12          16 of 0-199

  The rare ones need a rare schedule: (c) a successor's InitProducerId landing while the
  coordinator has the old transaction PRE_COMMITTED, then a later transaction read before the
  participants committed the old one on their own; reopen-closed-epoch a BEGIN re-sent under
  a new request id that arrives after its transaction closed; abort-on-timeout a transaction
  PRE_COMMITTED for a whole timeout at one leader (a participant leader cut off at a step
  boundary).
  `txn-replica` and `txn-state` are shown reporting a corrupted replica directly.

More seeds: `make sim-cluster` (TXN_SEEDS), or `python -m tests.sim.cluster_run --profile txn
--seeds N --jobs 2`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from broker.core.node import BrokerNode, Round
from broker.core.partition import PartitionMachine
from broker.core.peer_codec import PEER_REQUEST, PeerRequest, decode_frame
from broker.core.peer_requests import PeerRequests
from broker.core.raft import Entry, EntryKind
from broker.core.txn.coordinator import TransactionCoordinator
from broker.core.txn.protocol import Participant, Phase, TxnCommand
from tests.sim import cluster_txn
from tests.sim.checker import Violation
from tests.sim.cluster_run import describe_failure, results
from tests.sim.cluster_scenario import ClusterResult, ClusterScenario
from tests.sim.cluster_seed import run_cluster_seed
from tests.sim.cluster_txn import BOUNDARY_KINDS, TxnDriver
from tests.sim.mutations import TXN_MUTATIONS

SEEDS = 140
JOBS = 2
NONE: frozenset[str] = frozenset()
CAUGHT: dict[str, tuple[str, str, range, frozenset[str]]] = {
    # name: (violation kind, a piece of its detail, seeds tried, checks switched off)
    "participant-commits-prepared": (
        "txn-decision",
        "coordinator's log decided",
        range(0, 3),
        NONE,
    ),
    "complete-before-commit-acks": ("txn-told-early", "was told committed", range(0, 3), NONE),
    "txn-fetch-past-lso": ("txn-read-uncommitted", "not committed there", range(0, 3), NONE),
    "txn-fetch-aborted": ("txn-read-aborted", ", aborted (marker at", range(0, 3), NONE),
    "txn-fetch-skips-after-gap": ("txn-read-skipped", "left out", range(5, 8), NONE),
    "txn-init-ends-precommitted": ("txn-order", "no COMMIT marker yet", range(111, 112), NONE),
    "txn-timeout-never-fires": ("txn-lso-stuck", "after the heal", range(0, 3), NONE),
    "commit-on-first-yes": ("txn-lso-stuck", "after the heal", range(3, 6), NONE),
    "new-leader-commits-preparing": ("txn-lso-stuck", "after the heal", range(0, 3), NONE),
    "reopen-closed-epoch": ("txn-stuck", "still holds", range(14, 15), NONE),
    "txn-dedup-lost": ("txn-duplicate", "appended", range(4, 7), NONE),
    "txn-init-reuses-epoch": ("txn-zombie", "", range(3, 6), NONE),  # either zombie check
    "abort-on-timeout-after-precommit": ("txn-decision", "abort after commit", range(12, 15), NONE),
}
ALONE: dict[str, tuple[str, str, str, range, frozenset[str]]] = {
    # case: (mutation, violation kind, a piece of its detail, seeds tried, checks off)
    "atomicity-without-decision-check": (
        "participant-commits-prepared",
        "txn-atomicity",
        "but read",
        range(7, 10),
        frozenset({"txn-decision", "txn-stuck"}),
    ),
}


def _check(res: list[ClusterResult]) -> None:
    failed = [r for r in res if r.violation is not None]
    if failed:
        shown = "\n\n".join(describe_failure(r) for r in failed[:3])
        pytest.fail(f"{len(failed)} of {len(res)} seeds failed:\n{shown}", pytrace=False)


def test_txn_seeds() -> None:
    res = list(results(range(SEEDS), "txn", None, JOBS))
    _check(res)
    total: dict[str, int] = {}
    for r in res:
        assert r.groups is not None
        assert r.groups["begun"] > 0 and r.groups["fetches_checked"] > 0, r.seed
        for k, v in r.groups.items():
            total[k] = total.get(k, 0) + v
    # Both outcomes, told by every path, and outcomes left unknown (all or nothing checked).
    assert total["committed"] >= 2 * SEEDS and total["aborted"] >= 2 * SEEDS
    assert total["abort_midway"] >= SEEDS // 4 and total["aborted_by_coordinator"] >= SEEDS // 4
    assert total["unknown"] > 0
    # Zombies started (some at PREPARING / PRE_COMMITTED) and fenced; client crashes.
    assert total["zombies"] >= SEEDS // 2 and total["zombies_at_boundary"] >= SEEDS // 10
    assert total["fenced"] >= SEEDS // 4 and total["crashed"] >= SEEDS
    # Every kind of step boundary crashed at, many times.
    for kind in BOUNDARY_KINDS:
        assert total.get(f"boundary_{kind}", 0) >= SEEDS // 20, kind
    # The checks ran on real material.
    assert total["records_read"] >= 5 * SEEDS and total["markers"] >= 10 * SEEDS
    assert total["order_checked"] >= SEEDS // 2
    assert total["states_checked"] >= SEEDS and total["replicas_checked"] >= SEEDS
    assert total["self_commits"] > 0
    # Faults of the world: crashes, duplicated, lost and reordered peer frames, snapshots.
    assert sum(r.stats.crashes for r in res) >= 2 * SEEDS
    assert sum(r.stats.duplicated for r in res) > 0 and sum(r.stats.dropped for r in res) > 0
    assert sum(r.stats.snapshots_installed for r in res) > 0
    # (d) ran everywhere (its bound is the check's own: the timeout plus LSO_BOUND).
    settle = [r.groups["lso_settle_units"] for r in res if r.groups is not None]
    assert len(settle) == SEEDS and all(r.groups and r.groups["lso_settled"] for r in res)
    print(f"LSO at the high watermark {max(settle)} units after the heal at most")


def test_every_txn_mutation_has_a_catching_seed() -> None:
    assert set(CAUGHT) == set(TXN_MUTATIONS)


@pytest.fixture
def checks_off() -> Iterator[set[str]]:
    cluster_txn.CHECKS_OFF.clear()
    try:
        yield cluster_txn.CHECKS_OFF
    finally:
        cluster_txn.CHECKS_OFF.clear()


def _caught(name: str, kind: str, detail: str, seeds: range) -> int:
    for seed in seeds:
        v = run_cluster_seed(seed, "txn", TXN_MUTATIONS[name]).violation
        if v is not None:
            print(f"{name}: caught at seed {seed}: {v}")
            assert v.kind == kind and detail in v.detail, v
            return seed
    pytest.fail(f"txn mutation {name} survived seeds {seeds.start}-{seeds.stop - 1}")


@pytest.mark.parametrize("name", sorted(CAUGHT))
def test_txn_mutation_is_caught_and_the_seed_passes_without_it(
    name: str, checks_off: set[str]
) -> None:
    kind, detail, seeds, off = CAUGHT[name]
    checks_off.update(off)
    seed = _caught(name, kind, detail, seeds)
    res = run_cluster_seed(seed, "txn")
    assert res.violation is None, describe_failure(res)


@pytest.mark.parametrize("case", sorted(ALONE))
def test_a_later_checker_catches_it_alone(case: str, checks_off: set[str]) -> None:
    name, kind, detail, seeds, off = ALONE[case]
    checks_off.update(off)
    assert _caught(name, kind, detail, seeds) in seeds  # _caught fails the test if none is


def _finished(seed: int) -> TxnDriver:
    drv = TxnDriver(ClusterScenario.draw(seed, "txn"))
    drv.run()
    return drv


def test_a_divergent_replica_is_reported() -> None:
    """`txn-state` and `txn-replica`: every coordinator replica must equal the committed log
    replayed, every partition replica hold the committed batches."""
    drv = _finished(1)
    w, checker = drv.world, drv.checker
    leaders = w.partition_leaders()
    gid = checker.txn_groups[0]
    node = w.brokers[leaders[gid]].node
    assert node is not None
    machine = node.groups[gid].machine
    assert isinstance(machine, TransactionCoordinator) and machine.txns
    t = next(iter(machine.txns.values()))
    t.epoch += 1
    with pytest.raises(Violation, match="txn-state"):
        checker.check_replicas(w)
    t.epoch -= 1
    checker.check_replicas(w)
    part = next(g for g, p in checker.topic_groups.items() if checker.part_refs[g].batches)
    ref = checker.part_refs[part]
    base = min(ref.batches)
    ref.batches[base] = ref.batches[base][:-1] + b"\x00"
    with pytest.raises(Violation, match="txn-replica"):
        checker.check_replicas(w)


def test_a_decision_the_coordinator_changes_is_reported() -> None:
    """`txn-decision`'s coordinator half, on the reference replay: a transaction decided
    commit may not be decided abort after."""
    checker = _finished(1).checker
    key = next(k for k, commit in checker.decisions.items() if commit)
    with pytest.raises(Violation, match="decided abort after commit"):
        checker._decide(key[0], key[1], False, "planted")


def test_a_step_boundary_crash_keeps_the_message_that_follows_from_leaving() -> None:
    """The coordinator's leader crashed right after it applied PREPARING: its PREPARE
    requests were made (queued on its peer requests) but never left."""
    drv = TxnDriver(ClusterScenario.draw(0, "txn"))
    w = drv.world
    stranded: list[PeerRequests] = []

    def crash_at_preparing(bid: int, node: BrokerNode, rnd: Round, early: bool) -> None:
        if stranded or not drv.faulty:
            return
        if any(b.kind == "c-preparing" for b in cluster_txn.boundaries(node, rnd, early, "t")):
            pr = w.brokers[bid].peer_requests
            assert pr is not None
            stranded.append(pr)
            w.crash(bid)
            w.at(w.now + 50, lambda: w.restart(bid))

    w.after_apply = crash_at_preparing
    drv.run()
    assert stranded, "no PREPARING applied by a coordinator leader"
    phases = []
    for _, frame in stranded[0].take_outgoing():
        kind, body = decode_frame(frame)
        if kind == PEER_REQUEST and isinstance(body, PeerRequest) and body.kind == "txn":
            phases.append(TxnCommand.from_wire(body.body).phase)
    assert Phase.PREPARE in phases, phases


def test_boundaries_classify_the_applied_states() -> None:
    """The classification the crashes are aimed with: a coordinator's PREPARING and a
    participant's PREPARED vote, read from the machines after the apply."""
    m = PartitionMachine()

    def cmd(phase: Phase, seq: int = -1) -> bytes:
        return TxnCommand(
            phase=phase,
            participant=Participant("t", 0),
            txn_id="x",
            producer_id=7,
            epoch=0,
            coordinator_term=1,
            last_seq=seq,
        ).encode()

    m.apply(Entry(1, 1, EntryKind.NORMAL, cmd(Phase.BEGIN)))
    assert cluster_txn._participant_step(m, cmd(Phase.BEGIN)) == ("p-begin", "x", "BEGIN of x e0")
    m.apply(Entry(2, 1, EntryKind.NORMAL, cmd(Phase.PREPARE)))
    found = cluster_txn._participant_step(m, cmd(Phase.PREPARE))
    assert found is not None and found[0] == "p-prepared"
    assert cluster_txn._participant_step(m, cmd(Phase.BEGIN)) is None  # no longer just open
