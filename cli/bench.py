"""`sluice bench produce|consume`: throughput and latency against a running broker.

produce: `--concurrency` producers send `--records` records of `--record-size` bytes (keyless,
spread over the topic's partitions) as fast as acknowledgements allow; latency is per record,
from send to acknowledgement. consume: reads `--records` records from the beginning. Both print
records/s, MB/s and (produce) latency p50/p99/p999; `--json` prints the same as one object.
A benchmark reports figures; it never fails on them.
"""

from __future__ import annotations

import gc
import json
import os
import time
from array import array
from collections import deque
from typing import Annotated

import trio
import typer
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from cli.common import DEFAULT_BOOTSTRAP, Bootstrap, Json, Timeout, admin, run
from consumers import BufferFull, Consumer, Delivery, Producer
from consumers.errors import TopicAlreadyExistsError

app = typer.Typer(no_args_is_help=True, help="Measure throughput and latency.")

PACE_STEP_S = 0.001
"""`--rate` paces in steps of this much: the sender sleeps only once it is that far ahead of
schedule (Kafka's ThroughputThrottler does the same in 2 ms steps), so at 5,000 records/s it
wakes 1,000 times a second, not 5,000, and its own CPU does not crowd the brokers'."""

Records = Annotated[int, typer.Option("--records", min=1, help="Records to send or read.")]
Topic = Annotated[str, typer.Option("--topic", help="Topic (created if missing).")]


def _progress(total: int, label: str, quiet: bool) -> Progress:
    return Progress(
        TextColumn(label),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeRemainingColumn(),
        disable=quiet,
        transient=True,
    )


def _percentile(sorted_ms: list[float], p: float) -> float:
    if not sorted_ms:
        return 0.0
    return sorted_ms[min(len(sorted_ms) - 1, int(len(sorted_ms) * p))]


def _freeze_startup_heap() -> None:
    """Exempt what exists before the measured loop (modules, the CLI's own objects: ~65,000)
    from garbage collection (`gc.freeze`). A full collection runs every few ten thousand
    records a client keeps alive for a while (records, deliveries) and walked all of it:
    a tenth of a `bench produce` client's time went there. Objects made afterwards are
    collected as ever; a benchmark only, the library never touches the collector."""
    gc.collect()
    gc.freeze()


async def _ensure_topic(
    bootstrap: str, topic: str, partitions: int, replication_factor: int, timeout: float
) -> None:
    """Create `topic` unless it exists (retried for `timeout` seconds)."""
    async with admin(bootstrap, timeout) as a:
        try:
            await a.create_topic(topic, partitions, replication_factor, timeout_ms=timeout * 1000)
        except TopicAlreadyExistsError:
            return


