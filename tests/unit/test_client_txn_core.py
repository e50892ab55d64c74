"""The producer core in transactional mode (pure): nothing is sent to a partition before the
coordinator registered it, batches are flagged transactional, the first failure fails what is
not sent and marks the transaction for abort, a fenced answer is fatal, and EndTxn's sequences
are the last ones written per partition."""

from __future__ import annotations

import random

from broker.wire.batch import Record, parse_header
from broker.wire.errors import ErrorCode
from broker.wire.messages import (
    BrokerInfo,
    InitProducerIdResponse,
    MetadataResponse,
    PartitionInfo,
    ProducePartitionResult,
    ProduceResponse,
    ProduceTopicResult,
    TopicInfo,
)
from consumers.core.accumulator import Accumulator, Batch
from consumers.core.metadata import MetadataCache
from consumers.core.producer import ProducerCore
from consumers.core.refresh import Backoff, MetadataRefresh
from consumers.errors import TransactionAbortedError, TransactionalProducerFencedError


def core(settled: list[Batch]) -> ProducerCore[int]:
    meta = MetadataCache()
    meta.update(
        MetadataResponse(
            cluster_id="c",
            brokers=(BrokerInfo(id=0, host="127.0.0.1", port=9092),),
            controller=0,
            topics=(
                TopicInfo(
                    name="t",
                    partitions=tuple(
                        PartitionInfo(partition=p, leader=0, leader_term=1, replicas=(0,))
                        for p in range(3)
                    ),
                ),
            ),
        )
    )
    backoff = Backoff(0.05, 1.0, random.Random(1).random)
    c: ProducerCore[int] = ProducerCore(
        accumulator=Accumulator(
            batch_bytes=1 << 16,
            linger_s=0,
            delivery_timeout_s=30,
            partitioner=lambda key, n: 0,
            rng=random.Random(1),
        ),
        metadata=meta,
        refresh=MetadataRefresh(backoff),
        backoff=backoff,
        idempotent=True,
        max_in_flight=5,
        max_request_bytes=1 << 20,
        on_settled=settled.append,
        on_routed=lambda ticket, batch, index: None,
        on_unroutable=lambda ticket, size, error: None,
        transactional=True,
    )
    c.identity_answered(InitProducerIdResponse(producer_id=7, producer_epoch=3))
    c.new_transaction()
    return c


def send(c: ProducerCore[int], partition: int, value: bytes, now: float = 0.0) -> None:
    c.enqueue("t", Record(value=value, timestamp=1), None, partition, len(value) + 20, now, 0)
    c.advance(now)


def answer(c: ProducerCore[int], picked: list[Batch], code: ErrorCode, now: float = 0.0) -> None:
    c.on_response(
        picked,
        ProduceResponse(
            topics=(
                ProduceTopicResult(
                    name="t",
                    partitions=tuple(
                        ProducePartitionResult(
                            partition=b.tp[1], error=code, base_offset=0 if code == 0 else -1
                        )
                        for b in picked
                    ),
                ),
            )
        ),
        now,
    )


def test_only_registered_partitions_are_sent_and_batches_are_transactional() -> None:
    settled: list[Batch] = []
    c = core(settled)
    assert c.identity_request(0.0) is None  # the coordinator hands out identities, not any broker
    send(c, 0, b"a")
    send(c, 1, b"b")
    c.acc.seal_all()
    assert c.unregistered() == {("t", 0), ("t", 1)}
    assert c.drain_plan(0.0) == {}
    c.registered.add(("t", 0))
    plan = c.drain_plan(0.0)
    assert plan == {0: [("t", 0)]}
    (batch,) = c.pick(plan[0], 0.0)
    assert batch.data is not None
    h = parse_header(batch.data)
    assert h.is_transactional and (h.producer_id, h.producer_epoch) == (7, 3)
    answer(c, [batch], ErrorCode.NONE)
    assert c.last_sequences() == {("t", 0): 0}
    c.registered.add(("t", 1))
    assert c.last_sequences() == {("t", 0): 0, ("t", 1): -1}


def test_a_failed_batch_fails_the_unsent_ones_and_marks_the_transaction() -> None:
    settled: list[Batch] = []
    c = core(settled)
    c.registered.update({("t", 0), ("t", 1)})
    send(c, 0, b"a")
    c.acc.seal_all()
    (batch,) = c.pick(c.drain_plan(0.0)[0], 0.0)
    send(c, 1, b"b")  # still queued when the first fails
    answer(c, [batch], ErrorCode.MESSAGE_TOO_LARGE)
    assert c.txn_error is not None and c.txn_error.code is ErrorCode.MESSAGE_TOO_LARGE
    assert c.fatal is None  # the transaction must abort; the producer goes on
    queued = [b for b in settled if b.tp == ("t", 1)]
    assert len(queued) == 1 and isinstance(queued[0].error, TransactionAbortedError)
    assert c.on_the_wire() == 0


def test_a_fenced_answer_is_fatal() -> None:
    settled: list[Batch] = []
    c = core(settled)
    c.registered.add(("t", 0))
    send(c, 0, b"a")
    c.acc.seal_all()
    (batch,) = c.pick(c.drain_plan(0.0)[0], 0.0)
    answer(c, [batch], ErrorCode.PRODUCER_FENCED)
    assert isinstance(c.fatal, TransactionalProducerFencedError)
    assert isinstance(batch.error, TransactionalProducerFencedError)


def test_an_answer_for_a_batch_the_abort_failed_only_resolves_its_sequence() -> None:
    settled: list[Batch] = []
    c = core(settled)
    c.registered.add(("t", 0))
    send(c, 0, b"a")
    c.acc.seal_all()
    (batch,) = c.pick(c.drain_plan(0.0)[0], 0.0)
    c.abort_unsent(TransactionAbortedError("aborted"), 0.0)
    assert batch.settled and c.on_the_wire() == 1
    answer(c, [batch], ErrorCode.NOT_LEADER_OR_FOLLOWER)  # would be retried: it is not
    assert c.on_the_wire() == 0 and not any(ps.retry for ps in c.partitions.values())
    c.identity_answered(InitProducerIdResponse(producer_id=7, producer_epoch=4))
    c.new_transaction()
    assert c.sequences is not None and c.sequences.next_sequence(("t", 0)) == 0
