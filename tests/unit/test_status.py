"""The status console's data (broker/runtime/status_report.py and status.py): one broker's
report read from a real node (one in-memory broker), its wire form through the strict peer
decoder, the refusal of malformed reports, the bound on a report's size on the real peer
request path; and the cluster-wide document: a broker is down when silent or failed in the
metadata log, the newest Raft term wins, group lag comes from the leader's high watermark,
every list is bounded and says when it was cut."""

from __future__ import annotations

import json
from typing import Any

import pytest

from broker.core.peer_codec import PEER_LIMITS, PEER_MESSAGE_BYTES
from broker.core.peer_requests import Answer, PeerRequests
from broker.core.views import PartitionStatus, PartitionView
from broker.runtime.status import (
    BrokerAnswer,
    BrokerRow,
    ClusterStatus,
    MetadataSnapshot,
    StatusLimits,
    TopicRow,
)
from broker.runtime.status_report import (
    REPORT_BYTES,
    STATUS,
    BrokerReport,
    GroupReport,
    MemberReport,
    PartitionReport,
    ReportCaps,
    ReportError,
    TxnReport,
    collect_report,
    fit_report,
)
from broker.wire.cbor import decode, encode
from broker.wire.errors import ErrorCode
from broker.wire.group_messages import (
    CommitPartition,
    CommitTopic,
    CoordinatorType,
    FindCoordinatorRequest,
    OffsetCommitRequest,
)
from broker.wire.messages import InitProducerIdRequest, InitProducerIdResponse
from broker.wire.txn_messages import AddPartitionsToTxnRequest, TxnTopic
from tests.support.broker_harness import Broker, batch

NOW_MS = 1_700_000_000_000


def report(node_id: int, **fields: object) -> BrokerReport:
    base: dict[str, object] = {
        "node_id": node_id,
        "incarnation": 7,
        "time_ms": NOW_MS,
        "counters": {"records_produced": 10.0},
    }
    base.update(fields)
    return BrokerReport(**base)  # type: ignore[arg-type]


def built(status: ClusterStatus) -> Any:
    """The document as a client reads it (which also proves it is JSON)."""
    return json.loads(json.dumps(status.build()))


def part(topic: str, p: int, term: int, hw: int, caught: tuple[int, ...] = (0,)) -> PartitionReport:
    return PartitionReport(topic, p, term, hw, hw, 0, caught, 0)


def group(gid: str, term: int, offsets: tuple[tuple[str, int, int], ...]) -> GroupReport:
    return GroupReport(gid, term, "empty", 1, 0, (), offsets, False)


def status_row(topic: str, p: int, leader: int | None, term: int = 1) -> PartitionStatus:
    return PartitionStatus(topic, PartitionView(p, leader, term, (0, 1, 2)), (), -1)


def snapshot(
    *alive: bool, partitions: tuple[PartitionStatus, ...] = (), topics: tuple[TopicRow, ...] = ()
) -> MetadataSnapshot:
    brokers = tuple(BrokerRow(i, "127.0.0.1", 9092 + 10 * i, None, a) for i, a in enumerate(alive))
    return MetadataSnapshot(0, "c1", 0, brokers, topics, partitions)


# -- one broker's report ----------------------------------------------------------------------


def _coordinated_broker() -> Broker:
    """One broker with topic t (2 partitions, 3 + 2 records), group g's offset 1 on t[0]
    committed by an operator, and transaction tx open on t[1]."""
    b = Broker(options={"internal_topic_partitions": 2, "tick_ms": 50}, peers=True).boot()
    b.create_topic("t", partitions=2)
    assert b.produce("t", 0, batch(3)).error == ErrorCode.NONE
    assert b.produce("t", 1, batch(2)).error == ErrorCode.NONE
    for key, kind in (("g", CoordinatorType.GROUP), ("tx", CoordinatorType.TRANSACTION)):
        for _ in range(60):  # the internal topics are created on first use
            if b.call(FindCoordinatorRequest(key=key, key_type=kind)).error == ErrorCode.NONE:
                break
            b.tick()
    commit = OffsetCommitRequest(
        group_id="g",
        member_id="",
        member_epoch=-1,
        topics=(CommitTopic(topic="t", partitions=(CommitPartition(partition=0, offset=1),)),),
    )
    assert b.call(commit).error == ErrorCode.NONE
    init = b.call(InitProducerIdRequest(transactional_id="tx", transaction_timeout_ms=60_000))
    assert isinstance(init.body, InitProducerIdResponse), init
    add = AddPartitionsToTxnRequest(
        transactional_id="tx",
        producer_id=init.body.producer_id,
        producer_epoch=init.body.producer_epoch,
        topics=(TxnTopic(name="t", partitions=(1,)),),
    )
    assert b.call(add).error == ErrorCode.NONE
    return b


