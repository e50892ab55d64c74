"""A cluster of real broker processes on 127.0.0.1 with a fault-injecting proxy in front of
every broker's peer listener.

Ports are chosen before anything starts, because the controllers list must name them. Broker
i listens for peers on `peer_port`, and advertises its proxy's address instead
(`advertise_peer`); the controllers list names the proxies too. So every byte of peer traffic
INTO broker i passes through proxy i. Since the lower node id dials the higher, the one
connection between brokers a < b is a -> proxy b -> b, carrying both directions: cutting the
link {a, b} means resetting, in proxy b, the connections that broker a dialed. The proxy tells
them apart without reading a byte of the protocol: it asks the kernel which broker process
owns the dialing socket (`proxy.owner_pid`, /proc on Linux). `isolate(i)` therefore cuts every
connection into proxy i and, in every other proxy, those broker i opened; client traffic is
never proxied, so clients still reach an isolated broker (as with a partition between
brokers only, Jepsen's usual nemesis).

Limits: telling dialers apart needs Linux's /proc and brokers of the same user (a connection
whose dialer cannot be named is treated as coming from every cut broker, so a cut never leaks,
at worst it also resets a healthy link, which reconnects). Every broker is a seed controller,
so clusters have 1 to 5 brokers. Only peer links are proxied: client-side faults need another
proxy in front of a client port.

Blocking operations (start, kill, restart, wipe) are plain methods: from Trio code call them
with `trio.to_thread.run_sync`. Metadata questions are async (the client library), asked of
each live broker separately, so a test can see what every broker believes.
"""

from __future__ import annotations

import shutil
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import trio

from broker.wire.messages import MetadataRequest, MetadataResponse
from consumers import Admin, Consumer
from consumers.cluster import Cluster as ClientCluster
from consumers.errors import SluiceError
from tests.integration.proxy import Direction, Proxy, owner_pid
from tests.support.harness import BrokerProcess, free_port
from tests.support.history import History
from tests.support.wait import poll_until_async

Leaders = dict[int, tuple[int | None, int]]
"""partition -> (leader, leader_term)."""


@dataclass(frozen=True, slots=True)
class View:
    """What one broker answered to METADATA about one topic."""

    broker: int
    controller: int | None
    leaders: Leaders


def merge(views: Iterable[View]) -> Leaders:
    """Per partition, the newest term anybody reported, with the leader reported for it (None
    if nobody named a leader in that term)."""
    out: Leaders = {}
    for v in views:
        for p, (leader, term) in v.leaders.items():
            cur = out.get(p)
            if cur is None or term > cur[1] or (term == cur[1] and cur[0] is None):
                out[p] = (leader, term)
    return out


