"""Fixtures for integration tests: real broker processes, always killed at teardown."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.cluster import Cluster
from tests.support.harness import BrokerProcess


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


@pytest.fixture
def cluster_factory(tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    """`make(size=3, env=None, seeds=None, **config)`: a started cluster (its seeds: the
    others join with `start_broker`), every seed ready, the
    durability audit on (config overrides it and any other TOML option; `env`: variables every
    broker process gets). Every process and proxy is stopped at teardown, whatever the test
    did."""
    made: list[Cluster] = []

    def make(
        size: int = 3,
        env: dict[str, str] | None = None,
        *,
        seeds: int | None = None,
        **config: object,
    ) -> Cluster:
        c = Cluster(tmp_path / f"cluster-{len(made)}", size, env, seeds=seeds, **config)
        made.append(c)
        c.start()
        return c

    yield make
    for c in made:
        c.close()
