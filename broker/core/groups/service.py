"""GroupService: the node's side of consumer groups (pure, like the node).

- Placement: group -> partition `coordinator_partition(group, n)` of `__consumer_offsets`,
  whose serving leader is the group's coordinator. FIND_COORDINATOR is answered by any broker
  from its metadata; while the topic does not exist, the controller is asked to create it and
  the answer is COORDINATOR_NOT_AVAILABLE (retriable).
- Requests for a group are served only by its coordinator (else NOT_COORDINATOR). A heartbeat
  that changes nothing (an idle member: same epoch, subscription, partitions) is answered from
  the applied state without a Raft entry, provided the replica has applied everything it
  knows committed; any other heartbeat, every commit, leave and delete is proposed and
  answered with the machine's result once applied.
- Reads (offsets, describe, list) answer from the applied state of a serving leader that has
  applied everything committed (else COORDINATOR_LOAD_IN_PROGRESS).

Safety of answering without an entry: a deposed leader keeps answering at most an election
timeout (check-quorum), the new leader gives every member a whole session timeout from its
first serving tick, and the client stops processing after 2/3 of its session timeout without
an answer: a member the new leader expires has stopped before its partitions move.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from broker.core.context import GroupConfig, NodeContext
from broker.core.controller import Controller
from broker.core.groups.assignors import ASSIGNORS
from broker.core.groups.coordinator import (
    GroupCoordinator,
    cmd_commit,
    cmd_delete,
    cmd_heartbeat,
    cmd_leave,
    cmd_txn_offsets,
    coordinator_partition,
    resolve,
)
from broker.core.groups.group import Heartbeat
from broker.core.groups.membership import Outcome
from broker.core.host import HostedGroup
from broker.core.machine import GroupContext, MachineKind
from broker.core.metadata import INTERNAL_PREFIX
from broker.core.partitions import PartitionService
from broker.core.reply import coordinator_error
from broker.core.views import ClusterView
from broker.wire.errors import ErrorCode
from broker.wire.group_messages import (
    LEAVE_EPOCH,
    TEMPORARY_LEAVE_EPOCH,
    CommittedOffset,
    DescribedGroup,
    DescribedMember,
    FindCoordinatorResponse,
    GroupHeartbeatRequest,
    ListedGroup,
    OffsetCommitRequest,
    OffsetFetchRequest,
    to_topic_partitions,
)
from broker.wire.txn_messages import TxnOffsetCommitRequest

OFFSETS_TOPIC = "__consumer_offsets"
WAITING_INTERVAL_MS = 200

_NESTED_QUANTIFIER = re.compile(r"\([^()]*[*+}][^()]*\)\s*[*+{]")
"""A quantified group that itself contains a quantifier: the shape of catastrophic
backtracking (`(a+)+`), refused in subscription patterns."""


Result = tuple[ErrorCode, str | None, object]
"""(error, message, value) of an operation answered at once."""


class GroupService:
    def __init__(
        self,
        ctx: NodeContext,
        views: ClusterView,
        controller: Controller,
        partitions: PartitionService,
        config: GroupConfig,
        tick_ms: int,
    ) -> None:
        self.ctx = ctx
        self.views = views
        self.controller = controller
        self.partitions = partitions
        self.config = config
        self.tick_ms = tick_ms
        self._counts: tuple[int, dict[str, int]] = (-1, {})
        self.kind = MachineKind("group-coordinator", self._create, has_timers=True)

    def _create(self, gc: GroupContext) -> GroupCoordinator:
        return GroupCoordinator(
            self.topic_counts,
            tick_ms=self.tick_ms,
            empty_group_expiry_ms=self.config.empty_group_expiry_ms,
            wall_ms=lambda: self.ctx.wall_ms,
        )

    def topic_counts(self) -> tuple[int, Mapping[str, int]]:
        """(metadata applied index, partition count of every topic but the internal ones)."""
        meta = self.ctx.meta
        index = meta.applied_index
        if self._counts[0] != index:
            counts = {
                name: len(t.partitions)
                for name, t in meta.topics.items()
                if not name.startswith(INTERNAL_PREFIX)
            }
            self._counts = (index, counts)
        return self._counts

    # -- placement --------------------------------------------------------------------------

    def _partition_count(self) -> int | None:
        topic = self.ctx.meta.topics.get(OFFSETS_TOPIC)
        return None if topic is None else len(topic.partitions)

    def find(self, group_id: str) -> Result:
        if not self.controller.request_internal_topic(OFFSETS_TOPIC):
            return ErrorCode.COORDINATOR_NOT_AVAILABLE, "the offsets topic is being created", None
        n = self._partition_count()
        assert n is not None
        p = coordinator_partition(group_id, n)
        leader, _ = self.views.leader_hint(OFFSETS_TOPIC, p)
        broker = None if leader is None else self.ctx.meta.brokers.get(leader)
        if broker is None:
            return ErrorCode.COORDINATOR_NOT_AVAILABLE, f"{OFFSETS_TOPIC}[{p}] has no leader", None
        body = FindCoordinatorResponse(node_id=broker.id, host=broker.host, port=broker.port,
                                       partition=p)  # fmt: skip
        return ErrorCode.NONE, None, body

    def _coordinator(self, group_id: str, *, read: bool = False) -> HostedGroup | Result:
        """The hosted coordinator group of `group_id` if this broker serves it, else why not."""
        n = self._partition_count()
        if n is None:
            return ErrorCode.COORDINATOR_NOT_AVAILABLE, "the offsets topic does not exist yet", None
        p = coordinator_partition(group_id, n)
        g = self.partitions.by_partition.get((OFFSETS_TOPIC, p))
        if g is None or not g.serving():
            return ErrorCode.NOT_COORDINATOR, f"not the coordinator of group {group_id!r}", None
        if read and g.machine.applied_index < g.raft.commit_index:
            return ErrorCode.COORDINATOR_LOAD_IN_PROGRESS, "the coordinator is catching up", None
        return g

    @staticmethod
    def _machine(g: HostedGroup) -> GroupCoordinator:
        m = g.machine
        assert isinstance(m, GroupCoordinator)
        return m

    # -- heartbeats -------------------------------------------------------------------------

    def session_ms(self, requested: int) -> int | None:
        c = self.config
        if requested == 0:
            return c.session_timeout_ms
        if c.min_session_timeout_ms <= requested <= c.max_session_timeout_ms:
            return requested
        return None

    def overdue(self, group_id: str) -> bool:
        """A member of the group missed a heartbeat (see GroupCoordinator.overdue)."""
        n = self._partition_count()
        if n is None:
            return False
        g = self.partitions.by_partition.get((OFFSETS_TOPIC, coordinator_partition(group_id, n)))
        return g is not None and group_id in self._machine(g).overdue

    def interval_ms(self, session_ms: int, *, waiting: bool = False) -> int:
        """How soon a member heartbeats again: the configured interval (at most a third of
        its session), or WAITING_INTERVAL_MS while partitions of its target are still held
        by others (they are released at their owners' next heartbeats) or while another
        member is overdue (its partitions come free when its session expires)."""
        interval = max(1, min(self.config.heartbeat_interval_ms, session_ms // 3))
        return min(interval, WAITING_INTERVAL_MS) if waiting else interval

    def heartbeat(
        self, token: int, slot: int, req: GroupHeartbeatRequest, client_id: str | None
    ) -> Result | None:
        """A Result now, or None: a Completion (value: HeartbeatAnswer) follows."""
        found = self._coordinator(req.group_id)
        if not isinstance(found, HostedGroup):
            return found
        g, machine = found, self._machine(found)
        if req.member_epoch in (LEAVE_EPOCH, TEMPORARY_LEAVE_EPOCH):
            temporary = req.member_epoch == TEMPORARY_LEAVE_EPOCH and req.instance_id is not None
            group = machine.groups.get(req.group_id)
            member = None if group is None else group.membership.members.get(req.member_id)
            if member is None:
                return ErrorCode.UNKNOWN_MEMBER_ID, "the member is not in the group", None
            cmd = cmd_leave(req.group_id, req.member_id, member.epoch, temporary, self.ctx.wall_ms)
            return self._propose(g, cmd, token, slot)
        session = self.session_ms(req.session_timeout_ms)
        if session is None:
            c = self.config
            return (ErrorCode.INVALID_SESSION_TIMEOUT,
                    f"session_timeout_ms must be 0 (the default) or within "
                    f"[{c.min_session_timeout_ms}, {c.max_session_timeout_ms}]", None)  # fmt: skip
        if req.assignor is not None and req.assignor not in ASSIGNORS:
            names = ", ".join(sorted(ASSIGNORS))
            return ErrorCode.UNSUPPORTED_ASSIGNOR, f"no assignor {req.assignor!r} ({names})", None
        problem = pattern_problem(req.pattern)
        if problem is not None:
            return ErrorCode.INVALID_REGULAR_EXPRESSION, problem, None
        meta_index, counts = self.topic_counts()
        resolved = frozenset(
            t for t in resolve(req.topics, req.pattern, counts) if not t.startswith(INTERNAL_PREFIX)
        )
        hb = Heartbeat(
            member_id=req.member_id,
            member_epoch=req.member_epoch,
            instance_id=req.instance_id,
            client_id=client_id,
            client_host=req.client_host,
            session_ms=session,
            topics=tuple(sorted(req.topics)),
            pattern=req.pattern,
            resolved=resolved,
            assignor=req.assignor,
            owned=frozenset((t.topic, p) for t in req.owned for p in t.partitions),
            partitions={t: counts.get(t, 0) for t in sorted(resolved)},
        )
        if g.machine.applied_index >= g.raft.commit_index:
            answer = machine.peek(hb, req.group_id)
            if answer is not None and answer.outcome is Outcome.OK:
                machine.heard(req.group_id, req.member_id)
                return ErrorCode.NONE, None, answer
            if answer is not None:
                group = machine.groups[req.group_id]
                known = req.member_id in group.membership.members
                code = ErrorCode.FENCED_MEMBER_EPOCH if known else ErrorCode.UNKNOWN_MEMBER_ID
                return code, f"member {req.member_id} epoch {req.member_epoch} is fenced", None
        cmd = cmd_heartbeat(req.group_id, hb, meta_index, self.ctx.wall_ms)
        return self._propose(g, cmd, token, slot)

    def _propose(self, g: HostedGroup, cmd: bytes, token: int, slot: int) -> Result | None:
        err, msg = self.ctx.host.propose_waiting(g, cmd, token, slot)
        return None if err == ErrorCode.NONE else (coordinator_error(err), msg, None)

    # -- offsets ----------------------------------------------------------------------------

    def commit(
        self, token: int, slot: int, req: OffsetCommitRequest | TxnOffsetCommitRequest
    ) -> tuple[Result | None, dict[tuple[str, int], ErrorCode]]:
        """(a Result now or None: a Completion with per-partition errors follows; the
        partitions refused up front). A TxnOffsetCommit stages the offsets in the
        producer's open transaction (visible when it commits)."""
        found = self._coordinator(req.group_id)
        if not isinstance(found, HostedGroup):
            return found, {}
        meta_index, counts = self.topic_counts()
        refused: dict[tuple[str, int], ErrorCode] = {}
        offsets: list[tuple[str, int, int, str | None]] = []
        for t in req.topics:
            for p in t.partitions:
                if p.partition >= counts.get(t.topic, 0):
                    refused[(t.topic, p.partition)] = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                else:
                    offsets.append((t.topic, p.partition, p.offset, p.metadata))
        if not offsets:
            return (ErrorCode.NONE, None, []), refused
        if isinstance(req, TxnOffsetCommitRequest):
            cmd = cmd_txn_offsets(
                req.group_id,
                req.producer_id,
                req.producer_epoch,
                req.member_id,
                req.member_epoch,
                offsets,
                meta_index,
            )
        else:
            cmd = cmd_commit(req.group_id, req.member_id, req.member_epoch, offsets, meta_index)
        return self._propose(found, cmd, token, slot), refused

    def fetch_offsets(self, req: OffsetFetchRequest) -> Result:
        found = self._coordinator(req.group_id, read=True)
        if not isinstance(found, HostedGroup):
            return found
        group = self._machine(found).groups.get(req.group_id)
        stored = {} if group is None else group.offsets
        if req.topics is None:
            wanted = sorted(stored)
        else:
            wanted = [(t.topic, p) for t in req.topics for p in t.partitions]
        if req.topics is not None and group is not None and any(map(group.unstable, wanted)):
            # A member about to read from these partitions waits for the transaction's
            # outcome (KIP-447); listing all of a group's offsets (tools) shows them as are.
            why = "an open transaction holds an offset of a partition asked for"
            return ErrorCode.UNSTABLE_OFFSET_COMMIT, why, None
        out = []
        for tp in wanted:
            c = stored.get(tp)
            offset, meta = (-1, None) if c is None else (c.offset, c.metadata)
            out.append(CommittedOffset(topic=tp[0], partition=tp[1], offset=offset, metadata=meta))
        return ErrorCode.NONE, None, tuple(out)

    # -- admin ------------------------------------------------------------------------------

    def list_groups(self) -> list[ListedGroup]:
        out: list[ListedGroup] = []
        for (topic, _), g in sorted(self.partitions.by_partition.items()):
            if topic != OFFSETS_TOPIC or not g.serving():
                continue
            for gid, group in sorted(self._machine(g).groups.items()):
                out.append(
                    ListedGroup(group_id=gid, state=group.state(), members=len(group.members))
                )
        return out

    def describe(self, group_id: str) -> DescribedGroup:
        found = self._coordinator(group_id, read=True)
        if not isinstance(found, HostedGroup):
            return DescribedGroup(group_id=group_id, error=found[0], message=found[1])
        group = self._machine(found).groups.get(group_id)
        if group is None:
            return DescribedGroup(group_id=group_id, error=ErrorCode.GROUP_ID_NOT_FOUND,
                                  message=f"no group {group_id!r}")  # fmt: skip
        ms = group.membership
        members = []
        for mid, info in sorted(group.members.items()):
            m = ms.members[mid]
            target = ms.target.get(mid, frozenset())
            members.append(
                DescribedMember(
                    member_id=mid,
                    instance_id=info.instance_id,
                    client_id=info.client_id,
                    client_host=info.client_host,
                    member_epoch=m.epoch,
                    topics=info.topics,
                    pattern=info.pattern,
                    assignment=to_topic_partitions(m.held),
                    revoking=to_topic_partitions(m.held - target),
                )
            )
        return DescribedGroup(
            group_id=group_id,
            state=group.state(),
            assignor=group.assignor,
            group_epoch=ms.epoch,
            members=tuple(members),
            rebalance_reason=group.rebalance_reason,
            rebalance_time_ms=group.rebalance_ms,
        )

    def delete(self, token: int, slot: int, group_id: str) -> Result | None:
        found = self._coordinator(group_id)
        if not isinstance(found, HostedGroup):
            return found
        return self._propose(found, cmd_delete(group_id), token, slot)


def pattern_problem(pattern: str | None) -> str | None:
    """Why a subscription pattern is refused, or None (it compiles, has no backreference and
    no nested quantifier: matching stays linear enough on topic names)."""
    if pattern is None:
        return None
    try:
        re.compile(pattern)
    except re.error as e:
        return f"pattern {pattern!r} does not compile: {e}"
    if re.search(r"\\[1-9]|\(\?P=", pattern):
        return f"pattern {pattern!r} uses a backreference"
    if _NESTED_QUANTIFIER.search(pattern):
        return f"pattern {pattern!r} nests quantifiers (catastrophic backtracking)"
    return None
