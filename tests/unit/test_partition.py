"""PartitionMachine: offsets at apply, idempotent-producer decisions, offset index, persistence."""

from __future__ import annotations

import pytest

from broker.core.partition import (
    PRODUCER_BATCHES_KEPT,
    SEQUENCE_MODULUS,
    ApplyResult,
    Outcome,
    PartitionConfig,
    PartitionMachine,
)
from broker.core.raft import ConfState, Entry, EntryKind
from broker.wire.batch import BatchError
from broker.wire.errors import ErrorCode
from broker.wire.limits import Limits
from tests.support.broker_harness import batch

PID = 42


class Log:
    """A partition machine fed consecutive Raft entries (index 1, 2, ...)."""

    def __init__(self, machine: PartitionMachine | None = None, term: int = 1) -> None:
        self.m = machine if machine is not None else PartitionMachine()
        self.index = self.m.applied_index
        self.term = term

    def apply(self, data: bytes, kind: EntryKind = EntryKind.NORMAL) -> ApplyResult:
        self.index += 1
        conf = ConfState(frozenset({1})) if kind == EntryKind.CONF else None
        return self.m.apply(Entry(self.index, self.term, kind, data, conf))

    def idem(
        self, seq: int, n: int = 1, *, epoch: int = 0, pid: int = PID, ts: int = 1_000
    ) -> ApplyResult:
        return self.apply(batch(n, pid=pid, epoch=epoch, seq=seq, ts=ts))


def appended(base: int, last: int) -> ApplyResult:
    return ApplyResult(Outcome.APPENDED, base, last)


def duplicate(base: int, last: int) -> ApplyResult:
    return ApplyResult(Outcome.DUPLICATE, base, last)


def rejected(code: ErrorCode) -> ApplyResult:
    return ApplyResult(Outcome.REJECTED, error=code)


# -- offsets ----------------------------------------------------------------------------------


def test_offsets_come_from_record_counts_across_batches() -> None:
    log = Log()
    assert log.apply(batch(3)) == appended(0, 2)
    assert log.apply(batch(1)) == appended(3, 3)
    assert log.apply(batch(5)) == appended(4, 8)
    m = log.m
    assert m.next_offset == m.high_watermark == 9
    assert m.applied_index == 3
    assert [(b, i) for b, i, _ in m.index.items()] == [(0, 1), (3, 2), (4, 3)]
    assert m.last_indexed()[:2] == (4, 3)


def test_noop_conf_and_empty_entries_take_no_offsets() -> None:
    log = Log()
    assert log.apply(b"", EntryKind.NOOP).outcome == Outcome.NOT_DATA
    assert log.apply(batch(2)) == appended(0, 1)
    assert log.apply(b"", EntryKind.CONF).outcome == Outcome.NOT_DATA
    assert log.apply(b"").outcome == Outcome.NOT_DATA  # NORMAL but empty
    assert log.apply(batch(1)) == appended(2, 2)
    assert log.m.applied_index == 5
    assert [(b, i) for b, i, _ in log.m.index.items()] == [(0, 2), (2, 5)]


def test_unparseable_entry_is_rejected_and_takes_no_offsets() -> None:
    log = Log()
    log.apply(batch(2))
    assert log.apply(b"not a batch") == rejected(ErrorCode.CORRUPT_MESSAGE)
    assert log.m.applied_index == 2
    assert log.apply(batch(1)) == appended(2, 2)


def test_entries_apply_once_in_order() -> None:
    m = PartitionMachine()
    m.apply(Entry(3, 1, EntryKind.NORMAL, batch()))
    with pytest.raises(AssertionError):
        m.apply(Entry(3, 1, EntryKind.NORMAL, batch()))


def test_validate_uses_topic_limits() -> None:
    m = PartitionMachine(PartitionConfig(max_message_bytes=100))
    assert m.validate(batch(1)).record_count == 1
    with pytest.raises(BatchError) as e:
        m.validate(batch(1, size=200))
    assert e.value.code == ErrorCode.MESSAGE_TOO_LARGE
    small = PartitionMachine(PartitionConfig(limits=Limits(max_batch_records=2)))
    with pytest.raises(BatchError) as e:
        small.validate(batch(3))
    assert e.value.code == ErrorCode.MESSAGE_TOO_LARGE
    corrupt = bytearray(batch(2))
    corrupt[-1] ^= 0xFF
    with pytest.raises(BatchError) as e:
        m.validate(bytes(corrupt))
    assert e.value.code == ErrorCode.CORRUPT_MESSAGE


