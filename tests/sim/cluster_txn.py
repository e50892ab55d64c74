"""Transactions in the cluster simulator (`--profile txn`): whole brokers running the real
three-phase commit (broker/core/txn/, ARCHITECTURE.md 8b), simulated transactional producers
and a read_committed reader, under crashes (at every step boundary of the protocol among
them), message loss, delay, duplication and reordering, and zombie producers.

Theory. The coordinator of a transactional id is the leader of one partition of
`__transaction_state`; every state change (ONGOING, PREPARING, PRE_COMMITTED, ABORTING,
COMPLETE) is a command in its Raft log, applied before its leader acts on it, and every
participant (a partition leader) logs what it is told (BEGIN, its PREPARED vote, PRECOMMIT,
the COMMIT or ABORT marker) before it answers. So the interesting crashes are those *between*
a durable change and the message that follows it: the new leader must carry on from the log
alone. The world's `after_apply` hook runs right after a broker applied a round's committed
entries, before any completion, peer request or peer answer they set off has left; this
profile's hook (`TxnDriver._after_apply`) classifies what the broker applied as the serving
leader of a coordinator partition (`c-ongoing`, `c-preparing`, `c-precommitted`,
`c-aborting`, `c-complete`: the state it reached) or of a topic partition (`p-begin`,
`p-prepared`, `p-precommitted`, `p-commit`, `p-abort`), and crashes the broker there when
the kind is among the seed's targets (`TxnPlan.boundary_kinds`, at `boundary_rate`, each
kind once, at most `boundary_max` times, only while every broker is up), or cuts it off from
the others for 100-500 units instead (`boundary_cut`: a leader that lives on, deposed). The
coordinator's broker-to-broker requests are peer requests: the seed's frame loss, delay,
duplication and reordering apply to them. Besides: random crashes (the coordinator's leader
preferred), partitions, pauses and power loss as in the other profiles.

Clients (cluster_txn_clients.py): 2-3 transactional ids, each run by one producer instance at
a time, transactions back to back, each writing 1-3 records to 2-3 of the topic's 3-6
partitions (RF 3) and then committing or aborting (drawn; some aborts midway). Churn: a
zombie (a second instance of a live instance's transactional id calls InitProducerId while
the first goes on: the first must be fenced), and client crashes (an instance stops without
a word; a successor takes over later). A reader fetches every partition read_committed.

Run: boot (the topic created, and a first instance of every transactional id initialised:
their InitProducerId creates `__transaction_state`), faults and churn for `fault_ticks`, heal
(every broker up, the network whole, no new transactions but the zombies'; in most seeds one
live instance is to crash as soon as a record of its transaction is acknowledged, so only the
coordinator's timeout can end it), then:
(d) `txn-lso-stuck`: within the transaction timeout plus LSO_BOUND of the heal every
    partition's last stable offset equals its high watermark on its serving leader; then
    (`txn-stuck`) no coordinator holds an open transaction, and every producer instance is
    idle or stopped (a zombie: stopped);
then the reader reads every partition to its end and the end-of-run checks run. The other
checkers ((a) all-or-nothing, (b) read_committed reads, (c) order per transactional id, (e)
exactly once, zombies, replicas) are `TxnClusterChecker`'s (cluster_txn_checker.py).
"""

from __future__ import annotations

import functools
import random
from dataclasses import asdict, dataclass

from broker.core.context import TxnConfig
from broker.core.node import BrokerNode, Round
from broker.core.partition import PartitionMachine, is_command
from broker.core.txn.coordinator import AbortReason, TransactionCoordinator, TxnState
from broker.core.txn.ledger import TxnPhase
from broker.core.txn.protocol import MarkerType, Phase, TxnCommand, decode_marker
from broker.core.txn.service import TXN_TOPIC
from broker.wire import cbor
from broker.wire.batch import BatchError, parse_header
from broker.wire.errors import WireError
from tests.sim.checker import Violation
from tests.sim.cluster_scenario import (
    BOOT_TICKS,
    LIVENESS_TICKS,
    TOPIC,
    ClusterDriver,
    ClusterScenario,
)
from tests.sim.cluster_txn_checker import TxnClusterChecker
from tests.sim.cluster_txn_clients import SimTxnProducer, TxnReader
from tests.sim.cluster_world import MS_PER_UNIT

