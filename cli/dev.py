"""`sluice dev cluster`: N brokers on this machine, supervised in the foreground.

Layout (the contract): broker i has node id i, its data in DIR/node-i, clients on P+10i, peers
on P+10i+1 and HTTP on P+10i+3 (broker 0 has `serve`'s default ports when P = 9092); the first
min(N, 3) brokers are the controller quorum's voters. Each broker is `sys.executable -m
cli.main serve ...`, so no PATH is needed; the package's directory is put first on the
children's PYTHONPATH so `-m cli.main` resolves from any working directory.

Output: each broker's stdout lines (its `sluice: listening ...` line) on stdout prefixed with
`broker I: `; once every running broker answers 200 on /readyz, one line `sluice: cluster up:
...  bootstrap=HOST:PORT,...`. A broker's stderr (its logs) is appended to DIR/node-I.log.
A broker that exits is reported on stderr (`sluice: broker 2 exited with code -9`, a negative
code being the signal that killed it, with the last line of its log) and left down while the
others keep running; once every broker has exited the command exits 1.

Stopping: SIGINT (Ctrl-C) or SIGTERM sends SIGTERM to every running broker, SIGKILL to any
still running STOP_GRACE_S later, waits for all of them, and exits 0.

Children die with the supervisor even when it is SIGKILLed: on Linux each child asks for
SIGKILL when its parent dies (prctl PR_SET_PDEATHSIG in a preexec_fn, which also exits at
once if the parent died before the prctl took effect). The kernel sends that signal when the
*thread* that forked the child ends, so children are forked from the thread running the Trio
loop (the process's main thread), never from a worker thread as `trio.run_process` would.
Children also stay in the supervisor's process group, so a group kill reaches them on any OS.

The children inherit the environment except the `SLUICE_*` options that must differ per broker
(data dir, listeners, node id, controllers, advertised addresses): `SLUICE_CONFIG`,
`SLUICE_LOG_FORMAT` or `SLUICE_RACK`, say, apply to every broker.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import trio
import typer

import cli
from cli.common import usage

app = typer.Typer(no_args_is_help=True, help="Development helpers: a local cluster.")

HOST = "127.0.0.1"
PORT_STRIDE = 10
"""Broker i's ports start at base + PORT_STRIDE * i."""
PEER_OFFSET = 1
HTTP_OFFSET = 3
MAX_CONTROLLERS = 3
PORT_MAX = 65535
STOP_GRACE_S = 15.0
"""How long a broker may take over a clean shutdown before it is SIGKILLed."""
READY_POLL_S = 0.2
READY_NOTE_S = 30.0
"""After this long without every broker ready, say which ones are still starting."""
HTTP_TIMEOUT_S = 2.0
MAX_LINE_BYTES = 64 * 1024
"""A longer stdout line from a broker is forwarded in pieces."""
LOG_TAIL_BYTES = 4096
LISTENING = "sluice: listening "
PR_SET_PDEATHSIG = 1

_PER_BROKER_ENV = frozenset(
    {
        "SLUICE_DATA_DIR",
        "SLUICE_LISTEN",
        "SLUICE_PEER_LISTEN",
        "SLUICE_HTTP_LISTEN",
        "SLUICE_NODE_ID",
        "SLUICE_CONTROLLERS",
        "SLUICE_ADVERTISE",
        "SLUICE_ADVERTISE_PEER",
    }
)
"""`serve` options read from the environment that must differ per broker: not passed on."""


@dataclass(frozen=True, slots=True)
class BrokerPlan:
    """Where one broker of the dev cluster lives."""

    node_id: int
    data_dir: Path
    client_port: int
    peer_port: int
    http_port: int

    @property
    def address(self) -> str:
        return f"{HOST}:{self.client_port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir.with_name(f"{self.data_dir.name}.log")

    def command(self, controllers: str) -> list[str]:
        return [
            sys.executable, "-m", "cli.main", "serve",
            "--data-dir", str(self.data_dir),
            "--node-id", str(self.node_id),
            "--listen", self.address,
            "--peer-listen", f"{HOST}:{self.peer_port}",
            "--http-listen", f"{HOST}:{self.http_port}",
            "--controllers", controllers,
        ]  # fmt: skip


def plan_cluster(nodes: int, data_dir: Path, base_port: int) -> list[BrokerPlan]:
    """The brokers of an N-node dev cluster; ValueError (a usage error) when N < 1 or a port
    would fall outside 1..65535."""
    if nodes < 1:
        raise ValueError(f"--nodes must be at least 1, got {nodes}")
    last = base_port + PORT_STRIDE * (nodes - 1) + HTTP_OFFSET
    if base_port < 1 or last > PORT_MAX:
        raise ValueError(
            f"--base-port {base_port} with --nodes {nodes} needs ports {base_port}..{last}; "
            f"they must lie within 1..{PORT_MAX}"
        )
    root = data_dir.resolve()
    return [
        BrokerPlan(
            node_id=i,
            data_dir=root / f"node-{i}",
            client_port=base_port + PORT_STRIDE * i,
            peer_port=base_port + PORT_STRIDE * i + PEER_OFFSET,
            http_port=base_port + PORT_STRIDE * i + HTTP_OFFSET,
        )
        for i in range(nodes)
    ]


