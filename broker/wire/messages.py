"""Typed request and response bodies, every version of every API.

Each message is a frozen, slotted, keyword-only dataclass holding the fields of its newest
version, with `to_body(version)` (the CBOR map with text keys that goes into the frame) and
`from_body(body, version, limits)`, which validates strictly: exact key sets per version,
exact types, integer ranges (offsets and producer ids int64, partitions int32
>= 0), topic names `[a-zA-Z0-9._-]{1,249}` (not "." or ".."), array lengths within
`limits.max_array_items`, no repeated topic or partition within one request. A violation
raises WireError(INVALID_REQUEST, "<path>: <what>") naming the field, e.g.
"topics[1].partitions[0].offset: expected int, got text".

Versions: a map whose keys change between versions has one `schema.Shape` beside its class,
the only place that says which key exists from which version. Writing at an older version
leaves out the newer fields; reading a version refuses a key of a newer one as unknown, and
gives the fields it lacks their default (None where "not sent" must be told apart, as FETCH
v0's `next_offset`). Versions past 0: PRODUCE v1 adds `trace_context`, FETCH v1 adds
`next_offset` and `aborted_transactions` to each partition result, INIT_PRODUCER_ID v1 adds
`transaction_timeout_ms` to the request.

The consumer-group APIs are in `group_messages.py`, the transaction APIs in
`txn_messages.py`; `Request` and `Response` below name every API's messages.

Sequences are tuples and maps are dicts. Error codes are ErrorCode values; a code this version
does not know reads as UNKNOWN_SERVER_ERROR. Byte strings are `bytes`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import ClassVar, TypeAlias

from broker.wire import schema as s
from broker.wire.api import ApiKey
from broker.wire.errors import ErrorCode, short_message
from broker.wire.group_messages import (
    DeleteGroupsRequest,
    DeleteGroupsResponse,
    DescribeGroupsRequest,
    DescribeGroupsResponse,
    FindCoordinatorRequest,
    FindCoordinatorResponse,
    GroupHeartbeatRequest,
    GroupHeartbeatResponse,
    ListGroupsRequest,
    ListGroupsResponse,
    OffsetCommitRequest,
    OffsetCommitResponse,
    OffsetFetchRequest,
    OffsetFetchResponse,
)
from broker.wire.limits import DEFAULT_LIMITS, Limits
from broker.wire.rebalance_messages import (
    AlterTopicRequest,
    AlterTopicResponse,
    DescribeReassignmentsRequest,
    DescribeReassignmentsResponse,
    RebalanceRequest,
    RebalanceResponse,
)
from broker.wire.txn_messages import (
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
    ListTransactionsRequest,
    ListTransactionsResponse,
    TxnOffsetCommitRequest,
    TxnOffsetCommitResponse,
)

__all__ = [
    "AbortedTransaction",
    "ApiVersionRange",
    "ApiVersionsRequest",
    "ApiVersionsResponse",
    "BrokerInfo",
    "ClusterBroker",
    "ClusterPartition",
    "CreateTopicsRequest",
    "CreateTopicsResponse",
    "DeleteTopicsRequest",
    "DeleteTopicsResponse",
    "DescribeClusterRequest",
    "DescribeClusterResponse",
    "ElectLeadersRequest",
    "ElectLeadersResponse",
    "FetchPartition",
    "FetchPartitionResult",
    "FetchRequest",
    "FetchResponse",
    "FetchTopic",
    "FetchTopicResult",
    "FetchedBatch",
    "InitProducerIdRequest",
    "InitProducerIdResponse",
    "IsolationLevel",
    "ListOffsetsPartition",
    "ListOffsetsPartitionResult",
    "ListOffsetsRequest",
    "ListOffsetsResponse",
    "ListOffsetsTopic",
    "ListOffsetsTopicResult",
    "MetadataRequest",
    "MetadataResponse",
    "NewTopic",
    "PartitionInfo",
    "PreferredLeader",
    "ProducePartition",
    "ProducePartitionResult",
    "ProduceRequest",
    "ProduceResponse",
    "ProduceTopic",
    "ProduceTopicResult",
    "Request",
    "Response",
    "TopicInfo",
    "TopicResult",
]

BROKER_DEFAULT = -1
"""CREATE_TOPICS: a partition count or replication factor of -1 asks for the broker's."""
NO_TIMESTAMP = -1
"""LIST_OFFSETS: the answer's timestamp when it names none."""
EARLIEST_TIMESTAMP = -2
LATEST_TIMESTAMP = -1
PORT_MAX = 65535
DEFAULT_TRANSACTION_TIMEOUT_MS = 60_000
"""INIT_PRODUCER_ID: the transaction timeout a v0 request reads as (it cannot send one)."""


def _bytes(value: bytes | bytearray | memoryview) -> bytes:
    return value if type(value) is bytes else bytes(value)


class IsolationLevel(IntEnum):
    READ_UNCOMMITTED = 0
    READ_COMMITTED = 1


def _isolation(value: object, path: str) -> IsolationLevel:
    return IsolationLevel(s.integer(value, path, 0, 1))


# --------------------------------------------------------------------------- API_VERSIONS


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiVersionsRequest:
    API_KEY: ClassVar[ApiKey] = ApiKey.API_VERSIONS

    def to_body(self, version: int) -> dict[str, object]:
        return {}

    @classmethod
    def from_body(
        cls, body: object, version: int, limits: Limits = DEFAULT_LIMITS
    ) -> ApiVersionsRequest:
        s.fields(body, "", frozenset())
        return cls()


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiVersionRange:
    api_key: int
    """An int, not ApiKey: a newer broker lists APIs this version does not know."""
    min_version: int
    max_version: int

    def to_wire(self) -> list[object]:
        return [self.api_key, self.min_version, self.max_version]

    @classmethod
    def from_wire(cls, value: object, path: str, limits: Limits) -> ApiVersionRange:
        items = s.array(value, path, limits)
        if len(items) != 3:
            s.fail(path, f"expected [api_key, min, max], got {len(items)} items")
        key = s.int16(items[0], s.item(path, 0), 0)
        low = s.int16(items[1], s.item(path, 1), 0)
        high = s.int16(items[2], s.item(path, 2), low)
        return cls(api_key=key, min_version=low, max_version=high)


_API_VERSIONS_RESPONSE = frozenset({"apis", "node_id", "cluster_id"})


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiVersionsResponse:
    API_KEY: ClassVar[ApiKey] = ApiKey.API_VERSIONS
    apis: tuple[ApiVersionRange, ...]
    node_id: int
    cluster_id: str | None = None

    def versions(self) -> dict[int, tuple[int, int]]:
        """The ranges as a table for `api.negotiate`."""
        return {a.api_key: (a.min_version, a.max_version) for a in self.apis}

    def to_body(self, version: int) -> dict[str, object]:
        return {
            "apis": [a.to_wire() for a in self.apis],
            "node_id": self.node_id,
            "cluster_id": self.cluster_id,
        }

    @classmethod
    def from_body(
        cls, body: object, version: int, limits: Limits = DEFAULT_LIMITS
    ) -> ApiVersionsResponse:
        b = s.fields(body, "", _API_VERSIONS_RESPONSE)
        apis = tuple(
            ApiVersionRange.from_wire(v, s.item("apis", i), limits)
            for i, v in enumerate(s.array(b["apis"], "apis", limits))
        )
        s.unique([a.api_key for a in apis], "apis", "api key")
        return cls(
            apis=apis,
            node_id=s.int32(b["node_id"], "node_id", 0),
            cluster_id=s.opt_text(b["cluster_id"], "cluster_id"),
        )


