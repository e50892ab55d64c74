"""The broker over real TCP (embedded in the test's Trio run), spoken to in raw frames:
the durability audit, bad input, and the request paths end to end."""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from broker.app import Broker, embedded
from broker.config import BrokerConfig, HostPort
from broker.runtime.audit import DurabilityViolation
from broker.runtime.driver import Driver
from broker.runtime.store import RocksStore, StoreError
from broker.wire import cbor
from broker.wire.batch import Record, encode_batch
from broker.wire.errors import ErrorCode
from broker.wire.frames import encode_frame
from broker.wire.messages import (
    CreateTopicsRequest,
    FetchPartition,
    FetchRequest,
    FetchTopic,
    IsolationLevel,
    MetadataRequest,
    NewTopic,
    ProducePartition,
    ProduceRequest,
    ProduceTopic,
)
from tests.integration.wire_client import RawClient
from tests.support.wait import wait_until_async

LOCAL = HostPort("127.0.0.1", 0)


def config(tmp_path: Path, **kw: object) -> BrokerConfig:
    return BrokerConfig(
        data_dir=tmp_path / "data",
        listen=LOCAL,
        peer_listen=LOCAL,
        http_listen=LOCAL,
        durability_audit=True,
        **kw,  # type: ignore[arg-type]
    )


@asynccontextmanager
async def client_of(b: Broker) -> AsyncIterator[RawClient]:
    c = await RawClient.connect(b.addresses.clients.host, b.addresses.clients.port)
    try:
        yield c
    finally:
        await c.aclose()


async def create_topic(c: RawClient, name: str, partitions: int = 1) -> None:
    r = await c.call(
        CreateTopicsRequest(
            topics=(NewTopic(name=name, partitions=partitions, replication_factor=1, config={}),),
            timeout_ms=10_000,
        )
    )
    assert r.body is not None
    assert r.body.topics[0].error == ErrorCode.NONE  # type: ignore[union-attr]


def produce(topic: str, partition: int, batch: bytes) -> ProduceRequest:
    return ProduceRequest(
        topics=(
            ProduceTopic(
                name=topic, partitions=(ProducePartition(partition=partition, batch=batch),)
            ),
        ),
        timeout_ms=10_000,
        transactional_id=None,
        acks=-1,
    )


async def wait_ready(b: Broker) -> None:
    await wait_until_async(b.node.is_ready, "the node to be ready", timeout=10)


async def test_produce_then_fetch_with_audit_on(tmp_path: Path) -> None:
    async with embedded(config(tmp_path)) as b:
        await wait_ready(b)
        async with client_of(b) as c:
            await create_topic(c, "t")
            offsets = []
            for i in range(20):
                batch = encode_batch([Record(value=b"v%d" % i, timestamp=i)])
                r = await c.call(produce("t", 0, batch))
                part = r.body.topics[0].partitions[0]  # type: ignore[union-attr]
                assert part.error == ErrorCode.NONE
                offsets.append(part.base_offset)
            assert offsets == list(range(20))
            f = await c.call(
                FetchRequest(
                    topics=(
                        FetchTopic(
                            name="t",
                            partitions=(FetchPartition(partition=0, offset=5, max_bytes=1 << 20),),
                        ),
                    ),
                    max_wait_ms=0,
                    min_bytes=1,
                    max_bytes=1 << 20,
                    isolation=IsolationLevel.READ_COMMITTED,
                )
            )
            fp = f.body.topics[0].partitions[0]  # type: ignore[union-attr]
            assert fp.high_watermark == 20
            assert [x.base_offset for x in fp.batches] == list(range(5, 20))
        audit = b.driver.audit
        assert audit is not None and audit.checks >= 20


async def test_audit_fails_an_acknowledgement_ahead_of_its_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The planted bug (inline mode): the store writes rounds without syncing them (a lost
    fsync), so the acknowledgements that follow would run ahead of durability. The audit
    must stop the broker instead of letting them out."""
    write_plan = RocksStore._write_plan
    planted = False

    def maybe_unsynced(self: RocksStore, plan: object, *, sync: bool) -> None:
        write_plan(self, plan, sync=sync and not planted)  # type: ignore[arg-type]

    monkeypatch.setattr(RocksStore, "_write_plan", maybe_unsynced)

    def plant() -> None:
        nonlocal planted
        planted = True

    await _assert_planted_fault_stops_the_broker(tmp_path, "inline", plant)


async def test_audit_fails_a_pipelined_round_ended_before_its_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The planted bug (pipelined mode): the driver ends a round (acknowledges, applies,
    answers) as soon as it is written, without waiting for the WAL sync that covers it."""
    durable_ahead = Driver._durable_ahead
    planted = False

    def early(self: Driver) -> bool:
        return bool(self._in_flight) if planted else durable_ahead(self)

    monkeypatch.setattr(Driver, "_durable_ahead", early)

    def plant() -> None:
        nonlocal planted
        planted = True

    await _assert_planted_fault_stops_the_broker(tmp_path, "pipelined", plant)


