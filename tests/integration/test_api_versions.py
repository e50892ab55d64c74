"""The versioned client protocol against a real `sluice serve` process over TCP, in raw frames:
every API it advertises answers at every advertised version; one version past the max is
refused with UNSUPPORTED_VERSION naming the API, the version and the range, and the
connection goes on; API_VERSIONS past its max is refused *with* the ranges; PRODUCE v1 keeps
or refuses a trace context, and FETCH v1 says where to fetch next."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from broker.wire.api import SUPPORTED_VERSIONS, ApiKey
from broker.wire.batch import Record, encode_batch
from broker.wire.errors import ErrorCode
from broker.wire.messages import (
    ApiVersionsRequest,
    ApiVersionsResponse,
    CreateTopicsRequest,
    CreateTopicsResponse,
    DeleteTopicsRequest,
    DeleteTopicsResponse,
    DescribeClusterRequest,
    DescribeClusterResponse,
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
from tests.integration.wire_client import RawClient
from tests.support.harness import BrokerProcess

MakeBroker = Callable[..., BrokerProcess]
TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


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


def valid_request(key: ApiKey, version: int) -> Request:
    """A request of `key` that is valid at `version` and succeeds on a broker holding topic
    "t" (DELETE_TOPICS deletes what CREATE_TOPICS created at the same version: keys are
    sent in order)."""
    topic = f"made-v{version}"
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
        ApiKey.INIT_PRODUCER_ID: InitProducerIdRequest(),
        ApiKey.DESCRIBE_CLUSTER: DescribeClusterRequest(),
    }[key]


def succeeded(body: Response | None) -> bool:
    """The answer's own errors (per topic, per partition) are all NONE."""
    if isinstance(body, (CreateTopicsResponse, DeleteTopicsResponse)):
        return all(t.error is ErrorCode.NONE for t in body.topics)
    if isinstance(body, (ProduceResponse, FetchResponse, ListOffsetsResponse)):
        return all(p.error is ErrorCode.NONE for t in body.topics for p in t.partitions)
    if isinstance(body, MetadataResponse):
        return all(t.error is ErrorCode.NONE for t in body.topics)
    return isinstance(body, (ApiVersionsResponse, InitProducerIdResponse, DescribeClusterResponse))


async def test_every_advertised_version_answers_and_the_next_one_is_refused(
    broker_factory: MakeBroker,
) -> None:
    _, c = await started(broker_factory)
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
            request = valid_request(key, version)
            envelope = await c.call(request, api_version=version)
            assert envelope.error is ErrorCode.NONE, (key, version, envelope.message)
            assert envelope.body is not None and envelope.body.API_KEY is key
            assert succeeded(envelope.body), (key, version, envelope.body)
            answered.append((key, version))
    assert (ApiKey.FETCH, 1) in answered and (ApiKey.PRODUCE, 1) in answered
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
