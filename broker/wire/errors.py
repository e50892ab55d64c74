"""Error codes of the wire protocol, and the exceptions the wire layer raises.

Codes reuse Kafka's numbers where the meaning is the same, so that operators and a later
Kafka-protocol listener can map them one to one; Sluice's own codes start at 1000. Whether a
code is retriable, and its default description, live in one table (`_INFO`) beside the enum.
"""

from __future__ import annotations

from enum import IntEnum


class ErrorCode(IntEnum):
    """Error codes on the wire: Kafka's numbers and names where the meaning is the same.
    `.retriable` says whether the same request may succeed later, `.description` what the
    code means."""

    NONE = 0
    UNKNOWN_SERVER_ERROR = -1
    OFFSET_OUT_OF_RANGE = 1
    CORRUPT_MESSAGE = 2
    UNKNOWN_TOPIC_OR_PARTITION = 3
    LEADER_NOT_AVAILABLE = 5
    NOT_LEADER_OR_FOLLOWER = 6
    REQUEST_TIMED_OUT = 7
    MESSAGE_TOO_LARGE = 10
    NETWORK_EXCEPTION = 13
    COORDINATOR_LOAD_IN_PROGRESS = 14
    COORDINATOR_NOT_AVAILABLE = 15
    NOT_COORDINATOR = 16
    INVALID_TOPIC = 17
    RECORD_LIST_TOO_LARGE = 18
    NOT_ENOUGH_REPLICAS = 19
    INVALID_REQUIRED_ACKS = 21
    INVALID_GROUP_ID = 24
    UNKNOWN_MEMBER_ID = 25
    INVALID_SESSION_TIMEOUT = 26
    UNSUPPORTED_VERSION = 35
    TOPIC_ALREADY_EXISTS = 36
    INVALID_PARTITIONS = 37
    INVALID_REPLICATION_FACTOR = 38
    INVALID_REPLICA_ASSIGNMENT = 39
    INVALID_CONFIG = 40
    NOT_CONTROLLER = 41
    INVALID_REQUEST = 42
    OUT_OF_ORDER_SEQUENCE_NUMBER = 45
    DUPLICATE_SEQUENCE_NUMBER = 46
    INVALID_PRODUCER_EPOCH = 47
    INVALID_TXN_STATE = 48
    INVALID_PRODUCER_ID_MAPPING = 49
    INVALID_TRANSACTION_TIMEOUT = 50
    CONCURRENT_TRANSACTIONS = 51
    TRANSACTION_COORDINATOR_FENCED = 52
    STORAGE_ERROR = 56
    UNKNOWN_PRODUCER_ID = 59
    NON_EMPTY_GROUP = 68
    INVALID_RECORD = 87
    UNSTABLE_OFFSET_COMMIT = 88
    GROUP_ID_NOT_FOUND = 69
    THROTTLED = 89
    PRODUCER_FENCED = 90
    TRANSACTIONAL_ID_NOT_FOUND = 105
    FENCED_MEMBER_EPOCH = 110
    UNRELEASED_INSTANCE_ID = 111
    UNSUPPORTED_ASSIGNOR = 112
    STALE_MEMBER_EPOCH = 113
    # Sluice's own codes.
    INVALID_FRAME = 1000
    FRAME_TOO_LARGE = 1001
    BACKPRESSURE = 1002
    NOT_READY = 1003
    INVALID_REGULAR_EXPRESSION = 1004
    TRANSACTION_ABORTED = 1005
    TRANSACTION_TIMED_OUT = 1006

    @property
    def retriable(self) -> bool:
        """True when the same request may succeed if sent again later (after a metadata
        refresh for leadership errors)."""
        return _INFO[self][0]

    @property
    def description(self) -> str:
        return _INFO[self][1]

    @classmethod
    def from_wire(cls, value: int) -> ErrorCode:
        """The code for a number read from the wire; a number this version does not know
        (a newer peer's code) becomes UNKNOWN_SERVER_ERROR, as Kafka's clients do."""
        try:
            return cls(value)
        except ValueError:
            return cls.UNKNOWN_SERVER_ERROR


