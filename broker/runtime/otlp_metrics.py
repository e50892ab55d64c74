"""OTLP metrics export: the broker's one registry (metrics.py), pushed over OTLP/HTTP with
protobuf, only when the standard OpenTelemetry environment variables ask for it.

One metrics API: nothing here creates an instrument. Every `interval_s` the exporter collects
the same `prometheus_client` registry that `GET /metrics` renders and converts its samples to
an `ExportMetricsServiceRequest` (package `opentelemetry-proto`):
- counters -> cumulative monotonic Sums named as Prometheus shows them (`..._total`), started
  at the series' `_created` time (else the exporter's start);
- gauges -> Gauges;
- histograms -> cumulative explicit-bucket Histograms (per-bucket counts, the finite `le`
  bounds, count and sum);
one data point per label set, labels as string attributes; the resource carries
`service.name` and `sluice.node_id` (plus `OTEL_RESOURCE_ATTRIBUTES`).

Configuration (`OtlpConfig.from_env`; None: no export at all):
- on when `OTEL_METRICS_EXPORTER` lists `otlp`, or it is unset and
  `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT` is set; off when
  `OTEL_SDK_DISABLED=true` or the exporter list lacks `otlp` (`none`, `prometheus`);
- URL: `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` as is, else `OTEL_EXPORTER_OTLP_ENDPOINT` +
  `/v1/metrics`, else http://localhost:4318/v1/metrics; only http/protobuf is spoken
  (another `OTEL_EXPORTER_OTLP[_METRICS]_PROTOCOL` is warned about, then ignored);
- `OTEL_METRIC_EXPORT_INTERVAL` (ms, default 60000), `OTEL_EXPORTER_OTLP[_METRICS]_TIMEOUT`
  (ms, default 10000), `OTEL_EXPORTER_OTLP[_METRICS]_HEADERS` (`k=v,...`, values
  percent-decoded; the metrics form wins per key), `OTEL_SERVICE_NAME` (default
  "sluice-broker"), `OTEL_RESOURCE_ATTRIBUTES` (`k=v,...`).

Invariants: the registry is collected on the Trio thread (scrape-time collectors read the
core, which only that thread may touch); encoding and the POST run in a worker thread
(`urllib`, bounded by the timeout), one export in flight at a time (a slow collector delays
the next export, never stacks them). A failed export is counted (`stats`, and
`sluice_otlp_exports_total{result}` in the registry) and logged once per kind; it never
reaches the broker's nursery.
"""

from __future__ import annotations

import logging
import math
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from urllib.parse import unquote

import trio
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AGGREGATION_TEMPORALITY_CUMULATIVE,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily
from prometheus_client.core import Metric as PromMetric
from prometheus_client.registry import Collector

log = logging.getLogger("sluice.otlp")

CONTENT_TYPE = "application/x-protobuf"
DEFAULT_ENDPOINT = "http://localhost:4318"
DEFAULT_INTERVAL_MS = 60_000
DEFAULT_TIMEOUT_MS = 10_000
DEFAULT_SERVICE_NAME = "sluice-broker"
SCOPE = "sluice.broker"
_PROTOCOL = "http/protobuf"


def _pairs(text: str) -> list[tuple[str, str]]:
    """`k=v,k2=v2` (W3C baggage style: blanks trimmed, values percent-decoded); an item
    without `=` or with an empty key is skipped."""
    out = []
    for item in text.split(","):
        key, eq, value = item.partition("=")
        key = key.strip()
        if eq and key:
            out.append((key, unquote(value.strip())))
    return out


