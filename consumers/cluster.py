"""The client's view of the cluster: bootstrap, connection pool, metadata cache, retries.

Theory of operation
-------------------
`Cluster` is owned by a Producer, Consumer or Admin and lives in its `async with`; its nursery
holds every connection's reader task. Connections are pooled per (address, lane): one per
broker for ordinary requests, and separate lanes where a request may park on the broker (the
consumer's long-poll fetches use lane "fetch", because a broker answers a connection's
requests in order and a parked fetch would hold back everything behind it).

Metadata lives in a `MetadataCache` (pure, `consumers.core.metadata`: a partition's leader is
never replaced by one reported under an older Raft term).

Bootstrap: `bootstrap` is "host:port[,host:port...]" or a list; a metadata request goes to a
live pooled connection when there is one, else to each known broker and bootstrap address in
turn (rotating the start) until one answers.

Retries: `Backoff` (`consumers.core.refresh`) is exponential with equal jitter, capped, the
jitter drawn from `random.random` here; `retry_until(deadline, fn)` calls
`fn` until it succeeds, a non-retriable error occurs, or the next attempt would start after
the deadline (then the last error is raised). Leadership, unknown-topic and connection errors
refresh metadata before the next attempt.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import AsyncExitStack, suppress
from types import TracebackType
from typing import TypeVar

import trio

from broker.wire.errors import ErrorCode
from broker.wire.limits import Limits
from broker.wire.messages import MetadataRequest, MetadataResponse, Request, Response
from consumers.connection import DEFAULT_CLIENT_LIMITS, Connection
from consumers.core import refresh
from consumers.core.metadata import (
    BrokerAddress,
    MetadataCache,
    PartitionMeta,
    TopicMeta,
    TopicPartition,
)
from consumers.core.refresh import needs_metadata
from consumers.errors import (
    BrokerUnavailableError,
    ClientClosedError,
    NotControllerError,
    RequestTimedOutError,
    SluiceError,
    UnknownTopicError,
)

__all__ = [
    "Backoff",
    "BrokerAddress",
    "Cluster",
    "MetadataCache",
    "PartitionMeta",
    "TopicMeta",
    "TopicPartition",
    "parse_bootstrap",
]

T = TypeVar("T")

DEFAULT_PORT = 9092
METADATA_ATTEMPT_S = 2.0
"""Time one broker gets to connect and answer a metadata request before the next is asked
(a paused broker accepts connections but answers nothing)."""


def parse_bootstrap(bootstrap: str | Sequence[str]) -> list[tuple[str, int]]:
    """ "h1:p1,h2:p2" (or a list of such) -> [(host, port), ...]; "[::1]:9092" for IPv6; a
    missing port is 9092."""
    parts = bootstrap.split(",") if isinstance(bootstrap, str) else list(bootstrap)
    out: list[tuple[str, int]] = []
    for raw in parts:
        text = raw.strip()
        if not text:
            continue
        if text.startswith("["):
            host, _, rest = text[1:].partition("]")
            port_text = rest[1:] if rest.startswith(":") else ""
        elif text.count(":") == 1:
            host, _, port_text = text.partition(":")
        else:
            host, port_text = text, ""
        try:
            port = int(port_text) if port_text else DEFAULT_PORT
        except ValueError:
            raise ValueError(f"bootstrap: bad port in {text!r}") from None
        if not host or not 0 < port <= 65535:
            raise ValueError(f"bootstrap: expected HOST:PORT, got {text!r}")
        out.append((host, port))
    if not out:
        raise ValueError("bootstrap: no address given")
    return out


def nested(error: SluiceError, outer: ErrorCode) -> str:
    """`error` as text inside the message of an error of code `outer`: without its code when
    it is the same (so no message says "CODE: CODE: ...")."""
    return error.message if error.code is outer else str(error)


def _unreachable(what: str, sources: Sequence[tuple[str, int]], last: SluiceError | None) -> str:
    """ "no broker reachable (h1:p1, h2:p2): <why the last attempt failed>"; the list of
    addresses is left out when there is one (the reason names it)."""
    names = "" if len(sources) == 1 else f" ({', '.join(f'{h}:{p}' for h, p in sources)})"
    why = "" if last is None else f": {nested(last, ErrorCode.NETWORK_EXCEPTION)}"
    return f"{what}{names}{why}"


class Backoff(refresh.Backoff):
    """The core's exponential backoff with equal jitter, drawn from `random.random` unless
    `rng` is given."""

    def __init__(
        self, base_s: float = 0.05, max_s: float = 1.0, rng: Callable[[], float] = random.random
    ) -> None:
        """The first delay about `base_s` seconds, doubling up to `max_s` seconds; `rng`
        draws the jitter in [0, 1)."""
        super().__init__(base_s, max_s, rng)


class Cluster:
    """Connections and metadata of one client. Use as `async with Cluster(...) as c`.

    `bootstrap`: "host:port[,host:port...]" or a list of such; `client_id`: sent with every
    request; `request_timeout_s`: seconds a request waits for its answer (then the
    connection is closed); `connect_timeout_s`: seconds to connect and handshake;
    `max_in_flight_per_connection`: unanswered requests per connection; `limits`: what the
    client accepts from a broker; `backoff`: the retry backoff; `metadata`: a cache to
    share (a consumer's positions share theirs).
    """

    def __init__(
        self,
        bootstrap: str | Sequence[str],
        *,
        client_id: str | None = None,
        request_timeout_s: float = 30.0,
        connect_timeout_s: float = 10.0,
        max_in_flight_per_connection: int = 5,
        limits: Limits = DEFAULT_CLIENT_LIMITS,
        backoff: refresh.Backoff | None = None,
        metadata: MetadataCache | None = None,
    ) -> None:
        self.bootstrap = parse_bootstrap(bootstrap)
        self.client_id = client_id
        self.request_timeout_s = request_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.max_in_flight = max_in_flight_per_connection
        self.limits = limits
        self.backoff = backoff or Backoff()
        self.metadata = MetadataCache() if metadata is None else metadata
        """The owner's cache when it passes one (a consumer's positions share it)."""
        self._conns: dict[tuple[str, str], Connection] = {}
        self._connecting: dict[tuple[str, str], trio.Event] = {}
        self._scheduled: set[tuple[str, str]] = set()
        self._failures: dict[str, int] = {}
        """Consecutive failed connection attempts per address (reset by a success)."""
        self._failed_at: dict[str, float] = {}
        """When the last of them failed (Trio clock)."""
        self._reached = False
        """Whether any connection attempt of this client succeeded."""
        self._refresh_lock = trio.Lock()
        self._rotation = 0
        self._nursery: trio.Nursery | None = None
        self._stack = AsyncExitStack()
        self.changed = trio.Event()
        """Set (and replaced) after each metadata update."""

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Cluster:
        self._nursery = await self._stack.enter_async_context(trio.open_nursery())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        nursery = self._nursery
        assert nursery is not None
        with trio.CancelScope(shield=True):
            await self.aclose()
        nursery.cancel_scope.cancel()
        self._nursery = None
        if exc is not None:
            # The body's own error propagates as it was raised (a SluiceError stays one),
            # not wrapped in the nursery's ExceptionGroup; the background tasks are cancelled.
            await self._stack.__aexit__(None, None, None)
            return False
        return await self._stack.__aexit__(exc_type, exc, tb)

    async def aclose(self) -> None:
        """Close every pooled connection (their pending requests fail)."""
        conns = list(self._conns.values())
        self._conns.clear()
        for c in conns:
            await c.aclose()

    @property
    def nursery(self) -> trio.Nursery:
        """The nursery of the client's background tasks (ClientClosedError once closed)."""
        if self._nursery is None:
            raise ClientClosedError("the client is not open (use `async with`)")
        return self._nursery

    # -- connections -------------------------------------------------------------------------

    def ready_connection(self, broker_id: int, lane: str = "main") -> Connection | None:
        """The open connection to `broker_id` on `lane`, or None (nothing is started)."""
        b = self.metadata.brokers.get(broker_id)
        if b is None:
            return None
        c = self._conns.get((b.address, lane))
        return c if c is not None and not c.closed else None

    def start_connecting(
        self, broker_id: int, lane: str = "main", on_done: Callable[[], None] | None = None
    ) -> None:
        """Open the connection in the background (no-op if open or opening); `on_done` runs
        once the attempt ended either way. After failed attempts to the same address the
        next one waits a backoff first, so a dead broker is not hammered."""
        if self._nursery is None:
            return  # closed (or closing)
        b = self.metadata.brokers.get(broker_id)
        if b is None:
            if on_done is not None:
                on_done()
            return
        key = (b.address, lane)
        if key in self._connecting or key in self._scheduled:
            return
        if self.ready_connection(broker_id, lane) is not None:
            return
        self._scheduled.add(key)

        async def connect() -> None:
            try:
                failures = self._failures.get(b.address, 0)
                if failures:
                    # Backoff counts from the last failure: a broker that failed long ago
                    # (and has since restarted, say) is tried at once.
                    since = self._failed_at.get(b.address, 0.0)
                    await trio.sleep_until(since + self.backoff.delay(failures - 1))
                await self._connect(b.host, b.port, lane)
            except SluiceError:
                pass
            finally:
                self._scheduled.discard(key)
                if on_done is not None:
                    on_done()

        self.nursery.start_soon(connect)

    def unreachable(self, broker_id: int) -> bool:
        """The last attempt to connect to `broker_id` failed and no connection is open."""
        b = self.metadata.brokers.get(broker_id)
        if b is None or self.ready_connection(broker_id) is not None:
            return False
        return self._failures.get(b.address, 0) > 0

    async def connection(self, broker_id: int, lane: str = "main") -> Connection:
        """An open connection to `broker_id` (connecting if needed)."""
        b = self.metadata.brokers.get(broker_id)
        if b is None:
            raise BrokerUnavailableError(f"broker {broker_id} is not in the metadata")
        return await self._connect(b.host, b.port, lane)

    async def _connect(self, host: str, port: int, lane: str) -> Connection:
        key = (f"{host}:{port}", lane)
        while True:
            c = self._conns.get(key)
            if c is not None and not c.closed:
                return c
            opening = self._connecting.get(key)
            if opening is None:
                break
            await opening.wait()
            c = self._conns.get(key)
            if c is None or c.closed:
                raise BrokerUnavailableError(f"cannot connect to {key[0]}")
        opening = self._connecting[key] = trio.Event()
        try:
            conn = Connection(
                host,
                port,
                client_id=self.client_id,
                max_in_flight=self.max_in_flight,
                connect_timeout_s=self.connect_timeout_s,
                request_timeout_s=self.request_timeout_s,
                limits=self.limits,
            )
            try:
                await self.nursery.start(conn.run)
            except SluiceError:
                self._failures[key[0]] = self._failures.get(key[0], 0) + 1
                self._failed_at[key[0]] = trio.current_time()
                raise
            self._failures.pop(key[0], None)
            self._reached = True
            self._conns[key] = conn
            return conn
        finally:
            del self._connecting[key]
            opening.set()

    async def request(
        self,
        broker_id: int,
        request: Request,
        *,
        lane: str = "main",
        timeout_s: float | None = None,
    ) -> Response:
        """`request` to `broker_id` on `lane`, its answer within `timeout_s` seconds (None:
        the client's request timeout); raises the typed error of a request-level error."""
        conn = await self.connection(broker_id, lane)
        return await conn.request(request, timeout_s=timeout_s)

    async def any_connection(self) -> Connection:
        """A live connection to any broker: a pooled one, else each known broker and
        bootstrap address in turn."""
        for (_, lane), c in self._conns.items():
            if lane == "main" and not c.closed:
                return c
        candidates = self._metadata_sources()
        last: SluiceError | None = None
        for host, port in candidates:
            try:
                return await self._connect(host, port, "main")
            except SluiceError as e:
                if not e.retriable:
                    raise
                last = e
        raise BrokerUnavailableError(_unreachable("no broker reachable", candidates, last))

    async def request_any(self, request: Request, *, timeout_s: float | None = None) -> Response:
        """`request` to any reachable broker (see `any_connection`), its answer within
        `timeout_s` seconds (None: the client's request timeout)."""
        conn = await self.any_connection()
        return await conn.request(request, timeout_s=timeout_s)

    async def request_controller(
        self, request: Request, *, timeout_s: float | None = None
    ) -> Response:
        """Send to the controller named by the metadata (refreshed when unknown)."""
        if self.metadata.controller is None:
            await self.refresh(())
        controller = self.metadata.controller
        if controller is None:
            raise NotControllerError("the cluster has no controller at the moment")
        try:
            return await self.request(controller, request, timeout_s=timeout_s)
        except (NotControllerError, BrokerUnavailableError):
            self.metadata.controller = None  # ask again next time: it moved or is down
            raise

    # -- metadata ----------------------------------------------------------------------------

    async def refresh(self, topics: Iterable[str] | None = None) -> MetadataResponse:
        """Ask a broker for metadata (`topics=None`: all topics) and merge it.

        Successive refreshes ask the known brokers in turn (those whose last connection
        attempt failed last), each within `METADATA_ATTEMPT_S`, so a client whose broker is
        cut off from the cluster (and so answers with a stale view) hears from the others
        within a few refreshes instead of asking the same stale broker forever."""
        wanted = None if topics is None else tuple(dict.fromkeys(topics))
        request = MetadataRequest(topics=wanted)
        async with self._refresh_lock:
            last: SluiceError | None = None
            candidates = self._metadata_sources()
            for host, port in candidates:
                with trio.move_on_after(METADATA_ATTEMPT_S):
                    try:
                        conn = await self._connect(host, port, "main")
                        response = await conn.request(request, timeout_s=METADATA_ATTEMPT_S)
                    except SluiceError as e:
                        if not e.retriable:
                            raise
                        last = e
                        continue
                    assert isinstance(response, MetadataResponse)
                    self.metadata.update(response)
                    self.changed.set()
                    self.changed = trio.Event()
                    return response
                last = RequestTimedOutError(f"{host}:{port} did not answer metadata in time")
            raise BrokerUnavailableError(
                _unreachable("no broker answered metadata", candidates, last)
            )

    def _gave_up(self, last: SluiceError | None) -> SluiceError:
        """The error of an operation whose last attempt the deadline cut off: the brokers
        were unreachable (NETWORK_EXCEPTION) when this client has been trying to connect and
        never reached one, else REQUEST_TIMED_OUT naming the error of the attempt before, if
        any."""
        trying = bool(self._connecting or self._failures)
        if not self._reached and (trying or isinstance(last, BrokerUnavailableError)):
            sources = self._metadata_sources()
            if last is None:
                names = ", ".join(f"{h}:{p}" for h, p in sources)
                last = BrokerUnavailableError(f"no answer from {names} before the timeout")
            return BrokerUnavailableError(_unreachable("no broker reachable", sources, last))
        before = "" if last is None else nested(last, ErrorCode.REQUEST_TIMED_OUT)
        reason = f" (before that: {before})" if before else ""
        return RequestTimedOutError(f"gave up: the operation's timeout passed{reason}")

    def _metadata_sources(self) -> list[tuple[str, int]]:
        """Known brokers and bootstrap addresses, rotated by one per call (so successive
        callers spread over them); addresses whose last connection attempt failed go last."""
        candidates = [(b.host, b.port) for _, b in sorted(self.metadata.brokers.items())]
        candidates += [a for a in self.bootstrap if a not in candidates]
        self._rotation = (self._rotation + 1) % len(candidates)
        rotated = candidates[self._rotation :] + candidates[: self._rotation]
        return sorted(rotated, key=lambda a: self._failures.get(f"{a[0]}:{a[1]}", 0) > 0)

    async def topic(self, name: str, deadline: float) -> TopicMeta:
        """The topic's metadata, refreshing (with backoff) until it is known or the
        deadline passes (UnknownTopicError)."""
        meta = self.metadata.topics.get(name)
        if meta is not None:
            return meta

        async def fetch() -> TopicMeta:
            await self.refresh([name])
            found = self.metadata.topics.get(name)
            if found is None:
                raise UnknownTopicError(f"topic {name!r} does not exist")
            return found

        return await self.retry_until(deadline, fetch, refresh_topics=())

    async def retry_until(
        self,
        deadline: float,
        fn: Callable[[], Awaitable[T]],
        *,
        refresh_topics: Iterable[str] | None = (),
    ) -> T:
        """`await fn()` until it succeeds; retriable errors are retried with backoff (after a
        metadata refresh of `refresh_topics` when the error says metadata may be stale) while
        the next attempt would start before `deadline`; the last error is raised. An attempt
        cut off by the deadline raises RequestTimedOutError (its outcome is unknown), naming the
        error of the attempt before it, if any, as the reason the operation had not succeeded."""
        attempt = 0
        topics = None if refresh_topics is None else tuple(refresh_topics)
        last: SluiceError | None = None
        while True:
            try:
                with trio.fail_after(max(0.0, deadline - trio.current_time())):
                    return await fn()
            except trio.TooSlowError:
                raise self._gave_up(last) from last
            except SluiceError as e:
                last = e
                if not e.retriable:
                    raise
                delay = self.backoff.delay(attempt)
                attempt += 1
                if trio.current_time() + delay >= deadline:
                    raise
                if needs_metadata(e):
                    with trio.move_on_at(deadline):
                        with suppress(SluiceError):
                            await self.refresh(topics)
                await trio.sleep(delay)
