"""Peer requests between real broker processes over TCP (through the cluster's proxies):
`GET /peers/ping?broker=N` makes a broker PING broker N through its driver, peer link and the
peer's responder. Answers name the right broker and incarnation (the local path included); a
request to a broker that does not exist or is cut off times out; a request held by a stalled
link is resent, and when the link heals it completes once, the duplicates answered from the
responder's cache and the extra answers ignored. A newer peer's request of a kind nobody
serves, and its request-shaped frame of an unknown kind, are answered UNSUPPORTED_VERSION on a
link that stays up."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import trio

from broker.core.peer_codec import (
    HELLO,
    HELLO_OK,
    PEER_LIMITS,
    PEER_PROTOCOL_VERSION,
    PEER_RESPONSE,
    Hello,
    PeerRequest,
    PeerResponse,
    decode_frame,
    encode_hello,
    encode_peer_request,
)
from broker.wire import cbor
from broker.wire.errors import ErrorCode
from broker.wire.frames import FrameDecoder, encode_frame
from broker.wire.messages import InitProducerIdRequest, InitProducerIdResponse
from tests.integration.cluster import Cluster
from tests.integration.wire_client import RawClient
from tests.support.harness import BrokerProcess
from tests.support.wait import wait_until


def ping(b: BrokerProcess, dst: int) -> dict[str, Any]:
    url = f"http://127.0.0.1:{b.http_port}/peers/ping?broker={dst}"
    with urllib.request.urlopen(url, timeout=30) as r:
        out: dict[str, Any] = json.loads(r.read())
        return out


def test_brokers_ping_each_other_through_their_peer_links(
    cluster_factory: Callable[..., Cluster],
) -> None:
    # Without quiescence: a link that stays open while stalled (below) is the premise; with
    # it, the peer keepalive closes a link silent for 0.6 s (test_peer_keepalive.py).
    c = cluster_factory(2, quiesce=False)
    b0, b1 = c.brokers
    me0, me1 = ping(b0, 0), ping(b1, 1)  # the local path: each broker's own identity
    assert me0["error"] == "NONE" and me0["answer"]["node_id"] == 0
    assert me1["error"] == "NONE" and me1["answer"]["node_id"] == 1
    assert me0["answer"]["echo"] == "diagnostics" and "ping" in me0["answer"]["kinds"]
    wait_until(lambda: ping(b0, 1)["error"] == "NONE", "broker 0 to reach broker 1")
    there = ping(b0, 1)["answer"]
    assert (there["node_id"], there["incarnation"]) == (1, me1["answer"]["incarnation"])
    back = ping(b1, 0)
    assert back["error"] == "NONE" and back["answer"]["incarnation"] == me0["answer"]["incarnation"]
    nobody = ping(b0, 7)
    assert nobody["error"] == "REQUEST_TIMED_OUT" and nobody["answer"] is None

    # A stalled link holds the request and its resends; once healed they all arrive: one
    # result, the responder's duplicates answered from its cache, the extra answers ignored.
    before0, before1 = b0.stats()["peer_requests"], b1.stats()["peer_requests"]
    c.stall(0, 1)
    result: dict[str, Any] = {}
    asking = threading.Thread(target=lambda: result.update(ping(b0, 1)))
    asking.start()
    time.sleep(0.6)
    c.heal()
    asking.join(30)
    assert result["error"] == "NONE" and result["answer"]["node_id"] == 1, result
    assert result["ms"] >= 500
    after0, after1 = b0.stats()["peer_requests"], b1.stats()["peer_requests"]
    assert after0["resent"] > before0["resent"]
    wait_until(
        lambda: b1.stats()["peer_requests"]["duplicates"] > before1["duplicates"],
        "the resends to reach broker 1",
    )
    wait_until(
        lambda: b0.stats()["peer_requests"]["stray_responses"] > before0["stray_responses"],
        "the extra answers to come back",
    )
    assert after1["served"] >= before1["served"] + 1

    c.cut_link(0, 1)
    assert ping(b0, 1)["error"] == "REQUEST_TIMED_OUT"
    c.heal()
    wait_until(lambda: ping(b0, 1)["error"] == "NONE", "the link to come back")
    assert c.unexpected_exits() == []


class FakePeer:
    """A newer broker (protocol version PEER_PROTOCOL_VERSION + 1) linked to a real one."""

    def __init__(self, port: int, node_id: int = 1000) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.decoder = FrameDecoder(PEER_LIMITS)
        hello = Hello(None, node_id, 1, "127.0.0.1:1", False, PEER_PROTOCOL_VERSION + 1)
        self.send(encode_hello(hello, HELLO))
        kind, body = self.receive()
        assert kind == HELLO_OK and isinstance(body, Hello)
        self.broker = body

    def send(self, payload: bytes) -> None:
        self.sock.sendall(encode_frame(payload))

    def receive(self) -> tuple[int, object]:
        while (frame := self.decoder.next_frame()) is None:
            data = self.sock.recv(1 << 16)
            assert data, "the broker closed the link"
            self.decoder.receive_data(data)
        return decode_frame(frame)

    def answer(self) -> PeerResponse:
        """The next PEER_RESPONSE (Raft and heartbeat frames skipped)."""
        while True:
            kind, body = self.receive()
            if kind == PEER_RESPONSE:
                assert isinstance(body, PeerResponse)
                return body


def test_unknown_kinds_from_a_newer_peer_are_answered_and_the_link_stays(
    broker_factory: Callable[..., BrokerProcess],
) -> None:
    b = broker_factory()
    b.start()
    b.wait_ready()
    peer = FakePeer(b.peer_port)
    peer.send(encode_peer_request(PeerRequest(5, 1, "no-such-kind", {"x": 1})))
    first = peer.answer()
    assert (first.correlation_id, first.error) == (1, ErrorCode.UNSUPPORTED_VERSION)
    assert first.message is not None and "no-such-kind" in first.message
    peer.send(cbor.encode([9, {"one-way": True}]))  # unknown, not request-shaped: skipped
    peer.send(cbor.encode([70, [5, 2, "a later exchange"]]))  # unknown, request-shaped
    second = peer.answer()
    assert (second.session, second.correlation_id) == (5, 2)
    assert second.error is ErrorCode.UNSUPPORTED_VERSION
    peer.send(encode_peer_request(PeerRequest(5, 3, "ping", b"still here")))
    third = peer.answer()
    assert third.correlation_id == 3 and third.error is ErrorCode.NONE
    assert isinstance(third.body, dict)
    assert (third.body["node_id"], third.body["incarnation"]) == (0, peer.broker.incarnation)
    assert third.body["echo"] == b"still here"
    stats = b.stats()["peers"]
    assert stats["unknown_frames"] == 2 and stats["unknown_answered"] == 1
    assert stats["bad_frames"] == 0
    peer.sock.close()


def test_every_broker_answers_init_producer_id_with_ids_never_handed_out_twice(
    cluster_factory: Callable[..., Cluster],
) -> None:
    """InitProducerId to each broker of a real cluster: the controller serves it from its own
    blocks, the others from blocks they ask the controller for over a peer request; every id
    is new. Then the controller dies: the others still answer, from a block a new controller
    allocates, and no id repeats."""
    c = cluster_factory(3)
    got: list[tuple[int, int]] = []

    async def ask(broker: int, times: int) -> None:
        client = await RawClient.connect("127.0.0.1", c.brokers[broker].client_port)
        async with client.stream:
            for _ in range(times):
                env = await client.call(InitProducerIdRequest())
                assert env.error == ErrorCode.NONE, env
                assert isinstance(env.body, InitProducerIdResponse)
                got.append((broker, env.body.producer_id))

    served: list[int] = []

    async def scenario() -> None:
        controller = await c.controller()
        for b in range(3):
            await ask(b, 5)
        served.append(c.brokers[controller].stats()["peer_requests"]["served"])
        c.kill(controller)
        for b in sorted(set(range(3)) - {controller}):
            with trio.fail_after(30):
                await ask(b, 5)

    trio.run(scenario)
    ids = [pid for _, pid in got]
    assert len(ids) == 25 and len(set(ids)) == 25, got
    assert {b for b, _ in got} == {0, 1, 2}
    assert served[0] >= 2  # the controller served the two other brokers' requests for a block