COORDINATOR_KINDS = ("c-ongoing", "c-preparing", "c-precommitted", "c-aborting", "c-complete")
PARTICIPANT_KINDS = ("p-begin", "p-prepared", "p-precommitted", "p-commit", "p-abort")
BOUNDARY_KINDS = COORDINATOR_KINDS + PARTICIPANT_KINDS
"""The step boundaries a broker is crashed at (see the module docstring)."""
CADENCE = 5
"""Units between the clients' own steps."""
REFERENCE_EVERY = 50
"""Units between catch-ups of the reference replay."""
LSO_BOUND = 800
"""Units (4 s) beyond the transaction timeout within which, after the heal, every LSO must
reach its high watermark. It covers restarts and elections (a new coordinator leader gives
what it finds open a whole timeout), a client's request still out at the heal (1 s), its
think time, the abandoned instance's registration and first record (its timeout starts
there), then the abort's round trips. Measured: at most 440 units beyond the timeout over
seeds 0-299, 60 for the median."""
CHECKS_OFF: set[str] = set()
"""Violation kinds switched off (tests: show a later checker catching a planted fault)."""


# --------------------------------------------------------------------------- the plan


@dataclass
class TxnPlan:
    """The transaction side of a `txn` scenario, drawn from the seed."""

    txn_ids: tuple[str, ...]
    internal_partitions: int
    timeout_ms: int
    precommit_ms: int
    commit_share: float
    max_records: int
    think_units: int
    op_timeout_units: int
    zombie_every: int
    """Mean units between zombie spawns (0: none)."""
    crash_every: int
    """Mean units between client crashes (0: none)."""
    boundary_kinds: tuple[str, ...]
    """The step boundaries this seed crashes at, each at most once."""
    boundary_rate: float
    """Chance that a target boundary reached while every broker is up is crashed."""
    boundary_max: int
    boundary_cut: float
    """Chance that a step-boundary fault cuts the broker off (100-500 units) instead of
    crashing it."""
    zombie_at_boundary: float
    """Chance that a successor of a live instance starts as the coordinator logs its
    transaction PREPARING or PRE_COMMITTED."""
    abandon_at_heal: bool

    @classmethod
    def draw(cls, seed: int) -> TxnPlan:
        r = random.Random(seed * 3_000_017 + 11)
        names = ["tx-a", "tx-b", "tx-c", "orders", "billing"]
        return cls(
            txn_ids=tuple(r.sample(names, r.choice([2, 2, 3]))),
            internal_partitions=r.choice([1, 2]),
            timeout_ms=r.choice([800, 1200, 2000]),
            precommit_ms=r.choice([300, 1000]),
            commit_share=r.choice([0.7, 0.9]),
            max_records=r.choice([1, 2, 3]),
            think_units=r.choice([5, 20, 60]),
            op_timeout_units=r.choice([400, 800]),
            zombie_every=r.choice([0, 150, 400]),
            crash_every=r.choice([0, 300, 600]),
            boundary_kinds=tuple(sorted(r.sample(BOUNDARY_KINDS, r.randint(2, 4)))),
            boundary_rate=r.choice([0.5, 1.0]),
            boundary_max=3,
            boundary_cut=r.choice([0.0, 0.3]),
            zombie_at_boundary=r.choice([0.0, 0.0, 0.3]),
            abandon_at_heal=r.random() < 0.75,
        )

    @property
    def timeout_units(self) -> int:
        return self.timeout_ms // MS_PER_UNIT

    def describe(self) -> str:
        return " ".join(f"{k}={v}" for k, v in asdict(self).items())


# --------------------------------------------------------------------------- step boundaries


@dataclass(frozen=True)
class Boundary:
    """A step boundary a serving leader just reached (`kind`: see BOUNDARY_KINDS)."""

    kind: str
    txn_id: str
    what: str


