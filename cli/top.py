"""`sluice top`: the status console's view in a terminal, polled from a broker's HTTP listener.

It reads `GET /status.json` (the cluster-wide document any broker assembles: brokers up or
down, partitions, consumer groups and their lag, open transactions, cumulative counters) every
`--interval` seconds and redraws in place on a terminal (else prints each view after the
last). On a terminal the view is rich tables (long names fold, never cut); to a pipe or a
file it is plain text: the head lines, then each table as tab-separated lines, header first
(`cli.tables`). Rates come from two successive documents: per broker, counter differences
over that broker's own monotonic clock (`mono_ms`; its wall clock may step), only between
two reports of one incarnation and process life (`run`); so `--once` polls twice,
`--interval` apart, prints one view and exits 0. A broker answers polls closer than its
minimum interval (about half a second) with the document it served last: a poll that brings
that document again is not a new view (nothing is printed; `--once` asks again until a new
one comes, for at most FETCH_TIMEOUT_S).

`--json` prints the document with `"rates": {"interval_s", "brokers": {id: {counter: per
second}}, "total": {...}}` added (one line per new document). A broker that cannot be
reached at the first poll is a failed operation (exit 1, the reason on stderr); later, the
last view stays with the error above it until the broker answers again.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Annotated, Any

import typer
from rich.console import Console, Group, RenderableType
from rich.text import Text

from cli.common import Json, fail, usage
from cli.tables import Cell, is_terminal, plain_lines, rich_table, styled

DEFAULT_HTTP = "127.0.0.1:9095"
RATE_COUNTERS = ("records_produced", "produce_bytes", "records_fetched", "fetch_bytes")
FETCH_TIMEOUT_S = 10.0
AGAIN_S = 0.2
"""How long `--once` waits before asking again when it got the first document twice."""
LIVE_ROWS = 20
"""Rows per table when redrawing a terminal (the rest are counted)."""
CLEAR = "\x1b[H\x1b[2J"

Doc = dict[str, Any]
Rates = dict[int, dict[str, float]]

Http = Annotated[
    str,
    typer.Option(
        "--http",
        envvar="SLUICE_HTTP",
        show_envvar=True,
        help="A broker's HTTP listener, HOST:PORT.",
    ),
]
Interval = Annotated[float, typer.Option("--interval", min=0.1, help="Seconds between two polls.")]
Once = Annotated[
    bool, typer.Option("--once", help="Poll twice (for rates), print one view and exit.")
]


class StatusUnavailable(Exception):
    """The broker's /status.json could not be read."""


def status_url(http: str) -> str:
    host, sep, port = http.rpartition(":")
    if not sep or not host or not port.isdecimal() or not 0 < int(port) < 65536:
        raise usage(f"--http expects HOST:PORT, got {http!r}")
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{int(port)}/status.json"


