"""The asynchronous admin client: topics and cluster description.

Topic creation and deletion go to the controller named by the metadata (refreshed on
NOT_CONTROLLER). Retriable errors (NOT_CONTROLLER, NOT_ENOUGH_REPLICAS, BACKPRESSURE, timeouts,
connection errors) are retried with backoff until the call's `timeout_ms`; then the last error
is raised. The broker answers CREATE_TOPICS only once every partition has a leader, so
`create_topic` returns once the topic is led. When an attempt's outcome is unknown (the
connection failed or timed out) and a retry finds TOPIC_ALREADY_EXISTS, the earlier attempt is
taken to have created it (the usual at-least-once ambiguity of a create without a request id);
likewise UNKNOWN_TOPIC_OR_PARTITION on a retried delete.

What waiting cannot heal fails at once, never retried: a topic name, group id or
transactional id the broker would refuse is checked here before anything is sent
(`check_topic_name`, `check_id`); a replication factor above the brokers registered in the
cluster is INVALID_REPLICATION_FACTOR (above those alive, NOT_ENOUGH_REPLICAS, is retried); a
partition a topic does not have is UnknownTopicError with `retriable` False. Every duration a
caller passes is in milliseconds (`timeout_ms`, `poll_interval_ms`); the older `timeout_s` and
`poll_s` are seconds and still work (not both at once: TypeError).

Descriptions come from METADATA; `describe_topic` adds each partition's log start offset and
high watermark from LIST_OFFSETS at the partition's leader (None where it could not be read).
`list_topics` does not (its offsets are None). `describe_cluster` comes from DESCRIBE_CLUSTER,
asked of the controller (the only broker that hears every partition leader's replica report)
and, when there is no controller or it cannot be reached, of any broker (whose caught-up
replicas and commit lag are known only for the partitions it leads).

Consumer groups: each group's requests go to its coordinator (`CoordinatorLink`: found with
FIND_COORDINATOR, forgotten when it moves), retried until the client's `timeout_ms`.
`list_groups` asks every broker in the metadata (each answers for the coordinator partitions
it leads) and merges the answers by group id; a broker that cannot be reached is skipped (its
coordinator partitions fail over to brokers that answer), but at least one must answer.
`describe_group` adds, for every partition of every topic the group has offsets for, names
in a subscription or is assigned, the committed offset, the high watermark and the lag.
Resetting offsets is two steps: `reset_offsets_plan` computes (changes nothing; the pure
rule is `plan_reset`), `reset_offsets` commits a plan as an operator (member id "", epoch
-1), which the coordinator accepts only while the group has no members.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal, get_args

import trio

from broker.wire.errors import ErrorCode
from broker.wire.group_messages import (
    ADMIN_EPOCH,
    MAX_GROUP_ID,
    NO_OFFSET,
    CommitPartition,
    CommitTopic,
    CoordinatorType,
    DeleteGroupsRequest,
    DeleteGroupsResponse,
    DescribedGroup,
    DescribedMember,
    DescribeGroupsRequest,
    DescribeGroupsResponse,
    ListGroupsRequest,
    ListGroupsResponse,
    OffsetCommitRequest,
    OffsetCommitResponse,
    OffsetFetchRequest,
    OffsetFetchResponse,
    TopicPartitions,
)
from broker.wire.limits import topic_name_problem
from broker.wire.messages import (
    BROKER_DEFAULT,
    EARLIEST_TIMESTAMP,
    LATEST_TIMESTAMP,
    CreateTopicsRequest,
    CreateTopicsResponse,
    DeleteTopicsRequest,
    DeleteTopicsResponse,
    DescribeClusterRequest,
    DescribeClusterResponse,
    ElectLeadersRequest,
    ElectLeadersResponse,
    IsolationLevel,
    ListOffsetsPartition,
    ListOffsetsRequest,
    ListOffsetsResponse,
    ListOffsetsTopic,
    MetadataRequest,
    MetadataResponse,
    NewTopic,
    PreferredLeader,
    Request,
    Response,
    TopicInfo,
)
from broker.wire.rebalance_messages import AlterTopicRequest, AlterTopicResponse
from broker.wire.txn_messages import (
    AbortTransactionRequest,
    DescribeTransactionsRequest,
    DescribeTransactionsResponse,
    ListTransactionsRequest,
    ListTransactionsResponse,
)
from consumers import rebalance as _rebalance
from consumers.cluster import Backoff, Cluster, TopicPartition
from consumers.coordinator import CoordinatorLink
from consumers.durations import duration_ms
from consumers.errors import (
    BrokerUnavailableError,
    ClientClosedError,
    CoordinatorError,
    GroupIdNotFoundError,
    InvalidGroupIdError,
    InvalidRequestError,
    InvalidTopicError,
    LeaderNotAvailableError,
    NonEmptyGroupError,
    NotControllerError,
    RequestTimedOutError,
    SluiceError,
    UnknownServerError,
    UnknownTopicError,
    error_for,
)
from consumers.rebalance import ReassignmentStatus, RebalanceResult
from consumers.txn_admin import (
    OPEN_STATES,
    HeldBack,
    TransactionDetails,
    TransactionListing,
    details,
    listing,
)

__all__ = [
    "DEFAULT_TIMEOUT_MS",
    "RESET_STRATEGIES",
    "Admin",
    "BrokerDescription",
    "ClusterDescription",
    "GroupDescription",
    "GroupListing",
    "GroupPartitionOffset",
    "LeaderElection",
    "LeaderMove",
    "MemberDescription",
    "OffsetReset",
    "OffsetResetSpec",
    "PartitionDescription",
    "PartitionStatus",
    "ResetStrategy",
    "TopicDescription",
    "check_id",
    "check_topic_name",
    "id_problem",
    "plan_reset",
    "transactional_id_problem",
]

DEFAULT_TIMEOUT_MS = 30_000.0
"""How long an admin call retries retriable errors unless told otherwise (milliseconds)."""
DEFAULT_POLL_MS = 500.0
"""How often the waiting calls ask again (milliseconds)."""


@dataclass(frozen=True, slots=True)
class PartitionDescription:
    """One partition of a topic: `partition` (its number), `leader` (None: none known),
    `replicas` (the preferred leader first), `log_start_offset` and `high_watermark` (None
    where not read: `list_topics` reads none, `describe_topic` those its leaders answered)
    and `leader_term`, the leader's Raft term (-1: unknown)."""

    partition: int
    leader: int | None
    replicas: tuple[int, ...]
    log_start_offset: int | None = None
    high_watermark: int | None = None
    leader_term: int = -1