# -- idempotent producer ----------------------------------------------------------------------


def test_in_order_batches_are_accepted() -> None:
    log = Log()
    assert log.idem(0, 3) == appended(0, 2)
    assert log.idem(3, 2) == appended(3, 4)
    assert log.apply(batch(1)) == appended(5, 5)  # a non-idempotent batch in between
    assert log.idem(5, 1) == appended(6, 6)
    st = log.m.producers[PID]
    assert (st.epoch, st.last_seq) == (0, 5)


@pytest.mark.parametrize("age", range(PRODUCER_BATCHES_KEPT))
def test_duplicate_of_any_cached_batch_gets_original_offsets(age: int) -> None:
    log = Log()
    originals = [log.idem(2 * i, 2) for i in range(PRODUCER_BATCHES_KEPT)]
    assert log.m.next_offset == 2 * PRODUCER_BATCHES_KEPT
    which = PRODUCER_BATCHES_KEPT - 1 - age
    again = log.idem(2 * which, 2)
    assert again == duplicate(originals[which].base_offset, originals[which].last_offset)
    assert log.m.next_offset == 2 * PRODUCER_BATCHES_KEPT
    assert len(log.m.index) == PRODUCER_BATCHES_KEPT
    # The duplicate moved nothing: the next sequence is still accepted.
    assert log.idem(2 * PRODUCER_BATCHES_KEPT, 1).outcome == Outcome.APPENDED


def test_duplicate_older_than_the_cache_is_out_of_order_not_reappended() -> None:
    log = Log()
    for i in range(PRODUCER_BATCHES_KEPT + 1):
        log.idem(2 * i, 2)
    end = log.m.next_offset
    assert log.idem(0, 2) == rejected(ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER)
    assert log.m.next_offset == end
    assert log.idem(2, 2) == duplicate(2, 3)  # the oldest one still cached


def test_partial_overlap_with_a_cached_batch_is_out_of_order() -> None:
    log = Log()
    log.idem(0, 3)
    assert log.idem(0, 2) == rejected(ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER)
    assert log.idem(1, 2) == rejected(ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER)
    assert log.m.next_offset == 3


def test_sequence_gap_is_rejected_then_the_missing_batch_fills_it() -> None:
    log = Log()
    log.idem(0, 2)
    assert log.idem(3, 1) == rejected(ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER)
    assert log.m.next_offset == 2
    assert log.m.producers[PID].last_seq == 1
    assert log.idem(2, 1) == appended(2, 2)
    assert log.idem(3, 1) == appended(3, 3)


def test_older_epoch_is_fenced() -> None:
    log = Log()
    log.idem(0, 1, epoch=3)
    assert log.idem(1, 1, epoch=2) == rejected(ErrorCode.INVALID_PRODUCER_EPOCH)
    assert log.idem(0, 1, epoch=2) == rejected(ErrorCode.INVALID_PRODUCER_EPOCH)
    assert log.m.next_offset == 1


def test_newer_epoch_must_start_at_sequence_zero() -> None:
    log = Log()
    log.idem(0, 2, epoch=0)
    assert log.idem(2, 1, epoch=1) == rejected(ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER)
    assert log.m.producers[PID].epoch == 0  # the rejected batch changed nothing
    assert log.idem(0, 1, epoch=1) == appended(2, 2)
    st = log.m.producers[PID]
    assert (st.epoch, st.last_seq, len(st.batches)) == (1, 0, 1)
    # The bump fenced epoch 0, and epoch 0's cached batches are forgotten.
    assert log.idem(2, 1, epoch=0) == rejected(ErrorCode.INVALID_PRODUCER_EPOCH)
    assert log.idem(0, 1, epoch=1) == duplicate(2, 2)


def test_unknown_producer_must_start_at_zero() -> None:
    log = Log()
    assert log.idem(5, 1) == rejected(ErrorCode.UNKNOWN_PRODUCER_ID)
    assert PID not in log.m.producers
    assert log.m.next_offset == 0
    assert log.idem(0, 1) == appended(0, 0)


def test_producers_are_independent() -> None:
    log = Log()
    assert log.idem(0, 2, pid=1) == appended(0, 1)
    assert log.idem(0, 2, pid=2) == appended(2, 3)
    assert log.idem(0, 2, pid=1) == duplicate(0, 1)
    assert log.idem(2, 1, pid=2) == appended(4, 4)


