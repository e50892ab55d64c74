"""Structured fuzzing of every decoder that reads untrusted bytes.

Each decoder is fed valid encodings damaged by `tests.unit.cbor_mutations`, in two ways:

- hypothesis draws (`mutated_documents`): up to three tree mutations of the decoded document
  (type confusion, range edges, transplanted nodes, lookalikes, deep nesting, list and map
  edits), then cbor2's encoding or a hand-written unusual one (non-shortest heads,
  indefinite lengths, duplicate keys), then up to two byte mutations (bit flips, planted
  initial bytes, truncation, splices); most inputs get past the first CBOR byte and reach
  the schema checks behind it;
- a deterministic sweep (`single_mutations`, the `..._for_every_single_substitution` tests)
  of every document one change away from each seed: each node replaced by each value of a
  palette (every CBOR type, both sides of every integer range edge) and by its lookalikes,
  each list item deleted or duplicated, each map entry deleted or given an int key. Random
  search rarely hits one exact node with one exact value; the sweep hits them all, and
  prints a reproducing payload for each failure.

The same check function runs on both. What the tests establish, for every input:

- `decode_request` (`check_request`): only WireError escapes, with a code the protocol
  documents; the error carries the correlation id the envelope named whenever the
  envelope's first items are intact, and never an id the payload did not name; an accepted
  payload is exactly what `encode_request` writes for the decoded request at its version
  (but an API_VERSIONS request outside its range, decoded without its body for the answer
  that lists the ranges). A consumer-group request in a valid envelope whose body was
  damaged (`check_group_body`) is refused with INVALID_REQUEST exactly (INVALID_TOPIC when
  what is wrong is a topic name the naming rule refuses), whenever the document is still
  well-formed CBOR.
- `decode_response` (`check_response`): only WireError escapes, with the same correlation-id
  rule; a body comes with error NONE or with the API_VERSIONS refusal only; an accepted
  response re-encodes to one that decodes equal.
- `peer_codec.decode_frame` (`check_peer_frame`): only PeerProtocolError escapes; every
  decoded Raft message keeps the promises of the codec's module docstring (checked by
  `raft_promise_violations`, itself tested on hand-made violations); a decoded frame
  re-encodes to one that decodes equal. `check_peer_frame_is_strict`: an accepted frame is
  what the encoder writes for the decoded value (up to the order and repetition of
  configuration members), i.e. "shapes and types are checked".
- `FrameDecoder`: a stream of frames, bad length prefixes and garbage, split anywhere, yields
  exactly the frames and the error a reference parser finds; only WireError escapes, errors
  are sticky, and once drained it holds at most one partial frame, within the limit that
  applied to its header (also across `set_limits`); `at_boundary` is True exactly when no
  partial frame was received.
- `batch.parse_header` (the broker's check of produced and replicated batches) raises only
  BatchError with its two codes, `batch.decode_records` (the client's decoding of fetched
  batches) only CorruptBatchError; what they accept keeps the header's and the records'
  invariants and re-encodes equal.
- `cbor.decode` (`check_cbor`): only WireError escapes; an accepted document is plain data
  within every limit, equals cbor2's permissive reading and reads the same at an offset;
  with `prescan=False`, still only WireError.

`SLUICE_FUZZ_SCALE=<n>` multiplies every hypothesis budget for a longer campaign.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import math
import os
import struct
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from broker.core.peer_codec import (
    HEARTBEAT,
    HEARTBEAT_OK,
    HELLO,
    HELLO_OK,
    MAX_CORRELATION_ID,
    MAX_FEATURE,
    MAX_INCARNATION,
    MAX_INDEX,
    MAX_KIND,
    MAX_MESSAGE,
    MAX_NODE_ID,
    MAX_SESSION,
    PEER_LIMITS,
    PEER_REQUEST,
    PEER_RESPONSE,
    RAFT,
    REJECT,
    BrokerHeartbeat,
    HeartbeatAck,
    Hello,
    PeerProtocolError,
    PeerRequest,
    PeerResponse,
    decode_frame,
    encode_heartbeat,
    encode_heartbeat_ack,
    encode_hello,
    encode_peer_request,
    encode_peer_response,
    encode_raft,
    encode_reject,
)
from broker.core.raft import ConfState, Entry, EntryKind
from broker.core.raft.types import (
    AppendEntries,
    AppendResponse,
    ConfVouch,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    ReadIndexRequest,
    ReadIndexResponse,
    RequestVote,
    SnapshotMeta,
    SnapshotResponse,
    TimeoutNow,
    TransferLeader,
    VoteResponse,
)
from broker.wire import cbor
from broker.wire.api import SUPPORTED_VERSIONS, ApiKey
from broker.wire.batch import (
    HEADER_BYTES as BATCH_HEADER_BYTES,
)
from broker.wire.batch import (
    SLUICE_MAGIC,
    BatchHeader,
    Record,
    decode_records,
    encode_batch,
    parse_header,
)
from broker.wire.errors import BatchError, CorruptBatchError, ErrorCode, WireError
from broker.wire.frames import HEADER_BYTES, FrameDecoder, encode_frame
from broker.wire.group_messages import (
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
)
from broker.wire.limits import DEFAULT_LIMITS, INT32_MAX, INT32_MIN, INT64_MAX, INT64_MIN, Limits
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
    REQUEST_TYPES,
    RESPONSE_TYPES,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
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
    ListedTransaction,
    ListTransactionsRequest,
    ListTransactionsResponse,
    TransactionDescription,
    TxnOffsetCommitRequest,
    TxnOffsetCommitResponse,
    TxnParticipantInfo,
    TxnSequence,
    TxnTopic,
)
from tests.unit.cbor_mutations import (
    INTERESTING_INTS,
    mutate_bytes,
    mutate_tree,
    mutated_documents,
    single_mutations,
)

SCALE = float(os.environ.get("SLUICE_FUZZ_SCALE", "1"))
"""Multiplies every test's example budget: `SLUICE_FUZZ_SCALE=50 pytest <this file>` runs a
longer campaign; the default keeps the file at about 15 s."""


def fuzz(examples: int) -> settings:
    return settings(
        max_examples=max(1, int(examples * SCALE)),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


TIGHT_LIMITS = Limits(
    max_frame_bytes=1024,
    max_nesting=5,
    max_array_items=4,
    max_map_items=7,
    max_frame_items=80,
    max_text_bytes=40,
    max_topic_name=8,
    max_client_id=6,
    max_batch_records=3,
    max_batch_bytes=600,
)
"""Small enough that the valid seeds hit every limit; DEFAULT_LIMITS lets them through."""

_limits = st.sampled_from([DEFAULT_LIMITS, TIGHT_LIMITS])


def exactly_equal(a: object, b: object) -> bool:
    """Equality that also requires equal types at every level (True is not 1, 1.0 is not 1)
    and compares floats by their bits (so NaN equals NaN)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        assert isinstance(b, float)
        return struct.pack(">d", a) == struct.pack(">d", b) or (math.isnan(a) and math.isnan(b))
    if isinstance(a, list):
        assert isinstance(b, list)
        return len(a) == len(b) and all(exactly_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        assert isinstance(b, dict)
        return a.keys() == b.keys() and all(exactly_equal(a[k], b[k]) for k in a)
    return a == b


# --------------------------------------------------------------------------- seeds

T0 = 1_700_000_000_000


def _batch(count: int, **producer: Any) -> bytes:
    records = [
        Record(
            key=None if i % 3 == 0 else b"k%d" % i,
            value=b"v" * (i % 5) if i % 4 else None,
            headers=(("h", b"1"), ("h2", b"")) if i % 2 else (),
            timestamp=T0 + (i * 7) % 11 - 3,
        )
        for i in range(count)
    ]
    if records:
        records[0] = Record(key=b"first", value=b"x", timestamp=T0)
    return encode_batch(records, **producer)


SMALL_BATCH = _batch(2)
BATCHES: list[bytes] = [
    SMALL_BATCH,
    _batch(1),
    _batch(5, producer_id=7, producer_epoch=1, base_sequence=2**31 - 2),
    _batch(3, producer_id=0, producer_epoch=0, base_sequence=0, transactional=True),
    encode_batch(
        [Record(key=b"\x00\x00", value=b"\x00\x00\x00\x00\x00\x01", timestamp=T0)],
        producer_id=9,
        producer_epoch=2,
        transactional=True,
        control=True,
    ),
]
LARGE_BATCH = encode_batch([Record(value=bytes(400), timestamp=T0 + i) for i in range(180)])
"""Above the 64 KiB threshold at which decode_records scans the CBOR before building it."""
assert len(LARGE_BATCH) > 64 * 1024

REQUESTS: list[tuple[Request, int, str | None]] = [
    (ApiVersionsRequest(), 0, None),
    (MetadataRequest(), 1, "cli"),
    (MetadataRequest(topics=("orders", "a.b-c_d")), INT32_MAX, "é"),
    (
        CreateTopicsRequest(
            topics=(
                NewTopic(name="t1", partitions=3, replication_factor=2, config={"k": "v"}),
                NewTopic(name="t2"),
            ),
            timeout_ms=5000,
        ),
        INT32_MIN,
        "admin",
    ),
    (DeleteTopicsRequest(names=("t1", "t2"), timeout_ms=0), -1, None),
    (
        ProduceRequest(
            topics=(
                ProduceTopic(
                    name="orders",
                    partitions=(
                        ProducePartition(partition=0, batch=SMALL_BATCH),
                        ProducePartition(partition=INT32_MAX, batch=BATCHES[2]),
                    ),
                ),
            ),
            transactional_id="tx-1",
        ),
        77,
        "p",
    ),
    (
        FetchRequest(
            topics=(
                FetchTopic(
                    name="orders",
                    partitions=(
                        FetchPartition(partition=0, offset=5),
                        FetchPartition(partition=2, offset=INT64_MAX, max_bytes=0),
                    ),
                ),
            ),
            isolation=IsolationLevel.READ_UNCOMMITTED,
        ),
        12,
        "c",
    ),
    (
        ListOffsetsRequest(
            topics=(
                ListOffsetsTopic(
                    name="t",
                    partitions=(
                        ListOffsetsPartition(partition=0),
                        ListOffsetsPartition(partition=1, timestamp=-2),
                        ListOffsetsPartition(partition=2, timestamp=T0),
                    ),
                ),
            )
        ),
        3,
        None,
    ),
    (InitProducerIdRequest(), 4, None),
    (InitProducerIdRequest(transactional_id="tx", producer_id=7, producer_epoch=32767), 5, "c"),
    (DescribeClusterRequest(), 6, "ops"),
    # Consumer groups: every optional field set in one seed and unset in another, so the
    # sweep reaches each field's checks both ways (null and present).
    (FindCoordinatorRequest(key="grp-1"), 7, "c"),
    (FindCoordinatorRequest(key="tx-é", key_type=CoordinatorType.TRANSACTION), INT32_MAX, None),
    (
        GroupHeartbeatRequest(
            group_id="grp-1",
            member_id="m-4f2a",
            member_epoch=3,
            instance_id="host-a",
            client_host="/10.0.0.9",
            session_timeout_ms=45_000,
            topics=("orders", "audit"),
            pattern="ord.*",
            assignor="uniform",
            owned=(
                TopicPartitions(topic="orders", partitions=(0, INT32_MAX)),
                TopicPartitions(topic="audit", partitions=()),
            ),
        ),
        8,
        "c",
    ),
    (GroupHeartbeatRequest(group_id="g", member_id="m", member_epoch=-2), 9, None),
    (
        OffsetCommitRequest(
            group_id="grp-1",
            member_id="m-4f2a",
            member_epoch=3,
            topics=(
                CommitTopic(
                    topic="orders",
                    partitions=(
                        CommitPartition(partition=0, offset=INT64_MAX, metadata="m"),
                        CommitPartition(partition=1, offset=0),
                    ),
                ),
            ),
        ),
        10,
        "c",
    ),
    (
        OffsetCommitRequest(
            group_id="g",
            member_id="",
            member_epoch=-1,
            topics=(CommitTopic(topic="t", partitions=(CommitPartition(partition=2, offset=5),)),),
        ),
        11,
        "ops",
    ),
    (OffsetFetchRequest(group_id="grp-1"), 12, None),
    (
        OffsetFetchRequest(
            group_id="grp-1",
            topics=(
                TopicPartitions(topic="orders", partitions=(0, 1)),
                TopicPartitions(topic="audit", partitions=()),
            ),
        ),
        13,
        "c",
    ),
    (ListGroupsRequest(), 14, "ops"),
    (DescribeGroupsRequest(group_ids=("grp-1", "g")), 15, "ops"),
    (DeleteGroupsRequest(group_ids=("grp-1",)), 16, "ops"),
    # Transactions.
    (
        AddPartitionsToTxnRequest(
            transactional_id="tx-1",
            producer_id=7,
            producer_epoch=0,
            topics=(
                TxnTopic(name="orders", partitions=(0, INT32_MAX)),
                TxnTopic(name="audit", partitions=(3,)),
            ),
        ),
        17,
        "p",
    ),
    (
        AddOffsetsToTxnRequest(
            transactional_id="tx-é", producer_id=INT64_MAX, producer_epoch=32767, group_id="g"
        ),
        18,
        None,
    ),
    (
        TxnOffsetCommitRequest(
            transactional_id="tx-1",
            group_id="grp-1",
            producer_id=7,
            producer_epoch=1,
            member_id="m-4f2a",
            member_epoch=3,
            topics=(
                CommitTopic(
                    topic="orders",
                    partitions=(
                        CommitPartition(partition=0, offset=INT64_MAX, metadata="m"),
                        CommitPartition(partition=1, offset=0),
                    ),
                ),
            ),
        ),
        19,
        "p",
    ),
    (
        TxnOffsetCommitRequest(
            transactional_id="t",
            group_id="g",
            producer_id=0,
            producer_epoch=0,
            member_id="",
            member_epoch=-1,
            topics=(),
        ),
        20,
        None,
    ),
    (
        EndTxnRequest(
            transactional_id="tx-1",
            producer_id=7,
            producer_epoch=1,
            commit=True,
            sequences=(
                TxnSequence(topic="orders", partition=0, last_sequence=INT32_MAX),
                TxnSequence(topic="orders", partition=1, last_sequence=-1),
            ),
        ),
        21,
        "p",
    ),
    (
        EndTxnRequest(
            transactional_id="tx-1", producer_id=7, producer_epoch=1, commit=False, sequences=()
        ),
        22,
        None,
    ),
    (DescribeTransactionsRequest(transactional_ids=("tx-1", "tx-é")), 23, "ops"),
    (ListTransactionsRequest(), 24, "ops"),
    (ListTransactionsRequest(states=("ongoing", "pre_committed")), 25, None),
    (AbortTransactionRequest(transactional_id="tx-1"), 26, "ops"),
    (ElectLeadersRequest(), 27, "ops"),
    (ElectLeadersRequest(topics=("orders", "t")), 28, None),
    (RebalanceRequest(), 29, "ops"),
    (
        RebalanceRequest(execute=True, exclude=(3,), drain=(1,), throttle_bytes_per_s=1 << 20),
        30,
        None,
    ),
    (RebalanceRequest(execute=True, cancel=True), 31, "ops"),
    (DescribeReassignmentsRequest(), 32, "ops"),
    (
        AlterTopicRequest(
            name="orders", partitions=6, set_config={"retention.ms": "60000"}, delete_config=()
        ),
        33,
        "ops",
    ),
    (AlterTopicRequest(name="t", delete_config=("retention.bytes",)), 34, None),
]
assert {type(r) for r, _, _ in REQUESTS} == set(REQUEST_TYPES.values())
REQUEST_PAYLOADS = [encode_request(r, cid, client)[HEADER_BYTES:] for r, cid, client in REQUESTS]
TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _newest(request: Request) -> Request:
    if isinstance(request, ProduceRequest):
        return dataclasses.replace(request, trace_context=TRACE)
    if isinstance(request, InitProducerIdRequest):
        return dataclasses.replace(request, transaction_timeout_ms=INT32_MAX)
    return request


NEWER_REQUEST_PAYLOADS = [
    encode_request(_newest(r), cid, client, api_version=SUPPORTED_VERSIONS[r.API_KEY][1])[
        HEADER_BYTES:
    ]
    for r, cid, client in REQUESTS
    if SUPPORTED_VERSIONS[r.API_KEY][1] > 0
]
"""The requests of APIs past version 0 at their newest version (PRODUCE with a trace context,
INIT_PRODUCER_ID with a transaction timeout)."""
ALL_REQUEST_PAYLOADS = REQUEST_PAYLOADS + NEWER_REQUEST_PAYLOADS

RESPONSES: list[tuple[Response, int]] = [
    (
        ApiVersionsResponse(
            apis=(
                ApiVersionRange(api_key=0, min_version=0, max_version=0),
                ApiVersionRange(api_key=99, min_version=1, max_version=3),
            ),
            node_id=1,
            cluster_id="c-1",
        ),
        0,
    ),
    (
        MetadataResponse(
            cluster_id="c",
            controller=1,
            brokers=(
                BrokerInfo(id=1, host="h1", port=9092, rack="r"),
                BrokerInfo(id=2, host="h2", port=0),
            ),
            topics=(
                TopicInfo(
                    name="t",
                    partitions=(
                        PartitionInfo(partition=0, leader=1, leader_term=3, replicas=(1, 2)),
                        PartitionInfo(
                            partition=1,
                            leader=None,
                            leader_term=-1,
                            replicas=(),
                            error=ErrorCode.LEADER_NOT_AVAILABLE,
                        ),
                    ),
                    replication_factor=2,
                    config={"retention.ms": "1"},
                ),
                TopicInfo(name="gone", error=ErrorCode.UNKNOWN_TOPIC_OR_PARTITION),
            ),
        ),
        1,
    ),
    (
        CreateTopicsResponse(
            topics=(
                TopicResult(name="t"),
                TopicResult(name="u", error=ErrorCode.TOPIC_ALREADY_EXISTS, message="m"),
            )
        ),
        2,
    ),
    (DeleteTopicsResponse(topics=(TopicResult(name="t"),)), 3),
    (
        ProduceResponse(
            topics=(
                ProduceTopicResult(
                    name="orders",
                    partitions=(
                        ProducePartitionResult(partition=0, base_offset=10, log_start_offset=0),
                        ProducePartitionResult(
                            partition=1,
                            error=ErrorCode.NOT_LEADER_OR_FOLLOWER,
                            message="moved",
                            leader=2,
                            leader_term=5,
                        ),
                    ),
                ),
            )
        ),
        4,
    ),
    (
        FetchResponse(
            topics=(
                FetchTopicResult(
                    name="orders",
                    partitions=(
                        FetchPartitionResult(
                            partition=0,
                            high_watermark=10,
                            last_stable_offset=9,
                            log_start_offset=0,
                            batches=(
                                FetchedBatch(base_offset=3, data=SMALL_BATCH),
                                FetchedBatch(base_offset=5, data=BATCHES[3]),
                            ),
                        ),
                        FetchPartitionResult(partition=1, error=ErrorCode.OFFSET_OUT_OF_RANGE),
                    ),
                ),
            )
        ),
        5,
    ),
    (
        ListOffsetsResponse(
            topics=(
                ListOffsetsTopicResult(
                    name="t",
                    partitions=(ListOffsetsPartitionResult(partition=0, offset=5, timestamp=T0),),
                ),
            )
        ),
        6,
    ),
    (InitProducerIdResponse(producer_id=INT64_MAX, producer_epoch=0), 7),
    (
        DescribeClusterResponse(
            cluster_id=None,
            controller=None,
            brokers=(
                ClusterBroker(id=1, host="h", port=1, rack=None, alive=True),
                ClusterBroker(id=2, host="i", port=2, rack="r", alive=False),
            ),
            partitions=(
                ClusterPartition(
                    topic="t",
                    partition=0,
                    leader=1,
                    leader_term=2,
                    replicas=(1, 2),
                    caught_up=(1,),
                    commit_lag=0,
                ),
                ClusterPartition(
                    topic="t",
                    partition=1,
                    leader=None,
                    leader_term=-1,
                    replicas=(2,),
                    caught_up=(),
                    commit_lag=-1,
                ),
            ),
        ),
        INT32_MIN,
    ),
    (FindCoordinatorResponse(node_id=2, host="10.0.0.2", port=9092, partition=7), 9),
    (
        GroupHeartbeatResponse(
            member_id="m-4f2a",
            member_epoch=4,
            heartbeat_interval_ms=3_000,
            session_timeout_ms=45_000,
            assignment=(
                TopicPartitions(topic="orders", partitions=(0, 2)),
                TopicPartitions(topic="audit", partitions=()),
            ),
        ),
        10,
    ),
    (
        OffsetCommitResponse(
            topics=(
                TopicErrors(
                    topic="orders",
                    partitions=(
                        PartitionError(partition=0, error=ErrorCode.NONE),
                        PartitionError(
                            partition=1, error=ErrorCode.STALE_MEMBER_EPOCH, message="stale"
                        ),
                    ),
                ),
            )
        ),
        11,
    ),
    (
        OffsetFetchResponse(
            offsets=(
                CommittedOffset(topic="orders", partition=0, offset=10, metadata="m"),
                CommittedOffset(topic="orders", partition=1, offset=-1),
            )
        ),
        12,
    ),
    (
        ListGroupsResponse(
            groups=(
                ListedGroup(group_id="grp-1", state="stable", members=2),
                ListedGroup(group_id="g", state="empty", members=0),
            )
        ),
        13,
    ),
    (
        DescribeGroupsResponse(
            groups=(
                DescribedGroup(
                    group_id="grp-1",
                    state="reconciling",
                    assignor="uniform",
                    group_epoch=3,
                    members=(
                        DescribedMember(
                            member_id="m-4f2a",
                            instance_id="host-a",
                            client_id="c",
                            client_host="/10.0.0.9",
                            member_epoch=3,
                            topics=("orders",),
                            pattern="ord.*",
                            assignment=(TopicPartitions(topic="orders", partitions=(0,)),),
                            revoking=(TopicPartitions(topic="orders", partitions=(1,)),),
                        ),
                        DescribedMember(
                            member_id="m-2",
                            instance_id=None,
                            client_id=None,
                            client_host=None,
                            member_epoch=-2,
                            topics=(),
                            pattern=None,
                            assignment=(),
                            revoking=(),
                        ),
                    ),
                    rebalance_reason="member m-2 joined",
                    rebalance_time_ms=T0,
                ),
                DescribedGroup(
                    group_id="x", error=ErrorCode.GROUP_ID_NOT_FOUND, message="no such group"
                ),
            )
        ),
        14,
    ),
    (
        DeleteGroupsResponse(
            groups=(
                GroupResult(group_id="grp-1", error=ErrorCode.NONE),
                GroupResult(group_id="g", error=ErrorCode.NON_EMPTY_GROUP, message="live"),
            )
        ),
        15,
    ),
    (AddPartitionsToTxnResponse(), 16),
    (AddOffsetsToTxnResponse(), 17),
    (
        TxnOffsetCommitResponse(
            topics=(
                TopicErrors(
                    topic="orders",
                    partitions=(
                        PartitionError(partition=0, error=ErrorCode.NONE),
                        PartitionError(
                            partition=1, error=ErrorCode.UNKNOWN_MEMBER_ID, message="who"
                        ),
                    ),
                ),
            )
        ),
        18,
    ),
    (EndTxnResponse(producer_id=INT64_MAX, producer_epoch=0, reinit=True), 19),
    (
        DescribeTransactionsResponse(
            transactions=(
                TransactionDescription(
                    transactional_id="tx-1",
                    state="pre_committed",
                    producer_id=7,
                    producer_epoch=1,
                    timeout_ms=60_000,
                    start_ms=T0,
                    coordinator=2,
                    participants=(
                        TxnParticipantInfo(name="orders", partition=0, last_sequence=5),
                        TxnParticipantInfo(name="grp-1", partition=-1),
                    ),
                ),
                TransactionDescription(
                    transactional_id="tx-2",
                    error=ErrorCode.TRANSACTIONAL_ID_NOT_FOUND,
                    message="no such id",
                ),
            )
        ),
        20,
    ),
    (
        ListTransactionsResponse(
            transactions=(
                ListedTransaction(
                    transactional_id="tx-1",
                    producer_id=7,
                    state="ongoing",
                    start_ms=T0,
                    participants=2,
                ),
                ListedTransaction(
                    transactional_id="tx-2",
                    producer_id=-1,
                    state="empty",
                    start_ms=-1,
                    participants=0,
                ),
            )
        ),
        21,
    ),
    (AbortTransactionResponse(), 22),
    (
        ElectLeadersResponse(
            transfers=(PreferredLeader(topic="t", partition=0, leader=1, preferred=0),),
            pending=(
                PreferredLeader(topic="t", partition=0, leader=1, preferred=0),
                PreferredLeader(topic="t", partition=2, leader=None, preferred=2),
            ),
        ),
        23,
    ),
    (
        RebalanceResponse(
            moves=(ReplicaMove(topic="t", partition=0, old=(0, 1, 2), new=(3, 1, 2)),),
            replica_counts=((0, 2), (3, 2)),
            leader_counts=((0, 1), (3, 1)),
        ),
        24,
    ),
    (
        DescribeReassignmentsResponse(
            reassignments=(
                PartitionReassignment(
                    topic="t", partition=0, replicas=(0, 1), target=(1, 2), caught_up=(0,), lag=-1
                ),
            ),
            draining=(0,),
            throttle_bytes_per_s=0,
        ),
        25,
    ),
    (AlterTopicResponse(partitions=6), 26),
]
assert {type(r) for r, _ in RESPONSES} == set(RESPONSE_TYPES.values())


def _fetch_v1(response: Response) -> FetchResponse:
    """The FETCH seed with its v1 fields set."""
    assert isinstance(response, FetchResponse)
    replace = dataclasses.replace
    aborted = (AbortedTransaction(producer_id=7, first_offset=3),)
    return replace(
        response,
        topics=tuple(
            replace(
                t,
                partitions=tuple(
                    replace(p, next_offset=p.partition + 8, aborted_transactions=aborted)
                    for p in t.partitions
                ),
            )
            for t in response.topics
        ),
    )


RESPONSE_SEEDS: list[tuple[ApiKey, int, bytes]] = [
    (r.API_KEY, 0, encode_response(cid, ErrorCode.NONE, None, r)[HEADER_BYTES:])
    for r, cid in RESPONSES
] + [
    (ApiKey.PRODUCE, 0, encode_response(9, ErrorCode.NOT_READY, "starting", None)[HEADER_BYTES:]),
    (ApiKey.FETCH, 0, encode_response(-5, ErrorCode.THROTTLED, None, None)[HEADER_BYTES:]),
    *(
        (
            ApiKey.FETCH,
            1,
            encode_response(cid, ErrorCode.NONE, None, _fetch_v1(r), api_version=1)[HEADER_BYTES:],
        )
        for r, cid in RESPONSES
        if r.API_KEY is ApiKey.FETCH
    ),
    *(
        (
            ApiKey.API_VERSIONS,
            0,
            encode_response(cid, ErrorCode.UNSUPPORTED_VERSION, "v9", r)[HEADER_BYTES:],
        )
        for r, cid in RESPONSES
        if r.API_KEY is ApiKey.API_VERSIONS
    ),
]
RESPONSE_PAYLOADS = [payload for _, _, payload in RESPONSE_SEEDS]

# Peer frames.
A, B, C = (0, 11), (1, 22), (MAX_NODE_ID, MAX_INCARNATION)
CONF = ConfState(frozenset({A, B}), frozenset({C}))
RAFT_MESSAGES: list[Message] = [
    AppendEntries(
        A,
        B,
        3,
        4,
        2,
        [
            Entry(5, 2, EntryKind.NORMAL, b"batch"),
            Entry(6, 2, EntryKind.NOOP),
            Entry(7, 3, EntryKind.CONF, b"", CONF),
        ],
        5,
    ),
    AppendEntries(
        A,
        B,
        MAX_INDEX,
        MAX_INDEX - 1,
        MAX_INDEX,
        [Entry(MAX_INDEX, MAX_INDEX, EntryKind.NORMAL, SMALL_BATCH)],
        MAX_INDEX,
    ),
    AppendResponse(B, A, 3, 7, True, 4, 2),
    Heartbeat(A, B, 3, 6, b"ctx"),
    Heartbeat(A, B, 3, 6, None),
    HeartbeatResponse(B, A, 3, b"ctx"),
    RequestVote(A, B, 4, 7, 3, True, False),
    VoteResponse(B, A, 4, True, False),
    InstallSnapshot(A, B, 3, SnapshotMeta(9, 3, CONF), 16, b"chunk", 64),
    InstallSnapshot(A, C, 3, SnapshotMeta(9, 3, CONF), 0, b"c", 1, ConfVouch(12, CONF)),
    SnapshotResponse(B, A, 3, 9, 21),
    SnapshotResponse(B, A, 3, 9, 0, True),
    TimeoutNow(A, B, 3),
    ReadIndexRequest(B, A, 3, b"r1"),
    ReadIndexResponse(A, B, 3, b"r1", 6),
    TransferLeader(B, A, 3, C),
]
PEER_SEEDS: list[bytes] = [
    encode_hello(Hello("cluster-1", 3, 99, "127.0.0.1:9093", True)),
    encode_hello(Hello(None, 0, MAX_INCARNATION, "h:1", False), HELLO_OK),
    cbor2.dumps([HELLO, ["cluster-1", 3, 99, "h:1", True]]),  # an older broker's: version 0
    encode_reject("wrong cluster"),
    encode_peer_request(PeerRequest(7, 1, "ping", {"a": [1, b"x"], "b": None})),
    encode_peer_response(PeerResponse(7, 1, ErrorCode.NONE, None, {"node_id": 3})),
    encode_peer_response(PeerResponse(0, 2, ErrorCode.UNSUPPORTED_VERSION, "no such kind", 5)),
    encode_raft([(g, m) for g, m in enumerate(RAFT_MESSAGES)]),
    encode_raft([(MAX_INDEX, RAFT_MESSAGES[0])]),
    encode_heartbeat(
        BrokerHeartbeat(
            3, 99, "h", 1, "p", 65535, "r1", ((7, 4, 3), (8, 1, 3)), ((7, (1, 3), 12), (8, (), 0))
        )
    ),
    encode_heartbeat(BrokerHeartbeat(0, 0, "h", 0, "p", 0, None, ())),
    encode_heartbeat_ack(HeartbeatAck(True, 0)),
    encode_heartbeat_ack(HeartbeatAck(False, None)),
]


# --------------------------------------------------------------------------- correlation ids


def _read_cbor_int(buf: bytes, pos: int) -> tuple[int, int] | None:
    """The CBOR integer (major type 0 or 1) at `pos` and the offset after it, or None."""
    if pos >= len(buf):
        return None
    major, info = buf[pos] >> 5, buf[pos] & 0x1F
    if major > 1 or info > 27:
        return None
    if info < 24:
        arg, end = info, pos + 1
    else:
        size = 1 << (info - 24)
        end = pos + 1 + size
        if end > len(buf):
            return None
        arg = int.from_bytes(buf[pos + 1 : end], "big")
    return (arg if major == 0 else -1 - arg), end


def _named_id(payload: bytes, index: int) -> tuple[int | None, bool]:
    """The correlation id a payload names as item `index` of its envelope, read independently
    of broker.wire.protocol: (the id or None, whether the envelope's first items are intact,
    i.e. it starts with a short array head of more than `index` items and its items up to
    `index` are CBOR integers, the id an int32)."""
    if not payload or payload[0] >> 5 != 4 or payload[0] & 0x1F > 23:
        return None, False
    if payload[0] & 0x1F <= index:
        return None, False
    pos, value = 1, None
    for _ in range(index + 1):
        read = _read_cbor_int(payload, pos)
        if read is None:
            return None, False
        value, pos = read
    if value is None or not INT32_MIN <= value <= INT32_MAX:
        return None, False
    return value, True


def _check_error_correlation_id(
    exc: WireError, payload: bytes, index: int, length: int, limits: Limits
) -> None:
    """The error carries the id the envelope named when its first items are intact, and
    otherwise either none or the one a strict decode of the envelope finds."""
    named, intact = _named_id(payload, index)
    if intact:
        assert exc.correlation_id == named, (exc, named)
    elif exc.correlation_id is not None:
        envelope = cbor.decode(payload, limits)  # the id came from the decoded envelope
        assert type(envelope) is list and len(envelope) == length, envelope
        assert exactly_equal(envelope[index], exc.correlation_id), (envelope, exc)


def sweep(cases: Sequence[tuple[bytes, Callable[[bytes], None]]]) -> None:
    """Run each check on every document one change away from its seed (`single_mutations`,
    encoded by cbor2) and report every failure with the payload that reproduces it."""
    failures: list[str] = []
    for number, (seed, check) in enumerate(cases):
        for what, tree in single_mutations(cbor2.loads(seed)):
            payload = cbor2.dumps(tree)
            try:
                check(payload)
            except Exception as exc:  # collect them all: one reproducer per distinct failure
                first_line = next(iter(str(exc).splitlines()), "")
                failures.append(
                    f"seed {number}, {what}: {type(exc).__name__}: {first_line:.300}\n"
                    f"    payload = bytes.fromhex({payload.hex()!r})"
                )
    assert not failures, f"{len(failures)} failures, the first 8:\n" + "\n".join(failures[:8])


def _same_outcome_for_every_buffer_type(
    payload: bytes, decode: Callable[[bytes | bytearray | memoryview], object]
) -> None:
    """The decoders take bytes, bytearray or memoryview: each gives the same value, or the
    same WireError (code, message and correlation id)."""

    def outcome(buf: bytes | bytearray | memoryview) -> object:
        try:
            return decode(buf)
        except WireError as exc:
            return (exc.code, exc.message, exc.correlation_id)

    expected = outcome(payload)
    assert outcome(bytearray(payload)) == expected
    assert outcome(memoryview(payload)) == expected


# --------------------------------------------------------------------------- 1. requests

REQUEST_ERROR_CODES = {
    ErrorCode.INVALID_FRAME,
    ErrorCode.INVALID_REQUEST,
    ErrorCode.INVALID_TOPIC,
    ErrorCode.UNSUPPORTED_VERSION,
    ErrorCode.INVALID_REQUIRED_ACKS,
}


def test_request_seeds_are_valid() -> None:
    for (request, cid, client), payload in zip(REQUESTS, REQUEST_PAYLOADS, strict=True):
        header, decoded = decode_request(payload)
        assert decoded == request and header.correlation_id == cid
        assert header.client_id == client


def check_request(payload: bytes, limits: Limits = DEFAULT_LIMITS) -> None:
    """decode_request raises only WireError, with a documented code and the correlation id
    the payload named; what it accepts is exactly what encode_request writes for it."""
    try:
        header, request = decode_request(payload, limits)
    except WireError as exc:
        assert exc.code in REQUEST_ERROR_CODES, exc
        _check_error_correlation_id(exc, payload, 2, 5, limits)
        return
    named, _ = _named_id(payload, 2)
    assert named is None or named == header.correlation_id
    low, high = SUPPORTED_VERSIONS[header.api_key]
    if not low <= header.api_version <= high:
        # Only API_VERSIONS decodes outside its range: body unread, answered with the ranges.
        assert header.api_key is ApiKey.API_VERSIONS and request == ApiVersionsRequest()
        return
    again = encode_request(
        request, header.correlation_id, header.client_id, api_version=header.api_version
    )
    assert exactly_equal(cbor2.loads(again[HEADER_BYTES:]), cbor2.loads(payload))
    assert decode_request(again[HEADER_BYTES:], limits) == (header, request)


@fuzz(300)
@given(mutated_documents(ALL_REQUEST_PAYLOADS), _limits)
def test_decode_request_raises_only_wire_errors_with_the_named_correlation_id(
    payload: bytes, limits: Limits
) -> None:
    check_request(payload, limits)
    _same_outcome_for_every_buffer_type(payload, lambda buf: decode_request(buf, limits))


def test_decode_request_keeps_its_contract_for_every_single_substitution() -> None:
    sweep([(seed, check_request) for seed in ALL_REQUEST_PAYLOADS])


GROUP_APIS = frozenset(
    {
        ApiKey.FIND_COORDINATOR,
        ApiKey.GROUP_HEARTBEAT,
        ApiKey.OFFSET_COMMIT,
        ApiKey.OFFSET_FETCH,
        ApiKey.LIST_GROUPS,
        ApiKey.DESCRIBE_GROUPS,
        ApiKey.DELETE_GROUPS,
    }
)
GROUP_REQUEST_SEEDS = [(r, cid, client) for r, cid, client in REQUESTS if r.API_KEY in GROUP_APIS]
assert {r.API_KEY for r, _, _ in GROUP_REQUEST_SEEDS} == GROUP_APIS


def check_group_body(request: Request, cid: int, client: str | None, body: object) -> None:
    """A consumer-group request in a valid envelope with `body` (a damaged one): when the
    document is well-formed CBOR, the answer is INVALID_REQUEST naming the request's
    correlation id, or the body is valid and re-encodes to exactly what was sent."""
    payload = cbor2.dumps([int(request.API_KEY), 0, cid, client, body])
    try:
        cbor.decode(payload)
    except WireError:
        check_request(payload)  # bad CBOR (a tag, a float, deep nesting): the general contract
        return
    try:
        header, decoded = decode_request(payload)
    except WireError as exc:
        topic_name = exc.message.startswith("invalid topic name ")
        code = ErrorCode.INVALID_TOPIC if topic_name else ErrorCode.INVALID_REQUEST
        assert (exc.code, exc.correlation_id) == (code, cid), exc
        assert exc.message.split(":")[0], exc  # names a field (or "body"), or the name
        return
    assert header.api_key is request.API_KEY and header.correlation_id == cid
    again = encode_request(decoded, cid, client)
    assert exactly_equal(cbor2.loads(again[HEADER_BYTES:]), cbor2.loads(payload))


def test_damaged_group_request_bodies_are_invalid_request() -> None:
    """Every body one change away from a group seed's (each field of each type and range
    edge, list items and map entries removed or repeated) is refused as INVALID_REQUEST or
    is valid; so is any other API's body (a mix-up of APIs, as the live fuzzer sends)."""
    failures: list[str] = []
    others = [r.to_body(0) for r, _, _ in REQUESTS]
    for request, cid, client in GROUP_REQUEST_SEEDS:
        body = request.to_body(0)
        cases = [*single_mutations(body), *((f"body of {o!r:.40}", o) for o in others)]
        for what, damaged in cases:
            try:
                check_group_body(request, cid, client, damaged)
            except Exception as exc:
                failures.append(f"{request.API_KEY.name}, {what}: {type(exc).__name__}: {exc}")
    assert not failures, f"{len(failures)} failures, the first 8:\n" + "\n".join(failures[:8])


@fuzz(150)
@given(st.sampled_from(GROUP_REQUEST_SEEDS), st.data())
def test_group_request_bodies_damaged_several_times_are_invalid_request(
    seed: tuple[Request, int, str | None], data: st.DataObject
) -> None:
    request, cid, client = seed
    body: object = request.to_body(0)
    for _ in range(data.draw(st.integers(min_value=1, max_value=3), "mutations")):
        body = data.draw(mutate_tree(body), "body")
    check_group_body(request, cid, client, body)


# --------------------------------------------------------------------------- 2. responses


def test_response_seeds_are_valid() -> None:
    for key, version, payload in RESPONSE_SEEDS:
        decode_response(payload, key, api_version=version)


def check_response(
    payload: bytes, api_key: ApiKey, limits: Limits = DEFAULT_LIMITS, api_version: int = 0
) -> None:
    """decode_response raises only WireError, with the correlation id the payload named;
    what it accepts re-encodes to a response that decodes equal."""
    try:
        envelope = decode_response(payload, api_key, limits, api_version=api_version)
    except WireError as exc:
        codes = (ErrorCode.INVALID_FRAME, ErrorCode.INVALID_REQUEST, ErrorCode.INVALID_TOPIC)
        assert exc.code in codes, exc
        _check_error_correlation_id(exc, payload, 0, 4, limits)
        return
    named, _ = _named_id(payload, 0)
    assert named is None or named == envelope.correlation_id
    if envelope.error is ErrorCode.NONE:
        assert envelope.body is not None
    elif envelope.body is not None:  # only the API_VERSIONS refusal lists the ranges
        assert api_key is ApiKey.API_VERSIONS
        assert envelope.error is ErrorCode.UNSUPPORTED_VERSION
    again = encode_response(
        envelope.correlation_id,
        envelope.error,
        envelope.message,
        envelope.body,
        api_version=api_version,
    )
    assert decode_response(again[HEADER_BYTES:], api_key, limits, api_version=api_version) == (
        envelope
    )


@fuzz(250)
@given(st.data(), _limits)
def test_decode_response_raises_only_wire_errors_with_the_named_correlation_id(
    data: st.DataObject, limits: Limits
) -> None:
    key, version, seed = data.draw(st.sampled_from(RESPONSE_SEEDS), "seed")
    payload = data.draw(mutated_documents([seed], others=RESPONSE_PAYLOADS), "payload")
    api_key = data.draw(st.one_of(st.just(key), st.sampled_from(ApiKey)), "api_key")
    version = version if version <= SUPPORTED_VERSIONS[api_key][1] else 0
    check_response(payload, api_key, limits, version)
    _same_outcome_for_every_buffer_type(
        payload, lambda buf: decode_response(buf, api_key, limits, api_version=version)
    )


def test_decode_response_keeps_its_contract_for_every_single_substitution() -> None:
    sweep(
        [
            (seed, functools.partial(check_response, api_key=key, api_version=version))
            for key, version, seed in RESPONSE_SEEDS
        ]
    )


# --------------------------------------------------------------------------- 3. peer frames


def _member_problems(v: object, what: str) -> list[str]:
    if not (isinstance(v, tuple) and len(v) == 2):
        return [f"{what} {v!r} is not a (node_id, incarnation) pair"]
    node, incarnation = v
    out = []
    if type(node) is not int or not 0 <= node <= MAX_NODE_ID:
        out.append(f"{what} node id {node!r} out of range")
    if type(incarnation) is not int or not 0 <= incarnation <= MAX_INCARNATION:
        out.append(f"{what} incarnation {incarnation!r} out of range")
    return out


def _conf_problems(c: object, what: str) -> list[str]:
    if not isinstance(c, ConfState):
        return [f"{what} is not a ConfState"]
    out = []
    for m in (*c.voters, *c.learners):
        out += _member_problems(m, f"{what} member")
    if c.voters & c.learners:
        out.append(f"{what}: members both voter and learner: {c.voters & c.learners}")
    return out


def raft_promise_violations(group: object, m: object) -> list[str]:
    """What a decoded RAFT batch item breaks of the promises in broker.core.peer_codec's
    docstring: terms and indices in [0, MAX_INDEX], no entry term above the message's term,
    entries numbered from prev_index + 1 with terms that never decrease, a CONF entry carrying
    a configuration (and only such an entry), no member both voter and learner (in a
    snapshot's vouched configuration too), a snapshot
    chunk inside the snapshot; plus the types and ranges of every other field, and the term
    bounds the Raft core assumes (prev_term, last_term and a snapshot's term not above the
    message's). Empty when the message keeps them all."""
    out: list[str] = []

    def count(v: object, what: str) -> None:
        if type(v) is not int or not 0 <= v <= MAX_INDEX:
            out.append(f"{what} {v!r} is not in [0, MAX_INDEX]")

    def boolean(v: object, what: str) -> None:
        if type(v) is not bool:
            out.append(f"{what} {v!r} is not a bool")

    def not_above_term(v: int, term: int, what: str) -> None:
        if type(v) is int and type(term) is int and v > term:
            out.append(f"{what} {v} is above the message's term {term}")

    count(group, "group id")
    src, dst, term = getattr(m, "src", None), getattr(m, "dst", None), getattr(m, "term", None)
    out += _member_problems(src, "src") + _member_problems(dst, "dst")
    count(term, "term")
    assert type(term) is int or out
    t = term if type(term) is int else 0
    if isinstance(m, AppendEntries):
        count(m.prev_index, "prev_index")
        count(m.prev_term, "prev_term")
        count(m.commit, "commit")
        not_above_term(m.prev_term, t, "prev_term")
        entries: object = m.entries  # typed list[Entry]; checked as what was decoded
        if not isinstance(entries, list):
            return [*out, "entries are not a list"]
        last_term = m.prev_term
        for i, item in enumerate(entries):
            if not isinstance(item, Entry):
                out.append(f"entries[{i}] is not an Entry")
                continue
            e = item
            count(e.index, f"entries[{i}].index")
            count(e.term, f"entries[{i}].term")
            if e.index != m.prev_index + 1 + i:
                out.append(f"entries[{i}].index {e.index} does not follow {m.prev_index}")
            if type(e.term) is int and type(last_term) is int and e.term < last_term:
                out.append(f"entries[{i}].term {e.term} decreases from {last_term}")
            not_above_term(e.term, t, f"entries[{i}].term")
            last_term = e.term
            if type(e.kind) is not EntryKind:
                out.append(f"entries[{i}].kind {e.kind!r} is not an EntryKind")
            if type(e.data) is not bytes:
                out.append(f"entries[{i}].data is not bytes")
            if (e.kind is EntryKind.CONF) != (e.conf is not None):
                out.append(f"entries[{i}]: kind {e.kind!r} with conf {e.conf!r}")
            if e.conf is not None:
                out += _conf_problems(e.conf, f"entries[{i}].conf")
    elif isinstance(m, AppendResponse):
        count(m.index, "index")
        boolean(m.reject, "reject")
        count(m.hint_index, "hint_index")
        count(m.hint_term, "hint_term")
    elif isinstance(m, Heartbeat | HeartbeatResponse):
        if isinstance(m, Heartbeat):
            count(m.commit, "commit")
        if m.context is not None and type(m.context) is not bytes:
            out.append("context is not bytes or None")
    elif isinstance(m, RequestVote):
        count(m.last_index, "last_index")
        count(m.last_term, "last_term")
        not_above_term(m.last_term, t, "last_term")
        boolean(m.pre_vote, "pre_vote")
        boolean(m.transfer, "transfer")
    elif isinstance(m, VoteResponse):
        boolean(m.pre_vote, "pre_vote")
        boolean(m.reject, "reject")
    elif isinstance(m, InstallSnapshot):
        meta: object = m.meta
        if not isinstance(meta, SnapshotMeta):
            return [*out, "meta is not a SnapshotMeta"]
        count(m.meta.index, "meta.index")
        count(m.meta.term, "meta.term")
        not_above_term(m.meta.term, t, "meta.term")
        out += _conf_problems(m.meta.conf, "meta.conf")
        vouch: object = m.vouch
        if vouch is not None:
            if not isinstance(vouch, ConfVouch):
                return [*out, "vouch is not a ConfVouch or None"]
            count(vouch.index, "vouch.index")
            out += _conf_problems(vouch.conf, "vouch.conf")
        count(m.offset, "offset")
        count(m.total_bytes, "total_bytes")
        if type(m.data) is not bytes:
            out.append("snapshot data is not bytes")
        elif (
            type(m.offset) is int
            and type(m.total_bytes) is int
            and m.offset + len(m.data) > m.total_bytes
        ):
            out.append(f"chunk [{m.offset}, +{len(m.data)}) ends past {m.total_bytes}")
    elif isinstance(m, SnapshotResponse):
        count(m.index, "index")
        count(m.next_offset, "next_offset")
        boolean(m.reject, "reject")
        if m.reject is True and m.next_offset != 0:
            out.append(f"a refusal at next_offset {m.next_offset!r}")
    elif isinstance(m, ReadIndexRequest | ReadIndexResponse):
        if type(m.context) is not bytes:
            out.append("read context is not bytes")
        if isinstance(m, ReadIndexResponse):
            count(m.index, "index")
    elif isinstance(m, TransferLeader):
        out += _member_problems(m.target, "target")
    elif not isinstance(m, TimeoutNow):
        out.append(f"{type(m).__name__} is not a Raft message")
    return out


def _peer_frame_problems(kind: int, value: object) -> list[str]:
    """What a decoded frame breaks of the types and ranges decode_frame checks."""
    if kind in (HELLO, HELLO_OK):
        assert isinstance(value, Hello)
        out = _member_problems((value.node_id, value.incarnation), "hello")
        if value.cluster_id is not None and type(value.cluster_id) is not str:
            out.append("cluster id is not text")
        if type(value.peer_address) is not str or type(value.bootstrapped) is not bool:
            out.append("hello address or bootstrapped flag has the wrong type")
        if type(value.version) is not int or value.version < 0:
            out.append(f"version {value.version!r}")
        if not all(type(f) is str and 0 < len(f) <= MAX_FEATURE for f in value.features):
            out.append(f"features {value.features!r}")
        return out
    if kind in (PEER_REQUEST, PEER_RESPONSE):
        assert isinstance(value, PeerRequest | PeerResponse)
        out = []
        if type(value.session) is not int or not 0 <= value.session <= MAX_SESSION:
            out.append(f"session {value.session!r}")
        cid = value.correlation_id
        if type(cid) is not int or not 0 < cid <= MAX_CORRELATION_ID:
            out.append(f"correlation id {cid!r}")
        if isinstance(value, PeerRequest) and not (
            type(value.kind) is str and 0 < len(value.kind) <= MAX_KIND
        ):
            out.append(f"kind {value.kind!r}")
        if isinstance(value, PeerResponse):
            if not isinstance(value.error, ErrorCode):
                out.append(f"error {value.error!r}")
            message = value.message
            if message is not None and not (
                type(message) is str and 0 < len(message) <= MAX_MESSAGE
            ):
                out.append(f"message {message!r}")
        return out
    if kind == REJECT:
        return [] if type(value) is str else ["reject reason is not text"]
    if kind == RAFT:
        assert isinstance(value, list)
        return [p for g, m in value for p in raft_promise_violations(g, m)]
    if kind == HEARTBEAT:
        assert isinstance(value, BrokerHeartbeat)
        out = _member_problems((value.node_id, value.incarnation), "heartbeat")
        for port in (value.port, value.peer_port):
            if type(port) is not int or not 0 <= port <= 65535:
                out.append(f"port {port!r} out of range")
        for g, term, leader in value.leaders:
            out += [] if type(g) is int and 0 <= g <= MAX_INDEX else ["leader group id"]
            out += [] if type(term) is int and 0 <= term <= MAX_INDEX else ["leader term"]
            out += _member_problems((leader, 0), "leader")
        for g, ids, lag in value.caught_up:
            out += [] if type(g) is int and 0 <= g <= MAX_INDEX else ["caught-up group id"]
            out += [] if type(lag) is int and 0 <= lag <= MAX_INDEX else ["caught-up lag"]
            for i in ids:
                out += _member_problems((i, 0), "caught-up replica")
        return out
    assert kind == HEARTBEAT_OK and isinstance(value, HeartbeatAck)
    registered: object = value.registered
    if type(registered) is not bool:
        return ["registered is not a bool"]
    return [] if value.controller is None else _member_problems((value.controller, 0), "ctl")


def _encode_peer_frame(kind: int, value: Any) -> bytes:
    if kind in (HELLO, HELLO_OK):
        return encode_hello(value, kind)
    if kind == REJECT:
        return encode_reject(value)
    if kind == RAFT:
        return encode_raft(value)
    if kind == HEARTBEAT:
        return encode_heartbeat(value)
    if kind == PEER_REQUEST:
        return encode_peer_request(value)
    if kind == PEER_RESPONSE:
        return encode_peer_response(value)
    return encode_heartbeat_ack(value)


def _same_modulo_conf_order(a: object, b: object) -> bool:
    """exactly_equal, except that lists of [node_id, incarnation] pairs (the voters and
    learners of a configuration, a set on the Raft side) compare as sets."""

    def is_members(v: object) -> bool:
        return (
            isinstance(v, list)
            and bool(v)
            and all(type(p) is list and len(p) == 2 and all(type(x) is int for x in p) for p in v)
        )

    if is_members(a) and is_members(b):
        assert isinstance(a, list) and isinstance(b, list)
        return {tuple(p) for p in a} == {tuple(p) for p in b}
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(
            _same_modulo_conf_order(x, y) for x, y in zip(a, b, strict=True)
        )
    return exactly_equal(a, b)


_members = st.tuples(
    st.one_of(st.integers(0, 5), st.sampled_from([MAX_NODE_ID]), st.integers(0, MAX_NODE_ID)),
    st.one_of(st.integers(0, 50), st.sampled_from([MAX_INCARNATION])),
)
_counts = st.one_of(
    st.integers(0, 20), st.sampled_from([MAX_INDEX - 1, MAX_INDEX]), st.integers(0, MAX_INDEX)
)


@st.composite
def _confs(draw: st.DrawFn) -> ConfState:
    members = draw(st.lists(_members, max_size=4, unique=True))
    split = draw(st.integers(0, len(members)))
    return ConfState(frozenset(members[:split]), frozenset(members[split:]))


@st.composite
def raft_messages(draw: st.DrawFn) -> Message:
    """A valid Raft message: one the codec must accept and round-trip."""
    src, dst, term = draw(_members), draw(_members), draw(_counts)
    kind = draw(st.integers(0, 11))
    if kind == 0:
        n = draw(st.integers(0, 3))
        prev_term = draw(st.integers(0, term))
        prev_index = draw(st.one_of(st.integers(0, 20), st.integers(0, MAX_INDEX - n)))
        terms = sorted(draw(st.lists(st.integers(prev_term, term), min_size=n, max_size=n)))
        entries = []
        for i, entry_term in enumerate(terms):
            entry_kind = draw(st.sampled_from(EntryKind))
            conf = draw(_confs()) if entry_kind is EntryKind.CONF else None
            data = draw(st.binary(max_size=8))
            entries.append(Entry(prev_index + 1 + i, entry_term, entry_kind, data, conf))
        return AppendEntries(src, dst, term, prev_index, prev_term, entries, draw(_counts))
    if kind == 1:
        return AppendResponse(
            src, dst, term, draw(_counts), draw(st.booleans()), draw(_counts), draw(_counts)
        )
    if kind == 2:
        return Heartbeat(src, dst, term, draw(_counts), draw(st.none() | st.binary(max_size=8)))
    if kind == 3:
        return HeartbeatResponse(src, dst, term, draw(st.none() | st.binary(max_size=8)))
    if kind == 4:
        return RequestVote(
            src,
            dst,
            term,
            draw(_counts),
            draw(st.integers(0, term)),
            draw(st.booleans()),
            draw(st.booleans()),
        )
    if kind == 5:
        return VoteResponse(src, dst, term, draw(st.booleans()), draw(st.booleans()))
    if kind == 6:
        data = draw(st.binary(max_size=16))
        offset = draw(st.one_of(st.integers(0, 100), st.integers(0, MAX_INDEX - len(data))))
        total = draw(st.one_of(st.just(offset + len(data)), st.integers(offset + len(data))))
        meta = SnapshotMeta(draw(_counts), draw(st.integers(0, term)), draw(_confs()))
        vouch = draw(st.none() | st.builds(ConfVouch, _counts, _confs()))
        return InstallSnapshot(src, dst, term, meta, offset, data, min(total, MAX_INDEX), vouch)
    if kind == 7:
        reject = draw(st.booleans())
        offset = 0 if reject else draw(_counts)
        return SnapshotResponse(src, dst, term, draw(_counts), offset, reject)
    if kind == 8:
        return TimeoutNow(src, dst, term)
    if kind == 9:
        return ReadIndexRequest(src, dst, term, draw(st.binary(max_size=8)))
    if kind == 10:
        return ReadIndexResponse(src, dst, term, draw(st.binary(max_size=8)), draw(_counts))
    return TransferLeader(src, dst, term, draw(_members))


_raft_batches = st.lists(st.tuples(_counts, raft_messages()), min_size=1, max_size=4)


def test_peer_seeds_are_valid() -> None:
    for payload in PEER_SEEDS:
        kind, value = decode_frame(payload)
        assert _peer_frame_problems(kind, value) == []


@fuzz(150)
@given(_raft_batches)
def test_valid_raft_batches_round_trip_and_keep_the_codec_promises(
    batch: list[tuple[int, Message]],
) -> None:
    for g, m in batch:
        assert raft_promise_violations(g, m) == [], m
    kind, decoded = decode_frame(encode_raft(batch))
    assert kind == RAFT and decoded == batch


def _broken(m: Any, **changes: object) -> Any:
    """`m` with fields overwritten, past frozen dataclasses and their checks."""
    for name, value in changes.items():
        object.__setattr__(m, name, value)
    return m


_BOTH = _broken(ConfState(frozenset({A})), learners=frozenset({A}))
"""A configuration ConfState's own assertion would refuse: A is voter and learner."""

VIOLATIONS: dict[str, tuple[int, object]] = {
    "negative group": (-1, RAFT_MESSAGES[2]),
    "term above MAX_INDEX": (0, TimeoutNow(A, B, MAX_INDEX + 1)),
    "bool term": (0, TimeoutNow(A, B, True)),
    "src not a pair": (0, TimeoutNow(0, B, 1)),
    "dst incarnation negative": (0, TimeoutNow(A, (1, -1), 1)),
    "entry index gap": (0, AppendEntries(A, B, 3, 4, 2, [Entry(6, 2)], 5)),
    "entry terms decrease": (0, AppendEntries(A, B, 3, 4, 2, [Entry(5, 3), Entry(6, 2)], 5)),
    "entry term above the message's": (0, AppendEntries(A, B, 3, 4, 2, [Entry(5, 4)], 5)),
    "entry term below prev_term": (0, AppendEntries(A, B, 3, 4, 2, [Entry(5, 1)], 5)),
    "CONF entry without conf": (0, AppendEntries(A, B, 3, 4, 2, [Entry(5, 2, EntryKind.CONF)], 5)),
    "NORMAL entry with conf": (
        0,
        AppendEntries(A, B, 3, 4, 2, [Entry(5, 2, EntryKind.NORMAL, b"", CONF)], 5),
    ),
    "member both voter and learner": (
        0,
        InstallSnapshot(A, B, 3, SnapshotMeta(1, 1, _BOTH), 0, b"", 0),
    ),
    "vouched member both voter and learner": (
        0,
        InstallSnapshot(A, B, 3, SnapshotMeta(1, 1, CONF), 0, b"", 0, ConfVouch(2, _BOTH)),
    ),
    "vouch index above MAX_INDEX": (
        0,
        InstallSnapshot(
            A, B, 3, SnapshotMeta(1, 1, CONF), 0, b"", 0, ConfVouch(MAX_INDEX + 1, CONF)
        ),
    ),
    "snapshot chunk past the end": (
        0,
        InstallSnapshot(A, B, 3, SnapshotMeta(9, 3, CONF), 60, b"chunk", 64),
    ),
    "snapshot term above the message's": (
        0,
        InstallSnapshot(A, B, 3, SnapshotMeta(9, 4, CONF), 0, b"", 0),
    ),
    "vote last_term above the message's": (0, RequestVote(A, B, 4, 7, 5)),
    "negative hint": (0, AppendResponse(B, A, 3, 7, True, -1, 2)),
    "int where a bool belongs": (0, VoteResponse(B, A, 4, 1, False)),  # type: ignore[arg-type]
    "text context": (0, ReadIndexRequest(B, A, 3, "r1")),  # type: ignore[arg-type]
    "bad transfer target": (0, TransferLeader(B, A, 3, (MAX_NODE_ID + 1, 0))),
}


@pytest.mark.parametrize("name", sorted(VIOLATIONS))
def test_the_raft_promise_checker_finds_each_broken_promise(name: str) -> None:
    group, message = VIOLATIONS[name]
    assert raft_promise_violations(group, message) != []


def check_peer_frame(payload: bytes) -> None:
    """decode_frame raises only PeerProtocolError; a decoded frame keeps the codec's
    promises (raft_promise_violations for RAFT, field ranges for the others) and re-encodes
    to a frame that decodes equal."""
    try:
        kind, value = decode_frame(payload)
    except PeerProtocolError:
        return
    assert _peer_frame_problems(kind, value) == [], (kind, value)
    encoded = _encode_peer_frame(kind, value)
    again = decode_frame(encoded)
    if kind in (PEER_REQUEST, PEER_RESPONSE):  # a body may hold a NaN, unequal to itself
        assert again[0] == kind and _encode_peer_frame(*again) == encoded, (kind, value)
    else:
        assert again == (kind, value)


def check_peer_frame_is_strict(payload: bytes) -> None:
    """No looser reading: an accepted frame (other than REJECT, whose reason is free-form)
    is what the encoder writes for the decoded value, up to the order and repetition of
    configuration members; e.g. a byte string is not read as an array of small ints. The
    leniency the protocol's versions need is the exception: a hello of 5 items (an older
    broker's) or of more than 7 (a newer one's, whose extra items are ignored), and an error
    code this version does not know (read as UNKNOWN_SERVER_ERROR)."""
    try:
        kind, value = decode_frame(payload)
    except PeerProtocolError:
        return
    if kind == REJECT:
        return
    sent, written = cbor2.loads(payload), cbor2.loads(_encode_peer_frame(kind, value))
    if kind in (HELLO, HELLO_OK):
        n = 5 if len(sent[1]) == 5 else 7
        sent[1], written[1] = sent[1][:n], written[1][:n]
    if kind == PEER_RESPONSE and sent[1][2] not in set(ErrorCode):
        sent[1][2] = written[1][2]
    assert _same_modulo_conf_order(sent, written), (kind, value)


_peer_documents = st.builds(lambda batch: [*PEER_SEEDS, encode_raft(batch)], _raft_batches).flatmap(
    mutated_documents
)


@fuzz(250)
@given(_peer_documents)
def test_peer_decode_frame_raises_only_protocol_errors_and_keeps_its_promises(
    payload: bytes,
) -> None:
    check_peer_frame(payload)


@fuzz(150)
@given(_peer_documents)
@example(payload=cbor2.dumps([HEARTBEAT, [0, 0, "", 0, "", 0, None, {}, []]]))  # a map as leaders
def test_peer_decode_frame_accepts_only_what_the_encoder_writes(payload: bytes) -> None:
    check_peer_frame_is_strict(payload)


PEER_SWEEP_SEEDS = [
    *(seed for seed in PEER_SEEDS if cbor2.loads(seed)[0] != RAFT),
    *(encode_raft([(g, m)]) for g, m in enumerate(RAFT_MESSAGES)),
]
"""The peer seeds with one Raft message a frame: the same nodes to change, in less time."""


def test_peer_decode_frame_keeps_its_promises_for_every_single_substitution() -> None:
    sweep([(seed, check_peer_frame) for seed in PEER_SWEEP_SEEDS])


def test_peer_decode_frame_accepts_no_single_substitution_the_encoder_would_not_write() -> None:
    sweep([(seed, check_peer_frame_is_strict) for seed in PEER_SWEEP_SEEDS])


# --------------------------------------------------------------------------- 4. frame decoder

HANDSHAKE_LIMITS = Limits(max_frame_bytes=1024)
LINK_LIMITS = Limits(max_frame_bytes=1500)
BULK_LIMITS = Limits(max_frame_bytes=100_000)
FRAME_LIMITS: dict[str, tuple[Limits, Limits]] = {
    "small frames": (HANDSHAKE_LIMITS, HANDSHAKE_LIMITS),
    "a handshake, then the link's limit": (HANDSHAKE_LIMITS, LINK_LIMITS),
    "frames past the decoder's 64 KiB compaction": (BULK_LIMITS, BULK_LIMITS),
}
"""(the limit of the first frame, the limit of the others) for each stream kind."""


@st.composite
def frame_streams(draw: st.DrawFn, first: Limits, rest: Limits) -> bytes:
    """Frames of sizes around both limits, bad length prefixes and garbage, concatenated,
    and often cut short (anywhere, or within a few bytes of a part's start: a bare length
    prefix, a prefix with its first payload byte)."""
    edges = sorted({first.max_frame_bytes, rest.max_frame_bytes})
    sizes = st.one_of(
        st.sampled_from([1, 2, 3, 4, 5, *(e + d for e in edges for d in (-1, 0, 1))]),
        st.integers(1, edges[-1] + 100),
        st.integers(edges[-1] // 3, edges[-1]),
    )
    lengths = st.sampled_from([0, *(e + 1 for e in edges), 2**31, 2**32 - 1])
    parts: list[bytes] = []
    for _ in range(draw(st.integers(0, 6))):
        part = draw(st.sampled_from(["frame"] * 6 + ["bad header", "garbage"]))
        if part == "frame":
            size = draw(sizes)
            fill = draw(st.binary(min_size=1, max_size=4))
            parts.append(encode_frame((fill * size)[:size]))
        elif part == "bad header":
            length = draw(lengths | st.integers(0, 2**32 - 1))
            parts.append(struct.pack(">I", length) + draw(st.binary(max_size=8)))
        else:
            parts.append(draw(st.binary(min_size=1, max_size=8)))
    stream = b"".join(parts)
    if stream and draw(st.booleans()):  # cut anywhere, or just after a part's start
        starts = list(itertools.accumulate(len(p) for p in parts[:-1]))
        near = st.builds(int.__add__, st.sampled_from([0, *starts]), st.integers(0, 6))
        stream = stream[: draw(st.one_of(st.integers(0, len(stream)), near))]
    return stream


def _reference_frames(
    stream: bytes, first: Limits, rest: Limits
) -> tuple[list[bytes], ErrorCode | None, int]:
    """(frames, the error at the first bad header or None, bytes left after the last frame)
    for `stream`: the first frame's header is bounded by `first`, later ones by `rest`."""
    frames: list[bytes] = []
    pos = 0
    while len(stream) - pos >= HEADER_BYTES:
        size = int.from_bytes(stream[pos : pos + HEADER_BYTES], "big")
        limit = (first if not frames else rest).max_frame_bytes
        if size == 0:
            return frames, ErrorCode.INVALID_FRAME, len(stream) - pos
        if size > limit:
            return frames, ErrorCode.FRAME_TOO_LARGE, len(stream) - pos
        if len(stream) - pos - HEADER_BYTES < size:
            break
        frames.append(stream[pos + HEADER_BYTES : pos + HEADER_BYTES + size])
        pos += HEADER_BYTES + size
    return frames, None, len(stream) - pos


@fuzz(300)
@given(st.sampled_from(sorted(FRAME_LIMITS)), st.data())
def test_frame_decoder_split_anywhere_yields_the_reference_frames_within_bounds(
    kind: str, data: st.DataObject
) -> None:
    """A stream is cut at arbitrary points and fed chunk by chunk (as bytes, bytearray or
    memoryview), draining after each; the decoder is given the second limit after the first
    frame (what a handshake does)."""
    first, rest = FRAME_LIMITS[kind]
    stream = data.draw(frame_streams(first, rest), "stream")
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12), "cuts"))
    chunks = [stream[a:b] for a, b in itertools.pairwise([0, *cuts, len(stream)])]
    wrap: Callable[[bytes], bytes | bytearray | memoryview] = data.draw(
        st.sampled_from([bytes, bytearray, memoryview]), "buffer type"
    )
    expected, expected_error, left = _reference_frames(stream, first, rest)

    decoder = FrameDecoder(first)
    frames: list[bytes] = []
    error: WireError | None = None
    for chunk in chunks:
        decoder.receive_data(wrap(chunk))
        try:
            while (frame := decoder.next_frame()) is not None:
                limit = (first if not frames else rest).max_frame_bytes
                assert type(frame) is bytes and 1 <= len(frame) <= limit
                frames.append(frame)
                if len(frames) == 1:
                    decoder.set_limits(rest)
        except WireError as exc:
            error = exc
            break
        # Drained: at most one partial frame is held, and it is within the limit.
        limit = (first if not frames else rest).max_frame_bytes
        assert 0 <= decoder.frame_bytes <= limit
        if decoder.frame_bytes:
            assert decoder.buffered_bytes < decoder.frame_bytes
            assert decoder.frame_missing == decoder.frame_bytes - decoder.buffered_bytes
        else:
            assert decoder.buffered_bytes < HEADER_BYTES and decoder.frame_missing == 0

    assert frames == expected
    if expected_error is None:
        assert error is None
        assert decoder.buffered_bytes == (left - HEADER_BYTES if left >= HEADER_BYTES else left)
    else:
        assert error is not None and error.code is expected_error, error
        with pytest.raises(WireError) as info:
            decoder.next_frame()
        assert info.value.code is expected_error
        with pytest.raises(WireError) as info:
            decoder.receive_data(b"\x00")
        assert info.value.code is expected_error


