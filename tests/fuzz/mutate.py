"""Damage valid CBOR documents in structured ways, driven by one `random.Random`.

Random bytes almost never get past a strict decoder's first byte, so the fuzzer starts from
valid documents (a request envelope, a peer frame) held as a Python tree and damages them:

- **tree mutations** (`Mutator.mutate_tree`): a node replaced by a value of another type,
  an integer at a range edge (int16/int32/int64, CBOR's 2**64 - 1, bignums beyond it under
  tags 2/3, negatives), text that is empty, too long, not UTF-8 or not a topic name, a copy
  of another node of the document, a string or container head declaring far more than
  follows, an unexpected tag, nesting far past any limit, an indefinite-length item, a
  non-shortest head; containers with items dropped, duplicated, inserted or swapped (so
  arrays of the wrong size), maps with keys dropped, added, repeated or of another type, and
  containers past the decoder's item bounds;
- **byte mutations** (`Mutator.mutate_bytes`): bit flips, bytes set to interesting initial
  bytes (breaks, reserved values, long heads, tags), truncation, deletion, insertion,
  duplication and trailing garbage.

A tree may hold the marker types below for what a normal encoder never writes; `encode`
writes any tree by hand (RFC 8949 heads). Everything is a pure function of the RNG's state,
and nothing is generated ahead of use, so a run of any length replays exactly from its seed.
"""

from __future__ import annotations

import math
import random
import struct
from dataclasses import dataclass
from typing import Any

__all__ = [
    "INTERESTING_BYTES",
    "INTERESTING_INTS",
    "Head",
    "Indefinite",
    "Mutator",
    "Nest",
    "Node",
    "Pairs",
    "Raw",
    "Tag",
    "encode",
]

Node = Any
"""A CBOR tree: None, bool, int, float, str, bytes, list, dict, or one of the markers below."""


@dataclass(frozen=True, slots=True)
class Tag:
    """A tagged item (the broker refuses every tag; tags 2/3 are bignums)."""

    number: int
    value: Node


@dataclass(frozen=True, slots=True)
class Indefinite:
    """An indefinite-length item of major type 2 (bytes), 3 (text), 4 (array) or 5 (map:
    keys and values flattened; an odd count leaves a key without a value)."""

    major: int
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Pairs:
    """A map written pair by pair: keys may repeat or be of any type."""

    items: tuple[tuple[Node, Node], ...]


@dataclass(frozen=True, slots=True)
class Head:
    """A head with an explicit argument and width (0: shortest), then raw bytes: a string or
    container declaring a length its content does not have, or a non-shortest integer."""

    major: int
    arg: int
    width: int = 0
    tail: bytes = b""


@dataclass(frozen=True, slots=True)
class Nest:
    """`inner` inside `depth` one-item arrays (indefinite ones when `indefinite`), written
    without recursion so any depth costs only its bytes."""

    depth: int
    inner: Node
    indefinite: bool = False


@dataclass(frozen=True, slots=True)
class Raw:
    """Bytes spliced into the document as they are."""

    data: bytes


INTERESTING_INTS: tuple[int, ...] = tuple(
    sorted(
        {
            *(sign * n for n in (0, 1, 2, 23, 24, 255, 256, 65535, 65536) for sign in (1, -1)),
            *(b + d for b in (-(2**15), 2**15 - 1) for d in (-1, 0, 1)),
            *(b + d for b in (-(2**31), 2**31 - 1) for d in (-1, 0, 1)),
            *(b + d for b in (2**32 - 1, 2**62 - 1) for d in (-1, 0, 1)),
            *(b + d for b in (-(2**63), 2**63 - 1) for d in (-1, 0, 1)),
            2**64 - 1,  # the largest CBOR unsigned integer
            -(2**64),  # the smallest CBOR negative integer
            2**64,  # a bignum (tag 2)
            -(2**64) - 1,  # a negative bignum (tag 3)
            2**100,
            -(2**100),
        }
    )
)
"""Integers at the edges of int16, int32, int64, the Raft MAX_INDEX, and CBOR's own heads."""

INTERESTING_BYTES: tuple[int, ...] = (
    0x00, 0x17, 0x18, 0x19, 0x1A, 0x1B, 0x1C, 0x1F,  # unsigned: short, 1-8 byte heads, reserved
    0x20, 0x3B, 0x3F,  # negative
    0x40, 0x5B, 0x5F,  # bytes: empty, 8-byte length, indefinite
    0x60, 0x7B, 0x7F,  # text
    0x80, 0x9B, 0x9F,  # array
    0xA0, 0xBB, 0xBF,  # map
    0xC0, 0xC2, 0xD8, 0xD9, 0xDB, 0xDF,  # tags
    0xE0, 0xF4, 0xF5, 0xF6, 0xF7, 0xF8, 0xF9, 0xFA, 0xFB, 0xFC, 0xFF,  # simple, floats, break
)  # fmt: skip
"""Initial bytes worth planting: long heads, reserved values, indefinite markers, tags."""

