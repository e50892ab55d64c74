"""The versioned client protocol against a real `sluice serve` process over TCP, in raw frames:
every API it advertises answers at every advertised version; one version past the max is
refused with UNSUPPORTED_VERSION naming the API, the version and the range, and the
connection goes on; API_VERSIONS past its max is refused *with* the ranges; PRODUCE v1 keeps
or refuses a trace context, and FETCH v1 says where to fetch next.

The consumer-group APIs answer like the others once the broker's group coordinator is up: a
fresh broker may first answer them COORDINATOR_NOT_AVAILABLE, COORDINATOR_LOAD_IN_PROGRESS or
NOT_COORDINATOR (retriable: the coordinator's partition is being created or loaded), for at
most COORDINATOR_WAIT_S; after that every group API must succeed."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
import trio

from broker.wire.api import SUPPORTED_VERSIONS, ApiKey
from broker.wire.batch import Record, encode_batch
from broker.wire.errors import ErrorCode
from broker.wire.group_messages import (
    CommitPartition,
    CommittedOffset,
    CommitTopic,
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
from broker.wire.messages import (
    ApiVersionsRequest,
    ApiVersionsResponse,
    CreateTopicsRequest,
    CreateTopicsResponse,
    DeleteTopicsRequest,
    DeleteTopicsResponse,
    DescribeClusterRequest,
    DescribeClusterResponse,
    ElectLeadersRequest,
    ElectLeadersResponse,
    FetchPartition,
    FetchRequest,
    FetchResponse,
    FetchTopic,
    InitProducerIdRequest,
    InitProducerIdResponse,
    ListOffsetsPartition,
    ListOffsetsRequest,
    ListOffsetsResponse,
    ListOffsetsTopic,
    MetadataRequest,
    MetadataResponse,
    NewTopic,
    ProducePartition,
    ProduceRequest,
    ProduceResponse,
    ProduceTopic,
    Request,
    Response,
)
from broker.wire.protocol import ResponseEnvelope
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
    TxnTopic,
)
from tests.integration.wire_client import RawClient
from tests.support.harness import BrokerProcess

MakeBroker = Callable[..., BrokerProcess]
TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

GROUP = "api-versions-group"
"""Joined by one member (GROUP_HEARTBEAT), then described."""
OPERATOR_GROUP = "api-versions-operator-group"
"""Never has members: an operator commits its offset, reads it back, then deletes it."""
COMMITTED = 1
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
COORDINATOR_STARTING = frozenset(
    {
        ErrorCode.COORDINATOR_NOT_AVAILABLE,
        ErrorCode.COORDINATOR_LOAD_IN_PROGRESS,
        ErrorCode.NOT_COORDINATOR,
        ErrorCode.CONCURRENT_TRANSACTIONS,
    }
)
TXN = "api-versions-txn"
TXN_APIS = frozenset(
    {
        ApiKey.ADD_PARTITIONS_TO_TXN,
        ApiKey.ADD_OFFSETS_TO_TXN,
        ApiKey.TXN_OFFSET_COMMIT,
        ApiKey.END_TXN,
        ApiKey.DESCRIBE_TRANSACTIONS,
        ApiKey.LIST_TRANSACTIONS,
        ApiKey.ABORT_TRANSACTION,
    }
)
"""Sent in key order after INIT_PRODUCER_ID v1 initialised TXN: register a partition and a
group, stage an offset, commit; describe and list; then (a transaction opened again) abort."""


class TxnProducer:
    """The transactional producer the transaction APIs act for (its id and epoch)."""

    producer_id = 0
    epoch = 0


COORDINATOR_WAIT_S = 30.0


@pytest.fixture(autouse=True)
def _posix() -> None:
    if os.name != "posix":  # pragma: no cover
        pytest.skip("needs POSIX processes")


async def started(make: MakeBroker) -> tuple[BrokerProcess, RawClient]:
    b = make()
    b.start()
    b.wait_ready()
    return b, await RawClient.connect("127.0.0.1", b.client_port)


def produce(topic: str, value: bytes, trace_context: str | None = None) -> ProduceRequest:
    batch = encode_batch([Record(value=value, timestamp=1)])
    part = ProducePartition(partition=0, batch=batch)
    return ProduceRequest(
        topics=(ProduceTopic(name=topic, partitions=(part,)),),
        timeout_ms=10_000,
        trace_context=trace_context,
    )


def fetch(topic: str, offset: int) -> FetchRequest:
    part = FetchPartition(partition=0, offset=offset)
    return FetchRequest(topics=(FetchTopic(name=topic, partitions=(part,)),), max_wait_ms=0)


def txn_request(key: ApiKey) -> Request:
    """The transaction API `key` for TXN, at the producer's current epoch."""
    pid, epoch = TxnProducer.producer_id, TxnProducer.epoch
    commit = CommitTopic(topic="t", partitions=(CommitPartition(partition=0, offset=COMMITTED),))
    return {
        ApiKey.ADD_PARTITIONS_TO_TXN: AddPartitionsToTxnRequest(
            transactional_id=TXN,
            producer_id=pid,
            producer_epoch=epoch,
            topics=(TxnTopic(name="t", partitions=(0,)),),
        ),
        ApiKey.ADD_OFFSETS_TO_TXN: AddOffsetsToTxnRequest(
            transactional_id=TXN, producer_id=pid, producer_epoch=epoch, group_id=OPERATOR_GROUP
        ),
        ApiKey.TXN_OFFSET_COMMIT: TxnOffsetCommitRequest(
            transactional_id=TXN,
            group_id=OPERATOR_GROUP,
            producer_id=pid,
            producer_epoch=epoch,
            member_id="",
            member_epoch=-1,
            topics=(commit,),
        ),
        ApiKey.END_TXN: EndTxnRequest(
            transactional_id=TXN, producer_id=pid, producer_epoch=epoch, commit=True, sequences=()
        ),
        ApiKey.DESCRIBE_TRANSACTIONS: DescribeTransactionsRequest(transactional_ids=(TXN,)),
        ApiKey.LIST_TRANSACTIONS: ListTransactionsRequest(),
        ApiKey.ABORT_TRANSACTION: AbortTransactionRequest(transactional_id=TXN),
    }[key]


