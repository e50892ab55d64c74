"""`sluice top`'s pure parts (cli/top.py): the --http address, rates from two documents (one
incarnation and process life, a later monotonic clock whatever the wall clock did, counters
that did not go back), a document served twice told from a new one, the --json document's
`rates`, and the terminal view (a down broker, group lag, rows cut when redrawing)."""

from __future__ import annotations

import copy
import io
import json
from typing import Any

import pytest
import typer
from rich.console import Console

import cli.top as top_module
from cli.top import broker_rates, render, same_document, status_url, total_rates, with_rates

WALL_MS = 1_700_000_000_000


def doc(
    mono_ms: int,
    produced: float,
    *,
    incarnation: int = 7,
    run: int = 3,
    up: bool = True,
    wall_ms: int | None = None,
) -> Any:
    """Broker 0 (serving, with counters) at `mono_ms` of its monotonic clock (its wall clock
    `wall_ms`, by default as far past WALL_MS) and broker 1 without a report."""
    wall = WALL_MS + mono_ms if wall_ms is None else wall_ms
    broker = {
        "id": 0,
        "address": "127.0.0.1:9092",
        "up": True,
        "controller": True,
        "error": None,
        "incarnation": incarnation,
        "run": run,
        "time_ms": wall,
        "mono_ms": mono_ms,
        "counters": {"records_produced": produced, "produce_bytes": produced * 100},
    }
    down = {
        **broker,
        "id": 1,
        "address": "127.0.0.1:9102",
        "up": up,
        "controller": False,
        "error": None if up else "REQUEST_TIMED_OUT",
        "counters": None,
        "incarnation": None,
        "run": None,
        "time_ms": None,
        "mono_ms": None,
    }
    return {
        "served_by": 0,
        "cluster_id": "c1",
        "controller": 0,
        "time_ms": wall,
        "mono_ms": mono_ms,
        "run": run,
        "brokers": [broker, down],
        "topics": [
            {"name": "orders", "internal": False},
            {"name": "__consumer_offsets", "internal": True},
        ],
        "partitions": [
            {
                "topic": t,
                "partition": p,
                "leader": 0,
                "replicas": [0, 1],
                "caught_up": [0],
                "high_watermark": 12,
                "last_stable_offset": 12,
                "commit_lag": 3,
            }
            for t in ("orders", "__consumer_offsets")
            for p in range(30)
        ],
        "groups": [
            {
                "group_id": "billing",
                "state": "empty",
                "member_count": 0,
                "coordinator": 0,
                "lag": 4,
                "offsets": [
                    {
                        "topic": "orders",
                        "partition": 0,
                        "committed": 8,
                        "high_watermark": 12,
                        "lag": 4,
                    }
                ],
            }
        ],
        "transactions": [],
        "truncated": {"topics": False, "partitions": True, "reports": []},
    }


def text(view: object, width: int = 200) -> str:
    console = Console(record=True, width=width, file=io.StringIO())
    console.print(view)
    return console.export_text()


@pytest.mark.parametrize("bad", ["9095", "host:", ":9095", "host:http", "host:70000"])
def test_a_bad_http_address_is_a_usage_error(bad: str) -> None:
    with pytest.raises(typer.Exit) as e:
        status_url(bad)
    assert e.value.exit_code == 2


def test_http_addresses() -> None:
    assert status_url("127.0.0.1:9095") == "http://127.0.0.1:9095/status.json"
    assert status_url("::1:9095") == "http://[::1]:9095/status.json"


