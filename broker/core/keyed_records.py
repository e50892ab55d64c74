"""KeyedRecords: one persisted record per named item of a coordinator machine (pure).

A coordinator (groups, transactions) keeps many small items: each is one record of the
machine's keyed store, rewritten only when the item changed, so a round writes what it
touched, not the whole machine. Invariants: every live name holds a distinct u64 key; a
dropped name's key is deleted in the next writes and reused only after (free list); the apply
state (applied index, next fresh key, free keys) is written with every batch of records, so a
restart maps the stored records back to their names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from broker.core.machine import MachineWrites
from broker.wire import cbor

ALL_KEYS = 1 << 63
"""`delete_below` that clears every record (a rewrite after a snapshot install)."""


class KeyedRecords:
    __slots__ = ("_deleted", "_dirty", "_free", "_next_key", "_rewrite", "keys")

    def __init__(self) -> None:
        self.keys: dict[str, int] = {}
        self._free: list[int] = []
        self._next_key = 0
        self._dirty: set[str] = set()
        self._deleted: list[int] = []
        self._rewrite = False

    def touch(self, name: str) -> None:
        """`name` changed (given a key if it has none): rewrite its record."""
        if name not in self.keys:
            key = self._free.pop() if self._free else self._next_key
            self._next_key = max(self._next_key, key + 1)
            self.keys[name] = key
        self._dirty.add(name)

    def drop(self, name: str) -> None:
        key = self.keys.pop(name)
        self._deleted.append(key)
        self._free.append(key)
        self._dirty.discard(name)

    def writes(self, applied: int, encode: Callable[[str], bytes]) -> MachineWrites:
        """The records changed since the last call (every record after `reset`)."""
        state = cbor.encode([applied, self._next_key, sorted(self._free)])
        if self._rewrite:
            self._rewrite = False
            self._dirty.clear()
            self._deleted.clear()
            records = tuple((self.keys[n], encode(n)) for n in sorted(self.keys))
            return MachineWrites(state, ALL_KEYS, records)
        records = tuple((self.keys[n], encode(n)) for n in sorted(self._dirty))
        self._dirty.clear()
        deleted, self._deleted = tuple(self._deleted), []
        return MachineWrites(state, None, records, deleted)

    def reset(self, names: Iterable[str]) -> None:
        """Fresh keys for `names` (a snapshot was restored): the next writes replace every
        stored record."""
        self.keys = {n: i for i, n in enumerate(sorted(names))}
        self._next_key = len(self.keys)
        self._free = []
        self._dirty.clear()
        self._deleted.clear()
        self._rewrite = True

    def load_state(self, state: bytes) -> int:
        """Restore the key allocation from an apply state; returns its applied index (the
        caller then `bind`s each stored record's name to its key)."""
        decoded = cbor.decode(state)
        assert isinstance(decoded, list) and len(decoded) == 3
        self._next_key = decoded[1]
        self._free = list(decoded[2])
        applied: int = decoded[0]
        return applied

    def bind(self, name: str, key: int) -> None:
        self.keys[name] = key
