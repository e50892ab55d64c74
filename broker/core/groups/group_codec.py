"""The stored form of a consumer group: one CBOR map per group (its membership, members,
committed offsets and the offsets its open transactions staged), the coordinator's record of
it and its part of a snapshot."""

from __future__ import annotations

from typing import Any

from broker.core.groups.group import Committed, ConsumerGroup, MemberInfo
from broker.core.groups.membership import MemberState
from broker.wire import cbor


def group_to_wire(g: ConsumerGroup) -> dict[str, Any]:
    ms = g.membership
    return {
        "id": g.group_id,
        "assignor": g.assignor,
        "epoch": ms.epoch,
        "partitions": dict(sorted(ms.partitions.items())),
        "target": {m: sorted(list(tp) for tp in tps) for m, tps in sorted(ms.target.items())},
        "members": [
            [
                mid,
                m.epoch,
                m.previous_epoch,
                sorted(m.topics),
                sorted(list(tp) for tp in m.held),
                [
                    i.instance_id,
                    i.client_id,
                    i.client_host,
                    i.session_ms,
                    list(i.topics),
                    i.pattern,
                    i.left,
                    i.seen,
                ],
            ]
            for mid, m in sorted(ms.members.items())
            for i in (g.members[mid],)
        ],
        "offsets": [
            [t, p, c.offset, c.metadata, c.meta_index] for (t, p), c in sorted(g.offsets.items())
        ],
        "reason": g.rebalance_reason,
        "reason_ms": g.rebalance_ms,
        "meta_index": g.meta_index,
        "changed": g.changed,
        "pending": [
            [pid, [[t, p, c.offset, c.metadata, c.meta_index] for (t, p), c in sorted(s.items())]]
            for pid, s in sorted(g.pending.items())
        ],
    }


def group_from_wire(raw: Any) -> ConsumerGroup:
    g = ConsumerGroup(raw["id"], raw["assignor"])
    ms = g.membership
    ms.epoch = raw["epoch"]
    ms.partitions = dict(raw["partitions"])
    ms.target = {m: frozenset((t, p) for t, p in tps) for m, tps in raw["target"].items()}
    for mid, epoch, previous, topics, held, info in raw["members"]:
        ms.members[mid] = MemberState(
            mid, epoch, frozenset(topics), previous, {(t, p) for t, p in held}
        )
        instance, client, host, session_ms, names, pattern, left, seen = info
        g.members[mid] = MemberInfo(
            instance, client, host, session_ms, tuple(names), pattern, left, seen
        )
    g.offsets = {(t, p): Committed(o, m, mi) for t, p, o, m, mi in raw["offsets"]}
    g.rebalance_reason, g.rebalance_ms = raw["reason"], raw["reason_ms"]
    g.meta_index, g.changed = raw["meta_index"], raw["changed"]
    g.pending = {
        pid: {(t, p): Committed(o, m, mi) for t, p, o, m, mi in staged}
        for pid, staged in raw.get("pending", [])
    }
    return g


def encode_group(g: ConsumerGroup) -> bytes:
    return cbor.encode(group_to_wire(g))
