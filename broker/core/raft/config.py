"""Tunables of one Raft node. Time is counted in ticks; sizes in bytes."""

from __future__ import annotations

from dataclasses import dataclass

from broker.core.raft.types import MemberId


@dataclass(slots=True, frozen=True)
class RaftConfig:
    id: MemberId
    election_ticks: int = 6
    """Followers campaign after a timeout drawn uniformly from [election_ticks,
    2 * election_ticks); a check-quorum leader steps down after this many ticks without
    hearing from a quorum."""
    heartbeat_ticks: int = 2
    pre_vote: bool = True
    check_quorum: bool = True
    max_msg_bytes: int = 1 << 20
    """Entries per AppendEntries are capped at this many bytes (at least one entry)."""
    max_inflight_msgs: int = 256
    max_inflight_bytes: int = 32 << 20
    max_uncommitted_bytes: int = 64 << 20
    """A leader refuses a proposal (BACKPRESSURE) that would take its uncommitted bytes past
    this, counting the proposal itself, unless nothing is uncommitted: then a proposal larger
    than the limit still goes through, alone (etcd's rule). The no-op a new leader appends
    counts until it commits."""
    max_applying_bytes: int = 16 << 20
    """Committed entries handed out but not yet acknowledged by advance()."""
    max_snapshot_chunk_bytes: int = 1 << 20
    max_snapshot_bytes: int = 1 << 32
    max_pending_reads: int = 4096
    quiesce: bool = False
    """May this group quiesce when idle (`RaftNode.quiesced`): a leader whose followers hold
    every entry sends a last heartbeat flagged `quiesce` and stops ticking, and so do the
    followers that take it; any input wakes the node. The caller must then stand in for the
    heartbeats with a liveness signal of its own (`leader_unreachable`, `wake`)."""
    member_votes: bool = False
    """Grant votes only as a member of the latest or the committed configuration (a group
    whose replicas can be deleted and opened again empty under the same member id: the
    broker's partition groups). Off, a node votes whatever its configuration (a node that
    waits to be added may be needed to elect the first leader: the metadata group's
    bootstrap)."""
    applied: int = 0
    """The last index the state machine had applied before this start (restart replays
    committed entries after it)."""

    def __post_init__(self) -> None:
        if self.heartbeat_ticks < 1 or self.election_ticks <= self.heartbeat_ticks:
            raise ValueError("need 1 <= heartbeat_ticks < election_ticks")
        for name in (
            "max_msg_bytes",
            "max_inflight_msgs",
            "max_inflight_bytes",
            "max_uncommitted_bytes",
            "max_applying_bytes",
            "max_snapshot_chunk_bytes",
            "max_pending_reads",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")
