"""TransactionSession: a transactional producer's side of the three-phase commit.

Theory of operation
-------------------
The coordinator of a transactional id is the leader of one partition of
`__transaction_state` (`CoordinatorLink` finds it). At open, `init` asks it for the producer
id and epoch (InitProducerId): that fences every older producer of the same id and drives
whatever transaction the previous incarnation left open to its end. Every transaction then
runs under its own epoch: ending one (EndTxn) hands out the next, so sequences restart at 0.

One transaction at a time, `begin` -> records and offsets -> `commit` or `abort`:

- Records go through the producer's core, which sends to a partition only once the
  coordinator registered it (`ProducerCore.registered`). The producer's sender calls
  `register_due`, which sends an AddPartitionsToTxn for the partitions holding records that
  are neither registered nor being registered (several may be in flight: a partition's
  registration never waits for another's). Each is answered once its new participants
  logged BEGIN.
- `send_offsets(offsets, group)`: AddOffsetsToTxn (once per group and transaction) makes the
  group's coordinator a participant; TxnOffsetCommit then stages the offsets there, visible
  only when the transaction commits.
- `commit`: flush; if any record of the transaction failed (`ProducerCore.txn_error`), the
  transaction is aborted instead and TransactionAbortedError raised. Otherwise EndTxn(commit)
  with the last sequence written to each partition (a participant votes yes only when it holds
  exactly that). The answer comes once the transaction completed: committed everywhere, or
  aborted (a no vote: TransactionAbortedError). Retries of EndTxn after a failover are answered
  the same (the coordinator keeps the last outcome per id).
- `abort`: records not yet sent fail, batches on the wire are waited for (their sequences
  must be resolved before the next epoch), then EndTxn(abort).

Fatal (the producer fails everything and must be closed): fenced by a newer producer
(PRODUCER_FENCED, INVALID_PRODUCER_EPOCH, a producer id mapping that moved), the transaction
aborted by its timeout or by an operator (the coordinator fenced this producer; a new Producer
with the same transactional id goes on), or an EndTxn whose outcome stayed unknown past the
operation timeout (a new Producer with the same id resolves it: InitProducerId finishes it).
Coordinator operations are retried on retriable errors until `op_timeout_s`.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import trio

from broker.wire.errors import ErrorCode
from broker.wire.group_messages import CommitPartition, CommitTopic, CoordinatorType
from broker.wire.messages import InitProducerIdRequest, InitProducerIdResponse, Response
from broker.wire.producer import EPOCH_MAX
from broker.wire.txn_messages import (
    AddOffsetsToTxnRequest,
    AddPartitionsToTxnRequest,
    EndTxnRequest,
    EndTxnResponse,
    TxnOffsetCommitRequest,
    TxnOffsetCommitResponse,
    TxnSequence,
    TxnTopic,
)
from consumers.cluster import Cluster, TopicPartition
from consumers.coordinator import CoordinatorLink
from consumers.core.group_member import GroupMetadata
from consumers.core.producer import ProducerCore
from consumers.errors import (
    InvalidTxnStateError,
    ProducerFencedError,
    RequestTimedOutError,
    SluiceError,
    TransactionAbortedError,
    TransactionalProducerFencedError,
    error_for,
)
from consumers.tracing import end_span, traceparent, transaction_span

__all__ = ["GroupMetadata", "TransactionSession"]

_FATAL = frozenset(
    {
        ErrorCode.PRODUCER_FENCED,
        ErrorCode.INVALID_PRODUCER_EPOCH,
        ErrorCode.INVALID_PRODUCER_ID_MAPPING,
        ErrorCode.TRANSACTIONAL_ID_NOT_FOUND,
        ErrorCode.TRANSACTION_TIMED_OUT,
    }
)
"""Coordinator answers after which this producer cannot go on."""


class TransactionSession:
    """The transactions of one transactional producer (see the module docstring)."""

    def __init__(
        self,
        *,
        cluster: Cluster,
        core: ProducerCore[Any],
        transactional_id: str,
        transaction_timeout_ms: int,
        op_timeout_s: float,
        wake: Callable[[], None],
    ) -> None:
        """The session of the producer that owns `cluster` and `core`: `transactional_id`
        names it at its coordinator, `transaction_timeout_ms` (milliseconds) is how long the
        coordinator lets a transaction stay open, `op_timeout_s` (seconds) bounds the
        retries of each coordinator operation, and `wake()` wakes the producer's sender."""
        self.cluster = cluster
        self.core = core
        self.transactional_id = transactional_id
        self.transaction_timeout_ms = transaction_timeout_ms
        self.op_timeout_s = op_timeout_s
        self._wake = wake
        self.link = CoordinatorLink(cluster, transactional_id, CoordinatorType.TRANSACTION)
        self._group_links: dict[str, CoordinatorLink] = {}
        self.open = False
        """Between `begin` and the end of `commit`/`abort`."""
        self.ending = False
        """A commit or abort is under way: nothing new may join the transaction."""
        self.touched = False
        """The coordinator heard of this transaction (a registration or offsets were sent)."""
        self.groups: set[str] = set()
        self._registering: set[TopicPartition] = set()
        """Partitions in an AddPartitionsToTxn that has not ended yet."""
        self._register_scopes: set[trio.CancelScope] = set()
        self._registered_event = trio.Event()
        self._answered = trio.Event()

    # -- identity ----------------------------------------------------------------------------

    async def init(self) -> None:
        """InitProducerId at the coordinator: the producer id and a new epoch."""
        request = InitProducerIdRequest(
            transactional_id=self.transactional_id,
            transaction_timeout_ms=self.transaction_timeout_ms,
        )
        answer = await self._retry(lambda: self.link.request(request))
        assert isinstance(answer, InitProducerIdResponse)
        self.core.identity_answered(answer)

    def _identity(self) -> tuple[int, int]:
        seq = self.core.sequences
        if seq is None:
            raise InvalidTxnStateError("the producer has no transactional identity yet")
        return seq.producer_id, seq.producer_epoch

    # -- the transaction ---------------------------------------------------------------------

    def check_can_send(self) -> None:
        """Raise unless records may join the current transaction now."""
        if self.core.fatal is not None:
            return  # the producer's own check raises it
        if not self.open or self.ending:
            raise InvalidTxnStateError(
                "a transactional producer sends inside `async with producer.transaction()`"
            )
        if self.core.txn_error is not None:
            raise TransactionAbortedError(
                f"the transaction failed and must abort: {self.core.txn_error}"
            )

    def begin(self) -> None:
        """Open a transaction: InvalidTxnStateError if one is open (or there is no identity
        yet), the fatal error if the producer cannot go on."""
        if self.core.fatal is not None:
            raise _copy(self.core.fatal)
        if self.open:
            raise InvalidTxnStateError("a transaction is already open on this producer")
        self._identity()
        self.open, self.ending, self.touched = True, False, False
        self.groups.clear()
        self.core.new_transaction()

    def register_due(self, nursery: trio.Nursery) -> None:
        """Called by the sender: start registering partitions that hold records, if due."""
        if not self.open or self.core.txn_error is not None:
            return
        wanted = frozenset(self.core.unregistered() - self._registering)
        if wanted:
            self._registering |= wanted
            self.touched = True
            nursery.start_soon(self._register, wanted)

    async def _register(self, tps: frozenset[TopicPartition]) -> None:
        pid, epoch = self._identity()
        by_topic: dict[str, list[int]] = {}
        for topic, partition in sorted(tps):
            by_topic.setdefault(topic, []).append(partition)
        request = AddPartitionsToTxnRequest(
            transactional_id=self.transactional_id,
            producer_id=pid,
            producer_epoch=epoch,
            topics=tuple(TxnTopic(name=t, partitions=tuple(p)) for t, p in by_topic.items()),
        )
        scope = trio.CancelScope()
        self._register_scopes.add(scope)
        try:
            with scope:
                await self._retry(lambda: self.link.request(request))
                if self.core.sequences is not None and self.core.sequences.producer_epoch == epoch:
                    self.core.registered.update(tps)
        except SluiceError as e:
            self._failed(e)
        finally:
            self._register_scopes.discard(scope)
            self._registering -= tps
            self._registered_event.set()
            self._registered_event = trio.Event()
            self._wake()

    async def send_offsets(
        self, offsets: Mapping[TopicPartition, int], group: GroupMetadata
    ) -> None:
        """Stage the consumer offsets `offsets` of `group` in the transaction."""
        self.check_can_send()
        if not offsets:
            await trio.lowlevel.checkpoint()
            return
        pid, epoch = self._identity()
        try:
            if group.group_id not in self.groups:
                self.touched = True
                add = AddOffsetsToTxnRequest(
                    transactional_id=self.transactional_id,
                    producer_id=pid,
                    producer_epoch=epoch,
                    group_id=group.group_id,
                )
                await self._retry(lambda: self.link.request(add))
                self.groups.add(group.group_id)
            link = self._group_links.get(group.group_id)
            if link is None:
                link = self._group_links[group.group_id] = CoordinatorLink(
                    self.cluster, group.group_id
                )
            by_topic: dict[str, list[CommitPartition]] = {}
            for (topic, partition), offset in sorted(offsets.items()):
                by_topic.setdefault(topic, []).append(
                    CommitPartition(partition=partition, offset=offset)
                )
            request = TxnOffsetCommitRequest(
                transactional_id=self.transactional_id,
                group_id=group.group_id,
                producer_id=pid,
                producer_epoch=epoch,
                member_id=group.member_id,
                member_epoch=group.member_epoch,
                topics=tuple(
                    CommitTopic(topic=t, partitions=tuple(p)) for t, p in by_topic.items()
                ),
            )
            await self._retry(lambda: _stage(link, request))
        except SluiceError as e:
            self._failed(e)
            raise

    async def commit(self, flush: Callable[[], Awaitable[None]]) -> None:
        """Flush, then commit the transaction (or abort it when a record of it failed)."""
        self._check_open()
        self.ending = True
        try:
            failure: SluiceError | None = None
            try:
                await flush()
            except SluiceError as e:
                failure = e
            self._raise_fatal()
            cause = self.core.txn_error or failure
            if cause is not None:
                failed = TransactionAbortedError("a record of it failed")
                self.core.abort_unsent(failed, trio.current_time())
                await self._end(commit=False)
                raise TransactionAbortedError(
                    f"the transaction was aborted: a record of it failed: {cause}"
                ) from cause
            await self._end(commit=True)
        finally:
            self.open = self.ending = False

    async def abort(self) -> None:
        """Abort the transaction: nothing of it becomes visible to read_committed readers."""
        self._check_open()
        self.ending = True
        try:
            for scope in self._register_scopes:
                scope.cancel()
            while self._registering:
                await self._registered_event.wait()
            aborted = TransactionAbortedError("the transaction was aborted")
            self.core.abort_unsent(aborted, trio.current_time())
            if self.core.fatal is None:
                await self._end(commit=False)
        finally:
            self.open = self.ending = False

    def _check_open(self) -> None:
        self._raise_fatal()
        if not self.open or self.ending:
            raise InvalidTxnStateError("no transaction is open (or it is ending already)")

    def _raise_fatal(self) -> None:
        if self.core.fatal is not None:
            raise _copy(self.core.fatal)

    # -- ending ------------------------------------------------------------------------------

    def note_answer(self) -> None:
        """A produce answer arrived (the sender calls this): `_end` may be waiting for the
        wire to be idle."""
        self._answered.set()
        self._answered = trio.Event()

    async def _wire_idle(self) -> None:
        """Wait until no batch of this epoch is on the wire (bounded by the op timeout)."""
        with trio.move_on_after(self.op_timeout_s) as scope:
            while self.core.on_the_wire():
                await self._answered.wait()
        if scope.cancelled_caught:
            self._go_fatal(RequestTimedOutError("produce answers never came: closing"))
            self._raise_fatal()

    async def _end(self, *, commit: bool) -> None:
        await self._wire_idle()
        if not self.touched:
            return  # the coordinator never heard of it: the epoch stays
        span = transaction_span(self.transactional_id, commit)
        try:
            await self._end_traced(commit, None if span is None else traceparent(span))
        except BaseException as e:
            if span is not None:
                end_span(span, e)
            raise
        if span is not None:
            end_span(span)

    async def _end_traced(self, commit: bool, trace_context: str | None) -> None:
        pid, epoch = self._identity()
        sequences = self.core.last_sequences() if commit else {}
        request = EndTxnRequest(
            transactional_id=self.transactional_id,
            producer_id=pid,
            producer_epoch=epoch,
            commit=commit,
            sequences=tuple(
                TxnSequence(topic=t, partition=p, last_sequence=s)
                for (t, p), s in sorted(sequences.items())
            ),
            trace_context=trace_context,
        )
        try:
            answer = await self._retry(lambda: self.link.request(request))
        except TransactionAbortedError as e:
            if not commit:
                self._go_fatal(e)
                raise
            # A participant voted no (or an operator aborted it): it is over. Asking to abort
            # the same epoch is answered with the next one.
            again = EndTxnRequest(
                transactional_id=self.transactional_id,
                producer_id=pid,
                producer_epoch=epoch,
                commit=False,
                sequences=(),
            )
            try:
                answer = await self._retry(lambda: self.link.request(again))
            except SluiceError as e2:
                self._go_fatal(e2)
                raise e2 from e
            assert isinstance(answer, EndTxnResponse)
            await self._adopt(answer)
            raise
        except SluiceError as e:
            if e.retriable or isinstance(e, RequestTimedOutError):
                e = RequestTimedOutError(
                    f"the outcome of the transaction is unknown ({e}); a new producer with "
                    f"transactional id {self.transactional_id!r} finishes it"
                )
            self._go_fatal(e)
            raise e from None
        assert isinstance(answer, EndTxnResponse)
        await self._adopt(answer)

    async def _adopt(self, answer: EndTxnResponse) -> None:
        """The epoch the ended transaction handed out (or a new identity when asked)."""
        if answer.reinit:
            if answer.producer_epoch < EPOCH_MAX - 1:
                self._go_fatal(
                    TransactionalProducerFencedError(
                        "the coordinator aborted the transaction (its timeout or an operator) "
                        "and fenced this producer: open a new one"
                    )
                )
                return
            await self.init()
            return
        self.core.identity_answered(
            InitProducerIdResponse(
                producer_id=answer.producer_id, producer_epoch=answer.producer_epoch
            )
        )

    # -- errors ------------------------------------------------------------------------------

    async def _retry(self, fn: Callable[[], Awaitable[Response]]) -> Response:
        deadline = trio.current_time() + self.op_timeout_s
        return await self.cluster.retry_until(deadline, fn)

    def _failed(self, error: SluiceError) -> None:
        """A coordinator answered `error` to a registration or offsets: fatal when it fences
        this producer, else the transaction must abort."""
        if error.code in _FATAL or isinstance(error, ProducerFencedError):
            self._go_fatal(error)
        elif error.code is ErrorCode.TRANSACTION_ABORTED:
            self._go_fatal(error)  # only an operator's abort fences a running transaction
        else:
            self.core.txn_failed(error, trio.current_time())

    def _go_fatal(self, error: SluiceError) -> None:
        if self.core.fatal is None:
            self.core.go_fatal(error, trio.current_time())


async def _stage(link: CoordinatorLink, request: TxnOffsetCommitRequest) -> Response:
    """One TxnOffsetCommit; the first partition's error is raised (retriable ones retried)."""
    response = await link.request(request)
    assert isinstance(response, TxnOffsetCommitResponse)
    for topic in response.topics:
        for p in topic.partitions:
            if p.error is not ErrorCode.NONE:
                raise error_for(p.error, f"offset of {topic.topic}[{p.partition}]: {p.message}")
    return response


def _copy(error: SluiceError) -> SluiceError:
    return copy.copy(error).with_traceback(None)
