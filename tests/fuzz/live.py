"""Fuzz a live broker process over TCP on its client and peer ports, then check it survived.

    python -m tests.fuzz.live --frames N --seed S [--target client|peer|both]
                              [--connections C] [--peer-connections P]

starts its own `sluice serve` (temporary data directory, `request_budget_bytes` 32 MiB,
`max_frame_bytes` 4 MiB) unless `--bootstrap`/`--peer` name a running one, and exits 0 when
every check passed, 1 otherwise (printing the seed and the command that replays the run).

**What is sent.** Several connections per port at once (default 8 client, 4 peer). Each
sends sessions of a drawn number of frames, reads whatever arrives meanwhile (a receiver task
per connection, so its socket never fills), and reconnects when the session ends (by its
own choice, or because the frames it sent make the broker close). Client frames: valid
requests of every API; request envelopes whose CBOR tree was damaged (`mutate.py`: values
of other types, integers at every range edge and bignums, lying lengths, tags, deep
nesting, duplicate keys, indefinite lengths, arrays of the wrong size) or whose envelope
fields are wrong (unknown API keys and versions, unreadable correlation ids, bad client ids,
bodies of another API); bit-flipped frames; produce requests with damaged record batches
(some with a recomputed CRC, so the header checks behind it are reached); frames of up to
`max_frame_bytes`; bad length prefixes (0, max + 1, 2**32 - 1, random); truncated frames
(then the connection goes on, so later frames land inside them, or closes); random bytes.
Peer connections: garbage, oversized frames, damaged hellos, the broker's own node id or a
foreign cluster id before the handshake; after a good HELLO (a fake broker id from a pool
of 8) valid and damaged RAFT frames (messages of all twelve types built with the real
encoders), broker heartbeats, frames of unexpected kinds, and the same framing damage.

**Replay.** Every frame is drawn from RNGs derived from the seed alone (one per client
connection slot; per peer frame, so nothing depends on the broker), lazily: the fuzzer's
memory stays constant however many frames. Raft messages must name the broker's incarnation,
which a fresh broker draws anew: they are drawn naming a placeholder, replaced by the real
one just before sending. So a run resends the same frames, in the same sessions, per
connection slot (only the interleaving across slots differs); the summary prints a digest of
all frames drawn, per port, to compare runs.

**Oracle.** Each connection runs a mirror of what the broker does with its bytes: the same
`FrameDecoder` and `decode_request` (client) or `peer_codec.decode_frame` (peer). So it knows
which frames must be answered, with which correlation id and, for a bad request, which error
code; where an error frame must precede the close (broken framing); where the broker must
close (undecodable frame, bad peer frame, failed handshake); and what the handshake answer
must be (HELLO_OK or REJECT). Answers arriving out of order, with another correlation id or
code, undecodable, missing, a close that should not happen or that does not come are
anomalies, and fail the run. A decoder raising anything but its own error type is reported
as a bug with the payload (deterministic: it is found locally). Valid requests that would
write to anything but the fuzzer's own topics, and peer frames naming the metadata group or
the checked topic's groups (unless `--raft-groups all`), are redrawn before sending.

**Checks after the run** (plus the anomalies above): the broker process is still running;
its peak RSS during the run <= the RSS before it + `request_budget_bytes` + `--rss-slack-mib`
(64 MiB: the broker's own state, allocator slack, RocksDB memtables of what the run writes);
a probe answered every ApiVersions request within `PROBE_TIMEOUT_S` throughout, and a normal
idempotent producer (acks=all) kept writing to the checked topic; every record acknowledged
before or during the run reads back with the same value at the same (partition, offset),
nothing else is in the checked topic and no value is there twice; a produce and fetch round
trip works afterwards; the broker lets go of every closed connection (its sockets return to
their count before the run within SOCKETS_RELEASED_S); it logged no error (a contained
exception is still a bug). `--allow CLASS` reports an anomaly class without failing on it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import itertools
import math
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
import zlib
from array import array
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cbor2
import trio

from broker.core.peer_codec import (
    HEARTBEAT,
    HEARTBEAT_OK,
    HELLO,
    HELLO_OK,
    MAX_INDEX,
    PEER_FRAME_BYTES,
    PEER_LIMITS,
    RAFT,
    REJECT,
    BrokerHeartbeat,
    Hello,
    PeerProtocolError,
    decode_frame,
    encode_hello,
)
from broker.runtime.peers import HELLO_FRAME_BYTES
from broker.wire.api import ApiKey
from broker.wire.errors import ErrorCode, WireError
from broker.wire.frames import FrameDecoder, encode_frame
from broker.wire.limits import MAX_FRAME_BYTES_CEILING, Limits, MiB
from broker.wire.messages import (
    ApiVersionsRequest,
    ApiVersionsResponse,
    CreateTopicsRequest,
    DeleteTopicsRequest,
    FetchRequest,
    ProduceRequest,
    Request,
)
from broker.wire.protocol import decode_request, decode_response, encode_request
from consumers import Admin, Consumer, ConsumerRecord, Producer
from consumers.errors import SluiceError
from tests.fuzz.corpus import FUZZ_TOPICS, MAX_FUZZ_PARTITIONS, ClientCorpus, PeerCorpus, tree
from tests.fuzz.mutate import HUGE_LENGTHS, Head, Indefinite, Mutator, Nest, Node, encode
from tests.integration.harness import BrokerProcess

CHECKED_TOPIC = "fz-checked"
"""Written only by the normal producers of this run; read back at the end."""
CHECKED_PARTITIONS = 3
RAFT_TOPIC = "fz-raft"
"""Its partition groups are what fake peers may send Raft messages to (`--raft-groups safe`)."""
RAFT_PARTITIONS = 2
MISSING_GROUP = 1_000_000
"""A group id no broker hosts."""
PEER_ID_BASE = 1000
PEER_ID_POOL = 8
"""Fake brokers claim ids PEER_ID_BASE .. + PEER_ID_POOL - 1 (a broker remembers each)."""

MAX_FRAME_BYTES = 4 * MiB
REQUEST_BUDGET_BYTES = 32 * MiB
BROKER_CONFIG: dict[str, object] = {
    "request_budget_bytes": REQUEST_BUDGET_BYTES,
    "max_frame_bytes": MAX_FRAME_BYTES,
}
RSS_SLACK_MIB = 64
PRELOAD = 3000
"""Records written to the checked topic before the fuzz starts."""

ANSWER_GRACE_S = 10.0
"""How long past its own allowance (a fetch's max wait, a write's timeout) an answer may be
late before it counts as missing; also the wait for a close that must come."""
DRAIN_CAP_S = 2.0
"""A session waits at most this long for answers that may legitimately take longer (a fetch
parked for its max wait); a request that may wait longer ends its session."""
SESSION_TIMEOUT_S = 120.0
PROBE_INTERVAL_S = 0.05
PROBE_TIMEOUT_S = 10.0
SAMPLE_INTERVAL_S = 0.05
LIVE_RATE = 100
"""Records a second the normal producer writes during the fuzz."""
SOCKETS_RELEASED_S = 5.0
SOCKET_SLACK = 2
"""Sockets the broker may hold beyond its baseline after the run (a dial in progress to a
fake broker a heartbeat registered)."""
MAX_DETAILS = 40
LATENCY_SAMPLES = 10_000
_reservoir = random.Random(0)
EXAMPLES_PER_CLASS = 3

RESPONSE_LIMITS = Limits(
    max_frame_bytes=MAX_FRAME_BYTES_CEILING, max_array_items=1_000_000, max_frame_items=50_000_000
)
HELLO_LIMITS = Limits(max_frame_bytes=HELLO_FRAME_BYTES)


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
class Target:
    """The broker under attack, as learned before fuzzing starts."""

    client: tuple[str, int]
    peer: tuple[str, int] | None
    node_id: int
    incarnation: int
    cluster_id: str | None
    raft_groups: tuple[int, ...]
    protected_groups: frozenset[int]
    max_frame_bytes: int


@dataclass
class Stats:
    """Counters of one run, bounded however long it runs: counts, EXAMPLES_PER_CLASS
    examples per anomaly class, a sample of at most LATENCY_SAMPLES probe latencies."""

    sent: Counter[str] = field(default_factory=Counter)
    answers: Counter[str] = field(default_factory=Counter)
    peer_received: Counter[str] = field(default_factory=Counter)
    events: Counter[str] = field(default_factory=Counter)
    anomalies: Counter[str] = field(default_factory=Counter)
    """Per class (see `anomaly`)."""
    examples: dict[str, list[str]] = field(default_factory=dict)
    probe_latencies: list[float] = field(default_factory=list)
    probe_answers: int = 0
    probe_max: float = 0.0
    live_acked: int = 0
    live_failed: int = 0
    rss_baseline: int = 0
    rss_peak: int = 0
    fds_baseline: int = 0
    fds_peak: int = 0
    sockets_baseline: int = 0
    cpu_s: float = 0.0
    sent_digest: str = ""
    fuzzer_cpu_s: float = 0.0
    fuzzer_rss_start: int = 0
    fuzzer_rss_end: int = 0

    def probe_sample(self, latency: float) -> None:
        """One probe answer (a reservoir sample keeps the percentiles honest)."""
        self.probe_answers += 1
        self.probe_max = max(self.probe_max, latency)
        if len(self.probe_latencies) < LATENCY_SAMPLES:
            self.probe_latencies.append(latency)
        else:
            i = _reservoir.randrange(self.probe_answers)
            if i < LATENCY_SAMPLES:
                self.probe_latencies[i] = latency

    def anomaly(self, cls: str, text: str) -> None:
        """Record something the broker did that it must not: `cls` names the kind (what
        `Options.allow` tolerates), `text` one instance (the first few are kept)."""
        self.anomalies[cls] += 1
        kept = self.examples.setdefault(cls, [])
        if len(kept) < EXAMPLES_PER_CLASS:
            kept.append(text)


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


# -- the model of the broker's reading ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the broker does with one request payload."""

    corr: int | None
    """The correlation id of its answer; None: no answer, the connection closes."""
    api: ApiKey | None = None
    """Set when the request is valid (its answer decodes as this API's response)."""
    request: Request | None = None
    code: ErrorCode | None = None
    """The error of a bad request (None: any code, for a valid request)."""
    latency: float = 0.0
    """How long the broker may legitimately hold the answer (a fetch's max wait, a write's
    timeout)."""
    bug: str | None = None
    """The decoder raised something other than WireError."""


