"""Progress and Inflights: the leader's view of one follower, and its flow control."""

from __future__ import annotations

import pytest

from broker.core.raft import ConfState, Snapshot, SnapshotMeta
from broker.core.raft.progress import Inflights, Progress, ProgressState, quorum_index
from tests.unit.raft_harness import Net


def test_inflights_full_by_count() -> None:
    inf = Inflights(3, 1 << 20)
    for last in (5, 10, 15):
        assert not inf.full()
        inf.add(last, 100)
    assert inf.full() and len(inf) == 3 and inf.bytes == 300
    with pytest.raises(AssertionError):
        inf.add(20, 1)


def test_inflights_full_by_bytes() -> None:
    inf = Inflights(100, 1000)
    inf.add(1, 600)
    assert not inf.full()
    inf.add(2, 399)
    assert not inf.full()
    inf.add(3, 1)
    assert inf.full() and len(inf) == 3 and inf.bytes == 1000
    # One message at or over the byte limit fills the window on its own.
    big = Inflights(100, 1000)
    big.add(7, 5000)
    assert big.full()


def test_inflights_free_le_releases_every_message_up_to_an_index() -> None:
    inf = Inflights(10, 1 << 20)
    for last in (2, 4, 6, 8):
        inf.add(last, 10 * last)
    inf.free_le(5)
    assert (len(inf), inf.bytes) == (2, 60 + 80)
    inf.free_le(5)  # idempotent
    assert len(inf) == 2
    inf.free_le(7)  # between messages: releases only the one ending at 6
    assert (len(inf), inf.bytes) == (1, 80)
    inf.free_le(100)
    assert (len(inf), inf.bytes) == (0, 0)


def test_inflights_free_first_releases_the_oldest_message() -> None:
    inf = Inflights(2, 1 << 20)
    inf.add(3, 30)
    inf.add(6, 60)
    assert inf.full()
    inf.free_first()
    assert not inf.full() and (len(inf), inf.bytes) == (1, 60)
    inf.free_first()
    inf.free_first()  # empty: no-op
    assert (len(inf), inf.bytes) == (0, 0)


def replicating(match: int, next_index: int) -> Progress:
    pr = Progress(next_index, 256, 1 << 20)
    pr.match = match
    pr.become_replicate()
    pr.next = next_index
    return pr


def test_maybe_decr_to_in_replicate_ignores_stale_rejections() -> None:
    pr = replicating(match=5, next_index=10)
    assert pr.maybe_decr_to(5, 0) is False  # rejected <= match: stale
    assert pr.maybe_decr_to(3, 0) is False
    assert pr.next == 10
    assert pr.maybe_decr_to(8, 2) is True  # falls back to match + 1, hint ignored
    assert pr.next == 6


def test_maybe_decr_to_in_probe_uses_the_hint_and_ignores_other_rejections() -> None:
    pr = Progress(10, 256, 1 << 20)
    pr.probe_sent = True
    assert pr.maybe_decr_to(7, 0) is False  # not the probe we sent (prev_index 9)
    assert (pr.next, pr.probe_sent) == (10, True)
    assert pr.maybe_decr_to(9, 3) is True  # the follower's log matches up to 3 at best
    assert (pr.next, pr.probe_sent) == (4, False)
    assert pr.maybe_decr_to(3, 50) is True  # a hint above the rejection does not raise next
    assert pr.next == 3
    pr.match = 2
    assert pr.maybe_decr_to(2, 0) is True  # never below match + 1
    assert pr.next == 3


def test_become_probe_after_a_snapshot_resumes_past_the_snapshot() -> None:
    snap = Snapshot(SnapshotMeta(20, 3, ConfState(frozenset({1}))), b"x")
    pr = Progress(5, 256, 1 << 20)
    pr.match = 4
    pr.become_snapshot(snap)
    assert pr.state == ProgressState.SNAPSHOT and pr.is_paused()
    pr.become_probe()
    assert (pr.state, pr.next, pr.snapshot) == (ProgressState.PROBE, 21, None)
    # Without a pending snapshot: back to match + 1.
    pr.match = 25
    pr.become_probe()
    assert pr.next == 26


def test_a_refused_snapshot_frees_it_and_pauses_probing_from_match() -> None:
    pr = Progress(20, 8, 1 << 20)
    pr.match = 4
    pr.become_snapshot(Snapshot(SnapshotMeta(15, 2, ConfState(frozenset({1}))), b"x" * 100))
    pr.snapshot_refused(6)
    assert (pr.state, pr.snapshot, pr.next, pr.pause_ticks) == (ProgressState.PROBE, None, 5, 6)
    assert pr.is_paused() and pr.snapshot_refusals == 1
    pr.pause_ticks = 0
    assert not pr.is_paused()
    pr.snapshot_refused(12)
    assert pr.snapshot_refusals == 2
    pr.maybe_update(7)  # progress: the next refusal pauses from the start again
    assert pr.snapshot_refusals == 0


def test_maybe_update_moves_match_and_next_forward_only() -> None:
    pr = Progress(5, 256, 1 << 20)
    pr.probe_sent = True
    assert pr.maybe_update(7) is True
    assert (pr.match, pr.next, pr.probe_sent) == (7, 8, False)
    assert pr.maybe_update(6) is False
    assert (pr.match, pr.next) == (7, 8)


def test_is_paused_per_state() -> None:
    pr = Progress(1, 2, 1 << 20)
    assert not pr.is_paused()
    pr.probe_sent = True
    assert pr.is_paused()
    pr.become_replicate()
    assert not pr.is_paused()
    pr.inflights.add(1, 1)
    pr.inflights.add(2, 1)
    assert pr.is_paused()


@pytest.mark.parametrize(
    ("matches", "want"),
    [
        ([], 0),
        ([5], 5),
        ([5, 3], 3),
        ([1, 5, 3], 3),
        ([4, 1, 3, 2], 2),
        ([5, 1, 4, 2, 3], 3),
        ([6, 1, 5, 2, 4, 3], 3),
        ([7, 1, 6, 2, 5, 3, 4], 4),
        ([9, 9, 9, 0, 0, 0, 0], 0),
        ([9, 9, 9, 9, 0, 0, 0], 9),
    ],
)
def test_quorum_index(matches: list[int], want: int) -> None:
    assert quorum_index(matches) == want


def test_idle_ticks_count_since_a_follower_last_answered() -> None:
    net = Net([1, 2, 3])
    lead = net.elect(1)
    net.isolate(3)
    for _ in range(4):
        net.tick(1)
        net.deliver_all()
    assert lead.progress[2].idle_ticks < 2  # answers every heartbeat (2 ticks)
    assert lead.progress[3].idle_ticks >= 4
