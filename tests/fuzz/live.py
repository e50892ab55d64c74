"""Fuzz a live broker process over TCP on its client and peer ports, then check it survived.

    python -m tests.fuzz.live --frames N --seed S [--target client|peer|both]
                              [--connections C] [--peer-connections P]

starts its own `sluice serve` (temporary data directory, `request_budget_bytes` 32 MiB,
`max_frame_bytes` 4 MiB) unless `--bootstrap`/`--peer` name a running one, and exits 0 when
every check passed, 1 otherwise (printing the seed and the command that replays the run).

**What is sent.** Several connections per port at once (default 8 client, 4 peer). Each
sends sessions of a drawn number of frames, reads whatever arrives meanwhile (a receiver task
per connection, so its socket never fills), and reconnects when the session ends (by its
own choice, or because the frames it sent make the broker close). Client frames
(`client_frames.py`): valid requests of every API, and requests damaged in their CBOR tree,
their envelope fields, their bytes or their record batches, frames of up to
`max_frame_bytes`, bad length prefixes, truncated frames and random bytes. Peer frames
(`peer_frames.py`): garbage and damaged or refused hellos before the handshake; after a good
HELLO (a fake broker id from a pool of 8) valid and damaged RAFT frames, broker heartbeats,
frames of unexpected kinds, and the same framing damage.

**Replay.** Every frame is drawn from RNGs derived from the seed alone (one per client
connection slot; per peer frame, so nothing depends on the broker), lazily: the fuzzer's
memory stays constant however many frames. Raft messages must name the broker's incarnation,
which a fresh broker draws anew: they are drawn naming a placeholder, replaced by the real
one just before sending (`peer_frames.py`). So a run resends the same frames, in the same
sessions, per connection slot (only the interleaving across slots differs); the summary
prints a digest of all frames drawn, per port, to compare runs.

**Oracle.** Each connection runs a mirror of what the broker does with its bytes, with the
broker's own decoders (`oracle.py`), so it knows which frames must be answered and how, and
where the broker must close. Answers out of order, with another correlation id or code,
undecodable, missing, a close that should not happen or that does not come are anomalies
(`connections.py`), and fail the run; so does a decoder raising anything but its own error
type. Valid requests that would write to anything but the fuzzer's own topics, and peer
frames naming the metadata group or the checked topic's groups (unless `--raft-groups
all`), are redrawn before sending.

**Checks after the run** (plus the anomalies above; `checks.py`): the broker process is
still running; its peak RSS during the run <= the RSS before it + `request_budget_bytes` +
`--rss-slack-mib` (64 MiB: the broker's own state, allocator slack, RocksDB memtables of
what the run writes); a probe answered every ApiVersions request within `PROBE_TIMEOUT_S`
throughout, and a normal idempotent producer (acks=all) kept writing to the checked topic;
every record acknowledged before or during the run reads back with the same value at the
same (partition, offset), nothing else is in the checked topic and no value is there twice;
a produce and fetch round trip works afterwards; the broker lets go of every closed
connection (its sockets return to their count before the run within SOCKETS_RELEASED_S); it
logged no error (a contained exception is still a bug). `--allow CLASS` reports an anomaly
class without failing on it.

**Modules.** This one holds the options, the orchestration (`Fuzzer`: connection slots and
their sessions; `run`: setup, fuzz, checks), the report and the command line. What is sent:
`client_frames.py`, `peer_frames.py` (each handing over `planned.Planned` frames); what the
broker must do with it: `oracle.py`; the connections that send it and judge the answers:
`connections.py`; the normal clients, samples and checks: `checks.py`; the broker under
attack (topics, groups, fake ids, `Target`): `target.py`; the counters: `stats.py`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import os
import random
import resource
import shlex
import signal
import struct
import sys
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import trio

from broker.wire.limits import Limits, MiB
from consumers import Admin
from consumers.coordinator import CoordinatorLink
from tests.fuzz.checks import (
    AckLog,
    budgets_given_back,
    cpu_seconds,
    fd_count,
    live_producer,
    log_errors,
    preload,
    probe,
    read_back,
    round_trip,
    rss_bytes,
    sampler,
    socket_count,
    sockets_released,
)
from tests.fuzz.client_frames import ClientFrames
from tests.fuzz.connections import ANSWER_GRACE_S, ClientConn, PeerConn
from tests.fuzz.oracle import ClientMirror, PeerMirror
from tests.fuzz.peer_frames import PeerFrames
from tests.fuzz.stats import Stats
from tests.fuzz.target import (
    CHECKED_PARTITIONS,
    CHECKED_TOPIC,
    MISSING_GROUP,
    PEER_ID_BASE,
    PEER_ID_POOL,
    RAFT_PARTITIONS,
    RAFT_TOPIC,
    Target,
    api_versions,
    learn_peer_identity,
)
from tests.support.harness import BrokerProcess

MAX_FRAME_BYTES = 4 * MiB
REQUEST_BUDGET_BYTES = 32 * MiB
BROKER_CONFIG: dict[str, object] = {
    "request_budget_bytes": REQUEST_BUDGET_BYTES,
    "max_frame_bytes": MAX_FRAME_BYTES,
    "offsets_topic_partitions": 2,
}
RSS_SLACK_MIB = 64
PRELOAD = 3000
"""Records written to the checked topic before the fuzz starts."""
SESSION_TIMEOUT_S = 120.0


# -- options and results ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Options:
    seed: int
    frames: int
    """All frames sent; with target `both`, 4/5 go to the client port and 1/5 to peers."""
    target: str = "both"
    connections: int = 8
    peer_connections: int = 4
    raft_groups: str = "safe"
    """`safe`: fake peers' Raft messages and heartbeat reports name only RAFT_TOPIC's groups
    and a missing one; `all`: also the metadata group and the checked topic's groups, which
    an authenticated peer can legitimately take over (outside the broker's trust model)."""
    preload: int = PRELOAD
    max_frame_bytes: int = MAX_FRAME_BYTES
    request_budget_bytes: int = REQUEST_BUDGET_BYTES
    rss_slack_mib: int = RSS_SLACK_MIB
    bootstrap: str | None = None
    peer: str | None = None
    pid: int | None = None
    allow: frozenset[str] = frozenset()
    """Anomaly classes reported but not failed on (known broker findings)."""
    progress_s: float = 0.0
    """Print a progress line to stderr this often (0: never)."""

    @property
    def client_frames(self) -> int:
        if self.target == "client":
            return self.frames
        return 0 if self.target == "peer" else self.frames * 4 // 5

    @property
    def peer_frames(self) -> int:
        return self.frames - self.client_frames

    def replay_command(self) -> str:
        args = [
            "python", "-m", "tests.fuzz.live", "--seed", str(self.seed),
            "--frames", str(self.frames), "--target", self.target,
            "--connections", str(self.connections),
            "--peer-connections", str(self.peer_connections),
            "--raft-groups", self.raft_groups,
        ]  # fmt: skip
        if self.preload != PRELOAD:
            args += ["--preload", str(self.preload)]
        if self.bootstrap:
            args += ["--bootstrap", self.bootstrap]
        if self.peer:
            args += ["--peer", self.peer]
        for cls in sorted(self.allow):
            args += ["--allow", cls]
        return shlex.join(args)


@dataclass
class Report:
    options: Options
    stats: Stats
    fuzz_s: float = 0.0
    total_s: float = 0.0
    failures: list[str] = field(default_factory=list)
    log_tail: str = ""

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def frames_per_s(self) -> float:
        return sum(self.stats.sent.values()) / self.fuzz_s if self.fuzz_s else 0.0

    def summary(self) -> str:
        s = self.stats
        lines = [
            f"seed {self.options.seed}: {sum(s.sent.values())} frames in {self.fuzz_s:.1f} s "
            f"({self.frames_per_s:.0f} frames/s), {self.total_s:.1f} s in all",
            "frames sent: " + _counts(s.sent),
            f"digest of the frames sent: {s.sent_digest}",
            "answers by error code: " + _counts(s.answers),
            "peer frames received: " + _counts(s.peer_received),
            "events: " + _counts(s.events),
            f"broker: RSS {s.rss_baseline / MiB:.1f} MiB before, peak {s.rss_peak / MiB:.1f} MiB "
            f"(bound {self.rss_bound / MiB:.1f} MiB); fds {s.fds_baseline} before, peak "
            f"{s.fds_peak}; CPU during the run {s.cpu_s:.1f} s",
            f"fuzzer: CPU {s.fuzzer_cpu_s:.1f} s, RSS {s.fuzzer_rss_start / MiB:.0f} MiB when the "
            f"fuzz began, {s.fuzzer_rss_end / MiB:.0f} MiB when it ended, peak "
            f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB",
            f"normal clients: {s.live_acked} records acknowledged during the run "
            f"({s.live_failed} failed); probe {s.probe_answers} answers, "
            f"{_latencies(s.probe_latencies, s.probe_max)}",
            f"anomalies: {_counts(s.anomalies)}",
        ]
        for cls, examples in sorted(s.examples.items()):
            tolerated = " (tolerated: --allow)" if cls in self.options.allow else ""
            lines.append(f"  {cls}{tolerated}:")
            lines += [f"    {e}" for e in examples]
        if self.failures:
            lines.append("FAILED:")
            lines += [f"  {f}" for f in self.failures]
            lines.append(f"replay: {self.options.replay_command()}")
            if self.log_tail:
                lines.append("broker log tail:\n" + self.log_tail)
        else:
            lines.append("OK")
        return "\n".join(lines)

    @property
    def rss_bound(self) -> int:
        o = self.options
        return self.stats.rss_baseline + o.request_budget_bytes + o.rss_slack_mib * MiB


def _counts(c: Counter[str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(c.items())) or "-"


def _latencies(sample: list[float], most: float) -> str:
    if not sample:
        return "no latencies"
    ys = sorted(sample)
    p50, p99 = (ys[min(len(ys) - 1, int(q * len(ys)))] * 1000 for q in (0.5, 0.99))
    return f"latency p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {most * 1000:.1f} ms"


# -- the run ----------------------------------------------------------------------------------


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


class Fuzzer:
    def __init__(self, options: Options, target: Target, stats: Stats) -> None:
        self.o = options
        self.target = target
        self.stats = stats
        self.limits = Limits(max_frame_bytes=target.max_frame_bytes)
        self.redrawn = 0
        self.digests: dict[tuple[str, int], bytes] = {}
        """Per connection slot, a digest of every frame drawn, in order, with its session
        boundaries: equal digests, equal bytes sent (peer frames as drawn, naming a
        placeholder for the broker's incarnation)."""

    def digest(self, role: str) -> str:
        """The digest of all slots of a role (`client`, `peer`)."""
        h = hashlib.blake2b(digest_size=8)
        for key in sorted(k for k in self.digests if k[0] == role):
            h.update(self.digests[key])
        return h.hexdigest()

    def _name(self, role: str, k: int) -> str:
        return f"sluice-fuzz:{self.o.seed}:{role}:{k}"

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            n = self.o.connections
            for k in range(n if self.o.client_frames else 0):
                share = self.o.client_frames // n + (k < self.o.client_frames % n)
                nursery.start_soon(self.client_slot, k, share)
            p = min(self.o.peer_connections, PEER_ID_POOL)
            for k in range(p if self.o.peer_frames else 0):
                share = self.o.peer_frames // p + (k < self.o.peer_frames % p)
                ids = tuple(PEER_ID_BASE + i for i in range(PEER_ID_POOL) if i % p == k)
                nursery.start_soon(self.peer_slot, k, share, ids)

    # -- client ------------------------------------------------------------------------------

    async def client_slot(self, k: int, quota: int) -> None:
        role = "client"
        rng = random.Random(self._name("client", k))
        gen = ClientFrames(rng, self.limits)
        digest = hashlib.blake2b(digest_size=16)
        while gen.frames < quota:
            n = min(quota - gen.frames, gen.session_length())
            try:
                stream = await trio.open_tcp_stream(*self.target.client)
            except OSError as e:
                self.stats.anomaly("cannot-connect", f"client {k}: cannot connect: {e}")
                return
            conn = ClientConn(stream, self.stats, f"client {k}")
            with trio.move_on_after(SESSION_TIMEOUT_S) as session:
                digest.update(b"session")
                await self._client_session(conn, gen, n, digest)
            if session.cancelled_caught:
                self.stats.anomaly("session-stuck", f"client {k}: stuck for {SESSION_TIMEOUT_S} s")
            conn.we_closed = True
            await trio.aclose_forcefully(stream)
        self.redrawn += gen.redrawn
        self.digests[role, k] = digest.digest()

    async def _client_session(
        self, conn: ClientConn, gen: ClientFrames, n: int, digest: hashlib.blake2b
    ) -> None:
        """Send up to `n` frames (fewer when one makes the broker close, or may hold its
        answer long), reading meanwhile; then check the answers and the close."""
        mirror = ClientMirror(self.limits)
        stats = self.stats
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.receive, conn.on_frame)
            for _ in range(n):
                p = gen.next()
                expects = mirror.feed(p.data, p.hint, gen.frames)
                now = trio.current_time()
                for e in expects:
                    e.sent_at = now
                conn.expects.extend(expects)
                if mirror.bug is not None:
                    self._bug(mirror.bug, p.data)
                    conn.unverifiable = True
                conn.close_predicted = mirror.closing
                conn.unverifiable |= mirror.long
                stats.sent[f"client:{p.kind}"] += 1
                digest.update(struct.pack(">I", len(p.data)) + p.data)
                if not await conn.send(p.data, p.pieces):
                    break
                if mirror.long:
                    stats.events["sessions-ended-by-long-wait"] += 1
                if mirror.closing or mirror.long or p.then_close:
                    break
            await conn.drain()
            if conn.eof:
                conn.check_eof()
            conn.we_closed = True
            await trio.aclose_forcefully(conn.stream)
            nursery.cancel_scope.cancel()

    def _bug(self, text: str, data: bytes) -> None:
        self.stats.anomaly("decoder-bug", f"{text}; frame {data[:96].hex()}")

    # -- peers -------------------------------------------------------------------------------

    async def peer_slot(self, k: int, quota: int, ids: tuple[int, ...]) -> None:
        role = "peer"
        assert self.target.peer is not None
        gen = PeerFrames(self._name("peer", k), self.target, ids, self.o.raft_groups == "safe")
        digest = hashlib.blake2b(digest_size=16)
        seen: set[tuple[int, int, int]] = set()
        while gen.frames < quota:
            n = min(quota - gen.frames - 1, gen.session_length())
            me = gen.member()
            try:
                stream = await trio.open_tcp_stream(*self.target.peer)
            except OSError as e:
                self.stats.anomaly("cannot-connect", f"peer {k}: cannot connect: {e}")
                return
            conn = PeerConn(
                stream, self.stats, f"peer {k}", self.target.node_id, self.target.incarnation
            )
            with trio.move_on_after(SESSION_TIMEOUT_S) as session:
                digest.update(b"session")
                await self._peer_session(conn, gen, me, n, digest, seen)
            if session.cancelled_caught:
                self.stats.anomaly("session-stuck", f"peer {k}: stuck for {SESSION_TIMEOUT_S} s")
            conn.we_closed = True
            await trio.aclose_forcefully(stream)
        self.redrawn += gen.redrawn
        self.digests[role, k] = digest.digest()

    async def _peer_session(
        self,
        conn: PeerConn,
        gen: PeerFrames,
        me: tuple[int, int],
        n: int,
        digest: hashlib.blake2b,
        seen: set[tuple[int, int, int]],
    ) -> None:
        """A handshake frame, then (when it links) up to `n` frames; then check the hello's
        answer, the answers owed to peer requests and the close."""
        mirror = PeerMirror(self.target.node_id, self.target.cluster_id, seen)
        stats = self.stats
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.receive, conn.on_frame)
            p = gen.handshake(me)
            for i in range(n + 1):
                if i:
                    p = gen.next(me)
                wire = gen.wire(p.data)
                mirror.feed(wire, gen.frames)
                conn.expect(mirror.expects)
                mirror.expects.clear()
                stats.sent[f"peer:{p.kind}"] += 1
                if mirror.bug is not None:
                    self._bug(mirror.bug, wire)
                    mirror.bug = None
                conn.close_predicted = mirror.closing
                digest.update(struct.pack(">I", len(p.data)) + p.data)
                if not await conn.send(wire, p.pieces):
                    break
                if mirror.closing or p.then_close or not mirror.linked:
                    break
            await self._peer_drain(conn, mirror)
            if conn.eof and not mirror.closing:
                stats.anomaly(
                    "closed-early", f"{conn.where}: link closed by the broker after valid frames"
                )
            conn.we_closed = True
            await trio.aclose_forcefully(conn.stream)
            nursery.cancel_scope.cancel()

    async def _peer_drain(self, conn: PeerConn, mirror: PeerMirror) -> None:
        deadline = trio.current_time() + ANSWER_GRACE_S
        if mirror.answer is not None:
            if not await conn.wait_until(lambda: conn.answer is not None or conn.eof, deadline):
                self.stats.anomaly("no-hello-answer", f"{conn.where}: no answer to the hello")
            elif conn.answer != mirror.answer:
                self.stats.anomaly(
                    "wrong-hello-answer",
                    f"{conn.where}: hello answered with frame kind {conn.answer}, "
                    f"expected {mirror.answer}",
                )
        elif conn.received and not mirror.linked:
            self.stats.anomaly(
                "wrong-hello-answer", f"{conn.where}: the broker answered a hello it should refuse"
            )
        if mirror.closing and not await conn.wait_until(lambda: conn.eof, deadline):
            self.stats.anomaly(
                "not-closed", f"{conn.where}: the broker did not close the connection"
            )
        # Answers to peer requests are owed while the link stands (a predicted close may
        # come before the driver answers: then they are not required).
        if not mirror.closing and not await conn.wait_until(
            lambda: not conn.peer_expects or conn.eof, deadline
        ):
            owed = [e for es in conn.peer_expects.values() for e in es]
            self.stats.anomaly(
                "no-peer-response",
                f"{conn.where}: {len(owed)} peer requests unanswered (frames "
                f"{sorted(e.frame for e in owed)[:5]})",
            )


