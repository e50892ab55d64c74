"""RequestHandler: wire requests -> BrokerNode operations -> Reply, on one broker."""

from __future__ import annotations

from broker.core.peer_codec import BrokerHeartbeat
from broker.core.raft.types import AppendEntries
from broker.core.requests import MAX_EPOCH, RequestHandler
from broker.wire.api import SUPPORTED_VERSIONS, ApiKey, capped
from broker.wire.batch import Record, encode_batch
from broker.wire.errors import ErrorCode
from broker.wire.messages import (
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
    FetchRequest,
    FetchResponse,
    FetchTopic,
    InitProducerIdRequest,
    InitProducerIdResponse,
    IsolationLevel,
    ListOffsetsPartition,
    ListOffsetsRequest,
    ListOffsetsResponse,
    ListOffsetsTopic,
    MetadataRequest,
    MetadataResponse,
    NewTopic,
    ProducePartition,
    ProducePartitionResult,
    ProduceRequest,
    ProduceResponse,
    ProduceTopic,
    TopicResult,
)
from broker.wire.protocol import RequestHeader, decode_response, encode_response
from tests.support.broker_harness import CLUSTER_ID, Broker, batch, header


def booted(*topics: tuple[str, int]) -> Broker:
    b = Broker().boot()
    for name, partitions in topics:
        b.create_topic(name, partitions)
    return b


def produce_req(*parts: tuple[str, int, bytes], **kwargs: object) -> ProduceRequest:
    by_topic: dict[str, list[ProducePartition]] = {}
    for name, p, data in parts:
        by_topic.setdefault(name, []).append(ProducePartition(partition=p, batch=data))
    topics = tuple(ProduceTopic(name=n, partitions=tuple(ps)) for n, ps in by_topic.items())
    return ProduceRequest(topics=topics, **kwargs)  # type: ignore[arg-type]


def fetch_req(
    *parts: tuple[str, int, int],
    max_bytes: int = 50 << 20,
    isolation: IsolationLevel = IsolationLevel.READ_COMMITTED,
) -> FetchRequest:
    by_topic: dict[str, list[FetchPartition]] = {}
    for name, p, offset in parts:
        by_topic.setdefault(name, []).append(FetchPartition(partition=p, offset=offset))
    topics = tuple(FetchTopic(name=n, partitions=tuple(ps)) for n, ps in by_topic.items())
    return FetchRequest(topics=topics, max_bytes=max_bytes, isolation=isolation)


def new_topic(name: str, partitions: int = 1, rf: int = 1, **config: str) -> NewTopic:
    return NewTopic(name=name, partitions=partitions, replication_factor=rf, config=config)


def results(body: ProduceResponse) -> dict[tuple[str, int], ProducePartitionResult]:
    return {(t.name, p.partition): p for t in body.topics for p in t.partitions}


def topic_results(body: CreateTopicsResponse | DeleteTopicsResponse) -> dict[str, ErrorCode]:
    return {t.name: t.error for t in body.topics}


# -- immediate answers ------------------------------------------------------------------------


def test_api_versions() -> None:
    b = booted()
    reply = b.call(ApiVersionsRequest(), correlation_id=3)
    assert (reply.correlation_id, reply.error, reply.message) == (3, ErrorCode.NONE, None)
    body = reply.body
    assert isinstance(body, ApiVersionsResponse)
    assert body.node_id == 0 and body.cluster_id == CLUSTER_ID
    assert {a.api_key: (a.min_version, a.max_version) for a in body.apis} == {
        int(k): v for k, v in SUPPORTED_VERSIONS.items()
    }


