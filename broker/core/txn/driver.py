"""TxnDriver: what the transaction coordinator's leader sends and proposes (pure soft state).

The coordinator machine (coordinator.py) holds every decision; the driver only carries them
out, from the durable state, every tick:

- ONGOING: BEGIN to each participant not yet acknowledged (an AddPartitionsToTxn is answered
  once all it named have); past the transaction timeout, propose abort (TIMED_OUT).
- PREPARING: PREPARE, with the last sequence the client had acknowledged, to each participant
  without a vote; all yes: propose decide(commit); a no: decide(abort, REFUSED); no full set
  of votes within the timeout: decide(abort, TIMED_OUT).
- PRE_COMMITTED: PRECOMMIT to each participant; once all acknowledged, COMMIT to each; once
  all acknowledged, propose complete. (A participant that pre-committed may also commit on its
  own: `PrecommitWatch`.)
- ABORTING: ABORT to each; once all acknowledged, propose complete.

Every request carries this leader's Raft term as the coordinator term. At most one request is
outstanding per (transaction, epoch, phase, participant); its owner reports each one's end with
`on_answer` (an answer, or an error: a timeout, a lost leader), and a failed one is sent again
after `retry_ticks`. Timers count this leader's own ticks, from when it first saw the state,
so a new leader gives every transaction a whole timeout (it never aborts early on a clock).
All of it is forgotten when leadership changes (`restart`): the log says what to resend.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from broker.core.groups.coordinator import no_clock
from broker.core.txn.coordinator import (
    AbortReason,
    TransactionCoordinator,
    TxnEntry,
    TxnState,
    cmd_complete,
    cmd_decide,
)
from broker.core.txn.ledger import TxnLedger, TxnPhase
from broker.core.txn.protocol import Participant, Phase, TxnCommand
from broker.wire.errors import ErrorCode

RETRY_TICKS = 2
"""A failed request is sent again after this many ticks."""
REPROPOSE_TICKS = 40
"""A proposed command not applied after this many ticks is proposed again."""

SendKey = tuple[str, int, Phase, Participant]
"""(transactional id, epoch, phase, participant): names one outstanding request."""


@dataclass(frozen=True, slots=True)
class Send:
    key: SendKey
    command: TxnCommand


@dataclass(slots=True)
class _Progress:
    """This leader's view of one transaction in one state."""

    state: TxnState
    since: int
    acked: dict[Phase, set[Participant]] = field(default_factory=dict)
    votes: dict[Participant, bool] = field(default_factory=dict)
    waiting: dict[Participant, int] = field(default_factory=dict)
    """Failed requests: participant -> the tick from which to send again."""


