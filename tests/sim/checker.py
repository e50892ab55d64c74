"""Safety checkers for the Raft simulator, fed by the world after every event.

They keep a canonical history that every replica must agree with:
- Election Safety: at most one leader per term.
- Log Matching: an (index, term) names one entry, and one predecessor term, in every log.
- Leader Completeness: a leader of term T holds every entry committed in a term < T, and
  every entry committed before its vote requests left (see `Checker.on_leader`).
- State Machine Safety: every replica applies the same entry at each index (checked through
  a hash chain, which also covers state restored from snapshots).
- Commit monotonicity: a node's commit index never goes back within an incarnation.
- No committed entry lost: a committed index never later holds another entry.
- Linearizable reads: a ReadIndex read is served at an index >= everything committed before
  the read began.
And the durability audit (`undurable_ack`, run by the worlds as each vote grant and append
acknowledgement leaves): it promises nothing its sender's disk does not hold.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Protocol

from broker.core.raft import Entry, EntryKind, LogStorage
from broker.core.raft.log import NO_TERM
from broker.core.raft.types import AppendResponse, VoteResponse


class Violation(Exception):
    """A safety or liveness property failed."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(kind, detail)
        self.kind = kind
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"


Ident = tuple[int, bytes, object]


class LogView(Protocol):
    """What the checker reads of a leader's log (`RaftLog` is one)."""

    def first_index(self) -> int: ...

    def last_index(self) -> int: ...

    def term(self, index: int) -> int:
        """The term at index, or NO_TERM when compacted or beyond the log."""
        ...

    def compacted(self, index: int) -> bool:
        """Is index below the snapshot (held by it, though term() answers NO_TERM)?"""
        ...


def ident(e: Entry) -> Ident:
    conf = None
    if e.conf is not None:
        # Plain tuples: a member decoded from the wire and a typed Member print differently.
        voters = sorted(tuple(m) if isinstance(m, tuple) else m for m in e.conf.voters)  # type: ignore[type-var]
        learners = sorted(tuple(m) if isinstance(m, tuple) else m for m in e.conf.learners)  # type: ignore[type-var]
        conf = (tuple(voters), tuple(learners))
    return (int(e.kind), e.data, conf)


def chain(prev: int, e: Entry) -> int:
    payload = e.data if e.kind == EntryKind.NORMAL else repr(ident(e)).encode()
    return zlib.crc32(payload, prev ^ (e.term * 2654435761 & 0xFFFFFFFF))


