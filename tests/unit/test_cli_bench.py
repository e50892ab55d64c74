"""`sluice bench produce`'s settling: every record's latency, in send order, from the
deliveries a worker queued; a failed record raises; the worker's window of unsettled records
is bounded."""

from __future__ import annotations

import time
from array import array

import pytest
import trio

from broker.wire.errors import ErrorCode
from cli import bench
from consumers.errors import OutOfOrderSequenceError, SluiceError
from tests.support.fake_cluster import FakeBroker, FakeProducer


async def _produce(broker: FakeBroker, n: int, window: int) -> tuple[array[float], int]:
    """Send n records as the bench's worker does; (latencies, most records ever unsettled)."""
    latencies = array("d")
    unsettled = bench._Unsettled()
    most = 0
    with bench._progress(n, "produce", True) as progress:
        task = progress.add_task("produce", total=n)
        async with FakeProducer(broker, linger_ms=1) as p, trio.open_nursery() as nursery:
            nursery.start_soon(bench._settle, unsettled, latencies, progress, task)
            try:
                for i in range(n):
                    unsettled.sent_at.append(time.perf_counter())
                    unsettled.deliveries.append(p.send_nowait("t", b"v%d" % i))
                    unsettled.wake_settler()
                    most = max(most, len(unsettled.deliveries))
                    if len(unsettled.deliveries) >= window:
                        await unsettled.wait_for_room()
                    elif i % 50 == 0:
                        await trio.lowlevel.checkpoint()
            finally:
                unsettled.close()
    return latencies, most


async def test_every_record_is_settled_in_send_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench, "SETTLE_WINDOW", 300)
    broker = FakeBroker({"t": 1}, latency=0.002)
    latencies, most = await _produce(broker, 2000, 300)
    assert len(latencies) == 2000
    assert all(0 <= ms < 5000 for ms in latencies)
    assert most <= 300
    assert broker.log(("t", 0)) == [b"v%d" % i for i in range(2000)]


async def test_a_failed_record_raises_its_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench, "SETTLE_WINDOW", 300)
    broker = FakeBroker({"t": 1}, latency=0.002)
    broker.script.append((("t", 0), ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER))
    with pytest.RaisesGroup(OutOfOrderSequenceError, flatten_subgroups=True):
        await _produce(broker, 2000, 300)


async def test_a_record_failed_behind_acknowledged_ones_raises() -> None:
    """Settled in one pass (all outcomes known): the failed record of the second batch raises
    once the first batch's latencies are in."""
    broker = FakeBroker({"t": 1}, latency=0.002)
    unsettled = bench._Unsettled()
    async with FakeProducer(broker, linger_ms=0) as p:
        for i in range(3):
            if i == 1:
                broker.script.append((("t", 0), ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER))
            for _ in range(5):
                unsettled.sent_at.append(time.perf_counter())
                unsettled.deliveries.append(p.send_nowait("t", b"v"))
            if i == 1:
                with pytest.raises(SluiceError):
                    await p.flush()
            else:
                await p.flush()
    unsettled.close()
    latencies = array("d")
    with bench._progress(15, "produce", True) as progress:
        task = progress.add_task("produce", total=15)
        with pytest.raises(OutOfOrderSequenceError):
            await bench._settle(unsettled, latencies, progress, task)
    assert len(latencies) == 5 and len(unsettled.deliveries) == 10