def test_api_versions_lists_the_served_table_and_refuses_outside_its_own_range() -> None:
    b = booted()
    served = capped(
        {ApiKey.FETCH: 0, ApiKey.PRODUCE: 0, ApiKey.INIT_PRODUCER_ID: 0, ApiKey.END_TXN: 0}
    )
    handler = RequestHandler(b.node, served)
    reply = handler.handle(1, header(ApiKey.API_VERSIONS, 4), ApiVersionsRequest())
    assert reply is not None and reply.error == ErrorCode.NONE
    assert isinstance(reply.body, ApiVersionsResponse)
    assert reply.body.versions() == {int(k): (0, 0) for k in ApiKey}
    newer = RequestHeader(
        api_key=ApiKey.API_VERSIONS, api_version=3, correlation_id=5, client_id="new"
    )
    reply = handler.handle(2, newer, ApiVersionsRequest())
    assert reply is not None and reply.error == ErrorCode.UNSUPPORTED_VERSION
    assert reply.message is not None
    assert "API_VERSIONS version 3" in reply.message and "versions 0 to 0" in reply.message
    assert isinstance(reply.body, ApiVersionsResponse)  # the ranges, so the client downgrades
    assert reply.body.versions() == {int(k): (0, 0) for k in ApiKey}


def test_metadata_all_topics() -> None:
    b = booted(("b", 2), ("a", 1))
    reply = b.call(MetadataRequest())
    body = reply.body
    assert isinstance(body, MetadataResponse)
    assert body.cluster_id == CLUSTER_ID and body.controller == 0
    assert body.brokers == (BrokerInfo(id=0, host="127.0.0.1", port=9092, rack=None),)
    assert [t.name for t in body.topics] == ["a", "b"]
    tb = body.topics[1]
    assert (tb.error, tb.replication_factor, dict(tb.config)) == (ErrorCode.NONE, 1, {})
    assert [(p.partition, p.leader, p.replicas, p.error) for p in tb.partitions] == [
        (0, 0, (0,), ErrorCode.NONE),
        (1, 0, (0,), ErrorCode.NONE),
    ]
    assert all(p.leader_term >= 1 for p in tb.partitions)


def test_metadata_for_an_unknown_topic() -> None:
    b = booted(("a", 1))
    body = b.call(MetadataRequest(topics=("nope", "a"))).body
    assert isinstance(body, MetadataResponse)
    nope, a = body.topics
    assert (nope.name, nope.error, nope.partitions) == (
        "nope",
        ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
        (),
    )
    assert a.error == ErrorCode.NONE
    assert b.call(MetadataRequest(topics=())).body.topics == ()


def test_metadata_reports_no_leader_until_the_partition_serves() -> None:
    b = booted()
    token, _ = b.request(
        CreateTopicsRequest(topics=(NewTopic(name="t", partitions=1, replication_factor=1),))
    )
    while "t" not in b.node.meta.topics:
        b.round()
    body = b.handler.metadata(MetadataRequest(topics=("t",)))
    (p,) = body.topics[0].partitions
    assert (p.leader, p.error) == (None, ErrorCode.LEADER_NOT_AVAILABLE)
    b.run()
    assert token in b.replies
    (p,) = b.handler.metadata(MetadataRequest(topics=("t",))).topics[0].partitions
    assert (p.leader, p.error) == (0, ErrorCode.NONE)


def describe(b: Broker) -> DescribeClusterResponse:
    """DESCRIBE_CLUSTER through the handler, then through the wire and back."""
    reply = b.call(DescribeClusterRequest(), correlation_id=5)
    assert (reply.correlation_id, reply.error, reply.message) == (5, ErrorCode.NONE, None)
    body = reply.body
    assert isinstance(body, DescribeClusterResponse)
    decoded = decode_response(
        encode_response(5, ErrorCode.NONE, None, body)[4:], ApiKey.DESCRIBE_CLUSTER
    ).body
    assert decoded == body
    return body


def test_describe_cluster_on_one_broker() -> None:
    b = booted(("b", 2), ("a", 1))
    body = describe(b)
    assert (body.cluster_id, body.controller) == (CLUSTER_ID, 0)
    assert body.brokers == (
        ClusterBroker(id=0, host="127.0.0.1", port=9092, rack=None, alive=True),
    )
    assert [(p.topic, p.partition) for p in body.partitions] == [("a", 0), ("b", 0), ("b", 1)]
    for p in body.partitions:
        assert (p.leader, p.replicas, p.caught_up, p.commit_lag) == (0, (0,), (0,), 0)
        assert p.leader_term >= 1
    assert describe(Broker().boot()).partitions == ()


