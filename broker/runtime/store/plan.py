"""Commit pass 1: a WriteRound becomes one WriteBatch, validated against the groups' views.

`build_plan` reads the views (it never changes them) and keeps, per group touched, a Draft of
the log bounds as the round leaves them, so that several Readies of one group in one round
compose (a later append may truncate what an earlier one wrote). It decides the range
deletes: a suffix replacement deletes the group's log and configuration keys from the first
replaced index on; a snapshot install deletes all of them. `installs` lists the view updates
to apply, in order, once the batch is durable; `needs_sync` is false when the round only
moves commit indexes or writes state-machine data. On any error nothing has been written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from rocksdict import ColumnFamily, WriteBatch

from broker.core.raft import Entry, EntryKind, HardState, Snapshot, SnapshotMeta
from broker.runtime.store import codec as c
from broker.runtime.store.codec import (
    CF_APPLY,
    CF_CONFS,
    CF_LOG,
    CF_OFFSETS,
    CF_SNAPSHOTS,
    CF_STATE,
)
from broker.runtime.store.errors import StoreError
from broker.runtime.store.group import GroupStorage
from broker.runtime.store.round import (
    OP_APPLY,
    OP_ENTRIES,
    OP_HARD_STATE,
    OP_OFFSET_DELETE_RANGE,
    OP_OFFSET_PUT,
    OP_SNAPSHOT,
    WriteRound,
)

if TYPE_CHECKING:
    from broker.runtime.store.db import RocksStore


class Draft:
    """A group's log bounds as the round being planned leaves them."""

    __slots__ = ("first_touched", "group", "hs", "last", "last_conf", "offset", "snap_index")

    def __init__(self, group: GroupStorage) -> None:
        self.group = group
        self.snap_index = group._snap_meta.index
        self.offset = group._offset
        self.last = group._last
        self.last_conf = group._confs[-1][0]
        """An upper bound of the last configuration key's index."""
        self.hs: HardState | None = None
        """The hard state this round writes (None: none)."""
        self.first_touched: int | None = None
        """The lowest index this round replaces or appends (0: a snapshot; None: no log write)."""


class Plan:
    __slots__ = ("batch", "drafts", "installs", "needs_sync")

    def __init__(self, batch: WriteBatch) -> None:
        self.batch = batch
        self.drafts: dict[int, Draft] = {}
        self.installs: list[tuple[int, GroupStorage, Any]] = []
        self.needs_sync = False


def build_plan(
    rnd: WriteRound, store: RocksStore, codec: c.MemberCodec, handles: Mapping[str, ColumnFamily]
) -> Plan:
    """Validate `rnd` and build its batch. Marks the round committed (it cannot be reused).
    No local here may hold a CF handle: a traceback keeping this frame alive would keep
    RocksDB's LOCK held after close() (`handles` is the store's dict, emptied by close())."""
    store._check_writable()
    rnd._mark_committed()
    plan = Plan(WriteBatch(raw_mode=True))
    wb = plan.batch
    drafts = plan.drafts
    key2 = c.KEY2.pack
    conf_kind = EntryKind.CONF
    for op, a, b, d in rnd.ops:
        if op == OP_ENTRIES:
            group = _own(store, a)
            g = group.group_id
            draft = drafts.get(g) or drafts.setdefault(g, Draft(group))
            ents: Sequence[Entry] = b
            if ents[0].index <= draft.offset:
                ents = [e for e in ents if e.index > draft.offset]
                if not ents:
                    continue
            first = ents[0].index
            if first > draft.last + 1:
                raise StoreError(f"group {g}: append at {first} leaves a gap after {draft.last}")
            if ents[-1].index != first + len(ents) - 1:
                raise StoreError(f"group {g}: appended entries are not contiguous")
            if first <= draft.last:
                wb.delete_range(key2(g, first), c.group_end(g), handles[CF_LOG])
            if draft.last_conf >= first:
                wb.delete_range(key2(g, first), c.group_end(g), handles[CF_CONFS])
                draft.last_conf = first - 1
            for e in ents:
                wb.put(key2(g, e.index), c.encode_entry(codec, e), handles[CF_LOG])
                if e.kind == conf_kind and e.conf is not None:
                    record = c.encode_conf_record(codec, e.term, e.conf)
                    wb.put(key2(g, e.index), record, handles[CF_CONFS])
                    draft.last_conf = e.index
            draft.last = ents[-1].index
            if draft.first_touched is None or first < draft.first_touched:
                draft.first_touched = first
            plan.needs_sync = True
            plan.installs.append((OP_ENTRIES, group, ents))
        elif op == OP_HARD_STATE:
            group = _own(store, a)
            g = group.group_id
            draft = drafts.get(g) or drafts.setdefault(g, Draft(group))
            hs: HardState = b
            prev = draft.hs if draft.hs is not None else group._hs
            if hs.term != prev.term or hs.vote != prev.vote:
                plan.needs_sync = True
            wb.put(c.group_key(g), c.encode_hard_state(codec, hs), handles[CF_STATE])
            draft.hs = hs
            plan.installs.append((OP_HARD_STATE, group, hs))
        elif op == OP_SNAPSHOT:
            group = _own(store, a)
            g = group.group_id
            draft = drafts.get(g) or drafts.setdefault(g, Draft(group))
            snap: Snapshot = b
            meta = snap.meta
            if meta.index <= draft.snap_index:
                continue
            lo, hi = c.group_key(g), c.group_end(g)
            wb.delete_range(lo, hi, handles[CF_LOG])
            wb.delete_range(lo, hi, handles[CF_CONFS])
            record = c.encode_conf_record(codec, meta.term, meta.conf)
            wb.put(key2(g, meta.index), record, handles[CF_CONFS])
            put_snapshot(wb, handles[CF_SNAPSHOTS], codec, g, meta, snap.data)
            draft.snap_index = draft.offset = draft.last = draft.last_conf = meta.index
            draft.first_touched = 0
            plan.needs_sync = True
            plan.installs.append((OP_SNAPSHOT, group, meta))
        elif op == OP_APPLY:
            c.check_u64(a, "group id")
            wb.put(c.group_key(a), b, handles[CF_APPLY])
        elif op == OP_OFFSET_PUT:
            c.check_u64(a, "group id")
            c.check_u64(b, "offset key")
            wb.put(key2(a, b), d, handles[CF_OFFSETS])
        elif op == OP_OFFSET_DELETE_RANGE:
            c.check_u64(a, "group id")
            c.check_u64(b, "offset key")
            if b < d:
                end = key2(a, d) if d <= c.MAX_U64 else c.group_end(a)
                wb.delete_range(key2(a, b), end, handles[CF_OFFSETS])
    return plan


def _own(store: RocksStore, group: object) -> GroupStorage:
    if not isinstance(group, GroupStorage) or group._store is not store or group._deleted:
        raise StoreError(f"{group!r} is not a live group of this store")
    return group


def put_snapshot(
    wb: WriteBatch,
    handle: ColumnFamily,
    codec: c.MemberCodec,
    group: int,
    meta: SnapshotMeta,
    data: bytes,
) -> None:
    """Put a snapshot's metadata and data records (the metadata marks the group as existing)."""
    wb.put(c.SNAP_KEY.pack(group, c.SNAP_META), c.encode_snapshot_meta(codec, meta), handle)
    wb.put(c.SNAP_KEY.pack(group, c.SNAP_DATA), c.seal(bytes(data)), handle)
