"""Sluice client library: Producer, Consumer and Admin (async, Trio), and `consumers.blocking`
(the same names without `await`, for plain scripts).

    from consumers import Producer, Consumer, Admin

    async with Admin("127.0.0.1:9092") as admin:
        await admin.create_topic("events", partitions=4)
    async with Producer("127.0.0.1:9092") as p:
        md = await p.send_and_wait("events", b"hello", key=b"user-1")
    async with Consumer("127.0.0.1:9092") as c:
        c.assign([("events", md.partition)])
        c.seek(("events", md.partition), md.offset)
        record = (await c.poll(timeout=5))[0]
    async with Consumer("127.0.0.1:9092", group_id="billing") as c:
        c.subscribe(["events"], on_revoked=lambda tps: print("revoked", tps))
        async for record in c:  # positions are committed every auto_commit_interval_ms
            ...

Every error is a `consumers.errors.SluiceError` (typed per broker error code).
"""

from consumers import errors
from consumers.admin import (
    Admin,
    BrokerDescription,
    ClusterDescription,
    LeaderElection,
    LeaderMove,
    PartitionDescription,
    PartitionStatus,
    TopicDescription,
)
from consumers.consumer import CommitCallback, Consumer, ConsumerRecord, RebalanceCallback
from consumers.errors import (
    BufferFull,
    ClientClosedError,
    CorruptBatch,
    SluiceError,
    TransactionAbortedError,
    TransactionalProducerFencedError,
    TransactionError,
    TransactionTimedOutError,
    error_for,
)
from consumers.producer import Delivery, GroupMetadata, Producer, RecordMetadata
from consumers.rebalance import Reassignment, ReassignmentStatus, RebalanceResult, ReplicaMove

__all__ = [
    "Admin",
    "BrokerDescription",
    "BufferFull",
    "ClientClosedError",
    "ClusterDescription",
    "CommitCallback",
    "Consumer",
    "ConsumerRecord",
    "CorruptBatch",
    "Delivery",
    "GroupMetadata",
    "LeaderElection",
    "LeaderMove",
    "PartitionDescription",
    "PartitionStatus",
    "Producer",
    "Reassignment",
    "ReassignmentStatus",
    "RebalanceCallback",
    "RebalanceResult",
    "RecordMetadata",
    "ReplicaMove",
    "SluiceError",
    "TopicDescription",
    "TransactionAbortedError",
    "TransactionError",
    "TransactionTimedOutError",
    "TransactionalProducerFencedError",
    "error_for",
    "errors",
]
