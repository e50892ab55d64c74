"""Writing a Ready to an in-memory disk, as every runtime writes it: snapshot, then entries
(replacing the stored suffix from the first one), then hard state."""

from __future__ import annotations

from broker.core.raft import MemoryStorage, Ready


def write_ready(disk: MemoryStorage, rd: Ready) -> None:
    if rd.snapshot is not None:
        disk.apply_snapshot(rd.snapshot)
    if rd.entries:
        disk.append(list(rd.entries))
    if rd.hard_state is not None:
        disk.set_hard_state(rd.hard_state)
