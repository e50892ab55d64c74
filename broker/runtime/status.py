"""ClusterStatus: the cluster-wide document `GET /status.json` serves (the status console's
and `sluice top`'s data), assembled by the broker that serves it.

Two sources:
- this broker's copy of the metadata log and its own groups (`MetadataSnapshot.of(node)`):
  brokers and their liveness, the controller, topics, and every partition's leader,
  replicas and, where this broker knows it, replica progress;
- the `status` report of each broker it asked (status_report.py), or why there is none:
  high watermarks and replica progress of the partitions each leads, the consumer groups
  and open transactions it coordinates, and its cumulative counters with its clocks (the
  wall clock, shown, and a monotonic one with its process life's id, `run`: a rate is the
  difference of two reports' counters over the difference of their `mono_ms`, for one
  incarnation and run only).

Invariants:
- a broker is `up` only when it answered the status request by the deadline AND the
  metadata log does not hold it failed; the serving broker is always up (it is answering);
- when two reports name the same partition, group or transaction (a deposed leader answers
  until check-quorum deposes it), the one read from the newer Raft term wins;
- a partition's high watermark, LSO and log start come from a report of its current leader:
  one read in a Raft term at least the leader term this broker's metadata knows; without one
  (the current leader did not answer, only a deposed one did) they are null, never stale;
- a group's lag on a partition is that high watermark minus the committed offset (never
  negative), null when it is unknown;
- every list is bounded (`StatusLimits`); `truncated` says which were cut, and which
  brokers' reports were cut at their source.

Pure: the caller supplies the clocks (`time_ms`, `mono_ms` and `run`) and the answers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from broker.core.metadata import INTERNAL_PREFIX
from broker.core.node import BrokerNode, PartitionStatus
from broker.runtime.status_report import BrokerReport, GroupReport, PartitionReport, TxnReport

FORMAT_VERSION = 1

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class StatusLimits:
    """How many items each list of the document holds at most."""

    topics: int = 1000
    partitions: int = 1000
    groups: int = 1000
    transactions: int = 1000


@dataclass(frozen=True, slots=True)
class BrokerRow:
    """A broker as the metadata log records it."""

    id: int
    host: str
    port: int
    rack: str | None
    alive: bool


@dataclass(frozen=True, slots=True)
class TopicRow:
    name: str
    partitions: int
    replication_factor: int


@dataclass(frozen=True, slots=True)
class MetadataSnapshot:
    """What the serving broker's own state says about the cluster."""

    node_id: int
    cluster_id: str | None
    controller: int | None
    brokers: tuple[BrokerRow, ...]
    topics: tuple[TopicRow, ...]
    partitions: tuple[PartitionStatus, ...]

    @classmethod
    def of(cls, node: BrokerNode) -> MetadataSnapshot:
        meta = node.meta
        brokers = [
            BrokerRow(b.id, b.host, b.port, b.rack, meta.alive.get(b.id, False))
            for _, b in sorted(meta.brokers.items())
        ]
        me = node.config.node_id
        if me not in meta.brokers:  # not registered yet: it still answers for itself
            a = node.ctx.advertised
            brokers.append(BrokerRow(me, a.host, a.port, a.rack, False))
            brokers.sort(key=lambda b: b.id)
        topics = [
            TopicRow(t.name, len(t.partitions), t.replication_factor)
            for _, t in sorted(meta.topics.items())
        ]
        return cls(
            me,
            meta.cluster_id,
            node.controller,
            tuple(brokers),
            tuple(topics),
            tuple(node.describe_partitions()),
        )

    def broker_ids(self) -> list[int]:
        """The brokers to ask for a report: every registered one and this one."""
        return sorted({b.id for b in self.brokers} | {self.node_id})


@dataclass(frozen=True, slots=True)
class BrokerAnswer:
    """How asking one broker for its report ended: the report, or an error (`answered`
    False when nothing came back by the deadline: the broker counts as down)."""

    report: BrokerReport | None
    answered: bool
    error: str | None = None
    ms: float | None = None
    """The round trip, milliseconds."""


