"""OTLP metrics export on its own: which environments turn it on and where it sends, the
conversion of one registry's samples to an ExportMetricsServiceRequest (kinds, values, bucket
counts, start times, resource), and an exporter whose receiver is down counting its failures
without raising."""

from __future__ import annotations

import logging
import socket
import time

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AGGREGATION_TEMPORALITY_CUMULATIVE,
    Metric,
)

from broker.runtime.metrics import BrokerMetrics, NodeCollector, Sample
from broker.runtime.otlp_metrics import OtlpConfig, OtlpExporter, export_request

ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
METRICS_ENDPOINT = "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"OTEL_METRICS_EXPORTER": "none", ENDPOINT: "http://collector:4318"},
        {"OTEL_METRICS_EXPORTER": "prometheus", METRICS_ENDPOINT: "http://c:4318/v1/metrics"},
        {"OTEL_SDK_DISABLED": "true", ENDPOINT: "http://collector:4318"},
        {"OTEL_TRACES_EXPORTER": "otlp"},
    ],
)
def test_no_export_unless_the_environment_asks_for_otlp_metrics(env: dict[str, str]) -> None:
    assert OtlpConfig.from_env(env) is None


@pytest.mark.parametrize(
    ("env", "url"),
    [
        ({"OTEL_METRICS_EXPORTER": "otlp"}, "http://localhost:4318/v1/metrics"),
        ({"OTEL_METRICS_EXPORTER": "console, otlp"}, "http://localhost:4318/v1/metrics"),
        ({ENDPOINT: "http://collector:4318"}, "http://collector:4318/v1/metrics"),
        ({ENDPOINT: "http://collector:4318/base/"}, "http://collector:4318/base/v1/metrics"),
        ({METRICS_ENDPOINT: "http://m:9/custom", ENDPOINT: "http://c:1"}, "http://m:9/custom"),
    ],
)
def test_the_export_goes_to_the_metrics_endpoint_as_is_or_the_base_with_v1_metrics(
    env: dict[str, str], url: str
) -> None:
    c = OtlpConfig.from_env(env)
    assert c is not None and c.url == url
    assert (c.interval_s, c.timeout_s, c.service_name) == (60.0, 10.0, "sluice-broker")


def test_interval_headers_timeout_and_resource_come_from_the_standard_variables(
    caplog: pytest.LogCaptureFixture,
) -> None:
    c = OtlpConfig.from_env(
        {
            ENDPOINT: "http://c:4318",
            "OTEL_METRIC_EXPORT_INTERVAL": "500",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "2500",
            "OTEL_EXPORTER_OTLP_HEADERS": "api-key=s%20ecret, x-team = core,bad",
            "OTEL_EXPORTER_OTLP_METRICS_HEADERS": "x-team=metrics",
            "OTEL_RESOURCE_ATTRIBUTES": "service.name=ignored,deployment.environment=ci",
            "OTEL_SERVICE_NAME": "broker-a",
        }
    )
    assert c is not None
    assert (c.interval_s, c.timeout_s) == (0.5, 2.5)
    assert dict(c.headers) == {"api-key": "s ecret", "x-team": "metrics"}
    assert c.service_name == "broker-a"
    assert c.resource_attributes == (("deployment.environment", "ci"),)
    named = OtlpConfig.from_env(
        {ENDPOINT: "http://c", "OTEL_RESOURCE_ATTRIBUTES": "service.name=x"}
    )
    assert named is not None and named.service_name == "x"
    with caplog.at_level(logging.WARNING, logger="sluice.otlp"):
        odd = OtlpConfig.from_env({ENDPOINT: "http://c", "OTEL_METRIC_EXPORT_INTERVAL": "soon"})
    assert odd is not None and odd.interval_s == 60.0
    assert "OTEL_METRIC_EXPORT_INTERVAL" in caplog.text


def by_name(request: ExportMetricsServiceRequest) -> dict[str, Metric]:
    (rm,) = request.resource_metrics
    (sm,) = rm.scope_metrics
    return {m.name: m for m in sm.metrics}


