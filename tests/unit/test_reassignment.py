"""The partition leader's membership steps (broker/core/reassignment.py), on four brokers'
GroupHosts over memory disks: a replica moves one single-member change at a time, the
group never has more voters than the target + 1, a leaving leader hands over first, a new
leader resumes a move its crashed predecessor began, and committed entries survive on the
new replica."""

from __future__ import annotations

import random

from broker.core.host import GroupHost, RaftSettings
from broker.core.ids import Member
from broker.core.metadata import TopicInfo
from broker.core.metadata_moves import PartitionInfo, Reassigned, reassign
from broker.core.raft import ConfState, EntryKind, MemoryStorage
from broker.core.reassignment import step_membership
from broker.core.rounds import Envelope
from broker.core.snapshot_policies import NoSnapshots
from broker.wire.errors import ErrorCode
from tests.support.ready import write_ready
from tests.unit.test_host_quiesce import Machine, _kind

M = {n: Member(n, 1) for n in (1, 2, 3, 4)}
GID = 1


class Brokers:
    """Four GroupHosts; group 1 starts on brokers 1-3 (broker 4 hosts it with no
    configuration, as a target replica does until the leader adds it)."""

    def __init__(self) -> None:
        self.hosts: dict[int, GroupHost] = {}
        self.disks: dict[int, MemoryStorage] = {}
        self.down: set[int] = set()
        self.max_voters = 0
        rng = random.Random(3)
        for n in M:
            settings = RaftSettings(M[n], 6, 2, 1 << 20, 256, 64 << 20, 1 << 20, False)
            host = self.hosts[n] = GroupHost(settings, rng, None)
            conf = ConfState(frozenset(M[b] for b in (1, 2, 3)) if n != 4 else frozenset())
            self.disks[n] = MemoryStorage(conf)
            host.open(GID, self.disks[n], _kind(), Machine(), NoSnapshots())

    def send(self, envelopes: list[Envelope]) -> None:
        for env in envelopes:
            if env.dst not in self.down:
                self.hosts[env.dst].step(env.group_id, env.message)

    def pump(self) -> None:
        for _ in range(100):
            busy = False
            for n, host in self.hosts.items():
                if n in self.down or not host.has_work():
                    continue
                busy = True
                rnd = host.start_round([])
                self.send(rnd.messages)
                for _, rd in rnd.readies:
                    write_ready(self.disks[n], rd)
                self.send(host.finish_round(rnd))
                host.take_completions()
            if not busy:
                return

    def leader(self) -> int | None:
        for n, host in self.hosts.items():
            if n not in self.down and host.groups[GID].raft.is_leader:
                return n
        return None

    def tick(self) -> None:
        for n, host in self.hosts.items():
            if n not in self.down:
                host.tick()
        self.pump()
        ld = self.leader()
        if ld is not None:
            self.max_voters = max(self.max_voters, len(self.hosts[ld].groups[GID].raft.conf.voters))

    def step(self, desired: list[Member]) -> bool:
        """One leader step (if there is a leader), then a tick; True once reached."""
        ld = self.leader()
        reached = False
        if ld is not None:
            host = self.hosts[ld]
            reached = step_membership(host, host.groups[GID], desired, 6)
        self.tick()
        return reached

    def propose(self, data: bytes) -> int:
        ld = self.leader()
        assert ld is not None
        host = self.hosts[ld]
        index = host.propose(host.groups[GID], data)
        assert index is not None
        self.pump()
        return index

    def data(self, n: int) -> list[bytes]:
        disk = self.disks[n]
        entries = disk.entries(disk.first_index(), disk.last_index() + 1)
        return [e.data for e in entries if e.kind == EntryKind.NORMAL and e.data]


def _start(leader: int = 1) -> Brokers:
    b = Brokers()
    b.hosts[leader].groups[GID].raft.campaign()
    b.pump()
    assert b.leader() == leader
    for i in range(20):
        b.propose(b"before-%d" % i)
    return b


def _run(b: Brokers, desired: list[Member], steps: int = 300) -> int:
    for i in range(steps):
        if b.step(desired):
            return i
    raise AssertionError(f"not reached in {steps} steps: {b.hosts[1].groups[GID].raft.conf}")


