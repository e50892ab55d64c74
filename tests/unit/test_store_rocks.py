"""RocksStore on real RocksDB files: recovery, identity, locking, corruption, key hygiene, rounds.

The LogStorage semantics themselves are in test_store_logstorage.py (shared with
MemoryStorage); this file checks what only a disk store has.
"""

from __future__ import annotations

import struct
import subprocess
import sys
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trio
from rocksdict import Options, Rdict

from broker.core.raft import (
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Ready,
    Snapshot,
    SnapshotMeta,
)
from broker.runtime.audit import DurabilityViolation
from broker.runtime.store import (
    COLUMN_FAMILIES,
    FORMAT_VERSION,
    CorruptEntryError,
    CorruptRecordError,
    GroupStorage,
    RocksStore,
    StoreClosedError,
    StoreError,
    StoreIdentityError,
    StoreLockedError,
    StoreNotFoundError,
    WriteRound,
)
from tests.support.store_helpers import append, apply_snapshot, set_hard_state

C0 = ConfState(frozenset({(0, 1), (1, 2), (2, 3)}))
C1 = ConfState(frozenset({(0, 1), (1, 2), (2, 3)}), frozenset({(3, 4)}))
REPO = Path(__file__).resolve().parents[2]


def ents(lo: int, hi: int, term: int, tag: bytes = b"") -> list[Entry]:
    return [Entry(i, term, EntryKind.NORMAL, b"%s%d" % (tag, i)) for i in range(lo, hi)]


def ready(n: int, entries: list[Entry], hs: HardState | None = None) -> Ready:
    return Ready(n, hard_state=hs, entries=entries, must_sync=bool(entries) or hs is not None)


def observe(g: GroupStorage) -> tuple[object, ...]:
    first, last = g.first_index(), g.last_index()
    return (
        first,
        last,
        g.initial_state(),
        g.snapshot(),
        [g.term(i) for i in range(first - 1, last + 1)],
        g.entries(first, last + 1),
    )


@contextmanager
def raw_db(path: Path) -> Iterator[dict[str, Rdict]]:
    """The store's database opened directly with rocksdict (the store must be closed)."""
    db = Rdict(
        str(path / "db"),
        Options(raw_mode=True),
        column_families={name: Options(raw_mode=True) for name in COLUMN_FAMILIES},
    )
    views = {name: db.get_column_family(name) for name in COLUMN_FAMILIES}
    try:
        yield views
    finally:
        for v in views.values():
            v.close()
        views.clear()
        db.close()


def raw_meta_u64(path: Path, key: bytes) -> int:
    """An identity record (a sealed u64: crc32, then the value) straight from RocksDB."""
    with raw_db(path) as views:
        value = views["meta"][key]
    assert isinstance(value, bytes) and len(value) == 12
    crc, number = struct.unpack(">IQ", value)
    assert crc == zlib.crc32(value[4:])
    return int(number)


def raw_keys(path: Path, cf: str, group: int) -> list[int]:
    """The indexes of `group`'s keys in an indexed column family, straight from RocksDB."""
    with raw_db(path) as views:
        every = views[cf].keys()
        keys = [k for k in every if isinstance(k, bytes) and k[:8] == struct.pack(">Q", group)]
        del every
    return [struct.unpack(">QQ", k)[1] for k in keys]


# -- recovery ---------------------------------------------------------------------------------


