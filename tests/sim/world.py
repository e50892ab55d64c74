"""A deterministic world for Raft groups: simulated network, disks, clocks and clients.

One `random.Random(seed)` drives everything, and events are ordered by (time, sequence), so a
run is a pure function of its seed and options. Time is in units; a node ticks every
`tick_units` units (with per-node drift). Trio is never involved.

- Network: per-message latency, loss, duplication, reordering (latency jitter and long
  delays), symmetric and asymmetric partitions (blocked directed links), checked at send and
  at delivery.
- Disk: every Ready with something to write (or acknowledgements that depend on earlier
  writes) completes in order after a drawn latency; only then does the node hear
  `persisted(n)` and may its persisted messages leave. A crash loses the writes not yet
  completed (or, drawn per crash, keeps a prefix of them: the OS may have flushed them).
- Pause (SIGSTOP): the node neither ticks nor sees messages or disk completions until resumed.
- Disk stall: a node's writes complete only after the stall, while it keeps working.
- Application: a hash chain over applied entries; snapshots carry (index, hash) plus padding,
  so installing one is checked against the canonical history too.
- Liveness signal (`liveness_ticks`, for quiescing groups): what a broker's peer links tell
  it, modelled per pair of nodes. A node's view of a peer goes lost when the peer's process
  restarted (the connection reset: at once), or when it has been unreachable (down, paused,
  or a link cut either way) for `liveness_ticks` of the viewer's ticks (keepalives stopped
  coming); the other side's view goes lost with it (the connection is shared). The viewer
  then does what `GroupHost.peer_lost` does (`leader_unreachable` if the peer led it, and a
  quiesced node with the peer as member wakes); when the peer is reachable again the view
  comes back (`peer_back`: the quiesced node wakes). A ticking node passes the peers it
  sees lost to `tick`, so a leader may quiesce without them.
"""

from __future__ import annotations

import dataclasses
import functools
import heapq
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from broker.core.raft import (
    ConfChange,
    ConfState,
    DropReason,
    EntryKind,
    MemoryStorage,
    ProposalDropped,
    RaftConfig,
    RaftNode,
    Ready,
    Role,
)
from broker.core.raft.log import NO_TERM
from broker.core.raft.types import (
    AppendResponse,
    Message,
    Snapshot,
    SnapshotResponse,
    VoteResponse,
)
from tests.sim.checker import Checker, Violation, undurable_ack
from tests.sim.rule_audit import NoRuleAudit, RuleAudit
from tests.support.ready import write_ready

NodeFactory = Callable[[RaftConfig, MemoryStorage, random.Random], RaftNode]

DELIVER, TICK, DISK, RESUME, ACTION = 0, 1, 2, 3, 4
F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class NetOptions:
    latency_min: int = 1
    latency_max: int = 5
    drop: float = 0.0
    duplicate: float = 0.0
    long_delay: float = 0.0
    long_delay_max: int = 50


@dataclass
class Stats:
    ticks: int = 0
    delivered: int = 0
    dropped: int = 0
    duplicated: int = 0
    crashes: int = 0
    restarts: int = 0
    pauses: int = 0
    partitions: int = 0
    elections: int = 0
    conf_changes: int = 0
    snapshots_taken: int = 0
    snapshots_installed: int = 0
    """Snapshots received from a leader and restored by the application."""
    snapshots_refused: int = 0
    """Snapshot transfers a receiver refused (SnapshotResponse.reject sent)."""
    snapshots_vouched: int = 0
    """Of snapshots_installed, those whose configuration lacks the installing node (a member
    added after the snapshot, installed on the leader's vouch)."""
    transfers: int = 0
    reads: int = 0
    acked_ops: int = 0
    disk_stalls: int = 0
    liveness_ticks: int = 0
    converge_ticks: int = 0
    quiesces: int = 0
    """Times a node quiesced (RaftConfig.quiesce)."""
    wakes: int = 0
    quiesced_hits: int = 0
    """Faults that hit a quiesced leader (the quiesce profile's)."""
    failovers: int = 0
    """Of those, crashes or isolations after which a new leader was seen (in time)."""
    failover_ticks: int = 0
    """Their total time to the new leader, in ticks."""

    def faults(self) -> int:
        return self.crashes + self.pauses + self.partitions + self.disk_stalls


