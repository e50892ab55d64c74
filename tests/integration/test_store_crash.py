"""SIGKILL at a random moment loses no acknowledged round (inline durability, real RocksDB;
payloads in RocksDB, or every payload in segment files of 64 KiB, so they rotate).

A child process (this module run as `python -m tests.integration.test_store_crash DIR`)
commits rounds to three groups and prints each round's number only after `commit` returned.
The parent kills it with SIGKILL at a random moment, reopens the store and checks that every
acknowledged round is there: each group's log is exactly the log of rounds 1..R for one R >=
the last acknowledged round (contiguous, CRC-checked on read, the same R in every group and
in the apply state, since one round is one WriteBatch), and its hard state and offset index
are round R's. A SIGKILL test cannot see a missing fsync (the OS keeps the page cache); the
durability audit covers that (test_store_audit.py).
"""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from broker.core.raft import ConfState, Entry, EntryKind, HardState, MemoryStorage, Ready
from broker.runtime.store import RocksStore, WriteRound

GROUPS = (1, 2, 3)
CONF = ConfState(frozenset({(0, 9)}))
REPO = Path(__file__).resolve().parents[2]


def round_entries(n: int, group: int, last: int) -> list[Entry]:
    """Round n's entries for a group whose log ends at `last`: 1-3 new entries; every 7th
    round first replaces the previous round's last entry (a suffix replacement)."""
    first = last if n % 7 == 0 and last > 0 else last + 1
    count = 1 + n % 3
    return [
        Entry(i, n, EntryKind.NORMAL, b"round %d group %d index %d " % (n, group, i) + b"x" * 80)
        for i in range(first, first + count)
    ]


PAYLOADS = {"rocksdb": 0, "segments": 64}
"""external_payload_bytes per mode: with 64 every entry keeps its payload in a segment."""


def child(path: str, mode: str) -> None:
    store = RocksStore.open(
        path,
        0,
        durability="inline",
        external_payload_bytes=PAYLOADS[mode],
        payload_segment_bytes=64 << 10,
    )
    groups = [store.create_group(g, CONF) for g in GROUPS]
    os.write(1, b"ready\n")
    n = 0
    while True:
        n += 1
        rnd = WriteRound()
        for g in groups:
            ents = round_entries(n, g.group_id, g.last_index())
            rnd.add_ready(g, Ready(n, hard_state=HardState(n, None, n - 1), entries=ents))
            rnd.put_apply(g.group_id, b"%d" % n)
            rnd.put_offset(g.group_id, n, b"%d" % ents[-1].index)
        store.commit(rnd)
        os.write(1, b"%d\n" % n)  # acknowledged only now


def expected(rounds: int, group: int) -> MemoryStorage:
    st = MemoryStorage(CONF)
    for n in range(1, rounds + 1):
        st.append(round_entries(n, group, st.last_index()))
    return st


def run_and_kill(path: Path, rng: random.Random, mode: str) -> int:
    """Start a child, kill it at a random moment, return the last acknowledged round."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.test_store_crash", str(path), mode],
        cwd=REPO,
        stdout=subprocess.PIPE,
        bufsize=0,  # unbuffered: a buffered readline() could take acks that os.read() then misses
    )
    assert proc.stdout is not None
    try:
        assert proc.stdout.readline() == b"ready\n"
        deadline = time.monotonic() + rng.uniform(0.05, 0.6)
        out = b""
        fd = proc.stdout.fileno()
        while time.monotonic() < deadline:  # drain so the child never blocks on the pipe
            if select.select([fd], [], [], 0.01)[0]:
                out += os.read(fd, 1 << 16)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        out += proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    lines = out.splitlines()
    acked = [int(x) for x in lines]
    assert acked == list(range(1, len(acked) + 1))
    return acked[-1] if acked else 0


@pytest.mark.parametrize("mode", PAYLOADS)
@pytest.mark.parametrize("rep", range(3))
def test_sigkill_loses_no_acknowledged_round(tmp_path: Path, rep: int, mode: str) -> None:
    rng = random.Random(rep)
    acked = run_and_kill(tmp_path, rng, mode)
    assert acked > 0, "the child acknowledged nothing before it was killed"
    with RocksStore.open(tmp_path, 0, create_if_missing=False, entry_cache_bytes=0) as store:
        assert all(store.has_group(gid) for gid in GROUPS)
        applied = store.read_apply(GROUPS[0])
        assert applied is not None
        rounds = int(applied)
        assert rounds >= acked
        for gid in GROUPS:
            g = store.group(gid)
            want = expected(rounds, gid)
            assert store.read_apply(gid) == applied
            assert (g.first_index(), g.last_index()) == (1, want.last_index())
            assert g.entries(1, g.last_index() + 1) == want.entries(1, want.last_index() + 1)
            assert g.hard_state == HardState(rounds, None, rounds - 1)
            assert [k for k, _ in store.scan_offsets(gid)] == list(range(1, rounds + 1))


if __name__ == "__main__":
    child(sys.argv[1], sys.argv[2])
