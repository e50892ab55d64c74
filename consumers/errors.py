"""Typed exceptions of the client library.

Every error the library raises is a `SluiceError` with `.code` (an `ErrorCode`), `.message`
and `.retriable`. A broker error becomes an instance of the class `ERROR_CLASSES[code]`
(`error_for(code, message)`): ONE table maps every `ErrorCode` except NONE to exactly one
class, and every class named in the table answers for its own codes only. Families share a
base class so callers can catch them together (`LeadershipError`, `InvalidRequestError`,
`BrokerBusyError`, `SequenceError`).

Errors that arise in the client itself (no broker answered) carry the closest code and fix
`retriable` explicitly: `BrokerUnavailableError` (the connection failed; retriable),
`BufferFull` (the producer's buffer is full; retry after it drains), `ClientClosedError`,
and `CorruptBatch` (a fetched batch failed to decode; retrying the fetch will not help, skip
it).
"""

from __future__ import annotations

from collections.abc import Mapping

from broker.wire.errors import ErrorCode

__all__ = [
    "ERROR_CLASSES",
    "BackpressureError",
    "BrokerBusyError",
    "BrokerUnavailableError",
    "BufferFull",
    "ClientClosedError",
    "ConcurrentTransactionsError",
    "CoordinatorError",
    "CoordinatorLoadInProgressError",
    "CoordinatorNotAvailableError",
    "CorruptBatch",
    "CorruptMessageError",
    "DuplicateSequenceError",
    "FencedMemberEpochError",
    "FrameTooLargeError",
    "GroupError",
    "GroupIdNotFoundError",
    "GroupMemberError",
    "InvalidConfigError",
    "InvalidFrameError",
    "InvalidGroupIdError",
    "InvalidPartitionsError",
    "InvalidProducerIdMappingError",
    "InvalidRecordError",
    "InvalidRegularExpressionError",
    "InvalidReplicaAssignmentError",
    "InvalidReplicationFactorError",
    "InvalidRequestError",
    "InvalidRequiredAcksError",
    "InvalidSessionTimeoutError",
    "InvalidTopicError",
    "InvalidTransactionTimeoutError",
    "InvalidTxnStateError",
    "LeaderNotAvailableError",
    "LeadershipError",
    "MessageTooLargeError",
    "NonEmptyGroupError",
    "NotControllerError",
    "NotCoordinatorError",
    "NotEnoughReplicasError",
    "NotLeaderError",
    "NotReadyError",
    "OffsetOutOfRangeError",
    "OutOfOrderSequenceError",
    "ProducerFencedError",
    "RecordListTooLargeError",
    "RequestTimedOutError",
    "SequenceError",
    "SluiceError",
    "StaleMemberEpochError",
    "StorageError",
    "ThrottledError",
    "TopicAlreadyExistsError",
    "TransactionAbortedError",
    "TransactionCoordinatorFencedError",
    "TransactionError",
    "TransactionTimedOutError",
    "TransactionalIdNotFoundError",
    "TransactionalProducerFencedError",
    "UnknownMemberIdError",
    "UnknownProducerIdError",
    "UnknownServerError",
    "UnknownTopicError",
    "UnreleasedInstanceIdError",
    "UnstableOffsetCommitError",
    "UnsupportedAssignorError",
    "UnsupportedVersionError",
    "error_for",
]


class SluiceError(Exception):
    """Base of every error the client library raises.

    `code` is the broker's error code (or the closest one for a client-side error),
    `message` says what went wrong, `retriable` whether the same operation may succeed later.
    """

    default_code: ErrorCode = ErrorCode.UNKNOWN_SERVER_ERROR

    def __init__(
        self,
        message: str | None = None,
        *,
        code: ErrorCode | None = None,
        retriable: bool | None = None,
    ) -> None:
        self.code: ErrorCode = self.default_code if code is None else code
        self.message: str = message if message else self.code.description
        self._retriable = retriable
        super().__init__(self.message)

    @property
    def retriable(self) -> bool:
        """Whether the same operation may succeed later: the code's own answer unless the
        client knows better (e.g. a topic the controller says does not exist)."""
        return self.code.retriable if self._retriable is None else self._retriable

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"

    def __reduce__(self) -> tuple[object, ...]:
        """Copy and pickle any subclass, whatever its constructor takes."""
        return (_rebuild, (type(self), self.args, dict(self.__dict__)))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, code={self.code.name})"


