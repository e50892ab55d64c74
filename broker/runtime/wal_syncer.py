"""WalSyncer: the one long-lived thread that makes the store's WAL durable for the driver.

The driver writes each round unsynced on the event loop (`RocksStore.write`), takes a token
(`flush_token`: the writes that have returned) and calls `request(token)`; this thread runs
`sync_wal()` (`flush_wal(True)`, which releases the GIL while it syncs) and hands the token it
covered back to the loop through the Trio token (`on_synced`). Requests that arrive while a
sync runs are served together by the next one (group commit): a sync started after a request
covers it, never one already running. A failed sync is handed back (`on_failed`) and ends the
thread: the store is failed, and the driver stops the broker (fail-stop).

The broker runs with a 0.5 ms interpreter switch interval (`broker.app`): at the default 5 ms a
thread returning from the sync waits up to that long for a busy loop to let it back in.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import TypeVar

import trio

T = TypeVar("T")


class WalSyncer:
    """Start with `start()` from inside Trio; `stop()` (idempotent) joins the thread."""

    def __init__(
        self,
        sync: Callable[[], None],
        on_synced: Callable[[int], None],
        on_failed: Callable[[BaseException], None],
    ) -> None:
        self._sync = sync
        self._on_synced = on_synced
        self._on_failed = on_failed
        self._requests: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        """Tokens asked for (None: stop); a C queue, cheaper than a Condition per request."""
        self._thread: threading.Thread | None = None
        self._trio_token: trio.lowlevel.TrioToken | None = None
        self.syncs = 0
        """Syncs run (each may cover several requests)."""

    def start(self) -> None:
        self._trio_token = trio.lowlevel.current_trio_token()
        self._thread = threading.Thread(target=self._run, name="sluice-wal-sync", daemon=True)
        self._thread.start()

    def request(self, token: int) -> None:
        """Make every write up to `token` durable (the loop's thread; never blocks)."""
        self._requests.put(token)

    def stop(self) -> None:
        """Let the thread finish the sync it runs (if any) and end."""
        thread = self._thread
        if thread is None:
            return
        self._requests.put(None)
        thread.join()
        self._thread = None

    def _run(self) -> None:
        token = self._trio_token
        assert token is not None
        requests = self._requests
        covered = 0
        while True:
            target = requests.get()
            while target is not None and not requests.empty():
                newer = requests.get_nowait()
                target = None if newer is None else max(target, newer)
            if target is None:
                return
            if target <= covered:
                continue
            try:
                self._sync()
            except BaseException as exc:
                self._hand_back(token, self._on_failed, exc)
                return
            covered = target
            self.syncs += 1
            if not self._hand_back(token, self._on_synced, target):
                return

    @staticmethod
    def _hand_back(token: trio.lowlevel.TrioToken, fn: Callable[[T], None], value: T) -> bool:
        """Run `fn(value)` on the loop; False once the loop is gone."""
        try:
            token.run_sync_soon(fn, value)
        except trio.RunFinishedError:
            return False
        return True
