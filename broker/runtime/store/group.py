"""GroupStorage: one Raft group's durable log, a LogStorage with MemoryStorage's semantics.

In memory (loaded at open, updated only once a commit is durable): the log bounds
(`offset` = first_index() - 1 and its term, `last`), the hard state, the snapshot's metadata,
the configuration history, and a byte-bounded cache of the newest entries. The cache is always
a contiguous run ending at `last` (empty, or `cache_lo .. last`); reads below it go to RocksDB
with an upper-bound iterator and are CRC-checked. Invariants, as MemoryStorage:

- entries are contiguous from first_index() to last_index();
- term(i) is defined on [first_index() - 1, last_index()];
- confs[0] is the configuration in effect at first_index() - 1 (its index is `offset`),
  followed by every CONF entry of the log in index order.

Writes: the log and the hard state change only through a WriteRound committed by the store,
which calls `on_durable_*` here once the round is durable; `create_snapshot` and `compact`
are writes of their own (ordered after every round written before them). GroupStorage reaches
its store only through `GroupBackend`, so this module imports neither the store nor the round
(see the package docstring).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

from broker.core.raft import (
    ConfState,
    Entry,
    EntryKind,
    HardState,
    InitialState,
    LogCompacted,
    LogUnavailable,
    Snapshot,
    SnapshotMeta,
)
from broker.core.raft.storage import limit_size
from broker.core.raft.types import ENTRY_OVERHEAD_BYTES, entries_size
from broker.runtime.store.codec import MemberCodec, decode_entry, index_of
from broker.runtime.store.errors import CorruptEntryError, StoreError


class GroupBackend(Protocol):
    """What a GroupStorage needs from the store that holds it (RocksStore implements it).
    The writes change no view: GroupStorage updates its own once they return. They are
    ordered after every round written before them, and need not be durable: the log they
    would shorten stays until they are."""

    @property
    def member_codec(self) -> MemberCodec:
        """The codec of configuration members, to decode CONF entries."""
        ...

    def read_log_range(self, group_id: int, lo: int, hi: int) -> Iterator[tuple[bytes, bytes]]:
        """The group's raw log records (key, value) with indexes in [lo, hi), lazily."""
        ...

    def read_snapshot_data(self, group_id: int, meta: SnapshotMeta) -> bytes:
        """The data of the group's latest snapshot (whose metadata is `meta`)."""
        ...

    def read_payload(self, segment: int, position: int, length: int) -> bytes:
        """An external entry's payload (payloads.py; fewer bytes if they are missing)."""
        ...

    def write_snapshot(self, group_id: int, meta: SnapshotMeta, data: bytes) -> None:
        """Record a snapshot the application took (metadata and data)."""
        ...

    def write_compaction(self, group_id: int, index: int, term: int, conf: ConfState) -> None:
        """Delete the log and configuration records up to `index`; the base configuration
        becomes (`index`, `term`, `conf`)."""
        ...


