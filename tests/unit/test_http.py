"""The HTTP endpoint (broker/runtime/http.py) over real sockets: a body given as text or as
bytes goes out once with its byte length; at most `max_connections` connections are handled
at once and the next is answered 503 at once, before anything of its request is read, then
closed; a slot freed is taken again."""

from __future__ import annotations

from collections.abc import Mapping

import trio

from broker.runtime.http import JSON, TEXT, HttpAnswer, HttpEndpoint


async def exchange(port: int, request: bytes | None = b"GET / HTTP/1.1\r\n\r\n") -> bytes:
    """The answer to `request` (None: send nothing), read as an HTTP client does: the head,
    then Content-Length bytes. (A connection closed with its request unread may be reset
    after the answer, so the end of the stream is not awaited.)"""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        if request is not None:
            await stream.send_all(request)
        out = b""
        while b"\r\n\r\n" not in out or len(split(out)[2]) < length(out):
            data = await stream.receive_some(65536)
            assert data, f"the server closed the connection after {out!r}"
            out += data
        return out


def length(answer: bytes) -> int:
    return int(split(answer)[1]["Content-Length"])


def split(answer: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status, *fields = head.decode("latin-1").split("\r\n")
    headers = dict(f.split(": ", 1) for f in fields)
    return status, headers, body


async def serve(nursery: trio.Nursery, endpoint: HttpEndpoint) -> int:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    nursery.start_soon(endpoint.serve, listeners)
    port: int = listeners[0].socket.getsockname()[1]
    return port


async def test_text_and_bytes_bodies_go_out_with_their_byte_length() -> None:
    endpoint = HttpEndpoint(
        {"/": lambda: (200, "día\n", TEXT), "/b": lambda: (200, b'{"a":"\xc3\xa9"}', JSON)}
    )
    async with trio.open_nursery() as nursery:
        port = await serve(nursery, endpoint)
        status, headers, body = split(await exchange(port))
        assert status == "HTTP/1.1 200 OK" and body == "día\n".encode()
        assert headers["Content-Length"] == "5" and headers["Content-Type"] == TEXT
        status, headers, body = split(await exchange(port, b"GET /b HTTP/1.1\r\n\r\n"))
        assert body == b'{"a":"\xc3\xa9"}' and headers["Content-Length"] == str(len(body))
        status, _, _ = split(await exchange(port, b"GET /nowhere HTTP/1.1\r\n\r\n"))
        assert status == "HTTP/1.1 404 Not Found"
        nursery.cancel_scope.cancel()


async def test_connections_beyond_the_cap_are_answered_503_at_once() -> None:
    release = trio.Event()
    entered: list[str] = []

    async def slow(params: Mapping[str, str]) -> HttpAnswer:
        entered.append(params.get("n", ""))
        await release.wait()
        return 200, "done\n", TEXT

    endpoint = HttpEndpoint({"/": lambda: (200, "ok\n", TEXT)}, {"/slow": slow}, max_connections=2)
    answers: dict[str, bytes] = {}

    async def ask(name: str, request: bytes | None) -> None:
        answers[name] = await exchange(port, request)

    async with trio.open_nursery() as nursery:
        port = await serve(nursery, endpoint)
        for n in ("1", "2"):
            nursery.start_soon(ask, n, f"GET /slow?n={n} HTTP/1.1\r\n\r\n".encode())
        while len(entered) < 2:  # both slots taken, each by a request being answered
            await trio.sleep(0.01)
        # The third sends nothing: it is answered without its request being read.
        with trio.fail_after(5):
            status, headers, body = split(await exchange(port, None))
        assert status == "HTTP/1.1 503 Service Unavailable" and body == b"too many connections\n"
        assert headers["Connection"] == "close"
        with trio.fail_after(5):
            status, _, _ = split(await exchange(port))
        assert status.endswith("503 Service Unavailable") and endpoint.refused == 2
        assert sorted(entered) == ["1", "2"] and not answers  # the slow ones still hold their slots
        release.set()
        while len(answers) < 2:
            await trio.sleep(0.01)
        assert all(split(a)[2] == b"done\n" for a in answers.values())
        status, _, body = split(await exchange(port))  # a slot is free again
        assert status == "HTTP/1.1 200 OK" and body == b"ok\n"
        assert endpoint.slots.borrowed_tokens == 0
        nursery.cancel_scope.cancel()
