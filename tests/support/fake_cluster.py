"""An in-memory fake cluster behind the producer's sender, for its unit tests (no I/O).

`FakeProducer(broker, ...)` is a real `Producer` whose cluster is a `FakeCluster`: the small
interface the producer uses (metadata cache, ready connections with an in-flight bound,
InitProducerId, refresh), answered by one `FakeBroker`. Its partitions are the broker's real
PartitionMachine, so duplicates, sequence gaps and epochs are decided as the broker decides
them; faults are scripted per produce answer (`script`, `always`, `LOST`), and the broker
records what it was sent (`produced`, `batches_sent`). Answers take `latency` seconds of
Trio's clock: run it under a MockClock (autojump).
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import trio

from broker.core.partition import Outcome, PartitionMachine
from broker.core.raft import Entry, EntryKind
from broker.wire.batch import decode_records, parse_header
from broker.wire.errors import ErrorCode
from broker.wire.messages import (
    BrokerInfo,
    InitProducerIdRequest,
    InitProducerIdResponse,
    MetadataResponse,
    PartitionInfo,
    ProducePartitionResult,
    ProduceRequest,
    ProduceResponse,
    ProduceTopicResult,
    Request,
    Response,
    TopicInfo,
)
from consumers.cluster import MetadataCache, TopicPartition
from consumers.errors import BrokerUnavailableError, UnknownTopicError
from consumers.producer import Producer

LOST = "lost"
"""A scripted fault: the batch is written, but the answer is lost (connection error)."""


@dataclass
class FakeBroker:
    """The cluster's state and script: topics (name -> partition count) led by `leader` in
    `term`, on brokers 0 and 1; what it was sent and what it accepted."""

    partitions: dict[str, int]
    latency: float = 0.01
    leader: int = 0
    term: int = 1
    script: deque[tuple[TopicPartition | None, ErrorCode | str]] = field(default_factory=deque)
    always: dict[TopicPartition, ErrorCode] = field(default_factory=dict)
    machines: dict[TopicPartition, PartitionMachine] = field(default_factory=dict)
    index: dict[TopicPartition, int] = field(default_factory=lambda: defaultdict(int))
    produced: list[tuple[float, int, ProduceRequest]] = field(default_factory=list)
    init_requests: list[InitProducerIdRequest] = field(default_factory=list)
    refreshes: int = 0
    accepted: dict[TopicPartition, list[bytes]] = field(default_factory=lambda: defaultdict(list))
    next_pid: int = 1000
    in_flight: dict[TopicPartition, int] = field(default_factory=lambda: defaultdict(int))
    max_in_flight: dict[TopicPartition, int] = field(default_factory=lambda: defaultdict(int))
    hints: bool = False
    """NOT_LEADER answers name the current leader and term."""
    reported: tuple[int, int] | None = None
    """(leader, term) metadata reports instead of the real ones (stale metadata)."""

    def metadata(self) -> MetadataResponse:
        leader, term = self.reported or (self.leader, self.term)
        return MetadataResponse(
            cluster_id="fake",
            controller=0,
            brokers=(BrokerInfo(id=0, host="b0", port=1), BrokerInfo(id=1, host="b1", port=1)),
            topics=tuple(
                TopicInfo(
                    name=name,
                    partitions=tuple(
                        PartitionInfo(partition=p, leader=leader, leader_term=term, replicas=(0, 1))
                        for p in range(n)
                    ),
                    replication_factor=2,
                )
                for name, n in self.partitions.items()
            ),
        )

    def init(self, request: InitProducerIdRequest) -> InitProducerIdResponse:
        self.init_requests.append(request)
        if request.producer_id >= 0:
            return InitProducerIdResponse(
                producer_id=request.producer_id, producer_epoch=request.producer_epoch + 1
            )
        self.next_pid += 1
        return InitProducerIdResponse(producer_id=self.next_pid, producer_epoch=0)

    def produce(self, broker_id: int, request: ProduceRequest) -> tuple[ProduceResponse, bool]:
        """The answer, and whether it is lost on the way back."""
        self.produced.append((trio.current_time(), broker_id, request))
        lost = False
        topics = []
        for t in request.topics:
            parts = []
            for pp in t.partitions:
                tp = (t.name, pp.partition)
                fault: ErrorCode | str | None = self.always.get(tp)
                if fault is None and self.script and self.script[0][0] in (tp, None):
                    fault = self.script.popleft()[1]
                if broker_id != self.leader:
                    fault = ErrorCode.NOT_LEADER_OR_FOLLOWER
                if isinstance(fault, ErrorCode):
                    hinted = self.hints and fault is ErrorCode.NOT_LEADER_OR_FOLLOWER
                    parts.append(
                        ProducePartitionResult(
                            partition=pp.partition,
                            error=fault,
                            leader=self.leader if hinted else None,
                            leader_term=self.term if hinted else -1,
                        )
                    )
                    continue
                machine = self.machines.setdefault(tp, PartitionMachine())
                self.index[tp] += 1
                result = machine.apply(Entry(self.index[tp], 1, EntryKind.NORMAL, pp.batch))
                if result.outcome is Outcome.APPENDED:
                    self.accepted[tp].append(pp.batch)
                if fault == LOST:
                    lost = True
                parts.append(
                    ProducePartitionResult(
                        partition=pp.partition, error=result.error, base_offset=result.base_offset
                    )
                )
            topics.append(ProduceTopicResult(name=t.name, partitions=tuple(parts)))
        return ProduceResponse(topics=tuple(topics)), lost

    def log(self, tp: TopicPartition) -> list[bytes | None]:
        """The values written to a partition, in offset order."""
        machine = self.machines.get(tp)
        if machine is None:
            return []
        out: list[bytes | None] = []
        for data in self.accepted[tp]:
            out.extend(r.value for r in decode_records(data))
        assert len(out) == machine.next_offset
        return out


class FakePending:
    def __init__(
        self, conn: FakeConnection, response: Response, lost: bool, tps: list[TopicPartition]
    ) -> None:
        self.conn = conn
        self.response = response
        self.lost = lost
        self.tps = tps
        self.on_done: Callable[[], None] | None = None
        """As `Pending.on_done`: called (and cleared) when an answer comes, not on a loss."""

    async def _arrive(self) -> None:
        try:
            await trio.sleep(self.conn.broker.latency)
        finally:
            self.conn.in_flight -= 1
            for tp in self.tps:
                self.conn.broker.in_flight[tp] -= 1

    async def result(self) -> Response:
        await self._arrive()
        return self.outcome()

    async def wait(self) -> None:
        """As `Pending.wait` (no deadline here): the answer's callback runs as a
        connection's reader would run it."""
        await self._arrive()
        on_done = self.on_done
        if on_done is not None and not self.lost:
            self.on_done = None
            on_done()

    def outcome(self) -> Response:
        if self.lost:
            raise BrokerUnavailableError("connection reset (scripted)")
        return self.response


