"""The driver: the one Trio task that owns the BrokerNode and runs its rounds.

Loop: take every operation that arrived (client requests, abandons, ticks), start them on the
node, then while the node has work run a round: send the messages that may go now, write the
round's Readies of all groups plus the state machines' writes as ONE write, and once it is
durable tell the node, send the acknowledgements that had to wait, apply, and answer.

Rounds are pipelined (store mode `pipelined`, the default): a round's write goes to the WAL
unsynced, on the loop (short), and the `WalSyncer` thread makes it durable while the loop goes
on: it reads sockets, parses requests, and begins the next rounds (up to `PIPELINE_DEPTH`
written and not yet durable), whose writes the next sync covers (group commit, across
partitions, clients and rounds). A round ends (`end_round`: acknowledgements, apply, answers)
only once its write is durable, and rounds end in the order they began; the Raft core keeps
each Ready's persistence separate (`RaftNode.persisted`), so nothing counts as durable early.
The event loop never waits on the disk, except for the rare synced writes outside rounds
(group creation and deletion, joining a cluster). Mode `inline` writes each round with
sync=True on the loop and ends it at once.

Fetches that do not yet have `min_bytes` are parked, and re-run after a round only when one of
their partitions changed (high watermark, term, serving), until they have enough or their
`max_wait_ms` (capped at `max_wait_s`) passes, or their client goes away.

With the durability audit on (tests), every committed entry a round applies, and so every
acknowledgement it causes, is checked to be durable first (the store checks its own writes
too, when it acknowledges them). With `metrics` attached, each round whose write needed a sync
is timed from its write to its durability and sized (its entries and their payload bytes):
work per round and per entry, never per record.

Peer requests: the driver owns the process's one `PeerRequests` (`peer_requests`, with a
random session per process life). The node's modules register handlers and result listeners
on it and call `request`; the loop ticks it with the node, delivers the requests and responses
the links bring (in order with the other peer input), runs its local path, sends its frames
and hands results of kinds without a listener to the tasks awaiting them (`peer_request`).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import os
import random
import signal
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import trio
from opentelemetry import trace
from opentelemetry.trace import Span

from broker.core.node import BrokerNode, Completion, Envelope, Round
from broker.core.peer_codec import (
    PEER_FRAME_BYTES,
    BrokerHeartbeat,
    HeartbeatAck,
    Hello,
    PeerRequest,
    PeerResponse,
    encode_heartbeat,
    encode_raft,
)
from broker.core.peer_requests import (
    DEFAULT_DEADLINE_TICKS,
    DEFAULT_RETRY_TICKS,
    PeerRequests,
    PeerResult,
)
from broker.core.raft import Entry, Message
from broker.core.requests import Reply, RequestHandler
from broker.core.rounds import begin_round, end_round
from broker.runtime.budget import ByteBudget
from broker.runtime.fault_log import FaultLog
from broker.runtime.groups import round_writes, write_compactions
from broker.runtime.metrics import BrokerMetrics
from broker.runtime.store import RocksStore, StoreError
from broker.runtime.store.db import Written
from broker.runtime.tracing import BrokerTracing
from broker.runtime.wal_syncer import WalSyncer
from broker.wire.api import SUPPORTED_VERSIONS, ApiKey, VersionRange
from broker.wire.errors import ErrorCode
from broker.wire.messages import FetchRequest, Request
from broker.wire.protocol import RequestHeader

log = logging.getLogger("sluice.driver")

PIPELINE_DEPTH = 4
"""Rounds written and not yet durable at most; the loop then waits for the sync (the requests
that arrive meanwhile make the next round bigger)."""


def _die_at_failpoint(name: str) -> None:
    """A configured failpoint was reached (tests only): the broker dies as by SIGKILL."""
    log.error("failpoint %s reached: SIGKILL", name)
    os.kill(os.getpid(), signal.SIGKILL)


@dataclass(eq=False)
class Op:
    """One client request in flight: answered once `reply` is set and `done` fires."""

    header: RequestHeader
    request: Request
    token: int = 0
    reply: Reply | None = None
    on_answer: Callable[[], None] | None = None
    """Called once, when the answer is set (the server writes it then)."""
    deadline: float = math.inf
    """Absolute Trio time until which a parked fetch may wait for data."""
    expires_at: float = math.inf
    """Absolute Trio time after which a produce or topic request is answered REQUEST_TIMED_OUT."""
    held: int = 0
    """Bytes of the connection's byte budget this request holds until it is answered."""
    reply_bytes: int = 0
    """Record bytes its answer carries (a fetch), accounted through `account` on resolve."""
    started: float = 0.0
    """Trio time at which its frame was read (request latency)."""
    account: Callable[[int], None] | None = None
    watch: tuple[tuple[int, int, bool], ...] = ()
    """A parked fetch's partitions as it last saw them (`RequestHandler.fetch_watch`)."""
    span: Span | None = None
    """Its tracing span, when traced and sampled (ended with the answer)."""

    def resolve(self, reply: Reply) -> None:
        if self.reply is None:
            self.reply = reply
            if self.span is not None:
                BrokerTracing.request_answered(self.span, reply.error.name)
            if self.reply_bytes and self.account is not None:
                self.account(self.reply_bytes)
            on_answer = self.on_answer
            if on_answer is not None:
                self.on_answer = None
                on_answer()


