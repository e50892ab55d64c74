"""`GET /metrics` on a real broker (embedded, real TCP): Prometheus text that parses, with the
requests it answered counted, timed and sized per API and error code, the records produced
and fetched per topic, its rounds' writes, its Raft groups, partitions (high watermark, LSO
lag), a consumer group's committed lag, connections, open transactions and disk, read at scrape
time. On three broker processes: a paused follower's lag as its leader reports it. On a broker
process whose environment asks for OTLP: the same registry pushed to a real receiver."""

from __future__ import annotations

import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import trio
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AGGREGATION_TEMPORALITY_CUMULATIVE,
    HistogramDataPoint,
    Metric,
    NumberDataPoint,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from broker.app import Broker, embedded
from consumers import Admin, Consumer, Producer
from tests.integration.cluster import Cluster
from tests.support.embedded import embedded_config
from tests.support.harness import BrokerProcess
from tests.support.otlp_receiver import OtlpReceiver
from tests.support.otlp_receiver import otlp_receiver as otlp_receiving
from tests.support.wait import poll_records, poll_until_async, wait_until_async


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[Broker]:
    async with embedded(embedded_config(tmp_path, offsets_topic_partitions=2)) as b:
        yield b


def scrape(b: Broker) -> tuple[str, dict[str, list[Sample]]]:
    url = f"http://{b.addresses.http}/metrics"
    with urllib.request.urlopen(url, timeout=5) as r:
        content_type = r.headers["Content-Type"]
        text = r.read().decode()
    families = {f.name: f.samples for f in text_string_to_metric_families(text)}
    return content_type, families


def value(samples: list[Sample], name: str, **labels: str) -> float:
    got = [s.value for s in samples if s.name == name and labels.items() <= s.labels.items()]
    assert len(got) == 1, (name, labels, got)
    return got[0]


async def test_metrics_count_requests_and_read_the_broker_at_scrape_time(broker: Broker) -> None:
    addr = str(broker.addresses.clients)
    async with Admin(addr) as admin:
        await admin.create_topic("m", partitions=2)
    async with Producer(addr, transactional_id="tx-m") as p:
        await p.begin_transaction()
        await p.send("m", b"open", partition=1)
        await p.flush()
        content_type, m = await trio.to_thread.run_sync(scrape, broker)
        await p.abort_transaction()
    assert content_type.startswith("text/plain; version=0.0.4")
    requests = m["sluice_requests"]
    assert value(requests, "sluice_requests_total", api="produce", error="NONE") >= 1
    assert value(requests, "sluice_requests_total", api="create_topics", error="NONE") == 1
    assert value(requests, "sluice_requests_total", api="init_producer_id", error="NONE") == 1
    assert value(requests, "sluice_requests_total", api="add_partitions_to_txn", error="NONE") >= 1
    latency = m["sluice_request_duration_seconds"]
    produced = value(latency, "sluice_request_duration_seconds_count", api="produce")
    assert produced == value(requests, "sluice_requests_total", api="produce", error="NONE")
    assert value(latency, "sluice_request_duration_seconds_sum", api="produce") > 0
    raft = m["sluice_raft_is_leader"]
    assert value(raft, "sluice_raft_is_leader", topic="m", partition="0") == 1
    assert value(m["sluice_raft_leader"], "sluice_raft_leader", topic="m", partition="1") == 0
    commit = value(m["sluice_raft_commit_index"], "sluice_raft_commit_index", topic="m",
                   partition="1")  # fmt: skip
    assert commit >= 2  # the leader's no-op and the open transaction's record
    assert value(m["sluice_partitions_leaderless"], "sluice_partitions_leaderless") == 0
    assert value(m["sluice_connections"], "sluice_connections") >= 1
    assert value(m["sluice_transactions_open"], "sluice_transactions_open", state="ongoing") == 1
    age = value(m["sluice_transaction_oldest_age_seconds"], "sluice_transaction_oldest_age_seconds")
    assert 0 <= age < 60
    hw, lso_lag = m["sluice_partition_high_watermark"], m["sluice_partition_lso_lag"]
    assert value(hw, "sluice_partition_high_watermark", topic="m", partition="1") == 1
    # The open transaction's record holds the last stable offset at 0, one below the HW.
    assert value(lso_lag, "sluice_partition_lso_lag", topic="m", partition="1") == 1
    assert value(lso_lag, "sluice_partition_lso_lag", topic="m", partition="0") == 0


