"""The producer's Delivery API and partition checks against the fake cluster (no I/O, Trio's
MockClock): `await delivery`, `add_done_callback`, a partition the topic does not have
(final once a fresh metadata read confirms it; routed if the topic grew), an unreachable
cluster (NETWORK_EXCEPTION, not UNKNOWN_TOPIC_OR_PARTITION), the `delivery_timeout_s` alias
and the reprs."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import pytest
import trio
import trio.testing

from broker.wire.messages import MetadataResponse
from consumers import Producer
from consumers.errors import (
    BrokerUnavailableError,
    ClientClosedError,
    RequestTimedOutError,
    UnknownTopicError,
)
from consumers.producer import Delivery
from tests.support.fake_cluster import FakeBroker, FakeCluster, FakeProducer


async def test_a_delivery_is_awaitable(autojump_clock: trio.testing.MockClock) -> None:
    async with FakeProducer(FakeBroker({"t": 2}), linger_ms=0) as p:
        md = await p.send_nowait("t", b"v", partition=1)
        assert (md.topic, md.partition, md.offset) == ("t", 1, 0)
        again = await p.send("t", b"w", partition=1)
        assert (await again).offset == 1
        assert again.result() == await again.wait()


async def test_done_callbacks_run_once_settled_and_at_once_after(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    broker = FakeBroker({"t": 1}, latency=0.5)
    seen: list[tuple[str, Delivery]] = []

    def boom(d: Delivery) -> None:
        raise RuntimeError("a callback that fails")

    async with FakeProducer(broker, linger_ms=0, delivery_timeout_s=2) as p:
        d = p.send_nowait("t", b"a")
        d.add_done_callback(boom)
        d.add_done_callback(lambda x: seen.append(("first", x)))
        d.add_done_callback(lambda x: seen.append(("second", x)))
        assert seen == []
        with caplog.at_level(logging.ERROR, logger="consumers.producer"):
            md = await d
        assert [name for name, _ in seen] == ["first", "second"]
        assert all(x is d and x.done for _, x in seen)
        assert "a callback that fails" in caplog.text  # logged, and the producer went on
        d.add_done_callback(lambda x: seen.append(("late", x)))
        assert seen[-1] == ("late", d)
        assert md == d.result()

        # Unrouted (unknown topic): the callback hears the failure.
        unknown = p.send_nowait("nope", b"c")
        unknown.add_done_callback(lambda x: seen.append(("unknown", x)))
        with pytest.raises(UnknownTopicError):
            await unknown
        assert seen[-1] == ("unknown", unknown)
        assert isinstance(unknown.exception(), UnknownTopicError)
        with pytest.raises(UnknownTopicError):
            await p.flush()

        # Closing without waiting fails what is still queued: its callbacks run too.
        pending = p.send_nowait("t", b"d")
        pending.add_done_callback(lambda x: seen.append(("closed", x)))
        with pytest.raises(RequestTimedOutError):
            await p.close(timeout_ms=0)
    assert seen[-1] == ("closed", pending)
    assert isinstance(pending.exception(), ClientClosedError)
    assert [name for name, _ in seen].count("first") == 1


async def test_a_partition_out_of_range_fails_for_good_after_a_fresh_read(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = FakeBroker({"t": 3})
    async with FakeProducer(broker, linger_ms=0) as p:
        before = broker.refreshes
        with pytest.raises(UnknownTopicError) as raised:
            await p.send("t", b"v", partition=9)
        assert not raised.value.retriable
        assert raised.value.message == "partition 9 out of range: topic 't' has 3 partitions (0-2)"
        assert broker.refreshes > before, "confirmed by a fresh metadata read"
        d = p.send_nowait("t", b"v", partition=9)
        with pytest.raises(UnknownTopicError) as raised:
            await d
        assert not raised.value.retriable
        with pytest.raises(ValueError):
            p.send_nowait("t", b"v", partition=-1)
        with pytest.raises(UnknownTopicError):
            await p.flush()
        assert p.buffered_bytes == 0
        assert await p.partitions_for("t") == [0, 1, 2]
        with pytest.raises(UnknownTopicError) as raised:
            await p.partitions_for("nope")
        assert not raised.value.retriable


async def test_a_partition_the_topic_grew_is_routed_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The cached metadata says 3 partitions; the topic has 5 by now (alter_topic). Records
    sent to partition 4 wait for the fresh read, and the topic's records keep their order."""
    broker = FakeBroker({"t": 3})
    async with FakeProducer(broker, linger_ms=0) as p:
        broker.partitions["t"] = 5
        held = [p.send_nowait("t", b"new-%d" % i, partition=4) for i in range(3)]
        later = p.send_nowait("t", b"later", partition=4)
        assert not any(d.done for d in held)
        offsets = [(await d).offset for d in [*held, later]]
        assert offsets == [0, 1, 2, 3]
        assert broker.log(("t", 4)) == [b"new-0", b"new-1", b"new-2", b"later"]
        md = await p.send_and_wait("t", b"direct", partition=4)
        assert md.offset == 4


