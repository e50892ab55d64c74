"""An exhaustive explorer of the three-phase commit over the real state machines.

The model is one transactional producer, one coordinator and 2 or 3 participants (partition
logs, and optionally a consumer group's offsets). Every durable state is a real machine of
broker/core: the coordinator is `TransactionCoordinator` driven by the real `TxnDriver`; the
participants are `PartitionMachine`s (and a `GroupCoordinator`) applying the very entries
their leaders would propose (command entries, control-batch markers, transactional batches,
transactional offset commits), with the real `PrecommitWatch` as their leaders' timer. Only
the wiring between them is modelled: a network of requests and answers, Raft proposals that
commit later (or never), and a client that runs init, add, produce, end.

`explore` visits, depth first, every interleaving of these steps and of the faults within
a `Bounds`: lost messages (a request or its answer; the driver's request then ends in a
timeout), duplicated ones (delivered again later, possibly after the coordinator moved on),
timeouts of requests still in flight, crashes of the coordinator's leader (its driver forgets
everything; a new term begins; proposals already made may still commit) and of a
participant's leader (proposals may still commit, unanswered; its timer forgets), proposals
lost before they commit, a zombie producer (a second producer with the same transactional id
initialises while the first goes on), and the client ending with commit or abort. A state
already seen is not explored again.

In every reachable state it checks safety:
- atomicity: no transaction is committed at one participant and aborted at another;
- decisions: a participant pre-commits or commits an epoch only if the coordinator's log
  decided commit for it, and aborts one only if the coordinator did not;
- a COMPLETE commit means every participant committed, and a client told "committed" was
  told the truth;
- participants never refuse a PRECOMMIT, COMMIT or ABORT as out of order (INVALID_TXN_STATE);
- read_committed: every aborted transaction's data is in its partition's aborted index, no
  committed one's is, and the last stable offset equals the high watermark when nothing is open;
and termination: from the state, with faults healed and the client gone, a fair schedule
reaches a state where the coordinator and every participant hold no open transaction, within
`HEAL_STEPS` rounds (each round: every proposal commits, every message is delivered, every
leader ticks once). `python -m tests.model.txn_model --help` runs larger bounds.
"""

from __future__ import annotations

import argparse
import pickle
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from broker.core.groups.coordinator import GroupCoordinator, cmd_txn_offsets
from broker.core.partition import ApplyResult, PartitionMachine
from broker.core.raft import Entry, EntryKind
from broker.core.txn.aborted import is_aborted
from broker.core.txn.coordinator import (
    EndAnswer,
    InitAnswer,
    TransactionCoordinator,
    TxnState,
    cmd_add,
    cmd_end,
    cmd_init,
)
from broker.core.txn.driver import REPROPOSE_TICKS, PrecommitWatch, Send, SendKey, TxnDriver
from broker.core.txn.ledger import LedgerResult, TxnPhase
from broker.core.txn.protocol import GROUP, Participant, Phase, TxnCommand, encode_marker
from broker.wire import cbor
from broker.wire.batch import Record, encode_batch
from broker.wire.errors import ErrorCode
from broker.wire.limits import Limits

TXN = "t"
TIMEOUT_MS = 1
"""The transaction timeout, in driver ticks of 1 ms: a timeout is a few steps away."""
PRECOMMIT_TICKS = 1
HEAL_STEPS = 40
SNAPSHOT_LIMITS = Limits(max_frame_items=1 << 20)


@dataclass(frozen=True, slots=True)
class Bounds:
    participants: int = 2
    group: bool = False
    """The last participant is a consumer group's offsets."""
    losses: int = 1
    """Lost messages, lost proposals and request timeouts, in all."""
    duplicates: int = 1
    crashes: int = 1
    """Crashes of the coordinator's or a participant's leader, in all."""
    ticks: int = 3
    """Ticks of the coordinator's leader and of the participants' leaders, in all."""
    zombie: bool = True
    max_states: int = 2_000_000


