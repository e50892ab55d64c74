"""Sluice beside NATS JetStream and Redis Streams on this machine: throughput and latency.

Run with `python -m tests.bench.peers_bench` (`--help` lists the flags; `make bench-peers`
installs Debian's nats-server and redis-server first). A benchmark: it prints figures and never
asserts them.

Systems, each started here on 127.0.0.1 in a temporary directory and killed at the end:
- `nats-r1`: one nats-server with JetStream (file storage), a stream with 1 replica;
- `nats-r3`: three nats-servers in a JetStream cluster, a stream with 3 replicas;
- `redis`: one redis-server with `appendonly yes`, `appendfsync always`, `save ''`;
- `sluice-rf1`: one broker, a 1-partition topic with replication factor 1;
- `sluice-rf3`: three brokers, a 1-partition topic with replication factor 3.
NATS keeps its default of no fsync per write (sync_interval 2 min); Redis and Sluice fsync
before they acknowledge.

Workloads, each run once per system per round, the systems in turn (their order rotated every
round) so a noisy machine weighs on all alike; the table shows the median over the rounds:
a) produce: `--records` records of 100 bytes, with each client's normal batching: NATS
   `publish_async` with at most 4,000 acknowledgements pending, Redis XADD in pipelines of
   1,000, Sluice `sluice bench produce` (its Producer, 5 ms linger);
b) latency: `--latency-records` records of 100 bytes offered at `--rate` records/s on a fixed
   schedule (open loop: a late acknowledgement does not delay the next send), each timed from
   its send to its acknowledgement (Sluice with linger 0); p50, p99, p99.9;
c) consume: what a) wrote, from the start: NATS a pull consumer fetching 1,000 at a time, Redis
   XRANGE 1,000 at a time, Sluice `sluice bench consume` (its Consumer).
The peers' Python clients (nats-py, redis-py) run under asyncio in this process; Sluice's
client runs as the `sluice bench` command in a child process, under Trio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import nats
import redis.asyncio as aioredis
from nats.js.api import AckPolicy, ConsumerConfig, StorageType

from tests.bench.cluster_bench import start_cluster
from tests.support.harness import BrokerProcess, free_port
from tests.support.sluice_cli import run_sluice

RECORD = os.urandom(100)
SYSTEMS = ("nats-r1", "redis", "sluice-rf1", "nats-r3", "sluice-rf3")
PACE_STEP_S = 0.001
"""Pacing at `--rate` sleeps only once the sender is this far ahead, as `sluice bench produce`
does, so every system is offered the same small bursts."""
READY_S = 30.0


@dataclass
class Figures:
    """One system's figures per workload, one entry per round."""

    produce: list[float] = field(default_factory=list)
    consume: list[float] = field(default_factory=list)
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    p999: list[float] = field(default_factory=list)


def percentile(sorted_ms: list[float], p: float) -> float:
    return sorted_ms[min(len(sorted_ms) - 1, int(len(sorted_ms) * p))] if sorted_ms else 0.0


def latency_figures(ms: list[float]) -> tuple[float, float, float]:
    ms.sort()
    return percentile(ms, 0.50), percentile(ms, 0.99), percentile(ms, 0.999)


async def paced(n: int, rate: float, send: Callable[[], Awaitable[None]]) -> None:
    """Await `send()` n times on the schedule `rate` per second from now (open loop: `send`
    starts a record on its way and returns without waiting for its acknowledgement)."""
    interval = 1.0 / rate
    next_at = time.perf_counter()
    for i in range(n):
        next_at += interval
        ahead = next_at - time.perf_counter()
        if ahead >= PACE_STEP_S:
            await asyncio.sleep(ahead)
        await send()
        if i % 64 == 0:
            await asyncio.sleep(0)


def wait_port(port: int, what: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port} within {READY_S:.0f} s")


# --- NATS JetStream ------------------------------------------------------------------------


