"""The asynchronous admin client: topics and cluster description.

Topic creation and deletion go to the controller named by the metadata (refreshed on
NOT_CONTROLLER). Retriable errors (NOT_CONTROLLER, NOT_ENOUGH_REPLICAS, BACKPRESSURE, timeouts,
connection errors) are retried with backoff until the call's `timeout_s`; then the last error
is raised. The broker answers CREATE_TOPICS only once every partition has a leader, so
`create_topic` returns once the topic is led. When an attempt's outcome is unknown (the
connection failed or timed out) and a retry finds TOPIC_ALREADY_EXISTS, the earlier attempt is
taken to have created it (the usual at-least-once ambiguity of a create without a request id);
likewise UNKNOWN_TOPIC_OR_PARTITION on a retried delete.

Descriptions come from METADATA; `describe_topic` adds each partition's log start offset and
high watermark from LIST_OFFSETS at the partition's leader (None where it could not be read).
`list_topics` does not (its offsets are None). `describe_cluster` comes from DESCRIBE_CLUSTER,
asked of the controller (the only broker that hears every partition leader's replica report)
and, when there is no controller or it cannot be reached, of any broker (whose caught-up
replicas and commit lag are known only for the partitions it leads).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType

import trio

from broker.wire.errors import ErrorCode
from broker.wire.messages import (
    EARLIEST_TIMESTAMP,
    LATEST_TIMESTAMP,
    CreateTopicsRequest,
    CreateTopicsResponse,
    DeleteTopicsRequest,
    DeleteTopicsResponse,
    DescribeClusterRequest,
    DescribeClusterResponse,
    IsolationLevel,
    ListOffsetsPartition,
    ListOffsetsRequest,
    ListOffsetsResponse,
    ListOffsetsTopic,
    MetadataRequest,
    MetadataResponse,
    NewTopic,
    TopicInfo,
)
from consumers.cluster import Backoff, Cluster
from consumers.errors import (
    BrokerUnavailableError,
    ClientClosedError,
    NotControllerError,
    SluiceError,
    UnknownTopicError,
    error_for,
)

__all__ = [
    "Admin",
    "BrokerDescription",
    "ClusterDescription",
    "PartitionDescription",
    "PartitionStatus",
    "TopicDescription",
]


@dataclass(frozen=True, slots=True)
class PartitionDescription:
    partition: int
    leader: int | None
    replicas: tuple[int, ...]
    log_start_offset: int | None = None
    high_watermark: int | None = None
    leader_term: int = -1


@dataclass(frozen=True, slots=True)
class TopicDescription:
    name: str
    partitions: tuple[PartitionDescription, ...]
    replication_factor: int
    config: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BrokerDescription:
    id: int
    host: str
    port: int
    rack: str | None
    alive: bool
    """False once the controller marked the broker failed (its lease expired)."""

    @property
    def address(self) -> str:
        """HOST:PORT (an IPv6 host in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class PartitionStatus:
    """One partition's replication state. Unknown: `leader` None, `leader_term` -1,
    `caught_up` empty and `commit_lag` -1."""

    topic: str
    partition: int
    leader: int | None
    leader_term: int
    replicas: tuple[int, ...]
    """The assigned replicas, the preferred leader first."""
    caught_up: tuple[int, ...]
    """The replicas holding every committed entry."""
    commit_lag: int
    """Committed entries the slowest replica lacks (0: every replica is caught up)."""


@dataclass(frozen=True, slots=True)
class ClusterDescription:
    """Brokers sorted by id, partitions by (topic, partition)."""

    cluster_id: str | None
    controller: int | None
    brokers: tuple[BrokerDescription, ...]
    partitions: tuple[PartitionStatus, ...]


def _describe(topic: TopicInfo) -> TopicDescription:
    return TopicDescription(
        name=topic.name,
        partitions=tuple(
            PartitionDescription(
                partition=p.partition,
                leader=p.leader,
                replicas=p.replicas,
                leader_term=p.leader_term,
            )
            for p in sorted(topic.partitions, key=lambda p: p.partition)
        ),
        replication_factor=topic.replication_factor,
        config=dict(topic.config),
    )


class Admin:
    """Topic and cluster administration; use as `async with Admin(...) as a`."""

    def __init__(
        self,
        bootstrap: str | Sequence[str] = "127.0.0.1:9092",
        *,
        client_id: str | None = None,
        request_timeout_ms: int = 30_000,
        timeout_s: float = 30.0,
    ) -> None:
        self.bootstrap = bootstrap
        self.client_id = client_id
        self.request_timeout_ms = request_timeout_ms
        self.timeout_s = timeout_s
        """Default timeout of the calls that take none (list, describe)."""
        self._cluster: Cluster | None = None

    async def __aenter__(self) -> Admin:
        cluster = Cluster(
            self.bootstrap,
            client_id=self.client_id,
            request_timeout_s=self.request_timeout_ms / 1000,
            backoff=Backoff(0.05, 1.0),
        )
        await cluster.__aenter__()
        self._cluster = cluster
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        cluster, self._cluster = self._cluster, None
        if cluster is not None:
            await cluster.__aexit__(None, None, None)

    @property
    def cluster(self) -> Cluster:
        if self._cluster is None:
            raise ClientClosedError("the admin client is not open (use `async with Admin(...)`)")
        return self._cluster

    def _deadline(self, timeout_s: float | None) -> float:
        return trio.current_time() + (self.timeout_s if timeout_s is None else timeout_s)

    # -- topics ------------------------------------------------------------------------------

    async def create_topic(
        self,
        name: str,
        partitions: int = 1,
        replication_factor: int = 1,
        config: Mapping[str, str] | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        """Create a topic; returns once every partition has a leader."""
        cluster = self.cluster
        deadline = self._deadline(timeout_s)
        new = NewTopic(
            name=name,
            partitions=partitions,
            replication_factor=replication_factor,
            config=dict(config or {}),
        )
        uncertain = False

        async def attempt() -> None:
            nonlocal uncertain
            remaining_ms = max(1, int((deadline - trio.current_time()) * 1000))
            request = CreateTopicsRequest(topics=(new,), timeout_ms=remaining_ms)
            try:
                response = await cluster.request_controller(
                    request, timeout_s=remaining_ms / 1000 + 1
                )
            except SluiceError as e:
                uncertain = uncertain or e.code in _UNKNOWN_OUTCOME
                raise
            assert isinstance(response, CreateTopicsResponse)
            for result in response.topics:
                if result.name != name or result.error is ErrorCode.NONE:
                    continue
                if result.error is ErrorCode.TOPIC_ALREADY_EXISTS and uncertain:
                    return
                uncertain = uncertain or result.error in _UNKNOWN_OUTCOME
                raise error_for(result.error, result.message)

        await cluster.retry_until(deadline, attempt)
        if uncertain:
            await self._await_led(name, deadline)

    async def _await_led(self, name: str, deadline: float) -> None:
        async def led() -> None:
            await self.cluster.refresh([name])
            meta = self.cluster.metadata.topics.get(name)
            if meta is None:
                raise UnknownTopicError(f"topic {name!r} does not exist")
            if any(p.leader is None for p in meta.partitions):
                raise error_for(ErrorCode.LEADER_NOT_AVAILABLE, f"{name!r} is not led yet")

        await self.cluster.retry_until(deadline, led)

    async def delete_topic(self, name: str, timeout_s: float = 30.0) -> None:
        """Delete a topic (UnknownTopicError if there is none)."""
        cluster = self.cluster
        deadline = self._deadline(timeout_s)
        uncertain = False

        async def attempt() -> None:
            nonlocal uncertain
            remaining_ms = max(1, int((deadline - trio.current_time()) * 1000))
            request = DeleteTopicsRequest(names=(name,), timeout_ms=remaining_ms)
            try:
                response = await cluster.request_controller(
                    request, timeout_s=remaining_ms / 1000 + 1
                )
            except SluiceError as e:
                uncertain = uncertain or e.code in _UNKNOWN_OUTCOME
                raise
            assert isinstance(response, DeleteTopicsResponse)
            for result in response.topics:
                if result.name != name or result.error is ErrorCode.NONE:
                    continue
                if result.error is ErrorCode.UNKNOWN_TOPIC_OR_PARTITION:
                    if uncertain:
                        return
                    # Not retriable here: the controller answers from its own state.
                    raise UnknownTopicError(result.message or f"no topic {name!r}", retriable=False)
                uncertain = uncertain or result.error in _UNKNOWN_OUTCOME
                raise error_for(result.error, result.message)

        await cluster.retry_until(deadline, attempt)
        cluster.metadata.topics.pop(name, None)

    async def list_topics(self) -> list[TopicDescription]:
        """Every topic, sorted by name (offsets not read: None)."""
        response = await self._metadata(None)
        return sorted(
            (_describe(t) for t in response.topics if t.error is ErrorCode.NONE),
            key=lambda t: t.name,
        )

    async def describe_topic(self, name: str) -> TopicDescription:
        """One topic with each partition's log start offset and high watermark."""
        response = await self._metadata((name,))
        found = [t for t in response.topics if t.name == name]
        if not found or found[0].error is ErrorCode.UNKNOWN_TOPIC_OR_PARTITION:
            raise UnknownTopicError(f"no topic {name!r}", retriable=False)
        if found[0].error is not ErrorCode.NONE:
            raise error_for(found[0].error, f"describe {name!r}")
        description = _describe(found[0])
        starts = await self._offsets(description, EARLIEST_TIMESTAMP)
        ends = await self._offsets(description, LATEST_TIMESTAMP)
        return TopicDescription(
            name=description.name,
            partitions=tuple(
                PartitionDescription(
                    partition=p.partition,
                    leader=p.leader,
                    replicas=p.replicas,
                    log_start_offset=starts.get(p.partition),
                    high_watermark=ends.get(p.partition),
                    leader_term=p.leader_term,
                )
                for p in description.partitions
            ),
            replication_factor=description.replication_factor,
            config=description.config,
        )

    async def describe_cluster(self) -> ClusterDescription:
        """Brokers (alive or failed), the controller, and every partition's leader, replicas,
        caught-up replicas and commit lag; retried until the client's `timeout_s`."""
        cluster = self.cluster
        request = DescribeClusterRequest()

        async def ask() -> DescribeClusterResponse:
            try:
                response = await cluster.request_controller(request)
            except (NotControllerError, BrokerUnavailableError):
                # No controller now, or it is down: any broker follows the metadata log.
                response = await cluster.request_any(request)
            assert isinstance(response, DescribeClusterResponse)
            return response

        response = await cluster.retry_until(self._deadline(None), ask)
        return ClusterDescription(
            cluster_id=response.cluster_id,
            controller=response.controller,
            brokers=tuple(
                BrokerDescription(b.id, b.host, b.port, b.rack, b.alive)
                for b in sorted(response.brokers, key=lambda b: b.id)
            ),
            partitions=tuple(
                PartitionStatus(
                    topic=p.topic,
                    partition=p.partition,
                    leader=p.leader,
                    leader_term=p.leader_term,
                    replicas=p.replicas,
                    caught_up=p.caught_up,
                    commit_lag=p.commit_lag,
                )
                for p in sorted(response.partitions, key=lambda p: (p.topic, p.partition))
            ),
        )

    async def _metadata(self, topics: tuple[str, ...] | None) -> MetadataResponse:
        cluster = self.cluster

        async def fetch() -> MetadataResponse:
            response = await cluster.request_any(MetadataRequest(topics=topics))
            assert isinstance(response, MetadataResponse)
            cluster.metadata.update(response)
            return response

        return await cluster.retry_until(self._deadline(None), fetch)

    async def _offsets(self, topic: TopicDescription, timestamp: int) -> dict[int, int]:
        """partition -> offset, asked of each partition's leader (best effort)."""
        by_leader: dict[int, list[int]] = {}
        for p in topic.partitions:
            if p.leader is not None:
                by_leader.setdefault(p.leader, []).append(p.partition)
        out: dict[int, int] = {}
        for leader, partitions in by_leader.items():
            request = ListOffsetsRequest(
                topics=(
                    ListOffsetsTopic(
                        name=topic.name,
                        partitions=tuple(
                            ListOffsetsPartition(partition=p, timestamp=timestamp)
                            for p in partitions
                        ),
                    ),
                ),
                isolation=IsolationLevel.READ_UNCOMMITTED,
            )
            try:
                response = await self.cluster.request(leader, request)
            except SluiceError:
                continue
            assert isinstance(response, ListOffsetsResponse)
            for t in response.topics:
                for r in t.partitions:
                    if r.error is ErrorCode.NONE:
                        out[r.partition] = r.offset
        return out


_UNKNOWN_OUTCOME = frozenset({ErrorCode.NETWORK_EXCEPTION, ErrorCode.REQUEST_TIMED_OUT})
"""Errors after which the request may or may not have taken effect."""
