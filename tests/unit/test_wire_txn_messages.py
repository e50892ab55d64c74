"""The transaction APIs' messages (txn_messages.py) and INIT_PRODUCER_ID v1: round trips of
every message through its body and through whole frames, strict refusal of bad fields (naming
the field), and the version rules. `TXN_REQUESTS` / `TXN_RESPONSES` also feed the every-API
tests of test_wire_messages.py."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.wire import cbor
from broker.wire.api import SUPPORTED_VERSIONS, ApiKey
from broker.wire.errors import ErrorCode, WireError
from broker.wire.frames import FrameDecoder
from broker.wire.group_messages import (
    MAX_GROUP_ID,
    CommitPartition,
    CommitTopic,
    PartitionError,
    TopicErrors,
)
from broker.wire.limits import Limits
from broker.wire.messages import (
    DEFAULT_TRANSACTION_TIMEOUT_MS,
    InitProducerIdRequest,
    InitProducerIdResponse,
    Request,
    Response,
)
from broker.wire.protocol import (
    MAX_ERROR_MESSAGE,
    REQUEST_TYPES,
    RESPONSE_TYPES,
    RequestHeader,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)
from broker.wire.txn_messages import (
    GROUP_PARTICIPANT,
    MAX_TRANSACTIONAL_ID,
    TXN_STATES,
    AbortTransactionRequest,
    AbortTransactionResponse,
    AddOffsetsToTxnRequest,
    AddOffsetsToTxnResponse,
    AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse,
    DescribeTransactionsRequest,
    DescribeTransactionsResponse,
    EndTxnRequest,
    EndTxnResponse,
    ListedTransaction,
    ListTransactionsRequest,
    ListTransactionsResponse,
    TransactionDescription,
    TxnOffsetCommitRequest,
    TxnOffsetCommitResponse,
    TxnParticipantInfo,
    TxnSequence,
    TxnTopic,
    transactional_id,
)

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

TXN_APIS = (
    ApiKey.ADD_PARTITIONS_TO_TXN,
    ApiKey.ADD_OFFSETS_TO_TXN,
    ApiKey.TXN_OFFSET_COMMIT,
    ApiKey.END_TXN,
    ApiKey.DESCRIBE_TRANSACTIONS,
    ApiKey.LIST_TRANSACTIONS,
    ApiKey.ABORT_TRANSACTION,
)

# ---------------------------------------------------------------------------- strategies

_ID_CHARS = st.characters(blacklist_categories=("Cc", "Cs"))
TXN_ID = st.text(_ID_CHARS, min_size=1, max_size=20) | st.just("x" * MAX_TRANSACTIONAL_ID)
GROUP_ID = st.text(_ID_CHARS, min_size=1, max_size=20) | st.just("g" * MAX_GROUP_ID)
TOPIC = st.from_regex(r"[a-zA-Z0-9._-]{1,40}", fullmatch=True).filter(
    lambda n: n not in (".", "..")
) | st.just("t" * 249)
PARTITION = st.integers(min_value=0, max_value=2**31 - 1)
PRODUCER_ID = st.integers(min_value=0, max_value=2**63 - 1)
EPOCH = st.integers(min_value=0, max_value=2**15 - 1)
SEQUENCE = st.integers(min_value=-1, max_value=2**31 - 1)
STATE = st.sampled_from(TXN_STATES)
ERROR = st.sampled_from([e for e in ErrorCode if e is not ErrorCode.NONE])
OPT_TEXT = st.none() | st.text(max_size=30)


def _tuple(strategy: st.SearchStrategy[Any], **kwargs: Any) -> st.SearchStrategy[tuple[Any, ...]]:
    return st.lists(strategy, max_size=4, **kwargs).map(tuple)


def _described(error: ErrorCode | None) -> st.SearchStrategy[TransactionDescription]:
    """A described transaction (error None), or an error answer: defaults but the message."""
    if error is not None:
        return st.builds(
            TransactionDescription, transactional_id=TXN_ID, error=st.just(error), message=OPT_TEXT
        )
    participant = st.one_of(
        st.builds(TxnParticipantInfo, name=TOPIC, partition=PARTITION, last_sequence=SEQUENCE),
        st.builds(
            TxnParticipantInfo,
            name=GROUP_ID,
            partition=st.just(GROUP_PARTICIPANT),
            last_sequence=st.just(-1),
        ),
    )
    return st.builds(
        TransactionDescription,
        transactional_id=TXN_ID,
        state=STATE,
        producer_id=st.integers(min_value=-1, max_value=2**63 - 1),
        producer_epoch=st.integers(min_value=-1, max_value=2**15 - 1),
        timeout_ms=st.integers(min_value=0, max_value=2**31 - 1),
        start_ms=st.integers(min_value=-1, max_value=2**63 - 1),
        coordinator=st.integers(min_value=-1, max_value=2**31 - 1),
        participants=_tuple(participant, unique_by=lambda p: (p.name, p.partition)),
    )


_FENCE: dict[str, Any] = {
    "transactional_id": TXN_ID,
    "producer_id": PRODUCER_ID,
    "producer_epoch": EPOCH,
}

TXN_REQUESTS: dict[ApiKey, st.SearchStrategy[Any]] = {
    ApiKey.ADD_PARTITIONS_TO_TXN: st.builds(
        AddPartitionsToTxnRequest,
        **_FENCE,
        topics=_tuple(
            st.builds(
                TxnTopic,
                name=TOPIC,
                partitions=st.lists(PARTITION, min_size=1, max_size=4, unique=True).map(tuple),
            ),
            unique_by=lambda t: t.name,
        ),
    ),
    ApiKey.ADD_OFFSETS_TO_TXN: st.builds(AddOffsetsToTxnRequest, **_FENCE, group_id=GROUP_ID),
    ApiKey.TXN_OFFSET_COMMIT: st.builds(
        TxnOffsetCommitRequest,
        **_FENCE,
        group_id=GROUP_ID,
        member_id=st.just("") | GROUP_ID,
        member_epoch=st.integers(min_value=-1, max_value=2**31 - 1),
        topics=_tuple(
            st.builds(
                CommitTopic,
                topic=TOPIC,
                partitions=_tuple(
                    st.builds(
                        CommitPartition,
                        partition=PARTITION,
                        offset=st.integers(min_value=0, max_value=2**63 - 1),
                        metadata=OPT_TEXT,
                    ),
                    unique_by=lambda p: p.partition,
                ),
            ),
            unique_by=lambda t: t.topic,
        ),
    ),
    ApiKey.END_TXN: st.builds(
        EndTxnRequest,
        **_FENCE,
        commit=st.booleans(),
        sequences=_tuple(
            st.builds(TxnSequence, topic=TOPIC, partition=PARTITION, last_sequence=SEQUENCE),
            unique_by=lambda q: (q.topic, q.partition),
        ),
    ),
    ApiKey.DESCRIBE_TRANSACTIONS: st.builds(
        DescribeTransactionsRequest,
        transactional_ids=st.lists(TXN_ID, min_size=1, max_size=4, unique=True).map(tuple),
    ),
    ApiKey.LIST_TRANSACTIONS: st.builds(ListTransactionsRequest, states=_tuple(STATE, unique=True)),
    ApiKey.ABORT_TRANSACTION: st.builds(AbortTransactionRequest, transactional_id=TXN_ID),
}

TXN_RESPONSES: dict[ApiKey, st.SearchStrategy[Any]] = {
    ApiKey.ADD_PARTITIONS_TO_TXN: st.just(AddPartitionsToTxnResponse()),
    ApiKey.ADD_OFFSETS_TO_TXN: st.just(AddOffsetsToTxnResponse()),
    ApiKey.TXN_OFFSET_COMMIT: st.builds(
        TxnOffsetCommitResponse,
        topics=_tuple(
            st.builds(
                TopicErrors,
                topic=TOPIC,
                partitions=_tuple(
                    st.builds(
                        PartitionError,
                        partition=PARTITION,
                        error=st.sampled_from(list(ErrorCode)),
                        message=OPT_TEXT,
                    )
                ),
            )
        ),
    ),
    ApiKey.END_TXN: st.builds(
        EndTxnResponse, producer_id=PRODUCER_ID, producer_epoch=EPOCH, reinit=st.booleans()
    ),
    ApiKey.DESCRIBE_TRANSACTIONS: st.builds(
        DescribeTransactionsResponse,
        transactions=_tuple(
            st.one_of(_described(None), ERROR.flatmap(_described)),
            unique_by=lambda t: t.transactional_id,
        ),
    ),
    ApiKey.LIST_TRANSACTIONS: st.builds(
        ListTransactionsResponse,
        transactions=_tuple(
            st.builds(
                ListedTransaction,
                transactional_id=TXN_ID,
                producer_id=st.integers(min_value=-1, max_value=2**63 - 1),
                state=STATE,
                start_ms=st.integers(min_value=-1, max_value=2**63 - 1),
                participants=st.integers(min_value=0, max_value=2**31 - 1),
            ),
            unique_by=lambda t: t.transactional_id,
        ),
    ),
    ApiKey.ABORT_TRANSACTION: st.just(AbortTransactionResponse()),
}

# ---------------------------------------------------------------------------- samples

FENCE: dict[str, Any] = {"transactional_id": "tx-1", "producer_id": 42, "producer_epoch": 3}

SAMPLE_REQUESTS: list[tuple[Request, dict[str, Any]]] = [
    # (request, its body on the wire at version 0)
    (
        AddPartitionsToTxnRequest(
            **FENCE,
            topics=(
                TxnTopic(name="orders", partitions=(0, 2)),
                TxnTopic(name="audit", partitions=(7,)),
            ),
        ),
        {**FENCE, "topics": [["orders", [0, 2]], ["audit", [7]]]},
    ),
    (
        AddOffsetsToTxnRequest(**FENCE, group_id="grp-1"),
        {**FENCE, "group_id": "grp-1"},
    ),
    (
        TxnOffsetCommitRequest(
            **FENCE,
            group_id="grp-1",
            member_id="m-1",
            member_epoch=4,
            topics=(
                CommitTopic(
                    topic="orders",
                    partitions=(
                        CommitPartition(partition=0, offset=10),
                        CommitPartition(partition=1, offset=5, metadata="meta"),
                    ),
                ),
            ),
        ),
        {
            **FENCE,
            "group_id": "grp-1",
            "member_id": "m-1",
            "member_epoch": 4,
            "topics": [["orders", [[0, 10, None], [1, 5, "meta"]]]],
        },
    ),
    (
        TxnOffsetCommitRequest(**FENCE, group_id="g", member_id="", member_epoch=-1, topics=()),
        {**FENCE, "group_id": "g", "member_id": "", "member_epoch": -1, "topics": []},
    ),
    (
        EndTxnRequest(
            **FENCE,
            commit=True,
            sequences=(
                TxnSequence(topic="orders", partition=0, last_sequence=17),
                TxnSequence(topic="orders", partition=2, last_sequence=-1),
            ),
        ),
        {**FENCE, "commit": True, "sequences": [["orders", 0, 17], ["orders", 2, -1]]},
    ),
    (
        EndTxnRequest(**FENCE, commit=False, sequences=()),
        {**FENCE, "commit": False, "sequences": []},
    ),
    (
        DescribeTransactionsRequest(transactional_ids=("tx-1", "tx-é")),
        {"transactional_ids": ["tx-1", "tx-é"]},
    ),
    (ListTransactionsRequest(), {"states": []}),
    (
        ListTransactionsRequest(states=("ongoing", "pre_committed")),
        {"states": ["ongoing", "pre_committed"]},
    ),
    (AbortTransactionRequest(transactional_id="tx-1"), {"transactional_id": "tx-1"}),
]

DESCRIBED = TransactionDescription(
    transactional_id="tx-1",
    state="pre_committed",
    producer_id=42,
    producer_epoch=3,
    timeout_ms=60_000,
    start_ms=1_700_000_000_000,
    coordinator=2,
    participants=(
        TxnParticipantInfo(name="orders", partition=0, last_sequence=17),
        TxnParticipantInfo(name="grp-1", partition=GROUP_PARTICIPANT),
    ),
)
DESCRIBED_WIRE = {
    "transactional_id": "tx-1",
    "error": 0,
    "message": None,
    "state": "pre_committed",
    "producer_id": 42,
    "producer_epoch": 3,
    "timeout_ms": 60_000,
    "start_ms": 1_700_000_000_000,
    "coordinator": 2,
    "participants": [["orders", 0, 17], ["grp-1", -1, -1]],
}
NOT_FOUND = TransactionDescription(
    transactional_id="tx-2", error=ErrorCode.TRANSACTIONAL_ID_NOT_FOUND, message="no such id"
)
NOT_FOUND_WIRE = {
    "transactional_id": "tx-2",
    "error": int(ErrorCode.TRANSACTIONAL_ID_NOT_FOUND),
    "message": "no such id",
    "state": "",
    "producer_id": -1,
    "producer_epoch": -1,
    "timeout_ms": 0,
    "start_ms": -1,
    "coordinator": -1,
    "participants": [],
}

SAMPLE_RESPONSES: list[tuple[Response, dict[str, Any]]] = [
    (AddPartitionsToTxnResponse(), {}),
    (AddOffsetsToTxnResponse(), {}),
    (
        TxnOffsetCommitResponse(
            topics=(
                TopicErrors(
                    topic="orders",
                    partitions=(
                        PartitionError(partition=0, error=ErrorCode.NONE),
                        PartitionError(
                            partition=1, error=ErrorCode.UNKNOWN_MEMBER_ID, message="who?"
                        ),
                    ),
                ),
            )
        ),
        {"topics": [["orders", [[0, 0, None], [1, int(ErrorCode.UNKNOWN_MEMBER_ID), "who?"]]]]},
    ),
    (
        EndTxnResponse(producer_id=42, producer_epoch=4, reinit=False),
        {"producer_id": 42, "producer_epoch": 4, "reinit": False},
    ),
    (
        EndTxnResponse(producer_id=43, producer_epoch=0, reinit=True),
        {"producer_id": 43, "producer_epoch": 0, "reinit": True},
    ),
    (
        DescribeTransactionsResponse(transactions=(DESCRIBED, NOT_FOUND)),
        {"transactions": [DESCRIBED_WIRE, NOT_FOUND_WIRE]},
    ),
    (
        ListTransactionsResponse(
            transactions=(
                ListedTransaction(
                    transactional_id="tx-1",
                    producer_id=42,
                    state="ongoing",
                    start_ms=1_700_000_000_000,
                    participants=3,
                ),
                ListedTransaction(
                    transactional_id="tx-2",
                    producer_id=7,
                    state="empty",
                    start_ms=-1,
                    participants=0,
                ),
            )
        ),
        {
            "transactions": [
                ["tx-1", 42, "ongoing", 1_700_000_000_000, 3],
                ["tx-2", 7, "empty", -1, 0],
            ]
        },
    ),
    (AbortTransactionResponse(), {}),
]

INIT_V1 = InitProducerIdRequest(
    transactional_id="tx-1", producer_id=-1, producer_epoch=-1, transaction_timeout_ms=15_000
)


def _payload(frame: bytes) -> bytes:
    decoder = FrameDecoder()
    decoder.receive_data(frame)
    payload = decoder.next_frame()
    assert payload is not None and decoder.at_boundary
    return payload


def _set(path: list[Any], value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(body: dict[str, Any]) -> None:
        target: Any = body
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value

    return mutate


def _delete(key: str) -> Callable[[dict[str, Any]], None]:
    def mutate(body: dict[str, Any]) -> None:
        del body[key]

    return mutate


def _name(case: tuple[object, dict[str, Any]]) -> str:
    return type(case[0]).__name__


# ---------------------------------------------------------------------------- registry


def test_the_transaction_apis_are_registered_at_version_0() -> None:
    """Every transaction API is at version 0, except END_TXN (v1 adds `trace_context`)."""
    assert [int(k) for k in TXN_APIS] == list(range(16, 23))
    for key in TXN_APIS:
        assert SUPPORTED_VERSIONS[key] == ((0, 1) if key is ApiKey.END_TXN else (0, 0))
        assert REQUEST_TYPES[key].API_KEY is key and RESPONSE_TYPES[key].API_KEY is key
    assert SUPPORTED_VERSIONS[ApiKey.INIT_PRODUCER_ID] == (0, 1)
    assert set(TXN_REQUESTS) == set(TXN_RESPONSES) == set(TXN_APIS)
    assert {type(r).API_KEY for r, _ in SAMPLE_REQUESTS} == set(TXN_APIS)
    assert {type(r).API_KEY for r, _ in SAMPLE_RESPONSES} == set(TXN_APIS)


# ---------------------------------------------------------------------------- round trips


@pytest.mark.parametrize(("request_", "body"), SAMPLE_REQUESTS, ids=map(_name, SAMPLE_REQUESTS))
def test_request_round_trip_through_body_and_frame(request_: Request, body: dict[str, Any]) -> None:
    assert request_.to_body(0) == body  # the documented wire shape
    assert type(request_).from_body(body, 0) == request_
    frame = encode_request(request_, 77, "c")
    payload = _payload(frame)
    assert cbor.decode(payload) == [int(request_.API_KEY), 0, 77, "c", body]
    header, decoded = decode_request(payload)
    assert header == RequestHeader(
        api_key=request_.API_KEY, api_version=0, correlation_id=77, client_id="c"
    )
    assert decoded == request_ and type(decoded) is type(request_)
    assert encode_request(decoded, 77, "c") == frame


@pytest.mark.parametrize(("response", "body"), SAMPLE_RESPONSES, ids=map(_name, SAMPLE_RESPONSES))
def test_response_round_trip_through_body_and_frame(
    response: Response, body: dict[str, Any]
) -> None:
    assert response.to_body(0) == body
    assert type(response).from_body(body, 0) == response
    frame = encode_response(-9, ErrorCode.NONE, None, response)
    payload = _payload(frame)
    assert cbor.decode(payload) == [-9, 0, None, body]
    envelope = decode_response(payload, response.API_KEY)
    assert tuple(envelope) == (-9, ErrorCode.NONE, None, response)
    assert encode_response(-9, ErrorCode.NONE, None, envelope.body) == frame


@pytest.mark.parametrize("api_key", TXN_APIS, ids=[k.name for k in TXN_APIS])
def test_generated_messages_round_trip(api_key: ApiKey) -> None:
    @settings(max_examples=40, deadline=1000)
    @given(TXN_REQUESTS[api_key], TXN_RESPONSES[api_key])
    def check(request: Request, response: Response) -> None:
        assert REQUEST_TYPES[api_key].from_body(request.to_body(0), 0) == request
        assert RESPONSE_TYPES[api_key].from_body(response.to_body(0), 0) == response
        _, decoded = decode_request(_payload(encode_request(request, 1, None)))
        assert decoded == request
        answer = decode_response(
            _payload(encode_response(1, ErrorCode.NONE, None, response)), api_key
        )
        assert answer.body == response

    check()


@pytest.mark.parametrize("api_key", TXN_APIS, ids=[k.name for k in TXN_APIS])
def test_an_error_answer_carries_no_body(api_key: ApiKey) -> None:
    """Request-level errors (PRODUCER_FENCED, CONCURRENT_TRANSACTIONS, ...) are the frame's."""
    frame = encode_response(3, ErrorCode.PRODUCER_FENCED, "fenced", None)
    assert cbor.decode(_payload(frame)) == [3, int(ErrorCode.PRODUCER_FENCED), "fenced", None]
    assert tuple(decode_response(_payload(frame), api_key)) == (
        3,
        ErrorCode.PRODUCER_FENCED,
        "fenced",
        None,
    )
    with pytest.raises(WireError, match="body: must be null"):
        decode_response(cbor.encode([3, int(ErrorCode.PRODUCER_FENCED), "x", {}]), api_key)


