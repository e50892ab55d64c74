"""Retention by time and size (broker/core/retention.py): the leader's decision
(`trim_point`, pure, fake times and sizes), the retain command at apply, the compaction
policy behind it, and a BrokerNode that enforces a topic's retention.ms / retention.bytes."""

from __future__ import annotations

from broker.core.offset_index import OffsetIndex, index_value, read_index_value
from broker.core.partition import Outcome, PartitionMachine, retain_command
from broker.core.raft import Entry, EntryKind
from broker.core.retention import (
    MAX_CAPTURES,
    RetentionPolicy,
    RetentionSettings,
    trim_point,
)
from broker.core.txn.protocol import Participant, Phase, TxnCommand
from broker.wire.batch import Record, decode_records, encode_batch
from broker.wire.cbor import encode
from broker.wire.errors import ErrorCode
from tests.support.broker_harness import Broker, batch

BIG = 1 << 20
NOW = 1_000_000


class Log:
    """A partition machine fed consecutive Raft entries."""

    def __init__(self) -> None:
        self.m = PartitionMachine()
        self.index = 0

    def apply(self, data: bytes) -> None:
        self.index += 1
        self.m.apply_entry(Entry(self.index, 1, EntryKind.NORMAL, data))

    def batches(self, *timestamps: int, size: int = 100) -> None:
        """One single-record batch per timestamp, its value padded so every batch of the
        same `size` has the same byte length."""
        for ts in timestamps:
            self.apply(batch(1, ts=ts, size=size))


def bases(m: PartitionMachine) -> list[int]:
    return [b for b, _, _ in m.index.items()]


# -- the decision -------------------------------------------------------------------------------


def test_time_retention_deletes_the_expired_prefix_only() -> None:
    log = Log()
    log.batches(100, 200, 900, 300, 950)
    m = log.m
    # Older than now - 500 = 500: the first two; 900 stops the prefix although 300 is older.
    assert trim_point(m, RetentionSettings(ms=500), 1000) == 2
    assert trim_point(m, RetentionSettings(ms=899), 1000) == 1
    assert trim_point(m, RetentionSettings(ms=900), 1000) == 0  # not older than 900 ms
    assert trim_point(m, RetentionSettings(ms=5000), 1000) == 0
    # Everything expired: the last batch stays.
    assert trim_point(m, RetentionSettings(ms=0), 10_000) == 4
    # An unknown clock (0) decides nothing; -1 means unbounded.
    assert trim_point(m, RetentionSettings(ms=0), 0) == 0
    assert trim_point(m, RetentionSettings(), 10_000) == 0


def test_size_retention_keeps_at_least_the_configured_bytes() -> None:
    log = Log()
    log.batches(1, 2, 3, 4, 5)
    m = log.m
    size = m.index.size_at(0)
    assert all(m.index.size_at(i) == size for i in range(5))
    assert m.size_bytes == 5 * size
    # Kafka's rule: delete the oldest while the rest is still >= retention.bytes.
    assert trim_point(m, RetentionSettings(bytes=3 * size), NOW) == 2
    assert trim_point(m, RetentionSettings(bytes=3 * size - 1), NOW) == 2
    assert trim_point(m, RetentionSettings(bytes=3 * size + 1), NOW) == 1
    assert trim_point(m, RetentionSettings(bytes=5 * size), NOW) == 0
    assert trim_point(m, RetentionSettings(bytes=0), NOW) == 4  # never the last batch
    # Both bounds: a batch goes if either deletes it.
    assert trim_point(m, RetentionSettings(ms=NOW - 3, bytes=4 * size), NOW) == 2  # by time
    assert trim_point(m, RetentionSettings(ms=NOW - 2, bytes=2 * size), NOW) == 3  # by size


def test_retention_never_passes_an_open_transaction() -> None:
    log = Log()
    log.batches(1, 2)
    begin = TxnCommand(
        phase=Phase.BEGIN,
        participant=Participant("t", 0),
        txn_id="tx",
        producer_id=7,
        epoch=0,
        coordinator_term=1,
    )
    log.apply(begin.encode())
    txn = [Record(value=b"x" * 100, timestamp=3)]
    log.apply(
        encode_batch(txn, producer_id=7, producer_epoch=0, base_sequence=0, transactional=True)
    )
    log.batches(4, 5)
    m = log.m
    assert m.last_stable_offset == 2
    assert trim_point(m, RetentionSettings(bytes=0), NOW) == 2
    # At apply too: a retain command past the LSO stops there.
    log.apply(retain_command(4))
    assert m.log_start_offset == 2


def test_a_scan_is_bounded() -> None:
    log = Log()
    log.batches(*range(1, 11))
    assert trim_point(log.m, RetentionSettings(bytes=0), NOW, limit=3) == 3


# -- the command at apply -------------------------------------------------------------------------


