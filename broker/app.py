"""Wiring: one broker process (`serve`), or a broker inside the caller's Trio run (`embedded`).

`serve(config)` opens the store (checking node id and format), builds the BrokerNode and its
driver, binds the client, peer and HTTP listeners, prints the one listening line, and runs
until SIGTERM/SIGINT or `stop`: then it stops accepting, lets requests in flight finish (up to
a grace period), writes the last round and closes the store.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import os
import random
import resource
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial

import trio

from broker.config import BrokerConfig, ConfigError, HostPort
from broker.core.context import GroupConfig, TxnConfig
from broker.core.metadata import BrokerInfo
from broker.core.node import BrokerNode, NodeConfig
from broker.core.partition import PartitionConfig
from broker.core.peer_codec import Hello, hello_features
from broker.runtime.console import StatusConsole
from broker.runtime.diagnostics import peer_ping
from broker.runtime.driver import Driver
from broker.runtime.groups import RocksGroupStore
from broker.runtime.http import JSON, TEXT, HttpEndpoint
from broker.runtime.json_logs import JsonLogFormatter
from broker.runtime.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from broker.runtime.metrics import BrokerMetrics, NodeCollector
from broker.runtime.node_metrics import DiskUsage, node_samples
from broker.runtime.otlp_metrics import OtlpConfig, OtlpExporter
from broker.runtime.peers import PeerNetwork
from broker.runtime.server import ClientServer, request_budget
from broker.runtime.store import RocksStore, StoreError, StoreIdentityError, StoreLockedError
from broker.runtime.store.reclaim import reclaim_forever
from broker.runtime.tracing import BrokerTracing, install_global_provider, provider_from_env
from broker.wire.limits import Limits

log = logging.getLogger("sluice")

SHUTDOWN_GRACE_S = 10.0


class StartupError(Exception):
    """The broker cannot start with this configuration or data directory (exit code 2)."""


@dataclass(frozen=True, slots=True)
class Addresses:
    clients: HostPort
    peers: HostPort
    http: HostPort

    def line(self) -> str:
        return f"sluice: listening clients={self.clients} peers={self.peers} http={self.http}"


@dataclass
class Broker:
    """A running broker (for embedded use and tests)."""

    config: BrokerConfig
    addresses: Addresses
    node: BrokerNode
    driver: Driver
    server: ClientServer
    stop: trio.Event
    network: PeerNetwork


def setup_logging(fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonLogFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("sluice")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


def raise_fd_limit() -> int:
    """Raise the soft file-descriptor limit to the hard one; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            log.warning("could not raise the file-descriptor limit from %d", soft)
    return soft


def _ticks(seconds: float, tick_ms: int) -> int:
    """`seconds` in ticks, at least one (0 stays 0: off)."""
    return 0 if seconds <= 0 else max(1, round(seconds * 1000 / tick_ms))


def open_store(config: BrokerConfig) -> RocksStore:
    try:
        return RocksStore.open(
            config.data_dir,
            config.node_id,
            durability=config.sync_mode,  # type: ignore[arg-type]
            audit=config.durability_audit,
            external_payload_bytes=config.external_payload_bytes,
            payload_segment_bytes=config.payload_segment_bytes,
        )
    except (StoreIdentityError, StoreLockedError) as e:
        raise StartupError(str(e)) from None
    except StoreError as e:
        raise StartupError(f"cannot open the data directory {config.data_dir}: {e}") from None
    except OSError as e:
        raise StartupError(f"cannot use the data directory {config.data_dir}: {e}") from None


async def _bind(addr: HostPort, what: str) -> list[trio.SocketListener]:
    try:
        return await trio.open_tcp_listeners(addr.port, host=addr.host)
    except OSError as e:
        raise StartupError(f"cannot listen for {what} on {addr}: {e.strerror}") from None


def _bound(listeners: list[trio.SocketListener]) -> HostPort:
    host, port = listeners[0].socket.getsockname()[:2]
    return HostPort(host, port)


SWITCH_INTERVAL_S = 0.0005
"""The WAL sync thread returns from a GIL-free fsync and then waits for the loop to let it
back in: at most this long, instead of the interpreter's default 5 ms (DECISIONS.md, "The
durable write and the event loop")."""