def test_messages_in_a_description_are_cut_for_the_wire() -> None:
    long = dataclasses.replace(NOT_FOUND, message="m" * 10_000)
    frame = encode_response(
        2, ErrorCode.NONE, None, DescribeTransactionsResponse(transactions=(long,))
    )
    body = decode_response(_payload(frame), ApiKey.DESCRIBE_TRANSACTIONS).body
    assert isinstance(body, DescribeTransactionsResponse)
    message = body.transactions[0].message
    assert message is not None and len(message) == MAX_ERROR_MESSAGE


# ---------------------------------------------------------------------------- INIT_PRODUCER_ID


def _init_body(version: int) -> dict[str, Any]:
    body: dict[str, Any] = {"transactional_id": "tx-1", "producer_id": -1, "producer_epoch": -1}
    if version >= 1:
        body["transaction_timeout_ms"] = 15_000
    return body


@pytest.mark.parametrize("version", [0, 1])
def test_init_producer_id_round_trips_at_each_version(version: int) -> None:
    body = INIT_V1.to_body(version)
    assert body == _init_body(version)
    expected = (
        INIT_V1
        if version == 1
        else dataclasses.replace(INIT_V1, transaction_timeout_ms=DEFAULT_TRANSACTION_TIMEOUT_MS)
    )
    assert InitProducerIdRequest.from_body(body, version) == expected
    frame = encode_request(INIT_V1, 5, "p", api_version=version)
    assert cbor.decode(_payload(frame)) == [int(ApiKey.INIT_PRODUCER_ID), version, 5, "p", body]
    header, decoded = decode_request(_payload(frame))
    assert (header.api_version, decoded) == (version, expected)
    assert encode_request(decoded, 5, "p", api_version=version) == frame
    answer = InitProducerIdResponse(producer_id=42, producer_epoch=0)  # unchanged at v1
    envelope = decode_response(
        _payload(encode_response(5, ErrorCode.NONE, None, answer, api_version=version)),
        ApiKey.INIT_PRODUCER_ID,
        api_version=version,
    )
    assert envelope.body == answer


