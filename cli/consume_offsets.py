"""Where `sluice consume` starts reading (`--offset` specs) and when `--exit-at-end` stops it.

A spec is one of: `beginning` (`start`, `earliest`), `end` (`latest`), `N` (the offset N),
`-N` (N records before the end: the last N), `@TIME` (the first record at or after TIME: epoch
milliseconds, or ISO 8601 such as `2026-12-07T10:00:00Z` or `2026-12-07`, UTC when it names no
zone). `P:SPEC` applies to partition P only and wins over a spec without a partition.

Starting (`start_at`) seeks each partition read where its spec says, from the lookups of the
library (`Consumer.beginning_offsets`, `end_offsets`, `offsets_for_times`): an offset below the
log start starts at the log start, one past the end waits at the end, and a time no record is
as new as waits at the end; each such adjustment is said once, on stderr. A partition without
a spec starts where the consumer's `auto_offset_reset` (earliest) or the group's committed
offset says.

`EndWatch` decides `--exit-at-end`: a partition has reached its end once its position is at
its end offset as the consumer sees it (the high watermark, or under read_committed the last
stable offset) when it got there: the end is asked again when the position reaches the end
known before, so records written meanwhile are read too (as kcat's -e).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from consumers import Consumer, TopicPartition

__all__ = [
    "FORMS",
    "EndWatch",
    "OffsetPlan",
    "OffsetSpec",
    "SpecError",
    "parse_offsets",
    "parse_spec",
    "parse_time",
    "start_at",
    "target_offset",
]

SpecKind = Literal["beginning", "end", "offset", "last", "time"]

FORMS = (
    "beginning (or start, earliest), end (or latest), N (an offset), -N (the last N), "
    "@TIME (epoch ms, or ISO 8601 such as @2026-12-07T10:00:00Z or @2026-12-07), "
    "each optionally as P:SPEC for partition P only"
)
"""The forms a spec takes, for messages and help."""

WORDS: dict[str, SpecKind] = {
    "beginning": "beginning",
    "start": "beginning",
    "earliest": "beginning",
    "end": "end",
    "latest": "end",
}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class SpecError(ValueError):
    """An `--offset` the command cannot take (bad usage)."""


@dataclass(frozen=True, slots=True)
class OffsetSpec:
    """Where to start one partition: `kind` and its number (the offset, the count of last
    records, or the time in ms since the epoch; 0 for beginning and end)."""

    kind: SpecKind
    value: int = 0

    def __str__(self) -> str:
        if self.kind in ("beginning", "end"):
            return self.kind
        if self.kind == "last":
            return f"-{self.value}"
        if self.kind == "time":
            when = EPOCH + timedelta(milliseconds=self.value)
            return "@" + when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return str(self.value)


@dataclass(frozen=True, slots=True)
class OffsetPlan:
    """Every `--offset` given: the spec for all partitions (None: none given) and those of
    single partitions."""

    default: OffsetSpec | None = None
    partitions: Mapping[int, OffsetSpec] = field(default_factory=dict)

    def spec_for(self, partition: int) -> OffsetSpec | None:
        """The spec of `partition`: its own, else the topic-wide one, else None."""
        return self.partitions.get(partition, self.default)

    def __bool__(self) -> bool:
        return self.default is not None or bool(self.partitions)


def parse_time(text: str) -> int:
    """Milliseconds since the epoch from digits (already ms) or an ISO 8601 date or time (UTC
    when it names no zone). SpecError otherwise, or before 1970."""
    if text.isdigit():
        return int(text)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise SpecError(
            f"bad --offset time {text!r}: expected epoch milliseconds or ISO 8601 such as "
            "2026-12-07T10:00:00Z or 2026-12-07"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    ms = (when - EPOCH) // timedelta(milliseconds=1)
    if ms < 0:
        raise SpecError(f"--offset time {text!r} is before 1970")
    return ms


def parse_spec(text: str) -> OffsetSpec:
    """One spec without a partition (see the module); SpecError naming the forms."""
    word = text.strip()
    kind = WORDS.get(word.lower())
    if kind is not None:
        return OffsetSpec(kind)
    if word.startswith("@"):
        return OffsetSpec("time", parse_time(word[1:]))
    if re.fullmatch(r"-\d+", word):
        return OffsetSpec("last", int(word[1:]))
    if re.fullmatch(r"\d+", word):
        return OffsetSpec("offset", int(word))
    raise SpecError(f"bad --offset {text!r}: expected {FORMS}")


def parse_offsets(items: Sequence[str], *, from_beginning: bool = False) -> OffsetPlan:
    """Every `--offset` (and `--from-beginning`, the same as `--offset beginning`) as a plan;
    SpecError for a bad spec or two specs for the same partitions."""
    default = OffsetSpec("beginning") if from_beginning else None
    said = "--from-beginning"
    partitions: dict[int, OffsetSpec] = {}
    for item in items:
        scoped = re.fullmatch(r"\s*(\d+):(.*)", item)
        spec = parse_spec(scoped[2] if scoped else item)
        if scoped is None:
            if default is not None and default != spec:
                raise SpecError(f"{said} and --offset {item!r} disagree: give one")
            default, said = spec, f"--offset {item!r}"
            continue
        partition = int(scoped[1])
        if partitions.get(partition, spec) != spec:
            raise SpecError(f"two --offset for partition {partition}: {item!r} and another")
        partitions[partition] = spec
    return OffsetPlan(default, partitions)


def target_offset(spec: OffsetSpec, begin: int, end: int) -> tuple[int, str | None]:
    """Where an `offset` or `last` spec starts in a log holding [begin, end), and what to
    tell the user when it is not where the spec said (None: nothing)."""
    if spec.kind == "last":
        return max(begin, end - spec.value), None
    if spec.value < begin:
        return begin, f"offset {spec.value} is below the log start {begin}: reading from {begin}"
    if spec.value > end:
        return end, f"offset {spec.value} is past the end {end}: waiting at the end"
    return spec.value, None


Note = Callable[[str], None]
"""Says something to the user once (on stderr)."""


async def start_at(
    c: Consumer,
    partitions: Iterable[TopicPartition],
    plan: OffsetPlan,
    *,
    timeout_ms: float,
    note: Note,
) -> None:
    """Seek every partition (assigned to `c`) that has a spec in `plan` where it says."""
    specs = {tp: s for tp in partitions if (s := plan.spec_for(tp[1])) is not None}
    by_kind: dict[SpecKind, list[TopicPartition]] = {}
    for tp, spec in sorted(specs.items()):
        by_kind.setdefault(spec.kind, []).append(tp)
    if by_kind.get("beginning"):
        c.seek_to_beginning(by_kind["beginning"])
    if by_kind.get("end"):
        c.seek_to_end(by_kind["end"])
    counted = by_kind.get("offset", []) + by_kind.get("last", [])
    if counted:
        begins = await c.beginning_offsets(counted, timeout_ms=timeout_ms)
        ends = await c.end_offsets(counted, timeout_ms=timeout_ms)
        for tp in counted:
            offset, problem = target_offset(specs[tp], begins[tp], ends[tp])
            if problem is not None:
                note(f"{tp[0]}[{tp[1]}]: {problem}")
            c.seek(tp, offset)
    timed = by_kind.get("time", [])
    if timed:
        found = await c.offsets_for_times(
            {tp: specs[tp].value for tp in timed}, timeout_ms=timeout_ms
        )
        for tp in timed:
            at = found[tp]
            if at is None:
                note(f"{tp[0]}[{tp[1]}]: no record at or after {specs[tp]}: waiting at the end")
                c.seek_to_end([tp])
            else:
                c.seek(tp, at.offset)


class EndWatch:
    """`--exit-at-end`: whether every partition being read has reached its end (see the
    module). Partitions once at their end stay done; none being read is not the end (a group
    member waits for its assignment)."""

    def __init__(self, *, timeout_ms: float) -> None:
        self.timeout_ms = timeout_ms
        self.ends: dict[TopicPartition, int] = {}
        self.done: set[TopicPartition] = set()

    async def reached(self, c: Consumer) -> bool:
        """Whether every partition `c` reads has reached its end (asking the ends as needed)."""
        reading = c.assignment()
        pending = sorted(reading - self.done)
        if not reading:
            return False
        if not pending:
            return True
        positions = {tp: await c.position(tp) for tp in pending}
        fresh = [tp for tp in pending if tp not in self.ends]
        if fresh:
            self.ends.update(await c.end_offsets(fresh, timeout_ms=self.timeout_ms))
        there = [tp for tp in pending if positions[tp] >= self.ends[tp]]
        stale = [tp for tp in there if tp not in fresh]
        if stale:
            self.ends.update(await c.end_offsets(stale, timeout_ms=self.timeout_ms))
        self.done.update(tp for tp in there if positions[tp] >= self.ends[tp])
        return reading <= self.done