_INFO: dict[ErrorCode, tuple[bool, str]] = {
    # code: (retriable, description)
    ErrorCode.NONE: (False, "no error"),
    ErrorCode.UNKNOWN_SERVER_ERROR: (False, "unexpected error on the server"),
    ErrorCode.OFFSET_OUT_OF_RANGE: (False, "the offset is outside the partition's log"),
    ErrorCode.CORRUPT_MESSAGE: (True, "a record batch failed its checks (CRC, size, shape)"),
    ErrorCode.UNKNOWN_TOPIC_OR_PARTITION: (True, "this broker does not host the partition"),
    ErrorCode.LEADER_NOT_AVAILABLE: (True, "the partition has no leader at the moment"),
    ErrorCode.NOT_LEADER_OR_FOLLOWER: (True, "this broker does not lead the partition"),
    ErrorCode.REQUEST_TIMED_OUT: (True, "the request did not complete within its timeout"),
    ErrorCode.MESSAGE_TOO_LARGE: (False, "the batch is larger than the topic accepts"),
    ErrorCode.NETWORK_EXCEPTION: (True, "the connection failed before a response arrived"),
    ErrorCode.INVALID_TOPIC: (False, "the topic name is invalid or reserved"),
    ErrorCode.RECORD_LIST_TOO_LARGE: (False, "the request carries too many bytes of batches"),
    ErrorCode.INVALID_REQUIRED_ACKS: (False, "acks must be -1 (a Raft quorum)"),
    ErrorCode.UNSUPPORTED_VERSION: (False, "the API version is not supported"),
    ErrorCode.TOPIC_ALREADY_EXISTS: (False, "a topic with this name exists"),
    ErrorCode.INVALID_PARTITIONS: (False, "the partition count is invalid"),
    ErrorCode.INVALID_REPLICATION_FACTOR: (False, "the replication factor is invalid"),
    ErrorCode.INVALID_REPLICA_ASSIGNMENT: (False, "a replica list names no broker or one twice"),
    ErrorCode.INVALID_CONFIG: (False, "a configuration key or value is invalid"),
    ErrorCode.NOT_ENOUGH_REPLICAS: (True, "fewer live brokers than the replication factor"),
    ErrorCode.NOT_CONTROLLER: (True, "this broker is not the controller"),
    ErrorCode.INVALID_REQUEST: (False, "the request is malformed"),
    ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER: (False, "a gap in the producer's sequence"),
    ErrorCode.DUPLICATE_SEQUENCE_NUMBER: (False, "the batch was already written"),
    ErrorCode.INVALID_PRODUCER_EPOCH: (False, "the producer was fenced by a newer epoch"),
    ErrorCode.STORAGE_ERROR: (True, "the broker's storage failed"),
    ErrorCode.UNKNOWN_PRODUCER_ID: (False, "the broker has no state for this producer id"),
    ErrorCode.THROTTLED: (True, "a quota was exceeded; retry after a pause"),
    ErrorCode.INVALID_RECORD: (False, "a record the topic refuses (no key on a compacted topic)"),
    ErrorCode.INVALID_FRAME: (False, "the frame is not valid CBOR of the expected shape"),
    ErrorCode.FRAME_TOO_LARGE: (False, "the frame is larger than the peer accepts"),
    ErrorCode.BACKPRESSURE: (True, "the broker is overloaded; retry after a pause"),
    ErrorCode.NOT_READY: (True, "the broker is still starting"),
    ErrorCode.COORDINATOR_LOAD_IN_PROGRESS: (True, "the coordinator is still loading its state"),
    ErrorCode.COORDINATOR_NOT_AVAILABLE: (True, "the group's coordinator is not available yet"),
    ErrorCode.NOT_COORDINATOR: (True, "this broker is not the group's coordinator"),
    ErrorCode.INVALID_GROUP_ID: (False, "the group id is invalid"),
    ErrorCode.UNKNOWN_MEMBER_ID: (False, "the member is not in the group (expired or left)"),
    ErrorCode.INVALID_SESSION_TIMEOUT: (False, "the session timeout is outside the bounds"),
    ErrorCode.NON_EMPTY_GROUP: (False, "the group has live members"),
    ErrorCode.GROUP_ID_NOT_FOUND: (False, "no such group"),
    ErrorCode.FENCED_MEMBER_EPOCH: (False, "the member epoch is not the member's: rejoin"),
    ErrorCode.UNRELEASED_INSTANCE_ID: (
        True,
        "another member holds this instance id until it leaves or its session expires",
    ),
    ErrorCode.UNSUPPORTED_ASSIGNOR: (False, "the broker has no assignor of that name"),
    ErrorCode.STALE_MEMBER_EPOCH: (
        True,
        "the member's view is behind (its epoch moved, or the partition is not its own)",
    ),
    ErrorCode.INVALID_REGULAR_EXPRESSION: (False, "the subscription's pattern does not compile"),
    ErrorCode.INVALID_TXN_STATE: (False, "the request does not fit the transaction's state"),
    ErrorCode.INVALID_PRODUCER_ID_MAPPING: (
        False,
        "the producer id is not the one the transactional id holds",
    ),
    ErrorCode.INVALID_TRANSACTION_TIMEOUT: (False, "the transaction timeout is out of bounds"),
    ErrorCode.CONCURRENT_TRANSACTIONS: (
        True,
        "the producer's previous transaction is still completing",
    ),
    ErrorCode.TRANSACTION_COORDINATOR_FENCED: (
        False,
        "the request came from an older term of the transaction coordinator",
    ),
    ErrorCode.UNSTABLE_OFFSET_COMMIT: (
        True,
        "an offset commit of an open transaction is pending for the partition",
    ),
    ErrorCode.PRODUCER_FENCED: (
        False,
        "a newer producer with the same transactional id fenced this one",
    ),
    ErrorCode.TRANSACTIONAL_ID_NOT_FOUND: (False, "no such transactional id"),
    ErrorCode.TRANSACTION_ABORTED: (
        False,
        "the transaction was aborted (a participant refused it, or an operator aborted it)",
    ),
    ErrorCode.TRANSACTION_TIMED_OUT: (
        False,
        "the transaction ran past its timeout: it was aborted and the producer fenced",
    ),
}
assert set(_INFO) == set(ErrorCode), "every ErrorCode needs a row in _INFO"


MAX_ERROR_MESSAGE = 4096
"""Characters of an error message on the wire (at most 16 KiB of UTF-8: within every
client's text limit, whatever the message quotes)."""


def short_message(message: str | None) -> str | None:
    """`message` cut to MAX_ERROR_MESSAGE characters, for the wire."""
    if message is None or len(message) <= MAX_ERROR_MESSAGE:
        return message
    return message[: MAX_ERROR_MESSAGE - 3] + "..."


class CodedError(Exception):
    """An error that is a value: a code and a message (the message names what was wrong)."""

    code: ErrorCode
    message: str

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


class WireError(CodedError):
    """The peer broke the protocol (found while decoding a frame or a message).

    `correlation_id` is set when the request header could be read, so the server can answer
    with an error response; when it is None the server closes the connection.
    """

    correlation_id: int | None

    def __init__(self, code: ErrorCode, message: str, *, correlation_id: int | None = None) -> None:
        super().__init__(code, message)
        self.correlation_id = correlation_id


class BatchError(CodedError):
    """A record batch failed a check (the broker answers the partition with `code`)."""


class CorruptBatchError(BatchError):
    """A batch's records could not be decoded (the client raises CorruptBatch naming the
    batch's offsets)."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.CORRUPT_MESSAGE, message)
