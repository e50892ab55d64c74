"""The producer's sender against a fake cluster: retries, epoch bumps, fencing, ordering,
delivery timeouts, linger and partitioning, driven by ProducerSequences.

The fake (tests/support/fake_cluster.py) implements the small interface the producer uses
(metadata cache, ready connections with an in-flight bound, InitProducerId, refresh). Its
partitions are the broker's real PartitionMachine, so duplicates, sequence gaps and epochs are
decided as the broker decides them; faults are scripted per produce answer. Time is Trio's
MockClock (autojump): no I/O.
"""

from __future__ import annotations

import time

import pytest
import trio
import trio.testing

from broker.wire.batch import decode_records
from broker.wire.errors import ErrorCode
from broker.wire.partitioner import default_partition, murmur2_partition
from consumers.errors import (
    BufferFull,
    NotLeaderError,
    OutOfOrderSequenceError,
    ProducerFencedError,
    SluiceError,
    UnknownTopicError,
)
from tests.support.fake_cluster import LOST, FakeBroker, FakeProducer, batches_sent


async def test_not_leader_is_retried_with_the_same_bytes_after_a_refresh(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = FakeBroker({"t": 1})
    broker.script.append((("t", 0), ErrorCode.NOT_LEADER_OR_FOLLOWER))
    async with FakeProducer(broker, linger_ms=0) as p:
        md = await (await p.send("t", b"v0")).wait()
    assert (md.topic, md.partition, md.offset) == ("t", 0, 0)
    sent = batches_sent(broker, ("t", 0))
    assert len(sent) == 2 and sent[0] == sent[1]  # same epoch, sequence and bytes
    assert broker.refreshes >= 1
    assert broker.log(("t", 0)) == [b"v0"]


async def test_retry_follows_the_leader_to_a_newer_term(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = FakeBroker({"t": 1})
    async with FakeProducer(broker, linger_ms=0) as p:
        await p.send_and_wait("t", b"a")
        broker.leader, broker.term = 1, 2  # a failover: broker 0 now answers NOT_LEADER
        md = await p.send_and_wait("t", b"b")
    assert md.offset == 1
    assert [b for _, b, _ in broker.produced] == [0, 0, 1]
    assert broker.log(("t", 0)) == [b"a", b"b"]


async def test_not_leader_hint_moves_the_retry_even_while_metadata_is_stale(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = FakeBroker({"t": 1}, hints=True)
    async with FakeProducer(broker, linger_ms=0) as p:
        await p.send_and_wait("t", b"a")
        broker.leader, broker.term = 1, 2
        broker.reported = (0, 1)  # every broker's metadata still names the old leader
        md = await p.send_and_wait("t", b"b")
    assert md.offset == 1
    assert [b for _, b, _ in broker.produced] == [0, 0, 1]
    assert broker.log(("t", 0)) == [b"a", b"b"]


async def test_a_refresh_naming_a_new_leader_ends_the_retry_backoff(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A batch refused many times (an election in progress) has backed off to seconds; once
    a refresh names the elected leader, the retry goes there at once."""
    broker = FakeBroker({"t": 1})
    tp = ("t", 0)
    async with FakeProducer(broker, linger_ms=0, retry_backoff_max_ms=5000) as p:
        await p.send_and_wait("t", b"a")
        broker.always[tp] = ErrorCode.LEADER_NOT_AVAILABLE
        d = await p.send("t", b"b")
        while len(batches_sent(broker, tp)) < 8:  # attempts 2..7: backoff grows to seconds
            await trio.sleep(0.01)
        del broker.always[tp]
        broker.leader, broker.term = 1, 2
        elected = trio.current_time()
        md = await d.wait()
        waited = trio.current_time() - elected
    assert md.offset == 1
    assert waited < 0.5, f"the retry waited {waited:.2f}s after the new leader was known"
    assert broker.log(tp) == [b"a", b"b"]


async def test_lost_answer_is_resent_and_deduplicated(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = FakeBroker({"t": 1})
    broker.script.append((("t", 0), LOST))
    async with FakeProducer(broker, linger_ms=0) as p:
        first = await p.send_and_wait("t", b"x")
        second = await p.send_and_wait("t", b"y")
    assert (first.offset, second.offset) == (0, 1)
    assert broker.log(("t", 0)) == [b"x", b"y"]  # written once, though sent twice
    assert len(batches_sent(broker, ("t", 0))) == 3


async def test_a_final_failure_bumps_the_epoch_and_leaves_no_gap(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = FakeBroker({"t": 1})
    async with FakeProducer(broker, linger_ms=0) as p:
        await p.send_and_wait("t", b"a")
        broker.script.append((("t", 0), ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER))
        failed = await p.send("t", b"lost")
        with pytest.raises(OutOfOrderSequenceError):
            await failed.wait()
        md = await p.send_and_wait("t", b"c")
        with pytest.raises(OutOfOrderSequenceError):
            await p.flush()  # the failure since the last flush
        await p.flush()  # reported once
    assert md.offset == 1
    assert broker.init_requests[-1].producer_id == broker.next_pid
    assert broker.init_requests[-1].producer_epoch == 0
    sent = batches_sent(broker, ("t", 0))
    assert [(e, s) for e, s, _, _ in sent] == [(0, 0), (0, 1), (1, 0)]
    assert broker.log(("t", 0)) == [b"a", b"c"]


async def test_fenced_producer_fails_everything_after(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = FakeBroker({"t": 2})
    broker.script.append((("t", 0), ErrorCode.INVALID_PRODUCER_EPOCH))
    async with FakeProducer(broker, linger_ms=0) as p:
        d = await p.send("t", b"a", partition=0)
        with pytest.raises(ProducerFencedError):
            await d.wait()
        with pytest.raises(ProducerFencedError):
            await p.send("t", b"b", partition=1)
        with pytest.raises(ProducerFencedError):
            p.send_nowait("t", b"b", partition=1)
        with pytest.raises(ProducerFencedError):
            await p.flush()


async def test_order_is_kept_when_pipelined_batches_are_refused(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Five single-record batches in flight; the first is refused (NOT_LEADER): the broker
    answers the other four with a sequence gap, and all five are resent oldest first."""
    broker = FakeBroker({"t": 1}, latency=0.05)
    broker.script.append((("t", 0), ErrorCode.NOT_LEADER_OR_FOLLOWER))
    async with FakeProducer(broker, linger_ms=0, batch_bytes=1) as p:
        deliveries = [p.send_nowait("t", b"%d" % i) for i in range(12)]
        offsets = [(await d.wait()).offset for d in deliveries]
    assert offsets == list(range(12))
    assert broker.log(("t", 0)) == [b"%d" % i for i in range(12)]
    assert broker.max_in_flight[("t", 0)] == 5
    sequences = [s for _, s, _, _ in batches_sent(broker, ("t", 0))]
    assert sequences[:5] == [0, 1, 2, 3, 4]  # pipelined
    assert sequences[5:10] == [0, 1, 2, 3, 4]  # resent in order after the refusal


async def test_delivery_timeout_fails_with_the_last_error_then_recovers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = FakeBroker({"t": 1})
    broker.always[("t", 0)] = ErrorCode.NOT_LEADER_OR_FOLLOWER
    async with FakeProducer(broker, linger_ms=0, delivery_timeout_s=3) as p:
        start = trio.current_time()
        d = await p.send("t", b"doomed")
        with pytest.raises(NotLeaderError):
            await d.wait()
        assert 3 <= trio.current_time() - start < 5
        with pytest.raises(NotLeaderError):
            await p.flush()
        del broker.always[("t", 0)]
        md = await p.send_and_wait("t", b"next")
    assert md.offset == 0
    # The abandoned batch's outcome was unknown: the epoch was bumped before the next one.
    assert batches_sent(broker, ("t", 0))[-1][:2] == (1, 0)


async def test_linger_holds_a_batch_and_a_full_batch_goes_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = FakeBroker({"t": 1})
    async with FakeProducer(broker, linger_ms=2000, batch_bytes=1000) as p:
        start = trio.current_time()
        d = await p.send("t", b"a")
        await d.wait()
        assert trio.current_time() - start >= 2.0
        start = trio.current_time()
        deliveries = [await p.send("t", b"x" * 100) for _ in range(12)]
        await deliveries[0].wait()
        assert trio.current_time() - start < 1.0  # sealed by size, not by linger
        await p.flush()
    sizes = [n for _, _, n, _ in batches_sent(broker, ("t", 0))]
    assert sizes[0] == 1 and sizes[1] > 1


@pytest.mark.parametrize("name", ["default", "murmur2"])
async def test_keyed_records_go_where_the_pinned_partitioner_says(
    autojump_clock: trio.testing.MockClock, name: str
) -> None:
    broker = FakeBroker({"t": 8})
    pick = default_partition if name == "default" else murmur2_partition
    async with FakeProducer(broker, partitioner=name) as p:
        deliveries = {b"k%d" % i: p.send_nowait("t", b"v", key=b"k%d" % i) for i in range(100)}
        for key, d in deliveries.items():
            assert (await d.wait()).partition == pick(key, 8)


async def test_batches_for_one_leader_share_a_request(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = FakeBroker({"t": 4, "u": 2})
    async with FakeProducer(broker, linger_ms=50) as p:
        for partition in range(4):
            p.send_nowait("t", b"v", partition=partition)
        for partition in range(2):
            p.send_nowait("u", b"v", partition=partition)
        await p.flush()
    assert len(broker.produced) == 1
    request = broker.produced[0][2]
    assert sorted((t.name, len(t.partitions)) for t in request.topics) == [("t", 4), ("u", 2)]


async def test_send_nowait_raises_buffer_full_and_send_waits(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = FakeBroker({"t": 1}, latency=0.5)
    async with FakeProducer(broker, buffer_bytes=1000, linger_ms=0) as p:
        p.send_nowait("t", b"x" * 500)
        with pytest.raises(BufferFull):
            for _ in range(10):
                p.send_nowait("t", b"x" * 500)
        start = trio.current_time()
        d = await p.send("t", b"x" * 500)  # waits for room
        assert trio.current_time() - start >= 0.4
        await d.wait()
        assert p.buffered_bytes == 0


async def test_unknown_topic_records_queue_until_the_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = FakeBroker({"t": 1})
    async with FakeProducer(broker, delivery_timeout_s=2) as p:
        d = p.send_nowait("nope", b"v")
        with pytest.raises(UnknownTopicError):
            await d.wait()
        with pytest.raises(UnknownTopicError):
            await p.send("nope", b"v")
        with pytest.raises(SluiceError):
            await p.flush()
        assert p.buffered_bytes == 0


async def test_non_idempotent_mode_sends_without_a_producer_id(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = FakeBroker({"t": 1})
    broker.script.append((("t", 0), ErrorCode.NOT_LEADER_OR_FOLLOWER))
    async with FakeProducer(broker, idempotent=False, linger_ms=0) as p:
        md = await p.send_and_wait("t", b"v")
    assert md.offset == 0
    assert not broker.init_requests
    assert [s for _, s, _, _ in batches_sent(broker, ("t", 0))] == [-1, -1]


async def test_send_checks_and_keeps_every_field(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The record a send builds (buffers converted, headers from pairs or a mapping, the
    timestamp given or the wall clock's) is what the batch carries; bad fields are refused
    before anything is queued."""
    broker = FakeBroker({"t": 1})
    async with FakeProducer(broker, linger_ms=0) as p:
        before = time.time_ns() // 1_000_000
        plain = p.send_nowait("t", b"v0")
        p.send_nowait("t", bytearray(b"v1"), key=memoryview(b"k1"), headers={"h": b"x"})
        p.send_nowait("t", None, key=b"", headers=[("a", bytearray(b"1")), ("a", b"")],
                      timestamp=-5)  # fmt: skip
        await p.flush()
        after = time.time_ns() // 1_000_000
        with pytest.raises(TypeError):
            p.send_nowait("t", "text")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            p.send_nowait("t", b"v", key=5)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            p.send_nowait("t", b"v", headers={"h": None})  # type: ignore[dict-item]
        with pytest.raises(TypeError):
            p.send_nowait("t", b"v", timestamp=1.5)  # type: ignore[arg-type]
        assert p.buffered_bytes == 0
    records = [r for _, _, _, data in batches_sent(broker, ("t", 0)) for r in decode_records(data)]
    assert [(r.key, r.value, r.headers) for r in records] == [
        (None, b"v0", ()),
        (b"k1", b"v1", (("h", b"x"),)),
        (b"", None, (("a", b"1"), ("a", b""))),
    ]
    assert before <= records[0].timestamp <= after and records[2].timestamp == -5
    assert plain.timestamp == records[0].timestamp


async def test_delivery_exception_is_the_outcome_without_metadata(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = FakeBroker({"t": 1}, latency=0.5)
    async with FakeProducer(broker, linger_ms=0, delivery_timeout_s=2) as p:
        d = p.send_nowait("t", b"a")
        assert not d.done
        with pytest.raises(RuntimeError):
            d.exception()
        await d.wait()
        assert d.exception() is None and d.result().offset == 0
        broker.script.append((("t", 0), ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER))
        failed = p.send_nowait("t", b"b")
        with pytest.raises(OutOfOrderSequenceError):
            await failed.wait()
        first, second = failed.exception(), failed.exception()
        assert isinstance(first, OutOfOrderSequenceError) and first is not second
        unknown = p.send_nowait("nope", b"c")
        with pytest.raises(UnknownTopicError):
            await unknown.wait()
        assert isinstance(unknown.exception(), UnknownTopicError)
        with pytest.raises(SluiceError):
            await p.flush()