@dataclass(frozen=True, slots=True)
class TopicDescription:
    """A topic: its `name`, `partitions` (sorted by number), `replication_factor` and
    `config`, the settings given to it (keys absent have the broker's defaults)."""

    name: str
    partitions: tuple[PartitionDescription, ...]
    replication_factor: int
    config: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BrokerDescription:
    """A broker registered in the cluster: its `id`, the `host` and `port` clients reach it
    at (`address` joins them), its `rack` (None: none) and whether it is `alive`."""

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
    """The replication state of partition `partition` of `topic`. Unknown: `leader` None,
    `leader_term` -1, `caught_up` empty and `commit_lag` -1."""

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
    """The cluster as `describe_cluster` found it: `cluster_id` and `controller` (None:
    unknown, or none elected), `brokers` sorted by id, `partitions` by (topic, partition)."""

    cluster_id: str | None
    controller: int | None
    brokers: tuple[BrokerDescription, ...]
    partitions: tuple[PartitionStatus, ...]


@dataclass(frozen=True, slots=True, order=True)
class LeaderMove:
    """Partition `partition` of `topic`: its `leader` (None: none known) and its `preferred`
    replica (the first of its replica list)."""

    topic: str
    partition: int
    leader: int | None
    preferred: int


@dataclass(frozen=True, slots=True)
class LeaderElection:
    """What a preferred-leader election did: `transfers` asked (leader -> preferred, sorted
    by topic and partition), and `pending`: the partitions still off their alive preferred
    replica (those asked included, until their transfer completes)."""

    transfers: tuple[LeaderMove, ...]
    pending: tuple[LeaderMove, ...]

    @property
    def balanced(self) -> bool:
        """Every partition whose preferred replica is alive is led by it."""
        return not self.pending


def _move(p: PreferredLeader) -> LeaderMove:
    return LeaderMove(p.topic, p.partition, p.leader, p.preferred)


@dataclass(frozen=True, slots=True)
class GroupListing:
    """A consumer group as `list_groups` shows it: `group_id`, `state` and `members` (how
    many)."""

    group_id: str
    state: str
    """"empty", "reconciling" or "stable"."""
    members: int


@dataclass(frozen=True, slots=True)
class MemberDescription:
    """One member as its coordinator sees it; partitions sorted by (topic, partition)."""

    member_id: str
    instance_id: str | None
    """Its static instance id (None: a dynamic member)."""
    client_id: str | None
    client_host: str | None
    member_epoch: int
    topics: tuple[str, ...]
    """The topic names it subscribes to."""
    pattern: str | None
    """The regular expression it subscribes with, if any."""
    assignment: tuple[TopicPartition, ...]
    """The partitions it owns now."""
    revoking: tuple[TopicPartition, ...]
    """Owned partitions it has been asked to release."""


@dataclass(frozen=True, slots=True)
class GroupPartitionOffset:
    """Where a group stands in one partition. `committed` is None when the group has
    committed nothing there, `high_watermark` None when it could not be read (or the topic is
    gone); `lag` = high_watermark - committed, None when either is."""

    topic: str
    partition: int
    committed: int | None
    high_watermark: int | None
    lag: int | None


@dataclass(frozen=True, slots=True)
class GroupDescription:
    """A group's state ("empty", "reconciling", "stable"), members sorted by member id and
    offsets by (topic, partition)."""

    group_id: str
    state: str
    assignor: str
    group_epoch: int
    members: tuple[MemberDescription, ...]
    rebalance_reason: str
    rebalance_time_ms: int | None
    """Wall-clock milliseconds of the last change of the target assignment (None: none)."""
    offsets: tuple[GroupPartitionOffset, ...]


ResetStrategy = Literal["to_earliest", "to_latest", "to_offset", "to_datetime", "shift_by"]
RESET_STRATEGIES: tuple[ResetStrategy, ...] = get_args(ResetStrategy)
_NEEDS_VALUE: frozenset[ResetStrategy] = frozenset({"to_offset", "to_datetime", "shift_by"})


