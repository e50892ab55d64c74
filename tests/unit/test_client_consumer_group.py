"""Consumer(group_id=...) against scripted fake brokers on local sockets, in virtual time (the
clock jumps only once every task waits on it): joining, reading from committed offsets,
revocation (commit, on_revoked, release, heartbeat at once), fencing, the 2/3 safety rule,
leaving, commits, pause/resume, the simple consumer, pattern subscriptions, and two members
that never read the same partition at once."""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import pytest
import trio
import trio.testing

from broker.wire.batch import Record, encode_batch
from broker.wire.errors import ErrorCode
from broker.wire.group_messages import (
    CommittedOffset,
    FindCoordinatorRequest,
    FindCoordinatorResponse,
    GroupHeartbeatRequest,
    GroupHeartbeatResponse,
    OffsetCommitRequest,
    OffsetCommitResponse,
    OffsetFetchRequest,
    OffsetFetchResponse,
    PartitionError,
    TopicErrors,
    pairs,
    to_topic_partitions,
)
from broker.wire.messages import (
    EARLIEST_TIMESTAMP,
    FetchedBatch,
    FetchPartitionResult,
    FetchRequest,
    FetchResponse,
    FetchTopicResult,
    ListOffsetsPartitionResult,
    ListOffsetsRequest,
    ListOffsetsResponse,
    ListOffsetsTopicResult,
    MetadataRequest,
    PartitionInfo,
    Response,
    TopicInfo,
)
from broker.wire.protocol import RequestHeader
from consumers import Consumer, ConsumerRecord, blocking
from consumers.cluster import TopicPartition
from consumers.errors import (
    FencedMemberEpochError,
    InvalidGroupIdError,
    InvalidRegularExpressionError,
    SluiceError,
    StaleMemberEpochError,
)
from tests.support.fake_broker import Send, local_metadata, serve

T0, T1, T2, T3 = ("t", 0), ("t", 1), ("t", 2), ("t", 3)
JUMP_S = 0.02
"""Real idle time after which the virtual clock jumps (local socket I/O is ready at once)."""
SESSION_S = 10.0
INTERVAL_S = 1.0

Heartbeat = Callable[[RequestHeader, GroupHeartbeatRequest], GroupHeartbeatResponse]


