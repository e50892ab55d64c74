"""The broker's RocksDB storage: one database per broker, one GroupStorage per Raft group.

`RocksStore.open(data_dir, node_id)` opens (or creates) `<data_dir>/db`; `store.group(id)` /
`store.create_group(id, conf)` give each Raft group a `GroupStorage` (a LogStorage with
MemoryStorage's semantics); the driver persists each loop round with one `WriteRound` and
`store.commit(round)`. The durability audit is `broker.runtime.audit`.

Modules, in dependency order: each imports only modules listed before it (and no module
reads another's private names):
1. `errors`: the exceptions;
2. `codec`: column families, keys, record encodings, the MemberCodec protocol;
   `payloads`: the append-only segment files holding large entries' payloads;
3. `group`: GroupStorage (a group's in-memory views and reads) and `GroupBackend`, the
   protocol of what it needs from its store (reads, the snapshot and compaction writes, the
   member codec); it knows neither the store nor the round;
4. `round`: WriteRound and the typed operations it records (`SnapshotOp`, `EntriesOp`,
   `HardStateOp` on a GroupStorage; `ApplyOp`, `OffsetPut`, `OffsetDeleteRange`);
5. `plan`: commit pass 1, a round's operations as one validated WriteBatch (`build_plan`
   takes the store as an opaque owner identity, plus its codec and column families);
6. `db`: RocksStore, which implements GroupBackend, checks that it is writable and marks the
   round committed before planning, writes the batch, makes it durable, then tells each group
   (`GroupStorage.on_durable_*`);
7. `reclaim`: the broker's task that gives the disk back after deletions (a worker thread
   compacts the deleted ranges; dead payload segments are deleted);
and this package's `__init__`, which re-exports the public names.
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
