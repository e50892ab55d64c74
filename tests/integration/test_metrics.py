"""`GET /metrics` on a real broker (embedded, real TCP): Prometheus text that parses, with the
requests it answered counted and timed per API and error code, its Raft groups, partitions,
connections and open transactions, all read at scrape time."""

from __future__ import annotations

import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from broker.app import Broker, embedded
from consumers import Admin, Producer
from tests.support.embedded import embedded_config


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
