"""GroupMember: one consumer's membership of a consumer group (pure), the client side of the
incremental, server-assigned protocol (KIP-848 style). The Trio shell
(`consumers.group.GroupSession`) drives it; time comes in as `now` floats, jitter from the
injected `Backoff`.

Theory of operation
-------------------
The coordinator computes the assignment; the member reconciles to it. The group is a lock on
each partition: the coordinator hands a partition to a new owner only once its previous owner
reported it released (left it out of `owned`), left the group or expired. So this member keeps
these invariants:

1. Ownership counts from the heartbeat answer that assigns a partition (it enters `owned` at
   once, while its committed offset is still being fetched) until the heartbeat after the
   member released it. Every heartbeat reports the full `owned` set and subscription.
2. An announced partition (one `on_assigned` was called for) is released only after the shell
   stopped reading it, committed its position (auto-commit) and called `on_revoked`; the next
   heartbeat then goes at once. A partition revoked before it was announced is released at
   once (nothing read, nothing to commit).
3. A member that may have been expired owns nothing: FENCED_MEMBER_EPOCH / UNKNOWN_MEMBER_ID,
   or no heartbeat answered for 2/3 of the session timeout counted from the SEND time of the
   last answered one (`lost`; the coordinator expires it only after the full timeout, counted
   from when it applied that heartbeat, which is later). Then every partition is dropped
   without a commit, `on_lost` is due for the announced ones, and the member rejoins with
   epoch 0 and the same member id.
4. One heartbeat in flight at a time; an answer or error of any other (a heartbeat abandoned
   when the member was lost) changes nothing.

Per owned partition: ASSIGNING (in the assignment, not yet handed over), ACTIVE (announced and
read by the consumer), REVOKING (out of the assignment, being committed and revoked). The shell
works on partitions in `Step`s, one at a time, in the order `next_step` hands them out: lost
notifications first, then revocations, then assignments. Each partition remembers the step
working on it, so a step that finishes after its partitions were lost, released or assigned
anew acts on nothing (`assigned`, `revoke_notify` and `released` return what still applies).

Errors of a heartbeat: FENCED_MEMBER_EPOCH / UNKNOWN_MEMBER_ID -> lost, rejoin at once;
UNRELEASED_INSTANCE_ID -> (lost if the member held anything) rejoin after a backoff; other
retriable errors (the coordinator moved, a broken connection) -> retry after a backoff;
anything else (INVALID_REGULAR_EXPRESSION, UNSUPPORTED_ASSIGNOR, INVALID_SESSION_TIMEOUT,
INVALID_GROUP_ID, ...) is fatal: the member drops everything and stops; `fatal` is raised by
the consumer's `poll`.

Leaving: `unsubscribe` revokes everything (as above), then sends the leave heartbeat; `close`
hands the shell every announced partition to commit and revoke, then `leave_request` is
epoch -1, or -2 for a static member (instance id), which keeps its partitions on the
coordinator for the session timeout so its next incarnation takes them over without a
rebalance (so a -2 leave reports them as still owned).

`OffsetLedger` remembers the offsets known committed (which positions moved), and
`commit_outcome` sorts an OFFSET_COMMIT answer into done / retry / stale / fenced / failed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum

from broker.wire.errors import ErrorCode
from broker.wire.group_messages import (
    LEAVE_EPOCH,
    NO_OFFSET,
    TEMPORARY_LEAVE_EPOCH,
    CommitPartition,
    CommitTopic,
    GroupHeartbeatRequest,
    GroupHeartbeatResponse,
    OffsetCommitRequest,
    OffsetCommitResponse,
    OffsetFetchRequest,
    OffsetFetchResponse,
    pairs,
    to_topic_partitions,
)
from consumers.core.metadata import TopicPartition
from consumers.core.refresh import Backoff
from consumers.errors import (
    FencedMemberEpochError,
    SluiceError,
    UnknownMemberIdError,
    UnreleasedInstanceIdError,
    error_for,
)

__all__ = [
    "LOST_FRACTION",
    "CommitOutcome",
    "GroupMember",
    "OffsetLedger",
    "PartitionState",
    "Reconcile",
    "SentHeartbeat",
    "Step",
    "StepKind",
    "commit_outcome",
    "commit_request",
    "committed_offsets",
    "offset_fetch_request",
]

LOST_FRACTION = 2 / 3
"""Part of the session timeout without an answered heartbeat after which the member treats
its partitions as lost (counted from the send time of the last answered heartbeat)."""
DEFAULT_HEARTBEAT_INTERVAL_S = 1.0
"""Heartbeat interval before the first answer names the coordinator's."""


