"""Typed bodies of the transaction APIs (the same rules as `messages.py`: frozen keyword-only
dataclasses, `to_body(version)` / `from_body(body, version, limits)`, strict validation that
names the bad field). Errors of a whole request travel in the response frame, as for every
API: a response body carries only per-item errors and values.

- ADD_PARTITIONS_TO_TXN: a transactional producer registers the partitions it is about to
  write with its transaction coordinator (found by FIND_COORDINATOR, key_type 1).
- ADD_OFFSETS_TO_TXN: it registers a consumer group whose offsets the transaction commits.
- TXN_OFFSET_COMMIT: it stages those offsets with the group's coordinator; they become
  visible when the transaction commits (OFFSET_COMMIT's topics and per-partition results).
- END_TXN: commit or abort, with the last sequence the producer had acknowledged on each
  partition; the answer is the producer id and epoch of its next transaction.
- DESCRIBE_TRANSACTIONS, LIST_TRANSACTIONS, ABORT_TRANSACTION: an operator's view of the
  transactions a broker coordinates, and an operator's abort of one.

Transactional ids are 1..249 characters without control characters (`transactional_id`).
Transaction states on the wire are TXN_STATES, the coordinator's states in lower case.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import ClassVar

from broker.wire import schema as s
from broker.wire.api import ApiKey
from broker.wire.errors import ErrorCode, short_message
from broker.wire.group_messages import CommitTopic, TopicErrors, group_id
from broker.wire.limits import DEFAULT_LIMITS, Limits

MAX_TRANSACTIONAL_ID = 249
"""Characters of a transactional id."""
TXN_STATES = ("empty", "ongoing", "preparing", "pre_committed", "aborting")
"""The states of a transaction as DESCRIBE_TRANSACTIONS and LIST_TRANSACTIONS name them."""
GROUP_PARTICIPANT = -1
"""`TxnParticipantInfo.partition` of a consumer group's offsets (its `name` is the group)."""
NO_SEQUENCE = -1
"""A last sequence when the producer had no acknowledged data there."""


def transactional_id(value: object, path: str) -> str:
    """A transactional id: 1..249 characters, no control characters."""
    text = s.nonempty_text(value, path)
    if len(text) > MAX_TRANSACTIONAL_ID:
        s.fail(path, f"{len(text)} characters exceed {MAX_TRANSACTIONAL_ID}")
    if any(unicodedata.category(c) == "Cc" for c in text):
        s.fail(path, "must not contain control characters")
    return text


def _member_id(value: object, path: str) -> str:
    """A member id: "" (the producer commits without a group membership) or an identifier."""
    text = s.text(value, path)
    return text if not text else group_id(text, path)


def _state(value: object, path: str) -> str:
    """One of TXN_STATES."""
    text = s.text(value, path)
    if text not in TXN_STATES:
        shown = text if len(text) <= 32 else text[:29] + "..."
        s.fail(path, f"unknown transaction state {shown!r} (one of {', '.join(TXN_STATES)})")
    return text


def _producer_id(value: object, path: str) -> int:
    return s.int64(value, path, 0)


def _producer_epoch(value: object, path: str) -> int:
    return s.int16(value, path, 0)


def _empty(body: object) -> None:
    s.fields(body, "", frozenset())


# --------------------------------------------------------------------------- ADD_PARTITIONS_TO_TXN


@dataclass(frozen=True, slots=True, kw_only=True)
class TxnTopic:
    """Partitions of one topic a transaction writes (at least one, none twice). On the wire:
    [name, partitions]."""

    name: str
    partitions: tuple[int, ...]

    def to_wire(self) -> list[object]:
        return [self.name, list(self.partitions)]

    @classmethod
    def from_wire(cls, value: object, path: str, limits: Limits) -> TxnTopic:
        items = s.array(value, path, limits)
        if len(items) != 2:
            s.fail(path, f"expected [name, partitions], got {len(items)} items")
        name = s.topic(items[0], s.item(path, 0), limits)
        ppath = s.item(path, 1)
        parts = [
            s.partition(v, s.item(ppath, i)) for i, v in enumerate(s.array(items[1], ppath, limits))
        ]
        if not parts:
            s.fail(ppath, "must not be empty")
        s.unique(parts, ppath, "partition")
        return cls(name=name, partitions=tuple(parts))


_ADD_PARTITIONS_TO_TXN_REQUEST = frozenset(
    {"transactional_id", "producer_id", "producer_epoch", "topics"}
)


