"""Simulated clients of the cluster simulator: an admin that creates the topic, producers and
a reader. The producers and the reader are thin drivers over the client library's pure core
(`consumers.core`), the very objects the Trio `Producer` and `Consumer` drive: what they
decide (batching, sequencing, retries, epoch bumps, delivery timeouts, positions, resets,
metadata refreshes) is what the library decides. They talk to brokers only through wire
request objects (`broker.wire.messages`) over the world's client connections; time is the
world's, in seconds (`MS_PER_UNIT`).

`SimClient` stands in for `consumers.cluster.Cluster`: one in-order connection per broker with
at most `max_in_flight` requests in flight, request timeouts (NETWORK_EXCEPTION), brokers
whose last request failed that way counted unreachable until one answers, metadata requests
to the known brokers in turn (unreachable ones last), and `request_controller` (a metadata
lookup first when the controller is unknown; NOT_CONTROLLER or a connection error forgets it).

Producer: a `ProducerCore` with an accumulator that seals at once (linger 0: the records of
one `send` call form one batch, on the topic's sticky partition). Each step: `advance`, an
InitProducerId when the core asks (its answer recorded by the checker: ids never repeat),
the core's drain plan (one produce request per pick while the leader's connection has
room), and a metadata refresh when the shared policy allows. Acknowledged records go to the
History at the end of the run, in send order.

Reader: a `Positions` (auto_offset_reset earliest) over every partition, sought to offset 0
once the topic is known; once an answer leaves it caught up it pauses 5-20 units before the
next fetch (the simulated brokers answer at once, where a real one would park a long poll).
Every fetch answer is checked by the fetch rule
(`ClusterChecker.check_fetch`) before the core applies it; a batch that starts beyond the
fetch offset is a skipped poll; every record the core buffers goes to the History. An
OFFSET_OUT_OF_RANGE answer makes the core reset the partition through LIST_OFFSETS
(earliest); when that reset moves the position forward, the answer's log start offset is
checked (`check_log_start`: within what retention may delete) and the offsets skipped are
recorded in the History as deleted (an acknowledged value there that nobody read is not lost).
"""

from __future__ import annotations

import functools
import itertools
import random
from collections.abc import Callable
from typing import TYPE_CHECKING

from broker.core.requests import Reply
from broker.wire.batch import Record, decode_records
from broker.wire.errors import ErrorCode
from broker.wire.messages import (
    CreateTopicsRequest,
    CreateTopicsResponse,
    FetchedBatch,
    FetchResponse,
    InitProducerIdRequest,
    InitProducerIdResponse,
    IsolationLevel,
    ListOffsetsResponse,
    MetadataRequest,
    MetadataResponse,
    NewTopic,
    ProduceResponse,
    Request,
)
from broker.wire.partitioner import default_partition
from consumers.core.accumulator import Accumulator, Batch, record_size
from consumers.core.metadata import MetadataCache, TopicPartition
from consumers.core.positions import FetchPlan, Positions
from consumers.core.producer import ProducerCore
from consumers.core.refresh import Backoff, MetadataRefresh
from consumers.errors import SluiceError, error_for
from tests.sim.cluster_world import MS_PER_UNIT
from tests.support.history import Problem

if TYPE_CHECKING:
    from tests.sim.cluster_world import ClusterWorld

TP = TopicPartition
MAX_REQUEST_BYTES = 8 * 1024 * 1024
FETCH_BYTES = 1 << 16


def _failure(reply: Reply) -> SluiceError:
    """The typed error of a request-level failure (as the Connection raises it)."""
    code = reply.error if reply.error != ErrorCode.NONE else ErrorCode.UNKNOWN_SERVER_ERROR
    return error_for(code, reply.message)


def _everything(topic: str) -> bool:
    return True


