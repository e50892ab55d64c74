"""Consumer groups on a real broker process: rebalance latency, idle heartbeat cost, and the
consume throughput of group members.

Run with `python -m tests.bench.group_bench` (`--help` lists the flags). A benchmark: it
prints figures and never asserts timing.

1. Join: `--members` protocol-level members (each follows the client's rules: it releases a
   revoked partition at once and heartbeats again at once, otherwise every heartbeat
   interval) share a `--partitions` topic; once stable, one more member joins. Figures: the
   time from the new member's first heartbeat to owning its share, and for every partition
   that did not move, the longest time it was out of its owner's assignment (a cooperative
   protocol's aim: never).
2. Idle heartbeat cost: `--idle` members join one group on one coordinator, then heartbeat
   every interval for `--idle-seconds`; the broker process's CPU time per second of that
   phase, against the same phase with no members.
3. Throughput: `--records` records of 100 bytes in a 4-partition topic, read by one plain
   consumer (no group), one group member, and a group of 4 members (each its own process-
   less task in one client process, the time until all records are read).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from pathlib import Path

import trio

from broker.wire.group_messages import (
    GroupHeartbeatRequest,
    GroupHeartbeatResponse,
    pairs,
    to_topic_partitions,
)
from consumers import Admin, Consumer, Producer
from consumers.cluster import Cluster
from consumers.coordinator import CoordinatorLink
from consumers.errors import SluiceError
from tests.support.harness import BrokerProcess

TopicPartition = tuple[str, int]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ProtocolMember:
    """A member that follows the client's reconciliation rules, without fetching."""

    def __init__(self, link: CoordinatorLink, group: str, topic: str) -> None:
        self.link = link
        self.group = group
        self.topic = topic
        self.member_id = uuid.uuid4().hex
        self.epoch = 0
        self.owned: frozenset[TopicPartition] = frozenset()
        self.interval = 2.0
        self.gained_at: dict[TopicPartition, float] = {}
        self.gaps: dict[TopicPartition, float] = {}
        """Partition -> the longest time it was out of this member's assignment while owned
        before and after (should never happen for a partition that stays)."""
        self.first_sent: float | None = None
        self.wake = trio.Event()

    async def beat(self) -> GroupHeartbeatResponse:
        req = GroupHeartbeatRequest(
            group_id=self.group,
            member_id=self.member_id,
            member_epoch=self.epoch,
            topics=(self.topic,),
            owned=to_topic_partitions(self.owned),
        )
        if self.first_sent is None:
            self.first_sent = time.perf_counter()
        while True:
            try:
                answer = await self.link.request(req, lane="heartbeat")
                assert isinstance(answer, GroupHeartbeatResponse)
                return answer
            except SluiceError:
                await trio.sleep(0.05)

    async def run(self) -> None:
        while True:
            answer = await self.beat()
            now = time.perf_counter()
            self.epoch = answer.member_epoch
            self.interval = answer.heartbeat_interval_ms / 1000
            assigned = pairs(answer.assignment)
            for tp in assigned - self.owned:
                self.gained_at.setdefault(tp, now)
            revoked = self.owned - assigned
            self.owned = frozenset(self.owned & assigned) | assigned
            if revoked:
                continue  # released: tell the coordinator at once
            with trio.move_on_after(self.interval):
                await self.wake.wait()
            self.wake = trio.Event()

    async def leave(self) -> None:
        req = GroupHeartbeatRequest(group_id=self.group, member_id=self.member_id,
                                    member_epoch=-1, topics=(self.topic,))  # fmt: skip
        await self.link.request(req)


