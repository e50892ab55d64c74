"""Log compaction (cleanup.policy=compact, broker/core/compaction.py): the kept records, the
leader's plan, the compact command at apply, and a BrokerNode serving the last record per
key at its original offset, tombstones gone after delete.retention.ms."""

from __future__ import annotations

from broker.core.compaction import (
    COMPACTED_KEYS,
    KeptRecord,
    KeptRecords,
    plan_compaction,
)
from broker.core.offset_index import OffsetIndex
from broker.core.partition import Outcome, PartitionMachine, retain_command
from broker.core.raft import Entry, EntryKind
from broker.core.retention import RetentionPolicy
from broker.core.txn.aborted import AbortedIndex
from broker.core.txn.protocol import Participant, Phase, TxnCommand, encode_marker
from broker.wire.batch import Record, decode_records, encode_batch
from broker.wire.cbor import encode
from broker.wire.errors import ErrorCode
from tests.support.broker_harness import Broker

BIG = 1 << 20
NOW = 10_000_000


def keyed(*pairs: tuple[bytes | None, bytes | None], ts: int = NOW) -> bytes:
    return encode_batch([Record(key=k, value=v, timestamp=ts) for k, v in pairs])


class Log:
    """A partition machine over a Raft log it keeps (index -> entry)."""

    def __init__(self) -> None:
        self.m = PartitionMachine()
        self.entries: dict[int, Entry] = {}

    def apply(self, data: bytes) -> Outcome:
        e = Entry(len(self.entries) + 1, 1, EntryKind.NORMAL, data)
        self.entries[e.index] = e
        return self.m.apply_entry(e).value.outcome  # type: ignore[no-any-return]

    def slice(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry] | None:
        return [self.entries[i] for i in range(lo, hi)]

    def compact(self, horizon: int | None = None) -> bytes | None:
        """The leader's plan, applied when there is one."""
        m = self.m
        cmd = plan_compaction(m.index, m.kept, m.aborted, m.last_stable_offset, self, horizon)
        if cmd is not None:
            self.apply(cmd)
        return cmd


# -- kept records --------------------------------------------------------------------------------


def test_kept_records_keep_the_highest_offset_per_key() -> None:
    kept = KeptRecords()
    kept.add(KeptRecord(5, 1, b"a", b"a5"))
    kept.add(KeptRecord(3, 1, b"a", b"a3"))  # older: ignored
    kept.add(KeptRecord(2, 1, b"b", b"b2"))
    kept.add(KeptRecord(9, 1, b"a", b"a9"))
    assert [(r.offset, r.value) for r in kept] == [(2, b"b2"), (9, b"a9")]
    put, dropped = kept.take_changes()
    assert [k - COMPACTED_KEYS for k, _ in put] == [2, 9] and dropped == []
    kept.add(KeptRecord(12, 50, b"b", None))  # a tombstone replaces b
    kept.expire(50)  # not older than 50: stays
    assert kept.oldest_tombstone() == 50 and len(kept) == 2
    kept.expire(51)
    assert [r.offset for r in kept] == [9] and kept.oldest_tombstone() is None
    put, dropped = kept.take_changes()
    # Added and dropped within one round (12): it never reaches the store.
    assert put == [] and [d - COMPACTED_KEYS for d in dropped] == [2]
    again = KeptRecords.from_wire(kept.to_wire())
    assert list(again) == list(kept)


