"""Options every client command takes after its name, and running a command's coroutine with
the contract's exit codes: 0 success, 1 a failed operation (message on stderr), 2 bad usage."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import trio
import typer

from consumers import Admin, SluiceError, errors
from consumers.cluster import parse_bootstrap

T = TypeVar("T")

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"

Bootstrap = Annotated[
    str,
    typer.Option(
        "--bootstrap",
        metavar="HOST:PORT",
        envvar="SLUICE_BOOTSTRAP",
        show_envvar=True,
        help="Brokers to start from, HOST:PORT[,HOST:PORT...].",
    ),
]


def timeout_option(help_text: str = "Seconds to keep retrying retriable errors.") -> Any:
    """The `--timeout SECONDS` option every client command takes (env SLUICE_TIMEOUT), with
    what it bounds in that command."""
    return typer.Option(
        "--timeout",
        metavar="SECONDS",
        envvar="SLUICE_TIMEOUT",
        show_envvar=True,
        min=0.0,
        help=help_text,
    )


Timeout = Annotated[float, timeout_option()]
Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print "sluice: `message`" on stderr; the Exit (code `code`) to raise."""
    typer.echo(f"sluice: {message}", err=True)
    return typer.Exit(code)


def usage(message: str) -> typer.Exit:
    """`fail` with exit code 2: bad usage."""
    return fail(message, 2)


def plural(n: int, noun: str) -> str:
    """ "1 partition", "2 partitions", "0 partitions"."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


BAD_USAGE = (
    errors.InvalidConfigError,
    errors.InvalidGroupIdError,
    errors.InvalidTopicError,
    errors.InvalidPartitionsError,
    errors.InvalidReplicationFactorError,
)
"""Broker refusals of what the user typed: bad usage (exit 2), not a failed operation."""


def exit_code(error: SluiceError) -> int:
    """The contract's exit code of a failed operation: 2 when the broker (or the client)
    refused what the user typed, else 1."""
    return 2 if isinstance(error, BAD_USAGE) else 1


def run(fn: Callable[[], Awaitable[T]]) -> T:
    """Run an async command; a broker or client error becomes exit 1 (2 for a refusal of the
    arguments themselves) with its message."""
    try:
        return trio.run(fn)
    except SluiceError as e:
        raise fail(str(e), exit_code(e)) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except BrokenPipeError:
        # The reader of our output went away (e.g. `| head`): not an error of ours.
        sys.stderr.close()
        raise typer.Exit(0) from None


def admin(bootstrap: str, timeout: float) -> Admin:
    """An Admin whose calls retry retriable errors (unreachable brokers included) until
    `timeout` seconds (the CLI's `--timeout`) have passed. A `--bootstrap` that is not
    HOST:PORT[,HOST:PORT...] is bad usage (exit 2)."""
    try:
        parse_bootstrap(bootstrap)
    except ValueError as e:
        raise usage(f"--bootstrap: {str(e).removeprefix('bootstrap: ')}") from None
    return Admin(
        bootstrap,
        timeout_ms=timeout * 1000,
        request_timeout_ms=max(1, int(min(timeout, 30) * 1000)),
    )


def parse_configs(items: list[str] | None) -> dict[str, str]:
    """`--config KEY=VALUE` values as a dict (bad usage unless each has a key and "=")."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise usage(f"--config expects KEY=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out
