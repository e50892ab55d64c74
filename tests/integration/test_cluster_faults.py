"""Three real brokers, replicated partitions, faults injected while idempotent producers
stream: SIGKILL, SIGSTOP, network isolation through the peer proxies, rolling restarts, a
wiped data directory, a stall of every broker at once, and none at all.

Every test keeps a History (tests/support/history.py): every produced value is unique, an
acknowledgement is recorded with the offset its Delivery reported, and after the faults are
healed every partition is read from offset 0 to its high watermark. The durability audit is on
in every broker; a test fails if any broker logged a violation or exited without being told
to. Waits are conditions with deadlines (progress of acknowledgements, leaders reported in
metadata); the only plain sleeps are the fault schedule's own random gaps and the steady-load
duration.

Environment: SLUICE_FAULT_SEED (the fault schedule's seed, printed), SLUICE_STEADY_S (the
steady-load test's duration, default 15; `make soak` may run it for 60).
"""

from __future__ import annotations

import itertools
import os
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import trio

from broker.wire.batch import Record, encode_batch
from broker.wire.errors import ErrorCode
from broker.wire.messages import (
    ProducePartition,
    ProduceRequest,
    ProduceResponse,
    ProduceTopic,
)
from broker.wire.protocol import decode_response, encode_request
from consumers import Admin, Producer
from consumers.errors import SluiceError
from consumers.producer import Delivery
from tests.integration.cluster import Cluster, View, read_back
from tests.integration.wire_client import RawClient
from tests.support.history import History

TOPIC = "faults"
PARTITIONS = 3
SEED = int(os.environ.get("SLUICE_FAULT_SEED", "20261126"))
STEADY_S = float(os.environ.get("SLUICE_STEADY_S", "8"))
KILLS = 6

MakeCluster = Callable[..., Cluster]


# -- the workload ----------------------------------------------------------------------------


@dataclass
class Workload:
    """`workers` idempotent producers, each sending unique values round-robin over the
    partitions at about `rate` records/s, recording every acknowledgement in `history`."""

    cluster: Cluster
    history: History
    workers: int = 2
    rate: float = 1500.0
    request_timeout_ms: int = 3000
    bootstrap: str | None = None
    """The producers' bootstrap list (default: every broker)."""
    acked: Counter[int] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    sent: int = 0
    stop: trio.Event = field(default_factory=trio.Event)
    done: int = 0

    async def run(self) -> None:
        async with trio.open_nursery() as n:
            for w in range(self.workers):
                n.start_soon(self._worker, w)

    async def _worker(self, worker: int) -> None:
        send, receive = trio.open_memory_channel[tuple[int, bytes, Delivery]](5000)
        async with trio.open_nursery() as n:
            n.start_soon(self._settle, worker, receive)
            async with send:
                try:
                    async with Producer(
                        self.bootstrap or self.cluster.bootstrap,
                        idempotent=True,
                        linger_ms=2,
                        request_timeout_ms=self.request_timeout_ms,
                        delivery_timeout_s=60,
                    ) as p:
                        seq = 0
                        burst = 10
                        next_at = trio.current_time()
                        while not self.stop.is_set():
                            for _ in range(burst):
                                seq += 1
                                partition = seq % PARTITIONS
                                value = b"w%d-%d" % (worker, seq)
                                d = await p.send(TOPIC, value, partition=partition)
                                self.sent += 1
                                await send.send((partition, value, d))
                            next_at += burst / self.rate
                            await trio.sleep_until(max(next_at, trio.current_time()))
                        try:
                            await p.flush()
                        except SluiceError as e:
                            self.failed[type(e).__name__] += 1
                except SluiceError as e:  # leaving flushes again and raises the first failure
                    self.failed[type(e).__name__] += 1
        self.done += 1

    async def _settle(
        self, worker: int, receive: trio.MemoryReceiveChannel[tuple[int, bytes, Delivery]]
    ) -> None:
        async with receive:
            async for partition, value, d in receive:
                try:
                    md = await d.wait()
                except SluiceError as e:
                    self.failed[type(e).__name__] += 1  # unknown outcome: may or may not be in
                    continue
                assert md.partition == partition
                self.history.ack((TOPIC, partition), md.offset, value, producer=worker)
                self.acked[partition] += 1

    async def progress(
        self, count: int, partitions: Iterable[int] = range(PARTITIONS), timeout: float = 30.0
    ) -> None:
        """Wait until each of `partitions` has `count` more acknowledgements than now."""
        wanted = list(partitions)
        start = {p: self.acked[p] for p in wanted}
        try:
            with trio.fail_after(timeout):
                while any(self.acked[p] - start[p] < count for p in wanted):
                    await trio.sleep(0.02)
        except trio.TooSlowError:
            gained = {p: self.acked[p] - start[p] for p in wanted}
            views = await self.cluster.views(TOPIC)
            raise AssertionError(
                f"no progress within {timeout}s: acknowledgements gained {gained} (wanted "
                f"{count} each), failures {dict(self.failed)}, live {self.cluster.live()}, "
                f"views {views}; logs in {self.cluster.root}"
            ) from None


