"""What a leader knows of each follower's log, and the flow control of its pipeline.

States (etcd's tracker): PROBE sends one AppendEntries at a time until the follower's match
is found; REPLICATE streams optimistically, bounded by `Inflights` (messages and bytes);
SNAPSHOT sends a snapshot in chunks and appends nothing until the follower has it. A follower
that refuses the snapshot goes back to PROBE, paused for a while (`snapshot_refused`).
"""

from __future__ import annotations

from collections import deque
from enum import IntEnum

from broker.core.raft.types import Snapshot


class ProgressState(IntEnum):
    PROBE = 0
    REPLICATE = 1
    SNAPSHOT = 2


class Inflights:
    """AppendEntries sent but not yet acknowledged: (last index, bytes), bounded both ways."""

    __slots__ = ("_bytes", "_items", "max_bytes", "max_count")

    def __init__(self, max_count: int, max_bytes: int) -> None:
        self.max_count = max_count
        self.max_bytes = max_bytes
        self._items: deque[tuple[int, int]] = deque()
        self._bytes = 0

    def add(self, last_index: int, nbytes: int) -> None:
        assert not self.full(), "inflights full"
        self._items.append((last_index, nbytes))
        self._bytes += nbytes

    def free_le(self, index: int) -> None:
        """Release every message whose last index is <= index (acknowledged)."""
        items = self._items
        while items and items[0][0] <= index:
            self._bytes -= items.popleft()[1]

    def free_first(self) -> None:
        if self._items:
            self._bytes -= self._items.popleft()[1]

    def full(self) -> bool:
        return len(self._items) >= self.max_count or self._bytes >= self.max_bytes

    def reset(self) -> None:
        self._items.clear()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def bytes(self) -> int:
        return self._bytes


class Progress:
    __slots__ = (
        "idle_ticks",
        "inflights",
        "match",
        "next",
        "pause_ticks",
        "probe_sent",
        "recent_active",
        "snapshot",
        "snapshot_idle",
        "snapshot_offset",
        "snapshot_refusals",
        "state",
    )

    def __init__(self, next_index: int, max_inflight: int, max_inflight_bytes: int) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.recent_active = False
        self.idle_ticks = 0
        """Leader ticks since this follower last answered anything (an append, heartbeat or
        snapshot response). Not a Raft rule: the broker reports a replica caught up only if
        it answered within an election timeout (`BrokerNode._replica_lag`)."""
        self.inflights = Inflights(max_inflight, max_inflight_bytes)
        self.snapshot: Snapshot | None = None
        self.snapshot_offset = 0
        self.snapshot_idle = 0
        self.pause_ticks = 0
        """Leader ticks left before probing again after a refused snapshot."""
        self.snapshot_refusals = 0
        """Snapshots refused in a row, without progress since (the pause doubles each time)."""

    def _reset(self, state: ProgressState) -> None:
        self.state = state
        self.probe_sent = False
        self.snapshot = None
        self.snapshot_offset = 0
        self.snapshot_idle = 0
        self.pause_ticks = 0
        self.inflights.reset()

    def become_probe(self) -> None:
        if self.state == ProgressState.SNAPSHOT and self.snapshot is not None:
            pending = self.snapshot.meta.index
            self._reset(ProgressState.PROBE)
            self.next = max(self.match + 1, pending + 1)
        else:
            self._reset(ProgressState.PROBE)
            self.next = self.match + 1

    def become_replicate(self) -> None:
        self._reset(ProgressState.REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, snapshot: Snapshot) -> None:
        self._reset(ProgressState.SNAPSHOT)
        self.snapshot = snapshot

    def snapshot_refused(self, pause_ticks: int) -> None:
        """The follower will not take the snapshot: drop it (freeing the memory it held) and
        probe again from match + 1, but only after `pause_ticks` leader ticks (etcd's
        ReportSnapshot failure, which also falls back to probing)."""
        self._reset(ProgressState.PROBE)
        self.next = self.match + 1
        self.pause_ticks = pause_ticks
        self.snapshot_refusals += 1

    def maybe_update(self, index: int) -> bool:
        """An acknowledgement up to `index`: True if match advanced."""
        updated = False
        if index > self.match:
            self.match = index
            updated = True
            self.probe_sent = False
            self.snapshot_refusals = 0
        if self.next < index + 1:
            self.next = index + 1
        return updated

    def maybe_decr_to(self, rejected: int, match_hint: int) -> bool:
        """A rejection of prev_index `rejected`; False if it is stale."""
        if self.state == ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        self.probe_sent = False
        return True

    def is_paused(self) -> bool:
        if self.state == ProgressState.PROBE:
            return self.probe_sent or self.pause_ticks > 0
        if self.state == ProgressState.REPLICATE:
            return self.inflights.full()
        return True


def quorum_index(matches: list[int]) -> int:
    """The largest index held by a majority, given the match index of every voter."""
    if not matches:
        return 0
    s = sorted(matches, reverse=True)
    return s[len(s) // 2]


class CatchUpBudget:
    """Bytes of AppendEntries that leaders may send to followers lacking committed entries
    (a replica catching up after being down), shared by every group of one broker and
    refilled by its owner once per tick. Invariant: a group sends catch-up entries only while
    `available > 0`; one message may overdraw by less than one entry (at least one entry
    always goes), and the overdraft is repaid by later refills."""

    __slots__ = ("available", "burst", "burst_ticks", "per_tick")

    def __init__(self, bytes_per_tick: int, burst_ticks: int = 4) -> None:
        if bytes_per_tick < 1 or burst_ticks < 1:
            raise ValueError("need bytes_per_tick >= 1 and burst_ticks >= 1")
        self.burst_ticks = burst_ticks
        self.per_tick = bytes_per_tick
        self.burst = bytes_per_tick * burst_ticks
        self.available = self.burst

    def set_rate(self, bytes_per_tick: int) -> None:
        """A new refill rate (an operator's throttle); what is available stays, capped."""
        if bytes_per_tick < 1:
            raise ValueError("need bytes_per_tick >= 1")
        self.per_tick = bytes_per_tick
        self.burst = bytes_per_tick * self.burst_ticks
        self.available = min(self.available, self.burst)

    def refill(self) -> None:
        self.available = min(self.burst, self.available + self.per_tick)

    def spend(self, nbytes: int) -> None:
        self.available -= nbytes