# --------------------------------------------------------------------------- METADATA

_METADATA_REQUEST = frozenset({"topics"})


def _topic_names(raw: object, limits: Limits) -> tuple[str, ...] | None:
    """A request's optional `topics`: None (every topic), else distinct valid names."""
    if raw is None:
        return None
    names = [
        s.topic(v, s.item("topics", i), limits)
        for i, v in enumerate(s.array(raw, "topics", limits))
    ]
    s.unique(names, "topics", "topic")
    return tuple(names)


@dataclass(frozen=True, slots=True, kw_only=True)
class MetadataRequest:
    """`topics=None` asks for every topic; an empty tuple for none (brokers only)."""

    API_KEY: ClassVar[ApiKey] = ApiKey.METADATA
    topics: tuple[str, ...] | None = None

    def to_body(self, version: int) -> dict[str, object]:
        return {"topics": None if self.topics is None else list(self.topics)}

    @classmethod
    def from_body(
        cls, body: object, version: int, limits: Limits = DEFAULT_LIMITS
    ) -> MetadataRequest:
        b = s.fields(body, "", _METADATA_REQUEST)
        return cls(topics=_topic_names(b["topics"], limits))


_BROKER = frozenset({"id", "host", "port", "rack"})


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerInfo:
    id: int
    host: str
    port: int
    rack: str | None = None

    def to_wire(self) -> dict[str, object]:
        return {"id": self.id, "host": self.host, "port": self.port, "rack": self.rack}

    @classmethod
    def from_wire(cls, value: object, path: str, limits: Limits) -> BrokerInfo:
        b = s.fields(value, path, _BROKER)
        return cls(
            id=s.int32(b["id"], s.at(path, "id"), 0),
            host=s.nonempty_text(b["host"], s.at(path, "host")),
            port=s.integer(b["port"], s.at(path, "port"), 0, PORT_MAX),
            rack=s.opt_text(b["rack"], s.at(path, "rack")),
        )


_PARTITION_INFO = frozenset({"partition", "leader", "leader_term", "replicas", "error"})


@dataclass(frozen=True, slots=True, kw_only=True)
class PartitionInfo:
    partition: int
    leader: int | None
    """None while the partition has no known leader."""
    leader_term: int
    """The Raft term of `leader`: a client never steps back to an older leader. -1 when the
    answering broker knows none (it hosts no replica and no leader was reported yet)."""
    replicas: tuple[int, ...]
    error: ErrorCode = ErrorCode.NONE

    def to_wire(self) -> dict[str, object]:
        return {
            "partition": self.partition,
            "leader": self.leader,
            "leader_term": self.leader_term,
            "replicas": list(self.replicas),
            "error": int(self.error),
        }

    @classmethod
    def from_wire(cls, value: object, path: str, limits: Limits) -> PartitionInfo:
        b = s.fields(value, path, _PARTITION_INFO)
        replicas_path = s.at(path, "replicas")
        return cls(
            partition=s.partition(b["partition"], s.at(path, "partition")),
            leader=s.opt_int32(b["leader"], s.at(path, "leader"), 0),
            leader_term=s.int64(b["leader_term"], s.at(path, "leader_term"), -1),
            replicas=tuple(
                s.int32(v, s.item(replicas_path, i), 0)
                for i, v in enumerate(s.array(b["replicas"], replicas_path, limits))
            ),
            error=s.error_code(b["error"], s.at(path, "error")),
        )


_TOPIC_INFO = frozenset({"name", "error", "partitions", "replication_factor", "config"})


@dataclass(frozen=True, slots=True, kw_only=True)
class TopicInfo:
    name: str
    error: ErrorCode = ErrorCode.NONE
    partitions: tuple[PartitionInfo, ...] = ()
    replication_factor: int = 0
    config: Mapping[str, str] = field(default_factory=dict)

    def to_wire(self) -> dict[str, object]:
        return {
            "name": self.name,
            "error": int(self.error),
            "partitions": [p.to_wire() for p in self.partitions],
            "replication_factor": self.replication_factor,
            "config": dict(self.config),
        }

    @classmethod
    def from_wire(cls, value: object, path: str, limits: Limits) -> TopicInfo:
        b = s.fields(value, path, _TOPIC_INFO)
        parts_path = s.at(path, "partitions")
        return cls(
            name=s.topic(b["name"], s.at(path, "name"), limits),
            error=s.error_code(b["error"], s.at(path, "error")),
            partitions=tuple(
                PartitionInfo.from_wire(v, s.item(parts_path, i), limits)
                for i, v in enumerate(s.array(b["partitions"], parts_path, limits))
            ),
            replication_factor=s.int16(
                b["replication_factor"], s.at(path, "replication_factor"), 0
            ),
            config=s.text_map(b["config"], s.at(path, "config"), limits),
        )


_METADATA_RESPONSE = frozenset({"cluster_id", "controller", "brokers", "topics"})


@dataclass(frozen=True, slots=True, kw_only=True)
class MetadataResponse:
    API_KEY: ClassVar[ApiKey] = ApiKey.METADATA
    cluster_id: str | None
    controller: int | None
    brokers: tuple[BrokerInfo, ...]
    topics: tuple[TopicInfo, ...]

    def to_body(self, version: int) -> dict[str, object]:
        return {
            "cluster_id": self.cluster_id,
            "controller": self.controller,
            "brokers": [b.to_wire() for b in self.brokers],
            "topics": [t.to_wire() for t in self.topics],
        }

    @classmethod
    def from_body(
        cls, body: object, version: int, limits: Limits = DEFAULT_LIMITS
    ) -> MetadataResponse:
        b = s.fields(body, "", _METADATA_RESPONSE)
        return cls(
            cluster_id=s.opt_text(b["cluster_id"], "cluster_id"),
            controller=s.opt_int32(b["controller"], "controller", 0),
            brokers=tuple(
                BrokerInfo.from_wire(v, s.item("brokers", i), limits)
                for i, v in enumerate(s.array(b["brokers"], "brokers", limits))
            ),
            topics=tuple(
                TopicInfo.from_wire(v, s.item("topics", i), limits)
                for i, v in enumerate(s.array(b["topics"], "topics", limits))
            ),
        )


# --------------------------------------------------------------------------- CREATE_TOPICS

_NEW_TOPIC = frozenset({"name", "partitions", "replication_factor", "config"})


