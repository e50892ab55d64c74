"""What one broker tells the broker assembling the status console (`/status.json`) about what
only it knows: the peer request kind "status".

A report holds this broker's identity and wall clock, its cumulative produce and fetch
counters (the console computes rates from two reports of one incarnation), and the parts of
the cluster's state kept by the groups it serves as leader: each partition log's high
watermark, last stable offset, log start and replica progress; each consumer group its
coordinator partitions hold (state, members and their assignments, committed offsets); each
open transaction its coordinator partitions hold.

Invariants:
- a report is plain CBOR (maps with text keys, arrays, text, numbers, bools, null) and its
  encoding stays under REPORT_BYTES, below the peer message bound: every list is capped
  (`ReportCaps`), the caps are halved until it fits, and `truncated` says a list was cut;
- every item names the Raft term of the group it was read from, so the assembler keeps the
  newest of two brokers that both believe they lead (a deposed leader answers until
  check-quorum deposes it);
- `BrokerReport.from_wire` accepts only that shape (ReportError otherwise): a report is peer
  input, and a broken one costs that broker's row, never the page.

Reading the node is pure; the clock and the counters come in as arguments.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace

from broker.core.groups.coordinator import GroupCoordinator
from broker.core.groups.group import ConsumerGroup
from broker.core.groups.service import OFFSETS_TOPIC
from broker.core.node import BrokerNode
from broker.core.partition import PartitionMachine
from broker.core.txn.coordinator import TransactionCoordinator, TxnEntry, TxnState
from broker.core.txn.service import TXN_TOPIC
from broker.wire.cbor import encode

STATUS = "status"
"""The peer request kind."""
VERSION = 1
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


class ReportError(ValueError):
    """A status report that does not have the expected shape."""


@dataclass(frozen=True, slots=True)
class ReportCaps:
    """How many items of each list one report holds at most."""

    partitions: int = 2000
    groups: int = 200
    members: int = 50
    """Per group."""
    assigned: int = 200
    """Partitions per member."""
    offsets: int = 500
    """Committed offsets per group."""
    txns: int = 200
    participants: int = 100
    """Partitions and groups per transaction."""

    def halved(self) -> ReportCaps:
        return ReportCaps(*(max(1, getattr(self, f.name) // 2) for f in fields(self)))


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
    """The broker's wall clock when it answered (rates divide by its differences)."""
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
            "counters": dict(self.counters),
            "partitions": [p.to_wire() for p in self.partitions],
            "groups": [g.to_wire() for g in self.groups],
            "txns": [t.to_wire() for t in self.txns],
            "truncated": self.truncated,
        }

    @classmethod
    def from_wire(cls, raw: object) -> BrokerReport:
        """The report in `raw` (a decoded peer answer); ReportError if it is not one."""
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
            counters={k: _number(v, k) for k, v in counters.items() if k in COUNTER_NAMES},
            partitions=tuple(_partition(p) for p in _list(raw.get("partitions"), "partitions")),
            groups=tuple(_group(g) for g in _list(raw.get("groups"), "groups")),
            txns=tuple(_txn(t) for t in _list(raw.get("txns"), "txns")),
            truncated=_bool(raw.get("truncated"), "truncated"),
        )


# -- reading the node ---------------------------------------------------------------------------


def collect_report(
    node: BrokerNode, *, time_ms: int, counters: Mapping[str, float], caps: ReportCaps
) -> BrokerReport:
    """This broker's report, each list cut at its cap (pure: reads applied state only)."""
    cut = False
    parts: list[PartitionReport] = []
    groups: list[GroupReport] = []
    txns: list[TxnReport] = []
    for (topic, partition), g in sorted(node.by_partition.items()):
        if not g.serving():
            continue
        m = g.machine
        if isinstance(m, PartitionMachine):
            if len(parts) >= caps.partitions:
                cut = True
                continue
            caught, lag = node.views.replica_lag(g)
            parts.append(
                PartitionReport(
                    topic,
                    partition,
                    g.raft.term,
                    m.high_watermark,
                    m.last_stable_offset,
                    m.log_start_offset,
                    caught,
                    lag,
                )
            )
        elif topic == OFFSETS_TOPIC and isinstance(m, GroupCoordinator):
            for gid, group in sorted(m.groups.items()):
                if len(groups) >= caps.groups:
                    cut = True
                    break
                groups.append(_group_report(gid, group, g.raft.term, caps))
        elif topic == TXN_TOPIC and isinstance(m, TransactionCoordinator):
            for tid, t in sorted(m.txns.items()):
                if t.state == TxnState.EMPTY:
                    continue
                if len(txns) >= caps.txns:
                    cut = True
                    break
                txns.append(_txn_report(tid, t, g.raft.term, time_ms, caps))
    cut = cut or any(g.truncated for g in groups) or any(t.truncated for t in txns)
    return BrokerReport(
        node.config.node_id,
        node.config.incarnation,
        time_ms,
        {k: float(v) for k, v in counters.items() if k in COUNTER_NAMES},
        tuple(parts),
        tuple(groups),
        tuple(txns),
        cut,
    )


def _txn_report(tid: str, t: TxnEntry, term: int, time_ms: int, caps: ReportCaps) -> TxnReport:
    ordered = sorted(t.participants, key=lambda p: (p.name, p.partition))
    tps = [(p.name, p.partition) for p in ordered if not p.is_group]
    names = [p.name for p in ordered if p.is_group]
    return TxnReport(
        tid,
        term,
        t.state.name.lower(),
        t.producer_id,
        t.epoch,
        None if t.started_ms < 0 else max(0, time_ms - t.started_ms),
        t.timeout_ms,
        tuple(tps[: caps.participants]),
        tuple(names[: caps.participants]),
        len(tps) > caps.participants or len(names) > caps.participants,
    )


def _group_report(gid: str, group: ConsumerGroup, term: int, caps: ReportCaps) -> GroupReport:
    held = group.membership.members
    members: list[MemberReport] = []
    cut = len(group.members) > caps.members or len(group.offsets) > caps.offsets
    for mid, info in sorted(group.members.items())[: caps.members]:
        state = held.get(mid)
        assigned = sorted(state.held) if state is not None else []
        cut = cut or len(assigned) > caps.assigned
        members.append(
            MemberReport(
                mid,
                info.client_id,
                info.client_host,
                state.epoch if state is not None else -1,
                tuple(assigned[: caps.assigned]),
            )
        )
    offsets = tuple(
        (tp[0], tp[1], c.offset) for tp, c in sorted(group.offsets.items())[: caps.offsets]
    )
    return GroupReport(
        gid,
        term,
        group.state(),
        group.membership.epoch,
        len(group.members),
        tuple(members),
        offsets,
        cut,
    )


def fit_report(
    build: Callable[[ReportCaps], BrokerReport], limit: int = REPORT_BYTES
) -> dict[str, object]:
    """The wire form of `build(caps)` with the largest caps (from the defaults, halved each
    time) whose encoding is at most `limit` bytes; past the smallest caps, every list goes."""
    caps = ReportCaps()
    for _ in range(16):
        wire = build(caps).to_wire()
        if len(encode(wire)) <= limit:
            return wire
        caps = caps.halved()
    return replace(build(caps), partitions=(), groups=(), txns=(), truncated=True).to_wire()


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
