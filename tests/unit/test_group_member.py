"""GroupMember (pure): what each heartbeat carries, reconciliation to the coordinator's answers
(a partition is owned from the answer that assigns it until the heartbeat after its release,
and released only after its revocation step), fencing, the 2/3 safety rule, leaving, backoff;
and the offset helpers (ledger, commit answers, committed offsets)."""

from __future__ import annotations

import math
import random

import pytest

from broker.wire.errors import ErrorCode
from broker.wire.group_messages import (
    CommittedOffset,
    GroupHeartbeatResponse,
    OffsetCommitResponse,
    OffsetFetchResponse,
    PartitionError,
    TopicErrors,
    pairs,
    to_topic_partitions,
)
from consumers.core.group_member import (
    GroupMember,
    OffsetLedger,
    PartitionState,
    SentHeartbeat,
    Step,
    StepKind,
    commit_outcome,
    commit_request,
    committed_offsets,
    offset_fetch_request,
)
from consumers.core.metadata import TopicPartition
from consumers.core.refresh import Backoff
from consumers.errors import (
    CoordinatorNotAvailableError,
    FencedMemberEpochError,
    InvalidRegularExpressionError,
    UnknownMemberIdError,
    UnreleasedInstanceIdError,
)

A0, A1, A2 = ("a", 0), ("a", 1), ("a", 2)
SESSION_MS = 9_000


def member(**kwargs: object) -> GroupMember:
    m = GroupMember(
        group_id="g",
        member_id="m1",
        backoff=Backoff(0.1, 1.0, rng=lambda: 1.0),
        session_timeout_ms=SESSION_MS,
        **kwargs,  # type: ignore[arg-type]
    )
    m.subscribe(["a"], None)
    return m


def answer(
    epoch: int, assignment: set[TopicPartition], interval_ms: int = 1_000
) -> GroupHeartbeatResponse:
    return GroupHeartbeatResponse(
        member_id="m1",
        member_epoch=epoch,
        heartbeat_interval_ms=interval_ms,
        session_timeout_ms=SESSION_MS,
        assignment=to_topic_partitions(assignment),
    )


def send(m: GroupMember, now: float) -> SentHeartbeat:
    sent = m.heartbeat_due(now)
    assert sent is not None, "a heartbeat was due"
    return sent


def owned(sent: SentHeartbeat) -> frozenset[TopicPartition]:
    return pairs(sent.request.owned)


def run_assign(m: GroupMember) -> frozenset[TopicPartition]:
    """The shell's ASSIGN step: offsets fetched, partitions announced."""
    step = m.next_step()
    assert step is not None and step.kind is StepKind.ASSIGN
    return m.assigned(step)


def joined(assignment: set[TopicPartition], **kwargs: object) -> GroupMember:
    """A member that joined at t=0 (answered at t=0.1) and started `assignment`."""
    m = member(**kwargs)
    m.on_heartbeat(send(m, 0.0), answer(1, assignment), 0.1)
    run_assign(m)
    return m


def test_join_sends_epoch_0_with_the_full_subscription_and_owns_nothing() -> None:
    m = GroupMember(
        group_id="g",
        member_id="m1",
        backoff=Backoff(0.1, 1.0, rng=lambda: 1.0),
        session_timeout_ms=SESSION_MS,
        instance_id="i1",
        assignor="range",
        client_host="10.0.0.1",
    )
    assert m.heartbeat_due(0.0) is None  # not subscribed: not in the group
    m.subscribe(["b", "a", "b"], "x.*")
    sent = send(m, 0.0)
    r = sent.request
    assert (r.group_id, r.member_id, r.member_epoch) == ("g", "m1", 0)
    assert (r.topics, r.pattern, r.assignor) == (("a", "b"), "x.*", "range")
    assert (r.instance_id, r.client_host, r.session_timeout_ms) == ("i1", "10.0.0.1", SESSION_MS)
    assert r.owned == ()
    assert m.heartbeat_due(0.0) is None  # one in flight at a time
    with pytest.raises(ValueError):
        m.subscribe([], None)


def test_assigned_partitions_are_owned_from_the_answer_and_announced_by_the_step() -> None:
    m = member()
    change = m.on_heartbeat(send(m, 0.0), answer(1, {A0, A1}), 0.1)
    assert change is not None and change.assigned == {A0, A1} and not change.revoked
    assert m.member_epoch == 1 and not m.announced
    assert m.heartbeat_due(1.0) is None  # the interval counts from the answer
    sent = send(m, 1.1)
    assert owned(sent) == {A0, A1}  # owned while their offsets are being fetched
    assert sent.request.member_epoch == 1
    assert run_assign(m) == {A0, A1}
    assert m.announced == {A0, A1}
    assert m.next_step() is None


