"""Deliberately broken rules, to prove the simulators' checkers catch them.

Raft rules (the group simulator): each is a RaftNode subclass that overrides one rule hook of
the real node. Broker rules (the cluster simulator): `BROKER_MUTATIONS`, context managers that
monkeypatch one method of the broker's core for the duration of a run. Client rules (the
cluster simulator, whose producers drive the client library's pure core): `CLIENT_MUTATIONS`,
context managers that switch on one of the core's mutation flags (`consumers.core.producer
.MUTATIONS`) for the duration of a run. Driver rules (the cluster simulator's model of the
pipelined driver): `PIPELINE_MUTATIONS`, flags of the simulated driver
(`tests.sim.cluster_world.PIPELINE_FAULTS`) that end rounds before their writes are durable
(tests/sim/test_pipeline_sim.py). Consumer-group rules (the cluster simulator's `groups`
profile): `GROUP_MUTATIONS`, the coordinator's methods and the member core's monkeypatched, or
a flag of the simulated members switched on (tests/sim/test_group_sim.py). Transaction rules
(the cluster simulator's `txn` profile): `TXN_MUTATIONS`, the protocol explorer's planted
faults of the coordinator, driver and ledger (tests/model/txn_mutations.py) and the
partition's read_committed, dedup and InitProducerId rules monkeypatched
(tests/sim/test_txn_sim.py). Reassignment rules (the cluster simulator's `reassign` profile):
`REASSIGN_MUTATIONS`, a partition leader's membership step monkeypatched
(tests/sim/test_reassign_sim.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

from broker.core import host as host_module
from broker.core import partitions as partitions_module
from broker.core import reassignment
from broker.core.groups.assignors import Subscription, UniformAssignor
from broker.core.groups.group import Committed, ConsumerGroup
from broker.core.groups.membership import GroupMembership, HeartbeatAnswer, MemberState
from broker.core.groups.membership import Outcome as MemberOutcome
from broker.core.host import GroupHost, HostedGroup
from broker.core.ids import Member, member_of
from broker.core.machine import Applied
from broker.core.metadata import PRODUCER_ID_BLOCK, cmd_alloc_producer_ids
from broker.core.node import BrokerNode, FetchResult
from broker.core.partition import SEQUENCE_MODULUS, ApplyResult, Outcome, PartitionMachine
from broker.core.partitions import PartitionService
from broker.core.peer_requests import Answer, Inbound
from broker.core.producer_ids import ProducerIdAllocator
from broker.core.raft import ConfChange, ConfChangeKind, Entry, EntryKind, RaftNode
from broker.core.raft.log import NO_TERM, RaftLog
from broker.core.raft.types import MemberId, RequestVote, SnapshotMeta, VoteResponse
from broker.core.txn import coordinator as coordinator_module
from broker.core.txn.coordinator import AbortReason, InitAnswer, TransactionCoordinator, TxnState
from broker.core.txn.driver import TxnDriver
from broker.wire.batch import BatchHeader, parse_header
from broker.wire.errors import ErrorCode
from consumers.core import producer as producer_core
from consumers.core.group_member import GroupMember
from tests.model import txn_mutations
from tests.sim import cluster_groups, cluster_world


class CommitPreviousTermByCounting(RaftNode):
    """Figure 8: commits an entry of an earlier term once a quorum holds it."""

    def _commit_term_ok(self, index: int) -> bool:
        return True


class GrantTwoVotesPerTerm(RaftNode):
    """Grants a vote to any up-to-date candidate, even after voting for another this term."""

    def _can_vote(self, m: RequestVote) -> bool:
        return True


class VoteBeforePersist(RaftNode):
    """Answers a vote request before the vote is durable."""

    def _send_vote_granted(self, m: RequestVote) -> None:
        self._msgs.append(VoteResponse(self.id, m.src, self.term, False, False))


class ReadWithoutQuorum(RaftNode):
    """Serves ReadIndex reads from its own commit index without confirming leadership."""

    def _read_needs_quorum(self) -> bool:
        return False


class ConfChangeBeforeOwnTermCommit(RaftNode):
    """Appends a configuration change before committing an entry of its own term."""

    def _conf_change_allowed(self) -> bool:
        return self._confs[-1][0] <= self.log.committed


class LeadBeforeTermDurable(RaftNode):
    """Becomes leader on others' votes before its own new term is durable."""

    def _term_durable(self) -> bool:
        return True


