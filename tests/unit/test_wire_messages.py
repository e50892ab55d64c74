"""Request/response messages and their envelopes: round trips of every message at every
version, strict rejection of bad fields (naming the field) and of fields another version has,
and the version rules of the envelopes."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.wire import cbor
from broker.wire.api import SUPPORTED_VERSIONS, ApiKey, capped
from broker.wire.errors import ErrorCode, WireError
from broker.wire.frames import FrameDecoder
from broker.wire.group_messages import (
    MAX_GROUP_ID,
    MAX_PATTERN,
    CommitPartition,
    CommittedOffset,
    CommitTopic,
    CoordinatorType,
    DeleteGroupsRequest,
    DeleteGroupsResponse,
    DescribedGroup,
    DescribedMember,
    DescribeGroupsRequest,
    DescribeGroupsResponse,
    FindCoordinatorRequest,
    FindCoordinatorResponse,
    GroupHeartbeatRequest,
    GroupHeartbeatResponse,
    GroupResult,
    ListedGroup,
    ListGroupsRequest,
    ListGroupsResponse,
    OffsetCommitRequest,
    OffsetCommitResponse,
    OffsetFetchRequest,
    OffsetFetchResponse,
    PartitionError,
    TopicErrors,
    TopicPartitions,
    pairs,
    to_topic_partitions,
)
from broker.wire.limits import Limits, traceparent_problem
from broker.wire.messages import (
    AbortedTransaction,
    ApiVersionRange,
    ApiVersionsRequest,
    ApiVersionsResponse,
    BrokerInfo,
    ClusterBroker,
    ClusterPartition,
    CreateTopicsRequest,
    CreateTopicsResponse,
    DeleteTopicsRequest,
    DeleteTopicsResponse,
    DescribeClusterRequest,
    DescribeClusterResponse,
    ElectLeadersRequest,
    ElectLeadersResponse,
    FetchedBatch,
    FetchPartition,
    FetchPartitionResult,
    FetchRequest,
    FetchResponse,
    FetchTopic,
    FetchTopicResult,
    InitProducerIdRequest,
    InitProducerIdResponse,
    IsolationLevel,
    ListOffsetsPartition,
    ListOffsetsPartitionResult,
    ListOffsetsRequest,
    ListOffsetsResponse,
    ListOffsetsTopic,
    ListOffsetsTopicResult,
    MetadataRequest,
    MetadataResponse,
    NewTopic,
    PartitionInfo,
    PreferredLeader,
    ProducePartition,
    ProducePartitionResult,
    ProduceRequest,
    ProduceResponse,
    ProduceTopic,
    ProduceTopicResult,
    Request,
    Response,
    TopicInfo,
    TopicResult,
)
from broker.wire.protocol import (
    MAX_ERROR_MESSAGE,
    REQUEST_TYPES,
    RESPONSE_TYPES,
    RequestHeader,
    ResponseEnvelope,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
    request_correlation_id,
    response_correlation_id,
)
from broker.wire.rebalance_messages import (
    AlterTopicRequest,
    AlterTopicResponse,
    DescribeReassignmentsRequest,
    DescribeReassignmentsResponse,
    PartitionReassignment,
    RebalanceRequest,
    RebalanceResponse,
    ReplicaMove,
)
from broker.wire.schema import Shape
from broker.wire.txn_messages import (
    AbortTransactionRequest,
    AddOffsetsToTxnRequest,
    AddPartitionsToTxnRequest,
    DescribeTransactionsRequest,
    EndTxnRequest,
    ListTransactionsRequest,
    TxnOffsetCommitRequest,
)
from tests.unit.test_wire_txn_messages import TXN_REQUESTS, TXN_RESPONSES

# ---------------------------------------------------------------------------- strategies

I16 = st.integers(min_value=-(2**15), max_value=2**15 - 1)
I32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
I64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
PARTITION = st.integers(min_value=0, max_value=2**31 - 1)
NODE = st.integers(min_value=0, max_value=2**31 - 1)
TOPIC = st.from_regex(r"[a-zA-Z0-9._-]{1,40}", fullmatch=True).filter(
    lambda n: n not in (".", "..")
)
LONG_TOPIC = st.just("t" * 249)
TOPIC_NAME = TOPIC | LONG_TOPIC
TEXT = st.text(max_size=30)
OPT_TEXT = st.none() | TEXT
ERROR = st.sampled_from(list(ErrorCode))
CONFIG = st.dictionaries(TEXT, TEXT, max_size=4)
ISOLATION = st.sampled_from(list(IsolationLevel))
OFFSET = st.integers(min_value=-1, max_value=2**63 - 1)
HEX = "0123456789abcdef"


def _hex(size: int) -> st.SearchStrategy[str]:
    return st.text(HEX, min_size=size, max_size=size)


TRACEPARENT = st.builds(
    lambda v, t, p, f: f"{v}-{t}-{p}-{f}", _hex(2), _hex(32), _hex(16), _hex(2)
).filter(lambda text: traceparent_problem(text) is None)


def _tuple(strategy: st.SearchStrategy[Any], **kwargs: Any) -> st.SearchStrategy[tuple[Any, ...]]:
    return st.lists(strategy, max_size=4, **kwargs).map(tuple)


def _by_name(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[tuple[Any, ...]]:
    return _tuple(strategy, unique_by=lambda t: t.name)


def _by_partition(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[tuple[Any, ...]]:
    return _tuple(strategy, unique_by=lambda p: p.partition)


def _by_topic(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[tuple[Any, ...]]:
    return _tuple(strategy, unique_by=lambda t: t.topic)


# Consumer groups: ids are 1..255 characters without control characters (the C0 set and DEL
# are refused; C1 ones are left out here too), any other text.
_ID_CHARS = st.characters(blacklist_categories=("Cc", "Cs"))
GROUP_ID = st.text(_ID_CHARS, min_size=1, max_size=20) | st.just("g" * MAX_GROUP_ID)
OPT_GROUP_ID = st.none() | GROUP_ID
HEARTBEAT_EPOCH = st.integers(min_value=-2, max_value=2**31 - 1)
POSITIVE_MS = st.integers(min_value=1, max_value=2**31 - 1)
TOPIC_PARTITIONS = _by_topic(
    st.builds(TopicPartitions, topic=TOPIC_NAME, partitions=_tuple(PARTITION, unique=True))
)
PATTERN = st.none() | st.text(min_size=1, max_size=30) | st.just("p" * MAX_PATTERN)
GROUP_STATE = st.sampled_from(["empty", "reconciling", "stable", "dead"]) | st.text(
    min_size=1, max_size=10
)


REQUESTS: dict[ApiKey, st.SearchStrategy[Any]] = {
    ApiKey.API_VERSIONS: st.just(ApiVersionsRequest()),
    ApiKey.METADATA: st.builds(MetadataRequest, topics=st.none() | _tuple(TOPIC_NAME, unique=True)),
    ApiKey.CREATE_TOPICS: st.builds(
        CreateTopicsRequest,
        topics=_by_name(
            st.builds(
                NewTopic, name=TOPIC_NAME, partitions=I32, replication_factor=I16, config=CONFIG
            )
        ),
        timeout_ms=PARTITION,
    ),
    ApiKey.DELETE_TOPICS: st.builds(
        DeleteTopicsRequest, names=_tuple(TOPIC_NAME, unique=True), timeout_ms=PARTITION
    ),
    ApiKey.PRODUCE: st.builds(
        ProduceRequest,
        topics=_by_name(
            st.builds(
                ProduceTopic,
                name=TOPIC_NAME,
                partitions=_by_partition(
                    st.builds(ProducePartition, partition=PARTITION, batch=st.binary(max_size=64))
                ),
            )
        ),
        timeout_ms=PARTITION,
        transactional_id=st.none() | st.text(min_size=1, max_size=20),
        trace_context=st.none() | TRACEPARENT,
    ),
    ApiKey.FETCH: st.builds(
        FetchRequest,
        topics=_by_name(
            st.builds(
                FetchTopic,
                name=TOPIC_NAME,
                partitions=_by_partition(
                    st.builds(FetchPartition, partition=PARTITION, offset=I64, max_bytes=PARTITION)
                ),
            )
        ),
        max_wait_ms=PARTITION,
        min_bytes=PARTITION,
        max_bytes=PARTITION,
        isolation=ISOLATION,
        trace_context=st.none() | TRACEPARENT,
    ),
    ApiKey.LIST_OFFSETS: st.builds(
        ListOffsetsRequest,
        topics=_by_name(
            st.builds(
                ListOffsetsTopic,
                name=TOPIC_NAME,
                partitions=_by_partition(
                    st.builds(
                        ListOffsetsPartition,
                        partition=PARTITION,
                        timestamp=st.integers(min_value=-2, max_value=2**63 - 1),
                    )
                ),
            )
        ),
        isolation=ISOLATION,
    ),
    ApiKey.INIT_PRODUCER_ID: st.builds(
        InitProducerIdRequest,
        transactional_id=st.none() | st.text(min_size=1, max_size=20),
        producer_id=st.integers(min_value=-1, max_value=2**63 - 1),
        producer_epoch=st.integers(min_value=-1, max_value=2**15 - 1),
        transaction_timeout_ms=POSITIVE_MS,
    ),
    ApiKey.DESCRIBE_CLUSTER: st.just(DescribeClusterRequest()),
    ApiKey.ELECT_LEADERS: st.builds(
        ElectLeadersRequest, topics=st.none() | _tuple(TOPIC_NAME, unique=True)
    ),
    ApiKey.REBALANCE: st.builds(
        RebalanceRequest,
        execute=st.booleans(),
        cancel=st.booleans(),
        exclude=_tuple(NODE, unique=True),
        drain=_tuple(NODE, unique=True),
        undrain=_tuple(NODE, unique=True),
        throttle_bytes_per_s=st.none() | st.integers(min_value=0, max_value=2**63 - 1),
    ),
    ApiKey.DESCRIBE_REASSIGNMENTS: st.just(DescribeReassignmentsRequest()),
    ApiKey.ALTER_TOPIC: st.builds(
        AlterTopicRequest,
        name=TOPIC_NAME,
        partitions=st.none() | st.integers(min_value=1, max_value=2**31 - 1),
        set_config=st.dictionaries(TEXT, TEXT, max_size=3),
        delete_config=_tuple(st.text(min_size=1, max_size=20), unique=True),
    ),
    ApiKey.FIND_COORDINATOR: st.builds(
        FindCoordinatorRequest, key=GROUP_ID, key_type=st.sampled_from(list(CoordinatorType))
    ),
    ApiKey.GROUP_HEARTBEAT: st.builds(
        GroupHeartbeatRequest,
        group_id=GROUP_ID,
        member_id=GROUP_ID,
        member_epoch=HEARTBEAT_EPOCH,
        instance_id=OPT_GROUP_ID,
        client_host=st.none() | st.text(max_size=20) | st.just("h" * MAX_GROUP_ID),
        session_timeout_ms=PARTITION,
        topics=_tuple(TOPIC_NAME, unique=True),
        pattern=PATTERN,
        assignor=OPT_GROUP_ID,
        owned=TOPIC_PARTITIONS,
    ),
    ApiKey.OFFSET_COMMIT: st.one_of(
        st.tuples(st.just(""), st.just(-1)),
        st.tuples(GROUP_ID, st.integers(min_value=0, max_value=2**31 - 1)),
    ).flatmap(
        lambda who: st.builds(
            OffsetCommitRequest,
            group_id=GROUP_ID,
            member_id=st.just(who[0]),
            member_epoch=st.just(who[1]),
            topics=_by_topic(
                st.builds(
                    CommitTopic,
                    topic=TOPIC_NAME,
                    partitions=_by_partition(
                        st.builds(
                            CommitPartition,
                            partition=PARTITION,
                            offset=st.integers(min_value=0, max_value=2**63 - 1),
                            metadata=OPT_TEXT | st.just("m" * 4096),
                        )
                    ),
                )
            ),
        )
    ),
    ApiKey.OFFSET_FETCH: st.builds(
        OffsetFetchRequest, group_id=GROUP_ID, topics=st.none() | TOPIC_PARTITIONS
    ),
    ApiKey.LIST_GROUPS: st.just(ListGroupsRequest()),
    ApiKey.DESCRIBE_GROUPS: st.builds(
        DescribeGroupsRequest, group_ids=_tuple(GROUP_ID, unique=True)
    ),
    ApiKey.DELETE_GROUPS: st.builds(DeleteGroupsRequest, group_ids=_tuple(GROUP_ID, unique=True)),
    **TXN_REQUESTS,
}

LEADER_HINT = st.none() | st.integers(min_value=0, max_value=2**31 - 1)
PREFERRED_LEADER = st.builds(
    PreferredLeader, topic=TOPIC_NAME, partition=PARTITION, leader=st.none() | NODE, preferred=NODE
)

RESPONSES: dict[ApiKey, st.SearchStrategy[Any]] = {
    ApiKey.API_VERSIONS: st.builds(
        ApiVersionsResponse,
        apis=_tuple(
            st.integers(min_value=0, max_value=100).flatmap(
                lambda low: st.builds(
                    ApiVersionRange,
                    api_key=st.integers(min_value=0, max_value=2**15 - 1),
                    min_version=st.just(low),
                    max_version=st.integers(min_value=low, max_value=200),
                )
            ),
            unique_by=lambda a: a.api_key,
        ),
        node_id=NODE,
        cluster_id=OPT_TEXT,
    ),
    ApiKey.METADATA: st.builds(
        MetadataResponse,
        cluster_id=OPT_TEXT,
        controller=st.none() | NODE,
        brokers=_tuple(
            st.builds(
                BrokerInfo,
                id=NODE,
                host=st.text(min_size=1, max_size=20),
                port=st.integers(min_value=0, max_value=65535),
                rack=OPT_TEXT,
            )
        ),
        topics=_tuple(
            st.builds(
                TopicInfo,
                name=TOPIC_NAME,
                error=ERROR,
                partitions=_tuple(
                    st.builds(
                        PartitionInfo,
                        partition=PARTITION,
                        leader=st.none() | NODE,
                        leader_term=st.integers(min_value=-1, max_value=2**63 - 1),
                        replicas=_tuple(NODE),
                        error=ERROR,
                    )
                ),
                replication_factor=st.integers(min_value=0, max_value=2**15 - 1),
                config=CONFIG,
            )
        ),
    ),
    ApiKey.CREATE_TOPICS: st.builds(
        CreateTopicsResponse,
        topics=_tuple(st.builds(TopicResult, name=TOPIC_NAME, error=ERROR, message=OPT_TEXT)),
    ),
    ApiKey.DELETE_TOPICS: st.builds(
        DeleteTopicsResponse,
        topics=_tuple(st.builds(TopicResult, name=TOPIC_NAME, error=ERROR, message=OPT_TEXT)),
    ),
    ApiKey.PRODUCE: st.builds(
        ProduceResponse,
        topics=_tuple(
            st.builds(
                ProduceTopicResult,
                name=TOPIC_NAME,
                partitions=_tuple(
                    st.builds(
                        ProducePartitionResult,
                        partition=PARTITION,
                        error=ERROR,
                        message=OPT_TEXT,
                        base_offset=OFFSET,
                        log_start_offset=OFFSET,
                        leader=LEADER_HINT,
                        leader_term=OFFSET,
                    )
                ),
            )
        ),
    ),
    ApiKey.FETCH: st.builds(
        FetchResponse,
        topics=_tuple(
            st.builds(
                FetchTopicResult,
                name=TOPIC_NAME,
                partitions=_tuple(
                    st.builds(
                        FetchPartitionResult,
                        partition=PARTITION,
                        error=ERROR,
                        message=OPT_TEXT,
                        high_watermark=OFFSET,
                        last_stable_offset=OFFSET,
                        log_start_offset=OFFSET,
                        leader=LEADER_HINT,
                        leader_term=OFFSET,
                        batches=_tuple(
                            st.builds(
                                FetchedBatch,
                                base_offset=st.integers(min_value=0, max_value=2**63 - 1),
                                data=st.binary(max_size=40),
                            )
                        ),
                        next_offset=I64,
                        aborted_transactions=_tuple(
                            st.builds(
                                AbortedTransaction,
                                producer_id=st.integers(min_value=0, max_value=2**63 - 1),
                                first_offset=st.integers(min_value=0, max_value=2**63 - 1),
                            )
                        ),
                    )
                ),
            )
        ),
    ),
    ApiKey.LIST_OFFSETS: st.builds(
        ListOffsetsResponse,
        topics=_tuple(
            st.builds(
                ListOffsetsTopicResult,
                name=TOPIC_NAME,
                partitions=_tuple(
                    st.builds(
                        ListOffsetsPartitionResult,
                        partition=PARTITION,
                        error=ERROR,
                        offset=OFFSET,
                        timestamp=I64,
                    )
                ),
            )
        ),
    ),
    ApiKey.INIT_PRODUCER_ID: st.builds(
        InitProducerIdResponse,
        producer_id=st.integers(min_value=0, max_value=2**63 - 1),
        producer_epoch=st.integers(min_value=0, max_value=2**15 - 1),
    ),
    ApiKey.DESCRIBE_CLUSTER: st.builds(
        DescribeClusterResponse,
        cluster_id=OPT_TEXT,
        controller=st.none() | NODE,
        brokers=_tuple(
            st.builds(
                ClusterBroker,
                id=NODE,
                host=st.text(min_size=1, max_size=20),
                port=st.integers(min_value=0, max_value=65535),
                rack=OPT_TEXT,
                alive=st.booleans(),
            ),
            unique_by=lambda b: b.id,
        ),
        partitions=_tuple(
            st.builds(
                ClusterPartition,
                topic=TOPIC_NAME,
                partition=PARTITION,
                leader=st.none() | NODE,
                leader_term=st.integers(min_value=-1, max_value=2**63 - 1),
                replicas=_tuple(NODE, unique=True),
                caught_up=_tuple(NODE, unique=True),
                commit_lag=st.integers(min_value=-1, max_value=2**63 - 1),
            ),
            unique_by=lambda p: (p.topic, p.partition),
        ),
    ),
    ApiKey.FIND_COORDINATOR: st.builds(
        FindCoordinatorResponse,
        node_id=NODE,
        host=st.text(min_size=1, max_size=20),
        port=st.integers(min_value=0, max_value=65535),
        partition=PARTITION,
    ),
    ApiKey.GROUP_HEARTBEAT: st.builds(
        GroupHeartbeatResponse,
        member_id=GROUP_ID,
        member_epoch=HEARTBEAT_EPOCH,
        heartbeat_interval_ms=POSITIVE_MS,
        session_timeout_ms=POSITIVE_MS,
        assignment=TOPIC_PARTITIONS,
    ),
    ApiKey.OFFSET_COMMIT: st.builds(
        OffsetCommitResponse,
        topics=_tuple(
            st.builds(
                TopicErrors,
                topic=TOPIC_NAME,
                partitions=_tuple(
                    st.builds(PartitionError, partition=PARTITION, error=ERROR, message=OPT_TEXT)
                ),
            )
        ),
    ),
    ApiKey.OFFSET_FETCH: st.builds(
        OffsetFetchResponse,
        offsets=_tuple(
            st.builds(
                CommittedOffset,
                topic=TOPIC_NAME,
                partition=PARTITION,
                offset=OFFSET,
                metadata=OPT_TEXT,
            ),
            unique_by=lambda o: (o.topic, o.partition),
        ),
    ),
    ApiKey.LIST_GROUPS: st.builds(
        ListGroupsResponse,
        groups=_tuple(
            st.builds(ListedGroup, group_id=GROUP_ID, state=GROUP_STATE, members=PARTITION)
        ),
    ),
    ApiKey.DESCRIBE_GROUPS: st.builds(
        DescribeGroupsResponse,
        groups=_tuple(
            st.builds(
                DescribedGroup,
                group_id=GROUP_ID,
                error=ERROR,
                message=OPT_TEXT,
                state=GROUP_STATE,
                assignor=TEXT,
                group_epoch=PARTITION,
                members=_tuple(
                    st.builds(
                        DescribedMember,
                        member_id=GROUP_ID,
                        instance_id=OPT_GROUP_ID,
                        client_id=OPT_TEXT,
                        client_host=OPT_TEXT,
                        member_epoch=HEARTBEAT_EPOCH,
                        topics=_tuple(TOPIC_NAME),
                        pattern=OPT_TEXT,
                        assignment=TOPIC_PARTITIONS,
                        revoking=TOPIC_PARTITIONS,
                    )
                ),
                rebalance_reason=TEXT,
                rebalance_time_ms=OFFSET,
            )
        ),
    ),
    ApiKey.DELETE_GROUPS: st.builds(
        DeleteGroupsResponse,
        groups=_tuple(st.builds(GroupResult, group_id=GROUP_ID, error=ERROR, message=OPT_TEXT)),
    ),
    **TXN_RESPONSES,
    ApiKey.ELECT_LEADERS: st.builds(
        ElectLeadersResponse,
        transfers=_tuple(PREFERRED_LEADER, unique_by=lambda p: (p.topic, p.partition)),
        pending=_tuple(PREFERRED_LEADER, unique_by=lambda p: (p.topic, p.partition)),
    ),
    ApiKey.REBALANCE: st.builds(
        RebalanceResponse,
        moves=_tuple(
            st.builds(
                ReplicaMove,
                topic=TOPIC_NAME,
                partition=PARTITION,
                old=_tuple(NODE, unique=True),
                new=_tuple(NODE, unique=True),
            ),
            unique_by=lambda m: (m.topic, m.partition),
        ),
        replica_counts=_tuple(st.tuples(NODE, NODE), unique_by=lambda c: c[0]),
        leader_counts=_tuple(st.tuples(NODE, NODE), unique_by=lambda c: c[0]),
    ),
    ApiKey.DESCRIBE_REASSIGNMENTS: st.builds(
        DescribeReassignmentsResponse,
        reassignments=_tuple(
            st.builds(
                PartitionReassignment,
                topic=TOPIC_NAME,
                partition=PARTITION,
                replicas=_tuple(NODE, unique=True),
                target=_tuple(NODE, unique=True),
                caught_up=_tuple(NODE, unique=True),
                lag=st.integers(min_value=-1, max_value=2**63 - 1),
            ),
            unique_by=lambda r: (r.topic, r.partition),
        ),
        draining=_tuple(NODE, unique=True),
        throttle_bytes_per_s=st.integers(min_value=0, max_value=2**63 - 1),
    ),
    ApiKey.ALTER_TOPIC: st.builds(
        AlterTopicResponse, partitions=st.integers(min_value=1, max_value=2**31 - 1)
    ),
}


def _payload(frame: bytes) -> bytes:
    decoder = FrameDecoder()
    decoder.receive_data(frame)
    payload = decoder.next_frame()
    assert payload is not None and decoder.at_boundary
    return payload


# ---------------------------------------------------------------------------- round trips

VERSIONS = [
    (key, version) for key, (low, high) in SUPPORTED_VERSIONS.items() for version in (low, high)
]
VERSION_IDS = [f"{key.name}-v{version}" for key, version in VERSIONS]


def as_of(message: Any, version: int) -> Any:
    """What `message` reads as after a trip at `version`: the fields a newer version added
    at their defaults (a second statement of messages.py's shapes, as a test oracle)."""
    if isinstance(message, ProduceRequest) and version < 1:
        return dataclasses.replace(message, trace_context=None)
    if isinstance(message, FetchRequest) and version < 2:
        return dataclasses.replace(message, trace_context=None)
    if isinstance(message, InitProducerIdRequest) and version < 1:
        return dataclasses.replace(message, transaction_timeout_ms=60_000)
    if isinstance(message, FetchResponse) and version < 1:
        old = dataclasses.replace
        return old(
            message,
            topics=tuple(
                old(
                    t,
                    partitions=tuple(
                        old(p, next_offset=None, aborted_transactions=()) for p in t.partitions
                    ),
                )
                for t in message.topics
            ),
        )
    return message


def test_supported_versions_are_what_the_messages_know() -> None:
    """Versions past 0 are FETCH v2, PRODUCE v1, INIT_PRODUCER_ID v1 and END_TXN v1;
    everything else is at version 0."""
    newer = {key: high for key, (_, high) in SUPPORTED_VERSIONS.items() if high > 0}
    assert newer == {
        ApiKey.PRODUCE: 1,
        ApiKey.FETCH: 2,
        ApiKey.INIT_PRODUCER_ID: 1,
        ApiKey.END_TXN: 1,
    }
    assert all(low == 0 for low, _ in SUPPORTED_VERSIONS.values())


@pytest.mark.parametrize(("api_key", "version"), VERSIONS, ids=VERSION_IDS)
def test_request_round_trip(api_key: ApiKey, version: int) -> None:
    @settings(max_examples=40, deadline=1000)
    @given(REQUESTS[api_key], I32, st.none() | st.text(max_size=20))
    def check(request: Request, correlation_id: int, client_id: str | None) -> None:
        frame = encode_request(request, correlation_id, client_id, api_version=version)
        payload = _payload(frame)
        assert request_correlation_id(payload) == correlation_id
        header, decoded = decode_request(payload)
        assert header == RequestHeader(
            api_key=api_key, api_version=version, correlation_id=correlation_id, client_id=client_id
        )
        assert decoded == as_of(request, version) and type(decoded) is type(request)
        again = encode_request(decoded, correlation_id, client_id, api_version=version)
        assert again == frame  # what a version cannot carry was dropped, nothing else

    check()


@pytest.mark.parametrize(("api_key", "version"), VERSIONS, ids=VERSION_IDS)
def test_response_round_trip(api_key: ApiKey, version: int) -> None:
    @settings(max_examples=40, deadline=1000)
    @given(RESPONSES[api_key], I32)
    def check(response: Response, correlation_id: int) -> None:
        frame = encode_response(correlation_id, ErrorCode.NONE, None, response, api_version=version)
        payload = _payload(frame)
        assert response_correlation_id(payload) == correlation_id
        envelope = decode_response(payload, api_key, api_version=version)
        expected = as_of(response, version)
        assert tuple(envelope) == (correlation_id, ErrorCode.NONE, None, expected)
        again = encode_response(
            correlation_id, ErrorCode.NONE, None, envelope.body, api_version=version
        )
        assert again == frame

    check()


@settings(max_examples=60, deadline=1000)
@given(st.sampled_from(list(ApiKey)), I32, st.sampled_from(list(ErrorCode)[1:]), OPT_TEXT)
def test_error_response_round_trip(
    api_key: ApiKey, correlation_id: int, error: ErrorCode, message: str | None
) -> None:
    if error is ErrorCode.NONE:
        return
    payload = _payload(encode_response(correlation_id, error, message, None))
    corr, code, text, body = decode_response(payload, api_key)
    assert (corr, code, text, body) == (correlation_id, error, message, None)


def test_every_api_has_a_request_and_a_response_type() -> None:
    assert set(REQUESTS) == set(RESPONSES) == set(ApiKey) == set(RESPONSE_TYPES)


def test_produce_request_body_matches_the_documented_shape() -> None:
    request = ProduceRequest(
        topics=(ProduceTopic(name="t", partitions=(ProducePartition(partition=0, batch=b"B"),)),),
        timeout_ms=100,
    )
    v0 = {
        "acks": -1,
        "timeout_ms": 100,
        "transactional_id": None,
        "topics": [{"name": "t", "partitions": [{"partition": 0, "batch": b"B"}]}],
    }
    assert request.to_body(0) == v0
    assert request.to_body(1) == {**v0, "trace_context": None}
    frame = encode_request(request, 7, "cli")
    assert cbor.decode(frame[4:]) == [4, 0, 7, "cli", v0]
    frame = encode_request(request, 7, "cli", api_version=1)
    assert cbor.decode(frame[4:]) == [4, 1, 7, "cli", request.to_body(1)]
    fetched = FetchPartitionResult(
        partition=1,
        batches=(FetchedBatch(base_offset=5, data=b"x"),),
        next_offset=6,
        aborted_transactions=(AbortedTransaction(producer_id=3, first_offset=5),),
    )
    assert fetched.to_wire(0)["batches"] == [[5, b"x"]]
    assert "next_offset" not in fetched.to_wire(0)
    assert "aborted_transactions" not in fetched.to_wire(0)
    assert fetched.to_wire(1)["next_offset"] == 6
    assert fetched.to_wire(1)["aborted_transactions"] == [[3, 5]]


def test_byte_fields_given_as_buffers_are_encoded_as_bytes() -> None:
    request = ProduceRequest(
        topics=(
            ProduceTopic(
                name="t",
                partitions=(ProducePartition(partition=0, batch=memoryview(b"B")),),  # type: ignore[arg-type]
            ),
        )
    )
    _, decoded = decode_request(_payload(encode_request(request, 1, None)))
    assert isinstance(decoded, ProduceRequest)
    assert decoded.topics[0].partitions[0].batch == b"B"


# ---------------------------------------------------------------------------- rejections


def _produce_body() -> dict[str, Any]:
    return {
        "acks": -1,
        "timeout_ms": 1000,
        "transactional_id": None,
        "topics": [
            {"name": "orders", "partitions": [{"partition": 0, "batch": b"..."}]},
            {"name": "audit", "partitions": [{"partition": 3, "batch": b"..."}]},
        ],
    }


def _fetch_body() -> dict[str, Any]:
    return {
        "max_wait_ms": 500,
        "min_bytes": 1,
        "max_bytes": 1 << 20,
        "isolation": 1,
        "topics": [{"name": "t", "partitions": [{"partition": 0, "offset": 5, "max_bytes": 10}]}],
    }


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


P0 = ["topics", 0, "partitions", 0]


def _heartbeat_body() -> dict[str, Any]:
    return {
        "group_id": "g",
        "member_id": "m-1",
        "member_epoch": 0,
        "instance_id": None,
        "client_host": None,
        "session_timeout_ms": 0,
        "topics": ["orders", "audit"],
        "pattern": None,
        "assignor": None,
        "owned": [["orders", [0, 1]], ["audit", [3]]],
    }


def _commit_body() -> dict[str, Any]:
    return {
        "group_id": "g",
        "member_id": "m-1",
        "member_epoch": 3,
        "topics": [["orders", [[0, 10, None], [1, 5, "meta"]]], ["audit", [[3, 0, ""]]]],
    }


def _offset_fetch_body() -> dict[str, Any]:
    return {"group_id": "g", "topics": [["orders", [0, 1]], ["audit", []]]}


def _find_coordinator_body() -> dict[str, Any]:
    return {"key": "g", "key_type": 0}


def _group_ids_body() -> dict[str, Any]:
    return {"group_ids": ["g", "h"]}


CONTROL = "must not contain control characters"
C0 = ["topics", 0, 1, 0]
"""OFFSET_COMMIT: topics[0], its partitions, the first [partition, offset, metadata]."""


def expected_code(message: str) -> ErrorCode:
    """A topic name the naming rule refuses is INVALID_TOPIC, naming the name as typed; any
    other bad field is INVALID_REQUEST, naming the field."""
    if message.startswith("invalid topic name"):
        return ErrorCode.INVALID_TOPIC
    return ErrorCode.INVALID_REQUEST


GROUP_REJECTIONS: list[tuple[str, ApiKey, Callable[[], dict[str, Any]], Any, str]] = [
    # FIND_COORDINATOR
    (
        "coordinator key with NUL",
        ApiKey.FIND_COORDINATOR,
        _find_coordinator_body,
        _set(["key"], "g\x00"),
        f"key: {CONTROL}",
    ),
    (
        "coordinator key with DEL",
        ApiKey.FIND_COORDINATOR,
        _find_coordinator_body,
        _set(["key"], "\x7f"),
        f"key: {CONTROL}",
    ),
    (
        "empty coordinator key",
        ApiKey.FIND_COORDINATOR,
        _find_coordinator_body,
        _set(["key"], ""),
        "key: must not be empty",
    ),
    (
        "coordinator key of 256 characters",
        ApiKey.FIND_COORDINATOR,
        _find_coordinator_body,
        _set(["key"], "k" * (MAX_GROUP_ID + 1)),
        "key: 256 characters exceed 255",
    ),
    (
        "key type 2",
        ApiKey.FIND_COORDINATOR,
        _find_coordinator_body,
        _set(["key_type"], 2),
        "key_type: 2 is outside [0, 1]",
    ),
    (
        "key type as bool",
        ApiKey.FIND_COORDINATOR,
        _find_coordinator_body,
        _set(["key_type"], False),
        "key_type: expected int, got bool",
    ),
    # GROUP_HEARTBEAT
    (
        "group id with a newline",
        ApiKey.GROUP_HEARTBEAT,
        _heartbeat_body,
        _set(["group_id"], "g\nh"),
        f"group_id: {CONTROL}",
    ),
    (
        "group id of 256 characters",
        ApiKey.GROUP_HEARTBEAT,
        _heartbeat_body,
        _set(["group_id"], "g" * (MAX_GROUP_ID + 1)),
        "group_id: 256 characters exceed 255",
    ),
    (
        "group id null",
        ApiKey.GROUP_HEARTBEAT,
        _heartbeat_body,
        _set(["group_id"], None),
        "group_id: expected text, got null",
    ),
    (
        "heartbeat without a member id",
        ApiKey.GROUP_HEARTBEAT,
        _heartbeat_body,
        _set(["member_id"], ""),
        "member_id: must not be empty",
    ),
    (
        "member id with a tab",
        ApiKey.GROUP_HEARTBEAT,
        _heartbeat_body,
        _set(["member_id"], "m\t1"),
        f"member_id: {CONTROL}",
    ),
    (
        "member epoch -3",
        ApiKey.GROUP_HEARTBEAT,
        _heartbeat_body,
        _set(["member_epoch"], -3),
        "member_epoch: -3 is outside",
    ),
    (
        "member epoch beyond int32",
        ApiKey.GROUP_HEARTBEAT,
        _heartbeat_body,
        _set(["member_epoch"], 2**31),
        "member_epoch: 2147483648 is outside",
    ),
    (
        "instance id with ESC",
        ApiKey.GROUP_HEARTBEAT,
        _heartbeat_body,
        _set(["instance_id"], "i\x1b"),
        f"instance_id: {CONTROL}",
    ),
    (
        "empty instance id",
        ApiKey.GROUP_HEARTBEAT,
        _heartbeat_body,
        _set(["instance_id"], ""),
        "instance_id: must not be empty",
    ),
    (
        "client host of 256 characters",
        ApiKey.GROUP_HEARTBEAT,
        _heartbeat_body,
        _set(["client_host"], "h" * (MAX_GROUP_ID + 1)),
        "client_host: 256 characters exceed 255",
    ),
    (
        "negative session timeout",
        ApiKey.GROUP_HEARTBEAT,
        _heartbeat_body,
        _set(["session_timeout_ms"], -1),
        "session_timeout_ms: -1 is outside",
    ),
    (
        "subscribed topic listed twice",
        ApiKey.GROUP_HEARTBEAT,
        _heartbeat_body,
        _set(["topics", 1], "orders"),
        "topics[1]: duplicate topic 'orders'",
    ),
    (
        "subscribed topic with a slash",
        ApiKey.GROUP_HEARTBEAT,
        _heartbeat_body,
        _set(["topics", 0], "a/b"),
        "invalid topic name 'a/b': use 1-249 of ASCII letters",
    ),
    (
        "pattern of 1025 characters",
        ApiKey.GROUP_HEARTBEAT,
        _heartbeat_body,
        _set(["pattern"], "a" * (MAX_PATTERN + 1)),
        "pattern: 1025 characters exceed 1024",
    ),
    (
        "empty pattern",
        ApiKey.GROUP_HEARTBEAT,
        _heartbeat_body,
        _set(["pattern"], ""),
        "pattern: must not be empty",
    ),
    (
        "empty assignor",
        ApiKey.GROUP_HEARTBEAT,
        _heartbeat_body,
        _set(["assignor"], ""),
        "assignor: must not be empty",
    ),
    (
        "owned partition listed twice",
        ApiKey.GROUP_HEARTBEAT,
        _heartbeat_body,
        _set(["owned", 0, 1], [0, 1, 0]),
        "owned[0][1][2]: duplicate partition 0",
    ),
    (
        "owned topic listed twice",
        ApiKey.GROUP_HEARTBEAT,
        _heartbeat_body,
        _set(["owned", 1, 0], "orders"),
        "owned[1]: duplicate topic 'orders'",
    ),
    (
        "owned negative partition",
        ApiKey.GROUP_HEARTBEAT,
        _heartbeat_body,
        _set(["owned", 1, 1, 0], -1),
        "owned[1][1][0]: -1 is outside",
    ),
    (
        "owned entry of three items",
        ApiKey.GROUP_HEARTBEAT,
        _heartbeat_body,
        _set(["owned", 0], ["orders", [0], 1]),
        "owned[0]: expected [topic, partitions], got 3 items",
    ),
    (
        "owned bad topic",
        ApiKey.GROUP_HEARTBEAT,
        _heartbeat_body,
        _set(["owned", 1, 0], ""),
        "invalid topic name '': use 1-249 of ASCII letters",
    ),
    (
        "owned null",  # the full set every time: null ("unchanged") is not allowed
        ApiKey.GROUP_HEARTBEAT,
        _heartbeat_body,
        _set(["owned"], None),
        "owned: expected an array, got null",
    ),
    (
        "heartbeat without owned",
        ApiKey.GROUP_HEARTBEAT,
        _heartbeat_body,
        _delete("owned"),
        "body: missing owned",
    ),
    (
        "heartbeat with an unknown key",
        ApiKey.GROUP_HEARTBEAT,
        _heartbeat_body,
        _set(["rebalance_timeout_ms"], 1),
        "body: unknown 'rebalance_timeout_ms'",
    ),
    # OFFSET_COMMIT
    (
        "negative commit offset",
        ApiKey.OFFSET_COMMIT,
        _commit_body,
        _set([*C0, 1], -1),
        "topics[0][1][0][1]: -1 is outside",
    ),
    (
        "commit offset beyond int64",
        ApiKey.OFFSET_COMMIT,
        _commit_body,
        _set([*C0, 1], 2**63),
        "topics[0][1][0][1]: 9223372036854775808 is outside",
    ),
    (
        "commit offset as float",
        ApiKey.OFFSET_COMMIT,
        _commit_body,
        _set([*C0, 1], 10.0),
        "topics[0][1][0][1]: expected int, got float",
    ),
    (
        "committed partition listed twice",
        ApiKey.OFFSET_COMMIT,
        _commit_body,
        _set(["topics", 0, 1, 1, 0], 0),
        "topics[0][1][1]: duplicate partition 0",
    ),
    (
        "committed topic listed twice",
        ApiKey.OFFSET_COMMIT,
        _commit_body,
        _set(["topics", 1, 0], "orders"),
        "topics[1]: duplicate topic 'orders'",
    ),
    (
        "committed negative partition",
        ApiKey.OFFSET_COMMIT,
        _commit_body,
        _set([*C0, 0], -1),
        "topics[0][1][0][0]: -1 is outside",
    ),
    (
        "commit metadata of 4097 characters",
        ApiKey.OFFSET_COMMIT,
        _commit_body,
        _set(["topics", 0, 1, 1, 2], "m" * 4097),
        "topics[0][1][1][2]: metadata longer than 4096 characters",
    ),
    (
        "commit metadata as bytes",
        ApiKey.OFFSET_COMMIT,
        _commit_body,
        _set([*C0, 2], b"meta"),
        "topics[0][1][0][2]: expected text, got bytes",
    ),
    (
        "commit entry of two items",
        ApiKey.OFFSET_COMMIT,
        _commit_body,
        _set(C0, [0, 10]),
        "topics[0][1][0]: expected [partition, offset, metadata], got 2 items",
    ),
    (
        "committed topic with a slash",
        ApiKey.OFFSET_COMMIT,
        _commit_body,
        _set(["topics", 1, 0], "a/b"),
        "invalid topic name 'a/b': use 1-249 of ASCII letters",
    ),
    (
        "commit epoch -2",
        ApiKey.OFFSET_COMMIT,
        _commit_body,
        _set(["member_epoch"], -2),
        "member_epoch: -2 is outside",
    ),
    (
        "commit member id with a control character",
        ApiKey.OFFSET_COMMIT,
        _commit_body,
        _set(["member_id"], "m\x01"),
        f"member_id: {CONTROL}",
    ),
    (
        "commit member id null",
        ApiKey.OFFSET_COMMIT,
        _commit_body,
        _set(["member_id"], None),
        "member_id: expected text, got null",
    ),
    (
        "commit to an empty group id",
        ApiKey.OFFSET_COMMIT,
        _commit_body,
        _set(["group_id"], ""),
        "group_id: must not be empty",
    ),
    # OFFSET_FETCH
    (
        "offset fetch topics a map",
        ApiKey.OFFSET_FETCH,
        _offset_fetch_body,
        _set(["topics"], {}),
        "topics: expected an array, got map",
    ),
    (
        "offset fetch topics a topic name",
        ApiKey.OFFSET_FETCH,
        _offset_fetch_body,
        _set(["topics"], "orders"),
        "topics: expected an array, got text",
    ),
    (
        "offset fetch partition listed twice",
        ApiKey.OFFSET_FETCH,
        _offset_fetch_body,
        _set(["topics", 0, 1], [1, 1]),
        "topics[0][1][1]: duplicate partition 1",
    ),
    (
        "offset fetch topic listed twice",
        ApiKey.OFFSET_FETCH,
        _offset_fetch_body,
        _set(["topics", 1, 0], "orders"),
        "topics[1]: duplicate topic 'orders'",
    ),
    (
        "offset fetch partitions null",
        ApiKey.OFFSET_FETCH,
        _offset_fetch_body,
        _set(["topics", 1, 1], None),
        "topics[1][1]: expected an array, got null",
    ),
    (
        "offset fetch group id with a control character",
        ApiKey.OFFSET_FETCH,
        _offset_fetch_body,
        _set(["group_id"], "a\x1fb"),
        f"group_id: {CONTROL}",
    ),
    (
        "offset fetch without topics",
        ApiKey.OFFSET_FETCH,
        _offset_fetch_body,
        _delete("topics"),
        "body: missing topics",
    ),
    # LIST_GROUPS, DESCRIBE_GROUPS, DELETE_GROUPS
    (
        "list groups body not empty",
        ApiKey.LIST_GROUPS,
        dict,
        _set(["states"], []),
        "body: unknown 'states'",
    ),
    (
        "described group listed twice",
        ApiKey.DESCRIBE_GROUPS,
        _group_ids_body,
        _set(["group_ids", 1], "g"),
        "group_ids[1]: duplicate group 'g'",
    ),
    (
        "described group id of 256 characters",
        ApiKey.DESCRIBE_GROUPS,
        _group_ids_body,
        _set(["group_ids", 0], "g" * (MAX_GROUP_ID + 1)),
        "group_ids[0]: 256 characters exceed 255",
    ),
    (
        "described group ids null",
        ApiKey.DESCRIBE_GROUPS,
        _group_ids_body,
        _set(["group_ids"], None),
        "group_ids: expected an array, got null",
    ),
    (
        "deleted group id with a control character",
        ApiKey.DELETE_GROUPS,
        _group_ids_body,
        _set(["group_ids", 1], "h\r"),
        f"group_ids[1]: {CONTROL}",
    ),
    (
        "deleted group id empty",
        ApiKey.DELETE_GROUPS,
        _group_ids_body,
        _set(["group_ids", 0], ""),
        "group_ids[0]: must not be empty",
    ),
    (
        "deleted group listed twice",
        ApiKey.DELETE_GROUPS,
        _group_ids_body,
        _set(["group_ids"], ["g", "h", "g"]),
        "group_ids[2]: duplicate group 'g'",
    ),
]

REJECTIONS: list[tuple[str, ApiKey, Callable[[], dict[str, Any]], Any, str]] = [
    # (id, api, body factory, mutation, expected message prefix)
    (
        "negative partition",
        ApiKey.PRODUCE,
        _produce_body,
        _set([*P0, "partition"], -1),
        "topics[0].partitions[0].partition: -1 is outside",
    ),
    (
        "partition beyond int32",
        ApiKey.PRODUCE,
        _produce_body,
        _set([*P0, "partition"], 2**31),
        "topics[0].partitions[0].partition: 2147483648 is outside",
    ),
    (
        "batch as text",
        ApiKey.PRODUCE,
        _produce_body,
        _set([*P0, "batch"], "x"),
        "topics[0].partitions[0].batch: expected bytes, got text",
    ),
    (
        "bool as int",
        ApiKey.PRODUCE,
        _produce_body,
        _set(["timeout_ms"], True),
        "timeout_ms: expected int, got bool",
    ),
    (
        "negative timeout",
        ApiKey.PRODUCE,
        _produce_body,
        _set(["timeout_ms"], -1),
        "timeout_ms: -1 is outside",
    ),
    (
        "missing key",
        ApiKey.PRODUCE,
        _produce_body,
        _delete("timeout_ms"),
        "body: missing timeout_ms",
    ),
    ("unknown key", ApiKey.PRODUCE, _produce_body, _set(["extra"], 1), "body: unknown 'extra'"),
    (
        "unknown nested key",
        ApiKey.PRODUCE,
        _produce_body,
        _set([*P0, "crc"], 1),
        "topics[0].partitions[0]: unknown 'crc'",
    ),
    (
        "topics not an array",
        ApiKey.PRODUCE,
        _produce_body,
        _set(["topics"], {"a": 1}),
        "topics: expected an array, got map",
    ),
    (
        "topic not a map",
        ApiKey.PRODUCE,
        _produce_body,
        _set(["topics", 1], [1]),
        "topics[1]: expected a map, got array",
    ),
    (
        "bad topic character",
        ApiKey.PRODUCE,
        _produce_body,
        _set(["topics", 1, "name"], "a/b"),
        "invalid topic name 'a/b': use 1-249 of ASCII letters",
    ),
    (
        "empty topic",
        ApiKey.PRODUCE,
        _produce_body,
        _set(["topics", 1, "name"], ""),
        "invalid topic name '': use 1-249 of ASCII letters",
    ),
    (
        "topic of 250 characters",
        ApiKey.PRODUCE,
        _produce_body,
        _set(["topics", 1, "name"], "t" * 250),
        "invalid topic name '",
    ),
    (
        "topic '..'",
        ApiKey.PRODUCE,
        _produce_body,
        _set(["topics", 1, "name"], ".."),
        "invalid topic name '.",
    ),
    (
        "duplicate topic",
        ApiKey.PRODUCE,
        _produce_body,
        _set(["topics", 1, "name"], "orders"),
        "topics[1]: duplicate topic 'orders'",
    ),
    (
        "duplicate partition",
        ApiKey.PRODUCE,
        _produce_body,
        lambda body: body["topics"][0]["partitions"].append({"partition": 0, "batch": b""}),
        "topics[0].partitions[1]: duplicate partition 0",
    ),
    (
        "empty transactional id",
        ApiKey.PRODUCE,
        _produce_body,
        _set(["transactional_id"], ""),
        "transactional_id: must not be empty",
    ),
    (
        "offset beyond int64",
        ApiKey.FETCH,
        _fetch_body,
        _set([*P0, "offset"], 2**63),
        "topics[0].partitions[0].offset: 9223372036854775808 is outside",
    ),
    (
        "offset as float",
        ApiKey.FETCH,
        _fetch_body,
        _set([*P0, "offset"], 1.0),
        "topics[0].partitions[0].offset: expected int, got float",
    ),
    ("isolation 2", ApiKey.FETCH, _fetch_body, _set(["isolation"], 2), "isolation: 2 is outside"),
    (
        "metadata topics a map",
        ApiKey.METADATA,
        lambda: {"topics": None},
        _set(["topics"], {}),
        "topics: expected an array, got map",
    ),
    (
        "producer id -2",
        ApiKey.INIT_PRODUCER_ID,
        lambda: {"transactional_id": None, "producer_id": -1, "producer_epoch": -1},
        _set(["producer_id"], -2),
        "producer_id: -2 is outside",
    ),
    (
        "epoch beyond int16",
        ApiKey.INIT_PRODUCER_ID,
        lambda: {"transactional_id": "tx", "producer_id": 5, "producer_epoch": 0},
        _set(["producer_epoch"], 2**15),
        "producer_epoch: 32768 is outside",
    ),
    (
        "timestamp -3",
        ApiKey.LIST_OFFSETS,
        lambda: {
            "isolation": 0,
            "topics": [{"name": "t", "partitions": [{"partition": 0, "timestamp": -2}]}],
        },
        _set([*P0, "timestamp"], -3),
        "topics[0].partitions[0].timestamp: -3 is outside",
    ),
    (
        "config value an int",
        ApiKey.CREATE_TOPICS,
        lambda: {
            "timeout_ms": 5,
            "topics": [{"name": "t", "partitions": 3, "replication_factor": 3, "config": {}}],
        },
        _set(["topics", 0, "config", "retention.ms"], 5),
        "topics[0].config.retention.ms: expected text, got int",
    ),
    (
        "duplicate delete",
        ApiKey.DELETE_TOPICS,
        lambda: {"names": ["a", "b"], "timeout_ms": 1},
        _set(["names", 1], "a"),
        "names[1]: duplicate topic 'a'",
    ),
    ("api versions body not empty", ApiKey.API_VERSIONS, dict, _set(["x"], 1), "body: unknown 'x'"),
    (
        "duplicate topic in elect leaders",
        ApiKey.ELECT_LEADERS,
        lambda: {"topics": ["a", "b"]},
        _set(["topics", 1], "a"),
        "topics[1]: duplicate topic 'a'",
    ),
    (
        "describe cluster body not empty",
        ApiKey.DESCRIBE_CLUSTER,
        dict,
        _set(["topics"], None),
        "body: unknown 'topics'",
    ),
    *GROUP_REJECTIONS,
]


@pytest.mark.parametrize(
    ("api_key", "factory", "mutate", "expected"),
    [row[1:] for row in REJECTIONS],
    ids=[row[0] for row in REJECTIONS],
)
def test_bad_request_fields_are_named(
    api_key: ApiKey,
    factory: Callable[[], dict[str, Any]],
    mutate: Callable[[dict[str, Any]], None],
    expected: str,
) -> None:
    body = factory()
    # The unmutated body is valid, so the failure below is the mutation's.
    decode_request(cbor.encode([int(api_key), 0, 11, None, body]))
    mutate(body)
    with pytest.raises(WireError) as info:
        decode_request(cbor.encode([int(api_key), 0, 11, "client", body]))
    assert info.value.code is expected_code(expected)
    assert info.value.message.startswith(expected), info.value.message
    assert info.value.correlation_id == 11


def test_metadata_leader_term_unknown_is_minus_one() -> None:
    # A broker hosting no replica of a new partition, before its leader is reported, knows no
    # term: the answer must still decode (it once failed the client with INVALID_REQUEST).
    part = {"partition": 0, "leader": None, "leader_term": -1, "replicas": [1], "error": 5}
    topic = {"name": "t", "error": 0, "partitions": [part], "replication_factor": 1, "config": {}}
    body = {"cluster_id": "c", "controller": 0, "brokers": [], "topics": [topic]}
    decoded = MetadataResponse.from_body(body, 0)
    assert decoded.topics[0].partitions[0].leader_term == -1
    part["leader_term"] = -2
    with pytest.raises(WireError, match=r"topics\[0\]\.partitions\[0\]\.leader_term: -2 is"):
        MetadataResponse.from_body(body, 0)


def _describe_cluster_body() -> dict[str, Any]:
    return {
        "cluster_id": "c1",
        "controller": 1,
        "brokers": [
            {"id": 0, "host": "10.0.0.1", "port": 9092, "rack": None, "alive": True},
            {"id": 1, "host": "10.0.0.2", "port": 9092, "rack": "r2", "alive": False},
        ],
        "partitions": [
            {
                "topic": "t",
                "partition": 0,
                "leader": 0,
                "leader_term": 3,
                "replicas": [0, 1],
                "caught_up": [0],
                "commit_lag": 12,
            },
            {
                "topic": "t",
                "partition": 1,
                "leader": None,
                "leader_term": -1,
                "replicas": [1, 0],
                "caught_up": [],
                "commit_lag": -1,
            },
        ],
    }


B1 = ["brokers", 1]
PT0 = ["partitions", 0]

DESCRIBE_CLUSTER_REJECTIONS: list[tuple[str, Any, str]] = [
    # (id, mutation, expected message prefix)
    ("alive as int", _set([*B1, "alive"], 1), "brokers[1].alive: expected bool, got int"),
    ("alive missing", lambda b: b["brokers"][0].pop("alive"), "brokers[0]: missing alive"),
    ("port beyond 65535", _set([*B1, "port"], 65536), "brokers[1].port: 65536 is outside"),
    ("empty host", _set([*B1, "host"], ""), "brokers[1].host: must not be empty"),
    ("duplicate broker", _set([*B1, "id"], 0), "brokers[1]: duplicate broker 0"),
    ("negative controller", _set(["controller"], -1), "controller: -1 is outside"),
    ("leader term -2", _set([*PT0, "leader_term"], -2), "partitions[0].leader_term: -2 is"),
    ("commit lag -2", _set([*PT0, "commit_lag"], -2), "partitions[0].commit_lag: -2 is"),
    ("negative leader", _set([*PT0, "leader"], -1), "partitions[0].leader: -1 is outside"),
    (
        "replica listed twice",
        _set([*PT0, "replicas"], [0, 0]),
        "partitions[0].replicas[1]: duplicate node id 0",
    ),
    (
        "caught up not an array",
        _set([*PT0, "caught_up"], 0),
        "partitions[0].caught_up: expected an array, got int",
    ),
    ("bad topic", _set([*PT0, "topic"], "a/b"), "invalid topic name 'a/b'"),
    (
        "duplicate partition",
        _set(["partitions", 1, "partition"], 0),
        "partitions[1]: duplicate partition ('t', 0)",
    ),
    ("unknown partition key", _set([*PT0, "isr"], []), "partitions[0]: unknown 'isr'"),
    ("missing partitions", _delete("partitions"), "body: missing partitions"),
]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [row[1:] for row in DESCRIBE_CLUSTER_REJECTIONS],
    ids=[row[0] for row in DESCRIBE_CLUSTER_REJECTIONS],
)
def test_bad_describe_cluster_response_fields_are_named(
    mutate: Callable[[dict[str, Any]], None], expected: str
) -> None:
    body = _describe_cluster_body()
    good = decode_response(cbor.encode([4, 0, None, body]), ApiKey.DESCRIBE_CLUSTER).body
    assert isinstance(good, DescribeClusterResponse)
    assert good.to_body(0) == body  # the unmutated body is valid and round-trips exactly
    mutate(body)
    with pytest.raises(WireError) as info:
        decode_response(cbor.encode([4, 0, None, body]), ApiKey.DESCRIBE_CLUSTER)
    assert info.value.code is expected_code(expected)
    assert info.value.message.startswith(expected), info.value.message
    assert info.value.correlation_id == 4


