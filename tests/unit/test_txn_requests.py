"""The transaction APIs on one in-memory broker (tests/support/broker_harness, with its peer
requests on the local path): placement, InitProducerId, registration, transactional
produce, commit and abort seen by read_committed and read_uncommitted fetches, transactional
offsets, the operator's view and abort, timeouts and zombies."""

from __future__ import annotations

from broker.core.txn.coordinator import coordinator_partition
from broker.wire.batch import Record, decode_records, encode_batch
from broker.wire.errors import ErrorCode
from broker.wire.group_messages import (
    CommitPartition,
    CommitTopic,
    CoordinatorType,
    FindCoordinatorRequest,
    OffsetFetchRequest,
    OffsetFetchResponse,
    TopicPartitions,
)
from broker.wire.messages import (
    LATEST_TIMESTAMP,
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
    ProducePartition,
    ProduceRequest,
    ProduceResponse,
    ProduceTopic,
)
from broker.wire.txn_messages import (
    AbortTransactionRequest,
    AddOffsetsToTxnRequest,
    AddPartitionsToTxnRequest,
    DescribeTransactionsRequest,
    DescribeTransactionsResponse,
    EndTxnRequest,
    EndTxnResponse,
    ListTransactionsRequest,
    ListTransactionsResponse,
    TxnOffsetCommitRequest,
    TxnOffsetCommitResponse,
    TxnSequence,
    TxnTopic,
)
from tests.support.broker_harness import Broker

OPTIONS = {"internal_topic_partitions": 2, "tick_ms": 50}


def booted() -> Broker:
    b = Broker(options=OPTIONS, peers=True).boot()
    b.create_topic("t", partitions=2)
    for _ in range(60):
        reply = b.call(FindCoordinatorRequest(key="tx", key_type=CoordinatorType.TRANSACTION))
        if reply.error == ErrorCode.NONE:
            return b
        assert reply.error == ErrorCode.COORDINATOR_NOT_AVAILABLE, reply
        b.tick()
    raise AssertionError("no transaction coordinator")


def init(b: Broker, txn: str = "tx", timeout_ms: int = 60_000) -> tuple[int, int]:
    for _ in range(40):
        reply = b.call(
            InitProducerIdRequest(transactional_id=txn, transaction_timeout_ms=timeout_ms)
        )
        if reply.error == ErrorCode.NONE:
            assert isinstance(reply.body, InitProducerIdResponse)
            return reply.body.producer_id, reply.body.producer_epoch
        assert reply.error.retriable, reply
        b.tick()
    raise AssertionError("InitProducerId never succeeded")


def add(b: Broker, pid: int, epoch: int, *parts: int, txn: str = "tx") -> ErrorCode:
    req = AddPartitionsToTxnRequest(
        transactional_id=txn,
        producer_id=pid,
        producer_epoch=epoch,
        topics=(TxnTopic(name="t", partitions=tuple(parts)),),
    )
    return b.call(req).error


def produce(b: Broker, part: int, pid: int, epoch: int, seq: int, *values: bytes) -> ErrorCode:
    data = encode_batch(
        [Record(value=v, timestamp=1) for v in values],
        producer_id=pid,
        producer_epoch=epoch,
        base_sequence=seq,
        transactional=True,
    )
    req = ProduceRequest(
        topics=(
            ProduceTopic(name="t", partitions=(ProducePartition(partition=part, batch=data),)),
        ),
        transactional_id="tx",
    )
    reply = b.call(req)
    assert isinstance(reply.body, ProduceResponse)
    return reply.body.topics[0].partitions[0].error


def end(
    b: Broker, pid: int, epoch: int, commit: bool, seqs: dict[int, int], txn: str = "tx"
) -> tuple[ErrorCode, object]:
    req = EndTxnRequest(
        transactional_id=txn,
        producer_id=pid,
        producer_epoch=epoch,
        commit=commit,
        sequences=tuple(
            TxnSequence(topic="t", partition=p, last_sequence=s) for p, s in seqs.items()
        ),
    )
    reply = b.call(req)
    return reply.error, reply.body


def read(b: Broker, part: int, committed: bool) -> tuple[list[bytes], int, int]:
    """(values, next offset, last stable offset) from offset 0."""
    req = FetchRequest(
        topics=(FetchTopic(name="t", partitions=(FetchPartition(partition=part, offset=0),)),),
        isolation=IsolationLevel.READ_COMMITTED if committed else IsolationLevel.READ_UNCOMMITTED,
        max_wait_ms=0,
    )
    body = b.call(req).body
    assert isinstance(body, FetchResponse)
    p = body.topics[0].partitions[0]
    values = []
    for fb in p.batches:
        for r in decode_records(fb.data):
            if r.value is not None and not r.key:
                values.append(r.value)
    assert p.next_offset is not None
    return values, p.next_offset, p.last_stable_offset