def predict_request(payload: bytes, limits: Limits) -> Outcome:
    """The broker's `decode_request` applied to `payload`, as `server.py` acts on it."""
    try:
        header, request = decode_request(payload, limits)
    except WireError as e:
        return Outcome(e.correlation_id, code=e.code)
    except Exception as e:
        return Outcome(None, bug=f"decode_request raised {type(e).__name__}: {e}")
    latency = 0.0
    if isinstance(request, FetchRequest):
        latency = request.max_wait_ms / 1000
    elif isinstance(request, (ProduceRequest, CreateTopicsRequest, DeleteTopicsRequest)):
        latency = min(request.timeout_ms, 300_000) / 1000
    return Outcome(header.correlation_id, header.api_key, request, latency=latency)


def safe_request(request: Request | None) -> bool:
    """A valid request the run may send: writes only to the fuzzer's own topics, in bounds."""
    if isinstance(request, ProduceRequest):
        return all(t.name in FUZZ_TOPICS for t in request.topics)
    if isinstance(request, DeleteTopicsRequest):
        return all(n in FUZZ_TOPICS for n in request.names)
    if isinstance(request, CreateTopicsRequest):
        return all(
            t.name in FUZZ_TOPICS
            and t.partitions <= MAX_FUZZ_PARTITIONS
            and t.replication_factor <= 3
            for t in request.topics
        )
    return True


@dataclass(slots=True)
class Expect:
    """One answer a client connection must receive, in this order."""

    corr: int
    api: ApiKey | None
    code: ErrorCode | None
    latency: float
    frame: int
    """The frame's number in its connection slot's sequence (for reports)."""
    sent_at: float = 0.0


