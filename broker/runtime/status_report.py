"""What one broker tells the broker assembling the status console (`/status.json`) about what
only it knows: the peer request kind "status".

A report holds this broker's identity, its clocks (the wall clock, shown, and a monotonic
clock with the id of the process life it belongs to, which rates divide by), its cumulative
produce and fetch counters (the console computes rates from two reports of one process life),
and the parts of the cluster's state kept by the groups it serves as leader: each partition
log's high watermark, last stable offset, log start and replica progress; each consumer group
its coordinator partitions hold (state, members and their assignments, committed offsets);
each open transaction its coordinator partitions hold.

Invariants:
- a report is plain CBOR (maps with text keys, arrays, text, numbers, bools, null), sent as
  one CBOR byte string (`report_body`: the answer is encoded once and the same bytes answer
  every asker while the responder keeps them), and its encoding stays under the budget
  (REPORT_BYTES, below the peer message bound): it is built in one pass with a running count
  of its encoded size (`wire_size`, exact but for floats, counted as 9 bytes) that stops
  adding items once one does not fit, after which it holds a prefix of what it would have
  held; every list is also capped (`ReportCaps`); `truncated` says something was cut;
- every item names the Raft term of the group it was read from, so the assembler keeps the
  newest of two brokers that both believe they lead (a deposed leader answers until
  check-quorum deposes it);
- `BrokerReport.decode` accepts only that shape (ReportError otherwise): a report is peer
  input, and a broken one costs that broker's row, never the page.

Reading the node is pure; the clocks and the counters come in as arguments.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TypeVar

from broker.core.groups.coordinator import GroupCoordinator
from broker.core.groups.group import ConsumerGroup
from broker.core.groups.service import OFFSETS_TOPIC
from broker.core.host import HostedGroup
from broker.core.node import BrokerNode
from broker.core.partition import PartitionMachine
from broker.core.peer_codec import PEER_LIMITS
from broker.core.txn.coordinator import TransactionCoordinator, TxnEntry, TxnState
from broker.core.txn.service import TXN_TOPIC
from broker.wire.cbor import decode, encode
from broker.wire.errors import WireError

STATUS = "status"
"""The peer request kind."""
VERSION = 2
REPORT_BYTES = 768 * 1024
"""Most bytes a report's encoding may take (the peer message bound is 1 MiB)."""
COUNTER_NAMES = (
    "records_produced",
    "records_fetched",
    "produce_bytes",
    "fetch_bytes",
    "request_bytes",
    "response_bytes",
)
"""Cumulative counters a report may carry (absent: the broker does not count it)."""

LIST_SLACK = 4
"""Bytes a CBOR array's head may grow by as items are added (1 byte up to 23 items, at most
5 below 2**32): reserved per list when its container is counted."""

K = TypeVar("K", str, tuple[str, int])
V = TypeVar("V")


class ReportError(ValueError):
    """A status report that does not have the expected shape."""


@dataclass(frozen=True, slots=True)
class ReportCaps:
    """How many items of each list one report holds at most."""

    partitions: int = 1000
    groups: int = 100
    members: int = 20
    """Per group."""
    assigned: int = 100
    """Partitions per member."""
    offsets: int = 200
    """Committed offsets per group."""
    txns: int = 100
    participants: int = 50
    """Partitions and groups per transaction."""


TopicPartition = tuple[str, int]


@dataclass(frozen=True, slots=True)
class PartitionReport:
    """A partition log this broker leads and serves."""

    topic: str
    partition: int
    term: int
    high_watermark: int
    last_stable_offset: int
    log_start_offset: int
    caught_up: tuple[int, ...]
    commit_lag: int

    def to_wire(self) -> list[object]:
        return [
            self.topic,
            self.partition,
            self.term,
            self.high_watermark,
            self.last_stable_offset,
            self.log_start_offset,
            list(self.caught_up),
            self.commit_lag,
        ]


@dataclass(frozen=True, slots=True)
class MemberReport:
    member_id: str
    client_id: str | None
    client_host: str | None
    epoch: int
    assigned: tuple[TopicPartition, ...]

    def to_wire(self) -> list[object]:
        assigned = [list(tp) for tp in self.assigned]
        return [self.member_id, self.client_id, self.client_host, self.epoch, assigned]


