"""The words of the three-phase commit: participants, the coordinator's requests to them,
and the transaction markers a partition log holds (pure).

A participant is a partition (`Participant(topic, partition)`) or a consumer group's
offsets (`Participant(group_id, GROUP)`). The coordinator's leader sends each participant's
leader a `TxnCommand` as a broker-to-broker request; the participant's leader proposes it to
its own Raft group, as a CBOR command entry, and answers once it applied. Every command names
the transactional id, producer id, epoch and the coordinator's Raft term (lessons.md 3PC
checklist, item 1): a participant refuses a lower term or an earlier epoch, so a delayed or
duplicated message never acts on a later transaction.

Commit and abort reach a partition log as a *control batch* (a transaction marker: attributes
transactional | control, the producer id and epoch, one record whose key is
`[MARKER_VERSION, type, coordinator term]` and whose value is the transactional id), so a
marker takes an offset as Kafka's do and a read_uncommitted reader sees where each
transaction ended. A group coordinator logs them as commands.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from broker.wire import cbor
from broker.wire.batch import Record, decode_records, encode_batch
from broker.wire.errors import BatchError, ErrorCode, WireError
from broker.wire.limits import INT64_MAX, Limits
from broker.wire.txn_messages import transactional_id

GROUP = -1
"""`Participant.partition` of a consumer group's offsets."""
EPOCH_MAX = 32767
"""Producer epochs are int16; past it the coordinator hands out a new producer id."""
MARKER_VERSION = 0
_MARKER_LIMITS = Limits(max_batch_records=1)


class Phase(IntEnum):
    """What a coordinator asks a participant (and what a participant logs)."""

    BEGIN = 0
    PREPARE = 1
    PRECOMMIT = 2
    COMMIT = 3
    ABORT = 4


class MarkerType(IntEnum):
    ABORT = 0
    COMMIT = 1


@dataclass(frozen=True, slots=True, order=True)
class Participant:
    """A partition of a topic, or (partition == GROUP) the offsets of a consumer group."""

    name: str
    partition: int

    @property
    def is_group(self) -> bool:
        return self.partition == GROUP

    def to_wire(self) -> list[object]:
        return [self.name, self.partition]

    @classmethod
    def from_wire(cls, raw: object) -> Participant:
        if (
            not isinstance(raw, list)
            or len(raw) != 2
            or not isinstance(raw[0], str)
            or not raw[0]
            or type(raw[1]) is not int
            or raw[1] < GROUP
        ):
            raise WireError(ErrorCode.INVALID_REQUEST, f"bad participant {raw!r:.80}")
        return cls(raw[0], raw[1])

    def __str__(self) -> str:
        return f"group {self.name}" if self.is_group else f"{self.name}-{self.partition}"