def test_init_producer_id_v0_reads_the_default_timeout() -> None:
    assert (
        InitProducerIdRequest().transaction_timeout_ms == 60_000 == DEFAULT_TRANSACTION_TIMEOUT_MS
    )
    _, request = decode_request(cbor.encode([7, 0, 1, None, _init_body(0)]))
    assert isinstance(request, InitProducerIdRequest)
    assert request.transaction_timeout_ms == DEFAULT_TRANSACTION_TIMEOUT_MS


def expected_code(message: str) -> ErrorCode:
    """A topic name the naming rule refuses is INVALID_TOPIC, naming the name as typed; any
    other bad field is INVALID_REQUEST, naming the field."""
    if message.startswith("invalid topic name"):
        return ErrorCode.INVALID_TOPIC
    return ErrorCode.INVALID_REQUEST


INIT_VERSION_REJECTIONS: list[tuple[str, int, Callable[[dict[str, Any]], None], str]] = [
    # (id, version, mutation of that version's valid body, expected message prefix)
    (
        "v0 with a transaction timeout",
        0,
        _set(["transaction_timeout_ms"], 15_000),
        "body: unknown 'transaction_timeout_ms'",
    ),
    (
        "v1 without a transaction timeout",
        1,
        _delete("transaction_timeout_ms"),
        "body: missing transaction_timeout_ms",
    ),
    ("timeout 0", 1, _set(["transaction_timeout_ms"], 0), "transaction_timeout_ms: 0 is outside"),
    (
        "timeout -1",
        1,
        _set(["transaction_timeout_ms"], -1),
        "transaction_timeout_ms: -1 is outside",
    ),
    (
        "timeout beyond int32",
        1,
        _set(["transaction_timeout_ms"], 2**31),
        "transaction_timeout_ms: 2147483648 is outside",
    ),
    (
        "timeout null",
        1,
        _set(["transaction_timeout_ms"], None),
        "transaction_timeout_ms: expected int, got null",
    ),
    (
        "timeout as text",
        1,
        _set(["transaction_timeout_ms"], "60000"),
        "transaction_timeout_ms: expected int, got text",
    ),
    (
        "timeout as bool",
        1,
        _set(["transaction_timeout_ms"], True),
        "transaction_timeout_ms: expected int, got bool",
    ),
]


