"""One behavioural suite for every LogStorage: MemoryStorage and the RocksDB GroupStorage.

Each test runs against:
- `memory`: MemoryStorage, the reference;
- `rocks`: a GroupStorage with the default entry cache (written through `RocksLog`: each
  write a one-operation round);
- `rocks-nocache`: a GroupStorage whose cache keeps only the last entry (reads hit RocksDB);
- `rocks-reopen`: a GroupStorage whose store is closed and reopened after every write, so
  every observation is of what was recovered from disk.
A randomized differential test then drives MemoryStorage and each RocksDB variant with the
same operations and compares everything observable after each one.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import pytest

from broker.core.raft import (
    ConfState,
    Entry,
    EntryKind,
    HardState,
    InitialState,
    LogCompacted,
    LogUnavailable,
    MemoryStorage,
    Snapshot,
    SnapshotMeta,
)
from broker.core.raft.types import ENTRY_OVERHEAD_BYTES
from broker.runtime.store import GroupStorage, RocksStore, StoreError
from tests.support.store_helpers import RocksLog

C0 = ConfState(frozenset({1, 2, 3}))
C1 = ConfState(frozenset({1, 2, 3}), frozenset({4}))
C2 = ConfState(frozenset({1, 2, 3, 4}))
T0 = ConfState(frozenset({(0, 11), (1, 12)}), frozenset({(2, 13)}))

MISUSE = (AssertionError, StoreError)
"""MemoryStorage asserts on misuse; GroupStorage raises StoreError (and writes nothing)."""


class Storage(Protocol):
    def initial_state(self) -> InitialState: ...
    def first_index(self) -> int: ...
    def last_index(self) -> int: ...
    def term(self, index: int) -> int: ...
    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]: ...
    def snapshot(self) -> Snapshot: ...
    @property
    def hard_state(self) -> HardState: ...
    def set_hard_state(self, hs: HardState) -> None: ...
    def append(self, entries: list[Entry]) -> None: ...
    def apply_snapshot(self, snapshot: Snapshot) -> None: ...
    def create_snapshot(self, index: int, conf: ConfState, data: bytes) -> Snapshot: ...
    def compact(self, index: int) -> None: ...


class Reopening(RocksLog):
    """A RocksLog whose store is closed and reopened after every write."""

    def __init__(self, path: Path, conf: ConfState) -> None:
        self._path = path
        store = RocksStore.open(path, 0, audit=True)
        super().__init__(store, store.create_group(1, conf))

    def _reopen(self) -> None:
        self.store.close()
        self.store = RocksStore.open(self._path, 0, create_if_missing=False, audit=True)
        self.group = self.store.group(1)

    def close(self) -> None:
        self.store.close()

    def set_hard_state(self, hs: HardState) -> None:
        super().set_hard_state(hs)
        self._reopen()

    def append(self, entries: Sequence[Entry]) -> None:
        try:
            super().append(entries)
        finally:
            self._reopen()

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        super().apply_snapshot(snapshot)
        self._reopen()

    def create_snapshot(self, index: int, conf: ConfState, data: bytes) -> Snapshot:
        try:
            return super().create_snapshot(index, conf, data)
        finally:
            self._reopen()

    def compact(self, index: int) -> None:
        try:
            super().compact(index)
        finally:
            self._reopen()


KINDS = ["memory", "rocks", "rocks-nocache", "rocks-reopen"]


class Factory:
    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind = kind
        self._tmp = tmp_path
        self._n = 0
        self._closers: list[Any] = []

    def __call__(self, conf: ConfState = C0) -> Storage:
        self._n += 1
        path = self._tmp / f"s{self._n}"
        if self.kind == "memory":
            return MemoryStorage(conf)
        if self.kind == "rocks-reopen":
            r = Reopening(path, conf)
            self._closers.append(r)
            return r
        cache = 0 if self.kind == "rocks-nocache" else 1 << 20
        store = RocksStore.open(path, 0, entry_cache_bytes=cache, audit=True)
        self._closers.append(store)
        return RocksLog(store, store.create_group(1, conf))

    def close(self) -> None:
        for c in self._closers:
            c.close()


@pytest.fixture(params=KINDS)
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Factory]:
    f = Factory(request.param, tmp_path)
    yield f
    f.close()


def stored(make: Factory, terms: list[int], conf: ConfState = C0) -> Storage:
    st = make(conf)
    st.append([Entry(i, t, EntryKind.NORMAL, b"d%d" % i) for i, t in enumerate(terms, 1)])
    return st


def terms_of(st: Storage) -> list[int]:
    return [st.term(i) for i in range(st.first_index(), st.last_index() + 1)]


def conf_entry(index: int, term: int, conf: ConfState, data: bytes = b"") -> Entry:
    return Entry(index, term, EntryKind.CONF, data, conf)


def test_a_new_storage_is_empty_with_its_configuration(make: Factory) -> None:
    st = make(C1)
    assert (st.first_index(), st.last_index(), st.term(0)) == (1, 0, 0)
    assert st.initial_state() == InitialState(HardState(), [(0, C1)])
    assert st.snapshot() == Snapshot(SnapshotMeta(0, 0, C1))
    assert st.entries(1, 1) == []


def test_append_truncates_the_suffix_from_the_first_new_index(make: Factory) -> None:
    st = stored(make, [1, 1, 1, 1, 1])
    st.append([Entry(3, 2), Entry(4, 2)])
    assert st.last_index() == 4
    assert terms_of(st) == [1, 1, 2, 2]
    st.append([Entry(5, 3)])
    assert terms_of(st) == [1, 1, 2, 2, 3]
    assert [e.data for e in st.entries(1, 6)] == [b"d1", b"d2", b"", b"", b""]


def test_append_that_leaves_a_gap_is_refused(make: Factory) -> None:
    st = stored(make, [1, 1])
    with pytest.raises(MISUSE):
        st.append([Entry(4, 1)])
    assert terms_of(st) == [1, 1]


def test_append_of_entries_covered_by_the_snapshot_keeps_only_what_lies_beyond(
    make: Factory,
) -> None:
    st = stored(make, [1, 1, 1, 1])
    st.create_snapshot(3, C0, b"s")
    st.compact(3)
    st.append([Entry(2, 1), Entry(3, 1), Entry(4, 2), Entry(5, 2)])
    assert (st.first_index(), st.last_index()) == (4, 5)
    assert [st.term(3), st.term(4), st.term(5)] == [1, 2, 2]
    st.append([Entry(1, 1), Entry(2, 1)])  # wholly covered: a no-op
    assert (st.first_index(), st.last_index()) == (4, 5)


def test_term_and_entries_raise_at_the_right_bounds(make: Factory) -> None:
    st = stored(make, [1, 1, 2, 2, 3, 3])
    st.create_snapshot(3, C0, b"snap")
    st.compact(3)
    assert (st.first_index(), st.last_index()) == (4, 6)
    assert st.term(3) == 2
    assert st.term(6) == 3
    with pytest.raises(LogCompacted):
        st.term(2)
    with pytest.raises(LogUnavailable):
        st.term(7)
    assert [e.index for e in st.entries(4, 7)] == [4, 5, 6]
    assert st.entries(5, 5) == []
    with pytest.raises(LogCompacted):
        st.entries(3, 5)
    with pytest.raises(LogUnavailable):
        st.entries(4, 8)


def test_entries_respect_max_bytes_but_return_at_least_one(make: Factory) -> None:
    each = 10 + ENTRY_OVERHEAD_BYTES
    st = make()
    st.append([Entry(i, 1, EntryKind.NORMAL, b"x" * 10) for i in range(1, 9)])
    assert [e.index for e in st.entries(1, 9, max_bytes=1)] == [1]
    assert [e.index for e in st.entries(2, 9, max_bytes=2 * each)] == [2, 3]
    assert [e.index for e in st.entries(2, 9, max_bytes=2 * each + 1)] == [2, 3]
    assert [e.index for e in st.entries(1, 9, max_bytes=8 * each)] == list(range(1, 9))
    assert [e.index for e in st.entries(1, 9, max_bytes=5 * each)] == [1, 2, 3, 4, 5]
    assert [e.index for e in st.entries(6, 9, max_bytes=0)] == [6]


def test_create_snapshot_then_compact_keeps_term_of_the_index_before_first(
    make: Factory,
) -> None:
    st = stored(make, [1, 2, 2, 3, 3])
    snap = st.create_snapshot(4, C0, b"state@4")
    assert snap == Snapshot(SnapshotMeta(4, 3, C0), b"state@4")
    assert st.snapshot() == snap
    assert st.first_index() == 1  # snapshotting does not compact by itself
    st.compact(3)
    assert (st.first_index(), st.term(3)) == (4, 2)
    with pytest.raises(LogCompacted):
        st.term(2)
    st.compact(4)
    assert (st.first_index(), st.last_index(), st.term(4)) == (5, 5, 3)
    assert st.create_snapshot(2, C0, b"old") == snap  # older: returns the current one
    with pytest.raises(MISUSE):
        st.compact(5)  # not covered by the snapshot
    assert st.first_index() == 5


def test_create_snapshot_beyond_the_log_is_refused(make: Factory) -> None:
    st = stored(make, [1, 1])
    with pytest.raises(MISUSE):
        st.create_snapshot(3, C0, b"")


def test_confs_history_follows_append_truncate_and_compact(make: Factory) -> None:
    st = make()
    st.append([Entry(1, 1), conf_entry(2, 1, C1), Entry(3, 1), conf_entry(4, 1, C2)])
    assert st.initial_state().confs == [(0, C0), (2, C1), (4, C2)]
    st.append([Entry(3, 2), Entry(4, 2)])
    assert st.initial_state().confs == [(0, C0), (2, C1)]
    st.append([Entry(2, 3)])
    assert st.initial_state().confs == [(0, C0)]
    st.append([conf_entry(3, 3, C1), Entry(4, 3)])
    assert st.initial_state().confs == [(0, C0), (3, C1)]
    st.create_snapshot(4, C1, b"")
    st.compact(4)
    assert st.initial_state().confs == [(4, C1)]


def test_compact_before_a_conf_entry_moves_only_the_base(make: Factory) -> None:
    st = make()
    st.append([Entry(1, 1), Entry(2, 1), conf_entry(3, 1, C1)])
    st.create_snapshot(2, C0, b"")
    st.compact(2)
    assert st.initial_state().confs == [(2, C0), (3, C1)]


def test_conf_entries_round_trip_with_tuple_members_and_data(make: Factory) -> None:
    st = make(T0)
    st.append([conf_entry(1, 1, T0, b"ctx"), conf_entry(2, 1, C1), Entry(3, 1, EntryKind.NOOP)])
    assert st.entries(1, 4) == [
        conf_entry(1, 1, T0, b"ctx"),
        conf_entry(2, 1, C1),
        Entry(3, 1, EntryKind.NOOP),
    ]
    assert st.initial_state().confs == [(0, T0), (1, T0), (2, C1)]


def test_hard_state_round_trips_with_and_without_a_vote(make: Factory) -> None:
    st = make(T0)
    st.set_hard_state(HardState(3, (1, 12), 0))
    assert st.hard_state == HardState(3, (1, 12), 0)
    assert st.initial_state().hard_state == HardState(3, (1, 12), 0)
    st.set_hard_state(HardState(4, None, 0))
    assert st.initial_state().hard_state == HardState(4, None, 0)


def test_apply_snapshot_replaces_the_whole_log(make: Factory) -> None:
    st = stored(make, [1, 1, 2, 2, 2])
    st.append([conf_entry(6, 2, C1)])
    snap = Snapshot(SnapshotMeta(10, 4, C2), b"leader-state")
    st.apply_snapshot(snap)
    assert st.snapshot() == snap
    assert (st.first_index(), st.last_index(), st.term(10)) == (11, 10, 4)
    assert st.entries(11, 11) == []
    assert st.initial_state().confs == [(10, C2)]
    with pytest.raises(LogCompacted):
        st.term(9)
    st.apply_snapshot(Snapshot(SnapshotMeta(8, 4, C0), b"older"))
    assert st.snapshot() == snap
    st.append([Entry(11, 4), Entry(12, 4)])
    st.apply_snapshot(Snapshot(SnapshotMeta(11, 4, C2), b"newer"))
    assert (st.first_index(), st.last_index()) == (12, 11)
    assert st.snapshot().data == b"newer"


# -- randomized differential test -------------------------------------------------------------


def observe(st: Storage) -> tuple[object, ...]:
    """Everything a RaftNode (or the harness) can see of a storage."""
    first, last = st.first_index(), st.last_index()
    return (
        first,
        last,
        st.initial_state(),
        st.snapshot(),
        st.hard_state,
        [st.term(i) for i in range(first - 1, last + 1)],
        st.entries(first, last + 1),
    )


def random_ops(rng: random.Random, ref: MemoryStorage, n: int) -> Iterator[tuple[str, Any]]:
    """Operations valid for `ref` (the caller applies each before asking for the next)."""
    term = 1
    confs = [C0, C1, C2, T0]
    for _ in range(n):
        first, last = ref.first_index(), ref.last_index()
        roll = rng.random()
        if roll < 0.55:
            lo = rng.randint(max(1, first - 2), last + 1)
            term += rng.random() < 0.3
            ents = []
            for i in range(lo, lo + rng.randint(1, 6)):
                if rng.random() < 0.15:
                    ents.append(conf_entry(i, term, rng.choice(confs)))
                else:
                    ents.append(Entry(i, term, EntryKind.NORMAL, rng.randbytes(rng.randint(0, 40))))
            yield "append", ents
        elif roll < 0.7:
            yield "hard_state", HardState(term, rng.choice([None, 1, 2]), rng.randint(0, last))
        elif roll < 0.82 and last >= first:
            index = rng.randint(first, last)  # at or below the snapshot: a no-op
            yield "create_snapshot", (index, rng.choice(confs), rng.randbytes(8))
        elif roll < 0.92:
            top = min(ref.snapshot().meta.index, last)
            if top >= first:
                yield "compact", rng.randint(first, top)
        else:
            index = last + rng.randint(-2, 5)
            term += 1
            yield "apply_snapshot", Snapshot(SnapshotMeta(index, term, rng.choice(confs)), b"s")


def apply_op(st: Storage, op: str, arg: Any) -> None:
    if op == "append":
        st.append(arg)
    elif op == "hard_state":
        st.set_hard_state(arg)
    elif op == "create_snapshot":
        st.create_snapshot(*arg)
    elif op == "compact":
        st.compact(arg)
    else:
        st.apply_snapshot(arg)


DIFFERENTIAL = [(k, seed) for k in ("rocks", "rocks-nocache") for seed in range(6)] + [
    ("rocks-reopen", seed) for seed in range(3)
]


@pytest.mark.parametrize(("kind", "seed"), DIFFERENTIAL)
def test_random_operations_match_memory_storage(tmp_path: Path, kind: str, seed: int) -> None:
    rng = random.Random(seed)
    ref = MemoryStorage(C0)
    make = Factory(kind, tmp_path)
    st = make(C0)
    try:
        for op, arg in random_ops(rng, ref, 60 if kind == "rocks-reopen" else 150):
            apply_op(ref, op, arg)
            apply_op(st, op, arg)
            assert observe(st) == observe(ref), (op, arg)
            first, last = ref.first_index(), ref.last_index()
            if last >= first:
                lo = rng.randint(first, last)
                hi = rng.randint(lo, last + 1)
                budget = rng.choice([None, 0, 50, 200])
                assert st.entries(lo, hi, budget) == ref.entries(lo, hi, budget)
    finally:
        make.close()


def test_group_storage_is_a_log_storage(tmp_path: Path) -> None:
    with RocksStore.open(tmp_path / "s", 0) as store:
        g: GroupStorage = store.create_group(3, C0)
        from broker.core.raft import LogStorage

        view: LogStorage = g
        assert view.last_index() == 0
