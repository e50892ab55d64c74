"""Run one cluster-simulator seed: draw its scenario, pick its driver (the `groups` profile's
GroupDriver, the `txn` profile's TxnDriver, the `reassign` profile's ReassignDriver, else the
ClusterDriver), run it under an optional mutation, and report."""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

from tests.sim.checker import Violation
from tests.sim.cluster_groups import GroupDriver
from tests.sim.cluster_reassign import ReassignDriver
from tests.sim.cluster_scenario import ClusterDriver, ClusterResult, ClusterScenario, profile_for
from tests.sim.cluster_txn import TxnDriver

Mutation = Callable[[], AbstractContextManager[None]]


def run_cluster_seed(
    seed: int,
    profile: str | None = None,
    mutation: Mutation | None = None,
    *,
    dial_rule: str = "runtime",
    pipeline_depth: int | None = None,
) -> ClusterResult:
    """`pipeline_depth`: the brokers' drivers keep that many rounds in flight instead of the
    scenario's drawn depth (1: the unpipelined driver)."""
    profile = profile or profile_for(seed)
    sc = ClusterScenario.draw(seed, profile)
    sc.dial_rule = dial_rule
    if pipeline_depth is not None:
        sc.pipeline_depth = pipeline_depth
        sc.pipeline_forced = True
    drv: ClusterDriver
    if profile == "groups":
        drv = GroupDriver(sc)
    elif profile == "txn":
        drv = TxnDriver(sc)
    elif profile == "reassign":
        drv = ReassignDriver(sc)
    else:
        drv = ClusterDriver(sc)
    violation: Violation | None = None
    with mutation() if mutation is not None else _nothing():
        try:
            drv.run()
        except Violation as v:
            violation = v
        except Exception as e:  # a bug of the simulator or an assertion of the core
            tb = traceback.extract_tb(e.__traceback__)[-1]
            violation = Violation("sim-error", f"{e!r} at {tb.filename}:{tb.lineno}")
    w = drv.world
    if violation is not None:
        w.log(f"VIOLATION {violation}")
    return ClusterResult(
        seed,
        profile,
        w.stats,
        sum(len(p.acked) for p in drv.producers),
        drv.reader.records,
        w.checker.elections,
        violation,
        sc,
        list(w.trace),
        drv.group_counts(),
    )


@contextlib.contextmanager
def _nothing() -> Iterator[None]:
    yield
