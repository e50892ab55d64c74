"""The broker's RocksDB storage: one database per broker, one GroupStorage per Raft group.

`RocksStore.open(data_dir, node_id)` opens (or creates) `<data_dir>/db`; `store.group(id)` /
`store.create_group(id, conf)` give each Raft group a `GroupStorage` (a LogStorage with
MemoryStorage's semantics); the driver persists each loop round with one `WriteRound` and
`store.commit(round)` / `await store.commit_async(round)`. Module map: `db` (the store),
`group` (GroupStorage), `round` (WriteRound), `plan` (a round's batch, validated), `codec`
(column families, keys and record encodings), `errors`; the durability audit is
`broker.runtime.audit`.
"""

from broker.runtime.store.codec import (
    COLUMN_FAMILIES,
    DEFAULT_MEMBER_CODEC,
    IntTupleCodec,
    MemberCodec,
)
from broker.runtime.store.db import (
    DURABILITY_MODES,
    FORMAT_VERSION,
    Durability,
    RocksStore,
)
from broker.runtime.store.errors import (
    CorruptEntryError,
    CorruptionError,
    CorruptRecordError,
    StoreClosedError,
    StoreError,
    StoreIdentityError,
    StoreLockedError,
    StoreNotFoundError,
)
from broker.runtime.store.group import GroupStorage
from broker.runtime.store.round import WriteRound

__all__ = [
    "COLUMN_FAMILIES",
    "DEFAULT_MEMBER_CODEC",
    "DURABILITY_MODES",
    "FORMAT_VERSION",
    "CorruptEntryError",
    "CorruptRecordError",
    "CorruptionError",
    "Durability",
    "GroupStorage",
    "IntTupleCodec",
    "MemberCodec",
    "RocksStore",
    "StoreClosedError",
    "StoreError",
    "StoreIdentityError",
    "StoreLockedError",
    "StoreNotFoundError",
    "WriteRound",
]
