"""GroupRequests: the consumer-group APIs of the RequestHandler (a mixin: it answers through
the handler's `_park` and reads the node's `group_service`).

FIND_COORDINATOR, OFFSET_FETCH, LIST_GROUPS and DESCRIBE_GROUPS answer at once; a
GROUP_HEARTBEAT answers at once when it changes nothing, otherwise with the coordinator's
result once its command applies, as do OFFSET_COMMIT and DELETE_GROUPS (one Completion per
group).
"""

from __future__ import annotations

from abc import abstractmethod
from typing import TYPE_CHECKING

from broker.core.groups.membership import HeartbeatAnswer
from broker.core.reply import Reply, coordinator_error
from broker.wire.errors import ErrorCode
from broker.wire.group_messages import (
    LEAVE_EPOCH,
    TEMPORARY_LEAVE_EPOCH,
    CommittedOffset,
    CoordinatorType,
    DeleteGroupsRequest,
    DeleteGroupsResponse,
    DescribeGroupsRequest,
    DescribeGroupsResponse,
    FindCoordinatorRequest,
    FindCoordinatorResponse,
    GroupHeartbeatRequest,
    GroupHeartbeatResponse,
    GroupResult,
    ListGroupsRequest,
    ListGroupsResponse,
    OffsetCommitRequest,
    OffsetCommitResponse,
    OffsetFetchRequest,
    OffsetFetchResponse,
    PartitionError,
    TopicErrors,
    TopicPartitions,
    to_topic_partitions,
)
from broker.wire.messages import Request
from broker.wire.protocol import RequestHeader
from broker.wire.txn_messages import TxnOffsetCommitRequest, TxnOffsetCommitResponse

if TYPE_CHECKING:
    from broker.core.node import BrokerNode


class GroupRequests:
    node: BrokerNode

    @abstractmethod
    def _find_txn_coordinator(self, corr: int, txn_id: str) -> Reply: ...

    @abstractmethod
    def _park(
        self, token: int, header: RequestHeader, req: Request, results: list[object]
    ) -> Reply | None: ...

    # -- answered at once -------------------------------------------------------------------

    def _find_coordinator(
        self, token: int, header: RequestHeader, req: FindCoordinatorRequest
    ) -> Reply:
        corr = header.correlation_id
        if req.key_type == CoordinatorType.TRANSACTION:
            return self._find_txn_coordinator(corr, req.key)
        err, msg, body = self.node.group_service.find(req.key)
        assert body is None or isinstance(body, FindCoordinatorResponse)
        return Reply(corr, err, msg, body)

    def _offset_fetch(self, token: int, header: RequestHeader, req: OffsetFetchRequest) -> Reply:
        err, msg, value = self.node.group_service.fetch_offsets(req)
        if err != ErrorCode.NONE:
            return Reply(header.correlation_id, err, msg, None)
        assert isinstance(value, tuple)
        offsets: tuple[CommittedOffset, ...] = value
        return Reply(header.correlation_id, err, None, OffsetFetchResponse(offsets=offsets))

    def _list_groups(self, req: ListGroupsRequest) -> ListGroupsResponse:
        return ListGroupsResponse(groups=tuple(self.node.group_service.list_groups()))

    def _describe_groups(self, req: DescribeGroupsRequest) -> DescribeGroupsResponse:
        service = self.node.group_service
        return DescribeGroupsResponse(groups=tuple(service.describe(g) for g in req.group_ids))

    # -- proposed ---------------------------------------------------------------------------

    def _group_heartbeat(
        self, token: int, header: RequestHeader, req: GroupHeartbeatRequest
    ) -> Reply | None:
        now = self.node.group_service.heartbeat(token, 0, req, header.client_id)
        if now is None:
            return self._park(token, header, req, [None])
        return self._heartbeat_done(header.correlation_id, req, [now])

    def _heartbeat_done(
        self, corr: int, req: GroupHeartbeatRequest, results: list[object]
    ) -> Reply:
        first = results[0]
        assert isinstance(first, tuple)
        err, msg, value = first
        if err != ErrorCode.NONE:
            return Reply(corr, coordinator_error(err), msg, None)
        service = self.node.group_service
        session = service.session_ms(req.session_timeout_ms) or service.config.session_timeout_ms
        assignment: tuple[TopicPartitions, ...] = ()
        waiting = False
        if req.member_epoch in (LEAVE_EPOCH, TEMPORARY_LEAVE_EPOCH):
            epoch = req.member_epoch
        else:
            assert isinstance(value, HeartbeatAnswer)
            epoch, assignment = value.member_epoch, to_topic_partitions(value.assigned)
            waiting = value.waiting or service.overdue(req.group_id)
        body = GroupHeartbeatResponse(
            member_id=req.member_id,
            member_epoch=epoch,
            heartbeat_interval_ms=service.interval_ms(session, waiting=waiting),
            session_timeout_ms=session,
            assignment=assignment,
        )
        return Reply(corr, ErrorCode.NONE, None, body)

    def _offset_commit(
        self, token: int, header: RequestHeader, req: OffsetCommitRequest | TxnOffsetCommitRequest
    ) -> Reply | None:
        now, refused = self.node.group_service.commit(token, 0, req)
        if now is None:
            return self._park(token, header, req, [None, refused])
        return self._commit_done(header.correlation_id, req, [now, refused])

    def _commit_done(
        self, corr: int, req: OffsetCommitRequest | TxnOffsetCommitRequest, results: list[object]
    ) -> Reply:
        first, refused = results
        assert isinstance(first, tuple) and isinstance(refused, dict)
        err, msg, value = first
        if err != ErrorCode.NONE:
            return Reply(corr, coordinator_error(err), msg, None)
        assert isinstance(value, list)
        errors = iter(value)
        topics = []
        for t in req.topics:
            parts = []
            for p in t.partitions:
                code = refused.get((t.topic, p.partition))
                if code is None:
                    code = next(errors)
                parts.append(PartitionError(partition=p.partition, error=code))
            topics.append(TopicErrors(topic=t.topic, partitions=tuple(parts)))
        body: OffsetCommitResponse | TxnOffsetCommitResponse
        if isinstance(req, TxnOffsetCommitRequest):
            body = TxnOffsetCommitResponse(topics=tuple(topics))
        else:
            body = OffsetCommitResponse(topics=tuple(topics))
        return Reply(corr, ErrorCode.NONE, None, body)

    def _delete_groups(
        self, token: int, header: RequestHeader, req: DeleteGroupsRequest
    ) -> Reply | None:
        results: list[object] = []
        for slot, gid in enumerate(req.group_ids):
            results.append(self.node.group_service.delete(token, slot, gid))
        return self._park(token, header, req, results)

    def _delete_groups_done(
        self, corr: int, req: DeleteGroupsRequest, results: list[object]
    ) -> Reply:
        out = []
        for gid, r in zip(req.group_ids, results, strict=True):
            assert isinstance(r, tuple)
            out.append(GroupResult(group_id=gid, error=coordinator_error(r[0]), message=r[1]))
        return Reply(corr, ErrorCode.NONE, None, DeleteGroupsResponse(groups=tuple(out)))
