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