@dataclass(frozen=True, slots=True)
class GroupReport:
    """A consumer group whose coordinator partition this broker leads and serves."""

    group_id: str
    term: int
    state: str
    epoch: int
    member_count: int
    members: tuple[MemberReport, ...]
    offsets: tuple[tuple[str, int, int], ...]
    """(topic, partition, committed offset)."""
    truncated: bool

    def to_wire(self) -> list[object]:
        return [
            self.group_id,
            self.term,
            self.state,
            self.epoch,
            self.member_count,
            [m.to_wire() for m in self.members],
            [list(o) for o in self.offsets],
            self.truncated,
        ]


@dataclass(frozen=True, slots=True)
class TxnReport:
    """An open transaction whose coordinator partition this broker leads and serves."""

    transactional_id: str
    term: int
    state: str
    producer_id: int
    producer_epoch: int
    age_ms: int | None
    timeout_ms: int
    partitions: tuple[TopicPartition, ...]
    groups: tuple[str, ...]
    truncated: bool

    def to_wire(self) -> list[object]:
        return [
            self.transactional_id,
            self.term,
            self.state,
            self.producer_id,
            self.producer_epoch,
            self.age_ms,
            self.timeout_ms,
            [list(tp) for tp in self.partitions],
            list(self.groups),
            self.truncated,
        ]


@dataclass(frozen=True, slots=True)
class BrokerReport:
    node_id: int
    incarnation: int
    time_ms: int
    """The broker's wall clock when it read its state (shown; never a rate's interval)."""
    run: int
    """This life of the broker process (drawn at random when it starts): `mono_ms` of two
    reports can be compared only when their runs are the same."""
    mono_ms: int
    """The broker's monotonic clock when it read its state, in milliseconds (rates divide by
    its differences: a step of the wall clock does not skew them)."""
    counters: Mapping[str, float]
    partitions: tuple[PartitionReport, ...] = ()
    groups: tuple[GroupReport, ...] = ()
    txns: tuple[TxnReport, ...] = ()
    truncated: bool = False

    def to_wire(self) -> dict[str, object]:
        return {
            "version": VERSION,
            "node_id": self.node_id,
            "incarnation": self.incarnation,
            "time_ms": self.time_ms,
            "run": self.run,
            "mono_ms": self.mono_ms,
            "counters": dict(self.counters),
            "partitions": [p.to_wire() for p in self.partitions],
            "groups": [g.to_wire() for g in self.groups],
            "txns": [t.to_wire() for t in self.txns],
            "truncated": self.truncated,
        }

    @classmethod
    def decode(cls, body: object) -> BrokerReport:
        """The report in a `status` answer's body (`report_body`: its CBOR encoding as a byte
        string); ReportError if it is not one."""
        if not isinstance(body, bytes):
            raise ReportError("a status answer is a byte string")
        try:
            raw = decode(body, PEER_LIMITS)
        except WireError as e:
            raise ReportError(f"undecodable status report: {e.message}") from None
        return cls.from_wire(raw)

    @classmethod
    def from_wire(cls, raw: object) -> BrokerReport:
        """The report in `raw` (its decoded wire form); ReportError if it is not one."""
        if not isinstance(raw, dict):
            raise ReportError("a status report is a map")
        if raw.get("version") != VERSION:
            raise ReportError(f"status report version {raw.get('version')!r}, expected {VERSION}")
        counters = raw.get("counters")
        if not isinstance(counters, dict):
            raise ReportError("counters: expected a map")
        return cls(
            node_id=_int(raw.get("node_id"), "node_id"),
            incarnation=_int(raw.get("incarnation"), "incarnation"),
            time_ms=_int(raw.get("time_ms"), "time_ms"),
            run=_int(raw.get("run"), "run"),
            mono_ms=_int(raw.get("mono_ms"), "mono_ms"),
            counters={k: _number(v, k) for k, v in counters.items() if k in COUNTER_NAMES},
            partitions=tuple(_partition(p) for p in _list(raw.get("partitions"), "partitions")),
            groups=tuple(_group(g) for g in _list(raw.get("groups"), "groups")),
            txns=tuple(_txn(t) for t in _list(raw.get("txns"), "txns")),
            truncated=_bool(raw.get("truncated"), "truncated"),
        )


