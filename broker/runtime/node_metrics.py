"""What `GET /metrics` reads at scrape time from the runtime and the pure core (see
metrics.py): one list of samples, assembled without changing anything. The core keeps plain
ints and fields; nothing here is counted on the hot path.

Exported (gauges unless `_total`):
- runtime: `sluice_connections`, `sluice_connections_accepted_total`,
  `sluice_connections_refused_total`, `sluice_requests_in_flight`, `sluice_peer_links`,
  `sluice_peer_frames_sent_total`, `sluice_peer_frames_received_total`,
  `sluice_driver_rounds_total`, `sluice_driver_rounds_written_total`,
  `sluice_parked_fetches`, `sluice_request_errors_total`;
- per Raft group hosted here, labelled `group` (its id), `topic` and `partition` (the metadata
  group: topic "__metadata", partition -1): `sluice_raft_term`, `sluice_raft_commit_index`,
  `sluice_raft_applied_index`, `sluice_raft_leader` (its node id, -1 while none is known),
  `sluice_raft_is_leader`, `sluice_raft_elections_total` (elections this replica started as
  a candidate), `sluice_raft_leader_changes_total` (terms in which this replica learned of a
  leader, itself included); and on the group's leader only,
  `sluice_raft_follower_lag_entries{...,follower}`: the leader's last index minus that
  follower's match index (learners included; a broker with two incarnations in the group,
  being replaced, shows the larger lag). Counters restart with the group's replica here;
- partition health, this broker's view (`BrokerNode.describe_partitions`): a partition without
  a leader, or one of whose replicas lacks committed entries, counts once, wherever it is led:
  `sluice_partitions`, `sluice_partitions_leaderless`, `sluice_partitions_under_replicated`;
- per partition log this broker leads and serves (`topic`, `partition`):
  `sluice_partition_high_watermark` and `sluice_partition_lso_lag` (high watermark minus last
  stable offset: records held back from read_committed readers by open transactions);
- per consumer group whose coordinator partition this broker leads and serves:
  `sluice_consumer_group_members{consumer_group}`, and
  `sluice_consumer_group_lag{consumer_group,topic,partition}` per committed offset: the
  partition's high watermark minus the offset, never below 0. The high watermark is this
  broker's replica's (the leader's, or a follower's applied one, at most a round behind); a
  partition with no replica here has no lag series (the coordinator cannot see its end);
- transactions whose coordinator partitions this broker leads: `sluice_transactions_open`
  by `state`, `sluice_transaction_oldest_age_seconds`;
- the data directory's file system and files (`DiskUsage`): `sluice_store_disk_free_bytes`
  and `sluice_store_disk_total_bytes` (statvfs at each scrape; free = available to the
  broker's user), `sluice_store_size_bytes` (its files' sizes, recomputed at most every
  `SIZE_EVERY_S`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

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
"""The data directory's size is walked at most this often (scrapes in between reuse it)."""
Values = list[tuple[tuple[str, ...], float]]


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
    statuses = node.describe_partitions()
    leaderless = sum(1 for p in statuses if p.view.leader is None)
    behind = sum(
        1 for p in statuses if p.commit_lag >= 0 and len(p.caught_up) < len(p.view.replicas)
    )
    return [
        ("gauge", "sluice_partitions", "Partitions in the metadata.", [((), len(statuses))], ()),
        ("gauge", "sluice_partitions_leaderless", "Partitions without a leader.",
         [((), leaderless)], ()),
        ("gauge", "sluice_partitions_under_replicated",
         "Partitions (led here) with a replica missing committed entries.", [((), behind)], ()),
    ]  # fmt: skip


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
    """Members and committed-offset lag of the groups coordinated here (see the module doc)."""
    members: Values = []
    lag: Values = []
    for (topic, _), g in sorted(node.partitions.by_partition.items()):
        m = g.machine
        if topic != OFFSETS_TOPIC or not isinstance(m, GroupCoordinator) or not g.serving():
            continue
        for group_id, group in sorted(m.groups.items()):
            members.append(((group_id,), float(len(group.members))))
            for (t, p), committed in sorted(group.offsets.items()):
                high = node.high_watermark(t, p)
                if high != NO_OFFSET:
                    lag.append(((group_id, t, str(p)), float(max(0, high - committed.offset))))
    return [
        ("gauge", "sluice_consumer_group_members",
         "Members of each consumer group coordinated here.", members, ("consumer_group",)),
        ("gauge", "sluice_consumer_group_lag",
         "High watermark minus the group's committed offset (partitions with a replica here).",
         lag, ("consumer_group", "topic", "partition")),
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
    """The data directory's file system (statvfs at each call) and the bytes of its files
    (walked at most every `every_s` seconds of `clock`; scrapes in between reuse the last
    walk). A file vanishing mid-walk (a compaction) is skipped; an unreadable directory
    leaves its series out rather than failing the scrape."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        every_s: float = SIZE_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self.every_s = every_s
        self._clock = clock
        self._size = -1
        self._walked_at = -float("inf")
        self.walks = 0
        """Walks of the directory so far (the cache's hit rate, for tests)."""

    def samples(self) -> list[Sample]:
        out: list[Sample] = []
        try:
            st = os.statvfs(self.path)
        except OSError:
            pass
        else:
            out.append(("gauge", "sluice_store_disk_free_bytes",
                        "Bytes free for the broker on the data directory's file system.",
                        [((), float(st.f_bavail * st.f_frsize))], ()))  # fmt: skip
            out.append(("gauge", "sluice_store_disk_total_bytes",
                        "Size of the data directory's file system, bytes.",
                        [((), float(st.f_blocks * st.f_frsize))], ()))  # fmt: skip
        size = self.size_bytes()
        if size >= 0:
            out.append(("gauge", "sluice_store_size_bytes",
                        f"Bytes of the data directory's files (recomputed at most every "
                        f"{self.every_s:g} s).", [((), float(size))], ()))  # fmt: skip
        return out

    def size_bytes(self) -> int:
        """The files' bytes as last walked (-1: the directory cannot be read)."""
        now = self._clock()
        if now - self._walked_at >= self.every_s:
            self._walked_at = now
            self.walks += 1
            self._size = _tree_bytes(self.path)
        return self._size


def _tree_bytes(root: Path) -> int:
    """Bytes of the regular files under `root` (symbolic links not followed); -1 when
    `root` itself cannot be read."""
    total = 0
    stack = [root]
    first = True
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            if first:
                return -1
            continue
        first = False
        for e in entries:
            try:
                if e.is_dir(follow_symlinks=False):
                    stack.append(Path(e.path))
                elif e.is_file(follow_symlinks=False):
                    total += e.stat(follow_symlinks=False).st_size
            except OSError:
                continue  # gone since the listing (RocksDB deletes files as it compacts)
    return total