class GroupStorage:
    """The durable log of one Raft group inside a RocksStore (obtained from the store)."""

    __slots__ = (
        "_cache",
        "_cache_bytes",
        "_cache_limit",
        "_cache_lo",
        "_confs",
        "_deleted",
        "_hs",
        "_last",
        "_offset",
        "_offset_term",
        "_snap_meta",
        "_store",
        "group_id",
    )

    def __init__(
        self,
        store: GroupBackend,
        group_id: int,
        *,
        offset: int,
        offset_term: int,
        last: int,
        hard_state: HardState,
        snap_meta: SnapshotMeta,
        confs: list[tuple[int, ConfState]],
        cache_limit: int,
        tail: Entry | None = None,
    ) -> None:
        assert confs and confs[0][0] == offset, "confs[0] is the configuration at offset"
        self._store = store
        self.group_id = group_id
        self._offset = offset
        self._offset_term = offset_term
        self._last = last
        self._hs = hard_state
        self._snap_meta = snap_meta
        self._confs = confs
        self._cache_limit = cache_limit
        self._cache: list[Entry] = [tail] if tail is not None else []
        self._cache_lo = last + 1 - len(self._cache)
        self._cache_bytes = entries_size(self._cache)
        self._deleted = False

    def __repr__(self) -> str:
        return (
            f"GroupStorage(group={self.group_id}, first={self._offset + 1}, last={self._last}, "
            f"cached={len(self._cache)})"
        )

    # -- LogStorage ---------------------------------------------------------------------------

    def initial_state(self) -> InitialState:
        return InitialState(self._hs, list(self._confs))

    def first_index(self) -> int:
        return self._offset + 1

    def last_index(self) -> int:
        return self._last

    def term(self, index: int) -> int:
        if index < self._offset:
            raise LogCompacted(index)
        if index > self._last:
            raise LogUnavailable(index)
        if index >= self._cache_lo:
            return self._cache[index - self._cache_lo].term
        if index == self._offset:
            return self._offset_term
        entries, _ = self._read(index, index + 1, None)
        return entries[0].term

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        if lo <= self._offset:
            raise LogCompacted(lo)
        if hi > self._last + 1:
            raise LogUnavailable(hi)
        if lo >= hi:
            return []
        cache_lo = self._cache_lo
        if lo >= cache_lo:
            return limit_size(self._cache[lo - cache_lo : hi - cache_lo], max_bytes)
        mid = min(hi, cache_lo)
        out, total = self._read(lo, mid, max_bytes)
        if len(out) < mid - lo or hi <= mid:
            return out
        tail = self._cache[: hi - cache_lo]
        if max_bytes is None:
            out.extend(tail)
            return out
        for e in tail:
            total += len(e.data) + ENTRY_OVERHEAD_BYTES
            if total > max_bytes:
                break
            out.append(e)
        return out

    def snapshot(self) -> Snapshot:
        """The latest snapshot; its data is read from RocksDB on each call."""
        meta = self._snap_meta
        return Snapshot(meta, self._store.read_snapshot_data(self.group_id, meta))

    # -- the views' state (read by the store's commit planning too) ---------------------------

    @property
    def hard_state(self) -> HardState:
        return self._hs

    @property
    def snapshot_meta(self) -> SnapshotMeta:
        return self._snap_meta

    @property
    def last_conf_index(self) -> int:
        """The index of the newest configuration record: the last CONF entry's, else the
        base configuration's (first_index() - 1)."""
        return self._confs[-1][0]

    def belongs_to(self, store: object) -> bool:
        """Whether this is a live group of `store` (neither deleted nor closed with it)."""
        return self._store is store and not self._deleted

    # -- writes of their own (ordered after the rounds written before them) ---------------

    def create_snapshot(self, index: int, conf: ConfState, data: bytes) -> Snapshot:
        """Record the application's snapshot at `index` (which must be in the log).
        An older or equal index is a no-op returning the current snapshot."""
        if index <= self._snap_meta.index:
            return self.snapshot()
        if index > self._last:
            raise StoreError(f"group {self.group_id}: cannot snapshot {index} > {self._last}")
        meta = SnapshotMeta(index, self.term(index), conf)
        self._store.write_snapshot(self.group_id, meta, bytes(data))
        self._snap_meta = meta
        return Snapshot(meta, bytes(data))

    def compact(self, index: int) -> None:
        """Drop entries up to `index`, which the latest snapshot must cover (range
        deletes of the log and configuration keys, a new base configuration)."""
        if index <= self._offset:
            return
        if index > self._snap_meta.index or index > self._last:
            raise StoreError(
                f"group {self.group_id}: compact({index}) beyond the snapshot "
                f"({self._snap_meta.index}) or the log ({self._last})"
            )
        term = self.term(index)
        conf = self._confs[0][1]
        for idx, c in self._confs:
            if idx > index:
                break
            conf = c
        self._store.write_compaction(self.group_id, index, term, conf)
        self._compact_view(index, term, conf)

    # -- reads from RocksDB -------------------------------------------------------------------

    def _read(self, lo: int, hi: int, max_bytes: int | None) -> tuple[list[Entry], int]:
        """Entries [lo, hi) from RocksDB, at least one, then within max_bytes; and their
        accounted size. A missing or corrupt entry raises CorruptEntryError."""
        store = self._store
        codec = store.member_codec
        read_payload = store.read_payload
        g = self.group_id
        out: list[Entry] = []
        total = 0
        expect = lo
        for key, value in store.read_log_range(g, lo, hi):
            index = index_of(key)
            if index != expect:
                raise CorruptEntryError(g, expect, "missing")
            e = decode_entry(codec, g, index, value, read_payload)
            total += len(e.data) + ENTRY_OVERHEAD_BYTES
            if max_bytes is not None and total > max_bytes and out:
                total -= len(e.data) + ENTRY_OVERHEAD_BYTES
                return out, total
            out.append(e)
            expect += 1
        if expect < hi:
            raise CorruptEntryError(g, expect, "missing")
        return out, total

    # -- for the store: view updates, applied once a round is durable ------------------------
    # The store calls these after its commit, in the round's order, with what its planning
    # validated against these views (and kept after dropping what the snapshot covers).

    def on_durable_snapshot(self, meta: SnapshotMeta) -> None:
        """A snapshot install: it replaced the whole log (now empty, its offset meta.index)."""
        self._snap_meta = meta
        self._offset = self._last = meta.index
        self._offset_term = meta.term
        self._confs = [(meta.index, meta.conf)]
        self._cache = []
        self._cache_lo = meta.index + 1
        self._cache_bytes = 0

    def on_durable_append(self, entries: Sequence[Entry]) -> None:
        """An append replacing the suffix from entries[0].index. `entries`: non-empty,
        contiguous, the first index in (first_index() - 1, last_index() + 1]."""
        first = entries[0].index
        confs = self._confs
        while len(confs) > 1 and confs[-1][0] >= first:
            confs.pop()
        for e in entries:
            if e.kind == EntryKind.CONF:
                assert e.conf is not None
                confs.append((e.index, e.conf))
        cache = self._cache
        if first < self._cache_lo:
            self._cache = cache = list(entries)
            self._cache_lo = first
            self._cache_bytes = entries_size(cache)
        else:
            cut = first - self._cache_lo
            if cut < len(cache):
                self._cache_bytes -= entries_size(cache[cut:])
                del cache[cut:]
            cache.extend(entries)
            self._cache_bytes += entries_size(entries)
        self._last = entries[-1].index
        if self._cache_bytes > self._cache_limit and len(cache) > 1:
            self._trim_cache()

    def _trim_cache(self) -> None:
        """Drop the oldest cached entries down to 3/4 of the limit (keeping the last one)."""
        cache = self._cache
        target = self._cache_limit * 3 // 4
        size = self._cache_bytes
        drop = 0
        keep_last = len(cache) - 1
        while drop < keep_last and size > target:
            size -= len(cache[drop].data) + ENTRY_OVERHEAD_BYTES
            drop += 1
        del cache[:drop]
        self._cache_lo += drop
        self._cache_bytes = size

    def on_durable_hard_state(self, hs: HardState) -> None:
        self._hs = hs

    def detach(self) -> None:
        """The group was deleted, or its store closed: rounds naming it are refused from now
        on (see belongs_to)."""
        self._deleted = True

    def _compact_view(self, index: int, term: int, conf: ConfState) -> None:
        self._offset = index
        self._offset_term = term
        self._confs = [(index, conf), *[(i, c) for i, c in self._confs if i > index]]
        if index >= self._cache_lo:
            drop = min(index - self._cache_lo + 1, len(self._cache))
            self._cache_bytes -= entries_size(self._cache[:drop])
            del self._cache[:drop]
            self._cache_lo += drop
