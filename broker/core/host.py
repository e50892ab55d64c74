"""GroupHost: every Raft group of one broker, each with its state machine, driven in rounds.

Rounds (the runtime calls them in this order, and nothing else writes):

1. `start_round()` takes a Ready from every group that has one and every machine's keyed
   writes left by the previous round's applies, and returns a `Round`: messages that may
   leave at once, and everything to persist, which the runtime writes in ONE synced write;
2. `apply_committed(round)` (optional, before the write) applies the committed entries of
   kinds that allow it (`MachineKind.apply_early`): they are durable here and on a quorum
   already, so a produce is acknowledged without waiting for the sync of the next batch
   appended in the same round;
3. `finish_round(round)` once that write is durable: each group hears `persisted(n)`, the
   messages that waited for it are returned, a received snapshot is installed, the remaining
   committed entries are applied, and the operations waiting on them complete.

Invariants:
- A group's machine applies each committed entry once, in order; the proposer of an entry is
  answered with the machine's result only if the entry applied at its index has the term it
  was proposed in (otherwise a new leader overwrote it: NOT_LEADER_OR_FOLLOWER).
- Rounds look only at groups "touched" since (a tick touches the groups it ticks; a
  message, proposal or campaign touches one), so an idle broker with thousands of groups does
  not scan them all.
- Snapshots and compactions a policy decides are listed in the round and written after its
  other writes are durable, so the apply state behind them is on disk first.

Quiescence (`RaftSettings.quiesce`; the Raft side is `RaftNode`'s, see its module doc): a
tick ticks only the active groups (not quiesced), a set kept as groups quiesce and wake
(`RaftNode.on_quiesce`), so its cost is O(active). A leader may quiesce only when every
broker holding a member of its group advertised the `quiesce` peer feature (an older broker
refuses the flagged heartbeat), and when its machine has no timer pending
(`timers_pending`: a leader's `leader_tick` runs only in active groups, so a machine with a
due timer keeps its group awake). The broker-level liveness signal stands in for the
heartbeats of quiesced groups: `peer_lost(node)` times out the groups that broker led
(`leader_unreachable`) and wakes the groups led here with a member there; `peer_back(node)`
wakes the groups led here with a member there (the broker may have restarted, perhaps as a
new incarnation, and must be caught up or replaced) and those whose leader was there (a
restarted process leads nothing). A follower whose leader is on a third broker stays
quiesced: woken, it would time out while its leader stays quiesced, and a restarted member
(no leader yet, so no lease) would grant its pre-vote and its vote, moving leadership for
nothing. The members of lost brokers are excused from a leader's idleness test, as
long as the others form a quorum. Periodic work that only an awake group can need visits
`active_groups()`; a leader's report to the controller adds `take_flipped()`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from broker.core.ids import NO_PARTITION, Member, node_of
from broker.core.machine import Applied, MachineKind, StateMachine
from broker.core.peer_codec import BrokerHeartbeat
from broker.core.raft import (
    CatchUpBudget,
    ConfChange,
    ConfState,
    DropReason,
    Entry,
    LogStorage,
    Message,
    ProposalDropped,
    RaftConfig,
    RaftNode,
    RandomSource,
    Ready,
    Role,
    Snapshot,
)
from broker.core.rounds import Compaction, Completion, Envelope, Round
from broker.wire.errors import ErrorCode


@dataclass(slots=True)
class Waiter:
    """A proposal of this broker waiting to be applied: its operation and the term it was
    proposed in."""

    token: int
    slot: int
    term: int


class SnapshotPolicy(Protocol):
    """When a group snapshots its machine and compacts its log."""

    def after_apply(self, group: HostedGroup, index: int) -> Compaction | None:
        """The machine just applied `index`: a snapshot and compaction to write, if due."""
        ...

    def on_install(self, group: HostedGroup) -> None:
        """A snapshot from the leader replaced the machine."""
        ...


@dataclass(slots=True)
class HostedGroup:
    id: int
    raft: RaftNode
    storage: LogStorage
    kind: MachineKind
    machine: StateMachine
    policy: SnapshotPolicy
    topic: str | None = None
    partition: int = NO_PARTITION
    waiters: dict[int, Waiter] = field(default_factory=dict)
    dirty: bool = False
    """Applied entries (or a restore) since its machine's writes were last taken."""
    snapshot_index: int = 0
    """Index of the group's latest snapshot, on disk or listed in a Compaction."""
    compacted_to: int = 0
    """The log is compacted up to here, on disk or by a listed Compaction."""
    on_applied: Callable[[Entry, Applied], None] | None = None
    """Called after each entry the machine applied (the metadata group opens partitions)."""
    on_installed: Callable[[int], None] | None = None
    """Called after a snapshot from the leader replaced the machine (its index)."""
    snapshots_installed: int = 0
    """Snapshots from the leader installed here since the group opened (a metric)."""

    def serving(self) -> bool:
        """Leader with its term's no-op committed: may serve reads and writes."""
        r = self.raft
        return r.role == Role.LEADER and r.commit_index >= r.term_start_index

    def conf_at(self, index: int) -> ConfState:
        """The configuration in effect at `index`, which the storage holds (applied entries
        are durable, and nothing at or after its first index - 1 is compacted)."""
        confs = self.storage.initial_state().confs
        conf = confs[0][1]
        for i, c in confs:
            if i > index:
                break
            conf = c
        return conf


