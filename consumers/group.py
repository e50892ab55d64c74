"""The consumer's group shell: membership, commits and committed offsets of a `Consumer` with a
`group_id`, over the pure `consumers.core.group_member.GroupMember`.

Theory of operation
-------------------
Every decision (what each heartbeat carries, what an answer or error does, when the member is
lost, what a commit answer means) is the core's; this shell owns the I/O, the waiting and the
user's callbacks. `GroupSession.start` runs these tasks in the consumer's nursery:

- heartbeats: sends what `heartbeat_due` hands out, one at a time, on the coordinator's
  connection lane "heartbeat" (`CoordinatorLink`), so a parked fetch or a slow commit never
  delays one. The wait for an answer is cut at the member's lost deadline (2/3 of the session
  timeout after the send of the last answered heartbeat): from then on the member owns
  nothing and rejoins.
- steps: the member's steps, one at a time under `_step_lock`: LOST -> `on_lost` (else
  `on_revoked`); REVOKE -> commit the positions the revoked partitions had (auto-commit),
  `on_revoked`, release, heartbeat at once; ASSIGN -> OFFSET_FETCH, the partitions added to
  the positions as waiting, `on_assigned` (it may `seek`), then read.
- commits: one worker sends every commit (`commit`, `commit_async`, auto-commit, revocation,
  close) in the order they were asked for, so an older offset never overwrites a newer one;
  commit_async callbacks run in that order in a task of their own (so they may commit again).
  The queue is not bounded: `commit_async` never waits.

A partition stops being read the moment the member loses it or sees it revoked: it leaves the
positions (buffered records dropped) before any await, and `on_stop` (the blocking facade's
hook) drops records handed out but not yet consumed and says where they began, so the
revocation commits only what was consumed.

Commits carry the member id and current member epoch (a member not joined yet first waits
for a heartbeat answer); with `assign()` (no membership) they are the "simple consumer"'s:
member id "" and epoch -1, which the coordinator accepts only while the group has no live
members. Auto-commit happens when `poll` or the iteration asks for more records (so what they
returned before has been processed) once `auto_commit_interval_ms` passed, before a
revocation and at close; only positions that moved since the last known commit are sent.
Callbacks may be plain or async functions; an exception from one is raised once by `poll`.
"""

from __future__ import annotations

import inspect
import logging
import math
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field

import trio

from broker.wire.group_messages import (
    ADMIN_EPOCH,
    GroupHeartbeatResponse,
    OffsetCommitResponse,
    OffsetFetchResponse,
)
from broker.wire.messages import Response
from consumers.cluster import Backoff, Cluster, TopicPartition
from consumers.coordinator import CoordinatorLink
from consumers.core.group_member import (
    GroupMember,
    OffsetLedger,
    Reconcile,
    SentHeartbeat,
    Step,
    StepKind,
    commit_outcome,
    commit_request,
    committed_offsets,
    offset_fetch_request,
)
from consumers.core.positions import Positions
from consumers.errors import (
    ClientClosedError,
    RequestTimedOutError,
    SluiceError,
    StaleMemberEpochError,
    error_for,
)

__all__ = ["HEARTBEAT_LANE", "CommitCallback", "GroupSession", "RebalanceCallback"]

HEARTBEAT_LANE = "heartbeat"
logger = logging.getLogger(__name__)

Partitions = frozenset[TopicPartition]
RebalanceCallback = Callable[[Partitions], Awaitable[None] | None]
"""on_assigned / on_revoked / on_lost: called with the partitions concerned."""
CommitCallback = Callable[[dict[TopicPartition, int], SluiceError | None], Awaitable[None] | None]
"""commit_async's callback: (offsets, None) once committed, (offsets, error) if it failed."""
StopHook = Callable[[Partitions], Mapping[TopicPartition, int]]


@dataclass(eq=False)
class _Commit:
    """One commit for the worker: its outcome is `error` once `done` is set; then
    `callback` runs, or a failure is logged if `log` (nobody waits for it)."""

    offsets: dict[TopicPartition, int]
    deadline: float
    callback: CommitCallback | None = None
    log: bool = True
    done: trio.Event = field(default_factory=trio.Event)
    error: SluiceError | None = None


