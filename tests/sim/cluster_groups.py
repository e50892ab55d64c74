"""Consumer groups in the cluster simulator (`--profile groups`): simulated members over the
client library's pure member core, the profile's driver, and the group checkers.

Members (`SimMember`) are thin drivers over `consumers.core.group_member.GroupMember`, doing
what the Trio shell (`consumers.group.GroupSession`) does with it, over the world's client
connections (time: the world's, in seconds): FIND_COORDINATOR to a broker drawn among those
not known unreachable, then GROUP_HEARTBEAT, OFFSET_COMMIT and OFFSET_FETCH to the coordinator
(forgotten on NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE, a broken connection or a timeout).
One heartbeat in flight at a time; the member treats its partitions as lost when the core
says so (2/3 of the session timeout after the send of the last answered heartbeat: a poke is
scheduled at that instant); steps one at a time (REVOKE: commit the revoked partitions'
positions, then release; ASSIGN: OFFSET_FETCH, then read from the committed offset, 0 when
none); commits one at a time, in order, each retried until its deadline (a revocation goes on
when its commit fails, as the shell's does); auto-commit every `commit_every` units. A member
"reads" by advancing a position per active partition (no records: the topic exists only for
its partition count).

One deliberate difference from the shell: a partition the member released or lost leaves
every commit job still queued or being retried (what was read of it is no longer this
member's to commit). The shell's commit worker keeps it and sends it once the member has
rejoined, with its new epoch, which the checkers catch (the `stale-commit-queue` mutation
restores that behaviour).

Churn: members join (each with its own member id and session timeout), leave cleanly (commit,
then the leave heartbeat), crash (stop at once: no leave, no commit) and stall (send nothing
for 0.4-2.5 session timeouts while still reading: the 2/3 rule must stop them, and they come
back fenced or expired and rejoin). A member also sends, now and then, a late commit of
partitions it has just released (once the coordinator answered a heartbeat reporting the
release): a zombie the coordinator must refuse.

Checkers (`GroupClusterChecker`, the world's checker for this profile):
(a) `group-two-owners`: no two members own a partition at the same moment, ownership taken from
    each member's own view (from the moment it applies an answer assigning the partition until
    it released it, lost it, left or crashed), in simulated time.
(b) `group-unstable`: at the end of the quiet period (faults healed, no churn) every partition
    has exactly one owner among the live members, each owning what the coordinator says it
    holds, and the coordinator's group is "stable" with exactly the live members.
(c) `group-moves`: at each new group epoch, the partitions that leave a member staying in the
    group number at most `assignors.minimum_moves` of the holdings the assignor was given
    (checked on a reference coordinator replaying the committed log).
(d) `group-fenced-commit`: every commit answered NONE for (member, partition) was sent while the
    member owned the partition in its own view, and the committed log's coordinator state had
    the member holding it when the commit applied.
(e) `group-offset-backwards`: a committed offset never moves backwards (no resets here).
Plus `group-state`: every coordinator replica restored from a snapshot or loaded from its
keyed records at a restart, and every live replica at the end, equals a coordinator that
applied the committed log to the same index.

The reference coordinator applies the canonical committed entries of every `__consumer_offsets`
partition (`Checker.idents`), caught up every 50 units and at the end.
"""

from __future__ import annotations

import functools
import math
import random
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field

from broker.core.groups.assignors import minimum_moves
from broker.core.groups.coordinator import GroupCoordinator, coordinator_partition
from broker.core.groups.group import ConsumerGroup
from broker.core.groups.service import OFFSETS_TOPIC
from broker.core.machine import Applied
from broker.core.node import BrokerNode
from broker.core.raft import Entry, EntryKind
from broker.core.requests import Reply
from broker.wire import cbor
from broker.wire.errors import ErrorCode
from broker.wire.group_messages import (
    FindCoordinatorRequest,
    FindCoordinatorResponse,
    GroupHeartbeatResponse,
    OffsetCommitResponse,
    OffsetFetchResponse,
    pairs,
)
from consumers.core import group_member
from consumers.core.group_member import (
    GroupMember,
    OffsetLedger,
    Reconcile,
    SentHeartbeat,
    Step,
    StepKind,
    commit_outcome,
    commit_request,
    offset_fetch_request,
)
from consumers.errors import (
    BrokerUnavailableError,
    CoordinatorError,
    RequestTimedOutError,
    SluiceError,
    error_for,
)
from tests.sim.checker import Violation
from tests.sim.cluster_checker import ClusterChecker, _Replica
from tests.sim.cluster_clients import SimAdmin, SimClient
from tests.sim.cluster_scenario import (
    BOOT_TICKS,
    LIVENESS_TICKS,
    TOPIC,
    ClusterDriver,
    ClusterScenario,
)
from tests.sim.cluster_world import MS_PER_UNIT, ClusterWorld

TP = tuple[str, int]
CADENCE = 5
"""Units between a member's own steps (reading, due heartbeats and commits)."""
REQUEST_TIMEOUT = 400
"""Units (2 s) a member waits for any answer."""
REFERENCE_EVERY = 50
"""Units between catch-ups of the reference coordinator."""
QUIET_TICKS = 500
"""Ticks the group has to settle once faults and churn stop."""
_FENCED = (ErrorCode.FENCED_MEMBER_EPOCH, ErrorCode.UNKNOWN_MEMBER_ID)

