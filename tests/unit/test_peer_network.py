"""PeerNetwork over real loopback TCP: a handshake that fails in any way (the other side
closes mid-handshake, sends garbage, or says nothing) costs that connection only; the broker's
accept loop and dialer keep going and a well-behaved peer still links."""

from __future__ import annotations

import pytest
import trio

from broker.core.peer_codec import (
    HELLO_OK,
    PEER_PROTOCOL_VERSION,
    PEER_RESPONSE,
    Hello,
    PeerRequest,
    PeerResponse,
    decode_frame,
    encode_hello,
    encode_peer_request,
    encode_peer_response,
    encode_raft,
)
from broker.core.raft.types import Heartbeat
from broker.runtime import peers
from broker.wire import cbor
from broker.wire.errors import ErrorCode
from broker.wire.frames import FrameDecoder, encode_frame
from tests.support.peer_links import listen, network
from tests.support.wait import wait_until_async


async def test_accept_side_survives_failed_handshakes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(peers, "HANDSHAKE_TIMEOUT_S", 0.2)  # the silent client's turn
    async with trio.open_nursery() as nursery:
        server, server_handler = network(1, {})
        port = await listen(nursery, server)
        # Closes at once; sends half a frame and closes; sends garbage; says nothing.
        for payload in (b"", encode_frame(b"\xa1\x01\x02")[:3], b"\xff" * 64, None):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            if payload:
                await stream.send_all(payload)
            if payload is None:
                await trio.sleep(0.4)  # past the handshake timeout
            await stream.aclose()
        await wait_until_async(lambda: server.stats.bad_frames >= 4, "four failed handshakes")
        # A real peer still links.
        client, _ = network(0, {1: f"127.0.0.1:{port}"})
        nursery.start_soon(client.dial_forever)
        await wait_until_async(lambda: server.connected() == [0], "the link")
        assert [h.node_id for h in server_handler.hellos] == [0]
        nursery.cancel_scope.cancel()


async def test_dialer_survives_a_peer_that_closes_mid_handshake() -> None:
    """The peer accepts and closes before answering the hello (killed mid-handshake): the
    dialer backs off and tries again; once a real peer listens there, it links."""
    accepted = 0

    async def close_at_once(stream: trio.SocketStream) -> None:
        nonlocal accepted
        accepted += 1
        await stream.receive_some(1 << 16)  # the hello
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        rude_scope = trio.CancelScope()

        async def rude() -> None:
            with rude_scope:
                await trio.serve_listeners(close_at_once, listeners)

        nursery.start_soon(rude)
        addresses = {1: f"127.0.0.1:{port}"}
        client, _ = network(0, addresses)
        nursery.start_soon(client.dial_forever)
        await wait_until_async(lambda: accepted >= 3, "three refused handshakes")
        assert client.connected() == []
        server, _ = network(1, {})
        addresses[1] = f"127.0.0.1:{await listen(nursery, server)}"
        await wait_until_async(lambda: client.connected() == [1], "the link")
        rude_scope.cancel()
        nursery.cancel_scope.cancel()


async def test_a_closed_link_is_reported_lost_on_both_sides() -> None:
    """The driver hears of it (so followers of a leader on that broker time out at once)."""
    async with trio.open_nursery() as nursery:
        server, server_handler = network(1, {})
        port = await listen(nursery, server)
        client, client_handler = network(0, {1: f"127.0.0.1:{port}"})
        dial_scope = trio.CancelScope()

        async def dial() -> None:
            with dial_scope:
                await client.dial_forever()

        nursery.start_soon(dial)
        await wait_until_async(lambda: server.connected() == [0], "the link")
        assert server_handler.lost == [] and client_handler.lost == []
        dial_scope.cancel()  # the client broker goes away
        await wait_until_async(lambda: server_handler.lost == [0], "the server to notice")
        assert client_handler.lost == [1]
        nursery.cancel_scope.cancel()


