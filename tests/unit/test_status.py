"""The status console's data (broker/runtime/status_report.py and status.py): one broker's
report read from a real node (one in-memory broker), its wire form through the strict peer
decoder, the refusal of malformed reports, the encoded-size count it is built with, the bound
on a report's size (a node leading thousands of partitions and hundreds of big groups and
transactions) on the real peer request path; and the cluster-wide document: a broker is down
when silent or failed in the metadata log, the newest Raft term wins, high watermarks come
from the current leader's report only, group lag from that high watermark, every list is
bounded and says when it was cut."""

from __future__ import annotations

import json
from typing import Any

import pytest

from broker.core.groups.coordinator import GroupCoordinator
from broker.core.groups.group import Committed, ConsumerGroup, MemberInfo
from broker.core.groups.membership import MemberState
from broker.core.groups.service import OFFSETS_TOPIC
from broker.core.node import BrokerNode
from broker.core.peer_codec import PEER_LIMITS, PEER_MESSAGE_BYTES
from broker.core.peer_requests import Answer, PeerRequests
from broker.core.txn.coordinator import TransactionCoordinator, TxnEntry, TxnState
from broker.core.txn.protocol import GROUP, Participant
from broker.core.txn.service import TXN_TOPIC
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
    report_body,
    wire_size,
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
RUN = 77
MONO_MS = 5_000


