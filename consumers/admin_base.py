"""What the parts of the Admin share.

`Admin` (consumers/admin.py: topics, cluster description, leaders) is assembled from mixins,
one module each: `GroupAdmin` (consumers/group_admin.py), `RebalanceAdmin`
(consumers/rebalance.py) and `TransactionAdmin` (consumers/txn_admin.py). `AdminBase`
declares what the mixins use of the Admin (its connections, deadlines, coordinator links and
metadata helpers); `Admin` implements each. The helpers below are shared by the Admin's core
and its mixins.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence

from broker.wire.errors import ErrorCode
from broker.wire.group_messages import CoordinatorType
from broker.wire.messages import MetadataResponse, Request, Response, TopicInfo
from consumers.cluster import Cluster, TopicPartition
from consumers.coordinator import CoordinatorLink
from consumers.durations import duration_ms
from consumers.errors import CoordinatorError, SluiceError, UnknownTopicError, error_for

__all__ = [
    "DEFAULT_POLL_MS",
    "UNKNOWN_OUTCOME",
    "AdminBase",
    "call_timeout_ms",
    "group_error",
    "no_partition",
    "poll_seconds",
]

DEFAULT_POLL_MS = 500.0
"""How often the waiting calls ask again (milliseconds)."""

UNKNOWN_OUTCOME = frozenset({ErrorCode.NETWORK_EXCEPTION, ErrorCode.REQUEST_TIMED_OUT})
"""Errors after which the request may or may not have taken effect."""


class AdminBase(ABC):
    """What the Admin's mixins use of the `Admin`, which implements every method here."""

    @property
    @abstractmethod
    def cluster(self) -> Cluster:
        """The connections and metadata of this client (ClientClosedError unless open)."""

    @abstractmethod
    def _deadline(self, timeout_ms: float | None) -> float:
        """The Trio-clock deadline `timeout_ms` milliseconds (None: the client's) from now."""

    @abstractmethod
    def _link(self, key: str, kind: CoordinatorType = CoordinatorType.GROUP) -> CoordinatorLink:
        """The coordinator link of a group id (or transactional id), once the id passed the
        broker's rule (else InvalidGroupIdError or InvalidRequestError, not retried)."""

    @abstractmethod
    async def _metadata(self, topics: tuple[str, ...] | None) -> MetadataResponse:
        """METADATA of `topics` (None: every topic), retried until the client's timeout."""

    @abstractmethod
    async def _offsets(
        self, topic: TopicInfo, timestamp: int, *, committed: bool = False
    ) -> dict[int, int]:
        """partition -> LIST_OFFSETS(`timestamp`) of `topic`, asked of each partition's
        leader (best effort); `committed`: as a read_committed reader sees it."""

    @abstractmethod
    async def _check_partitions(self, tps: Iterable[TopicPartition]) -> None:
        """UnknownTopicError, not retriable, for a topic or partition among `tps` that the
        metadata does not have."""

    @abstractmethod
    async def _ask_every_broker(self, request: Request, what: str) -> dict[int, Response]:
        """broker id -> its answer to `request`, asked of every broker in the metadata (one
        that cannot be reached is skipped; `what` names the request in the error raised
        when none answers)."""


def group_error(link: CoordinatorLink, code: ErrorCode, message: str | None) -> SluiceError:
    """The typed error of a group-level (or per-partition) answer; one that says the
    coordinator moved makes the link find it again."""
    error = error_for(code, message)
    if isinstance(error, CoordinatorError):
        link.coordinator = None
    return error


def no_partition(topic: str, absent: Sequence[int], has: int) -> UnknownTopicError:
    """A partition number out of range: not retriable (the count only changes by an alter).
    `absent`: the partitions asked for that `topic` lacks; `has`: its partition count."""
    which = ",".join(map(str, absent))
    return UnknownTopicError(
        f"topic {topic!r} has no partition {which} (it has {_count(has, 'partition')})",
        retriable=False,
    )


def _count(n: int, noun: str) -> str:
    """ "1 partition", "2 partitions"."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def call_timeout_ms(timeout_ms: float | None, timeout_s: float | None) -> float | None:
    """A call's timeout in milliseconds from either spelling (`timeout_ms` in milliseconds,
    the older `timeout_s` in seconds; None: the client's)."""
    return duration_ms("timeout_ms", timeout_ms, "timeout_s", timeout_s, None)


def poll_seconds(poll_interval_ms: float | None, poll_s: float | None) -> float:
    """A polling interval in seconds from either spelling (`poll_interval_ms` in
    milliseconds, the older `poll_s` in seconds; default DEFAULT_POLL_MS)."""
    ms = duration_ms("poll_interval_ms", poll_interval_ms, "poll_s", poll_s, DEFAULT_POLL_MS)
    assert ms is not None
    return ms / 1000