STALE_COMMIT_QUEUE = "stale-commit-queue"
"""Member mutation: commit jobs keep the partitions their member released or lost since they
were queued, and send them once it has rejoined (with its new epoch), as the Trio shell's
commit worker (consumers/group.py `_commit`) does today."""
MUTATIONS: set[str] = set()
"""Member mutations switched on (tests/sim/mutations.py GROUP_MUTATIONS)."""


def _units(seconds: float) -> int:
    """The first world time (units) at or after `seconds`."""
    return math.ceil(round(seconds * 1000 / MS_PER_UNIT, 6))


def _failure(reply: Reply) -> SluiceError:
    code = reply.error if reply.error != ErrorCode.NONE else ErrorCode.UNKNOWN_SERVER_ERROR
    return error_for(code, reply.message)


def _moved_coordinator(error: SluiceError) -> bool:
    """An error after which `CoordinatorLink` forgets the coordinator."""
    return isinstance(error, CoordinatorError | BrokerUnavailableError | RequestTimedOutError)


def _names(tps: Iterable[TP]) -> str:
    return ",".join(f"{t}[{p}]" for t, p in sorted(tps)) or "-"


# --------------------------------------------------------------------------- the plan


@dataclass
class GroupPlan:
    """The group side of a `groups` scenario, drawn from the seed."""

    group_id: str
    internal_partitions: int
    max_members: int
    initial_members: int
    sessions_ms: tuple[int, ...]
    churn_every: int
    """Mean units between churn events (join, leave, crash, stall)."""
    commit_every: int
    """Units between a member's auto-commits."""
    late_commit: float
    """Chance that a member sends a late commit of partitions it has just released."""
    topic_rf: int = 1
    """The topic's replication factor (its records are never read: only its partition count
    matters, and single-replica partitions keep the seeds cheap)."""

    @classmethod
    def draw(cls, seed: int) -> GroupPlan:
        r = random.Random(seed * 2_000_029 + 7)
        max_members = r.randint(3, 8)
        return cls(
            group_id=r.choice(["g", "orders", "billing", "audit"]),
            internal_partitions=r.choice([1, 2]),
            max_members=max_members,
            initial_members=r.randint(2, min(4, max_members)),
            sessions_ms=r.choice([(1000,), (1500,), (1000, 2000), (2000, 3000)]),
            churn_every=r.choice([80, 150, 250]),
            commit_every=r.choice([40, 100, 200]),
            late_commit=r.choice([0.2, 0.5]),
        )

    def describe(self) -> str:
        return " ".join(f"{k}={v}" for k, v in asdict(self).items())


@dataclass
class GroupStats:
    joins: int = 0
    leaves: int = 0
    crashes: int = 0
    stalls: int = 0
    lost: int = 0
    """Members that dropped their partitions by the 2/3 rule."""
    fenced: int = 0
    """Heartbeats answered FENCED_MEMBER_EPOCH or UNKNOWN_MEMBER_ID."""
    acquired: int = 0
    handovers: int = 0
    """Partitions acquired by a member other than their previous owner."""
    commits: int = 0
    """Partitions committed (answered NONE)."""
    late_commits: int = 0
    late_refused: int = 0
    rebalances: int = 0
    """Group epochs the reference coordinator applied (after the first)."""
    moves: int = 0
    expired: int = 0
    coordinator_moves: int = 0
    """Members that forgot their coordinator after an error."""
    states_checked: int = 0


# --------------------------------------------------------------------------- the checker


@dataclass
class _Replay:
    machine: GroupCoordinator
    applied: int = 0


def _coordinator() -> GroupCoordinator:
    """A coordinator machine for replays (no leader timers run: no topic view needed)."""
    return GroupCoordinator(lambda: (0, {}), tick_ms=50, empty_group_expiry_ms=1 << 40)


@dataclass(frozen=True)
class _Before:
    """What the checks need of a group just before an entry applied."""

    epoch: int
    held: dict[str, frozenset[TP]]
    offsets: dict[TP, int]

    @classmethod
    def of(cls, g: ConsumerGroup | None) -> _Before | None:
        if g is None:
            return None
        ms = g.membership
        return cls(
            ms.epoch,
            {mid: frozenset(m.held) for mid, m in ms.members.items()},
            {tp: c.offset for tp, c in g.offsets.items()},
        )


