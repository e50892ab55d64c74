"""GroupMembership: the at-most-one-owner rule from the members' own views, fencing, epochs.

A randomized model drives the coordinator's membership with joins, heartbeats whose answers
may be lost, leaves, expiries (the member stops first, as its client must), subscription
changes and new partitions, and checks after every step that no two members believe they own
the same partition; once the churn stops and every answer arrives, every subscribed partition
has exactly one owner.
"""

from __future__ import annotations

import random
from collections.abc import Mapping

import pytest

from broker.core.groups.membership import (
    GroupMembership,
    HeartbeatAnswer,
    MemberState,
    Outcome,
    TopicPartition,
)


def round_robin(
    members: Mapping[str, frozenset[str]],
    partitions: Mapping[str, int],
    current: Mapping[str, frozenset[TopicPartition]],
) -> dict[str, frozenset[TopicPartition]]:
    """Each topic's partitions dealt to its subscribers in member-id order (not sticky: the
    rule must hold whatever the assignor moves)."""
    out: dict[str, set[TopicPartition]] = {m: set() for m in members}
    for topic, count in sorted(partitions.items()):
        subs = sorted(m for m, ts in members.items() if topic in ts)
        for p in range(count):
            if subs:
                out[subs[p % len(subs)]].add((topic, p))
    return {m: frozenset(tps) for m, tps in out.items()}


class Model:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.group = GroupMembership(round_robin)
        self.counts = {"a": 3, "b": 5}
        self.belief: dict[str, frozenset[TopicPartition]] = {}
        """What each live member believes it owns (its own view)."""
        self.epoch: dict[str, int] = {}
        self.topics: dict[str, frozenset[str]] = {}

    def heartbeat(self, mid: str, *, lose: bool = False) -> None:
        topics = self.topics[mid]
        ans = self.group.heartbeat(
            mid,
            self.epoch[mid],
            topics,
            self.belief[mid],
            {t: self.counts[t] for t in topics},
        )
        if lose:
            return
        if ans.outcome is Outcome.FENCED:
            self.stop(mid)  # a fenced member stops processing and rejoins with epoch 0
            self.join(mid)
            return
        self.epoch[mid] = ans.member_epoch
        self.belief[mid] = ans.assigned

    def join(self, mid: str) -> None:
        self.topics[mid] = frozenset(self.rng.sample(["a", "b"], self.rng.randint(1, 2)))
        self.epoch[mid] = 0
        self.belief[mid] = frozenset()
        self.heartbeat(mid)

    def stop(self, mid: str) -> None:
        self.belief.pop(mid, None)
        self.epoch.pop(mid, None)
        self.topics.pop(mid, None)

    def step(self) -> None:
        rng = self.rng
        live = sorted(self.belief)
        r = rng.random()
        if r < 0.15 or not live:
            mid = f"m{rng.randint(0, 7)}"
            if mid not in self.belief:
                self.join(mid)
        elif r < 0.7:
            self.heartbeat(rng.choice(live), lose=rng.random() < 0.2)
        elif r < 0.78:
            mid = rng.choice(live)
            left = self.group.leave(mid, self.epoch[mid])
            self.stop(mid)
            if left is Outcome.FENCED:
                self.group.expire(mid)  # the coordinator forgets it after the session timeout
        elif r < 0.84:
            mid = rng.choice(live)
            self.stop(mid)  # its client gave up after the session timeout...
            self.group.expire(mid)  # ...and then the coordinator's leader expired it
        elif r < 0.92:
            mid = rng.choice(live)
            self.topics[mid] = frozenset(rng.sample(["a", "b"], rng.randint(1, 2)))
            self.heartbeat(mid)
        else:
            topic = rng.choice(["a", "b"])
            self.counts[topic] = min(self.counts[topic] + 1, 12)

    def check_one_owner(self) -> None:
        seen: dict[TopicPartition, str] = {}
        for mid, owned in sorted(self.belief.items()):
            for tp in owned:
                assert tp not in seen, f"{tp} owned by {seen[tp]} and {mid}"
                seen[tp] = mid