class FakeBroker:
    """Node 0: leads every partition and coordinates the group. By default its coordinator
    answers every member with `assignment` (tests change it, and `epoch`); `heartbeat`
    replaces it. Records every request with the virtual time it came at."""

    def __init__(self, topics: dict[str, int]) -> None:
        self.topics = topics
        self.port = 0
        self.logs: dict[TopicPartition, list[bytes]] = {}
        self.committed: dict[TopicPartition, int] = {}
        self.assignment: set[TopicPartition] = set()
        self.epoch = 0
        self.heartbeat: Heartbeat | None = None
        self.heartbeat_errors: deque[ErrorCode] = deque()
        self.hang_heartbeats = False
        self.commit_errors: deque[ErrorCode] = deque()
        """Errors for the next commits' partitions, one per partition."""
        self.commit_delay_s = 0.0
        self.interval_ms = int(INTERVAL_S * 1000)
        self.log: list[tuple[float, str | None, object]] = []
        """(time, client id, request) of every request."""
        self.on_request: Callable[[str | None, object], None] | None = None

    def requests(self, kind: type[Any]) -> list[Any]:
        return [r for _, _, r in self.log if isinstance(r, kind)]

    def timed(self, kind: type[Any]) -> list[tuple[float, Any]]:
        return [(t, r) for t, _, r in self.log if isinstance(r, kind)]

    def append(self, tp: TopicPartition, *values: bytes) -> None:
        self.logs.setdefault(tp, []).extend(values)

    async def handle(self, header: RequestHeader, request: object, send: Send) -> None:
        self.log.append((trio.current_time(), header.client_id, request))
        if self.on_request is not None:
            self.on_request(header.client_id, request)
        error, body = await self.answer(header, request)
        await send(header.correlation_id, error, None, body)

    async def answer(
        self, header: RequestHeader, request: object
    ) -> tuple[ErrorCode, Response | None]:
        ok = ErrorCode.NONE
        if isinstance(request, MetadataRequest):
            meta = local_metadata({0: self.port})
            topics = tuple(
                TopicInfo(
                    name=name,
                    partitions=tuple(
                        PartitionInfo(partition=p, leader=0, leader_term=1, replicas=(0,))
                        for p in range(count)
                    ),
                )
                for name, count in sorted(self.topics.items())
                if request.topics is None or name in request.topics
            )
            return ok, type(meta)(
                cluster_id=meta.cluster_id,
                controller=meta.controller,
                brokers=meta.brokers,
                topics=topics,
            )
        if isinstance(request, FindCoordinatorRequest):
            body = FindCoordinatorResponse(node_id=0, host="127.0.0.1", port=self.port, partition=3)
            return ok, body
        if isinstance(request, GroupHeartbeatRequest):
            if self.hang_heartbeats:
                await trio.sleep_forever()
            if self.heartbeat_errors:
                return self.heartbeat_errors.popleft(), None
            if self.heartbeat is not None:
                return ok, self.heartbeat(header, request)
            if request.member_epoch == 0:
                self.epoch += 1
            return ok, self.member_answer(request, self.assignment)
        if isinstance(request, OffsetFetchRequest):
            assert request.topics is not None
            return ok, OffsetFetchResponse(
                offsets=tuple(
                    CommittedOffset(topic=t, partition=p, offset=self.committed.get((t, p), -1))
                    for t, p in sorted(pairs(request.topics))
                )
            )
        if isinstance(request, OffsetCommitRequest):
            await trio.sleep(self.commit_delay_s)
            topics = []
            for t in request.topics:
                results = []
                for p in t.partitions:
                    error = self.commit_errors.popleft() if self.commit_errors else ok
                    if error is ok:
                        self.committed[(t.topic, p.partition)] = p.offset
                    results.append(PartitionError(partition=p.partition, error=error))
                topics.append(TopicErrors(topic=t.topic, partitions=tuple(results)))
            return ok, OffsetCommitResponse(topics=tuple(topics))
        if isinstance(request, ListOffsetsRequest):
            return ok, ListOffsetsResponse(
                topics=tuple(
                    ListOffsetsTopicResult(
                        name=t.name,
                        partitions=tuple(
                            ListOffsetsPartitionResult(
                                partition=p.partition,
                                offset=0
                                if p.timestamp == EARLIEST_TIMESTAMP
                                else len(self.logs.get((t.name, p.partition), [])),
                            )
                            for p in t.partitions
                        ),
                    )
                    for t in request.topics
                )
            )
        if isinstance(request, FetchRequest):
            answer = self.fetch(request)
            if answer is None:
                await trio.sleep(request.max_wait_ms / 1000)
                answer = self.fetch(request) or self.fetch(request, empty=True)
            assert answer is not None
            return ok, answer
        return ErrorCode.INVALID_REQUEST, None

    def member_answer(
        self, request: GroupHeartbeatRequest, assignment: set[TopicPartition]
    ) -> GroupHeartbeatResponse:
        leaving = request.member_epoch < 0
        return GroupHeartbeatResponse(
            member_id=request.member_id,
            member_epoch=request.member_epoch if leaving else self.epoch,
            heartbeat_interval_ms=self.interval_ms,
            session_timeout_ms=request.session_timeout_ms or int(SESSION_S * 1000),
            assignment=() if leaving else to_topic_partitions(assignment),
        )

    def fetch(self, request: FetchRequest, *, empty: bool = False) -> FetchResponse | None:
        topics = []
        found = False
        for t in request.topics:
            results = []
            for p in t.partitions:
                log = self.logs.get((t.name, p.partition), [])
                batches: tuple[FetchedBatch, ...] = ()
                if p.offset < len(log):
                    found = True
                    records = [
                        Record(value=v, timestamp=1000 + i) for i, v in enumerate(log[p.offset :])
                    ]
                    batches = (FetchedBatch(base_offset=p.offset, data=encode_batch(records)),)
                results.append(
                    FetchPartitionResult(
                        partition=p.partition,
                        high_watermark=len(log),
                        batches=batches,
                        next_offset=max(p.offset, len(log)),
                    )
                )
            topics.append(FetchTopicResult(name=t.name, partitions=tuple(results)))
        return FetchResponse(topics=tuple(topics)) if found or empty else None


@pytest.fixture
def clock(mock_clock: trio.testing.MockClock) -> trio.testing.MockClock:
    mock_clock.autojump_threshold = JUMP_S
    return mock_clock


async def start(
    nursery: trio.Nursery, topics: dict[str, int], *, ordered: bool = False
) -> FakeBroker:
    fake = FakeBroker(topics)
    fake.port = await serve(nursery, fake.handle, ordered=ordered)
    return fake