@dataclass
class Msg:
    """A coordinator's request on its way to a participant's leader."""

    rid: int
    site: int
    cmd: TxnCommand

    def key(self, awaited: bool) -> tuple[object, ...]:
        """What matters of the message: not its id, but whether the driver awaits it."""
        return (awaited, self.site, self.cmd)


@dataclass
class Site:
    """A participant: its durable machine, its leader's timer and proposals not committed."""

    participant: Participant
    machine: PartitionMachine | GroupCoordinator
    watch: PrecommitWatch
    index: int = 0


@dataclass
class Client:
    """One producer instance."""

    name: str
    step: str = "init"
    """init -> wait_init -> add -> wait_add -> produce -> end -> wait_end -> done."""
    pid: int = -1
    epoch: int = -1
    acked: dict[int, int] = field(default_factory=dict)
    failed: bool = False
    sent: set[int] = field(default_factory=set)
    commit: bool = True
    told: str = ""


@dataclass
class World:
    coord: TransactionCoordinator
    driver: TxnDriver
    sites: list[Site]
    clients: list[Client]
    term: int = 1
    index: int = 0
    pending: list[tuple[bytes, str]] = field(default_factory=list)
    """Coordinator proposals not committed: (entry, origin: "driver" or a client's name)."""
    net: list[Msg] = field(default_factory=list)
    inflight: dict[int, SendKey] = field(default_factory=dict)
    next_rid: int = 1
    losses: int = 0
    duplicates: int = 0
    crashes: int = 0
    ticks: int = 0
    decided: dict[int, bool] = field(default_factory=dict)
    """epoch -> the coordinator's logged decision (True: PRE_COMMITTED)."""
    closed: dict[tuple[int, int], bool] = field(default_factory=dict)
    """(site, epoch) -> committed, for every transaction a participant closed."""
    violations: list[str] = field(default_factory=list)


class Violation(AssertionError):
    pass


def _no_topics() -> tuple[int, dict[str, int]]:
    return 0, {}


def clone(w: World) -> World:
    """A deep copy (pickle is an order of magnitude faster than copy.deepcopy here)."""
    copied: World = pickle.loads(pickle.dumps(w, pickle.HIGHEST_PROTOCOL))
    return copied


# -- building -------------------------------------------------------------------------------


def new_world(bounds: Bounds) -> World:
    coord = TransactionCoordinator()
    driver = TxnDriver(coord, tick_ms=1)
    driver.restart(1)
    sites = []
    for i in range(bounds.participants):
        if bounds.group and i == bounds.participants - 1:
            machine: PartitionMachine | GroupCoordinator = GroupCoordinator(
                _no_topics, tick_ms=1, empty_group_expiry_ms=1 << 40
            )
            part = Participant("g", GROUP)
        else:
            machine = PartitionMachine()
            part = Participant("p", i)
        sites.append(Site(part, machine, PrecommitWatch(PRECOMMIT_TICKS)))
    return World(coord, driver, sites, [Client("c0")])


# -- steps ----------------------------------------------------------------------------------


def _apply_site(w: World, s: Site, data: bytes) -> tuple[ErrorCode, bool, int]:
    s.index += 1
    applied = s.machine.apply_entry(Entry(s.index, 1, EntryKind.NORMAL, data))
    value = applied.value
    if isinstance(value, ApplyResult):
        return applied.error, value.vote, value.base_offset
    if isinstance(value, LedgerResult):
        return applied.error, value.vote, -1
    return applied.error, False, -1


def _record_closed(w: World, site_no: int, before: dict[int, tuple[int, bool]]) -> None:
    """Note the transactions site `site_no` closed since `before` (its ledger's closed
    epochs per producer)."""
    ledger = w.sites[site_no].machine.ledger
    for pid, p in ledger.producers.items():
        if p.closed_epoch >= 0 and before.get(pid) != (p.closed_epoch, p.closed_committed):
            key = (site_no, p.closed_epoch)
            if key in w.closed and w.closed[key] != p.closed_committed:
                w.violations.append(f"site {site_no} closed epoch {key[1]} both ways")
            w.closed[key] = p.closed_committed
            _check_decision(w, site_no, p.closed_epoch, p.closed_committed)


