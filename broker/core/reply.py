"""Reply: a response to one client request, as the request handlers build it."""

from __future__ import annotations

from dataclasses import dataclass

from broker.wire.errors import ErrorCode
from broker.wire.messages import Response


@dataclass(frozen=True, slots=True)
class Reply:
    correlation_id: int
    error: ErrorCode
    message: str | None
    body: Response | None