@pytest.mark.parametrize(
    ("version", "mutate", "expected"),
    [row[1:] for row in INIT_VERSION_REJECTIONS],
    ids=[row[0] for row in INIT_VERSION_REJECTIONS],
)
def test_init_producer_id_requests_have_exactly_their_versions_fields(
    version: int, mutate: Callable[[dict[str, Any]], None], expected: str
) -> None:
    body = _init_body(version)
    decode_request(cbor.encode([int(ApiKey.INIT_PRODUCER_ID), version, 6, None, body]))
    mutate(body)
    with pytest.raises(WireError) as info:
        decode_request(cbor.encode([int(ApiKey.INIT_PRODUCER_ID), version, 6, None, body]))
    assert info.value.code is expected_code(expected)
    assert info.value.message.startswith(expected), info.value.message
    assert info.value.correlation_id == 6


def test_init_producer_id_timeout_bounds_are_accepted() -> None:
    for timeout in (1, 2**31 - 1):
        body = {**_init_body(1), "transaction_timeout_ms": timeout}
        _, request = decode_request(cbor.encode([7, 1, 1, None, body]))
        assert isinstance(request, InitProducerIdRequest)
        assert request.transaction_timeout_ms == timeout


def test_transaction_apis_refuse_versions_past_theirs() -> None:
    for request, body in SAMPLE_REQUESTS:
        past = SUPPORTED_VERSIONS[request.API_KEY][1] + 1
        with pytest.raises(WireError) as info:
            decode_request(cbor.encode([int(request.API_KEY), past, 8, None, body]))
        assert (info.value.code, info.value.correlation_id) == (ErrorCode.UNSUPPORTED_VERSION, 8)
        assert f"{request.API_KEY.name} version {past} is not supported" in info.value.message
        with pytest.raises(ValueError):
            encode_request(request, 8, None, api_version=past)


