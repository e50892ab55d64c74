"""The layering rules of ARCHITECTURE.md as an allow-list, checked on the import graph.

`check_imports(root)` parses every `.py` file under `root/broker`, `root/consumers` and
`root/cli` with `ast` and reports each import the rules do not allow. What counts as an import:
`import a.b`, `from a import b` (relative ones resolved to absolute names), wherever they stand
(inside functions, `if TYPE_CHECKING:`, `try:`), and calls of `importlib.import_module(...)`,
`import_module(...)` and `__import__(...)`: with a literal name they are checked like any import,
with a computed name they are reported, because nothing could check them.

The layer of a module is the longest of LAYERS that is the module or a package containing it
(`broker` alone is only the package's `__init__`). A module in no layer is itself reported.
Every import is classified once, in this order:
  1. in a pure layer (PURE_LAYERS: broker.core, broker.wire, and the client's consumers.core
     and consumers.errors), a clock, randomness or I/O module (PURE_FORBIDDEN) is refused;
  2. standard library (`sys.stdlib_module_names`): allowed, except that a pure layer may use
     only PURE_STDLIB;
  3. the project (`broker`, `consumers`, `cli`): the target's layer must be in PROJECT_ALLOWED;
  4. anything else is third-party: its top-level name must be in THIRD_PARTY_ALLOWED.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SCANNED = ("broker", "consumers", "cli")

LAYERS = (
    "broker.wire",
    "broker.core",
    "broker.runtime",
    "broker.config",
    "broker.app",
    "broker",  # the package __init__ only
    "consumers.core",
    "consumers.errors",
    "consumers",
    "cli",
)

# An arrow = may import. Every layer may import itself.
PROJECT_ALLOWED: dict[str, frozenset[str]] = {
    "cli": frozenset({"consumers", "consumers.errors", "broker.app", "broker.config"}),
    "broker.app": frozenset({"broker.runtime", "broker.core", "broker.wire", "broker.config"}),
    "broker.config": frozenset({"broker.wire"}),
    "broker.runtime": frozenset({"broker.core", "broker.wire", "broker.config"}),
    "broker.core": frozenset({"broker.wire"}),
    "broker.wire": frozenset(),
    "consumers": frozenset({"broker.wire", "consumers.core", "consumers.errors"}),
    "consumers.core": frozenset({"broker.wire", "consumers.errors"}),
    "consumers.errors": frozenset({"broker.wire"}),
    "broker": frozenset(),
}

# Top-level import names of the third-party packages each layer may use.
_RUNTIME_THIRD_PARTY = frozenset(
    {"trio", "rocksdict", "opentelemetry", "prometheus_client", "cbor2"}
)
THIRD_PARTY_ALLOWED: dict[str, frozenset[str]] = {
    "broker.wire": frozenset({"cbor2"}),
    "broker.core": frozenset(),
    "broker.config": frozenset(),
    "broker.runtime": _RUNTIME_THIRD_PARTY,
    "broker.app": _RUNTIME_THIRD_PARTY,
    "broker": frozenset(),
    "consumers": frozenset({"trio", "cbor2", "opentelemetry"}),
    "consumers.core": frozenset(),
    "consumers.errors": frozenset(),
    "cli": frozenset({"typer", "rich", "trio", "click"}),
}

PURE_LAYERS = frozenset({"broker.core", "broker.wire", "consumers.core", "consumers.errors"})
"""Deterministic code: the broker's core and wire format, the client's decisions (driven by
the Trio shells and by the cluster simulator alike) and its error types."""

# The only standard-library modules a pure layer may import. `sys` is deliberately absent.
PURE_STDLIB = frozenset(
    {
        "__future__",
        "abc",
        "array",
        "base64",
        "binascii",
        "bisect",
        "collections",
        "contextlib",
        "copy",
        "dataclasses",
        "enum",
        "functools",
        "hashlib",
        "heapq",
        "io",
        "itertools",
        "json",
        "math",
        "numbers",
        "operator",
        "re",
        "string",
        "struct",
        "textwrap",
        "types",
        "typing",
        "unicodedata",
        "weakref",
        "zlib",
    }
)

# Named separately so that the message says why: these read a clock, draw randomness or do I/O.
PURE_FORBIDDEN = frozenset(
    {
        "asyncio",
        "concurrent",
        "datetime",
        "logging",
        "multiprocessing",
        "os",
        "pathlib",
        "random",
        "rocksdict",
        "secrets",
        "select",
        "selectors",
        "shutil",
        "signal",
        "socket",
        "ssl",
        "subprocess",
        "tempfile",
        "threading",
        "time",
        "trio",
        "uuid",
    }
)

DYNAMIC = "<dynamic>"


@dataclass(frozen=True, order=True)
class Violation:
    path: Path  # relative to the scanned root
    line: int
    module: str  # the imported module, absolute
    rule: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.module}: {self.rule}"


def layer_of(module: str) -> str | None:
    """The layer a project module belongs to, or None when it is in none."""
    for layer in sorted(LAYERS, key=len, reverse=True):
        if module == layer or (layer != "broker" and module.startswith(layer + ".")):
            return layer
    return None


def check_imports(root: Path) -> list[Violation]:
    """Every import under root/broker, root/consumers and root/cli that the rules forbid."""
    violations: list[Violation] = []
    for top in SCANNED:
        base = root / top
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*.py")):
            violations.extend(_check_file(root, path))
    return sorted(violations)


def _module_name(root: Path, path: Path) -> tuple[str, str]:
    """(module, package) of a source file: `a/b/__init__.py` -> ("a.b", "a.b")."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
        return ".".join(parts), ".".join(parts)
    return ".".join(parts), ".".join(parts[:-1])


