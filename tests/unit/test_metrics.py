"""BrokerMetrics on its own: requests counted per API and error, latency buckets, scrape-time
samples, and two registries that never mix (two embedded brokers in one process)."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from broker.core.ids import Member
from broker.core.reply import Reply
from broker.runtime.driver import Op
from broker.runtime.metrics import BrokerMetrics, NodeCollector
from broker.runtime.node_metrics import (
    SIZE_EVERY_S,
    DiskUsage,
    _tree_bytes,
    follower_lag,
    under_replicated,
)
from broker.runtime.server import _measure
from broker.wire.api import ApiKey
from broker.wire.batch import Record, data_record_count, encode_batch
from broker.wire.errors import ErrorCode
from broker.wire.messages import (
    FetchedBatch,
    FetchPartition,
    FetchPartitionResult,
    FetchRequest,
    FetchResponse,
    FetchTopic,
    FetchTopicResult,
    ProducePartition,
    ProducePartitionResult,
    ProduceRequest,
    ProduceResponse,
    ProduceTopic,
    ProduceTopicResult,
    Request,
    Response,
)
from broker.wire.protocol import RequestHeader
from tests.support.wait import wait_until_async
from tests.unit.raft_harness import Net


def samples(m: BrokerMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(m.render()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_requests_are_counted_per_api_and_error_and_timed_per_api() -> None:
    m = BrokerMetrics()
    m.request_answered("fetch", "NONE", 0.002)
    m.request_answered("fetch", "NONE", 0.2)
    m.request_answered("fetch", "NOT_LEADER_OR_FOLLOWER", 0.0004)
    got = samples(m)
    assert got[("sluice_requests_total", (("api", "fetch"), ("error", "NONE")))] == 2
    err = ("error", "NOT_LEADER_OR_FOLLOWER")
    assert got[("sluice_requests_total", (("api", "fetch"), err))] == 1
    fetch = (("api", "fetch"),)
    assert got[("sluice_request_duration_seconds_count", fetch)] == 3
    assert (
        got[("sluice_request_duration_seconds_bucket", (("api", "fetch"), ("le", "0.0005")))] == 1
    )
    assert (
        got[("sluice_request_duration_seconds_bucket", (("api", "fetch"), ("le", "0.0025")))] == 2
    )
    assert abs(got[("sluice_request_duration_seconds_sum", fetch)] - 0.2024) < 1e-9


def test_scrape_time_samples_are_read_at_each_scrape_and_registries_do_not_mix() -> None:
    level = [3.0]
    a, b = BrokerMetrics(), BrokerMetrics()
    a.add(NodeCollector(lambda: [("gauge", "sluice_x", "x", [((), level[0])], ())]))
    assert samples(a)[("sluice_x", ())] == 3
    level[0] = 5.0
    assert samples(a)[("sluice_x", ())] == 5
    assert ("sluice_x", ()) not in samples(b)
    a.add(NodeCollector(lambda: [("counter", "sluice_y", "y", [(("r",), 7.0)], ("kind",))]))
    assert samples(a)[("sluice_y_total", (("kind", "r"),))] == 7


def test_frame_bytes_records_commit_latency_and_round_writes_are_recorded() -> None:
    m = BrokerMetrics()
    m.request_answered("produce", "NONE", 0.003, request_bytes=120, response_bytes=40)
    m.request_answered("produce", "NONE", 0.004, request_bytes=80, response_bytes=41)
    m.records_produced("a", 7)
    m.records_produced("a", 3)
    m.records_fetched("b", 2)
    m.produce_committed(0.003)
    m.round_written(0.0003, 12, 5000)
    m.round_written(0.002, 0, 0)
    got = samples(m)
    assert got[("sluice_request_bytes_total", (("api", "produce"),))] == 200
    assert got[("sluice_response_bytes_total", (("api", "produce"),))] == 81
    assert got[("sluice_records_produced_total", (("topic", "a"),))] == 10
    assert got[("sluice_records_fetched_total", (("topic", "b"),))] == 2
    assert got[("sluice_produce_commit_seconds_count", ())] == 1
    assert got[("sluice_produce_commit_seconds_bucket", (("le", "0.0025"),))] == 0
    assert got[("sluice_produce_commit_seconds_bucket", (("le", "0.005"),))] == 1
    assert got[("sluice_store_write_seconds_count", ())] == 2
    assert got[("sluice_store_write_seconds_bucket", (("le", "0.0005"),))] == 1
    assert got[("sluice_round_entries_sum", ())] == 12
    assert got[("sluice_round_entries_bucket", (("le", "0.0"),))] == 1
    assert got[("sluice_round_entries_bucket", (("le", "16.0"),))] == 2
    assert got[("sluice_round_bytes_sum", ())] == 5000
    assert got[("sluice_round_bytes_bucket", (("le", "4096.0"),))] == 1


def batch(n: int, *, control: bool = False) -> bytes:
    records = [Record(value=b"v%d" % i, timestamp=1_000 + i) for i in range(n)]
    if control:
        return encode_batch(records, producer_id=9, producer_epoch=0, transactional=True,
                            control=True)  # fmt: skip
    return encode_batch(records)


def answered(api: ApiKey, request: Request, body: Response | None, *, held: int) -> Op:
    header = RequestHeader(api_key=api, api_version=0, correlation_id=1, client_id=None)
    op = Op(header, request, started=trio.current_time() - 0.002)
    op.held = held
    op.resolve(Reply(1, ErrorCode.NONE, None, body))
    return op


async def test_answers_count_frame_bytes_and_records_from_batch_headers_per_topic() -> None:
    """Produce: records of the partitions answered without error, per topic; the commit
    latency only of an answer without any error. Fetch: data records, control batches
    left out. Bytes: the request frame with its length prefix, the answer frame as sent."""
    ok = ErrorCode.NONE
    produce = ProduceRequest(topics=(
        ProduceTopic(name="a", partitions=(ProducePartition(partition=0, batch=batch(3)),
                                           ProducePartition(partition=1, batch=batch(4)))),
        ProduceTopic(name="b", partitions=(ProducePartition(partition=0, batch=batch(5)),)),
    ))  # fmt: skip
    produced = ProduceResponse(topics=(
        ProduceTopicResult(name="a", partitions=(
            ProducePartitionResult(partition=0, error=ok, base_offset=0),
            ProducePartitionResult(partition=1, error=ErrorCode.NOT_LEADER_OR_FOLLOWER))),
        ProduceTopicResult(name="b", partitions=(
            ProducePartitionResult(partition=0, error=ok, base_offset=0),)),
    ))  # fmt: skip
    clean = ProduceRequest(topics=(
        ProduceTopic(name="a", partitions=(ProducePartition(partition=0, batch=batch(2)),)),
    ))  # fmt: skip
    clean_answer = ProduceResponse(topics=(
        ProduceTopicResult(name="a", partitions=(
            ProducePartitionResult(partition=0, error=ok, base_offset=3),)),
    ))  # fmt: skip
    fetch = FetchRequest(topics=(FetchTopic(name="a", partitions=(
        FetchPartition(partition=0, offset=0),)),))  # fmt: skip
    fetched = FetchResponse(topics=(
        FetchTopicResult(name="a", partitions=(
            FetchPartitionResult(partition=0, batches=(
                FetchedBatch(base_offset=0, data=batch(3)),
                FetchedBatch(base_offset=3, data=batch(1, control=True)),
                FetchedBatch(base_offset=4, data=batch(6)))),
            FetchPartitionResult(partition=1, error=ErrorCode.OFFSET_OUT_OF_RANGE))),
    ))  # fmt: skip
    ops = [
        answered(ApiKey.PRODUCE, produce, produced, held=300),
        answered(ApiKey.PRODUCE, clean, clean_answer, held=100),
        answered(ApiKey.FETCH, fetch, fetched, held=50),
    ]
    frames = [b"x" * 30, b"y" * 20, b"z" * 400]
    m = BrokerMetrics()
    _measure(m, ops, frames)
    got = samples(m)
    assert got[("sluice_records_produced_total", (("topic", "a"),))] == 3 + 2
    assert got[("sluice_records_produced_total", (("topic", "b"),))] == 5
    assert got[("sluice_records_fetched_total", (("topic", "a"),))] == 3 + 6
    assert got[("sluice_produce_commit_seconds_count", ())] == 1
    assert 0.002 <= got[("sluice_produce_commit_seconds_sum", ())] < 1
    assert got[("sluice_request_bytes_total", (("api", "produce"),))] == 300 + 100 + 2 * 4
    assert got[("sluice_response_bytes_total", (("api", "produce"),))] == 30 + 20
    assert got[("sluice_request_bytes_total", (("api", "fetch"),))] == 50 + 4
    assert got[("sluice_response_bytes_total", (("api", "fetch"),))] == 400
    assert got[("sluice_requests_total", (("api", "produce"), ("error", "NONE")))] == 2


def test_a_batch_header_gives_its_data_record_count_without_decoding() -> None:
    assert data_record_count(batch(7)) == 7
    assert data_record_count(batch(1, control=True)) == 0
    assert data_record_count(b"\x02" + batch(7)[1:]) == 0  # another format: not counted
    assert data_record_count(batch(7)[:20]) == 0


def test_raft_counts_the_elections_it_started_and_the_leaders_it_learned() -> None:
    net = Net([1, 2, 3])
    net.elect(1)
    nodes = [net[n] for n in (1, 2, 3)]
    assert [n.elections_started for n in nodes] == [1, 0, 0]
    assert [n.leader_changes for n in nodes] == [1, 1, 1]
    net.tick(1, 5)  # heartbeats of the same leader in the same term change nothing
    net.deliver_all()
    assert [n.leader_changes for n in nodes] == [1, 1, 1]
    net.isolate(3)  # a pre-vote that cannot win starts no election
    net[3].campaign()
    net.process(3)
    net.deliver_all()
    assert net[3].elections_started == 0 and net[3].leader is None
    net.heal()
    net.tick(1, 2)
    net.deliver_all()
    assert net[3].leader == 1 and net[3].leader_changes == 1  # the same leadership again
    net[1].transfer_leadership(2)
    net.process(1)
    net.deliver_all()
    assert net[2].is_leader and net[2].term == 2
    assert [n.elections_started for n in nodes] == [1, 1, 0]
    assert [n.leader_changes for n in nodes] == [2, 2, 2]


def test_a_leader_reports_each_followers_lag_in_entries_by_broker_id() -> None:
    a, b, c = Member(1, 11), Member(2, 22), Member(3, 33)
    net = Net([a, b, c])  # broker members, as the node's groups have them
    leader = net.elect(a)
    assert follower_lag(leader) == {2: 0, 3: 0}
    net.isolate(c)
    for i in range(4):
        net.propose(a, b"x%d" % i)
    net.deliver_all()
    assert follower_lag(leader) == {2: 0, 3: 4}
    assert follower_lag(net[b]) == {}  # a follower reports nothing


def test_a_leader_counts_a_partition_under_replicated_while_a_replica_lacks_entries() -> None:
    """By the leader's own view of its followers' match indexes; a follower never counts."""
    a, b, c = Member(1, 11), Member(2, 22), Member(3, 33)
    net = Net([a, b, c])
    leader = net.elect(a)
    assert not under_replicated(leader)
    net.isolate(c)
    net.propose(a, b"x")
    net.deliver_all()
    assert leader.commit_index > leader.progress[c].match
    assert under_replicated(leader)
    assert not under_replicated(net[b]) and not under_replicated(net[c])
    net.heal()
    net.tick(a, 2)
    net.deliver_all()
    assert not under_replicated(leader)


def test_deleted_topics_lose_their_per_topic_series_at_the_next_collection() -> None:
    """Produced and fetched records per topic: a topic gone from the metadata has its children
    and series removed when the registry is next collected; a topic created again under the
    same name starts from 0."""
    topics = {"a", "b"}
    m = BrokerMetrics(topics=lambda: topics)
    m.records_produced("a", 3)
    m.records_produced("b", 4)
    m.records_fetched("b", 5)
    got = samples(m)
    assert got[("sluice_records_produced_total", (("topic", "b"),))] == 4
    assert got[("sluice_records_fetched_total", (("topic", "b"),))] == 5
    topics.discard("b")
    got = samples(m)
    assert got[("sluice_records_produced_total", (("topic", "a"),))] == 3
    assert not [k for k in got if ("topic", "b") in k[1]], got
    assert set(m._per_topic_produced) == {"a"} and not m._per_topic_fetched
    topics.add("b")
    m.records_produced("b", 1)
    assert samples(m)[("sluice_records_produced_total", (("topic", "b"),))] == 1
    kept = BrokerMetrics()  # no topics to check against: nothing is removed
    kept.records_produced("gone", 2)
    assert samples(kept)[("sluice_records_produced_total", (("topic", "gone"),))] == 2


def test_records_counters_say_what_they_count() -> None:
    """Produced: records of acknowledged batches, a retried duplicate counted again. Fetched:
    whole batches, records before the fetch offset and aborted transactional ones included."""
    m = BrokerMetrics()
    m.records_produced("a", 1)
    m.records_fetched("a", 1)
    docs = {f.name: f.documentation for f in text_string_to_metric_families(m.render())}
    assert "acknowledged" in docs["sluice_records_produced"]
    assert "duplicate counts again" in docs["sluice_records_produced"]
    fetched = docs["sluice_records_fetched"]
    assert "whole batches" in fetched and "before the fetch offset" in fetched
    assert "aborted transactional" in fetched


async def test_fetched_records_are_whole_batches_and_a_duplicate_produce_counts_again() -> None:
    """A fetch from offset 2 answered with the batch at 0 (3 records) and an aborted
    transactional batch counts all 3 + 2; a produce retried and answered as a duplicate
    (no error, same base offset) counts its records again."""
    aborted = encode_batch([Record(value=b"t%d" % i, timestamp=1) for i in range(2)],
                           producer_id=9, producer_epoch=0, base_sequence=0,
                           transactional=True)  # fmt: skip
    fetch = FetchRequest(topics=(FetchTopic(name="a", partitions=(
        FetchPartition(partition=0, offset=2),)),))  # fmt: skip
    fetched = FetchResponse(topics=(FetchTopicResult(name="a", partitions=(
        FetchPartitionResult(partition=0, batches=(
            FetchedBatch(base_offset=0, data=batch(3)),
            FetchedBatch(base_offset=3, data=aborted))),)),))  # fmt: skip
    produce = ProduceRequest(topics=(
        ProduceTopic(name="a", partitions=(ProducePartition(partition=0, batch=batch(4)),)),
    ))  # fmt: skip
    duplicate = ProduceResponse(topics=(ProduceTopicResult(name="a", partitions=(
        ProducePartitionResult(partition=0, error=ErrorCode.NONE, base_offset=0),)),))  # fmt: skip
    ops = [
        answered(ApiKey.FETCH, fetch, fetched, held=10),
        answered(ApiKey.PRODUCE, produce, duplicate, held=10),
        answered(ApiKey.PRODUCE, produce, duplicate, held=10),
    ]
    m = BrokerMetrics()
    _measure(m, ops, [b"f", b"p", b"p"])
    got = samples(m)
    assert got[("sluice_records_fetched_total", (("topic", "a"),))] == 3 + 2
    assert got[("sluice_records_produced_total", (("topic", "a"),))] == 4 + 4


def disk_files(root: Path) -> None:
    (root / "db").mkdir()
    (root / "db" / "000001.sst").write_bytes(b"s" * 3000)
    (root / "LOCK").write_bytes(b"l" * 17)
    (root / "link").symlink_to(root / "db" / "000001.sst")  # not counted twice


def disk_values(disk: DiskUsage) -> dict[str, float]:
    return {name: values[0][1] for _, name, _, values, _ in disk.samples()}


async def test_disk_usage_is_measured_in_a_worker_thread_and_a_scrape_only_reads_it(
    tmp_path: Path,
) -> None:
    disk_files(tmp_path)
    threads: list[threading.Thread] = []

    def statvfs(path: Path) -> os.statvfs_result:
        threads.append(threading.current_thread())
        return os.statvfs(path)

    def tree_bytes(path: Path) -> int:
        threads.append(threading.current_thread())
        return _tree_bytes(path)

    disk = DiskUsage(tmp_path, statvfs=statvfs, tree_bytes=tree_bytes)
    assert disk.every_s == SIZE_EVERY_S == 10
    assert disk.samples() == [] and threads == []  # not measured yet: the series are left out
    await disk.refresh()
    assert len(threads) == 2 and threading.main_thread() not in threads
    got = disk_values(disk)
    st = os.statvfs(tmp_path)
    assert got["sluice_store_disk_total_bytes"] == st.f_blocks * st.f_frsize
    assert 0 < got["sluice_store_disk_free_bytes"] <= got["sluice_store_disk_total_bytes"]
    assert got["sluice_store_size_bytes"] == 3017
    (tmp_path / "db" / "000002.sst").write_bytes(b"t" * 1000)
    for _ in range(3):
        assert disk_values(disk)["sluice_store_size_bytes"] == 3017  # the last measurement
    assert len(threads) == 2  # scrapes measure nothing
    await disk.refresh()
    assert disk_values(disk)["sluice_store_size_bytes"] == 4017


async def test_a_hung_file_system_never_stalls_a_scrape_and_failures_keep_the_last_values(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`run` measures every `every_s`; while statvfs hangs, scrapes answer at once with the
    last values; failures keep them too, the first of each kind logged once."""
    disk_files(tmp_path)
    mode = ["ok"]
    entered, release = threading.Event(), threading.Event()

    def statvfs(path: Path) -> os.statvfs_result:
        if mode[0] == "hang":
            entered.set()
            release.wait(10)
        if mode[0] == "fail":
            raise OSError(5, "Input/output error")
        return os.statvfs(path)

    def tree_bytes(path: Path) -> int:
        if mode[0] == "fail":
            raise PermissionError(13, "Permission denied")
        return _tree_bytes(path)

    disk = DiskUsage(tmp_path, every_s=0.01, statvfs=statvfs, tree_bytes=tree_bytes)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(disk.run)
        await wait_until_async(lambda: disk.refreshes >= 3, "three measurements", timeout=10)
        good = disk_values(disk)
        assert set(good) == {"sluice_store_disk_free_bytes", "sluice_store_disk_total_bytes",
                             "sluice_store_size_bytes"}  # fmt: skip
        mode[0] = "hang"
        await trio.to_thread.run_sync(entered.wait, 10)
        hung_at = disk.refreshes
        with trio.fail_after(1):
            assert disk_values(disk) == good  # answered at once, from the last measurement
        await trio.sleep(0.05)
        assert disk.refreshes == hung_at  # one measurement in flight, none stacked behind it
        with caplog.at_level(logging.WARNING, logger="sluice.metrics"):
            mode[0] = "fail"
            release.set()
            await wait_until_async(lambda: disk.refreshes >= hung_at + 3, "failed measurements",
                                   timeout=10)  # fmt: skip
            assert disk_values(disk)["sluice_store_size_bytes"] == good["sluice_store_size_bytes"]
            assert (
                disk_values(disk)["sluice_store_disk_total_bytes"]
                == (good["sluice_store_disk_total_bytes"])
            )
        nursery.cancel_scope.cancel()
    warned = [r.getMessage() for r in caplog.records if r.name == "sluice.metrics"]
    assert len(warned) == 2, warned  # statvfs and the walk, once each
    assert any("statvfs" in w and "Input/output error" in w for w in warned)
    assert any("walking" in w and "Permission denied" in w for w in warned)


def test_the_walk_skips_what_vanishes_and_fails_only_for_its_root(tmp_path: Path) -> None:
    disk_files(tmp_path)
    assert _tree_bytes(tmp_path) == 3017
    with pytest.raises(OSError):
        _tree_bytes(tmp_path / "missing")
