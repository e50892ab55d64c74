"""Records a Producer holds until the partition count of their topic is confirmed.

A record sent to a partition the cached metadata does not list may be for a topic that grew
since that read. `HeldRecords` holds it (with every later record of its topic, to keep their
order) until fresh metadata reads give the count, read again for up to CONFIRM_S while the
partition is missing, rotating over the brokers: then each record goes to the producer's core
when its partition exists (or the topic is unknown: the core waits for it) and fails with a
non-retriable UnknownTopicError when it does not. `send` and `partitions_for` read counts
the same way (`topic_count`, `confirm_partition`, `confirmed_count`). When no broker answers
metadata, the failure is BrokerUnavailableError (NETWORK_EXCEPTION, naming the brokers
tried: `unreachable`), not UnknownTopicError.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import trio

from broker.wire.batch import Record
from consumers.cluster import Backoff, Cluster
from consumers.core.accumulator import Batch
from consumers.core.metadata import out_of_range
from consumers.core.producer import ProducerCore
from consumers.delivery import Delivery
from consumers.errors import (
    BrokerUnavailableError,
    RequestTimedOutError,
    SluiceError,
    UnknownTopicError,
)

__all__ = ["CONFIRM_S", "Held", "HeldRecords", "out_of_range_error", "unreachable"]

CONFIRM_S = 0.5
"""Seconds a missing topic or partition is read again before it is taken as missing."""


@dataclass(slots=True)
class Held:
    """A record sent to a partition the cached metadata does not list, waiting for a fresh
    metadata read to confirm the topic's partition count (it may have grown); `size` in
    bytes (its estimate), `deadline` in Trio time (its delivery deadline)."""

    delivery: Delivery
    record: Record
    key: bytes | None
    partition: int | None
    size: int
    deadline: float


def out_of_range_error(topic: str, partition: int, count: int) -> UnknownTopicError:
    """The final error of a record sent to a partition the topic does not have."""
    return UnknownTopicError(out_of_range(topic, partition, count), retriable=False)


def unreachable(topic: str, error: SluiceError, waited_s: float) -> BrokerUnavailableError:
    """NETWORK_EXCEPTION for `topic` when no broker could be reached in `waited_s`
    seconds; `error` (the last metadata failure) names the brokers tried."""
    return BrokerUnavailableError(
        f"topic {topic!r}: no broker reachable in {waited_s:.1f} s: {error.message}"
    )


class HeldRecords:
    """A Producer's held records, per topic in send order, and the fresh partition counts
    that release them.

    `cluster`, `core` and `backoff` are the producer's (metadata reads, routing, the wait
    between reads); `delivery_timeout_s`: seconds a held record may wait at most; `now`: the
    Trio clock. A released record is handed to `on_routed(delivery, batch, index)` once the
    core routed it, or to `on_unroutable(delivery, size, error)` when it failed; `wake` is
    called once a topic's records are released.
    """

    def __init__(
        self,
        *,
        cluster: Cluster,
        core: ProducerCore[Delivery],
        backoff: Backoff,
        delivery_timeout_s: float,
        now: Callable[[], float],
        on_routed: Callable[[Delivery, Batch, int], None],
        on_unroutable: Callable[[Delivery, int, SluiceError], None],
        wake: Callable[[], None],
    ) -> None:
        """Nothing held yet (see the class for the parameters)."""
        self._cluster = cluster
        self._core = core
        self._backoff = backoff
        self._delivery_timeout_s = delivery_timeout_s
        self._now = now
        self._on_routed = on_routed
        self._on_unroutable = on_unroutable
        self._wake = wake
        self.queues: dict[str, deque[Held]] = {}
        """Per topic, records waiting for a fresh partition count, in send order (read it,
        do not change it: the producer's enqueue path tests it for emptiness)."""

    def __contains__(self, topic: object) -> bool:
        """Whether records of `topic` are held."""
        return topic in self.queues

    def must_hold(self, topic: str, partition: int | None) -> bool:
        """Whether a record must wait for a fresh partition count: records of the topic are
        held already (order is kept), or its partition is beyond the cached count."""
        if topic in self.queues:
            return True
        if partition is None:
            return False
        if partition < 0:
            raise ValueError("partition must be >= 0")
        count = self._cluster.metadata.partition_count(topic)
        return count is not None and partition >= count and topic not in self._core.unrouted

    def hold(
        self,
        nursery: trio.Nursery,
        topic: str,
        record: Record,
        key: bytes | None,
        partition: int | None,
        size: int,
    ) -> Delivery:
        """Hold a record of `topic` (`size`: its estimated bytes) and return its pending
        Delivery; the first record held of a topic starts, in `nursery`, the task that reads
        the count and releases the topic's records."""
        delivery = Delivery(topic, record.timestamp)
        delivery._routed = trio.Event()
        queue = self.queues.get(topic)
        if queue is None:
            queue = self.queues[topic] = deque()
            nursery.start_soon(self._release, topic, queue)
        deadline = self._now() + self._delivery_timeout_s
        queue.append(Held(delivery, record, key, partition, size, deadline))
        return delivery

    def deliveries(self) -> list[Delivery]:
        """The deliveries of every held record."""
        return [h.delivery for q in self.queues.values() for h in q]

    def take_all(self) -> list[Held]:
        """Every held record, no longer held (their release tasks then do nothing)."""
        queues, self.queues = self.queues, {}
        return [h for q in queues.values() for h in q]

    async def _release(self, topic: str, queue: deque[Held]) -> None:
        """Read the topic's partition count afresh, then route the held records in order:
        to the core when their partition exists (or the topic is unknown: the core waits
        for it), failed for good when it does not."""
        failure: SluiceError | None = None
        try:
            wanted = max(h.partition for h in queue if h.partition is not None)
            count = await self.confirmed_count(topic, queue[0].deadline, wanted)
        except SluiceError as e:
            failure = e
            count = self._cluster.metadata.partition_count(topic)
        if self.queues.get(topic) is not queue:
            return  # closed meanwhile: the producer failed them (`take_all`)
        del self.queues[topic]
        now = self._now()
        for h in queue:
            if h.partition is not None and count is not None and h.partition >= count:
                reason = failure or out_of_range_error(topic, h.partition, count)
                self._on_unroutable(h.delivery, h.size, reason)
                continue
            try:
                routed = self._core.enqueue(
                    topic, h.record, h.key, h.partition, h.size, now, h.delivery
                )
            except SluiceError as e:
                self._on_unroutable(h.delivery, h.size, e)
                continue
            if routed is not None:
                self._on_routed(h.delivery, routed[0], routed[1])
        self._wake()

    async def topic_count(self, topic: str, deadline: float) -> int:
        """The topic's partition count, waiting for its metadata until `deadline` (Trio
        time): UnknownTopicError past it, or BrokerUnavailableError if no broker answered."""
        try:
            meta = await self._cluster.topic(topic, deadline)
        except RequestTimedOutError as e:
            if isinstance(e.__cause__, BrokerUnavailableError):
                raise unreachable(topic, e.__cause__, self._delivery_timeout_s) from None
            raise
        except BrokerUnavailableError as e:
            raise unreachable(topic, e, self._delivery_timeout_s) from None
        return len(meta.partitions)

    async def confirm_partition(self, topic: str, partition: int, deadline: float) -> None:
        """Raise UnknownTopicError (not retriable) unless a fresh metadata read lists
        `partition` (the topic may have grown since the cached read); `deadline` in Trio
        time."""
        count = await self.confirmed_count(topic, deadline, partition)
        if count is None:
            raise UnknownTopicError(f"topic {topic!r} does not exist", retriable=False)
        if partition >= count:
            raise out_of_range_error(topic, partition, count)

    async def confirmed_count(
        self, topic: str, deadline: float, partition: int | None
    ) -> int | None:
        """The topic's partition count from fresh metadata reads; while the topic (or its
        `partition`) is missing, read again with backoff for up to CONFIRM_S: successive
        reads rotate over the brokers, so one that has not applied the topic's creation or
        growth yet does not decide alone. None: the topic does not exist. `deadline` in
        Trio time."""
        until = min(deadline, trio.current_time() + CONFIRM_S)
        attempt = 0
        while True:
            count = await self._fresh_count(topic, deadline)
            if count is not None and (partition is None or partition < count):
                return count
            if trio.current_time() >= until:
                return count
            await trio.sleep(self._backoff.delay(attempt))
            attempt += 1

    async def _fresh_count(self, topic: str, deadline: float) -> int | None:
        """The topic's partition count (None: no such topic) from a metadata read made now,
        retried with backoff while no broker answers, until `deadline` (Trio time; then
        BrokerUnavailableError)."""
        last: SluiceError | None = None
        attempt = 0
        start = trio.current_time()
        with trio.move_on_at(deadline):
            while True:
                try:
                    await self._cluster.refresh([topic])
                except SluiceError as e:
                    if not e.retriable:
                        raise
                    last = e
                else:
                    return self._cluster.metadata.partition_count(topic)
                await trio.sleep(self._backoff.delay(attempt))
                attempt += 1
        if last is None:
            last = RequestTimedOutError("no broker answered metadata in time")
        raise unreachable(topic, last, trio.current_time() - start)