class FakeConnection:
    def __init__(self, broker: FakeBroker, broker_id: int, limit: int = 5) -> None:
        self.broker = broker
        self.broker_id = broker_id
        self.limit = limit
        self.in_flight = 0
        self.closed = False

    def has_capacity(self) -> bool:
        return self.in_flight < self.limit

    async def submit(self, request: Request, *, timeout_s: float | None = None) -> FakePending:
        assert self.has_capacity(), "the producer must respect the in-flight bound"
        assert isinstance(request, ProduceRequest)
        await trio.lowlevel.checkpoint()
        self.in_flight += 1
        tps = [(t.name, p.partition) for t in request.topics for p in t.partitions]
        assert len(tps) == len(set(tps)), "one batch per partition per request"
        for tp in tps:
            self.broker.in_flight[tp] += 1
            self.broker.max_in_flight[tp] = max(
                self.broker.max_in_flight[tp], self.broker.in_flight[tp]
            )
        response, lost = self.broker.produce(self.broker_id, request)
        return FakePending(self, response, lost, tps)


class FakeCluster:
    def __init__(self, broker: FakeBroker) -> None:
        self.broker = broker
        self.metadata = MetadataCache()
        self.metadata.update(broker.metadata())
        self.connections = {0: FakeConnection(broker, 0), 1: FakeConnection(broker, 1)}

    async def __aenter__(self) -> FakeCluster:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def ready_connection(self, broker_id: int, lane: str = "main") -> FakeConnection | None:
        return self.connections.get(broker_id)

    def start_connecting(self, *args: object, **kwargs: object) -> None:
        raise AssertionError("fake connections are always ready")

    def unreachable(self, broker_id: int) -> bool:
        return False

    async def request_any(self, request: Request, *, timeout_s: float | None = None) -> Response:
        """InitProducerId (any broker answers it)."""
        await trio.sleep(self.broker.latency)
        assert isinstance(request, InitProducerIdRequest)
        return self.broker.init(request)

    async def refresh(self, topics: Iterable[str] | None = None) -> MetadataResponse:
        await trio.sleep(self.broker.latency)
        self.broker.refreshes += 1
        response = self.broker.metadata()
        self.metadata.update(response)
        return response

    async def topic(self, name: str, deadline: float) -> object:
        if name not in self.metadata.topics:
            raise UnknownTopicError(f"no topic {name!r}")
        return self.metadata.topics[name]


class FakeProducer(Producer):
    def __init__(self, broker: FakeBroker, **kwargs: object) -> None:
        kwargs.setdefault("retry_backoff_ms", 10)
        super().__init__("fake:1", **kwargs)  # type: ignore[arg-type]
        self.broker = broker

    def _make_cluster(self) -> FakeCluster:  # type: ignore[override]
        return FakeCluster(self.broker)


def batches_sent(broker: FakeBroker, tp: TopicPartition) -> list[tuple[int, int, int, bytes]]:
    """(producer_epoch, base_sequence, record_count, bytes) of every batch sent to tp."""
    out = []
    for _, _, request in broker.produced:
        for t in request.topics:
            for pp in t.partitions:
                if (t.name, pp.partition) == tp:
                    h = parse_header(pp.batch)
                    out.append((h.producer_epoch, h.base_sequence, h.record_count, pp.batch))
    return out