def test_end_txn_v1_carries_a_trace_context_and_v0_drops_it() -> None:
    request = next(r for r, _ in SAMPLE_REQUESTS if isinstance(r, EndTxnRequest))
    traced = dataclasses.replace(request, trace_context=TRACEPARENT)
    _, decoded = decode_request(_payload(encode_request(traced, 3, None, api_version=1)))
    assert decoded == traced
    _, old = decode_request(_payload(encode_request(traced, 3, None, api_version=0)))
    assert old == request and isinstance(old, EndTxnRequest) and old.trace_context is None
    body = {**traced.to_body(1), "trace_context": "00-bad"}
    with pytest.raises(WireError) as info:
        decode_request(cbor.encode([int(ApiKey.END_TXN), 1, 4, None, body]))
    assert info.value.code is ErrorCode.INVALID_REQUEST and "trace_context" in info.value.message


# ---------------------------------------------------------------------------- rejections


def _sample(kind: type[Any]) -> Callable[[], dict[str, Any]]:
    """The wire body of the first sample request of `kind` (a fresh copy)."""
    body = next(b for r, b in SAMPLE_REQUESTS if type(r) is kind)
    return lambda: copy.deepcopy(body)


CONTROL = "must not contain control characters"
ADD_PARTITIONS = _sample(AddPartitionsToTxnRequest)
ADD_OFFSETS = _sample(AddOffsetsToTxnRequest)
TXN_COMMIT = _sample(TxnOffsetCommitRequest)
END_TXN = _sample(EndTxnRequest)
DESCRIBE = _sample(DescribeTransactionsRequest)
ABORT = _sample(AbortTransactionRequest)


def _list_states() -> dict[str, Any]:
    return {"states": ["ongoing", "aborting"]}