TAG_NUMBERS: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 21, 24, 32, 55799, 2**32, 2**64 - 1)

HUGE_LENGTHS: tuple[int, ...] = (
    2**16, 2**20, 2**24 + 1, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**62, 2**63, 2**64 - 1,
)  # fmt: skip
"""Declared lengths far beyond the bytes that follow them."""

ODD_TEXT: tuple[str, ...] = ("", ".", "..", "a" * 250, "\x00", "é" * 300, "fz-0\x00", "-", " ")

_WIDTH_INFO = {1: 24, 2: 25, 4: 26, 8: 27}
_WIDTH_FMT = {1: ">B", 2: ">H", 4: ">I", 8: ">Q"}


def _head(major: int, arg: int, width: int = 0) -> bytes:
    """The head of an item: major type and argument, shortest unless `width` is given (an
    argument too large for the width is cut to it)."""
    if width == 0:
        if arg < 24:
            return bytes((major << 5 | arg,))
        width = 1 if arg < 0x100 else 2 if arg < 0x10000 else 4 if arg < 0x1_0000_0000 else 8
    arg &= (1 << (8 * width)) - 1
    return bytes((major << 5 | _WIDTH_INFO[width],)) + struct.pack(_WIDTH_FMT[width], arg)


def _bignum(n: int) -> bytes:
    return n.to_bytes(max(1, (n.bit_length() + 7) // 8), "big")


def encode(node: Node) -> bytes:
    """The CBOR bytes of a tree, markers included."""
    out: list[bytes] = []
    _encode(node, out)
    return b"".join(out)


def _encode(node: Node, out: list[bytes]) -> None:
    t = type(node)
    if node is None:
        out.append(b"\xf6")
    elif t is bool:
        out.append(b"\xf5" if node else b"\xf4")
    elif t is int:
        if 0 <= node < 2**64:
            out.append(_head(0, node))
        elif -(2**64) <= node < 0:
            out.append(_head(1, -1 - node))
        elif node >= 2**64:
            _encode(Tag(2, _bignum(node)), out)
        else:
            _encode(Tag(3, _bignum(-1 - node)), out)
    elif t is float:
        out.append(b"\xfb" + struct.pack(">d", node))
    elif t is str:
        data = node.encode("utf-8", "surrogatepass")
        out.append(_head(3, len(data)))
        out.append(data)
    elif t is bytes:
        out.append(_head(2, len(node)))
        out.append(node)
    elif t is list:
        out.append(_head(4, len(node)))
        for item in node:
            _encode(item, out)
    elif t is dict:
        out.append(_head(5, len(node)))
        for k, v in node.items():
            _encode(k, out)
            _encode(v, out)
    elif t is Tag:
        out.append(_head(6, node.number))
        _encode(node.value, out)
    elif t is Indefinite:
        out.append(bytes((node.major << 5 | 31,)))
        for item in node.items:
            _encode(item, out)
        out.append(b"\xff")
    elif t is Pairs:
        out.append(_head(5, len(node.items)))
        for k, v in node.items:
            _encode(k, out)
            _encode(v, out)
    elif t is Head:
        out.append(_head(node.major, node.arg, node.width))
        out.append(node.tail)
    elif t is Nest:
        out.append((b"\x9f" if node.indefinite else b"\x81") * node.depth)
        _encode(node.inner, out)
        if node.indefinite:
            out.append(b"\xff" * node.depth)
    elif t is Raw:
        out.append(node.data)
    else:
        raise TypeError(f"cannot encode {t.__name__}")


def copy_tree(node: Node) -> Node:
    """A copy whose lists and dicts can be changed without touching `node`."""
    if type(node) is list:
        return [copy_tree(v) for v in node]
    if type(node) is dict:
        return {k: copy_tree(v) for k, v in node.items()}
    return node


def _slots(root: list[Node]) -> list[tuple[list[Node] | dict[Any, Node], Any]]:
    """Every (container, key) of the tree under the holder `root` (pre-order)."""
    found: list[tuple[list[Node] | dict[Any, Node], Any]] = []
    stack: list[list[Node] | dict[Any, Node]] = [root]
    while stack:
        c = stack.pop()
        keys: Any = range(len(c)) if type(c) is list else list(c)
        for k in keys:
            found.append((c, k))
            v = c[k]
            if type(v) is list or type(v) is dict:
                stack.append(v)
    return found


class Mutator:
    """Tree and byte mutations drawn from one RNG."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    # -- values -------------------------------------------------------------------------------

    def random_int(self) -> int:
        r = self.rng
        roll = r.random()
        if roll < 0.6:
            return r.choice(INTERESTING_INTS)
        if roll < 0.8:
            return r.randint(-3, 30)
        return r.randint(-(2**64), 2**64)

    def random_text(self) -> str:
        r = self.rng
        roll = r.random()
        if roll < 0.4:
            return r.choice(ODD_TEXT)
        if roll < 0.5:
            return "x" * r.choice((249, 257, 65_536, 65_537))
        alphabet = "abcXYZ019._-/ é\u2028\U0001f600"
        return "".join(r.choice(alphabet) for _ in range(r.randint(1, 24)))

    def random_bytes(self, limit: int = 64) -> bytes:
        return self.rng.randbytes(self.rng.randint(0, limit))

    def random_value(self, depth: int = 2) -> Node:
        """A random well-formed value (containers down to `depth`), or one that no strict
        decoder takes (tags, simple values, undefined)."""
        r = self.rng
        kinds = ["int", "text", "bytes", "float", "bool", "null", "odd"]
        if depth > 0:
            kinds += ["list", "map"]
        kind = r.choice(kinds)
        if kind == "int":
            return self.random_int()
        if kind == "text":
            return self.random_text()
        if kind == "bytes":
            return self.random_bytes()
        if kind == "float":
            return r.choice((0.0, -0.0, 1.5, math.inf, -math.inf, math.nan, 1e308, r.random()))
        if kind == "bool":
            return r.random() < 0.5
        if kind == "null":
            return None
        if kind == "list":
            return [self.random_value(depth - 1) for _ in range(r.randint(0, 4))]
        if kind == "map":
            return {
                self.random_text(): self.random_value(depth - 1) for _ in range(r.randint(0, 3))
            }
        return r.choice(
            (
                Raw(b"\xf7"),  # undefined
                Raw(b"\xe0"),  # simple value 0
                Raw(b"\xf8\x20"),  # simple value 32
                Raw(b"\xf9\x7e\x00"),  # half-float NaN
                Raw(b"\xfa\x7f\x80\x00\x00"),  # single-float infinity
                Tag(r.choice(TAG_NUMBERS), self.random_value(0)),
            )
        )

    def huge_container(self) -> Node:
        """A container or string just past one of the decoder's bounds (array 100k items,
        map 1k pairs, text 64 KiB, a million items in one document)."""
        r = self.rng
        which = r.randrange(5)
        if which == 0:
            n = r.choice((100_000, 100_001))
            return Raw(_head(4, n) + b"\x00" * n)
        if which == 1:
            n = r.choice((1_000, 1_001))
            return Pairs(tuple((f"k{i}", i) for i in range(n)))
        if which == 2:
            n = r.choice((65_536, 65_537))
            return Raw(_head(3, n) + b"a" * n)
        if which == 3:
            return Raw(_head(4, 1_000_001) + b"\x00" * 1_000_001)
        return Raw(_head(4, 100_000) + b"\x80" * 100_000)  # 100k empty arrays

    # -- tree mutations -----------------------------------------------------------------------

    def mutate_tree(self, tree: Node, count: int = 1) -> Node:
        """A damaged copy of `tree` (`count` mutations); `tree` is not changed."""
        holder: list[Node] = [copy_tree(tree)]
        for _ in range(count):
            self._mutate_once(holder)
        return holder[0]

    def _mutate_once(self, holder: list[Node]) -> None:
        r = self.rng
        slots = _slots(holder)
        containers = [c[k] for c, k in slots if type(c[k]) is list or type(c[k]) is dict]
        if containers and r.random() < 0.3:
            self._edit_container(r.choice(containers), slots)
            return
        container, key = r.choice(slots)
        container[key] = self._replacement(container[key], slots)

    def _replacement(self, value: Node, slots: list[tuple[Any, Any]]) -> Node:
        r = self.rng
        op = r.randrange(14)
        if op == 0:
            return self.random_value()
        if op == 1 or (op == 2 and type(value) is not int):
            return self.random_int()
        if op == 2:
            return value + r.choice((-1, 1, -(2**31), 2**31, 2**64))
        if op == 3:
            c, k = r.choice(slots)
            return copy_tree(c[k])
        if op == 4:
            return self.random_text()
        if op == 5:  # text that is not UTF-8
            bad = r.choice((b"\xff", b"\xc3", b"\xed\xa0\x80", b"a\x80b"))
            return Head(3, len(bad), 0, bad)
        if op == 6:  # a string or container declaring far more than follows
            return Head(r.choice((2, 3, 4, 5)), r.choice(HUGE_LENGTHS), 0, self.random_bytes(8))
        if op == 7:
            return Tag(r.choice(TAG_NUMBERS), value)
        if op == 8:
            return Nest(r.choice((16, 17, 64, 1_000, 100_000)), value, r.random() < 0.3)
        if op == 9:
            return self._indefinite(value)
        if op == 10 and type(value) is int and 0 <= value < 2**32:
            return Head(0, value, r.choice((2, 4, 8)))  # non-shortest head
        if op == 11:
            return Raw(bytes((r.choice(INTERESTING_BYTES),)))
        if op == 12 and r.random() < 0.05:
            return self.huge_container()
        if op == 13 and type(value) is bytes and value:
            return value[: r.randrange(len(value))] + self.random_bytes(4)
        return self.random_value()

    def _indefinite(self, value: Node) -> Node:
        r = self.rng
        if type(value) is list:
            return Indefinite(4, tuple(value))
        if type(value) is dict:
            flat: list[Node] = []
            for k, v in value.items():
                flat += [k, v]
            if flat and r.random() < 0.2:
                flat.pop()  # a key without its value
            return Indefinite(5, tuple(flat))
        if type(value) is str:
            cut = r.randint(0, len(value))
            return Indefinite(3, (value[:cut], value[cut:]))
        if type(value) is bytes:
            cut = r.randint(0, len(value))
            return Indefinite(2, (value[:cut], value[cut:]))
        return Indefinite(r.choice((2, 3, 4, 5)), (value,))

    def _edit_container(self, c: list[Node] | dict[Any, Node], slots: list[Any]) -> None:
        r = self.rng
        if type(c) is list:
            op = r.randrange(5)
            if op == 0 and c:
                del c[r.randrange(len(c))]
            elif op == 1 and c:
                c.insert(r.randrange(len(c) + 1), copy_tree(r.choice(c)))
            elif op == 2:
                c.insert(r.randint(0, len(c)), self.random_value(1))
            elif op == 3 and len(c) > 1:
                i, j = r.sample(range(len(c)), 2)
                c[i], c[j] = c[j], c[i]
            else:
                c.clear()
            return
        assert type(c) is dict
        op = r.randrange(5)
        keys = list(c)
        if op == 0 and keys:
            del c[r.choice(keys)]
        elif op == 1:
            c[self.random_text()] = self.random_value(1)
        elif op in (2, 3) and keys:
            # Repeat a key, or turn one into another type: rewrite the map pair by pair.
            pairs = list(c.items())
            i = r.randrange(len(pairs))
            k, v = pairs[i]
            if op == 2:
                pairs.insert(r.randint(0, len(pairs)), (k, self.random_value(0)))
            else:
                pairs[i] = (r.choice((0, -1, b"k", 1.5, None, [k])), v)
            self._replace_in_parent(c, Pairs(tuple(pairs)), slots)
        else:
            c.clear()

    @staticmethod
    def _replace_in_parent(target: Node, new: Node, slots: list[Any]) -> None:
        for container, key in slots:
            if container[key] is target:
                container[key] = new
                return

    # -- byte mutations -----------------------------------------------------------------------

    def mutate_bytes(self, data: bytes, count: int = 1) -> bytes:
        """`data` with `count` byte-level changes (never empty)."""
        r = self.rng
        buf = bytearray(data)
        for _ in range(count):
            op = r.randrange(8)
            n = len(buf)
            if op <= 2 and n:  # bit flips weigh most: they keep the document's shape
                for _ in range(r.randint(1, 8)):
                    i = r.randrange(n)
                    buf[i] ^= 1 << r.randrange(8)
            elif op == 3 and n:
                buf[r.randrange(n)] = r.choice(INTERESTING_BYTES)
            elif op == 4 and n > 1:
                del buf[r.randrange(1, n) :]
            elif op == 5 and n > 1:
                i = r.randrange(n)
                del buf[i : i + r.randint(1, 16)]
            elif op == 6:
                i = r.randint(0, n)
                buf[i:i] = r.randbytes(r.randint(1, 16))
            else:
                i = r.randrange(max(1, n))
                buf += buf[i : i + r.randint(1, 64)] or r.randbytes(4)
        return bytes(buf) or b"\xff"
