"""RocksStore: the broker's one RocksDB database (`<data_dir>/db`), in rocksdict raw mode.

Column families (names and keys in codec.py; commit planning in plan.py):
- `raft_log`   group + index -> entry (term, kind, crc32, payload);
- `raft_state` group -> hard state;
- `raft_confs` group + index -> (term at index, configuration): the base configuration at
  first_index() - 1 (the lowest key of the group, so it also records the log's offset and its
  term) and every CONF entry, so opening never scans a log;
- `snapshots`  group + 0 -> snapshot metadata (its presence means the group exists),
  group + 1 -> snapshot data;
- `apply`      group -> the state machine's opaque apply state;
- `offsets`    group + u64 key -> the partition's opaque offset-index records;
- `meta`       identity: node_id, format_version, cluster_id, incarnation, created_at (ms
  since the epoch, a record for operators: the store never reads it back), and
  `payloads_durable` (payloads.py);
- `payloads`   segment + position -> group + index of the external entry whose payload is
  there (payloads.py).

Large payloads: a NORMAL or NOOP entry whose payload is at least `external_payload_bytes`
keeps only a pointer in `raft_log`; the payload goes to `<data_dir>/payloads/` (payloads.py),
appended before the round's WriteBatch is written and synced before the WAL is (`sync_wal`,
and before any synced write). At open, entries whose payloads may have been lost in a power
loss (beyond the last `payloads_durable` mark) are checked, and a group whose entry lost its
payload has its log cut from that entry (`_repair_payloads`): none of them was acknowledged.

Giving the disk back (reclaim.py): compactions, offset-index deletes below a moved log start
and group deletions are range deletes; the store keeps the ranges deleted since the last
`take_reclaim`, and `reclaim_space` (a worker thread) flushes the memtables (so the WAL files
that logged the deleted records become obsolete) and compacts exactly those ranges; sealed
payload segments nothing points into any more then go (`remove_segments`).

Durability: a round's writes are ONE `db.write(WriteBatch)`, and the groups' in-memory views
change only once it is durable. Mode `inline`: `commit(round)` writes with sync=True (rocksdict
holds the GIL through the sync). Mode `pipelined` (the broker's default): `write(round)` writes
with sync=False (the WAL record reaches the OS; short, on the caller's thread) and returns a
`Written`; `sync_wal()` (any thread: `flush_wal(True)` releases the GIL while it syncs) makes
every write that returned before it started durable; `wal_synced(token)` (the writer's thread,
token from `flush_token()` taken before the sync was asked for) records that, and
`acknowledge(written)` then updates the views. Several rounds may be written before the
first is durable: each plans from the previous one's Draft (plan.py), and they are
acknowledged in order. `commit(round)` in this mode is write, sync, acknowledge on one thread.
A round whose only change is a higher commit index or state-machine data needs no sync
(Ready.must_sync semantics), but is still acknowledged in order. RocksDB recovers a prefix of
its WAL, so a sync covers every earlier write, and a write lost in a crash loses every later
one with it. Snapshot and compaction records (`write_snapshot`, `write_compaction`) in
`pipelined` mode are unsynced writes that the next sync covers (losing them in a crash loses
nothing: the log they would shorten is still there). A failed write or sync leaves the store
failed: every later write raises (fail-stop). Reads are allowed meanwhile and see the views
as of the last acknowledged round (RocksDB may already hold later rounds' keys).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal

from rocksdict import (
    ColumnFamily,
    DbClosedError,
    Options,
    Rdict,
    ReadOptions,
    WriteBatch,
    WriteOptions,
)

from broker.core.raft import ConfState, HardState, SnapshotMeta
from broker.runtime.audit import DurabilityAudit
from broker.runtime.store import codec as c
from broker.runtime.store.codec import (
    CF_APPLY,
    CF_CONFS,
    CF_LOG,
    CF_META,
    CF_OFFSETS,
    CF_PAYLOADS,
    CF_SNAPSHOTS,
    CF_STATE,
    COLUMN_FAMILIES,
)
from broker.runtime.store.errors import (
    CorruptEntryError,
    CorruptRecordError,
    StoreClosedError,
    StoreError,
    StoreIdentityError,
    StoreLockedError,
    StoreNotFoundError,
)
from broker.runtime.store.group import GroupStorage
from broker.runtime.store.payloads import (
    DEFAULT_SEGMENT_BYTES,
    PayloadSegments,
    StagedPayloads,
)
from broker.runtime.store.plan import Draft, Plan, build_plan, put_snapshot
from broker.runtime.store.round import EntriesOp, HardStateOp, SnapshotOp, WriteRound

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
"""On-disk format version, recorded at creation; a store of another version is refused."""

Durability = Literal["inline", "pipelined"]
DURABILITY_MODES: tuple[Durability, ...] = ("inline", "pipelined")

_LOCK_FILE = "sluice.lock"
_END = b"\xff" * 17
"""Sorts after every key of a column family."""
_PAYLOADS_DURABLE = b"payloads_durable"
DEFAULT_EXTERNAL_PAYLOAD_BYTES = 32 << 10
"""Entries with payloads at least this large go to the payload segments."""


@dataclass(slots=True, eq=False)
class Written:
    """A round written but not yet acknowledged (`RocksStore.write`)."""

    seq: int
    """Its write's sequence number: durable once `synced_seq` reaches it."""
    plan: Plan
    needs_sync: bool
    """False: it only moved commit indexes or wrote state-machine data (no sync needed)."""


