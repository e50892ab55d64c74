"""The frames of one peer connection slot (`PeerFrames`), drawn lazily from RNGs derived
per frame from the slot's name alone (so nothing depends on the broker).

Before the handshake: garbage, oversized frames, damaged hellos, the broker's own node id or
a foreign cluster id, hellos of an older version (none) and a newer one; after a good HELLO
(a fake broker id from a pool of 8, each slot its own share) valid and damaged RAFT frames
(messages of all twelve types built with the real encoders), broker heartbeats, peer requests
(PING, kinds nobody serves, damaged ones; each slot is one requester session), responses to
nothing, a newer peer's frames of unknown kinds, frames of unexpected kinds, and the same
framing damage. Peer
frames naming the metadata group or the checked topic's groups are redrawn before sending
(unless `--raft-groups all`).

Raft messages must name the broker's incarnation, which a fresh broker draws anew: they are
drawn naming `placeholder(incarnation)` (the same encoded length), replaced by the real one
just before sending (`PeerFrames.wire`).
"""

from __future__ import annotations

import random
import struct

import cbor2

from broker.core.peer_codec import (
    HEARTBEAT,
    HELLO,
    PEER_FRAME_BYTES,
    RAFT,
    BrokerHeartbeat,
    Hello,
    decode_frame,
)
from broker.runtime.peers import HELLO_FRAME_BYTES
from broker.wire.frames import encode_frame
from tests.fuzz.corpus import PeerCorpus, tree
from tests.fuzz.mutate import HUGE_LENGTHS, Mutator, Nest, encode
from tests.fuzz.planned import Planned, weights
from tests.fuzz.target import Target

PEER_KINDS = weights(
    (
        ("raft", 30),
        ("raft-tree", 22),
        ("heartbeat", 8),
        ("heartbeat-tree", 5),
        ("peer-request", 10),
        ("peer-request-tree", 4),
        ("peer-response", 3),
        ("future-kind", 4),
        ("other-kind", 4),
        ("bitflip", 8),
        ("deep", 3),
        ("length", 2),
        ("truncated", 4),
        ("junk", 3),
    )
)
HELLO_KINDS = weights(
    (
        ("hello", 60),
        ("hello-old", 6),
        ("hello-newer", 9),
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
        self.session = random.Random(f"{name}:session").getrandbits(63)
        """This slot's peer-request session (one requester life of its fake brokers)."""
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
        if kind == "hello-old":
            return Planned(kind, encode_frame(self.corpus.hello_old(me)))
        if kind == "hello-newer":
            return Planned(kind, encode_frame(self.corpus.hello_newer(me)))
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
        if kind == "peer-request":
            return Planned(kind, encode_frame(c.peer_request(self.session)))
        if kind == "peer-request-tree":
            t = tree(c.peer_request(self.session))
            return Planned(kind, encode_frame(encode(m.mutate_tree(t, r.randint(1, 2)))))
        if kind == "peer-response":
            return Planned(kind, encode_frame(c.peer_response()))
        if kind == "future-kind":
            return Planned(kind, encode_frame(c.future_frame(self.session)))
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
