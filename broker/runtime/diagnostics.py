"""Diagnostics over HTTP that ask the broker's peers: `GET /peers/ping?broker=N`.

The broker sends a PING peer request to broker N (itself included: the local path) through
the same path every peer request takes (driver, peer link, the peer's driver and responder)
and answers, as JSON, how it ended: `{"broker", "error", "message", "answer", "ms"}`, with
`answer` the peer's node id, incarnation, the request kinds it serves and the echo of the
body, and `ms` the round trip. Status 200 for any outcome (a timeout is `"error":
"REQUEST_TIMED_OUT"` after PING_DEADLINE_TICKS), 400 for a bad query.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import trio

from broker.core.peer_codec import MAX_NODE_ID
from broker.core.peer_requests import PING
from broker.runtime.driver import Driver
from broker.runtime.http import JSON, TEXT

PING_DEADLINE_TICKS = 40
"""2 s at the default 50 ms tick."""


async def peer_ping(driver: Driver, params: Mapping[str, str]) -> tuple[int, str, str]:
    raw = params.get("broker", "")
    if not raw.isdecimal() or int(raw) > MAX_NODE_ID:
        return 400, "expected ?broker=NODE_ID\n", TEXT
    broker = int(raw)
    began = trio.current_time()
    result = await driver.peer_request(
        broker, PING, "diagnostics", deadline_ticks=PING_DEADLINE_TICKS
    )
    elapsed_ms = (trio.current_time() - began) * 1000
    body = {
        "broker": broker,
        "error": result.error.name,
        "message": result.message,
        "answer": result.body,
        "ms": round(elapsed_ms, 3),
    }
    return 200, json.dumps(body, default=repr) + "\n", JSON
