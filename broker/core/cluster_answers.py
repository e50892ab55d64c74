"""Answers a broker gives at once from its own state: METADATA and DESCRIBE_CLUSTER.

Any broker answers both from its copy of the metadata log and its own groups, so a client may
ask any broker; leaders and terms come from `ClusterView` (a newer term wins, a leader counts
only once it serves).
"""

from __future__ import annotations

from broker.core.node import BrokerNode
from broker.wire.errors import ErrorCode
from broker.wire.messages import (
    BrokerInfo,
    ClusterBroker,
    ClusterPartition,
    DescribeClusterResponse,
    MetadataRequest,
    MetadataResponse,
    PartitionInfo,
)
from broker.wire.messages import TopicInfo as WireTopicInfo


def metadata_response(node: BrokerNode, req: MetadataRequest) -> MetadataResponse:
    """Brokers, and each topic asked for (all when None) with every partition's leader and
    term as this broker knows them (`ClusterView`)."""
    meta = node.meta
    brokers = tuple(
        BrokerInfo(id=b.id, host=b.host, port=b.port, rack=b.rack)
        for _, b in sorted(meta.brokers.items())
    )
    names = sorted(meta.topics) if req.topics is None else list(req.topics)
    topics = []
    for name in names:
        t = meta.topics.get(name)
        if t is None:
            topics.append(
                WireTopicInfo(
                    name=name,
                    error=ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                    partitions=(),
                    replication_factor=0,
                    config={},
                )
            )
            continue
        parts = []
        for pi in t.partitions:
            v = node.partition_view(pi)
            err = ErrorCode.NONE if v.leader is not None else ErrorCode.LEADER_NOT_AVAILABLE
            parts.append(
                PartitionInfo(
                    partition=pi.partition,
                    leader=v.leader,
                    leader_term=v.leader_term,
                    replicas=v.replicas,
                    error=err,
                )
            )
        topics.append(
            WireTopicInfo(
                name=name,
                error=ErrorCode.NONE,
                partitions=tuple(parts),
                replication_factor=t.replication_factor,
                config=dict(t.config),
            )
        )
    return MetadataResponse(
        cluster_id=meta.cluster_id,
        controller=node.controller,
        brokers=brokers,
        topics=tuple(topics),
    )


def describe_cluster_response(node: BrokerNode) -> DescribeClusterResponse:
    """Brokers (sorted by id) with the liveness the metadata log records, and every
    partition (sorted by topic, partition) with its leader, replicas and replication
    progress as `BrokerNode.describe_partitions` knows them. Any broker answers from its
    own copy of the metadata log; a non-controller knows the caught-up replicas and commit
    lag only of the groups it leads (elsewhere: none and -1)."""
    meta = node.meta
    brokers = tuple(
        ClusterBroker(
            id=b.id,
            host=b.host,
            port=b.port,
            rack=b.rack,
            alive=meta.alive.get(b.id, False),
        )
        for _, b in sorted(meta.brokers.items())
    )
    statuses = sorted(node.describe_partitions(), key=lambda p: (p.topic, p.view.partition))
    partitions = tuple(
        ClusterPartition(
            topic=p.topic,
            partition=p.view.partition,
            leader=p.view.leader,
            leader_term=p.view.leader_term,
            replicas=p.view.replicas,
            caught_up=p.caught_up,
            commit_lag=p.commit_lag,
        )
        for p in statuses
    )
    return DescribeClusterResponse(
        cluster_id=meta.cluster_id,
        controller=node.controller,
        brokers=brokers,
        partitions=partitions,
    )