async def run_with_workload(
    cluster: Cluster,
    history: History,
    scenario: Callable[[Workload], Awaitable[None]],
    *,
    rate: float = 1500.0,
    budget_s: float = 150.0,
    bootstrap: str | None = None,
) -> Workload:
    """Run the workload, warm it up, run `scenario`, stop and drain the producers, then read
    every partition back into `history`."""
    w = Workload(cluster, history, rate=rate, bootstrap=bootstrap)
    with trio.fail_after(budget_s):
        async with trio.open_nursery() as n:
            n.start_soon(w.run)
            await w.progress(30)
            await scenario(w)
            w.stop.set()
        await read_back(cluster, history, TOPIC, PARTITIONS)
    return w


def run_scenario(
    cluster: Cluster,
    history: History,
    scenario: Callable[[Workload], Awaitable[None]],
    **options: Any,
) -> Workload:
    """Create the test topic, then `run_with_workload` (same options) in a fresh Trio run."""

    async def main() -> Workload:
        await create_topic(cluster)
        return await run_with_workload(cluster, history, scenario, **options)

    return trio.run(main)


def check(cluster: Cluster, history: History, w: Workload) -> None:
    problems = history.check()
    assert not problems, f"{len(problems)} problems, first: {problems[:10]}; logs {cluster.root}"
    assert not cluster.audit_failures(), cluster.audit_failures()
    assert not cluster.unexpected_exits(), cluster.unexpected_exits()
    assert w.done == w.workers, "a producer did not finish"


async def create_topic(cluster: Cluster) -> None:
    async with Admin(cluster.bootstrap) as admin:
        await admin.create_topic(TOPIC, partitions=PARTITIONS, replication_factor=3)
    await cluster.wait_stable(TOPIC)


def in_thread(fn: Callable[..., object], *args: object) -> Awaitable[object]:
    return trio.to_thread.run_sync(fn, *args)


# -- raw produce requests: what one broker answers, with no client-library retry ------------


def produce_request(partition: int, value: bytes, timeout_ms: int) -> ProduceRequest:
    batch = encode_batch([Record(value=value, timestamp=int(time.time() * 1000))])
    part = ProducePartition(partition=partition, batch=batch)
    return ProduceRequest(
        topics=(ProduceTopic(name=TOPIC, partitions=(part,)),), timeout_ms=timeout_ms
    )


def produce_result(frame: bytes | None) -> tuple[ErrorCode, int]:
    """(error, base offset) of the one partition of a raw produce answer."""
    assert frame is not None, "the broker closed the connection instead of answering"
    envelope = decode_response(frame, ProduceRequest.API_KEY)
    assert envelope.error is ErrorCode.NONE, envelope
    body = envelope.body
    assert isinstance(body, ProduceResponse)
    result = body.topics[0].partitions[0]
    return result.error, result.base_offset


