"""Tracing pieces without processes: which environments turn export on, the traceparent
codec, the producer's per-batch header (reserved against the batch limit, on every record of
a sampled batch only), the consumer's link extraction, and the broker's request span taking
its parent from the request's trace context. Spans go to the SDK's in-memory exporter."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, Sampler
from opentelemetry.trace import SpanKind

import consumers.tracing as client_tracing
from broker.runtime.tracing import BrokerTracing, tracing_configured
from broker.wire.api import ApiKey
from broker.wire.batch import Record, decode_records, encode_batch
from broker.wire.limits import (
    TRACEPARENT_HEADER,
    format_traceparent,
    parse_traceparent,
)
from broker.wire.messages import FetchPartition, FetchRequest, FetchTopic
from broker.wire.protocol import RequestHeader
from consumers.core.accumulator import Accumulator, record_size
from consumers.core.positions import ConsumerRecord
from consumers.tracing import (
    TRACEPARENT_RECORD_BYTES,
    ConsumerSpans,
    ProducerSpans,
    producer_contexts,
)

TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def provider(sampler: Sampler = ALWAYS_ON) -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    p = TracerProvider(sampler=sampler)
    p.add_span_processor(SimpleSpanProcessor(exporter))
    return p, exporter


@pytest.mark.parametrize(
    ("env", "on"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "console,otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, False),
        ({"OTEL_SDK_DISABLED": "false", "OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "console", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"}, False),
    ],
)
def test_export_is_on_only_when_the_environment_asks(env: dict[str, str], on: bool) -> None:
    assert tracing_configured(env) is on


def test_traceparent_round_trip_and_rejects() -> None:
    assert parse_traceparent(TRACE) == (
        0x4BF92F3577B34DA6A3CE929D0E0E4736,
        0x00F067AA0BA902B7,
        1,
    )
    trace_id, span_id, _ = parse_traceparent(TRACE) or (0, 0, 0)
    assert format_traceparent(trace_id, span_id, True) == TRACE
    assert format_traceparent(trace_id, span_id, False).endswith("-00")
    for bad in ("", TRACE.upper(), "ff" + TRACE[2:], TRACE[:-1], "00-" + "0" * 32 + TRACE[35:]):
        assert parse_traceparent(bad) is None


def accumulator(limit: int) -> Accumulator:
    class First:
        def randrange(self, stop: int, /) -> int:
            return 0

    return Accumulator(
        batch_bytes=limit,
        linger_s=1.0,
        delivery_timeout_s=30.0,
        partitioner=lambda key, n: 0,
        rng=First(),
    )


def test_a_sampled_batch_carries_its_send_span_on_every_record_within_the_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    p, exporter = provider()
    monkeypatch.setattr(client_tracing, "active_tracer", lambda: p.get_tracer("t"))
    acc = accumulator(limit=2000)
    spans = ProducerSpans("app-1")
    acc.on_open = spans.batch_opened
    record = Record(value=b"x" * 20, timestamp=1)
    size = record_size(None, record.value, ())
    batches = {id(acc.append(("t", 0), record, size, 0.0)[0]) for _ in range(60)}
    assert len(batches) >= 2  # the header's bytes count against the limit
    for batch in [*acc.ready[("t", 0)], *acc.open.values()]:
        assert batch.header is not None and batch.header[0] == TRACEPARENT_HEADER
        assert batch.header_bytes == TRACEPARENT_RECORD_BYTES
        estimate = sum(record_size(r.key, r.value, (batch.header,)) for r in batch.records)
        assert estimate == len(batch.records) * (size + TRACEPARENT_RECORD_BYTES) <= 2000
        decoded = decode_records(encode_batch(batch.to_encode()))
        assert all(r.headers == (batch.header,) for r in decoded)
        spans.batch_settled(batch)
    sent = exporter.get_finished_spans()
    assert {s.name for s in sent} == {"send t"}
    assert all(s.kind is SpanKind.PRODUCER for s in sent)
    assert all(s.attributes and s.attributes["messaging.client.id"] == "app-1" for s in sent)


def test_a_record_alone_at_the_limit_goes_without_the_header(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The header would push a batch of one record near the limit past it (and past the
    topic's max.message.bytes): that batch carries no header; a record with its own
    traceparent keeps it and gets no second one."""
    p, _ = provider()
    monkeypatch.setattr(client_tracing, "active_tracer", lambda: p.get_tracer("t"))
    acc = accumulator(limit=2000)
    acc.on_open = ProducerSpans(None).batch_opened
    big = 2000 - TRACEPARENT_RECORD_BYTES + 1
    batch, _, _ = acc.append(("t", 0), Record(value=b"v", timestamp=1), big, 0.0)
    assert batch.header is None and batch.header_bytes == 0 and batch.span is not None
    fits = 2000 - TRACEPARENT_RECORD_BYTES
    batch, _, _ = acc.append(("t", 1), Record(value=b"v", timestamp=1), fits, 0.0)
    assert batch.header is not None
    own = Record(value=b"w", headers=((TRACEPARENT_HEADER, TRACE.encode()),), timestamp=1)
    other = ProducerSpans(None)
    acc.on_open = other.batch_opened
    batch, _, _ = acc.append(("t", 2), own, 50, 0.0)
    (encoded,) = batch.to_encode()
    assert encoded.headers == ((TRACEPARENT_HEADER, TRACE.encode()),)