def test_revocation_releases_only_after_its_step_then_heartbeats_at_once() -> None:
    m = joined({A0, A1})
    change = m.on_heartbeat(send(m, 1.1), answer(2, {A1}), 1.2)
    assert change is not None and change.revoked == {A0}
    step = m.next_step()
    assert step == Step(StepKind.REVOKE, frozenset({A0}), step.id if step else 0)
    assert step is not None
    # Until the step released it, A0 is still reported owned.
    assert owned(send(m, 2.2)) == {A0, A1}
    m.on_heartbeat(m.in_flight, answer(2, {A1}), 2.3)  # type: ignore[arg-type]
    assert m.revoke_notify(step) == {A0}  # committed: on_revoked is due
    assert A0 not in m.announced
    assert m.released(step, 2.5) == {A0}
    sent = send(m, 2.5)  # at once, not a heartbeat interval later
    assert owned(sent) == {A1}


def test_a_partition_revoked_before_it_was_announced_is_released_at_once() -> None:
    m = member()
    m.on_heartbeat(send(m, 0.0), answer(1, {A0, A1}), 0.1)
    step = m.next_step()  # fetching A0 and A1's offsets
    assert step is not None
    change = m.on_heartbeat(send(m, 1.1), answer(2, {A1}), 1.2)
    assert change is not None and change.released == {A0} and not change.revoked
    assert owned(send(m, 1.2)) == {A1}  # no interval: the coordinator learns it at once
    assert m.assigned(step) == {A1}  # the step's answer comes too late for A0
    assert m.announced == {A1}


def test_a_revoking_partition_assigned_again_is_new_only_after_its_release() -> None:
    m = joined({A0})
    m.on_heartbeat(send(m, 1.1), answer(2, set()), 1.2)
    step = m.next_step()
    assert step is not None and step.kind is StepKind.REVOKE
    change = m.on_heartbeat(send(m, 2.2), answer(3, {A0}), 2.3)
    assert change is not None and not change.assigned  # still being revoked
    m.revoke_notify(step)
    m.released(step, 2.4)
    change = m.on_heartbeat(send(m, 2.4), answer(3, {A0}), 2.5)
    assert change is not None and change.assigned == {A0}


@pytest.mark.parametrize("error", [FencedMemberEpochError(), UnknownMemberIdError()])
def test_a_fenced_member_loses_everything_and_rejoins_at_once(
    error: FencedMemberEpochError,
) -> None:
    m = joined({A0, A1})
    m.on_heartbeat(send(m, 1.1), answer(2, {A1}), 1.2)  # A0 revoking
    incarnation = m.incarnation
    dropped = m.on_heartbeat_error(send(m, 2.2), error, 2.3)
    assert dropped == {A0, A1}
    assert m.incarnation == incarnation + 1 and m.member_epoch == 0
    step = m.next_step()
    assert step is not None and step.kind is StepKind.LOST and step.partitions == {A0, A1}
    assert m.next_step() is None  # the REVOKE of A0 is gone with it
    sent = send(m, 2.3)
    assert (sent.request.member_epoch, sent.request.member_id, sent.request.owned) == (0, "m1", ())
    # A second fencing in a row is backed off.
    assert m.on_heartbeat_error(sent, error, 2.4) == frozenset()
    assert m.heartbeat_due(2.4) is None
    assert m.heartbeat_due(2.4 + 0.1) is not None


def test_the_safety_rule_counts_from_the_send_of_the_last_answered_heartbeat() -> None:
    m = joined({A0})  # the join left at 0.0, answered at 0.1
    limit = 2 / 3 * SESSION_MS / 1000
    assert m.lost_deadline() == pytest.approx(limit)
    hung = send(m, 1.1)  # never answered
    assert not m.lost(limit - 0.001)
    assert m.wake_at() == pytest.approx(limit)
    assert m.lost(limit)
    assert m.lose(limit) == {A0}
    lost_step = m.next_step()
    assert lost_step is not None and lost_step.kind is StepKind.LOST
    # The hung heartbeat's late answer is ignored: nothing is owned again through it.
    assert m.on_heartbeat(hung, answer(1, {A0}), limit + 1) is None
    assert not m.partitions and m.lost_deadline() == math.inf
    assert send(m, limit).request.member_epoch == 0