@fuzz(200)
@given(
    frame_streams(HANDSHAKE_LIMITS, HANDSHAKE_LIMITS), st.lists(st.integers(0, 2**16), max_size=6)
)
@example(stream=b"\x00\x00\x00\x01", cuts=[])  # a length prefix, its payload not yet sent
def test_frame_decoder_is_at_a_boundary_only_when_no_partial_frame_was_received(
    stream: bytes, cuts: list[int]
) -> None:
    """`at_boundary` promises "no partial frame is buffered: an end of stream here is a clean
    close"; the server and the peer links choose between the stall timeout and the idle one
    by it. So it must be False from the first byte of a frame until its last, the length
    prefix included."""
    cuts = sorted(min(cut, len(stream)) for cut in cuts)
    _, expected_error, left = _reference_frames(stream, HANDSHAKE_LIMITS, HANDSHAKE_LIMITS)
    if expected_error is not None:
        return
    decoder = FrameDecoder(HANDSHAKE_LIMITS)
    for a, b in itertools.pairwise([0, *cuts, len(stream)]):
        decoder.receive_data(stream[a:b])
        while decoder.next_frame() is not None:
            pass
    assert decoder.at_boundary == (left == 0), (left, decoder.frame_bytes)


# --------------------------------------------------------------------------- 5. record batches

