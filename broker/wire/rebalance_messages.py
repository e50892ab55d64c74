"""Typed bodies of the rebalancing APIs (the same rules as `messages.py`). Only the controller
answers them (any other broker: NOT_CONTROLLER).

- REBALANCE: plan, execute or cancel partition reassignments. `execute` False answers the
  plan only (nothing changes); True proposes every move at once and answers once the metadata
  log holds them (the replicas then move in the background, one Raft membership change at a
  time per partition). `drain` brokers are emptied and get no new replicas until `undrain`;
  `exclude` leaves brokers out of this plan only. `throttle_bytes_per_s`: the catch-up rate
  of every broker while replicas move (None: unchanged; 0: each broker's own setting).
  `cancel` sends every reassignment in progress back to its partition's replicas (only the
  throttle applies with it).
- DESCRIBE_REASSIGNMENTS: the partitions moving, with the replicas their leaders last
  reported caught up and their commit lag, the brokers draining and the throttle.
- ALTER_TOPIC: more partitions (`partitions`: the new count, None: unchanged; never fewer)
  and setting changes (`set_config`, `delete_config`: back to the default), answered once
  applied and every new partition has a leader, with the topic's partition count.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from broker.wire import schema as s
from broker.wire.api import ApiKey
from broker.wire.limits import DEFAULT_LIMITS, INT64_MAX, Limits


def _broker_ids(value: object, path: str, limits: Limits) -> tuple[int, ...]:
    ids = tuple(s.int32(v, s.item(path, i), 0) for i, v in enumerate(s.array(value, path, limits)))
    s.unique(ids, path, "broker")
    return ids


def _counts(value: object, path: str, limits: Limits) -> tuple[tuple[int, int], ...]:
    out = []
    for i, v in enumerate(s.array(value, path, limits)):
        pair = s.array(v, s.item(path, i), limits)
        if len(pair) != 2:
            s.fail(s.item(path, i), "expected [broker, count]")
        out.append((s.int32(pair[0], s.item(path, i), 0), s.int32(pair[1], s.item(path, i), 0)))
    s.unique([b for b, _ in out], path, "broker")
    return tuple(out)


_REBALANCE_REQUEST = frozenset(
    {"execute", "cancel", "exclude", "drain", "undrain", "throttle_bytes_per_s"}
)


@dataclass(frozen=True, slots=True, kw_only=True)
class RebalanceRequest:
    API_KEY: ClassVar[ApiKey] = ApiKey.REBALANCE
    execute: bool = False
    cancel: bool = False
    exclude: tuple[int, ...] = ()
    drain: tuple[int, ...] = ()
    undrain: tuple[int, ...] = ()
    throttle_bytes_per_s: int | None = None

    def to_body(self, version: int) -> dict[str, object]:
        return {
            "execute": self.execute,
            "cancel": self.cancel,
            "exclude": list(self.exclude),
            "drain": list(self.drain),
            "undrain": list(self.undrain),
            "throttle_bytes_per_s": self.throttle_bytes_per_s,
        }

    @classmethod
    def from_body(
        cls, body: object, version: int, limits: Limits = DEFAULT_LIMITS
    ) -> RebalanceRequest:
        b = s.fields(body, "", _REBALANCE_REQUEST)
        throttle = b["throttle_bytes_per_s"]
        return cls(
            execute=s.boolean(b["execute"], "execute"),
            cancel=s.boolean(b["cancel"], "cancel"),
            exclude=_broker_ids(b["exclude"], "exclude", limits),
            drain=_broker_ids(b["drain"], "drain", limits),
            undrain=_broker_ids(b["undrain"], "undrain", limits),
            throttle_bytes_per_s=(
                None
                if throttle is None
                else s.integer(throttle, "throttle_bytes_per_s", 0, INT64_MAX)
            ),
        )


_MOVE = frozenset({"topic", "partition", "old", "new"})


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplicaMove:
    """A partition's replica list before and after (first: the preferred leader)."""

    topic: str
    partition: int
    old: tuple[int, ...]
    new: tuple[int, ...]

    def to_wire(self) -> dict[str, object]:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "old": list(self.old),
            "new": list(self.new),
        }

    @classmethod
    def from_wire(cls, value: object, path: str, limits: Limits) -> ReplicaMove:
        b = s.fields(value, path, _MOVE)
        return cls(
            topic=s.topic(b["topic"], s.at(path, "topic"), limits),
            partition=s.partition(b["partition"], s.at(path, "partition")),
            old=_broker_ids(b["old"], s.at(path, "old"), limits),
            new=_broker_ids(b["new"], s.at(path, "new"), limits),
        )


