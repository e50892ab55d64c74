"""The core's `GroupStore` over the RocksDB store: groups, apply state and offset index; and
how a `Round` of the node is written there.

The partition machine's offset index lives in the `offsets` column family: key = base offset,
value = Raft index and max timestamp (two big-endian int64).

A round is persisted in two steps (the driver's `_round`, and tests): `round_writes(store,
rnd)` is the ONE synced WriteRound (Readies, apply states, offset-index records deleted below
a moved log start then the new ones; dropped groups are deleted on their own first); once it
is durable, `write_compactions(store, rnd)` records each snapshot the node took and compacts
the log behind it (synced writes of their own, so the apply state the round carried is on
disk before a compaction that relies on it).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from broker.core.node import Round
from broker.core.raft import ConfState, LogStorage
from broker.runtime.store import RocksStore, WriteRound

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


def round_writes(store: RocksStore, rnd: Round) -> WriteRound:
    """The round's one write. Groups the node dropped are deleted here, at once (synced)."""
    wr = WriteRound()
    for gid, rd in rnd.readies:
        wr.add_ready(store.group(gid), rd)
    for gid, state in rnd.apply_states:
        wr.put_apply(gid, state)
    for gid, start in rnd.log_starts:
        wr.delete_offsets_range(gid, 0, start)
    for gid, base, raft_index, max_ts in rnd.new_offsets:
        wr.put_offset(gid, base, encode_offset_value(raft_index, max_ts))
    for gid in rnd.dropped_groups:
        if store.has_group(gid):
            store.delete_group(gid)
    return wr


def write_compactions(store: RocksStore, rnd: Round) -> None:
    """After the round's write is durable: each snapshot, then the compaction behind it."""
    for c in rnd.compactions:
        if store.has_group(c.group_id):
            group = store.group(c.group_id)
            group.create_snapshot(c.index, c.conf, c.data)
            group.compact(c.compact_to)
