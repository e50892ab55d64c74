"""PeerNetwork on real loopback TCP for tests: a handler that records what the network hands
it, a network for one broker, and a listener for it."""

from __future__ import annotations

import trio

from broker.core.peer_codec import (
    BrokerHeartbeat,
    HeartbeatAck,
    Hello,
    PeerRequest,
    PeerResponse,
    hello_features,
)
from broker.core.raft import Message
from broker.runtime.peers import PeerNetwork


class Handler:
    """Records hellos, Raft messages, peer requests and responses, and lost links."""

    def __init__(self) -> None:
        self.hellos: list[Hello] = []
        self.lost: list[int] = []
        self.raft: list[tuple[int, Message]] = []
        self.requests: list[tuple[int, PeerRequest]] = []
        self.responses: list[tuple[int, PeerResponse]] = []

    def on_hello(self, hello: Hello) -> None:
        self.hellos.append(hello)

    def on_raft(self, batch: list[tuple[int, Message]]) -> None:
        self.raft.extend(batch)

    def on_heartbeat(self, peer: int, hb: BrokerHeartbeat) -> None:
        pass

    def on_heartbeat_ack(self, peer: int, ack: HeartbeatAck) -> None:
        pass

    def on_peer_request(self, peer: int, request: PeerRequest) -> None:
        self.requests.append((peer, request))

    def on_peer_response(self, peer: int, response: PeerResponse) -> None:
        self.responses.append((peer, response))

    def on_link_lost(self, peer: int) -> None:
        self.lost.append(peer)


def network(
    node_id: int, addresses: dict[int, str], *, quiesce: bool = False
) -> tuple[PeerNetwork, Handler]:
    """Broker `node_id`'s network (its hello lists `quiesce` when asked) and its handler."""
    handler = Handler()
    hello = Hello("c1", node_id, 1, f"127.0.0.1:{node_id}", True, features=hello_features(quiesce))
    return PeerNetwork(node_id, lambda: hello, handler, lambda: addresses), handler


async def listen(nursery: trio.Nursery, net: PeerNetwork) -> int:
    """Serve `net` on a free loopback port; the port."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    nursery.start_soon(net.serve, listeners)
    port: int = listeners[0].socket.getsockname()[1]
    return port