def _ms(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value <= 0:
        log.warning("%s=%r is not a positive number of ms: using %d", name, raw, default)
        return default
    return value


@dataclass(frozen=True, slots=True)
class OtlpConfig:
    url: str
    """Where each export is POSTed."""
    interval_s: float
    timeout_s: float
    headers: tuple[tuple[str, str], ...]
    service_name: str
    resource_attributes: tuple[tuple[str, str], ...]
    """From OTEL_RESOURCE_ATTRIBUTES, without service.name (that is `service_name`)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> OtlpConfig | None:
        """The export the environment asks for, or None (see the module doc)."""
        if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
            return None
        metrics_endpoint = env.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "").strip()
        endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
        exporters = env.get("OTEL_METRICS_EXPORTER", "").strip()
        if exporters:
            if "otlp" not in {e.strip().lower() for e in exporters.split(",")}:
                return None
        elif not (metrics_endpoint or endpoint):
            return None
        url = metrics_endpoint or (endpoint or DEFAULT_ENDPOINT).rstrip("/") + "/v1/metrics"
        protocol = (
            env.get("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "").strip()
            or env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "").strip()
        )
        if protocol and protocol != _PROTOCOL:
            log.warning("OTLP protocol %r is not supported: metrics go as %s", protocol, _PROTOCOL)
        headers = dict(_pairs(env.get("OTEL_EXPORTER_OTLP_HEADERS", "")))
        headers.update(_pairs(env.get("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "")))
        timeout_ms = _ms(
            env,
            "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT"
            if env.get("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT")
            else "OTEL_EXPORTER_OTLP_TIMEOUT",
            DEFAULT_TIMEOUT_MS,
        )
        attrs = dict(_pairs(env.get("OTEL_RESOURCE_ATTRIBUTES", "")))
        service = (
            env.get("OTEL_SERVICE_NAME", "").strip()
            or attrs.get("service.name")
            or DEFAULT_SERVICE_NAME
        )
        attrs.pop("service.name", None)
        return cls(
            url=url,
            interval_s=_ms(env, "OTEL_METRIC_EXPORT_INTERVAL", DEFAULT_INTERVAL_MS) / 1000,
            timeout_s=timeout_ms / 1000,
            headers=tuple(headers.items()),
            service_name=service,
            resource_attributes=tuple(attrs.items()),
        )


# -- conversion -----------------------------------------------------------------------------


def _attributes(labels: Mapping[str, str]) -> list[KeyValue]:
    return [KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in labels.items()]


def _unit(name: str) -> str:
    base = name.removesuffix("_total")
    if base.endswith("_seconds"):
        return "s"
    if base.endswith("_bytes"):
        return "By"
    return ""


def _key(labels: Mapping[str, str], drop: str = "") -> tuple[tuple[str, str], ...]:
    return tuple((k, v) for k, v in labels.items() if k != drop)


def convert(families: Iterable[PromMetric], *, now_ns: int, start_ns: int) -> Iterator[Metric]:
    """OTLP metrics of collected Prometheus families (counter, gauge, histogram; other types,
    which this broker does not export, are skipped). `start_ns` starts the cumulative
    series that carry no `_created` sample."""
    for family in families:
        if family.type == "counter":
            yield _sum(family, now_ns, start_ns)
        elif family.type == "gauge":
            points = [
                NumberDataPoint(
                    attributes=_attributes(s.labels), time_unix_nano=now_ns, as_double=s.value
                )
                for s in family.samples
                if s.name == family.name
            ]
            yield Metric(
                name=family.name,
                description=family.documentation,
                unit=_unit(family.name),
                gauge=Gauge(data_points=points),
            )
        elif family.type == "histogram":
            yield _histogram(family, now_ns, start_ns)


def _created(family: PromMetric, start_ns: int) -> dict[tuple[tuple[str, str], ...], int]:
    created = family.name + "_created"
    return {
        _key(s.labels): int(s.value * 1e9) if s.value > 0 else start_ns
        for s in family.samples
        if s.name == created
    }


def _sum(family: PromMetric, now_ns: int, start_ns: int) -> Metric:
    name = family.name + "_total"
    started = _created(family, start_ns)
    points = [
        NumberDataPoint(
            attributes=_attributes(s.labels),
            start_time_unix_nano=started.get(_key(s.labels), start_ns),
            time_unix_nano=now_ns,
            as_double=s.value,
        )
        for s in family.samples
        if s.name == name
    ]
    return Metric(
        name=name,
        description=family.documentation,
        unit=_unit(name),
        sum=Sum(
            data_points=points,
            aggregation_temporality=AGGREGATION_TEMPORALITY_CUMULATIVE,
            is_monotonic=True,
        ),
    )


@dataclass(slots=True)
class _Series:
    labels: dict[str, str]
    buckets: list[tuple[float, float]]
    count: float = 0.0
    total: float = 0.0


def _histogram(family: PromMetric, now_ns: int, start_ns: int) -> Metric:
    """Prometheus buckets are cumulative counts per `le`; OTLP's are counts per bucket, with
    the finite bounds listed (the last bucket is above the last bound)."""
    name = family.name
    started = _created(family, start_ns)
    series: dict[tuple[tuple[str, str], ...], _Series] = {}
    for s in family.samples:
        key = _key(s.labels, "le")
        one = series.get(key)
        if one is None:
            one = series[key] = _Series({k: v for k, v in s.labels.items() if k != "le"}, [])
        if s.name == name + "_bucket":
            one.buckets.append((float(s.labels["le"]), s.value))
        elif s.name == name + "_count":
            one.count = s.value
        elif s.name == name + "_sum":
            one.total = s.value
    points = []
    for key, one in series.items():
        if not one.buckets:
            continue  # only a _created sample
        one.buckets.sort()
        bounds = [le for le, _ in one.buckets if not math.isinf(le)]
        counts, below = [], 0.0
        for _, cumulative in one.buckets:
            counts.append(int(cumulative - below))
            below = cumulative
        if len(counts) == len(bounds):  # no +Inf bucket: everything counted is in range
            counts.append(int(one.count - below))
        points.append(
            HistogramDataPoint(
                attributes=_attributes(one.labels),
                start_time_unix_nano=started.get(key, start_ns),
                time_unix_nano=now_ns,
                count=int(one.count),
                sum=one.total,
                bucket_counts=counts,
                explicit_bounds=bounds,
            )
        )
    return Metric(
        name=name,
        description=family.documentation,
        unit=_unit(name),
        histogram=Histogram(
            data_points=points, aggregation_temporality=AGGREGATION_TEMPORALITY_CUMULATIVE
        ),
    )


def export_request(
    families: Iterable[PromMetric],
    *,
    service_name: str,
    node_id: int,
    resource_attributes: Iterable[tuple[str, str]] = (),
    now_ns: int,
    start_ns: int,
) -> ExportMetricsServiceRequest:
    """One request holding every family, under this broker's resource."""
    attrs = [
        KeyValue(key="service.name", value=AnyValue(string_value=service_name)),
        KeyValue(key="sluice.node_id", value=AnyValue(int_value=node_id)),
    ]
    attrs += [
        KeyValue(key=k, value=AnyValue(string_value=v))
        for k, v in resource_attributes
        if k != "sluice.node_id"
    ]
    return ExportMetricsServiceRequest(
        resource_metrics=[
            ResourceMetrics(
                resource=Resource(attributes=attrs),
                scope_metrics=[
                    ScopeMetrics(
                        scope=InstrumentationScope(name=SCOPE),
                        metrics=list(convert(families, now_ns=now_ns, start_ns=start_ns)),
                    )
                ],
            )
        ]
    )


# -- the exporter ---------------------------------------------------------------------------


class OtlpExporter:
    """Pushes `registry` every `config.interval_s` (run `run` in the broker's nursery)."""

    def __init__(self, config: OtlpConfig, registry: CollectorRegistry, node_id: int) -> None:
        self.config = config
        self.registry = registry
        self.node_id = node_id
        self.start_ns = time.time_ns()
        self.stats: dict[str, int] = {"ok": 0}
        """Exports by result: "ok", or the kind of failure."""
        self._logged: set[str] = set()
        registry.register(_ExportCounter(self.stats))

    async def run(self) -> None:
        """Export, then wait out the interval from the export's start (an export that
        overran it is followed at once by the next, never by two at a time)."""
        log.info("exporting metrics by OTLP to %s every %g s", self.config.url,
                 self.config.interval_s)  # fmt: skip
        while True:
            started = trio.current_time()
            await self.export_once()
            await trio.sleep_until(started + self.config.interval_s)

    async def export_once(self) -> None:
        """Collect here (the Trio thread), then encode and POST in a worker thread."""
        try:
            families = list(self.registry.collect())
        except Exception as e:  # a collector's bug must not end the broker
            self._record(("error", f"collecting: {type(e).__name__}: {e}"))
            return
        now_ns = time.time_ns()
        result = await trio.to_thread.run_sync(self._send, families, now_ns, abandon_on_cancel=True)
        self._record(result)

    def _send(self, families: list[PromMetric], now_ns: int) -> tuple[str, str]:
        """(result kind, detail) of one export: "ok", "http_error", "connection_error",
        "timeout" or "error" (anything else: encoding, a bad URL)."""
        c = self.config
        try:
            body = export_request(
                families,
                service_name=c.service_name,
                node_id=self.node_id,
                resource_attributes=c.resource_attributes,
                now_ns=now_ns,
                start_ns=self.start_ns,
            ).SerializeToString()
            request = urllib.request.Request(c.url, data=body, method="POST")
            request.add_header("Content-Type", CONTENT_TYPE)
            for k, v in c.headers:
                request.add_header(k, v)
            with urllib.request.urlopen(request, timeout=c.timeout_s) as r:
                r.read()
            return "ok", ""
        except urllib.error.HTTPError as e:
            return "http_error", f"HTTP {e.code} {e.reason}"
        except urllib.error.URLError as e:
            if isinstance(e.reason, TimeoutError):
                return "timeout", str(e.reason)
            return "connection_error", str(e.reason)
        except TimeoutError as e:
            return "timeout", str(e)
        except Exception as e:
            return "error", f"{type(e).__name__}: {e}"

    def _record(self, result: tuple[str, str]) -> None:
        kind, detail = result
        self.stats[kind] = self.stats.get(kind, 0) + 1
        if kind != "ok" and kind not in self._logged:
            self._logged.add(kind)
            log.warning("OTLP metrics export to %s failed (%s): %s; further failures of this "
                        "kind are counted, not logged", self.config.url, kind, detail)  # fmt: skip


class _ExportCounter(Collector):
    """`sluice_otlp_exports_total{result}` from the exporter's stats."""

    def __init__(self, stats: dict[str, int]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[PromMetric]:
        family = CounterMetricFamily(
            "sluice_otlp_exports", "OTLP metrics exports, by result.", labels=["result"]
        )
        for result, n in sorted(self._stats.items()):
            family.add_metric([result], n)
        yield family
