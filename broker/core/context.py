"""What the parts of a broker node share: its configuration, its groups, the metadata state,
and its own metadata proposals in flight.

`BrokerNode` builds one `NodeContext` and hands it to each part (controller, partition
service, producer-id allocator, views); each part owns its own state and reads the rest here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from broker.core.host import GroupHost, HostedGroup
from broker.core.ids import Member, ProposalKey, node_of
from broker.core.metadata import METADATA_GROUP, BrokerInfo, MetadataMachine
from broker.core.partition import PartitionConfig


@dataclass(frozen=True, slots=True)
class GroupConfig:
    session_timeout_ms: int = 10_000
    """The session timeout of a member that does not ask for one."""
    min_session_timeout_ms: int = 1_000
    max_session_timeout_ms: int = 300_000
    heartbeat_interval_ms: int = 2_000
    """At most this; a third of the member's session timeout when that is less."""
    empty_group_expiry_ms: int = 7 * 24 * 3600 * 1000
    """A group without members is deleted (with its offsets) after this long."""


@dataclass(frozen=True, slots=True)
class TxnConfig:
    default_timeout_ms: int = 60_000
    """The timeout of a transaction whose producer does not ask for one."""
    max_timeout_ms: int = 900_000
    precommit_timeout_ms: int = 10_000
    """A participant commits a pre-committed transaction on its own once its coordinator
    stayed silent this long."""
    kill_after_precommit: bool = False
    """Failpoint (tests only): the coordinator's leader stops driving a transaction once
    every participant acknowledged PRECOMMIT and reports `txn.kill_after_precommit` in
    `NodeContext.failpoints_hit` (the runtime then SIGKILLs the broker)."""


@dataclass(frozen=True, slots=True)
class NodeConfig:
    node_id: int
    incarnation: int
    election_ticks: int = 6
    heartbeat_ticks: int = 2
    max_msg_bytes: int = 1 << 20
    max_inflight_msgs: int = 256
    max_uncommitted_bytes: int = 64 << 20
    broker_heartbeat_ticks: int = 5
    broker_lease_ticks: int = 40
    """The controller marks a broker failed after this many ticks without its heartbeat."""
    catchup_bytes_per_tick: int = 0
    """Bytes per tick this broker's leaders may send, all groups together, to replicas that
    lack committed entries (catching up); 0: unthrottled."""
    default_partitions: int = 1
    default_replication_factor: int = 1
    partition: PartitionConfig = field(default_factory=PartitionConfig)
    metadata_snapshot_entries: int = 10_000
    """Snapshot the metadata state machine every this many applied entries and compact its
    log behind the snapshot; 0: never."""
    snapshot_catchup_entries: int = 5_000
    """Entries a metadata compaction keeps behind its snapshot: a follower lagging by fewer
    catches up by append, not by snapshot."""
    partition_retention_entries: int = 0
    """Retention of every partition replica, in Raft entries: the log keeps between this many
    and twice as many entries behind the applied index; older records are deleted (the log
    start offset moves). 0: records are kept for ever."""
    retention_check_ticks: int = 100
    """Every this many ticks the partitions led here are checked against their topics'
    retention.ms / retention.bytes (retention.py); 0: never."""
    max_snapshot_chunk_bytes: int = 1 << 20
    """Snapshot bytes per InstallSnapshot message."""
    tick_ms: int = 50
    """Wall-clock milliseconds per tick (session timeouts are counted in ticks)."""
    groups: GroupConfig = field(default_factory=GroupConfig)
    transactions: TxnConfig = field(default_factory=TxnConfig)
    internal_topic_partitions: int = 16
    """Partitions of each internal topic (`__consumer_offsets`, `__transaction_state`)."""
    internal_topic_replication_factor: int = 3
    """Replication factor of each internal topic, capped at the live brokers when created."""
    leader_balance_ticks: int = 0
    """The serving controller's preferred-leader balancing pass runs every this many ticks
    (leader_balance.py); 0: only when an operator asks (ELECT_LEADERS)."""
    quiesce: bool = False
    """Idle groups quiesce (GroupHost): no ticks, no heartbeats, the broker-level liveness
    signal (`BrokerNode.peer_lost`) standing in. Off here (the simulations' brokers run
    without it unless a profile asks); `BrokerConfig.quiesce` turns it on for real brokers."""

    @property
    def member(self) -> Member:
        return Member(self.node_id, self.incarnation)


class OwnProposals:
    """This incarnation's own metadata proposals still waiting to be applied: at most one per
    key, so a command repeated every heartbeat is in the log once at a time."""

    def __init__(self) -> None:
        self._own: dict[ProposalKey, tuple[int, int]] = {}
        """key -> (index, term) of the proposal."""

    def in_flight(self, key: ProposalKey) -> bool:
        return key in self._own

    def position(self, key: ProposalKey) -> tuple[int, int] | None:
        return self._own.get(key)

    def add(self, key: ProposalKey, index: int, term: int) -> None:
        self._own[key] = (index, term)

    def applied(self, index: int) -> None:
        """The entry at `index` applied: its proposal (or the one it displaced, lost to a new
        leader) is no longer in flight; the next round may propose again if still needed."""
        for key in [k for k, (i, _) in self._own.items() if i == index]:
            del self._own[key]

    def covered(self, index: int) -> None:
        """A snapshot up to `index` was installed: every proposal it covers is settled."""
        for key in [k for k, (i, _) in self._own.items() if i <= index]:
            del self._own[key]


@dataclass(slots=True)
class NodeContext:
    config: NodeConfig
    host: GroupHost
    advertised: BrokerInfo
    meta: MetadataMachine = field(default_factory=MetadataMachine)
    own: OwnProposals = field(default_factory=OwnProposals)
    ticks: int = 0
    failpoints_hit: list[str] = field(default_factory=list)
    """Failpoints the core reached (tests only; see TxnConfig): the runtime acts on them."""
    wall_ms: int = 0
    """The runtime's wall clock at the last tick (0: not told yet). Shown (e.g. a group's
    last rebalance time); the only decision it takes part in is a leader's retention check,
    which proposes a command (retention.py), never inside an apply."""

    @property
    def metadata_group(self) -> HostedGroup | None:
        return self.host.groups.get(METADATA_GROUP)

    def propose_own(self, key: ProposalKey, data: bytes) -> None:
        """Propose a metadata command of this broker's own, unless one for `key` is in
        flight."""
        mg = self.metadata_group
        if mg is None or self.own.in_flight(key):
            return
        index = self.host.propose(mg, data)
        if index is not None:
            self.own.add(key, index, mg.raft.term)

    @property
    def registered(self) -> bool:
        """The metadata log holds this broker as it advertises itself now."""
        return self.meta.brokers.get(self.config.node_id) == self.advertised

    def controller(self) -> int | None:
        mg = self.metadata_group
        return node_of(mg.raft.leader) if mg is not None else None
