"""ByteBudget: one bound on the bytes a broker holds for what its connections sent it.

Readers acquire before they read and release when the bytes are gone (answered, or handed
to the driver and decoded). When the budget is spent, a reader waits instead of reading, so
its socket fills and TCP pushes back on the sender: memory stays bounded however many
connections send at once (Kafka's `queued.max.request.bytes`).

Two classes of acquirer share the budget: reads for large frames may take at most
`limit - reserve`; everything else (a frame boundary, small frames) may take all of it. So
large frames that stall half-way can never starve the small requests of other clients
(metadata, fetches, heartbeats); the stall timeout of the reader closes them.

`force` accounts bytes that already exist (a response built by the driver, which cannot
wait): it may push `in_use` above `limit`; readers then wait until enough is released.

Whoever fits goes: a waiter that does not fit never holds up a later one that does (a small
read never waits behind a large one), and released room goes to waiters in arrival order.
Grants happen in `release`, before the waiter runs, so a burst of wake-ups never
over-admits. Under sustained overload a large read can wait long; the budget is contended
only then.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import trio


@dataclass(eq=False, slots=True)
class _Waiter:
    nbytes: int
    cap: int
    granted: bool = False
    event: trio.Event = field(default_factory=trio.Event)


class ByteBudget:
    """Counts bytes in use against `limit`; `reserve` bytes are kept for small acquirers.

    Invariant: `in_use` is the sum of what was acquired or forced and not yet released;
    a grant is made only while `in_use + nbytes <= cap` for the acquirer's class.
    """

    __slots__ = ("_waiters", "in_use", "limit", "peak", "reserve", "waits")

    def __init__(self, limit: int, reserve: int) -> None:
        if not 0 <= reserve < limit:
            raise ValueError(f"reserve {reserve} must be in [0, limit {limit})")
        self.limit = limit
        self.reserve = reserve
        self.in_use = 0
        self.peak = 0
        self.waits = 0
        """How many acquisitions had to wait (the budget was spent)."""
        self._waiters: deque[_Waiter] = deque()

    @property
    def waiting(self) -> int:
        """Readers waiting for room right now (their sockets are not being read)."""
        return len(self._waiters)

    def cap(self, large: bool) -> int:
        return self.limit - self.reserve if large else self.limit

    def try_acquire(self, nbytes: int, *, large: bool = False) -> bool:
        if self.in_use + nbytes > self.cap(large):
            return False
        self._take(nbytes)
        return True

    async def acquire(self, nbytes: int, *, large: bool = False) -> None:
        """Wait until `nbytes` fit under this class's cap, then take them. Cancellation
        while waiting takes nothing."""
        cap = self.cap(large)
        if nbytes > cap:
            raise ValueError(f"{nbytes} bytes can never fit under a cap of {cap}")
        if self.try_acquire(nbytes, large=large):
            await trio.lowlevel.checkpoint()
            return
        waiter = _Waiter(nbytes, cap)
        self._waiters.append(waiter)
        self.waits += 1
        try:
            await waiter.event.wait()
        except BaseException:
            if waiter.granted:
                self.release(nbytes)
            else:
                self._waiters.remove(waiter)
            raise

    def force(self, nbytes: int) -> None:
        """Account bytes that exist already; may exceed the limit (readers then wait)."""
        self._take(nbytes)

    def release(self, nbytes: int) -> None:
        if nbytes <= 0:
            return
        self.in_use -= nbytes
        assert self.in_use >= 0, "released more than was acquired"
        self._grant()

    def _take(self, nbytes: int) -> None:
        self.in_use += nbytes
        if self.in_use > self.peak:
            self.peak = self.in_use

    def _grant(self) -> None:
        waiters = self._waiters
        if not waiters:
            return
        keep: deque[_Waiter] = deque()
        while waiters:
            w = waiters.popleft()
            if self.in_use + w.nbytes <= w.cap:
                self._take(w.nbytes)
                w.granted = True
                w.event.set()
            else:
                keep.append(w)
        self._waiters = keep