def test_rates_need_one_incarnation_a_later_clock_and_counters_that_did_not_go_back() -> None:
    before, now = doc(10_000, 100), doc(12_000, 300)
    assert broker_rates(before, now) == {0: {"records_produced": 100.0, "produce_bytes": 10_000.0}}
    assert broker_rates(None, now) == {}
    assert broker_rates(before, doc(12_000, 300, incarnation=8)) == {}  # a new data directory
    assert broker_rates(before, doc(12_000, 300, run=4)) == {}  # the process restarted
    assert broker_rates(now, now) == {}  # the same report twice
    assert broker_rates(now, doc(13_000, 50)) == {0: {}}  # counters reset: no rate
    assert total_rates({0: {"a": 1.0}, 2: {"a": 2.0, "b": 1.0}}) == {"a": 3.0, "b": 1.0}


def test_a_wall_clock_step_does_not_skew_rates() -> None:
    """NTP steps the broker's wall clock an hour back, or a minute forward, between two
    polls 2 s apart on its monotonic clock: the rates are still over 2 s."""
    before = doc(10_000, 100)
    expected = {0: {"records_produced": 100.0, "produce_bytes": 10_000.0}}
    for step_ms in (-3_600_000, 60_000):
        now = doc(12_000, 300, wall_ms=before["time_ms"] + 2_000 + step_ms)
        assert broker_rates(before, now) == expected
        assert with_rates(now, before)["rates"]["interval_s"] == 2.0


def test_a_document_served_twice_is_told_from_a_new_one() -> None:
    a = doc(10_000, 100)
    assert same_document(a, copy.deepcopy(a))
    assert not same_document(a, doc(10_001, 100))
    assert not same_document(a, doc(10_000, 100, run=4))  # another life of the broker
    assert not same_document(a, {**a, "served_by": 1})


def test_the_json_document_gains_rates() -> None:
    before, now = doc(10_000, 100), doc(12_000, 300)
    out = with_rates(now, before)
    assert out["rates"] == {
        "interval_s": 2.0,
        "brokers": {"0": {"records_produced": 100.0, "produce_bytes": 10_000.0}},
        "total": {"records_produced": 100.0, "produce_bytes": 10_000.0},
    }
    assert {k: v for k, v in out.items() if k != "rates"} == now
    assert with_rates(now, None)["rates"] == {"interval_s": None, "brokers": {}, "total": {}}
    # Another process served the second document: its interval is over the wall clocks.
    other = doc(500, 300, run=4, wall_ms=before["time_ms"] + 3_000)
    assert with_rates(other, before)["rates"]["interval_s"] == 3.0


def test_the_view_shows_down_brokers_lag_and_cuts_rows_when_live() -> None:
    before, now = doc(10_000, 100, up=False), doc(12_000, 300, up=False)
    full = text(render(now, copy.deepcopy(before)))
    assert "brokers up 1/2" in full and "DOWN" in full and "REQUEST_TIMED_OUT" in full
    assert "produce 100 rec/s 9.8 KiB/s" in full
    assert "billing" in full and "orders[0]" in full
    assert "__consumer_offsets" not in full  # internal topics left out
    assert "truncated by the broker: partitions" in full
    live = text(render(now, before, limit=5))
    assert "... and 25 more" in live and "orders[0]" in live


def test_once_asks_again_until_a_new_document_comes(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Polls closer than the broker's minimum interval bring its last document again: `--once`
    asks until a new one comes, and its rates are between two different collections."""
    first, new = doc(10_000, 100), doc(12_000, 300)
    served = [first, copy.deepcopy(first), copy.deepcopy(first), new]
    slept: list[float] = []
    monkeypatch.setattr(top_module, "fetch_status", lambda url, timeout=10.0: served.pop(0))
    monkeypatch.setattr(top_module.time, "sleep", slept.append)
    top_module.top("127.0.0.1:9095", interval=0.1, once=True, as_json=True)
    (line,) = capsys.readouterr().out.splitlines()
    out = json.loads(line)
    assert out["mono_ms"] == 12_000 and out["rates"]["brokers"] == {
        "0": {"records_produced": 100.0, "produce_bytes": 10_000.0}
    }
    assert not served and slept == [0.1, top_module.AGAIN_S, top_module.AGAIN_S]
