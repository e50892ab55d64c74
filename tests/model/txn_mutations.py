"""Deliberately broken rules of the three-phase commit, to prove the explorer's checks (and
the cluster simulator's) catch them. Each is a context manager that monkeypatches one method
of the real coordinator, driver or ledger for the duration of a run."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

from broker.core.txn import coordinator as coordinator_module
from broker.core.txn.coordinator import AbortReason, TransactionCoordinator, TxnState
from broker.core.txn.driver import PrecommitWatch, TxnDriver
from broker.core.txn.ledger import LedgerResult, OpenTxn, ProducerTxns, TxnLedger, TxnPhase
from broker.core.txn.protocol import Phase, TxnCommand


@contextlib.contextmanager
def _patched(owner: type, name: str, replacement: Callable[..., Any]) -> Iterator[None]:
    original = owner.__dict__[name]  # as defined: a staticmethod stays one
    setattr(owner, name, replacement)
    try:
        yield
    finally:
        setattr(owner, name, original)


@contextlib.contextmanager
def _patched_handler(op: str, replacement: Callable[..., Any]) -> Iterator[None]:
    """Replace the coordinator's handler of command `op` in its dispatch table."""
    original = coordinator_module._HANDLERS[op]
    coordinator_module._HANDLERS[op] = replacement
    try:
        yield
    finally:
        coordinator_module._HANDLERS[op] = original


def commit_on_first_yes() -> AbstractContextManager[None]:
    """The coordinator decides commit as soon as one participant voted yes."""
    original = TxnDriver._step

    def step(self: TxnDriver, t: Any, prog: Any, sends: list[Any], props: list[bytes]) -> None:
        if t.state == TxnState.PREPARING and any(prog.votes.values()):
            self._propose(t, "commit", props)
            return
        original(self, t, prog, sends, props)

    return _patched(TxnDriver, "_step", step)


def new_leader_commits_preparing() -> AbstractContextManager[None]:
    """A new coordinator leader takes a PREPARING transaction as decided commit."""
    original = TxnDriver._step

    def step(self: TxnDriver, t: Any, prog: Any, sends: list[Any], props: list[bytes]) -> None:
        if t.state == TxnState.PREPARING and self.term > 1:
            self._propose(t, "commit", props)
            return
        original(self, t, prog, sends, props)

    return _patched(TxnDriver, "_step", step)


def complete_before_commit_acks() -> AbstractContextManager[None]:
    """The coordinator logs COMPLETE once every participant pre-committed, without waiting
    for their commit markers."""
    original = TxnDriver._send_all

    def send_all(self: TxnDriver, t: Any, prog: Any, phase: Phase, sends: list[Any]) -> bool:
        if phase == Phase.COMMIT:
            original(self, t, prog, phase, sends)
            return False
        return bool(original(self, t, prog, phase, sends))

    return _patched(TxnDriver, "_send_all", send_all)


def participant_commits_prepared() -> AbstractContextManager[None]:
    """A participant's leader commits on its own a transaction it only PREPARED (it does not
    know the decision)."""
    stack = contextlib.ExitStack()

    def tick(self: PrecommitWatch, ledger: TxnLedger) -> list[tuple[int, int, str]]:
        self._tick += 1
        return [
            (pid, o.epoch, o.txn_id)
            for pid, o in ledger.open_txns()
            if o.phase in (TxnPhase.PREPARED, TxnPhase.PRE_COMMITTED)
        ]

    original = TxnLedger._step

    def step(p: ProducerTxns, o: OpenTxn, cmd: TxnCommand) -> LedgerResult:
        if cmd.phase == Phase.COMMIT and o.phase == TxnPhase.PREPARED:
            o.phase = TxnPhase.PRE_COMMITTED
        return original(p, o, cmd)

    stack.enter_context(_patched(PrecommitWatch, "tick", tick))
    stack.enter_context(_patched(TxnLedger, "_step", staticmethod(step)))
    return stack


def reopen_closed_epoch() -> AbstractContextManager[None]:
    """A participant lets a BEGIN reopen an epoch it already closed (a delayed duplicate of
    the coordinator's first request acts on a finished transaction)."""
    original = TxnLedger.apply

    def apply(self: TxnLedger, cmd: TxnCommand) -> LedgerResult:
        p = self.producers.get(cmd.producer_id)
        if (
            cmd.phase == Phase.BEGIN
            and p is not None
            and p.open is None
            and cmd.epoch == p.closed_epoch
        ):
            p.open = OpenTxn(cmd.txn_id, cmd.epoch, TxnPhase.OPEN, cmd.timestamp)
            return LedgerResult()
        return original(self, cmd)

    return _patched(TxnLedger, "apply", apply)


def abort_on_timeout_after_precommit() -> AbstractContextManager[None]:
    """The coordinator's transaction timeout also aborts a PRE_COMMITTED transaction."""
    stack = contextlib.ExitStack()
    original_step = TxnDriver._step

    def step(self: TxnDriver, t: Any, prog: Any, sends: list[Any], props: list[bytes]) -> None:
        timed_out = (self._tick - prog.since) * self.tick_ms > t.timeout_ms
        if t.state == TxnState.PRE_COMMITTED and timed_out:
            self._propose(t, "abort", props, AbortReason.TIMED_OUT)
            return
        original_step(self, t, prog, sends, props)

    original_decide = TransactionCoordinator._decide

    def decide(self: TransactionCoordinator, cmd: dict[str, Any]) -> Any:
        t = self.txns.get(cmd["txn"])
        if t is not None and not cmd["commit"] and t.state == TxnState.PRE_COMMITTED:
            t.state = TxnState.PREPARING
        return original_decide(self, cmd)

    stack.enter_context(_patched(TxnDriver, "_step", step))
    # The machine dispatches through `_HANDLERS`, bound at import: that is what is patched.
    stack.enter_context(_patched_handler("decide", decide))
    return stack


MUTATIONS: dict[str, Callable[[], AbstractContextManager[None]]] = {
    "commit-on-first-yes": commit_on_first_yes,
    "new-leader-commits-preparing": new_leader_commits_preparing,
    "complete-before-commit-acks": complete_before_commit_acks,
    "participant-commits-prepared": participant_commits_prepared,
    "reopen-closed-epoch": reopen_closed_epoch,
    "abort-on-timeout-after-precommit": abort_on_timeout_after_precommit,
}