# ---------------------------------------------------------------------------- consumer groups


def _find_coordinator_answer() -> dict[str, Any]:
    return {"node_id": 1, "host": "10.0.0.1", "port": 9092, "partition": 7}


def _heartbeat_answer() -> dict[str, Any]:
    return {
        "member_id": "m-1",
        "member_epoch": 4,
        "heartbeat_interval_ms": 3000,
        "session_timeout_ms": 45000,
        "assignment": [["orders", [0, 2]], ["audit", []]],
    }


def _commit_answer() -> dict[str, Any]:
    return {"topics": [["orders", [[0, 0, None], [1, 113, "stale"]]], ["audit", []]]}


def _offset_fetch_answer() -> dict[str, Any]:
    return {"offsets": [["orders", 0, 10, None], ["orders", 1, -1, None], ["audit", 0, 5, "m"]]}


def _list_groups_answer() -> dict[str, Any]:
    return {"groups": [["g", "stable", 2], ["h", "empty", 0]]}


def _describe_groups_answer() -> dict[str, Any]:
    member = {
        "member_id": "m-1",
        "instance_id": "host-a",
        "client_id": "c",
        "client_host": "/10.0.0.9",
        "member_epoch": 3,
        "topics": ["orders"],
        "pattern": None,
        "assignment": [["orders", [0]]],
        "revoking": [["orders", [1, 2]]],
    }
    return {
        "groups": [
            {
                "group_id": "g",
                "error": 0,
                "message": None,
                "state": "reconciling",
                "assignor": "uniform",
                "group_epoch": 3,
                "members": [member],
                "rebalance_reason": "member m-1 joined",
                "rebalance_time_ms": 1_700_000_000_000,
            },
            {
                "group_id": "x",
                "error": int(ErrorCode.GROUP_ID_NOT_FOUND),
                "message": "no such group",
                "state": "dead",
                "assignor": "",
                "group_epoch": 0,
                "members": [],
                "rebalance_reason": "",
                "rebalance_time_ms": -1,
            },
        ]
    }