@dataclass
class GroupClusterChecker(ClusterChecker):
    """The cluster checker plus the group checkers (see the module docstring)."""

    owners: dict[TP, tuple[str, int]] = field(default_factory=dict)
    """Partition -> (member, since when) in the members' own views."""
    last_owner: dict[TP, str] = field(default_factory=dict)
    gstats: GroupStats = field(default_factory=GroupStats)
    offsets_groups: tuple[int, ...] = ()
    """Raft group ids of the `__consumer_offsets` partitions, once known."""
    reference: dict[int, _Replay] = field(default_factory=dict)
    coordinator_replays: dict[int, _Replay] = field(default_factory=dict)
    clock: Callable[[], int] = lambda: 0

    # -- (a) ownership ------------------------------------------------------------------------

    def acquire(self, who: str, tp: TP) -> None:
        now = self.clock()
        held = self.owners.get(tp)
        if held is not None and held[0] != who:
            raise Violation(
                "group-two-owners",
                f"{who} took {_names([tp])} at t={now} while {held[0]} owns it (since "
                f"t={held[1]}) in its own view",
            )
        self.owners[tp] = (who, now)
        self.gstats.acquired += 1
        if self.last_owner.get(tp, who) != who:
            self.gstats.handovers += 1
        self.last_owner[tp] = who

    def release(self, who: str, tp: TP) -> None:
        held = self.owners.get(tp)
        if held is not None and held[0] == who:
            del self.owners[tp]

    # -- (d), the member's half ---------------------------------------------------------------

    def commit_accepted(self, who: str, tp: TP, offset: int, owned: bool, sent_at: int) -> None:
        if not owned:
            raise Violation(
                "group-fenced-commit",
                f"{who}'s commit of {_names([tp])} at {offset}, sent at t={sent_at} when it did "
                "not own the partition, was answered NONE",
            )
        self.gstats.commits += 1

    # -- the reference coordinator ((c), (d), (e)) --------------------------------------------

    def catch_up(self, world: ClusterWorld) -> None:
        """Apply the newly committed entries of every coordinator partition, checking each."""
        for gid in self._offsets_groups(world):
            ref = self.reference.setdefault(gid, _Replay(_coordinator()))
            c = self.group(gid)
            for i in range(ref.applied + 1, c.commit_index + 1):
                self._apply_checked(gid, ref, i)

    def _offsets_groups(self, world: ClusterWorld) -> tuple[int, ...]:
        if not self.offsets_groups:
            for b in world.brokers.values():
                topic = b.node.meta.topics.get(OFFSETS_TOPIC) if b.node is not None else None
                if topic is not None:
                    self.offsets_groups = tuple(pi.group_id for pi in topic.partitions)
                    break
        return self.offsets_groups

    def _entry(self, gid: int, i: int) -> Entry:
        c = self.group(gid)
        ident = c.idents[i]
        assert ident is not None
        kind, data, _ = ident
        return Entry(i, c.terms[i], EntryKind(kind), data)

    def _apply_checked(self, gid: int, ref: _Replay, i: int) -> None:
        entry = self._entry(gid, i)
        cmd = cbor.decode(entry.data) if entry.kind == EntryKind.NORMAL and entry.data else None
        name = cmd.get("group") if isinstance(cmd, dict) else None
        machine = ref.machine
        before = _Before.of(machine.groups.get(name)) if isinstance(name, str) else None
        applied = machine.apply_entry(entry)
        ref.applied = i
        after = machine.groups.get(name) if isinstance(name, str) else None
        if after is None or not isinstance(cmd, dict):
            return
        where = f"coordinator group {gid} entry {i} ({cmd.get('op')} of {cmd.get('member')})"
        if cmd.get("op") == "expire" and applied.error == ErrorCode.NONE:
            self.gstats.expired += 1
        self._check_commit(where, cmd, before, applied)
        self._check_offsets(where, before, after)
        if before is not None and after.membership.epoch != before.epoch:
            self._check_moves(where, cmd, before, after)

    def _check_commit(
        self, where: str, cmd: Mapping[str, object], before: _Before | None, applied: Applied
    ) -> None:
        """(d): the coordinator accepts a member's commit only of partitions it holds."""
        member = cmd.get("member")
        if cmd.get("op") != "commit" or member == "" or not isinstance(applied.value, list):
            return
        offsets = cmd["offsets"]
        assert isinstance(offsets, list)
        held = None if before is None else before.held.get(str(member))
        for (t, p, offset, _), code in zip(offsets, applied.value, strict=True):
            if code != ErrorCode.NONE:
                continue
            if held is None or (t, p) not in held:
                state = "was not a member" if held is None else f"held {_names(held)}"
                raise Violation(
                    "group-fenced-commit",
                    f"{where}: the commit of {t}[{p}] at {offset} with epoch {cmd.get('epoch')} "
                    f"was accepted, but the member {state}",
                )

    @staticmethod
    def _check_offsets(where: str, before: _Before | None, after: ConsumerGroup) -> None:
        """(e): committed offsets never move backwards."""
        if before is None:
            return
        for tp, committed in after.offsets.items():
            old = before.offsets.get(tp)
            if old is not None and committed.offset < old:
                raise Violation(
                    "group-offset-backwards",
                    f"{where}: the committed offset of {_names([tp])} went {old} -> "
                    f"{committed.offset}",
                )

    def _check_moves(
        self, where: str, cmd: Mapping[str, object], before: _Before, after: ConsumerGroup
    ) -> None:
        """(c): a new target moves at most `minimum_moves` of the holdings the assignor got:
        what each member still in the group held just before (nothing for a member joining
        or rejoining with epoch 0), restricted to valid partitions of topics it subscribes
        to, a partition held twice counted under the lowest member id (as `clean_current`)."""
        ms = after.membership
        self.gstats.rebalances += 1
        subscriptions = {m.topics for m in ms.members.values()}
        if len(subscriptions) != 1:
            return  # heterogeneous: the assignor promises no bound (not in this scenario)
        topics = next(iter(subscriptions))
        valid = {(t, p) for t in topics for p in range(ms.partitions.get(t, 0))}
        joiner = (
            cmd.get("member") if cmd.get("op") == "heartbeat" and cmd.get("epoch") == 0 else None
        )
        claimed: set[TP] = set()
        kept: dict[str, set[TP]] = {}
        for mid in sorted(ms.members):
            held = frozenset() if mid == joiner else before.held.get(mid, frozenset())
            kept[mid] = {tp for tp in held if tp in valid and tp not in claimed}
            claimed |= kept[mid]
        bound = minimum_moves((len(tps) for tps in kept.values()), len(valid))
        moves = sum(len(tps - ms.target.get(mid, frozenset())) for mid, tps in kept.items())
        self.gstats.moves += moves
        if moves > bound:
            sizes = {mid: len(tps) for mid, tps in kept.items()}
            raise Violation(
                "group-moves",
                f"{where}: group epoch {before.epoch} -> {ms.epoch} ({after.rebalance_reason}) "
                f"moves {moves} partitions; holding {sizes} of {len(valid)}, the assignor must "
                f"move only {bound}",
            )

    # -- coordinator state against the committed log ------------------------------------------

    def _replay_to(self, gid: int, index: int) -> GroupCoordinator:
        rp = self.coordinator_replays.get(gid)
        if rp is None or rp.applied > index:
            rp = self.coordinator_replays[gid] = _Replay(_coordinator())
        for i in range(rp.applied + 1, index + 1):
            rp.machine.apply_entry(self._entry(gid, i))
        rp.applied = index
        return rp.machine

    def check_coordinator(self, bid: int, gid: int, machine: GroupCoordinator, how: str) -> None:
        index = machine.applied_index
        self.gstats.states_checked += 1
        if machine.snapshot() != self._replay_to(gid, index).snapshot():
            raise Violation(
                "group-state",
                f"broker {bid} coordinator group {gid} {how} at {index} differs from the "
                "committed log replayed to that index",
            )

    def check_restored(self, bid: int, node: BrokerNode, gid: int, index: int) -> None:
        machine = node.groups[gid].machine
        if isinstance(machine, GroupCoordinator):
            self.restores_checked += 1
            self.check_coordinator(bid, gid, machine, "restored from its snapshot")
            return
        super().check_restored(bid, node, gid, index)

    def _replica(self, bid: int, gid: int, node: BrokerNode) -> _Replica:
        r = self.replicas.get((bid, gid))
        if r is not None:
            return r
        r = super()._replica(bid, gid, node)
        machine = node.groups[gid].machine
        if isinstance(machine, GroupCoordinator) and machine.applied_index:
            self.check_coordinator(bid, gid, machine, "as it opened")
        return r


