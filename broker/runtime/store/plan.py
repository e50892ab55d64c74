"""Commit pass 1: a round's operations become one WriteBatch, validated against the groups' views.

`build_plan` reads the views (it never changes them) and keeps, per group touched, a Draft of
the log bounds as the round leaves them, so that several Readies of one group in one round
compose (a later append may truncate what an earlier one wrote). It decides the range
deletes: a suffix replacement deletes the group's log and configuration keys from the first
replaced index on; a snapshot install deletes all of them. `installs` lists the group
operations whose view updates the store applies, in order, once the batch is durable;
`needs_sync` is false when the round only moves commit indexes or writes state-machine data.
A group with a round written but not yet durable (pipelined commits) starts from that round's
Draft (`pending`), not from its view, so consecutive rounds compose as within one round.
On any error nothing has been written. The store checks that it is writable and marks the
round committed before it calls `build_plan`, which knows the store only as an identity (the
`owner` every group of the round must belong to) plus its codec and column families.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import assert_never

from rocksdict import ColumnFamily, WriteBatch

from broker.core.raft import Entry, EntryKind, HardState, SnapshotMeta
from broker.runtime.store import codec as c
from broker.runtime.store.codec import (
    CF_APPLY,
    CF_CONFS,
    CF_LOG,
    CF_OFFSETS,
    CF_PAYLOADS,
    CF_SNAPSHOTS,
    CF_STATE,
)
from broker.runtime.store.errors import StoreError
from broker.runtime.store.group import GroupStorage
from broker.runtime.store.payloads import PayloadSegments, StagedPayloads
from broker.runtime.store.round import (
    ApplyOp,
    EntriesOp,
    GroupOp,
    HardStateOp,
    OffsetDeleteRange,
    OffsetPut,
    Op,
    SnapshotOp,
)


class Draft:
    """A group's log bounds as the round being planned leaves them."""

    __slots__ = (
        "first_touched",
        "group",
        "hs",
        "last",
        "last_conf",
        "offset",
        "prev_hs",
        "snap_index",
    )

    def __init__(self, group: GroupStorage, written: Draft | None = None) -> None:
        """From the group's view, or from `written`: the Draft of its latest round written
        but not yet durable."""
        self.group = group
        if written is None:
            self.snap_index = group.snapshot_meta.index
            self.offset = group.first_index() - 1
            self.last = group.last_index()
            self.last_conf = group.last_conf_index
            self.prev_hs = group.hard_state
        else:
            self.snap_index = written.snap_index
            self.offset = written.offset
            self.last = written.last
            self.last_conf = written.last_conf
            self.prev_hs = written.hs if written.hs is not None else written.prev_hs
        """last_conf: an upper bound of the last configuration key's index; prev_hs: the
        hard state as the store holds it before this round."""
        self.hs: HardState | None = None
        """The hard state this round writes (None: none)."""
        self.first_touched: int | None = None
        """The lowest index this round replaces or appends (0: a snapshot; None: no log write)."""


class Plan:
    __slots__ = ("batch", "drafts", "installs", "needs_sync", "offsets_deleted_below", "payloads")

    def __init__(self, batch: WriteBatch) -> None:
        self.batch = batch
        self.payloads: StagedPayloads | None = None
        """The payloads to append to the payload segments before the batch is written."""
        self.drafts: dict[int, Draft] = {}
        self.installs: list[GroupOp] = []
        """The group operations to show in the views once durable (entries: those kept)."""
        self.needs_sync = False
        self.offsets_deleted_below: dict[int, int] = {}
        """Per group, the key below which the round deletes its offset-index records."""


