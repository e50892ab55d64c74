"""`sluice rebalance plan|execute|status|cancel` and `sluice broker drain|undrain`.

The controller plans: the fewest replica moves that even out replicas and preferred leaders
(first replicas) over the live brokers that are not draining, racks spread. `plan` shows the
moves and the layout they lead to and changes nothing; `execute` writes every move into the
metadata log at once and returns, or with `--wait` shows a progress bar per partition until
every partition has moved (exit 1 if that has not happened by `--timeout`). Replicas move one
Raft membership change at a time: the new replica catches up as a learner under the catch-up
throttle (`--throttle`, bytes/s with an optional K/M/G suffix, for every broker; 0: each
broker's own `catchup_bytes_per_s`), is promoted, then the old one is removed (after a
leadership transfer if it led). `status` lists the partitions moving; `cancel` sends every
one back to its replicas. `broker drain ID` moves everything off a broker and keeps it empty
until `broker undrain ID`; a broker that joins gets partitions by `rebalance execute`.

`--json` shapes: plan/execute/cancel/drain/undrain -> `{"moves": [{"topic", "partition", "old",
"new"}], "replica_counts": {broker: n}, "leader_counts": {broker: n}, "replicas_moved"}`;
status -> `{"reassignments": [{"topic", "partition", "replicas", "target", "caught_up",
"lag"}], "draining": [ids], "throttle_bytes_per_s"}`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn

from cli.common import (
    DEFAULT_BOOTSTRAP,
    Bootstrap,
    Json,
    Timeout,
    admin,
    fail,
    plural,
    run,
    usage,
)
from cli.tables import print_line, print_table
from consumers import Admin
from consumers.rebalance import ReassignmentStatus, RebalanceResult

app = typer.Typer(no_args_is_help=True, help="Move partition replicas between brokers.")
broker_app = typer.Typer(no_args_is_help=True, help="Drain a broker before maintenance.")
T = TypeVar("T")

_SIZE = re.compile(r"(\d+)\s*([kKmMgG]?)(i?[bB]?)(/s)?")
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}

Throttle = Annotated[
    str | None,
    typer.Option(
        "--throttle",
        metavar="RATE",
        help="Catch-up rate of every broker while replicas move, bytes/s (e.g. 20M; 0: "
        "each broker's own setting). Default: unchanged.",
    ),
]
Exclude = Annotated[
    list[int] | None,
    typer.Option(
        "--exclude", metavar="BROKER", help="Leave this broker out of the plan (repeatable)."
    ),
]
Wait = Annotated[
    bool, typer.Option("--wait", help="Show progress and return once every partition moved.")
]


def parse_rate(text: str | None) -> int | None:
    """'20M', '512k', '1G', '1048576' -> bytes/s (binary units); None stays None."""
    if text is None:
        return None
    m = _SIZE.fullmatch(text.strip())
    if m is None:
        raise usage(f"--throttle {text!r}: expected bytes/s, e.g. 1048576, 512K, 20M or 1G")
    return int(m.group(1)) * _UNITS[m.group(2).lower()]


@app.command("plan")
def plan(
    exclude: Exclude = None,
    bootstrap: Bootstrap = DEFAULT_BOOTSTRAP,
    timeout: Timeout = 30.0,
    as_json: Json = False,
) -> None:
    """Show the moves a rebalance would make and the layout they lead to (changes nothing)."""

    async def go(a: Admin) -> RebalanceResult:
        return await a.plan_rebalance(exclude=exclude or (), timeout_ms=timeout * 1000)

    _show(_ask(bootstrap, timeout, go), as_json, "planned")


@app.command("execute")
def execute(
    exclude: Exclude = None,
    throttle: Throttle = None,
    wait: Wait = False,
    bootstrap: Bootstrap = DEFAULT_BOOTSTRAP,
    timeout: Timeout = 30.0,
    as_json: Json = False,
) -> None:
    """Carry out the rebalancing plan (see `plan`)."""
    rate = parse_rate(throttle)

    async def go(a: Admin) -> RebalanceResult:
        return await a.rebalance(
            exclude=exclude or (), throttle_bytes_per_s=rate, timeout_ms=timeout * 1000
        )

    _execute(bootstrap, timeout, go, wait, as_json)


@app.command("status")
def status(
    bootstrap: Bootstrap = DEFAULT_BOOTSTRAP,
    timeout: Timeout = 30.0,
    as_json: Json = False,
) -> None:
    """List the partitions moving, the brokers draining and the throttle."""

    async def go(a: Admin) -> ReassignmentStatus:
        return await a.describe_reassignments(timeout_ms=timeout * 1000)

    result = _ask(bootstrap, timeout, go)
    if as_json:
        typer.echo(json.dumps(status_json(result)))
        return
    if result.reassignments:
        print_table(
            ["TOPIC", "PARTITION", "REPLICAS", "TARGET", "CAUGHT UP", "LAG"],
            [
                [r.topic, str(r.partition), _ids(r.replicas), _ids(r.target),
                 _ids(r.caught_up), "?" if r.lag < 0 else str(r.lag)]
                for r in result.reassignments
            ],
        )  # fmt: skip
    else:
        print_line("no reassignment in progress")
    if result.draining:
        print_line(f"draining: {_ids(result.draining)}")
    rate = result.throttle_bytes_per_s
    print_line(f"throttle: {'each broker own setting' if rate == 0 else f'{rate} bytes/s'}")


@app.command("cancel")
def cancel(
    throttle: Throttle = None,
    wait: Wait = False,
    bootstrap: Bootstrap = DEFAULT_BOOTSTRAP,
    timeout: Timeout = 30.0,
    as_json: Json = False,
) -> None:
    """Send every reassignment in progress back to its partition's replicas."""
    rate = parse_rate(throttle)

    async def go(a: Admin) -> RebalanceResult:
        return await a.cancel_reassignments(throttle_bytes_per_s=rate, timeout_ms=timeout * 1000)

    _execute(bootstrap, timeout, go, wait, as_json)


