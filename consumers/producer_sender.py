"""The sender and metadata tasks of the Producer (`ProducerSender`, a mixin of
`consumers.producer.Producer`).

One sender task (in the producer's nursery) loops: `advance` the core (seal lingered
batches, route records, expire), start an InitProducerId when the core asks for one, then
drain: for each leader of the core's `drain_plan`, while its connection has a free in-flight
slot (`max_in_flight` per connection), write ONE produce request of the batches the core
picks. Requests are written by the sender itself, so they leave in drain order; the
connection's reader hands each answer to the core the moment it reads it (`_response_in`,
no task switch in between), and a task per request watches its deadline and the
connection's failure. A leader without a connection is
connected to in the background; if that fails, its topics' metadata is asked for again.

One metadata task refreshes the topics the core asks for, when the shared refresh policy
(`consumers.core.refresh.MetadataRefresh`) allows: at most once per base backoff, and while
a leader is unknown or unreachable every min(backoff, METADATA_RETRY_MAX_S).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import trio
from opentelemetry.trace import Span

from broker.wire.messages import InitProducerIdRequest, InitProducerIdResponse, ProduceResponse
from consumers.cluster import Cluster
from consumers.connection import Connection, Pending
from consumers.core.accumulator import Batch
from consumers.core.producer import ProducerCore
from consumers.core.refresh import MetadataRefresh
from consumers.delivery import Delivery
from consumers.errors import BrokerUnavailableError, SluiceError
from consumers.tracing import ProducerSpans, end_span, traceparent
from consumers.transaction import TransactionSession

__all__ = ["ProducerSender"]


class ProducerSender:
    """The sender and metadata tasks of the `Producer`, and what they use of it (declared
    here, set by the Producer when it opens)."""

    request_timeout_ms: int
    _cluster: Cluster
    _core: ProducerCore[Delivery]
    _refresh: MetadataRefresh
    _spans: ProducerSpans
    _txn: TransactionSession | None
    _nursery: trio.Nursery
    _now: Callable[[], float]
    _wake: trio.Event
    """Set to wake the sender (a new batch, an answer, fresh metadata)."""
    _want_event: trio.Event
    """Set when the core asks for metadata (the metadata task looks)."""
    _metadata_failure: BrokerUnavailableError | None
    """Why the last metadata refresh failed, when no broker answered it."""

    # -- the sender --------------------------------------------------------------------------

    def _wake_sender(self) -> None:
        """Wake the sender task (it looks at the core again)."""
        self._wake.set()

    def _signal_metadata(self) -> None:
        """The core asked for a topic's metadata: the metadata task looks."""
        self._want_event.set()

    async def _sender(self) -> None:
        """The sender task: advance the core, ask for an identity when it needs one,
        register transaction partitions, drain; then sleep until woken or the core's next
        deadline."""
        core = self._core
        while True:
            self._wake = trio.Event()
            now = trio.current_time()
            core.advance(now)
            request = core.identity_request(now)
            if request is not None:
                self._nursery.start_soon(self._identity, request)
            if self._txn is not None:
                self._txn.register_due(self._nursery)
            await self._drain(now)
            now = trio.current_time()
            deadline = core.next_deadline(now)
            if deadline > now:
                with trio.move_on_at(deadline):
                    await self._wake.wait()
            else:
                await trio.lowlevel.checkpoint()

    async def _identity(self, request: InitProducerIdRequest) -> None:
        """InitProducerId, from any broker (each hands out ids from blocks the metadata log
        allocates): a new id, or a new epoch for the current one."""
        try:
            response = await self._cluster.request_any(request)
        except SluiceError as e:
            self._core.identity_failed(e, trio.current_time())
        else:
            assert isinstance(response, InitProducerIdResponse)
            self._core.identity_answered(response)
        finally:
            self._wake_sender()

    async def _drain(self, now: float) -> None:
        """Write produce requests of the batches the core picks, per leader of its drain
        plan, while the leader's connection has a free in-flight slot (connecting to it in
        the background when it has none); `now` in Trio time."""
        core = self._core
        for leader, tps in core.drain_plan(now).items():
            conn = self._cluster.ready_connection(leader)
            if conn is None:
                topics = {tp[0] for tp in tps}
                self._cluster.start_connecting(
                    leader, on_done=functools.partial(self._connect_done, leader, topics)
                )
                continue
            while conn.has_capacity():
                picked = core.pick(tps, now)
                if not picked:
                    break
                await self._submit(conn, picked)
                if core.fatal is not None:
                    return

    def _connect_done(self, leader: int, topics: set[str]) -> None:
        """A connection attempt to `leader` ended: if it failed, the leader may have moved
        (an election after a crash), so the topics' metadata is asked for again."""
        if self._cluster.ready_connection(leader) is None:
            for topic in topics:
                self._refresh.want(topic)
        self._wake_sender()

    async def _submit(self, conn: Connection, picked: list[Batch]) -> None:
        """Write one produce request of `picked` on `conn`; its answer is handled by
        `_response_in`, its deadline watched by `_await_deadline`."""
        span = self._spans.request_started(picked, conn)
        request = ProducerCore.produce_request(
            picked, self.request_timeout_ms, None if span is None else traceparent(span)
        )
        try:
            pending = await conn.submit(request, timeout_s=self.request_timeout_ms / 1000 + 5.0)
        except SluiceError as e:
            if span is not None:
                end_span(span, e)
            self._core.on_request_error(picked, e, trio.current_time())
            self._answered()
            return
        except BaseException as e:  # cancelled while submitting: the span still ends
            if span is not None:
                end_span(span, e)
            raise
        pending.on_done = functools.partial(self._response_in, pending, picked, span)
        self._nursery.start_soon(self._await_deadline, pending, picked, span)

    def _response_in(self, pending: Pending, picked: list[Batch], span: Span | None) -> None:
        """The answer (or the connection's failure) is in: settle the batches now, in the
        connection's reader (no task switch between the answer and its deliveries)."""
        error: SluiceError | None = None
        try:
            response = pending.outcome()
        except SluiceError as e:
            error = e
            self._core.on_request_error(picked, e, self._now())
        else:
            assert isinstance(response, ProduceResponse)
            self._core.on_response(picked, response, self._now())
        finally:
            if span is not None:
                end_span(span, error)
        self._answered()

    async def _await_deadline(
        self, pending: Pending, picked: list[Batch], span: Span | None
    ) -> None:
        """Wait for the request's end: an answer was handled by `_response_in` already; a
        failed connection or the deadline (the connection is then closed) fails the batches
        here."""
        timed_out = await pending.wait()
        if pending.on_done is None:
            return
        pending.on_done = None
        if timed_out is None:
            self._response_in(pending, picked, span)
            return
        if span is not None:
            end_span(span, timed_out)
        self._core.on_request_error(picked, timed_out, trio.current_time())
        self._answered()

    def _answered(self) -> None:
        """A produce request ended: tell the transaction session, wake the sender."""
        if self._txn is not None:
            self._txn.note_answer()
        self._wake_sender()

    # -- metadata ----------------------------------------------------------------------------

    async def _metadata_task(self) -> None:
        """Refresh the topics the core asks about, when the refresh policy allows (stale
        topics again while records of them are queued)."""
        cluster, core, refresh = self._cluster, self._core, self._refresh
        while True:
            topics = refresh.start(trio.current_time(), core.has_queued)
            if topics is None:
                with trio.move_on_at(refresh.next_at()):
                    await self._want_event.wait()
                self._want_event = trio.Event()
                continue
            try:
                await cluster.refresh(topics)
                ok = True
                self._metadata_failure = None
            except SluiceError as e:
                ok = False
                self._metadata_failure = e if isinstance(e, BrokerUnavailableError) else None
            core.leaders_changed()
            stale = core.stale_topics(topics, cluster.unreachable)
            refresh.finish(trio.current_time(), topics, ok, stale)
            self._wake_sender()