@dataclass
class Checker:
    leaders_by_term: dict[int, object] = field(default_factory=dict)
    entry_keys: dict[tuple[int, int], tuple[Ident, int]] = field(default_factory=dict)
    # Canonical committed history, index 0 is the empty log's sentinel.
    terms: list[int] = field(default_factory=lambda: [0])
    idents: list[Ident | None] = field(default_factory=lambda: [None])
    hashes: list[int] = field(default_factory=lambda: [0])
    commit_terms: list[int] = field(default_factory=lambda: [0])
    """Per committed index, the term it was committed in, as Leader Completeness means it:
    the term of the leader that decided the commit (counted a quorum). Not the entry's own
    term: that is only a lower bound, and a leader of a term between the two may rightly lack
    the entry (its votes were granted before the entry spread, and were delivered late; it
    can commit nothing, as the quorum holding the entry is already in a higher term). What is
    recorded is an upper bound, which is what keeps the check sound: every running node that
    knows of a commit is in a term >= the deciding leader's (it learned it from a leader of
    its own term, which decided it or learned it in turn), and a leader reporting its own
    commit is exact. So: the first reporter's term, lowered when a leader later reports the
    commit in a lower term. The world reports a leader's commit before anything else can
    happen (right after the step or the persisted() that made it), so the first reporter is
    the deciding leader whenever that leader reports at all."""
    campaigns: dict[tuple[object, int], tuple[int, int]] = field(default_factory=dict)
    """(node, incarnation) -> (term, commit index of the history) when it last campaigned."""
    reads_checked: int = 0

    @property
    def commit_index(self) -> int:
        return len(self.terms) - 1

    # -- elections ------------------------------------------------------------------------------

    def on_campaign(self, node_id: object, incarnation: int, term: int) -> None:
        """A node became a candidate of `term`, and its vote requests are about to leave."""
        self.campaigns[(node_id, incarnation)] = (term, self.commit_index)

    def on_leader(self, node_id: object, incarnation: int, term: int, log: LogView) -> None:
        """A node became leader. One leader per term: the same node restarted (with an
        amnesiac log) and elected again in the same term counts as a second leader.

        Leader Completeness: its log must hold the highest index j that is (a) committed in a
        term < `term` (`commit_terms`), or (b) committed before its vote requests of `term`
        left (`on_campaign`): every voter that stored such an entry was already in the
        committing term C when it got the request, so it refused a term below C, and a term
        above C must hold the entry anyway; equal to C is a second leader of C. Holding j with
        the committed term holds everything below it (Log Matching is checked on its own).
        j must be in the log: an index beyond the log's end is a missing entry (a violation),
        one compacted into the snapshot is held (the snapshot covers it; its contents are
        checked against the history when it is restored)."""
        prev = self.leaders_by_term.get(term)
        if prev is not None and prev != (node_id, incarnation):
            raise Violation(
                "election-safety", f"term {term} has leaders {prev} and {(node_id, incarnation)}"
            )
        self.leaders_by_term[term] = (node_id, incarnation)
        floor = 0
        campaign = self.campaigns.pop((node_id, incarnation), None)
        if campaign is not None and campaign[0] == term:
            floor = campaign[1]
        j = self.commit_index
        while j > floor and self.commit_terms[j] >= term:
            j -= 1
        if j == 0:
            return
        last = log.last_index()
        if j > last:
            raise Violation(
                "leader-completeness",
                f"leader {node_id} of term {term} lacks committed index {j} (term "
                f"{self.terms[j]}, committed in term {self.commit_terms[j]}): its log ends at "
                f"{last}",
            )
        if log.compacted(j):
            return
        t = log.term(j)
        if t != self.terms[j]:
            raise Violation(
                "leader-completeness",
                f"leader {node_id} of term {term} has term {t} at committed index {j} "
                f"(committed term {self.terms[j]})",
            )

    # -- logs -----------------------------------------------------------------------------------

    def on_entries(self, node_id: object, prev_term: int, entries: list[Entry]) -> None:
        keys = self.entry_keys
        for e in entries:
            key = (e.index, e.term)
            idt = ident(e)
            seen = keys.get(key)
            if seen is None:
                keys[key] = (idt, prev_term)
            elif seen[0] != idt or seen[1] != prev_term:
                raise Violation(
                    "log-matching",
                    f"node {node_id} holds at {key} {idt!r} after term {prev_term}; "
                    f"another log holds {seen[0]!r} after term {seen[1]}",
                )
            prev_term = e.term

    def on_commit(
        self,
        node_id: object,
        node_term: int,
        lo: int,
        hi: int,
        entry_at: object,
        *,
        leader: bool = False,
    ) -> None:
        """Node's commit index advanced from lo to hi; entry_at(i) gives its entry or None.
        `node_term` is the node's term now, `leader` whether it leads it (see commit_terms:
        only a leader's report lowers a recorded commit term; a node restarted with an
        unsynced term could report a term below the committing one)."""
        assert callable(entry_at)
        commit_terms = self.commit_terms
        for i in range(lo + 1, hi + 1):
            e = entry_at(i)
            if e is None:
                continue  # compacted into a snapshot: checked when the snapshot is restored
            if i < len(self.terms):
                if self.terms[i] != e.term or self.idents[i] != ident(e):
                    raise Violation(
                        "state-machine-safety",
                        f"node {node_id} committed {ident(e)!r} term {e.term} at {i}; "
                        f"canonical has {self.idents[i]!r} term {self.terms[i]}",
                    )
                if leader and node_term < commit_terms[i]:
                    commit_terms[i] = node_term
            elif i == len(self.terms):
                self.terms.append(e.term)
                self.idents.append(ident(e))
                self.hashes.append(chain(self.hashes[-1], e))
                commit_terms.append(node_term)
            else:
                raise Violation(
                    "commit-gap",
                    f"node {node_id} committed {i} but the history ends at {self.commit_index}",
                )

    def on_apply(self, node_id: object, prev_hash: int, e: Entry) -> int:
        h = chain(prev_hash, e)
        i = e.index
        if i >= len(self.hashes):
            raise Violation("apply-uncommitted", f"node {node_id} applied {i} before commit")
        if self.hashes[i] != h or self.terms[i] != e.term:
            raise Violation(
                "state-machine-safety",
                f"node {node_id} applied {ident(e)!r} term {e.term} at {i}; "
                f"canonical has {self.idents[i]!r} term {self.terms[i]}",
            )
        return h

    def on_restore(self, node_id: object, index: int, h: int) -> None:
        if index >= len(self.hashes) or self.hashes[index] != h:
            raise Violation(
                "state-machine-safety",
                f"node {node_id} restored a snapshot at {index} that disagrees with history",
            )

    def on_read(self, node_id: object, read_index: int, floor: int) -> None:
        self.reads_checked += 1
        if read_index < floor:
            raise Violation(
                "linearizable-read",
                f"node {node_id} served a read at index {read_index}, but {floor} was "
                f"committed before the read began",
            )


