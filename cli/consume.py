"""`sluice consume TOPIC`: print records, as text (one value per line), as JSON objects or
through a kcat-like template (`cli.consume_format`), from where `--offset` says
(`cli.consume_offsets`; the earliest record by default), until `--max-messages`, the end
(`--exit-at-end`) or a signal.

The topic and every partition named (`--partition`, `--offset P:SPEC`) are checked first: an
unknown topic fails at once (exit 1), a partition out of range is bad usage (exit 2); errors
while starting (no broker reachable, no leader) are retried until `--timeout`. Without a group
the consumer reads every partition of the topic (or the one `--partition` names).

With `--group G` it reads as a member of consumer group G (the group assigns the partitions;
`--offset` applies to the partitions the group has no committed offset for), committing as it
goes (auto-commit) and, when it stops (after --max-messages, at the end with -e, or on the first
SIGINT/SIGTERM), committing what it printed and leaving the group as the consumer closes; a
stop by signal exits 128 + the signal number. A second signal abandons the clean stop. A reader
of the output that goes away (`| head -1`) ends the command quietly with exit 0.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Literal

import trio
import typer

from cli.common import DEFAULT_BOOTSTRAP, Bootstrap, run, timeout_option, usage
from cli.consume_format import FormatError, Formatter, formatter
from cli.consume_offsets import (
    FORMS,
    EndWatch,
    OffsetPlan,
    SpecError,
    parse_offsets,
    start_at,
)
from consumers import Consumer, RebalanceCallback, SluiceError, TopicPartition
from consumers.cluster import parse_bootstrap
from consumers.offset_lookup import out_of_range

DEFAULT_SESSION_TIMEOUT_MS = 10_000
POLL_MS = 1000
"""How long one poll waits for records."""
END_POLL_MS = 200
"""The same with --exit-at-end: how soon the end is noticed when no record comes."""
CHUNK = 500
"""Records per poll (formatted and written at once) at most."""

Isolation = Literal["read_committed", "read_uncommitted"]


class _Usage(Exception):
    """Bad usage found once the topic is known (a partition out of range): exit 2."""


@dataclass(frozen=True, slots=True)
class _Options:
    """What the command line asked for, checked."""

    topic: str
    group: str | None
    partition: int | None
    plan: OffsetPlan
    render: Formatter
    max_messages: int | None
    exit_at_end: bool
    isolation: Isolation
    session_timeout_ms: int
    bootstrap: str
    timeout_s: float

    @property
    def timeout_ms(self) -> float:
        """--timeout in milliseconds: the bound of the lookups made while starting."""
        return self.timeout_s * 1000


def _note(message: str) -> None:
    typer.echo(f"sluice: {message}", err=True)


def _plan(offsets: list[str] | None, from_beginning: bool, partition: int | None) -> OffsetPlan:
    """The offset plan (bad usage for a bad spec or one naming a partition not read)."""
    try:
        plan = parse_offsets(offsets or [], from_beginning=from_beginning)
    except SpecError as e:
        raise usage(str(e)) from None
    stray = sorted(p for p in plan.partitions if p != partition)
    if partition is not None and stray:
        raise usage(
            f"--offset {stray[0]}:{plan.partitions[stray[0]]} names partition {stray[0]}, "
            f"which --partition {partition} does not read"
        )
    return plan


def _render(output: str) -> Formatter:
    try:
        return formatter(output)
    except FormatError as e:
        raise usage(str(e)) from None


def _bootstrap(bootstrap: str) -> str:
    try:
        parse_bootstrap(bootstrap)
    except ValueError as e:
        raise usage(f"--bootstrap: {str(e).removeprefix('bootstrap: ')}") from None
    return bootstrap


def _isolation(isolation: str) -> Isolation:
    if isolation == "read_committed":
        return "read_committed"
    if isolation == "read_uncommitted":
        return "read_uncommitted"
    raise usage(f"--isolation must be read_committed or read_uncommitted, got {isolation!r}")


def _consumer(opts: _Options) -> Consumer:
    """The consumer the options ask for (a group member with --group)."""
    if opts.group is None:
        return Consumer(opts.bootstrap, isolation=opts.isolation)
    return Consumer(
        opts.bootstrap,
        group_id=opts.group,
        session_timeout_ms=opts.session_timeout_ms,
        enable_auto_commit=True,
        isolation=opts.isolation,
    )


async def _partitions(c: Consumer, opts: _Options) -> list[TopicPartition]:
    """The partitions to read once the topic and every partition named exist (an unknown
    topic raises UnknownTopicError; a partition out of range is _Usage)."""
    count = len(await c.partitions_for(opts.topic, timeout_ms=opts.timeout_ms))
    named = set(opts.plan.partitions)
    if opts.partition is not None:
        named.add(opts.partition)
    for p in sorted(named):
        if p >= count:
            raise _Usage(out_of_range(opts.topic, p, count))
    chosen = range(count) if opts.partition is None else [opts.partition]
    return [(opts.topic, p) for p in chosen]


async def _read(c: Consumer, opts: _Options) -> None:
    """Print records, one write per poll, until --max-messages or (-e) the end."""
    out = sys.stdout.buffer
    watch = EndWatch(timeout_ms=opts.timeout_ms) if opts.exit_at_end else None
    wait_ms = POLL_MS if watch is None else END_POLL_MS
    limit = opts.max_messages
    seen = 0
    while limit is None or seen < limit:
        if watch is not None and await watch.reached(c):
            return
        want = CHUNK if limit is None else min(CHUNK, limit - seen)
        records = await c.poll(timeout_ms=wait_ms, max_records=want)
        if records:
            out.write(opts.render(records))
            out.flush()
            seen += len(records)
        await trio.lowlevel.checkpoint()


async def _read_alone(opts: _Options) -> None:
    async with _consumer(opts) as c:
        tps = await _partitions(c, opts)
        c.assign(tps)
        await start_at(c, tps, opts.plan, timeout_ms=opts.timeout_ms, note=_note)
        await _read(c, opts)


def _starter(c: Consumer, opts: _Options) -> RebalanceCallback:
    """on_assigned: partitions the group has no committed offset for start where --offset
    says (as auto.offset.reset would)."""

    async def assigned(tps: frozenset[TopicPartition]) -> None:
        committed = await c.committed(tps)
        fresh = [tp for tp in sorted(tps) if committed.get(tp) is None]
        await start_at(c, fresh, opts.plan, timeout_ms=opts.timeout_ms, note=_note)

    return assigned


class _Stop:
    """Graceful stop on SIGINT/SIGTERM: the first signal cancels `reading` (the consumer then
    commits and leaves as it closes), a second one cancels `everything`."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.reading = trio.CancelScope()
        self.everything = trio.CancelScope()

    async def watch(self, signals: AsyncIterator[int]) -> None:
        """Cancel `reading` at the first signal, `everything` at the second."""
        async for signum in signals:
            if self.signum is None:
                self.signum = signum
                self.reading.cancel()
            else:
                self.everything.cancel()


