"""Typed bodies of the consumer-group APIs (the same rules as `messages.py`: frozen keyword-only
dataclasses, `to_body(version)` / `from_body(body, version, limits)`, strict validation that
names the bad field).

- FIND_COORDINATOR: the broker leading the coordinator of a group (key_type 0) or of a
  transactional id (key_type 1, a later stage). Any broker answers.
- GROUP_HEARTBEAT: a member's heartbeat (KIP-848's ConsumerGroupHeartbeat): its epoch (0 to
  join, -1 to leave, -2 for a static member's temporary leave), subscription (topic names
  and/or a regular expression), the partitions it still owns; the answer carries its epoch and
  the partitions it may own now. Errors are the frame's: FENCED_MEMBER_EPOCH, UNKNOWN_MEMBER_ID,
  NOT_COORDINATOR, UNRELEASED_INSTANCE_ID, INVALID_REGULAR_EXPRESSION, UNSUPPORTED_ASSIGNOR.
- OFFSET_COMMIT: a member's commit (with its member epoch), or an operator's reset
  (member_id "" and epoch -1: only while the group has no members); per-partition errors.
- OFFSET_FETCH: committed offsets of a group (-1: none), all of them when `topics` is None.
- LIST_GROUPS, DESCRIBE_GROUPS, DELETE_GROUPS: the groups a broker coordinates, one group's
  state and members, deleting groups without members (and their offsets).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar

from broker.wire import schema as s
from broker.wire.api import ApiKey
from broker.wire.errors import ErrorCode, short_message
from broker.wire.limits import DEFAULT_LIMITS, Limits

MAX_GROUP_ID = 255
"""Characters of a group id, member id or instance id."""
MAX_PATTERN = 1024
"""Characters of a subscription's regular expression."""
JOIN_EPOCH = 0
LEAVE_EPOCH = -1
TEMPORARY_LEAVE_EPOCH = -2
"""A static member shutting down: it keeps its partitions for the session timeout."""
ADMIN_EPOCH = -1
"""OFFSET_COMMIT from an operator (member_id ""), accepted only for a group with no member."""
NO_OFFSET = -1


class CoordinatorType(IntEnum):
    GROUP = 0
    TRANSACTION = 1


def group_id(value: object, path: str) -> str:
    """A group id: 1..255 characters, no control characters."""
    return _identifier(value, path)


def _identifier(value: object, path: str) -> str:
    text = s.nonempty_text(value, path)
    if len(text) > MAX_GROUP_ID:
        s.fail(path, f"{len(text)} characters exceed {MAX_GROUP_ID}")
    if any(unicodedata.category(c) == "Cc" for c in text):
        s.fail(path, "must not contain control characters")
    return text


def _opt_identifier(value: object, path: str) -> str | None:
    return None if value is None else _identifier(value, path)


def _member_id(value: object, path: str) -> str:
    """A member id: "" (none yet / an operator) or an identifier."""
    text = s.text(value, path)
    return text if not text else _identifier(text, path)


# --------------------------------------------------------------------------- shared shapes


@dataclass(frozen=True, slots=True, kw_only=True)
class TopicPartitions:
    """Partitions of one topic (an assignment, owned partitions, a fetch filter)."""

    topic: str
    partitions: tuple[int, ...]

    def to_wire(self) -> list[object]:
        return [self.topic, list(self.partitions)]

    @classmethod
    def from_wire(cls, value: object, path: str, limits: Limits) -> TopicPartitions:
        items = s.array(value, path, limits)
        if len(items) != 2:
            s.fail(path, f"expected [topic, partitions], got {len(items)} items")
        topic = s.topic(items[0], s.item(path, 0), limits)
        ppath = s.item(path, 1)
        parts = [
            s.partition(v, s.item(ppath, i)) for i, v in enumerate(s.array(items[1], ppath, limits))
        ]
        s.unique(parts, ppath, "partition")
        return cls(topic=topic, partitions=tuple(parts))


def topic_partitions(value: object, path: str, limits: Limits) -> tuple[TopicPartitions, ...]:
    out = tuple(
        TopicPartitions.from_wire(v, s.item(path, i), limits)
        for i, v in enumerate(s.array(value, path, limits))
    )
    s.unique([t.topic for t in out], path, "topic")
    return out


