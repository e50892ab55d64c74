"""Hypothesis strategies that damage valid CBOR documents in structured ways, for fuzz tests.

Random bytes almost never get past a strict decoder's first byte, so the fuzz tests start from
valid encodings instead and damage them at three levels:

1. **Tree mutations** (`mutate_tree`): the document is decoded with cbor2 into a Python tree
   and one node is changed: replaced by a value of another type (ints at every range
   boundary, bignums, floats, bytes, text, null, bools, containers, tags, simple values,
   nesting deeper than any limit), by a copy of another node of the same document
   (realistic values in the wrong place), or by a lookalike that Python iterates the same
   way (the byte string of a list of small ints, a map or text of the same length);
   wrapped in containers; or edited in place (list items deleted, duplicated, inserted,
   swapped; map keys deleted, added, renamed to other types; text and bytes emptied,
   lengthened, truncated).
2. **Unusual but explicit encodings** (`encode_tree` with a `random.Random`): the tree is
   re-encoded by hand with non-shortest heads, indefinite-length strings and containers, and
   duplicated map keys, none of which cbor2's encoder writes.
3. **Byte mutations** (`mutate_bytes`): bit flips, bytes set to interesting initial bytes
   (breaks, indefinite markers, tags, simple values, long heads), truncation, deletion,
   insertion, duplication, trailing garbage, and splices of two valid documents.

`mutated_documents(seeds)` chains the three and is what most tests draw from. Every choice is
drawn from hypothesis, so a failure shrinks and replays like any other.

Random search rarely hits one exact node with one exact value in a large document, so
`single_mutations(tree)` also enumerates, deterministically, every document one change away:
each node replaced by each value of `PALETTE` and by each of its lookalikes, each list item
deleted or duplicated, each map entry deleted or given a non-text key.
"""

from __future__ import annotations

import itertools
import random
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import cbor2
from hypothesis import strategies as st

__all__ = [
    "INTERESTING_INTS",
    "PALETTE",
    "encode_tree",
    "mutate_bytes",
    "mutate_tree",
    "mutated_documents",
    "nested",
    "odd_values",
    "single_mutations",
]

Path = tuple[Any, ...]
"""Keys from the root to a node: list indices and map keys, as `container[key]` takes them."""

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

_TAG_NUMBERS = (
    0, 1, 2, 3, 4, 5, 6, 21, 24, 25, 28, 29, 30, 32, 35, 37, 258, 55799, 2**32, 2**64 - 1,
)  # fmt: skip
"""Tags cbor2 decodes natively (dates, bignums, decimals, shared references, sets...) and
tags it does not know, up to the largest tag number."""


def _text(max_size: int) -> st.SearchStrategy[str]:
    """Text cbor2 can encode (no lone surrogates)."""
    return st.text(st.characters(codec="utf-8"), max_size=max_size)


_scalars: st.SearchStrategy[object] = st.one_of(
    st.sampled_from(INTERESTING_INTS),
    st.integers(),
    st.floats(),
    st.binary(max_size=12),
    _text(max_size=8),
    st.none(),
    st.booleans(),
)


def nested(depth: int, leaf: object = 0, as_map: bool = False) -> object:
    """`leaf` inside `depth` arrays (or one-entry maps)."""
    value = leaf
    for _ in range(depth):
        value = {"k": value} if as_map else [value]
    return value


def odd_values() -> st.SearchStrategy[object]:
    """A value of any CBOR type, biased to what a strict decoder must refuse or range-check."""
    return st.one_of(
        _scalars,
        st.sampled_from([[], {}, "", b"", -1, 0, 2**64 - 1, 2**64, 1.0, float("nan")]),
        st.lists(_scalars, max_size=4),
        st.dictionaries(_text(max_size=3), _scalars, max_size=3),
        st.dictionaries(st.one_of(st.integers(), st.binary(max_size=3)), _scalars, max_size=2),
        st.builds(cbor2.CBORTag, st.sampled_from(_TAG_NUMBERS), _scalars),
        st.sampled_from(
            [cbor2.undefined, cbor2.CBORSimpleValue(0), cbor2.CBORSimpleValue(255), {1, 2}]
        ),
        st.builds(nested, st.integers(min_value=1, max_value=40), _scalars, st.booleans()),
    )