class KeepConflictingSuffix(RaftNode):
    """A follower appends only the leader's entries beyond its own last index: a suffix of its
    log that conflicts with the leader's is kept, never truncated (Raft §5.3)."""

    def _merge_entries(self, entries: Sequence[Entry]) -> None:
        last = self.log.last_index()
        new = [e for e in entries if e.index > last]
        if new:
            self._append(new)


class CommitPastLastNewEntry(RaftNode):
    """A follower commits up to the leader's commit index bounded by its own last index, not by
    the last entry the append vouched for (so an unrepaired suffix beyond it can commit)."""

    def _append_commit(self, leader_commit: int, last_new: int) -> int:
        return min(leader_commit, self.log.last_index())


class VoteIgnoresLog(RaftNode):
    """Grants real votes whatever the candidate's log (pre-votes still check it)."""

    def _log_ok(self, m: RequestVote) -> bool:
        return True if not m.pre_vote else super()._log_ok(m)


class PreVoteIgnoresLog(RaftNode):
    """Grants pre-votes whatever the candidate's log (real votes still check it)."""

    def _log_ok(self, m: RequestVote) -> bool:
        return True if m.pre_vote else super()._log_ok(m)


class AllVotesIgnoreLog(RaftNode):
    """Grants pre-votes and real votes whatever the candidate's log."""

    def _log_ok(self, m: RequestVote) -> bool:
        return True


class LearnersCountForCommit(RaftNode):
    """Counts learners' acknowledgements toward commit, read confirmation and check-quorum."""

    def _commit_quorum(self) -> frozenset[MemberId]:
        return self.conf.members()


class LearnersVote(RaftNode):
    """Asks learners for (pre-)votes and counts them toward the election quorum."""

    def _election_quorum(self) -> frozenset[MemberId]:
        return self.conf.members()


class KeepReadsAfterStepDown(RaftNode):
    """A leader that steps down keeps its pending ReadIndex reads, and releases them (at the
    index recorded in its old term) once a later term of its own confirms leadership."""

    def _drop_pending_reads(self) -> None:
        pass


class SnapshotMatchesAnyTerm(RaftNode):
    """A follower that holds any entry at the snapshot's index treats the snapshot as matched:
    it commits up to there and keeps its own, possibly conflicting, log."""

    def _snapshot_matches(self, meta: SnapshotMeta) -> bool:
        return self.log.term(meta.index) != NO_TERM


MUTATIONS: dict[str, type[RaftNode]] = {
    "commit-previous-term": CommitPreviousTermByCounting,
    "two-votes-per-term": GrantTwoVotesPerTerm,
    "vote-before-persist": VoteBeforePersist,
    "read-without-quorum": ReadWithoutQuorum,
    "conf-change-before-own-term-commit": ConfChangeBeforeOwnTermCommit,
    "lead-before-term-durable": LeadBeforeTermDurable,
    "keep-conflicting-suffix": KeepConflictingSuffix,
    "commit-past-last-new-entry": CommitPastLastNewEntry,
    "vote-ignores-log": VoteIgnoresLog,
    "pre-vote-ignores-log": PreVoteIgnoresLog,
    "all-votes-ignore-log": AllVotesIgnoreLog,
    "learners-count-for-commit": LearnersCountForCommit,
    "learners-vote": LearnersVote,
    "keep-reads-after-step-down": KeepReadsAfterStepDown,
    "snapshot-matches-any-term": SnapshotMatchesAnyTerm,
}


# -- whole-broker mutations (the cluster simulator) --------------------------------------------
# Each is a context manager that monkeypatches one rule of the broker for the duration of a
# run (test-only; nothing under broker/ changes).


def _patched(cls: type, name: str, fn: Callable[..., Any]) -> AbstractContextManager[None]:
    @contextlib.contextmanager
    def patch() -> Iterator[None]:
        original = cls.__dict__[name]
        setattr(cls, name, fn)
        try:
            yield
        finally:
            setattr(cls, name, original)

    return patch()