@dataclass(frozen=True, slots=True, kw_only=True)
class AddPartitionsToTxnRequest:
    """Registers partitions with the producer's ongoing transaction (starting it if there is
    none), before the producer writes to them. Sent to the transaction coordinator."""

    API_KEY: ClassVar[ApiKey] = ApiKey.ADD_PARTITIONS_TO_TXN
    transactional_id: str
    producer_id: int
    producer_epoch: int
    topics: tuple[TxnTopic, ...]

    def to_body(self, version: int) -> dict[str, object]:
        return {
            "transactional_id": self.transactional_id,
            "producer_id": self.producer_id,
            "producer_epoch": self.producer_epoch,
            "topics": [t.to_wire() for t in self.topics],
        }

    @classmethod
    def from_body(
        cls, body: object, version: int, limits: Limits = DEFAULT_LIMITS
    ) -> AddPartitionsToTxnRequest:
        b = s.fields(body, "", _ADD_PARTITIONS_TO_TXN_REQUEST)
        topics = tuple(
            TxnTopic.from_wire(v, s.item("topics", i), limits)
            for i, v in enumerate(s.array(b["topics"], "topics", limits))
        )
        s.unique([t.name for t in topics], "topics", "topic")
        return cls(
            transactional_id=transactional_id(b["transactional_id"], "transactional_id"),
            producer_id=_producer_id(b["producer_id"], "producer_id"),
            producer_epoch=_producer_epoch(b["producer_epoch"], "producer_epoch"),
            topics=topics,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class AddPartitionsToTxnResponse:
    """The partitions are registered (an empty body: a refusal is the frame's error)."""

    API_KEY: ClassVar[ApiKey] = ApiKey.ADD_PARTITIONS_TO_TXN

    def to_body(self, version: int) -> dict[str, object]:
        return {}

    @classmethod
    def from_body(
        cls, body: object, version: int, limits: Limits = DEFAULT_LIMITS
    ) -> AddPartitionsToTxnResponse:
        _empty(body)
        return cls()


# --------------------------------------------------------------------------- ADD_OFFSETS_TO_TXN

_ADD_OFFSETS_TO_TXN_REQUEST = frozenset(
    {"transactional_id", "producer_id", "producer_epoch", "group_id"}
)


@dataclass(frozen=True, slots=True, kw_only=True)
class AddOffsetsToTxnRequest:
    """Registers a consumer group with the producer's transaction, before it sends the
    group's coordinator TXN_OFFSET_COMMIT. Sent to the transaction coordinator."""

    API_KEY: ClassVar[ApiKey] = ApiKey.ADD_OFFSETS_TO_TXN
    transactional_id: str
    producer_id: int
    producer_epoch: int
    group_id: str

    def to_body(self, version: int) -> dict[str, object]:
        return {
            "transactional_id": self.transactional_id,
            "producer_id": self.producer_id,
            "producer_epoch": self.producer_epoch,
            "group_id": self.group_id,
        }

    @classmethod
    def from_body(
        cls, body: object, version: int, limits: Limits = DEFAULT_LIMITS
    ) -> AddOffsetsToTxnRequest:
        b = s.fields(body, "", _ADD_OFFSETS_TO_TXN_REQUEST)
        return cls(
            transactional_id=transactional_id(b["transactional_id"], "transactional_id"),
            producer_id=_producer_id(b["producer_id"], "producer_id"),
            producer_epoch=_producer_epoch(b["producer_epoch"], "producer_epoch"),
            group_id=group_id(b["group_id"], "group_id"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class AddOffsetsToTxnResponse:
    """The group is registered (an empty body: a refusal is the frame's error)."""

    API_KEY: ClassVar[ApiKey] = ApiKey.ADD_OFFSETS_TO_TXN

    def to_body(self, version: int) -> dict[str, object]:
        return {}

    @classmethod
    def from_body(
        cls, body: object, version: int, limits: Limits = DEFAULT_LIMITS
    ) -> AddOffsetsToTxnResponse:
        _empty(body)
        return cls()


# --------------------------------------------------------------------------- TXN_OFFSET_COMMIT

_TXN_OFFSET_COMMIT_REQUEST = frozenset(
    {
        "transactional_id",
        "group_id",
        "producer_id",
        "producer_epoch",
        "member_id",
        "member_epoch",
        "topics",
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class TxnOffsetCommitRequest:
    """Offsets a transaction commits for a group (registered first by ADD_OFFSETS_TO_TXN),
    staged by the group's coordinator until the transaction ends. `member_id` and
    `member_epoch` fence a zombie member when given; "" and -1 commit without them."""

    API_KEY: ClassVar[ApiKey] = ApiKey.TXN_OFFSET_COMMIT
    transactional_id: str
    group_id: str
    producer_id: int
    producer_epoch: int
    member_id: str
    member_epoch: int
    topics: tuple[CommitTopic, ...]

    def to_body(self, version: int) -> dict[str, object]:
        return {
            "transactional_id": self.transactional_id,
            "group_id": self.group_id,
            "producer_id": self.producer_id,
            "producer_epoch": self.producer_epoch,
            "member_id": self.member_id,
            "member_epoch": self.member_epoch,
            "topics": [t.to_wire() for t in self.topics],
        }

    @classmethod
    def from_body(
        cls, body: object, version: int, limits: Limits = DEFAULT_LIMITS
    ) -> TxnOffsetCommitRequest:
        b = s.fields(body, "", _TXN_OFFSET_COMMIT_REQUEST)
        topics = tuple(
            CommitTopic.from_wire(v, s.item("topics", i), limits)
            for i, v in enumerate(s.array(b["topics"], "topics", limits))
        )
        s.unique([t.topic for t in topics], "topics", "topic")
        return cls(
            transactional_id=transactional_id(b["transactional_id"], "transactional_id"),
            group_id=group_id(b["group_id"], "group_id"),
            producer_id=_producer_id(b["producer_id"], "producer_id"),
            producer_epoch=_producer_epoch(b["producer_epoch"], "producer_epoch"),
            member_id=_member_id(b["member_id"], "member_id"),
            member_epoch=s.int32(b["member_epoch"], "member_epoch", -1),
            topics=topics,
        )


_TOPICS = frozenset({"topics"})


@dataclass(frozen=True, slots=True, kw_only=True)
class TxnOffsetCommitResponse:
    """An error per partition (OFFSET_COMMIT's results; NONE: staged)."""

    API_KEY: ClassVar[ApiKey] = ApiKey.TXN_OFFSET_COMMIT
    topics: tuple[TopicErrors, ...]

    def to_body(self, version: int) -> dict[str, object]:
        return {"topics": [t.to_wire() for t in self.topics]}

    @classmethod
    def from_body(
        cls, body: object, version: int, limits: Limits = DEFAULT_LIMITS
    ) -> TxnOffsetCommitResponse:
        b = s.fields(body, "", _TOPICS)
        return cls(
            topics=tuple(
                TopicErrors.from_wire(v, s.item("topics", i), limits)
                for i, v in enumerate(s.array(b["topics"], "topics", limits))
            )
        )


# --------------------------------------------------------------------------- END_TXN


@dataclass(frozen=True, slots=True, kw_only=True)
class TxnSequence:
    """The last sequence of the transaction's data the producer had acknowledged on one
    partition (NO_SEQUENCE: none). On the wire: [topic, partition, last_sequence]."""

    topic: str
    partition: int
    last_sequence: int

    def to_wire(self) -> list[object]:
        return [self.topic, self.partition, self.last_sequence]

    @classmethod
    def from_wire(cls, value: object, path: str, limits: Limits) -> TxnSequence:
        items = s.array(value, path, limits)
        if len(items) != 3:
            s.fail(path, f"expected [topic, partition, last_sequence], got {len(items)} items")
        return cls(
            topic=s.topic(items[0], s.item(path, 0), limits),
            partition=s.partition(items[1], s.item(path, 1)),
            last_sequence=s.int32(items[2], s.item(path, 2), NO_SEQUENCE),
        )


_END_TXN_REQUEST = s.Shape(
    "transactional_id",
    "producer_id",
    "producer_epoch",
    "commit",
    "sequences",
    added={1: ("trace_context",)},
)


@dataclass(frozen=True, slots=True, kw_only=True)
class EndTxnRequest:
    """Commits (`commit` True) or aborts the producer's transaction. `sequences`: per
    partition written, the last sequence acknowledged to the producer (a participant votes
    to commit only if its data ends there). Sent to the transaction coordinator."""

    API_KEY: ClassVar[ApiKey] = ApiKey.END_TXN
    transactional_id: str
    producer_id: int
    producer_epoch: int
    commit: bool
    sequences: tuple[TxnSequence, ...]
    trace_context: str | None = None
    """v1: the W3C traceparent of the client's commit (or abort) span; the coordinator's
    3PC phase spans continue that trace."""

    def to_body(self, version: int) -> dict[str, object]:
        return _END_TXN_REQUEST.write(
            {
                "transactional_id": self.transactional_id,
                "producer_id": self.producer_id,
                "producer_epoch": self.producer_epoch,
                "commit": self.commit,
                "sequences": [q.to_wire() for q in self.sequences],
                "trace_context": self.trace_context,
            },
            version,
        )

    @classmethod
    def from_body(
        cls, body: object, version: int, limits: Limits = DEFAULT_LIMITS
    ) -> EndTxnRequest:
        b = _END_TXN_REQUEST.read(body, "", version)
        sequences = tuple(
            TxnSequence.from_wire(v, s.item("sequences", i), limits)
            for i, v in enumerate(s.array(b["sequences"], "sequences", limits))
        )
        s.unique([(q.topic, q.partition) for q in sequences], "sequences", "partition")
        return cls(
            transactional_id=transactional_id(b["transactional_id"], "transactional_id"),
            producer_id=_producer_id(b["producer_id"], "producer_id"),
            producer_epoch=_producer_epoch(b["producer_epoch"], "producer_epoch"),
            commit=s.boolean(b["commit"], "commit"),
            sequences=sequences,
            trace_context=s.trace_context(b),
        )


_END_TXN_RESPONSE = frozenset({"producer_id", "producer_epoch", "reinit"})


@dataclass(frozen=True, slots=True, kw_only=True)
class EndTxnResponse:
    """The transaction ended. `producer_id` and `producer_epoch` are what the producer uses
    for its next transaction; `reinit` True: it must call INIT_PRODUCER_ID first."""

    API_KEY: ClassVar[ApiKey] = ApiKey.END_TXN
    producer_id: int
    producer_epoch: int
    reinit: bool

    def to_body(self, version: int) -> dict[str, object]:
        return {
            "producer_id": self.producer_id,
            "producer_epoch": self.producer_epoch,
            "reinit": self.reinit,
        }

    @classmethod
    def from_body(
        cls, body: object, version: int, limits: Limits = DEFAULT_LIMITS
    ) -> EndTxnResponse:
        b = s.fields(body, "", _END_TXN_RESPONSE)
        return cls(
            producer_id=_producer_id(b["producer_id"], "producer_id"),
            producer_epoch=_producer_epoch(b["producer_epoch"], "producer_epoch"),
            reinit=s.boolean(b["reinit"], "reinit"),
        )


# --------------------------------------------------------------------------- DESCRIBE_TRANSACTIONS

_TRANSACTIONAL_IDS = frozenset({"transactional_ids"})


@dataclass(frozen=True, slots=True, kw_only=True)
class DescribeTransactionsRequest:
    """The state of each named transactional id (at least one, none twice). Sent to the
    ids' transaction coordinator."""

    API_KEY: ClassVar[ApiKey] = ApiKey.DESCRIBE_TRANSACTIONS
    transactional_ids: tuple[str, ...]

    def to_body(self, version: int) -> dict[str, object]:
        return {"transactional_ids": list(self.transactional_ids)}

    @classmethod
    def from_body(
        cls, body: object, version: int, limits: Limits = DEFAULT_LIMITS
    ) -> DescribeTransactionsRequest:
        b = s.fields(body, "", _TRANSACTIONAL_IDS)
        path = "transactional_ids"
        ids = [
            transactional_id(v, s.item(path, i))
            for i, v in enumerate(s.array(b["transactional_ids"], path, limits))
        ]
        if not ids:
            s.fail(path, "must not be empty")
        s.unique(ids, path, "transactional id")
        return cls(transactional_ids=tuple(ids))


@dataclass(frozen=True, slots=True, kw_only=True)
class TxnParticipantInfo:
    """A participant of a transaction: a topic's partition, or (partition GROUP_PARTICIPANT)
    a consumer group's offsets. On the wire: [name, partition, last_sequence]."""

    name: str
    """A topic, or a group id when `partition` is GROUP_PARTICIPANT."""
    partition: int
    last_sequence: int = NO_SEQUENCE
    """The last acknowledged sequence END_TXN named (NO_SEQUENCE before it, and for groups)."""

    def to_wire(self) -> list[object]:
        return [self.name, self.partition, self.last_sequence]

    @classmethod
    def from_wire(cls, value: object, path: str, limits: Limits) -> TxnParticipantInfo:
        items = s.array(value, path, limits)
        if len(items) != 3:
            s.fail(path, f"expected [name, partition, last_sequence], got {len(items)} items")
        partition = s.int32(items[1], s.item(path, 1), GROUP_PARTICIPANT)
        name_path = s.item(path, 0)
        return cls(
            name=(
                group_id(items[0], name_path)
                if partition == GROUP_PARTICIPANT
                else s.topic(items[0], name_path, limits)
            ),
            partition=partition,
            last_sequence=s.int32(items[2], s.item(path, 2), NO_SEQUENCE),
        )


_TRANSACTION_DESCRIPTION = frozenset(
    {
        "transactional_id",
        "error",
        "message",
        "state",
        "producer_id",
        "producer_epoch",
        "timeout_ms",
        "start_ms",
        "coordinator",
        "participants",
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class TransactionDescription:
    """One transactional id's state, or its error (NOT_COORDINATOR,
    TRANSACTIONAL_ID_NOT_FOUND, ...) with every other field at its default."""

    transactional_id: str
    error: ErrorCode = ErrorCode.NONE
    message: str | None = None
    state: str = ""
    """One of TXN_STATES; "" with an error (and only then)."""
    producer_id: int = -1
    producer_epoch: int = -1
    timeout_ms: int = 0
    start_ms: int = -1
    """Wall-clock milliseconds when the ongoing transaction started (-1: none)."""
    coordinator: int = -1
    """The node id of the broker that answered (the coordinator's leader)."""
    participants: tuple[TxnParticipantInfo, ...] = ()

    def to_wire(self) -> dict[str, object]:
        return {
            "transactional_id": self.transactional_id,
            "error": int(self.error),
            "message": short_message(self.message),
            "state": self.state,
            "producer_id": self.producer_id,
            "producer_epoch": self.producer_epoch,
            "timeout_ms": self.timeout_ms,
            "start_ms": self.start_ms,
            "coordinator": self.coordinator,
            "participants": [p.to_wire() for p in self.participants],
        }

    @classmethod
    def from_wire(cls, value: object, path: str, limits: Limits) -> TransactionDescription:
        b = s.fields(value, path, _TRANSACTION_DESCRIPTION)
        txn_id = transactional_id(b["transactional_id"], s.at(path, "transactional_id"))
        error = s.error_code(b["error"], s.at(path, "error"))
        message = s.opt_text(b["message"], s.at(path, "message"))
        state_path = s.at(path, "state")
        if error is ErrorCode.NONE:
            state = _state(b["state"], state_path)
        else:
            state = s.text(b["state"], state_path)
            if state:
                s.fail(state_path, "must be empty with an error")
        ppath = s.at(path, "participants")
        participants = tuple(
            TxnParticipantInfo.from_wire(v, s.item(ppath, i), limits)
            for i, v in enumerate(s.array(b["participants"], ppath, limits))
        )
        s.unique([(p.name, p.partition) for p in participants], ppath, "participant")
        return cls(
            transactional_id=txn_id,
            error=error,
            message=message,
            state=state,
            producer_id=s.int64(b["producer_id"], s.at(path, "producer_id"), -1),
            producer_epoch=s.int16(b["producer_epoch"], s.at(path, "producer_epoch"), -1),
            timeout_ms=s.int32(b["timeout_ms"], s.at(path, "timeout_ms"), 0),
            start_ms=s.int64(b["start_ms"], s.at(path, "start_ms"), -1),
            coordinator=s.int32(b["coordinator"], s.at(path, "coordinator"), -1),
            participants=participants,
        )


_TRANSACTIONS = frozenset({"transactions"})


@dataclass(frozen=True, slots=True, kw_only=True)
class DescribeTransactionsResponse:
    """One description per transactional id asked (none twice)."""

    API_KEY: ClassVar[ApiKey] = ApiKey.DESCRIBE_TRANSACTIONS
    transactions: tuple[TransactionDescription, ...]

    def to_body(self, version: int) -> dict[str, object]:
        return {"transactions": [t.to_wire() for t in self.transactions]}

    @classmethod
    def from_body(
        cls, body: object, version: int, limits: Limits = DEFAULT_LIMITS
    ) -> DescribeTransactionsResponse:
        b = s.fields(body, "", _TRANSACTIONS)
        transactions = tuple(
            TransactionDescription.from_wire(v, s.item("transactions", i), limits)
            for i, v in enumerate(s.array(b["transactions"], "transactions", limits))
        )
        s.unique([t.transactional_id for t in transactions], "transactions", "transactional id")
        return cls(transactions=transactions)


# --------------------------------------------------------------------------- LIST_TRANSACTIONS

_STATES = frozenset({"states"})


@dataclass(frozen=True, slots=True, kw_only=True)
class ListTransactionsRequest:
    """The transactional ids whose coordinator the answering broker leads (ask every
    broker), only those in one of `states` (each one of TXN_STATES, none twice; empty: all)."""

    API_KEY: ClassVar[ApiKey] = ApiKey.LIST_TRANSACTIONS
    states: tuple[str, ...] = ()

    def to_body(self, version: int) -> dict[str, object]:
        return {"states": list(self.states)}

    @classmethod
    def from_body(
        cls, body: object, version: int, limits: Limits = DEFAULT_LIMITS
    ) -> ListTransactionsRequest:
        b = s.fields(body, "", _STATES)
        states = [
            _state(v, s.item("states", i))
            for i, v in enumerate(s.array(b["states"], "states", limits))
        ]
        s.unique(states, "states", "state")
        return cls(states=tuple(states))


@dataclass(frozen=True, slots=True, kw_only=True)
class ListedTransaction:
    """A transactional id, its producer id, state, the start of its ongoing transaction
    (-1: none) and its number of participants. On the wire: [transactional_id, producer_id,
    state, start_ms, participants]."""

    transactional_id: str
    producer_id: int
    state: str
    start_ms: int
    participants: int

    def to_wire(self) -> list[object]:
        return [
            self.transactional_id,
            self.producer_id,
            self.state,
            self.start_ms,
            self.participants,
        ]

    @classmethod
    def from_wire(cls, value: object, path: str, limits: Limits) -> ListedTransaction:
        items = s.array(value, path, limits)
        if len(items) != 5:
            s.fail(
                path,
                "expected [transactional_id, producer_id, state, start_ms, participants], "
                f"got {len(items)} items",
            )
        return cls(
            transactional_id=transactional_id(items[0], s.item(path, 0)),
            producer_id=s.int64(items[1], s.item(path, 1), -1),
            state=_state(items[2], s.item(path, 2)),
            start_ms=s.int64(items[3], s.item(path, 3), -1),
            participants=s.int32(items[4], s.item(path, 4), 0),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ListTransactionsResponse:
    """The transactions the answering broker coordinates (none twice)."""

    API_KEY: ClassVar[ApiKey] = ApiKey.LIST_TRANSACTIONS
    transactions: tuple[ListedTransaction, ...]

    def to_body(self, version: int) -> dict[str, object]:
        return {"transactions": [t.to_wire() for t in self.transactions]}

    @classmethod
    def from_body(
        cls, body: object, version: int, limits: Limits = DEFAULT_LIMITS
    ) -> ListTransactionsResponse:
        b = s.fields(body, "", _TRANSACTIONS)
        transactions = tuple(
            ListedTransaction.from_wire(v, s.item("transactions", i), limits)
            for i, v in enumerate(s.array(b["transactions"], "transactions", limits))
        )
        s.unique([t.transactional_id for t in transactions], "transactions", "transactional id")
        return cls(transactions=transactions)


# --------------------------------------------------------------------------- ABORT_TRANSACTION

_ABORT_TRANSACTION_REQUEST = frozenset({"transactional_id"})


@dataclass(frozen=True, slots=True, kw_only=True)
class AbortTransactionRequest:
    """An operator's abort of a transactional id's ongoing transaction (its producer is
    fenced: it must call INIT_PRODUCER_ID again). Sent to the id's transaction coordinator."""

    API_KEY: ClassVar[ApiKey] = ApiKey.ABORT_TRANSACTION
    transactional_id: str

    def to_body(self, version: int) -> dict[str, object]:
        return {"transactional_id": self.transactional_id}

    @classmethod
    def from_body(
        cls, body: object, version: int, limits: Limits = DEFAULT_LIMITS
    ) -> AbortTransactionRequest:
        b = s.fields(body, "", _ABORT_TRANSACTION_REQUEST)
        return cls(transactional_id=transactional_id(b["transactional_id"], "transactional_id"))


@dataclass(frozen=True, slots=True, kw_only=True)
class AbortTransactionResponse:
    """The abort is accepted (an empty body: a refusal is the frame's error)."""

    API_KEY: ClassVar[ApiKey] = ApiKey.ABORT_TRANSACTION

    def to_body(self, version: int) -> dict[str, object]:
        return {}

    @classmethod
    def from_body(
        cls, body: object, version: int, limits: Limits = DEFAULT_LIMITS
    ) -> AbortTransactionResponse:
        _empty(body)
        return cls()
