"""What a broker tells clients about the cluster: partition leaders, replica lag, readiness.

Every answer comes from this broker's own state: its groups (a leader counts only once it
serves, so the high watermark a client sees never goes back across a failover) and its copy of
the metadata log (leaders reported there, brokers' liveness).
"""

from __future__ import annotations

from dataclasses import dataclass

from broker.core.context import NodeContext
from broker.core.host import HostedGroup
from broker.core.ids import NO_TERM, member_of
from broker.core.metadata import PartitionInfo


@dataclass(frozen=True, slots=True)
class PartitionView:
    partition: int
    leader: int | None
    leader_term: int
    replicas: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class PartitionStatus:
    """One partition as `sluice cluster status` shows it."""

    topic: str
    view: PartitionView
    caught_up: tuple[int, ...]
    """Replicas (node ids) holding every committed entry."""
    commit_lag: int
    """Committed entries the slowest replica lacks; -1 when unknown to this broker."""


class ClusterView:
    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        self.caught_up: dict[int, tuple[tuple[int, ...], int]] = {}
        """Controller only: partition group -> (replicas caught up, commit lag) as its leader
        last reported."""

    def partition_view(self, pi: PartitionInfo) -> PartitionView:
        """Leader and term as this broker knows them: its own group when it holds a replica
        (a leader counts only once it serves), else the leader last reported in the
        metadata log; the newer term wins, so a client never steps back. A report naming this
        broker is ignored: a deposed leader must not point clients at itself."""
        ctx = self.ctx
        g = ctx.host.groups.get(pi.group_id)
        leader: int | None = None
        term = NO_TERM
        if g is not None:
            term = g.raft.term
            lead = member_of(g.raft.leader)
            if lead is not None and (lead != ctx.config.member or g.serving()):
                leader = lead.node
        reported = ctx.meta.leaders.get(pi.group_id)
        if (
            reported is not None
            and reported[1] != ctx.config.node_id  # about itself its own group knows best
            and (reported[0] > term or (leader is None and reported[0] >= term))
        ):
            term, leader = reported
            if not ctx.meta.alive.get(leader, False):
                leader = None  # its broker is known to be down: no leader to point to
        return PartitionView(pi.partition, leader, term, pi.replicas)

    def leader_hint(self, topic: str, partition: int) -> tuple[int | None, int]:
        """(leader, term) of a partition as this broker knows it, for NOT_LEADER answers;
        (None, NO_TERM) for an unknown partition."""
        pi = self.ctx.meta.partition(topic, partition)
        if pi is None:
            return None, NO_TERM
        view = self.partition_view(pi)
        return view.leader, view.leader_term

    def topic_led(self, name: str) -> bool:
        t = self.ctx.meta.topics.get(name)
        if t is None:
            return False
        return all(self.partition_view(pi).leader is not None for pi in t.partitions)

    def replica_lag(self, g: HostedGroup) -> tuple[tuple[int, ...], int]:
        """Leader side: the replicas holding every committed entry and heard from within the
        last election timeout (a silent one may be dead; one on a broker whose link is lost is,
        for all we know, even when its group quiesced before its idle ticks ran up), and how
        many committed entries the slowest replica lacks."""
        raft = g.raft
        commit = raft.commit_index
        caught: list[int] = []
        lag = 0
        host = self.ctx.host
        for raft_id, pr in raft.progress.items():
            m = member_of(raft_id)
            if m is None:
                continue
            recent = m == raft.id or (
                pr.idle_ticks < self.ctx.config.election_ticks and not host.is_lost(m.node)
            )
            if pr.match >= commit and recent:
                caught.append(m.node)
            else:
                lag = max(lag, commit - pr.match)
        return tuple(sorted(caught)), lag

    def describe_partitions(self) -> list[PartitionStatus]:
        """For cluster status: every partition with its view, caught-up replicas and commit
        lag (from this broker's own group when it leads it, else as the controller last heard
        from the leader; unknown elsewhere: no replicas, lag -1)."""
        out = []
        for t in self.ctx.meta.topics.values():
            for pi in t.partitions:
                view = self.partition_view(pi)
                g = self.ctx.host.groups.get(pi.group_id)
                if g is not None and g.serving():
                    caught, lag = self.replica_lag(g)
                else:
                    caught, lag = self.caught_up.get(pi.group_id, ((), -1))
                out.append(PartitionStatus(t.name, view, caught, lag))
        return out

    def is_ready(self, hosted: list[tuple[str, int]]) -> bool:
        """Caught up with the metadata log, registered, and every hosted partition (topic,
        partition) led."""
        ctx = self.ctx
        mg = ctx.metadata_group
        if mg is None or ctx.controller() is None or ctx.meta.cluster_id is None:
            return False
        if mg.raft.log.applied < mg.raft.commit_index or not ctx.registered:
            return False
        for topic, partition in hosted:
            pi = ctx.meta.partition(topic, partition)
            if pi is not None and self.partition_view(pi).leader is None:
                return False
        return True
