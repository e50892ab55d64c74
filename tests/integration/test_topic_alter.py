"""`sluice topic alter` as a user types it, against a real broker: more partitions (keyed
records land where the jump hash says, the old ones stay readable), a setting the broker then
enforces on a raw produce, a reset to the default, and the refusals (fewer partitions, an
unknown key, a setting not enforced, nothing to alter, an unknown topic) with their exit codes."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from functools import partial

import trio

from broker.wire.batch import Record, encode_batch
from broker.wire.errors import ErrorCode
from broker.wire.messages import ProducePartition, ProduceRequest, ProduceResponse, ProduceTopic
from broker.wire.partitioner import default_partition
from tests.integration.wire_client import RawClient
from tests.support.harness import BrokerProcess
from tests.support.sluice_cli import run_sluice


async def _raw_produce(b: BrokerProcess, topic: str, partition: int, size: int) -> ErrorCode:
    batch = encode_batch([Record(value=b"x" * size, timestamp=int(time.time() * 1000))])
    request = ProduceRequest(
        topics=(
            ProduceTopic(name=topic, partitions=(ProducePartition(partition=0, batch=batch),)),
        ),
        timeout_ms=5000,
    )
    client = await RawClient.connect("127.0.0.1", b.client_port)
    envelope = await client.call(request)
    body = envelope.body
    assert isinstance(body, ProduceResponse), envelope
    return body.topics[0].partitions[0].error


def test_topic_alter_grows_partitions_and_changes_enforced_settings(
    broker_factory: Callable[..., BrokerProcess],
) -> None:
    b = broker_factory()
    sluice = partial(run_sluice, bootstrap=b.bootstrap)
    b.start()
    b.wait_ready()
    assert sluice("topic", "create", "t", "--partitions", "2").returncode == 0
    keys = [b"k%d" % i for i in range(200)]
    lines = b"".join(k + b"\tbefore\n" for k in keys)
    assert sluice("produce", "t", "--key-separator", "\t", stdin=lines).returncode == 0

    r = sluice("topic", "alter", "t", "--partitions", "5", "--config", "max.message.bytes=2048")
    assert r.returncode == 0, r.stderr
    desc = json.loads(sluice("topic", "describe", "t", "--json").stdout)
    assert [p["partition"] for p in desc["partitions"]] == [0, 1, 2, 3, 4]
    assert all(p["leader"] is not None for p in desc["partitions"])
    assert desc["config"] == {"max.message.bytes": "2048"}

    # The broker, not only the client, enforces the new limit (a raw produce).
    assert trio.run(_raw_produce, b, "t", 0, 4000) is ErrorCode.MESSAGE_TOO_LARGE
    assert trio.run(_raw_produce, b, "t", 0, 1000) is ErrorCode.NONE
    assert sluice("topic", "alter", "t", "--delete-config", "max.message.bytes").returncode == 0
    assert trio.run(_raw_produce, b, "t", 0, 4000) is ErrorCode.NONE

    # Keyed records produced after the growth land where the jump hash says for 5.
    lines = b"".join(k + b"\tafter\n" for k in keys)
    assert sluice("produce", "t", "--key-separator", "\t", stdin=lines).returncode == 0
    r = sluice("consume", "t", "--from-beginning", "--max-messages", "402", "--format", "json")
    assert r.returncode == 0, r.stderr
    seen: dict[tuple[bytes, str], int] = {}
    for line in r.stdout.splitlines():
        rec = json.loads(line)
        if rec["key"] is not None:
            seen[(rec["key"].encode(), rec["value"])] = rec["partition"]
    for k in keys:
        assert seen[(k, "before")] == default_partition(k, 2), k
        assert seen[(k, "after")] == default_partition(k, 5), k
    moved = sum(1 for k in keys if default_partition(k, 2) != default_partition(k, 5))
    assert 0 < moved < len(keys)

    for args, code in (
        (("--partitions", "3"), 2),  # never fewer
        (("--config", "bogus=1"), 2),
        (("--config", "cleanup.policy=nonsense"), 2),
        ((), 2),
    ):
        r = sluice("topic", "alter", "t", *args)
        assert r.returncode == code, (args, r.returncode, r.stderr)
        assert r.stderr.strip(), args
    r = sluice("topic", "alter", "nope", "--partitions", "3", "--timeout", "3")
    assert r.returncode == 1 and b"UNKNOWN_TOPIC_OR_PARTITION" in r.stderr, r.stderr
