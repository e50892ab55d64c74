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
    `str(error)` is "CODE: message" (the code once, even when the message already starts
    with it).
    """

    default_code: ErrorCode = ErrorCode.UNKNOWN_SERVER_ERROR

    def __init__(
        self,
        message: str | None = None,
        *,
        code: ErrorCode | None = None,
        retriable: bool | None = None,
    ) -> None:
        """`message` (default: the code's description), `code` (default: the class's own)
        and `retriable` (default: the code's own answer)."""
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
        prefix = f"{self.code.name}: "
        return self.message if self.message.startswith(prefix) else prefix + self.message

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
    """UNKNOWN_SERVER_ERROR: the broker failed in a way it did not classify (also any code
    newer than this client). Not retriable: report it with the broker's log."""

    default_code = ErrorCode.UNKNOWN_SERVER_ERROR


class OffsetOutOfRangeError(SluiceError):
    """OFFSET_OUT_OF_RANGE: the offset is outside the partition's log (before its start
    after retention, or past its end). Not retriable as is: seek to a valid offset (the
    consumer does so by `auto_offset_reset`)."""

    default_code = ErrorCode.OFFSET_OUT_OF_RANGE


class CorruptMessageError(SluiceError):
    """CORRUPT_MESSAGE: the broker found a batch that failed its checks (CRC, size, shape).
    Retriable (a batch damaged in transit is sent again); the producer retries it."""

    default_code = ErrorCode.CORRUPT_MESSAGE


class UnknownTopicError(SluiceError):
    """UNKNOWN_TOPIC_OR_PARTITION: no such topic or partition. Retriable by its code (the
    metadata may be stale); not retriable when the controller itself says so (deleting,
    describing or naming a partition the topic does not have): create the topic or fix the
    name."""

    default_code = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION


class LeadershipError(SluiceError):
    """The request went to a broker that does not (yet) lead the partition. Retriable: the
    client refreshes its metadata and retries at the leader."""

    default_code = ErrorCode.NOT_LEADER_OR_FOLLOWER


class NotLeaderError(LeadershipError):
    """NOT_LEADER_OR_FOLLOWER: this broker does not lead the partition (leadership moved).
    Retriable: refresh metadata and retry at the new leader."""

    default_code = ErrorCode.NOT_LEADER_OR_FOLLOWER


class LeaderNotAvailableError(LeadershipError):
    """LEADER_NOT_AVAILABLE: the partition has no leader now (an election is running).
    Retriable: retry after a moment."""

    default_code = ErrorCode.LEADER_NOT_AVAILABLE


class RequestTimedOutError(SluiceError):
    """REQUEST_TIMED_OUT: no answer in time (the broker's own timeout, the connection's, or
    the operation's `timeout_ms`). Retriable; whether the request took effect is unknown."""

    default_code = ErrorCode.REQUEST_TIMED_OUT


class MessageTooLargeError(SluiceError):
    """MESSAGE_TOO_LARGE: a batch is larger than the topic's `max.message.bytes`. Not
    retriable: send smaller records (or raise the topic's limit)."""

    default_code = ErrorCode.MESSAGE_TOO_LARGE


class RecordListTooLargeError(MessageTooLargeError):
    """RECORD_LIST_TOO_LARGE: one request carries more batch bytes than the broker takes.
    Not retriable as is: send less per request (smaller `batch_bytes`)."""

    default_code = ErrorCode.RECORD_LIST_TOO_LARGE


class BrokerUnavailableError(SluiceError):
    """NETWORK_EXCEPTION: the connection failed (or could not be made) before a response
    arrived. Retriable: the client reconnects (to another broker where it can) until its
    timeout; whether the request took effect is unknown."""

    default_code = ErrorCode.NETWORK_EXCEPTION


class InvalidTopicError(SluiceError):
    """INVALID_TOPIC: the topic name is not valid (1-249 of ASCII letters, digits, '.', '_'
    and '-'; not '.' or '..') or is reserved (names starting with '__'). Not retriable:
    use another name."""

    default_code = ErrorCode.INVALID_TOPIC


class NotEnoughReplicasError(SluiceError):
    """NOT_ENOUGH_REPLICAS: fewer brokers are alive than the replication factor asks for
    (enough are registered). Retriable: the admin client retries until its timeout, as
    failed brokers may come back; the message says how many are alive."""

    default_code = ErrorCode.NOT_ENOUGH_REPLICAS


class UnsupportedVersionError(SluiceError):
    """UNSUPPORTED_VERSION: the broker and this client share no version of an API. Not
    retriable: upgrade the older side."""

    default_code = ErrorCode.UNSUPPORTED_VERSION


class TopicAlreadyExistsError(SluiceError):
    """TOPIC_ALREADY_EXISTS: a topic with this name exists. Not retriable: use it, or
    delete it first."""

    default_code = ErrorCode.TOPIC_ALREADY_EXISTS


class InvalidPartitionsError(SluiceError):
    """INVALID_PARTITIONS: the partition count is outside 1..10000 (or lower than the
    topic's, when altering). Not retriable: ask for another count."""

    default_code = ErrorCode.INVALID_PARTITIONS


class InvalidReplicationFactorError(SluiceError):
    """INVALID_REPLICATION_FACTOR: the replication factor is below 1 or above the number of
    brokers registered in the cluster (waiting would not help). Not retriable: ask for
    fewer replicas, or add brokers first."""

    default_code = ErrorCode.INVALID_REPLICATION_FACTOR


class InvalidRecordError(SluiceError):
    """INVALID_RECORD: a record the topic cannot take as it is (a compacted topic's record
    without a key). Not retriable: fix the record."""

    default_code = ErrorCode.INVALID_RECORD


class InvalidReplicaAssignmentError(SluiceError):
    """INVALID_REPLICA_ASSIGNMENT: a replica list names no broker, an unknown one, or one
    twice. Not retriable: fix the assignment."""

    default_code = ErrorCode.INVALID_REPLICA_ASSIGNMENT


class InvalidConfigError(SluiceError):
    """INVALID_CONFIG: a topic setting's key is unknown or its value invalid. Not
    retriable: fix the setting."""

    default_code = ErrorCode.INVALID_CONFIG


class NotControllerError(SluiceError):
    """NOT_CONTROLLER: the broker asked is not the controller (it moved, or none is elected
    yet). Retriable: the admin client asks the metadata for the controller again."""

    default_code = ErrorCode.NOT_CONTROLLER


class InvalidRequestError(SluiceError):
    """INVALID_REQUEST: the broker could not accept the request as sent (a client bug or a
    version skew; the message names the field). Not retriable: report it."""

    default_code = ErrorCode.INVALID_REQUEST


class InvalidRequiredAcksError(InvalidRequestError):
    """INVALID_REQUIRED_ACKS: acks other than -1 (a Raft quorum). Not retriable."""

    default_code = ErrorCode.INVALID_REQUIRED_ACKS


class InvalidFrameError(InvalidRequestError):
    """INVALID_FRAME: a frame that is not strict CBOR of the expected shape. Not retriable:
    a client bug."""

    default_code = ErrorCode.INVALID_FRAME


class FrameTooLargeError(InvalidRequestError):
    """FRAME_TOO_LARGE: a frame larger than the peer accepts. Not retriable: send less per
    request."""

    default_code = ErrorCode.FRAME_TOO_LARGE


class SequenceError(SluiceError):
    """Idempotent sequencing failed for a batch. Not retriable as is: the producer bumps its
    epoch and sends the batches that follow under it."""

    default_code = ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER


class OutOfOrderSequenceError(SequenceError):
    """OUT_OF_ORDER_SEQUENCE_NUMBER: a gap in the producer's sequence (a batch before it was
    lost). Not retriable: the producer bumps its epoch; the batch fails."""

    default_code = ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER


class DuplicateSequenceError(SequenceError):
    """DUPLICATE_SEQUENCE_NUMBER: the batch was already written (the producer takes the first
    copy's offsets). Not retriable, and needs nothing."""

    default_code = ErrorCode.DUPLICATE_SEQUENCE_NUMBER


class UnknownProducerIdError(SequenceError):
    """UNKNOWN_PRODUCER_ID: the partition no longer holds state for this producer (it
    expired). Not retriable: the producer bumps its epoch."""

    default_code = ErrorCode.UNKNOWN_PRODUCER_ID


class ProducerFencedError(SluiceError):
    """INVALID_PRODUCER_EPOCH: a newer instance of this producer exists. Fatal and not
    retriable: the producer fails everything after it; close it."""

    default_code = ErrorCode.INVALID_PRODUCER_EPOCH


class StorageError(SluiceError):
    """STORAGE_ERROR: the broker's storage failed. Retriable (another replica may lead
    soon); check the broker's disk."""

    default_code = ErrorCode.STORAGE_ERROR


class BrokerBusyError(SluiceError):
    """The broker asks the client to slow down. Retriable: retry after a pause (the client
    backs off on its own)."""

    default_code = ErrorCode.BACKPRESSURE


class BackpressureError(BrokerBusyError):
    """BACKPRESSURE: the broker is overloaded. Retriable after a pause."""

    default_code = ErrorCode.BACKPRESSURE


class ThrottledError(BrokerBusyError):
    """THROTTLED: a quota was exceeded. Retriable after a pause."""

    default_code = ErrorCode.THROTTLED


class NotReadyError(SluiceError):
    """NOT_READY: the broker is still starting (catching up with the metadata log).
    Retriable: retry after a moment."""

    default_code = ErrorCode.NOT_READY


class CoordinatorError(SluiceError):
    """The group's (or transactional id's) coordinator moved or is not there yet.
    Retriable: find it again and retry."""

    default_code = ErrorCode.NOT_COORDINATOR


class NotCoordinatorError(CoordinatorError):
    """NOT_COORDINATOR: this broker does not coordinate the group. Retriable: find the
    coordinator again."""

    default_code = ErrorCode.NOT_COORDINATOR


class CoordinatorNotAvailableError(CoordinatorError):
    """COORDINATOR_NOT_AVAILABLE: the coordinator partition has no leader yet. Retriable."""

    default_code = ErrorCode.COORDINATOR_NOT_AVAILABLE


class CoordinatorLoadInProgressError(CoordinatorError):
    """COORDINATOR_LOAD_IN_PROGRESS: the coordinator is still loading its state.
    Retriable."""

    default_code = ErrorCode.COORDINATOR_LOAD_IN_PROGRESS


class GroupMemberError(SluiceError):
    """The coordinator refused this member's view. Fenced or unknown: the member has lost
    its partitions and rejoins; stale epoch or unreleased instance id (retriable): it
    heartbeats, then tries again."""

    default_code = ErrorCode.FENCED_MEMBER_EPOCH


class FencedMemberEpochError(GroupMemberError):
    """FENCED_MEMBER_EPOCH: the member's epoch is behind the coordinator's. Not retriable
    as is: the member drops its partitions and rejoins (the consumer does so itself)."""

    default_code = ErrorCode.FENCED_MEMBER_EPOCH


class UnknownMemberIdError(GroupMemberError):
    """UNKNOWN_MEMBER_ID: the coordinator does not know the member (its session expired).
    Not retriable as is: the member rejoins (the consumer does so itself)."""

    default_code = ErrorCode.UNKNOWN_MEMBER_ID


class StaleMemberEpochError(GroupMemberError):
    """STALE_MEMBER_EPOCH: the member's epoch moved. Retriable: heartbeat, then commit
    again."""

    default_code = ErrorCode.STALE_MEMBER_EPOCH


class UnreleasedInstanceIdError(GroupMemberError):
    """UNRELEASED_INSTANCE_ID: another member holds the static instance id until it leaves
    or expires. Retriable."""

    default_code = ErrorCode.UNRELEASED_INSTANCE_ID


class GroupError(SluiceError):
    """A group operation that cannot succeed as asked (the family of group errors)."""

    default_code = ErrorCode.GROUP_ID_NOT_FOUND


class GroupIdNotFoundError(GroupError):
    """GROUP_ID_NOT_FOUND: the coordinator knows no such group. Not retriable: check the
    group id."""

    default_code = ErrorCode.GROUP_ID_NOT_FOUND


class NonEmptyGroupError(GroupError):
    """NON_EMPTY_GROUP: the group has live members (delete and reset-offsets need an empty
    group). Not retriable as is: stop its consumers first."""

    default_code = ErrorCode.NON_EMPTY_GROUP


class InvalidGroupIdError(GroupError):
    """INVALID_GROUP_ID: the broker refuses the group id. Not retriable: use another."""

    default_code = ErrorCode.INVALID_GROUP_ID


class InvalidSessionTimeoutError(GroupError):
    """INVALID_SESSION_TIMEOUT: the session timeout is outside the broker's bounds. Not
    retriable: choose another `session_timeout_ms`."""

    default_code = ErrorCode.INVALID_SESSION_TIMEOUT


class UnsupportedAssignorError(GroupError):
    """UNSUPPORTED_ASSIGNOR: the broker has no assignor of this name (the message lists the
    ones it has). Not retriable: use one of those."""

    default_code = ErrorCode.UNSUPPORTED_ASSIGNOR


class InvalidRegularExpressionError(GroupError):
    """INVALID_REGULAR_EXPRESSION: the subscription pattern does not compile. Not
    retriable: fix the pattern."""

    default_code = ErrorCode.INVALID_REGULAR_EXPRESSION


class TransactionalProducerFencedError(ProducerFencedError):
    """PRODUCER_FENCED: a newer producer with the same transactional id called
    InitProducerId. Fatal and not retriable: close this producer."""

    default_code = ErrorCode.PRODUCER_FENCED


class TransactionError(SluiceError):
    """A transaction could not go on as asked (the family of transaction errors)."""

    default_code = ErrorCode.INVALID_TXN_STATE


class InvalidTxnStateError(TransactionError):
    """INVALID_TXN_STATE: the call does not fit the transaction's state (commit without a
    transaction, say). Not retriable: fix the call order."""

    default_code = ErrorCode.INVALID_TXN_STATE


class InvalidProducerIdMappingError(TransactionError):
    """INVALID_PRODUCER_ID_MAPPING: the producer id does not belong to the transactional id.
    Not retriable: create the producer again."""

    default_code = ErrorCode.INVALID_PRODUCER_ID_MAPPING


class InvalidTransactionTimeoutError(TransactionError):
    """INVALID_TRANSACTION_TIMEOUT: the transaction timeout is outside the broker's bounds.
    Not retriable: choose another."""

    default_code = ErrorCode.INVALID_TRANSACTION_TIMEOUT


class ConcurrentTransactionsError(TransactionError):
    """CONCURRENT_TRANSACTIONS: the previous transaction is still completing. Retriable: the
    client retries."""

    default_code = ErrorCode.CONCURRENT_TRANSACTIONS


class TransactionCoordinatorFencedError(TransactionError):
    """TRANSACTION_COORDINATOR_FENCED: a participant heard from a newer coordinator. Not
    retriable as is: the transaction aborts."""

    default_code = ErrorCode.TRANSACTION_COORDINATOR_FENCED


class TransactionalIdNotFoundError(TransactionError):
    """TRANSACTIONAL_ID_NOT_FOUND: the coordinator knows no such transactional id (it never
    existed or expired). Not retriable: check the id."""

    default_code = ErrorCode.TRANSACTIONAL_ID_NOT_FOUND


class TransactionAbortedError(TransactionError):
    """TRANSACTION_ABORTED: the transaction was aborted (a participant refused it, an
    operator aborted it, or a newer producer fenced it): nothing of it is visible to
    read_committed readers. Not retriable: run the transaction again."""

    default_code = ErrorCode.TRANSACTION_ABORTED


class TransactionTimedOutError(TransactionError):
    """TRANSACTION_TIMED_OUT: the transaction ran past its timeout: the coordinator aborted
    it and fenced the producer, which must be created again. Not retriable."""

    default_code = ErrorCode.TRANSACTION_TIMED_OUT


class UnstableOffsetCommitError(GroupError):
    """UNSTABLE_OFFSET_COMMIT: an open transaction holds an offset of the partition.
    Retriable: fetch it again once the transaction ended."""

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
    """Client-side, code BACKPRESSURE: `send_nowait` found the producer's buffer full.
    Retriable once it drains: `await send()` (which waits) or `flush()`, then send again."""

    default_code = ErrorCode.BACKPRESSURE

    @property
    def retriable(self) -> bool:
        """Always True: the buffer drains as batches are acknowledged."""
        return True


class ClientClosedError(SluiceError):
    """Client-side, code NETWORK_EXCEPTION: the client was closed (or never entered with
    `async with`). Not retriable: create a new client."""

    default_code = ErrorCode.NETWORK_EXCEPTION

    @property
    def retriable(self) -> bool:
        """Always False: a closed client stays closed."""
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
        """The batch of `topic`[`partition`] at `base_offset`..`last_offset` (None: unknown)
        and why it failed to decode."""
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
        """Always False: the same bytes fail the same way."""
        return False
