"""Peer requests between simulated brokers under faults: one seed -> one run, then the checks.

`python -m tests.sim.peer_request_scenario --seeds N` (or `--seed S` to see one run's trace;
`--mutation M` plants a fault the checks must catch).

Three or four whole brokers (`ClusterWorld`: Raft, metadata, peer links) send each other
requests through their `PeerRequests` while the network drops, delays, reorders and
duplicates frames, links are cut (one broker isolated, or a pair) and brokers crash,
restart and pause: PING (answered at once with the broker's id and incarnation and the
body's echo), `slow` (answered after a drawn delay, sometimes past the deadline, by a
handler that defers; an answer of a crashed life never comes) and a kind nobody serves.
Requests go to any broker, the sender itself (the local path) and brokers that are down
included, with drawn deadlines and retry intervals. Then the faults end and the run lasts
past every deadline.

Checks, on every result and at the end:
- every result is for a request this broker life sent (`unknown-result`) and comes at most
  once (`completed-twice`);
- an answer is the right broker's answer to that request (`wrong-answer`): PING names the
  addressee's node id and incarnation and echoes the request's token; `slow` names the
  addressee and echoes the token; the unknown kind is answered UNSUPPORTED_VERSION; the
  only other outcome is REQUEST_TIMED_OUT (`wrong-error`), and never for a PING to itself;
- every request of a broker life still running at the end has completed exactly once
  (`never-completed`): a request dies only with the life that sent it.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import random
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

from broker.core.controller import ENSURE_INTERNAL_TOPIC, TRANSFER_LEADER
from broker.core.peer_codec import PeerResponse
from broker.core.peer_requests import PING, Inbound, PeerRequests, PeerRequestStats, PeerResult
from broker.core.producer_ids import ALLOC_PRODUCER_IDS
from broker.core.reassignment import REASSIGN_DONE
from broker.core.txn.participants import TXN_REQUEST
from broker.wire.errors import ErrorCode
from tests.sim.checker import Violation
from tests.sim.cluster_world import ClusterWorld, NetOptions, SimBroker

SLOW = "slow"
UNKNOWN = "no-such-kind"
FAULT_UNITS = 1000
"""The faulty phase (100 ticks of 10 units), then healing and the drain."""
MAX_DEADLINE_TICKS = 30
MAX_PAUSE_UNITS = 200
QUIET_RAFT = {"election_ticks": 20, "heartbeat_ticks": 6, "broker_heartbeat_ticks": 10}
"""Less Raft and heartbeat traffic than the runtime's: it is background here, and decoding
it is most of a seed's cost."""


@dataclass
class Sent:
    token: int
    src: int
    life: int
    dst: int
    kind: str
    results: list[PeerResult] = field(default_factory=list)


@dataclass
class PeerScenario:
    seed: int
    brokers: int
    drop: float
    duplicate: float
    reorder: float
    latency_max: int
    send_every: int
    crash_rate: float
    cut_rate: float
    pause_rate: float

    @classmethod
    def draw(cls, seed: int) -> PeerScenario:
        r = random.Random(seed * 104729 + 3)
        return cls(
            seed,
            r.choice((3, 3, 4)),
            r.choice((0.0, 0.05, 0.2)),
            r.choice((0.05, 0.2, 0.4)),
            r.choice((0.0, 0.1, 0.3)),
            r.choice((2, 4, 8)),
            r.choice((2, 4, 8)),
            r.choice((0.0, 0.03, 0.08)),
            r.choice((0.0, 0.03, 0.08)),
            r.choice((0.0, 0.02, 0.05)),
        )


@dataclass
class PeerRunResult:
    seed: int
    sent: int
    answered: int
    timed_out: int
    unsupported: int
    local: int
    crashes: int
    stats: PeerRequestStats
    violation: Violation | None
    trace: list[str]

    def repro(self, mutation: str | None = None) -> str:
        cmd = f"python -m tests.sim.peer_request_scenario --seed {self.seed}"
        return cmd + (f" --mutation {mutation}" if mutation else "")