def build_plan(
    ops: Sequence[Op],
    owner: object,
    codec: c.MemberCodec,
    handles: Mapping[str, ColumnFamily],
    pending: Mapping[int, Draft] | None = None,
    segments: PayloadSegments | None = None,
    external_bytes: int = 0,
) -> Plan:
    """Validate `ops` (a round's, whose groups must all be live groups of `owner`) and build
    their batch; `pending`: per group, the Draft of its latest round written but not yet
    durable. A NORMAL or NOOP entry of at least `external_bytes` (when `segments` is given)
    has its payload staged for the segments (`plan.payloads`) and a pointer in its record.
    No local here may hold a CF handle: a traceback keeping this frame alive would keep
    RocksDB's LOCK held after close() (`handles` is the store's dict, emptied by close())."""
    plan = Plan(WriteBatch(raw_mode=True))
    if segments is None or external_bytes <= 0:
        external_bytes = 1 << 62
    wb = plan.batch
    drafts = plan.drafts
    key2 = c.KEY2.pack
    conf_kind = EntryKind.CONF
    written = pending or {}

    def draft_of(group: GroupStorage) -> Draft:
        g = group.group_id
        draft = drafts.get(g)
        if draft is None:
            draft = drafts[g] = Draft(group, written.get(g))
        return draft

    for op in ops:
        # An isinstance chain, the most frequent first (measured 2x faster than `match`).
        if isinstance(op, EntriesOp):
            group = _own(owner, op.group)
            g = group.group_id
            draft = draft_of(group)
            ents: Sequence[Entry] = op.entries
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
                if len(e.data) >= external_bytes and e.kind != conf_kind:
                    assert segments is not None
                    staged = plan.payloads
                    if staged is None:
                        staged = plan.payloads = segments.stage()
                    pos = staged.add(e.data)
                    record = c.encode_external_entry(e, staged.segment, pos)
                    wb.put(key2(g, e.index), record, handles[CF_LOG])
                    wb.put(key2(staged.segment, pos), key2(g, e.index), handles[CF_PAYLOADS])
                    continue
                wb.put(key2(g, e.index), c.encode_entry(codec, e), handles[CF_LOG])
                if e.kind == conf_kind and e.conf is not None:
                    record = c.encode_conf_record(codec, e.term, e.conf)
                    wb.put(key2(g, e.index), record, handles[CF_CONFS])
                    draft.last_conf = e.index
            draft.last = ents[-1].index
            if draft.first_touched is None or first < draft.first_touched:
                draft.first_touched = first
            plan.needs_sync = True
            plan.installs.append(op if ents is op.entries else EntriesOp(group, ents))
        elif isinstance(op, HardStateOp):
            group = _own(owner, op.group)
            g = group.group_id
            draft = draft_of(group)
            hs = op.hard_state
            prev = draft.hs if draft.hs is not None else draft.prev_hs
            if hs.term != prev.term or hs.vote != prev.vote:
                plan.needs_sync = True
            wb.put(c.group_key(g), c.encode_hard_state(codec, hs), handles[CF_STATE])
            draft.hs = hs
            plan.installs.append(op)
        elif isinstance(op, ApplyOp):
            c.check_u64(op.group_id, "group id")
            wb.put(c.group_key(op.group_id), op.state, handles[CF_APPLY])
        elif isinstance(op, OffsetPut):
            c.check_u64(op.group_id, "group id")
            c.check_u64(op.key, "offset key")
            wb.put(key2(op.group_id, op.key), op.value, handles[CF_OFFSETS])
        elif isinstance(op, OffsetDeleteRange):
            a, lo, hi = op.group_id, op.lo, op.hi
            c.check_u64(a, "group id")
            c.check_u64(lo, "offset key")
            if lo < hi:
                end = key2(a, hi) if hi <= c.MAX_U64 else c.group_end(a)
                wb.delete_range(key2(a, lo), end, handles[CF_OFFSETS])
                if lo == 0 and hi <= c.MAX_U64:
                    plan.offsets_deleted_below[a] = hi
        elif isinstance(op, SnapshotOp):
            group = _own(owner, op.group)
            g = group.group_id
            draft = draft_of(group)
            meta = op.snapshot.meta
            if meta.index <= draft.snap_index:
                continue
            lo_key, hi_key = c.group_key(g), c.group_end(g)
            wb.delete_range(lo_key, hi_key, handles[CF_LOG])
            wb.delete_range(lo_key, hi_key, handles[CF_CONFS])
            record = c.encode_conf_record(codec, meta.term, meta.conf)
            wb.put(key2(g, meta.index), record, handles[CF_CONFS])
            put_snapshot(wb, handles[CF_SNAPSHOTS], codec, g, meta, op.snapshot.data)
            draft.snap_index = draft.offset = draft.last = draft.last_conf = meta.index
            draft.first_touched = 0
            plan.needs_sync = True
            plan.installs.append(op)
        else:
            assert_never(op)
    return plan


def _own(owner: object, group: object) -> GroupStorage:
    if not isinstance(group, GroupStorage) or not group.belongs_to(owner):
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