@dataclass(frozen=True, slots=True)
class RaftSettings:
    """The Raft settings every group of this broker shares."""

    member: Member
    election_ticks: int
    heartbeat_ticks: int
    max_msg_bytes: int
    max_inflight_msgs: int
    max_uncommitted_bytes: int
    max_snapshot_chunk_bytes: int
    quiesce: bool = False
    """Idle groups may quiesce (see the module doc)."""


class _OnBrokers:
    """The members (Raft ids) whose broker is in `nodes`: a `lost` set for `RaftNode.tick`."""

    __slots__ = ("nodes",)

    def __init__(self, nodes: set[int]) -> None:
        self.nodes = nodes

    def __contains__(self, member: object) -> bool:
        return node_of(member) in self.nodes


def _timers_pending(g: HostedGroup) -> bool:
    """Has the group's machine a timer that its leader's ticks must drive? A machine may say
    so (`timers_pending()`); one that does not is taken at its kind's word (`has_timers`)."""
    pending = getattr(g.machine, "timers_pending", None)
    return bool(pending()) if pending is not None else g.kind.has_timers


class GroupHost:
    def __init__(
        self, settings: RaftSettings, rng: RandomSource, catchup: CatchUpBudget | None
    ) -> None:
        self.settings = settings
        self.rng = rng
        self.catchup = catchup
        self.groups: dict[int, HostedGroup] = {}
        self._touched: set[int] = set()
        self._timed: set[int] = set()
        """Groups whose machine kind has leader timers."""
        self.quiesce = settings.quiesce
        self._active: set[int] = set()
        """Groups not quiesced (all of them unless `quiesce`): the ones a tick ticks."""
        self._flipped: set[int] = set()
        """Groups that quiesced or woke since `take_flipped`."""
        self._lost: set[int] = set()
        """Brokers whose link is lost (`peer_lost`, until `peer_back`)."""
        self._lost_members = _OnBrokers(self._lost)
        self._quiescent_peers: set[int] = set()
        """Brokers whose hello advertised the `quiesce` feature (`peer_features`)."""
        self._me = node_of(settings.member)
        self._dropped: list[int] = []
        self._parting: dict[int, int] = {}
        """Groups dropped with their storage kept a while: gid -> ticks left before deletion."""
        self._compactions: list[Compaction] = []
        self.completions: list[Completion] = []

    # -- groups -----------------------------------------------------------------------------

    def open(
        self,
        gid: int,
        storage: LogStorage,
        kind: MachineKind,
        machine: StateMachine,
        policy: SnapshotPolicy,
        *,
        throttled: bool = True,
        member_votes: bool = False,
    ) -> HostedGroup:
        """Host group `gid` over `storage`, its machine restored to `machine.applied_index`
        (the Raft node starts applying after it). `throttled`: its catch-up traffic counts
        against the broker's CatchUpBudget; `member_votes`: its node votes only as a member
        (`RaftConfig.member_votes`). A group dropped since the last round began is
        kept instead of deleted (its replica moved away and back before the deletion: it
        rejoins with the log it has, as any follower that was away)."""
        if gid in self._dropped:
            self._dropped.remove(gid)
        self._parting.pop(gid, None)
        s = self.settings
        config = RaftConfig(
            id=s.member,
            election_ticks=s.election_ticks,
            heartbeat_ticks=s.heartbeat_ticks,
            max_msg_bytes=s.max_msg_bytes,
            max_inflight_msgs=s.max_inflight_msgs,
            max_uncommitted_bytes=s.max_uncommitted_bytes,
            max_snapshot_chunk_bytes=s.max_snapshot_chunk_bytes,
            quiesce=s.quiesce,
            member_votes=member_votes,
            applied=machine.applied_index,
        )
        raft = RaftNode(config, storage, self.rng, catchup=self.catchup if throttled else None)
        g = HostedGroup(gid, raft, storage, kind, machine, policy)
        g.compacted_to = storage.first_index() - 1
        g.snapshot_index = storage.snapshot().meta.index
        self.groups[gid] = g
        self._touched.add(gid)
        self._active.add(gid)
        if s.quiesce:
            raft.on_quiesce = lambda quiesced: self._on_quiesce(gid, quiesced)
        if kind.has_timers:
            self._timed.add(gid)
        return g

    def drop(
        self, gid: int, error: ErrorCode, message: str, *, keep_ticks: int = 0
    ) -> HostedGroup | None:
        """Stop hosting `gid` (its storage is deleted in the next round's write, or after
        `keep_ticks` ticks unless it is opened again first); its waiting proposals fail with
        `error`."""
        g = self.groups.pop(gid, None)
        if g is None:
            return None
        self._timed.discard(gid)
        self._active.discard(gid)
        self._flipped.discard(gid)
        g.raft.on_quiesce = None
        self.fail_waiters(g, error, message)
        self._compactions = [c for c in self._compactions if c.group_id != gid]
        if keep_ticks > 0:
            self._parting[gid] = keep_ticks
        else:
            self._dropped.append(gid)
        return g

    # -- inputs -----------------------------------------------------------------------------

    def tick(self) -> None:
        for gid, left in list(self._parting.items()):
            if left <= 1:
                del self._parting[gid]
                self._dropped.append(gid)
            else:
                self._parting[gid] = left - 1
        groups = self.groups
        if not self.quiesce:
            for g in groups.values():
                g.raft.tick()
            self._touched.update(groups)
            timed: Iterable[int] = self._timed
        else:
            ticked = list(self._active)
            for gid in ticked:
                g = groups[gid]
                g.raft.tick(self._quiesce_gate(g))
            self._touched.update(ticked)
            # A leader's timers run only while its group is awake (it quiesces only with none
            # pending); one that quiesced at this tick has nothing due.
            timed = [gid for gid in self._timed if gid in self._active]
        for gid in timed:
            g = groups[gid]
            if g.serving():
                for command in g.machine.leader_tick():
                    self.propose(g, command)

    def _quiesce_gate(self, g: HostedGroup) -> _OnBrokers | None:
        """What `RaftNode.tick` takes as `lost` for group `g`: None (it may not quiesce now)
        unless it leads, its machine has no timer pending and every other broker holding a
        member advertised the feature; then the members on lost brokers."""
        raft = g.raft
        if raft.role != Role.LEADER or _timers_pending(g):
            return None
        peers = self._quiescent_peers
        me = self._me
        for member in raft.progress:
            node = node_of(member)
            if node != me and node not in peers:
                return None
        return self._lost_members

    def _on_quiesce(self, gid: int, quiesced: bool) -> None:
        if quiesced:
            self._active.discard(gid)
        elif gid in self.groups:
            self._active.add(gid)
            self._touched.add(gid)
        self._flipped.add(gid)

    # -- quiescence: what the runtime tells and asks -----------------------------------------

    def active_groups(self) -> Iterator[HostedGroup]:
        """The groups not quiesced (every group unless `quiesce`), in no particular order:
        periodic work that only an awake group can need visits these."""
        groups = self.groups
        if not self.quiesce:
            yield from list(groups.values())
            return
        for gid in list(self._active):
            g = groups.get(gid)
            if g is not None:
                yield g

    def take_flipped(self) -> set[int]:
        """The groups that quiesced or woke since the last call (a leader reports them)."""
        flipped, self._flipped = self._flipped, set()
        return flipped

    @property
    def quiesced_count(self) -> int:
        return len(self.groups) - len(self._active)

    def is_lost(self, node_id: int) -> bool:
        """Is the link to broker `node_id` lost (`peer_lost`, no `peer_back` since)?"""
        return node_id in self._lost

    def peer_features(self, node_id: int, quiesce: bool) -> None:
        """Broker `node_id`'s hello: whether it advertised the `quiesce` feature."""
        if quiesce:
            self._quiescent_peers.add(node_id)
        else:
            self._quiescent_peers.discard(node_id)

    def peer_lost(self, node_id: int) -> None:
        """The link to broker `node_id` is lost: time out the groups it led, and wake the
        groups led here with a member there (they count on that member no longer)."""
        self._lost.add(node_id)
        self.leader_unreachable(node_id)
        self._wake_for(node_id)

    def peer_back(self, node_id: int) -> None:
        """A link to broker `node_id` is up (again): wake the groups led here with a member
        there, and the followers whose leader was there."""
        self._lost.discard(node_id)
        self._wake_for(node_id)

    def _wake_for(self, node_id: int) -> None:
        """Wake the quiesced groups that broker `node_id`'s loss or return concerns: those
        led here with a member there, and those whose leader is there (module doc)."""
        if not self.quiesce or len(self._active) == len(self.groups):
            return
        for gid in [gid for gid in self.groups if gid not in self._active]:
            raft = self.groups[gid].raft
            if raft.role == Role.LEADER:
                if any(node_of(m) == node_id for m in raft.conf.members()):
                    raft.wake()
            elif node_of(raft.leader) == node_id:
                raft.wake()

    def step(self, gid: int, message: Message) -> None:
        """A Raft message from a peer; one addressed to another member (an earlier
        incarnation of this broker, or a confused peer) is dropped."""
        g = self.groups.get(gid)
        if g is not None and message.dst == g.raft.id:
            g.raft.step(message)
            self._touched.add(gid)

    def propose(self, g: HostedGroup, data: bytes) -> int | None:
        """Propose a command nobody waits on; its index, or None when dropped."""
        try:
            index = g.raft.propose(data)
        except ProposalDropped:
            return None
        self._touched.add(g.id)
        return index

    def propose_waiting(
        self, g: HostedGroup, data: bytes, token: int, slot: int
    ) -> tuple[ErrorCode, str | None]:
        """Propose; NONE means a Completion with the machine's result will follow."""
        try:
            index = g.raft.propose(data)
        except ProposalDropped as e:
            if e.reason == DropReason.BACKPRESSURE:
                return ErrorCode.BACKPRESSURE, "too many uncommitted bytes; retry"
            return ErrorCode.NOT_LEADER_OR_FOLLOWER, str(e)
        self._touched.add(g.id)
        g.waiters[index] = Waiter(token, slot, g.raft.term)
        return ErrorCode.NONE, None

    def transfer_leader(self, g: HostedGroup, target: Member) -> None:
        """Have `g`'s leader hand leadership to `target` (Raft's transfer: the target is
        brought up to date, then sent TimeoutNow; abandoned after an election timeout)."""
        self._touched.add(g.id)
        with contextlib.suppress(ProposalDropped):
            g.raft.transfer_leadership(target)

    def propose_conf(self, g: HostedGroup, change: ConfChange) -> None:
        """Refused while another change is uncommitted: the caller tries again later."""
        self._touched.add(g.id)
        with contextlib.suppress(ProposalDropped):
            g.raft.propose_conf_change(change)

    def cancel(self, token: int) -> None:
        """The runtime gave up on an operation (timeout, connection closed)."""
        for g in self.groups.values():
            for index in [i for i, w in g.waiters.items() if w.token == token]:
                del g.waiters[index]

    def complete(
        self,
        token: int,
        slot: int,
        error: ErrorCode,
        message: str | None = None,
        value: object = None,
    ) -> None:
        self.completions.append(Completion(token, slot, error, message, value))

    def fail_waiters(self, g: HostedGroup, error: ErrorCode, message: str) -> None:
        for w in g.waiters.values():
            self.complete(w.token, w.slot, error, message)
        g.waiters.clear()

    # -- rounds -----------------------------------------------------------------------------

    def has_work(self) -> bool:
        if self.completions or self._dropped or self._compactions:
            return True
        for gid in list(self._touched):
            g = self.groups.get(gid)
            if g is not None and (g.dirty or g.raft.has_ready()):
                return True
            self._touched.discard(gid)  # nothing to do: forget it until touched again
        return False

    def start_round(self, heartbeats: list[tuple[int, BrokerHeartbeat]]) -> Round:
        readies: list[tuple[int, Ready]] = []
        messages: list[Envelope] = []
        writes = []
        touched, self._touched = sorted(self._touched), set()
        for gid in touched:
            g = self.groups.get(gid)
            if g is None:
                continue
            if g.dirty:
                g.dirty = False
                w = g.machine.take_writes()
                if w is not None:
                    writes.append((gid, w))
            if g.raft.has_ready():
                rd = g.raft.ready()
                readies.append((gid, rd))
                messages.extend(_envelopes(gid, rd.messages))
        dropped, self._dropped = self._dropped, []
        compactions, self._compactions = self._compactions, []
        return Round(readies, messages, writes, dropped, heartbeats, compactions=compactions)

    def apply_committed(self, rnd: Round) -> list[Completion]:
        """Apply the round's committed entries of early-applying kinds before its write.

        Safe because a Ready's committed entries never run ahead of the local log's persisted
        index: they are durable here and on a quorum already. A Ready that installs a
        snapshot still applies in `finish_round`. Optional: a runtime that skips it gets the
        same results from `finish_round`."""
        for gid, rd in rnd.readies:
            g = self.groups.get(gid)
            if g is None or not g.kind.apply_early or not rd.committed_entries or rd.snapshot:
                continue
            rnd.applied_early.add(gid)
            for e in rd.committed_entries:
                self._apply(g, e)
            g.raft.advance(rd)
        done, self.completions = self.completions, []
        return done

    def finish_round(self, rnd: Round) -> list[Envelope]:
        """The round's write is durable: release acknowledgements, install, apply. The
        caller takes the completions (`take_completions`) after its own reactions."""
        after: list[Envelope] = []
        for gid, rd in rnd.readies:
            g = self.groups.get(gid)
            if g is None:
                continue
            self._touched.add(gid)
            g.raft.persisted(rd.number)
            after.extend(_envelopes(gid, rd.persisted_messages))
            if rd.soft_state is not None and rd.soft_state.role != Role.LEADER:
                self.fail_waiters(g, ErrorCode.NOT_LEADER_OR_FOLLOWER, "leadership lost")
            if rd.snapshot is not None:
                self._install(g, rd.snapshot)
            if gid in rnd.applied_early:
                continue
            for e in rd.committed_entries:
                self._apply(g, e)
            g.raft.advance(rd)
        return after

    def take_completions(self) -> list[Completion]:
        done, self.completions = self.completions, []
        return done

    # -- apply, snapshots -------------------------------------------------------------------

    def _apply(self, g: HostedGroup, e: Entry) -> None:
        res = g.machine.apply_entry(e)
        g.dirty = True
        if g.on_applied is not None:
            g.on_applied(e, res)
        compaction = g.policy.after_apply(g, e.index)
        if compaction is not None:
            self._compactions.append(compaction)
            g.snapshot_index = compaction.index
            g.compacted_to = compaction.compact_to
        w = g.waiters.pop(e.index, None)
        if w is None:
            return
        if w.term != e.term:
            self.complete(w.token, w.slot, ErrorCode.NOT_LEADER_OR_FOLLOWER,
                          "proposal lost to a new leader")  # fmt: skip
            return
        self.complete(w.token, w.slot, res.error, res.message, res.value)

    def _install(self, g: HostedGroup, snap: Snapshot) -> None:
        """A snapshot received from the leader is durable: restore the group's machine from
        it (the Raft log is now the snapshot; entries after it follow by append). Proposals
        it covers fail: their outcome is unknown here (an idempotent retry is answered as a
        duplicate)."""
        index = snap.meta.index
        for i in sorted(i for i in g.waiters if i <= index):
            w = g.waiters.pop(i)
            self.complete(
                w.token,
                w.slot,
                ErrorCode.NOT_LEADER_OR_FOLLOWER,
                "proposal covered by a snapshot from the leader; its outcome is unknown here",
            )
        g.snapshot_index = g.compacted_to = index
        g.snapshots_installed += 1
        self._compactions = [c for c in self._compactions if c.group_id != g.id]
        g.machine.restore_snapshot(snap.data)
        assert g.machine.applied_index == index, "a snapshot is its machine's state at its index"
        g.dirty = True
        g.policy.on_install(g)
        if g.on_installed is not None:
            g.on_installed(index)

    def leader_unreachable(self, node_id: int) -> None:
        """Every group led by broker `node_id` times out soon (its link broke)."""
        for gid, g in self.groups.items():
            lead = g.raft.leader
            if node_of(lead) == node_id:
                g.raft.leader_unreachable(lead)
                self._touched.add(gid)


def _envelopes(gid: int, msgs: Iterable[Message]) -> list[Envelope]:
    out = []
    for m in msgs:
        dst = node_of(m.dst)
        assert dst is not None, "every member of a broker's group is a Member"
        out.append(Envelope(dst, gid, m))
    return out
