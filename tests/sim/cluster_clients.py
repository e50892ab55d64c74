"""Simulated clients of the cluster simulator: an admin that creates the topic, idempotent
producers and readers. They talk to brokers only through wire request objects
(`broker.wire.messages`) over the world's client connections, and keep the client library's
rules: metadata in `consumers.cluster.MetadataCache` (a leader of an older term is never taken
back; NOT_LEADER invalidates), sequencing in `broker.wire.producer.ProducerSequences` used as
`consumers/producer.py` uses it.

Producer (as consumers/producer.py): InitProducerId from the controller before the first
batch; a batch's base sequence is assigned and its bytes encoded (encode_batch with producer
id, epoch, base sequence) once, when first sent; ONE produce request per leader holding at most
one batch per partition; every partition result goes through `on_result`: ACKED records the
offsets, RETRY resends the same bytes to the partition's current leader after a backoff (one
at a time, oldest first, once nothing of the partition is in flight; metadata refreshed on
leadership and connection errors), FAIL_AND_BUMP_EPOCH fails the batch and bumps the epoch
(InitProducerId with the current id and epoch) once nothing is in flight; a batch past its
delivery timeout is abandoned. At most 5 batches per partition in flight.

Reader: per partition, FETCH (no long poll) from the leader the metadata names, from its
position up to the high watermark; every record read goes to the History; a batch that starts
beyond the position is a skipped poll. OFFSET_OUT_OF_RANGE below the answer's log start
offset (retention deleted the records first) moves the position to the log start, as a
Kafka consumer with auto.offset.reset=earliest does; the skipped offsets are recorded in the
History as deleted (an acknowledged value there that nobody read is not lost), once the
checker has verified the answer (its log start within what retention may delete).
"""

from __future__ import annotations

import functools
import itertools
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from broker.core.requests import Reply
from broker.wire.batch import Record, decode_records, encode_batch
from broker.wire.errors import ErrorCode
from broker.wire.messages import (
    CreateTopicsRequest,
    CreateTopicsResponse,
    FetchPartition,
    FetchRequest,
    FetchResponse,
    FetchTopic,
    InitProducerIdRequest,
    InitProducerIdResponse,
    MetadataRequest,
    MetadataResponse,
    NewTopic,
    ProducePartition,
    ProduceRequest,
    ProduceResponse,
    ProduceTopic,
    Request,
)
from broker.wire.producer import DecisionKind, ProducerSequences, ProducerState
from consumers.cluster import MetadataCache
from tests.sim.cluster_world import MS_PER_UNIT
from tests.support.history import Problem

if TYPE_CHECKING:
    from tests.sim.cluster_world import ClusterWorld

TP = tuple[str, int]
LEADERSHIP = frozenset(
    {
        ErrorCode.NOT_LEADER_OR_FOLLOWER,
        ErrorCode.LEADER_NOT_AVAILABLE,
        ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
        ErrorCode.NETWORK_EXCEPTION,
        ErrorCode.REQUEST_TIMED_OUT,
    }
)
"""Errors after which the client asks for metadata again."""