_HEADER = struct.Struct(">BBIHIqqqhi")
_FIELD_RANGES = (
    [(0, 255), (0, 255), (0, 2**32 - 1), (0, 2**16 - 1), (0, 2**32 - 1)]
    + [(INT64_MIN, INT64_MAX)] * 3
    + [(-(2**15), 2**15 - 1), (-(2**31), 2**31 - 1)]
)
"""Per header field (magic, version, crc, attributes, count, first_timestamp, max_timestamp,
producer_id, producer_epoch, base_sequence): the values its struct code can hold."""


@st.composite
def damaged_batches(draw: st.DrawFn) -> bytes:
    """A valid batch with its header fields and/or its records damaged; the record count and
    the CRC are usually fixed up afterwards so the later checks are reached."""
    seed = draw(st.sampled_from([*BATCHES, LARGE_BATCH]))
    fields = list(_HEADER.unpack_from(seed))
    records = seed[BATCH_HEADER_BYTES:]
    if draw(st.booleans()):
        tree = cbor2.loads(records)
        for _ in range(draw(st.integers(1, 3))):
            tree = draw(mutate_tree(tree))
        records = cbor2.dumps(tree)
        if draw(st.booleans()) and type(tree) is list and 0 < len(tree) < 2**32:
            fields[4] = len(tree)
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.sampled_from([0, 1, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9]))  # not crc
        low, high = _FIELD_RANGES[at]
        fields[at] = draw(
            st.one_of(
                st.sampled_from([v for v in INTERESTING_INTS if low <= v <= high]),
                st.integers(low, high),
                st.just(min(high, max(low, fields[at] + draw(st.sampled_from([-1, 1]))))),
            )
        )
    data = _HEADER.pack(*fields) + records
    if draw(st.booleans()):
        data = draw(mutate_bytes(data, BATCHES))
    if len(data) >= 6 and draw(st.sampled_from([True] * 19 + [False])):
        data = data[:2] + zlib.crc32(data[6:]).to_bytes(4, "big") + data[6:]
    return data