# --------------------------------------------------------------------------- members


@dataclass(eq=False)
class _Commit:
    """One commit job (the shell's `_Commit`): retried until done or its deadline."""

    pending: dict[TP, int]
    deadline: float
    done: Callable[[], None] | None = None
    attempt: int = 0
    retry_at: float = 0.0


class SimMember(SimClient):
    """One group member (see the module docstring)."""

    def __init__(self, drv: GroupDriver, index: int, session_ms: int) -> None:
        super().__init__(drv.world, f"member{index}", REQUEST_TIMEOUT, backoff_s=(0.05, 1.0))
        self.drv = drv
        self.plan = drv.plan
        self.checker = drv.checker
        self.stats = drv.checker.gstats
        self.member_id = f"m{index}-{self.rng.getrandbits(32):08x}"
        self.session_ms = session_ms
        self.core = GroupMember(
            group_id=drv.plan.group_id,
            member_id=self.member_id,
            backoff=self.backoff,
            session_timeout_ms=session_ms,
        )
        self.core.subscribe((TOPIC,), None)
        self.state = "live"
        """live, leaving (committing before its leave), left or crashed."""
        self.view: frozenset[TP] = frozenset()
        """What the checker was told this member owns."""
        self.positions: dict[TP, int] = {}
        """Active partitions being read -> the next offset to read."""
        self.revoking: dict[TP, int] = {}
        self.ledger = OffsetLedger()
        self.commits: deque[_Commit] = deque()
        self.committing = False
        self.step: Step | None = None
        self.fetching = False
        self.step_attempt = 0
        self.step_at = 0.0
        self.want_leave = False
        self.coordinator: int | None = None
        self.finding = False
        self.find_at = 0.0
        self.find_attempt = 0
        self.stalled_until = 0
        self.auto_commit_at = self.now() + self.plan.commit_every * MS_PER_UNIT / 1000
        self.late: dict[TP, int] = {}
        """Released partitions -> their last position, for a late commit."""
        self._poking = False

    @property
    def alive(self) -> bool:
        return self.state in ("live", "leaving")

    def stalled(self) -> bool:
        return self.world.now < self.stalled_until

    def start(self) -> None:
        self.world.log(f"{self.name}: joins as {self.member_id} (session {self.session_ms} ms)")
        self.world.at(self.world.now + self.rng.randint(1, CADENCE), self._loop)

    def _loop(self) -> None:
        if not self.alive:
            return
        self.world.at(self.world.now + CADENCE, self._loop)
        for tp in self.positions:
            self.positions[tp] += self.rng.randint(0, 2)
        self.poke()

    # -- churn ---------------------------------------------------------------------------------

    def crash(self) -> None:
        self.world.log(f"{self.name}: crashes owning {_names(self.view)}")
        self.state = "crashed"
        self._sync()

    def stall(self, units: int) -> None:
        self.world.log(f"{self.name}: stalls for {units} (owns {_names(self.view)})")
        self.stalled_until = max(self.stalled_until, self.world.now + units)

    def leave(self) -> None:
        """Close: once no step runs, commit what the announced and revoking partitions read,
        then the leave heartbeat (the shell's `close`)."""
        if self.state == "live":
            self.world.log(f"{self.name}: leaves owning {_names(self.view)}")
            self.state = "leaving"
            self.want_leave = True
            self.poke()

    def _close(self) -> None:
        self.want_leave = False
        _, announced = self.core.close()
        stopped = {tp: self.positions.pop(tp) for tp in announced if tp in self.positions}
        stopped.update(self.revoking)
        moved = self.ledger.moved(stopped)
        if moved:
            self._enqueue(moved, self._send_leave)
        else:
            self._send_leave()

    def _send_leave(self) -> None:
        request = self.core.leave_request(self.now())
        self.state = "left"
        self._sync()
        bid = self.coordinator
        if request is not None and bid is not None and not self.stalled():
            self.request(bid, request, lambda reply: None)  # best effort

    # -- the loop ------------------------------------------------------------------------------

    def poke(self) -> None:
        """Do whatever is due (every CADENCE units, after every answer, at the lost deadline)."""
        if not self.alive or self._poking:
            return
        self._poking = True
        try:
            now = self.now()
            core = self.core
            if core.lost(now):
                self.stats.lost += 1
                self.world.log(f"{self.name}: lost {_names(core.partitions)} (2/3 rule)")
                self._dropped(core.lose(now))
            self._pump_commits()
            self._steps(now)
            if self.state == "left":
                return
            self._heartbeat(now)
            self._auto_commit(now)
            self._pump_commits()
        finally:
            self._poking = False
            self._sync()

    def _sync(self) -> None:
        """Tell the checker what changed in this member's own view of its partitions."""
        owned = frozenset(self.core.partitions) if self.alive else frozenset()
        for tp in sorted(self.view - owned):
            self.checker.release(self.name, tp)
        for tp in sorted(owned - self.view):
            self.checker.acquire(self.name, tp)
        self.view = owned

    def _dropped(self, tps: frozenset[TP]) -> None:
        """Lost: stop reading, nothing of theirs is committed."""
        for tp in tps:
            self.positions.pop(tp, None)
            self.revoking.pop(tp, None)
        self.ledger.forget(tps)
        self._forget_commits(tps)

    def _forget_commits(self, tps: Iterable[TP]) -> None:
        """Partitions released or lost leave every commit job: what was read of them is not
        this member's to commit any more (unless the shell's queue is the mutation)."""
        if STALE_COMMIT_QUEUE in MUTATIONS:
            return
        for job in self.commits:
            for tp in tps:
                job.pending.pop(tp, None)

    # -- the coordinator -------------------------------------------------------------------------

    def _coordinator_id(self, now: float) -> int | None:
        if self.coordinator is not None:
            return self.coordinator
        if self.finding or now < self.find_at or self.stalled():
            return None
        self.finding = True
        reachable = [b for b in self.brokers() if not self.unreachable(b)]
        bid = self.rng.choice(reachable or self.brokers())
        self.request(bid, FindCoordinatorRequest(key=self.plan.group_id), self._found)
        return None

    def _found(self, reply: Reply) -> None:
        self.finding = False
        body = reply.body
        if reply.error == ErrorCode.NONE and isinstance(body, FindCoordinatorResponse):
            self.coordinator = body.node_id
            self.find_attempt = 0
        else:
            self.find_at = self.now() + self.backoff.delay(self.find_attempt)
            self.find_attempt += 1
        self.poke()

    def _forget(self, error: SluiceError) -> None:
        if self.coordinator is not None and _moved_coordinator(error):
            self.coordinator = None
            self.stats.coordinator_moves += 1

    # -- heartbeats -------------------------------------------------------------------------------

    def _heartbeat(self, now: float) -> None:
        core = self.core
        if self.stalled() or core.in_flight is not None:
            return
        bid = self._coordinator_id(now)
        if bid is None:
            return
        sent = core.heartbeat_due(now)
        if sent is not None:
            self.request(bid, sent.request, functools.partial(self._beat, sent, bid))

    def _beat(self, sent: SentHeartbeat, bid: int, reply: Reply) -> None:
        if not self.alive:
            return
        now = self.now()
        core = self.core
        body = reply.body
        if reply.error == ErrorCode.NONE and isinstance(body, GroupHeartbeatResponse):
            change = core.on_heartbeat(sent, body, now)
            if change is not None:
                self._apply(change)
                self._late_commit(sent, bid)
                deadline = core.lost_deadline()
                if deadline < math.inf:
                    self.world.at(_units(deadline), self.poke)
        else:
            error = _failure(reply)
            self._forget(error)
            if reply.error in _FENCED and sent is core.in_flight:
                self.stats.fenced += 1
                self.world.log(f"{self.name}: {reply.error.name}, drops {_names(core.partitions)}")
            self._dropped(core.on_heartbeat_error(sent, error, now))
        self.poke()

    def _apply(self, change: Reconcile) -> None:
        for tp in change.revoked:
            if tp in self.positions:
                self.revoking[tp] = self.positions.pop(tp)
        for tp in change.released:
            self.positions.pop(tp, None)

    def _late_commit(self, sent: SentHeartbeat, bid: int) -> None:
        """Sometimes commit partitions `sent` reported released (answered: the coordinator
        applied the release) and not owned again since: the coordinator must refuse it."""
        reported = pairs(sent.request.owned)
        done = {tp: self.late.pop(tp) for tp in list(self.late) if tp not in reported}
        late = {tp: o for tp, o in done.items() if tp not in self.core.partitions}
        epoch = self.core.member_epoch
        if not late or epoch <= 0 or self.stalled() or self.rng.random() >= self.plan.late_commit:
            return
        self.stats.late_commits += 1
        sent_at = self.world.now
        request = commit_request(self.plan.group_id, self.member_id, epoch, late)
        self.request(bid, request, functools.partial(self._late_answered, late, sent_at))

    def _late_answered(self, late: dict[TP, int], sent_at: int, reply: Reply) -> None:
        body = reply.body
        if not isinstance(body, OffsetCommitResponse):
            return
        for t in body.topics:
            for p in t.partitions:
                tp = (t.topic, p.partition)
                if p.error == ErrorCode.NONE and tp in late:
                    self.checker.commit_accepted(self.name, tp, late[tp], False, sent_at)
                else:
                    self.stats.late_refused += 1

    # -- steps ----------------------------------------------------------------------------------

    def _steps(self, now: float) -> None:
        core = self.core
        while True:
            step = self.step
            if step is None:
                if self.want_leave:
                    self._close()
                    return
                step = core.next_step()
                if step is None:
                    return
                if step.kind is StepKind.LOST:
                    continue  # on_lost: nothing to do, reading stopped when it was lost
                self.step = step
                self.step_attempt = 0
                self.step_at = now
                if step.kind is StepKind.REVOKE:
                    self._revoke(step)
                continue
            if step.kind is StepKind.ASSIGN:
                if not core.assigning(step):
                    self.step = None
                    continue
                self._fetch(step, now)
            return

    def _revoke(self, step: Step) -> None:
        offsets = {tp: self.revoking[tp] for tp in step.partitions if tp in self.revoking}
        moved = self.ledger.moved(offsets)
        if moved:
            self._enqueue(moved, functools.partial(self._revoked, step))
        else:
            self._revoked(step)

    def _revoked(self, step: Step) -> None:
        core = self.core
        now = self.now()
        core.revoke_notify(step)
        released = core.released(step, now)
        for tp in released:
            position = self.revoking.pop(tp, None)
            if position is not None:
                self.late[tp] = position
        self.ledger.forget(released)
        self._forget_commits(released)
        if self.step is step:
            self.step = None

    def _fetch(self, step: Step, now: float) -> None:
        if self.fetching or now < self.step_at or self.stalled():
            return
        bid = self._coordinator_id(now)
        if bid is None:
            return
        wanted = sorted(step.partitions)
        self.fetching = True
        request = offset_fetch_request(self.plan.group_id, wanted)
        self.request(bid, request, functools.partial(self._fetched, step, wanted))

    def _fetched(self, step: Step, wanted: list[TP], reply: Reply) -> None:
        self.fetching = False
        if not self.alive or self.step is not step:
            return
        now = self.now()
        body = reply.body
        if reply.error != ErrorCode.NONE or not isinstance(body, OffsetFetchResponse):
            self._forget(_failure(reply))
            self.step_at = now + self.backoff.delay(self.step_attempt)
            self.step_attempt += 1
            self.poke()
            return
        committed = group_member.committed_offsets(wanted, body)
        started = self.core.assigned(step)
        offsets = {tp: committed.get(tp) for tp in started}
        self.ledger.record(offsets)
        for tp, offset in offsets.items():
            self.positions[tp] = 0 if offset is None else offset
        self.step = None
        self.poke()

    # -- commits --------------------------------------------------------------------------------

    def _auto_commit(self, now: float) -> None:
        if now < self.auto_commit_at:
            return
        self.auto_commit_at = now + self.plan.commit_every * MS_PER_UNIT / 1000
        current = {**self.revoking, **self.positions}
        moved = self.ledger.moved(current)
        if moved and self.core.joined:
            self._enqueue(moved, None)

    def _enqueue(self, offsets: dict[TP, int], done: Callable[[], None] | None) -> None:
        deadline = self.now() + REQUEST_TIMEOUT * MS_PER_UNIT / 1000
        self.commits.append(_Commit(dict(offsets), deadline, done))
        self._pump_commits()

    def _pump_commits(self) -> None:
        core = self.core
        while self.commits and not self.committing:
            now = self.now()
            job = self.commits[0]
            if not job.pending or now >= job.deadline:
                self.commits.popleft()
                if job.done is not None and self.alive:
                    job.done()
                continue
            if self.stalled() or now < job.retry_at:
                return
            if not core.joined:
                core.heartbeat_now()  # the commit waits for the member's (re)join
                return
            bid = self._coordinator_id(now)
            if bid is None:
                return
            epoch, incarnation = core.member_epoch, core.incarnation
            owned = frozenset(tp for tp in job.pending if tp in core.partitions)
            request = commit_request(self.plan.group_id, self.member_id, epoch, job.pending)
            self.committing = True
            answered = functools.partial(
                self._committed, job, epoch, incarnation, owned, self.world.now
            )
            self.request(bid, request, answered)
            return

    def _committed(
        self,
        job: _Commit,
        epoch: int,
        incarnation: int,
        owned: frozenset[TP],
        sent_at: int,
        reply: Reply,
    ) -> None:
        self.committing = False
        if not self.alive:
            return
        now = self.now()
        core = self.core
        body = reply.body
        if reply.error != ErrorCode.NONE or not isinstance(body, OffsetCommitResponse):
            error = _failure(reply)
            self._forget(error)
            if error.retriable:
                job.retry_at = now + self.backoff.delay(job.attempt)
                job.attempt += 1
            else:
                job.pending = {}
            self.poke()
            return
        out = commit_outcome(job.pending, body)
        for tp, offset in sorted(out.done.items()):
            self.checker.commit_accepted(self.name, tp, offset, tp in owned, sent_at)
        self.ledger.record(out.done)
        pending = {**out.retry, **out.stale}
        fenced = {
            (t.topic, p.partition)
            for t in body.topics
            for p in t.partitions
            if p.error in _FENCED and (t.topic, p.partition) in job.pending
        }
        if fenced:
            if (core.incarnation, core.member_epoch) == (incarnation, epoch):
                self.world.log(f"{self.name}: commit fenced, drops {_names(core.partitions)}")
                self._dropped(core.lose(now))
                pending = {}
            else:
                pending.update({tp: job.pending[tp] for tp in fenced})  # moved on: retry
        if out.stale or fenced:
            core.heartbeat_now()
            pending = {tp: o for tp, o in pending.items() if tp in core.partitions}
        if pending:
            job.retry_at = now + self.backoff.delay(job.attempt)
            job.attempt += 1
        job.pending = pending
        self.poke()


