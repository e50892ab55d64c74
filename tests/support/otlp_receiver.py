"""A real OTLP/HTTP receiver for tests, decoding with `opentelemetry-proto`: POST /v1/traces
bodies (protobuf, or JSON when the content type says so) become `ReceivedSpan`s; POST
/v1/metrics bodies are kept decoded, with the request's headers (names in lower case).

It runs `http.server` in a thread of the test process, on 127.0.0.1 and a free port; brokers
and clients in other processes export to `endpoint` through the standard variables (`env()`).
The path of every POST is kept; other paths answer 404; a body that does not decode answers
400 and is counted."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

KINDS = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}


def _value(v: AnyValue) -> Any:
    which = v.WhichOneof("value")
    return None if which is None else getattr(v, which)


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]
    events: tuple[tuple[str, dict[str, Any]], ...]
    links: tuple[tuple[str, str], ...]
    """(trace id, span id) of each linked span."""
    status: int
    start_ns: int


@dataclass
class OtlpReceiver:
    spans: list[ReceivedSpan] = field(default_factory=list)
    metric_posts: list[tuple[dict[str, str], ExportMetricsServiceRequest]] = field(
        default_factory=list
    )
    paths: list[str] = field(default_factory=list)
    bad_bodies: int = 0
    exports: int = 0
    port: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, service: str) -> dict[str, str]:
        """What a process needs to export every span here, quickly, as `service`."""
        return {
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.endpoint,
            "OTEL_SERVICE_NAME": service,
            "OTEL_TRACES_SAMPLER": "parentbased_always_on",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        }

    def snapshot(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self.spans)

    def received(self) -> list[tuple[dict[str, str], ExportMetricsServiceRequest]]:
        """The metrics exports so far: (headers, decoded request)."""
        with self._lock:
            return list(self.metric_posts)

    def accept_metrics(self, body: bytes, headers: dict[str, str]) -> None:
        request = ExportMetricsServiceRequest.FromString(body)
        with self._lock:
            self.metric_posts.append((headers, request))

    def accept(self, body: bytes, content_type: str) -> None:
        request = ExportTraceServiceRequest()
        if content_type.startswith("application/json"):
            json_format.Parse(body, request)
        else:
            request.ParseFromString(body)
        received: list[ReceivedSpan] = []
        for rs in request.resource_spans:
            resource = {a.key: _value(a.value) for a in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    received.append(
                        ReceivedSpan(
                            service=str(resource.get("service.name", "")),
                            name=s.name,
                            kind=KINDS.get(s.kind, str(s.kind)),
                            trace_id=s.trace_id.hex(),
                            span_id=s.span_id.hex(),
                            parent_id=s.parent_span_id.hex(),
                            attributes={a.key: _value(a.value) for a in s.attributes},
                            events=tuple(
                                (e.name, {a.key: _value(a.value) for a in e.attributes})
                                for e in s.events
                            ),
                            links=tuple((ln.trace_id.hex(), ln.span_id.hex()) for ln in s.links),
                            status=s.status.code,
                            start_ns=s.start_time_unix_nano,
                        )
                    )
        with self._lock:
            self.spans.extend(received)
            self.exports += 1


@contextmanager
def otlp_receiver() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            with receiver._lock:
                receiver.paths.append(self.path)
            if self.path not in ("/v1/traces", "/v1/metrics"):
                self.send_error(404)
                return
            try:
                if self.path == "/v1/metrics":
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    receiver.accept_metrics(body, headers)
                    answer = ExportMetricsServiceResponse().SerializeToString()
                else:
                    receiver.accept(body, self.headers.get("Content-Type", ""))
                    answer = ExportTraceServiceResponse().SerializeToString()
            except Exception:
                with receiver._lock:
                    receiver.bad_bodies += 1
                self.send_error(400)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: the test asserts on what arrived

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, name="otlp-receiver", daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
