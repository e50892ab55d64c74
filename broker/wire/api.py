"""API keys, the versions this code speaks, and version negotiation.

A client sends API_VERSIONS first; the broker answers with the [key, min, max] ranges it
supports, and `negotiate` picks, per API both sides know, the highest version in both ranges.
A message gains fields only in a new version (`messages.py` says which field exists from which
version); every version in a range stays readable and writable.

Versions past 0: FETCH v1 (per partition `next_offset` and `aborted_transactions`), PRODUCE v1,
FETCH v2 and END_TXN v1 (an optional W3C `trace_context`: the client span that asks),
INIT_PRODUCER_ID v1 (`transaction_timeout_ms`). A broker
may serve less than SUPPORTED_VERSIONS (`capped`: the `max_api_versions` option), never more.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum

__all__ = ["SUPPORTED_VERSIONS", "ApiKey", "VersionRange", "capped", "negotiate"]


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
    FIND_COORDINATOR = 9
    GROUP_HEARTBEAT = 10
    OFFSET_COMMIT = 11
    OFFSET_FETCH = 12
    LIST_GROUPS = 13
    DESCRIBE_GROUPS = 14
    DELETE_GROUPS = 15
    ADD_PARTITIONS_TO_TXN = 16
    ADD_OFFSETS_TO_TXN = 17
    TXN_OFFSET_COMMIT = 18
    END_TXN = 19
    DESCRIBE_TRANSACTIONS = 20
    LIST_TRANSACTIONS = 21
    ABORT_TRANSACTION = 22
    ELECT_LEADERS = 23
    REBALANCE = 24
    DESCRIBE_REASSIGNMENTS = 25
    ALTER_TOPIC = 26


VersionRange = tuple[int, int]
"""(min_version, max_version), both inclusive."""

SUPPORTED_VERSIONS: Mapping[ApiKey, VersionRange] = {
    ApiKey.API_VERSIONS: (0, 0),
    ApiKey.METADATA: (0, 0),
    ApiKey.CREATE_TOPICS: (0, 0),
    ApiKey.DELETE_TOPICS: (0, 0),
    ApiKey.PRODUCE: (0, 1),
    ApiKey.FETCH: (0, 2),
    ApiKey.LIST_OFFSETS: (0, 0),
    ApiKey.INIT_PRODUCER_ID: (0, 1),
    ApiKey.DESCRIBE_CLUSTER: (0, 0),
    ApiKey.FIND_COORDINATOR: (0, 0),
    ApiKey.GROUP_HEARTBEAT: (0, 0),
    ApiKey.OFFSET_COMMIT: (0, 0),
    ApiKey.OFFSET_FETCH: (0, 0),
    ApiKey.LIST_GROUPS: (0, 0),
    ApiKey.DESCRIBE_GROUPS: (0, 0),
    ApiKey.DELETE_GROUPS: (0, 0),
    ApiKey.ADD_PARTITIONS_TO_TXN: (0, 0),
    ApiKey.ADD_OFFSETS_TO_TXN: (0, 0),
    ApiKey.TXN_OFFSET_COMMIT: (0, 0),
    ApiKey.END_TXN: (0, 1),
    ApiKey.DESCRIBE_TRANSACTIONS: (0, 0),
    ApiKey.LIST_TRANSACTIONS: (0, 0),
    ApiKey.ABORT_TRANSACTION: (0, 0),
    ApiKey.ELECT_LEADERS: (0, 0),
    ApiKey.REBALANCE: (0, 0),
    ApiKey.DESCRIBE_REASSIGNMENTS: (0, 0),
    ApiKey.ALTER_TOPIC: (0, 0),
}
"""The versions of each API this code can encode and decode."""

_KNOWN_KEYS = frozenset(int(key) for key in ApiKey)


VersionTable = Mapping[ApiKey, VersionRange] | Mapping[int, VersionRange]
"""API key -> (min, max); keys may be plain ints (a peer lists APIs this code may not know)."""


def capped(
    caps: Mapping[ApiKey, int], table: Mapping[ApiKey, VersionRange] = SUPPORTED_VERSIONS
) -> dict[ApiKey, VersionRange]:
    """`table` with the max version of each API in `caps` lowered to its cap (a broker that
    must not speak a newer version yet: a rolling upgrade, a version found faulty). A cap
    outside the API's range raises ValueError naming the API and the range."""
    out = dict(table)
    for key, cap in caps.items():
        low, high = table[key]
        if not low <= cap <= high:
            raise ValueError(f"{key.name}: version cap {cap} is outside [{low}, {high}]")
        out[key] = (low, cap)
    return out


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