async def test_frames_sent_with_the_handshake_answer_are_accounted_and_delivered() -> None:
    """The accepting broker may send frames right behind its HELLO_OK: the dialer read them
    during the handshake; they are delivered, and the link's budget ends at zero (they were
    once released without having been taken, which failed every such link)."""
    good = Heartbeat((1, 7), (0, 1), 3, 5, None)
    stranger = Heartbeat((2, 7), (0, 1), 3, 5, None)  # not from the linked broker
    served = trio.Event()

    async def fake_peer(stream: trio.SocketStream) -> None:
        await stream.receive_some(1 << 16)  # the hello
        hello = encode_hello(Hello("c1", 1, 7, "127.0.0.1:1", True), HELLO_OK)
        raft = encode_raft([(4, good), (4, stranger)])
        await stream.send_all(encode_frame(hello) + encode_frame(raft))
        await served.wait()
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        nursery.start_soon(trio.serve_listeners, fake_peer, listeners)
        client, handler = network(0, {1: f"127.0.0.1:{port}"})
        nursery.start_soon(client.dial_forever)
        await wait_until_async(lambda: handler.raft == [(4, good)], "the frame behind the hello")
        assert client.stats.dropped_messages == 1 and client.stats.errors == 0
        assert client.budget.in_use == 0
        served.set()
        await wait_until_async(lambda: 1 in handler.lost, "the link to end")
        assert client.budget.in_use == 0
        nursery.cancel_scope.cancel()


async def _linked_fake_peer(port: int, version: int) -> tuple[trio.SocketStream, FrameDecoder]:
    """A fake broker 5 of protocol `version`, linked to the broker on `port`."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    hello = Hello("c1", 5, 9, "127.0.0.1:1", True, version, ("peer-requests",))
    await stream.send_all(encode_frame(encode_hello(hello)))
    decoder = FrameDecoder(peers.PEER_LIMITS)
    while (frame := decoder.next_frame()) is None:
        decoder.receive_data(await stream.receive_some(1 << 16))
    assert decode_frame(frame)[0] == HELLO_OK
    return stream, decoder


async def test_peer_requests_and_a_newer_peers_unknown_frames_keep_the_link() -> None:
    """Requests and responses reach the handler; a newer peer's frame of an unknown kind is
    skipped, and answered UNSUPPORTED_VERSION when it is request-shaped."""
    async with trio.open_nursery() as nursery:
        server, handler = network(1, {})
        port = await listen(nursery, server)
        stream, decoder = await _linked_fake_peer(port, PEER_PROTOCOL_VERSION + 1)
        request = PeerRequest(77, 1, "ping", [1, 2])
        response = PeerResponse(88, 3, ErrorCode.NONE, None, {"x": 1})
        frames = [
            encode_peer_request(request),
            cbor.encode([9, {"one-way": True}]),  # unknown, not request-shaped: skipped
            cbor.encode([70, [77, 2, "a newer exchange"]]),  # unknown, request-shaped
            encode_peer_response(response),
        ]
        await stream.send_all(b"".join(encode_frame(f) for f in frames))
        await wait_until_async(lambda: handler.responses == [(5, response)], "the response")
        assert handler.requests == [(5, request)]
        while (frame := decoder.next_frame()) is None:
            decoder.receive_data(await stream.receive_some(1 << 16))
        kind, answer = decode_frame(frame)
        assert kind == PEER_RESPONSE and isinstance(answer, PeerResponse)
        assert (answer.session, answer.correlation_id) == (77, 2)
        assert answer.error is ErrorCode.UNSUPPORTED_VERSION
        assert server.stats.unknown_frames == 2 and server.stats.unknown_answered == 1
        assert server.connected() == [5] and server.stats.bad_frames == 0
        await stream.aclose()
        nursery.cancel_scope.cancel()


async def test_an_unknown_frame_kind_from_a_peer_of_our_version_closes_the_link() -> None:
    async with trio.open_nursery() as nursery:
        server, handler = network(1, {})
        port = await listen(nursery, server)
        stream, _ = await _linked_fake_peer(port, PEER_PROTOCOL_VERSION)
        await stream.send_all(encode_frame(cbor.encode([70, [77, 2]])))
        await wait_until_async(lambda: handler.lost == [5], "the link to close")
        assert server.stats.bad_frames == 1 and server.stats.unknown_frames == 0
        await stream.aclose()
        nursery.cancel_scope.cancel()
