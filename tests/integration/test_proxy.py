"""The fault-injecting proxy on its own: forwarding, cut/heal, delay, one-way stall, rules
per dialer, and telling the dialing process apart through the kernel's socket tables."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from tests.integration.proxy import Proxy, owner_pid
from tests.support.wait import wait_until


class EchoServer:
    """Echoes every byte back; counts what it received."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port: int = self.sock.getsockname()[1]
        self.received = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    def _echo(self, conn: socket.socket) -> None:
        conn.settimeout(0.05)
        with conn:
            while not self.stop.is_set():
                try:
                    data = conn.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not data:
                    return
                self.received += len(data)
                with contextlib.suppress(OSError):
                    conn.sendall(data)

    def close(self) -> None:
        self.stop.set()
        self.sock.close()
        self.thread.join(timeout=2)


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    e = EchoServer()
    yield e
    e.close()


@pytest.fixture
def proxy(echo: EchoServer) -> Iterator[Proxy]:
    with Proxy(("127.0.0.1", echo.port), name="test") as p:
        yield p


def dial(p: Proxy) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", p.port), timeout=2)
    s.settimeout(2)
    return s


def recv_exactly(s: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        data = s.recv(n - len(out))
        if not data:
            raise ConnectionError("closed")
        out += data
    return out


def is_dead(s: socket.socket, timeout: float = 2.0) -> bool:
    """The proxy closed (or reset) this connection."""
    s.settimeout(timeout)
    try:
        s.sendall(b"?")
        return s.recv(1) == b""
    except (ConnectionError, OSError):
        return True


def refused(p: Proxy) -> bool:
    """A new connection through the proxy is reset: at once (the connect itself fails) or
    right after it was accepted."""
    try:
        s = dial(p)
    except ConnectionError:
        return True
    with s:
        return is_dead(s)


def test_forwards_both_ways(proxy: Proxy, echo: EchoServer) -> None:
    with dial(proxy) as s:
        payload = os.urandom(300_000)
        s.sendall(payload)
        assert recv_exactly(s, len(payload)) == payload

        def counted() -> bool:
            [info] = proxy.connections()
            return info.bytes_to_target == info.bytes_from_target == len(payload)

        # The counters move just after the bytes do.
        wait_until(
            counted,
            "the counters to reach the payload's length",
            timeout=2,
            interval=0.01,
            detail=proxy.connections,
        )
        [info] = proxy.connections()
        assert info.bytes_to_target == info.bytes_from_target == len(payload), info


def test_cut_resets_links_and_refuses_new_ones_until_healed(proxy: Proxy) -> None:
    s = dial(proxy)
    s.sendall(b"x")
    assert recv_exactly(s, 1) == b"x"
    proxy.cut()
    assert is_dead(s)
    s.close()
    assert refused(proxy)
    proxy.heal()
    with dial(proxy) as healed:
        healed.sendall(b"back")
        assert recv_exactly(healed, 4) == b"back"


def test_delay_holds_each_chunk_that_long(proxy: Proxy) -> None:
    proxy.delay(0.2)
    with dial(proxy) as s:
        start = time.monotonic()
        s.sendall(b"ping")
        assert recv_exactly(s, 4) == b"ping"
        # Delayed on the way in and on the way back.
        assert time.monotonic() - start >= 0.4
        proxy.heal()
        start = time.monotonic()
        s.sendall(b"pong")
        assert recv_exactly(s, 4) == b"pong"
        assert time.monotonic() - start < 0.3


def test_stall_holds_one_direction_without_closing(proxy: Proxy, echo: EchoServer) -> None:
    with dial(proxy) as s:
        s.sendall(b"a")
        assert recv_exactly(s, 1) == b"a"
        proxy.stall("from_target")
        s.sendall(b"bcd")
        wait_until(
            lambda: echo.received >= 4,
            "the other direction to keep flowing",
            timeout=2,
            interval=0.01,
        )
        assert echo.received == 4, "the other direction kept flowing"
        s.settimeout(0.3)
        with pytest.raises(TimeoutError):
            s.recv(1)
        proxy.heal()
        s.settimeout(2)
        assert recv_exactly(s, 3) == b"bcd", "held bytes arrive in order after healing"
        proxy.stall("to_target")
        s.sendall(b"e")
        time.sleep(0.2)
        assert echo.received == 4
        proxy.heal()
        assert recv_exactly(s, 1) == b"e"


def test_rules_for_one_dialer_leave_the_others_alone(echo: EchoServer) -> None:
    owners: dict[int, int] = {}
    with Proxy(("127.0.0.1", echo.port), identify=lambda a: owners.get(a[1])) as p:
        a = socket.socket()
        a.bind(("127.0.0.1", 0))
        owners[a.getsockname()[1]] = 1
        a.connect(("127.0.0.1", p.port))
        b = socket.socket()
        b.bind(("127.0.0.1", 0))
        owners[b.getsockname()[1]] = 2
        b.connect(("127.0.0.1", p.port))
        for s in (a, b):
            s.settimeout(2)
            s.sendall(b"x")
            assert recv_exactly(s, 1) == b"x"
        p.cut(source=1)
        assert is_dead(a)
        b.sendall(b"y")
        assert recv_exactly(b, 1) == b"y"
        # An unidentified dialer is treated as the cut one: it must not slip through.
        assert refused(p)
        p.heal(source=1)
        with dial(p) as later:
            later.sendall(b"z")
            assert recv_exactly(later, 1) == b"z"
        a.close()
        b.close()


def test_owner_pid_names_the_dialing_process(echo: EchoServer) -> None:
    with socket.create_connection(("127.0.0.1", echo.port)) as s:
        local = s.getsockname()[1]
        assert owner_pid(local, echo.port, [os.getpid()]) == os.getpid()
    code = (
        "import socket, sys, time\n"
        f"s = socket.create_connection(('127.0.0.1', {echo.port}))\n"
        "print(s.getsockname()[1], flush=True)\n"
        "sys.stdin.readline()\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        assert owner_pid(port, echo.port, [os.getpid(), child.pid]) == child.pid
        assert owner_pid(port, echo.port, [os.getpid()]) is None
    finally:
        child.kill()
        child.wait()