def report(node_id: int, **fields: object) -> BrokerReport:
    base: dict[str, object] = {
        "node_id": node_id,
        "incarnation": 7,
        "time_ms": NOW_MS,
        "run": RUN,
        "mono_ms": MONO_MS,
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
    r = collect_report(b.node, time_ms=NOW_MS, run=RUN, mono_ms=MONO_MS, counters=counters)
    assert (r.node_id, r.time_ms, r.run, r.mono_ms) == (0, NOW_MS, RUN, MONO_MS)
    assert dict(r.counters) == {"records_produced": 5.0}
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
    assert (broker["time_ms"], broker["run"], broker["mono_ms"]) == (NOW_MS, RUN, MONO_MS)
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
    r = collect_report(b.node, time_ms=NOW_MS, run=RUN, mono_ms=MONO_MS, counters={}, caps=caps)
    assert [p.partition for p in r.partitions] == [0] and r.truncated
    assert len(r.groups) == 1 and len(r.txns) == 1  # one of each: nothing else was cut


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
    assert BrokerReport.decode(report_body(r)) == r


@pytest.mark.parametrize(
    "mutate",
    [
        lambda w: [w],
        lambda w: {**w, "version": 1},
        lambda w: {**w, "node_id": True},
        lambda w: {**w, "mono_ms": 1.5},
        lambda w: {k: v for k, v in w.items() if k != "run"},
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


@pytest.mark.parametrize(
    "body",
    [None, {"version": 2}, b"", b"\xff", encode([1]), encode(1) + b"\x00", encode({"version": 1})],
    ids=lambda _: "",
)
def test_a_status_answer_that_is_not_an_encoded_report_is_refused(body: object) -> None:
    with pytest.raises(ReportError):
        BrokerReport.decode(body)


@pytest.mark.parametrize(
    "value",
    [
        None, True, False, 0, 23, 24, 255, 256, 65_535, 65_536, 2**32 - 1, 2**32, 2**64 - 1,
        -1, -24, -25, -(2**32), -(2**64), "", "x" * 23, "x" * 24, "é" * 200, "\U0001f600",
        "y" * 70_000, b"", b"z" * 300, [], list(range(30)), ["a", [1, [2, None]]] * 10,
        {"a": 1, "bb": [True, "c"]}, {str(i): i for i in range(40)},
    ],
    ids=lambda _: "",
)  # fmt: skip
def test_wire_size_is_the_encoded_size(value: object) -> None:
    assert wire_size(value) == len(encode(value))


def test_wire_size_bounds_a_float() -> None:
    for v in (0.0, 1.5, 1e300, float("inf"), float("nan")):
        assert len(encode(v)) <= wire_size(v) == 9


LONG = "t" * 249
"""The longest topic name."""


@pytest.fixture(scope="module")
def big_broker() -> Broker:
    """A broker leading 1500 partitions of a topic with the longest name, coordinating 300
    groups of 20 members (each holding 100 partitions) and 200 committed offsets each, and
    300 open transactions of 60 participants, all with long ids: tens of megabytes if
    nothing were cut. The groups and transactions are put into the coordinators' state (the
    report only reads it)."""
    b = Broker(options={"internal_topic_partitions": 1, "tick_ms": 50}, peers=True).boot()
    b.create_topic(LONG, partitions=1500)
    for key, kind in (("g", CoordinatorType.GROUP), ("tx", CoordinatorType.TRANSACTION)):
        for _ in range(60):  # the internal topics are created on first use
            if b.call(FindCoordinatorRequest(key=key, key_type=kind)).error == ErrorCode.NONE:
                break
            b.tick()
    groups, txns = _coordinators(b.node)
    for i in range(300):
        gid = f"group-{i:04d}-" + "g" * 1000
        group = ConsumerGroup(gid)
        for j in range(20):
            mid = f"member-{j:02d}-" + "m" * 200
            group.members[mid] = MemberInfo(None, "client-" + "c" * 200, "/10.0.0.1", 45_000,
                                            (LONG,), None)  # fmt: skip
            group.membership.members[mid] = MemberState(
                mid, 1, frozenset({LONG}), held={(LONG, 100 * j + k) for k in range(100)}
            )
        group.offsets = {(LONG, p): Committed(p, None, 0) for p in range(200)}
        groups.groups[gid] = group
    for i in range(300):
        tid = f"txn-{i:04d}-" + "x" * 1000
        t = TxnEntry(tid, 1000 + i, 0, 60_000, TxnState.ONGOING, started_ms=NOW_MS - 5)
        t.participants = {Participant(LONG, p): -1 for p in range(50)}
        t.participants.update({Participant(f"g{k}-" + "g" * 500, GROUP): -1 for k in range(10)})
        txns.txns[tid] = t
    return b


def _coordinators(node: BrokerNode) -> tuple[GroupCoordinator, TransactionCoordinator]:
    (groups,) = [
        g.machine
        for (t, _), g in node.by_partition.items()
        if t == OFFSETS_TOPIC and isinstance(g.machine, GroupCoordinator)
    ]
    (txns,) = [
        g.machine
        for (t, _), g in node.by_partition.items()
        if t == TXN_TOPIC and isinstance(g.machine, TransactionCoordinator)
    ]
    return groups, txns


def test_a_big_brokers_report_is_cut_in_one_pass_under_the_peer_message_bound(
    big_broker: Broker,
) -> None:
    """Built once, with no cap below the node's counts: the items stop where the next would
    go over the budget; the answer fills most of it (no halving), travels the real peer
    request path (local) intact and keeps a prefix of each list in order."""
    b = big_broker
    huge = ReportCaps(100_000, 100_000, 100_000, 100_000, 100_000, 100_000, 100_000)
    r = collect_report(b.node, time_ms=NOW_MS, run=RUN, mono_ms=MONO_MS, counters={}, caps=huge)
    body = encode(r.to_wire())
    assert report_body(r) == body  # fitted as built: no fallback
    assert REPORT_BYTES - 16 * 1024 < len(body) <= REPORT_BYTES < PEER_MESSAGE_BYTES
    assert r.truncated
    assert [p.partition for p in r.partitions] == list(range(1500))  # all, in order
    assert 0 < len(r.groups) < 300 and r.txns == ()
    assert [g.group_id for g in r.groups] == sorted(g.group_id for g in r.groups)
    assert r.groups[0].group_id.startswith("group-0000-") and r.groups[-1].truncated

    # The default caps: each list cut at its cap, still under the bound.
    d = collect_report(b.node, time_ms=NOW_MS, run=RUN, mono_ms=MONO_MS, counters={})
    caps = ReportCaps()
    assert d.truncated and len(report_body(d)) <= REPORT_BYTES
    assert len(d.partitions) == min(1500, caps.partitions)
    assert all(len(g.members) <= caps.members and len(g.offsets) <= caps.offsets for g in d.groups)
    assert all(len(m.assigned) <= caps.assigned for g in d.groups for m in g.members)

    pr = PeerRequests(0, 1, 5)
    pr.register(STATUS, lambda _: Answer(body))
    pr.request(0, STATUS)
    results = []
    while not results and pr.has_work():  # the request to itself, then its answer
        pr.run_local()
        results = pr.take_results()
    (result,) = results
    assert result.ok, result
    assert BrokerReport.decode(result.body) == r


@pytest.mark.parametrize("budget", [0, 100, 300, 1_000, 3_000, 10_000, 50_000, 200_000])
def test_a_report_built_for_a_budget_fits_it(big_broker: Broker, budget: int) -> None:
    """Whatever the budget, the count of encoded bytes the report is built with holds: its
    encoding is within the budget as built, and only the first items of each list are kept,
    the last group or transaction with a prefix of its own lists."""
    b = big_broker
    caps = ReportCaps(partitions=40, groups=5, txns=5)
    r = collect_report(
        b.node, time_ms=NOW_MS, run=RUN, mono_ms=MONO_MS, counters={"records_produced": 1.0},
        caps=caps, budget=budget,
    )  # fmt: skip
    assert len(encode(r.to_wire())) <= max(budget, len(encode(_emptied(r).to_wire())))
    full = collect_report(
        b.node, time_ms=NOW_MS, run=RUN, mono_ms=MONO_MS, counters={"records_produced": 1.0},
        caps=caps, budget=10 * REPORT_BYTES,
    )  # fmt: skip
    assert r.truncated
    assert r.partitions == full.partitions[: len(r.partitions)]
    assert [g.group_id for g in r.groups] == [g.group_id for g in full.groups[: len(r.groups)]]
    assert [t.transactional_id for t in r.txns] == [
        t.transactional_id for t in full.txns[: len(r.txns)]
    ]
    for g, whole in zip(r.groups, full.groups, strict=False):
        assert [m.member_id for m in g.members] == [
            m.member_id for m in whole.members[: len(g.members)]
        ]
        assert g.offsets == whole.offsets[: len(g.offsets)]


def _emptied(r: BrokerReport) -> BrokerReport:
    """The report without any item (what no budget can go below)."""
    return BrokerReport(r.node_id, r.incarnation, r.time_ms, r.run, r.mono_ms, r.counters)


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


def test_a_partition_whose_current_leader_did_not_report_shows_nothing_stale() -> None:
    """The metadata names broker 2 leader of t[0] in term 6; only broker 1, its leader in
    term 5, answered: the partition's offsets are unknown (null), its replica progress is
    the metadata's, and a group's lag on it is unknown too. t[1]'s report is as new as its
    metadata term: shown."""
    offsets = (("t", 0, 10), ("t", 1, 2))
    answers = {
        0: BrokerAnswer(report(0, groups=(group("g", 1, offsets),)), True),
        1: BrokerAnswer(
            report(1, partitions=(part("t", 0, 5, 60, (1, 2)), part("t", 1, 3, 7, (1,)))), True
        ),
        2: BrokerAnswer(None, False, "REQUEST_TIMED_OUT"),
    }
    stale = PartitionStatus("t", PartitionView(0, 2, 6, (0, 1, 2)), (2,), 4)
    parts = (stale, status_row("t", 1, 1, 3))
    doc = built(
        ClusterStatus(snapshot(True, True, True, partitions=parts), answers, time_ms=NOW_MS)
    )
    p0, p1 = doc["partitions"]
    assert (p0["leader"], p0["leader_term"]) == (2, 6)
    assert (p0["high_watermark"], p0["last_stable_offset"], p0["log_start_offset"]) == (
        None,
        None,
        None,
    )
    assert (p0["caught_up"], p0["commit_lag"]) == ([2], 4)
    assert (p1["high_watermark"], p1["caught_up"]) == (7, [1])
    (g,) = doc["groups"]
    assert [(o["partition"], o["high_watermark"], o["lag"]) for o in g["offsets"]] == [
        (0, None, None),
        (1, 7, 5),
    ]
    assert g["lag"] is None


def test_the_document_carries_the_clocks() -> None:
    """The serving broker's clocks (wall for display, monotonic with its run for intervals)
    and each reporting broker's; null for a broker without a report."""
    answers = {0: BrokerAnswer(report(0), True), 1: BrokerAnswer(None, False, "REQUEST_TIMED_OUT")}
    doc = built(ClusterStatus(snapshot(True, True), answers, time_ms=NOW_MS, mono_ms=9, run=RUN))
    assert (doc["time_ms"], doc["mono_ms"], doc["run"]) == (NOW_MS, 9, RUN)
    b0, b1 = doc["brokers"]
    assert (b0["time_ms"], b0["mono_ms"], b0["run"], b0["incarnation"]) == (NOW_MS, MONO_MS, RUN, 7)
    assert (b1["time_ms"], b1["mono_ms"], b1["run"], b1["incarnation"]) == (None,) * 4


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