def boundaries(node: BrokerNode, rnd: Round, early: bool, topic: str) -> list[Boundary]:
    """Every step boundary `node` just reached as a serving leader: the protocol states its
    coordinator or participant machines reached by applying the round's committed entries
    (those applied `early`, or the others)."""
    out: list[Boundary] = []
    for gid, rd in rnd.readies:
        if not rd.committed_entries or (gid in rnd.applied_early) != early:
            continue
        g = node.groups.get(gid)
        if g is None or not g.serving():
            continue
        m = g.machine
        for e in rd.committed_entries:
            if not e.data:
                continue
            if isinstance(m, TransactionCoordinator) and g.topic == TXN_TOPIC:
                found = _coordinator_step(m, e.data)
            elif isinstance(m, PartitionMachine) and g.topic == topic:
                found = _participant_step(m, e.data)
            else:
                continue
            if found is not None:
                kind, txn_id, what = found
                out.append(Boundary(kind, txn_id, f"{what} in g{gid} at {e.index}"))
    return out


def _coordinator_step(m: TransactionCoordinator, data: bytes) -> tuple[str, str, str] | None:
    """The coordinator state an applied command put its transaction in (if it is still in
    it: a later entry of the same round may have moved it on)."""
    try:
        cmd = cbor.decode(data)
    except WireError:
        return None
    if not isinstance(cmd, dict):
        return None
    txn = cmd.get("txn")
    t = m.txns.get(txn) if isinstance(txn, str) else None
    if t is None:
        return None
    op = cmd.get("op")
    state = t.state
    kind = None
    if op == "add" and state == TxnState.ONGOING:
        kind = "c-ongoing"
    elif op == "end" and state == TxnState.PREPARING:
        kind = "c-preparing"
    elif op == "decide" and state == TxnState.PRE_COMMITTED:
        kind = "c-precommitted"
    elif (
        op in ("end", "decide", "init")
        and state == TxnState.ABORTING
        and (op != "init" or t.reason == AbortReason.FENCED)
    ):
        kind = "c-aborting"
    elif op in ("complete", "end") and state == TxnState.EMPTY and t.last_epoch == cmd.get("epoch"):
        kind = "c-complete"
    return None if kind is None else (kind, t.txn_id, f"{op} of {t.txn_id} e{t.epoch}")


def _participant_step(m: PartitionMachine, data: bytes) -> tuple[str, str, str] | None:
    """The participant state an applied command or marker put a transaction in."""
    if is_command(data):
        try:
            cmd = TxnCommand.decode(data)
        except WireError:
            return None
        p = m.ledger.producers.get(cmd.producer_id)
        o = None if p is None else p.open
        if o is None or o.epoch != cmd.epoch:
            return None
        what = f"{cmd.phase.name} of {cmd.txn_id} e{cmd.epoch}"
        wanted = {
            Phase.BEGIN: (TxnPhase.OPEN, "p-begin"),
            Phase.PREPARE: (TxnPhase.PREPARED, "p-prepared"),
            Phase.PRECOMMIT: (TxnPhase.PRE_COMMITTED, "p-precommitted"),
        }.get(cmd.phase)
        if wanted is None or o.phase != wanted[0]:
            return None
        return wanted[1], cmd.txn_id, what
    try:
        h = parse_header(data, check_crc=False)
        if not h.is_control:
            return None
        marker = decode_marker(data)
    except BatchError:
        return None
    p = m.ledger.producers.get(h.producer_id)
    if p is None or p.open is not None or p.closed_epoch != h.producer_epoch:
        return None
    commit = marker.type == MarkerType.COMMIT
    if p.closed_committed != commit:
        return None
    what = f"{'COMMIT' if commit else 'ABORT'} marker of {marker.txn_id} e{h.producer_epoch}"
    return ("p-commit" if commit else "p-abort"), marker.txn_id, what


# --------------------------------------------------------------------------- the driver