def latest(b: Broker, part: int, committed: bool) -> int:
    req = ListOffsetsRequest(
        topics=(
            ListOffsetsTopic(
                name="t",
                partitions=(ListOffsetsPartition(partition=part, timestamp=LATEST_TIMESTAMP),),
            ),
        ),
        isolation=IsolationLevel.READ_COMMITTED if committed else IsolationLevel.READ_UNCOMMITTED,
    )
    body = b.call(req).body
    assert isinstance(body, ListOffsetsResponse)
    return body.topics[0].partitions[0].offset


def test_a_committed_transaction_becomes_visible_whole() -> None:
    b = booted()
    pid, epoch = init(b)
    assert add(b, pid, epoch, 0, 1) == ErrorCode.NONE
    assert produce(b, 0, pid, epoch, 0, b"a", b"b") == ErrorCode.NONE
    assert produce(b, 1, pid, epoch, 0, b"c") == ErrorCode.NONE
    # Open: read_committed sees nothing, read_uncommitted all; the LSO holds at 0.
    assert read(b, 0, committed=True)[0] == [] and read(b, 0, committed=True)[2] == 0
    assert read(b, 0, committed=False)[0] == [b"a", b"b"]
    assert latest(b, 0, committed=True) == 0 and latest(b, 0, committed=False) == 2
    err, body = end(b, pid, epoch, True, {0: 1, 1: 0})
    assert err == ErrorCode.NONE and isinstance(body, EndTxnResponse)
    assert (body.producer_id, body.producer_epoch, body.reinit) == (pid, epoch + 1, False)
    # Answered once complete: both partitions hold their markers; the LSO is the end.
    values, next_offset, lso = read(b, 0, committed=True)
    assert values == [b"a", b"b"] and next_offset == 3 and lso == 3
    assert read(b, 1, committed=True)[0] == [b"c"]
    # A retry of EndTxn (a client that lost the answer) gets the same answer.
    err, again = end(b, pid, epoch, True, {0: 1, 1: 0})
    assert err == ErrorCode.NONE and again == body


def test_an_aborted_transaction_is_never_read_committed() -> None:
    b = booted()
    pid, epoch = init(b)
    add(b, pid, epoch, 0)
    produce(b, 0, pid, epoch, 0, b"gone")
    err, body = end(b, pid, epoch, False, {0: 0})
    assert err == ErrorCode.NONE and isinstance(body, EndTxnResponse)
    epoch = body.producer_epoch
    add(b, pid, epoch, 0)
    produce(b, 0, pid, epoch, 0, b"kept")
    assert end(b, pid, epoch, True, {0: 0})[0] == ErrorCode.NONE
    values, next_offset, lso = read(b, 0, committed=True)
    assert values == [b"kept"] and next_offset == lso == 4  # data, abort, data, commit
    assert read(b, 0, committed=False)[0] == [b"gone", b"kept"]


def test_commit_with_data_missing_is_refused_and_aborted() -> None:
    b = booted()
    pid, epoch = init(b)
    add(b, pid, epoch, 0)
    produce(b, 0, pid, epoch, 0, b"x")
    # The client claims a sequence the partition never got: the participant votes no.
    err, _ = end(b, pid, epoch, True, {0: 5})
    assert err == ErrorCode.TRANSACTION_ABORTED
    assert read(b, 0, committed=True)[0] == []
    assert read(b, 0, committed=True)[2] == read(b, 0, committed=False)[1]  # nothing open


def test_writes_outside_the_registered_partitions_are_refused() -> None:
    b = booted()
    pid, epoch = init(b)
    add(b, pid, epoch, 0)
    assert produce(b, 1, pid, epoch, 0, b"y") == ErrorCode.INVALID_TXN_STATE


def test_a_new_producer_fences_the_old_one_and_aborts_its_transaction() -> None:
    b = booted()
    pid, epoch = init(b)
    add(b, pid, epoch, 0)
    produce(b, 0, pid, epoch, 0, b"zombie")
    pid2, epoch2 = init(b)  # retries while the old transaction aborts
    assert pid2 == pid and epoch2 > epoch + 1
    assert produce(b, 0, pid, epoch, 1, b"late") == ErrorCode.PRODUCER_FENCED
    assert end(b, pid, epoch, True, {0: 0})[0] == ErrorCode.PRODUCER_FENCED
    assert read(b, 0, committed=True)[0] == []