def test_sequence_wraps_at_2_pow_31() -> None:
    log = Log()
    log.idem(0, 2)
    log.m.producers[PID].last_seq = SEQUENCE_MODULUS - 3  # as if long-lived
    # Sequences SEQUENCE_MODULUS-2, SEQUENCE_MODULUS-1, 0: the last one wraps.
    assert log.idem(SEQUENCE_MODULUS - 2, 3) == appended(2, 4)
    assert log.m.producers[PID].last_seq == 0
    assert log.idem(1, 2) == appended(5, 6)
    assert log.idem(SEQUENCE_MODULUS - 2, 3) == duplicate(2, 4)
    assert log.idem(SEQUENCE_MODULUS - 1, 1) == rejected(ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER)


def test_batch_ending_exactly_at_the_top_is_followed_by_zero() -> None:
    log = Log()
    log.idem(0, 2)  # cached as sequences (0, 1)
    log.m.producers[PID].last_seq = SEQUENCE_MODULUS - 2
    assert log.idem(SEQUENCE_MODULUS - 1, 1) == appended(2, 2)
    assert log.m.producers[PID].last_seq == SEQUENCE_MODULUS - 1
    assert log.idem(0, 1) == appended(3, 3)
    assert log.idem(0, 1) == duplicate(3, 3)
    assert log.idem(1, 1) == appended(4, 4)


def test_idle_producers_expire_by_batch_timestamps() -> None:
    cfg = PartitionConfig(producer_expiry_ms=1_000)
    log = Log(PartitionMachine(cfg))
    log.idem(0, 1, pid=1, ts=10_000)
    log.idem(0, 1, pid=2, ts=10_500)
    # Horizon 11_000 - 1_000 = 10_000: producer 1 (last 10_000) is not older: kept.
    log.idem(1, 1, pid=2, ts=11_000)
    assert set(log.m.producers) == {1, 2}
    # Horizon 10_001: producer 1 expires at this entry, producer 2 stays.
    log.idem(2, 1, pid=2, ts=11_001)
    assert set(log.m.producers) == {2}
    assert log.idem(1, 1, pid=1, ts=11_002) == rejected(ErrorCode.UNKNOWN_PRODUCER_ID)
    # A forgotten producer may start again from 0.
    assert log.idem(0, 1, pid=1, ts=11_003).outcome == Outcome.APPENDED


def test_expiry_clock_is_the_max_timestamp_seen_not_the_latest() -> None:
    cfg = PartitionConfig(producer_expiry_ms=1_000)
    log = Log(PartitionMachine(cfg))
    log.idem(0, 1, pid=1, ts=10_000)
    log.apply(batch(1, ts=20_000))  # any batch moves the clock
    log.idem(0, 1, pid=2, ts=5_000)  # an old timestamp does not move it back
    assert set(log.m.producers) == {2}
    assert log.m.max_timestamp == 20_000


def test_same_batch_proposed_twice_yields_one_set_of_offsets() -> None:
    """An old leader replicated A and B without committing; the client re-sent them to the
    new leader, which proposed them again. Every replica applies all four entries and
    decides the same way at apply: the copies are duplicates and take no offsets."""
    a = batch(3, pid=PID, epoch=0, seq=0)
    b = batch(2, pid=PID, epoch=0, seq=3)
    c = batch(1, pid=PID, epoch=0, seq=5)
    replicas = [Log(term=2), Log(term=2)]
    results = []
    for log in replicas:
        log.apply(b"", EntryKind.NOOP)
        results.append([log.apply(x) for x in (a, b, a, b, c)])
    assert results[0] == results[1]
    assert results[0] == [
        appended(0, 2),
        appended(3, 4),
        duplicate(0, 2),
        duplicate(3, 4),
        appended(5, 5),
    ]
    assert replicas[0].m.state_bytes() == replicas[1].m.state_bytes()
    assert list(replicas[0].m.index.items()) == list(replicas[1].m.index.items())


def test_non_idempotent_batches_are_never_deduplicated() -> None:
    log = Log()
    data = batch(2)
    assert log.apply(data) == appended(0, 1)
    assert log.apply(data) == appended(2, 3)


# -- reads ------------------------------------------------------------------------------------


def test_locate_on_an_empty_log() -> None:
    m = PartitionMachine()
    assert m.locate(0) == (ErrorCode.NONE, -1)
    assert m.locate(1)[0] == ErrorCode.OFFSET_OUT_OF_RANGE
    assert m.locate(-1)[0] == ErrorCode.OFFSET_OUT_OF_RANGE