async def _member(opts: _Options, stop: _Stop) -> None:
    async with _consumer(opts) as c:
        await _partitions(c, opts)
        on_assigned = _starter(c, opts) if opts.plan else None
        c.subscribe([opts.topic], on_assigned=on_assigned)
        with stop.reading:
            await _read(c, opts)
    # Leaving `async with` normally (not cancelled) closes the consumer cleanly: it commits
    # the positions of what was printed and leaves the group.


async def _read_in_group(opts: _Options) -> int | None:
    """Read as a group member; returns the signal that stopped it, if any."""
    stop = _Stop()
    failure: BaseException | None = None
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stop.watch, signals)
            try:
                with stop.everything:
                    await _member(opts, stop)
            except (SluiceError, _Usage, BrokenPipeError) as e:
                failure = e  # raised below, not wrapped in the nursery's ExceptionGroup
            finally:
                nursery.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return stop.signum


def consume(
    topic: Annotated[str, typer.Argument(metavar="TOPIC", help="Topic to read.")],
    group: Annotated[
        str | None,
        typer.Option(
            "--group",
            help="Read as a member of this consumer group: partitions shared with its other "
            "members, offsets committed as it goes and when it stops.",
        ),
    ] = None,
    offsets: Annotated[
        list[str] | None,
        typer.Option(
            "--offset",
            "-o",
            metavar="SPEC",
            help=f"Where to start (repeatable; default: beginning): {FORMS}. With --group: "
            "only for partitions the group has no committed offset for (as auto.offset.reset); "
            "the others continue from their committed offset.",
        ),
    ] = None,
    from_beginning: Annotated[
        bool,
        typer.Option("--from-beginning", help="The same as --offset beginning (the default)."),
    ] = False,
    partition: Annotated[
        int | None,
        typer.Option("--partition", "-p", min=0, metavar="N", help="Read only partition N."),
    ] = None,
    exit_at_end: Annotated[
        bool,
        typer.Option(
            "--exit-at-end",
            "-e",
            help="Exit 0 once every partition read is at its end (the high watermark, or "
            "under read_committed the last stable offset, when it got there); with --group, "
            "every partition assigned, committing what was printed and leaving the group.",
        ),
    ] = False,
    max_messages: Annotated[
        int | None,
        typer.Option(
            "--max-messages",
            min=1,
            help="Exit 0 after N records. Fewer than N exist: without -e it waits for more "
            "(as kcat), with -e it prints those and exits at the end.",
        ),
    ] = None,
    output: Annotated[
        str,
        typer.Option(
            "--format",
            metavar="FORMAT",
            help="text (each value on its own line; the default), json (one object per "
            "record) or a template: %s value, %k key, %S value length, %K key length, "
            "%t topic, %p partition, %o offset, %T timestamp (ms), %h headers (k=v,k2=v2), "
            "%% a percent; escapes \\n \\t \\r \\\\ \\0. A template adds no newline: end it "
            "with \\n (e.g. '%k=%s\\n').",
        ),
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
    timeout: Annotated[
        float,
        timeout_option(
            "Seconds to keep retrying errors while starting (no broker reachable, a "
            "partition without a leader) before giving up with exit 1. Once reading, it "
            "waits for records as long as it runs."
        ),
    ] = 30.0,
) -> None:
    """Print records from the earliest on (Ctrl-C to stop); -e stops at the end,
    --max-messages after N."""
    render = _render(output)
    level = _isolation(isolation)
    if group is not None and partition is not None:
        raise usage("--group and --partition exclude each other: the group assigns partitions")
    if group is None and session_timeout_ms is not None:
        raise usage("--session-timeout-ms needs --group")
    opts = _Options(
        topic=topic,
        group=group,
        partition=partition,
        plan=_plan(offsets, from_beginning, partition),
        render=render,
        max_messages=max_messages,
        exit_at_end=exit_at_end,
        isolation=level,
        session_timeout_ms=session_timeout_ms or DEFAULT_SESSION_TIMEOUT_MS,
        bootstrap=_bootstrap(bootstrap),
        timeout_s=timeout,
    )
    try:
        if group is None:
            run(partial(_read_alone, opts))
            return
        signum = run(partial(_read_in_group, opts))
    except _Usage as e:
        raise usage(str(e)) from None
    if signum is not None:
        raise typer.Exit(128 + signum)
