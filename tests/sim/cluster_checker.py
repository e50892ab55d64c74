"""Checkers of the cluster simulator: Raft safety per group, the durability audit, applied
state, metadata agreement, and the client history.

Per Raft group (the metadata group 0 and every partition group) one `tests.sim.checker.Checker`
keeps the canonical committed history, fed from every broker's rounds:
- election safety (a broker restarted and elected again in the same term counts as a second
  leader: the checker sees (broker, process life));
- log matching (an (index, term) names one entry and one predecessor term in every log);
- leader completeness at each election;
- committed entries never lost or changed (every commit a broker reports, including the
  commit index it comes back with after a restart, is checked against the canonical history);
- commit index monotonic within a process life;
- state machine safety: a hash chain over each broker's applied entries of each group, in
  order, so every broker's applied metadata is a prefix of one sequence.
The durability audit checks every vote grant and append acknowledgement against the
broker's `MemGroupStore` (the disk) at the moment it leaves (`checker.undurable_ack`): an
acknowledgement must find on disk, at its index, the term its group's log had there when the
round carrying it started (`note_acks`), not only a log that long. Rounds are pipelined and a
sync may land several at once, so the disk is judged as the round's own write left it, when
that write landed (`on_round_landed`); one leaving before its round's write landed (a round
that needed no sync, or a broken driver) is judged on the disk as it is then.

The fetch rule (`check_fetch`, on every fetch answer a reader gets): a fetch is served by
any replica that believes it leads, without a ReadIndex round, so a deposed leader may
answer until it learns; what it serves must still be committed. A reference partition
machine per group applies the canonical committed entries (the same `PartitionMachine`), and
every fetched record must be at an offset below the reference's high watermark with the
reference's value there, and the answer's high watermark at most the reference's.
Retention: the answer's log start offset is a batch boundary of the committed history at
most the committed next offset `partition_retention_entries` entries behind the commit
(0 with retention off); a fetch below it is OFFSET_OUT_OF_RANGE, one in [log start, high
watermark) is answered with the batch holding the offset (what retention kept must read
back), and OFFSET_OUT_OF_RANGE is never the answer inside that range. A LIST_OFFSETS answer
for the earliest offset (the reader's reset after OFFSET_OUT_OF_RANGE) is such a log start
offset too (`check_log_start`).

Snapshots (`on_round_done` for installs; for a group opened at a restart with its machine
restored from the group's snapshot, when the checker first sees it): the snapshot's index
must be committed with the snapshot's term, and the restored machine (metadata or
partition) must equal a machine that applied the canonical committed entries up to that
index; the replica's hash chain continues from it.

End of run (`final_checks`): every up broker's metadata state machine equals the others' at
the same applied index; every replica of a partition holds the same records at the same
offsets (fed to the History as reads, so a divergent replica is an `inconsistent`); and the
History's problems (lost, duplicate, inconsistent, reordered, gap) plus the readers' own
(a poll that skipped offsets).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from broker.core.metadata import METADATA_GROUP, MetadataMachine
from broker.core.node import BrokerNode, Round
from broker.core.partition import Outcome, PartitionConfig, PartitionMachine
from broker.core.raft import Entry, EntryKind, LogStorage, Message, Role
from broker.core.raft.log import NO_TERM
from broker.core.raft.types import AppendResponse, VoteResponse
from broker.wire.batch import decode_records
from broker.wire.errors import ErrorCode
from broker.wire.messages import FetchPartitionResult
from tests.sim.checker import Checker, Violation, undurable_ack
from tests.support.history import History, Problem


@contextlib.contextmanager
def _in_group(gid: int) -> Iterator[None]:
    """Name the Raft group in a violation raised by a group's checker."""
    try:
        yield
    except Violation as v:
        if gid >= 0 and not v.detail.startswith("group "):
            raise Violation(v.kind, f"group {gid}: {v.detail}") from None
        raise


