"""`sluice txn list|describe|abort`: the operator's side of transactions.

`list` shows every open transaction (id, state, age, participants) and, per partition it
writes to, the last stable offset it holds back: read_committed readers stop there until it
ends. `abort` ends an open transaction without committing it: nothing of it becomes visible
and its producer is fenced (it must be created again). A pre-committed transaction cannot be
aborted: it commits.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Annotated

import typer
from rich.console import Console

from cli.common import DEFAULT_BOOTSTRAP, Bootstrap, Json, Timeout, admin, run, usage
from cli.group import iso_ms
from cli.tables import print_line, print_table
from consumers.admin import transactional_id_problem
from consumers.errors import TransactionalIdNotFoundError
from consumers.txn_admin import HeldBack, TransactionDetails, TransactionListing

app = typer.Typer(no_args_is_help=True, help="List, describe and abort transactions.")

Open = tuple[TransactionListing, TransactionDetails | None, list[HeldBack]]
"""An open transaction, its participants (None: its coordinator moved meanwhile) and the
offsets of its partitions."""


def age_s(start_ms: int, now_ms: int) -> float | None:
    return None if start_ms < 0 else max(0.0, (now_ms - start_ms) / 1000)


def held_json(h: HeldBack) -> dict[str, object]:
    return {
        "topic": h.topic,
        "partition": h.partition,
        "last_stable_offset": h.last_stable_offset,
        "high_watermark": h.high_watermark,
        "held": h.held,
    }


def details_json(d: TransactionDetails, held: Sequence[HeldBack], now_ms: int) -> dict[str, object]:
    return {
        "transactional_id": d.transactional_id,
        "state": d.state,
        "producer_id": d.producer_id,
        "producer_epoch": d.producer_epoch,
        "timeout_ms": d.timeout_ms,
        "start": iso_ms(d.start_ms) if d.start_ms >= 0 else None,
        "age_s": age_s(d.start_ms, now_ms),
        "coordinator": d.coordinator,
        "participants": [
            {"group": p.name} if p.is_group else {"topic": p.name, "partition": p.partition}
            for p in d.participants
        ],
        "partitions": [held_json(h) for h in held],
    }


def listing_json(rows: Sequence[Open], now_ms: int) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for t, d, held in rows:
        out.append(
            {
                "transactional_id": t.transactional_id,
                "state": t.state,
                "producer_id": t.producer_id,
                "age_s": age_s(t.start_ms, now_ms),
                "participants": t.participants,
                "coordinator": t.coordinator,
                "groups": [] if d is None else [p.name for p in d.participants if p.is_group],
                "partitions": [held_json(h) for h in held],
            }
        )
    return out


def _held_text(held: Sequence[HeldBack]) -> str:
    parts = []
    for h in held:
        lso = "?" if h.last_stable_offset is None else str(h.last_stable_offset)
        hw = "?" if h.high_watermark is None else str(h.high_watermark)
        parts.append(f"{h.topic}[{h.partition}] lso {lso}/hw {hw}")
    return ", ".join(parts) or "-"


def _age_text(start_ms: int, now_ms: int) -> str:
    age = age_s(start_ms, now_ms)
    return "-" if age is None else f"{age:.1f}s"


def print_listing(rows: Sequence[Open], now_ms: int, console: Console) -> None:
    """Open transactions as a table (see `cli.tables`)."""
    print_table(
        ["TRANSACTIONAL ID", "STATE", "AGE", "PARTICIPANTS", "HOLDS BACK"],
        [
            [t.transactional_id, t.state, _age_text(t.start_ms, now_ms), str(t.participants),
             _held_text(held)]
            for t, _, held in rows
        ],
        console=console,
    )  # fmt: skip


def print_details(
    d: TransactionDetails, held: Sequence[HeldBack], now_ms: int, console: Console
) -> None:
    """A line on the transaction, its groups, and its partitions as a table."""
    print_line(
        f"transaction {d.transactional_id}: {d.state}, producer {d.producer_id} epoch "
        f"{d.producer_epoch}, timeout {d.timeout_ms} ms, age {_age_text(d.start_ms, now_ms)}, "
        f"coordinator broker {d.coordinator}",
        console,
    )
    groups = [p.name for p in d.participants if p.is_group]
    if groups:
        print_line("groups: " + ", ".join(groups), console)
    if held:
        print_table(
            ["TOPIC", "PARTITION", "LAST-STABLE", "HIGH-WATERMARK", "HELD"],
            [
                [h.topic, str(h.partition), _dash(h.last_stable_offset),
                 _dash(h.high_watermark), _dash(h.held)]
                for h in held
            ],
            console=console,
        )  # fmt: skip


def _dash(value: int | None) -> str:
    return "-" if value is None else str(value)


def _partitions(d: TransactionDetails | None) -> list[tuple[str, int]]:
    return [] if d is None else [(p.name, p.partition) for p in d.participants if not p.is_group]


# --------------------------------------------------------------------------- commands


@app.command("list")
def list_transactions(
    bootstrap: Bootstrap = DEFAULT_BOOTSTRAP, timeout: Timeout = 30.0, as_json: Json = False
) -> None:
    """List open transactions: id, state, age, participants, and the last stable offsets
    they hold back."""

    async def go() -> list[Open]:
        async with admin(bootstrap, timeout) as a:
            rows: list[Open] = []
            for t in await a.list_transactions():
                d: TransactionDetails | None
                try:
                    d = await a.describe_transaction(t.transactional_id)
                except TransactionalIdNotFoundError:
                    d = None  # expired since it was listed: shown without participants
                rows.append((t, d, await a.held_back(_partitions(d))))
            return rows

    rows = run(go)
    now_ms = int(time.time() * 1000)
    if as_json:
        typer.echo(json.dumps(listing_json(rows, now_ms)))
    else:
        print_listing(rows, now_ms, Console())


@app.command("describe")
def describe(
    transactional_id: Annotated[
        str, typer.Argument(metavar="TRANSACTIONAL_ID", help="Transactional id.")
    ],
    bootstrap: Bootstrap = DEFAULT_BOOTSTRAP,
    timeout: Timeout = 30.0,
    as_json: Json = False,
) -> None:
    """Show a transactional id's producer, epoch, timeout and open transaction (its state,
    participants and the offsets it holds back)."""
    _check(transactional_id)

    async def go() -> tuple[TransactionDetails, list[HeldBack]]:
        async with admin(bootstrap, timeout) as a:
            d = await a.describe_transaction(transactional_id)
            return d, await a.held_back(_partitions(d))

    d, held = run(go)
    now_ms = int(time.time() * 1000)
    if as_json:
        typer.echo(json.dumps(details_json(d, held, now_ms)))
    else:
        print_details(d, held, now_ms, Console())


@app.command("abort")
def abort(
    transactional_id: Annotated[
        str, typer.Argument(metavar="TRANSACTIONAL_ID", help="Transactional id.")
    ],
    bootstrap: Bootstrap = DEFAULT_BOOTSTRAP,
    timeout: Timeout = 30.0,
) -> None:
    """Abort the id's open transaction (its producer is fenced and must be created again)."""
    _check(transactional_id)

    async def go() -> None:
        async with admin(bootstrap, timeout) as a:
            await a.abort_transaction(transactional_id)

    run(go)
    typer.echo(f"aborted the open transaction of {transactional_id}")


def _check(transactional_id: str) -> None:
    """Bad usage (exit 2) for an id the broker would refuse, before anything is sent."""
    problem = transactional_id_problem(transactional_id)
    if problem is not None:
        raise usage(problem)