def _check_decision(w: World, site_no: int, epoch: int, committed: bool) -> None:
    decided = w.decided.get(epoch)
    if committed and decided is not True:
        w.violations.append(f"site {site_no} committed epoch {epoch}: no commit decision")
    if not committed and decided is True:
        w.violations.append(f"site {site_no} aborted epoch {epoch}: the decision was commit")


def _closed_view(w: World, site_no: int) -> dict[int, tuple[int, bool]]:
    ledger = w.sites[site_no].machine.ledger
    return {pid: (p.closed_epoch, p.closed_committed) for pid, p in ledger.producers.items()}


def site_apply(
    w: World, site_no: int, data: bytes, origin: str, rid: int
) -> tuple[ErrorCode, bool, int]:
    """Apply `data` at the site: (error, vote, base offset of the data appended or -1)."""
    """The site's leader proposes `data`; it commits and applies at once (a crash before
    its answer leaves is a lost answer)."""
    s = w.sites[site_no]
    before = _closed_view(w, site_no)
    error, vote, base = _apply_site(w, s, data)
    _record_closed(w, site_no, before)
    for _, o in s.machine.ledger.open_txns():
        if o.phase == TxnPhase.PRE_COMMITTED and w.decided.get(o.epoch) is not True:
            w.violations.append(f"site {site_no} pre-committed epoch {o.epoch} undecided")
    if origin == "coord":
        req = _REQUESTS[rid]
        if req.phase in (Phase.PRECOMMIT, Phase.COMMIT, Phase.ABORT) and (
            error == ErrorCode.INVALID_TXN_STATE
        ):
            w.violations.append(f"site {site_no} refused {req.phase.name}: {error.name}")
    elif origin.startswith("c"):
        client = next((c for c in w.clients if c.name == origin), None)
        if client is not None and error == ErrorCode.NONE:
            client.acked[site_no] = base
        elif client is not None:
            client.failed = True
    return error, vote, base


_REQUESTS: dict[int, TxnCommand] = {}
"""rid -> the request it answers (requests are immutable values: shared by all worlds)."""


def deliver(w: World, i: int, *, keep: bool = False, answer: bool = True) -> None:
    """Request `i` reaches its participant's leader, which applies it; its answer reaches
    the driver at once, or (not `answer`) is lost. `keep`: a duplicate stays behind."""
    m = w.net[i] if keep else w.net.pop(i)
    if keep:
        w.duplicates += 1
    if not answer:
        w.losses += 1
    s = w.sites[m.site]
    cmd = m.cmd
    if s.participant.is_group or cmd.phase not in (Phase.COMMIT, Phase.ABORT):
        data = cmd.encode()
    else:
        data = encode_marker(cmd)
    error, vote, _ = site_apply(w, m.site, data, "coord", m.rid)
    key = w.inflight.pop(m.rid, None) if answer else None
    if key is not None:
        w.driver.on_answer(key, error, vote)
        coord_poll(w)


def coord_tick(w: World) -> None:
    w.ticks += 1
    _issue(w, *w.driver.tick())


def coord_poll(w: World) -> None:
    _issue(w, *w.driver.poll())


def _issue(w: World, sends: list[Send], proposals: list[bytes]) -> None:
    for send in sends:
        rid = w.next_rid
        w.next_rid += 1
        _REQUESTS.setdefault(rid, send.command)
        w.inflight[rid] = send.key
        site = next(i for i, s in enumerate(w.sites) if s.participant == send.key[3])
        w.net.append(Msg(rid, site, send.command))
    w.pending.extend((p, "driver") for p in proposals)


