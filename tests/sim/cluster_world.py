"""A deterministic world of whole brokers: BrokerNodes over in-memory disks, a peer network,
client connections and per-broker clocks, all driven by one seeded `random.Random`.

Everything happens on one event heap ordered by (time, sequence); time is in units and each
broker ticks every `tick_units` of its own (clock skew: brokers tick at different rates). No
wall clock, no real I/O, no Trio: a run is a pure function of its seed and options.

Brokers are driven as `broker/runtime/driver.py` drives them, with rounds pipelined. Inputs
(peer frames, ticks, client requests) queue while the driver loop is busy; the loop is free
while fewer than `pipeline_depth` rounds are in flight (begun, not yet ended). Free, it
absorbs them all (peer inputs, then ticks, then requests, then timed-out requests), then,
while the node has work and there is room, begins rounds: `begin_round` (broker.core.rounds:
the round's messages leave at once, committed entries already durable apply), then the
round's write, which returns at once: it is in the WAL (the OS has it), not yet durable.

The disk is that WAL and its syncer thread. A round that must be durable before it ends (a
Ready's `must_sync`: entries, a snapshot, a new term or vote; or a dropped group) asks for a
sync. A group the node dropped (a reassignment moved its replica away) is deleted as the round
begins, by a synced write of its own as the runtime's `round_writes` does (which makes every
earlier write durable too), so a replica opened again later starts from an empty disk. A
sync takes a drawn disk latency and makes durable every write that returned before it
started, in order; a write returning while one runs waits for the next, which starts as it
ends and covers every write then waiting (group commit: one sync, several rounds). What a sync
covered lands on the `MemGroupStore` (the disk) in WAL order, even while the process is paused.
Rounds end strictly in the order they began: the oldest ends once its write has landed, or at
once if it needs no sync (only commit indexes and state-machine data): `end_round` (the
persisted messages leave: append acknowledgements, votes; the rest applies; completions
answer clients). As a round ends its compactions are written, unsynced: the next sync covers
them. So while earlier rounds' writes are being made durable, later rounds begin and their
messages leave, but nothing a round acknowledges leaves before its write is on the disk: the
checkers prove it. `pipeline_depth` 1 is the unpipelined driver (one round at a time).

Crashes: everything queued and every round not yet ended is lost. Writes not yet durable (the
WAL's tail) meet one of two fates, drawn per crash (`kill_share` of them are process kills):
a process kill keeps a prefix of them, from none to all (the OS had them), which lands on the
disk in order, never acknowledged; a power loss (the scenarios' whole-cluster power loss is
always one) keeps none of them, not even the writes of rounds that ended without a sync, or
the compactions written as rounds ended. Both must be safe: entries persisted and never
acknowledged are legal in Raft, and so is losing what no acknowledgement needed. What landed
stays. A plain restart is a new BrokerNode over the same disk and incarnation; a wiped-disk
restart is a fresh disk with a new incarnation.

Peer network (as `broker/runtime/peers.py`): one connection per pair of brokers, dialed by the
side `peer_codec.dials` names (plain brokers dial the seeds, otherwise the lower id) among the
peers in `node.peer_addresses()`, opened by a handshake
(hello / hello-ok, refused across cluster ids) that calls `on_peer_hello` on both sides, in
order per direction; a crash or a two-way cut breaks the connection (what was in flight is
lost) and the dialer redials with backoff. Faults: per-frame loss (a full outbox), delay,
reordering within a bound (a long delay overtakes later frames), duplication (off in the
cluster profiles: TCP does not duplicate; the peer-request test uses it for resends after a
reconnect), two-way and one-way cuts (a one-way cut blackholes one direction of a live
connection).

Quiescence (`quiesce`: the brokers that run with `NodeConfig.quiesce`, their hellos listing
the feature): between two such brokers a link carries keepalives (each broker's tick stands
for one: the peer hears it if the connection stands and that direction is not cut) and a
broker breaks a link on which it heard nothing, frame or keepalive, for `keepalive_window`
units (the runtime's KEEPALIVE_SILENT_S, 0.6 s): so a paused broker or a one-way cut is
noticed (`peer_lost` on both sides, then a redial), as `broker/runtime/peers.py` does. Links
to a broker without the feature keep no such bound (as before). `_linked` hands the hello's
features to the node (`on_peer_link`, as the driver does).

Peer requests (`broker.core.peer_requests`) as the driver runs them: one `PeerRequests` per
broker life (session: broker id and life, unique per life as the runtime's random one),
ticked with the node, fed the PEER_REQUEST / PEER_RESPONSE frames (as peer input, in order
with the rest) and its local path and sent frames pumped after absorbing inputs and after
each round begun (and the rounds it let end); results go to `on_peer_result`, handlers are
registered by `on_peer_start`.
Nothing in the cluster profiles sends one, so their seeds draw the same numbers as before.

Checkers run on every round (`cluster_checker.py`): per-group Raft safety over the metadata
group and every partition group, a durability audit of every vote grant and append
acknowledgement (as it leaves: what it promises must be on the disk as its round's write left
it when that landed; a later write may land with it, in the same sync), of every entry
applied before its round's write, the applied-state hash chain (which makes every broker's
applied metadata a prefix of one sequence), and every state machine restored from a snapshot
(installed, or read back at a restart) against the committed history replayed to the
snapshot's index. Planted driver faults (`PIPELINE_FAULTS`) end rounds before their writes
are durable, to show the checkers catch it (tests/sim/test_pipeline_sim.py).

Step boundaries (the `txn` profile): the `after_apply` hook runs right after a broker
applied a round's committed entries (before its write for those `begin_round` applies, after
it for the others), before the completions, peer requests and peer answers the apply set off
have left; a crash there loses all of them (and, before the write, the round's write, never
issued).

Snapshots run as in the runtime: a round's `compactions` are written once its write is
durable, as it ends, unsynced (a power loss before the next sync loses them; the log they
would shorten is still there). The stats count snapshots taken, compactions that shortened a
log, InstallSnapshot chunks sent and snapshots installed, and the pipeline's work: rounds
begun with others in flight, syncs, rounds sharing a sync, rounds that ended without one, and
what crashes did to writes not yet durable.
"""

