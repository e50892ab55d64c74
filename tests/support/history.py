"""A history checker over what producers had acknowledged and consumers read.

Every produced value is unique. Problems reported (as Jepsen's queue checkers do):
- lost: an acknowledged value that no read returned (at or below what was read);
- duplicate: a value read at two different offsets of a partition;
- inconsistent: one (partition, offset) read with two values, or a value read at another
  offset than the one its acknowledgement gave;
- reordered: two values one producer sent, in that order, to one partition, read in the other
  order;
- gap: offsets read in a partition are not contiguous from the first read offset.

Retention: offsets a reader found deleted before it read them (`delete`, after the checker
verified the broker's log start offset) are exempt: an acknowledged value there that no read
returned is not lost, and a missing read there is not a gap.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

TP = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Problem:
    kind: str
    detail: str


@dataclass
class History:
    acked: dict[tuple[object, TP], list[tuple[int, bytes]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    """Per (producer, partition), (offset, value) in the order that producer sent them."""
    reads: dict[TP, dict[int, bytes]] = field(default_factory=lambda: defaultdict(dict))
    conflicts: list[Problem] = field(default_factory=list)
    deleted: dict[TP, list[tuple[int, int]]] = field(default_factory=lambda: defaultdict(list))
    """Per partition, offset ranges [lo, hi) deleted by retention before they were read."""

    def delete(self, tp: TP, lo: int, hi: int) -> None:
        """Offsets [lo, hi) of `tp` were deleted by retention before anyone read them."""
        if lo < hi:
            self.deleted[tp].append((lo, hi))

    def _deleted(self, tp: TP, offset: int) -> bool:
        return any(lo <= offset < hi for lo, hi in self.deleted.get(tp, ()))

    def ack(self, tp: TP, offset: int, value: bytes, producer: object = 0) -> None:
        self.acked[(producer, tp)].append((offset, value))

    def read(self, tp: TP, offset: int, value: bytes) -> None:
        seen = self.reads[tp].get(offset)
        if seen is not None and seen != value:
            self.conflicts.append(
                Problem("inconsistent", f"{tp} offset {offset} read as {seen!r} and {value!r}")
            )
        self.reads[tp][offset] = value

    def check(self) -> list[Problem]:
        problems = list(self.conflicts)
        for tp, by_offset in self.reads.items():
            offsets = sorted(by_offset)
            if offsets and offsets != list(range(offsets[0], offsets[0] + len(offsets))):
                missing = sorted(
                    o
                    for o in set(range(offsets[0], offsets[-1] + 1)) - set(offsets)
                    if not self._deleted(tp, o)
                )
                if missing:
                    problems.append(Problem("gap", f"{tp} offsets missing: {missing[:10]}"))
            where: dict[bytes, int] = {}
            for off in offsets:
                v = by_offset[off]
                if v in where:
                    problems.append(
                        Problem("duplicate", f"{tp} value {v!r} at offsets {where[v]} and {off}")
                    )
                else:
                    where[v] = off
        for (_, tp), acks in self.acked.items():
            read = self.reads.get(tp, {})
            where = {}
            for off in sorted(read):
                where.setdefault(read[off], off)
            last_pos = -1
            last_val: bytes | None = None
            for off, v in acks:
                if v not in where and self._deleted(tp, off):
                    continue  # deleted by retention before anyone read it
                if v not in where:
                    problems.append(Problem("lost", f"{tp} acknowledged {v!r} at {off}, not read"))
                    continue
                if where[v] != off:
                    problems.append(
                        Problem(
                            "inconsistent",
                            f"{tp} {v!r} acknowledged at {off} but read at {where[v]}",
                        )
                    )
                if where[v] < last_pos:
                    problems.append(
                        Problem("reordered", f"{tp} {v!r} read before {last_val!r}, sent after")
                    )
                last_pos, last_val = where[v], v
        return problems
