"""The group coordinator on one in-memory broker (tests/support/broker_harness): placement,
heartbeats and reconciliation through Raft, commits, restarts, expiry, admin operations."""

from __future__ import annotations

from broker.wire.errors import ErrorCode
from broker.wire.group_messages import (
    CommitPartition,
    CommitTopic,
    DeleteGroupsRequest,
    DescribeGroupsRequest,
    FindCoordinatorRequest,
    FindCoordinatorResponse,
    GroupHeartbeatRequest,
    GroupHeartbeatResponse,
    ListGroupsRequest,
    OffsetCommitRequest,
    OffsetCommitResponse,
    OffsetFetchRequest,
    OffsetFetchResponse,
    TopicPartitions,
    pairs,
)
from tests.support.broker_harness import Broker

OPTIONS = {"internal_topic_partitions": 2, "tick_ms": 50}


def booted() -> Broker:
    b = Broker(options=OPTIONS).boot()
    b.create_topic("t", partitions=4)
    reply = b.call(FindCoordinatorRequest(key="g"))
    assert reply.error == ErrorCode.COORDINATOR_NOT_AVAILABLE
    for _ in range(40):
        b.tick()
        reply = b.call(FindCoordinatorRequest(key="g"))
        if reply.error == ErrorCode.NONE:
            break
    assert isinstance(reply.body, FindCoordinatorResponse), reply
    return b


def beat(
    b: Broker,
    member: str,
    epoch: int,
    owned: frozenset[tuple[str, int]] = frozenset(),
    **kw: object,
) -> GroupHeartbeatResponse:
    owned_tp = tuple(
        TopicPartitions(topic=t, partitions=tuple(sorted(p for tt, p in owned if tt == t)))
        for t in sorted({t for t, _ in owned})
    )
    req = GroupHeartbeatRequest(
        group_id="g",
        member_id=member,
        member_epoch=epoch,
        topics=("t",),
        owned=owned_tp,
        **kw,  # type: ignore[arg-type]
    )
    reply = b.call(req)
    assert reply.error == ErrorCode.NONE, reply
    assert isinstance(reply.body, GroupHeartbeatResponse)
    return reply.body


def test_two_members_share_partitions_and_hand_over_only_after_release() -> None:
    b = booted()
    a1 = beat(b, "a", 0)
    assert pairs(a1.assignment) == {("t", i) for i in range(4)}
    a_owned = pairs(a1.assignment)
    b1 = beat(b, "b", 0)
    assert pairs(b1.assignment) == set()  # a still holds everything
    a2 = beat(b, "a", a1.member_epoch, a_owned)
    keep = pairs(a2.assignment)
    assert len(keep) == 2
    b2 = beat(b, "b", b1.member_epoch)
    assert pairs(b2.assignment) == set()  # a has not released yet
    a3 = beat(b, "a", a2.member_epoch, keep)
    b3 = beat(b, "b", b2.member_epoch)
    assert pairs(b3.assignment) == {("t", i) for i in range(4)} - keep
    assert a3.member_epoch == b3.member_epoch


def test_commits_survive_a_restart_and_fenced_members_cannot_commit() -> None:
    b = booted()
    a1 = beat(b, "a", 0)
    commit = OffsetCommitRequest(
        group_id="g", member_id="a", member_epoch=a1.member_epoch,
        topics=(CommitTopic(topic="t", partitions=(CommitPartition(partition=1, offset=42),)),),
    )  # fmt: skip
    reply = b.call(commit)
    assert isinstance(reply.body, OffsetCommitResponse)
    assert reply.body.topics[0].partitions[0].error == ErrorCode.NONE
    zombie = OffsetCommitRequest(
        group_id="g", member_id="z", member_epoch=3,
        topics=(CommitTopic(topic="t", partitions=(CommitPartition(partition=1, offset=1),)),),
    )  # fmt: skip
    reply = b.call(zombie)
    assert isinstance(reply.body, OffsetCommitResponse)
    assert reply.body.topics[0].partitions[0].error == ErrorCode.UNKNOWN_MEMBER_ID
    b2 = b.restart()
    for _ in range(40):
        b2.tick()
        reply = b2.call(OffsetFetchRequest(group_id="g"))
        if reply.error == ErrorCode.NONE:
            break
    assert isinstance(reply.body, OffsetFetchResponse), reply
    assert [(o.topic, o.partition, o.offset) for o in reply.body.offsets] == [("t", 1, 42)]


def test_a_silent_member_expires_and_its_partitions_move() -> None:
    b = booted()
    a1 = beat(b, "a", 0, session_timeout_ms=1000)
    b1 = beat(b, "b", 0, session_timeout_ms=10_000)
    assert len(pairs(a1.assignment)) == 4 and not pairs(b1.assignment)
    epoch = b1.member_epoch
    for _ in range(30):  # 1.5 s of ticks: a is silent, b heartbeats
        b.tick()
        epoch = beat(b, "b", epoch).member_epoch
    last = beat(b, "b", epoch)
    assert pairs(last.assignment) == {("t", i) for i in range(4)}
    reply = b.call(DescribeGroupsRequest(group_ids=("g",)))
    group = reply.body.groups[0]  # type: ignore[union-attr]
    assert [m.member_id for m in group.members] == ["b"]
    assert "expired" in group.rebalance_reason