def test_the_retain_command_moves_the_log_start_to_a_batch_boundary() -> None:
    log = Log()
    for n in (2, 3, 1, 4):
        log.apply(batch(n, size=10))
    m = log.m
    assert bases(m) == [0, 2, 5, 6]
    log.apply(retain_command(4))  # inside the batch at 2: it stays
    assert m.log_start_offset == 2 and bases(m) == [2, 5, 6]
    w = m.take_writes()
    assert w.delete_below == 2
    log.apply(retain_command(100))  # past the end: the last batch stays
    assert m.log_start_offset == 6 and bases(m) == [6]
    assert m.size_bytes == m.index.size_at(0)
    log.apply(retain_command(0))  # never back
    assert m.log_start_offset == 6
    assert m.locate(5) == (ErrorCode.OFFSET_OUT_OF_RANGE, -1)
    assert m.next_offset == 10  # takes no offset


def test_a_malformed_retain_command_is_rejected_and_changes_nothing() -> None:
    m = PartitionMachine()
    m.apply(Entry(1, 1, EntryKind.NORMAL, batch(1)))
    m.apply(Entry(2, 1, EntryKind.NORMAL, batch(1)))
    for bad in ({"op": "retain", "from": -1}, {"op": "retain", "from": "1"}, {"op": "retain"}):
        res = m.apply(Entry(m.applied_index + 1, 1, EntryKind.NORMAL, encode(bad)))
        assert res.outcome == Outcome.REJECTED and res.error == ErrorCode.INVALID_REQUEST
    assert m.log_start_offset == 0


def test_replicas_applying_the_same_entries_agree() -> None:
    entries = [batch(1, ts=t, size=50) for t in range(10)]
    entries.insert(6, retain_command(3))
    entries.append(retain_command(8))
    machines = [PartitionMachine(), PartitionMachine()]
    for m in machines:
        for i, data in enumerate(entries, start=1):
            m.apply_entry(Entry(i, 1, EntryKind.NORMAL, data))
    a, b = machines
    assert a.log_start_offset == b.log_start_offset == 8
    assert a.state_bytes() == b.state_bytes() and bases(a) == bases(b)
    assert a.size_bytes == b.size_bytes


def test_index_records_keep_sizes_and_old_records_still_load() -> None:
    assert read_index_value(index_value(7, 1000, 321)) == (7, 1000, 321)
    old = (7).to_bytes(8, "big") + (1000).to_bytes(8, "big")
    assert read_index_value(old) == (7, 1000, 0)
    log = Log()
    log.batches(1, 2, 3)
    m = log.m
    w = m.take_writes()
    records = list(w.records)
    r = PartitionMachine()
    r.load(w.state, records)
    assert list(r.index.items()) == list(m.index.items()) and r.size_bytes == m.size_bytes
    # A store written before sizes were kept: the same index, 0 bytes each.
    r0 = PartitionMachine()
    r0.load(w.state, [(k, v[:16]) for k, v in records])
    assert list(r0.index.items()) == list(m.index.items()) and r0.size_bytes == 0
    idx = OffsetIndex()
    idx.append(0, 1, 5, 10)
    idx.append(3, 2, 6, 20)
    idx.drop_before(3)
    assert idx.total_bytes == 20


# -- compaction behind the log start (each replica) ----------------------------------------------


class _Group:
    """What RetentionPolicy reads of a hosted group."""

    def __init__(self, m: PartitionMachine) -> None:
        self.id = 1
        self.machine = m
        self.compacted_to = 0

    def conf_at(self, index: int) -> object:
        return None


def test_the_policy_compacts_to_a_capture_at_or_below_the_log_start() -> None:
    log = Log()
    group = _Group(log.m)
    policy = RetentionPolicy(spaced=True)
    compactions = []
    for t in range(200):
        if t % 20 == 19:
            log.apply(retain_command(log.m.next_offset - 5))
        else:
            log.batches(t)
        c = policy.after_apply(group, log.index)  # type: ignore[arg-type]
        if c is not None:
            compactions.append(c)
            group.compacted_to = c.compact_to
        assert len(policy.captures) <= MAX_CAPTURES
    m = log.m
    assert compactions and m.log_start_offset > 150
    last = compactions[-1]
    assert last.index == last.compact_to
    # Every batch the index lists is after the compaction point.
    assert all(raft_index > last.index for _, raft_index, _ in m.index.items())
    # The log keeps the retained records and not much more (spaced captures).
    snap = PartitionMachine()
    snap.restore_snapshot(last.data)
    assert snap.next_offset <= m.log_start_offset
    assert m.log_start_offset - snap.next_offset <= (m.next_offset - m.log_start_offset) + 8


