"""What `GET /metrics` reads at scrape time from the runtime and the pure core (see
metrics.py): one list of samples, assembled without changing anything.

Raft groups are labelled `group` (its id), `topic` and `partition` (the metadata group: topic
"__metadata", partition -1); a gauge of the leader is its node id, -1 while none is known.
Partition health is this broker's view (`BrokerNode.describe_partitions`): a partition without
a leader, or one of whose replicas lacks committed entries, counts once, wherever it is led.
Transactions are those whose coordinator partitions this broker leads."""

from __future__ import annotations

import time

from broker.core.ids import node_of
from broker.core.metadata import METADATA_GROUP
from broker.core.node import BrokerNode
from broker.core.txn.coordinator import TxnState
from broker.runtime.driver import Driver
from broker.runtime.metrics import Sample
from broker.runtime.peers import PeerNetwork
from broker.runtime.server import ClientServer

GROUP_LABELS = ("group", "topic", "partition")
Values = list[tuple[tuple[str, ...], float]]


def node_samples(
    node: BrokerNode, server: ClientServer, network: PeerNetwork, driver: Driver
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
    out.extend(_transaction_samples(node))
    return out


def _raft_samples(node: BrokerNode) -> list[Sample]:
    term: Values = []
    commit: Values = []
    applied: Values = []
    leader: Values = []
    leading: Values = []
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
    return [
        ("gauge", "sluice_raft_term", "Raft term of each group hosted here.", term, GROUP_LABELS),
        ("gauge", "sluice_raft_commit_index", "Raft commit index.", commit, GROUP_LABELS),
        ("gauge", "sluice_raft_applied_index", "Index applied to the state machine.", applied,
         GROUP_LABELS),
        ("gauge", "sluice_raft_leader", "Node id of the group's leader (-1: none known).", leader,
         GROUP_LABELS),
        ("gauge", "sluice_raft_is_leader", "1 where this broker leads the group.", leading,
         GROUP_LABELS),
    ]  # fmt: skip


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