def test_describe_cluster_while_a_partition_is_not_led_yet() -> None:
    b = booted()
    token, _ = b.request(
        CreateTopicsRequest(topics=(NewTopic(name="t", partitions=1, replication_factor=1),))
    )
    while "t" not in b.node.meta.topics:
        b.round()
    (p,) = b.handler.describe_cluster().partitions
    assert (p.topic, p.partition, p.leader, p.replicas) == ("t", 0, None, (0,))
    b.run()
    assert token in b.replies
    (p,) = b.handler.describe_cluster().partitions
    assert (p.leader, p.caught_up, p.commit_lag) == (0, (0,), 0)


def test_describe_cluster_shows_a_registered_broker_then_its_failure() -> None:
    b = booted(("t", 1))
    hb = BrokerHeartbeat(1, 7, "127.0.0.2", 9192, "127.0.0.2", 9193, "r1", leaders=())
    b.node.on_broker_heartbeat(hb)
    b.run()
    body = describe(b)
    assert body.brokers == (
        ClusterBroker(id=0, host="127.0.0.1", port=9092, rack=None, alive=True),
        ClusterBroker(id=1, host="127.0.0.2", port=9192, rack="r1", alive=True),
    )
    # Silent past its lease: the controller marks it failed; the controller stays alive.
    b.tick(b.node.config.broker_lease_ticks + 2)
    body = describe(b)
    assert [(br.id, br.alive) for br in body.brokers] == [(0, True), (1, False)]
    assert body.controller == 0
    assert body.partitions == (
        ClusterPartition(
            topic="t",
            partition=0,
            leader=0,
            leader_term=body.partitions[0].leader_term,
            replicas=(0,),
            caught_up=(0,),
            commit_lag=0,
        ),
    )


def list_offsets_req(name: str, *timestamps: int) -> ListOffsetsRequest:
    parts = tuple(ListOffsetsPartition(partition=0, timestamp=ts) for ts in timestamps)
    return ListOffsetsRequest(topics=(ListOffsetsTopic(name=name, partitions=parts),))


def test_list_offsets() -> None:
    b = booted(("t", 1))
    b.call(produce_req(("t", 0, batch(2, ts=100))))
    b.call(produce_req(("t", 0, batch(1, ts=500))))
    for ts, expected in ((-1, 3), (-2, 0), (0, 0), (101, 0), (200, 2), (500, 2), (501, 3)):
        body = b.call(list_offsets_req("t", ts)).body
        assert isinstance(body, ListOffsetsResponse)
        (p,) = body.topics[0].partitions
        assert (p.partition, p.error, p.offset) == (0, ErrorCode.NONE, expected), ts
    (p,) = b.call(list_offsets_req("x", -1)).body.topics[0].partitions
    assert (p.error, p.offset) == (ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, -1)


# -- produce ----------------------------------------------------------------------------------


def test_produce_reply_shape() -> None:
    b = booted(("t", 2), ("u", 1))
    token, reply = b.request(
        produce_req(("t", 0, batch(3)), ("t", 1, batch(2)), ("u", 0, batch(1))), correlation_id=11
    )
    assert reply is None and b.handler.pending == 1
    b.run()
    reply = b.replies[token]
    assert (reply.correlation_id, reply.error) == (11, ErrorCode.NONE)
    body = reply.body
    assert isinstance(body, ProduceResponse)
    assert [(t.name, [p.partition for p in t.partitions]) for t in body.topics] == [
        ("t", [0, 1]),
        ("u", [0]),
    ]
    got = results(body)
    assert all(r.error == ErrorCode.NONE and r.message is None for r in got.values())
    assert [got[k].base_offset for k in (("t", 0), ("t", 1), ("u", 0))] == [0, 0, 0]
    again = b.call(produce_req(("t", 0, batch(1))))
    assert results(again.body)[("t", 0)].base_offset == 3
    assert b.handler.pending == 0