from __future__ import annotations

import dataclasses
import functools
import heapq
import itertools
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from broker.core.metadata import BrokerInfo
from broker.core.node import BrokerNode, Completion, Envelope, NodeConfig, Round
from broker.core.peer_codec import (
    HEARTBEAT,
    HEARTBEAT_OK,
    PEER_REQUEST,
    PEER_RESPONSE,
    RAFT,
    BrokerHeartbeat,
    HeartbeatAck,
    Hello,
    PeerProtocolError,
    PeerRequest,
    PeerResponse,
    accepted,
    decode_frame,
    dials,
    encode_heartbeat,
    encode_heartbeat_ack,
    encode_raft,
    hello_features,
)
from broker.core.peer_requests import PeerRequests, PeerResult
from broker.core.raft import Message, Role
from broker.core.raft.types import InstallSnapshot
from broker.core.requests import Reply, RequestHandler
from broker.core.rounds import begin_round, end_round
from broker.wire.errors import ErrorCode
from broker.wire.messages import FetchPartitionResult, Request
from broker.wire.protocol import RequestHeader
from tests.sim.checker import Violation
from tests.sim.cluster_checker import ClusterChecker
from tests.support.broker_harness import MemGroupStore

ReplyFn = Callable[[Reply], None]
MS_PER_UNIT = 5
"""Simulated milliseconds per time unit (a 10-unit tick is the runtime's 50 ms tick)."""

END_BEFORE_WRITE = "end-before-write"
"""Planted fault: a round ends as soon as the rounds before it have, its write durable or
not (a driver that forgets to wait for the sync)."""
END_OUT_OF_ORDER = "end-out-of-order"
"""Planted fault: a round ends as soon as its own write is durable, or needs no sync, while
an earlier round still waits for its sync (a driver that ends every round that is ready, not
only the oldest): the node hears `persisted` for a later Ready first, which covers the
earlier ones too."""
PIPELINE_FAULTS: set[str] = set()
"""The planted driver faults switched on (tests/sim/mutations.py PIPELINE_MUTATIONS)."""


@dataclass
class NetOptions:
    latency_min: int = 1
    latency_max: int = 4
    drop: float = 0.0
    reorder: float = 0.0
    reorder_max: int = 40
    duplicate: float = 0.0
    """Per frame: delivered a second time, up to `reorder_max` later (if the connection
    still stands)."""
    client_latency_max: int = 3
    dial_rule: str = "runtime"
    """Who dials whom: "runtime" (`peer_codec.dials`, as peers.py) or "lower-id" (the rule
    peers.py once had, which strands plain brokers: kept to show the liveness check fails)."""


@dataclass
class ClusterStats:
    ticks: int = 0
    rounds: int = 0
    frames: int = 0
    dropped: int = 0
    duplicated: int = 0
    handshakes: int = 0
    crashes: int = 0
    restarts: int = 0
    wipes: int = 0
    partitions: int = 0
    pauses: int = 0
    requests: int = 0
    timeouts: int = 0
    snapshots_created: int = 0
    compactions: int = 0
    """Snapshots whose compaction shortened the log (the others only recorded a snapshot)."""
    snapshot_chunks: int = 0
    snapshots_installed: int = 0
    pids_probed: int = 0
    """Producer ids the admin's probes got (from brokers drawn among all)."""
    pids_forwarded: int = 0
    """Producer ids handed out by a broker that was not the controller when it answered
    (from a block it asked the controller for)."""
    retention_skipped: int = 0
    """Offsets the reader found deleted by retention before it read them (it moved on to the
    log start offset)."""
    pipelined: int = 0
    """Rounds begun while an earlier round of the same broker was still in flight."""
    syncs: int = 0
    group_synced: int = 0
    """Rounds made durable by a sync that made an earlier round durable too (group commit:
    written while the sync before was running, or in the same instant)."""
    unsynced_ends: int = 0
    """Rounds that needed no sync (Ready.must_sync false everywhere: only commit indexes and
    state-machine data), ended in order without waiting for one."""
    kills: int = 0
    """Crashes that were process kills with writes not yet durable (the others, power
    losses, lose them all)."""
    silent: int = 0
    """Links broken by a broker that heard nothing on them for `keepalive_window`."""
    quiesced: int = 0
    """Quiesced groups, summed over the brokers at every tick of the quiesce profile."""
    quiesced_hits: int = 0
    """Faults that hit a broker leading quiesced groups (the quiesce profile's)."""
    failovers: int = 0
    """Of those, the ones after which every partition the broker led was seen served by
    another broker in a newer term, in time."""
    failover_units: int = 0
    writes_lost: int = 0
    """Writes of rounds that had not ended, lost in a crash."""
    writes_survived: int = 0
    """Writes of rounds that had not ended, on the disk after a process kill (never
    acknowledged: `end_round` never ran)."""
    ended_lost: int = 0
    """Writes lost in a crash after their round ended: the write of a round that needed no
    sync, or a round's compactions (written unsynced as it ended)."""

    def faults(self) -> int:
        return self.crashes + self.partitions + self.wipes + self.pauses


@dataclass
class SimDisk:
    """What survives a crash: the group store plus the identity the RocksStore keeps in its
    `meta` column family (incarnation, and the cluster id once joined)."""

    store: MemGroupStore
    incarnation: int
    cluster_id: str | None = None


@dataclass(eq=False)
class _InFlight:
    """A round begun and written (its write is in the WAL, not necessarily durable)."""

    rnd: Round
    needs_sync: bool
    """Some Ready must be durable before the round ends (`Ready.must_sync`)."""
    landed: bool = False
    """Its write is durable (on the `MemGroupStore`)."""
    ended: bool = False


@dataclass(eq=False)
class _WalRecord:
    """A write that returned (the OS has it) and no completed sync has made durable yet:
    a round's write (`flight`), or the compactions written as a round ended (`flight`
    None)."""

    seq: int
    rnd: Round
    flight: _InFlight | None


