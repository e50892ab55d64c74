"""OffsetIndex: a partition log's accepted batches by base offset (pure), and its records.

Each accepted batch is (base offset, Raft index, max timestamp, size in bytes), ascending by
base offset; `total_bytes` is the sum of the sizes (what retention.bytes bounds). The
partition machine persists one record per batch, key = base offset, value `index_value`
(three big-endian int64); a value written before sizes were kept holds the first two only
and reads as 0 bytes (`read_index_value`).
"""

from __future__ import annotations

import bisect
import struct
from array import array
from collections.abc import Iterable

_INDEX_RECORD = struct.Struct(">qqq")
"""An offset-index record's value: (Raft index, max timestamp, batch bytes)."""
_INDEX_RECORD_V0 = struct.Struct(">qq")
"""The value before batch sizes were kept: (Raft index, max timestamp)."""


def index_value(raft_index: int, max_timestamp: int, size: int) -> bytes:
    """An offset-index record's value."""
    return _INDEX_RECORD.pack(raft_index, max_timestamp, size)


def read_index_value(value: bytes) -> tuple[int, int, int]:
    """(Raft index, max timestamp, batch bytes) of a record in either format."""
    if len(value) == _INDEX_RECORD_V0.size:
        raft_index, max_ts = _INDEX_RECORD_V0.unpack(value)
        return raft_index, max_ts, 0
    raft_index, max_ts, size = _INDEX_RECORD.unpack(value)
    return raft_index, max_ts, size


class OffsetIndex:
    """Base offset -> (Raft index, max timestamp, size in bytes) of every accepted batch,
    ascending; `total_bytes` is the sum of the sizes."""

    __slots__ = ("_bases", "_indexes", "_max_ts", "_sizes", "total_bytes")

    def __init__(self) -> None:
        self._bases = array("q")
        self._indexes = array("q")
        self._max_ts = array("q")
        self._sizes = array("q")
        self.total_bytes = 0

    def append(self, base_offset: int, raft_index: int, max_timestamp: int, size: int = 0) -> None:
        assert not self._bases or base_offset > self._bases[-1]
        self._bases.append(base_offset)
        self._indexes.append(raft_index)
        self._max_ts.append(max_timestamp)
        self._sizes.append(size)
        self.total_bytes += size

    def __len__(self) -> int:
        return len(self._bases)

    def last(self) -> tuple[int, int, int]:
        return self._bases[-1], self._indexes[-1], self._max_ts[-1]

    def position(self, offset: int) -> int:
        """Position of the batch containing `offset` (the last base <= offset), or -1."""
        return bisect.bisect_right(self._bases, offset) - 1

    def items(self, start: int = 0) -> Iterable[tuple[int, int, int]]:
        """(base offset, raft index, max timestamp) from position `start` on."""
        return zip(self._bases[start:], self._indexes[start:], self._max_ts[start:], strict=True)

    def first_at_or_after(self, timestamp: int) -> int:
        """Position of the first batch whose max timestamp >= timestamp, or -1."""
        for pos, ts in enumerate(self._max_ts):
            if ts >= timestamp:
                return pos
        return -1

    def base_at(self, position: int) -> int:
        return self._bases[position]

    def raft_index_at(self, position: int) -> int:
        return self._indexes[position]

    def max_timestamp_at(self, position: int) -> int:
        return self._max_ts[position]

    def size_at(self, position: int) -> int:
        return self._sizes[position]

    def drop_before(self, offset: int) -> None:
        """Forget every batch whose base offset is below `offset`."""
        cut = bisect.bisect_left(self._bases, offset)
        if cut:
            self.total_bytes -= sum(self._sizes[:cut])
            del self._bases[:cut]
            del self._indexes[:cut]
            del self._max_ts[:cut]
            del self._sizes[:cut]