def test_produce_per_partition_errors() -> None:
    b = booted(("t", 1))
    b.create_topic("small", 1, config={"max.message.bytes": "100"})
    corrupt = bytearray(batch(2))
    corrupt[10] ^= 0xFF  # the record count, under the CRC
    req = produce_req(
        ("t", 0, batch(2)),
        ("t", 5, batch()),
        ("nope", 0, batch()),
        ("small", 0, bytes(corrupt)),
    )
    reply = b.call(req)
    got = results(reply.body)
    assert got[("t", 0)].error == ErrorCode.NONE
    assert got[("t", 5)].error == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    assert got[("nope", 0)].error == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    assert got[("small", 0)].error == ErrorCode.CORRUPT_MESSAGE
    assert got[("small", 0)].message and "CRC" in got[("small", 0)].message
    assert all(got[k].base_offset == -1 for k in got if k != ("t", 0))
    too_big = b.call(produce_req(("small", 0, batch(1, size=200))))
    r = results(too_big.body)[("small", 0)]
    assert (r.error, r.base_offset) == (ErrorCode.MESSAGE_TOO_LARGE, -1)


def test_not_leader_answers_carry_the_leader_hint() -> None:
    b = booted(("t", 1))
    g = b.node.by_partition[("t", 0)]
    term = g.raft.term + 3
    # Broker 7 (incarnation 1) leads term `term` now: our replica hears its append.
    g.raft.step(AppendEntries((7, 1), g.raft.id, term, 0, 0, [], 0))
    b.run()
    r = results(b.call(produce_req(("t", 0, batch()))).body)[("t", 0)]
    assert (r.error, r.leader, r.leader_term) == (ErrorCode.NOT_LEADER_OR_FOLLOWER, 7, term)
    body = b.call(fetch_req(("t", 0, 0))).body
    assert isinstance(body, FetchResponse)
    f = body.topics[0].partitions[0]
    assert (f.error, f.leader, f.leader_term) == (ErrorCode.NOT_LEADER_OR_FOLLOWER, 7, term)
    # Other errors carry no hint.
    r = results(b.call(produce_req(("nope", 0, batch()))).body)[("nope", 0)]
    assert (r.leader, r.leader_term) == (None, -1)


def test_produce_refused_everywhere_is_answered_at_once() -> None:
    b = booted()
    _, reply = b.request(produce_req(("nope", 0, batch()), ("nope", 1, batch())))
    assert reply is not None and b.handler.pending == 0
    assert {r.error for r in results(reply.body).values()} == {ErrorCode.UNKNOWN_TOPIC_OR_PARTITION}


def test_produce_sequence_errors_and_duplicates() -> None:
    b = booted(("t", 1))
    first = b.call(produce_req(("t", 0, batch(2, pid=3, epoch=0, seq=0))))
    assert results(first.body)[("t", 0)].base_offset == 0
    dup = results(b.call(produce_req(("t", 0, batch(2, pid=3, epoch=0, seq=0)))).body)
    assert (dup[("t", 0)].error, dup[("t", 0)].base_offset) == (ErrorCode.NONE, 0)
    gap = results(b.call(produce_req(("t", 0, batch(1, pid=3, epoch=0, seq=7)))).body)
    assert (gap[("t", 0)].error, gap[("t", 0)].base_offset) == (
        ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER,
        -1,
    )


def test_a_transactional_batch_outside_a_registered_transaction_is_refused() -> None:
    b = booted(("t", 1))
    data = encode_batch(
        [Record(value=b"x", timestamp=1)],
        producer_id=9,
        producer_epoch=0,
        base_sequence=0,
        transactional=True,
    )
    reply = b.call(produce_req(("t", 0, data), transactional_id="tx"), correlation_id=5)
    assert reply.error == ErrorCode.NONE
    got = results(reply.body)[("t", 0)]
    assert got.error == ErrorCode.INVALID_TXN_STATE and got.message


def test_multi_partition_produce_completes_once_every_partition_is_done() -> None:
    b = booted(("t", 3))
    handler = RequestHandler(b.node)  # fed by hand, one completion at a time
    req = produce_req(("t", 0, batch(1)), ("t", 1, batch(2)), ("t", 2, batch(3)))
    assert handler.handle(99, header(ApiKey.PRODUCE), req) is None
    b.run()
    mine = b.completions_for(99)
    assert sorted(c.slot for c in mine) == [0, 1, 2]
    assert handler.complete([mine[0]]) == []
    assert handler.complete([mine[1]]) == []
    assert handler.complete([mine[0]]) == []  # a repeated completion changes nothing
    ((token, reply),) = handler.complete([mine[2]])
    assert token == 99
    assert all(r.error == ErrorCode.NONE for r in results(reply.body).values())
    assert handler.pending == 0


