"""The dashboards and alerts of ops/ against a real Prometheus (Debian's, installed by
scripts/install-debian-tools when missing) scraping a real 3-broker cluster.

- `promtool check rules` accepts ops/prometheus/alerts.yml, and `promtool check config` the
  configuration this test generates (which loads those rules);
- `promtool test rules` drives every alert rule (its expression, `for` and labels) over
  synthetic series: each fires where it should, with its severity, and stays quiet nearby;
- the brokers serve real traffic through the client library: records produced and fetched,
  a consumer group whose committed offsets stay behind the end (lag > 0) on a topic of
  replication factor 3 and on one of replication factor 1 (whose partitions mostly have no
  replica on the group coordinator's broker), a committed transaction and one left open
  (open-transaction and LSO-lag series); and a request refused with an error code (raw
  protocol). Prometheus scrapes them every second; then every query of the Grafana dashboard
  (variables at "All", Grafana's intervals replaced), every template variable's query and
  every alert rule is evaluated: each must be valid, each dashboard query must return data,
  and each alert's metric selectors must (the alert's own condition is false while all is
  well); a few values show the traffic (the lag of every partition of both topics, the open
  transaction, the error); every `sluice_*` metric named anywhere is in some broker's
  /metrics; /api/v1/rules shows every rule loaded and healthy. The test prints each query and
  what it answered (`-s`)."""

from __future__ import annotations

import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import trio
import yaml
from prometheus_client.parser import text_string_to_metric_families

from broker.config import BrokerConfig
from broker.wire.errors import ErrorCode
from broker.wire.messages import InitProducerIdRequest
from consumers import Admin, Consumer, Producer
from tests.integration.cluster import Cluster
from tests.integration.wire_client import RawClient
from tests.support.debian import debian_program
from tests.support.prometheus import PrometheusServer, scrape_config
from tests.support.promql import (
    ALERTS,
    LABEL_VALUES,
    dashboard_queries,
    is_threshold,
    load_dashboard,
    load_rules,
    metric_names,
    selectors,
    substitute,
    variable_queries,
)
from tests.support.wait import poll_records, wait_until

TOPIC = "obs"
PARTITIONS = 3
GROUP = "obs-readers"
COMMITTED_AT = 5
"""The group commits this offset on every partition, behind the end: lag > 0."""
SPREAD = "obs-rf1"
"""A topic of replication factor 1 the group also reads: most of its partitions have no
replica on the group coordinator's broker (their lag comes from their leaders' high
watermarks, joined with the coordinator's committed offsets)."""
SPREAD_RECORDS = 8
"""Records produced to each partition of SPREAD (its high watermark)."""
SPREAD_COMMITTED_AT = 2


def run(*cmd: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=60)


def test_promtool_accepts_the_alert_rules() -> None:
    promtool = debian_program("promtool")
    done = run(promtool, "check", "rules", ALERTS)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(load_rules())} rules found" in done.stdout


# -- the alert rules over synthetic series (promtool test rules) ------------------------------

J = 'job="sluice"'


def series(name: str, labels: str, values: str) -> dict[str, str]:
    return {"series": f"{name}{{{J}, {labels}}}", "values": values}


def alert(at: str, name: str, *fired: dict[str, str]) -> dict[str, Any]:
    return {
        "eval_time": at,
        "alertname": name,
        "exp_alerts": [{"exp_labels": labels} for labels in fired],
    }


def alternating(a: int, b: int, n: int) -> str:
    return " ".join(str(a if i % 2 == 0 else b) for i in range(n))


