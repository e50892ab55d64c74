"""What `GET /metrics` reads at scrape time from the runtime and the pure core (see
metrics.py): one list of samples, assembled without changing anything. The core keeps plain
ints and fields; nothing here is counted on the hot path.

Exported (gauges unless `_total`):
- runtime: `sluice_connections`, `sluice_connections_accepted_total`,
  `sluice_connections_refused_total`, `sluice_requests_in_flight`, `sluice_peer_links`,
  `sluice_peer_frames_sent_total`, `sluice_peer_frames_received_total`,
  `sluice_driver_rounds_total`, `sluice_driver_rounds_written_total`,
  `sluice_parked_fetches`, `sluice_request_errors_total`, `sluice_peer_keepalives_total`
  (keepalive frames sent on idle links to `quiesce` peers), `sluice_peer_links_silent_total`
  (such links closed because the peer fell silent);
- `sluice_raft_groups_quiesced`: Raft groups hosted here that are quiesced (idle: not ticked,
  no heartbeats; ARCHITECTURE.md, Quiescence);
- per Raft group hosted here, labelled `group` (its id), `topic` and `partition` (the metadata
  group: topic "__metadata", partition -1): `sluice_raft_term`, `sluice_raft_commit_index`,
  `sluice_raft_applied_index`, `sluice_raft_leader` (its node id, -1 while none is known),
  `sluice_raft_is_leader`, `sluice_raft_elections_total` (elections this replica started as
  a candidate), `sluice_raft_leader_changes_total` (terms in which this replica learned of a
  leader, itself included), `sluice_raft_snapshots_installed_total` (snapshots from the
  leader this replica installed: it was behind the leader's compacted log); and on the
  group's leader only,
  `sluice_raft_follower_lag_entries{...,follower}`: the leader's last index minus that
  follower's match index (learners included; a broker with two incarnations in the group,
  being replaced, shows the larger lag). Counters restart with the group's replica here;
- partitions in this broker's copy of the metadata log: `sluice_partitions`; and
  `sluice_partitions_leaderless`, those for which this broker knows no leader (its own replica
  neither serves as leader nor knows who does, and the metadata log reports none, or one whose
  broker it marks failed: `ClusterView.partition_view`). Every broker gives its own view of
  every partition: take the max over brokers, never the sum;
- `sluice_partitions_under_replicated`: partitions whose Raft group this broker leads and
  serves, with a replica (learners included) missing committed entries in this leader's own
  view of its followers' progress (match index < commit index). Only the serving leader counts
  a partition, so the sum over brokers counts each partition once (twice at most briefly: a
  deposed leader cut off from the others serves until check-quorum steps it down, within an
  election timeout). A follower that stopped answering counts only once entries commit
  without it (`sluice_raft_follower_lag_entries` shows how far behind each one is);
- per partition log this broker leads and serves (`topic`, `partition`):
  `sluice_partition_high_watermark` and `sluice_partition_lso_lag` (high watermark minus last
  stable offset: records held back from read_committed readers by open transactions);
- per consumer group whose coordinator partition this broker leads and serves:
  `sluice_consumer_group_members{consumer_group}`, and per committed offset
  (`consumer_group`, `topic`, `partition`) `sluice_consumer_group_committed_offset` (every
  committed partition of the group, wherever the partition is led) and
  `sluice_consumer_group_lag`, the coordinator's local view: the high watermark of its own
  replica of the partition (the leader's, or a follower's applied one, at most a round behind)
  minus the offset, never below 0, and no series for a partition without a replica here. The
  lag of every partition is the leader's `sluice_partition_high_watermark` minus
  `sluice_consumer_group_committed_offset`, joined on (topic, partition) in PromQL: what the
  Grafana dashboard and the SluiceConsumerLagGrowing alert compute;
- transactions whose coordinator partitions this broker leads: `sluice_transactions_open`
  by `state`, `sluice_transaction_oldest_age_seconds`;
- the data directory's file system and files (`DiskUsage`): `sluice_store_disk_free_bytes`
  and `sluice_store_disk_total_bytes` (statvfs; free = available to the broker's user) and
  `sluice_store_size_bytes` (its files' sizes), all measured in a worker thread every
  `SIZE_EVERY_S` by `DiskUsage.run` (a task in the broker's nursery): a scrape only reads the
  last measurement, so a slow walk or a hung file system never stalls the Trio loop. A failed
  measurement keeps the last good value (logged once per kind); a series is absent only until
  its first success.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import trio

from broker.core.groups.coordinator import GroupCoordinator
from broker.core.groups.service import OFFSETS_TOPIC
from broker.core.ids import NO_OFFSET, node_of
from broker.core.metadata import METADATA_GROUP
from broker.core.node import BrokerNode
from broker.core.partition import PartitionMachine
from broker.core.raft import RaftNode
from broker.core.txn.coordinator import TxnState
from broker.runtime.driver import Driver
from broker.runtime.metrics import Sample
from broker.runtime.peers import PeerNetwork
from broker.runtime.server import ClientServer

GROUP_LABELS = ("group", "topic", "partition")
PARTITION_LABELS = ("topic", "partition")
SIZE_EVERY_S = 10.0
"""The data directory's file system and files are measured this often (scrapes in between
read the last measurement)."""
Values = list[tuple[tuple[str, ...], float]]

log = logging.getLogger("sluice.metrics")


def node_samples(
    node: BrokerNode,
    server: ClientServer,
    network: PeerNetwork,
    driver: Driver,
    disk: DiskUsage | None = None,
) -> list[Sample]:
    s = server.stats
    p = network.stats
    d = driver.stats()
    out: list[Sample] = [
        ("gauge", "sluice_connections", "Open client connections.", [((), s.connections)], ()),
        ("counter", "sluice_connections_accepted", "Client connections accepted.",
         [((), s.accepted)], ()),
        ("counter", "sluice_connections_refused", "Client connections refused at once.",
         [((), s.refused)], ()),
        ("gauge", "sluice_requests_in_flight", "Client requests read and not yet answered.",
         [((), s.inflight)], ()),
        ("gauge", "sluice_peer_links", "Open links to other brokers.", [((), p.links)], ()),
        ("counter", "sluice_peer_frames_sent", "Frames sent to other brokers.",
         [((), p.sent_frames)], ()),
        ("counter", "sluice_peer_frames_received", "Frames received from other brokers.",
         [((), p.received_frames)], ()),
        ("counter", "sluice_driver_rounds", "Rounds of the broker's driver.",
         [((), d.rounds)], ()),
        ("counter", "sluice_driver_rounds_written", "Rounds that wrote to the store.",
         [((), d.rounds_written)], ()),
        ("gauge", "sluice_parked_fetches", "Fetches waiting for data.",
         [((), d.parked_fetches)], ()),
        ("counter", "sluice_request_errors", "Requests whose handling raised (a bug).",
         [((), d.request_errors)], ()),
        ("counter", "sluice_peer_keepalives", "Keepalive frames sent on idle peer links.",
         [((), p.keepalives)], ()),
        ("counter", "sluice_peer_links_silent", "Peer links closed: the peer fell silent.",
         [((), p.silent)], ()),
        ("gauge", "sluice_raft_groups_quiesced", "Raft groups quiesced here (idle, not ticked).",
         [((), node.host.quiesced_count)], ()),
    ]  # fmt: skip
    out.extend(_raft_samples(node))
    out.extend(_partition_samples(node))
    out.extend(_log_samples(node))
    out.extend(_consumer_group_samples(node))
    out.extend(_transaction_samples(node))
    if disk is not None:
        out.extend(disk.samples())
    return out


def _raft_samples(node: BrokerNode) -> list[Sample]:
    term: Values = []
    commit: Values = []
    applied: Values = []
    leader: Values = []
    leading: Values = []
    elections: Values = []
    changes: Values = []
    installs: Values = []
    lag: Values = []
    for gid, g in sorted(node.host.groups.items()):
        topic = "__metadata" if gid == METADATA_GROUP else (g.topic or "")
        labels = (str(gid), topic, str(g.partition))
        raft = g.raft
        who = node_of(raft.leader)
        term.append((labels, float(raft.term)))
        commit.append((labels, float(raft.commit_index)))
        applied.append((labels, float(g.machine.applied_index)))
        leader.append((labels, float(-1 if who is None else who)))
        leading.append((labels, 1.0 if raft.is_leader else 0.0))
        elections.append((labels, float(raft.elections_started)))
        changes.append((labels, float(raft.leader_changes)))
        installs.append((labels, float(g.snapshots_installed)))
        for follower, n in sorted(follower_lag(raft).items()):
            lag.append(((*labels, str(follower)), float(n)))
    return [
        ("gauge", "sluice_raft_term", "Raft term of each group hosted here.", term, GROUP_LABELS),
        ("gauge", "sluice_raft_commit_index", "Raft commit index.", commit, GROUP_LABELS),
        ("gauge", "sluice_raft_applied_index", "Index applied to the state machine.", applied,
         GROUP_LABELS),
        ("gauge", "sluice_raft_leader", "Node id of the group's leader (-1: none known).", leader,
         GROUP_LABELS),
        ("gauge", "sluice_raft_is_leader", "1 where this broker leads the group.", leading,
         GROUP_LABELS),
        ("counter", "sluice_raft_elections", "Elections this replica started as a candidate.",
         elections, GROUP_LABELS),
        ("counter", "sluice_raft_leader_changes",
         "Terms in which this replica learned of a leader (itself included).", changes,
         GROUP_LABELS),
        ("counter", "sluice_raft_snapshots_installed",
         "Snapshots from the leader installed by this replica (it lagged behind the leader's "
         "compacted log).", installs, GROUP_LABELS),
        ("gauge", "sluice_raft_follower_lag_entries",
         "On the group's leader: its last index minus the follower's match index.", lag,
         (*GROUP_LABELS, "follower")),
    ]  # fmt: skip


def follower_lag(raft: RaftNode) -> dict[int, int]:
    """On a leader, per follower broker (learners included): the leader's last index minus
    the follower's match index; the larger for a broker with two incarnations in the group.
    Empty elsewhere."""
    if not raft.is_leader:
        return {}
    last = raft.log.last_index()
    behind: dict[int, int] = {}
    for member, pr in raft.progress.items():
        follower = node_of(member)
        if member != raft.id and follower is not None:
            behind[follower] = max(behind.get(follower, last - pr.match), last - pr.match)
    return behind


def _partition_samples(node: BrokerNode) -> list[Sample]:
    """Partitions in the metadata, those this broker knows no leader of, and those it leads
    with a replica missing committed entries (see the module doc)."""
    views = node.views
    groups = node.host.groups
    total = leaderless = behind = 0
    for t in node.meta.topics.values():
        for pi in t.partitions:
            total += 1
            if views.partition_view(pi).leader is None:
                leaderless += 1
            g = groups.get(pi.group_id)
            if g is not None and g.serving() and under_replicated(g.raft):
                behind += 1
    return [
        ("gauge", "sluice_partitions", "Partitions in this broker's copy of the metadata.",
         [((), total)], ()),
        ("gauge", "sluice_partitions_leaderless",
         "Partitions for which this broker knows no leader (each broker's own view: take the "
         "max over brokers).", [((), leaderless)], ()),
        ("gauge", "sluice_partitions_under_replicated",
         "Partitions led and served by this broker with a replica missing committed entries "
         "(match index < commit index, in this leader's view): sum over brokers.",
         [((), behind)], ()),
    ]  # fmt: skip


def under_replicated(raft: RaftNode) -> bool:
    """On a leader: whether some other replica (learners included) lacks committed entries,
    by the leader's own record of its followers' match indexes. False elsewhere."""
    if not raft.is_leader:
        return False
    commit = raft.commit_index
    return any(pr.match < commit for member, pr in raft.progress.items() if member != raft.id)


def _log_samples(node: BrokerNode) -> list[Sample]:
    """High watermark and LSO lag of the partition logs this broker leads and serves."""
    hw: Values = []
    lso_lag: Values = []
    for (topic, partition), g in sorted(node.partitions.by_partition.items()):
        m = g.machine
        if isinstance(m, PartitionMachine) and g.serving():
            labels = (topic, str(partition))
            high = m.high_watermark
            hw.append((labels, float(high)))
            lso_lag.append((labels, float(high - m.last_stable_offset)))
    return [
        ("gauge", "sluice_partition_high_watermark",
         "High watermark of each partition led here (the next offset to be committed).", hw,
         PARTITION_LABELS),
        ("gauge", "sluice_partition_lso_lag",
         "High watermark minus last stable offset of each partition led here.", lso_lag,
         PARTITION_LABELS),
    ]  # fmt: skip


def _consumer_group_samples(node: BrokerNode) -> list[Sample]:
    """Members, committed offsets and local lag of the groups coordinated here (see the
    module doc)."""
    members: Values = []
    committed_at: Values = []
    lag: Values = []
    for (topic, _), g in sorted(node.partitions.by_partition.items()):
        m = g.machine
        if topic != OFFSETS_TOPIC or not isinstance(m, GroupCoordinator) or not g.serving():
            continue
        for group_id, group in sorted(m.groups.items()):
            members.append(((group_id,), float(len(group.members))))
            for (t, p), committed in sorted(group.offsets.items()):
                labels = (group_id, t, str(p))
                committed_at.append((labels, float(committed.offset)))
                high = node.high_watermark(t, p)
                if high != NO_OFFSET:
                    lag.append((labels, float(max(0, high - committed.offset))))
    labels = ("consumer_group", "topic", "partition")
    return [
        ("gauge", "sluice_consumer_group_members",
         "Members of each consumer group coordinated here.", members, ("consumer_group",)),
        ("gauge", "sluice_consumer_group_committed_offset",
         "Committed offset of each partition of each consumer group coordinated here (lag: "
         "the partition leader's sluice_partition_high_watermark minus this).", committed_at,
         labels),
        ("gauge", "sluice_consumer_group_lag",
         "The coordinator's local view: its own replica's high watermark minus the group's "
         "committed offset, only for partitions with a replica on this broker.", lag, labels),
    ]  # fmt: skip


def _transaction_samples(node: BrokerNode) -> list[Sample]:
    now_ms = time.time() * 1000
    open_txns = [t for t in node.txn_service.entries() if t.state != TxnState.EMPTY]
    by_state: dict[str, int] = {}
    for t in open_txns:
        by_state[t.state.name.lower()] = by_state.get(t.state.name.lower(), 0) + 1
    ages = [(now_ms - t.started_ms) / 1000 for t in open_txns if t.started_ms >= 0]
    return [
        ("gauge", "sluice_transactions_open", "Open transactions coordinated here, by state.",
         [((state,), n) for state, n in sorted(by_state.items())], ("state",)),
        ("gauge", "sluice_transaction_oldest_age_seconds",
         "Age of the oldest open transaction coordinated here (0: none).",
         [((), max(ages, default=0.0))], ()),
    ]  # fmt: skip


class DiskUsage:
    """The data directory's file system (statvfs) and the bytes of its files, measured by
    `run` in a worker thread every `every_s` seconds; `samples` (at each scrape, on the Trio
    thread) only reads the last measurement and touches no file system. A failed statvfs or
    an unreadable directory keeps the last good value, its first failure of each kind logged
    once; a series is left out only until its first success. A file vanishing mid-walk (a
    compaction) is skipped."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        every_s: float = SIZE_EVERY_S,
        statvfs: Callable[[Path], os.statvfs_result] = os.statvfs,
        tree_bytes: Callable[[Path], int] | None = None,
    ) -> None:
        self.path = Path(path)
        self.every_s = every_s
        self._statvfs = statvfs
        self._tree_bytes = _tree_bytes if tree_bytes is None else tree_bytes
        self.free_total: tuple[int, int] | None = None
        """(bytes free for the broker, bytes in all) of the file system, as last measured."""
        self.size = -1
        """The files' bytes as last walked (-1: never walked successfully)."""
        self.refreshes = 0
        self._logged: set[str] = set()

    async def run(self) -> None:
        """Measure now, then every `every_s` seconds after the previous measurement ended
        (a measurement stuck on a hung file system delays the next, never stacks them)."""
        while True:
            await self.refresh()
            await trio.sleep(self.every_s)

    async def refresh(self) -> None:
        """One measurement in a worker thread (abandoned if cancelled: the broker can stop
        while a file system hangs), kept on the Trio thread."""
        fs, size = await trio.to_thread.run_sync(self._measure, abandon_on_cancel=True)
        self.refreshes += 1
        if isinstance(fs, OSError):
            self._failed("statvfs", fs)
        else:
            self.free_total = fs
        if isinstance(size, OSError):
            self._failed("walk", size)
        else:
            self.size = size

    def _measure(self) -> tuple[tuple[int, int] | OSError, int | OSError]:
        """In a worker thread: (free, total) bytes of the file system and the files' bytes,
        or the error each failed with."""
        fs: tuple[int, int] | OSError
        size: int | OSError
        try:
            st = self._statvfs(self.path)
            fs = (st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize)
        except OSError as e:
            fs = e
        try:
            size = self._tree_bytes(self.path)
        except OSError as e:
            size = e
        return fs, size

    def _failed(self, kind: str, error: OSError) -> None:
        if kind not in self._logged:
            self._logged.add(kind)
            what = "statvfs of" if kind == "statvfs" else "walking"
            log.warning(
                "%s the data directory %s failed: %s; its disk metrics keep their last value, "
                "further failures are not logged",
                what,
                self.path,
                error,
            )

    def samples(self) -> list[Sample]:
        out: list[Sample] = []
        if self.free_total is not None:
            free, total = self.free_total
            out.append(("gauge", "sluice_store_disk_free_bytes",
                        "Bytes free for the broker on the data directory's file system.",
                        [((), float(free))], ()))  # fmt: skip
            out.append(("gauge", "sluice_store_disk_total_bytes",
                        "Size of the data directory's file system, bytes.",
                        [((), float(total))], ()))  # fmt: skip
        if self.size >= 0:
            out.append(("gauge", "sluice_store_size_bytes",
                        f"Bytes of the data directory's files (measured every "
                        f"{self.every_s:g} s).", [((), float(self.size))], ()))  # fmt: skip
        return out


def _tree_bytes(root: Path) -> int:
    """Bytes of the regular files under `root` (symbolic links not followed); OSError when
    `root` itself cannot be read. Blocking: run it in a worker thread."""
    total = 0
    stack: list[str] = []
    with os.scandir(root) as listing:
        entries = list(listing)
    while True:
        for e in entries:
            try:
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
                elif e.is_file(follow_symlinks=False):
                    total += e.stat(follow_symlinks=False).st_size
            except OSError:
                continue  # gone since the listing (RocksDB deletes files as it compacts)
        if not stack:
            return total
        try:
            with os.scandir(stack.pop()) as listing:
                entries = list(listing)
        except OSError:
            entries = []  # a directory gone or unreadable since its parent was listed
