"""GroupHost with quiescence: ticks visit only awake groups, the feature gate, the liveness
signal (peer_lost / peer_back) and machines with pending timers."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable

from broker.core.host import GroupHost, RaftSettings
from broker.core.ids import Member
from broker.core.machine import NOTHING_APPLIED, Applied, MachineKind
from broker.core.raft import ConfState, Entry, MemoryStorage, Role
from broker.core.rounds import Envelope
from broker.core.snapshot_policies import NoSnapshots
from broker.wire.errors import ErrorCode
from tests.support.ready import write_ready

NODES = (1, 2, 3)
MEMBERS = {n: Member(n, 1) for n in NODES}


class Machine:
    """Applies nothing but its index; `pending`: its timers_pending() answer."""

    def __init__(self, pending: bool = False) -> None:
        self.applied_index = 0
        self.pending = pending
        self.leader_ticks = 0

    def apply_entry(self, entry: Entry) -> Applied:
        self.applied_index = entry.index
        return NOTHING_APPLIED

    def take_writes(self) -> None:
        return None

    def snapshot(self) -> bytes:
        return b""

    def restore_snapshot(self, data: bytes) -> None:
        return None

    def load(self, state: bytes | None, records: Iterable[tuple[int, bytes]]) -> None:
        return None

    def leader_tick(self) -> list[bytes]:
        self.leader_ticks += 1
        return []

    def timers_pending(self) -> bool:
        return self.pending


class SilentMachine(Machine):
    """A machine that does not say whether a timer is pending (no `timers_pending`)."""

    timers_pending = None  # type: ignore[assignment]


def _kind(has_timers: bool = False) -> MachineKind:
    return MachineKind("test", lambda _gc: Machine(), has_timers=has_timers)


class Cluster:
    """Three brokers' GroupHosts over memory disks; messages go at once, in order."""

    def __init__(self, groups: int, *, features: dict[int, set[int]] | None = None) -> None:
        self.hosts: dict[int, GroupHost] = {}
        self.disks: dict[tuple[int, int], MemoryStorage] = {}
        self.cut: set[int] = set()
        rng = random.Random(7)
        conf = ConfState(frozenset(MEMBERS.values()))
        for n in NODES:
            settings = RaftSettings(MEMBERS[n], 6, 2, 1 << 20, 256, 64 << 20, 1 << 20, True)
            host = self.hosts[n] = GroupHost(settings, rng, None)
            peers = (features or {}).get(n, set(NODES) - {n})
            for p in NODES:
                if p != n:
                    host.peer_features(p, p in peers)
            for gid in range(1, groups + 1):
                disk = self.disks[(n, gid)] = MemoryStorage(conf)
                host.open(gid, disk, _kind(), Machine(), NoSnapshots())

    def send(self, src: int, envelopes: list[Envelope]) -> None:
        for env in envelopes:
            if src in self.cut or env.dst in self.cut:
                continue
            self.hosts[env.dst].step(env.group_id, env.message)

    def pump(self, rounds: int = 50) -> None:
        for _ in range(rounds):
            busy = False
            for n, host in self.hosts.items():
                if n in self.cut or not host.has_work():
                    continue
                busy = True
                rnd = host.start_round([])
                self.send(n, rnd.messages)
                for gid, rd in rnd.readies:
                    write_ready(self.disks[(n, gid)], rd)
                self.send(n, host.finish_round(rnd))
                host.take_completions()
            if not busy:
                return

    def tick(self, n: int = 1) -> None:
        for _ in range(n):
            for b, host in self.hosts.items():
                if b not in self.cut:
                    host.tick()
            self.pump()

    def lead_all(self, leader: int = 1) -> None:
        for g in self.hosts[leader].groups.values():
            g.raft.campaign()
        self.pump()
        assert all(g.raft.is_leader for g in self.hosts[leader].groups.values())

    def quiesced(self, n: int) -> int:
        return self.hosts[n].quiesced_count


def count_ticks(host: GroupHost) -> list[int]:
    """Count RaftNode.tick calls on every group of `host` (one list, appended gids)."""
    calls: list[int] = []
    for gid, g in host.groups.items():
        real: Callable[..., None] = g.raft.tick

        def counted(*args: object, _gid: int = gid, _real: Callable[..., None] = real) -> None:
            calls.append(_gid)
            _real(*args)

        g.raft.tick = counted  # type: ignore[method-assign]
    return calls


def test_idle_groups_quiesce_and_ticks_cost_only_the_awake_ones() -> None:
    c = Cluster(20)
    c.lead_all()
    c.tick(6)
    assert [c.quiesced(n) for n in NODES] == [20, 20, 20]
    calls = {n: count_ticks(h) for n, h in c.hosts.items()}
    c.tick(10)
    assert calls == {1: [], 2: [], 3: []}
    # One proposal wakes its group on every replica; only it is ticked until it quiesces.
    g = c.hosts[1].groups[7]
    c.hosts[1].propose(g, b"x")
    c.pump()
    assert [c.quiesced(n) for n in NODES] == [19, 19, 19]
    c.tick(1)
    assert calls == {1: [7], 2: [7], 3: [7]}
    c.tick(6)
    assert [c.quiesced(n) for n in NODES] == [20, 20, 20]
    assert {len(set(calls[n])) for n in NODES} == {1}
    assert all(c.disks[(n, 7)].last_index() == g.raft.log.last_index() for n in NODES)