def fetch_status(url: str, timeout: float = FETCH_TIMEOUT_S) -> Doc:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            body = r.read()
    except urllib.error.HTTPError as e:
        raise StatusUnavailable(f"{url} answered HTTP {e.code}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise StatusUnavailable(f"cannot reach {url}: {reason}") from None
    try:
        doc = json.loads(body)
    except ValueError:
        raise StatusUnavailable(f"{url} did not answer JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("brokers"), list):
        raise StatusUnavailable(f"{url} did not answer a status document")
    return doc


def same_document(a: Doc, b: Doc) -> bool:
    """Whether two polls brought the same collection (the broker served its last again)."""
    return all(a.get(k) == b.get(k) for k in ("served_by", "run", "mono_ms", "time_ms"))


def broker_rates(before: Doc | None, now: Doc) -> Rates:
    """Per broker, counter name -> per second between the two documents: only for a broker
    whose report in both has the same incarnation and run and a later monotonic clock, and
    only counters that did not go back."""
    if before is None:
        return {}
    old = {b["id"]: b for b in before["brokers"] if b.get("counters") is not None}
    out: Rates = {}
    for b in now["brokers"]:
        p = old.get(b["id"])
        if b.get("counters") is None or p is None or b.get("mono_ms") is None:
            continue
        if (p["incarnation"], p.get("run")) != (b["incarnation"], b.get("run")):
            continue
        dt = (b["mono_ms"] - p["mono_ms"]) / 1000
        if dt <= 0:
            continue
        out[b["id"]] = {
            k: (v - p["counters"][k]) / dt
            for k, v in b["counters"].items()
            if k in p["counters"] and v >= p["counters"][k]
        }
    return out


def total_rates(rates: Rates) -> dict[str, float]:
    out: dict[str, float] = {}
    for r in rates.values():
        for k, v in r.items():
            out[k] = out.get(k, 0.0) + v
    return out


def with_rates(doc: Doc, before: Doc | None) -> Doc:
    """The document with `rates` added (see the module docstring)."""
    return {**doc, "rates": rates_of(doc, before)}


def rates_of(doc: Doc, before: Doc | None) -> dict[str, Any]:
    """The `rates` of the --json document: `interval_s` between the two documents (over the
    serving broker's monotonic clock when one process served both, else its wall clock)."""
    rates = broker_rates(before, doc)
    interval = None
    if before is not None:
        one_run = all(before.get(k) == doc.get(k) for k in ("served_by", "run"))
        key = "mono_ms" if one_run and doc.get("mono_ms") is not None else "time_ms"
        interval = (doc[key] - before[key]) / 1000
    return {
        "interval_s": interval,
        "brokers": {str(k): v for k, v in sorted(rates.items())},
        "total": total_rates(rates),
    }


# -- the view -------------------------------------------------------------------------------


def _rate(v: float | None) -> str:
    return "-" if v is None else (f"{v:,.0f}" if v >= 100 else f"{v:.1f}")


def _bytes(v: float | None) -> str:
    if v is None:
        return "-"
    for unit in ("B", "KiB", "MiB"):
        if v < 1024:
            return f"{v:.0f} {unit}" if unit == "B" else f"{v:.1f} {unit}"
        v /= 1024
    return f"{v:.1f} GiB"


def _n(v: object) -> str:
    return "-" if v is None else str(v)


Section = tuple[str, list[str], list[list[Cell]]]
"""One table of the view: its title, headers and rows."""


def _table(
    title: str, headers: list[str], rows: list[list[Cell]], limit: int | None
) -> RenderableType:
    """A table of `rows` (the first `limit` of them, the rest counted), or a line saying
    there are none."""
    if not rows:
        return Text(f"{title}: none", style="dim")
    caption = None if limit is None or len(rows) <= limit else f"... and {len(rows) - limit} more"
    return rich_table(
        headers, rows if limit is None else rows[:limit], title=title, caption=caption
    )


def render(doc: Doc, before: Doc | None, *, limit: int | None = None) -> RenderableType:
    """The view of one document (rates against `before`) for a terminal; `limit` caps each
    table's rows."""
    views: list[RenderableType] = [_head(doc, before)]
    views += [
        _table(title, headers, rows, limit) for title, headers, rows in _sections(doc, before)
    ]
    cut = _truncated(doc)
    if cut:
        views.append(Text(cut, style="yellow"))
    return Group(*views)


def render_plain(doc: Doc, before: Doc | None) -> str:
    """The view of one document for a pipe or a file: the head lines, then each table as
    tab-separated lines (header first, nothing cut; see `cli.tables`), or "TITLE: none"."""
    lines = _head(doc, before).plain.splitlines()
    for title, headers, rows in _sections(doc, before):
        lines += plain_lines(headers, rows) if rows else [f"{title}: none"]
    cut = _truncated(doc)
    if cut:
        lines.append(cut)
    return "\n".join(lines) + "\n"


def _head(doc: Doc, before: Doc | None) -> Text:
    rates = broker_rates(before, doc)
    total = total_rates(rates) if rates else {}
    up = sum(1 for b in doc["brokers"] if b["up"])
    return Text.assemble(
        ("sluice top", "bold"),
        f"  cluster {doc.get('cluster_id') or '(unknown)'}",
        f"  controller {_n(doc.get('controller'))}",
        f"  served by broker {doc['served_by']}",
        f"  brokers up {up}/{len(doc['brokers'])}\n",
        f"produce {_rate(total.get('records_produced'))} rec/s "
        f"{_bytes(total.get('produce_bytes'))}/s   "
        f"fetch {_rate(total.get('records_fetched'))} rec/s {_bytes(total.get('fetch_bytes'))}/s",
    )


def _sections(doc: Doc, before: Doc | None) -> list[Section]:
    rates = broker_rates(before, doc)
    internal = {t["name"] for t in doc["topics"] if t["internal"]}
    return [
        (
            "brokers",
            ["BROKER", "ADDRESS", "STATUS", "ROLE", "PRODUCE/S", "IN B/S", "FETCH/S", "OUT B/S",
             "NOTE"],
            [_broker_row(b, rates.get(b["id"], {})) for b in doc["brokers"]],
        ),
        (
            "partitions (internal topics left out)",
            ["TOPIC", "PARTITION", "LEADER", "REPLICAS", "IN SYNC", "HW", "LSO", "REPLICA LAG"],
            [_partition_row(p) for p in doc["partitions"] if p["topic"] not in internal],
        ),
        (
            "consumer groups",
            ["GROUP", "STATE", "MEMBERS", "COORDINATOR", "PARTITION", "COMMITTED", "HW", "LAG"],
            [row for g in doc["groups"] for row in _group_rows(g)],
        ),
        (
            "open transactions",
            ["TRANSACTIONAL ID", "STATE", "AGE", "COORDINATOR", "PARTITIONS"],
            [_txn_row(t) for t in doc["transactions"]],
        ),
    ]  # fmt: skip


def _truncated(doc: Doc) -> str:
    cut = [k for k, v in doc["truncated"].items() if v and k != "reports"]
    return f"truncated by the broker: {', '.join(cut)}" if cut else ""


def _broker_row(b: Mapping[str, Any], r: Mapping[str, float]) -> list[Cell]:
    return [
        str(b["id"]),
        b["address"],
        styled("UP", "green") if b["up"] else styled("DOWN", "bold red"),
        "controller" if b["controller"] else "",
        _rate(r.get("records_produced")),
        _bytes(r.get("produce_bytes")),
        _rate(r.get("records_fetched")),
        _bytes(r.get("fetch_bytes")),
        b.get("error") or "",
    ]


def _group_rows(g: Mapping[str, Any]) -> list[list[Cell]]:
    rows: list[list[Cell]] = [
        [g["group_id"], g["state"], str(g["member_count"]), _n(g["coordinator"]),
         "(all)", "", "", _n(g["lag"])]
    ]  # fmt: skip
    for o in g["offsets"]:
        where = f"{o['topic']}[{o['partition']}]"
        rows.append(["", "", "", "", where, str(o["committed"]), _n(o["high_watermark"]),
                     _n(o["lag"])])  # fmt: skip
    return rows


def _partition_row(p: Mapping[str, Any]) -> list[Cell]:
    behind = len(p["caught_up"]) < len(p["replicas"])
    in_sync = f"{len(p['caught_up'])}/{len(p['replicas'])}"
    return [
        p["topic"],
        str(p["partition"]),
        styled("none", "red") if p["leader"] is None else str(p["leader"]),
        ",".join(map(str, p["replicas"])),
        styled(in_sync, "yellow") if behind else in_sync,
        _n(p["high_watermark"]),
        _n(p["last_stable_offset"]),
        _n(p["commit_lag"]),
    ]


def _txn_row(t: Mapping[str, Any]) -> list[Cell]:
    age = "-" if t["age_s"] is None else f"{t['age_s']:.1f}s"
    where = [f"{p['topic']}[{p['partition']}]" for p in t["partitions"]] + t["groups"]
    return [
        t["transactional_id"],
        t["state"],
        age,
        _n(t["coordinator"]),
        ", ".join(where) or "-",
    ]


# -- the command ----------------------------------------------------------------------------


def top(
    http: Http = DEFAULT_HTTP,
    interval: Interval = 1.0,
    once: Once = False,
    as_json: Json = False,
) -> None:
    """Watch the cluster: brokers up or down, partitions, consumer group lag, open
    transactions and produce/fetch rates, from a broker's /status.json."""
    url = status_url(http)
    live = sys.stdout.isatty() and not once and not as_json
    console = Console(highlight=False)
    try:
        before = _first(url)
        if once:
            time.sleep(interval)
            doc = _first(url)
            until = time.monotonic() + FETCH_TIMEOUT_S
            while same_document(doc, before) and time.monotonic() < until:
                time.sleep(AGAIN_S)
                doc = _first(url)
            _show(console, doc, before, as_json=as_json, live=False)
            return
        _show(console, before, None, as_json=as_json, live=live)
        due = time.monotonic() + interval
        failing = False
        while True:
            time.sleep(max(0.0, due - time.monotonic()))
            due = time.monotonic() + interval
            try:
                doc = fetch_status(url)
            except StatusUnavailable as e:
                failing = True
                if as_json:
                    typer.echo(f"sluice: {e}", err=True)
                else:
                    _show(console, before, None, as_json=False, live=live, error=str(e))
                continue
            if same_document(doc, before) and not failing:
                continue  # the broker served its last document again: nothing new to show
            failing = False
            _show(console, doc, before, as_json=as_json, live=live)
            before = doc
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except BrokenPipeError:
        sys.stderr.close()
        raise typer.Exit(0) from None


def _first(url: str) -> Doc:
    try:
        return fetch_status(url)
    except StatusUnavailable as e:
        raise fail(str(e)) from None


def _show(
    console: Console,
    doc: Doc,
    before: Doc | None,
    *,
    as_json: bool,
    live: bool,
    error: str | None = None,
) -> None:
    if as_json:
        typer.echo(json.dumps(with_rates(doc, before)))
        return
    if not is_terminal(console):
        if error is not None:
            typer.echo(f"sluice: {error}; showing the last view", err=True)
        console.file.write(render_plain(doc, before))
        console.file.flush()
        return
    view = render(doc, before, limit=LIVE_ROWS if live else None)
    if error is not None:
        view = Group(Text(f"{error}; showing the last view", style="bold red"), view)
    if not live:
        console.print(view)
        return
    with console.capture() as captured:
        console.print(view)
    sys.stdout.write(CLEAR + captured.get())
    sys.stdout.flush()