def coord_apply(w: World) -> None:
    data, origin = w.pending.pop(0)
    w.index += 1
    applied = w.coord.apply_entry(Entry(w.index, w.term, EntryKind.NORMAL, data))
    coord_poll(w)
    t = w.coord.txns.get(TXN)
    if t is not None and t.state in (TxnState.PRE_COMMITTED, TxnState.ABORTING):
        commit = t.state == TxnState.PRE_COMMITTED
        if w.decided.setdefault(t.epoch, commit) is not commit:
            w.violations.append(f"epoch {t.epoch} decided both ways")
    if t is not None and t.last_epoch >= 0 and t.last_committed:
        for site_no in range(len(w.sites)):
            committed = w.closed.get((site_no, t.last_epoch))
            if committed is False:
                w.violations.append(f"epoch {t.last_epoch} complete but site {site_no} aborted")
    client = next((c for c in w.clients if c.name == origin), None)
    if client is None:
        return
    value = applied.value
    if client.step == "wait_init":
        if isinstance(value, InitAnswer):
            client.pid, client.epoch, client.step = value.producer_id, value.epoch, "add"
        else:
            client.step = "init"  # CONCURRENT_TRANSACTIONS: retry
    elif client.step == "wait_add_cmd":
        client.step = "wait_add" if applied.error == ErrorCode.NONE else "fenced"
    elif client.step == "wait_end_cmd":
        if isinstance(value, EndAnswer) and value.done:
            _told(w, client, value.committed)
        elif isinstance(value, EndAnswer):
            client.step = "wait_end"
        else:
            client.step, client.told = "done", applied.error.name


def _told(w: World, client: Client, committed: bool) -> None:
    client.step, client.told = "done", "committed" if committed else "aborted"
    if committed:
        for site_no in client.acked:
            if w.closed.get((site_no, client.epoch)) is not True:
                w.violations.append(f"client told committed; site {site_no} did not commit")


def client_step(w: World, c: Client) -> None:
    parts = [s.participant for s in w.sites]
    if c.step == "init":
        w.pending.append((cmd_init(TXN, 100 + len(w.clients), TIMEOUT_MS, 0), c.name))
        c.step = "wait_init"
    elif c.step == "add":
        w.pending.append((cmd_add(TXN, c.pid, c.epoch, parts, 0), c.name))
        c.step = "wait_add_cmd"
    elif c.step == "wait_add":
        begun = w.driver.begun(TXN, c.epoch, tuple(parts))
        c.step = "produce" if begun else "end"
        if begun is None:
            c.commit = False
    elif c.step == "produce":
        for site_no, s in enumerate(w.sites):
            c.sent.add(site_no)
            if s.participant.is_group:
                data = cmd_txn_offsets("g", c.pid, c.epoch, "", -1, [("in", 0, 5, None)], 0)
            else:
                rec = Record(value=b"v", timestamp=0)
                data = encode_batch(
                    [rec],
                    producer_id=c.pid,
                    producer_epoch=c.epoch,
                    base_sequence=0,
                    transactional=True,
                )
            site_apply(w, site_no, data, c.name, 0)
        c.step = "end"
    elif c.step == "end":
        commit = c.commit and not c.failed and len(c.acked) == len(c.sent)
        seqs = [
            (w.sites[i].participant, 0)
            for i in sorted(c.acked)
            if not w.sites[i].participant.is_group
        ]
        w.pending.append((cmd_end(TXN, c.pid, c.epoch, commit, seqs, 0), c.name))
        c.step = "wait_end_cmd"
    elif c.step == "wait_end":
        t = w.coord.txns[TXN]
        if t.last_epoch == c.epoch:
            _told(w, c, t.last_committed)


def client_ready(w: World, c: Client) -> bool:
    if c.step in ("init", "add", "end"):
        return True
    if c.step == "produce":
        return True
    if c.step == "wait_add":
        return w.driver.begun(TXN, c.epoch, tuple(s.participant for s in w.sites)) is not False
    if c.step == "wait_end":
        t = w.coord.txns.get(TXN)
        return t is not None and t.last_epoch == c.epoch
    return False


def site_tick(w: World, site_no: int) -> None:
    s = w.sites[site_no]
    w.ticks += 1
    for pid, epoch, txn_id in s.watch.tick(s.machine.ledger):
        cmd = TxnCommand(
            phase=Phase.COMMIT,
            participant=s.participant,
            txn_id=txn_id,
            producer_id=pid,
            epoch=epoch,
            coordinator_term=0,
            by_participant=True,
        )
        data = cmd.encode() if s.participant.is_group else encode_marker(cmd)
        site_apply(w, site_no, data, "self", 0)