def ack_before_commit() -> AbstractContextManager[None]:
    """A partition leader acknowledges a produce once it has appended the batch to its own
    log (Kafka's acks=1), with the offsets it expects the batch to take, before a quorum
    holds it."""
    produce = BrokerNode.produce

    def mutant(
        self: BrokerNode, token: int, slot: int, topic: str, partition: int, batch: bytes
    ) -> tuple[ErrorCode, str | None]:
        err, msg = produce(self, token, slot, topic, partition, batch)
        if err != ErrorCode.NONE:
            return err, msg
        g = self.by_partition[(topic, partition)]
        assert g.machine is not None
        index = max(i for i, w in g.waiters.items() if (w.token, w.slot) == (token, slot))
        del g.waiters[index]
        base = g.machine.high_watermark
        for e in g.raft.log.slice(g.raft.log.applied + 1, index) or []:
            if e.kind == EntryKind.NORMAL and e.data:
                base += parse_header(e.data, check_crc=False).record_count
        n = parse_header(batch, check_crc=False).record_count
        result = ApplyResult(Outcome.APPENDED, base, base + n - 1)
        self.host.complete(token, slot, ErrorCode.NONE, None, result)
        return err, msg

    return _patched(BrokerNode, "produce", mutant)


def no_dedup() -> AbstractContextManager[None]:
    """The partition state machine appends every idempotent batch: no duplicate detection,
    no sequence check."""

    def mutant(self: PartitionMachine, raft_index: int, h: BatchHeader) -> ApplyResult:
        return self._append(raft_index, h)

    return _patched(PartitionMachine, "_apply_idempotent", mutant)


def apply_before_durable() -> AbstractContextManager[None]:
    """Raft hands committed entries to the application before they are durable locally (a
    follower learns the leader's commit index in the AppendEntries that carries the entries),
    so the broker applies them, and answers for them, before its own write."""

    def mutant(self: RaftLog, max_bytes: int | None) -> list[Entry]:
        if self.unstable_snapshot is not None or self.committed <= self.applied:
            return []
        return self.slice(self.applied + 1, self.committed + 1, max_bytes)

    return _patched(RaftLog, "next_committed", mutant)


def fetch_uncommitted() -> AbstractContextManager[None]:
    """A fetch also returns the batches the replica holds beyond its high watermark (appended,
    not yet committed or applied), at the offsets they would take if they committed."""
    fetch = BrokerNode.fetch

    def mutant(
        self: BrokerNode,
        topic: str,
        partition: int,
        offset: int,
        max_bytes: int,
        read_committed: bool,
        *,
        min_one: bool = True,
    ) -> FetchResult:
        r = fetch(self, topic, partition, offset, max_bytes, read_committed, min_one=min_one)
        g = self.by_partition.get((topic, partition))
        if r.error != ErrorCode.NONE or g is None or g.machine is None:
            return r
        log = g.raft.log
        extra = []
        base = g.machine.high_watermark
        for e in log.slice(log.applied + 1, log.last_index() + 1) or []:
            if e.kind == EntryKind.NORMAL and e.data:
                if base >= offset:
                    extra.append((base, e.data))
                base += parse_header(e.data, check_crc=False).record_count
        return dataclasses.replace(r, batches=r.batches + tuple(extra))

    return _patched(BrokerNode, "fetch", mutant)


def pid_block_before_commit() -> AbstractContextManager[None]:
    """The controller answers a broker's request for producer ids at once, with the block it
    expects its proposal to allocate (the next one in its applied state), instead of the one
    the committed entry allocates."""

    def mutant(self: ProducerIdAllocator, req: Inbound) -> Answer | None:
        mg = self.ctx.metadata_group
        if mg is None or not mg.serving():
            return Answer(None, ErrorCode.NOT_CONTROLLER, "this broker is not the controller")
        self.ctx.host.propose(mg, cmd_alloc_producer_ids(req.src))
        start = self.ctx.meta.next_producer_id
        return Answer({"start": start, "count": PRODUCER_ID_BLOCK})

    return _patched(ProducerIdAllocator, "_serve_peer", mutant)


BROKER_MUTATIONS: dict[str, Callable[[], AbstractContextManager[None]]] = {
    "pid-block-before-commit": pid_block_before_commit,
    "ack-before-commit": ack_before_commit,
    "fetch-uncommitted": fetch_uncommitted,
    "no-dedup": no_dedup,
    "apply-before-durable": apply_before_durable,
}


def _raft_mutation(mutant: type[RaftNode]) -> Callable[[], AbstractContextManager[None]]:
    """Every Raft group of every broker runs the mutant node."""

    @contextlib.contextmanager
    def patch() -> Iterator[None]:
        original = getattr(host_module, "RaftNode")  # noqa: B009
        setattr(host_module, "RaftNode", mutant)  # noqa: B010
        try:
            yield
        finally:
            setattr(host_module, "RaftNode", original)  # noqa: B010

    return patch


