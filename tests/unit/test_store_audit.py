"""The durability audit: it passes the store's correct paths and catches planted early acks.

A checker never seen failing proves nothing, so each rule is broken on purpose: a store that
acknowledges before its flush completes, one that forgets to sync, one whose flush started
before the write returned; and the audit's API is fed the orders of events directly.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.core.raft import ConfState, Entry, HardState, Ready
from broker.runtime.audit import DurabilityAudit, DurabilityViolation
from broker.runtime.store import RocksStore, WriteRound

C0 = ConfState(frozenset({0, 1, 2}))


def round_for(store: RocksStore, n: int) -> WriteRound:
    """Round n appends entry n to group 1 and votes for 1 in term n."""
    rnd = WriteRound()
    g = store.group(1)
    rnd.add_ready(g, Ready(n, hard_state=HardState(n, 1, 0), entries=[Entry(n, n)], must_sync=True))
    return rnd


def open_store(path: Path, cls: type[RocksStore], mode: str) -> RocksStore:
    store = cls(path, 0, durability=mode, audit=True)  # type: ignore[arg-type]
    store.create_group(1, C0)
    return store


# -- the audit's own rules, event by event ----------------------------------------------------


def test_a_synced_write_is_durable_and_an_unsynced_one_is_not() -> None:
    a = DurabilityAudit()
    a.write_returned(1, [(7, 1, 3, HardState(2, 1, 0))])
    with pytest.raises(DurabilityViolation, match="index 3 acknowledged, durable only up to 0"):
        a.assert_durable(7, 3)
    with pytest.raises(DurabilityViolation, match="durable hard state is term 0"):
        a.assert_hard_state_durable(7, 2, 1)
    a.synced(1)
    a.assert_durable(7, 3)
    a.assert_hard_state_durable(7, 2, 1)
    a.assert_hard_state_durable(7, 2, None)  # an append acknowledgement needs only the term
    a.assert_hard_state_durable(7, 1, 2)  # a later term covers an earlier one
    with pytest.raises(DurabilityViolation):
        a.assert_hard_state_durable(7, 2, 0)  # another vote was never durable
    with pytest.raises(DurabilityViolation):
        a.assert_durable(8, 1)  # another group
    assert a.checks == 4


def test_a_flush_that_started_before_the_write_returned_does_not_count() -> None:
    a = DurabilityAudit()
    a.write_returned(1, [(1, 1, 1, None)])
    token = a.flush_started()  # covers write 1 only
    a.write_returned(2, [(1, 2, 2, None)])  # returned while the flush was running
    a.flush_completed(token)
    a.assert_durable(1, 1)
    with pytest.raises(DurabilityViolation, match="index 2 acknowledged, durable only up to 1"):
        a.assert_durable(1, 2)
    a.flush_completed(a.flush_started())
    a.assert_durable(1, 2)


def test_an_entry_overwritten_in_flight_is_not_durable_even_with_the_same_term() -> None:
    a = DurabilityAudit()
    a.write_returned(1, [(1, 1, 10, None)])
    a.synced(1)
    a.write_returned(2, [(1, 6, 8, None)])  # replaces 6.. (maybe with identical entries)
    a.assert_durable(1, 5)
    with pytest.raises(DurabilityViolation, match="unsynced write 2 replaced the log from 6"):
        a.assert_durable(1, 6)
    a.synced(2)
    a.assert_durable(1, 8)
    with pytest.raises(DurabilityViolation):
        a.assert_durable(1, 9)  # truncated away by write 2


def test_a_snapshot_install_covers_nothing_until_synced() -> None:
    a = DurabilityAudit()
    a.seed(1, 20, HardState(3, None, 20))
    a.write_returned(1, [(1, 0, 50, None)])
    with pytest.raises(DurabilityViolation):
        a.assert_durable(1, 10)
    a.synced(1)
    a.assert_durable(1, 50)


def test_the_audit_rejects_impossible_reports() -> None:
    a = DurabilityAudit()
    a.write_returned(2, [])
    with pytest.raises(DurabilityViolation, match="write sequence 2 after 2"):
        a.write_returned(2, [])
    with pytest.raises(DurabilityViolation, match="sync claims write 3"):
        a.synced(3)


# -- planted faults in a store ----------------------------------------------------------------


class EarlyAckStore(RocksStore):
    """Fault (a): makes the round visible (acknowledges) before its flush has completed."""

    def commit(self, rnd: WriteRound) -> None:
        written = self.write(rnd)
        assert written is not None
        self.acknowledge(written)
        token = self.flush_token()
        self.sync_wal()
        self.wal_synced(token)


class NoSyncStore(RocksStore):
    """Fault: an inline store that writes with sync=False and never syncs."""

    def commit(self, rnd: WriteRound) -> None:
        plan = self._prepare(rnd)
        self._write_plan(plan, sync=False)
        self._acknowledge(plan, self.seq)


class StaleFlushStore(RocksStore):
    """Fault (b): relies on a flush that started before its write returned, e.g.
    piggybacking on a flush already running for the previous round."""

    def commit(self, rnd: WriteRound) -> None:
        token = self.flush_token()
        written = self.write(rnd)  # returns after the flush started
        assert written is not None
        self.sync_wal()
        self.wal_synced(token)
        self.acknowledge(written)


def test_acknowledging_before_the_flush_completes_is_caught(tmp_path: Path) -> None:
    store = open_store(tmp_path, EarlyAckStore, "pipelined")
    try:
        with pytest.raises(DurabilityViolation, match="writes are synced only up to"):
            store.commit(round_for(store, 1))
    finally:
        store.close()


def test_acknowledging_an_unsynced_write_is_caught(tmp_path: Path) -> None:
    store = open_store(tmp_path, NoSyncStore, "inline")
    try:
        with pytest.raises(DurabilityViolation):
            store.commit(round_for(store, 1))
    finally:
        store.close()


def test_a_flush_that_started_before_the_write_is_caught(tmp_path: Path) -> None:
    store = open_store(tmp_path, StaleFlushStore, "pipelined")
    try:
        with pytest.raises(DurabilityViolation, match="writes are synced only up to"):
            store.commit(round_for(store, 1))
    finally:
        store.close()


@pytest.mark.parametrize("mode", ["inline", "pipelined"])
def test_the_correct_paths_pass(tmp_path: Path, mode: str) -> None:
    store = open_store(tmp_path, RocksStore, mode)
    try:
        for n in range(1, 7):
            store.commit(round_for(store, n))
        audit = store.audit
        assert audit is not None
        assert audit.checks == 18  # a write, an entry and a hard-state check per round
        audit.assert_durable(1, 6)
        audit.assert_hard_state_durable(1, 6, 1)
    finally:
        store.close()


def test_the_audit_is_off_unless_asked_for(tmp_path: Path) -> None:
    with RocksStore.open(tmp_path, 0) as store:
        assert store.audit is None
    shared = DurabilityAudit()
    with RocksStore.open(tmp_path, 0, audit=shared) as store:
        assert store.audit is shared