# --------------------------------------------------------------------------- the driver


class GroupDriver(ClusterDriver):
    """The `groups` profile: boot, members and churn under faults, a quiet period, checks."""

    def __init__(self, sc: ClusterScenario) -> None:
        self.plan = GroupPlan.draw(sc.seed)
        self.checker = GroupClusterChecker()
        super().__init__(
            sc,
            checker=self.checker,
            node_options={"internal_topic_partitions": self.plan.internal_partitions},
        )
        self.checker.clock = lambda: self.world.now
        self.admin = SimAdmin(self.world, TOPIC, sc.partitions, self.plan.topic_rf, 300)
        self.members: list[SimMember] = []
        self.churn = False

    def group_counts(self) -> dict[str, int] | None:
        return asdict(self.checker.gstats)

    # -- the run ------------------------------------------------------------------------------

    def run(self) -> None:
        w, sc, plan = self.world, self.sc, self.plan
        w.log(f"group plan: {plan.describe()}")
        w.at(1, self._client_loop)
        w.at(1, self._fault_loop)
        w.at(1, self._churn_loop)
        w.at(1, self._reference_loop)
        self._until(BOOT_TICKS, self._booted, "boot")
        w.log("booted: topic created")
        self.faulty = True
        self.churn = True
        for _ in range(plan.initial_members):
            w.at(w.now + self.rng.randint(0, 50), self._join)
        w.run_until(w.now + sc.fault_ticks * 10)
        if w.stats.faults() == 0 and (sc.crash_rate or sc.partition_rate or sc.pause_rate):
            self._crash(self._victim(), why="(forced: no fault yet)")
            w.run_until(w.now + 50 * 10)
        self.churn = False
        self._heal()
        for m in self.members:
            m.stalled_until = 0
        while len(self._live()) < 2:
            self._join()
        w.log("quiet: faults healed, no more churn")
        self._until(BOOT_TICKS + LIVENESS_TICKS, self._coordinated, "the coordinator is led")
        self._settle()
        self.checker.catch_up(w)
        self._check_replicas()
        w.checker.final_checks(w, TOPIC)

    def _client_loop(self) -> None:
        w = self.world
        w.at(w.now + 5, self._client_loop)
        self.admin.step()

    def _reference_loop(self) -> None:
        w = self.world
        w.at(w.now + REFERENCE_EVERY, self._reference_loop)
        self.checker.catch_up(w)

    # -- churn ----------------------------------------------------------------------------------

    def _live(self) -> list[SimMember]:
        return [m for m in self.members if m.state == "live"]

    def _join(self) -> None:
        m = SimMember(self, len(self.members), self.rng.choice(self.plan.sessions_ms))
        self.members.append(m)
        self.checker.gstats.joins += 1
        m.start()

    def _churn_loop(self) -> None:
        w, rng, plan = self.world, self.rng, self.plan
        w.at(
            w.now + rng.randint(plan.churn_every // 2, plan.churn_every * 3 // 2), self._churn_loop
        )
        if not self.churn or not self.admin.done:
            return
        live = self._live()
        stats = self.checker.gstats
        pick = rng.random()
        if len(live) < 2 or (pick < 0.3 and len(live) < plan.max_members):
            self._join()
        elif pick < 0.45:
            stats.leaves += 1
            rng.choice(live).leave()
        elif pick < 0.6:
            stats.crashes += 1
            rng.choice(live).crash()
        else:
            m = rng.choice(live)
            if not m.stalled():
                stats.stalls += 1
                m.stall(int(m.session_ms * rng.choice([0.4, 0.9, 1.5, 2.5]) / MS_PER_UNIT))

    # -- faults: the coordinator's leader preferred ---------------------------------------------

    def _coordinator_group(self) -> int | None:
        groups = self.checker._offsets_groups(self.world)
        if not groups:
            return None
        return groups[coordinator_partition(self.plan.group_id, len(groups))]

    def _victim(self) -> int:
        if self.rng.random() < 0.5:
            gid = self._coordinator_group()
            leader = None if gid is None else self.world.partition_leaders().get(gid)
            if leader is not None:
                return leader
        return super()._victim()

    # -- the quiet period -----------------------------------------------------------------------

    def _coordinated(self) -> bool:
        gid = self._coordinator_group()
        return self._all_led() and gid is not None and gid in self.world.partition_leaders()

    def _group(self) -> ConsumerGroup | None:
        """The group as the coordinator's serving leader has it."""
        gid = self._coordinator_group()
        leader = None if gid is None else self.world.partition_leaders().get(gid)
        node = None if leader is None else self.world.brokers[leader].node
        if node is None or gid is None:
            return None
        machine = node.groups[gid].machine
        assert isinstance(machine, GroupCoordinator)
        return machine.groups.get(self.plan.group_id)

    def _unsettled(self) -> str | None:
        """(b): why the group is not settled yet, or None."""
        live = self._live()
        owners: dict[TP, list[str]] = {}
        for m in live:
            if m.stalled() or m.step is not None or m.revoking or m.core.member_epoch <= 0:
                return f"{m.name} is still busy (epoch {m.core.member_epoch})"
            if set(m.positions) != set(m.view):
                return f"{m.name} owns {_names(m.view)} but reads {_names(m.positions)}"
            for tp in m.view:
                owners.setdefault(tp, []).append(m.name)
        for p in range(self.sc.partitions):
            got = owners.get((TOPIC, p), [])
            if len(got) != 1:
                return f"{TOPIC}[{p}] is owned by {got or 'no member'}"
        group = self._group()
        if group is None:
            return "the coordinator has no such group"
        state = group.state()
        if state != "stable":
            return f"the coordinator's group is {state}"
        ids = {m.member_id: m for m in live}
        if set(group.members) != set(ids):
            return f"the coordinator's members are {sorted(group.members)}, live: {sorted(ids)}"
        for mid, ms in group.membership.members.items():
            if frozenset(ms.held) != ids[mid].view:
                return f"the coordinator says {mid} holds {_names(ms.held)}"
        return None

    def _settle(self) -> None:
        w = self.world
        deadline = w.now + QUIET_TICKS * 10
        why = self._unsettled()
        while why is not None and w.now < deadline:
            w.run_until(w.now + 50)
            why = self._unsettled()
        if why is not None:
            raise Violation(
                "group-unstable",
                f"{QUIET_TICKS} ticks after the faults and churn stopped: {why}; "
                f"{self.group_report()}",
            )
        w.log(f"settled: {self.group_report()}")

    def _check_replicas(self) -> None:
        """Every live coordinator replica equals the committed log replayed to its index."""
        for gid in self.checker._offsets_groups(self.world):
            for bid, b in sorted(self.world.brokers.items()):
                g = b.node.groups.get(gid) if b.node is not None else None
                if g is not None and isinstance(g.machine, GroupCoordinator):
                    self.checker.check_coordinator(bid, gid, g.machine, "at the end")

    def group_report(self) -> str:
        parts = []
        for m in self.members:
            if m.alive:
                parts.append(f"{m.name}({m.member_id} e{m.core.member_epoch}): {_names(m.view)}")
        group = self._group()
        if group is not None:
            ms = group.membership
            held = " ".join(
                f"{mid} e{m.epoch}:{_names(m.held)}" for mid, m in sorted(ms.members.items())
            )
            parts.append(f"coordinator: {group.state()} epoch {ms.epoch} {held}")
        return "; ".join(parts)

    def report(self) -> str:
        return f"{super().report()}; {self.group_report()}"