@asynccontextmanager
async def consumer(fake: FakeBroker, **kwargs: Any) -> Any:
    options: dict[str, Any] = {"group_id": "g", "fetch_max_wait_ms": 2_000, **kwargs}
    async with Consumer(f"127.0.0.1:{fake.port}", **options) as c:
        yield c


async def take(c: Consumer, n: int, timeout: float = 30.0) -> list[ConsumerRecord]:
    """Exactly `n` records (polling until they came)."""
    out: list[ConsumerRecord] = []
    with trio.fail_after(timeout):
        while len(out) < n:
            out.extend(await c.poll(timeout=1.0, max_records=n - len(out)))
    return out


async def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.25)


def values(records: list[ConsumerRecord]) -> list[tuple[int, bytes | None]]:
    return sorted((r.partition, r.value) for r in records)


def commits(fake: FakeBroker) -> list[dict[TopicPartition, int]]:
    return [
        {(t.topic, p.partition): p.offset for t in r.topics for p in t.partitions}
        for r in fake.requests(OffsetCommitRequest)
    ]


def kinds(fake: FakeBroker) -> Iterator[str]:
    return (type(r).__name__.removesuffix("Request") for _, _, r in fake.log)


async def test_join_reads_from_committed_offsets_and_reports_what_it_owns(
    nursery: trio.Nursery, clock: trio.testing.MockClock
) -> None:
    fake = await start(nursery, {"t": 2})
    fake.append(T0, b"a", b"b", b"c")
    fake.append(T1, b"x", b"y")
    fake.committed = {T0: 1}  # T1: nothing committed -> earliest
    fake.assignment = {T0, T1}
    assigned: list[frozenset[TopicPartition]] = []
    async with consumer(fake) as c:
        c.subscribe(["t"], on_assigned=assigned.append)
        records = await take(c, 4)
        assert values(records) == [(0, b"b"), (0, b"c"), (1, b"x"), (1, b"y")]
        assert assigned == [{T0, T1}]
        assert c.assignment() == {T0, T1} and c.subscription() == {"t"}
        await trio.sleep(2 * INTERVAL_S)
    beats = fake.requests(GroupHeartbeatRequest)
    join = beats[0]
    assert (join.group_id, join.member_epoch, join.topics, join.pattern) == ("g", 0, ("t",), None)
    assert (join.owned, join.session_timeout_ms, join.assignor, join.instance_id) == (
        (),
        10_000,
        None,
        None,
    )
    assert len(join.member_id) == 32 and {b.member_id for b in beats} == {join.member_id}
    assert pairs(beats[1].owned) == {T0, T1} and beats[1].member_epoch == 1
    order = list(kinds(fake))
    assert order.index("FindCoordinator") < order.index("GroupHeartbeat")
    assert order.index("OffsetFetch") < order.index("Fetch")
    [fetched] = fake.requests(OffsetFetchRequest)
    assert fetched.topics is not None and pairs(fetched.topics) == {T0, T1}
    [reset] = fake.requests(ListOffsetsRequest)  # only the partition without a commit
    assert [(t.name, [p.partition for p in t.partitions]) for t in reset.topics] == [("t", [1])]
    times = [t for t, _ in fake.timed(GroupHeartbeatRequest)]
    assert times[2] - times[1] == pytest.approx(INTERVAL_S, abs=0.05)
    # Closing committed what was read, then left with epoch -1 owning nothing.
    assert commits(fake)[-1] == {T0: 3, T1: 2}
    assert (beats[-1].member_epoch, beats[-1].owned) == (-1, ())