def _assert_header_invariants(
    h: BatchHeader, data: bytes, limits: Limits, max_bytes: int | None
) -> None:
    limit = limits.max_batch_bytes if max_bytes is None else min(max_bytes, limits.max_batch_bytes)
    assert h.magic == SLUICE_MAGIC and h.size == len(data) <= limit
    assert 1 <= h.record_count <= limits.max_batch_records
    assert h.first_timestamp <= h.max_timestamp
    assert h.compression == 0 and h.attributes & ~0x30 == 0
    if h.producer_id == -1:
        assert h.producer_epoch == h.base_sequence == -1 and not h.is_transactional
    else:
        assert h.producer_epoch >= 0
        assert h.base_sequence == -1 if h.is_control else h.base_sequence >= 0
    assert not h.is_control or (h.is_transactional and h.record_count == 1)


def check_batch(data: bytes, limits: Limits = DEFAULT_LIMITS, max_bytes: int | None = None) -> None:
    """parse_header (with and without the CRC check) raises only BatchError with its two
    codes, decode_records only CorruptBatchError; what they accept keeps the header's and
    the records' invariants, and the records re-encode to a batch that decodes equal."""
    for check_crc in (True, False):
        try:
            header = parse_header(data, limits, max_bytes, check_crc=check_crc)
        except BatchError as exc:
            assert exc.code in (ErrorCode.CORRUPT_MESSAGE, ErrorCode.MESSAGE_TOO_LARGE), exc
        else:
            _assert_header_invariants(header, data, limits, max_bytes)
    try:
        records = decode_records(data, limits)
    except CorruptBatchError as exc:
        assert exc.code is ErrorCode.CORRUPT_MESSAGE
        return
    header = parse_header(data, limits)
    assert len(records) == header.record_count
    assert records[0].timestamp == header.first_timestamp
    assert max(r.timestamp for r in records) == header.max_timestamp
    for r in records:
        assert INT64_MIN <= r.timestamp <= INT64_MAX
        assert r.key is None or type(r.key) is bytes
        assert r.value is None or type(r.value) is bytes
        assert all(type(n) is str and type(v) is bytes for n, v in r.headers)
    again = encode_batch(
        records,
        producer_id=header.producer_id,
        producer_epoch=header.producer_epoch,
        base_sequence=header.base_sequence,
        transactional=header.is_transactional,
        control=header.is_control,
    )
    assert decode_records(again, limits) == records


