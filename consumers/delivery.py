"""What a Producer hands back for each record: `Delivery` (the record's outcome, awaitable)
and, once the record is acknowledged, its `RecordMetadata`.

A Delivery is bound to its batch when the producer routes the record (`_bind`), or fails
before that (`_fail_unrouted`); every delivery of a batch waits on one `Settle` (an event
and the done-callbacks, run by `call_back` right when the batch settles). A callback's
exception is logged under the logger `consumers.producer` (where the Producer lived before
this module was split from it) and never reaches the producer.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import trio

from consumers.core.accumulator import Batch
from consumers.errors import SluiceError

__all__ = ["Delivery", "DoneCallback", "RecordMetadata", "Settle", "call_back", "fresh"]

logger = logging.getLogger("consumers.producer")
"""Where a done-callback's exception is logged (named as `add_done_callback` documents)."""


DoneCallback = Callable[["Delivery"], object]
"""`fn(delivery)`, called once the delivery settles (see `Delivery.add_done_callback`)."""


@dataclass(frozen=True, slots=True)
class RecordMetadata:
    """Where an acknowledged record was written: `topic`, `partition`, `offset` and the
    record's `timestamp` (milliseconds since the epoch)."""

    topic: str
    partition: int
    offset: int
    timestamp: int


class Settle:
    """One batch's outcome as its deliveries see it: `event` is set when the batch settles;
    `callbacks` are the done-callbacks of its deliveries, run right after."""

    __slots__ = ("callbacks", "event")

    def __init__(self) -> None:
        """Not settled, no callbacks."""
        self.event = trio.Event()
        self.callbacks: list[tuple[Delivery, DoneCallback]] | None = None


class Delivery:
    """The outcome of one sent record: `md = await delivery` (or `await delivery.wait()`)
    gives its `RecordMetadata` once acknowledged and raises its typed error if it failed;
    `done`, `result()` and `exception()` look without waiting; `add_done_callback(fn)` calls
    `fn(delivery)` once it settles."""

    __slots__ = (
        "_batch",
        "_callbacks",
        "_done",
        "_error",
        "_index",
        "_routed",
        "timestamp",
        "topic",
    )

    def __init__(self, topic: str, timestamp: int) -> None:
        """A pending delivery of a record of `topic` stamped `timestamp` (milliseconds since
        the epoch); the producer creates it."""
        self.topic = topic
        self.timestamp = timestamp
        self._batch: Batch | None = None
        self._done: Settle | None = None
        """The batch's outcome (its event is set when the batch settles)."""
        self._index = 0
        self._routed: trio.Event | None = None
        self._error: SluiceError | None = None
        self._callbacks: list[DoneCallback] | None = None
        """Callbacks added before the record was routed to a batch."""

    def _bind(self, batch: Batch, index: int, done: Settle) -> None:
        """The record was routed: it is record `index` of `batch`, whose outcome is `done`
        (the callbacks added so far move there)."""
        self._batch = batch
        self._index = index
        self._done = done
        if self._callbacks is not None:
            if done.callbacks is None:
                done.callbacks = []
            done.callbacks.extend((self, fn) for fn in self._callbacks)
            self._callbacks = None
        if self._routed is not None:
            self._routed.set()

    def _fail_unrouted(self, error: SluiceError) -> None:
        """The record failed with `error` before it reached a batch."""
        self._error = error
        if self._routed is not None:
            self._routed.set()
        callbacks, self._callbacks = self._callbacks, None
        for fn in callbacks or ():
            call_back(fn, self)

    @property
    def done(self) -> bool:
        """Whether the record settled: acknowledged or failed for good."""
        if self._error is not None:
            return True
        return self._batch is not None and self._batch.settled

    @property
    def settled_at(self) -> float | None:
        """Trio time at which the record's acknowledgement (or its batch's failure) arrived;
        None while pending or when it failed before it was routed."""
        return None if self._batch is None else self._batch.settled_at

    def __await__(self) -> Generator[Any, None, RecordMetadata]:
        """`md = await delivery` is `md = await delivery.wait()`."""
        return self.wait().__await__()

    async def wait(self) -> RecordMetadata:
        """The record's metadata once acknowledged; raises its typed error if it failed."""
        if self._batch is None and self._error is None:
            assert self._routed is not None
            await self._routed.wait()
        if self._batch is None:
            assert self._error is not None
            raise fresh(self._error)
        assert self._done is not None
        await self._done.event.wait()
        return self.result()

    def add_done_callback(self, fn: DoneCallback) -> None:
        """Call `fn(delivery)` once the record settles (acknowledged or failed), at once if
        it already has; each callback is called once. Callbacks run synchronously in the
        producer's Trio loop, in whichever of its tasks settled the record (the reader of
        the connection the acknowledgement came on, the sender, or the task closing the
        producer), so they must not block or await; `send_nowait` may be called. An
        exception a callback raises is logged (logger `consumers.producer`) and does not
        reach the producer."""
        if self.done:
            call_back(fn, self)
            return
        settle = self._done
        if settle is None:
            if self._callbacks is None:
                self._callbacks = []
            self._callbacks.append(fn)
            return
        if settle.callbacks is None:
            settle.callbacks = []
        settle.callbacks.append((self, fn))

    def exception(self) -> SluiceError | None:
        """The record's typed error now (a fresh copy), None once it was acknowledged, or
        RuntimeError while pending: `result()` without building its metadata."""
        if self._error is not None:
            return fresh(self._error)
        batch = self._batch
        if batch is None or batch.settled_at is None:
            raise RuntimeError("the record is not acknowledged yet")
        return None if batch.error is None else fresh(batch.error)

    def result(self) -> RecordMetadata:
        """The outcome now: metadata, the typed error, or RuntimeError while pending."""
        if self._error is not None:
            raise fresh(self._error)
        batch = self._batch
        if batch is None or not batch.settled:
            raise RuntimeError("the record is not acknowledged yet")
        if batch.error is not None:
            raise fresh(batch.error)
        topic, partition = batch.tp
        return RecordMetadata(topic, partition, batch.base_offset + self._index, self.timestamp)

    def __repr__(self) -> str:
        """`<Delivery topic='t' partition=2 offset=17 acknowledged>`; the partition once the
        record is routed, the offset once acknowledged, the error once failed."""
        fields = [f"topic={self.topic!r}"]
        batch = self._batch
        if batch is not None:
            fields.append(f"partition={batch.tp[1]}")
        error = self._error or (batch.error if batch is not None else None)
        if error is not None:
            state = f"failed ({error})"
        elif batch is None or not batch.settled:
            state = "pending"
        else:
            fields.append(f"offset={batch.base_offset + self._index}")
            state = "acknowledged"
        return f"<Delivery {' '.join(fields)} {state}>"


def call_back(fn: DoneCallback, delivery: Delivery) -> None:
    """Run one done-callback; its exception is logged, never raised into the producer."""
    try:
        fn(delivery)
    except Exception:
        logger.exception("a delivery callback (%r) of %r raised", fn, delivery)


def fresh(error: SluiceError) -> SluiceError:
    """A copy to raise (one failure is raised by every delivery of its batch)."""
    return copy.copy(error).with_traceback(None)
