"""`sluice group list|describe|reset-offsets|delete`: the operator's side of consumer groups.

`reset-offsets` prints its plan (TOPIC PARTITION CURRENT NEW) and changes nothing unless
`--execute` is given; then it commits the plan, which the coordinator accepts only while the
group has no members (a group with live members is refused, exit 1).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console

from cli.common import DEFAULT_BOOTSTRAP, Bootstrap, Json, Timeout, admin, plural, run, usage
from cli.tables import print_line, print_table
from consumers.admin import (
    GroupDescription,
    GroupListing,
    OffsetReset,
    OffsetResetSpec,
    ResetStrategy,
)
from consumers.cluster import TopicPartition

app = typer.Typer(no_args_is_help=True, help="List, describe, reset and delete consumer groups.")

DRY_RUN = "dry run: nothing changed; add --execute to commit these offsets"


# --------------------------------------------------------------------------- argument parsing


def parse_topics(items: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """`--topic` values: "T" (every partition) or "T:0,2" -> topic -> sorted partitions
    (empty: every partition). A topic named twice gets the union; "T" anywhere means all."""
    if not items:
        raise usage("name at least one --topic T or --topic T:P,P")
    chosen: dict[str, set[int] | None] = {}
    for item in items:
        topic, sep, spec = item.partition(":")
        if not topic:
            raise usage(f"--topic expects T or T:P,P, got {item!r}")
        if not sep:
            chosen[topic] = None
            continue
        try:
            partitions = {int(p) for p in spec.split(",")}
        except ValueError:
            raise usage(
                f"--topic {item!r}: partitions must be numbers, as in {topic}:0,2"
            ) from None
        if any(p < 0 for p in partitions):
            raise usage(f"--topic {item!r}: partitions must be >= 0")
        if topic not in chosen:
            chosen[topic] = partitions
        elif (known := chosen[topic]) is not None:
            known.update(partitions)
    return {t: () if ps is None else tuple(sorted(ps)) for t, ps in chosen.items()}


def parse_datetime(text: str) -> int:
    """An ISO 8601 time with a zone ("2026-12-06T10:00:00Z", "...+01:00") -> milliseconds
    since the epoch. A time without a zone is refused: it would mean different instants on
    different machines."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise usage(f"--to-datetime: not an ISO 8601 time: {text!r}") from None
    if when.tzinfo is None:
        raise usage(f"--to-datetime {text!r} needs a time zone, e.g. {text}Z for UTC")
    ms = int(when.timestamp() * 1000)
    if ms < 0:
        raise usage(f"--to-datetime {text!r} is before 1970")
    return ms


def reset_spec(
    topics: Sequence[str],
    *,
    to_earliest: bool = False,
    to_latest: bool = False,
    to_offset: int | None = None,
    to_datetime: str | None = None,
    shift_by: int | None = None,
) -> OffsetResetSpec:
    """The spec the flags ask for: exactly one strategy (else bad usage) and the topics."""
    given: list[tuple[ResetStrategy, int | None]] = []
    if to_earliest:
        given.append(("to_earliest", None))
    if to_latest:
        given.append(("to_latest", None))
    if to_offset is not None:
        given.append(("to_offset", to_offset))
    if to_datetime is not None:
        given.append(("to_datetime", parse_datetime(to_datetime)))
    if shift_by is not None:
        given.append(("shift_by", shift_by))
    if len(given) != 1:
        flags = "--to-earliest, --to-latest, --to-offset N, --to-datetime TIME, --shift-by N"
        raise usage(f"give exactly one of {flags} ({len(given)} given)")
    strategy, value = given[0]
    return OffsetResetSpec(strategy=strategy, topics=parse_topics(topics), value=value)


# --------------------------------------------------------------------------- output


def iso_ms(ms: int | None) -> str | None:
    """Milliseconds since the epoch -> ISO 8601 UTC ("2026-12-06T10:00:00.000Z")."""
    if ms is None:
        return None
    text = datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")
    return text.removesuffix("+00:00") + "Z"