def _rebuild(
    cls: type[SluiceError], args: tuple[object, ...], state: dict[str, object]
) -> SluiceError:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


# --------------------------------------------------------------------------- broker families


class UnknownServerError(SluiceError):
    default_code = ErrorCode.UNKNOWN_SERVER_ERROR


class OffsetOutOfRangeError(SluiceError):
    default_code = ErrorCode.OFFSET_OUT_OF_RANGE


class CorruptMessageError(SluiceError):
    """The broker found a batch that failed its checks (CRC, size, shape)."""

    default_code = ErrorCode.CORRUPT_MESSAGE


class UnknownTopicError(SluiceError):
    """UNKNOWN_TOPIC_OR_PARTITION (retriable: metadata may be stale)."""

    default_code = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION


class LeadershipError(SluiceError):
    """The request went to a broker that does not (yet) lead the partition: refresh
    metadata and retry."""

    default_code = ErrorCode.NOT_LEADER_OR_FOLLOWER


class NotLeaderError(LeadershipError):
    default_code = ErrorCode.NOT_LEADER_OR_FOLLOWER


class LeaderNotAvailableError(LeadershipError):
    default_code = ErrorCode.LEADER_NOT_AVAILABLE


class RequestTimedOutError(SluiceError):
    default_code = ErrorCode.REQUEST_TIMED_OUT


class MessageTooLargeError(SluiceError):
    default_code = ErrorCode.MESSAGE_TOO_LARGE


class RecordListTooLargeError(MessageTooLargeError):
    default_code = ErrorCode.RECORD_LIST_TOO_LARGE


class BrokerUnavailableError(SluiceError):
    """The connection failed (or could not be made) before a response arrived. Retriable;
    whether the request took effect is unknown."""

    default_code = ErrorCode.NETWORK_EXCEPTION


class InvalidTopicError(SluiceError):
    default_code = ErrorCode.INVALID_TOPIC


class NotEnoughReplicasError(SluiceError):
    default_code = ErrorCode.NOT_ENOUGH_REPLICAS


class UnsupportedVersionError(SluiceError):
    default_code = ErrorCode.UNSUPPORTED_VERSION


class TopicAlreadyExistsError(SluiceError):
    default_code = ErrorCode.TOPIC_ALREADY_EXISTS


class InvalidPartitionsError(SluiceError):
    default_code = ErrorCode.INVALID_PARTITIONS


class InvalidReplicationFactorError(SluiceError):
    default_code = ErrorCode.INVALID_REPLICATION_FACTOR


class InvalidRecordError(SluiceError):
    """A record the topic cannot take as it is (a compacted topic's record without a key)."""

    default_code = ErrorCode.INVALID_RECORD


class InvalidReplicaAssignmentError(SluiceError):
    default_code = ErrorCode.INVALID_REPLICA_ASSIGNMENT


class InvalidConfigError(SluiceError):
    default_code = ErrorCode.INVALID_CONFIG


class NotControllerError(SluiceError):
    default_code = ErrorCode.NOT_CONTROLLER


class InvalidRequestError(SluiceError):
    """The broker could not accept the request as sent (a client bug or a version skew)."""

    default_code = ErrorCode.INVALID_REQUEST


class InvalidRequiredAcksError(InvalidRequestError):
    default_code = ErrorCode.INVALID_REQUIRED_ACKS


class InvalidFrameError(InvalidRequestError):
    default_code = ErrorCode.INVALID_FRAME


class FrameTooLargeError(InvalidRequestError):
    default_code = ErrorCode.FRAME_TOO_LARGE


class SequenceError(SluiceError):
    """Idempotent sequencing failed for a batch (the producer bumps its epoch)."""

    default_code = ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER


class OutOfOrderSequenceError(SequenceError):
    default_code = ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER


class DuplicateSequenceError(SequenceError):
    default_code = ErrorCode.DUPLICATE_SEQUENCE_NUMBER


class UnknownProducerIdError(SequenceError):
    default_code = ErrorCode.UNKNOWN_PRODUCER_ID


class ProducerFencedError(SluiceError):
    """INVALID_PRODUCER_EPOCH: a newer instance of this producer exists. Fatal: the producer
    fails everything after it."""

    default_code = ErrorCode.INVALID_PRODUCER_EPOCH


class StorageError(SluiceError):
    default_code = ErrorCode.STORAGE_ERROR


class BrokerBusyError(SluiceError):
    """The broker asks the client to slow down; retry after a pause."""

    default_code = ErrorCode.BACKPRESSURE


class BackpressureError(BrokerBusyError):
    default_code = ErrorCode.BACKPRESSURE


class ThrottledError(BrokerBusyError):
    default_code = ErrorCode.THROTTLED


class NotReadyError(SluiceError):
    default_code = ErrorCode.NOT_READY


class CoordinatorError(SluiceError):
    """The group's coordinator moved or is not there yet: find it again and retry."""

    default_code = ErrorCode.NOT_COORDINATOR


class NotCoordinatorError(CoordinatorError):
    default_code = ErrorCode.NOT_COORDINATOR


class CoordinatorNotAvailableError(CoordinatorError):
    default_code = ErrorCode.COORDINATOR_NOT_AVAILABLE


class CoordinatorLoadInProgressError(CoordinatorError):
    default_code = ErrorCode.COORDINATOR_LOAD_IN_PROGRESS


class GroupMemberError(SluiceError):
    """The coordinator refused this member's view. Fenced or unknown: the member has lost
    its partitions and rejoins; stale epoch or unreleased instance id (retriable): it
    heartbeats, then tries again."""

    default_code = ErrorCode.FENCED_MEMBER_EPOCH


class FencedMemberEpochError(GroupMemberError):
    default_code = ErrorCode.FENCED_MEMBER_EPOCH


class UnknownMemberIdError(GroupMemberError):
    default_code = ErrorCode.UNKNOWN_MEMBER_ID


class StaleMemberEpochError(GroupMemberError):
    """Retriable: the member's epoch moved (heartbeat, then commit again)."""

    default_code = ErrorCode.STALE_MEMBER_EPOCH


class UnreleasedInstanceIdError(GroupMemberError):
    """Retriable: another member holds the instance id until it leaves or expires."""

    default_code = ErrorCode.UNRELEASED_INSTANCE_ID


class GroupError(SluiceError):
    """A group operation that cannot succeed as asked."""

    default_code = ErrorCode.GROUP_ID_NOT_FOUND


class GroupIdNotFoundError(GroupError):
    default_code = ErrorCode.GROUP_ID_NOT_FOUND


class NonEmptyGroupError(GroupError):
    """The group has live members (delete and reset-offsets need an empty group)."""

    default_code = ErrorCode.NON_EMPTY_GROUP


class InvalidGroupIdError(GroupError):
    default_code = ErrorCode.INVALID_GROUP_ID


class InvalidSessionTimeoutError(GroupError):
    default_code = ErrorCode.INVALID_SESSION_TIMEOUT


class UnsupportedAssignorError(GroupError):
    default_code = ErrorCode.UNSUPPORTED_ASSIGNOR


class InvalidRegularExpressionError(GroupError):
    default_code = ErrorCode.INVALID_REGULAR_EXPRESSION


class TransactionalProducerFencedError(ProducerFencedError):
    """PRODUCER_FENCED: a newer producer with the same transactional id called
    InitProducerId. Fatal: close this producer."""

    default_code = ErrorCode.PRODUCER_FENCED


class TransactionError(SluiceError):
    """A transaction could not go on as asked (the family of transaction errors)."""

    default_code = ErrorCode.INVALID_TXN_STATE


class InvalidTxnStateError(TransactionError):
    default_code = ErrorCode.INVALID_TXN_STATE


class InvalidProducerIdMappingError(TransactionError):
    default_code = ErrorCode.INVALID_PRODUCER_ID_MAPPING


