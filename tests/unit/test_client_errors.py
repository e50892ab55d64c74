"""The client's error table: every broker code maps to one typed class."""

from __future__ import annotations

import copy

import pytest

from broker.wire.errors import ErrorCode
from consumers import errors
from consumers.errors import (
    ERROR_CLASSES,
    BrokerUnavailableError,
    BufferFull,
    ClientClosedError,
    CoordinatorError,
    CoordinatorLoadInProgressError,
    CoordinatorNotAvailableError,
    CorruptBatch,
    FencedMemberEpochError,
    GroupError,
    GroupIdNotFoundError,
    GroupMemberError,
    InvalidGroupIdError,
    InvalidRegularExpressionError,
    InvalidSessionTimeoutError,
    LeaderNotAvailableError,
    LeadershipError,
    NonEmptyGroupError,
    NotCoordinatorError,
    NotLeaderError,
    ProducerFencedError,
    SluiceError,
    StaleMemberEpochError,
    StorageError,
    UnknownMemberIdError,
    UnknownTopicError,
    UnreleasedInstanceIdError,
    UnstableOffsetCommitError,
    UnsupportedAssignorError,
    error_for,
)


def test_table_covers_every_error_code() -> None:
    assert set(ERROR_CLASSES) == set(ErrorCode) - {ErrorCode.NONE}


@pytest.mark.parametrize("code", [c for c in ErrorCode if c is not ErrorCode.NONE])
def test_error_for_builds_the_typed_error(code: ErrorCode) -> None:
    e = error_for(code, "what went wrong")
    assert type(e) is ERROR_CLASSES[code]
    assert isinstance(e, SluiceError)
    assert e.code is code
    assert e.retriable is code.retriable
    assert e.message == "what went wrong"
    assert code.name in str(e)
    # The class's own code is the one the table gives it: one class per code.
    assert type(e).default_code is code


def test_one_class_per_code() -> None:
    classes = list(ERROR_CLASSES.values())
    assert len(classes) == len(set(classes))


def test_none_is_not_an_error() -> None:
    with pytest.raises(ValueError):
        error_for(ErrorCode.NONE)


def test_default_message_is_the_code_description() -> None:
    assert error_for(ErrorCode.STORAGE_ERROR).message == ErrorCode.STORAGE_ERROR.description


def test_families_and_named_classes() -> None:
    assert isinstance(error_for(ErrorCode.NOT_LEADER_OR_FOLLOWER), NotLeaderError)
    assert isinstance(error_for(ErrorCode.LEADER_NOT_AVAILABLE), LeaderNotAvailableError)
    assert isinstance(error_for(ErrorCode.LEADER_NOT_AVAILABLE), LeadershipError)
    assert isinstance(error_for(ErrorCode.INVALID_PRODUCER_EPOCH), ProducerFencedError)
    assert isinstance(error_for(ErrorCode.STORAGE_ERROR), StorageError)
    assert isinstance(error_for(ErrorCode.NETWORK_EXCEPTION), BrokerUnavailableError)
    assert error_for(ErrorCode.NETWORK_EXCEPTION).retriable
    for name in errors.__all__:
        assert hasattr(errors, name), name


def test_unknown_wire_code_reads_as_unknown_server_error() -> None:
    assert type(error_for(ErrorCode.from_wire(31337))) is errors.UnknownServerError


def test_retriable_override_and_copy_keep_code() -> None:
    e = UnknownTopicError("gone", retriable=False)
    assert e.code is ErrorCode.UNKNOWN_TOPIC_OR_PARTITION and not e.retriable
    c = copy.copy(e)
    assert type(c) is UnknownTopicError and c.code is e.code and not c.retriable
    assert c.message == "gone"


