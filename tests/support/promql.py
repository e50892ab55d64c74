"""The PromQL in ops/: the Grafana dashboard's queries and the Prometheus alert rules, and a
small PromQL tokenizer that finds the vector selectors an expression reads.

`selectors(expr)` returns each vector selector (`name{matchers}` or a bare `name`) in the
order written: identifiers that are not functions or aggregations (followed by `(`, or an
aggregation followed by `by`/`without`), not keywords (`and`, `or`, `unless`, `bool`,
`offset`, `by`, `on`, ...) and not label names (inside `{...}`, or the label lists after
`by`, `without`, `on`, `ignoring`, `group_left`, `group_right`). Range and subquery brackets,
strings, numbers and durations are skipped. It is a tokenizer, not a parser: it trusts
Prometheus to reject bad syntax (the tests ask Prometheus itself to evaluate every
expression)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.support.sluice_cli import ROOT

DASHBOARD = ROOT / "ops" / "grafana" / "dashboards" / "sluice.json"
ALERTS = ROOT / "ops" / "prometheus" / "alerts.yml"

AGGREGATIONS = frozenset({
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile", "limitk", "limit_ratio",
})  # fmt: skip
LABEL_LIST_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
KEYWORDS = LABEL_LIST_KEYWORDS | {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"}

TOKEN = re.compile(
    r"""
    (?P<space>\s+|\#[^\n]*)
  | (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
  | (?P<number>(?:\d+(?:ms|[smhdwy]))+|0x[0-9a-fA-F]+|\d*\.?\d+(?:[eE][+-]?\d+)?)
  | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<op>==|!=|=~|!~|<=|>=|[-+*/%^<>=@,(){}\[\]:])
    """,
    re.VERBOSE,
)


@dataclass(frozen=True, slots=True)
class Token:
    kind: str
    text: str
    start: int
    end: int


def tokenize(expr: str) -> list[Token]:
    out: list[Token] = []
    pos = 0
    while pos < len(expr):
        m = TOKEN.match(expr, pos)
        if m is None:
            raise ValueError(f"cannot tokenize {expr[pos : pos + 20]!r} in {expr!r}")
        kind = m.lastgroup
        assert kind is not None
        if kind != "space":
            out.append(Token(kind, m.group(), m.start(), m.end()))
        pos = m.end()
    return out


@dataclass(frozen=True, slots=True)
class Selector:
    name: str
    """The metric name ("" for a selector of label matchers only, without __name__)."""
    text: str
    """The selector as written, with its label matchers (a valid expression by itself)."""


def selectors(expr: str) -> list[Selector]:
    """Every vector selector in `expr`, in order (see the module's docstring)."""
    tokens = tokenize(expr)
    out: list[Selector] = []
    i = 0
    n = len(tokens)

    def skip_to(closing: str, k: int) -> int:
        """The index after the `closing` bracket matching the opening one at k."""
        opening = tokens[k].text
        depth = 0
        while k < n:
            if tokens[k].text == opening:
                depth += 1
            elif tokens[k].text == closing:
                depth -= 1
                if depth == 0:
                    return k + 1
            k += 1
        raise ValueError(f"unbalanced {opening!r} in {expr!r}")

    while i < n:
        t = tokens[i]
        following = tokens[i + 1].text if i + 1 < n else ""
        if t.kind == "ident":
            if t.text in LABEL_LIST_KEYWORDS:
                i = skip_to(")", i + 1) if following == "(" else i + 1
                continue
            if (
                t.text in KEYWORDS
                or following == "("
                or (t.text in AGGREGATIONS and following in ("by", "without"))
            ):
                i += 1
                continue
            if following == "{":
                end = skip_to("}", i + 1)
                out.append(Selector(t.text, expr[t.start : tokens[end - 1].end]))
                i = end
            else:
                out.append(Selector(t.text, t.text))
                i += 1
        elif t.text == "{":
            end = skip_to("}", i)
            text = expr[t.start : tokens[end - 1].end]
            named = re.search(r"""__name__\s*=\s*["']([a-zA-Z_:][a-zA-Z0-9_:]*)["']""", text)
            out.append(Selector(named.group(1) if named else "", text))
            i = end
        elif t.text == "[":
            i = skip_to("]", i)
        else:
            i += 1
    return out


def metric_names(expr: str) -> set[str]:
    return {s.name for s in selectors(expr) if s.name}


COMPARISONS = frozenset({"==", "!=", ">", "<", ">=", "<="})


def is_threshold(expr: str) -> bool:
    """Whether `expr` compares (==, !=, >, <, >=, <= outside label matchers): an alert
    condition that selects nothing while all is well."""
    depth = 0
    for t in tokenize(expr):
        if t.text == "{":
            depth += 1
        elif t.text == "}":
            depth -= 1
        elif depth == 0 and t.text in COMPARISONS:
            return True
    return False


# -- the dashboard --------------------------------------------------------------------------


def load_dashboard(path: Path = DASHBOARD) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(path.read_text())
    return out


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, those inside collapsed rows too (rows themselves included)."""
    out: list[dict[str, Any]] = []
    for p in dashboard["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


@dataclass(frozen=True, slots=True)
class PanelQuery:
    panel: str
    ref: str
    expr: str


def dashboard_queries(dashboard: dict[str, Any]) -> list[PanelQuery]:
    """The PromQL of every panel target (those with an `expr`)."""
    return [
        PanelQuery(p["title"], t["refId"], t["expr"])
        for p in panels(dashboard)
        for t in p.get("targets", [])
        if "expr" in t
    ]


def variable_queries(dashboard: dict[str, Any]) -> dict[str, str]:
    """Template variable -> its Prometheus query (`label_values(selector, label)` form)."""
    out: dict[str, str] = {}
    for v in dashboard.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            q = v["query"]
            out[v["name"]] = q["query"] if isinstance(q, dict) else q
    return out


LABEL_VALUES = re.compile(r"^label_values\((.*),\s*([a-zA-Z_][a-zA-Z0-9_]*)\)$", re.S)

GRAFANA_VARIABLES = {
    "__rate_interval": "10s",
    "__interval": "5s",
    "__range": "1m",
    "__interval_ms": "5000",
    "__range_s": "60",
}
"""What the integration test puts in place of Grafana's built-in variables (Prometheus there
scrapes every second, so 10 s holds several samples)."""


def substitute(expr: str, dashboard: dict[str, Any]) -> str:
    """`expr` as Grafana would send it with every variable at "All" (its allValue, else
    `.*`) and the built-in intervals of GRAFANA_VARIABLES."""
    values = dict(GRAFANA_VARIABLES)
    for v in dashboard.get("templating", {}).get("list", []):
        values[v["name"]] = v.get("allValue") or ".*"

    def value(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        if name not in values:
            raise KeyError(f"undefined dashboard variable ${name} in {expr!r}")
        return values[name]

    pattern = r"\$\{([a-zA-Z_][a-zA-Z0-9_]*)(?::[a-z]+)?\}|\[\[([a-zA-Z_][a-zA-Z0-9_]*)\]\]"
    pattern += r"|\$([a-zA-Z_][a-zA-Z0-9_]*)"
    return re.sub(pattern, value, expr)


# -- the alert rules ------------------------------------------------------------------------


def load_rules(path: Path = ALERTS) -> list[dict[str, Any]]:
    """Every rule of every group, in order."""
    doc = yaml.safe_load(path.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]
