"""Partition reassignment as an operator drives it: plan, execute, watch, cancel, drain.

The controller plans (the fewest replica moves that even out replicas and preferred leaders
over the live brokers, racks spread) and the metadata log holds each partition's target; the
partitions' Raft leaders move the replicas one membership change at a time. These calls only
ask and watch: `RebalanceAdmin` (a mixin of `consumers.admin.Admin`: `rebalance`,
`drain_broker` and friends) sends them through the module's functions.
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
from consumers.admin_base import AdminBase, call_timeout_ms, poll_seconds
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


async def request_rebalance(
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
    """One DESCRIBE_REASSIGNMENTS to the controller, retried until `deadline` (Trio
    time)."""

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


class RebalanceAdmin(AdminBase):
    """The partition-reassignment calls of the `Admin`: plan, execute, drain, cancel and
    watch."""

    async def plan_rebalance(
        self,
        *,
        exclude: Iterable[int] = (),
        timeout_ms: float | None = None,
        timeout_s: float | None = None,
    ) -> RebalanceResult:
        """The controller's rebalancing plan, changing nothing: the fewest replica moves
        that even out replicas and preferred leaders over the live brokers (draining ones and
        `exclude` left out; racks spread), and the layout it leads to. Raises
        InvalidReplicationFactorError when a topic's replication factor exceeds the brokers
        left. Retried for `timeout_ms` milliseconds (None: the client's; `timeout_s`: its
        older name, in seconds)."""
        deadline = self._deadline(call_timeout_ms(timeout_ms, timeout_s))
        return await request_rebalance(self.cluster, deadline, execute=False, exclude=exclude)

    async def rebalance(
        self,
        *,
        exclude: Iterable[int] = (),
        throttle_bytes_per_s: int | None = None,
        timeout_ms: float | None = None,
        timeout_s: float | None = None,
    ) -> RebalanceResult:
        """Carry out the plan `plan_rebalance` shows: every move goes into the metadata log
        at once, and returns when it is there; the partitions' leaders then move replicas in
        the background, one Raft membership change at a time (watch with
        `describe_reassignments` or `wait_for_reassignments`). `throttle_bytes_per_s`: the
        catch-up rate of every broker from now on, in bytes per second (0: each broker's own
        setting; None: unchanged). Retried for `timeout_ms` milliseconds (None: the
        client's; `timeout_s`: its older name, in seconds)."""
        return await request_rebalance(
            self.cluster,
            self._deadline(call_timeout_ms(timeout_ms, timeout_s)),
            execute=True,
            exclude=exclude,
            throttle_bytes_per_s=throttle_bytes_per_s,
        )

    async def drain_broker(
        self,
        broker_id: int,
        *,
        throttle_bytes_per_s: int | None = None,
        timeout_ms: float | None = None,
        timeout_s: float | None = None,
    ) -> RebalanceResult:
        """Move every replica off `broker_id` (its leaderships follow) and give it none
        until `undrain_broker`: a rebalance with the broker marked draining
        (`throttle_bytes_per_s` and the timeouts as in `rebalance`)."""
        return await request_rebalance(
            self.cluster,
            self._deadline(call_timeout_ms(timeout_ms, timeout_s)),
            execute=True,
            drain=(broker_id,),
            throttle_bytes_per_s=throttle_bytes_per_s,
        )

    async def undrain_broker(
        self, broker_id: int, *, timeout_ms: float | None = None, timeout_s: float | None = None
    ) -> RebalanceResult:
        """Let `broker_id` take replicas again and rebalance onto it (the timeouts as in
        `rebalance`)."""
        return await request_rebalance(
            self.cluster,
            self._deadline(call_timeout_ms(timeout_ms, timeout_s)),
            execute=True,
            undrain=(broker_id,),
        )

    async def cancel_reassignments(
        self,
        *,
        throttle_bytes_per_s: int | None = None,
        timeout_ms: float | None = None,
        timeout_s: float | None = None,
    ) -> RebalanceResult:
        """Send every reassignment in progress back to its partition's replicas (the moves
        returned: target -> replicas); replicas already added are removed again, and
        replicas already removed copied back (at `throttle_bytes_per_s`, and with the
        timeouts, as in `rebalance`)."""
        return await request_rebalance(
            self.cluster,
            self._deadline(call_timeout_ms(timeout_ms, timeout_s)),
            execute=True,
            cancel=True,
            throttle_bytes_per_s=throttle_bytes_per_s,
        )

    async def describe_reassignments(
        self, *, timeout_ms: float | None = None, timeout_s: float | None = None
    ) -> ReassignmentStatus:
        """The partitions moving (with the caught-up replicas and lag their leaders last
        reported), the brokers draining and the throttle, as the controller sees them
        (retried for `timeout_ms` milliseconds, None: the client's; `timeout_s`: its older
        name, in seconds)."""
        return await describe(self.cluster, self._deadline(call_timeout_ms(timeout_ms, timeout_s)))

    async def wait_for_reassignments(
        self,
        *,
        timeout_ms: float | None = None,
        poll_interval_ms: float | None = None,
        on_status: Callable[[ReassignmentStatus], None] | None = None,
        timeout_s: float | None = None,
        poll_s: float | None = None,
    ) -> ReassignmentStatus:
        """Until no partition moves or `timeout_ms` milliseconds pass (default: the
        client's), asking every `poll_interval_ms` milliseconds (default 500); returns the
        last status either way: check `done`. `on_status` sees every answer. `timeout_s`
        and `poll_s` are the older names, in seconds."""
        return await wait_done(
            self.cluster,
            self._deadline(call_timeout_ms(timeout_ms, timeout_s)),
            poll_s=poll_seconds(poll_interval_ms, poll_s),
            on_status=on_status,
        )