class Cluster:
    """`size` brokers (up to 5) under `root`, the first `seeds` of them seed controllers (all
    by default; the others join as plain brokers: `start` leaves them down, `start_broker`
    adds one); `env`: variables every broker process gets on top of the test's."""

    def __init__(
        self,
        root: Path,
        size: int = 3,
        env: dict[str, str] | None = None,
        *,
        seeds: int | None = None,
        **config: object,
    ) -> None:
        if not 1 <= size <= 5:
            raise ValueError("1 to 5 brokers")
        self.seeds = size if seeds is None else seeds
        if not 1 <= self.seeds <= size:
            raise ValueError("1 to size seed controllers")
        self.root = root
        self.size = size
        root.mkdir(parents=True, exist_ok=True)
        peer_ports = [free_port() for _ in range(size)]
        self.proxies = [Proxy(("127.0.0.1", peer_ports[i]), name=f"proxy-{i}") for i in range(size)]
        for p in self.proxies:
            p.identify = self._identifier(p)
        controllers = ",".join(
            f"{i}@{p.address}" for i, p in enumerate(self.proxies) if i < self.seeds
        )
        base: dict[str, object] = {"durability_audit": True}
        base.update(config)
        self.brokers = [
            BrokerProcess(
                root / f"data-{i}",
                node_id=i,
                peer_port=peer_ports[i],
                config={
                    **base,
                    "controllers": controllers,
                    "advertise_peer": self.proxies[i].address,
                },
                env=dict(env or {}),
            )
            for i in range(size)
        ]
        self.paused: set[int] = set()
        self.killed: set[int] = set(range(self.seeds, size))
        """Brokers the test stopped on purpose (killed, terminated, not yet restarted), and
        the joiners not started yet."""

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> Cluster:
        for p in self.proxies:
            p.start()
        # Every seed must be up before any can be ready: the first voters are created only
        # once each seed has heard every other's handshake.
        seeds = self.brokers[: self.seeds]
        for b in seeds:
            b.start()
        for b in seeds:
            b.wait_ready(timeout)
        return self

    def close(self) -> None:
        for b in self.brokers:
            b.kill(signal.SIGKILL)  # also ends a SIGSTOPped process
        for p in self.proxies:
            p.close()

    @property
    def bootstrap(self) -> str:
        return ",".join(b.bootstrap for b in self.brokers)

    def live(self) -> list[int]:
        """Brokers running and not paused."""
        return [
            i
            for i, b in enumerate(self.brokers)
            if b.proc is not None and b.returncode is None and i not in self.paused
        ]

    # -- process faults -----------------------------------------------------------------------

    def kill(self, i: int) -> None:
        """SIGKILL."""
        self.brokers[i].kill(signal.SIGKILL)
        self.paused.discard(i)
        self.killed.add(i)

    def terminate(self, i: int) -> int:
        """SIGTERM and wait: the exit code of a graceful shutdown."""
        self.resume(i)
        self.killed.add(i)
        return self.brokers[i].stop()

    def pause(self, i: int) -> None:
        """SIGSTOP."""
        self.brokers[i].kill(signal.SIGSTOP)
        self.paused.add(i)

    def resume(self, i: int) -> None:
        """SIGCONT."""
        if i in self.paused:
            self.brokers[i].kill(signal.SIGCONT)
            self.paused.discard(i)

    def start_broker(self, i: int, timeout: float = 60.0) -> None:
        """Start a stopped broker on its ports and data directory, and wait until ready."""
        self.brokers[i].start()
        self.killed.discard(i)
        self.brokers[i].wait_ready(timeout)

    def restart(self, i: int, timeout: float = 60.0) -> None:
        self.kill(i)
        self.start_broker(i, timeout)

    def wipe(self, i: int, timeout: float = 60.0) -> None:
        """SIGKILL, delete the data directory, start again: a new incarnation."""
        self.kill(i)
        shutil.rmtree(self.brokers[i].data_dir, ignore_errors=True)
        self.start_broker(i, timeout)

    # -- network faults (peer links only) -------------------------------------------------------

    def isolate(self, i: int) -> None:
        """Cut broker i from every other broker (both ways), until `heal`."""
        self.proxies[i].cut()
        for j, p in enumerate(self.proxies):
            if j != i:
                p.cut(source=i)

    def cut_link(self, a: int, b: int) -> None:
        """Cut the link between brokers a and b (both ways)."""
        lo, hi = sorted((a, b))
        self.proxies[hi].cut(source=lo)

    def stall(self, src: int, dst: int) -> None:
        """One-way blackhole: nothing from `src` reaches `dst` (the link stays open)."""
        lo, hi = sorted((src, dst))
        direction: Direction = "to_target" if src == lo else "from_target"
        self.proxies[hi].stall(direction, source=lo)

    def delay(self, a: int, b: int, seconds: float) -> None:
        """Latency on the link between a and b, each way."""
        lo, hi = sorted((a, b))
        self.proxies[hi].delay(seconds, source=lo)

    def heal(self) -> None:
        for p in self.proxies:
            p.heal()

    def _identifier(self, proxy: Proxy) -> Callable[[tuple[str, int]], int | None]:
        def identify(dialer: tuple[str, int]) -> int | None:
            pids = {
                b.proc.pid: b.node_id
                for b in self.brokers
                if b.proc is not None and b.proc.poll() is None
            }
            pid = owner_pid(dialer[1], proxy.port, list(pids))
            return None if pid is None else pids[pid]

        return identify

    # -- what the brokers say -----------------------------------------------------------------

    async def view(self, i: int, topic: str | None, timeout: float = 3.0) -> View | None:
        """Broker i's answer about `topic` (None: no topic, only the controller), or None if
        it did not answer in time."""
        b = self.brokers[i]
        try:
            with trio.move_on_after(timeout):
                async with ClientCluster(
                    b.bootstrap, request_timeout_s=timeout, connect_timeout_s=timeout
                ) as c:
                    wanted = () if topic is None else (topic,)
                    r = await c.request_any(MetadataRequest(topics=wanted), timeout_s=timeout)
                    assert isinstance(r, MetadataResponse)
                    leaders: Leaders = {}
                    for t in r.topics:
                        if t.name == topic:
                            leaders = {p.partition: (p.leader, p.leader_term) for p in t.partitions}
                    return View(i, r.controller, leaders)
        except SluiceError:
            return None
        return None

    async def views(self, topic: str | None, brokers: Iterable[int] | None = None) -> list[View]:
        """The answers of every live broker (or of `brokers`) that answered."""
        targets = list(self.live() if brokers is None else brokers)
        out: list[View | None] = [None] * len(targets)

        async def ask(k: int, i: int) -> None:
            out[k] = await self.view(i, topic)

        async with trio.open_nursery() as n:
            for k, i in enumerate(targets):
                n.start_soon(ask, k, i)
        return [v for v in out if v is not None]

    async def leaders(self, topic: str) -> Leaders:
        return merge(await self.views(topic))

    async def leader_of(self, topic: str, partition: int, timeout: float = 30.0) -> int:
        """The partition's leader (newest term any live broker reports), waiting for one."""
        leaders = await self.wait_leaders(topic, timeout=timeout, partitions=[partition])
        leader = leaders[partition][0]
        assert leader is not None
        return leader

    async def controller(self, timeout: float = 30.0) -> int:
        """The controller most live brokers name, waiting until one is named."""

        async def votes() -> Counter[int]:
            views = await self.views(None)
            return Counter(v.controller for v in views if v.controller is not None)

        named = await poll_until_async(
            votes, bool, "a controller named", timeout=timeout, context=self._where
        )
        return named.most_common(1)[0][0]

    async def wait_leaders(
        self,
        topic: str,
        *,
        timeout: float = 30.0,
        partitions: Iterable[int] | None = None,
        avoid: Iterable[int] = (),
    ) -> Leaders:
        """Wait until every partition (or `partitions`) has a leader in the newest term any
        live broker reports, that leader is live, and it is not in `avoid`."""
        avoid = set(avoid)
        wanted = None if partitions is None else set(partitions)

        def led(last: Leaders) -> bool:
            live = set(self.live())
            check = [p for p in last if wanted is None or p in wanted]
            return (
                bool(check)
                and (wanted is None or wanted <= set(check))
                and all(last[p][0] is not None and last[p][0] in live - avoid for p in check)
            )

        return await poll_until_async(
            lambda: self.leaders(topic),
            led,
            f"{topic}: a live leader for every partition, avoiding {sorted(avoid)}",
            timeout=timeout,
            context=self._where,
        )

    async def wait_stable(self, topic: str, *, timeout: float = 30.0) -> list[View]:
        """Wait until every live broker reports the same leader and term for each partition,
        every partition has a leader, and all name the same controller."""

        def agreed(last: list[View]) -> bool:
            return bool(
                len(last) == len(self.live())
                and last
                and all(v.leaders == last[0].leaders for v in last)
                and all(v.controller == last[0].controller for v in last)
                and last[0].controller is not None
                and last[0].leaders
                and all(ld is not None for ld, _ in last[0].leaders.values())
            )

        return await poll_until_async(
            lambda: self.views(topic),
            agreed,
            f"{topic}: every live broker to agree on leaders and controller",
            timeout=timeout,
            context=self._where,
        )

    def _where(self) -> str:
        """What a failed wait adds: who is live, and where the logs are."""
        return f"live {self.live()}; logs in {self.root}"

    # -- checks -------------------------------------------------------------------------------

    def unexpected_exits(self) -> list[str]:
        """Brokers that exited although the test did not stop them."""
        return [
            f"broker {i} exited with {b.returncode}: {b.log_tail(1500)}"
            for i, b in enumerate(self.brokers)
            if b.returncode is not None and i not in self.killed
        ]

    def audit_failures(self) -> list[str]:
        """Any broker's log naming a durability-audit violation."""
        return [
            f"broker {i}: {b.log_tail(3000)}"
            for i, b in enumerate(self.brokers)
            if "DurabilityViolation" in b.log_text()
        ]

    def wait_all_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        for b in self.brokers:
            b.wait_ready(max(1.0, deadline - time.monotonic()))


