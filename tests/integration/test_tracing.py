"""One trace from a producer's send to a consumer's processing, exported by real processes.

A real OTLP/HTTP receiver (tests/support/otlp_receiver.py, decoding with opentelemetry-proto)
takes the spans of a 3-broker cluster (replication factor 3), of `sluice produce` and
`sluice consume` processes, and of a transactional producer process; everything is configured
by the standard OTEL_* variables only. The spans must form, in one trace: the producer's
`send {topic}` (PRODUCER) -> its `produce` request (CLIENT) -> the leader's `produce {topic}`
(SERVER) -> `raft replicate` (INTERNAL, with the leader's persisted write, the followers'
replication and the commit as events) ... and the consumer's `process {topic}` (CONSUMER),
whose parent is the send span, found through the record's `traceparent` header. The
consumer's fetch request carries its span to the broker's `fetch {topic}` span, and its poll
span links the producer's. A transaction's commit reaches the coordinator, whose 3PC phases
are spans of the same trace.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.cluster import Cluster
from tests.support.otlp_receiver import ReceivedSpan, otlp_receiver
from tests.support.sluice_cli import sluice_command
from tests.support.wait import wait_until

ROOT = Path(__file__).resolve().parents[2]
TOPIC = "orders"
TXN_TOPIC = "ledger"
RECORDS = 5


def run(args: list[str], env: dict[str, str], stdin: bytes | None = None) -> bytes:
    done = subprocess.run(
        args, cwd=ROOT, env={**os.environ, **env}, input=stdin, capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    return done.stdout


def one(spans: list[ReceivedSpan], **match: object) -> ReceivedSpan:
    found = [s for s in spans if all(getattr(s, k) == v for k, v in match.items())]
    assert len(found) == 1, (match, [(s.service, s.kind, s.name) for s in spans])
    return found[0]


def messaging(span: ReceivedSpan, operation: str, kind: str, topic: str | None) -> None:
    """The messaging semantic conventions' attributes of `span`."""
    a = span.attributes
    assert a["messaging.system"] == "sluice"
    assert a["messaging.operation.name"] == operation
    assert a["messaging.operation.type"] == kind
    if topic is not None:
        assert a["messaging.destination.name"] == topic


@pytest.mark.slow
def test_one_trace_from_send_to_processing(cluster_factory: Callable[..., Cluster]) -> None:
    with otlp_receiver() as receiver:
        cluster = cluster_factory(3, env=receiver.env("sluice-broker"))
        bootstrap = {"SLUICE_BOOTSTRAP": cluster.bootstrap}
        run(
            sluice_command(
                "topic", "create", TOPIC, "--partitions", "1", "--replication-factor", "3"
            ),
            bootstrap,
        )
        lines = b"".join(f"order-{i}\n".encode() for i in range(RECORDS))
        run(sluice_command("produce", TOPIC), {**bootstrap, **receiver.env("shop")}, lines)
        out = run(
            sluice_command("consume", TOPIC, "--from-beginning", "--max-messages", str(RECORDS)),
            {**bootstrap, **receiver.env("billing")},
        )
        assert out.decode().split() == [f"order-{i}" for i in range(RECORDS)]
        run(
            sluice_command("topic", "create", TXN_TOPIC, "--partitions", "2"),
            bootstrap,
        )
        run(
            [sys.executable, "-m", "tests.integration.txn_producer_proc", cluster.bootstrap,
             TXN_TOPIC, "ledger-writer", "4"],
            receiver.env("ledger"),
        )  # fmt: skip

        wanted = {
            ("shop", f"send {TOPIC}"),
            ("billing", f"process {TOPIC}"),
            ("sluice-broker", f"produce {TOPIC}"),
            ("sluice-broker", "raft replicate"),
            ("sluice-broker", f"fetch {TOPIC}"),
            ("ledger", "commit_transaction"),
            ("sluice-broker", "txn commit"),
        }

        def missing() -> set[tuple[str, str]]:
            return wanted - {(s.service, s.name) for s in receiver.snapshot()}

        wait_until(
            lambda: not missing(),
            timeout=30,
            what="the spans of the produce-consume trace",
            detail=lambda: f"missing {sorted(missing())}",
        )
        spans = receiver.snapshot()
        assert receiver.bad_bodies == 0

        send = one(spans, service="shop", name=f"send {TOPIC}")
        assert send.kind == "PRODUCER" and send.parent_id == ""
        messaging(send, "send", "send", TOPIC)
        assert send.attributes["messaging.destination.partition.id"] == "0"
        assert send.attributes["messaging.batch.message_count"] == RECORDS
        trace = [s for s in spans if s.trace_id == send.trace_id]

        request = one(trace, service="shop", name="produce")
        assert request.kind == "CLIENT" and request.parent_id == send.span_id
        messaging(request, "produce", "send", TOPIC)

        served = one(trace, service="sluice-broker", name=f"produce {TOPIC}")
        assert served.kind == "SERVER" and served.parent_id == request.span_id
        messaging(served, "produce", "send", TOPIC)
        assert served.attributes["messaging.batch.message_count"] == RECORDS
        assert served.attributes["sluice.error_code"] == "NONE"

        raft = one(trace, service="sluice-broker", name="raft replicate")
        assert raft.kind == "INTERNAL" and raft.parent_id == served.span_id
        events = [name for name, _ in raft.events]
        assert events[0] == "persisted" and events[-1] == "committed"
        followers = {
            attrs["sluice.broker.id"] for name, attrs in raft.events if name == "replicated"
        }
        assert followers and followers < {0, 1, 2}
        assert served.attributes["sluice.node_id"] not in followers

        process = one(trace, service="billing", name=f"process {TOPIC}")
        assert process.kind == "CONSUMER" and process.parent_id == send.span_id
        messaging(process, "process", "process", TOPIC)
        assert process.attributes["messaging.batch.message_count"] == RECORDS
        assert (send.trace_id, send.span_id) in process.links

        polls = [s for s in spans if s.service == "billing" and s.name == f"poll {TOPIC}"]
        assert polls and all(p.kind == "CLIENT" for p in polls)
        assert any((send.trace_id, send.span_id) in p.links for p in polls)
        client_fetches = {
            s.span_id: s for s in spans if s.service == "billing" and s.name == f"fetch {TOPIC}"
        }
        broker_fetches = [
            s for s in spans if s.service == "sluice-broker" and s.name == f"fetch {TOPIC}"
        ]
        assert any(f.parent_id in client_fetches for f in broker_fetches)
        for f in broker_fetches:
            assert f.kind == "SERVER"
            messaging(f, "fetch", "receive", TOPIC)

        commit = one(spans, service="ledger", name="commit_transaction")
        assert commit.kind == "CLIENT" and commit.status != 2
        assert commit.attributes["sluice.transactional_id"] == "ledger-writer"
        end = one(spans, service="sluice-broker", name="end_txn")
        assert end.kind == "SERVER" and end.parent_id == commit.span_id
        assert end.attributes["sluice.txn.commit"] is True
        phases = [s for s in spans if s.parent_id == end.span_id]
        in_order = [s.name for s in sorted(phases, key=lambda s: s.start_ns)]
        assert in_order == ["txn prepare", "txn precommit", "txn commit"]
        assert all(s.trace_id == commit.trace_id for s in phases)