def report_body(report: BrokerReport, limit: int = REPORT_BYTES) -> bytes:
    """The body of a `status` answer: the report's CBOR encoding (a byte string on the wire).
    A report built for `limit` fits it; should one not, its lists go (`truncated`)."""
    body = encode(report.to_wire())
    if len(body) > limit:
        body = encode(replace(report, partitions=(), groups=(), txns=(), truncated=True).to_wire())
    return body


# -- the encoded size ---------------------------------------------------------------------------


def _head(n: int) -> int:
    """Bytes of a CBOR head whose argument is `n` (>= 0)."""
    if n < 24:
        return 1
    if n < 0x100:
        return 2
    if n < 0x10000:
        return 3
    return 5 if n < 0x1_0000_0000 else 9


def wire_size(v: object) -> int:
    """Bytes of `v`'s CBOR encoding (`encode`'s): exact for null, bools, integers of 64 bits,
    text, bytes, arrays and maps of them; 9 for a float (its most)."""
    if v is None or isinstance(v, bool):
        return 1
    if isinstance(v, int):
        return _head(v if v >= 0 else -1 - v)
    if isinstance(v, str):
        n = len(v.encode())
        return _head(n) + n
    if isinstance(v, float):
        return 9
    if isinstance(v, bytes):
        return _head(len(v)) + len(v)
    if isinstance(v, list | tuple):
        return _head(len(v)) + sum(map(wire_size, v))
    if isinstance(v, dict):
        return _head(len(v)) + sum(wire_size(k) + wire_size(x) for k, x in v.items())
    raise TypeError(f"no CBOR size for {type(v).__name__}")


class _Room:
    """The bytes a report has left for items. `take(n)` takes n bytes if they fit; once an
    item did not fit, nothing more is taken (`full`), so the report keeps a prefix."""

    __slots__ = ("full", "left")

    def __init__(self, left: int) -> None:
        self.left = left
        self.full = left < 0

    def take(self, n: int) -> bool:
        if self.full or n > self.left:
            self.full = True
            return False
        self.left -= n
        return True


def _first(items: Iterable[tuple[K, V]], n: int) -> tuple[list[tuple[K, V]], bool]:
    """The `n` items of the smallest keys (unique), in order, and whether there were more:
    without sorting them all."""
    got = heapq.nsmallest(n + 1, items, key=lambda kv: kv[0])
    return got[:n], len(got) > n


# -- reading the node ---------------------------------------------------------------------------


