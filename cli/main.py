"""Entry point of the `sluice` command.

Exit codes (the contract): 0 success, 1 a failed operation, 2 bad usage or configuration.
Commands are added by the stages that build them.

Shell completion is typer's: `sluice --install-completion` installs it for the current shell
(bash, zsh, fish, PowerShell), `sluice --show-completion` prints the script to install by hand;
the shell then calls `sluice` with `_SLUICE_COMPLETE=complete_<shell>` to complete a word.
"""

from __future__ import annotations

import os
from importlib.metadata import version as _dist_version
from typing import Annotated

import typer
from typer.core import TyperArgument, TyperOption

from cli import bench, cluster, dev, group, leaders, rebalance, topic, txn
from cli.consume import consume
from cli.produce import produce
from cli.serve import serve
from cli.top import top

__version__ = _dist_version("sluice-broker")


def show_flags_as_flags() -> None:
    """Make `--help` show a flag (`--json`, `--help`, `--wait`...) without a value type.

    typer 0.29 (which carries its own copy of click) prints, in the rich help's type column,
    `TyperOption.display_type_rich` of every option: for a flag that is its Python type,
    hence `--json <bool>` and `--help <bool>`, as if they took a value. Only the plain
    formatter (`get_help_record`) leaves flags out. A flag (or a counter) takes no value:
    its type column is left empty. Idempotent."""
    original = TyperOption.display_type_rich
    if getattr(original, "__sluice_flags__", False):
        return

    def display_type_rich(self: TyperOption, ctx: typer.Context) -> str | None:
        if self.is_flag or self.count:
            return None
        return original(self, ctx)

    display_type_rich.__sluice_flags__ = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign,assignment]

    def argument_type_rich(self: TyperArgument, ctx: typer.Context) -> str | None:
        """A text argument's type (`<str>`, `<list[str]>`) says nothing its name does not."""
        shown = self.display_type(ctx)
        return None if shown in ("<str>", "<list[str]>") else shown

    TyperArgument.display_type_rich = argument_type_rich  # type: ignore[method-assign,assignment]


show_flags_as_flags()
app = typer.Typer(no_args_is_help=True)
app.command("serve")(serve)
app.add_typer(topic.app, name="topic")
app.command("produce")(produce)
app.command("consume")(consume)
app.add_typer(group.app, name="group")
app.add_typer(txn.app, name="txn")
app.add_typer(cluster.app, name="cluster")
app.add_typer(leaders.app, name="leaders")
app.add_typer(rebalance.app, name="rebalance")
app.add_typer(rebalance.broker_app, name="broker")
app.command("top")(top)
app.add_typer(bench.app, name="bench")
app.add_typer(dev.app, name="dev")


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"sluice {__version__}")
        raise typer.Exit(0)


TRACED_COMMANDS = frozenset({"produce", "consume", "txn", "group", "bench"})
"""Commands whose client spans are exported when the OTEL_* variables ask (see ops/README.md);
the provider flushes at exit."""


@app.callback()
def _root(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """Sluice: a Raft-replicated message-queue broker."""
    if ctx.invoked_subcommand in TRACED_COMMANDS and any(k.startswith("OTEL_") for k in os.environ):
        # Imported only when the OTEL_* variables may ask for tracing: the broker's modules
        # cost a client command about half of its start-up time.
        from broker.app import install_client_tracing

        install_client_tracing("sluice-cli")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI on `argv` (default: sys.argv[1:]) and return its exit code."""
    try:
        app(args=argv, prog_name="sluice")
    except SystemExit as exc:
        if exc.code is None:
            return 0
        if isinstance(exc.code, int):
            return exc.code
        typer.echo(str(exc.code), err=True)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
