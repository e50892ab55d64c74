"""The configuration of a broker embedded in a test's Trio run: every listener on 127.0.0.1
with a port the kernel picks, data in the test's directory, and any other option as given."""

from __future__ import annotations

from pathlib import Path

from broker.config import BrokerConfig, HostPort


def embedded_config(data_dir: Path, **options: object) -> BrokerConfig:
    any_port = HostPort("127.0.0.1", 0)
    return BrokerConfig(
        data_dir=data_dir,
        listen=any_port,
        peer_listen=any_port,
        http_listen=any_port,
        **options,  # type: ignore[arg-type]
    )
