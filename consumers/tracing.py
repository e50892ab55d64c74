"""The client's OpenTelemetry spans, named and attributed by the messaging semantic conventions.

The client uses only the OpenTelemetry API and its global tracer provider, as an
instrumentation library does: the program installs an SDK provider (the CLI does it from the
standard `OTEL_*` variables). With none installed, `active_tracer()` is None and nothing here
runs: no span is started, no header added, no record looked at.

Spans, one per batch or request, never one per record:

- `send {topic}` (PRODUCER): one per producer batch, from its first record to its outcome. When
  it is sampled, its W3C traceparent travels in every record of the batch as the
  `traceparent` header (the accumulator reserves the header's bytes, so a traced batch never
  outgrows `batch_bytes`).
- `produce` (CLIENT): one per produce request, a child of its first traced batch's span and
  linked to the others; its traceparent is the request's `trace_context` (PRODUCE v1), which
  the broker's request span continues without decoding a record.
- `fetch {topic}` (CLIENT, operation type receive): one per fetch request, its traceparent in
  the request (FETCH v2).
- `poll {topic}` (CLIENT, receive): a `poll()` that returned records, linked to the send spans
  of the records' producers.
- `process {topic}` (CONSUMER): from `poll()` returning records until the next `poll()`,
  `commit()` or `close()`; its parent is the first record's producer span (so the consumer's
  processing joins the producer's trace) and it is linked to every distinct producer span
  of the batch (at most MAX_LINKS).
- `commit_transaction` / `abort_transaction` (CLIENT): the END_TXN request (v1 carries its
  traceparent, and the coordinator's 3PC phase spans continue it).

`async for record in consumer` hands out one record at a time, so it makes no poll or process
span (that would be one per record); its fetches are traced. Use `poll()` for processing spans.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    NoOpTracerProvider,
    ProxyTracerProvider,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    Tracer,
)

from broker.wire.limits import (
    TRACEPARENT_CHARS,
    TRACEPARENT_HEADER,
    format_traceparent,
    parse_traceparent,
)
from consumers.core.accumulator import Batch, record_size

SYSTEM = "sluice"
MAX_LINKS = 128
"""Links on one span (the SDK's default limit): a batch from more producers links the first."""
INSTRUMENTATION = "sluice.client"

_last: tuple[object, Tracer] | None = None
"""The global provider last seen and its tracer (the global provider is set once)."""


def active_tracer() -> Tracer | None:
    """The client's tracer when a real provider is installed, else None (tracing off)."""
    global _last
    provider = trace.get_tracer_provider()
    if isinstance(provider, (ProxyTracerProvider, NoOpTracerProvider)):
        return None
    if _last is None or _last[0] is not provider:
        _last = (provider, provider.get_tracer(INSTRUMENTATION))
    return _last[1]


def traceparent(span: Span) -> str | None:
    """The span's W3C traceparent, or None when it is not valid (a no-op span)."""
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return None
    return format_traceparent(ctx.trace_id, ctx.span_id, ctx.trace_flags.sampled)


def remote_context(value: str | bytes) -> SpanContext | None:
    """The span context a traceparent names, or None when it is not a valid one."""
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
    parsed = parse_traceparent(text)
    if parsed is None:
        return None
    trace_id, span_id, flags = parsed
    return SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags & 1))


def messaging_attributes(
    operation: str, kind: str | None, topics: Sequence[str], partition: int | None = None
) -> dict[str, Any]:
    """The common attributes: system, operation (its type when the conventions have one),
    and the destination when there is one."""
    attrs: dict[str, Any] = {
        "messaging.system": SYSTEM,
        "messaging.operation.name": operation,
    }
    if kind is not None:
        attrs["messaging.operation.type"] = kind
    if len(topics) == 1:
        attrs["messaging.destination.name"] = topics[0]
        if partition is not None:
            attrs["messaging.destination.partition.id"] = str(partition)
    return attrs


def span_name(operation: str, topics: Sequence[str]) -> str:
    """`{operation} {destination}`, or the operation alone for several destinations."""
    return f"{operation} {topics[0]}" if len(topics) == 1 else operation


def start_child(
    tracer: Tracer,
    name: str,
    kind: SpanKind,
    attributes: dict[str, Any],
    parent: SpanContext | None,
    links: Iterable[SpanContext] = (),
) -> Span:
    """A span whose parent is `parent` (remote or local), or the current context's span."""
    context = None if parent is None else trace.set_span_in_context(NonRecordingSpan(parent))
    return tracer.start_span(
        name,
        context=context,
        kind=kind,
        attributes=attributes,
        links=[Link(c) for c in list(links)[:MAX_LINKS]],
    )


def end_span(span: Span, error: BaseException | str | None = None) -> None:
    """End `span`, with an ERROR status and `error.type` when the operation failed."""
    if error is not None:
        kind = type(error).__name__ if isinstance(error, BaseException) else error
        span.set_attribute("error.type", kind)
        span.set_status(Status(StatusCode.ERROR, str(error)))
    span.end()


def producer_contexts(records: Iterable[Any]) -> list[SpanContext]:
    """The distinct producer span contexts in the records' traceparent headers, in order.
    One pass over the headers; each distinct header value is parsed once."""
    seen: dict[bytes, SpanContext | None] = {}
    out: list[SpanContext] = []
    for r in records:
        for name, value in r.headers:
            if name == TRACEPARENT_HEADER and value not in seen:
                ctx = seen[value] = remote_context(value)
                if ctx is not None:
                    out.append(ctx)
    return out


