"""The snapshot policies a hosted group may have (`host.SnapshotPolicy`): none (partition logs
without retention), or every N applied entries (the metadata group and coordinator machines).
Partition retention has its own (retention.py)."""

from __future__ import annotations

from broker.core.host import HostedGroup
from broker.core.rounds import Compaction


class NoSnapshots:
    """The group's log is never compacted (nor its machine snapshotted)."""

    def after_apply(self, group: HostedGroup, index: int) -> Compaction | None:
        return None

    def on_install(self, group: HostedGroup) -> None:
        return None


class PeriodicSnapshots:
    """Snapshot the machine every `every` applied entries and compact its log up to `keep`
    entries behind the snapshot (KRaft's metadata snapshots; etcd's SnapshotCatchUpEntries
    keeps slightly lagging followers on appends). `every` 0: never."""

    def __init__(self, every: int, keep: int) -> None:
        self.every = every
        self.keep = keep

    def after_apply(self, group: HostedGroup, index: int) -> Compaction | None:
        if not self.every or index - group.snapshot_index < self.every:
            return None
        compact_to = max(group.compacted_to, index - self.keep)
        data = group.machine.snapshot()
        return Compaction(group.id, index, group.conf_at(index), data, compact_to)

    def on_install(self, group: HostedGroup) -> None:
        return None