REQUEST_REJECTIONS: list[tuple[str, ApiKey, Callable[[], dict[str, Any]], Any, str]] = [
    # (id, api, valid body factory, mutation, expected message prefix)
    # unknown and missing keys
    (
        "add partitions: unknown key",
        ApiKey.ADD_PARTITIONS_TO_TXN,
        ADD_PARTITIONS,
        _set(["timeout_ms"], 5),
        "body: unknown 'timeout_ms'",
    ),
    (
        "add partitions: missing topics",
        ApiKey.ADD_PARTITIONS_TO_TXN,
        ADD_PARTITIONS,
        _delete("topics"),
        "body: missing topics",
    ),
    (
        "add offsets: unknown key",
        ApiKey.ADD_OFFSETS_TO_TXN,
        ADD_OFFSETS,
        _set(["member_id"], "m"),
        "body: unknown 'member_id'",
    ),
    (
        "txn offset commit: unknown key",
        ApiKey.TXN_OFFSET_COMMIT,
        TXN_COMMIT,
        _set(["generation"], 1),
        "body: unknown 'generation'",
    ),
    (
        "end txn: unknown key",
        ApiKey.END_TXN,
        END_TXN,
        _set(["abort"], False),
        "body: unknown 'abort'",
    ),
    (
        "describe: unknown key",
        ApiKey.DESCRIBE_TRANSACTIONS,
        DESCRIBE,
        _set(["states"], []),
        "body: unknown 'states'",
    ),
    (
        "list: unknown key",
        ApiKey.LIST_TRANSACTIONS,
        _list_states,
        _set(["producer_ids"], []),
        "body: unknown 'producer_ids'",
    ),
    (
        "abort: unknown key",
        ApiKey.ABORT_TRANSACTION,
        ABORT,
        _set(["producer_id"], 1),
        "body: unknown 'producer_id'",
    ),
    # wrong types
    (
        "producer id as text",
        ApiKey.ADD_PARTITIONS_TO_TXN,
        ADD_PARTITIONS,
        _set(["producer_id"], "42"),
        "producer_id: expected int, got text",
    ),
    (
        "producer epoch as float",
        ApiKey.ADD_OFFSETS_TO_TXN,
        ADD_OFFSETS,
        _set(["producer_epoch"], 3.0),
        "producer_epoch: expected int, got float",
    ),
    (
        "commit as int",
        ApiKey.END_TXN,
        END_TXN,
        _set(["commit"], 1),
        "commit: expected bool, got int",
    ),
    (
        "commit null",
        ApiKey.END_TXN,
        END_TXN,
        _set(["commit"], None),
        "commit: expected bool, got null",
    ),
    (
        "topics a map",
        ApiKey.ADD_PARTITIONS_TO_TXN,
        ADD_PARTITIONS,
        _set(["topics"], {}),
        "topics: expected an array, got map",
    ),
    (
        "partitions a number",
        ApiKey.ADD_PARTITIONS_TO_TXN,
        ADD_PARTITIONS,
        _set(["topics", 0, 1], 0),
        "topics[0][1]: expected an array, got int",
    ),
    (
        "txn topic of three items",
        ApiKey.ADD_PARTITIONS_TO_TXN,
        ADD_PARTITIONS,
        _set(["topics", 1], ["audit", [7], 1]),
        "topics[1]: expected [name, partitions], got 3 items",
    ),
    (
        "sequence of two items",
        ApiKey.END_TXN,
        END_TXN,
        _set(["sequences", 1], ["orders", 2]),
        "sequences[1]: expected [topic, partition, last_sequence], got 2 items",
    ),
    (
        "last sequence as text",
        ApiKey.END_TXN,
        END_TXN,
        _set(["sequences", 0, 2], "17"),
        "sequences[0][2]: expected int, got text",
    ),
    (
        "member id null",
        ApiKey.TXN_OFFSET_COMMIT,
        TXN_COMMIT,
        _set(["member_id"], None),
        "member_id: expected text, got null",
    ),
    (
        "transactional ids a text",
        ApiKey.DESCRIBE_TRANSACTIONS,
        DESCRIBE,
        _set(["transactional_ids"], "tx-1"),
        "transactional_ids: expected an array, got text",
    ),
    (
        "state as int",
        ApiKey.LIST_TRANSACTIONS,
        _list_states,
        _set(["states", 1], 1),
        "states[1]: expected text, got int",
    ),
    # out of range
    (
        "producer epoch -1",
        ApiKey.ADD_PARTITIONS_TO_TXN,
        ADD_PARTITIONS,
        _set(["producer_epoch"], -1),
        "producer_epoch: -1 is outside [0, 32767]",
    ),
    (
        "producer epoch beyond int16",
        ApiKey.END_TXN,
        END_TXN,
        _set(["producer_epoch"], 2**15),
        "producer_epoch: 32768 is outside [0, 32767]",
    ),
    (
        "producer epoch beyond int16 in a txn offset commit",
        ApiKey.TXN_OFFSET_COMMIT,
        TXN_COMMIT,
        _set(["producer_epoch"], 2**15),
        "producer_epoch: 32768 is outside [0, 32767]",
    ),
    (
        "producer id -1",
        ApiKey.ADD_OFFSETS_TO_TXN,
        ADD_OFFSETS,
        _set(["producer_id"], -1),
        "producer_id: -1 is outside",
    ),
    (
        "producer id beyond int64",
        ApiKey.END_TXN,
        END_TXN,
        _set(["producer_id"], 2**63),
        "producer_id: 9223372036854775808 is outside",
    ),
    (
        "negative partition",
        ApiKey.ADD_PARTITIONS_TO_TXN,
        ADD_PARTITIONS,
        _set(["topics", 0, 1, 1], -1),
        "topics[0][1][1]: -1 is outside",
    ),
    (
        "last sequence -2",
        ApiKey.END_TXN,
        END_TXN,
        _set(["sequences", 1, 2], -2),
        "sequences[1][2]: -2 is outside",
    ),
    (
        "last sequence beyond int32",
        ApiKey.END_TXN,
        END_TXN,
        _set(["sequences", 1, 2], 2**31),
        "sequences[1][2]: 2147483648 is outside",
    ),
    (
        "sequence partition -1",
        ApiKey.END_TXN,
        END_TXN,
        _set(["sequences", 0, 1], -1),
        "sequences[0][1]: -1 is outside",
    ),
    (
        "member epoch -2",
        ApiKey.TXN_OFFSET_COMMIT,
        TXN_COMMIT,
        _set(["member_epoch"], -2),
        "member_epoch: -2 is outside",
    ),
    (
        "negative committed offset",
        ApiKey.TXN_OFFSET_COMMIT,
        TXN_COMMIT,
        _set(["topics", 0, 1, 0, 1], -1),
        "topics[0][1][0][1]: -1 is outside",
    ),
    # duplicates and empty lists
    (
        "duplicate partition",
        ApiKey.ADD_PARTITIONS_TO_TXN,
        ADD_PARTITIONS,
        _set(["topics", 0, 1], [0, 2, 0]),
        "topics[0][1][2]: duplicate partition 0",
    ),
    (
        "duplicate topic",
        ApiKey.ADD_PARTITIONS_TO_TXN,
        ADD_PARTITIONS,
        _set(["topics", 1, 0], "orders"),
        "topics[1]: duplicate topic 'orders'",
    ),
    (
        "no partitions",
        ApiKey.ADD_PARTITIONS_TO_TXN,
        ADD_PARTITIONS,
        _set(["topics", 1, 1], []),
        "topics[1][1]: must not be empty",
    ),
    (
        "duplicate committed partition",
        ApiKey.TXN_OFFSET_COMMIT,
        TXN_COMMIT,
        _set(["topics", 0, 1, 1, 0], 0),
        "topics[0][1][1]: duplicate partition 0",
    ),
    (
        "duplicate committed topic",
        ApiKey.TXN_OFFSET_COMMIT,
        TXN_COMMIT,
        lambda b: b["topics"].append(["orders", []]),
        "topics[1]: duplicate topic 'orders'",
    ),
    (
        "duplicate sequence partition",
        ApiKey.END_TXN,
        END_TXN,
        _set(["sequences", 1, 1], 0),
        "sequences[1]: duplicate partition ('orders', 0)",
    ),
    (
        "duplicate described id",
        ApiKey.DESCRIBE_TRANSACTIONS,
        DESCRIBE,
        _set(["transactional_ids", 1], "tx-1"),
        "transactional_ids[1]: duplicate transactional id 'tx-1'",
    ),
    (
        "no described id",
        ApiKey.DESCRIBE_TRANSACTIONS,
        DESCRIBE,
        _set(["transactional_ids"], []),
        "transactional_ids: must not be empty",
    ),
    (
        "duplicate listed state",
        ApiKey.LIST_TRANSACTIONS,
        _list_states,
        _set(["states", 1], "ongoing"),
        "states[1]: duplicate state 'ongoing'",
    ),
    # states
    (
        "unknown state",
        ApiKey.LIST_TRANSACTIONS,
        _list_states,
        _set(["states", 1], "complete_commit"),
        "states[1]: unknown transaction state 'complete_commit' (one of empty, ongoing, "
        "preparing, pre_committed, aborting)",
    ),
    (
        "state in upper case",
        ApiKey.LIST_TRANSACTIONS,
        _list_states,
        _set(["states", 0], "ONGOING"),
        "states[0]: unknown transaction state 'ONGOING'",
    ),
    (
        "empty state",
        ApiKey.LIST_TRANSACTIONS,
        _list_states,
        _set(["states", 0], ""),
        "states[0]: unknown transaction state ''",
    ),
    # transactional ids
    *(
        (
            f"{kind.__name__}: {what}",
            kind.API_KEY,
            factory,
            _set(["transactional_id"], bad),
            f"transactional_id: {problem}",
        )
        for kind, factory in (
            (AddPartitionsToTxnRequest, ADD_PARTITIONS),
            (AddOffsetsToTxnRequest, ADD_OFFSETS),
            (TxnOffsetCommitRequest, TXN_COMMIT),
            (EndTxnRequest, END_TXN),
            (AbortTransactionRequest, ABORT),
        )
        for what, bad, problem in (
            ("empty transactional id", "", "must not be empty"),
            ("transactional id with NUL", "tx\x00", CONTROL),
            ("transactional id with a newline", "tx\n1", CONTROL),
            ("transactional id with DEL", "\x7f", CONTROL),
            ("transactional id with a C1 control", "tx\x85", CONTROL),
            ("transactional id of 250 characters", "x" * 250, "250 characters exceed 249"),
            ("transactional id null", None, "expected text, got null"),
            ("transactional id as bytes", b"tx", "expected text, got bytes"),
        )
    ),
    (
        "described id with a control character",
        ApiKey.DESCRIBE_TRANSACTIONS,
        DESCRIBE,
        _set(["transactional_ids", 1], "tx\t2"),
        f"transactional_ids[1]: {CONTROL}",
    ),
    (
        "described id of 250 characters",
        ApiKey.DESCRIBE_TRANSACTIONS,
        DESCRIBE,
        _set(["transactional_ids", 0], "x" * 250),
        "transactional_ids[0]: 250 characters exceed 249",
    ),
    (
        "described id empty",
        ApiKey.DESCRIBE_TRANSACTIONS,
        DESCRIBE,
        _set(["transactional_ids", 0], ""),
        "transactional_ids[0]: must not be empty",
    ),
    # group ids, member ids, topics
    (
        "add offsets: empty group id",
        ApiKey.ADD_OFFSETS_TO_TXN,
        ADD_OFFSETS,
        _set(["group_id"], ""),
        "group_id: must not be empty",
    ),
    (
        "add offsets: group id of 256 characters",
        ApiKey.ADD_OFFSETS_TO_TXN,
        ADD_OFFSETS,
        _set(["group_id"], "g" * (MAX_GROUP_ID + 1)),
        "group_id: 256 characters exceed 255",
    ),
    (
        "txn offset commit: group id with a control character",
        ApiKey.TXN_OFFSET_COMMIT,
        TXN_COMMIT,
        _set(["group_id"], "g\x1b"),
        f"group_id: {CONTROL}",
    ),
    (
        "member id with a control character",
        ApiKey.TXN_OFFSET_COMMIT,
        TXN_COMMIT,
        _set(["member_id"], "m\x00"),
        f"member_id: {CONTROL}",
    ),
    (
        "txn topic with a slash",
        ApiKey.ADD_PARTITIONS_TO_TXN,
        ADD_PARTITIONS,
        _set(["topics", 1, 0], "a/b"),
        "invalid topic name 'a/b': use 1-249 of ASCII letters",
    ),
    (
        "sequence topic of 250 characters",
        ApiKey.END_TXN,
        END_TXN,
        _set(["sequences", 0, 0], "t" * 250),
        "invalid topic name '",
    ),
]