BROKER_MUTATIONS.update(
    {
        "raft-two-votes-per-term": _raft_mutation(GrantTwoVotesPerTerm),
        "raft-vote-before-persist": _raft_mutation(VoteBeforePersist),
    }
)


# -- client mutations (the cluster simulator's producers run the client library's core) --------


def _client_mutation(name: str) -> Callable[[], AbstractContextManager[None]]:
    """The producer core breaks rule `name` (one of its MUTATIONS flags)."""

    @contextlib.contextmanager
    def switch() -> Iterator[None]:
        producer_core.MUTATIONS.add(name)
        try:
            yield
        finally:
            producer_core.MUTATIONS.discard(name)

    return switch


CLIENT_MUTATIONS: dict[str, Callable[[], AbstractContextManager[None]]] = {
    producer_core.RETRY_AS_NEW_BATCH: _client_mutation(producer_core.RETRY_AS_NEW_BATCH),
}


# -- driver mutations (the cluster simulator's model of the pipelined Trio driver) -------------
# The simulated driver (tests/sim/cluster_world.py) breaks its one rule: a round ends
# (`end_round`: acknowledgements, votes, answers) only once its write is durable, in order.
# See tests/sim/test_pipeline_sim.py for which checker catches each, and at which seed.


def _pipeline_fault(name: str) -> Callable[[], AbstractContextManager[None]]:
    """The simulated driver plants fault `name` (one of cluster_world.PIPELINE_FAULTS)."""

    @contextlib.contextmanager
    def switch() -> Iterator[None]:
        cluster_world.PIPELINE_FAULTS.add(name)
        try:
            yield
        finally:
            cluster_world.PIPELINE_FAULTS.discard(name)

    return switch


PIPELINE_MUTATIONS: dict[str, Callable[[], AbstractContextManager[None]]] = {
    "pipeline-end-before-durable": _pipeline_fault(cluster_world.END_BEFORE_WRITE),
    "pipeline-end-out-of-order": _pipeline_fault(cluster_world.END_OUT_OF_ORDER),
}
CLUSTER_MUTATIONS = {**BROKER_MUTATIONS, **CLIENT_MUTATIONS, **PIPELINE_MUTATIONS}
"""Every mutation the cluster simulator runs (`cluster_run --mutation`)."""


# -- consumer-group mutations (the cluster simulator's `groups` profile) -----------------------
# Server rules are monkeypatched like BROKER_MUTATIONS; member rules patch the client core
# (`consumers.core.group_member`) or switch on a flag of the simulated members
# (tests/sim/cluster_groups.py MUTATIONS). Each is caught by one group checker; see
# tests/sim/test_group_sim.py for which, and at which seed.


def group_eager_handout() -> AbstractContextManager[None]:
    """The coordinator hands a target partition to its new owner at once, while its previous
    owner still holds it (has not reported it released)."""

    def mutant(self: GroupMembership, m: MemberState) -> HeartbeatAnswer:
        target = self.target.get(m.member_id, frozenset())
        m.held |= set(target)
        assigned = frozenset(m.held & target)
        if m.held <= target and m.epoch != self.epoch:
            m.previous_epoch, m.epoch = m.epoch, self.epoch
        return HeartbeatAnswer(MemberOutcome.OK, m.epoch, assigned)

    return _patched(GroupMembership, "_reconcile", mutant)


def group_commit_unheld() -> AbstractContextManager[None]:
    """The coordinator accepts a member's commit (current or previous epoch) of any
    partition, held or not."""
    commit = ConsumerGroup.commit

    def mutant(
        self: ConsumerGroup,
        member_id: str,
        member_epoch: int,
        offsets: list[tuple[str, int, int, str | None]],
        meta_index: int,
        index: int,
    ) -> list[ErrorCode]:
        ms = self.membership.members.get(member_id)
        if member_id and ms is not None and member_epoch in (ms.epoch, ms.previous_epoch):
            for topic, partition, offset, metadata in offsets:
                self.offsets[(topic, partition)] = Committed(offset, metadata, meta_index)
            self.changed = index
            return [ErrorCode.NONE] * len(offsets)
        return commit(self, member_id, member_epoch, offsets, meta_index, index)

    return _patched(ConsumerGroup, "commit", mutant)


