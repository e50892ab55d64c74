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

Consumer groups, reassignment and transactions are mixins of `Admin`, one module each
(`AdminBase`, consumers/admin_base.py, declares what they use of it): `GroupAdmin`
(consumers/group_admin.py), `RebalanceAdmin` (consumers/rebalance.py), `TransactionAdmin`
(consumers/txn_admin.py). Their names are importable from here as before.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType

import trio

from broker.wire.errors import ErrorCode
from broker.wire.group_messages import MAX_GROUP_ID, CoordinatorType
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
from consumers.admin_base import DEFAULT_POLL_MS as DEFAULT_POLL_MS
from consumers.admin_base import (
    UNKNOWN_OUTCOME,
    AdminBase,
    call_timeout_ms,
    no_partition,
    poll_seconds,
)
from consumers.cluster import Backoff, Cluster, TopicPartition
from consumers.coordinator import CoordinatorLink
from consumers.durations import duration_ms
from consumers.errors import (
    BrokerUnavailableError,
    ClientClosedError,
    InvalidGroupIdError,
    InvalidRequestError,
    InvalidTopicError,
    NotControllerError,
    RequestTimedOutError,
    SluiceError,
    UnknownTopicError,
    error_for,
)
from consumers.group_admin import (
    RESET_STRATEGIES,
    GroupAdmin,
    GroupDescription,
    GroupListing,
    GroupPartitionOffset,
    MemberDescription,
    OffsetReset,
    OffsetResetSpec,
    ResetStrategy,
    plan_reset,
)
from consumers.rebalance import RebalanceAdmin
from consumers.txn_admin import TransactionAdmin

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


class Admin(GroupAdmin, RebalanceAdmin, TransactionAdmin, AdminBase):
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
        deadline = self._deadline(call_timeout_ms(timeout_ms, timeout_s))
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
                uncertain = uncertain or e.code in UNKNOWN_OUTCOME
                raise
            assert isinstance(response, CreateTopicsResponse)
            for result in response.topics:
                if result.name != name or result.error is ErrorCode.NONE:
                    continue
                if result.error is ErrorCode.TOPIC_ALREADY_EXISTS and uncertain:
                    return
                uncertain = uncertain or result.error in UNKNOWN_OUTCOME
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
        timeout = call_timeout_ms(timeout_ms, timeout_s)
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
        deadline = self._deadline(call_timeout_ms(timeout_ms, timeout_s))
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
                uncertain = uncertain or e.code in UNKNOWN_OUTCOME
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
                uncertain = uncertain or result.error in UNKNOWN_OUTCOME
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
        starts = await self._offsets(found[0], EARLIEST_TIMESTAMP)
        ends = await self._offsets(found[0], LATEST_TIMESTAMP)
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
        deadline = self._deadline(call_timeout_ms(timeout_ms, timeout_s))
        poll = poll_seconds(poll_interval_ms, poll_s)
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

    # -- helpers (AdminBase: the mixins use them too) ----------------------------------------

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
                raise no_partition(topic, absent, len(known[topic]))

    async def _metadata(self, topics: tuple[str, ...] | None) -> MetadataResponse:
        """METADATA of `topics` (None: every topic), retried until the client's timeout."""
        cluster = self.cluster

        async def fetch() -> MetadataResponse:
            response = await cluster.request_any(MetadataRequest(topics=topics))
            assert isinstance(response, MetadataResponse)
            cluster.metadata.update(response)
            return response

        return await cluster.retry_until(self._deadline(None), fetch)

    async def _offsets(
        self, topic: TopicInfo, timestamp: int, *, committed: bool = False
    ) -> dict[int, int]:
        """partition -> offset, asked of each partition's leader (best effort), in partition
        order; `committed`: as a read_committed reader sees it (latest: the last stable
        offset)."""
        by_leader: dict[int, list[int]] = {}
        for p in sorted(topic.partitions, key=lambda p: p.partition):
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


def check_topic_name(name: str) -> None:
    """Raise InvalidTopicError (not retriable) for a name no topic can have, before anything
    is sent: "invalid topic name 'a/b': use 1-249 of ASCII letters, digits, '.', '_' and
    '-'"."""
    problem = topic_name_problem(name)
    if problem is not None:
        raise InvalidTopicError(problem)


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
