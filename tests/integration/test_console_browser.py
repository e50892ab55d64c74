"""Acceptance: the status console in a real browser (Debian's headless Chromium, over the
DevTools protocol) against three broker processes. The page at broker 0's `/` shows the three
brokers up, the topic's partitions with their leaders and high watermarks, and the consumer
group's lag, read from the DOM; a screenshot is saved (its path printed). Then one broker is
SIGKILLed and the same page, without a reload, shows it DOWN."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from tests.integration.cluster import Cluster
from tests.support.browser import HeadlessChromium
from tests.support.lagging import lagging_group
from tests.support.wait import wait_until

DOWN_WITHIN_S = 20.0
"""The request to a dead broker times out after 1 s and the page polls every 1 s; the bound is
generous so a loaded machine cannot fail the test, which checks behaviour, not latency."""

SEEN = """(() => {
  const rows = (sel) => Array.from(document.querySelectorAll(sel));
  const billing = document.querySelector('#groups tr.group[data-group="billing"]');
  return {
    updates: Number(document.body.dataset.updates || 0),
    marker: window.sluiceTestMarker || null,
    brokers: rows("#brokers tbody tr").map((r) => [
      Number(r.dataset.broker), r.dataset.up === "true", r.cells[3].innerText.trim()]),
    partitions: rows('#partitions tbody tr[data-topic="orders"]').map((r) => [
      Number(r.dataset.partition), r.dataset.leader, r.dataset.highWatermark]),
    lag: billing ? billing.dataset.lag : null,
    lagText: billing ? billing.cells[6].innerText.trim() : null,
  };
})()"""


def test_the_console_shows_the_cluster_and_a_killed_broker_without_a_reload(
    cluster_factory: Callable[..., Cluster], tmp_path: Path
) -> None:
    began = time.monotonic()
    c = cluster_factory(3, offsets_topic_partitions=4)
    trio.run(lambda: lagging_group(c.bootstrap, partitions=3, consumed=30, behind=12))
    url = f"http://127.0.0.1:{c.brokers[0].http_port}/"
    with HeadlessChromium(tmp_path / "chromium") as browser:
        browser.navigate(url)
        seen: dict[str, Any] = {}

        def shows_the_cluster() -> bool:
            seen.update(browser.evaluate(SEEN))
            return (
                [(b[0], b[1], b[2]) for b in seen["brokers"]]
                == [(0, True, "UP"), (1, True, "UP"), (2, True, "UP")]
                and len(seen["partitions"]) == 3
                and all(leader != "none" and hw != "" for _, leader, hw in seen["partitions"])
                and seen["lag"] == "12"
                and seen["lagText"] == "12"
                and seen["updates"] >= 2  # rates need two polls
            )

        wait_until(shows_the_cluster, "the console to show the cluster", timeout=20,
                   interval=0.2, detail=lambda: seen)  # fmt: skip
        assert sum(int(hw) for _, _, hw in seen["partitions"]) == 42
        browser.evaluate("window.sluiceTestMarker = 'no reload'")
        shot = browser.screenshot(tmp_path / "console.png")
        print(f"\nconsole screenshot: {shot}")

        c.brokers[2].kill(signal.SIGKILL)
        killed = time.monotonic()
        updates = seen["updates"]

        def shows_broker_2_down() -> bool:
            seen.update(browser.evaluate(SEEN))
            return seen["brokers"][2][1:] == [False, "DOWN"]

        wait_until(shows_broker_2_down, "the console to show broker 2 down",
                   timeout=DOWN_WITHIN_S, interval=0.1, detail=lambda: seen)  # fmt: skip
        took = time.monotonic() - killed
        assert seen["marker"] == "no reload" and seen["updates"] > updates
        assert [b[1] for b in seen["brokers"][:2]] == [True, True]
        shot = browser.screenshot(tmp_path / "console-broker-2-down.png")
        print(f"console screenshot with broker 2 down ({took:.2f}s after SIGKILL): {shot}")
    print(f"acceptance test took {time.monotonic() - began:.1f}s")
