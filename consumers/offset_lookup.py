"""The consumer's lookups of partitions and offsets (Kafka's partitionsFor, beginningOffsets,
endOffsets and offsetsForTimes), over the consumer's `Cluster`.

Theory of operation
-------------------
Each lookup checks what it is asked about first: from the metadata cache when the cache knows
every topic and each partition is within its topic's count, else from a fresh METADATA answer.
A topic the answer does not name, or a partition beyond its topic's count, is an error at once
(UnknownTopicError with `retriable=False`): waiting does not make a partition exist. Then
LIST_OFFSETS goes to each partition's leader, with the reader's isolation (latest under
read_committed is the last stable offset). Retriable errors (no leader, a leader that moved, no
broker reachable) are retried with backoff until the deadline, asking again only for the
partitions still missing; a leader that said it no longer leads is forgotten first.

A time lookup: the broker answers with the first offset of the first batch whose max timestamp
is at or after the time, or the log end when there is none. `first_at_or_after` makes that the
record's own: it fetches from there (same isolation, so under read_committed records of open or
aborted transactions are no candidates) and takes the first record whose timestamp is at or
after the time. A fetch that returns nothing has reached the end of what the reader may read:
no record is that new.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from broker.wire.batch import decode_record_fields, parse_header
from broker.wire.errors import BatchError, ErrorCode
from broker.wire.messages import (
    FetchedBatch,
    FetchPartition,
    FetchPartitionResult,
    FetchRequest,
    FetchResponse,
    FetchTopic,
    IsolationLevel,
    ListOffsetsPartition,
    ListOffsetsRequest,
    ListOffsetsResponse,
    ListOffsetsTopic,
    MetadataResponse,
)
from consumers.cluster import Cluster, TopicPartition
from consumers.core.metadata import out_of_range, partitions_of
from consumers.errors import (
    CorruptBatch,
    LeaderNotAvailableError,
    LeadershipError,
    SluiceError,
    UnknownTopicError,
    error_for,
)

__all__ = [
    "check_partitions",
    "first_at_or_after",
    "list_offsets",
    "out_of_range",
    "partitions_of",
    "topic_partitions",
]


def _missing_topic(topic: str) -> UnknownTopicError:
    return UnknownTopicError(f"topic {topic!r} does not exist", retriable=False)


async def topic_partitions(
    cluster: Cluster, topics: Sequence[str], deadline: float
) -> dict[str, int]:
    """Each topic's partition count, from a fresh METADATA answer (retried until `deadline`,
    trio time). UnknownTopicError (not retriable) for a topic the cluster does not have."""
    names = tuple(dict.fromkeys(topics))

    async def attempt() -> dict[str, int]:
        response: MetadataResponse = await cluster.refresh(names)
        found = {t.name: t for t in response.topics}
        counts: dict[str, int] = {}
        for name in names:
            info = found.get(name)
            if info is None or info.error is ErrorCode.UNKNOWN_TOPIC_OR_PARTITION:
                raise _missing_topic(name)
            if info.error is not ErrorCode.NONE:
                raise error_for(info.error, f"metadata of topic {name!r}")
            counts[name] = len(info.partitions)
        return counts

    return await cluster.retry_until(deadline, attempt, refresh_topics=())


async def check_partitions(
    cluster: Cluster, partitions: Iterable[TopicPartition], deadline: float
) -> list[TopicPartition]:
    """The partitions as (topic, int) pairs without repeats, once known to exist: from the
    metadata cache when it covers them, else from a fresh answer. UnknownTopicError (not
    retriable) for a missing topic or a partition out of range."""
    wanted = list(dict.fromkeys((t, int(p)) for t, p in partitions))
    topics = tuple(dict.fromkeys(t for t, _ in wanted))
    counts = {t: cluster.metadata.partition_count(t) or 0 for t in topics}
    if not all(0 <= p < counts[t] for t, p in wanted):
        counts = await topic_partitions(cluster, topics, deadline)
    for topic, p in wanted:
        if not 0 <= p < counts[topic]:
            raise UnknownTopicError(out_of_range(topic, p, counts[topic]), retriable=False)
    return wanted


def _list_request(
    stamps: Mapping[TopicPartition, int], isolation: IsolationLevel
) -> ListOffsetsRequest:
    topics: dict[str, list[ListOffsetsPartition]] = {}
    for (topic, p), stamp in stamps.items():
        topics.setdefault(topic, []).append(ListOffsetsPartition(partition=p, timestamp=stamp))
    return ListOffsetsRequest(
        topics=tuple(ListOffsetsTopic(name=n, partitions=tuple(ps)) for n, ps in topics.items()),
        isolation=isolation,
    )


async def list_offsets(
    cluster: Cluster,
    stamps: Mapping[TopicPartition, int],
    isolation: IsolationLevel,
    deadline: float,
) -> dict[TopicPartition, int]:
    """LIST_OFFSETS of every partition (EARLIEST_TIMESTAMP, LATEST_TIMESTAMP or a time in ms)
    from its leader, retried until `deadline` (trio time) for those still missing."""
    got: dict[TopicPartition, int] = {}

    async def attempt() -> dict[TopicPartition, int]:
        by_leader: dict[int, dict[TopicPartition, int]] = {}
        problem: SluiceError | None = None
        for tp, stamp in stamps.items():
            if tp in got:
                continue
            leader = cluster.metadata.leader_for(tp)
            if leader is None:
                problem = problem or LeaderNotAvailableError(f"{tp[0]}[{tp[1]}] has no leader")
                continue
            by_leader.setdefault(leader, {})[tp] = stamp
        for leader, asked in by_leader.items():
            problem = await _ask_leader(cluster, leader, asked, isolation, got) or problem
        if problem is not None:
            raise problem
        return dict(got)

    topics = tuple(dict.fromkeys(t for t, _ in stamps))
    return await cluster.retry_until(deadline, attempt, refresh_topics=topics)


async def _ask_leader(
    cluster: Cluster,
    leader: int,
    asked: dict[TopicPartition, int],
    isolation: IsolationLevel,
    got: dict[TopicPartition, int],
) -> SluiceError | None:
    """One LIST_OFFSETS to `leader`: answers go into `got`; the first error, if any."""
    try:
        response = await cluster.request(leader, _list_request(asked, isolation))
    except SluiceError as e:
        return e
    assert isinstance(response, ListOffsetsResponse)
    problem: SluiceError | None = None
    for t in response.topics:
        for r in t.partitions:
            tp = (t.name, r.partition)
            if tp not in asked:
                continue
            if r.error is ErrorCode.NONE:
                got[tp] = r.offset
                continue
            error = error_for(r.error, f"list offsets of {t.name}[{r.partition}]")
            if isinstance(error, LeadershipError):
                cluster.metadata.invalidate(tp)
            problem = problem or error
    unanswered = [tp for tp in asked if tp not in got]
    if problem is None and unanswered:
        problem = LeaderNotAvailableError(f"broker {leader} did not answer for {unanswered}")
    return problem


async def first_at_or_after(
    cluster: Cluster,
    tp: TopicPartition,
    start: int,
    timestamp: int,
    *,
    isolation: IsolationLevel,
    max_bytes: int,
    deadline: float,
) -> tuple[int, int] | None:
    """(offset, timestamp) of the first record of `tp` at or after `start` whose timestamp
    (ms since the epoch) is >= `timestamp`; None when the reader reaches the end first."""
    offset = start

    async def attempt() -> tuple[int, int] | None:
        nonlocal offset
        while True:
            result = await _fetch_once(cluster, tp, offset, isolation, max_bytes)
            if result.error is ErrorCode.OFFSET_OUT_OF_RANGE and result.log_start_offset > offset:
                offset = result.log_start_offset  # retention moved the log start meanwhile
                continue
            if result.error is not ErrorCode.NONE:
                error = error_for(result.error, result.message)
                if isinstance(error, LeadershipError):
                    cluster.metadata.invalidate(tp)
                raise error
            if not result.batches:
                return None
            found, after = _scan(tp, result.batches, offset, timestamp)
            if found is not None:
                return found
            following = max(after, result.next_offset or after)
            if following <= offset:
                return None
            offset = following

    return await cluster.retry_until(deadline, attempt, refresh_topics=(tp[0],))


async def _fetch_once(
    cluster: Cluster, tp: TopicPartition, offset: int, isolation: IsolationLevel, max_bytes: int
) -> FetchPartitionResult:
    """One FETCH of `tp` from `offset` that does not wait for data."""
    leader = cluster.metadata.leader_for(tp)
    if leader is None:
        raise LeaderNotAvailableError(f"{tp[0]}[{tp[1]}] has no leader")
    request = FetchRequest(
        topics=(
            FetchTopic(
                name=tp[0],
                partitions=(FetchPartition(partition=tp[1], offset=offset, max_bytes=max_bytes),),
            ),
        ),
        max_wait_ms=0,
        min_bytes=0,
        max_bytes=max_bytes,
        isolation=isolation,
    )
    response = await cluster.request(leader, request)
    assert isinstance(response, FetchResponse)
    for t in response.topics:
        for p in t.partitions:
            if (t.name, p.partition) == tp:
                return p
    raise LeaderNotAvailableError(f"broker {leader} did not answer for {tp[0]}[{tp[1]}]")


def _scan(
    tp: TopicPartition, batches: Sequence[FetchedBatch], offset: int, timestamp: int
) -> tuple[tuple[int, int] | None, int]:
    """The first record at or after `offset` stamped at or after `timestamp`, if any, and the
    offset after the batches."""
    after = offset
    for batch in batches:
        try:
            header = parse_header(batch.data)
            fields = [] if header.is_control else decode_record_fields(batch.data)
        except BatchError as e:
            raise CorruptBatch(tp[0], tp[1], batch.base_offset, None, e.message) from None
        for i, (stamp, _key, _value, _headers) in enumerate(fields):
            at = batch.base_offset + i
            if at >= offset and stamp >= timestamp:
                return (at, stamp), at
        after = max(after, batch.base_offset + header.record_count)
    return None, after
