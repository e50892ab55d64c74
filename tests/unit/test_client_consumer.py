"""The consumer's handling of fetch answers (no I/O): whole batches trimmed to the position,
control batches skipped, corrupt batches stopping the partition with their offsets, resets."""

from __future__ import annotations

import dataclasses

import pytest

from broker.wire.batch import Record, encode_batch
from broker.wire.errors import ErrorCode
from broker.wire.messages import FetchedBatch, FetchPartitionResult
from consumers.consumer import Consumer
from consumers.core.positions import PartitionPosition, Positions
from consumers.errors import CorruptBatch, OffsetOutOfRangeError

TP = ("t", 0)


def batch(values: list[bytes], ts: int = 1000) -> bytes:
    return encode_batch([Record(value=v, timestamp=ts + i) for i, v in enumerate(values)])


def consumer(**kwargs: object) -> tuple[Positions, PartitionPosition]:
    """The positions core of a Consumer (never entered: no I/O), assigned TP."""
    c = Consumer("127.0.0.1:1", **kwargs)  # type: ignore[arg-type]
    c.assign([TP])
    positions = c._positions
    return positions, positions.partitions[TP]


def view(state: PartitionPosition) -> tuple[CorruptBatch | None, int | None]:
    """(corrupt marker, position), read through a call so checkers see them change."""
    return state.corrupt, state.position


def answer(*batches: tuple[int, bytes], error: ErrorCode = ErrorCode.NONE) -> FetchPartitionResult:
    return FetchPartitionResult(
        partition=0,
        error=error,
        high_watermark=100,
        batches=tuple(FetchedBatch(base_offset=b, data=d) for b, d in batches),
    )


def test_records_below_the_position_are_skipped() -> None:
    c, state = consumer()
    state.position = state.fetch_offset = 3
    assert c.apply_fetch(
        TP, state, answer((0, batch([b"a", b"b", b"c", b"d", b"e"])), (5, batch([b"f"]))), now=0.0
    )
    assert [(r.offset, r.value) for r in state.records] == [(3, b"d"), (4, b"e"), (5, b"f")]
    assert state.fetch_offset == 6
    assert [r.offset for r in c.take(2)] == [3, 4]
    assert state.position == 5


def test_control_batches_take_an_offset_and_are_not_returned() -> None:
    c, state = consumer()
    state.position = state.fetch_offset = 0
    marker = encode_batch(
        [Record(value=b"commit", timestamp=1)],
        producer_id=5,
        producer_epoch=0,
        transactional=True,
        control=True,
    )
    c.apply_fetch(TP, state, answer((0, batch([b"a"])), (1, marker), (2, batch([b"b"]))), now=0.0)
    assert [(r.offset, r.value) for r in state.records] == [(0, b"a"), (2, b"b")]
    assert state.fetch_offset == 3


def test_a_corrupt_batch_stops_the_partition_with_its_offsets() -> None:
    c, state = consumer()
    state.position = state.fetch_offset = 0
    good = batch([b"a", b"b"])
    bad = bytearray(batch([b"c", b"d", b"e"]))
    bad[-1] ^= 0xFF  # breaks the CRC: the extent comes from the next batch's base offset
    c.apply_fetch(TP, state, answer((0, good), (2, bytes(bad)), (5, batch([b"f"]))), now=0.0)
    assert [r.value for r in state.records] == [b"a", b"b"]
    assert state.fetch_offset == 2
    assert state.corrupt is not None
    assert (state.corrupt.base_offset, state.corrupt.last_offset) == (2, 4)
    assert not state.fetchable(0.0, 500)
    c.raise_pending()  # records before the batch come first
    assert len(c.take(10)) == 2
    with pytest.raises(CorruptBatch) as caught:
        c.raise_pending()
    assert "CRC" in caught.value.reason
    assert state.position == 2
    with pytest.raises(CorruptBatch):
        c.raise_pending()  # again, until skipped


def test_corrupt_last_batch_with_unknown_extent_must_be_sought_past() -> None:
    c, state = consumer()
    state.position = state.fetch_offset = 0
    bad = bytearray(batch([b"c"]))
    bad[-1] ^= 0xFF
    c.apply_fetch(TP, state, answer((0, bytes(bad))), now=0.0)
    assert state.corrupt is not None and state.corrupt.last_offset is None
    with pytest.raises(ValueError, match="seek past"):
        c.skip_corrupt(TP)
    c.seek(TP, 1)
    assert view(state) == (None, 1)


def test_a_v1_answer_says_where_to_fetch_next() -> None:
    """FETCH v1's next_offset moves the fetch offset even past what the batches hold (a
    broker that skipped records, e.g. aborted ones later); a v0 answer (None) is computed
    from the batches; a corrupt batch keeps the partition at it either way."""
    c, state = consumer()
    state.position = state.fetch_offset = 0
    v1 = dataclasses.replace(answer((0, batch([b"a", b"b"]))), next_offset=7)
    c.apply_fetch(TP, state, v1, now=0.0)
    assert [r.offset for r in state.records] == [0, 1] and state.fetch_offset == 7
    c.apply_fetch(TP, state, dataclasses.replace(answer(), next_offset=7), now=0.0)
    assert state.fetch_offset == 7  # nothing returned: stays where it asked
    c.apply_fetch(TP, state, answer((7, batch([b"c"]))), now=0.0)
    assert state.fetch_offset == 8  # v0: one past the last batch's last record
    bad = bytearray(batch([b"d"]))
    bad[-1] ^= 0xFF
    c.apply_fetch(TP, state, dataclasses.replace(answer((8, bytes(bad))), next_offset=9), now=0.0)
    assert state.corrupt is not None and state.fetch_offset == 8


def test_offset_out_of_range_resets_or_raises() -> None:
    c, state = consumer()
    state.position = state.fetch_offset = 50
    state.records.clear()
    generation = state.generation
    c.apply_fetch(TP, state, answer(error=ErrorCode.OFFSET_OUT_OF_RANGE), now=0.0)
    assert view(state)[1] is None and state.generation > generation  # reset pending

    c, state = consumer(auto_offset_reset="none")
    state.position = state.fetch_offset = 50
    c.apply_fetch(TP, state, answer(error=ErrorCode.OFFSET_OUT_OF_RANGE), now=0.0)
    with pytest.raises(OffsetOutOfRangeError):
        c.raise_pending()
    c.raise_pending()  # raised once


def test_seek_discards_buffered_records_and_in_flight_answers() -> None:
    c, state = consumer()
    state.position = state.fetch_offset = 0
    c.apply_fetch(TP, state, answer((0, batch([b"a", b"b"]))), now=0.0)
    generation = state.generation
    c.seek(TP, 1)
    assert not state.records and state.generation == generation + 1
    assert (state.position, state.fetch_offset) == (1, 1)
    with pytest.raises(ValueError):
        c.seek(("other", 0), 0)


def test_assign_and_subscribe_exclude_each_other() -> None:
    c, _ = consumer()
    with pytest.raises(ValueError):
        c.subscribe(["t"])
    c.assign([])
    c.subscribe(["t"])
    with pytest.raises(ValueError):
        c.assign([TP])