@dataclass(frozen=True, slots=True, kw_only=True)
class OffsetResetSpec:
    """Where to move a group's offsets, and in which partitions.

    `strategy` and `value`: to_earliest / to_latest (no value), to_offset (the offset, >= 0),
    to_datetime (milliseconds since the epoch, >= 0: the first offset whose batch has a
    timestamp at or after it), shift_by (a signed count from the committed offset, or from
    the log start where nothing is committed). `topics`: topic -> the partitions to reset
    (empty: every partition of the topic). Every new offset is clamped to the partition's
    [log start, high watermark]."""

    strategy: ResetStrategy
    topics: Mapping[str, tuple[int, ...]]
    value: int | None = None

    def __post_init__(self) -> None:
        if self.strategy not in RESET_STRATEGIES:
            raise ValueError(f"unknown reset strategy {self.strategy!r}")
        if (self.value is not None) != (self.strategy in _NEEDS_VALUE):
            verb = "needs" if self.strategy in _NEEDS_VALUE else "takes no"
            raise ValueError(f"{self.strategy} {verb} value")
        if self.strategy in ("to_offset", "to_datetime") and (self.value or 0) < 0:
            raise ValueError(f"{self.strategy} needs a value >= 0, got {self.value}")
        if not self.topics:
            raise ValueError("no topic to reset")
        for topic, partitions in self.topics.items():
            if any(p < 0 for p in partitions):
                raise ValueError(f"{topic}: negative partition in {partitions}")


@dataclass(frozen=True, slots=True)
class OffsetReset:
    """One partition of a reset plan: its committed offset now (None: none) and the new one."""

    topic: str
    partition: int
    current: int | None
    new: int


def plan_reset(
    spec: OffsetResetSpec,
    tp: TopicPartition,
    *,
    committed: int | None,
    log_start: int,
    high_watermark: int,
    offset_at_time: int | None = None,
) -> OffsetReset:
    """The new offset of one partition under `spec` (pure): always within [log_start,
    high_watermark]. `offset_at_time` is LIST_OFFSETS' answer for `spec.value` (needed by
    to_datetime only)."""
    if not 0 <= log_start <= high_watermark:
        raise ValueError(f"{tp}: need 0 <= log start {log_start} <= high watermark")
    strategy, value = spec.strategy, spec.value
    if strategy == "to_earliest":
        target = log_start
    elif strategy == "to_latest":
        target = high_watermark
    elif strategy == "to_offset":
        assert value is not None
        target = value
    elif strategy == "to_datetime":
        if offset_at_time is None:
            raise ValueError(f"{tp}: to_datetime needs the offset at the time")
        target = offset_at_time
    else:
        assert value is not None
        target = (log_start if committed is None else committed) + value
    new = min(max(target, log_start), high_watermark)
    return OffsetReset(topic=tp[0], partition=tp[1], current=committed, new=new)


def _pairs(tps: Iterable[TopicPartitions]) -> tuple[TopicPartition, ...]:
    return tuple(sorted((t.topic, p) for t in tps for p in t.partitions))


