"""The status console on the broker's HTTP listener: `GET /` (one self-contained HTML page,
console.html) and `GET /status.json` (ClusterStatus, status.py), and the `status` peer
request every broker answers for it (status_report.py).

`/status.json` asks every registered broker, this one included (the local path), for its
report at once, each with a deadline of STATUS_DEADLINE_MS in ticks; a broker whose answer
has not come by then is shown down (see status.py for the rest of the rule). Collections are
rationed: one runs at a time (requests that arrive meanwhile share its result), and a request
within MIN_INTERVAL_S of the last collection's start is answered that collection's document,
kept encoded. So however many consoles and scripts poll, and however often, the cluster sees
at most one round of `status` requests, and this broker's loop one assembly, per
MIN_INTERVAL_S.

The `status` handler is a closure of this module: it reads the node (pure), this process's
clocks and its Prometheus counters (`read_counters`), runs inside the driver's loop and
answers at once with the report, built in one pass under the peer message bound and encoded
once; the same bytes answer every asker for REPORT_TTL_S (monotonic), so many consoles cost
each broker one report per REPORT_TTL_S.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Callable, Mapping
from importlib.resources import files

import trio
from prometheus_client import CollectorRegistry

from broker.core.peer_requests import DEFAULT_RETRY_TICKS, Answer, Inbound
from broker.runtime.driver import Driver
from broker.runtime.fault_log import FaultLog
from broker.runtime.http import JSON, HttpAnswer
from broker.runtime.status import BrokerAnswer, ClusterStatus, MetadataSnapshot
from broker.runtime.status_report import (
    STATUS,
    BrokerReport,
    ReportError,
    collect_report,
    report_body,
)
from broker.wire.errors import ErrorCode

log = logging.getLogger("sluice.console")

HTML = "text/html; charset=utf-8"
STATUS_DEADLINE_MS = 1000
"""How long a broker has to answer before it is shown down."""
MAX_BROKERS_ASKED = 256
MIN_INTERVAL_S = 0.5
"""A request within this long of the last collection's start gets that collection's
document (the page polls every second: each of its polls still gets a new one)."""
REPORT_TTL_S = 0.5
"""How long this broker answers `status` requests with the report it built last."""
CUT = "no answer (the request was cut)"
"""Why a broker is shown down when its request outlived `guard_s` (a stalled ticker)."""
FAILED = b'{"error": "the status could not be collected (see the log)"}\n'

COUNTERS: dict[str, tuple[str, Mapping[str, str]]] = {
    "records_produced": ("sluice_records_produced_total", {}),
    "records_fetched": ("sluice_records_fetched_total", {}),
    "produce_bytes": ("sluice_request_bytes_total", {"api": "produce"}),
    "fetch_bytes": ("sluice_response_bytes_total", {"api": "fetch"}),
    "request_bytes": ("sluice_request_bytes_total", {}),
    "response_bytes": ("sluice_response_bytes_total", {}),
}
"""Report counter -> (Prometheus sample, labels it must have), summed over other labels."""


def read_counters(registry: CollectorRegistry) -> dict[str, float]:
    """The cumulative counters of COUNTERS in this registry, or {} when it has none of them
    (a broker that does not count). A counter not counted yet (no labelled child) is 0: the
    broker's metrics register them together. Only the metrics named are collected, not the
    ones read at scrape time."""
    names = {name for name, _ in COUNTERS.values()}
    out: dict[str, float] = {}
    for metric in registry.restricted_registry(names).collect():
        for s in metric.samples:
            for key, (name, labels) in COUNTERS.items():
                if s.name == name and labels.items() <= s.labels.items():
                    out[key] = out.get(key, 0.0) + s.value
    return {key: out.get(key, 0.0) for key in COUNTERS} if out else {}


def console_page() -> str:
    """The console's HTML (package data next to this module)."""
    return files("broker.runtime").joinpath("console.html").read_text(encoding="utf-8")


