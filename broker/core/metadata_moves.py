"""Where partitions live: `PartitionInfo`, the placement of new partitions, and the metadata
log's reassignment commands (their encoding and what applying one does to the topics; the
`MetadataMachine` handlers call these, metadata.py's docstring states the rules).

Placement (`place`) spreads replicas and first replicas (preferred leaders) evenly over the
given brokers, counting what they already hold, alternating racks; ties go to the lower
broker id, so every broker computes the same lists from the same state.

- reassign {moves, drain, undrain, throttle?}: each move's replica list becomes its
  partition's `target` (a partition already moving gets the new one; a move of a partition
  not moving to the same brokers in another order only reorders `replicas`: no data moves;
  one moving keeps a target until its group's configuration is back). All or nothing: an
  unknown topic, partition or broker, or a replica list with a broker twice, refuses the
  whole command.
- reassign_done {group, replicas}: `replicas` := `target`, only if the target is still
  the one reported (a stale report changes nothing).
- reassign_cancel: every target goes back to its partition's replicas.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar

from broker.wire.cbor import encode as cbor_encode
from broker.wire.errors import ErrorCode

Refusal = tuple[ErrorCode, str]


@dataclass(frozen=True, slots=True)
class PartitionInfo:
    partition: int
    group_id: int
    replicas: tuple[int, ...]
    target: tuple[int, ...] | None = None
    """The replica list a reassignment in progress moves to (None: none runs)."""

    @property
    def desired(self) -> tuple[int, ...]:
        """What the group's leader steps its configuration toward."""
        return self.replicas if self.target is None else self.target

    @property
    def hosts(self) -> frozenset[int]:
        """The brokers that host the group: its replicas and its target's."""
        return frozenset(self.replicas).union(self.target or ())


def place(
    live: Sequence[int],
    racks: Mapping[int, str | None],
    existing: Iterable[tuple[int, ...]],
    partitions: int,
    rf: int,
) -> list[tuple[int, ...]]:
    """Replica lists for `partitions` new partitions of `rf` replicas over `live` brokers,
    given the replica lists that `existing` partitions already have."""
    load: dict[int, int] = dict.fromkeys(live, 0)
    leads: dict[int, int] = dict.fromkeys(live, 0)
    for replicas in existing:
        for i, r in enumerate(replicas):
            if r in load:
                load[r] += 1
                if i == 0:
                    leads[r] += 1
    out = []
    for _ in range(partitions):
        chosen: list[int] = []
        used: set[str | None] = set()
        for slot in range(rf):
            pool = [b for b in live if b not in chosen]
            fresh = [b for b in pool if racks[b] not in used]
            candidates = fresh or pool
            if slot == 0:
                best = min(candidates, key=lambda b: (leads[b], load[b], b))
                leads[best] += 1
            else:
                best = min(candidates, key=lambda b: (load[b], b))
            load[best] += 1
            chosen.append(best)
            used.add(racks[best])
        out.append(tuple(chosen))
    return out


class _Topic(Protocol):
    """What these commands need of a topic (metadata.py's TopicInfo)."""

    __dataclass_fields__: ClassVar[dict[str, Any]]

    @property
    def partitions(self) -> tuple[PartitionInfo, ...]: ...


T = TypeVar("T", bound=_Topic)


def cmd_reassign(
    moves: Iterable[tuple[str, int, tuple[int, ...]]],
    *,
    drain: Iterable[int] = (),
    undrain: Iterable[int] = (),
    throttle: int | None = None,
) -> bytes:
    """Targets for partitions ((topic, partition, replicas)), brokers to start or stop
    draining, and the cluster's catch-up throttle in bytes/s (None: unchanged; 0: each
    broker's own `catchup_bytes_per_s`)."""
    cmd: dict[str, Any] = {
        "op": "reassign",
        "moves": [[t, p, list(r)] for t, p, r in moves],
        "drain": sorted(set(drain)),
        "undrain": sorted(set(undrain)),
    }
    if throttle is not None:
        cmd["throttle"] = throttle
    return cbor_encode(cmd)


def cmd_reassign_done(group_id: int, replicas: tuple[int, ...]) -> bytes:
    return cbor_encode({"op": "reassign_done", "group": group_id, "replicas": list(replicas)})