def to_topic_partitions(tps: Iterable[tuple[str, int]]) -> tuple[TopicPartitions, ...]:
    """(topic, partition) pairs -> one TopicPartitions per topic, both sorted. A pair given
    twice is listed once (the decoder refuses a repeated partition)."""
    by_topic: dict[str, list[int]] = {}
    for topic, partition in sorted(set(tps)):
        by_topic.setdefault(topic, []).append(partition)
    return tuple(TopicPartitions(topic=t, partitions=tuple(p)) for t, p in by_topic.items())


def pairs(tps: tuple[TopicPartitions, ...]) -> frozenset[tuple[str, int]]:
    return frozenset((t.topic, p) for t in tps for p in t.partitions)


def _opt_topic_partitions(
    value: object, path: str, limits: Limits
) -> tuple[TopicPartitions, ...] | None:
    return None if value is None else topic_partitions(value, path, limits)


# --------------------------------------------------------------------------- FIND_COORDINATOR

_FIND_COORDINATOR_REQUEST = frozenset({"key", "key_type"})


@dataclass(frozen=True, slots=True, kw_only=True)
class FindCoordinatorRequest:
    API_KEY: ClassVar[ApiKey] = ApiKey.FIND_COORDINATOR
    key: str
    key_type: CoordinatorType = CoordinatorType.GROUP

    def to_body(self, version: int) -> dict[str, object]:
        return {"key": self.key, "key_type": int(self.key_type)}

    @classmethod
    def from_body(
        cls, body: object, version: int, limits: Limits = DEFAULT_LIMITS
    ) -> FindCoordinatorRequest:
        b = s.fields(body, "", _FIND_COORDINATOR_REQUEST)
        return cls(
            key=_identifier(b["key"], "key"),
            key_type=CoordinatorType(s.integer(b["key_type"], "key_type", 0, 1)),
        )


_FIND_COORDINATOR_RESPONSE = frozenset({"node_id", "host", "port", "partition"})


@dataclass(frozen=True, slots=True, kw_only=True)
class FindCoordinatorResponse:
    """The coordinator's broker, and the partition of the internal topic it leads."""

    API_KEY: ClassVar[ApiKey] = ApiKey.FIND_COORDINATOR
    node_id: int
    host: str
    port: int
    partition: int

    def to_body(self, version: int) -> dict[str, object]:
        return {"node_id": self.node_id, "host": self.host, "port": self.port,
                "partition": self.partition}  # fmt: skip

    @classmethod
    def from_body(
        cls, body: object, version: int, limits: Limits = DEFAULT_LIMITS
    ) -> FindCoordinatorResponse:
        b = s.fields(body, "", _FIND_COORDINATOR_RESPONSE)
        return cls(
            node_id=s.int32(b["node_id"], "node_id", 0),
            host=s.nonempty_text(b["host"], "host"),
            port=s.integer(b["port"], "port", 0, 65535),
            partition=s.partition(b["partition"], "partition"),
        )


# --------------------------------------------------------------------------- GROUP_HEARTBEAT

