"""Tracing: an OpenTelemetry SDK provider from the standard environment, and the broker's spans.

`provider_from_env` builds a TracerProvider exporting OTLP over HTTP in batches (a background
thread of the SDK, never the Trio loop) when the environment asks for export: OTEL_TRACES_EXPORTER
lists `otlp`, or it is unset and OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
is set; never with OTEL_SDK_DISABLED=true. The SDK itself reads the rest:
OTEL_TRACES_SAMPLER and its argument (default parent-based always-on), the endpoint, headers,
timeout and compression, OTEL_BSP_* for batching, OTEL_SERVICE_NAME and
OTEL_RESOURCE_ATTRIBUTES. Otherwise there is no provider and no `BrokerTracing` (the driver's
`tracing` is None): no span is ever started, one attribute test per request.

The broker's spans (for PRODUCE, FETCH and END_TXN, the requests of the data path):
- the request, kind SERVER, `{operation} {topic}` (`produce orders`, `fetch orders`,
  `end_txn`), a child of the request's `trace_context` (the client's request span) when it
  carries one, from the frame's arrival to its answer;
- for a produce, per partition written, `raft replicate` (INTERNAL), a child of the request's
  span, from the proposal to the commit of the entry holding the batch, with events
  `persisted` (this leader's synced write), `replicated` (per follower whose match index
  reached the entry, attribute `sluice.broker.id`) and `committed`;
- for an END_TXN, one span per 3PC phase the coordinator drives the transaction through
  (`txn prepare`, `txn precommit`, `txn commit`, `txn abort`), children of the request's span
  and outliving it (the answer comes once the decision is durable; the phases after it run
  on). They are followed after each driver round, for the requests that are sampled only.
Bounded: at most MAX_FOLLOWED spans followed at once (more are started and ended unfollowed)
and none longer than FOLLOW_LIMIT_S.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    Tracer,
)

from broker.core.host import HostedGroup
from broker.core.ids import node_of
from broker.core.node import BrokerNode
from broker.wire.api import ApiKey
from broker.wire.batch import data_record_count
from broker.wire.limits import parse_traceparent
from broker.wire.messages import FetchRequest, ProduceRequest
from broker.wire.protocol import RequestHeader
from broker.wire.txn_messages import EndTxnRequest

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

SYSTEM = "sluice"
MAX_FOLLOWED = 1024
FOLLOW_LIMIT_S = 60.0
TRACED_APIS = frozenset({ApiKey.PRODUCE, ApiKey.FETCH, ApiKey.END_TXN})


def tracing_configured(env: Mapping[str, str] = os.environ) -> bool:
    """Whether the standard OpenTelemetry variables ask for trace export (see the module)."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    listed = env.get("OTEL_TRACES_EXPORTER", "").strip()
    if listed:
        return "otlp" in {e.strip().lower() for e in listed.split(",")}
    return bool(
        env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


def provider_from_env(
    service: str, attributes: Mapping[str, Any] | None = None
) -> TracerProvider | None:
    """A provider exporting OTLP/HTTP as the environment says, or None (tracing off).
    `service` is the service name unless OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES name
    one."""
    if not tracing_configured():
        return None
    # Imported here: a broker or CLI without tracing never loads the SDK and exporter.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    attrs = dict(attributes or {})
    named = os.environ.get("OTEL_SERVICE_NAME") or "service.name=" in os.environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    )
    if not named:
        attrs["service.name"] = service
    provider = TracerProvider(resource=Resource.create(attrs))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


def install_global_provider(service: str) -> TracerProvider | None:
    """For client programs (the CLI): the provider from the environment, installed as the
    global one the client library's spans use; None when tracing is off."""
    provider = provider_from_env(service)
    if provider is not None:
        trace.set_tracer_provider(provider)
    return provider


def _parent(trace_context: str | None) -> Any:
    """The context whose span is the request's remote parent (None: a new trace)."""
    parsed = None if trace_context is None else parse_traceparent(trace_context)
    if parsed is None:
        return None
    trace_id, span_id, flags = parsed
    remote = SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags & 1))
    return trace.set_span_in_context(NonRecordingSpan(remote))


