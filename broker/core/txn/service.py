"""TransactionService: this broker's side of transaction coordination (pure, like the node).

- Placement: transactional id -> partition `coordinator_partition(id, n)` of
  `__transaction_state`, whose serving leader coordinates it. FIND_COORDINATOR (key type
  transaction) is answered by any broker from metadata; while the topic does not exist the
  controller is asked to create it (COORDINATOR_NOT_AVAILABLE, retriable).
- Client requests are served only by the coordinator (else NOT_COORDINATOR) and proposed to
  its Raft group: InitProducerId (a new transactional id, or one whose epochs ran out, first
  gets a producer id from the cluster's allocator), AddPartitionsToTxn / AddOffsetsToTxn
  (answered once every participant named acknowledged BEGIN: its log holds the registration
  before the client writes there), EndTxn (answered once the transaction COMPLETEd, so a
  committed EndTxn means every participant holds its marker), and an operator's abort.
- The leader's `TxnDriver` per coordinator group it serves sends the phases to participants'
  leaders as peer requests and proposes the next command when they answered; it is polled
  every tick and after every apply and answer (a phase starts as soon as the previous one
  ended), and restarted when the group's term changes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from broker.core.context import NodeContext, TxnConfig
from broker.core.controller import Controller
from broker.core.groups.coordinator import coordinator_partition as group_partition
from broker.core.host import HostedGroup
from broker.core.internal_ops import Callback, InternalOps
from broker.core.machine import GroupContext, MachineKind
from broker.core.metadata import INTERNAL_PREFIX
from broker.core.partitions import PartitionService
from broker.core.peer_requests import PeerRequests, PeerResult
from broker.core.producer_ids import ProducerIdAllocator
from broker.core.reply import coordinator_error
from broker.core.rounds import Completion
from broker.core.txn.coordinator import (
    AbortReason,
    EndAnswer,
    TransactionCoordinator,
    TxnEntry,
    TxnState,
    cmd_add,
    cmd_decide,
    cmd_end,
    cmd_init,
    coordinator_partition,
)
from broker.core.txn.driver import Send, SendKey, TxnDriver
from broker.core.txn.participants import OFFSETS_TOPIC, TXN_REQUEST
from broker.core.txn.protocol import EPOCH_MAX, Participant
from broker.core.views import ClusterView
from broker.wire.errors import ErrorCode

TXN_TOPIC = "__transaction_state"
REQUEST_DEADLINE_TICKS = 40
REQUEST_RETRY_TICKS = 4

Result = tuple[ErrorCode, str | None, object]
"""(error, message, value) of an operation answered at once."""


@dataclass(frozen=True, slots=True)
class _AddWait:
    token: int
    slot: int
    gid: int
    txn_id: str
    epoch: int
    wanted: tuple[Participant, ...]


@dataclass(frozen=True, slots=True)
class _EndWait:
    token: int
    slot: int
    gid: int
    txn_id: str
    epoch: int
    commit: bool


class TransactionService:
    def __init__(
        self,
        ctx: NodeContext,
        views: ClusterView,
        controller: Controller,
        partitions: PartitionService,
        producer_ids: ProducerIdAllocator,
        ops: InternalOps,
        config: TxnConfig,
    ) -> None:
        self.ctx = ctx
        self.views = views
        self.controller = controller
        self.partitions = partitions
        self.producer_ids = producer_ids
        self.ops = ops
        self.config = config
        self.kind = MachineKind("transaction-coordinator", self._create)
        self._peer: PeerRequests | None = None
        self._drivers: dict[int, TxnDriver] = {}
        self._sent: dict[int, tuple[int, SendKey, TxnDriver]] = {}
        """Correlation id -> (coordinator group, request key, the driver that sent it)."""
        self._adds: list[_AddWait] = []
        self._ends: list[_EndWait] = []

    @staticmethod
    def _create(gc: GroupContext) -> TransactionCoordinator:
        return TransactionCoordinator()

    def attach(self, peer: PeerRequests) -> None:
        self._peer = peer
        peer.listen(TXN_REQUEST, self._on_result)

    # -- placement --------------------------------------------------------------------------

    def _partition_count(self) -> int | None:
        topic = self.ctx.meta.topics.get(TXN_TOPIC)
        return None if topic is None else len(topic.partitions)

    def find(self, txn_id: str) -> tuple[ErrorCode, str | None, tuple[int, int] | None]:
        """(NONE, None, (coordinator node, partition)) or why there is none yet."""
        if not self.controller.request_internal_topic(TXN_TOPIC):
            return (ErrorCode.COORDINATOR_NOT_AVAILABLE, "the transaction topic is being created",
                    None)  # fmt: skip
        n = self._partition_count()
        assert n is not None
        p = coordinator_partition(txn_id, n)
        leader, _ = self.views.leader_hint(TXN_TOPIC, p)
        if leader is None or leader not in self.ctx.meta.brokers:
            return ErrorCode.COORDINATOR_NOT_AVAILABLE, f"{TXN_TOPIC}[{p}] has no leader", None
        return ErrorCode.NONE, None, (leader, p)

    def _coordinator(self, txn_id: str, *, read: bool = False) -> HostedGroup | Result:
        n = self._partition_count()
        if n is None:
            self.controller.request_internal_topic(TXN_TOPIC)
            return (
                ErrorCode.COORDINATOR_NOT_AVAILABLE,
                "the transaction topic is being created",
                None,
            )
        g = self.partitions.by_partition.get((TXN_TOPIC, coordinator_partition(txn_id, n)))
        if g is None or not g.serving():
            return ErrorCode.NOT_COORDINATOR, f"not the coordinator of {txn_id!r}", None
        if read and g.machine.applied_index < g.raft.commit_index:
            return ErrorCode.COORDINATOR_LOAD_IN_PROGRESS, "the coordinator is catching up", None
        return g

    @staticmethod
    def machine(g: HostedGroup) -> TransactionCoordinator:
        m = g.machine
        assert isinstance(m, TransactionCoordinator)
        return m

    def _propose(self, g: HostedGroup, cmd: bytes, token: int, slot: int) -> Result | None:
        err, msg = self.ctx.host.propose_waiting(g, cmd, token, slot)
        return None if err == ErrorCode.NONE else (coordinator_error(err), msg, None)

    def _propose_then(
        self, g: HostedGroup, cmd: bytes, token: int, slot: int, then: Callback
    ) -> Result | None:
        """Propose `cmd` under an internal token; `then(completion)` follows its apply and
        completes the client's (token, slot)."""
        internal = self.ops.token(then)
        now = self._propose(g, cmd, internal, 0)
        if now is not None:
            self.ops.forget(internal)
        return now

    # -- client requests --------------------------------------------------------------------

    def init(self, token: int, slot: int, txn_id: str, timeout_ms: int) -> Result | None:
        """InitProducerId with a transactional id: a Completion (value InitAnswer) follows."""
        if not 1 <= timeout_ms <= self.config.max_timeout_ms:
            return (ErrorCode.INVALID_TRANSACTION_TIMEOUT,
                    f"transaction_timeout_ms must be in [1, {self.config.max_timeout_ms}]",
                    None)  # fmt: skip
        found = self._coordinator(txn_id)
        if not isinstance(found, HostedGroup):
            return found
        t = self.machine(found).txns.get(txn_id)
        if t is not None and t.epoch < EPOCH_MAX - 1:
            return self._propose(found, cmd_init(txn_id, -1, timeout_ms, self._now()), token, slot)

        def with_id(c: Completion) -> None:
            if c.error != ErrorCode.NONE:
                self.ctx.host.complete(token, slot, c.error, c.message)
                return
            again = self._coordinator(txn_id)
            if not isinstance(again, HostedGroup):
                self.ctx.host.complete(token, slot, again[0], again[1])
                return
            cmd = cmd_init(txn_id, int(c.value), timeout_ms, self._now())
            now = self._propose(again, cmd, token, slot)
            if now is not None:
                self.ctx.host.complete(token, slot, now[0], now[1])

        self.producer_ids.request(self.ops.token(with_id), 0)
        return None

    def add(
        self,
        token: int,
        slot: int,
        txn_id: str,
        pid: int,
        epoch: int,
        wanted: tuple[Participant, ...],
    ) -> Result | None:
        """AddPartitionsToTxn / AddOffsetsToTxn: completed once every participant in
        `wanted` acknowledged BEGIN."""
        for p in wanted:
            problem = self._participant_problem(p)
            if problem is not None:
                return problem
        found = self._coordinator(txn_id)
        if not isinstance(found, HostedGroup):
            return found
        g = found

        def registered(c: Completion) -> None:
            if c.error != ErrorCode.NONE:
                self.ctx.host.complete(token, slot, coordinator_error(c.error), c.message)
                return
            self._adds.append(_AddWait(token, slot, g.id, txn_id, epoch, wanted))
            self._poll(g)

        cmd = cmd_add(txn_id, pid, epoch, wanted, self._now())
        return self._propose_then(g, cmd, token, slot, registered)

    def _participant_problem(self, p: Participant) -> Result | None:
        if p.is_group:
            if not self.controller.request_internal_topic(OFFSETS_TOPIC):
                return (ErrorCode.COORDINATOR_NOT_AVAILABLE, "the offsets topic is being created",
                        None)  # fmt: skip
            return None
        if p.name.startswith(INTERNAL_PREFIX):
            return ErrorCode.INVALID_TOPIC, f"topic {p.name!r} is internal", None
        if self.ctx.meta.partition(p.name, p.partition) is None:
            return ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"no partition {p}", None
        return None

    def end(
        self,
        token: int,
        slot: int,
        txn_id: str,
        pid: int,
        epoch: int,
        commit: bool,
        seqs: Iterable[tuple[Participant, int]],
    ) -> Result | None:
        """EndTxn: completed (value EndAnswer) once the transaction completed."""
        found = self._coordinator(txn_id)
        if not isinstance(found, HostedGroup):
            return found
        g = found

        def ended(c: Completion) -> None:
            if c.error != ErrorCode.NONE or not isinstance(c.value, EndAnswer):
                self.ctx.host.complete(token, slot, coordinator_error(c.error), c.message)
                return
            if c.value.done:
                self.ctx.host.complete(token, slot, ErrorCode.NONE, None, c.value)
                return
            self._ends.append(_EndWait(token, slot, g.id, txn_id, epoch, commit))
            self._poll(g)

        cmd = cmd_end(txn_id, pid, epoch, commit, seqs, self._now())
        return self._propose_then(g, cmd, token, slot, ended)

    def abort(self, token: int, slot: int, txn_id: str) -> Result | None:
        """An operator's abort of the open transaction of `txn_id` (it fences the
        producer); answered once the abort is decided."""
        found = self._coordinator(txn_id)
        if not isinstance(found, HostedGroup):
            return found
        t = self.machine(found).txns.get(txn_id)
        if t is None:
            return ErrorCode.TRANSACTIONAL_ID_NOT_FOUND, f"no transactional id {txn_id!r}", None
        if t.state not in (TxnState.ONGOING, TxnState.PREPARING):
            return ErrorCode.INVALID_TXN_STATE, f"the transaction is {t.state.name.lower()}", None
        cmd = cmd_decide(txn_id, t.epoch, False, AbortReason.OPERATOR, self._now())
        return self._propose(found, cmd, token, slot)

    def entry(self, txn_id: str) -> tuple[ErrorCode, str | None, TxnEntry | None]:
        found = self._coordinator(txn_id, read=True)
        if not isinstance(found, HostedGroup):
            return found[0], found[1], None
        t = self.machine(found).txns.get(txn_id)
        if t is None:
            return ErrorCode.TRANSACTIONAL_ID_NOT_FOUND, f"no transactional id {txn_id!r}", None
        return ErrorCode.NONE, None, t

    def phase(self, txn_id: str) -> tuple[str | None, int] | None:
        """For tracing, read-only: (the 3PC phase this broker's coordinator drives `txn_id`
        in: "prepare", "precommit", "commit", "abort", or None when its transaction is not
        ending; the transaction's epoch, -1 for an unknown id), or None when this broker
        cannot tell now (not its serving coordinator, or catching up)."""
        n = self._partition_count()
        g = (
            None
            if n is None
            else self.partitions.by_partition.get((TXN_TOPIC, coordinator_partition(txn_id, n)))
        )
        if g is None or not g.serving() or g.machine.applied_index < g.raft.commit_index:
            return None
        t = self.machine(g).txns.get(txn_id)
        if t is None:
            return None, -1
        d = self._drivers.get(g.id)
        return (None if d is None else d.phase(t)), t.epoch

    def entries(self) -> list[TxnEntry]:
        """Every transactional id the coordinator groups this broker serves hold."""
        out: list[TxnEntry] = []
        for (topic, _), g in sorted(self.partitions.by_partition.items()):
            if topic == TXN_TOPIC and g.serving():
                out.extend(self.machine(g).txns[t] for t in sorted(self.machine(g).txns))
        return out

    def cancel(self, token: int) -> None:
        self._adds = [w for w in self._adds if w.token != token]
        self._ends = [w for w in self._ends if w.token != token]

    # -- the leader's loop ------------------------------------------------------------------

    def tick(self) -> None:
        for g in self._serving_groups(tick=True):
            self._issue(g, *self._driver(g).tick())
        self._check_waits()

    def after_apply(self) -> None:
        for g in self._serving_groups():
            self._poll(g)
        self._check_waits()

    def _serving_groups(self, *, tick: bool = False) -> list[HostedGroup]:
        """The coordinator groups this broker leads and serves, caught up with their commit
        index (the ones to drive now). A driver is dropped only when its group stops being
        served here: one behind by a round keeps its timers and outstanding requests (a
        round commits coordinator entries before it applies them, so dropping those would
        restart every timer under steady load and a transaction would never time out).
        With `tick`, the drivers of groups behind count the tick without acting on it."""
        serving = [g for g in self.partitions.topic_groups(TXN_TOPIC) if g.serving()]
        ids = {g.id for g in serving}
        for gid in [k for k in self._drivers if k not in ids]:
            del self._drivers[gid]
        ready = [g for g in serving if g.machine.applied_index >= g.raft.commit_index]
        if tick:
            for g in serving:
                d = self._drivers.get(g.id)
                if d is not None and g not in ready:
                    d.count_tick()
        return ready

    def _driver(self, g: HostedGroup) -> TxnDriver:
        d = self._drivers.get(g.id)
        if d is None or d.term != g.raft.term or d.machine is not g.machine:
            d = self._drivers[g.id] = TxnDriver(
                self.machine(g),
                tick_ms=self.ctx.config.tick_ms,
                wall_ms=self._now,
                kill_after_precommit=self.config.kill_after_precommit,
            )
            d.restart(g.raft.term)
        return d

    def _poll(self, g: HostedGroup) -> None:
        if g.serving():
            self._issue(g, *self._driver(g).poll())

    def _issue(self, g: HostedGroup, sends: list[Send], proposals: list[bytes]) -> None:
        for data in proposals:
            self.ctx.host.propose(g, data)
        driver = self._drivers[g.id]
        if driver.halted and "txn.kill_after_precommit" not in self.ctx.failpoints_hit:
            self.ctx.failpoints_hit.append("txn.kill_after_precommit")
        for send in sends:
            dst = self._leader_of(send.key[3])
            peer = self._peer
            if dst is None or peer is None:
                driver.on_answer(send.key, ErrorCode.LEADER_NOT_AVAILABLE)
                continue
            corr = peer.request(
                dst,
                TXN_REQUEST,
                send.command.to_wire(),
                deadline_ticks=REQUEST_DEADLINE_TICKS,
                retry_ticks=REQUEST_RETRY_TICKS,
            )
            self._sent[corr] = (g.id, send.key, driver)

    def _leader_of(self, p: Participant) -> int | None:
        if p.is_group:
            topic = self.ctx.meta.topics.get(OFFSETS_TOPIC)
            if topic is None:
                return None
            part = group_partition(p.name, len(topic.partitions))
            return self.views.leader_hint(OFFSETS_TOPIC, part)[0]
        return self.views.leader_hint(p.name, p.partition)[0]

    def _on_result(self, result: PeerResult) -> None:
        sent = self._sent.pop(result.correlation_id, None)
        if sent is None:
            return
        gid, key, driver = sent
        if self._drivers.get(gid) is not driver:
            return  # asked by an earlier leadership: its driver is gone
        body = result.body
        vote = isinstance(body, dict) and body.get("vote") is True
        driver.on_answer(key, result.error, vote)
        g = self.ctx.host.groups.get(gid)
        if g is not None:
            self._poll(g)
        self._check_waits()

    def _check_waits(self) -> None:
        if self._adds:
            self._adds = [w for w in self._adds if not self._add_done(w)]
        if self._ends:
            self._ends = [w for w in self._ends if not self._end_done(w)]

    def _serving(self, gid: int) -> HostedGroup | None:
        g = self.ctx.host.groups.get(gid)
        return g if g is not None and g.serving() else None

    def _add_done(self, w: _AddWait) -> bool:
        g = self._serving(gid=w.gid)
        if g is None:
            self.ctx.host.complete(w.token, w.slot, ErrorCode.NOT_COORDINATOR, "it moved")
            return True
        begun = self._driver(g).begun(w.txn_id, w.epoch, w.wanted)
        if begun is None:
            t = self.machine(g).txns.get(w.txn_id)
            code, msg = _ended_early(t)
            self.ctx.host.complete(w.token, w.slot, code, msg)
            return True
        if begun:
            self.ctx.host.complete(w.token, w.slot, ErrorCode.NONE)
        return begun

    def _end_done(self, w: _EndWait) -> bool:
        g = self._serving(gid=w.gid)
        if g is None:
            self.ctx.host.complete(w.token, w.slot, ErrorCode.NOT_COORDINATOR, "it moved")
            return True
        t = self.machine(g).txns.get(w.txn_id)
        if t is None or t.last_epoch != w.epoch:
            return False
        if t.last_committed != w.commit:
            code, msg = _ended_early(t)
            self.ctx.host.complete(w.token, w.slot, code, msg)
            return True
        if t.epoch > t.last_epoch + 1:
            # A newer producer initialised in the same apply batch as the `complete`: as in
            # `_repeat_end`, the waiting zombie must not be handed the newer one's epoch.
            msg = "a newer producer initialised since"
            self.ctx.host.complete(w.token, w.slot, ErrorCode.PRODUCER_FENCED, msg)
            return True
        answer = EndAnswer(True, t.last_committed, t.producer_id, t.epoch, t.fenced)
        self.ctx.host.complete(w.token, w.slot, ErrorCode.NONE, None, answer)
        return True

    def _now(self) -> int:
        return max(0, self.ctx.wall_ms)


def _ended_early(t: TxnEntry | None) -> tuple[ErrorCode, str]:
    """Why a client waiting on a transaction gets an error: it was aborted under it."""
    if t is None:
        return ErrorCode.TRANSACTIONAL_ID_NOT_FOUND, "the transactional id expired"
    reason = t.reason if t.state == TxnState.ABORTING else t.last_reason
    if reason == AbortReason.TIMED_OUT:
        return ErrorCode.TRANSACTION_TIMED_OUT, "the transaction ran past its timeout"
    if t.state == TxnState.EMPTY and t.last_committed:
        return ErrorCode.INVALID_TXN_STATE, "the transaction committed"
    return ErrorCode.TRANSACTION_ABORTED, f"the transaction was aborted ({reason.name.lower()})"
