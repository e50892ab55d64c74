"""Limits, error codes and version negotiation."""

from __future__ import annotations

import pytest

from broker.wire.api import SUPPORTED_VERSIONS, ApiKey, negotiate
from broker.wire.errors import BatchError, CorruptBatchError, ErrorCode, WireError
from broker.wire.limits import (
    DEFAULT_LIMITS,
    MIN_FRAME_BYTES,
    KiB,
    Limits,
    MiB,
    client_id_problem,
    is_valid_topic_name,
    topic_name_problem,
)
from broker.wire.messages import ApiVersionRange, ApiVersionsResponse


def test_default_limits() -> None:
    expected = Limits(
        max_frame_bytes=16 * MiB,
        max_nesting=16,
        max_array_items=100_000,
        max_map_items=1_000,
        max_frame_items=1_000_000,
        max_text_bytes=64 * KiB,
        max_topic_name=249,
        max_client_id=256,
        max_batch_records=100_000,
        max_batch_bytes=16 * MiB,
    )
    assert expected == DEFAULT_LIMITS
    assert MIN_FRAME_BYTES == 1024


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_frame_bytes": 1023},
        {"max_frame_bytes": 2**32},
        {"max_nesting": 0},
        {"max_array_items": -1},
        {"max_topic_name": 250},
        {"max_batch_records": True},
        {"max_text_bytes": 1.5},
    ],
)
def test_invalid_limits_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Limits(**kwargs)  # type: ignore[arg-type]


def test_limits_are_frozen() -> None:
    with pytest.raises(AttributeError):
        DEFAULT_LIMITS.max_nesting = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("orders", True),
        ("a.b_c-D9", True),
        ("t" * 249, True),
        ("t" * 250, False),
        ("", False),
        (".", False),
        ("..", False),
        ("...", True),
        ("a b", False),
        ("a/b", False),
        ("é", False),
    ],
)
def test_topic_names(name: str, valid: bool) -> None:
    assert is_valid_topic_name(name) is valid
    assert (topic_name_problem(name) is None) is valid


def test_client_id_is_measured_in_utf8_bytes() -> None:
    assert client_id_problem("x" * 256) is None
    assert client_id_problem("x" * 257) is not None
    assert client_id_problem("é" * 128) is None
    assert client_id_problem("é" * 129) is not None


def test_error_codes_use_kafkas_numbers() -> None:
    kafka = {
        "NONE": 0,
        "UNKNOWN_SERVER_ERROR": -1,
        "OFFSET_OUT_OF_RANGE": 1,
        "CORRUPT_MESSAGE": 2,
        "UNKNOWN_TOPIC_OR_PARTITION": 3,
        "LEADER_NOT_AVAILABLE": 5,
        "NOT_LEADER_OR_FOLLOWER": 6,
        "REQUEST_TIMED_OUT": 7,
        "MESSAGE_TOO_LARGE": 10,
        "NETWORK_EXCEPTION": 13,
        "COORDINATOR_LOAD_IN_PROGRESS": 14,
        "COORDINATOR_NOT_AVAILABLE": 15,
        "NOT_COORDINATOR": 16,
        "INVALID_TOPIC": 17,
        "RECORD_LIST_TOO_LARGE": 18,
        "NOT_ENOUGH_REPLICAS": 19,
        "INVALID_REQUIRED_ACKS": 21,
        "INVALID_GROUP_ID": 24,
        "UNKNOWN_MEMBER_ID": 25,
        "INVALID_SESSION_TIMEOUT": 26,
        "UNSUPPORTED_VERSION": 35,
        "TOPIC_ALREADY_EXISTS": 36,
        "INVALID_PARTITIONS": 37,
        "INVALID_REPLICATION_FACTOR": 38,
        "INVALID_REPLICA_ASSIGNMENT": 39,
        "INVALID_RECORD": 87,
        "INVALID_CONFIG": 40,
        "NOT_CONTROLLER": 41,
        "INVALID_REQUEST": 42,
        "OUT_OF_ORDER_SEQUENCE_NUMBER": 45,
        "DUPLICATE_SEQUENCE_NUMBER": 46,
        "INVALID_PRODUCER_EPOCH": 47,
        "STORAGE_ERROR": 56,
        "UNKNOWN_PRODUCER_ID": 59,
        "NON_EMPTY_GROUP": 68,
        "GROUP_ID_NOT_FOUND": 69,
        "THROTTLED": 89,
        "FENCED_MEMBER_EPOCH": 110,
        "UNRELEASED_INSTANCE_ID": 111,
        "UNSUPPORTED_ASSIGNOR": 112,
        "STALE_MEMBER_EPOCH": 113,
        "INVALID_TXN_STATE": 48,
        "INVALID_PRODUCER_ID_MAPPING": 49,
        "INVALID_TRANSACTION_TIMEOUT": 50,
        "CONCURRENT_TRANSACTIONS": 51,
        "TRANSACTION_COORDINATOR_FENCED": 52,
        "UNSTABLE_OFFSET_COMMIT": 88,
        "PRODUCER_FENCED": 90,
        "TRANSACTIONAL_ID_NOT_FOUND": 105,
    }
    sluice = {
        "INVALID_FRAME": 1000,
        "FRAME_TOO_LARGE": 1001,
        "BACKPRESSURE": 1002,
        "NOT_READY": 1003,
        "INVALID_REGULAR_EXPRESSION": 1004,
        "TRANSACTION_ABORTED": 1005,
        "TRANSACTION_TIMED_OUT": 1006,
    }
    assert {code.name: int(code) for code in ErrorCode} == kafka | sluice


