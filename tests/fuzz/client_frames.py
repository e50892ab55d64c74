"""The frames of one client connection slot (`ClientFrames`), drawn lazily from the slot's RNG.

Valid requests of every API at every version the broker serves; request envelopes whose CBOR
tree was damaged (`mutate.py`: values of other types, integers at every range edge and
bignums, lying lengths, tags, deep nesting, duplicate keys, indefinite lengths, arrays of the
wrong size) or whose envelope fields are wrong (unknown API keys and versions, unreadable
correlation ids, bad client ids, bodies of another API or another version); bit-flipped
frames; produce requests with damaged record batches (some with a recomputed CRC, so the
header checks behind it are reached); frames of up to `max_frame_bytes`; bad length prefixes
(0, max + 1, 2**32 - 1, random); truncated frames (then the connection goes on, so later
frames land inside them, or closes); random bytes.
A whole frame carries the oracle's prediction for its payload (`predict_request`). Valid
requests that would write to anything but the fuzzer's own topics, or change any but its own
consumer groups, are redrawn before sending (`safe_request`).
"""

from __future__ import annotations

import math
import random
import struct
import zlib

from broker.wire.api import SUPPORTED_VERSIONS, ApiKey
from broker.wire.frames import encode_frame
from broker.wire.group_messages import (
    DeleteGroupsRequest,
    GroupHeartbeatRequest,
    OffsetCommitRequest,
)
from broker.wire.limits import Limits
from broker.wire.messages import (
    ApiVersionsRequest,
    CreateTopicsRequest,
    DeleteTopicsRequest,
    ProduceRequest,
    Request,
)
from broker.wire.protocol import encode_request
from tests.fuzz.corpus import (
    FUZZ_GROUPS,
    FUZZ_MEMBERS,
    FUZZ_TOPICS,
    MAX_FUZZ_PARTITIONS,
    ClientCorpus,
)
from tests.fuzz.mutate import Head, Indefinite, Mutator, Nest, Node, encode
from tests.fuzz.oracle import predict_request
from tests.fuzz.planned import Planned, weights
from tests.fuzz.target import CHECKED_TOPIC, RAFT_TOPIC


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
    # Consumer groups: only the fuzzer's groups and members change, and only offsets of its
    # own topics' partitions are committed (a mutated name would add a group, a member or an
    # offset the broker keeps, and the run's state would grow without bound).
    if isinstance(request, GroupHeartbeatRequest):
        return (
            request.group_id in FUZZ_GROUPS
            and request.member_id in FUZZ_MEMBERS
            and request.instance_id in (None, *FUZZ_MEMBERS)
        )
    if isinstance(request, OffsetCommitRequest):
        return (
            request.group_id in FUZZ_GROUPS
            and request.member_id in ("", *FUZZ_MEMBERS)
            and all(
                t.topic in FUZZ_TOPICS and p.partition < MAX_FUZZ_PARTITIONS
                for t in request.topics
                for p in t.partitions
            )
        )
    if isinstance(request, DeleteGroupsRequest):
        return all(g in FUZZ_GROUPS for g in request.group_ids)
    return True


CLIENT_KINDS = weights(
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


ENVELOPE_KEYS = ("api_key", "api_version", "correlation_id", "client_id", "body")
_NEXT_API = max(ApiKey) + 1
"""The first API key this version does not know."""


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

    def _version(self, request: Request) -> int:
        """A version of `request`'s API the broker serves, drawn."""
        return self.rng.randint(*SUPPORTED_VERSIONS[request.API_KEY])

    def _encoded(self, request: Request) -> bytes:
        """A whole frame carrying `request` at a drawn version."""
        version = self._version(request)
        return encode_request(request, self._next_corr(), self.client_id, api_version=version)

    def _envelope(self, request: Request | None = None) -> list[Node]:
        request = request or self.corpus.request()
        version = self._version(request)
        corr = self._next_corr()
        return [int(request.API_KEY), version, corr, self.client_id, request.to_body(version)]

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
            return self._frame(kind, self._encoded(self.corpus.request()))
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
            payload = self._encoded(self.corpus.request())[4:]
            return self._payload(kind, m.mutate_bytes(payload, r.randint(1, 2)))
        if kind == "batch":
            env = self._envelope(self.corpus.produce())
            part = env[4]["topics"][0]["partitions"][0]
            part["batch"] = self._bad_batch(part["batch"])
            return self._payload(kind, encode(env))
        if kind == "body":
            env = self._envelope()
            other = self.corpus.request()
            body = other.to_body(self._version(other))
            env[4] = m.random_value(3) if r.random() < 0.6 else body
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
            return self._encoded(self.corpus.request())
        return encode_frame(encode(self.mutator.mutate_tree(self._envelope())))

    def _bad_envelope(self) -> Node:
        r = self.rng
        m = self.mutator
        env = self._envelope()
        op = r.randrange(8)
        if op == 0:  # an API this version does not know (just past the last one, or far)
            env[0] = r.choice(
                (-1, _NEXT_API, _NEXT_API + 1, 99, 255, 2**15 - 1, 2**15, 2**16, m.random_int())
            )
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
