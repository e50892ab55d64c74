"""The preferred-leader planner (broker/core/leader_balance.py): pure and deterministic."""

from __future__ import annotations

from broker.core.controller import TRANSFER_LEADER
from broker.core.leader_balance import (
    TRANSFER_MAX_LAG,
    PartitionLeadership,
    Transfer,
    is_imbalanced,
    max_in_flight,
    plan_transfers,
    ready_for_transfer,
)
from broker.core.metadata import METADATA_GROUP
from broker.core.peer_requests import PeerResult
from broker.wire.errors import ErrorCode
from broker.wire.messages import ElectLeadersRequest, ElectLeadersResponse
from tests.support.broker_harness import Broker

ALL = frozenset({0, 1, 2})


def part(
    p: int, replicas: tuple[int, ...], leader: int | None, caught_up: tuple[int, ...] = (0, 1, 2)
) -> PartitionLeadership:
    return PartitionLeadership("t", p, 100 + p, replicas, leader, caught_up)


def test_preferred_is_the_first_replica_and_imbalance_needs_it_alive() -> None:
    p = part(0, (2, 0, 1), 0)
    assert p.preferred == 2
    assert is_imbalanced(p, ALL)
    assert not is_imbalanced(p, {0, 1})  # preferred broker failed: nothing to move to
    assert not is_imbalanced(part(0, (0, 1, 2), 0), ALL)
    assert is_imbalanced(part(0, (0, 1, 2), None), ALL)  # leaderless counts as pending
    assert not is_imbalanced(part(0, (), None), ALL)


def test_a_balanced_cluster_plans_nothing() -> None:
    parts = [part(i, tuple((i + k) % 3 for k in range(3)), i % 3) for i in range(6)]
    plan = plan_transfers(parts, ALL, (), 10)
    assert plan.transfers == () and plan.imbalanced == ()


def test_after_a_restart_the_survivors_hand_back_within_the_budget() -> None:
    # Broker 2 restarted: its preferred partitions (2 and 5) are led by 0 and 1.
    parts = [
        part(0, (0, 1, 2), 0),
        part(1, (1, 2, 0), 1),
        part(2, (2, 0, 1), 0),
        part(3, (0, 2, 1), 0),
        part(4, (1, 0, 2), 1),
        part(5, (2, 1, 0), 1),
    ]
    plan = plan_transfers(parts, ALL, (), max_in_flight(len(parts)))
    assert max_in_flight(len(parts)) == 1
    # Broker 0 leads 3 partitions, broker 1 leads 3: a tie, broken by (topic, partition).
    assert plan.transfers == (Transfer("t", 2, 102, 0, 2),)
    assert [p.partition for p in plan.imbalanced] == [2, 5]
    # With more room both go, and the same view always gives the same plan.
    wide = plan_transfers(parts, ALL, (), 10)
    assert wide.transfers == (Transfer("t", 2, 102, 0, 2), Transfer("t", 5, 105, 1, 2))
    assert plan_transfers(list(reversed(parts)), ALL, (), 10) == wide


def test_the_most_loaded_leader_gives_up_first() -> None:
    parts = [
        part(0, (2, 0, 1), 0),
        part(1, (2, 1, 0), 1),
        part(2, (1, 0, 2), 0),
        part(3, (0, 1, 2), 0),
    ]
    plan = plan_transfers(parts, ALL, (), 1)
    assert plan.transfers == (Transfer("t", 0, 100, 0, 2),)


def test_in_flight_transfers_count_against_the_budget_and_are_not_asked_twice() -> None:
    parts = [part(i, (2, 0, 1), 0) for i in range(4)]
    plan = plan_transfers(parts, ALL, {100}, 2)
    assert [t.partition for t in plan.transfers] == [1]
    assert plan_transfers(parts, ALL, {100, 101}, 2).transfers == ()
    assert len(plan_transfers(parts, ALL, {100, 101}, 2).imbalanced) == 4


def test_only_to_a_caught_up_preferred_replica_from_a_live_leader() -> None:
    behind = part(0, (2, 0, 1), 0, caught_up=(0, 1))
    unknown = part(1, (2, 0, 1), 0, caught_up=())
    dead_leader = part(2, (2, 0, 1), 1)
    no_leader = part(3, (2, 0, 1), None)
    plan = plan_transfers([behind, unknown, dead_leader, no_leader], {0, 2}, (), 10)
    assert plan.transfers == ()
    assert len(plan.imbalanced) == 4


def test_budget_is_a_tenth_of_the_partitions_at_least_one() -> None:
    assert [max_in_flight(n) for n in (0, 1, 9, 10, 25, 1000)] == [1, 1, 1, 1, 2, 100]


def test_the_leader_transfers_only_to_a_recent_nearly_caught_up_voter() -> None:
    assert ready_for_transfer(100, 100, 0, 6, lost=False)
    assert ready_for_transfer(100 - TRANSFER_MAX_LAG, 100, 5, 6, lost=False)
    assert not ready_for_transfer(99 - TRANSFER_MAX_LAG, 100, 0, 6, lost=False)
    assert not ready_for_transfer(100, 100, 6, 6, lost=False)  # silent for an election timeout
    assert not ready_for_transfer(100, 100, 0, 6, lost=True)


# -- the controller and the leader on one broker (sans-IO, the local peer-request path) -------


def _ask(b: Broker, body: object) -> PeerResult:
    pr = b.peer_requests
    assert pr is not None
    cid = pr.request(0, TRANSFER_LEADER, body)
    pr.run_local()
    pr.run_local()
    (result,) = [r for r in pr.take_results() if r.correlation_id == cid]
    return result


def test_transfer_leader_is_refused_with_a_code_unless_it_can_start() -> None:
    b = Broker(peers=True).boot()
    b.create_topic("t", 1)
    group = b.node.by_partition[("t", 0)].id
    assert _ask(b, {"group": group, "target": 0}).body == {"started": False}  # leads already
    refused = {
        "bad body": ([1], ErrorCode.INVALID_REQUEST),
        "no such group": ({"group": 999, "target": 1}, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION),
        "metadata group": (
            {"group": METADATA_GROUP, "target": 1},
            ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
        ),
        "no replica there": ({"group": group, "target": 5}, ErrorCode.LEADER_NOT_AVAILABLE),
    }
    for why, (body, code) in refused.items():
        assert _ask(b, body).error is code, why


def test_elect_leaders_on_a_balanced_broker_asks_nothing() -> None:
    b = Broker(peers=True).boot()
    b.create_topic("t", 3)
    reply = b.call(ElectLeadersRequest())
    assert reply.error is ErrorCode.NONE, reply
    assert reply.body == ElectLeadersResponse(transfers=(), pending=())
    reply = b.call(ElectLeadersRequest(topics=("nope",)))
    assert reply.error is ErrorCode.UNKNOWN_TOPIC_OR_PARTITION and reply.body is None
