"""The status console (broker/runtime/console.py, console.html) without sockets: the page is
one self-contained document (no external URL, script, style sheet or font), polls
/status.json in place, builds its rows without parsing data as HTML, and is package data of
the wheel; the report's counters are sums over labels of the Prometheus counters named; the
`status` handler builds one report per REPORT_TTL_S and answers everyone those bytes; and
`/status.json` over a fake driver: every broker asked once per collection however many
requests share it, no new collection within MIN_INTERVAL_S of the last one's start (its
encoded document served again), a silent broker down, a malformed report costing its
broker's row only, a stalled request cut, a failed collection answered 500."""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from prometheus_client import CollectorRegistry, Counter

from broker.core.node import BrokerNode
from broker.core.peer_requests import PeerRequests, PeerResult
from broker.runtime.console import (
    CUT,
    MIN_INTERVAL_S,
    REPORT_TTL_S,
    StatusConsole,
    console_page,
    read_counters,
)
from broker.runtime.status_report import STATUS, BrokerReport
from broker.wire.cbor import encode
from broker.wire.errors import ErrorCode
from tests.support.broker_harness import Broker, advertised

ROOT = Path(__file__).resolve().parents[2]


def test_the_page_is_self_contained_and_polls_status_json() -> None:
    page = console_page()
    assert page.startswith("<!doctype html>")
    assert 'fetch("/status.json"' in page and "setTimeout(poll" in page
    assert "location.reload" not in page
    # Nothing is loaded from anywhere but this broker: no URL with a scheme or protocol-
    # relative, no external script, style sheet, image, frame or font.
    assert not re.search(r"(?i)\b[a-z][a-z0-9+.-]*://", page), "a URL with a scheme"
    assert not re.search(r"""(?i)(src|href|action)\s*=\s*["']?(?!data:)[^"'\s>]""", page)
    assert not re.search(r"(?i)@import|url\(|<iframe|<img|<object|<embed", page)
    assert page.count("<script") == 1 and page.count("<style") == 1
    # Data goes into the DOM as text only.
    assert "innerHTML" not in page and "insertAdjacentHTML" not in page
    assert "document.write" not in page and "eval(" not in page


def test_the_page_is_package_data() -> None:
    """A non-editable install ships console.html next to console.py."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "console.html" in project["tool"]["setuptools"]["package-data"]["broker.runtime"]
    assert (ROOT / "broker" / "runtime" / "console.html").read_text() == console_page()


def test_counters_are_summed_over_labels_and_zero_until_counted() -> None:
    registry = CollectorRegistry(auto_describe=False)
    assert read_counters(registry) == {}  # a broker that counts nothing reports nothing
    produced = Counter("sluice_records_produced", "", ["topic"], registry=registry)
    requests = Counter("sluice_request_bytes", "", ["api"], registry=registry)
    Counter("sluice_response_bytes", "", ["api"], registry=registry).labels("produce").inc(11)
    Counter("unrelated", "", registry=registry).inc(1000)
    produced.labels("a").inc(5)
    produced.labels("b").inc(2)
    requests.labels("produce").inc(100)
    requests.labels("metadata").inc(30)
    assert read_counters(registry) == {
        "records_produced": 7.0,
        "records_fetched": 0.0,
        "produce_bytes": 100.0,
        "fetch_bytes": 0.0,
        "request_bytes": 130.0,
        "response_bytes": 11.0,
    }


# -- /status.json over a fake driver ------------------------------------------------------------


class FakeDriver:
    """What StatusConsole uses of the driver: the node, its peer requests (where the console
    registers its handler) and `peer_request`, answered by `reply(driver, dst)`."""

    def __init__(self, node: BrokerNode, reply: Reply) -> None:
        self.node = node
        self.peer_requests = PeerRequests(0, 1, 1)
        self.reply = reply
        self.asked: list[int] = []

    async def peer_request(
        self, dst: int, kind: str, body: object = None, **deadlines: int
    ) -> PeerResult:
        assert kind == STATUS and deadlines["deadline_ticks"] == 20  # 1 s at 50 ms ticks
        self.asked.append(dst)
        return await self.reply(self, dst)


Reply = Callable[[FakeDriver, int], Awaitable[PeerResult]]


def own_report(driver: FakeDriver) -> PeerResult:
    """Broker 0's answer to itself, through the real local path of its peer requests."""
    pr = driver.peer_requests
    pr.request(0, STATUS)
    results: list[PeerResult] = []
    while not results and pr.has_work():
        pr.run_local()
        results = pr.take_results()
    (result,) = results
    assert result.ok, result
    return result


def failed(dst: int, error: ErrorCode, body: object = None) -> PeerResult:
    return PeerResult(1, dst, STATUS, error, None, body)