@pytest.mark.parametrize(
    ("api_key", "factory", "mutate", "expected"),
    [row[1:] for row in REQUEST_REJECTIONS],
    ids=[row[0] for row in REQUEST_REJECTIONS],
)
def test_bad_request_fields_are_named(
    api_key: ApiKey,
    factory: Callable[[], dict[str, Any]],
    mutate: Callable[[dict[str, Any]], None],
    expected: str,
) -> None:
    body = factory()
    decode_request(cbor.encode([int(api_key), 0, 11, None, body]))  # valid before the mutation
    mutate(body)
    with pytest.raises(WireError) as info:
        decode_request(cbor.encode([int(api_key), 0, 11, "client", body]))
    assert info.value.code is expected_code(expected)
    assert info.value.message.startswith(expected), info.value.message
    assert info.value.correlation_id == 11


def _answer(kind: type[Any]) -> Callable[[], dict[str, Any]]:
    body = next(b for r, b in SAMPLE_RESPONSES if type(r) is kind)
    return lambda: copy.deepcopy(body)


DESCRIBE_ANSWER = _answer(DescribeTransactionsResponse)
LIST_ANSWER = _answer(ListTransactionsResponse)
T0 = ["transactions", 0]
T1 = ["transactions", 1]

RESPONSE_REJECTIONS: list[tuple[str, ApiKey, Callable[[], dict[str, Any]], Any, str]] = [
    # (id, api, valid answer body factory, mutation, expected message prefix)
    *(
        (
            f"{key.name}: a body with a key",
            key,
            dict,
            _set(["error"], 0),
            "body: unknown 'error'",
        )
        for key in (
            ApiKey.ADD_PARTITIONS_TO_TXN,
            ApiKey.ADD_OFFSETS_TO_TXN,
            ApiKey.ABORT_TRANSACTION,
        )
    ),
    (
        "end txn: reinit as int",
        ApiKey.END_TXN,
        _answer(EndTxnResponse),
        _set(["reinit"], 0),
        "reinit: expected bool, got int",
    ),
    (
        "end txn: epoch -1",
        ApiKey.END_TXN,
        _answer(EndTxnResponse),
        _set(["producer_epoch"], -1),
        "producer_epoch: -1 is outside [0, 32767]",
    ),
    (
        "end txn: producer id -1",
        ApiKey.END_TXN,
        _answer(EndTxnResponse),
        _set(["producer_id"], -1),
        "producer_id: -1 is outside",
    ),
    (
        "end txn: missing reinit",
        ApiKey.END_TXN,
        _answer(EndTxnResponse),
        _delete("reinit"),
        "body: missing reinit",
    ),
    (
        "txn offset commit result of two items",
        ApiKey.TXN_OFFSET_COMMIT,
        _answer(TxnOffsetCommitResponse),
        _set(["topics", 0, 1, 0], [0, 0]),
        "topics[0][1][0]: expected [partition, error, message], got 2 items",
    ),
    (
        "described state unknown",
        ApiKey.DESCRIBE_TRANSACTIONS,
        DESCRIBE_ANSWER,
        _set([*T0, "state"], "prepare_commit"),
        "transactions[0].state: unknown transaction state 'prepare_commit'",
    ),
    (
        "described state empty without an error",
        ApiKey.DESCRIBE_TRANSACTIONS,
        DESCRIBE_ANSWER,
        _set([*T0, "state"], ""),
        "transactions[0].state: unknown transaction state ''",
    ),
    (
        "described state with an error",
        ApiKey.DESCRIBE_TRANSACTIONS,
        DESCRIBE_ANSWER,
        _set([*T1, "state"], "ongoing"),
        "transactions[1].state: must be empty with an error",
    ),
    (
        "described id with a control character",
        ApiKey.DESCRIBE_TRANSACTIONS,
        DESCRIBE_ANSWER,
        _set([*T0, "transactional_id"], "tx\x00"),
        f"transactions[0].transactional_id: {CONTROL}",
    ),
    (
        "described id twice",
        ApiKey.DESCRIBE_TRANSACTIONS,
        DESCRIBE_ANSWER,
        _set([*T1, "transactional_id"], "tx-1"),
        "transactions[1]: duplicate transactional id 'tx-1'",
    ),
    (
        "described epoch -2",
        ApiKey.DESCRIBE_TRANSACTIONS,
        DESCRIBE_ANSWER,
        _set([*T0, "producer_epoch"], -2),
        "transactions[0].producer_epoch: -2 is outside",
    ),
    (
        "described timeout -1",
        ApiKey.DESCRIBE_TRANSACTIONS,
        DESCRIBE_ANSWER,
        _set([*T0, "timeout_ms"], -1),
        "transactions[0].timeout_ms: -1 is outside",
    ),
    (
        "described coordinator -2",
        ApiKey.DESCRIBE_TRANSACTIONS,
        DESCRIBE_ANSWER,
        _set([*T0, "coordinator"], -2),
        "transactions[0].coordinator: -2 is outside",
    ),
    (
        "described without participants",
        ApiKey.DESCRIBE_TRANSACTIONS,
        DESCRIBE_ANSWER,
        lambda b: b["transactions"][0].pop("participants"),
        "transactions[0]: missing participants",
    ),
    (
        "participant partition -2",
        ApiKey.DESCRIBE_TRANSACTIONS,
        DESCRIBE_ANSWER,
        _set([*T0, "participants", 0, 1], -2),
        "transactions[0].participants[0][1]: -2 is outside",
    ),
    (
        "participant topic with a space",
        ApiKey.DESCRIBE_TRANSACTIONS,
        DESCRIBE_ANSWER,
        _set([*T0, "participants", 0, 0], "a b"),
        "invalid topic name 'a b': use 1-249 of ASCII letters",
    ),
    (
        "participant group with a control character",
        ApiKey.DESCRIBE_TRANSACTIONS,
        DESCRIBE_ANSWER,
        _set([*T0, "participants", 1, 0], "g\x00"),
        f"transactions[0].participants[1][0]: {CONTROL}",
    ),
    (
        "participant twice",
        ApiKey.DESCRIBE_TRANSACTIONS,
        DESCRIBE_ANSWER,
        _set([*T0, "participants", 1], ["orders", 0, -1]),
        "transactions[0].participants[1]: duplicate participant ('orders', 0)",
    ),
    (
        "participant last sequence -2",
        ApiKey.DESCRIBE_TRANSACTIONS,
        DESCRIBE_ANSWER,
        _set([*T0, "participants", 0, 2], -2),
        "transactions[0].participants[0][2]: -2 is outside",
    ),
    (
        "listed state empty",
        ApiKey.LIST_TRANSACTIONS,
        LIST_ANSWER,
        _set(["transactions", 1, 2], ""),
        "transactions[1][2]: unknown transaction state ''",
    ),
    (
        "listed participants -1",
        ApiKey.LIST_TRANSACTIONS,
        LIST_ANSWER,
        _set(["transactions", 0, 4], -1),
        "transactions[0][4]: -1 is outside",
    ),
    (
        "listed id of 250 characters",
        ApiKey.LIST_TRANSACTIONS,
        LIST_ANSWER,
        _set(["transactions", 0, 0], "x" * 250),
        "transactions[0][0]: 250 characters exceed 249",
    ),
    (
        "listed of four items",
        ApiKey.LIST_TRANSACTIONS,
        LIST_ANSWER,
        _set(["transactions", 0], ["tx-1", 42, "ongoing", 0]),
        "transactions[0]: expected [transactional_id, producer_id, state, start_ms, "
        "participants], got 4 items",
    ),
    (
        "listed id twice",
        ApiKey.LIST_TRANSACTIONS,
        LIST_ANSWER,
        _set(["transactions", 1, 0], "tx-1"),
        "transactions[1]: duplicate transactional id 'tx-1'",
    ),
]