class PartitionState(Enum):
    ASSIGNING = "assigning"
    """Owned; its committed offset is being fetched, `on_assigned` not called yet."""
    ACTIVE = "active"
    """Owned, announced, read by the consumer."""
    REVOKING = "revoking"
    """Owned but out of the assignment: being committed and revoked, then released."""


class StepKind(Enum):
    LOST = "lost"
    REVOKE = "revoke"
    ASSIGN = "assign"


@dataclass(frozen=True, slots=True)
class Step:
    """Work for the shell on some partitions: LOST (call on_lost), REVOKE (commit, on_revoked,
    `released`), ASSIGN (fetch committed offsets, `assigned`, on_assigned)."""

    kind: StepKind
    partitions: frozenset[TopicPartition]
    id: int


@dataclass(frozen=True, slots=True)
class SentHeartbeat:
    """A heartbeat handed to the shell to send: answer it with `on_heartbeat` or
    `on_heartbeat_error`, or `abandon` it."""

    request: GroupHeartbeatRequest
    sent_at: float
    seq: int

    @property
    def leaving(self) -> bool:
        return self.request.member_epoch < 0


@dataclass(frozen=True, slots=True)
class Reconcile:
    """What an answer (or `unsubscribe`) changed: `assigned` are newly owned (an ASSIGN step
    follows), `revoked` turned REVOKING (the shell stops reading them now; a REVOKE step
    follows), `released` were revoked before they were announced and are released already."""

    assigned: frozenset[TopicPartition] = frozenset()
    revoked: frozenset[TopicPartition] = frozenset()
    released: frozenset[TopicPartition] = frozenset()

    @property
    def work(self) -> bool:
        return bool(self.assigned or self.revoked)


@dataclass(slots=True)
class _Owned:
    state: PartitionState
    step: int | None = None
    """The step working on this partition (None: none yet)."""


@dataclass(slots=True)
class _Subscription:
    topics: tuple[str, ...] = ()
    pattern: str | None = None