async def test_a_revocation_commits_then_calls_on_revoked_then_heartbeats_at_once(
    nursery: trio.Nursery, clock: trio.testing.MockClock
) -> None:
    fake = await start(nursery, {"t": 2})
    fake.append(T0, b"a", b"b")
    fake.append(T1, b"x")
    fake.assignment = {T0, T1}
    events: list[tuple[str, float, object]] = []

    def noted(client: str | None, request: object) -> None:
        if isinstance(request, OffsetCommitRequest):
            events.append(("commit", trio.current_time(), commits(fake)[-1]))
        elif isinstance(request, GroupHeartbeatRequest):
            events.append(("heartbeat", trio.current_time(), pairs(request.owned)))

    fake.on_request = noted

    async def revoked(tps: frozenset[TopicPartition]) -> None:
        events.append(("revoked", trio.current_time(), tps))
        await trio.sleep(0.5)  # an async callback: the release waits for it

    async with consumer(fake, enable_auto_commit=True) as c:
        c.subscribe(["t"], on_revoked=revoked)
        await take(c, 3)
        events.clear()
        fake.epoch += 1
        fake.assignment = {T1}
        await wait_for(lambda: any(e[0] == "heartbeat" and e[2] == {T1} for e in events))
        assert c.assignment() == {T1}
        fake.append(T0, b"c")
        fake.append(T1, b"y")
        assert values(await take(c, 1)) == [(1, b"y")]  # T0 is no longer read
        assert values(await c.poll(timeout=2.0)) == []
    first = [e[0] for e in events[:4]]
    assert first == ["heartbeat", "commit", "revoked", "heartbeat"]
    assert events[1][2] == {T0: 2}  # only the revoked partition, at its position
    assert events[0][2] == {T0, T1}  # still owned while being revoked
    assert events[3][2] == {T1}
    assert events[3][1] == pytest.approx(events[2][1] + 0.5, abs=0.01)  # not an interval later


async def test_a_fenced_member_loses_its_partitions_without_committing_and_rejoins(
    nursery: trio.Nursery, clock: trio.testing.MockClock
) -> None:
    fake = await start(nursery, {"t": 2})
    fake.append(T0, b"a")
    fake.assignment = {T0, T1}
    lost: list[frozenset[TopicPartition]] = []
    assigned: list[frozenset[TopicPartition]] = []
    async with consumer(fake, enable_auto_commit=True) as c:
        c.subscribe(["t"], on_assigned=assigned.append, on_lost=lost.append)
        await take(c, 1)
        before = len(fake.requests(GroupHeartbeatRequest))
        fake.heartbeat_errors.append(ErrorCode.FENCED_MEMBER_EPOCH)
        await wait_for(lambda: bool(lost))
        assert lost == [{T0, T1}]
        assert not commits(fake)  # nothing committed for a lost partition
        await wait_for(lambda: len(assigned) == 2)
        beats = fake.requests(GroupHeartbeatRequest)[before:]
        rejoin = beats[1]
        assert (rejoin.member_epoch, rejoin.owned) == (0, ())
        assert rejoin.member_id == beats[0].member_id
        assert len(fake.requests(OffsetFetchRequest)) == 2  # committed offsets fetched again


async def test_the_safety_rule_stops_reading_after_two_thirds_of_the_session_timeout(
    nursery: trio.Nursery, clock: trio.testing.MockClock
) -> None:
    fake = await start(nursery, {"t": 1})
    fake.assignment = {T0}
    lost: list[tuple[float, frozenset[TopicPartition]]] = []
    async with consumer(fake, session_timeout_ms=9_000, request_timeout_ms=20_000) as c:
        c.subscribe(["t"], on_lost=lambda tps: lost.append((trio.current_time(), tps)))
        fake.append(T0, b"a")
        await take(c, 1)
        fake.hang_heartbeats = True
        answered = fake.timed(GroupHeartbeatRequest)[-1][0]
        await wait_for(lambda: bool(lost))
        assert lost[0][1] == {T0}
        assert lost[0][0] == pytest.approx(answered + 6.0, abs=0.05)  # send time + 2/3 x 9 s
        assert c.assignment() == frozenset()
        fake.append(T0, b"b")
        assert await c.poll(timeout=5.0) == []  # the partition may be another member's now
        assert not commits(fake)
        fake.hang_heartbeats = False
        # Rejoined: read again from the last commit (none: nothing was committed).
        assert values(await take(c, 2, timeout=60.0)) == [(0, b"a"), (0, b"b")]
    joins = [b for b in fake.requests(GroupHeartbeatRequest) if b.member_epoch == 0]
    assert len(joins) >= 2


async def test_heartbeats_have_their_own_connection(
    nursery: trio.Nursery, clock: trio.testing.MockClock
) -> None:
    """The broker answers a connection's requests in order: a slow commit holds back its
    connection, not the heartbeats."""
    fake = await start(nursery, {"t": 1}, ordered=True)
    fake.assignment = {T0}
    fake.append(T0, b"a")
    async with consumer(fake, session_timeout_ms=6_000) as c:
        c.subscribe(["t"])
        await take(c, 1)
        fake.commit_delay_s = 10.0
        started = trio.current_time()
        await c.commit()
        assert trio.current_time() - started == pytest.approx(10.0, abs=0.05)
        during = [t for t, _ in fake.timed(GroupHeartbeatRequest) if started < t < started + 10]
        assert len(during) >= 9
        assert c.assignment() == {T0}  # never lost
        fake.commit_delay_s = 0.0