class SimClient:
    """Connections, request timeouts, the controller lookup and metadata refreshes (the
    simulator's `consumers.cluster.Cluster`)."""

    def __init__(
        self,
        world: ClusterWorld,
        name: str,
        timeout_units: int,
        *,
        max_in_flight: int = 5,
        backoff_s: tuple[float, float] = (0.05, 1.0),
    ) -> None:
        self.world = world
        self.name = name
        self.rng = random.Random(world.rng.getrandbits(64))
        self.meta = MetadataCache()
        self.backoff = Backoff(*backoff_s, rng=self.rng.random)
        self.refresh = MetadataRefresh(self.backoff)
        self.timeout_units = timeout_units
        self.max_in_flight = max_in_flight
        self._corr = itertools.count(1)
        self._waiting: dict[int, Callable[[Reply], None]] = {}
        self._in_flight: dict[int, int] = {}
        self._unreachable: set[int] = set()
        self._rotation = 0
        self._looking_up = False

    def now(self) -> float:
        """The world's time in seconds (the clock the core is driven with)."""
        return self.world.now * MS_PER_UNIT / 1000

    def brokers(self) -> list[int]:
        return sorted(self.world.brokers)

    def has_capacity(self, bid: int) -> bool:
        return self._in_flight.get(bid, 0) < self.max_in_flight

    def unreachable(self, bid: int) -> bool:
        return bid in self._unreachable

    def request(self, bid: int, req: Request, on_reply: Callable[[Reply], None]) -> None:
        corr = next(self._corr)
        self._in_flight[bid] = self._in_flight.get(bid, 0) + 1

        def answered(reply: Reply) -> None:
            self._in_flight[bid] -= 1
            if reply.error == ErrorCode.NETWORK_EXCEPTION and reply.body is None:
                self._unreachable.add(bid)
            else:
                self._unreachable.discard(bid)
            on_reply(reply)

        self._waiting[corr] = answered
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

    def _metadata_source(self) -> int:
        """The known brokers in turn, those whose last request failed last."""
        ids = self.brokers()
        self._rotation += 1
        shift = self._rotation % len(ids)
        rotated = ids[shift:] + ids[:shift]
        return min(rotated, key=lambda b: b in self._unreachable)

    def fetch_metadata(self, topics: tuple[str, ...], done: Callable[[bool], None]) -> None:
        """One metadata request (`topics=()`: brokers and controller only); `done(ok)`."""

        def answered(reply: Reply) -> None:
            ok = isinstance(reply.body, MetadataResponse)
            if isinstance(reply.body, MetadataResponse):
                self.meta.update(reply.body)
            done(ok)

        self.request(self._metadata_source(), MetadataRequest(topics=topics), answered)

    def request_any(self, req: Request, on_reply: Callable[[Reply], None]) -> None:
        """Send to any broker (the known ones in turn, unreachable ones last), as
        `Cluster.request_any` does."""
        self.request(self._metadata_source(), req, on_reply)

    def request_controller(self, req: Request, on_reply: Callable[[Reply], None]) -> None:
        """Send to the controller the metadata names, looking it up first when unknown
        (NOT_CONTROLLER when there is none)."""
        controller = self.meta.controller
        if controller is not None:

            def answered(reply: Reply) -> None:
                if reply.error in (ErrorCode.NOT_CONTROLLER, ErrorCode.NETWORK_EXCEPTION):
                    self.meta.controller = None  # ask again next time: it moved or is down
                on_reply(reply)

            self.request(controller, req, answered)
            return
        if self._looking_up:
            on_reply(Reply(0, ErrorCode.NOT_CONTROLLER, "looking the controller up", None))
            return
        self._looking_up = True

        def looked_up(ok: bool) -> None:
            self._looking_up = False
            if self.meta.controller is None:
                on_reply(Reply(0, ErrorCode.NOT_CONTROLLER, "no controller at the moment", None))
            else:
                self.request_controller(req, on_reply)

        self.fetch_metadata((), looked_up)