SCENARIOS: list[dict[str, Any]] = [
    {  # a broker unscrapable for a minute
        "input_series": [
            series("up", 'instance="b0:9095"', "1 1 0x10"),
            series("up", 'instance="b1:9095"', "1x12"),
        ],
        "alert_rule_test": [
            alert("2m", "SluiceBrokerDown"),
            alert("4m", "SluiceBrokerDown",
                  {"severity": "critical", "job": "sluice", "instance": "b0:9095"}),
        ],
    },
    {  # one broker sees leaderless partitions; under-replicated ones for five minutes
        "input_series": [
            series("sluice_partitions_leaderless", 'instance="b0"', "0 0 2x10"),
            series("sluice_partitions_leaderless", 'instance="b1"', "0x12"),
            series("sluice_partitions_under_replicated", 'instance="b0"', "0 1x12"),
            series("sluice_partitions_under_replicated", 'instance="b1"', "0x13"),
        ],
        "alert_rule_test": [
            alert("2m", "SluicePartitionLeaderless"),
            alert("4m", "SluicePartitionLeaderless", {"severity": "critical"}),
            alert("3m", "SluicePartitionUnderReplicated"),
            alert("8m", "SluicePartitionUnderReplicated", {"severity": "warning"}),
        ],
    },
    {  # a leader change every minute on t/0, seen by two replicas; t/1 stable
        "input_series": [
            series("sluice_raft_leader_changes_total",
                   'instance="b0", group="7", topic="t", partition="0"', "0+1x30"),
            series("sluice_raft_leader_changes_total",
                   'instance="b1", group="7", topic="t", partition="0"', "0+1x30"),
            series("sluice_raft_leader_changes_total",
                   'instance="b0", group="8", topic="t", partition="1"', "3x30"),
        ],
        "alert_rule_test": [
            alert("2m", "SluiceRaftLeaderFlapping"),
            alert("12m", "SluiceRaftLeaderFlapping",
                  {"severity": "warning", "topic": "t", "partition": "0"}),
        ],
    },
    {  # produce: 9% errors at 11/s; fetch: 1% errors; metadata: 50% but 0.2/s
        "input_series": [
            series("sluice_requests_total", 'instance="b0", api="produce", error="NONE"',
                   "0+600x30"),
            series("sluice_requests_total",
                   'instance="b0", api="produce", error="NOT_LEADER_OR_FOLLOWER"', "0+60x30"),
            series("sluice_requests_total", 'instance="b0", api="fetch", error="NONE"',
                   "0+600x30"),
            series("sluice_requests_total",
                   'instance="b0", api="fetch", error="UNKNOWN_TOPIC_OR_PARTITION"', "0+6x30"),
            series("sluice_requests_total", 'instance="b0", api="metadata", error="NONE"',
                   "0+6x30"),
            series("sluice_requests_total",
                   'instance="b0", api="metadata", error="UNKNOWN_TOPIC_OR_PARTITION"', "0+6x30"),
        ],
        "alert_rule_test": [
            alert("5m", "SluiceRequestErrorRateHigh"),
            alert("20m", "SluiceRequestErrorRateHigh",
                  {"severity": "warning", "instance": "b0", "api": "produce"}),
        ],
    },
    {  # a handler raised once, at 3m: alerts while the 5m window holds it
        "input_series": [
            series("sluice_request_errors_total", 'instance="b0"', "0 0 0 1x20"),
            series("sluice_request_errors_total", 'instance="b1"', "0x23"),
        ],
        "alert_rule_test": [
            alert("2m", "SluiceRequestHandlerFailing"),
            alert("4m", "SluiceRequestHandlerFailing",
                  {"severity": "critical", "job": "sluice", "instance": "b0"}),
            alert("10m", "SluiceRequestHandlerFailing"),
        ],
    },
    {  # lag = leader's high watermark - committed offset, each from another broker.
       # t/0: grows past 1000, its leader moving from b1 to b2 halfway; t/1: large but steady;
       # t/2: grows but stays small; group h keeps up with t/0
        "input_series": [
            series("sluice_partition_high_watermark", 'instance="b1", topic="t", partition="0"',
                   "0+200x20 stale"),
            series("sluice_partition_high_watermark", 'instance="b2", topic="t", partition="0"',
                   "_x21 4200+200x19"),
            series("sluice_partition_high_watermark", 'instance="b1", topic="t", partition="1"',
                   "5000x40"),
            series("sluice_partition_high_watermark", 'instance="b2", topic="t", partition="2"',
                   "0+10x40"),
            series("sluice_consumer_group_committed_offset",
                   'instance="b0", consumer_group="g", topic="t", partition="0"', "0+100x40"),
            series("sluice_consumer_group_committed_offset",
                   'instance="b0", consumer_group="g", topic="t", partition="1"', "0x40"),
            series("sluice_consumer_group_committed_offset",
                   'instance="b0", consumer_group="g", topic="t", partition="2"', "0x40"),
            series("sluice_consumer_group_committed_offset",
                   'instance="b1", consumer_group="h", topic="t", partition="0"', "0+200x40"),
        ],
        "alert_rule_test": [
            alert("15m", "SluiceConsumerLagGrowing"),
            alert("30m", "SluiceConsumerLagGrowing",
                  {"severity": "warning", "consumer_group": "g", "topic": "t",
                   "partition": "0"}),
        ],
    },
    {  # a transaction ages past 30 min; t/0's LSO stays behind, t/2's keeps catching up
        "input_series": [
            series("sluice_partition_lso_lag", 'instance="b0", topic="t", partition="0"',
                   "5x60"),
            series("sluice_partition_lso_lag", 'instance="b0", topic="t", partition="1"',
                   "0x60"),
            series("sluice_partition_lso_lag", 'instance="b0", topic="t", partition="2"',
                   alternating(5, 0, 61)),
            series("sluice_transaction_oldest_age_seconds", 'instance="b1"', "0+60x60"),
        ],
        "alert_rule_test": [
            alert("33m", "SluiceTransactionHanging"),
            alert("40m", "SluiceTransactionHanging",
                  {"severity": "critical", "topic": "t", "partition": "0"}),
        ],
    },
    {  # b0 95% full; b2 filling within 4 h; b3 filling fast but still 60% free; b1 fine
        "input_series": [
            series("sluice_store_disk_free_bytes", 'instance="b0"', "50x60"),
            series("sluice_store_disk_total_bytes", 'instance="b0"', "1000x60"),
            series("sluice_store_disk_free_bytes", 'instance="b1"', "900x60"),
            series("sluice_store_disk_total_bytes", 'instance="b1"', "1000x60"),
            series("sluice_store_disk_free_bytes", 'instance="b2"', "390-2x60"),
            series("sluice_store_disk_total_bytes", 'instance="b2"', "1000x60"),
            series("sluice_store_disk_free_bytes", 'instance="b3"', "900-10x60"),
            series("sluice_store_disk_total_bytes", 'instance="b3"', "1000x60"),
        ],
        "alert_rule_test": [
            alert("3m", "SluiceDiskFilling"),
            alert("30m", "SluiceDiskFilling",
                  {"severity": "critical", "job": "sluice", "instance": "b0"},
                  {"severity": "warning", "job": "sluice", "instance": "b2"}),
        ],
    },
]  # fmt: skip


