"""TxnParticipants: this broker's side as a participant of transactions (pure).

A coordinator's request (peer request kind `txn`, body a `TxnCommand`) names a participant:
a partition, served by its partition-log leader here, or a group's offsets, served by the
leader of the group's `__consumer_offsets` partition here. The leader proposes the command
to that Raft group (BEGIN, PREPARE and PRECOMMIT as command entries; COMMIT and ABORT to a
partition as a marker batch) and answers the request once the entry applied, with the
ledger's result: so every state change a participant reports is in its log first
(lessons.md 3PC checklist, item 2). A broker that does not lead the participant answers
NOT_LEADER_OR_FOLLOWER / NOT_COORDINATOR and the coordinator asks again (its leader view
moves with metadata).

Termination without the coordinator: each leader here keeps a `PrecommitWatch` per group it
leads; a transaction that stays PRE_COMMITTED past `precommit_timeout_ticks` of this leader's
ticks is committed by the participant itself (a marker with coordinator term -1): the decision
is known, so a coordinator outage never holds the last stable offset behind it.
"""

from __future__ import annotations

from broker.core.context import NodeContext
from broker.core.groups.coordinator import GroupCoordinator, coordinator_partition
from broker.core.host import HostedGroup
from broker.core.internal_ops import InternalOps
from broker.core.partition import PartitionMachine
from broker.core.partitions import PartitionService
from broker.core.peer_requests import Answer, Inbound, PeerRequests, ReplyKey
from broker.core.rounds import Completion
from broker.core.txn.driver import PrecommitWatch
from broker.core.txn.protocol import GROUP, Participant, Phase, TxnCommand, encode_marker
from broker.wire.errors import ErrorCode, WireError

TXN_REQUEST = "txn"
"""Peer request kind: a coordinator's request to a participant."""
OFFSETS_TOPIC = "__consumer_offsets"


def participant_entry(cmd: TxnCommand) -> bytes:
    """The entry a participant's leader proposes for `cmd`."""
    if not cmd.participant.is_group and cmd.phase in (Phase.COMMIT, Phase.ABORT):
        return encode_marker(cmd)
    return cmd.encode()


class TxnParticipants:
    def __init__(
        self,
        ctx: NodeContext,
        partitions: PartitionService,
        ops: InternalOps,
        precommit_timeout_ticks: int,
    ) -> None:
        self.ctx = ctx
        self.partitions = partitions
        self.ops = ops
        self.precommit_timeout_ticks = precommit_timeout_ticks
        self._peer: PeerRequests | None = None
        self._watches: dict[int, tuple[int, PrecommitWatch]] = {}
        """group id -> (the term its leader serves in, its timer)."""
        self.self_commits = 0
        """Transactions a participant here committed on its own (a figure for tests)."""

    def attach(self, peer: PeerRequests) -> None:
        self._peer = peer
        peer.register(TXN_REQUEST, self._serve)

    # -- serving the coordinator ------------------------------------------------------------

    def leader_of(self, p: Participant) -> HostedGroup | tuple[ErrorCode, str]:
        """The serving leader's group of participant `p` on this broker, or why not."""
        if p.is_group:
            topic = self.ctx.meta.topics.get(OFFSETS_TOPIC)
            if topic is None:
                return ErrorCode.COORDINATOR_NOT_AVAILABLE, "no offsets topic yet"
            part = coordinator_partition(p.name, len(topic.partitions))
            g = self.partitions.by_partition.get((OFFSETS_TOPIC, part))
            if g is None or not g.serving() or not isinstance(g.machine, GroupCoordinator):
                return ErrorCode.NOT_COORDINATOR, f"not the coordinator of group {p.name!r}"
            return g
        err, msg, g = self.partitions.serving_log(p.name, p.partition)
        if g is None:
            return err, msg or err.description
        return g

    def _serve(self, req: Inbound) -> Answer | None:
        try:
            cmd = TxnCommand.from_wire(req.body)
        except WireError as e:
            return Answer(None, e.code, e.message)
        found = self.leader_of(cmd.participant)
        if not isinstance(found, HostedGroup):
            return Answer(None, found[0], found[1])
        key = req.key
        token = self.ops.token(lambda c: self._answer(key, c))
        err, msg = self.ctx.host.propose_waiting(found, participant_entry(cmd), token, 0)
        if err != ErrorCode.NONE:
            self.ops.forget(token)
            return Answer(None, err, msg)
        return None

    def _answer(self, key: ReplyKey, c: Completion) -> None:
        if self._peer is None:
            return
        vote = bool(getattr(c.value, "vote", False))
        self._peer.answer(key, {"vote": vote}, error=c.error, message=c.message)

    # -- termination without the coordinator ------------------------------------------------

    def tick(self) -> None:
        """Every tick: leaders whose transactions stay pre-committed commit them. With
        quiescence only awake groups are visited: a pre-committed transaction keeps its
        group awake (`PartitionMachine.timers_pending`)."""
        live: set[int] = set()
        host = self.ctx.host
        groups = host.active_groups() if host.quiesce else self.partitions.by_partition.values()
        for g in groups:
            m = g.machine
            topic, part = g.topic, g.partition
            if (
                not isinstance(m, PartitionMachine | GroupCoordinator)
                or topic is None
                or not g.serving()
            ):
                continue
            if not m.ledger.producers:
                continue
            live.add(g.id)
            term = g.raft.term
            held = self._watches.get(g.id)
            if held is None or held[0] != term:
                held = self._watches[g.id] = (term, PrecommitWatch(self.precommit_timeout_ticks))
            # A group coordinator's ledger serves every group of its partition: any name.
            at = (
                Participant(topic, part)
                if isinstance(m, PartitionMachine)
                else Participant(f"{topic}-{part}", GROUP)
            )
            for pid, epoch, txn_id in held[1].tick(m.ledger):
                self._commit_alone(g, at, pid, epoch, txn_id)
        for gid in [k for k in self._watches if k not in live]:
            del self._watches[gid]

    def _commit_alone(
        self, g: HostedGroup, at: Participant, pid: int, epoch: int, txn_id: str
    ) -> None:
        cmd = TxnCommand(
            phase=Phase.COMMIT,
            participant=at,
            txn_id=txn_id,
            producer_id=pid,
            epoch=epoch,
            coordinator_term=0,
            timestamp=max(0, self.ctx.wall_ms),
            by_participant=True,
        )
        if self.ctx.host.propose(g, participant_entry(cmd)) is not None:
            self.self_commits += 1
