"""The controller's state machine: the cluster's brokers, topics, placement and producer ids.

Theory of operation
-------------------
The metadata Raft group's log holds commands (CBOR maps with an "op" key). Every broker
applies the same commands in the same order and so holds the same `MetadataMachine`: any
broker can answer a metadata request from its own copy. Decisions that need a choice are made
*at apply*, from the state, never by the proposer: topic placement (which brokers hold which
partition, spread by current load and racks), the Raft group id of each partition (a counter)
and producer-id blocks (another counter). So a command proposed twice, or replayed after a
restart, cannot give two answers.

Commands: init (the cluster id, first entry of a new cluster), register_broker, set_alive
(the controller's lease verdict on a broker), set_leaders (partition leaders reported by the
brokers that lead them, with their Raft terms: a report of an older term never replaces a
newer one), create_topic, alter_topic (more partitions, settings), delete_topic,
alloc_producer_ids, and the reassignment commands:
reassign (new target replica lists, brokers to drain or undrain, the catch-up throttle),
reassign_done (a partition's Raft configuration reached its target) and reassign_cancel.
Each apply returns a `MetaResult` (an error code and, where there is one, a value) for the
request waiting on that entry.

Reassignment (broker/core/reassignment.py). A partition's `replicas` change only when its
reassignment completes: while one runs, `target` holds the replica list it moves to, and
every broker of `replicas` or `target` hosts the group. reassign_done {group, replicas} sets
`replicas` to `target` only if `target` still equals `replicas` given (a stale report is
ignored); reassign_cancel sets `target` back to `replicas` (the group's leader then steps
the configuration back). Draining brokers get no replicas from placement.

Snapshots (KRaft's metadata snapshots): `state_bytes()` is the whole state at
`applied_index`; `restore()` replaces the state with one, after which only the commands
after that index are applied. A restored machine equals one that applied every command up to
the same index (same dict orders too, so placement cannot differ).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from broker.core import metadata_moves as moves
from broker.core.machine import NOTHING_APPLIED, Applied
from broker.core.metadata_moves import PartitionInfo as PartitionInfo
from broker.core.metadata_moves import Reassigned
from broker.core.raft import Entry, EntryKind
from broker.wire.cbor import decode as cbor_decode
from broker.wire.cbor import encode as cbor_encode
from broker.wire.errors import ErrorCode, WireError
from broker.wire.limits import MAX_FRAME_BYTES_CEILING, Limits, topic_name_problem

METADATA_GROUP = 0
"""The metadata Raft group's id; partition groups are numbered from 1 at apply."""

PRODUCER_ID_BLOCK = 1000
STATE_LIMITS = Limits(
    max_frame_bytes=MAX_FRAME_BYTES_CEILING,
    max_array_items=10_000_000,
    max_frame_items=100_000_000,
)
"""Decoding our own snapshots: trusted, but still bounded."""
INTERNAL_PREFIX = "__"

TOPIC_CONFIG_KEYS: dict[str, str] = {
    "max.message.bytes": "int>=1",
    "retention.ms": "int>=-1",
    "retention.bytes": "int>=-1",
    "cleanup.policy": "delete|compact",
    "delete.retention.ms": "int>=0",
}
"""The keys a topic's configuration may hold, and the syntax of their values."""
NOT_YET_ENFORCED: dict[str, str] = {}
"""Keys whose only value the broker accepts today is the one it enforces (a new topic with any
other value is refused): none now; retention.ms and retention.bytes are enforced by
retention.py, cleanup.policy=compact and delete.retention.ms by compaction.py. The metadata
log still applies any syntactically valid value, so a log written before is replayed
unchanged."""
DEFAULT_TOPIC_CONFIG: dict[str, str] = {
    "max.message.bytes": str(1 << 20),
    "retention.ms": "-1",
    "retention.bytes": "-1",
    "cleanup.policy": "delete",
    "delete.retention.ms": "86400000",
}


