"""Preferred-leader balancing: which leaderships to move, as a pure function of the cluster view.

A partition's **preferred leader** is the first replica of its replica list (Kafka's rule;
placement spreads first replicas over the brokers, so preferred leaders are balanced when the
partitions are created). Elections move leadership away from it (a broker killed and
restarted leaves its partitions led by the survivors); balancing moves it back by leadership
transfer (Raft's TimeoutNow), never by an election of its own.

A partition is **imbalanced** when its preferred replica's broker is alive (the controller's
view) and does not lead it. It is **eligible** for a transfer now when, in addition, it has a
leader that is alive, the leader last reported the preferred replica caught up (holding every
committed entry), and no transfer of it is already in flight. `plan_transfers` picks the
eligible ones within a budget (`max_in_flight` minus those in flight), the partitions of the
brokers leading the most first, so one pass never asks more than a bounded number of
transfers: never a storm of elections.

The leader that is asked checks again with its own Raft progress (`ready_for_transfer`): the
target must be a voter, heard from recently, and at most `TRANSFER_MAX_LAG` entries behind its
last index (the Raft core then brings it fully up to date before TimeoutNow, and abandons the
transfer after an election timeout; proposals wait meanwhile, so a lagging target is refused
rather than stalling the partition).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass

TRANSFER_MAX_LAG = 16
"""Entries a transfer target may lack at the leader's last index (caught up within a round
trip: the leader sends them before TimeoutNow)."""
BALANCE_FRACTION = 10
"""At most 1/BALANCE_FRACTION of the partitions (at least one) have a transfer in flight."""


@dataclass(frozen=True, slots=True)
class PartitionLeadership:
    """One partition as the controller sees it."""

    topic: str
    partition: int
    group: int
    replicas: tuple[int, ...]
    """The assigned replicas, the preferred leader first."""
    leader: int | None
    caught_up: tuple[int, ...]
    """Replicas the leader last reported holding every committed entry (empty: unknown)."""

    @property
    def preferred(self) -> int | None:
        return self.replicas[0] if self.replicas else None


@dataclass(frozen=True, slots=True)
class Transfer:
    """Ask broker `source`, which leads `group`, to hand leadership to broker `target`."""

    topic: str
    partition: int
    group: int
    source: int
    target: int


@dataclass(frozen=True, slots=True)
class BalancePlan:
    transfers: tuple[Transfer, ...]
    """The transfers to ask now (within the budget)."""
    imbalanced: tuple[PartitionLeadership, ...]
    """Every imbalanced partition (asked now, in flight, waiting for its preferred replica to
    catch up or for room in the budget), sorted by (topic, partition)."""


def is_imbalanced(p: PartitionLeadership, alive: Collection[int]) -> bool:
    """The preferred replica's broker is alive and does not lead the partition."""
    preferred = p.preferred
    return preferred is not None and preferred in alive and p.leader != preferred


def max_in_flight(partitions: int) -> int:
    """Transfers allowed in flight at once: a tenth of the partitions, at least one."""
    return max(1, partitions // BALANCE_FRACTION)


def plan_transfers(
    partitions: Iterable[PartitionLeadership],
    alive: Collection[int],
    in_flight: Collection[int],
    limit: int,
) -> BalancePlan:
    """The transfers to ask now: eligible partitions (see the module doc) not in `in_flight`
    (group ids), at most `limit - len(in_flight)` of them, those of the brokers leading the
    most partitions first, then by (topic, partition). Deterministic: the same view gives the
    same plan."""
    parts = sorted(partitions, key=lambda p: (p.topic, p.partition))
    imbalanced = tuple(p for p in parts if is_imbalanced(p, alive))
    load: Counter[int | None] = Counter(p.leader for p in parts if p.leader is not None)
    eligible = [
        p
        for p in imbalanced
        if p.group not in in_flight
        and p.leader is not None
        and p.leader in alive
        and p.preferred in p.caught_up
    ]
    eligible.sort(key=lambda p: (-load[p.leader], p.topic, p.partition))
    budget = max(0, limit - len(in_flight))
    transfers = []
    for p in eligible[:budget]:
        assert p.leader is not None and p.preferred is not None
        transfers.append(Transfer(p.topic, p.partition, p.group, p.leader, p.preferred))
    return BalancePlan(tuple(transfers), imbalanced)


def ready_for_transfer(
    match: int, last_index: int, idle_ticks: int, election_ticks: int, *, lost: bool
) -> bool:
    """Leader side: may leadership go to a voter whose progress is `match` (and which was last
    heard `idle_ticks` ago; `lost`: its broker's link is down)? Only to one heard within an
    election timeout and at most TRANSFER_MAX_LAG entries behind the leader's last index."""
    return not lost and idle_ticks < election_ticks and match >= last_index - TRANSFER_MAX_LAG