async def test_a_failed_wal_sync_stops_the_broker_before_any_acknowledgement(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fail-stop: the sync thread's flush fails (a disk error); the store is failed and the
    driver stops the broker, and the record whose round the sync covered is never answered."""
    sync_wal = RocksStore.sync_wal
    failing = False

    def maybe_failing(self: RocksStore) -> None:
        if failing:
            self._failed = OSError("EIO")
            raise StoreError("flush_wal failed; the store is now failed: EIO")
        sync_wal(self)

    def plant() -> None:
        nonlocal failing
        failing = True

    monkeypatch.setattr(RocksStore, "sync_wal", maybe_failing)
    await _assert_planted_fault_stops_the_broker(tmp_path, "pipelined", plant, StoreError)


async def test_a_pass_run_by_a_connections_reader_that_raises_stops_the_broker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection's reader runs the driver's pass itself once it has decoded a request
    (`Driver._pass_now`). When that pass raises (here the round's write: a disk error), the
    driver's task raises it, the broker stops, and the request is never answered."""
    write = RocksStore.write
    failing = False
    tasks: list[str] = []

    def maybe_failing(self: RocksStore, rnd: object) -> object:
        if failing:
            tasks.append(trio.lowlevel.current_task().name)
            self._failed = OSError("EIO")
            raise StoreError("write failed; the store is now failed: EIO")
        return write(self, rnd)  # type: ignore[arg-type]

    def plant() -> None:
        nonlocal failing
        failing = True

    monkeypatch.setattr(RocksStore, "write", maybe_failing)
    await _assert_planted_fault_stops_the_broker(tmp_path, "pipelined", plant, StoreError)
    # the connection's task (served by trio.serve_listeners), not the driver's
    assert tasks and tasks[0].endswith("_run_handler"), f"the failing pass ran in {tasks}"


async def _assert_planted_fault_stops_the_broker(
    tmp_path: Path,
    sync_mode: str,
    plant: Callable[[], None],
    raised: type[Exception] = DurabilityViolation,
) -> None:
    """A broker with a topic; `plant()`, then one produce: the broker stops with `raised`
    and the produce is never acknowledged."""
    acked = False
    with pytest.RaisesGroup(raised, flatten_subgroups=True, allow_unwrapped=True):
        async with embedded(config(tmp_path, sync_mode=sync_mode)) as b:
            with trio.fail_after(10):
                await wait_ready(b)
                async with client_of(b) as c:
                    await create_topic(c, "t")
                    plant()
                    await c.call(produce("t", 0, encode_batch([Record(value=b"x", timestamp=0)])))
                    acked = True
                    await trio.sleep_forever()
    assert not acked, "the produce was acknowledged although its write was not yet durable"


async def test_fetch_long_polls_until_data_arrives(tmp_path: Path) -> None:
    async with embedded(config(tmp_path)) as b:
        await wait_ready(b)
        async with client_of(b) as c, client_of(b) as p:
            await create_topic(c, "t")
            fetch = FetchRequest(
                topics=(
                    FetchTopic(
                        name="t",
                        partitions=(FetchPartition(partition=0, offset=0, max_bytes=1 << 20),),
                    ),
                ),
                max_wait_ms=5000,
                min_bytes=1,
                max_bytes=1 << 20,
                isolation=IsolationLevel.READ_UNCOMMITTED,
            )
            got: list[int] = []

            async def fetcher() -> None:
                r = await c.call(fetch)
                got.extend(x.base_offset for x in r.body.topics[0].partitions[0].batches)  # type: ignore[union-attr]

            async with trio.open_nursery() as n:
                n.start_soon(fetcher)
                await trio.sleep(0.3)
                assert got == []  # still waiting: nothing to read yet
                await p.call(produce("t", 0, encode_batch([Record(value=b"x", timestamp=0)])))
            assert got == [0]


async def test_bad_frames_get_error_answers_and_never_crash_the_broker(tmp_path: Path) -> None:
    async with embedded(config(tmp_path)) as b:
        await wait_ready(b)
        # A well-framed request whose body is wrong: answered with INVALID_REQUEST.
        async with client_of(b) as c:
            await c.send_raw(encode_frame(cbor.encode([1, 0, 7, "x", {"topics": 5}])))
            frame = await c.next_frame()
            assert frame is not None
            corr, err, msg, body = cbor.decode(frame)  # type: ignore[misc]
            assert (corr, err, body) == (7, ErrorCode.INVALID_REQUEST, None) and "topics" in msg
            # An unknown API key: answered too, and the connection keeps working.
            await c.send_raw(encode_frame(cbor.encode([99, 0, 8, None, {}])))
            frame = await c.next_frame()
            assert frame is not None and cbor.decode(frame)[0] == 8  # type: ignore[index]
            r = await c.call(MetadataRequest(topics=None))
            assert r.error == ErrorCode.NONE
        # A declared length beyond the limit: answered and closed, before any allocation.
        async with client_of(b) as c:
            await c.send_raw(struct.pack(">I", 1 << 31))
            frame = await c.next_frame()
            assert frame is not None and cbor.decode(frame)[1] == ErrorCode.FRAME_TOO_LARGE  # type: ignore[index]
            assert await c.next_frame() is None
        # Garbage that is not CBOR and carries no correlation id: the connection is closed.
        async with client_of(b) as c:
            await c.send_raw(encode_frame(b"\xff\xfe\xfd"))
            assert await c.next_frame() is None
        # A corrupted batch: per-partition CORRUPT_MESSAGE, nothing stored.
        async with client_of(b) as c:
            await create_topic(c, "t")
            batch = bytearray(encode_batch([Record(value=b"x", timestamp=0)]))
            batch[-1] ^= 0xFF
            r = await c.call(produce("t", 0, bytes(batch)))
            assert r.body.topics[0].partitions[0].error == ErrorCode.CORRUPT_MESSAGE  # type: ignore[union-attr]
            r = await c.call(produce("nope", 0, encode_batch([Record(value=b"x", timestamp=0)])))
            err = r.body.topics[0].partitions[0].error  # type: ignore[union-attr]
            assert err == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        assert b.node.is_ready()
