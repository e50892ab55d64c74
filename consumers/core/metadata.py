"""The client's metadata cache (pure): brokers, controller and topic layout.

`MetadataCache` holds brokers (id -> host:port), topics -> partitions -> (leader,
leader_term, replicas) and the controller, merged from METADATA answers. Its one rule: a
partition's leader is never replaced by one reported under an older Raft term (a broker that
has not yet heard of the new leader cannot make the client step back); within one term a
known leader is kept over "no leader". `invalidate(tp)` forgets a leader that answered
NOT_LEADER (its term is kept, so only equal-or-newer reports are taken); `hint(tp, leader,
term)` takes the leader such an answer names, under the same rule, so the retry goes there
without waiting for a refresh. A topic reported UNKNOWN_TOPIC_OR_PARTITION is dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from broker.wire.errors import ErrorCode
from broker.wire.messages import MetadataResponse

__all__ = [
    "BrokerAddress",
    "MetadataCache",
    "PartitionMeta",
    "TopicMeta",
    "TopicPartition",
    "out_of_range",
    "partitions_of",
]

TopicPartition = tuple[str, int]


def partitions_of(topic: str, count: int) -> str:
    """`topic 't' has 3 partitions (0-2)`: the numbers a partition of `topic` may take."""
    span = "none" if count == 0 else "0" if count == 1 else f"0-{count - 1}"
    noun = "partition" if count == 1 else "partitions"
    return f"topic {topic!r} has {count} {noun} ({span})"


def out_of_range(topic: str, partition: int, count: int) -> str:
    """The message for partition `partition` of a topic with `count` partitions."""
    return f"partition {partition} out of range: {partitions_of(topic, count)}"


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    id: int
    host: str
    port: int
    rack: str | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class PartitionMeta:
    partition: int
    leader: int | None
    leader_term: int
    replicas: tuple[int, ...]
    error: ErrorCode = ErrorCode.NONE


@dataclass(frozen=True, slots=True)
class TopicMeta:
    name: str
    partitions: tuple[PartitionMeta, ...]
    """Indexed by partition number."""
    replication_factor: int = 0
    config: Mapping[str, str] = field(default_factory=dict)


class MetadataCache:
    """Brokers, controller and topic layout, merged from METADATA answers (pure)."""

    def __init__(self) -> None:
        self.cluster_id: str | None = None
        self.controller: int | None = None
        self.brokers: dict[int, BrokerAddress] = {}
        self.topics: dict[str, TopicMeta] = {}
        self.version = 0
        """Incremented by every update."""

    def update(self, response: MetadataResponse) -> None:
        """Merge an answer; never take a leader of an older term than the cached one."""
        self.version += 1
        if response.cluster_id is not None:
            self.cluster_id = response.cluster_id
        self.controller = response.controller
        if response.brokers:
            self.brokers = {
                b.id: BrokerAddress(b.id, b.host, b.port, b.rack) for b in response.brokers
            }
        for topic in response.topics:
            if topic.error is ErrorCode.UNKNOWN_TOPIC_OR_PARTITION:
                self.topics.pop(topic.name, None)
                continue
            if topic.error is not ErrorCode.NONE:
                continue
            old = self.topics.get(topic.name)
            previous = {p.partition: p for p in old.partitions} if old is not None else {}
            merged: list[PartitionMeta] = []
            for p in sorted(topic.partitions, key=lambda p: p.partition):
                new = PartitionMeta(p.partition, p.leader, p.leader_term, p.replicas, p.error)
                cached = previous.get(p.partition)
                merged.append(new if cached is None else _merge(cached, new))
            if [p.partition for p in merged] != list(range(len(merged))):
                continue  # not a dense 0..n-1 layout: ignore a malformed answer
            self.topics[topic.name] = TopicMeta(
                topic.name, tuple(merged), topic.replication_factor, dict(topic.config)
            )

    def learn_broker(self, broker_id: int, host: str, port: int) -> None:
        """A broker named outside a METADATA answer (FIND_COORDINATOR): keep its address,
        and its rack if the cache knew it at that address."""
        known = self.brokers.get(broker_id)
        if known is None or (known.host, known.port) != (host, port):
            self.brokers[broker_id] = BrokerAddress(broker_id, host, port)

    def invalidate(self, tp: TopicPartition) -> None:
        """The leader answered NOT_LEADER: forget it, keeping its term as the floor."""
        topic = self.topics.get(tp[0])
        if topic is None or not 0 <= tp[1] < len(topic.partitions):
            return
        p = topic.partitions[tp[1]]
        if p.leader is None:
            return
        parts = list(topic.partitions)
        parts[tp[1]] = PartitionMeta(p.partition, None, p.leader_term, p.replicas, p.error)
        self.topics[tp[0]] = TopicMeta(
            topic.name, tuple(parts), topic.replication_factor, topic.config
        )

    def hint(self, tp: TopicPartition, leader: int | None, term: int) -> bool:
        """A leader named in a NOT_LEADER answer: taken under the metadata rule (never an
        older term; within the cached term only in place of "no leader"). Whether taken."""
        p = self.partition(tp)
        if p is None or leader is None or leader not in self.brokers:
            return False
        if term < p.leader_term or (term == p.leader_term and p.leader is not None):
            return False
        topic = self.topics[tp[0]]
        parts = list(topic.partitions)
        parts[tp[1]] = PartitionMeta(p.partition, leader, term, p.replicas, p.error)
        self.topics[tp[0]] = TopicMeta(
            topic.name, tuple(parts), topic.replication_factor, topic.config
        )
        self.version += 1
        return True

    def partition_count(self, topic: str) -> int | None:
        t = self.topics.get(topic)
        return None if t is None or not t.partitions else len(t.partitions)

    def leader_for(self, tp: TopicPartition) -> int | None:
        """The leader's broker id, if known and its address is known."""
        t = self.topics.get(tp[0])
        if t is None or not 0 <= tp[1] < len(t.partitions):
            return None
        leader = t.partitions[tp[1]].leader
        return leader if leader is not None and leader in self.brokers else None

    def partition(self, tp: TopicPartition) -> PartitionMeta | None:
        t = self.topics.get(tp[0])
        if t is None or not 0 <= tp[1] < len(t.partitions):
            return None
        return t.partitions[tp[1]]


def _merge(cached: PartitionMeta, new: PartitionMeta) -> PartitionMeta:
    if new.leader_term < cached.leader_term:
        return PartitionMeta(
            cached.partition, cached.leader, cached.leader_term, new.replicas, cached.error
        )
    if new.leader_term == cached.leader_term and new.leader is None and cached.leader is not None:
        return PartitionMeta(cached.partition, cached.leader, cached.leader_term, new.replicas)
    return new
