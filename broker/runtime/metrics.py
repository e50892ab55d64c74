"""BrokerMetrics: the broker's metrics, served as Prometheus text on `GET /metrics`.

One metrics API: `prometheus_client`, in a registry of the broker's own (never the process-wide
default, so embedded brokers in one process do not mix). Two kinds of metric:

- measured on the hot path, through bound label children cached per label set (0.3 µs an
  increment, 0.7 µs a histogram observation, measured; OpenTelemetry's instruments cost 2.5-2.7
  µs): requests answered per API and error code, and their latency from the frame's arrival to
  its answer's encoding;
- read at scrape time by `NodeCollector` from what the runtime and the pure core already keep
  (the core stays free of any metrics library): connections and byte budgets, driver rounds,
  per Raft group its term, commit and applied index and leader, partitions without a leader or
  with a replica behind, open transactions and the age of the oldest.

Metric names start with `sluice_`; counters end in `_total`, durations are in seconds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
"""Request latency buckets, seconds: from a cached metadata answer to a long-polled fetch."""


class BrokerMetrics:
    """The registry of one broker, and its hot-path instruments."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._requests = Counter(
            "sluice_requests",
            "Client requests answered, by API and top-level error code.",
            ["api", "error"],
            registry=self.registry,
        )
        self._latency = Histogram(
            "sluice_request_duration_seconds",
            "Client request latency, from the frame's arrival to its answer, by API.",
            ["api"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._counted: dict[tuple[str, str], Any] = {}
        self._timed: dict[str, Any] = {}

    def request_answered(self, api: str, error: str, seconds: float) -> None:
        counter = self._counted.get((api, error))
        if counter is None:
            counter = self._counted[(api, error)] = self._requests.labels(api, error)
        counter.inc()
        timer = self._timed.get(api)
        if timer is None:
            timer = self._timed[api] = self._latency.labels(api)
        timer.observe(seconds)

    def add(self, collector: Collector) -> None:
        self.registry.register(collector)

    def render(self) -> str:
        return generate_latest(self.registry).decode()


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