async def test_commit_commit_async_and_committed(
    nursery: trio.Nursery, clock: trio.testing.MockClock
) -> None:
    fake = await start(nursery, {"t": 2})
    fake.append(T0, b"a", b"b")
    fake.append(T1, b"x")
    fake.assignment = {T0, T1}
    async with consumer(fake, enable_auto_commit=False) as c:
        c.subscribe(["t"])
        await take(c, 3)
        await c.commit()
        [request] = fake.requests(OffsetCommitRequest)
        beat = fake.requests(GroupHeartbeatRequest)[-1]
        assert (request.group_id, request.member_id) == ("g", beat.member_id)
        assert request.member_epoch == 1
        assert commits(fake) == [{T0: 2, T1: 1}]
        assert await c.committed([T0, T1, T2]) == {T0: 2, T1: 1, T2: None}

        done = trio.Event()
        outcomes: list[tuple[dict[TopicPartition, int], SluiceError | None]] = []

        def callback(offsets: dict[TopicPartition, int], error: SluiceError | None) -> None:
            outcomes.append((offsets, error))
            done.set()

        c.commit_async({T0: 1}, callback)
        await done.wait()
        assert outcomes == [({T0: 1}, None)] and fake.committed[T0] == 1

        # STALE_MEMBER_EPOCH: heartbeat first, then commit again what is still owned.
        fake.commit_errors.append(ErrorCode.STALE_MEMBER_EPOCH)
        beats = len(fake.requests(GroupHeartbeatRequest))
        await c.commit({T0: 2})
        assert len(fake.requests(GroupHeartbeatRequest)) == beats + 1
        assert commits(fake)[-2:] == [{T0: 2}, {T0: 2}] and fake.committed[T0] == 2

        # A partition no longer owned cannot be committed.
        fake.assignment = {T1}
        fake.epoch += 1
        await wait_for(lambda: pairs(fake.requests(GroupHeartbeatRequest)[-1].owned) == {T1})
        fake.commit_errors.append(ErrorCode.STALE_MEMBER_EPOCH)
        with pytest.raises(StaleMemberEpochError):
            await c.commit({T0: 2})

        # FENCED: the member lost everything; the error is raised.
        fake.commit_errors.append(ErrorCode.FENCED_MEMBER_EPOCH)
        with pytest.raises(FencedMemberEpochError):
            await c.commit({T1: 1})
        assert c.assignment() == frozenset()


async def test_auto_commit_commits_what_was_consumed_once_the_interval_passed(
    nursery: trio.Nursery, clock: trio.testing.MockClock
) -> None:
    fake = await start(nursery, {"t": 2})
    fake.append(T0, b"a", b"b")
    fake.assignment = {T0, T1}
    async with consumer(fake, auto_commit_interval_ms=3_000) as c:
        c.subscribe(["t"])
        await take(c, 2)
        assert commits(fake) == []
        await trio.sleep(3.0)
        await c.poll(timeout=0)
        await wait_for(lambda: bool(commits(fake)))
        assert commits(fake) == [{T0: 2, T1: 0}]  # T1's position came from auto_offset_reset
        await trio.sleep(3.0)
        await c.poll(timeout=0)
        await trio.sleep(0.5)
        assert len(commits(fake)) == 1  # nothing moved since
        fake.append(T1, b"x")
        await take(c, 1)
        await trio.sleep(3.0)
        await c.poll(timeout=0)
        await wait_for(lambda: len(commits(fake)) == 2)
        assert commits(fake)[-1] == {T1: 1}  # only what moved


async def test_pause_holds_back_records_and_fetches_until_resume(
    nursery: trio.Nursery, clock: trio.testing.MockClock
) -> None:
    fake = await start(nursery, {"t": 2})
    fake.append(T0, b"a")
    fake.append(T1, b"x")
    fake.assignment = {T0, T1}
    async with consumer(fake) as c:
        c.subscribe(["t"])
        await wait_for(lambda: c.assignment() == {T0, T1})
        c.pause([T0])
        assert c.paused() == {T0}
        assert values(await take(c, 1)) == [(1, b"x")]
        assert await c.poll(timeout=2.0) == []
        fetches = len(fake.requests(FetchRequest))
        fake.append(T0, b"b")
        await trio.sleep(2.0)
        for r in fake.requests(FetchRequest)[fetches:]:
            assert all(
                t.name != "t" or 0 not in [p.partition for p in t.partitions] for t in r.topics
            )
        c.resume([T0])
        assert c.paused() == frozenset()
        assert values(await take(c, 2)) == [(0, b"a"), (0, b"b")]
        with pytest.raises(ValueError):
            c.pause([T3])