def test_a_report_holds_what_the_broker_leads_and_coordinates() -> None:
    b = _coordinated_broker()
    counters = {"records_produced": 5.0, "not_a_counter": 1.0}
    r = collect_report(b.node, time_ms=NOW_MS, counters=counters, caps=ReportCaps())
    assert (r.node_id, r.time_ms, dict(r.counters)) == (0, NOW_MS, {"records_produced": 5.0})
    assert [(p.topic, p.partition, p.high_watermark, p.caught_up) for p in r.partitions] == [
        ("t", 0, 3, (0,)),
        ("t", 1, 2, (0,)),
    ]  # internal topics are not partition logs: they come as groups and transactions
    (g,) = r.groups
    assert (g.group_id, g.state, g.member_count, g.offsets) == ("g", "empty", 0, (("t", 0, 1),))
    (t,) = r.txns
    assert (t.transactional_id, t.state, t.partitions, t.groups) == (
        "tx",
        "ongoing",
        (("t", 1),),
        (),
    )
    assert t.age_ms is not None and t.age_ms >= 0
    assert not r.truncated

    doc = built(
        ClusterStatus(
            MetadataSnapshot.of(b.node), {0: BrokerAnswer(r, True, ms=0.2)}, time_ms=NOW_MS
        )
    )
    (broker,) = doc["brokers"]
    assert broker["up"] and broker["controller"] and broker["counters"] == {"records_produced": 5.0}
    (listed,) = doc["groups"]
    assert listed["lag"] == 2 and listed["coordinator"] == 0
    assert listed["offsets"] == [
        {"topic": "t", "partition": 0, "committed": 1, "high_watermark": 3, "lag": 2}
    ]
    (txn,) = doc["transactions"]
    assert txn["transactional_id"] == "tx" and txn["partitions"] == [{"topic": "t", "partition": 1}]
    names = [t["name"] for t in doc["topics"]]
    assert names == ["t", "__consumer_offsets", "__transaction_state"]


def test_caps_cut_a_report_and_say_so() -> None:
    b = _coordinated_broker()
    caps = ReportCaps(partitions=1, groups=1, txns=1)
    r = collect_report(b.node, time_ms=NOW_MS, counters={}, caps=caps)
    assert [p.partition for p in r.partitions] == [0] and r.truncated


def test_a_report_survives_the_strict_peer_decoder() -> None:
    r = report(
        3,
        partitions=(part("t", 0, 4, 10, (0, 2)),),
        groups=(
            GroupReport(
                "g", 2, "stable", 5, 1,
                (MemberReport("m1", None, "/127.0.0.1", 5, (("t", 0), ("t", 1))),),
                (("t", 0, 7),), False,
            ),
        ),
        txns=(TxnReport("tx", 1, "ongoing", 9, 0, None, 60_000, (("t", 1),), ("g",), False),),
    )  # fmt: skip
    wire = decode(encode(r.to_wire()), PEER_LIMITS)
    assert BrokerReport.from_wire(wire) == r


@pytest.mark.parametrize(
    "mutate",
    [
        lambda w: [w],
        lambda w: {**w, "version": 2},
        lambda w: {**w, "node_id": True},
        lambda w: {**w, "counters": [1]},
        lambda w: {**w, "counters": {"records_produced": "many"}},
        lambda w: {**w, "partitions": [["t", 0, 1]]},
        lambda w: {**w, "partitions": [["t", "0", 1, 2, 2, 0, [], 0]]},
        lambda w: {**w, "groups": [["g", 1, "empty", 0, 0, [], [["t", 0]], False]]},
        lambda w: {**w, "txns": "none"},
        lambda w: {**w, "truncated": None},
    ],
    ids=lambda _: "",
)
def test_a_malformed_report_is_refused(mutate: object) -> None:
    wire = report(1, partitions=(part("t", 0, 1, 5),)).to_wire()
    assert callable(mutate)
    with pytest.raises(ReportError):
        BrokerReport.from_wire(mutate(wire))