def _member(m: DescribedMember) -> MemberDescription:
    return MemberDescription(
        member_id=m.member_id,
        instance_id=m.instance_id,
        client_id=m.client_id,
        client_host=m.client_host,
        member_epoch=m.member_epoch,
        topics=m.topics,
        pattern=m.pattern,
        assignment=_pairs(m.assignment),
        revoking=_pairs(m.revoking),
    )


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
    """Topic, group, transaction and cluster administration; use as `async with
    Admin(...) as a`.

    `bootstrap`: brokers to start from, "host:port[,host:port...]" or a list of such;
    `client_id`: sent with every request; `request_timeout_ms`: milliseconds one request
    waits for its answer; `timeout_ms`: milliseconds a call retries retriable errors
    (unreachable brokers included) before it raises the last one, for every call that is
    not given its own (default 30000); `timeout_s`: the older name of `timeout_ms`, in
    seconds (give one or the other).
    """

    def __init__(
        self,
        bootstrap: str | Sequence[str] = "127.0.0.1:9092",
        *,
        client_id: str | None = None,
        request_timeout_ms: int = 30_000,
        timeout_ms: float | None = None,
        timeout_s: float | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.client_id = client_id
        self.request_timeout_ms = request_timeout_ms
        resolved = duration_ms("timeout_ms", timeout_ms, "timeout_s", timeout_s, DEFAULT_TIMEOUT_MS)
        assert resolved is not None
        self.timeout_ms: float = resolved
        """Milliseconds the calls given no timeout of their own retry."""
        self._cluster: Cluster | None = None

    def __repr__(self) -> str:
        state = "open" if self._cluster is not None else "closed"
        return f"Admin(bootstrap={self.bootstrap!r}, {state})"

    @property
    def timeout_s(self) -> float:
        """`timeout_ms` in seconds (the older name)."""
        return self.timeout_ms / 1000

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
        """Close the connections (`async with` does it on leaving); closing twice is
        harmless."""
        cluster, self._cluster = self._cluster, None
        if cluster is not None:
            await cluster.__aexit__(None, None, None)

    @property
    def cluster(self) -> Cluster:
        """The connections and metadata of this client (ClientClosedError unless open)."""
        if self._cluster is None:
            raise ClientClosedError("the admin client is not open (use `async with Admin(...)`)")
        return self._cluster

    def _link(self, key: str, kind: CoordinatorType = CoordinatorType.GROUP) -> CoordinatorLink:
        """The coordinator link of a group id (or transactional id), once the id passed the
        broker's rule (else InvalidGroupIdError or InvalidRequestError, not retried)."""
        check_id(key, kind)
        return CoordinatorLink(self.cluster, key, kind)

    def _deadline(self, timeout_ms: float | None) -> float:
        """The Trio-clock deadline `timeout_ms` milliseconds (None: the client's) from now."""
        ms = self.timeout_ms if timeout_ms is None else timeout_ms
        return trio.current_time() + ms / 1000

    # -- topics ------------------------------------------------------------------------------

    async def create_topic(
        self,
        name: str,
        partitions: int | None = None,
        replication_factor: int | None = None,
        config: Mapping[str, str] | None = None,
        *,
        timeout_ms: float | None = None,
        timeout_s: float | None = None,
    ) -> None:
        """Create a topic; returns once every partition has a leader.

        `partitions` and `replication_factor` None: the broker's `default_partitions` and
        `default_replication_factor`. `config`: topic settings (Kafka's names, e.g.
        `retention.ms`). Retriable errors (too few brokers alive among enough registered,
        no controller, unreachable brokers) are retried for `timeout_ms` milliseconds
        (None: the client's; `timeout_s`: its older name, in seconds). Raises at once, not
        retried: InvalidTopicError (a bad name, checked before sending),
        InvalidReplicationFactorError (more replicas than brokers registered),
        InvalidPartitionsError, InvalidConfigError, TopicAlreadyExistsError."""
        check_topic_name(name)
        cluster = self.cluster
        deadline = self._deadline(_timeout(timeout_ms, timeout_s))
        new = NewTopic(
            name=name,
            partitions=BROKER_DEFAULT if partitions is None else partitions,
            replication_factor=BROKER_DEFAULT if replication_factor is None else replication_factor,
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
        """Until the metadata shows every partition of `name` led (or the deadline)."""

        async def led() -> None:
            await self.cluster.refresh([name])
            meta = self.cluster.metadata.topics.get(name)
            if meta is None:
                raise UnknownTopicError(f"topic {name!r} does not exist")
            if any(p.leader is None for p in meta.partitions):
                raise error_for(ErrorCode.LEADER_NOT_AVAILABLE, f"{name!r} is not led yet")

        await self.cluster.retry_until(deadline, led)

    async def alter_topic(
        self,
        name: str,
        *,
        partitions: int | None = None,
        set_config: Mapping[str, str] | None = None,
        delete_config: Iterable[str] = (),
        timeout_ms: float | None = None,
        timeout_s: float | None = None,
    ) -> int:
        """Grow `name` to `partitions` partitions (None: unchanged; never fewer: keys move to
        the new partitions as the jump hash says, about 1/n of them each) and change its
        settings (`delete_config`: back to the defaults); returns once applied and every
        partition has a leader, with the partition count. A setting the broker would not
        enforce is refused (InvalidConfigError), as at create. Retried for `timeout_ms`
        milliseconds (None: the client's; `timeout_s`: its older name, in seconds)."""
        check_topic_name(name)
        timeout = _timeout(timeout_ms, timeout_s)
        cluster = self.cluster
        request = AlterTopicRequest(
            name=name,
            partitions=partitions,
            set_config=dict(set_config or {}),
            delete_config=tuple(dict.fromkeys(delete_config)),
        )

        async def attempt() -> AlterTopicResponse:
            try:
                response = await cluster.request_controller(request)
            except UnknownTopicError as e:
                raise UnknownTopicError(e.message, retriable=False) from None
            assert isinstance(response, AlterTopicResponse)
            return response

        answer = await cluster.retry_until(self._deadline(timeout), attempt)
        return answer.partitions

    async def delete_topic(
        self, name: str, *, timeout_ms: float | None = None, timeout_s: float | None = None
    ) -> None:
        """Delete a topic and its data (UnknownTopicError, not retried, if there is none;
        InvalidTopicError for a name no topic can have). Retried for `timeout_ms`
        milliseconds (None: the client's; `timeout_s`: its older name, in seconds)."""
        check_topic_name(name)
        cluster = self.cluster
        deadline = self._deadline(_timeout(timeout_ms, timeout_s))
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
        """One topic with each partition's log start offset and high watermark
        (UnknownTopicError, not retried, if there is none)."""
        check_topic_name(name)
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
        caught-up replicas and commit lag; retried until the client's `timeout_ms`."""
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

    # -- leaders -----------------------------------------------------------------------------

    async def elect_preferred_leaders(
        self,
        topics: Iterable[str] | None = None,
        *,
        wait: bool = False,
        timeout_ms: float | None = None,
        poll_interval_ms: float | None = None,
        timeout_s: float | None = None,
        poll_s: float | None = None,
    ) -> LeaderElection:
        """Move partition leaderships back to their preferred replicas (the first of each
        replica list) now: ELECT_LEADERS to the controller, which asks the leader of every
        partition whose preferred replica is alive, caught up and not leading to transfer
        leadership to it, a bounded number at a time (the controller also does this every
        `leader_balance_interval_s` on its own). `topics` None: every topic.

        Returns the transfers asked and the partitions still off their preferred leader
        (`LeaderElection.balanced` once there are none). With `wait`, asks again every
        `poll_interval_ms` milliseconds (default 500; more transfers, as earlier ones
        complete) until balanced or until `timeout_ms` milliseconds (default: the client's)
        pass, and returns the last answer either way: check `balanced`. `timeout_s` and
        `poll_s` are the older names, in seconds. Raises UnknownTopicError for a topic that
        does not exist."""
        cluster = self.cluster
        deadline = self._deadline(_timeout(timeout_ms, timeout_s))
        poll = _poll_seconds(poll_interval_ms, poll_s)
        names = None if topics is None else tuple(dict.fromkeys(topics))
        request = ElectLeadersRequest(topics=names)
        asked: dict[tuple[str, int], LeaderMove] = {}

        async def attempt() -> ElectLeadersResponse:
            try:
                response = await cluster.request_controller(request)
            except UnknownTopicError as e:
                # Not retriable: the controller answers from its own state.
                raise UnknownTopicError(e.message, retriable=False) from None
            assert isinstance(response, ElectLeadersResponse)
            return response

        while True:
            response = await cluster.retry_until(deadline, attempt)
            for t in response.transfers:
                asked[(t.topic, t.partition)] = _move(t)
            result = LeaderElection(
                transfers=tuple(asked[k] for k in sorted(asked)),
                pending=tuple(_move(p) for p in response.pending),
            )
            if not wait or result.balanced or trio.current_time() + poll >= deadline:
                return result
            await trio.sleep(poll)

    # -- reassignment ------------------------------------------------------------------------

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
        deadline = self._deadline(_timeout(timeout_ms, timeout_s))
        return await _rebalance.rebalance(self.cluster, deadline, execute=False, exclude=exclude)

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
        return await _rebalance.rebalance(
            self.cluster,
            self._deadline(_timeout(timeout_ms, timeout_s)),
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
        return await _rebalance.rebalance(
            self.cluster,
            self._deadline(_timeout(timeout_ms, timeout_s)),
            execute=True,
            drain=(broker_id,),
            throttle_bytes_per_s=throttle_bytes_per_s,
        )

    async def undrain_broker(
        self, broker_id: int, *, timeout_ms: float | None = None, timeout_s: float | None = None
    ) -> RebalanceResult:
        """Let `broker_id` take replicas again and rebalance onto it (the timeouts as in
        `rebalance`)."""
        return await _rebalance.rebalance(
            self.cluster,
            self._deadline(_timeout(timeout_ms, timeout_s)),
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
        return await _rebalance.rebalance(
            self.cluster,
            self._deadline(_timeout(timeout_ms, timeout_s)),
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
        return await _rebalance.describe(
            self.cluster, self._deadline(_timeout(timeout_ms, timeout_s))
        )

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
        return await _rebalance.wait_done(
            self.cluster,
            self._deadline(_timeout(timeout_ms, timeout_s)),
            poll_s=_poll_seconds(poll_interval_ms, poll_s),
            on_status=on_status,
        )

    # -- consumer groups ---------------------------------------------------------------------

    async def list_groups(self) -> list[GroupListing]:
        """Every group, sorted by id: LIST_GROUPS asked of every broker (`_ask_every_broker`)
        and merged by group id (the lowest broker id's answer wins a duplicate)."""
        answers = await self._ask_every_broker(ListGroupsRequest(), "groups")
        merged: dict[str, GroupListing] = {}
        for broker in sorted(answers):
            answer = answers[broker]
            assert isinstance(answer, ListGroupsResponse)
            for g in answer.groups:
                merged.setdefault(g.group_id, GroupListing(g.group_id, g.state, g.members))
        return [merged[g] for g in sorted(merged)]

    async def _ask_every_broker(self, request: Request, what: str) -> dict[int, Response]:
        """`request` asked of every broker in the metadata (each answers for the coordinator
        partitions it leads). A broker that cannot be reached or does not answer in time is
        skipped (if none answers, its error is raised); any other error is raised."""
        cluster = self.cluster
        deadline = self._deadline(None)
        await cluster.retry_until(deadline, lambda: cluster.refresh(()))
        answers: dict[int, Response] = {}
        unreachable: dict[int, SluiceError] = {}
        failed: dict[int, SluiceError] = {}

        async def ask(broker: int) -> None:
            async def attempt() -> Response | None:
                try:
                    return await cluster.request(broker, request)
                except BrokerUnavailableError as e:
                    unreachable[broker] = e  # down: it leads no coordinator partition
                    return None

            try:
                answer = await cluster.retry_until(deadline, attempt)
            except RequestTimedOutError as e:
                unreachable[broker] = e  # stopped or cut off: as good as down
                return
            except SluiceError as e:
                failed[broker] = e
                return
            if answer is not None:
                answers[broker] = answer

        async with trio.open_nursery() as nursery:
            for broker in sorted(cluster.metadata.brokers):
                nursery.start_soon(ask, broker)
        if failed:
            raise failed[min(failed)]
        if not answers:
            first = min(unreachable, default=None)
            if first is None:
                raise BrokerUnavailableError(f"the metadata names no broker to ask for {what}")
            raise unreachable[first]
        return answers

    async def describe_group(self, group_id: str) -> GroupDescription:
        """The group's state, members and, per partition of every topic it has offsets for,
        subscribes to by name or is assigned, its committed offset, high watermark and lag.
        GroupIdNotFoundError when the coordinator knows no such group."""
        link = self._link(group_id)
        deadline = self._deadline(None)
        group = await self._described(link, deadline)
        if group.error is ErrorCode.GROUP_ID_NOT_FOUND:
            raise GroupIdNotFoundError(f"no group {group_id!r}")
        committed = await self._committed(link, deadline)
        members = tuple(sorted((_member(m) for m in group.members), key=lambda m: m.member_id))
        topics = {t for t, _ in committed}
        for m in members:
            topics.update(m.topics)
            topics.update(t for t, _ in m.assignment)
            topics.update(t for t, _ in m.revoking)
        rows: dict[TopicPartition, GroupPartitionOffset] = {}
        if topics:
            response = await self._metadata(tuple(sorted(topics)))
            for info in response.topics:
                if info.error is not ErrorCode.NONE:
                    continue
                highs = await self._offsets(_describe(info), LATEST_TIMESTAMP)
                for p in info.partitions:
                    tp = (info.name, p.partition)
                    rows[tp] = _partition_offset(tp, committed.get(tp), highs.get(p.partition))
        for tp, offset in committed.items():
            if tp not in rows:  # a topic (or partition) the metadata no longer has
                rows[tp] = _partition_offset(tp, offset, None)
        return GroupDescription(
            group_id=group.group_id,
            state=group.state,
            assignor=group.assignor,
            group_epoch=group.group_epoch,
            members=members,
            rebalance_reason=group.rebalance_reason,
            rebalance_time_ms=None if group.rebalance_time_ms < 0 else group.rebalance_time_ms,
            offsets=tuple(rows[tp] for tp in sorted(rows)),
        )

    async def group_offsets(self, group_id: str) -> dict[TopicPartition, int]:
        """Every offset the group has committed (partitions without one are absent)."""
        link = self._link(group_id)
        return await self._committed(link, self._deadline(None))

    async def reset_offsets_plan(self, group_id: str, spec: OffsetResetSpec) -> list[OffsetReset]:
        """What `spec` would commit, sorted by (topic, partition); changes nothing. An unknown
        topic, or a partition the topic does not have, raises UnknownTopicError; a partition
        whose log start or high watermark cannot be read is retried until the timeout."""
        link = self._link(group_id)
        deadline = self._deadline(None)
        try:
            committed = await self._committed(link, deadline)
        except GroupIdNotFoundError:
            committed = {}
        plan: list[OffsetReset] = []
        for topic, wanted in sorted(spec.topics.items()):
            starts = await self._required_offsets(topic, wanted, EARLIEST_TIMESTAMP, deadline)
            ends = await self._required_offsets(topic, wanted, LATEST_TIMESTAMP, deadline)
            at_time: dict[int, int] = {}
            if spec.strategy == "to_datetime":
                assert spec.value is not None
                at_time = await self._required_offsets(topic, wanted, spec.value, deadline)
            for partition in sorted(starts):
                tp = (topic, partition)
                plan.append(
                    plan_reset(
                        spec,
                        tp,
                        committed=committed.get(tp),
                        log_start=starts[partition],
                        high_watermark=ends[partition],
                        offset_at_time=at_time.get(partition),
                    )
                )
        return plan

    async def reset_offsets(self, group_id: str, plan: Sequence[OffsetReset]) -> None:
        """Commit `plan` as an operator. NonEmptyGroupError (nothing committed) while the
        group has members; the coordinator refuses a member that joins meanwhile the same
        way. Committing the same offsets again is harmless, so failed attempts are retried."""
        if not plan:
            return
        by_tp = {(r.topic, r.partition): r.new for r in plan}
        if len(by_tp) != len(plan):
            raise ValueError("the plan names a partition twice")
        link = self._link(group_id)
        deadline = self._deadline(None)
        await self._check_partitions(by_tp)
        group = await self._described(link, deadline)
        if group.members:
            n = len(group.members)
            raise NonEmptyGroupError(
                f"group {group_id!r} has {n} live member{'' if n == 1 else 's'}: stop its "
                "consumers before resetting its offsets"
            )
        by_topic: dict[str, list[CommitPartition]] = {}
        for (topic, partition), offset in sorted(by_tp.items()):
            by_topic.setdefault(topic, []).append(
                CommitPartition(partition=partition, offset=offset)
            )
        request = OffsetCommitRequest(
            group_id=group_id,
            member_id="",
            member_epoch=ADMIN_EPOCH,
            topics=tuple(CommitTopic(topic=t, partitions=tuple(ps)) for t, ps in by_topic.items()),
        )

        async def attempt() -> None:
            response = await link.request(request)
            assert isinstance(response, OffsetCommitResponse)
            for t in response.topics:
                for p in t.partitions:
                    if p.error is ErrorCode.NONE:
                        continue
                    if p.error is ErrorCode.NON_EMPTY_GROUP:
                        raise NonEmptyGroupError(
                            f"group {group_id!r} has live members: stop its consumers before "
                            "resetting its offsets"
                        )
                    where = f"{t.topic}[{p.partition}]"
                    raise _group_error(
                        link, p.error, f"{where}: {p.message or p.error.description}"
                    )

        await self.cluster.retry_until(deadline, attempt)

    async def delete_group(self, group_id: str) -> None:
        """Delete a group and its committed offsets. NonEmptyGroupError while it has
        members, GroupIdNotFoundError when there is no such group."""
        link = self._link(group_id)
        uncertain = False

        async def attempt() -> None:
            nonlocal uncertain
            try:
                response = await link.request(DeleteGroupsRequest(group_ids=(group_id,)))
            except SluiceError as e:
                uncertain = uncertain or e.code in _UNKNOWN_OUTCOME
                raise
            assert isinstance(response, DeleteGroupsResponse)
            for r in response.groups:
                if r.group_id != group_id or r.error is ErrorCode.NONE:
                    continue
                if r.error is ErrorCode.GROUP_ID_NOT_FOUND:
                    if uncertain:
                        return  # an earlier attempt, whose answer was lost, deleted it
                    raise GroupIdNotFoundError(f"no group {group_id!r}")
                if r.error is ErrorCode.NON_EMPTY_GROUP:
                    raise NonEmptyGroupError(
                        f"group {group_id!r} has live members: stop its consumers before "
                        "deleting it"
                    )
                raise _group_error(link, r.error, r.message)

        await self.cluster.retry_until(self._deadline(None), attempt)

    # -- transactions ------------------------------------------------------------------------

    async def list_transactions(
        self, states: Sequence[str] = OPEN_STATES
    ) -> list[TransactionListing]:
        """Transactional ids in one of `states` (default: every open transaction), sorted:
        LIST_TRANSACTIONS asked of every broker (each names the ids it coordinates)."""
        answers = await self._ask_every_broker(
            ListTransactionsRequest(states=tuple(states)), "transactions"
        )
        merged: dict[str, TransactionListing] = {}
        for broker in sorted(answers):
            answer = answers[broker]
            assert isinstance(answer, ListTransactionsResponse)
            for t in answer.transactions:
                merged.setdefault(t.transactional_id, listing(t, broker))
        return [merged[t] for t in sorted(merged)]

    async def describe_transaction(self, transactional_id: str) -> TransactionDetails:
        """One transactional id's state at its coordinator (TransactionalIdNotFoundError)."""
        link = self._link(transactional_id, CoordinatorType.TRANSACTION)

        async def attempt() -> TransactionDetails:
            response = await link.request(
                DescribeTransactionsRequest(transactional_ids=(transactional_id,))
            )
            assert isinstance(response, DescribeTransactionsResponse)
            for d in response.transactions:
                if d.transactional_id != transactional_id:
                    continue
                if d.error is not ErrorCode.NONE:
                    raise _group_error(link, d.error, d.message)
                return details(d)
            raise UnknownServerError(f"the coordinator did not describe {transactional_id!r}")

        return await self.cluster.retry_until(self._deadline(None), attempt)

    async def abort_transaction(self, transactional_id: str) -> None:
        """An operator's abort of the id's open transaction: nothing of it becomes visible,
        and its producer is fenced (it must be created again)."""
        link = self._link(transactional_id, CoordinatorType.TRANSACTION)
        request = AbortTransactionRequest(transactional_id=transactional_id)
        await self.cluster.retry_until(self._deadline(None), lambda: link.request(request))

    async def held_back(self, partitions: Iterable[TopicPartition]) -> list[HeldBack]:
        """Each partition's last stable offset and high watermark (None where its leader
        did not answer), sorted."""
        wanted = sorted(set(partitions))
        topics = tuple(sorted({t for t, _ in wanted}))
        lso: dict[TopicPartition, int] = {}
        hw: dict[TopicPartition, int] = {}
        if topics:
            response = await self._metadata(topics)
            for info in response.topics:
                if info.error is not ErrorCode.NONE:
                    continue
                topic = _describe(info)
                for p, o in (await self._offsets(topic, LATEST_TIMESTAMP, committed=True)).items():
                    lso[(topic.name, p)] = o
                for p, o in (await self._offsets(topic, LATEST_TIMESTAMP)).items():
                    hw[(topic.name, p)] = o
        return [HeldBack(t, p, lso.get((t, p)), hw.get((t, p))) for t, p in wanted]

    async def _described(self, link: CoordinatorLink, deadline: float) -> DescribedGroup:
        """DESCRIBE_GROUPS of the link's group at its coordinator; an unknown group comes
        back with error GROUP_ID_NOT_FOUND (state "dead"), any other error is raised."""

        async def attempt() -> DescribedGroup:
            response = await link.request(DescribeGroupsRequest(group_ids=(link.key,)))
            assert isinstance(response, DescribeGroupsResponse)
            for g in response.groups:
                if g.group_id != link.key:
                    continue
                if g.error in (ErrorCode.NONE, ErrorCode.GROUP_ID_NOT_FOUND):
                    return g
                raise _group_error(link, g.error, g.message)
            raise error_for(
                ErrorCode.UNKNOWN_SERVER_ERROR,
                f"the coordinator did not describe group {link.key!r}",
            )

        return await self.cluster.retry_until(deadline, attempt)

    async def _committed(self, link: CoordinatorLink, deadline: float) -> dict[TopicPartition, int]:
        async def attempt() -> dict[TopicPartition, int]:
            response = await link.request(OffsetFetchRequest(group_id=link.key))
            assert isinstance(response, OffsetFetchResponse)
            return {
                (o.topic, o.partition): o.offset for o in response.offsets if o.offset != NO_OFFSET
            }

        return await self.cluster.retry_until(deadline, attempt)

    async def _required_offsets(
        self, topic: str, partitions: tuple[int, ...], timestamp: int, deadline: float
    ) -> dict[int, int]:
        """partition -> LIST_OFFSETS(timestamp) for `partitions` of `topic` (empty: all),
        from fresh metadata each attempt; retried until every one is read."""
        cluster = self.cluster

        async def attempt() -> dict[int, int]:
            response = await cluster.request_any(MetadataRequest(topics=(topic,)))
            assert isinstance(response, MetadataResponse)
            cluster.metadata.update(response)
            found = [t for t in response.topics if t.name == topic]
            if not found or found[0].error is ErrorCode.UNKNOWN_TOPIC_OR_PARTITION:
                raise UnknownTopicError(f"no topic {topic!r}", retriable=False)
            if found[0].error is not ErrorCode.NONE:
                raise error_for(found[0].error, f"metadata of {topic!r}")
            description = _describe(found[0])
            existing = {p.partition for p in description.partitions}
            absent = sorted(set(partitions) - existing)
            if absent:
                raise _no_partition(topic, absent, len(existing))
            wanted = set(partitions) or existing
            got = await self._offsets(description, timestamp)
            missing = sorted(wanted - set(got))
            if missing:
                raise LeaderNotAvailableError(
                    f"{topic!r} partitions {','.join(map(str, missing))}: no leader answered "
                    "LIST_OFFSETS"
                )
            return {p: got[p] for p in wanted}

        return await cluster.retry_until(deadline, attempt, refresh_topics=(topic,))

    async def _check_partitions(self, tps: Iterable[TopicPartition]) -> None:
        """UnknownTopicError, not retriable (waiting will not create them), for a topic or
        partition among `tps` that the metadata does not have."""
        wanted = sorted(set(tps))
        response = await self._metadata(tuple(sorted({t for t, _ in wanted})))
        known = {
            t.name: {p.partition for p in t.partitions}
            for t in response.topics
            if t.error is not ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        }
        for topic in sorted({t for t, _ in wanted}):
            if topic not in known:
                raise UnknownTopicError(f"no topic {topic!r}", retriable=False)
            absent = sorted(p for t, p in wanted if t == topic and p not in known[topic])
            if absent:
                raise _no_partition(topic, absent, len(known[topic]))

    async def _metadata(self, topics: tuple[str, ...] | None) -> MetadataResponse:
        cluster = self.cluster

        async def fetch() -> MetadataResponse:
            response = await cluster.request_any(MetadataRequest(topics=topics))
            assert isinstance(response, MetadataResponse)
            cluster.metadata.update(response)
            return response

        return await cluster.retry_until(self._deadline(None), fetch)

    async def _offsets(
        self, topic: TopicDescription, timestamp: int, *, committed: bool = False
    ) -> dict[int, int]:
        """partition -> offset, asked of each partition's leader (best effort); `committed`:
        as a read_committed reader sees it (latest: the last stable offset)."""
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
                isolation=(
                    IsolationLevel.READ_COMMITTED if committed else IsolationLevel.READ_UNCOMMITTED
                ),
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


def _group_error(link: CoordinatorLink, code: ErrorCode, message: str | None) -> SluiceError:
    """The typed error of a group-level (or per-partition) answer; one that says the
    coordinator moved makes the link find it again."""
    error = error_for(code, message)
    if isinstance(error, CoordinatorError):
        link.coordinator = None
    return error


def _partition_offset(
    tp: TopicPartition, committed: int | None, high_watermark: int | None
) -> GroupPartitionOffset:
    lag = None if committed is None or high_watermark is None else high_watermark - committed
    return GroupPartitionOffset(tp[0], tp[1], committed, high_watermark, lag)


def _timeout(timeout_ms: float | None, timeout_s: float | None) -> float | None:
    """A call's timeout in milliseconds from either spelling (None: the client's)."""
    return duration_ms("timeout_ms", timeout_ms, "timeout_s", timeout_s, None)


def _poll_seconds(poll_interval_ms: float | None, poll_s: float | None) -> float:
    """A polling interval in seconds from either spelling (default DEFAULT_POLL_MS)."""
    ms = duration_ms("poll_interval_ms", poll_interval_ms, "poll_s", poll_s, DEFAULT_POLL_MS)
    assert ms is not None
    return ms / 1000


def check_topic_name(name: str) -> None:
    """Raise InvalidTopicError (not retriable) for a name no topic can have, before anything
    is sent: "invalid topic name 'a/b': use 1-249 of ASCII letters, digits, '.', '_' and
    '-'"."""
    problem = topic_name_problem(name)
    if problem is not None:
        raise InvalidTopicError(problem)


def _count(n: int, noun: str) -> str:
    """ "1 partition", "2 partitions"."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _no_partition(topic: str, absent: Sequence[int], has: int) -> UnknownTopicError:
    """A partition number out of range: not retriable (the count only changes by an alter)."""
    which = ",".join(map(str, absent))
    return UnknownTopicError(
        f"topic {topic!r} has no partition {which} (it has {_count(has, 'partition')})",
        retriable=False,
    )


def id_problem(key: str, kind: CoordinatorType = CoordinatorType.GROUP) -> str | None:
    """Why `key` cannot be a group id (or, `kind` TRANSACTION, a transactional id): the
    broker takes 1-255 characters without control characters. None when it can."""
    what = "group id" if kind is CoordinatorType.GROUP else "transactional id"
    if not key:
        return f"{what} must not be empty"
    if len(key) > MAX_GROUP_ID:
        return f"{what} {key[:40]!r}... has {len(key)} characters: use 1-{MAX_GROUP_ID}"
    if any(unicodedata.category(c) == "Cc" for c in key):
        return f"{what} {key!r} contains a control character"
    return None


def transactional_id_problem(key: str) -> str | None:
    """Why `key` cannot be a transactional id (see `id_problem`), or None."""
    return id_problem(key, CoordinatorType.TRANSACTION)


def check_id(key: str, kind: CoordinatorType = CoordinatorType.GROUP) -> None:
    """Raise, before anything is sent, for an id the broker would refuse (see `id_problem`):
    InvalidGroupIdError for a group id, InvalidRequestError for a transactional id."""
    problem = id_problem(key, kind)
    if problem is None:
        return
    if kind is CoordinatorType.GROUP:
        raise InvalidGroupIdError(problem)
    raise InvalidRequestError(problem)
