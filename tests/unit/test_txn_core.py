"""The transaction core rule by rule: the coordinator machine, a partition log and a group
coordinator as participants (the explorer in tests/model checks their interplay)."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.config import BrokerConfig, ConfigError
from broker.core.groups.coordinator import GroupCoordinator, cmd_txn_offsets
from broker.core.partition import ApplyResult, Outcome, PartitionMachine
from broker.core.raft import Entry, EntryKind
from broker.core.txn.aborted import is_aborted
from broker.core.txn.coordinator import (
    AbortReason,
    EndAnswer,
    InitAnswer,
    TransactionCoordinator,
    TxnState,
    cmd_add,
    cmd_complete,
    cmd_decide,
    cmd_end,
    cmd_init,
)
from broker.core.txn.driver import TxnDriver
from broker.core.txn.protocol import (
    EPOCH_MAX,
    GROUP,
    Participant,
    Phase,
    TxnCommand,
    encode_marker,
)
from broker.wire.batch import Record, encode_batch
from broker.wire.errors import BatchError, ErrorCode

P0 = Participant("t", 0)
G = Participant("g", GROUP)


class Log:
    """A machine fed committed entries one by one."""

    def __init__(self, machine: PartitionMachine | GroupCoordinator | TransactionCoordinator):
        self.m = machine
        self.index = 0

    def apply(self, data: bytes) -> tuple[ErrorCode, object]:
        self.index += 1
        applied = self.m.apply_entry(Entry(self.index, 1, EntryKind.NORMAL, data))
        return applied.error, applied.value


def cmd(phase: Phase, epoch: int = 0, *, term: int = 1, seq: int = -1, at: Participant = P0):
    return TxnCommand(
        phase=phase,
        participant=at,
        txn_id="tx",
        producer_id=7,
        epoch=epoch,
        coordinator_term=term,
        last_seq=seq,
        timestamp=1000,
    )


def data(epoch: int = 0, seq: int = 0, n: int = 2, *, txn: bool = True) -> bytes:
    records = [Record(value=b"v%d" % i, timestamp=1000) for i in range(n)]
    return encode_batch(
        records, producer_id=7, producer_epoch=epoch, base_sequence=seq, transactional=txn
    )


def send(log: Log, c: TxnCommand) -> tuple[ErrorCode, object]:
    if c.phase in (Phase.COMMIT, Phase.ABORT):
        return log.apply(encode_marker(c))
    return log.apply(c.encode())


# -- a partition log as a participant ---------------------------------------------------------


def test_transactional_data_needs_the_coordinators_begin() -> None:
    log = Log(PartitionMachine())
    with pytest.raises(BatchError) as refused:
        log.m.validate(data())
    assert refused.value.code == ErrorCode.INVALID_TXN_STATE
    err, res = log.apply(data())  # a leader that did not check: apply decides the same
    assert err == ErrorCode.INVALID_TXN_STATE and log.m.next_offset == 0
    assert send(log, cmd(Phase.BEGIN))[0] == ErrorCode.NONE
    log.m.validate(data())
    err, res = log.apply(data())
    assert err == ErrorCode.NONE and isinstance(res, ApplyResult) and res.base_offset == 0


def test_a_client_cannot_write_a_control_batch() -> None:
    m = PartitionMachine()
    marker = encode_marker(cmd(Phase.COMMIT))
    with pytest.raises(BatchError) as refused:
        m.validate(marker)
    assert refused.value.code == ErrorCode.INVALID_REQUEST


def test_lso_holds_at_an_open_transaction_and_commit_moves_it_to_the_end() -> None:
    log = Log(PartitionMachine())
    plain = encode_batch([Record(value=b"x", timestamp=1)])
    log.apply(plain)  # offset 0
    send(log, cmd(Phase.BEGIN))
    assert log.m.last_stable_offset == 1  # nothing written in the transaction yet
    log.apply(data(n=2))  # offsets 1-2
    log.apply(plain)  # offset 3
    assert (log.m.high_watermark, log.m.last_stable_offset) == (4, 1)
    assert send(log, cmd(Phase.PREPARE, seq=1))[1].vote is True  # type: ignore[union-attr]
    assert send(log, cmd(Phase.PRECOMMIT))[0] == ErrorCode.NONE
    err, res = send(log, cmd(Phase.COMMIT))
    assert err == ErrorCode.NONE and isinstance(res, ApplyResult) and res.base_offset == 4
    assert (log.m.high_watermark, log.m.last_stable_offset) == (5, 5)
    assert len(log.m.aborted) == 0


def test_prepare_votes_no_unless_the_log_holds_exactly_the_acknowledged_data() -> None:
    log = Log(PartitionMachine())
    send(log, cmd(Phase.BEGIN))
    log.apply(data(n=2))  # sequences 0-1
    assert send(log, cmd(Phase.PREPARE, seq=3))[1].vote is False  # type: ignore[union-attr]
    assert send(log, cmd(Phase.PREPARE, seq=1))[1].vote is True  # type: ignore[union-attr]
    # Prepared: no more data of the transaction.
    assert log.apply(data(seq=2))[0] == ErrorCode.INVALID_TXN_STATE


def test_abort_hides_the_data_and_later_epochs_are_unaffected() -> None:
    log = Log(PartitionMachine())
    send(log, cmd(Phase.BEGIN, 0))
    log.apply(data(0, n=2))  # 0-1
    err, res = send(log, cmd(Phase.ABORT, 0))  # marker at 2
    assert err == ErrorCode.NONE and isinstance(res, ApplyResult) and res.base_offset == 2
    ranges = log.m.aborted.covering(0, log.m.next_offset)
    assert is_aborted(ranges, 7, 0) and is_aborted(ranges, 7, 1)
    send(log, cmd(Phase.BEGIN, 1))
    assert log.apply(data(1, seq=0))[0] == ErrorCode.NONE  # 3-4, a new epoch from seq 0
    assert not is_aborted(log.m.aborted.covering(0, 10), 7, 3)
    # A delayed message of the ended epoch acts on nothing.
    assert send(log, cmd(Phase.BEGIN, 0))[0] == ErrorCode.PRODUCER_FENCED
    assert log.apply(data(0, seq=2))[0] == ErrorCode.PRODUCER_FENCED


def test_commands_from_an_older_coordinator_term_are_refused() -> None:
    log = Log(PartitionMachine())
    send(log, cmd(Phase.BEGIN, term=5))
    assert send(log, cmd(Phase.PREPARE, term=4))[0] == ErrorCode.TRANSACTION_COORDINATOR_FENCED
    assert send(log, cmd(Phase.PREPARE, term=6))[1].vote is True  # type: ignore[union-attr]


def test_abort_is_refused_after_precommit_and_repeats_are_idempotent() -> None:
    log = Log(PartitionMachine())
    send(log, cmd(Phase.BEGIN))
    send(log, cmd(Phase.PREPARE))
    send(log, cmd(Phase.PRECOMMIT))
    assert send(log, cmd(Phase.ABORT))[0] == ErrorCode.INVALID_TXN_STATE
    assert send(log, cmd(Phase.COMMIT))[0] == ErrorCode.NONE
    assert send(log, cmd(Phase.COMMIT))[0] == ErrorCode.NONE  # a duplicate: no new offset
    assert send(log, cmd(Phase.PRECOMMIT))[0] == ErrorCode.NONE
    assert send(log, cmd(Phase.PREPARE))[1].vote is True  # type: ignore[union-attr]
    assert log.m.next_offset == 0  # no data here: the markers took no offset


def test_an_abort_of_an_epoch_never_begun_closes_it() -> None:
    log = Log(PartitionMachine())
    assert send(log, cmd(Phase.ABORT, 3))[0] == ErrorCode.NONE
    assert send(log, cmd(Phase.BEGIN, 3))[0] == ErrorCode.PRODUCER_FENCED


def test_a_producer_inside_a_transaction_never_expires() -> None:
    from broker.core.partition import PartitionConfig

    log = Log(PartitionMachine(PartitionConfig(producer_expiry_ms=10)))
    send(log, cmd(Phase.BEGIN))
    log.apply(data())
    late = encode_batch(
        [Record(value=b"z", timestamp=10_000)], producer_id=8, producer_epoch=0, base_sequence=0
    )
    log.apply(late)  # moves the expiry horizon far past producer 7's last batch
    assert 7 in log.m.producers and log.m.ledger.has_open(7)
    assert log.m.last_stable_offset == 0


def test_transaction_state_survives_persistence_and_snapshots() -> None:
    log = Log(PartitionMachine())
    send(log, cmd(Phase.BEGIN, 0))
    log.apply(data(0))
    send(log, cmd(Phase.ABORT, 0))
    send(log, cmd(Phase.BEGIN, 1))
    log.apply(data(1))
    w = log.m.take_writes()
    again = PartitionMachine()
    again.load(w.state, list(w.records))
    assert again.last_stable_offset == log.m.last_stable_offset == 3
    assert is_aborted(again.aborted.covering(0, 10), 7, 0)
    assert again.ledger.has_open(7)
    snap = PartitionMachine()
    snap.restore_snapshot(log.m.snapshot())
    assert snap.ledger.has_open(7) and len(snap.aborted) == 0  # nothing served below it


# -- a group coordinator as a participant -----------------------------------------------------


def _group_log() -> Log:
    return Log(GroupCoordinator(lambda: (0, {}), tick_ms=50, empty_group_expiry_ms=1 << 40))


def test_offsets_committed_in_a_transaction_appear_only_when_it_commits() -> None:
    log = _group_log()
    gc = log.m
    assert isinstance(gc, GroupCoordinator)
    stage = cmd_txn_offsets("g", 7, 0, "", -1, [("in", 0, 42, None)], 0)
    errors = log.apply(stage)[1]
    assert errors == [ErrorCode.INVALID_TXN_STATE]  # not registered yet
    log.apply(cmd(Phase.BEGIN, at=G).encode())
    assert log.apply(stage)[1] == [ErrorCode.NONE]
    group = gc.groups["g"]
    assert group.offsets == {} and group.unstable(("in", 0))
    log.apply(cmd(Phase.PREPARE, at=G).encode())
    log.apply(cmd(Phase.PRECOMMIT, at=G).encode())
    log.apply(cmd(Phase.COMMIT, at=G).encode())
    assert group.offsets[("in", 0)].offset == 42 and not group.unstable(("in", 0))


def test_offsets_of_an_aborted_transaction_vanish() -> None:
    log = _group_log()
    gc = log.m
    assert isinstance(gc, GroupCoordinator)
    log.apply(cmd(Phase.BEGIN, at=G).encode())
    log.apply(cmd_txn_offsets("g", 7, 0, "", -1, [("in", 0, 42, None)], 0))
    log.apply(cmd(Phase.ABORT, at=G).encode())
    assert "g" not in gc.groups or not gc.groups["g"].offsets
    w = gc.take_writes()
    again = GroupCoordinator(lambda: (0, {}), tick_ms=50, empty_group_expiry_ms=1 << 40)
    again.load(w.state, list(w.records))
    assert again.ledger.producers[7].closed_epoch == 0


# -- the coordinator --------------------------------------------------------------------------


def _coordinator() -> tuple[Log, int, int]:
    log = Log(TransactionCoordinator())
    err, ans = log.apply(cmd_init("tx", 7, 60_000, 0))
    assert err == ErrorCode.NONE and isinstance(ans, InitAnswer)
    return log, ans.producer_id, ans.epoch


def test_a_transaction_runs_to_commit_and_the_epoch_moves_on() -> None:
    log, pid, epoch = _coordinator()
    assert log.apply(cmd_add("tx", pid, epoch, [P0, G], 1))[1] == (P0, G)
    err, ans = log.apply(cmd_end("tx", pid, epoch, True, [(P0, 5)], 2))
    assert err == ErrorCode.NONE and isinstance(ans, EndAnswer) and not ans.done
    coord = log.m
    assert isinstance(coord, TransactionCoordinator)
    t = coord.txns["tx"]
    assert t.state == TxnState.PREPARING and t.participants == {P0: 5, G: -1}
    log.apply(cmd_decide("tx", epoch, True, AbortReason.NONE, 3))
    assert t.state == TxnState.PRE_COMMITTED
    # Past the decision an abort is refused, whoever asks.
    assert log.apply(cmd_decide("tx", epoch, False, AbortReason.TIMED_OUT, 4))[0] == (
        ErrorCode.INVALID_TXN_STATE
    )
    log.apply(cmd_complete("tx", epoch, 5))
    assert (t.state, t.epoch, t.last_epoch, t.last_committed) == (TxnState.EMPTY, 1, 0, True)
    # The client's retry after a failover gets the same answer.
    err, ans = log.apply(cmd_end("tx", pid, epoch, True, [(P0, 5)], 6))
    assert isinstance(ans, EndAnswer) and ans.done and ans.committed and ans.epoch == 1
    assert log.apply(cmd_end("tx", pid, epoch, False, [], 6))[0] == ErrorCode.INVALID_TXN_STATE


def test_init_fences_the_previous_producer_and_aborts_its_transaction() -> None:
    log, pid, epoch = _coordinator()
    log.apply(cmd_add("tx", pid, epoch, [P0], 1))
    err, _ = log.apply(cmd_init("tx", -1, 60_000, 2))
    assert err == ErrorCode.CONCURRENT_TRANSACTIONS  # its transaction aborts first
    coord = log.m
    assert isinstance(coord, TransactionCoordinator)
    assert coord.txns["tx"].state == TxnState.ABORTING
    log.apply(cmd_complete("tx", epoch, 3))
    err, ans = log.apply(cmd_init("tx", -1, 60_000, 4))
    assert isinstance(ans, InitAnswer) and ans.epoch == epoch + 2
    assert log.apply(cmd_add("tx", pid, epoch + 1, [P0], 5))[0] == ErrorCode.PRODUCER_FENCED
    # The zombie's EndTxn (commit or a retried abort) is fenced: an answer naming the
    # outcome would hand it the epoch after its own, which the newer producer holds.
    for commit in (True, False):
        err, _ = log.apply(cmd_end("tx", pid, epoch, commit, [], 5))
        assert err == ErrorCode.PRODUCER_FENCED


def test_a_timed_out_transaction_fences_its_producer() -> None:
    log, pid, epoch = _coordinator()
    log.apply(cmd_add("tx", pid, epoch, [P0], 1))
    log.apply(cmd_decide("tx", epoch, False, AbortReason.TIMED_OUT, 2))
    assert log.apply(cmd_end("tx", pid, epoch, True, [], 3))[0] == ErrorCode.TRANSACTION_TIMED_OUT
    log.apply(cmd_complete("tx", epoch, 4))
    assert log.apply(cmd_end("tx", pid, epoch, True, [], 5))[0] == ErrorCode.TRANSACTION_TIMED_OUT
    assert log.apply(cmd_add("tx", pid, epoch + 1, [P0], 5))[0] == ErrorCode.PRODUCER_FENCED
    err, ans = log.apply(cmd_init("tx", -1, 60_000, 6))
    assert err == ErrorCode.NONE and isinstance(ans, InitAnswer)


def test_epochs_running_out_hand_out_a_new_producer_id() -> None:
    log, pid, _ = _coordinator()
    coord = log.m
    assert isinstance(coord, TransactionCoordinator)
    coord.txns["tx"].epoch = EPOCH_MAX - 1
    _, ans = log.apply(cmd_end("tx", pid, EPOCH_MAX - 1, True, [], 1))
    assert isinstance(ans, EndAnswer) and ans.done and ans.reinit
    assert log.apply(cmd_init("tx", -1, 60_000, 2))[0] == ErrorCode.CONCURRENT_TRANSACTIONS
    _, ans = log.apply(cmd_init("tx", 99, 60_000, 3))
    assert isinstance(ans, InitAnswer) and (ans.producer_id, ans.epoch) == (99, 0)


def test_coordinator_state_survives_persistence_and_snapshots() -> None:
    log, pid, epoch = _coordinator()
    log.apply(cmd_add("tx", pid, epoch, [P0], 1))
    log.apply(cmd_end("tx", pid, epoch, True, [(P0, 3)], 2))
    coord = log.m
    assert isinstance(coord, TransactionCoordinator)
    w = coord.take_writes()
    again = TransactionCoordinator()
    again.load(w.state, list(w.records))
    assert again.txns == coord.txns
    snap = TransactionCoordinator()
    snap.restore_snapshot(coord.snapshot())
    assert snap.txns == coord.txns and snap.applied_index == coord.applied_index


def test_a_data_batch_outside_any_transaction_still_works_for_idempotent_producers() -> None:
    log = Log(PartitionMachine())
    err, res = log.apply(data(txn=False))
    assert err == ErrorCode.NONE and isinstance(res, ApplyResult)
    assert res.outcome == Outcome.APPENDED
    send(log, cmd(Phase.BEGIN, 1))
    # Inside a transaction the same producer id may not write outside it.
    assert log.apply(data(1, txn=False))[0] == ErrorCode.INVALID_TXN_STATE


def test_the_kill_after_precommit_failpoint_stops_the_driver_before_commit() -> None:
    for failpoint in (False, True):
        log, pid, epoch = _coordinator()
        log.apply(cmd_add("tx", pid, epoch, [P0], 1))
        log.apply(cmd_end("tx", pid, epoch, True, [(P0, -1)], 2))
        log.apply(cmd_decide("tx", epoch, True, AbortReason.NONE, 3))
        coord = log.m
        assert isinstance(coord, TransactionCoordinator)
        driver = TxnDriver(coord, tick_ms=50, kill_after_precommit=failpoint)
        driver.restart(term=1)
        (precommit,), _ = driver.poll()
        assert precommit.command.phase == Phase.PRECOMMIT
        driver.on_answer(precommit.key, ErrorCode.NONE)
        sends, _ = driver.poll()
        if failpoint:
            assert sends == [] and driver.halted  # no COMMIT: the runtime kills the broker
        else:
            assert [s.command.phase for s in sends] == [Phase.COMMIT] and not driver.halted


def test_an_unknown_failpoint_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="failpoints: unknown nope"):
        BrokerConfig(data_dir=tmp_path, failpoints="txn.kill_after_precommit, nope").validate()
