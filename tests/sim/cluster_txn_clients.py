"""Simulated clients of the cluster simulator's `txn` profile: transactional producer
instances and a read_committed reader (tests/sim/cluster_txn.py runs them).

`SimTxnProducer` is one instance of a transactional producer: a thin driver over the client
library's `ProducerCore(transactional=True)`, doing what the Trio shell
(`consumers.transaction.TransactionSession` with `consumers.producer.Producer`) does with it,
over the world's client connections (time: the world's). Coordinator requests go to the
broker FIND_COORDINATOR (key type transaction) named, forgotten on a coordinator error, a
broken connection or a timeout; each is retried on retriable errors with backoff until its
operation's deadline, one operation at a time:
- InitProducerId (transactional id, timeout): the producer id and epoch;
- per transaction (its own epoch; sequences restart at 0): records to 2-3 partitions, each
  partition registered by AddPartitionsToTxn before its records are sent (`registered`,
  `unregistered()`), the records sent by the core's drain plan to the partitions' leaders;
- commit (drawn per transaction): once every record is acknowledged, EndTxn(commit) with the
  last sequence per partition; TRANSACTION_ABORTED is followed by EndTxn(abort) of the same
  epoch (its answer hands out the next epoch), as the shell does; a failed record aborts;
- abort (drawn, sometimes midway while records are on the wire): unsent records fail, the
  registration in flight is dropped, and once no batch is on the wire, EndTxn(abort) (no
  EndTxn at all when the coordinator never heard of the transaction);
- fatal (the instance stops): PRODUCER_FENCED, INVALID_PRODUCER_EPOCH, a producer id mapping
  that moved, TRANSACTION_TIMED_OUT, or an EndTxn given up on (its outcome unknown).
Each transaction's outcome as the instance knows it goes to the checkers: committed (EndTxn
commit answered), aborted (answered, refused, or never asked to commit), unknown (EndTxn
commit sent, no definite answer). Record values name the instance, transaction, partition
and index, so every value is unique.

Zombies: the driver starts a second instance of a transactional id while the first goes on
(half the time the first stalls meanwhile, as a paused process would, and wakes up later);
once the newer one's InitProducerId is answered, the older is `superseded_at` that time:
every request it sends afterwards must be refused (`txn-zombie` if one is accepted), and
it keeps beginning transactions until a fencing answer stops it.

`TxnReader` fetches every partition read_committed from its leader (metadata from the
world's brokers), each partition from the answer's next offset on, one fetch per partition
at a time, pausing 5-20 units once caught up. Every answer goes through the fetch checks
(`TxnClusterChecker.check_read`) before its records count as read.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from broker.core.requests import Reply
from broker.wire.batch import Record
from broker.wire.errors import ErrorCode
from broker.wire.group_messages import (
    CoordinatorType,
    FindCoordinatorRequest,
    FindCoordinatorResponse,
)
from broker.wire.messages import (
    FetchPartition,
    FetchRequest,
    FetchResponse,
    FetchTopic,
    InitProducerIdRequest,
    InitProducerIdResponse,
    IsolationLevel,
    ProduceResponse,
    Request,
)
from broker.wire.partitioner import default_partition
from broker.wire.producer import EPOCH_MAX
from broker.wire.txn_messages import (
    AddPartitionsToTxnRequest,
    EndTxnRequest,
    EndTxnResponse,
    TxnSequence,
    TxnTopic,
)
from consumers.core.accumulator import Accumulator, Batch, record_size
from consumers.core.producer import ProducerCore
from consumers.errors import (
    BrokerUnavailableError,
    CoordinatorError,
    ProducerFencedError,
    RequestTimedOutError,
    SluiceError,
    TransactionAbortedError,
    error_for,
)
from tests.sim.cluster_clients import MAX_REQUEST_BYTES, SimClient
from tests.sim.cluster_scenario import ClusterScenario
from tests.sim.cluster_txn_checker import Txn, TxnClusterChecker
from tests.sim.cluster_world import MS_PER_UNIT, ClusterWorld

REQUEST_TIMEOUT = 200
"""Units (1 s) a client waits for any answer."""
FATAL = frozenset(
    {
        ErrorCode.PRODUCER_FENCED,
        ErrorCode.INVALID_PRODUCER_EPOCH,
        ErrorCode.INVALID_PRODUCER_ID_MAPPING,
        ErrorCode.TRANSACTIONAL_ID_NOT_FOUND,
        ErrorCode.TRANSACTION_TIMED_OUT,
        ErrorCode.TRANSACTION_ABORTED,
    }
)
"""Answers to a registration after which the instance cannot go on (the shell's `_FATAL`,
plus an operator's abort)."""
FENCING = frozenset({ErrorCode.PRODUCER_FENCED, ErrorCode.INVALID_PRODUCER_EPOCH})


def units(seconds: float) -> int:
    """Whole world units covering `seconds`."""
    return max(1, math.ceil(round(seconds * 1000 / MS_PER_UNIT, 6)))


def failure(reply: Reply) -> SluiceError:
    code = reply.error if reply.error != ErrorCode.NONE else ErrorCode.UNKNOWN_SERVER_ERROR
    return error_for(code, reply.message)


def _moved(error: SluiceError) -> bool:
    """An error after which `CoordinatorLink` forgets the coordinator."""
    return isinstance(error, CoordinatorError | BrokerUnavailableError | RequestTimedOutError)


class ClientPlan(Protocol):
    """What the clients read of the seed's plan (cluster_txn.TxnPlan)."""

    @property
    def timeout_ms(self) -> int: ...
    @property
    def commit_share(self) -> float: ...
    @property
    def max_records(self) -> int: ...
    @property
    def think_units(self) -> int: ...
    @property
    def op_timeout_units(self) -> int: ...


class TxnHost(Protocol):
    """What the clients need of the profile's driver (cluster_txn.TxnDriver)."""

    world: ClusterWorld
    sc: ClusterScenario
    checker: TxnClusterChecker
    topic: str
    sending: bool

    @property
    def plan(self) -> ClientPlan: ...

    def may_begin(self, inst: SimTxnProducer) -> bool: ...

    def initialised(self, inst: SimTxnProducer) -> None: ...

    def instance_dead(self, inst: SimTxnProducer) -> None: ...

    def zombie(self, inst: SimTxnProducer) -> None: ...


@dataclass(eq=False)
class _Op:
    """One coordinator operation, retried until its deadline (world units)."""

    what: str
    request: Request
    deadline: int
    done: Callable[[_Op, Reply], None]
    attempt: int = 0
    retry_at: int = 0
    busy: bool = False
    first_sent: int = -1
    """When its first attempt left (-1: not yet)."""


class SimTxnProducer(SimClient):
    """One transactional producer instance (see the module docstring)."""

    def __init__(self, drv: TxnHost, txn_id: str, instance: int) -> None:
        super().__init__(drv.world, f"{txn_id}#{instance}", REQUEST_TIMEOUT, backoff_s=(0.05, 1.0))
        self.drv = drv
        self.plan = drv.plan
        self.checker: TxnClusterChecker = drv.checker
        self.stats = drv.checker.tstats
        self.txn_id = txn_id
        self.instance = instance
        op_s = self.plan.op_timeout_units * MS_PER_UNIT / 1000
        self.core: ProducerCore[None] = ProducerCore(
            accumulator=Accumulator(
                batch_bytes=256 * 1024,
                linger_s=0.0,
                delivery_timeout_s=op_s,
                partitioner=default_partition,
                rng=self.rng,
            ),
            metadata=self.meta,
            refresh=self.refresh,
            backoff=self.backoff,
            idempotent=True,
            max_in_flight=5,
            max_request_bytes=MAX_REQUEST_BYTES,
            on_settled=self._settled,
            on_routed=lambda ticket, batch, index: None,
            on_unroutable=lambda ticket, size, error: None,
            transactional=True,
        )
        self.state = "init"
        """init, idle, open, ending, dead."""
        self.superseded_at: int | None = None
        self.why_dead = ""
        self.op: _Op | None = None
        self.coordinator: int | None = None
        self.finding = False
        self.find_at = 0
        self.find_attempt = 0
        self.txn: Txn | None = None
        self.txns: list[Txn] = []
        self.number = 0
        self.touched = False
        self.registering: frozenset[tuple[str, int]] = frozenset()
        self.commit_planned = False
        self.abort_at: int | None = None
        self.wave: list[tuple[int, bytes]] = []
        self.wave_at = 0
        self.end_started = False
        self.end_commit = False
        self.wire_deadline = 0
        self.idle_until = 0
        self.first_sent: dict[Batch, int] = {}
        self.stalled_until = 0
        """A stalled instance (a paused process) sends nothing until then."""
        self.successor_at = ""
        """When the driver starts a successor (making this instance a zombie): "commit" (as
        its EndTxn(commit) leaves), "idle" (once its transaction ended), "" (not planned)."""
        self.abandon = False
        """Crash once a record of the current transaction is acknowledged (the driver's
        test of the coordinator's timeout after the heal)."""
        self._poking = False

    @property
    def alive(self) -> bool:
        return self.state != "dead"

    # -- life --------------------------------------------------------------------------------

    def start(self) -> None:
        self.world.log(f"{self.name}: starts")
        request = InitProducerIdRequest(
            transactional_id=self.txn_id, transaction_timeout_ms=self.plan.timeout_ms
        )
        self._begin_op("init", request, self._initialised)

    def _initialised(self, op: _Op, reply: Reply) -> None:
        body = reply.body
        if reply.error != ErrorCode.NONE or not isinstance(body, InitProducerIdResponse):
            self._die(failure(reply), "InitProducerId failed")
            return
        self.core.identity_answered(body)
        self.checker.on_epoch(self.name, body.producer_id, body.producer_epoch, "InitProducerId")
        self.world.log(f"{self.name}: pid {body.producer_id} e{body.producer_epoch}")
        self.state = "idle"
        self.drv.initialised(self)

    def crash(self) -> None:
        """The client process dies: nothing more is sent; its transaction is left to a
        successor's InitProducerId or the coordinator's timeout."""
        if not self.alive:
            return
        self.stats.crashed += 1
        self.world.log(f"{self.name}: crashes ({self.state})")
        self._end_txn_record("unknown" if self._commit_sent() else "aborted", "client crashed")
        self.state = "dead"
        self.why_dead = "crashed"
        self.drv.instance_dead(self)

    def _die(self, error: SluiceError, why: str) -> None:
        if not self.alive:
            return
        if error.code in FENCING or isinstance(error, ProducerFencedError):
            self.stats.fenced += 1
        self.world.log(f"{self.name}: fatal ({why}): {error.code.name} {error.message}")
        outcome = "unknown" if self._commit_sent() else "aborted"
        self._end_txn_record(outcome, f"{why}: {error.code.name}")
        if self.core.fatal is None:
            self.core.go_fatal(error, self.now())
        self.state = "dead"
        self.why_dead = f"{why}: {error.code.name}"
        self.op = None
        self.drv.instance_dead(self)

    def _commit_sent(self) -> bool:
        return self.txn is not None and self.txn.commit_sent

    def _end_txn_record(self, outcome: str, why: str) -> None:
        txn = self.txn
        if txn is None:
            return
        txn.outcome, txn.why = outcome, why
        if outcome == "committed":
            self.stats.committed += 1
        elif outcome == "unknown":
            self.stats.unknown += 1
        else:
            self.stats.aborted += 1
        self.txn = None

    # -- the loop ----------------------------------------------------------------------------

    def poke(self) -> None:
        """Do whatever is due (every few units, and after every answer)."""
        if not self.alive or self._poking or self.world.now < self.stalled_until:
            return
        self._poking = True
        try:
            self._poke()
        finally:
            self._poking = False

    def _poke(self) -> None:
        w, core = self.world, self.core
        now = self.now()
        core.advance(now)
        if self.state == "idle" and w.now >= self.idle_until and self.drv.may_begin(self):
            self._begin_txn()
        if self.state == "open":
            self._open_step()
        if self.state == "ending":
            self._ending_step()
        if self.state in ("open", "ending"):
            self._drain(now)
        if core.fatal is not None and self.alive:
            self._die(core.fatal, "produce answer")
            return
        topics = self.refresh.start(now, core.has_queued)
        if topics is not None:
            self.fetch_metadata(tuple(sorted(topics)), functools.partial(self._refreshed, topics))
        self._pump_op()

    def _refreshed(self, topics: frozenset[str], ok: bool) -> None:
        self.core.leaders_changed()
        stale = self.core.stale_topics(topics, self.unreachable)
        self.refresh.finish(self.now(), topics, ok, stale)
        self.poke()

    # -- a transaction ------------------------------------------------------------------------

    def _begin_txn(self) -> None:
        core, rng, plan = self.core, self.rng, self.plan
        seq = core.sequences
        assert seq is not None
        self.number += 1
        txn = Txn(self.name, self.txn_id, self.number, seq.producer_id, seq.producer_epoch)
        self.txn = txn
        self.txns.append(txn)
        self.stats.begun += 1
        core.new_transaction()
        self.touched = False
        self.end_started = False
        self.state = "open"
        parts = rng.sample(range(self.drv.sc.partitions), rng.randint(2, 3))
        records = [
            (p, f"{self.name}/{self.number}/{p}/{i}".encode())
            for p in sorted(parts)
            for i in range(rng.randint(1, plan.max_records))
        ]
        cut = rng.randint(1, len(records)) if rng.random() < 0.5 else len(records)
        self.wave = records[cut:]
        self.wave_at = self.world.now + rng.randint(3, 30)
        self._enqueue(records[:cut])
        self.commit_planned = rng.random() < plan.commit_share
        self.abort_at = None
        if not self.commit_planned and rng.random() < 0.5:
            self.abort_at = self.world.now + rng.randint(2, 60)
        verb = "commit" if self.commit_planned else "abort"
        self.world.log(f"{self.name}: begins txn {self.number} (e{txn.epoch}, will {verb})")

    def _enqueue(self, records: list[tuple[int, bytes]]) -> None:
        txn = self.txn
        assert txn is not None
        now = self.now()
        for p, value in records:
            txn.values.setdefault(p, []).append(value)
            record = Record(value=value, timestamp=self.world.now * MS_PER_UNIT)
            self.core.enqueue(
                self.drv.topic, record, None, p, record_size(None, value, ()), now, None
            )

    def _open_step(self) -> None:
        core, w = self.core, self.world
        if self.wave and w.now >= self.wave_at and core.txn_error is None:
            wave, self.wave = self.wave, []
            self._enqueue(wave)
        if self.abort_at is not None and w.now >= self.abort_at:
            self.stats.abort_midway += 1
            self._start_end(commit=False)
            return
        if core.txn_error is not None:
            self._start_end(commit=False)
            return
        self._register_due()
        settled = not core.incomplete and not core.unrouted and not self.wave
        if settled and not self.registering:
            self._start_end(commit=self.commit_planned)

    def _register_due(self) -> None:
        core = self.core
        if self.registering or self.op is not None or core.txn_error is not None:
            return
        wanted = core.unregistered()
        if not wanted:
            return
        seq = core.sequences
        assert seq is not None
        self.registering = frozenset(wanted)
        self.touched = True
        by_topic: dict[str, list[int]] = {}
        for topic, partition in sorted(wanted):
            by_topic.setdefault(topic, []).append(partition)
        request = AddPartitionsToTxnRequest(
            transactional_id=self.txn_id,
            producer_id=seq.producer_id,
            producer_epoch=seq.producer_epoch,
            topics=tuple(TxnTopic(name=t, partitions=tuple(ps)) for t, ps in by_topic.items()),
        )
        done = functools.partial(self._registered, self.registering, seq.producer_epoch)
        self._begin_op("add", request, done)

    def _registered(
        self, tps: frozenset[tuple[str, int]], epoch: int, op: _Op, reply: Reply
    ) -> None:
        self.registering = frozenset()
        if reply.error == ErrorCode.NONE:
            self._accepted("AddPartitionsToTxn", op.first_sent)
            seq = self.core.sequences
            if seq is not None and seq.producer_epoch == epoch and self.state == "open":
                self.core.registered.update(tps)
            return
        error = failure(reply)
        if error.code in FATAL or isinstance(error, ProducerFencedError):
            self._die(error, "AddPartitionsToTxn")
        else:
            self.core.txn_failed(error, self.now())

    def _start_end(self, *, commit: bool) -> None:
        """Commit or abort: stop adding, then (`_ending_step`) EndTxn once the wire is idle."""
        core = self.core
        self.state = "ending"
        self.end_commit = commit
        self.wave = []
        if not commit:
            core.abort_unsent(TransactionAbortedError("the transaction was aborted"), self.now())
            if self.op is not None and self.op.what == "add":
                self.op = None  # the shell cancels the registration in flight
                self.registering = frozenset()
        self.wire_deadline = self.world.now + self.plan.op_timeout_units

    def _ending_step(self) -> None:
        core, txn = self.core, self.txn
        if self.end_started or self.op is not None or txn is None:
            return
        if core.on_the_wire():
            if self.world.now >= self.wire_deadline:
                self._die(RequestTimedOutError("produce answers never came"), "waiting")
            return
        commit = self.end_commit and core.txn_error is None
        if not self.touched:
            self.world.log(f"{self.name}: txn {txn.number} ends unregistered (no EndTxn)")
            self._end_txn_record("aborted", "never registered")
            self.state = "idle"
            self.idle_until = self.world.now + self.rng.randint(1, self.plan.think_units)
            return
        self.end_started = True
        sequences = core.last_sequences() if commit else {}
        request = EndTxnRequest(
            transactional_id=self.txn_id,
            producer_id=txn.producer_id,
            producer_epoch=txn.epoch,
            commit=commit,
            sequences=tuple(
                TxnSequence(topic=t, partition=p, last_sequence=s)
                for (t, p), s in sorted(sequences.items())
            ),
        )
        if commit:
            txn.commit_sent = True
        self._begin_op("end", request, functools.partial(self._ended, txn, commit))
        if commit and self.successor_at == "commit" and self.drv.sending:
            self.world.at(self.world.now + self.rng.randint(0, 30), self._successor)

    def _ended(self, txn: Txn, commit: bool, op: _Op, reply: Reply) -> None:
        body = reply.body
        if reply.error == ErrorCode.NONE and isinstance(body, EndTxnResponse):
            self._accepted("EndTxn", op.first_sent)
            if commit:
                self._end_txn_record("committed", "")
                self.world.log(f"{self.name}: txn {txn.number} committed")
                self.checker.told_committed(self.world, txn)
            elif self.txn is txn:
                self._end_txn_record("aborted", txn.why or "the producer aborted it")
            self._adopt(body)
            return
        error = failure(reply)
        if commit and error.code == ErrorCode.TRANSACTION_ABORTED:
            # A participant voted no (or the transaction was aborted under it): ask to abort
            # the same epoch, which hands out the next one.
            self.stats.aborted_by_coordinator += 1
            txn.commit_sent = False  # definite: it aborted
            txn.why = "the coordinator aborted it"
            request = EndTxnRequest(
                transactional_id=self.txn_id,
                producer_id=txn.producer_id,
                producer_epoch=txn.epoch,
                commit=False,
                sequences=(),
            )
            self._begin_op("end", request, functools.partial(self._ended, txn, False))
            return
        if commit and error.code == ErrorCode.TRANSACTION_TIMED_OUT:
            self.stats.aborted_by_coordinator += 1
            txn.commit_sent = False  # definite: its timeout aborted it
        self._die(error, "EndTxn")

    def _adopt(self, body: EndTxnResponse) -> None:
        """The epoch the ended transaction handed out (a new identity when told to)."""
        if body.reinit:
            if body.producer_epoch < EPOCH_MAX - 1:
                error = error_for(ErrorCode.TRANSACTION_TIMED_OUT, "fenced by the coordinator")
                self._die(error, "EndTxn answer (reinit)")
                return
            self.state = "init"
            self.start()
            return
        self.core.identity_answered(
            InitProducerIdResponse(producer_id=body.producer_id, producer_epoch=body.producer_epoch)
        )
        self.checker.on_epoch(self.name, body.producer_id, body.producer_epoch, "EndTxn answer")
        self.state = "idle"
        self.idle_until = self.world.now + self.rng.randint(1, self.plan.think_units)
        if self.successor_at == "idle" and self.drv.sending:
            self.drv.zombie(self)

    def _successor(self) -> None:
        if self.alive and self.drv.sending:
            self.drv.zombie(self)

    def _accepted(self, what: str, first_sent: int) -> None:
        """A request answered NONE: refused if it left after this instance was superseded."""
        at = self.superseded_at
        if at is not None and first_sent > at:
            self.checker.zombie_accepted(self.name, what, first_sent, at)

    # -- records -----------------------------------------------------------------------------

    def _drain(self, now: float) -> None:
        core = self.core
        for leader, tps in core.drain_plan(now).items():
            while self.has_capacity(leader):
                picked = core.pick(tps, now)
                if not picked:
                    break
                for batch in picked:
                    self.first_sent.setdefault(batch, self.world.now)
                req = ProducerCore.produce_request(picked, REQUEST_TIMEOUT * MS_PER_UNIT // 2)
                self.request(leader, req, functools.partial(self._produced, picked))

    def _produced(self, batches: list[Batch], reply: Reply) -> None:
        if not self.alive:
            return
        if reply.error != ErrorCode.NONE or not isinstance(reply.body, ProduceResponse):
            self.core.on_request_error(batches, failure(reply), self.now())
        else:
            self.core.on_response(batches, reply.body, self.now())
        self.poke()

    def _settled(self, batch: Batch) -> None:
        first = self.first_sent.pop(batch, -1)
        txn = self.txn
        if batch.error is not None or txn is None:
            return
        self._accepted(f"produce to {batch.tp}", first)
        for i, record in enumerate(batch.records):
            assert record.value is not None
            txn.acked[record.value] = (batch.tp[1], batch.base_offset + i)
            self.stats.records_acked += 1
        if self.abandon:
            self.crash()

    # -- the coordinator -----------------------------------------------------------------------

    def _begin_op(self, what: str, request: Request, done: Callable[[_Op, Reply], None]) -> None:
        self.op = _Op(what, request, self.world.now + self.plan.op_timeout_units, done)
        self._pump_op()

    def _pump_op(self) -> None:
        op, w = self.op, self.world
        if op is None or op.busy or w.now < op.retry_at or not self.alive:
            return
        if w.now < self.stalled_until:
            return
        if w.now >= op.deadline:
            self._finish(op, Reply(0, ErrorCode.REQUEST_TIMED_OUT, f"{op.what}: gave up", None))
            return
        bid = self._coordinator_id()
        if bid is None:
            return
        op.busy = True
        if op.first_sent < 0:
            op.first_sent = w.now
        self.request(bid, op.request, functools.partial(self._op_answered, op))

    def _op_answered(self, op: _Op, reply: Reply) -> None:
        op.busy = False
        if self.op is not op or not self.alive:
            return
        if reply.error != ErrorCode.NONE:
            error = failure(reply)
            if self.coordinator is not None and _moved(error):
                self.coordinator = None
            if error.retriable:
                delay = units(self.backoff.delay(op.attempt))
                op.attempt += 1
                if self.world.now + delay < op.deadline:
                    op.retry_at = self.world.now + delay
                    self.world.at(op.retry_at, self.poke)
                    return
        self._finish(op, reply)

    def _finish(self, op: _Op, reply: Reply) -> None:
        self.op = None
        op.done(op, reply)
        self.poke()

    def _coordinator_id(self) -> int | None:
        if self.coordinator is not None:
            return self.coordinator
        w = self.world
        if self.finding or w.now < self.find_at:
            return None
        self.finding = True
        reachable = [b for b in self.brokers() if not self.unreachable(b)]
        bid = self.rng.choice(reachable or self.brokers())
        request = FindCoordinatorRequest(key=self.txn_id, key_type=CoordinatorType.TRANSACTION)
        self.request(bid, request, self._found)
        return None

    def _found(self, reply: Reply) -> None:
        self.finding = False
        body = reply.body
        if reply.error == ErrorCode.NONE and isinstance(body, FindCoordinatorResponse):
            self.coordinator = body.node_id
            self.find_attempt = 0
        else:
            self.find_at = self.world.now + units(self.backoff.delay(self.find_attempt))
            self.find_attempt += 1
            self.world.at(self.find_at, self.poke)
        self.poke()

    def describe(self) -> str:
        txn = self.txn
        now = f" txn {txn.number} e{txn.epoch}" if txn is not None else ""
        op = f" op={self.op.what}" if self.op is not None else ""
        zombie = f" superseded@{self.superseded_at}" if self.superseded_at is not None else ""
        return f"{self.name}: {self.state}{now}{op}{zombie} {self.why_dead}".rstrip()


class TxnReader(SimClient):
    """Reads every partition read_committed from offset 0 (see the module docstring)."""

    def __init__(self, drv: TxnHost) -> None:
        super().__init__(drv.world, "reader", REQUEST_TIMEOUT, backoff_s=(0.05, 0.5))
        self.drv = drv
        self.checker: TxnClusterChecker = drv.checker
        self.topic = drv.topic
        self.positions = dict.fromkeys(range(drv.sc.partitions), 0)
        self.high_watermark: dict[int, int] = {}
        self.fetching: set[int] = set()
        self.reads: dict[bytes, tuple[int, int]] = {}
        """Value -> (partition, offset) it was read at."""
        self.idle_until = 0

    def step(self) -> None:
        w = self.world
        now = self.now()
        topics = self.refresh.start(now, lambda topic: True)
        if topics is not None:
            self.fetch_metadata(tuple(sorted(topics)), functools.partial(self._refreshed, topics))
        if w.now < self.idle_until:
            return
        by_leader: dict[int, list[int]] = {}
        for p in self.positions:
            if p in self.fetching:
                continue
            leader = self.meta.leader_for((self.topic, p))
            if leader is None:
                self.refresh.want(self.topic)
                continue
            by_leader.setdefault(leader, []).append(p)
        for leader, ps in sorted(by_leader.items()):
            asked = {p: self.positions[p] for p in ps}
            self.fetching.update(ps)
            request = FetchRequest(
                topics=(
                    FetchTopic(
                        name=self.topic,
                        partitions=tuple(
                            FetchPartition(partition=p, offset=o) for p, o in asked.items()
                        ),
                    ),
                ),
                max_wait_ms=0,
                isolation=IsolationLevel.READ_COMMITTED,
            )
            self.request(leader, request, functools.partial(self._fetched, leader, asked))

    def _refreshed(self, topics: frozenset[str], ok: bool) -> None:
        unled = any(self.meta.leader_for((self.topic, p)) is None for p in self.positions)
        self.refresh.finish(self.now(), topics, ok, {self.topic} if unled else set())

    def _fetched(self, leader: int, asked: dict[int, int], reply: Reply) -> None:
        self.fetching.difference_update(asked)
        body = reply.body
        if reply.error != ErrorCode.NONE or not isinstance(body, FetchResponse):
            for p in asked:
                self.meta.invalidate((self.topic, p))
            self.refresh.want(self.topic)
            return
        for t in body.topics:
            for part in t.partitions:
                p = part.partition
                offset = asked.get(p)
                if offset is None:
                    continue
                if part.error != ErrorCode.NONE:
                    self.meta.invalidate((self.topic, p))
                    self.refresh.want(self.topic)
                    continue
                records = self.checker.check_read(self.world, leader, p, offset, part)
                if self.positions[p] != offset:
                    continue
                for o, value in records:
                    first = self.reads.setdefault(value, (p, o))
                    if first != (p, o):
                        self.checker.fail(
                            "txn-duplicate", f"reader read {value!r} at {first} and {(p, o)}"
                        )
                self.checker.tstats.records_read += len(records)
                if part.next_offset is not None:
                    self.positions[p] = max(offset, part.next_offset)
                hw = max(self.high_watermark.get(p, 0), part.high_watermark)
                self.high_watermark[p] = hw
        if all(self.positions[p] >= self.high_watermark.get(p, 0) for p in asked):
            self.idle_until = max(self.idle_until, self.world.now + self.rng.randint(5, 20))

    def caught_up(self, high_watermarks: dict[int, int]) -> bool:
        return all(self.positions.get(p, 0) >= hw for p, hw in high_watermarks.items())