@dataclass
class SimNode:
    id: int
    disk: MemoryStorage
    tick_units: int
    node: RaftNode | None = None
    incarnation: int = 0
    pending: deque[Ready] = field(default_factory=deque)
    disk_busy_until: int = 0
    paused_until: int = 0
    disk_stalled_until: int = 0
    disk_latency: tuple[int, int] | None = None
    """This node's own disk latency (a slow disk), else the world's."""
    last_commit: int = 0
    last_commit_sent: int = 0
    app_index: int = 0
    app_hash: int = 0
    app_conf: ConfState | None = None
    read_waits: list[tuple[int, bytes]] = field(default_factory=list)
    ack_terms: dict[int, tuple[AppendResponse, int]] = field(default_factory=dict)
    """id of an append acknowledgement waiting for its Ready's write -> (it, the term its
    node's log had at the acknowledged index when the Ready was handed out)."""

    @property
    def up(self) -> bool:
        return self.node is not None


def _holds(sn: SimNode, index: int, term: int) -> bool:
    """Does this node's log (in memory, or on disk if down) hold (index, term)?"""
    if sn.node is not None:
        log = sn.node.log
        if index < log.first_index():
            return True
        return log.term(index) == term
    disk = sn.disk
    if index < disk.first_index():
        return True
    return index <= disk.last_index() and disk.term(index) == term


