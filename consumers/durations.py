"""The library's one time-unit convention: every duration a caller passes is in milliseconds,
in a parameter whose name ends in `_ms` (Kafka's names: `linger_ms`, `session_timeout_ms`,
`delivery_timeout_ms`, `timeout_ms`).

Names from before the convention (`delivery_timeout_s`, `timeout_s`, `poll_s`, `poll(timeout=)`
in seconds) still work: `duration_ms` takes both spellings, refuses both at once, and turns the
old one into milliseconds. Inside, the library keeps seconds (Trio's clock); `seconds` converts.
"""

from __future__ import annotations

__all__ = ["duration_ms", "seconds"]


def duration_ms(
    name_ms: str,
    value_ms: float | None,
    name_s: str,
    value_s: float | None,
    default_ms: float | None,
) -> float | None:
    """The duration in milliseconds given as `name_ms` (milliseconds) or as the older `name_s`
    (seconds); `default_ms` when neither is given. Raises TypeError when both are given and
    ValueError for a negative duration."""
    if value_ms is not None and value_s is not None:
        raise TypeError(f"give {name_ms} or {name_s} (its older name, in seconds), not both")
    if value_s is not None:
        if value_s < 0:
            raise ValueError(f"{name_s} must not be negative, got {value_s}")
        return value_s * 1000.0
    if value_ms is None:
        return default_ms
    if value_ms < 0:
        raise ValueError(f"{name_ms} must not be negative, got {value_ms}")
    return float(value_ms)


def seconds(ms: float | None) -> float | None:
    """Milliseconds as seconds (None stays None: no bound)."""
    return None if ms is None else ms / 1000.0
