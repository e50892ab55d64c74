"""The core's `GroupStore` over the RocksDB store: groups, the machines' apply states and
keyed records; and how a `Round` of the node is written there.

A machine's keyed records (the partition log's offset index: key = base offset) live in the
`offsets` column family, keyed by group and u64 key; their values are opaque here.

A round is persisted in two steps (the driver's `_round`, and tests): `round_writes(store,
rnd)` is the ONE synced WriteRound (Readies, then each machine's writes: its apply state,
its records deleted (below a key, and by key), its new records; dropped groups are deleted
on their own first); once it
is durable, `write_compactions(store, rnd)` records each snapshot the node took and compacts
the log behind it (synced writes of their own, so the apply state the round carried is on
disk before a compaction that relies on it).
"""

from __future__ import annotations

from collections.abc import Iterable

from broker.core.raft import ConfState, LogStorage
from broker.core.rounds import Round
from broker.runtime.store import RocksStore, WriteRound


class RocksGroupStore:
    """Implements broker.core.partitions.GroupStore."""

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

    def load_records(self, group_id: int) -> Iterable[tuple[int, bytes]]:
        return self.store.scan_offsets(group_id)


def round_writes(store: RocksStore, rnd: Round) -> WriteRound:
    """The round's one write. Groups the node dropped are deleted here, at once (synced)."""
    wr = WriteRound()
    for gid, rd in rnd.readies:
        wr.add_ready(store.group(gid), rd)
    for gid, w in rnd.writes:
        if w.state is not None:
            wr.put_apply(gid, w.state)
        if w.delete_below is not None:
            wr.delete_offsets_range(gid, 0, w.delete_below)
        for key in w.deleted:
            wr.delete_offsets_range(gid, key, key + 1)
        for key, value in w.records:
            wr.put_offset(gid, key, value)
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
