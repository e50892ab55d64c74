"""`sluice consume TOPIC`: print records, as text (one value per line) or as JSON objects."""

from __future__ import annotations

import base64
import json
import sys
from typing import Annotated, Literal

import trio
import typer

from cli.common import DEFAULT_BOOTSTRAP, Bootstrap, Timeout, admin, run, usage
from consumers import Consumer, ConsumerRecord

FLUSH_EVERY = 1000


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


def consume(
    topic: Annotated[str, typer.Argument(help="Topic to read.")],
    from_beginning: Annotated[
        bool, typer.Option("--from-beginning", help="Start at the oldest record, not the newest.")
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
    bootstrap: Bootstrap = DEFAULT_BOOTSTRAP,
    timeout: Timeout = 30.0,
) -> None:
    """Print records as they arrive (Ctrl-C to stop), or the first N with --max-messages."""
    if output not in ("text", "json"):
        raise usage(f"--format must be text or json, got {output!r}")
    reset: Literal["earliest", "latest"] = "earliest" if from_beginning else "latest"
    out = sys.stdout.buffer

    async def go() -> None:
        seen = 0
        async with admin(bootstrap, timeout) as a:
            await a.describe_topic(topic)  # an unknown topic or no broker: exit 1, not a hang
        async with Consumer(bootstrap, auto_offset_reset=reset) as c:
            if partition is None:
                c.subscribe([topic])
            else:
                c.assign([(topic, partition)])
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

    run(go)
