"""MemoryStorage: the durable log a RaftNode reads (and the harness writes)."""

from __future__ import annotations

import pytest

from broker.core.raft import (
    ConfState,
    Entry,
    EntryKind,
    LogCompacted,
    LogUnavailable,
    MemoryStorage,
    Snapshot,
    SnapshotMeta,
)
from broker.core.raft.storage import limit_size
from broker.core.raft.types import ENTRY_OVERHEAD_BYTES

C0 = ConfState(frozenset({1, 2, 3}))
C1 = ConfState(frozenset({1, 2, 3}), frozenset({4}))
C2 = ConfState(frozenset({1, 2, 3, 4}))


def stored(terms: list[int]) -> MemoryStorage:
    st = MemoryStorage(C0)
    st.append([Entry(i, t) for i, t in enumerate(terms, 1)])
    return st


def terms_of(st: MemoryStorage) -> list[int]:
    return [st.term(i) for i in range(st.first_index(), st.last_index() + 1)]


def conf_entry(index: int, term: int, conf: ConfState) -> Entry:
    return Entry(index, term, EntryKind.CONF, b"", conf)


def test_append_truncates_the_suffix_from_the_first_new_index() -> None:
    st = stored([1, 1, 1, 1, 1])
    st.append([Entry(3, 2), Entry(4, 2)])
    assert st.last_index() == 4
    assert terms_of(st) == [1, 1, 2, 2]
    # Appending right after the end just extends.
    st.append([Entry(5, 3)])
    assert terms_of(st) == [1, 1, 2, 2, 3]


def test_append_of_entries_covered_by_the_snapshot_keeps_only_what_lies_beyond() -> None:
    st = stored([1, 1, 1, 1])
    st.create_snapshot(3, C0, b"s")
    st.compact(3)
    st.append([Entry(2, 1), Entry(3, 1), Entry(4, 2), Entry(5, 2)])
    assert (st.first_index(), st.last_index()) == (4, 5)
    assert [st.term(3), st.term(4), st.term(5)] == [1, 2, 2]


def test_term_and_entries_raise_at_the_right_bounds() -> None:
    st = stored([1, 1, 2, 2, 3, 3])
    st.create_snapshot(3, C0, b"snap")
    st.compact(3)
    assert (st.first_index(), st.last_index()) == (4, 6)
    # term() is defined on [first_index - 1, last_index].
    assert st.term(3) == 2
    assert st.term(6) == 3
    with pytest.raises(LogCompacted):
        st.term(2)
    with pytest.raises(LogUnavailable):
        st.term(7)
    # entries(lo, hi) needs first_index <= lo and hi <= last_index + 1.
    assert [e.index for e in st.entries(4, 7)] == [4, 5, 6]
    assert st.entries(5, 5) == []
    with pytest.raises(LogCompacted):
        st.entries(3, 5)
    with pytest.raises(LogUnavailable):
        st.entries(4, 8)


def test_limit_size_keeps_the_longest_prefix_but_at_least_one_entry() -> None:
    each = 10 + ENTRY_OVERHEAD_BYTES  # 42 accounted bytes per entry
    ents = [Entry(i, 1, EntryKind.NORMAL, b"x" * 10) for i in range(1, 5)]
    assert len(limit_size(ents, None)) == 4
    assert len(limit_size(ents, 0)) == 1
    assert len(limit_size(ents, each - 1)) == 1
    assert len(limit_size(ents, 2 * each)) == 2  # exactly at the limit: included
    assert len(limit_size(ents, 2 * each + 1)) == 2
    assert len(limit_size(ents, 4 * each)) == 4
    st = MemoryStorage(C0)
    st.append(ents)
    assert [e.index for e in st.entries(1, 5, max_bytes=1)] == [1]
    assert [e.index for e in st.entries(2, 5, max_bytes=2 * each)] == [2, 3]


def test_create_snapshot_then_compact_keeps_term_of_the_index_before_first() -> None:
    st = stored([1, 2, 2, 3, 3])
    snap = st.create_snapshot(4, C0, b"state@4")
    assert snap.meta == SnapshotMeta(4, 3, C0)
    assert st.snapshot() is snap
    # Snapshotting does not compact by itself.
    assert st.first_index() == 1
    st.compact(3)
    assert (st.first_index(), st.term(3)) == (4, 2)
    with pytest.raises(LogCompacted):
        st.term(2)
    st.compact(4)
    assert (st.first_index(), st.last_index(), st.term(4)) == (5, 5, 3)
    # An older snapshot request is a no-op returning the current one.
    assert st.create_snapshot(2, C0, b"old") is snap
    with pytest.raises(AssertionError):
        st.compact(5)  # not covered by the snapshot


def test_confs_history_follows_append_truncate_and_compact() -> None:
    st = MemoryStorage(C0)
    st.append([Entry(1, 1), conf_entry(2, 1, C1), Entry(3, 1), conf_entry(4, 1, C2)])
    assert st.initial_state().confs == [(0, C0), (2, C1), (4, C2)]
    # Truncating from 3 drops the configuration entry at 4.
    st.append([Entry(3, 2), Entry(4, 2)])
    assert st.initial_state().confs == [(0, C0), (2, C1)]
    # Truncating from 2 drops the one at 2 as well.
    st.append([Entry(2, 3)])
    assert st.initial_state().confs == [(0, C0)]
    st.append([conf_entry(3, 3, C1), Entry(4, 3)])
    assert st.initial_state().confs == [(0, C0), (3, C1)]
    # Compacting past a configuration entry makes it the base, at the compaction index.
    st.create_snapshot(4, C1, b"")
    st.compact(4)
    assert st.initial_state().confs == [(4, C1)]


def test_compact_before_a_conf_entry_moves_only_the_base() -> None:
    st = MemoryStorage(C0)
    st.append([Entry(1, 1), Entry(2, 1), conf_entry(3, 1, C1)])
    st.create_snapshot(2, C0, b"")
    st.compact(2)
    assert st.initial_state().confs == [(2, C0), (3, C1)]


def test_apply_snapshot_replaces_the_whole_log() -> None:
    st = stored([1, 1, 2, 2, 2])
    st.append([conf_entry(6, 2, C1)])
    snap = Snapshot(SnapshotMeta(10, 4, C2), b"leader-state")
    st.apply_snapshot(snap)
    assert st.snapshot() is snap
    assert (st.first_index(), st.last_index(), st.term(10)) == (11, 10, 4)
    assert st.entries(11, 11) == []
    assert st.initial_state().confs == [(10, C2)]
    with pytest.raises(LogCompacted):
        st.term(9)
    # An older (or equal) snapshot is ignored.
    st.apply_snapshot(Snapshot(SnapshotMeta(8, 4, C0), b"older"))
    assert st.snapshot() is snap
    # A snapshot inside the log still replaces all of it.
    st.append([Entry(11, 4), Entry(12, 4)])
    st.apply_snapshot(Snapshot(SnapshotMeta(11, 4, C2), b"newer"))
    assert (st.first_index(), st.last_index()) == (12, 11)