async def progress(every_s: float, stats: Stats, stop: trio.Event) -> None:
    began = trio.current_time()
    while True:
        with trio.move_on_after(every_s):
            await stop.wait()
            return
        sent = sum(stats.sent.values())
        elapsed = trio.current_time() - began
        print(
            f"fuzz: {elapsed:.0f} s, {sent} frames ({sent / elapsed:.0f}/s), broker RSS peak "
            f"{stats.rss_peak / MiB:.0f} MiB, anomalies {_counts(stats.anomalies)}",
            file=sys.stderr,
            flush=True,
        )


# -- setup ---------------------------------------------------------------------------------------


async def setup(o: Options, bootstrap: str) -> tuple[Target, AckLog]:
    """Create the checked topic and RAFT_TOPIC, learn the broker's identity and its group
    ids (assigned in creation order: on a fresh broker the checked topic's groups are 1..3,
    RAFT_TOPIC's the next two), and preload the checked topic."""
    client = _host_port(bootstrap)
    async with Admin(bootstrap) as admin:
        existing = await admin.list_topics()
        first_group = 1 + sum(len(t.partitions) for t in existing)
        names = {t.name for t in existing}
        if CHECKED_TOPIC in names or RAFT_TOPIC in names:
            raise RuntimeError(f"{CHECKED_TOPIC} or {RAFT_TOPIC} exists: use a fresh broker")
        await admin.create_topic(CHECKED_TOPIC, partitions=CHECKED_PARTITIONS)
        await admin.create_topic(RAFT_TOPIC, partitions=RAFT_PARTITIONS)
        # The offsets topic now, while this broker is the only one alive: group requests
        # then reach a real coordinator (later, fuzzed peers could hold its replicas).
        link = CoordinatorLink(admin.cluster, "fz-setup")
        await admin.cluster.retry_until(trio.current_time() + 30, link.find)
    checked = frozenset(range(first_group, first_group + CHECKED_PARTITIONS))
    raft = tuple(
        range(first_group + CHECKED_PARTITIONS, first_group + CHECKED_PARTITIONS + RAFT_PARTITIONS)
    )
    versions = await api_versions(*client)
    node_id, incarnation, cluster_id = versions.node_id, 0, versions.cluster_id
    peer = _host_port(o.peer) if o.peer else None
    if peer is not None and o.peer_frames:
        node_id, incarnation, cluster_id = await learn_peer_identity(peer)
    target = Target(
        client=client,
        peer=peer,
        node_id=node_id,
        incarnation=incarnation,
        cluster_id=cluster_id,
        raft_groups=(*raft, MISSING_GROUP),
        protected_groups=frozenset({0}) | checked,
        max_frame_bytes=o.max_frame_bytes,
    )
    log = AckLog("pre")
    await preload(bootstrap, log, o.preload)
    return target, log