class ClientMirror:
    """The broker's view of one client connection: its FrameDecoder and decode_request."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.decoder = FrameDecoder(limits)
        self.closing = False
        """The broker will close the connection after the answers expected so far."""
        self.long = False
        """A request the broker may hold past DRAIN_CAP_S was sent."""
        self.bug: str | None = None

    def feed(self, data: bytes, hint: tuple[bytes, Outcome] | None, frame: int) -> list[Expect]:
        out: list[Expect] = []
        if self.closing:
            return out
        self.decoder.receive_data(data)
        while True:
            try:
                payload = self.decoder.next_frame()
            except WireError as e:  # broken framing: an error frame (correlation id 0), close
                out.append(Expect(0, None, e.code, 0.0, frame))
                self.closing = True
                return out
            if payload is None:
                return out
            if hint is not None and payload == hint[0]:
                outcome = hint[1]
            else:
                outcome = predict_request(payload, self.limits)
            if outcome.corr is None:
                self.closing = True
                self.bug = outcome.bug
                return out
            out.append(Expect(outcome.corr, outcome.api, outcome.code, outcome.latency, frame))
            if outcome.latency > DRAIN_CAP_S:
                self.long = True


class PeerMirror:
    """The broker's view of one peer connection: handshake, then link (`peers.py`)."""

    def __init__(self, node_id: int, cluster_id: str | None) -> None:
        self.node_id = node_id
        self.cluster_id = cluster_id
        self.decoder = FrameDecoder(HELLO_LIMITS)
        self.linked = False
        self.closing = False
        self.answer: int | None = None
        """HELLO_OK or REJECT: what the broker answers the hello with."""
        self.bug: str | None = None

    def feed(self, data: bytes) -> None:
        if self.closing:
            return
        self.decoder.receive_data(data)
        while not self.closing:
            try:
                payload = self.decoder.next_frame()
            except WireError:
                self.closing = True
                return
            if payload is None:
                return
            try:
                kind, body = decode_frame(payload)
            except PeerProtocolError:
                self.closing = True
                return
            except Exception as e:
                self.bug = f"decode_frame raised {type(e).__name__}: {e} on {payload[:64].hex()}"
                self.closing = True
                return
            if self.linked:
                continue
            if kind != HELLO or not isinstance(body, Hello):
                self.closing = True
            elif body.node_id == self.node_id or (
                self.cluster_id and body.cluster_id and body.cluster_id != self.cluster_id
            ):
                self.answer = REJECT
                self.closing = True
            else:
                self.answer = HELLO_OK
                self.linked = True
                self.decoder.set_limits(PEER_LIMITS)


# -- frame generators -----------------------------------------------------------------------------


@dataclass(slots=True)
class Planned:
    """One frame (or what stands for one: junk, a truncated frame) and how to send it."""

    kind: str
    data: bytes
    hint: tuple[bytes, Outcome] | None = None
    then_close: bool = False
    """The fuzzer closes the connection after it."""
    pieces: int = 1
    """Sent in this many writes."""


def _weights(table: tuple[tuple[str, float], ...]) -> tuple[list[str], list[float]]:
    names = [n for n, _ in table]
    return names, list(itertools.accumulate(w for _, w in table))


CLIENT_KINDS = _weights(
    (
        ("valid", 12),
        ("tree", 30),
        ("envelope", 8),
        ("bitflip", 12),
        ("batch", 7),
        ("body", 7),
        ("deep", 3),
        ("length", 3),
        ("truncated", 6),
        ("junk", 4),
        ("big", 0.3),
    )
)
PEER_KINDS = _weights(
    (
        ("raft", 30),
        ("raft-tree", 22),
        ("heartbeat", 8),
        ("heartbeat-tree", 5),
        ("other-kind", 4),
        ("bitflip", 8),
        ("deep", 3),
        ("length", 2),
        ("truncated", 4),
        ("junk", 3),
    )
)
HELLO_KINDS = _weights(
    (
        ("hello", 75),
        ("hello-tree", 8),
        ("hello-bitflip", 4),
        ("hello-own-id", 2),
        ("hello-cluster", 2),
        ("raft-first", 2),
        ("hello-oversize", 2),
        ("hello-truncated", 2),
        ("junk-first", 3),
    )
)


ENVELOPE_KEYS = ("api_key", "api_version", "correlation_id", "client_id", "body")