async def test_close_revokes_commits_and_leaves_a_static_member_with_minus_two(
    nursery: trio.Nursery, clock: trio.testing.MockClock
) -> None:
    fake = await start(nursery, {"t": 2})
    fake.append(T0, b"a")
    fake.assignment = {T0, T1}
    events: list[str] = []

    def noted(client: str | None, request: object) -> None:
        if isinstance(request, OffsetCommitRequest):
            events.append("commit")
        elif isinstance(request, GroupHeartbeatRequest) and request.member_epoch < 0:
            events.append("leave")

    fake.on_request = noted
    revoked: list[frozenset[TopicPartition]] = []
    async with consumer(fake, group_instance_id="host-1") as c:
        c.subscribe(["t"], on_revoked=lambda tps: (revoked.append(tps), events.append("revoked")))
        await take(c, 1)
        events.clear()
    assert revoked == [{T0, T1}]
    assert events == ["commit", "revoked", "leave"]
    leave = fake.requests(GroupHeartbeatRequest)[-1]
    assert (leave.member_epoch, leave.instance_id) == (-2, "host-1")
    assert pairs(leave.owned) == {T0, T1}  # kept for the next incarnation
    assert commits(fake)[-1] == {T0: 1, T1: 0}


async def test_on_assigned_may_seek_and_a_callback_error_is_raised_by_poll_once(
    nursery: trio.Nursery, clock: trio.testing.MockClock
) -> None:
    fake = await start(nursery, {"t": 1})
    fake.append(T0, b"a", b"b", b"c")
    fake.committed = {T0: 2}
    fake.assignment = {T0}

    def rewind(tps: frozenset[TopicPartition]) -> None:
        c.seek(T0, 0)  # before the first fetch

    def refuse(tps: frozenset[TopicPartition]) -> None:
        raise RuntimeError("the application failed")

    async with consumer(fake) as c:
        c.subscribe(["t"], on_assigned=rewind, on_revoked=refuse)
        assert values(await take(c, 3)) == [(0, b"a"), (0, b"b"), (0, b"c")]
        fake.epoch += 1
        fake.assignment = set()
        with pytest.raises(RuntimeError, match="application failed"):
            await c.poll(timeout=5.0)
        assert await c.poll(timeout=1.0) == []  # raised once
        await wait_for(lambda: pairs(fake.requests(GroupHeartbeatRequest)[-1].owned) == set())
    assert commits(fake)[0] == {T0: 3}  # the revocation committed before the callback


async def test_unsubscribe_revokes_then_leaves_and_subscribe_rejoins(
    nursery: trio.Nursery, clock: trio.testing.MockClock
) -> None:
    fake = await start(nursery, {"t": 2})
    fake.append(T0, b"a")
    fake.assignment = {T0, T1}
    revoked: list[frozenset[TopicPartition]] = []
    async with consumer(fake) as c:
        c.subscribe(["t"], on_revoked=revoked.append)
        await take(c, 1)
        c.unsubscribe()
        assert c.assignment() == frozenset()  # stopped at once
        await wait_for(lambda: fake.requests(GroupHeartbeatRequest)[-1].member_epoch == -1)
        assert revoked == [{T0, T1}] and commits(fake) == [{T0: 1, T1: 0}]
        assert fake.requests(GroupHeartbeatRequest)[-1].owned == ()
        beats = len(fake.requests(GroupHeartbeatRequest))
        await trio.sleep(5.0)
        assert len(fake.requests(GroupHeartbeatRequest)) == beats  # out of the group
        c.assign([T1])  # allowed now: a simple consumer
        c.assign([])
        c.subscribe(["t"])
        await wait_for(lambda: c.assignment() == {T0, T1})
        assert fake.requests(GroupHeartbeatRequest)[beats].member_epoch == 0


