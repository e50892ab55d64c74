"""GroupMembership: one consumer group's members, epochs and partition ownership (pure).

The reconciliation rule of the incremental, cooperative protocol (KIP-848's), kept as the
invariant the whole group rests on:

  At most one member owns a partition at any moment, counting ownership from the member's own
  view: from the heartbeat answer that assigns it a partition until the heartbeat in which it
  reports that partition released.

So the coordinator hands a partition to its new owner only once no member holds it any more:
its previous owner is first told to revoke it (the partition leaves that member's assignment
in the answer), and the partition stays *held* by that member until a later heartbeat of the
member no longer reports it (or the member leaves or is expired: a member that is gone owns
nothing). A member's answer never contains a partition held by another member. An expired
member may still believe it owns its partitions; the client must stop processing them once its
heartbeats have failed for the session timeout, before the coordinator's expiry (counted from
the last heartbeat it applied) hands them on.

Epochs. The group epoch counts changes of membership and subscriptions; the target assignment
is the assignor's output at that epoch. A member's epoch is the group epoch its assignment
was last reconciled to; it moves forward only once the member holds nothing outside the
target (every revocation confirmed). A heartbeat must carry the member's current epoch, or the
one before it (the answer that moved it may have been lost), or 0 to join; any other is
fenced (FENCED), as is any request of a member that is gone. Commits need the current epoch.

Everything here is a pure function of the commands applied in order (no clock: session
expiry is a command the leader proposes), so every replica of the coordinator holds the same
state.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum

TopicPartition = tuple[str, int]
Assign = Callable[
    [Mapping[str, frozenset[str]], Mapping[str, int], Mapping[str, frozenset[TopicPartition]]],
    dict[str, frozenset[TopicPartition]],
]
"""An assignor: (member -> subscribed topics, topic -> partition count, member -> current
partitions) -> member -> target partitions."""


class Outcome(Enum):
    OK = "ok"
    FENCED = "fenced"
    """The request's member epoch is not the member's (a zombie), or the member is gone."""


@dataclass(slots=True)
class MemberState:
    member_id: str
    epoch: int
    topics: frozenset[str]
    previous_epoch: int = -1
    """The epoch before the last move: a heartbeat whose answer was lost still carries it."""
    held: set[TopicPartition] = field(default_factory=set)
    """Partitions this member may be processing: assigned to it and not yet reported
    released. No two members' `held` sets intersect."""


@dataclass(frozen=True, slots=True)
class HeartbeatAnswer:
    outcome: Outcome
    member_epoch: int = 0
    assigned: frozenset[TopicPartition] = frozenset()
    """What the member may own now: the partitions it holds that stay in its target, plus the
    target partitions nobody holds. What it holds outside this set it must release."""
    waiting: bool = False
    """Its target has partitions another member still holds (it should ask again soon)."""