ABANDON_BUG = (
    "BUG: RequestHandler.abandon fills unfinished slots with 2-tuples (code, message) but"
    " _produce_response (and _finish for InitProducerId) unpack 3-tuples (code, message,"
    " value): abandoning a produce with any slot still waiting raises ValueError. The driver"
    " calls abandon when a ProduceRequest's timeout_ms passes (timeout_ms=0 is legal), so the"
    " exception escapes Driver._absorb and takes the broker down"
)


def test_abandon_answers_timed_out_for_unfinished_produce_slots() -> None:
    b = booted(("t", 2))
    handler = RequestHandler(b.node)
    req = produce_req(("t", 0, batch()), ("t", 1, batch()), ("nope", 0, batch()))
    assert handler.handle(50, header(ApiKey.PRODUCE, 4), req) is None
    b.run()
    first = next(c for c in b.completions_for(50) if c.slot == 0)
    assert handler.complete([first]) == []
    reply = handler.abandon(50)
    assert reply is not None and reply.correlation_id == 4
    got = results(reply.body)
    assert got[("t", 0)].error == ErrorCode.NONE and got[("t", 0)].base_offset == 0
    assert got[("t", 1)].error == ErrorCode.REQUEST_TIMED_OUT
    assert got[("nope", 0)].error == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    assert handler.pending == 0
    assert handler.complete(b.completions_for(50)) == []  # late completions are ignored
    assert handler.abandon(50) is None


def test_abandon_of_a_produce_before_any_round() -> None:
    b = booted(("t", 1))
    token, reply = b.request(produce_req(("t", 0, batch(2))))
    assert reply is None
    abandoned = b.handler.abandon(token)
    assert abandoned is not None
    assert results(abandoned.body)[("t", 0)].error == ErrorCode.REQUEST_TIMED_OUT


def test_abandon_of_an_init_producer_id() -> None:
    b = booted()
    token, reply = b.request(InitProducerIdRequest())
    assert reply is None
    abandoned = b.handler.abandon(token)
    assert abandoned is not None and abandoned.error == ErrorCode.REQUEST_TIMED_OUT


def test_abandon_of_create_topics_times_out_unfinished_topics_and_cancels() -> None:
    b = booted()
    req = CreateTopicsRequest(topics=(new_topic("t", 2), new_topic("bad name")))
    token, reply = b.request(req, correlation_id=6)
    assert reply is None
    assert b.node.stats()["waiters"] == 1
    abandoned = b.handler.abandon(token)
    assert abandoned is not None and abandoned.correlation_id == 6
    assert topic_results(abandoned.body) == {
        "t": ErrorCode.REQUEST_TIMED_OUT,
        "bad name": ErrorCode.INVALID_TOPIC,
    }
    assert b.node.stats()["waiters"] == 0
    assert b.handler.pending == 0
    b.run()
    assert b.completions_for(token) == [] and token not in b.replies
    assert "t" in b.node.meta.topics  # the command was already proposed: it still commits
    assert b.handler.abandon(token) is None


def test_abandon_while_waiting_for_leaders() -> None:
    b = booted()
    token, _ = b.request(CreateTopicsRequest(topics=(new_topic("t", 2),)))
    while "t" not in b.node.meta.topics:
        b.round()
    abandoned = b.handler.abandon(token)
    assert topic_results(abandoned.body) == {"t": ErrorCode.REQUEST_TIMED_OUT}
    b.run()
    assert b.node.topic_led("t")
    assert token not in b.replies


# -- fetch ------------------------------------------------------------------------------------