def test_an_installer_of_a_capture_reaches_the_leaders_log_start() -> None:
    """A follower that installs the compaction's snapshot and appends the entries after it
    holds the same log start, index and state as the leader."""
    entries: list[bytes] = []
    leader = PartitionMachine()
    group = _Group(leader)
    policy = RetentionPolicy(spaced=True)
    compaction = None
    for t in range(60):
        data = retain_command(leader.next_offset - 3) if t % 10 == 9 else batch(1, ts=t)
        entries.append(data)
        leader.apply_entry(Entry(len(entries), 1, EntryKind.NORMAL, data))
        c = policy.after_apply(group, len(entries))  # type: ignore[arg-type]
        if c is not None:
            compaction, group.compacted_to = c, c.compact_to
    assert compaction is not None
    follower = PartitionMachine()
    follower.restore_snapshot(compaction.data)
    assert follower.applied_index == compaction.index
    for i in range(compaction.index + 1, len(entries) + 1):
        follower.apply_entry(Entry(i, 1, EntryKind.NORMAL, entries[i - 1]))
    assert follower.log_start_offset == leader.log_start_offset
    assert list(follower.index.items()) == list(leader.index.items())
    assert follower.snapshot_bytes() == leader.snapshot_bytes()


# -- a broker enforcing a topic's retention ------------------------------------------------------


def values(b: Broker, offset: int) -> list[bytes | None]:
    r = b.node.fetch("t", 0, offset, BIG, False)
    assert r.error == ErrorCode.NONE, r
    return [rec.value for _, data in r.batches for rec in decode_records(data)]


def test_a_broker_enforces_retention_bytes_and_gives_the_log_back() -> None:
    b = Broker().boot()
    one = len(batch(1, value=b"r00", size=200))
    b.create_topic("t", 1, config={"retention.bytes": str(10 * one)})
    g = b.node.by_partition[("t", 0)]
    m = g.machine
    assert isinstance(m, PartitionMachine)
    for i in range(100):
        assert b.produce("t", 0, batch(1, value=b"r%02d" % i, size=200)).error == ErrorCode.NONE
    b.node.retention.check(NOW)
    b.run()
    assert b.node.retention.proposed == 1
    assert m.log_start_offset == 90 and m.size_bytes == 10 * one
    # Deleted below the log start, everything above reads back.
    low = b.node.fetch("t", 0, 89, BIG, False)
    assert low.error == ErrorCode.OFFSET_OUT_OF_RANGE and low.log_start_offset == 90
    assert b.node.list_offset("t", 0, -2) == (ErrorCode.NONE, 90)
    assert [v[:3] for v in values(b, 90) if v] == [b"r%02d" % i for i in range(90, 100)]
    # The Raft log was compacted behind it; nothing to do at the next check.
    st = b.store.logs[g.id]
    assert st.first_index() > 80
    assert min(b.store.records[g.id]) == 90
    b.node.retention.check(NOW)
    assert b.node.retention.proposed == 1
    # A restart keeps the log start, and what is retained.
    r = b.restart()
    assert r.node.list_offset("t", 0, -2) == (ErrorCode.NONE, 90)
    assert [v[:3] for v in values(r, 90) if v] == [b"r%02d" % i for i in range(90, 100)]


def test_a_broker_enforces_retention_ms_on_record_timestamps() -> None:
    b = Broker().boot()
    b.create_topic("t", 1, config={"retention.ms": "1000"})
    m = b.node.by_partition[("t", 0)].machine
    assert isinstance(m, PartitionMachine)
    for i in range(10):
        b.produce("t", 0, batch(1, ts=NOW + 100 * i, value=b"r%d" % i))
    b.node.tick(NOW + 1000)  # not a check tick: nothing happens
    b.run()
    assert m.log_start_offset == 0
    b.node.retention.check(NOW + 1450)  # older than 450: r0 .. r4
    b.run()
    assert m.log_start_offset == 5
    assert values(b, 5) == [b"r%d" % i for i in range(5, 10)]
    b.node.retention.check(NOW + 100_000)  # all expired: the last batch stays
    b.run()
    assert m.log_start_offset == 9 and values(b, 9) == [b"r9"]


def test_ticks_run_the_check_at_its_interval_and_a_topic_without_retention_is_left_alone() -> None:
    b = Broker(options={"retention_check_ticks": 4}).boot()
    b.create_topic("t", 1, config={"retention.ms": "0"})
    b.create_topic("u", 1)
    for topic in ("t", "u"):
        for i in range(3):
            b.produce(topic, 0, batch(1, ts=i + 1))
    for _ in range(4):
        b.node.tick(NOW)
        b.run()
    t = b.node.by_partition[("t", 0)].machine
    u = b.node.by_partition[("u", 0)].machine
    assert isinstance(t, PartitionMachine) and isinstance(u, PartitionMachine)
    assert (t.log_start_offset, u.log_start_offset) == (2, 0)