class PeerRequestRun:
    def __init__(self, sc: PeerScenario) -> None:
        self.sc = sc
        self.rng = rng = random.Random(sc.seed)
        self.world = w = ClusterWorld(
            rng,
            sc.brokers,
            3,
            net=NetOptions(
                latency_max=sc.latency_max,
                drop=sc.drop,
                duplicate=sc.duplicate,
                reorder=sc.reorder,
                reorder_max=4 * sc.latency_max + 20,
            ),
            tick_units=[rng.randint(8, 12) for _ in range(sc.brokers)],
            node_options=dict(QUIET_RAFT),
            seed_label=f"p{sc.seed}",
        )
        self.sent: dict[tuple[int, int, int], Sent] = {}
        """(requester, its life, correlation id) -> the request."""
        self.tokens = 0
        self.lives: list[PeerRequests] = []
        w.on_peer_start = self._started
        w.on_peer_result = self._result
        for b in w.brokers.values():  # started by the world's constructor
            self._started(b)
        self.faulty = True
        self.cut_active = False

    # -- brokers ------------------------------------------------------------------------------

    def _started(self, b: SimBroker) -> None:
        pr = b.peer_requests
        assert pr is not None
        self.lives.append(pr)
        life = b.life
        w = self.world

        def slow(req: Inbound) -> None:
            def answer() -> None:
                if b.life == life:
                    pr.answer(req.key, {"by": b.id, "echo": req.body})
                    w.wake(b.id)

            w.at(w.now + self.rng.randint(0, 250), answer)

        pr.register(SLOW, slow)

    def _send(self) -> None:
        w, rng = self.world, self.rng
        w.at(w.now + self.sc.send_every, self._send)
        if not self.faulty:
            return
        up = [i for i in w.up() if w.brokers[i].paused_until <= w.now]
        if not up:
            return
        src = rng.choice(up)
        dst = src if rng.random() < 0.15 else rng.choice(sorted(w.brokers))
        kind = rng.choices((PING, SLOW, UNKNOWN), (6, 3, 1))[0]
        self.tokens += 1
        token = self.tokens
        deadline = rng.randint(5, MAX_DEADLINE_TICKS)
        retry = rng.randint(1, 6)
        cid = w.peer_request(src, dst, kind, token, deadline_ticks=deadline, retry_ticks=retry)
        life = w.brokers[src].life
        self.sent[src, life, cid] = Sent(token, src, life, dst, kind)

    def _result(self, bid: int, result: PeerResult) -> None:
        w = self.world
        life = w.brokers[bid].life
        sent = self.sent.get((bid, life, result.correlation_id))
        if sent is None or sent.dst != result.dst or sent.kind != result.kind:
            w.raise_violation("unknown-result", f"b{bid} life {life}: {result}")
        assert sent is not None
        sent.results.append(result)
        if len(sent.results) > 1:
            w.raise_violation("completed-twice", f"b{bid}: {sent}")
        self._check_answer(sent, result)

    def _check_answer(self, sent: Sent, r: PeerResult) -> None:
        w = self.world
        dst = sent.dst
        if r.error is ErrorCode.REQUEST_TIMED_OUT:
            if sent.kind == PING and dst == sent.src:
                w.raise_violation("wrong-error", f"a PING to itself timed out: {sent}")
            return
        if sent.kind == UNKNOWN:
            expected: tuple[ErrorCode, object] = (ErrorCode.UNSUPPORTED_VERSION, None)
        elif sent.kind == PING:
            me = {"node_id": dst, "incarnation": w.brokers[dst].disk.incarnation}
            served = (
                ALLOC_PRODUCER_IDS,
                ENSURE_INTERNAL_TOPIC,
                REASSIGN_DONE,
                TRANSFER_LEADER,
                TXN_REQUEST,
            )
            kinds = sorted([PING, SLOW, *served])
            expected = (ErrorCode.NONE, {**me, "kinds": kinds, "echo": sent.token})
        else:
            expected = (ErrorCode.NONE, {"by": dst, "echo": sent.token})
        if (r.error, r.body) != expected:
            kind = "wrong-answer" if r.ok else "wrong-error"
            w.raise_violation(kind, f"{sent} got {r}, expected {expected}")

    # -- faults -------------------------------------------------------------------------------

    def _faults(self) -> None:
        w, rng, sc = self.world, self.rng, self.sc
        w.at(w.now + 10, self._faults)
        if not self.faulty:
            return
        if sc.crash_rate and rng.random() < sc.crash_rate:
            victim = rng.choice(sorted(w.brokers))
            if w.brokers[victim].up:
                w.crash(victim)
                w.at(w.now + rng.randint(5, 300), lambda: w.restart(victim))
        if sc.cut_rate and not self.cut_active and rng.random() < sc.cut_rate:
            self.cut_active = True
            if rng.random() < 0.5:
                victim = rng.choice(sorted(w.brokers))
                w.log(f"fault: isolate b{victim}")
                w.isolate(victim)
            else:
                a, b = rng.sample(sorted(w.brokers), 2)
                one_way = rng.random() < 0.5
                w.log(f"fault: cut b{a} -> b{b}" + (" one way" if one_way else ""))
                w.cut(a, b, one_way=one_way)
            w.at(w.now + rng.randint(20, 400), self._heal)
        if sc.pause_rate and rng.random() < sc.pause_rate:
            w.pause(rng.choice(sorted(w.brokers)), rng.randint(10, MAX_PAUSE_UNITS))

    def _heal(self) -> None:
        self.world.heal()
        self.cut_active = False

    # -- the run ------------------------------------------------------------------------------

    def run(self) -> None:
        w = self.world
        w.at(1, self._send)
        w.at(1, self._faults)
        w.run_until(FAULT_UNITS)
        self.faulty = False
        self._heal()
        for bid, b in w.brokers.items():
            if not b.up:
                w.restart(bid)
        # Past every deadline (ticks of up to 12 units, and a pause).
        w.run_until(w.now + MAX_PAUSE_UNITS + 12 * (MAX_DEADLINE_TICKS + 5))
        for s in self.sent.values():
            if w.brokers[s.src].life == s.life and len(s.results) != 1:
                w.raise_violation("never-completed", f"{s} (its broker still runs that life)")

    def result(self, violation: Violation | None) -> PeerRunResult:
        outcomes = [r for s in self.sent.values() for r in s.results]
        stats = PeerRequestStats()
        for pr in self.lives:
            for name, value in vars(pr.stats).items():
                setattr(stats, name, getattr(stats, name) + value)
        return PeerRunResult(
            self.sc.seed,
            len(self.sent),
            sum(r.ok for r in outcomes),
            sum(r.error is ErrorCode.REQUEST_TIMED_OUT for r in outcomes),
            sum(r.error is ErrorCode.UNSUPPORTED_VERSION for r in outcomes),
            sum(s.src == s.dst for s in self.sent.values()),
            self.world.stats.crashes,
            stats,
            violation,
            list(self.world.trace),
        )