async def test_fatal_group_errors_are_raised_by_poll(
    nursery: trio.Nursery, clock: trio.testing.MockClock
) -> None:
    fake = await start(nursery, {"t": 1})
    fake.heartbeat_errors.append(ErrorCode.INVALID_REGULAR_EXPRESSION)
    async with consumer(fake) as c:
        c.subscribe(pattern="t.*")
        for _ in range(2):  # every time: the member stopped
            with pytest.raises(InvalidRegularExpressionError):
                await c.poll(timeout=5.0)
        with pytest.raises(InvalidRegularExpressionError):
            c.subscribe(pattern="(")  # checked locally first
    assert fake.requests(GroupHeartbeatRequest)[0].pattern == "t.*"


async def test_unreleased_instance_id_is_retried_with_backoff(
    nursery: trio.Nursery, clock: trio.testing.MockClock
) -> None:
    fake = await start(nursery, {"t": 1})
    fake.assignment = {T0}
    fake.heartbeat_errors.extend([ErrorCode.UNRELEASED_INSTANCE_ID] * 3)
    async with consumer(fake, group_instance_id="i", retry_backoff_ms=200) as c:
        c.subscribe(["t"])
        await wait_for(lambda: c.assignment() == {T0})
    joins = [t for t, b in fake.timed(GroupHeartbeatRequest) if b.member_epoch == 0]
    gaps = [b - a for a, b in itertools.pairwise(joins)]
    assert len(joins) == 4 and all(g >= 0.1 for g in gaps) and gaps[2] > gaps[0]


async def test_assign_with_a_group_is_a_simple_consumer(
    nursery: trio.Nursery, clock: trio.testing.MockClock
) -> None:
    fake = await start(nursery, {"t": 2})
    fake.append(T0, b"a", b"b", b"c")
    fake.committed = {T0: 2}
    async with consumer(fake) as c:
        c.assign([T0])
        assert values(await take(c, 1)) == [(0, b"c")]
        await c.commit()
        with pytest.raises(ValueError):
            c.subscribe(["t"])
    assert fake.requests(GroupHeartbeatRequest) == []
    request = fake.requests(OffsetCommitRequest)[0]
    assert (request.member_id, request.member_epoch) == ("", -1)
    assert commits(fake)[0] == {T0: 3}


async def test_a_pattern_subscription_without_a_group_follows_matching_topics(
    nursery: trio.Nursery, clock: trio.testing.MockClock
) -> None:
    fake = await start(nursery, {"orders-eu": 1, "orders-us": 2, "other": 1, "__orders-x": 1})
    fake.append(("orders-us", 1), b"u")
    async with consumer(fake, group_id=None, metadata_max_age_ms=1_000) as c:
        c.subscribe(pattern="orders-.*")
        await wait_for(lambda: len(c.assignment()) == 3)
        assert c.assignment() == {("orders-eu", 0), ("orders-us", 0), ("orders-us", 1)}
        assert [r.value for r in await take(c, 1)] == [b"u"]
        fake.topics["orders-asia"] = 1
        await wait_for(lambda: ("orders-asia", 0) in c.assignment())
        with pytest.raises(ValueError):
            c.subscribe(pattern="x", on_assigned=print)  # callbacks need a group
        with pytest.raises(InvalidGroupIdError):
            await c.commit()


class MiniCoordinator:
    """Deals the partitions round-robin over the members (in join order) and hands a
    partition to its target only once no other member reports it owned."""

    def __init__(self, fake: FakeBroker, partitions: list[TopicPartition]) -> None:
        self.fake = fake
        self.partitions = sorted(partitions)
        self.members: list[str] = []
        self.held: dict[str, set[TopicPartition]] = {}
        self.clients: dict[str | None, str] = {}

    def heartbeat(
        self, header: RequestHeader, request: GroupHeartbeatRequest
    ) -> GroupHeartbeatResponse:
        mid = request.member_id
        self.clients[header.client_id] = mid
        if request.member_epoch < 0:
            self.members.remove(mid)
            del self.held[mid]
            self.fake.epoch += 1
            return self.fake.member_answer(request, set())
        if mid not in self.members:
            self.members.append(mid)
            self.held[mid] = set()
            self.fake.epoch += 1
        self.held[mid] &= pairs(request.owned)
        target = {
            tp for i, tp in enumerate(self.partitions) if self.members[i % len(self.members)] == mid
        }
        elsewhere = {tp for m, tps in self.held.items() if m != mid for tp in tps}
        self.held[mid] |= target - elsewhere
        return self.fake.member_answer(request, self.held[mid] & target)

    def check_fetch(self, client: str | None, request: object) -> None:
        """A member fetches only partitions it holds (in the coordinator's view)."""
        if isinstance(request, FetchRequest):
            mid = self.clients[client]
            for t in request.topics:
                for p in t.partitions:
                    assert (t.name, p.partition) in self.held[mid], (client, t.name, p.partition)