@dataclass(slots=True, eq=False)
class _InFlight:
    """A round begun and written, ended once its write is durable."""

    rnd: Round
    written: Written | None
    started: float
    """perf_counter() when its write began."""


@dataclass(frozen=True, slots=True)
class DriverStats:
    rounds: int
    rounds_written: int
    ops: int
    parked_fetches: int
    pending: int
    request_errors: int
    """Requests answered UNKNOWN_SERVER_ERROR because handling them raised (a bug)."""
    peer_input_errors: int
    """Peer messages dropped because handling them raised (a bug, or a lying peer)."""


class Driver:
    def __init__(
        self,
        node: BrokerNode,
        store: RocksStore,
        versions: Mapping[ApiKey, VersionRange] = SUPPORTED_VERSIONS,
    ) -> None:
        self.node = node
        self.handler = RequestHandler(node, versions)
        self.store = store
        self.audit = store.audit
        self._inbox: deque[Op] = deque()
        self._abandoned: deque[Op] = deque()
        self._ticks = 0
        self._wake = trio.Event()
        self._tokens = itertools.count(1)
        self._ops: dict[int, Op] = {}
        self._parked: list[Op] = []
        self.rounds = 0
        self.rounds_written = 0
        self.ops_started = 0
        self.hw_moved = trio.Event()
        self.network: PeerSender | None = None
        self._peer_inputs: deque[Callable[[], None]] = deque()
        self.max_wait_s = 300.0
        """Longest a fetch stays parked, whatever its max_wait_ms asks."""
        self.budget: ByteBudget | None = None
        """The client servers' byte budget: fetch answers shrink to the room left in it."""
        self.tracing: BrokerTracing | None = None
        """The broker's spans, when tracing is on (`broker.runtime.tracing`)."""
        self.request_errors = 0
        self.peer_input_errors = 0
        self.metrics: BrokerMetrics | None = None
        """Times each round's synced write and sizes it (None: not measured)."""
        self._faults = FaultLog(log)
        self._in_flight: deque[_InFlight] = deque()
        self._syncer: WalSyncer | None = None
        self._sync_failed: BaseException | None = None
        self._live = False
        """The loop runs: other tasks may run a pass of it (`_pass_now`)."""
        self._passing = False
        self._pass_failed: BaseException | None = None
        """A pass run outside the loop's task raised: the loop raises it (fail-stop)."""
        self.passes_elsewhere = 0
        """Passes run by the task or callback that brought their input (`_pass_now`)."""
        self.max_in_flight = 0
        """The most rounds that were written and not yet durable at once."""
        config = node.config
        self.peer_requests = PeerRequests(
            config.node_id, config.incarnation, random.SystemRandom().getrandbits(63)
        )
        node.attach_peer_requests(self.peer_requests)
        self._peer_waiters: dict[int, _PeerWaiter] = {}
        self.peer_results_unclaimed = 0
        """Results of kinds without a listener that no task awaits (its wait was cancelled)."""
        self.peer_request_errors = 0
        """Peer request handlers and listeners that raised (a bug)."""

    # -- inputs (from other tasks) ------------------------------------------------------------

    def submit(self, op: Op) -> None:
        op.token = next(self._tokens)
        self._inbox.append(op)
        self._wake.set()

    def start_submitted(self) -> None:
        """Start the requests submitted so far now, in the caller's task (a connection's
        reader, once it has decoded what it read): a scheduling pass saved per request."""
        if self._inbox:
            self._pass_now()

    def abandon(self, op: Op) -> None:
        """The request's time is up, or its client gone: answer with what is done
        (REQUEST_TIMED_OUT for the rest; a parked fetch with the data there is)."""
        self._abandoned.append(op)
        self._wake.set()

    def tick(self) -> None:
        self._ticks += 1
        self._wake.set()

    # -- peer inputs (the network calls these; the loop applies them in order) ----------------

    def on_hello(self, hello: Hello) -> None:
        node = self.node

        def linked() -> None:
            self.peer_requests.peer_linked(hello.node_id, hello.serves_requests)
            node.on_peer_hello(
                hello.node_id, hello.incarnation, hello.cluster_id, hello.bootstrapped
            )
            node.on_peer_link(hello.node_id, hello.features)

        self._peer_inputs.append(linked)
        self._wake.set()

    def on_peer_request(self, peer: int, request: PeerRequest) -> None:
        self._peer_inputs.append(lambda: self.peer_requests.on_request(peer, request))
        self._wake.set()

    def on_peer_response(self, peer: int, response: PeerResponse) -> None:
        self._peer_inputs.append(lambda: self.peer_requests.on_response(peer, response))
        self._wake.set()

    async def peer_request(
        self,
        dst: int,
        kind: str,
        body: object = None,
        *,
        deadline_ticks: int = DEFAULT_DEADLINE_TICKS,
        retry_ticks: int = DEFAULT_RETRY_TICKS,
    ) -> PeerResult:
        """Ask broker `dst` from another task (diagnostics, tests) and wait for the result,
        which comes by the deadline (while the ticker runs). `kind` must have no listener."""
        cid = self.peer_requests.request(
            dst, kind, body, deadline_ticks=deadline_ticks, retry_ticks=retry_ticks
        )
        waiter = _PeerWaiter()
        self._peer_waiters[cid] = waiter
        self._wake.set()
        try:
            await waiter.done.wait()
        finally:
            self._peer_waiters.pop(cid, None)
        assert waiter.result is not None
        return waiter.result

    def peer_request_stats(self) -> dict[str, int]:
        pr = self.peer_requests
        return {
            **dataclasses.asdict(pr.stats),
            "pending": pr.pending(),
            "open": pr.open_requests(),
            "cached_answers": pr.cached_answers(),
            "unclaimed_results": self.peer_results_unclaimed,
            "errors": self.peer_request_errors,
        }

    def on_raft(self, batch: list[tuple[int, Message]]) -> None:
        def deliver() -> None:
            step = self.node.step
            for g, m in batch:
                step(g, m)

        self._peer_inputs.append(deliver)
        self._pass_now()

    def on_link_lost(self, peer: int) -> None:
        self._peer_inputs.append(lambda: self.node.peer_lost(peer))
        self._wake.set()

    def on_heartbeat(self, peer: int, hb: BrokerHeartbeat) -> None:
        def handle() -> None:
            ack = self.node.on_broker_heartbeat(hb)
            if self.network is not None:
                self.network.reply_heartbeat(peer, ack)

        self._peer_inputs.append(handle)
        self._wake.set()

    def on_heartbeat_ack(self, peer: int, ack: HeartbeatAck) -> None:
        self._peer_inputs.append(lambda: self.node.on_heartbeat_ack(ack))
        self._wake.set()

    def stats(self) -> DriverStats:
        return DriverStats(
            self.rounds,
            self.rounds_written,
            self.ops_started,
            len(self._parked),
            self.handler.pending,
            self.request_errors,
            self.peer_input_errors,
        )

    # -- the loop -----------------------------------------------------------------------------

    async def run(self) -> None:
        store = self.store
        if store.durability == "pipelined":
            self._syncer = WalSyncer(store.sync_wal, self._synced, self._failed_sync)
            self._syncer.start()
        try:
            await self._loop()
        finally:
            if self._syncer is not None:
                self._syncer.stop()

    async def _loop(self) -> None:
        node = self.node
        self._live = True
        try:
            while True:
                if not (
                    self._inbox or self._abandoned or self._ticks or self._peer_inputs
                    or (node.has_work() and self._room()) or self.peer_requests.has_work()
                    or self._durable_ahead() or self._pass_failed is not None
                ):  # fmt: skip
                    with trio.move_on_at(self.next_deadline()):
                        await self._wake.wait()
                self._wake = trio.Event()
                if self._pass_failed is not None:
                    raise self._pass_failed
                self._pass()
                await trio.lowlevel.checkpoint()
        finally:
            self._live = False

    def _pass(self) -> None:
        """One pass of the loop: end the rounds that are durable, take the inputs, begin and
        write rounds while there is work and room, answer parked fetches that are due. It
        never awaits, so whoever runs it sees the driver between two passes."""
        node = self.node
        self._passing = True
        try:
            if self._sync_failed is not None:
                raise StoreError(f"the WAL sync failed: {self._sync_failed}")
            self._end_durable()
            self._absorb()
            self._pump_peer_requests()
            while node.has_work() and self._room():
                self._round()
                self._end_durable()
                self._pump_peer_requests()
            if node.ctx.failpoints_hit:
                _die_at_failpoint(node.ctx.failpoints_hit[0])
            self._expire_parked()
        finally:
            self._passing = False

    def _pass_now(self) -> None:
        """Run a pass at once, in the task or the syncer's callback that brought its input,
        not after a wake-up of the loop's task (a scheduling pass saved on each peer frame and
        each sync). The loop's task still owns failure: an exception here is kept for it to
        raise. Inside a pass (a send that re-enters), or while the loop is not running, it
        only wakes the loop."""
        if self._passing or not self._live or self._pass_failed is not None:
            self._wake.set()
            return
        self.passes_elsewhere += 1
        try:
            self._pass()
        except BaseException as e:
            self._pass_failed = e
            self._wake.set()

    def _room(self) -> bool:
        return len(self._in_flight) < PIPELINE_DEPTH

    def _durable_ahead(self) -> bool:
        """Is the oldest round in flight durable (ready to end)? Without a syncer (`inline`)
        the write synced itself (the audit checks that it did)."""
        if not self._in_flight:
            return False
        w = self._in_flight[0].written
        return (
            w is None or not w.needs_sync or w.seq <= self.store.synced_seq
            or self._syncer is None
        )  # fmt: skip

    def _synced(self, token: int) -> None:
        """From the syncer (on the loop's thread, between tasks): every write up to `token`
        is durable; the rounds it covers end here (`_pass_now`)."""
        self.store.wal_synced(token)
        self._pass_now()

    def _failed_sync(self, exc: BaseException) -> None:
        self._sync_failed = exc
        self._wake.set()

    def _absorb(self) -> None:
        node = self.node
        while self._peer_inputs:
            handle = self._peer_inputs.popleft()
            try:
                handle()
            except Exception as e:
                self.peer_input_errors += 1
                self._faults.report("peer input", e)
        wall_ms = time.time_ns() // 1_000_000
        for _ in range(self._ticks):
            node.tick(wall_ms)
            self.peer_requests.tick()
        self._ticks = 0
        while self._inbox:
            self._start(self._inbox.popleft())
        while self._abandoned:
            op = self._abandoned.popleft()
            if op.reply is not None:
                continue
            if isinstance(op.request, FetchRequest):
                op.deadline = -math.inf  # a parked fetch: answered with what there is
            elif self._ops.pop(op.token, None) is not None:
                reply = self.handler.abandon(op.token)
                if reply is not None:
                    op.resolve(reply)

    def _pump_peer_requests(self) -> None:
        """Run the local path, send the frames, hand on results and report failures."""
        pr = self.peer_requests
        if not pr.has_work():
            return
        pr.run_local()
        network = self.network
        for dst, frame in pr.take_outgoing():
            if network is not None:
                network.send(dst, frame)
        for result in pr.deliver_results():
            waiter = self._peer_waiters.pop(result.correlation_id, None)
            if waiter is None:
                self.peer_results_unclaimed += 1
            else:
                waiter.result = result
                waiter.done.set()
        for kind, e in pr.take_handler_errors():
            self.peer_request_errors += 1
            self._faults.report(f"peer request {kind!r}", e)

    def _start(self, op: Op) -> None:
        """Start one request. A request whose handling raises is answered
        UNKNOWN_SERVER_ERROR (as Kafka does): one request's bug never stops the broker. A
        traced request is handled with its span current (what is logged meanwhile carries
        its trace and span ids)."""
        if op.span is None:
            self._handle(op)
            return
        with trace.use_span(op.span, end_on_exit=False):
            self._handle(op)

    def _handle(self, op: Op) -> None:
        self.ops_started += 1
        req = op.request
        try:
            if isinstance(req, FetchRequest):
                self._fetch(op, req, final=req.max_wait_ms <= 0)
                return
            reply = self.handler.handle(op.token, op.header, req)
        except Exception as e:
            self._failed(op, e)
            return
        if reply is not None:
            op.resolve(reply)
        else:
            self._ops[op.token] = op
            if op.span is not None and self.tracing is not None:
                try:
                    self.tracing.started(op.span, op.token, req, self.node)
                except Exception as e:  # tracing must never cost a request
                    self._faults.report("tracing", e)

    def _failed(self, op: Op, e: Exception) -> None:
        self.request_errors += 1
        self._faults.report(f"{op.header.api_key.name} request", e)
        self._ops.pop(op.token, None)
        op.resolve(
            Reply(op.header.correlation_id, ErrorCode.UNKNOWN_SERVER_ERROR,
                  f"the broker failed to handle this request: {type(e).__name__}", None)
        )  # fmt: skip

    def _fetch(self, op: Op, req: FetchRequest, *, final: bool) -> bool:
        budget = self.budget
        cap = None if budget is None else max(0, budget.limit - budget.in_use)
        body, size = self.handler.fetch(req, cap)
        if final or size >= req.min_bytes or self.handler.fetch_has_error(body):
            op.reply_bytes = size
            op.resolve(Reply(op.header.correlation_id, ErrorCode.NONE, None, body))
            return True
        op.watch = self.handler.fetch_watch(req)
        if op.deadline == math.inf:
            op.deadline = trio.current_time() + min(req.max_wait_ms / 1000, self.max_wait_s)
            self._parked.append(op)
        return False

    def _expire_parked(self) -> None:
        """Answer the parked fetches whose wait is over, and re-run those whose partitions
        changed (high watermark, leadership) since they last ran: a parked fetch costs
        nothing while its partitions are still."""
        if not self._parked:
            return
        now = trio.current_time()
        keep = []
        for op in self._parked:
            if op.reply is not None:
                continue
            req = op.request
            assert isinstance(req, FetchRequest)
            final = now >= op.deadline
            try:
                still = not final and self.handler.fetch_watch(req) == op.watch
                if still or not self._fetch(op, req, final=final):
                    keep.append(op)
            except Exception as e:
                self._failed(op, e)
        self._parked = keep

    def next_deadline(self) -> float:
        return min((op.deadline for op in self._parked), default=math.inf)

    def _round(self) -> None:
        """Begin a round (`begin_round`) and write it; it ends in `_end_durable` once its
        write is durable (at once in `inline` mode, or when it needed no sync and no round
        before it is still in flight)."""
        node = self.node
        rnd = begin_round(node, self)
        if rnd.applied_early:
            self._high_watermarks_moved()
        store = self.store
        writes = round_writes(store, rnd)
        started = time.perf_counter()
        written = store.write(writes)
        self._in_flight.append(_InFlight(rnd, written, started))
        self.max_in_flight = max(self.max_in_flight, len(self._in_flight))
        if (
            written is not None and written.needs_sync and written.seq > store.synced_seq
            and self._syncer is not None
        ):  # fmt: skip
            self._syncer.request(store.flush_token())

    def _end_durable(self) -> None:
        """End, in order, every round in flight whose write is durable: acknowledge it in
        the store, write its compactions, `end_round`, and the driver's reactions (waking
        long polls when high watermarks moved, recording the cluster id once joined)."""
        store = self.store
        while self._durable_ahead():
            flight = self._in_flight.popleft()
            rnd, written = flight.rnd, flight.written
            if written is not None:
                store.acknowledge(written)
                if self.metrics is not None and written.needs_sync:
                    self._measure_write(rnd, time.perf_counter() - flight.started)
            write_compactions(store, rnd)
            self.rounds_written += 1
            end_round(self.node, rnd, self)
            if self.tracing is not None:
                try:
                    self.tracing.after_round(self.node)
                except Exception as e:  # tracing must never stop the driver
                    self._faults.report("tracing", e)
            self._log_roles(rnd)
            cid = self.node.meta.cluster_id
            if cid is not None and store.cluster_id is None:
                store.record_cluster_id(cid)  # this broker has now joined a cluster
            early = rnd.applied_early
            if any(rd.committed_entries for gid, rd in rnd.readies if gid not in early):
                self._high_watermarks_moved()

    def _measure_write(self, rnd: Round, seconds: float) -> None:
        """A round's synced write: its duration, and the entries and payload bytes it wrote
        (work per entry, and entries are batches: never per record)."""
        assert self.metrics is not None
        entries = nbytes = 0
        for _, rd in rnd.readies:
            if rd.entries:
                entries += len(rd.entries)
                for e in rd.entries:
                    nbytes += len(e.data)
        self.metrics.round_written(seconds, entries, nbytes)

    # -- RoundIO (broker.core.rounds) ---------------------------------------------------------

    def started(self, rnd: Round) -> None:
        self.rounds += 1
        self._audit(rnd)

    def complete(self, completions: list[Completion]) -> None:
        self._resolve(completions)

    def _resolve(self, completions: list[Completion]) -> None:
        for token, reply in self.handler.complete(completions):
            op = self._ops.pop(token, None)
            if op is not None:
                op.resolve(reply)

    def _high_watermarks_moved(self) -> None:
        """Wake long polls (parked fetches and anything waiting on `hw_moved`)."""
        self.hw_moved.set()
        self.hw_moved = trio.Event()
        self._expire_parked()

    @staticmethod
    def _log_roles(rnd: Round) -> None:
        """A line per Raft role change (elections are rare in a healthy cluster, and the
        first thing an operator asks about after a hiccup)."""
        for gid, rd in rnd.readies:
            ss = rd.soft_state
            if ss is not None and log.isEnabledFor(logging.INFO):
                leader = ss.leader[0] if isinstance(ss.leader, tuple) else None
                log.info("group %d: term %d, %s, leader %s", gid, ss.term,
                         ss.role.name.lower(), leader)  # fmt: skip

    def _audit(self, rnd: Round) -> None:
        """Every entry the round will apply (and so every acknowledgement it causes) must be
        durable before its write: committed entries never run ahead of the persisted log."""
        audit = self.audit
        if audit is None:
            return
        for gid, rd in rnd.readies:
            for e in rd.committed_entries:
                audit.assert_durable(gid, e.index)

    def send(self, envelopes: list[Envelope]) -> None:
        """Every message of the round for one peer goes out together (split below the
        peer frame bound)."""
        network = self.network
        if network is None or not envelopes:
            return
        by_peer: dict[int, list[tuple[int, Message]]] = {}
        for env in envelopes:
            by_peer.setdefault(env.dst, []).append((env.group_id, env.message))
        for peer, batch in by_peer.items():
            for chunk in _chunks(batch, PEER_FRAME_BYTES // 2):
                network.send(peer, encode_raft(chunk))

    def send_heartbeats(self, heartbeats: list[tuple[int, BrokerHeartbeat]]) -> None:
        if self.network is not None:
            for dst, hb in heartbeats:
                self.network.send(dst, encode_heartbeat(hb))


@dataclass(eq=False)
class _PeerWaiter:
    result: PeerResult | None = None
    done: trio.Event = field(default_factory=trio.Event)


class PeerSender(Protocol):
    """What the driver needs of the peer network."""

    def send(self, peer: int, payload: bytes) -> bool: ...
    def reply_heartbeat(self, peer: int, ack: HeartbeatAck) -> None: ...


def _chunks(batch: list[tuple[int, Message]], max_bytes: int) -> list[list[tuple[int, Message]]]:
    """Split a peer batch so no frame exceeds max_bytes of entry data (at least one message
    per frame)."""
    out: list[list[tuple[int, Message]]] = [[]]
    size = 0
    for item in batch:
        entries: list[Entry] = getattr(item[1], "entries", [])
        n = sum(len(e.data) for e in entries) + len(getattr(item[1], "data", b"")) + 64
        if out[-1] and size + n > max_bytes:
            out.append([])
            size = 0
        out[-1].append(item)
        size += n
    return out
