"""The layering checker: the real tree is clean, and every rule catches a planted violation."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.import_graph import check_graph
from tests.layering import Violation, check_imports

REPO = Path(__file__).resolve().parents[2]


def _plant(root: Path, files: dict[str, str]) -> None:
    for rel, source in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source).lstrip("\n"), encoding="utf-8")


def _key(v: Violation) -> tuple[str, int, str]:
    return v.path.as_posix(), v.line, v.module


def test_real_tree_has_no_violations() -> None:
    assert (REPO / "broker" / "__init__.py").is_file(), f"not the repository root: {REPO}"
    violations = check_imports(REPO)
    assert violations == [], "layering violations:\n" + "\n".join(map(str, violations))


# Each case: files to plant, and the exact violations expected as
# (path, line, imported module, a phrase the rule text must contain).
PLANTED: dict[str, tuple[dict[str, str], list[tuple[str, int, str, str]]]] = {
    "core imports time": (
        {"broker/core/planted.py": "import time\n"},
        [("broker/core/planted.py", 1, "time", "clock, randomness")],
    ),
    "core imports random (from-import)": (
        {"broker/core/p.py": "from random import Random\n"},
        [("broker/core/p.py", 1, "random", "clock, randomness")],
    ),
    "core imports os.path": (
        {"broker/core/p.py": "import os.path\n"},
        [("broker/core/p.py", 1, "os.path", "clock, randomness")],
    ),
    "core imports trio": (
        {"broker/core/planted.py": "import trio\n"},
        [("broker/core/planted.py", 1, "trio", "broker.core is pure")],
    ),
    "wire imports rocksdict": (
        {"broker/wire/p.py": "import rocksdict\n"},
        [("broker/wire/p.py", 1, "rocksdict", "broker.wire is pure")],
    ),
    "core imports sys (not on the pure allow-list)": (
        {"broker/core/p.py": "import sys\n"},
        [("broker/core/p.py", 1, "sys", "not on its allow-list")],
    ),
    "wire imports core": (
        {"broker/wire/planted.py": "from broker.core import x\n"},
        [("broker/wire/planted.py", 1, "broker.core", "broker.wire may not import broker.core")],
    ),
    "wire imports core via the package": (
        {"broker/wire/p.py": "from broker import core\n"},
        [("broker/wire/p.py", 1, "broker.core", "broker.wire may not import broker.core")],
    ),
    "consumers import runtime": (
        {"consumers/p.py": "from broker.runtime import server\n"},
        [("consumers/p.py", 1, "broker.runtime", "consumers may not import broker.runtime")],
    ),
    "consumers import core": (
        {"consumers/p.py": "import broker.core.partition\n"},
        [("consumers/p.py", 1, "broker.core.partition", "consumers may not import broker.core")],
    ),
    "client core imports trio": (
        {"consumers/core/planted.py": "import trio\n"},
        [("consumers/core/planted.py", 1, "trio", "consumers.core is pure")],
    ),
    "client core reads the clock": (
        {"consumers/core/p.py": "import time\nfrom random import random\n"},
        [
            ("consumers/core/p.py", 1, "time", "clock, randomness"),
            ("consumers/core/p.py", 2, "random", "clock, randomness"),
        ],
    ),
    "client core imports runtime": (
        {"consumers/core/p.py": "from broker.runtime import server\n"},
        [("consumers/core/p.py", 1, "broker.runtime", "consumers.core may not import")],
    ),
    "client core imports its Trio shell": (
        {"consumers/core/p.py": "from consumers.cluster import Cluster\n"},
        [("consumers/core/p.py", 1, "consumers.cluster", "consumers.core may not import")],
    ),
    "client errors import trio": (
        {"consumers/errors.py": "import trio\n"},
        [("consumers/errors.py", 1, "trio", "consumers.errors is pure")],
    ),
    "runtime imports app": (
        {"broker/runtime/p.py": "from broker.app import x\n"},
        [("broker/runtime/p.py", 1, "broker.app", "broker.runtime may not import broker.app")],
    ),
    "config imports core": (
        {"broker/config.py": "import tomllib\nimport broker.core\n"},
        [("broker/config.py", 2, "broker.core", "broker.config may not import broker.core")],
    ),
    "cli imports runtime": (
        {"cli/p.py": "import broker.runtime\n"},
        [("cli/p.py", 1, "broker.runtime", "cli may not import broker.runtime")],
    ),
    "cli imports wire": (
        {"cli/p.py": "from broker.wire import errors\n"},
        [("cli/p.py", 1, "broker.wire", "cli may not import broker.wire")],
    ),
    "relative import from core into runtime": (
        {"broker/core/p.py": "from ..runtime import x\n"},
        [("broker/core/p.py", 1, "broker.runtime", "broker.core may not import broker.runtime")],
    ),
    "relative import climbs above the top-level package": (
        {"broker/core/p.py": "from ... import x\n"},
        [("broker/core/p.py", 1, "...", "climbs above")],
    ),
    "import inside a function": (
        {
            "broker/core/p.py": """
                def f() -> None:
                    import socket
                """
        },
        [("broker/core/p.py", 2, "socket", "clock, randomness")],
    ),
    "import under TYPE_CHECKING": (
        {
            "broker/core/p.py": """
                from typing import TYPE_CHECKING

                if TYPE_CHECKING:
                    from broker.runtime import driver
                """
        },
        [("broker/core/p.py", 4, "broker.runtime", "broker.core may not import broker.runtime")],
    ),
    "importlib.import_module in wire": (
        {
            "broker/wire/p.py": """
                import importlib

                mod = importlib.import_module("socket")
                """
        },
        [
            ("broker/wire/p.py", 1, "importlib", "not on its allow-list"),
            ("broker/wire/p.py", 3, "socket", "clock, randomness"),
        ],
    ),
    "__import__ in wire": (
        {"broker/wire/p.py": 'mod = __import__("time")\n'},
        [("broker/wire/p.py", 1, "time", "clock, randomness")],
    ),
    "import_module of a layer above, in runtime": (
        {
            "broker/runtime/p.py": """
                from importlib import import_module

                app = import_module("broker.app")
                """
        },
        [("broker/runtime/p.py", 3, "broker.app", "broker.runtime may not import broker.app")],
    ),
    "import_module of a computed name": (
        {
            "broker/runtime/p.py": """
                import importlib

                def load(name: str) -> object:
                    return importlib.import_module(name)
                """
        },
        [("broker/runtime/p.py", 4, "<dynamic>", "cannot be checked")],
    ),
    "unknown third-party package in core": (
        {"broker/core/p.py": "import requests\n"},
        [("broker/core/p.py", 1, "requests", "broker.core may not use the third-party package")],
    ),
    "third-party package not allowed for consumers": (
        {"consumers/p.py": "import rocksdict\n"},
        [("consumers/p.py", 1, "rocksdict", "consumers may not use the third-party package")],
    ),
    "module in no layer": (
        {"broker/misc.py": "import json\n"},
        [("broker/misc.py", 1, "broker.misc", "in no layer")],
    ),
    "import of a project module in no layer": (
        {"broker/app.py": "import broker.misc\n"},
        [("broker/app.py", 1, "broker.misc", "in no layer")],
    ),
}


@pytest.mark.parametrize("case", sorted(PLANTED), ids=str)
def test_planted_violation_is_reported(tmp_path: Path, case: str) -> None:
    files, expected = PLANTED[case]
    _plant(tmp_path, files)
    violations = check_imports(tmp_path)
    report = "\n".join(map(str, violations))
    assert [_key(v) for v in violations] == [(p, line, m) for p, line, m, _ in expected], report
    for violation, (*_, phrase) in zip(violations, expected, strict=True):
        assert phrase in violation.rule, str(violation)


def test_clean_tree_reports_nothing(tmp_path: Path) -> None:
    _plant(
        tmp_path,
        {
            "broker/__init__.py": '"""Broker."""\n',
            "broker/wire/__init__.py": "",
            "broker/wire/frames.py": """
                import struct
                from collections.abc import Sequence

                import cbor2
                """,
            "broker/core/__init__.py": "",
            "broker/core/ok.py": """
                from __future__ import annotations

                from dataclasses import dataclass
                from typing import TYPE_CHECKING

                from broker.wire import frames
                from . import sibling
                from .raft import node

                if TYPE_CHECKING:
                    from broker.wire.frames import Frame
                """,
            "broker/config.py": """
                import os
                import tomllib

                from broker.wire import limits
                """,
            "broker/runtime/driver.py": """
                import importlib

                import rocksdict
                import trio
                from opentelemetry import trace

                from broker.config import Config
                from broker.core import node

                store = importlib.import_module("broker.runtime.store")
                """,
            "broker/app.py": """
                from broker import runtime
                from broker.config import Config
                from broker.runtime import driver
                """,
            "consumers/producer.py": """
                import trio

                from broker.wire import frames
                from consumers import errors
                from consumers.core.producer import ProducerCore
                """,
            "consumers/core/producer.py": """
                import math
                from collections import deque

                from broker.wire.batch import encode_batch
                from consumers.core.metadata import MetadataCache
                from consumers.errors import SluiceError
                """,
            "cli/main.py": """
                import typer

                from broker.app import embedded
                from broker.config import Config
                from cli import topic
                from consumers import Producer
                """,
        },
    )
    violations = check_imports(tmp_path)
    assert violations == [], "\n".join(map(str, violations))


# -- rules on the whole import graph (tests/import_graph.py) -----------------------------------

GRAPH_PLANTED: dict[str, tuple[dict[str, str], list[str]]] = {
    "a cycle through a function-level import": (
        {
            "broker/__init__.py": "",
            "broker/runtime/__init__.py": "",
            "broker/runtime/a.py": "from broker.runtime import b\n",
            "broker/runtime/b.py": "def f() -> None:\n    from broker.runtime.a import x\n",
        },
        ["import cycle: broker.runtime.a -> broker.runtime.b -> broker.runtime.a"],
    ),
    "a cycle through TYPE_CHECKING": (
        {
            "broker/__init__.py": "",
            "broker/runtime/__init__.py": "",
            "broker/runtime/a.py": "import broker.runtime.b\n",
            "broker/runtime/b.py": """
                from typing import TYPE_CHECKING
                if TYPE_CHECKING:
                    from broker.runtime.a import A
            """,
        },
        ["import cycle: broker.runtime.a -> broker.runtime.b -> broker.runtime.a"],
    ),
    "raft imports the broker core": (
        {
            "broker/__init__.py": "",
            "broker/core/__init__.py": "",
            "broker/core/partition.py": "",
            "broker/core/raft/__init__.py": "",
            "broker/core/raft/node.py": "from ..partition import PartitionMachine\n",
        },
        ["raft imports the broker core: broker.core.raft.node imports broker.core.partition"],
    ),
    "a core module over 600 lines": (
        {
            "broker/__init__.py": "",
            "broker/core/__init__.py": "",
            "broker/core/big.py": "x = 1\n" * 601,
            "broker/core/raft/__init__.py": "",
            "broker/core/raft/node.py": "x = 1\n" * 1300,
        },
        ["core module too large: broker/core/big.py has 601 lines (> 600)"],
    ),
    "one suite imports another": (
        {
            "tests/__init__.py": "",
            "tests/unit/__init__.py": "",
            "tests/unit/helpers.py": "",
            "tests/sim/__init__.py": "",
            "tests/sim/world.py": "from tests.unit.helpers import h\n",
        },
        ["one test suite imports another: tests.sim.world imports tests.unit.helpers"],
    ),
}


@pytest.mark.parametrize("case", sorted(GRAPH_PLANTED))
def test_planted_graph_violation_is_reported(tmp_path: Path, case: str) -> None:
    files, expected = GRAPH_PLANTED[case]
    _plant(tmp_path, files)
    assert [str(v) for v in check_graph(tmp_path)] == expected


def test_graph_rules_allow_what_they_should(tmp_path: Path) -> None:
    """A package importing its own submodules, raft importing itself and the wire, a suite
    importing tests.support and the project: no violation."""
    _plant(
        tmp_path,
        {
            "broker/__init__.py": "",
            "broker/wire/__init__.py": "from broker.wire.errors import ErrorCode\n",
            "broker/wire/errors.py": "from broker.wire import limits\n",
            "broker/wire/limits.py": "",
            "broker/core/__init__.py": "",
            "broker/core/raft/__init__.py": "from broker.core.raft.node import RaftNode\n",
            "broker/core/raft/node.py": "from broker.wire.errors import ErrorCode\n",
            "broker/core/node.py": "from broker.core.raft import RaftNode\n",
            "tests/__init__.py": "",
            "tests/support/__init__.py": "",
            "tests/support/harness.py": "from broker.core.node import x\n",
            "tests/unit/__init__.py": "",
            "tests/unit/test_a.py": "from tests.support.harness import y\n",
            "tests/sim/__init__.py": "",
            "tests/sim/test_b.py": "from tests.support import harness\nfrom tests.sim import c\n",
            "tests/sim/c.py": "",
        },
    )
    assert check_graph(tmp_path) == []


def test_real_tree_import_graph_is_clean() -> None:
    violations = check_graph(REPO)
    assert violations == [], "import graph violations:\n" + "\n".join(map(str, violations))