async def test_two_members_never_read_the_same_partition(
    nursery: trio.Nursery, clock: trio.testing.MockClock
) -> None:
    fake = await start(nursery, {"t": 4})
    coordinator = MiniCoordinator(fake, [T0, T1, T2, T3])
    fake.heartbeat = coordinator.heartbeat
    fake.on_request = coordinator.check_fetch
    for tp in (T0, T1, T2, T3):
        fake.append(tp, b"old")
    got: dict[str, list[ConsumerRecord]] = {"c1": [], "c2": []}

    async def read(c: Consumer, name: str) -> None:
        while True:
            got[name].extend(await c.poll(timeout=1.0))

    async with consumer(fake, client_id="c1") as c1, trio.open_nursery() as readers:
        c1.subscribe(["t"])
        readers.start_soon(read, c1, "c1")
        await wait_for(lambda: len(got["c1"]) == 4)
        async with consumer(fake, client_id="c2") as c2:
            c2.subscribe(["t"])
            readers.start_soon(read, c2, "c2")
            await wait_for(lambda: len(c2.assignment()) == 2 and len(c1.assignment()) == 2)
            for tp in (T0, T1, T2, T3):
                fake.append(tp, b"new")
            await wait_for(lambda: len(got["c1"]) + len(got["c2"]) == 8)
            await trio.sleep(3.0)
            readers.cancel_scope.cancel()
    everything = [(r.partition, r.offset) for rs in got.values() for r in rs]
    assert sorted(everything) == sorted((p, o) for p in range(4) for o in range(2))  # once each
    # c1 committed what it read before releasing: c2 started after it.
    assert [r.value for r in got["c2"]] == [b"new", b"new"]


def test_commit_needs_a_group_and_options_are_checked() -> None:
    with pytest.raises(ValueError):
        Consumer("127.0.0.1:1", group_instance_id="i")
    with pytest.raises(ValueError):
        Consumer("127.0.0.1:1", group_id="g", session_timeout_ms=0)
    with pytest.raises(ValueError):
        Consumer("127.0.0.1:1", group_id="")


@contextmanager
def broker_thread(fake: FakeBroker) -> Iterator[None]:
    """Serve `fake` from a Trio loop of its own in a thread (real time)."""
    ready = threading.Event()
    stop: list[tuple[trio.lowlevel.TrioToken, trio.Event]] = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            fake.port = await serve(nursery, fake.handle)
            stop.append((trio.lowlevel.current_trio_token(), trio.Event()))
            ready.set()
            await stop[0][1].wait()
            nursery.cancel_scope.cancel()

    thread = threading.Thread(target=trio.run, args=(main,), daemon=True)
    thread.start()
    ready.wait()
    try:
        yield
    finally:
        token, event = stop[0]
        trio.from_thread.run_sync(event.set, trio_token=token)
        thread.join()


def test_the_blocking_facade_never_commits_past_records_it_did_not_yield() -> None:
    """A revocation drops the records the facade took but did not yield yet, and commits the
    offset of the first of them; a plain callback runs in a worker thread and may call the
    consumer."""
    fake = FakeBroker({"t": 1})
    fake.interval_ms = 50
    fake.append(T0, b"a", b"b", b"c")
    fake.assignment = {T0}
    revoked: list[frozenset[TopicPartition]] = []
    with broker_thread(fake):
        address = f"127.0.0.1:{fake.port}"
        with blocking.Consumer(address, group_id="g", enable_auto_commit=False) as c:

            def on_revoked(tps: frozenset[TopicPartition]) -> None:
                c.commit()  # back into the consumer's loop from the callback's thread
                revoked.append(tps)

            c.subscribe(["t"], on_revoked=on_revoked)
            assert next(c).value == b"a"  # b and c wait in the facade
            fake.epoch += 1
            fake.assignment = set()
            deadline = time.monotonic() + 10
            while not revoked and time.monotonic() < deadline:
                time.sleep(0.01)
            assert revoked == [{T0}]
            assert c.poll(timeout=0.2) == []  # b and c were dropped
    assert commits(fake) == [{T0: 1}]