def undurable_ack(disk: LogStorage, m: object, acked_term: int | None = None) -> str | None:
    """The durability audit: a vote grant or an append acknowledgement may leave only once
    what it promises is on the sender's disk. A description of the breach, or None.

    A vote grant of term T for candidate c: the disk holds term T and vote c, or a later term.

    An append acknowledgement AppendResponse(term T, index i) (not a rejection; i > 0): the
    leader of T takes it as "my log matches yours up to i" (match = i, counted towards its
    commit), so the sender's disk must hold the entries the leader sent, up to i:
    - its hard state is in term T or later (else, back from a crash, it could accept a
      leader of an older term that truncates what it acknowledged);
    - it reaches i (`disk.last_index() >= i`);
    - at i it holds the acknowledged entry: the term there is `acked_term`, the term the
      sender's own log had at i when the Ready carrying the acknowledgement was handed out
      (the core builds the acknowledgement from its log, which then matched the leader's up
      to i). By Log Matching the same (index, term) means the same prefix. An entry
      overwritten on disk since (another leader's entry at i) breaks it, though the length
      still passes. An i below the disk's snapshot is held: a snapshot covers only
      committed entries.
    `acked_term` None checks the first two only. The check needs the disk as the Ready
    carrying the acknowledgement left it: the group simulator writes each Ready on its own and
    releases its acknowledgements right after; the cluster simulator, whose rounds are
    pipelined and whose syncs may land several rounds at once, judges it as its round's
    write lands (`ClusterChecker.on_round_landed`), before a later round may replace i (as
    if the network had delayed the acknowledgement past that write)."""
    if isinstance(m, VoteResponse):
        if m.reject or m.pre_vote:
            return None
        hs = disk.initial_state().hard_state
        # A disk already in a later term is fine too: the node can never vote in m.term again
        # (several Readies may share one write, as the broker's rounds do).
        if hs.term < m.term or (hs.term == m.term and hs.vote != m.dst):
            return (
                f"node {m.src} granted its term-{m.term} vote to {m.dst}, but its disk "
                f"holds term {hs.term} vote {hs.vote}"
            )
    elif isinstance(m, AppendResponse) and not m.reject and m.index > 0:
        i = m.index
        hs_term = disk.initial_state().hard_state.term
        if hs_term < m.term:
            return (
                f"node {m.src} acknowledged index {i} in term {m.term}, but its disk holds "
                f"term {hs_term}"
            )
        last = disk.last_index()
        if i > last:
            return f"node {m.src} acknowledged index {i}, but its disk ends at {last}"
        if acked_term is None or acked_term == NO_TERM or i < disk.first_index() - 1:
            return None
        t = disk.term(i)
        if t != acked_term:
            return (
                f"node {m.src} acknowledged index {i} of term {acked_term}, but its disk holds "
                f"term {t} there (the acknowledged entry was overwritten)"
            )
    return None