class GroupMembership:
    def __init__(self, assign: Assign) -> None:
        self.assign = assign
        self.epoch = 0
        self.members: dict[str, MemberState] = {}
        self.partitions: dict[str, int] = {}
        """Topic -> partition count, as the last command carried it."""
        self.target: dict[str, frozenset[TopicPartition]] = {}

    # -- commands -----------------------------------------------------------------------------

    def heartbeat(
        self,
        member_id: str,
        member_epoch: int,
        topics: frozenset[str],
        owned: frozenset[TopicPartition],
        partitions: Mapping[str, int],
    ) -> HeartbeatAnswer:
        """A member's heartbeat: its epoch (0: joining), subscription, the partitions it
        still owns, and (from the proposing leader's metadata) the partition counts of the
        topics it subscribes to."""
        m = self.members.get(member_id)
        if member_epoch == 0:
            if m is not None:
                self._remove(member_id)  # a restarted member rejoins: its old life owns nothing
            m = self.members[member_id] = MemberState(member_id, 0, topics)
            self._changed(partitions)
        elif m is None or member_epoch not in (m.epoch, m.previous_epoch):
            return HeartbeatAnswer(Outcome.FENCED)
        elif topics != m.topics or any(partitions.get(t) != self.partitions.get(t) for t in topics):
            m.topics = topics
            self._changed(partitions)
        m.held &= owned  # what it reports released is released
        return self._reconcile(m)

    def leave(self, member_id: str, member_epoch: int) -> Outcome:
        m = self.members.get(member_id)
        if m is None or member_epoch not in (m.epoch, m.previous_epoch):
            return Outcome.FENCED
        self._remove(member_id)
        self._changed({})
        return Outcome.OK

    def expire(self, member_id: str) -> Outcome:
        """The leader saw no heartbeat of the member for the session timeout."""
        if member_id not in self.members:
            return Outcome.FENCED
        self._remove(member_id)
        self._changed({})
        return Outcome.OK

    def refresh(
        self, partitions: Mapping[str, int], topics_of: Mapping[str, frozenset[str]]
    ) -> None:
        """The leader saw new partition counts, or new topics matching members' patterns
        (`topics_of`: member -> its whole resolved subscription): a new target if anything
        differs."""
        changed = any(self.partitions.get(t) != n for t, n in partitions.items())
        for member_id, topics in topics_of.items():
            m = self.members.get(member_id)
            if m is not None and m.topics != topics:
                m.topics = topics
                changed = True
        if changed:
            self._changed(partitions)

    def may_commit(self, member_id: str, member_epoch: int) -> bool:
        m = self.members.get(member_id)
        return m is not None and m.epoch == member_epoch

    def replace(self, old_id: str, new_id: str) -> HeartbeatAnswer:
        """A static member's new incarnation takes over `old_id`'s place (its epoch, target
        and held partitions): no new group epoch, nothing moves. The old id is fenced."""
        m = self.members.pop(old_id)
        m.member_id = new_id
        self.members[new_id] = m
        if old_id in self.target:
            self.target[new_id] = self.target.pop(old_id)
        return self._reconcile(m)

    def peek(
        self,
        member_id: str,
        member_epoch: int,
        topics: frozenset[str],
        owned: frozenset[TopicPartition],
        partitions: Mapping[str, int],
    ) -> HeartbeatAnswer | None:
        """The answer `heartbeat` would give when it would change nothing (an idle member's
        heartbeat: answered without a Raft entry), else None. Never mutates."""
        m = self.members.get(member_id)
        if member_epoch == 0:
            return None
        if m is None or member_epoch not in (m.epoch, m.previous_epoch):
            return HeartbeatAnswer(Outcome.FENCED)
        if (
            topics != m.topics
            or any(partitions.get(t) != self.partitions.get(t) for t in topics)
            or not m.held <= owned
        ):
            return None
        target = self.target.get(member_id, frozenset())
        if m.held <= target and m.epoch != self.epoch:
            return None  # it would move to the group epoch
        free = target - m.held
        if free and any(
            not any(tp in other.held for other in self.members.values() if other is not m)
            for tp in free
        ):
            return None  # it would gain a partition nobody holds
        assigned = frozenset(m.held & target)
        return HeartbeatAnswer(Outcome.OK, m.epoch, assigned, len(assigned) < len(target))

    # -- inside -------------------------------------------------------------------------------

    def _remove(self, member_id: str) -> None:
        self.members.pop(member_id, None)

    def _changed(self, partitions: Mapping[str, int]) -> None:
        """Membership, a subscription or partition counts changed: a new group epoch and
        target assignment."""
        self.partitions.update(partitions)
        self.epoch += 1
        subscribed = {mid: m.topics for mid, m in sorted(self.members.items())}
        wanted = {t for ts in subscribed.values() for t in ts}
        counts = {t: n for t, n in sorted(self.partitions.items()) if t in wanted}
        current = {mid: frozenset(m.held) for mid, m in sorted(self.members.items())}
        self.target = self.assign(subscribed, counts, current)

    def _reconcile(self, m: MemberState) -> HeartbeatAnswer:
        target = self.target.get(m.member_id, frozenset())
        held_elsewhere = {
            tp for other in self.members.values() if other is not m for tp in other.held
        }
        m.held |= {tp for tp in target if tp not in held_elsewhere}
        assigned = frozenset(tp for tp in m.held if tp in target)
        if m.held <= target and m.epoch != self.epoch:
            # Nothing left to revoke: reconciled to the group epoch.
            m.previous_epoch, m.epoch = m.epoch, self.epoch
        return HeartbeatAnswer(Outcome.OK, m.epoch, assigned, len(assigned) < len(target))