def valid_request(key: ApiKey, version: int) -> Request:
    """A request of `key` that is valid at `version` and succeeds on a broker holding topic
    "t" (DELETE_TOPICS deletes what CREATE_TOPICS created at the same version, DELETE_GROUPS
    the group OFFSET_COMMIT made: keys are sent in order)."""
    topic = f"made-v{version}"
    commit = CommitTopic(
        topic="t", partitions=(CommitPartition(partition=0, offset=COMMITTED, metadata="m"),)
    )
    return {
        ApiKey.API_VERSIONS: ApiVersionsRequest(),
        ApiKey.METADATA: MetadataRequest(topics=("t",)),
        ApiKey.CREATE_TOPICS: CreateTopicsRequest(
            topics=(NewTopic(name=topic, partitions=1, replication_factor=1),), timeout_ms=10_000
        ),
        ApiKey.DELETE_TOPICS: DeleteTopicsRequest(names=(topic,), timeout_ms=10_000),
        ApiKey.PRODUCE: produce("t", b"v%d" % version, TRACE if version >= 1 else None),
        ApiKey.FETCH: fetch("t", 0),
        ApiKey.LIST_OFFSETS: ListOffsetsRequest(
            topics=(ListOffsetsTopic(name="t", partitions=(ListOffsetsPartition(partition=0),)),)
        ),
        ApiKey.INIT_PRODUCER_ID: (
            InitProducerIdRequest(transactional_id=TXN) if version >= 1 else InitProducerIdRequest()
        ),
        ApiKey.DESCRIBE_CLUSTER: DescribeClusterRequest(),
        ApiKey.FIND_COORDINATOR: FindCoordinatorRequest(key=GROUP),
        ApiKey.GROUP_HEARTBEAT: GroupHeartbeatRequest(
            group_id=GROUP, member_id=f"member-v{version}", member_epoch=0, topics=("t",)
        ),
        ApiKey.OFFSET_COMMIT: OffsetCommitRequest(
            group_id=OPERATOR_GROUP, member_id="", member_epoch=-1, topics=(commit,)
        ),
        ApiKey.OFFSET_FETCH: OffsetFetchRequest(group_id=OPERATOR_GROUP),
        ApiKey.LIST_GROUPS: ListGroupsRequest(),
        ApiKey.DESCRIBE_GROUPS: DescribeGroupsRequest(group_ids=(GROUP,)),
        ApiKey.DELETE_GROUPS: DeleteGroupsRequest(group_ids=(OPERATOR_GROUP,)),
        ApiKey.ELECT_LEADERS: ElectLeadersRequest(topics=("t",)),
        ApiKey.REBALANCE: RebalanceRequest(),
        ApiKey.DESCRIBE_REASSIGNMENTS: DescribeReassignmentsRequest(),
        ApiKey.ALTER_TOPIC: AlterTopicRequest(name="t", partitions=1),
    }.get(key) or txn_request(key)