def collect_report(
    node: BrokerNode,
    *,
    time_ms: int,
    run: int,
    mono_ms: int,
    counters: Mapping[str, float],
    caps: ReportCaps | None = None,
    budget: int = REPORT_BYTES,
) -> BrokerReport:
    """This broker's report (pure: reads applied state only), in one pass: partition logs in
    (topic, partition) order, then groups, then open transactions, each list cut at its cap,
    and no item added once one would take the encoding over `budget` bytes."""
    caps = caps or ReportCaps()
    shell = BrokerReport(
        node.config.node_id,
        node.config.incarnation,
        time_ms,
        run,
        mono_ms,
        {k: float(v) for k, v in counters.items() if k in COUNTER_NAMES},
    )
    room = _Room(budget - wire_size(shell.to_wire()) - 3 * LIST_SLACK)
    logs: list[tuple[TopicPartition, HostedGroup]] = []
    group_coords: list[tuple[TopicPartition, int, GroupCoordinator]] = []
    txn_coords: list[tuple[TopicPartition, int, TransactionCoordinator]] = []
    for key, g in node.by_partition.items():
        if not g.serving():
            continue
        m = g.machine
        if isinstance(m, PartitionMachine):
            logs.append((key, g))
        elif key[0] == OFFSETS_TOPIC and isinstance(m, GroupCoordinator):
            group_coords.append((key, g.raft.term, m))
        elif key[0] == TXN_TOPIC and isinstance(m, TransactionCoordinator):
            txn_coords.append((key, g.raft.term, m))

    parts: list[PartitionReport] = []
    first_logs, cut = _first(logs, caps.partitions)
    for (topic, partition), g in first_logs:
        m = g.machine
        assert isinstance(m, PartitionMachine)
        caught, lag = node.views.replica_lag(g)
        p = PartitionReport(
            topic,
            partition,
            g.raft.term,
            m.high_watermark,
            m.last_stable_offset,
            m.log_start_offset,
            caught,
            lag,
        )
        if not room.take(wire_size(p.to_wire())):
            break
        parts.append(p)

    groups: list[GroupReport] = []
    for _, term, gm in sorted(group_coords, key=lambda c: c[0]):
        if room.full:
            break
        chosen, more = _first(gm.groups.items(), caps.groups - len(groups))
        cut = cut or more
        for gid, group in chosen:
            gr = _group_report(gid, group, term, caps, room)
            if gr is None:
                break
            groups.append(gr)

    txns: list[TxnReport] = []
    for _, term, tm in sorted(txn_coords, key=lambda c: c[0]):
        if room.full:
            break
        open_txns = ((tid, t) for tid, t in tm.txns.items() if t.state != TxnState.EMPTY)
        chosen_txns, more = _first(open_txns, caps.txns - len(txns))
        cut = cut or more
        for tid, t in chosen_txns:
            tr = _txn_report(tid, t, term, time_ms, caps, room)
            if tr is None:
                break
            txns.append(tr)

    cut = cut or room.full or any(g.truncated for g in groups) or any(t.truncated for t in txns)
    return replace(
        shell, partitions=tuple(parts), groups=tuple(groups), txns=tuple(txns), truncated=cut
    )


def _txn_report(
    tid: str, t: TxnEntry, term: int, time_ms: int, caps: ReportCaps, room: _Room
) -> TxnReport | None:
    """The transaction with as many participants as fit `room`; None if nothing of it does."""
    shell = TxnReport(
        tid,
        term,
        t.state.name.lower(),
        t.producer_id,
        t.epoch,
        None if t.started_ms < 0 else max(0, time_ms - t.started_ms),
        t.timeout_ms,
        (),
        (),
        False,
    )
    if not room.take(wire_size(shell.to_wire()) + 2 * LIST_SLACK):
        return None
    n = caps.participants
    tps = heapq.nsmallest(n + 1, ((p.name, p.partition) for p in t.participants if not p.is_group))
    names = heapq.nsmallest(n + 1, (p.name for p in t.participants if p.is_group))
    cut = len(tps) > n or len(names) > n
    kept_tps = [tp for tp in tps[:n] if room.take(wire_size(tp))]
    kept_names = [name for name in names[:n] if room.take(wire_size(name))]
    cut = cut or room.full
    return replace(shell, partitions=tuple(kept_tps), groups=tuple(kept_names), truncated=cut)


def _group_report(
    gid: str, group: ConsumerGroup, term: int, caps: ReportCaps, room: _Room
) -> GroupReport | None:
    """The group with as many members, assignments and offsets as fit `room`; None if
    nothing of it does."""
    shell = GroupReport(
        gid, term, group.state(), group.membership.epoch, len(group.members), (), (), False
    )
    if not room.take(wire_size(shell.to_wire()) + 2 * LIST_SLACK):
        return None
    held = group.membership.members
    members: list[MemberReport] = []
    chosen, cut = _first(group.members.items(), caps.members)
    for mid, info in chosen:
        state = held.get(mid)
        member = MemberReport(
            mid, info.client_id, info.client_host, state.epoch if state is not None else -1, ()
        )
        if not room.take(wire_size(member.to_wire()) + LIST_SLACK):
            break
        assigned = heapq.nsmallest(caps.assigned + 1, state.held) if state is not None else []
        cut = cut or len(assigned) > caps.assigned
        kept = [tp for tp in assigned[: caps.assigned] if room.take(wire_size(tp))]
        members.append(replace(member, assigned=tuple(kept)))
    offsets: list[tuple[str, int, int]] = []
    chosen_offsets, more = _first(group.offsets.items(), caps.offsets)
    cut = cut or more
    for (topic, partition), committed in chosen_offsets:
        o = (topic, partition, committed.offset)
        if not room.take(wire_size(o)):
            break
        offsets.append(o)
    cut = cut or room.full
    return replace(shell, members=tuple(members), offsets=tuple(offsets), truncated=cut)