def test_every_alert_fires_on_synthetic_series_and_only_there(tmp_path: Path) -> None:
    """`promtool test rules` over SCENARIOS. The rules are ops/prometheus/alerts.yml without
    their annotations (prose, checked by `promtool check rules`), so the expectations name
    the labels only."""
    promtool = debian_program("promtool")
    doc = yaml.safe_load(ALERTS.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(doc, sort_keys=False))
    tests = [{"interval": "1m", **s} for s in SCENARIOS]
    spec = {"rule_files": ["alerts.yml"], "evaluation_interval": "1m", "tests": tests}
    (tmp_path / "alerts_test.yml").write_text(yaml.safe_dump(spec, sort_keys=False))
    done = run(promtool, "test", "rules", tmp_path / "alerts_test.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    fired = {
        (t["alertname"], a["exp_labels"]["severity"])
        for s in SCENARIOS
        for t in s["alert_rule_test"]
        for a in t["exp_alerts"]
    }
    assert fired == {(r["alert"], r["labels"]["severity"]) for r in load_rules()}


# -- every query against real brokers ---------------------------------------------------------


@contextmanager
def step(what: str, seconds: float = 20.0) -> Iterator[None]:
    """A step of the traffic that must end within `seconds` (else the test says which)."""
    try:
        with trio.fail_after(seconds):
            yield
    except trio.TooSlowError:
        raise AssertionError(f"{what}: not done within {seconds:g}s") from None