async def test_records_bytes_rounds_disk_and_a_groups_committed_lag(broker: Broker) -> None:
    """10 records produced to 2 partitions (5 each) and read by a group member that commits
    offset 2 of partition 0 and 5 of partition 1: the counters hold exactly those records,
    the lag series HW - committed."""
    addr = str(broker.addresses.clients)
    async with Admin(addr) as admin:
        await admin.create_topic("lag", partitions=2)
    async with Producer(addr) as p:
        for i in range(10):
            await p.send("lag", b"record-%d" % i, partition=i % 2)
        await p.flush()
    async with Consumer(addr, group_id="readers", enable_auto_commit=False) as c:
        c.subscribe(["lag"])
        assert len(await poll_records(c, 10)) == 10
        await c.commit({("lag", 0): 2, ("lag", 1): 5})
        _, m = await trio.to_thread.run_sync(scrape, broker)

    def one(name: str, **labels: str) -> float:
        family = name.removesuffix("_total").removesuffix("_count").removesuffix("_sum")
        return value(m[family], name, **labels)

    assert one("sluice_records_produced_total", topic="lag") == 10
    assert one("sluice_records_fetched_total", topic="lag") == 10
    produced = one("sluice_requests_total", api="produce", error="NONE")
    assert one("sluice_produce_commit_seconds_count") == produced >= 1
    assert one("sluice_produce_commit_seconds_sum") > 0
    # Every produce frame carries its records' values; every fetch answer carries them back.
    assert one("sluice_request_bytes_total", api="produce") > 10 * len(b"record-0")
    assert one("sluice_response_bytes_total", api="fetch") > 10 * len(b"record-0")
    assert one("sluice_request_bytes_total", api="offset_commit") > 0
    written = one("sluice_store_write_seconds_count")
    assert written >= produced and one("sluice_round_entries_count") == written
    assert one("sluice_round_entries_sum") >= produced  # a batch per produced partition at least
    assert one("sluice_round_bytes_sum") > 10 * len(b"record-0")
    for partition in ("0", "1"):
        assert one("sluice_partition_high_watermark", topic="lag", partition=partition) == 5
        assert one("sluice_partition_lso_lag", topic="lag", partition=partition) == 0
        # A single broker: each partition's replica campaigned once and learned one leader.
        assert one("sluice_raft_elections_total", topic="lag", partition=partition) == 1
        assert one("sluice_raft_leader_changes_total", topic="lag", partition=partition) == 1
    lag = m["sluice_consumer_group_lag"]
    assert value(lag, "sluice_consumer_group_lag", consumer_group="readers", topic="lag",
                 partition="0") == 5 - 2  # fmt: skip
    assert value(lag, "sluice_consumer_group_lag", consumer_group="readers", topic="lag",
                 partition="1") == 0  # fmt: skip
    for partition, committed in (("0", 2), ("1", 5)):
        assert one("sluice_consumer_group_committed_offset", consumer_group="readers", topic="lag",
                   partition=partition) == committed  # fmt: skip
    assert one("sluice_consumer_group_members", consumer_group="readers") == 1
    assert not m.get("sluice_raft_follower_lag_entries")  # no follower anywhere
    free = one("sluice_store_disk_free_bytes")
    assert 0 < free <= one("sluice_store_disk_total_bytes")
    assert one("sluice_store_size_bytes") > 0


