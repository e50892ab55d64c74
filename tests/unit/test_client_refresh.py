"""The metadata-refresh policy the producer and consumer share (consumers.core.refresh): one
refresh at a time, spaced by the base backoff while healthy and by a growing backoff capped at
METADATA_RETRY_MAX_S while leaders are missing; stale topics asked for again while needed."""

from __future__ import annotations

import math

import pytest

from consumers.core.refresh import METADATA_RETRY_MAX_S, Backoff, MetadataRefresh


def policy(wants: list[str] | None = None) -> MetadataRefresh:
    def on_want() -> None:
        if wants is not None:
            wants.append("want")

    return MetadataRefresh(Backoff(0.05, 1.0, rng=lambda: 1.0), on_want=on_want)


def test_one_refresh_at_a_time_and_healthy_ones_spaced_by_the_base_backoff() -> None:
    wants: list[str] = []
    p = policy(wants)
    assert p.start(0.0, lambda t: True) is None and p.next_at() == math.inf
    p.want("t")
    p.want("t")
    assert wants == ["want"]  # only a newly wanted topic wakes the shell
    assert p.start(0.0, lambda t: True) == frozenset({"t"})
    p.want("u")
    assert p.start(0.01, lambda t: True) is None and p.next_at() == math.inf  # one running
    p.finish(0.02, {"t"}, ok=True, stale=())
    assert p.failures == 0 and p.next_at() == pytest.approx(0.07)
    assert p.start(0.06, lambda t: True) is None
    assert p.start(0.07, lambda t: True) == frozenset({"u"})


def test_stale_topics_are_retried_with_a_growing_capped_backoff_while_needed() -> None:
    p = policy()
    p.want("t")
    now = 0.0
    waits = []
    for _ in range(4):
        topics = p.start(now, lambda t: True)
        assert topics == frozenset({"t"})
        p.finish(now, topics, ok=True, stale={"t"})
        waits.append(p.allowed_at - now)
        now = p.allowed_at
    assert waits == pytest.approx([0.05, 0.1, 0.2, METADATA_RETRY_MAX_S])
    assert p.start(now, lambda t: False) is None  # no longer needed: dropped
    assert p.next_at() == math.inf


def test_a_failed_refresh_asks_again_for_every_topic() -> None:
    p = policy()
    p.want("t")
    p.want("u")
    topics = p.start(0.0, lambda t: True)
    assert topics is not None
    p.finish(0.0, topics, ok=False, stale=())
    assert p.failures == 1
    assert p.start(p.allowed_at, lambda t: True) == frozenset({"t", "u"})
