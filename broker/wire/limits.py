"""Bounds on everything that arrives from the network, and checks of single values against them.

One `Limits` value travels with every decoder: the frame decoder, the CBOR decoder, the message
validators and the batch parser. Sizes are in bytes unless the name says items or records.
Broker and client may use different limits; the defaults are the protocol's recommended ones.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields

KiB = 1024
MiB = 1024 * KiB

MIN_FRAME_BYTES = 1 * KiB
"""The smallest max_frame_bytes a peer may configure: every request and error response fits."""

MAX_FRAME_BYTES_CEILING = (1 << 32) - 1
"""The frame length prefix is an unsigned 32-bit integer."""

TOPIC_NAME_MAX = 249
"""Kafka's bound on topic names; `Limits.max_topic_name` may only narrow it."""

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1
INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1

_TOPIC_RE = re.compile(r"[a-zA-Z0-9._-]+")
_SHOWN_NAME = 60
"""Characters of a refused topic name that its error message quotes."""

TRACEPARENT_CHARS = 55
"""A W3C traceparent: VERSION-TRACEID-PARENTID-FLAGS, 2-32-16-2 lowercase hex digits."""
_TRACEPARENT_RE = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """The bounds one side enforces on what it decodes. All must be positive."""

    max_frame_bytes: int = 16 * MiB
    """Largest frame payload (the 4-byte length prefix excluded); at least MIN_FRAME_BYTES."""
    max_nesting: int = 16
    """Most containers (arrays, maps) that may enclose one CBOR item."""
    max_array_items: int = 100_000
    max_map_items: int = 1_000
    """Entries (key/value pairs) of one CBOR map."""
    max_frame_items: int = 1_000_000
    """CBOR data items in one decoded document (bounds memory: a 1-byte empty array decodes
    to a 56-byte list, so a byte limit alone does not)."""
    max_text_bytes: int = 64 * KiB
    """Largest CBOR text string, in UTF-8 bytes."""
    max_topic_name: int = TOPIC_NAME_MAX
    max_client_id: int = 256
    """Largest client id, in UTF-8 bytes."""
    max_batch_records: int = 100_000
    max_batch_bytes: int = 16 * MiB

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if type(value) is not int or value < 1:
                raise ValueError(f"Limits.{f.name} must be a positive int, got {value!r}")
        if not MIN_FRAME_BYTES <= self.max_frame_bytes <= MAX_FRAME_BYTES_CEILING:
            raise ValueError(
                f"Limits.max_frame_bytes must be in [{MIN_FRAME_BYTES}, "
                f"{MAX_FRAME_BYTES_CEILING}], got {self.max_frame_bytes}"
            )
        if self.max_topic_name > TOPIC_NAME_MAX:
            raise ValueError(f"Limits.max_topic_name must be at most {TOPIC_NAME_MAX}")


DEFAULT_LIMITS = Limits()


def topic_name_problem(name: str, limits: Limits = DEFAULT_LIMITS) -> str | None:
    """Why `name` is not a valid topic name, or None when it is: a message naming the name
    (as a user typed it) and the rule, e.g. "invalid topic name 'a/b': use 1-249 of ASCII
    letters, digits, '.', '_' and '-'".

    Valid: 1..max_topic_name characters of `[a-zA-Z0-9._-]`, and neither "." nor ".." (as
    Kafka, so a name is always safe as a path component).
    """
    shown = repr(name) if len(name) <= _SHOWN_NAME else repr(name[:_SHOWN_NAME] + "...")
    rule = f"use 1-{limits.max_topic_name} of ASCII letters, digits, '.', '_' and '-'"
    if len(name) > limits.max_topic_name:
        return f"invalid topic name {shown} ({len(name)} characters): {rule}"
    if _TOPIC_RE.fullmatch(name) is None:
        return f"invalid topic name {shown}: {rule}"
    if name in (".", ".."):
        return f"invalid topic name {shown}: '.' and '..' are not allowed"
    return None


def is_valid_topic_name(name: str, limits: Limits = DEFAULT_LIMITS) -> bool:
    return topic_name_problem(name, limits) is None


def client_id_problem(client_id: str, limits: Limits = DEFAULT_LIMITS) -> str | None:
    """Why `client_id` is too long, or None when it fits (any text is allowed)."""
    if len(client_id.encode("utf-8", "surrogatepass")) > limits.max_client_id:
        return f"client id longer than {limits.max_client_id} UTF-8 bytes"
    return None


def traceparent_problem(text: str) -> str | None:
    """Why `text` is not a W3C traceparent value (trace context level 1), or None when it is:
    at most TRACEPARENT_CHARS characters, lowercase hex fields of 2, 32, 16 and 2 digits
    joined by '-', version not ff, trace id and parent id not all zeros."""
    if len(text) > TRACEPARENT_CHARS:
        return f"traceparent longer than {TRACEPARENT_CHARS} characters"
    match = _TRACEPARENT_RE.fullmatch(text)
    if match is None:
        return "not a W3C traceparent (VERSION-TRACEID-PARENTID-FLAGS, 2-32-16-2 lowercase hex)"
    version, trace_id, parent_id = match.groups()
    if version == "ff":
        return "traceparent version ff is invalid"
    if trace_id == "0" * 32:
        return "traceparent trace id is all zeros"
    if parent_id == "0" * 16:
        return "traceparent parent id is all zeros"
    return None


TRACEPARENT_HEADER = "traceparent"
"""The record header that carries a W3C traceparent from producer to consumer."""


def format_traceparent(trace_id: int, span_id: int, sampled: bool) -> str:
    """The version-00 traceparent of a span context."""
    return f"00-{trace_id:032x}-{span_id:016x}-{'01' if sampled else '00'}"


def parse_traceparent(text: str) -> tuple[int, int, int] | None:
    """(trace id, parent span id, flags) of a valid traceparent, else None."""
    if traceparent_problem(text) is not None:
        return None
    _, trace_id, span_id, flags = text.split("-")
    return int(trace_id, 16), int(span_id, 16), int(flags, 16)


def in_int32(value: int) -> bool:
    return INT32_MIN <= value <= INT32_MAX


def in_int64(value: int) -> bool:
    return INT64_MIN <= value <= INT64_MAX
