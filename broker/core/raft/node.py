"""RaftNode: one member of one Raft group, as a pure state machine.

Theory of operation
-------------------
The node does no I/O and reads no clock or RNG of its own. Inputs are `step(message)`,
`tick()`, `propose*()`, `propose_conf_change()`, `read_index()`, `transfer_leadership()` and
`leader_unreachable()` (the runtime lost its link to the leader); outputs accumulate until
the caller takes them as a numbered `Ready` (see `types.Ready` for the caller's procedure),
reports `persisted(number)` once that Ready's writes are durable, and calls `advance(ready)`
once it has applied it.

Durability rules the node keeps (each guards a classic bug):
- A vote, an append acknowledgement and a snapshot acknowledgement are put in
  `persisted_messages`: they leave only after the Ready that made them true is durable.
  Replies that promise nothing the disk does not already hold leave at once, so a stalled
  disk does not stall the leader's probing: append rejections, and answers to an append or
  snapshot at or below a commit index whose entries are all durable already.
- A candidate counts its own vote, and a leader its own log, only after `persisted`; so a
  single-voter group never reports an entry committed before it is durable. A candidate
  becomes leader only once its term is durable, even if others' votes already make a quorum
  (otherwise, after a crash, it could lead the same term twice with two different logs).
- Committed entries are handed to the application only once they are durable locally.

Protocol rules (Raft paper, dissertation and etcd's lessons):
- Pre-vote (a would-be candidate first asks whether it could win, without raising its term)
  and check-quorum (a leader that has not heard from a quorum for an election timeout steps
  down; a follower that heard from a leader within the minimum timeout ignores vote
  requests). To keep the two from leaving a healthy cluster leaderless (etcd#9586), a node
  answers AppendEntries or heartbeats of a lower term with its own term, and rejects a lower
  pre-vote with its term, so stale terms are always learned.
- A new leader appends a no-op of its term; nothing counts as committed in its term, no
  ReadIndex read is served and no configuration change is accepted until that no-op commits.
- Only entries of the current term commit by counting replicas (Figure 8).
- Membership changes are single-member (one voter added or removed at a time; learners may be
  added, promoted, demoted or removed). A configuration takes effect **on append**: every node
  uses the latest configuration in its log, committed or not, and reverts it if the entry is
  truncated. At most one configuration entry may be uncommitted, and a leader appends one only
  after committing an entry of its own term (Ongaro, raft-dev 2015). With
  `RaftConfig.member_votes` a node grants a vote or pre-vote only as a member (voter or
  learner) of its latest configuration or of its committed one (`_member`): a replica that
  holds no configuration naming it (opened empty, waiting to be added; or its removal
  committed) never helps elect a candidate whose stale configuration still counts its
  identity, as a replica deleted and opened again empty under the same identity would
  (it votes as if it had never acknowledged anything).
- Leadership transfer: the leader stops taking proposals, brings the target up to date and
  sends TimeoutNow; the target campaigns at once, skipping pre-vote, and its vote requests
  bypass the check-quorum lease. A transfer that does not finish within an election timeout
  is abandoned.
- ReadIndex: the leader records its commit index, confirms it still leads with a quorum of
  heartbeat acknowledgements, then releases the read; followers forward reads to it.
- Snapshots: the application snapshots and compacts its storage when it chooses; a follower
  whose next entry is compacted away receives the storage's snapshot in chunks. A node
  installs a snapshot only if it is a member of the snapshot's configuration or of the
  configuration the leader vouches for (`InstallSnapshot.vouch`: its latest, at an index
  after the snapshot's, sent to a member added after the snapshot); see `_restore`. A
  follower that will not take it (over its max_snapshot_bytes, or not its group) refuses it
  outright; the leader then drops the snapshot, counts the failure (`snapshots_refused`) and
  probes that follower again only after a pause (etcd's ReportSnapshot failure).

Quiescence (`RaftConfig.quiesce`; CockroachDB's): a group with no traffic stops ticking. A
leader whose group is idle at a heartbeat tick (every member it must wait for holds every
entry and answered since the leader was elected or last woke; everything is committed,
applied and on its own disk; no read, transfer, configuration change, snapshot or proposal
is pending; and the caller passed `tick` the members it knows unreachable, the others forming
a quorum) sends each reachable member one last heartbeat flagged `quiesce` and quiesces. A
follower takes the flag only from the leader it follows, in its term, when its log ends at the
heartbeat's commit index; it quiesces without answering. A quiesced node ignores ticks. Any
input that acts wakes it: a message (except those that carry no news: a repeated quiesce
heartbeat; at a leader, a plain heartbeat's answer; at a follower, a vote request its lease
ignores, unless its leader sent it), a proposal, read or transfer the leader takes, a
campaign, `leader_unreachable`, `wake`. A follower refuses a proposal and forwards a read or
a transfer without waking: only its leader's word or the caller's liveness signal wakes it.
Waking restarts the timers (a follower does not campaign at once; a leader counts a follower
only once it answers again). Safety never depends on quiescence: only timers stop. Liveness
rests on the caller: it must call `leader_unreachable` (or `wake`) when it loses sight of a
member's process, since heartbeats no longer tell, and a quiesced follower holds its lease
until then (a member that lost sight of the leader alone cannot depose it). A follower that
missed the flag times out and campaigns: its pre-vote wakes the leader, whose heartbeats bring
it back; a learner, which never campaigns, acknowledges its commit index to the leader
instead, which wakes it too.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Container, Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from broker.core.raft.config import RaftConfig
from broker.core.raft.errors import DropReason, ProposalDropped
from broker.core.raft.log import NO_TERM, RaftLog
from broker.core.raft.progress import CatchUpBudget, Progress, ProgressState, quorum_index
from broker.core.raft.storage import LogStorage, SnapshotTemporarilyUnavailable
from broker.core.raft.types import (
    ENTRY_OVERHEAD_BYTES,
    AppendEntries,
    AppendResponse,
    ConfChange,
    ConfChangeKind,
    ConfState,
    ConfVouch,
    Entry,
    EntryKind,
    HardState,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    MemberId,
    Message,
    RandomSource,
    ReadIndexRequest,
    ReadIndexResponse,
    ReadState,
    Ready,
    RequestVote,
    Role,
    Snapshot,
    SnapshotMeta,
    SnapshotResponse,
    SoftState,
    TimeoutNow,
    TransferLeader,
    VoteResponse,
    entries_size,
)


@dataclass(slots=True)
class _Unpersisted:
    """What a handed-out Ready asked the caller to persist (-1: nothing of that kind)."""

    number: int
    first_index: int
    """Where its write starts replacing the stored log (0 for a snapshot: all of it)."""
    last_index: int
    snapshot_index: int
    hard_state_term: int


@dataclass(slots=True)
class _PendingRead:
    index: int
    requester: MemberId
    acks: set[MemberId]


_MAX_REFUSAL_BACKOFF = 5
"""After a refused snapshot a leader waits one election timeout before probing that follower
again, doubling with each refusal in a row up to 2**5 election timeouts."""


class _Restore(IntEnum):
    """What `RaftNode._restore` did with a received snapshot."""

    INSTALLED = 0
    """The log is now the snapshot."""
    HELD = 1
    """We hold it already (at or below our commit index, or its last entry): the log stays."""
    REFUSED = 2
    """A member of neither its configuration nor a vouched one: not ours to install."""


@dataclass(slots=True)
class _SnapshotReceipt:
    """Chunks received so far of one transfer: one leader, one term, one snapshot."""

    key: tuple[MemberId, int, int, int, int]
    total: int
    data: bytearray


class RaftNode:
    """One member of one Raft group. Not thread-safe; one owner drives it."""

    def __init__(
        self,
        config: RaftConfig,
        storage: LogStorage,
        rng: RandomSource,
        *,
        catchup: CatchUpBudget | None = None,
    ) -> None:
        self.config = config
        self.catchup = catchup
        """Throttles entries to followers that lack committed entries (None: unthrottled)."""
        self._catchup_blocked = False
        self.id: MemberId = config.id
        self._rng = rng
        init = storage.initial_state()
        hs = init.hard_state
        self.log = RaftLog(storage, hs.commit, config.applied)
        self.term = hs.term
        self.vote: MemberId | None = hs.vote
        self._durable_term = hs.term
        assert init.confs, "storage must report the configuration at its first index"
        self._confs: list[tuple[int, ConfState]] = list(init.confs)
        self.conf: ConfState = self._confs[-1][1]
        self.leader: MemberId | None = None
        self.role = Role.FOLLOWER
        self.progress: dict[MemberId, Progress] = {}
        self._votes: dict[MemberId, bool] = {}
        self.lead_transferee: MemberId | None = None
        self.term_start_index = 0
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self._randomized_timeout = 0
        self._reset_randomized_timeout()

        self._msgs: list[Message] = []
        self._msgs_after: list[Message] = []
        self._read_states: list[ReadState] = []
        self._bcast_pending = False
        self._commit_bcast = False
        self._read_hb_pending = False
        self._reads: dict[bytes, _PendingRead] = {}
        self._reads_waiting: list[tuple[bytes, MemberId]] = []
        self._uncommitted: deque[tuple[int, int]] = deque()
        self._uncommitted_bytes = 0
        self._applying_bytes = 0
        self._snap_receipt: _SnapshotReceipt | None = None

        self._ready_number = 0
        self._unpersisted: deque[_Unpersisted] = deque()
        self._prev_hs = HardState(self.term, self.vote, self.log.committed)
        self._prev_ss = SoftState(None, Role.FOLLOWER, self.term)
        self.elections_won = 0
        self.elections_started = 0
        """Elections this node started as a candidate (its term raised to campaign; pre-votes
        that went no further are not counted): a plain count for the runtime's metrics."""
        self.leader_changes = 0
        """Terms in which this node learned of a leader, itself included (at most one leader
        per term, so each is a change of leadership, a re-elected leader too): a plain count
        for the runtime's metrics."""
        self._leader_term = -1
        """The last term in which a leader was learned (`leader_changes` counts each once)."""
        self.snapshots_refused = 0
        """Snapshot transfers this node, as leader, ended because the follower refused them
        (SnapshotResponse.reject): for the runtime to count or log."""
        self.snapshots_declined = 0
        """Snapshots this node refused (over max_snapshot_bytes, or not a member of their
        configuration nor of a vouched one): for the runtime to count or log."""
        self._quiesced = False
        self._answered: set[MemberId] = set()
        """With quiesce: the members that answered this leader since it last woke or was
        elected (it quiesces only once every member it waits for did)."""
        self.on_quiesce: Callable[[bool], None] | None = None
        """Called with True when the node quiesces and False when it wakes (the caller keeps
        the set of nodes it ticks)."""

    # ---------------------------------------------------------------------------------------
    # Introspection

    @property
    def commit_index(self) -> int:
        return self.log.committed

    @property
    def is_leader(self) -> bool:
        return self.role == Role.LEADER

    @property
    def quiesced(self) -> bool:
        """Idle: ticks do nothing until an input wakes the node (module doc, Quiescence)."""
        return self._quiesced

    def promotable(self) -> bool:
        """May this node campaign? A voter of its latest configuration may; so may a voter of
        the committed configuration while a change removing it is uncommitted: it may still be
        needed to commit that change (dissertation §4.2.2). It counts its own vote only if it
        is a voter of its latest configuration."""
        if self.log.unstable_snapshot is not None:
            return False
        committed = self.log.committed
        for index, conf in reversed(self._confs):
            if self.id in conf.voters:
                return True
            if index <= committed:
                return False
        return False

    def _member(self) -> bool:
        """Is this node a member of its latest configuration, or of the committed one (a
        change removing it not committed yet)? With `member_votes`, only a member grants
        votes (module doc)."""
        committed = self.log.committed
        for index, conf in reversed(self._confs):
            if conf.is_member(self.id):
                return True
            if index <= committed:
                return False
        return False

    def hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    def conf_entry_index(self) -> int:
        """Index of the latest configuration entry in the log (0: none after the base)."""
        return self._confs[-1][0]

    # ---------------------------------------------------------------------------------------
    # Inputs

    def tick(self, lost: Container[MemberId] | None = None) -> None:
        """One tick (nothing while quiesced). `lost`: with `RaftConfig.quiesce`, an idle
        leader may quiesce at this tick's heartbeat, counting on no answer from the members
        in `lost` (the caller knows their processes unreachable, and will wake this node when
        they come back); None: it may not quiesce now."""
        if self._quiesced:
            return
        if self.role == Role.LEADER:
            self._tick_leader(lost)
        else:
            self.election_elapsed += 1
            if self.election_elapsed >= self._randomized_timeout:
                if self.promotable():
                    self.election_elapsed = 0
                    self.campaign()
                elif self.config.quiesce and self.leader is not None:
                    # A learner (it never campaigns) that heard nothing for a timeout: its
                    # leader may have quiesced after a quiesce heartbeat to it was lost. Its
                    # commit index, acknowledged again, wakes the leader (and says nothing
                    # the leader does not know); like any acknowledgement, once durable.
                    self.election_elapsed = 0
                    ack = AppendResponse(self.id, self.leader, self.term, self.log.committed)
                    self._msgs_after.append(ack)

    def delay_election(self, ticks: int) -> None:
        """A follower lets `ticks` more pass before its election timeout runs out (the other
        replicas of a new group give the preferred leader time to win)."""
        if self.role == Role.FOLLOWER:
            self.election_elapsed -= ticks

    def wake(self) -> None:
        """Leave quiescence (if quiesced): tick again, from fresh timers."""
        if not self._quiesced:
            return
        self._quiesced = False
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self._answered.clear()
        if self.role == Role.LEADER:
            # Check-quorum counts only answers heard from now on.
            for member, pr in self.progress.items():
                if member != self.id:
                    pr.recent_active = False
        if self.on_quiesce is not None:
            self.on_quiesce(False)

    def _quiesce(self) -> None:
        self._quiesced = True
        if self.on_quiesce is not None:
            self.on_quiesce(True)

    def leader_unreachable(self, leader: MemberId) -> None:
        """The runtime lost its connection to `leader`'s broker (the process died, or the link
        broke). A follower of it ends its lease at once (so it grants pre-votes) and times out
        after 1 + rank * election_ticks/2 ticks instead of a full randomized timeout, where
        rank orders the other voters (rotated by term, so the next leader varies): the first
        campaigns at the next tick, the next only if that has not produced a leader. Only
        timers change, so safety does not depend on it; pre-vote keeps a leader in place that
        a quorum still hears from. Wakes a quiesced node."""
        self.wake()
        if self.role != Role.FOLLOWER or self.leader != leader or not self.promotable():
            return
        # Member ids are hashable, not ordered: any order every replica computes alike.
        others = sorted((v for v in self.conf.voters if v != leader), key=repr)
        if self.id not in others:
            return
        rank = (others.index(self.id) - self.term) % len(others)
        et = self.config.election_ticks
        self.election_elapsed = max(self.election_elapsed, et)
        self._randomized_timeout = self.election_elapsed + 1 + rank * max(1, et // 2)

    def campaign(self, *, transfer: bool = False) -> None:
        """Start an election now (pre-vote first unless transferring or disabled). Like an
        election timeout, it restarts the election timer with a new randomized timeout."""
        self.wake()
        if not self.promotable() or self.role == Role.LEADER:
            return
        if self.config.pre_vote and not transfer:
            self._become_pre_candidate()
            self._votes[self.id] = True
            if not self._tally():
                self._send_vote_requests(self.term + 1, pre_vote=True, transfer=False)
        else:
            self._become_candidate()
            self._send_vote_requests(self.term, pre_vote=False, transfer=transfer)

    def _send_vote_requests(self, term: int, *, pre_vote: bool, transfer: bool) -> None:
        last = self.log.last_index()
        last_term = self.log.term(last)
        for v in self._election_quorum():
            if v != self.id:
                self._msgs.append(
                    RequestVote(self.id, v, term, last, last_term, pre_vote, transfer)
                )

    def propose(self, data: bytes) -> int:
        """Append one entry; returns its index (it belongs to this node's current term)."""
        return self.propose_many((data,))

    def propose_many(self, datas: Iterable[bytes]) -> int:
        """Append entries (one per item); returns the index of the first. All or nothing."""
        term = self.term
        first = self.log.last_index() + 1
        normal = EntryKind.NORMAL
        entries = [Entry(i, term, normal, d) for i, d in enumerate(datas, first)]
        if not entries:
            raise ValueError("propose_many needs at least one entry")
        nbytes = entries_size(entries)
        self._check_can_propose(nbytes)
        self.wake()
        self._append_leader(entries, nbytes, scan_conf=False)
        return first

    def propose_conf_change(self, change: ConfChange) -> int:
        """Append a configuration entry; returns its index."""
        self._check_can_propose(ENTRY_OVERHEAD_BYTES)  # its size: no data
        if not self._conf_change_allowed():
            raise ProposalDropped(DropReason.CONF_CHANGE_PENDING, self.leader)
        new = _apply_change(self.conf, change)
        if new is None:
            raise ProposalDropped(DropReason.INVALID_CONF_CHANGE, self.leader)
        self.wake()
        e = Entry(self.log.last_index() + 1, self.term, EntryKind.CONF, b"", new)
        self._append_leader([e], e.size(), scan_conf=True)
        return e.index

    def read_index(self, context: bytes) -> None:
        """Ask for a linearizable read; a ReadState with this context appears in a later
        Ready once it is safe. The caller makes contexts unique."""
        if self.role == Role.LEADER:
            self.wake()
            self._leader_read(context, self.id)
        elif self.leader is not None:
            self._msgs.append(ReadIndexRequest(self.id, self.leader, self.term, context))
        else:
            raise ProposalDropped(DropReason.NOT_LEADER, None)

    def transfer_leadership(self, target: MemberId) -> None:
        if self.role == Role.LEADER:
            self.wake()
            self._start_transfer(target)
        elif self.leader is not None:
            self._msgs.append(TransferLeader(self.id, self.leader, self.term, target))
        else:
            raise ProposalDropped(DropReason.NOT_LEADER, None)

    def step(self, m: Message) -> None:
        """Handle one message from a peer."""
        if self._quiesced:
            if self._no_news(m):
                return
            self.wake()
        if isinstance(m, Heartbeat) and m.quiesce and (m.term != self.term or m.src != self.leader):
            # Only the leader this node follows, in its term, may quiesce it.
            m = Heartbeat(m.src, m.dst, m.term, m.commit, m.context)
        if m.term > self.term:
            if isinstance(m, RequestVote):
                in_lease = (
                    self.config.check_quorum
                    and self.leader is not None
                    and self.election_elapsed < self.config.election_ticks
                )
                if in_lease and not m.transfer:
                    return
                if not m.pre_vote:
                    self._adopt_term(m.term)
            elif isinstance(m, VoteResponse) and m.pre_vote and not m.reject:
                pass  # a granted pre-vote carries the term we would campaign in
            elif isinstance(m, (AppendEntries, Heartbeat, InstallSnapshot)):
                self._become_follower(m.term, m.src)
            else:
                self._adopt_term(m.term)
        elif m.term < self.term:
            if isinstance(m, (AppendEntries, Heartbeat)):
                # A leader of an older term: tell it ours so it steps down (see module doc).
                self._msgs.append(AppendResponse(self.id, m.src, self.term, 0))
            elif isinstance(m, RequestVote):
                # Reject with our term, so a candidate stuck in an old term learns ours even
                # when it is not in our (possibly stale) configuration.
                self._msgs.append(VoteResponse(self.id, m.src, self.term, m.pre_vote, True))
            return
        handler = _HANDLERS.get(type(m))
        if handler is not None:
            handler(self, m)

    def _no_news(self, m: Message) -> bool:
        """May a quiesced node stay quiesced on `m`? Its leader's quiesce heartbeat again (a
        duplicate); at a leader, an answer to a plain heartbeat of its term (sent before it
        quiesced, arriving late): neither asks for anything. And at a follower, a (pre-)vote
        request that its lease makes it ignore (`step`): its quiesced leader is alive as far
        as the caller's liveness signal tells (which ends the lease: `leader_unreachable`),
        so a member that lost sight of the leader alone must not wake it to time out and
        depose a leader the rest of the group still reaches. A request from its leader itself
        wakes it: that leader no longer leads (it stepped down on its own)."""
        if isinstance(m, RequestVote):
            return (
                m.term > self.term
                and not m.transfer
                and self.role == Role.FOLLOWER
                and self.config.check_quorum
                and self.leader is not None
                and m.src != self.leader
                and self.election_elapsed < self.config.election_ticks
            )
        if m.term != self.term:
            return False
        if isinstance(m, Heartbeat):
            return m.quiesce and m.src == self.leader and self.role == Role.FOLLOWER
        return isinstance(m, HeartbeatResponse) and m.context is None and self.is_leader

    # ---------------------------------------------------------------------------------------
    # Outputs

    def has_ready(self) -> bool:
        """Would ready() hand out anything? One test per part of a Ready, each the one that
        part is decided by: messages queued (or broadcasts ready() flushes first), read
        states, what `log.take_unstable()` hands out (`log.has_unstable()`), committed
        entries within the applying budget (`log.has_next_committed()`), and a hard or soft
        state other than the last handed out (ready() hands out a soft state on a term
        change too, which always comes with a hard state)."""
        log = self.log
        hs = self._prev_hs
        ss = self._prev_ss
        return bool(
            self._msgs
            or self._msgs_after
            or self._read_states
            or self._bcast_pending
            or self._read_hb_pending
            or hs.term != self.term
            or hs.vote != self.vote
            or hs.commit != log.committed
            or ss.leader != self.leader
            or ss.role != self.role
            or log.has_unstable()
            or (self._applying_bytes < self.config.max_applying_bytes and log.has_next_committed())
        )

    def ready(self) -> Ready:
        self._flush_broadcasts()
        self._ready_number += 1
        rd = Ready(self._ready_number)
        log = self.log
        snap, entries = log.take_unstable()
        rd.snapshot = snap
        if entries:
            rd.entries = entries
        term, vote, commit = self.term, self.vote, log.committed
        prev = self._prev_hs
        term_vote_changed = prev.term != term or prev.vote != vote
        if term_vote_changed or prev.commit != commit:
            hs = HardState(term, vote, commit)
            rd.hard_state = hs
            self._prev_hs = hs
        ss = self._prev_ss
        if ss.leader != self.leader or ss.role != self.role or ss.term != term:
            rd.soft_state = self._prev_ss = SoftState(self.leader, self.role, term)
        if len(self._confs) > 1 and prev.commit != commit:
            self._prune_confs()
        rd.must_sync = bool(entries) or snap is not None or term_vote_changed
        if self._applying_bytes < self.config.max_applying_bytes:
            committed = log.next_committed(self.config.max_applying_bytes - self._applying_bytes)
            if committed:
                log.applied = committed[-1].index
                nbytes = entries_size(committed)
                self._applying_bytes += nbytes
                rd.committed_entries = committed
                rd.committed_bytes = nbytes
        if self._msgs:
            rd.messages = self._msgs
            self._msgs = []
        if self._msgs_after:
            rd.persisted_messages = self._msgs_after
            self._msgs_after = []
        if self._read_states:
            rd.read_states = self._read_states
            self._read_states = []
        last = entries[-1] if entries else None
        hs_term = term if term_vote_changed else -1
        if last is not None or snap is not None or hs_term >= 0:
            self._unpersisted.append(
                _Unpersisted(
                    rd.number,
                    0 if snap is not None else (entries[0].index if entries else -1),
                    last.index if last is not None else -1,
                    snap.meta.index if snap is not None else -1,
                    hs_term,
                )
            )
        return rd

    def persisted(self, number: int) -> None:
        """Every Ready up to `number` has been durably written."""
        log = self.log
        written_to = -1
        while self._unpersisted and self._unpersisted[0].number <= number:
            rec = self._unpersisted.popleft()
            if rec.snapshot_index >= 0:
                log.stable_snapshot_to(rec.snapshot_index)
            if rec.last_index >= 0:
                written_to = rec.last_index  # each write replaces the stored suffix
            if rec.hard_state_term > self._durable_term:
                self._durable_term = rec.hard_state_term
        if written_to >= 0:
            # The disk now matches this log up to `written_to`, except from where a write
            # still in flight, or one not yet handed out, replaces it (an entry overwritten
            # and re-appended with the same index and term must not count as durable:
            # cockroach#127424).
            stable = min(written_to, log.handed)
            for rec in self._unpersisted:
                if rec.first_index >= 0:
                    stable = min(stable, rec.first_index - 1)
            log.stable_to(stable)
        if self.role == Role.CANDIDATE and self._durable_term == self.term:
            if self.vote == self.id:
                self._votes[self.id] = True
            self._tally()
        elif self.role == Role.LEADER:
            pr = self.progress.get(self.id)
            if pr is not None and pr.maybe_update(log.persisted_index()):
                self._maybe_commit()

    def advance(self, rd: Ready) -> None:
        """The application has applied `rd`'s committed entries."""
        self._applying_bytes -= rd.committed_bytes

    # ---------------------------------------------------------------------------------------
    # Role changes

    def _reset(self, term: int) -> None:
        if term != self.term:
            self.term = term
            self.vote = None
        self.leader = None
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self._reset_randomized_timeout()
        self.lead_transferee = None
        self._votes = {}
        self.progress = {}
        self._drop_pending_reads()
        self._bcast_pending = False
        self._commit_bcast = False
        self._uncommitted.clear()
        self._uncommitted_bytes = 0

    def _reset_randomized_timeout(self) -> None:
        et = self.config.election_ticks
        self._randomized_timeout = et + self._rng.randrange(0, et)

    def _become_follower(self, term: int, leader: MemberId | None) -> None:
        self._reset(term)
        self.role = Role.FOLLOWER
        if leader is not None:
            self._learn_leader(leader)

    def _learn_leader(self, leader: MemberId) -> None:
        """`leader` leads the current term; the first one learned in a term is a change."""
        self.leader = leader
        if self._leader_term != self.term:
            self._leader_term = self.term
            self.leader_changes += 1

    def _adopt_term(self, term: int) -> None:
        """Follow a higher term learned from a non-leader. Raft §5.2: only a leader's message
        or a granted vote restarts the election timer, a higher term alone does not; else a
        candidate that cannot win keeps resetting the timer of the one that can."""
        elapsed = self.election_elapsed
        self._become_follower(term, None)
        self.election_elapsed = elapsed

    def _become_pre_candidate(self) -> None:
        # Term and vote stay: a pre-vote changes nothing durable. The election timer restarts
        # with a new randomized timeout, as for a candidate (_reset): campaign() may be called
        # outside tick with the timer run out, and must not time out again at the next tick.
        self._votes = {}
        self.leader = None
        self.role = Role.PRE_CANDIDATE
        self.election_elapsed = 0
        self._reset_randomized_timeout()

    def _become_candidate(self) -> None:
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = Role.CANDIDATE
        self.elections_started += 1

    def _become_leader(self) -> None:
        self._reset(self.term)
        self.role = Role.LEADER
        self._learn_leader(self.id)
        self.elections_won += 1
        last = self.log.last_index()
        cfg = self.config
        for member in self.conf.members():
            self.progress[member] = Progress(
                last + 1, cfg.max_inflight_msgs, cfg.max_inflight_bytes
            )
        me = self.progress.get(self.id)
        if me is not None:
            me.match = self.log.persisted_index()
            me.become_replicate()
            me.recent_active = True
        noop = Entry(last + 1, self.term, EntryKind.NOOP)
        self.term_start_index = noop.index
        self._answered.clear()
        self._append_leader([noop], noop.size(), scan_conf=False)

    def _tally(self) -> bool:
        """Count votes; act on a won or lost election. True if the election ended."""
        voters = self._election_quorum()
        granted = rejected = 0
        for v, ok in self._votes.items():
            if v in voters:
                if ok:
                    granted += 1
                else:
                    rejected += 1
        q = len(voters) // 2 + 1
        if granted >= q:
            if self.role == Role.PRE_CANDIDATE:
                self._become_candidate()
                self._send_vote_requests(self.term, pre_vote=False, transfer=False)
            elif self._term_durable():
                self._become_leader()
            else:
                # Won, but our own term is not durable yet: a leader that crashed now would
                # come back in an older term, campaign for this one again with the same
                # voters' blessing, and write a second, different log in it.
                return False
            return True
        if rejected > len(voters) - q:
            self._become_follower(self.term, None)
            return True
        return False

    # ---------------------------------------------------------------------------------------
    # Rules that tests may break on purpose (tests/sim/mutations.py overrides these)

    def _can_vote(self, m: RequestVote) -> bool:
        return (
            self.vote == m.src
            or (self.vote is None and self.leader is None)
            or (m.pre_vote and m.term > self.term)
        )

    def _commit_term_ok(self, index: int) -> bool:
        """Only an entry of the current term commits by counting replicas (Figure 8)."""
        return self.log.term(index) == self.term

    def _send_vote_granted(self, m: RequestVote) -> None:
        self._msgs_after.append(VoteResponse(self.id, m.src, self.term, False, False))

    def _term_durable(self) -> bool:
        """Is our current term (and vote) on disk? A candidate may lead only then."""
        return self._durable_term == self.term

    def _read_needs_quorum(self) -> bool:
        return len(self.conf.voters) > 1 or self.id not in self.conf.voters

    def _conf_change_allowed(self) -> bool:
        committed = self.log.committed
        return committed >= self.term_start_index and self._confs[-1][0] <= committed

    def _merge_entries(self, entries: Sequence[Entry]) -> None:
        """Append a leader's entries from the first whose term differs, truncating ours there.
        An acknowledgement still waiting for this Ready's write that claims an index at or past
        the cut is dropped: the write will not hold what it promised (a deposed leader's
        append and a newer leader's truncating one in the same Ready)."""
        tail = entries[-1]
        if self.log.term(tail.index) != tail.term:
            for i, e in enumerate(entries):
                if self.log.term(e.index) != e.term:
                    if e.index <= self.log.last_index():
                        self._drop_acks_from(e.index)
                    self._append(entries[i:] if i else entries)
                    break

    def _drop_acks_from(self, index: int) -> None:
        self._msgs_after = [
            m
            for m in self._msgs_after
            if not (isinstance(m, AppendResponse) and not m.reject and m.index >= index)
        ]

    def _append_commit(self, leader_commit: int, last_new: int) -> int:
        """A follower commits the leader's commit index, but never past this append's last entry."""
        return min(leader_commit, last_new)

    def _log_ok(self, m: RequestVote) -> bool:
        """Is the (pre-)candidate's log at least as up to date as ours (Raft §5.4.1)?"""
        return self.log.is_up_to_date(m.last_index, m.last_term)

    def _election_quorum(self) -> frozenset[MemberId]:
        """Who is asked for (pre-)votes and whose votes count: voters, never learners."""
        return self.conf.voters

    def _commit_quorum(self) -> frozenset[MemberId]:
        """Whose acknowledgements count to commit, confirm a read or keep leading: voters only."""
        return self.conf.voters

    def _drop_pending_reads(self) -> None:
        """On every role change, drop pending ReadIndex reads: their term's confirmation is void."""
        self._reads.clear()
        self._reads_waiting.clear()
        self._read_hb_pending = False

    def _snapshot_matches(self, meta: SnapshotMeta) -> bool:
        """Does our log hold the snapshot's last entry (same index and term), so it can stay?"""
        return self.log.match_term(meta.index, meta.term)

    # ---------------------------------------------------------------------------------------
    # Leader

    def _check_can_propose(self, nbytes: int) -> None:
        """May we append a proposal of `nbytes` accounted bytes? Not past
        max_uncommitted_bytes, counting the proposal itself, unless nothing is uncommitted:
        then it goes through alone, however large (etcd's rule), so no proposal is refused
        for ever. The uncommitted bytes include this term's no-op until it commits."""
        if self.role != Role.LEADER:
            raise ProposalDropped(DropReason.NOT_LEADER, self.leader)
        if self.lead_transferee is not None:
            raise ProposalDropped(DropReason.TRANSFERRING, self.leader)
        uncommitted = self._uncommitted_bytes
        if uncommitted and uncommitted + nbytes > self.config.max_uncommitted_bytes:
            raise ProposalDropped(DropReason.BACKPRESSURE, self.leader)

    def _append_leader(self, entries: list[Entry], nbytes: int, *, scan_conf: bool) -> None:
        if scan_conf:
            self._append(entries)
        else:
            self.log.append(entries)
        self._uncommitted.append((entries[-1].index, nbytes))
        self._uncommitted_bytes += nbytes
        self._bcast_pending = True

    def _tick_leader(self, lost: Container[MemberId] | None) -> None:
        for pr in self.progress.values():
            pr.idle_ticks += 1
            if pr.pause_ticks:
                pr.pause_ticks -= 1
        if self._catchup_blocked:
            self._catchup_blocked = False
            self._bcast_pending = True  # the budget was refilled: resume catch-up sends
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        cfg = self.config
        if self.election_elapsed >= cfg.election_ticks:
            self.election_elapsed = 0
            if cfg.check_quorum:
                if not self._quorum_active():
                    self._become_follower(self.term, None)
                    return
                for member, pr in self.progress.items():
                    if member != self.id:
                        pr.recent_active = False
            if self.lead_transferee is not None:
                self.lead_transferee = None
        if self.heartbeat_elapsed >= cfg.heartbeat_ticks:
            self.heartbeat_elapsed = 0
            self._commit_bcast = False  # heartbeats carry the commit index
            if lost is not None and cfg.quiesce and self._idle(lost):
                self._quiesce_leader(lost)
                return
            self._bcast_heartbeat(self._last_read_context())
        elif self._commit_bcast:
            # The commit index rides on the next append; an idle follower learns it here,
            # within a tick, without a message per commit.
            self._commit_bcast = False
            for member in self.progress:
                if member != self.id:
                    self._maybe_send_append(member, True)

    def _idle(self, lost: Container[MemberId]) -> bool:
        """May this leader quiesce (module doc, Quiescence)? Nothing pending, everything
        committed, applied and on its own disk; every member not in `lost` holds the last
        entry and answered since this leader last woke; the voters not in `lost` a quorum."""
        log = self.log
        last = log.last_index()
        if (
            log.committed != last
            or log.applied != last
            or self._applying_bytes
            or self._uncommitted
            or self.lead_transferee is not None
            or self._reads
            or self._reads_waiting
            or self._read_hb_pending
            or self._bcast_pending
            or self._catchup_blocked
            or log.has_unstable()
            or log.unstable_snapshot is not None
            or self._confs[-1][0] > log.committed
            or self.id not in self.conf.voters
        ):
            return False
        answered = self._answered
        for member, pr in self.progress.items():
            if member == self.id:
                if pr.match != last:
                    return False
            elif member not in lost and (
                pr.match != last or pr.state == ProgressState.SNAPSHOT or member not in answered
            ):
                return False
        reachable = sum(1 for v in self.conf.voters if v == self.id or v not in lost)
        return reachable >= len(self.conf.voters) // 2 + 1

    def _quiesce_leader(self, lost: Container[MemberId]) -> None:
        last = self.log.last_index()
        for member in self.progress:
            if member != self.id and member not in lost:
                self._msgs.append(Heartbeat(self.id, member, self.term, last, None, True))
        self._quiesce()

    def _quorum_active(self) -> bool:
        voters = self._commit_quorum()
        active = 0
        for v in voters:
            if v == self.id:
                active += 1
            else:
                pr = self.progress.get(v)
                if pr is not None and pr.recent_active:
                    active += 1
        return active >= len(voters) // 2 + 1

    def _last_read_context(self) -> bytes | None:
        if not self._reads:
            return None
        return next(reversed(self._reads))

    def _bcast_heartbeat(self, context: bytes | None) -> None:
        committed = self.log.committed
        for member, pr in self.progress.items():
            if member == self.id:
                continue
            if pr.state == ProgressState.SNAPSHOT:
                pr.snapshot_idle += 1
            self._msgs.append(
                Heartbeat(self.id, member, self.term, min(pr.match, committed), context)
            )

    def _flush_broadcasts(self) -> None:
        if self.role != Role.LEADER:
            self._bcast_pending = self._read_hb_pending = False
            return
        if self._bcast_pending:
            self._bcast_pending = False
            for member in self.progress:
                if member != self.id:
                    while self._maybe_send_append(member, False):
                        pass
        if self._read_hb_pending:
            self._read_hb_pending = False
            self._bcast_heartbeat(self._last_read_context())

    def _maybe_send_append(self, to: MemberId, send_if_empty: bool) -> bool:
        pr = self.progress[to]
        if pr.is_paused():
            return False
        log = self.log
        last = log.last_index()
        if pr.next > last and not send_if_empty:
            return False
        prev = pr.next - 1
        prev_term = log.term(prev)
        limit = self.config.max_msg_bytes
        budget = self.catchup
        if budget is not None and pr.next <= log.committed:
            if budget.available <= 0:
                self._catchup_blocked = True
                return False
            limit = min(limit, budget.available)
        else:
            budget = None
        entries = log.slice(pr.next, last + 1, limit)
        if prev_term == NO_TERM or entries is None:
            return self._send_snapshot(to, pr)
        if not entries and not send_if_empty:
            return False
        self._msgs.append(
            AppendEntries(self.id, to, self.term, prev, prev_term, entries, log.committed)
        )
        if entries and budget is not None:
            budget.spend(entries_size(entries))
        if entries:
            if pr.state == ProgressState.REPLICATE:
                last_sent = entries[-1].index
                pr.next = last_sent + 1
                pr.inflights.add(last_sent, entries_size(entries))
            else:
                pr.probe_sent = True
        elif pr.state == ProgressState.PROBE:
            pr.probe_sent = True
        return True

    def _send_snapshot(self, to: MemberId, pr: Progress) -> bool:
        if not pr.recent_active:
            return False
        try:
            snap = self.log.storage.snapshot()
        except SnapshotTemporarilyUnavailable:
            return False
        pr.become_snapshot(snap)
        self._send_snapshot_chunk(to, pr)
        return True

    def _send_snapshot_chunk(self, to: MemberId, pr: Progress) -> None:
        snap = pr.snapshot
        assert snap is not None
        off = pr.snapshot_offset
        chunk = snap.data[off : off + self.config.max_snapshot_chunk_bytes]
        pr.snapshot_idle = 0
        meta = snap.meta
        vouch = None
        if not meta.conf.is_member(to):
            # Added after the snapshot: our latest configuration has it (it has a Progress),
            # at the index of the entry that made it, after the snapshot's.
            index, conf = self._confs[-1]
            if conf.is_member(to):
                vouch = ConfVouch(index, conf)
        self._msgs.append(
            InstallSnapshot(self.id, to, self.term, meta, off, chunk, len(snap.data), vouch)
        )

    def _maybe_commit(self) -> bool:
        voters = self._commit_quorum()
        progress = self.progress
        matches = [progress[v].match for v in voters if v in progress]
        if len(matches) < len(voters):
            matches.extend([0] * (len(voters) - len(matches)))
        idx = quorum_index(matches)
        if idx > self.log.committed and self._commit_term_ok(idx):
            self.log.commit_to(idx)
            self._on_commit_advanced()
            return True
        return False

    def _on_commit_advanced(self) -> None:
        committed = self.log.committed
        unc = self._uncommitted
        while unc and unc[0][0] <= committed:
            self._uncommitted_bytes -= unc.popleft()[1]
        self._prune_confs()
        self._commit_bcast = True
        if self._reads_waiting and committed >= self.term_start_index:
            waiting, self._reads_waiting = self._reads_waiting, []
            for ctx, requester in waiting:
                self._leader_read(ctx, requester)
        conf_index = self._confs[-1][0]
        if self.id not in self.conf.voters and conf_index <= committed:
            # Our removal (or demotion) is committed: hand over to the most caught-up voter.
            best = max(
                (v for v in self.conf.voters if v in self.progress),
                key=lambda v: self.progress[v].match,
                default=None,
            )
            if best is not None:
                self._msgs.append(TimeoutNow(self.id, best, self.term))
            self._become_follower(self.term, None)

    def _leader_read(self, ctx: bytes, requester: MemberId) -> None:
        if len(self._reads) + len(self._reads_waiting) >= self.config.max_pending_reads:
            raise ProposalDropped(DropReason.BACKPRESSURE, self.leader)
        if self.log.committed < self.term_start_index:
            self._reads_waiting.append((ctx, requester))
            return
        index = self.log.committed
        if not self._read_needs_quorum():
            self._release_read(ctx, requester, index)
            return
        self._reads[ctx] = _PendingRead(index, requester, {self.id})
        self._read_hb_pending = True

    def _release_read(self, ctx: bytes, requester: MemberId, index: int) -> None:
        if requester == self.id:
            self._read_states.append(ReadState(ctx, index))
        else:
            self._msgs.append(ReadIndexResponse(self.id, requester, self.term, ctx, index))

    def _start_transfer(self, target: MemberId) -> None:
        if target == self.id or target not in self.conf.voters:
            return
        if self.lead_transferee == target:
            return
        self.lead_transferee = target
        self.election_elapsed = 0
        pr = self.progress[target]
        if pr.match == self.log.last_index():
            self._msgs.append(TimeoutNow(self.id, target, self.term))
        else:
            self._maybe_send_append(target, True)

    # ---------------------------------------------------------------------------------------
    # Log and configuration

    def _append(self, entries: Sequence[Entry]) -> None:
        """Append to the log, keeping the configuration history in step (on-append rule)."""
        after = entries[0].index
        confs = self._confs
        changed = False
        while len(confs) > 1 and confs[-1][0] >= after:
            confs.pop()
            changed = True
        self.log.append(entries)
        for e in entries:
            if e.kind == EntryKind.CONF:
                assert e.conf is not None
                confs.append((e.index, e.conf))
                changed = True
        if changed:
            self._set_conf(confs[-1][1])

    def _prune_confs(self) -> None:
        confs = self._confs
        committed = self.log.committed
        while len(confs) > 1 and confs[1][0] <= committed:
            confs.pop(0)

    def _set_conf(self, conf: ConfState) -> None:
        self.conf = conf
        if self.role != Role.LEADER:
            return
        cfg = self.config
        last = self.log.last_index()
        members = conf.members()
        for member in members:
            if member not in self.progress:
                pr = Progress(last + 1, cfg.max_inflight_msgs, cfg.max_inflight_bytes)
                if member == self.id:
                    pr.match = self.log.persisted_index()
                    pr.become_replicate()
                pr.recent_active = True
                self.progress[member] = pr
        for member in [m for m in self.progress if m not in members]:
            del self.progress[member]
        if self.lead_transferee is not None and self.lead_transferee not in conf.voters:
            self.lead_transferee = None
        self._maybe_commit()

    # ---------------------------------------------------------------------------------------
    # Message handlers (term already reconciled by step())

    def _follow(self, leader: MemberId, term: int) -> bool:
        """A message from the leader of our term: follow it. False if we lead this term
        ourselves (two leaders in one term: impossible unless a rule is broken)."""
        if self.role == Role.LEADER:
            return False
        if self.role != Role.FOLLOWER:
            self._become_follower(term, leader)
        self.election_elapsed = 0
        self._learn_leader(leader)
        return True

    def _on_append(self, m: AppendEntries) -> None:
        if not self._follow(m.src, m.term):
            return
        log = self.log
        if m.prev_index < log.committed:
            self._answer_committed(m.src)
            return
        if not log.match_term(m.prev_index, m.prev_term):
            hint = min(m.prev_index, log.last_index())
            hint_index, hint_term = log.find_conflict_by_term(hint, m.prev_term)
            # A rejection promises nothing durable: it leaves at once, so a slow disk does not
            # slow the leader's probing.
            self._msgs.append(
                AppendResponse(self.id, m.src, self.term, m.prev_index, True, hint_index, hint_term)
            )
            return
        entries = m.entries
        if entries:
            self._merge_entries(entries)
        last_new = m.prev_index + len(entries)
        log.commit_to(self._append_commit(m.commit, last_new))
        self._msgs_after.append(AppendResponse(self.id, m.src, self.term, last_new))

    def _on_heartbeat(self, m: Heartbeat) -> None:
        if not self._follow(m.src, m.term):
            return
        log = self.log
        if (
            m.quiesce
            and self.config.quiesce
            and log.last_index() == m.commit
            and log.unstable_snapshot is None
        ):
            # Our log ends at the leader's last entry (it counted our answer to it): commit
            # it and go quiet with the leader, unanswered (an answer would wake it).
            log.commit_to(m.commit)
            self._quiesce()
            return
        log.commit_to(min(m.commit, log.last_index()))
        self._msgs.append(HeartbeatResponse(self.id, m.src, self.term, m.context))

    def _on_install_snapshot(self, m: InstallSnapshot) -> None:
        if not self._follow(m.src, m.term):
            return
        meta = m.meta
        log = self.log
        if meta.index <= log.committed:
            self._snap_receipt = None
            self._answer_committed(m.src)
            return
        rc = self._snap_receipt
        key = (m.src, m.term, meta.index, meta.term, m.total_bytes)
        if rc is None or rc.key != key:
            if m.offset != 0:  # we hold nothing of this transfer: start over
                self._msgs.append(SnapshotResponse(self.id, m.src, self.term, meta.index, 0))
                return
            if m.total_bytes > self.config.max_snapshot_bytes or not self._may_install(
                meta, m.vouch
            ):
                # Refused whatever is resent: say so, so the leader ends the transfer instead
                # of resending it for ever.
                self._refuse_snapshot(m)
                return
            rc = self._snap_receipt = _SnapshotReceipt(key, m.total_bytes, bytearray())
        if m.offset == len(rc.data) and len(rc.data) + len(m.data) <= rc.total:
            rc.data += m.data
        if len(rc.data) < rc.total:
            self._msgs.append(SnapshotResponse(self.id, m.src, self.term, meta.index, len(rc.data)))
            return
        self._snap_receipt = None
        done = self._restore(Snapshot(meta, bytes(rc.data)), m.vouch)
        if done == _Restore.INSTALLED:
            # Promises the snapshot: leaves once it is durable.
            self._msgs_after.append(AppendResponse(self.id, m.src, self.term, log.last_index()))
        elif done == _Restore.HELD:
            self._answer_committed(m.src)
        else:
            self._refuse_snapshot(m)

    def _refuse_snapshot(self, m: InstallSnapshot) -> None:
        self.snapshots_declined += 1
        self._msgs.append(SnapshotResponse(self.id, m.src, self.term, m.meta.index, 0, True))

    def _may_install(self, meta: SnapshotMeta, vouch: ConfVouch | None) -> bool:
        """Is this node a member of the snapshot's configuration, or of the configuration
        the leader vouches its log holds after the snapshot's index?"""
        me = self.id
        return meta.conf.is_member(me) or (
            vouch is not None and vouch.index > meta.index and vouch.conf.is_member(me)
        )

    def _restore(self, snap: Snapshot, vouch: ConfVouch | None) -> _Restore:
        """Install a received snapshot (INSTALLED: the log is now the snapshot), unless we
        hold it already (HELD: it is at or below our commit index, or our log has its last
        entry, whose commit we adopt; the log stays) or it is not ours (REFUSED).

        Ours means: this node is a member of the snapshot's configuration, or of `vouch`,
        the configuration the sending leader's log holds at an index after the snapshot's
        (`_may_install`). Like etcd ("attempted to restore snapshot but it is not in the
        ConfState"), a node never installs the state of a group it does not belong to: a
        removed node fed a stale snapshot, a misrouted one. Unlike etcd, membership may come
        from the vouch: a configuration takes effect here on append, so a leader catches a
        member it has just added up with its latest snapshot, which predates the entry
        adding it (that entry may not even commit without the new member: one voter adding
        a second). Refusing that snapshot stalled such members (DECISIONS.md); with the
        vouch the entries after the snapshot bring the configuration that adds the member,
        which until then cannot campaign (`promotable`)."""
        meta = snap.meta
        log = self.log
        if meta.index <= log.committed:
            return _Restore.HELD
        if self._snapshot_matches(meta):
            log.commit_to(meta.index)
            return _Restore.HELD
        if not self._may_install(meta, vouch):
            return _Restore.REFUSED
        log.restore(snap)
        self._confs = [(meta.index, meta.conf)]
        self._set_conf(meta.conf)
        return _Restore.INSTALLED

    def _answer_committed(self, to: MemberId) -> None:
        """Answer an append or snapshot at or below our commit index with that index: it tells
        the leader we hold every entry up to it. That promises nothing new when those entries
        are durable already, so it leaves at once (a stalled disk does not stall the leader's
        probing); if some are not (a commit index learned along with unsynced entries), it
        waits for the write like any acknowledgement."""
        log = self.log
        ack = AppendResponse(self.id, to, self.term, log.committed)
        if log.committed <= log.persisted_index():
            self._msgs.append(ack)
        else:
            self._msgs_after.append(ack)

    def _on_append_response(self, m: AppendResponse) -> None:
        if self.role != Role.LEADER:
            return
        pr = self.progress.get(m.src)
        if pr is None:
            return
        pr.recent_active = True
        pr.idle_ticks = 0
        if self.config.quiesce:
            self._answered.add(m.src)
        if m.reject:
            next_probe = m.hint_index
            if m.hint_term > 0:
                next_probe, _ = self.log.find_conflict_by_term(m.hint_index, m.hint_term)
            if pr.maybe_decr_to(m.index, next_probe):
                if pr.state == ProgressState.REPLICATE:
                    pr.become_probe()
                self._maybe_send_append(m.src, True)
            return
        if not pr.maybe_update(m.index):
            if pr.state == ProgressState.PROBE and pr.match < self.log.last_index():
                self._maybe_send_append(m.src, False)
            return
        if pr.state == ProgressState.PROBE:
            pr.become_replicate()
        elif pr.state == ProgressState.SNAPSHOT:
            if pr.snapshot is None or pr.match >= pr.snapshot.meta.index:
                pr.become_probe()
                pr.become_replicate()
        else:
            pr.inflights.free_le(m.index)
        if self._maybe_commit() and not self.is_leader:
            return  # our own removal committed: we stepped down
        while self._maybe_send_append(m.src, False):
            pass
        if m.src == self.lead_transferee and pr.match == self.log.last_index():
            self._msgs.append(TimeoutNow(self.id, m.src, self.term))

    def _on_heartbeat_response(self, m: HeartbeatResponse) -> None:
        if self.role != Role.LEADER:
            return
        pr = self.progress.get(m.src)
        if pr is None:
            return
        pr.recent_active = True
        pr.idle_ticks = 0
        pr.probe_sent = False
        if self.config.quiesce:
            self._answered.add(m.src)
        if pr.state == ProgressState.REPLICATE and pr.inflights.full():
            # An append may have been lost: free one slot so the pipeline cannot stall; a gap
            # is rejected by the follower and sends us back to probing.
            pr.inflights.free_first()
        if pr.state == ProgressState.SNAPSHOT:
            if pr.snapshot_idle >= 2:
                self._send_snapshot_chunk(m.src, pr)
        elif pr.match < self.log.last_index():
            # Even with nothing new to send: an empty append exposes a lost one (the follower
            # rejects the gap and we fall back to probing).
            self._maybe_send_append(m.src, True)
        ctx = m.context
        if ctx is None:
            return
        read = self._reads.get(ctx)
        if read is None:
            return
        read.acks.add(m.src)
        voters = self._commit_quorum()
        if sum(1 for a in read.acks if a in voters) < len(voters) // 2 + 1:
            return
        # This context and every read queued before it are confirmed.
        while self._reads:
            first_ctx = next(iter(self._reads))
            r = self._reads.pop(first_ctx)
            self._release_read(first_ctx, r.requester, r.index)
            if first_ctx == ctx:
                break

    def _on_snapshot_response(self, m: SnapshotResponse) -> None:
        if self.role != Role.LEADER:
            return
        pr = self.progress.get(m.src)
        if pr is None:
            return
        pr.recent_active = True
        pr.idle_ticks = 0
        if self.config.quiesce:
            self._answered.add(m.src)
        snap = pr.snapshot
        if pr.state != ProgressState.SNAPSHOT or snap is None or snap.meta.index != m.index:
            return
        if m.reject:
            # The follower will never take it: end the transfer (freeing the snapshot), count
            # the failure, and probe again after a pause that doubles with each refusal in a
            # row (from one election timeout up to 2**_MAX_REFUSAL_BACKOFF of them).
            pause = self.config.election_ticks << min(pr.snapshot_refusals, _MAX_REFUSAL_BACKOFF)
            pr.snapshot_refused(pause)
            self.snapshots_refused += 1
            return
        if m.next_offset == pr.snapshot_offset:
            return  # no progress (a lost chunk or a duplicate): idle heartbeats resend, paced
        pr.snapshot_offset = min(m.next_offset, len(snap.data))
        if pr.snapshot_offset < len(snap.data):
            self._send_snapshot_chunk(m.src, pr)

    def _on_request_vote(self, m: RequestVote) -> None:
        if (
            self._can_vote(m)
            and self._log_ok(m)
            and (not self.config.member_votes or self._member())
        ):
            if m.pre_vote:
                self._msgs.append(VoteResponse(self.id, m.src, m.term, True, False))
            else:
                self.election_elapsed = 0
                self.vote = m.src
                self._send_vote_granted(m)
        else:
            self._msgs.append(VoteResponse(self.id, m.src, self.term, m.pre_vote, True))
            if (
                m.pre_vote
                and self.role == Role.FOLLOWER
                and self.election_elapsed >= self.config.election_ticks
                and not self.log.is_up_to_date(m.last_index, m.last_term)
            ):
                # Our lease is over and the one asking cannot win against our log: we would
                # be the candidate anyway, so campaign now instead of waiting out our timer
                # (after a leader's link loss, the first in rank may be a few entries behind).
                self.campaign()

    def _on_vote_response(self, m: VoteResponse) -> None:
        if m.pre_vote:
            if self.role != Role.PRE_CANDIDATE:
                return
        elif self.role != Role.CANDIDATE:
            return
        self._votes[m.src] = not m.reject
        self._tally()

    def _on_timeout_now(self, m: TimeoutNow) -> None:
        if self.role == Role.FOLLOWER and self.promotable():
            self.campaign(transfer=True)

    def _on_read_index_request(self, m: ReadIndexRequest) -> None:
        if self.role != Role.LEADER:
            return
        try:
            self._leader_read(m.context, m.src)
        except ProposalDropped:
            return  # the follower's read times out and is retried

    def _on_read_index_response(self, m: ReadIndexResponse) -> None:
        if self.role == Role.LEADER:
            return
        self._read_states.append(ReadState(m.context, m.index))

    def _on_transfer_leader(self, m: TransferLeader) -> None:
        if self.role == Role.LEADER:
            self._start_transfer(m.target)


def _apply_change(conf: ConfState, change: ConfChange) -> ConfState | None:
    """The configuration after a single-member change, or None if it is invalid."""
    voters = set(conf.voters)
    learners = set(conf.learners)
    member = change.member
    if change.kind == ConfChangeKind.ADD_VOTER:
        if member in voters:
            return None
        learners.discard(member)
        voters.add(member)
    elif change.kind == ConfChangeKind.ADD_LEARNER:
        if member in learners:
            return None
        voters.discard(member)
        learners.add(member)
    else:
        if member not in voters and member not in learners:
            return None
        voters.discard(member)
        learners.discard(member)
    if not voters:
        return None
    return ConfState(frozenset(voters), frozenset(learners))


_HANDLERS: dict[type, Callable[[RaftNode, Any], None]] = {
    AppendEntries: RaftNode._on_append,
    AppendResponse: RaftNode._on_append_response,
    Heartbeat: RaftNode._on_heartbeat,
    HeartbeatResponse: RaftNode._on_heartbeat_response,
    InstallSnapshot: RaftNode._on_install_snapshot,
    SnapshotResponse: RaftNode._on_snapshot_response,
    RequestVote: RaftNode._on_request_vote,
    VoteResponse: RaftNode._on_vote_response,
    TimeoutNow: RaftNode._on_timeout_now,
    ReadIndexRequest: RaftNode._on_read_index_request,
    ReadIndexResponse: RaftNode._on_read_index_response,
    TransferLeader: RaftNode._on_transfer_leader,
}
