"""The state-machine host: a new kind of machine plugs in by registering, and internal topics.

`CounterMachine` is a kind the broker does not know: it is registered for one topic and runs
through the same rounds, persistence, restart and leader timers as the partition log, without
any change to the round loop.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

import pytest

from broker.core.machine import Applied, GroupContext, MachineKind, MachineRegistry, MachineWrites
from broker.core.partition import PartitionConfig
from broker.core.partitions import log_kind
from broker.core.raft import Entry, EntryKind
from broker.wire.errors import ErrorCode
from tests.support.broker_harness import Broker, batch

_VALUE = struct.Struct(">q")


class CounterMachine:
    """Adds the integer each command holds; every applied command is a record (key: its Raft
    index), the total is the apply state; its leader proposes +1 every `every` ticks."""

    def __init__(self, every: int) -> None:
        self.applied_index = 0
        self.total = 0
        self.every = every
        self.ticks = 0
        self._new: list[tuple[int, bytes]] = []
        self.writes_taken: list[MachineWrites] = []

    def apply_entry(self, entry: Entry) -> Applied:
        self.applied_index = entry.index
        if entry.kind != EntryKind.NORMAL or not entry.data:
            return Applied()
        (n,) = _VALUE.unpack(entry.data)
        self.total += n
        self._new.append((entry.index, entry.data))
        return Applied(value=self.total)

    def take_writes(self) -> MachineWrites:
        new, self._new = tuple(self._new), []
        w = MachineWrites(_VALUE.pack(self.total) + _VALUE.pack(self.applied_index), None, new)
        self.writes_taken.append(w)
        return w

    def snapshot(self) -> bytes:
        return _VALUE.pack(self.total) + _VALUE.pack(self.applied_index)

    def restore_snapshot(self, data: bytes) -> None:
        self.total, self.applied_index = _VALUE.unpack(data[:8])[0], _VALUE.unpack(data[8:])[0]

    def load(self, state: bytes | None, records: Iterable[tuple[int, bytes]]) -> None:
        if state is not None:
            self.restore_snapshot(state)
        self.records = list(records)

    def leader_tick(self) -> list[bytes]:
        self.ticks += 1
        return [_VALUE.pack(1)] if self.ticks % self.every == 0 else []


def registry(every: int = 1000) -> MachineRegistry:
    reg = MachineRegistry(log_kind(PartitionConfig()))
    kind = MachineKind("counter", lambda _gc: CounterMachine(every), has_timers=True)
    reg.register(kind, ["counters"])
    return reg


def counter_group(b: Broker) -> tuple[int, CounterMachine]:
    g = b.node.by_partition[("counters", 0)]
    assert isinstance(g.machine, CounterMachine)
    return g.id, g.machine


def add(b: Broker, n: int) -> object:
    gid, _ = counter_group(b)
    token = b.token()
    err, _msg = b.node.host.propose_waiting(b.node.groups[gid], _VALUE.pack(n), token, 0)
    assert err == ErrorCode.NONE
    b.run()
    (c,) = b.completions_for(token)
    assert c.error == ErrorCode.NONE
    return c.value


def test_a_registered_kind_runs_in_its_topics_groups_and_answers_its_proposers() -> None:
    b = Broker(registry=registry()).boot()
    b.create_topic("counters")
    b.create_topic("plain")
    assert add(b, 5) == 5
    assert add(b, 7) == 12
    assert b.node.by_partition[("plain", 0)].kind.name == "partition-log"
    assert b.produce("plain", 0, batch(2)).error == ErrorCode.NONE


def test_a_kind_writes_only_what_changed_and_survives_a_restart() -> None:
    b = Broker(registry=registry()).boot()
    b.create_topic("counters")
    gid, m = counter_group(b)
    add(b, 5)
    add(b, 7)
    # Incremental: each round's writes carry only the records its applies added.
    with_records = [w for w in m.writes_taken if w.records]
    assert [len(w.records) for w in with_records] == [1, 1]
    assert b.store.records[gid] == {k: v for w in with_records for k, v in w.records}
    r = b.restart()
    gid2, m2 = counter_group(r)
    assert gid2 == gid and m2.total == 12
    assert sorted(k for k, _ in m2.records) == sorted(b.store.records[gid])
    assert add(r, 1) == 13


def test_leader_timers_propose_commands_that_every_replica_applies() -> None:
    b = Broker(registry=registry(every=2)).boot()
    b.create_topic("counters")
    _, m = counter_group(b)
    before = m.total
    b.tick(10)
    assert m.total - before == 5  # +1 every second tick, through the log


def test_a_log_request_to_another_kind_is_refused_with_a_code() -> None:
    b = Broker(registry=registry()).boot()
    b.create_topic("counters")
    err, msg = b.node.produce(b.token(), 0, "counters", 0, batch(1))
    assert err == ErrorCode.INVALID_TOPIC and msg is not None and "counter" in msg
    assert b.node.fetch("counters", 0, 0, 1 << 20, False).error == ErrorCode.INVALID_TOPIC


def test_registering_a_topic_twice_is_refused() -> None:
    reg = registry()
    kind = MachineKind("other", lambda _gc: CounterMachine(1))
    with pytest.raises(ValueError, match="counter"):
        reg.register(kind, ["counters"])


def test_group_context_carries_the_topic_config() -> None:
    seen: list[GroupContext] = []

    def create(gc: GroupContext) -> CounterMachine:
        seen.append(gc)
        return CounterMachine(1000)

    reg = MachineRegistry(log_kind(PartitionConfig()))
    reg.register(MachineKind("counter", create), ["counters"])
    b = Broker(registry=reg).boot()
    b.create_topic("counters", config={"max.message.bytes": "1000"})
    assert seen and seen[0].topic == "counters" and seen[0].partition == 0
    assert seen[0].config == {"max.message.bytes": "1000"}


# -- internal topics --------------------------------------------------------------------------


def test_the_controller_creates_an_internal_topic_on_first_need() -> None:
    b = Broker(options={"internal_topic_partitions": 50}).boot()
    assert not b.node.ensure_internal_topic("__consumer_offsets")
    b.run()
    assert b.node.ensure_internal_topic("__consumer_offsets")
    t = b.node.meta.topics["__consumer_offsets"]
    assert len(t.partitions) == 50
    assert t.replication_factor == 1  # 3 by default, capped at the one live broker
    b.tick(3)
    assert b.node.topic_led("__consumer_offsets")


def test_users_cannot_create_produce_to_or_delete_internal_topics() -> None:
    b = Broker().boot()
    token = b.token()
    err, _ = b.node.create_topic(token, 0, "__mine", 1, 1, {})
    assert err == ErrorCode.NONE  # refused at apply, where the metadata log decides
    b.run()
    (c,) = b.completions_for(token)
    assert c.error == ErrorCode.INVALID_TOPIC and "reserved" in (c.message or "")
    assert "__mine" not in b.node.meta.topics
    b.node.ensure_internal_topic("__transaction_state")
    b.run()
    b.tick(3)
    err, msg = b.node.produce(b.token(), 0, "__transaction_state", 0, batch(1))
    assert err == ErrorCode.INVALID_TOPIC and "internal" in (msg or "")
    err, msg = b.node.delete_topic(b.token(), 0, "__transaction_state")
    assert err == ErrorCode.INVALID_TOPIC and "internal" in (msg or "")
    assert "__transaction_state" in b.node.meta.topics


def test_only_known_internal_topics_can_be_ensured() -> None:
    b = Broker().boot()
    with pytest.raises(ValueError, match="not an internal topic"):
        b.node.ensure_internal_topic("__anything")
