"""`GET /status.json` and `sluice top` against three real broker processes: any broker serves
the cluster-wide view (brokers, partitions with leaders and high watermarks, a consumer
group's committed offsets and lag, an open transaction, counters that give rates), a SIGKILLed
broker is shown down, and `sluice top --once` prints the same view (or its JSON with rates
from two polls), exits 1 when the broker cannot be reached and 2 for a bad address. The page
at `/` is the console's HTML."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import trio

from broker.runtime.console import CUT
from consumers import Producer
from tests.integration.cluster import Cluster
from tests.support.harness import free_port
from tests.support.lagging import lagging_group
from tests.support.sluice_cli import run_sluice
from tests.support.wait import poll_until_async

DOWN_WITHIN_S = 20.0
"""A killed broker's link drops at once and its status request times out after 1 s (of
ticks); the bound is generous so a loaded machine's slow ticks cannot fail the test, which
checks that it goes down, not how fast."""


def get(port: int, path: str) -> tuple[str, bytes]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return r.headers["Content-Type"], r.read()


async def status(port: int) -> Any:
    _, body = await trio.to_thread.run_sync(get, port, "/status.json")
    return json.loads(body)


def group_of(doc: Any, name: str) -> Any:
    return next((g for g in doc["groups"] if g["group_id"] == name), None)


def shows_everything(doc: Any) -> bool:
    orders = [p for p in doc["partitions"] if p["topic"] == "orders"]
    billing = group_of(doc, "billing")
    return (
        [b["up"] for b in doc["brokers"]] == [True, True, True]
        and len(orders) == 3
        and all(p["leader"] is not None and p["high_watermark"] is not None for p in orders)
        and billing is not None
        and billing["lag"] == 13  # 12 records after its commit, and the open transaction's
        and [t["transactional_id"] for t in doc["transactions"]] == ["tx-console"]
    )


async def test_status_json_and_top_show_the_cluster_and_a_killed_broker(
    cluster_factory: Callable[..., Cluster],
) -> None:
    c = cluster_factory(3, offsets_topic_partitions=4)
    await lagging_group(c.bootstrap)
    http = [b.http_port for b in c.brokers]
    async with Producer(c.bootstrap, transactional_id="tx-console") as txp:
        await txp.begin_transaction()
        await txp.send("orders", b"open", partition=1)
        await txp.flush()

        doc = await poll_until_async(
            lambda: status(http[1]), shows_everything, "the whole cluster in broker 1's view",
            timeout=20, interval=0.2,
        )  # fmt: skip
        assert doc["served_by"] == 1 and doc["controller"] in (0, 1, 2)
        assert sum(p["high_watermark"] for p in doc["partitions"] if p["topic"] == "orders") == 43
        # Every record acknowledged so far: 30 + 12 (lagging_group) and the open transaction's.
        assert sum(b["counters"]["records_produced"] for b in doc["brokers"]) == 43
        txn = doc["transactions"][0]
        assert txn["state"] == "ongoing" and txn["partitions"] == [
            {"topic": "orders", "partition": 1}
        ]
        # Any broker assembles the same cluster-wide view.
        other = await status(http[2])
        assert other["served_by"] == 2 and group_of(other, "billing")["lag"] == 13
        content_type, page = await trio.to_thread.run_sync(get, http[0], "/")
        assert content_type.startswith("text/html") and b"/status.json" in page

        # Rates: `top --once --json` polls twice, 2 s apart, while records are produced (it
        # starts once the producer has one acknowledged, so both polls see it producing).
        async with trio.open_nursery() as nursery:
            done, producing = trio.Event(), trio.Event()

            async def produce_until_done() -> None:
                async with Producer(c.bootstrap, linger_ms=0) as p:
                    i = 0
                    while not done.is_set():
                        await p.send_and_wait("orders", b"load%d" % i)
                        producing.set()
                        i += 1

            nursery.start_soon(produce_until_done)
            with trio.fail_after(30):
                await producing.wait()
            top = await trio.to_thread.run_sync(
                lambda: run_sluice(
                    "top", "--once", "--json", "--http", f"127.0.0.1:{http[0]}",
                    "--interval", "2", timeout=60,
                )
            )  # fmt: skip
            done.set()
        assert top.returncode == 0, top.stderr
        view = json.loads(top.stdout)
        assert view["rates"]["interval_s"] >= 1.5
        assert view["rates"]["total"]["records_produced"] > 0, view["rates"]
        assert view["rates"]["total"]["produce_bytes"] > 0, view["rates"]
        await txp.abort_transaction()

    text = await trio.to_thread.run_sync(
        lambda: run_sluice("top", "--once", "--http", f"127.0.0.1:{http[1]}", "--interval", "0.2")
    )
    assert text.returncode == 0, text.stderr
    out = text.stdout.decode()
    assert "brokers up 3/3" in out and "billing" in out and "orders[0]" in out, out

    # SIGKILL: the broker stops answering and is shown down, in every other broker's view.
    await trio.to_thread.run_sync(c.kill, 2)
    began = time.monotonic()
    doc = await poll_until_async(
        lambda: status(http[0]), lambda d: not d["brokers"][2]["up"], "broker 2 shown down",
        timeout=DOWN_WITHIN_S, interval=0.1,
    )  # fmt: skip
    took = time.monotonic() - began
    dead = doc["brokers"][2]
    # Down because its request went unanswered (timed out, or cut by the wall-clock guard
    # should the ticker lag) or because the metadata log already holds it failed.
    assert not dead["answered"] or not dead["alive"], dead
    if not dead["answered"]:
        assert dead["error"] in ("REQUEST_TIMED_OUT", CUT) and dead["counters"] is None, dead
    assert [b["up"] for b in doc["brokers"][:2]] == [True, True]
    print(f"broker 2 shown down {took:.2f}s after SIGKILL ({dead['error']}, alive={dead['alive']})")
    down = await trio.to_thread.run_sync(
        lambda: run_sluice("top", "--once", "--http", f"127.0.0.1:{http[1]}", "--interval", "0.2")
    )
    assert down.returncode == 0 and b"DOWN" in down.stdout, down.stdout


def test_top_reports_an_unreachable_broker_and_a_bad_address() -> None:
    port = free_port()
    r = run_sluice("top", "--once", "--http", f"127.0.0.1:{port}", "--interval", "0.1")
    assert r.returncode == 1
    assert f"cannot reach http://127.0.0.1:{port}/status.json" in r.stderr.decode(), r.stderr
    r = run_sluice("top", "--once", "--http", "nowhere")
    assert r.returncode == 2 and b"--http expects HOST:PORT" in r.stderr, r.stderr
