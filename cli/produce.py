"""`sluice produce TOPIC`: one record per stdin line; exits 0 only once all are acknowledged."""

from __future__ import annotations

import io
import sys
from collections.abc import AsyncIterator
from typing import Annotated

import trio
import typer

from cli.common import DEFAULT_BOOTSTRAP, Bootstrap, Timeout, fail, run
from consumers import BufferFull, Delivery, Producer

READ_BYTES = 1 << 16
PENDING_CHECK = 10_000
YIELD_EVERY = 256
"""send_nowait() is the fast path (no checkpoint per record); let the loop run this often."""


async def stdin_lines() -> AsyncIterator[bytes]:
    """Lines of stdin without their newline, read in chunks by a worker thread so the event
    loop keeps sending meanwhile."""
    stdin = sys.stdin.buffer
    read = stdin.read1 if isinstance(stdin, io.BufferedReader) else stdin.read
    rest = b""
    while True:
        chunk = await trio.to_thread.run_sync(read, READ_BYTES)
        if not chunk:
            break
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        for line in lines:
            yield line
    if rest:
        yield rest


def produce(
    topic: Annotated[str, typer.Argument(help="Topic to write to.")],
    key_separator: Annotated[
        str | None,
        typer.Option(
            "--key-separator", help="Split each line at the first SEP into key and value."
        ),
    ] = None,
    bootstrap: Bootstrap = DEFAULT_BOOTSTRAP,
    timeout: Timeout = 30.0,
) -> None:
    """Write one record per line of stdin (the line without its newline is the value)."""
    sep = key_separator.encode() if key_separator else None
    if key_separator == "":
        raise fail("--key-separator must not be empty", 2)

    async def go() -> int:
        count = 0
        async with Producer(bootstrap, delivery_timeout_s=max(timeout, 1.0)) as p:
            pending: list[Delivery] = []
            async for line in stdin_lines():
                key = None
                if sep is not None:
                    k, found, v = line.partition(sep)
                    if found:
                        key, line = k, v
                try:
                    pending.append(p.send_nowait(topic, line, key=key))
                except BufferFull:
                    pending.append(await p.send(topic, line, key=key))
                count += 1
                if count % YIELD_EVERY == 0:
                    await trio.lowlevel.checkpoint()
                if len(pending) >= PENDING_CHECK:
                    await _settle(pending)
                    pending = []
            await p.flush()
            await _settle(pending)
        return count

    run(go)


async def _settle(deliveries: list[Delivery]) -> None:
    for d in deliveries:
        await d.wait()  # raises the record's error: exit 1 with its message