async def join_bench(bootstrap: str, members: int, partitions: int) -> dict[str, float]:
    topic, group = "join-bench", "join-group"
    async with Admin(bootstrap) as admin:
        await admin.create_topic(topic, partitions=partitions)
    async with Cluster(bootstrap) as cluster, trio.open_nursery() as nursery:
        link = CoordinatorLink(cluster, group)
        crew = [ProtocolMember(link, group, topic) for _ in range(members)]
        for m in crew:
            nursery.start_soon(m.run)
        share = partitions // members

        def stable(ms: list[ProtocolMember]) -> bool:
            owned = [tp for m in ms for tp in m.owned]
            return len(owned) == partitions == len(set(owned)) and all(
                len(m.owned) >= partitions // len(ms) for m in ms
            )

        t0 = time.perf_counter()
        while not stable(crew):
            await trio.sleep(0.05)
        settle = time.perf_counter() - t0
        before = {tp: m for m in crew for tp in m.owned}
        newcomer = ProtocolMember(link, group, topic)
        # Watch every member's assignment for partitions that stay with their owner.
        watch_start = time.perf_counter()
        nursery.start_soon(newcomer.run)
        all_members = [*crew, newcomer]
        longest_gap = 0.0
        out_since: dict[TopicPartition, float] = {}
        while not (stable(all_members) and len(newcomer.owned) >= partitions // (members + 1)):
            now = time.perf_counter()
            for tp, owner in before.items():
                if tp in owner.owned:
                    if tp in out_since:
                        longest_gap = max(longest_gap, now - out_since.pop(tp))
                elif tp not in out_since:
                    out_since[tp] = now
            await trio.sleep(0.005)
        done = time.perf_counter()
        moved = {tp for tp, owner in before.items() if tp not in owner.owned}
        stayed_gaps = [done - since for tp, since in out_since.items() if tp not in moved]
        assert newcomer.first_sent is not None
        join_s = max(newcomer.gained_at.values(), default=done) - newcomer.first_sent
        nursery.cancel_scope.cancel()
    return {
        "members": members,
        "partitions": partitions,
        "share": share,
        "initial_settle_s": settle,
        "join_to_owning_share_s": join_s,
        "moved": len(moved),
        "longest_pause_of_unmoved_s": max([longest_gap, *stayed_gaps]),
        "watch_s": done - watch_start,
    }


async def idle_bench(broker: BrokerProcess, members: int, seconds: float) -> dict[str, float]:
    assert broker.proc is not None
    pid = broker.proc.pid
    c0, t0 = cpu_seconds(pid), time.perf_counter()
    await trio.sleep(seconds)
    baseline = (cpu_seconds(pid) - c0) / (time.perf_counter() - t0)
    topic, group = "idle-bench", "idle-group"
    async with Admin(broker.bootstrap) as admin:
        await admin.create_topic(topic, partitions=8)
    async with Cluster(broker.bootstrap) as cluster, trio.open_nursery() as nursery:
        link = CoordinatorLink(cluster, group)
        crew = [ProtocolMember(link, group, topic) for _ in range(members)]
        for m in crew:
            nursery.start_soon(m.run)
        while sum(len(m.owned) for m in crew) < 8 or any(m.epoch == 0 for m in crew):
            await trio.sleep(0.1)
        await trio.sleep(5)  # settle: the joins' rebalances are over
        c0, t0 = cpu_seconds(pid), time.perf_counter()
        await trio.sleep(seconds)
        loaded = (cpu_seconds(pid) - c0) / (time.perf_counter() - t0)
        interval = crew[0].interval
        nursery.cancel_scope.cancel()
    return {
        "members": members,
        "heartbeat_interval_s": interval,
        "heartbeats_per_s": members / interval,
        "broker_cpu_idle": baseline,
        "broker_cpu_with_members": loaded,
        "cpu_ms_per_heartbeat": (loaded - baseline) * 1000 / (members / interval),
    }


async def throughput_bench(bootstrap: str, records: int) -> dict[str, float]:
    topic = "tp-bench"
    async with Admin(bootstrap) as admin:
        await admin.create_topic(topic, partitions=4)
    value = b"x" * 100
    async with Producer(bootstrap, linger_ms=5) as p:
        for i in range(records):
            await p.send(topic, value, partition=i % 4)
        await p.flush()

    async def read(group: str | None, members: int) -> float:
        counts = [0] * members
        first: list[float] = []

        async def member(i: int) -> None:
            async with Consumer(bootstrap, group_id=group, enable_auto_commit=True) as c:
                c.subscribe([topic])
                async for _ in c:
                    if not first:
                        first.append(time.perf_counter())  # reading, not joining, is timed
                    counts[i] += 1

        async with trio.open_nursery() as n:
            for i in range(members):
                n.start_soon(member, i)
            while sum(counts) < records:
                await trio.sleep(0.01)
            elapsed = time.perf_counter() - first[0]  # nor is closing (commit, leave)
            n.cancel_scope.cancel()
        return records / elapsed

    return {
        "records": records,
        "plain_consumer_rec_s": await read(None, 1),
        "group_of_1_rec_s": await read("tp-one", 1),
        "group_of_4_rec_s": await read("tp-four", 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--members", type=int, default=50)
    ap.add_argument("--partitions", type=int, default=100)
    ap.add_argument("--idle", type=int, default=1000)
    ap.add_argument("--idle-seconds", type=float, default=20)
    ap.add_argument("--records", type=int, default=400_000)
    ap.add_argument("--heartbeat-interval-ms", type=int, default=2000)
    ap.add_argument("--only", choices=["join", "idle", "throughput"], default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        broker = BrokerProcess(
            Path(tmp) / "data",
            config={
                "group_heartbeat_interval_ms": args.heartbeat_interval_ms,
                "offsets_topic_replication_factor": 1,
            },
        )
        broker.start()
        broker.wait_ready()
        try:
            if args.only in (None, "join"):
                print("join", trio.run(join_bench, broker.bootstrap, args.members, args.partitions))
            if args.only in (None, "idle"):
                print("idle", trio.run(idle_bench, broker, args.idle, args.idle_seconds))
            if args.only in (None, "throughput"):
                print("throughput", trio.run(throughput_bench, broker.bootstrap, args.records))
        finally:
            broker.kill()


if __name__ == "__main__":
    main()