class InvalidTransactionTimeoutError(TransactionError):
    default_code = ErrorCode.INVALID_TRANSACTION_TIMEOUT


class ConcurrentTransactionsError(TransactionError):
    """The previous transaction is still completing (retriable: the client retries)."""

    default_code = ErrorCode.CONCURRENT_TRANSACTIONS


class TransactionCoordinatorFencedError(TransactionError):
    default_code = ErrorCode.TRANSACTION_COORDINATOR_FENCED


class TransactionalIdNotFoundError(TransactionError):
    default_code = ErrorCode.TRANSACTIONAL_ID_NOT_FOUND


class TransactionAbortedError(TransactionError):
    """The transaction was aborted (a participant refused it, an operator aborted it, or a
    newer producer fenced it): nothing of it is visible to read_committed readers."""

    default_code = ErrorCode.TRANSACTION_ABORTED


class TransactionTimedOutError(TransactionError):
    """The transaction ran past its timeout: the coordinator aborted it and fenced the
    producer, which must be created again."""

    default_code = ErrorCode.TRANSACTION_TIMED_OUT


class UnstableOffsetCommitError(GroupError):
    """An open transaction holds an offset of the partition: fetch it again once the
    transaction ended (retriable)."""

    default_code = ErrorCode.UNSTABLE_OFFSET_COMMIT


ERROR_CLASSES: Mapping[ErrorCode, type[SluiceError]] = {
    ErrorCode.UNKNOWN_SERVER_ERROR: UnknownServerError,
    ErrorCode.OFFSET_OUT_OF_RANGE: OffsetOutOfRangeError,
    ErrorCode.CORRUPT_MESSAGE: CorruptMessageError,
    ErrorCode.UNKNOWN_TOPIC_OR_PARTITION: UnknownTopicError,
    ErrorCode.LEADER_NOT_AVAILABLE: LeaderNotAvailableError,
    ErrorCode.NOT_LEADER_OR_FOLLOWER: NotLeaderError,
    ErrorCode.REQUEST_TIMED_OUT: RequestTimedOutError,
    ErrorCode.MESSAGE_TOO_LARGE: MessageTooLargeError,
    ErrorCode.NETWORK_EXCEPTION: BrokerUnavailableError,
    ErrorCode.INVALID_TOPIC: InvalidTopicError,
    ErrorCode.RECORD_LIST_TOO_LARGE: RecordListTooLargeError,
    ErrorCode.NOT_ENOUGH_REPLICAS: NotEnoughReplicasError,
    ErrorCode.INVALID_REQUIRED_ACKS: InvalidRequiredAcksError,
    ErrorCode.UNSUPPORTED_VERSION: UnsupportedVersionError,
    ErrorCode.TOPIC_ALREADY_EXISTS: TopicAlreadyExistsError,
    ErrorCode.INVALID_PARTITIONS: InvalidPartitionsError,
    ErrorCode.INVALID_REPLICATION_FACTOR: InvalidReplicationFactorError,
    ErrorCode.INVALID_REPLICA_ASSIGNMENT: InvalidReplicaAssignmentError,
    ErrorCode.INVALID_RECORD: InvalidRecordError,
    ErrorCode.INVALID_CONFIG: InvalidConfigError,
    ErrorCode.NOT_CONTROLLER: NotControllerError,
    ErrorCode.INVALID_REQUEST: InvalidRequestError,
    ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER: OutOfOrderSequenceError,
    ErrorCode.DUPLICATE_SEQUENCE_NUMBER: DuplicateSequenceError,
    ErrorCode.INVALID_PRODUCER_EPOCH: ProducerFencedError,
    ErrorCode.STORAGE_ERROR: StorageError,
    ErrorCode.UNKNOWN_PRODUCER_ID: UnknownProducerIdError,
    ErrorCode.THROTTLED: ThrottledError,
    ErrorCode.INVALID_FRAME: InvalidFrameError,
    ErrorCode.FRAME_TOO_LARGE: FrameTooLargeError,
    ErrorCode.BACKPRESSURE: BackpressureError,
    ErrorCode.NOT_READY: NotReadyError,
    ErrorCode.COORDINATOR_LOAD_IN_PROGRESS: CoordinatorLoadInProgressError,
    ErrorCode.COORDINATOR_NOT_AVAILABLE: CoordinatorNotAvailableError,
    ErrorCode.NOT_COORDINATOR: NotCoordinatorError,
    ErrorCode.INVALID_GROUP_ID: InvalidGroupIdError,
    ErrorCode.UNKNOWN_MEMBER_ID: UnknownMemberIdError,
    ErrorCode.INVALID_SESSION_TIMEOUT: InvalidSessionTimeoutError,
    ErrorCode.NON_EMPTY_GROUP: NonEmptyGroupError,
    ErrorCode.GROUP_ID_NOT_FOUND: GroupIdNotFoundError,
    ErrorCode.FENCED_MEMBER_EPOCH: FencedMemberEpochError,
    ErrorCode.UNRELEASED_INSTANCE_ID: UnreleasedInstanceIdError,
    ErrorCode.UNSUPPORTED_ASSIGNOR: UnsupportedAssignorError,
    ErrorCode.STALE_MEMBER_EPOCH: StaleMemberEpochError,
    ErrorCode.INVALID_REGULAR_EXPRESSION: InvalidRegularExpressionError,
    ErrorCode.INVALID_TXN_STATE: InvalidTxnStateError,
    ErrorCode.INVALID_PRODUCER_ID_MAPPING: InvalidProducerIdMappingError,
    ErrorCode.INVALID_TRANSACTION_TIMEOUT: InvalidTransactionTimeoutError,
    ErrorCode.CONCURRENT_TRANSACTIONS: ConcurrentTransactionsError,
    ErrorCode.TRANSACTION_COORDINATOR_FENCED: TransactionCoordinatorFencedError,
    ErrorCode.UNSTABLE_OFFSET_COMMIT: UnstableOffsetCommitError,
    ErrorCode.PRODUCER_FENCED: TransactionalProducerFencedError,
    ErrorCode.TRANSACTIONAL_ID_NOT_FOUND: TransactionalIdNotFoundError,
    ErrorCode.TRANSACTION_ABORTED: TransactionAbortedError,
    ErrorCode.TRANSACTION_TIMED_OUT: TransactionTimedOutError,
}
"""The one table: broker error code -> exception class (every code but NONE)."""


