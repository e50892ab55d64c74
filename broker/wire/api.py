"""API keys, the versions this code speaks, and version negotiation.

A client sends API_VERSIONS first; the broker answers with the [key, min, max] ranges it
supports, and `negotiate` picks, per API both sides know, the highest version in both ranges.
Every API is at version 0 today; a change to a body's shape is a new version.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum

__all__ = ["SUPPORTED_VERSIONS", "ApiKey", "VersionRange", "negotiate"]


class ApiKey(IntEnum):
    API_VERSIONS = 0
    METADATA = 1
    CREATE_TOPICS = 2
    DELETE_TOPICS = 3
    PRODUCE = 4
    FETCH = 5
    LIST_OFFSETS = 6
    INIT_PRODUCER_ID = 7
    DESCRIBE_CLUSTER = 8


VersionRange = tuple[int, int]
"""(min_version, max_version), both inclusive."""

SUPPORTED_VERSIONS: Mapping[ApiKey, VersionRange] = {key: (0, 0) for key in ApiKey}
"""The versions of each API this code can encode and decode."""

_KNOWN_KEYS = frozenset(int(key) for key in ApiKey)


VersionTable = Mapping[ApiKey, VersionRange] | Mapping[int, VersionRange]
"""API key -> (min, max); keys may be plain ints (a peer lists APIs this code may not know)."""


def negotiate(client: VersionTable, server: VersionTable) -> dict[ApiKey, int]:
    """Per API key known to this code and present in both tables, the highest version both
    support; keys without a common version, or unknown here, are absent."""
    theirs = {int(key): versions for key, versions in server.items()}
    chosen: dict[ApiKey, int] = {}
    for raw_key, (client_min, client_max) in client.items():
        key = int(raw_key)
        if key not in theirs or key not in _KNOWN_KEYS:
            continue
        server_min, server_max = theirs[key]
        high = min(client_max, server_max)
        if high >= max(client_min, server_min):
            chosen[ApiKey(key)] = high
    return chosen