_GROUP_HEARTBEAT_REQUEST = frozenset(
    {
        "group_id",
        "member_id",
        "member_epoch",
        "instance_id",
        "client_host",
        "session_timeout_ms",
        "topics",
        "pattern",
        "assignor",
        "owned",
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupHeartbeatRequest:
    """`member_id` is chosen by the member (a random UUID) and kept for its life. `owned`:
    the partitions it still owns (None: unchanged since its last heartbeat is NOT allowed
    here; the full set is sent every time)."""

    API_KEY: ClassVar[ApiKey] = ApiKey.GROUP_HEARTBEAT
    group_id: str
    member_id: str
    member_epoch: int
    instance_id: str | None = None
    client_host: str | None = None
    session_timeout_ms: int = 0
    """0: the broker's default; otherwise clamped to the broker's bounds."""
    topics: tuple[str, ...] = ()
    pattern: str | None = None
    assignor: str | None = None
    owned: tuple[TopicPartitions, ...] = ()

    def to_body(self, version: int) -> dict[str, object]:
        return {
            "group_id": self.group_id,
            "member_id": self.member_id,
            "member_epoch": self.member_epoch,
            "instance_id": self.instance_id,
            "client_host": self.client_host,
            "session_timeout_ms": self.session_timeout_ms,
            "topics": list(self.topics),
            "pattern": self.pattern,
            "assignor": self.assignor,
            "owned": [t.to_wire() for t in self.owned],
        }

    @classmethod
    def from_body(
        cls, body: object, version: int, limits: Limits = DEFAULT_LIMITS
    ) -> GroupHeartbeatRequest:
        b = s.fields(body, "", _GROUP_HEARTBEAT_REQUEST)
        topics = [
            s.topic(v, s.item("topics", i), limits)
            for i, v in enumerate(s.array(b["topics"], "topics", limits))
        ]
        s.unique(topics, "topics", "topic")
        pattern = s.opt_nonempty_text(b["pattern"], "pattern")
        if pattern is not None and len(pattern) > MAX_PATTERN:
            s.fail("pattern", f"{len(pattern)} characters exceed {MAX_PATTERN}")
        host = s.opt_text(b["client_host"], "client_host")
        if host is not None and len(host) > MAX_GROUP_ID:
            s.fail("client_host", f"{len(host)} characters exceed {MAX_GROUP_ID}")
        return cls(
            group_id=group_id(b["group_id"], "group_id"),
            member_id=_identifier(b["member_id"], "member_id"),
            member_epoch=s.int32(b["member_epoch"], "member_epoch", TEMPORARY_LEAVE_EPOCH),
            instance_id=_opt_identifier(b["instance_id"], "instance_id"),
            client_host=host,
            session_timeout_ms=s.int32(b["session_timeout_ms"], "session_timeout_ms", 0),
            topics=tuple(topics),
            pattern=pattern,
            assignor=_opt_identifier(b["assignor"], "assignor"),
            owned=topic_partitions(b["owned"], "owned", limits),
        )


_GROUP_HEARTBEAT_RESPONSE = frozenset(
    {"member_id", "member_epoch", "heartbeat_interval_ms", "session_timeout_ms", "assignment"}
)


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupHeartbeatResponse:
    """`assignment`: every partition the member may own now (what it owns outside it, it
    must release: stop processing, commit, and leave it out of `owned` next time)."""

    API_KEY: ClassVar[ApiKey] = ApiKey.GROUP_HEARTBEAT
    member_id: str
    member_epoch: int
    heartbeat_interval_ms: int
    session_timeout_ms: int
    assignment: tuple[TopicPartitions, ...]

    def to_body(self, version: int) -> dict[str, object]:
        return {
            "member_id": self.member_id,
            "member_epoch": self.member_epoch,
            "heartbeat_interval_ms": self.heartbeat_interval_ms,
            "session_timeout_ms": self.session_timeout_ms,
            "assignment": [t.to_wire() for t in self.assignment],
        }

    @classmethod
    def from_body(
        cls, body: object, version: int, limits: Limits = DEFAULT_LIMITS
    ) -> GroupHeartbeatResponse:
        b = s.fields(body, "", _GROUP_HEARTBEAT_RESPONSE)
        return cls(
            member_id=_identifier(b["member_id"], "member_id"),
            member_epoch=s.int32(b["member_epoch"], "member_epoch", TEMPORARY_LEAVE_EPOCH),
            heartbeat_interval_ms=s.int32(b["heartbeat_interval_ms"], "heartbeat_interval_ms", 1),
            session_timeout_ms=s.int32(b["session_timeout_ms"], "session_timeout_ms", 1),
            assignment=topic_partitions(b["assignment"], "assignment", limits),
        )


# --------------------------------------------------------------------------- OFFSET_COMMIT


@dataclass(frozen=True, slots=True, kw_only=True)
class CommitPartition:
    partition: int
    offset: int
    metadata: str | None = None

    def to_wire(self) -> list[object]:
        return [self.partition, self.offset, self.metadata]

    @classmethod
    def from_wire(cls, value: object, path: str, limits: Limits) -> CommitPartition:
        items = s.array(value, path, limits)
        if len(items) != 3:
            s.fail(path, f"expected [partition, offset, metadata], got {len(items)} items")
        meta = s.opt_text(items[2], s.item(path, 2))
        if meta is not None and len(meta) > 4096:
            s.fail(s.item(path, 2), "metadata longer than 4096 characters")
        return cls(
            partition=s.partition(items[0], s.item(path, 0)),
            offset=s.int64(items[1], s.item(path, 1), 0),
            metadata=meta,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class CommitTopic:
    topic: str
    partitions: tuple[CommitPartition, ...]

    def to_wire(self) -> list[object]:
        return [self.topic, [p.to_wire() for p in self.partitions]]

    @classmethod
    def from_wire(cls, value: object, path: str, limits: Limits) -> CommitTopic:
        items = s.array(value, path, limits)
        if len(items) != 2:
            s.fail(path, f"expected [topic, partitions], got {len(items)} items")
        ppath = s.item(path, 1)
        parts = tuple(
            CommitPartition.from_wire(v, s.item(ppath, i), limits)
            for i, v in enumerate(s.array(items[1], ppath, limits))
        )
        s.unique([p.partition for p in parts], ppath, "partition")
        return cls(topic=s.topic(items[0], s.item(path, 0), limits), partitions=parts)


_OFFSET_COMMIT_REQUEST = frozenset({"group_id", "member_id", "member_epoch", "topics"})


@dataclass(frozen=True, slots=True, kw_only=True)
class OffsetCommitRequest:
    API_KEY: ClassVar[ApiKey] = ApiKey.OFFSET_COMMIT
    group_id: str
    member_id: str
    member_epoch: int
    topics: tuple[CommitTopic, ...]

    def to_body(self, version: int) -> dict[str, object]:
        return {
            "group_id": self.group_id,
            "member_id": self.member_id,
            "member_epoch": self.member_epoch,
            "topics": [t.to_wire() for t in self.topics],
        }

    @classmethod
    def from_body(
        cls, body: object, version: int, limits: Limits = DEFAULT_LIMITS
    ) -> OffsetCommitRequest:
        b = s.fields(body, "", _OFFSET_COMMIT_REQUEST)
        topics = tuple(
            CommitTopic.from_wire(v, s.item("topics", i), limits)
            for i, v in enumerate(s.array(b["topics"], "topics", limits))
        )
        s.unique([t.topic for t in topics], "topics", "topic")
        member = _member_id(b["member_id"], "member_id")
        epoch = s.int32(b["member_epoch"], "member_epoch", ADMIN_EPOCH)
        if (member == "") != (epoch == ADMIN_EPOCH):
            s.fail("member_epoch", 'an operator commits with member_id "" and epoch -1, '
                   "a member with its id and an epoch >= 0")  # fmt: skip
        return cls(group_id=group_id(b["group_id"], "group_id"), member_id=member,
                   member_epoch=epoch, topics=topics)  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class PartitionError:
    partition: int
    error: ErrorCode
    message: str | None = None

    def to_wire(self) -> list[object]:
        return [self.partition, int(self.error), short_message(self.message)]

    @classmethod
    def from_wire(cls, value: object, path: str, limits: Limits) -> PartitionError:
        items = s.array(value, path, limits)
        if len(items) != 3:
            s.fail(path, f"expected [partition, error, message], got {len(items)} items")
        return cls(
            partition=s.partition(items[0], s.item(path, 0)),
            error=s.error_code(items[1], s.item(path, 1)),
            message=s.opt_text(items[2], s.item(path, 2)),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class TopicErrors:
    topic: str
    partitions: tuple[PartitionError, ...]

    def to_wire(self) -> list[object]:
        return [self.topic, [p.to_wire() for p in self.partitions]]

    @classmethod
    def from_wire(cls, value: object, path: str, limits: Limits) -> TopicErrors:
        items = s.array(value, path, limits)
        if len(items) != 2:
            s.fail(path, f"expected [topic, partitions], got {len(items)} items")
        ppath = s.item(path, 1)
        parts = tuple(
            PartitionError.from_wire(v, s.item(ppath, i), limits)
            for i, v in enumerate(s.array(items[1], ppath, limits))
        )
        return cls(topic=s.topic(items[0], s.item(path, 0), limits), partitions=parts)


_TOPICS = frozenset({"topics"})


@dataclass(frozen=True, slots=True, kw_only=True)
class OffsetCommitResponse:
    API_KEY: ClassVar[ApiKey] = ApiKey.OFFSET_COMMIT
    topics: tuple[TopicErrors, ...]

    def to_body(self, version: int) -> dict[str, object]:
        return {"topics": [t.to_wire() for t in self.topics]}

    @classmethod
    def from_body(
        cls, body: object, version: int, limits: Limits = DEFAULT_LIMITS
    ) -> OffsetCommitResponse:
        b = s.fields(body, "", _TOPICS)
        return cls(
            topics=tuple(
                TopicErrors.from_wire(v, s.item("topics", i), limits)
                for i, v in enumerate(s.array(b["topics"], "topics", limits))
            )
        )


# --------------------------------------------------------------------------- OFFSET_FETCH

_OFFSET_FETCH_REQUEST = frozenset({"group_id", "topics"})


@dataclass(frozen=True, slots=True, kw_only=True)
class OffsetFetchRequest:
    API_KEY: ClassVar[ApiKey] = ApiKey.OFFSET_FETCH
    group_id: str
    topics: tuple[TopicPartitions, ...] | None = None
    """None: every committed offset of the group."""

    def to_body(self, version: int) -> dict[str, object]:
        topics = None if self.topics is None else [t.to_wire() for t in self.topics]
        return {"group_id": self.group_id, "topics": topics}

    @classmethod
    def from_body(
        cls, body: object, version: int, limits: Limits = DEFAULT_LIMITS
    ) -> OffsetFetchRequest:
        b = s.fields(body, "", _OFFSET_FETCH_REQUEST)
        return cls(
            group_id=group_id(b["group_id"], "group_id"),
            topics=_opt_topic_partitions(b["topics"], "topics", limits),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class CommittedOffset:
    topic: str
    partition: int
    offset: int
    """NO_OFFSET (-1): nothing committed."""
    metadata: str | None = None

    def to_wire(self) -> list[object]:
        return [self.topic, self.partition, self.offset, self.metadata]

    @classmethod
    def from_wire(cls, value: object, path: str, limits: Limits) -> CommittedOffset:
        items = s.array(value, path, limits)
        if len(items) != 4:
            s.fail(path, f"expected [topic, partition, offset, metadata], got {len(items)} items")
        return cls(
            topic=s.topic(items[0], s.item(path, 0), limits),
            partition=s.partition(items[1], s.item(path, 1)),
            offset=s.int64(items[2], s.item(path, 2), NO_OFFSET),
            metadata=s.opt_text(items[3], s.item(path, 3)),
        )


_OFFSETS = frozenset({"offsets"})


@dataclass(frozen=True, slots=True, kw_only=True)
class OffsetFetchResponse:
    API_KEY: ClassVar[ApiKey] = ApiKey.OFFSET_FETCH
    offsets: tuple[CommittedOffset, ...]

    def to_body(self, version: int) -> dict[str, object]:
        return {"offsets": [o.to_wire() for o in self.offsets]}

    @classmethod
    def from_body(
        cls, body: object, version: int, limits: Limits = DEFAULT_LIMITS
    ) -> OffsetFetchResponse:
        b = s.fields(body, "", _OFFSETS)
        offsets = tuple(
            CommittedOffset.from_wire(v, s.item("offsets", i), limits)
            for i, v in enumerate(s.array(b["offsets"], "offsets", limits))
        )
        s.unique([(o.topic, o.partition) for o in offsets], "offsets", "partition")
        return cls(offsets=offsets)


# --------------------------------------------------------------------------- LIST_GROUPS


@dataclass(frozen=True, slots=True, kw_only=True)
class ListGroupsRequest:
    """The groups whose coordinator the answering broker leads (ask every broker)."""

    API_KEY: ClassVar[ApiKey] = ApiKey.LIST_GROUPS

    def to_body(self, version: int) -> dict[str, object]:
        return {}

    @classmethod
    def from_body(
        cls, body: object, version: int, limits: Limits = DEFAULT_LIMITS
    ) -> ListGroupsRequest:
        s.fields(body, "", frozenset())
        return cls()


@dataclass(frozen=True, slots=True, kw_only=True)
class ListedGroup:
    group_id: str
    state: str
    members: int

    def to_wire(self) -> list[object]:
        return [self.group_id, self.state, self.members]

    @classmethod
    def from_wire(cls, value: object, path: str, limits: Limits) -> ListedGroup:
        items = s.array(value, path, limits)
        if len(items) != 3:
            s.fail(path, f"expected [group_id, state, members], got {len(items)} items")
        return cls(
            group_id=group_id(items[0], s.item(path, 0)),
            state=s.nonempty_text(items[1], s.item(path, 1)),
            members=s.int32(items[2], s.item(path, 2), 0),
        )


_GROUPS = frozenset({"groups"})


@dataclass(frozen=True, slots=True, kw_only=True)
class ListGroupsResponse:
    API_KEY: ClassVar[ApiKey] = ApiKey.LIST_GROUPS
    groups: tuple[ListedGroup, ...]

    def to_body(self, version: int) -> dict[str, object]:
        return {"groups": [g.to_wire() for g in self.groups]}

    @classmethod
    def from_body(
        cls, body: object, version: int, limits: Limits = DEFAULT_LIMITS
    ) -> ListGroupsResponse:
        b = s.fields(body, "", _GROUPS)
        return cls(
            groups=tuple(
                ListedGroup.from_wire(v, s.item("groups", i), limits)
                for i, v in enumerate(s.array(b["groups"], "groups", limits))
            )
        )


# --------------------------------------------------------------------------- DESCRIBE_GROUPS

_GROUP_IDS = frozenset({"group_ids"})


def _group_ids(value: object, path: str, limits: Limits) -> tuple[str, ...]:
    ids = [group_id(v, s.item(path, i)) for i, v in enumerate(s.array(value, path, limits))]
    s.unique(ids, path, "group")
    return tuple(ids)


@dataclass(frozen=True, slots=True, kw_only=True)
class DescribeGroupsRequest:
    API_KEY: ClassVar[ApiKey] = ApiKey.DESCRIBE_GROUPS
    group_ids: tuple[str, ...]

    def to_body(self, version: int) -> dict[str, object]:
        return {"group_ids": list(self.group_ids)}

    @classmethod
    def from_body(
        cls, body: object, version: int, limits: Limits = DEFAULT_LIMITS
    ) -> DescribeGroupsRequest:
        b = s.fields(body, "", _GROUP_IDS)
        return cls(group_ids=_group_ids(b["group_ids"], "group_ids", limits))


_DESCRIBED_MEMBER = frozenset(
    {
        "member_id",
        "instance_id",
        "client_id",
        "client_host",
        "member_epoch",
        "topics",
        "pattern",
        "assignment",
        "revoking",
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class DescribedMember:
    member_id: str
    instance_id: str | None
    client_id: str | None
    client_host: str | None
    member_epoch: int
    topics: tuple[str, ...]
    pattern: str | None
    assignment: tuple[TopicPartitions, ...]
    """The partitions it owns now (held)."""
    revoking: tuple[TopicPartitions, ...]
    """Owned partitions it has been asked to release."""

    def to_wire(self) -> dict[str, object]:
        return {
            "member_id": self.member_id,
            "instance_id": self.instance_id,
            "client_id": self.client_id,
            "client_host": self.client_host,
            "member_epoch": self.member_epoch,
            "topics": list(self.topics),
            "pattern": self.pattern,
            "assignment": [t.to_wire() for t in self.assignment],
            "revoking": [t.to_wire() for t in self.revoking],
        }

    @classmethod
    def from_wire(cls, value: object, path: str, limits: Limits) -> DescribedMember:
        b = s.fields(value, path, _DESCRIBED_MEMBER)
        tpath = s.at(path, "topics")
        return cls(
            member_id=_identifier(b["member_id"], s.at(path, "member_id")),
            instance_id=_opt_identifier(b["instance_id"], s.at(path, "instance_id")),
            client_id=s.opt_text(b["client_id"], s.at(path, "client_id")),
            client_host=s.opt_text(b["client_host"], s.at(path, "client_host")),
            member_epoch=s.int32(b["member_epoch"], s.at(path, "member_epoch"), -2),
            topics=tuple(
                s.topic(v, s.item(tpath, i), limits)
                for i, v in enumerate(s.array(b["topics"], tpath, limits))
            ),
            pattern=s.opt_text(b["pattern"], s.at(path, "pattern")),
            assignment=topic_partitions(b["assignment"], s.at(path, "assignment"), limits),
            revoking=topic_partitions(b["revoking"], s.at(path, "revoking"), limits),
        )


_DESCRIBED_GROUP = frozenset(
    {
        "group_id",
        "error",
        "message",
        "state",
        "assignor",
        "group_epoch",
        "members",
        "rebalance_reason",
        "rebalance_time_ms",
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class DescribedGroup:
    group_id: str
    error: ErrorCode = ErrorCode.NONE
    message: str | None = None
    state: str = "dead"
    """"empty" (no members), "reconciling" (some member holds less or more than its
    target), "stable", or "dead" (unknown group)."""
    assignor: str = ""
    group_epoch: int = 0
    members: tuple[DescribedMember, ...] = ()
    rebalance_reason: str = ""
    rebalance_time_ms: int = -1
    """Wall-clock milliseconds of the last change of the target assignment (-1: none)."""

    def to_wire(self) -> dict[str, object]:
        return {
            "group_id": self.group_id,
            "error": int(self.error),
            "message": short_message(self.message),
            "state": self.state,
            "assignor": self.assignor,
            "group_epoch": self.group_epoch,
            "members": [m.to_wire() for m in self.members],
            "rebalance_reason": self.rebalance_reason,
            "rebalance_time_ms": self.rebalance_time_ms,
        }

    @classmethod
    def from_wire(cls, value: object, path: str, limits: Limits) -> DescribedGroup:
        b = s.fields(value, path, _DESCRIBED_GROUP)
        mpath = s.at(path, "members")
        return cls(
            group_id=group_id(b["group_id"], s.at(path, "group_id")),
            error=s.error_code(b["error"], s.at(path, "error")),
            message=s.opt_text(b["message"], s.at(path, "message")),
            state=s.nonempty_text(b["state"], s.at(path, "state")),
            assignor=s.text(b["assignor"], s.at(path, "assignor")),
            group_epoch=s.int32(b["group_epoch"], s.at(path, "group_epoch"), 0),
            members=tuple(
                DescribedMember.from_wire(v, s.item(mpath, i), limits)
                for i, v in enumerate(s.array(b["members"], mpath, limits))
            ),
            rebalance_reason=s.text(b["rebalance_reason"], s.at(path, "rebalance_reason")),
            rebalance_time_ms=s.int64(b["rebalance_time_ms"], s.at(path, "rebalance_time_ms"), -1),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class DescribeGroupsResponse:
    API_KEY: ClassVar[ApiKey] = ApiKey.DESCRIBE_GROUPS
    groups: tuple[DescribedGroup, ...]

    def to_body(self, version: int) -> dict[str, object]:
        return {"groups": [g.to_wire() for g in self.groups]}

    @classmethod
    def from_body(
        cls, body: object, version: int, limits: Limits = DEFAULT_LIMITS
    ) -> DescribeGroupsResponse:
        b = s.fields(body, "", _GROUPS)
        return cls(
            groups=tuple(
                DescribedGroup.from_wire(v, s.item("groups", i), limits)
                for i, v in enumerate(s.array(b["groups"], "groups", limits))
            )
        )


# --------------------------------------------------------------------------- DELETE_GROUPS


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteGroupsRequest:
    API_KEY: ClassVar[ApiKey] = ApiKey.DELETE_GROUPS
    group_ids: tuple[str, ...]

    def to_body(self, version: int) -> dict[str, object]:
        return {"group_ids": list(self.group_ids)}

    @classmethod
    def from_body(
        cls, body: object, version: int, limits: Limits = DEFAULT_LIMITS
    ) -> DeleteGroupsRequest:
        b = s.fields(body, "", _GROUP_IDS)
        return cls(group_ids=_group_ids(b["group_ids"], "group_ids", limits))


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupResult:
    group_id: str
    error: ErrorCode
    message: str | None = None

    def to_wire(self) -> list[object]:
        return [self.group_id, int(self.error), short_message(self.message)]

    @classmethod
    def from_wire(cls, value: object, path: str, limits: Limits) -> GroupResult:
        items = s.array(value, path, limits)
        if len(items) != 3:
            s.fail(path, f"expected [group_id, error, message], got {len(items)} items")
        return cls(
            group_id=group_id(items[0], s.item(path, 0)),
            error=s.error_code(items[1], s.item(path, 1)),
            message=s.opt_text(items[2], s.item(path, 2)),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteGroupsResponse:
    API_KEY: ClassVar[ApiKey] = ApiKey.DELETE_GROUPS
    groups: tuple[GroupResult, ...]

    def to_body(self, version: int) -> dict[str, object]:
        return {"groups": [g.to_wire() for g in self.groups]}

    @classmethod
    def from_body(
        cls, body: object, version: int, limits: Limits = DEFAULT_LIMITS
    ) -> DeleteGroupsResponse:
        b = s.fields(body, "", _GROUPS)
        return cls(
            groups=tuple(
                GroupResult.from_wire(v, s.item("groups", i), limits)
                for i, v in enumerate(s.array(b["groups"], "groups", limits))
            )
        )