def test_a_replica_moves_to_a_new_broker_one_change_at_a_time() -> None:
    b = _start()
    desired = [M[4], M[2], M[3]]
    _run(b, desired)
    ld = b.leader()
    assert ld is not None
    conf = b.hosts[ld].groups[GID].raft.conf
    assert conf.voters == frozenset(desired) and not conf.learners
    assert b.max_voters <= len(desired) + 1
    committed = b.hosts[ld].groups[GID].raft.commit_index
    assert b.disks[4].last_index() >= committed
    assert b.data(4)[:20] == [b"before-%d" % i for i in range(20)]


def test_a_leaving_leader_hands_over_before_it_is_removed() -> None:
    b = _start(leader=1)
    desired = [M[2], M[3], M[4]]
    _run(b, desired)
    ld = b.leader()
    assert ld in (2, 3, 4)
    assert M[1] not in b.hosts[ld].groups[GID].raft.conf.members()
    assert b.max_voters <= 4
    b.propose(b"after")
    assert b.data(4)[-1] == b"after"


def test_a_new_leader_finishes_a_move_its_crashed_predecessor_began() -> None:
    b = _start(leader=1)
    desired = [M[4], M[2], M[3]]
    # Until broker 4 is a member (a learner), then the leader crashes.
    for _ in range(50):
        b.step(desired)
        if M[4] in b.hosts[1].groups[GID].raft.conf.members():
            break
    assert M[4] in b.hosts[1].groups[GID].raft.conf.members()
    b.down.add(1)
    for _ in range(100):
        b.tick()
        if b.leader() is not None:
            break
    assert b.leader() in (2, 3)
    _run(b, desired)
    ld = b.leader()
    assert ld is not None
    conf = b.hosts[ld].groups[GID].raft.conf
    assert conf.voters == frozenset(desired)
    assert b.data(4)[:20] == [b"before-%d" % i for i in range(20)]


def test_moving_back_undoes_the_move() -> None:
    b = _start()
    _run(b, [M[4], M[2], M[3]])
    _run(b, [M[1], M[2], M[3]])
    ld = b.leader()
    assert ld is not None
    assert b.hosts[ld].groups[GID].raft.conf.voters == frozenset({M[1], M[2], M[3]})
    assert b.max_voters <= 4


def test_a_move_back_to_the_replicas_while_moving_keeps_a_target() -> None:
    """A partition not moving is only reordered by a move to the same brokers; one moving
    keeps a target (the replicas, reordered) until its leader steps the configuration back
    and reports it: ending the move at once would have the target's brokers drop replicas
    that may be voters (seen in the cluster simulator's `reassign` profile, seed 27)."""
    still = PartitionInfo(0, 5, (1, 2, 3))
    moving = PartitionInfo(1, 6, (1, 2, 3), target=(1, 2, 4))
    topics = {"t": TopicInfo("t", (still, moving), 3, {})}
    cmd = {"moves": [["t", 0, [2, 3, 1]], ["t", 1, [3, 1, 2]]], "drain": [], "undrain": []}
    assert isinstance(reassign(topics, {1, 2, 3, 4}, cmd), Reassigned)
    after = topics["t"].partitions
    assert after[0] == PartitionInfo(0, 5, (2, 3, 1))
    assert after[1] == PartitionInfo(1, 6, (1, 2, 3), target=(3, 1, 2))
    assert after[1].hosts == frozenset({1, 2, 3})


def test_a_replica_dropped_with_keep_ticks_keeps_its_storage_until_they_pass() -> None:
    """A moved-off replica's storage is deleted only after its keep time, and not at all if
    the group is opened again first (its member id never comes back empty)."""
    b = _start()
    host = b.hosts[3]
    host.drop(GID, ErrorCode.NOT_LEADER_OR_FOLLOWER, "moved", keep_ticks=3)
    host.tick()
    host.tick()
    assert host.start_round([]).dropped_groups == []
    host.open(GID, b.disks[3], _kind(), Machine(), NoSnapshots())
    for _ in range(5):
        host.tick()
    assert host.start_round([]).dropped_groups == []
    host.drop(GID, ErrorCode.NOT_LEADER_OR_FOLLOWER, "moved", keep_ticks=2)
    host.tick()
    host.tick()
    assert host.start_round([]).dropped_groups == [GID]