async def make_traffic(bootstrap: str) -> None:
    """Records in, a committed transaction, a refused request."""
    with step("create the topics"):
        async with Admin(bootstrap) as admin:
            await admin.create_topic(TOPIC, partitions=PARTITIONS, replication_factor=3)
            await admin.create_topic(SPREAD, partitions=PARTITIONS, replication_factor=1)
    with step("produce"):
        async with Producer(bootstrap, linger_ms=2) as p:
            for i in range(60):
                await p.send(TOPIC, b"v%03d" % i, partition=i % PARTITIONS)
            for i in range(SPREAD_RECORDS * PARTITIONS):
                await p.send(SPREAD, b"s%03d" % i, partition=i % PARTITIONS)
            await p.flush()
    with step("commit a transaction"):
        async with Producer(bootstrap, transactional_id="obs-committed") as tp, tp.transaction():
            for i in range(6):
                await tp.send(TOPIC, b"t%d" % i, partition=i % PARTITIONS)
    with step("a refused request"):
        # The raw protocol: one request, one known error code, whatever the client library
        # does with a refused InitProducerId.
        host, port = bootstrap.split(",")[0].rsplit(":", 1)
        raw = await RawClient.connect(host, int(port))
        too_long = BrokerConfig().transaction_max_timeout_ms + 1
        request = InitProducerIdRequest(transactional_id="obs-bad", transaction_timeout_ms=too_long)
        answer = await raw.call(request, api_version=1)
        await raw.stream.aclose()
        assert answer.error is ErrorCode.INVALID_TRANSACTION_TIMEOUT


async def open_transaction(hanging: Producer) -> None:
    with step("leave a transaction open"):
        await hanging.begin_transaction()
        await hanging.send(TOPIC, b"open", partition=0)
        await hanging.flush()


async def lag_behind(consumer: Consumer) -> None:
    """Read, then commit offsets behind the end: the group lags."""
    with step("join a group and consume"):
        consumer.subscribe([TOPIC, SPREAD])
        await poll_records(consumer, 30, timeout=15)
        assert consumer.assignment() == {(t, p) for t in (TOPIC, SPREAD) for p in range(PARTITIONS)}
    with step("commit offsets behind the end"):
        await consumer.commit({
            **{(TOPIC, p): COMMITTED_AT for p in range(PARTITIONS)},
            **{(SPREAD, p): SPREAD_COMMITTED_AT for p in range(PARTITIONS)},
        })  # fmt: skip


def exported_names(cluster: Cluster) -> set[str]:
    """Every sample name in any broker's /metrics."""
    names: set[str] = set()
    for b in cluster.brokers:
        with urllib.request.urlopen(f"http://127.0.0.1:{b.http_port}/metrics", timeout=5) as r:
            text = r.read().decode()
        for family in text_string_to_metric_families(text):
            names.update(s.name for s in family.samples)
    return names


def has_data(answer: dict[str, Any]) -> bool:
    return bool(answer["status"] == "success" and answer["data"]["result"])


def wait_scraped(prom: PrometheusServer, brokers: int) -> None:
    """Until every broker was scraped up at least 4 times and every rule evaluated."""

    def scraped() -> bool:
        got = prom.query('count_over_time(up{job="sluice"}[1m]) >= 4 and up{job="sluice"} == 1')
        return len(got["data"]["result"]) == brokers

    wait_until(scraped, "prometheus to scrape every broker 4 times", timeout=20, interval=0.2,
               detail=lambda: prom.query('up{job="sluice"}'))  # fmt: skip

    def evaluated() -> bool:
        rules = [r for g in prom.api("rules")["data"]["groups"] for r in g["rules"]]
        return bool(rules) and all(not r["lastEvaluation"].startswith("0001") for r in rules)

    wait_until(evaluated, "prometheus to evaluate every rule", timeout=10, interval=0.2)


PRODUCED = 60 + 6 + 1
"""Records produced: plain, in the committed transaction, in the open one."""


