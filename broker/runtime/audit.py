"""The durability audit (design.md, Data path step 4): no acknowledgement ahead of its sync.

The rule: a write is durable once it was written with sync=True, or once a flush_wal(True)
that started after the write returned has completed. Nothing is acknowledged to a client, and
no vote or append acknowledgement leaves for a peer, before that. A SIGKILL test cannot see a
missing sync (the OS keeps unsynced data across a process crash), so the store reports to this
audit and the acknowledging code asks it:

- `write_returned(seq, updates)` after each db.write returned, with a strictly increasing
  sequence and, per group it wrote, (first index it touched, last index after it, hard state);
  `first` is the lowest index the write replaced or appended (0 for a snapshot install);
- `synced(seq)` when a sync=True write returned (every write <= seq is durable);
- `flush_started()` -> token, read BEFORE flush_wal(True) begins: the writes that had
  returned then; `flush_completed(token)` once it returned. A write that returned after the
  flush started is not covered by it;
- `assert_synced(seq)`: write `seq` is durable (the store, acknowledging a round);
- `assert_durable(group, index)`: the entry now at `index` is durable: `index` is within the
  last durable write's log and no write still unsynced replaced anything at or below it
  (an entry overwritten in flight, even with the same term, is not durable: cockroach#127424);
- `assert_hard_state_durable(group, term, vote)`: a durable hard state has a higher term, or
  this term and (when `vote` is not None) this vote. Append acknowledgements pass vote=None.

Each check raises DurabilityViolation. Costs: O(groups written) per write and per sync,
O(unsynced writes) per check (usually 0 or 1).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable

from broker.core.raft import HardState

GroupUpdate = tuple[int, int | None, int | None, HardState | None]
"""(group id, first index touched or None, last index after the write or None, hard state or
None): what one write did to one group."""


class DurabilityViolation(AssertionError):
    """Something was acknowledged before the write that holds it was durable."""


class DurabilityAudit:
    __slots__ = ("_durable_hs", "_durable_last", "_pending", "_returned", "_synced", "checks")

    def __init__(self) -> None:
        self._returned = 0
        self._synced = 0
        self._pending: deque[tuple[int, dict[int, GroupUpdate]]] = deque()
        self._durable_last: dict[int, int] = {}
        self._durable_hs: dict[int, HardState] = {}
        self.checks = 0
        """How many assertions passed (a test can see that the audit really ran)."""

    @property
    def returned_seq(self) -> int:
        return self._returned

    @property
    def synced_seq(self) -> int:
        return self._synced

    def seed(self, group: int, last_index: int, hard_state: HardState) -> None:
        """What the group holds durably when the audit starts watching it."""
        self._durable_last[group] = last_index
        self._durable_hs[group] = hard_state

    def write_returned(self, seq: int, updates: Iterable[GroupUpdate]) -> None:
        if seq <= self._returned:
            raise DurabilityViolation(f"write sequence {seq} after {self._returned}")
        self._returned = seq
        by_group = {u[0]: u for u in updates}
        if by_group:
            self._pending.append((seq, by_group))

    def synced(self, seq: int) -> None:
        """Every write with sequence <= seq is durable."""
        if seq > self._returned:
            raise DurabilityViolation(f"sync claims write {seq}, only {self._returned} returned")
        if seq <= self._synced:
            return
        self._synced = seq
        pending = self._pending
        while pending and pending[0][0] <= seq:
            _, by_group = pending.popleft()
            for group, _first, last, hs in by_group.values():
                if last is not None:
                    self._durable_last[group] = last
                if hs is not None:
                    self._durable_hs[group] = hs

    def flush_started(self) -> int:
        """Call just before flush_wal(True) starts; pass the token to flush_completed."""
        return self._returned

    def flush_completed(self, token: int) -> None:
        self.synced(token)

    def assert_synced(self, seq: int) -> None:
        """Write `seq` is durable: a sync covered it."""
        if seq > self._synced:
            raise DurabilityViolation(
                f"write {seq} acknowledged, but writes are synced only up to {self._synced}"
            )
        self.checks += 1

    def assert_durable(self, group: int, index: int) -> None:
        if index <= 0:
            return
        durable = self._durable_last.get(group, 0)
        if index > durable:
            raise DurabilityViolation(
                f"group {group}: index {index} acknowledged, durable only up to {durable} "
                f"(writes returned {self._returned}, synced {self._synced})"
            )
        for seq, by_group in self._pending:
            update = by_group.get(group)
            if update is not None and update[1] is not None and update[1] <= index:
                raise DurabilityViolation(
                    f"group {group}: index {index} acknowledged, but unsynced write {seq} "
                    f"replaced the log from {update[1]} (synced {self._synced})"
                )
        self.checks += 1

    def assert_hard_state_durable(self, group: int, term: int, vote: Hashable | None) -> None:
        hs = self._durable_hs.get(group, HardState())
        if hs.term > term or (hs.term == term and (vote is None or hs.vote == vote)):
            self.checks += 1
            return
        raise DurabilityViolation(
            f"group {group}: acknowledged with term {term} vote {vote!r}, but the durable hard "
            f"state is term {hs.term} vote {hs.vote!r} (synced {self._synced})"
        )
