"""`sluice topic create|list|describe|alter|delete`.

`create` and `delete` take one topic name or several: the same options apply to each, the
topics are created (deleted) side by side, one line is printed per topic (stdout for those
that succeeded; stderr, "sluice: topic NAME: CODE: why", for those that failed) and the exit
code is the worst of them (0 all succeeded, 1 a failed operation, 2 bad usage). With one name
the output is as it always was ("sluice: CODE: why" on failure).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Annotated

import trio
import typer

from cli.common import (
    DEFAULT_BOOTSTRAP,
    Bootstrap,
    Json,
    Timeout,
    admin,
    exit_code,
    fail,
    parse_configs,
    plural,
    run,
    usage,
)
from cli.tables import print_line, print_table
from consumers import Admin, SluiceError, TopicDescription

app = typer.Typer(no_args_is_help=True, help="Create, list, describe, alter and delete topics.")

Names = Annotated[
    list[str],
    typer.Argument(metavar="NAME", help="Topic name (one or more).", show_default=False),
]
Outcome = TopicDescription | SluiceError | None
"""What became of one topic: its description (created), None (deleted) or the error."""


@app.command("create")
def create(
    names: Names,
    partitions: Annotated[
        int | None,
        typer.Option(
            "--partitions",
            min=1,
            metavar="N",
            show_default=False,
            help="Partitions of each topic. Default: the broker's default_partitions.",
        ),
    ] = None,
    replication_factor: Annotated[
        int | None,
        typer.Option(
            "--replication-factor",
            min=1,
            metavar="N",
            show_default=False,
            help="Replicas of each partition. Default: the broker's "
            "default_replication_factor. More than the brokers registered in the cluster is "
            "refused at once; more than those alive is retried until --timeout.",
        ),
    ] = None,
    config: Annotated[
        list[str] | None,
        typer.Option(
            "--config",
            metavar="KEY=VALUE",
            help="Topic setting (repeatable), e.g. max.message.bytes=1048576.",
        ),
    ] = None,
    bootstrap: Bootstrap = DEFAULT_BOOTSTRAP,
    timeout: Timeout = 30.0,
    as_json: Json = False,
) -> None:
    """Create one or more topics; returns once every partition of each has a leader."""
    settings = parse_configs(config)
    _distinct(names)

    async def one(a: Admin, name: str) -> Outcome:
        await a.create_topic(
            name, partitions, replication_factor, settings, timeout_ms=timeout * 1000
        )
        return await a.describe_topic(name)

    def report(desc: TopicDescription) -> str:
        if as_json:
            return json.dumps(_describe_json(desc))
        return (
            f"created topic {desc.name}: {plural(len(desc.partitions), 'partition')}, "
            f"replication factor {desc.replication_factor}"
        )

    _for_each(names, bootstrap, timeout, one, report)


@app.command("list")
def list_topics(
    bootstrap: Bootstrap = DEFAULT_BOOTSTRAP, timeout: Timeout = 30.0, as_json: Json = False
) -> None:
    """List the topics."""

    async def go() -> list[TopicDescription]:
        async with admin(bootstrap, timeout) as a:
            return await a.list_topics()

    topics = run(go)
    if as_json:
        rows = [
            {
                "name": t.name,
                "partitions": len(t.partitions),
                "replication_factor": t.replication_factor,
            }
            for t in topics
        ]
        typer.echo(json.dumps(rows))
        return
    print_table(
        ["TOPIC", "PARTITIONS", "REPLICATION"],
        [[t.name, str(len(t.partitions)), str(t.replication_factor)] for t in topics],
    )


@app.command("describe")
def describe(
    name: Annotated[str, typer.Argument(metavar="NAME", help="Topic name.")],
    bootstrap: Bootstrap = DEFAULT_BOOTSTRAP,
    timeout: Timeout = 30.0,
    as_json: Json = False,
) -> None:
    """Show a topic's partitions (leader, replicas, offsets) and settings."""

    async def go() -> TopicDescription:
        async with admin(bootstrap, timeout) as a:
            return await a.describe_topic(name)

    desc = run(go)
    if as_json:
        typer.echo(json.dumps(_describe_json(desc)))
        return
    print_table(
        ["PARTITION", "LEADER", "REPLICAS", "LOG START", "HIGH WATERMARK"],
        [
            [
                str(p.partition),
                _or_dash(p.leader),
                ",".join(map(str, p.replicas)),
                _or_dash(p.log_start_offset),
                _or_dash(p.high_watermark),
            ]
            for p in desc.partitions
        ],
        title=f"{desc.name} (replication factor {desc.replication_factor})",
    )
    for key, value in sorted(desc.config.items()):
        print_line(f"{key}={value}")


