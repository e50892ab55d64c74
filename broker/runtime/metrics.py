"""BrokerMetrics: the broker's metrics, served as Prometheus text on `GET /metrics` (and pushed
by OTLP when configured: otlp_metrics.py converts the same registry's samples).

One metrics API: `prometheus_client`, in a registry of the broker's own (never the process-wide
default, so embedded brokers in one process do not mix). Three kinds of metric:

- measured on the hot path, through bound label children cached per label set (0.3 µs an
  increment, 0.7 µs a histogram observation, measured; OpenTelemetry's instruments cost 2.5-2.7
  µs), per request or per round, never per record (server.py `_measure`, driver.py `_round`;
  all of a produce answer's measuring costs about 6.5 µs, measured):
  - `sluice_requests_total{api,error}`: requests answered, by API and top-level error code;
  - `sluice_request_duration_seconds{api}`: from the frame's arrival to its answer's encoding;
  - `sluice_request_bytes_total{api}`, `sluice_response_bytes_total{api}`: request frames
    received and answer frames sent, length prefix included;
  - `sluice_records_produced_total{topic}`: records of the produce batches this broker
    acknowledged (answered without error), from batch headers; a producer's retry answered
    as a duplicate counts again;
  - `sluice_records_fetched_total{topic}`: records of the batches fetch answers carried, from
    batch headers: whole batches, so records before the fetch offset in the first batch and
    aborted transactional records count too (control batches do not);
  - `sluice_produce_commit_seconds`: a produce request's duration, from its arrival to the
    answer its commit allows, for answers without any error;
  - `sluice_store_write_seconds`, `sluice_round_entries`, `sluice_round_bytes`: per driver
    round whose write was synced, the write's duration, and the Raft entries and their
    payload bytes it carried (0 entries: a vote or snapshot alone);
- read at scrape time by `NodeCollector` from what the runtime and the pure core already keep
  (the core stays free of any metrics library): node_metrics.py lists them;
- with OTLP export on, `sluice_otlp_exports_total{result}` (otlp_metrics.py).

Metric names start with `sluice_`; counters end in `_total`, durations are in seconds, sizes in
bytes. Per-topic children go with their topic: given `topics` (the names in the broker's
metadata), every collection of the whole registry (a scrape, an OTLP export) first removes
the children and series of topics no longer there (one look-up per topic with a series); a
topic created again under the same name starts from 0 (a counter reset). Other label
children (APIs, error codes) are never removed: their values are few and fixed.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterator
from contextlib import suppress
from typing import Any

import trio
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
"""Request latency buckets, seconds: from a cached metadata answer to a long-polled fetch."""
STORE_WRITE_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip
"""Synced write buckets, seconds: an fsync costs 150-400 µs here; a stalled disk seconds."""
ROUND_ENTRIES_BUCKETS = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
"""Entries per written round: group commit shows as rounds of many entries."""
ROUND_BYTES_BUCKETS = tuple(float(256 * 4**i) for i in range(10))
"""Entry payload bytes per written round: 256 B to 64 MiB in steps of 4."""


class BrokerMetrics:
    """The registry of one broker, and its hot-path instruments."""

    def __init__(self, topics: Callable[[], Container[str]] | None = None) -> None:
        """`topics`: the topic names that exist (the broker's metadata), read at each
        collection to drop the per-topic series of deleted topics; None keeps them all."""
        r = self.registry = CollectorRegistry(auto_describe=False)
        self._topics = topics
        if topics is not None:
            r.register(_TopicPruner(self))  # first: it runs before the counters are collected
        self._requests = Counter(
            "sluice_requests",
            "Client requests answered, by API and top-level error code.",
            ["api", "error"],
            registry=r,
        )
        self._latency = Histogram(
            "sluice_request_duration_seconds",
            "Client request latency, from the frame's arrival to its answer, by API.",
            ["api"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._request_bytes = Counter(
            "sluice_request_bytes",
            "Bytes of client request frames received (length prefix included), by API.",
            ["api"],
            registry=r,
        )
        self._response_bytes = Counter(
            "sluice_response_bytes",
            "Bytes of answer frames sent to clients (length prefix included), by API.",
            ["api"],
            registry=r,
        )
        self._produced = Counter(
            "sluice_records_produced",
            "Records of the produce batches this broker acknowledged, by topic (a retried "
            "batch answered as a duplicate counts again).",
            ["topic"],
            registry=r,
        )
        self._fetched = Counter(
            "sluice_records_fetched",
            "Records of the batches fetch answers carried, by topic: whole batches (records "
            "before the fetch offset and aborted transactional ones included; control "
            "batches not).",
            ["topic"],
            registry=r,
        )
        self._commit = Histogram(
            "sluice_produce_commit_seconds",
            "From a produce request's arrival to its answer once committed (no error).",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._store_write = Histogram(
            "sluice_store_write_seconds",
            "From each driver round's store write to its durability (rounds that needed a sync).",
            buckets=STORE_WRITE_BUCKETS,
            registry=r,
        )
        self._round_entries = Histogram(
            "sluice_round_entries",
            "Raft log entries written by each synced driver round.",
            buckets=ROUND_ENTRIES_BUCKETS,
            registry=r,
        )
        self._round_bytes = Histogram(
            "sluice_round_bytes",
            "Raft entry payload bytes written by each synced driver round.",
            buckets=ROUND_BYTES_BUCKETS,
            registry=r,
        )
        self._counted: dict[tuple[str, str], Any] = {}
        self._per_api: dict[str, tuple[Any, Any, Any]] = {}
        """api -> its (latency, request bytes, response bytes) children."""
        self._per_topic_produced: dict[str, Any] = {}
        self._per_topic_fetched: dict[str, Any] = {}

    def request_answered(
        self,
        api: str,
        error: str,
        seconds: float,
        request_bytes: int = 0,
        response_bytes: int = 0,
    ) -> None:
        """One answered request: counted, timed, and its frames' bytes added."""
        counter = self._counted.get((api, error))
        if counter is None:
            counter = self._counted[(api, error)] = self._requests.labels(api, error)
        counter.inc()
        per = self._per_api.get(api)
        if per is None:
            per = self._per_api[api] = (
                self._latency.labels(api),
                self._request_bytes.labels(api),
                self._response_bytes.labels(api),
            )
        timer, received, sent = per
        timer.observe(seconds)
        received.inc(request_bytes)
        sent.inc(response_bytes)

    def produce_committed(self, seconds: float) -> None:
        """A produce request answered without error after `seconds`."""
        self._commit.observe(seconds)

    def records_produced(self, topic: str, records: int) -> None:
        """`records` of produce batches acknowledged (duplicates of a retry included)."""
        child = self._per_topic_produced.get(topic)
        if child is None:
            child = self._per_topic_produced[topic] = self._produced.labels(topic)
        child.inc(records)

    def records_fetched(self, topic: str, records: int) -> None:
        """`records` in the whole batches of a fetch answer (data batches: those before the
        fetch offset and aborted transactional ones included)."""
        child = self._per_topic_fetched.get(topic)
        if child is None:
            child = self._per_topic_fetched[topic] = self._fetched.labels(topic)
        child.inc(records)

    def forget_deleted_topics(self) -> None:
        """Remove the per-topic children and series of topics `topics()` no longer holds."""
        if self._topics is None:
            return
        existing = self._topics()
        for cache, counter in (
            (self._per_topic_produced, self._produced),
            (self._per_topic_fetched, self._fetched),
        ):
            for topic in [t for t in cache if t not in existing]:
                del cache[topic]
                with suppress(KeyError):
                    counter.remove(topic)

    def round_written(self, seconds: float, entries: int, nbytes: int) -> None:
        """A driver round's synced write: its duration, Raft entries and their bytes."""
        self._store_write.observe(seconds)
        self._round_entries.observe(entries)
        self._round_bytes.observe(nbytes)

    def add(self, collector: Collector) -> None:
        self.registry.register(collector)

    def render(self) -> str:
        """The exposition text, collected and formatted on the caller's thread."""
        return generate_latest(self.registry).decode()

    async def render_off_loop(self) -> str:
        """The exposition text for a scrape: the registry is collected here, on the event
        loop (collectors read the node, which only the loop may touch; about 4 ms for 300
        partitions), and the text is formatted in a worker thread (about 10 ms), which
        gives the loop the GIL back every switch interval instead of pausing it."""
        families = list(self.registry.collect())
        text: bytes = await trio.to_thread.run_sync(generate_latest, _Collected(families))
        return text.decode()


class _Collected(CollectorRegistry):
    """Metric families already collected, as a registry `generate_latest` can format."""

    def __init__(self, families: list[Metric]) -> None:
        super().__init__(auto_describe=False)
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


class _TopicPruner(Collector):
    """Registered first: each collection of the registry starts by forgetting the series
    of deleted topics (metrics.forget_deleted_topics); it yields no metric itself."""

    def __init__(self, metrics: BrokerMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        self._metrics.forget_deleted_topics()
        return iter(())


Sample = tuple[str, str, str, list[tuple[tuple[str, ...], float]], tuple[str, ...]]
"""(kind "gauge" or "counter", name, help, [(label values, value)], label names)."""


class NodeCollector(Collector):
    """Metrics read at scrape time from `read()`: a list of `Sample`s the broker assembles
    from its runtime and core (see broker/app.py)."""

    def __init__(self, read: Callable[[], list[Sample]]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        for kind, name, help_text, values, labels in self._read():
            family: GaugeMetricFamily | CounterMetricFamily
            if kind == "counter":
                family = CounterMetricFamily(name, help_text, labels=list(labels))
            else:
                family = GaugeMetricFamily(name, help_text, labels=list(labels))
            for label_values, value in values:
                family.add_metric(list(label_values), value)
            yield family