_REBALANCE_RESPONSE = frozenset({"moves", "replica_counts", "leader_counts"})


@dataclass(frozen=True, slots=True, kw_only=True)
class RebalanceResponse:
    """`moves`: the partitions this request moves (sorted by topic, partition); the counts:
    replicas and preferred leaders per broker once every reassignment is done."""

    API_KEY: ClassVar[ApiKey] = ApiKey.REBALANCE
    moves: tuple[ReplicaMove, ...]
    replica_counts: tuple[tuple[int, int], ...]
    leader_counts: tuple[tuple[int, int], ...]

    def to_body(self, version: int) -> dict[str, object]:
        return {
            "moves": [m.to_wire() for m in self.moves],
            "replica_counts": [list(c) for c in self.replica_counts],
            "leader_counts": [list(c) for c in self.leader_counts],
        }

    @classmethod
    def from_body(
        cls, body: object, version: int, limits: Limits = DEFAULT_LIMITS
    ) -> RebalanceResponse:
        b = s.fields(body, "", _REBALANCE_RESPONSE)
        moves = tuple(
            ReplicaMove.from_wire(v, s.item("moves", i), limits)
            for i, v in enumerate(s.array(b["moves"], "moves", limits))
        )
        s.unique([(m.topic, m.partition) for m in moves], "moves", "partition")
        return cls(
            moves=moves,
            replica_counts=_counts(b["replica_counts"], "replica_counts", limits),
            leader_counts=_counts(b["leader_counts"], "leader_counts", limits),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class DescribeReassignmentsRequest:
    API_KEY: ClassVar[ApiKey] = ApiKey.DESCRIBE_REASSIGNMENTS

    def to_body(self, version: int) -> dict[str, object]:
        return {}

    @classmethod
    def from_body(
        cls, body: object, version: int, limits: Limits = DEFAULT_LIMITS
    ) -> DescribeReassignmentsRequest:
        s.fields(body, "", frozenset())
        return cls()


_REASSIGNMENT = frozenset({"topic", "partition", "replicas", "target", "caught_up", "lag"})


@dataclass(frozen=True, slots=True, kw_only=True)
class PartitionReassignment:
    """A partition moving from `replicas` to `target`; `caught_up`: the replicas its leader
    last reported holding every committed entry; `lag`: the commit lag of its slowest
    replica (-1: not known yet)."""

    topic: str
    partition: int
    replicas: tuple[int, ...]
    target: tuple[int, ...]
    caught_up: tuple[int, ...]
    lag: int

    def to_wire(self) -> dict[str, object]:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "replicas": list(self.replicas),
            "target": list(self.target),
            "caught_up": list(self.caught_up),
            "lag": self.lag,
        }

    @classmethod
    def from_wire(cls, value: object, path: str, limits: Limits) -> PartitionReassignment:
        b = s.fields(value, path, _REASSIGNMENT)
        return cls(
            topic=s.topic(b["topic"], s.at(path, "topic"), limits),
            partition=s.partition(b["partition"], s.at(path, "partition")),
            replicas=_broker_ids(b["replicas"], s.at(path, "replicas"), limits),
            target=_broker_ids(b["target"], s.at(path, "target"), limits),
            caught_up=_broker_ids(b["caught_up"], s.at(path, "caught_up"), limits),
            lag=s.integer(b["lag"], s.at(path, "lag"), -1, INT64_MAX),
        )