class Nats:
    def __init__(self, base: Path, replicas: int) -> None:
        self.replicas = replicas
        self.procs: list[subprocess.Popen[bytes]] = []
        self.ports = [free_port() for _ in range(replicas)]
        cluster_ports = [free_port() for _ in range(replicas)]
        for i in range(replicas):
            d = base / f"nats-r{replicas}-{i}"
            d.mkdir(parents=True)
            conf = [
                f"listen: 127.0.0.1:{self.ports[i]}",
                f"server_name: n{i}",
                f'jetstream {{ store_dir: "{d / "js"}" }}',
            ]
            if replicas > 1:
                routes = ", ".join(
                    f"nats-route://127.0.0.1:{p}" for j, p in enumerate(cluster_ports) if j != i
                )
                conf.append(
                    f"cluster {{ name: bench; listen: 127.0.0.1:{cluster_ports[i]}; "
                    f"routes: [{routes}] }}"
                )
            (d / "nats.conf").write_text("\n".join(conf) + "\n")
            log = (d / "nats.log").open("wb")
            self.procs.append(
                subprocess.Popen(
                    ["nats-server", "-c", str(d / "nats.conf")], stdout=log, stderr=log
                )
            )
        try:
            for p, proc in zip(self.ports, self.procs, strict=True):
                wait_port(p, "nats-server", proc)
            asyncio.run(self._wait_jetstream())
        except BaseException:
            self.kill()
            raise

    @property
    def servers(self) -> list[str]:
        return [f"nats://127.0.0.1:{p}" for p in self.ports]

    async def _wait_jetstream(self) -> None:
        """Until a stream of `replicas` can be created (the cluster has a meta leader)."""
        nc = await nats.connect(servers=self.servers)
        try:
            js = nc.jetstream()
            deadline = time.monotonic() + READY_S
            while True:
                try:
                    await js.add_stream(
                        name="ready", subjects=["ready"], num_replicas=self.replicas
                    )
                    await js.delete_stream("ready")
                    return
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.2)
        finally:
            await nc.close()

    async def _stream(self, js: nats.js.JetStreamContext, name: str) -> None:
        await js.add_stream(
            name=name, subjects=[name], storage=StorageType.FILE, num_replicas=self.replicas
        )

    def produce(self, name: str, n: int) -> float:
        async def go() -> float:
            nc = await nats.connect(servers=self.servers)
            try:
                js = nc.jetstream(publish_async_max_pending=4000)
                await self._stream(js, name)
                start = time.perf_counter()
                for _ in range(n):
                    await js.publish_async(name, RECORD)
                await js.publish_async_completed()
                return n / (time.perf_counter() - start)
            finally:
                await nc.close()

        return asyncio.run(go())

    def latency(self, name: str, n: int, rate: float) -> list[float]:
        async def go() -> list[float]:
            nc = await nats.connect(servers=self.servers)
            try:
                js = nc.jetstream(publish_async_max_pending=100_000)
                await self._stream(js, name)
                ms: list[float] = []
                pending: list[asyncio.Future[object]] = []

                def acked(sent: float) -> Callable[[asyncio.Future[object]], None]:
                    def done(f: asyncio.Future[object]) -> None:
                        f.result()
                        ms.append((time.perf_counter() - sent) * 1000)

                    return done

                async def send() -> None:
                    sent = time.perf_counter()
                    f = await js.publish_async(name, RECORD)
                    f.add_done_callback(acked(sent))
                    pending.append(f)

                await paced(n, rate, send)
                await asyncio.gather(*pending)
                return ms
            finally:
                await nc.close()

        return asyncio.run(go())

    def consume(self, name: str, n: int) -> float:
        async def go() -> float:
            nc = await nats.connect(servers=self.servers)
            try:
                js = nc.jetstream()
                sub = await js.pull_subscribe(
                    name, stream=name, config=ConsumerConfig(ack_policy=AckPolicy.NONE)
                )
                got = 0
                start = time.perf_counter()
                while got < n:
                    got += len(await sub.fetch(min(1000, n - got), timeout=10))
                rate = n / (time.perf_counter() - start)
                await js.delete_stream(name)
                return rate
            finally:
                await nc.close()

        return asyncio.run(go())

    def kill(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=30)


# --- Redis Streams ---------------------------------------------------------------------------