@dataclass(frozen=True, slots=True, kw_only=True)
class TxnCommand:
    """One coordinator request to one participant, and the entry the participant logs.

    `last_seq` (PREPARE only): the last sequence of the producer's data the client had
    acknowledged for this partition, -1 when it sent none (a participant votes yes only when
    its log holds exactly that). `timestamp`: the coordinator leader's wall clock in ms, the
    marker's timestamp. `by_participant`: a participant leader commits on its own (the
    coordinator stayed silent past the pre-commit timeout)."""

    phase: Phase
    participant: Participant
    txn_id: str
    producer_id: int
    epoch: int
    coordinator_term: int
    last_seq: int = -1
    timestamp: int = 0
    by_participant: bool = False

    def to_wire(self) -> dict[str, object]:
        return {
            "op": "txn",
            "phase": int(self.phase),
            "at": self.participant.to_wire(),
            "txn": self.txn_id,
            "pid": self.producer_id,
            "epoch": self.epoch,
            "cterm": self.coordinator_term,
            "seq": self.last_seq,
            "ts": self.timestamp,
            "self": self.by_participant,
        }

    def encode(self) -> bytes:
        return cbor.encode(self.to_wire())

    @classmethod
    def from_wire(cls, raw: object) -> TxnCommand:
        """Strict: a peer's body or a logged entry (WireError INVALID_REQUEST if malformed)."""
        if not isinstance(raw, dict) or raw.get("op") != "txn" or len(raw) != 10:
            raise WireError(ErrorCode.INVALID_REQUEST, "not a transaction command")
        try:
            phase = Phase(_int(raw, "phase", 0, 4))
        except ValueError as e:
            raise WireError(ErrorCode.INVALID_REQUEST, str(e)) from None
        txn = transactional_id(raw.get("txn"), "txn")
        by = raw.get("self")
        if type(by) is not bool:
            raise WireError(ErrorCode.INVALID_REQUEST, "self: expected bool")
        return cls(
            phase=phase,
            participant=Participant.from_wire(raw.get("at")),
            txn_id=txn,
            producer_id=_int(raw, "pid", 0, INT64_MAX),
            epoch=_int(raw, "epoch", 0, EPOCH_MAX),
            coordinator_term=_int(raw, "cterm", 0, INT64_MAX),
            last_seq=_int(raw, "seq", -1, (1 << 31) - 1),
            timestamp=_int(raw, "ts", -1, INT64_MAX),
            by_participant=by,
        )

    @classmethod
    def decode(cls, data: bytes) -> TxnCommand:
        return cls.from_wire(cbor.decode(data))


def _int(raw: dict[str, object], key: str, low: int, high: int) -> int:
    v = raw.get(key)
    if type(v) is not int or not low <= v <= high:
        raise WireError(ErrorCode.INVALID_REQUEST, f"{key}: expected int in [{low}, {high}]")
    return v


# -- markers -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Marker:
    """What a partition's control batch says."""

    type: MarkerType
    coordinator_term: int
    txn_id: str


def encode_marker(cmd: TxnCommand) -> bytes:
    """The control batch a partition leader proposes for a COMMIT or ABORT command."""
    assert cmd.phase in (Phase.COMMIT, Phase.ABORT)
    kind = MarkerType.COMMIT if cmd.phase == Phase.COMMIT else MarkerType.ABORT
    term = -1 if cmd.by_participant else cmd.coordinator_term
    record = Record(
        key=cbor.encode([MARKER_VERSION, int(kind), term]),
        value=cmd.txn_id.encode(),
        timestamp=max(0, cmd.timestamp),
    )
    return encode_batch(
        [record],
        producer_id=cmd.producer_id,
        producer_epoch=cmd.epoch,
        transactional=True,
        control=True,
    )


def decode_marker(batch: bytes) -> Marker:
    """The marker a control batch holds (BatchError CORRUPT_MESSAGE when it holds none)."""
    records = decode_records(batch, _MARKER_LIMITS)
    if len(records) != 1 or records[0].key is None or records[0].value is None:
        raise BatchError(ErrorCode.CORRUPT_MESSAGE, "a control batch holds one keyed record")
    try:
        key = cbor.decode(records[0].key)
        txn = records[0].value.decode()
    except (WireError, UnicodeDecodeError):
        raise BatchError(ErrorCode.CORRUPT_MESSAGE, "not a transaction marker") from None
    if (
        not isinstance(key, list)
        or len(key) != 3
        or key[0] != MARKER_VERSION
        or key[1] not in (0, 1)
        or type(key[2]) is not int
    ):
        raise BatchError(ErrorCode.CORRUPT_MESSAGE, "not a transaction marker")
    return Marker(MarkerType(key[1]), key[2], txn)


def marker_command(
    marker: Marker, producer_id: int, epoch: int, timestamp: int, at: Participant
) -> TxnCommand:
    """The command a marker carries out (its coordinator term -1: the participant's own)."""
    return TxnCommand(
        phase=Phase.COMMIT if marker.type == MarkerType.COMMIT else Phase.ABORT,
        participant=at,
        txn_id=marker.txn_id,
        producer_id=producer_id,
        epoch=epoch,
        coordinator_term=max(0, marker.coordinator_term),
        timestamp=timestamp,
        by_participant=marker.coordinator_term < 0,
    )