# --------------------------------------------------------------------------- tree mutations


def _copy(tree: Any) -> Any:
    """A copy of the lists and maps of `tree` (leaves, tags included, are shared: no
    mutation reaches inside them; cbor2's CBORTag cannot be deep-copied)."""
    if type(tree) is list:
        return [_copy(item) for item in tree]
    if type(tree) is dict:
        return {key: _copy(item) for key, item in tree.items()}
    return tree


def _paths(tree: object, prefix: Path = ()) -> list[Path]:
    out = [prefix]
    if isinstance(tree, list):
        for i, item in enumerate(tree):
            out.extend(_paths(item, (*prefix, i)))
    elif isinstance(tree, dict):
        for key, item in tree.items():
            out.extend(_paths(item, (*prefix, key)))
    return out


def _get(tree: Any, path: Path) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def _set(tree: Any, path: Path, value: object) -> object:
    """`tree` with the node at `path` replaced (in place, except at the root)."""
    if not path:
        return value
    _get(tree, path[:-1])[path[-1]] = value
    return tree


def _edit_list(draw: st.DrawFn, items: list[Any], tree: object) -> list[Any]:
    items = list(items)
    op = draw(st.sampled_from(["delete", "duplicate", "insert", "swap", "clear", "repeat"]))
    if op == "clear" or (not items and op in ("delete", "duplicate", "swap")):
        return []
    at = draw(st.integers(min_value=0, max_value=max(0, len(items) - 1)))
    if op == "delete":
        del items[at]
    elif op == "duplicate":
        items.insert(at, _copy(items[at]))
    elif op == "insert":
        value = draw(st.one_of(odd_values(), st.sampled_from(_paths(tree)).map(_copier(tree))))
        items.insert(draw(st.integers(min_value=0, max_value=len(items))), value)
    elif op == "swap":
        other = draw(st.integers(min_value=0, max_value=len(items) - 1))
        items[at], items[other] = items[other], items[at]
    else:  # repeat: many copies of one item (long arrays, repeated names)
        count = draw(st.integers(min_value=2, max_value=40))
        items = items + [_copy(items[at]) for _ in range(count)] if items else [0] * count
    return items


def _edit_map(draw: st.DrawFn, entries: dict[Any, Any]) -> dict[Any, Any]:
    entries = dict(entries)
    op = draw(st.sampled_from(["delete", "add", "rename", "retype_key", "clear"]))
    keys = list(entries)
    if op == "clear":
        return {}
    if op == "add" or not keys:  # a new key, or a known one whose value changes type
        entries[draw(st.one_of(_text(max_size=12), st.sampled_from(keys or ["k"])))] = draw(
            odd_values()
        )
        return entries
    key = draw(st.sampled_from(keys))
    value = entries.pop(key)
    if op == "rename":  # another key of this map (its value lost) or a new name
        entries[draw(st.one_of(st.sampled_from(keys), _text(max_size=12)))] = value
    elif op == "retype_key":
        new_key = draw(
            st.one_of(st.integers(), st.binary(max_size=4), st.none(), st.floats(), st.booleans())
        )
        entries[new_key] = value
    return entries