class SimClient:
    """Connections, request timeouts, metadata refresh and backoff shared by every client."""

    def __init__(self, world: ClusterWorld, name: str, timeout_units: int) -> None:
        self.world = world
        self.name = name
        self.rng = random.Random(world.rng.getrandbits(64))
        self.meta = MetadataCache()
        self.timeout_units = timeout_units
        self._corr = itertools.count(1)
        self._waiting: dict[int, Callable[[Reply], None]] = {}
        self._refreshing = False
        self._refresh_after = 0
        self._rotation = 0

    def brokers(self) -> list[int]:
        return sorted(self.world.brokers)

    def request(self, bid: int, req: Request, on_reply: Callable[[Reply], None]) -> None:
        corr = next(self._corr)
        self._waiting[corr] = on_reply
        self.world.client_send(self, bid, req, corr, self._answer)

        def timeout() -> None:
            fn = self._waiting.pop(corr, None)
            if fn is not None:
                self.world.stats.timeouts += 1
                fn(Reply(corr, ErrorCode.NETWORK_EXCEPTION, f"timed out on broker {bid}", None))

        self.world.at(self.world.now + self.timeout_units, timeout)

    def _answer(self, reply: Reply) -> None:
        fn = self._waiting.pop(reply.correlation_id, None)
        if fn is not None:  # else: given up on (timed out); a late answer is ignored
            fn(reply)

    def refresh(self) -> None:
        """Ask for metadata (all topics): from the controller if known, else rotating over
        the bootstrap list (every broker)."""
        if self._refreshing or self.world.now < self._refresh_after:
            return
        self._refreshing = True
        ids = self.brokers()
        self._rotation += 1
        target = ids[self._rotation % len(ids)]
        if self.meta.controller is not None and self._rotation % 2:
            target = self.meta.controller

        def done(reply: Reply) -> None:
            self._refreshing = False
            self._refresh_after = self.world.now + self.rng.randint(2, 8)
            if isinstance(reply.body, MetadataResponse):
                self.meta.update(reply.body)

        self.request(target, MetadataRequest(topics=None), done)

    def backoff(self, attempt: int) -> int:
        cap = min(200, 5 << min(attempt, 6))
        return cap // 2 + self.rng.randint(0, cap // 2)


class SimAdmin(SimClient):
    """Creates the topic on the controller, retrying until it exists."""

    def __init__(
        self, world: ClusterWorld, topic: str, partitions: int, rf: int, timeout_units: int
    ) -> None:
        super().__init__(world, "admin", timeout_units)
        self.topic = topic
        self.partitions = partitions
        self.rf = rf
        self.done = False
        self.busy = False
        self.attempts = 0
        self.next_at = 0
        self.probe_every = 0
        """Once the topic exists, ask the controller for a new producer id this often (in
        units; 0: never): every id handed out must be new."""
        self.probe_busy = False
        self.probe_at = 0

    def step(self) -> None:
        if self.done:
            self._probe()
            return
        if self.busy or self.world.now < self.next_at:
            return
        controller = self.meta.controller
        if controller is None:
            self.refresh()
            return
        self.busy = True
        req = CreateTopicsRequest(
            topics=(
                NewTopic(name=self.topic, partitions=self.partitions, replication_factor=self.rf),
            ),
            timeout_ms=self.timeout_units * MS_PER_UNIT // 2,
        )
        self.request(controller, req, self._created)

    def _probe(self) -> None:
        now = self.world.now
        if not self.probe_every or self.probe_busy or now < self.probe_at:
            return
        controller = self.meta.controller
        if controller is None:
            self.refresh()
            return
        self.probe_busy = True

        def answered(reply: Reply) -> None:
            self.probe_busy = False
            self.probe_at = self.world.now + self.probe_every
            body = reply.body
            if reply.error == ErrorCode.NONE and isinstance(body, InitProducerIdResponse):
                self.world.checker.on_producer_id(body.producer_id, "admin probe")
            else:
                self.meta.controller = None
                self.refresh()

        self.request(controller, InitProducerIdRequest(), answered)

    def _created(self, reply: Reply) -> None:
        self.busy = False
        body = reply.body
        err = reply.error
        if isinstance(body, CreateTopicsResponse):
            err = body.topics[0].error
        if err in (ErrorCode.NONE, ErrorCode.TOPIC_ALREADY_EXISTS):
            self.done = True
            self.world.log(f"admin: topic {self.topic} created ({err.name})")
            return
        self.attempts += 1
        self.next_at = self.world.now + self.backoff(self.attempts)
        self.meta.controller = None
        self.refresh()


@dataclass(eq=False)
class _Batch:
    tp: TP
    values: list[bytes]
    deadline: int
    order: int = -1
    base_sequence: int = -1
    data: bytes | None = None
    attempts: int = 0


@dataclass
class _PState:
    queue: deque[_Batch] = field(default_factory=deque)
    retry: list[_Batch] = field(default_factory=list)
    retry_at: int = 0
    in_flight: int = 0