def group_assignor_not_sticky() -> AbstractContextManager[None]:
    """The uniform assignor ignores what members hold (balanced, but not sticky)."""
    assign = UniformAssignor.assign

    def mutant(
        self: UniformAssignor,
        members: Mapping[str, Subscription],
        partitions: Mapping[str, int],
        current: Mapping[str, frozenset[tuple[str, int]]],
    ) -> dict[str, frozenset[tuple[str, int]]]:
        return assign(self, members, partitions, {})

    return _patched(UniformAssignor, "assign", mutant)


def group_expire_without_rebalance() -> AbstractContextManager[None]:
    """An expired member is removed without a new target assignment: its partitions stay
    in nobody's target until the membership changes again."""

    def mutant(self: GroupMembership, member_id: str) -> MemberOutcome:
        if member_id not in self.members:
            return MemberOutcome.FENCED
        self._remove(member_id)
        return MemberOutcome.OK

    return _patched(GroupMembership, "expire", mutant)


def member_ignores_lost_rule() -> AbstractContextManager[None]:
    """The member core never treats its partitions as lost for want of heartbeat answers
    (the 2/3 rule): a stalled member goes on processing after the coordinator expired it."""

    def mutant(self: GroupMember) -> float:
        return math.inf

    return _patched(GroupMember, "lost_deadline", mutant)


def _member_switch(name: str) -> Callable[[], AbstractContextManager[None]]:
    @contextlib.contextmanager
    def switch() -> Iterator[None]:
        cluster_groups.MUTATIONS.add(name)
        try:
            yield
        finally:
            cluster_groups.MUTATIONS.discard(name)

    return switch


GROUP_MUTATIONS: dict[str, Callable[[], AbstractContextManager[None]]] = {
    "group-eager-handout": group_eager_handout,
    "group-commit-unheld": group_commit_unheld,
    "group-assignor-not-sticky": group_assignor_not_sticky,
    "group-expire-without-rebalance": group_expire_without_rebalance,
    "member-ignores-lost-rule": member_ignores_lost_rule,
    cluster_groups.STALE_COMMIT_QUEUE: _member_switch(cluster_groups.STALE_COMMIT_QUEUE),
}
"""Run with `cluster_run --profile groups --mutation NAME`."""
CLUSTER_MUTATIONS.update(GROUP_MUTATIONS)


# -- transaction mutations (the cluster simulator's `txn` profile) -----------------------------
# The protocol explorer's planted faults (tests/model/txn_mutations.py) apply unchanged: they
# patch the same coordinator, driver and ledger the simulated brokers run. The others break a
# partition's read_committed, dedup or the coordinator's InitProducerId rule. See
# tests/sim/test_txn_sim.py for which checker catches each, and at which seed.


def txn_fetch_past_lso() -> AbstractContextManager[None]:
    """A partition's last stable offset is its high watermark: read_committed fetches serve
    the records of transactions still open (aborted data and markers still left out)."""
    return _patched(
        PartitionMachine, "last_stable_offset", property(lambda self: self.high_watermark)
    )


@contextlib.contextmanager
def txn_fetch_aborted() -> Iterator[None]:
    """read_committed fetches leave out markers but serve aborted transactions' records."""
    original = partitions_module.is_aborted
    partitions_module.is_aborted = lambda ranges, pid, offset: False
    try:
        yield
    finally:
        partitions_module.is_aborted = original


def txn_fetch_skips_after_gap() -> AbstractContextManager[None]:
    """A read_committed fetch stops at the first batch it leaves out (a marker, aborted data)
    but still answers the next offset past everything it looked at: committed batches after
    the gap are skipped for good."""
    fetch = PartitionService.fetch

    def mutant(
        self: PartitionService,
        topic: str,
        partition: int,
        offset: int,
        max_bytes: int,
        read_committed: bool,
        *,
        min_one: bool = True,
    ) -> FetchResult:
        r = fetch(self, topic, partition, offset, max_bytes, read_committed, min_one=min_one)
        if not read_committed or not r.batches:
            return r
        kept: list[tuple[int, bytes]] = []
        position = offset
        for base, data in r.batches:
            if base != position:
                break
            kept.append((base, data))
            position = base + parse_header(data, check_crc=False).record_count
        return dataclasses.replace(r, batches=tuple(kept))

    return _patched(PartitionService, "fetch", mutant)


