"""A tiny deterministic harness for Raft unit tests: N RaftNodes over MemoryStorage.

Nothing happens unless a test asks for it: messages wait in one FIFO inbox until
`deliver_all()` (or `step()`), time advances only through `tick(node, n)`. Every Ready is
processed the documented way (`types.Ready`): send `messages`; write snapshot, entries and
hard state into the node's MemoryStorage; `persisted(number)`; send `persisted_messages`;
apply `committed_entries`, collect `read_states`; `advance(ready)`.

`hold(node)` keeps that node's Readies un-persisted (their messages still leave; their
committed entries, already durable from earlier Readies, are still applied) until
`release(node)` writes them in order. Drop rules and isolation are checked at delivery.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from broker.core.raft import (
    ConfState,
    Entry,
    EntryKind,
    HardState,
    MemoryStorage,
    RaftConfig,
    RaftNode,
    ReadState,
    Ready,
    Snapshot,
)
from broker.core.raft.types import Message
from tests.support.ready import write_ready

Pred = Callable[[Message], bool]
M = TypeVar("M")


def make_storage(
    conf: ConfState,
    terms: Iterable[int] = (),
    *,
    hard_state: HardState | None = None,
    data: bytes = b"",
) -> MemoryStorage:
    """A durable log holding one NORMAL entry per term in `terms`, from index 1."""
    st = MemoryStorage(conf)
    st.append([Entry(i, t, EntryKind.NORMAL, data) for i, t in enumerate(terms, 1)])
    if hard_state is not None:
        st.set_hard_state(hard_state)
    return st


class Net:
    def __init__(
        self,
        voters: Iterable[int],
        *,
        learners: Iterable[int] = (),
        spares: Iterable[int] = (),
        storages: Mapping[int, MemoryStorage] | None = None,
        seed: int = 1,
        **options: Any,
    ) -> None:
        voters, learners, spares = list(voters), list(learners), list(spares)
        self.conf = ConfState(frozenset(voters), frozenset(learners))
        self.rng = random.Random(seed)
        self.storage: dict[int, MemoryStorage] = {}
        self.nodes: dict[int, RaftNode] = {}
        for nid in [*voters, *learners, *spares]:
            if storages is not None and nid in storages:
                st = storages[nid]
            else:
                st = MemoryStorage(self.conf if nid not in spares else ConfState(frozenset()))
            self.storage[nid] = st
            cfg = RaftConfig(nid, applied=st.snapshot().meta.index, **options)
            self.nodes[nid] = RaftNode(cfg, st, self.rng)
        self.inbox: deque[Message] = deque()
        self.sent: list[Message] = []
        """Every message that left a node, in order (dropped ones included)."""
        self.dropped: list[Message] = []
        self.drop_rules: list[Pred] = []
        self.isolated: set[int] = set()
        self.held: set[int] = set()
        self.unpersisted: dict[int, list[Ready]] = {n: [] for n in self.nodes}
        self.readies: dict[int, list[Ready]] = {n: [] for n in self.nodes}
        self.applied: dict[int, list[Entry]] = {n: [] for n in self.nodes}
        self.restored: dict[int, list[Snapshot]] = {n: [] for n in self.nodes}
        self.read_states: dict[int, list[ReadState]] = {n: [] for n in self.nodes}

    def __getitem__(self, nid: int) -> RaftNode:
        return self.nodes[nid]

    # -- the Ready procedure ------------------------------------------------------------------

    def process(self, nid: int) -> None:
        node = self.nodes[nid]
        while node.has_ready():
            self.handle_ready(nid, node.ready())

    def handle_ready(self, nid: int, rd: Ready) -> None:
        """What the runtime does with one Ready: send, persist (or hold), apply, advance."""
        self.readies[nid].append(rd)
        for m in rd.messages:
            self._send(m)
        if nid in self.held or self.unpersisted[nid]:
            self.unpersisted[nid].append(rd)
        else:
            self._persist(nid, [rd])
        self.applied[nid].extend(rd.committed_entries)
        self.read_states[nid].extend(rd.read_states)
        self.nodes[nid].advance(rd)

    def _persist(self, nid: int, readies: list[Ready]) -> None:
        st = self.storage[nid]
        for rd in readies:
            write_ready(st, rd)
        self.nodes[nid].persisted(readies[-1].number)
        for rd in readies:
            for m in rd.persisted_messages:
                self._send(m)
            if rd.snapshot is not None:
                self.restored[nid].append(rd.snapshot)

    def hold(self, nid: int) -> None:
        """From now on, `nid`'s Readies are handed out but not persisted."""
        self.held.add(nid)

    def release(self, nid: int, upto: int | None = None) -> None:
        """Persist `nid`'s held Readies numbered <= upto (all if None) in one synced write,
        then stop holding (if all were released) and process what follows."""
        queue = self.unpersisted[nid]
        batch = [rd for rd in queue if upto is None or rd.number <= upto]
        self.unpersisted[nid] = queue[len(batch) :]
        if upto is None:
            self.held.discard(nid)
        if batch:
            self._persist(nid, batch)
        self.process(nid)

    # -- the network --------------------------------------------------------------------------

    def _send(self, m: Message) -> None:
        self.sent.append(m)
        self.inbox.append(m)

    def _blocked(self, m: Message) -> bool:
        return (
            m.src in self.isolated
            or m.dst in self.isolated
            or any(rule(m) for rule in self.drop_rules)
        )

    def step(self, m: Message) -> None:
        """Hand `m` to its destination now (no drop rules) and process the node."""
        self.nodes[m.dst].step(m)  # type: ignore[index]
        self.process(m.dst)  # type: ignore[arg-type]

    def deliver_all(self, max_steps: int = 10_000) -> int:
        """Deliver until the inbox is empty (FIFO); returns how many were delivered."""
        delivered = 0
        while self.inbox:
            assert delivered < max_steps, "message storm: the inbox never drains"
            m = self.inbox.popleft()
            if self._blocked(m) or m.dst not in self.nodes:
                self.dropped.append(m)
                continue
            delivered += 1
            self.step(m)
        return delivered

    def take(self, kind: type[M]) -> list[M]:
        """Remove and return the messages of type `kind` waiting in the inbox."""
        taken = [m for m in self.inbox if isinstance(m, kind)]
        self.inbox = deque(m for m in self.inbox if not isinstance(m, kind))
        return taken

    def drop(self, rule: Pred) -> Pred:
        self.drop_rules.append(rule)
        return rule

    def isolate(self, nid: int) -> None:
        self.isolated.add(nid)

    def heal(self) -> None:
        self.isolated.clear()
        self.drop_rules.clear()

    # -- time and clients ---------------------------------------------------------------------

    def tick(self, nid: int, n: int = 1) -> None:
        for _ in range(n):
            self.nodes[nid].tick()
            self.process(nid)

    def propose(self, nid: int, data: bytes) -> int:
        index = self.nodes[nid].propose(data)
        self.process(nid)
        return index

    def elect(self, nid: int) -> RaftNode:
        """Campaign at `nid` and deliver until it leads and its no-op is committed."""
        node = self.nodes[nid]
        node.campaign()
        self.process(nid)
        self.deliver_all()
        assert node.is_leader, f"node {nid} did not win"
        assert node.commit_index >= node.term_start_index, "no-op not committed"
        return node

    def sent_of(self, kind: type[M], **fields: Any) -> list[M]:
        """Sent messages of type `kind` whose attributes equal `fields`."""
        return [
            m
            for m in self.sent
            if isinstance(m, kind) and all(getattr(m, k) == v for k, v in fields.items())
        ]