@fuzz(300)
@given(damaged_batches(), _limits, st.none() | st.integers(0, 2000))
def test_batch_decoders_raise_only_their_documented_errors(
    data: bytes, limits: Limits, max_bytes: int | None
) -> None:
    check_batch(data, limits, max_bytes)


def _with_records(seed: bytes, records: bytes, fix_count: bool) -> bytes:
    """`seed`'s header over `records`, the count set to the records' array length when
    `fix_count` and it is an array, and the CRC recomputed."""
    fields = list(_HEADER.unpack_from(seed))
    tree = cbor2.loads(records)
    if fix_count and type(tree) is list and 0 < len(tree) < 2**32:
        fields[4] = len(tree)
    data = _HEADER.pack(*fields) + records
    return data[:2] + zlib.crc32(data[6:]).to_bytes(4, "big") + data[6:]


def _check_records_of(seed: bytes, fix_count: bool) -> Callable[[bytes], None]:
    def check(records: bytes) -> None:
        check_batch(_with_records(seed, records, fix_count))

    return check


def test_batch_decoders_keep_their_contract_for_every_single_substitution() -> None:
    """Every single change of the records (the count and the CRC fixed up, so the records
    are decoded) and every header field set to every edge of its range (CRC fixed up)."""
    cases: list[tuple[bytes, Callable[[bytes], None]]] = []
    for seed in BATCHES:
        for fix_count in (True, False):
            cases.append((seed[BATCH_HEADER_BYTES:], _check_records_of(seed, fix_count)))
    sweep(cases)
    failures = []
    for seed in BATCHES:
        for at, (low, high) in enumerate(_FIELD_RANGES):
            for value in {low, high, *(v for v in INTERESTING_INTS if low <= v <= high)}:
                fields = list(_HEADER.unpack_from(seed))
                fields[at] = value
                data = _HEADER.pack(*fields) + seed[BATCH_HEADER_BYTES:]
                if at != 2:
                    data = data[:2] + zlib.crc32(data[6:]).to_bytes(4, "big") + data[6:]
                try:
                    check_batch(data)
                except Exception as exc:
                    failures.append(f"field {at} := {value}: {exc!r:.200} {data.hex()}")
    assert not failures, "\n".join(failures[:8])


