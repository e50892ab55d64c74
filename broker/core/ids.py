"""Typed identities of the broker's core: Raft members, own-proposal keys, named sentinels.

The Raft core (`broker.core.raft`) knows a member only as a hashable id; in a broker every
member of every group is a `Member`, (node id, incarnation). Members decoded from the peer
wire arrive as plain 2-tuples, which compare equal to a `Member`; `member_of` is the one
place that reads a Raft id as a member.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple


class Member(NamedTuple):
    """A Raft member: one incarnation of one broker (a broker whose data directory was lost
    comes back as a new incarnation, a different member)."""

    node: int
    incarnation: int


def member_of(raft_id: Hashable | None) -> Member | None:
    """The member a Raft id names, or None (no leader; not a broker member)."""
    if (
        isinstance(raft_id, tuple)
        and len(raft_id) == 2
        and isinstance(raft_id[0], int)
        and isinstance(raft_id[1], int)
    ):
        return raft_id if isinstance(raft_id, Member) else Member(raft_id[0], raft_id[1])
    return None


def node_of(raft_id: Hashable | None) -> int | None:
    """The broker id of a Raft member id, or None."""
    m = member_of(raft_id)
    return None if m is None else m.node


class Purpose(Enum):
    """Why a broker proposes a metadata command of its own."""

    INIT = "init"
    REGISTER = "register"
    ALIVE = "alive"
    LEADERS = "leaders"
    PRODUCER_IDS = "producer-ids"
    INTERNAL_TOPIC = "internal-topic"
    REASSIGN = "reassign"


@dataclass(frozen=True, slots=True)
class ProposalKey:
    """One of this incarnation's own metadata proposals: at most one per key is in flight
    (`about`: the broker or topic it concerns, when the purpose has several)."""

    purpose: Purpose
    about: int | str | None = None


NO_OFFSET = -1
"""An offset or watermark that is not known (a partition this broker does not serve)."""
NO_TERM = -1
"""A Raft term that is not known."""
NO_PARTITION = -1
"""The partition of a group that is not a partition's (the metadata group)."""
NOT_LEADING = -1
"""The tick a controller took charge at, while it is not in charge."""