def test_list_describe_and_delete() -> None:
    b = booted()
    beat(b, "a", 0)
    listed = b.call(ListGroupsRequest()).body
    assert [(g.group_id, g.members) for g in listed.groups] == [("g", 1)]  # type: ignore[union-attr]
    deleted = b.call(DeleteGroupsRequest(group_ids=("g", "nope"))).body
    codes = [r.error for r in deleted.groups]  # type: ignore[union-attr]
    assert codes == [ErrorCode.NON_EMPTY_GROUP, ErrorCode.GROUP_ID_NOT_FOUND]
    b.call(GroupHeartbeatRequest(group_id="g", member_id="a", member_epoch=-1))
    deleted = b.call(DeleteGroupsRequest(group_ids=("g",))).body
    assert [r.error for r in deleted.groups] == [ErrorCode.NONE]  # type: ignore[union-attr]


def test_a_static_member_that_comes_back_keeps_its_partitions_without_a_rebalance() -> None:
    b = booted()
    first = beat(b, "s1", 0, instance_id="i1")
    owned = pairs(first.assignment)
    assert len(owned) == 4
    group_epoch = b.call(DescribeGroupsRequest(group_ids=("g",))).body.groups[0].group_epoch  # type: ignore[union-attr]
    reply = b.call(
        GroupHeartbeatRequest(group_id="g", member_id="s1", member_epoch=-2, instance_id="i1")
    )
    assert reply.error == ErrorCode.NONE
    again = beat(b, "s2", 0, instance_id="i1")  # the restarted process, a new member id
    assert pairs(again.assignment) == owned and again.member_epoch == first.member_epoch
    d = b.call(DescribeGroupsRequest(group_ids=("g",))).body.groups[0]  # type: ignore[union-attr]
    assert d.group_epoch == group_epoch and [m.member_id for m in d.members] == ["s2"]
    twin = b.call(
        GroupHeartbeatRequest(
            group_id="g", member_id="s3", member_epoch=0, instance_id="i1", topics=("t",)
        )
    )
    assert twin.error == ErrorCode.UNRELEASED_INSTANCE_ID  # s2 is active: no two holders
    stale = b.call(
        GroupHeartbeatRequest(group_id="g", member_id="s1", member_epoch=first.member_epoch)
    )
    assert stale.error == ErrorCode.UNKNOWN_MEMBER_ID  # the old incarnation is fenced


def test_a_pattern_subscription_picks_up_a_new_matching_topic() -> None:
    b = booted()
    b.create_topic("p-a", partitions=2)
    first = b.call(GroupHeartbeatRequest(group_id="g", member_id="m", member_epoch=0,
                                         pattern="p-.*"))  # fmt: skip
    assert isinstance(first.body, GroupHeartbeatResponse)
    assert pairs(first.body.assignment) == {("p-a", 0), ("p-a", 1)}
    b.create_topic("p-b", partitions=1)
    b.create_topic("q", partitions=1)
    b.tick(12)  # the leader compares groups with metadata every 10 ticks
    owned = first.body.assignment
    reply = b.call(GroupHeartbeatRequest(group_id="g", member_id="m",
                                         member_epoch=first.body.member_epoch, pattern="p-.*",
                                         owned=owned))  # fmt: skip
    assert isinstance(reply.body, GroupHeartbeatResponse)
    assert pairs(reply.body.assignment) == {("p-a", 0), ("p-a", 1), ("p-b", 0)}
    bad = b.call(GroupHeartbeatRequest(group_id="g", member_id="x", member_epoch=0,
                                       pattern="(a+)+$"))  # fmt: skip
    assert bad.error == ErrorCode.INVALID_REGULAR_EXPRESSION


def test_offsets_of_a_deleted_topic_are_dropped_and_an_empty_group_expires() -> None:
    from broker.core.context import GroupConfig

    b = Broker(options={**OPTIONS, "groups": GroupConfig(empty_group_expiry_ms=2000)}).boot()  # type: ignore[dict-item]
    b.create_topic("t", partitions=4)
    b.create_topic("u", partitions=1)
    for _ in range(40):
        b.tick()
        if b.call(FindCoordinatorRequest(key="g")).error == ErrorCode.NONE:
            break
    commit = OffsetCommitRequest(
        group_id="g", member_id="", member_epoch=-1,
        topics=(CommitTopic(topic="t", partitions=(CommitPartition(partition=0, offset=7),)),
                CommitTopic(topic="u", partitions=(CommitPartition(partition=0, offset=3),))),
    )  # fmt: skip
    assert b.call(commit).error == ErrorCode.NONE
    token = b.token()
    assert b.node.delete_topic(token, 0, "u")[0] == ErrorCode.NONE
    b.run()
    b.tick(12)
    fetched = b.call(OffsetFetchRequest(group_id="g")).body
    assert [(o.topic, o.offset) for o in fetched.offsets] == [("t", 7)]  # type: ignore[union-attr]
    b.tick(45)  # 2.25 s without members
    d = b.call(DescribeGroupsRequest(group_ids=("g",))).body.groups[0]  # type: ignore[union-attr]
    assert d.error == ErrorCode.GROUP_ID_NOT_FOUND


def test_new_partitions_of_a_subscribed_topic_are_assigned() -> None:
    """Sluice has no API to add partitions yet: the topic grows in this broker's metadata
    view directly, and a later metadata entry (another topic) moves the applied index the
    coordinator's comparison keys on."""
    import dataclasses

    from broker.core.metadata import PartitionInfo

    b = booted()
    first = beat(b, "a", 0)
    assert len(pairs(first.assignment)) == 4
    topic = b.node.meta.topics["t"]
    grown = (*topic.partitions, PartitionInfo(4, 999_999, topic.partitions[0].replicas))
    b.node.meta.topics["t"] = dataclasses.replace(topic, partitions=grown)
    b.create_topic("other", partitions=1)
    b.tick(12)
    answer = beat(b, "a", first.member_epoch, pairs(first.assignment))
    assert pairs(answer.assignment) == {("t", i) for i in range(5)}
