"""A consumer-group member as its own process, for the group fault tests: it processes
records (appends them to its log), commits after every batch, and logs what it owns.

`python -m tests.integration.group_member_proc BOOTSTRAP TOPIC GROUP LOG [SESSION_MS]`

The log has one JSON object per line, flushed at once (a SIGKILL loses nothing written):
{"ev": "assigned"|"revoked"|"lost", "tps": [[topic, partition], ...], "t": wall seconds},
{"ev": "rec", "p": partition, "o": offset, "v": value, "t": ...} for every record processed,
{"ev": "commit", "offsets": [[partition, offset], ...], "t": ...} after every commit that
succeeded. SIGTERM closes the consumer (it commits and leaves the group).
"""

from __future__ import annotations

import json
import signal
import sys
import time
from typing import IO

import trio

from consumers import Consumer
from consumers.errors import SluiceError


def _writer(path: str) -> tuple[IO[str], object]:
    f = open(path, "a", buffering=1)  # noqa: SIM115 (closed at exit)

    def log(**event: object) -> None:
        f.write(json.dumps({**event, "t": time.time()}) + "\n")
        f.flush()

    return f, log


async def main(bootstrap: str, topic: str, group: str, path: str, session_ms: int) -> None:
    f, log = _writer(path)

    def tps(parts: frozenset[tuple[str, int]]) -> list[list[object]]:
        return [[t, p] for t, p in sorted(parts)]

    async with Consumer(bootstrap, group_id=group, session_timeout_ms=session_ms) as c:
        c.subscribe(
            [topic],
            on_assigned=lambda parts: log(ev="assigned", tps=tps(parts)),  # type: ignore[misc]
            on_revoked=lambda parts: log(ev="revoked", tps=tps(parts)),  # type: ignore[misc]
            on_lost=lambda parts: log(ev="lost", tps=tps(parts)),  # type: ignore[misc]
        )
        with trio.open_signal_receiver(signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:

                async def stop() -> None:
                    async for _ in signals:
                        nursery.cancel_scope.cancel()
                        return

                nursery.start_soon(stop)
                while True:
                    records = await c.poll(timeout=0.5)
                    if not records:
                        continue
                    for r in records:
                        log(ev="rec", p=r.partition, o=r.offset, v=(r.value or b"").decode())
                    offsets = {(r.topic, r.partition): r.offset + 1 for r in records}
                    try:
                        await c.commit(offsets)
                    except SluiceError as e:
                        log(ev="commit_failed", error=str(e))
                        continue
                    log(ev="commit", offsets=[[p, o] for (_, p), o in sorted(offsets.items())])
    f.close()


if __name__ == "__main__":
    session = int(sys.argv[5]) if len(sys.argv) > 5 else 6000
    trio.run(main, sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], session)
