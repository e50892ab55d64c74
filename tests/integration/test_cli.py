"""The `sluice` command as a user types it, against a real broker process: the newcomer's
tour (create, produce 100,000 lines, consume them all back), JSON shapes and exit codes."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from functools import partial

from tests.support.harness import BrokerProcess
from tests.support.sluice_cli import run_sluice

RECORDS = 100_000


def test_newcomer_tour(broker_factory: Callable[..., BrokerProcess]) -> None:
    b = broker_factory()
    sluice = partial(run_sluice, bootstrap=b.bootstrap)
    b.start()
    b.wait_ready()
    r = sluice("topic", "create", "t", "--partitions", "4")
    assert r.returncode == 0, r.stderr
    lines = b"".join(b"%d\n" % i for i in range(1, RECORDS + 1))
    r = sluice("produce", "t", stdin=lines)
    assert r.returncode == 0, r.stderr
    r = sluice(
        "consume", "t", "--from-beginning", "--max-messages", str(RECORDS), "--format", "json"
    )
    assert r.returncode == 0, r.stderr
    last: dict[int, tuple[int, int]] = {}
    values = []
    for line in r.stdout.splitlines():
        rec = json.loads(line)
        p, off, v = rec["partition"], rec["offset"], int(rec["value"])
        if p in last:
            assert off == last[p][0] + 1 and v > last[p][1], (p, off, v, last[p])
        last[p] = (off, v)
        values.append(v)
    assert sorted(values) == list(range(1, RECORDS + 1))
    # Restart (SIGKILL): everything is still there, as plain text lines.
    b.restart()
    r = sluice("consume", "t", "--from-beginning", "--max-messages", str(RECORDS))
    assert r.returncode == 0, r.stderr
    assert sorted(int(x) for x in r.stdout.split()) == list(range(1, RECORDS + 1))


def test_json_shapes_and_exit_codes(broker_factory: Callable[..., BrokerProcess]) -> None:
    b = broker_factory()
    sluice = partial(run_sluice, bootstrap=b.bootstrap)
    b.start()
    b.wait_ready()
    assert sluice("topic", "create", "k", "--partitions", "3").returncode == 0
    listed = json.loads(sluice("topic", "list", "--json").stdout)
    assert {"name": "k", "partitions": 3, "replication_factor": 1} in listed
    desc = json.loads(sluice("topic", "describe", "k", "--json").stdout)
    assert desc["name"] == "k" and desc["config"] == {}
    assert [p["partition"] for p in desc["partitions"]] == [0, 1, 2]
    assert all(p["leader"] == 0 and p["replicas"] == [0] for p in desc["partitions"])
    r = sluice("produce", "k", "--key-separator", ":", stdin=b"user-1:hello\n")
    assert r.returncode == 0, r.stderr
    r = sluice("consume", "k", "--from-beginning", "--max-messages", "1", "--format", "json")
    rec = json.loads(r.stdout)
    assert (rec["key"], rec["value"], rec["key_encoding"]) == ("user-1", "hello", "utf-8")
    # Bad usage: 2. A failed operation: 1, with a message.
    assert sluice("topic", "create", "x", "--partitions", "0").returncode == 2
    assert sluice("topic", "create", "x", "--config", "nonsense").returncode == 2
    assert sluice("topic", "create", "x", "--config", "no.such.key=1").returncode == 2
    r = sluice("topic", "create", "k")
    assert r.returncode == 1 and b"already exists" in r.stderr
    r = sluice("topic", "describe", "nope", "--timeout", "1")
    assert r.returncode == 1 and r.stderr.startswith(b"sluice:")
    # No broker there: retried until --timeout, then exit 1 with a message.
    started = time.monotonic()
    r = sluice("topic", "list", "--timeout", "2", "--bootstrap", "127.0.0.1:1")
    assert r.returncode == 1 and b"no broker reachable" in r.stderr
    assert time.monotonic() - started < 15
    r = sluice("consume", "k", "--timeout", "2", "--bootstrap", "127.0.0.1:1")
    assert r.returncode == 1


def test_bench_produce_and_consume_report_what_was_acknowledged(
    broker_factory: Callable[..., BrokerProcess],
) -> None:
    """`bench produce` at an offered rate creates its topic, sends exactly --records and
    reports percentiles of acknowledged latency; `bench consume` reads them all back; a
    replication factor above the brokers registered in the cluster is refused at once (exit
    2: waiting cannot heal it)."""
    b = broker_factory()
    sluice = partial(run_sluice, bootstrap=b.bootstrap)
    b.start()
    b.wait_ready()
    r = sluice("bench", "produce", "--records", "3000", "--rate", "3000", "--topic", "bt",
               "--partitions", "2", "--linger-ms", "1", "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    produced = json.loads(r.stdout)
    assert produced["records"] == 3000
    assert 0 < produced["latency_p50_ms"] <= produced["latency_p99_ms"]
    assert produced["latency_p99_ms"] <= produced["latency_p999_ms"]
    assert produced["seconds"] >= 0.9  # 3000 records offered at 3000/s take about a second
    r = sluice("topic", "describe", "bt", "--json")
    assert r.returncode == 0, r.stderr
    described = json.loads(r.stdout)
    assert sum(p["high_watermark"] for p in described["partitions"]) == 3000
    r = sluice("bench", "consume", "--records", "3000", "--topic", "bt", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["records"] == 3000
    r = sluice("bench", "produce", "--records", "10", "--topic", "bt3",
               "--replication-factor", "3", "--timeout", "2")  # fmt: skip
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert b"INVALID_REPLICATION_FACTOR" in r.stderr and b"above the 1 broker" in r.stderr, r.stderr


def test_broker_naming_only_itself_as_controller_serves_alone(
    broker_factory: Callable[..., BrokerProcess],
) -> None:
    """`--controllers` naming only this broker (as a one-replica deployment's config would)
    is a single-node cluster like the default: it elects itself, becomes ready, creates a
    topic and keeps what it acknowledged across a restart."""
    b = broker_factory()
    sluice = partial(run_sluice, bootstrap=b.bootstrap)
    b.config["controllers"] = f"0@127.0.0.1:{b.peer_port}"
    b.start()
    b.wait_ready()
    r = sluice("topic", "create", "solo", "--partitions", "2")
    assert r.returncode == 0, r.stderr
    r = sluice("produce", "solo", stdin=b"a\nb\nc\n")
    assert r.returncode == 0, r.stderr
    b.stop()
    b.start()
    b.wait_ready()
    r = sluice("consume", "solo", "--from-beginning", "--max-messages", "3")
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.split()) == [b"a", b"b", b"c"]
