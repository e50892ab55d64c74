"""Snapshots through the runtime's write path on real RocksDB files: three BrokerNodes over
RocksStores in one process, each round written as the driver writes it (`round_writes`, the
commit, then `write_compactions`). A broker is down while the others compact their metadata
and partition logs past it; back, it installs both snapshots; its store then holds the
installed snapshots, its partition's apply state and an offset index without the records
the snapshot replaced; and a second restart restores the same state from that store."""

from __future__ import annotations

import functools
import random
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path

from broker.core.metadata import METADATA_GROUP, BrokerInfo
from broker.core.node import BrokerNode, Completion, Envelope, NodeConfig, Round
from broker.core.partition import PartitionMachine
from broker.core.peer_codec import BrokerHeartbeat
from broker.core.rounds import begin_round, end_round
from broker.runtime.groups import RocksGroupStore, round_writes, write_compactions
from broker.runtime.store import RocksStore
from broker.wire.errors import ErrorCode
from tests.support.broker_harness import batch

SEEDS = {i: f"b{i}:9093" for i in range(3)}
OPTIONS = {
    "metadata_snapshot_entries": 1,
    "snapshot_catchup_entries": 0,
    "partition_retention_entries": 4,
    "max_snapshot_chunk_bytes": 64,
    "broker_lease_ticks": 10,
}


class RocksBroker:
    def __init__(self, path: Path, node_id: int) -> None:
        self.path = path
        self.id = node_id
        self.store = RocksStore.open(path, node_id, audit=True)
        self.node = self._new_node()

    def _new_node(self) -> BrokerNode:
        inc = self.store.incarnation
        return BrokerNode(
            NodeConfig(node_id=self.id, incarnation=inc, **OPTIONS),  # type: ignore[arg-type]
            RocksGroupStore(self.store),
            random.Random(self.id),
            bootstrap_cluster_id="rocks",
            controllers=dict(SEEDS),
            advertised=BrokerInfo(self.id, inc, f"b{self.id}", 9092, f"b{self.id}", 9093, None),
        )

    def restart(self) -> None:
        """A crash between rounds: whatever the rounds wrote is what the new node finds."""
        self.store.close()
        self.store = RocksStore.open(self.path, self.id, audit=True)
        self.node = self._new_node()


class _ClusterIO:
    """Broker `src`'s sends go to the cluster's inbox; its completions to the record."""

    def __init__(self, cluster: MiniCluster, src: int) -> None:
        self.cluster = cluster
        self.src = src

    def started(self, rnd: Round) -> None:
        return None

    def send(self, envelopes: list[Envelope]) -> None:
        self.cluster._send(self.src, envelopes)

    def send_heartbeats(self, heartbeats: list[tuple[int, BrokerHeartbeat]]) -> None:
        c = self.cluster
        for dst, hb in heartbeats:
            if dst in c.up:
                c.inbox.append((dst, functools.partial(c._heartbeat, self.src, dst, hb)))

    def complete(self, completions: list[Completion]) -> None:
        self.cluster.completions.extend(completions)


class MiniCluster:
    """Messages are delivered in process (no codec) to brokers that are up, in order."""

    def __init__(self, tmp_path: Path) -> None:
        self.brokers = {i: RocksBroker(tmp_path / f"b{i}", i) for i in range(3)}
        self.up = set(self.brokers)
        self.inbox: deque[tuple[int, Callable[[], None]]] = deque()
        self.completions: list[Completion] = []
        self.installs: list[tuple[int, int]] = []
        """(broker, group) of every snapshot a round installed."""
        for i in self.brokers:
            self.hellos(i)

    def hellos(self, i: int) -> None:
        for j in self.up - {i}:
            for a, b in ((i, j), (j, i)):
                other = self.brokers[b]
                cid = other.store.cluster_id or other.node.meta.cluster_id
                self.brokers[a].node.on_peer_hello(
                    b, other.store.incarnation, cid, other.node.bootstrapped
                )

    def _send(self, src: int, envelopes: Iterable[Envelope]) -> None:
        for env in envelopes:
            if env.dst in self.up:
                node = self.brokers[env.dst].node
                self.inbox.append(
                    (env.dst, functools.partial(node.step, env.group_id, env.message))
                )

    def _heartbeat(self, src: int, dst: int, hb: BrokerHeartbeat) -> None:
        ack = self.brokers[dst].node.on_broker_heartbeat(hb)
        if src in self.up:
            self.inbox.append(
                (src, functools.partial(self.brokers[src].node.on_heartbeat_ack, ack))
            )

    def _rounds(self, i: int) -> None:
        b = self.brokers[i]
        node, store = b.node, b.store
        io = _ClusterIO(self, i)
        while node.has_work():
            rnd = begin_round(node, io)
            store.commit(round_writes(store, rnd))
            write_compactions(store, rnd)
            self.installs.extend((i, gid) for gid, rd in rnd.readies if rd.snapshot is not None)
            end_round(node, rnd, io)
            if node.meta.cluster_id is not None and store.cluster_id is None:
                store.record_cluster_id(node.meta.cluster_id)

    def settle(self) -> None:
        for _ in range(10_000):
            for i in sorted(self.up):
                self._rounds(i)
            if not self.inbox:
                return
            while self.inbox:
                dst, fn = self.inbox.popleft()
                if dst in self.up:
                    fn()
        raise AssertionError("the cluster never settled")

    def tick(self, n: int = 1) -> None:
        for _ in range(n):
            for i in sorted(self.up):
                self.brokers[i].node.tick()
            self.settle()

    def until(self, done: Callable[[], bool], ticks: int = 300) -> None:
        for _ in range(ticks):
            if done():
                return
            self.tick()
        raise AssertionError("condition not reached")

    def leader(self, gid: int) -> BrokerNode | None:
        for i in sorted(self.up):
            g = self.brokers[i].node.groups.get(gid)
            if g is not None and g.serving():
                return self.brokers[i].node
        return None

    def call(self, token: int, start: Callable[[], tuple[ErrorCode, str | None]]) -> Completion:
        err, msg = start()
        assert err == ErrorCode.NONE, (err, msg)
        self.until(lambda: any(c.token == token for c in self.completions))
        (c,) = [c for c in self.completions if c.token == token]
        return c