class FakeClock:
    """The console's monotonic clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def console(reply: Reply, clock: FakeClock | None = None) -> tuple[StatusConsole, FakeDriver]:
    """A console over a booted node whose metadata also registers brokers 1 and 2 (alive)."""
    node = Broker().boot().node
    for i in (1, 2):
        node.meta.brokers[i] = advertised(i)
        node.meta.alive[i] = True
    driver = FakeDriver(node, reply)
    c = StatusConsole(
        driver,  # type: ignore[arg-type]
        CollectorRegistry(),
        tick_ms=50,
        clock=clock or FakeClock(),
    )
    c.register()
    return c, driver


async def own(driver: FakeDriver, dst: int) -> PeerResult:
    return own_report(driver)


def test_the_status_handler_answers_one_report_per_ttl() -> None:
    """Every asker within REPORT_TTL_S of the last build gets the same encoded bytes; then
    it is built again, with the clock's time as its monotonic `mono_ms`."""
    clock = FakeClock()
    c, driver = console(own, clock)
    first = own_report(driver).body
    assert isinstance(first, bytes)
    report = BrokerReport.decode(first)
    assert (report.node_id, report.run, report.mono_ms) == (0, c.run, 1_000_000)
    clock.now += REPORT_TTL_S / 2
    assert own_report(driver).body == first and c.reports_built == 1
    clock.now += REPORT_TTL_S / 2
    again = own_report(driver).body
    assert c.reports_built == 2 and BrokerReport.decode(again).mono_ms == 1_000_000 + 500
    clock.now -= 10  # a clock that goes back (a fake one) is not trusted: built again
    own_report(driver)
    assert c.reports_built == 3


async def test_requests_share_one_collection_and_silent_brokers_are_down() -> None:
    gate = trio.Event()

    async def reply(driver: FakeDriver, dst: int) -> PeerResult:
        await gate.wait()
        if dst == 1:
            return failed(1, ErrorCode.REQUEST_TIMED_OUT)
        if dst == 2:
            return failed(2, ErrorCode.NONE, encode({"version": 2, "node_id": "two"}))
        return own_report(driver)

    c, driver = console(reply)
    answers: list[tuple[int, str, str]] = []

    async def get() -> None:
        answers.append(await c.status_json({}))

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(get)
        await trio.testing.wait_all_tasks_blocked()
        gate.set()
    assert sorted(driver.asked) == [0, 1, 2]  # once each, for three requests
    assert len({body for _, body, _ in answers}) == 1 and answers[0][0] == 200
    assert c.collections == 1
    doc: Any = json.loads(answers[0][1])
    rows = {b["id"]: b for b in doc["brokers"]}
    assert (rows[0]["up"], rows[0]["answered"], rows[0]["error"]) == (True, True, None)
    assert (rows[1]["up"], rows[1]["answered"]) == (False, False)
    assert rows[1]["error"] == "REQUEST_TIMED_OUT"
    assert rows[2]["up"] and rows[2]["error"] == "bad status report: counters: expected a map"


async def test_a_stalled_request_is_cut_and_its_broker_shown_down(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def reply(driver: FakeDriver, dst: int) -> PeerResult:
        if dst == 2:
            await trio.sleep_forever()  # as if the driver's ticker had stalled
        return own_report(driver)

    c, _ = console(reply)
    began = trio.current_time()
    status, body, _ = await c.status_json({})
    assert status == 200 and trio.current_time() - began == pytest.approx(c.guard_s)
    doc: Any = json.loads(body)
    assert [b["up"] for b in doc["brokers"]] == [True, True, False]
    assert doc["brokers"][2]["error"] == CUT


async def test_no_collection_within_the_minimum_interval(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A client looping on /status.json gets the last document, the same bytes, until
    MIN_INTERVAL_S after the last collection began; then a new one runs."""
    c, driver = console(own)
    began = trio.current_time()
    status, first, _ = await c.status_json({})
    assert status == 200 and isinstance(first, bytes) and sorted(driver.asked) == [0, 1, 2]
    for _ in range(20):
        await trio.sleep(MIN_INTERVAL_S / 25)
        status, body, _ = await c.status_json({})
        assert status == 200 and body is first
    assert c.collections == 1 and len(driver.asked) == 3
    await trio.sleep_until(began + MIN_INTERVAL_S)
    status, body, _ = await c.status_json({})
    assert status == 200 and body is not first and c.collections == 2
    assert sorted(driver.asked) == [0, 0, 1, 1, 2, 2]
    doc: Any = json.loads(body)
    assert doc["run"] == c.run and doc["brokers"][0]["run"] == c.run


async def test_a_failed_collection_is_answered_500_and_the_next_one_runs(
    autojump_clock: trio.testing.MockClock,
) -> None:
    calls: list[int] = []

    async def reply(driver: FakeDriver, dst: int) -> PeerResult:
        calls.append(dst)
        if len(calls) == 1:
            raise RuntimeError("a bug")
        return own_report(driver)

    c, _ = console(reply)
    status, body, content_type = await c.status_json({})
    assert (status, content_type) == (500, "application/json") and "error" in json.loads(body)
    asked = len(calls)
    status, _, _ = await c.status_json({})  # within the interval: the same answer
    assert status == 500 and len(calls) == asked
    await trio.sleep(MIN_INTERVAL_S)
    status, body, _ = await c.status_json({})
    assert status == 200 and len(json.loads(body)["brokers"]) == 3