@app.command("produce")
def bench_produce(
    records: Records = 200_000,
    record_size: Annotated[int, typer.Option("--record-size", min=0, help="Value bytes.")] = 100,
    batch_bytes: Annotated[
        int, typer.Option("--batch-size", min=1024, help="Max bytes per batch.")
    ] = 256 * 1024,
    linger_ms: Annotated[float, typer.Option("--linger-ms", min=0, help="Batch linger.")] = 5.0,
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, help="Producers sending at once.")
    ] = 1,
    rate: Annotated[
        float, typer.Option("--rate", min=0, help="Records/s to offer in total (0: flat out).")
    ] = 0.0,
    partitions: Annotated[int, typer.Option("--partitions", min=1)] = 4,
    replication_factor: Annotated[
        int,
        typer.Option(
            "--replication-factor", min=1, help="Replicas of a topic this command creates."
        ),
    ] = 1,
    topic: Topic = "sluice-bench",
    bootstrap: Bootstrap = DEFAULT_BOOTSTRAP,
    timeout: Timeout = 30.0,
    as_json: Json = False,
) -> None:
    """Send records and report throughput and acknowledgement latency."""
    value = os.urandom(record_size)

    async def go() -> dict[str, float]:
        await _ensure_topic(bootstrap, topic, partitions, replication_factor, timeout)
        _freeze_startup_heap()
        # Milliseconds, one per record: an array of doubles, not a list of floats, which
        # every full garbage collection of the client would walk (millions in a long run).
        latencies = array("d")
        per = [records // concurrency + (i < records % concurrency) for i in range(concurrency)]
        with _progress(records, "produce", as_json) as progress:
            task = progress.add_task("produce", total=records)

            async def worker(n: int) -> None:
                interval = concurrency / rate if rate else 0.0
                unsettled = _Unsettled()
                sent_at, deliveries = unsettled.sent_at, unsettled.deliveries
                perf_counter = time.perf_counter
                async with Producer(
                    bootstrap, linger_ms=linger_ms, batch_bytes=batch_bytes,
                    delivery_timeout_s=timeout,
                ) as p, trio.open_nursery() as nursery:  # fmt: skip
                    nursery.start_soon(_settle, unsettled, latencies, progress, task)
                    try:
                        next_at = trio.current_time()
                        for i in range(n):
                            if interval:
                                next_at += interval
                                if next_at - trio.current_time() >= PACE_STEP_S:
                                    await trio.sleep_until(next_at)
                            sent = perf_counter()
                            try:
                                d = p.send_nowait(topic, value)
                            except BufferFull:
                                d = await p.send(topic, value)
                            sent_at.append(sent)
                            deliveries.append(d)
                            if unsettled.records_wanted is not None:
                                unsettled.wake_settler()
                            if len(deliveries) >= SETTLE_WINDOW:
                                await unsettled.wait_for_room()
                            elif i % 256 == 0:
                                await trio.lowlevel.checkpoint()
                    finally:
                        unsettled.close()

            start = time.perf_counter()
            async with trio.open_nursery() as nursery:
                for n in per:
                    nursery.start_soon(worker, n)
            elapsed = time.perf_counter() - start
        ordered = sorted(latencies)
        return {
            "records": records,
            "record_bytes": record_size,
            "seconds": round(elapsed, 3),
            "records_per_s": round(records / elapsed, 1),
            "mb_per_s": round(records * record_size / elapsed / 1e6, 2),
            "latency_p50_ms": round(_percentile(ordered, 0.50), 3),
            "latency_p99_ms": round(_percentile(ordered, 0.99), 3),
            "latency_p999_ms": round(_percentile(ordered, 0.999), 3),
        }

    _report(run(go), as_json)


SETTLE_WINDOW = 10_000
"""A worker waits once this many of its records are sent and not yet settled by the bench,
until the oldest are: the bound its queue of deliveries always had (a memory channel of
this capacity before), so the figures stay comparable."""


class _Unsettled:
    """One worker's records sent and not yet settled, oldest first: the `perf_counter` time
    of each send and its Delivery, in two deques the worker appends to and `_settle` takes
    from. Two appends per record, where a memory channel cost a send and a receive; the
    events below are made only while one side actually waits."""

    def __init__(self) -> None:
        self.sent_at: deque[float] = deque()
        self.deliveries: deque[Delivery] = deque()
        self.closed = False
        """The worker sent its last record."""
        self.records_wanted: trio.Event | None = None
        """Set while `_settle` waits for a record (none is left to settle)."""
        self._room: trio.Event | None = None

    def wake_settler(self) -> None:
        """New records or the end of them: `_settle` looks again."""
        if self.records_wanted is not None:
            self.records_wanted.set()
            self.records_wanted = None

    async def wait_for_records(self) -> None:
        self.records_wanted = trio.Event()
        await self.records_wanted.wait()

    def close(self) -> None:
        self.closed = True
        self.wake_settler()

    async def wait_for_room(self) -> None:
        while len(self.deliveries) >= SETTLE_WINDOW:
            self._room = trio.Event()
            await self._room.wait()

    def made_room(self) -> None:
        if self._room is not None and len(self.deliveries) < SETTLE_WINDOW:
            self._room.set()
            self._room = None


async def _settle(
    unsettled: _Unsettled, latencies: array[float], progress: Progress, task: TaskID
) -> None:
    """Settle a worker's records in send order: each latency runs from its send to the
    moment the producer received its batch's acknowledgement (`Delivery.settled_at`), so a
    slow record does not inflate the figures of those after it; a failed record raises its
    error. Sends are timed with `perf_counter`, whose offset to Trio's clock (the
    acknowledgement times) is read once: trio.current_time() per record cost more."""
    offset = trio.current_time() - time.perf_counter()
    sent_at, deliveries = unsettled.sent_at, unsettled.deliveries
    append = latencies.append
    while True:
        if not deliveries:
            if unsettled.closed:
                return
            progress.update(task, completed=len(latencies))
            await unsettled.wait_for_records()
            continue
        head = deliveries[0]
        if not head.done:
            progress.update(task, completed=len(latencies))
            await head.wait()  # raises the record's error
        # Every acknowledged record at the front (its batch's at once, and the batches after
        # it that settled meanwhile), in send order.
        while deliveries:
            d = deliveries[0]
            settled = d.settled_at
            if settled is None:
                if d.done:
                    d.result()  # failed before it was routed: raises its error
                break
            error = d.exception()
            if error is not None:
                raise error
            deliveries.popleft()
            append((settled - offset - sent_at.popleft()) * 1000)
        unsettled.made_room()


@app.command("consume")
def bench_consume(
    records: Records = 200_000,
    topic: Topic = "sluice-bench",
    bootstrap: Bootstrap = DEFAULT_BOOTSTRAP,
    timeout: Timeout = 30.0,
    as_json: Json = False,
) -> None:
    """Read records from the beginning of a topic and report throughput."""

    async def go() -> dict[str, float]:
        _freeze_startup_heap()
        got = 0
        size = 0
        async with Consumer(bootstrap, auto_offset_reset="earliest") as c:
            c.subscribe([topic])
            with _progress(records, "consume", as_json) as progress:
                task = progress.add_task("consume", total=records)
                start = time.perf_counter()
                with trio.fail_after(max(timeout, 1.0) + records / 1000):
                    while got < records:
                        batch = await c.poll(timeout=1.0, max_records=min(5000, records - got))
                        got += len(batch)
                        size += sum(len(r.value or b"") for r in batch)
                        progress.advance(task, len(batch))
                elapsed = time.perf_counter() - start
        return {
            "records": got,
            "seconds": round(elapsed, 3),
            "records_per_s": round(got / elapsed, 1),
            "mb_per_s": round(size / elapsed / 1e6, 2),
        }

    _report(run(go), as_json)


def _report(figures: dict[str, float], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(figures))
        return
    for key, value in figures.items():
        typer.echo(f"{key:>16}: {value}")
