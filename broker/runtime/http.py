"""A small HTTP/1.1 endpoint for orchestrators and operators: /healthz, /readyz, /stats,
/metrics, and the status console (`/` and `/status.json`, console.py).

One request per connection, bounded: 8 KiB of request head, 5 s to send it, SEND_TIMEOUT_S
to take the answer, and at most `max_connections` (MAX_CONNECTIONS) handled at once; a
connection beyond them is answered 503 at once, before its request is read, and closed (its
unread request may make the close a reset, after the answer), so a flood of connections
costs the broker's loop one small write each. /healthz is 200 while the process serves;
/readyz is 200 once the broker has caught up with the metadata log and every partition it
hosts has a leader, else 503; /stats is the broker's counters as JSON. Query routes
(`/peers/ping?broker=N`) take the query's parameters and may wait.

A route answers (status, body, content type); a body given as text is encoded (UTF-8) once,
one given as bytes is sent as it is (`/status.json` keeps its last document encoded).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Mapping
from urllib.parse import parse_qsl

import trio

MAX_HEAD_BYTES = 8 * 1024
HEAD_TIMEOUT_S = 5.0
SEND_TIMEOUT_S = 10.0
"""How long a client has to take its answer (a slow reader holds a connection slot)."""
MAX_CONNECTIONS = 64
"""Connections handled at once; the rest are answered 503 and closed."""

TEXT = "text/plain; charset=utf-8"
JSON = "application/json"

Body = str | bytes
HttpAnswer = tuple[int, Body, str]
"""(status, body, content type)."""
Route = Callable[[], HttpAnswer]
QueryRoute = Callable[[Mapping[str, str]], Awaitable[HttpAnswer]]
"""Answers the query's parameters (the last of each name)."""

_REASONS = {
    200: "OK",
    404: "Not Found",
    405: "Method Not Allowed",
    400: "Bad Request",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def http_response(status: int, body: Body, content_type: str) -> bytes:
    """The whole answer: head and body (encoded once when text)."""
    data = body.encode() if isinstance(body, str) else body
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + data


BUSY = http_response(503, "too many connections\n", TEXT)


class HttpEndpoint:
    def __init__(
        self,
        routes: dict[str, Route],
        queries: dict[str, QueryRoute] | None = None,
        *,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.routes = routes
        self.queries = queries or {}
        self.slots = trio.CapacityLimiter(max_connections)
        self.refused = 0
        """Connections answered 503 because every slot was taken."""

    async def serve(self, listeners: list[trio.SocketListener]) -> None:
        await trio.serve_listeners(self.handle, listeners)

    async def handle(self, stream: trio.SocketStream) -> None:
        try:
            try:
                self.slots.acquire_nowait()
            except trio.WouldBlock:
                self.refused += 1
                with trio.move_on_after(SEND_TIMEOUT_S):
                    await stream.send_all(BUSY)
                return
            try:
                answer = http_response(*await self._respond(stream))
                with trio.move_on_after(SEND_TIMEOUT_S):
                    await stream.send_all(answer)
            finally:
                self.slots.release()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client hung up
        finally:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await trio.aclose_forcefully(stream)

    async def _respond(self, stream: trio.SocketStream) -> HttpAnswer:
        buf = b""
        with trio.move_on_after(HEAD_TIMEOUT_S):
            while b"\r\n\r\n" not in buf and len(buf) < MAX_HEAD_BYTES:
                data = await stream.receive_some(4096)
                if not data:
                    break
                buf += data
        line = buf.split(b"\r\n", 1)[0].decode("latin-1")
        parts = line.split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return 400, "bad request\n", TEXT
        method, (target, _, query) = parts[0], parts[1].partition("?")
        route = self.routes.get(target)
        asking = self.queries.get(target)
        if route is None and asking is None:
            return 404, "not found\n", TEXT
        if method not in ("GET", "HEAD"):
            return 405, "use GET\n", TEXT
        if asking is not None:
            return await asking(dict(parse_qsl(query)))
        assert route is not None
        return route()