def test_locate_boundaries() -> None:
    log = Log()
    log.apply(batch(3))  # 0..2
    log.apply(batch(2))  # 3..4
    m = log.m
    assert m.locate(0) == (ErrorCode.NONE, 0)
    assert m.locate(2) == (ErrorCode.NONE, 0)
    assert m.locate(3) == (ErrorCode.NONE, 1)
    assert m.locate(4) == (ErrorCode.NONE, 1)
    assert m.locate(5) == (ErrorCode.NONE, -1)  # the log end: nothing yet
    assert m.locate(6)[0] == ErrorCode.OFFSET_OUT_OF_RANGE
    assert m.locate(-1)[0] == ErrorCode.OFFSET_OUT_OF_RANGE
    m.log_start_offset = 3  # as after retention
    assert m.locate(2)[0] == ErrorCode.OFFSET_OUT_OF_RANGE
    assert m.locate(3) == (ErrorCode.NONE, 1)


def test_offset_for_timestamp() -> None:
    m = PartitionMachine()
    assert m.offset_for_timestamp(0) == 0
    log = Log(m)
    log.apply(batch(2, ts=100))  # offsets 0-1, max ts 101
    log.apply(batch(3, ts=200))  # offsets 2-4, max ts 202
    log.apply(batch(1, ts=300))  # offset 5, max ts 300
    assert m.offset_for_timestamp(0) == 0
    assert m.offset_for_timestamp(101) == 0
    assert m.offset_for_timestamp(102) == 2
    assert m.offset_for_timestamp(202) == 2
    assert m.offset_for_timestamp(250) == 5
    assert m.offset_for_timestamp(300) == 5
    assert m.offset_for_timestamp(301) == 6  # none: the log end


# -- persistence ------------------------------------------------------------------------------


def build_log() -> Log:
    log = Log(PartitionMachine(PartitionConfig(producer_expiry_ms=10**9)))
    log.apply(b"", EntryKind.NOOP)
    for i in range(7):
        log.idem(2 * i, 2, pid=1, ts=1_000 + i)
    log.apply(batch(3, ts=5_000))
    log.idem(0, 1, pid=2, epoch=4, ts=6_000)
    return log


def test_state_round_trip() -> None:
    log = build_log()
    m = log.m
    r = PartitionMachine(m.config)
    r.restore(m.state_bytes(), list(m.index.items()))
    assert r.applied_index == m.applied_index
    assert r.next_offset == m.next_offset
    assert r.log_start_offset == m.log_start_offset
    assert r.max_timestamp == m.max_timestamp
    assert r.producers == m.producers
    assert list(r.index.items()) == list(m.index.items())
    assert r.state_bytes() == m.state_bytes()


def test_restore_keeps_dedup_decisions() -> None:
    log = build_log()
    m = log.m
    r = Log(PartitionMachine(m.config))
    r.m.restore(m.state_bytes(), list(m.index.items()))
    r.index = r.m.applied_index
    for target in (log, r):
        assert target.idem(12, 2, pid=1) == duplicate(12, 13)
        assert target.idem(4, 2, pid=1) == duplicate(4, 5)
        assert target.idem(2, 2, pid=1) == rejected(ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER)
        assert target.idem(15, 1, pid=1) == rejected(ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER)
        assert target.idem(0, 1, pid=2, epoch=3) == rejected(ErrorCode.INVALID_PRODUCER_EPOCH)
        assert target.idem(0, 1, pid=2, epoch=4) == duplicate(17, 17)
        assert target.idem(14, 1, pid=1) == appended(18, 18)
    assert r.m.state_bytes() == log.m.state_bytes()


def test_restore_ignores_offsets_past_the_applied_index() -> None:
    log = Log()
    log.apply(batch(2))
    state = log.m.state_bytes()
    log.apply(batch(2))  # indexed, but after the state was taken
    r = PartitionMachine()
    r.restore(state, list(log.m.index.items()))
    assert [b for b, _, _ in r.index.items()] == [0]
    assert (r.applied_index, r.next_offset) == (1, 2)
    # Replaying the tail rebuilds the rest exactly.
    tail = Log(r)
    assert tail.apply(batch(2)) == appended(2, 3)
    assert list(r.index.items()) == list(log.m.index.items())


def test_restore_of_nothing_is_a_fresh_machine() -> None:
    m = PartitionMachine()
    m.restore(None, [(0, 1, 5)])
    assert (m.applied_index, m.next_offset, len(m.index)) == (0, 0, 0)
