"""The test harness survives a port taken between `free_port` and the broker's bind (other
suites on the same machine): at a first start it picks the client port again."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.support.harness import BrokerProcess


def test_a_taken_client_port_is_picked_again_at_the_first_start(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        b = BrokerProcess(tmp_path / "d0", client_port=port)
        try:
            b.start()
            b.wait_ready()
            assert b.client_port != port
            assert b.starts == 1
            assert "Address already in use" in b.log_path.read_text()
        finally:
            b.kill()