class ClusterStatus:
    """Builds the `/status.json` document from a metadata snapshot and the answers."""

    def __init__(
        self,
        snapshot: MetadataSnapshot,
        answers: Mapping[int, BrokerAnswer],
        *,
        time_ms: int,
        mono_ms: int | None = None,
        run: int | None = None,
        limits: StatusLimits | None = None,
    ) -> None:
        self.snapshot = snapshot
        self.answers = answers
        self.time_ms = time_ms
        self.mono_ms = mono_ms
        self.run = run
        self.limits = limits or StatusLimits()
        self.reports = [a.report for _, a in sorted(answers.items()) if a.report is not None]
        newest_reports = newest(
            ((p.topic, p.partition), p.term, p) for r in self.reports for p in r.partitions
        )
        terms = {(p.topic, p.view.partition): p.view.leader_term for p in snapshot.partitions}
        self.leading: dict[tuple[str, int], PartitionReport] = {
            key: p for key, p in newest_reports.items() if p.term >= terms.get(key, p.term)
        }
        """Per partition, the report of its current leader (see the module's invariants)."""

    def build(self) -> dict[str, object]:
        snap, lim = self.snapshot, self.limits
        topics = _internal_last(snap.topics, lambda t: (t.name, 0))
        parts = _internal_last(snap.partitions, lambda p: (p.topic, p.view.partition))
        groups = newest(
            (g.group_id, g.term, (r.node_id, g)) for r in self.reports for g in r.groups
        )
        txns = newest(
            (t.transactional_id, t.term, (r.node_id, t)) for r in self.reports for t in r.txns
        )
        return {
            "version": FORMAT_VERSION,
            "served_by": snap.node_id,
            "time_ms": self.time_ms,
            "mono_ms": self.mono_ms,
            "run": self.run,
            "cluster_id": snap.cluster_id,
            "controller": snap.controller,
            "brokers": [self._broker(b) for b in snap.brokers],
            "topics": [self._topic(t) for t in topics[: lim.topics]],
            "partitions": [self._partition(p) for p in parts[: lim.partitions]],
            "groups": [self._group(*groups[k]) for k in sorted(groups)[: lim.groups]],
            "transactions": [self._txn(*txns[k]) for k in sorted(txns)[: lim.transactions]],
            "truncated": {
                "topics": len(topics) > lim.topics,
                "partitions": len(parts) > lim.partitions,
                "groups": len(groups) > lim.groups,
                "transactions": len(txns) > lim.transactions,
                "reports": sorted(r.node_id for r in self.reports if r.truncated),
            },
            "limits": {
                "topics": lim.topics,
                "partitions": lim.partitions,
                "groups": lim.groups,
                "transactions": lim.transactions,
            },
        }

    # -- rows -------------------------------------------------------------------------------

    def _broker(self, b: BrokerRow) -> dict[str, object]:
        a = self.answers.get(b.id)
        me = b.id == self.snapshot.node_id
        answered = a is not None and a.answered
        r = a.report if a is not None else None
        return {
            "id": b.id,
            "address": f"{b.host}:{b.port}",
            "rack": b.rack,
            "alive": b.alive,
            "answered": answered,
            "up": me or (answered and b.alive),
            "controller": b.id == self.snapshot.controller,
            "error": None if a is None else a.error,
            "ms": None if a is None else a.ms,
            "incarnation": None if r is None else r.incarnation,
            "run": None if r is None else r.run,
            "time_ms": None if r is None else r.time_ms,
            "mono_ms": None if r is None else r.mono_ms,
            "counters": None if r is None else dict(r.counters),
        }

    @staticmethod
    def _topic(t: TopicRow) -> dict[str, object]:
        return {
            "name": t.name,
            "internal": t.name.startswith(INTERNAL_PREFIX),
            "partitions": t.partitions,
            "replication_factor": t.replication_factor,
        }

    def _partition(self, p: PartitionStatus) -> dict[str, object]:
        led = self.leading.get((p.topic, p.view.partition))
        caught = p.caught_up if led is None else led.caught_up
        lag = p.commit_lag if led is None else led.commit_lag
        return {
            "topic": p.topic,
            "partition": p.view.partition,
            "leader": p.view.leader,
            "leader_term": p.view.leader_term,
            "replicas": list(p.view.replicas),
            "caught_up": list(caught),
            "commit_lag": None if lag < 0 else lag,
            "high_watermark": None if led is None else led.high_watermark,
            "last_stable_offset": None if led is None else led.last_stable_offset,
            "log_start_offset": None if led is None else led.log_start_offset,
        }

    def _group(self, coordinator: int, g: GroupReport) -> dict[str, object]:
        offsets = []
        total: int | None = 0
        for topic, partition, committed in g.offsets:
            led = self.leading.get((topic, partition))
            lag = None if led is None else max(0, led.high_watermark - committed)
            total = None if lag is None or total is None else total + lag
            offsets.append(
                {
                    "topic": topic,
                    "partition": partition,
                    "committed": committed,
                    "high_watermark": None if led is None else led.high_watermark,
                    "lag": lag,
                }
            )
        return {
            "group_id": g.group_id,
            "state": g.state,
            "coordinator": coordinator,
            "epoch": g.epoch,
            "member_count": g.member_count,
            "members": [
                {
                    "member_id": m.member_id,
                    "client_id": m.client_id,
                    "client_host": m.client_host,
                    "epoch": m.epoch,
                    "assignment": [{"topic": t, "partition": p} for t, p in m.assigned],
                }
                for m in g.members
            ],
            "offsets": offsets,
            "lag": total,
            "truncated": g.truncated,
        }

    def _txn(self, coordinator: int, t: TxnReport) -> dict[str, object]:
        return {
            "transactional_id": t.transactional_id,
            "state": t.state,
            "coordinator": coordinator,
            "producer_id": t.producer_id,
            "producer_epoch": t.producer_epoch,
            "age_s": None if t.age_ms is None else t.age_ms / 1000,
            "timeout_ms": t.timeout_ms,
            "partitions": [{"topic": n, "partition": p} for n, p in t.partitions],
            "groups": list(t.groups),
            "truncated": t.truncated,
        }


def newest(items: Iterable[tuple[K, int, V]]) -> dict[K, V]:
    """key -> the value given with the highest term (the first of equal terms)."""
    best: dict[K, tuple[int, V]] = {}
    for key, term, value in items:
        cur = best.get(key)
        if cur is None or term > cur[0]:
            best[key] = (term, value)
    return {k: v for k, (_, v) in best.items()}


def _internal_last(items: Iterable[T], key: Callable[[T], tuple[str, int]]) -> list[T]:
    """Sorted by (topic, number), the user's topics first and internal ones (`__...`) after."""
    return sorted(items, key=lambda i: (key(i)[0].startswith(INTERNAL_PREFIX), key(i)))