async def test_a_deleted_topics_records_series_go_at_the_next_scrape(broker: Broker) -> None:
    addr = str(broker.addresses.clients)
    async with Admin(addr) as admin:
        await admin.create_topic("brief", partitions=1)
        await admin.create_topic("kept", partitions=1)
        async with Producer(addr) as p:
            await p.send("brief", b"x")
            await p.send("kept", b"y")
            await p.flush()
        _, m = await trio.to_thread.run_sync(scrape, broker)
        produced = m["sluice_records_produced"]
        assert value(produced, "sluice_records_produced_total", topic="brief") == 1
        await admin.delete_topic("brief")

    async def topics_counted() -> set[str]:
        _, m = await trio.to_thread.run_sync(scrape, broker)
        return {s.labels["topic"] for s in m["sluice_records_produced"]
                if s.name == "sluice_records_produced_total"}  # fmt: skip

    await poll_until_async(topics_counted, lambda t: t == {"kept"},
                           "the deleted topic's series gone", timeout=10)  # fmt: skip


@pytest.fixture
def otlp_receiver() -> Iterator[OtlpReceiver]:
    with otlp_receiving() as r:
        yield r


def otlp_metrics(request: ExportMetricsServiceRequest) -> dict[str, Metric]:
    return {m.name: m for rm in request.resource_metrics for sm in rm.scope_metrics
            for m in sm.metrics}  # fmt: skip


def attrs(point: NumberDataPoint | HistogramDataPoint) -> dict[str, str]:
    return {a.key: a.value.string_value for a in point.attributes}


async def test_a_broker_process_pushes_its_metrics_by_otlp_when_the_environment_asks(
    tmp_path: Path, otlp_receiver: OtlpReceiver
) -> None:
    """The same samples /metrics shows, converted: counters as cumulative monotonic sums,
    gauges as gauges, histograms as explicit-bucket histograms, under the broker's resource,
    every 500 ms to {OTEL_EXPORTER_OTLP_ENDPOINT}/v1/metrics with the configured headers."""
    b = BrokerProcess(tmp_path / "data", node_id=0, env={
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.endpoint,
        "OTEL_METRIC_EXPORT_INTERVAL": "500",
        "OTEL_EXPORTER_OTLP_HEADERS": "x-tenant=sluice%20ci",
        "OTEL_SERVICE_NAME": "sluice-it",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=ci",
    })  # fmt: skip
    try:
        await trio.to_thread.run_sync(b.start)
        await trio.to_thread.run_sync(b.wait_ready)
        async with Admin(b.bootstrap) as admin:
            await admin.create_topic("otlp", partitions=1)
        async with Producer(b.bootstrap) as p:
            for i in range(7):
                await p.send("otlp", b"r%d" % i)
            await p.flush()

        def produced(request: ExportMetricsServiceRequest) -> bool:
            """It holds the 7 records, and the export before it was counted a success."""
            got = otlp_metrics(request)
            records = got.get("sluice_records_produced_total")
            exports = got["sluice_otlp_exports_total"].sum.data_points
            return (
                records is not None
                and [pt.as_double for pt in records.sum.data_points] == [7]
                and {attrs(pt)["result"]: pt.as_double for pt in exports}["ok"] >= 1
            )

        await wait_until_async(
            lambda: any(produced(r) for _, r in otlp_receiver.received()),
            "a second OTLP export or later, holding the 7 records produced",
            timeout=10,
            interval=0.05,
            detail=lambda: f"posts to {otlp_receiver.paths}; log: {b.log_tail()}",
        )
    finally:
        b.kill()
    posts = otlp_receiver.received()
    headers, request = next(p for p in posts if produced(p[1]))
    assert headers["content-type"] == "application/x-protobuf"
    assert headers["x-tenant"] == "sluice ci"
    resource = {a.key: a.value for a in request.resource_metrics[0].resource.attributes}
    assert resource["service.name"].string_value == "sluice-it"
    assert resource["sluice.node_id"].int_value == 0
    assert resource["deployment.environment"].string_value == "ci"
    got = otlp_metrics(request)

    requests = got["sluice_requests_total"]
    assert requests.WhichOneof("data") == "sum" and requests.sum.is_monotonic
    assert requests.sum.aggregation_temporality == AGGREGATION_TEMPORALITY_CUMULATIVE
    by_api = {(attrs(pt)["api"], attrs(pt)["error"]): pt.as_double
              for pt in requests.sum.data_points}  # fmt: skip
    assert by_api[("create_topics", "NONE")] == 1
    produce_requests = by_api[("produce", "NONE")]
    assert produce_requests >= 1
    latency = got["sluice_request_duration_seconds"]
    assert latency.WhichOneof("data") == "histogram" and latency.unit == "s"
    (produce_latency,) = [pt for pt in latency.histogram.data_points
                          if attrs(pt)["api"] == "produce"]  # fmt: skip
    assert produce_latency.count == produce_requests == sum(produce_latency.bucket_counts)
    assert len(produce_latency.bucket_counts) == len(produce_latency.explicit_bounds) + 1
    commit = got["sluice_produce_commit_seconds"].histogram.data_points[0]
    assert commit.count == produce_requests
    connections = got["sluice_connections"]
    assert connections.WhichOneof("data") == "gauge"
    is_leader = got["sluice_raft_is_leader"].gauge.data_points
    assert [pt.as_double for pt in is_leader if attrs(pt)["topic"] == "otlp"] == [1]
    hw = got["sluice_partition_high_watermark"].gauge.data_points
    assert [pt.as_double for pt in hw if attrs(pt)["topic"] == "otlp"] == [7]
    # Exports come every interval, each cumulative: later ones never count fewer requests.
    totals = [
        sum(pt.as_double for pt in otlp_metrics(r)["sluice_requests_total"].sum.data_points)
        for _, r in posts
    ]
    assert totals == sorted(totals)