# -- orchestration ------------------------------------------------------------------------------


async def run(options: Options, data_dir: Path | None = None) -> Report:
    """Start a broker unless options name one, set up, fuzz, check; never raises for a
    failed check (the report lists them)."""
    started = time.monotonic()
    stats = Stats()
    report = Report(options, stats)
    broker: BrokerProcess | None = None
    o = options
    tmp: tempfile.TemporaryDirectory[str] | None = None
    try:
        if o.bootstrap is None:
            if data_dir is None:
                tmp = tempfile.TemporaryDirectory(prefix="sluice-fuzz-")
                data_dir = Path(tmp.name)
            broker = BrokerProcess(data_dir / "data", config=dict(BROKER_CONFIG))
            await trio.to_thread.run_sync(broker.start)
            await trio.to_thread.run_sync(broker.wait_ready)
            assert broker.proc is not None
            o = dataclasses.replace(
                o,
                bootstrap=broker.bootstrap,
                peer=f"127.0.0.1:{broker.peer_port}",
                pid=broker.proc.pid,
            )
            report.options = options  # the replay command names no ports of a broker it starts
        assert o.bootstrap is not None
        try:
            await _run_checked(o, stats, report, broker)
        except Exception as e:  # a client call failed: the broker is down or broken
            alive = broker is None or broker.returncode is None
            report.failures.append(
                f"the run stopped on {type(e).__name__}: {e} (broker "
                f"{'running' if alive else 'exited'})\n" + "".join(traceback.format_exception(e))
            )
    finally:
        if broker is not None:
            if broker.returncode is not None or report.failures:
                report.log_tail = broker.log_tail(4000)
            broker.kill()
        if tmp is not None:
            tmp.cleanup()
        report.total_s = time.monotonic() - started
    return report


