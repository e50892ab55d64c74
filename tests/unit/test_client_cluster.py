"""Metadata cache (never back to an older leader term), bootstrap parsing, backoff, retries."""

from __future__ import annotations

import itertools

import pytest
import trio
import trio.testing

from broker.wire.errors import ErrorCode
from broker.wire.messages import (
    BrokerInfo,
    MetadataRequest,
    MetadataResponse,
    PartitionInfo,
    TopicInfo,
)
from broker.wire.protocol import RequestHeader
from consumers.cluster import Backoff, Cluster, MetadataCache, parse_bootstrap
from consumers.errors import (
    BackpressureError,
    BrokerUnavailableError,
    InvalidConfigError,
    RequestTimedOutError,
    SluiceError,
)
from tests.support.fake_broker import Handler, Send, closed_port, local_metadata, serve


def answer(
    leaders: dict[int, tuple[int | None, int]],
    *,
    topic: str = "t",
    brokers: tuple[int, ...] = (0, 1, 2),
    error: ErrorCode = ErrorCode.NONE,
) -> MetadataResponse:
    """A metadata answer: partition -> (leader, leader_term)."""
    return MetadataResponse(
        cluster_id="c",
        controller=0,
        brokers=tuple(BrokerInfo(id=b, host="127.0.0.1", port=9000 + b) for b in brokers),
        topics=(
            TopicInfo(
                name=topic,
                error=error,
                partitions=tuple(
                    PartitionInfo(partition=p, leader=leader, leader_term=term, replicas=(0, 1, 2))
                    for p, (leader, term) in sorted(leaders.items())
                ),
                replication_factor=3,
            ),
        ),
    )


def test_metadata_never_steps_back_to_an_older_term() -> None:
    cache = MetadataCache()
    cache.update(answer({0: (1, 5), 1: (2, 3)}))
    assert cache.leader_for(("t", 0)) == 1
    # A broker that has not heard of term 5 reports the old leader of term 4: ignored.
    cache.update(answer({0: (0, 4), 1: (2, 3)}))
    assert cache.leader_for(("t", 0)) == 1
    assert cache.partition(("t", 0)) is not None
    assert cache.partition(("t", 0)).leader_term == 5  # type: ignore[union-attr]
    # A newer term wins, even from another broker's answer.
    cache.update(answer({0: (2, 6), 1: (2, 3)}))
    assert cache.leader_for(("t", 0)) == 2
    # Same term without a leader does not erase the known leader of that term.
    cache.update(answer({0: (None, 6), 1: (2, 3)}))
    assert cache.leader_for(("t", 0)) == 2
    # A newer term without a leader (an election in progress) makes it unknown.
    cache.update(answer({0: (None, 7), 1: (2, 3)}))
    assert cache.leader_for(("t", 0)) is None
    # ... and an older term cannot bring a leader back then either.
    cache.update(answer({0: (2, 6), 1: (2, 3)}))
    assert cache.leader_for(("t", 0)) is None
    cache.update(answer({0: (0, 7), 1: (2, 3)}))
    assert cache.leader_for(("t", 0)) == 0


def test_invalidate_keeps_the_term_as_floor() -> None:
    cache = MetadataCache()
    cache.update(answer({0: (1, 5)}))
    cache.invalidate(("t", 0))
    assert cache.leader_for(("t", 0)) is None
    cache.update(answer({0: (0, 4)}))
    assert cache.leader_for(("t", 0)) is None
    cache.update(answer({0: (1, 5)}))  # the same term again: taken (maybe it was transient)
    assert cache.leader_for(("t", 0)) == 1
    cache.invalidate(("nope", 0))  # unknown partitions are ignored


def test_a_not_leader_hint_is_taken_under_the_metadata_rule() -> None:
    cache = MetadataCache()
    cache.update(answer({0: (1, 5)}))
    assert not cache.hint(("t", 0), 2, 4)  # an older term
    assert not cache.hint(("t", 0), 2, 5)  # the same term, while a leader is known
    assert not cache.hint(("t", 0), 9, 6)  # a broker the metadata does not know
    assert not cache.hint(("nope", 0), 2, 6)
    assert cache.leader_for(("t", 0)) == 1
    cache.invalidate(("t", 0))
    assert cache.hint(("t", 0), 2, 5)  # "no leader" in term 5 gives way
    assert cache.hint(("t", 0), 0, 6)
    assert cache.leader_for(("t", 0)) == 0
    cache.update(answer({0: (1, 5)}))  # a stale report cannot undo the hint
    assert cache.leader_for(("t", 0)) == 0


