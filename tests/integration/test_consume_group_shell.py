"""The shell acceptance of consumer groups: three `sluice consume t --group g` processes share
a 6-partition topic; one is SIGKILLed and the other two take over its partitions once its
session expires; `sluice group describe g` shows lag 0 once everything is drained, and every
produced line was printed by some member."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from consumers.blocking import Admin
from tests.support.harness import BrokerProcess
from tests.support.sluice_cli import ROOT, run_sluice, sluice_command
from tests.support.wait import Lines, wait_until

SESSION_MS = 4000


def describe(bootstrap: str) -> dict[str, Any]:
    """`sluice group describe g --json` (before the first member joined: no members)."""
    r = run_sluice("group", "describe", "g", "--json", bootstrap=bootstrap)
    if r.returncode == 1 and b"GROUP_ID_NOT_FOUND" in r.stderr:
        return {"members": [], "offsets": [], "state": "dead"}
    assert r.returncode == 0, r.stderr
    out: dict[str, Any] = json.loads(r.stdout)
    return out


def owners(d: dict[str, Any]) -> dict[int, str]:
    return {a["partition"]: m["member_id"] for m in d["members"] for a in m["assignment"]}


def test_three_shell_members_share_a_topic_and_survive_a_kill(
    broker_factory: Callable[..., BrokerProcess],
) -> None:
    b = broker_factory()
    b.start()
    b.wait_ready()
    sluice = partial(run_sluice, bootstrap=b.bootstrap)
    assert sluice("topic", "create", "t", "--partitions", "6").returncode == 0
    first = [b"a%d" % i for i in range(300)]
    assert sluice("produce", "t", stdin=b"\n".join(first) + b"\n").returncode == 0
    env = {**os.environ, "SLUICE_BOOTSTRAP": b.bootstrap}
    procs = [
        subprocess.Popen(
            sluice_command(
                "consume",
                "t",
                "--group",
                "g",
                "--from-beginning",
                "--session-timeout-ms",
                str(SESSION_MS),
            ),
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(3)
    ]
    outputs = [Lines(p.stdout) for p in procs if p.stdout is not None]
    try:
        wait_until(
            lambda: (
                len(describe(b.bootstrap)["members"]) == 3
                and len(owners(describe(b.bootstrap))) == 6
                and describe(b.bootstrap)["state"] == "stable"
            ),
            "three members sharing six partitions",
            timeout=30,
        )
        shares = sorted(len(m["assignment"]) for m in describe(b.bootstrap)["members"])
        assert shares == [2, 2, 2], shares
        with Admin(b.bootstrap) as admin:  # polled in-process: a CLI call takes ~0.5 s
            procs[0].send_signal(signal.SIGKILL)
            procs[0].wait(timeout=10)
            killed = time.monotonic()

            def taken_over() -> bool:
                d = admin.describe_group("g")
                held = [tp for m in d.members for tp in m.assignment]
                return len(d.members) == 2 and len(set(held)) == 6

            wait_until(
                taken_over, "the two survivors owning all six partitions",
                timeout=SESSION_MS / 1000 + 20, interval=0.02,
            )  # fmt: skip
            takeover = time.monotonic() - killed
        print(f"takeover {takeover:.2f} s after SIGKILL (session timeout {SESSION_MS / 1000} s)")
        assert takeover < SESSION_MS / 1000 + 1, takeover  # expiry, then a 200 ms poll
        second = [b"b%d" % i for i in range(300)]
        assert sluice("produce", "t", stdin=b"\n".join(second) + b"\n").returncode == 0
        wait_until(
            lambda: (
                all(o["lag"] == 0 for o in describe(b.bootstrap)["offsets"])
                and len(describe(b.bootstrap)["offsets"]) == 6
            ),
            "lag 0 on every partition",
            timeout=30,
        )
        printed = {line.encode() for out in outputs for line in out.lines}
        assert set(first) | set(second) <= printed, "a produced line was never printed"
        assert set(second) <= {line.encode() for out in outputs[1:] for line in out.lines}
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(timeout=30)