async def _run_checked(
    o: Options, stats: Stats, report: Report, broker: BrokerProcess | None
) -> None:
    assert o.bootstrap is not None
    target, pre_log = await setup(o, o.bootstrap)
    live_log = AckLog("live")
    pid = o.pid
    if pid is not None:
        stats.rss_baseline = stats.rss_peak = rss_bytes(pid)
        stats.fds_baseline = stats.fds_peak = fd_count(pid)
        stats.sockets_baseline = socket_count(pid)
        cpu_before = cpu_seconds(pid)
    fuzzer = Fuzzer(o, target, stats)
    stop = trio.Event()
    began = time.monotonic()
    began_cpu = time.process_time()
    stats.fuzzer_rss_start = rss_bytes(os.getpid())
    async with trio.open_nursery() as nursery:
        if pid is not None:
            nursery.start_soon(sampler, pid, stats, stop)
        nursery.start_soon(live_producer, o.bootstrap, live_log, stats, stop)
        nursery.start_soon(probe, *target.client, stats, stop)
        if o.progress_s > 0:
            nursery.start_soon(progress, o.progress_s, stats, stop)
        await fuzzer.run()
        report.fuzz_s = time.monotonic() - began
        stats.fuzzer_cpu_s = time.process_time() - began_cpu
        stats.fuzzer_rss_end = rss_bytes(os.getpid())
        stop.set()
    stats.events["redrawn-unsafe"] = fuzzer.redrawn
    stats.sent_digest = f"client {fuzzer.digest('client')}, peer {fuzzer.digest('peer')}"
    if pid is not None:
        with contextlib.suppress(OSError):
            stats.cpu_s = cpu_seconds(pid) - cpu_before
    failures = report.failures
    returncode = None if broker is None else broker.returncode
    alive = returncode is None and (pid is None or os.path.exists(f"/proc/{pid}"))
    if not alive:
        failures.append(f"the broker process exited (code {returncode})")
        return
    if pid is not None and stats.rss_peak > report.rss_bound:
        failures.append(
            f"broker RSS peaked at {stats.rss_peak / MiB:.1f} MiB, above the bound "
            f"{report.rss_bound / MiB:.1f} MiB (baseline {stats.rss_baseline / MiB:.1f} + "
            f"budget {o.request_budget_bytes / MiB:.0f} + slack {o.rss_slack_mib})"
        )
    if not stats.probe_answers:
        failures.append("the probe got no answer during the run")
    if stats.live_acked == 0:
        failures.append("the normal producer got no acknowledgement during the run")
    failures += await read_back(o.bootstrap, [pre_log, live_log])
    problem = await round_trip(o.bootstrap)
    if problem:
        failures.append(problem)
    if pid is not None:
        await sockets_released(pid, stats.sockets_baseline, stats)
    if broker is not None:
        problem = await budgets_given_back(broker)
        if problem:
            failures.append(problem)
    failing = {c: n for c, n in stats.anomalies.items() if c not in o.allow}
    if failing:
        failures.append(f"anomalies (listed above): {_counts(Counter(failing))}")
    errors = log_errors(broker.log_text() if broker is not None else "")
    if errors:
        failures.append(f"the broker logged {len(errors)} errors, first: {errors[0]}")
    if broker is not None and broker.returncode is not None:
        failures.append("the broker process exited during the checks")


