"""The history checker must complain about each planted fault, and not about a clean history."""

from __future__ import annotations

from tests.support.history import History

TP = ("t", 0)


def clean() -> History:
    h = History()
    for i in range(5):
        h.ack(TP, i, b"v%d" % i)
        h.read(TP, i, b"v%d" % i)
    return h


def kinds(h: History) -> set[str]:
    return {p.kind for p in h.check()}


def test_clean_history_passes() -> None:
    assert clean().check() == []


def test_lost_record_is_reported() -> None:
    h = History()
    for i in range(5):
        h.ack(TP, i, b"v%d" % i)
    for i in (0, 1, 3, 4):
        h.read(TP, i, b"v%d" % i)
    assert "lost" in kinds(h) and "gap" in kinds(h)


def test_duplicate_is_reported() -> None:
    h = clean()
    h.read(TP, 5, b"v2")
    assert kinds(h) == {"duplicate"}


def test_reordering_is_reported() -> None:
    h = History()
    h.ack(TP, 0, b"a")
    h.ack(TP, 1, b"b")
    h.read(TP, 0, b"b")
    h.read(TP, 1, b"a")
    assert "reordered" in kinds(h)


def test_different_values_at_one_offset_are_reported() -> None:
    h = clean()
    h.read(TP, 3, b"other")
    assert "inconsistent" in kinds(h)


def test_records_deleted_by_retention_are_not_lost_nor_a_gap() -> None:
    h = History()
    for i in range(6):
        h.ack(TP, i, b"v%d" % i)
    h.read(TP, 0, b"v0")
    h.delete(TP, 1, 4)  # the reader found 1..3 deleted and moved to 4
    h.read(TP, 4, b"v4")
    h.read(TP, 5, b"v5")
    assert h.check() == []
    h.delete(TP, 5, 5)  # an empty range deletes nothing
    assert h.deleted[TP] == [(1, 4)]


def test_retention_does_not_excuse_a_loss_outside_the_deleted_range() -> None:
    h = History()
    for i in range(5):
        h.ack(TP, i, b"v%d" % i)
    h.delete(TP, 0, 2)
    h.read(TP, 2, b"v2")
    h.read(TP, 4, b"v4")
    assert kinds(h) == {"lost", "gap"}