def test_a_peer_without_the_feature_keeps_its_groups_awake() -> None:
    # Broker 1 (the leaders' broker) heard no `quiesce` in broker 3's hello.
    c = Cluster(4, features={1: {2}, 2: {1, 3}, 3: {1, 2}})
    c.lead_all()
    c.tick(20)
    assert [c.quiesced(n) for n in NODES] == [0, 0, 0]
    # Its next hello lists it (the broker was upgraded): the groups quiesce.
    c.hosts[1].peer_features(3, True)
    c.tick(6)
    assert [c.quiesced(n) for n in NODES] == [4, 4, 4]


def test_no_quiescence_when_the_host_is_not_configured_for_it() -> None:
    c = Cluster(3)
    for host in c.hosts.values():
        host.quiesce = False  # as built with RaftSettings.quiesce False: the old tick
    c.lead_all()
    calls = count_ticks(c.hosts[2])
    c.tick(20)
    assert [c.quiesced(n) for n in NODES] == [0, 0, 0]
    assert len(calls) == 3 * 20


def test_peer_lost_wakes_the_groups_with_a_member_there() -> None:
    c = Cluster(5)
    c.lead_all()
    c.tick(6)
    assert [c.quiesced(n) for n in NODES] == [5, 5, 5]
    # Broker 2 loses broker 1, the leaders' broker: every group it led wakes and times out.
    c.cut.add(1)
    c.hosts[2].peer_lost(1)
    c.hosts[3].peer_lost(1)
    assert c.quiesced(2) == 0 and c.quiesced(3) == 0
    c.tick(30)
    assert all(
        g.raft.is_leader
        for n in (2, 3)
        for g in c.hosts[n].groups.values()
        if g.raft.leader == MEMBERS[n]
    )
    new_leaders = {g.raft.leader for n in (2, 3) for g in c.hosts[n].groups.values()}
    assert MEMBERS[1] not in new_leaders
    # The new leaders quiesce again with broker 1's members excused.
    assert c.quiesced(2) == c.quiesced(3) == 5
    # Broker 1 is back: the leaders of its groups wake (to catch it up); their followers on
    # the other broker stay quiesced (woken, they would time out, and broker 1, without a
    # leader yet, would grant their votes); broker 1 follows the new terms.
    c.cut.clear()
    for n in (2, 3):
        c.hosts[n].peer_back(1)
    c.hosts[1].peer_back(2)
    others = [g.raft for n in (2, 3) for g in c.hosts[n].groups.values()]
    assert all(not r.quiesced for r in others if r.is_leader)
    assert all(r.quiesced for r in others if not r.is_leader)
    c.tick(10)
    assert all(
        g.raft.role == Role.FOLLOWER and g.raft.term == 2 for g in c.hosts[1].groups.values()
    )
    assert [c.quiesced(n) for n in NODES] == [5, 5, 5]


def test_a_follower_broker_lost_wakes_the_leaders_which_quiesce_without_it() -> None:
    c = Cluster(3)
    c.lead_all()
    c.tick(6)
    c.cut.add(3)
    c.hosts[1].peer_lost(3)
    assert c.quiesced(1) == 0 and c.hosts[1].is_lost(3)
    c.tick(6)
    assert c.quiesced(1) == 3 and all(g.raft.is_leader for g in c.hosts[1].groups.values())
    c.hosts[1].peer_back(3)
    assert c.quiesced(1) == 0 and not c.hosts[1].is_lost(3)


def test_a_machine_with_a_timer_pending_keeps_its_group_awake() -> None:
    c = Cluster(2)
    for n in NODES:
        for g in c.hosts[n].groups.values():
            g.kind = _kind(has_timers=True)
            c.hosts[n]._timed.add(g.id)
    m1 = c.hosts[1].groups[1].machine
    m2 = c.hosts[1].groups[2].machine
    assert isinstance(m1, Machine) and isinstance(m2, Machine)
    m1.pending = True
    c.lead_all()
    c.tick(10)
    assert not c.hosts[1].groups[1].raft.quiesced
    assert c.hosts[1].groups[2].raft.quiesced
    # Leader timers run only in awake groups.
    before = (m1.leader_ticks, m2.leader_ticks)
    c.tick(5)
    assert (m1.leader_ticks - before[0], m2.leader_ticks - before[1]) == (5, 0)
    m1.pending = False
    c.tick(4)
    assert c.hosts[1].groups[1].raft.quiesced


def test_a_timed_kind_whose_machine_does_not_say_never_quiesces() -> None:
    c = Cluster(1)
    for n in NODES:
        g = c.hosts[n].groups[1]
        g.kind = _kind(has_timers=True)
        g.machine = SilentMachine()
    c.lead_all()
    c.tick(20)
    assert not c.hosts[1].groups[1].raft.quiesced
    # A kind without timers and the same machine: nothing to wait for.
    for n in NODES:
        c.hosts[n].groups[1].kind = _kind()
    c.tick(4)
    assert c.hosts[1].groups[1].raft.quiesced


def test_a_dropped_group_leaves_the_active_set() -> None:
    c = Cluster(3)
    c.lead_all()
    c.hosts[1].drop(2, ErrorCode.NONE, "dropped")
    assert {g.id for g in c.hosts[1].active_groups()} == {1, 3}
    c.tick(6)
    assert c.quiesced(1) == 2 and c.hosts[1].take_flipped() >= {1, 3}