# -- planted faults (the checks must catch each) --------------------------------------------------


@contextlib.contextmanager
def _complete_twice() -> Iterator[None]:
    """The requester forgets to retire an answered request: a duplicated or resent answer
    completes it again."""
    original = PeerRequests.on_response

    def on_response(self: PeerRequests, src: int, response: PeerResponse) -> None:
        p = self._pending.get(response.correlation_id)
        original(self, src, response)
        if p is not None:
            self._pending[response.correlation_id] = p

    PeerRequests.on_response = on_response  # type: ignore[method-assign]
    try:
        yield
    finally:
        PeerRequests.on_response = original  # type: ignore[method-assign]


@contextlib.contextmanager
def _one_session() -> Iterator[None]:
    """Every broker life uses the same session: a restarted requester's ids start at 1 again
    and a responder answers them from what it cached for the earlier life."""
    original = ClusterWorld.__dict__["_session"]
    ClusterWorld._session = staticmethod(lambda b: b.id)  # type: ignore[method-assign]
    try:
        yield
    finally:
        ClusterWorld._session = original  # type: ignore[method-assign]


MUTATIONS: dict[str, Callable[[], AbstractContextManager[None]]] = {
    "complete-twice": _complete_twice,
    "one-session": _one_session,
}


def run_peer_seed(seed: int, mutation: str | None = None) -> PeerRunResult:
    violation: Violation | None = None
    with MUTATIONS[mutation]() if mutation else contextlib.nullcontext():
        run = PeerRequestRun(PeerScenario.draw(seed))
        try:
            run.run()
        except Violation as v:
            violation = v
        except Exception as e:  # a bug of the simulator or of the code under test
            tb = traceback.extract_tb(e.__traceback__)[-1]
            violation = Violation("sim-error", f"{e!r} at {tb.filename}:{tb.lineno}")
    if violation is not None:
        run.world.log(f"VIOLATION {violation}")
    return run.result(violation)


def _run_one(args: tuple[int, str | None]) -> PeerRunResult:
    return run_peer_seed(*args)


def peer_results(seeds: range, mutation: str | None, jobs: int) -> Iterator[PeerRunResult]:
    work = [(s, mutation) for s in seeds]
    if jobs <= 1:
        yield from map(_run_one, work)
        return
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("forkserver")) as pool:
        yield from pool.map(_run_one, work, chunksize=8)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, default=200)
    ap.add_argument("--seed", type=int, help="run this one seed and print its trace")
    ap.add_argument("--mutation", choices=sorted(MUTATIONS))
    ap.add_argument("--jobs", type=int, default=1)
    a = ap.parse_args(argv)
    began = time.monotonic()
    seeds = range(a.seed, a.seed + 1) if a.seed is not None else range(a.seeds)
    failed = 0
    for res in peer_results(seeds, a.mutation, a.jobs):
        seed = res.seed
        if res.violation is not None:
            failed += 1
            print(f"VIOLATION seed {seed}: {res.violation}\n  reproduce: {res.repro(a.mutation)}")
            if a.seed is not None:
                print("\n".join(f"    {line}" for line in res.trace))
        elif a.seed is not None:
            print(res)
    print(f"{len(seeds)} seeds, {failed} violations, {time.monotonic() - began:.1f}s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
