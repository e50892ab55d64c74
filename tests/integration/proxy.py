"""A fault-injecting TCP proxy for broker-to-broker links (threads; no protocol parsing).

One `Proxy` listens on its own port and forwards every accepted connection to one target
(a broker's peer listener). Each connection is two pump threads, one per direction; a pump
holds what it read in a bounded buffer (`BUFFER_BYTES`; past that it stops reading, so TCP
backpressure reaches the sender) and writes each chunk once its due time (arrival + delay)
has come and its direction is not stalled.

Faults are rules, for every dialer (`source=None`) or for the connections one dialer opened
(`source=<node id>`), and apply to live connections at once:
- `cut`: close the matching connections (with a reset) and refuse new ones (accepted, then
  reset at once); `heal` lifts it and dialers reconnect by themselves;
- `delay`: every chunk read from then on waits that long before it is written (both ways);
- `stall`: stop forwarding one direction ("to_target": dialer -> target, "from_target":
  target -> dialer) without closing anything; what arrives is held (bounded) and delivered
  in order once healed, as TCP would after a transient blackhole.

Which dialer a connection came from is decided by `identify(dialer_address)` (the cluster
harness asks the kernel which broker process owns the dialing socket: `owner_pid`); a
connection whose dialer is unknown counts as coming from every source that is cut, so a
source-specific cut never lets an unidentified connection through.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

Direction = Literal["to_target", "from_target"]
Identify = Callable[[tuple[str, int]], int | None]

BUFFER_BYTES = 4 << 20
"""Per connection and direction: bytes held (delayed or stalled) before reading stops."""
CHUNK_BYTES = 1 << 16
POLL_S = 0.05
"""Longest a pump or the acceptor waits before looking at the rules again."""
CONNECT_TIMEOUT_S = 2.0


@dataclass
class Rule:
    cut: bool = False
    delay_s: float = 0.0
    stalled: set[str] = field(default_factory=set)

    def merge(self, other: Rule) -> Rule:
        return Rule(
            self.cut or other.cut,
            max(self.delay_s, other.delay_s),
            self.stalled | other.stalled,
        )


@dataclass(frozen=True, slots=True)
class ConnInfo:
    source: int | None
    dialer: tuple[str, int]
    opened_at: float
    bytes_to_target: int
    bytes_from_target: int


class _Conn:
    def __init__(self, client: socket.socket, upstream: socket.socket, source: int | None,
                 dialer: tuple[str, int]) -> None:  # fmt: skip
        self.client = client
        self.upstream = upstream
        self.source = source
        self.dialer = dialer
        self.opened_at = time.monotonic()
        self.closed = threading.Event()
        self.moved: dict[str, int] = {"to_target": 0, "from_target": 0}
        self._lock = threading.Lock()

    def close(self, reset: bool = False) -> None:
        with self._lock:
            if self.closed.is_set():
                return
            self.closed.set()
        for s in (self.client, self.upstream):
            if reset:
                _set_linger_zero(s)
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()

    def info(self) -> ConnInfo:
        return ConnInfo(self.source, self.dialer, self.opened_at, self.moved["to_target"],
                        self.moved["from_target"])  # fmt: skip


class Proxy:
    """Listens on 127.0.0.1:`port` and forwards to `target`. `start()`, then `close()`."""

    def __init__(
        self,
        target: tuple[str, int],
        *,
        port: int = 0,
        identify: Identify | None = None,
        name: str = "proxy",
    ) -> None:
        self.target = target
        self.name = name
        self.identify = identify
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", port))
        self._listener.listen(64)
        self._listener.settimeout(POLL_S)
        self.port: int = self._listener.getsockname()[1]
        self._rules: dict[int | None, Rule] = {}
        self._lock = threading.Lock()
        self._conns: list[_Conn] = []
        self._threads: list[threading.Thread] = []
        self._closing = threading.Event()
        self.accepted = 0
        self.refused = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> Proxy:
        self._spawn(self._accept_loop, f"{self.name}-accept")
        return self

    def close(self) -> None:
        self._closing.set()
        with self._lock:
            conns = list(self._conns)
            threads = list(self._threads)
        for c in conns:
            c.close()
        for t in threads:
            if t is not threading.current_thread():
                t.join(timeout=5)
        with contextlib.suppress(OSError):
            self._listener.close()

    def __enter__(self) -> Proxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- faults -------------------------------------------------------------------------------

    def cut(self, source: int | None = None) -> None:
        """Reset the connections of `source` (every one if None) and refuse new ones."""
        with self._lock:
            self._rules.setdefault(source, Rule()).cut = True
            victims = [c for c in self._conns if self._matches(c.source, source)]
        for c in victims:
            c.close(reset=True)

    def delay(self, seconds: float, source: int | None = None) -> None:
        with self._lock:
            self._rules.setdefault(source, Rule()).delay_s = seconds

    def stall(self, direction: Direction, source: int | None = None) -> None:
        """Stop forwarding `direction` (nothing is closed; what arrives is held)."""
        if direction not in ("to_target", "from_target"):
            raise ValueError(f"direction must be to_target or from_target, not {direction!r}")
        with self._lock:
            self._rules.setdefault(source, Rule()).stalled.add(direction)

    def heal(self, source: int | None = None) -> None:
        """Lift every rule (`source=None`), or the rules of one source."""
        with self._lock:
            if source is None:
                self._rules.clear()
            else:
                self._rules.pop(source, None)

    def connections(self) -> list[ConnInfo]:
        with self._lock:
            return [c.info() for c in self._conns if not c.closed.is_set()]

    # -- internals ----------------------------------------------------------------------------

    @staticmethod
    def _matches(conn_source: int | None, rule_source: int | None) -> bool:
        return rule_source is None or conn_source is None or conn_source == rule_source

    def rule_for(self, source: int | None) -> Rule:
        """The rules that apply to a connection from `source` (unknown: every source's)."""
        with self._lock:
            rule = self._rules.get(None, Rule())
            for key, r in self._rules.items():
                if key is not None and (source is None or key == source):
                    rule = rule.merge(r)
            return rule

    def _spawn(self, fn: Callable[..., None], name: str, *args: object) -> None:
        t = threading.Thread(target=fn, args=args, name=name, daemon=True)
        with self._lock:
            self._threads = [x for x in self._threads if x.is_alive()]
            self._threads.append(t)
        t.start()

    def _accept_loop(self) -> None:
        while not self._closing.is_set():
            try:
                client, addr = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._closing.is_set():
                    return
                time.sleep(POLL_S)
                continue
            self.accepted += 1
            dialer = (str(addr[0]), int(addr[1]))
            source = self.identify(dialer) if self.identify is not None else None
            if self.rule_for(source).cut:
                self.refused += 1
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=CONNECT_TIMEOUT_S)
            except OSError:
                self.refused += 1
                _reset(client)  # the target is down: the dialer sees a refused link
                continue
            for s in (client, upstream):
                s.setblocking(False)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Conn(client, upstream, source, dialer)
            with self._lock:
                self._conns = [c for c in self._conns if not c.closed.is_set()]
                self._conns.append(conn)
            # A rule set between the check above and the registration must still apply.
            if self.rule_for(source).cut:
                conn.close(reset=True)
                continue
            self._spawn(self._pump, f"{self.name}-in", conn, client, upstream, "to_target")
            self._spawn(self._pump, f"{self.name}-out", conn, upstream, client, "from_target")

    def _pump(self, conn: _Conn, src: socket.socket, dst: socket.socket, direction: str) -> None:
        held: deque[tuple[float, bytes]] = deque()
        held_bytes = 0
        try:
            while not conn.closed.is_set() and not self._closing.is_set():
                rule = self.rule_for(conn.source)
                if rule.cut:
                    conn.close(reset=True)
                    return
                now = time.monotonic()
                sending = bool(held) and direction not in rule.stalled and held[0][0] <= now
                timeout = POLL_S
                if held and direction not in rule.stalled and not sending:
                    timeout = min(POLL_S, max(0.0, held[0][0] - now))
                readers = [src] if held_bytes < BUFFER_BYTES else []
                writers = [dst] if sending else []
                r, w, _ = select.select(readers, writers, [], timeout)
                if r:
                    try:
                        data = src.recv(CHUNK_BYTES)
                    except BlockingIOError:
                        continue
                    if not data:
                        conn.close()  # EOF from one side closes the link both ways
                        return
                    held.append((time.monotonic() + rule.delay_s, data))
                    held_bytes += len(data)
                if w:
                    due, data = held[0]
                    try:
                        n = dst.send(data)
                    except BlockingIOError:
                        continue
                    conn.moved[direction] += n
                    held_bytes -= n
                    if n == len(data):
                        held.popleft()
                    else:
                        held[0] = (due, data[n:])
        except (OSError, ValueError):
            # A reset, a broken pipe, or select on a socket the other pump closed: the link
            # ends both ways and the dialer reconnects.
            conn.close()