def test_an_answer_moves_the_safety_deadline_to_its_send_time() -> None:
    m = joined({A0})
    sent = send(m, 1.1)
    m.on_heartbeat(sent, answer(1, {A0}), 5.0)  # a slow answer
    assert m.lost_deadline() == pytest.approx(1.1 + 6.0)


def test_retriable_errors_back_off_and_an_answer_resets_the_backoff() -> None:
    m = member()
    assert m.on_heartbeat_error(send(m, 0.0), CoordinatorNotAvailableError(), 0.0) == frozenset()
    assert m.heartbeat_due(0.09) is None and m.next_at == pytest.approx(0.1)
    m.on_heartbeat_error(send(m, 0.1), CoordinatorNotAvailableError(), 0.1)
    assert m.next_at == pytest.approx(0.3)
    sent = send(m, m.next_at)
    assert sent.request.member_epoch == 0  # still joining
    m.on_heartbeat(sent, answer(1, set()), 0.4)
    assert m.attempts == 0


def test_unreleased_instance_id_retries_the_join_with_backoff() -> None:
    m = member(instance_id="i1")
    m.on_heartbeat_error(send(m, 0.0), UnreleasedInstanceIdError(), 0.0)
    assert m.fatal is None and m.member_epoch == 0
    assert m.heartbeat_due(0.05) is None
    assert send(m, 0.1).request.member_epoch == 0


def test_fatal_errors_drop_everything_and_stop_heartbeats() -> None:
    m = joined({A0})
    error = InvalidRegularExpressionError("bad")
    assert m.on_heartbeat_error(send(m, 1.1), error, 1.2) == {A0}
    assert m.fatal is error
    assert m.heartbeat_due(100.0) is None and m.wake_at() == math.inf


def test_a_stale_outcome_changes_nothing() -> None:
    m = joined({A0})
    sent = send(m, 1.1)
    m.abandon(sent, 1.5)
    assert m.on_heartbeat_error(sent, FencedMemberEpochError(), 1.6) == frozenset()
    assert m.partitions and m.member_epoch == 1


def test_steps_come_lost_first_then_revocations_then_assignments() -> None:
    m = joined({A0})
    m.on_heartbeat(send(m, 1.1), answer(2, {A1, A2}), 1.2)  # A0 revoked, A1 A2 new
    kinds = []
    while (step := m.next_step()) is not None:
        kinds.append((step.kind, step.partitions))
    assert kinds == [(StepKind.REVOKE, {A0}), (StepKind.ASSIGN, {A1, A2})]
    m.lose(2.0)
    step = m.next_step()
    assert step is not None and step.kind is StepKind.LOST and step.partitions == {A0}


def test_unsubscribe_revokes_everything_then_leaves() -> None:
    m = joined({A0})
    change = m.unsubscribe()
    assert change.revoked == {A0}
    step = m.next_step()
    assert step is not None
    assert owned(send(m, 1.1)) == {A0}  # heartbeats go on until it is released
    m.on_heartbeat(m.in_flight, answer(1, {A0, A1}), 1.2)  # type: ignore[arg-type]
    assert A1 not in m.partitions  # nothing new is taken while leaving
    m.revoke_notify(step)
    m.released(step, 1.3)
    leave = send(m, 1.3)
    assert (leave.request.member_epoch, leave.request.owned) == (-1, ())
    m.on_heartbeat(leave, answer(-1, set()), 1.4)
    assert m.heartbeat_due(10.0) is None and m.member_epoch == 0
    m.subscribe(["a"], None)
    assert send(m, 10.0).request.member_epoch == 0  # rejoins


def test_close_hands_over_the_announced_partitions_then_leaves_with_minus_one() -> None:
    m = joined({A0, A1})
    lost, announced = m.close()
    assert (lost, announced) == (frozenset(), {A0, A1})
    assert m.next_step() is None
    leave = m.leave_request(1.0)
    assert leave is not None and (leave.member_epoch, leave.owned) == (-1, ())
    assert m.closed and m.heartbeat_due(5.0) is None


def test_a_static_member_leaves_with_minus_two_keeping_its_partitions() -> None:
    m = joined({A0, A1}, instance_id="i1")
    m.close()
    leave = m.leave_request(1.0)
    assert leave is not None
    assert (leave.member_epoch, leave.instance_id) == (-2, "i1")
    assert pairs(leave.owned) == {A0, A1}


def test_a_member_the_coordinator_never_heard_of_sends_no_leave() -> None:
    m = GroupMember(
        group_id="g", member_id="m1", backoff=Backoff(0.1, 1.0, rng=lambda: 1.0),
        session_timeout_ms=SESSION_MS,
    )  # fmt: skip
    m.close()
    assert m.leave_request(0.0) is None
    fenced = joined({A0})
    fenced.on_heartbeat_error(send(fenced, 1.1), FencedMemberEpochError(), 1.2)
    fenced.close()
    assert fenced.leave_request(1.3) is None


