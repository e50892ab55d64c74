"""RebalanceRequests: the operator's APIs that change where partitions live, REBALANCE,
DESCRIBE_REASSIGNMENTS and ALTER_TOPIC, of the RequestHandler (a mixin: it answers through the
handler's `_park` and reads the node's `reassignments`).

Only the serving controller answers (others: NOT_CONTROLLER naming the one they know).
REBALANCE without `execute` answers the plan at once; with it, once the reassign command
applied (the moves it made and the layout it leads to); `cancel`, once the cancel applied.
DESCRIBE_REASSIGNMENTS answers at once from the controller's view. ALTER_TOPIC answers once
the alter applied and every partition has a leader (as CREATE_TOPICS: the handler's `_fill`).
"""

from __future__ import annotations

from abc import abstractmethod
from typing import TYPE_CHECKING

from broker.core.metadata_moves import Reassigned
from broker.core.rebalance_plan import RebalancePlan
from broker.core.reply import Reply
from broker.wire.errors import ErrorCode
from broker.wire.messages import Request
from broker.wire.protocol import RequestHeader
from broker.wire.rebalance_messages import (
    AlterTopicRequest,
    AlterTopicResponse,
    DescribeReassignmentsRequest,
    DescribeReassignmentsResponse,
    PartitionReassignment,
    RebalanceRequest,
    RebalanceResponse,
    ReplicaMove,
)

if TYPE_CHECKING:
    from broker.core.node import BrokerNode


class RebalanceRequests:
    node: BrokerNode

    @abstractmethod
    def _park(
        self, token: int, header: RequestHeader, req: Request, results: list[object]
    ) -> Reply | None: ...

    def _not_controller(self, corr: int) -> Reply | None:
        if self.node.is_controller:
            return None
        known = self.node.controller
        where = "unknown" if known is None else known
        msg = f"this broker is not the controller (the controller is {where})"
        return Reply(corr, ErrorCode.NOT_CONTROLLER, msg, None)

    def _rebalance(self, token: int, header: RequestHeader, req: RebalanceRequest) -> Reply | None:
        corr = header.correlation_id
        refused = self._not_controller(corr)
        if refused is not None:
            return refused
        r = self.node.reassignments
        meta = self.node.meta
        if req.cancel:
            err, msg = r.cancel(token, 0, req.throttle_bytes_per_s)
            if err != ErrorCode.NONE:
                return Reply(corr, err, msg, None)
            return self._park(token, header, req, [None])
        named = set(req.exclude) | set(req.drain) | set(req.undrain)
        unknown = sorted(b for b in named if b not in meta.brokers)
        if unknown:
            msg = f"no broker {', '.join(map(str, unknown))} in this cluster"
            return Reply(corr, ErrorCode.INVALID_REQUEST, msg, None)
        if set(req.drain) & set(req.undrain):
            msg = "a broker cannot be both drained and undrained"
            return Reply(corr, ErrorCode.INVALID_REQUEST, msg, None)
        draining = (meta.draining | set(req.drain)) - set(req.undrain)
        try:
            plan = r.plan(frozenset(draining | set(req.exclude)))
        except ValueError as e:
            return Reply(corr, ErrorCode.INVALID_REPLICATION_FACTOR, str(e), None)
        if not req.execute:
            return Reply(corr, ErrorCode.NONE, None, _plan_response(plan))
        err, msg = r.propose(
            token,
            0,
            plan.moves,
            drain=frozenset(req.drain),
            undrain=frozenset(req.undrain),
            throttle=req.throttle_bytes_per_s,
        )
        if err != ErrorCode.NONE:
            return Reply(corr, err, msg, None)
        return self._park(token, header, req, [None])

    def _rebalance_done(self, corr: int, req: RebalanceRequest, results: list[object]) -> Reply:
        first = results[0]
        assert isinstance(first, tuple)
        err, msg, value = first
        if err != ErrorCode.NONE:
            return Reply(corr, err, msg, None)
        moves: list[ReplicaMove] = []
        if isinstance(value, Reassigned):
            for topic, before, after in value.partitions:
                moves.append(
                    ReplicaMove(
                        topic=topic,
                        partition=after.partition,
                        old=before.desired,
                        new=after.desired,
                    )
                )
        replicas, leaders = self.node.reassignments.layout_counts()
        body = RebalanceResponse(
            moves=tuple(sorted(moves, key=lambda m: (m.topic, m.partition))),
            replica_counts=tuple(replicas.items()),
            leader_counts=tuple(leaders.items()),
        )
        return Reply(corr, ErrorCode.NONE, None, body)

    def _describe_reassignments(
        self, token: int, header: RequestHeader, req: DescribeReassignmentsRequest
    ) -> Reply:
        corr = header.correlation_id
        refused = self._not_controller(corr)
        if refused is not None:
            return refused
        meta = self.node.meta
        body = DescribeReassignmentsResponse(
            reassignments=tuple(
                PartitionReassignment(
                    topic=s.topic,
                    partition=s.partition,
                    replicas=s.replicas,
                    target=s.target,
                    caught_up=s.caught_up,
                    lag=s.lag,
                )
                for s in self.node.reassignments.describe()
            ),
            draining=tuple(sorted(meta.draining)),
            throttle_bytes_per_s=meta.throttle,
        )
        return Reply(corr, ErrorCode.NONE, None, body)

    def _alter_topic(
        self, token: int, header: RequestHeader, req: AlterTopicRequest
    ) -> Reply | None:
        corr = header.correlation_id
        refused = self._not_controller(corr)
        if refused is not None:
            return refused
        err, msg = self.node.alter_topic(
            token, 0, req.name, req.partitions, dict(req.set_config), list(req.delete_config)
        )
        if err != ErrorCode.NONE:
            return Reply(corr, err, msg, None)
        return self._park(token, header, req, [None])

    def _alter_topic_done(self, corr: int, req: AlterTopicRequest, results: list[object]) -> Reply:
        first = results[0]
        assert isinstance(first, tuple)
        err, msg, _ = first
        if err != ErrorCode.NONE:
            return Reply(corr, err, msg, None)
        topic = self.node.meta.topics.get(req.name)
        count = 0 if topic is None else len(topic.partitions)
        return Reply(corr, ErrorCode.NONE, None, AlterTopicResponse(partitions=count))


def _plan_response(plan: RebalancePlan) -> RebalanceResponse:
    return RebalanceResponse(
        moves=tuple(
            ReplicaMove(topic=m.topic, partition=m.partition, old=m.old, new=m.new)
            for m in plan.moves
        ),
        replica_counts=tuple(sorted(plan.replica_counts.items())),
        leader_counts=tuple(sorted(plan.leader_counts.items())),
    )
