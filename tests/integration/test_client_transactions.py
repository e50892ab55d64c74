"""Transactions through the real client and an embedded broker: records over several
partitions and consumer offsets committed at once; an abort (an exception in the block)
leaving nothing for read_committed readers; a zombie fenced by a newer producer of the same
transactional id; a transaction past its timeout aborted and its producer fenced; misuse
refused; the blocking facade the same."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

import pytest
import trio

from broker.app import Broker, embedded
from broker.config import BrokerConfig
from consumers import Admin, Consumer, Producer, blocking
from consumers.errors import (
    InvalidTransactionTimeoutError,
    InvalidTxnStateError,
    MessageTooLargeError,
    TransactionalProducerFencedError,
    TransactionTimedOutError,
)
from tests.support.embedded import embedded_config
from tests.support.reads import read_to_end
from tests.support.wait import poll_records, poll_until_async

Isolation = Literal["read_committed", "read_uncommitted"]


def config(data_dir: Path) -> BrokerConfig:
    return embedded_config(data_dir, offsets_topic_partitions=2)


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[Broker]:
    async with embedded(config(tmp_path)) as b:
        yield b


def address(b: Broker) -> str:
    return str(b.addresses.clients)


async def read_all(addr: str, topic: str, partitions: int, isolation: Isolation) -> list[bytes]:
    return sorted(await read_to_end(addr, topic, partitions, isolation, timeout=10))


async def test_records_over_partitions_commit_together_and_aborts_stay_invisible(
    broker: Broker,
) -> None:
    addr = address(broker)
    async with Admin(addr) as admin:
        await admin.create_topic("t", partitions=3)
    async with Producer(addr, transactional_id="tx-a") as p:
        async with p.transaction():
            for i in range(30):
                await p.send("t", b"c%02d" % i, partition=i % 3)
        with pytest.raises(ValueError, match="boom"):
            async with p.transaction():
                for i in range(9):
                    await p.send("t", b"a%02d" % i, partition=i % 3)
                await p.flush()  # written (read_uncommitted sees them), then aborted
                raise ValueError("boom")
        async with p.transaction():
            await p.send("t", b"later", partition=1)
    committed = await read_all(addr, "t", 3, "read_committed")
    assert committed == sorted([b"c%02d" % i for i in range(30)] + [b"later"])
    everything = await read_all(addr, "t", 3, "read_uncommitted")
    assert everything == sorted(committed + [b"a%02d" % i for i in range(9)])


async def test_offsets_sent_in_a_transaction_commit_with_it(broker: Broker) -> None:
    addr = address(broker)
    async with Admin(addr) as admin:
        await admin.create_topic("in", partitions=2)
        await admin.create_topic("out", partitions=2)
    async with Producer(addr) as plain:
        for i in range(10):
            await plain.send("in", b"%d" % i, partition=i % 2)
    async with (
        Consumer(addr, group_id="g", enable_auto_commit=False) as c,
        Producer(addr, transactional_id="tx-pipe") as p,
    ):
        c.subscribe(["in"])
        records = await poll_records(c, 10, timeout=20)
        with pytest.raises(RuntimeError):
            async with p.transaction():
                for r in records:
                    await p.send("out", r.value, partition=r.partition)
                await p.send_offsets_to_transaction({("in", 0): 3}, c.group_metadata())
                raise RuntimeError("the transform failed")
        assert await c.committed([("in", 0), ("in", 1)]) == {("in", 0): None, ("in", 1): None}
        async with p.transaction():
            for r in records:
                await p.send("out", r.value, partition=r.partition)
            ends = {("in", r.partition): r.offset + 1 for r in records}
            await p.send_offsets_to_transaction(ends, c.group_metadata())
        assert await c.committed([("in", 0), ("in", 1)]) == {("in", 0): 5, ("in", 1): 5}
    assert await read_all(addr, "out", 2, "read_committed") == sorted(b"%d" % i for i in range(10))


async def test_a_newer_producer_fences_the_zombie(broker: Broker) -> None:
    addr = address(broker)
    async with Admin(addr) as admin:
        await admin.create_topic("z", partitions=1)
    async with Producer(addr, transactional_id="tx-z") as zombie:
        await zombie.begin_transaction()
        await zombie.send("z", b"zombie")
        await zombie.flush()
        async with Producer(addr, transactional_id="tx-z") as fresh:  # fences and aborts it
            with pytest.raises(TransactionalProducerFencedError):
                await zombie.commit_transaction()
            with pytest.raises(TransactionalProducerFencedError):
                await zombie.send("z", b"late")
            async with fresh.transaction():
                await fresh.send("z", b"fresh")
    assert await read_all(addr, "z", 1, "read_committed") == [b"fresh"]


async def test_a_transaction_past_its_timeout_is_aborted_and_fences_its_producer(
    broker: Broker,
) -> None:
    addr = address(broker)
    async with Admin(addr) as admin:
        await admin.create_topic("slow", partitions=1)
    async with Producer(addr, transactional_id="tx-slow", transaction_timeout_ms=300) as p:
        await p.begin_transaction()
        await p.send("slow", b"too late")
        await p.flush()
        async with Admin(addr) as admin:
            await poll_until_async(
                lambda: admin.list_transactions(),
                lambda open_: not open_,
                "the coordinator aborting the transaction",
                timeout=10,
            )
        with pytest.raises(TransactionTimedOutError):
            await p.commit_transaction()
        with pytest.raises(TransactionTimedOutError):
            await p.begin_transaction()
    assert await read_all(addr, "slow", 1, "read_committed") == []


async def test_misuse_is_refused(broker: Broker) -> None:
    addr = address(broker)
    async with Admin(addr) as admin:
        await admin.create_topic("m", partitions=1)
    async with Producer(addr, transactional_id="tx-m") as p:
        with pytest.raises(InvalidTxnStateError, match="inside"):
            await p.send("m", b"outside")
        with pytest.raises(InvalidTxnStateError):
            await p.commit_transaction()
        await p.begin_transaction()
        with pytest.raises(InvalidTxnStateError, match="already open"):
            await p.begin_transaction()
        await p.abort_transaction()
        async with p.transaction():
            await p.send("m", b"ok")
    assert await read_all(addr, "m", 1, "read_committed") == [b"ok"]


def test_the_blocking_facade_commits_and_aborts(tmp_path: Path) -> None:
    async def main() -> None:
        async with embedded(config(tmp_path)) as b:
            addr = address(b)
            async with Admin(addr) as admin:
                await admin.create_topic("b", partitions=2)
            await trio.to_thread.run_sync(use_blocking, addr)
            assert await read_all(addr, "b", 2, "read_committed") == [b"kept-0", b"kept-1"]

    def use_blocking(addr: str) -> None:
        with blocking.Producer(addr, transactional_id="tx-b") as p:
            with p.transaction():
                p.send("b", b"kept-0", partition=0)
                p.send("b", b"kept-1", partition=1)
            with pytest.raises(KeyError), p.transaction():
                p.send("b", b"dropped", partition=0)
                raise KeyError("x")
            with pytest.raises(MessageTooLargeError), p.transaction():
                p.send("b", b"x" * 2_000_000, partition=0)  # over max.message.bytes

    trio.run(main)


async def test_a_producer_whose_identity_is_refused_for_good_raises_on_entry(
    broker: Broker,
) -> None:
    """INVALID_TRANSACTION_TIMEOUT (a timeout above the broker's maximum) is not retriable:
    entering the producer raises it, and its sender and metadata tasks are stopped (they
    once kept the exit waiting forever)."""
    with trio.fail_after(20):
        with pytest.raises(InvalidTransactionTimeoutError):
            async with Producer(
                address(broker), transactional_id="too-long", transaction_timeout_ms=900_001
            ):
                pytest.fail("entered with a refused identity")