async def wait_refused(
    cluster: Cluster, broker: int, partition: int, history: History, timeout: float = 10.0
) -> None:
    """Send raw produce requests (short timeouts) for `partition` straight to `broker` until
    it answers NOT_LEADER: it no longer takes writes as leader. A leader that has not noticed
    yet proposes the batch and answers REQUEST_TIMED_OUT; were one ever acknowledged, the
    history requires it in the final log at that offset."""
    raw = await RawClient.connect("127.0.0.1", cluster.brokers[broker].client_port)
    try:
        with trio.fail_after(timeout):
            n = 0
            while True:
                n += 1
                value = b"raw-%d-%d" % (broker, n)
                req = produce_request(partition, value, 500)
                await raw.send_raw(encode_request(req, n, "raw"))
                error, offset = produce_result(await raw.next_frame())
                if error is ErrorCode.NONE:
                    history.ack((TOPIC, partition), offset, value, producer=("raw", broker))
                if error is ErrorCode.NOT_LEADER_OR_FOLLOWER:
                    return
                assert error in (ErrorCode.REQUEST_TIMED_OUT, ErrorCode.NONE), error
                await trio.sleep(0.05)
    except trio.TooSlowError:
        raise AssertionError(
            f"broker {broker} still takes writes for partition {partition} after {timeout}s; "
            f"logs in {cluster.root}"
        ) from None
    finally:
        await raw.aclose()


# -- 1. repeated SIGKILL ----------------------------------------------------------------------


def test_repeated_sigkill_of_random_brokers(cluster_factory: MakeCluster) -> None:
    """Random brokers (leaders, followers, the controller) are killed with SIGKILL one at a
    time and restarted while the producers keep running: every acknowledged record is read
    back exactly once, in order, at the offset it was acknowledged with. Every entry's
    payload is in the payload segments here (`external_payload_bytes = 64`), so their
    append, sync, catch-up reads and suffix replacements all meet the kills (the other
    scenarios keep the default, where these small entries stay in RocksDB)."""
    cluster = cluster_factory(3, external_payload_bytes=64)
    history = History()
    rng = random.Random(SEED)
    kills: list[int] = []

    async def scenario(w: Workload) -> None:
        for _ in range(KILLS):
            await trio.sleep(rng.uniform(0.2, 1.0))
            victim = rng.randrange(cluster.size)
            kills.append(victim)
            cluster.kill(victim)
            await trio.sleep(rng.uniform(0.0, 0.5))
            await in_thread(cluster.start_broker, victim)
            await cluster.wait_leaders(TOPIC)
            await w.progress(20)

    w = run_scenario(cluster, history, scenario)
    print(f"\nseed {SEED}: killed {kills}; acked {sum(w.acked.values())}, failed {w.failed}")
    check(cluster, history, w)
    assert sum(w.acked.values()) > 1000
    assert len(kills) == KILLS


# -- 2. a paused leader -----------------------------------------------------------------------


def test_paused_leader_refuses_after_resume(cluster_factory: MakeCluster) -> None:
    """The leader of a partition is paused (SIGSTOP) while a raw request to it waits in its
    socket and the producers keep going; a new leader is elected and production resumes on
    it; once resumed, the old leader answers the request it finds with NOT_LEADER and
    acknowledges nothing as the old leader (every acknowledgement agrees with the final log)."""
    cluster = cluster_factory(3)
    history = History()
    answers: list[ErrorCode] = []

    async def scenario(w: Workload) -> None:
        partition = 0
        before = await cluster.wait_leaders(TOPIC)
        old, term = before[partition]
        assert old is not None
        raw = await RawClient.connect("127.0.0.1", cluster.brokers[old].client_port)
        try:
            # The raw path works while it leads (and that record is in the history too).
            pre = produce_request(partition, b"raw-before", 10_000)
            await raw.send_raw(encode_request(pre, 1, "raw"))
            error, offset = produce_result(await raw.next_frame())
            assert error is ErrorCode.NONE, error
            history.ack((TOPIC, partition), offset, b"raw-before", producer="raw")

            cluster.pause(old)
            during = produce_request(partition, b"raw-during-pause", 10_000)
            await raw.send_raw(encode_request(during, 2, "raw"))  # waits in its socket
            after = await cluster.wait_leaders(TOPIC, partitions=[partition], avoid=[old])
            assert after[partition][1] > term, (before, after)
            await w.progress(20, [partition])  # production moved to the new leader
            cluster.resume(old)
            with trio.fail_after(15):
                error, offset = produce_result(await raw.next_frame())
            answers.append(error)
            if error is ErrorCode.NONE:
                history.ack((TOPIC, partition), offset, b"raw-during-pause", producer="raw")
        finally:
            await raw.aclose()
        await cluster.wait_stable(TOPIC)
        await w.progress(20)

    w = run_scenario(cluster, history, scenario)
    print(f"\nold leader answered {answers}; acked {sum(w.acked.values())}, failed {w.failed}")
    assert answers == [ErrorCode.NOT_LEADER_OR_FOLLOWER], (
        f"the resumed old leader answered {answers}; logs in {cluster.root}"
    )
    check(cluster, history, w)