def format_partitions(tps: Iterable[TopicPartition]) -> str:
    """[("t", 0), ("t", 2), ("u", 1)] -> "t:0,2 u:1" (sorted)."""
    by_topic: dict[str, list[int]] = {}
    for topic, partition in sorted(tps):
        by_topic.setdefault(topic, []).append(partition)
    return " ".join(f"{t}:{','.join(map(str, ps))}" for t, ps in by_topic.items())


def _opt(value: object) -> str:
    """A table cell: "-" for None (cells are literal text: ids are never read as markup)."""
    return "-" if value is None else str(value)


def listing_json(groups: Sequence[GroupListing]) -> list[dict[str, object]]:
    return [{"group_id": g.group_id, "state": g.state, "members": g.members} for g in groups]


def description_json(d: GroupDescription) -> dict[str, object]:
    return {
        "group_id": d.group_id,
        "state": d.state,
        "assignor": d.assignor,
        "group_epoch": d.group_epoch,
        "rebalance_reason": d.rebalance_reason,
        "rebalance_time_ms": d.rebalance_time_ms,
        "members": [
            {
                "member_id": m.member_id,
                "instance_id": m.instance_id,
                "client_id": m.client_id,
                "client_host": m.client_host,
                "member_epoch": m.member_epoch,
                "topics": list(m.topics),
                "pattern": m.pattern,
                "assignment": [{"topic": t, "partition": p} for t, p in m.assignment],
                "revoking": [{"topic": t, "partition": p} for t, p in m.revoking],
            }
            for m in d.members
        ],
        "offsets": [
            {
                "topic": o.topic,
                "partition": o.partition,
                "committed": o.committed,
                "high_watermark": o.high_watermark,
                "lag": o.lag,
            }
            for o in d.offsets
        ],
    }


def plan_json(group_id: str, plan: Sequence[OffsetReset], executed: bool) -> dict[str, object]:
    return {
        "group_id": group_id,
        "executed": executed,
        "offsets": [
            {"topic": r.topic, "partition": r.partition, "current": r.current, "new": r.new}
            for r in plan
        ],
    }


def print_listing(groups: Sequence[GroupListing], console: Console) -> None:
    """The groups as a table (see `cli.tables`)."""
    print_table(
        ["GROUP", "STATE", "MEMBERS"],
        [[g.group_id, g.state, str(g.members)] for g in groups],
        console=console,
    )


def print_description(d: GroupDescription, console: Console) -> None:
    """A line on the group, its members and its offsets as tables (see `cli.tables`)."""
    print_line(
        f"group {d.group_id}: {d.state}, assignor {d.assignor or '-'}, epoch {d.group_epoch}, "
        f"{plural(len(d.members), 'member')}",
        console,
    )
    when = iso_ms(d.rebalance_time_ms)
    if when is not None:
        reason = f" ({d.rebalance_reason})" if d.rebalance_reason else ""
        print_line(f"last rebalance: {when}{reason}", console)
    if d.members:
        rows = []
        for m in d.members:
            owned = format_partitions(m.assignment) or "-"
            if m.revoking:
                owned += f" (revoking {format_partitions(m.revoking)})"
            rows.append(
                [
                    m.member_id,
                    _opt(m.instance_id),
                    _opt(m.client_id),
                    _opt(m.client_host),
                    str(m.member_epoch),
                    owned,
                ]
            )
        headers = ["MEMBER", "INSTANCE", "CLIENT", "HOST", "EPOCH", "PARTITIONS"]
        print_table(headers, rows, console=console)
    print_table(
        ["TOPIC", "PARTITION", "COMMITTED", "HIGH-WATERMARK", "LAG"],
        [
            [o.topic, str(o.partition), _opt(o.committed), _opt(o.high_watermark), _opt(o.lag)]
            for o in d.offsets
        ],
        console=console,
    )


def print_plan(plan: Sequence[OffsetReset], console: Console) -> None:
    """A reset plan as a table (see `cli.tables`)."""
    print_table(
        ["TOPIC", "PARTITION", "CURRENT", "NEW"],
        [[r.topic, str(r.partition), _opt(r.current), str(r.new)] for r in plan],
        console=console,
    )


# --------------------------------------------------------------------------- commands


