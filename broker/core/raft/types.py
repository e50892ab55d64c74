"""Value types of the Raft core: entries, states, snapshots, messages and the numbered Ready.

Every type here is a plain slotted value. Members are opaque hashable ids (the broker uses
(node id, incarnation) pairs; the simulator uses ints); "no leader" and "no vote" are None.
Index 0 with term 0 is the empty log's sentinel: real entries start at index 1, term 1.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol, TypeAlias

MemberId: TypeAlias = Hashable


class RandomSource(Protocol):
    """The injected RNG (the core never imports `random`)."""

    def randrange(self, start: int, stop: int, /) -> int: ...


class EntryKind(IntEnum):
    """NORMAL carries application bytes; NOOP is a new leader's first entry; CONF a config."""

    NORMAL = 0
    NOOP = 1
    CONF = 2


ENTRY_OVERHEAD_BYTES = 32
"""Accounting overhead per entry, added to len(data) for flow-control byte limits."""


@dataclass(slots=True, frozen=True)
class ConfState:
    """A configuration: voters decide elections and commits; learners only receive the log."""

    voters: frozenset[MemberId]
    learners: frozenset[MemberId] = frozenset()

    def __post_init__(self) -> None:
        assert not (self.voters & self.learners), "a member is either a voter or a learner"

    def members(self) -> frozenset[MemberId]:
        return self.voters | self.learners

    def is_member(self, member: MemberId) -> bool:
        """Is `member` a voter or a learner (members() without building the union)?"""
        return member in self.voters or member in self.learners


@dataclass(slots=True)
class Entry:
    """One log entry. Treated as immutable once created: logs and messages share instances."""

    index: int
    term: int
    kind: EntryKind = EntryKind.NORMAL
    data: bytes = b""
    conf: ConfState | None = None

    def size(self) -> int:
        return len(self.data) + ENTRY_OVERHEAD_BYTES


def entries_size(entries: Sequence[Entry]) -> int:
    """Accounted bytes of entries (the hot-path form of sum(e.size() for e in entries))."""
    return sum([len(e.data) for e in entries]) + ENTRY_OVERHEAD_BYTES * len(entries)


@dataclass(slots=True, frozen=True)
class HardState:
    """What must be durable before a vote or an append acknowledgement leaves the node."""

    term: int = 0
    vote: MemberId | None = None
    commit: int = 0


@dataclass(slots=True, frozen=True)
class SnapshotMeta:
    """The last index and term a snapshot covers, and the configuration in effect there."""

    index: int
    term: int
    conf: ConfState


@dataclass(slots=True, frozen=True)
class Snapshot:
    meta: SnapshotMeta
    data: bytes = b""


class Role(IntEnum):
    FOLLOWER = 0
    PRE_CANDIDATE = 1
    CANDIDATE = 2
    LEADER = 3


@dataclass(slots=True, frozen=True)
class SoftState:
    """Volatile state reported when it changes: who leads and what this node is."""

    leader: MemberId | None
    role: Role
    term: int


@dataclass(slots=True, frozen=True)
class ReadState:
    """A ReadIndex read is safe to serve once the state machine has applied `index`."""

    context: bytes
    index: int


class ConfChangeKind(IntEnum):
    ADD_VOTER = 0
    """Add a member as voter, or promote a learner."""
    ADD_LEARNER = 1
    """Add a member as learner, or demote a voter."""
    REMOVE = 2


@dataclass(slots=True, frozen=True)
class ConfChange:
    kind: ConfChangeKind
    member: MemberId


# --- messages -------------------------------------------------------------------------------
# `src`/`dst` are member ids, `term` the sender's term (for a pre-vote request: the term it
# would campaign in). Messages carry no group id: the multi-Raft layer wraps them.


@dataclass(slots=True)
class AppendEntries:
    src: MemberId
    dst: MemberId
    term: int
    prev_index: int
    prev_term: int
    entries: list[Entry]
    commit: int


@dataclass(slots=True)
class AppendResponse:
    """Success: `index` is the last index now matching the leader. Rejection: `index` is the
    rejected prev_index and (hint_index, hint_term) the follower's conflict hint."""

    src: MemberId
    dst: MemberId
    term: int
    index: int
    reject: bool = False
    hint_index: int = 0
    hint_term: int = 0


@dataclass(slots=True)
class Heartbeat:
    """`quiesce`: the leader's last heartbeat before it quiesces (its group is idle and this
    follower holds every entry); a follower whose log ends at `commit` quiesces too."""

    src: MemberId
    dst: MemberId
    term: int
    commit: int
    context: bytes | None = None
    quiesce: bool = False