def test_an_unsampled_batch_has_no_header(monkeypatch: pytest.MonkeyPatch) -> None:
    p, exporter = provider(ALWAYS_OFF)
    monkeypatch.setattr(client_tracing, "active_tracer", lambda: p.get_tracer("t"))
    acc = accumulator(limit=2000)
    acc.on_open = ProducerSpans(None).batch_opened
    batch, _, _ = acc.append(("t", 0), Record(value=b"v", timestamp=1), 10, 0.0)
    assert batch.header is None and batch.header_bytes == 0
    assert exporter.get_finished_spans() == ()


def test_without_a_provider_nothing_is_started() -> None:
    acc = accumulator(limit=2000)
    acc.on_open = ProducerSpans(None).batch_opened
    batch, _, _ = acc.append(("t", 0), Record(value=b"v", timestamp=1), 10, 0.0)
    assert batch.span is None and batch.header is None
    assert client_tracing.active_tracer() is None


def consumed(offset: int, headers: tuple[tuple[str, bytes], ...]) -> ConsumerRecord:
    return ConsumerRecord("t", 0, offset, None, b"v", headers, 0)


def test_the_process_span_continues_the_first_producer_and_links_every_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    other = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"
    records = [
        consumed(0, ((TRACEPARENT_HEADER, TRACE.encode()),)),
        consumed(1, ((TRACEPARENT_HEADER, TRACE.encode()),)),
        consumed(2, ((TRACEPARENT_HEADER, b"not a traceparent"),)),
        consumed(3, (("other", b"x"), (TRACEPARENT_HEADER, other.encode()))),
        consumed(4, ()),
    ]
    contexts = producer_contexts(records)
    assert [(c.trace_id, c.span_id) for c in contexts] == [
        (int(TRACE[3:35], 16), int(TRACE[36:52], 16)),
        (int("ab" * 16, 16), int("cd" * 8, 16)),
    ]
    p, exporter = provider()
    monkeypatch.setattr(client_tracing, "active_tracer", lambda: p.get_tracer("t"))
    spans = ConsumerSpans("billing", None)
    spans.polled(records, 0)
    assert spans.processing is not None
    spans.done_processing()
    poll, process = exporter.get_finished_spans()
    assert (poll.name, poll.kind, process.name, process.kind) == (
        "poll t", SpanKind.CLIENT, "process t", SpanKind.CONSUMER,
    )  # fmt: skip
    assert process.parent is not None and process.parent.span_id == contexts[0].span_id
    assert process.context.trace_id == contexts[0].trace_id
    assert [ln.context for ln in process.links] == contexts == [ln.context for ln in poll.links]
    assert process.attributes is not None
    assert process.attributes["messaging.consumer.group.name"] == "billing"
    assert process.attributes["messaging.batch.message_count"] == 5


def test_the_broker_request_span_continues_the_request_trace_context() -> None:
    p, exporter = provider()
    tracing = BrokerTracing(p, node_id=2)
    header = RequestHeader(api_key=ApiKey.FETCH, api_version=2, correlation_id=1, client_id="c")
    request = FetchRequest(
        topics=(FetchTopic(name="t", partitions=(FetchPartition(partition=3, offset=0),)),),
        trace_context=TRACE,
    )
    span = tracing.request_started(header, request)
    assert span is not None
    tracing.request_answered(span, "NONE")
    (done,) = exporter.get_finished_spans()
    assert (done.name, done.kind) == ("fetch t", SpanKind.SERVER)
    assert done.parent is not None and f"{done.parent.span_id:016x}" == TRACE[36:52]
    assert done.attributes is not None
    assert done.attributes["messaging.destination.partition.id"] == "3"
    assert done.attributes["sluice.node_id"] == 2
    untraced = RequestHeader(
        api_key=ApiKey.METADATA, api_version=0, correlation_id=2, client_id=None
    )
    assert tracing.request_started(untraced, request) is None
    assert BrokerTracing(None, 0).request_started(header, request) is None
