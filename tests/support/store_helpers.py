"""One-operation writes to a RocksDB GroupStorage, for tests.

MemoryStorage's write methods (`append`, `set_hard_state`, `apply_snapshot`) as a WriteRound
of one operation, committed at once with `store.commit`. The broker never writes this way: its
driver commits one round per loop for all groups (`broker.runtime.groups.round_writes`).
`RocksLog` wraps a GroupStorage with those methods, so that one suite can drive it and a
MemoryStorage alike.
"""

from __future__ import annotations

from collections.abc import Sequence

from broker.core.raft import ConfState, Entry, HardState, InitialState, Snapshot, SnapshotMeta
from broker.runtime.store import GroupStorage, RocksStore, WriteRound


def append(store: RocksStore, group: GroupStorage, entries: Sequence[Entry]) -> None:
    """Append, replacing any stored entries from entries[0].index on."""
    rnd = WriteRound()
    rnd.append(group, entries)
    store.commit(rnd)


def set_hard_state(store: RocksStore, group: GroupStorage, hs: HardState) -> None:
    rnd = WriteRound()
    rnd.set_hard_state(group, hs)
    store.commit(rnd)


def apply_snapshot(store: RocksStore, group: GroupStorage, snapshot: Snapshot) -> None:
    """Install a snapshot received from the leader: it replaces the whole log."""
    rnd = WriteRound()
    rnd.apply_snapshot(group, snapshot)
    store.commit(rnd)


class RocksLog:
    """A GroupStorage with MemoryStorage's interface: its LogStorage reads, `hard_state`, and
    the writes, each a one-operation round (create_snapshot and compact are the group's own)."""

    def __init__(self, store: RocksStore, group: GroupStorage) -> None:
        self.store = store
        self.group = group

    def initial_state(self) -> InitialState:
        return self.group.initial_state()

    def first_index(self) -> int:
        return self.group.first_index()

    def last_index(self) -> int:
        return self.group.last_index()

    def term(self, index: int) -> int:
        return self.group.term(index)

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        return self.group.entries(lo, hi, max_bytes)

    def snapshot(self) -> Snapshot:
        return self.group.snapshot()

    @property
    def hard_state(self) -> HardState:
        return self.group.hard_state

    @property
    def snapshot_meta(self) -> SnapshotMeta:
        return self.group.snapshot_meta

    def set_hard_state(self, hs: HardState) -> None:
        set_hard_state(self.store, self.group, hs)

    def append(self, entries: Sequence[Entry]) -> None:
        append(self.store, self.group, entries)

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        apply_snapshot(self.store, self.group, snapshot)

    def create_snapshot(self, index: int, conf: ConfState, data: bytes) -> Snapshot:
        return self.group.create_snapshot(index, conf, data)

    def compact(self, index: int) -> None:
        self.group.compact(index)