class HostsNode(Protocol):
    @property
    def node(self) -> BrokerNode | None: ...


class BrokerWorld(Protocol):
    """What the end-of-run checks read of a world (`ClusterWorld` is one): its brokers."""

    @property
    def brokers(self) -> Mapping[int, HostsNode]: ...


@dataclass
class _Replica:
    """What the checker tracks of one group on one broker, for one process life."""

    last_commit: int = 0
    app_index: int = 0
    app_hash: int = 0
    group: object = None
    """The broker's `HostedGroup` tracked: a group dropped and opened again in the same life
    (a reassignment moved the replica away and back) is a new replica, tracked afresh."""


@dataclass(eq=False)
class _NotedAck:
    """A vote grant or append acknowledgement handed out in a round of broker `bid`."""

    bid: int
    m: Message
    term: int | None
    """An acknowledgement's: the term its group's log had at its index when the round
    started (None for a vote grant)."""
    landed: bool = False
    """Its round's write landed on the disk; `problem` is the audit's verdict then."""
    problem: str | None = None


@dataclass
class _Reference:
    """The committed state of one partition group, rebuilt from its canonical history."""

    machine: PartitionMachine
    applied: int = 0
    values: dict[int, bytes | None] = field(default_factory=dict)
    next_at: list[int] = field(default_factory=lambda: [0])
    """The committed next offset after each Raft index."""
    bases: set[int] = field(default_factory=set)
    """Base offsets of the committed batches."""


@dataclass
class _Replay:
    """A machine replaying the canonical committed entries of one group, forward only."""

    machine: PartitionMachine | MetadataMachine
    applied: int = 0


def meta_state(m: MetadataMachine) -> object:
    """What two metadata machines at one applied index must agree on."""
    return (
        m.cluster_id,
        sorted(m.brokers.items()),
        sorted((k, v.partitions, v.replication_factor, v.config) for k, v in m.topics.items()),
        sorted(m.alive.items()),
        sorted(m.leaders.items()),
        m.next_group_id,
        m.next_producer_id,
    )