def test_kept_records_are_served_as_runs_of_consecutive_offsets() -> None:
    kept = KeptRecords()
    for offset in (0, 1, 2, 5, 7, 8):
        kept.add(KeptRecord(offset, 100 - offset, b"k%d" % offset, b"v%d" % offset))
    batches, size, nxt = kept.batches(1, 10, BIG, True)
    assert [(base, len(decode_records(d))) for base, d in batches] == [(1, 2), (5, 1), (7, 2)]
    assert nxt == 10 and size == sum(len(d) for _, d in batches)
    records = [(base + i, r.value) for base, d in batches for i, r in enumerate(decode_records(d))]
    assert records == [(1, b"v1"), (2, b"v2"), (5, b"v5"), (7, b"v7"), (8, b"v8")]
    # A byte bound stops at a run (the first always goes with min_one).
    one, _, nxt = kept.batches(0, 10, 1, True)
    assert [base for base, _ in one] == [0] and nxt == 3
    none, _, nxt = kept.batches(0, 10, 1, False)
    assert none == [] and nxt == 0
    assert kept.batches(3, 5, BIG, True)[0] == []


# -- the command ---------------------------------------------------------------------------------


def test_compaction_keeps_the_last_record_per_key_at_its_offset() -> None:
    log = Log()
    log.apply(keyed((b"a", b"a0"), (b"b", b"b1")))
    log.apply(keyed((b"a", b"a2"), (b"c", b"c3")))
    log.apply(keyed((b"b", b"b4")))
    log.apply(keyed((b"d", b"d5")))  # the active tail: stays raw
    cmd = log.compact()
    assert cmd is not None
    m = log.m
    assert m.log_start_offset == 5 and m.first_offset == 0
    assert m.kept is not None
    assert [(r.offset, r.key, r.value) for r in m.kept] == [
        (2, b"a", b"a2"),
        (3, b"c", b"c3"),
        (4, b"b", b"b4"),
    ]
    assert m.locate(5) == (ErrorCode.NONE, 0)
    # Applied again (a retried proposal): nothing changes.
    before = list(m.kept)
    log.apply(cmd)
    assert list(m.kept) == before
    # Nothing left to compact: no command.
    assert log.compact() is None


def test_tombstones_replace_then_go_after_the_horizon() -> None:
    log = Log()
    log.apply(keyed((b"a", b"a0"), (b"b", b"b1"), ts=NOW))
    log.apply(keyed((b"a", None), ts=NOW + 10))  # deletes a
    log.apply(keyed((b"c", b"c3")))
    log.compact(horizon=NOW)  # the tombstone is not older than the horizon yet
    m = log.m
    assert m.kept is not None
    assert [(r.offset, r.value) for r in m.kept] == [(1, b"b1"), (2, None)]
    assert log.compact(horizon=NOW + 10) is None  # nothing older than NOW + 10
    cmd = log.compact(horizon=NOW + 11)
    assert cmd is not None  # only the tombstone to drop
    assert [(r.offset, r.value) for r in m.kept] == [(1, b"b1")]


def test_control_batches_and_aborted_data_are_not_kept() -> None:
    log = Log()

    def txn(phase: Phase) -> TxnCommand:
        return TxnCommand(
            phase=phase,
            participant=Participant("t", 0),
            txn_id="tx",
            producer_id=7,
            epoch=0,
            coordinator_term=1,
        )

    log.apply(keyed((b"a", b"a0")))
    log.apply(txn(Phase.BEGIN).encode())
    aborted = [Record(key=b"a", value=b"aborted", timestamp=NOW)]
    log.apply(encode_batch(aborted, producer_id=7, producer_epoch=0, base_sequence=0,
                           transactional=True))  # fmt: skip
    log.apply(encode_marker(txn(Phase.ABORT)))
    log.apply(keyed((b"b", b"b3")))
    log.apply(keyed((b"z", b"z4")))
    log.compact()
    m = log.m
    assert m.log_start_offset == 4 and m.kept is not None
    assert [(r.offset, r.value) for r in m.kept] == [(0, b"a0"), (3, b"b3")]