# --------------------------------------------------------------------------- 6. strict CBOR

CBOR_SEEDS: list[bytes] = [
    *ALL_REQUEST_PAYLOADS,
    *RESPONSE_PAYLOADS,
    *PEER_SEEDS,
    SMALL_BATCH[BATCH_HEADER_BYTES:],
    cbor2.dumps({"a": 1, "b": [b"x", None, True, False, -5, 2**64 - 1, -(2**64), 1.5, "é"]}),
]


def _plain_problems(value: object, limits: Limits, depth: int = 0) -> list[str]:
    """How a decoded value breaks "plain data within the limits", as cbor.decode promises."""
    if type(value) is int:
        return [] if -(2**64) <= value < 2**64 else [f"int {value} outside CBOR's range"]
    if value is None or type(value) in (bool, float, bytes):
        return []
    if type(value) is str:
        n = len(value.encode())
        return [] if n <= limits.max_text_bytes else [f"text of {n} bytes"]
    if type(value) is list:
        out = [] if len(value) <= limits.max_array_items else [f"array of {len(value)}"]
        if value and depth >= limits.max_nesting:
            out.append(f"nesting deeper than {limits.max_nesting}")
        return out + [p for v in value for p in _plain_problems(v, limits, depth + 1)]
    if type(value) is dict:
        out = [] if len(value) <= limits.max_map_items else [f"map of {len(value)}"]
        if value and depth >= limits.max_nesting:
            out.append(f"nesting deeper than {limits.max_nesting}")
        out += [f"key {k!r} is not text" for k in value if type(k) is not str]
        return out + [p for v in value.values() for p in _plain_problems(v, limits, depth + 1)]
    return [f"{type(value).__name__} is not plain data"]


