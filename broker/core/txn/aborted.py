"""AbortedIndex: the aborted transactions of a partition log, for read_committed fetches (pure).

Each entry is one aborted transaction that wrote data here: (producer id, the offset of its
first batch, the offset of its ABORT marker). A batch of producer P at offset o is aborted iff
an entry of P has first <= o < marker: a producer has at most one open transaction per
partition, so its ranges never overlap. The broker filters with it (lessons.md: a client that
filters aborted data itself is a silent exactly-once failure waiting to happen).

Persisted as keyed records of the partition machine, key ABORTED_KEYS + marker offset (above
every offset-index key), value (producer id, first offset).
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Iterable

ABORTED_KEYS = 1 << 62
"""Record keys at or above this are aborted transactions; below, the offset index."""
_VALUE = struct.Struct(">qq")


class AbortedIndex:
    __slots__ = ("_first", "_markers", "_pids")

    def __init__(self) -> None:
        self._markers: list[int] = []
        self._first: list[int] = []
        self._pids: list[int] = []

    def __len__(self) -> int:
        return len(self._markers)

    def add(self, pid: int, first_offset: int, marker_offset: int) -> tuple[int, bytes]:
        """Record an aborted transaction; returns its record (key, value)."""
        assert not self._markers or marker_offset > self._markers[-1]
        self._markers.append(marker_offset)
        self._first.append(first_offset)
        self._pids.append(pid)
        return ABORTED_KEYS + marker_offset, _VALUE.pack(pid, first_offset)

    def load(self, key: int, value: bytes) -> None:
        pid, first = _VALUE.unpack(value)
        self.add(pid, first, key - ABORTED_KEYS)

    def covering(self, start: int, end: int) -> dict[int, list[tuple[int, int]]]:
        """producer id -> its aborted ranges [first, marker) that overlap [start, end).
        Scans every transaction whose marker is past `start` (a long transaction's range
        may start before shorter ones that ended earlier), so a reader near the log end
        pays for few."""
        out: dict[int, list[tuple[int, int]]] = {}
        for j in range(bisect.bisect_right(self._markers, start), len(self._markers)):
            if self._first[j] < end:
                out.setdefault(self._pids[j], []).append((self._first[j], self._markers[j]))
        return out

    def drop_before(self, offset: int) -> list[int]:
        """Forget the transactions whose marker is below `offset`; their record keys."""
        cut = bisect.bisect_left(self._markers, offset)
        keys = [ABORTED_KEYS + m for m in self._markers[:cut]]
        del self._markers[:cut], self._first[:cut], self._pids[:cut]
        return keys


def is_aborted(ranges: dict[int, list[tuple[int, int]]], pid: int, offset: int) -> bool:
    return any(first <= offset < marker for first, marker in ranges.get(pid, ()))


def split_records(
    records: Iterable[tuple[int, bytes]],
) -> tuple[list[tuple[int, bytes]], list[tuple[int, bytes]]]:
    """A partition machine's records as (offset index, aborted transactions)."""
    index: list[tuple[int, bytes]] = []
    aborted: list[tuple[int, bytes]] = []
    for key, value in records:
        (aborted if key >= ABORTED_KEYS else index).append((key, value))
    return index, aborted