async def test_a_test_broker_process_ignores_the_runners_otel_variables(
    tmp_path: Path, otlp_receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A developer's OTEL_* settings in the test runner's environment must not turn on
    export in the brokers the tests start (BrokerProcess.env still can, as above)."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_receiver.endpoint)
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "100")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_on")
    b = BrokerProcess(tmp_path / "data", node_id=0)
    try:
        await trio.to_thread.run_sync(b.start)
        await trio.to_thread.run_sync(b.wait_ready)
        async with Admin(b.bootstrap) as admin:
            await admin.create_topic("quiet", partitions=1)
        async with Producer(b.bootstrap) as p:
            await p.send("quiet", b"r")  # a request span, were tracing on
            await p.flush()
        await trio.sleep(0.5)  # five export intervals, were export on
        log = b.log_tail()
    finally:
        b.kill()
    assert otlp_receiver.paths == [], otlp_receiver.paths
    assert "OTLP" not in log, log


def scrape_port(http_port: int) -> dict[str, list[Sample]]:
    url = f"http://127.0.0.1:{http_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


async def test_a_leader_reports_the_lag_in_entries_of_a_paused_follower(
    cluster_factory: Callable[..., Cluster],
) -> None:
    """Three broker processes, a partition of RF 3; one follower SIGSTOPped while 5 records
    are committed one by one: its lag on the leader is the 5 entries it lacks, the other
    follower's 0; once resumed it catches up to 0. Only the leader has the series."""
    cluster = await trio.to_thread.run_sync(cluster_factory, 3)
    async with Admin(cluster.bootstrap) as admin:
        await admin.create_topic("f", partitions=1, replication_factor=3)
    leader = await cluster.leader_of("f", 0)
    paused, other = (i for i in range(3) if i != leader)
    http = cluster.brokers[leader].http_port

    async def view() -> tuple[float, dict[str, float]]:
        m = await trio.to_thread.run_sync(scrape_port, http)
        commit = value(m["sluice_raft_commit_index"], "sluice_raft_commit_index", topic="f")
        lags = {
            s.labels["follower"]: s.value
            for s in m.get("sluice_raft_follower_lag_entries", [])
            if s.labels["topic"] == "f"
        }
        return commit, lags

    def lags_are(want: dict[int, int]) -> Callable[[tuple[float, dict[str, float]]], bool]:
        return lambda v: v[1] == {str(k): float(n) for k, n in want.items()}

    before, _ = await poll_until_async(view, lags_are({paused: 0, other: 0}),
                                       "both followers caught up", timeout=10)  # fmt: skip
    await trio.to_thread.run_sync(cluster.pause, paused)
    try:
        async with Producer(cluster.brokers[leader].bootstrap) as p:
            for i in range(5):
                await p.send_and_wait("f", b"r%d" % i, partition=0)
        after, lags = await poll_until_async(
            view, lambda v: v[1].get(str(other)) == 0, "the running follower caught up",
            timeout=10,
        )  # fmt: skip
        assert after - before == 5  # one entry per record sent and waited for
        assert lags == {str(paused): 5.0, str(other): 0.0}
        follower_view = await trio.to_thread.run_sync(scrape_port, cluster.brokers[other].http_port)
        assert not [s for s in follower_view.get("sluice_raft_follower_lag_entries", [])
                    if s.labels["topic"] == "f"]  # fmt: skip
    finally:
        await trio.to_thread.run_sync(cluster.resume, paused)
    await poll_until_async(view, lags_are({paused: 0, other: 0}), "the resumed follower caught up",
                           timeout=10)  # fmt: skip