def test_a_report_is_fitted_under_the_peer_message_bound() -> None:
    """Enough groups with long names to take megabytes: the caps are halved until the answer
    fits, and it travels the real peer request path (local) intact."""
    name = "n" * 240

    def build(caps: ReportCaps) -> BrokerReport:
        offsets = tuple((name, p, p) for p in range(min(caps.offsets, 400)))
        groups = tuple(group(f"{name}{i}", 1, offsets) for i in range(min(caps.groups, 150)))
        return report(0, groups=groups, truncated=caps.groups < 150 or caps.offsets < 400)

    wire = fit_report(build)
    assert len(encode(wire)) <= REPORT_BYTES < PEER_MESSAGE_BYTES
    groups: Any = wire["groups"]
    assert wire["truncated"] is True and 0 < len(groups) < 150

    pr = PeerRequests(0, 1, 5)
    pr.register(STATUS, lambda _: Answer(wire))
    pr.request(0, STATUS)
    results = []
    while not results and pr.has_work():  # the request to itself, then its answer
        pr.run_local()
        results = pr.take_results()
    (result,) = results
    assert result.ok, result
    assert BrokerReport.from_wire(result.body) == BrokerReport.from_wire(wire)


# -- the cluster-wide document ----------------------------------------------------------------


def test_a_silent_broker_or_one_failed_in_the_metadata_log_is_down() -> None:
    answers = {
        0: BrokerAnswer(report(0), True),
        1: BrokerAnswer(report(1), True),
        2: BrokerAnswer(None, False, "REQUEST_TIMED_OUT", 1000.0),
        3: BrokerAnswer(report(3), True),
    }
    doc = built(ClusterStatus(snapshot(False, True, True, False), answers, time_ms=NOW_MS))
    rows = {b["id"]: b for b in doc["brokers"]}
    # Broker 0 serves the document: up even before its own registration shows alive.
    assert {i: r["up"] for i, r in rows.items()} == {0: True, 1: True, 2: False, 3: False}
    assert rows[2]["error"] == "REQUEST_TIMED_OUT" and rows[2]["counters"] is None
    assert rows[3]["answered"] and not rows[3]["alive"]
    assert rows[0]["controller"] and rows[1]["address"] == "127.0.0.1:9102"


def test_the_newest_term_wins_and_lag_is_the_leaders_high_watermark_minus_the_commit() -> None:
    answers = {
        0: BrokerAnswer(
            report(0, partitions=(part("t", 0, 3, 50),), groups=(group("g", 2, (("t", 0, 10),)),)),
            True,
        ),
        1: BrokerAnswer(
            report(
                1,
                partitions=(part("t", 0, 4, 60, (0, 1, 2)),),
                groups=(group("g", 5, (("t", 0, 20), ("t", 1, 5), ("t", 2, 99))),),
            ),
            True,
        ),
        2: BrokerAnswer(report(2, partitions=(part("t", 2, 1, 90),)), True),
    }
    parts = (status_row("t", 0, 1, 4), status_row("t", 1, None), status_row("t", 2, 2))
    doc = built(
        ClusterStatus(snapshot(True, True, True, partitions=parts), answers, time_ms=NOW_MS)
    )
    p0, p1, _ = doc["partitions"]
    assert (p0["high_watermark"], p0["caught_up"], p0["commit_lag"]) == (60, [0, 1, 2], 0)
    assert (p1["leader"], p1["high_watermark"], p1["commit_lag"]) == (None, None, None)
    (g,) = doc["groups"]
    assert g["coordinator"] == 1  # the term-5 report, not broker 0's older one
    assert [(o["partition"], o["lag"]) for o in g["offsets"]] == [(0, 40), (1, None), (2, 0)]
    assert g["lag"] is None  # unknown while one partition's high watermark is


def test_every_list_is_bounded_and_says_when_it_was_cut() -> None:
    topics = (TopicRow("__consumer_offsets", 1, 3), TopicRow("b", 2, 3), TopicRow("a", 1, 3))
    parts = (
        status_row("__consumer_offsets", 0, 0),
        status_row("b", 1, 0),
        status_row("b", 0, 0),
        status_row("a", 0, 0),
    )
    answers = {
        0: BrokerAnswer(
            report(0, groups=(group("g2", 1, ()), group("g1", 1, ())), truncated=True), True
        )
    }
    limits = StatusLimits(topics=2, partitions=3, groups=1, transactions=1)
    snap = snapshot(True, partitions=parts, topics=topics)
    doc = built(ClusterStatus(snap, answers, time_ms=NOW_MS, limits=limits))
    assert [t["name"] for t in doc["topics"]] == ["a", "b"]
    assert [(p["topic"], p["partition"]) for p in doc["partitions"]] == [
        ("a", 0),
        ("b", 0),
        ("b", 1),
    ]
    assert [g["group_id"] for g in doc["groups"]] == ["g1"]
    assert doc["truncated"] == {
        "topics": True,
        "partitions": True,
        "groups": True,
        "transactions": False,
        "reports": [0],
    }
