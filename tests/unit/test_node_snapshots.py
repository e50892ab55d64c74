"""BrokerNode snapshots and compaction on one broker: metadata snapshots, partition retention
(log start offset, OFFSET_OUT_OF_RANGE, ListOffsets earliest), what a round persists, and
restarts that restore from a snapshot. Installs on lagging replicas: tests/sim (the cluster
simulator) and tests/unit/test_store_snapshots.py (real RocksDB)."""

from __future__ import annotations

from broker.core.metadata import METADATA_GROUP, MetadataMachine
from broker.core.partition import Outcome, PartitionMachine
from broker.core.raft import Entry, EntryKind
from broker.wire.batch import decode_records
from broker.wire.errors import ErrorCode
from tests.support.broker_harness import Broker, batch, entry_indexes

BIG = 1 << 20


def booted(**options: int) -> Broker:
    b = Broker(options=options).boot()
    b.create_topic("t", 1)
    return b


def values(b: Broker, offset: int) -> list[bytes | None]:
    r = b.node.fetch("t", 0, offset, BIG, False)
    assert r.error == ErrorCode.NONE, r
    return [rec.value for _, data in r.batches for rec in decode_records(data)]


def produce_n(b: Broker, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        c = b.produce("t", 0, batch(1, value=b"r%d" % i))
        assert c.error == ErrorCode.NONE


def test_metadata_state_round_trips_through_a_snapshot() -> None:
    b = booted()
    m = b.node.meta
    copy = MetadataMachine()
    copy.restore(m.state_bytes())
    assert copy == m
    assert list(copy.brokers) == list(m.brokers) and list(copy.topics) == list(m.topics)


def test_metadata_snapshot_compacts_the_log_and_a_restart_replays_only_after_it() -> None:
    b = booted(metadata_snapshot_entries=2, snapshot_catchup_entries=1)
    b.create_topic("u", 1)
    st = b.store.logs[METADATA_GROUP]
    snap = st.snapshot()
    assert snap.meta.index >= 4 and snap.meta.index % 2 == 0
    assert st.first_index() == snap.meta.index  # one entry kept behind the snapshot
    restored = MetadataMachine()
    restored.restore(snap.data)
    assert restored.applied_index == snap.meta.index and "t" in restored.topics

    r = b.restart()
    replayed = entry_indexes(r.applied, METADATA_GROUP)
    assert replayed and min(replayed) == snap.meta.index + 1
    assert r.node.meta.topics == b.node.meta.topics
    assert r.node.meta.brokers == b.node.meta.brokers
    # The partition the snapshot names opened at once and serves.
    assert r.produce("t", 0, batch(2)).value.outcome == Outcome.APPENDED


def test_no_metadata_snapshot_when_switched_off() -> None:
    b = booted(metadata_snapshot_entries=0)
    assert b.store.logs[METADATA_GROUP].snapshot().meta.index == 0
    assert b.store.logs[METADATA_GROUP].first_index() == 1


def test_partition_retention_moves_the_log_start_and_compacts_behind_it() -> None:
    b = booted(partition_retention_entries=4)
    g = b.node.by_partition[("t", 0)]
    produce_n(b, 20)
    m = g.machine
    assert m is not None and m.high_watermark == 20
    st = b.store.logs[g.id]
    snap = st.snapshot()
    # The log keeps between 4 and 8 entries; the snapshot is exactly the compaction point.
    assert 4 <= m.applied_index - snap.meta.index <= 8
    assert st.first_index() == snap.meta.index + 1
    snapped = PartitionMachine()
    snapped.restore_snapshot(snap.data)
    assert snapped.applied_index == snap.meta.index
    assert snapped.next_offset == snapped.log_start_offset == m.log_start_offset > 0
    # Below the log start: OFFSET_OUT_OF_RANGE, with the log start to move to.
    low = b.node.fetch("t", 0, m.log_start_offset - 1, BIG, False)
    assert low.error == ErrorCode.OFFSET_OUT_OF_RANGE
    assert low.log_start_offset == m.log_start_offset
    # Everything retained reads back, and ListOffsets earliest is the log start.
    assert values(b, m.log_start_offset) == [b"r%d" % i for i in range(m.log_start_offset, 20)]
    assert b.node.list_offset("t", 0, -2) == (ErrorCode.NONE, m.log_start_offset)
    assert b.node.list_offset("t", 0, -1) == (ErrorCode.NONE, 20)
    # What the rounds persisted: no offset-index record below the log start.
    assert min(b.store.records[g.id]) == m.log_start_offset
    stored = PartitionMachine()
    stored.restore(b.store.apply[g.id], [])
    assert stored.log_start_offset == m.log_start_offset


def test_retention_keeps_producer_state_and_survives_a_restart() -> None:
    b = booted(partition_retention_entries=3)
    for seq in range(12):
        c = b.produce("t", 0, batch(1, pid=9, epoch=0, seq=seq, value=b"s%d" % seq))
        assert c.value.outcome == Outcome.APPENDED
    start = b.node.by_partition[("t", 0)].machine.log_start_offset  # type: ignore[union-attr]
    assert start > 0
    before = values(b, start)
    r = b.restart()
    assert values(r, start) == before
    assert r.node.list_offset("t", 0, -2) == (ErrorCode.NONE, start)
    # The producer's last batch is still known: a retry is a duplicate.
    dup = r.produce("t", 0, batch(1, pid=9, epoch=0, seq=11, value=b"s11"))
    assert dup.value.outcome == Outcome.DUPLICATE and dup.value.base_offset == 11


def test_restart_restores_from_a_snapshot_newer_than_the_apply_state() -> None:
    b = booted(partition_retention_entries=4)
    g = b.node.by_partition[("t", 0)].id
    produce_n(b, 3)
    old_apply, old_offsets = b.store.apply[g], dict(b.store.records[g])
    produce_n(b, 20, start=3)
    snap = b.store.logs[g].snapshot()
    old = PartitionMachine()
    old.restore(old_apply, [])
    assert snap.meta.index > old.applied_index
    before = b.node.fetch("t", 0, 0, BIG, False)
    # The apply state written after the compaction is lost: the disk has the old one.
    b.store.apply[g], b.store.records[g] = old_apply, old_offsets

    r = b.restart()
    m = r.node.by_partition[("t", 0)].machine
    assert m is not None
    replayed = entry_indexes(r.applied, g)
    assert min(replayed) == snap.meta.index + 1
    assert m.high_watermark == 23
    # Restored from the snapshot: no records at or below it; the rest read back.
    assert m.log_start_offset == before.log_start_offset
    assert values(r, m.log_start_offset) == [b"r%d" % i for i in range(m.log_start_offset, 23)]
    # The restored state was persisted, and the stale offset records dropped.
    assert min(r.store.records[g]) >= m.log_start_offset
    stored = PartitionMachine()
    stored.restore(r.store.apply[g], [])
    assert stored.applied_index >= snap.meta.index


def test_partition_machine_retention_and_snapshot_semantics() -> None:
    m = PartitionMachine()
    for i, n in enumerate((2, 3, 1), start=1):
        m.apply(Entry(i, 1, EntryKind.NORMAL, batch(n)))
    assert [b for b, _, _ in m.index.items()] == [0, 2, 5]
    snap = m.snapshot_bytes()
    m.retain_from(2)
    assert m.log_start_offset == 2 and [b for b, _, _ in m.index.items()] == [2, 5]
    assert m.locate(1) == (ErrorCode.OFFSET_OUT_OF_RANGE, -1)
    assert m.locate(3) == (ErrorCode.NONE, 0)
    m.retain_from(0)  # never back
    assert m.log_start_offset == 2
    # A persisted index below the state's log start is not restored.
    r = PartitionMachine()
    r.restore(m.state_bytes(), [(0, 1, 1000), (2, 2, 1001), (5, 3, 1000)])
    assert [b for b, _, _ in r.index.items()] == [2, 5]
    # A snapshot holds no records: restored, its log start is its next offset.
    s = PartitionMachine()
    s.restore_snapshot(snap)
    assert (s.applied_index, s.next_offset, s.log_start_offset, len(s.index)) == (3, 6, 6, 0)
    assert s.locate(6) == (ErrorCode.NONE, -1)
    assert s.locate(5) == (ErrorCode.OFFSET_OUT_OF_RANGE, -1)