@dataclass
class _Op:
    client: ReplyFn
    correlation_id: int
    expires_at: int


@dataclass
class SimBroker:
    id: int
    disk: SimDisk
    tick_units: int
    disk_latency: tuple[int, int]
    pipeline_depth: int = 2
    """Most rounds in flight at once (begun, `end_round` not yet run); 1: the unpipelined
    driver."""
    node: BrokerNode | None = None
    handler: RequestHandler | None = None
    peer_requests: PeerRequests | None = None
    life: int = 0
    """Bumped at every start and crash: events of an older life are void."""
    peer_inputs: deque[Callable[[], None]] = field(default_factory=deque)
    requests: deque[tuple[RequestHeader, Request, ReplyFn, int]] = field(default_factory=deque)
    ticks_due: int = 0
    pipeline: deque[_InFlight] = field(default_factory=deque)
    """Rounds begun whose `end_round` has not run yet, in order."""
    wal: deque[_WalRecord] = field(default_factory=deque)
    """Writes not yet durable, in the order they were written."""
    wal_seq: int = 0
    syncing: bool = False
    """The syncer's sync is running (it covers the writes up to the seq it started at)."""
    sync_wanted: bool = False
    """A write that needs a sync came while one was running: the next starts as it ends."""
    wake_pending: bool = False
    ops: dict[int, _Op] = field(default_factory=dict)
    tokens: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    dialing: set[int] = field(default_factory=set)
    paused_until: int = 0
    """SIGSTOP: no ticks, no rounds until then (inputs queue as in socket buffers)."""

    @property
    def up(self) -> bool:
        return self.node is not None


def advertised(node_id: int, incarnation: int) -> BrokerInfo:
    return BrokerInfo(node_id, incarnation, f"b{node_id}", 9092, f"b{node_id}", 9093, None)


