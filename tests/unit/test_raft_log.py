"""RaftLog: durable storage plus the unstable tail, as the node sees its log."""

from __future__ import annotations

import pytest

from broker.core.raft import (
    ConfState,
    Entry,
    EntryKind,
    MemoryStorage,
    Snapshot,
    SnapshotMeta,
)
from broker.core.raft.log import NO_TERM, RaftLog

CONF = ConfState(frozenset({1, 2, 3}))


def storage(terms: list[int], *, snap: tuple[int, int] | None = None) -> MemoryStorage:
    """Entries of `terms`, after an optional snapshot at (index, term)."""
    st = MemoryStorage(CONF)
    first = 1
    if snap is not None:
        st.apply_snapshot(Snapshot(SnapshotMeta(snap[0], snap[1], CONF)))
        first = snap[0] + 1
    st.append([Entry(i, t) for i, t in enumerate(terms, first)])
    return st


def ents(first: int, *terms: int) -> list[Entry]:
    return [Entry(i, t) for i, t in enumerate(terms, first)]


def ids(entries: list[Entry]) -> list[tuple[int, int]]:
    return [(e.index, e.term) for e in entries]


def test_term_is_no_term_for_compacted_and_beyond() -> None:
    log = RaftLog(storage([3, 3, 4], snap=(10, 2)), 0, 0)
    log.append(ents(14, 5, 5))
    assert [log.term(i) for i in range(9, 18)] == [NO_TERM, 2, 3, 3, 4, 5, 5, NO_TERM, NO_TERM]
    assert (log.first_index(), log.last_index(), log.last_term()) == (11, 15, 5)


@pytest.mark.parametrize(
    ("snap", "terms", "index", "term", "want"),
    [
        # Log from index 1: terms 2 2 5 5 5 at indexes 1..5.
        (None, [2, 2, 5, 5, 5], 100, 2, (100, 0)),  # beyond the log: probe there
        (None, [2, 2, 5, 5, 5], 5, 6, (5, 5)),
        (None, [2, 2, 5, 5, 5], 5, 5, (5, 5)),
        (None, [2, 2, 5, 5, 5], 5, 4, (2, 2)),
        (None, [2, 2, 5, 5, 5], 5, 2, (2, 2)),
        (None, [2, 2, 5, 5, 5], 5, 1, (0, 0)),
        (None, [2, 2, 5, 5, 5], 1, 2, (1, 2)),
        (None, [2, 2, 5, 5, 5], 1, 1, (0, 0)),
        (None, [2, 2, 5, 5, 5], 0, 0, (0, 0)),
        # Snapshot at (10, 3), then terms 3 3 4 4 4 at indexes 11..15.
        ((10, 3), [3, 3, 4, 4, 4], 30, 3, (30, 0)),
        ((10, 3), [3, 3, 4, 4, 4], 14, 9, (14, 4)),
        ((10, 3), [3, 3, 4, 4, 4], 14, 4, (14, 4)),
        ((10, 3), [3, 3, 4, 4, 4], 14, 3, (12, 3)),
        ((10, 3), [3, 3, 4, 4, 4], 14, 2, (9, 0)),  # runs into the compacted prefix
        ((10, 3), [3, 3, 4, 4, 4], 11, 5, (11, 3)),
        ((10, 3), [3, 3, 4, 4, 4], 10, 5, (10, 3)),
        ((10, 3), [3, 3, 4, 4, 4], 10, 3, (10, 3)),
        ((10, 3), [3, 3, 4, 4, 4], 10, 2, (9, 0)),
        ((10, 3), [3, 3, 4, 4, 4], 9, 2, (9, 0)),
        ((10, 3), [3, 3, 4, 4, 4], 4, 2, (4, 0)),
        ((10, 3), [3, 3, 4, 4, 4], 0, 0, (0, 0)),
    ],
)
def test_find_conflict_by_term(
    snap: tuple[int, int] | None, terms: list[int], index: int, term: int, want: tuple[int, int]
) -> None:
    log = RaftLog(storage(terms, snap=snap), 0, 0)
    assert log.find_conflict_by_term(index, term) == want


def test_append_replaces_the_unstable_tail() -> None:
    st = storage([1, 1, 1])
    log = RaftLog(st, 0, 0)
    log.append(ents(4, 1, 1, 1))
    assert (log.offset, ids(log.unstable)) == (4, [(4, 1), (5, 1), (6, 1)])
    log.append(ents(5, 2))
    assert (log.offset, ids(log.unstable)) == (4, [(4, 1), (5, 2)])
    assert log.last_index() == 5


def test_append_overwriting_stored_entries_moves_the_offset_back() -> None:
    st = storage([1, 1, 1, 1])
    log = RaftLog(st, 1, 1)
    log.append(ents(5, 1))
    log.append(ents(3, 2, 2))
    # The durable 3..4 of term 1 are shadowed until the caller's write truncates them.
    assert (log.offset, ids(log.unstable)) == (3, [(3, 2), (4, 2)])
    assert [log.term(i) for i in range(1, 6)] == [1, 1, 2, 2, NO_TERM]
    assert st.term(3) == 1
    assert ids(log.slice(1, 5) or []) == [(1, 1), (2, 1), (3, 2), (4, 2)]
    _, out = log.take_unstable()
    assert ids(out) == [(3, 2), (4, 2)]