def _request_attributes(
    header: RequestHeader, request: object
) -> tuple[str, dict[str, Any], str | None]:
    """(span name, attributes, trace context) of a traced request."""
    attrs: dict[str, Any] = {"messaging.system": SYSTEM}
    if header.client_id:
        attrs["messaging.client.id"] = header.client_id
    topics: list[str] = []
    partitions: list[int] = []
    if isinstance(request, ProduceRequest):
        operation, kind = "produce", "send"
        topics = [t.name for t in request.topics]
        partitions = [p.partition for t in request.topics for p in t.partitions]
        attrs["messaging.batch.message_count"] = sum(
            data_record_count(p.batch) for t in request.topics for p in t.partitions
        )
        if request.transactional_id is not None:
            attrs["sluice.transactional_id"] = request.transactional_id
    elif isinstance(request, FetchRequest):
        operation, kind = "fetch", "receive"
        topics = [t.name for t in request.topics]
        partitions = [p.partition for t in request.topics for p in t.partitions]
    else:
        assert isinstance(request, EndTxnRequest)
        operation, kind = "end_txn", "settle"
        attrs["sluice.transactional_id"] = request.transactional_id
        attrs["sluice.txn.commit"] = request.commit
    attrs["messaging.operation.name"] = operation
    attrs["messaging.operation.type"] = kind
    name = operation
    if len(topics) == 1:
        name = f"{operation} {topics[0]}"
        attrs["messaging.destination.name"] = topics[0]
        if len(partitions) == 1:
            attrs["messaging.destination.partition.id"] = str(partitions[0])
    return name, attrs, getattr(request, "trace_context", None)


@dataclass(eq=False, slots=True)
class _Replicating:
    span: Span
    group_id: int
    index: int
    term: int
    since: float
    persisted: bool = False
    seen: set[int] = field(default_factory=set)


@dataclass(eq=False, slots=True)
class _Ending:
    """An END_TXN being followed through its coordinator's phases: the transaction of
    `epoch` (the request's producer epoch) only, and once (a retried END_TXN of the same
    transaction is not followed again)."""

    parent: Span
    txn_id: str
    epoch: int
    since: float
    phase: str | None = None
    span: Span | None = None


