"""The core's `GroupStore` over the RocksDB store: groups, apply state and offset index.

The partition machine's offset index lives in the `offsets` column family: key = base offset,
value = Raft index and max timestamp (two big-endian int64).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from broker.core.raft import ConfState, LogStorage
from broker.runtime.store import RocksStore

_OFFSET_VALUE = struct.Struct(">qq")


def encode_offset_value(raft_index: int, max_timestamp: int) -> bytes:
    return _OFFSET_VALUE.pack(raft_index, max_timestamp)


class RocksGroupStore:
    """Implements broker.core.node.GroupStore."""

    def __init__(self, store: RocksStore) -> None:
        self.store = store

    def open_group(self, group_id: int, initial: ConfState | None) -> LogStorage:
        if self.store.has_group(group_id):
            return self.store.group(group_id)
        return self.store.create_group(group_id, initial)

    def has_group(self, group_id: int) -> bool:
        return self.store.has_group(group_id)

    def load_apply_state(self, group_id: int) -> bytes | None:
        return self.store.read_apply(group_id)

    def load_offsets(self, group_id: int) -> Iterable[tuple[int, int, int]]:
        for base, value in self.store.scan_offsets(group_id):
            raft_index, max_ts = _OFFSET_VALUE.unpack(value)
            yield base, raft_index, max_ts
