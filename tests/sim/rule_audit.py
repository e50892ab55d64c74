"""Rule audits: the Raft rules themselves, checked on every message a simulated node takes in
or sends, beside the checkers of their consequences (tests/sim/checker.py).

A broken rule often has no visible consequence in a run: a vote granted to a stale candidate
matters only if that candidate then wins and lacks a committed entry, a follower committing
past what an append vouched for only if it holds an unrepaired suffix there. The audits catch
the rule broken the first time it is, whatever follows. Each reads only what a node took in
(`before_step`), what it sent (`on_send`) and what it reports (`on_leader`, `on_leader_commit`),
plus the world's disks, never the node's private state:

- vote-log-check: a vote or pre-vote is granted only to a candidate whose log (last term, last
  index) is at least as up to date as the voter's when the request arrived (§5.4.1);
- election-quorum: a leader of term T got real votes of T, itself included, from a majority of
  the voters of its configuration (learners' grants do not count);
- lead-before-durable: a node leads term T only once its disk holds term T with its own vote
  (or a later term): a crash must not let it vote for another in the term it leads;
- commit-quorum: a leader's commit index reaches c only when a majority of its voters hold c:
  acknowledged in its term (an AppendResponse delivered to it), or on its own disk; and the
  entry at c is of the leader's term (§5.4.2; earlier ones commit by being below it);
- follower-commit: a follower's commit index moves, on an append, at most to min(leader
  commit, last index the append vouched for) and, on a heartbeat, at most to the heartbeat's
  commit; a leader's heartbeat carries a commit no higher than what that follower acknowledged
  in its term (the coupling that makes the heartbeat path safe, written down).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from broker.core.raft import MemoryStorage, RaftNode, Role
from broker.core.raft.types import (
    AppendEntries,
    AppendResponse,
    Heartbeat,
    Message,
    RequestVote,
    VoteResponse,
)
from tests.sim.checker import Violation

Incarnation = tuple[int, int]
"""(node id, incarnation)."""


@dataclass
class RuleAudit:
    verdicts: dict[tuple[object, object, int, bool], set[bool]] = field(default_factory=dict)
    """(voter, candidate, term, pre_vote) -> was the candidate's log up to date, for each
    request of that key the voter took in."""
    grants: dict[tuple[Incarnation, int], set[object]] = field(default_factory=dict)
    """(candidate, term) -> voters whose real-vote grant was delivered to it."""
    acked: dict[tuple[Incarnation, int], dict[object, int]] = field(default_factory=dict)
    """(leader, term) -> follower -> highest index it acknowledged to that leader in term."""
    checks: int = 0

    # -- inputs -------------------------------------------------------------------------------

    def before_step(self, at: Incarnation, node: RaftNode, m: Message) -> int:
        """`node` (at) is about to take in m. Returns its commit index now, for `after_step`."""
        if isinstance(m, RequestVote):
            log = node.log
            ok = log.is_up_to_date(m.last_index, m.last_term)
            self.verdicts.setdefault((m.dst, m.src, m.term, m.pre_vote), set()).add(ok)
        elif isinstance(m, VoteResponse) and not m.reject and not m.pre_vote:
            self.grants.setdefault((at, m.term), set()).add(m.src)
        elif isinstance(m, AppendResponse) and not m.reject:
            acks = self.acked.setdefault((at, m.term), {})
            if m.index > acks.get(m.src, -1):
                acks[m.src] = m.index
        return node.log.committed

    def after_step(self, node: RaftNode, m: Message, before: int) -> None:
        """`node` took in m; its commit index was `before`."""
        c = node.log.committed
        if c <= before or node.role == Role.LEADER:
            return
        self.checks += 1
        if isinstance(m, AppendEntries):
            bound = min(m.commit, m.prev_index + len(m.entries))
            if c > bound:
                raise Violation(
                    "follower-commit",
                    f"node {node.id} committed {before} -> {c} on an append from {m.src} "
                    f"(prev {m.prev_index}, {len(m.entries)} entries, leader commit "
                    f"{m.commit}): at most {bound}",
                )
        elif isinstance(m, Heartbeat) and c > m.commit:
            raise Violation(
                "follower-commit",
                f"node {node.id} committed {before} -> {c} on a heartbeat of commit {m.commit}",
            )

    def on_send(self, at: Incarnation, m: Message) -> None:
        """A message leaves node `at` (at the moment the world puts it on the network)."""
        if isinstance(m, VoteResponse) and not m.reject:
            self.checks += 1
            seen = self.verdicts.get((m.src, m.dst, m.term, m.pre_vote), set())
            if seen and True not in seen:
                kind = "pre-vote" if m.pre_vote else "vote"
                raise Violation(
                    "vote-log-check",
                    f"node {m.src} granted its term-{m.term} {kind} to {m.dst}, whose log was "
                    "less up to date than its own",
                )
        elif isinstance(m, Heartbeat):
            self.checks += 1
            acked = self.acked.get((at, m.term), {}).get(m.dst, 0)
            if m.commit > acked:
                raise Violation(
                    "follower-commit",
                    f"leader {m.src} sent {m.dst} a heartbeat of commit {m.commit} in term "
                    f"{m.term}, but that follower acknowledged only up to {acked}",
                )

    # -- reports ------------------------------------------------------------------------------

    def on_leader(self, at: Incarnation, node: RaftNode, term: int, disk: MemoryStorage) -> None:
        """`node` (at) reports that it leads `term`."""
        self.checks += 1
        hs = disk.initial_state().hard_state
        if hs.term < term or (hs.term == term and hs.vote != node.id):
            raise Violation(
                "lead-before-durable",
                f"node {node.id} leads term {term}, but its disk holds term {hs.term} vote "
                f"{hs.vote}",
            )
        voters = node.conf.voters
        votes = ({node.id} | self.grants.get((at, term), set())) & voters
        if 2 * len(votes) <= len(voters):
            raise Violation(
                "election-quorum",
                f"node {node.id} leads term {term} with votes from {sorted(map(str, votes))} "
                f"of voters {sorted(map(str, voters))}",
            )

    def on_leader_commit(
        self, at: Incarnation, node: RaftNode, before: int, disk: MemoryStorage
    ) -> None:
        """`node` (at), leading, moved its commit index from `before` to its current one."""
        c = node.log.committed
        if c <= before:
            return
        self.checks += 1
        term = node.term
        t = node.log.term(c)
        if t != term:
            raise Violation(
                "commit-quorum",
                f"leader {node.id} of term {term} committed index {c} of term {t}: only an "
                "entry of its own term commits by counting",
            )
        acks = self.acked.get((at, term), {})
        holders = {v for v in node.conf.voters if acks.get(v, 0) >= c}
        if disk.last_index() >= c and node.id in node.conf.voters:
            holders.add(node.id)
        if 2 * len(holders) <= len(node.conf.voters):
            raise Violation(
                "commit-quorum",
                f"leader {node.id} of term {term} committed {before} -> {c}, but only "
                f"{sorted(map(str, holders))} of voters {sorted(map(str, node.conf.voters))} "
                "hold it",
            )

    def forget(self, at: Incarnation) -> None:
        """Node `at` crashed: what it took in dies with it."""
        for d in (self.grants, self.acked):
            for key in [k for k in d if k[0] == at]:
                del d[key]


class NoRuleAudit(RuleAudit):
    """The audits off: for tests that show a consequence checker catching a broken rule, which
    the audits would otherwise report first."""

    def before_step(self, at: Incarnation, node: RaftNode, m: Message) -> int:
        return 0

    def after_step(self, node: RaftNode, m: Message, before: int) -> None:
        pass

    def on_send(self, at: Incarnation, m: Message) -> None:
        pass

    def on_leader(self, at: Incarnation, node: RaftNode, term: int, disk: MemoryStorage) -> None:
        pass

    def on_leader_commit(
        self, at: Incarnation, node: RaftNode, before: int, disk: MemoryStorage
    ) -> None:
        pass
