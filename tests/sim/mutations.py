"""Deliberately broken Raft rules, to prove the simulator's checkers catch them.

Each is a RaftNode subclass that overrides one rule hook of the real node.
"""

from __future__ import annotations

from broker.core.raft import RaftNode
from broker.core.raft.types import RequestVote, VoteResponse


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


MUTATIONS: dict[str, type[RaftNode]] = {
    "commit-previous-term": CommitPreviousTermByCounting,
    "two-votes-per-term": GrantTwoVotesPerTerm,
    "vote-before-persist": VoteBeforePersist,
    "read-without-quorum": ReadWithoutQuorum,
    "conf-change-before-own-term-commit": ConfChangeBeforeOwnTermCommit,
    "lead-before-term-durable": LeadBeforeTermDurable,
}