# -- 3. a leader cut off from its followers ----------------------------------------------------


def test_isolated_leader_steps_down_and_clients_move_on(cluster_factory: MakeCluster) -> None:
    """The leader of a partition is cut from both followers by the peer proxies; clients still
    reach it, and it is the very broker the producers were bootstrapped from (their first
    metadata source goes stale: they must find the new leader elsewhere). Check-quorum makes
    it step down: it answers a produce with NOT_LEADER instead of taking it, and stops naming
    itself the leader. Production on that partition resumes on the new leader while the old
    one is still isolated. After healing, the history is clean."""
    cluster = cluster_factory(3)
    history = History()
    partition = 0
    stepped_down_after: list[float] = []
    victim: list[int] = []

    async def scenario(w: Workload) -> None:
        old = victim[0]
        before = await cluster.wait_leaders(TOPIC)
        assert before[partition][0] == old, before
        term = before[partition][1]
        cluster.isolate(old)
        t0 = trio.current_time()
        await wait_refused(cluster, old, partition, history)
        stepped_down_after.append(trio.current_time() - t0)
        after = await cluster.wait_leaders(TOPIC, partitions=[partition], avoid=[old])
        assert after[partition][1] > term
        # The clients move on while the old leader is still cut off.
        await w.progress(30, [partition], timeout=20)
        assert cluster.proxies[old].rule_for(None).cut, "healed too early"
        own = await cluster.view(old, TOPIC)
        assert own is not None
        assert own.leaders[partition][0] != old, (
            f"broker {old} stepped down but still names itself leader of partition "
            f"{partition}: {own}"
        )
        cluster.heal()
        await cluster.wait_stable(TOPIC)
        await w.progress(20)

    async def main() -> Workload:
        await create_topic(cluster)
        old = await cluster.leader_of(TOPIC, partition)
        victim.append(old)
        return await run_with_workload(
            cluster, history, scenario, bootstrap=cluster.brokers[old].bootstrap
        )

    w = trio.run(main)
    print(
        f"\nstepped down after {stepped_down_after[0]:.2f}s; acked {sum(w.acked.values())}, "
        f"failed {w.failed}"
    )
    check(cluster, history, w)


# -- 3b. a leader that can hear but not be heard ------------------------------------------------


def test_leader_with_outgoing_links_blackholed_is_replaced(cluster_factory: MakeCluster) -> None:
    """One-way blackhole: nothing the leader of a partition sends reaches the other brokers,
    while it still hears them (the links stay open; what it sends is held by the proxies).
    The followers elect a new leader, the old one learns the new term and steps down, the
    producers move on; after healing, the old leader's held (stale) messages are delivered
    late and must change nothing: the history is clean."""
    cluster = cluster_factory(3)
    history = History()
    partition = 0

    async def scenario(w: Workload) -> None:
        before = await cluster.wait_leaders(TOPIC)
        old, term = before[partition]
        assert old is not None
        for j in range(cluster.size):
            if j != old:
                cluster.stall(old, j)
        after = await cluster.wait_leaders(TOPIC, partitions=[partition], avoid=[old])
        assert after[partition][1] > term
        await w.progress(30, [partition], timeout=30)
        await wait_refused(cluster, old, partition, history)
        cluster.heal()
        await cluster.wait_stable(TOPIC)
        await w.progress(20)

    w = run_scenario(cluster, history, scenario)
    print(f"\nacked {sum(w.acked.values())}, failed {w.failed}")
    check(cluster, history, w)


