"""CoordinatorLink: requests to one group's or transactional id's coordinator, found with
FIND_COORDINATOR.

The coordinator of a group is the leader of one partition of the internal topic
`__consumer_offsets` (of a transactional id: of `__transaction_state`); any broker names it.
The link caches the answer and forgets it when a request fails in a way that says the
coordinator moved (NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE, a broken connection), so the
next request asks again. The link does not retry on its own: callers wrap it in
`Cluster.retry_until` (the Admin, transactions) or their own loop (the consumer's
heartbeat), since each knows its deadline.
"""

from __future__ import annotations

from broker.wire.group_messages import (
    CoordinatorType,
    FindCoordinatorRequest,
    FindCoordinatorResponse,
)
from broker.wire.messages import Request, Response
from consumers.cluster import Cluster
from consumers.errors import BrokerUnavailableError, CoordinatorError, RequestTimedOutError


class CoordinatorLink:
    def __init__(
        self, cluster: Cluster, key: str, key_type: CoordinatorType = CoordinatorType.GROUP
    ) -> None:
        self.cluster = cluster
        self.key = key
        self.key_type = key_type
        self.coordinator: int | None = None
        """The coordinator's broker id, while known."""

    async def find(self, *, timeout_s: float | None = None) -> int:
        """The coordinator's broker id (asking any broker when not known)."""
        if self.coordinator is not None:
            return self.coordinator
        answer = await self.cluster.request_any(
            FindCoordinatorRequest(key=self.key, key_type=self.key_type),
            timeout_s=timeout_s,
        )
        assert isinstance(answer, FindCoordinatorResponse)
        self.cluster.metadata.learn_broker(answer.node_id, answer.host, answer.port)
        self.coordinator = answer.node_id
        return answer.node_id

    async def request(
        self, request: Request, *, lane: str = "main", timeout_s: float | None = None
    ) -> Response:
        """Send `request` to the coordinator; a failure that says it moved forgets it."""
        node = await self.find(timeout_s=timeout_s)
        try:
            return await self.cluster.request(node, request, lane=lane, timeout_s=timeout_s)
        except (CoordinatorError, BrokerUnavailableError, RequestTimedOutError):
            self.coordinator = None
            raise
