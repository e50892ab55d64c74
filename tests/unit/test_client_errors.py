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
    CorruptBatch,
    GroupsNotSupported,
    LeaderNotAvailableError,
    LeadershipError,
    NotLeaderError,
    ProducerFencedError,
    SluiceError,
    StorageError,
    TransactionsNotSupported,
    UnknownTopicError,
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
    for cls in (TransactionsNotSupported, GroupsNotSupported):
        e = cls("later")
        assert isinstance(e, NotImplementedError) and isinstance(e, SluiceError)
        assert not e.retriable
