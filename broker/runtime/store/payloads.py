"""PayloadSegments: append-only files holding the payloads of large log entries.

A log entry whose payload is at least the store's threshold is written twice over in RocksDB
(its WAL, then the memtable's flush and compactions): for large records that doubles the
bytes the disk takes and keeps the event loop busy copying and checksumming them under the
GIL. Such a payload is appended instead to the active segment (`<data_dir>/payloads/
<id>.seg`, raw bytes, no framing) with one `os.pwritev` per round (the GIL is released in the
syscall), and its raft_log record holds a pointer (segment, position, length) beside the
entry's CRC, which still covers term, kind and the payload (codec.py). The Raft log is still
the partition log: the pointer is part of the entry, written in the same WriteBatch.

Invariants:
- A payload is in its file (the OS's page cache) before the WriteBatch naming it is written,
  so every pointer a reader can see resolves.
- `sync()` makes every payload appended before it started durable (`fdatasync` of the active
  segment and of segments retired since the last sync; `fsync` of the directory when a
  segment was created). The store calls it BEFORE it syncs the WAL (and before any synced
  WAL write), so an acknowledged entry's payload is always durable.
- The WAL may reach the disk before the payloads it names (the kernel writes pages back when
  it likes): after a power loss a recovered entry may point at bytes that were never
  written. The store finds these at open (`RocksStore._repair_payloads`): every round
  records the last position `sync()` made durable (`durable`), and records (segment,
  position) -> (group, index) in the `payloads` column family, so only the entries beyond
  that mark are checked. None of them was acknowledged (their sync never finished).
- Positions only grow: every open starts a new segment, so a position once handed out is
  never reused, even one whose bytes were lost.

Threads: `stage`/`append`/`read` run on the store's (the loop's) thread; `sync` on the WAL
syncer's thread or the loop's (serialized by a lock). `_state` guards what both touch.
A sealed segment that no entry points into any more (its groups deleted, its entries
replaced or compacted by retention) is deleted when the store opens
(`RocksStore._reclaim_segments`) and while it runs (reclaim.py), by one rule: the search
for pointers runs after the segment was sealed (no entry can gain a pointer into it), and
the file is unlinked only after a synced write made every write the search read durable,
so no raft_log entry that survives a crash points into a deleted file.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import OrderedDict
from pathlib import Path

SEGMENT_SUFFIX = ".seg"
DEFAULT_SEGMENT_BYTES = 256 << 20
_MAX_READERS = 32
_IOV_MAX = 1024


def segment_name(segment: int) -> str:
    return f"{segment:016x}{SEGMENT_SUFFIX}"


class StagedPayloads:
    """The payloads one round appends, in order, at known positions of one segment."""

    __slots__ = ("buffers", "end", "segment", "start")

    def __init__(self, segment: int, start: int) -> None:
        self.segment = segment
        self.start = start
        self.end = start
        self.buffers: list[bytes | memoryview] = []

    def add(self, data: bytes | memoryview) -> int:
        """Stage `data`; its position in the segment."""
        pos = self.end
        self.buffers.append(data)
        self.end = pos + len(data)
        return pos


class PayloadSegments:
    """The payload segments under `directory` (created if missing). Raises OSError."""

    def __init__(self, directory: Path, segment_bytes: int = DEFAULT_SEGMENT_BYTES) -> None:
        self._dir = directory
        self._segment_bytes = max(1, segment_bytes)
        directory.mkdir(parents=True, exist_ok=True)
        self._dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        existing = self.segments()
        self._state = threading.Lock()
        self._sync_lock = threading.Lock()
        self._readers: OrderedDict[int, int] = OrderedDict()
        self._retired: list[int] = []
        self._dir_dirty = False
        self._fd = -1
        for segment in existing:  # what a killed process left in the page cache
            fd = os.open(directory / segment_name(segment), os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fdatasync(fd)
            finally:
                os.close(fd)
        self._segment = (existing[-1] + 1) if existing else 1
        self._end = 0
        self._synced_end = 0
        self.durable: tuple[int, int] = (self._segment, 0)
        """(segment, position): every payload before it is durable (set by `sync`)."""
        self._open_active()

    def segments(self) -> list[int]:
        """The ids of the segment files present, ascending."""
        ids = []
        for name in os.listdir(self._dir):
            if name.endswith(SEGMENT_SUFFIX):
                try:
                    ids.append(int(name[: -len(SEGMENT_SUFFIX)], 16))
                except ValueError:
                    continue
        return sorted(ids)

    def _open_active(self) -> None:
        path = self._dir / segment_name(self._segment)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        self._end = 0
        self._synced_end = 0
        self._dir_dirty = True

    @property
    def dirty(self) -> bool:
        """Whether something appended is not yet known durable."""
        return self._end > self._synced_end or bool(self._retired) or self._dir_dirty

    def stage(self) -> StagedPayloads:
        """A batch of payloads to append at the active segment's end (`append`)."""
        return StagedPayloads(self._segment, self._end)

    def append(self, staged: StagedPayloads) -> None:
        """Write `staged` (from the latest `stage()`) into the page cache; not durable until
        `sync`. Rotates to a new segment once the active one reaches its size."""
        if staged.segment != self._segment or staged.start != self._end:
            raise ValueError("staged payloads no longer match the active segment's end")
        buffers = staged.buffers
        pos = staged.start
        fd = self._fd
        while buffers:
            chunk = buffers[:_IOV_MAX]
            written = os.pwritev(fd, chunk, pos)
            pos += written
            buffers = _skip(buffers, written)
        with self._state:
            self._end = pos
            if pos >= self._segment_bytes:
                self._retired.append(self._fd)
                self._segment += 1
                self._open_active()

    def sync(self) -> None:
        """Make every payload appended before this call durable (any thread)."""
        with self._sync_lock:
            with self._state:
                fd, segment, end = self._fd, self._segment, self._end
                retired, self._retired = self._retired, []
                dir_dirty, self._dir_dirty = self._dir_dirty, False
            try:
                for old in retired:
                    os.fdatasync(old)
                if dir_dirty:
                    os.fsync(self._dir_fd)
                if end > self._synced_end or dir_dirty:
                    os.fdatasync(fd)
            except BaseException:
                with self._state:
                    self._retired[:0] = retired
                    self._dir_dirty = self._dir_dirty or dir_dirty
                raise
            for old in retired:
                os.close(old)
            with self._state:
                if segment == self._segment and end > self._synced_end:
                    self._synced_end = end
            self.durable = (segment, end)

    @property
    def active(self) -> int:
        """The id of the segment being appended to (every other one is sealed)."""
        return self._segment

    def remove(self, segment: int) -> None:
        """Delete a sealed segment's file (the caller checked nothing points into it)."""
        if segment == self._segment:
            raise ValueError("the active segment cannot be removed")
        fd = self._readers.pop(segment, None)
        if fd is not None:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):  # removed before a crash
            os.unlink(self._dir / segment_name(segment))
        with self._state:
            self._dir_dirty = True

    def read(self, segment: int, position: int, length: int) -> bytes:
        """The bytes at `position` of `segment` (fewer if the file is shorter; OSError if it
        is missing)."""
        fd = self._readers.get(segment)
        if fd is None:
            fd = os.open(self._dir / segment_name(segment), os.O_RDONLY | os.O_CLOEXEC)
            self._readers[segment] = fd
            if len(self._readers) > _MAX_READERS:
                os.close(self._readers.popitem(last=False)[1])
        else:
            self._readers.move_to_end(segment)
        return os.pread(fd, length, position)

    def close(self) -> None:
        """Close every file (nothing is synced: like a crash for what was not)."""
        for fd in (self._fd, *self._retired, *self._readers.values(), self._dir_fd):
            if fd >= 0:
                os.close(fd)
        self._fd = self._dir_fd = -1
        self._retired = []
        self._readers.clear()


def _skip(buffers: list[bytes | memoryview], n: int) -> list[bytes | memoryview]:
    """`buffers` without their first `n` bytes (after a short write)."""
    out = list(buffers)
    while n and out:
        first = out[0]
        if len(first) <= n:
            n -= len(first)
            out.pop(0)
        else:
            out[0] = memoryview(first)[n:]
            n = 0
    return out