def _set_linger_zero(s: socket.socket) -> None:
    with contextlib.suppress(OSError):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def _reset(s: socket.socket) -> None:
    """Close with RST: the other side sees a reset, not an orderly end."""
    _set_linger_zero(s)
    with contextlib.suppress(OSError):
        s.close()


# -- who dialed: the kernel's socket tables (Linux) ------------------------------------------


def socket_inode(local_port: int, remote_port: int) -> int | None:
    """The inode of the loopback TCP socket bound to `local_port` and connected to
    `remote_port` (from /proc/net/tcp and tcp6), or None."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f, None)
                for line in f:
                    parts = line.split()
                    if len(parts) < 10:
                        continue
                    local, remote = parts[1], parts[2]
                    if (
                        int(local.rsplit(":", 1)[1], 16) == local_port
                        and int(remote.rsplit(":", 1)[1], 16) == remote_port
                    ):
                        return int(parts[9])
        except OSError:
            continue
    return None


def owner_pid(local_port: int, remote_port: int, candidates: list[int]) -> int | None:
    """Which of the `candidates` processes holds the TCP socket (local_port -> remote_port):
    how the proxy tells the dialing broker apart without reading its bytes."""
    inode = socket_inode(local_port, remote_port)
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for pid in candidates:
        fd_dir = f"/proc/{pid}/fd"
        try:
            names = os.listdir(fd_dir)
        except OSError:
            continue
        for name in names:
            try:
                if os.readlink(f"{fd_dir}/{name}") == target:
                    return pid
            except OSError:
                continue
    return None