async def test_an_under_replicated_partition_is_counted_once_by_its_leader_alone(
    cluster_factory: Callable[..., Cluster],
) -> None:
    """Three broker processes, a topic of 3 partitions of RF 3 (preferred leaders spread, so
    some partition is led by a broker other than the controller). With the link between that
    partition's leader and its third replica cut, records committed to it leave that replica
    behind: the leader counts the partition under-replicated, and nobody else (the
    controller, which hears of every partition's replicas, neither); summed over brokers:
    1. Once the link heals and the replica catches up: 0 everywhere."""
    cluster = await trio.to_thread.run_sync(cluster_factory, 3)
    async with Admin(cluster.bootstrap) as admin:
        await admin.create_topic("u", partitions=3, replication_factor=3)
    views = await cluster.wait_stable("u")
    controller = views[0].controller
    leaders = {p: leader for p, (leader, _) in views[0].leaders.items()}
    partition, leader = next((p, ld) for p, ld in sorted(leaders.items()) if ld != controller)
    (behind,) = {0, 1, 2} - {leader, controller}

    async def counts() -> dict[int, float]:
        out = {}
        for i, b in enumerate(cluster.brokers):
            m = await trio.to_thread.run_sync(scrape_port, b.http_port)
            out[i] = value(m["sluice_partitions_under_replicated"],
                           "sluice_partitions_under_replicated")  # fmt: skip
            assert value(m["sluice_partitions"], "sluice_partitions") == 3
        return out

    await poll_until_async(counts, lambda c: sum(c.values()) == 0, "all replicas caught up",
                           timeout=10)  # fmt: skip
    await trio.to_thread.run_sync(cluster.cut_link, leader, behind)
    try:
        async with Producer(cluster.brokers[leader].bootstrap) as p:
            for i in range(3):
                await p.send_and_wait("u", b"r%d" % i, partition=partition)
        # Given a few heartbeats for the controller to hear of the leader's view.
        await trio.sleep(1.0)
        got = await poll_until_async(counts, lambda c: c[leader] == 1,
                                     "the leader to count its partition", timeout=10)  # fmt: skip
        assert got == {leader: 1, controller: 0, behind: 0}, (leader, controller, got)
    finally:
        await trio.to_thread.run_sync(cluster.heal)
    await poll_until_async(counts, lambda c: sum(c.values()) == 0,
                           "the replica caught up after the heal", timeout=15)  # fmt: skip
