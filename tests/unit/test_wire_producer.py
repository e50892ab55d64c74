"""Idempotent-producer sequencing: every transition of the state machine in producer.py."""

from __future__ import annotations

import pytest

from broker.wire.errors import ErrorCode
from broker.wire.producer import (
    SEQUENCE_MODULUS,
    DecisionKind,
    ProducerSequences,
    ProducerState,
    ProducerStateError,
)

TP = ("orders", 0)
OTHER = ("orders", 1)


def _producer(**kwargs: int) -> ProducerSequences:
    return ProducerSequences(1000, 0, **kwargs)


def test_assign_numbers_records_per_partition() -> None:
    p = _producer()
    assert p.assign(TP, 10) == 0
    assert p.assign(TP, 5) == 10
    assert p.assign(OTHER, 3) == 0
    assert p.next_sequence(TP) == 15 and p.next_sequence(OTHER) == 3
    assert p.in_flight(TP) == ((0, 10), (10, 5))
    assert p.total_in_flight() == 3


def test_sequences_wrap_at_2_to_the_31() -> None:
    p = _producer()
    p.assign(TP, SEQUENCE_MODULUS - 3)
    assert p.assign(TP, 5) == SEQUENCE_MODULUS - 3
    assert p.next_sequence(TP) == 2


def test_in_flight_is_bounded_per_partition() -> None:
    p = _producer(max_in_flight=2)
    p.assign(TP, 1)
    p.assign(TP, 1)
    assert not p.can_assign(TP) and p.can_assign(OTHER)
    with pytest.raises(ProducerStateError):
        p.assign(TP, 1)
    p.on_result(TP, 0, ErrorCode.NONE)
    assert p.can_assign(TP)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        ProducerSequences(-1, 0)
    with pytest.raises(ValueError):
        ProducerSequences(1, 2**15)
    p = _producer()
    with pytest.raises(ValueError):
        p.assign(TP, 0)
    with pytest.raises(ProducerStateError):
        p.on_result(TP, 0, ErrorCode.NONE)  # nothing in flight
    p.assign(TP, 2)
    with pytest.raises(ProducerStateError):
        p.on_result(TP, 1, ErrorCode.NONE)  # not a base sequence in flight


@pytest.mark.parametrize("error", [ErrorCode.NONE, ErrorCode.DUPLICATE_SEQUENCE_NUMBER])
def test_active_success_and_duplicate_are_acked(error: ErrorCode) -> None:
    p = _producer()
    p.assign(TP, 4)
    decision = p.on_result(TP, 0, error)
    assert decision.kind is DecisionKind.ACKED and decision.error is error
    assert p.in_flight(TP) == () and p.state is ProducerState.ACTIVE
    assert p.next_sequence(TP) == 4


def test_acks_may_arrive_out_of_order() -> None:
    p = _producer()
    p.assign(TP, 1)
    p.assign(TP, 1)
    assert p.on_result(TP, 1, ErrorCode.NONE).kind is DecisionKind.ACKED
    assert p.in_flight(TP) == ((0, 1),)


@pytest.mark.parametrize(
    "error",
    [
        ErrorCode.NOT_LEADER_OR_FOLLOWER,
        ErrorCode.LEADER_NOT_AVAILABLE,
        ErrorCode.REQUEST_TIMED_OUT,
        ErrorCode.NETWORK_EXCEPTION,
        ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
        ErrorCode.CORRUPT_MESSAGE,
        ErrorCode.STORAGE_ERROR,
        ErrorCode.THROTTLED,
        ErrorCode.BACKPRESSURE,
        ErrorCode.NOT_READY,
    ],
)
def test_active_retriable_error_keeps_the_batch_and_its_sequence(error: ErrorCode) -> None:
    p = _producer()
    p.assign(TP, 3)
    p.assign(TP, 2)
    decision = p.on_result(TP, 0, error)
    assert decision.kind is DecisionKind.RETRY and decision.error is error
    assert p.in_flight(TP) == ((0, 3), (3, 2))
    assert p.state is ProducerState.ACTIVE and p.next_sequence(TP) == 5


def test_out_of_order_behind_an_older_batch_is_retried() -> None:
    p = _producer()
    p.assign(TP, 3)
    p.assign(TP, 2)
    decision = p.on_result(TP, 3, ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER)
    assert decision.kind is DecisionKind.RETRY
    assert p.in_flight(TP) == ((0, 3), (3, 2)) and p.state is ProducerState.ACTIVE
    # Once the older batch is written, the retry of the later one succeeds.
    assert p.on_result(TP, 0, ErrorCode.NONE).kind is DecisionKind.ACKED
    assert p.on_result(TP, 3, ErrorCode.NONE).kind is DecisionKind.ACKED


@pytest.mark.parametrize(
    "error", [ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER, ErrorCode.UNKNOWN_PRODUCER_ID]
)
def test_a_gap_at_the_oldest_batch_fails_it_and_requires_a_new_epoch(error: ErrorCode) -> None:
    p = _producer()
    p.assign(TP, 3)
    decision = p.on_result(TP, 0, error)
    assert decision.kind is DecisionKind.FAIL_AND_BUMP_EPOCH and decision.error is error
    assert p.in_flight(TP) == () and p.state is ProducerState.BUMP_REQUIRED


