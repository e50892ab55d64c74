"""Giving the disk back on real RocksDB files (broker/runtime/store/reclaim.py): after a
compaction or a group deletion, compacting the deleted ranges shrinks the database, and
payload segments nothing points into are deleted while the store is open; a segment an
entry still points into stays, and what the log keeps reads back after a reopen."""

from __future__ import annotations

import os
from pathlib import Path

import trio

from broker.core.raft import ConfState, Entry, EntryKind
from broker.runtime.store import RocksStore
from broker.runtime.store.payloads import SEGMENT_SUFFIX
from broker.runtime.store.reclaim import reclaim_once
from tests.support.store_helpers import append

C0 = ConfState(frozenset({(0, 1)}))
BIG = 8192


def entries(lo: int, hi: int, size: int, tag: bytes = b"e") -> list[Entry]:
    return [
        Entry(i, 1, EntryKind.NORMAL, (b"%s%d:" % (tag, i)) * (size // 8) + os.urandom(size // 2))
        for i in range(lo, hi)
    ]


def tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def segments(path: Path) -> list[str]:
    return sorted(p.name for p in (path / "payloads").glob(f"*{SEGMENT_SUFFIX}"))


def open_store(path: Path, **kw: object) -> RocksStore:
    return RocksStore.open(
        path,
        0,
        entry_cache_bytes=0,
        external_payload_bytes=BIG,
        payload_segment_bytes=64 * BIG,
        **kw,  # type: ignore[arg-type]
    )


def compact(s: RocksStore, gid: int, index: int) -> None:
    g = s.group(gid)
    g.create_snapshot(index, C0, b"state")
    g.compact(index)


def test_nothing_to_do_until_something_is_deleted(tmp_path: Path) -> None:
    with open_store(tmp_path) as s:
        append(s, s.create_group(1, C0), entries(1, 10, 100))
        assert s.take_reclaim() is None
        assert not trio.run(reclaim_once, s)


def test_a_compacted_prefix_gives_its_bytes_back(tmp_path: Path) -> None:
    with open_store(tmp_path) as s:
        g = s.create_group(1, C0)
        small = entries(1, 3001, 2000)  # below the payload threshold: in RocksDB
        for lo in range(0, 3000, 500):
            append(s, g, small[lo : lo + 500])
        before = tree_bytes(tmp_path / "db")
        assert before > 5_000_000
        compact(s, 1, 2900)
        assert trio.run(reclaim_once, s)
        assert s.reclaim_passes == 1
        after = tree_bytes(tmp_path / "db")
        assert after < before / 3, (before, after)
        assert g.entries(2901, 3001) == small[2900:]
        assert s.take_reclaim() is None  # every range was taken
    with open_store(tmp_path) as s:
        assert s.group(1).entries(2901, 3001) == small[2900:]


def test_dead_payload_segments_go_while_the_store_is_open(tmp_path: Path) -> None:
    with open_store(tmp_path) as s:
        g = s.create_group(1, C0)
        other = s.create_group(2, C0)
        big = entries(1, 301, 2 * BIG)
        for lo in range(0, 300, 20):
            append(s, g, big[lo : lo + 20])
        kept = entries(1, 4, 2 * BIG, b"k")
        append(s, other, kept)  # points into the segment being filled now
        sealed = segments(tmp_path)[:-1]
        assert len(sealed) >= 5
        before = tree_bytes(tmp_path / "payloads")
        compact(s, 1, 280)
        assert trio.run(reclaim_once, s)
        # Every sealed segment but the one holding entries 281.. is gone.
        assert s.segments_removed >= len(sealed) - 1
        assert len(segments(tmp_path)) == len(sealed) + 1 - s.segments_removed
        assert tree_bytes(tmp_path / "payloads") < before / 3
        # What the logs keep still reads back, from the segments left.
        assert g.entries(281, 301) == big[280:]
        assert other.entries(1, 4) == kept
    with open_store(tmp_path) as s:
        assert s.group(1).entries(281, 301) == big[280:]
        assert s.group(2).entries(1, 4) == kept


def test_a_deleted_group_gives_everything_back(tmp_path: Path) -> None:
    with open_store(tmp_path) as s:
        g = s.create_group(1, C0)
        for lo in range(1, 201, 50):
            append(s, g, entries(lo, lo + 50, 2 * BIG))
        append(s, s.create_group(2, C0), entries(1, 2, 100))
        before = tree_bytes(tmp_path)
        s.delete_group(1)
        assert trio.run(reclaim_once, s)
        assert tree_bytes(tmp_path) < before / 3
        assert len(s.group(2).entries(1, 2)) == 1


def test_a_live_pointer_keeps_its_segment(tmp_path: Path) -> None:
    with open_store(tmp_path) as s:
        g = s.create_group(1, C0)
        big = entries(1, 101, 2 * BIG)
        for lo in range(0, 100, 10):
            append(s, g, big[lo : lo + 10])
        first = segments(tmp_path)[0]
        compact(s, 1, 5)  # entries 6.. still point into the first segment
        work = s.take_reclaim()
        assert work is not None
        dead = s.reclaim_space(work)
        assert int(first.removesuffix(SEGMENT_SUFFIX), 16) not in dead
        s.remove_segments(dead)
        assert first in segments(tmp_path)
        assert g.entries(6, 101) == big[5:]