@app.command("list")
def list_groups(
    bootstrap: Bootstrap = DEFAULT_BOOTSTRAP, timeout: Timeout = 30.0, as_json: Json = False
) -> None:
    """List the consumer groups: id, state and member count."""

    async def go() -> list[GroupListing]:
        async with admin(bootstrap, timeout) as a:
            return await a.list_groups()

    groups = run(go)
    if as_json:
        typer.echo(json.dumps(listing_json(groups)))
    else:
        print_listing(groups, Console())


@app.command("describe")
def describe(
    group: Annotated[str, typer.Argument(metavar="GROUP", help="Group id.")],
    bootstrap: Bootstrap = DEFAULT_BOOTSTRAP,
    timeout: Timeout = 30.0,
    as_json: Json = False,
) -> None:
    """Show a group's state, members and, per partition, committed offset and lag."""

    async def go() -> GroupDescription:
        async with admin(bootstrap, timeout) as a:
            return await a.describe_group(group)

    desc = run(go)
    if as_json:
        typer.echo(json.dumps(description_json(desc)))
    else:
        print_description(desc, Console())


@app.command("reset-offsets")
def reset_offsets(
    group: Annotated[str, typer.Argument(metavar="GROUP", help="Group id.")],
    topic: Annotated[
        list[str] | None,
        typer.Option(
            "--topic", help="T (every partition) or T:P,P (these partitions); repeatable."
        ),
    ] = None,
    to_earliest: Annotated[
        bool, typer.Option("--to-earliest", help="Move to the log start.")
    ] = False,
    to_latest: Annotated[
        bool, typer.Option("--to-latest", help="Move to the high watermark (skip everything).")
    ] = False,
    to_offset: Annotated[
        int | None, typer.Option("--to-offset", min=0, help="Move to this offset.")
    ] = None,
    to_datetime: Annotated[
        str | None,
        typer.Option(
            "--to-datetime",
            help="Move to the first record at or after this ISO 8601 time, e.g. "
            "2026-12-06T10:00:00Z (a zone is required).",
        ),
    ] = None,
    shift_by: Annotated[
        int | None,
        typer.Option(
            "--shift-by",
            help="Move by N (negative: back) from the committed offset (from the log start "
            "where none).",
        ),
    ] = None,
    execute: Annotated[
        bool, typer.Option("--execute", help="Commit the plan (default: only print it).")
    ] = False,
    bootstrap: Bootstrap = DEFAULT_BOOTSTRAP,
    timeout: Timeout = 30.0,
    as_json: Json = False,
) -> None:
    """Plan new offsets for a group (and with --execute, commit them if it has no live
    members); every new offset stays between the partition's log start and high watermark."""
    spec = reset_spec(
        topic or [],
        to_earliest=to_earliest,
        to_latest=to_latest,
        to_offset=to_offset,
        to_datetime=to_datetime,
        shift_by=shift_by,
    )

    async def go() -> list[OffsetReset]:
        async with admin(bootstrap, timeout) as a:
            plan = await a.reset_offsets_plan(group, spec)
            if execute:
                await a.reset_offsets(group, plan)
            return plan

    plan = run(go)
    if as_json:
        typer.echo(json.dumps(plan_json(group, plan, execute)))
        if not execute:
            typer.echo(DRY_RUN, err=True)
        return
    print_plan(plan, Console())
    if execute:
        typer.echo(f"committed {plural(len(plan), 'offset')} for group {group}")
    else:
        typer.echo(DRY_RUN)


@app.command("delete")
def delete(
    group: Annotated[str, typer.Argument(metavar="GROUP", help="Group id.")],
    bootstrap: Bootstrap = DEFAULT_BOOTSTRAP,
    timeout: Timeout = 30.0,
    as_json: Json = False,
) -> None:
    """Delete a group without live members, and its committed offsets."""

    async def go() -> None:
        async with admin(bootstrap, timeout) as a:
            await a.delete_group(group)

    run(go)
    if as_json:
        typer.echo(json.dumps({"group_id": group, "deleted": True}))
    else:
        typer.echo(f"deleted group {group}")
