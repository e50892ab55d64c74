"""Giving the disk back while the broker runs (a task in the broker's nursery).

Retention compacts partition logs with RocksDB range deletes, and deleted topics delete
their groups the same way: the records disappear from reads at once, but their bytes stay in
the WAL and the SST files until a compaction rewrites those files, and a payload segment
file stays until nothing points into it. Every `every_s` seconds, if anything was deleted
since the last pass (`RocksStore.take_reclaim`, on the loop's thread), a worker thread
compacts exactly the deleted key ranges and finds the sealed segments no entry points into
(`reclaim_space`; the GIL is released while RocksDB compacts, so the loop runs on); back on
the loop's thread, `remove_segments` deletes them after one synced write (payloads.py's
rule: a file goes only when no entry that could survive a crash points into it). A failed
compaction is logged and retried at the next pass; a failed write fails the store (and so
the broker), as every store write does.
"""

from __future__ import annotations

import logging

import trio

from broker.runtime.store.db import RocksStore
from broker.runtime.store.errors import StoreError

log = logging.getLogger(__name__)


async def reclaim_forever(store: RocksStore, every_s: float) -> None:
    """Run `reclaim_once` every `every_s` seconds until cancelled (a pass in progress
    finishes first: the store is closed only after it)."""
    while True:
        await trio.sleep(every_s)
        await reclaim_once(store)


async def reclaim_once(store: RocksStore) -> bool:
    """One pass; False when nothing had been deleted since the last one."""
    work = store.take_reclaim()
    if work is None:
        return False
    try:
        dead = await trio.to_thread.run_sync(store.reclaim_space, work)
    except StoreError as e:
        log.warning("compacting deleted records failed (retried later): %s", e)
        return True
    store.remove_segments(dead)
    return True
