"""One TCP connection to one broker: handshake, pipelined requests, responses by correlation id.

Theory of operation
-------------------
`Connection.run` (started with `nursery.start`) connects within `connect_timeout_s`, sends
API_VERSIONS (at this client's newest version), negotiates per API the highest version both
sides speak (`versions`; a broker refusing that API_VERSIONS with UNSUPPORTED_VERSION lists its
ranges in the refusal, which serve as well; a broker that lacks an API, or refuses without
ranges, is refused with UnsupportedVersionError), reports itself started, and then reads
frames until the connection ends. Every request goes out, and its answer is read, at the
version negotiated for its API on this connection.

A request is `submit`ted (a slot of the in-flight limit is taken, a correlation id allocated,
the frame written under a FIFO lock: frames leave in submit order, which the producer relies
on to keep a partition's batches in order) and later awaited with `Pending.result()`; or both
at once with `request`. The reader reads the correlation id of each response without decoding
it (`response_correlation_id`), hands the payload to the waiting slot and frees the slot; the
waiter decodes it (`decode_response`), so a malformed response fails only its own request. A
slot may carry an `on_done` callback, which the reader calls at once (no task switch between
the response and its handling: the producer settles its batches there); a task still waits
on the slot for its deadline (`Pending.wait`).

Invariants:
- at most `max_in_flight` requests are unanswered; each slot is released exactly once;
- responses are read only through a FrameDecoder bounded by `limits.max_frame_bytes`;
- when the connection fails (EOF, reset, a protocol violation, a request timeout, aclose),
  every pending request fails with BrokerUnavailableError (retriable: its outcome is unknown)
  and the connection is `closed` for good; the pool opens a new one;
- a response nobody waits for (its request timed out or was cancelled) is dropped.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from broker.wire.api import SUPPORTED_VERSIONS, ApiKey, negotiate
from broker.wire.errors import ErrorCode, WireError
from broker.wire.frames import FrameDecoder
from broker.wire.limits import INT32_MAX, Limits
from broker.wire.messages import ApiVersionsRequest, ApiVersionsResponse, Request, Response
from broker.wire.protocol import decode_response, encode_request, response_correlation_id
from consumers.errors import (
    BrokerUnavailableError,
    InvalidRequestError,
    RequestTimedOutError,
    SluiceError,
    UnsupportedVersionError,
    error_for,
)

__all__ = ["DEFAULT_CLIENT_LIMITS", "Connection", "Pending"]

RECEIVE_BYTES = 256 * 1024
_MALFORMED = frozenset(
    {ErrorCode.INVALID_REQUEST, ErrorCode.INVALID_FRAME, ErrorCode.FRAME_TOO_LARGE}
)
"""Codes a malformed response keeps (InvalidRequestError's family); any other becomes
INVALID_REQUEST."""
DEFAULT_CLIENT_LIMITS = Limits(max_frame_bytes=64 << 20)
"""What the client accepts from a broker: fetch responses can carry up to fetch_max_bytes."""


@dataclass(eq=False, slots=True)
class Pending:
    """A submitted request awaiting its response."""

    connection: Connection
    correlation_id: int
    api_key: ApiKey
    api_version: int
    deadline: float
    event: trio.Event = field(default_factory=trio.Event)
    payload: bytes | None = None
    error: SluiceError | None = None
    released: bool = False
    on_done: Callable[[], None] | None = None
    """Called (and cleared) by the reader as soon as the response is in, before any waiter
    wakes; `outcome()` then tells it. Never called on a failure or a timeout: a waiter that
    finds it still set handles those."""

    async def result(self) -> Response:
        """The response body; raises the typed error of a request-level error code,
        BrokerUnavailableError when the connection failed, RequestTimedOutError after the
        deadline (the connection is then closed: its state is unknown)."""
        await self.connection._wait(self)
        return self.outcome()

    async def wait(self) -> RequestTimedOutError | None:
        """Until the response or the connection's failure is in (None; `outcome()` tells
        which), or the deadline passed (the error: the connection is then closed, its state
        unknown)."""
        try:
            await self.connection._wait(self)
        except RequestTimedOutError as e:
            return e
        return None

    def outcome(self) -> Response:
        """Once the response is in: its body, or the error `result()` raises."""
        return self.connection._outcome(self)


def _why(error: OSError) -> str:
    """The reason a connection attempt failed, as the operating system says it ("connection
    refused"), without the wrapping text of trio's multi-address attempt."""
    causes: list[BaseException] = [error]
    group = error.__cause__
    if isinstance(group, BaseExceptionGroup):
        causes = list(group.exceptions) or causes
    first = causes[0]
    if isinstance(first, OSError) and first.errno is not None and first.errno > 0:
        return os.strerror(first.errno).lower()  # trio's own text repeats the address
    if isinstance(first, OSError) and first.strerror:
        return first.strerror.lower()  # a resolver error ("name or service not known")
    return str(first)


class Connection:
    """One TCP connection to the broker at `host:port`. Start with `nursery.start(c.run)`."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_id: str | None = None,
        max_in_flight: int = 5,
        connect_timeout_s: float = 10.0,
        request_timeout_s: float = 30.0,
        limits: Limits = DEFAULT_CLIENT_LIMITS,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be >= 1")
        self.host = host
        self.port = port
        self.client_id = client_id
        self.max_in_flight = max_in_flight
        self.connect_timeout_s = connect_timeout_s
        self.request_timeout_s = request_timeout_s
        self.limits = limits
        self.node_id: int | None = None
        """The broker's node id, from its API_VERSIONS answer."""
        self.cluster_id: str | None = None
        self.versions: dict[ApiKey, int] = {}
        """The version of each API this connection speaks: the highest both sides support."""
        self._stream: trio.SocketStream | None = None
        self._slots = trio.Semaphore(max_in_flight)
        self._send_lock = trio.StrictFIFOLock()
        self._pending: dict[int, Pending] = {}
        self._ids = itertools.count(1)
        self._closed = False
        self._close_reason: str = "not connected"
        self._ended = trio.Event()
        self._decoder = FrameDecoder(limits)

    def __repr__(self) -> str:
        return f"Connection({self.host}:{self.port}, node={self.node_id}, closed={self._closed})"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def local_host(self) -> str | None:
        """This side's address of the connection (how the broker sees this client), once
        connected."""
        if self._stream is None:
            return None
        name = self._stream.socket.getsockname()
        return str(name[0]) if isinstance(name, tuple) else None

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def has_capacity(self) -> bool:
        """True when `submit` would not wait for an in-flight slot."""
        return not self._closed and self._slots.value > 0

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, handshake, report started, then read responses until the end. Errors
        before `started` are raised (BrokerUnavailableError, UnsupportedVersionError);
        afterwards they close the connection and fail its pending requests."""
        try:
            await self._connect_and_handshake()
        except BaseException:
            self._closed = True
            self._ended.set()
            if self._stream is not None:
                await trio.aclose_forcefully(self._stream)
            raise
        task_status.started()
        try:
            await self._read_loop()
        finally:
            self._fail(self._close_reason)
            if self._stream is not None:
                with trio.CancelScope(shield=True):
                    await trio.aclose_forcefully(self._stream)
            self._ended.set()

    async def aclose(self) -> None:
        """Close the connection; pending requests fail with BrokerUnavailableError."""
        self._fail("closed by the client")
        if self._stream is not None:
            await trio.aclose_forcefully(self._stream)

    async def _connect_and_handshake(self) -> None:
        where = f"{self.host}:{self.port}"
        try:
            with trio.fail_after(self.connect_timeout_s):
                self._stream = await trio.open_tcp_stream(self.host, self.port)
        except trio.TooSlowError:
            raise BrokerUnavailableError(f"connecting to {where} timed out") from None
        except OSError as e:
            raise BrokerUnavailableError(f"cannot connect to {where}: {_why(e)}") from None
        stream = self._stream
        decoder = self._decoder
        frame = encode_request(
            ApiVersionsRequest(),
            0,
            self.client_id,
            api_version=SUPPORTED_VERSIONS[ApiKey.API_VERSIONS][1],
        )
        try:
            with trio.fail_after(self.connect_timeout_s):
                await stream.send_all(frame)
                payload: bytes | None = None
                while payload is None:
                    data = await stream.receive_some(RECEIVE_BYTES)
                    if not data:
                        raise BrokerUnavailableError(f"{where} closed during the handshake")
                    decoder.receive_data(data)
                    payload = decoder.next_frame()
        except trio.TooSlowError:
            raise BrokerUnavailableError(f"handshake with {where} timed out") from None
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
            raise BrokerUnavailableError(f"handshake with {where} failed: {e}") from None
        except WireError as e:
            raise BrokerUnavailableError(
                f"handshake with {where}: bad frame ({e.message}): is it a Sluice broker's "
                "client port?"
            ) from None
        try:
            env = decode_response(payload, ApiKey.API_VERSIONS, self.limits)
        except WireError as e:
            raise BrokerUnavailableError(f"handshake with {where}: {e.message}") from None
        body = env.body
        if not isinstance(body, ApiVersionsResponse):  # a refusal without the ranges
            raise error_for(env.error, env.message)
        chosen = negotiate(SUPPORTED_VERSIONS, body.versions())
        missing = sorted(k.name for k in SUPPORTED_VERSIONS if k not in chosen)
        if missing:
            raise UnsupportedVersionError(
                f"broker {where} shares no version of {', '.join(missing)} with this client"
            )
        self.versions = chosen
        self.node_id = body.node_id
        self.cluster_id = body.cluster_id
        if decoder.buffered_bytes:
            raise BrokerUnavailableError(f"{where} sent unsolicited data after the handshake")

    async def _read_loop(self) -> None:
        stream = self._stream
        assert stream is not None
        decoder = self._decoder
        pending = self._pending
        try:
            while not self._closed:
                data = await stream.receive_some(RECEIVE_BYTES)
                if not data:
                    self._close_reason = "the broker closed the connection"
                    return
                decoder.receive_data(data)
                while (payload := decoder.next_frame()) is not None:
                    cid = response_correlation_id(payload)
                    if cid is None:
                        self._close_reason = "a response without a readable correlation id"
                        return
                    slot = pending.pop(cid, None)
                    if slot is None:
                        continue  # its waiter gave up (timeout or cancellation)
                    slot.payload = payload
                    self._release(slot)
                    slot.event.set()
                    on_done = slot.on_done
                    if on_done is not None:
                        slot.on_done = None
                        on_done()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
            self._close_reason = f"connection lost: {e}"
        except WireError as e:
            self._close_reason = f"bad frame from the broker: {e.message}"

    def _fail(self, reason: str) -> None:
        """Close for good: every pending request fails (retriable, outcome unknown)."""
        if not self._closed:
            self._closed = True
            self._close_reason = reason
        pending, self._pending = self._pending, {}
        for slot in pending.values():
            slot.error = BrokerUnavailableError(
                f"{self.host}:{self.port}: {self._close_reason} "
                f"(the {slot.api_key.name} request's outcome is unknown)"
            )
            self._release(slot)
            slot.event.set()
        if self._stream is not None and not self._ended.is_set():
            # Wake the reader: it owns the stream and closes it on its way out.
            trio.lowlevel.notify_closing(self._stream.socket)

    def _ensure_open(self) -> None:
        if self._closed:
            raise BrokerUnavailableError(f"{self.address}: {self._close_reason}")

    def _release(self, slot: Pending) -> None:
        if not slot.released:
            slot.released = True
            self._slots.release()

    # -- requests ----------------------------------------------------------------------------

    async def submit(self, request: Request, *, timeout_s: float | None = None) -> Pending:
        """Write `request` (waiting for an in-flight slot first); frames leave in the order
        of submit calls. Raises BrokerUnavailableError if the connection is closed."""
        self._ensure_open()
        await self._slots.acquire()
        try:
            self._ensure_open()
        except BrokerUnavailableError:
            self._slots.release()
            raise
        api_key = request.API_KEY
        cid = next(self._ids)
        if cid > INT32_MAX:
            self._ids = itertools.count(2)
            cid = 1
        timeout = self.request_timeout_s if timeout_s is None else timeout_s
        version = self.versions[api_key]
        slot = Pending(self, cid, api_key, version, trio.current_time() + timeout)
        try:
            frame = encode_request(request, cid, self.client_id, api_version=version)
        except BaseException:
            self._release(slot)
            raise
        self._pending[cid] = slot
        stream = self._stream
        assert stream is not None
        try:
            await self._send_lock.acquire()
        except BaseException:
            # Cancelled while waiting for the lock: nothing was sent.
            self._pending.pop(cid, None)
            self._release(slot)
            raise
        try:
            if not self._closed:
                await stream.send_all(frame)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
            self._fail(f"send failed: {e}")
        except BaseException:
            # Cancelled mid-send: the stream may hold half a frame; nothing can follow it.
            self._fail("a send was interrupted")
            raise
        finally:
            self._send_lock.release()
        return slot

    async def request(self, request: Request, *, timeout_s: float | None = None) -> Response:
        """Submit and wait for the response (see Pending.result)."""
        slot = await self.submit(request, timeout_s=timeout_s)
        return await slot.result()

    async def _wait(self, slot: Pending) -> None:
        try:
            with trio.move_on_at(slot.deadline):
                await slot.event.wait()
        finally:
            if not slot.event.is_set():
                # Timed out or cancelled: stop waiting; its response, if any, is dropped.
                self._pending.pop(slot.correlation_id, None)
                self._release(slot)
        if not slot.event.is_set():
            self._fail(f"{slot.api_key.name} request timed out")
            raise RequestTimedOutError(
                f"{self.address}: no answer to {slot.api_key.name} in time; connection closed"
            )

    def _outcome(self, slot: Pending) -> Response:
        if slot.error is not None:
            raise slot.error
        payload = slot.payload
        assert payload is not None
        try:
            env = decode_response(payload, slot.api_key, self.limits, api_version=slot.api_version)
        except WireError as e:
            # A broker bug, whatever check caught it (a topic name included): one family.
            code = e.code if e.code in _MALFORMED else ErrorCode.INVALID_REQUEST
            raise InvalidRequestError(
                f"malformed {slot.api_key.name} response from {self.address}: {e.message}",
                code=code,
            ) from None
        if env.error is not ErrorCode.NONE:
            raise error_for(env.error, env.message)
        assert env.body is not None
        return env.body