@dataclass(frozen=True, slots=True)
class BrokerInfo:
    id: int
    incarnation: int
    host: str
    port: int
    peer_host: str
    peer_port: int
    rack: str | None


@dataclass(frozen=True, slots=True)
class TopicInfo:
    name: str
    partitions: tuple[PartitionInfo, ...]
    replication_factor: int
    config: dict[str, str]

    def setting(self, key: str) -> str:
        return self.config.get(key, DEFAULT_TOPIC_CONFIG[key])


class ProducerIdBlock(NamedTuple):
    """Producer ids [start, start + size), allocated to `broker`."""

    broker: int
    start: int
    size: int


@dataclass(frozen=True, slots=True)
class MetaResult:
    error: ErrorCode = ErrorCode.NONE
    message: str | None = None
    value: Any = None


def validate_topic_config(config: dict[str, str]) -> str | None:
    """For a new topic: an error message for the first bad key or value, or for a value the
    broker would not enforce (NOT_YET_ENFORCED), or None."""
    bad = validate_topic_config_syntax(config)
    if bad is not None:
        return bad
    for key, value in config.items():
        enforced = NOT_YET_ENFORCED.get(key)
        given = str(int(value)) if TOPIC_CONFIG_KEYS[key].startswith("int") else value
        if enforced is not None and given != enforced:
            return f"{key}={value!r} is not enforced yet: only {enforced!r} is accepted"
    return None


def validate_topic_config_syntax(config: dict[str, str]) -> str | None:
    """An error message for the first unknown key or malformed value, or None (what the
    metadata machine checks at apply)."""
    for key, value in config.items():
        rule = TOPIC_CONFIG_KEYS.get(key)
        if rule is None:
            return f"unknown topic config {key!r} (known: {', '.join(sorted(TOPIC_CONFIG_KEYS))})"
        if rule.startswith("int"):
            floor = int(rule[len("int>=") :])
            try:
                n = int(value)
            except ValueError:
                return f"{key} must be an integer, got {value!r}"
            if n < floor:
                return f"{key} must be >= {floor}, got {n}"
        elif value not in rule.split("|"):
            return f"{key} must be one of {rule.replace('|', ', ')}, got {value!r}"
    return None


def validate_topic_name(name: str) -> str | None:
    """Why `name` is not a valid topic name (the wire's rule and message), or None."""
    return topic_name_problem(name)


def internal_name_error(name: str) -> str:
    return (
        f"topic {name!r}: names starting with {INTERNAL_PREFIX!r} are reserved for the "
        "broker's internal topics"
    )


# -- commands ---------------------------------------------------------------------------------


def cmd_init(cluster_id: str) -> bytes:
    return cbor_encode({"op": "init", "cluster_id": cluster_id})


def cmd_register_broker(b: BrokerInfo) -> bytes:
    return cbor_encode(
        {
            "op": "register_broker",
            "id": b.id,
            "incarnation": b.incarnation,
            "host": b.host,
            "port": b.port,
            "peer_host": b.peer_host,
            "peer_port": b.peer_port,
            "rack": b.rack,
        }
    )


def cmd_set_alive(broker_id: int, alive: bool) -> bytes:
    return cbor_encode({"op": "set_alive", "broker": broker_id, "alive": alive})


def cmd_set_leaders(reports: list[tuple[int, int, int]]) -> bytes:
    """(group id, term, leader node id) per partition group."""
    return cbor_encode({"op": "set_leaders", "leaders": [list(r) for r in reports]})


def cmd_create_topic(
    name: str,
    partitions: int,
    replication_factor: int,
    config: dict[str, str],
    *,
    internal: bool = False,
) -> bytes:
    """`internal`: a `__` topic the controller creates on first need; its replication
    factor is capped at the live brokers at apply (a user topic's is refused instead)."""
    cmd: dict[str, Any] = {
        "op": "create_topic",
        "name": name,
        "partitions": partitions,
        "replication_factor": replication_factor,
        "config": dict(config),
    }
    if internal:
        cmd["internal"] = True
    return cbor_encode(cmd)


