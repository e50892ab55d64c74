"""Fixtures for integration tests: real broker processes, always killed at teardown."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.harness import BrokerProcess


@pytest.fixture
def broker_factory(tmp_path: Path) -> Iterator[Callable[..., BrokerProcess]]:
    started: list[BrokerProcess] = []

    def make(node_id: int = 0, **config: object) -> BrokerProcess:
        b = BrokerProcess(tmp_path / f"data-{node_id}", node_id=node_id, config=dict(config))
        started.append(b)
        return b

    yield make
    for b in started:
        b.kill()