def _items(value: object) -> int:
    if isinstance(value, list):
        return 1 + sum(_items(v) for v in value)
    if isinstance(value, dict):
        return 1 + sum(1 + _items(v) for v in value.values())
    return 1


def check_cbor(payload: bytes, limits: Limits = DEFAULT_LIMITS) -> None:
    """cbor.decode raises only WireError(INVALID_FRAME); what it accepts is plain data within
    every limit, equals cbor2's permissive reading, and reads the same at an offset; with
    prescan=False it still raises only WireError."""
    try:
        value = cbor.decode(payload, limits)
    except WireError as exc:
        assert exc.code is ErrorCode.INVALID_FRAME, exc
        with pytest.raises(WireError):  # the same verdict at an offset
            cbor.decode(b"\x00junk" + payload, limits, offset=5)
    else:
        assert _plain_problems(value, limits) == [], value
        assert _items(value) <= limits.max_frame_items
        assert exactly_equal(cbor2.loads(payload), value)
        assert exactly_equal(cbor.decode(b"\x00junk" + payload, limits, offset=5), value)
    try:
        cbor.decode(payload, limits, prescan=False)
    except WireError as exc:
        assert exc.code is ErrorCode.INVALID_FRAME, exc


@fuzz(300)
@given(mutated_documents(CBOR_SEEDS), st.sampled_from([DEFAULT_LIMITS, TIGHT_LIMITS, PEER_LIMITS]))
def test_strict_cbor_decode_raises_only_wire_errors_and_returns_bounded_plain_data(
    payload: bytes, limits: Limits
) -> None:
    check_cbor(payload, limits)


