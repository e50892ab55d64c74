"""PeerNetwork keepalives (peers whose hellos both list `quiesce`): an idle link carries
keepalives, a silent peer's link closes after KEEPALIVE_SILENT_S, and a peer without the
feature (an older broker) never gets a keepalive nor a silence bound."""

from __future__ import annotations

import trio

from broker.core.peer_codec import (
    HELLO_OK,
    KEEPALIVE,
    PEER_FEATURES,
    RAFT,
    Hello,
    decode_frame,
    encode_hello,
    hello_features,
)
from broker.runtime import peers
from broker.runtime.peers import KEEPALIVE_SILENT_S, PeerNetwork
from broker.wire.frames import FrameDecoder, encode_frame
from tests.support.peer_links import Handler, listen
from tests.support.peer_links import network as _network
from tests.support.wait import wait_until_async


async def _fake_peer(
    port: int, features: tuple[str, ...]
) -> tuple[trio.SocketStream, FrameDecoder]:
    """A fake broker 5 listing `features`, linked to the broker on `port`; it then sends
    nothing (a stopped process, or one cut off)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    hello = Hello("c1", 5, 9, "127.0.0.1:1", True, features=features)
    await stream.send_all(encode_frame(encode_hello(hello)))
    decoder = FrameDecoder(peers.PEER_LIMITS)
    while (frame := decoder.next_frame()) is None:
        decoder.receive_data(await stream.receive_some(1 << 16))
    assert decode_frame(frame)[0] == HELLO_OK
    return stream, decoder


async def _frames_for(
    stream: trio.SocketStream, decoder: FrameDecoder, seconds: float
) -> list[bytes]:
    """Every frame that arrives within `seconds` (until the other side closes)."""
    frames: list[bytes] = []
    with trio.move_on_after(seconds):
        while True:
            while (frame := decoder.next_frame()) is not None:
                frames.append(frame)
            data = await stream.receive_some(1 << 16)
            if not data:
                break
            decoder.receive_data(data)
    while (frame := decoder.next_frame()) is not None:
        frames.append(frame)
    return frames


async def test_an_idle_link_between_quiescing_brokers_carries_keepalives_and_stays_up() -> None:
    async with trio.open_nursery() as nursery:
        server, server_handler = network(1, {})
        port = await listen(nursery, server)
        client, client_handler = network(0, {1: f"127.0.0.1:{port}"})
        nursery.start_soon(client.dial_forever)
        await wait_until_async(lambda: server.connected() == [0], "the link")
        await trio.sleep(3 * KEEPALIVE_SILENT_S)
        # Each side sent one every KEEPALIVE_INTERVAL_S or so (none carries a message).
        for net in (server, client):
            assert net.stats.keepalives >= 10, net.stats
            assert net.stats.silent == 0
        assert server_handler.raft == [] and client_handler.raft == []
        assert server_handler.lost == [] and client_handler.lost == []
        assert server.connected() == [0] and client.connected() == [1]
        nursery.cancel_scope.cancel()


async def test_a_silent_peers_link_closes_after_the_window() -> None:
    async with trio.open_nursery() as nursery:
        server, handler = network(1, {})
        port = await listen(nursery, server)
        started = trio.current_time()
        stream, decoder = await _fake_peer(port, hello_features(True))
        frames = await _frames_for(stream, decoder, 3 * KEEPALIVE_SILENT_S)
        await wait_until_async(lambda: handler.lost == [5], "the silent link to close")
        took = trio.current_time() - started
        assert KEEPALIVE_SILENT_S * 0.9 <= took <= 3 * KEEPALIVE_SILENT_S
        assert server.stats.silent == 1 and server.stats.stalled == 0
        # What it sent while the link lasted: keepalives, empty RAFT frames.
        assert len(frames) >= 3 and set(frames) == {KEEPALIVE}
        assert decode_frame(KEEPALIVE) == (RAFT, [])
        await stream.aclose()
        nursery.cancel_scope.cancel()


async def test_a_peer_without_the_feature_gets_no_keepalive_and_no_silence_bound() -> None:
    async with trio.open_nursery() as nursery:
        server, handler = network(1, {})
        port = await listen(nursery, server)
        stream, decoder = await _fake_peer(port, PEER_FEATURES)  # an older broker
        frames = await _frames_for(stream, decoder, 3 * KEEPALIVE_SILENT_S)
        assert frames == []
        assert server.stats.keepalives == 0 and server.stats.silent == 0
        assert handler.lost == [] and server.connected() == [5]
        await stream.aclose()
        nursery.cancel_scope.cancel()


async def test_no_keepalives_from_a_broker_that_does_not_quiesce() -> None:
    async with trio.open_nursery() as nursery:
        server, handler = network(1, {}, quiesce=False)
        port = await listen(nursery, server)
        stream, decoder = await _fake_peer(port, hello_features(True))
        frames = await _frames_for(stream, decoder, 3 * KEEPALIVE_SILENT_S)
        assert frames == [] and server.stats.keepalives == 0
        assert handler.lost == [] and server.connected() == [5]
        await stream.aclose()
        nursery.cancel_scope.cancel()


def network(
    node_id: int, addresses: dict[int, str], *, quiesce: bool = True
) -> tuple[PeerNetwork, Handler]:
    """Brokers here quiesce unless told otherwise."""
    return _network(node_id, addresses, quiesce=quiesce)