def test_append_below_committed_asserts() -> None:
    log = RaftLog(storage([1, 1, 1]), 2, 2)
    with pytest.raises(AssertionError):
        log.append(ents(2, 2))


def test_take_unstable_hands_each_entry_out_once() -> None:
    log = RaftLog(storage([1]), 0, 0)
    log.append(ents(2, 1, 1))
    assert ids(log.take_unstable()[1]) == [(2, 1), (3, 1)]
    assert log.take_unstable() == (None, [])
    log.append(ents(4, 1))
    assert ids(log.take_unstable()[1]) == [(4, 1)]
    # Replacing an entry already handed out hands the replacement out (once).
    log.append(ents(3, 2))
    assert ids(log.take_unstable()[1]) == [(3, 2)]
    assert log.take_unstable() == (None, [])
    # A snapshot, then entries after it: the snapshot first, each once.
    snap = Snapshot(SnapshotMeta(10, 3, CONF), b"s")
    log.restore(snap)
    log.append(ents(11, 3))
    assert log.take_unstable() == (snap, [Entry(11, 3)])
    assert log.take_unstable() == (None, [])


def test_stable_to_drops_the_durable_prefix() -> None:
    log = RaftLog(storage([]), 0, 0)
    log.append(ents(1, 1, 1, 1))
    log.take_unstable()
    log.stable_to(2)
    assert (log.offset, ids(log.unstable), log.persisted_index()) == (3, [(3, 1)], 2)
    log.stable_to(1)  # already stable: no-op
    assert log.offset == 3
    log.append(ents(4, 2))  # not handed out yet: cannot be durable
    with pytest.raises(AssertionError):
        log.stable_to(4)
    log.stable_to(3)
    assert (log.offset, ids(log.unstable), log.persisted_index()) == (4, [(4, 2)], 3)


def test_next_committed_returns_only_durable_committed_entries() -> None:
    st = storage([1, 1])
    log = RaftLog(st, 0, 0)
    log.append(ents(3, 1, 1))
    log.commit_to(4)
    out = log.next_committed(None)
    assert ids(out) == [(1, 1), (2, 1)]
    log.applied = out[-1].index
    assert log.next_committed(None) == []
    _, written = log.take_unstable()
    st.append(written)
    log.stable_to(4)
    assert ids(log.next_committed(None)) == [(3, 1), (4, 1)]


def test_next_committed_waits_while_a_received_snapshot_is_not_durable() -> None:
    log = RaftLog(storage([1, 1]), 2, 0)
    log.restore(Snapshot(SnapshotMeta(10, 2, CONF)))
    assert (log.committed, log.applied, log.persisted_index()) == (10, 10, 0)
    assert log.next_committed(None) == []


def test_commit_beyond_the_last_index_asserts() -> None:
    log = RaftLog(storage([1, 1]), 0, 0)
    log.append(ents(3, 1))
    assert log.commit_to(3) is True
    assert log.commit_to(2) is False  # never goes backwards
    assert log.committed == 3
    with pytest.raises(AssertionError):
        log.commit_to(4)


@pytest.mark.parametrize(
    ("snap", "terms", "hs_commit", "applied", "want"),
    [
        # Plain restart: committed from the hard state, applied from the config.
        (None, [1] * 10, 6, 4, (6, 4)),
        # The application applied more than the durable commit recorded: both move up.
        (None, [1] * 10, 4, 7, (7, 7)),
        # Applied beyond the log is clamped to the log.
        (None, [1] * 10, 4, 12, (10, 10)),
        # A snapshot is committed and applied even if the hard state lags behind it.
        ((5, 1), [1] * 5, 3, 5, (5, 5)),
        ((5, 1), [1] * 5, 3, 0, (5, 5)),
        # The hard state's commit beyond the log is clamped.
        (None, [1] * 3, 9, 0, (3, 0)),
    ],
)
def test_initial_committed_and_applied_are_clamped(
    snap: tuple[int, int] | None,
    terms: list[int],
    hs_commit: int,
    applied: int,
    want: tuple[int, int],
) -> None:
    log = RaftLog(storage(terms, snap=snap), hs_commit, applied)
    assert (log.committed, log.applied) == want


def test_slice_across_storage_and_unstable_respects_max_bytes() -> None:
    st = MemoryStorage(CONF)
    st.append([Entry(i, 1, EntryKind.NORMAL, b"x" * 8) for i in (1, 2)])  # 40 bytes each
    log = RaftLog(st, 0, 0)
    log.append([Entry(i, 1, EntryKind.NORMAL, b"x" * 8) for i in (3, 4)])
    assert [e.index for e in log.slice(1, 5) or []] == [1, 2, 3, 4]
    assert [e.index for e in log.slice(1, 5, 120) or []] == [1, 2, 3]
    assert [e.index for e in log.slice(2, 5, 1) or []] == [2]
    assert [e.index for e in log.slice(3, 5, 1) or []] == [3]
    st.create_snapshot(1, CONF, b"")
    st.compact(1)
    assert log.slice(1, 3) is None
