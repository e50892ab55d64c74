"""Safety checkers for the Raft simulator, fed by the world after every event.

They keep a canonical history that every replica must agree with:
- Election Safety: at most one leader per term.
- Log Matching: an (index, term) names one entry, and one predecessor term, in every log.
- Leader Completeness: a leader of term T holds every entry committed in a term < T.
- State Machine Safety: every replica applies the same entry at each index (checked through
  a hash chain, which also covers state restored from snapshots).
- Commit monotonicity: a node's commit index never goes back within an incarnation.
- No committed entry lost: a committed index never later holds another entry.
- Linearizable reads: a ReadIndex read is served at an index >= everything committed before
  the read began.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

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


def ident(e: Entry) -> Ident:
    conf = None
    if e.conf is not None:
        conf = (tuple(sorted(e.conf.voters)), tuple(sorted(e.conf.learners)))  # type: ignore[type-var]
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
    reads_checked: int = 0

    @property
    def commit_index(self) -> int:
        return len(self.terms) - 1

    # -- elections ------------------------------------------------------------------------------

    def on_leader(self, node_id: object, incarnation: int, term: int, log_term_at: object) -> None:
        """A node became leader. One leader per term: the same node restarted (with an
        amnesiac log) and elected again in the same term counts as a second leader."""
        prev = self.leaders_by_term.get(term)
        if prev is not None and prev != (node_id, incarnation):
            raise Violation(
                "election-safety", f"term {term} has leaders {prev} and {(node_id, incarnation)}"
            )
        self.leaders_by_term[term] = (node_id, incarnation)
        # Leader Completeness: the highest index committed in a term < `term` must be in its log.
        j = self.commit_index
        while j > 0 and self.commit_terms[j] >= term:
            j -= 1
        if j == 0:
            return
        assert callable(log_term_at)
        t = log_term_at(j)
        if t != NO_TERM and t != self.terms[j]:
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
        self, node_id: object, node_term: int, lo: int, hi: int, entry_at: object
    ) -> None:
        """Node's commit index advanced from lo to hi; entry_at(i) gives its entry or None."""
        assert callable(entry_at)
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
            elif i == len(self.terms):
                self.terms.append(e.term)
                self.idents.append(ident(e))
                self.hashes.append(chain(self.hashes[-1], e))
                # The committing leader's term; a follower's term bounds it from above.
                self.commit_terms.append(node_term)
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


def undurable_ack(disk: LogStorage, m: object) -> str | None:
    """The durability audit: a vote grant or an append acknowledgement may leave only once
    what it promises is on the sender's disk (the vote, or a later term; the acknowledged
    entries). A description of the breach, or None."""
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
    elif isinstance(m, AppendResponse) and not m.reject and m.index > disk.last_index():
        return (
            f"node {m.src} acknowledged index {m.index}, but its disk ends at {disk.last_index()}"
        )
    return None