@broker_app.command("drain")
def drain(
    broker_id: Annotated[int, typer.Argument(help="The broker to empty.", min=0)],
    throttle: Throttle = None,
    wait: Wait = False,
    bootstrap: Bootstrap = DEFAULT_BOOTSTRAP,
    timeout: Timeout = 30.0,
    as_json: Json = False,
) -> None:
    """Move every replica and leadership off a broker; it gets none until `undrain`."""
    rate = parse_rate(throttle)

    async def go(a: Admin) -> RebalanceResult:
        return await a.drain_broker(broker_id, throttle_bytes_per_s=rate, timeout_ms=timeout * 1000)

    _execute(bootstrap, timeout, go, wait, as_json)


@broker_app.command("undrain")
def undrain(
    broker_id: Annotated[int, typer.Argument(help="The broker to use again.", min=0)],
    wait: Wait = False,
    bootstrap: Bootstrap = DEFAULT_BOOTSTRAP,
    timeout: Timeout = 30.0,
    as_json: Json = False,
) -> None:
    """Let a drained broker take replicas again, and rebalance onto it."""

    async def go(a: Admin) -> RebalanceResult:
        return await a.undrain_broker(broker_id, timeout_ms=timeout * 1000)

    _execute(bootstrap, timeout, go, wait, as_json)


def _ask(bootstrap: str, timeout: float, fn: Callable[[Admin], Awaitable[T]]) -> T:
    async def go() -> T:
        async with admin(bootstrap, timeout) as a:
            return await fn(a)

    return run(go)