# -- 4. rolling restart ------------------------------------------------------------------------


def test_rolling_restart_under_load(cluster_factory: MakeCluster) -> None:
    """Each broker in turn is stopped with SIGTERM (a clean exit), started again and waited
    for, under load: nothing acknowledged is lost or duplicated."""
    cluster = cluster_factory(3)
    history = History()

    async def scenario(w: Workload) -> None:
        for i in range(cluster.size):
            code = await in_thread(cluster.terminate, i)
            assert code == 0, f"broker {i} exited with {code}: {cluster.brokers[i].log_tail()}"
            await in_thread(cluster.start_broker, i)
            await cluster.wait_leaders(TOPIC)
            await w.progress(20)

    w = run_scenario(cluster, history, scenario)
    print(f"\nacked {sum(w.acked.values())}, failed {w.failed}")
    check(cluster, history, w)


# -- 5. a wiped broker rejoins -----------------------------------------------------------------


_probe_ids = itertools.count(1)


async def probe(
    cluster: Cluster, broker: int, partition: int, history: History, timeout_s: float = 2.0
) -> ErrorCode:
    """One raw produce of a fresh value straight to `broker`; an acknowledgement goes into the
    history like any other."""
    n = next(_probe_ids)
    value = b"probe-%d" % n
    raw = await RawClient.connect("127.0.0.1", cluster.brokers[broker].client_port)
    try:
        req = produce_request(partition, value, int(timeout_s * 1000))
        await raw.send_raw(encode_request(req, 1, "probe"))
        with trio.fail_after(timeout_s + 3):
            error, offset = produce_result(await raw.next_frame())
    finally:
        await raw.aclose()
    if error is ErrorCode.NONE:
        history.ack((TOPIC, partition), offset, value, producer=("probe", n))
    return error


async def commits_without(
    cluster: Cluster, w: Workload, history: History, paused: int, needed: int
) -> int:
    """Pause `paused` and require every partition's leader to commit a write: with 3
    replicas that takes `needed`'s vote and acknowledgement, and since it acknowledged an
    append at the end of the leader's log, by log matching it holds all of it. A replacement
    may be half done (4 voters, the old incarnation among them, so one more pause stalls the
    group): an attempt that cannot commit is undone (resume, wait until the cluster is
    stable and producing) and tried again until the deadline. Returns the attempts taken."""
    deadline = trio.current_time() + 60
    attempts = 0
    missing: set[int] = set()
    while trio.current_time() < deadline:
        attempts += 1
        missing = set(range(PARTITIONS))
        cluster.pause(paused)
        try:
            with trio.move_on_after(6):
                while missing:
                    leaders = await cluster.wait_leaders(TOPIC, avoid=[paused], timeout=6)
                    for p in sorted(missing):
                        leader = leaders[p][0]
                        assert leader is not None
                        if await probe(cluster, leader, p, history) is ErrorCode.NONE:
                            missing.discard(p)
        except AssertionError:
            pass  # no leader for some partition within the attempt: undo and try again
        finally:
            cluster.resume(paused)
        if not missing:
            return attempts
        await cluster.wait_stable(TOPIC)
        await w.progress(10)
    raise AssertionError(
        f"with broker {paused} paused, partitions {sorted(missing)} never committed: broker "
        f"{needed} does not count in their quorums ({attempts} attempts); logs in "
        f"{cluster.root}"
    )


