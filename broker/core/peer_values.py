"""The peer wire's bounds and scalar readers, shared by the Raft message codec and the frame
codec: each reader returns its value or raises `PeerProtocolError` (never another exception)."""

from __future__ import annotations

MAX_INDEX = (1 << 62) - 1
"""Largest term, index or offset a peer may send (room to count up in 64-bit storage)."""
MAX_TERM = MAX_INDEX - (1 << 32)
"""Highest term a broker takes from a peer's message (see `accepted`)."""
MAX_NODE_ID = (1 << 31) - 1
MAX_INCARNATION = (1 << 64) - 1


class PeerProtocolError(Exception):
    """A peer sent something this code cannot accept."""


def read_int(v: object) -> int:
    if type(v) is not int:
        raise PeerProtocolError(f"expected an int, got {type(v).__name__}")
    return v


def read_count(v: object) -> int:
    """A term, index, offset or size: an int in [0, MAX_INDEX]."""
    if type(v) is not int or not 0 <= v <= MAX_INDEX:
        raise PeerProtocolError(f"expected an int in [0, {MAX_INDEX}], got {v!r}")
    return v


def read_node(v: object) -> int:
    if type(v) is not int or not 0 <= v <= MAX_NODE_ID:
        raise PeerProtocolError(f"expected a node id, got {v!r}")
    return v


def read_incarnation(v: object) -> int:
    if type(v) is not int or not 0 <= v <= MAX_INCARNATION:
        raise PeerProtocolError(f"expected an incarnation, got {v!r}")
    return v


def read_port(v: object) -> int:
    if type(v) is not int or not 0 <= v <= 65535:
        raise PeerProtocolError(f"expected a port, got {v!r}")
    return v


MAX_NAME = 255


def read_name(v: object, what: str) -> str:
    """A host or rack a broker registers: 1..MAX_NAME characters (METADATA answers carry
    them to every client, which refuses an empty host)."""
    if not isinstance(v, str) or not 0 < len(v) <= MAX_NAME:
        raise PeerProtocolError(f"{what} must be 1..{MAX_NAME} characters of text")
    return v


def read_list(v: object) -> list[object]:
    if not isinstance(v, list):
        raise PeerProtocolError(f"expected an array, got {type(v).__name__}")
    return v


def read_rows(v: object, width: int) -> list[list[object]]:
    """An array of arrays of `width` items each."""
    rows = read_list(v)
    for row in rows:
        if not isinstance(row, list) or len(row) != width:
            raise PeerProtocolError(f"expected arrays of {width} items")
    return rows  # type: ignore[return-value]


def check_term_at_most(term: int, limit: int, what: str) -> None:
    if term > limit:
        raise PeerProtocolError(f"{what} {term} is above the message's term {limit}")


def read_bool(v: object) -> bool:
    if type(v) is not bool:
        raise PeerProtocolError(f"expected a bool, got {type(v).__name__}")
    return v


def read_opt_bytes(v: object) -> bytes | None:
    if v is None or isinstance(v, bytes):
        return v
    raise PeerProtocolError("expected bytes or null")