def controllers_arg(plans: Sequence[BrokerPlan]) -> str:
    """`--controllers`: the first min(N, 3) brokers, ID@HOST:PEERPORT,..."""
    return ",".join(f"{p.node_id}@{HOST}:{p.peer_port}" for p in plans[:MAX_CONTROLLERS])


@app.command("cluster")
def cluster(
    nodes: Annotated[int, typer.Option("--nodes", help="Brokers to run (node ids 0..N-1).")] = 3,
    data_dir: Annotated[
        Path,
        typer.Option(
            "--data-dir", help="Broker i keeps its data in DIR/node-i, logs in DIR/node-i.log."
        ),
    ] = Path("data-cluster"),
    base_port: Annotated[
        int,
        typer.Option(
            "--base-port",
            help="Broker i listens on P+10i (clients), P+10i+1 (peers), P+10i+3 (HTTP).",
        ),
    ] = 9092,
) -> None:
    """Run N brokers on this machine in the foreground; Ctrl-C or SIGTERM stops them all. A
    broker that dies is reported and left down (kill one to watch the cluster fail over)."""
    try:
        plans = plan_cluster(nodes, data_dir, base_port)
    except ValueError as e:
        raise usage(str(e)) from None
    try:
        code = trio.run(_supervise, plans)
    except KeyboardInterrupt:  # before the signal receiver was installed: nothing started
        code = 130
    raise typer.Exit(code)


# ------------------------------------------------------------------------------ supervisor


@dataclass(eq=False)
class _Broker:
    plan: BrokerPlan
    process: subprocess.Popen[bytes]
    stdout: trio.lowlevel.FdStream
    listening: bool = False
    returncode: int | None = None
    """Set by its watcher once the process has exited."""


async def _supervise(plans: list[BrokerPlan]) -> int:
    """Start every broker, forward their output, report deaths; on SIGINT/SIGTERM stop them
    all. Invariant: every child started here has exited when this returns."""
    controllers = controllers_arg(plans)
    env = _child_env()
    preexec = _die_with_parent()
    brokers: list[_Broker] = []
    outcome = 0
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        try:
            try:
                for plan in plans:
                    brokers.append(_spawn(plan, controllers, env, preexec))
            except (OSError, subprocess.SubprocessError) as e:
                _err(f"cannot start broker {len(brokers)}: {e}")
                return 1
            async with trio.open_nursery() as nursery:

                def on_exit() -> None:
                    nonlocal outcome
                    if all(b.returncode is not None for b in brokers):
                        _err("every broker has exited")
                        outcome = 1
                        nursery.cancel_scope.cancel()

                for b in brokers:
                    nursery.start_soon(_watch, b, on_exit)
                nursery.start_soon(_announce_when_ready, brokers)
                async for signum in signals:
                    _err(f"{signal.Signals(signum).name}: stopping the brokers")
                    break
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await _stop(brokers, signals)
    return outcome


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _PER_BROKER_ENV}
    root = str(Path(cli.__file__).resolve().parent.parent)
    old = env.get("PYTHONPATH")
    env["PYTHONPATH"] = f"{root}{os.pathsep}{old}" if old else root
    return env


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn making the child receive SIGKILL when this process dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:  # runs in the child between fork and exec: keep it minimal
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the prctl took effect
            os._exit(1)

    return preexec


def _spawn(
    plan: BrokerPlan, controllers: str, env: dict[str, str], preexec: Callable[[], None] | None
) -> _Broker:
    """Fork one broker from the calling (main) thread; its stdout is a pipe read by Trio."""
    plan.data_dir.parent.mkdir(parents=True, exist_ok=True)
    read_fd, write_fd = os.pipe()
    try:
        with plan.log_path.open("ab") as log:
            process = subprocess.Popen(
                plan.command(controllers),
                stdin=subprocess.DEVNULL,
                stdout=write_fd,
                stderr=log,
                env=env,
                preexec_fn=preexec,  # forked from the main thread (see the module docstring)
            )
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    return _Broker(plan, process, trio.lowlevel.FdStream(read_fd))