class SimProducer(SimClient):
    """An idempotent producer (see the module docstring)."""

    def __init__(
        self,
        world: ClusterWorld,
        index: int,
        topic: str,
        timeout_units: int,
        delivery_timeout_units: int,
        max_in_flight: int = 5,
    ) -> None:
        super().__init__(world, f"producer{index}", timeout_units)
        self.index = index
        self.topic = topic
        self.delivery_timeout = delivery_timeout_units
        self.max_in_flight = max_in_flight
        self.seq: ProducerSequences | None = None
        self.identity_busy = False
        self.identity_attempts = 0
        self.identity_at = 0
        self.parts: dict[TP, _PState] = {}
        self.sent_values = 0
        self.order = itertools.count()
        self.acked: list[tuple[int, int, TP, int, bytes]] = []
        """(batch send order, record index, partition, offset, value)."""
        self.failed = 0
        self.fatal: str | None = None
        self.unrouted: list[bytes] = []

    # -- the application ----------------------------------------------------------------------

    def send(self, n: int) -> None:
        """n new records, sticky to one random partition per call (one batch)."""
        values = []
        for _ in range(n):
            self.sent_values += 1
            values.append(b"p%d-%d" % (self.index, self.sent_values))
        count = self.meta.partition_count(self.topic)
        if count is None:
            self.unrouted.extend(values)
            self.refresh()
            return
        tp = (self.topic, self.rng.randrange(count))
        deadline = self.world.now + self.delivery_timeout
        self._pstate(tp).queue.append(_Batch(tp, values, deadline))

    def pending(self) -> int:
        """Batches not yet resolved (queued, in flight or to retry) plus unrouted records."""
        n = len(self.unrouted)
        for ps in self.parts.values():
            n += len(ps.queue) + len(ps.retry) + ps.in_flight
        return n

    def _pstate(self, tp: TP) -> _PState:
        ps = self.parts.get(tp)
        if ps is None:
            ps = self.parts[tp] = _PState()
        return ps

    # -- the sender loop ----------------------------------------------------------------------

    def step(self) -> None:
        if self.fatal is not None:
            return
        now = self.world.now
        if self.unrouted:
            count = self.meta.partition_count(self.topic)
            if count is None:
                self.refresh()
            else:
                values, self.unrouted = self.unrouted, []
                tp = (self.topic, self.rng.randrange(count))
                self._pstate(tp).queue.append(_Batch(tp, values, now + self.delivery_timeout))
        self._expire(now)
        self._maybe_identity()
        self._drain(now)

    def _expire(self, now: int) -> None:
        for tp, ps in self.parts.items():
            while ps.queue and ps.queue[0].deadline <= now and ps.queue[0].data is None:
                ps.queue.popleft()
                self.failed += 1
            keep = []
            for batch in ps.retry:
                if batch.deadline > now:
                    keep.append(batch)
                    continue
                if self.seq is not None and batch.base_sequence >= 0:
                    self.seq.abandon(tp, batch.base_sequence)
                self.failed += 1
                self.world.log(f"{self.name}: batch {tp} seq {batch.base_sequence} expired")
            ps.retry = keep

    def _maybe_identity(self) -> None:
        if self.identity_busy or self.world.now < self.identity_at:
            return
        seq = self.seq
        if seq is None:
            bump = False
        elif seq.state is ProducerState.BUMP_REQUIRED and seq.total_in_flight() == 0:
            bump = True
        else:
            return
        controller = self.meta.controller
        if controller is None:
            self.refresh()
            return
        self.identity_busy = True
        req = (
            InitProducerIdRequest(producer_id=seq.producer_id, producer_epoch=seq.producer_epoch)
            if bump and seq is not None
            else InitProducerIdRequest()
        )
        self.request(controller, req, self._identity)

    def _identity(self, reply: Reply) -> None:
        self.identity_busy = False
        body = reply.body
        if reply.error != ErrorCode.NONE or not isinstance(body, InitProducerIdResponse):
            self.identity_attempts += 1
            self.identity_at = self.world.now + self.backoff(self.identity_attempts)
            self.meta.controller = None
            self.refresh()
            return
        self.identity_attempts = 0
        if self.seq is None:
            self.world.checker.on_producer_id(body.producer_id, self.name)
            self.seq = ProducerSequences(
                body.producer_id, body.producer_epoch, max_in_flight=self.max_in_flight
            )
            self.world.log(f"{self.name}: producer id {body.producer_id}")
        else:
            self.seq.reset_for_new_epoch(body.producer_epoch, body.producer_id)
            self.world.log(f"{self.name}: epoch bumped to {body.producer_epoch}")

    def _sendable(self, tp: TP, now: int) -> bool:
        ps = self.parts.get(tp)
        if ps is None:
            return False
        if ps.retry:
            return ps.in_flight == 0 and now >= ps.retry_at
        if not ps.queue or ps.in_flight >= self.max_in_flight:
            return False
        return self.seq is not None and self.seq.can_assign(tp)

    def _drain(self, now: int) -> None:
        by_leader: dict[int, list[_Batch]] = {}
        for tp in sorted(self.parts):
            if not self._sendable(tp, now):
                continue
            leader = self.meta.leader_for(tp)
            if leader is None:
                self.refresh()
                continue
            ps = self.parts[tp]
            if ps.retry:
                batch = ps.retry.pop(0)
            else:
                batch = ps.queue.popleft()
                self._encode(batch)
            batch.attempts += 1
            ps.in_flight += 1
            by_leader.setdefault(leader, []).append(batch)
        for leader, batches in by_leader.items():
            topics: dict[str, list[ProducePartition]] = {}
            for b in batches:
                assert b.data is not None
                topics.setdefault(b.tp[0], []).append(
                    ProducePartition(partition=b.tp[1], batch=b.data)
                )
            req = ProduceRequest(
                topics=tuple(
                    ProduceTopic(name=n, partitions=tuple(ps)) for n, ps in topics.items()
                ),
                timeout_ms=self.timeout_units * MS_PER_UNIT // 2,
            )
            self.request(leader, req, functools.partial(self._produced, batches=batches))

    def _encode(self, batch: _Batch) -> None:
        seq = self.seq
        assert seq is not None
        batch.base_sequence = seq.assign(batch.tp, len(batch.values))
        ts = self.world.now * MS_PER_UNIT
        batch.data = encode_batch(
            [Record(value=v, timestamp=ts) for v in batch.values],
            producer_id=seq.producer_id,
            producer_epoch=seq.producer_epoch,
            base_sequence=batch.base_sequence,
        )
        batch.order = next(self.order)

    def _produced(self, reply: Reply, *, batches: list[_Batch]) -> None:
        results: dict[TP, tuple[ErrorCode, int]] = {}
        if isinstance(reply.body, ProduceResponse):
            for t in reply.body.topics:
                for p in t.partitions:
                    results[(t.name, p.partition)] = (p.error, p.base_offset)
        for batch in batches:
            err, base = results.get(batch.tp, (reply.error, -1))
            if err == ErrorCode.NONE and reply.error != ErrorCode.NONE:
                err = reply.error
            self._on_result(batch, err, base)

    def _on_result(self, batch: _Batch, code: ErrorCode, base_offset: int) -> None:
        tp = batch.tp
        ps = self._pstate(tp)
        ps.in_flight -= 1
        seq = self.seq
        assert seq is not None
        decision = seq.on_result(tp, batch.base_sequence, code)
        kind = decision.kind
        now = self.world.now
        if kind is DecisionKind.ACKED:
            if base_offset < 0:
                self.failed += 1
                return
            for i, v in enumerate(batch.values):
                self.acked.append((batch.order, i, tp, base_offset + i, v))
            return
        if kind is DecisionKind.RETRY:
            if now >= batch.deadline:
                seq.abandon(tp, batch.base_sequence)
                self.failed += 1
                self.world.log(f"{self.name}: batch {tp} seq {batch.base_sequence} expired")
                return
            ps.retry.append(batch)
            ps.retry.sort(key=lambda b: b.order)
            ps.retry_at = max(ps.retry_at, now + self.backoff(batch.attempts - 1))
            if code in LEADERSHIP:
                self.meta.invalidate(tp)
                self.refresh()
            return
        if kind is DecisionKind.FAIL_AND_BUMP_EPOCH:
            self.failed += 1
            self.world.log(f"{self.name}: batch {tp} seq {batch.base_sequence} failed: {code.name}")
            return
        self.fatal = f"fenced on {tp}: {code.name}"
        self.world.log(f"{self.name}: {self.fatal}")


