"""MetadataMachine: commands decided at apply, validation, placement, determinism."""

from __future__ import annotations

import copy
import itertools
from collections import Counter

import pytest

from broker.core.metadata import (
    METADATA_GROUP,
    NOT_YET_ENFORCED,
    PRODUCER_ID_BLOCK,
    BrokerInfo,
    MetadataMachine,
    MetaResult,
    TopicInfo,
    cmd_alloc_producer_ids,
    cmd_alter_topic,
    cmd_create_topic,
    cmd_delete_topic,
    cmd_init,
    cmd_register_broker,
    validate_topic_config,
    validate_topic_config_syntax,
)
from broker.core.metadata_moves import (
    Reassigned,
    cmd_reassign,
    cmd_reassign_cancel,
    cmd_reassign_done,
)
from broker.wire.cbor import encode as cbor_encode
from broker.wire.errors import ErrorCode
from broker.wire.messages import CreateTopicsRequest, CreateTopicsResponse, NewTopic
from tests.support.broker_harness import Broker


def broker(i: int, rack: str | None = None, incarnation: int = 1) -> BrokerInfo:
    return BrokerInfo(i, incarnation, f"h{i}", 9092 + i, f"h{i}", 19092 + i, rack)


class Meta:
    """A MetadataMachine fed consecutive indexes."""

    def __init__(self) -> None:
        self.m = MetadataMachine()
        self.index = 0

    def apply(self, data: bytes) -> MetaResult:
        self.index += 1
        return self.m.apply(self.index, data)

    def with_brokers(self, *brokers: BrokerInfo) -> Meta:
        self.apply(cmd_init("c1"))
        for b in brokers:
            assert self.apply(cmd_register_broker(b)).error == ErrorCode.NONE
        return self

    def create(
        self, name: str, partitions: int = 1, rf: int = 1, config: dict[str, str] | None = None
    ) -> MetaResult:
        return self.apply(cmd_create_topic(name, partitions, rf, config or {}))


def three() -> Meta:
    return Meta().with_brokers(broker(0), broker(1), broker(2))


# -- init and brokers -------------------------------------------------------------------------


def test_init_happens_once() -> None:
    meta = Meta()
    assert meta.apply(cmd_init("first")) == MetaResult(value="first")
    assert meta.apply(cmd_init("second")) == MetaResult(value="first")
    assert meta.m.cluster_id == "first"
    assert meta.m.applied_index == 2


def test_register_broker_adds_and_replaces() -> None:
    meta = Meta().with_brokers(broker(0, "a"))
    assert meta.m.brokers == {0: broker(0, "a")}
    newer = broker(0, "b", incarnation=2)
    assert meta.apply(cmd_register_broker(newer)) == MetaResult(value=newer)
    meta.apply(cmd_register_broker(broker(5)))
    assert meta.m.brokers == {0: newer, 5: broker(5)}


def test_init_without_cluster_id_is_malformed() -> None:
    meta = Meta()
    assert meta.apply(cbor_encode({"op": "init"})).error == ErrorCode.INVALID_REQUEST
    assert meta.m.cluster_id is None


def test_apply_indexes_must_increase() -> None:
    m = MetadataMachine()
    m.apply(5, cmd_init("c"))
    with pytest.raises(AssertionError):
        m.apply(5, cmd_init("c"))


# -- create_topic -----------------------------------------------------------------------------


def test_create_topic_records_the_topic() -> None:
    meta = three()
    res = meta.create("orders", 2, 3, {"retention.ms": "-1", "cleanup.policy": "compact"})
    assert res.error == ErrorCode.NONE
    t = res.value
    assert isinstance(t, TopicInfo)
    assert meta.m.topics["orders"] == t
    assert t.replication_factor == 3
    assert [p.partition for p in t.partitions] == [0, 1]
    assert all(sorted(p.replicas) == [0, 1, 2] for p in t.partitions)
    assert t.setting("cleanup.policy") == "compact"
    assert t.setting("max.message.bytes") == str(1 << 20)  # default
    assert meta.m.partition("orders", 1) == t.partitions[1]
    assert meta.m.partition("orders", 2) is None
    assert meta.m.partition("orders", -1) is None
    assert meta.m.partition("nope", 0) is None


