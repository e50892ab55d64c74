"""Retry backoff and the metadata-refresh policy the Producer and Consumer share (pure).

`Backoff` is exponential with equal jitter, capped; its jitter comes from an injected source
(the Trio shell passes `random.random`, the simulator its seeded RNG).

`MetadataRefresh` decides when a refresh runs and for which topics. Callers `want(topic)`
when their metadata may be stale (an unknown leader, a leadership or connection error); at
most one refresh runs at a time; `start(now)` hands out the wanted topics once the previous
refresh's backoff has passed, and `finish(now, ok, stale)` records how it went:

- it succeeded and every partition the caller needs has a known, reachable leader: the next
  refresh may start `backoff.base_s` later and the failure count returns to 0;
- otherwise the next may start min(backoff.delay(failures), METADATA_RETRY_MAX_S) later, the
  failure count grows, and the stale topics (all of them if it failed) are asked for again
  then, as long as the caller still `needs` them.

So a crashed leader's successor is found within about METADATA_RETRY_MAX_S of its election,
while a healthy client refreshes at most once per base backoff.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

from consumers.core.metadata import MetadataCache, TopicPartition
from consumers.errors import (
    BrokerUnavailableError,
    LeadershipError,
    NotControllerError,
    SluiceError,
    UnknownTopicError,
)

__all__ = [
    "METADATA_RETRY_MAX_S",
    "Backoff",
    "MetadataRefresh",
    "needs_metadata",
    "unled_topics",
]

METADATA_RETRY_MAX_S = 0.2
"""Longest wait between metadata refreshes while a needed partition leader is unknown or
unreachable: after a crash, clients find the elected successor within about this much."""


class Backoff:
    """Exponential backoff with equal jitter: attempt n waits in [c/2, c], c = min(max_s,
    base_s * 2**n); `rng()` draws the jitter in [0, 1)."""

    def __init__(self, base_s: float, max_s: float, rng: Callable[[], float]) -> None:
        if not 0 < base_s <= max_s:
            raise ValueError("need 0 < base_s <= max_s")
        self.base_s = base_s
        self.max_s = max_s
        self._rng = rng

    def delay(self, attempt: int) -> float:
        cap = min(self.max_s, self.base_s * (2.0 ** min(attempt, 30)))
        return cap / 2 + self._rng() * cap / 2


def needs_metadata(error: SluiceError) -> bool:
    """Whether an error means the client's metadata may be stale."""
    return isinstance(
        error, LeadershipError | UnknownTopicError | BrokerUnavailableError | NotControllerError
    )


def unled_topics(
    meta: MetadataCache, tps: Iterable[TopicPartition], unreachable: Callable[[int], bool]
) -> set[str]:
    """Topics of `tps` with a partition whose leader is unknown or unreachable."""
    out: set[str] = set()
    for tp in tps:
        leader = meta.leader_for(tp)
        if leader is None or unreachable(leader):
            out.add(tp[0])
    return out


class MetadataRefresh:
    """When to refresh metadata, and for which topics (see the module docstring)."""

    __slots__ = ("_on_want", "_stale", "allowed_at", "backoff", "failures", "running", "wanted")

    def __init__(self, backoff: Backoff, on_want: Callable[[], None] | None = None) -> None:
        self.backoff = backoff
        self._on_want = on_want
        """Called when a topic is newly wanted (a shell wakes its refresh task)."""
        self.wanted: set[str] = set()
        """Topics asked for since the last refresh started."""
        self._stale: set[str] = set()
        """Topics the last refresh left without reachable leaders: asked for again."""
        self.running = False
        self.allowed_at = -math.inf
        """The next refresh starts no earlier (the backoff after the previous one)."""
        self.failures = 0

    def want(self, topic: str) -> None:
        if topic not in self.wanted:
            self.wanted.add(topic)
            if self._on_want is not None:
                self._on_want()

    def next_at(self) -> float:
        """When `start` may hand out topics (inf: nothing to refresh, or one is running)."""
        if self.running or not (self.wanted or self._stale):
            return math.inf
        return self.allowed_at

    def start(self, now: float, needs: Callable[[str], bool]) -> frozenset[str] | None:
        """The topics to refresh now, or None (one is running, it is too early, or nothing is
        wanted). Stale topics are kept only while `needs(topic)`."""
        if self.running or now < self.allowed_at:
            return None
        topics = self.wanted | {t for t in self._stale if needs(t)}
        self._stale = set()
        if not topics:
            return None
        self.wanted = set()
        self.running = True
        return frozenset(topics)

    def finish(self, now: float, topics: Iterable[str], ok: bool, stale: Iterable[str]) -> None:
        """The refresh of `topics` ended (`ok`: an answer was merged); `stale`: topics whose
        needed partitions still lack a reachable leader."""
        self.running = False
        left = set(stale) if ok else set(topics) | set(stale)
        if left:
            self.allowed_at = now + min(self.backoff.delay(self.failures), METADATA_RETRY_MAX_S)
            self.failures += 1
            self._stale |= left
        else:
            self.allowed_at = now + self.backoff.base_s
            self.failures = 0