def test_fetch_reply_shape_and_read_committed_up_to_the_high_watermark() -> None:
    b = booted(("t", 2))
    data = [batch(2, value=b"a"), batch(3, value=b"b")]
    for d in data:
        b.call(produce_req(("t", 0, d)))
    b.node.produce(1, 0, "t", 0, batch(4))  # proposed, not yet committed
    for isolation in IsolationLevel:
        reply = b.handler.handle(
            5, header(ApiKey.FETCH, 21), fetch_req(("t", 0, 0), ("t", 1, 0), isolation=isolation)
        )
        assert reply is not None and reply.correlation_id == 21 and reply.error == ErrorCode.NONE
        body = reply.body
        assert isinstance(body, FetchResponse)
        (t,) = body.topics
        p0, p1 = t.partitions
        assert (p0.partition, p0.error, p0.high_watermark, p0.last_stable_offset) == (
            0,
            ErrorCode.NONE,
            5,
            5,
        )
        assert p0.log_start_offset == 0
        assert p0.batches == (
            FetchedBatch(base_offset=0, data=data[0]),
            FetchedBatch(base_offset=2, data=data[1]),
        )
        assert (p1.error, p1.high_watermark, p1.batches) == (ErrorCode.NONE, 0, ())
    body, size = b.handler.fetch(fetch_req(("t", 0, 2)))
    assert size == len(data[1])
    assert [x.base_offset for x in body.topics[0].partitions[0].batches] == [2]


def test_fetch_next_offset_is_past_the_last_batch_or_the_offset_asked() -> None:
    b = booted(("t", 2))
    b.call(produce_req(("t", 0, batch(2))))
    b.call(produce_req(("t", 0, batch(3))))
    body, _ = b.handler.fetch(fetch_req(("t", 0, 1), ("t", 1, 0)))
    p0, p1 = body.topics[0].partitions
    assert [x.base_offset for x in p0.batches] == [0, 2]
    assert (p0.next_offset, p0.aborted_transactions) == (5, ())
    assert (p1.batches, p1.next_offset) == ((), 0)  # nothing returned: the offset asked
    body, _ = b.handler.fetch(fetch_req(("t", 0, 5)))
    assert body.topics[0].partitions[0].next_offset == 5
    for beyond in (9, -(2**31)):  # an error: nothing returned, the offset asked echoed
        body, _ = b.handler.fetch(fetch_req(("t", 0, beyond)))
        part = body.topics[0].partitions[0]
        assert (part.error, part.next_offset) == (ErrorCode.OFFSET_OUT_OF_RANGE, beyond)
    body, _ = b.handler.fetch(fetch_req(("t", 0, 3), max_bytes=1))  # the first batch only
    part = body.topics[0].partitions[0]
    assert [x.base_offset for x in part.batches] == [2] and part.next_offset == 5


def test_fetch_errors_per_partition() -> None:
    b = booted(("t", 1))
    body, size = b.handler.fetch(fetch_req(("t", 0, 7), ("t", 3, 0), ("x", 0, 0)))
    assert size == 0
    errors = [p.error for t in body.topics for p in t.partitions]
    assert errors == [
        ErrorCode.OFFSET_OUT_OF_RANGE,
        ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
        ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
    ]
    assert b.handler.fetch_has_error(body)
    ok, _ = b.handler.fetch(fetch_req(("t", 0, 0)))
    assert not b.handler.fetch_has_error(ok)


def test_fetch_request_max_bytes_gives_at_least_one_batch() -> None:
    b = booted(("t", 2))
    for p in (0, 1):
        for _ in range(2):
            b.call(produce_req(("t", p, batch(1, size=100))))
    size = len(batch(1, size=100))
    body, total = b.handler.fetch(fetch_req(("t", 0, 0), ("t", 1, 0), max_bytes=1))
    assert total == size
    assert [len(p.batches) for p in body.topics[0].partitions] == [1, 0]
    body, total = b.handler.fetch(fetch_req(("t", 0, 0), ("t", 1, 0), max_bytes=3 * size))
    assert total == 3 * size
    assert [len(p.batches) for p in body.topics[0].partitions] == [2, 1]


def test_fetch_request_max_bytes_is_exceeded_only_by_the_first_batch() -> None:
    b = booted(("t", 2))
    for p in (0, 1):
        b.call(produce_req(("t", p, batch(1, size=100))))
    size = len(batch(1, size=100))
    _, total = b.handler.fetch(fetch_req(("t", 0, 0), ("t", 1, 0), max_bytes=size + 10))
    assert total <= size + 10


# -- topics -----------------------------------------------------------------------------------