class GroupMember:
    """One member's state and decisions (see the module docstring)."""

    def __init__(
        self,
        *,
        group_id: str,
        member_id: str,
        backoff: Backoff,
        session_timeout_ms: int,
        instance_id: str | None = None,
        assignor: str | None = None,
        client_host: str | None = None,
    ) -> None:
        if session_timeout_ms < 1:
            raise ValueError("session_timeout_ms must be >= 1")
        self.group_id = group_id
        self.member_id = member_id
        self.instance_id = instance_id
        self.assignor = assignor
        self.client_host = client_host
        self.backoff = backoff
        self.session_timeout_ms = session_timeout_ms
        self.subscription = _Subscription()
        self.subscribed = False
        self.member_epoch = 0
        """The epoch of the last answer; 0: joining (or not in the group)."""
        self.incarnation = 0
        """Bumped whenever the member loses everything (a commit answer about an older
        incarnation proves nothing about this one)."""
        self.heartbeat_interval_s = DEFAULT_HEARTBEAT_INTERVAL_S
        self.session_timeout_s = session_timeout_ms / 1000
        """The coordinator's effective session timeout once an answer named it."""
        self.partitions: dict[TopicPartition, _Owned] = {}
        """Every owned partition (the `owned` of the next heartbeat)."""
        self.announced: set[TopicPartition] = set()
        """Owned partitions `on_assigned` was called for and neither `on_revoked` nor
        `on_lost` yet."""
        self.fatal: SluiceError | None = None
        self.closed = False
        self.in_flight: SentHeartbeat | None = None
        self.last_answered_sent_at: float | None = None
        self.next_at = -math.inf
        """The next heartbeat goes no earlier."""
        self.attempts = 0
        """Consecutive failed heartbeats (the backoff's exponent)."""
        self._in_group = False
        """The coordinator may know this member: a join was sent and no leave or fencing
        answered since."""
        self._lost_notify: set[TopicPartition] = set()
        self._seq = 0
        self._steps = 0
        self._closing = False

    # -- subscription ------------------------------------------------------------------------

    def subscribe(self, topics: Iterable[str], pattern: str | None) -> None:
        """Join (or change the subscription): the next heartbeat goes at once."""
        names = tuple(sorted(set(topics)))
        if not names and pattern is None:
            raise ValueError("subscribe to topics or a pattern")
        self.subscription = _Subscription(names, pattern)
        self.subscribed = True
        self.next_at = -math.inf

    def unsubscribe(self) -> Reconcile:
        """Revoke everything, then leave (the leave heartbeat goes once all is released)."""
        self.subscribed = False
        return self._reconcile(frozenset(), -math.inf)

    @property
    def joined(self) -> bool:
        """The member has an epoch (its commits need one)."""
        return self.member_epoch > 0

    def owned(self) -> frozenset[TopicPartition]:
        return frozenset(self.partitions)

    # -- heartbeats --------------------------------------------------------------------------

    def heartbeat_due(self, now: float) -> SentHeartbeat | None:
        """The heartbeat to send now (it is in flight from here), or None."""
        if self.fatal is not None or self.closed or self.in_flight is not None:
            return None
        if self.subscribed:
            if now < self.next_at:
                return None
            epoch = self.member_epoch
        elif self.partitions:
            if now < self.next_at:
                return None
            epoch = self.member_epoch  # unsubscribed: keep heartbeating until all is released
        elif self._in_group:
            return self._send(self.leave_epoch, (), now)
        else:
            return None
        if epoch == 0:
            self._in_group = True
        return self._send(epoch, self.partitions, now)

    def _send(self, epoch: int, owned: Iterable[TopicPartition], now: float) -> SentHeartbeat:
        sub = self.subscription
        request = GroupHeartbeatRequest(
            group_id=self.group_id,
            member_id=self.member_id,
            member_epoch=epoch,
            instance_id=self.instance_id,
            client_host=self.client_host,
            session_timeout_ms=self.session_timeout_ms,
            topics=sub.topics,
            pattern=sub.pattern,
            assignor=self.assignor,
            owned=to_topic_partitions(owned),
        )
        self._seq += 1
        sent = SentHeartbeat(request, now, self._seq)
        self.in_flight = sent
        return sent

    @property
    def leave_epoch(self) -> int:
        return LEAVE_EPOCH if self.instance_id is None else TEMPORARY_LEAVE_EPOCH

    def on_heartbeat(
        self, sent: SentHeartbeat, answer: GroupHeartbeatResponse, now: float
    ) -> Reconcile | None:
        """Apply an answer; None when it is not the heartbeat in flight (stale)."""
        if sent is not self.in_flight:
            return None
        self.in_flight = None
        self.attempts = 0
        if sent.leaving:
            self._left()
            return Reconcile()
        self.last_answered_sent_at = sent.sent_at
        self.member_epoch = answer.member_epoch
        self.heartbeat_interval_s = answer.heartbeat_interval_ms / 1000
        self.session_timeout_s = answer.session_timeout_ms / 1000
        self.next_at = now + self.heartbeat_interval_s
        assignment = pairs(answer.assignment) if self.subscribed else frozenset()
        return self._reconcile(assignment, now)

    def _reconcile(self, assignment: frozenset[TopicPartition], now: float) -> Reconcile:
        """`assignment` is every partition the member may own now."""
        new = frozenset(tp for tp in assignment if tp not in self.partitions)
        revoked: set[TopicPartition] = set()
        released: set[TopicPartition] = set()
        for tp, owned in list(self.partitions.items()):
            if tp in assignment:
                continue
            if owned.state is PartitionState.ASSIGNING:
                del self.partitions[tp]  # never announced: nothing read, nothing to commit
                released.add(tp)
            elif owned.state is PartitionState.ACTIVE:
                owned.state = PartitionState.REVOKING
                owned.step = None
                revoked.add(tp)
        for tp in sorted(new):
            self.partitions[tp] = _Owned(PartitionState.ASSIGNING)
        if released:
            self.next_at = now  # tell the coordinator at once
        return Reconcile(new, frozenset(revoked), frozenset(released))

    def on_heartbeat_error(
        self, sent: SentHeartbeat, error: SluiceError, now: float
    ) -> frozenset[TopicPartition]:
        """Apply a failed heartbeat; returns the partitions it made the member lose (the
        shell stops reading them at once)."""
        if sent is not self.in_flight:
            return frozenset()
        self.in_flight = None
        if sent.leaving:
            self._left()  # best effort: the session timeout removes it otherwise
            return frozenset()
        if isinstance(error, FencedMemberEpochError | UnknownMemberIdError):
            # Rejoin at once the first time; a coordinator fencing every join is backed off.
            self._in_group = False
            lost = self.lose(now)
            if self.attempts:
                self.next_at = now + self.backoff.delay(self.attempts - 1)
            self.attempts += 1
            return lost
        if isinstance(error, UnreleasedInstanceIdError) or error.retriable:
            unreleased = isinstance(error, UnreleasedInstanceIdError)
            lost = self.lose(now) if unreleased and self.member_epoch > 0 else frozenset()
            self.next_at = now + self.backoff.delay(self.attempts)
            self.attempts += 1
            return lost
        self.fatal = error
        return self.lose(now)

    def abandon(self, sent: SentHeartbeat, now: float) -> None:
        """The shell gave up waiting for `sent` (lost deadline or shutdown): its answer, if
        any, is ignored."""
        if sent is self.in_flight:
            self.in_flight = None
            self.next_at = now

    def heartbeat_now(self) -> None:
        """Send the next heartbeat as soon as none is in flight."""
        self.next_at = -math.inf

    def _left(self) -> None:
        self._in_group = False
        self.member_epoch = 0
        self.last_answered_sent_at = None

    # -- the safety rule ---------------------------------------------------------------------

    def lost_deadline(self) -> float:
        """When the member must treat its partitions as lost unless a heartbeat is answered
        first (inf while it owns nothing)."""
        if not self.partitions or self.last_answered_sent_at is None:
            return math.inf
        return self.last_answered_sent_at + LOST_FRACTION * self.session_timeout_s

    def lost(self, now: float) -> bool:
        return now >= self.lost_deadline()

    def lose(self, now: float) -> frozenset[TopicPartition]:
        """Drop every partition without a commit (on_lost is due for the announced ones) and
        rejoin with epoch 0; returns what was owned."""
        dropped = frozenset(self.partitions)
        self._lost_notify |= self.announced
        self.announced.clear()
        self.partitions.clear()
        self.member_epoch = 0
        self.incarnation += 1
        self.in_flight = None
        self.last_answered_sent_at = None
        self.next_at = now
        return dropped

    def wake_at(self) -> float:
        """When the shell must look again unprompted: `heartbeat_due` or `lost` may change
        their answer then (never earlier)."""
        if self.fatal is not None or self.closed:
            return math.inf
        lost = self.lost_deadline()
        if self.in_flight is not None:
            return lost
        if self.subscribed or self.partitions:
            return min(self.next_at, lost)
        return -math.inf if self._in_group else math.inf  # the leave is due, or nothing

    # -- steps -------------------------------------------------------------------------------

    def next_step(self) -> Step | None:
        """The next piece of work for the shell: lost notifications, then revocations, then
        assignments (none while closing)."""
        if self._lost_notify:
            tps = frozenset(self._lost_notify)
            self._lost_notify.clear()
            return self._step(StepKind.LOST, tps)
        if self._closing:
            return None
        for kind, state in (
            (StepKind.REVOKE, PartitionState.REVOKING),
            (StepKind.ASSIGN, PartitionState.ASSIGNING),
        ):
            todo = sorted(
                tp for tp, o in self.partitions.items() if o.state is state and o.step is None
            )
            if todo:
                step = self._step(kind, frozenset(todo))
                for tp in todo:
                    self.partitions[tp].step = step.id
                return step
        return None

    def _step(self, kind: StepKind, tps: frozenset[TopicPartition]) -> Step:
        self._steps += 1
        return Step(kind, tps, self._steps)

    def _of_step(self, step: Step, state: PartitionState) -> list[TopicPartition]:
        return [
            tp
            for tp in sorted(step.partitions)
            if (o := self.partitions.get(tp)) is not None and o.state is state and o.step == step.id
        ]

    def assigning(self, step: Step) -> bool:
        """Whether any partition of an ASSIGN step still waits for it."""
        return bool(self._of_step(step, PartitionState.ASSIGNING))

    def assigned(self, step: Step) -> frozenset[TopicPartition]:
        """The ASSIGN step fetched the committed offsets: its partitions still waiting become
        ACTIVE and announced (the shell calls on_assigned with them)."""
        tps = self._of_step(step, PartitionState.ASSIGNING)
        for tp in tps:
            self.partitions[tp] = _Owned(PartitionState.ACTIVE)
            self.announced.add(tp)
        return frozenset(tps)

    def revoke_notify(self, step: Step) -> frozenset[TopicPartition]:
        """The REVOKE step committed: the partitions to call on_revoked for (still revoking
        and announced; they are no longer announced from here)."""
        tps = [tp for tp in self._of_step(step, PartitionState.REVOKING) if tp in self.announced]
        self.announced.difference_update(tps)
        return frozenset(tps)

    def released(self, step: Step, now: float) -> frozenset[TopicPartition]:
        """The REVOKE step is done: its partitions leave `owned`; the next heartbeat goes at
        once."""
        tps = self._of_step(step, PartitionState.REVOKING)
        for tp in tps:
            del self.partitions[tp]
            self.announced.discard(tp)
        if tps:
            self.next_at = now
        return frozenset(tps)

    # -- closing -----------------------------------------------------------------------------

    def close(self) -> tuple[frozenset[TopicPartition], frozenset[TopicPartition]]:
        """Closing: no more steps. Returns (partitions whose on_lost is still due, announced
        partitions to commit and revoke). Heartbeats go on until `leave_request`."""
        self._closing = True
        lost = frozenset(self._lost_notify)
        self._lost_notify.clear()
        announced = frozenset(self.announced)
        self.announced.clear()
        return lost, announced

    def leave_request(self, now: float) -> GroupHeartbeatRequest | None:
        """The last heartbeat (epoch -1, or -2 for a static member, which reports what it
        owned so the coordinator keeps it for its next incarnation); None when the
        coordinator does not know this member. The member is closed from here."""
        in_group = self._in_group and self.fatal is None
        owned = self.owned() if self.instance_id is not None else frozenset()
        self.closed = True
        self.subscribed = False
        self.in_flight = None
        self.partitions.clear()
        if not in_group:
            return None
        return self._send(self.leave_epoch, owned, now).request