@dataclass(frozen=True, slots=True, kw_only=True)
class NewTopic:
    """`partitions` and `replication_factor` of -1 ask for the broker's defaults; other
    values below 1 are answered per topic (INVALID_PARTITIONS, INVALID_REPLICATION_FACTOR)."""

    name: str
    partitions: int = BROKER_DEFAULT
    replication_factor: int = BROKER_DEFAULT
    config: Mapping[str, str] = field(default_factory=dict)

    def to_wire(self) -> dict[str, object]:
        return {
            "name": self.name,
            "partitions": self.partitions,
            "replication_factor": self.replication_factor,
            "config": dict(self.config),
        }

    @classmethod
    def from_wire(cls, value: object, path: str, limits: Limits) -> NewTopic:
        b = s.fields(value, path, _NEW_TOPIC)
        return cls(
            name=s.topic(b["name"], s.at(path, "name"), limits),
            partitions=s.int32(b["partitions"], s.at(path, "partitions")),
            replication_factor=s.int16(b["replication_factor"], s.at(path, "replication_factor")),
            config=s.text_map(b["config"], s.at(path, "config"), limits),
        )


_CREATE_TOPICS_REQUEST = frozenset({"topics", "timeout_ms"})


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateTopicsRequest:
    API_KEY: ClassVar[ApiKey] = ApiKey.CREATE_TOPICS
    topics: tuple[NewTopic, ...]
    timeout_ms: int = 30_000

    def to_body(self, version: int) -> dict[str, object]:
        return {"topics": [t.to_wire() for t in self.topics], "timeout_ms": self.timeout_ms}

    @classmethod
    def from_body(
        cls, body: object, version: int, limits: Limits = DEFAULT_LIMITS
    ) -> CreateTopicsRequest:
        b = s.fields(body, "", _CREATE_TOPICS_REQUEST)
        topics = tuple(
            NewTopic.from_wire(v, s.item("topics", i), limits)
            for i, v in enumerate(s.array(b["topics"], "topics", limits))
        )
        s.unique([t.name for t in topics], "topics", "topic")
        return cls(topics=topics, timeout_ms=s.int32(b["timeout_ms"], "timeout_ms", 0))


_TOPIC_RESULT = frozenset({"name", "error", "message"})


@dataclass(frozen=True, slots=True, kw_only=True)
class TopicResult:
    """The outcome for one topic of CREATE_TOPICS or DELETE_TOPICS."""

    name: str
    error: ErrorCode = ErrorCode.NONE
    message: str | None = None

    def to_wire(self) -> dict[str, object]:
        return {"name": self.name, "error": int(self.error), "message": short_message(self.message)}

    @classmethod
    def from_wire(cls, value: object, path: str, limits: Limits) -> TopicResult:
        b = s.fields(value, path, _TOPIC_RESULT)
        return cls(
            name=s.topic(b["name"], s.at(path, "name"), limits),
            error=s.error_code(b["error"], s.at(path, "error")),
            message=s.opt_text(b["message"], s.at(path, "message")),
        )


def _topic_results(value: object, limits: Limits) -> tuple[TopicResult, ...]:
    return tuple(
        TopicResult.from_wire(v, s.item("topics", i), limits)
        for i, v in enumerate(s.array(value, "topics", limits))
    )


_TOPIC_RESULTS = frozenset({"topics"})


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateTopicsResponse:
    API_KEY: ClassVar[ApiKey] = ApiKey.CREATE_TOPICS
    topics: tuple[TopicResult, ...]

    def to_body(self, version: int) -> dict[str, object]:
        return {"topics": [t.to_wire() for t in self.topics]}

    @classmethod
    def from_body(
        cls, body: object, version: int, limits: Limits = DEFAULT_LIMITS
    ) -> CreateTopicsResponse:
        b = s.fields(body, "", _TOPIC_RESULTS)
        return cls(topics=_topic_results(b["topics"], limits))


# --------------------------------------------------------------------------- DELETE_TOPICS

_DELETE_TOPICS_REQUEST = frozenset({"names", "timeout_ms"})


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteTopicsRequest:
    API_KEY: ClassVar[ApiKey] = ApiKey.DELETE_TOPICS
    names: tuple[str, ...]
    timeout_ms: int = 30_000

    def to_body(self, version: int) -> dict[str, object]:
        return {"names": list(self.names), "timeout_ms": self.timeout_ms}

    @classmethod
    def from_body(
        cls, body: object, version: int, limits: Limits = DEFAULT_LIMITS
    ) -> DeleteTopicsRequest:
        b = s.fields(body, "", _DELETE_TOPICS_REQUEST)
        names = [
            s.topic(v, s.item("names", i), limits)
            for i, v in enumerate(s.array(b["names"], "names", limits))
        ]
        s.unique(names, "names", "topic")
        return cls(names=tuple(names), timeout_ms=s.int32(b["timeout_ms"], "timeout_ms", 0))


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteTopicsResponse:
    API_KEY: ClassVar[ApiKey] = ApiKey.DELETE_TOPICS
    topics: tuple[TopicResult, ...]

    def to_body(self, version: int) -> dict[str, object]:
        return {"topics": [t.to_wire() for t in self.topics]}

    @classmethod
    def from_body(
        cls, body: object, version: int, limits: Limits = DEFAULT_LIMITS
    ) -> DeleteTopicsResponse:
        b = s.fields(body, "", _TOPIC_RESULTS)
        return cls(topics=_topic_results(b["topics"], limits))


# --------------------------------------------------------------------------- PRODUCE

_PRODUCE_PARTITION = frozenset({"partition", "batch"})


@dataclass(frozen=True, slots=True, kw_only=True)
class ProducePartition:
    partition: int
    batch: bytes
    """One record batch (broker.wire.batch), checked by the partition leader, not here."""

    def to_wire(self) -> dict[str, object]:
        return {"partition": self.partition, "batch": _bytes(self.batch)}

    @classmethod
    def from_wire(cls, value: object, path: str) -> ProducePartition:
        b = s.fields(value, path, _PRODUCE_PARTITION)
        return cls(
            partition=s.partition(b["partition"], s.at(path, "partition")),
            batch=s.byte_string(b["batch"], s.at(path, "batch")),
        )


_NAME_PARTITIONS = frozenset({"name", "partitions"})


@dataclass(frozen=True, slots=True, kw_only=True)
class ProduceTopic:
    name: str
    partitions: tuple[ProducePartition, ...]

    def to_wire(self) -> dict[str, object]:
        return {"name": self.name, "partitions": [p.to_wire() for p in self.partitions]}

    @classmethod
    def from_wire(cls, value: object, path: str, limits: Limits) -> ProduceTopic:
        b = s.fields(value, path, _NAME_PARTITIONS)
        parts_path = s.at(path, "partitions")
        partitions = tuple(
            ProducePartition.from_wire(v, s.item(parts_path, i))
            for i, v in enumerate(s.array(b["partitions"], parts_path, limits))
        )
        s.unique([p.partition for p in partitions], parts_path, "partition")
        return cls(name=s.topic(b["name"], s.at(path, "name"), limits), partitions=partitions)