def test_every_code_has_a_description_and_a_retriable_flag() -> None:
    for code in ErrorCode:
        assert isinstance(code.retriable, bool)
        assert code.description and "\n" not in code.description
    retriable = {code for code in ErrorCode if code.retriable}
    assert {
        ErrorCode.BACKPRESSURE,
        ErrorCode.NOT_READY,
        ErrorCode.NOT_LEADER_OR_FOLLOWER,
    } <= retriable
    assert ErrorCode.NONE not in retriable
    assert ErrorCode.INVALID_PRODUCER_EPOCH not in retriable
    assert ErrorCode.INVALID_FRAME not in retriable


def test_unknown_wire_codes_read_as_unknown_server_error() -> None:
    assert ErrorCode.from_wire(6) is ErrorCode.NOT_LEADER_OR_FOLLOWER
    assert ErrorCode.from_wire(31000) is ErrorCode.UNKNOWN_SERVER_ERROR


def test_errors_are_values_with_codes() -> None:
    error = WireError(ErrorCode.INVALID_REQUEST, "topics[0].name: bad", correlation_id=4)
    assert (error.code, error.message, error.correlation_id) == (
        ErrorCode.INVALID_REQUEST,
        "topics[0].name: bad",
        4,
    )
    assert str(error) == "INVALID_REQUEST: topics[0].name: bad"
    corrupt = CorruptBatchError("record 3: bad")
    assert isinstance(corrupt, BatchError) and corrupt.code is ErrorCode.CORRUPT_MESSAGE
    assert not isinstance(corrupt, WireError)


def test_supported_versions_and_negotiation() -> None:
    newer = {
        ApiKey.PRODUCE: (0, 1),
        ApiKey.FETCH: (0, 2),
        ApiKey.INIT_PRODUCER_ID: (0, 1),
        ApiKey.END_TXN: (0, 1),
    }
    assert dict(SUPPORTED_VERSIONS) == {key: newer.get(key, (0, 0)) for key in ApiKey}
    client = {0: (0, 3), 1: (0, 1), 4: (2, 5), 5: (0, 0)}
    server = {0: (1, 2), 1: (0, 0), 4: (0, 1), 99: (0, 9)}
    assert negotiate(client, server) == {ApiKey.API_VERSIONS: 2, ApiKey.METADATA: 0}
    assert negotiate({99: (0, 1)}, {99: (0, 1)}) == {}  # unknown to this code


def test_api_versions_response_feeds_negotiation() -> None:
    response = ApiVersionsResponse(
        apis=(
            *(ApiVersionRange(api_key=int(k), min_version=0, max_version=0) for k in ApiKey),
            ApiVersionRange(api_key=500, min_version=0, max_version=3),
        ),
        node_id=1,
        cluster_id="c",
    )
    chosen = negotiate(dict(SUPPORTED_VERSIONS), response.versions())
    assert chosen == {key: 0 for key in ApiKey}  # a broker of version 0 only: all at 0
    assert negotiate(SUPPORTED_VERSIONS, SUPPORTED_VERSIONS) == {
        key: high for key, (_, high) in SUPPORTED_VERSIONS.items()
    }