# --------------------------------------------------------------------------- offsets


@dataclass(slots=True)
class OffsetLedger:
    """The offset known committed for each partition (fetched, or committed by this
    consumer): a position equal to it need not be committed again."""

    committed: dict[TopicPartition, int] = field(default_factory=dict)

    def moved(self, positions: Mapping[TopicPartition, int]) -> dict[TopicPartition, int]:
        return {tp: o for tp, o in positions.items() if self.committed.get(tp) != o}

    def record(self, offsets: Mapping[TopicPartition, int | None]) -> None:
        for tp, offset in offsets.items():
            if offset is not None:
                self.committed[tp] = offset

    def forget(self, tps: Iterable[TopicPartition]) -> None:
        for tp in tps:
            self.committed.pop(tp, None)


@dataclass(frozen=True, slots=True)
class GroupMetadata:
    """What `send_offsets_to_transaction` needs of a consumer: its group and membership
    (`Consumer.group_metadata()`): `group_id`, `member_id` and `member_epoch`; member "" and
    epoch -1 commit without a membership (the coordinator accepts that only for a group
    without live members)."""

    group_id: str
    member_id: str = ""
    member_epoch: int = -1


def commit_request(
    group_id: str, member_id: str, member_epoch: int, offsets: Mapping[TopicPartition, int]
) -> OffsetCommitRequest:
    by_topic: dict[str, list[CommitPartition]] = {}
    for (topic, partition), offset in sorted(offsets.items()):
        by_topic.setdefault(topic, []).append(CommitPartition(partition=partition, offset=offset))
    return OffsetCommitRequest(
        group_id=group_id,
        member_id=member_id,
        member_epoch=member_epoch,
        topics=tuple(CommitTopic(topic=t, partitions=tuple(p)) for t, p in by_topic.items()),
    )


