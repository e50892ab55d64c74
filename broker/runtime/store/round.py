"""WriteRound: everything one driver loop round must persist, across all groups.

The driver adds each group's Readies (snapshot, entries, hard state, in Ready order), the state
machines' apply state and offset-index changes, then calls `store.commit(round)` or
`await store.commit_async(round)`: one `db.write(WriteBatch)`, made durable once, after which
the groups' in-memory views show the writes. A round records operations only; keys, range
deletes and encodings are computed at commit, against the views as they are then (so a round
may be filled while the previous one is still syncing). A round is committed at most once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from broker.core.raft import Entry, HardState, Ready, Snapshot
from broker.runtime.store.errors import StoreError

if TYPE_CHECKING:
    from broker.runtime.store.group import GroupStorage

OP_SNAPSHOT = 0
OP_ENTRIES = 1
OP_HARD_STATE = 2
OP_APPLY = 3
OP_OFFSET_PUT = 4
OP_OFFSET_DELETE_RANGE = 5


class WriteRound:
    """An ordered list of writes; later operations win over earlier ones, as in a WriteBatch."""

    __slots__ = ("_committed", "entry_count", "ops")

    def __init__(self) -> None:
        self.ops: list[tuple[int, Any, Any, Any]] = []
        self.entry_count = 0
        self._committed = False

    def __len__(self) -> int:
        return len(self.ops)

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
        self.ops.append((OP_SNAPSHOT, group, snapshot, None))

    def append(self, group: GroupStorage, entries: Sequence[Entry]) -> None:
        """Append, replacing stored entries from entries[0].index on (no gap allowed)."""
        self._check()
        if entries:
            self.ops.append((OP_ENTRIES, group, entries, None))
            self.entry_count += len(entries)

    def set_hard_state(self, group: GroupStorage, hard_state: HardState) -> None:
        self._check()
        self.ops.append((OP_HARD_STATE, group, hard_state, None))

    def put_apply(self, group_id: int, state: bytes) -> None:
        """The state machine's opaque apply state for the group (replaces the previous one)."""
        self._check()
        self.ops.append((OP_APPLY, group_id, bytes(state), None))

    def put_offset(self, group_id: int, key: int, value: bytes) -> None:
        """One record of the group's offset index (opaque to the store)."""
        self._check()
        self.ops.append((OP_OFFSET_PUT, group_id, key, bytes(value)))

    def delete_offsets_range(self, group_id: int, lo: int, hi: int) -> None:
        """Delete the group's offset-index keys in [lo, hi)."""
        self._check()
        self.ops.append((OP_OFFSET_DELETE_RANGE, group_id, lo, hi))

    def _check(self) -> None:
        if self._committed:
            raise StoreError("this WriteRound was already committed; start a new one")

    def _mark_committed(self) -> None:
        self._check()
        self._committed = True