def test_client_side_errors() -> None:
    assert BufferFull("full").retriable
    assert not ClientClosedError().retriable
    corrupt = CorruptBatch("t", 2, 10, 14, "record 0: not [timestamp_delta, ...]")
    assert (corrupt.topic, corrupt.partition, corrupt.base_offset, corrupt.last_offset) == (
        "t",
        2,
        10,
        14,
    )
    assert not corrupt.retriable
    assert "t[2]" in str(corrupt) and "10..14" in str(corrupt)
    assert "10..?" in str(CorruptBatch("t", 0, 10, None, "bad"))
    assert copy.copy(corrupt).base_offset == 10


# Consumer groups: (code, its wire number, its class, its family, retriable), as the table in
# broker/wire/errors.py says (a second statement of it, as the test's oracle).
GROUP_CODES: list[tuple[ErrorCode, int, type[SluiceError], type[SluiceError], bool]] = [
    (
        ErrorCode.COORDINATOR_LOAD_IN_PROGRESS,
        14,
        CoordinatorLoadInProgressError,
        CoordinatorError,
        True,
    ),
    (ErrorCode.COORDINATOR_NOT_AVAILABLE, 15, CoordinatorNotAvailableError, CoordinatorError, True),
    (ErrorCode.NOT_COORDINATOR, 16, NotCoordinatorError, CoordinatorError, True),
    (ErrorCode.INVALID_GROUP_ID, 24, InvalidGroupIdError, GroupError, False),
    (ErrorCode.UNKNOWN_MEMBER_ID, 25, UnknownMemberIdError, GroupMemberError, False),
    (ErrorCode.INVALID_SESSION_TIMEOUT, 26, InvalidSessionTimeoutError, GroupError, False),
    (ErrorCode.NON_EMPTY_GROUP, 68, NonEmptyGroupError, GroupError, False),
    (ErrorCode.GROUP_ID_NOT_FOUND, 69, GroupIdNotFoundError, GroupError, False),
    (ErrorCode.FENCED_MEMBER_EPOCH, 110, FencedMemberEpochError, GroupMemberError, False),
    (ErrorCode.UNRELEASED_INSTANCE_ID, 111, UnreleasedInstanceIdError, GroupMemberError, True),
    (ErrorCode.UNSUPPORTED_ASSIGNOR, 112, UnsupportedAssignorError, GroupError, False),
    (ErrorCode.STALE_MEMBER_EPOCH, 113, StaleMemberEpochError, GroupMemberError, True),
    (ErrorCode.INVALID_REGULAR_EXPRESSION, 1004, InvalidRegularExpressionError, GroupError, False),
    (ErrorCode.UNSTABLE_OFFSET_COMMIT, 88, UnstableOffsetCommitError, GroupError, True),
]
GROUP_FAMILIES = (CoordinatorError, GroupMemberError, GroupError)


@pytest.mark.parametrize(
    ("code", "number", "cls", "family", "retriable"),
    GROUP_CODES,
    ids=[row[0].name for row in GROUP_CODES],
)
def test_group_codes_map_to_their_classes(
    code: ErrorCode,
    number: int,
    cls: type[SluiceError],
    family: type[SluiceError],
    retriable: bool,
) -> None:
    assert int(code) == number and ErrorCode.from_wire(number) is code
    assert ERROR_CLASSES[code] is cls and cls.default_code is code
    e = error_for(code, "m")
    assert type(e) is cls and e.code is code and e.message == "m"
    assert isinstance(e, family)
    assert [f for f in GROUP_FAMILIES if isinstance(e, f)] == [family]  # one family only
    assert not isinstance(e, (LeadershipError, errors.InvalidRequestError))
    assert e.retriable is retriable is code.retriable
    assert error_for(code).message == code.description
    c = copy.copy(e)
    assert type(c) is cls and c.code is code and c.retriable is retriable
    assert type(cls()) is cls and cls().code is code  # raised by the client with no code