class StatusConsole:
    """Serves `/` and `/status.json` for one broker, and answers `status` peer requests."""

    def __init__(
        self,
        driver: Driver,
        registry: CollectorRegistry,
        tick_ms: int,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.driver = driver
        self.registry = registry
        self.deadline_ticks = max(1, math.ceil(STATUS_DEADLINE_MS / tick_ms))
        self.guard_s = 2 * STATUS_DEADLINE_MS / 1000 + 1
        """Wall-clock cut of one request, should the ticker stall."""
        self.clock = clock
        """This process's monotonic clock, seconds (reports' `mono_ms`, the report cache)."""
        self.run = random.SystemRandom().getrandbits(52)
        """This process life's id in reports (an integer JavaScript holds exactly)."""
        self._page = console_page().encode()
        self._running: trio.Event | None = None
        self._last: tuple[int, bytes] | None = None
        """The last collection's answer: 200 and its document, or 500 when it failed."""
        self._last_began = -math.inf
        """When the last collection began (Trio's clock)."""
        self._report: tuple[float, bytes] | None = None
        """(when, body) of the last report this broker built for a `status` request."""
        self.collections = 0
        self.reports_built = 0
        self._faults = FaultLog(log)

    def register(self) -> None:
        self.driver.peer_requests.register(STATUS, self._answer)

    def _answer(self, request: Inbound) -> Answer:
        now = self.clock()
        cached = self._report
        if cached is None or not 0 <= now - cached[0] < REPORT_TTL_S:
            report = collect_report(
                self.driver.node,
                time_ms=_wall_ms(),
                run=self.run,
                mono_ms=math.floor(now * 1000),
                counters=read_counters(self.registry),
            )
            cached = self._report = (now, report_body(report))
            self.reports_built += 1
        return Answer(cached[1])

    # -- HTTP routes ------------------------------------------------------------------------

    def page(self) -> HttpAnswer:
        return 200, self._page, HTML

    async def status_json(self, params: Mapping[str, str]) -> HttpAnswer:
        running = self._running
        if running is not None:
            await running.wait()
        elif self._last is None or trio.current_time() - self._last_began >= MIN_INTERVAL_S:
            self._running = done = trio.Event()
            self._last_began = trio.current_time()
            self.collections += 1
            try:
                doc = await self.collect()
                self._last = 200, json.dumps(doc, separators=(",", ":")).encode()
            except Exception as e:  # a bug: answered, never allowed to end the listener
                self._faults.report("status collection", e)
                self._last = 500, FAILED
            finally:
                self._running = None
                done.set()
        assert self._last is not None
        status, body = self._last
        return status, body, JSON

    async def collect(self) -> dict[str, object]:
        """Ask every broker at once and assemble the document."""
        snapshot = MetadataSnapshot.of(self.driver.node)
        answers: dict[int, BrokerAnswer] = {}
        async with trio.open_nursery() as nursery:
            for broker in snapshot.broker_ids()[:MAX_BROKERS_ASKED]:
                nursery.start_soon(self._ask, broker, answers)
        snapshot = MetadataSnapshot.of(self.driver.node)  # what changed while asking
        return ClusterStatus(
            snapshot,
            answers,
            time_ms=_wall_ms(),
            run=self.run,
            mono_ms=math.floor(self.clock() * 1000),
        ).build()

    async def _ask(self, broker: int, answers: dict[int, BrokerAnswer]) -> None:
        began = trio.current_time()
        answers[broker] = BrokerAnswer(None, False, CUT)
        with trio.move_on_after(self.guard_s):
            result = await self.driver.peer_request(
                broker,
                STATUS,
                None,
                deadline_ticks=self.deadline_ticks,
                retry_ticks=min(DEFAULT_RETRY_TICKS, self.deadline_ticks),
            )
            ms = round((trio.current_time() - began) * 1000, 3)
            if result.error == ErrorCode.REQUEST_TIMED_OUT:
                answers[broker] = BrokerAnswer(None, False, result.error.name, ms)
            elif not result.ok:
                why = f"{result.error.name}: {result.message or ''}".rstrip(": ")
                answers[broker] = BrokerAnswer(None, True, why, ms)
            else:
                try:
                    report = BrokerReport.decode(result.body)
                except ReportError as e:
                    answers[broker] = BrokerAnswer(None, True, f"bad status report: {e}", ms)
                else:
                    answers[broker] = BrokerAnswer(report, True, None, ms)


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000