def test_a_malformed_compact_command_is_rejected() -> None:
    log = Log()
    log.apply(keyed((b"a", b"1")))
    log.apply(keyed((b"a", b"2")))
    for bad in (
        {"op": "compact", "to": 1, "keep": [[0, 1, b"a"]], "horizon": None},
        {"op": "compact", "to": 1, "keep": [[1, 1, b"a", b"x", []], [0, 1, b"b", b"y", []]],
         "horizon": None},
        {"op": "compact", "to": -1, "keep": [], "horizon": None},
    ):  # fmt: skip
        assert log.apply(encode(bad)) == Outcome.REJECTED
    assert log.m.log_start_offset == 0 and not log.m.kept


def test_retention_after_a_switch_to_delete_drops_the_kept_records() -> None:
    log = Log()
    for i in range(4):
        log.apply(keyed((b"k%d" % (i % 2), b"v%d" % i)))
    log.compact()
    m = log.m
    assert m.kept and m.first_offset == 0
    kept = {r.offset for r in m.kept}
    m.take_writes()
    log.apply(keyed((b"k9", b"v4")))
    log.apply(keyed((b"k9", b"v5")))
    log.apply(retain_command(100))
    assert not m.kept and m.first_offset == m.log_start_offset == 5
    assert {k - COMPACTED_KEYS for k in m.take_writes().deleted} == kept


def test_persistence_restart_and_snapshot_carry_the_kept_records() -> None:
    log = Log()
    for i in range(10):
        log.apply(keyed((b"k%d" % (i % 3), b"v%d" % i)))
    log.compact()
    m = log.m
    w = m.take_writes()
    stored = dict(w.records)
    assert sum(1 for k in stored if k >= COMPACTED_KEYS) == len(m.kept or ())
    # A restart loads them back.
    r = PartitionMachine()
    r.load(w.state, sorted(stored.items()))
    assert r.kept is not None and list(r.kept) == list(m.kept or ())
    assert r.first_offset == 0 and r.log_start_offset == m.log_start_offset
    # A snapshot carries them; the installer's writes replace every stored record.
    s = PartitionMachine()
    s.restore_snapshot(m.snapshot_bytes())
    assert s.kept is not None and list(s.kept) == list(m.kept or ())
    ws = s.take_writes()
    assert ws.delete_below is not None and ws.delete_below > COMPACTED_KEYS
    assert sorted(k for k, _ in ws.records) == sorted(k for k in stored if k >= COMPACTED_KEYS)


class _Group:
    def __init__(self, m: PartitionMachine) -> None:
        self.id = 1
        self.machine = m
        self.compacted_to = 0

    def conf_at(self, index: int) -> object:
        return None


def test_an_installer_reaches_the_leaders_kept_records() -> None:
    """A follower that installs a compaction point's snapshot and appends the entries after
    it (compact commands included) holds what the leader holds."""
    leader = Log()
    group = _Group(leader.m)
    policy = RetentionPolicy(spaced=True)
    compaction = None
    for i in range(80):
        if i % 10 == 9:
            leader.compact(horizon=NOW + i)
        else:
            value = None if i % 7 == 0 else b"v%d" % i
            leader.apply(keyed((b"k%d" % (i % 5), value), ts=NOW + i))
        c = policy.after_apply(group, len(leader.entries))  # type: ignore[arg-type]
        if c is not None:
            compaction, group.compacted_to = c, c.compact_to
    assert compaction is not None
    follower = PartitionMachine()
    follower.restore_snapshot(compaction.data)
    for i in range(compaction.index + 1, len(leader.entries) + 1):
        follower.apply_entry(leader.entries[i])
    m = leader.m
    assert follower.log_start_offset == m.log_start_offset
    assert list(follower.kept or ()) == list(m.kept or ())
    assert list(follower.index.items()) == list(m.index.items())


# -- a broker compacting a topic -----------------------------------------------------------------


def read(b: Broker, topic: str, offset: int = 0) -> list[tuple[int, bytes | None, bytes | None]]:
    r = b.node.fetch(topic, 0, offset, BIG, False)
    assert r.error == ErrorCode.NONE, r
    return [
        (base + i, rec.key, rec.value)
        for base, data in r.batches
        for i, rec in enumerate(decode_records(data))
    ]