def _surface(fn: F) -> F:
    """Turn an invariant assertion inside the Raft core into a Violation."""

    @functools.wraps(fn)
    def wrapper(self: World, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(self, *args, **kwargs)
        except AssertionError as e:
            raise Violation("core-invariant", f"{e} (t={self.now})") from e

    return wrapper  # type: ignore[return-value]


class World:
    """A Raft group in simulation. Subclasses or drivers add clients and faults."""

    def __init__(
        self,
        rng: random.Random,
        voters: list[int],
        learners: list[int] | None = None,
        spares: list[int] | None = None,
        *,
        net: NetOptions | None = None,
        raft: dict[str, object] | None = None,
        raft_per_node: dict[int, dict[str, object]] | None = None,
        tick_units: int = 10,
        drift: int = 0,
        disk_latency: tuple[int, int] = (1, 4),
        crash_keeps_prefix: float = 0.5,
        crash_loses_in_flight: float = 0.0,
        node_factory: NodeFactory | None = None,
        audit_rules: bool = True,
        liveness_ticks: int = 0,
    ) -> None:
        self.rng = rng
        self.now = 0
        self.seq = 0
        self.events: list[tuple[int, int, int, object, int]] = []
        self.net = net or NetOptions()
        self.raft_options = dict(raft or {})
        self.raft_per_node = raft_per_node or {}
        """RaftConfig options of single nodes, over `raft` (e.g. a smaller max_snapshot_bytes)."""
        self.disk_latency = disk_latency
        self.crash_keeps_prefix = crash_keeps_prefix
        self.crash_loses_in_flight = crash_loses_in_flight
        self.node_factory: NodeFactory = node_factory or RaftNode
        self.blocked: set[tuple[int, int]] = set()
        self.link_clock: dict[tuple[int, int], int] = {}
        self.checker = Checker()
        self.audit = RuleAudit() if audit_rules else NoRuleAudit()
        """The rule audits (rule_audit.py); off for tests of the consequence checkers."""
        self.stats = Stats()
        self.tick_units = tick_units
        self.liveness_ticks = liveness_ticks
        """0: no liveness signal (ticks pass no `lost`: no group quiesces)."""
        self._views: dict[tuple[int, int], _View] = {}
        self._reset: set[tuple[int, int]] = set()
        """(viewer, peer): the peer closed their connection; the viewer notices at once."""
        learners = learners or []
        initial = ConfState(frozenset(voters), frozenset(learners))
        self.nodes: dict[int, SimNode] = {}
        for nid in [*voters, *learners, *(spares or [])]:
            conf = initial if nid in voters or nid in learners else ConfState(frozenset())
            units = tick_units + (rng.randint(-drift, drift) if drift else 0)
            sn = SimNode(nid, MemoryStorage(conf), max(1, units))
            sn.app_conf = conf
            self.nodes[nid] = sn
            self._start(sn)
        self.read_floor: dict[bytes, int] = {}
        self.drop_if: Callable[[Message], bool] | None = None
        self.on_apply: Callable[[SimNode, bytes], None] | None = None

    # -- events -------------------------------------------------------------------------------

    def _push(self, at: int, kind: int, a: object, b: int = 0) -> None:
        self.seq += 1
        heapq.heappush(self.events, (at, self.seq, kind, a, b))

    @_surface
    def run_until(self, t_end: int, on_tick: Callable[[], None] | None = None) -> None:
        """Process events up to time t_end; `on_tick` runs once per tick_units of time."""
        next_tick = (self.now // self.tick_units + 1) * self.tick_units
        events = self.events
        while True:
            t_event = events[0][0] if events else t_end + 1
            if on_tick is not None and next_tick <= t_end and next_tick <= t_event:
                self.now = next_tick
                next_tick += self.tick_units
                self.stats.ticks += 1
                on_tick()
                continue
            if t_event > t_end:
                break
            at, _, kind, a, b = heapq.heappop(events)
            self.now = at
            if kind == DELIVER:
                self._deliver(a, b)  # type: ignore[arg-type]
            elif kind == TICK:
                self._tick(a, b)  # type: ignore[arg-type]
            elif kind == DISK:
                self._disk_done(a, b)  # type: ignore[arg-type]
            elif kind == RESUME:
                self._resume(a)  # type: ignore[arg-type]
            else:
                a()  # type: ignore[operator]
        self.now = t_end

    def run_ticks(self, n: int, on_tick: Callable[[], None] | None = None) -> None:
        self.run_until(self.now + n * self.tick_units, on_tick)

    # -- nodes --------------------------------------------------------------------------------

    def _start(self, sn: SimNode) -> None:
        disk = sn.disk
        snap = disk.snapshot()
        sn.app_index = snap.meta.index
        sn.app_hash = _snapshot_hash(snap)
        sn.app_conf = snap.meta.conf
        options = {**self.raft_options, **self.raft_per_node.get(sn.id, {})}
        cfg = RaftConfig(sn.id, applied=snap.meta.index, **options)  # type: ignore[arg-type]
        sn.node = self.node_factory(cfg, disk, self.rng)
        sn.node.on_quiesce = self._count_quiesce
        sn.incarnation += 1
        sn.pending.clear()
        sn.ack_terms.clear()
        sn.disk_busy_until = self.now
        sn.last_commit = sn.node.log.committed
        sn.read_waits = []
        self._push(self.now + self.rng.randint(1, sn.tick_units), TICK, sn.id, sn.incarnation)

    def _count_quiesce(self, quiesced: bool) -> None:
        if quiesced:
            self.stats.quiesces += 1
        else:
            self.stats.wakes += 1

    def crash(self, nid: int) -> None:
        sn = self.nodes[nid]
        if sn.node is None:
            return
        self.stats.crashes += 1
        if sn.pending and self.rng.random() < self.crash_keeps_prefix:
            keep = self.rng.randint(0, len(sn.pending))
            for _ in range(keep):
                write_ready(sn.disk, sn.pending.popleft())
        sn.pending.clear()
        sn.ack_terms.clear()
        self.audit.forget((sn.id, sn.incarnation))
        sn.node = None
        sn.paused_until = sn.disk_stalled_until = 0
        sn.incarnation += 1

    @_surface
    def restart(self, nid: int) -> None:
        sn = self.nodes[nid]
        if sn.node is not None:
            return
        self.stats.restarts += 1
        self._start(sn)
        self.observe(sn)

    def reset_node_options(self, nid: int) -> None:
        """Drop `nid`'s own RaftConfig options, now (a configuration reload) and for its
        restarts: it runs with the world's options."""
        own = self.raft_per_node.pop(nid, {})
        sn = self.nodes[nid]
        if own and sn.node is not None:
            shared = RaftConfig(nid, **self.raft_options)  # type: ignore[arg-type]
            sn.node.config = dataclasses.replace(
                sn.node.config, **{k: getattr(shared, k) for k in own}
            )

    def pause(self, nid: int, duration: int) -> None:
        sn = self.nodes[nid]
        if sn.node is None or sn.paused_until > self.now:
            return
        self.stats.pauses += 1
        sn.paused_until = self.now + duration
        self._push(sn.paused_until, RESUME, nid, sn.incarnation)

    def _resume(self, nid: int) -> None:
        sn = self.nodes[nid]
        if sn.node is not None and sn.paused_until <= self.now:
            sn.paused_until = 0
            self.on_resume(sn)

    def on_resume(self, sn: SimNode) -> None:
        """Hook: a paused node runs again (before it sees anything that queued up)."""

    def at(self, when: int, action: Callable[[], None]) -> None:
        """Run `action` at time `when`."""
        self._push(when, ACTION, action)

    def _tick(self, nid: int, inc: int) -> None:
        sn = self.nodes[nid]
        if sn.incarnation != inc or sn.node is None:
            return
        if sn.paused_until > self.now:
            self._push(sn.paused_until, TICK, nid, inc)
            return
        self._push(self.now + sn.tick_units, TICK, nid, inc)
        if self.liveness_ticks:
            lost = self._watch(sn)
            if sn.node is None or sn.incarnation != inc:
                return
            sn.node.tick(lost)
        else:
            sn.node.tick()
        self.process(sn)

    # -- the liveness signal --------------------------------------------------------------------

    def _reachable(self, sn: SimNode, other: SimNode) -> bool:
        return (
            other.node is not None
            and other.paused_until <= self.now
            and (sn.id, other.id) not in self.blocked
            and (other.id, sn.id) not in self.blocked
        )

    def _watch(self, sn: SimNode) -> frozenset[int]:
        """Update `sn`'s view of every peer (see the module doc); the peers it sees lost."""
        lost = []
        window = self.liveness_ticks * sn.tick_units
        for other in self.nodes.values():
            if other is sn:
                continue
            key = (sn.id, other.id)
            v = self._views.get(key)
            if v is None:
                v = self._views[key] = _View(other.incarnation)
            reachable = self._reachable(sn, other)
            if v.linked:
                reset = key in self._reset or (
                    other.node is not None and other.incarnation != v.incarnation
                )
                self._reset.discard(key)
                if reset:
                    self._lose(sn, v, other.id)
                elif reachable:
                    v.bad_since = -1
                elif v.bad_since < 0:
                    v.bad_since = self.now
                elif self.now - v.bad_since >= window:
                    self._lose(sn, v, other.id)
                    self._reset.add((other.id, sn.id))  # the peer's end of it closes too
            if not v.linked:
                if reachable:
                    v.linked = True
                    v.incarnation = other.incarnation
                    v.bad_since = -1
                    self._peer_back(sn, other.id)
                else:
                    lost.append(other.id)
        return frozenset(lost)

    def _lose(self, sn: SimNode, v: _View, peer: int) -> None:
        """GroupHost.peer_lost, for this node's one group."""
        v.linked = False
        node = sn.node
        if node is None:
            return
        if node.leader == peer:
            node.leader_unreachable(peer)
        if node.quiesced and node.conf.is_member(peer):
            node.wake()
        self.process(sn)

    def _peer_back(self, sn: SimNode, peer: int) -> None:
        """GroupHost.peer_back: a quiesced node with a member there wakes."""
        node = sn.node
        if node is not None and node.quiesced and node.conf.is_member(peer):
            node.wake()
            self.process(sn)

    # -- network ------------------------------------------------------------------------------

    def send(self, m: Message) -> None:
        src, dst = m.src, m.dst
        assert isinstance(src, int) and isinstance(dst, int)
        if isinstance(m, (VoteResponse, AppendResponse)):
            self._audit_durable(m)
        elif isinstance(m, SnapshotResponse) and m.reject:
            self.stats.snapshots_refused += 1
        self.audit.on_send((src, self.nodes[src].incarnation), m)
        if (
            (src, dst) in self.blocked
            or dst not in self.nodes
            or (self.drop_if is not None and self.drop_if(m))
        ):
            self.stats.dropped += 1
            return
        net = self.net
        rng = self.rng
        if net.drop and rng.random() < net.drop:
            self.stats.dropped += 1
            return
        copies = 2 if net.duplicate and rng.random() < net.duplicate else 1
        if copies == 2:
            self.stats.duplicated += 1
        link = (src, dst)
        for _ in range(copies):
            at = self.now + rng.randint(net.latency_min, net.latency_max)
            if net.long_delay and rng.random() < net.long_delay:
                # Reordered: overtaken by later messages (as after a reconnect).
                at += rng.randint(1, net.long_delay_max)
            else:
                # In order on the link, as on one TCP connection.
                at = max(at, self.link_clock.get(link, 0))
                self.link_clock[link] = at
            self._push(at, DELIVER, m, self.nodes[src].incarnation)

    def _deliver(self, m: Message, src_incarnation: int) -> None:
        sn = self.nodes[m.dst]  # type: ignore[index]
        if sn.node is None or (m.src, m.dst) in self.blocked:
            self.stats.dropped += 1
            return
        if (
            self.crash_loses_in_flight
            and src_incarnation != self.nodes[m.src].incarnation  # type: ignore[index]
            and self.rng.random() < self.crash_loses_in_flight
        ):
            # The sender's machine crashed with this message still in its send queue.
            self.stats.dropped += 1
            return
        if sn.paused_until > self.now:
            self._push(sn.paused_until, DELIVER, m, src_incarnation)
            return
        self.stats.delivered += 1
        node = sn.node
        before = self.audit.before_step((sn.id, sn.incarnation), node, m)
        node.step(m)
        self.audit.after_step(node, m, before)
        self.process(sn)

    def _audit_durable(self, m: VoteResponse | AppendResponse) -> None:
        """The durability audit (`checker.undurable_ack`): a vote or an append
        acknowledgement leaves only once what it promises is on the sender's disk. An
        acknowledgement is about the entry its node's log held when the Ready carrying it was
        handed out (noted then, in `process`); one sent at once (a message that did not wait
        for the write) is about the log as it is now, which is still that log."""
        sn = self.nodes[m.src]  # type: ignore[index]
        acked_term = None
        if isinstance(m, AppendResponse) and not m.reject and m.index > 0:
            noted = sn.ack_terms.pop(id(m), None)
            if noted is not None:
                acked_term = noted[1]
            elif sn.node is not None:
                acked_term = sn.node.log.term(m.index)
        problem = undurable_ack(sn.disk, m, acked_term)
        if problem is not None:
            raise Violation("ack-before-durable", problem)

    # -- disk ---------------------------------------------------------------------------------

    def stall_disk(self, nid: int, duration: int) -> None:
        """The node's disk completes nothing for `duration` (an fsync stall); the node goes
        on receiving, appending and handing out writes meanwhile."""
        sn = self.nodes[nid]
        if sn.node is None:
            return
        self.stats.disk_stalls += 1
        sn.disk_stalled_until = max(sn.disk_stalled_until, self.now + duration)

    def _disk_done(self, nid: int, inc: int) -> None:
        sn = self.nodes[nid]
        if sn.incarnation != inc or sn.node is None or not sn.pending:
            return
        wake = max(sn.paused_until, sn.disk_stalled_until)
        if wake > self.now:
            self._push(wake, DISK, nid, inc)
            return
        rd = sn.pending.popleft()
        write_ready(sn.disk, rd)
        node = sn.node
        node.persisted(rd.number)
        # A commit the leader decided on its own write is reported at once: a hook below may
        # crash it, and the checker needs the deciding leader's term (Checker.commit_terms).
        self.observe(sn)
        for m in rd.persisted_messages:
            self.send(m)
        if rd.snapshot is not None:
            self._restore_app(sn, rd.snapshot)
        self.after_persist(sn, rd)
        if sn.node is node:
            self.process(sn)

    # -- ready loop and checks ----------------------------------------------------------------

    def process(self, sn: SimNode) -> None:
        node = sn.node
        assert node is not None
        self.observe(sn)
        while node.has_ready():
            rd = node.ready()
            ss = rd.soft_state
            if ss is not None and ss.role == Role.LEADER:
                self.stats.elections += 1
                self.checker.on_leader(sn.id, sn.incarnation, ss.term, node.log)
                self.audit.on_leader((sn.id, sn.incarnation), node, ss.term, sn.disk)
                self.on_leader_elected(sn)
            elif ss is not None and ss.role == Role.CANDIDATE:
                self.checker.on_campaign(sn.id, sn.incarnation, ss.term)
            for m in rd.persisted_messages:
                if isinstance(m, AppendResponse) and not m.reject and m.index > 0:
                    sn.ack_terms[id(m)] = (m, node.log.term(m.index))
            if rd.entries:
                self.checker.on_entries(sn.id, node.log.term(rd.entries[0].index - 1), rd.entries)
                if node.is_leader and any(
                    e.kind == EntryKind.CONF and e.term == node.term for e in rd.entries
                ):
                    # What makes single-member changes safe: when a leader appends a change,
                    # its term's first entry is already protected, so no node holding a
                    # sibling configuration can still win an election.
                    self.check_protected(
                        node.term_start_index, node.term, "unprotected-config-change"
                    )
            for m in rd.messages:
                self.send(m)
            self.after_send(sn, rd)
            if (
                rd.snapshot is not None
                or rd.entries
                or rd.hard_state is not None
                or (rd.persisted_messages or sn.pending)
            ):
                sn.pending.append(rd)
                lo, hi = sn.disk_latency or self.disk_latency
                done = max(sn.disk_busy_until, self.now + self.rng.randint(lo, hi))
                sn.disk_busy_until = done
                self._push(done, DISK, sn.id, sn.incarnation)
            else:
                node.persisted(rd.number)
            for e in rd.committed_entries:
                if e.index != sn.app_index + 1:
                    raise Violation(
                        "apply-order", f"node {sn.id} applied {e.index} after {sn.app_index}"
                    )
                sn.app_hash = self.checker.on_apply(sn.id, sn.app_hash, e)
                sn.app_index = e.index
                if e.conf is not None:
                    sn.app_conf = e.conf
                elif e.data and self.on_apply is not None:
                    self.on_apply(sn, e.data)
            node.advance(rd)
            for rs in rd.read_states:
                sn.read_waits.append((rs.index, rs.context))
            if sn.read_waits:
                self._serve_reads(sn)
            self.observe(sn)

    def after_send(self, sn: SimNode, rd: Ready) -> None:
        """Hook for fault injection right after a node's messages left."""

    def on_leader_elected(self, sn: SimNode) -> None:
        """Hook for fault injection when a node becomes leader."""

    def after_persist(self, sn: SimNode, rd: Ready) -> None:
        """Hook for fault injection right after a Ready became durable."""

    def observe(self, sn: SimNode) -> None:
        node = sn.node
        assert node is not None
        c = node.log.committed
        if c == sn.last_commit:
            return
        if c < sn.last_commit:
            raise Violation("commit-monotonic", f"node {sn.id} commit went {sn.last_commit} -> {c}")
        log = node.log

        def entry_at(i: int) -> object:
            if log.term(i) == NO_TERM:
                return None
            got = log.slice(i, i + 1)
            return got[0] if got else None

        if node.role == Role.LEADER:
            self.audit.on_leader_commit((sn.id, sn.incarnation), node, sn.last_commit, sn.disk)
        before = self.checker.commit_index
        self.checker.on_commit(
            sn.id, node.term, sn.last_commit, c, entry_at, leader=node.role == Role.LEADER
        )
        sn.last_commit = c
        if self.checker.commit_index > before:
            c = self.checker.commit_index
            self.check_protected(c, self.checker.terms[c], "unprotected-commit")

    def check_protected(self, c: int, term_c: int, kind: str) -> None:
        """Leader Completeness, checked ahead of time: no node lacking entry (c, term_c) may
        be able to win an election, under any configuration it could campaign with, counting
        the vote of every voter whose durable log is no more up to date than its own (a voter
        can always crash back to its durable log, and leases expire)."""
        for sn in self.nodes.values():
            n = sn.node
            if _holds(sn, c, term_c):
                continue
            candidates = []  # (log position, configuration) this node could campaign with
            if n is not None and n.promotable():
                candidates.append(((n.log.last_term(), n.log.last_index()), n.conf))
            disk = sn.disk
            dconf = disk.initial_state().confs[-1][1]
            if sn.id in dconf.voters:
                last = disk.last_index()
                candidates.append(((disk.term(last), last), dconf))
            for pos, conf in candidates:
                votes = 1 if sn.id in conf.voters else 0
                for v in conf.voters:
                    if v == sn.id:
                        continue
                    vd = self.nodes[v].disk  # type: ignore[index]
                    vlast = vd.last_index()
                    if pos >= (vd.term(vlast), vlast):
                        votes += 1
                if votes >= len(conf.voters) // 2 + 1:
                    raise Violation(
                        kind,
                        f"node {sn.id} lacks entry {c} (term {term_c}) yet could win "
                        f"an election with log position {pos} under voters "
                        f"{sorted(conf.voters)}",  # type: ignore[type-var]
                    )

    def _serve_reads(self, sn: SimNode) -> None:
        keep = []
        for index, ctx in sn.read_waits:
            if sn.app_index >= index:
                floor = self.read_floor.pop(ctx, None)
                if floor is not None:
                    self.stats.reads += 1
                    self.checker.on_read(sn.id, index, floor)
                    self.read_served(ctx)
            else:
                keep.append((index, ctx))
        sn.read_waits = keep

    def read_served(self, ctx: bytes) -> None:
        """Hook: a read completed."""

    def _restore_app(self, sn: SimNode, snap: Snapshot) -> None:
        self.stats.snapshots_installed += 1
        if not snap.meta.conf.is_member(sn.id):
            self.stats.snapshots_vouched += 1
        h = _snapshot_hash(snap)
        self.checker.on_restore(sn.id, snap.meta.index, h)
        sn.app_index = snap.meta.index
        sn.app_hash = h
        sn.app_conf = snap.meta.conf

    # -- client-side helpers ------------------------------------------------------------------

    def leader(self) -> SimNode | None:
        """The up, unpaused leader with the highest term, if any."""
        best: SimNode | None = None
        for sn in self.nodes.values():
            n = sn.node
            if (
                n is not None
                and n.role == Role.LEADER
                and sn.paused_until <= self.now
                and (best is None or n.term > best.node.term)  # type: ignore[union-attr]
            ):
                best = sn
        return best

    @_surface
    def propose(self, nid: int, datas: list[bytes]) -> int | None:
        sn = self.nodes[nid]
        if sn.node is None or sn.paused_until > self.now:
            return None
        try:
            index = sn.node.propose_many(datas)
        except ProposalDropped:
            return None
        self.process(sn)
        return index

    @_surface
    def conf_change(self, nid: int, change: ConfChange) -> int | DropReason | None:
        """The new entry's index, the node's refusal, or None if the node is unreachable."""
        sn = self.nodes[nid]
        if sn.node is None or sn.paused_until > self.now:
            return None
        try:
            index = sn.node.propose_conf_change(change)
        except ProposalDropped as e:
            return e.reason
        self.stats.conf_changes += 1
        self.process(sn)
        return index

    @_surface
    def read(self, nid: int, ctx: bytes) -> bool:
        sn = self.nodes[nid]
        if sn.node is None or sn.paused_until > self.now:
            return False
        try:
            sn.node.read_index(ctx)
        except ProposalDropped:
            return False
        self.read_floor[ctx] = self.checker.commit_index
        self.process(sn)
        return True

    @_surface
    def transfer(self, nid: int, target: int) -> None:
        sn = self.nodes[nid]
        if sn.node is None or sn.paused_until > self.now:
            return
        try:
            sn.node.transfer_leadership(target)
        except ProposalDropped:
            return
        self.stats.transfers += 1
        self.process(sn)

    def snapshot(self, nid: int, keep: int, pad: int) -> None:
        """The application snapshots at its applied index and compacts, keeping `keep`."""
        sn = self.nodes[nid]
        if sn.node is None or sn.app_conf is None:
            return
        disk = sn.disk
        if sn.app_index <= disk.snapshot().meta.index or sn.app_index > disk.last_index():
            return
        data = b"%d:%d:" % (sn.app_index, sn.app_hash) + b"." * pad
        disk.create_snapshot(sn.app_index, sn.app_conf, data)
        disk.compact(max(disk.first_index() - 1, sn.app_index - keep))
        self.stats.snapshots_taken += 1

    def isolate(self, nid: int) -> None:
        for other in self.nodes:
            if other != nid:
                self.blocked.add((nid, other))
                self.blocked.add((other, nid))

    def rejoin(self, nid: int) -> None:
        """Undo isolate(nid) (other partitions stay)."""
        self.blocked = {link for link in self.blocked if nid not in link}

    def heal(self) -> None:
        self.blocked.clear()


@dataclass
class _View:
    """A node's view of one peer's link (the liveness signal)."""

    incarnation: int
    """The peer's incarnation when the link came up."""
    linked: bool = True
    bad_since: int = -1
    """Since when the peer has been unreachable (-1: it is not)."""


def _snapshot_hash(snap: Snapshot) -> int:
    if not snap.data:
        return 0
    return int(snap.data.split(b":", 2)[1])


def is_grant(m: Message) -> bool:
    """A vote grant or an append acknowledgement: what a crash right after is interesting for."""
    return (isinstance(m, VoteResponse) and not m.reject and not m.pre_vote) or (
        isinstance(m, AppendResponse) and not m.reject and m.index > 0
    )
