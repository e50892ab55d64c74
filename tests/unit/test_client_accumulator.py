"""The producer's accumulator: sealing by size and linger, sticky and keyed partitioning."""

from __future__ import annotations

import itertools
import random

import cbor2
import pytest

from broker.wire.batch import HEADER_BYTES, Record, encode_batch
from broker.wire.partitioner import default_partition, murmur2_partition
from consumers.core.accumulator import Accumulator, cbor_head_size, record_size


def make(batch_bytes: int = 1000, linger_s: float = 0.005, seed: int = 1) -> Accumulator:
    return Accumulator(
        batch_bytes=batch_bytes,
        linger_s=linger_s,
        delivery_timeout_s=30.0,
        partitioner=default_partition,
        rng=random.Random(seed),
    )


def rec(value: bytes, key: bytes | None = None, ts: int = 1_700_000_000_000) -> Record:
    return Record(key=key, value=value, timestamp=ts)


@pytest.mark.parametrize("n", [0, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32])
def test_cbor_head_size_matches_cbor2(n: int) -> None:
    assert cbor_head_size(n) == len(cbor2.dumps(n))


@pytest.mark.parametrize(
    ("key", "value", "headers"),
    [
        (None, None, ()),
        (b"k", b"v" * 100, ()),
        (b"k" * 300, b"v" * 70_000, (("trace", b"x" * 30), ("é", b""))),
    ],
)
def test_record_size_bounds_the_encoding(
    key: bytes | None, value: bytes | None, headers: tuple[tuple[str, bytes], ...]
) -> None:
    size = record_size(key, value, headers)
    one = encode_batch([Record(key=key, value=value, headers=headers, timestamp=5)])
    encoded_item = len(one) - HEADER_BYTES - 1  # minus the array head of one item
    assert encoded_item <= size <= encoded_item + 5


@pytest.mark.parametrize("n", [0, 1, 23, 24, 255, 256, 65535, 65536])
@pytest.mark.parametrize("headers", [(), (("traceparent", b"0" * 55),), (("é" * 30, b"x"),)])
def test_record_size_is_exact_but_for_the_delta(
    n: int, headers: tuple[tuple[str, bytes], ...]
) -> None:
    """The estimate is the encoding with the timestamp delta counted as 5 bytes (a delta of
    0 takes 1), at every head length of keys and values."""
    for key, value in [(None, b"v" * n), (b"k" * n, None), (b"k" * n, b"v" * n)]:
        one = encode_batch([Record(key=key, value=value, headers=headers, timestamp=5)])
        assert record_size(key, value, headers) == len(one) - HEADER_BYTES - 1 + 4


def test_seals_by_size_and_never_overfills() -> None:
    acc = make(batch_bytes=1000)
    r = rec(b"x" * 100)
    size = record_size(None, r.value, ())
    for _ in range(30):
        acc.append(("t", 0), r, size, now=0.0)
    sealed = list(acc.ready[("t", 0)])
    assert len(sealed) >= 2
    for batch in sealed:
        assert batch.size <= 1000
        assert batch.size + size > 1000  # sealed only when the next record did not fit
        data = encode_batch(batch.records)
        assert len(data) - HEADER_BYTES <= 1000 + 5
    total = sum(len(b.records) for b in sealed) + len(acc.open[("t", 0)].records)
    assert total == 30


def test_a_record_larger_than_the_limit_goes_alone_and_seals_at_once() -> None:
    acc = make(batch_bytes=100)
    acc.append(("t", 0), rec(b"a"), 10, now=0.0)
    batch, index, changed = acc.append(("t", 0), rec(b"b" * 500), 510, now=0.0)
    assert changed and index == 0 and len(batch.records) == 1
    assert [len(b.records) for b in acc.ready[("t", 0)]] == [1, 1]
    assert not acc.open


def test_seals_by_linger() -> None:
    acc = make(linger_s=0.005)
    acc.append(("t", 0), rec(b"a"), 10, now=1.0)
    acc.append(("t", 1), rec(b"b"), 10, now=1.003)
    assert acc.next_linger_deadline() == pytest.approx(1.005)
    assert acc.seal_expired(1.004) == 0
    assert acc.seal_expired(1.005) == 1
    assert list(acc.ready) == [("t", 0)] and ("t", 1) in acc.open
    assert acc.next_linger_deadline() == pytest.approx(1.008)
    assert acc.seal_expired(2.0) == 1
    assert acc.next_linger_deadline() is None


def test_an_unsent_sealed_batch_keeps_taking_records() -> None:
    """Behind an unavailable leader, lingered batches are not sent: new records join the
    newest sealed batch while it is unencoded and has room, so the backlog is a few full
    batches, not one per linger."""
    acc = make(batch_bytes=100, linger_s=0.001)
    tp = ("t", 0)
    now = 0.0
    for _ in range(25):
        acc.append(tp, rec(b"x"), 10, now=now)
        now += 0.002
        acc.seal_expired(now)
    assert [len(b.records) for b in acc.ready[tp]] == [10, 10, 5]
    acc.ready[tp][-1].data = b"encoded"  # the sender took it
    batch, index, changed = acc.append(tp, rec(b"y"), 10, now=now)
    assert changed and index == 0 and acc.open[tp] is batch
    # Half the delivery timeout after its creation, a sealed batch takes no more records.
    acc.seal_all()
    late = now + acc.delivery_timeout_s / 2 + 1
    acc.append(tp, rec(b"z"), 10, now=late)
    assert [len(b.records) for b in acc.ready[tp]] == [10, 10, 5, 1]
    assert len(acc.open[tp].records) == 1


def test_seal_all_and_seal_one() -> None:
    acc = make()
    b0, _, _ = acc.append(("t", 0), rec(b"a"), 10, now=0.0)
    acc.append(("t", 1), rec(b"b"), 10, now=0.0)
    assert acc.seal(b0) and not acc.seal(b0)
    acc.seal_all()
    assert not acc.open and acc.pending_records() == 2


def test_keyed_records_use_the_pinned_partitioner() -> None:
    acc = make()
    for i in range(200):
        key = b"key-%d" % i
        assert acc.choose_partition("t", 7, key, None) == default_partition(key, 7)
    murmur = Accumulator(
        batch_bytes=1000,
        linger_s=0,
        delivery_timeout_s=1,
        partitioner=murmur2_partition,
        rng=random.Random(1),
    )
    for i in range(200):
        key = b"key-%d" % i
        assert murmur.choose_partition("t", 7, key, None) == murmur2_partition(key, 7)


def test_explicit_partition_is_honoured() -> None:
    assert make().choose_partition("t", 4, b"k", 3) == 3


def test_keyless_records_stick_to_a_partition_until_its_batch_seals() -> None:
    acc = make(batch_bytes=100, seed=7)
    chosen: list[int] = []
    for _ in range(60):
        p = acc.choose_partition("t", 4, None, None)
        chosen.append(p)
        acc.append(("t", p), rec(b"x" * 15), 25, now=0.0)
    # 4 records of 25 bytes fill a batch of 100: the partition changes every 4 records.
    runs = [chosen[i : i + 4] for i in range(0, 60, 4)]
    for run in runs:
        assert len(set(run)) == 1
    for a, b in itertools.pairwise(runs):
        assert a[0] != b[0]  # never the same partition twice in a row
    assert len(set(chosen)) == 4  # spread over every partition


def test_sticky_partition_with_one_partition() -> None:
    acc = make(batch_bytes=10)
    for _ in range(5):
        p = acc.choose_partition("t", 1, None, None)
        assert p == 0
        acc.append(("t", p), rec(b"x"), 10, now=0.0)