@asynccontextmanager
async def embedded(config: BrokerConfig) -> AsyncIterator[Broker]:
    """Run a broker inside the caller's Trio run; it stops when the block exits. Sets the
    process's interpreter switch interval to `SWITCH_INTERVAL_S`."""
    config.validate()
    raise_fd_limit()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    store = open_store(config)
    tracing: BrokerTracing | None = None
    try:
        cluster_id = store.cluster_id
        if cluster_id is None and config.is_single_node:
            cluster_id = uuid.uuid4().hex
            store.record_cluster_id(cluster_id)
        seeds = {c.node_id: str(c.address) for c in config.controllers}
        if cluster_id is None and config.node_id in seeds:
            # Proposed only if this seed leads the first controller quorum before any other
            # seed's init is applied: the first applied wins, every broker records it.
            cluster_id = uuid.uuid4().hex
        client_l = await _bind(config.listen, "clients")
        peer_l = await _bind(config.peer_listen, "peers")
        http_l = await _bind(config.http_listen, "HTTP")
        addrs = Addresses(_bound(client_l), _bound(peer_l), _bound(http_l))
        adv = config.advertise or addrs.clients
        adv_peer = config.advertise_peer or addrs.peers
        limits = Limits(max_frame_bytes=config.max_frame_bytes)
        node = BrokerNode(
            NodeConfig(
                node_id=config.node_id,
                incarnation=store.incarnation,
                election_ticks=config.election_ticks,
                heartbeat_ticks=config.heartbeat_ticks,
                default_partitions=config.default_partitions,
                default_replication_factor=config.default_replication_factor,
                catchup_bytes_per_tick=-(-config.catchup_bytes_per_s * config.tick_ms // 1000),
                partition=PartitionConfig(max_message_bytes=config.max_message_bytes),
                tick_ms=config.tick_ms,
                groups=GroupConfig(
                    session_timeout_ms=config.group_session_timeout_ms,
                    min_session_timeout_ms=config.group_min_session_timeout_ms,
                    max_session_timeout_ms=config.group_max_session_timeout_ms,
                    heartbeat_interval_ms=config.group_heartbeat_interval_ms,
                    empty_group_expiry_ms=config.group_empty_expiry_ms,
                ),
                transactions=TxnConfig(
                    max_timeout_ms=config.transaction_max_timeout_ms,
                    precommit_timeout_ms=config.transaction_precommit_timeout_ms,
                    kill_after_precommit="txn.kill_after_precommit" in config.failpoint_names(),
                ),
                internal_topic_partitions=config.offsets_topic_partitions,
                internal_topic_replication_factor=config.offsets_topic_replication_factor,
                quiesce=config.quiesce,
                leader_balance_ticks=_ticks(config.leader_balance_interval_s, config.tick_ms),
                retention_check_ticks=_ticks(config.retention_check_interval_s, config.tick_ms),
            ),
            RocksGroupStore(store),
            random.Random(),
            bootstrap_cluster_id=cluster_id,
            controllers=seeds,
            advertised=BrokerInfo(
                config.node_id,
                store.incarnation,
                adv.host,
                adv.port,
                adv_peer.host,
                adv_peer.port,
                config.rack,
            ),
        )
        driver = Driver(node, store, config.api_versions)
        provider = provider_from_env("sluice-broker", {"sluice.node_id": config.node_id})
        if provider is not None:
            tracing = driver.tracing = BrokerTracing(provider, config.node_id)
        budget = request_budget(config.request_budget_bytes)
        driver.budget = budget
        driver.max_wait_s = config.request_timeout_ms_max / 1000
        network = PeerNetwork(
            config.node_id,
            lambda: Hello(
                store.cluster_id or node.meta.cluster_id,
                config.node_id,
                store.incarnation,
                str(adv_peer),
                node.bootstrapped,
                features=hello_features(config.quiesce),
            ),
            driver,
            node.peer_addresses,
            frozenset(seeds),
        )
        driver.network = network
        metrics = BrokerMetrics(topics=lambda: node.meta.topics)
        server = ClientServer(
            driver,
            limits,
            max_inflight=config.max_inflight_per_connection,
            idle_timeout_s=config.idle_timeout_s,
            max_connections=config.max_connections,
            max_request_timeout_ms=config.request_timeout_ms_max,
            budget=budget,
            stall_timeout_s=config.stall_timeout_s,
            versions=driver.handler.versions,
            metrics=metrics,
        )
        driver.metrics = metrics
        disk = DiskUsage(config.data_dir)
        metrics.add(NodeCollector(partial(node_samples, node, server, network, driver, disk)))
        otlp = OtlpConfig.from_env(os.environ)
        exporter = None if otlp is None else OtlpExporter(otlp, metrics.registry, config.node_id)
        console = StatusConsole(driver, metrics.registry, config.tick_ms)
        console.register()
        http = HttpEndpoint(
            {
                "/": console.page,
                "/healthz": lambda: (200, "ok\n", TEXT),
                "/readyz": lambda: (
                    (200, "ready\n", TEXT) if node.is_ready() else (503, "not ready\n", TEXT)
                ),
                "/stats": lambda: (200, stats_json(server, network, driver), JSON),
            },
            {
                "/peers/ping": partial(peer_ping, driver),
                "/status.json": console.status_json,
                "/metrics": partial(_scrape, metrics),
            },
        )
        stop = trio.Event()
        broker = Broker(config, addrs, node, driver, server, stop, network)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(driver.run)
            nursery.start_soon(_ticker, driver, config.tick_ms)
            nursery.start_soon(_freeze_gc_when_ready, node)
            nursery.start_soon(disk.run)
            if config.store_reclaim_interval_s > 0:
                nursery.start_soon(reclaim_forever, store, config.store_reclaim_interval_s)
            if exporter is not None:
                nursery.start_soon(exporter.run)
            async with trio.open_nursery() as listeners:
                listeners.start_soon(server.serve, client_l)
                listeners.start_soon(http.serve, http_l)
                listeners.start_soon(network.serve, peer_l)
                listeners.start_soon(network.dial_forever)
                try:
                    yield broker
                finally:
                    await _drain(server, driver)
                    listeners.cancel_scope.cancel()
            nursery.cancel_scope.cancel()
    finally:
        if tracing is not None:
            # Flushes the last spans (a blocking export): in a thread, within 5 s.
            with trio.CancelScope(shield=True, deadline=trio.current_time() + 5):
                await trio.to_thread.run_sync(tracing.shutdown, abandon_on_cancel=True)
        store.close()


async def _scrape(metrics: BrokerMetrics, _query: object) -> tuple[int, str, str]:
    return 200, await metrics.render_off_loop(), METRICS_CONTENT_TYPE


def stats_json(server: ClientServer, network: PeerNetwork, driver: Driver) -> str:
    """The broker's counters (GET /stats): client server with its byte budget, peer
    network with its own, driver and node."""
    peer_budget = network.budget
    return json.dumps(
        {
            "server": dataclasses.asdict(server.stats),
            "peers": {
                **dataclasses.asdict(network.stats),
                "budget_bytes": peer_budget.limit,
                "budget_in_use": peer_budget.in_use,
                "budget_peak": peer_budget.peak,
                "budget_waiting": peer_budget.waiting,
            },
            "driver": dataclasses.asdict(driver.stats()),
            "peer_requests": driver.peer_request_stats(),
            "node": driver.node.stats(),
        },
        indent=1,
    )


async def _ticker(driver: Driver, tick_ms: int) -> None:
    """One Raft tick per period. Ticks missed while the process was stalled (a paused
    process, a starved CPU, a long blocking call) are dropped, not delivered in a burst: a
    burst would run out every election and check-quorum timer before the driver had read
    the heartbeats and acknowledgements waiting in its sockets, and the broker would depose
    healthy leaders (itself included). A stall of two ticks or more is logged."""
    period = tick_ms / 1000
    deadline = trio.current_time()
    while True:
        deadline += period
        await trio.sleep_until(deadline)
        late = trio.current_time() - deadline
        if late >= 2 * period:
            log.warning("event loop stalled for %.0f ms; %d ticks skipped", late * 1000,
                        int(late / period))  # fmt: skip
            deadline = trio.current_time()
        driver.tick()


async def _freeze_gc_when_ready(node: BrokerNode) -> None:
    """After start-up and recovery, move everything alive to the permanent generation, so
    the cyclic GC's pauses stay far below the election timeout."""
    while not node.is_ready():
        await trio.sleep(0.05)
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


async def _drain(server: ClientServer, driver: Driver) -> None:
    """Stop taking requests; let the ones in flight be answered (bounded); the caller then
    closes the connections."""
    server.draining = True
    with trio.move_on_after(SHUTDOWN_GRACE_S):
        while server.stats.inflight or driver.handler.pending:
            await trio.sleep(0.01)


async def serve(config: BrokerConfig, *, printer: Callable[[str], None] | None = None) -> None:
    """Run one broker until SIGTERM or SIGINT."""
    out = printer or partial(print, flush=True)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with embedded(config) as broker:
            out(broker.addresses.line())
            log.info("node %d serving; data in %s", config.node_id, config.data_dir)
            async for signum in signals:
                log.info("received %s: shutting down", signal.Signals(signum).name)
                break


def run_serve(config: BrokerConfig) -> int:
    """Exit code: 0 after a clean shutdown, 2 when it cannot start with this config."""
    setup_logging(config.log_format)
    try:
        trio.run(serve, config)
    except (StartupError, ConfigError) as e:
        print(f"sluice serve: {e}", file=sys.stderr, flush=True)
        return 2
    return 0


def install_client_tracing(service: str) -> Callable[[], None]:
    """Client programs (the CLI): install the tracer provider the environment asks for (see
    broker.runtime.tracing) as the global one the client library uses; returns what flushes
    and stops it at exit (nothing when tracing is off)."""
    provider = install_global_provider(service)
    return (lambda: None) if provider is None else provider.shutdown