class Redis:
    def __init__(self, base: Path) -> None:
        d = base / "redis"
        d.mkdir(parents=True)
        self.port = free_port()
        log = (d / "redis.log").open("wb")
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--bind", "127.0.0.1",
                "--port", str(self.port),
                "--dir", str(d),
                "--appendonly", "yes",
                "--appendfsync", "always",
                "--save", "",
                "--daemonize", "no",
            ],
            stdout=log,
            stderr=log,
        )  # fmt: skip
        try:
            wait_port(self.port, "redis-server", self.proc)
        except BaseException:
            self.kill()
            raise

    def client(self) -> aioredis.Redis:
        # Blocking: past 256 requests in flight a send waits for a connection (and that wait
        # counts in its latency) instead of failing.
        pool = aioredis.BlockingConnectionPool(
            host="127.0.0.1", port=self.port, max_connections=256, timeout=None
        )
        return aioredis.Redis.from_pool(pool)

    def produce(self, name: str, n: int) -> float:
        async def go() -> float:
            r = self.client()
            try:
                start = time.perf_counter()
                for at in range(0, n, 1000):
                    pipe = r.pipeline(transaction=False)
                    for _ in range(min(1000, n - at)):
                        pipe.xadd(name, {"v": RECORD})
                    await pipe.execute()
                return n / (time.perf_counter() - start)
            finally:
                await r.aclose()

        return asyncio.run(go())

    def latency(self, name: str, n: int, rate: float) -> list[float]:
        async def go() -> list[float]:
            r = self.client()
            ms: list[float] = []
            tasks: list[asyncio.Task[None]] = []

            async def one(sent: float) -> None:
                await r.xadd(name, {"v": RECORD})
                ms.append((time.perf_counter() - sent) * 1000)

            async def send() -> None:
                tasks.append(asyncio.create_task(one(time.perf_counter())))

            try:
                # Open the connections a burst will use before the clock starts.
                await asyncio.gather(*(r.ping() for _ in range(16)))
                await paced(n, rate, send)
                await asyncio.gather(*tasks)
                return ms
            finally:
                await r.aclose()

        return asyncio.run(go())

    def consume(self, name: str, n: int) -> float:
        async def go() -> float:
            r = self.client()
            try:
                got = 0
                after = "-"
                start = time.perf_counter()
                while got < n:
                    batch = await r.xrange(name, min=after, count=min(1000, n - got))
                    got += len(batch)
                    after = "(" + batch[-1][0].decode()
                rate = n / (time.perf_counter() - start)
                await r.delete(name)
                return rate
            finally:
                await r.aclose()

        return asyncio.run(go())

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


# --- Sluice ----------------------------------------------------------------------------------


class Sluice:
    def __init__(self, base: Path, replicas: int) -> None:
        self.replicas = replicas
        self.brokers: list[BrokerProcess] = []
        if replicas == 1:
            (base / "sluice-rf1").mkdir(parents=True)
            b = BrokerProcess(base / "sluice-rf1" / "d0")
            self.brokers.append(b)
            b.start()
            try:
                b.wait_ready()
            except BaseException:
                b.kill()
                raise
        else:
            (base / "sluice-rf3").mkdir(parents=True)
            self.brokers = start_cluster(base / "sluice-rf3", replicas)

    def _bench(self, *args: str) -> dict[str, float]:
        bootstrap = ",".join(b.bootstrap for b in self.brokers)
        out = run_sluice(
            "bench", *args, "--bootstrap", bootstrap, "--json", timeout=None, check=True
        )
        return dict(json.loads(out.stdout))

    def _produce(self, name: str, n: int, *extra: str) -> dict[str, float]:
        return self._bench(
            "produce",
            "--records", str(n),
            "--topic", name,
            "--partitions", "1",
            "--replication-factor", str(self.replicas),
            *extra,
        )  # fmt: skip

    def produce(self, name: str, n: int) -> float:
        return self._produce(name, n)["records_per_s"]

    def latency(self, name: str, n: int, rate: float) -> tuple[float, float, float]:
        f = self._produce(name, n, "--rate", str(rate), "--linger-ms", "0")
        return f["latency_p50_ms"], f["latency_p99_ms"], f["latency_p999_ms"]

    def consume(self, name: str, n: int) -> float:
        return self._bench("consume", "--records", str(n), "--topic", name)["records_per_s"]

    def kill(self) -> None:
        for b in self.brokers:
            b.kill()


# --- the run ---------------------------------------------------------------------------------

System = Nats | Redis | Sluice


def start(name: str, base: Path) -> System:
    if name == "nats-r1":
        return Nats(base, 1)
    if name == "nats-r3":
        return Nats(base, 3)
    if name == "redis":
        return Redis(base)
    if name == "sluice-rf1":
        return Sluice(base, 1)
    if name == "sluice-rf3":
        return Sluice(base, 3)
    raise ValueError(name)