def test_strict_cbor_decode_keeps_its_contract_for_every_single_substitution() -> None:
    """The other sweeps run cbor.decode on every document too; this one adds the checks of
    what it returns, under both the default and the tight limits."""
    tight = functools.partial(check_cbor, limits=TIGHT_LIMITS)
    seeds = [CBOR_SEEDS[-1], SMALL_BATCH[BATCH_HEADER_BYTES:], *REQUEST_PAYLOADS[2:6]]
    sweep([(seed, check) for seed in seeds for check in (check_cbor, tight)])


def _only(allowed: type[Exception], decode: Callable[[], object]) -> None:
    with contextlib.suppress(allowed):
        decode()


@fuzz(300)
@given(st.binary(max_size=64), st.sampled_from([DEFAULT_LIMITS, TIGHT_LIMITS]))
def test_every_decoder_raises_only_its_own_error_on_random_bytes(
    data: bytes, limits: Limits
) -> None:
    """The unstructured baseline: random bytes through every decoder."""
    _only(WireError, lambda: decode_request(data, limits))
    _only(WireError, lambda: decode_response(data, ApiKey.FETCH, limits))
    _only(WireError, lambda: cbor.decode(data, limits))
    _only(WireError, lambda: cbor.decode(data, limits, prescan=False))
    _only(PeerProtocolError, lambda: decode_frame(data))
    _only(BatchError, lambda: parse_header(data, limits))
    _only(CorruptBatchError, lambda: decode_records(data, limits))
    decoder = FrameDecoder(HANDSHAKE_LIMITS)
    decoder.receive_data(data)
    _only(WireError, lambda: [decoder.next_frame() for _ in range(len(data) + 1)])
