"""`sluice group ...` and `sluice consume --group` against real broker processes: a group is
made by consuming, described (committed = high watermark, lag 0), its offsets reset (a dry
run changes nothing; --execute does, and the group reads again from there), refused while it
has a live member (which commits and leaves when SIGTERMed), and deleted; with three brokers,
`group list` finds groups whichever broker coordinates them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from functools import partial
from typing import Any

import pytest

from tests.integration.cluster import Cluster
from tests.support.harness import BrokerProcess
from tests.support.sluice_cli import ROOT, run_sluice, sluice_command
from tests.support.wait import Lines, wait_until

Sluice = Callable[..., subprocess.CompletedProcess[bytes]]


def ok_json(sluice: Sluice, *args: str) -> Any:
    r = sluice(*args, "--json")
    assert r.returncode == 0, (args, r.stderr)
    return json.loads(r.stdout)


def offsets(sluice: Sluice, group: str) -> dict[tuple[str, int], tuple[int | None, int, int]]:
    """(topic, partition) -> (committed, high watermark, lag) from `group describe --json`."""
    d = ok_json(sluice, "group", "describe", group)
    return {
        (o["topic"], o["partition"]): (o["committed"], o["high_watermark"], o["lag"])
        for o in d["offsets"]
    }


def consume_group(sluice: Sluice, topic: str, group: str, n: int, *extra: str) -> list[bytes]:
    r = sluice("consume", topic, "--group", group, "--max-messages", str(n), *extra)
    assert r.returncode == 0, r.stderr
    lines: list[bytes] = r.stdout.splitlines()
    assert len(lines) == n, lines
    return lines


@pytest.fixture
def member_processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Background `sluice consume --group` children, killed at teardown if still running."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=30)


def test_group_lifecycle(
    broker_factory: Callable[..., BrokerProcess],
    member_processes: list[subprocess.Popen[bytes]],
) -> None:
    b = broker_factory()
    sluice: Sluice = partial(run_sluice, bootstrap=b.bootstrap)
    b.start()
    b.wait_ready()
    assert sluice("topic", "create", "t", "--partitions", "3").returncode == 0
    r = sluice("produce", "t", stdin=b"".join(b"v%d\n" % i for i in range(30)))
    assert r.returncode == 0, r.stderr

    # A member reads everything, commits, and leaves when it stops.
    values = consume_group(sluice, "t", "g", 30, "--from-beginning")
    assert sorted(values) == sorted(b"v%d" % i for i in range(30))
    assert {"group_id": "g", "state": "empty", "members": 0} in ok_json(sluice, "group", "list")
    r = sluice("group", "list")
    assert r.returncode == 0 and b"GROUP\tSTATE\tMEMBERS\ng\tempty\t0\n" in r.stdout, r.stdout
    d = ok_json(sluice, "group", "describe", "g")
    assert (d["group_id"], d["state"], d["members"]) == ("g", "empty", [])
    assert {"assignor", "group_epoch", "rebalance_reason", "rebalance_time_ms"} <= set(d)
    start = offsets(sluice, "g")
    assert sorted(start) == [("t", 0), ("t", 1), ("t", 2)]
    assert sum(hw for _, hw, _ in start.values()) == 30
    assert all(c == hw and lag == 0 for c, hw, lag in start.values()), start
    r = sluice("group", "describe", "g")
    assert r.returncode == 0 and b"HIGH-WATERMARK" in r.stdout, r.stderr

    # A dry run prints the plan and changes nothing.
    plan = ok_json(sluice, "group", "reset-offsets", "g", "--topic", "t", "--to-earliest")
    assert plan["executed"] is False
    assert {(o["partition"], o["current"], o["new"]) for o in plan["offsets"]} == {
        (p, start[("t", p)][0], 0) for p in range(3)
    }
    r = sluice("group", "reset-offsets", "g", "--topic", "t:0,2", "--shift-by", "-1")
    assert r.returncode == 0, r.stderr
    assert b"dry run: nothing changed; add --execute" in r.stdout
    assert offsets(sluice, "g") == start

    # --execute: every partition goes 4 back, and the group reads those 12 again.
    plan = ok_json(
        sluice, "group", "reset-offsets", "g", "--topic", "t", "--shift-by", "-4", "--execute"
    )
    assert plan["executed"] is True
    moved = offsets(sluice, "g")
    for tp, (committed, hw, lag) in moved.items():
        expected = max(0, start[tp][1] - 4)
        assert (committed, hw, lag) == (expected, start[tp][1], hw - expected), (tp, moved)
    again = consume_group(sluice, "t", "g", sum(lag for _, _, lag in moved.values()))
    assert set(again) <= set(values)
    assert all(lag == 0 for _, _, lag in offsets(sluice, "g").values())

    # --to-datetime: the first records at or after the time (the log end where there is none).
    r = sluice("produce", "t", stdin=b"early\n")
    assert r.returncode == 0, r.stderr
    time.sleep(1.1)
    cut = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    time.sleep(0.1)
    r = sluice("produce", "t", stdin=b"late-1\nlate-2\nlate-3\n")
    assert r.returncode == 0, r.stderr
    args = ("group", "reset-offsets", "g", "--topic", "t", "--to-datetime", cut, "--execute")
    assert sluice(*args).returncode == 0
    late = consume_group(sluice, "t", "g", 3)
    assert sorted(late) == [b"late-1", b"late-2", b"late-3"]

    # A live member: reset --execute and delete are refused; SIGTERM commits and leaves.
    env = {**os.environ, "SLUICE_BOOTSTRAP": b.bootstrap}
    proc = subprocess.Popen(
        sluice_command("consume", "t", "--group", "g", "--session-timeout-ms", "30000"),
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    member_processes.append(proc)
    assert proc.stdout is not None and proc.stderr is not None
    out, err = Lines(proc.stdout), Lines(proc.stderr)

    def joined() -> bool:
        d = ok_json(sluice, "group", "describe", "g")
        return len(d["members"]) == 1 and len(d["members"][0]["assignment"]) == 3

    wait_until(joined, "the member owns every partition", timeout=30, interval=0.2,
               detail=lambda: err.lines)  # fmt: skip
    r = sluice("produce", "t", stdin=b"".join(b"live-%d\n" % i for i in range(6)))
    assert r.returncode == 0, r.stderr
    wait_until(lambda: len(out.lines) >= 6, "the member printed 6 records", timeout=30,
               detail=lambda: (out.lines, err.lines))  # fmt: skip
    r = sluice("group", "reset-offsets", "g", "--topic", "t", "--to-earliest", "--execute")
    assert r.returncode == 1 and b"1 live member" in r.stderr, r.stderr
    r = sluice("group", "reset-offsets", "g", "--topic", "t", "--to-earliest")
    assert r.returncode == 0, r.stderr  # a dry run is always allowed
    r = sluice("group", "delete", "g")
    assert r.returncode == 1 and b"NON_EMPTY_GROUP" in r.stderr, r.stderr
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM, err.lines
    assert sorted(out.lines) == [f"live-{i}" for i in range(6)]
    # Gone at once (a left member), not after its 30 s session timeout; everything committed.
    d = ok_json(sluice, "group", "describe", "g")
    assert d["members"] == [] and d["state"] == "empty", d
    assert all(o["lag"] == 0 for o in d["offsets"]), d["offsets"]

    # Delete: then it is unknown everywhere.
    r = sluice("group", "delete", "g")
    assert r.returncode == 0 and b"deleted group g" in r.stdout, r.stderr
    assert all(g["group_id"] != "g" for g in ok_json(sluice, "group", "list"))
    for command in ("describe", "delete"):
        r = sluice("group", command, "g", "--timeout", "5")
        assert r.returncode == 1 and b"GROUP_ID_NOT_FOUND" in r.stderr, (command, r.stderr)
    # Resetting a group nobody has used creates its offsets (it has no members to refuse).
    busiest = max(range(3), key=lambda p: start[("t", p)][1])  # keyless records go sticky
    r = sluice("group", "reset-offsets", "fresh", "--topic", f"t:{busiest}", "--to-offset", "1",
               "--execute")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert offsets(sluice, "fresh")[("t", busiest)][0] == 1
    r = sluice("group", "reset-offsets", "fresh", "--topic", "nope", "--to-earliest")
    assert r.returncode == 1 and b"nope" in r.stderr, r.stderr


def test_group_list_asks_every_coordinator(cluster_factory: Callable[..., Cluster]) -> None:
    """Groups hash onto coordinator partitions led by different brokers: `group list` asked
    of any one broker finds them all."""
    c = cluster_factory(3)
    sluice: Sluice = partial(run_sluice, bootstrap=c.bootstrap)
    assert sluice("topic", "create", "t", "--replication-factor", "3").returncode == 0
    assert sluice("produce", "t", stdin=b"a\nb\nc\nd\n").returncode == 0
    groups = [f"g{i}" for i in range(4)]
    for g in groups:
        consume_group(sluice, "t", g, 1, "--from-beginning")
    for broker in c.brokers:
        listed = ok_json(sluice, "group", "list", "--bootstrap", broker.bootstrap)
        assert sorted(x["group_id"] for x in listed) == groups, (broker.node_id, listed)
        assert all(x["members"] == 0 for x in listed), listed
    for g in groups:
        (only,) = offsets(sluice, g).values()
        assert only[0] == 1 and only[2] == 3
