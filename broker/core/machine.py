"""What runs in a Raft group: the state-machine protocol and the registry of machine kinds.

Every group of a broker runs one `StateMachine` of a registered `MachineKind`: the metadata
machine (group 0, the controller quorum), the partition log, and later the group and
transaction coordinators. The `GroupHost` drives them all the same way:

- `apply_entry(entry)` once per committed entry, in index order, on every replica. It reads only
  the entry and the machine's own state (no clock, no randomness, no broker state), so every
  replica computes the same state and the same `Applied` result; the host hands the result to
  whoever proposed the entry on this broker.
- `take_writes()` after applies: the machine's keyed, incremental changes since it last handed
  them out (a small apply state, records put, records deleted below a key), persisted in the
  round's one synced write. A machine with nothing to write returns None; a machine that keeps
  nothing but what the log and its snapshots hold (the metadata machine) always does.
- `snapshot()` / `restore_snapshot(data)`: its whole state at `applied_index`, as a Raft
  snapshot (sent to a follower behind the log start, and used at restart when newer than the
  apply state). `load(state, records)` rebuilds from what `take_writes` persisted.
- `leader_tick()` on the serving leader of a machine with timers: commands to *propose* (a
  session timeout proposes "remove member"); nothing time-dependent is decided inside apply.
- `timers_pending()` (optional): whether a timer of the leader's is running (a session to
  expire, a transaction pre-committed here). An idle group quiesces only when its machine
  says none is; without the method, a kind's `has_timers` answers for it (GroupHost).

A kind is registered once (`MachineRegistry.register`) with a factory and the topics it serves;
the round loop never names a kind.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from broker.core.ids import NO_PARTITION
from broker.core.raft import Entry
from broker.wire.errors import ErrorCode


@dataclass(frozen=True, slots=True)
class Applied:
    """The result of applying one committed entry: what its proposer is answered."""

    error: ErrorCode = ErrorCode.NONE
    message: str | None = None
    value: Any = None


NOTHING_APPLIED = Applied()


@dataclass(frozen=True, slots=True)
class MachineWrites:
    """A machine's changes since it last handed them out, in the order the store applies
    them: the apply state replaces the previous one; records with keys below `delete_below`
    are deleted, and records with keys in `deleted`; then `records` are put (key: u64,
    value: opaque bytes)."""

    state: bytes | None = None
    delete_below: int | None = None
    records: tuple[tuple[int, bytes], ...] = ()
    deleted: tuple[int, ...] = ()


class StateMachine(Protocol):
    """One replica's state machine (see the module doc for the rules every kind keeps)."""

    @property
    def applied_index(self) -> int:
        """The Raft index of the last entry applied (or restored)."""
        ...

    def apply_entry(self, entry: Entry) -> Applied: ...

    def take_writes(self) -> MachineWrites | None: ...

    def snapshot(self) -> bytes: ...

    def restore_snapshot(self, data: bytes) -> None: ...

    def load(self, state: bytes | None, records: Iterable[tuple[int, bytes]]) -> None: ...

    def leader_tick(self) -> list[bytes]: ...


@dataclass(frozen=True, slots=True)
class GroupContext:
    """What a machine factory may know of the group it is created for."""

    group_id: int
    topic: str | None = None
    partition: int = NO_PARTITION
    config: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MachineKind:
    """A kind of state machine.

    `apply_early`: its committed entries may be applied before the round's write (they are
    durable already), so proposers are answered without waiting for the next sync; a kind
    whose applies open or drop groups (metadata) applies after the write.
    `has_timers`: its serving leader's `leader_tick` is called every tick."""

    name: str
    create: Callable[[GroupContext], StateMachine]
    apply_early: bool = True
    has_timers: bool = False


class MachineRegistry:
    """Topic -> the kind of machine its partitions run (the default kind for any topic not
    claimed by another)."""

    def __init__(self, default: MachineKind) -> None:
        self.default = default
        self._by_topic: dict[str, MachineKind] = {}

    def register(self, kind: MachineKind, topics: Iterable[str]) -> None:
        for topic in topics:
            if topic in self._by_topic:
                raise ValueError(f"topic {topic!r} already runs {self._by_topic[topic].name}")
            self._by_topic[topic] = kind

    def kind_for(self, topic: str) -> MachineKind:
        return self._by_topic.get(topic, self.default)