class SimAdmin(SimClient):
    """Creates the topic on the controller, retrying until it exists (the test's own admin,
    not the library's: it looks the controller up every few units while it is unknown)."""

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
        self._lookup_busy = False
        self._lookup_after = 0

    def step(self) -> None:
        if self.done:
            self._probe()
            return
        if self.busy or self.world.now < self.next_at:
            return
        controller = self.meta.controller
        if controller is None:
            self._look_up()
            return
        self.busy = True
        req = CreateTopicsRequest(
            topics=(
                NewTopic(name=self.topic, partitions=self.partitions, replication_factor=self.rf),
            ),
            timeout_ms=self.timeout_units * MS_PER_UNIT // 2,
        )
        self.request(controller, req, self._created)

    def _look_up(self) -> None:
        """Ask a broker who the controller is (at most one question at a time, 2-8 units
        apart)."""
        if self._lookup_busy or self.world.now < self._lookup_after:
            return
        self._lookup_busy = True

        def done(ok: bool) -> None:
            self._lookup_busy = False
            self._lookup_after = self.world.now + self.rng.randint(2, 8)

        self.fetch_metadata((), done)

    def _probe(self) -> None:
        """InitProducerId to a broker drawn among all (any broker answers: the controller
        from its own blocks, the others from blocks they ask it for)."""
        w = self.world
        if not self.probe_every or self.probe_busy or w.now < self.probe_at:
            return
        self.probe_busy = True
        bid = self.rng.choice(self.brokers())

        def answered(reply: Reply) -> None:
            self.probe_busy = False
            self.probe_at = w.now + self.probe_every
            body = reply.body
            if reply.error == ErrorCode.NONE and isinstance(body, InitProducerIdResponse):
                w.checker.on_producer_id(body.producer_id, f"admin probe via b{bid}")
                w.stats.pids_probed += 1
                if bid != w.controller():
                    w.stats.pids_forwarded += 1

        self.request(bid, InitProducerIdRequest(), answered)

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
        cap = min(200, 5 << min(self.attempts, 6))
        self.next_at = self.world.now + cap // 2 + self.rng.randint(0, cap // 2)
        self.meta.controller = None


