"""WalSyncer: tokens come back in order, a sync covers only what was asked before it started,
requests made during a sync are served together by the next one, a failure is handed back."""

from __future__ import annotations

import threading

import pytest
import trio

from broker.runtime.wal_syncer import WalSyncer


class GatedSync:
    """A sync that blocks until released; records which requests had arrived when it began."""

    def __init__(self) -> None:
        self.started = threading.Semaphore(0)
        self.release = threading.Semaphore(0)
        self.calls = 0
        self.fail = False

    def __call__(self) -> None:
        self.calls += 1
        self.started.release()
        assert self.release.acquire(timeout=10)
        if self.fail:
            raise OSError("disk gone")


async def wait_for(cond: threading.Semaphore) -> None:
    assert await trio.to_thread.run_sync(cond.acquire, True, 10)


async def test_requests_during_a_sync_are_covered_by_the_next_one() -> None:
    sync = GatedSync()
    synced: list[int] = []
    arrived = trio.Event()

    def on_synced(token: int) -> None:
        synced.append(token)
        arrived.set()

    syncer = WalSyncer(sync, on_synced, lambda e: pytest.fail(str(e)))
    syncer.start()
    try:
        syncer.request(1)
        await wait_for(sync.started)  # the first sync runs: it covers token 1 only
        syncer.request(2)
        syncer.request(3)
        sync.release.release()
        await arrived.wait()
        arrived = trio.Event()
        assert synced == [1]
        await wait_for(sync.started)  # one more sync, for 2 and 3 together
        sync.release.release()
        await arrived.wait()
        assert synced == [1, 3]
        assert sync.calls == 2 and syncer.syncs == 2
        syncer.request(3)  # already covered: no sync
        syncer.request(4)
        await wait_for(sync.started)
        sync.release.release()
        arrived = trio.Event()
        await arrived.wait()
        assert synced == [1, 3, 4] and sync.calls == 3
    finally:
        syncer.stop()
    syncer.stop()  # idempotent


async def test_a_failed_sync_is_handed_back_and_ends_the_thread() -> None:
    sync = GatedSync()
    sync.fail = True
    failed: list[BaseException] = []
    done = trio.Event()

    def on_failed(e: BaseException) -> None:
        failed.append(e)
        done.set()

    syncer = WalSyncer(sync, lambda t: pytest.fail(f"synced {t}"), on_failed)
    syncer.start()
    syncer.request(1)
    await wait_for(sync.started)
    sync.release.release()
    await done.wait()
    assert isinstance(failed[0], OSError)
    syncer.request(2)  # nobody serves it any more
    syncer.stop()
    assert sync.calls == 1