class SimReader(SimClient):
    """Reads every partition from its leader, from offset 0 up to the high watermark."""

    def __init__(self, world: ClusterWorld, topic: str, timeout_units: int) -> None:
        super().__init__(world, "reader", timeout_units)
        self.topic = topic
        self.position: dict[TP, int] = {}
        self.busy: set[TP] = set()
        self.retry_at: dict[TP, int] = {}
        self.high_watermark: dict[TP, int] = {}
        self.out_of_range = 0
        self.records = 0

    def step(self) -> None:
        count = self.meta.partition_count(self.topic)
        if count is None:
            self.refresh()
            return
        now = self.world.now
        for p in range(count):
            tp = (self.topic, p)
            if tp in self.busy or now < self.retry_at.get(tp, 0):
                continue
            leader = self.meta.leader_for(tp)
            if leader is None:
                self.refresh()
                continue
            offset = self.position.setdefault(tp, 0)
            req = FetchRequest(
                topics=(
                    FetchTopic(
                        name=self.topic,
                        partitions=(FetchPartition(partition=p, offset=offset, max_bytes=1 << 16),),
                    ),
                ),
                max_wait_ms=0,
                max_bytes=1 << 16,
            )
            self.busy.add(tp)
            self.request(
                leader, req, functools.partial(self._fetched, tp=tp, offset=offset, bid=leader)
            )

    def caught_up(self, high_watermarks: dict[TP, int]) -> bool:
        return all(self.position.get(tp, 0) >= hw for tp, hw in high_watermarks.items())

    def _fetched(self, reply: Reply, *, tp: TP, offset: int, bid: int) -> None:
        self.busy.discard(tp)
        body = reply.body
        err = reply.error
        part = None
        if isinstance(body, FetchResponse):
            part = body.topics[0].partitions[0]
            err = part.error
        if err == ErrorCode.OFFSET_OUT_OF_RANGE and part is not None:
            self.out_of_range += 1
            self.world.check_fetch(bid, tp, offset, part)
            start = part.log_start_offset
            if offset < start and self.position.get(tp, 0) == offset:
                self.world.checker.history.delete(tp, offset, start)
                self.world.stats.retention_skipped += start - offset
                self.world.log(f"reader: {tp} offsets [{offset}, {start}) deleted by retention")
                self.position[tp] = start
                return
        if err != ErrorCode.NONE or part is None:
            self.meta.invalidate(tp)
            self.refresh()
            self.retry_at[tp] = self.world.now + self.backoff(2)
            return
        if self.position.get(tp, 0) != offset:
            return  # an answer to an older position (cannot happen: one fetch in flight)
        self.world.check_fetch(bid, tp, offset, part)
        self.high_watermark[tp] = max(self.high_watermark.get(tp, 0), part.high_watermark)
        history = self.world.checker.history
        pos = offset
        for fb in part.batches:
            records = decode_records(fb.data)
            if fb.base_offset > pos:
                self.world.checker.problems.append(
                    Problem(
                        "poll-skip",
                        f"{tp} fetch at {pos} from the leader returned a batch at {fb.base_offset}",
                    )
                )
            for i, rec in enumerate(records):
                off = fb.base_offset + i
                if off >= pos and rec.value is not None:
                    history.read(tp, off, rec.value)
                    self.records += 1
            pos = max(pos, fb.base_offset + len(records))
        self.position[tp] = pos
        if pos >= part.high_watermark:
            self.retry_at[tp] = self.world.now + self.rng.randint(5, 20)