class SimProducer(SimClient):
    """An idempotent producer: a driver over `ProducerCore` (see the module docstring)."""

    def __init__(
        self,
        world: ClusterWorld,
        index: int,
        topic: str,
        timeout_units: int,
        delivery_timeout_units: int,
        max_in_flight: int = 5,
    ) -> None:
        super().__init__(world, f"producer{index}", timeout_units, max_in_flight=max_in_flight)
        self.index = index
        self.topic = topic
        self.core: ProducerCore[None] = ProducerCore(
            accumulator=Accumulator(
                batch_bytes=256 * 1024,
                linger_s=0.0,
                delivery_timeout_s=delivery_timeout_units * MS_PER_UNIT / 1000,
                partitioner=default_partition,
                rng=self.rng,
            ),
            metadata=self.meta,
            refresh=self.refresh,
            backoff=self.backoff,
            idempotent=True,
            max_in_flight=max_in_flight,
            max_request_bytes=MAX_REQUEST_BYTES,
            on_settled=self._settled,
            on_routed=lambda ticket, batch, index: None,
            on_unroutable=self._unroutable,
        )
        self.sent_values = 0
        self.acked: list[tuple[int, int, TP, int, bytes]] = []
        """(batch send order, record index, partition, offset, value)."""
        self.failed = 0

    @property
    def fatal(self) -> str | None:
        return None if self.core.fatal is None else str(self.core.fatal)

    def pending(self) -> int:
        """Batches not yet settled plus records waiting for metadata."""
        return len(self.core.incomplete) + sum(len(q) for q in self.core.unrouted.values())

    # -- the application ----------------------------------------------------------------------

    def send(self, n: int, partition: int | None = None) -> list[bytes]:
        """n new records (one batch: the accumulator seals at the next step), to `partition`
        (None: the topic's sticky partition); their values."""
        if self.core.fatal is not None:
            return []
        values = []
        now = self.now()
        for _ in range(n):
            self.sent_values += 1
            value = b"p%d-%d" % (self.index, self.sent_values)
            record = Record(value=value, timestamp=self.world.now * MS_PER_UNIT)
            self.core.enqueue(
                self.topic, record, None, partition, record_size(None, value, ()), now, None
            )
            values.append(value)
        return values

    def _settled(self, batch: Batch) -> None:
        tp = batch.tp
        if batch.error is None:
            for i, record in enumerate(batch.records):
                assert record.value is not None
                self.acked.append((batch.order, i, tp, batch.base_offset + i, record.value))
            return
        self.failed += 1
        self.world.log(
            f"{self.name}: batch {tp} seq {batch.base_sequence} failed: {batch.error.code.name}"
        )

    def _unroutable(self, ticket: None, size: int, error: SluiceError) -> None:
        self.failed += 1

    # -- the sender loop ----------------------------------------------------------------------

    def step(self) -> None:
        core = self.core
        if core.fatal is not None:
            return
        now = self.now()
        core.advance(now)
        request = core.identity_request(now)
        if request is not None:
            self.request_any(request, self._identity)  # any broker answers InitProducerId
        for leader, tps in core.drain_plan(now).items():
            while self.has_capacity(leader):
                picked = core.pick(tps, now)
                if not picked:
                    break
                req = ProducerCore.produce_request(picked, self.timeout_units * MS_PER_UNIT // 2)
                self.request(leader, req, functools.partial(self._produced, batches=picked))
        topics = self.refresh.start(now, core.has_queued)
        if topics is not None:
            self.fetch_metadata(tuple(sorted(topics)), functools.partial(self._refreshed, topics))

    def _refreshed(self, topics: frozenset[str], ok: bool) -> None:
        self.core.leaders_changed()
        stale = self.core.stale_topics(topics, self.unreachable)
        self.refresh.finish(self.now(), topics, ok, stale)

    def _identity(self, reply: Reply) -> None:
        core = self.core
        body = reply.body
        if reply.error != ErrorCode.NONE or not isinstance(body, InitProducerIdResponse):
            core.identity_failed(_failure(reply), self.now())
            return
        seq = core.sequences
        if seq is None or body.producer_id != seq.producer_id:
            self.world.checker.on_producer_id(body.producer_id, self.name)
            self.world.log(f"{self.name}: producer id {body.producer_id}")
        else:
            self.world.log(f"{self.name}: epoch bumped to {body.producer_epoch}")
        core.identity_answered(body)

    def _produced(self, reply: Reply, *, batches: list[Batch]) -> None:
        if reply.error != ErrorCode.NONE or not isinstance(reply.body, ProduceResponse):
            self.core.on_request_error(batches, _failure(reply), self.now())
        else:
            self.core.on_response(batches, reply.body, self.now())


class SimReader(SimClient):
    """Reads every partition from offset 0: a driver over `Positions` (see the module
    docstring)."""

    def __init__(self, world: ClusterWorld, topic: str, timeout_units: int) -> None:
        super().__init__(world, "reader", timeout_units, backoff_s=(0.1, 1.0))
        self.topic = topic
        self.positions = Positions(
            auto_offset_reset="earliest",
            isolation=IsolationLevel.READ_COMMITTED,
            max_poll_records=1 << 30,
            fetch_max_wait_ms=0,
            fetch_min_bytes=1,
            fetch_max_bytes=FETCH_BYTES,
            max_partition_fetch_bytes=FETCH_BYTES,
            metadata=self.meta,
            refresh=self.refresh,
            backoff=self.backoff,
            on_data=lambda: None,
        )
        self.high_watermark: dict[TP, int] = {}
        self.idle_until = 0
        """After an answer that left every partition it held at its high watermark (caught
        up), the next fetch waits until then (in units): the pause a long poll would take,
        which the simulated brokers do not park."""
        self.out_of_range: dict[TP, int] = {}
        """Per partition, the fetch offset an OFFSET_OUT_OF_RANGE answer came for (the reset
        that follows moves on from it)."""
        self.records = 0

    def step(self) -> None:
        positions = self.positions
        now = self.now()
        if not positions.partitions:
            count = self.meta.partition_count(self.topic)
            if count is None:
                self.refresh.want(self.topic)
            else:
                positions.assign((self.topic, p) for p in range(count))
                for tp in positions.partitions:
                    positions.seek(tp, 0)
        positions.want_metadata(now, max_age_s=5.0)
        topics = self.refresh.start(now, _everything)
        if topics is not None:
            before = positions.leaders(topics)
            self.fetch_metadata(
                tuple(sorted(topics)), functools.partial(self._refreshed, topics, before)
            )
        for leader, tps in positions.resets_due(now).items():
            req, generations = positions.list_offsets_request(tps)
            self.request(
                leader, req, functools.partial(self._reset, leader=leader, generations=generations)
            )
        if self.world.now < self.idle_until:
            return
        for plan in positions.fetches_due(now):
            fetch, snapshot = positions.fetch_request(plan)
            self.request(plan.leader, fetch, functools.partial(self._fetched, plan, snapshot))

    def caught_up(self, high_watermarks: dict[TP, int]) -> bool:
        """Every partition fetched up to its high watermark (nothing is left buffered)."""
        partitions = self.positions.partitions
        for tp, hw in high_watermarks.items():
            state = partitions.get(tp)
            if state is None or state.fetch_offset is None or state.fetch_offset < hw:
                return False
        return True

    def _refreshed(self, topics: frozenset[str], before: dict[TP, int | None], ok: bool) -> None:
        now = self.now()
        stale = self.positions.refreshed(now, before, self.unreachable)
        self.refresh.finish(now, topics, ok, stale)

    def _reset(self, reply: Reply, *, leader: int, generations: dict[TP, int]) -> None:
        positions = self.positions
        positions.resetting.difference_update(generations)
        now = self.now()
        body = reply.body
        if reply.error != ErrorCode.NONE or not isinstance(body, ListOffsetsResponse):
            for tp in generations:
                positions.retry_later(tp, _failure(reply), now)
            return
        before = {tp: positions.partitions[tp].position for tp in generations}
        positions.on_list_offsets(generations, body, now)
        for tp in generations:
            start = positions.partitions[tp].position
            if before[tp] is not None or start is None:
                continue
            offset = self.out_of_range.pop(tp, None)
            self._check_log_start(leader, tp, start)
            if offset is not None and offset < start:
                self.world.checker.history.delete(tp, offset, start)
                self.world.stats.retention_skipped += start - offset
                self.world.log(f"reader: {tp} offsets [{offset}, {start}) deleted by retention")

    def _check_log_start(self, bid: int, tp: TP, start: int) -> None:
        node = self.world.brokers[bid].node
        if node is None:
            return  # it answered, then crashed
        topic = node.meta.topics.get(tp[0])
        if topic is None or not 0 <= tp[1] < len(topic.partitions):
            return
        gid = topic.partitions[tp[1]].group_id
        config = node.config
        self.world.checker.check_log_start(
            bid, gid, config.partition, start, config.partition_retention_entries
        )

    def _fetched(self, plan: FetchPlan, snapshot: dict[TP, tuple[int, int]], reply: Reply) -> None:
        positions = self.positions
        positions.fetching.discard(plan.leader)
        now = self.now()
        body = reply.body
        if reply.error != ErrorCode.NONE or not isinstance(body, FetchResponse):
            positions.fetch_failed(plan.tps, _failure(reply), now)
            return
        for t in body.topics:
            for part in t.partitions:
                tp = (t.name, part.partition)
                offset = snapshot[tp][1]
                self.world.check_fetch(plan.leader, tp, offset, part)
                if not positions.is_current(tp, snapshot):
                    continue
                if part.error == ErrorCode.OFFSET_OUT_OF_RANGE:
                    self.out_of_range[tp] = offset
                elif part.error == ErrorCode.NONE:
                    self._check_no_skip(tp, offset, part.batches)
                    hw = max(self.high_watermark.get(tp, 0), part.high_watermark)
                    self.high_watermark[tp] = hw
        positions.on_fetch(snapshot, body, now)
        history = self.world.checker.history
        for record in positions.take(1 << 30):
            if record.value is not None:
                history.read((record.topic, record.partition), record.offset, record.value)
                self.records += 1
        if self.caught_up({tp: self.high_watermark.get(tp, 0) for tp in plan.tps}):
            self.idle_until = max(self.idle_until, self.world.now + self.rng.randint(5, 20))

    def _check_no_skip(self, tp: TP, offset: int, batches: tuple[FetchedBatch, ...]) -> None:
        """A fetch from `offset` returns batches from there on, none starting past it."""
        pos = offset
        for fb in batches:
            base = fb.base_offset
            count = len(decode_records(fb.data))
            if base > pos:
                self.world.checker.problems.append(
                    Problem("poll-skip", f"{tp} fetch at {pos} from the leader returned {base}")
                )
            pos = max(pos, base + count)