def test_create_topics_mixed_results_complete_once_led() -> None:
    b = booted()
    req = CreateTopicsRequest(
        topics=(
            new_topic("good", 3),
            new_topic("bad name"),
            new_topic("zero", 0),
            new_topic("cfg", 1, 1, colour="red"),
            new_topic("rf0", 1, 0),
        )
    )
    token, reply = b.request(req, correlation_id=8)
    assert reply is None
    while token not in b.replies:
        assert not b.node.topic_led("good")
        b.round()
    assert b.node.topic_led("good")
    reply = b.replies[token]
    assert (reply.correlation_id, reply.error) == (8, ErrorCode.NONE)
    body = reply.body
    assert isinstance(body, CreateTopicsResponse)
    assert [t.name for t in body.topics] == ["good", "bad name", "zero", "cfg", "rf0"]
    assert topic_results(body) == {
        "good": ErrorCode.NONE,
        "bad name": ErrorCode.INVALID_TOPIC,
        "zero": ErrorCode.INVALID_PARTITIONS,
        "cfg": ErrorCode.INVALID_CONFIG,
        "rf0": ErrorCode.INVALID_REPLICATION_FACTOR,
    }
    assert all(t.message for t in body.topics if t.error != ErrorCode.NONE)
    assert set(b.node.meta.topics) == {"good"}


def test_create_topics_several_valid_topics() -> None:
    b = booted()
    reply = b.call(CreateTopicsRequest(topics=(new_topic("a", 2), new_topic("b", 1))))
    assert topic_results(reply.body) == {"a": ErrorCode.NONE, "b": ErrorCode.NONE}
    assert b.node.topic_led("a") and b.node.topic_led("b")


def test_create_topics_replication_factor_above_registered_brokers_is_refused_at_once() -> None:
    """Waiting cannot give a cluster more registered brokers than it has: refused, not
    retriable (too few *alive* of enough registered is NOT_ENOUGH_REPLICAS, retried)."""
    b = booted()
    _, reply = b.request(CreateTopicsRequest(topics=(new_topic("t", 1, 3),)))
    assert reply is not None
    (r,) = reply.body.topics
    assert r.error == ErrorCode.INVALID_REPLICATION_FACTOR
    assert not r.error.retriable
    assert r.message == "replication factor 3 is above the 1 broker in the cluster"
    assert "t" not in b.node.meta.topics


def test_create_existing_topic() -> None:
    b = booted(("t", 1))
    _, reply = b.request(CreateTopicsRequest(topics=(new_topic("t"),)))
    assert reply is not None
    assert topic_results(reply.body) == {"t": ErrorCode.TOPIC_ALREADY_EXISTS}


def test_two_requests_racing_to_create_one_topic() -> None:
    b = booted()
    first, _ = b.request(CreateTopicsRequest(topics=(new_topic("t", 2),)))
    second, _ = b.request(CreateTopicsRequest(topics=(new_topic("t", 5),)))
    b.run()
    assert topic_results(b.replies[first].body) == {"t": ErrorCode.NONE}
    assert topic_results(b.replies[second].body) == {"t": ErrorCode.TOPIC_ALREADY_EXISTS}
    assert len(b.node.meta.topics["t"].partitions) == 2


def test_create_topics_refused_by_a_broker_that_is_not_the_controller() -> None:
    r = Broker().boot().restart(boot=False)
    # After a restart the metadata log is replayed before the new term's no-op commits:
    # the brokers are known, but the controller does not serve yet.
    while not r.node.meta.brokers:
        r.round()
    assert not r.node.metadata_group.serving()
    _, reply = r.request(CreateTopicsRequest(topics=(new_topic("t"),)))
    assert reply is not None
    assert topic_results(reply.body) == {"t": ErrorCode.NOT_CONTROLLER}
    assert ErrorCode.NOT_CONTROLLER.retriable
    _, reply = r.request(DeleteTopicsRequest(names=("t",)))
    assert reply is not None
    assert topic_results(reply.body) == {"t": ErrorCode.NOT_CONTROLLER}


def test_create_topic_with_broker_defaults() -> None:
    b = booted()
    reply = b.call(CreateTopicsRequest(topics=(NewTopic(name="t"),)))
    assert topic_results(reply.body) == {"t": ErrorCode.NONE}
    assert len(b.node.meta.topics["t"].partitions) >= 1