def group_lag(topic: str) -> str:
    """GROUP's lag on each partition of `topic`, as the dashboard and the alert compute it."""
    return (
        f'max by (topic, partition) (sluice_partition_high_watermark{{job="sluice", '
        f'topic="{topic}"}}) - on (topic, partition) group_right max by (consumer_group, topic, '
        f'partition) (sluice_consumer_group_committed_offset{{job="sluice", '
        f'consumer_group="{GROUP}", topic="{topic}"}})'
    )


TRAFFIC_SEEN = [
    ('sum(up{job="sluice"})', lambda v: v == 3),
    ('max(sluice_partitions_leaderless{job="sluice"})', lambda v: v == 0),
    (f'sum(sluice_records_produced_total{{job="sluice", topic="{TOPIC}"}})',
     lambda v: v >= PRODUCED),
    (f'sum(sluice_records_fetched_total{{job="sluice", topic="{TOPIC}"}})', lambda v: v >= 30),
    ('sum(sluice_requests_total{job="sluice", api="init_producer_id", '
     'error="INVALID_TRANSACTION_TIMEOUT"})', lambda v: v == 1),
    (f'max(sluice_consumer_group_members{{job="sluice", consumer_group="{GROUP}"}})',
     lambda v: v == 1),
    (f"sum({group_lag(TOPIC)})", lambda v: v >= PRODUCED - PARTITIONS * COMMITTED_AT),
    (f"count({group_lag(TOPIC)})", lambda v: v == PARTITIONS),
    # Every partition of the RF 1 topic has its lag, wherever its one replica is.
    (f"count({group_lag(SPREAD)})", lambda v: v == PARTITIONS),
    (f"sum({group_lag(SPREAD)})",
     lambda v: v == PARTITIONS * (SPREAD_RECORDS - SPREAD_COMMITTED_AT)),
    ('count(max by (topic, partition) (sluice_consumer_group_committed_offset{job="sluice", '
     f'consumer_group="{GROUP}"}}))', lambda v: v == 2 * PARTITIONS),
    ('sum(sluice_transactions_open{job="sluice", state="ongoing"})', lambda v: v == 1),
    (f'max(sluice_partition_lso_lag{{job="sluice", topic="{TOPIC}", partition="0"}})',
     lambda v: v >= 1),
]  # fmt: skip
"""What the traffic must show (a query of one value, and a test of it)."""


class Report:
    """Every query asked, sorted by what it answered."""

    def __init__(self) -> None:
        self.data: list[str] = []
        self.empty: list[str] = []
        self.invalid: list[str] = []
        self.wrong: list[str] = []
        self.unhealthy: list[str] = []

    def check(self, prom: PrometheusServer, what: str, expr: str, *, want_data: bool) -> None:
        answer = prom.query(expr)
        if answer["status"] != "success":
            self.invalid.append(f"{what}: {expr} -> {answer.get('error')}")
        elif not want_data:
            firing = len(answer["data"]["result"])
            self.data.append(f"{what}: {expr} (a condition: valid, {firing} series true)")
        elif has_data(answer):
            self.data.append(f"{what}: {expr}")
        else:
            self.empty.append(f"{what}: {expr}")

    def summary(self) -> str:
        lines = [f"{len(self.data)} queries with data, {len(self.empty)} without, "
                 f"{len(self.invalid)} invalid"]  # fmt: skip
        lines += ["  data:    " + " ".join(s.split()) for s in self.data]
        lines += ["  EMPTY:   " + " ".join(s.split()) for s in self.empty]
        lines += ["  INVALID: " + " ".join(s.split()) for s in self.invalid]
        return "\n".join(lines)


