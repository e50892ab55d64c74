"""The blocking facade has the same names and signatures as the async clients."""

from __future__ import annotations

import inspect

import pytest

from consumers import Admin, Consumer, Producer, blocking

PAIRS = [(Producer, blocking.Producer), (Consumer, blocking.Consumer), (Admin, blocking.Admin)]


def public(cls: type) -> dict[str, object]:
    return {
        name: member
        for name, member in inspect.getmembers(cls)
        if not name.startswith("_") and callable(member)
    }


def parameters(fn: object) -> list[tuple[str, object, object]]:
    sig = inspect.signature(fn)  # type: ignore[arg-type]
    return [(p.name, p.kind, p.default) for p in sig.parameters.values()]


@pytest.mark.parametrize(("async_cls", "blocking_cls"), PAIRS)
def test_same_names_and_signatures(async_cls: type, blocking_cls: type) -> None:
    theirs = public(async_cls)
    ours = public(blocking_cls)
    assert set(theirs) <= set(ours), set(theirs) - set(ours)
    assert parameters(async_cls.__init__) == parameters(blocking_cls.__init__)
    for name, fn in theirs.items():
        assert parameters(fn) == parameters(ours[name]), name


def test_constructor_refusals_are_the_same() -> None:
    with pytest.raises(ValueError, match="transactional_id"):
        blocking.Producer(transactional_id="")
    with pytest.raises(ValueError, match="idempotent"):
        blocking.Producer(transactional_id="t", idempotent=False)