def _voted(s: Site) -> bool:
    """The site holds a transaction past its vote: its leader's timer may matter."""
    return any(o.phase != TxnPhase.OPEN for _, o in s.machine.ledger.open_txns())


def crash_coordinator(w: World, drop: bool = False) -> None:
    """A new leader: the driver forgets everything; the proposals not committed yet commit
    later under it, or (`drop`) never."""
    w.crashes += 1
    if drop:
        w.pending.clear()
    w.term += 1
    w.driver.restart(w.term)
    w.inflight.clear()
    coord_poll(w)


def crash_site(w: World, site_no: int) -> None:
    w.crashes += 1
    w.sites[site_no].watch.restart()


# -- the search -----------------------------------------------------------------------------


Action = tuple[str, Callable[[World], None]]


def actions(w: World, b: Bounds) -> Iterator[Action]:
    if w.pending:
        yield "coord-apply", coord_apply
    if w.ticks < b.ticks:
        yield "coord-tick", coord_tick
    for i, m in enumerate(w.net):
        yield f"deliver-{m.rid}", lambda w, i=i: deliver(w, i)  # type: ignore[misc]
        if w.duplicates < b.duplicates:
            yield f"dup-{m.rid}", lambda w, i=i: deliver(w, i, keep=True)  # type: ignore[misc]
        if w.losses < b.losses:
            yield f"lose-{m.rid}", lambda w, i=i: _lose(w, i)  # type: ignore[misc]
            yield f"lose-answer-{m.rid}", lambda w, i=i: deliver(w, i, answer=False)  # type: ignore[misc]
    if w.losses < b.losses:
        for rid in sorted(w.inflight):
            yield f"timeout-{rid}", lambda w, rid=rid: _timeout(w, rid)  # type: ignore[misc]
    for site_no, s in enumerate(w.sites):
        if w.ticks < b.ticks and _voted(s):
            yield f"site-tick-{site_no}", lambda w, n=site_no: site_tick(w, n)  # type: ignore[misc]
        if w.crashes < b.crashes:
            yield f"site-crash-{site_no}", lambda w, n=site_no: crash_site(w, n)  # type: ignore[misc]
    if w.crashes < b.crashes:
        yield "coord-crash", crash_coordinator
        if w.pending:
            yield "coord-crash-drop", lambda w: crash_coordinator(w, drop=True)
    for ci, c in enumerate(w.clients):
        if client_ready(w, c):
            yield f"client-{ci}-{c.step}", lambda w, ci=ci: client_step(w, w.clients[ci])  # type: ignore[misc]
        if c.step == "end" and c.commit:
            yield f"client-{ci}-abort", lambda w, ci=ci: _abort_instead(w, ci)  # type: ignore[misc]
    if b.zombie and len(w.clients) == 1 and w.clients[0].step not in ("init", "wait_init"):
        yield "zombie", lambda w: w.clients.append(Client("c1"))


def _lose(w: World, i: int) -> None:
    w.losses += 1
    w.net.pop(i)


def _timeout(w: World, rid: int) -> None:
    w.losses += 1
    key = w.inflight.pop(rid)
    w.driver.on_answer(key, ErrorCode.REQUEST_TIMED_OUT)
    coord_poll(w)


def _abort_instead(w: World, ci: int) -> None:
    w.clients[ci].commit = False
    client_step(w, w.clients[ci])


def _without_index(snapshot: bytes) -> str:
    """A machine's snapshot without its applied index (a retried command that changed
    nothing leaves the same state)."""
    d = cbor.decode(snapshot, SNAPSHOT_LIMITS)
    assert isinstance(d, dict)
    d.pop("applied", None)
    return repr(d)


def _rel(now: int, then: int, cap: int) -> int:
    return min(now - then, cap)


