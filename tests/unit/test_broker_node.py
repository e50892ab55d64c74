"""BrokerNode on one broker: bootstrap, topics, produce/fetch, failover rules, restart."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from broker.core.metadata import METADATA_GROUP, PRODUCER_ID_BLOCK, TopicInfo
from broker.core.node import BrokerNode, FetchResult
from broker.core.partition import ApplyResult, Outcome, PartitionConfig, PartitionMachine
from broker.core.raft import EntryKind, Role
from broker.core.raft.types import Heartbeat
from broker.wire.batch import decode_records
from broker.wire.errors import ErrorCode
from tests.support.broker_harness import (
    CLUSTER_ID,
    Broker,
    advertised,
    batch,
    entry_indexes,
)

BIG = 1 << 20


def booted(topic: str | None = "t", partitions: int = 1, **kwargs: object) -> Broker:
    b = Broker(**kwargs).boot()  # type: ignore[arg-type]
    if topic is not None:
        b.create_topic(topic, partitions)
    return b


def rounds_until(b: Broker, done: Callable[[], bool], limit: int = 50) -> int:
    """Run single rounds (no ticks) until `done()`; how many it took."""
    for n in range(limit):
        if done():
            return n
        b.round()
    raise AssertionError("condition never reached")


def gid(b: Broker, topic: str = "t", partition: int = 0) -> int:
    return b.node.by_partition[(topic, partition)].id


def fetch_all(node: BrokerNode, topic: str = "t", partition: int = 0) -> FetchResult:
    return node.fetch(topic, partition, 0, BIG, False)


def stored_applied_index(b: Broker, group: int) -> int:
    m = PartitionMachine()
    m.restore(b.store.apply[group], [])
    return m.applied_index


def idem(seq: int, n: int = 1, *, pid: int = 9, epoch: int = 0) -> bytes:
    return batch(n, pid=pid, epoch=epoch, seq=seq, value=f"s{seq}".encode())


# -- bootstrap --------------------------------------------------------------------------------


def test_bootstrap_records_cluster_id_and_registers() -> None:
    b = Broker()
    assert not b.node.is_ready()
    b.boot()
    node = b.node
    assert node.is_ready()
    assert node.meta.cluster_id == CLUSTER_ID
    assert node.meta.brokers == {0: advertised(0, 1)}
    assert node.controller == 0
    assert node.metadata_group.raft.is_leader
    assert node.stats() == {"groups": 1, "leaders": 1, "quiesced": 0, "waiters": 0}
    assert not node.has_work()


def test_bootstrap_is_the_first_commands_of_the_metadata_log() -> None:
    b = booted(topic=None)
    kinds = [a.entry.kind for a in b.applied if a.group_id == METADATA_GROUP]
    assert kinds[0] == EntryKind.NOOP
    assert EntryKind.NORMAL in kinds
    assert b.store.logs[METADATA_GROUP].last_index() == len(kinds)


def test_fresh_store_without_a_cluster_id_never_becomes_ready() -> None:
    b = Broker(cluster_id=None)
    b.run()
    b.tick(20)
    assert b.node.controller == 0
    assert b.node.meta.cluster_id is None
    assert b.node.meta.brokers == {}
    assert not b.node.is_ready()


def test_only_the_controller_accepts_topic_commands() -> None:
    b = Broker()  # no round yet: the metadata group has not elected itself
    assert b.node.create_topic(1, 0, "t", 1, 1, {})[0] == ErrorCode.NOT_CONTROLLER
    assert b.node.delete_topic(1, 0, "t")[0] == ErrorCode.NOT_CONTROLLER


# -- topics -----------------------------------------------------------------------------------


def test_create_topic_completes_at_commit_then_once_every_partition_is_led() -> None:
    b = booted(topic=None)
    node = b.node
    assert node.create_topic(1, 0, "t", 3, 1, {}) == (ErrorCode.NONE, None)
    rounds_until(b, lambda: bool(b.completions_for(1)))
    (c,) = b.completions_for(1)
    assert c.error == ErrorCode.NONE
    assert isinstance(c.value, TopicInfo) and c.value.name == "t"
    # Committed and applied: the groups exist, but nobody leads them yet.
    assert {("t", p) for p in range(3)} <= set(node.by_partition)
    assert not node.topic_led("t")
    assert not node.is_ready()
    node.await_leaders(1, 0, "t")
    assert len(b.completions_for(1)) == 1
    while len(b.completions_for(1)) == 1:
        assert not node.topic_led("t")
        b.round()
    assert b.completions_for(1)[1].error == ErrorCode.NONE
    assert node.topic_led("t")
    assert node.is_ready()
    views = [node.partition_view(pi) for pi in node.meta.topics["t"].partitions]
    assert [(v.partition, v.leader, v.replicas) for v in views] == [(p, 0, (0,)) for p in range(3)]
    assert all(v.leader_term >= 1 for v in views)


def test_create_topic_refused_at_apply() -> None:
    b = booted()
    node = b.node
    node.create_topic(1, 0, "t", 1, 1, {})  # exists by then
    node.create_topic(2, 0, "u", 1, 2, {})  # only one broker
    node.create_topic(3, 0, "v", 1, 1, {"retention.ms": "soon"})
    b.run()
    assert b.completions_for(1)[0].error == ErrorCode.TOPIC_ALREADY_EXISTS
    assert b.completions_for(2)[0].error == ErrorCode.NOT_ENOUGH_REPLICAS
    assert b.completions_for(3)[0].error == ErrorCode.INVALID_CONFIG
    assert set(node.meta.topics) == {"t"}


def test_topic_config_max_message_bytes_applies_to_produce() -> None:
    b = booted(topic=None)
    b.create_topic("small", 1, config={"max.message.bytes": "200"})
    assert b.node.produce(1, 0, "small", 0, batch(1, size=100))[0] == ErrorCode.NONE
    err, msg = b.node.produce(2, 0, "small", 0, batch(1, size=300))
    assert err == ErrorCode.MESSAGE_TOO_LARGE and msg


def test_delete_topic_drops_groups_and_fails_waiters() -> None:
    b = booted(partitions=2)
    node = b.node
    groups = {gid(b, "t", 0), gid(b, "t", 1)}
    assert node.delete_topic(2, 0, "t") == (ErrorCode.NONE, None)
    b.round()  # the deletion is appended; it commits in the next round, with the produce
    assert b.node.produce(1, 0, "t", 0, batch(2)) == (ErrorCode.NONE, None)  # not committed
    b.run()
    (failed,) = b.completions_for(1)
    assert failed.error == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    (deleted,) = b.completions_for(2)
    assert deleted.error == ErrorCode.NONE and isinstance(deleted.value, TopicInfo)
    assert "t" not in node.meta.topics
    assert not groups & set(node.groups)
    assert not any(k[0] == "t" for k in node.by_partition)
    assert not groups & set(b.store.logs)  # deleted from the store by a later round
    assert groups <= set(b.store.deleted)
    assert node.produce(3, 0, "t", 0, batch())[0] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    assert node.fetch("t", 0, 0, BIG, False).error == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    assert node.delete_topic(4, 0, "t")[0] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    assert node.is_ready()


def test_deleted_topic_stays_deleted_after_restart() -> None:
    b = booted()
    old = gid(b)
    b.produce("t", 0, batch(3))
    b.node.delete_topic(1, 0, "t")
    b.run()
    b.create_topic("t", 1)  # the same name again: new groups, an empty log
    assert gid(b) != old
    b.produce("t", 0, batch(1))
    r = b.restart()
    assert old not in r.node.groups and old not in r.store.logs
    assert gid(r) == gid(b)
    assert r.node.high_watermark("t", 0) == 1


def test_cancel_removes_waiters() -> None:
    b = booted()
    node = b.node
    node.produce(1, 0, "t", 0, batch())
    node.produce(2, 0, "t", 0, batch())
    node.create_topic(3, 0, "u", 1, 1, {})
    node.cancel(1)
    node.cancel(3)
    assert node.stats()["waiters"] == 1
    b.run()
    assert b.completions_for(1) == [] and b.completions_for(3) == []
    assert b.completions_for(2)[0].value.base_offset == 1  # the cancelled batch still committed
    assert "u" in node.meta.topics


def test_cancel_removes_a_wait_for_leaders() -> None:
    b = booted(topic=None)
    node = b.node
    node.create_topic(1, 0, "t", 2, 1, {})
    rounds_until(b, lambda: bool(b.completions_for(1)))
    assert not node.topic_led("t")
    node.await_leaders(1, 0, "t")
    node.cancel(1)
    b.run()
    assert node.topic_led("t")
    assert len(b.completions_for(1)) == 1


# -- produce and fetch ------------------------------------------------------------------------


def test_produce_completes_with_apply_result_offsets() -> None:
    b = booted()
    assert b.produce("t", 0, batch(3)).value == ApplyResult(Outcome.APPENDED, 0, 2)
    assert b.produce("t", 0, batch(1)).value == ApplyResult(Outcome.APPENDED, 3, 3)
    assert b.node.high_watermark("t", 0) == 4


def test_batches_proposed_together_commit_in_one_round() -> None:
    b = booted()
    for token, n in ((1, 2), (2, 3), (3, 1)):
        assert b.node.produce(token, 0, "t", 0, batch(n)) == (ErrorCode.NONE, None)
    done = []
    while not done:
        done = b.round()
    got = {c.token: (c.value.base_offset, c.value.last_offset) for c in done}
    assert got == {1: (0, 1), 2: (2, 4), 3: (5, 5)}


def test_produce_refused_up_front() -> None:
    b = booted()
    node = b.node
    assert node.produce(1, 0, "nope", 0, batch())[0] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    assert node.produce(1, 0, "t", 1, batch())[0] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    corrupt = bytearray(batch(2))
    corrupt[-1] ^= 1
    assert node.produce(1, 0, "t", 0, bytes(corrupt))[0] == ErrorCode.CORRUPT_MESSAGE
    assert node.produce(1, 0, "t", 0, batch(1, size=2 * BIG))[0] == ErrorCode.MESSAGE_TOO_LARGE
    assert node.stats()["waiters"] == 0
    assert not node.has_work()


def test_producer_errors_are_decided_at_apply() -> None:
    b = booted()
    assert b.produce("t", 0, idem(0, 2)).value.outcome == Outcome.APPENDED
    gap = b.produce("t", 0, idem(5))
    assert gap.error == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
    assert gap.value == ApplyResult(Outcome.REJECTED, error=ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER)
    newer_epoch = b.produce("t", 0, idem(2, epoch=1))
    assert newer_epoch.error == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
    assert b.produce("t", 0, idem(3, pid=77)).error == ErrorCode.UNKNOWN_PRODUCER_ID
    assert b.node.high_watermark("t", 0) == 2
    assert len(fetch_all(b.node).batches) == 1  # rejected bytes are never served


def test_same_batch_proposed_twice_is_appended_once() -> None:
    """The leader does not deduplicate when it proposes: both copies are in the log and the
    partition machine decides at apply."""
    b = booted()
    data = idem(0, 4)
    assert b.node.produce(1, 0, "t", 0, data) == (ErrorCode.NONE, None)
    assert b.node.produce(2, 0, "t", 0, data) == (ErrorCode.NONE, None)
    b.run()
    assert b.completions_for(1)[0].value == ApplyResult(Outcome.APPENDED, 0, 3)
    assert b.completions_for(2)[0].value == ApplyResult(Outcome.DUPLICATE, 0, 3)
    assert b.node.high_watermark("t", 0) == 4
    assert fetch_all(b.node).batches == ((0, data),)


def test_fetch_returns_whole_batches_up_to_the_high_watermark() -> None:
    b = booted()
    node = b.node
    data = [batch(3, value=b"a"), batch(2, value=b"b"), batch(4, value=b"c")]
    for d in data:
        b.produce("t", 0, d)
    r = fetch_all(node)
    assert r.error == ErrorCode.NONE
    assert (r.high_watermark, r.last_stable_offset, r.log_start_offset) == (9, 9, 0)
    assert r.batches == ((0, data[0]), (3, data[1]), (5, data[2]))
    assert [rec.value for rec in decode_records(r.batches[1][1])] == [b"b", b"b"]
    # From inside a batch: the whole batch that holds the offset.
    assert [o for o, _ in node.fetch("t", 0, 4, BIG, True).batches] == [3, 5]
    assert [o for o, _ in node.fetch("t", 0, 8, BIG, True).batches] == [5]
    at_end = node.fetch("t", 0, 9, BIG, True)
    assert (at_end.error, at_end.batches, at_end.high_watermark) == (ErrorCode.NONE, (), 9)
    beyond = node.fetch("t", 0, 10, BIG, True)
    assert beyond.error == ErrorCode.OFFSET_OUT_OF_RANGE and beyond.high_watermark == 9
    assert node.fetch("t", 0, -1, BIG, True).error == ErrorCode.OFFSET_OUT_OF_RANGE
    assert node.fetch("x", 0, 0, BIG, True).error == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION


def test_fetch_never_serves_beyond_what_is_applied() -> None:
    b = booted()
    b.produce("t", 0, batch(2))
    b.node.produce(1, 0, "t", 0, batch(3))
    while not b.completions_for(1):
        r = fetch_all(b.node)
        assert r.high_watermark == 2 and len(r.batches) == 1
        b.round()
    assert fetch_all(b.node).high_watermark == 5


def test_fetch_respects_max_bytes_but_returns_at_least_one_batch() -> None:
    b = booted()
    data = [batch(1, size=100, value=bytes([65 + i])) for i in range(4)]
    for d in data:
        b.produce("t", 0, d)
    size = len(data[0])
    node = b.node

    def offsets(max_bytes: int, offset: int = 0) -> list[int]:
        return [o for o, _ in node.fetch("t", 0, offset, max_bytes, True).batches]

    assert offsets(1) == [0]
    assert offsets(0) == [0]
    assert offsets(size) == [0]
    assert offsets(size + 1) == [0]
    assert offsets(2 * size) == [0, 1]
    assert offsets(3 * size - 1) == [0, 1]
    assert offsets(BIG) == [0, 1, 2, 3]
    assert offsets(1, offset=3) == [3]
    assert node.fetch("t", 0, 0, 2 * size, True).size == 2 * size


def test_list_offset() -> None:
    b = booted()
    b.produce("t", 0, batch(2, ts=100))
    b.produce("t", 0, batch(3, ts=200))
    node = b.node
    assert node.list_offset("t", 0, -1) == (ErrorCode.NONE, 5)
    assert node.list_offset("t", 0, -2) == (ErrorCode.NONE, 0)
    assert node.list_offset("t", 0, 150) == (ErrorCode.NONE, 2)
    assert node.list_offset("t", 0, 999) == (ErrorCode.NONE, 5)
    assert node.list_offset("t", 9, -1)[0] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION


# -- leadership -------------------------------------------------------------------------------


def assert_serves_only_after_noop(b: Broker, topic: str = "t") -> None:
    """Round by round: not leader -> NOT_LEADER; leader before its no-op commits ->
    LEADER_NOT_AVAILABLE and no leader reported; then served."""
    node = b.node
    seen_waiting = False
    for _ in range(30):
        g = node.by_partition.get((topic, 0))
        if g is not None:
            view = node.partition_view(node.meta.topics[topic].partitions[0])
            r = node.fetch(topic, 0, 0, BIG, True)
            err, _ = node.list_offset(topic, 0, -1)
            if g.raft.role != Role.LEADER:
                assert r.error == ErrorCode.NOT_LEADER_OR_FOLLOWER
                assert view.leader is None
            elif g.raft.commit_index < g.raft.term_start_index:
                seen_waiting = True
                assert r.error == ErrorCode.LEADER_NOT_AVAILABLE
                assert r.high_watermark == -1
                assert err == ErrorCode.LEADER_NOT_AVAILABLE
                assert node.produce(1, 0, topic, 0, batch())[0] == ErrorCode.LEADER_NOT_AVAILABLE
                assert view.leader is None
                assert not node.is_ready()
            else:
                assert r.error == ErrorCode.NONE
                assert view.leader == 0
                assert seen_waiting
                return
        b.round()
    raise AssertionError("never served")


def test_new_leader_serves_nothing_until_its_noop_commits() -> None:
    b = booted(topic=None)
    b.node.create_topic(1, 0, "t", 1, 1, {})
    assert_serves_only_after_noop(b)


def test_leader_after_restart_serves_nothing_until_its_noop_commits() -> None:
    b = booted()
    b.produce("t", 0, batch(3))
    r = b.restart(boot=False)
    assert_serves_only_after_noop(r)
    assert fetch_all(r.node).high_watermark == 3


def test_leadership_loss_fails_waiters_and_the_retry_is_a_duplicate() -> None:
    """The old leader's entry survives in the log uncommitted; the client's retry goes to
    the new leader (here: the same node in a later term) and must not be appended twice."""
    b = booted()
    node = b.node
    g = node.by_partition[("t", 0)]
    data = idem(0, 3)
    assert node.produce(1, 0, "t", 0, data) == (ErrorCode.NONE, None)
    node.step(g.id, Heartbeat((1, 1), (0, 1), g.raft.term + 10, 0))  # a higher term
    b.run()
    (lost,) = b.completions_for(1)
    assert lost.error == ErrorCode.NOT_LEADER_OR_FOLLOWER
    assert node.produce(2, 0, "t", 0, data)[0] == ErrorCode.NOT_LEADER_OR_FOLLOWER
    retried = False
    for _ in range(40):
        node.tick()
        while node.has_work():
            b.round()
            # Retry the moment the new leader serves, before the old entry is applied.
            if not retried and g.serving() and g.machine.next_offset == 0:
                assert node.produce(3, 0, "t", 0, data) == (ErrorCode.NONE, None)
                retried = True
        if b.completions_for(3):
            break
    assert retried
    assert b.completions_for(3)[0].value == ApplyResult(Outcome.DUPLICATE, 0, 2)
    assert fetch_all(node).batches == ((0, data),)


# -- restart ----------------------------------------------------------------------------------


def test_restart_replays_only_the_tail() -> None:
    b = booted()
    group = gid(b)
    for i in range(4):
        b.produce("t", 0, batch(i + 1))
    applied = stored_applied_index(b, group)
    assert applied == b.store.logs[group].last_index()
    before = fetch_all(b.node)
    r = b.restart()
    replayed = entry_indexes(r.applied, group)
    assert replayed and min(replayed) == applied + 1  # the new term's no-op only
    assert all(a.entry.kind == EntryKind.NOOP for a in r.applied if a.group_id == group)
    after = fetch_all(r.node)
    assert after.batches == before.batches
    assert after.high_watermark == before.high_watermark == 10
    assert r.produce("t", 0, batch(2)).value == ApplyResult(Outcome.APPENDED, 10, 11)


def test_restart_before_apply_state_is_written_replays_and_recovers_offsets() -> None:
    b = booted()
    group = gid(b)
    b.produce("t", 0, idem(0, 2))
    b.produce("t", 0, idem(2, 3))
    # The next batch's completion arrives in the round that applied it; its apply state
    # would only go into the following round's write, which never happens.
    b.node.produce(1, 0, "t", 0, idem(5, 4))
    rounds_until(b, lambda: bool(b.completions_for(1)))
    assert b.completions_for(1)[0].value == ApplyResult(Outcome.APPENDED, 5, 8)
    assert b.node.has_work()
    applied = stored_applied_index(b, group)
    assert applied < b.store.logs[group].last_index()
    assert len(b.store.records[group]) == 2
    before = fetch_all(b.node)

    r = b.restart()
    replayed = entry_indexes(r.applied, group)
    assert min(replayed) == applied + 1
    assert fetch_all(r.node).batches == before.batches
    assert sorted(r.store.records[group]) == [0, 2, 5]
    # Dedup survived, including for the batch only the replay re-applied.
    assert r.produce("t", 0, idem(5, 4)).value == ApplyResult(Outcome.DUPLICATE, 5, 8)
    assert r.produce("t", 0, idem(0, 2)).value == ApplyResult(Outcome.DUPLICATE, 0, 1)
    assert r.produce("t", 0, idem(12)).error == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
    assert r.produce("t", 0, idem(9)).value == ApplyResult(Outcome.APPENDED, 9, 9)


def test_restart_keeps_producer_dedup() -> None:
    b = booted(partitions=2)
    first = b.produce("t", 0, idem(0, 3)).value
    second = b.produce("t", 1, idem(0, 2)).value
    r = b.restart()
    assert r.produce("t", 0, idem(0, 3)).value == ApplyResult(
        Outcome.DUPLICATE, first.base_offset, first.last_offset
    )
    assert r.produce("t", 1, idem(0, 2)).value == ApplyResult(
        Outcome.DUPLICATE, second.base_offset, second.last_offset
    )
    assert r.produce("t", 0, idem(2, epoch=0)).error == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
    assert r.produce("t", 0, idem(3)).value == ApplyResult(Outcome.APPENDED, 3, 3)


def test_unwritten_round_is_lost_and_was_never_acknowledged() -> None:
    b = booted()
    b.produce("t", 0, batch(2))
    b.node.produce(1, 0, "t", 0, idem(0, 3))
    b.crash_mid_round()  # the write carrying the entry never happens
    assert b.completions_for(1) == []
    r = b.restart()
    assert fetch_all(r.node).high_watermark == 2
    assert r.produce("t", 0, idem(0, 3)).value == ApplyResult(Outcome.APPENDED, 2, 4)


def test_acknowledgement_does_not_wait_for_the_next_batchs_write() -> None:
    """A round carrying the commit of one batch and the append of the next acknowledges the
    first before its write (the entry is durable already); a crash during that write loses
    only the second, which was never acknowledged."""
    b = booted()
    node = b.node
    assert node.produce(1, 0, "t", 0, batch(2)) == (ErrorCode.NONE, None)
    b.round()  # appends and persists the first batch; it commits in the next round
    assert b.completions_for(1) == []
    assert node.produce(2, 0, "t", 0, batch(3)) == (ErrorCode.NONE, None)
    rnd = node.start_round()
    assert any(rd.entries and rd.committed_entries for _, rd in rnd.readies)
    early = node.apply_committed(rnd)
    assert [(c.token, c.value.base_offset, c.value.last_offset) for c in early] == [(1, 0, 1)]
    assert node.high_watermark("t", 0) == 2
    r = b.restart()  # the round's write never happened
    assert fetch_all(r.node).high_watermark == 2
    assert r.produce("t", 0, batch(1)).value == ApplyResult(Outcome.APPENDED, 2, 2)


def test_restart_expiry_config_is_kept() -> None:
    b = booted(partition=PartitionConfig(producer_expiry_ms=1_000))
    b.produce("t", 0, batch(1, pid=5, epoch=0, seq=0, ts=10_000))
    r = b.restart()
    assert r.node.by_partition[("t", 0)].machine.config.producer_expiry_ms == 1_000
    late = r.produce("t", 0, batch(1, pid=5, epoch=0, seq=1, ts=20_000))
    assert late.error == ErrorCode.UNKNOWN_PRODUCER_ID


# -- producer ids -----------------------------------------------------------------------------


def producer_ids(b: Broker, n: int) -> list[int]:
    tokens = [b.token() for _ in range(n)]
    for t in tokens:
        b.node.init_producer_id(t, 0)
    b.run()
    out = []
    for t in tokens:
        (c,) = b.completions_for(t)
        assert c.error == ErrorCode.NONE
        out.append(c.value)
    return out


def test_producer_ids_come_from_one_block() -> None:
    b = booted(topic=None)
    ids = producer_ids(b, 5)
    assert ids == list(range(5))
    assert producer_ids(b, 2) == [5, 6]
    assert b.node.meta.next_producer_id == PRODUCER_ID_BLOCK


def test_producer_ids_after_restart_do_not_overlap() -> None:
    b = booted(topic=None)
    before = set(producer_ids(b, 3))
    r = b.restart()
    after = set(producer_ids(r, 3))
    assert not before & after
    r2 = r.restart()
    again = set(producer_ids(r2, 3))
    assert not (before | after) & again
    assert r2.node.meta.next_producer_id == 3 * PRODUCER_ID_BLOCK


def test_block_committed_but_not_applied_before_a_crash_is_never_used() -> None:
    b = booted(topic=None)
    assert producer_ids(b, PRODUCER_ID_BLOCK) == list(range(PRODUCER_ID_BLOCK))
    t = b.token()
    b.node.init_producer_id(t, 0)
    log = b.store.logs[METADATA_GROUP]
    last = log.last_index()
    rounds_until(b, lambda: log.last_index() > last)  # the request is durable...
    assert b.completions_for(t) == []  # ...but not applied: nobody was given an id
    r = b.restart()
    # The replayed block [1000, 2000) was asked for by the crashed incarnation; never used.
    # (It was not handed out, but the node cannot know that.)
    ids = producer_ids(r, 2)
    assert ids == [2 * PRODUCER_ID_BLOCK, 2 * PRODUCER_ID_BLOCK + 1]


def test_init_producer_id_waits_for_the_controller_and_can_be_cancelled() -> None:
    b = Broker()
    b.node.init_producer_id(1, 0)
    b.node.init_producer_id(2, 0)
    b.node.cancel(1)
    b.boot()
    assert b.completions_for(1) == []
    assert [c.value for c in b.completions_for(2)] == [0]


@pytest.mark.parametrize("partitions", [1, 3])
def test_is_ready_after_restart(partitions: int) -> None:
    b = booted(partitions=partitions)
    r = b.restart(boot=False)
    assert not r.node.is_ready()
    r.boot()
    assert r.node.is_ready()
    assert r.node.meta.topics == b.node.meta.topics
    assert r.node.meta.brokers == b.node.meta.brokers
    assert r.node.meta.cluster_id == b.node.meta.cluster_id