# -- decoding -----------------------------------------------------------------------------------


def _int(v: object, what: str) -> int:
    if type(v) is not int:
        raise ReportError(f"{what}: expected an integer, got {type(v).__name__}")
    return v


def _opt_int(v: object, what: str) -> int | None:
    return None if v is None else _int(v, what)


def _number(v: object, what: str) -> float:
    if type(v) not in (int, float):
        raise ReportError(f"{what}: expected a number, got {type(v).__name__}")
    return float(v)  # type: ignore[arg-type]


def _str(v: object, what: str) -> str:
    if not isinstance(v, str):
        raise ReportError(f"{what}: expected text, got {type(v).__name__}")
    return v


def _opt_str(v: object, what: str) -> str | None:
    return None if v is None else _str(v, what)


def _bool(v: object, what: str) -> bool:
    if not isinstance(v, bool):
        raise ReportError(f"{what}: expected a bool, got {type(v).__name__}")
    return v


def _list(v: object, what: str, n: int | None = None) -> list[object]:
    if not isinstance(v, list) or (n is not None and len(v) != n):
        shape = "a list" if n is None else f"a list of {n}"
        raise ReportError(f"{what}: expected {shape}")
    return v


def _tp(v: object, what: str) -> TopicPartition:
    t, p = _list(v, what, 2)
    return _str(t, what), _int(p, what)


def _partition(v: object) -> PartitionReport:
    t, p, term, hw, lso, start, caught, lag = _list(v, "partition", 8)
    return PartitionReport(
        _str(t, "topic"),
        _int(p, "partition"),
        _int(term, "term"),
        _int(hw, "high_watermark"),
        _int(lso, "last_stable_offset"),
        _int(start, "log_start_offset"),
        tuple(_int(c, "caught_up") for c in _list(caught, "caught_up")),
        _int(lag, "commit_lag"),
    )


def _member(v: object) -> MemberReport:
    mid, client, host, epoch, assigned = _list(v, "member", 5)
    return MemberReport(
        _str(mid, "member_id"),
        _opt_str(client, "client_id"),
        _opt_str(host, "client_host"),
        _int(epoch, "epoch"),
        tuple(_tp(a, "assigned") for a in _list(assigned, "assigned")),
    )


def _offset(v: object) -> tuple[str, int, int]:
    t, p, o = _list(v, "offset", 3)
    return _str(t, "topic"), _int(p, "partition"), _int(o, "offset")


def _group(v: object) -> GroupReport:
    gid, term, state, epoch, count, members, offsets, cut = _list(v, "group", 8)
    return GroupReport(
        _str(gid, "group_id"),
        _int(term, "term"),
        _str(state, "state"),
        _int(epoch, "epoch"),
        _int(count, "member_count"),
        tuple(_member(m) for m in _list(members, "members")),
        tuple(_offset(o) for o in _list(offsets, "offsets")),
        _bool(cut, "truncated"),
    )


def _txn(v: object) -> TxnReport:
    tid, term, state, pid, epoch, age, timeout, parts, groups, cut = _list(v, "txn", 10)
    return TxnReport(
        _str(tid, "transactional_id"),
        _int(term, "term"),
        _str(state, "state"),
        _int(pid, "producer_id"),
        _int(epoch, "producer_epoch"),
        _opt_int(age, "age_ms"),
        _int(timeout, "timeout_ms"),
        tuple(_tp(p, "partitions") for p in _list(parts, "partitions")),
        tuple(_str(g, "groups") for g in _list(groups, "groups")),
        _bool(cut, "truncated"),
    )
