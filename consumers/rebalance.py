"""Partition reassignment as an operator drives it: plan, execute, watch, cancel, drain.

The controller plans (the fewest replica moves that even out replicas and preferred leaders
over the live brokers, racks spread) and the metadata log holds each partition's target; the
partitions' Raft leaders move the replicas one membership change at a time. These calls only
ask and watch: `Admin.rebalance`, `Admin.drain_broker` and friends delegate here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import trio

from broker.wire.rebalance_messages import (
    DescribeReassignmentsRequest,
    DescribeReassignmentsResponse,
    RebalanceRequest,
    RebalanceResponse,
)
from consumers.cluster import Cluster


@dataclass(frozen=True, slots=True)
class ReplicaMove:
    """Partition `partition` of `topic`: its replica list before (`old`) and after (`new`);
    the first replica of each is the preferred leader."""

    topic: str
    partition: int
    old: tuple[int, ...]
    new: tuple[int, ...]

    @property
    def added(self) -> tuple[int, ...]:
        """Brokers that gain a replica (in `new`, not in `old`)."""
        return tuple(b for b in self.new if b not in self.old)

    @property
    def removed(self) -> tuple[int, ...]:
        """Brokers that lose their replica (in `old`, not in `new`)."""
        return tuple(b for b in self.old if b not in self.new)


@dataclass(frozen=True, slots=True)
class RebalanceResult:
    """The `moves` a plan makes (or made), and per broker id the replicas
    (`replica_counts`) and preferred leaderships (`leader_counts`) it holds once every
    reassignment is done."""

    moves: tuple[ReplicaMove, ...]
    replica_counts: dict[int, int]
    leader_counts: dict[int, int]

    @property
    def replicas_moved(self) -> int:
        """Replicas copied to a new broker (a reorder copies nothing)."""
        return sum(len(m.added) for m in self.moves)


@dataclass(frozen=True, slots=True)
class Reassignment:
    """Partition `partition` of `topic` moving from `replicas` to `target`; `caught_up`: the
    replicas its leader last reported holding every committed entry; `lag`: the committed
    entries its slowest replica lacks (-1: not reported yet)."""

    topic: str
    partition: int
    replicas: tuple[int, ...]
    target: tuple[int, ...]
    caught_up: tuple[int, ...]
    lag: int


@dataclass(frozen=True, slots=True)
class ReassignmentStatus:
    """The cluster's moves in progress (`reassignments`), the brokers being drained
    (`draining`) and the catch-up throttle in bytes per second per broker
    (`throttle_bytes_per_s`)."""

    reassignments: tuple[Reassignment, ...]
    draining: tuple[int, ...]
    throttle_bytes_per_s: int
    """0: each broker's own `catchup_bytes_per_s`."""

    @property
    def done(self) -> bool:
        """No partition is being moved."""
        return not self.reassignments


def _result(r: RebalanceResponse) -> RebalanceResult:
    return RebalanceResult(
        moves=tuple(ReplicaMove(m.topic, m.partition, m.old, m.new) for m in r.moves),
        replica_counts=dict(r.replica_counts),
        leader_counts=dict(r.leader_counts),
    )


async def rebalance(
    cluster: Cluster,
    deadline: float,
    *,
    execute: bool,
    cancel: bool = False,
    exclude: Iterable[int] = (),
    drain: Iterable[int] = (),
    undrain: Iterable[int] = (),
    throttle_bytes_per_s: int | None = None,
) -> RebalanceResult:
    """One REBALANCE to the controller, retried (retriable errors) until `deadline`."""
    request = RebalanceRequest(
        execute=execute,
        cancel=cancel,
        exclude=tuple(sorted(set(exclude))),
        drain=tuple(sorted(set(drain))),
        undrain=tuple(sorted(set(undrain))),
        throttle_bytes_per_s=throttle_bytes_per_s,
    )

    async def attempt() -> RebalanceResponse:
        response = await cluster.request_controller(request)
        assert isinstance(response, RebalanceResponse)
        return response

    return _result(await cluster.retry_until(deadline, attempt))


async def describe(cluster: Cluster, deadline: float) -> ReassignmentStatus:
    async def attempt() -> DescribeReassignmentsResponse:
        response = await cluster.request_controller(DescribeReassignmentsRequest())
        assert isinstance(response, DescribeReassignmentsResponse)
        return response

    r = await cluster.retry_until(deadline, attempt)
    return ReassignmentStatus(
        reassignments=tuple(
            Reassignment(x.topic, x.partition, x.replicas, x.target, x.caught_up, x.lag)
            for x in r.reassignments
        ),
        draining=r.draining,
        throttle_bytes_per_s=r.throttle_bytes_per_s,
    )


async def wait_done(
    cluster: Cluster,
    deadline: float,
    *,
    poll_s: float = 0.5,
    on_status: Callable[[ReassignmentStatus], None] | None = None,
) -> ReassignmentStatus:
    """Poll DESCRIBE_REASSIGNMENTS every `poll_s` until nothing moves or `deadline` passes;
    returns the last status either way (check `done`). `on_status` sees every answer."""
    while True:
        status = await describe(cluster, deadline)
        if on_status is not None:
            on_status(status)
        if status.done or trio.current_time() + poll_s >= deadline:
            return status
        await trio.sleep(poll_s)