def _errors(body: Response | None) -> list[ErrorCode]:
    """The answer's own errors (per topic, per partition, per group)."""
    if isinstance(body, (CreateTopicsResponse, DeleteTopicsResponse, MetadataResponse)):
        return [t.error for t in body.topics]
    if isinstance(body, (ProduceResponse, FetchResponse, ListOffsetsResponse)):
        return [p.error for t in body.topics for p in t.partitions]
    if isinstance(body, (OffsetCommitResponse, TxnOffsetCommitResponse)):
        return [p.error for t in body.topics for p in t.partitions]
    if isinstance(body, DescribeTransactionsResponse):
        return [t.error for t in body.transactions]
    if isinstance(body, (DescribeGroupsResponse, DeleteGroupsResponse)):
        return [g.error for g in body.groups]
    return []


def succeeded(body: Response | None) -> bool:
    """The answer's own errors are all NONE, and a group answer says what was asked: the
    member joined (an epoch past 0), the operator's offset reads back, each group is known."""
    if any(error is not ErrorCode.NONE for error in _errors(body)):
        return False
    if isinstance(body, GroupHeartbeatResponse):
        return body.member_epoch > 0 and any(t.topic == "t" for t in body.assignment)
    if isinstance(body, OffsetFetchResponse):
        return CommittedOffset(topic="t", partition=0, offset=COMMITTED, metadata="m") in (
            body.offsets
        )
    if isinstance(body, (OffsetCommitResponse, TxnOffsetCommitResponse)):
        return len(body.topics) == 1 and len(body.topics[0].partitions) == 1
    if isinstance(body, DescribeTransactionsResponse):
        return [t.transactional_id for t in body.transactions] == [TXN]
    if isinstance(body, ListTransactionsResponse):
        return TXN in {t.transactional_id for t in body.transactions}
    if isinstance(body, (DescribeGroupsResponse, DeleteGroupsResponse)):
        return len(body.groups) == 1
    if isinstance(body, ElectLeadersResponse):  # a single broker leads all: balanced
        return body.transfers == () and body.pending == ()
    if isinstance(body, RebalanceResponse):  # one broker: nothing to move
        return body.moves == () and len(body.replica_counts) == 1
    if isinstance(body, DescribeReassignmentsResponse):
        return body.reassignments == () and body.draining == ()
    if isinstance(body, AlterTopicResponse):
        return body.partitions == 1
    return isinstance(
        body,
        (
            ApiVersionsResponse,
            InitProducerIdResponse,
            DescribeClusterResponse,
            CreateTopicsResponse,
            DeleteTopicsResponse,
            MetadataResponse,
            ProduceResponse,
            FetchResponse,
            ListOffsetsResponse,
            FindCoordinatorResponse,
            ListGroupsResponse,
            AddPartitionsToTxnResponse,
            AddOffsetsToTxnResponse,
            EndTxnResponse,
            AbortTransactionResponse,
        ),
    )


async def call_coordinator(c: RawClient, request: Request, version: int) -> ResponseEnvelope:
    """`request` at `version`, sent again while the answer says the group coordinator is
    still starting (a fresh broker's), for at most COORDINATOR_WAIT_S."""
    deadline = trio.current_time() + COORDINATOR_WAIT_S
    while True:
        envelope = await c.call(request, api_version=version)
        starting = envelope.error in COORDINATOR_STARTING or any(
            e in COORDINATOR_STARTING for e in _errors(envelope.body)
        )
        if not starting or trio.current_time() > deadline:
            return envelope
        await trio.sleep(0.1)