def cmd_reassign_cancel(throttle: int | None = None) -> bytes:
    """Every move back to its replicas; `throttle` as in `cmd_reassign`."""
    cmd: dict[str, Any] = {"op": "reassign_cancel"}
    if throttle is not None:
        cmd["throttle"] = throttle
    return cbor_encode(cmd)


@dataclass(frozen=True, slots=True)
class Reassigned:
    """A reassignment command's result: the partitions whose target or replicas changed
    (topic, before, after)."""

    partitions: tuple[tuple[str, PartitionInfo, PartitionInfo], ...]


def reassign(
    topics: dict[str, T], brokers: Container[int], cmd: dict[str, Any]
) -> Reassigned | Refusal:
    """Apply a reassign command's moves to `topics` (the caller applies drain, undrain and
    throttle once this returns Reassigned)."""
    moves = [(str(t), int(p), tuple(int(r) for r in rs)) for t, p, rs in cmd["moves"]]
    named = {int(b) for b in cmd["drain"]} | {int(b) for b in cmd["undrain"]}
    bad = _refusal(topics, brokers, moves, named, cmd.get("throttle"))
    if bad is not None:
        return bad
    before = {(name, p): topics[name].partitions[p] for name, p, _ in moves}
    after: dict[tuple[str, int], PartitionInfo] = {}
    for name, p, replicas in moves:
        pi = before[(name, p)]
        if pi.target is None and set(replicas) == set(pi.replicas):
            after[(name, p)] = dataclasses.replace(pi, replicas=replicas, target=None)
        else:
            after[(name, p)] = dataclasses.replace(pi, target=replicas)
    for (name, _), new in after.items():
        _replace(topics, name, new)
    return Reassigned(tuple((t, before[(t, p)], new) for (t, p), new in after.items()))


def _refusal(
    topics: dict[str, T],
    brokers: Container[int],
    moves: list[tuple[str, int, tuple[int, ...]]],
    named: set[int],
    throttle: object,
) -> Refusal | None:
    if throttle is not None and (type(throttle) is not int or throttle < 0):
        return ErrorCode.INVALID_REQUEST, "throttle must be an integer >= 0 (bytes/s)"
    unknown = sorted(b for b in named if b not in brokers)
    if unknown:
        return ErrorCode.INVALID_REQUEST, f"no broker {', '.join(map(str, unknown))}"
    for name, p, replicas in moves:
        t = topics.get(name)
        if t is None or not 0 <= p < len(t.partitions):
            return ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"no partition {name}-{p}"
        if not replicas or len(set(replicas)) != len(replicas):
            why = f"{name}-{p}: replicas must be distinct brokers, at least one"
            return ErrorCode.INVALID_REPLICA_ASSIGNMENT, why
        missing = [r for r in replicas if r not in brokers]
        if missing:
            why = f"{name}-{p}: no broker {', '.join(map(str, missing))}"
            return ErrorCode.INVALID_REPLICA_ASSIGNMENT, why
    return None


def reassign_done(topics: dict[str, T], cmd: dict[str, Any]) -> Reassigned:
    group = int(cmd["group"])
    replicas = tuple(int(r) for r in cmd["replicas"])
    for name, t in topics.items():
        for pi in t.partitions:
            if pi.group_id == group and pi.target == replicas:
                new = dataclasses.replace(pi, replicas=replicas, target=None)
                _replace(topics, name, new)
                return Reassigned(((name, pi, new),))
    return Reassigned(())


def reassign_cancel(topics: dict[str, T]) -> Reassigned:
    changed = []
    for name, t in list(topics.items()):
        for pi in t.partitions:
            if pi.target is not None and pi.target != pi.replicas:
                new = dataclasses.replace(pi, target=pi.replicas)
                _replace(topics, name, new)
                changed.append((name, pi, new))
    return Reassigned(tuple(changed))


def _replace(topics: dict[str, T], name: str, new: PartitionInfo) -> None:
    t = topics[name]
    parts = list(t.partitions)
    parts[new.partition] = new
    topics[name] = dataclasses.replace(t, partitions=tuple(parts))