def test_reopen_recovers_everything(tmp_path: Path) -> None:
    store = RocksStore.open(tmp_path, 1, audit=True)
    a = store.create_group(10, C0)
    b = store.create_group(11, C0)
    rnd = WriteRound()
    rnd.add_ready(a, ready(1, ents(1, 6, 1, b"a"), HardState(1, (0, 1), 3)))
    rnd.add_ready(b, ready(1, ents(1, 4, 2, b"b"), HardState(2, None, 0)))
    rnd.put_apply(10, b"applied@3")
    rnd.put_offset(10, 0, b"e1")
    rnd.put_offset(10, 7, b"e4")
    store.commit(rnd)
    rnd = WriteRound()
    rnd.add_ready(a, ready(2, [Entry(6, 1, EntryKind.CONF, b"", C1), *ents(7, 9, 1, b"a")]))
    rnd.add_ready(b, ready(2, [], HardState(3, (1, 2), 3)))
    store.commit(rnd)
    a.create_snapshot(5, C0, b"state@5")
    a.compact(4)
    before = {g: observe(store.group(g)) for g in (10, 11)}
    hard = {g: store.group(g).hard_state for g in (10, 11)}
    store.close()

    store = RocksStore.open(tmp_path, 1, create_if_missing=False, audit=True)
    try:
        assert store.has_group(10) and store.has_group(11)
        assert {g: observe(store.group(g)) for g in (10, 11)} == before
        assert {g: store.group(g).hard_state for g in (10, 11)} == hard
        assert store.group(10).initial_state().confs == [(4, C0), (6, C1)]
        assert store.group(10).snapshot() == Snapshot(SnapshotMeta(5, 1, C0), b"state@5")
        assert store.read_apply(10) == b"applied@3"
        assert store.read_apply(11) is None
        assert store.scan_offsets(10) == [(0, b"e1"), (7, b"e4")]
    finally:
        store.close()


