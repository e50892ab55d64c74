"""Admin.describe_cluster against scripted fake brokers on local sockets: typed, sorted
results; the controller asked first, any broker when there is no controller or it is down;
retriable errors retried until the timeout."""

from __future__ import annotations

import pytest
import trio

from broker.wire.errors import ErrorCode
from broker.wire.messages import (
    ClusterBroker,
    ClusterPartition,
    DescribeClusterRequest,
    DescribeClusterResponse,
    MetadataRequest,
)
from broker.wire.protocol import RequestHeader
from consumers import Admin, BrokerDescription, ClusterDescription, PartitionStatus
from consumers.errors import BackpressureError, InvalidRequestError
from tests.support.fake_broker import Send, closed_port, local_metadata, serve

ANSWER = DescribeClusterResponse(
    cluster_id="c1",
    controller=0,
    brokers=(
        ClusterBroker(id=2, host="::1", port=9112, rack="r2", alive=False),
        ClusterBroker(id=0, host="127.0.0.1", port=9092, rack=None, alive=True),
    ),
    partitions=(
        ClusterPartition(
            topic="t",
            partition=1,
            leader=None,
            leader_term=-1,
            replicas=(2, 0),
            caught_up=(),
            commit_lag=-1,
        ),
        ClusterPartition(
            topic="t",
            partition=0,
            leader=0,
            leader_term=4,
            replicas=(0, 2),
            caught_up=(0,),
            commit_lag=17,
        ),
    ),
)


class FakeBroker:
    """Answers METADATA with a fixed controller and broker list, and DESCRIBE_CLUSTER with
    ANSWER (after `errors` request-level errors); records what it was asked."""

    def __init__(self, node_id: int, *, controller: int | None, errors: int = 0) -> None:
        self.node_id = node_id
        self.controller = controller
        self.errors = errors
        self.ports: dict[int, int] = {}
        """The brokers its metadata lists: node id -> port."""
        self.asked: list[str] = []

    async def handle(self, header: RequestHeader, request: object, send: Send) -> None:
        self.asked.append(type(request).__name__)
        if isinstance(request, MetadataRequest):
            body = local_metadata(self.ports, controller=self.controller, cluster_id="c1")
            await send(header.correlation_id, ErrorCode.NONE, None, body)
        elif isinstance(request, DescribeClusterRequest):
            if self.errors:
                self.errors -= 1
                await send(header.correlation_id, ErrorCode.BACKPRESSURE, "busy", None)
            else:
                await send(header.correlation_id, ErrorCode.NONE, None, ANSWER)
        else:
            await send(header.correlation_id, ErrorCode.INVALID_REQUEST, "unexpected", None)


async def start(nursery: trio.Nursery, fake: FakeBroker, others: dict[int, int]) -> int:
    """Serve `fake`; its metadata lists itself and `others` (node id -> port)."""
    port = await serve(nursery, fake.handle)
    fake.ports = {fake.node_id: port, **others}
    return port


async def test_describe_cluster_asks_the_controller_and_returns_sorted_typed_results(
    nursery: trio.Nursery,
) -> None:
    fake = FakeBroker(0, controller=0)
    port = await start(nursery, fake, {})
    async with Admin(f"127.0.0.1:{port}", timeout_s=5) as admin:
        described = await admin.describe_cluster()
    assert described == ClusterDescription(
        cluster_id="c1",
        controller=0,
        brokers=(
            BrokerDescription(0, "127.0.0.1", 9092, None, True),
            BrokerDescription(2, "::1", 9112, "r2", False),
        ),
        partitions=(
            PartitionStatus("t", 0, 0, 4, (0, 2), (0,), 17),
            PartitionStatus("t", 1, None, -1, (2, 0), (), -1),
        ),
    )
    assert [b.address for b in described.brokers] == ["127.0.0.1:9092", "[::1]:9112"]
    assert fake.asked == ["MetadataRequest", "DescribeClusterRequest"]


async def test_describe_cluster_without_a_controller_asks_any_broker(
    nursery: trio.Nursery,
) -> None:
    fake = FakeBroker(1, controller=None)
    port = await start(nursery, fake, {})
    async with Admin(f"127.0.0.1:{port}", timeout_s=5) as admin:
        described = await admin.describe_cluster()
    assert described.cluster_id == "c1" and len(described.partitions) == 2
    assert fake.asked[-1] == "DescribeClusterRequest"


async def test_describe_cluster_falls_back_when_the_controller_is_down(
    nursery: trio.Nursery,
) -> None:
    fake = FakeBroker(1, controller=0)
    port = await start(nursery, fake, {0: await closed_port()})
    async with Admin(f"127.0.0.1:{port}", timeout_s=5) as admin:
        described = await admin.describe_cluster()
    assert [b.id for b in described.brokers] == [0, 2]
    assert fake.asked.count("DescribeClusterRequest") == 1


async def test_describe_cluster_retries_retriable_errors_until_the_timeout(
    nursery: trio.Nursery,
) -> None:
    fake = FakeBroker(0, controller=0, errors=2)
    port = await start(nursery, fake, {})
    async with Admin(f"127.0.0.1:{port}", timeout_s=5) as admin:
        described = await admin.describe_cluster()
    assert described.controller == 0
    assert fake.asked.count("DescribeClusterRequest") == 3
    fake.errors = 1000
    asked = fake.asked.count("DescribeClusterRequest")
    # 2 s, not less: on a loaded machine the first answer alone may take a good part of a
    # shorter timeout, and what is checked is that retriable errors are retried until it.
    async with Admin(f"127.0.0.1:{port}", timeout_s=2) as admin:
        start_time = trio.current_time()
        with pytest.raises(BackpressureError):
            await admin.describe_cluster()
        elapsed = trio.current_time() - start_time
    assert 1.0 <= elapsed < 6
    assert fake.asked.count("DescribeClusterRequest") - asked >= 3


async def test_describe_cluster_rejects_a_malformed_answer(nursery: trio.Nursery) -> None:
    async def handle(header: RequestHeader, request: object, send: Send) -> None:
        if isinstance(request, MetadataRequest):
            body = local_metadata({0: port}, cluster_id="c1")
            await send(header.correlation_id, ErrorCode.NONE, None, body)
        else:  # a broker listed twice: the client refuses the answer
            twice = DescribeClusterResponse(
                cluster_id="c1", controller=0, brokers=ANSWER.brokers * 2, partitions=()
            )
            await send(header.correlation_id, ErrorCode.NONE, None, twice)

    port = await serve(nursery, handle)
    async with Admin(f"127.0.0.1:{port}", timeout_s=2) as admin:
        with pytest.raises(InvalidRequestError, match="duplicate broker"):
            await admin.describe_cluster()