class TxnDriver(ClusterDriver):
    """The `txn` profile: boot, transactions under faults, the heal, (d), the checks."""

    def __init__(self, sc: ClusterScenario) -> None:
        self.plan = TxnPlan.draw(sc.seed)
        self.topic = TOPIC
        self.checker = TxnClusterChecker(topic=TOPIC, off=frozenset(CHECKS_OFF))
        super().__init__(
            sc,
            checker=self.checker,
            node_options={
                "internal_topic_partitions": self.plan.internal_partitions,
                "transactions": TxnConfig(precommit_timeout_ms=self.plan.precommit_ms),
            },
        )
        self.checker.clock = lambda: self.world.now
        self.world.after_apply = self._after_apply
        self.instances: list[SimTxnProducer] = []
        self.txn_reader = TxnReader(self)
        self.boundary_left = self.plan.boundary_max
        self.healed_at = -1

    def group_counts(self) -> dict[str, int] | None:
        return self.checker.tstats.counts()

    # -- the run ------------------------------------------------------------------------------

    def run(self) -> None:
        w, sc, plan = self.world, self.sc, self.plan
        w.log(f"txn plan: {plan.describe()}")
        w.at(1, self._client_loop)
        w.at(1, self._fault_loop)
        w.at(1, self._churn_loop)
        w.at(1, self._reference_loop)
        self.sending = True
        for txn_id in plan.txn_ids:
            w.at(1, functools.partial(self._first, txn_id))
        self._until(BOOT_TICKS, self._initialised, "boot: the topic, every producer's id")
        self.faulty = True
        w.run_until(w.now + sc.fault_ticks * 10)
        if w.stats.faults() == 0 and (sc.crash_rate or sc.partition_rate or sc.pause_rate):
            self._crash(self._victim(), why="(forced: no fault yet)")
            w.run_until(w.now + 50 * 10)
        self._quiet()
        self._settle()
        self._until(LIVENESS_TICKS, self._read_all, "the reader reads every partition")
        self._final_checks()

    def _initialised(self) -> bool:
        """The topic exists and every transactional id has a live initialised instance."""
        ready = {i.txn_id for i in self.instances if i.alive and i.state != "init"}
        return self._booted() and ready == set(self.plan.txn_ids)

    def _client_loop(self) -> None:
        w = self.world
        w.at(w.now + CADENCE, self._client_loop)
        self.admin.step()
        for inst in self.instances:
            inst.poke()
        self.txn_reader.step()

    def _reference_loop(self) -> None:
        w = self.world
        w.at(w.now + REFERENCE_EVERY, self._reference_loop)
        self.checker.catch_up(w)

    # -- producer instances -------------------------------------------------------------------

    def _first(self, txn_id: str) -> None:
        self._spawn(txn_id)

    def _spawn(self, txn_id: str) -> SimTxnProducer:
        index = sum(1 for i in self.instances if i.txn_id == txn_id)
        inst = SimTxnProducer(self, txn_id, index)
        if any(i.alive for i in self.instances if i.txn_id == txn_id):
            self.checker.tstats.zombies += 1
            self.world.log(f"{inst.name}: a zombie's successor starts")
        self.instances.append(inst)
        inst.start()
        return inst

    def initialised(self, inst: SimTxnProducer) -> None:
        """`inst` got its InitProducerId answer: every other live instance of its id is a
        zombie from now on (and `inst` is none, even if an instance whose InitProducerId
        was answered earlier had superseded it while its own was on the way)."""
        inst.superseded_at = None
        for other in self.instances:
            same = other is not inst and other.txn_id == inst.txn_id
            if same and other.alive and other.superseded_at is None:
                other.superseded_at = self.world.now
                self.world.log(f"{other.name}: superseded by {inst.name}")

    def instance_dead(self, inst: SimTxnProducer) -> None:
        """A stopped instance is replaced after a while, while faults run (unless a live
        instance of its id remains)."""
        w = self.world
        if not self.sending:
            return

        def replace() -> None:
            if self.sending and not any(i.alive for i in self.instances if i.txn_id == inst.txn_id):
                self._spawn(inst.txn_id)

        w.at(w.now + self.rng.randint(20, 150), replace)

    def zombie(self, inst: SimTxnProducer) -> None:
        """Start a successor of `inst`, which goes on (half the time after a stall, as a
        paused process would, so the successor's InitProducerId lands while it is quiet)."""
        w, rng = self.world, self.rng
        inst.successor_at = ""
        if rng.random() < 0.5:
            inst.stalled_until = w.now + rng.randint(50, 300)
            w.log(f"{inst.name}: stalls until t={inst.stalled_until} ({inst.state})")
            w.at(inst.stalled_until, inst.poke)
        self._spawn(inst.txn_id)

    def may_begin(self, inst: SimTxnProducer) -> bool:
        """New transactions while faults run; after the heal only zombies (to be fenced)
        and an instance to abandon (one more, then it dies with it open) begin."""
        wanted = self.sending or inst.superseded_at is not None or inst.abandon
        return wanted and self.admin.done

    def _current(self, txn_id: str) -> SimTxnProducer | None:
        live = [i for i in self.instances if i.txn_id == txn_id and i.alive]
        fresh = [i for i in live if i.superseded_at is None]
        found = fresh or live
        return found[-1] if found else None

    def _churn_loop(self) -> None:
        w, rng, plan = self.world, self.rng, self.plan
        w.at(w.now + 10, self._churn_loop)
        if not self.sending:
            return
        if plan.zombie_every and rng.random() < 10 / plan.zombie_every:
            inst = self._current(rng.choice(plan.txn_ids))
            if inst is not None and inst.state in ("idle", "open", "ending"):
                pick = rng.random()
                if inst.state == "idle" or pick < 0.4:
                    self.zombie(inst)
                elif pick < 0.7:
                    inst.successor_at = "commit"  # as its EndTxn(commit) leaves
                else:
                    inst.successor_at = "idle"  # once its transaction ended
        if plan.crash_every and rng.random() < 10 / plan.crash_every:
            inst = self._current(rng.choice(plan.txn_ids))
            if inst is not None:
                inst.crash()

    # -- faults: step boundaries, the coordinators' leaders preferred ---------------------------

    def _after_apply(self, bid: int, node: BrokerNode, rnd: Round, early: bool) -> None:
        """The world's `after_apply` hook: at a step boundary, crash the broker (a target
        kind, once per kind) or start a zombie's successor (the coordinator just logged
        PREPARING or PRE_COMMITTED for the transaction of a live instance)."""
        if not self.faulty:
            return
        w, plan, rng = self.world, self.plan, self.rng
        crash = self.boundary_left > 0 and len(w.up()) == len(w.brokers)
        zombie = self.sending and plan.zombie_at_boundary > 0
        if not crash and not zombie:
            return
        counts = self.checker.tstats.boundary_crashes
        for b in boundaries(node, rnd, early, self.topic):
            if zombie and b.kind in ("c-preparing", "c-precommitted"):
                inst = self._current(b.txn_id)
                if (
                    inst is not None
                    and inst.state == "ending"
                    and inst.superseded_at is None
                    and rng.random() < plan.zombie_at_boundary
                ):
                    w.log(f"{inst.name}: a successor starts at {b.kind} ({b.what})")
                    self.checker.tstats.zombies_at_boundary += 1
                    self.zombie(inst)
            if not crash or b.kind not in plan.boundary_kinds or b.kind in counts:
                continue
            if rng.random() >= plan.boundary_rate:
                continue
            self.boundary_left -= 1
            counts[b.kind] = 1
            if not self.cut_active and rng.random() < plan.boundary_cut:
                # Cut off instead: it lives on, believing it leads, until the heal.
                w.isolate(bid)
                w.log(f"fault: isolate b{bid} at a step boundary: {b.kind} ({b.what})")
                self._heal_later(rng.randint(100, 500))
                return
            w.log(f"fault: crash b{bid} at a step boundary: {b.kind} ({b.what})")
            w.crash(bid)
            w.at(w.now + rng.randint(5, 120), lambda: self._restart(bid))
            return

    def _restart(self, bid: int) -> None:
        if self.world.brokers[bid].node is None:
            self.world.restart(bid)

    def _coordinator_leaders(self) -> list[int]:
        leaders = self.world.partition_leaders()
        return sorted({leaders[g] for g in self.checker.txn_groups if g in leaders})

    def _victim(self) -> int:
        if self.rng.random() < 0.5:
            leaders = self._coordinator_leaders()
            if leaders:
                return self.rng.choice(leaders)
        return super()._victim()

    # -- the heal and (d) -------------------------------------------------------------------------

    def _quiet(self) -> None:
        w = self.world
        self._heal()
        self.faulty = False
        self.healed_at = w.now
        if self.plan.abandon_at_heal:
            live = [i for i in self.instances if i.alive and i.superseded_at is None]
            if live:
                inst = self.rng.choice(live)
                inst.abandon = True
                w.log(f"{inst.name}: to crash once a record of its txn is acknowledged")
        w.log("quiet: faults healed, no new transactions but the zombies'")

    def _heal(self) -> None:
        super()._heal()
        self.sending = False

    def _unsettled(self) -> tuple[str, str] | None:
        """(d): (violation kind, why) while the partitions are not all stable, a coordinator
        holds an open transaction or a producer instance is busy; None once settled."""
        if not self._all_led():
            return "txn-lso-stuck", "a partition has no serving leader"
        leaders = self.world.partition_leaders()
        for gid, p in sorted(self.checker.topic_groups.items()):
            node = self.world.brokers[leaders[gid]].node
            assert node is not None
            m = node.groups[gid].machine
            assert isinstance(m, PartitionMachine)
            if m.last_stable_offset != m.high_watermark:
                held = ", ".join(
                    f"pid {pid} e{o.epoch} {o.txn_id} {o.phase.name} from {o.first_offset}"
                    for pid, o in m.ledger.open_txns()
                )
                why = f"{TOPIC}[{p}] LSO {m.last_stable_offset} < HW {m.high_watermark} ({held})"
                return "txn-lso-stuck", why
        for gid in self.checker.txn_groups:
            node = self.world.brokers[leaders[gid]].node if gid in leaders else None
            if node is None:
                return "txn-stuck", f"coordinator group {gid} has no serving leader"
            m = node.groups[gid].machine
            assert isinstance(m, TransactionCoordinator)
            open_ = [f"{t.txn_id} e{t.epoch} {t.state.name}" for t in m.txns.values() if t.open]
            if open_:
                return "txn-stuck", f"coordinator group {gid} still holds {open_}"
        for inst in self.instances:
            if inst.state not in ("idle", "dead"):
                return "liveness", f"{inst.describe()} is busy"
            if inst.alive and (inst.superseded_at is not None or inst.abandon):
                return "liveness", f"{inst.describe()} has yet to be fenced or to crash"
        return None

    def _settle(self) -> None:
        w, plan = self.world, self.plan
        self.checker.discover(w)
        deadline = self.healed_at + plan.timeout_units + LSO_BOUND
        why = self._unsettled()
        while why is not None and w.now < deadline:
            w.run_until(w.now + 10)
            why = self._unsettled()
        if why is not None:
            kind, detail = why
            self.checker.fail(
                kind,
                f"{w.now - self.healed_at} units after the heal (timeout {plan.timeout_units} + "
                f"bound {LSO_BOUND}): {detail}; {self.txn_report()}",
            )
            return
        settled = w.now - self.healed_at
        self.checker.tstats.lso_settle_units = settled
        self.checker.tstats.lso_settled = 1
        w.log(f"settled {settled} units after the heal: every LSO at its high watermark")

    def _read_all(self) -> bool:
        if not self._all_led():
            return False
        leaders = self.world.partition_leaders()
        hws: dict[int, int] = {}
        for gid, p in self.checker.topic_groups.items():
            node = self.world.brokers[leaders[gid]].node
            assert node is not None
            m = node.groups[gid].machine
            assert isinstance(m, PartitionMachine)
            hws[p] = m.high_watermark
        return self.txn_reader.caught_up(hws)

    def _final_checks(self) -> None:
        w, checker = self.world, self.checker
        checker.catch_up(w)
        txns = [t for i in self.instances for t in i.txns]
        still = [t.name() for t in txns if t.outcome == "open"]
        if still:
            raise Violation("liveness", f"transactions still open at the end: {still[:4]}")
        checker.check_outcomes(txns, self.txn_reader.reads)
        checker.check_replicas(w)
        checker.check_metadata(w)
        for b in w.brokers.values():
            if b.node is not None:
                checker.tstats.self_commits += b.node.txn_participants.self_commits
        w.log(f"checked: {checker.tstats.counts()}")

    # -- reports --------------------------------------------------------------------------------

    def txn_report(self) -> str:
        parts = [i.describe() for i in self.instances if i.alive or i.superseded_at is not None]
        leaders = self.world.partition_leaders()
        for gid in self.checker.txn_groups:
            node = self.world.brokers[leaders[gid]].node if gid in leaders else None
            if node is None:
                parts.append(f"coordinator g{gid}: no leader")
                continue
            m = node.groups[gid].machine
            assert isinstance(m, TransactionCoordinator)
            open_ = [f"{t.txn_id} e{t.epoch} {t.state.name}" for t in m.txns.values() if t.open]
            parts.append(f"coordinator g{gid}@b{leaders[gid]}: {open_ or 'nothing open'}")
        return "; ".join(parts)

    def report(self) -> str:
        return f"{super().report()}; {self.txn_report()}"