class ClientFrames:
    """The frames of one client connection slot, drawn lazily from its RNG."""

    def __init__(self, rng: random.Random, limits: Limits) -> None:
        self.rng = rng
        self.corpus = ClientCorpus(rng, (CHECKED_TOPIC, RAFT_TOPIC), RAFT_TOPIC)
        self.mutator = Mutator(rng)
        self.limits = limits
        self.corr = rng.randrange(1 << 31)
        self.client_id = rng.choice((None, f"fuzz-{rng.randrange(1000)}"))
        self.redrawn = 0
        self.frames = 0
        """Frames drawn so far (each is sent, in order)."""

    def session_length(self) -> int:
        return 1 + int(self.rng.expovariate(1 / 40))

    def _next_corr(self) -> int:
        self.corr = self.corr + 1 if self.corr < (1 << 31) - 1 else -(1 << 31)
        return self.corr

    def _envelope(self, request: Request | None = None) -> list[Node]:
        request = request or self.corpus.request()
        return [int(request.API_KEY), 0, self._next_corr(), self.client_id, request.to_body()]

    def next(self) -> Planned:
        """The next frame; valid requests that would write outside FUZZ_TOPICS are redrawn."""
        self.frames += 1
        for _ in range(16):
            p = self._draw()
            if p.hint is None or safe_request(p.hint[1].request):
                if self.rng.random() < 0.1:
                    p.pieces = self.rng.randint(2, 5)
                return p
            self.redrawn += 1
        request = ApiVersionsRequest()
        return self._frame("valid", encode_request(request, self._next_corr(), self.client_id))

    def _frame(self, kind: str, frame: bytes) -> Planned:
        payload = frame[4:]
        return Planned(kind, frame, (payload, predict_request(payload, self.limits)))

    def _payload(self, kind: str, payload: bytes) -> Planned:
        return self._frame(kind, encode_frame(payload))

    def _draw(self) -> Planned:
        r = self.rng
        m = self.mutator
        kind = r.choices(CLIENT_KINDS[0], cum_weights=CLIENT_KINDS[1])[0]
        if kind == "valid":
            req = self.corpus.request()
            return self._frame(kind, encode_request(req, self._next_corr(), self.client_id))
        if kind == "tree":  # mostly inside the body, so the broker can name the request
            env = self._envelope()
            if r.random() < 0.8:
                env[4] = m.mutate_tree(env[4], r.randint(1, 3))
            else:
                env = m.mutate_tree(env, r.randint(1, 3))
            return self._payload(kind, encode(env))
        if kind == "envelope":
            return self._payload(kind, encode(self._bad_envelope()))
        if kind == "bitflip":
            payload = encode_request(self.corpus.request(), self._next_corr(), self.client_id)[4:]
            return self._payload(kind, m.mutate_bytes(payload, r.randint(1, 2)))
        if kind == "batch":
            env = self._envelope(self.corpus.produce())
            part = env[4]["topics"][0]["partitions"][0]
            part["batch"] = self._bad_batch(part["batch"])
            return self._payload(kind, encode(env))
        if kind == "body":
            env = self._envelope()
            env[4] = m.random_value(3) if r.random() < 0.6 else self.corpus.request().to_body()
            return self._payload(kind, encode(env))
        if kind == "deep":
            env = self._envelope()
            inner: Node = r.choice((env[4], 0, []))
            if r.random() < 0.85:
                env[4] = Nest(r.choice((15, 16, 17, 1000, 200_000)), inner, r.random() < 0.3)
            else:
                env[4] = m.huge_container()
            return self._payload(kind, encode(env))
        if kind == "length":
            n = r.choice(
                (0, self.limits.max_frame_bytes + 1, 2**32 - 1,
                 r.randint(self.limits.max_frame_bytes + 1, 2**32 - 1))
            )  # fmt: skip
            return Planned(kind, struct.pack(">I", n) + r.randbytes(r.randint(0, 64)))
        if kind == "truncated":
            whole = self._draw_whole()
            return Planned(kind, whole[: r.randint(1, len(whole) - 1)], then_close=r.random() < 0.5)
        if kind == "junk":
            junk = r.randbytes(r.randint(1, 512))
            return Planned(kind, junk if r.random() < 0.5 else encode_frame(junk))
        # big: a produce request as large as a frame may be, its batch random bytes
        env = self._envelope(self.corpus.produce())
        size = min(
            self.limits.max_frame_bytes,
            int(math.exp(r.uniform(math.log(64 * 1024), math.log(self.limits.max_frame_bytes)))),
        )
        overhead = len(encode(env)) + 8
        env[4]["topics"][0]["partitions"][0]["batch"] = r.randbytes(max(1, size - overhead))
        return self._payload(kind, encode(env))

    def _draw_whole(self) -> bytes:
        if self.rng.random() < 0.5:
            return encode_request(self.corpus.request(), self._next_corr(), self.client_id)
        return encode_frame(encode(self.mutator.mutate_tree(self._envelope())))

    def _bad_envelope(self) -> Node:
        r = self.rng
        m = self.mutator
        env = self._envelope()
        op = r.randrange(8)
        if op == 0:
            env[0] = r.choice((-1, 9, 10, 99, 255, 2**15 - 1, 2**15, 2**16, m.random_int()))
        elif op == 1:
            env[1] = r.choice((1, -1, 2, 2**15 - 1, 2**15, m.random_int()))
        elif op == 2:
            env[2] = r.choice((2**31, -(2**31) - 1, 2**64 - 1, "1", None, 1.0, [1], m.random_int()))
        elif op == 3:
            env[3] = r.choice(
                (
                    "",
                    "x" * 257,
                    5,
                    b"id",
                    Head(3, 2, 0, b"\xc3\x28"),
                    "\x00",
                    ["a"],
                    m.random_text(),
                )
            )
        elif op == 4:
            del env[r.randrange(5)]
        elif op == 5:
            env.insert(r.randint(0, 5), m.random_value(1))
        elif op == 6:
            return r.choice(
                (
                    dict(zip(ENVELOPE_KEYS, env, strict=False)),
                    Indefinite(4, tuple(env)),
                    [env],
                    env[2],
                )
            )
        else:
            env[4] = r.choice((None, [], "body", 0, b"", [env[4]]))
        return env

    def _bad_batch(self, batch: bytes) -> Node:
        r = self.rng
        op = r.randrange(5)
        if op == 0:
            return self.mutator.mutate_bytes(batch, r.randint(1, 3))
        if op == 1:  # damage the header or records behind a valid CRC
            body = bytearray(batch)
            for _ in range(r.randint(1, 4)):
                i = (
                    r.randrange(6, min(len(body), 48))
                    if r.random() < 0.7
                    else r.randrange(6, len(body))
                )
                body[i] = r.choice((0x00, 0xFF, 0x7F, 0x80, r.randrange(256)))
            body[2:6] = zlib.crc32(bytes(body[6:])).to_bytes(4, "big")
            return bytes(body)
        if op == 2:
            return batch[: r.randint(0, len(batch) - 1)]
        if op == 3:
            return batch + r.randbytes(r.randint(1, 64))
        return self.mutator.random_value(1)


def placeholder(incarnation: int) -> int:
    """A fixed stand-in for `incarnation` whose CBOR encoding has the same length."""
    return {1: 7, 2: 0x5A, 3: 0x5A5A, 5: 0x5A5A5A5A}.get(
        len(cbor2.dumps(incarnation)), 0x5A5A5A5A5A5A5A5A
    )


