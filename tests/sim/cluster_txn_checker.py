"""The checkers of the cluster simulator's `txn` profile (tests/sim/cluster_txn.py).

Reference replay. The canonical committed entries (`Checker.idents`) of every partition of
`__transaction_state` are applied to a `TransactionCoordinator`, and those of every partition
of the topic to a `PartitionMachine` (the real machines, so a planted fault in them is
replayed too), caught up before every check. From them:
- decisions: (producer id, epoch) -> commit or abort, taken when the coordinator's log puts
  a transaction in PRE_COMMITTED (commit) or ABORTING (abort);
- per partition: every transactional record applied (offset -> producer id, epoch, value),
  every transaction closed there (marker: commit or abort, and its offset when it took one),
  every appended batch (base offset -> bytes).

Checkers (the violation kinds, each switchable off through `TxnClusterChecker.off` so a test
can show a later checker catching a fault an earlier one would have reported first):
- `txn-decision`: the coordinator never changes a decision (PRE_COMMITTED, then ABORTING),
  and a participant closes a transaction only as the coordinator decided (a COMMIT marker
  only for a decided commit, an ABORT only for a decided abort);
- (a) `txn-told-early`: when a producer is told its transaction committed, every partition
  holding its records has its COMMIT marker committed (the EndTxn promise);
  `txn-atomicity` at the end: a transaction the producer was told committed has every record
  visible to the read_committed reader, one told aborted (or never asked to commit) has none,
  one with an unknown outcome all or none;
- (b) on every read_committed fetch answer: no control batch and no record at or past the
  answer's last stable offset (`txn-read-uncommitted`), every record is committed with the
  value the canonical log holds there (`fetch-uncommitted`), its transaction's COMMIT marker
  is applied below the answer's high watermark (`txn-read-uncommitted`; an ABORT marker there:
  `txn-read-aborted`), and no committed record between the fetch offset and the answer's next
  offset is left out (`txn-read-skipped`);
- (c) `txn-order`: when a fetch answer holds a record of transaction (pid, e), every earlier
  transaction (pid, e' < e) the coordinator decided commit has its COMMIT marker committed
  on every partition holding its records (a read_committed reader may see all of it now);
- (e) `txn-duplicate`: a value is appended to a partition's committed log at most once, and
  the reader reads each value at one offset only;
- zombies: `txn-zombie` if one (producer id, epoch) is handed to two producer instances, or a
  request an instance sent after a newer instance of its transactional id got its
  InitProducerId answer is accepted;
- end of run: every replica of a topic partition holds the reference's batches at the same
  offsets (`txn-replica`), every coordinator replica equals the committed log replayed to its
  index (`txn-state`; also each one restored from a snapshot or reloaded at a restart), and
  the metadata check of `ClusterChecker`.
(d), the last stable offset reaching the high watermark after the faults heal, is the
driver's (cluster_txn.py), as are the liveness bounds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from broker.core.node import BrokerNode
from broker.core.partition import Outcome, PartitionMachine, is_command
from broker.core.raft import Entry, EntryKind
from broker.core.txn.coordinator import TransactionCoordinator, TxnState
from broker.core.txn.protocol import MarkerType, decode_marker
from broker.core.txn.service import TXN_TOPIC
from broker.wire import cbor
from broker.wire.batch import BatchError, decode_records, parse_header
from broker.wire.errors import ErrorCode
from broker.wire.messages import FetchPartitionResult
from tests.sim.checker import Violation
from tests.sim.cluster_checker import BrokerWorld, ClusterChecker, _Replica

TXN_KINDS = (
    "txn-decision",
    "txn-told-early",
    "txn-atomicity",
    "txn-read-uncommitted",
    "txn-read-aborted",
    "txn-read-skipped",
    "fetch-uncommitted",
    "txn-order",
    "txn-duplicate",
    "txn-zombie",
    "txn-replica",
    "txn-state",
    "txn-lso-stuck",
    "txn-stuck",
)
"""Every violation kind of the profile (`txn-lso-stuck` and `txn-stuck` are the driver's)."""
Key = tuple[int, int]
"""(producer id, epoch): one transaction."""


@dataclass
class TxnStats:
    """What a `txn` seed did (summed by cluster_run, asserted by test_txn_sim.py)."""

    begun: int = 0
    committed: int = 0
    """Transactions whose producer was told committed."""
    aborted: int = 0
    """Told aborted (asked, refused, fenced, timed out) or never asked to commit."""
    unknown: int = 0
    aborted_by_coordinator: int = 0
    """EndTxn(commit) answered TRANSACTION_ABORTED / TRANSACTION_TIMED_OUT."""
    abort_midway: int = 0
    zombies: int = 0
    """Instances started while an older one of the same transactional id went on."""
    zombies_at_boundary: int = 0
    """... of them, started as the coordinator logged PREPARING or PRE_COMMITTED."""
    fenced: int = 0
    """Instances that stopped on a fencing answer."""
    crashed: int = 0
    """Instances that stopped without a word (their transaction left to a successor or to
    the coordinator's timeout)."""
    records_acked: int = 0
    records_read: int = 0
    fetches_checked: int = 0
    order_checked: int = 0
    """Earlier committed transactions confirmed visible by the `txn-order` check."""
    markers: int = 0
    boundary_crashes: dict[str, int] = field(default_factory=dict)
    lso_settle_units: int = 0
    """Units from the heal until every partition's LSO reached its high watermark (0: it
    was there at the heal)."""
    lso_settled: int = 0
    """1 once the (d) check saw every LSO at its high watermark after the heal."""
    states_checked: int = 0
    replicas_checked: int = 0
    self_commits: int = 0
    suppressed: int = 0
    """Violations of kinds switched off (`off`)."""

    def counts(self) -> dict[str, int]:
        out = {k: v for k, v in vars(self).items() if isinstance(v, int)}
        for kind, n in self.boundary_crashes.items():
            out[f"boundary_{kind}"] = n
        return out


@dataclass(eq=False)
class Txn:
    """One transaction as its producer instance saw it (filled by cluster_txn_clients)."""

    instance: str
    txn_id: str
    number: int
    producer_id: int
    epoch: int
    values: dict[int, list[bytes]] = field(default_factory=dict)
    """Partition -> the values enqueued, in order."""
    acked: dict[bytes, tuple[int, int]] = field(default_factory=dict)
    """Value -> (partition, offset) as its produce answer gave it."""
    commit_sent: bool = False
    outcome: str = "open"
    """open, committed, aborted or unknown."""
    why: str = ""

    @property
    def key(self) -> Key:
        return (self.producer_id, self.epoch)

    def name(self) -> str:
        return f"{self.instance} txn {self.number} (pid {self.producer_id} e{self.epoch})"


@dataclass
class _CoordRef:
    machine: TransactionCoordinator = field(default_factory=TransactionCoordinator)
    applied: int = 0


@dataclass
class _PartRef:
    partition: int
    machine: PartitionMachine = field(default_factory=PartitionMachine)
    applied: int = 0
    data: dict[int, tuple[int, int, bytes]] = field(default_factory=dict)
    """Offset -> (producer id, epoch, value) of every transactional record."""
    markers: dict[Key, tuple[bool, int]] = field(default_factory=dict)
    """Transactions closed here -> (committed, marker offset or -1 when it took none)."""
    values: dict[bytes, int] = field(default_factory=dict)
    batches: dict[int, bytes] = field(default_factory=dict)


@dataclass
class TxnClusterChecker(ClusterChecker):
    """The cluster checker plus the transaction checkers (see the module docstring)."""

    topic: str = "t"
    tstats: TxnStats = field(default_factory=TxnStats)
    off: frozenset[str] = frozenset()
    clock: Callable[[], int] = lambda: 0
    txn_groups: tuple[int, ...] = ()
    topic_groups: dict[int, int] = field(default_factory=dict)
    """Raft group id -> partition of the topic."""
    coord_refs: dict[int, _CoordRef] = field(default_factory=dict)
    part_refs: dict[int, _PartRef] = field(default_factory=dict)
    decisions: dict[Key, bool] = field(default_factory=dict)
    data_parts: dict[Key, set[int]] = field(default_factory=dict)
    """Transaction -> the partitions holding its records (committed log)."""
    visible: set[Key] = field(default_factory=set)
    """Committed transactions confirmed to have every COMMIT marker committed."""
    holders: dict[Key, str] = field(default_factory=dict)
    """(producer id, epoch) -> the one producer instance it was handed to."""
    coordinator_replays: dict[int, _CoordRef] = field(default_factory=dict)

    def fail(self, kind: str, detail: str) -> None:
        """Report a violation, unless its kind is switched off (then it is only counted)."""
        if kind in self.off:
            self.tstats.suppressed += 1
            return
        raise Violation(kind, f"{detail} (t={self.clock()})")

    # -- the reference replay -----------------------------------------------------------------

    def discover(self, world: BrokerWorld) -> None:
        """Learn the Raft groups of `__transaction_state` and of the topic from any broker."""
        if self.txn_groups and self.topic_groups:
            return
        for b in world.brokers.values():
            node = b.node
            if node is None:
                continue
            txn = node.meta.topics.get(TXN_TOPIC)
            if txn is not None and not self.txn_groups:
                self.txn_groups = tuple(pi.group_id for pi in txn.partitions)
            topic = node.meta.topics.get(self.topic)
            if topic is not None and not self.topic_groups:
                self.topic_groups = {pi.group_id: pi.partition for pi in topic.partitions}

    def catch_up(self, world: BrokerWorld) -> None:
        """Apply every newly committed entry: the coordinators' first (a participant acts only
        on what a coordinator's log decided, so the decision is already committed)."""
        self.discover(world)
        for gid in self.txn_groups:
            ref = self.coord_refs.setdefault(gid, _CoordRef())
            for i in range(ref.applied + 1, self.group(gid).commit_index + 1):
                self._apply_coordinator(gid, ref, i)
        for gid, p in self.topic_groups.items():
            pref = self.part_refs.setdefault(gid, _PartRef(p))
            for i in range(pref.applied + 1, self.group(gid).commit_index + 1):
                self._apply_partition(gid, pref, i)

    def part_ref(self, partition: int) -> _PartRef | None:
        for gid, p in self.topic_groups.items():
            if p == partition:
                return self.part_refs.get(gid)
        return None

    def _entry(self, gid: int, i: int) -> Entry:
        c = self.group(gid)
        ident = c.idents[i]
        assert ident is not None
        kind, data, _ = ident
        return Entry(i, c.terms[i], EntryKind(kind), data)

    def _apply_coordinator(self, gid: int, ref: _CoordRef, i: int) -> None:
        entry = self._entry(gid, i)
        ref.machine.apply_entry(entry)
        ref.applied = i
        if entry.kind != EntryKind.NORMAL or not entry.data:
            return
        cmd = cbor.decode(entry.data)
        if not isinstance(cmd, dict):
            return
        txn = cmd.get("txn")
        t = ref.machine.txns.get(txn) if isinstance(txn, str) else None
        if t is None:
            return
        where = f"coordinator group {gid} entry {i} ({cmd.get('op')} of {t.txn_id})"
        if t.state == TxnState.PRE_COMMITTED:
            self._decide(t.producer_id, t.epoch, True, where)
        elif t.state == TxnState.ABORTING:
            self._decide(t.producer_id, t.epoch, False, where)

    def _decide(self, pid: int, epoch: int, commit: bool, where: str) -> None:
        before = self.decisions.get((pid, epoch))
        if before is not None and before != commit:
            self.fail(
                "txn-decision",
                f"{where}: pid {pid} e{epoch} decided {_word(commit)} after {_word(before)}",
            )
        self.decisions[(pid, epoch)] = commit

    def _apply_partition(self, gid: int, ref: _PartRef, i: int) -> None:
        entry = self._entry(gid, i)
        res = ref.machine.apply(entry)
        ref.applied = i
        data = entry.data
        if entry.kind != EntryKind.NORMAL or not data or is_command(data):
            return
        try:
            h = parse_header(data, check_crc=False)
        except BatchError:
            return
        if res.outcome == Outcome.APPENDED:
            ref.batches[res.base_offset] = data
        key = (h.producer_id, h.producer_epoch)
        tp = f"{self.topic}[{ref.partition}]"
        if h.is_control:
            p = ref.machine.ledger.producers.get(h.producer_id)
            if res.error != ErrorCode.NONE or p is None or p.closed_epoch != h.producer_epoch:
                return
            if key in ref.markers:
                return  # a repeat of the closing command: answered as before, no change
            commit = decode_marker(data).type == MarkerType.COMMIT
            offset = res.base_offset if res.outcome == Outcome.APPENDED else -1
            ref.markers[key] = (commit, offset)
            self.tstats.markers += 1
            decided = self.decisions.get(key)
            if decided != commit:
                said = "nothing" if decided is None else _word(decided)
                self.fail(
                    "txn-decision",
                    f"{tp} closed pid {key[0]} e{key[1]} with a {_word(commit)} marker (entry "
                    f"{i}, offset {offset}) but the coordinator's log decided {said}",
                )
            return
        if res.outcome != Outcome.APPENDED or not h.is_transactional:
            return
        self.data_parts.setdefault(key, set()).add(ref.partition)
        for k, rec in enumerate(decode_records(data)):
            offset = res.base_offset + k
            value = rec.value or b""
            ref.data[offset] = (h.producer_id, h.producer_epoch, value)
            first = ref.values.get(value)
            if first is not None:
                self.fail(
                    "txn-duplicate", f"{tp} appended {value!r} at offsets {first} and {offset}"
                )
            ref.values[value] = offset

    # -- (b), (c): every fetch answer ---------------------------------------------------------

    def check_read(
        self, world: BrokerWorld, bid: int, partition: int, offset: int, part: FetchPartitionResult
    ) -> list[tuple[int, bytes]]:
        """Check a read_committed fetch answer broker `bid` gave at `offset`; the (offset,
        value) of the records it returned."""
        self.catch_up(world)
        ref = self.part_ref(partition)
        if ref is None or part.error != ErrorCode.NONE:
            return []
        self.tstats.fetches_checked += 1
        tp = f"{self.topic}[{partition}]"
        where = f"b{bid} answered a read_committed fetch of {tp} at {offset}"
        hw, lso = part.high_watermark, part.last_stable_offset
        if hw > ref.machine.high_watermark or lso > hw:
            self.fail(
                "fetch-uncommitted",
                f"{where} with high watermark {hw} and LSO {lso}; the committed log ends at "
                f"{ref.machine.high_watermark}",
            )
        out: list[tuple[int, bytes]] = []
        seen: set[Key] = set()
        for fb in part.batches:
            try:
                h = parse_header(fb.data, check_crc=False)
            except BatchError as e:
                self.fail("fetch-uncommitted", f"{where}: at {fb.base_offset} no batch ({e})")
                continue
            if h.is_control:
                self.fail("txn-read-uncommitted", f"{where}: a control batch at {fb.base_offset}")
                continue
            for k, rec in enumerate(decode_records(fb.data)):
                o = fb.base_offset + k
                value = rec.value or b""
                out.append((o, value))
                got = ref.data.get(o)
                if got is None or got[2] != value:
                    self.fail(
                        "fetch-uncommitted",
                        f"{where}: {value!r} at {o}; the committed log holds "
                        f"{None if got is None else got[2]!r} there",
                    )
                    continue
                key = (got[0], got[1])
                seen.add(key)
                self._check_visible(where, ref, key, o, value, hw, lso)
        next_offset = offset if part.next_offset is None else part.next_offset
        if next_offset > lso:
            self.fail("txn-read-uncommitted", f"{where}: next offset {next_offset} > LSO {lso}")
        returned = {o for o, _ in out}
        for o in range(offset, min(next_offset, ref.machine.high_watermark)):
            got = ref.data.get(o)
            if got is None or o in returned:
                continue
            marker = ref.markers.get((got[0], got[1]))
            if marker is not None and marker[0]:
                self.fail(
                    "txn-read-skipped",
                    f"{where}: committed {got[2]!r} at {o} left out (next offset {next_offset})",
                )
        for key in sorted(seen):
            self._check_order(where, key)
        return out

    def _check_visible(
        self, where: str, ref: _PartRef, key: Key, o: int, value: bytes, hw: int, lso: int
    ) -> None:
        """(b): a record read_committed is below the answer's LSO and its transaction's COMMIT
        marker was applied there (below the answer's high watermark)."""
        marker = ref.markers.get(key)
        what = f"{where}: {value!r} at {o} of pid {key[0]} e{key[1]}"
        if marker is not None and not marker[0]:
            self.fail("txn-read-aborted", f"{what}, aborted (marker at {marker[1]})")
        elif marker is None or not 0 <= marker[1] < hw or o >= lso:
            at = "none" if marker is None else marker[1]
            self.fail(
                "txn-read-uncommitted",
                f"{what}, not committed there (marker {at}, high watermark {hw}, LSO {lso})",
            )

    def _check_order(self, where: str, key: Key) -> None:
        """(c): every earlier transaction of the producer that committed is whole now."""
        pid, epoch = key
        for (p, e), commit in sorted(self.decisions.items()):
            if p != pid or e >= epoch or not commit or (p, e) in self.visible:
                continue
            missing = [
                q
                for q in sorted(self.data_parts.get((p, e), ()))
                if not self._committed_at(q, (p, e))
            ]
            if missing:
                self.fail(
                    "txn-order",
                    f"{where}: it holds pid {pid} e{epoch}, but the earlier committed e{e} has "
                    f"no COMMIT marker yet on partition(s) {missing}",
                )
                continue
            self.visible.add((p, e))
            self.tstats.order_checked += 1

    def _committed_at(self, partition: int, key: Key) -> bool:
        ref = self.part_ref(partition)
        marker = None if ref is None else ref.markers.get(key)
        return marker is not None and marker[0]

    # -- (a): what producers were told ---------------------------------------------------------

    def told_committed(self, world: BrokerWorld, txn: Txn) -> None:
        """The producer was just told `txn` committed: every partition holding its records
        has its COMMIT marker committed."""
        self.catch_up(world)
        for q in sorted({p for p, _ in txn.acked.values()}):
            ref = self.part_ref(q)
            marker = None if ref is None else ref.markers.get(txn.key)
            if marker is None or not marker[0]:
                self.fail(
                    "txn-told-early",
                    f"{txn.name()} was told committed, but {self.topic}[{q}] holds "
                    f"{'no marker' if marker is None else 'an ABORT marker'} for it",
                )

    def on_epoch(self, instance: str, pid: int, epoch: int, how: str) -> None:
        """`instance` adopted (pid, epoch): no other instance ever holds it."""
        holder = self.holders.setdefault((pid, epoch), instance)
        if holder != instance:
            self.fail(
                "txn-zombie",
                f"pid {pid} e{epoch} handed to {instance} ({how}), already held by {holder}",
            )

    def zombie_accepted(self, instance: str, what: str, sent_at: int, superseded_at: int) -> None:
        self.fail(
            "txn-zombie",
            f"{instance}'s {what}, sent at t={sent_at} after a newer instance was initialised "
            f"(t={superseded_at}), was accepted",
        )

    def check_outcomes(self, txns: Iterable[Txn], reads: dict[bytes, tuple[int, int]]) -> None:
        """(a) at the end: what the reader saw of each transaction matches its outcome."""
        for txn in txns:
            values = [v for vs in txn.values.values() for v in vs]
            seen = [v for v in values if v in reads]
            if txn.outcome == "committed":
                missing = [v for v in values if v not in reads]
                if missing:
                    self.fail(
                        "txn-atomicity",
                        f"{txn.name()} was told committed; never read: {_short(missing)}",
                    )
            elif txn.outcome == "unknown":
                if seen and len(seen) != len(values):
                    self.fail(
                        "txn-atomicity",
                        f"{txn.name()} (outcome unknown) is read in part: {_short(seen)} of "
                        f"{len(values)}",
                    )
            elif seen:
                self.fail(
                    "txn-atomicity",
                    f"{txn.name()} was {txn.outcome} ({txn.why}) but read: {_short(seen)}",
                )

    # -- state of the replicas ----------------------------------------------------------------

    def check_replicas(self, world: BrokerWorld) -> None:
        """Every replica of a topic partition holds the reference's batches; every coordinator
        replica equals the committed log replayed to its index."""
        self.catch_up(world)
        for bid, b in sorted(world.brokers.items()):
            node = b.node
            if node is None:
                continue
            for gid, g in node.groups.items():
                m = g.machine
                if isinstance(m, TransactionCoordinator):
                    self.check_coordinator(bid, gid, m, "at the end")
                    continue
                ref = self.part_refs.get(gid)
                if ref is None or not isinstance(m, PartitionMachine):
                    continue
                self.tstats.replicas_checked += 1
                for base, raft_index, _ in m.index.items(0):
                    got = g.raft.log.slice(raft_index, raft_index + 1)
                    if got and ref.batches.get(base) != got[0].data:
                        self.fail(
                            "txn-replica",
                            f"b{bid} holds at {self.topic}[{ref.partition}] offset {base} a "
                            "batch the committed log does not",
                        )

    def _replay_to(self, gid: int, index: int) -> TransactionCoordinator:
        rp = self.coordinator_replays.get(gid)
        if rp is None or rp.applied > index:
            rp = self.coordinator_replays[gid] = _CoordRef()
        for i in range(rp.applied + 1, index + 1):
            rp.machine.apply_entry(self._entry(gid, i))
        rp.applied = index
        return rp.machine

    def check_coordinator(
        self, bid: int, gid: int, machine: TransactionCoordinator, how: str
    ) -> None:
        index = machine.applied_index
        self.tstats.states_checked += 1
        if machine.snapshot() != self._replay_to(gid, index).snapshot():
            self.fail(
                "txn-state",
                f"b{bid} coordinator group {gid} {how} at {index} differs from the committed "
                "log replayed to that index",
            )

    def check_restored(self, bid: int, node: BrokerNode, gid: int, index: int) -> None:
        machine = node.groups[gid].machine
        if isinstance(machine, TransactionCoordinator):
            self.restores_checked += 1
            self.check_coordinator(bid, gid, machine, "restored from its snapshot")
            return
        super().check_restored(bid, node, gid, index)

    def _replica(self, bid: int, gid: int, node: BrokerNode) -> _Replica:
        r = self.replicas.get((bid, gid))
        if r is not None:
            return r
        r = super()._replica(bid, gid, node)
        machine = node.groups[gid].machine
        if isinstance(machine, TransactionCoordinator) and machine.applied_index:
            self.check_coordinator(bid, gid, machine, "as it opened")
        return r


def _word(commit: bool) -> str:
    return "commit" if commit else "abort"


def _short(values: list[bytes]) -> str:
    shown = ", ".join(v.decode(errors="replace") for v in values[:4])
    return shown + (f" (+{len(values) - 4})" if len(values) > 4 else "")