def server_attributes(address: str) -> dict[str, Any]:
    """`server.address` and `server.port` of a HOST:PORT."""
    host, _, port = address.rpartition(":")
    return {"server.address": host, "server.port": int(port)} if port.isdecimal() else {}


def topics_of(names: Iterable[str]) -> list[str]:
    return sorted(set(names))


_TRACED = ((TRACEPARENT_HEADER, b"0" * TRACEPARENT_CHARS),)
TRACEPARENT_RECORD_BYTES = record_size(None, None, _TRACED) - record_size(None, None, ())
"""What the traceparent header adds to a record's encoded size."""


class ProducerSpans:
    """The producer's spans: `send {topic}` per batch and `produce` per request."""

    def __init__(self, client_id: str | None) -> None:
        self.client_id = client_id

    def batch_opened(self, batch: Batch) -> None:
        """Start the batch's span (the accumulator's `on_open`); a sampled one puts its
        traceparent on every record of the batch."""
        tracer = active_tracer()
        if tracer is None:
            return
        topic, partition = batch.tp
        attrs = messaging_attributes("send", "send", (topic,), partition)
        if self.client_id:
            attrs["messaging.client.id"] = self.client_id
        span = start_child(tracer, f"send {topic}", SpanKind.PRODUCER, attrs, None)
        batch.span = span
        value = traceparent(span)
        if value is not None and span.get_span_context().trace_flags.sampled:
            batch.header = (TRACEPARENT_HEADER, value.encode())
            batch.header_bytes = TRACEPARENT_RECORD_BYTES

    def batch_settled(self, batch: Batch) -> None:
        span = batch.span
        if not isinstance(span, Span):
            return
        span.set_attribute("messaging.batch.message_count", len(batch.records))
        if batch.base_offset >= 0:
            span.set_attribute("sluice.base_offset", batch.base_offset)
        end_span(span, batch.error)

    def request_started(self, batches: Sequence[Batch], conn: Any) -> Span | None:
        """The `produce` span of a request carrying `batches` on `conn` (its `address` is
        read only for a span), when one of them is traced."""
        traced = [b.span for b in batches if isinstance(b.span, Span) and b.span.is_recording()]
        tracer = active_tracer()
        if not traced or tracer is None:
            return None
        topics = topics_of(b.tp[0] for b in batches)
        attrs = messaging_attributes("produce", "send", topics)
        attrs["messaging.batch.message_count"] = sum(len(b.records) for b in batches)
        attrs.update(server_attributes(conn.address))
        contexts = [s.get_span_context() for s in traced]
        return start_child(tracer, "produce", SpanKind.CLIENT, attrs, contexts[0], contexts[1:])


class ConsumerSpans:
    """The consumer's spans: `fetch` per fetch request, `poll` and `process` per batch of
    records `poll()` returned. `processing` is the open `process` span, if any."""

    def __init__(self, group_id: str | None, client_id: str | None) -> None:
        self.group_id = group_id
        self.client_id = client_id
        self.processing: Span | None = None

    def _attrs(self, operation: str, kind: str, topics: Sequence[str]) -> dict[str, Any]:
        attrs = messaging_attributes(operation, kind, topics)
        if self.group_id is not None:
            attrs["messaging.consumer.group.name"] = self.group_id
        if self.client_id:
            attrs["messaging.client.id"] = self.client_id
        return attrs

    def fetch_started(self, topics: Iterable[str], address: str | None) -> Span | None:
        tracer = active_tracer()
        if tracer is None:
            return None
        names = topics_of(topics)
        attrs = self._attrs("fetch", "receive", names)
        if address is not None:
            attrs.update(server_attributes(address))
        return start_child(tracer, span_name("fetch", names), SpanKind.CLIENT, attrs, None)

    def done_processing(self) -> None:
        """The application is back (next poll, commit, close): the process span ends."""
        span, self.processing = self.processing, None
        if span is not None:
            span.end()

    def polled(self, records: Sequence[Any], started_ns: int) -> None:
        """`poll()` returns `records` (it was called at `started_ns`): a `poll` span for the
        call and a `process` span that stays open while the application works on them."""
        self.done_processing()
        tracer = active_tracer()
        if tracer is None or not records:
            return
        names = topics_of(r.topic for r in records)
        producers = producer_contexts(records)
        attrs = self._attrs("poll", "receive", names)
        attrs["messaging.batch.message_count"] = len(records)
        poll = tracer.start_span(
            span_name("poll", names),
            kind=SpanKind.CLIENT,
            attributes=attrs,
            links=[Link(c) for c in producers[:MAX_LINKS]],
            start_time=started_ns,
        )
        poll.end()
        attrs = {**attrs, **messaging_attributes("process", "process", names)}
        parent = producers[0] if producers else None
        self.processing = start_child(
            tracer, span_name("process", names), SpanKind.CONSUMER, attrs, parent, producers
        )


def transaction_span(transactional_id: str, commit: bool) -> Span | None:
    """The span of ending a transaction (its END_TXN request carries the traceparent)."""
    tracer = active_tracer()
    if tracer is None:
        return None
    name = "commit_transaction" if commit else "abort_transaction"
    attrs = messaging_attributes(name, None, ())
    attrs["sluice.transactional_id"] = transactional_id
    return start_child(tracer, name, SpanKind.CLIENT, attrs, None)
