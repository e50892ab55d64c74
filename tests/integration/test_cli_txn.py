"""`sluice txn list|describe|abort` and `sluice consume --isolation` against a real broker
process, with a transactional producer (the blocking client) holding a transaction open:
the list shows it with the last stable offset it holds back, read_uncommitted readers see its
record and read_committed ones do not, and an operator's abort ends it and fences its
producer."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest

from consumers import blocking
from consumers.errors import TransactionAbortedError, TransactionalProducerFencedError
from tests.support.harness import BrokerProcess
from tests.support.sluice_cli import run_sluice

Sluice = Callable[..., Any]


def ok_json(sluice: Sluice, *args: str) -> Any:
    r = sluice(*args, "--json")
    assert r.returncode == 0, (args, r.stderr)
    return json.loads(r.stdout)


def values(sluice: Sluice, *args: str) -> list[bytes]:
    r = sluice("consume", "t", "--partition", "0", "--from-beginning", *args)
    assert r.returncode == 0, r.stderr
    lines: list[bytes] = r.stdout.splitlines()
    return lines


def test_operators_see_and_abort_an_open_transaction(
    broker_factory: Callable[..., BrokerProcess],
) -> None:
    b = broker_factory()
    b.start()
    b.wait_ready()
    sluice: Sluice = partial(run_sluice, bootstrap=b.bootstrap)
    assert sluice("topic", "create", "t", "--partitions", "2").returncode == 0
    assert ok_json(sluice, "txn", "list") == []
    with blocking.Producer(b.bootstrap, transactional_id="etl-1") as p:
        with p.transaction():
            p.send("t", b"committed-0", partition=0)
            p.send("t", b"committed-1", partition=1)
        p.begin_transaction()
        p.send("t", b"open", partition=0)
        p.flush()
        # Partition 0: the committed record (0), its marker (1), the open record (2).
        (row,) = ok_json(sluice, "txn", "list")
        assert (row["transactional_id"], row["state"], row["participants"]) == (
            "etl-1",
            "ongoing",
            1,
        )
        assert row["age_s"] is not None and row["age_s"] >= 0
        assert row["partitions"] == [
            {
                "topic": "t",
                "partition": 0,
                "last_stable_offset": 2,
                "high_watermark": 3,
                "held": 1,
            }
        ]
        text = sluice("txn", "list")
        assert text.returncode == 0 and b"etl-1" in text.stdout and b"ongoing" in text.stdout
        described = ok_json(sluice, "txn", "describe", "etl-1")
        assert described["state"] == "ongoing"
        assert described["participants"] == [{"topic": "t", "partition": 0}]
        assert described["partitions"][0]["held"] == 1
        r = sluice("txn", "describe", "etl-1")
        assert r.returncode == 0 and b"ongoing" in r.stdout and b"HELD" in r.stdout

        uncommitted = values(sluice, "--max-messages", "2", "--isolation", "read_uncommitted")
        assert uncommitted == [b"committed-0", b"open"]
        assert values(sluice, "--max-messages", "1") == [b"committed-0"]  # read_committed

        r = sluice("txn", "abort", "etl-1")
        assert r.returncode == 0, r.stderr
        assert ok_json(sluice, "txn", "list") == []
        with pytest.raises(TransactionAbortedError):
            p.commit_transaction()
        with pytest.raises(TransactionalProducerFencedError):
            p.begin_transaction()
    assert ok_json(sluice, "txn", "describe", "etl-1")["state"] == "empty"
    r = sluice("consume", "t", "--isolation", "sometimes")
    assert r.returncode == 2 and b"--isolation" in r.stderr
    for args in (("describe", "nope"), ("abort", "nope")):
        r = sluice("txn", *args)
        assert r.returncode == 1 and b"nope" in r.stderr, r.stderr
