"""The one table printer of the CLI (a rich table on a terminal, never cutting a name;
tab-separated lines elsewhere; `sluice top`'s view too), the help's flags, and counted
nouns."""

from __future__ import annotations

import io
import re
from typing import Any

import pytest
import typer
from rich.console import Console
from typer.core import TyperGroup
from typer.testing import CliRunner

from cli.common import plural
from cli.main import app
from cli.tables import plain_lines, print_line, print_table, styled
from cli.top import render_plain

LONG = "orders.eu-west-1.payments.settlement-confirmations-v2." + "x" * 60
BOX = set("━─┏┓┗┛┡┩└┘┳┻╇┼╋┃│┴┬├┤╭╮╰╯")


def terminal(width: int) -> Console:
    return Console(file=io.StringIO(), width=width, force_terminal=True, color_system=None)


def pipe() -> Console:
    return Console(file=io.StringIO(), width=40, force_terminal=False)


def written(console: Console) -> str:
    file = console.file
    assert isinstance(file, io.StringIO)
    return file.getvalue()


def test_on_a_terminal_a_long_name_folds_and_is_never_cut() -> None:
    console = terminal(40)
    print_table(["TOPIC", "PARTITIONS"], [[LONG, "12"], ["b", "1"]], title="t", console=console)
    out = written(console)
    assert "…" not in out and "..." not in out
    assert any(c in out for c in BOX)  # a rich table
    assert max(len(line) for line in out.splitlines()) <= 40
    cells = "".join(line.split("│")[1].strip() for line in out.splitlines() if line.count("│") >= 2)
    assert LONG in cells  # every character of the name, folded over several lines


def test_to_a_pipe_tab_separated_lines_header_first() -> None:
    console = pipe()
    print_table(
        ["TOPIC", "PARTITIONS", "STATUS"],
        [[LONG, "12", styled("failed", "red")], ["a\tb", "1", "alive"]],
        title="not shown",
        console=console,
    )
    out = written(console)
    assert out.splitlines() == [
        "TOPIC\tPARTITIONS\tSTATUS",
        f"{LONG}\t12\tfailed",
        "a b\t1\talive",  # a tab inside a cell cannot split it
    ]
    assert "\x1b[" not in out and not BOX & set(out) and "not shown" not in out


def test_cells_are_literal_text_never_markup() -> None:
    for console in (terminal(80), pipe()):
        print_table(["GROUP"], [["team[bold]x[/bold]"]], console=console)
        print_line("[red]literal[/red]", console)
        out = written(console)
        assert "team[bold]x[/bold]" in out and "[red]literal[/red]" in out


def test_plain_lines_of_an_empty_table_is_its_header() -> None:
    assert plain_lines(["A", "B"], []) == ["A\tB"]


def test_counted_nouns() -> None:
    assert [plural(n, "partition") for n in (0, 1, 2)] == [
        "0 partitions",
        "1 partition",
        "2 partitions",
    ]


def _commands(group: TyperGroup, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = [path]
    for name, command in group.commands.items():
        if isinstance(command, TyperGroup):
            out += _commands(command, (*path, name))
        else:
            out.append((*path, name))
    return out


def test_help_shows_flags_as_flags_in_every_command() -> None:
    """typer 0.29 printed `--json <bool>`; a flag takes no value, so none is shown."""
    root = typer.main.get_command(app)
    assert isinstance(root, TyperGroup)
    commands = _commands(root)
    assert ("topic", "list") in commands and ("broker", "drain") in commands
    runner = CliRunner()
    for path in commands:
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, (path, result.output)
        assert "<bool>" not in result.output, (path, result.output)
        help_line = re.search(r"--help\s+(\S+)", result.output)
        assert help_line is not None and help_line.group(1) == "Show", (path, result.output)
    listed = runner.invoke(app, ["topic", "list", "--help"], env={"COLUMNS": "200"}).output
    assert re.search(r"--json\s+Print JSON", listed), listed


@pytest.mark.parametrize("command", [["topic", "create"], ["topic", "delete"]])
def test_topic_create_and_delete_take_several_names(command: list[str]) -> None:
    out = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200"}).output
    assert "NAME" in out and "one or more" in out


def top_doc() -> dict[str, Any]:
    """A /status.json document: broker 0 up and serving, broker 1 down; one group."""
    broker = {
        "id": 0,
        "address": "127.0.0.1:9092",
        "up": True,
        "controller": True,
        "error": None,
        "incarnation": 7,
        "run": 3,
        "mono_ms": 1_000,
        "counters": None,
    }
    down = {
        **broker,
        "id": 1,
        "address": "127.0.0.1:9102",
        "up": False,
        "controller": False,
        "error": "REQUEST_TIMED_OUT",
        "incarnation": None,
        "run": None,
        "mono_ms": None,
    }
    part = {
        "topic": "orders",
        "partition": 0,
        "leader": 0,
        "replicas": [0, 1],
        "caught_up": [0],
        "high_watermark": 12,
        "last_stable_offset": 12,
        "commit_lag": 3,
    }
    offset = {"topic": "orders", "partition": 0, "committed": 8, "high_watermark": 12, "lag": 4}
    group = {
        "group_id": "billing",
        "state": "stable",
        "member_count": 1,
        "coordinator": 0,
        "lag": 4,
        "offsets": [offset],
    }
    return {"cluster_id": "c1", "controller": 0, "served_by": 0, "brokers": [broker, down],
            "topics": [{"name": "orders", "internal": False}], "partitions": [part],
            "groups": [group], "transactions": [], "truncated": {"partitions": True}}  # fmt: skip


def test_top_to_a_pipe_is_its_head_then_tab_separated_tables() -> None:
    out = render_plain(top_doc(), None)
    got = out.splitlines()
    assert "brokers up 1/2" in got[0] and got[1].startswith("produce - rec/s")
    assert got[2].split("\t")[:3] == ["BROKER", "ADDRESS", "STATUS"]
    assert got[3].split("\t")[:3] == ["0", "127.0.0.1:9092", "UP"]
    assert got[4].split("\t")[:3] == ["1", "127.0.0.1:9102", "DOWN"]
    assert got[6].split("\t") == ["orders", "0", "0", "0,1", "1/2", "12", "12", "3"]
    assert got[7] == "GROUP\tSTATE\tMEMBERS\tCOORDINATOR\tPARTITION\tCOMMITTED\tHW\tLAG"
    assert got[9].split("\t") == ["", "", "", "", "orders[0]", "8", "12", "4"]
    assert got[10:] == ["open transactions: none", "truncated by the broker: partitions"]
    assert "\x1b[" not in out and not BOX & set(out)