@dataclass(frozen=True, slots=True)
class Reclaim:
    """What `RocksStore.reclaim_space` works on (from `take_reclaim`)."""

    ranges: tuple[tuple[str, bytes, bytes], ...]
    """(column family, lo, hi): key ranges whose records were deleted since the last one."""
    segments: tuple[int, ...]
    """The sealed payload segments (none of them can gain a pointer any more)."""


@contextlib.contextmanager
def _wrapped(what: str) -> Iterator[None]:
    """Translate rocksdict's bare exceptions into StoreError (ours pass through)."""
    try:
        yield
    except StoreError:
        raise
    except DbClosedError as exc:
        raise StoreClosedError(f"{what}: the store is closed") from exc
    except Exception as exc:
        raise StoreError(f"{what}: {exc}") from exc


class RocksStore:
    """One broker's store; `RocksStore.open(data_dir, node_id, ...)` (or the constructor).
    Not thread-safe: one Trio task drives the writes; reads may come from any task of the
    same thread."""

    # -- open / close -------------------------------------------------------------------------

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        node_id: int,
        *,
        create_if_missing: bool = True,
        durability: Durability = "inline",
        member_codec: c.MemberCodec = c.DEFAULT_MEMBER_CODEC,
        entry_cache_bytes: int = 1 << 20,
        audit: bool | DurabilityAudit = False,
        new_incarnation: Callable[[], int] | None = None,
        clock: Callable[[], float] = time.time,
        external_payload_bytes: int = DEFAULT_EXTERNAL_PAYLOAD_BYTES,
        payload_segment_bytes: int = DEFAULT_SEGMENT_BYTES,
    ) -> None:
        """Open (or create) the store of `node_id` under `data_dir`.

        Raises StoreLockedError if another open store holds the directory, StoreNotFoundError
        if it holds no store and `create_if_missing` is false, StoreIdentityError if it
        belongs to another node id or format version. `new_incarnation` (default: 64 random
        bits) and `clock` are used only at creation. `entry_cache_bytes` bounds each group's
        cache of recent entries. `audit` switches the durability audit on (tests). Entries
        of at least `external_payload_bytes` (0: none) keep their payloads in segment files
        of about `payload_segment_bytes` each."""
        if durability not in DURABILITY_MODES:
            raise ValueError(f"durability must be one of {DURABILITY_MODES}, not {durability!r}")
        c.check_u64(node_id, "node id")
        self._path = Path(data_dir)
        self._durability: Durability = durability
        self._codec = member_codec
        self._cache_limit = max(0, entry_cache_bytes)
        self._external_bytes = max(0, external_payload_bytes)
        self._segment_bytes = payload_segment_bytes
        self._segments: PayloadSegments | None = None
        self._durable_recorded: tuple[int, int] = (0, 0)
        """The `payloads_durable` mark as the last written batch left it."""
        if isinstance(audit, DurabilityAudit):
            self._audit: DurabilityAudit | None = audit
        else:
            self._audit = DurabilityAudit() if audit else None
        self._db: Rdict | None = None
        self._views: dict[str, Rdict] = {}
        self._handles: dict[str, ColumnFamily] = {}
        self._groups: dict[int, GroupStorage] = {}
        self._lock_fd: int | None = None
        self._seq = 0
        self._synced_seq = 0
        self._flushing = False
        self._in_flight = False
        self._written: dict[int, Draft] = {}
        """Per group, the Draft of its latest round written but not yet acknowledged."""
        self.synced_commits = 0
        """Commits that made their write durable with a sync (the runtime times these)."""
        self._failed: BaseException | None = None
        self._wo_sync = WriteOptions()
        self._wo_sync.sync = True
        self._wo_nosync = WriteOptions()
        self._wo_nosync.sync = False
        self._incarnation = 0
        self._cluster_id: str | None = None
        self._removed_log: dict[int, int] = {}
        """Per group, the highest index compacted away since the last `take_reclaim`."""
        self._removed_offsets: dict[int, int] = {}
        """Per group, the highest offset-index key deleted below since then."""
        self._removed_groups: set[int] = set()
        """Groups deleted since then."""
        self._reclaiming = False
        self.reclaim_passes = 0
        """`reclaim_space` calls that finished (tests, diagnostics)."""
        self.segments_removed = 0
        """Payload segment files deleted while the store was open."""
        try:
            self._open(node_id, create_if_missing, new_incarnation, clock)
        except BaseException:
            self.close()
            raise

    @classmethod
    def open(
        cls,
        data_dir: str | os.PathLike[str],
        node_id: int,
        *,
        create_if_missing: bool = True,
        durability: Durability = "inline",
        member_codec: c.MemberCodec = c.DEFAULT_MEMBER_CODEC,
        entry_cache_bytes: int = 1 << 20,
        audit: bool | DurabilityAudit = False,
        new_incarnation: Callable[[], int] | None = None,
        clock: Callable[[], float] = time.time,
        external_payload_bytes: int = DEFAULT_EXTERNAL_PAYLOAD_BYTES,
        payload_segment_bytes: int = DEFAULT_SEGMENT_BYTES,
    ) -> RocksStore:
        """Open (or create) a store; see the constructor."""
        return cls(
            data_dir,
            node_id,
            create_if_missing=create_if_missing,
            durability=durability,
            member_codec=member_codec,
            entry_cache_bytes=entry_cache_bytes,
            audit=audit,
            new_incarnation=new_incarnation,
            clock=clock,
            external_payload_bytes=external_payload_bytes,
            payload_segment_bytes=payload_segment_bytes,
        )

    def _open(
        self,
        node_id: int,
        create_if_missing: bool,
        new_incarnation: Callable[[], int] | None,
        clock: Callable[[], float],
    ) -> None:
        db_path = self._path / "db"
        if not self._path.is_dir() or not (db_path / "CURRENT").exists():
            if not create_if_missing:
                raise StoreNotFoundError(f"no Sluice store in {self._path}")
            try:
                self._path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create data directory {self._path}: {exc}") from exc
        self._lock()
        opts = Options(raw_mode=True)
        opts.create_if_missing(create_if_missing)
        opts.create_missing_column_families(True)
        opts.set_max_background_jobs(2)
        opts.set_keep_log_file_num(4)
        opts.set_max_total_wal_size(256 << 20)
        cfs = {name: Options(raw_mode=True) for name in COLUMN_FAMILIES}
        try:
            self._db = Rdict(str(db_path), opts, column_families=cfs)
        except Exception as exc:
            if "lock" in str(exc).lower():
                raise StoreLockedError(
                    f"the RocksDB database in {self._path} is in use by another open store: {exc}"
                ) from exc
            raise StoreError(f"cannot open the RocksDB database in {db_path}: {exc}") from exc
        with _wrapped("open column families"):
            for name in COLUMN_FAMILIES:
                self._views[name] = self._db.get_column_family(name)
                self._handles[name] = self._db.get_column_family_handle(name)
            # What recovery replayed from the WAL may not have been synced before a crash.
            self._db.flush_wal(True)
        try:
            self._segments = PayloadSegments(self._path / "payloads", self._segment_bytes)
        except OSError as exc:
            raise StoreError(f"cannot open the payload segments in {self._path}: {exc}") from exc
        self._load_identity(node_id, new_incarnation, clock)
        self._repair_payloads()
        self._reclaim_segments()
        self._load_groups()

    def _lock(self) -> None:
        path = self._path / _LOCK_FILE
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StoreError(f"cannot create lock file {path}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise StoreLockedError(
                f"data directory {self._path} is in use by another open store (pid {holder}); "
                "stop that broker or use another data directory"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def close(self) -> None:
        """Close the database and release the directory lock (idempotent). CF views and
        handles are dropped first: a live one would keep RocksDB's LOCK held. Refused while
        a commit or a sync is in flight (its flush still uses the database). Rounds written
        and never acknowledged stay in the WAL as they are (like a crash after the write)."""
        if self._in_flight or self._flushing or self._reclaiming:
            raise StoreError("cannot close the store while a commit or a reclaim is in flight")
        self._written.clear()
        while self._views:
            with contextlib.suppress(Exception):
                self._views.popitem()[1].close()
        self._handles.clear()
        for group in self._groups.values():
            group.detach()
        self._groups.clear()
        db, self._db = self._db, None
        if db is not None:
            with _wrapped("close"):
                db.close()
        segments, self._segments = self._segments, None
        if segments is not None:
            segments.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def __enter__(self) -> RocksStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- identity -----------------------------------------------------------------------------

    def _meta_int(self, key: bytes) -> int | None:
        value = self._get(CF_META, key)
        if value is None:
            return None
        body = c.unseal(value, f"meta {key.decode()}")
        if len(body) != 8:
            raise CorruptRecordError(f"meta {key.decode()}", "not a u64")
        return int(c.U64.unpack(body)[0])

    def _load_identity(
        self, node_id: int, new_incarnation: Callable[[], int] | None, clock: Callable[[], float]
    ) -> None:
        stored = self._meta_int(b"node_id")
        if stored is None:
            for name in (*COLUMN_FAMILIES, "default"):
                with _wrapped("scan"):
                    view = self._db if name == "default" else self._views[name]
                    found = next(iter(view.keys()), None) is not None  # type: ignore[union-attr]
                    del view
                    if found:
                        raise StoreIdentityError(
                            f"{self._path} holds data but no identity record; "
                            "it was not created by Sluice"
                        )
            incarnation = new_incarnation() if new_incarnation else secrets.randbits(64)
            c.check_u64(incarnation, "incarnation")
            created_ms = int(clock() * 1000)
            wb = WriteBatch(raw_mode=True)
            for key, value in (
                (b"node_id", node_id),
                (b"format_version", FORMAT_VERSION),
                (b"incarnation", incarnation),
                (b"created_at", max(0, created_ms)),
            ):
                wb.put(key, c.seal(c.U64.pack(value)), self._handles[CF_META])
            self._write_now(wb)
            stored = node_id
        version = self._meta_int(b"format_version")
        if version != FORMAT_VERSION:
            raise StoreIdentityError(
                f"{self._path} has on-disk format version {version}; this broker reads format "
                f"{FORMAT_VERSION}: migrate the directory or use another one"
            )
        if stored != node_id:
            raise StoreIdentityError(
                f"{self._path} belongs to node {stored}, but this broker is node {node_id}: "
                "start it with that node id or use another data directory"
            )
        self._incarnation = self._meta_int(b"incarnation") or 0
        raw = self._get(CF_META, b"cluster_id")
        self._cluster_id = c.unseal(raw, "meta cluster_id").decode() if raw is not None else None

    @property
    def incarnation(self) -> int:
        """A random 64-bit id drawn when the store was created: a broker whose directory was
        lost comes back as a new incarnation."""
        return self._incarnation

    @property
    def cluster_id(self) -> str | None:
        return self._cluster_id

    @property
    def audit(self) -> DurabilityAudit | None:
        return self._audit

    def record_cluster_id(self, cluster_id: str) -> None:
        """Record the cluster this broker joined (write once, synced). Recording the same id
        again is a no-op; another id raises StoreIdentityError."""
        if self._cluster_id is not None:
            if self._cluster_id != cluster_id:
                raise StoreIdentityError(
                    f"{self._path} belongs to cluster {self._cluster_id!r}, "
                    f"not {cluster_id!r}: use another data directory"
                )
            return
        if not cluster_id:
            raise StoreError("a cluster id must not be empty")
        wb = WriteBatch(raw_mode=True)
        wb.put(b"cluster_id", c.seal(cluster_id.encode()), self._handles[CF_META])
        self._write_now(wb)
        self._cluster_id = cluster_id

    # -- payload segments ---------------------------------------------------------------------

    def _repair_payloads(self) -> None:
        """After a power loss the WAL may hold entries whose payloads never reached the disk
        (payloads.py). Check each entry placed at or after the last durable mark that still
        points there; cut a group whose entry lost its payload from that entry (log and
        configuration records; the hard state's commit lowered to what remains). None of the
        cut entries was acknowledged: the sync of their round, which syncs the payloads
        first, never finished, so neither did anything after them in their group."""
        raw = self._get(CF_META, _PAYLOADS_DURABLE)
        if raw is not None:
            body = c.unseal(raw, "meta payloads_durable")
            if len(body) != c.KEY2.size:
                raise CorruptRecordError("meta payloads_durable", "not two u64")
            segment, position = c.KEY2.unpack(body)
            self._durable_recorded = (segment, position)
        cut: dict[int, int] = {}
        lost: list[bytes] = []
        for key, value in self._range(CF_PAYLOADS, c.KEY2.pack(*self._durable_recorded), _END):
            g, index = c.KEY2.unpack(value)
            record = self._pointing_at(key, g, index)
            if record is None:
                continue  # replaced since: a truncation, a snapshot, a deletion
            try:
                c.decode_entry(self._codec, g, index, record, self.read_payload)
            except CorruptEntryError:
                cut[g] = min(index, cut.get(g, index))
                lost.append(key)
        if not cut:
            return
        wb = WriteBatch(raw_mode=True)
        for g, index in sorted(cut.items()):
            log.warning(
                "group %d: the payloads of entries from %d on were lost in a crash before "
                "they were acknowledged; the log is cut there",
                g,
                index,
            )
            wb.delete_range(c.indexed_key(g, index), c.group_end(g), self._handles[CF_LOG])
            wb.delete_range(c.indexed_key(g, index), c.group_end(g), self._handles[CF_CONFS])
            raw_hs = self._get(CF_STATE, c.group_key(g))
            if raw_hs is not None:
                hs = c.decode_hard_state(self._codec, raw_hs, f"group {g} hard state")
                if hs.commit >= index:
                    lowered = HardState(hs.term, hs.vote, index - 1)
                    wb.put(
                        c.group_key(g),
                        c.encode_hard_state(self._codec, lowered),
                        self._handles[CF_STATE],
                    )
        for key in lost:
            wb.delete(key, self._handles[CF_PAYLOADS])
        self._write_now(wb)

    def _pointing_at(self, key: bytes, group: int, index: int) -> bytes | None:
        """The log record of entry (`group`, `index`) if it still points at the payload whose
        `payloads` key is `key` (None: replaced, deleted or compacted since)."""
        record = self._get(CF_LOG, c.indexed_key(group, index))
        pointer = c.external_pointer(record) if record is not None else None
        return record if pointer is not None and c.KEY2.pack(*pointer[:2]) == key else None

    def _reclaim_segments(self) -> None:
        """At open: delete each sealed payload segment no entry points into any more."""
        segments = self._segments
        assert segments is not None
        sealed = [s for s in segments.segments() if s != segments.active]
        self.remove_segments(self._dead_segments(sealed))

    def _dead_segments(self, sealed: Iterable[int]) -> list[int]:
        """The segments of `sealed` no entry points into: a `payloads` record counts only
        if the log entry it names still points at it (a deleted group, a replaced suffix, a
        compacted prefix leave records that do not). Reads only (any thread)."""
        dead: list[int] = []
        for segment in sealed:
            lo, hi = c.KEY2.pack(segment, 0), c.KEY2.pack(segment + 1, 0)
            live = False
            for key, value in self._range(CF_PAYLOADS, lo, hi):
                if self._pointing_at(key, *c.KEY2.unpack(value)) is not None:
                    live = True
                    break
            if not live:
                dead.append(segment)
        return dead

    def remove_segments(self, dead: list[int]) -> None:
        """Delete sealed payload segments that `_dead_segments` found dead: their
        `payloads` records first, in a synced write, which also makes durable every write
        the search read (so no entry that survives a crash points into them), then their
        files. On the writer's thread."""
        segments = self._segments
        if not dead or segments is None:
            return
        wb = WriteBatch(raw_mode=True)
        for segment in dead:
            lo, hi = c.KEY2.pack(segment, 0), c.KEY2.pack(segment + 1, 0)
            wb.delete_range(lo, hi, self._handles[CF_PAYLOADS])
        self._write_now(wb)
        for segment in dead:
            segments.remove(segment)
        self.segments_removed += len(dead)
        log.info("deleted %d payload segment(s) no entry points into", len(dead))

    # -- giving the disk back ------------------------------------------------------------------

    def take_reclaim(self) -> Reclaim | None:
        """The key ranges deleted since the last call (compacted log prefixes, offset-index
        records below a moved log start, deleted groups) and the sealed payload segments,
        or None when nothing was deleted. On the writer's thread."""
        if not (self._removed_log or self._removed_offsets or self._removed_groups):
            return None
        segments = self._segments
        if segments is None:
            raise StoreClosedError(f"the store in {self._path} is closed")
        ranges: list[tuple[str, bytes, bytes]] = []
        for g, index in sorted(self._removed_log.items()):
            ranges.append((CF_LOG, c.group_key(g), c.indexed_key(g, index + 1)))
        for g, key in sorted(self._removed_offsets.items()):
            ranges.append((CF_OFFSETS, c.group_key(g), c.indexed_key(g, key)))
        for g in sorted(self._removed_groups):
            lo, hi = c.group_key(g), c.group_end(g)
            ranges.extend((cf, lo, hi) for cf in (CF_LOG, CF_CONFS, CF_APPLY, CF_OFFSETS))
        self._removed_log.clear()
        self._removed_offsets.clear()
        self._removed_groups.clear()
        sealed = tuple(s for s in segments.segments() if s != segments.active)
        return Reclaim(tuple(ranges), sealed)

    def reclaim_space(self, work: Reclaim) -> list[int]:
        """Flush every column family's memtable (a WAL file goes only once no memtable
        holds a write it logged), compact each range of `work` (its deleted records leave
        the SST files), so the disk is given back (rocksdict releases the GIL meanwhile);
        then return the segments of `work` no entry points into (for `remove_segments`).
        From a worker thread, one call at a time; the store refuses to close meanwhile."""
        self._check_open()
        self._reclaiming = True
        try:
            for name in COLUMN_FAMILIES:
                with _wrapped(f"flush {name}"):
                    self._views[name].flush(True)
            for cf, lo, hi in work.ranges:
                with _wrapped(f"compact {cf}"):
                    self._views[cf].compact_range(lo, hi)
            dead = self._dead_segments(work.segments)
        finally:
            self._reclaiming = False
        self.reclaim_passes += 1
        return dead

    # -- groups -------------------------------------------------------------------------------

    def _load_groups(self) -> None:
        with _wrapped("list groups"):
            keys: list[bytes] = [
                k
                for k in self._views[CF_SNAPSHOTS].keys(backwards=False)
                if isinstance(k, bytes) and len(k) == c.SNAP_KEY.size and k[-1] == c.SNAP_META
            ]
        for key in keys:
            g = c.SNAP_KEY.unpack(key)[0]
            value = self._get(CF_SNAPSHOTS, key)
            assert value is not None
            meta = c.decode_snapshot_meta(self._codec, value, f"group {g} snapshot metadata")
            group = self._load_group(g, meta)
            self._groups[g] = group
            if self._audit is not None:
                self._audit.seed(g, group.last_index(), group.hard_state)

    def _load_group(self, g: int, meta: SnapshotMeta) -> GroupStorage:
        records = self._range(CF_CONFS, c.group_key(g), c.group_end(g))
        if not records:
            raise CorruptRecordError(f"group {g} configuration history", "missing")
        confs: list[tuple[int, ConfState]] = []
        terms: list[int] = []
        for key, value in records:
            index = c.index_of(key)
            term, conf = c.decode_conf_record(self._codec, value, f"group {g} conf {index}")
            confs.append((index, conf))
            terms.append(term)
        offset, offset_term = confs[0][0], terms[0]
        last, tail = offset, None
        first_rec = self._seek(CF_LOG, c.indexed_key(g, 0), backwards=False)
        if first_rec is not None and first_rec[0][:8] == c.group_key(g):
            if c.index_of(first_rec[0]) != offset + 1:
                raise CorruptEntryError(g, offset + 1, "missing")
            last_rec = self._seek(CF_LOG, c.group_end(g), backwards=True)
            assert last_rec is not None
            last = c.index_of(last_rec[0])
            tail = c.decode_entry(self._codec, g, last, last_rec[1], self.read_payload)
        raw_hs = self._get(CF_STATE, c.group_key(g))
        hs = (
            c.decode_hard_state(self._codec, raw_hs, f"group {g} hard state")
            if raw_hs is not None
            else HardState()
        )
        return GroupStorage(
            self,
            g,
            offset=offset,
            offset_term=offset_term,
            last=last,
            hard_state=hs,
            snap_meta=meta,
            confs=confs,
            cache_limit=self._cache_limit,
            tail=tail,
        )

    def has_group(self, group_id: int) -> bool:
        return group_id in self._groups

    def group(self, group_id: int) -> GroupStorage:
        """The storage of an existing group (StoreError if there is none)."""
        try:
            return self._groups[group_id]
        except KeyError:
            self._check_open()
            raise StoreError(f"no Raft group {group_id} in this store") from None

    def create_group(self, group_id: int, conf: ConfState | None = None) -> GroupStorage:
        """Create an empty group whose initial configuration is `conf` (synced write), like
        MemoryStorage(conf). StoreError if it exists."""
        self._check_writable()
        c.check_u64(group_id, "group id")
        if group_id in self._groups:
            raise StoreError(f"Raft group {group_id} already exists")
        base = conf if conf is not None else ConfState(frozenset())
        meta = SnapshotMeta(0, 0, base)
        wb = WriteBatch(raw_mode=True)
        self._delete_group_records(wb, group_id)  # leftovers of an interrupted deletion
        put_snapshot(wb, self._handles[CF_SNAPSHOTS], self._codec, group_id, meta, b"")
        wb.put(
            c.indexed_key(group_id, 0),
            c.encode_conf_record(self._codec, 0, base),
            self._handles[CF_CONFS],
        )
        self._write_now(wb)
        group = GroupStorage(
            self,
            group_id,
            offset=0,
            offset_term=0,
            last=0,
            hard_state=HardState(),
            snap_meta=meta,
            confs=[(0, base)],
            cache_limit=self._cache_limit,
        )
        self._groups[group_id] = group
        if self._audit is not None:
            self._audit.seed(group_id, 0, HardState())
        return group

    def delete_group(self, group_id: int) -> None:
        """Delete every record of the group, its apply state and offset index (synced)."""
        self._check_writable()
        group = self.group(group_id)
        wb = WriteBatch(raw_mode=True)
        self._delete_group_records(wb, group_id)
        self._write_now(wb)
        group.detach()
        del self._groups[group_id]
        self._removed_groups.add(group_id)
        self._removed_log.pop(group_id, None)
        self._removed_offsets.pop(group_id, None)

    def _delete_group_records(self, wb: WriteBatch, group_id: int) -> None:
        lo, hi = c.group_key(group_id), c.group_end(group_id)
        for name in (CF_LOG, CF_STATE, CF_CONFS, CF_SNAPSHOTS, CF_APPLY, CF_OFFSETS):
            wb.delete_range(lo, hi, self._handles[name])

    # -- state-machine data -------------------------------------------------------------------

    def read_apply(self, group_id: int) -> bytes | None:
        """The group's apply state as of the last commit that wrote one (None: never)."""
        return self._get(CF_APPLY, c.group_key(group_id))

    def scan_offsets(
        self, group_id: int, lo: int = 0, hi: int = c.MAX_U64 + 1, limit: int | None = None
    ) -> list[tuple[int, bytes]]:
        """The group's offset-index records with keys in [lo, hi), at most `limit` of them."""
        end = c.indexed_key(group_id, hi) if hi <= c.MAX_U64 else c.group_end(group_id)
        records = self._range(CF_OFFSETS, c.indexed_key(group_id, lo), end, limit)
        return [(c.index_of(k), v) for k, v in records]

    # -- commit -------------------------------------------------------------------------------

    @property
    def durability(self) -> Durability:
        return self._durability

    @property
    def seq(self) -> int:
        """The sequence number of the last write that returned."""
        return self._seq

    @property
    def synced_seq(self) -> int:
        """Every write up to this sequence number is durable."""
        return self._synced_seq

    def commit(self, rnd: WriteRound) -> None:
        """Write the round in one WriteBatch, make it durable, then update the views (in
        `pipelined` mode: write, sync and acknowledge on this thread)."""
        if self._durability == "inline":
            plan = self._prepare(rnd)
            if plan.batch.is_empty():
                return
            self._write_plan(plan, sync=plan.needs_sync)
            if plan.needs_sync:
                self.synced_commits += 1
            self._acknowledge(plan, self._seq)
            return
        if self._in_flight:
            raise StoreError("a commit is in flight; writes are sequential")
        written = self.write(rnd)
        if written is None:
            return
        self._in_flight = True
        try:
            if written.needs_sync and written.seq > self._synced_seq:
                token = self.flush_token()
                self.sync_wal()
                self.wal_synced(token)
        finally:
            self._in_flight = False
        self.acknowledge(written)

    def write(self, rnd: WriteRound) -> Written | None:
        """Plan and write the round, not yet durable (`pipelined` mode; in `inline` mode the
        write is synced); None if it writes nothing. Acknowledge each Written, in order, once
        `synced_seq` reaches it (or at once if it needs no sync)."""
        plan = self._prepare(rnd)
        if plan.batch.is_empty():
            return None
        sync = plan.needs_sync and self._durability == "inline"
        self._write_plan(plan, sync=sync)
        written = self._written
        for g, draft in plan.drafts.items():
            written[g] = draft
        return Written(self._seq, plan, plan.needs_sync)

    def flush_token(self) -> int:
        """Take just before asking for a sync: the writes it will cover (`wal_synced`)."""
        return self._audit.flush_started() if self._audit is not None else self._seq

    def sync_wal(self) -> None:
        """Make every write that returned before this call durable (`flush_wal(True)`; any
        thread; the GIL is released while it syncs). A failure fails the store."""
        db = self._db
        segments = self._segments
        if db is None or segments is None:
            raise StoreClosedError("flush_wal: the store is closed")
        self._flushing = True
        try:
            segments.sync()
            db.flush_wal(True)
        except Exception as exc:
            self._failed = exc
            raise StoreError(f"flush_wal failed; the store is now failed: {exc}") from exc
        finally:
            self._flushing = False

    def wal_synced(self, token: int) -> None:
        """A sync asked for with `token` (from `flush_token`) completed."""
        if self._audit is not None:
            self._audit.flush_completed(token)
        if token > self._synced_seq:
            self._synced_seq = token

    def acknowledge(self, written: Written) -> None:
        """The written round is durable (its sequence is synced, or it needed no sync): show
        it in the views. Rounds are acknowledged in the order they were written."""
        plan = written.plan
        pending = self._written
        for g, draft in plan.drafts.items():
            if pending.get(g) is draft:
                del pending[g]
        if written.needs_sync:
            self.synced_commits += 1
        self._acknowledge(plan, written.seq)

    def _prepare(self, rnd: WriteRound) -> Plan:
        """Pass 1 (plan.py): the round's batch, validated; nothing written, no view changed.
        Marks the round committed (it cannot be reused, even if it is refused)."""
        self._check_writable()
        rnd.mark_committed()
        return build_plan(
            rnd.ops,
            self,
            self._codec,
            self._handles,
            self._written,
            self._segments,
            self._external_bytes,
        )

    def _write_plan(self, plan: Plan, *, sync: bool) -> None:
        updates = [
            (g, d.first_touched, d.last if d.first_touched is not None else None, d.hs)
            for g, d in plan.drafts.items()
        ]
        self._write_batch(plan.batch, sync, updates, plan.payloads)
        removed = self._removed_offsets
        for g, key in plan.offsets_deleted_below.items():
            removed[g] = max(key, removed.get(g, 0))

    def _write_batch(
        self,
        wb: WriteBatch,
        sync: bool,
        updates: list[tuple[int, int | None, int | None, HardState | None]],
        payloads: StagedPayloads | None = None,
    ) -> None:
        """Append the round's payloads, then write its batch (with the latest durable mark
        of the payloads); a synced write first syncs the payloads it may make reachable."""
        db = self._db
        segments = self._segments
        if db is None or segments is None:
            raise StoreClosedError("write: the store is closed")
        try:
            if payloads is not None:
                segments.append(payloads)
            if sync and segments.dirty:
                segments.sync()
            durable = segments.durable
            if durable != self._durable_recorded:
                mark = c.seal(c.KEY2.pack(*durable))
                wb.put(_PAYLOADS_DURABLE, mark, self._handles[CF_META])
                self._durable_recorded = durable
            db.write(wb, self._wo_sync if sync else self._wo_nosync)
        except Exception as exc:
            self._failed = exc
            raise StoreError(f"write failed; the store is now failed: {exc}") from exc
        self._seq += 1
        if sync:
            self._synced_seq = self._seq
        if self._audit is not None:
            self._audit.write_returned(self._seq, updates)
            if sync:
                self._audit.synced(self._seq)

    def _write_now(self, wb: WriteBatch) -> None:
        """A synced write outside the round machinery (identity, group lifecycle). In
        `pipelined` mode a sync already running in another thread makes it wait for that
        one (rare writes: topic creation and deletion, joining a cluster)."""
        self._check_writable()
        self._write_batch(wb, True, [])

    def _write_log_upkeep(self, wb: WriteBatch) -> None:
        """A snapshot or compaction record: synced in `inline` mode; in `pipelined` mode
        unsynced, covered by the next sync (see the module docstring)."""
        self._check_writable()
        self._write_batch(wb, self._durability == "inline", [])

    def _acknowledge(self, plan: Plan, seq: int) -> None:
        """Pass 2, once write `seq` is durable: update the views; the audit (when on) checks
        that everything this commit now reports is durable: the write itself (if it needed a
        sync), each group's hard state, and each group's entries unless a later round, still
        in flight, replaces part of them (the Raft core never counts those as durable)."""
        for op in plan.installs:
            match op:
                case EntriesOp():
                    op.group.on_durable_append(op.entries)
                case HardStateOp():
                    op.group.on_durable_hard_state(op.hard_state)
                case SnapshotOp():
                    op.group.on_durable_snapshot(op.snapshot.meta)
        audit = self._audit
        if audit is not None:
            if plan.needs_sync:
                audit.assert_synced(seq)
            for g, d in plan.drafts.items():
                if d.first_touched is not None and d.last > 0 and g not in self._written:
                    audit.assert_durable(g, d.last)
                if d.hs is not None:
                    audit.assert_hard_state_durable(g, d.hs.term, d.hs.vote)

    def _check_open(self) -> None:
        if self._db is None:
            raise StoreClosedError(f"the store in {self._path} is closed")

    def _check_writable(self) -> None:
        self._check_open()
        if self._failed is not None:
            raise StoreError(f"the store failed earlier and refuses writes: {self._failed}")
        if self._in_flight:
            raise StoreError("a commit is in flight; writes are sequential")

    # -- GroupBackend (group.py): for GroupStorage only ---------------------------------------
    # Each GroupStorage reaches its store through these. The writes change no view: callers
    # use GroupStorage.create_snapshot / compact, which keep the group's view in step.

    @property
    def member_codec(self) -> c.MemberCodec:
        return self._codec

    def write_snapshot(self, group_id: int, meta: SnapshotMeta, data: bytes) -> None:
        """Record a snapshot of the group (metadata and data; see `_write_log_upkeep`)."""
        self._check_writable()
        wb = WriteBatch(raw_mode=True)
        put_snapshot(wb, self._handles[CF_SNAPSHOTS], self._codec, group_id, meta, data)
        self._write_log_upkeep(wb)

    def write_compaction(self, group_id: int, index: int, term: int, conf: ConfState) -> None:
        """Delete the group's log and configuration records up to `index` and record the new
        base configuration (`index`, `term`, `conf`) (see `_write_log_upkeep`)."""
        self._check_writable()
        g = group_id
        wb = WriteBatch(raw_mode=True)
        wb.delete_range(c.group_key(g), c.indexed_key(g, index + 1), self._handles[CF_LOG])
        wb.delete_range(c.group_key(g), c.indexed_key(g, index + 1), self._handles[CF_CONFS])
        record = c.encode_conf_record(self._codec, term, conf)
        wb.put(c.indexed_key(g, index), record, self._handles[CF_CONFS])
        self._write_log_upkeep(wb)
        self._removed_log[g] = max(index, self._removed_log.get(g, 0))

    def read_payload(self, segment: int, position: int, length: int) -> bytes:
        """An external entry's payload (fewer bytes if they are missing; OSError if its
        segment is)."""
        segments = self._segments
        if segments is None:
            raise StoreClosedError(f"the store in {self._path} is closed")
        return segments.read(segment, position, length)

    def read_snapshot_data(self, group_id: int, meta: SnapshotMeta) -> bytes:
        """The data of the group's snapshot whose metadata is `meta` (CorruptRecordError if
        it is missing or corrupt)."""
        g = group_id
        value = self._get(CF_SNAPSHOTS, c.SNAP_KEY.pack(g, c.SNAP_DATA))
        if value is None:
            raise CorruptRecordError(f"group {g} snapshot {meta.index} data", "missing")
        return c.unseal(value, f"group {g} snapshot {meta.index} data")

    # Readers never bind a CF view, handle or iterator to a local name: a traceback that
    # outlives the call would keep it alive, and with it RocksDB's LOCK after close().

    def read_log_range(self, group_id: int, lo: int, hi: int) -> Iterator[tuple[bytes, bytes]]:
        """The group's raw log records (key, value) with indexes in [lo, hi), read lazily
        (the caller may stop early)."""
        g = group_id
        self._check_open()
        ro = ReadOptions()
        ro.set_iterate_upper_bound(c.indexed_key(g, hi))
        with _wrapped(f"read group {g} log"):
            yield from self._views[CF_LOG].items(from_key=c.indexed_key(g, lo), read_opt=ro)

    def _get(self, cf: str, key: bytes) -> bytes | None:
        self._check_open()
        with _wrapped(f"get from {cf}"):
            value = self._views[cf].get(key)
        assert value is None or isinstance(value, bytes)
        return value

    def _seek(self, cf: str, key: bytes, *, backwards: bool) -> tuple[bytes, bytes] | None:
        """The first record at or after `key` (backwards: the last at or before it)."""
        self._check_open()
        with _wrapped(f"seek in {cf}"):
            for k, v in self._views[cf].items(backwards=backwards, from_key=key):
                return k, v  # type: ignore[return-value]
        return None

    def _range(
        self, cf: str, lo: bytes, hi: bytes, limit: int | None = None
    ) -> list[tuple[bytes, bytes]]:
        """Records of `cf` with keys in [lo, hi) (an upper-bound iterator), at most `limit`."""
        self._check_open()
        ro = ReadOptions()
        ro.set_iterate_upper_bound(hi)
        out: list[tuple[bytes, bytes]] = []
        with _wrapped(f"scan {cf}"):
            for key, value in self._views[cf].items(from_key=lo, read_opt=ro):
                out.append((key, value))  # type: ignore[arg-type]
                if limit is not None and len(out) >= limit:
                    break
        return out