def _delete_groups_answer() -> dict[str, Any]:
    return {"groups": [["g", 0, None], ["h", int(ErrorCode.NON_EMPTY_GROUP), "live members"]]}


M0 = ["groups", 0, "members", 0]

GROUP_RESPONSE_REJECTIONS: list[tuple[str, ApiKey, Callable[[], dict[str, Any]], Any, str]] = [
    # (id, api, valid answer body, mutation, expected message prefix)
    (
        "coordinator port beyond 65535",
        ApiKey.FIND_COORDINATOR,
        _find_coordinator_answer,
        _set(["port"], 65536),
        "port: 65536 is outside",
    ),
    (
        "coordinator node -1",
        ApiKey.FIND_COORDINATOR,
        _find_coordinator_answer,
        _set(["node_id"], -1),
        "node_id: -1 is outside",
    ),
    (
        "coordinator host empty",
        ApiKey.FIND_COORDINATOR,
        _find_coordinator_answer,
        _set(["host"], ""),
        "host: must not be empty",
    ),
    (
        "coordinator partition -1",
        ApiKey.FIND_COORDINATOR,
        _find_coordinator_answer,
        _set(["partition"], -1),
        "partition: -1 is outside",
    ),
    (
        "heartbeat interval 0",
        ApiKey.GROUP_HEARTBEAT,
        _heartbeat_answer,
        _set(["heartbeat_interval_ms"], 0),
        "heartbeat_interval_ms: 0 is outside",
    ),
    (
        "session timeout 0 in the answer",
        ApiKey.GROUP_HEARTBEAT,
        _heartbeat_answer,
        _set(["session_timeout_ms"], 0),
        "session_timeout_ms: 0 is outside",
    ),
    (
        "answered member epoch -3",
        ApiKey.GROUP_HEARTBEAT,
        _heartbeat_answer,
        _set(["member_epoch"], -3),
        "member_epoch: -3 is outside",
    ),
    (
        "answered member id empty",
        ApiKey.GROUP_HEARTBEAT,
        _heartbeat_answer,
        _set(["member_id"], ""),
        "member_id: must not be empty",
    ),
    (
        "assigned partition listed twice",
        ApiKey.GROUP_HEARTBEAT,
        _heartbeat_answer,
        _set(["assignment", 0, 1], [2, 2]),
        "assignment[0][1][1]: duplicate partition 2",
    ),
    (
        "assigned topic listed twice",
        ApiKey.GROUP_HEARTBEAT,
        _heartbeat_answer,
        _set(["assignment", 1, 0], "orders"),
        "assignment[1]: duplicate topic 'orders'",
    ),
    (
        "commit result of two items",
        ApiKey.OFFSET_COMMIT,
        _commit_answer,
        _set(["topics", 0, 1, 0], [0, 0]),
        "topics[0][1][0]: expected [partition, error, message], got 2 items",
    ),
    (
        "commit result error beyond int16",
        ApiKey.OFFSET_COMMIT,
        _commit_answer,
        _set(["topics", 0, 1, 1, 1], 2**15),
        "topics[0][1][1][1]: 32768 is outside",
    ),
    (
        "commit result topic empty",
        ApiKey.OFFSET_COMMIT,
        _commit_answer,
        _set(["topics", 1, 0], ""),
        "invalid topic name '': use 1-249 of ASCII letters",
    ),
    (
        "committed offset -2",
        ApiKey.OFFSET_FETCH,
        _offset_fetch_answer,
        _set(["offsets", 1, 2], -2),
        "offsets[1][2]: -2 is outside",
    ),
    (
        "committed offset listed twice",
        ApiKey.OFFSET_FETCH,
        _offset_fetch_answer,
        _set(["offsets", 1, 1], 0),
        "offsets[1]: duplicate partition ('orders', 0)",
    ),
    (
        "committed offset of three items",
        ApiKey.OFFSET_FETCH,
        _offset_fetch_answer,
        _set(["offsets", 2], ["audit", 0, 5]),
        "offsets[2]: expected [topic, partition, offset, metadata], got 3 items",
    ),
    (
        "listed group with -1 members",
        ApiKey.LIST_GROUPS,
        _list_groups_answer,
        _set(["groups", 1, 2], -1),
        "groups[1][2]: -1 is outside",
    ),
    (
        "listed group without a state",
        ApiKey.LIST_GROUPS,
        _list_groups_answer,
        _set(["groups", 0, 1], ""),
        "groups[0][1]: must not be empty",
    ),
    (
        "listed group id with a control character",
        ApiKey.LIST_GROUPS,
        _list_groups_answer,
        _set(["groups", 0, 0], "g\x00"),
        "groups[0][0]: must not contain control characters",
    ),
    (
        "described member without revoking",
        ApiKey.DESCRIBE_GROUPS,
        _describe_groups_answer,
        lambda b: b["groups"][0]["members"][0].pop("revoking"),
        "groups[0].members[0]: missing revoking",
    ),
    (
        "described member epoch -3",
        ApiKey.DESCRIBE_GROUPS,
        _describe_groups_answer,
        _set([*M0, "member_epoch"], -3),
        "groups[0].members[0].member_epoch: -3 is outside",
    ),
    (
        "described member id empty",
        ApiKey.DESCRIBE_GROUPS,
        _describe_groups_answer,
        _set([*M0, "member_id"], ""),
        "groups[0].members[0].member_id: must not be empty",
    ),
    (
        "revoking partition listed twice",
        ApiKey.DESCRIBE_GROUPS,
        _describe_groups_answer,
        _set([*M0, "revoking", 0, 1], [1, 1]),
        "groups[0].members[0].revoking[0][1][1]: duplicate partition 1",
    ),
    (
        "described member topic with a slash",
        ApiKey.DESCRIBE_GROUPS,
        _describe_groups_answer,
        _set([*M0, "topics", 0], "a/b"),
        "invalid topic name 'a/b': use 1-249 of ASCII letters",
    ),
    (
        "group epoch -1",
        ApiKey.DESCRIBE_GROUPS,
        _describe_groups_answer,
        _set(["groups", 0, "group_epoch"], -1),
        "groups[0].group_epoch: -1 is outside",
    ),
    (
        "rebalance time -2",
        ApiKey.DESCRIBE_GROUPS,
        _describe_groups_answer,
        _set(["groups", 1, "rebalance_time_ms"], -2),
        "groups[1].rebalance_time_ms: -2 is outside",
    ),
    (
        "described group state empty",
        ApiKey.DESCRIBE_GROUPS,
        _describe_groups_answer,
        _set(["groups", 1, "state"], ""),
        "groups[1].state: must not be empty",
    ),
    (
        "described group as an array",
        ApiKey.DESCRIBE_GROUPS,
        _describe_groups_answer,
        _set(["groups", 1], ["x", 69]),
        "groups[1]: expected a map, got array",
    ),
    (
        "delete result of two items",
        ApiKey.DELETE_GROUPS,
        _delete_groups_answer,
        _set(["groups", 1], ["h", 68]),
        "groups[1]: expected [group_id, error, message], got 2 items",
    ),
    (
        "delete result error as text",
        ApiKey.DELETE_GROUPS,
        _delete_groups_answer,
        _set(["groups", 0, 1], "NONE"),
        "groups[0][1]: expected int, got text",
    ),
    (
        "delete result group id empty",
        ApiKey.DELETE_GROUPS,
        _delete_groups_answer,
        _set(["groups", 0, 0], ""),
        "groups[0][0]: must not be empty",
    ),
]