def _check_file(root: Path, path: Path) -> Iterator[Violation]:
    rel = path.relative_to(root)
    module, package = _module_name(root, path)
    layer = layer_of(module)
    if layer is None:
        known = ", ".join(LAYERS)
        yield Violation(rel, 1, module, f"module {module} is in no layer (layers: {known})")
        return
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except SyntaxError as exc:
        yield Violation(rel, exc.lineno or 0, module, f"cannot parse: {exc.msg}")
        return
    seen: set[tuple[int, str]] = set()
    for line, target, error in _imports(tree, package):
        if (line, target) in seen:
            continue
        seen.add((line, target))
        rule = error or _judge(layer, target)
        if rule is not None:
            yield Violation(rel, line, target, rule)


def _resolve(package: str, level: int, name: str | None) -> str | None:
    """Absolute name of a relative import; None when it climbs above the top-level package."""
    parts = package.split(".") if package else []
    if level - 1 >= len(parts):
        return None
    base = parts[: len(parts) - (level - 1)]
    return ".".join([*base, name] if name else base)


def _imports(tree: ast.AST, package: str) -> Iterator[tuple[int, str, str | None]]:
    """(line, absolute module, error or None) for every import in the tree."""
    climb = "relative import climbs above the top-level package"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, None
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                resolved = _resolve(package, node.level, node.module)
                if resolved is None:
                    yield node.lineno, "." * node.level + (node.module or ""), climb
                    continue
                base = resolved
            else:
                base = node.module or ""
            for alias in node.names:
                yield node.lineno, _from_target(base, alias.name), None
        elif isinstance(node, ast.Call) and _is_dynamic_import(node.func):
            arg = node.args[0] if node.args else None
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                name = arg.value
                if name.startswith("."):
                    level = len(name) - len(name.lstrip("."))
                    resolved = _resolve(package, level, name.lstrip(".") or None)
                    if resolved is None:
                        yield node.lineno, name, climb
                        continue
                    name = resolved
                yield node.lineno, name, None
            else:
                yield node.lineno, DYNAMIC, "dynamic import of a computed name cannot be checked"


def _from_target(base: str, name: str) -> str:
    """`from base import name`: the submodule when it lies in a more specific layer."""
    if name != "*" and _top(base) in SCANNED:
        candidate = f"{base}.{name}"
        if layer_of(candidate) not in (None, layer_of(base)):
            return candidate
    return base


def _is_dynamic_import(func: ast.expr) -> bool:
    if isinstance(func, ast.Name):
        return func.id in ("__import__", "import_module")
    return (
        isinstance(func, ast.Attribute)
        and func.attr == "import_module"
        and isinstance(func.value, ast.Name)
        and func.value.id == "importlib"
    )


def _top(module: str) -> str:
    return module.split(".", 1)[0]


def _judge(layer: str, target: str) -> str | None:
    """Why `layer` may not import `target`, or None when it may."""
    top = _top(target)
    if layer in PURE_LAYERS and top in PURE_FORBIDDEN:
        return (
            f"{layer} is pure: {top} brings a clock, randomness, threads or I/O "
            "(time comes as ticks or numbers, randomness from an injected RNG, I/O lives in the "
            "Trio shells: broker.runtime, the consumers package outside consumers.core)"
        )
    if top in sys.stdlib_module_names:
        if layer in PURE_LAYERS and top not in PURE_STDLIB:
            return f"{layer} is pure: stdlib module {top} is not on its allow-list (PURE_STDLIB)"
        return None
    if top in SCANNED:
        target_layer = layer_of(target)
        if target_layer is None:
            return f"{target} is in no layer"
        if target_layer == layer or target_layer in PROJECT_ALLOWED[layer]:
            return None
        allowed = ", ".join(sorted(PROJECT_ALLOWED[layer])) or "nothing else in the project"
        return f"{layer} may not import {target_layer} (it may import: {allowed})"
    if top in THIRD_PARTY_ALLOWED[layer]:
        return None
    allowed = ", ".join(sorted(THIRD_PARTY_ALLOWED[layer])) or "none"
    return f"{layer} may not use the third-party package {top} (allowed: {allowed})"