async def _watch(b: _Broker, on_exit: Callable[[], None]) -> None:
    """Forward the broker's stdout lines until it closes, then record and report its exit."""
    node = b.plan.node_id
    async with b.stdout:
        pending = bytearray()
        while data := await b.stdout.receive_some(65536):
            pending += data
            while (end := pending.find(b"\n")) >= 0 or len(pending) > MAX_LINE_BYTES:
                cut = end if end >= 0 else MAX_LINE_BYTES
                _line(b, bytes(pending[:cut]))
                del pending[: cut + 1 if end >= 0 else cut]
        if pending:
            _line(b, bytes(pending))
    b.returncode = await _wait_exit(b.process)
    tail = _last_log_line(b.plan.log_path) if b.returncode > 0 else ""
    _err(
        f"broker {node} exited with code {b.returncode}"
        + (f": {tail}" if tail else "")
        + f" (log: {b.plan.log_path})"
    )
    on_exit()


def _line(b: _Broker, raw: bytes) -> None:
    text = raw.decode(errors="replace").rstrip("\r")
    if text.startswith(LISTENING):
        b.listening = True
    _out(f"broker {b.plan.node_id}: {text}")


async def _wait_exit(process: subprocess.Popen[bytes]) -> int:
    """The exit code, without a thread: a pidfd turns readable when the process exits. (Only
    an unreaped child is looked up by pid: a reaped one's pid may already be reused.)"""
    if process.returncode is not None:
        return process.returncode
    pidfd_open = getattr(os, "pidfd_open", None)
    fd = -1
    if pidfd_open is not None:
        with contextlib.suppress(OSError):  # already reaped, or no pidfd support
            fd = pidfd_open(process.pid)
    if fd < 0:
        while (code := process.poll()) is None:
            await trio.sleep(0.05)
        return code
    try:
        await trio.lowlevel.wait_readable(fd)
    finally:
        os.close(fd)
    return process.wait()


async def _announce_when_ready(brokers: list[_Broker]) -> None:
    """Once every running broker has printed its listening line and answers 200 on /readyz,
    print the cluster-up line (once)."""
    started = trio.current_time()
    noted = False
    while True:
        running = [b for b in brokers if b.returncode is None]
        if not running:
            return
        waiting = [b for b in running if not (b.listening and await _ready(b.plan.http_port))]
        if not waiting:
            break
        if not noted and trio.current_time() - started > READY_NOTE_S:
            ids = ", ".join(str(b.plan.node_id) for b in waiting)
            _err(
                f"still waiting for /readyz of {'broker' if len(waiting) == 1 else 'brokers'} {ids}"
            )
            noted = True
        await trio.sleep(READY_POLL_S)
    bootstrap = ",".join(b.plan.address for b in running)
    _out(
        f"sluice: cluster up: {len(running)} of {len(brokers)} brokers ready, bootstrap={bootstrap}"
    )


async def _ready(http_port: int) -> bool:
    """GET /readyz answered 200."""
    request = f"GET /readyz HTTP/1.1\r\nHost: {HOST}:{http_port}\r\nConnection: close\r\n\r\n"
    head = b""
    with trio.move_on_after(HTTP_TIMEOUT_S):
        try:
            stream = await trio.open_tcp_stream(HOST, http_port)
            async with stream:
                await stream.send_all(request.encode())
                while b"\r\n" not in head and len(head) < 1024:
                    data = await stream.receive_some(1024)
                    if not data:
                        break
                    head += data
        except (OSError, trio.BrokenResourceError):
            return False
    status = head.split(b"\r\n", 1)[0].split()
    return len(status) >= 2 and status[1] == b"200"


async def _stop(brokers: list[_Broker], signals: AsyncIterator[int]) -> None:
    """SIGTERM every running broker, SIGKILL those still running after the grace period (or
    at once on another SIGINT/SIGTERM), and wait for all of them."""
    running = [b for b in brokers if b.process.poll() is None]
    for b in running:
        with contextlib.suppress(ProcessLookupError):
            b.process.send_signal(signal.SIGTERM)
    async with trio.open_nursery() as nursery:

        async def impatient() -> None:
            async for _ in signals:
                _err("stopping now (SIGKILL)")
                nursery.cancel_scope.cancel()

        nursery.start_soon(impatient)
        with trio.move_on_after(STOP_GRACE_S):
            for b in running:
                await _wait_exit(b.process)
        nursery.cancel_scope.cancel()
    for b in running:
        if b.process.poll() is None:
            _err(f"broker {b.plan.node_id} still running: SIGKILL")
            with contextlib.suppress(ProcessLookupError):
                b.process.kill()
    for b in brokers:
        await _wait_exit(b.process)
        await b.stdout.aclose()
    if running:
        _err("every broker stopped")


def _last_log_line(path: Path) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - LOG_TAIL_BYTES))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    return next((line.strip() for line in reversed(lines) if line.strip()), "")


def _out(line: str) -> None:
    try:
        print(line, flush=True)
    except BrokenPipeError:
        # Nobody reads our stdout any more: keep supervising, write into the void.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _err(message: str) -> None:
    print(f"sluice: {message}", file=sys.stderr, flush=True)