# -- command line ---------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> Options:
    ap = argparse.ArgumentParser(
        prog="python -m tests.fuzz.live", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("--frames", type=int, default=25_000)
    ap.add_argument("--seed", type=int, default=None, help="default: drawn and printed")
    ap.add_argument("--target", choices=("client", "peer", "both"), default="both")
    ap.add_argument("--connections", type=int, default=8, help="client connections at once")
    ap.add_argument("--peer-connections", type=int, default=4, help=f"at most {PEER_ID_POOL}")
    ap.add_argument("--raft-groups", choices=("safe", "all"), default="safe")
    ap.add_argument("--preload", type=int, default=PRELOAD)
    ap.add_argument("--bootstrap", help="HOST:PORT of a running broker's client port")
    ap.add_argument("--peer", help="HOST:PORT of its peer port")
    ap.add_argument("--pid", type=int, help="its process id (to sample RSS)")
    ap.add_argument("--max-frame-bytes", type=int, default=MAX_FRAME_BYTES)
    ap.add_argument("--request-budget-bytes", type=int, default=REQUEST_BUDGET_BYTES)
    ap.add_argument("--rss-slack-mib", type=int, default=RSS_SLACK_MIB)
    ap.add_argument("--progress", type=float, default=30.0, metavar="SECONDS", help="0: none")
    ap.add_argument(
        "--allow", action="append", default=[], metavar="CLASS",
        help="an anomaly class to report without failing (repeatable)",
    )  # fmt: skip
    a = ap.parse_args(argv)
    if a.peer and not a.bootstrap:
        ap.error("--peer needs --bootstrap")
    if a.bootstrap and a.target != "client" and not a.peer:
        ap.error(f"--target {a.target} against a running broker needs --peer")
    return Options(
        seed=a.seed if a.seed is not None else random.SystemRandom().randrange(1 << 32),
        frames=a.frames,
        target=a.target,
        connections=max(1, a.connections),
        peer_connections=max(1, min(PEER_ID_POOL, a.peer_connections)),
        raft_groups=a.raft_groups,
        preload=a.preload,
        max_frame_bytes=a.max_frame_bytes,
        request_budget_bytes=a.request_budget_bytes,
        rss_slack_mib=a.rss_slack_mib,
        bootstrap=a.bootstrap,
        peer=a.peer,
        pid=a.pid,
        allow=frozenset(a.allow),
        progress_s=a.progress,
    )


def main(argv: list[str] | None = None) -> int:
    options = parse_args(sys.argv[1:] if argv is None else argv)
    # SIGTERM unwinds like Ctrl-C, so a broker this run started is killed on the way out.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    print(f"sluice fuzz: seed {options.seed}, {options.frames} frames, target {options.target}")
    report = trio.run(run, options)
    print(report.summary())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
