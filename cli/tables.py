"""The one table printer of the `sluice` commands.

On a terminal, a table is a rich table whose cells fold: a long name wraps onto the next line
of its cell, it is never cut or ellipsized (the table grows as it needs). Anywhere else (a
pipe, a file), it is plain text for `cut`, `awk` and `sort`: a header line, then one line per
row, cells separated by a tab; nothing truncated, no box drawing, no colour and no title (a
title is for the eye; what it says is in the rows or in the lines around the table).

Cells are literal text: a `str` is printed as it is (a group id like "team[bold]" stays
so), a rich `Text` keeps its style on a terminal and is its plain text elsewhere. `--json`
output does not come here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

__all__ = [
    "Cell",
    "is_terminal",
    "plain_lines",
    "print_line",
    "print_table",
    "rich_table",
    "styled",
]

Cell = str | Text
"""A table cell: literal text, or text with a style (shown on a terminal only)."""

_SEPARATORS = str.maketrans({"\t": " ", "\n": " ", "\r": " "})


def styled(text: str, style: str) -> Text:
    """`text` shown in `style` (e.g. "red") on a terminal, plain elsewhere."""
    return Text(text, style=style)


def is_terminal(console: Console) -> bool:
    """Whether `console` writes to a terminal (rich's own detection; tests force it with
    `Console(force_terminal=...)`)."""
    return console.is_terminal


def rich_table(
    headers: Sequence[str],
    rows: Iterable[Sequence[Cell]],
    *,
    title: str | None = None,
    caption: str | None = None,
) -> Table:
    """The terminal form: every column folds long cells instead of cutting them."""
    table = Table(title=title, caption=caption, title_justify="left")
    for header in headers:
        table.add_column(header, overflow="fold")
    for row in rows:
        table.add_row(*(cell if isinstance(cell, Text) else Text(cell) for cell in row))
    return table


def plain_lines(headers: Sequence[str], rows: Iterable[Sequence[Cell]]) -> list[str]:
    """The form for pipes and files: the header line, then one line per row, cells joined by
    tabs (a tab or line break inside a cell becomes a space)."""
    return [_joined(headers)] + [_joined(row) for row in rows]


def print_table(
    headers: Sequence[str],
    rows: Iterable[Sequence[Cell]],
    *,
    title: str | None = None,
    console: Console | None = None,
) -> None:
    """Print one table to `console` (default: stdout) in the form its output calls for (see
    the module doc); `title` is shown on a terminal only."""
    out = Console() if console is None else console
    if is_terminal(out):
        out.print(rich_table(headers, rows, title=title))
        return
    for line in plain_lines(headers, rows):
        out.file.write(line + "\n")
    out.file.flush()


def print_line(text: Cell, console: Console | None = None) -> None:
    """Print one line of text around a table: literal (no markup), never wrapped or cut."""
    out = Console() if console is None else console
    out.print(text, markup=False, highlight=False, soft_wrap=True)


def _joined(cells: Sequence[Cell]) -> str:
    return "\t".join(
        (cell.plain if isinstance(cell, Text) else cell).translate(_SEPARATORS) for cell in cells
    )
