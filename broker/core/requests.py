"""RequestHandler: client requests in, responses out, over a BrokerNode. Pure, like the node.

A request either answers at once (metadata, describe cluster, fetch, list offsets, API versions,
and any request refused up front) or starts operations on the node under a token and answers
when their Completions have all arrived (produce: one per partition; create/delete topics: one
per topic, and a create's second wait for its partitions' leaders; init producer id). The
runtime encodes the `Reply` at the request's version, times requests out (`abandon`), and
long-polls fetches (it calls `fetch` again when a partition's high watermark moves).

Dispatch is by table: `_ROUTES` maps every ApiKey to its handler, `_FINISHERS` every API that
waits on Completions to the method that builds its answer. Bodies are built whole (every field
of the newest version); encoding leaves out what the request's version lacks. `versions` is
the table the broker serves (SUPPORTED_VERSIONS, or less with `max_api_versions`): API_VERSIONS
lists it, and refuses a version outside it with UNSUPPORTED_VERSION and the ranges.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from broker.core.cluster_answers import describe_cluster_response, metadata_response
from broker.core.group_requests import GroupRequests
from broker.core.metadata import (
    TopicInfo,
    validate_topic_config,
    validate_topic_name,
)
from broker.core.node import BrokerNode, Completion, FetchResult
from broker.core.partition import ApplyResult
from broker.core.rebalance_requests import RebalanceRequests
from broker.core.reply import Reply as Reply
from broker.core.txn_requests import TxnRequests
from broker.wire.api import SUPPORTED_VERSIONS, ApiKey, VersionRange
from broker.wire.errors import ErrorCode
from broker.wire.group_messages import (
    DeleteGroupsRequest,
    DescribeGroupsRequest,
    FindCoordinatorRequest,
    GroupHeartbeatRequest,
    ListGroupsRequest,
    OffsetCommitRequest,
    OffsetFetchRequest,
)
from broker.wire.messages import (
    BROKER_DEFAULT,
    NO_TIMESTAMP,
    ApiVersionRange,
    ApiVersionsRequest,
    ApiVersionsResponse,
    CreateTopicsRequest,
    CreateTopicsResponse,
    DeleteTopicsRequest,
    DeleteTopicsResponse,
    DescribeClusterRequest,
    DescribeClusterResponse,
    ElectLeadersRequest,
    ElectLeadersResponse,
    FetchedBatch,
    FetchPartition,
    FetchPartitionResult,
    FetchRequest,
    FetchResponse,
    FetchTopicResult,
    InitProducerIdRequest,
    InitProducerIdResponse,
    IsolationLevel,
    ListOffsetsPartitionResult,
    ListOffsetsRequest,
    ListOffsetsResponse,
    ListOffsetsTopicResult,
    MetadataRequest,
    MetadataResponse,
    PreferredLeader,
    ProducePartitionResult,
    ProduceRequest,
    ProduceResponse,
    ProduceTopicResult,
    Request,
    Response,
    TopicResult,
)
from broker.wire.protocol import RequestHeader
from broker.wire.rebalance_messages import (
    AlterTopicRequest,
    DescribeReassignmentsRequest,
    RebalanceRequest,
)
from broker.wire.txn_messages import (
    AbortTransactionRequest,
    AddOffsetsToTxnRequest,
    AddPartitionsToTxnRequest,
    DescribeTransactionsRequest,
    EndTxnRequest,
    ListTransactionsRequest,
    TxnOffsetCommitRequest,
)

MAX_EPOCH = (1 << 15) - 1


@dataclass
class _Pending:
    """A request waiting on Completions, one slot per partition or topic."""

    header: RequestHeader
    request: Request
    results: list[object]
    waiting: int
    stage: list[int] = field(default_factory=list)


class RequestHandler(TxnRequests, GroupRequests, RebalanceRequests):
    def __init__(
        self, node: BrokerNode, versions: Mapping[ApiKey, VersionRange] = SUPPORTED_VERSIONS
    ) -> None:
        self.node = node
        self.versions = versions
        """The version ranges this broker serves (at most SUPPORTED_VERSIONS)."""
        self._pending: dict[int, _Pending] = {}

    # ---------------------------------------------------------------------------------------

    def handle(self, token: int, header: RequestHeader, request: Request) -> Reply | None:
        """A Reply now, or None: `complete` will produce it later under `token`."""
        return _ROUTES[request.API_KEY](self, token, header, request)

    def complete(self, completions: list[Completion]) -> list[tuple[int, Reply]]:
        done: list[tuple[int, Reply]] = []
        for c in completions:
            p = self._pending.get(c.token)
            if p is None:
                continue  # abandoned (timed out) before it completed
            if self._fill(c.token, p, c):
                del self._pending[c.token]
                done.append((c.token, self._finish(p)))
        return done

    def abandon(self, token: int) -> Reply | None:
        """The request timed out: answer what finished, REQUEST_TIMED_OUT for the rest."""
        p = self._pending.pop(token, None)
        self.node.cancel(token)
        if p is None:
            return None
        for i, r in enumerate(p.results):
            if r is None:
                p.results[i] = (ErrorCode.REQUEST_TIMED_OUT, "timed out waiting for commit", None)
        return self._finish(p)

    @property
    def pending(self) -> int:
        return len(self._pending)

    # ---------------------------------------------------------------------------------------

    def _fill(self, token: int, p: _Pending, c: Completion) -> bool:
        """Record a Completion; True when the request has all its results."""
        if p.results[c.slot] is not None:
            return p.waiting == 0
        if (
            isinstance(p.request, (CreateTopicsRequest, AlterTopicRequest))
            and p.stage[c.slot] == 0
            and c.error == ErrorCode.NONE
            and isinstance(c.value, TopicInfo)
        ):
            p.stage[c.slot] = 1  # committed: now wait for every partition's leader
            self.node.await_leaders(token, c.slot, c.value.name)
            return False
        p.results[c.slot] = (c.error, c.message, c.value)
        p.waiting -= 1
        return p.waiting == 0

    def _finish(self, p: _Pending) -> Reply:
        return _FINISHERS[p.request.API_KEY](self, p.header.correlation_id, p.request, p.results)

    def _produce_done(self, corr: int, req: ProduceRequest, results: list[object]) -> Reply:
        body = _produce_response(req, results, self.node.leader_hint)
        return Reply(corr, ErrorCode.NONE, None, body)

    def _create_topics_done(
        self, corr: int, req: CreateTopicsRequest, results: list[object]
    ) -> Reply:
        names = [t.name for t in req.topics]
        body = CreateTopicsResponse(topics=_topic_results(names, results))
        return Reply(corr, ErrorCode.NONE, None, body)

    def _delete_topics_done(
        self, corr: int, req: DeleteTopicsRequest, results: list[object]
    ) -> Reply:
        body = DeleteTopicsResponse(topics=_topic_results(list(req.names), results))
        return Reply(corr, ErrorCode.NONE, None, body)

    def _init_producer_id_done(
        self, corr: int, req: InitProducerIdRequest, results: list[object]
    ) -> Reply:
        if req.transactional_id is not None:
            return self._txn_done(corr, req, results)
        first = results[0]
        assert isinstance(first, tuple)
        err, msg, pid = first
        if err != ErrorCode.NONE:
            return Reply(corr, err, msg, None)
        return Reply(
            corr, ErrorCode.NONE, None, InitProducerIdResponse(producer_id=pid, producer_epoch=0)
        )

    def _park(
        self, token: int, header: RequestHeader, req: Request, results: list[object]
    ) -> Reply | None:
        waiting = sum(1 for r in results if r is None)
        p = _Pending(header, req, results, waiting, [0] * len(results))
        if waiting == 0:
            return self._finish(p)
        self._pending[token] = p
        return None

    # -- produce ----------------------------------------------------------------------------

    def _produce(self, token: int, header: RequestHeader, req: ProduceRequest) -> Reply | None:
        results: list[object] = []
        for t in req.topics:
            for pp in t.partitions:
                slot = len(results)
                err, msg = self.node.produce(token, slot, t.name, pp.partition, pp.batch)
                results.append(None if err == ErrorCode.NONE else (err, msg, None))
        return self._park(token, header, req, results)

    # -- fetch ------------------------------------------------------------------------------

    def fetch(self, req: FetchRequest, cap: int | None = None) -> tuple[FetchResponse, int]:
        """The response and the bytes it carries (the runtime long-polls below min_bytes).
        `cap` narrows the request's max_bytes (the runtime's memory budget); the first batch
        is returned whatever the limits, so a consumer always makes progress."""
        budget = req.max_bytes if cap is None else min(req.max_bytes, cap)
        total = 0
        topics = []
        committed = req.isolation == IsolationLevel.READ_COMMITTED
        for t in req.topics:
            parts = []
            for fp in t.partitions:
                # Kafka's rule: only the first batch of the response may exceed the limits.
                limit = max(0, min(fp.max_bytes, budget))
                r = self.node.fetch(
                    t.name, fp.partition, fp.offset, limit, committed, min_one=total == 0
                )
                parts.append(_fetch_partition(t.name, fp, r, self.node.leader_hint))
                total += r.size
                budget -= r.size
            topics.append(FetchTopicResult(name=t.name, partitions=tuple(parts)))
        return FetchResponse(topics=tuple(topics)), total

    def fetch_watch(self, req: FetchRequest) -> tuple[tuple[int, int, bool], ...]:
        """What a fetch's answer depends on, per partition: (high watermark, term,
        serving). A parked fetch need not run again while this stays the same."""
        node = self.node
        return tuple(
            node.fetch_watch(t.name, fp.partition) for t in req.topics for fp in t.partitions
        )

    def fetch_has_error(self, resp: FetchResponse) -> bool:
        return any(p.error != ErrorCode.NONE for t in resp.topics for p in t.partitions)

    # -- metadata and offsets ---------------------------------------------------------------

    def metadata(self, req: MetadataRequest) -> MetadataResponse:
        return metadata_response(self.node, req)

    def describe_cluster(self) -> DescribeClusterResponse:
        return describe_cluster_response(self.node)

    def api_versions(self) -> ApiVersionsResponse:
        apis = tuple(
            ApiVersionRange(api_key=int(k), min_version=lo, max_version=hi)
            for k, (lo, hi) in self.versions.items()
        )
        return ApiVersionsResponse(
            apis=apis, node_id=self.node.config.node_id, cluster_id=self.node.meta.cluster_id
        )

    def _api_versions(self, token: int, header: RequestHeader, req: ApiVersionsRequest) -> Reply:
        """The ranges; at a version outside API_VERSIONS' own range, the ranges with
        UNSUPPORTED_VERSION (Kafka's rule: the client downgrades and asks again)."""
        low, high = self.versions[ApiKey.API_VERSIONS]
        if low <= header.api_version <= high:
            return Reply(header.correlation_id, ErrorCode.NONE, None, self.api_versions())
        message = (
            f"API_VERSIONS version {header.api_version} is not supported by this broker, "
            f"which speaks versions {low} to {high}; the ranges of every API follow"
        )
        return Reply(
            header.correlation_id, ErrorCode.UNSUPPORTED_VERSION, message, self.api_versions()
        )

    def _list_offsets(self, req: ListOffsetsRequest) -> ListOffsetsResponse:
        committed = req.isolation == IsolationLevel.READ_COMMITTED
        topics = []
        for t in req.topics:
            parts = []
            for lp in t.partitions:
                err, off = self.node.list_offset(t.name, lp.partition, lp.timestamp, committed)
                parts.append(
                    ListOffsetsPartitionResult(
                        partition=lp.partition, error=err, offset=off, timestamp=NO_TIMESTAMP
                    )
                )
            topics.append(ListOffsetsTopicResult(name=t.name, partitions=tuple(parts)))
        return ListOffsetsResponse(topics=tuple(topics))

    # -- topics -----------------------------------------------------------------------------

    def _create_topics(
        self, token: int, header: RequestHeader, req: CreateTopicsRequest
    ) -> Reply | None:
        results: list[object] = []
        registered = len(self.node.meta.brokers)
        problem: tuple[ErrorCode, str | None] | None
        cfg = self.node.config
        for slot, nt in enumerate(req.topics):
            # BROKER_DEFAULT asks for the broker's defaults (as in Kafka's CreateTopics).
            partitions = (
                cfg.default_partitions if nt.partitions == BROKER_DEFAULT else nt.partitions
            )
            rf = (
                cfg.default_replication_factor
                if nt.replication_factor == BROKER_DEFAULT
                else nt.replication_factor
            )
            problem = _check_new_topic(nt.name, partitions, rf, dict(nt.config))
            if problem is None and rf > registered:
                # Waiting cannot heal this (too few alive of enough registered can: the
                # metadata machine answers that NOT_ENOUGH_REPLICAS, which clients retry).
                brokers = "broker" if registered == 1 else "brokers"
                problem = (
                    ErrorCode.INVALID_REPLICATION_FACTOR,
                    f"replication factor {rf} is above the {registered} {brokers} in the cluster",
                )
            if problem is None and nt.name in self.node.meta.topics:
                problem = (ErrorCode.TOPIC_ALREADY_EXISTS, f"topic {nt.name!r} already exists")
            if problem is None:
                err, msg = self.node.create_topic(
                    token, slot, nt.name, partitions, rf, dict(nt.config)
                )
                problem = None if err == ErrorCode.NONE else (err, msg)
            results.append(None if problem is None else (*problem, None))
        return self._park(token, header, req, results)

    def _delete_topics(
        self, token: int, header: RequestHeader, req: DeleteTopicsRequest
    ) -> Reply | None:
        results: list[object] = []
        for slot, name in enumerate(req.names):
            err, msg = self.node.delete_topic(token, slot, name)
            results.append(None if err == ErrorCode.NONE else (err, msg, None))
        return self._park(token, header, req, results)

    def _elect_leaders(self, token: int, header: RequestHeader, req: ElectLeadersRequest) -> Reply:
        """A preferred-leader balancing pass on the controller, answered at once with the
        transfers it asked and the partitions still off their preferred leader; any other
        broker answers NOT_CONTROLLER naming the controller it knows."""
        corr = header.correlation_id
        topics = None if req.topics is None else frozenset(req.topics)
        err, msg, plan = self.node.elect_preferred_leaders(topics)
        if err is ErrorCode.NOT_CONTROLLER:
            known = self.node.controller
            msg = f"{msg} (the controller is {'unknown' if known is None else known})"
        if plan is None:
            return Reply(corr, err, msg, None)
        body = ElectLeadersResponse(
            transfers=tuple(
                PreferredLeader(
                    topic=t.topic, partition=t.partition, leader=t.source, preferred=t.target
                )
                for t in sorted(plan.transfers, key=lambda t: (t.topic, t.partition))
            ),
            pending=tuple(
                PreferredLeader(
                    topic=p.topic, partition=p.partition, leader=p.leader, preferred=p.replicas[0]
                )
                for p in plan.imbalanced
            ),
        )
        return Reply(corr, ErrorCode.NONE, None, body)

    def _init_producer_id(
        self, token: int, header: RequestHeader, req: InitProducerIdRequest
    ) -> Reply | None:
        corr = header.correlation_id
        if req.transactional_id is not None:
            return self._init_txn_producer(token, header, req)
        if req.producer_id >= 0:
            # KIP-360: an idempotent producer bumps its epoch after a batch failed for good.
            if req.producer_epoch < 0:
                return Reply(corr, ErrorCode.INVALID_REQUEST, "producer_epoch must be >= 0", None)
            if req.producer_epoch < MAX_EPOCH:
                body = InitProducerIdResponse(
                    producer_id=req.producer_id, producer_epoch=req.producer_epoch + 1
                )
                return Reply(corr, ErrorCode.NONE, None, body)
        self.node.init_producer_id(token, 0)  # any broker: from a block it holds or asks for
        return self._park(token, header, req, [None])


def _check_new_topic(
    name: str, partitions: int, rf: int, config: dict[str, str]
) -> tuple[ErrorCode, str] | None:
    bad = validate_topic_name(name)
    if bad is not None:
        return ErrorCode.INVALID_TOPIC, bad
    if not 1 <= partitions <= 10_000:
        return ErrorCode.INVALID_PARTITIONS, f"partitions must be 1..10000, got {partitions}"
    if rf < 1:
        return ErrorCode.INVALID_REPLICATION_FACTOR, f"replication factor must be >= 1, got {rf}"
    bad = validate_topic_config(config)
    if bad is not None:
        return ErrorCode.INVALID_CONFIG, bad
    return None


def _topic_results(names: list[str], results: list[object]) -> tuple[TopicResult, ...]:
    out = []
    for name, r in zip(names, results, strict=True):
        assert isinstance(r, tuple)
        out.append(TopicResult(name=name, error=r[0], message=r[1]))
    return tuple(out)


LEADERSHIP_ERRORS = frozenset({ErrorCode.NOT_LEADER_OR_FOLLOWER, ErrorCode.LEADER_NOT_AVAILABLE})
"""Errors whose partition results carry the answering broker's leader hint."""

LeaderHint = Callable[[str, int], tuple[int | None, int]]


def _hint(error: ErrorCode, topic: str, partition: int, hint: LeaderHint) -> tuple[int | None, int]:
    return hint(topic, partition) if error in LEADERSHIP_ERRORS else (None, -1)


def _produce_response(
    req: ProduceRequest, results: list[object], hint: LeaderHint
) -> ProduceResponse:
    topics = []
    i = 0
    for t in req.topics:
        parts = []
        for pp in t.partitions:
            r = results[i]
            i += 1
            assert isinstance(r, tuple)
            err, msg, value = r
            base = value.base_offset if isinstance(value, ApplyResult) else -1
            if isinstance(value, ApplyResult) and value.error != ErrorCode.NONE:
                err = value.error
            leader, term = _hint(err, t.name, pp.partition, hint)
            parts.append(
                ProducePartitionResult(
                    partition=pp.partition,
                    error=err,
                    message=msg,
                    base_offset=base,
                    log_start_offset=0,
                    leader=leader,
                    leader_term=term,
                )
            )
        topics.append(ProduceTopicResult(name=t.name, partitions=tuple(parts)))
    return ProduceResponse(topics=tuple(topics))


def _fetch_partition(
    topic: str, fp: FetchPartition, r: FetchResult, hint: LeaderHint
) -> FetchPartitionResult:
    """One partition's answer. `aborted_transactions` stays empty: the broker filters a
    read_committed fetch itself (PartitionService.fetch)."""
    leader, term = _hint(r.error, topic, fp.partition, hint)
    return FetchPartitionResult(
        partition=fp.partition,
        leader=leader,
        leader_term=term,
        error=r.error,
        message=r.message,
        high_watermark=r.high_watermark,
        last_stable_offset=r.last_stable_offset,
        log_start_offset=r.log_start_offset,
        batches=tuple(FetchedBatch(base_offset=b, data=d) for b, d in r.batches),
        next_offset=r.next_offset if r.next_offset >= 0 else fp.offset,
    )


_R = TypeVar("_R", bound=Request)
_Route = Callable[[RequestHandler, int, RequestHeader, Request], Reply | None]
_Finisher = Callable[[RequestHandler, int, Request, list[object]], Reply]


def _handler(
    kind: type[_R], method: Callable[[RequestHandler, int, RequestHeader, _R], Reply | None]
) -> tuple[ApiKey, _Route]:
    """`kind`'s API key and its handler: a Reply now, or None (answered by `complete`)."""

    def route(h: RequestHandler, token: int, header: RequestHeader, req: Request) -> Reply | None:
        assert isinstance(req, kind)
        return method(h, token, header, req)

    return kind.API_KEY, route


def _answer(
    kind: type[_R], method: Callable[[RequestHandler, _R], Response]
) -> tuple[ApiKey, _Route]:
    """`kind`'s API key and a handler that answers at once with `method`'s body."""

    def route(h: RequestHandler, token: int, header: RequestHeader, req: Request) -> Reply:
        assert isinstance(req, kind)
        return Reply(header.correlation_id, ErrorCode.NONE, None, method(h, req))

    return kind.API_KEY, route


def _finisher(
    kind: type[_R], method: Callable[[RequestHandler, int, _R, list[object]], Reply]
) -> tuple[ApiKey, _Finisher]:
    """`kind`'s API key and the method that answers it once its Completions are in."""

    def finish(h: RequestHandler, corr: int, req: Request, results: list[object]) -> Reply:
        assert isinstance(req, kind)
        return method(h, corr, req, results)

    return kind.API_KEY, finish


_ROUTES: Mapping[ApiKey, _Route] = dict(
    (
        _handler(ApiVersionsRequest, RequestHandler._api_versions),
        _answer(MetadataRequest, RequestHandler.metadata),
        _handler(CreateTopicsRequest, RequestHandler._create_topics),
        _handler(DeleteTopicsRequest, RequestHandler._delete_topics),
        _handler(ProduceRequest, RequestHandler._produce),
        _answer(FetchRequest, lambda h, req: h.fetch(req)[0]),
        _answer(ListOffsetsRequest, RequestHandler._list_offsets),
        _handler(InitProducerIdRequest, RequestHandler._init_producer_id),
        _answer(DescribeClusterRequest, lambda h, _: h.describe_cluster()),
        _handler(FindCoordinatorRequest, RequestHandler._find_coordinator),
        _handler(GroupHeartbeatRequest, RequestHandler._group_heartbeat),
        _handler(OffsetCommitRequest, RequestHandler._offset_commit),
        _handler(OffsetFetchRequest, RequestHandler._offset_fetch),
        _answer(ListGroupsRequest, RequestHandler._list_groups),
        _answer(DescribeGroupsRequest, RequestHandler._describe_groups),
        _handler(DeleteGroupsRequest, RequestHandler._delete_groups),
        _handler(AddPartitionsToTxnRequest, RequestHandler._add_partitions_to_txn),
        _handler(AddOffsetsToTxnRequest, RequestHandler._add_offsets_to_txn),
        _handler(TxnOffsetCommitRequest, RequestHandler._offset_commit),
        _handler(EndTxnRequest, RequestHandler._end_txn),
        _answer(DescribeTransactionsRequest, RequestHandler._describe_transactions),
        _answer(ListTransactionsRequest, RequestHandler._list_transactions),
        _handler(AbortTransactionRequest, RequestHandler._abort_transaction),
        _handler(ElectLeadersRequest, RequestHandler._elect_leaders),
        _handler(RebalanceRequest, RequestHandler._rebalance),
        _handler(DescribeReassignmentsRequest, RequestHandler._describe_reassignments),
        _handler(AlterTopicRequest, RequestHandler._alter_topic),
    )
)
assert set(_ROUTES) == set(ApiKey)

_FINISHERS: Mapping[ApiKey, _Finisher] = dict(
    (
        _finisher(ProduceRequest, RequestHandler._produce_done),
        _finisher(CreateTopicsRequest, RequestHandler._create_topics_done),
        _finisher(DeleteTopicsRequest, RequestHandler._delete_topics_done),
        _finisher(InitProducerIdRequest, RequestHandler._init_producer_id_done),
        _finisher(GroupHeartbeatRequest, RequestHandler._heartbeat_done),
        _finisher(OffsetCommitRequest, RequestHandler._commit_done),
        _finisher(DeleteGroupsRequest, RequestHandler._delete_groups_done),
        _finisher(AddPartitionsToTxnRequest, RequestHandler._txn_done),
        _finisher(AddOffsetsToTxnRequest, RequestHandler._txn_done),
        _finisher(TxnOffsetCommitRequest, RequestHandler._commit_done),
        _finisher(EndTxnRequest, RequestHandler._txn_done),
        _finisher(AbortTransactionRequest, RequestHandler._txn_done),
        _finisher(RebalanceRequest, RequestHandler._rebalance_done),
        _finisher(AlterTopicRequest, RequestHandler._alter_topic_done),
    )
)
