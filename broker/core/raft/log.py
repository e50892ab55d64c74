"""RaftLog: a group's log as the node sees it, durable part (storage) plus unstable tail.

Layout, lowest index first::

    storage (durable)           | unstable_snapshot? | unstable entries (not yet durable)
    first_index() .. offset - 1 |                    | offset .. last_index()

Invariants:
- everything below `offset` is durable in storage and agrees with this log;
- `committed <= last_index()`, `applied <= committed`, and a committed entry is never
  truncated (a conflict at or below `committed` is a safety violation: assert);
- entries are handed out for persistence in index order; `handed` is the last index handed
  out; an unstable snapshot is handed out before any entry after it.
"""

from __future__ import annotations

from collections.abc import Sequence

from broker.core.raft.storage import (
    LogCompacted,
    LogStorage,
    LogUnavailable,
    limit_size,
)
from broker.core.raft.types import ENTRY_OVERHEAD_BYTES, Entry, Snapshot, entries_size

NO_TERM = -1
"""term() of an index it cannot answer for, which means one of two opposite things: the index
is compacted (below first_index() - 1: the snapshot holds it) or beyond the log (above
last_index(): the log lacks it). A caller asking whether the log holds an entry must tell
them apart: `RaftLog.compacted(index)` or `index > last_index()`."""