class ClusterWorld:
    def __init__(
        self,
        rng: random.Random,
        n_brokers: int,
        n_seeds: int,
        *,
        net: NetOptions | None = None,
        tick_units: list[int] | None = None,
        disk_latency: tuple[int, int] = (1, 3),
        pipeline_depth: int = 2,
        kill_share: float = 0.5,
        node_options: dict[str, object] | None = None,
        seed_label: str = "sim",
        checker: ClusterChecker | None = None,
        quiesce: frozenset[int] = frozenset(),
        keepalive_window: int = 120,
    ) -> None:
        self.rng = rng
        self.now = 0
        self._seq = 0
        self.events: list[tuple[int, int, Callable[[], None]]] = []
        self.net = net or NetOptions()
        self.node_options = dict(node_options or {})
        self.label = seed_label
        self.kill_share = kill_share
        """Share of crashes that are process kills (a prefix of the writes not yet durable
        survives); the others are power losses (none does)."""
        self.stats = ClusterStats()
        self.trace: deque[str] = deque(maxlen=80)
        self.checker = checker if checker is not None else ClusterChecker()
        """The consumer-group profile passes a subclass (tests/sim/cluster_groups.py)."""
        self.after_round_start: Callable[[int, list[int]], None] | None = None
        """Hook for fault injection: a broker's round has started (its messages left, its
        write is in flight); with the groups it just became leader of."""
        self.after_apply: Callable[[int, BrokerNode, Round, bool], None] | None = None
        """Hook for step-boundary faults (the `txn` profile): broker `id` has just applied
        the committed entries of `rnd` (`early`: those `begin_round` applied before the
        round's write, else those `end_round` applied after it), before anything the apply
        set off has left (its completions to clients; its peer requests and answers, which
        leave when the round ends). The hook may crash the broker: then none of that leaves
        and, for an early apply, the round's write is lost with it."""
        self.on_peer_start: Callable[[SimBroker], None] | None = None
        """A broker life began: register its peer request handlers on `peer_requests`."""
        self.on_peer_result: Callable[[int, PeerResult], None] | None = None
        """A peer request of broker `id` completed (kinds without a listener)."""
        self.seeds = {i: f"b{i}:9093" for i in range(n_seeds)}
        units = tick_units or [10] * n_brokers
        self.brokers: dict[int, SimBroker] = {}
        for i in range(n_brokers):
            disk = SimDisk(MemGroupStore(), self._new_incarnation())
            self.brokers[i] = SimBroker(i, disk, units[i], disk_latency, pipeline_depth)
        # Peer connections: pair (lo, hi) -> epoch; a side's open link is the epoch it holds.
        self.epoch: dict[tuple[int, int], int] = {}
        self.side: dict[tuple[int, int], int] = {}
        """(a, b) -> epoch of the connection a holds open towards b."""
        self.link_clock: dict[tuple[int, int, int], int] = {}
        self.blocked: set[tuple[int, int]] = set()
        self.client_clock: dict[tuple[object, int], int] = {}
        self.quiesce = quiesce
        """Brokers running with NodeConfig.quiesce (their hellos list the feature)."""
        self.keepalive_window = keepalive_window
        self.heard: dict[tuple[int, int], tuple[int, int]] = {}
        """(broker, peer) -> (connection epoch, when the broker last heard the peer on it)."""
        for b in self.brokers.values():
            self._start(b)

    # -- events -------------------------------------------------------------------------------

    def at(self, when: int, fn: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self.events, (max(when, self.now), self._seq, fn))

    def run_until(self, t_end: int) -> None:
        events = self.events
        while events and events[0][0] <= t_end:
            at, _, fn = heapq.heappop(events)
            self.now = at
            fn()
        self.now = max(self.now, t_end)

    def log(self, line: str) -> None:
        self.trace.append(f"t={self.now} {line}")

    def _new_incarnation(self) -> int:
        return self.rng.getrandbits(40) + 1

    @staticmethod
    def _session(b: SimBroker) -> int:
        """A peer-request session per broker life (the runtime draws a random one)."""
        return b.id << 32 | b.life

    # -- broker lives -------------------------------------------------------------------------

    def _start(self, b: SimBroker) -> None:
        disk = b.disk
        cluster_id = disk.cluster_id
        if cluster_id is None and b.id in self.seeds:
            # As app.py: a seed without a cluster id proposes a fresh one; the first applied
            # wins and every broker records it.
            cluster_id = f"{self.label}-{b.id}-{self.rng.getrandbits(24):06x}"
        b.life += 1
        options = dict(self.node_options)
        if b.id in self.quiesce:
            options["quiesce"] = True
        b.node = BrokerNode(
            NodeConfig(node_id=b.id, incarnation=disk.incarnation, **options),  # type: ignore[arg-type]
            disk.store,
            random.Random(self.rng.getrandbits(64)),
            bootstrap_cluster_id=cluster_id,
            controllers=dict(self.seeds),
            advertised=advertised(b.id, disk.incarnation),
        )
        b.handler = RequestHandler(b.node)
        b.peer_requests = PeerRequests(b.id, disk.incarnation, self._session(b))
        b.node.attach_peer_requests(b.peer_requests)
        if self.on_peer_start is not None:
            self.on_peer_start(b)
        b.peer_inputs.clear()
        b.requests.clear()
        b.ticks_due = 0
        b.pipeline.clear()
        b.wal.clear()
        b.syncing = b.sync_wanted = False
        b.wake_pending = False
        b.ops.clear()
        b.dialing.clear()
        b.paused_until = 0
        self.checker.on_start(b.id, b.life, b.node)
        life = b.life
        self.at(self.now + self.rng.randint(1, b.tick_units), lambda: self._tick(b, life))
        self.at(self.now + self.rng.randint(1, 5), lambda: self._dial_loop(b, life))

    def crash(self, bid: int, *, power_loss: bool | None = None) -> None:
        """The broker dies. With writes not yet durable, the flavour matters: a power loss
        loses all of them; a process kill (the OS had them) keeps a prefix of them, possibly
        empty or all, which lands on the disk in order. `power_loss` None: drawn
        (`kill_share` of the crashes are kills)."""
        b = self.brokers[bid]
        if b.node is None:
            return
        self.stats.crashes += 1
        why = ""
        if b.wal:
            if power_loss is None:
                share = self.kill_share
                power_loss = share <= 0 or (share < 1 and self.rng.random() >= share)
            n = len(b.wal)
            kept = 0 if power_loss else self.rng.randint(0, n)
            stats = self.stats
            for k, rec in enumerate(b.wal):
                ended = rec.flight is None or rec.flight.ended
                if k < kept:
                    self._land(b, rec)
                    stats.writes_survived += not ended
                elif ended:
                    stats.ended_lost += 1
                else:
                    stats.writes_lost += 1
            if power_loss:
                why = f" (power loss: {n} writes not yet durable lost)"
            else:
                stats.kills += 1
                why = f" (process kill: {kept} of {n} writes not yet durable survive)"
        self.log(f"crash b{bid}{why}")
        b.node = None
        b.handler = None
        b.peer_requests = None
        b.pipeline.clear()
        b.wal.clear()
        b.paused_until = 0
        b.life += 1
        for op in b.ops.values():
            self._client_error(op.client, op.correlation_id, bid, "connection reset")
        b.ops.clear()
        for _, _, reply_fn, corr in b.requests:
            self._client_error(reply_fn, corr, bid, "connection reset")
        b.requests.clear()
        b.peer_inputs.clear()
        for other in self.brokers:
            if other != bid:
                self._break(bid, other)

    def restart(self, bid: int, *, wipe: bool = False) -> None:
        b = self.brokers[bid]
        if b.node is not None:
            return
        if wipe:
            self.stats.wipes += 1
            b.disk = SimDisk(MemGroupStore(), self._new_incarnation())
            self.log(f"restart b{bid} with a wiped disk (incarnation {b.disk.incarnation})")
        else:
            self.stats.restarts += 1
            self.log(f"restart b{bid}")
        self._start(b)

    def pause(self, bid: int, units: int) -> None:
        """SIGSTOP for `units`: the broker ticks, writes and answers nothing meanwhile (its
        peers' connections stay up; what they send waits in the socket buffers)."""
        b = self.brokers[bid]
        if b.node is None or b.paused_until > self.now:
            return
        self.stats.pauses += 1
        b.paused_until = self.now + units
        self.log(f"pause b{bid} for {units}")

    def _tick(self, b: SimBroker, life: int) -> None:
        if b.life != life:
            return
        if b.paused_until > self.now:
            # The ticker is stopped too; it does not catch up on the missed ticks.
            self.at(b.paused_until, lambda: self._tick(b, life))
            return
        self.at(self.now + b.tick_units, lambda: self._tick(b, life))
        self.stats.ticks += 1
        b.ticks_due += 1
        if b.id in self.quiesce:
            self._keepalive(b)
        self._wake(b)

    def _keepalive(self, b: SimBroker) -> None:
        """Broker `b`'s links to `quiesce` peers: a keepalive each way it can go, and the
        silence bound (see the module doc)."""
        for peer in sorted(self.quiesce):
            ep = self.side.get((b.id, peer))
            if peer == b.id or ep is None or self.epoch.get(self._pair(b.id, peer)) != ep:
                continue
            if (b.id, peer) not in self.blocked and self.brokers[peer].node is not None:
                self.heard[(peer, b.id)] = (ep, self.now)
            heard = self.heard.get((b.id, peer))
            if heard is None or heard[0] != ep:
                self.heard[(b.id, peer)] = (ep, self.now)  # a new connection
            elif self.now - heard[1] > self.keepalive_window:
                self.stats.silent += 1
                self.log(f"b{b.id} heard nothing from b{peer}: link closed")
                self._break(b.id, peer)

    def _wake(self, b: SimBroker) -> None:
        """Something queued: the driver loop runs now if it is free (fewer than
        `pipeline_depth` rounds in flight), else once the oldest round has ended."""
        if b.node is None or len(b.pipeline) >= b.pipeline_depth or b.wake_pending:
            return
        b.wake_pending = True
        life = b.life
        self.at(self.now, lambda: self._loop(b, life))

    def _loop(self, b: SimBroker, life: int) -> None:
        if b.life != life or b.node is None:
            return
        if b.paused_until > self.now:
            self.at(b.paused_until, lambda: self._loop(b, life))
            return
        b.wake_pending = False
        if len(b.pipeline) >= b.pipeline_depth:
            return
        self._absorb(b)
        self._run_rounds(b)

    def _absorb(self, b: SimBroker) -> None:
        node, handler = b.node, b.handler
        assert node is not None and handler is not None
        life = b.life
        while b.peer_inputs and b.life == life:
            b.peer_inputs.popleft()()
        pr = b.peer_requests
        assert pr is not None
        for _ in range(b.ticks_due):
            node.tick()
            pr.tick()
        b.ticks_due = 0
        while b.requests:
            header, req, reply_fn, corr = b.requests.popleft()
            token = next(b.tokens)
            reply = handler.handle(token, header, req)
            if reply is not None:
                self._client_reply(reply_fn, b.id, reply)
            else:
                timeout_ms = getattr(req, "timeout_ms", None)
                expires = self.now + (timeout_ms // MS_PER_UNIT if timeout_ms else 10**9)
                b.ops[token] = _Op(reply_fn, corr, expires)
        for token, op in list(b.ops.items()):
            if op.expires_at <= self.now:
                del b.ops[token]
                reply = handler.abandon(token)
                if reply is not None:
                    self._client_reply(op.client, b.id, reply)
        self._pump_peer_requests(b)

    def _pump_peer_requests(self, b: SimBroker) -> None:
        """As the driver: the local path, then the frames out, then the results on."""
        pr = b.peer_requests
        if pr is None or not pr.has_work():
            return
        pr.run_local()
        for dst, frame in pr.take_outgoing():
            self._send_frame(b.id, dst, frame)
        for result in pr.deliver_results():
            if self.on_peer_result is not None:
                self.on_peer_result(b.id, result)
        for kind, e in pr.take_handler_errors():
            self.raise_violation("peer-request", f"b{b.id}: the {kind!r} handler raised {e!r}")

    def peer_request(self, src: int, dst: int, kind: str, body: object, **timing: int) -> int:
        """Broker `src` (up) asks `dst`; the correlation id. Its frames leave when its loop
        next runs, as in the driver."""
        b = self.brokers[src]
        assert b.peer_requests is not None
        cid = b.peer_requests.request(dst, kind, body, **timing)
        self.wake(src)
        return cid

    def wake(self, bid: int) -> None:
        """Something was queued on broker `bid`'s peer requests from outside its loop (a
        request, a deferred answer): run its loop."""
        self._wake(self.brokers[bid])  # or the end of the round being written pumps them

    def _run_rounds(self, b: SimBroker) -> None:
        """The driver's inner loop: while the node has work and fewer than `pipeline_depth`
        rounds are in flight, begin a round and write it, end the rounds whose writes are
        durable (or need no sync), in order, and pump the peer requests."""
        life = b.life
        while b.life == life and len(b.pipeline) < b.pipeline_depth and self._begin(b):
            self._end_ready(b, life)
            if b.life == life:
                self._pump_peer_requests(b)

    def _begin(self, b: SimBroker) -> bool:
        """Begin one round and write it, if the node has work: did it?"""
        node = b.node
        assert node is not None
        if not node.has_work():
            if b.peer_inputs or b.requests or b.ticks_due:
                self._absorb(b)
                if not node.has_work():
                    return False
            else:
                return False
        life = b.life
        rnd = begin_round(node, _SimRoundIO(self, b, early=True))
        self.checker.on_applied_early(b.id, b.disk.store, node, rnd)
        if b.life != life:
            return False  # crashed at a step boundary (`after_apply`): never written
        elected = [
            gid
            for gid, rd in rnd.readies
            if rd.soft_state is not None and rd.soft_state.role == Role.LEADER
        ]
        if rnd.dropped_groups:
            self._delete_dropped(b, rnd.dropped_groups)
        needs_sync = bool(rnd.dropped_groups) or any(rd.must_sync for _, rd in rnd.readies)
        f = _InFlight(rnd, needs_sync)
        if b.pipeline:
            self.stats.pipelined += 1
        b.pipeline.append(f)
        self._write(b, rnd, f)
        if needs_sync:
            self._want_sync(b, life)
        if elected:
            terms = ", ".join(f"g{g} t{node.groups[g].raft.term}" for g in elected)
            self.log(f"b{b.id} leads {terms}")
        if self.after_round_start is not None:
            self.after_round_start(b.id, elected)
        return b.life == life

    def _delete_dropped(self, b: SimBroker, gids: list[int]) -> None:
        """As the runtime's `round_writes`: the groups a round dropped are deleted as it
        begins, by a synced write of their own, which makes every write before it durable
        too (one WAL). A group the node opens again later (a reassignment moved the replica
        away and back) is then created afresh, and the round's own write deletes nothing."""
        while b.wal:
            self._land(b, b.wal.popleft())
        store = b.disk.store
        for gid in gids:
            if store.has_group(gid):
                store.delete_group(gid)
        self.log(f"b{b.id} deleted its replicas of groups {sorted(gids)}")

    # -- the disk: a WAL and its syncer -------------------------------------------------------

    def _write(self, b: SimBroker, rnd: Round, flight: _InFlight | None) -> None:
        """A write returns at once: it is in the WAL (the OS has it), not yet durable."""
        b.wal_seq += 1
        b.wal.append(_WalRecord(b.wal_seq, rnd, flight))

    def _want_sync(self, b: SimBroker, life: int) -> None:
        """The syncer is asked for a sync (a written round needs one)."""
        if b.syncing:
            b.sync_wanted = True
        else:
            self._start_sync(b, life)

    def _start_sync(self, b: SimBroker, life: int) -> None:
        """A sync starts: it takes a drawn latency and makes every write that returned
        before it started durable (a write returning meanwhile waits for the next one)."""
        b.syncing, b.sync_wanted = True, False
        covers = b.wal_seq
        lo, hi = b.disk_latency
        self.at(self.now + self.rng.randint(lo, hi), lambda: self._synced(b, life, covers))

    def _synced(self, b: SimBroker, life: int, covers: int) -> None:
        """A sync completed: what it covered lands on the disk, in order (a stopped process
        does not stop the disk); the syncer, and the loop ending the rounds it made durable,
        go on once the process runs."""
        if b.life != life or b.node is None:
            return
        b.syncing = False
        self.stats.syncs += 1
        rounds = 0
        while b.wal and b.wal[0].seq <= covers:
            rec = b.wal.popleft()
            self._land(b, rec)
            rounds += rec.flight is not None and rec.flight.needs_sync
        self.stats.group_synced += max(0, rounds - 1)
        self._after_sync(b, life)

    def _after_sync(self, b: SimBroker, life: int) -> None:
        if b.life != life or b.node is None:
            return
        if b.paused_until > self.now:
            self.at(b.paused_until, lambda: self._after_sync(b, life))
            return
        if b.sync_wanted and not b.syncing:
            self._start_sync(b, life)
        if self._end_ready(b, life) and b.life == life:
            self._absorb(b)
            self._run_rounds(b)

    def _land(self, b: SimBroker, rec: _WalRecord) -> None:
        """A write reaches the disk (the `MemGroupStore`): a round's (`write_round` without
        its compactions), or its compactions."""
        store, stats, rnd = b.disk.store, self.stats, rec.rnd
        if rec.flight is None:
            for c in rnd.compactions:
                stats.snapshots_created += 1
                st = store.logs.get(c.group_id)
                if st is not None and c.compact_to >= st.first_index():
                    stats.compactions += 1
            store.write_round(Round([], [], [], [], [], compactions=rnd.compactions))
            return
        stats.snapshots_installed += sum(rd.snapshot is not None for _, rd in rnd.readies)
        if rnd.compactions or rnd.dropped_groups:
            rnd = dataclasses.replace(rnd, compactions=[], dropped_groups=[])
        store.write_round(rnd)
        rec.flight.landed = True
        self.checker.on_round_landed(b.id, store, rnd)

    # -- ending rounds ------------------------------------------------------------------------

    def _end_ready(self, b: SimBroker, life: int) -> bool:
        """End, in order, the rounds at the head of the pipeline whose writes are durable or
        need no sync: did any end?"""
        ended = False
        faults = PIPELINE_FAULTS
        while b.pipeline and b.life == life:
            f = b.pipeline[0]
            if f.needs_sync and not f.landed:
                if END_OUT_OF_ORDER in faults:
                    # Planted: end every round that is ready, wherever it stands.
                    later = [g for g in b.pipeline if not g.needs_sync or g.landed]
                    if later:
                        b.pipeline.remove(later[0])
                        self._end(b, later[0])
                        ended = True
                        continue
                if END_BEFORE_WRITE not in faults:
                    break  # planted: ended once written, durable or not
            b.pipeline.popleft()
            self._end(b, f)
            ended = True
        return ended

    def _end(self, b: SimBroker, f: _InFlight) -> None:
        """As the driver ends a round: its compactions are written (unsynced: the next sync
        covers them), then `end_round` (the persisted messages leave, the rest applies,
        clients hear), then the cluster id is recorded once joined."""
        node, handler = b.node, b.handler
        assert node is not None and handler is not None
        rnd = f.rnd
        f.ended = True
        if not f.needs_sync:
            self.stats.unsynced_ends += 1
        if rnd.compactions:
            self._write(b, rnd, None)
        end_round(node, rnd, _SimRoundIO(self, b, rnd))
        self.checker.on_round_done(b.id, b.life, node, rnd)
        cid = node.meta.cluster_id
        if cid is not None and b.disk.cluster_id is None:
            b.disk.cluster_id = cid

    def _complete(self, b: SimBroker, completions: list[Completion]) -> None:
        handler = b.handler
        assert handler is not None
        for token, reply in handler.complete(completions):
            op = b.ops.pop(token, None)
            if op is not None:
                self._client_reply(op.client, b.id, reply)

    # -- peer network -------------------------------------------------------------------------

    def _send_envelopes(self, b: SimBroker, envelopes: list[Envelope]) -> None:
        if not envelopes:
            return
        store = b.disk.store
        by_peer: dict[int, list[tuple[int, Message]]] = {}
        for env in envelopes:
            self.checker.audit_durable(b.id, store, env.group_id, env.message)
            if isinstance(env.message, InstallSnapshot):
                self.stats.snapshot_chunks += 1
            by_peer.setdefault(env.dst, []).append((env.group_id, env.message))
        for peer, batch in by_peer.items():
            self._send_frame(b.id, peer, encode_raft(batch))

    def _send_frame(self, src: int, dst: int, frame: bytes) -> None:
        """PeerNetwork.send: dropped unless `src` holds an open connection to `dst`. Frames
        are the peer codec's bytes, so every message the brokers send passes its checks."""
        ep = self.side.get((src, dst))
        if ep is None or dst not in self.brokers:
            self.stats.dropped += 1
            return
        net, rng = self.net, self.rng
        if net.drop and rng.random() < net.drop:
            self.stats.dropped += 1
            return
        self.stats.frames += 1
        at = self.now + rng.randint(net.latency_min, net.latency_max)
        key = (src, dst, ep)
        if net.reorder and rng.random() < net.reorder:
            at += rng.randint(1, net.reorder_max)  # overtaken by later frames
        else:
            at = max(at, self.link_clock.get(key, 0))  # in order, as on one connection
            self.link_clock[key] = at
        self.at(at, lambda: self._deliver(src, dst, ep, frame))
        if net.duplicate and rng.random() < net.duplicate:
            self.stats.duplicated += 1
            again = at + rng.randint(0, net.reorder_max)
            self.at(again, lambda: self._deliver(src, dst, ep, frame))

    def _pair(self, a: int, b: int) -> tuple[int, int]:
        return (a, b) if a < b else (b, a)

    def _deliver(self, src: int, dst: int, ep: int, frame: bytes) -> None:
        if self.epoch.get(self._pair(src, dst), 0) != ep or (src, dst) in self.blocked:
            self.stats.dropped += 1
            return
        b = self.brokers[dst]
        node = b.node
        if node is None:
            return
        self.heard[(dst, src)] = (ep, self.now)
        try:
            kind, body = decode_frame(frame)
        except PeerProtocolError as e:
            self.raise_violation("peer-codec", f"broker {src} -> {dst}: {e}")
        if kind == RAFT:
            batch = accepted(body, src, dst)  # type: ignore[arg-type]
            if len(batch) != len(body):  # type: ignore[arg-type]
                self.raise_violation("peer-codec", f"a message the receiver refuses {src} -> {dst}")

            def deliver() -> None:
                assert b.node is not None
                for g, m in batch:
                    b.node.step(g, m)

            b.peer_inputs.append(deliver)
        elif kind == HEARTBEAT:
            hb: BrokerHeartbeat = body  # type: ignore[assignment]

            def handle() -> None:
                assert b.node is not None
                ack = b.node.on_broker_heartbeat(hb)
                self._send_frame(dst, src, encode_heartbeat_ack(ack))

            b.peer_inputs.append(handle)
        elif kind == HEARTBEAT_OK:
            ack: HeartbeatAck = body  # type: ignore[assignment]
            b.peer_inputs.append(lambda: b.node.on_heartbeat_ack(ack))  # type: ignore[union-attr]
        elif kind in (PEER_REQUEST, PEER_RESPONSE):
            pr = b.peer_requests
            assert pr is not None  # the same life as the node (both go at a crash)
            if isinstance(body, PeerRequest):
                b.peer_inputs.append(functools.partial(pr.on_request, src, body))
            elif isinstance(body, PeerResponse):
                b.peer_inputs.append(functools.partial(pr.on_response, src, body))
        self._wake(b)

    def _hello(self, b: SimBroker) -> Hello:
        node = b.node
        assert node is not None
        return Hello(
            b.disk.cluster_id or node.meta.cluster_id,
            b.id,
            b.disk.incarnation,
            f"b{b.id}:9093",
            node.bootstrapped,
            features=hello_features(b.id in self.quiesce),
        )

    def _refusal(self, b: SimBroker, hello: Hello) -> str | None:
        mine = self._hello(b)
        if hello.node_id == b.id:
            return "same node id"
        if mine.cluster_id and hello.cluster_id and mine.cluster_id != hello.cluster_id:
            return f"cluster {hello.cluster_id} is not {mine.cluster_id}"
        return None

    def _dial_loop(self, b: SimBroker, life: int) -> None:
        """PeerNetwork.dial_forever: keep a connection to every known peer with a higher id."""
        if b.life != life or b.node is None:
            return
        self.at(self.now + 2 * b.tick_units, lambda: self._dial_loop(b, life))
        if b.paused_until > self.now:
            return
        for peer in b.node.peer_addresses():
            if (
                self._dials(b.id, peer)
                and peer in self.brokers
                and (b.id, peer) not in self.side
                and peer not in b.dialing
            ):
                b.dialing.add(peer)
                self._dial(b, life, peer, 5)

    def _dials(self, a: int, b: int) -> bool:
        """Does broker a dial broker b? With "lower-id" a broker that is not a seed and has a
        higher id than every seed never joins: a seed learns a plain broker's address only
        once it has registered, which needs a connection."""
        if self.net.dial_rule == "lower-id":
            return b > a
        return dials(a, b, frozenset(self.seeds))

    def _dial(self, b: SimBroker, life: int, peer: int, backoff: int) -> None:
        if b.life != life or b.node is None:
            return
        if (b.id, peer) in self.side:
            b.dialing.discard(peer)
            return
        net, rng = self.net, self.rng
        hello = self._hello(b)
        a = self.brokers[peer]
        retry = min(backoff * 2, 200)

        def failed() -> None:
            wait = backoff // 2 + rng.randint(0, backoff)
            self.at(self.now + wait, lambda: self._dial(b, life, peer, retry))

        def at_acceptor() -> None:
            a_life = a.life
            if (
                a.node is None
                or a.paused_until > self.now
                or (b.id, peer) in self.blocked
                or (peer, b.id) in self.blocked
            ):
                failed()
                return
            if self._refusal(a, hello) is not None:
                failed()
                return
            reply = self._hello(a)
            pair = self._pair(b.id, peer)
            ep = self.epoch.get(pair, 0) + 1
            self.epoch[pair] = ep  # replaces any older connection of the pair
            self.side.pop((b.id, peer), None)
            self.side[(peer, b.id)] = ep
            a.peer_inputs.append(lambda: self._linked(a, hello))
            self._wake(a)

            def at_dialer() -> None:
                if (
                    b.life != life
                    or a.life != a_life
                    or self.epoch.get(pair) != ep
                    or (peer, b.id) in self.blocked
                ):
                    failed()
                    return
                if self._refusal(b, reply) is not None:
                    self._break(b.id, peer)
                    failed()
                    return
                self.side[(b.id, peer)] = ep
                b.dialing.discard(peer)
                self.stats.handshakes += 1
                b.peer_inputs.append(lambda: self._linked(b, reply))
                self._wake(b)

            at = self.now + rng.randint(net.latency_min, net.latency_max)
            self.link_clock[(peer, b.id, ep)] = at
            self.at(at, at_dialer)

        self.at(self.now + rng.randint(net.latency_min, net.latency_max), at_acceptor)

    @staticmethod
    def _linked(b: SimBroker, hello: Hello) -> None:
        """The driver's on_hello: the node and the peer requests learn the peer's hello."""
        assert b.node is not None and b.peer_requests is not None
        b.peer_requests.peer_linked(hello.node_id, hello.serves_requests)
        b.node.on_peer_hello(hello.node_id, hello.incarnation, hello.cluster_id, hello.bootstrapped)
        b.node.on_peer_link(hello.node_id, hello.features)

    def _break(self, a: int, b: int) -> None:
        """The connection between a and b breaks: frames in flight are lost; the dialer
        notices and redials (its dial loop)."""
        pair = self._pair(a, b)
        if (a, b) not in self.side and (b, a) not in self.side:
            return
        self.epoch[pair] = self.epoch.get(pair, 0) + 1
        self.side.pop((a, b), None)
        self.side.pop((b, a), None)
        for here, there in ((a, b), (b, a)):
            self._link_lost(self.brokers[here], there)

    def _link_lost(self, b: SimBroker, peer: int) -> None:
        """PeerNetwork's on_link_lost, as the driver queues it."""
        if b.node is None:
            return
        life = b.life

        def lost() -> None:
            if b.life == life and b.node is not None:
                b.node.peer_lost(peer)

        b.peer_inputs.append(lost)
        self._wake(b)

    def cut(self, a: int, b: int, *, one_way: bool = False) -> None:
        """Block a -> b (and b -> a unless one_way). A two-way cut breaks the connection; a
        one-way cut blackholes one direction of a connection that stays up."""
        self.blocked.add((a, b))
        if not one_way:
            self.blocked.add((b, a))
            self._break(a, b)

    def isolate(self, bid: int) -> None:
        for other in self.brokers:
            if other != bid:
                self.cut(bid, other)

    def heal(self) -> None:
        self.blocked.clear()

    # -- clients ------------------------------------------------------------------------------

    def client_send(
        self, client: object, bid: int, request: Request, correlation_id: int, reply_fn: ReplyFn
    ) -> None:
        """A client request over its connection to broker `bid` (in order per connection)."""
        self.stats.requests += 1
        b = self.brokers[bid]
        at = self._client_time(client, bid)
        life = b.life
        header = RequestHeader(
            api_key=request.API_KEY, api_version=0, correlation_id=correlation_id, client_id="sim"
        )

        def arrive() -> None:
            if b.node is None or b.life != life:
                self._client_error(reply_fn, correlation_id, bid, "connection refused")
                return
            b.requests.append((header, request, reply_fn, correlation_id))
            self._wake(b)

        self.at(at, arrive)

    def _client_time(self, client: object, bid: int) -> int:
        at = self.now + self.rng.randint(1, self.net.client_latency_max)
        key = (client, bid)
        at = max(at, self.client_clock.get(key, 0))
        self.client_clock[key] = at
        return at

    def _client_reply(self, reply_fn: ReplyFn, bid: int, reply: Reply) -> None:
        at = self.now + self.rng.randint(1, self.net.client_latency_max)
        self.at(at, lambda: reply_fn(reply))

    def _client_error(self, reply_fn: ReplyFn, corr: int, bid: int, why: str) -> None:
        reply = Reply(corr, ErrorCode.NETWORK_EXCEPTION, f"broker {bid}: {why}", None)
        self._client_reply(reply_fn, bid, reply)

    # -- views --------------------------------------------------------------------------------

    def up(self) -> list[int]:
        return [i for i, b in self.brokers.items() if b.node is not None]

    def controller(self) -> int | None:
        """The up broker leading the metadata group with the highest term, if any."""
        best: tuple[int, int] | None = None
        for i, b in self.brokers.items():
            node = b.node
            mg = node.metadata_group if node is not None else None
            if mg is not None and mg.serving() and (best is None or mg.raft.term > best[0]):
                best = (mg.raft.term, i)
        return None if best is None else best[1]

    def partition_leaders(self) -> dict[int, int]:
        """Partition group id -> the up broker serving it with the highest term."""
        best: dict[int, tuple[int, int]] = {}
        for i, b in self.brokers.items():
            node = b.node
            if node is None:
                continue
            for gid, g in node.groups.items():
                if gid and g.serving() and (gid not in best or g.raft.term > best[gid][0]):
                    best[gid] = (g.raft.term, i)
        return {g: i for g, (_, i) in best.items()}

    def check_fetch(
        self, bid: int, tp: tuple[str, int], offset: int, part: FetchPartitionResult
    ) -> None:
        """The fetch rule (ClusterChecker.check_fetch) on an answer broker `bid` gave to a
        fetch at `offset`."""
        b = self.brokers.get(bid)
        node = b.node if b is not None else None
        if node is None:
            return  # it answered, then crashed: the answer was checked by nothing else
        topic = node.meta.topics.get(tp[0])
        if topic is None or not 0 <= tp[1] < len(topic.partitions):
            return
        gid = topic.partitions[tp[1]].group_id
        config = node.config
        self.checker.check_fetch(
            bid, gid, config.partition, offset, part, config.partition_retention_entries
        )

    def raise_violation(self, kind: str, detail: str) -> None:
        raise Violation(kind, f"{detail} (t={self.now})")


class _SimRoundIO:
    """One broker's side of `begin_round` (`early`) or `end_round` (`rnd` given) in the
    simulated world."""

    def __init__(
        self, world: ClusterWorld, b: SimBroker, rnd: Round | None = None, *, early: bool = False
    ) -> None:
        self.world = world
        self.b = b
        self.rnd = rnd
        self.early = early

    def started(self, rnd: Round) -> None:
        w, b = self.world, self.b
        assert b.node is not None
        w.stats.rounds += 1
        w.checker.on_round_start(b.id, b.life, b.node, rnd)
        self.rnd = rnd

    def send(self, envelopes: list[Envelope]) -> None:
        self.world._send_envelopes(self.b, envelopes)

    def send_heartbeats(self, heartbeats: list[tuple[int, BrokerHeartbeat]]) -> None:
        for dst, hb in heartbeats:
            self.world._send_frame(self.b.id, dst, encode_heartbeat(hb))

    def complete(self, completions: list[Completion]) -> None:
        """Called right after the node applied what this half of the round applies: the
        `after_apply` hook may crash the broker before its completions leave."""
        w, b = self.world, self.b
        if w.after_apply is not None and b.node is not None and self.rnd is not None:
            life = b.life
            w.after_apply(b.id, b.node, self.rnd, self.early)
            if b.life != life:
                return  # crashed: its clients got "connection reset" for every open request
        w._complete(b, completions)
