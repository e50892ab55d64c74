"""JSON-lines logs: the fields of every line, the traceback of a logged exception, and the
trace and span ids of the span active where the record was made (none outside a span)."""

from __future__ import annotations

import json
import logging
import sys

from opentelemetry.sdk.trace import TracerProvider

from broker.runtime.json_logs import JsonLogFormatter


def record(msg: str, exc: bool = False) -> logging.LogRecord:
    logger = logging.getLogger("sluice.test")
    if not exc:
        return logger.makeRecord(logger.name, logging.WARNING, __file__, 1, msg, (), None)
    try:
        raise ValueError("boom")
    except ValueError:
        return logger.makeRecord(logger.name, logging.ERROR, __file__, 1, msg, (), sys.exc_info())


def test_a_line_has_its_fields_and_no_trace_outside_a_span() -> None:
    line = json.loads(JsonLogFormatter().format(record("hello %s")))
    assert line["level"] == "warning" and line["logger"] == "sluice.test"
    assert line["msg"] == "hello %s" and isinstance(line["ts"], float)
    assert "trace_id" not in line and "span_id" not in line and "exc" not in line


def test_a_logged_exception_keeps_its_traceback() -> None:
    line = json.loads(JsonLogFormatter().format(record("failed", exc=True)))
    assert line["level"] == "error"
    assert "Traceback" in line["exc"] and "ValueError: boom" in line["exc"]


def test_a_line_made_inside_a_span_names_the_trace_and_the_span() -> None:
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("work") as span:
        line = json.loads(JsonLogFormatter().format(record("inside")))
        context = span.get_span_context()
    assert line["trace_id"] == format(context.trace_id, "032x") and len(line["trace_id"]) == 32
    assert line["span_id"] == format(context.span_id, "016x") and len(line["span_id"]) == 16