class GroupSession:
    """Group membership and offsets of one consumer (see the module docstring)."""

    def __init__(
        self,
        *,
        group_id: str,
        instance_id: str | None,
        session_timeout_ms: int,
        assignor: str | None,
        positions: Positions,
        backoff: Backoff,
        request_timeout_s: float,
        enable_auto_commit: bool,
        auto_commit_interval_s: float,
        on_change: Callable[[], None],
        on_data: Callable[[], None],
    ) -> None:
        self.group_id = group_id
        self.member = GroupMember(
            group_id=group_id,
            member_id=uuid.uuid4().hex,
            backoff=backoff,
            session_timeout_ms=session_timeout_ms,
            instance_id=instance_id,
            assignor=assignor,
        )
        self.ledger = OffsetLedger()
        self.positions = positions
        self.backoff = backoff
        self.request_timeout_s = request_timeout_s
        self.enable_auto_commit = enable_auto_commit
        self.auto_commit_interval_s = auto_commit_interval_s
        self._on_change = on_change
        """Wakes the consumer's manager (partitions came or went)."""
        self._on_data = on_data
        """Wakes `poll` (something to raise)."""
        self.on_assigned: RebalanceCallback | None = None
        self.on_revoked: RebalanceCallback | None = None
        self.on_lost: RebalanceCallback | None = None
        self.on_stop: StopHook | None = None
        """Called (synchronously) when partitions stop being read; returns the offset of the
        first record handed out but not consumed, per partition (the blocking facade)."""
        self._revoking: dict[TopicPartition, int] = {}
        """The positions revoked partitions had when they stopped being read (committed by
        their REVOKE step; `commit()` includes them until they are released)."""
        self._error: Exception | None = None
        """Raised once by `poll`: a callback's exception, a failed offset fetch."""
        self._auto_commit_at = math.inf
        self._manual: set[TopicPartition] = set()
        """Manually assigned partitions waiting for their committed offsets before `start`."""
        self._hb_wake = trio.Event()
        self._step_wake = trio.Event()
        self._answered = trio.Event()
        """Set (and replaced) after every heartbeat outcome."""
        self._hb_request: trio.CancelScope | None = None
        self._hb_loop = trio.CancelScope()
        self._hb_done = trio.Event()
        self._step_lock = trio.Lock()
        self._commits_send, self._commits = trio.open_memory_channel[_Commit](math.inf)
        self._callbacks_send, self._callbacks = trio.open_memory_channel[_Commit](math.inf)
        self._link: CoordinatorLink | None = None
        self._cluster: Cluster | None = None
        self._nursery: trio.Nursery | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, cluster: Cluster, nursery: trio.Nursery) -> None:
        self._cluster = cluster
        self._link = CoordinatorLink(cluster, self.group_id)
        self._nursery = nursery
        self._auto_commit_at = trio.current_time() + self.auto_commit_interval_s
        nursery.start_soon(self._heartbeats)
        nursery.start_soon(self._steps)
        nursery.start_soon(self._committer)
        nursery.start_soon(self._commit_callbacks)
        if self._manual:
            nursery.start_soon(self._start_manual, frozenset(self._manual))
            self._manual = set()

    @property
    def link(self) -> CoordinatorLink:
        if self._link is None:
            raise ClientClosedError("the consumer is not open (use `async with Consumer(...)`)")
        return self._link

    @property
    def member_mode(self) -> bool:
        """Partitions come from the group (subscribed, or releasing after `unsubscribe`)."""
        return self.member.subscribed or bool(self.member.partitions)

    async def close(self) -> None:
        """Commit what was read (auto-commit) and revoke every announced partition, then send
        the leave heartbeat (if the coordinator may know this member). Best effort: the
        caller bounds it; a callback's exception is raised after the leave went."""
        if not self.member_mode:
            readable = self.positions.readable()
            stopped = self.stop_reading(list(self.positions.partitions))
            if self.enable_auto_commit:
                consumed = {tp: o for tp, o in stopped.items() if tp in readable}
                await self._commit_quietly(self.ledger.moved(consumed))
            await self._leave()  # an unsubscribe's leave may still be due
            return
        async with self._step_lock:
            lost, announced = self.member.close()
            stopped = self.stop_reading(announced)
            stopped.update(self._revoking)
            try:
                if lost:
                    await self._call(self.on_lost or self.on_revoked, lost, raising=True)
                if self.enable_auto_commit:
                    await self._commit_quietly(self.ledger.moved(stopped))
                if announced:
                    await self._call(self.on_revoked, announced, raising=True)
            finally:
                await self._leave()

    async def _leave(self) -> None:
        if self._nursery is None:
            return  # never started
        self._hb_loop.cancel()
        await self._hb_done.wait()
        request = self.member.leave_request(trio.current_time())
        if request is None or self._link is None:
            return
        attempt = 0
        while True:
            try:
                await self._link.request(request, lane=HEARTBEAT_LANE)
                return
            except SluiceError as e:
                if not e.retriable:
                    logger.warning("group %s: leaving failed: %s", self.group_id, e)
                    return
                await trio.sleep(self.backoff.delay(attempt))
                attempt += 1

    # -- membership --------------------------------------------------------------------------

    def subscribe(self, topics: Iterable[str], pattern: str | None) -> None:
        self.member.subscribe(topics, pattern)
        self._hb_wake.set()

    def unsubscribe(self) -> None:
        self._apply(self.member.unsubscribe())
        self._hb_wake.set()

    def raise_pending(self) -> None:
        """Raise the member's fatal error (every time), else a pending error (once)."""
        if self.member.fatal is not None:
            raise self.member.fatal
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _report(self, error: Exception) -> None:
        if self._error is None:
            self._error = error
        self._on_data()

    def stop_reading(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """Stop reading `tps` now; the known positions they had (rewound to records handed
        out but not consumed)."""
        tps = frozenset(tps)
        removed = self.positions.remove(tps)
        stopped = {tp: o for tp, o in removed.items() if o is not None}
        if self.on_stop is not None and tps:
            stopped.update(self.on_stop(tps))
        self._on_change()
        return stopped

    def _apply(self, change: Reconcile) -> None:
        if change.revoked:
            self._revoking.update(self.stop_reading(change.revoked))
        if change.work:
            self._step_wake.set()

    def _dropped(self, tps: frozenset[TopicPartition]) -> None:
        """The member lost `tps`: stop reading them; nothing of theirs is committed."""
        if not tps:
            return
        self.stop_reading(tps)
        for tp in tps:
            self._revoking.pop(tp, None)
        self.ledger.forget(tps)
        if self._hb_request is not None:
            self._hb_request.cancel()
        self._hb_wake.set()
        self._step_wake.set()

    async def _heartbeats(self) -> None:
        member = self.member
        try:
            with self._hb_loop:
                while True:
                    self._hb_wake = trio.Event()
                    now = trio.current_time()
                    if member.lost(now):
                        self._dropped(member.lose(now))
                        continue
                    sent = member.heartbeat_due(now)
                    if sent is None:
                        with trio.move_on_at(member.wake_at()):
                            await self._hb_wake.wait()
                        continue
                    await self._heartbeat(sent)
        finally:
            self._hb_done.set()

    async def _heartbeat(self, sent: SentHeartbeat) -> None:
        member = self.member
        answer: Response | None = None
        error: SluiceError | None = None
        with trio.CancelScope(deadline=member.lost_deadline()) as request:
            self._hb_request = request
            try:
                answer = await self.link.request(
                    sent.request, lane=HEARTBEAT_LANE, timeout_s=self.request_timeout_s
                )
            except SluiceError as e:
                error = e
        self._hb_request = None
        now = trio.current_time()
        if answer is not None and member.client_host is None and self.link.coordinator is not None:
            conn = self.link.cluster.ready_connection(self.link.coordinator, HEARTBEAT_LANE)
            member.client_host = None if conn is None else conn.local_host  # for describe
        if answer is not None:
            assert isinstance(answer, GroupHeartbeatResponse)
            change = member.on_heartbeat(sent, answer, now)
            if change is not None:
                self._apply(change)
        elif error is not None:
            self._dropped(member.on_heartbeat_error(sent, error, now))
            if member.fatal is not None:
                self._on_data()
        else:
            member.abandon(sent, now)
        self._answered.set()
        self._answered = trio.Event()

    async def _wait_heartbeat(self) -> None:
        """Ask for a heartbeat now and wait for its outcome."""
        if self.member.fatal is not None:
            raise self.member.fatal
        answered = self._answered
        self.member.heartbeat_now()
        self._hb_wake.set()
        await answered.wait()

    # -- steps -------------------------------------------------------------------------------

    async def _steps(self) -> None:
        while True:
            self._step_wake = trio.Event()
            async with self._step_lock:
                step = self.member.next_step()
                if step is not None:
                    await self._run(step)
                    continue
            await self._step_wake.wait()

    async def _run(self, step: Step) -> None:
        if step.kind is StepKind.LOST:
            await self._call(self.on_lost or self.on_revoked, step.partitions)
        elif step.kind is StepKind.REVOKE:
            await self._revoke(step)
        else:
            await self._assign(step)

    async def _revoke(self, step: Step) -> None:
        member = self.member
        offsets = {tp: self._revoking[tp] for tp in step.partitions if tp in self._revoking}
        if self.enable_auto_commit:
            await self._commit_quietly(self.ledger.moved(offsets))
        notify = member.revoke_notify(step)
        if notify:
            await self._call(self.on_revoked, notify)
        released = member.released(step, trio.current_time())
        for tp in released:
            self._revoking.pop(tp, None)
        self.ledger.forget(released)
        self._hb_wake.set()

    async def _assign(self, step: Step) -> None:
        member = self.member
        attempt = 0
        while True:
            if not member.assigning(step):
                return
            try:
                committed = await self._fetch_committed(step.partitions)
                break
            except SluiceError as e:
                if not e.retriable:
                    self._report(e)
                await trio.sleep(self.backoff.delay(attempt))
                attempt += 1
        started = member.assigned(step)
        if not started:
            return
        offsets = {tp: committed.get(tp) for tp in started}
        self.ledger.record(offsets)
        self.positions.add(offsets, waiting=True)
        try:
            await self._call(self.on_assigned, started)
        finally:
            self.positions.start(started)
            self._on_change()
            self._on_data()  # `position()` may wait for these

    async def _call(
        self, callback: RebalanceCallback | None, tps: Partitions, *, raising: bool = False
    ) -> None:
        """Run a user callback; its exception is raised by `poll` (or here if `raising`)."""
        if callback is None:
            return
        try:
            result = callback(tps)
            if inspect.isawaitable(result):
                await result
        except Exception as e:
            if raising:
                raise
            self._report(e)

    # -- manual assignment ---------------------------------------------------------------------

    def manual_assign(
        self, added: frozenset[TopicPartition], removed: Mapping[TopicPartition, int]
    ) -> None:
        """`assign()` changed the partitions: commit the positions the removed ones had
        (`stop_reading`'s, with auto-commit), and read the added ones from their committed
        offsets."""
        if self.enable_auto_commit and self._nursery is not None:
            moved = self.ledger.moved(removed)
            if moved:
                self._enqueue(moved, None)
        self.ledger.forget(removed)
        if not added:
            return
        self.positions.waiting.update(added)
        if self._nursery is None:
            self._manual |= added
        else:
            self._nursery.start_soon(self._start_manual, added)

    async def _start_manual(self, tps: frozenset[TopicPartition]) -> None:
        """Set the positions of manually assigned partitions still waiting to their
        committed offsets (unless sought meanwhile), then read them."""
        positions = self.positions
        generations = {
            tp: positions.partitions[tp].generation for tp in tps if tp in positions.partitions
        }
        attempt = 0
        while True:
            wanted = frozenset(tp for tp in generations if tp in positions.waiting)
            if not wanted:
                return
            try:
                committed = await self._fetch_committed(wanted)
                break
            except SluiceError as e:
                if not e.retriable:
                    self._report(e)
                await trio.sleep(self.backoff.delay(attempt))
                attempt += 1
        for tp, offset in committed.items():
            state = positions.partitions.get(tp)
            if state is None or tp not in positions.waiting:
                continue
            if (
                offset is not None
                and state.generation == generations[tp]
                and state.position is None
            ):
                state.position = state.fetch_offset = offset
            self.ledger.record({tp: offset})
        positions.start(committed)
        self._on_change()
        self._on_data()  # `position()` may wait for these

    # -- offsets -----------------------------------------------------------------------------

    async def _fetch_committed(
        self, tps: Iterable[TopicPartition]
    ) -> dict[TopicPartition, int | None]:
        wanted = sorted(set(tps))
        response = await self.link.request(
            offset_fetch_request(self.group_id, wanted), timeout_s=self.request_timeout_s
        )
        assert isinstance(response, OffsetFetchResponse)
        return committed_offsets(wanted, response)

    async def committed(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int | None]:
        """The group's committed offsets of `tps` (None: nothing committed), retried until
        the request timeout."""
        wanted = frozenset((t, int(p)) for t, p in tps)
        cluster = self._cluster
        if cluster is None:
            raise ClientClosedError("the consumer is not open (use `async with Consumer(...)`)")
        deadline = trio.current_time() + self.request_timeout_s
        return await cluster.retry_until(deadline, lambda: self._fetch_committed(wanted))

    def current_offsets(self) -> dict[TopicPartition, int]:
        """What `commit()` commits: the positions of the partitions being read, and those
        revoked partitions had until they are released."""
        offsets = dict(self._revoking)
        offsets.update(self.positions.readable())
        return offsets

    def maybe_auto_commit(self, now: float) -> None:
        """`poll`/the iteration asks for more: what it returned before was processed. Once
        the interval passed, commit the positions that moved (in the background)."""
        if not self.enable_auto_commit or now < self._auto_commit_at:
            return
        self._auto_commit_at = now + self.auto_commit_interval_s
        moved = self.ledger.moved(self.current_offsets())
        if moved and not (self.member_mode and not self.member.joined):
            self._enqueue(moved, None)

    async def commit(self, offsets: Mapping[TopicPartition, int] | None) -> None:
        """Commit and wait for the coordinator's answer (see the module docstring)."""
        wanted = self.current_offsets() if offsets is None else _checked(offsets)
        if not wanted:
            await trio.lowlevel.checkpoint()
            return
        job = self._enqueue(wanted, None, log=False)
        await job.done.wait()
        if job.error is not None:
            raise job.error

    def commit_async(
        self, offsets: Mapping[TopicPartition, int] | None, callback: CommitCallback | None
    ) -> None:
        wanted = self.current_offsets() if offsets is None else _checked(offsets)
        if self._nursery is None:
            raise ClientClosedError("the consumer is not open (use `async with Consumer(...)`)")
        self._enqueue(wanted, callback)

    async def _commit_quietly(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit and wait; a failure is logged (a revocation or close goes on regardless)."""
        if offsets:
            job = self._enqueue(offsets, None)
            await job.done.wait()

    def _enqueue(
        self,
        offsets: dict[TopicPartition, int],
        callback: CommitCallback | None,
        *,
        log: bool = True,
    ) -> _Commit:
        job = _Commit(offsets, trio.current_time() + self.request_timeout_s, callback, log)
        self._commits_send.send_nowait(job)
        return job

    async def _committer(self) -> None:
        async for job in self._commits:
            try:
                if job.offsets:
                    await self._commit(job.offsets, job.deadline)
            except SluiceError as e:
                job.error = e
            job.done.set()
            if job.callback is not None:
                self._callbacks_send.send_nowait(job)
            elif job.log and job.error is not None:
                logger.warning("group %s: commit failed: %s", self.group_id, job.error)

    async def _commit_callbacks(self) -> None:
        async for job in self._callbacks:
            assert job.callback is not None
            try:
                result = job.callback(dict(job.offsets), job.error)
                if inspect.isawaitable(result):
                    await result
            except Exception as e:  # the user's code: raised by poll, never swallowed
                self._report(e)

    async def _commit(self, offsets: dict[TopicPartition, int], deadline: float) -> None:
        """One commit until every partition is committed or failed, or the deadline."""
        member = self.member
        pending = dict(offsets)
        failed: dict[TopicPartition, SluiceError] = {}
        attempt = 0
        last: SluiceError | None = None
        start = member.incarnation
        with trio.move_on_at(deadline):
            while pending:
                in_group = self.member_mode
                if in_group:
                    # Only partitions this member still owns, in the life that asked for the
                    # commit: a partition released or lost since is another owner's now, and
                    # an old position must never overwrite what it committed.
                    owned = member.owned() if member.incarnation == start else frozenset()
                    for tp in [tp for tp in pending if tp not in owned]:
                        del pending[tp]
                        failed[tp] = StaleMemberEpochError(
                            f"{tp[0]}[{tp[1]}] was released or lost before its commit was sent"
                        )
                    if not pending:
                        break
                if in_group and not member.joined:
                    await self._wait_heartbeat()
                    continue
                epoch = member.member_epoch if in_group else ADMIN_EPOCH
                incarnation = member.incarnation
                request = commit_request(
                    self.group_id, member.member_id if in_group else "", epoch, pending
                )
                try:
                    response = await self.link.request(
                        request, timeout_s=max(0.001, deadline - trio.current_time())
                    )
                except SluiceError as e:
                    if not e.retriable:
                        raise
                    last = e
                    await trio.sleep(self.backoff.delay(attempt))
                    attempt += 1
                    continue
                assert isinstance(response, OffsetCommitResponse)
                out = commit_outcome(pending, response)
                self.ledger.record(out.done)
                pending = {**out.retry, **out.stale}
                failed.update(out.failed)
                if out.fenced_error is not None:
                    moved = (member.incarnation, member.member_epoch) != (incarnation, epoch)
                    if not (in_group and moved):
                        if in_group:
                            self._dropped(member.lose(trio.current_time()))
                        raise out.fenced_error
                    pending.update(out.fenced)  # the member moved on since it left: retry
                if out.stale or out.fenced:
                    if not in_group:
                        failed.update({tp: StaleMemberEpochError() for tp in out.stale})
                        pending = dict(out.retry)
                        continue
                    await self._wait_heartbeat()
                    for tp in [tp for tp in pending if tp not in member.partitions]:
                        del pending[tp]
                        failed[tp] = StaleMemberEpochError(
                            f"{tp[0]}[{tp[1]}] is no longer owned by this member"
                        )
                elif pending:
                    await trio.sleep(self.backoff.delay(attempt))
                    attempt += 1
        if pending:
            reason = "" if last is None else f" (last error: {last})"
            raise RequestTimedOutError(
                f"the commit of {_names(pending)} did not complete in time{reason}"
            ) from last
        if failed:
            first = next(iter(failed.values()))
            raise error_for(first.code, f"commit failed for {_names(failed)}: {first.message}")


def _checked(offsets: Mapping[TopicPartition, int]) -> dict[TopicPartition, int]:
    out: dict[TopicPartition, int] = {}
    for (topic, partition), offset in offsets.items():
        if offset < 0:
            raise ValueError(f"cannot commit offset {offset} for {topic}[{partition}]")
        out[(topic, int(partition))] = int(offset)
    return out


def _names(tps: Iterable[TopicPartition]) -> str:
    return ", ".join(f"{t}[{p}]" for t, p in sorted(tps))