class BrokerTracing:
    """The broker's spans (see the module)."""

    def __init__(self, provider: TracerProvider | None, node_id: int) -> None:
        self.provider = provider
        self.node_id = node_id
        self.tracer: Tracer | None = (
            None if provider is None else provider.get_tracer("sluice.broker")
        )
        self._replicating: list[_Replicating] = []
        self._ending: list[_Ending] = []

    def request_started(self, header: RequestHeader, request: object) -> Span | None:
        """The SERVER span of a request just read, or None (untraced API, not sampled)."""
        tracer = self.tracer
        if tracer is None or header.api_key not in TRACED_APIS:
            return None
        name, attrs, trace_context = _request_attributes(header, request)
        attrs["sluice.node_id"] = self.node_id
        span = tracer.start_span(
            name, context=_parent(trace_context), kind=SpanKind.SERVER, attributes=attrs
        )
        return span if span.is_recording() else None

    @staticmethod
    def request_answered(span: Span, error: str) -> None:
        span.set_attribute("sluice.error_code", error)
        if error != "NONE":
            span.set_attribute("error.type", error)
            span.set_status(Status(StatusCode.ERROR, error))
        span.end()

    # -- following a request after it started -------------------------------------------------

    def started(self, span: Span, token: int, request: object, node: BrokerNode) -> None:
        """A traced request was handed to the node: follow its Raft entries (a produce) or
        its transaction's phases (an END_TXN)."""
        tracer = self.tracer
        if tracer is None:
            return
        now = time.monotonic()
        if isinstance(request, EndTxnRequest):
            followed = (request.transactional_id, request.producer_epoch)
            if len(self._ending) < MAX_FOLLOWED and all(
                (e.txn_id, e.epoch) != followed for e in self._ending
            ):
                self._ending.append(
                    _Ending(span, request.transactional_id, request.producer_epoch, now)
                )
            return
        if not isinstance(request, ProduceRequest):
            return
        ctx = trace.set_span_in_context(span)
        for t in request.topics:
            for p in t.partitions:
                g = node.by_partition.get((t.name, p.partition))
                index = None if g is None else _waiting_index(g, token)
                if g is None or index is None or len(self._replicating) >= MAX_FOLLOWED:
                    continue
                child = tracer.start_span(
                    "raft replicate",
                    context=ctx,
                    kind=SpanKind.INTERNAL,
                    attributes={
                        "messaging.system": SYSTEM,
                        "messaging.destination.name": t.name,
                        "messaging.destination.partition.id": str(p.partition),
                        "sluice.raft.group": g.id,
                        "sluice.raft.index": index,
                        "sluice.raft.term": g.raft.term,
                    },
                )
                self._replicating.append(_Replicating(child, g.id, index, g.raft.term, now))

    def after_round(self, node: BrokerNode) -> None:
        """A driver round ended (its write is durable): events and ends of followed spans."""
        if self._replicating:
            self._replicating = [r for r in self._replicating if self._follow_raft(r, node)]
        if self._ending:
            self._ending = [e for e in self._ending if self._follow_txn(e, node)]

    def _follow_raft(self, r: _Replicating, node: BrokerNode) -> bool:
        """Whether `r` is still followed after this round."""
        g = node.host.groups.get(r.group_id)
        span = r.span
        if g is None or g.raft.term != r.term or not g.raft.is_leader:
            span.set_status(Status(StatusCode.ERROR, "leadership lost before commit"))
            span.end()
            return False
        if not r.persisted:
            r.persisted = True
            span.add_event("persisted")
        for member, progress in g.raft.progress.items():
            who = node_of(member)
            fresh = who is not None and who != self.node_id and who not in r.seen
            if fresh and progress.match >= r.index:
                assert who is not None
                r.seen.add(who)
                span.add_event("replicated", {"sluice.broker.id": who})
        if g.raft.commit_index >= r.index:
            span.add_event("committed")
            span.end()
            return False
        if time.monotonic() - r.since > FOLLOW_LIMIT_S:
            span.end()
            return False
        return True

    def _follow_txn(self, e: _Ending, node: BrokerNode) -> bool:
        """Whether `e` is still followed: a span per phase the coordinator drives its
        transaction (its epoch) through, until it is past the last one. A round in which
        this broker cannot tell (catching up, leadership moving) changes nothing."""
        tracer = self.tracer
        assert tracer is not None
        seen = node.txn_service.phase(e.txn_id)
        if seen is None:
            return self._within_limit(e)
        phase, epoch = seen
        if epoch == e.epoch and phase == e.phase:
            return self._within_limit(e)
        if e.span is not None:
            e.span.end()
            e.span = None
        if e.phase == "precommit" and phase != "commit":
            # A pre-committed transaction can only commit: its commit phase began and ended
            # between two rounds this broker looked in (acknowledgements and the commit
            # entry handled in one pass). Record it, marked as seen only once it was over.
            late = tracer.start_span(
                "txn commit",
                context=trace.set_span_in_context(e.parent),
                kind=SpanKind.INTERNAL,
                attributes={
                    "messaging.system": SYSTEM,
                    "sluice.transactional_id": e.txn_id,
                    "sluice.txn.epoch": e.epoch,
                    "sluice.txn.seen_after_end": True,
                },
            )
            late.end()
            e.phase = "commit"
        if epoch != e.epoch or phase is None:
            # Past its transaction (the epoch moved on at completion), or never reached a
            # phase here while the transaction was still ongoing: wait, within the limit.
            return epoch <= e.epoch and e.phase is None and self._within_limit(e)
        e.phase = phase
        e.span = tracer.start_span(
            f"txn {phase}",
            context=trace.set_span_in_context(e.parent),
            kind=SpanKind.INTERNAL,
            attributes={
                "messaging.system": SYSTEM,
                "sluice.transactional_id": e.txn_id,
                "sluice.txn.epoch": epoch,
            },
        )
        return self._within_limit(e)

    @staticmethod
    def _within_limit(e: _Ending) -> bool:
        if time.monotonic() - e.since <= FOLLOW_LIMIT_S:
            return True
        if e.span is not None:
            e.span.end()
        return False

    def shutdown(self) -> None:
        """End what is followed and flush the exporter."""
        for r in self._replicating:
            r.span.end()
        for e in self._ending:
            if e.span is not None:
                e.span.end()
        self._replicating.clear()
        self._ending.clear()
        if self.provider is not None:
            self.provider.shutdown()


def _waiting_index(g: HostedGroup, token: int) -> int | None:
    """The log index of the entry `token` waits on in group `g`, if any."""
    for index, waiter in g.waiters.items():
        if waiter.token == token:
            return index
    return None