class RaftLog:
    __slots__ = (
        "applied",
        "committed",
        "handed",
        "offset",
        "snapshot_handed",
        "storage",
        "unstable",
        "unstable_snapshot",
    )

    def __init__(self, storage: LogStorage, committed: int, applied: int) -> None:
        self.storage = storage
        first = storage.first_index()
        last = storage.last_index()
        self.unstable: list[Entry] = []
        self.unstable_snapshot: Snapshot | None = None
        self.snapshot_handed = False
        self.offset = last + 1
        self.handed = last
        # Whatever the application applied (e.g. restored from its snapshot) was committed,
        # even if the hard state recording that commit was not yet durable.
        self.committed = max(min(committed, last), first - 1, min(applied, last))
        self.applied = max(min(applied, self.committed), first - 1)

    # -- reading ------------------------------------------------------------------------------

    def first_index(self) -> int:
        if self.unstable_snapshot is not None:
            return self.unstable_snapshot.meta.index + 1
        return self.storage.first_index()

    def last_index(self) -> int:
        if self.unstable:
            return self.offset + len(self.unstable) - 1
        if self.unstable_snapshot is not None:
            return self.unstable_snapshot.meta.index
        return self.storage.last_index()

    def last_term(self) -> int:
        return self.term(self.last_index())

    def term(self, index: int) -> int:
        """The term at `index`, or NO_TERM when it is compacted or beyond the log (see
        NO_TERM: `compacted()` tells the two apart)."""
        off = self.offset
        if index >= off:
            i = index - off
            return self.unstable[i].term if i < len(self.unstable) else NO_TERM
        snap = self.unstable_snapshot
        if snap is not None:
            return snap.meta.term if index == snap.meta.index else NO_TERM
        try:
            return self.storage.term(index)
        except (LogCompacted, LogUnavailable):
            return NO_TERM

    def compacted(self, index: int) -> bool:
        """Is `index` compacted into the snapshot? term() answers NO_TERM for it, as for an
        index beyond the log, but this log holds it: the snapshot (at first_index() - 1,
        whose term term() still answers) covers it."""
        return index < self.first_index() - 1

    def match_term(self, index: int, term: int) -> bool:
        return self.term(index) == term

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Raft §5.4.1: is a candidate's log at least as up to date as this one?"""
        my_term = self.last_term()
        return last_term > my_term or (last_term == my_term and last_index >= self.last_index())

    def slice(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry] | None:
        """Entries [lo, hi) within max_bytes (at least one), or None if lo is compacted."""
        if lo >= hi:
            return []
        if lo < self.first_index():
            return None
        off = self.offset
        if hi <= off:
            try:
                return self.storage.entries(lo, hi, max_bytes)
            except LogCompacted:
                return None
        if lo >= off:
            return limit_size(self.unstable[lo - off : hi - off], max_bytes)
        try:
            stored = self.storage.entries(lo, off, max_bytes)
        except LogCompacted:
            return None
        if len(stored) < off - lo:
            return stored
        if max_bytes is None:
            return [*stored, *self.unstable[: hi - off]]
        budget = max_bytes - entries_size(stored)
        out = list(stored)
        for e in self.unstable[: hi - off]:
            budget -= len(e.data) + ENTRY_OVERHEAD_BYTES
            if budget < 0:
                break
            out.append(e)
        return out

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """The largest index <= `index` whose term is <= `term`, with that term (fast
        backtracking: the leader skips every entry of a term the follower cannot match)."""
        while index > 0:
            t = self.term(index)
            if t == NO_TERM:
                # Compacted (or beyond the log): cannot look further; the leader probes here.
                return index, 0
            if t <= term:
                return index, t
            index -= 1
        return 0, 0

    # -- writing ------------------------------------------------------------------------------

    def append(self, entries: Sequence[Entry]) -> None:
        """Append entries that follow the log or replace an uncommitted suffix."""
        if not entries:
            return
        after = entries[0].index
        assert after > self.committed, f"truncating committed entry {after} <= {self.committed}"
        off = self.offset
        n = len(self.unstable)
        if after == off + n:
            self.unstable.extend(entries)
        elif after <= off:
            # Replace the unstable tail entirely; stale durable entries >= after are shadowed
            # until the caller's write of these entries truncates them in storage.
            self.offset = after
            self.unstable = list(entries)
        else:
            del self.unstable[after - off :]
            self.unstable.extend(entries)
        if self.handed >= after:
            self.handed = after - 1

    def commit_to(self, index: int) -> bool:
        if index > self.committed:
            assert index <= self.last_index(), "commit beyond the log"
            self.committed = index
            return True
        return False

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the log with a snapshot received from the leader."""
        idx = snapshot.meta.index
        self.unstable_snapshot = snapshot
        self.snapshot_handed = False
        self.unstable = []
        self.offset = idx + 1
        self.handed = idx
        self.committed = idx
        self.applied = idx

    # -- persistence and application ----------------------------------------------------------

    def has_unstable(self) -> bool:
        """Does take_unstable() have anything to hand out? Its two tests, joined."""
        return self.handed < self.offset + len(self.unstable) - 1 or (
            self.unstable_snapshot is not None and not self.snapshot_handed
        )

    def take_unstable(self) -> tuple[Snapshot | None, list[Entry]]:
        """What to hand out for persistence next (each thing exactly once): the unstable
        snapshot if not yet handed out, and the unstable entries after `handed`."""
        snap = None
        if self.unstable_snapshot is not None and not self.snapshot_handed:
            snap = self.unstable_snapshot
            self.snapshot_handed = True
        last = self.offset + len(self.unstable) - 1
        if self.handed >= last:
            return snap, []
        start = max(self.handed + 1, self.offset)
        out = self.unstable[start - self.offset :]
        self.handed = last
        return snap, out

    def stable_to(self, index: int) -> None:
        """Entries up to `index` are durable and match storage: drop them from the unstable
        tail (the node decides what is safe to claim; see RaftNode.persisted)."""
        if index < self.offset:
            return
        assert index <= self.handed, "only handed-out entries can be durable"
        del self.unstable[: index + 1 - self.offset]
        self.offset = index + 1

    def stable_snapshot_to(self, index: int) -> None:
        snap = self.unstable_snapshot
        if snap is not None and snap.meta.index == index:
            self.unstable_snapshot = None

    def persisted_index(self) -> int:
        """The last index known durable and part of this log (0 while a received snapshot
        is not yet durable: the old durable entries are no longer this log's)."""
        if self.unstable_snapshot is not None:
            return 0
        return self.offset - 1

    def has_next_committed(self) -> bool:
        """Does next_committed() have entries to return? Its test."""
        return self.unstable_snapshot is None and self.applied < min(
            self.committed, self.offset - 1
        )

    def next_committed(self, max_bytes: int | None) -> list[Entry]:
        """Committed, durable entries not yet handed to the application (none while a
        received snapshot is not durable: it comes first)."""
        if not self.has_next_committed():
            return []
        hi = min(self.committed, self.offset - 1)
        out = self.slice(self.applied + 1, hi + 1, max_bytes)
        assert out, "committed entries must be readable"
        return out
