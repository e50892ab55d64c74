"""What one round of a broker carries between the node and its runtime.

A round has the shape of the Raft Ready protocol batched across every group of the broker
(see `GroupHost`): messages that may leave at once, everything to persist in ONE synced write
(Readies, the machines' keyed writes, dropped groups), snapshots and compactions to write once
that write is durable, and the node's reports for the controller. Operations started by client
or peer calls complete as `Completion`s of a round.

`begin_round` and `end_round` are the one sequence every runtime follows (the Trio driver, the
unit harness and the cluster simulator differ only in how they send, write and complete).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from broker.core.machine import MachineWrites
from broker.core.peer_codec import BrokerHeartbeat
from broker.core.raft import ConfState, Message, Ready
from broker.wire.errors import ErrorCode


@dataclass(frozen=True, slots=True)
class Envelope:
    """A Raft message for group `group_id` on broker `dst`."""

    dst: int
    group_id: int
    message: Message


@dataclass(frozen=True, slots=True)
class Compaction:
    """Group `group_id`'s state machine as a snapshot at Raft index `index` (`conf`: the
    configuration in effect there), and the log prefix to drop behind it. The runtime, once
    the round's other writes are durable: `create_snapshot(index, conf, data)`, then
    `compact(compact_to)` (compact_to <= index; an index the storage already passed, by an
    installed snapshot or an earlier compaction, is a no-op)."""

    group_id: int
    index: int
    conf: ConfState
    data: bytes
    compact_to: int


@dataclass(frozen=True, slots=True)
class Completion:
    """An operation started under `token` (slot: which part of its request) has an outcome."""

    token: int
    slot: int
    error: ErrorCode
    message: str | None = None
    value: Any = None


@dataclass(slots=True)
class Round:
    readies: list[tuple[int, Ready]]
    messages: list[Envelope]
    writes: list[tuple[int, MachineWrites]]
    """(group, its machine's keyed writes since the last round), in the round's write."""
    dropped_groups: list[int]
    heartbeats: list[tuple[int, BrokerHeartbeat]]
    """Reports for the controller: (destination broker, heartbeat)."""
    applied_early: set[int] = field(default_factory=set)
    """Groups whose committed entries `apply_committed` applied before the round's write
    (empty when it applied nothing)."""
    compactions: list[Compaction] = field(default_factory=list)
    """Written after the rest of the round is durable (see Compaction)."""


class RoundIO(Protocol):
    """What a round needs of whoever runs it (the Trio driver, the unit harness, the cluster
    simulator): sending, and handing completions to the request layer."""

    def started(self, rnd: Round) -> None:
        """The round was taken, nothing of it has left yet (counters, audits, checkers)."""
        ...

    def send(self, envelopes: list[Envelope]) -> None:
        """Raft messages to peers (grouped per broker by the caller)."""
        ...

    def send_heartbeats(self, heartbeats: list[tuple[int, BrokerHeartbeat]]) -> None: ...

    def complete(self, completions: list[Completion]) -> None: ...


class RoundNode(Protocol):
    """The node as a round sees it."""

    def start_round(self) -> Round: ...

    def apply_committed(self, rnd: Round) -> list[Completion]: ...

    def finish_round(self, rnd: Round) -> tuple[list[Envelope], list[Completion]]: ...


def begin_round(node: RoundNode, io: RoundIO) -> Round:
    """The first half of every round, the same for every runtime: take the round, send what
    may leave before the write, apply what is durable already and complete it. The caller
    then writes the round (ONE synced write, then its compactions) and calls `end_round`."""
    rnd = node.start_round()
    io.started(rnd)
    io.send(rnd.messages)
    io.send_heartbeats(rnd.heartbeats)
    io.complete(node.apply_committed(rnd))
    return rnd


def end_round(node: RoundNode, rnd: Round, io: RoundIO) -> None:
    """The second half, once the round's write is durable: release what waited for it,
    apply the rest, complete."""
    after, done = node.finish_round(rnd)
    io.send(after)
    io.complete(done)
