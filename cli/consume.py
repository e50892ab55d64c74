"""`sluice consume TOPIC`: print records, as text (one value per line) or as JSON objects.

With `--group G` it reads as a member of consumer group G (the group assigns the partitions),
committing as it goes (auto-commit) and, when it stops (after --max-messages, or on the first
SIGINT/SIGTERM), committing what it printed and leaving the group as the consumer closes; a
stop by signal exits 128 + the signal number. A second signal abandons the clean stop."""

from __future__ import annotations

import base64
import json
import signal
import sys
from collections.abc import AsyncIterator
from functools import partial
from typing import Annotated, Literal

import trio
import typer

from cli.common import DEFAULT_BOOTSTRAP, Bootstrap, Timeout, admin, run, usage
from consumers import Consumer, ConsumerRecord, SluiceError

FLUSH_EVERY = 1000
DEFAULT_SESSION_TIMEOUT_MS = 10_000


def _text_or_b64(data: bytes | None) -> tuple[str | None, str]:
    if data is None:
        return None, "utf-8"
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(data).decode(), "base64"


def as_json(r: ConsumerRecord) -> str:
    key, key_enc = _text_or_b64(r.key)
    value, value_enc = _text_or_b64(r.value)
    return json.dumps(
        {
            "topic": r.topic,
            "partition": r.partition,
            "offset": r.offset,
            "timestamp": r.timestamp,
            "key": key,
            "value": value,
            "key_encoding": key_enc,
            "value_encoding": value_enc,
            "headers": [[name, base64.b64encode(v).decode()] for name, v in r.headers],
        }
    )


class _Stop:
    """Graceful stop on SIGINT/SIGTERM: the first signal cancels `reading` (the consumer then
    commits and leaves as it closes), a second one cancels `everything`."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.reading = trio.CancelScope()
        self.everything = trio.CancelScope()

    async def watch(self, signals: AsyncIterator[int]) -> None:
        async for signum in signals:
            if self.signum is None:
                self.signum = signum
                self.reading.cancel()
            else:
                self.everything.cancel()


def consume(
    topic: Annotated[str, typer.Argument(help="Topic to read.")],
    group: Annotated[
        str | None,
        typer.Option(
            "--group",
            help="Read as a member of this consumer group: partitions shared with its other "
            "members, offsets committed as it goes and when it stops.",
        ),
    ] = None,
    from_beginning: Annotated[
        bool,
        typer.Option(
            "--from-beginning",
            help="Start at the oldest record, not the newest (with --group: where the group "
            "has committed nothing).",
        ),
    ] = False,
    partition: Annotated[
        int | None, typer.Option("--partition", min=0, help="Read only this partition.")
    ] = None,
    max_messages: Annotated[
        int | None, typer.Option("--max-messages", min=1, help="Stop after N records.")
    ] = None,
    output: Annotated[
        str,
        typer.Option("--format", help="text (one value per line) or json (one object per record)."),
    ] = "text",
    session_timeout_ms: Annotated[
        int | None,
        typer.Option(
            "--session-timeout-ms",
            min=1,
            help="With --group: how long the group waits for a silent member before it hands "
            f"its partitions to others (default {DEFAULT_SESSION_TIMEOUT_MS}).",
        ),
    ] = None,
    isolation: Annotated[
        str,
        typer.Option(
            "--isolation",
            help="read_committed (default: only committed transactions' records) or "
            "read_uncommitted (also open and aborted ones).",
        ),
    ] = "read_committed",
    bootstrap: Bootstrap = DEFAULT_BOOTSTRAP,
    timeout: Timeout = 30.0,
) -> None:
    """Print records as they arrive (Ctrl-C to stop), or the first N with --max-messages."""
    if output not in ("text", "json"):
        raise usage(f"--format must be text or json, got {output!r}")
    if isolation not in ("read_committed", "read_uncommitted"):
        raise usage(f"--isolation must be read_committed or read_uncommitted, got {isolation!r}")
    level: Literal["read_committed", "read_uncommitted"] = (
        "read_committed" if isolation == "read_committed" else "read_uncommitted"
    )
    if group is not None and partition is not None:
        raise usage("--group and --partition exclude each other: the group assigns partitions")
    if group is None and session_timeout_ms is not None:
        raise usage("--session-timeout-ms needs --group")
    reset: Literal["earliest", "latest"] = "earliest" if from_beginning else "latest"
    out = sys.stdout.buffer

    async def read(c: Consumer) -> None:
        seen = 0
        while max_messages is None or seen < max_messages:
            want = 500 if max_messages is None else min(500, max_messages - seen)
            records = await c.poll(timeout=1.0, max_records=want)
            chunk = []
            for r in records:
                if output == "json":
                    chunk.append(as_json(r).encode() + b"\n")
                else:
                    chunk.append((r.value or b"") + b"\n")
            if chunk:
                out.write(b"".join(chunk))
                out.flush()
            seen += len(records)
            await trio.lowlevel.checkpoint()

    async def go() -> None:
        async with admin(bootstrap, timeout) as a:
            await a.describe_topic(topic)  # an unknown topic or no broker: exit 1, not a hang
        async with Consumer(bootstrap, auto_offset_reset=reset, isolation=level) as c:
            if partition is None:
                c.subscribe([topic])
            else:
                c.assign([(topic, partition)])
            await read(c)

    async def go_group(group_id: str) -> int | None:
        """Read as a group member; returns the signal that stopped it, if any."""
        stop = _Stop()
        failure: SluiceError | None = None
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(stop.watch, signals)
                try:
                    with stop.everything:
                        await member(group_id, stop)
                except SluiceError as e:
                    failure = e  # raised below, not wrapped in the nursery's ExceptionGroup
                finally:
                    nursery.cancel_scope.cancel()
        if failure is not None:
            raise failure
        return stop.signum

    async def member(group_id: str, stop: _Stop) -> None:
        async with admin(bootstrap, timeout) as a:
            await a.describe_topic(topic)
        async with Consumer(
            bootstrap,
            group_id=group_id,
            session_timeout_ms=session_timeout_ms or DEFAULT_SESSION_TIMEOUT_MS,
            auto_offset_reset=reset,
            enable_auto_commit=True,
            isolation=level,
        ) as c:
            c.subscribe([topic])
            with stop.reading:
                await read(c)
        # Leaving `async with` normally (not cancelled) closes the consumer cleanly: it
        # commits the positions of what was printed and leaves the group.

    if group is None:
        run(go)
        return
    signum = run(partial(go_group, group))
    if signum is not None:
        raise typer.Exit(128 + signum)
