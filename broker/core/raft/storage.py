"""The read-only view of a Raft group's durable log (etcd's `storage.go`), and an in-memory one.

A RaftNode reads what is durable through `LogStorage`; it never writes. The caller writes
each Ready's snapshot, entries and hard state, then reports `persisted`. Invariants of every
implementation:

- entries are contiguous from `first_index()` to `last_index()`;
- `term(i)` is defined for `first_index() - 1 <= i <= last_index()` (the index just before
  the first entry is the snapshot's, or the sentinel 0 of an empty log);
- `initial_state().confs` starts with the configuration in effect at `first_index() - 1` and
  lists every configuration entry after it, in index order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from broker.core.raft.types import (
    ENTRY_OVERHEAD_BYTES,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Snapshot,
    SnapshotMeta,
    entries_size,
)


class LogCompacted(Exception):
    """The requested index precedes the first retained entry."""


class LogUnavailable(Exception):
    """The requested index is beyond the last entry."""


class SnapshotTemporarilyUnavailable(Exception):
    """No snapshot can be produced right now; the leader retries later."""


@dataclass(slots=True, frozen=True)
class InitialState:
    hard_state: HardState
    confs: list[tuple[int, ConfState]]
    """(index, configuration) pairs: first the configuration in effect at first_index() - 1,
    then every configuration entry in the log."""


class LogStorage(Protocol):
    def initial_state(self) -> InitialState: ...

    def first_index(self) -> int: ...

    def last_index(self) -> int: ...

    def term(self, index: int) -> int:
        """Raise LogCompacted below first_index() - 1, LogUnavailable above last_index()."""
        ...

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries [lo, hi); at least one if the range is non-empty, then up to max_bytes."""
        ...

    def snapshot(self) -> Snapshot: ...


def limit_size(entries: list[Entry], max_bytes: int | None) -> list[Entry]:
    """The longest prefix within max_bytes, but never fewer than one entry."""
    if max_bytes is None or len(entries) <= 1 or entries_size(entries) <= max_bytes:
        return entries
    total = 0
    for n, e in enumerate(entries):
        total += len(e.data) + ENTRY_OVERHEAD_BYTES
        if total > max_bytes and n > 0:
            return entries[:n]
    return entries


class MemoryStorage:
    """An in-memory LogStorage; the simulator uses it as a node's durable disk.

    `_entries[0]` is a dummy holding the index and term before the first real entry.
    """

    __slots__ = ("_confs", "_entries", "_hard_state", "_snapshot")

    def __init__(self, conf: ConfState | None = None) -> None:
        base = conf if conf is not None else ConfState(frozenset())
        self._hard_state = HardState()
        self._snapshot = Snapshot(SnapshotMeta(0, 0, base))
        self._entries: list[Entry] = [Entry(0, 0)]
        self._confs: list[tuple[int, ConfState]] = [(0, base)]

    # -- LogStorage ---------------------------------------------------------------------------

    def initial_state(self) -> InitialState:
        return InitialState(self._hard_state, list(self._confs))

    def first_index(self) -> int:
        return self._entries[0].index + 1

    def last_index(self) -> int:
        return self._entries[0].index + len(self._entries) - 1

    def term(self, index: int) -> int:
        offset = self._entries[0].index
        if index < offset:
            raise LogCompacted(index)
        if index - offset >= len(self._entries):
            raise LogUnavailable(index)
        return self._entries[index - offset].term

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        offset = self._entries[0].index
        if lo <= offset:
            raise LogCompacted(lo)
        if hi > self.last_index() + 1:
            raise LogUnavailable(hi)
        return limit_size(self._entries[lo - offset : hi - offset], max_bytes)

    def snapshot(self) -> Snapshot:
        return self._snapshot

    # -- writes (the caller's side) -----------------------------------------------------------

    @property
    def hard_state(self) -> HardState:
        return self._hard_state

    def set_hard_state(self, hs: HardState) -> None:
        self._hard_state = hs

    def append(self, entries: list[Entry]) -> None:
        """Append, replacing any stored entries from entries[0].index on."""
        if not entries:
            return
        first = entries[0].index
        offset = self._entries[0].index
        if first <= offset:
            # Entries already covered by the snapshot: keep only what lies beyond it.
            entries = [e for e in entries if e.index > offset]
            if not entries:
                return
            first = entries[0].index
        assert first <= self.last_index() + 1, "append must not leave a gap"
        del self._entries[first - offset :]
        self._entries.extend(entries)
        while len(self._confs) > 1 and self._confs[-1][0] >= first:
            self._confs.pop()
        if any([e.kind == EntryKind.CONF for e in entries]):
            for e in entries:
                if e.kind == EntryKind.CONF:
                    assert e.conf is not None
                    self._confs.append((e.index, e.conf))

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        """Install a snapshot received from the leader: it replaces the whole log."""
        meta = snapshot.meta
        if meta.index <= self._snapshot.meta.index:
            return
        self._snapshot = snapshot
        self._entries = [Entry(meta.index, meta.term)]
        self._confs = [(meta.index, meta.conf)]

    def create_snapshot(self, index: int, conf: ConfState, data: bytes) -> Snapshot:
        """Record the application's snapshot at `index` (which must be in the log)."""
        if index <= self._snapshot.meta.index:
            return self._snapshot
        assert index <= self.last_index(), "a snapshot cannot cover entries not in the log"
        snap = Snapshot(SnapshotMeta(index, self.term(index), conf), data)
        self._snapshot = snap
        return snap

    def compact(self, index: int) -> None:
        """Drop entries up to `index`, which must be covered by the latest snapshot."""
        offset = self._entries[0].index
        if index <= offset:
            return
        assert index <= self._snapshot.meta.index, "compact only what a snapshot covers"
        assert index <= self.last_index()
        base = self._entries[index - offset]
        self._entries = [Entry(base.index, base.term), *self._entries[index - offset + 1 :]]
        # Keep the configuration in effect at `index` as the first element.
        effective = self._confs[0]
        rest: list[tuple[int, ConfState]] = []
        for idx, conf in self._confs:
            if idx <= index:
                effective = (index, conf)
            else:
                rest.append((idx, conf))
        self._confs = [effective, *rest]
