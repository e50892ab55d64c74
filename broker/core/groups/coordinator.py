"""GroupCoordinator: the state machine of one partition of `__consumer_offsets`.

It hosts every consumer group whose id hashes to its partition (`coordinator_partition`).
Commands (CBOR maps with an "op") are proposed by the partition's serving leader and applied
in log order on every replica; each returns the answer its proposer gives the client:

- heartbeat: join, reconcile, report released partitions (ConsumerGroup.heartbeat);
- leave, expire (proposed by the leader's session timer, void if the member was heard from
  since), refresh (new partitions or pattern matches seen in metadata), commit, delete,
  drop_topics (offsets of deleted topics), expire_group (empty for the configured time).

Persistence is keyed and incremental: one record per group (its membership and offsets),
rewritten only when the group changed; the apply state is (applied index, next free record
key, free keys). A snapshot is every group at `applied_index`.

Leader timers are soft state, never replicated: a tick count that advances only while this
replica serves as leader, and per member the count at which it was last heard. A member heard
while this replica followed is stamped with the frozen count, so a new leader gives every
member a whole session timeout from its first serving tick. Nothing time-dependent is decided
inside apply: an expiry is a command, guarded by the entry index that last heard the member.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from broker.core.groups.group import ConsumerGroup, Heartbeat
from broker.core.groups.group_codec import encode_group, group_from_wire, group_to_wire
from broker.core.groups.membership import HeartbeatAnswer
from broker.core.keyed_records import KeyedRecords
from broker.core.machine import NOTHING_APPLIED, Applied, MachineWrites
from broker.core.raft import Entry, EntryKind
from broker.core.txn.ledger import TxnLedger
from broker.core.txn.protocol import Phase, TxnCommand
from broker.wire import cbor
from broker.wire.errors import ErrorCode
from broker.wire.partitioner import jump_hash, key_hash64

TopicView = Callable[[], tuple[int, Mapping[str, int]]]
"""(metadata applied index, topic -> partition count of every non-internal topic)."""

LEDGER_RECORD = "\x00ledger"
"""The record holding the transaction ledger (group ids never hold control characters)."""
LEDGER_EXPIRY_MS = 7 * 24 * 3600 * 1000
"""Ended transactions are remembered this long after their last command (fencing a late
message of one needs no longer)."""
SCAN_TICKS = 10
"""The leader compares groups with metadata every this many ticks."""
RETRY_TICKS = 40
"""A timer's command not applied after this many ticks is proposed again."""


def no_clock() -> int:
    """The wall clock of a machine that has none (tests, a replica that never leads)."""
    return -1


def coordinator_partition(group_id: str, partitions: int) -> int:
    """The pinned placement of a group on `__consumer_offsets` (design.md: jump hash of
    blake2b's first 8 bytes, as for record keys)."""
    return jump_hash(key_hash64(group_id.encode()), partitions)