def txn_dedup_lost() -> AbstractContextManager[None]:
    """A transactional batch repeating one the partition holds (a producer's retry after a
    lost answer) is appended again instead of answered with the first copy's offsets."""
    original = PartitionMachine._apply_idempotent

    def mutant(self: PartitionMachine, raft_index: int, h: BatchHeader) -> ApplyResult:
        state = self.producers.get(h.producer_id)
        if h.is_transactional and state is not None and h.producer_epoch == state.epoch:
            last = (h.base_sequence + h.record_count - 1) % SEQUENCE_MODULUS
            cached = any(
                c.first_seq == h.base_sequence and c.last_seq == last for c in state.batches
            )
            if cached and self.ledger.data_problem(h.producer_id, h.producer_epoch, True).ok:
                result = self._append(raft_index, h)
                self.ledger.note_data(h.producer_id, result.base_offset, last)
                return result
        return original(self, raft_index, h)

    return _patched(PartitionMachine, "_apply_idempotent", mutant)


@contextlib.contextmanager
def txn_init_reuses_epoch() -> Iterator[None]:
    """InitProducerId of a transactional id with no open transaction hands out its current
    epoch again instead of the next one: the previous producer is not fenced. (The machine
    dispatches commands through its `_HANDLERS` table, so that is what is patched.)"""
    original = coordinator_module._HANDLERS["init"]

    def mutant(self: TransactionCoordinator, cmd: dict[str, Any]) -> Applied:
        t = self.txns.get(cmd["txn"])
        before = None if t is None or t.open else (t.producer_id, t.epoch)
        applied = original(self, cmd)
        reused = before is not None and t is not None and t.producer_id == before[0]
        if reused and applied.error == ErrorCode.NONE:
            assert t is not None and before is not None
            t.epoch = before[1]
            return Applied(value=InitAnswer(t.producer_id, t.epoch))
        return applied

    coordinator_module._HANDLERS["init"] = mutant
    try:
        yield
    finally:
        coordinator_module._HANDLERS["init"] = original


@contextlib.contextmanager
def txn_init_ends_precommitted() -> Iterator[None]:
    """InitProducerId of a transactional id whose transaction is PRE_COMMITTED completes it
    at once (its outcome is known: commit) instead of answering CONCURRENT_TRANSACTIONS
    until every participant holds its marker: the new producer's transactions may be read
    before the participants commit the old one on their own (the pre-commit timeout)."""
    original = coordinator_module._HANDLERS["init"]

    def mutant(self: TransactionCoordinator, cmd: dict[str, Any]) -> Applied:
        t = self.txns.get(cmd["txn"])
        if t is not None and t.state == TxnState.PRE_COMMITTED:
            self._complete_entry(t, True, AbortReason.NONE, cmd["ts"])
        return original(self, cmd)

    coordinator_module._HANDLERS["init"] = mutant
    try:
        yield
    finally:
        coordinator_module._HANDLERS["init"] = original


def txn_timeout_never_fires() -> AbstractContextManager[None]:
    """The coordinator's leader never aborts a transaction for its timeout (its timer starts
    again at every step)."""
    original = TxnDriver._step

    def mutant(self: TxnDriver, t: Any, prog: Any, sends: list[Any], props: list[bytes]) -> None:
        prog.since = self._tick
        original(self, t, prog, sends, props)

    return _patched(TxnDriver, "_step", mutant)


TXN_MUTATIONS: dict[str, Callable[[], AbstractContextManager[None]]] = {
    **txn_mutations.MUTATIONS,
    "txn-fetch-past-lso": txn_fetch_past_lso,
    "txn-fetch-aborted": txn_fetch_aborted,
    "txn-fetch-skips-after-gap": txn_fetch_skips_after_gap,
    "txn-dedup-lost": txn_dedup_lost,
    "txn-init-reuses-epoch": txn_init_reuses_epoch,
    "txn-init-ends-precommitted": txn_init_ends_precommitted,
    "txn-timeout-never-fires": txn_timeout_never_fires,
}
"""Run with `cluster_run --profile txn --mutation NAME`."""
CLUSTER_MUTATIONS.update(TXN_MUTATIONS)


# -- reassignment mutations (the cluster simulator's `reassign` profile) -----------------------
# A partition leader's membership step (broker/core/reassignment.py `step_membership`) breaks
# one of its rules: a planted step runs before the real one. Each is caught by one checker of
# tests/sim/cluster_reassign.py; see tests/sim/test_reassign_sim.py for which, and at which
# seed.