def test_a_broker_compacts_a_topic_and_refuses_keyless_records() -> None:
    b = Broker().boot()
    b.create_topic("c", 1, config={"cleanup.policy": "compact", "delete.retention.ms": "1000"})
    token = b.token()
    err, msg = b.node.produce(token, 0, "c", 0, keyed((b"a", b"1"), (None, b"keyless")))
    assert err == ErrorCode.INVALID_RECORD and "key" in (msg or "")
    for i in range(20):
        value = None if i == 17 else b"v%d" % i
        assert b.produce("c", 0, keyed((b"k%d" % (i % 4), value), ts=NOW)).error == ErrorCode.NONE
    before = read(b, "c")
    b.node.retention.check(NOW)
    b.run()
    m = b.node.by_partition[("c", 0)].machine
    assert isinstance(m, PartitionMachine) and m.log_start_offset == 19
    # The last record per key below the raw tail (k1's is a tombstone), at its offset, then
    # the raw tail (not compacted: k3 is there again).
    want = [
        (15, b"k3", b"v15"),
        (16, b"k0", b"v16"),
        (17, b"k1", None),
        (18, b"k2", b"v18"),
        (19, b"k3", b"v19"),
    ]
    assert read(b, "c") == want
    assert read(b, "c", 17) == want[2:]
    assert read(b, "c", 1) == want
    assert [o for o, _, _ in before] == list(range(20))
    assert b.node.list_offset("c", 0, -2) == (ErrorCode.NONE, 0)
    # The tombstone goes once older than delete.retention.ms.
    b.node.retention.check(NOW + 1001)
    b.run()
    gone = [w for w in want if w[1] != b"k1"]
    assert read(b, "c") == gone
    # A restart keeps it all; the Raft log was compacted behind the raw start.
    g = b.node.by_partition[("c", 0)]
    r = b.restart()
    assert read(r, "c") == gone
    assert b.store.logs[g.id].first_index() > 1


def test_nothing_to_plan_on_an_empty_log() -> None:
    aborted = AbortedIndex()
    aborted.add(7, 0, 3)
    assert plan_compaction(OffsetIndex(), None, aborted, 0, Log(), NOW) is None
    kept = KeptRecords()
    kept.add(KeptRecord(2, NOW - 5, b"k", None))
    cmd = plan_compaction(OffsetIndex(), kept, aborted, 0, Log(), NOW)
    assert cmd is not None  # only the tombstone to drop


def test_an_altered_cleanup_policy_applies_at_the_next_check() -> None:
    b = Broker().boot()
    b.create_topic("t", 1)
    for i in range(6):
        b.produce("t", 0, keyed((b"k%d" % (i % 2), b"v%d" % i)))
    m = b.node.by_partition[("t", 0)].machine
    assert isinstance(m, PartitionMachine)

    def alter(config: dict[str, str]) -> None:
        token = b.token()
        assert b.node.alter_topic(token, 0, "t", None, config, []) == (ErrorCode.NONE, None)
        b.run()
        assert b.completions_for(token)[0].error == ErrorCode.NONE

    alter({"cleanup.policy": "compact"})
    b.node.retention.check(NOW)
    b.run()
    assert read(b, "t") == [(3, b"k1", b"v3"), (4, b"k0", b"v4"), (5, b"k1", b"v5")]
    # Back to delete, with a size bound: the kept records go with the first deletion.
    for i in range(6, 9):
        b.produce("t", 0, keyed((b"k%d" % (i % 2), b"v%d" % i)))
    alter({"cleanup.policy": "delete", "retention.bytes": "0"})
    b.node.retention.check(NOW)
    b.run()
    assert m.first_offset == m.log_start_offset == 8
    assert read(b, "t", 8) == [(8, b"k0", b"v8")]
    assert b.node.fetch("t", 0, 0, BIG, False).error == ErrorCode.OFFSET_OUT_OF_RANGE