def test_offset_ledger_reports_only_moved_positions() -> None:
    ledger = OffsetLedger()
    ledger.record({A0: 5, A1: None})
    assert ledger.moved({A0: 5, A1: 3}) == {A1: 3}
    ledger.forget([A0])
    assert ledger.moved({A0: 5}) == {A0: 5}


def test_commit_answers_are_sorted_per_partition() -> None:
    offsets = {A0: 1, A1: 2, A2: 3, ("b", 0): 4, ("b", 1): 5}
    request = commit_request("g", "m1", 7, offsets)
    assert (request.member_id, request.member_epoch) == ("m1", 7)
    assert [(t.topic, [(p.partition, p.offset) for p in t.partitions]) for t in request.topics] == [
        ("a", [(0, 1), (1, 2), (2, 3)]),
        ("b", [(0, 4), (1, 5)]),
    ]
    response = OffsetCommitResponse(
        topics=(
            TopicErrors(
                topic="a",
                partitions=(
                    PartitionError(partition=0, error=ErrorCode.NONE),
                    PartitionError(partition=1, error=ErrorCode.STALE_MEMBER_EPOCH),
                    PartitionError(partition=2, error=ErrorCode.FENCED_MEMBER_EPOCH),
                ),
            ),
            TopicErrors(
                topic="b",
                partitions=(
                    PartitionError(partition=0, error=ErrorCode.INVALID_REQUEST, message="no"),
                ),
            ),
        )
    )
    out = commit_outcome(offsets, response)
    assert out.done == {A0: 1} and out.stale == {A1: 2} and out.fenced == {A2: 3}
    assert isinstance(out.fenced_error, FencedMemberEpochError)
    assert list(out.failed) == [("b", 0)] and out.retry == {("b", 1): 5}  # left out: retried


def test_committed_offsets_map_minus_one_to_none() -> None:
    request = offset_fetch_request("g", [A1, A0])
    assert request.topics is not None and pairs(request.topics) == {A0, A1}
    response = OffsetFetchResponse(
        offsets=(
            CommittedOffset(topic="a", partition=0, offset=12),
            CommittedOffset(topic="a", partition=1, offset=-1),
        )
    )
    assert committed_offsets([A0, A1, A2], response) == {A0: 12, A1: None, A2: None}


@pytest.mark.parametrize("seed", range(40))
def test_random_walks_keep_the_member_consistent(seed: int) -> None:
    """Random answers, errors, steps, (un)subscriptions and clock moves: announced partitions
    are always owned and never ASSIGNING; what an answer newly assigns was not owned; the
    shell is never told to look again in the past while nothing is due (no busy loop)."""
    rng = random.Random(seed)
    m = member()
    now = 0.0
    epoch = 0
    steps: list[Step] = []
    universe = [A0, A1, A2, ("b", 0)]
    for _ in range(300):
        now += rng.choice([0.0, 0.01, 0.5, 1.0, 3.0])
        if m.lost(now):
            m.lose(now)
        sent = m.heartbeat_due(now)
        if sent is None:
            assert m.wake_at() > now
        else:
            assert owned(sent) == m.owned()
            roll = rng.random()
            if roll < 0.7:
                epoch += 1
                assignment = {tp for tp in universe if rng.random() < 0.5}
                before = m.owned()
                change = m.on_heartbeat(sent, answer(epoch, assignment), now)
                assert change is not None and not change.assigned & before
            elif roll < 0.8:
                m.on_heartbeat_error(sent, FencedMemberEpochError(), now)
            elif roll < 0.9:
                m.on_heartbeat_error(sent, CoordinatorNotAvailableError(), now)
            else:
                m.abandon(sent, now)
        action = rng.random()
        if action < 0.3 and (step := m.next_step()) is not None:
            steps.append(step)
        elif action < 0.6 and steps:
            step = steps.pop(rng.randrange(len(steps)))
            if step.kind is StepKind.ASSIGN:
                m.assigned(step)
            elif step.kind is StepKind.REVOKE:
                m.revoke_notify(step)
                m.released(step, now)
        elif action < 0.62:
            m.unsubscribe()
        elif action < 0.66:
            m.subscribe(["a", "b"], None)
        states = {tp: o.state for tp, o in m.partitions.items()}
        assert m.announced <= set(states)
        assert all(states[tp] is not PartitionState.ASSIGNING for tp in m.announced)