@dataclass(slots=True)
class HeartbeatResponse:
    src: MemberId
    dst: MemberId
    term: int
    context: bytes | None = None


@dataclass(slots=True)
class RequestVote:
    src: MemberId
    dst: MemberId
    term: int
    last_index: int
    last_term: int
    pre_vote: bool = False
    transfer: bool = False


@dataclass(slots=True)
class VoteResponse:
    src: MemberId
    dst: MemberId
    term: int
    pre_vote: bool
    reject: bool


@dataclass(slots=True, frozen=True)
class ConfVouch:
    """A leader's word, sent with a snapshot whose configuration lacks the recipient: its
    log holds, at `index` (after the snapshot's), the configuration `conf`, of which the
    recipient is a member; so the entries that follow the snapshot add the recipient."""

    index: int
    conf: ConfState


@dataclass(slots=True)
class InstallSnapshot:
    """One chunk of a snapshot: bytes [offset, offset+len(data)) of `total_bytes`.

    `vouch` is set when the recipient is not a member of meta.conf (a member added after the
    leader's latest snapshot): the leader's latest configuration, which has every member the
    leader replicates to, and its index. A recipient installs a snapshot only if it is a
    member of meta.conf or of a vouched configuration after it (RaftNode._restore)."""

    src: MemberId
    dst: MemberId
    term: int
    meta: SnapshotMeta
    offset: int
    data: bytes
    total_bytes: int
    vouch: ConfVouch | None = None


@dataclass(slots=True)
class SnapshotResponse:
    """Chunk flow control: the receiver holds bytes [0, next_offset) of snapshot `index`
    (next_offset 0 without `reject`: it holds nothing of this transfer, start over).

    `reject`: the receiver will not take this snapshot at all, however often it is resent
    (it is larger than the receiver's `max_snapshot_bytes`, or the receiver is a member of
    neither its configuration nor the vouched one); next_offset is then 0. The leader ends
    the transfer and probes again after a pause."""

    src: MemberId
    dst: MemberId
    term: int
    index: int
    next_offset: int
    reject: bool = False


@dataclass(slots=True)
class TimeoutNow:
    """Leadership transfer: campaign now, skipping pre-vote and the check-quorum lease."""

    src: MemberId
    dst: MemberId
    term: int


@dataclass(slots=True)
class ReadIndexRequest:
    """A follower forwards a ReadIndex read to its leader."""

    src: MemberId
    dst: MemberId
    term: int
    context: bytes


@dataclass(slots=True)
class ReadIndexResponse:
    src: MemberId
    dst: MemberId
    term: int
    context: bytes
    index: int


@dataclass(slots=True)
class TransferLeader:
    """A follower forwards a leadership-transfer request to its leader."""

    src: MemberId
    dst: MemberId
    term: int
    target: MemberId


Message: TypeAlias = (
    AppendEntries
    | AppendResponse
    | Heartbeat
    | HeartbeatResponse
    | RequestVote
    | VoteResponse
    | InstallSnapshot
    | SnapshotResponse
    | TimeoutNow
    | ReadIndexRequest
    | ReadIndexResponse
    | TransferLeader
)


_NONE: tuple[()] = ()


@dataclass(slots=True)
class Ready:
    """The numbered output of a RaftNode. The caller, in this order:

    1. sends `messages` (they may leave before anything is persisted);
    2. durably writes `snapshot`, then `entries` (which replace any stored suffix from
       entries[0].index on), then `hard_state`, and reports `node.persisted(number)`; Readies
       are persisted in number order (several may share one synced write);
    3. only then sends `persisted_messages` (votes, append and snapshot acknowledgements);
    4. restores `snapshot` into the state machine, applies `committed_entries`, serves
       `read_states`, and calls `node.advance(ready)`.

    `committed_entries` are already durable locally, so a pipelined caller may apply them
    before this Ready's own write completes (only the snapshot must wait for it). The
    sequences are not to be modified by the caller.
    """

    number: int
    soft_state: SoftState | None = None
    hard_state: HardState | None = None
    snapshot: Snapshot | None = None
    entries: Sequence[Entry] = _NONE
    messages: Sequence[Message] = _NONE
    persisted_messages: Sequence[Message] = _NONE
    committed_entries: Sequence[Entry] = _NONE
    read_states: Sequence[ReadState] = _NONE
    must_sync: bool = False
    """False when the only thing to write is a higher commit index (which may lag on disk)."""
    committed_bytes: int = 0
    """Accounted bytes of committed_entries (flow control between ready() and advance())."""