def test_the_log_grows_past_the_cache_and_reads_come_back_from_disk(tmp_path: Path) -> None:
    with RocksStore.open(tmp_path, 0, entry_cache_bytes=2000) as store:
        g = store.create_group(1, C0)
        expected = [
            Entry(i, 1 + i // 100, EntryKind.NORMAL, bytes([i % 256]) * 50) for i in range(1, 501)
        ]
        for lo in range(0, 500, 7):
            rnd = WriteRound()
            rnd.append(g, expected[lo : lo + 7])
            store.commit(rnd)
        assert g._cache_bytes <= 2000 and len(g._cache) < 30
        assert g.entries(1, 501) == expected
        assert g.entries(200, 260, max_bytes=10 * 82) == expected[199:209]
        assert g.entries(470, 501, max_bytes=25 * 82) == expected[469:494]  # disk, then cache
        assert [g.term(i) for i in (1, 99, 100, 250, 500)] == [1, 1, 2, 3, 6]


# -- identity ---------------------------------------------------------------------------------


def test_identity_is_recorded_at_creation_and_checked_at_open(tmp_path: Path) -> None:
    with RocksStore.open(tmp_path, 3, new_incarnation=lambda: 42, clock=lambda: 1234.5) as s:
        assert (s.incarnation, s.cluster_id) == (42, None)
    recorded = [raw_meta_u64(tmp_path, k) for k in (b"node_id", b"incarnation", b"created_at")]
    assert recorded == [3, 42, 1234500]  # created_at in milliseconds
    with pytest.raises(StoreIdentityError, match="belongs to node 3, but this broker is node 4"):
        RocksStore.open(tmp_path, 4)
    with RocksStore.open(tmp_path, 3, new_incarnation=lambda: 7) as s:
        assert s.incarnation == 42  # drawn only at creation


def test_incarnations_are_random_by_default(tmp_path: Path) -> None:
    incarnations = set()
    for n in range(3):
        with RocksStore.open(tmp_path / str(n), 0) as s:
            incarnations.add(s.incarnation)
    assert len(incarnations) == 3


def test_another_format_version_is_refused(tmp_path: Path) -> None:
    RocksStore.open(tmp_path, 0).close()
    body = struct.pack(">Q", FORMAT_VERSION + 1)
    with raw_db(tmp_path) as views:
        views["meta"][b"format_version"] = struct.pack(">I", zlib.crc32(body)) + body
    with pytest.raises(StoreIdentityError, match=f"format version {FORMAT_VERSION + 1}"):
        RocksStore.open(tmp_path, 0)


def test_cluster_id_is_written_once(tmp_path: Path) -> None:
    with RocksStore.open(tmp_path, 0) as s:
        s.record_cluster_id("c-1")
        s.record_cluster_id("c-1")  # the same id again: fine
        with pytest.raises(StoreIdentityError, match="belongs to cluster 'c-1'"):
            s.record_cluster_id("c-2")
    with RocksStore.open(tmp_path, 0) as s:
        assert s.cluster_id == "c-1"
        with pytest.raises(StoreIdentityError):
            s.record_cluster_id("c-2")


def test_missing_store_without_create_if_missing(tmp_path: Path) -> None:
    with pytest.raises(StoreNotFoundError):
        RocksStore.open(tmp_path / "nothing", 0, create_if_missing=False)
    assert not (tmp_path / "nothing").exists()


def test_a_database_not_created_by_sluice_is_refused(tmp_path: Path) -> None:
    opts = Options(raw_mode=True)
    opts.create_if_missing(True)
    db = Rdict(str(tmp_path / "db"), opts)
    db[b"someone"] = b"else"
    db.close()
    with pytest.raises(StoreIdentityError, match="no identity record"):
        RocksStore.open(tmp_path, 0)


# -- locking ----------------------------------------------------------------------------------


def test_a_second_open_in_the_same_process_is_refused_until_close(tmp_path: Path) -> None:
    first = RocksStore.open(tmp_path, 0)
    with pytest.raises(StoreLockedError, match="in use by another open store"):
        RocksStore.open(tmp_path, 0)
    first.create_group(1, C0)  # the refused open did not disturb the first
    first.close()
    first.close()  # idempotent
    with RocksStore.open(tmp_path, 0) as again:
        assert again.has_group(1)


def test_a_second_open_from_another_process_is_refused(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from broker.runtime.store import RocksStore, StoreLockedError\n"
        "try:\n"
        "    RocksStore.open(sys.argv[1], 0)\n"
        "except StoreLockedError as exc:\n"
        "    print(exc); sys.exit(3)\n"
    )
    with RocksStore.open(tmp_path, 0):
        proc = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert proc.returncode == 3, proc.stderr
    assert "in use by another open store" in proc.stdout


def test_close_releases_the_lock_even_after_a_refused_write(tmp_path: Path) -> None:
    store = RocksStore.open(tmp_path, 0)
    g = store.create_group(1, C0)
    try:
        append(store, g, ents(5, 6, 1))  # a gap: refused before anything is written
    except StoreError as exc:
        kept = exc  # a live traceback must not keep the database locked
    store.close()
    RocksStore.open(tmp_path, 0).close()
    assert isinstance(kept, StoreError)


# -- corruption -------------------------------------------------------------------------------


def _flip(path: Path, cf: str, key: bytes, offset: int = -1) -> None:
    with raw_db(path) as views:
        raw = views[cf][key]
        assert isinstance(raw, bytes)
        value = bytearray(raw)
        value[offset] ^= 0x40
        views[cf][key] = bytes(value)


def test_a_flipped_byte_in_an_entry_is_detected_on_read(tmp_path: Path) -> None:
    with RocksStore.open(tmp_path, 0) as s:
        append(s, s.create_group(5, C0), ents(1, 11, 1, b"payload"))
    _flip(tmp_path, "raft_log", struct.pack(">QQ", 5, 4))
    with RocksStore.open(tmp_path, 0, entry_cache_bytes=0) as s:
        g = s.group(5)
        assert [e.index for e in g.entries(1, 4)] == [1, 2, 3]
        with pytest.raises(CorruptEntryError) as info:
            g.entries(1, 11)
        assert (info.value.group, info.value.index) == (5, 4)
        with pytest.raises(CorruptEntryError):
            g.term(4)
        assert g.term(5) == 1


def test_a_corrupt_term_or_kind_is_detected_too(tmp_path: Path) -> None:
    with RocksStore.open(tmp_path, 0) as s:
        append(s, s.create_group(5, C0), ents(1, 4, 1))
    _flip(tmp_path, "raft_log", struct.pack(">QQ", 5, 2), offset=7)  # low byte of the term
    with RocksStore.open(tmp_path, 0, entry_cache_bytes=0) as s, pytest.raises(CorruptEntryError):
        s.group(5).term(2)


def test_a_corrupt_last_entry_is_detected_at_open(tmp_path: Path) -> None:
    with RocksStore.open(tmp_path, 0) as s:
        append(s, s.create_group(5, C0), ents(1, 4, 1))
    _flip(tmp_path, "raft_log", struct.pack(">QQ", 5, 3))
    with pytest.raises(CorruptEntryError, match="group 5: log entry 3") as info:
        RocksStore.open(tmp_path, 0)
    # The failed open released the database, although its traceback is still alive.
    assert info.value.__traceback__ is not None
    with raw_db(tmp_path) as views:
        assert views["raft_log"][struct.pack(">QQ", 5, 3)] is not None


def test_a_missing_entry_is_reported_as_corruption(tmp_path: Path) -> None:
    with RocksStore.open(tmp_path, 0) as s:
        append(s, s.create_group(5, C0), ents(1, 6, 1))
    with raw_db(tmp_path) as views:
        del views["raft_log"][struct.pack(">QQ", 5, 3)]
    with (
        RocksStore.open(tmp_path, 0, entry_cache_bytes=0) as s,
        pytest.raises(CorruptEntryError, match="entry 3 is corrupt \\(missing\\)"),
    ):
        s.group(5).entries(1, 6)


def test_a_corrupt_hard_state_is_detected_at_open(tmp_path: Path) -> None:
    with RocksStore.open(tmp_path, 0) as s:
        set_hard_state(s, s.create_group(5, C0), HardState(4, (1, 2), 0))
    _flip(tmp_path, "raft_state", struct.pack(">Q", 5))
    with pytest.raises(CorruptRecordError, match="group 5 hard state"):
        RocksStore.open(tmp_path, 0)


# -- key hygiene ------------------------------------------------------------------------------


def test_suffix_replacement_leaves_no_stale_keys(tmp_path: Path) -> None:
    with RocksStore.open(tmp_path, 0) as s:
        g = s.create_group(2, C0)
        other = s.create_group(3, C0)
        append(s, other, ents(1, 20, 1))
        append(s, g, [*ents(1, 6, 1), Entry(6, 1, EntryKind.CONF, b"", C1), *ents(7, 11, 1)])
        # Two Readies in one round: the second truncates what the first wrote.
        rnd = WriteRound()
        rnd.add_ready(g, ready(1, [Entry(11, 1), Entry(12, 1)]))
        rnd.add_ready(g, ready(2, ents(5, 8, 2)))
        s.commit(rnd)
        assert [g.term(i) for i in range(1, 8)] == [1, 1, 1, 1, 2, 2, 2]
        assert g.initial_state().confs == [(0, C0)]
    assert raw_keys(tmp_path, "raft_log", 2) == list(range(1, 8))
    assert raw_keys(tmp_path, "raft_confs", 2) == [0]
    assert raw_keys(tmp_path, "raft_log", 3) == list(range(1, 20))


def test_compaction_deletes_the_prefix_and_moves_the_base(tmp_path: Path) -> None:
    with RocksStore.open(tmp_path, 0) as s:
        g = s.create_group(2, C0)
        append(s, g, [*ents(1, 4, 1), Entry(4, 1, EntryKind.CONF, b"", C1), *ents(5, 10, 1)])
        g.create_snapshot(6, C1, b"s")
        g.compact(6)
    assert raw_keys(tmp_path, "raft_log", 2) == [7, 8, 9]
    assert raw_keys(tmp_path, "raft_confs", 2) == [6]
    with RocksStore.open(tmp_path, 0) as s:
        g = s.group(2)
        assert (g.first_index(), g.term(6), g.initial_state().confs) == (7, 1, [(6, C1)])


def test_installing_a_snapshot_deletes_the_whole_log(tmp_path: Path) -> None:
    with RocksStore.open(tmp_path, 0) as s:
        g = s.create_group(2, C0)
        append(s, g, [*ents(1, 3, 1), Entry(3, 1, EntryKind.CONF, b"", C1)])
        rnd = WriteRound()
        snap = Snapshot(SnapshotMeta(50, 3, C1), b"leader")
        rnd.add_ready(g, Ready(1, snapshot=snap, entries=ents(51, 53, 3), must_sync=True))
        s.commit(rnd)
    assert raw_keys(tmp_path, "raft_log", 2) == [51, 52]
    assert raw_keys(tmp_path, "raft_confs", 2) == [50]


# -- rounds -----------------------------------------------------------------------------------


def test_a_round_is_one_write_across_groups(tmp_path: Path) -> None:
    with RocksStore.open(tmp_path, 0, audit=True) as s:
        groups = [s.create_group(g, C0) for g in range(5)]
        audit = s.audit
        assert audit is not None
        before = audit.returned_seq
        rnd = WriteRound()
        for n, g in enumerate(groups):
            rnd.add_ready(g, ready(1, ents(1, 2 + n, 1), HardState(1, None, 0)))
            rnd.put_apply(g.group_id, b"x")
        s.commit(rnd)
        assert audit.returned_seq == audit.synced_seq == before + 1
        assert [g.last_index() for g in groups] == [1, 2, 3, 4, 5]


def test_a_commit_index_only_round_is_written_without_a_sync(tmp_path: Path) -> None:
    with RocksStore.open(tmp_path, 0, audit=True) as s:
        g = s.create_group(1, C0)
        append(s, g, ents(1, 3, 1))
        set_hard_state(s, g, HardState(1, None, 0))
        audit = s.audit
        assert audit is not None
        synced = audit.synced_seq
        rnd = WriteRound()
        rnd.add_ready(g, Ready(9, hard_state=HardState(1, None, 2), must_sync=False))
        rnd.put_apply(1, b"applied@2")
        s.commit(rnd)
        assert (audit.synced_seq, audit.returned_seq) == (synced, synced + 1)
        assert g.hard_state == HardState(1, None, 2)
        rnd = WriteRound()
        rnd.set_hard_state(g, HardState(2, None, 2))  # a new term must be synced
        s.commit(rnd)
        assert audit.synced_seq == synced + 2


@pytest.mark.parametrize("mode", ["inline", "pipelined"])
def test_commit_makes_the_round_durable_then_visible(tmp_path: Path, mode: str) -> None:
    with RocksStore.open(tmp_path, 0, durability=mode, audit=True) as s:  # type: ignore[arg-type]
        g = s.create_group(1, C0)
        for n in range(1, 6):
            rnd = WriteRound()
            rnd.add_ready(g, ready(n, ents(n, n + 1, 1), HardState(1, (0, 1), n - 1)))
            s.commit(rnd)
            assert g.last_index() == n
            assert s.audit is not None
            s.audit.assert_durable(1, n)
        assert s.audit is not None and s.audit.checks >= 10
        rnd = WriteRound()
        rnd.append(g, ents(6, 7, 1))
        s.commit(rnd)
        assert g.last_index() == 6


def hold_flush(s: RocksStore) -> tuple[threading.Event, threading.Event]:
    """Gate the store's WAL flush: `flushing` is set once a commit reached its flush (it is in
    flight), which then waits until `release` is set (at most 30 s)."""
    flushing, release = threading.Event(), threading.Event()
    real_flush = s.sync_wal

    def held_flush() -> None:
        flushing.set()
        release.wait(timeout=30)
        real_flush()

    s.sync_wal = held_flush  # type: ignore[method-assign]
    return flushing, release


async def test_writes_are_refused_while_a_commit_is_in_flight(tmp_path: Path) -> None:
    with RocksStore.open(tmp_path, 0, durability="pipelined") as s:
        g = s.create_group(1, C0)
        flushing, release = hold_flush(s)

        async def commit() -> None:
            rnd = WriteRound()
            rnd.append(g, ents(1, 2, 1))
            await trio.to_thread.run_sync(s.commit, rnd)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(commit)
            assert await trio.to_thread.run_sync(flushing.wait, 30)
            try:
                with pytest.raises(StoreError, match="in flight"):
                    append(s, g, ents(2, 3, 1))
                assert g.last_index() == 0  # the in-flight round is not visible yet
            finally:
                release.set()
        assert g.last_index() == 1


def test_round_misuse_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    with RocksStore.open(tmp_path, 0) as s, RocksStore.open(tmp_path / "other", 1) as t:
        g = s.create_group(1, C0)
        foreign = t.create_group(1, C0)
        rnd = WriteRound()
        rnd.append(g, ents(1, 3, 1))
        s.commit(rnd)
        with pytest.raises(StoreError, match="already committed"):
            rnd.append(g, ents(3, 4, 1))
        with pytest.raises(StoreError, match="already committed"):
            s.commit(rnd)
        bad = WriteRound()
        bad.put_apply(1, b"never")
        bad.append(g, ents(3, 4, 1))
        bad.append(foreign, ents(1, 2, 1))
        with pytest.raises(StoreError, match="not a live group of this store"):
            s.commit(bad)
        bad = WriteRound()
        bad.put_apply(1, b"never")
        bad.append(g, [Entry(3, 1), Entry(5, 1)])
        with pytest.raises(StoreError, match="not contiguous"):
            s.commit(bad)
        assert (g.last_index(), s.read_apply(1)) == (2, None)


def test_offset_index_records(tmp_path: Path) -> None:
    with RocksStore.open(tmp_path, 0) as s:
        rnd = WriteRound()
        for key in (0, 10, 20, 30, 2**64 - 1):
            rnd.put_offset(7, key, b"k%d" % key)
        rnd.put_offset(8, 5, b"other group")
        s.commit(rnd)
        assert s.scan_offsets(7, 10, 12) == [(10, b"k10")]
        assert s.scan_offsets(9) == []
        assert [k for k, _ in s.scan_offsets(7, 5, 31)] == [10, 20, 30]
        assert s.scan_offsets(7, 2**64 - 1) == [(2**64 - 1, b"k%d" % (2**64 - 1))]
        assert [k for k, _ in s.scan_offsets(7, limit=2)] == [0, 10]
        rnd = WriteRound()
        rnd.delete_offsets_range(7, 0, 20)
        rnd.delete_offsets_range(7, 30, 2**64)
        s.commit(rnd)
        assert s.scan_offsets(7) == [(20, b"k20")]
        assert s.scan_offsets(8) == [(5, b"other group")]


def test_delete_group_removes_every_record(tmp_path: Path) -> None:
    with RocksStore.open(tmp_path, 0) as s:
        g = s.create_group(4, C0)
        keep = s.create_group(5, C0)
        rnd = WriteRound()
        rnd.add_ready(g, ready(1, ents(1, 4, 1), HardState(1, None, 1)))
        rnd.add_ready(keep, ready(1, ents(1, 2, 1)))
        rnd.put_apply(4, b"a")
        rnd.put_offset(4, 1, b"o")
        s.commit(rnd)
        s.delete_group(4)
        assert (s.has_group(4), s.has_group(5)) == (False, True)
        with pytest.raises(StoreError, match="no Raft group 4"):
            s.group(4)
        with pytest.raises(StoreError, match="already exists"):
            s.create_group(5)
        rnd = WriteRound()
        with pytest.raises(StoreError, match="not a live group"):
            rnd.append(g, ents(4, 5, 1))
            s.commit(rnd)
    with RocksStore.open(tmp_path, 0) as s:
        assert (s.has_group(4), s.has_group(5)) == (False, True)
        assert (s.read_apply(4), s.scan_offsets(4)) == (None, [])
        recreated = s.create_group(4, C0)
        assert (recreated.last_index(), recreated.hard_state) == (0, HardState())
    assert raw_keys(tmp_path, "raft_log", 4) == []


def test_a_closed_store_refuses_use(tmp_path: Path) -> None:
    s = RocksStore.open(tmp_path, 0, entry_cache_bytes=0)
    g = s.create_group(1, C0)
    append(s, g, ents(1, 4, 1))
    s.close()
    with pytest.raises(StoreClosedError):
        g.entries(1, 3)
    with pytest.raises(StoreClosedError):
        s.read_apply(1)
    with pytest.raises(StoreClosedError):
        s.commit(WriteRound())
    with pytest.raises(StoreClosedError):
        s.group(1)


def test_an_empty_round_writes_nothing(tmp_path: Path) -> None:
    with RocksStore.open(tmp_path, 0, audit=True) as s:
        g = s.create_group(1, C0)
        apply_snapshot(s, g, Snapshot(SnapshotMeta(5, 1, C0), b""))
        assert s.audit is not None
        seq = s.audit.returned_seq
        s.commit(WriteRound())
        stale = WriteRound()
        stale.apply_snapshot(g, Snapshot(SnapshotMeta(3, 1, C0), b"older"))  # ignored
        s.commit(stale)
        assert s.audit.returned_seq == seq


def test_create_group_clears_leftover_records(tmp_path: Path) -> None:
    RocksStore.open(tmp_path, 0).close()
    with raw_db(tmp_path) as views:  # an interrupted deletion left log keys without a group
        views["raft_log"][struct.pack(">QQ", 9, 1)] = b"junk"
        views["apply"][struct.pack(">Q", 9)] = b"junk"
    with RocksStore.open(tmp_path, 0) as s:
        assert not s.has_group(9)  # the leftover keys do not make a group
        g = s.create_group(9, C0)
        assert (g.last_index(), s.read_apply(9)) == (0, None)
    assert raw_keys(tmp_path, "raft_log", 9) == []


async def test_close_is_refused_while_a_commit_is_in_flight(tmp_path: Path) -> None:
    s = RocksStore.open(tmp_path, 0, durability="pipelined")
    g = s.create_group(1, C0)
    flushing, release = hold_flush(s)

    async def commit() -> None:
        rnd = WriteRound()
        rnd.append(g, ents(1, 2, 1))
        await trio.to_thread.run_sync(s.commit, rnd)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(commit)
        assert await trio.to_thread.run_sync(flushing.wait, 30)
        try:
            with pytest.raises(StoreError, match="in flight"):
                s.close()
        finally:
            release.set()
    s.close()
    with pytest.raises(StoreClosedError):
        s.read_apply(1)


# -- pipelined rounds: written before the previous one is durable ---------------------------


def test_pipelined_rounds_chain_their_plans_and_show_only_once_acknowledged(
    tmp_path: Path,
) -> None:
    with RocksStore.open(tmp_path, 0, durability="pipelined", audit=True) as s:
        g = s.create_group(1, C0)
        first, second = WriteRound(), WriteRound()
        first.add_ready(g, ready(1, ents(1, 4, 1), HardState(1, (0, 1), 0)))
        w1 = s.write(first)
        second.append(g, ents(4, 6, 1))  # plans from the first round, not from the view
        w2 = s.write(second)
        assert w1 is not None and w2 is not None and w1.seq < w2.seq
        assert g.last_index() == 0  # nothing is durable yet
        token = s.flush_token()
        s.sync_wal()
        s.wal_synced(token)
        s.acknowledge(w1)
        assert g.last_index() == 3
        s.acknowledge(w2)
        assert g.last_index() == 5
        assert [e.data for e in g.entries(1, 6)] == [e.data for e in ents(1, 6, 1)]
    with RocksStore.open(tmp_path, 0) as s:
        assert s.group(1).last_index() == 5


def test_a_pipelined_round_that_replaces_an_earlier_rounds_entries(tmp_path: Path) -> None:
    """Round 2 (a new leader's entries) replaces from index 2 what round 1 wrote; round 1 is
    synced and acknowledged while round 2 is still unsynced: the audit accepts round 1's write
    (it is durable) without claiming its replaced entries, and once round 2 is durable the
    view holds the new entries."""
    with RocksStore.open(tmp_path, 0, durability="pipelined", audit=True) as s:
        g = s.create_group(1, C0)
        first, second = WriteRound(), WriteRound()
        first.append(g, ents(1, 4, 1))
        w1 = s.write(first)
        token = s.flush_token()
        second.add_ready(g, ready(2, ents(2, 3, 2, b"new"), HardState(2, None, 0)))
        w2 = s.write(second)
        assert w1 is not None and w2 is not None
        s.sync_wal()
        s.wal_synced(token)  # covers round 1 only
        s.acknowledge(w1)
        assert s.audit is not None
        with pytest.raises(DurabilityViolation, match="replaced the log from 2"):
            s.audit.assert_durable(1, 2)
        s.audit.assert_durable(1, 1)
        with pytest.raises(DurabilityViolation, match="synced only up to"):
            s.acknowledge(w2)
    with RocksStore.open(tmp_path, 0, durability="pipelined", audit=True) as s:
        g = s.group(1)
        assert g.last_index() == 2  # round 2's write reached the WAL (no crash here)
        assert g.entries(2, 3)[0].data == ents(2, 3, 2, b"new")[0].data