async def read_back(
    cluster: Cluster, history: History, topic: str, partitions: int, timeout: float = 60.0
) -> dict[int, int]:
    """Every partition of `topic` from offset 0 to its high watermark, into `history` (each
    must begin at offset 0); returns the high watermarks."""
    await cluster.wait_leaders(topic)
    with trio.fail_after(timeout):
        ends: dict[int, int] = {}
        async with Admin(cluster.bootstrap) as admin:
            while True:
                desc = await admin.describe_topic(topic)
                ends = {
                    p.partition: p.high_watermark
                    for p in desc.partitions
                    if p.high_watermark is not None
                }
                if len(ends) == partitions:
                    break
                await trio.sleep(0.1)
        firsts: dict[int, int] = {}
        async with Consumer(cluster.bootstrap, auto_offset_reset="earliest") as c:
            tps = [(topic, p) for p in range(partitions)]
            c.assign(tps)
            for tp in tps:
                c.seek(tp, 0)
            seen = dict.fromkeys(range(partitions), 0)
            while any(seen[p] < ends[p] for p in seen):
                for r in await c.poll(timeout=1.0, max_records=5000):
                    history.read((r.topic, r.partition), r.offset, r.value or b"")
                    firsts.setdefault(r.partition, r.offset)
                    seen[r.partition] = max(seen[r.partition], r.offset + 1)
    assert all(first == 0 for first in firsts.values()), f"a partition began at {firsts}"
    return ends
