"""What a frame generator (`client_frames.py`, `peer_frames.py`) hands the sender: one
`Planned` frame, its bytes and how to send them; and the weight tables the generators draw
frame kinds from."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from tests.fuzz.oracle import Outcome


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


def weights(table: tuple[tuple[str, float], ...]) -> tuple[list[str], list[float]]:
    names = [n for n, _ in table]
    return names, list(itertools.accumulate(w for _, w in table))
