"""`sluice cluster status --json` keeps the contract's shape (fields may be added, never
renamed), and the table view prints every broker and partition."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from cli.cluster import _print_status, status_json
from consumers import BrokerDescription, ClusterDescription, PartitionStatus

DESC = ClusterDescription(
    cluster_id="c1",
    controller=1,
    brokers=(
        BrokerDescription(0, "127.0.0.1", 9092, None, True),
        BrokerDescription(1, "::1", 9102, "r[1]", False),
    ),
    partitions=(
        PartitionStatus("t", 0, 1, 3, (1, 0), (1,), 5),
        PartitionStatus("t", 1, None, -1, (0, 1), (), -1),
    ),
)


def test_json_shape() -> None:
    d = json.loads(json.dumps(status_json(DESC)))
    assert set(d) == {"cluster_id", "controller", "brokers", "partitions"}
    assert (d["cluster_id"], d["controller"]) == ("c1", 1)
    assert d["brokers"] == [
        {"id": 0, "address": "127.0.0.1:9092", "rack": None, "alive": True},
        {"id": 1, "address": "[::1]:9102", "rack": "r[1]", "alive": False},
    ]
    assert d["partitions"] == [
        {
            "topic": "t",
            "partition": 0,
            "leader": 1,
            "replicas": [1, 0],
            "caught_up": [1],
            "leader_term": 3,
            "commit_lag": 5,
        },
        {
            "topic": "t",
            "partition": 1,
            "leader": None,
            "replicas": [0, 1],
            "caught_up": [],
            "leader_term": -1,
            "commit_lag": -1,
        },
    ]


def test_table_to_a_pipe_is_tab_separated(capsys: pytest.CaptureFixture[str]) -> None:
    _print_status(DESC)
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "cluster c1, controller 1"
    assert lines[1].split("\t") == ["BROKER", "ADDRESS", "RACK", "STATUS"]
    assert lines[2].split("\t") == ["0", "127.0.0.1:9092", "-", "alive"]
    assert lines[3].split("\t") == ["1", "[::1]:9102", "r[1]", "failed (controller)"]
    header = ["TOPIC", "PARTITION", "LEADER", "REPLICAS", "CAUGHT UP", "COMMIT LAG"]
    assert lines[4].split("\t") == header
    assert lines[5].split("\t") == ["t", "0", "1", "1,0", "1", "5"]
    assert lines[6].split("\t") == ["t", "1", "none", "0,1", "-", "-"]
    assert len(lines) == 7 and "\x1b[" not in out and "│" not in out


def test_table_on_a_terminal() -> None:
    console = Console(file=io.StringIO(), width=120, force_terminal=True, color_system=None)
    _print_status(DESC, console)
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert "cluster c1, controller 1" in out
    assert "127.0.0.1:9092" in out and "[::1]:9102" in out and "r[1]" in out
    assert "alive" in out and "failed (controller)" in out
    rows = [line for line in out.splitlines() if line.startswith("│ t ")]
    assert len(rows) == 2
    assert [c.strip() for c in rows[0].split("│")[1:-1]] == ["t", "0", "1", "1,0", "1", "5"]
    assert [c.strip() for c in rows[1].split("│")[1:-1]] == ["t", "1", "none", "0,1", "-", "-"]