_BAD_ACKS = ErrorCode.INVALID_REQUIRED_ACKS
_PRODUCE_REQUEST = s.Shape(
    "acks", "timeout_ms", "transactional_id", "topics", added={1: ("trace_context",)}
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProduceRequest:
    """`acks` must be -1: a record is acknowledged once committed by a Raft quorum. Any other
    value is refused with INVALID_REQUIRED_ACKS."""

    API_KEY: ClassVar[ApiKey] = ApiKey.PRODUCE
    topics: tuple[ProduceTopic, ...]
    timeout_ms: int = 30_000
    transactional_id: str | None = None
    acks: int = -1
    trace_context: str | None = None
    """v1: the W3C traceparent of the client's produce-request span (at most 55 characters,
    checked: `limits.traceparent_problem`); None when there is none or at v0. The broker's
    request span continues that trace, without decoding any record."""

    def to_body(self, version: int) -> dict[str, object]:
        return _PRODUCE_REQUEST.write(
            {
                "acks": self.acks,
                "timeout_ms": self.timeout_ms,
                "transactional_id": self.transactional_id,
                "topics": [t.to_wire() for t in self.topics],
                "trace_context": self.trace_context,
            },
            version,
        )

    @classmethod
    def from_body(
        cls, body: object, version: int, limits: Limits = DEFAULT_LIMITS
    ) -> ProduceRequest:
        b = _PRODUCE_REQUEST.read(body, "", version)
        acks = s.int16(b["acks"], "acks")
        if acks != -1:
            s.fail("acks", f"must be -1 (a Raft quorum), got {acks}", _BAD_ACKS)
        topics = tuple(
            ProduceTopic.from_wire(v, s.item("topics", i), limits)
            for i, v in enumerate(s.array(b["topics"], "topics", limits))
        )
        s.unique([t.name for t in topics], "topics", "topic")
        return cls(
            acks=acks,
            timeout_ms=s.int32(b["timeout_ms"], "timeout_ms", 0),
            transactional_id=s.opt_nonempty_text(b["transactional_id"], "transactional_id"),
            topics=topics,
            trace_context=s.trace_context(b),
        )


_PRODUCE_PARTITION_RESULT = frozenset(
    {"partition", "error", "message", "base_offset", "log_start_offset", "leader", "leader_term"}
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProducePartitionResult:
    partition: int
    error: ErrorCode = ErrorCode.NONE
    message: str | None = None
    base_offset: int = -1
    """The offset of the batch's first record; -1 on error."""
    log_start_offset: int = -1
    leader: int | None = None
    """With a leadership error: the partition's leader as the answering broker knows it (a
    hint, like Kafka's KIP-951 CurrentLeader), None if it knows none."""
    leader_term: int = -1
    """The Raft term of `leader`'s hint; -1 when there is no hint."""

    def to_wire(self) -> dict[str, object]:
        return {
            "partition": self.partition,
            "error": int(self.error),
            "message": short_message(self.message),
            "base_offset": self.base_offset,
            "log_start_offset": self.log_start_offset,
            "leader": self.leader,
            "leader_term": self.leader_term,
        }

    @classmethod
    def from_wire(cls, value: object, path: str) -> ProducePartitionResult:
        b = s.fields(value, path, _PRODUCE_PARTITION_RESULT)
        return cls(
            partition=s.partition(b["partition"], s.at(path, "partition")),
            error=s.error_code(b["error"], s.at(path, "error")),
            message=s.opt_text(b["message"], s.at(path, "message")),
            base_offset=s.int64(b["base_offset"], s.at(path, "base_offset"), -1),
            log_start_offset=s.int64(b["log_start_offset"], s.at(path, "log_start_offset"), -1),
            leader=s.opt_int32(b["leader"], s.at(path, "leader"), 0),
            leader_term=s.int64(b["leader_term"], s.at(path, "leader_term"), -1),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ProduceTopicResult:
    name: str
    partitions: tuple[ProducePartitionResult, ...]

    def to_wire(self) -> dict[str, object]:
        return {"name": self.name, "partitions": [p.to_wire() for p in self.partitions]}

    @classmethod
    def from_wire(cls, value: object, path: str, limits: Limits) -> ProduceTopicResult:
        b = s.fields(value, path, _NAME_PARTITIONS)
        parts_path = s.at(path, "partitions")
        return cls(
            name=s.topic(b["name"], s.at(path, "name"), limits),
            partitions=tuple(
                ProducePartitionResult.from_wire(v, s.item(parts_path, i))
                for i, v in enumerate(s.array(b["partitions"], parts_path, limits))
            ),
        )


_TOPICS = frozenset({"topics"})


@dataclass(frozen=True, slots=True, kw_only=True)
class ProduceResponse:
    API_KEY: ClassVar[ApiKey] = ApiKey.PRODUCE
    topics: tuple[ProduceTopicResult, ...]

    def to_body(self, version: int) -> dict[str, object]:
        return {"topics": [t.to_wire() for t in self.topics]}

    @classmethod
    def from_body(
        cls, body: object, version: int, limits: Limits = DEFAULT_LIMITS
    ) -> ProduceResponse:
        b = s.fields(body, "", _TOPICS)
        return cls(
            topics=tuple(
                ProduceTopicResult.from_wire(v, s.item("topics", i), limits)
                for i, v in enumerate(s.array(b["topics"], "topics", limits))
            )
        )


# --------------------------------------------------------------------------- FETCH

_FETCH_PARTITION = frozenset({"partition", "offset", "max_bytes"})


@dataclass(frozen=True, slots=True, kw_only=True)
class FetchPartition:
    partition: int
    offset: int
    max_bytes: int = 1 << 20

    def to_wire(self) -> dict[str, object]:
        return {"partition": self.partition, "offset": self.offset, "max_bytes": self.max_bytes}

    @classmethod
    def from_wire(cls, value: object, path: str) -> FetchPartition:
        b = s.fields(value, path, _FETCH_PARTITION)
        return cls(
            partition=s.partition(b["partition"], s.at(path, "partition")),
            offset=s.int64(b["offset"], s.at(path, "offset")),
            max_bytes=s.int32(b["max_bytes"], s.at(path, "max_bytes"), 0),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class FetchTopic:
    name: str
    partitions: tuple[FetchPartition, ...]

    def to_wire(self) -> dict[str, object]:
        return {"name": self.name, "partitions": [p.to_wire() for p in self.partitions]}

    @classmethod
    def from_wire(cls, value: object, path: str, limits: Limits) -> FetchTopic:
        b = s.fields(value, path, _NAME_PARTITIONS)
        parts_path = s.at(path, "partitions")
        partitions = tuple(
            FetchPartition.from_wire(v, s.item(parts_path, i))
            for i, v in enumerate(s.array(b["partitions"], parts_path, limits))
        )
        s.unique([p.partition for p in partitions], parts_path, "partition")
        return cls(name=s.topic(b["name"], s.at(path, "name"), limits), partitions=partitions)


_FETCH_REQUEST = s.Shape(
    "max_wait_ms", "min_bytes", "max_bytes", "isolation", "topics", added={2: ("trace_context",)}
)


@dataclass(frozen=True, slots=True, kw_only=True)
class FetchRequest:
    API_KEY: ClassVar[ApiKey] = ApiKey.FETCH
    topics: tuple[FetchTopic, ...]
    max_wait_ms: int = 500
    min_bytes: int = 1
    max_bytes: int = 50 << 20
    isolation: IsolationLevel = IsolationLevel.READ_COMMITTED
    trace_context: str | None = None
    """v2: the W3C traceparent of the client's span that asks (checked like PRODUCE's);
    None when there is none or below v2."""

    def to_body(self, version: int) -> dict[str, object]:
        return _FETCH_REQUEST.write(
            {
                "max_wait_ms": self.max_wait_ms,
                "min_bytes": self.min_bytes,
                "max_bytes": self.max_bytes,
                "isolation": int(self.isolation),
                "topics": [t.to_wire() for t in self.topics],
                "trace_context": self.trace_context,
            },
            version,
        )

    @classmethod
    def from_body(cls, body: object, version: int, limits: Limits = DEFAULT_LIMITS) -> FetchRequest:
        b = _FETCH_REQUEST.read(body, "", version)
        topics = tuple(
            FetchTopic.from_wire(v, s.item("topics", i), limits)
            for i, v in enumerate(s.array(b["topics"], "topics", limits))
        )
        s.unique([t.name for t in topics], "topics", "topic")
        return cls(
            max_wait_ms=s.int32(b["max_wait_ms"], "max_wait_ms", 0),
            min_bytes=s.int32(b["min_bytes"], "min_bytes", 0),
            max_bytes=s.int32(b["max_bytes"], "max_bytes", 0),
            isolation=_isolation(b["isolation"], "isolation"),
            topics=topics,
            trace_context=s.trace_context(b),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class FetchedBatch:
    """A stored batch and the offset of its first record (offsets are assigned at apply, so
    they travel beside the batch, not inside it). On the wire: [base_offset, bytes]."""

    base_offset: int
    data: bytes

    def to_wire(self) -> list[object]:
        return [self.base_offset, _bytes(self.data)]

    @classmethod
    def from_wire(cls, value: object, path: str, limits: Limits) -> FetchedBatch:
        items = s.array(value, path, limits)
        if len(items) != 2:
            s.fail(path, f"expected [base_offset, bytes], got {len(items)} items")
        return cls(
            base_offset=s.int64(items[0], s.item(path, 0), 0),
            data=s.byte_string(items[1], s.item(path, 1)),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class AbortedTransaction:
    """An aborted transaction whose records a fetch answer may hold: its producer and the
    offset of its first record. On the wire: [producer_id, first_offset]."""

    producer_id: int
    first_offset: int

    def to_wire(self) -> list[object]:
        return [self.producer_id, self.first_offset]

    @classmethod
    def from_wire(cls, value: object, path: str, limits: Limits) -> AbortedTransaction:
        items = s.array(value, path, limits)
        if len(items) != 2:
            s.fail(path, f"expected [producer_id, first_offset], got {len(items)} items")
        return cls(
            producer_id=s.int64(items[0], s.item(path, 0), 0),
            first_offset=s.int64(items[1], s.item(path, 1), 0),
        )


_FETCH_PARTITION_RESULT = s.Shape(
    "partition",
    "error",
    "message",
    "high_watermark",
    "last_stable_offset",
    "log_start_offset",
    "batches",
    "leader",
    "leader_term",
    added={1: ("next_offset", "aborted_transactions")},
)


@dataclass(frozen=True, slots=True, kw_only=True)
class FetchPartitionResult:
    partition: int
    error: ErrorCode = ErrorCode.NONE
    message: str | None = None
    high_watermark: int = -1
    last_stable_offset: int = -1
    log_start_offset: int = -1
    batches: tuple[FetchedBatch, ...] = ()
    leader: int | None = None
    """With a leadership error: the leader hint, as in ProducePartitionResult."""
    leader_term: int = -1
    next_offset: int | None = None
    """v1: the offset to fetch next: one past the last returned batch's last offset, or the
    requested offset when no batch was returned (any int64, as a requested offset is; the
    broker always sets it at v1). None in a v0 answer (the consumer computes it from the
    batches)."""
    aborted_transactions: tuple[AbortedTransaction, ...] = ()
    """v1: the aborted transactions among the returned batches, for a read_committed reader
    to drop. Always empty until transactions exist; empty in a v0 answer."""

    def to_wire(self, version: int) -> dict[str, object]:
        return _FETCH_PARTITION_RESULT.write(
            {
                "partition": self.partition,
                "error": int(self.error),
                "message": short_message(self.message),
                "high_watermark": self.high_watermark,
                "last_stable_offset": self.last_stable_offset,
                "log_start_offset": self.log_start_offset,
                "batches": [b.to_wire() for b in self.batches],
                "leader": self.leader,
                "leader_term": self.leader_term,
                "next_offset": self.next_offset,
                "aborted_transactions": [a.to_wire() for a in self.aborted_transactions],
            },
            version,
        )

    @classmethod
    def from_wire(
        cls, value: object, path: str, version: int, limits: Limits
    ) -> FetchPartitionResult:
        b = _FETCH_PARTITION_RESULT.read(value, path, version)
        batches_path = s.at(path, "batches")
        aborted_path = s.at(path, "aborted_transactions")
        return cls(
            partition=s.partition(b["partition"], s.at(path, "partition")),
            error=s.error_code(b["error"], s.at(path, "error")),
            message=s.opt_text(b["message"], s.at(path, "message")),
            high_watermark=s.int64(b["high_watermark"], s.at(path, "high_watermark"), -1),
            last_stable_offset=s.int64(
                b["last_stable_offset"], s.at(path, "last_stable_offset"), -1
            ),
            log_start_offset=s.int64(b["log_start_offset"], s.at(path, "log_start_offset"), -1),
            batches=tuple(
                FetchedBatch.from_wire(v, s.item(batches_path, i), limits)
                for i, v in enumerate(s.array(b["batches"], batches_path, limits))
            ),
            leader=s.opt_int32(b["leader"], s.at(path, "leader"), 0),
            leader_term=s.int64(b["leader_term"], s.at(path, "leader_term"), -1),
            next_offset=(
                s.int64(b["next_offset"], s.at(path, "next_offset")) if "next_offset" in b else None
            ),
            aborted_transactions=(
                tuple(
                    AbortedTransaction.from_wire(v, s.item(aborted_path, i), limits)
                    for i, v in enumerate(s.array(b["aborted_transactions"], aborted_path, limits))
                )
                if "aborted_transactions" in b
                else ()
            ),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class FetchTopicResult:
    name: str
    partitions: tuple[FetchPartitionResult, ...]

    def to_wire(self, version: int) -> dict[str, object]:
        return {"name": self.name, "partitions": [p.to_wire(version) for p in self.partitions]}

    @classmethod
    def from_wire(cls, value: object, path: str, version: int, limits: Limits) -> FetchTopicResult:
        b = s.fields(value, path, _NAME_PARTITIONS)
        parts_path = s.at(path, "partitions")
        return cls(
            name=s.topic(b["name"], s.at(path, "name"), limits),
            partitions=tuple(
                FetchPartitionResult.from_wire(v, s.item(parts_path, i), version, limits)
                for i, v in enumerate(s.array(b["partitions"], parts_path, limits))
            ),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class FetchResponse:
    API_KEY: ClassVar[ApiKey] = ApiKey.FETCH
    topics: tuple[FetchTopicResult, ...]

    def to_body(self, version: int) -> dict[str, object]:
        return {"topics": [t.to_wire(version) for t in self.topics]}

    @classmethod
    def from_body(
        cls, body: object, version: int, limits: Limits = DEFAULT_LIMITS
    ) -> FetchResponse:
        b = s.fields(body, "", _TOPICS)
        return cls(
            topics=tuple(
                FetchTopicResult.from_wire(v, s.item("topics", i), version, limits)
                for i, v in enumerate(s.array(b["topics"], "topics", limits))
            )
        )


# --------------------------------------------------------------------------- LIST_OFFSETS

_LIST_OFFSETS_PARTITION = frozenset({"partition", "timestamp"})


@dataclass(frozen=True, slots=True, kw_only=True)
class ListOffsetsPartition:
    """`timestamp`: LATEST_TIMESTAMP (-1) for the next offset to be written, EARLIEST_TIMESTAMP
    (-2) for the log start, t >= 0 for the first offset whose batch max timestamp is >= t."""

    partition: int
    timestamp: int = LATEST_TIMESTAMP

    def to_wire(self) -> dict[str, object]:
        return {"partition": self.partition, "timestamp": self.timestamp}

    @classmethod
    def from_wire(cls, value: object, path: str) -> ListOffsetsPartition:
        b = s.fields(value, path, _LIST_OFFSETS_PARTITION)
        return cls(
            partition=s.partition(b["partition"], s.at(path, "partition")),
            timestamp=s.int64(b["timestamp"], s.at(path, "timestamp"), EARLIEST_TIMESTAMP),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ListOffsetsTopic:
    name: str
    partitions: tuple[ListOffsetsPartition, ...]

    def to_wire(self) -> dict[str, object]:
        return {"name": self.name, "partitions": [p.to_wire() for p in self.partitions]}

    @classmethod
    def from_wire(cls, value: object, path: str, limits: Limits) -> ListOffsetsTopic:
        b = s.fields(value, path, _NAME_PARTITIONS)
        parts_path = s.at(path, "partitions")
        partitions = tuple(
            ListOffsetsPartition.from_wire(v, s.item(parts_path, i))
            for i, v in enumerate(s.array(b["partitions"], parts_path, limits))
        )
        s.unique([p.partition for p in partitions], parts_path, "partition")
        return cls(name=s.topic(b["name"], s.at(path, "name"), limits), partitions=partitions)


_LIST_OFFSETS_REQUEST = frozenset({"isolation", "topics"})


@dataclass(frozen=True, slots=True, kw_only=True)
class ListOffsetsRequest:
    API_KEY: ClassVar[ApiKey] = ApiKey.LIST_OFFSETS
    topics: tuple[ListOffsetsTopic, ...]
    isolation: IsolationLevel = IsolationLevel.READ_COMMITTED

    def to_body(self, version: int) -> dict[str, object]:
        return {"isolation": int(self.isolation), "topics": [t.to_wire() for t in self.topics]}

    @classmethod
    def from_body(
        cls, body: object, version: int, limits: Limits = DEFAULT_LIMITS
    ) -> ListOffsetsRequest:
        b = s.fields(body, "", _LIST_OFFSETS_REQUEST)
        topics = tuple(
            ListOffsetsTopic.from_wire(v, s.item("topics", i), limits)
            for i, v in enumerate(s.array(b["topics"], "topics", limits))
        )
        s.unique([t.name for t in topics], "topics", "topic")
        return cls(isolation=_isolation(b["isolation"], "isolation"), topics=topics)


_LIST_OFFSETS_PARTITION_RESULT = frozenset({"partition", "error", "offset", "timestamp"})


@dataclass(frozen=True, slots=True, kw_only=True)
class ListOffsetsPartitionResult:
    partition: int
    error: ErrorCode = ErrorCode.NONE
    offset: int = -1
    timestamp: int = -1

    def to_wire(self) -> dict[str, object]:
        return {
            "partition": self.partition,
            "error": int(self.error),
            "offset": self.offset,
            "timestamp": self.timestamp,
        }

    @classmethod
    def from_wire(cls, value: object, path: str) -> ListOffsetsPartitionResult:
        b = s.fields(value, path, _LIST_OFFSETS_PARTITION_RESULT)
        return cls(
            partition=s.partition(b["partition"], s.at(path, "partition")),
            error=s.error_code(b["error"], s.at(path, "error")),
            offset=s.int64(b["offset"], s.at(path, "offset"), -1),
            timestamp=s.int64(b["timestamp"], s.at(path, "timestamp")),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ListOffsetsTopicResult:
    name: str
    partitions: tuple[ListOffsetsPartitionResult, ...]

    def to_wire(self) -> dict[str, object]:
        return {"name": self.name, "partitions": [p.to_wire() for p in self.partitions]}

    @classmethod
    def from_wire(cls, value: object, path: str, limits: Limits) -> ListOffsetsTopicResult:
        b = s.fields(value, path, _NAME_PARTITIONS)
        parts_path = s.at(path, "partitions")
        return cls(
            name=s.topic(b["name"], s.at(path, "name"), limits),
            partitions=tuple(
                ListOffsetsPartitionResult.from_wire(v, s.item(parts_path, i))
                for i, v in enumerate(s.array(b["partitions"], parts_path, limits))
            ),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ListOffsetsResponse:
    API_KEY: ClassVar[ApiKey] = ApiKey.LIST_OFFSETS
    topics: tuple[ListOffsetsTopicResult, ...]

    def to_body(self, version: int) -> dict[str, object]:
        return {"topics": [t.to_wire() for t in self.topics]}

    @classmethod
    def from_body(
        cls, body: object, version: int, limits: Limits = DEFAULT_LIMITS
    ) -> ListOffsetsResponse:
        b = s.fields(body, "", _TOPICS)
        return cls(
            topics=tuple(
                ListOffsetsTopicResult.from_wire(v, s.item("topics", i), limits)
                for i, v in enumerate(s.array(b["topics"], "topics", limits))
            )
        )


# --------------------------------------------------------------------------- INIT_PRODUCER_ID

_INIT_PRODUCER_ID_REQUEST = s.Shape(
    "transactional_id", "producer_id", "producer_epoch", added={1: ("transaction_timeout_ms",)}
)


@dataclass(frozen=True, slots=True, kw_only=True)
class InitProducerIdRequest:
    """A new producer sends producer_id = producer_epoch = -1; a producer that must bump its
    epoch (after a batch failed for good) sends its current id and epoch."""

    API_KEY: ClassVar[ApiKey] = ApiKey.INIT_PRODUCER_ID
    transactional_id: str | None = None
    producer_id: int = -1
    producer_epoch: int = -1
    transaction_timeout_ms: int = DEFAULT_TRANSACTION_TIMEOUT_MS
    """v1: how long a transaction of this transactional id may stay open before its
    coordinator aborts it (1 .. 2**31-1; the broker may refuse more than its maximum). A v0
    request reads as DEFAULT_TRANSACTION_TIMEOUT_MS."""

    def to_body(self, version: int) -> dict[str, object]:
        return _INIT_PRODUCER_ID_REQUEST.write(
            {
                "transactional_id": self.transactional_id,
                "producer_id": self.producer_id,
                "producer_epoch": self.producer_epoch,
                "transaction_timeout_ms": self.transaction_timeout_ms,
            },
            version,
        )

    @classmethod
    def from_body(
        cls, body: object, version: int, limits: Limits = DEFAULT_LIMITS
    ) -> InitProducerIdRequest:
        b = _INIT_PRODUCER_ID_REQUEST.read(body, "", version)
        return cls(
            transactional_id=s.opt_nonempty_text(b["transactional_id"], "transactional_id"),
            producer_id=s.int64(b["producer_id"], "producer_id", -1),
            producer_epoch=s.int16(b["producer_epoch"], "producer_epoch", -1),
            transaction_timeout_ms=(
                s.int32(b["transaction_timeout_ms"], "transaction_timeout_ms", 1)
                if "transaction_timeout_ms" in b
                else DEFAULT_TRANSACTION_TIMEOUT_MS
            ),
        )


_INIT_PRODUCER_ID_RESPONSE = frozenset({"producer_id", "producer_epoch"})


@dataclass(frozen=True, slots=True, kw_only=True)
class InitProducerIdResponse:
    API_KEY: ClassVar[ApiKey] = ApiKey.INIT_PRODUCER_ID
    producer_id: int
    producer_epoch: int

    def to_body(self, version: int) -> dict[str, object]:
        return {"producer_id": self.producer_id, "producer_epoch": self.producer_epoch}

    @classmethod
    def from_body(
        cls, body: object, version: int, limits: Limits = DEFAULT_LIMITS
    ) -> InitProducerIdResponse:
        b = s.fields(body, "", _INIT_PRODUCER_ID_RESPONSE)
        return cls(
            producer_id=s.int64(b["producer_id"], "producer_id", 0),
            producer_epoch=s.int16(b["producer_epoch"], "producer_epoch", 0),
        )


# --------------------------------------------------------------------------- DESCRIBE_CLUSTER


@dataclass(frozen=True, slots=True, kw_only=True)
class DescribeClusterRequest:
    """The whole cluster as the answering broker sees it (any broker answers: every broker
    follows the metadata log; only the controller hears every leader's replica report)."""

    API_KEY: ClassVar[ApiKey] = ApiKey.DESCRIBE_CLUSTER

    def to_body(self, version: int) -> dict[str, object]:
        return {}

    @classmethod
    def from_body(
        cls, body: object, version: int, limits: Limits = DEFAULT_LIMITS
    ) -> DescribeClusterRequest:
        s.fields(body, "", frozenset())
        return cls()


_CLUSTER_BROKER = frozenset({"id", "host", "port", "rack", "alive"})


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterBroker:
    """A registered broker and whether the controller holds it alive."""

    id: int
    host: str
    port: int
    rack: str | None
    alive: bool
    """False once the controller marked it failed (its lease expired without a heartbeat)."""

    def to_wire(self) -> dict[str, object]:
        return {
            "id": self.id,
            "host": self.host,
            "port": self.port,
            "rack": self.rack,
            "alive": self.alive,
        }

    @classmethod
    def from_wire(cls, value: object, path: str) -> ClusterBroker:
        b = s.fields(value, path, _CLUSTER_BROKER)
        return cls(
            id=s.int32(b["id"], s.at(path, "id"), 0),
            host=s.nonempty_text(b["host"], s.at(path, "host")),
            port=s.integer(b["port"], s.at(path, "port"), 0, PORT_MAX),
            rack=s.opt_text(b["rack"], s.at(path, "rack")),
            alive=s.boolean(b["alive"], s.at(path, "alive")),
        )


_CLUSTER_PARTITION = frozenset(
    {"topic", "partition", "leader", "leader_term", "replicas", "caught_up", "commit_lag"}
)


def _node_ids(value: object, path: str, limits: Limits) -> tuple[int, ...]:
    """A list of distinct node ids."""
    ids = [s.int32(v, s.item(path, i), 0) for i, v in enumerate(s.array(value, path, limits))]
    s.unique(ids, path, "node id")
    return tuple(ids)


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterPartition:
    """One partition's replication state. Unknown values: `leader` None, `leader_term` -1,
    `commit_lag` -1 (a broker knows the replica lag only of groups it leads, and the
    controller of every group whose leader reported it)."""

    topic: str
    partition: int
    leader: int | None
    leader_term: int
    replicas: tuple[int, ...]
    """The assigned replicas, the preferred leader first."""
    caught_up: tuple[int, ...]
    """Replicas holding every committed entry (empty when unknown)."""
    commit_lag: int
    """Committed entries the slowest replica lacks (0: all caught up)."""

    def to_wire(self) -> dict[str, object]:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "leader": self.leader,
            "leader_term": self.leader_term,
            "replicas": list(self.replicas),
            "caught_up": list(self.caught_up),
            "commit_lag": self.commit_lag,
        }

    @classmethod
    def from_wire(cls, value: object, path: str, limits: Limits) -> ClusterPartition:
        b = s.fields(value, path, _CLUSTER_PARTITION)
        return cls(
            topic=s.topic(b["topic"], s.at(path, "topic"), limits),
            partition=s.partition(b["partition"], s.at(path, "partition")),
            leader=s.opt_int32(b["leader"], s.at(path, "leader"), 0),
            leader_term=s.int64(b["leader_term"], s.at(path, "leader_term"), -1),
            replicas=_node_ids(b["replicas"], s.at(path, "replicas"), limits),
            caught_up=_node_ids(b["caught_up"], s.at(path, "caught_up"), limits),
            commit_lag=s.int64(b["commit_lag"], s.at(path, "commit_lag"), -1),
        )


_DESCRIBE_CLUSTER_RESPONSE = frozenset({"cluster_id", "controller", "brokers", "partitions"})


@dataclass(frozen=True, slots=True, kw_only=True)
class DescribeClusterResponse:
    """Brokers (no id twice) and partitions (no (topic, partition) twice); the broker sends
    both sorted, brokers by id and partitions by (topic, partition)."""

    API_KEY: ClassVar[ApiKey] = ApiKey.DESCRIBE_CLUSTER
    cluster_id: str | None
    controller: int | None
    """The node id of the metadata group's leader, None while there is none."""
    brokers: tuple[ClusterBroker, ...]
    partitions: tuple[ClusterPartition, ...]

    def to_body(self, version: int) -> dict[str, object]:
        return {
            "cluster_id": self.cluster_id,
            "controller": self.controller,
            "brokers": [b.to_wire() for b in self.brokers],
            "partitions": [p.to_wire() for p in self.partitions],
        }

    @classmethod
    def from_body(
        cls, body: object, version: int, limits: Limits = DEFAULT_LIMITS
    ) -> DescribeClusterResponse:
        b = s.fields(body, "", _DESCRIBE_CLUSTER_RESPONSE)
        brokers = tuple(
            ClusterBroker.from_wire(v, s.item("brokers", i))
            for i, v in enumerate(s.array(b["brokers"], "brokers", limits))
        )
        s.unique([br.id for br in brokers], "brokers", "broker")
        partitions = tuple(
            ClusterPartition.from_wire(v, s.item("partitions", i), limits)
            for i, v in enumerate(s.array(b["partitions"], "partitions", limits))
        )
        s.unique([(p.topic, p.partition) for p in partitions], "partitions", "partition")
        return cls(
            cluster_id=s.opt_text(b["cluster_id"], "cluster_id"),
            controller=s.opt_int32(b["controller"], "controller", 0),
            brokers=brokers,
            partitions=partitions,
        )


# --------------------------------------------------------------------------- ELECT_LEADERS

_ELECT_LEADERS_REQUEST = frozenset({"topics"})


@dataclass(frozen=True, slots=True, kw_only=True)
class ElectLeadersRequest:
    """Preferred-leader election (Kafka's ElectLeaders of type PREFERRED): the controller runs
    a leader-balancing pass now, asking the leaders of partitions whose preferred replica (the
    first of the replica list) is alive, caught up and not leading to hand leadership to it,
    a bounded number at a time. `topics` None: every topic. Only the controller answers (any
    other broker: NOT_CONTROLLER); the answer comes once the transfers are asked, not done."""

    API_KEY: ClassVar[ApiKey] = ApiKey.ELECT_LEADERS
    topics: tuple[str, ...] | None = None

    def to_body(self, version: int) -> dict[str, object]:
        return {"topics": None if self.topics is None else list(self.topics)}

    @classmethod
    def from_body(
        cls, body: object, version: int, limits: Limits = DEFAULT_LIMITS
    ) -> ElectLeadersRequest:
        b = s.fields(body, "", _ELECT_LEADERS_REQUEST)
        return cls(topics=_topic_names(b["topics"], limits))


_PREFERRED_LEADER = frozenset({"topic", "partition", "leader", "preferred"})


@dataclass(frozen=True, slots=True, kw_only=True)
class PreferredLeader:
    """A partition's leader (None: none known) and its preferred replica."""

    topic: str
    partition: int
    leader: int | None
    preferred: int

    def to_wire(self) -> dict[str, object]:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "leader": self.leader,
            "preferred": self.preferred,
        }

    @classmethod
    def from_wire(cls, value: object, path: str, limits: Limits) -> PreferredLeader:
        b = s.fields(value, path, _PREFERRED_LEADER)
        return cls(
            topic=s.topic(b["topic"], s.at(path, "topic"), limits),
            partition=s.partition(b["partition"], s.at(path, "partition")),
            leader=s.opt_int32(b["leader"], s.at(path, "leader"), 0),
            preferred=s.int32(b["preferred"], s.at(path, "preferred"), 0),
        )


def _preferred_leaders(value: object, path: str, limits: Limits) -> tuple[PreferredLeader, ...]:
    items = tuple(
        PreferredLeader.from_wire(v, s.item(path, i), limits)
        for i, v in enumerate(s.array(value, path, limits))
    )
    s.unique([(p.topic, p.partition) for p in items], path, "partition")
    return items


_ELECT_LEADERS_RESPONSE = frozenset({"transfers", "pending"})


@dataclass(frozen=True, slots=True, kw_only=True)
class ElectLeadersResponse:
    """`transfers`: the transfers this pass asked (leader -> preferred); `pending`: every
    partition still off its alive preferred replica (those just asked included), so empty
    means balanced. Both sorted by (topic, partition)."""

    API_KEY: ClassVar[ApiKey] = ApiKey.ELECT_LEADERS
    transfers: tuple[PreferredLeader, ...]
    pending: tuple[PreferredLeader, ...]

    def to_body(self, version: int) -> dict[str, object]:
        return {
            "transfers": [p.to_wire() for p in self.transfers],
            "pending": [p.to_wire() for p in self.pending],
        }

    @classmethod
    def from_body(
        cls, body: object, version: int, limits: Limits = DEFAULT_LIMITS
    ) -> ElectLeadersResponse:
        b = s.fields(body, "", _ELECT_LEADERS_RESPONSE)
        return cls(
            transfers=_preferred_leaders(b["transfers"], "transfers", limits),
            pending=_preferred_leaders(b["pending"], "pending", limits),
        )


Request: TypeAlias = (
    ApiVersionsRequest
    | MetadataRequest
    | CreateTopicsRequest
    | DeleteTopicsRequest
    | ProduceRequest
    | FetchRequest
    | ListOffsetsRequest
    | InitProducerIdRequest
    | DescribeClusterRequest
    | FindCoordinatorRequest
    | GroupHeartbeatRequest
    | OffsetCommitRequest
    | OffsetFetchRequest
    | ListGroupsRequest
    | DescribeGroupsRequest
    | DeleteGroupsRequest
    | AddPartitionsToTxnRequest
    | AddOffsetsToTxnRequest
    | TxnOffsetCommitRequest
    | EndTxnRequest
    | DescribeTransactionsRequest
    | ListTransactionsRequest
    | AbortTransactionRequest
    | ElectLeadersRequest
    | RebalanceRequest
    | DescribeReassignmentsRequest
    | AlterTopicRequest
)

Response: TypeAlias = (
    ApiVersionsResponse
    | MetadataResponse
    | CreateTopicsResponse
    | DeleteTopicsResponse
    | ProduceResponse
    | FetchResponse
    | ListOffsetsResponse
    | InitProducerIdResponse
    | DescribeClusterResponse
    | FindCoordinatorResponse
    | GroupHeartbeatResponse
    | OffsetCommitResponse
    | OffsetFetchResponse
    | ListGroupsResponse
    | DescribeGroupsResponse
    | DeleteGroupsResponse
    | AddPartitionsToTxnResponse
    | AddOffsetsToTxnResponse
    | TxnOffsetCommitResponse
    | EndTxnResponse
    | DescribeTransactionsResponse
    | ListTransactionsResponse
    | AbortTransactionResponse
    | ElectLeadersResponse
    | RebalanceResponse
    | DescribeReassignmentsResponse
    | AlterTopicResponse
)