def test_a_lagging_broker_installs_snapshots_through_rocksdb(tmp_path: Path) -> None:
    mc = MiniCluster(tmp_path)
    mc.until(lambda: all(mc.brokers[i].node.registered for i in mc.brokers) and bool(mc.leader(0)))
    ctl = mc.leader(METADATA_GROUP)
    assert ctl is not None
    c = mc.call(1, lambda: ctl.create_topic(1, 0, "t", 1, 3, {}))
    assert c.error == ErrorCode.NONE
    gid = ctl.meta.topics["t"].partitions[0].group_id
    mc.until(lambda: mc.leader(gid) is not None)

    token = 100

    def produce(n: int) -> None:
        nonlocal token
        for _ in range(n):
            token += 1
            t = token
            mc.until(lambda: mc.leader(gid) is not None)
            lead = mc.leader(gid)
            assert lead is not None
            data = batch(1, value=b"v%d" % t)
            done = mc.call(t, functools.partial(lead.produce, t, 0, "t", 0, data))
            assert done.error == ErrorCode.NONE

    def lead(group: int) -> BrokerNode:
        node = mc.leader(group)
        assert node is not None
        return node

    produce(5)
    # Down: a broker leading neither the metadata group nor the partition.
    leaders = {lead(METADATA_GROUP).config.node_id, lead(gid).config.node_id}
    down = next(i for i in sorted(mc.brokers) if i not in leaders)
    mc.up.discard(down)
    produce(20)
    mc.tick(15)  # its lease runs out: the controller's metadata log moves on without it
    for i in mc.up:
        st = mc.brokers[i].store
        assert st.group(gid).first_index() > 8  # compacted past what the down broker holds
        assert st.group(METADATA_GROUP).snapshot_meta.index > 0

    b = mc.brokers[down]
    b.restart()
    mc.up.add(down)
    mc.hellos(down)

    def caught_up() -> bool:
        g = b.node.groups.get(gid)
        meta_applied = lead(METADATA_GROUP).meta.applied_index
        return (
            g is not None
            and g.raft.log.applied >= lead(gid).groups[gid].raft.log.applied
            and b.node.meta.applied_index >= meta_applied
        )

    mc.until(caught_up)
    mc.tick(3)
    assert {(down, METADATA_GROUP), (down, gid)} <= set(mc.installs)

    def check(node: BrokerNode, store: RocksStore) -> PartitionMachine:
        """The down broker's store and machine after the installs."""
        m = node.groups[gid].machine
        assert m is not None
        group = store.group(gid)
        assert group.snapshot_meta.index >= group.first_index() - 1 > 8
        assert m.log_start_offset >= 8
        assert [base for base, _ in store.scan_offsets(gid)] == [b for b, _, _ in m.index.items()]
        assert all(base >= m.log_start_offset for base, _ in store.scan_offsets(gid))
        stored = PartitionMachine()
        stored.restore(store.read_apply(gid), [])
        assert stored.log_start_offset == m.log_start_offset
        return m

    mine = check(b.node, b.store)
    theirs = lead(gid).groups[gid].machine
    assert theirs is not None
    assert mine.snapshot_bytes() == theirs.snapshot_bytes()
    assert b.node.meta.topics == ctl.meta.topics and b.node.meta.brokers == ctl.meta.brokers

    # A second restart restores the same state from what the installs left on disk.
    index = list(mine.index.items())
    b.restart()
    restored = check(b.node, b.store)
    assert restored.snapshot_bytes() == mine.snapshot_bytes()
    assert list(restored.index.items()) == index
    assert b.node.meta.topics == ctl.meta.topics
    for br in mc.brokers.values():
        br.store.close()
