"""Payload segments on real files: large entries' payloads outside RocksDB, and power loss.

A power loss is modelled at its worst for this layout: RocksDB's WAL survives whole (the
kernel may write it back before anything syncs it), while each segment file keeps only what
an `fdatasync` covered (`PowerLoss` records the size each sync of a segment made durable).
After it, every acknowledged entry must read back, and an entry whose payload was lost must
be gone from the log, with everything after it in its group.
"""

from __future__ import annotations

import errno
import os
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from broker.core.raft import ConfState, Entry, EntryKind, HardState, Ready
from broker.runtime.store import CorruptEntryError, RocksStore, StoreError, WriteRound
from broker.runtime.store import payloads as payloads_module
from broker.runtime.store.payloads import SEGMENT_SUFFIX
from tests.support.store_helpers import append
from tests.unit.test_store_rocks import raw_db

C0 = ConfState(frozenset({(0, 1)}))
BIG = 4096


def big(lo: int, hi: int, term: int, tag: bytes = b"") -> list[Entry]:
    """Entries whose payloads (over BIG bytes) go to the segments; each tells its index."""
    return [
        Entry(i, term, EntryKind.NORMAL, (b"%s%d:" % (tag, i)) * (BIG // (2 + len(tag)) + 8))
        for i in range(lo, hi)
    ]


def small(lo: int, hi: int, term: int) -> list[Entry]:
    return [Entry(i, term, EntryKind.NORMAL, b"small %d" % i) for i in range(lo, hi)]


def open_store(path: Path, **kw: object) -> RocksStore:
    kw.setdefault("external_payload_bytes", BIG)
    return RocksStore.open(path, 0, entry_cache_bytes=0, **kw)  # type: ignore[arg-type]


def segment_files(path: Path) -> list[Path]:
    return sorted((path / "payloads").glob(f"*{SEGMENT_SUFFIX}"))


class PowerLoss:
    """Records, per segment file, the size its last `fdatasync` made durable; `strike()`
    truncates every segment to it (the store must be closed)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, path: Path, *, honest: bool = True):
        self.path = path
        self.durable: dict[str, int] = {}
        real = os.fdatasync

        def fdatasync(fd: int) -> None:
            target = os.readlink(f"/proc/self/fd/{fd}")
            if not target.endswith(SEGMENT_SUFFIX):
                real(fd)
                return
            if honest:  # a planted fault skips the sync (and so makes nothing durable)
                real(fd)
                self.durable[target] = os.fstat(fd).st_size

        monkeypatch.setattr(payloads_module.os, "fdatasync", fdatasync)

    def strike(self) -> None:
        for seg in segment_files(self.path):
            os.truncate(seg, self.durable.get(str(seg), 0))


def acknowledged_survive(path: Path, acked: dict[int, list[Entry]]) -> None:
    """Every acknowledged entry reads back, byte for byte, after a reopen (AssertionError
    naming what was lost otherwise)."""
    try:
        with open_store(path) as s:
            for gid, entries in acked.items():
                g = s.group(gid)
                assert g.last_index() >= entries[-1].index, f"group {gid} lost acknowledged entries"
                got = g.entries(entries[0].index, entries[-1].index + 1)
                assert [(e.index, e.term, e.data) for e in got] == [
                    (e.index, e.term, e.data) for e in entries
                ]
    except CorruptEntryError as exc:
        raise AssertionError(f"lost acknowledged entries: {exc}") from exc


def sync_and_ack(s: RocksStore, *written: object) -> None:
    token = s.flush_token()
    s.sync_wal()
    s.wal_synced(token)
    for w in written:
        s.acknowledge(w)  # type: ignore[arg-type]


# -- layout -----------------------------------------------------------------------------------


def test_large_payloads_go_to_segments_and_small_ones_stay_in_rocksdb(tmp_path: Path) -> None:
    conf_payload = b"c" * (2 * BIG)
    entries = [*big(1, 3, 1), *small(3, 5, 1), Entry(5, 1, EntryKind.CONF, conf_payload, C0)]
    with open_store(tmp_path) as s:
        g = s.create_group(1, C0)
        append(s, g, entries)
        assert g.entries(1, 6) == entries  # from RocksDB and the segment (no cache)
    (seg,) = segment_files(tmp_path)
    assert seg.stat().st_size == sum(len(e.data) for e in entries[:2])
    assert seg.read_bytes() == entries[0].data + entries[1].data
    with raw_db(tmp_path) as views:
        sizes = {i: len(views["raft_log"][struct.pack(">QQ", 1, i)]) for i in range(1, 6)}
        pointers = list(views["payloads"].keys())
        del views
    assert sizes[1] == sizes[2] == 13 + 20  # a pointer, not the payload
    assert sizes[3] == 13 + len(b"small 3") and sizes[5] > 2 * BIG  # CONF entries stay whole
    assert len(pointers) == 2
    with open_store(tmp_path) as s:
        assert s.group(1).entries(1, 6) == entries


def test_zero_keeps_every_payload_in_rocksdb(tmp_path: Path) -> None:
    with open_store(tmp_path, external_payload_bytes=0) as s:
        g = s.create_group(1, C0)
        append(s, g, big(1, 4, 1))
        assert g.entries(1, 4) == big(1, 4, 1)
    assert all(seg.stat().st_size == 0 for seg in segment_files(tmp_path))


def test_a_replaced_suffix_and_a_reopen_keep_the_new_payloads(tmp_path: Path) -> None:
    with open_store(tmp_path) as s:
        g = s.create_group(1, C0)
        append(s, g, big(1, 5, 1))
        append(s, g, big(3, 6, 2, b"new"))  # a new leader's entries replace 3..4
        want = [*big(1, 3, 1), *big(3, 6, 2, b"new")]
        assert g.entries(1, 6) == want
    with open_store(tmp_path) as s:
        assert s.group(1).entries(1, 6) == want
        assert s.group(1).last_index() == 5


def test_segments_rotate_and_every_open_starts_a_new_one(tmp_path: Path) -> None:
    with open_store(tmp_path, payload_segment_bytes=3 * BIG) as s:
        g = s.create_group(1, C0)
        for i in range(1, 9):
            append(s, g, big(i, i + 1, 1))
    count = len(segment_files(tmp_path))
    assert count == 3  # a new one once a segment holds three payloads
    with open_store(tmp_path, payload_segment_bytes=3 * BIG) as s:
        g = s.group(1)
        assert g.entries(1, 9) == big(1, 9, 1)
        append(s, g, big(9, 10, 1))
        assert g.entries(9, 10) == big(9, 10, 1)
    assert len(segment_files(tmp_path)) == count + 1


def test_segments_nothing_points_into_are_deleted_at_open(tmp_path: Path) -> None:
    """Group 1's payloads fill the first segments and group 2's the next; once group 1 is
    deleted, its segments go at the next open; group 2's stay and still read."""
    with open_store(tmp_path, payload_segment_bytes=2 * BIG) as s:
        g1 = s.create_group(1, C0)
        for i in range(1, 5):
            append(s, g1, big(i, i + 1, 1, b"one"))
        g2 = s.create_group(2, C0)
        for i in range(1, 4):
            append(s, g2, big(i, i + 1, 1, b"two"))
        s.delete_group(1)
    before = {p.name for p in segment_files(tmp_path)}
    with open_store(tmp_path, payload_segment_bytes=2 * BIG) as s:
        assert s.group(2).entries(1, 4) == big(1, 4, 1, b"two")
        after = {p.name for p in segment_files(tmp_path)}
        assert len(before - after) == 2  # group 1's two full segments
        with pytest.raises(StoreError):
            s.group(1)
    with raw_db(tmp_path) as views:
        records = list(views["payloads"].keys())
        del views
    assert len(records) == 3  # group 2's only


def test_a_flipped_byte_in_a_payload_is_detected_on_read(tmp_path: Path) -> None:
    with open_store(tmp_path) as s:
        g = s.create_group(1, C0)
        append(s, g, big(1, 4, 1))
    (seg,) = segment_files(tmp_path)
    data = bytearray(seg.read_bytes())
    data[len(big(1, 2, 1)[0].data) + 5] ^= 1  # inside entry 2's payload
    seg.write_bytes(bytes(data))
    with open_store(tmp_path) as s:
        g = s.group(1)
        assert g.entries(1, 2) == big(1, 2, 1)
        with pytest.raises(CorruptEntryError, match="entry 2"):
            g.entries(2, 3)


# -- power loss -------------------------------------------------------------------------------


def write_rounds(s: RocksStore) -> dict[int, list[Entry]]:
    """Round 1 (group 1: three large entries) is synced and acknowledged; round 2 (group 1:
    two more, committed up to 5; group 2: small entries) and round 3 (group 1: a small entry
    after them) are written, never synced. Returns what was acknowledged."""
    g1, g2 = s.create_group(1, C0), s.create_group(2, C0)
    r1, r2, r3 = WriteRound(), WriteRound(), WriteRound()
    r1.add_ready(g1, Ready(1, hard_state=HardState(1, None, 3), entries=big(1, 4, 1)))
    w1 = s.write(r1)
    sync_and_ack(s, w1)
    r2.add_ready(g1, Ready(2, hard_state=HardState(1, None, 5), entries=big(4, 6, 1)))
    r2.append(g2, small(1, 3, 1))
    assert s.write(r2) is not None
    r3.append(g1, small(6, 7, 1))
    assert s.write(r3) is not None
    return {1: big(1, 4, 1)}


def test_a_power_loss_cuts_the_entries_whose_payloads_were_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    power = PowerLoss(monkeypatch, tmp_path)
    with open_store(tmp_path, durability="pipelined", audit=True) as s:
        acked = write_rounds(s)
    power.strike()
    acknowledged_survive(tmp_path, acked)
    with open_store(tmp_path, durability="pipelined") as s:
        g1 = s.group(1)
        assert g1.last_index() == 3  # 4 and 5 lost their payloads; 6 came after them
        assert g1.hard_state.commit == 3  # lowered with the log
        assert s.group(2).entries(1, 3) == small(1, 3, 1)  # its entries were whole
        append(s, g1, big(4, 6, 2, b"again"))
        assert g1.entries(4, 6) == big(4, 6, 2, b"again")
    with open_store(tmp_path) as s:
        assert s.group(1).entries(1, 6) == [*big(1, 4, 1), *big(4, 6, 2, b"again")]


@pytest.mark.parametrize("mode", ["inline", "pipelined"])
def test_every_acknowledged_payload_survives_a_power_loss(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    power = PowerLoss(monkeypatch, tmp_path)
    acked: dict[int, list[Entry]] = {1: [], 2: []}
    with open_store(tmp_path, durability=mode, payload_segment_bytes=5 * BIG) as s:
        groups = [s.create_group(1, C0), s.create_group(2, C0)]
        for i in range(1, 13):
            rnd = WriteRound()
            for g in groups:
                rnd.append(g, big(i, i + 1, 1, b"g%d-" % g.group_id))
            s.commit(rnd)  # acknowledged once it returns
            for g in groups:
                acked[g.group_id].extend(big(i, i + 1, 1, b"g%d-" % g.group_id))
        unsynced = WriteRound()
        for g in groups:
            unsynced.append(g, big(13, 14, 1))
        if mode == "pipelined":
            assert s.write(unsynced) is not None
    assert len(segment_files(tmp_path)) > 2
    power.strike()
    acknowledged_survive(tmp_path, acked)


def test_the_power_loss_check_catches_payloads_acknowledged_unsynced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Planted fault: the payload sync does nothing, so the WAL's sync acknowledges entries
    whose payloads are still only in the page cache. After a power loss they are gone, and
    the check above fails."""
    power = PowerLoss(monkeypatch, tmp_path, honest=False)
    with open_store(tmp_path, durability="pipelined") as s:
        acked = write_rounds(s)
    power.strike()
    with pytest.raises(AssertionError, match="lost acknowledged entries"):
        acknowledged_survive(tmp_path, acked)


# -- failures ---------------------------------------------------------------------------------


def failing(name: str, monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Make `os.<name>` fail with ENOSPC for segment files from now on; returns an undo."""
    real = getattr(os, name)

    def broken(fd: int, *args: object) -> object:
        if os.readlink(f"/proc/self/fd/{fd}").endswith(SEGMENT_SUFFIX):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, *args)

    monkeypatch.setattr(payloads_module.os, name, broken)
    return lambda: monkeypatch.setattr(payloads_module.os, name, real)


@pytest.mark.parametrize("call", ["pwritev", "fdatasync"])
def test_a_failed_payload_write_or_sync_fails_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, call: str
) -> None:
    with open_store(tmp_path, durability="pipelined") as s:
        g = s.create_group(1, C0)
        append(s, g, big(1, 2, 1))
        undo = failing(call, monkeypatch)
        rnd = WriteRound()
        rnd.append(g, big(2, 3, 1))
        with pytest.raises(StoreError, match="No space left"):
            s.commit(rnd)
        undo()
        again = WriteRound()
        again.append(g, small(2, 3, 1))
        with pytest.raises(StoreError, match="failed earlier"):
            s.commit(again)
        assert g.last_index() == 1  # nothing after the failure was acknowledged
    with open_store(tmp_path) as s:
        assert s.group(1).entries(1, 2) == big(1, 2, 1)