@pytest.mark.parametrize(
    "error",
    [
        ErrorCode.MESSAGE_TOO_LARGE,
        ErrorCode.INVALID_REQUEST,
        ErrorCode.INVALID_TOPIC,
        ErrorCode.UNKNOWN_SERVER_ERROR,
        ErrorCode.RECORD_LIST_TOO_LARGE,
        ErrorCode.INVALID_REQUIRED_ACKS,
    ],
)
def test_a_non_retriable_error_fails_the_batch_and_requires_a_new_epoch(error: ErrorCode) -> None:
    p = _producer()
    p.assign(TP, 3)
    p.assign(TP, 1)
    decision = p.on_result(TP, 3, error)
    assert decision.kind is DecisionKind.FAIL_AND_BUMP_EPOCH
    assert p.in_flight(TP) == ((0, 3),) and p.state is ProducerState.BUMP_REQUIRED


def test_invalid_epoch_is_fatal_and_fences_for_good() -> None:
    p = _producer()
    p.assign(TP, 1)
    p.assign(OTHER, 1)
    decision = p.on_result(TP, 0, ErrorCode.INVALID_PRODUCER_EPOCH)
    assert decision.kind is DecisionKind.FATAL and p.state is ProducerState.FENCED
    # Every later result is FATAL, even a success, and nothing may continue.
    assert p.on_result(OTHER, 0, ErrorCode.NONE).kind is DecisionKind.FATAL
    assert not p.can_assign(TP)
    with pytest.raises(ProducerStateError):
        p.assign(TP, 1)
    with pytest.raises(ProducerStateError):
        p.reset_for_new_epoch(1)


def test_bump_required_blocks_assign_but_resolves_in_flight_batches() -> None:
    p = _producer()
    p.assign(TP, 2)  # 0-1
    p.assign(TP, 2)  # 2-3
    p.assign(OTHER, 1)
    assert p.on_result(TP, 0, ErrorCode.MESSAGE_TOO_LARGE).kind is DecisionKind.FAIL_AND_BUMP_EPOCH
    assert p.state is ProducerState.BUMP_REQUIRED
    assert not p.can_assign(OTHER)
    with pytest.raises(ProducerStateError):
        p.assign(OTHER, 1)
    # Batches of the old epoch still resolve: a retry is still valid under it...
    assert p.on_result(OTHER, 0, ErrorCode.NOT_LEADER_OR_FOLLOWER).kind is DecisionKind.RETRY
    assert p.on_result(OTHER, 0, ErrorCode.NONE).kind is DecisionKind.ACKED
    # ...and the batch behind the gap is now the oldest: its gap is final.
    decision = p.on_result(TP, 2, ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER)
    assert decision.kind is DecisionKind.FAIL_AND_BUMP_EPOCH
    assert p.state is ProducerState.BUMP_REQUIRED and p.total_in_flight() == 0


def test_reset_for_new_epoch_restarts_every_partition_at_zero() -> None:
    p = _producer()
    p.assign(TP, 7)
    p.assign(OTHER, 2)
    p.on_result(OTHER, 0, ErrorCode.NONE)
    p.on_result(TP, 0, ErrorCode.MESSAGE_TOO_LARGE)
    p.reset_for_new_epoch(1)
    assert p.state is ProducerState.ACTIVE and p.producer_epoch == 1
    assert p.next_sequence(TP) == 0 and p.next_sequence(OTHER) == 0
    assert p.assign(TP, 1) == 0


def test_reset_requires_nothing_in_flight() -> None:
    p = _producer()
    p.assign(TP, 1)
    p.assign(TP, 1)
    p.on_result(TP, 0, ErrorCode.INVALID_REQUEST)
    with pytest.raises(ProducerStateError):
        p.reset_for_new_epoch(1)
    p.abandon(TP, 1)
    p.reset_for_new_epoch(1)
    assert p.state is ProducerState.ACTIVE


def test_abandon_while_active_requires_a_new_epoch() -> None:
    p = _producer()
    p.assign(TP, 1)
    p.abandon(TP, 0)
    assert p.state is ProducerState.BUMP_REQUIRED and p.in_flight(TP) == ()
    with pytest.raises(ProducerStateError):
        p.abandon(TP, 0)


def test_reset_may_also_bump_an_active_producer_and_change_its_id() -> None:
    p = _producer()
    p.assign(TP, 1)
    p.on_result(TP, 0, ErrorCode.NONE)
    p.reset_for_new_epoch(5)
    assert (p.producer_id, p.producer_epoch) == (1000, 5)
    with pytest.raises(ValueError):
        p.reset_for_new_epoch(5)  # the epoch must grow
    p.reset_for_new_epoch(0, producer_id=2000)  # epoch space exhausted: a new id
    assert (p.producer_id, p.producer_epoch) == (2000, 0)


def test_every_error_code_has_a_decision() -> None:
    for error in ErrorCode:
        p = _producer()
        p.assign(TP, 1)
        decision = p.on_result(TP, 0, error)
        assert decision.error is error
        if error in (ErrorCode.NONE, ErrorCode.DUPLICATE_SEQUENCE_NUMBER):
            assert decision.kind is DecisionKind.ACKED
        elif error is ErrorCode.INVALID_PRODUCER_EPOCH:
            assert decision.kind is DecisionKind.FATAL
        elif error.retriable:
            assert decision.kind is DecisionKind.RETRY
        else:
            assert decision.kind is DecisionKind.FAIL_AND_BUMP_EPOCH