@dataclass(slots=True)
class CommitOutcome:
    """An OFFSET_COMMIT answer sorted per partition: `done` committed; `retry` retriable errors
    (and partitions the answer left out); `stale` STALE_MEMBER_EPOCH (heartbeat, then retry
    those still owned); `fenced` FENCED_MEMBER_EPOCH / UNKNOWN_MEMBER_ID (`fenced_error`: the
    member lost everything, unless its epoch moved since the commit left); `failed` the
    others' errors."""

    done: dict[TopicPartition, int] = field(default_factory=dict)
    retry: dict[TopicPartition, int] = field(default_factory=dict)
    stale: dict[TopicPartition, int] = field(default_factory=dict)
    fenced: dict[TopicPartition, int] = field(default_factory=dict)
    fenced_error: SluiceError | None = None
    failed: dict[TopicPartition, SluiceError] = field(default_factory=dict)


def commit_outcome(
    offsets: Mapping[TopicPartition, int], response: OffsetCommitResponse
) -> CommitOutcome:
    out = CommitOutcome()
    seen: set[TopicPartition] = set()
    for t in response.topics:
        for p in t.partitions:
            tp = (t.topic, p.partition)
            if tp not in offsets or tp in seen:
                continue
            seen.add(tp)
            offset = offsets[tp]
            if p.error is ErrorCode.NONE:
                out.done[tp] = offset
            elif p.error is ErrorCode.STALE_MEMBER_EPOCH:
                out.stale[tp] = offset
            elif p.error in (ErrorCode.FENCED_MEMBER_EPOCH, ErrorCode.UNKNOWN_MEMBER_ID):
                out.fenced[tp] = offset
                if out.fenced_error is None:
                    out.fenced_error = error_for(p.error, p.message)
            elif p.error.retriable:
                out.retry[tp] = offset
            else:
                out.failed[tp] = error_for(p.error, f"commit of {tp[0]}[{tp[1]}]: {p.message}")
    for tp, offset in offsets.items():
        if tp not in seen:
            out.retry[tp] = offset
    return out


def offset_fetch_request(group_id: str, tps: Iterable[TopicPartition]) -> OffsetFetchRequest:
    return OffsetFetchRequest(group_id=group_id, topics=to_topic_partitions(tps))


def committed_offsets(
    tps: Iterable[TopicPartition], response: OffsetFetchResponse
) -> dict[TopicPartition, int | None]:
    """The committed offset of each of `tps` (None: nothing committed)."""
    found = {(o.topic, o.partition): o.offset for o in response.offsets}
    out: dict[TopicPartition, int | None] = {}
    for tp in tps:
        offset = found.get(tp, NO_OFFSET)
        out[tp] = None if offset < 0 else offset
    return out