def test_wiped_broker_rejoins_as_new_incarnation(cluster_factory: MakeCluster) -> None:
    """A broker's data directory is lost (SIGKILL, delete, start): it comes back with a new
    incarnation, and per design.md "Identity" the controller adds it to each group as a
    learner, lets it catch up, promotes it and removes the old incarnation. Then each
    partition's replicas are whole again: with either other broker paused, every partition
    still commits, which needs the new incarnation's vote and log. Nothing acknowledged is
    lost, before or after."""
    cluster = cluster_factory(3)
    history = History()
    wiped = 2
    attempts: list[tuple[int, int, float]] = []
    """(broker paused, attempts it took, seconds since the wiped broker was ready)."""

    async def scenario(w: Workload) -> None:
        await in_thread(cluster.wipe, wiped)
        ready_at = trio.current_time()
        await cluster.wait_leaders(TOPIC)
        await w.progress(20)
        for other in range(cluster.size):
            if other != wiped:
                n = await commits_without(cluster, w, history, other, wiped)
                attempts.append((other, n, round(trio.current_time() - ready_at, 1)))
        await cluster.wait_stable(TOPIC)

    w = run_scenario(cluster, history, scenario, budget_s=170)
    acked = sum(w.acked.values())
    print(f"\n(paused, attempts, s after ready) {attempts}; acked {acked}, failed {w.failed}")
    check(cluster, history, w)


def views_around(
    cluster: Cluster,
    history: History,
    middle: Callable[[Workload], Awaitable[None]],
    *,
    budget_s: float = 150.0,
) -> tuple[Workload, list[View], list[View]]:
    """Under a 1,000 records/s workload on a fresh topic: what every broker reports (leaders,
    terms, controller) once stable, then `middle`, then what they report after it."""
    snapshots: list[list[View]] = []

    async def scenario(w: Workload) -> None:
        snapshots.append(sorted(await cluster.wait_stable(TOPIC), key=lambda v: v.broker))
        await middle(w)
        snapshots.append(sorted(await cluster.views(TOPIC), key=lambda v: v.broker))

    w = run_scenario(cluster, history, scenario, rate=1000.0, budget_s=budget_s)
    before, after = snapshots
    return w, before, after


# -- 6. steady load, no faults -----------------------------------------------------------------


def test_steady_load_changes_no_leader(cluster_factory: MakeCluster) -> None:
    """Under steady load with no faults, no partition changes leader or term and the
    controller stays put (as every broker reports it, before and after)."""
    cluster = cluster_factory(3)
    history = History()

    async def steady(w: Workload) -> None:
        await trio.sleep(STEADY_S)  # the load's duration, not a wait for a condition

    w, before, after = views_around(cluster, history, steady, budget_s=STEADY_S + 90)
    print(f"\n{STEADY_S}s steady: acked {sum(w.acked.values())}, failed {w.failed}")
    assert after == before, f"leaders changed under steady load: {before} -> {after}"
    assert not w.failed, w.failed
    check(cluster, history, w)
    assert sum(w.acked.values()) >= STEADY_S * 500


# -- 7. the whole machine stalls ------------------------------------------------------------


def test_a_stall_of_every_broker_changes_no_leader(cluster_factory: MakeCluster) -> None:
    """Every broker is stopped for a second at once (SIGSTOP: a VM pause, a host swapping)
    and resumed under load: no partition changes leader or term and the controller stays put.
    Each broker wakes to a second of missed ticks and unread heartbeats; delivering the
    ticks first would expire every timer and depose the leaders."""
    cluster = cluster_factory(3)
    history = History()

    async def stall(w: Workload) -> None:
        for i in range(cluster.size):
            cluster.pause(i)
        await trio.sleep(1.0)  # the stall's length, not a wait for a condition
        for i in range(cluster.size):
            cluster.resume(i)
        await w.progress(30)

    w, before, after = views_around(cluster, history, stall)
    print(f"\nacked {sum(w.acked.values())}, failed {w.failed}")
    assert after == before, f"leaders changed after a stall: {before} -> {after}"
    check(cluster, history, w)