def error_for(code: ErrorCode, message: str | None = None) -> SluiceError:
    """The typed exception for a broker error code (NONE is not an error: ValueError)."""
    if code is ErrorCode.NONE:
        raise ValueError("ErrorCode.NONE is not an error")
    return ERROR_CLASSES.get(code, UnknownServerError)(message, code=code)


# --------------------------------------------------------------------------- client-side


class BufferFull(SluiceError):
    """`send_nowait` found the producer's buffer full (retriable once it drains)."""

    default_code = ErrorCode.BACKPRESSURE

    @property
    def retriable(self) -> bool:
        return True


class ClientClosedError(SluiceError):
    """The client was closed (or never entered with `async with`)."""

    default_code = ErrorCode.NETWORK_EXCEPTION

    @property
    def retriable(self) -> bool:
        return False


class CorruptBatch(SluiceError):
    """A fetched batch failed to decode. The consumer's position stays at `base_offset`;
    `Consumer.skip_corrupt(tp)` (or a seek past `last_offset`) moves past it.

    `last_offset` is None when the batch's extent could not be read (then seek past it).
    Not retriable: fetching the same bytes again gives the same error.
    """

    default_code = ErrorCode.CORRUPT_MESSAGE

    def __init__(
        self, topic: str, partition: int, base_offset: int, last_offset: int | None, reason: str
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.base_offset = base_offset
        self.last_offset = last_offset
        self.reason = reason
        extent = "?" if last_offset is None else str(last_offset)
        super().__init__(
            f"corrupt batch in {topic}[{partition}] at offsets {base_offset}..{extent}: {reason}"
        )

    @property
    def retriable(self) -> bool:
        return False