async def test_every_advertised_version_answers_and_the_next_one_is_refused(
    broker_factory: MakeBroker,
) -> None:
    b, c = await started(broker_factory)
    answer = await c.call(ApiVersionsRequest())
    assert answer.error is ErrorCode.NONE and isinstance(answer.body, ApiVersionsResponse)
    advertised = answer.body.versions()
    assert advertised == {int(k): v for k, v in SUPPORTED_VERSIONS.items()}
    created = await c.call(valid_request(ApiKey.CREATE_TOPICS, 0))
    assert isinstance(created.body, CreateTopicsResponse)
    assert created.body.topics[0].error is ErrorCode.NONE
    await c.call(DeleteTopicsRequest(names=("made-v0",), timeout_ms=10_000))
    await c.call(CreateTopicsRequest(topics=(NewTopic(name="t", partitions=1),)))

    answered: list[tuple[ApiKey, int]] = []
    for raw_key, (low, high) in sorted(advertised.items()):
        key = ApiKey(raw_key)
        for version in range(low, high + 1):
            if key is ApiKey.ABORT_TRANSACTION:  # something to abort: a new transaction
                opened = await c.call(txn_request(ApiKey.ADD_PARTITIONS_TO_TXN))
                assert opened.error is ErrorCode.NONE, opened
            request = valid_request(key, version)
            coordinated = key in GROUP_APIS or key in TXN_APIS or key is ApiKey.INIT_PRODUCER_ID
            if coordinated:
                envelope = await call_coordinator(c, request, version)
            else:
                envelope = await c.call(request, api_version=version)
            if isinstance(envelope.body, InitProducerIdResponse) and version >= 1:
                TxnProducer.producer_id = envelope.body.producer_id
                TxnProducer.epoch = envelope.body.producer_epoch
            if isinstance(envelope.body, EndTxnResponse):
                TxnProducer.epoch = envelope.body.producer_epoch
            assert envelope.error is ErrorCode.NONE, (key, version, envelope.message)
            assert envelope.body is not None and envelope.body.API_KEY is key
            assert succeeded(envelope.body), (key, version, envelope.body)
            if isinstance(envelope.body, FindCoordinatorResponse):  # a single broker: itself
                assert (envelope.body.node_id, envelope.body.port) == (b.node_id, b.client_port)
            if isinstance(envelope.body, ListGroupsResponse):
                assert GROUP in {g.group_id for g in envelope.body.groups}, envelope.body
            if isinstance(envelope.body, DescribeGroupsResponse):
                (group,) = envelope.body.groups
                assert group.group_id == GROUP and "member-v0" in {
                    m.member_id for m in group.members
                }, group
            answered.append((key, version))
    assert (ApiKey.FETCH, 1) in answered and (ApiKey.PRODUCE, 1) in answered
    assert {key for key, _ in answered} >= GROUP_APIS
    assert len(answered) == sum(high - low + 1 for low, high in advertised.values())

    for raw_key, (low, high) in sorted(advertised.items()):
        key = ApiKey(raw_key)
        body = valid_request(key, high).to_body(high)  # the newest body, one version on
        refused = await c.call_raw(key, high + 1, body)
        assert refused.error is ErrorCode.UNSUPPORTED_VERSION, (key, refused)
        assert refused.message is not None
        assert f"{key.name} version {high + 1}" in refused.message, refused.message
        assert f"versions {low} to {high}" in refused.message, refused.message
        if key is ApiKey.API_VERSIONS:  # Kafka's rule: the refusal lists the ranges
            assert isinstance(refused.body, ApiVersionsResponse)
            assert refused.body.versions() == advertised
        else:
            assert refused.body is None
        after = await c.call(MetadataRequest(topics=("t",)))  # the connection goes on
        assert after.error is ErrorCode.NONE and succeeded(after.body)
    await c.aclose()


async def test_produce_v1_trace_context_and_fetch_v1_next_offset(
    broker_factory: MakeBroker,
) -> None:
    _, c = await started(broker_factory)
    await c.call(CreateTopicsRequest(topics=(NewTopic(name="t", partitions=1),)))
    offsets = []
    for i, trace in enumerate((TRACE, None, TRACE)):
        answer = await c.call(produce("t", b"r%d" % i, trace), api_version=1)
        assert isinstance(answer.body, ProduceResponse)
        part = answer.body.topics[0].partitions[0]
        assert part.error is ErrorCode.NONE
        offsets.append(part.base_offset)
    assert offsets == [0, 1, 2]

    bad = await c.call_raw(
        ApiKey.PRODUCE, 1, {**produce("t", b"x").to_body(1), "trace_context": "x"}
    )
    assert bad.error is ErrorCode.INVALID_REQUEST and bad.body is None
    assert bad.message is not None and bad.message.startswith("trace_context: not a W3C")
    at_v0 = await c.call_raw(ApiKey.PRODUCE, 0, produce("t", b"x", TRACE).to_body(1))
    assert at_v0.error is ErrorCode.INVALID_REQUEST  # v0 has no trace_context
    assert at_v0.message == "body: unknown 'trace_context'"

    for offset, expected in ((0, 3), (1, 3), (3, 3)):
        answer = await c.call(fetch("t", offset), api_version=1)
        assert isinstance(answer.body, FetchResponse)
        part = answer.body.topics[0].partitions[0]
        assert part.error is ErrorCode.NONE
        assert (part.next_offset, part.aborted_transactions) == (expected, ())
        assert [b.base_offset for b in part.batches] == list(range(offset, 3))
    answer = await c.call(fetch("t", 0), api_version=0)
    assert isinstance(answer.body, FetchResponse)
    part = answer.body.topics[0].partitions[0]
    assert part.next_offset is None and [b.base_offset for b in part.batches] == [0, 1, 2]
    await c.aclose()