_DESCRIBE_RESPONSE = frozenset({"reassignments", "draining", "throttle_bytes_per_s"})


@dataclass(frozen=True, slots=True, kw_only=True)
class DescribeReassignmentsResponse:
    API_KEY: ClassVar[ApiKey] = ApiKey.DESCRIBE_REASSIGNMENTS
    reassignments: tuple[PartitionReassignment, ...]
    draining: tuple[int, ...]
    throttle_bytes_per_s: int
    """0: each broker's own catch-up setting."""

    def to_body(self, version: int) -> dict[str, object]:
        return {
            "reassignments": [r.to_wire() for r in self.reassignments],
            "draining": list(self.draining),
            "throttle_bytes_per_s": self.throttle_bytes_per_s,
        }

    @classmethod
    def from_body(
        cls, body: object, version: int, limits: Limits = DEFAULT_LIMITS
    ) -> DescribeReassignmentsResponse:
        b = s.fields(body, "", _DESCRIBE_RESPONSE)
        items = tuple(
            PartitionReassignment.from_wire(v, s.item("reassignments", i), limits)
            for i, v in enumerate(s.array(b["reassignments"], "reassignments", limits))
        )
        s.unique([(r.topic, r.partition) for r in items], "reassignments", "partition")
        return cls(
            reassignments=items,
            draining=_broker_ids(b["draining"], "draining", limits),
            throttle_bytes_per_s=s.integer(
                b["throttle_bytes_per_s"], "throttle_bytes_per_s", 0, INT64_MAX
            ),
        )


_ALTER_TOPIC_REQUEST = frozenset({"name", "partitions", "set_config", "delete_config"})


@dataclass(frozen=True, slots=True, kw_only=True)
class AlterTopicRequest:
    API_KEY: ClassVar[ApiKey] = ApiKey.ALTER_TOPIC
    name: str
    partitions: int | None = None
    set_config: dict[str, str] = field(default_factory=dict)
    delete_config: tuple[str, ...] = ()

    def to_body(self, version: int) -> dict[str, object]:
        return {
            "name": self.name,
            "partitions": self.partitions,
            "set_config": dict(self.set_config),
            "delete_config": list(self.delete_config),
        }

    @classmethod
    def from_body(
        cls, body: object, version: int, limits: Limits = DEFAULT_LIMITS
    ) -> AlterTopicRequest:
        b = s.fields(body, "", _ALTER_TOPIC_REQUEST)
        deleted = tuple(
            s.nonempty_text(v, s.item("delete_config", i))
            for i, v in enumerate(s.array(b["delete_config"], "delete_config", limits))
        )
        s.unique(deleted, "delete_config", "key")
        return cls(
            name=s.topic(b["name"], "name", limits),
            partitions=s.opt_int32(b["partitions"], "partitions", 1),
            set_config=s.text_map(b["set_config"], "set_config", limits),
            delete_config=deleted,
        )


_ALTER_TOPIC_RESPONSE = frozenset({"partitions"})


@dataclass(frozen=True, slots=True, kw_only=True)
class AlterTopicResponse:
    API_KEY: ClassVar[ApiKey] = ApiKey.ALTER_TOPIC
    partitions: int

    def to_body(self, version: int) -> dict[str, object]:
        return {"partitions": self.partitions}

    @classmethod
    def from_body(
        cls, body: object, version: int, limits: Limits = DEFAULT_LIMITS
    ) -> AlterTopicResponse:
        b = s.fields(body, "", _ALTER_TOPIC_RESPONSE)
        return cls(partitions=s.int32(b["partitions"], "partitions", 1))


__all__ = [
    "AlterTopicRequest",
    "AlterTopicResponse",
    "DescribeReassignmentsRequest",
    "DescribeReassignmentsResponse",
    "PartitionReassignment",
    "RebalanceRequest",
    "RebalanceResponse",
    "ReplicaMove",
]