def _execute(
    bootstrap: str,
    timeout: float,
    fn: Callable[[Admin], Awaitable[RebalanceResult]],
    wait: bool,
    as_json: bool,
) -> None:
    if not wait:
        _show(_ask(bootstrap, timeout, fn), as_json, "started")
        return

    async def go() -> tuple[RebalanceResult, ReassignmentStatus]:
        async with admin(bootstrap, timeout) as a:
            result = await fn(a)
            bars = None if as_json else _Bars(result)
            with bars or _NoBars():
                last = await a.wait_for_reassignments(
                    timeout_ms=timeout * 1000,
                    on_status=None if bars is None else bars.update,
                )
            return result, last

    result, last = run(go)
    _show(result, as_json, "done" if last.done else "started")
    if not last.done:
        raise fail(
            f"{plural(len(last.reassignments), 'partition')} still moving after {timeout:g}s "
            "(`sluice rebalance status` shows them; they keep moving)"
        )


class _NoBars:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


class _Bars:
    """A progress bar per partition moving: the commit lag of its slowest replica against
    the largest lag seen (the new replica's catch-up), complete once the move is recorded."""

    def __init__(self, result: RebalanceResult) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[state]}"),
            console=Console(stderr=True),
        )
        self.tasks: dict[tuple[str, int], TaskID] = {}
        self.worst: dict[tuple[str, int], int] = {}
        for m in result.moves:
            if m.added or m.removed:
                label = f"{m.topic}[{m.partition}] {_ids(m.old)} -> {_ids(m.new)}"
                self.tasks[(m.topic, m.partition)] = self.progress.add_task(
                    label, total=1.0, state="waiting"
                )

    def __enter__(self) -> _Bars:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def update(self, status: ReassignmentStatus) -> None:
        moving = {(r.topic, r.partition): r for r in status.reassignments}
        for key, task in self.tasks.items():
            r = moving.get(key)
            if r is None:
                self.progress.update(task, completed=1.0, state="done")
                continue
            worst = self.worst[key] = max(self.worst.get(key, 0), r.lag, 1)
            lag = max(r.lag, 0)
            state = "lag ?" if r.lag < 0 else f"lag {lag} entries"
            self.progress.update(task, completed=0.95 * (1 - lag / worst), state=state)


def _show(result: RebalanceResult, as_json: bool, what: str) -> None:
    """The moves (`what`: planned, started, done) and the layout they lead to, or JSON."""
    if as_json:
        typer.echo(json.dumps(result_json(result)))
        return
    if result.moves:
        print_table(
            ["TOPIC", "PARTITION", "FROM", "TO"],
            [[m.topic, str(m.partition), _ids(m.old), _ids(m.new)] for m in result.moves],
            title=f"moves {what}",
        )
        print_line(
            f"{plural(len(result.moves), 'partition')}, "
            f"{plural(result.replicas_moved, 'replica')} copied"
        )
    else:
        print_line("no move: the layout is balanced")
    counts, leaders = result.replica_counts, result.leader_counts
    print_table(
        ["BROKER", "REPLICAS", "PREFERRED LEADERS"],
        [[str(b), str(counts[b]), str(leaders.get(b, 0))] for b in sorted(counts)],
        title="layout after the moves",
    )


def _ids(ids: tuple[int, ...]) -> str:
    return ",".join(map(str, ids)) or "-"


def result_json(result: RebalanceResult) -> dict[str, object]:
    return {
        "moves": [
            {"topic": m.topic, "partition": m.partition, "old": list(m.old), "new": list(m.new)}
            for m in result.moves
        ],
        "replica_counts": {str(b): n for b, n in sorted(result.replica_counts.items())},
        "leader_counts": {str(b): n for b, n in sorted(result.leader_counts.items())},
        "replicas_moved": result.replicas_moved,
    }


def status_json(result: ReassignmentStatus) -> dict[str, object]:
    return {
        "reassignments": [
            {
                "topic": r.topic,
                "partition": r.partition,
                "replicas": list(r.replicas),
                "target": list(r.target),
                "caught_up": list(r.caught_up),
                "lag": r.lag,
            }
            for r in result.reassignments
        ],
        "draining": list(result.draining),
        "throttle_bytes_per_s": result.throttle_bytes_per_s,
    }