@pytest.mark.parametrize(
    ("api_key", "factory", "mutate", "expected"),
    [row[1:] for row in GROUP_RESPONSE_REJECTIONS],
    ids=[row[0] for row in GROUP_RESPONSE_REJECTIONS],
)
def test_bad_group_response_fields_are_named(
    api_key: ApiKey,
    factory: Callable[[], dict[str, Any]],
    mutate: Callable[[dict[str, Any]], None],
    expected: str,
) -> None:
    body = factory()
    good = decode_response(cbor.encode([8, 0, None, body]), api_key).body
    assert good is not None and good.API_KEY is api_key
    assert good.to_body(0) == body  # the unmutated body is valid and round-trips exactly
    mutate(body)
    with pytest.raises(WireError) as info:
        decode_response(cbor.encode([8, 0, None, body]), api_key)
    assert info.value.code is expected_code(expected)
    assert info.value.message.startswith(expected), info.value.message
    assert info.value.correlation_id == 8


def _group_request(api_key: ApiKey, body: dict[str, Any]) -> Request:
    header, request = decode_request(cbor.encode([int(api_key), 0, 31, "c", body]))
    assert header.api_key is api_key and header.correlation_id == 31
    again = encode_request(request, 31, "c")
    assert cbor.decode(again[4:]) == [int(api_key), 0, 31, "c", body]  # exactly what was sent
    return request


