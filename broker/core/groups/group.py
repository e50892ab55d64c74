"""ConsumerGroup: one consumer group's replicated state and the commands that change it (pure).

A group holds its membership (`GroupMembership`: epochs, target assignment, partitions each
member holds), what each member told about itself (instance id, client, host, session
timeout, subscription), its committed offsets, and the reason and time of the last change of
its target assignment. Every method here is a command applied in log order on every replica:
deterministic, no clock (the time in a command is the proposing leader's wall clock, kept
only to be shown), no metadata lookups (the leader resolved patterns and partition counts
into the command).

Static membership (KIP-345 as KIP-848 keeps it): a member with an instance id that leaves with
epoch -2 stays in the group, holding its partitions, until its session expires; a new member
with the same instance id joining before then takes its place (same epoch, same partitions, no
new group epoch). A join with an instance id that a member still active holds is refused
(UNRELEASED_INSTANCE_ID) until that member leaves or expires.

Commits are accepted from a member (its current or previous epoch) only for partitions it
holds, so a member that was fenced, expired or has released a partition can never commit it;
an operator's commit (member "", epoch -1) only while the group has no members.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from broker.core.groups.assignors import ASSIGNORS, Subscription, TopicPartition
from broker.core.groups.membership import Assign, GroupMembership, HeartbeatAnswer, Outcome
from broker.wire.errors import ErrorCode

DEFAULT_ASSIGNOR = "uniform"


@dataclass(slots=True)
class MemberInfo:
    """What a member said about itself (shown by describe; not used to assign)."""

    instance_id: str | None
    client_id: str | None
    client_host: str | None
    session_ms: int
    topics: tuple[str, ...]
    """The topic names it subscribed to (without its pattern's matches)."""
    pattern: str | None
    left: bool = False
    """A static member that left with epoch -2: it keeps its place until it expires."""
    seen: int = 0
    """Index of the last entry that heard from it (an expiry proposed before it is void)."""


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A heartbeat command as the leader proposed it (pattern already resolved)."""

    member_id: str
    member_epoch: int
    instance_id: str | None
    client_id: str | None
    client_host: str | None
    session_ms: int
    topics: tuple[str, ...]
    pattern: str | None
    resolved: frozenset[str]
    """Every topic it subscribes to: its names and its pattern's matches."""
    assignor: str | None
    owned: frozenset[TopicPartition]
    partitions: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class Committed:
    offset: int
    metadata: str | None
    meta_index: int
    """The metadata index the proposing leader had applied (offsets of a topic absent from
    metadata at or after it are dropped)."""


@dataclass(frozen=True, slots=True)
class _NamedAssignor:
    """The named assignor in the shape GroupMembership calls it (topic sets per member); a
    value, so a group can be copied and pickled."""

    name: str

    def __call__(
        self,
        subscribed: Mapping[str, frozenset[str]],
        counts: Mapping[str, int],
        current: Mapping[str, frozenset[TopicPartition]],
    ) -> dict[str, frozenset[TopicPartition]]:
        subs = {m: Subscription(ts) for m, ts in subscribed.items()}
        return ASSIGNORS[self.name].assign(subs, counts, current)


def _assignor(name: str) -> Assign:
    if name not in ASSIGNORS:
        raise KeyError(name)  # an unknown name fails here, not at the first rebalance
    return _NamedAssignor(name)


@dataclass(slots=True)
class ConsumerGroup:
    group_id: str
    assignor: str = DEFAULT_ASSIGNOR
    membership: GroupMembership = field(init=False)
    members: dict[str, MemberInfo] = field(default_factory=dict)
    offsets: dict[TopicPartition, Committed] = field(default_factory=dict)
    rebalance_reason: str = ""
    rebalance_ms: int = -1
    meta_index: int = 0
    """The newest metadata index any command of this group carried."""
    changed: int = 0
    """Index of the last entry that changed the group (an expiry proposed before it is void)."""
    pending: dict[int, dict[TopicPartition, Committed]] = field(default_factory=dict)
    """Offsets committed inside open transactions, per producer id: they become `offsets`
    when the transaction commits and vanish when it aborts."""

    def __post_init__(self) -> None:
        self.membership = GroupMembership(_assignor(self.assignor))

    @property
    def empty(self) -> bool:
        return not self.members

    @property
    def disposable(self) -> bool:
        """Nothing left to keep: no member, no offset, no transaction's offsets."""
        return not self.members and not self.offsets and not self.pending

    def unstable(self, tp: TopicPartition) -> bool:
        """An open transaction holds an offset of `tp` (a reader waits for its outcome)."""
        return any(tp in staged for staged in self.pending.values())

    def state(self) -> str:
        if not self.members:
            return "empty"
        ms = self.membership
        target = ms.target
        settled = all(
            m.epoch == ms.epoch and m.held == set(target.get(mid, frozenset()))
            for mid, m in ms.members.items()
        )
        return "stable" if settled else "reconciling"

    def instance_holder(self, instance_id: str) -> str | None:
        for mid, info in self.members.items():
            if info.instance_id == instance_id:
                return mid
        return None

    # -- commands ---------------------------------------------------------------------------

    def heartbeat(
        self, hb: Heartbeat, index: int, meta_index: int, now_ms: int
    ) -> tuple[ErrorCode, HeartbeatAnswer | None]:
        epoch_before = self.membership.epoch
        if hb.assignor is not None and hb.assignor != self.assignor and not self.members:
            # The group's assignor is its first member's; later members follow it.
            self.assignor = hb.assignor
            self.membership.assign = _assignor(hb.assignor)
        partitions = hb.partitions if meta_index >= self.meta_index else {}
        self.meta_index = max(self.meta_index, meta_index)
        reason = ""
        if hb.member_epoch == 0 and hb.instance_id is not None:
            holder = self.instance_holder(hb.instance_id)
            if holder is not None and holder != hb.member_id:
                if not self.members[holder].left:
                    return ErrorCode.UNRELEASED_INSTANCE_ID, None
                self.members[hb.member_id] = self.members.pop(holder)
                self.membership.replace(holder, hb.member_id)
                hb = _rejoined(hb, self.membership.members[hb.member_id].epoch)
        if hb.member_epoch == 0 and hb.member_id not in self.membership.members:
            reason = f"member {hb.member_id} joined"
        elif hb.member_epoch == 0:
            reason = f"member {hb.member_id} rejoined"
        answer = self.membership.heartbeat(
            hb.member_id, hb.member_epoch, hb.resolved, hb.owned, partitions
        )
        if answer.outcome is Outcome.FENCED:
            return _fenced(self, hb.member_id), None
        self.members[hb.member_id] = MemberInfo(
            hb.instance_id, hb.client_id, hb.client_host, hb.session_ms, hb.topics,
            hb.pattern, seen=index,
        )  # fmt: skip
        if self.membership.epoch != epoch_before:
            self.rebalance_reason = reason or f"member {hb.member_id} changed its subscription"
            self.rebalance_ms = now_ms
        self.changed = index
        return ErrorCode.NONE, answer

    def leave(
        self, member_id: str, member_epoch: int, temporary: bool, index: int, now_ms: int
    ) -> ErrorCode:
        info = self.members.get(member_id)
        ms = self.membership.members.get(member_id)
        if info is None or ms is None or member_epoch not in (ms.epoch, ms.previous_epoch):
            return _fenced(self, member_id)
        self.changed = index
        if temporary and info.instance_id is not None:
            info.left = True  # keeps its place and partitions until its session expires
            info.seen = index
            ms.held.clear()  # it stopped processing: it owns nothing until it comes back
            return ErrorCode.NONE
        self.membership.leave(member_id, member_epoch)
        del self.members[member_id]
        self.rebalance_reason, self.rebalance_ms = f"member {member_id} left", now_ms
        return ErrorCode.NONE

    def expire(self, member_id: str, seen: int, index: int, now_ms: int) -> ErrorCode:
        """The leader saw nothing of the member for its session timeout since entry `seen`."""
        info = self.members.get(member_id)
        if info is None or info.seen != seen:
            return ErrorCode.UNKNOWN_MEMBER_ID  # gone already, or heard from since
        self.membership.expire(member_id)
        del self.members[member_id]
        self.changed = index
        self.rebalance_reason = f"member {member_id} expired (session timeout)"
        self.rebalance_ms = now_ms
        return ErrorCode.NONE

    def refresh(
        self, partitions: Mapping[str, int], resolved: Mapping[str, frozenset[str]],
        meta_index: int, index: int, now_ms: int,
    ) -> None:  # fmt: skip
        """New partition counts or pattern matches seen in metadata by the leader."""
        if meta_index < self.meta_index or not self.members:
            return
        self.meta_index = meta_index
        epoch = self.membership.epoch
        self.membership.refresh(partitions, resolved)
        if self.membership.epoch != epoch:
            self.changed = index
            self.rebalance_reason, self.rebalance_ms = "topic metadata changed", now_ms

    def commit(
        self,
        member_id: str,
        member_epoch: int,
        offsets: list[tuple[str, int, int, str | None]],
        meta_index: int,
        index: int,
        *,
        producer_id: int = -1,
    ) -> list[ErrorCode]:
        """Per partition: NONE (committed) or why not. With a `producer_id` the offsets are
        staged in its open transaction (the caller checked the transaction is open)."""
        if member_id == "":
            if self.members:
                return [ErrorCode.NON_EMPTY_GROUP] * len(offsets)
            allowed: set[TopicPartition] | None = None
        else:
            ms = self.membership.members.get(member_id)
            if ms is None or member_id not in self.members:
                return [ErrorCode.UNKNOWN_MEMBER_ID] * len(offsets)
            if member_epoch not in (ms.epoch, ms.previous_epoch):
                return [ErrorCode.FENCED_MEMBER_EPOCH] * len(offsets)
            allowed = ms.held
        target = self.offsets if producer_id < 0 else self.pending.setdefault(producer_id, {})
        out = []
        for topic, partition, offset, metadata in offsets:
            if allowed is not None and (topic, partition) not in allowed:
                out.append(ErrorCode.STALE_MEMBER_EPOCH)
                continue
            target[(topic, partition)] = Committed(offset, metadata, meta_index)
            out.append(ErrorCode.NONE)
        if producer_id >= 0 and not target:
            del self.pending[producer_id]
        self.changed = index
        return out

    def end_transaction(self, producer_id: int, committed: bool, index: int) -> bool:
        """The producer's transaction ended: its staged offsets become committed (or are
        dropped). Returns whether the group held any."""
        staged = self.pending.pop(producer_id, None)
        if staged is None:
            return False
        if committed:
            self.offsets.update(staged)
        self.changed = index
        return True

    def drop_topics(
        self, topics: frozenset[str], meta_index: int, index: int
    ) -> list[TopicPartition]:
        """Offsets of topics deleted (absent from metadata at `meta_index`) are dropped."""
        gone = [
            tp for tp, c in self.offsets.items() if tp[0] in topics and c.meta_index <= meta_index
        ]
        for tp in gone:
            del self.offsets[tp]
        if gone:
            self.changed = index
        return gone


def _fenced(group: ConsumerGroup, member_id: str) -> ErrorCode:
    return (
        ErrorCode.FENCED_MEMBER_EPOCH
        if member_id in group.membership.members
        else ErrorCode.UNKNOWN_MEMBER_ID
    )


def _rejoined(hb: Heartbeat, epoch: int) -> Heartbeat:
    """A static member's new incarnation continues at its predecessor's epoch."""
    return Heartbeat(
        hb.member_id, epoch, hb.instance_id, hb.client_id, hb.client_host, hb.session_ms,
        hb.topics, hb.pattern, hb.resolved, hb.assignor, hb.owned, hb.partitions,
    )  # fmt: skip
