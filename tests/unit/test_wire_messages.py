"""Request/response messages and their envelopes: round trips of every message, and strict
rejection of bad fields, naming the field."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.wire import cbor
from broker.wire.api import ApiKey
from broker.wire.errors import ErrorCode, WireError
from broker.wire.frames import FrameDecoder
from broker.wire.limits import Limits
from broker.wire.messages import (
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
    RESPONSE_TYPES,
    RequestHeader,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
    request_correlation_id,
    response_correlation_id,
)

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


def _tuple(strategy: st.SearchStrategy[Any], **kwargs: Any) -> st.SearchStrategy[tuple[Any, ...]]:
    return st.lists(strategy, max_size=4, **kwargs).map(tuple)


def _by_name(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[tuple[Any, ...]]:
    return _tuple(strategy, unique_by=lambda t: t.name)


def _by_partition(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[tuple[Any, ...]]:
    return _tuple(strategy, unique_by=lambda p: p.partition)


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
    ),
    ApiKey.DESCRIBE_CLUSTER: st.just(DescribeClusterRequest()),
}

LEADER_HINT = st.none() | st.integers(min_value=0, max_value=2**31 - 1)

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
}


def _payload(frame: bytes) -> bytes:
    decoder = FrameDecoder()
    decoder.receive_data(frame)
    payload = decoder.next_frame()
    assert payload is not None and decoder.at_boundary
    return payload


# ---------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("api_key", list(ApiKey), ids=[k.name for k in ApiKey])
def test_request_round_trip(api_key: ApiKey) -> None:
    @settings(max_examples=40, deadline=1000)
    @given(REQUESTS[api_key], I32, st.none() | st.text(max_size=20))
    def check(request: Request, correlation_id: int, client_id: str | None) -> None:
        payload = _payload(encode_request(request, correlation_id, client_id))
        assert request_correlation_id(payload) == correlation_id
        header, decoded = decode_request(payload)
        assert header == RequestHeader(
            api_key=api_key, api_version=0, correlation_id=correlation_id, client_id=client_id
        )
        assert decoded == request and type(decoded) is type(request)

    check()


@pytest.mark.parametrize("api_key", list(ApiKey), ids=[k.name for k in ApiKey])
def test_response_round_trip(api_key: ApiKey) -> None:
    @settings(max_examples=40, deadline=1000)
    @given(RESPONSES[api_key], I32)
    def check(response: Response, correlation_id: int) -> None:
        payload = _payload(encode_response(correlation_id, ErrorCode.NONE, None, response))
        assert response_correlation_id(payload) == correlation_id
        envelope = decode_response(payload, api_key)
        assert tuple(envelope) == (correlation_id, ErrorCode.NONE, None, response)
        assert envelope.body == response

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
    assert request.to_body() == {
        "acks": -1,
        "timeout_ms": 100,
        "transactional_id": None,
        "topics": [{"name": "t", "partitions": [{"partition": 0, "batch": b"B"}]}],
    }
    frame = encode_request(request, 7, "cli")
    assert cbor.decode(frame[4:]) == [4, 0, 7, "cli", request.to_body()]
    fetched = FetchPartitionResult(partition=1, batches=(FetchedBatch(base_offset=5, data=b"x"),))
    assert fetched.to_wire()["batches"] == [[5, b"x"]]


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
        "topics[1].name: topic name may contain only",
    ),
    (
        "empty topic",
        ApiKey.PRODUCE,
        _produce_body,
        _set(["topics", 1, "name"], ""),
        "topics[1].name: topic name is empty",
    ),
    (
        "topic of 250 characters",
        ApiKey.PRODUCE,
        _produce_body,
        _set(["topics", 1, "name"], "t" * 250),
        "topics[1].name: topic name longer than 249",
    ),
    (
        "topic '..'",
        ApiKey.PRODUCE,
        _produce_body,
        _set(["topics", 1, "name"], ".."),
        "topics[1].name: topic name may not be",
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
        "describe cluster body not empty",
        ApiKey.DESCRIBE_CLUSTER,
        dict,
        _set(["topics"], None),
        "body: unknown 'topics'",
    ),
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
    assert info.value.code is ErrorCode.INVALID_REQUEST
    assert info.value.message.startswith(expected), info.value.message
    assert info.value.correlation_id == 11


def test_metadata_leader_term_unknown_is_minus_one() -> None:
    # A broker hosting no replica of a new partition, before its leader is reported, knows no
    # term: the answer must still decode (it once failed the client with INVALID_REQUEST).
    part = {"partition": 0, "leader": None, "leader_term": -1, "replicas": [1], "error": 5}
    topic = {"name": "t", "error": 0, "partitions": [part], "replication_factor": 1, "config": {}}
    body = {"cluster_id": "c", "controller": 0, "brokers": [], "topics": [topic]}
    decoded = MetadataResponse.from_body(body)
    assert decoded.topics[0].partitions[0].leader_term == -1
    part["leader_term"] = -2
    with pytest.raises(WireError, match=r"topics\[0\]\.partitions\[0\]\.leader_term: -2 is"):
        MetadataResponse.from_body(body)


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
    ("bad topic", _set([*PT0, "topic"], "a/b"), "partitions[0].topic: topic name may contain"),
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
    assert good.to_body() == body  # the unmutated body is valid and round-trips exactly
    mutate(body)
    with pytest.raises(WireError) as info:
        decode_response(cbor.encode([4, 0, None, body]), ApiKey.DESCRIBE_CLUSTER)
    assert info.value.code is ErrorCode.INVALID_REQUEST
    assert info.value.message.startswith(expected), info.value.message
    assert info.value.correlation_id == 4


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
        MetadataRequest.from_body(body, limits)
    assert info.value.message.startswith("topics: 3 items exceed the limit of 2")
    with pytest.raises(WireError):  # the CBOR layer refuses first when decoding a frame
        decode_request(cbor.encode([1, 0, 1, None, body]), limits)


def test_topic_name_limit_can_be_narrowed() -> None:
    body = {"topics": ["abcdef"]}
    with pytest.raises(WireError, match="longer than 5"):
        MetadataRequest.from_body(body, Limits(max_topic_name=5))


# ---------------------------------------------------------------------------- envelopes


def _reject_request(payload: bytes) -> WireError:
    with pytest.raises(WireError) as info:
        decode_request(payload)
    return info.value


def test_envelope_errors_carry_the_correlation_id_when_readable() -> None:
    error = _reject_request(cbor.encode([99, 0, 5, None, {}]))
    assert (error.code, error.correlation_id) == (ErrorCode.INVALID_REQUEST, 5)
    assert "unknown API 99" in error.message
    error = _reject_request(cbor.encode([0, 1, 6, None, {}]))
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