def test_partitions_grow_and_unknown_topics_are_dropped() -> None:
    cache = MetadataCache()
    cache.update(answer({0: (1, 1)}))
    assert cache.partition_count("t") == 1
    cache.update(answer({0: (1, 1), 1: (2, 1), 2: (0, 1)}))
    assert cache.partition_count("t") == 3
    cache.update(answer({}, error=ErrorCode.UNKNOWN_TOPIC_OR_PARTITION))
    assert cache.partition_count("t") is None
    assert cache.leader_for(("t", 0)) is None


def test_leader_needs_a_known_broker_address() -> None:
    cache = MetadataCache()
    cache.update(answer({0: (5, 1)}))
    assert cache.leader_for(("t", 0)) is None
    cache.update(answer({0: (5, 1)}, brokers=(0, 5)))
    assert cache.leader_for(("t", 0)) == 5
    assert cache.brokers[5].address == "127.0.0.1:9005"


def test_parse_bootstrap() -> None:
    assert parse_bootstrap("a:1, b:2,") == [("a", 1), ("b", 2)]
    assert parse_bootstrap(["a:1", "[::1]:9"]) == [("a", 1), ("::1", 9)]
    assert parse_bootstrap("localhost") == [("localhost", 9092)]
    for bad in ("", "a:x", "a:0", ":5"):
        with pytest.raises(ValueError):
            parse_bootstrap(bad)


def test_backoff_is_exponential_jittered_and_capped() -> None:
    low = Backoff(0.1, 1.0, rng=lambda: 0.0)
    high = Backoff(0.1, 1.0, rng=lambda: 0.999999)
    assert [round(low.delay(n), 3) for n in range(6)] == [0.05, 0.1, 0.2, 0.4, 0.5, 0.5]
    assert [round(high.delay(n), 3) for n in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert high.delay(10_000) <= 1.0
    with pytest.raises(ValueError):
        Backoff(0, 1)


async def test_retry_until_retries_retriable_errors_until_the_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    cluster = Cluster("127.0.0.1:1", backoff=Backoff(0.1, 1.0, rng=lambda: 1.0))
    calls: list[float] = []

    async def busy() -> int:
        calls.append(trio.current_time())
        if len(calls) < 4:
            raise BackpressureError("slow down")
        return 42

    start = trio.current_time()
    assert await cluster.retry_until(start + 10, busy) == 42
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(calls)]
    assert gaps == [0.1, 0.2, 0.4]

    calls.clear()

    async def always_busy() -> int:
        calls.append(trio.current_time())
        raise BackpressureError("slow down")

    start = trio.current_time()
    with pytest.raises(BackpressureError):
        await cluster.retry_until(start + 3, always_busy)
    assert trio.current_time() - start <= 3
    assert len(calls) >= 4


async def test_retry_until_raises_non_retriable_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    cluster = Cluster("127.0.0.1:1")
    calls = 0

    async def bad() -> None:
        nonlocal calls
        calls += 1
        raise InvalidConfigError("no such key")

    with pytest.raises(InvalidConfigError):
        await cluster.retry_until(trio.current_time() + 10, bad)
    assert calls == 1


async def test_retry_until_bounds_a_hanging_call(autojump_clock: trio.testing.MockClock) -> None:
    cluster = Cluster("127.0.0.1:1")

    async def hang() -> None:
        await trio.sleep_forever()

    start = trio.current_time()
    with pytest.raises(RequestTimedOutError):
        await cluster.retry_until(start + 5, hang)
    assert trio.current_time() - start == pytest.approx(5)


