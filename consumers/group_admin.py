"""The Admin's consumer-group calls (`GroupAdmin`, a mixin of `consumers.admin.Admin`) and
what they return.

Each group's requests go to its coordinator (`CoordinatorLink`: found with FIND_COORDINATOR,
forgotten when it moves), retried until the client's `timeout_ms`. `list_groups` asks every
broker in the metadata (each answers for the coordinator partitions it leads) and merges the
answers by group id; a broker that cannot be reached is skipped (its coordinator partitions
fail over to brokers that answer), but at least one must answer. `describe_group` adds, for
every partition of every topic the group has offsets for, names in a subscription or is
assigned, the committed offset, the high watermark and the lag. Resetting offsets is two
steps: `reset_offsets_plan` computes (changes nothing; the pure rule is `plan_reset`),
`reset_offsets` commits a plan as an operator (member id "", epoch -1), which the coordinator
accepts only while the group has no members.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from broker.wire.errors import ErrorCode
from broker.wire.group_messages import (
    ADMIN_EPOCH,
    NO_OFFSET,
    CommitPartition,
    CommitTopic,
    DeleteGroupsRequest,
    DeleteGroupsResponse,
    DescribedGroup,
    DescribedMember,
    DescribeGroupsRequest,
    DescribeGroupsResponse,
    ListGroupsRequest,
    ListGroupsResponse,
    OffsetCommitRequest,
    OffsetCommitResponse,
    OffsetFetchRequest,
    OffsetFetchResponse,
    TopicPartitions,
)
from broker.wire.messages import (
    EARLIEST_TIMESTAMP,
    LATEST_TIMESTAMP,
    MetadataRequest,
    MetadataResponse,
)
from consumers.admin_base import UNKNOWN_OUTCOME, AdminBase, group_error, no_partition
from consumers.cluster import TopicPartition
from consumers.coordinator import CoordinatorLink
from consumers.errors import (
    GroupIdNotFoundError,
    LeaderNotAvailableError,
    NonEmptyGroupError,
    SluiceError,
    UnknownTopicError,
    error_for,
)

__all__ = [
    "RESET_STRATEGIES",
    "GroupAdmin",
    "GroupDescription",
    "GroupListing",
    "GroupPartitionOffset",
    "MemberDescription",
    "OffsetReset",
    "OffsetResetSpec",
    "ResetStrategy",
    "plan_reset",
]


@dataclass(frozen=True, slots=True)
class GroupListing:
    """A consumer group as `list_groups` shows it: `group_id`, `state` and `members` (how
    many)."""

    group_id: str
    state: str
    """"empty", "reconciling" or "stable"."""
    members: int


@dataclass(frozen=True, slots=True)
class MemberDescription:
    """One member as its coordinator sees it; partitions sorted by (topic, partition)."""

    member_id: str
    instance_id: str | None
    """Its static instance id (None: a dynamic member)."""
    client_id: str | None
    client_host: str | None
    member_epoch: int
    topics: tuple[str, ...]
    """The topic names it subscribes to."""
    pattern: str | None
    """The regular expression it subscribes with, if any."""
    assignment: tuple[TopicPartition, ...]
    """The partitions it owns now."""
    revoking: tuple[TopicPartition, ...]
    """Owned partitions it has been asked to release."""


@dataclass(frozen=True, slots=True)
class GroupPartitionOffset:
    """Where a group stands in one partition. `committed` is None when the group has
    committed nothing there, `high_watermark` None when it could not be read (or the topic is
    gone); `lag` = high_watermark - committed, None when either is."""

    topic: str
    partition: int
    committed: int | None
    high_watermark: int | None
    lag: int | None


@dataclass(frozen=True, slots=True)
class GroupDescription:
    """A group's state ("empty", "reconciling", "stable"), members sorted by member id and
    offsets by (topic, partition)."""

    group_id: str
    state: str
    assignor: str
    group_epoch: int
    members: tuple[MemberDescription, ...]
    rebalance_reason: str
    rebalance_time_ms: int | None
    """Wall-clock milliseconds of the last change of the target assignment (None: none)."""
    offsets: tuple[GroupPartitionOffset, ...]


ResetStrategy = Literal["to_earliest", "to_latest", "to_offset", "to_datetime", "shift_by"]
RESET_STRATEGIES: tuple[ResetStrategy, ...] = get_args(ResetStrategy)
_NEEDS_VALUE: frozenset[ResetStrategy] = frozenset({"to_offset", "to_datetime", "shift_by"})


@dataclass(frozen=True, slots=True, kw_only=True)
class OffsetResetSpec:
    """Where to move a group's offsets, and in which partitions.

    `strategy` and `value`: to_earliest / to_latest (no value), to_offset (the offset, >= 0),
    to_datetime (milliseconds since the epoch, >= 0: the first offset whose batch has a
    timestamp at or after it), shift_by (a signed count from the committed offset, or from
    the log start where nothing is committed). `topics`: topic -> the partitions to reset
    (empty: every partition of the topic). Every new offset is clamped to the partition's
    [log start, high watermark]."""

    strategy: ResetStrategy
    topics: Mapping[str, tuple[int, ...]]
    value: int | None = None

    def __post_init__(self) -> None:
        if self.strategy not in RESET_STRATEGIES:
            raise ValueError(f"unknown reset strategy {self.strategy!r}")
        if (self.value is not None) != (self.strategy in _NEEDS_VALUE):
            verb = "needs" if self.strategy in _NEEDS_VALUE else "takes no"
            raise ValueError(f"{self.strategy} {verb} value")
        if self.strategy in ("to_offset", "to_datetime") and (self.value or 0) < 0:
            raise ValueError(f"{self.strategy} needs a value >= 0, got {self.value}")
        if not self.topics:
            raise ValueError("no topic to reset")
        for topic, partitions in self.topics.items():
            if any(p < 0 for p in partitions):
                raise ValueError(f"{topic}: negative partition in {partitions}")


@dataclass(frozen=True, slots=True)
class OffsetReset:
    """One partition of a reset plan: its committed offset now (None: none) and the new one."""

    topic: str
    partition: int
    current: int | None
    new: int


def plan_reset(
    spec: OffsetResetSpec,
    tp: TopicPartition,
    *,
    committed: int | None,
    log_start: int,
    high_watermark: int,
    offset_at_time: int | None = None,
) -> OffsetReset:
    """The new offset of one partition under `spec` (pure): always within [log_start,
    high_watermark]. `offset_at_time` is LIST_OFFSETS' answer for `spec.value` (needed by
    to_datetime only)."""
    if not 0 <= log_start <= high_watermark:
        raise ValueError(f"{tp}: need 0 <= log start {log_start} <= high watermark")
    strategy, value = spec.strategy, spec.value
    if strategy == "to_earliest":
        target = log_start
    elif strategy == "to_latest":
        target = high_watermark
    elif strategy == "to_offset":
        assert value is not None
        target = value
    elif strategy == "to_datetime":
        if offset_at_time is None:
            raise ValueError(f"{tp}: to_datetime needs the offset at the time")
        target = offset_at_time
    else:
        assert value is not None
        target = (log_start if committed is None else committed) + value
    new = min(max(target, log_start), high_watermark)
    return OffsetReset(topic=tp[0], partition=tp[1], current=committed, new=new)


def _pairs(tps: Iterable[TopicPartitions]) -> tuple[TopicPartition, ...]:
    """The (topic, partition) pairs of `tps`, sorted."""
    return tuple(sorted((t.topic, p) for t in tps for p in t.partitions))


def _member(m: DescribedMember) -> MemberDescription:
    """A member as DESCRIBE_GROUPS described it."""
    return MemberDescription(
        member_id=m.member_id,
        instance_id=m.instance_id,
        client_id=m.client_id,
        client_host=m.client_host,
        member_epoch=m.member_epoch,
        topics=m.topics,
        pattern=m.pattern,
        assignment=_pairs(m.assignment),
        revoking=_pairs(m.revoking),
    )


def _partition_offset(
    tp: TopicPartition, committed: int | None, high_watermark: int | None
) -> GroupPartitionOffset:
    """The row of `tp`: its committed offset, high watermark and lag (None: unknown)."""
    lag = None if committed is None or high_watermark is None else high_watermark - committed
    return GroupPartitionOffset(tp[0], tp[1], committed, high_watermark, lag)


class GroupAdmin(AdminBase):
    """The consumer-group calls of the `Admin`: list, describe, read and reset offsets,
    delete."""

    async def list_groups(self) -> list[GroupListing]:
        """Every group, sorted by id: LIST_GROUPS asked of every broker (`_ask_every_broker`)
        and merged by group id (the lowest broker id's answer wins a duplicate)."""
        answers = await self._ask_every_broker(ListGroupsRequest(), "groups")
        merged: dict[str, GroupListing] = {}
        for broker in sorted(answers):
            answer = answers[broker]
            assert isinstance(answer, ListGroupsResponse)
            for g in answer.groups:
                merged.setdefault(g.group_id, GroupListing(g.group_id, g.state, g.members))
        return [merged[g] for g in sorted(merged)]

    async def describe_group(self, group_id: str) -> GroupDescription:
        """The group's state, members and, per partition of every topic it has offsets for,
        subscribes to by name or is assigned, its committed offset, high watermark and lag.
        GroupIdNotFoundError when the coordinator knows no such group."""
        link = self._link(group_id)
        deadline = self._deadline(None)
        group = await self._described(link, deadline)
        if group.error is ErrorCode.GROUP_ID_NOT_FOUND:
            raise GroupIdNotFoundError(f"no group {group_id!r}")
        committed = await self._committed(link, deadline)
        members = tuple(sorted((_member(m) for m in group.members), key=lambda m: m.member_id))
        topics = {t for t, _ in committed}
        for m in members:
            topics.update(m.topics)
            topics.update(t for t, _ in m.assignment)
            topics.update(t for t, _ in m.revoking)
        rows: dict[TopicPartition, GroupPartitionOffset] = {}
        if topics:
            response = await self._metadata(tuple(sorted(topics)))
            for info in response.topics:
                if info.error is not ErrorCode.NONE:
                    continue
                highs = await self._offsets(info, LATEST_TIMESTAMP)
                for p in info.partitions:
                    tp = (info.name, p.partition)
                    rows[tp] = _partition_offset(tp, committed.get(tp), highs.get(p.partition))
        for tp, offset in committed.items():
            if tp not in rows:  # a topic (or partition) the metadata no longer has
                rows[tp] = _partition_offset(tp, offset, None)
        return GroupDescription(
            group_id=group.group_id,
            state=group.state,
            assignor=group.assignor,
            group_epoch=group.group_epoch,
            members=members,
            rebalance_reason=group.rebalance_reason,
            rebalance_time_ms=None if group.rebalance_time_ms < 0 else group.rebalance_time_ms,
            offsets=tuple(rows[tp] for tp in sorted(rows)),
        )

    async def group_offsets(self, group_id: str) -> dict[TopicPartition, int]:
        """Every offset the group has committed (partitions without one are absent)."""
        link = self._link(group_id)
        return await self._committed(link, self._deadline(None))

    async def reset_offsets_plan(self, group_id: str, spec: OffsetResetSpec) -> list[OffsetReset]:
        """What `spec` would commit, sorted by (topic, partition); changes nothing. An unknown
        topic, or a partition the topic does not have, raises UnknownTopicError; a partition
        whose log start or high watermark cannot be read is retried until the timeout."""
        link = self._link(group_id)
        deadline = self._deadline(None)
        try:
            committed = await self._committed(link, deadline)
        except GroupIdNotFoundError:
            committed = {}
        plan: list[OffsetReset] = []
        for topic, wanted in sorted(spec.topics.items()):
            starts = await self._required_offsets(topic, wanted, EARLIEST_TIMESTAMP, deadline)
            ends = await self._required_offsets(topic, wanted, LATEST_TIMESTAMP, deadline)
            at_time: dict[int, int] = {}
            if spec.strategy == "to_datetime":
                assert spec.value is not None
                at_time = await self._required_offsets(topic, wanted, spec.value, deadline)
            for partition in sorted(starts):
                tp = (topic, partition)
                plan.append(
                    plan_reset(
                        spec,
                        tp,
                        committed=committed.get(tp),
                        log_start=starts[partition],
                        high_watermark=ends[partition],
                        offset_at_time=at_time.get(partition),
                    )
                )
        return plan

    async def reset_offsets(self, group_id: str, plan: Sequence[OffsetReset]) -> None:
        """Commit `plan` as an operator. NonEmptyGroupError (nothing committed) while the
        group has members; the coordinator refuses a member that joins meanwhile the same
        way. Committing the same offsets again is harmless, so failed attempts are retried."""
        if not plan:
            return
        by_tp = {(r.topic, r.partition): r.new for r in plan}
        if len(by_tp) != len(plan):
            raise ValueError("the plan names a partition twice")
        link = self._link(group_id)
        deadline = self._deadline(None)
        await self._check_partitions(by_tp)
        group = await self._described(link, deadline)
        if group.members:
            n = len(group.members)
            raise NonEmptyGroupError(
                f"group {group_id!r} has {n} live member{'' if n == 1 else 's'}: stop its "
                "consumers before resetting its offsets"
            )
        by_topic: dict[str, list[CommitPartition]] = {}
        for (topic, partition), offset in sorted(by_tp.items()):
            by_topic.setdefault(topic, []).append(
                CommitPartition(partition=partition, offset=offset)
            )
        request = OffsetCommitRequest(
            group_id=group_id,
            member_id="",
            member_epoch=ADMIN_EPOCH,
            topics=tuple(CommitTopic(topic=t, partitions=tuple(ps)) for t, ps in by_topic.items()),
        )

        async def attempt() -> None:
            response = await link.request(request)
            assert isinstance(response, OffsetCommitResponse)
            for t in response.topics:
                for p in t.partitions:
                    if p.error is ErrorCode.NONE:
                        continue
                    if p.error is ErrorCode.NON_EMPTY_GROUP:
                        raise NonEmptyGroupError(
                            f"group {group_id!r} has live members: stop its consumers before "
                            "resetting its offsets"
                        )
                    where = f"{t.topic}[{p.partition}]"
                    raise group_error(link, p.error, f"{where}: {p.message or p.error.description}")

        await self.cluster.retry_until(deadline, attempt)

    async def delete_group(self, group_id: str) -> None:
        """Delete a group and its committed offsets. NonEmptyGroupError while it has
        members, GroupIdNotFoundError when there is no such group."""
        link = self._link(group_id)
        uncertain = False

        async def attempt() -> None:
            nonlocal uncertain
            try:
                response = await link.request(DeleteGroupsRequest(group_ids=(group_id,)))
            except SluiceError as e:
                uncertain = uncertain or e.code in UNKNOWN_OUTCOME
                raise
            assert isinstance(response, DeleteGroupsResponse)
            for r in response.groups:
                if r.group_id != group_id or r.error is ErrorCode.NONE:
                    continue
                if r.error is ErrorCode.GROUP_ID_NOT_FOUND:
                    if uncertain:
                        return  # an earlier attempt, whose answer was lost, deleted it
                    raise GroupIdNotFoundError(f"no group {group_id!r}")
                if r.error is ErrorCode.NON_EMPTY_GROUP:
                    raise NonEmptyGroupError(
                        f"group {group_id!r} has live members: stop its consumers before "
                        "deleting it"
                    )
                raise group_error(link, r.error, r.message)

        await self.cluster.retry_until(self._deadline(None), attempt)

    async def _described(self, link: CoordinatorLink, deadline: float) -> DescribedGroup:
        """DESCRIBE_GROUPS of the link's group at its coordinator; an unknown group comes
        back with error GROUP_ID_NOT_FOUND (state "dead"), any other error is raised."""

        async def attempt() -> DescribedGroup:
            response = await link.request(DescribeGroupsRequest(group_ids=(link.key,)))
            assert isinstance(response, DescribeGroupsResponse)
            for g in response.groups:
                if g.group_id != link.key:
                    continue
                if g.error in (ErrorCode.NONE, ErrorCode.GROUP_ID_NOT_FOUND):
                    return g
                raise group_error(link, g.error, g.message)
            raise error_for(
                ErrorCode.UNKNOWN_SERVER_ERROR,
                f"the coordinator did not describe group {link.key!r}",
            )

        return await self.cluster.retry_until(deadline, attempt)

    async def _committed(self, link: CoordinatorLink, deadline: float) -> dict[TopicPartition, int]:
        """Every offset the link's group has committed (OFFSET_FETCH at its coordinator),
        retried until `deadline` (Trio time)."""

        async def attempt() -> dict[TopicPartition, int]:
            response = await link.request(OffsetFetchRequest(group_id=link.key))
            assert isinstance(response, OffsetFetchResponse)
            return {
                (o.topic, o.partition): o.offset for o in response.offsets if o.offset != NO_OFFSET
            }

        return await self.cluster.retry_until(deadline, attempt)

    async def _required_offsets(
        self, topic: str, partitions: tuple[int, ...], timestamp: int, deadline: float
    ) -> dict[int, int]:
        """partition -> LIST_OFFSETS(timestamp) for `partitions` of `topic` (empty: all),
        from fresh metadata each attempt; retried until every one is read."""
        cluster = self.cluster

        async def attempt() -> dict[int, int]:
            response = await cluster.request_any(MetadataRequest(topics=(topic,)))
            assert isinstance(response, MetadataResponse)
            cluster.metadata.update(response)
            found = [t for t in response.topics if t.name == topic]
            if not found or found[0].error is ErrorCode.UNKNOWN_TOPIC_OR_PARTITION:
                raise UnknownTopicError(f"no topic {topic!r}", retriable=False)
            if found[0].error is not ErrorCode.NONE:
                raise error_for(found[0].error, f"metadata of {topic!r}")
            existing = {p.partition for p in found[0].partitions}
            absent = sorted(set(partitions) - existing)
            if absent:
                raise no_partition(topic, absent, len(existing))
            wanted = set(partitions) or existing
            got = await self._offsets(found[0], timestamp)
            missing = sorted(wanted - set(got))
            if missing:
                raise LeaderNotAvailableError(
                    f"{topic!r} partitions {','.join(map(str, missing))}: no leader answered "
                    "LIST_OFFSETS"
                )
            return {p: got[p] for p in wanted}

        return await cluster.retry_until(deadline, attempt, refresh_topics=(topic,))