class TxnDriver:
    def __init__(
        self,
        machine: TransactionCoordinator,
        *,
        tick_ms: int,
        wall_ms: Callable[[], int] = no_clock,
        retry_ticks: int = RETRY_TICKS,
        kill_after_precommit: bool = False,
    ) -> None:
        self.machine = machine
        self.kill_after_precommit = kill_after_precommit
        """Failpoint (tests only): COMMIT is never sent; `halted` is set once every
        participant of a transaction acknowledged PRECOMMIT (the broker then dies)."""
        self.halted = False
        self.tick_ms = max(1, tick_ms)
        self.wall_ms = wall_ms
        self.retry_ticks = retry_ticks
        self.term = 0
        self._tick = 0
        self._progress: dict[tuple[str, int], _Progress] = {}
        self._inflight: set[SendKey] = set()
        self._proposed: dict[tuple[str, int, str], int] = {}

    def restart(self, term: int) -> None:
        """This replica became the serving leader in `term` (or stopped being it)."""
        self.term = term
        self._progress.clear()
        self._inflight.clear()
        self._proposed.clear()

    # -- the leader's loop ------------------------------------------------------------------

    def tick(self) -> tuple[list[Send], list[bytes]]:
        """A tick of this leader's clock (timeouts, retries), then `poll`."""
        self._tick += 1
        return self.poll()

    def count_tick(self) -> None:
        """A tick while the group's applied state is behind its commit index: the clock moves
        on, nothing is decided on the stale state."""
        self._tick += 1

    def poll(self) -> tuple[list[Send], list[bytes]]:
        """Requests to send and commands to propose now. The owner polls after every tick,
        and after every apply and answer, so a phase starts as soon as the previous one
        ended (not at the next tick)."""
        sends: list[Send] = []
        proposals: list[bytes] = []
        live: set[tuple[str, int]] = set()
        for t in self.machine.txns.values():
            if not t.open:
                continue
            key = (t.txn_id, t.epoch)
            live.add(key)
            prog = self._progress.get(key)
            if prog is None or prog.state != t.state:
                prog = self._progress[key] = _Progress(t.state, self._tick)
            self._step(t, prog, sends, proposals)
        for key in [k for k in self._progress if k not in live]:
            del self._progress[key]
        return sends, proposals

    def phase(self, t: TxnEntry) -> str | None:
        """The phase this leader drives `t` in: "prepare" (PREPARING: votes), "precommit"
        (PRE_COMMITTED until every participant acknowledged PRECOMMIT), "commit" (then the
        markers), "abort" (ABORTING), else None."""
        if t.state == TxnState.PREPARING:
            return "prepare"
        if t.state == TxnState.ABORTING:
            return "abort"
        if t.state != TxnState.PRE_COMMITTED:
            return None
        prog = self._progress.get((t.txn_id, t.epoch))
        acked = set() if prog is None else prog.acked.get(Phase.PRECOMMIT, set())
        return "commit" if all(p in acked for p in t.participants) else "precommit"

    def _step(self, t: TxnEntry, prog: _Progress, sends: list[Send], props: list[bytes]) -> None:
        timed_out = (self._tick - prog.since) * self.tick_ms > t.timeout_ms
        if t.state == TxnState.ONGOING:
            if any(not v for v in prog.votes.values()):
                self._propose(t, "abort", props, AbortReason.REFUSED)
            else:
                self._send_all(t, prog, Phase.BEGIN, sends)
            if timed_out:
                self._propose(t, "abort", props, AbortReason.TIMED_OUT)
        elif t.state == TxnState.PREPARING:
            pending = [p for p in t.participants if p not in prog.votes]
            if any(not v for v in prog.votes.values()):
                self._propose(t, "abort", props, AbortReason.REFUSED)
            elif not pending:
                self._propose(t, "commit", props)
            elif timed_out:
                self._propose(t, "abort", props, AbortReason.TIMED_OUT)
            else:
                self._send(t, prog, Phase.PREPARE, pending, sends)
        elif t.state == TxnState.PRE_COMMITTED:
            if self._send_all(t, prog, Phase.PRECOMMIT, sends):
                return
            if self.kill_after_precommit:
                self.halted = True
                return
            if not self._send_all(t, prog, Phase.COMMIT, sends):
                self._propose(t, "complete", props)
        elif t.state == TxnState.ABORTING and not self._send_all(t, prog, Phase.ABORT, sends):
            self._propose(t, "complete", props)

    def _send_all(self, t: TxnEntry, prog: _Progress, phase: Phase, sends: list[Send]) -> bool:
        """Send `phase` to every participant that has not acknowledged it; False when all
        have."""
        acked = prog.acked.get(phase, set())
        pending = [p for p in t.participants if p not in acked]
        self._send(t, prog, phase, pending, sends)
        return bool(pending)

    def _send(
        self, t: TxnEntry, prog: _Progress, phase: Phase, to: list[Participant], out: list[Send]
    ) -> None:
        ts = self.wall_ms()
        for p in to:
            key: SendKey = (t.txn_id, t.epoch, phase, p)
            if key in self._inflight or prog.waiting.get(p, 0) > self._tick:
                continue
            self._inflight.add(key)
            out.append(
                Send(
                    key,
                    TxnCommand(
                        phase=phase,
                        participant=p,
                        txn_id=t.txn_id,
                        producer_id=t.producer_id,
                        epoch=t.epoch,
                        coordinator_term=self.term,
                        last_seq=t.participants[p] if phase == Phase.PREPARE else -1,
                        timestamp=ts,
                    ),
                )
            )

    def _propose(
        self, t: TxnEntry, what: str, out: list[bytes], reason: AbortReason = AbortReason.NONE
    ) -> None:
        key = (t.txn_id, t.epoch, what)
        last = self._proposed.get(key)
        if last is not None and self._tick - last < REPROPOSE_TICKS:
            return
        self._proposed[key] = self._tick
        ts = self.wall_ms()
        if what == "complete":
            out.append(cmd_complete(t.txn_id, t.epoch, ts))
        else:
            out.append(cmd_decide(t.txn_id, t.epoch, what == "commit", reason, ts))

    # -- answers ----------------------------------------------------------------------------

    def on_answer(self, key: SendKey, error: ErrorCode, vote: bool = False) -> None:
        """The request `key` ended: answered (`error` NONE, and PREPARE's vote) or failed."""
        self._inflight.discard(key)
        txn_id, epoch, phase, p = key
        prog = self._progress.get((txn_id, epoch))
        t = self.machine.txns.get(txn_id)
        if prog is None or t is None or t.epoch != epoch or prog.state != t.state:
            return
        if error == ErrorCode.NONE:
            if phase == Phase.PREPARE:
                prog.votes[p] = vote
            else:
                prog.acked.setdefault(phase, set()).add(p)
        elif phase == Phase.BEGIN and error == ErrorCode.PRODUCER_FENCED:
            prog.votes[p] = False  # the participant closed the epoch: it can only abort
        else:
            prog.waiting[p] = self._tick + self.retry_ticks

    # -- what the service asks --------------------------------------------------------------

    def begun(self, txn_id: str, epoch: int, wanted: tuple[Participant, ...]) -> bool | None:
        """Whether every participant in `wanted` acknowledged BEGIN of (txn, epoch); None
        when the transaction cannot go on (a BEGIN was refused, or it left ONGOING)."""
        t = self.machine.txns.get(txn_id)
        if t is None or t.epoch != epoch or t.state != TxnState.ONGOING:
            return None
        prog = self._progress.get((txn_id, epoch))
        if prog is None:
            return False
        if any(prog.votes.get(p) is False for p in wanted):
            return None
        acked = prog.acked.get(Phase.BEGIN, set())
        return all(p in acked for p in wanted)


class PrecommitWatch:
    """A participant leader's timer (soft state): a transaction that stays PRE_COMMITTED
    here for `timeout_ticks` of this leader's ticks is committed by the participant itself
    (the decision is known: the coordinator logged PRE_COMMITTED before asking)."""

    def __init__(self, timeout_ticks: int) -> None:
        self.timeout_ticks = max(1, timeout_ticks)
        self._tick = 0
        self._seen: dict[tuple[int, int], int] = {}

    def restart(self) -> None:
        self._seen.clear()

    def tick(self, ledger: TxnLedger) -> list[tuple[int, int, str]]:
        """(producer id, epoch, transactional id) of the transactions to commit now."""
        self._tick += 1
        due: list[tuple[int, int, str]] = []
        live: set[tuple[int, int]] = set()
        for pid, o in ledger.open_txns():
            if o.phase != TxnPhase.PRE_COMMITTED:
                continue
            key = (pid, o.epoch)
            live.add(key)
            since = self._seen.setdefault(key, self._tick)
            if self._tick - since >= self.timeout_ticks:
                self._seen[key] = self._tick  # again after another timeout if it is lost
                due.append((pid, o.epoch, o.txn_id))
        for key in [k for k in self._seen if k not in live]:
            del self._seen[key]
        return due