async def test_retry_until_names_the_previous_error_when_the_last_attempt_times_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The deadline cuts the second attempt: the timeout says why the first one failed."""
    cluster = Cluster("127.0.0.1:1", backoff=Backoff(0.1, 1.0, rng=lambda: 1.0))
    calls = 0

    async def refused_then_hang() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise BackpressureError("3 replicas needed, 1 registered")
        await trio.sleep_forever()

    with pytest.raises(RequestTimedOutError) as raised:
        await cluster.retry_until(trio.current_time() + 1, refused_then_hang)
    assert calls == 2
    assert "1 registered" in str(raised.value)
    assert isinstance(raised.value.__cause__, BackpressureError)


async def test_reconnects_to_a_dead_broker_back_off() -> None:
    port = await closed_port()  # nothing listens there now
    attempts = 0
    async with Cluster(f"127.0.0.1:{port}", backoff=Backoff(0.05, 0.4)) as cluster:
        cluster.metadata.update(local_metadata({0: port}))

        def again() -> None:
            nonlocal attempts
            attempts += 1
            cluster.start_connecting(0, on_done=again)  # as the producer's sender does

        cluster.start_connecting(0, on_done=again)
        await trio.sleep(0.6)
        assert cluster.ready_connection(0) is None
    assert 2 <= attempts <= 10  # backed off, not a busy loop


async def test_refreshes_ask_every_broker_in_turn_and_skip_dead_ones(
    nursery: trio.Nursery,
) -> None:
    """A client whose first broker is cut off from the cluster (so its answers are stale)
    must hear from the others: successive refreshes rotate over the known brokers, and a
    broker that refuses connections is passed over within the same refresh."""
    asked: list[int] = []
    ports: dict[int, int] = {}

    def handler(node: int) -> Handler:
        async def handle(header: RequestHeader, request: object, send: Send) -> None:
            assert isinstance(request, MetadataRequest)
            asked.append(node)
            await send(header.correlation_id, ErrorCode.NONE, None, local_metadata(ports))

        return handle

    ports[0] = await serve(nursery, handler(0))
    ports[1] = await serve(nursery, handler(1))
    ports[2] = await closed_port()  # broker 2 is down
    async with Cluster(f"127.0.0.1:{ports[0]}") as cluster:
        for _ in range(6):
            await cluster.refresh(())
    assert asked[0] == 0  # the bootstrap broker first: nothing else is known yet
    assert set(asked) == {0, 1}
    assert asked.count(1) >= 2  # not only after everything else failed
    assert len(asked) == 6  # one answer per refresh; the dead broker cost no refresh


async def test_reconnect_backoff_counts_from_the_last_failure(
    nursery: trio.Nursery, mock_clock: trio.testing.MockClock
) -> None:
    """A broker that refused a connection long ago (it was down, and has since restarted:
    now it is the new leader) is tried at once, not after a backoff counted from now."""
    mock_clock.autojump_threshold = 1.0  # only a task waiting on the clock would jump it
    port = await closed_port()
    async with Cluster(f"127.0.0.1:{port}", backoff=Backoff(5.0, 10.0)) as cluster:
        cluster.metadata.update(local_metadata({0: port}))
        for _ in range(3):
            with pytest.raises(SluiceError):
                await cluster.connection(0)
        assert cluster.unreachable(0)
        mock_clock.jump(60)

        async def handle(header: RequestHeader, request: object, send: Send) -> None:
            raise AssertionError("no request is sent")

        await serve(nursery, handle, port=port)
        started = trio.current_time()
        attempted = trio.Event()
        cluster.start_connecting(0, on_done=attempted.set)
        await attempted.wait()
        assert cluster.ready_connection(0) is not None
        assert trio.current_time() == started  # no backoff was slept
        assert not cluster.unreachable(0)


async def test_an_error_raised_in_the_body_propagates_unwrapped() -> None:
    """A SluiceError raised inside `async with Cluster(...)` comes out as itself, not inside
    the internal nursery's ExceptionGroup (callers catch SluiceError)."""
    with pytest.raises(BrokerUnavailableError, match="gone"):
        async with Cluster(f"127.0.0.1:{await closed_port()}", request_timeout_s=0.5):
            raise BrokerUnavailableError("gone")