def _step_first(
    planted: Callable[[GroupHost, HostedGroup, Sequence[Member]], bool],
) -> Callable[[GroupHost, HostedGroup, Sequence[Member], int], bool]:
    """step_membership with `planted` tried first (once the last change committed and the
    configuration is not yet the desired one); True from `planted`: it took the step."""
    original = reassignment.step_membership

    def mutant(host: GroupHost, g: HostedGroup, desired: Sequence[Member], ticks: int) -> bool:
        raft = g.raft
        conf = raft.conf
        done = conf.voters == frozenset(desired) and not conf.learners
        if not done and raft.conf_entry_index() <= raft.commit_index and planted(host, g, desired):
            return False
        return original(host, g, desired, ticks)

    return mutant


@contextlib.contextmanager
def _step_patch(
    step: Callable[[GroupHost, HostedGroup, Sequence[Member], int], bool],
) -> Iterator[None]:
    original = reassignment.step_membership
    reassignment.step_membership = step
    try:
        yield
    finally:
        reassignment.step_membership = original


def reassign_promote_at_once() -> AbstractContextManager[None]:
    """A desired learner is promoted as soon as its addition committed, however far behind
    its log is."""

    def planted(host: GroupHost, g: HostedGroup, desired: Sequence[Member]) -> bool:
        for m in desired:
            if m in g.raft.conf.learners:
                host.propose_conf(g, ConfChange(ConfChangeKind.ADD_VOTER, m))
                return True
        return False

    return _step_patch(_step_first(planted))


def reassign_remove_first() -> AbstractContextManager[None]:
    """A voter not desired is removed whatever the voter count (the `len(conf.voters) >
    len(want)` condition dropped): a move first shrinks the group below its replication
    factor."""

    def planted(host: GroupHost, g: HostedGroup, desired: Sequence[Member]) -> bool:
        raft = g.raft
        leaving = sorted(
            m for m in map(member_of, raft.conf.voters)
            if m is not None and m not in desired and m != raft.id
        )  # fmt: skip
        if leaving and not raft.conf.learners:
            host.propose_conf(g, ConfChange(ConfChangeKind.REMOVE, leaving[0]))
            return True
        return False

    return _step_patch(_step_first(planted))


def reassign_add_first() -> AbstractContextManager[None]:
    """Missing desired members are added (and then promoted) before the voters not desired
    are removed: a move of two replicas grows the group to five voters."""

    def planted(host: GroupHost, g: HostedGroup, desired: Sequence[Member]) -> bool:
        conf = g.raft.conf
        missing = [m for m in desired if not conf.is_member(m)]
        if missing and not conf.learners:
            host.propose_conf(g, ConfChange(ConfChangeKind.ADD_LEARNER, missing[0]))
            return True
        return False

    return _step_patch(_step_first(planted))


@contextlib.contextmanager
def reassign_replace_at_once() -> Iterator[None]:
    """A replacement in one go: right after proposing a learner's promotion the leader also
    proposes the removal of a voter not desired, the promotion still uncommitted (the Raft
    node's one-change-in-flight rule switched off)."""
    original = reassignment.step_membership

    def step(host: GroupHost, g: HostedGroup, desired: Sequence[Member], ticks: int) -> bool:
        raft = g.raft
        voters = len(raft.conf.voters)
        reached = original(host, g, desired, ticks)
        leaving = sorted(
            m for m in map(member_of, raft.conf.voters)
            if m is not None and m not in desired and m != raft.id
        )  # fmt: skip
        if len(raft.conf.voters) > voters and leaving:
            host.propose_conf(g, ConfChange(ConfChangeKind.REMOVE, leaving[0]))
        return reached

    def allowed(self: RaftNode) -> bool:
        return self.log.committed >= self.term_start_index

    with _patched(RaftNode, "_conf_change_allowed", allowed), _step_patch(step):
        yield


REASSIGN_MUTATIONS: dict[str, Callable[[], AbstractContextManager[None]]] = {
    "reassign-promote-at-once": reassign_promote_at_once,
    "reassign-remove-first": reassign_remove_first,
    "reassign-add-first": reassign_add_first,
    "reassign-replace-at-once": reassign_replace_at_once,
}
"""Run with `cluster_run --profile reassign --mutation NAME`."""
CLUSTER_MUTATIONS.update(REASSIGN_MUTATIONS)
