"""Waiting with a deadline, for tests and benchmarks: poll a condition until it holds, and if
it has not held by the deadline raise `WaitTimeout` saying what was awaited (and what was last
seen). A wait never returns silently on timeout, and never stands in for a condition by
sleeping a fixed time.

- `wait_until` (threads, plain code) and `wait_until_async` (Trio): a condition of no
  arguments;
- `poll_until_async` (Trio): an async probe (a metadata request, a stats call in a thread)
  and a test of its answer; returns the answer that passed;
- `poll_records` (Trio): a consumer's records until there are enough;
- `Lines`: the lines of a child's pipe, read by a thread; `wait_for` waits for a line
  matching a pattern.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Awaitable, Callable
from typing import IO, TYPE_CHECKING, TypeVar

import trio

if TYPE_CHECKING:
    from consumers import Consumer, ConsumerRecord

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """What a test waited for did not happen by its deadline."""


def _timed_out(what: str, timeout: float, detail: object = None) -> WaitTimeout:
    message = f"timed out after {timeout:g}s waiting for {what}"
    if detail is not None:
        message += f"; {detail}"
    return WaitTimeout(message)


def wait_until(
    condition: Callable[[], bool],
    what: str,
    *,
    timeout: float = 10.0,
    interval: float = 0.05,
    detail: Callable[[], object] | None = None,
) -> None:
    """Call `condition` every `interval` seconds until it returns true. If it has not by
    `timeout` seconds (it is asked once more at the deadline), raise WaitTimeout naming
    `what`, with `detail()` appended. Exceptions of `condition` propagate."""
    deadline = time.monotonic() + timeout
    while not condition():
        left = deadline - time.monotonic()
        if left <= 0:
            raise _timed_out(what, timeout, None if detail is None else detail())
        time.sleep(min(interval, left))


async def wait_until_async(
    condition: Callable[[], bool],
    what: str,
    *,
    timeout: float = 10.0,
    interval: float = 0.01,
    detail: Callable[[], object] | None = None,
) -> None:
    """`wait_until` in Trio: the condition is asked every `interval` seconds of Trio's clock
    (a MockClock's too)."""
    with trio.move_on_after(timeout):
        while not condition():
            await trio.sleep(interval)
        return
    raise _timed_out(what, timeout, None if detail is None else detail())


async def poll_until_async(
    probe: Callable[[], Awaitable[T]],
    ok: Callable[[T], bool],
    what: str,
    *,
    timeout: float,
    interval: float = 0.05,
    detail: Callable[[T], object] = repr,
    context: Callable[[], object] | None = None,
) -> T:
    """Await `probe()` every `interval` seconds until `ok` accepts its answer, and return that
    answer. The deadline also cuts a probe in progress. On timeout raise WaitTimeout naming
    `what`, the last answer (as `detail` shows it) and `context()`. Exceptions of `probe` and
    `ok` propagate."""
    last: list[T] = []
    with trio.move_on_after(timeout):
        while True:
            answer = await probe()
            last[:] = [answer]
            if ok(answer):
                return answer
            await trio.sleep(interval)
    seen = f"last seen: {detail(last[0])}" if last else "no answer before the deadline"
    if context is not None:
        seen += f"; {context()}"
    raise _timed_out(what, timeout, seen)


async def poll_records(
    consumer: Consumer, count: int, *, timeout: float = 10.0
) -> list[ConsumerRecord]:
    """Poll `consumer` until at least `count` records came (all of them are returned, however
    many); WaitTimeout if fewer came within `timeout` seconds."""
    records: list[ConsumerRecord] = []
    with trio.move_on_after(timeout):
        while len(records) < count:
            records.extend(await consumer.poll(timeout=1.0))
        return records
    raise _timed_out(f"{count} records", timeout, f"{len(records)} came")


class Lines:
    """The lines of one pipe (a child's stdout or stderr), read by a daemon thread as they
    come, so that the child never blocks on a full pipe. `lines` is every line so far."""

    def __init__(self, pipe: IO[bytes]) -> None:
        self.lines: list[str] = []
        self.closed = False
        """The pipe reached its end (the child closed it or exited)."""
        self._cond = threading.Condition()
        threading.Thread(target=self._read, args=(pipe,), daemon=True).start()

    def _read(self, pipe: IO[bytes]) -> None:
        try:
            for raw in pipe:
                with self._cond:
                    self.lines.append(raw.decode(errors="replace").rstrip("\n"))
                    self._cond.notify_all()
        finally:
            with self._cond:
                self.closed = True
                self._cond.notify_all()

    def wait_for(self, pattern: str, timeout: float) -> str:
        """The first line, come or to come, in which `pattern` is found (`re.search`). Raises
        WaitTimeout if none has come within `timeout` seconds (0: only the lines already
        read), or the pipe ended without one."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    if regex.search(line):
                        return line
                what = f"a line matching {pattern!r}"
                if self.closed:
                    raise WaitTimeout(f"the pipe ended without {what}; lines: {self.lines}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise _timed_out(what, timeout, f"lines: {self.lines}")
                self._cond.wait(left)