def test_offset_fetch_topics_null_means_every_offset_and_a_list_only_those() -> None:
    every = _group_request(ApiKey.OFFSET_FETCH, {"group_id": "g", "topics": None})
    assert every == OffsetFetchRequest(group_id="g", topics=None)
    nothing = _group_request(ApiKey.OFFSET_FETCH, {"group_id": "g", "topics": []})
    assert nothing == OffsetFetchRequest(group_id="g", topics=())
    assert every != nothing  # null and [] are different questions, kept apart both ways
    some = _group_request(ApiKey.OFFSET_FETCH, _offset_fetch_body())
    assert isinstance(some, OffsetFetchRequest)
    assert some.topics == (
        TopicPartitions(topic="orders", partitions=(0, 1)),
        TopicPartitions(topic="audit", partitions=()),
    )
    assert OffsetFetchRequest(group_id="g").to_body(0) == {"group_id": "g", "topics": None}


def test_offset_commit_by_a_member_and_by_an_operator() -> None:
    member = _group_request(ApiKey.OFFSET_COMMIT, _commit_body())
    assert isinstance(member, OffsetCommitRequest)
    assert (member.member_id, member.member_epoch) == ("m-1", 3)
    assert member.topics[0].partitions == (
        CommitPartition(partition=0, offset=10),
        CommitPartition(partition=1, offset=5, metadata="meta"),
    )
    operator = _group_request(
        ApiKey.OFFSET_COMMIT, {**_commit_body(), "member_id": "", "member_epoch": -1}
    )
    assert isinstance(operator, OffsetCommitRequest)
    assert (operator.member_id, operator.member_epoch) == ("", -1)
    metadata = {**_commit_body(), "topics": [["t", [[0, 2**63 - 1, "m" * 4096]]]]}
    assert _group_request(ApiKey.OFFSET_COMMIT, metadata) is not None  # both bounds included