def cmd_delete_topic(name: str) -> bytes:
    return cbor_encode({"op": "delete_topic", "name": name})


def cmd_alter_topic(
    name: str, partitions: int | None, set_config: dict[str, str], delete_config: list[str]
) -> bytes:
    """More partitions (None: as many), settings to set and to remove (back to defaults)."""
    return cbor_encode(
        {
            "op": "alter_topic",
            "name": name,
            "partitions": partitions,
            "set": dict(set_config),
            "delete": list(delete_config),
        }
    )


def cmd_alloc_producer_ids(broker_id: int) -> bytes:
    return cbor_encode({"op": "alloc_producer_ids", "broker": broker_id})


@dataclass
class MetadataMachine:
    cluster_id: str | None = None
    brokers: dict[int, BrokerInfo] = field(default_factory=dict)
    topics: dict[str, TopicInfo] = field(default_factory=dict)
    alive: dict[int, bool] = field(default_factory=dict)
    leaders: dict[int, tuple[int, int]] = field(default_factory=dict)
    """Partition group id -> (term, leader node id), as last reported."""
    next_group_id: int = METADATA_GROUP + 1
    next_producer_id: int = 0
    draining: set[int] = field(default_factory=set)
    """Brokers being drained: placement and rebalancing give them no replicas."""
    throttle: int = 0
    """The catch-up throttle for every broker, bytes/s (0: each broker's own setting)."""
    applied_index: int = 0
    limits: Limits = field(default_factory=Limits)

    def apply(self, index: int, data: bytes) -> MetaResult:
        """Apply one committed command. Bad commands are rejected, never half-applied."""
        assert index > self.applied_index, "commands are applied once, in order"
        self.applied_index = index
        try:
            cmd = cbor_decode(data, self.limits)
        except WireError as e:
            return MetaResult(ErrorCode.INVALID_REQUEST, f"undecodable command: {e}")
        if not isinstance(cmd, dict):
            return MetaResult(ErrorCode.INVALID_REQUEST, "command is not a map")
        op = cmd.get("op")
        handler = _OPS.get(op) if isinstance(op, str) else None
        if handler is None:
            return MetaResult(ErrorCode.INVALID_REQUEST, f"unknown command {op!r}")
        try:
            return handler(self, cmd)
        except (KeyError, TypeError, ValueError) as e:
            return MetaResult(ErrorCode.INVALID_REQUEST, f"malformed {op}: {e!r}")

    # -- the StateMachine protocol (broker/core/machine.py) ---------------------------------

    def apply_entry(self, entry: Entry) -> Applied:
        """No-ops and configuration entries change nothing but the applied index."""
        if entry.kind != EntryKind.NORMAL or not entry.data:
            self.applied_index = entry.index
            return NOTHING_APPLIED
        res = self.apply(entry.index, entry.data)
        return Applied(res.error, res.message, res.value)

    def take_writes(self) -> None:
        """Nothing but the log and its snapshots: a restart replays after the snapshot."""
        return None

    def snapshot(self) -> bytes:
        return self.state_bytes()

    def restore_snapshot(self, data: bytes) -> None:
        self.restore(data)

    def load(self, state: bytes | None, records: Iterable[tuple[int, bytes]]) -> None:
        return None

    def leader_tick(self) -> list[bytes]:
        return []

    # -- handlers ---------------------------------------------------------------------------

    def _init(self, cmd: dict[str, Any]) -> MetaResult:
        cid = cmd["cluster_id"]
        if not isinstance(cid, str) or not cid:
            return MetaResult(ErrorCode.INVALID_REQUEST, "init: cluster_id must be text")
        if self.cluster_id is None:
            self.cluster_id = cid
        return MetaResult(value=self.cluster_id)

    def _register_broker(self, cmd: dict[str, Any]) -> MetaResult:
        b = BrokerInfo(
            id=int(cmd["id"]),
            incarnation=int(cmd["incarnation"]),
            host=str(cmd["host"]),
            port=int(cmd["port"]),
            peer_host=str(cmd["peer_host"]),
            peer_port=int(cmd["peer_port"]),
            rack=None if cmd["rack"] is None else str(cmd["rack"]),
        )
        self.brokers[b.id] = b
        self.alive[b.id] = True
        return MetaResult(value=b)

    def _set_alive(self, cmd: dict[str, Any]) -> MetaResult:
        broker, alive = int(cmd["broker"]), cmd["alive"]
        if not isinstance(alive, bool):
            return MetaResult(ErrorCode.INVALID_REQUEST, "set_alive: alive must be a bool")
        if broker not in self.brokers:
            return MetaResult(ErrorCode.INVALID_REQUEST, f"set_alive: no broker {broker}")
        self.alive[broker] = alive
        return MetaResult()

    def _set_leaders(self, cmd: dict[str, Any]) -> MetaResult:
        reports = [(int(g), int(t), int(ld)) for g, t, ld in cmd["leaders"]]
        for g, t, ld in reports:
            known = self.leaders.get(g)
            if known is None or t > known[0]:
                self.leaders[g] = (t, ld)
        return MetaResult()

    def live_brokers(self) -> list[int]:
        return sorted(b for b in self.brokers if self.alive.get(b, False))

    def placeable(self) -> list[int]:
        """The brokers placement may give new replicas: live and not draining."""
        return [b for b in self.live_brokers() if b not in self.draining]

    def _too_few_live(self, rf: int, live: int) -> str:
        """Why `rf` replicas cannot be placed now: how many brokers are alive (retriable)."""
        alive = f"{live} of the {len(self.brokers)} in the cluster {'is' if live == 1 else 'are'}"
        draining = " alive and not draining" if self.draining else " alive"
        return f"replication factor {rf} needs {rf} live brokers; {alive}{draining}"

    def _create_topic(self, cmd: dict[str, Any]) -> MetaResult:
        name = str(cmd["name"])
        partitions = int(cmd["partitions"])
        rf = int(cmd["replication_factor"])
        config = {str(k): str(v) for k, v in dict(cmd["config"]).items()}
        if name in self.topics:
            return MetaResult(ErrorCode.TOPIC_ALREADY_EXISTS, f"topic {name!r} already exists")
        bad = validate_topic_name(name)
        if bad is not None:
            return MetaResult(ErrorCode.INVALID_TOPIC, bad)
        internal = cmd.get("internal") is True
        if internal != name.startswith(INTERNAL_PREFIX):
            return MetaResult(ErrorCode.INVALID_TOPIC, internal_name_error(name))
        if not 1 <= partitions <= 10_000:
            return MetaResult(ErrorCode.INVALID_PARTITIONS, "partitions must be 1..10000")
        if rf < 1:
            return MetaResult(ErrorCode.INVALID_REPLICATION_FACTOR, "replication factor >= 1")
        live = self.placeable()
        if internal:
            rf = max(1, min(rf, len(live)))
        if rf > len(live):
            return MetaResult(ErrorCode.NOT_ENOUGH_REPLICAS, self._too_few_live(rf, len(live)))
        bad = validate_topic_config_syntax(config)
        if bad is not None:
            return MetaResult(ErrorCode.INVALID_CONFIG, bad)
        infos = []
        for p, replicas in enumerate(self._place(partitions, rf)):
            infos.append(PartitionInfo(p, self.next_group_id, replicas))
            self.next_group_id += 1
        topic = TopicInfo(name, tuple(infos), rf, config)
        self.topics[name] = topic
        return MetaResult(value=topic)

    def _alter_topic(self, cmd: dict[str, Any]) -> MetaResult:
        """New partitions are placed as a create places them (their group ids from the same
        counter); a partition count is never lowered; settings are checked as at create."""
        name = str(cmd["name"])
        t = self.topics.get(name)
        if t is None:
            return MetaResult(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"no topic {name!r}")
        if name.startswith(INTERNAL_PREFIX):
            return MetaResult(ErrorCode.INVALID_TOPIC, f"topic {name!r} is internal")
        config = dict(t.config)
        config.update({str(k): str(v) for k, v in dict(cmd["set"]).items()})
        for key in cmd["delete"]:
            config.pop(str(key), None)
        bad = validate_topic_config_syntax(config)
        if bad is not None:
            return MetaResult(ErrorCode.INVALID_CONFIG, bad)
        parts = list(t.partitions)
        wanted = cmd["partitions"]
        if wanted is not None:
            n = int(wanted)
            if not len(parts) <= n <= 10_000:
                why = f"partitions must be {len(parts)}..10000 (a count is never lowered)"
                return MetaResult(ErrorCode.INVALID_PARTITIONS, why)
            live = len(self.placeable())
            if n > len(parts) and t.replication_factor > live:
                why = self._too_few_live(t.replication_factor, live)
                return MetaResult(ErrorCode.NOT_ENOUGH_REPLICAS, why)
            for replicas in self._place(n - len(parts), t.replication_factor):
                parts.append(PartitionInfo(len(parts), self.next_group_id, replicas))
                self.next_group_id += 1
        topic = TopicInfo(name, tuple(parts), t.replication_factor, config)
        self.topics[name] = topic
        return MetaResult(value=topic)

    def _delete_topic(self, cmd: dict[str, Any]) -> MetaResult:
        name = str(cmd["name"])
        if name.startswith(INTERNAL_PREFIX):
            return MetaResult(
                ErrorCode.INVALID_TOPIC, f"topic {name!r} is internal: it cannot be deleted"
            )
        topic = self.topics.pop(name, None)
        if topic is None:
            return MetaResult(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"no topic {name!r}")
        for pi in topic.partitions:
            self.leaders.pop(pi.group_id, None)
        return MetaResult(value=topic)

    def _alloc_producer_ids(self, cmd: dict[str, Any]) -> MetaResult:
        broker = int(cmd["broker"])  # validated before anything changes
        start = self.next_producer_id
        self.next_producer_id += PRODUCER_ID_BLOCK
        return MetaResult(value=ProducerIdBlock(broker, start, PRODUCER_ID_BLOCK))

    def _reassign(self, cmd: dict[str, Any]) -> MetaResult:
        out = moves.reassign(self.topics, self.brokers, cmd)
        if not isinstance(out, Reassigned):
            return MetaResult(out[0], out[1])
        self.draining = (self.draining | set(cmd["drain"])) - set(cmd["undrain"])
        throttle = cmd.get("throttle")
        if isinstance(throttle, int):
            self.throttle = throttle
        return MetaResult(value=out)

    def _reassign_done(self, cmd: dict[str, Any]) -> MetaResult:
        return MetaResult(value=moves.reassign_done(self.topics, cmd))

    def _reassign_cancel(self, cmd: dict[str, Any]) -> MetaResult:
        throttle = cmd.get("throttle")
        if throttle is not None and (type(throttle) is not int or throttle < 0):
            return MetaResult(ErrorCode.INVALID_REQUEST, "throttle must be an integer >= 0")
        if throttle is not None:
            self.throttle = throttle
        return MetaResult(value=moves.reassign_cancel(self.topics))

    def reassignments(self) -> list[tuple[str, PartitionInfo]]:
        """Every partition with a reassignment in progress, in topic and partition order."""
        return [
            (name, pi)
            for name, t in self.topics.items()
            for pi in t.partitions
            if pi.target is not None
        ]

    # -- snapshots --------------------------------------------------------------------------

    def state_bytes(self) -> bytes:
        """The whole state at `applied_index` (a Raft snapshot of the metadata group)."""
        return cbor_encode(
            {
                "v": 1,
                "applied": self.applied_index,
                "cluster_id": self.cluster_id,
                "brokers": [
                    [b.id, b.incarnation, b.host, b.port, b.peer_host, b.peer_port, b.rack]
                    for b in self.brokers.values()
                ],
                "alive": [[b, a] for b, a in self.alive.items()],
                "topics": [
                    [
                        t.name,
                        t.replication_factor,
                        [[k, v] for k, v in t.config.items()],
                        [_partition_item(p) for p in t.partitions],
                    ]
                    for t in self.topics.values()
                ],
                "leaders": [[g, term, ld] for g, (term, ld) in self.leaders.items()],
                "next_group_id": self.next_group_id,
                "next_producer_id": self.next_producer_id,
                "draining": sorted(self.draining),
                "throttle": self.throttle,
            }
        )

    def restore(self, state: bytes) -> None:
        """Replace the whole state with `state_bytes()` output; `limits` stay."""
        d = cbor_decode(state, STATE_LIMITS)
        assert isinstance(d, dict) and d.get("v") == 1, "unknown metadata snapshot format"
        cid = d["cluster_id"]
        self.cluster_id = None if cid is None else str(cid)
        self.brokers = {}
        for bid, inc, host, port, peer_host, peer_port, rack in d["brokers"]:
            self.brokers[int(bid)] = BrokerInfo(
                int(bid),
                int(inc),
                str(host),
                int(port),
                str(peer_host),
                int(peer_port),
                None if rack is None else str(rack),
            )
        self.alive = {int(b): bool(a) for b, a in d["alive"]}
        self.topics = {}
        for name, rf, config, partitions in d["topics"]:
            self.topics[str(name)] = TopicInfo(
                str(name),
                tuple(_partition_from(item) for item in partitions),
                int(rf),
                {str(k): str(v) for k, v in config},
            )
        self.leaders = {int(g): (int(t), int(ld)) for g, t, ld in d["leaders"]}
        self.next_group_id = int(d["next_group_id"])
        self.next_producer_id = int(d["next_producer_id"])
        self.draining = {int(b) for b in d.get("draining", ())}
        self.throttle = int(d.get("throttle", 0))
        self.applied_index = int(d["applied"])

    # -- placement --------------------------------------------------------------------------

    def _place(self, partitions: int, rf: int) -> list[tuple[int, ...]]:
        """Replica lists for `partitions` new partitions (moves.place), deterministic from the
        current state; draining brokers get none."""
        live = self.placeable()
        return moves.place(
            live,
            {b: self.brokers[b].rack for b in live},
            (pi.replicas for t in self.topics.values() for pi in t.partitions),
            partitions,
            rf,
        )

    # -- queries ----------------------------------------------------------------------------

    def partition(self, topic: str, partition: int) -> PartitionInfo | None:
        t = self.topics.get(topic)
        if t is None or not 0 <= partition < len(t.partitions):
            return None
        return t.partitions[partition]


_OPS = {
    "init": MetadataMachine._init,
    "register_broker": MetadataMachine._register_broker,
    "set_alive": MetadataMachine._set_alive,
    "set_leaders": MetadataMachine._set_leaders,
    "create_topic": MetadataMachine._create_topic,
    "delete_topic": MetadataMachine._delete_topic,
    "alter_topic": MetadataMachine._alter_topic,
    "alloc_producer_ids": MetadataMachine._alloc_producer_ids,
    "reassign": MetadataMachine._reassign,
    "reassign_done": MetadataMachine._reassign_done,
    "reassign_cancel": MetadataMachine._reassign_cancel,
}


def _partition_item(p: PartitionInfo) -> list[object]:
    item: list[object] = [p.partition, p.group_id, list(p.replicas)]
    if p.target is not None:
        item.append(list(p.target))
    return item


def _partition_from(item: list[Any]) -> PartitionInfo:
    """A snapshot's partition: [partition, group, replicas] and, while it moves, its target."""
    p, g, replicas = item[:3]
    target = tuple(int(r) for r in item[3]) if len(item) > 3 else None
    return PartitionInfo(int(p), int(g), tuple(int(r) for r in replicas), target)
