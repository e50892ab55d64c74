"""Typed refusals of the Raft core (values the runtime maps to wire error codes)."""

from __future__ import annotations

from enum import IntEnum

from broker.core.raft.types import MemberId


class DropReason(IntEnum):
    NOT_LEADER = 1
    """Only the leader takes proposals, reads and conf changes; `leader` is the hint."""
    TRANSFERRING = 2
    """A leadership transfer is in progress; retry at the new leader."""
    CONF_CHANGE_PENDING = 3
    """A configuration change is uncommitted, or the leader has not yet committed an entry
    of its own term."""
    INVALID_CONF_CHANGE = 4
    """The change would leave no voter, changes nothing, or is not a single-member change."""
    BACKPRESSURE = 5
    """Too many uncommitted bytes or pending reads; retry after commits catch up."""


class ProposalDropped(Exception):
    """A proposal, read or configuration change was not accepted."""

    def __init__(self, reason: DropReason, leader: MemberId | None = None) -> None:
        super().__init__(f"{reason.name.lower()} (leader: {leader!r})")
        self.reason = reason
        self.leader = leader
