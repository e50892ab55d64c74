"""A consumer group under faults, on three real brokers: a 12-partition RF-3 topic, a
continuous stream, six member processes (tests/integration/group_member_proc.py) while
members are added, stopped, SIGKILLed, and the coordinator's broker is SIGKILLed.

Checked from the members' own logs and what the producer had acknowledged:
- every acknowledged record was processed at least once;
- a record processed twice was first processed by a member that was later SIGKILLed, at an
  offset at or after that member's last successful commit of its partition (re-processing
  only of what a crashed member had not committed);
- no partition was processed by two live members at once (each member's processing of a
  partition, from its first to its last record there while it owned it, never overlaps
  another member's: timestamps from one machine's clock);
- the offsets committed before the coordinator's broker was killed are still there after
  (the final committed offset of every partition is its end offset, and no member started a
  partition below an offset committed before).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import trio

from broker.wire.group_messages import OffsetFetchRequest, OffsetFetchResponse
from consumers import Admin, Producer
from consumers.cluster import Cluster as ClientCluster
from consumers.coordinator import CoordinatorLink
from consumers.errors import SluiceError
from tests.integration.cluster import Cluster
from tests.support.harness import ROOT
from tests.support.wait import poll_until_async

TOPIC, GROUP = "grouped", "workers"
PARTITIONS = 12
SESSION_MS = 4000

MakeCluster = Callable[..., Cluster]


class Member:
    def __init__(self, name: str, bootstrap: str, log: Path) -> None:
        self.name = name
        self.log = log
        self.killed_at: float | None = None
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.group_member_proc", bootstrap, TOPIC,
             GROUP, str(log), str(SESSION_MS)],
            cwd=ROOT, stderr=(log.parent / f"{name}.err").open("ab"),
        )  # fmt: skip

    def kill(self) -> None:
        self.killed_at = time.time()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)

    def events(self) -> list[dict[str, object]]:
        if not self.log.exists():
            return []
        out = []
        for line in self.log.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut by SIGKILL
        return out


async def committed(bootstrap: str) -> dict[int, int]:
    async with ClientCluster(bootstrap) as c:
        link = CoordinatorLink(c, GROUP)

        async def fetch() -> OffsetFetchResponse:
            r = await link.request(OffsetFetchRequest(group_id=GROUP))
            assert isinstance(r, OffsetFetchResponse)
            return r

        r = await c.retry_until(trio.current_time() + 30, fetch)
        return {o.partition: o.offset for o in r.offsets}


async def coordinator_broker(bootstrap: str) -> int:
    async with ClientCluster(bootstrap) as c:
        link = CoordinatorLink(c, GROUP)
        return await c.retry_until(trio.current_time() + 30, link.find)


def test_group_under_member_and_coordinator_faults(
    cluster_factory: MakeCluster, tmp_path: Path
) -> None:
    cluster = cluster_factory(3, group_session_timeout_ms=SESSION_MS)
    bootstrap = cluster.bootstrap
    acked: dict[int, dict[int, str]] = defaultdict(dict)
    members: list[Member] = []
    before_kill: dict[int, int] = {}
    after_failover: dict[int, int] = {}

    def add(name: str) -> Member:
        m = Member(name, bootstrap, tmp_path / f"{name}.log")
        members.append(m)
        return m

    async def produce(stop: trio.Event) -> None:
        n = 0
        async with Producer(bootstrap, linger_ms=5) as p:
            while not stop.is_set():
                deliveries = []
                for _ in range(50):
                    value = f"v{n}"
                    n += 1
                    deliveries.append((value, await p.send(TOPIC, value.encode())))
                for value, d in deliveries:
                    try:
                        md = await d.wait()
                    except SluiceError:
                        continue  # not acknowledged: no promise to check
                    acked[md.partition][md.offset] = value
                await trio.sleep(0.05)

    async def scenario() -> None:
        nonlocal before_kill
        async with Admin(bootstrap) as admin:
            await admin.create_topic(TOPIC, partitions=PARTITIONS, replication_factor=3)
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(produce, stop)
            for i in range(6):
                add(f"m{i}")
            await trio.sleep(6)
            add("m6")  # a member joins
            await trio.sleep(3)
            await trio.to_thread.run_sync(members[1].stop)  # one leaves cleanly
            await trio.sleep(3)
            await trio.to_thread.run_sync(members[2].kill)  # one crashes
            await trio.sleep(SESSION_MS / 1000 + 1)
            before_kill = await committed(bootstrap)
            coordinator = await coordinator_broker(bootstrap)
            await trio.to_thread.run_sync(cluster.kill, coordinator)  # the coordinator dies
            after_failover.update(await committed(bootstrap))
            await trio.sleep(2)
            await trio.to_thread.run_sync(cluster.restart, coordinator)
            add("m7")
            await trio.sleep(3)
            await trio.to_thread.run_sync(members[3].kill)
            await trio.sleep(3)
            stop.set()
        live = [m for m in members if m.proc.poll() is None]

        def unprocessed() -> list[tuple[int, int]]:
            seen = {(int(e["p"]), int(e["o"])) for m in members for e in m.events()  # type: ignore[call-overload]
                    if e["ev"] == "rec"}  # fmt: skip
            return [(p, o) for p, offs in acked.items() for o in offs if (p, o) not in seen]

        await poll_until_async(
            lambda: trio.to_thread.run_sync(unprocessed), lambda left: not left,
            "every acknowledged record processed", timeout=60, interval=0.5,
            detail=lambda left: f"{len(left)} left, e.g. {left[:5]}",
        )  # fmt: skip
        for m in live:
            await trio.to_thread.run_sync(m.stop)

    try:
        trio.run(scenario)
    finally:
        for m in members:
            if m.proc.poll() is None:
                m.kill()
    final = trio.run(committed, bootstrap)
    for p, offset in before_kill.items():
        assert after_failover.get(p, -1) >= offset, (
            f"partition {p}: committed {offset} before the failover, "
            f"{after_failover.get(p)} right after"
        )
    check(members, acked, before_kill, final)


def check(
    members: list[Member],
    acked: dict[int, dict[int, str]],
    before_kill: dict[int, int],
    final: dict[int, int],
) -> None:
    first: dict[tuple[int, int], tuple[Member, float]] = {}
    dupes: list[tuple[int, int, Member]] = []
    spans: dict[int, list[tuple[float, float, str]]] = defaultdict(list)
    last_commit: dict[tuple[str, int], int] = {}
    for m in members:
        open_span: dict[int, list[float]] = {}
        for e in m.events():
            if e["ev"] == "rec":
                p, o, t = int(e["p"]), int(e["o"]), float(e["t"])  # type: ignore[arg-type]
                if (p, o) in first:
                    dupes.append((p, o, first[(p, o)][0]))
                else:
                    first[(p, o)] = (m, t)
                span = open_span.setdefault(p, [t, t])
                span[1] = t
            elif e["ev"] in ("revoked", "lost"):
                for _, p in e["tps"]:  # type: ignore[union-attr]
                    if p in open_span:
                        a, b = open_span.pop(p)
                        spans[p].append((a, b, m.name))
            elif e["ev"] == "commit":
                for p, o in e["offsets"]:  # type: ignore[union-attr]
                    last_commit[(m.name, p)] = o
        for p, (a, b) in open_span.items():
            spans[p].append((a, b, m.name))
    total = sum(len(offs) for offs in acked.values())
    assert total > 1000 and len(acked) == PARTITIONS, f"only {total} records acknowledged"
    for m in members:
        assert any(e["ev"] == "rec" for e in m.events()), f"{m.name} processed nothing"
    moved = sum(1 for m in members for e in m.events() if e["ev"] == "revoked")
    assert moved > 0, "no partition ever moved: the faults did not exercise the group"
    print(f"{total} records, {len(dupes)} re-processed, {moved} revocations")
    missing = [(p, o) for p, offs in acked.items() for o in offs if (p, o) not in first]
    assert not missing, f"acknowledged records never processed: {missing[:10]}"
    for p, o, m in dupes:
        assert m.killed_at is not None, f"{p}@{o} re-processed after {m.name}, which was not killed"
        assert o >= last_commit.get((m.name, p), 0), (
            f"{p}@{o} re-processed below {m.name}'s last commit {last_commit.get((m.name, p))}"
        )
    for p, ss in spans.items():
        ss.sort()
        end, holder = float("-inf"), ""
        for a, b, name in ss:
            assert name == holder or a >= end, (
                f"partition {p}: {name} processed from {a} while {holder} did until {end}"
            )
            if b > end:
                end, holder = b, name
    for p, offset in before_kill.items():
        assert final.get(p, -1) >= offset, (
            f"partition {p}: committed {offset} before, {final.get(p)} after"
        )
    for p, offs in acked.items():
        assert final.get(p) == max(offs) + 1, f"partition {p}: final commit {final.get(p)}"
