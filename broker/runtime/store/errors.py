"""The store's exceptions. Every rocksdict error is wrapped in one of these (StoreError base)."""

from __future__ import annotations


class StoreError(Exception):
    """Any storage failure. After a failed write the store is failed: it refuses further
    writes (fail-stop), because its in-memory views may no longer match the disk."""


class StoreClosedError(StoreError):
    """The store was closed (or failed) and cannot be used."""


class StoreNotFoundError(StoreError):
    """No store exists at the path and `create_if_missing` was false."""


class StoreLockedError(StoreError):
    """Another open store (in this process or another) holds the data directory."""


class StoreIdentityError(StoreError):
    """The store belongs to another node, another cluster, or another on-disk format.
    The CLI exits 2 on it."""


class CorruptionError(StoreError):
    """A record failed its checksum or could not be decoded."""


class CorruptEntryError(CorruptionError):
    """The log entry at (group, index) is corrupt or missing (its CRC does not match, or a
    key is absent). Raised to the reader: a request that hits it is answered
    UNKNOWN_SERVER_ERROR; inside a round it stops the broker (fail-stop). Repairing the entry
    from the leader is not built."""

    def __init__(self, group: int, index: int, reason: str = "checksum mismatch") -> None:
        super().__init__(f"group {group}: log entry {index} is corrupt ({reason})")
        self.group = group
        self.index = index
        self.reason = reason


class CorruptRecordError(CorruptionError):
    """A non-entry record (hard state, configuration, snapshot, identity) is corrupt."""

    def __init__(self, what: str, reason: str = "checksum mismatch") -> None:
        super().__init__(f"{what} is corrupt ({reason})")
        self.what = what
        self.reason = reason
