"""Rules on the whole import graph, beside the per-import allow-list of `tests.layering`.

`import_graph(root, tops)` maps every module under `root/<top>` to the project modules it
imports (every import counts, wherever it stands: inside functions, `if TYPE_CHECKING:`,
`try:`). `from a import b` is an import of module `a.b` when `a/b.py` (or `a/b/`) exists, else
of `a`; an import of `a.b.c` also imports the packages `a` and `a.b` (Python runs their
`__init__` first), so a package whose `__init__` imports its own submodules is not, by that
alone, a cycle: the edge from a submodule up to its package is left out, as Python resolves it
without re-entering the submodule.

The rules:
- no import cycle among the project's modules (`check_cycles`): each strongly connected
  component of more than one module is reported once, with one cycle through it;
- `broker.core.raft` imports nothing else of `broker.core` (`check_raft_isolated`): the Raft
  core is a library the broker uses, never the other way round;
- one test suite never imports another (`check_suites_isolated`): shared helpers live in
  `tests.support`, which imports no suite;
- no module of `broker.core` is over CORE_MAX_LINES lines (`check_core_sizes`), except the
  Raft node (one state machine that is easier to read whole): a core module that grows past
  it holds more than one responsibility and is split.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tests.layering import _module_name, _resolve

SUITES = ("tests.unit", "tests.sim", "tests.integration", "tests.fuzz", "tests.bench")
"""Test suites: each may import the project, `tests.support` and itself, no other suite."""
SUPPORT = "tests.support"
CORE_MAX_LINES = 600
CORE_SIZE_EXEMPT = frozenset({"broker/core/raft/node.py"})


@dataclass(frozen=True, order=True)
class GraphViolation:
    rule: str
    detail: str

    def __str__(self) -> str:
        return f"{self.rule}: {self.detail}"


Graph = dict[str, set[str]]


def import_graph(root: Path, tops: Iterable[str]) -> Graph:
    """module -> the project modules (under `tops`) it imports, itself and its own packages
    excluded."""
    files: dict[str, str] = {}
    paths: dict[str, Path] = {}
    for top in tops:
        base = root / top
        if base.is_dir():
            for path in sorted(base.rglob("*.py")):
                module, package = _module_name(root, path)
                files[module], paths[module] = package, path
    graph: Graph = {}
    for module, package in files.items():
        tree = ast.parse(paths[module].read_text(encoding="utf-8"), filename=str(paths[module]))
        edges: set[str] = set()
        for target in _targets(tree, package, files):
            known = _known(target, files)
            if known is None or known == module or module.startswith(known + "."):
                continue
            parts = known.split(".")
            for k in range(1, len(parts) + 1):
                p = ".".join(parts[:k])
                if p in files and p != module and not module.startswith(p + "."):
                    edges.add(p)
        graph[module] = edges
    return graph


def _targets(tree: ast.AST, package: str, files: dict[str, str]) -> set[str]:
    """Absolute names of what the tree imports: `from a import b` names `a.b` when that is a
    module, else `a`."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(package, node.level, node.module) if node.level else node.module
            if not base:
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out.add(sub if sub in files else base)
    return out


def _known(target: str, files: dict[str, str]) -> str | None:
    """The longest project module that is target or contains it."""
    t = target
    while t:
        if t in files:
            return t
        t = t.rpartition(".")[0]
    return None


def strongly_connected(graph: Graph) -> list[list[str]]:
    """Components of more than one module (Tarjan, iterative), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, list[str]]] = [(start, sorted(graph.get(start, ())))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            v, todo = work[-1]
            if todo:
                w = todo.pop()
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, sorted(graph.get(w, ()))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return sorted(out)


def _cycle_through(graph: Graph, comp: list[str]) -> list[str]:
    """One cycle inside a strongly connected component, from its first module back to it."""
    members = set(comp)
    start = comp[0]
    paths: dict[str, list[str]] = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph.get(v, ())):
                if w == start:
                    return [*paths[v], start]
                if w in members and w not in paths:
                    paths[w] = [*paths[v], w]
                    nxt.append(w)
        frontier = nxt
    return comp


def check_cycles(graph: Graph) -> list[GraphViolation]:
    return [
        GraphViolation("import cycle", " -> ".join(_cycle_through(graph, comp)))
        for comp in strongly_connected(graph)
    ]


def check_raft_isolated(graph: Graph) -> list[GraphViolation]:
    raft = "broker.core.raft"
    return sorted(
        GraphViolation("raft imports the broker core", f"{m} imports {t}")
        for m, targets in graph.items()
        if m == raft or m.startswith(raft + ".")
        for t in targets
        if t.startswith("broker.core")
        and not (t == raft or t.startswith(raft + "."))
        and t != "broker.core"
    )


def suite_of(module: str) -> str | None:
    for s in (*SUITES, SUPPORT):
        if module == s or module.startswith(s + "."):
            return s
    return None


def check_suites_isolated(graph: Graph) -> list[GraphViolation]:
    out = []
    for m, targets in graph.items():
        mine = suite_of(m)
        if mine is None:
            continue
        for t in targets:
            if any(other.startswith(t + ".") for other in targets):
                continue  # a package on the way to a module reported below
            theirs = suite_of(t)
            if theirs is not None and theirs != mine and theirs != SUPPORT:
                out.append(GraphViolation("one test suite imports another", f"{m} imports {t}"))
    return sorted(out)


def check_core_sizes(root: Path) -> list[GraphViolation]:
    out = []
    for path in sorted((root / "broker" / "core").rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        lines = len(path.read_text().splitlines())
        if lines > CORE_MAX_LINES and rel not in CORE_SIZE_EXEMPT:
            out.append(
                GraphViolation(
                    "core module too large", f"{rel} has {lines} lines (> {CORE_MAX_LINES})"
                )
            )
    return out


def check_graph(root: Path) -> list[GraphViolation]:
    """Every graph rule over the project and its tests."""
    graph = import_graph(root, ("broker", "consumers", "cli", "tests"))
    return (
        check_cycles(graph)
        + check_raft_isolated(graph)
        + check_suites_isolated(graph)
        + check_core_sizes(root)
    )
