"""`sluice leaders balance`: move partition leaderships back to their preferred replicas.

A partition's preferred leader is the first replica of its replica list. `balance` asks the
controller for a balancing pass now (ELECT_LEADERS; the controller also runs one every
`leader_balance_interval_s`): it asks the leader of each partition whose preferred replica is
alive, caught up and not leading to transfer leadership to it, a bounded number at a time.
It prints the transfers asked; `--wait` asks again until every partition whose preferred
replica is alive is led by it, and exits 1 if that has not happened by `--timeout`.

`--json` prints `{"transfers": [{"topic", "partition", "from", "to"}], "pending": [{"topic",
"partition", "leader", "preferred"}], "balanced"}` (pending: the partitions still off their
preferred leader when the command ended).
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from cli.common import DEFAULT_BOOTSTRAP, Bootstrap, Json, Timeout, admin, fail, plural, run
from cli.tables import print_line, print_table
from consumers import LeaderElection

app = typer.Typer(no_args_is_help=True, help="Balance partition leaders.")


@app.command("balance")
def balance(
    topic: Annotated[
        list[str] | None,
        typer.Option("--topic", help="Only this topic's partitions (repeatable; default all)."),
    ] = None,
    wait: Annotated[
        bool,
        typer.Option("--wait", help="Wait until every partition is led by its preferred replica."),
    ] = False,
    bootstrap: Bootstrap = DEFAULT_BOOTSTRAP,
    timeout: Timeout = 30.0,
    as_json: Json = False,
) -> None:
    """Ask the controller to move leaderships back to the preferred replicas now."""

    async def go() -> LeaderElection:
        async with admin(bootstrap, timeout) as a:
            return await a.elect_preferred_leaders(
                topic or None, wait=wait, timeout_ms=timeout * 1000
            )

    result = run(go)
    if as_json:
        typer.echo(json.dumps(election_json(result)))
    else:
        _print(result, wait)
    if wait and not result.balanced:
        raise fail(
            f"leaders not balanced after {timeout:g}s: {plural(len(result.pending), 'partition')} "
            f"still off their preferred replica ({_names(result)})"
        )


def election_json(result: LeaderElection) -> dict[str, object]:
    """The `--json` shape (see the module docstring)."""
    return {
        "transfers": [
            {"topic": t.topic, "partition": t.partition, "from": t.leader, "to": t.preferred}
            for t in result.transfers
        ],
        "pending": [
            {
                "topic": p.topic,
                "partition": p.partition,
                "leader": p.leader,
                "preferred": p.preferred,
            }
            for p in result.pending
        ],
        "balanced": result.balanced,
    }


def _names(result: LeaderElection, most: int = 5) -> str:
    shown = ", ".join(
        f"{p.topic}[{p.partition}] leader {p.leader} preferred {p.preferred}"
        for p in result.pending[:most]
    )
    more = len(result.pending) - most
    return shown + (f", and {more} more" if more > 0 else "")


def _print(result: LeaderElection, wait: bool) -> None:
    """The transfers asked (a table), then whether the leaders are balanced."""
    if result.transfers:
        print_table(
            ["TOPIC", "PARTITION", "FROM", "TO"],
            [
                [t.topic, str(t.partition), "-" if t.leader is None else str(t.leader),
                 str(t.preferred)]
                for t in result.transfers
            ],
            title="leadership transfers asked",
        )  # fmt: skip
    else:
        print_line("no transfer asked")
    if result.balanced:
        print_line("leaders balanced: every partition is led by its preferred replica")
    elif not wait:
        print_line(
            f"{plural(len(result.pending), 'partition')} still off their preferred replica "
            "(transfers complete in a moment; --wait waits for them)"
        )