def test_heartbeat_epochs_and_identifiers_at_their_bounds() -> None:
    for epoch in (-2, -1, 0, 2**31 - 1):  # temporary leave, leave, join, any epoch
        request = _group_request(
            ApiKey.GROUP_HEARTBEAT, {**_heartbeat_body(), "member_epoch": epoch}
        )
        assert isinstance(request, GroupHeartbeatRequest) and request.member_epoch == epoch
    longest = {
        **_heartbeat_body(),
        "group_id": "g" * MAX_GROUP_ID,
        "member_id": "é" * MAX_GROUP_ID,  # characters, not bytes
        "instance_id": "i" * MAX_GROUP_ID,
        "client_host": "h" * MAX_GROUP_ID,
        "assignor": "a" * MAX_GROUP_ID,
        "pattern": "p" * MAX_PATTERN,
        "topics": [],
        "owned": [],
    }
    request = _group_request(ApiKey.GROUP_HEARTBEAT, longest)
    assert isinstance(request, GroupHeartbeatRequest) and request.pattern == "p" * MAX_PATTERN
    spaced = {**_heartbeat_body(), "group_id": "a group / with spaces ✓", "client_host": ""}
    assert _group_request(ApiKey.GROUP_HEARTBEAT, spaced) is not None


def test_find_coordinator_body_and_key_types() -> None:
    assert FindCoordinatorRequest(key="g").to_body(0) == {"key": "g", "key_type": 0}
    request = _group_request(ApiKey.FIND_COORDINATOR, {"key": "tx-1", "key_type": 1})
    assert isinstance(request, FindCoordinatorRequest)
    assert request.key_type is CoordinatorType.TRANSACTION


def test_list_describe_and_delete_groups_requests() -> None:
    assert _group_request(ApiKey.LIST_GROUPS, {}) == ListGroupsRequest()
    for key, cls in (
        (ApiKey.DESCRIBE_GROUPS, DescribeGroupsRequest),
        (ApiKey.DELETE_GROUPS, DeleteGroupsRequest),
    ):
        assert _group_request(key, {"group_ids": []}) == cls(group_ids=())
        assert _group_request(key, _group_ids_body()) == cls(group_ids=("g", "h"))


def test_group_answers_decode_to_their_values() -> None:
    def answer(api_key: ApiKey, body: dict[str, Any]) -> Response | None:
        return decode_response(cbor.encode([2, 0, None, body]), api_key).body

    heartbeat = answer(ApiKey.GROUP_HEARTBEAT, _heartbeat_answer())
    assert isinstance(heartbeat, GroupHeartbeatResponse)
    assert pairs(heartbeat.assignment) == {("orders", 0), ("orders", 2)}
    fetched = answer(ApiKey.OFFSET_FETCH, _offset_fetch_answer())
    assert isinstance(fetched, OffsetFetchResponse)
    assert fetched.offsets[1] == CommittedOffset(topic="orders", partition=1, offset=-1)
    described = answer(ApiKey.DESCRIBE_GROUPS, _describe_groups_answer())
    assert isinstance(described, DescribeGroupsResponse)
    assert described.groups[1] == DescribedGroup(
        group_id="x", error=ErrorCode.GROUP_ID_NOT_FOUND, message="no such group"
    )  # the defaults are a dead group's answer
    committed = answer(ApiKey.OFFSET_COMMIT, _commit_answer())
    assert isinstance(committed, OffsetCommitResponse)
    assert committed.topics[0].partitions[1].error is ErrorCode.STALE_MEMBER_EPOCH
    deleted = answer(ApiKey.DELETE_GROUPS, _delete_groups_answer())
    assert isinstance(deleted, DeleteGroupsResponse)
    assert [g.error for g in deleted.groups] == [ErrorCode.NONE, ErrorCode.NON_EMPTY_GROUP]
    # A message the answer carries is cut for the wire like every other one.
    long = GroupResult(group_id="g", error=ErrorCode.NON_EMPTY_GROUP, message="x" * 10_000)
    frame = encode_response(2, ErrorCode.NONE, None, DeleteGroupsResponse(groups=(long,)))
    cut = decode_response(frame[4:], ApiKey.DELETE_GROUPS).body
    assert isinstance(cut, DeleteGroupsResponse)
    assert cut.groups[0].message is not None and len(cut.groups[0].message) == MAX_ERROR_MESSAGE


def test_topic_partitions_from_pairs() -> None:
    tps = to_topic_partitions([("b", 1), ("a", 2), ("a", 0), ("a", 2)])
    assert tps == (
        TopicPartitions(topic="a", partitions=(0, 2)),
        TopicPartitions(topic="b", partitions=(1,)),
    )
    assert pairs(tps) == {("a", 0), ("a", 2), ("b", 1)}
    assert to_topic_partitions([]) == ()


@settings(max_examples=40, deadline=1000)
@given(st.lists(st.tuples(TOPIC, st.integers(min_value=0, max_value=8)), max_size=12))
def test_topic_partitions_from_any_pairs_are_valid_on_the_wire(
    given_pairs: list[tuple[str, int]],
) -> None:
    """What a member reports (`owned`) is built from pairs, repeated or not: the decoder
    must accept it (a repeated partition is refused) and it must name the same pairs."""
    owned = to_topic_partitions(given_pairs)
    assert pairs(owned) == set(given_pairs)
    request = GroupHeartbeatRequest(group_id="g", member_id="m", member_epoch=1, owned=owned)
    _, decoded = decode_request(_payload(encode_request(request, 1, None)))
    assert decoded == request