def evaluate(
    prom: PrometheusServer, dashboard: dict[str, Any], rules: list[dict[str, Any]]
) -> Report:
    """Ask Prometheus every query of the dashboard and the alerts (see the module doc)."""
    report = Report()
    for q in dashboard_queries(dashboard):
        expr = substitute(q.expr, dashboard)
        report.check(prom, f"panel {q.panel!r} {q.ref}", expr, want_data=True)
    for name, query in variable_queries(dashboard).items():
        m = LABEL_VALUES.match(query)
        assert m is not None, query
        selector, label = m.group(1), m.group(2)
        answer = prom.query(selector)
        found = answer["data"]["result"] if has_data(answer) else []
        labelled = [r for r in found if label in r["metric"]]
        (report.data if labelled else report.empty).append(f"variable ${name}: {query}")
    for rule in rules:
        what = f"alert {rule['alert']} ({rule['labels']['severity']})"
        threshold = is_threshold(rule["expr"])
        report.check(prom, what, rule["expr"], want_data=not threshold)
        if threshold:
            for text in sorted({s.text for s in selectors(rule["expr"])}):
                report.check(prom, f"{what} selector", text, want_data=True)
    for expr, expected in TRAFFIC_SEEN:
        answer = prom.query(expr)
        values = [float(r["value"][1]) for r in answer["data"]["result"]]
        if len(values) != 1 or not expected(values[0]):
            report.wrong.append(f"{expr} = {values}")
    loaded = [r for g in prom.api("rules")["data"]["groups"] for r in g["rules"]]
    assert sorted(r["name"] for r in loaded) == sorted(r["alert"] for r in rules)
    report.unhealthy = [
        f"{r['name']}: {r['health']} {r.get('lastError')}" for r in loaded if r["health"] != "ok"
    ]
    return report


def named_metrics(dashboard: dict[str, Any], rules: list[dict[str, Any]]) -> set[str]:
    """Every metric the dashboard's queries and variables and the alert rules select."""
    exprs = [substitute(q.expr, dashboard) for q in dashboard_queries(dashboard)]
    for query in variable_queries(dashboard).values():
        m = LABEL_VALUES.match(query)
        assert m is not None, query
        exprs.append(m.group(1))
    exprs += [r["expr"] for r in rules]
    return set().union(*(metric_names(e) for e in exprs))


async def test_every_dashboard_and_alert_query_returns_data_from_real_brokers(
    cluster_factory: Any, tmp_path: Path
) -> None:
    started = time.monotonic()
    prometheus = debian_program("prometheus")
    promtool = debian_program("promtool")
    dashboard = load_dashboard()
    rules = load_rules()
    cluster: Cluster = cluster_factory(3)  # killed at teardown, whatever happens
    targets = [f"127.0.0.1:{b.http_port}" for b in cluster.brokers]
    prom = PrometheusServer(prometheus, tmp_path / "prometheus", scrape_config(targets, [ALERTS]))
    done = run(promtool, "check", "config", prom.config_path)
    assert done.returncode == 0, done.stdout + done.stderr

    await make_traffic(cluster.bootstrap)
    # The open transaction and the group's member stay until Prometheus has seen them.
    async with (
        Producer(
            cluster.bootstrap, transactional_id="obs-open", transaction_timeout_ms=120_000
        ) as hanging,
        Consumer(
            cluster.bootstrap,
            group_id=GROUP,
            enable_auto_commit=False,
            isolation="read_uncommitted",
        ) as consumer,
    ):
        await open_transaction(hanging)
        await lag_behind(consumer)
        try:
            await trio.to_thread.run_sync(prom.start)
            await trio.to_thread.run_sync(wait_scraped, prom, len(cluster.brokers))
            report = await trio.to_thread.run_sync(evaluate, prom, dashboard, rules)
        finally:
            prom.stop()
        exported = await trio.to_thread.run_sync(exported_names, cluster)

    print(f"\n{report.summary()}\n(test body {time.monotonic() - started:.1f}s)")
    missing = sorted(n for n in named_metrics(dashboard, rules) - {"up"} if n not in exported)
    assert not missing, f"named in ops/ but in no broker's /metrics: {missing}"
    assert not report.invalid, "invalid queries:\n" + "\n".join(report.invalid)
    assert not report.empty, "queries without data:\n" + "\n".join(report.empty)
    assert not report.unhealthy, f"rules not healthy: {report.unhealthy}"
    assert not report.wrong, "the traffic does not show:\n" + "\n".join(report.wrong)
