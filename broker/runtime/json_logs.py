"""JSON-lines logs: one object per record, with the exception's traceback when there is one and
the trace and span ids of the OpenTelemetry span active where the record was made (so a log
line can be found from a trace and the other way round).

Fields: `ts` (seconds since the epoch), `level`, `logger`, `msg`; `exc` (the formatted
traceback) when the record carries an exception; `trace_id` and `span_id` (lowercase hex, W3C
widths 32 and 16) while a valid span is current."""

from __future__ import annotations

import json
import logging

from opentelemetry import trace


class JsonLogFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": record.created,
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            line["trace_id"] = format(context.trace_id, "032x")
            line["span_id"] = format(context.span_id, "016x")
        return json.dumps(line)