@app.command("alter")
def alter(
    name: Annotated[str, typer.Argument(metavar="NAME", help="Topic name.")],
    partitions: Annotated[
        int | None,
        typer.Option(
            "--partitions",
            min=1,
            metavar="N",
            help="The new partition count (more only: about 1/n of the keys move to each new "
            "partition, as the jump hash says).",
        ),
    ] = None,
    config: Annotated[
        list[str] | None,
        typer.Option("--config", metavar="KEY=VALUE", help="Set a topic setting (repeatable)."),
    ] = None,
    delete_config: Annotated[
        list[str] | None,
        typer.Option(
            "--delete-config", metavar="KEY", help="Reset a setting to its default (repeatable)."
        ),
    ] = None,
    bootstrap: Bootstrap = DEFAULT_BOOTSTRAP,
    timeout: Timeout = 30.0,
    as_json: Json = False,
) -> None:
    """Add partitions to a topic or change its settings; returns once every partition has a
    leader. A setting the broker would not enforce is refused."""
    settings = parse_configs(config)
    if partitions is None and not settings and not delete_config:
        raise usage("nothing to alter: give --partitions, --config or --delete-config")

    async def go() -> TopicDescription:
        async with admin(bootstrap, timeout) as a:
            await a.alter_topic(
                name,
                partitions=partitions,
                set_config=settings,
                delete_config=delete_config or (),
                timeout_ms=timeout * 1000,
            )
            return await a.describe_topic(name)

    desc = run(go)
    if as_json:
        typer.echo(json.dumps(_describe_json(desc)))
    else:
        shown = ", ".join(f"{k}={v}" for k, v in sorted(desc.config.items())) or "defaults"
        count = plural(len(desc.partitions), "partition")
        typer.echo(f"altered topic {name}: {count}; config {shown}")


@app.command("delete")
def delete(
    names: Names,
    bootstrap: Bootstrap = DEFAULT_BOOTSTRAP,
    timeout: Timeout = 30.0,
) -> None:
    """Delete one or more topics and their data."""
    _distinct(names)

    async def one(a: Admin, name: str) -> Outcome:
        await a.delete_topic(name, timeout_ms=timeout * 1000)
        return None

    _for_each(names, bootstrap, timeout, one)


def _distinct(names: list[str]) -> None:
    """Bad usage when a name is given twice (the second would fail, or do nothing)."""
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise usage(f"topic {', '.join(twice)} named more than once")


def _for_each(
    names: list[str],
    bootstrap: str,
    timeout: float,
    one: Callable[[Admin, str], Awaitable[Outcome]],
    report: Callable[[TopicDescription], str] | None = None,
) -> None:
    """Run `one` for every name side by side, print a line per name (in the order given)
    and exit with the worst code; `report` words a created topic's line."""

    async def go() -> list[Outcome]:
        outcomes: list[Outcome] = [None] * len(names)

        async def each(a: Admin, i: int) -> None:
            try:
                outcomes[i] = await one(a, names[i])
            except SluiceError as e:
                outcomes[i] = e

        async with admin(bootstrap, timeout) as a, trio.open_nursery() as nursery:
            for i in range(len(names)):
                nursery.start_soon(each, a, i)
        return outcomes

    outcomes = run(go)
    if len(names) == 1 and isinstance(outcomes[0], SluiceError):
        raise fail(str(outcomes[0]), exit_code(outcomes[0]))
    worst = 0
    for name, outcome in zip(names, outcomes, strict=True):
        if isinstance(outcome, SluiceError):
            worst = max(worst, exit_code(outcome))
            typer.echo(f"sluice: topic {name}: {outcome}", err=True)
        elif outcome is None:
            typer.echo(f"deleted topic {name}")
        elif report is not None:
            typer.echo(report(outcome))
    if worst:
        raise typer.Exit(worst)


def _or_dash(value: int | None) -> str:
    return "-" if value is None else str(value)


def _describe_json(desc: TopicDescription) -> dict[str, object]:
    return {
        "name": desc.name,
        "partitions": [
            {
                "partition": p.partition,
                "leader": p.leader,
                "replicas": list(p.replicas),
                "log_start_offset": p.log_start_offset,
                "high_watermark": p.high_watermark,
            }
            for p in desc.partitions
        ],
        "replication_factor": desc.replication_factor,
        "config": dict(desc.config),
    }