def version(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return "(not found)"


def run_round(
    r: int, systems: dict[str, System], figures: dict[str, Figures], args: argparse.Namespace
) -> None:
    names = list(systems)
    k = r % len(names)
    order = names[k:] + names[:k]
    for name in order:
        s, f = systems[name], figures[name]
        rate = s.produce(f"tput{r}", args.records)
        f.produce.append(rate)
        print(f"  round {r + 1} produce  {name:<11} {rate:>10,.0f} records/s", flush=True)
    for name in order:
        s, f = systems[name], figures[name]
        if isinstance(s, Sluice):
            p50, p99, p999 = s.latency(f"lat{r}", args.latency_records, args.rate)
        else:
            p50, p99, p999 = latency_figures(s.latency(f"lat{r}", args.latency_records, args.rate))
        f.p50.append(p50)
        f.p99.append(p99)
        f.p999.append(p999)
        print(
            f"  round {r + 1} latency  {name:<11} p50 {p50:.2f} ms  p99 {p99:.2f} ms  "
            f"p99.9 {p999:.2f} ms",
            flush=True,
        )
    for name in order:
        s, f = systems[name], figures[name]
        rate = s.consume(f"tput{r}", args.records)
        f.consume.append(rate)
        print(f"  round {r + 1} consume  {name:<11} {rate:>10,.0f} records/s", flush=True)


def baseline(name: str, systems: dict[str, System]) -> str | None:
    """The Sluice a peer is compared with: the one with as many replicas."""
    want = "sluice-rf3" if name.endswith("3") else "sluice-rf1"
    return want if want in systems else None


def table(systems: dict[str, System], figures: dict[str, Figures]) -> str:
    rows = [
        ("produce records/s", "produce", True),
        ("latency p50 ms", "p50", False),
        ("latency p99 ms", "p99", False),
        ("latency p99.9 ms", "p999", False),
        ("consume records/s", "consume", True),
    ]
    lines = [
        "| workload | system | figure | Sluice's advantage |",
        "|---|---|---|---|",
    ]
    for label, attr, higher_better in rows:
        for name in systems:
            value = statistics.median(getattr(figures[name], attr))
            shown = f"{value:,.0f}" if higher_better else f"{value:.2f}"
            base = baseline(name, systems)
            ratio = ""
            if base is not None and base != name:
                ref = statistics.median(getattr(figures[base], attr))
                if value and ref:
                    ratio = f"{(ref / value) if higher_better else (value / ref):.2f}x vs {base}"
            lines.append(f"| {label} | {name} | {shown} | {ratio} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=200_000, help="records produced and consumed")
    ap.add_argument("--latency-records", type=int, default=10_000, help="records timed at --rate")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rate", type=float, default=5000.0, help="records/s of the latency run")
    ap.add_argument(
        "--only", default=",".join(SYSTEMS), help=f"comma-separated subset of {','.join(SYSTEMS)}"
    )
    args = ap.parse_args()
    wanted = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(wanted) - set(SYSTEMS)
    if unknown:
        ap.error(f"unknown systems: {', '.join(sorted(unknown))}")
    base = Path(tempfile.mkdtemp(prefix="sluice-peers-bench-"))
    machine = (
        f"{platform.node()}: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{version(['nats-server', '--version'])}, {version(['redis-server', '--version'])}"
    )
    print(machine, flush=True)
    print(f"data in {base}", flush=True)
    systems: dict[str, System] = {}
    try:
        for name in SYSTEMS:
            if name in wanted:
                t = time.perf_counter()
                systems[name] = start(name, base)
                print(f"  started {name} ({time.perf_counter() - t:.1f} s)", flush=True)
        figures = {name: Figures() for name in systems}
        for r in range(args.rounds):
            run_round(r, systems, figures, args)
    finally:
        for s in systems.values():
            try:
                s.kill()
            except Exception as e:
                print(f"  kill failed: {e!r}", flush=True)
        shutil.rmtree(base, ignore_errors=True)
    print()
    print(machine)
    print(
        f"{args.records:,} records of 100 bytes produced and consumed; latency over "
        f"{args.latency_records:,} records offered at {args.rate:,.0f}/s; median of "
        f"{args.rounds} round(s). Sluice's advantage: how many times better Sluice's figure is "
        "(above 1: Sluice ahead) than the peer's, against Sluice with as many replicas."
    )
    print(table(systems, figures))


if __name__ == "__main__":
    main()
