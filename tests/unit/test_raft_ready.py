"""has_ready() and ready() agree: has_ready() is True exactly when ready() would hand out
something, the one exception being broadcasts ready() flushes first that turn out to have
nothing to send (every follower paused). Checked on every Ready of randomly driven groups:
ticks, proposals, reads, lost and reordered messages, held disks, snapshots and compaction,
leadership transfers."""

from __future__ import annotations

import random

import pytest

from broker.core.raft import ProposalDropped, Ready
from tests.unit.raft_harness import Net


def _empty(rd: Ready) -> bool:
    return not (
        rd.soft_state
        or rd.hard_state
        or rd.snapshot
        or rd.entries
        or rd.messages
        or rd.persisted_messages
        or rd.committed_entries
        or rd.read_states
    )


class CheckedNet(Net):
    """Net whose Ready loop checks has_ready() against the Ready it then takes (also one
    more Ready after has_ready() turned False, which must be empty)."""

    readies_checked = 0

    def process(self, nid: int) -> None:
        node = self.nodes[nid]
        while True:
            flush = node._bcast_pending or node._read_hb_pending
            has = node.has_ready()
            rd = node.ready()
            self.readies_checked += 1
            if has:
                assert flush or not _empty(rd), f"node {nid}: has_ready() but {rd}"
            else:
                assert _empty(rd), f"node {nid}: not has_ready() but {rd}"
            self.handle_ready(nid, rd)
            if not has:
                return


@pytest.mark.parametrize("seed", range(6))
def test_has_ready_is_true_exactly_when_ready_has_something(seed: int) -> None:
    rng = random.Random(seed)
    net = CheckedNet([1, 2, 3], learners=[4], seed=seed, max_snapshot_chunk_bytes=8)
    ids = list(net.nodes)
    reads = 0
    for _ in range(3000):
        nid = rng.choice(ids)
        node = net[nid]
        action = rng.random()
        if action < 0.3:
            net.tick(nid)
        elif action < 0.65 and net.inbox:
            m = net.inbox.popleft()
            if rng.random() < 0.1:
                continue  # lost
            if rng.random() < 0.1:
                net.inbox.append(m)  # overtaken by everything queued behind it
                continue
            if m.dst not in net.held or rng.random() < 0.9:
                net.step(m)
        elif action < 0.8:
            try:
                node.propose_many([b"x" * rng.randint(0, 20)] * rng.randint(1, 3))
            except ProposalDropped:
                continue
            net.process(nid)
        elif action < 0.85:
            reads += 1
            try:
                node.read_index(b"r%d" % reads)
            except ProposalDropped:
                continue
            net.process(nid)
        elif action < 0.9:
            if nid in net.held:
                net.release(nid)
            elif rng.random() < 0.3:
                net.hold(nid)
        elif action < 0.95:
            st = net.storage[nid]
            applied = net.applied[nid][-1].index if net.applied[nid] else 0
            if st.snapshot().meta.index < applied <= st.last_index():
                st.create_snapshot(applied, net.conf, b"s" * rng.randint(0, 40))
                st.compact(applied - rng.randint(0, min(2, applied)))
        elif node.is_leader:
            node.transfer_leadership(rng.choice([1, 2, 3]))
            net.process(nid)
    for nid in ids:
        net.release(nid)
    net.deliver_all()
    assert net.readies_checked > 2000 and len(net.applied[1]) > 20
    assert any(net.restored.values()), "no snapshot was installed: the drive is too gentle"