class PeerFrames:
    """The frames of one peer connection slot, drawn lazily. It poses as the brokers `ids`
    (the fake ids of this slot only, so slots never replace each other's links).

    Raft messages must name the broker's incarnation, which differs between fresh brokers:
    frames are drawn naming `placeholder(incarnation)` instead (same encoded length), and
    `wire` puts the real one in just before sending, so what is drawn (and digested) is the
    same against any fresh broker."""

    def __init__(self, name: str, target: Target, ids: tuple[int, ...], safe: bool) -> None:
        self.name = name
        self.sessions = random.Random(name)
        self.target = target
        self.ids = ids
        self.safe = safe
        self.placeholder = placeholder(target.incarnation)
        self._placeholder_bytes = cbor2.dumps(self.placeholder)
        self._incarnation_bytes = cbor2.dumps(target.incarnation)
        self.broker = (target.node_id, self.placeholder)
        self.groups = (
            target.raft_groups if safe else (*target.raft_groups, *target.protected_groups)
        )
        self.redrawn = 0
        self.frames = 0
        self._start_frame()

    def wire(self, data: bytes) -> bytes:
        """The bytes to send for a drawn frame: the broker's real incarnation in place."""
        return data.replace(self._placeholder_bytes, self._incarnation_bytes)

    def _start_frame(self) -> None:
        self.rng = rng = random.Random(f"{self.name}:{self.frames}")
        self.corpus = PeerCorpus(rng, self.broker, self.groups)
        self.mutator = Mutator(rng)

    def session_length(self) -> int:
        return int(self.sessions.expovariate(1 / 30))

    def member(self) -> tuple[int, int]:
        return self.sessions.choice(self.ids), self.sessions.choice((1, 2))

    def handshake(self, me: tuple[int, int]) -> Planned:
        """The frame that opens the connection (usually a good hello)."""
        self.frames += 1
        self._start_frame()
        for _ in range(16):
            p = self._draw_hello(me)
            if self._hello_ok(p.data):
                return p
            self.redrawn += 1
        return Planned("hello", encode_frame(self.corpus.hello(me)))

    def _draw_hello(self, me: tuple[int, int]) -> Planned:
        r = self.rng
        kind = r.choices(HELLO_KINDS[0], cum_weights=HELLO_KINDS[1])[0]
        hello = self.corpus.hello(me)
        if kind == "hello":
            return Planned(kind, encode_frame(hello))
        if kind == "hello-tree":
            return Planned(kind, encode_frame(encode(self.mutator.mutate_tree(tree(hello)))))
        if kind == "hello-bitflip":
            return Planned(kind, encode_frame(self.mutator.mutate_bytes(hello)))
        if kind == "hello-own-id":
            own = (self.target.node_id, me[1])
            return Planned(kind, encode_frame(self.corpus.hello(own)))
        if kind == "hello-cluster":
            return Planned(kind, encode_frame(self.corpus.hello(me, "not-this-cluster")))
        if kind == "raft-first":
            return Planned(kind, encode_frame(self.corpus.raft(me)))
        if kind == "hello-oversize":
            n = r.choice((HELLO_FRAME_BYTES + 1, 2**20, 2**32 - 1))
            return Planned(kind, struct.pack(">I", n) + hello)
        if kind == "hello-truncated":
            whole = encode_frame(hello)
            return Planned(kind, whole[: r.randint(1, len(whole) - 1)], then_close=True)
        return Planned(kind, r.randbytes(r.randint(1, 256)))

    def _hello_ok(self, data: bytes) -> bool:
        """A hello that would link must claim an id of this slot (a broker remembers every
        id it links with)."""
        if len(data) < 5:
            return True
        try:
            kind, body = decode_frame(data[4:])
        except Exception:
            return True
        return not (
            kind == HELLO
            and isinstance(body, Hello)
            and body.node_id != self.target.node_id
            and body.node_id not in self.ids
        )

    def next(self, me: tuple[int, int]) -> Planned:
        """The next frame on a linked connection; in safe mode, frames that would reach the
        metadata group or the checked topic's groups are redrawn."""
        self.frames += 1
        self._start_frame()
        for _ in range(16):
            p = self._draw(me)
            if not self.safe or self._harmless(p.data):
                return p
            self.redrawn += 1
        return Planned("raft", encode_frame(self.corpus.raft(me)))

    def _harmless(self, data: bytes) -> bool:
        if len(data) < 5:
            return True
        try:
            kind, body = decode_frame(data[4:])
        except Exception:
            return True
        protected = self.target.protected_groups
        if kind == RAFT and isinstance(body, list):
            return not any(g in protected for g, _ in body)
        if kind == HEARTBEAT and isinstance(body, BrokerHeartbeat):
            named = [g for g, _, _ in body.leaders] + [g for g, _, _ in body.caught_up]
            return not any(g in protected for g in named)
        return True

    def _draw(self, me: tuple[int, int]) -> Planned:
        r = self.rng
        m = self.mutator
        c = self.corpus
        kind = r.choices(PEER_KINDS[0], cum_weights=PEER_KINDS[1])[0]
        if kind == "raft":
            return Planned(kind, encode_frame(c.raft(me)))
        if kind == "raft-tree":
            return Planned(
                kind, encode_frame(encode(m.mutate_tree(tree(c.raft(me)), r.randint(1, 3))))
            )
        if kind == "heartbeat":
            return Planned(kind, encode_frame(c.heartbeat(me)))
        if kind == "heartbeat-tree":
            return Planned(kind, encode_frame(encode(m.mutate_tree(tree(c.heartbeat(me))))))
        if kind == "other-kind":
            return Planned(kind, encode_frame(c.other(me)))
        if kind == "bitflip":
            return Planned(kind, encode_frame(m.mutate_bytes(c.raft(me), r.randint(1, 2))))
        if kind == "deep":
            t = tree(c.raft(me))
            if r.random() < 0.85:
                t[1] = Nest(r.choice((1, 10, 15, 17, 10_000)), t[1], r.random() < 0.3)
            else:
                t[1] = m.huge_container()
            return Planned(kind, encode_frame(encode(t)))
        if kind == "length":
            n = r.choice((0, PEER_FRAME_BYTES + 1, 2**32 - 1, r.choice(HUGE_LENGTHS) % 2**32))
            return Planned(kind, struct.pack(">I", n) + r.randbytes(r.randint(0, 64)))
        if kind == "truncated":
            whole = encode_frame(c.raft(me))
            return Planned(kind, whole[: r.randint(1, len(whole) - 1)], then_close=r.random() < 0.5)
        junk = r.randbytes(r.randint(1, 512))
        return Planned(kind, junk if r.random() < 0.5 else encode_frame(junk))


# -- connections ----------------------------------------------------------------------------------


