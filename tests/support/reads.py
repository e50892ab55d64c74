"""Reading a topic back in tests: every value a consumer of a given isolation level reads from
the log start up to the end offsets it saw when it started (the last stable offsets for
read_committed), in the order each partition holds them."""

from __future__ import annotations

from typing import Literal

import trio

from consumers import Consumer


async def read_to_end(
    bootstrap: str,
    topic: str,
    partitions: int,
    isolation: Literal["read_committed", "read_uncommitted"] = "read_committed",
    *,
    timeout: float = 60.0,
) -> list[bytes]:
    """The values of `topic` (partitions 0..partitions-1) up to the end offsets; TooSlowError
    when the positions do not reach them within `timeout` seconds."""
    async with Consumer(bootstrap, isolation=isolation) as c:
        tps = [(topic, p) for p in range(partitions)]
        c.assign(tps)
        c.seek_to_end()
        ends = {tp: await c.position(tp) for tp in tps}
        c.seek_to_beginning()
        values: list[bytes] = []
        with trio.fail_after(timeout):
            while any([await c.position(tp) < end for tp, end in ends.items()]):
                values.extend(r.value or b"" for r in await c.poll(timeout=0.5))
        return values