class DeadCluster(FakeCluster):
    """No broker answers metadata."""

    async def refresh(self, topics: Iterable[str] | None = None) -> MetadataResponse:
        await trio.sleep(0.1)
        raise BrokerUnavailableError("no broker answered metadata: cannot connect to b9:1")

    async def topic(self, name: str, deadline: float) -> object:
        while trio.current_time() < deadline:
            try:
                await self.refresh([name])
            except BrokerUnavailableError:
                await trio.sleep(0.2)
        raise BrokerUnavailableError("no broker answered metadata: cannot connect to b9:1")


class DeadProducer(FakeProducer):
    def _make_cluster(self) -> FakeCluster:  # type: ignore[override]
        return DeadCluster(self.broker)


async def test_an_unreachable_cluster_is_a_network_exception(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with DeadProducer(FakeBroker({"t": 1}), delivery_timeout_ms=2_000) as p:
        d = p.send_nowait("other", b"v")
        with pytest.raises(BrokerUnavailableError) as raised:
            await d
        assert "no broker reachable" in str(raised.value)
        assert "b9:1" in str(raised.value) and "NETWORK_EXCEPTION" in str(raised.value)
        with pytest.raises(BrokerUnavailableError):
            await p.send("other", b"v")
        with pytest.raises(BrokerUnavailableError):
            await p.partitions_for("other")
        with pytest.raises(BrokerUnavailableError):
            await p.flush()


async def test_delivery_timeout_s_is_the_older_name_of_delivery_timeout_ms(
    autojump_clock: trio.testing.MockClock,
) -> None:
    assert Producer().delivery_timeout_ms == 30_000
    assert Producer(delivery_timeout_ms=1500).delivery_timeout_s == 1.5
    assert Producer(delivery_timeout_s=2).delivery_timeout_ms == 2000
    with pytest.raises(TypeError):
        Producer(delivery_timeout_ms=1000, delivery_timeout_s=1)
    with pytest.raises(ValueError):
        Producer(delivery_timeout_ms=0)
    async with FakeProducer(FakeBroker({"t": 1}), delivery_timeout_s=2) as p:
        start = trio.current_time()
        with pytest.raises(UnknownTopicError):
            await p.send_nowait("nope", b"v")
        assert 2 <= trio.current_time() - start < 3
        with pytest.raises(UnknownTopicError):
            await p.flush()


async def test_reprs_say_what_a_user_needs(autojump_clock: trio.testing.MockClock) -> None:
    p = FakeProducer(FakeBroker({"t": 2}, latency=0.5), linger_ms=0, transactional_id=None)
    assert repr(p) == (
        "<Producer bootstrap='fake:1' transactional_id=None idempotent=True not open"
        " buffered_bytes=0>"
    )
    async with p:
        d = p.send_nowait("t", b"v", partition=1)
        assert "open buffered_bytes=" in repr(p) and "buffered_bytes=0" not in repr(p)
        assert repr(d) == "<Delivery topic='t' partition=1 pending>"
        await d
        assert repr(d) == "<Delivery topic='t' partition=1 offset=0 acknowledged>"
        failed = p.send_nowait("nope", b"v")
        assert repr(failed) == "<Delivery topic='nope' pending>"
        with pytest.raises(UnknownTopicError):
            await failed
        assert repr(failed).startswith("<Delivery topic='nope' failed (UNKNOWN_TOPIC_OR_PART")
        with pytest.raises(UnknownTopicError):
            await p.flush()
    assert repr(p).endswith(" closed buffered_bytes=0>")