def state_key(w: World) -> tuple[object, ...]:
    """Everything that decides what can happen next, with the leaders' tick counters made
    relative (ticks since, capped where no timer looks further): two states that differ
    only by when they happened are one. The fault budgets are kept apart (`budget`)."""
    d = w.driver
    now = d._tick
    cap = TIMEOUT_MS + 2
    drv = (
        d.term,
        tuple(
            sorted(
                (
                    k,
                    int(p.state),
                    _rel(now, p.since, cap),
                    tuple(sorted((int(ph), tuple(sorted(ps))) for ph, ps in p.acked.items())),
                    tuple(sorted(p.votes.items())),
                    tuple(sorted((q, max(0, t - now)) for q, t in p.waiting.items())),
                )
                for k, p in d._progress.items()
            )
        ),
        tuple(sorted(map(repr, d._inflight))),
        tuple(sorted((k, _rel(now, t, REPROPOSE_TICKS)) for k, t in d._proposed.items())),
    )
    sites = tuple(
        (
            _without_index(s.machine.snapshot()),
            repr(s.machine.aborted._markers) if isinstance(s.machine, PartitionMachine) else "",
            tuple(
                sorted(
                    (k, _rel(s.watch._tick, t, PRECOMMIT_TICKS)) for k, t in s.watch._seen.items()
                )
            ),
        )
        for s in w.sites
    )
    clients = tuple(
        (c.step, c.pid, c.epoch, tuple(sorted(c.acked.items())), c.failed, c.commit, c.told)
        for c in w.clients
    )
    return (
        _without_index(w.coord.snapshot()),
        drv,
        sites,
        clients,
        w.term,
        tuple(w.pending),
        tuple(sorted(repr(m.key(m.rid in w.inflight)) for m in w.net)),
        tuple(sorted(map(repr, w.inflight.values()))),
        tuple(sorted(w.decided.items())),
        tuple(sorted(w.closed.items())),
    )


def budget(w: World, b: Bounds) -> tuple[int, ...]:
    """What is left of each bound (a state seen with at least as much left is not
    explored again)."""
    return (
        b.losses - w.losses,
        b.duplicates - w.duplicates,
        b.crashes - w.crashes,
        b.ticks - w.ticks,
        int(b.zombie and len(w.clients) == 1),
    )


def check_state(w: World) -> None:
    if w.violations:
        raise Violation(w.violations[0])
    for site_no, s in enumerate(w.sites):
        m = s.machine
        if not isinstance(m, PartitionMachine):
            continue
        if not any(True for _ in m.ledger.open_txns()) and m.last_stable_offset != m.next_offset:
            raise Violation(f"site {site_no}: LSO {m.last_stable_offset} != HW, nothing open")
        ranges = m.aborted.covering(0, m.next_offset)
        for (n, epoch), committed in w.closed.items():
            if n != site_no:
                continue
            for c in w.clients:
                if c.epoch == epoch and c.acked.get(site_no, -1) >= 0:
                    hidden = is_aborted(ranges, c.pid, c.acked[site_no])
                    if hidden == committed:
                        state = "committed" if committed else "aborted"
                        raise Violation(f"site {site_no}: {state} data, aborted index {hidden}")


def heal(w: World) -> int:
    """Run the fault-free fair schedule; the rounds it took to close everything, or raise."""
    w.clients = [c for c in w.clients if c.step == "done"]  # the live clients go away
    for rounds in range(HEAL_STEPS):
        if _settled(w):
            return rounds
        while w.pending:
            coord_apply(w)
        coord_tick(w)
        while w.net:
            deliver(w, 0)
        in_net = {m.rid for m in w.net}
        for rid in [r for r in w.inflight if r not in in_net]:
            key = w.inflight.pop(rid)  # lost: the peer request times out
            w.driver.on_answer(key, ErrorCode.REQUEST_TIMED_OUT)
        for site_no, s in enumerate(w.sites):
            if _voted(s):
                site_tick(w, site_no)
        if w.violations:
            raise Violation("while healing: " + w.violations[0])
    raise Violation(f"not settled after {HEAL_STEPS} fault-free rounds: {_open_report(w)}")


def _settled(w: World) -> bool:
    if any(t.open for t in w.coord.txns.values()) or w.pending:
        return False
    return all(not any(True for _ in s.machine.ledger.open_txns()) for s in w.sites)


