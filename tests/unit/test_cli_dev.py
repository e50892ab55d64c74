"""`sluice dev cluster`'s layout: ports, data directories, controllers, argument checks."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from cli.dev import BrokerPlan, controllers_arg, plan_cluster


def test_layout_of_three_brokers(tmp_path: Path) -> None:
    plans = plan_cluster(3, tmp_path / "c", 9092)
    assert plans == [
        BrokerPlan(i, tmp_path / "c" / f"node-{i}", 9092 + 10 * i, 9093 + 10 * i, 9095 + 10 * i)
        for i in range(3)
    ]
    assert plans[2].log_path == tmp_path / "c" / "node-2.log"
    assert plans[1].address == "127.0.0.1:9102"
    assert controllers_arg(plans) == "0@127.0.0.1:9093,1@127.0.0.1:9103,2@127.0.0.1:9113"
    assert plans[1].command(controllers_arg(plans)) == [
        sys.executable, "-m", "cli.main", "serve",
        "--data-dir", str(tmp_path / "c" / "node-1"),
        "--node-id", "1",
        "--listen", "127.0.0.1:9102",
        "--peer-listen", "127.0.0.1:9103",
        "--http-listen", "127.0.0.1:9105",
        "--controllers", "0@127.0.0.1:9093,1@127.0.0.1:9103,2@127.0.0.1:9113",
    ]  # fmt: skip


def test_controllers_are_the_first_three_at_most(tmp_path: Path) -> None:
    assert controllers_arg(plan_cluster(1, tmp_path, 100)) == "0@127.0.0.1:101"
    five = controllers_arg(plan_cluster(5, tmp_path, 100))
    assert five == "0@127.0.0.1:101,1@127.0.0.1:111,2@127.0.0.1:121"


def test_data_dir_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (plan,) = plan_cluster(1, Path("rel"), 9092)
    assert plan.data_dir == tmp_path.resolve() / "rel" / "node-0"


def test_the_last_port_must_fit(tmp_path: Path) -> None:
    assert plan_cluster(2, tmp_path, 65535 - 13)[-1].http_port == 65535
    with pytest.raises(ValueError, match=r"needs ports 65523\.\.65536"):
        plan_cluster(2, tmp_path, 65523)
    with pytest.raises(ValueError, match=r"within 1\.\.65535"):
        plan_cluster(1, tmp_path, 0)
    with pytest.raises(ValueError, match="--nodes must be at least 1, got 0"):
        plan_cluster(0, tmp_path, 9092)
