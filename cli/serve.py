"""`sluice serve`: run one broker in the foreground."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer


def _opt(name: str, help_text: str, **kw: Any) -> Any:
    env = "SLUICE_" + name.lstrip("-").replace("-", "_").upper()
    return typer.Option(name, envvar=env, help=help_text, show_envvar=True, **kw)


def serve(
    data_dir: Annotated[Path | None, _opt("--data-dir", "Data directory (default ./data).")] = None,
    listen: Annotated[
        str | None, _opt("--listen", "Client listener HOST:PORT (default 127.0.0.1:9092).")
    ] = None,
    peer_listen: Annotated[
        str | None, _opt("--peer-listen", "Peer listener HOST:PORT (default 127.0.0.1:9093).")
    ] = None,
    http_listen: Annotated[
        str | None,
        _opt("--http-listen", "HTTP /healthz /readyz HOST:PORT (default 127.0.0.1:9095)."),
    ] = None,
    node_id: Annotated[int | None, _opt("--node-id", "This broker's node id (default 0).")] = None,
    controllers: Annotated[
        str | None,
        _opt(
            "--controllers",
            "The controller quorum's first voters, ID@HOST:PEERPORT,... (default: this broker "
            "alone, a single-node cluster). A broker not listed joins as a plain broker.",
        ),
    ] = None,
    advertise: Annotated[
        str | None, _opt("--advertise", "Client address given to clients (default: bound).")
    ] = None,
    advertise_peer: Annotated[
        str | None, _opt("--advertise-peer", "Peer address given to peers (default: bound).")
    ] = None,
    rack: Annotated[str | None, _opt("--rack", "Rack name, for replica placement.")] = None,
    config: Annotated[Path | None, _opt("--config", "TOML configuration file.")] = None,
    log_format: Annotated[
        str | None, _opt("--log-format", "Logs on stderr: text or json (default text).")
    ] = None,
) -> None:
    """Run one broker. It prints `sluice: listening clients=... peers=... http=...` once
    bound, and stops cleanly on SIGTERM or Ctrl-C."""
    overrides = {
        "data_dir": data_dir,
        "listen": listen,
        "peer_listen": peer_listen,
        "http_listen": http_listen,
        "node_id": node_id,
        "controllers": controllers,
        "advertise": advertise,
        "advertise_peer": advertise_peer,
        "rack": rack,
        "log_format": log_format,
    }
    # The broker's modules are imported here, not at the top: other commands never load them.
    from broker.app import run_serve
    from broker.config import BrokerConfig, ConfigError

    try:
        cfg = BrokerConfig.load(config, overrides)
    except ConfigError as e:
        typer.echo(f"sluice serve: {e}", err=True)
        raise typer.Exit(2) from None
    raise typer.Exit(run_serve(cfg))
