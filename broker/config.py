"""Broker configuration: defaults < TOML file < environment (SLUICE_<OPTION>) < flags.

One frozen `BrokerConfig` with typed defaults and units in the names. The CLI passes the
options a user gave (from flags or the environment, which typer resolves) as overrides; the
TOML file fills the rest; defaults fill what neither set. Every bad value raises ConfigError
naming the option, which the CLI turns into exit code 2.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from broker.wire.api import ApiKey, VersionRange, capped


class ConfigError(ValueError):
    """A bad configuration value (exit code 2)."""


KNOWN_FAILPOINTS = frozenset({"txn.kill_after_precommit"})


@dataclass(frozen=True, slots=True)
class HostPort:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str, option: str) -> HostPort:
        host, sep, port = text.rpartition(":")
        if not sep or not host:
            raise ConfigError(f"{option}: expected HOST:PORT, got {text!r}")
        host = host.strip("[]")
        try:
            n = int(port)
        except ValueError:
            raise ConfigError(f"{option}: port must be a number, got {port!r}") from None
        if not 0 <= n <= 65535:
            raise ConfigError(f"{option}: port must be 0..65535, got {n}")
        return cls(host, n)

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Controller:
    node_id: int
    address: HostPort


def parse_controllers(text: str) -> tuple[Controller, ...]:
    """`ID@HOST:PEERPORT,...`"""
    out = []
    for part in text.split(","):
        part = part.strip()
        node, sep, addr = part.partition("@")
        if not sep:
            raise ConfigError(f"controllers: expected ID@HOST:PORT, got {part!r}")
        try:
            nid = int(node)
        except ValueError:
            raise ConfigError(f"controllers: node id must be a number, got {node!r}") from None
        if nid < 0:
            raise ConfigError(f"controllers: node id must be >= 0, got {nid}")
        out.append(Controller(nid, HostPort.parse(addr, "controllers")))
    ids = [c.node_id for c in out]
    if len(set(ids)) != len(ids):
        raise ConfigError("controllers: a node id is listed twice")
    if not 1 <= len(out) <= 5:
        raise ConfigError("controllers: list 1 to 5 voters")
    return tuple(out)


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    data_dir: Path = Path("./data")
    listen: HostPort = HostPort("127.0.0.1", 9092)
    peer_listen: HostPort = HostPort("127.0.0.1", 9093)
    http_listen: HostPort = HostPort("127.0.0.1", 9095)
    node_id: int = 0
    controllers: tuple[Controller, ...] = ()
    advertise: HostPort | None = None
    advertise_peer: HostPort | None = None
    rack: str | None = None
    log_format: str = "text"
    tick_ms: int = 50
    election_ticks: int = 6
    heartbeat_ticks: int = 2
    max_frame_bytes: int = 16 << 20
    max_inflight_per_connection: int = 64
    max_connections: int = 20_000
    idle_timeout_s: float = 600.0
    request_budget_bytes: int = 128 << 20
    """Bytes of client requests (received, partly received, or waiting for their answer)
    and of answers not yet sent, all connections together; when spent, no connection is
    read until answers free room. A quarter is kept for requests of at most 64 KiB."""
    stall_timeout_s: float = 30.0
    """A connection silent this long in the middle of a frame, or not reading its
    answers, is closed."""
    request_timeout_ms_max: int = 300_000
    sync_mode: str = "pipelined"
    """How a round's write is made durable: `pipelined` (written on the event loop, synced
    by one thread while the next rounds begin) or `inline` (a synced write on the loop)."""
    durability_audit: bool = False
    external_payload_bytes: int = 32 << 10
    """A log entry whose payload is at least this large keeps it in an append-only payload
    segment (`<data_dir>/payloads/`) instead of RocksDB, so its bytes reach the disk once;
    0: every payload stays in RocksDB."""
    payload_segment_bytes: int = 256 << 20
    """A payload segment is sealed once this large and deleted once no log entry points
    into it any more (its entries compacted by retention, or their topic deleted)."""
    retention_check_interval_s: float = 5.0
    """Every this many seconds each partition leader checks its topic's retention.ms and
    retention.bytes and proposes the new log start offset (deletion takes up to this much
    longer than the topic asks); 0: never."""
    store_reclaim_interval_s: float = 10.0
    """At most this often, and only after retention or a topic deletion removed records, a
    worker thread compacts the removed key ranges in RocksDB and payload segments nothing
    points into are deleted, so the disk is given back; 0: never while running (payload
    segments still go at the next start)."""
    max_message_bytes: int = 1 << 20
    default_partitions: int = 1
    default_replication_factor: int = 1
    catchup_bytes_per_s: int = 50 << 20
    """Replication to replicas catching up, per broker (all its leaders together); 0: no
    throttle."""
    quiesce: bool = True
    """Idle Raft groups quiesce: no ticks, no heartbeats, while a broker-level keepalive on
    each peer link stands in (only with peers whose hello lists `quiesce`; see
    ARCHITECTURE.md, Quiescence). `false`: every group heartbeats all the time, as before."""
    group_session_timeout_ms: int = 10_000
    """A group member's session timeout when it asks for none."""
    group_min_session_timeout_ms: int = 1_000
    group_max_session_timeout_ms: int = 300_000
    group_heartbeat_interval_ms: int = 2_000
    """Members heartbeat this often (a third of their session timeout when that is less)."""
    group_empty_expiry_ms: int = 7 * 24 * 3600 * 1000
    """A consumer group with no members is deleted, offsets included, after this long."""
    offsets_topic_partitions: int = 16
    """Partitions (Raft groups) of `__consumer_offsets`, fixed once the topic exists."""
    offsets_topic_replication_factor: int = 3
    """Capped at the brokers alive when the topic is created (on first use)."""
    leader_balance_interval_s: float = 30.0
    """Every this many seconds the controller moves leaderships back to their preferred
    replicas (the first of each replica list) where those are alive and caught up, a bounded
    number of transfers at a time; 0: never on its own (`sluice leaders balance` still
    does)."""
    transaction_max_timeout_ms: int = 900_000
    """The longest transaction timeout a producer may ask for."""
    transaction_precommit_timeout_ms: int = 10_000
    """A participant commits a pre-committed transaction itself once its coordinator stayed
    silent this long."""
    failpoints: str = ""
    """Fault injection for tests, comma-separated; empty in production. Known:
    `txn.kill_after_precommit` (a transaction coordinator's leader never sends COMMIT: once
    every participant of a transaction acknowledged PRECOMMIT, the broker SIGKILLs itself)."""
    max_api_versions: Mapping[ApiKey, int] = field(default_factory=dict)
    """Per API, the newest client-protocol version this broker serves (TOML: a table of API
    names, `[max_api_versions]` `fetch = 0`): it advertises no more and refuses newer
    requests with UNSUPPORTED_VERSION. For a rolling upgrade (serve the old versions until
    every broker runs the new code) or to switch off a faulty version. Default: all."""

    @classmethod
    def load(
        cls, file: Path | None = None, overrides: dict[str, Any] | None = None
    ) -> BrokerConfig:
        values: dict[str, Any] = {}
        if file is not None:
            try:
                with file.open("rb") as f:
                    table = tomllib.load(f)
            except OSError as e:
                raise ConfigError(f"config: cannot read {file}: {e.strerror}") from None
            except tomllib.TOMLDecodeError as e:
                raise ConfigError(f"config: {file} is not valid TOML: {e}") from None
            for key, value in table.items():
                values[key.replace("-", "_")] = value
        for key, value in (overrides or {}).items():
            if value is not None:
                values[key] = value
        return cls.from_mapping(values)

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> BrokerConfig:
        known = {f.name: f for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, raw in values.items():
            if key not in known:
                raise ConfigError(f"unknown option {key!r}")
            kwargs[key] = _convert(key, raw)
        cfg = cls(**kwargs)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if self.node_id < 0:
            raise ConfigError("node_id must be >= 0")
        if self.log_format not in ("text", "json"):
            raise ConfigError("log_format must be text or json")
        if self.sync_mode not in ("inline", "pipelined"):
            raise ConfigError("sync_mode must be pipelined or inline")
        if self.tick_ms < 1:
            raise ConfigError("tick_ms must be >= 1")
        if not 1 <= self.heartbeat_ticks < self.election_ticks:
            raise ConfigError("need 1 <= heartbeat_ticks < election_ticks")
        if self.max_frame_bytes < 1024:
            raise ConfigError("max_frame_bytes must be >= 1024")
        if self.max_inflight_per_connection < 1 or self.max_connections < 1:
            raise ConfigError("max_inflight_per_connection and max_connections must be >= 1")
        if self.idle_timeout_s <= 0:
            raise ConfigError("idle_timeout_s must be > 0")
        if self.stall_timeout_s <= 0:
            raise ConfigError("stall_timeout_s must be > 0")
        need = -(-(self.max_frame_bytes + (64 << 10)) * 4 // 3)
        if self.request_budget_bytes < need:
            raise ConfigError(
                f"request_budget_bytes must be >= {need} with max_frame_bytes "
                f"{self.max_frame_bytes}: a quarter is kept for small requests, and a "
                "frame of max_frame_bytes must fit in the rest"
            )
        if self.default_partitions < 1 or self.default_replication_factor < 1:
            raise ConfigError("default_partitions and default_replication_factor must be >= 1")
        if self.external_payload_bytes < 0:
            raise ConfigError("external_payload_bytes must be >= 0 (0: payloads stay in RocksDB)")
        if self.payload_segment_bytes < 1:
            raise ConfigError("payload_segment_bytes must be >= 1")
        if not 0 <= self.retention_check_interval_s <= 86_400:
            raise ConfigError("retention_check_interval_s must be 0..86400 (0: off)")
        if not 0 <= self.store_reclaim_interval_s <= 86_400:
            raise ConfigError("store_reclaim_interval_s must be 0..86400 (0: off)")
        if self.catchup_bytes_per_s < 0:
            raise ConfigError("catchup_bytes_per_s must be >= 0 (0: unthrottled)")
        if not 1 <= self.max_message_bytes <= self.max_frame_bytes:
            raise ConfigError("max_message_bytes must be 1..max_frame_bytes")
        if not (
            1
            <= self.group_min_session_timeout_ms
            <= self.group_session_timeout_ms
            <= self.group_max_session_timeout_ms
        ):
            raise ConfigError(
                "need 1 <= group_min_session_timeout_ms <= group_session_timeout_ms "
                "<= group_max_session_timeout_ms"
            )
        if self.group_heartbeat_interval_ms < 1 or self.group_empty_expiry_ms < 1:
            raise ConfigError("group_heartbeat_interval_ms and group_empty_expiry_ms must be >= 1")
        if not 1 <= self.offsets_topic_partitions <= 1000:
            raise ConfigError("offsets_topic_partitions must be 1..1000")
        if self.offsets_topic_replication_factor < 1:
            raise ConfigError("offsets_topic_replication_factor must be >= 1")
        if not 0 <= self.leader_balance_interval_s <= 86_400:
            raise ConfigError("leader_balance_interval_s must be 0..86400 (0: off)")
        if self.transaction_max_timeout_ms < 1 or self.transaction_precommit_timeout_ms < 1:
            raise ConfigError(
                "transaction_max_timeout_ms and transaction_precommit_timeout_ms must be >= 1"
            )
        unknown = set(self.failpoint_names()) - KNOWN_FAILPOINTS
        if unknown:
            raise ConfigError(f"failpoints: unknown {', '.join(sorted(unknown))}")
        try:
            capped(self.max_api_versions)
        except ValueError as e:
            raise ConfigError(f"max_api_versions: {e}") from None

    @property
    def api_versions(self) -> dict[ApiKey, VersionRange]:
        """The version range of each client API this broker serves."""
        return capped(self.max_api_versions)

    def failpoint_names(self) -> tuple[str, ...]:
        return tuple(n.strip() for n in self.failpoints.split(",") if n.strip())

    @property
    def is_single_node(self) -> bool:
        return not self.controllers

    def replace(self, **changes: Any) -> BrokerConfig:
        return dataclasses.replace(self, **changes)


def _convert(key: str, raw: Any) -> Any:
    try:
        if key in ("listen", "peer_listen", "http_listen", "advertise", "advertise_peer"):
            return raw if isinstance(raw, HostPort) else HostPort.parse(str(raw), key)
        if key == "controllers":
            if isinstance(raw, tuple):
                return raw
            return parse_controllers(str(raw)) if raw else ()
        if key == "data_dir":
            return Path(raw)
        if key in ("rack",):
            return None if raw in (None, "") else str(raw)
        if key in ("log_format", "sync_mode", "failpoints"):
            return str(raw)
        if key in ("durability_audit", "quiesce"):
            if isinstance(raw, bool):
                return raw
            text = str(raw).lower()
            if text not in ("1", "0", "true", "false", "yes", "no"):
                raise ConfigError(f"{key}: expected true or false, got {raw!r}")
            return text in ("1", "true", "yes")
        if key in (
            "idle_timeout_s",
            "stall_timeout_s",
            "leader_balance_interval_s",
            "retention_check_interval_s",
            "store_reclaim_interval_s",
        ):
            return float(raw)
        if key == "max_api_versions":
            return _api_caps(raw)
        if isinstance(raw, bool):
            raise ConfigError(f"{key}: expected a number, got {raw!r}")
        return int(raw)
    except (TypeError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{key}: bad value {raw!r}") from None


def _api_caps(raw: Any) -> dict[ApiKey, int]:
    """`{"fetch": 0, ...}` (API names in any case) as {ApiKey.FETCH: 0, ...}."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"max_api_versions: expected a table of API names, got {raw!r}")
    caps: dict[ApiKey, int] = {}
    for name, version in raw.items():
        key = ApiKey.__members__.get(str(name).upper())
        if key is None:
            known = ", ".join(k.name.lower() for k in ApiKey)
            raise ConfigError(f"max_api_versions: unknown API {name!r} (known: {known})")
        if isinstance(version, bool) or not isinstance(version, int):
            raise ConfigError(f"max_api_versions.{name}: expected a version number")
        caps[key] = version
    return caps
