"""A deterministic in-memory harness for BrokerNode and RequestHandler unit tests.

`MemGroupStore` implements the node's `GroupStore` protocol over one `MemoryStorage` per
Raft group plus dicts for the machines' apply states and keyed records: it is the
"disk". `Broker` drives a node in rounds exactly as `broker/runtime/driver.py` does:

    rnd = node.start_round()
    node.apply_committed(rnd)   # committed partition entries, durable already
    write every Ready into its group's MemoryStorage (snapshot, entries, hard state), the
    machines' writes (apply state, records deleted below a key, new records) into the
    dicts, delete dropped groups, then the round's compactions (snapshot, compact)
    node.finish_round(rnd)      # the write is durable
    hand both rounds of completions to the RequestHandler

Nothing is written except by a round, so `restart()` (a new BrokerNode over the same store)
sees exactly what a crashed broker would find on disk. `crash_mid_round()` takes a round
from the node and never writes it, like a crash while the write was in flight.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from broker.core.machine import MachineRegistry
from broker.core.metadata import BrokerInfo
from broker.core.node import BrokerNode, Completion, NodeConfig, Round
from broker.core.partition import PartitionConfig
from broker.core.peer_codec import BrokerHeartbeat
from broker.core.peer_requests import PeerRequests
from broker.core.raft import ConfState, Entry, MemoryStorage
from broker.core.requests import Reply, RequestHandler
from broker.core.rounds import Envelope, begin_round, end_round
from broker.wire.api import ApiKey
from broker.wire.batch import Record, encode_batch
from broker.wire.messages import Request
from broker.wire.protocol import RequestHeader
from tests.support.ready import write_ready

CLUSTER_ID = "test-cluster"


class MemGroupStore:
    """The durable state of one broker: Raft logs, apply states and offset indexes."""

    def __init__(self) -> None:
        self.logs: dict[int, MemoryStorage] = {}
        self.apply: dict[int, bytes] = {}
        self.records: dict[int, dict[int, bytes]] = {}
        """group -> key -> value of the machines' keyed records (the partition log's offset
        index: base offset -> packed Raft index and max timestamp), as the offsets column
        family."""
        self.deleted: list[int] = []

    # -- GroupStore ---------------------------------------------------------------------------

    def open_group(self, group_id: int, initial: ConfState | None) -> MemoryStorage:
        st = self.logs.get(group_id)
        if st is None:
            # Like RocksStore.create_group: the empty group exists on disk from here on.
            st = self.logs[group_id] = MemoryStorage(initial)
        return st

    def has_group(self, group_id: int) -> bool:
        return group_id in self.logs

    def load_apply_state(self, group_id: int) -> bytes | None:
        return self.apply.get(group_id)

    def load_records(self, group_id: int) -> Iterable[tuple[int, bytes]]:
        return sorted(self.records.get(group_id, {}).items())

    # -- the driver's write -------------------------------------------------------------------

    def write_round(self, rnd: Round) -> None:
        for gid, rd in rnd.readies:
            st = self.logs.get(gid)
            if st is None:
                continue
            write_ready(st, rd)
        for gid, w in rnd.writes:
            if w.state is not None:
                self.apply[gid] = w.state
            records = self.records.setdefault(gid, {})
            if w.delete_below is not None:
                for key in [k for k in records if k < w.delete_below]:
                    del records[key]
            for key in w.deleted:
                records.pop(key, None)
            records.update(w.records)
        for gid in rnd.dropped_groups:
            if gid in self.logs:
                self.delete_group(gid)
        # After everything else is durable, as the runtime does (see Compaction).
        for c in rnd.compactions:
            st = self.logs.get(c.group_id)
            if st is not None:
                st.create_snapshot(c.index, c.conf, c.data)
                st.compact(c.compact_to)

    def delete_group(self, gid: int) -> None:
        self.logs.pop(gid, None)
        self.apply.pop(gid, None)
        self.records.pop(gid, None)
        self.deleted.append(gid)


def advertised(node_id: int = 0, incarnation: int = 1, rack: str | None = None) -> BrokerInfo:
    return BrokerInfo(node_id, incarnation, "127.0.0.1", 9092, "127.0.0.1", 9093, rack)


def batch(
    n: int = 1,
    *,
    ts: int = 1_000,
    pid: int = -1,
    epoch: int = -1,
    seq: int = -1,
    value: bytes = b"v",
    size: int = 0,
) -> bytes:
    """A batch of `n` records with timestamps ts .. ts + n - 1 (values padded to `size`)."""
    payload = value + b"x" * max(0, size - len(value))
    records = [Record(value=payload, timestamp=ts + i) for i in range(n)]
    return encode_batch(records, producer_id=pid, producer_epoch=epoch, base_sequence=seq)


def header(api_key: ApiKey, correlation_id: int = 7) -> RequestHeader:
    return RequestHeader(
        api_key=api_key, api_version=0, correlation_id=correlation_id, client_id="test"
    )


@dataclass
class Applied:
    """One committed entry handed to the node (for checking what a restart replays)."""

    group_id: int
    entry: Entry


class Broker:
    """One BrokerNode over a MemGroupStore, driven round by round, plus a RequestHandler."""

    def __init__(
        self,
        store: MemGroupStore | None = None,
        *,
        node_id: int = 0,
        incarnation: int = 1,
        seed: int = 1,
        cluster_id: str | None = CLUSTER_ID,
        partition: PartitionConfig | None = None,
        rack: str | None = None,
        options: dict[str, int] | None = None,
        registry: MachineRegistry | None = None,
        peers: bool = False,
    ) -> None:
        self.store = store if store is not None else MemGroupStore()
        self.registry = registry
        self.node_id = node_id
        self.incarnation = incarnation
        self.seed = seed
        self.cluster_id = cluster_id
        self.partition_config = partition or PartitionConfig()
        self.rack = rack
        self.options = dict(options or {})
        """Further NodeConfig fields (snapshot and retention thresholds)."""
        self.node = BrokerNode(
            NodeConfig(
                node_id=node_id,
                incarnation=incarnation,
                partition=self.partition_config,
                **self.options,  # type: ignore[arg-type]
            ),
            self.store,
            random.Random(seed),
            bootstrap_cluster_id=cluster_id,
            advertised=advertised(node_id, incarnation, rack),
            registry=registry,
        )
        self.handler = RequestHandler(self.node)
        self.peers = peers
        self.peer_requests: PeerRequests | None = None
        """With `peers`: the node's peer requests, to itself only (the local path)."""
        if peers:
            self.peer_requests = PeerRequests(node_id, incarnation, seed)
            self.node.attach_peer_requests(self.peer_requests)
        self.completions: list[Completion] = []
        self.replies: dict[int, Reply] = {}
        self.applied: list[Applied] = []
        self.rounds = 0
        self._tokens = itertools.count(1000)

    # -- driving ------------------------------------------------------------------------------

    def round(self) -> list[Completion]:
        """One round, exactly as the driver runs it (begin_round, the write, end_round).
        Returns the round's completions."""
        io = _HarnessIO(self)
        rnd = begin_round(self.node, io)
        self.store.write_round(rnd)
        end_round(self.node, rnd, io)
        self.rounds += 1
        for gid, rd in rnd.readies:
            self.applied.extend(Applied(gid, e) for e in rd.committed_entries)
        return io.done

    def run(self, max_rounds: int = 200) -> list[Completion]:
        """Rounds while the node has work; every completion of those rounds."""
        out: list[Completion] = []
        for _ in range(max_rounds):
            pr = self.peer_requests
            if pr is not None and pr.has_work():
                pr.run_local()
                assert not pr.take_outgoing(), "a single broker asks only itself"
                pr.deliver_results()
            if not self.node.has_work():
                if pr is None or not pr.has_work():
                    return out
                continue
            out.extend(self.round())
        raise AssertionError(f"node still has work after {max_rounds} rounds")

    def tick(self, n: int = 1) -> None:
        """n ticks, each followed by the rounds they cause (lets followers elect)."""
        for _ in range(n):
            self.node.tick()
            if self.peer_requests is not None:
                self.peer_requests.tick()
            self.run()

    def crash_mid_round(self) -> Round:
        """Take a round from the node but never write it (the process dies mid-write)."""
        return self.node.start_round()

    def boot(self, max_ticks: int = 50) -> Broker:
        """Run until the node is ready (bootstrapped, registered, every partition led)."""
        self.run()
        for _ in range(max_ticks):
            if self.node.is_ready():
                return self
            self.tick()
        raise AssertionError("node never became ready")

    def restart(self, *, seed: int | None = None, boot: bool = True) -> Broker:
        """A new BrokerNode over the same store: whatever was not written is gone."""
        b = Broker(
            self.store,
            node_id=self.node_id,
            incarnation=self.incarnation,
            seed=self.seed + 1 if seed is None else seed,
            cluster_id=self.cluster_id,
            partition=self.partition_config,
            rack=self.rack,
            options=self.options,
            registry=self.registry,
            peers=self.peers,
        )
        return b.boot() if boot else b

    # -- operations ---------------------------------------------------------------------------

    def token(self) -> int:
        return next(self._tokens)

    def completions_for(self, token: int) -> list[Completion]:
        return [c for c in self.completions if c.token == token]

    def create_topic(
        self,
        name: str,
        partitions: int = 1,
        rf: int = 1,
        config: dict[str, str] | None = None,
    ) -> None:
        """Create a topic through the node and wait until every partition is led."""
        token = self.token()
        err, msg = self.node.create_topic(token, 0, name, partitions, rf, config or {})
        assert err.name == "NONE", (err, msg)
        self.run()
        (c,) = self.completions_for(token)
        assert c.error.name == "NONE", c
        self.node.await_leaders(token, 0, name)
        self.run()
        assert len(self.completions_for(token)) == 2
        assert self.node.topic_led(name)

    def produce(self, topic: str, part: int, data: bytes) -> Completion:
        """Produce one batch and run rounds until it completes."""
        token = self.token()
        err, msg = self.node.produce(token, 0, topic, part, data)
        assert err.name == "NONE", (err, msg)
        self.run()
        (c,) = self.completions_for(token)
        return c

    def request(self, req: Request, correlation_id: int = 7) -> tuple[int, Reply | None]:
        """Hand a request to the RequestHandler (no rounds run); (token, immediate reply)."""
        token = self.token()
        reply = self.handler.handle(token, header(req.API_KEY, correlation_id), req)
        return token, reply

    def call(self, req: Request, correlation_id: int = 7) -> Reply:
        """A request, then rounds until it is answered."""
        token, reply = self.request(req, correlation_id)
        if reply is not None:
            return reply
        self.run()
        assert token in self.replies, "request not answered after the node went idle"
        return self.replies[token]


class _HarnessIO:
    """A single broker sends nothing; completions go to the RequestHandler."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.done: list[Completion] = []

    def started(self, rnd: Round) -> None:
        return None

    def send(self, envelopes: list[Envelope]) -> None:
        return None

    def send_heartbeats(self, heartbeats: list[tuple[int, BrokerHeartbeat]]) -> None:
        return None

    def complete(self, completions: list[Completion]) -> None:
        b = self.broker
        self.done.extend(completions)
        b.completions.extend(completions)
        for token, reply in b.handler.complete(completions):
            b.replies[token] = reply


def entry_indexes(applied: Sequence[Applied], group_id: int) -> list[int]:
    return [a.entry.index for a in applied if a.group_id == group_id]