@dataclass
class ClusterChecker:
    groups: dict[int, Checker] = field(default_factory=dict)
    replicas: dict[tuple[int, int], _Replica] = field(default_factory=dict)
    """(broker, group) -> its tracking in the broker's current life."""
    lives: dict[int, int] = field(default_factory=dict)
    history: History = field(default_factory=History)
    problems: list[Problem] = field(default_factory=list)
    """Client-side anomalies the History does not see (a reader skipping offsets)."""
    elections: int = 0
    producer_ids: dict[int, str] = field(default_factory=dict)
    ack_terms: dict[int, _NotedAck] = field(default_factory=dict)
    """id of a vote grant or append acknowledgement waiting for its round's write -> what
    the audit knows of it."""
    references: dict[int, _Reference] = field(default_factory=dict)
    fetches_checked: int = 0
    replays: dict[int, _Replay] = field(default_factory=dict)
    restores_checked: int = 0

    def group(self, gid: int) -> Checker:
        c = self.groups.get(gid)
        if c is None:
            c = self.groups[gid] = Checker()
        return c

    # -- per round ----------------------------------------------------------------------------

    def on_start(self, bid: int, life: int, node: BrokerNode) -> None:
        self.lives[bid] = life
        for key in [k for k in self.replicas if k[0] == bid]:
            del self.replicas[key]
        for key in [k for k, v in self.ack_terms.items() if v.bid == bid]:
            del self.ack_terms[key]  # lost with the round the crash cut short
        self.observe(bid, node)

    def _replica(self, bid: int, gid: int, node: BrokerNode) -> _Replica:
        r = self.replicas.get((bid, gid))
        g = node.groups[gid]
        if r is None or r.group is not g:
            applied = g.raft.log.applied
            c = self.group(gid)
            if applied >= len(c.hashes):
                raise Violation(
                    "apply-uncommitted",
                    f"broker {bid} group {gid} restored applied index {applied}, beyond the "
                    f"committed history ({c.commit_index})",
                )
            r = self.replicas[(bid, gid)] = _Replica(0, applied, c.hashes[applied], g)
            machine = node.meta if g.machine is None else g.machine
            if g.snapshot_index and machine.applied_index == g.snapshot_index:
                # Opened (at a restart) with its machine restored from the group's snapshot.
                self.check_restored(bid, node, gid, g.snapshot_index)
        return r

    def on_round_start(self, bid: int, life: int, node: BrokerNode, rnd: Round) -> None:
        for gid, rd in rnd.readies:
            g = node.groups.get(gid)
            if g is None:
                continue
            c = self.group(gid)
            self._replica(bid, gid, node)
            log = g.raft.log
            ss = rd.soft_state
            with _in_group(gid):
                if ss is not None and ss.role == Role.LEADER:
                    self.elections += 1
                    c.on_leader(bid, life, ss.term, log)
                elif ss is not None and ss.role == Role.CANDIDATE:
                    c.on_campaign(bid, life, ss.term)
                if rd.entries:
                    c.on_entries(bid, log.term(rd.entries[0].index - 1), list(rd.entries))
            self.note_acks(bid, log, rd.persisted_messages)
        self.observe(bid, node)

    def note_acks(self, bid: int, log: object, msgs: Iterable[Message]) -> None:
        """The durability audit's first part, at hand-out: what each vote grant and append
        acknowledgement of a round is about (for an acknowledgement, the term at its index
        in the log that built it)."""
        for m in msgs:
            if isinstance(m, AppendResponse) and not m.reject and m.index > 0:
                term = log.term(m.index)  # type: ignore[attr-defined]
                self.ack_terms[id(m)] = _NotedAck(bid, m, term)
            elif isinstance(m, VoteResponse) and not m.reject and not m.pre_vote:
                self.ack_terms[id(m)] = _NotedAck(bid, m, None)

    def on_round_landed(self, bid: int, store: object, rnd: Round) -> None:
        """The durability audit's second part: the round's write is on the disk, which is
        now as that write left it (rounds land in order, each on its own): what each vote
        grant and acknowledgement the round carries promises must be on it. Judged now and
        reported when it leaves (`audit_durable`): with pipelining a later round may land
        before it does (group commit), and overwrite what it acknowledged, as the network
        could have delayed it past that overwrite."""
        logs: dict[int, LogStorage] = store.logs  # type: ignore[attr-defined]
        for gid, rd in rnd.readies:
            disk = logs.get(gid)
            for m in rd.persisted_messages:
                noted = self.ack_terms.get(id(m))
                if noted is None or noted.landed:
                    continue
                noted.landed = True
                if disk is not None:
                    noted.problem = undurable_ack(disk, m, noted.term)

    def on_applied_early(self, bid: int, store: object, node: BrokerNode, rnd: Round) -> None:
        """Entries applied (and acknowledged) before the round's write: each must already be
        on this broker's disk, as written, and they are checked like any applied entry."""
        self.audit_applied_early(bid, store, rnd)
        self._applied(bid, node, rnd, early=True)
        self.observe(bid, node)

    def audit_applied_early(self, bid: int, store: object, rnd: Round) -> None:
        logs: dict[int, LogStorage] = store.logs  # type: ignore[attr-defined]
        for gid, rd in rnd.readies:
            if gid not in rnd.applied_early:
                continue
            disk = logs.get(gid)
            for e in rd.committed_entries:
                if (
                    disk is None
                    or e.index > disk.last_index()
                    or (e.index >= disk.first_index() and disk.term(e.index) != e.term)
                ):
                    raise Violation(
                        "apply-before-durable",
                        f"broker {bid} group {gid} applied {e.index} (term {e.term}) before "
                        "its disk held it",
                    )

    def on_round_done(self, bid: int, life: int, node: BrokerNode, rnd: Round) -> None:
        for gid, rd in rnd.readies:
            snap = rd.snapshot
            if snap is None or gid not in node.groups:
                continue
            index, c = snap.meta.index, self.group(gid)
            if index > c.commit_index or c.terms[index] != snap.meta.term:
                raise Violation(
                    "snapshot-uncommitted",
                    f"broker {bid} group {gid} installed a snapshot at {index} term "
                    f"{snap.meta.term}; the committed history ends at {c.commit_index}",
                )
            r = self._replica(bid, gid, node)
            r.app_index, r.app_hash = index, c.hashes[index]
            self.check_restored(bid, node, gid, index)
        self._applied(bid, node, rnd, early=False)
        self.observe(bid, node)

    def check_restored(self, bid: int, node: BrokerNode, gid: int, index: int) -> None:
        """Group `gid`'s machine on broker `bid` was restored from a snapshot at `index`: it
        must equal the canonical committed entries replayed up to `index`."""
        self.restores_checked += 1
        if gid == METADATA_GROUP:
            ref = self._replay(gid, index, None).machine
            assert isinstance(ref, MetadataMachine)
            got = node.meta
            same = got.applied_index == index and meta_state(got) == meta_state(ref)
        else:
            g = node.groups[gid]
            assert g.machine is not None
            ref = self._replay(gid, index, g.machine.config).machine
            assert isinstance(ref, PartitionMachine)
            same = g.machine.snapshot_bytes() == ref.snapshot_bytes()
        if not same:
            raise Violation(
                "snapshot-restore",
                f"broker {bid} group {gid} restored from its snapshot at {index} a state "
                "machine that differs from the committed history replayed to that index",
            )

    def _replay(self, gid: int, index: int, config: PartitionConfig | None) -> _Replay:
        """The canonical committed entries of `gid` applied up to `index` (replayed from
        scratch when an earlier index than the last one asked is asked)."""
        rp = self.replays.get(gid)
        if rp is None or rp.applied > index:
            machine = MetadataMachine() if config is None else PartitionMachine(config)
            rp = self.replays[gid] = _Replay(machine)
        c = self.group(gid)
        for i in range(rp.applied + 1, index + 1):
            kind, data, _ = c.idents[i]  # type: ignore[misc]
            m = rp.machine
            if isinstance(m, PartitionMachine):
                m.apply(Entry(i, c.terms[i], EntryKind(kind), data))
            elif kind == EntryKind.NORMAL and data:
                m.apply(i, data)
            else:
                m.applied_index = i
        rp.applied = index
        return rp

    def _applied(self, bid: int, node: BrokerNode, rnd: Round, *, early: bool) -> None:
        for gid, rd in rnd.readies:
            if not rd.committed_entries or gid not in node.groups:
                continue
            if (gid in rnd.applied_early) != early:
                continue
            r = self._replica(bid, gid, node)
            c = self.group(gid)
            for e in rd.committed_entries:
                if e.index != r.app_index + 1:
                    raise Violation(
                        "apply-order",
                        f"broker {bid} group {gid} applied {e.index} after {r.app_index}",
                    )
                with _in_group(gid):
                    r.app_hash = c.on_apply(bid, r.app_hash, e)
                r.app_index = e.index

    def observe(self, bid: int, node: BrokerNode) -> None:
        """Every group's commit index: monotonic, and naming the canonical entries. A broker
        names itself a partition's leader (to clients) only while its replica serves."""
        for topic in node.meta.topics.values():
            for pi in topic.partitions:
                if node.partition_view(pi).leader != bid:
                    continue
                own = node.groups.get(pi.group_id)
                if own is None or not own.serving():
                    raise Violation(
                        "self-named-leader",
                        f"broker {bid} names itself leader of {topic.name}[{pi.partition}] "
                        "but its replica does not serve",
                    )
        for gid, g in node.groups.items():
            r = self._replica(bid, gid, node)
            log = g.raft.log
            commit = log.committed
            if commit == r.last_commit:
                continue
            if commit < r.last_commit:
                raise Violation(
                    "commit-monotonic",
                    f"broker {bid} group {gid} commit went {r.last_commit} -> {commit}",
                )

            def entry_at(i: int, log: object = log) -> object:
                if log.term(i) == NO_TERM:  # type: ignore[attr-defined]
                    return None
                got = log.slice(i, i + 1)  # type: ignore[attr-defined]
                return got[0] if got else None

            with _in_group(gid):
                self.group(gid).on_commit(
                    bid, g.raft.term, r.last_commit, commit, entry_at, leader=g.raft.is_leader
                )
            r.last_commit = commit

    def audit_durable(self, bid: int, store: object, gid: int, m: Message) -> None:
        """A message leaves broker `bid`: a vote grant or append acknowledgement must find
        what it promises on the disk, as its round's write left it if that write landed
        (`on_round_landed`), else (a message no round carried, or one leaving before its
        round's write landed) on the disk as it is now."""
        noted = self.ack_terms.pop(id(m), None)
        if noted is not None and noted.landed:
            problem = noted.problem
        else:
            disk: LogStorage | None = store.logs.get(gid)  # type: ignore[attr-defined]
            if disk is None:
                return
            problem = undurable_ack(disk, m, noted.term if noted is not None else None)
        if problem is not None:
            raise Violation("ack-before-durable", f"broker {bid} group {gid}: {problem}")

    def check_fetch(
        self,
        bid: int,
        gid: int,
        config: PartitionConfig,
        offset: int,
        part: FetchPartitionResult,
        retention_entries: int,
    ) -> None:
        """A fetch answer from broker `bid` for partition group `gid` at `offset` serves only
        committed records, with their committed values, and no high watermark past the
        committed one; its log start offset is one retention may have reached, and the
        answer agrees with it (see the module doc)."""
        if part.error not in (ErrorCode.NONE, ErrorCode.OFFSET_OUT_OF_RANGE):
            return
        ref = self._reference(gid, config)
        hw = ref.machine.high_watermark
        self.fetches_checked += 1
        where = f"broker {bid} group {gid} answered a fetch at {offset}"
        if part.high_watermark > hw:
            raise Violation(
                "fetch-past-commit",
                f"{where} with high watermark {part.high_watermark}; the group committed {hw}",
            )
        start = part.log_start_offset
        self._check_log_start(ref, where, start, part.high_watermark, retention_entries)
        in_range = start <= offset <= part.high_watermark
        if part.error == ErrorCode.OFFSET_OUT_OF_RANGE:
            if in_range:
                raise Violation(
                    "fetch-out-of-range",
                    f"{where} with OFFSET_OUT_OF_RANGE, inside its range "
                    f"[{start}, {part.high_watermark}]",
                )
            return
        if offset < start:
            raise Violation("fetch-below-log-start", f"{where}, below its log start offset {start}")
        if offset < part.high_watermark and (
            not part.batches or part.batches[0].base_offset > offset
        ):
            raise Violation(
                "fetch-retained-missing",
                f"{where} without the batch holding it (log start {start}, high watermark "
                f"{part.high_watermark})",
            )
        for fb in part.batches:
            for k, rec in enumerate(decode_records(fb.data)):
                offset = fb.base_offset + k
                if offset >= hw or ref.values.get(offset, b"") != rec.value:
                    raise Violation(
                        "fetch-uncommitted",
                        f"broker {bid} group {gid} served {rec.value!r} at offset {offset}; "
                        f"committed: {ref.values.get(offset)!r} (high watermark {hw})",
                    )

    def check_log_start(
        self, bid: int, gid: int, config: PartitionConfig, start: int, retention_entries: int
    ) -> None:
        """A log start offset broker `bid` gave for partition group `gid` outside a fetch (a
        LIST_OFFSETS answer for the earliest offset) obeys the fetch rule's log start part."""
        ref = self._reference(gid, config)
        where = f"broker {bid} group {gid} answered LIST_OFFSETS (earliest)"
        self._check_log_start(ref, where, start, ref.machine.high_watermark, retention_entries)

    def _reference(self, gid: int, config: PartitionConfig) -> _Reference:
        """The group's reference machine, caught up with the canonical commit."""
        ref = self.references.get(gid)
        if ref is None:
            ref = self.references[gid] = _Reference(PartitionMachine(config))
        c = self.group(gid)
        for i in range(ref.applied + 1, c.commit_index + 1):
            kind, data, _ = c.idents[i]  # type: ignore[misc]
            result = ref.machine.apply(Entry(i, c.terms[i], EntryKind(kind), data))
            if result.outcome == Outcome.APPENDED:
                ref.bases.add(result.base_offset)
                for k, rec in enumerate(decode_records(data)):
                    ref.values[result.base_offset + k] = rec.value
            ref.next_at.append(ref.machine.next_offset)
            ref.applied = i
        return ref

    @staticmethod
    def _check_log_start(
        ref: _Reference, where: str, start: int, high_watermark: int, retention_entries: int
    ) -> None:
        """A log start offset is one retention may have reached (at most the committed next
        offset `retention_entries` entries behind the commit, and at most the answer's high
        watermark) and a batch boundary."""
        limit = ref.next_at[max(0, ref.applied - retention_entries)] if retention_entries else 0
        if start > limit or start > high_watermark:
            raise Violation(
                "log-start-ahead",
                f"{where} with log start offset {start} (high watermark "
                f"{high_watermark}): retention of {retention_entries} entries may "
                f"delete only below {limit}",
            )
        if start and start != ref.machine.high_watermark and start not in ref.bases:
            raise Violation(
                "log-start-boundary", f"{where} with log start offset {start}, not a batch"
            )

    def on_producer_id(self, pid: int, who: str) -> None:
        """InitProducerId handed out a new id: never one handed out before."""
        first = self.producer_ids.get(pid)
        if first is not None:
            raise Violation("producer-id-reused", f"producer id {pid} given to {first} and {who}")
        self.producer_ids[pid] = who

    # -- end of run ---------------------------------------------------------------------------

    def final_checks(self, world: BrokerWorld, topic: str) -> None:
        self.check_metadata(world)
        self.read_replicas(world, topic)
        problems = self.problems + self.history.check()
        if problems:
            kinds = sorted({p.kind for p in problems})
            shown = "; ".join(f"{p.kind}: {p.detail}" for p in problems[:6])
            raise Violation("history", f"{len(problems)} problems ({', '.join(kinds)}): {shown}")

    def check_metadata(self, world: BrokerWorld) -> None:
        """Brokers that applied the metadata log to the same index hold the same state."""
        seen: dict[int, tuple[int, object]] = {}
        for bid, b in world.brokers.items():
            node = b.node
            if node is None:
                continue
            m = node.meta
            state = meta_state(m)
            other = seen.get(m.applied_index)
            if other is not None and other[1] != state:
                raise Violation(
                    "metadata-divergence",
                    f"brokers {other[0]} and {bid} applied the metadata log to "
                    f"{m.applied_index} but hold different states",
                )
            seen[m.applied_index] = (bid, state)

    def read_replicas(self, world: BrokerWorld, topic: str) -> None:
        """Every replica's applied records, read straight from its log: one value per
        (partition, offset) across replicas, reads and acknowledgements."""
        for b in world.brokers.values():
            node = b.node
            if node is None:
                continue
            for (t, p), g in node.by_partition.items():
                if t != topic or g.machine is None:
                    continue
                log = g.raft.log
                for base, raft_index, _ in g.machine.index.items(0):
                    got = log.slice(raft_index, raft_index + 1)
                    if not got:
                        continue
                    for i, rec in enumerate(decode_records(got[0].data)):
                        if rec.value is not None:
                            self.history.read((t, p), base + i, rec.value)