@pytest.mark.parametrize(
    ("name", "partitions", "rf", "config", "code"),
    [
        ("", 1, 1, {}, ErrorCode.INVALID_TOPIC),
        (".", 1, 1, {}, ErrorCode.INVALID_TOPIC),
        ("..", 1, 1, {}, ErrorCode.INVALID_TOPIC),
        ("a b", 1, 1, {}, ErrorCode.INVALID_TOPIC),
        ("a/b", 1, 1, {}, ErrorCode.INVALID_TOPIC),
        ("x" * 250, 1, 1, {}, ErrorCode.INVALID_TOPIC),
        ("t", 0, 1, {}, ErrorCode.INVALID_PARTITIONS),
        ("t", -1, 1, {}, ErrorCode.INVALID_PARTITIONS),
        ("t", 10_001, 1, {}, ErrorCode.INVALID_PARTITIONS),
        ("t", 1, 0, {}, ErrorCode.INVALID_REPLICATION_FACTOR),
        ("t", 1, 4, {}, ErrorCode.NOT_ENOUGH_REPLICAS),  # 3 live brokers
        ("t", 1, 1, {"min.insync.replicas": "2"}, ErrorCode.INVALID_CONFIG),
        ("t", 1, 1, {"max.message.bytes": "0"}, ErrorCode.INVALID_CONFIG),
        ("t", 1, 1, {"max.message.bytes": "big"}, ErrorCode.INVALID_CONFIG),
        ("t", 1, 1, {"retention.ms": "-2"}, ErrorCode.INVALID_CONFIG),
        ("t", 1, 1, {"retention.bytes": "1.5"}, ErrorCode.INVALID_CONFIG),
        ("t", 1, 1, {"cleanup.policy": "forever"}, ErrorCode.INVALID_CONFIG),
    ],
)
def test_create_topic_validation(
    name: str, partitions: int, rf: int, config: dict[str, str], code: ErrorCode
) -> None:
    meta = three()
    before = copy.deepcopy(meta.m)
    res = meta.create(name, partitions, rf, config)
    assert res.error == code
    assert res.message
    assert res.value is None
    before.applied_index = meta.m.applied_index
    assert meta.m == before  # nothing changed, no group id used


def test_valid_edge_values_are_accepted() -> None:
    meta = three()
    assert meta.create("x" * 249, 1, 3).error == ErrorCode.NONE
    assert meta.create("a.B-c_9", 10_000, 1).error == ErrorCode.NONE
    cfg = {"max.message.bytes": "1", "retention.bytes": "-1", "cleanup.policy": "delete"}
    assert meta.create("cfg", 1, 1, cfg).error == ErrorCode.NONE


def test_create_existing_topic() -> None:
    meta = three()
    first = meta.create("t", 2, 1).value
    res = meta.create("t", 5, 3)
    assert res.error == ErrorCode.TOPIC_ALREADY_EXISTS
    assert meta.m.topics["t"] == first


def test_group_ids_are_unique_and_increasing() -> None:
    meta = three()
    a = meta.create("a", 3, 1).value
    meta.create("bad", 0, 1)
    b = meta.create("b", 2, 1).value
    meta.apply(cmd_delete_topic("a"))
    c = meta.create("a", 2, 1).value  # recreated: new groups, never the old ids
    ids = [p.group_id for t in (a, b, c) for p in t.partitions]
    assert ids == list(range(METADATA_GROUP + 1, METADATA_GROUP + 8))
    assert meta.m.next_group_id == METADATA_GROUP + 8


# -- placement --------------------------------------------------------------------------------


def test_placement_three_brokers_two_racks() -> None:
    meta = Meta().with_brokers(broker(0, "a"), broker(1, "b"), broker(2, "a"))
    t = meta.create("t", 6, 3).value
    racks = {b.id: b.rack for b in meta.m.brokers.values()}
    leads = Counter(p.replicas[0] for p in t.partitions)
    load = Counter(r for p in t.partitions for r in p.replicas)
    assert leads == {0: 2, 1: 2, 2: 2}
    assert load == {0: 6, 1: 6, 2: 6}
    for p in t.partitions:
        assert len(set(p.replicas)) == 3
        # Only two racks for three replicas: both racks are used.
        assert {racks[r] for r in p.replicas} == {"a", "b"}
        # The first two replicas are on different racks.
        assert racks[p.replicas[0]] != racks[p.replicas[1]]