@pytest.mark.parametrize("family", GROUP_FAMILIES, ids=lambda f: f.__name__)
def test_group_families_hold_exactly_their_codes(family: type[SluiceError]) -> None:
    held = {code for code, cls in ERROR_CLASSES.items() if issubclass(cls, family)}
    assert held == {code for code, _, _, f, _ in GROUP_CODES if f is family}
    assert family not in ERROR_CLASSES.values()  # a family is caught, never raised from a code
    for name in (
        family.__name__,
        *(cls.__name__ for _, _, cls, f, _ in GROUP_CODES if f is family),
    ):
        assert name in errors.__all__


def test_coordinator_errors_are_retriable_and_member_errors_mostly_not() -> None:
    """A moved or loading coordinator: find it again and retry. A fenced or unknown member
    rejoins (retrying the same request cannot succeed); a stale epoch or a held instance id
    clears with time."""
    coordinator = [code for code, _, _, f, _ in GROUP_CODES if f is CoordinatorError]
    assert coordinator and all(error_for(c).retriable for c in coordinator)
    assert not error_for(ErrorCode.FENCED_MEMBER_EPOCH).retriable
    assert not error_for(ErrorCode.UNKNOWN_MEMBER_ID).retriable
    assert error_for(ErrorCode.STALE_MEMBER_EPOCH).retriable
    assert error_for(ErrorCode.UNRELEASED_INSTANCE_ID).retriable
    group = [code for code, _, _, f, _ in GROUP_CODES if f is GroupError]
    # Only an offset an open transaction holds clears with time (once it ends).
    assert [c for c in group if error_for(c).retriable] == [ErrorCode.UNSTABLE_OFFSET_COMMIT]


# Transactions: (code, wire number, class, retriable); every one in the TransactionError
# family but PRODUCER_FENCED, a ProducerFencedError (fatal for the producer, as
# INVALID_PRODUCER_EPOCH is).
TXN_CODES: list[tuple[ErrorCode, int, type[SluiceError], bool]] = [
    (ErrorCode.INVALID_TXN_STATE, 48, errors.InvalidTxnStateError, False),
    (ErrorCode.INVALID_PRODUCER_ID_MAPPING, 49, errors.InvalidProducerIdMappingError, False),
    (ErrorCode.INVALID_TRANSACTION_TIMEOUT, 50, errors.InvalidTransactionTimeoutError, False),
    (ErrorCode.CONCURRENT_TRANSACTIONS, 51, errors.ConcurrentTransactionsError, True),
    (
        ErrorCode.TRANSACTION_COORDINATOR_FENCED,
        52,
        errors.TransactionCoordinatorFencedError,
        False,
    ),
    (ErrorCode.TRANSACTIONAL_ID_NOT_FOUND, 105, errors.TransactionalIdNotFoundError, False),
    (ErrorCode.TRANSACTION_ABORTED, 1005, errors.TransactionAbortedError, False),
    (ErrorCode.TRANSACTION_TIMED_OUT, 1006, errors.TransactionTimedOutError, False),
]


@pytest.mark.parametrize(
    ("code", "number", "cls", "retriable"), TXN_CODES, ids=[r[0].name for r in TXN_CODES]
)
def test_transaction_codes_map_to_their_classes(
    code: ErrorCode, number: int, cls: type[SluiceError], retriable: bool
) -> None:
    assert int(code) == number and ErrorCode.from_wire(number) is code
    e = error_for(code, "m")
    assert type(e) is cls and isinstance(e, errors.TransactionError)
    assert not isinstance(e, ProducerFencedError)
    assert e.retriable is retriable is code.retriable
    assert cls.__name__ in errors.__all__


def test_transaction_family_holds_exactly_its_codes() -> None:
    held = {c for c, cls in ERROR_CLASSES.items() if issubclass(cls, errors.TransactionError)}
    assert held == {row[0] for row in TXN_CODES}
    fenced = error_for(ErrorCode.PRODUCER_FENCED)
    assert isinstance(fenced, ProducerFencedError) and not fenced.retriable
    assert type(fenced) is errors.TransactionalProducerFencedError
