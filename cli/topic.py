"""`sluice topic create|list|describe|alter|delete`."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from cli.common import (
    DEFAULT_BOOTSTRAP,
    Bootstrap,
    Json,
    Timeout,
    admin,
    parse_configs,
    run,
    usage,
)
from consumers import TopicDescription

app = typer.Typer(no_args_is_help=True, help="Create, list, describe, alter and delete topics.")


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Topic name.")],
    partitions: Annotated[int, typer.Option("--partitions", min=1, help="Partitions.")] = 1,
    replication_factor: Annotated[
        int, typer.Option("--replication-factor", min=1, help="Replicas of each partition.")
    ] = 1,
    config: Annotated[
        list[str] | None,
        typer.Option(
            "--config", help="Topic setting KEY=VALUE (repeatable), e.g. max.message.bytes=1048576."
        ),
    ] = None,
    bootstrap: Bootstrap = DEFAULT_BOOTSTRAP,
    timeout: Timeout = 30.0,
    as_json: Json = False,
) -> None:
    """Create a topic; returns once every partition has a leader."""
    settings = parse_configs(config)

    async def go() -> TopicDescription:
        async with admin(bootstrap, timeout) as a:
            await a.create_topic(name, partitions, replication_factor, settings, timeout_s=timeout)
            return await a.describe_topic(name)

    desc = run(go)
    if as_json:
        typer.echo(json.dumps(_describe_json(desc)))
    else:
        typer.echo(
            f"created topic {name}: {partitions} partitions, replication factor "
            f"{replication_factor}"
        )


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
    table = Table("TOPIC", "PARTITIONS", "REPLICATION")
    for t in topics:
        table.add_row(t.name, str(len(t.partitions)), str(t.replication_factor))
    Console().print(table)


@app.command("describe")
def describe(
    name: Annotated[str, typer.Argument(help="Topic name.")],
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
    table = Table(
        "PARTITION",
        "LEADER",
        "REPLICAS",
        "LOG START",
        "HIGH WATERMARK",
        title=f"{desc.name} (replication factor {desc.replication_factor})",
    )
    for p in desc.partitions:
        table.add_row(
            str(p.partition),
            "-" if p.leader is None else str(p.leader),
            ",".join(map(str, p.replicas)),
            "-" if p.log_start_offset is None else str(p.log_start_offset),
            "-" if p.high_watermark is None else str(p.high_watermark),
        )
    console = Console()
    console.print(table)
    for key, value in sorted(desc.config.items()):
        console.print(f"{key}={value}")


@app.command("alter")
def alter(
    name: Annotated[str, typer.Argument(help="Topic name.")],
    partitions: Annotated[
        int | None,
        typer.Option(
            "--partitions",
            min=1,
            help="The new partition count (more only: about 1/n of the keys move to each new "
            "partition, as the jump hash says).",
        ),
    ] = None,
    config: Annotated[
        list[str] | None,
        typer.Option("--config", help="Set a topic setting KEY=VALUE (repeatable)."),
    ] = None,
    delete_config: Annotated[
        list[str] | None,
        typer.Option("--delete-config", help="Reset a setting to its default (repeatable)."),
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
                timeout_s=timeout,
            )
            return await a.describe_topic(name)

    desc = run(go)
    if as_json:
        typer.echo(json.dumps(_describe_json(desc)))
    else:
        shown = ", ".join(f"{k}={v}" for k, v in sorted(desc.config.items())) or "defaults"
        typer.echo(f"altered topic {name}: {len(desc.partitions)} partitions; config {shown}")


@app.command("delete")
def delete(
    name: Annotated[str, typer.Argument(help="Topic name.")],
    bootstrap: Bootstrap = DEFAULT_BOOTSTRAP,
    timeout: Timeout = 30.0,
) -> None:
    """Delete a topic and its data."""

    async def go() -> None:
        async with admin(bootstrap, timeout) as a:
            await a.delete_topic(name, timeout_s=timeout)

    run(go)
    typer.echo(f"deleted topic {name}")


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
