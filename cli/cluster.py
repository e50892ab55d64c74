"""`sluice cluster status`: brokers, the controller, and every partition's replication state.

`--json` prints the contract's shape, `{"cluster_id", "controller", "brokers": [{"id",
"address", "rack", "alive"}], "partitions": [{"topic", "partition", "leader", "replicas",
"caught_up"}]}`, plus `leader_term` and `commit_lag` per partition (-1: unknown). Fields are
only ever added, never renamed.
"""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.text import Text

from cli.common import DEFAULT_BOOTSTRAP, Bootstrap, Json, Timeout, admin, run
from cli.tables import Cell, print_line, print_table, styled
from consumers import ClusterDescription

app = typer.Typer(no_args_is_help=True, help="Inspect the cluster.")


@app.command("status")
def status(
    bootstrap: Bootstrap = DEFAULT_BOOTSTRAP, timeout: Timeout = 30.0, as_json: Json = False
) -> None:
    """Show the brokers (alive or failed), the controller, and each partition's leader,
    replicas, caught-up replicas and commit lag."""

    async def go() -> ClusterDescription:
        async with admin(bootstrap, timeout) as a:
            return await a.describe_cluster()

    desc = run(go)
    if as_json:
        typer.echo(json.dumps(status_json(desc)))
        return
    _print_status(desc)


def status_json(desc: ClusterDescription) -> dict[str, object]:
    """The contract's JSON shape (see the module docstring)."""
    return {
        "cluster_id": desc.cluster_id,
        "controller": desc.controller,
        "brokers": [
            {"id": b.id, "address": b.address, "rack": b.rack, "alive": b.alive}
            for b in desc.brokers
        ],
        "partitions": [
            {
                "topic": p.topic,
                "partition": p.partition,
                "leader": p.leader,
                "replicas": list(p.replicas),
                "caught_up": list(p.caught_up),
                "leader_term": p.leader_term,
                "commit_lag": p.commit_lag,
            }
            for p in desc.partitions
        ],
    }


def _print_status(desc: ClusterDescription, console: Console | None = None) -> None:
    """The brokers and the partitions as tables (see `cli.tables`), after a line naming the
    cluster and its controller."""
    out = Console() if console is None else console
    controller = "none" if desc.controller is None else str(desc.controller)
    print_line(f"cluster {desc.cluster_id or '(unknown)'}, controller {controller}", out)
    brokers: list[list[Cell]] = []
    for b in desc.brokers:
        state = Text("alive") if b.alive else styled("failed", "red")
        if b.id == desc.controller:
            state.append(" (controller)")
        brokers.append([str(b.id), b.address, b.rack or "-", state])
    print_table(["BROKER", "ADDRESS", "RACK", "STATUS"], brokers, title="brokers", console=out)
    if not desc.partitions:
        print_line("no partitions", out)
        return
    partitions: list[list[Cell]] = []
    for p in desc.partitions:
        behind = set(p.replicas) - set(p.caught_up)
        caught_up = ",".join(map(str, p.caught_up)) or "-"
        partitions.append(
            [
                p.topic,
                str(p.partition),
                styled("none", "red") if p.leader is None else str(p.leader),
                ",".join(map(str, p.replicas)),
                styled(caught_up, "yellow") if behind and p.caught_up else caught_up,
                "-" if p.commit_lag < 0 else str(p.commit_lag),
            ]
        )
    print_table(
        ["TOPIC", "PARTITION", "LEADER", "REPLICAS", "CAUGHT UP", "COMMIT LAG"],
        partitions,
        title="partitions",
        console=out,
    )