def test_create_waiting_for_leaders_is_answered_when_the_topic_is_deleted() -> None:
    b = booted()
    create, _ = b.request(CreateTopicsRequest(topics=(new_topic("t", 2),)))
    while "t" not in b.node.meta.topics:
        b.round()
    assert not b.node.topic_led("t")  # committed; now waiting for leaders
    delete, _ = b.request(DeleteTopicsRequest(names=("t",)))
    b.run()
    assert topic_results(b.replies[delete].body) == {"t": ErrorCode.NONE}
    assert create in b.replies


def test_delete_topics() -> None:
    b = booted(("a", 2), ("b", 1))
    token, reply = b.request(DeleteTopicsRequest(names=("a", "nope")), correlation_id=9)
    assert reply is None
    b.run()
    reply = b.replies[token]
    assert reply.correlation_id == 9
    assert isinstance(reply.body, DeleteTopicsResponse)
    assert [t.name for t in reply.body.topics] == ["a", "nope"]
    assert topic_results(reply.body) == {
        "a": ErrorCode.NONE,
        "nope": ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
    }
    assert set(b.node.meta.topics) == {"b"}
    (t,) = b.call(MetadataRequest(topics=("a",))).body.topics
    assert t.error == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    got = results(b.call(produce_req(("a", 0, batch()))).body)
    assert got[("a", 0)].error == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION


def test_delete_unknown_topics_is_answered_at_once() -> None:
    b = booted()
    _, reply = b.request(DeleteTopicsRequest(names=("x",)))
    assert reply is not None
    assert reply.body == DeleteTopicsResponse(
        topics=(
            TopicResult(
                name="x", error=ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, message="no topic 'x'"
            ),
        )
    )


# -- init producer id -------------------------------------------------------------------------


def test_init_producer_id_new() -> None:
    b = booted()
    token, reply = b.request(InitProducerIdRequest(), correlation_id=12)
    assert reply is None
    b.run()
    first = b.replies[token]
    assert (first.correlation_id, first.error) == (12, ErrorCode.NONE)
    assert first.body == InitProducerIdResponse(producer_id=0, producer_epoch=0)
    second = b.call(InitProducerIdRequest())
    assert second.body == InitProducerIdResponse(producer_id=1, producer_epoch=0)


def test_init_producer_id_epoch_bump() -> None:
    b = booted()
    _, reply = b.request(InitProducerIdRequest(producer_id=17, producer_epoch=4))
    assert reply is not None  # answered at once, nothing to replicate
    assert reply.body == InitProducerIdResponse(producer_id=17, producer_epoch=5)
    # An exhausted epoch gets a new producer id instead.
    reply = b.call(InitProducerIdRequest(producer_id=17, producer_epoch=MAX_EPOCH))
    assert reply.body == InitProducerIdResponse(producer_id=0, producer_epoch=0)


def test_init_producer_id_refusals() -> None:
    b = booted()
    for req in (InitProducerIdRequest(producer_id=3, producer_epoch=-1),):
        _, reply = b.request(req)
        assert reply is not None
        assert (reply.error, reply.body) == (ErrorCode.INVALID_REQUEST, None)
        assert reply.message
    assert b.handler.pending == 0


def test_bumped_epoch_is_accepted_from_sequence_zero() -> None:
    b = booted(("t", 1))
    pid = b.call(InitProducerIdRequest()).body.producer_id
    b.call(produce_req(("t", 0, batch(2, pid=pid, epoch=0, seq=0))))
    bumped = b.call(InitProducerIdRequest(producer_id=pid, producer_epoch=0)).body
    assert (bumped.producer_id, bumped.producer_epoch) == (pid, 1)
    ok = results(b.call(produce_req(("t", 0, batch(1, pid=pid, epoch=1, seq=0)))).body)
    assert (ok[("t", 0)].error, ok[("t", 0)].base_offset) == (ErrorCode.NONE, 2)
    stale = results(b.call(produce_req(("t", 0, batch(1, pid=pid, epoch=0, seq=2)))).body)
    assert stale[("t", 0)].error == ErrorCode.INVALID_PRODUCER_EPOCH
