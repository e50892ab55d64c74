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


def coordinator_error(error: ErrorCode) -> ErrorCode:
    """A coordinator's proposal lost to a new leader means the coordinator moved: the
    client finds it again (NOT_COORDINATOR); every other error stands."""
    return ErrorCode.NOT_COORDINATOR if error == ErrorCode.NOT_LEADER_OR_FOLLOWER else error