def test_counters_gauges_and_histograms_become_sums_gauges_and_explicit_bucket_histograms() -> None:
    began = time.time_ns()
    m = BrokerMetrics()
    m.request_answered("fetch", "NONE", 0.002, request_bytes=60, response_bytes=900)
    m.request_answered("fetch", "NONE", 0.2, request_bytes=60, response_bytes=100)
    m.request_answered("produce", "NONE", 40.0)
    m.add(NodeCollector(lambda: [
        ("gauge", "sluice_connections", "c", [((), 3.0)], ()),
        ("counter", "sluice_raft_elections", "e", [(("7",), 2.0)], ("group",)),
    ]))  # fmt: skip
    wire = export_request(
        m.registry.collect(),
        service_name="sluice-broker",
        node_id=4,
        resource_attributes=[("deployment.environment", "ci")],
        now_ns=began + 10**9,
        start_ns=began - 10**9,
    ).SerializeToString()
    request = ExportMetricsServiceRequest.FromString(wire)
    resource = {a.key: a.value for a in request.resource_metrics[0].resource.attributes}
    assert resource["service.name"].string_value == "sluice-broker"
    assert resource["sluice.node_id"].int_value == 4
    assert resource["deployment.environment"].string_value == "ci"
    got = by_name(request)

    requests = got["sluice_requests_total"]
    assert requests.WhichOneof("data") == "sum"
    assert requests.sum.is_monotonic
    assert requests.sum.aggregation_temporality == AGGREGATION_TEMPORALITY_CUMULATIVE
    points = {
        tuple((a.key, a.value.string_value) for a in p.attributes): p
        for p in requests.sum.data_points
    }
    fetch = points[(("api", "fetch"), ("error", "NONE"))]
    assert fetch.as_double == 2
    assert fetch.time_unix_nano == began + 10**9
    assert began - 10**6 <= fetch.start_time_unix_nano <= time.time_ns()  # its _created
    sent = got["sluice_response_bytes_total"]
    assert sent.unit == "By"
    assert sorted(p.as_double for p in sent.sum.data_points) == [0, 1000]

    elections = got["sluice_raft_elections_total"].sum
    assert elections.is_monotonic and elections.data_points[0].as_double == 2
    assert elections.data_points[0].start_time_unix_nano == began - 10**9  # no _created
    gauge = got["sluice_connections"]
    assert gauge.WhichOneof("data") == "gauge" and gauge.gauge.data_points[0].as_double == 3

    latency = got["sluice_request_duration_seconds"]
    assert latency.WhichOneof("data") == "histogram" and latency.unit == "s"
    assert latency.histogram.aggregation_temporality == AGGREGATION_TEMPORALITY_CUMULATIVE
    hists = {p.attributes[0].value.string_value: p for p in latency.histogram.data_points}
    f = hists["fetch"]
    assert f.count == 2 and abs(f.sum - 0.202) < 1e-9
    assert list(f.explicit_bounds)[:3] == [0.0005, 0.001, 0.0025]
    assert len(f.bucket_counts) == len(f.explicit_bounds) + 1
    assert sum(f.bucket_counts) == 2
    assert f.bucket_counts[list(f.explicit_bounds).index(0.0025)] == 1  # 0.002 in (0.001, 0.0025]
    assert f.bucket_counts[list(f.explicit_bounds).index(0.25)] == 1  # 0.2 in (0.1, 0.25]
    p = hists["produce"]
    assert p.count == 1 and p.bucket_counts[-1] == 1  # 40 s: above the last bound (30)


async def test_an_exporter_without_a_receiver_counts_the_failure_and_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    config = OtlpConfig.from_env({METRICS_ENDPOINT: f"http://127.0.0.1:{port}/v1/metrics"})
    assert config is not None
    m = BrokerMetrics()
    exporter = OtlpExporter(config, m.registry, node_id=0)
    with caplog.at_level(logging.WARNING, logger="sluice.otlp"):
        await exporter.export_once()
        await exporter.export_once()
    assert exporter.stats == {"ok": 0, "connection_error": 2}
    assert caplog.text.count("OTLP metrics export") == 1  # logged once per kind
    text = m.render()
    assert 'sluice_otlp_exports_total{result="connection_error"} 2.0' in text


async def test_a_collector_that_raises_costs_one_export_not_the_broker() -> None:
    def broken() -> list[Sample]:
        raise RuntimeError("a bug in a scrape-time read")

    config = OtlpConfig.from_env({METRICS_ENDPOINT: "http://127.0.0.1:9/v1/metrics"})
    assert config is not None
    m = BrokerMetrics()
    m.add(NodeCollector(broken))
    exporter = OtlpExporter(config, m.registry, node_id=0)
    await exporter.export_once()
    assert exporter.stats == {"ok": 0, "error": 1}