class _Conn:
    """One fuzz connection: the sender's expectations, a receiver task, condition waits."""

    def __init__(self, stream: trio.SocketStream, stats: Stats, where: str) -> None:
        self.stream = stream
        self.stats = stats
        self.where = where
        self.expects: deque[Expect] = deque()
        self.eof = False
        self.we_closed = False
        self.close_predicted = False
        self.unverifiable = False
        """Answers may legitimately never come (a long wait, a decoder bug)."""
        self.reset = False
        self._changed = trio.Event()

    def changed(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_until(self, cond: Callable[[], bool], deadline: float) -> bool:
        while True:
            event = self._changed
            if cond():
                return True
            if trio.current_time() >= deadline:
                return False
            with trio.move_on_at(deadline):
                await event.wait()

    async def send(self, data: bytes, pieces: int) -> bool:
        """False when the broker has closed the connection."""
        try:
            if pieces <= 1 or len(data) < pieces:
                await self.stream.send_all(data)
            else:
                step = -(-len(data) // pieces)
                for i in range(0, len(data), step):
                    await self.stream.send_all(data[i : i + step])
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        return True

    async def receive(self, on_frame: Callable[[bytes], None]) -> None:
        decoder = FrameDecoder(RESPONSE_LIMITS)
        try:
            while True:
                data = await self.stream.receive_some(1 << 16)
                if not data:
                    break
                decoder.receive_data(data)
                while (frame := decoder.next_frame()) is not None:
                    on_frame(frame)
        except trio.BrokenResourceError:
            self.reset = True  # ECONNRESET: the broker closed with our bytes unread
        except trio.ClosedResourceError:
            pass  # we closed it
        except WireError as e:
            self.stats.anomaly(
                "broken-answer-framing",
                f"{self.where}: the broker sent broken framing: {e.message}",
            )
        self.eof = True
        if not self.we_closed:
            self.stats.events["closed-by-broker"] += 1
        self.changed()


def _undecodable_class(message: str) -> str:
    """The anomaly class of an answer the client library could not decode."""
    if "exceeds" in message:
        return "answer-text-over-limit"  # a string or container past the decoder's limits
    if message.startswith("brokers["):
        return "bad-broker-in-answer"  # a registered broker the answer schema refuses
    return "undecodable-answer"


class ClientConn(_Conn):
    def on_frame(self, payload: bytes) -> None:
        stats = self.stats
        if not self.expects:
            stats.anomaly(
                "unasked-answer", f"{self.where}: an answer nobody asked for: {payload[:48].hex()}"
            )
            return
        e = self.expects.popleft()
        self.changed()
        try:
            env = decode_response(payload, e.api or ApiKey.API_VERSIONS, RESPONSE_LIMITS)
        except WireError as err:
            stats.anomaly(
                _undecodable_class(err.message),
                f"{self.where}: frame {e.frame}: undecodable answer: {err.message}",
            )
            return
        stats.answers[env.error.name] += 1
        if env.correlation_id != e.corr:
            stats.anomaly(
                "wrong-correlation-id",
                f"{self.where}: frame {e.frame}: answer has correlation id {env.correlation_id}, "
                f"expected {e.corr} (answers out of order?)",
            )
        elif e.code is not None and env.error is not e.code:
            stats.anomaly(
                "wrong-error-code",
                f"{self.where}: frame {e.frame}: answered {env.error.name} ({env.message}), "
                f"expected {e.code.name}",
            )

    def check_eof(self) -> None:
        if self.we_closed or self.unverifiable:
            return
        if self.expects or not self.close_predicted:
            missing = [e.frame for e in self.expects]
            self.stats.anomaly(
                # A reset that destroyed answers the broker had sent: it closed with bytes of
                # ours unread, so its kernel sent RST and dropped what it had not delivered.
                "reset-lost-answers" if self.reset and self.close_predicted else "closed-early",
                f"{self.where}: {'reset' if self.reset else 'closed'} by the broker with "
                f"{len(missing)} answers missing (frames {missing[:5]}), close predicted: "
                f"{self.close_predicted}",
            )

    def _head_moved(self, head: Expect) -> Callable[[], bool]:
        return lambda: self.eof or not self.expects or self.expects[0] is not head

    async def drain(self) -> None:
        """Wait for every expected answer (each within its allowance), then for the close
        the broker owes. An answer that may legitimately take longer than DRAIN_CAP_S (a
        parked fetch) is waited for that long, then it and those behind it are given up
        (counted, not verified)."""
        give_up = trio.current_time() + DRAIN_CAP_S
        while self.expects and not self.eof:
            head = self.expects[0]
            due = head.sent_at + head.latency + ANSWER_GRACE_S
            if due > give_up and (self.unverifiable or head.latency > DRAIN_CAP_S):
                if not await self.wait_until(self._head_moved(head), give_up):
                    self.stats.events["answers-abandoned"] += len(self.expects)
                    self.unverifiable = True
                    return
            elif not await self.wait_until(self._head_moved(head), due):
                self.stats.anomaly(
                    "no-answer",
                    f"{self.where}: frame {head.frame}: no answer (correlation id {head.corr}) "
                    f"within {head.latency + ANSWER_GRACE_S:.1f} s",
                )
                self.unverifiable = True
                return
        if self.close_predicted and not self.unverifiable:
            deadline = trio.current_time() + ANSWER_GRACE_S
            if not await self.wait_until(lambda: self.eof, deadline):
                self.stats.anomaly(
                    "not-closed", f"{self.where}: the broker did not close the connection"
                )


class PeerConn(_Conn):
    def __init__(self, stream: trio.SocketStream, stats: Stats, where: str, node_id: int) -> None:
        super().__init__(stream, stats, where)
        self.node_id = node_id
        self.answer: int | None = None
        self.received = 0

    def on_frame(self, payload: bytes) -> None:
        self.received += 1
        try:
            kind, body = decode_frame(payload)
        except PeerProtocolError as e:
            cls = "term-past-max-index" if _above_max_index(payload) else "undecodable-peer-frame"
            self.stats.anomaly(cls, f"{self.where}: the broker sent an undecodable peer frame: {e}")
            return
        names = {
            HELLO_OK: "HELLO_OK", REJECT: "REJECT", RAFT: "RAFT", HEARTBEAT: "HEARTBEAT",
            HEARTBEAT_OK: "HEARTBEAT_OK",
        }  # fmt: skip
        self.stats.peer_received[names.get(kind, f"kind-{kind}")] += 1
        if self.received == 1:
            self.answer = kind
            if kind == HELLO_OK and not (isinstance(body, Hello) and body.node_id == self.node_id):
                self.stats.anomaly(
                    "wrong-hello-answer", f"{self.where}: HELLO_OK from the wrong broker: {body!r}"
                )
            self.changed()


# -- the run ----------------------------------------------------------------------------------


def _above_max_index(payload: bytes) -> bool:
    """Whether a RAFT frame holds a message whose term is above peer_codec.MAX_INDEX (a
    term the broker's own decoder refuses)."""
    try:
        kind, batch = cbor2.loads(payload)
        return kind == RAFT and any(type(m[3]) is int and m[3] > MAX_INDEX for _, m in batch)
    except Exception:
        return False


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
        while gen.frames < quota:
            n = min(quota - gen.frames - 1, gen.session_length())
            me = gen.member()
            try:
                stream = await trio.open_tcp_stream(*self.target.peer)
            except OSError as e:
                self.stats.anomaly("cannot-connect", f"peer {k}: cannot connect: {e}")
                return
            conn = PeerConn(stream, self.stats, f"peer {k}", self.target.node_id)
            with trio.move_on_after(SESSION_TIMEOUT_S) as session:
                digest.update(b"session")
                await self._peer_session(conn, gen, me, n, digest)
            if session.cancelled_caught:
                self.stats.anomaly("session-stuck", f"peer {k}: stuck for {SESSION_TIMEOUT_S} s")
            conn.we_closed = True
            await trio.aclose_forcefully(stream)
        self.redrawn += gen.redrawn
        self.digests[role, k] = digest.digest()

    async def _peer_session(
        self, conn: PeerConn, gen: PeerFrames, me: tuple[int, int], n: int, digest: hashlib.blake2b
    ) -> None:
        """A handshake frame, then (when it links) up to `n` frames; then check the hello's
        answer and the close."""
        mirror = PeerMirror(self.target.node_id, self.target.cluster_id)
        stats = self.stats
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.receive, conn.on_frame)
            p = gen.handshake(me)
            for i in range(n + 1):
                if i:
                    p = gen.next(me)
                wire = gen.wire(p.data)
                mirror.feed(wire)
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


# -- normal clients, probes, samples --------------------------------------------------------------


class AckLog:
    """What a normal producer had acknowledged: value number -> (partition, offset), packed
    (9 bytes a record). Values are `prefix:number`, unique in the run."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix.encode()
        self.partition = array("b")
        self.offset = array("q")

    def value(self, i: int) -> bytes:
        return self.prefix + b":%d" % i

    def next_number(self) -> int:
        self.partition.append(-1)
        self.offset.append(-1)
        return len(self.offset) - 1

    def acked(self, i: int, partition: int, offset: int) -> None:
        self.partition[i] = partition
        self.offset[i] = offset

    def failed(self, i: int) -> None:
        self.partition[i] = -2  # the outcome is unknown: the record may or may not be there


async def preload(bootstrap: str, log: AckLog, n: int) -> None:
    async with Producer(bootstrap, linger_ms=5) as p:
        deliveries = []
        for _ in range(n):
            i = log.next_number()
            deliveries.append(
                (i, await p.send(CHECKED_TOPIC, log.value(i), partition=i % CHECKED_PARTITIONS))
            )
        await p.flush()
        for i, d in deliveries:
            md = d.result()
            log.acked(i, md.partition, md.offset)


async def live_producer(bootstrap: str, log: AckLog, stats: Stats, stop: trio.Event) -> None:
    """A normal idempotent producer writing one record at a time throughout the run, at most
    LIVE_RATE a second (each acknowledgement is a synced write the broker's loop waits for:
    flat out, it would halve the fuzz rate)."""
    async with Producer(bootstrap, linger_ms=1) as p:
        next_at = trio.current_time()
        while not stop.is_set():
            with trio.move_on_at(next_at):
                await stop.wait()
            next_at = max(next_at + 1 / LIVE_RATE, trio.current_time())
            i = log.next_number()
            try:
                md = await p.send_and_wait(
                    CHECKED_TOPIC, log.value(i), partition=i % CHECKED_PARTITIONS
                )
            except SluiceError as e:
                log.failed(i)
                stats.live_failed += 1
                stats.anomaly("producer-failed", f"record {i}: {type(e).__name__}: {e}")
                continue
            log.acked(i, md.partition, md.offset)
            stats.live_acked += 1


async def probe(host: str, port: int, stats: Stats, stop: trio.Event) -> None:
    """ApiVersions on a connection of its own, every PROBE_INTERVAL_S, each answered within
    PROBE_TIMEOUT_S (a normal client is served while the fuzz runs)."""
    stream = await trio.open_tcp_stream(host, port)
    decoder = FrameDecoder(RESPONSE_LIMITS)
    try:
        for corr in itertools.count(1):
            if stop.is_set():
                return
            started = trio.current_time()
            with trio.move_on_after(PROBE_TIMEOUT_S) as waited:
                await stream.send_all(encode_request(ApiVersionsRequest(), corr, "fuzz-probe"))
                frame = None
                while frame is None:
                    frame = decoder.next_frame()
                    if frame is None:
                        data = await stream.receive_some(1 << 16)
                        if not data:
                            stats.anomaly("probe", "the broker closed the probe's connection")
                            return
                        decoder.receive_data(data)
            if waited.cancelled_caught:
                stats.anomaly("probe", f"no ApiVersions answer within {PROBE_TIMEOUT_S} s")
                return
            assert frame is not None
            env = decode_response(frame, ApiKey.API_VERSIONS, RESPONSE_LIMITS)
            if env.correlation_id != corr or env.error is not ErrorCode.NONE:
                stats.anomaly("probe", f"bad answer {env}")
            stats.probe_sample(trio.current_time() - started)
            with trio.move_on_after(PROBE_INTERVAL_S):
                await stop.wait()
    finally:
        await trio.aclose_forcefully(stream)


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def socket_count(pid: int) -> int:
    """Open sockets of a process (listeners and connections)."""
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):  # closed meanwhile
            n += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
    return n


async def sockets_released(pid: int, baseline: int, stats: Stats) -> None:
    """Once every fuzz connection is closed, the broker must let go of them: its sockets
    return to what it held before the run (give or take SOCKET_SLACK) within
    SOCKETS_RELEASED_S. Polls /proc (there is no event to wait for)."""
    deadline = trio.current_time() + SOCKETS_RELEASED_S
    while (held := socket_count(pid)) > baseline + SOCKET_SLACK:
        if trio.current_time() >= deadline:
            stats.anomaly(
                "connections-held",
                f"the broker holds {held} sockets, {baseline} before the run, "
                f"{SOCKETS_RELEASED_S:.0f} s after every fuzz connection closed",
            )
            return
        await trio.sleep(0.1)


async def budgets_given_back(broker: BrokerProcess) -> str | None:
    """Once every connection is closed, the broker's request and peer byte budgets are back
    at zero (room taken and never given back would, over time, stop it reading at all)."""
    deadline = trio.current_time() + SOCKETS_RELEASED_S
    while True:
        st = await trio.to_thread.run_sync(broker.stats)
        held = (st["server"]["budget_in_use"], st["peers"]["budget_in_use"])
        if held == (0, 0):
            return None
        if trio.current_time() >= deadline:
            return (
                f"byte budgets not given back {SOCKETS_RELEASED_S:.0f} s after every "
                f"connection closed: requests {held[0]} bytes, peers {held[1]} bytes"
            )
        await trio.sleep(0.1)


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


async def sampler(pid: int, stats: Stats, stop: trio.Event) -> None:
    while not stop.is_set():
        try:
            stats.rss_peak = max(stats.rss_peak, rss_bytes(pid))
            stats.fds_peak = max(stats.fds_peak, fd_count(pid))
        except OSError:
            return  # the process is gone: the run's checks report it
        with trio.move_on_after(SAMPLE_INTERVAL_S):
            await stop.wait()


# -- setup and checks ---------------------------------------------------------------------------


async def learn_peer_identity(peer: tuple[str, int]) -> tuple[int, int, str | None]:
    """The broker's (node id, incarnation, cluster id), from the HELLO_OK it gives a fake
    broker (the first id of the pool)."""
    hello = Hello(None, PEER_ID_BASE, 1, "127.0.0.1:1", False)
    stream = await trio.open_tcp_stream(*peer)
    try:
        with trio.fail_after(10):
            await stream.send_all(encode_frame(encode_hello(hello)))
            decoder = FrameDecoder(Limits(max_frame_bytes=PEER_FRAME_BYTES))
            while (frame := decoder.next_frame()) is None:
                data = await stream.receive_some(1 << 16)
                if not data:
                    raise RuntimeError("the broker closed the peer handshake")
                decoder.receive_data(data)
        kind, body = decode_frame(frame)
        if kind != HELLO_OK or not isinstance(body, Hello):
            raise RuntimeError(f"peer handshake refused: {kind} {body!r}")
        return body.node_id, body.incarnation, body.cluster_id
    finally:
        await trio.aclose_forcefully(stream)


async def api_versions(host: str, port: int) -> ApiVersionsResponse:
    stream = await trio.open_tcp_stream(host, port)
    try:
        with trio.fail_after(10):
            await stream.send_all(encode_request(ApiVersionsRequest(), 1, "fuzz-setup"))
            decoder = FrameDecoder(RESPONSE_LIMITS)
            while (frame := decoder.next_frame()) is None:
                data = await stream.receive_some(1 << 16)
                if not data:
                    raise RuntimeError("the broker closed the connection")
                decoder.receive_data(data)
        body = decode_response(frame, ApiKey.API_VERSIONS).body
        assert isinstance(body, ApiVersionsResponse)
        return body
    finally:
        await trio.aclose_forcefully(stream)


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


async def read_back(bootstrap: str, logs: list[AckLog]) -> list[str]:
    """Every acknowledged record at its (partition, offset) with its value; nothing foreign
    in the checked topic; no value twice."""
    problems: list[str] = []
    by_prefix = {log.prefix: log for log in logs}
    seen = {log.prefix: bytearray(len(log.offset)) for log in logs}
    async with Admin(bootstrap) as admin:
        ends = {
            p.partition: p.high_watermark
            for p in (await admin.describe_topic(CHECKED_TOPIC)).partitions
        }
    async with Consumer(bootstrap, fetch_max_wait_ms=100) as consumer:
        tps = [(CHECKED_TOPIC, p) for p in range(CHECKED_PARTITIONS)]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        positions = dict.fromkeys(range(CHECKED_PARTITIONS), 0)
        with trio.move_on_after(60) as reading:
            while any(positions[p] < (ends[p] or 0) for p in positions):
                for r in await consumer.poll(timeout=1.0):
                    positions[r.partition] = r.offset + 1
                    prefix, _, number = (r.value or b"").partition(b":")
                    log = by_prefix.get(prefix)
                    if log is None or not number.isdigit() or int(number) >= len(log.offset):
                        problems.append(f"foreign record at {r.partition}/{r.offset}: {r.value!r}")
                        continue
                    i = int(number)
                    if seen[prefix][i]:
                        problems.append(
                            f"{r.value!r} read twice (again at {r.partition}/{r.offset})"
                        )
                    seen[prefix][i] = 1
                    want = (log.partition[i], log.offset[i])
                    if want[0] >= 0 and want != (r.partition, r.offset):
                        problems.append(
                            f"{r.value!r} acknowledged at {want[0]}/{want[1]}, "
                            f"read at {r.partition}/{r.offset}"
                        )
        if reading.cancelled_caught:
            problems.append(f"read-back stalled at {positions}, high watermarks {ends}")
    for log in logs:
        lost = [
            i for i in range(len(log.offset)) if log.partition[i] >= 0 and not seen[log.prefix][i]
        ]
        if lost:
            i = lost[0]
            problems.append(
                f"{len(lost)} acknowledged {log.prefix.decode()} records lost, e.g. "
                f"{log.value(i)!r} at {log.partition[i]}/{log.offset[i]}"
            )
    return problems[:MAX_DETAILS]


async def round_trip(bootstrap: str) -> str | None:
    value = b"round-trip:%d" % time.time_ns()
    try:
        with trio.fail_after(60):
            async with Producer(bootstrap, linger_ms=0) as p:
                md = await p.send_and_wait(RAFT_TOPIC, value, partition=0)
            async with Consumer(bootstrap) as c:
                c.assign([(RAFT_TOPIC, 0)])
                c.seek((RAFT_TOPIC, 0), md.offset)
                records: list[ConsumerRecord] = []
                while not records:
                    records = await c.poll(timeout=1.0)
                got = records[0]
                if got.value != value:
                    return f"round trip read {got!r} at offset {md.offset}, wrote {value!r}"
    except (SluiceError, trio.TooSlowError) as e:
        return f"round trip failed: {type(e).__name__}: {e}"
    return None


def log_errors(text: str) -> list[str]:
    """The broker's ERROR lines (an exception it contained is still a bug)."""
    return [line for line in text.splitlines() if " ERROR " in line or " CRITICAL " in line]


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