@pytest.mark.parametrize(
    ("api_key", "factory", "mutate", "expected"),
    [row[1:] for row in RESPONSE_REJECTIONS],
    ids=[row[0] for row in RESPONSE_REJECTIONS],
)
def test_bad_response_fields_are_named(
    api_key: ApiKey,
    factory: Callable[[], dict[str, Any]],
    mutate: Callable[[dict[str, Any]], None],
    expected: str,
) -> None:
    body = factory()
    good = decode_response(cbor.encode([8, 0, None, body]), api_key).body
    assert good is not None and good.API_KEY is api_key
    assert good.to_body(0) == body  # valid before the mutation, and round-trips exactly
    mutate(body)
    with pytest.raises(WireError) as info:
        decode_response(cbor.encode([8, 0, None, body]), api_key)
    assert info.value.code is expected_code(expected)
    assert info.value.message.startswith(expected), info.value.message
    assert info.value.correlation_id == 8


# ---------------------------------------------------------------------------- bounds


def test_transactional_id_bounds() -> None:
    for good in ("t", "x" * MAX_TRANSACTIONAL_ID, "é" * MAX_TRANSACTIONAL_ID, "a tx / ✓"):
        assert transactional_id(good, "transactional_id") == good  # characters, not bytes
    with pytest.raises(WireError, match=r"^INVALID_REQUEST: transactional_ids\[2\]: 250 char"):
        transactional_id("é" * 250, "transactional_ids[2]")


def test_a_member_id_may_be_empty_and_any_epoch_from_minus_one() -> None:
    for member, epoch in (("", -1), ("", 0), ("m-1", -1), ("m" * MAX_GROUP_ID, 2**31 - 1)):
        body = {**TXN_COMMIT(), "member_id": member, "member_epoch": epoch}
        _, request = decode_request(cbor.encode([18, 0, 1, None, body]))
        assert isinstance(request, TxnOffsetCommitRequest)
        assert (request.member_id, request.member_epoch) == (member, epoch)


def test_a_listed_transaction_may_have_no_producer_yet() -> None:
    body = {"transactions": [["tx", -1, "empty", -1, 0]]}
    answer = ListTransactionsResponse.from_body(body, 0)
    assert answer.transactions[0].producer_id == -1


def test_array_lengths_are_bounded_by_limits() -> None:
    limits = Limits(max_array_items=2)
    body = {**ADD_PARTITIONS(), "topics": [["a", [0]], ["b", [0]], ["c", [0]]]}
    with pytest.raises(WireError, match=r"^INVALID_REQUEST: topics: 3 items exceed the limit of 2"):
        AddPartitionsToTxnRequest.from_body(body, 0, limits)
    body = {**ADD_PARTITIONS(), "topics": [["a", [0, 1, 2]]]}
    with pytest.raises(WireError, match=r"topics\[0\]\[1\]: 3 items exceed the limit of 2"):
        AddPartitionsToTxnRequest.from_body(body, 0, limits)
    with pytest.raises(WireError, match=r"^INVALID_REQUEST: states: 3 items exceed"):
        ListTransactionsRequest.from_body({"states": ["empty", "ongoing", "aborting"]}, 0, limits)
    with pytest.raises(WireError, match=r"^INVALID_REQUEST: transactional_ids: 3 items exceed"):
        DescribeTransactionsRequest.from_body({"transactional_ids": ["a", "b", "c"]}, 0, limits)


def test_topic_name_limit_can_be_narrowed() -> None:
    body = {**END_TXN(), "sequences": [["abcdef", 0, 1]]}
    with pytest.raises(WireError, match=r"'abcdef' \(6 characters\): use 1-5 of"):
        EndTxnRequest.from_body(body, 0, Limits(max_topic_name=5))
