"""WriteRound: everything one driver loop round must persist, across all groups.

The driver adds each group's Readies (snapshot, entries, hard state, in Ready order), the state
machines' apply state and keyed records, then calls `store.commit(round)`: one
`db.write(WriteBatch)`, made durable once, after which the groups' in-memory views show the
writes. A round records typed operations only (the `*Op` classes below, in `ops`); keys, range
deletes and encodings are computed at commit (plan.py), against the views as they are then. A
round is committed at most once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeAlias

from broker.core.raft import Entry, HardState, Ready, Snapshot
from broker.runtime.store.errors import StoreError
from broker.runtime.store.group import GroupStorage

# Plain slotted dataclasses, not frozen: a frozen dataclass's __init__ (object.__setattr__ per
# field) costs twice as much, and every loop round creates up to three operations per group.
# Nothing changes an operation once it is recorded.

# -- operations on a group's log: the store updates the group's view once they are durable ---


@dataclass(slots=True)
class SnapshotOp:
    """Install a snapshot: it replaces the group's whole log (ignored unless newer)."""

    group: GroupStorage
    snapshot: Snapshot


@dataclass(slots=True)
class EntriesOp:
    """Append, replacing the stored entries from entries[0].index on (non-empty)."""

    group: GroupStorage
    entries: Sequence[Entry]


@dataclass(slots=True)
class HardStateOp:
    group: GroupStorage
    hard_state: HardState


# -- operations on the state machines' records (opaque to the store) --------------------------


@dataclass(slots=True)
class ApplyOp:
    """The state machine's apply state for the group (replaces the previous one)."""

    group_id: int
    state: bytes


@dataclass(slots=True)
class OffsetPut:
    """One record of the group's offset index."""

    group_id: int
    key: int
    value: bytes


@dataclass(slots=True)
class OffsetDeleteRange:
    """Delete the group's offset-index keys in [lo, hi) (hi may be 2**64)."""

    group_id: int
    lo: int
    hi: int


GroupOp: TypeAlias = SnapshotOp | EntriesOp | HardStateOp
Op: TypeAlias = SnapshotOp | EntriesOp | HardStateOp | ApplyOp | OffsetPut | OffsetDeleteRange


class WriteRound:
    """An ordered list of writes; later operations win over earlier ones, as in a WriteBatch."""

    __slots__ = ("_committed", "ops")

    def __init__(self) -> None:
        self.ops: list[Op] = []
        """The operations in the order they were added (read by the store's commit)."""
        self._committed = False

    def add_ready(self, group: GroupStorage, ready: Ready) -> None:
        """A Ready's snapshot, entries (replacing the stored suffix from entries[0].index)
        and hard state, in that order."""
        if ready.snapshot is not None:
            self.apply_snapshot(group, ready.snapshot)
        if ready.entries:
            self.append(group, ready.entries)
        if ready.hard_state is not None:
            self.set_hard_state(group, ready.hard_state)

    def apply_snapshot(self, group: GroupStorage, snapshot: Snapshot) -> None:
        """Install a snapshot: it replaces the group's whole log (ignored unless newer)."""
        self._check()
        self.ops.append(SnapshotOp(group, snapshot))

    def append(self, group: GroupStorage, entries: Sequence[Entry]) -> None:
        """Append, replacing stored entries from entries[0].index on (no gap allowed)."""
        self._check()
        if entries:
            self.ops.append(EntriesOp(group, entries))

    def set_hard_state(self, group: GroupStorage, hard_state: HardState) -> None:
        self._check()
        self.ops.append(HardStateOp(group, hard_state))

    def put_apply(self, group_id: int, state: bytes) -> None:
        """The state machine's opaque apply state for the group (replaces the previous one)."""
        self._check()
        self.ops.append(ApplyOp(group_id, bytes(state)))

    def put_offset(self, group_id: int, key: int, value: bytes) -> None:
        """One record of the group's offset index (opaque to the store)."""
        self._check()
        self.ops.append(OffsetPut(group_id, key, bytes(value)))

    def delete_offsets_range(self, group_id: int, lo: int, hi: int) -> None:
        """Delete the group's offset-index keys in [lo, hi)."""
        self._check()
        self.ops.append(OffsetDeleteRange(group_id, lo, hi))

    def mark_committed(self) -> None:
        """For the store's commit: from now on the round can be neither extended nor
        committed again (StoreError)."""
        self._check()
        self._committed = True

    def _check(self) -> None:
        if self._committed:
            raise StoreError("this WriteRound was already committed; start a new one")