def _open_report(w: World) -> str:
    t = w.coord.txns.get(TXN)
    parts = [f"coordinator {t.state.name if t else '-'} epoch {t.epoch if t else '-'}"]
    for s in w.sites:
        parts.extend(
            f"{s.participant}: {o.phase.name} e{o.epoch}" for _, o in s.machine.ledger.open_txns()
        )
    return "; ".join(parts)


@dataclass
class Report:
    states: int = 0
    transitions: int = 0
    max_heal_rounds: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def explore(b: Bounds, *, heal_every: int = 1) -> Report:
    """Depth-first over every reachable state; raises Violation with the trace."""
    _REQUESTS.clear()
    start = time.perf_counter()
    report = Report()
    seen: dict[int, list[tuple[int, ...]]] = {}
    root = new_world(b)
    stack: list[tuple[World, tuple[str, ...]]] = [(root, ())]
    while stack:
        w, trace = stack.pop()
        key = hash(state_key(w))
        left = budget(w, b)
        had = seen.setdefault(key, [])
        if any(all(x >= y for x, y in zip(h, left, strict=True)) for h in had):
            continue
        had.append(left)
        report.states += 1
        if report.states > b.max_states:
            raise RuntimeError(f"more than {b.max_states} states: tighten the bounds")
        try:
            check_state(w)
            if report.states % heal_every == 0:
                healed = clone(w)
                rounds = heal(healed)
                report.max_heal_rounds = max(report.max_heal_rounds, rounds)
                for c in healed.clients + w.clients:
                    if c.told:
                        report.outcomes[c.told] = report.outcomes.get(c.told, 0) + 1
        except Violation as v:
            raise Violation(f"{v}\n  after: {' '.join(trace)}") from None
        todo = list(actions(w, b))
        for n, (name, act) in enumerate(todo):
            nxt = w if n == len(todo) - 1 else clone(w)  # the last child takes w itself
            act(nxt)
            report.transitions += 1
            stack.append((nxt, (*trace, name)))
    report.seconds = time.perf_counter() - start
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--participants", type=int, default=2)
    ap.add_argument("--group", action="store_true", help="the last participant is a group")
    ap.add_argument("--losses", type=int, default=1)
    ap.add_argument("--duplicates", type=int, default=1)
    ap.add_argument("--crashes", type=int, default=1)
    ap.add_argument("--ticks", type=int, default=3)
    ap.add_argument("--no-zombie", action="store_true")
    ap.add_argument("--heal-every", type=int, default=1)
    ap.add_argument("--soak", action="store_true", help="run the SOAK bounds one by one")
    a = ap.parse_args(argv)
    runs = (
        SOAK
        if a.soak
        else [
            Bounds(
                a.participants, a.group, a.losses, a.duplicates, a.crashes, a.ticks, not a.no_zombie
            )
        ]
    )
    for b in runs:
        r = explore(b, heal_every=a.heal_every)
        print(
            f"{b}: {r.states} states, {r.transitions} transitions, {r.seconds:.1f} s, "
            f"heal <= {r.max_heal_rounds} rounds, outcomes {r.outcomes}",
            flush=True,
        )
    return 0


SOAK = [
    Bounds(losses=2, duplicates=0, crashes=0, zombie=False, ticks=2),
    Bounds(losses=1, duplicates=1, crashes=0, zombie=False, ticks=2),
    Bounds(losses=1, duplicates=0, crashes=1, zombie=False, ticks=1),
    Bounds(losses=0, duplicates=1, crashes=1, zombie=False, ticks=1),
    Bounds(losses=0, duplicates=0, crashes=1, zombie=True, ticks=0),
    Bounds(participants=3, group=True, losses=1, duplicates=0, crashes=0, zombie=False, ticks=1),
    Bounds(participants=3, group=True, losses=0, duplicates=0, crashes=1, zombie=False, ticks=1),
]
"""Larger bounds for `make soak`, each a separate exploration (their product is too big)."""


if __name__ == "__main__":
    sys.exit(main())