def test_a_transaction_past_its_timeout_is_aborted_and_its_producer_fenced() -> None:
    b = booted()
    pid, epoch = init(b, timeout_ms=200)
    add(b, pid, epoch, 0)
    produce(b, 0, pid, epoch, 0, b"slow")
    b.tick(8)  # 400 ms of ticks
    assert read(b, 0, committed=True)[2] == read(b, 0, committed=False)[1]
    assert end(b, pid, epoch, True, {0: 0})[0] == ErrorCode.TRANSACTION_TIMED_OUT
    assert add(b, pid, epoch + 1, 0) == ErrorCode.PRODUCER_FENCED


def test_offsets_sent_in_a_transaction_appear_with_its_commit() -> None:
    b = booted()
    pid, epoch = init(b)
    register = AddOffsetsToTxnRequest(
        transactional_id="tx", producer_id=pid, producer_epoch=epoch, group_id="g"
    )
    for _ in range(40):  # the offsets topic is created on first use
        error = b.call(register).error
        if error != ErrorCode.COORDINATOR_NOT_AVAILABLE:
            break
        b.tick()
    assert error == ErrorCode.NONE
    commit = TxnOffsetCommitRequest(
        transactional_id="tx",
        group_id="g",
        producer_id=pid,
        producer_epoch=epoch,
        member_id="",
        member_epoch=-1,
        topics=(CommitTopic(topic="t", partitions=(CommitPartition(partition=0, offset=17),)),),
    )
    reply = b.call(commit)
    assert isinstance(reply.body, TxnOffsetCommitResponse)
    assert reply.body.topics[0].partitions[0].error == ErrorCode.NONE
    asked = OffsetFetchRequest(group_id="g", topics=(TopicPartitions(topic="t", partitions=(0,)),))
    assert b.call(asked).error == ErrorCode.UNSTABLE_OFFSET_COMMIT
    assert end(b, pid, epoch, True, {})[0] == ErrorCode.NONE
    fetched = b.call(asked).body
    assert isinstance(fetched, OffsetFetchResponse) and fetched.offsets[0].offset == 17


def test_operators_see_and_abort_open_transactions() -> None:
    b = booted()
    pid, epoch = init(b)
    add(b, pid, epoch, 0, 1)
    listed = b.call(ListTransactionsRequest()).body
    assert isinstance(listed, ListTransactionsResponse)
    assert [(t.transactional_id, t.state, t.participants) for t in listed.transactions] == [
        ("tx", "ongoing", 2)
    ]
    described = b.call(DescribeTransactionsRequest(transactional_ids=("tx", "nope"))).body
    assert isinstance(described, DescribeTransactionsResponse)
    tx, nope = described.transactions
    assert tx.state == "ongoing" and [p.partition for p in tx.participants] == [0, 1]
    assert nope.error == ErrorCode.TRANSACTIONAL_ID_NOT_FOUND
    assert b.call(AbortTransactionRequest(transactional_id="tx")).error == ErrorCode.NONE
    b.tick(2)
    assert end(b, pid, epoch, True, {})[0] == ErrorCode.TRANSACTION_ABORTED
    assert add(b, pid, epoch + 1, 0) == ErrorCode.PRODUCER_FENCED


def test_a_timeout_fires_while_the_coordinator_is_busy_with_other_transactions() -> None:
    """Every round of a busy coordinator commits entries before it applies them; its driver
    (and the timers in it) must live through those rounds."""
    b = booted()
    busy = next(
        f"busy-{i}"
        for i in range(100)
        if coordinator_partition(f"busy-{i}", OPTIONS["internal_topic_partitions"])
        == coordinator_partition("tx", OPTIONS["internal_topic_partitions"])
    )
    pid, epoch = init(b, timeout_ms=200)
    add(b, pid, epoch, 0)
    produce(b, 0, pid, epoch, 0, b"stuck")
    other, other_epoch = init(b, busy)
    for _ in range(10):  # 500 ms of ticks, each after a round of the other's transactions
        assert add(b, other, other_epoch, 1, txn=busy) == ErrorCode.NONE
        err, body = end(b, other, other_epoch, False, {}, txn=busy)
        assert err == ErrorCode.NONE and isinstance(body, EndTxnResponse)
        other_epoch = body.producer_epoch
        b.tick()
    assert read(b, 0, committed=True)[2] == read(b, 0, committed=False)[1]  # aborted: LSO free
    assert end(b, pid, epoch, True, {0: 0})[0] == ErrorCode.TRANSACTION_TIMED_OUT
