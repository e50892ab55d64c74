"""The client library's public surface as a user's editor and type checker see it: every
exported class, function, method and property has a docstring; every constructor parameter
is described (by name) in its class's or constructor's docstring; every error class, `ErrorCode`
and `TopicPartition` are importable from `consumers`; durations follow one convention; the
clients say what they are in `repr`; the package ships `py.typed`."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
import re
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import consumers
import consumers.blocking
import consumers.errors

EXPORTING = (consumers, consumers.blocking)

DUNDERS_USERS_CALL = frozenset({"__init__", "__await__", "__aiter__", "__iter__"})


def _exported() -> Iterator[tuple[str, object]]:
    for module in EXPORTING:
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isclass(obj) or inspect.isfunction(obj):
                yield f"{module.__name__}.{name}", obj


def _own_doc(obj: object) -> str:
    """The docstring written for `obj` itself (not inherited, not a dataclass's generated
    signature)."""
    if inspect.isclass(obj):
        doc = obj.__dict__.get("__doc__") or ""
        if dataclasses.is_dataclass(obj) and doc.startswith(f"{obj.__name__}("):
            return ""
        return str(doc)
    return inspect.getdoc(obj) or ""


def _attribute_docs(cls: type) -> set[str]:
    """Names of the class-body attributes that a string literal (their docstring) follows."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return set()
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    named: set[str] = set()
    for stmt, after in itertools.pairwise(body):
        is_doc = isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
        if is_doc and isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            named.add(stmt.target.id)
    return named


def _members(cls: type) -> Iterator[tuple[str, object]]:
    """Public callables and properties `cls` has from this library: its own and those of the
    library's classes it derives from (mixins), each name once (the one `cls` sees)."""
    seen: set[str] = set()
    for owner in cls.__mro__:
        if owner.__module__.startswith("consumers"):
            for name, value in vars(owner).items():
                if name not in seen:
                    seen.add(name)
                    yield from _member(name, value)


def _member(name: str, value: object) -> Iterator[tuple[str, object]]:
    """(name, function) of a public method or property, nothing for anything else."""
    if name.startswith("_") and name not in DUNDERS_USERS_CALL:
        return
    fn: object
    if isinstance(value, property):
        fn = value.fget
    elif isinstance(value, (staticmethod, classmethod)):
        fn = value.__func__
    else:
        fn = value
    if inspect.isfunction(fn) and fn.__module__.startswith("consumers"):
        yield name, fn


def test_every_exported_class_function_and_member_has_a_docstring() -> None:
    missing: list[str] = []
    for qualname, obj in _exported():
        if not _own_doc(obj):
            missing.append(qualname)
        if not inspect.isclass(obj):
            continue
        for name, fn in _members(obj):
            if name == "__init__":
                continue  # the constructor is covered by the parameter check below
            if not inspect.getdoc(fn):
                missing.append(f"{qualname}.{name}")
    assert not missing, f"{len(missing)} public callables without a docstring: {missing}"


def test_every_constructor_parameter_is_described() -> None:
    undescribed: list[str] = []
    for qualname, obj in _exported():
        if not inspect.isclass(obj) or issubclass(obj, BaseException):
            continue
        init = obj.__dict__.get("__init__")
        if init is None or not inspect.isfunction(init):
            continue
        text = _own_doc(obj) + "\n" + (inspect.getdoc(init) or "")
        documented = _attribute_docs(obj)
        for p in list(inspect.signature(init).parameters.values())[1:]:
            if p.name.startswith("_") or p.name in documented:
                continue
            if not re.search(rf"\b{re.escape(p.name)}\b", text):
                undescribed.append(f"{qualname}({p.name})")
    assert not undescribed, f"constructor parameters documented nowhere: {undescribed}"


def test_durations_are_milliseconds_named_ms() -> None:
    """One unit across the API: a duration parameter ends in `_ms`; the older second-based
    names survive only as aliases next to their `_ms` twin."""
    offenders: list[str] = []
    for qualname, obj in _exported():
        functions: list[tuple[str, object]] = [("", obj)] if inspect.isfunction(obj) else []
        if inspect.isclass(obj):
            functions = list(_members(obj))
        for name, fn in functions:
            params = inspect.signature(fn).parameters  # type: ignore[arg-type]
            for p in params:
                if p.endswith("_s") and not p.endswith("bytes_per_s"):
                    twin = p[:-2] + "_ms"
                    if p == "poll_s":
                        twin = "poll_interval_ms"
                    if twin not in params:
                        offenders.append(f"{qualname}.{name}({p})")
    assert not offenders, f"durations in seconds without an _ms twin: {offenders}"


def test_every_error_class_error_code_and_topic_partition_are_exported() -> None:
    for name in consumers.errors.__all__:
        assert getattr(consumers, name) is getattr(consumers.errors, name), name
        assert name in consumers.__all__, name
    from broker.wire.errors import ErrorCode

    assert consumers.ErrorCode is ErrorCode
    from consumers.core.metadata import TopicPartition

    assert "TopicPartition" in consumers.__all__ and consumers.TopicPartition is TopicPartition


@pytest.mark.parametrize(
    "make",
    [
        lambda: consumers.Producer("127.0.0.1:1", transactional_id="tx-1"),
        lambda: consumers.Consumer("127.0.0.1:1", group_id="billing"),
        lambda: consumers.Admin("127.0.0.1:1"),
        lambda: consumers.blocking.Producer("127.0.0.1:1"),
        lambda: consumers.blocking.Consumer("127.0.0.1:1", group_id="billing"),
        lambda: consumers.blocking.Admin("127.0.0.1:1"),
    ],
)
def test_clients_say_what_they_are(make: object) -> None:
    assert callable(make)
    client = make()
    text = repr(client)
    assert "127.0.0.1:1" in text and " object at 0x" not in text, text
    if "group_id" in inspect.signature(type(client).__init__).parameters:
        assert "billing" in text, text


def test_the_package_ships_its_typing_marker() -> None:
    package = Path(consumers.__file__).parent
    assert (package / "py.typed").is_file()
    pyproject = (package.parent / "pyproject.toml").read_text()
    assert 'consumers = ["py.typed"]' in pyproject