def test_acks_other_than_minus_one_is_invalid_required_acks() -> None:
    body = _produce_body()
    body["acks"] = 1
    with pytest.raises(WireError) as info:
        decode_request(cbor.encode([4, 0, 12, None, body]))
    assert info.value.code is ErrorCode.INVALID_REQUIRED_ACKS
    assert info.value.message.startswith("acks: must be -1")
    assert info.value.correlation_id == 12


def test_array_lengths_are_bounded_by_limits() -> None:
    body = {"topics": ["a", "b", "c"]}
    limits = Limits(max_array_items=2)
    with pytest.raises(WireError) as info:
        MetadataRequest.from_body(body, 0, limits)
    assert info.value.message.startswith("topics: 3 items exceed the limit of 2")
    with pytest.raises(WireError):  # the CBOR layer refuses first when decoding a frame
        decode_request(cbor.encode([1, 0, 1, None, body]), limits)


def test_topic_name_limit_can_be_narrowed() -> None:
    body = {"topics": ["abcdef"]}
    with pytest.raises(WireError, match=r"\(6 characters\): use 1-5 of"):
        MetadataRequest.from_body(body, 0, Limits(max_topic_name=5))


# ---------------------------------------------------------------------------- envelopes


def _reject_request(payload: bytes) -> WireError:
    with pytest.raises(WireError) as info:
        decode_request(payload)
    return info.value


def test_envelope_errors_carry_the_correlation_id_when_readable() -> None:
    error = _reject_request(cbor.encode([99, 0, 5, None, {}]))
    assert (error.code, error.correlation_id) == (ErrorCode.INVALID_REQUEST, 5)
    assert "unknown API 99" in error.message
    error = _reject_request(cbor.encode([1, 1, 6, None, {}]))
    assert (error.code, error.correlation_id) == (ErrorCode.UNSUPPORTED_VERSION, 6)
    error = _reject_request(cbor.encode([0, 0, 7, "c" * 257, {}]))
    assert (error.code, error.correlation_id) == (ErrorCode.INVALID_REQUEST, 7)
    assert "client id longer than 256" in error.message
    error = _reject_request(cbor.encode([0, 0, 8, 5, {}]))
    assert error.message.startswith("client_id: expected text, got int")
    error = _reject_request(cbor.encode([0, 0, 9, None]))
    assert error.correlation_id == 9 and "expected [api_key" in error.message


def test_the_correlation_id_is_read_even_when_the_body_is_not_cbor() -> None:
    payload = cbor.encode([4, 0, -123456])[1:]  # the three envelope ints, then garbage
    payload = b"\x85" + payload + b"\xa1\x01\xff\xff"
    assert request_correlation_id(payload) == -123456
    error = _reject_request(payload)
    assert (error.code, error.correlation_id) == (ErrorCode.INVALID_FRAME, -123456)


def test_no_correlation_id_when_the_envelope_is_unreadable() -> None:
    for payload in (b"", b"\xff", cbor.encode({"a": 1}), cbor.encode([1, 0, 2**31, None, {}])):
        error = _reject_request(payload)
        assert error.correlation_id is None
    error = _reject_request(cbor.encode([1, 0, "x", None, {}]))
    assert error.correlation_id is None


def test_response_envelope_rules() -> None:
    ok = ApiVersionsResponse(apis=(), node_id=0)
    with pytest.raises(ValueError):
        encode_response(1, ErrorCode.NONE, None, None)
    with pytest.raises(ValueError):
        encode_response(1, ErrorCode.NOT_READY, "starting", ok)
    with pytest.raises(ValueError):  # only API_VERSIONS answers a refusal with a body
        encode_response(1, ErrorCode.UNSUPPORTED_VERSION, "v9", FetchResponse(topics=()))
    with pytest.raises(ValueError):
        encode_response(1, ErrorCode.NONE, None, ok, api_version=1)
    with pytest.raises(ValueError):
        encode_response(2**31, ErrorCode.NONE, None, ok)
    with pytest.raises(WireError, match="body: must be null"):
        decode_response(cbor.encode([1, 3, None, {}]), ApiKey.METADATA)
    with pytest.raises(WireError, match="body: expected a map, got null") as info:
        decode_response(cbor.encode([1, 0, None, None]), ApiKey.METADATA)
    assert info.value.correlation_id == 1
    _, error, message, _ = decode_response(cbor.encode([1, 31000, "new", None]), ApiKey.FETCH)
    assert error is ErrorCode.UNKNOWN_SERVER_ERROR and message == "new"


def test_encode_request_checks_its_arguments() -> None:
    with pytest.raises(ValueError):
        encode_request(ApiVersionsRequest(), 0, None, api_version=1)
    with pytest.raises(ValueError):
        encode_request(ApiVersionsRequest(), -(2**31) - 1, None)


@settings(max_examples=300, deadline=1000)
@given(st.binary(max_size=120))
def test_fuzz_decode_request_raises_only_wire_errors(data: bytes) -> None:
    try:
        decode_request(data)
    except WireError as exc:
        assert exc.code in (ErrorCode.INVALID_FRAME, ErrorCode.INVALID_REQUEST)


@settings(max_examples=200, deadline=1000)
@given(REQUESTS[ApiKey.PRODUCE], st.data())
def test_fuzz_mutated_requests_raise_only_wire_errors(
    request: ProduceRequest, data: st.DataObject
) -> None:
    payload = bytearray(_payload(encode_request(request, 3, "c")))
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        at = data.draw(st.integers(min_value=0, max_value=len(payload) - 1))
        payload[at] = data.draw(st.integers(min_value=0, max_value=255))
    try:
        decode_request(bytes(payload))
    except WireError as exc:
        assert exc.correlation_id in (None, 3) or isinstance(exc.correlation_id, int)


def test_an_error_quoting_a_huge_key_still_fits_every_clients_text_limit() -> None:
    """An unknown 64 KiB key in a request body: the error names it shortened, and any
    message is cut so the answer decodes with default limits (found by the live fuzzer)."""
    payload = cbor.encode([int(ApiKey.INIT_PRODUCER_ID), 0, 5, "c", {"x" * 65536: 0}])
    with pytest.raises(WireError) as caught:
        decode_request(payload, Limits())
    assert caught.value.correlation_id == 5 and len(caught.value.message) < 300
    frame = encode_response(5, ErrorCode.INVALID_REQUEST, "y" * 100_000, None)
    envelope = decode_response(frame[4:], ApiKey.INIT_PRODUCER_ID, Limits())
    assert envelope.message is not None and len(envelope.message) == MAX_ERROR_MESSAGE


def test_per_topic_and_per_partition_messages_are_cut_too() -> None:
    """A CreateTopics result quoting a 64 KiB config key (found by the live fuzzer after the
    top-level message was cut): every message a response carries fits a client's limits."""
    result = TopicResult(name="t", error=ErrorCode.INVALID_CONFIG, message="k" * 70_000)
    frame = encode_response(3, ErrorCode.NONE, None, CreateTopicsResponse(topics=(result,)))
    envelope = decode_response(frame[4:], ApiKey.CREATE_TOPICS, Limits())
    assert isinstance(envelope.body, CreateTopicsResponse)
    message = envelope.body.topics[0].message
    assert message is not None and len(message) == MAX_ERROR_MESSAGE


# ---------------------------------------------------------------------------- versions

TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _fetch_answer_body(version: int) -> dict[str, Any]:
    part: dict[str, Any] = {
        "partition": 0,
        "error": 0,
        "message": None,
        "high_watermark": 9,
        "last_stable_offset": 9,
        "log_start_offset": 0,
        "batches": [[7, b"x"]],
        "leader": None,
        "leader_term": -1,
    }
    if version >= 1:
        part |= {"next_offset": 8, "aborted_transactions": []}
    return {"topics": [{"name": "t", "partitions": [part]}]}


def _decode_fetch_answer(body: dict[str, Any], version: int) -> ResponseEnvelope:
    return decode_response(cbor.encode([3, 0, None, body]), ApiKey.FETCH, api_version=version)


def test_shape_lists_the_keys_of_each_version() -> None:
    shape = Shape("a", "b", added={1: ("c",), 3: ("d", "e")})
    assert shape.keys(0) == {"a", "b"}
    assert shape.keys(1) == shape.keys(2) == {"a", "b", "c"}
    assert shape.keys(3) == shape.keys(9) == {"a", "b", "c", "d", "e"}
    full = {"a": 1, "b": 2, "c": 3, "d": 4, "e": 5}
    assert shape.write(full, 2) == {"a": 1, "b": 2, "c": 3}
    assert shape.write(full, 3) == full
    with pytest.raises(WireError, match="unknown 'c'"):
        shape.read({"a": 1, "b": 2, "c": 3}, "", 0)
    with pytest.raises(WireError, match="missing c"):
        shape.read({"a": 1, "b": 2}, "", 1)
    with pytest.raises(ValueError, match="twice"):
        Shape("a", added={1: ("a",)})
    with pytest.raises(ValueError, match="version 0"):
        Shape("a", added={0: ("b",)})


def test_fetch_v1_answers_carry_next_offset_and_aborted_transactions() -> None:
    v1 = _decode_fetch_answer(_fetch_answer_body(1), 1).body
    assert isinstance(v1, FetchResponse)
    part = v1.topics[0].partitions[0]
    assert (part.next_offset, part.aborted_transactions) == (8, ())
    v0 = _decode_fetch_answer(_fetch_answer_body(0), 0).body
    assert isinstance(v0, FetchResponse)
    part = v0.topics[0].partitions[0]
    assert (part.next_offset, part.aborted_transactions) == (None, ())  # v0: not sent
    aborted = _fetch_answer_body(1)
    aborted["topics"][0]["partitions"][0]["aborted_transactions"] = [[5, 7], [6, 7]]
    body = _decode_fetch_answer(aborted, 1).body
    assert isinstance(body, FetchResponse)
    assert body.topics[0].partitions[0].aborted_transactions == (
        AbortedTransaction(producer_id=5, first_offset=7),
        AbortedTransaction(producer_id=6, first_offset=7),
    )


PART = ["topics", 0, "partitions", 0]

FETCH_ANSWER_REJECTIONS: list[tuple[str, int, Callable[[dict[str, Any]], None], str]] = [
    # (id, version, mutation of that version's valid body, expected message prefix)
    (
        "v0 with v1 fields",
        0,
        lambda b: b["topics"][0]["partitions"][0].update(next_offset=8, aborted_transactions=[]),
        "topics[0].partitions[0]: unknown 'aborted_transactions', 'next_offset'",
    ),
    (
        "v0 with next_offset alone",
        0,
        _set([*PART, "next_offset"], 8),
        "topics[0].partitions[0]: unknown 'next_offset'",
    ),
    (
        "v1 without next_offset",
        1,
        lambda b: b["topics"][0]["partitions"][0].pop("next_offset"),
        "topics[0].partitions[0]: missing next_offset",
    ),
    (
        "v1 next_offset null",
        1,
        _set([*PART, "next_offset"], None),
        "topics[0].partitions[0].next_offset: expected int, got null",
    ),
    (
        "v1 next_offset beyond int64",
        1,
        _set([*PART, "next_offset"], 2**63),
        "topics[0].partitions[0].next_offset: 9223372036854775808 is outside",
    ),
    (
        "v1 aborted transaction of three items",
        1,
        _set([*PART, "aborted_transactions"], [[1, 2, 3]]),
        "topics[0].partitions[0].aborted_transactions[0]: expected [producer_id, first_offset]",
    ),
    (
        "v1 aborted transaction with a negative producer",
        1,
        _set([*PART, "aborted_transactions"], [[-1, 2]]),
        "topics[0].partitions[0].aborted_transactions[0][0]: -1 is outside",
    ),
    (
        "v1 aborted transactions a map",
        1,
        _set([*PART, "aborted_transactions"], {}),
        "topics[0].partitions[0].aborted_transactions: expected an array, got map",
    ),
]