class GroupCoordinator:
    """Implements broker.core.machine.StateMachine."""

    def __init__(
        self,
        topics: TopicView,
        *,
        tick_ms: int,
        empty_group_expiry_ms: int,
        wall_ms: Callable[[], int] = no_clock,
    ) -> None:
        self.topics = topics
        self.wall_ms = wall_ms
        """The leader's wall clock, stamped into the commands its timers propose."""
        self.tick_ms = max(1, tick_ms)
        self.empty_expiry_ticks = max(1, empty_group_expiry_ms // self.tick_ms)
        self.groups: dict[str, ConsumerGroup] = {}
        self._applied = 0
        self._records = KeyedRecords()
        self.ledger = TxnLedger()
        """The transactions whose offsets groups of this partition hold (participant)."""
        # Leader timers (soft state).
        self._tick = 0
        self._heard: dict[tuple[str, str], int] = {}
        self._empty_since: dict[str, int] = {}
        self._proposed: dict[tuple[str, ...], int] = {}
        self.overdue: set[str] = set()
        """Groups with a member silent for more than half its session timeout (it missed a
        heartbeat): their other members poll quickly, so they learn of its expiry at once."""

    # -- StateMachine -----------------------------------------------------------------------

    @property
    def applied_index(self) -> int:
        return self._applied

    def apply_entry(self, entry: Entry) -> Applied:
        self._applied = entry.index
        if entry.kind != EntryKind.NORMAL or not entry.data:
            return NOTHING_APPLIED
        cmd = cbor.decode(entry.data)
        assert isinstance(cmd, dict), "coordinator commands are maps"
        handler = _HANDLERS.get(cmd.get("op"))
        if handler is None:
            return Applied(ErrorCode.INVALID_REQUEST, f"unknown command {cmd.get('op')!r}")
        return handler(self, cmd, entry.index)

    def take_writes(self) -> MachineWrites:
        return self._records.writes(self._applied, self._encode_record)

    def _encode_record(self, name: str) -> bytes:
        if name == LEDGER_RECORD:
            return cbor.encode({"ledger": self.ledger.to_wire()})
        return encode_group(self.groups[name])

    def snapshot(self) -> bytes:
        return cbor.encode(
            {
                "applied": self._applied,
                "groups": [group_to_wire(self.groups[g]) for g in sorted(self.groups)],
                "ledger": self.ledger.to_wire(),
            }
        )

    def restore_snapshot(self, data: bytes) -> None:
        snap = cbor.decode(data)
        assert isinstance(snap, dict)
        self.groups = {}
        for raw in snap["groups"]:
            g = group_from_wire(raw)
            self.groups[g.group_id] = g
        self._applied = snap["applied"]
        self.ledger = TxnLedger.from_wire(snap.get("ledger", []))  # none before transactions
        self._records.reset([*self.groups, LEDGER_RECORD])

    def load(self, state: bytes | None, records: Iterable[tuple[int, bytes]]) -> None:
        if state is None:
            return
        self._applied = self._records.load_state(state)
        for key, value in records:
            raw = cbor.decode(value)
            if isinstance(raw, dict) and "ledger" in raw:
                self.ledger = TxnLedger.from_wire(raw["ledger"])
                self._records.bind(LEDGER_RECORD, key)
                continue
            g = group_from_wire(raw)
            self.groups[g.group_id] = g
            self._records.bind(g.group_id, key)

    def leader_tick(self) -> list[bytes]:
        """Session expiries, empty groups past their expiry, and (every SCAN_TICKS) groups
        whose topics changed in metadata: commands to propose."""
        self._tick += 1
        now = self._tick
        out: list[bytes] = []
        self.overdue.clear()
        for gid, group in self.groups.items():
            for mid, info in group.members.items():
                heard = self._heard.setdefault((gid, mid), now)
                session = self._ticks(info.session_ms)
                if 2 * (now - heard) > session and not info.left:
                    self.overdue.add(gid)
                if now - heard > session and self._due(("x", gid, mid)):
                    out.append(cmd_expire(gid, mid, info.seen, self.wall_ms()))
            if group.empty:
                since = self._empty_since.setdefault(gid, now)
                if now - since > self.empty_expiry_ticks and self._due(("e", gid)):
                    out.append(cmd_expire_group(gid, group.changed))
            else:
                self._empty_since.pop(gid, None)
        if now % SCAN_TICKS == 0:
            out.extend(self._metadata_changes())
        return out

    def timers_pending(self) -> bool:
        """Any group (its sessions, its expiry, its offsets against metadata) or a
        pre-committed transaction keeps the leader's timers running: no quiescence."""
        return bool(self.groups) or self.ledger.has_pre_committed()

    # -- leader-side helpers ----------------------------------------------------------------

    def heard(self, group_id: str, member_id: str) -> None:
        """A heartbeat answered without a Raft entry (nothing changed): the member lives."""
        self._heard[(group_id, member_id)] = self._tick

    def _ticks(self, ms: int) -> int:
        return -(-ms // self.tick_ms)

    def _due(self, key: tuple[str, ...]) -> bool:
        last = self._proposed.get(key)
        if last is not None and self._tick - last < RETRY_TICKS:
            return False
        self._proposed[key] = self._tick
        return True

    def _metadata_changes(self) -> list[bytes]:
        meta_index, counts = self.topics()
        out: list[bytes] = []
        for gid, group in self.groups.items():
            if meta_index < group.meta_index:
                continue  # this replica's metadata is behind what the group has seen
            gone = sorted({tp[0] for tp in group.offsets} - set(counts))
            if gone and self._due(("d", gid, *gone)):
                out.append(cmd_drop_topics(gid, gone, meta_index))
            if not group.members:
                continue
            resolved = {
                mid: resolve(info.topics, info.pattern, counts)
                for mid, info in group.members.items()
            }
            wanted = {t for ts in resolved.values() for t in ts}
            ms = group.membership
            partitions = {t: counts.get(t, 0) for t in sorted(wanted | set(ms.partitions))}
            stale = any(ms.partitions.get(t, 0) != n for t, n in partitions.items()) or any(
                ms.members[mid].topics != ts for mid, ts in resolved.items() if mid in ms.members
            )
            if stale and self._due(("r", gid, str(meta_index))):
                out.append(cmd_refresh(gid, partitions, resolved, meta_index, self.wall_ms()))
        return out

    # -- apply handlers ---------------------------------------------------------------------

    def _group(self, gid: str) -> ConsumerGroup:
        g = self.groups.get(gid)
        if g is None:
            g = self.groups[gid] = ConsumerGroup(gid)
        self._records.touch(gid)
        return g

    def _drop(self, gid: str) -> None:
        del self.groups[gid]
        self._records.drop(gid)
        self._empty_since.pop(gid, None)

    def _heartbeat(self, cmd: dict[str, Any], index: int) -> Applied:
        gid = cmd["group"]
        existed = gid in self.groups
        group = self._group(gid)
        hb = Heartbeat(
            member_id=cmd["member"],
            member_epoch=cmd["epoch"],
            instance_id=cmd["instance"],
            client_id=cmd["client"],
            client_host=cmd["host"],
            session_ms=cmd["session_ms"],
            topics=tuple(cmd["topics"]),
            pattern=cmd["pattern"],
            resolved=frozenset(cmd["resolved"]),
            assignor=cmd["assignor"],
            owned=frozenset((t, p) for t, p in cmd["owned"]),
            partitions=dict(cmd["partitions"]),
        )
        error, answer = group.heartbeat(hb, index, cmd["meta_index"], cmd["now_ms"])
        if error == ErrorCode.NONE:
            self._heard[(gid, hb.member_id)] = self._tick
            self._proposed.pop(("x", gid, hb.member_id), None)
        elif not existed and group.disposable:
            self._drop(gid)
        return Applied(error, None, answer)

    def _leave(self, cmd: dict[str, Any], index: int) -> Applied:
        group = self.groups.get(cmd["group"])
        if group is None:
            return Applied(ErrorCode.UNKNOWN_MEMBER_ID)
        self._records.touch(group.group_id)
        error = group.leave(cmd["member"], cmd["epoch"], cmd["temporary"], index, cmd["now_ms"])
        return Applied(error)

    def _expire(self, cmd: dict[str, Any], index: int) -> Applied:
        group = self.groups.get(cmd["group"])
        if group is None:
            return NOTHING_APPLIED
        self._records.touch(group.group_id)
        self._heard.pop((group.group_id, cmd["member"]), None)
        return Applied(group.expire(cmd["member"], cmd["seen"], index, cmd["now_ms"]))

    def _refresh(self, cmd: dict[str, Any], index: int) -> Applied:
        group = self.groups.get(cmd["group"])
        if group is not None:
            self._records.touch(group.group_id)
            resolved = {m: frozenset(ts) for m, ts in cmd["resolved"].items()}
            group.refresh(cmd["partitions"], resolved, cmd["meta_index"], index, cmd["now_ms"])
        return NOTHING_APPLIED

    def _commit(self, cmd: dict[str, Any], index: int) -> Applied:
        gid = cmd["group"]
        existed = gid in self.groups
        group = self._group(gid)
        offsets = [(t, p, o, m) for t, p, o, m in cmd["offsets"]]
        errors = group.commit(cmd["member"], cmd["epoch"], offsets, cmd["meta_index"], index)
        if not existed and group.disposable:
            self._drop(gid)
        return Applied(value=errors)

    def _delete(self, cmd: dict[str, Any], index: int) -> Applied:
        group = self.groups.get(cmd["group"])
        if group is None:
            return Applied(ErrorCode.GROUP_ID_NOT_FOUND, f"no group {cmd['group']!r}")
        if group.members or group.pending:
            return Applied(
                ErrorCode.NON_EMPTY_GROUP,
                f"group {group.group_id!r} has {len(group.members)} members"
                f" and offsets in {len(group.pending)} open transactions",
            )
        self._drop(group.group_id)
        return NOTHING_APPLIED

    def _expire_group(self, cmd: dict[str, Any], index: int) -> Applied:
        group = self.groups.get(cmd["group"])
        if (
            group is not None
            and group.empty
            and not group.pending
            and group.changed == cmd["changed"]
        ):
            self._drop(group.group_id)
        return NOTHING_APPLIED

    def _drop_topics(self, cmd: dict[str, Any], index: int) -> Applied:
        group = self.groups.get(cmd["group"])
        if group is not None:
            self._records.touch(group.group_id)
            group.drop_topics(frozenset(cmd["topics"]), cmd["meta_index"], index)
            if group.disposable:
                self._drop(group.group_id)
        return NOTHING_APPLIED

    # -- transactions (this partition as a participant) -------------------------------------

    def _txn(self, cmd: dict[str, Any], index: int) -> Applied:
        """A coordinator's request (BEGIN .. COMMIT/ABORT) for a group's offsets."""
        txn = TxnCommand.from_wire(cmd)
        res = self.ledger.apply(txn)
        self._records.touch(LEDGER_RECORD)
        if res.closed is not None:
            committed = txn.phase == Phase.COMMIT
            for group in list(self.groups.values()):
                if group.end_transaction(txn.producer_id, committed, index):
                    self._records.touch(group.group_id)
        self.ledger.expire(txn.timestamp - LEDGER_EXPIRY_MS)
        return Applied(res.error, res.message, res)

    def _txn_offsets(self, cmd: dict[str, Any], index: int) -> Applied:
        """TxnOffsetCommit: offsets staged in the producer's open transaction."""
        offsets = [(t, p, o, m) for t, p, o, m in cmd["offsets"]]
        check = self.ledger.data_problem(cmd["pid"], cmd["pid_epoch"], True)
        if not check.ok:
            return Applied(check.error, check.message, [check.error] * len(offsets))
        gid = cmd["group"]
        existed = gid in self.groups
        group = self._group(gid)
        errors = group.commit(
            cmd["member"],
            cmd["epoch"],
            offsets,
            cmd["meta_index"],
            index,
            producer_id=cmd["pid"],
        )
        if not existed and group.disposable:
            self._drop(gid)
        return Applied(value=errors)

    # -- reads ------------------------------------------------------------------------------

    def peek(self, cmd_fields: Heartbeat, group_id: str) -> HeartbeatAnswer | None:
        """The answer to a heartbeat that changes nothing, without a Raft entry; None when
        it must be proposed."""
        group = self.groups.get(group_id)
        if group is None or cmd_fields.member_epoch == 0:
            return None
        info = group.members.get(cmd_fields.member_id)
        if info is not None and (
            info.left
            or info.client_host != cmd_fields.client_host
            or info.session_ms != cmd_fields.session_ms
            or info.topics != cmd_fields.topics
            or info.pattern != cmd_fields.pattern
        ):
            return None
        return group.membership.peek(
            cmd_fields.member_id,
            cmd_fields.member_epoch,
            cmd_fields.resolved,
            cmd_fields.owned,
            cmd_fields.partitions,
        )


_HANDLERS: dict[object, Callable[[GroupCoordinator, dict[str, Any], int], Applied]] = {
    "heartbeat": GroupCoordinator._heartbeat,
    "leave": GroupCoordinator._leave,
    "expire": GroupCoordinator._expire,
    "refresh": GroupCoordinator._refresh,
    "commit": GroupCoordinator._commit,
    "delete": GroupCoordinator._delete,
    "expire_group": GroupCoordinator._expire_group,
    "drop_topics": GroupCoordinator._drop_topics,
    "txn": GroupCoordinator._txn,
    "txn_offsets": GroupCoordinator._txn_offsets,
}


def resolve(
    topics: Iterable[str], pattern: str | None, counts: Mapping[str, int]
) -> frozenset[str]:
    """A subscription's topics: its names, and every existing topic its pattern fully
    matches (a pattern was compiled and vetted when the member sent it)."""
    out = set(topics)
    if pattern is not None:
        import re

        compiled = re.compile(pattern)
        out.update(t for t in counts if compiled.fullmatch(t))
    return frozenset(out)


# -- commands ---------------------------------------------------------------------------------


def cmd_heartbeat(group_id: str, hb: Heartbeat, meta_index: int, now_ms: int) -> bytes:
    return cbor.encode(
        {
            "op": "heartbeat",
            "group": group_id,
            "member": hb.member_id,
            "epoch": hb.member_epoch,
            "instance": hb.instance_id,
            "client": hb.client_id,
            "host": hb.client_host,
            "session_ms": hb.session_ms,
            "topics": list(hb.topics),
            "pattern": hb.pattern,
            "resolved": sorted(hb.resolved),
            "assignor": hb.assignor,
            "owned": [list(tp) for tp in sorted(hb.owned)],
            "partitions": dict(sorted(hb.partitions.items())),
            "meta_index": meta_index,
            "now_ms": now_ms,
        }
    )


def cmd_leave(group_id: str, member_id: str, epoch: int, temporary: bool, now_ms: int) -> bytes:
    return cbor.encode({"op": "leave", "group": group_id, "member": member_id, "epoch": epoch,
                        "temporary": temporary, "now_ms": now_ms})  # fmt: skip


def cmd_expire(group_id: str, member_id: str, seen: int, now_ms: int) -> bytes:
    return cbor.encode({"op": "expire", "group": group_id, "member": member_id, "seen": seen,
                        "now_ms": now_ms})  # fmt: skip


def cmd_refresh(
    group_id: str,
    partitions: Mapping[str, int],
    resolved: Mapping[str, frozenset[str]],
    meta_index: int,
    now_ms: int,
) -> bytes:
    return cbor.encode(
        {
            "op": "refresh",
            "group": group_id,
            "partitions": dict(sorted(partitions.items())),
            "resolved": {m: sorted(ts) for m, ts in sorted(resolved.items())},
            "meta_index": meta_index,
            "now_ms": now_ms,
        }
    )


def cmd_commit(
    group_id: str,
    member_id: str,
    epoch: int,
    offsets: list[tuple[str, int, int, str | None]],
    meta_index: int,
) -> bytes:
    return cbor.encode(
        {
            "op": "commit",
            "group": group_id,
            "member": member_id,
            "epoch": epoch,
            "offsets": [list(o) for o in offsets],
            "meta_index": meta_index,
        }
    )


def cmd_txn_offsets(
    group_id: str,
    producer_id: int,
    producer_epoch: int,
    member_id: str,
    member_epoch: int,
    offsets: list[tuple[str, int, int, str | None]],
    meta_index: int,
) -> bytes:
    return cbor.encode(
        {
            "op": "txn_offsets",
            "group": group_id,
            "pid": producer_id,
            "pid_epoch": producer_epoch,
            "member": member_id,
            "epoch": member_epoch,
            "offsets": [list(o) for o in offsets],
            "meta_index": meta_index,
        }
    )


def cmd_delete(group_id: str) -> bytes:
    return cbor.encode({"op": "delete", "group": group_id})


def cmd_expire_group(group_id: str, changed: int) -> bytes:
    return cbor.encode({"op": "expire_group", "group": group_id, "changed": changed})


def cmd_drop_topics(group_id: str, topics: list[str], meta_index: int) -> bytes:
    return cbor.encode(
        {"op": "drop_topics", "group": group_id, "topics": topics, "meta_index": meta_index}
    )