@pytest.mark.parametrize("seed", range(60))
def test_no_two_members_ever_own_a_partition_and_the_group_converges(seed: int) -> None:
    model = Model(seed)
    for _ in range(400):
        model.step()
        model.check_one_owner()
    for _ in range(6):  # the churn stops; every member heartbeats and hears the answer
        for mid in sorted(model.belief):
            model.heartbeat(mid)
            model.check_one_owner()
    owners: dict[TopicPartition, list[str]] = {}
    for mid, owned in model.belief.items():
        for tp in owned:
            owners.setdefault(tp, []).append(mid)
    wanted = {(t, p) for ts in model.topics.values() for t in ts for p in range(model.counts[t])}
    assert set(owners) == wanted
    assert all(len(o) == 1 for o in owners.values())


def test_a_partition_moves_only_after_its_owner_released_it() -> None:
    g = GroupMembership(round_robin)
    counts = {"t": 2}
    one = g.heartbeat("m1", 0, frozenset({"t"}), frozenset(), counts)
    assert one.assigned == {("t", 0), ("t", 1)}
    two = g.heartbeat("m2", 0, frozenset({"t"}), frozenset(), counts)
    assert two.assigned == frozenset()  # ("t", 1) is still m1's
    one = g.heartbeat("m1", one.member_epoch, frozenset({"t"}), one.assigned, counts)
    assert one.assigned == {("t", 0)}  # told to revoke ("t", 1)
    two = g.heartbeat("m2", two.member_epoch, frozenset({"t"}), frozenset(), counts)
    assert two.assigned == frozenset()  # m1 has not reported it released yet
    one = g.heartbeat("m1", one.member_epoch, frozenset({"t"}), frozenset({("t", 0)}), counts)
    two = g.heartbeat("m2", two.member_epoch, frozenset({"t"}), frozenset(), counts)
    assert two.assigned == {("t", 1)}
    assert one.member_epoch == two.member_epoch == g.epoch


def test_a_zombie_is_fenced_and_may_not_commit() -> None:
    g = GroupMembership(round_robin)
    counts = {"t": 1}
    a = g.heartbeat("m1", 0, frozenset({"t"}), frozenset(), counts)
    assert g.may_commit("m1", a.member_epoch)
    g.expire("m1")
    late = g.heartbeat("m1", a.member_epoch, frozenset({"t"}), a.assigned, counts)
    assert late.outcome is Outcome.FENCED
    assert not g.may_commit("m1", a.member_epoch)
    assert g.leave("m1", a.member_epoch) is Outcome.FENCED


def test_a_lost_answer_does_not_fence_the_member() -> None:
    g = GroupMembership(round_robin)
    counts = {"t": 2}
    a = g.heartbeat("m1", 0, frozenset({"t"}), frozenset(), counts)
    g.heartbeat("m2", 0, frozenset({"t"}), frozenset(), counts)
    moved = g.heartbeat("m1", a.member_epoch, frozenset({"t"}), frozenset({("t", 0)}), counts)
    assert moved.member_epoch != a.member_epoch  # its answer is lost: it still has the old one
    again = g.heartbeat("m1", a.member_epoch, frozenset({"t"}), frozenset({("t", 0)}), counts)
    assert again.outcome is Outcome.OK and again.assigned == {("t", 0)}


def test_the_model_catches_a_coordinator_that_hands_out_held_partitions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The check is not vacuous: a reconciliation that gives a member its target without
    waiting for the previous owner's release is caught."""

    def eager(self: GroupMembership, m: MemberState) -> HeartbeatAnswer:
        target = self.target.get(m.member_id, frozenset())
        m.held |= set(target)
        if m.held <= target and m.epoch != self.epoch:
            m.previous_epoch, m.epoch = m.epoch, self.epoch
        return HeartbeatAnswer(Outcome.OK, m.epoch, frozenset(m.held & target))

    monkeypatch.setattr(GroupMembership, "_reconcile", eager)
    model = Model(0)
    with pytest.raises(AssertionError, match="owned by"):
        for _ in range(400):
            model.step()
            model.check_one_owner()
