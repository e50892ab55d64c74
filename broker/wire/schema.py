"""Strict readers for decoded message bodies, each naming the field it rejects.

Every reader takes the decoded value and its path (`topics[2].partitions[0].offset`) and either
returns the value with its exact type or raises WireError(INVALID_REQUEST, "<path>: <what>"),
except for a topic name the naming rule refuses: WireError(INVALID_TOPIC, "invalid topic name
'a/b': ...") names the name a user typed, not the field that carried it.
Integers must be `int` (never bool) within their range; booleans `bool` (never int); text is
`str`; bytes is `bytes`; arrays are lists within `limits.max_array_items`; maps have exactly the
expected text keys. The CBOR layer below has already bounded sizes and nesting; these readers
give the values their meaning.

A `Shape` is the one place that says which keys a map has at which version of its API.
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Mapping, Sequence
from typing import NoReturn

from broker.wire.errors import ErrorCode, WireError
from broker.wire.limits import (
    INT32_MAX,
    INT32_MIN,
    INT64_MAX,
    INT64_MIN,
    Limits,
    topic_name_problem,
    traceparent_problem,
)

INT16_MIN = -(1 << 15)
INT16_MAX = (1 << 15) - 1

_TYPE_NAMES: dict[type, str] = {
    int: "int",
    bool: "bool",
    float: "float",
    str: "text",
    bytes: "bytes",
    list: "array",
    dict: "map",
    type(None): "null",
}


def type_name(value: object) -> str:
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def fail(path: str, what: str, code: ErrorCode = ErrorCode.INVALID_REQUEST) -> NoReturn:
    raise WireError(code, f"{path or 'body'}: {what}")


def at(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def item(path: str, index: int) -> str:
    return f"{path}[{index}]"


def fields(value: object, path: str, keys: Collection[str]) -> dict[str, object]:
    """A map with exactly `keys` (a frozenset): none missing, none unknown."""
    if type(value) is not dict:
        fail(path, f"expected a map, got {type_name(value)}")
    if value.keys() != keys:
        missing = sorted(k for k in keys if k not in value)
        unknown = sorted(_shown(k) for k in value if k not in keys)
        problems = []
        if missing:
            problems.append("missing " + ", ".join(missing))
        if unknown:
            more = f" and {len(unknown) - 8} more" if len(unknown) > 8 else ""
            problems.append("unknown " + ", ".join(unknown[:8]) + more)
        fail(path, "; ".join(problems))
    return value


class Shape:
    """The keys of one wire map and the version that added each (`base` keys exist from
    version 0, `added[v]` from version v). Version v of the map has exactly the keys added
    at or before v: `read` refuses a missing key and a key of a newer version alike, and
    `write` leaves out the keys v lacks (a field that a reader of an older version can do
    without is the only kind a new version adds)."""

    __slots__ = ("_by_version",)

    def __init__(self, *base: str, added: Mapping[int, Collection[str]] | None = None) -> None:
        since = dict.fromkeys(base, 0)
        for version, keys in (added or {}).items():
            if version < 1:
                raise ValueError(f"keys added at version {version}: base keys are version 0")
            for key in keys:
                if key in since:
                    raise ValueError(f"key {key!r} is listed twice")
                since[key] = version
        newest = max(since.values(), default=0)
        self._by_version = tuple(
            frozenset(k for k, v in since.items() if v <= version) for version in range(newest + 1)
        )

    def keys(self, version: int) -> frozenset[str]:
        """The keys of the map at `version` (a version past the newest has them all)."""
        return self._by_version[min(max(version, 0), len(self._by_version) - 1)]

    def read(self, value: object, path: str, version: int) -> dict[str, object]:
        """A map with exactly the keys of `version`."""
        return fields(value, path, self.keys(version))

    def write(self, full: dict[str, object], version: int) -> dict[str, object]:
        """`full` (every key of every version) without the keys `version` lacks."""
        keys = self.keys(version)
        return full if len(keys) == len(full) else {k: v for k, v in full.items() if k in keys}


def _shown(value: object) -> str:
    """A value from the peer as an error message may quote it: at most 64 characters."""
    text = repr(value)
    return text if len(text) <= 64 else text[:61] + "..."


def integer(value: object, path: str, low: int, high: int) -> int:
    if type(value) is not int:
        fail(path, f"expected int, got {type_name(value)}")
    if not low <= value <= high:
        fail(path, f"{value} is outside [{low}, {high}]")
    return value


def int16(value: object, path: str, low: int = INT16_MIN) -> int:
    return integer(value, path, low, INT16_MAX)


def int32(value: object, path: str, low: int = INT32_MIN) -> int:
    return integer(value, path, low, INT32_MAX)


def int64(value: object, path: str, low: int = INT64_MIN) -> int:
    return integer(value, path, low, INT64_MAX)


def opt_int32(value: object, path: str, low: int = INT32_MIN) -> int | None:
    return None if value is None else int32(value, path, low)


def boolean(value: object, path: str) -> bool:
    if type(value) is not bool:
        fail(path, f"expected bool, got {type_name(value)}")
    return value


def partition(value: object, path: str) -> int:
    return integer(value, path, 0, INT32_MAX)


def text(value: object, path: str) -> str:
    if type(value) is not str:
        fail(path, f"expected text, got {type_name(value)}")
    return value


def opt_text(value: object, path: str) -> str | None:
    return None if value is None else text(value, path)


def nonempty_text(value: object, path: str) -> str:
    result = text(value, path)
    if not result:
        fail(path, "must not be empty")
    return result


def opt_nonempty_text(value: object, path: str) -> str | None:
    return None if value is None else nonempty_text(value, path)


def trace_context(b: dict[str, object]) -> str | None:
    """A request's optional `trace_context` field (a W3C traceparent): None when absent,
    as below the version that adds it."""
    return opt_traceparent(b["trace_context"], "trace_context") if "trace_context" in b else None


def opt_traceparent(value: object, path: str) -> str | None:
    """None, or a W3C traceparent (`limits.traceparent_problem`)."""
    if value is None:
        return None
    result = text(value, path)
    problem = traceparent_problem(result)
    if problem is not None:
        fail(path, problem)
    return result


def byte_string(value: object, path: str) -> bytes:
    if type(value) is not bytes:
        fail(path, f"expected bytes, got {type_name(value)}")
    return value


def array(value: object, path: str, limits: Limits) -> list[object]:
    if type(value) is not list:
        fail(path, f"expected an array, got {type_name(value)}")
    if len(value) > limits.max_array_items:
        fail(path, f"{len(value)} items exceed the limit of {limits.max_array_items}")
    return value


def topic(value: object, path: str, limits: Limits) -> str:
    """A topic name that the naming rule accepts (else INVALID_TOPIC, see the module doc)."""
    name = text(value, path)
    problem = topic_name_problem(name, limits)
    if problem is not None:
        # What a user typed: INVALID_TOPIC naming the name, not the field that carried it.
        raise WireError(ErrorCode.INVALID_TOPIC, problem)
    return name


def error_code(value: object, path: str) -> ErrorCode:
    """An error code; a number unknown to this version reads as UNKNOWN_SERVER_ERROR."""
    return ErrorCode.from_wire(int16(value, path))


def text_map(value: object, path: str, limits: Limits) -> dict[str, str]:
    """A map of text to text (topic configuration)."""
    if type(value) is not dict:
        fail(path, f"expected a map, got {type_name(value)}")
    if len(value) > limits.max_map_items:
        fail(path, f"{len(value)} entries exceed the limit of {limits.max_map_items}")
    for key, entry in value.items():
        if type(key) is not str:
            fail(path, f"key {key!r} is not text")
        if type(entry) is not str:
            fail(at(path, key), f"expected text, got {type_name(entry)}")
    return value


def unique(names: Sequence[Hashable], path: str, what: str) -> None:
    """Reject a repeated name or partition in a request (its answer would be ambiguous)."""
    if len(set(names)) != len(names):
        seen: set[Hashable] = set()
        for index, name in enumerate(names):
            if name in seen:
                fail(item(path, index), f"duplicate {what} {name!r}")
            seen.add(name)
