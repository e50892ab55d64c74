"""Real broker processes for integration tests: start, wait for the listening line and
/readyz, SIGKILL, SIGSTOP/SIGCONT, restart on the same ports and data directory."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.sluice_cli import ROOT, sluice_command
from tests.support.wait import Lines, WaitTimeout, wait_until

LINE = re.compile(r"sluice: listening clients=(\S+) peers=(\S+) http=(\S+)")


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


EPHEMERAL_LOW = _ephemeral_low()
_handed_out: set[int] = set()
_ports = random.Random()


def free_port() -> int:
    """A port nothing listens on, chosen before the broker that will listen on it starts.
    It is taken below the kernel's ephemeral range: a port from that range (what binding
    port 0 gives) can become the source port of some outgoing connection before the broker
    binds it ("Address already in use", seen in CI). Never the same port twice per run."""
    return free_port_range(1)


def free_port_range(span: int) -> int:
    """A base port P such that P .. P+span-1 are all free on 127.0.0.1 right now, below the
    kernel's ephemeral range and none of them handed out before in this run (see
    `free_port`): for a command that takes a base port and derives the others from it."""
    for _ in range(1000):
        base = _ports.randrange(10_000, EPHEMERAL_LOW - span + 1)
        ports = range(base, base + span)
        if _handed_out.intersection(ports) or not _bindable(ports):
            continue
        _handed_out.update(ports)
        return base
    raise RuntimeError(f"no {span} free consecutive ports found in 10000..{EPHEMERAL_LOW}")


def _bindable(ports: range) -> bool:
    """Every one of `ports` can be bound on 127.0.0.1 (all held at once, then released)."""
    socks: list[socket.socket] = []
    try:
        for port in ports:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        for s in socks:
            s.close()


def broker_env(inherited: Mapping[str, str], asked: Mapping[str, str]) -> dict[str, str]:
    """A test broker's environment: this process's without the `OTEL_*` variables (a
    developer's OpenTelemetry settings must not turn on export in every test broker), then
    what the test asks for (`BrokerProcess.env`, `OTEL_*` included)."""
    kept = {k: v for k, v in inherited.items() if not k.startswith("OTEL_")}
    return {**kept, **asked}


@dataclass
class BrokerProcess:
    data_dir: Path
    node_id: int = 0
    client_port: int = field(default_factory=free_port)
    peer_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    config: dict[str, object] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    """Environment variables the broker gets on top of this process's (`broker_env`)."""
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    stdout: Lines | None = None
    """The running process's stdout, line by line (read by a thread, so it never fills)."""

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"broker-{self.node_id}.log"

    def start(self, timeout: float = 30.0) -> None:
        """Start the process and wait for its listening line. At its first start a client or
        HTTP port another process took since `free_port` picked it (other suites on the same
        machine) is picked again, up to twice; the peer port is not (other brokers' configs
        name it), nor any port at a restart (clients hold the addresses)."""
        for attempt in range(3):
            first = self.starts == 0
            try:
                self._start_once(timeout)
                return
            except WaitTimeout as e:
                taken = "Address already in use" in str(e)
                if not (first and taken and attempt < 2):
                    raise
                if "listen for clients" in str(e):
                    self.client_port = free_port()
                elif "listen for HTTP" in str(e):
                    self.http_port = free_port()
                else:
                    raise
                self.starts = 0

    def _start_once(self, timeout: float) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        cmd = sluice_command(
            "serve",
            "--data-dir", str(self.data_dir),
            "--node-id", str(self.node_id),
            "--listen", f"127.0.0.1:{self.client_port}",
            "--peer-listen", f"127.0.0.1:{self.peer_port}",
            "--http-listen", f"127.0.0.1:{self.http_port}",
        )  # fmt: skip
        if self.config:
            cfg = self.data_dir.parent / f"broker-{self.node_id}.toml"
            cfg.write_text("".join(f"{k} = {_toml(v)}\n" for k, v in self.config.items()))
            cmd += ["--config", str(cfg)]
        self.starts += 1
        log = self.log_path.open("ab")
        log.write(f"--- start {self.starts}\n".encode())
        log.flush()
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, env=broker_env(os.environ, self.env)
        )
        assert self.proc.stdout is not None
        self.stdout = Lines(self.proc.stdout)
        try:
            self.stdout.wait_for(LINE.pattern, timeout)
        except WaitTimeout as e:
            self.kill()
            tail = self.log_tail()
            raise WaitTimeout(f"broker {self.node_id} did not start: {e}; log: {tail}") from None

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until GET /readyz answers 200; WaitTimeout (with the log's tail) after `timeout`."""
        wait_until(
            self._ready,
            f"broker {self.node_id} to be ready (/readyz)",
            timeout=timeout,
            detail=lambda: f"log: {self.log_tail()}",
        )

    def _ready(self) -> bool:
        url = f"http://127.0.0.1:{self.http_port}/readyz"
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            if sig in (signal.SIGKILL, signal.SIGTERM):
                self.proc.wait(timeout=30)

    def stop(self) -> int:
        """SIGTERM and wait: the exit code of a graceful shutdown."""
        assert self.proc is not None
        self.kill(signal.SIGTERM)
        return self.proc.returncode

    def restart(self) -> None:
        self.kill()
        self.start()
        self.wait_ready()

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def stats(self) -> dict[str, Any]:
        """The broker's counters (GET /stats on its HTTP port)."""
        url = f"http://127.0.0.1:{self.http_port}/stats"
        with urllib.request.urlopen(url, timeout=5) as r:
            out: dict[str, Any] = json.loads(r.read())
            return out

    def rss_bytes(self) -> int:
        """The broker process's resident set size now."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS in /proc status")

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return "(no log)"

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


@contextmanager
def running_broker(data_dir: Path, **config: object) -> Iterator[BrokerProcess]:
    """A started broker on `data_dir`, ready (/readyz 200), SIGKILLed on exit: what a test
    module shares through a module-scoped fixture."""
    b = BrokerProcess(data_dir, config=dict(config))
    try:
        b.start()
        b.wait_ready()
        yield b
    finally:
        b.kill()


def _toml(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'
