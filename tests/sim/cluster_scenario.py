"""One (seed, profile) -> one run of a whole simulated cluster, then the checks.

Boot: N brokers (3-5; the first three are the seed controllers) start with empty disks and
must form the cluster; an admin creates a topic (RF 3, 2-4 partitions) on the controller.
Without faults this must finish within BOOT_TICKS; a quarter of the faulty seeds run their
faults from the start instead (bootstrap, registration and topic creation under faults).
Producers obtain their ids with their first records, as the client library does.

Faulty phase: producers send records, a reader polls every partition and the admin probes
InitProducerId while the profile's faults run: crashes and restarts of random brokers (the
controller and partition leaders preferred; some right after a round started, its write not
yet durable; some right after an election), power loss (every broker at once), partitions (a
broker cut off, the cluster split in two, one-way cuts, a new leader cut off), pauses, frame
loss, delay and reordering.

Every profile's brokers pipeline their rounds (ClusterWorld): 2, 3 or 4 in flight (the
driver's PIPELINE_DEPTH is 4; `--pipeline-depth 1` runs the unpipelined driver), drawn per
seed after everything else; and a quarter, half or three quarters of the single-broker
crashes are process kills (a prefix of the writes not yet durable survives), the others power
losses (none does). `wipe` adds restarts with a wiped disk (a new incarnation), only while
every group's members are at their brokers' current incarnations (losing a second disk before
the first is replaced would lose data by definition).

Snapshots: every profile but `quiet` draws small thresholds for most seeds (a run's metadata
log holds only some 10-40 entries): a metadata snapshot every 2 or 5 entries (with 0-4
entries kept behind it), partition retention of 4 or 12 entries per replica, snapshot
chunks of 64 B to 1 MiB. A broker that is down or cut
off while the others compact past it comes back through InstallSnapshot; the reader may find
records deleted before it got to them (it moves to the log start offset).

Quiescence (`--profile quiesce`): the brokers run with `NodeConfig.quiesce` (in a quarter of
the seeds one of them without it: a mixed-version cluster, whose groups with a replica there
never quiesce), their links carry keepalives (ClusterWorld), and the producers alternate
load and idle phases so that groups quiesce. In an idle phase a fault may hit the broker
leading quiesced groups: a crash, a pause (SIGSTOP) or a cut from every other broker, both
ways or only its outgoing frames (the pause and the one-way cut leave the connections up:
only the keepalive's silence bound notices them). When the rest of the cluster is up and
whole, every partition that broker led must then be served by another broker in a newer term
within FAILOVER_UNITS (else "liveness"); other faults wait until then.

Healing: every fault ends (brokers restarted, network whole, no loss) and producers stop
adding records. Within BOOT_TICKS + LIVENESS_TICKS every producer must have resolved every
batch and every partition must have a serving leader; within LIVENESS_TICKS more the reader
must have read every partition up to its high watermark, every replica and every broker's
metadata must have caught up and every broker must be ready. Then the final checks
(`ClusterChecker.final_checks`).
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass

from broker.core.ids import node_of
from broker.core.node import BrokerNode
from broker.core.raft import ConfState
from tests.sim.checker import Violation
from tests.sim.cluster_checker import ClusterChecker
from tests.sim.cluster_clients import SimAdmin, SimProducer, SimReader
from tests.sim.cluster_world import ClusterStats, ClusterWorld, NetOptions

TOPIC = "t"
BOOT_TICKS = 400
LIVENESS_TICKS = 600
PROFILES = ("quiet", "crash", "partition", "network", "mixed")
"""The profiles `make test` cycles through (seed % len)."""
EXTRA_PROFILES = ("wipe", "groups", "txn", "quiesce", "reassign")
"""Opt-in: wiped-disk restarts (`--profile wipe`; test_cluster_sim.WIPE_SEEDS in `make test`,
WIPE=0 switches them off in `make sim-cluster`); consumer groups (`--profile groups`: members,
churn and the group checkers of tests/sim/cluster_groups.py; test_group_sim.py in `make
test`); transactions (`--profile txn`: transactional producers, zombies, a read_committed
reader, crashes at the protocol's step boundaries and the checkers of tests/sim/cluster_txn.py;
test_txn_sim.py in `make test`); quiescence (`--profile quiesce`, see above; QUIESCE_SEEDS of
test_cluster_sim.py in `make test`); partition reassignment (`--profile reassign`: REBALANCE
requests, drains, excludes and cancels under faults, and the membership checkers of
tests/sim/cluster_reassign.py; test_reassign_sim.py in `make test`)."""
ALL_PROFILES = PROFILES + EXTRA_PROFILES
FAILOVER_UNITS = 120 + 7 * 60
"""The quiesce profile: a broker leading quiesced groups lost (crashed, stopped or cut off),
every partition it led is served elsewhere in a newer term within the keepalive window (120
units) plus 7 election timeouts (60 units each). Measured over seeds 0-999 (2,251 such
failovers): median 120 units, p99 270, max 380 (seeds 197, 607); with the bound at 480, max
400 (seed 518, 2,282 failovers). The bound is 400 plus 25 %, rounded up to an election
timeout."""


def profile_for(seed: int) -> str:
    return PROFILES[seed % len(PROFILES)]


@dataclass
class ClusterScenario:
    seed: int
    profile: str
    brokers: int
    partitions: int
    producers: int
    skew: int
    latency_max: int
    disk_latency_max: int
    fault_ticks: int
    send_rate: float
    crash_rate: float = 0.0
    crash_mid_round: float = 0.0
    kill_new_leader: float = 0.0
    power_loss: float = 0.0
    """Per fault tick: every broker crashes at once (rounds in flight lost), all restart."""
    partition_rate: float = 0.0
    pause_rate: float = 0.0
    early_faults: bool = False
    """Faults from the start: bootstrap, registration and topic creation run under them."""
    catchup_bytes_per_tick: int = 0
    probe_every: int = 0
    """Units between InitProducerId probes (new ids must never repeat); 0: none."""
    drop: float = 0.0
    duplicate: float = 0.0
    """Per peer frame: delivered twice (a resent frame after a reconnect, or a buggy peer)."""
    reorder: float = 0.0
    wipe_share: float = 0.0
    max_down: int = 1
    dial_rule: str = "runtime"
    """Who dials whom on the peer network (see ClusterWorld._dials)."""
    metadata_snapshot_entries: int = 10_000
    snapshot_catchup_entries: int = 5_000
    retention_entries: int = 0
    snapshot_chunk_bytes: int = 1 << 20
    pipeline_depth: int = 2
    """Rounds each broker's driver keeps in flight (ClusterWorld: 1 is the unpipelined
    driver)."""
    kill_share: float = 0.5
    """Share of the single-broker crashes that are process kills (a prefix of the writes
    in flight survives); the others, and every power loss, lose every write in flight."""
    pipeline_forced: bool = False
    """`pipeline_depth` was set by `--pipeline-depth`, not drawn."""
    quiesce_off: int = -1
    """The quiesce profile: the broker running without quiescence (-1: none)."""
    load_ticks: tuple[int, int] = (0, 0)
    idle_ticks: tuple[int, int] = (0, 0)
    """The quiesce profile: producers alternate load and idle phases of these many ticks."""
    idle_fault: float = 0.0
    """The quiesce profile: per idle phase, the chance a fault hits a leader of quiesced
    groups once they had time to quiesce."""

    @classmethod
    def draw(cls, seed: int, profile: str) -> ClusterScenario:
        if profile not in ALL_PROFILES:
            raise ValueError(f"unknown profile {profile!r} (known: {', '.join(ALL_PROFILES)})")
        r = random.Random(seed * 1_000_003 + ALL_PROFILES.index(profile))
        sc = cls(
            seed=seed,
            profile=profile,
            brokers=r.choice([3, 3, 4, 5]),
            partitions=r.choice([2, 3, 4]),
            producers=r.choice([1, 2, 3]),
            skew=r.choice([0, 1, 3]),
            latency_max=r.choice([2, 4, 8]),
            disk_latency_max=r.choice([1, 3, 6]),
            fault_ticks=r.randint(150, 260),
            send_rate=r.choice([0.2, 0.4, 0.7]),
            catchup_bytes_per_tick=r.choice([0, 0, 300, 3000]),
            probe_every=r.choice([50, 100, 300]),
        )
        if profile in ("crash", "mixed", "wipe"):
            sc.crash_rate = r.choice([0.01, 0.02, 0.04])
            sc.crash_mid_round = r.choice([0.0, 0.002, 0.01])
            sc.kill_new_leader = r.choice([0.0, 0.0, 0.1, 0.3])
            sc.power_loss = r.choice([0.0, 0.0, 0.002, 0.005])
        if profile in ("partition", "mixed", "wipe"):
            sc.partition_rate = r.choice([0.01, 0.02, 0.04])
            sc.pause_rate = r.choice([0.0, 0.01, 0.02])
        if profile != "quiet":
            sc.early_faults = r.random() < 0.25
        if profile in ("network", "mixed"):
            sc.drop = r.choice([0.01, 0.05, 0.15])
            sc.reorder = r.choice([0.0, 0.02, 0.1])
            sc.latency_max = r.choice([4, 8, 16])
        if profile == "wipe":
            sc.wipe_share = 0.5
        if sc.brokers == 5:
            sc.max_down = r.choice([1, 2])
        if profile != "quiet":
            sc.metadata_snapshot_entries = r.choice([10_000, 2, 5])
            sc.snapshot_catchup_entries = r.choice([0, 1, 4])
            sc.retention_entries = r.choice([0, 4, 12])
            sc.snapshot_chunk_bytes = r.choice([64, 512, 1 << 20])
        if profile in ("network", "mixed"):
            sc.duplicate = r.choice([0.0, 0.02, 0.05])
        if profile == "groups":
            sc._draw_groups(r)
        if profile == "txn":
            sc._draw_txn(r)
        if profile == "quiesce":
            sc._draw_quiesce(r)
        if profile == "reassign":
            sc._draw_reassign(r)
        # Drawn last, so everything above is what it was before the pipelined driver.
        sc.pipeline_depth = r.choice([2, 3, 4])
        sc.kill_share = r.choice([0.25, 0.5, 0.75])
        return sc

    def _draw_groups(self, r: random.Random) -> None:
        """The `groups` profile (tests/sim/cluster_groups.py): three brokers, a topic of 6-12
        partitions and no producers (members only advance positions); broker crashes (the
        coordinator's leader preferred), partitions, pauses, frame loss, duplication and
        reordering, each switched on or off per seed. Drawn after everything else, so the
        other profiles draw exactly what they drew before."""
        self.brokers = 3
        self.partitions = r.randint(6, 12)
        self.producers = 0
        self.skew = r.choice([0, 1])
        self.fault_ticks = r.randint(120, 200)
        self.early_faults = False
        self.crash_rate = r.choice([0.0, 0.01, 0.02, 0.03])
        self.crash_mid_round = r.choice([0.0, 0.005])
        self.kill_new_leader = r.choice([0.0, 0.0, 0.1])
        self.power_loss = r.choice([0.0, 0.0, 0.0, 0.003])
        self.partition_rate = r.choice([0.0, 0.01, 0.02])
        self.pause_rate = r.choice([0.0, 0.01])
        self.drop = r.choice([0.0, 0.01, 0.05])
        self.duplicate = r.choice([0.0, 0.02])
        self.reorder = r.choice([0.0, 0.02])
        self.latency_max = r.choice([2, 4, 8])

    def _draw_txn(self, r: random.Random) -> None:
        """The `txn` profile (tests/sim/cluster_txn.py): three brokers, a topic of 3-6
        partitions (RF 3) and no idempotent producers (the profile runs its own transactional
        ones); broker crashes (the coordinator's leader preferred, and at the protocol's step
        boundaries), partitions, pauses, power loss, frame loss, duplication and reordering,
        each switched on or off per seed; no retention (the reader must read every record).
        Drawn after everything else, so the other profiles draw exactly what they drew
        before."""
        self.brokers = 3
        self.partitions = r.randint(3, 6)
        self.producers = 0
        self.skew = r.choice([0, 1])
        self.fault_ticks = r.randint(50, 90)
        self.early_faults = False
        self.crash_rate = r.choice([0.0, 0.01, 0.02])
        self.crash_mid_round = r.choice([0.0, 0.005])
        self.kill_new_leader = r.choice([0.0, 0.0, 0.1])
        self.power_loss = r.choice([0.0, 0.0, 0.0, 0.003])
        self.partition_rate = r.choice([0.0, 0.01, 0.02])
        self.pause_rate = r.choice([0.0, 0.01])
        self.drop = r.choice([0.0, 0.01, 0.05])
        self.duplicate = r.choice([0.0, 0.02, 0.05])
        self.reorder = r.choice([0.0, 0.02, 0.1])
        self.latency_max = r.choice([2, 4, 8])
        self.retention_entries = 0
        self.probe_every = 0

    def _draw_quiesce(self, r: random.Random) -> None:
        """The `quiesce` profile (see the module doc): more partitions to quiesce, long idle
        phases, few random faults besides the ones aimed at quiesced leaders, a little frame
        loss and reordering; a mixed-version cluster in a quarter of the seeds. Drawn after
        everything else, so the other profiles draw exactly what they drew before."""
        self.partitions = r.randint(3, 8)
        self.producers = r.choice([1, 2])
        self.fault_ticks = r.randint(300, 500)
        self.early_faults = False
        self.crash_rate = r.choice([0.0, 0.005, 0.01])
        self.crash_mid_round = r.choice([0.0, 0.002])
        self.kill_new_leader = r.choice([0.0, 0.0, 0.1])
        self.power_loss = 0.0
        self.partition_rate = r.choice([0.0, 0.005, 0.01])
        self.pause_rate = r.choice([0.0, 0.005])
        self.drop = r.choice([0.0, 0.0, 0.01, 0.03])
        self.reorder = r.choice([0.0, 0.0, 0.02])
        self.duplicate = 0.0
        self.load_ticks = (5, r.choice([15, 40]))
        self.idle_ticks = (30, r.choice([60, 120]))
        self.idle_fault = r.choice([0.4, 0.7, 1.0])
        if r.random() < 0.25:
            self.quiesce_off = r.randrange(self.brokers)

    def _draw_reassign(self, r: random.Random) -> None:
        """The `reassign` profile (tests/sim/cluster_reassign.py): four or five brokers (the
        three seeds and one or two joiners), a topic of 3-6 partitions (RF 3) and one or two
        producers; crashes (the controller and leaders of moving partitions preferred, some
        mid-round, some of new leaders), power loss, partitions, pauses, a little frame loss
        and reordering, each switched on or off per seed (crashes always on). Drawn after
        everything else, so the other profiles draw exactly what they drew before."""
        self.brokers = r.choice([4, 5])
        self.partitions = r.randint(3, 6)
        self.producers = r.choice([1, 2])
        self.fault_ticks = r.randint(200, 320)
        self.early_faults = False
        self.crash_rate = r.choice([0.005, 0.01, 0.02])
        self.crash_mid_round = r.choice([0.0, 0.002, 0.005])
        self.kill_new_leader = r.choice([0.0, 0.0, 0.1])
        self.power_loss = r.choice([0.0, 0.0, 0.0, 0.002])
        self.partition_rate = r.choice([0.0, 0.01, 0.02])
        self.pause_rate = r.choice([0.0, 0.01])
        self.drop = r.choice([0.0, 0.0, 0.01, 0.03])
        self.reorder = r.choice([0.0, 0.0, 0.02])
        self.duplicate = 0.0
        self.max_down = 1 if self.brokers == 4 else r.choice([1, 2])

    def node_options(self) -> dict[str, object]:
        """NodeConfig fields the scenario sets."""
        return {
            "catchup_bytes_per_tick": self.catchup_bytes_per_tick,
            "metadata_snapshot_entries": self.metadata_snapshot_entries,
            "snapshot_catchup_entries": self.snapshot_catchup_entries,
            "partition_retention_entries": self.retention_entries,
            "max_snapshot_chunk_bytes": self.snapshot_chunk_bytes,
        }

    def describe(self) -> str:
        return " ".join(f"{k}={v}" for k, v in asdict(self).items())


class ClusterDriver:
    """Clients and faults of one scenario over a ClusterWorld."""

    def __init__(
        self,
        sc: ClusterScenario,
        *,
        checker: ClusterChecker | None = None,
        node_options: dict[str, object] | None = None,
    ) -> None:
        """`checker` and `node_options` (added to the scenario's) are the groups and txn
        profiles'."""
        self.sc = sc
        rng = random.Random(sc.seed * 7919 + 17)
        units = [10 + (rng.randint(-sc.skew, sc.skew) if sc.skew else 0) for _ in range(sc.brokers)]
        self.world = ClusterWorld(
            rng,
            sc.brokers,
            min(3, sc.brokers),
            net=NetOptions(
                latency_min=1,
                latency_max=sc.latency_max,
                drop=sc.drop,
                duplicate=sc.duplicate,
                reorder=sc.reorder,
                reorder_max=4 * sc.latency_max + 20,
                dial_rule=sc.dial_rule,
            ),
            tick_units=units,
            disk_latency=(1, sc.disk_latency_max),
            pipeline_depth=sc.pipeline_depth,
            kill_share=sc.kill_share,
            node_options={**sc.node_options(), **(node_options or {})},
            seed_label=f"s{sc.seed}",
            checker=checker,
            quiesce=(
                frozenset(i for i in range(sc.brokers) if i != sc.quiesce_off)
                if sc.profile == "quiesce"
                else frozenset()
            ),
        )
        self.rng = rng
        self.world.after_round_start = self._after_round_start
        timeout = 300  # units: 1.5 s
        self.admin = SimAdmin(self.world, TOPIC, sc.partitions, 3, timeout)
        self.admin.probe_every = sc.probe_every
        self.producers = [
            SimProducer(self.world, i, TOPIC, timeout, delivery_timeout_units=1500)
            for i in range(sc.producers)
        ]
        self.reader = SimReader(self.world, TOPIC, timeout)
        self.faulty = False
        self.sending = False
        self.cut_active = False
        self.idle = False
        self.phase_left = 0
        self.hit_at = -1
        """The quiesce profile: ticks into this idle phase at which a leader is hit."""
        self.watch: tuple[int, dict[int, int], int, int] | None = None
        """The quiesce profile: (broker lost, {group it led: its term}, when, deadline)."""

    # -- clients ------------------------------------------------------------------------------

    def _client_loop(self) -> None:
        w = self.world
        w.at(w.now + 5, self._client_loop)
        self.admin.step()
        if not self.admin.done:
            return
        for p in self.producers:
            if self.sending and not self.idle and self.rng.random() < self.sc.send_rate:
                p.send(self.rng.randint(1, 3))
            p.step()
        self.reader.step()

    # -- faults -------------------------------------------------------------------------------

    def _after_round_start(self, bid: int, elected: list[int]) -> None:
        if not self.faulty or self.watch is not None:
            return
        sc, rng, w = self.sc, self.rng, self.world
        if sc.crash_mid_round and rng.random() < sc.crash_mid_round:
            self._crash(bid, why="mid-round")
            return
        if elected and sc.kill_new_leader and rng.random() < sc.kill_new_leader:
            # Leader churn: the new leader of some group dies or is cut off right away, its
            # no-op and first entries reaching some followers or none (Figure 8 material).
            if rng.random() < 0.5 or not sc.partition_rate:
                when = w.now + rng.randint(0, 10)
                w.at(when, lambda: self._crash(bid, why=f"new leader of groups {elected}"))
            elif not self.cut_active:
                others = [i for i in sorted(w.brokers) if i != bid]
                cut = rng.sample(others, rng.randint(1, len(others)))
                for o in cut:
                    w.cut(bid, o)
                w.log(f"fault: new leader b{bid} of groups {elected} cut from {cut}")
                self._heal_later(rng.randint(20, 200))

    def _fault_loop(self) -> None:
        w = self.world
        w.at(w.now + 10, self._fault_loop)
        if not self.faulty or self.watch is not None:
            return
        sc, rng = self.sc, self.rng
        if sc.crash_rate and rng.random() < sc.crash_rate:
            self._crash(self._victim())
        if sc.power_loss and rng.random() < sc.power_loss:
            self._power_loss()
        if sc.partition_rate and not self.cut_active and rng.random() < sc.partition_rate:
            self._partition()
        if sc.pause_rate and rng.random() < sc.pause_rate:
            victim = self._victim()
            et = 6
            ticks = rng.randint(3, 40) if rng.random() < 0.5 else rng.randint(2 * et, 5 * et)
            self.world.pause(victim, ticks * 10)

    def _power_loss(self) -> None:
        """Every broker dies at the same instant; they come back one by one."""
        w, rng = self.world, self.rng
        w.log("fault: power loss, every broker crashes")
        for bid in sorted(w.brokers):
            w.crash(bid, power_loss=True)
        for bid in sorted(w.brokers):
            w.at(w.now + rng.randint(5, 200), functools.partial(w.restart, bid))

    def _victim(self) -> int:
        """Mostly the controller or a partition leader: failover is what is interesting."""
        w, rng = self.world, self.rng
        pick = rng.random()
        if pick < 0.35:
            c = w.controller()
            if c is not None:
                return c
        elif pick < 0.75:
            leaders = sorted(set(w.partition_leaders().values()))
            if leaders:
                return rng.choice(leaders)
        return rng.choice(sorted(w.brokers))

    def _crash(self, bid: int, why: str = "") -> None:
        w, rng = self.world, self.rng
        if not self.faulty or self.watch is not None or w.brokers[bid].node is None:
            return
        if len(w.brokers) - len(w.up()) >= self.sc.max_down:
            return
        if why:
            w.log(f"fault: crash b{bid} {why}")
        w.crash(bid)
        delay = rng.randint(0, 10) if rng.random() < 0.4 else rng.randint(20, 400)
        wipe = self.sc.wipe_share and rng.random() < self.sc.wipe_share and self._may_wipe(bid)

        def restart() -> None:
            if w.brokers[bid].node is None:
                w.restart(bid, wipe=bool(wipe) and self.faulty)

        w.at(w.now + delay, restart)

    def _may_wipe(self, bid: int) -> bool:
        """Losing a disk is survivable only while the other replicas hold everything: no
        wipe while a broker is down or an earlier wiped broker's old incarnation is still a
        member of some group (its replacement is not finished). Membership is read from
        every broker's memory and disk: a broker that has just restarted has not opened its
        groups yet, and a wiped one has not learned them."""
        w = self.world
        if len(w.up()) < len(w.brokers) - 1:
            return False
        current = {i: b.disk.incarnation for i, b in w.brokers.items()}
        confs: list[ConfState] = []
        for b in w.brokers.values():
            if b.node is not None:
                confs.extend(g.raft.conf for g in b.node.groups.values())
            for st in b.disk.store.logs.values():
                confs.extend(conf for _, conf in st.initial_state().confs)
        return not any(
            isinstance(m, tuple) and current.get(m[0]) != m[1]
            for conf in confs
            for m in conf.members()
        )

    def _partition(self) -> None:
        w, rng = self.world, self.rng
        ids = sorted(w.brokers)
        kind = rng.randrange(3)
        if kind == 0:
            c = w.controller()
            victim = c if c is not None and rng.random() < 0.5 else rng.choice(ids)
            w.isolate(victim)
            w.log(f"fault: isolate b{victim}")
        elif kind == 1:
            side = set(rng.sample(ids, rng.randint(1, len(ids) // 2)))
            for a in side:
                for b in ids:
                    if b not in side:
                        w.cut(a, b)
            w.log(f"fault: split {sorted(side)} | {sorted(set(ids) - side)}")
        else:
            cuts = []
            for _ in range(rng.randint(1, 3)):
                a, b = rng.sample(ids, 2)
                w.cut(a, b, one_way=True)
                cuts.append(f"{a}->{b}")
            w.log(f"fault: one-way cuts {', '.join(cuts)}")
        self._heal_later(rng.randint(30, 400))

    def _heal_later(self, units: int) -> None:
        w = self.world
        w.stats.partitions += 1
        self.cut_active = True

        def heal() -> None:
            self.cut_active = False
            w.heal()
            w.log("fault: network healed")

        w.at(w.now + units, heal)

    # -- quiescence ---------------------------------------------------------------------------

    def _phase_loop(self) -> None:
        """The quiesce profile, every tick: load and idle phases; in an idle phase, a fault
        aimed at a broker leading quiesced groups; a failover under watch checked."""
        w, sc, rng = self.world, self.sc, self.rng
        w.at(w.now + 10, self._phase_loop)
        for b in w.brokers.values():
            if b.node is not None:
                w.stats.quiesced += b.node.host.quiesced_count
                if sc.quiesce_off >= 0:
                    self._check_gate(b.id, b.node)
        if self.watch is not None:
            self._check_failover()
        if not self.faulty:
            self.idle = False
            return
        self.phase_left -= 1
        if self.phase_left <= 0:
            self.idle = not self.idle
            span = sc.idle_ticks if self.idle else sc.load_ticks
            self.phase_left = rng.randint(*span)
            self.hit_at = -1
            if self.idle and rng.random() < sc.idle_fault:
                self.hit_at = self.phase_left - rng.randint(20, max(20, self.phase_left))
        elif self.idle and self.phase_left == self.hit_at:
            self._hit_quiesced_leader()

    def _check_gate(self, bid: int, node: BrokerNode) -> None:
        """A mixed-version cluster: no group with a replica on the broker that does not
        quiesce (whose hello lacks the feature) is ever quiesced."""
        off = self.sc.quiesce_off
        for gid, g in node.groups.items():
            if g.raft.quiesced and any(node_of(m) == off for m in g.raft.conf.members()):
                raise Violation(
                    "quiesce-gate",
                    f"b{bid}: group {gid} quiesced with a replica on b{off}, which does not "
                    "quiesce",
                )

    def _hit_quiesced_leader(self) -> None:
        w, rng = self.world, self.rng
        if self.watch is not None or self.cut_active or w.blocked:
            return
        leading: dict[int, dict[int, int]] = {}
        quiesced: set[int] = set()
        for bid, b in w.brokers.items():
            node = b.node
            if node is None or b.paused_until > w.now:
                return  # the rest of the cluster must be up for the watch
            for gid, g in node.groups.items():
                if gid and g.serving():
                    leading.setdefault(bid, {})[gid] = g.raft.term
                    if g.raft.quiesced:
                        quiesced.add(bid)
        if not quiesced:
            return
        victim = rng.choice(sorted(quiesced))
        w.stats.quiesced_hits += 1
        others = [i for i in sorted(w.brokers) if i != victim]
        kind = rng.randrange(4)
        self.watch = (victim, leading[victim], w.now, w.now + FAILOVER_UNITS)
        if kind == 0:
            w.log(f"fault: crash b{victim}, leading quiesced groups")
            w.crash(victim)
        elif kind == 1:
            w.log(f"fault: pause b{victim}, leading quiesced groups")
            w.pause(victim, FAILOVER_UNITS + 200)
        elif kind == 2:
            w.log(f"fault: cut b{victim} off, leading quiesced groups")
            for o in others:
                w.cut(victim, o)
            w.stats.partitions += 1
        else:
            w.log(f"fault: b{victim}'s frames blackholed, leading quiesced groups")
            for o in others:
                w.cut(victim, o, one_way=True)
            w.stats.partitions += 1

    def _check_failover(self) -> None:
        w = self.world
        assert self.watch is not None
        victim, led, hit_at, deadline = self.watch
        served = w.partition_leaders()
        terms = {}
        for gid, bid in served.items():
            node = w.brokers[bid].node
            if node is not None and gid in node.groups:
                terms[gid] = node.groups[gid].raft.term
        if all(served.get(g, victim) != victim and terms[g] > t for g, t in led.items()):
            w.stats.failovers += 1
            w.stats.failover_units += w.now - hit_at
            w.log(f"failover from b{victim} done in {w.now - hit_at} units")
            self.watch = None
            if w.brokers[victim].node is None:
                w.restart(victim)
            w.heal()
            return
        if w.now >= deadline:
            missing = sorted(g for g, t in led.items() if served.get(g, victim) == victim)
            raise Violation(
                "liveness",
                f"b{victim} (leading quiesced groups) lost at t={hit_at}: groups {missing} of "
                f"{sorted(led)} not served elsewhere in a newer term by t={w.now}; "
                f"{self.report()}",
            )

    # -- the run ------------------------------------------------------------------------------

    def run(self) -> None:
        w, sc = self.world, self.sc
        w.at(1, self._client_loop)
        w.at(1, self._fault_loop)
        if sc.profile == "quiesce":
            w.at(1, self._phase_loop)
        if sc.early_faults:
            w.log("faults from the start")
        else:
            self._until(BOOT_TICKS, self._booted, "boot")
            w.log("booted: topic created")
        self.faulty = True
        self.sending = True
        w.run_until(w.now + sc.fault_ticks * 10)
        if w.stats.faults() == 0 and (sc.crash_rate or sc.partition_rate or sc.pause_rate):
            self._crash(self._victim(), why="(forced: no fault yet)")
            w.run_until(w.now + 50 * 10)
        self._heal()
        self._until(BOOT_TICKS + LIVENESS_TICKS, self._settled, "producers settle, partitions lead")
        self._until(LIVENESS_TICKS, self._converged, "reads and replicas converge")
        for p in self.producers:
            for _, _, tp, offset, value in sorted(p.acked):
                w.checker.history.ack(tp, offset, value, producer=p.index)
        w.checker.final_checks(w, TOPIC)

    def _booted(self) -> bool:
        return self.admin.done

    def _heal(self) -> None:
        w = self.world
        self.faulty = False
        self.sending = False
        w.heal()
        w.net.drop = 0.0
        w.net.reorder = 0.0
        for bid in sorted(w.brokers):
            if w.brokers[bid].node is None:
                w.restart(bid)
        w.log("healed: every broker up, network whole, producers stop adding records")

    def _until(self, ticks: int, done: Callable[[], bool], what: str) -> None:
        w = self.world
        deadline = w.now + ticks * 10
        while w.now < deadline:
            w.run_until(w.now + 50)
            if done():
                return
        raise Violation("liveness", f"{what}: not within {ticks} ticks; {self.report()}")

    def _settled(self) -> bool:
        if not self._booted() or any(p.pending() or p.fatal for p in self.producers):
            return False
        return self._all_led()

    def _all_led(self) -> bool:
        w = self.world
        if w.controller() is None:
            return False
        leaders = w.partition_leaders()
        b = w.brokers[w.controller() or 0].node
        assert b is not None
        topic = b.meta.topics.get(TOPIC)
        return topic is not None and all(pi.group_id in leaders for pi in topic.partitions)

    def _converged(self) -> bool:
        w = self.world
        if not self._all_led():
            return False
        c = w.controller()
        assert c is not None
        cnode = w.brokers[c].node
        assert cnode is not None
        mcommit = cnode.metadata_group.raft.commit_index  # type: ignore[union-attr]
        for b in w.brokers.values():
            if b.node is None or b.node.meta.applied_index < mcommit or not b.node.is_ready():
                return False
        hws = {}
        leaders = w.partition_leaders()
        topic = cnode.meta.topics[TOPIC]
        for pi in topic.partitions:
            lnode = w.brokers[leaders[pi.group_id]].node
            assert lnode is not None
            lg = lnode.groups[pi.group_id]
            commit = lg.raft.commit_index
            for r in pi.replicas:
                node = w.brokers[r].node
                g = node.groups.get(pi.group_id) if node is not None else None
                if g is None or g.raft.log.applied < commit:
                    return False
            assert lg.machine is not None
            hws[(TOPIC, pi.partition)] = lg.machine.high_watermark
        return self.reader.caught_up(hws)

    def group_counts(self) -> dict[str, int] | None:
        """The groups or txn profile's counts (None: neither in this scenario)."""
        return None

    def report(self) -> str:
        w = self.world
        parts = [f"controller={w.controller()}", f"leaders={w.partition_leaders()}"]
        for p in self.producers:
            seq = p.core.sequences
            parts.append(
                f"{p.name}: pending={p.pending()} acked={len(p.acked)} failed={p.failed} "
                f"state={seq.state.value if seq else None} fatal={p.fatal}"
            )
        for bid, b in w.brokers.items():
            node = b.node
            if node is None:
                parts.append(f"b{bid}: down")
                continue
            groups = " ".join(
                f"g{gid}:{g.raft.role.name[0]}t{g.raft.term}c{g.raft.commit_index}"
                f"a{g.raft.log.applied}"
                for gid, g in sorted(node.groups.items())
            )
            parts.append(f"b{bid}: meta@{node.meta.applied_index} {groups}")
        return "; ".join(parts)


@dataclass
class ClusterResult:
    seed: int
    profile: str
    stats: ClusterStats
    acked: int
    read: int
    elections: int
    violation: Violation | None
    scenario: ClusterScenario
    trace: list[str]
    groups: dict[str, int] | None = None
    """The groups profile's counts (joins, leaves, crashes, stalls, commits, ...), or the
    txn profile's (transactions begun, committed, aborted, zombies, step-boundary crashes,
    ...), or the reassign profile's (requests, moves, cancels, configuration changes, ...)."""

    def repro(self, mutation: str | None = None) -> str:
        cmd = f"python -m tests.sim.cluster_run --seed {self.seed} --profile {self.profile}"
        if self.scenario.dial_rule != "runtime":
            cmd += f" --dial-rule {self.scenario.dial_rule}"
        if self.scenario.pipeline_forced:
            cmd += f" --pipeline-depth {self.scenario.pipeline_depth}"
        return cmd + (f" --mutation {mutation}" if mutation else "")