def _edit_text(draw: st.DrawFn, text: str) -> str:
    return draw(
        st.one_of(
            st.sampled_from(["", ".", "..", "a" * 249, "a" * 250, "é" * 200, "x" * 70_000]),
            st.just(text[: len(text) // 2]),
            st.just(text * 2),
            _text(max_size=20),
        )
    )


def _edit_bytes(draw: st.DrawFn, data: bytes) -> bytes:
    return draw(
        st.one_of(
            st.just(b""),
            st.just(data[: len(data) // 2]),
            st.just(data + data),
            st.binary(max_size=50),
            st.just(bytes([data[0] ^ 1]) + data[1:] if data else b"\x00"),
        )
    )


def _lookalikes(node: list[Any] | dict[Any, Any] | str | bytes) -> list[object]:
    """Values of another CBOR type that Python iterates, unpacks or measures like `node`: a
    decoder that unpacks (`a, b, c = body`) or iterates instead of checking types accepts
    them. A list of small ints becomes the byte string of those ints; any container or
    string becomes a byte string, a text, an array and a map of the same length."""
    n = len(node)
    out: list[object] = [bytes(n), "a" * n, list(range(n)), {f"k{i}": i for i in range(n)}]
    if isinstance(node, list) and all(type(v) is int and 0 <= v <= 255 for v in node):
        out.append(bytes(node))
    if isinstance(node, bytes):
        out.append(list(node))
    if isinstance(node, str):
        out.append(list(node))
    if isinstance(node, dict):
        out.append(list(node))
    return out


def _copier(tree: object) -> Callable[[Path], object]:
    return lambda path: _copy(_get(tree, path))


@st.composite
def mutate_tree(draw: st.DrawFn, tree: object) -> object:
    """`tree` (left untouched) with one node changed; see the module docstring."""
    tree = _copy(tree)
    paths = _paths(tree)
    path = draw(st.sampled_from(paths))
    node = _get(tree, path)
    kinds = ["replace", "boundary_int", "transplant", "wrap"]
    if isinstance(node, list | dict | str | bytes):
        kinds += ["lookalike"]
    if isinstance(node, list):
        kinds += ["list", "list", "list"]
    if isinstance(node, dict):
        kinds += ["map", "map", "map"]
    if isinstance(node, str):
        kinds += ["text"]
    if isinstance(node, bytes):
        kinds += ["bytes"]
    if type(node) is int:
        kinds += ["boundary_int", "int_step"]
    kind = draw(st.sampled_from(kinds))
    if kind == "replace":
        value: object = draw(odd_values())
    elif kind == "boundary_int":
        value = draw(st.sampled_from(INTERESTING_INTS))
    elif kind == "int_step":
        value = node + draw(st.sampled_from([-2, -1, 1, 2]))
    elif kind == "transplant":
        value = _copy(_get(tree, draw(st.sampled_from(paths))))
    elif kind == "wrap":
        value = nested(draw(st.integers(min_value=1, max_value=20)), node, draw(st.booleans()))
    elif kind == "lookalike":
        value = draw(st.sampled_from(_lookalikes(node)))
    elif kind == "list":
        value = _edit_list(draw, node, tree)
    elif kind == "map":
        value = _edit_map(draw, node)
    elif kind == "text":
        value = _edit_text(draw, node)
    else:
        value = _edit_bytes(draw, node)
    return _set(tree, path, value)


# --------------------------------------------------------------------------- single mutations

PALETTE: tuple[object, ...] = (
    *(-(2**64) - 1, -(2**64), -(2**63) - 1, -(2**63), -(2**31) - 1, -(2**31)),
    *(-(2**15) - 1, -(2**15), -2, -1, 0, 1, 2**15 - 1, 2**15, 2**31 - 1, 2**31),
    *(2**62 - 1, 2**62, 2**63 - 1, 2**63, 2**64 - 1, 2**64),
    1.5,
    float("nan"),
    True,
    False,
    None,
    b"",
    b"\x00",
    "",
    "a",
    ".",
    [],
    [0],
    {},
    {"a": 0},
    cbor2.CBORTag(1, 0),
    cbor2.undefined,
    nested(17),
)
"""A value of every CBOR type, and the integers on both sides of every range edge the
schemas use (int16, int32, the Raft MAX_INDEX, int64, CBOR's own 2**64 - 1)."""


def _with(tree: Any, path: Path, value: object) -> object:
    """`tree` with the node at `path` replaced, copying only the containers on the path."""
    if not path:
        return value
    key, rest = path[0], path[1:]
    if type(tree) is list:
        items = list(tree)
        items[key] = _with(tree[key], rest, value)
        return items
    entries = dict(tree)
    entries[key] = _with(tree[key], rest, value)
    return entries


def single_mutations(tree: object) -> Iterator[tuple[str, object]]:
    """(what changed, the new tree) for every tree one change away from `tree`: a node
    replaced by each PALETTE value or lookalike, a list item deleted or duplicated, a map
    entry deleted or its key replaced by an int. `tree` is not modified (the new trees share
    its unchanged parts)."""
    for path in _paths(tree):
        node = _get(tree, path)
        lookalikes = _lookalikes(node) if isinstance(node, list | dict | str | bytes) else []
        seen: set[str] = set()
        for value in (*PALETTE, *lookalikes):
            shown = f"{type(value).__name__} {value!r:.60}"
            if shown not in seen:  # a lookalike may repeat a PALETTE value
                seen.add(shown)
                yield f"{list(path)} := {value!r:.60}", _with(tree, path, value)
        if type(node) is list:
            for i in range(len(node)):
                yield f"{list(path)}: del [{i}]", _with(tree, path, node[:i] + node[i + 1 :])
                dup = node[: i + 1] + node[i:]
                yield f"{list(path)}: duplicate [{i}]", _with(tree, path, dup)
        elif type(node) is dict:
            for key in node:
                rest = {k: v for k, v in node.items() if k != key}
                yield f"{list(path)}: del [{key!r}]", _with(tree, path, rest)
                retyped = {(0 if k == key else k): v for k, v in node.items()}
                yield f"{list(path)}: key {key!r} := 0", _with(tree, path, retyped)


# --------------------------------------------------------------------------- explicit encoding

_HEAD_WIDTHS = ((24, ">B", 1 << 8), (25, ">H", 1 << 16), (26, ">I", 1 << 32), (27, ">Q", 1 << 64))


@dataclass(frozen=True)
class _Quirks:
    """How often `encode_tree` writes each unusual form, chosen once per document (a rate
    per item would put an indefinite length into nearly every document)."""

    rnd: random.Random
    long_head: float
    indefinite: float
    duplicate: float
    short_float: float


def _head(major: int, arg: int, q: _Quirks) -> bytes:
    """An item head: the shortest form, or at rate `long_head` a longer valid one."""
    if q.rnd.random() >= q.long_head:
        if arg < 24:
            return bytes([major << 5 | arg])
        forms = [(info, fmt) for info, fmt, bound in _HEAD_WIDTHS if arg < bound][:1]
    else:
        forms = [(info, fmt) for info, fmt, bound in _HEAD_WIDTHS if arg < bound]
    info, fmt = q.rnd.choice(forms)
    return bytes([major << 5 | info]) + struct.pack(fmt, arg)


def _chunks(data: bytes, rnd: random.Random) -> list[bytes]:
    cuts = sorted(rnd.randrange(len(data) + 1) for _ in range(rnd.randrange(3)))
    return [data[a:b] for a, b in itertools.pairwise([0, *cuts, len(data)])]


def encode_tree(tree: object, rnd: random.Random | None = None) -> bytes:
    """The CBOR of `tree`: cbor2's own encoding without `rnd`; with it, a hand-written one
    that mixes in, at rates `rnd` picks for the document, non-shortest heads, indefinite
    lengths (strings in chunks), duplicated map entries and half or single floats."""
    if rnd is None:
        return cbor2.dumps(tree)
    quirks = _Quirks(
        rnd=rnd,
        long_head=rnd.choice([0.0, 0.05, 0.5]),
        indefinite=rnd.choice([0.0] * 6 + [0.01, 0.2]),
        duplicate=rnd.choice([0.0, 0.0, 0.1]),
        short_float=rnd.choice([0.0, 1.0]),
    )
    out = bytearray()
    _encode_into(out, tree, quirks)
    return bytes(out)


def _encode_into(out: bytearray, value: object, q: _Quirks) -> None:
    rnd = q.rnd
    indefinite = rnd.random() < q.indefinite
    if type(value) is int and -(2**64) <= value < 2**64:
        out += _head(0, value, q) if value >= 0 else _head(1, -1 - value, q)
    elif type(value) is bytes or type(value) is str:
        major = 2 if type(value) is bytes else 3
        raw = value if isinstance(value, bytes) else value.encode()
        if indefinite:
            out.append(major << 5 | 31)
            for chunk in _chunks(raw, rnd):
                out += _head(major, len(chunk), q) + chunk
            out.append(0xFF)
        else:
            out += _head(major, len(raw), q) + raw
    elif type(value) is list:
        out += bytes([0x9F]) if indefinite else _head(4, len(value), q)
        for item in value:
            _encode_into(out, item, q)
        if indefinite:
            out.append(0xFF)
    elif type(value) is dict:
        entries = list(value.items())
        if entries and rnd.random() < q.duplicate:  # a repeated key, which no encoder writes
            entries.insert(rnd.randrange(len(entries) + 1), rnd.choice(entries))
        out += bytes([0xBF]) if indefinite else _head(5, len(entries), q)
        for key, item in entries:
            _encode_into(out, key, q)
            _encode_into(out, item, q)
        if indefinite:
            out.append(0xFF)
    elif type(value) is float and rnd.random() < q.short_float:
        for code, fmt in ((0xF9, ">e"), (0xFA, ">f")):
            try:
                packed = struct.pack(fmt, value)
            except (OverflowError, struct.error):
                continue
            if struct.unpack(fmt, packed)[0] == value:  # exact (NaN compares unequal: skipped)
                out += bytes([code]) + packed
                return
        out += b"\xfb" + struct.pack(">d", value)
    elif isinstance(value, cbor2.CBORTag):
        out += _head(6, value.tag, q)
        _encode_into(out, value.value, q)
    else:  # bool, None, other floats, bignums, simple values, sets: as cbor2 writes them
        out += cbor2.dumps(value)


# --------------------------------------------------------------------------- byte mutations


@st.composite
def mutate_bytes(draw: st.DrawFn, data: bytes, others: Sequence[bytes] = ()) -> bytes:
    """`data` with one byte-level change; `others` are documents to splice with."""
    ops = ["flip", "set", "truncate", "delete", "insert", "duplicate", "append"]
    if others:
        ops.append("splice")
    op = draw(st.sampled_from(ops))
    n = len(data)
    at = draw(st.integers(min_value=0, max_value=max(0, n - 1)))
    if op == "flip" and n:
        return data[:at] + bytes([data[at] ^ (1 << draw(st.integers(0, 7)))]) + data[at + 1 :]
    if op == "set" and n:
        byte = draw(st.one_of(st.sampled_from(INTERESTING_BYTES), st.integers(0, 255)))
        return data[:at] + bytes([byte]) + data[at + 1 :]
    if op == "truncate":
        return data[:at]
    if op == "delete":
        return data[:at] + data[at + draw(st.integers(min_value=1, max_value=8)) :]
    if op == "duplicate":
        end = at + draw(st.integers(min_value=1, max_value=16))
        return data[:end] + data[at:end] + data[end:]
    if op == "splice":
        other = draw(st.sampled_from(others))
        cut = draw(st.integers(min_value=0, max_value=len(other)))
        return data[:at] + other[cut:]
    planted = draw(
        st.one_of(
            st.lists(st.sampled_from(INTERESTING_BYTES), min_size=1, max_size=3).map(bytes),
            st.binary(min_size=1, max_size=8),
        )
    )
    if op == "append":
        return data + planted
    return data[:at] + planted + data[at:]  # insert


@st.composite
def mutated_documents(
    draw: st.DrawFn,
    seeds: Sequence[bytes],
    others: Sequence[bytes] | None = None,
    max_tree: int = 3,
    max_raw: int = 2,
) -> bytes:
    """One of `seeds` (valid CBOR), damaged by up to `max_tree` tree mutations, re-encoded
    (by cbor2 or by `encode_tree` with unusual forms), then up to `max_raw` byte mutations,
    splices taking their tails from `others` (default: the seeds). A draw of no mutation at
    all leaves the document valid."""
    seed = draw(st.sampled_from(seeds))
    tree = cbor2.loads(seed)
    for _ in range(draw(st.integers(min_value=0, max_value=max_tree))):
        tree = draw(mutate_tree(tree))
    rnd = draw(st.none() | st.randoms(use_true_random=False))
    data = encode_tree(tree, rnd)
    for _ in range(min(max_raw, draw(st.sampled_from([0, 0, 1, 1, 2])))):
        data = draw(mutate_bytes(data, seeds if others is None else others))
    return data