def test_placement_avoids_sharing_a_rack_when_it_can() -> None:
    meta = Meta().with_brokers(*(broker(i, "abc"[i // 2]) for i in range(6)))
    racks = {b.id: b.rack for b in meta.m.brokers.values()}
    t = meta.create("t", 12, 3).value
    for p in t.partitions:
        assert len({racks[r] for r in p.replicas}) == 3
    leads = Counter(p.replicas[0] for p in t.partitions)
    load = Counter(r for p in t.partitions for r in p.replicas)
    assert leads == dict.fromkeys(range(6), 2)
    assert load == dict.fromkeys(range(6), 6)


def test_rack_spread_wins_over_load_when_a_rack_has_one_broker() -> None:
    meta = Meta().with_brokers(*(broker(i, "aabbc"[i]) for i in range(5)))
    t = meta.create("t", 10, 3).value
    # Every partition needs rack c, which only broker 4 offers.
    assert all(4 in p.replicas for p in t.partitions)
    assert Counter(p.replicas[0] for p in t.partitions) == dict.fromkeys(range(5), 2)


def test_placement_without_racks_spreads_evenly() -> None:
    meta = Meta().with_brokers(*(broker(i) for i in range(4)))
    t = meta.create("t", 8, 2).value
    assert Counter(p.replicas[0] for p in t.partitions) == dict.fromkeys(range(4), 2)
    assert Counter(r for p in t.partitions for r in p.replicas) == dict.fromkeys(range(4), 4)
    assert all(p.replicas[0] != p.replicas[1] for p in t.partitions)


def test_placement_counts_existing_topics() -> None:
    meta = three()
    first = meta.create("a", 1, 1).value
    second = meta.create("b", 2, 1).value
    leaders = [p.replicas[0] for t in (first, second) for p in t.partitions]
    assert sorted(leaders) == [0, 1, 2]
    third = meta.create("c", 3, 2).value
    assert sorted(p.replicas[0] for p in third.partitions) == [0, 1, 2]


# -- delete_topic and producer ids ------------------------------------------------------------


def test_delete_topic() -> None:
    meta = three()
    t = meta.create("t", 2, 1).value
    assert meta.apply(cmd_delete_topic("t")) == MetaResult(value=t)
    assert "t" not in meta.m.topics
    res = meta.apply(cmd_delete_topic("t"))
    assert res.error == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    assert res.value is None


def test_producer_id_blocks_are_disjoint() -> None:
    meta = three()
    blocks = [meta.apply(cmd_alloc_producer_ids(i % 3)).value for i in range(5)]
    assert [b[0] for b in blocks] == [0, 1, 2, 0, 1]
    ranges = [range(start, start + count) for _, start, count in blocks]
    assert all(len(r) == PRODUCER_ID_BLOCK for r in ranges)
    for r1, r2 in itertools.combinations(ranges, 2):
        assert not set(r1) & set(r2)
    assert meta.m.next_producer_id == 5 * PRODUCER_ID_BLOCK


# -- malformed commands -----------------------------------------------------------------------

MALFORMED = [
    pytest.param(b"\xff\xff", id="undecodable"),
    pytest.param(b"", id="empty"),
    pytest.param(cbor_encode([1, 2]), id="not-a-map"),
    pytest.param(cbor_encode({"op": "explode"}), id="unknown-op"),
    pytest.param(cbor_encode({"op": 7}), id="op-not-text"),
    pytest.param(cbor_encode({"name": "t"}), id="no-op"),
    pytest.param(cbor_encode({"op": "register_broker", "id": 9}), id="register-partial"),
    pytest.param(
        cbor_encode(
            {
                "op": "register_broker",
                "id": "x",
                "incarnation": 1,
                "host": "h",
                "port": 1,
                "peer_host": "h",
                "peer_port": 2,
                "rack": None,
            }
        ),
        id="register-bad-id",
    ),
    pytest.param(cbor_encode({"op": "create_topic", "name": "t"}), id="create-partial"),
    pytest.param(
        cbor_encode(
            {
                "op": "create_topic",
                "name": "t",
                "partitions": "many",
                "replication_factor": 1,
                "config": {},
            }
        ),
        id="create-bad-partitions",
    ),
    pytest.param(
        cbor_encode(
            {
                "op": "create_topic",
                "name": "t",
                "partitions": 1,
                "replication_factor": 1,
                "config": [1, 2, 3],
            }
        ),
        id="create-config-not-map",
    ),
    pytest.param(cbor_encode({"op": "delete_topic"}), id="delete-no-name"),
]


@pytest.mark.parametrize("data", MALFORMED)
def test_malformed_commands_are_rejected_without_changing_state(data: bytes) -> None:
    meta = three()
    meta.create("keep", 2, 2)
    before = copy.deepcopy(meta.m)
    res = meta.apply(data)
    assert res.error == ErrorCode.INVALID_REQUEST
    assert res.message
    before.applied_index = meta.m.applied_index
    assert meta.m == before


def test_malformed_alloc_producer_ids_changes_nothing() -> None:
    meta = three()
    res = meta.apply(cbor_encode({"op": "alloc_producer_ids"}))
    assert res.error == ErrorCode.INVALID_REQUEST
    assert meta.m.next_producer_id == 0


def test_init_with_null_cluster_id_is_rejected() -> None:
    meta = Meta()
    res = meta.apply(cbor_encode({"op": "init", "cluster_id": None}))
    assert res.error == ErrorCode.INVALID_REQUEST
    assert meta.m.cluster_id is None


# -- determinism ------------------------------------------------------------------------------


def test_two_machines_applying_the_same_commands_are_equal() -> None:
    commands = [
        cmd_init("c"),
        cmd_register_broker(broker(2, "x")),
        cmd_register_broker(broker(0, "y")),
        cmd_register_broker(broker(1, "x")),
        cmd_create_topic("a", 5, 2, {}),
        cmd_alloc_producer_ids(1),
        cmd_create_topic("b", 3, 3, {"retention.ms": "10"}),
        cmd_create_topic("bad", 3, 9, {}),
        b"garbage",
        cmd_delete_topic("a"),
        cmd_create_topic("c", 4, 1, {}),
        cmd_alloc_producer_ids(0),
    ]
    machines = [Meta(), Meta()]
    results = [[meta.apply(c) for c in commands] for meta in machines]
    assert results[0] == results[1]
    assert machines[0].m == machines[1].m
    assert set(machines[0].m.topics) == {"b", "c"}
    # Registration order does not matter to placement: it reads brokers sorted by id.
    other = Meta()
    reordered = [commands[0], commands[2], commands[3], commands[1], *commands[4:]]
    for c in reordered:
        other.apply(c)
    assert other.m.topics == machines[0].m.topics


# -- honest configuration ---------------------------------------------------------------------


def test_a_setting_the_broker_does_not_enforce_is_refused_for_a_new_topic(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert NOT_YET_ENFORCED == {}  # every setting is enforced; the rule stays for new ones
    monkeypatch.setitem(NOT_YET_ENFORCED, "cleanup.policy", "delete")
    bad = validate_topic_config({"cleanup.policy": "compact"})
    assert bad is not None and "cleanup.policy" in bad and "not enforced" in bad
    # The metadata log still applies it (a log written before is replayed unchanged).
    assert validate_topic_config_syntax({"cleanup.policy": "compact"}) is None


@pytest.mark.parametrize(
    "config",
    [
        {"retention.ms": "-1"},
        {"retention.bytes": "-1"},
        {"retention.ms": "60000", "retention.bytes": "1048576"},
        {"cleanup.policy": "delete"},
        {"cleanup.policy": "compact", "delete.retention.ms": "1000"},
        {},
    ],
)
def test_the_enforced_values_are_accepted(config: dict[str, str]) -> None:
    assert validate_topic_config(config) is None


def test_a_create_request_with_an_unenforced_setting_gets_invalid_config(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(NOT_YET_ENFORCED, "cleanup.policy", "delete")
    b = Broker().boot()
    req = CreateTopicsRequest(
        topics=(
            NewTopic(
                name="t", partitions=1, replication_factor=1, config={"cleanup.policy": "compact"}
            ),
        ),
        timeout_ms=1000,
    )
    reply = b.call(req)
    assert isinstance(reply.body, CreateTopicsResponse)
    (result,) = reply.body.topics
    assert result.error == ErrorCode.INVALID_CONFIG
    assert "cleanup.policy" in (result.message or "")
    assert "t" not in b.node.meta.topics


# -- reassignment -----------------------------------------------------------------------------


def _moving() -> Meta:
    meta = Meta().with_brokers(broker(0), broker(1), broker(2), broker(3))
    meta.create("t", 2, 2)
    return meta


def test_reassign_sets_a_target_and_done_makes_it_the_replicas() -> None:
    meta = _moving()
    before = meta.m.topics["t"].partitions[0]
    new = (3, before.replicas[1])
    res = meta.apply(cmd_reassign([("t", 0, new)], drain=[1], throttle=1024))
    assert isinstance(res.value, Reassigned) and res.error == ErrorCode.NONE
    pi = meta.m.topics["t"].partitions[0]
    assert pi.replicas == before.replicas and pi.target == new
    assert pi.hosts == frozenset(before.replicas) | {3}
    assert meta.m.draining == {1} and meta.m.throttle == 1024
    assert meta.m.reassignments() == [("t", pi)]
    # A stale report (another target) changes nothing; the right one completes the move.
    meta.apply(cmd_reassign_done(pi.group_id, (2, 3)))
    assert meta.m.topics["t"].partitions[0].target == new
    meta.apply(cmd_reassign_done(pi.group_id, new))
    done = meta.m.topics["t"].partitions[0]
    assert done.replicas == new and done.target is None and meta.m.reassignments() == []


def test_a_reorder_moves_no_data_and_a_bad_move_refuses_the_whole_command() -> None:
    meta = _moving()
    pi = meta.m.topics["t"].partitions[1]
    flipped = tuple(reversed(pi.replicas))
    assert meta.apply(cmd_reassign([("t", 1, flipped)])).error == ErrorCode.NONE
    assert meta.m.topics["t"].partitions[1].replicas == flipped
    assert meta.m.topics["t"].partitions[1].target is None
    for moves, code in (
        ([("t", 0, (3, 3))], ErrorCode.INVALID_REPLICA_ASSIGNMENT),
        ([("t", 0, (3, 9))], ErrorCode.INVALID_REPLICA_ASSIGNMENT),
        ([("t", 0, (3, 2)), ("t", 7, (3, 2))], ErrorCode.UNKNOWN_TOPIC_OR_PARTITION),
    ):
        snapshot = meta.m.state_bytes()
        assert meta.apply(cmd_reassign(moves)).error == code
        assert meta.m.topics["t"].partitions[0].target is None
        meta.m.applied_index -= 1  # the state bytes hold the applied index too
        assert meta.m.state_bytes() == snapshot
        meta.m.applied_index += 1


def test_cancel_sends_targets_back_and_snapshots_keep_moves_and_drains() -> None:
    meta = _moving()
    pi = meta.m.topics["t"].partitions[0]
    meta.apply(cmd_reassign([("t", 0, (3, 2))], drain=[0]))
    copy_ = MetadataMachine()
    copy_.restore(meta.m.state_bytes())
    assert copy_.topics == meta.m.topics and copy_.draining == {0}
    meta.apply(cmd_reassign_cancel())
    back = meta.m.topics["t"].partitions[0]
    assert back.target == pi.replicas and back.replicas == pi.replicas
    meta.apply(cmd_reassign_done(pi.group_id, pi.replicas))
    assert meta.m.topics["t"].partitions[0].target is None


def test_placement_skips_draining_brokers() -> None:
    meta = _moving()
    meta.apply(cmd_reassign([], drain=[0, 1]))
    meta.create("u", 4, 2)
    assert all(set(p.replicas) == {2, 3} for p in meta.m.topics["u"].partitions)


def test_alter_topic_adds_partitions_and_changes_settings_never_lowers() -> None:
    meta = _moving()
    before = meta.m.topics["t"]
    res = meta.apply(cmd_alter_topic("t", 5, {"max.message.bytes": "2048"}, []))
    assert res.error == ErrorCode.NONE, res
    t = meta.m.topics["t"]
    assert t.partitions[:2] == before.partitions and len(t.partitions) == 5
    assert [p.partition for p in t.partitions] == list(range(5))
    assert len({p.group_id for p in t.partitions}) == 5
    assert all(len(set(p.replicas)) == 2 for p in t.partitions)
    assert t.config == {"max.message.bytes": "2048"}
    assert meta.apply(cmd_alter_topic("t", None, {}, ["max.message.bytes"])).error == ErrorCode.NONE
    assert meta.m.topics["t"].config == {}
    for cmd, code in (
        (cmd_alter_topic("t", 3, {}, []), ErrorCode.INVALID_PARTITIONS),
        (cmd_alter_topic("t", None, {"bogus": "1"}, []), ErrorCode.INVALID_CONFIG),
        (cmd_alter_topic("nope", 9, {}, []), ErrorCode.UNKNOWN_TOPIC_OR_PARTITION),
    ):
        assert meta.apply(cmd).error == code
    assert len(meta.m.topics["t"].partitions) == 5