@pytest.mark.parametrize(
    ("version", "mutate", "expected"),
    [row[1:] for row in FETCH_ANSWER_REJECTIONS],
    ids=[row[0] for row in FETCH_ANSWER_REJECTIONS],
)
def test_fetch_answers_have_exactly_their_versions_fields(
    version: int, mutate: Callable[[dict[str, Any]], None], expected: str
) -> None:
    body = _fetch_answer_body(version)
    _decode_fetch_answer(body, version)  # valid before the mutation
    mutate(body)
    with pytest.raises(WireError) as info:
        _decode_fetch_answer(body, version)
    assert info.value.code is expected_code(expected)
    assert info.value.message.startswith(expected), info.value.message
    assert info.value.correlation_id == 3


def _produce_request(version: int, body: dict[str, Any]) -> ProduceRequest:
    _, request = decode_request(cbor.encode([4, version, 21, None, body]))
    assert isinstance(request, ProduceRequest)
    return request


def test_fetch_v2_keeps_a_trace_context() -> None:
    traced = FetchRequest(topics=(), trace_context=TRACE)
    for version, expected in ((0, None), (1, None), (2, TRACE)):
        body = traced.to_body(version)
        assert ("trace_context" in body) is (version == 2)
        _, decoded = decode_request(cbor.encode([5, version, 1, None, body]))
        assert isinstance(decoded, FetchRequest) and decoded.trace_context == expected
    bad = {**traced.to_body(2), "trace_context": TRACE.upper()}
    with pytest.raises(WireError, match="trace_context: not a W3C traceparent"):
        decode_request(cbor.encode([5, 2, 1, None, bad]))


def test_produce_v1_keeps_a_trace_context() -> None:
    assert _produce_request(1, {**_produce_body(), "trace_context": TRACE}).trace_context == TRACE
    assert _produce_request(1, {**_produce_body(), "trace_context": None}).trace_context is None
    assert _produce_request(0, _produce_body()).trace_context is None
    traced = ProduceRequest(topics=(), trace_context=TRACE)
    assert "trace_context" not in traced.to_body(0)  # a v0 broker never sees it


PRODUCE_VERSION_REJECTIONS: list[tuple[str, int, dict[str, Any], str]] = [
    # (id, version, change to a valid v0 body, expected message prefix)
    ("v0 with a trace context", 0, {"trace_context": TRACE}, "body: unknown 'trace_context'"),
    ("v0 with a null trace context", 0, {"trace_context": None}, "body: unknown 'trace_context'"),
    ("v1 without a trace context", 1, {}, "body: missing trace_context"),
    ("trace context an int", 1, {"trace_context": 5}, "trace_context: expected text, got int"),
    ("trace context empty", 1, {"trace_context": ""}, "trace_context: not a W3C traceparent"),
    (
        "trace context of 56 characters",
        1,
        {"trace_context": TRACE + "0"},
        "trace_context: traceparent longer than 55 characters",
    ),
    (
        "trace context in upper case",
        1,
        {"trace_context": TRACE.upper()},
        "trace_context: not a W3C traceparent",
    ),
    (
        "trace context without dashes",
        1,
        {"trace_context": TRACE.replace("-", "_")},
        "trace_context: not a W3C traceparent",
    ),
    (
        "trace context version ff",
        1,
        {"trace_context": "ff" + TRACE[2:]},
        "trace_context: traceparent version ff is invalid",
    ),
    (
        "trace context with a zero trace id",
        1,
        {"trace_context": f"00-{'0' * 32}-00f067aa0ba902b7-01"},
        "trace_context: traceparent trace id is all zeros",
    ),
    (
        "trace context with a zero parent id",
        1,
        {"trace_context": f"00-4bf92f3577b34da6a3ce929d0e0e4736-{'0' * 16}-01"},
        "trace_context: traceparent parent id is all zeros",
    ),
]


@pytest.mark.parametrize(
    ("version", "change", "expected"),
    [row[1:] for row in PRODUCE_VERSION_REJECTIONS],
    ids=[row[0] for row in PRODUCE_VERSION_REJECTIONS],
)
def test_produce_requests_have_exactly_their_versions_fields(
    version: int, change: dict[str, Any], expected: str
) -> None:
    with pytest.raises(WireError) as info:
        decode_request(cbor.encode([4, version, 22, None, {**_produce_body(), **change}]))
    assert info.value.code is expected_code(expected)
    assert info.value.message.startswith(expected), info.value.message
    assert info.value.correlation_id == 22


def test_a_version_outside_the_range_is_refused_naming_api_version_and_range() -> None:
    for key, (_, high) in SUPPORTED_VERSIONS.items():
        if key is ApiKey.API_VERSIONS:
            continue
        body = REQUEST_TYPES[key].to_body(_sample_request(key), high)
        for version in (high + 1, -1, 2**15 - 1):
            error = _reject_request(cbor.encode([int(key), version, 30, None, body]))
            assert (error.code, error.correlation_id) == (ErrorCode.UNSUPPORTED_VERSION, 30)
            assert error.message == (
                f"api_version: {key.name} version {version} is not supported by this broker, "
                f"which speaks versions 0 to {high}"
            )


def _sample_request(key: ApiKey) -> Request:
    return {
        ApiKey.METADATA: MetadataRequest(),
        ApiKey.CREATE_TOPICS: CreateTopicsRequest(topics=()),
        ApiKey.DELETE_TOPICS: DeleteTopicsRequest(names=()),
        ApiKey.PRODUCE: ProduceRequest(topics=()),
        ApiKey.FETCH: FetchRequest(topics=()),
        ApiKey.LIST_OFFSETS: ListOffsetsRequest(topics=()),
        ApiKey.INIT_PRODUCER_ID: InitProducerIdRequest(),
        ApiKey.DESCRIBE_CLUSTER: DescribeClusterRequest(),
        ApiKey.API_VERSIONS: ApiVersionsRequest(),
        ApiKey.FIND_COORDINATOR: FindCoordinatorRequest(key="g"),
        ApiKey.GROUP_HEARTBEAT: GroupHeartbeatRequest(group_id="g", member_id="m", member_epoch=0),
        ApiKey.OFFSET_COMMIT: OffsetCommitRequest(
            group_id="g", member_id="", member_epoch=-1, topics=()
        ),
        ApiKey.OFFSET_FETCH: OffsetFetchRequest(group_id="g"),
        ApiKey.LIST_GROUPS: ListGroupsRequest(),
        ApiKey.DESCRIBE_GROUPS: DescribeGroupsRequest(group_ids=("g",)),
        ApiKey.DELETE_GROUPS: DeleteGroupsRequest(group_ids=("g",)),
        ApiKey.ADD_PARTITIONS_TO_TXN: AddPartitionsToTxnRequest(
            transactional_id="tx", producer_id=1, producer_epoch=0, topics=()
        ),
        ApiKey.ADD_OFFSETS_TO_TXN: AddOffsetsToTxnRequest(
            transactional_id="tx", producer_id=1, producer_epoch=0, group_id="g"
        ),
        ApiKey.TXN_OFFSET_COMMIT: TxnOffsetCommitRequest(
            transactional_id="tx",
            group_id="g",
            producer_id=1,
            producer_epoch=0,
            member_id="",
            member_epoch=-1,
            topics=(),
        ),
        ApiKey.END_TXN: EndTxnRequest(
            transactional_id="tx", producer_id=1, producer_epoch=0, commit=True, sequences=()
        ),
        ApiKey.DESCRIBE_TRANSACTIONS: DescribeTransactionsRequest(transactional_ids=("tx",)),
        ApiKey.LIST_TRANSACTIONS: ListTransactionsRequest(),
        ApiKey.ABORT_TRANSACTION: AbortTransactionRequest(transactional_id="tx"),
        ApiKey.ELECT_LEADERS: ElectLeadersRequest(),
        ApiKey.REBALANCE: RebalanceRequest(),
        ApiKey.DESCRIBE_REASSIGNMENTS: DescribeReassignmentsRequest(),
        ApiKey.ALTER_TOPIC: AlterTopicRequest(name="t", partitions=2),
    }[key]


def test_a_broker_serving_fewer_versions_refuses_the_newer_ones() -> None:
    served = capped({ApiKey.FETCH: 0})
    assert served[ApiKey.FETCH] == (0, 0) and served[ApiKey.PRODUCE] == (0, 1)
    body = FetchRequest(topics=()).to_body(1)
    with pytest.raises(WireError) as info:
        decode_request(cbor.encode([5, 1, 4, None, body]), Limits(), served)
    assert info.value.code is ErrorCode.UNSUPPORTED_VERSION
    assert "FETCH version 1" in info.value.message and "versions 0 to 0" in info.value.message
    header, _ = decode_request(cbor.encode([5, 0, 4, None, FetchRequest(topics=()).to_body(0)]))
    assert header.api_version == 0
    with pytest.raises(ValueError, match=r"FETCH: version cap 3 is outside \[0, 2\]"):
        capped({ApiKey.FETCH: 3})


def test_api_versions_outside_its_range_decodes_without_its_body() -> None:
    """Kafka's rule: a newer client's API_VERSIONS is not refused by the decoder (its body
    is unknown here), so the broker can answer it with the ranges."""
    for version, body in ((1, {"client_software": "x"}), (7, {}), (-1, [1, 2])):
        header, request = decode_request(cbor.encode([0, version, 40, "new", body]))
        assert request == ApiVersionsRequest()
        assert (header.api_key, header.api_version, header.correlation_id) == (
            ApiKey.API_VERSIONS,
            version,
            40,
        )
    with pytest.raises(WireError, match="unknown 'x'"):  # at a served version: checked
        decode_request(cbor.encode([0, 0, 41, None, {"x": 1}]))


def test_the_api_versions_refusal_carries_the_ranges_at_version_0() -> None:
    ranges = ApiVersionsResponse(
        apis=(ApiVersionRange(api_key=0, min_version=0, max_version=0),), node_id=3
    )
    frame = encode_response(9, ErrorCode.UNSUPPORTED_VERSION, "too new", ranges)
    assert cbor.decode(frame[4:]) == [9, 35, "too new", ranges.to_body(0)]
    envelope = decode_response(frame[4:], ApiKey.API_VERSIONS)
    assert envelope == (9, ErrorCode.UNSUPPORTED_VERSION, "too new", ranges)
    # A refusal without the ranges (an older broker's) reads too.
    plain = encode_response(9, ErrorCode.UNSUPPORTED_VERSION, "too new", None)
    assert decode_response(plain[4:], ApiKey.API_VERSIONS).body is None
    # Any other API's error answer has a null body.
    with pytest.raises(WireError, match="body: must be null"):
        decode_response(cbor.encode([9, 35, "x", {"topics": []}]), ApiKey.FETCH)
    with pytest.raises(WireError, match="body: must be null"):
        decode_response(cbor.encode([9, 3, "x", ranges.to_body(0)]), ApiKey.API_VERSIONS)


def test_responses_are_read_at_the_version_asked() -> None:
    answer = FetchResponse(
        topics=(FetchTopicResult(name="t", partitions=(FetchPartitionResult(partition=0),)),)
    )
    v0 = encode_response(1, ErrorCode.NONE, None, answer)
    with pytest.raises(WireError, match="missing aborted_transactions, next_offset"):
        decode_response(v0[4:], ApiKey.FETCH, api_version=1)
    with pytest.raises(ValueError, match=r"FETCH version 3 is not in \[0, 2\]"):
        decode_response(v0[4:], ApiKey.FETCH, api_version=3)


def test_traceparent_problems() -> None:
    assert traceparent_problem(TRACE) is None
    assert traceparent_problem("01" + TRACE[2:]) is None  # a later version, same layout
    assert traceparent_problem(TRACE[:-1]) is not None
    assert traceparent_problem(TRACE + "\n") is not None
    assert traceparent_problem("") is not None


def test_offset_commit_ties_operator_id_to_operator_epoch() -> None:
    for member, epoch in (("", 5), ("m-1", -1)):
        with pytest.raises(WireError) as e:
            _group_request(
                ApiKey.OFFSET_COMMIT, {**_commit_body(), "member_id": member, "member_epoch": epoch}
            )
        assert "member_epoch" in e.value.message
