"""Replica rebalancing: where every partition's replicas go, as a pure function of the cluster.

`plan_rebalance` takes the brokers (id -> rack) and every partition's replicas (the first is
the preferred leader) and returns each partition's replicas after the plan, with the `Move`s
that get there. **Eligible** brokers are the keys of `brokers` minus `exclude`; a replica on
any other broker (one being drained, or one the partitions name but `brokers` does not: it
left the cluster) is **displaced** and must move, as is a second copy on the same broker.
With T replicas over n eligible brokers, the plan guarantees:

1. validity: every replica list keeps its length and names distinct eligible brokers
   (`ValueError` when a replication factor exceeds n);
2. replica balance: every eligible broker ends with its **share**, floor(T/n) or ceil(T/n)
   replicas, the ceil shares going to the brokers holding the most (ties: lower id, unless
   another broker at the same count needs the ceil to take a displaced replica);
3. leader balance: preferred leaders (first replicas) are spread the same way whenever the
   replica sets allow it, by reordering replica lists only (no data copy; a set of one
   replica pins its leader, so the spread is then the most even the sets allow). Reorders
   start at brokers leading more than their share, in sets whose data moves anyway first;
   a chain of reorders through other sets only when no single reorder does;
4. fewest moves: a replica moves only when displaced or when its broker is above its share.
   Without racks the plan thus copies the lower bound (the displaced replicas plus each
   broker's excess over its share) except when a displaced replica's set already holds
   every broker with room left and no room can be made by redirecting another displaced
   replica: it then goes to a full broker, which sheds one replica more;
5. racks (a partition's **span**: the distinct racks of its replicas, `None` counting as one
   rack): balance first, then racks, then fewest moves. A displaced replica goes to a rack
   its set lacks whenever an eligible broker there exists, even a full one (which then sheds
   a replica elsewhere); a broker above its share sheds replicas whose move keeps the span
   first, and lowers a span only when no other move restores the balance; last, every
   partition spanning fewer racks than it could (min(replication factor, eligible racks))
   is widened by moving a replica of a repeated rack to a missing one, with the reverse
   move in another partition (whose span it keeps) when the balance needs it. So racks cost
   moves (one or two per widened partition; a rack-aware placement needs none), and a span
   ends below its old value (counting only racks that keep an eligible broker) only when
   the balance forces it and no widening wins the rack back;
6. topic spread (best effort): among otherwise equal brokers, the one holding the fewest
   replicas of the partition's topic is chosen;
7. determinism: inputs are sorted and every tie goes to the lower broker id, then the lower
   (topic, partition), so the plan never depends on dict or set iteration order.

Greedy and polynomial (no search): each choice scans one broker's partitions or the eligible
brokers; 10,000 partitions of three replicas over 50 brokers plan in a fraction of a second.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

PartitionKey = tuple[str, int]
"""(topic, partition)."""
Rack = str | None


@dataclass(frozen=True, slots=True)
class Move:
    """One partition's replicas before and after the plan (first = preferred leader)."""

    topic: str
    partition: int
    old: tuple[int, ...]
    new: tuple[int, ...]

    @property
    def key(self) -> PartitionKey:
        return self.topic, self.partition

    @property
    def added(self) -> tuple[int, ...]:
        """Brokers that receive a copy of the data (in the order of `new`)."""
        return tuple(b for b in self.new if b not in self.old)

    @property
    def removed(self) -> tuple[int, ...]:
        """Brokers that drop their replica (in the order of `old`)."""
        return tuple(b for b in self.old if b not in self.new)

    @property
    def leader_only(self) -> bool:
        """The same brokers in another order: only the preferred leader changes."""
        return self.old != self.new and sorted(self.old) == sorted(self.new)


@dataclass(frozen=True, slots=True)
class RebalancePlan:
    """The outcome of `plan_rebalance`."""

    moves: tuple[Move, ...]
    """The partitions whose replica list changes, sorted by (topic, partition)."""
    layout: dict[PartitionKey, tuple[int, ...]]
    """Every partition's replicas after the plan."""
    replica_counts: dict[int, int]
    """Replicas per eligible broker after the plan."""
    leader_counts: dict[int, int]
    """Preferred leaders (first replicas) per eligible broker after the plan."""

    def replicas_moved(self) -> int:
        """Replicas added to brokers: the data copies the plan costs."""
        return sum(len(m.added) for m in self.moves)


def plan_rebalance(
    brokers: Mapping[int, str | None],
    partitions: Mapping[PartitionKey, tuple[int, ...]],
    *,
    exclude: Collection[int] = (),
) -> RebalancePlan:
    """The plan that balances `partitions` over the eligible brokers (see the module doc)."""
    eligible = sorted(set(brokers) - set(exclude))
    old = {key: tuple(partitions[key]) for key in sorted(partitions)}
    check_fits(old, len(eligible))
    planner = _Planner({b: brokers[b] for b in eligible}, old)
    planner.fill_displaced()
    planner.shed_excess()
    planner.repair_racks()
    planner.balance_leaders()
    return planner.result()


def check_fits(partitions: Mapping[PartitionKey, tuple[int, ...]], eligible: int) -> None:
    """Raise ValueError unless every partition has replicas and at most `eligible` of them."""
    for (topic, index), replicas in partitions.items():
        if not replicas:
            raise ValueError(f"partition {topic}-{index} has no replicas")
        if len(replicas) > eligible:
            raise ValueError(
                f"partition {topic}-{index} has replication factor {len(replicas)} but only "
                f"{eligible} eligible broker(s) remain"
            )


def balanced_shares(held: Mapping[int, int], total: int) -> dict[int, int]:
    """Each broker's share of `total` items: floor or ceil of the mean, the ceil ones to the
    brokers holding the most now (ties: lower id), so the fewest items leave their broker."""
    if not held:
        return {}
    base, extra = divmod(total, len(held))
    by_holding = sorted(held, key=lambda b: (-held[b], b))
    return {b: base + (1 if k < extra else 0) for k, b in enumerate(by_holding)}


def unused_ceil_share(share: Mapping[int, int], held: Callable[[int], int]) -> int | None:
    """A broker with a ceil share that holds no more than the floor (the one holding the
    fewest, ties: lower id): its extra unit can go to another broker at no cost."""
    floor = min(share.values(), default=0)
    spare = [b for b in sorted(share) if share[b] > floor >= held(b)]
    return min(spare, key=lambda b: (held(b), b), default=None)


def span(replicas: list[int], rack: Mapping[int, Rack]) -> int:
    """The distinct racks of `replicas`."""
    return len({rack[b] for b in replicas})


class _Planner:
    """The layout being planned, with the counts every choice reads."""

    def __init__(self, rack: dict[int, Rack], old: dict[PartitionKey, tuple[int, ...]]) -> None:
        self.rack = rack
        self.eligible = sorted(rack)
        self.old = old
        self.layout = {key: list(replicas) for key, replicas in old.items()}
        self.holds: dict[int, dict[PartitionKey, None]] = {b: {} for b in self.eligible}
        """Ordered sets (dicts) of the partitions each eligible broker holds."""
        self.per_topic: Counter[tuple[str, int]] = Counter()
        self.displaced: dict[PartitionKey, list[int]] = {}
        """Positions of displaced replicas, per partition."""
        for key, replicas in self.layout.items():
            seen: set[int] = set()
            for i, b in enumerate(replicas):
                if b in rack and b not in seen:
                    self._gain(key, b)
                else:
                    self.displaced.setdefault(key, []).append(i)
                seen.add(b)
        held = {b: len(self.holds[b]) for b in self.eligible}
        self.share = balanced_shares(held, sum(len(r) for r in old.values()))
        self.racks = len(set(rack.values()))
        self.leads: dict[int, dict[PartitionKey, None]] = {b: {} for b in self.eligible}
        """Ordered sets of the partitions each eligible broker leads (filled by step 4)."""

    # -- bookkeeping --------------------------------------------------------------------------

    def count(self, b: int) -> int:
        return len(self.holds[b])

    def _gain(self, key: PartitionKey, b: int) -> None:
        self.holds[b][key] = None
        self.per_topic[key[0], b] += 1

    def _lose(self, key: PartitionKey, b: int) -> None:
        del self.holds[b][key]
        self.per_topic[key[0], b] -= 1

    def move(self, key: PartitionKey, source: int, target: int) -> None:
        """Replace `source` by `target` in the partition's list, at the same position."""
        replicas = self.layout[key]
        replicas[replicas.index(source)] = target
        self._lose(key, source)
        self._gain(key, target)

    def rack_unique(self, key: PartitionKey, b: int) -> bool:
        """`b` is the partition's only replica in its rack, with others elsewhere: moving it
        may lower the span."""
        others = [self.rack[r] for r in self.layout[key] if r != b]
        return bool(others) and self.rack[b] not in others

    # -- 1. displaced replicas ----------------------------------------------------------------

    def fill_displaced(self) -> None:
        """Give every displaced replica an eligible broker outside its set: one in a rack the
        set lacks first, then one below its share (or at a floor share taking the ceil share
        of a broker that holds no more than the floor), then topic spread, then the most room.
        When the best is full, room is first made on it by passing a replica this step gave
        it on to a broker below its share (no extra copy); failing that the full broker takes
        it anyway and sheds a replica in step 2. The shares are then settled again, the ceil
        ones to the brokers holding the most."""
        given: dict[int, list[PartitionKey]] = {b: [] for b in self.eligible}
        for key, positions in self.displaced.items():
            replicas = self.layout[key]
            kept = [b for i, b in enumerate(replicas) if i not in positions]
            for i in positions:
                target = self._receiver_for_displaced(key, kept, given)
                replicas[i] = target
                kept.append(target)
                self._gain(key, target)
                given[target].append(key)
        held = {b: self.count(b) for b in self.eligible}
        self.share = balanced_shares(held, sum(held.values()))

    def _receiver_for_displaced(
        self, key: PartitionKey, kept: list[int], given: dict[int, list[PartitionKey]]
    ) -> int:
        """The broker for one displaced replica of `key` (see `fill_displaced`); `kept`: the
        set's eligible replicas so far."""
        rack, holds, share, per_topic = self.rack, self.holds, self.share, self.per_topic
        topic = key[0]
        present = {rack[b] for b in kept}
        lender = unused_ceil_share(share, self.count)
        floor = -1 if lender is None else share[lender] - 1

        def rank(b: int) -> tuple[bool, int, int, int, int]:
            """(rack present, 0: below its share, 1: full at a floor share and a ceil share
            is unused (`lender`), 2: full; topic spread, room, id)."""
            held = len(holds[b])
            room = 0 if held < share[b] else 1 if held == share[b] == floor else 2
            return rack[b] in present, room, per_topic[topic, b], held - share[b], b

        ranked = [rank(b) for b in self.eligible if b not in kept]
        best = min(ranked)
        if best[1] == 1 and lender is not None:
            share[best[-1]] += 1
            share[lender] -= 1
        if best[1] < 2:
            return best[-1]
        for rank_b in sorted(ranked):
            if rank_b[0] != best[0]:
                break
            if self._make_room(rank_b[-1], given):
                return rank_b[-1]
        return best[-1]

    def _make_room(self, full: int, given: dict[int, list[PartitionKey]]) -> bool:
        """Pass one replica that step 1 gave `full` on to a broker below its share, keeping
        that partition's span. Brokers below their share only fill up during step 1, so a
        replica that cannot be passed on now never can: it is forgotten."""
        under = [b for b in self.eligible if self.count(b) < self.share[b]]
        candidates = given[full]
        for i, key in enumerate(candidates):
            target = self._best_receiver(key, full, under, keep_span=True)
            if target is not None:
                self.move(key, full, target)
                del candidates[: i + 1]
                given[target].append(key)
                return True
        candidates.clear()
        return False

    # -- 2. brokers above their share ---------------------------------------------------------

    def shed_excess(self) -> None:
        """Move replicas off brokers above their share onto brokers below theirs, the most
        loaded broker first. A broker above its share holds more replicas than one below its
        share, so some partition has the first and not the second: without racks one pass
        over the broker's partitions always sheds its whole excess."""
        while True:
            over = [b for b in self.eligible if self.count(b) > self.share[b]]
            if not over:
                return
            source = min(over, key=lambda b: (self.share[b] - self.count(b), b))
            excess = self._shed(source, self.count(source) - self.share[source], keep_span=True)
            self._shed(source, excess, keep_span=False)

    def _shed(self, source: int, excess: int, *, keep_span: bool) -> int:
        """Move up to `excess` replicas off `source`; returns how many are left to move.
        First those whose move cannot lower the span (its rack repeats in the set, or the
        set has one replica), then those of the topics `source` holds most of."""
        under = [b for b in self.eligible if self.count(b) < self.share[b]]
        candidates = sorted(
            self.holds[source],
            key=lambda key: (
                self.rack_unique(key, source),
                -self.per_topic[key[0], source],
                key,
            ),
        )
        for key in candidates:
            if excess == 0:
                break
            target = self._best_receiver(key, source, under, keep_span=keep_span)
            if target is not None:
                self.move(key, source, target)
                excess -= 1
        return excess

    def _best_receiver(
        self, key: PartitionKey, source: int, under: list[int], *, keep_span: bool
    ) -> int | None:
        """The broker of `under` still below its share and outside the set that best takes
        `source`'s replica: the widest span, then topic spread, then the fewest replicas.
        None if there is none (or, with `keep_span`, if the best one lowers the span)."""
        rack, holds, share, topic = self.rack, self.holds, self.share, key[0]
        replicas = self.layout[key]
        rest = {rack[b] for b in replicas if b != source}
        loses = rack[source] not in rest
        options = [
            (loses - (rack[b] not in rest), self.per_topic[topic, b], len(holds[b]), b)
            for b in under
            if len(holds[b]) < share[b] and b not in replicas
        ]
        best = min(options, default=None)
        if best is None or (keep_span and best[0] > 0):
            return None
        return best[-1]

    # -- 3. rack spread -----------------------------------------------------------------------

    def repair_racks(self) -> None:
        """Widen every partition spanning fewer racks than it could, keeping the balance."""
        if self.racks < 2:
            return
        hopeless: set[tuple[int, int]] = set()
        for key, replicas in self.layout.items():
            goal = min(len(replicas), self.racks)
            while span(replicas, self.rack) < goal and self._widen(key, hopeless):
                pass

    def _widen(self, key: PartitionKey, hopeless: set[tuple[int, int]]) -> bool:
        """Move one replica of a repeated rack (a follower first) to a missing rack: directly
        when its broker holds more than the receiver (their shares swap), else paired with
        the reverse move in a partition of the receiver. `hopeless`: (giver, receiver) pairs
        with no such partition (not searched again)."""
        replicas = self.layout[key]
        racks = Counter(self.rack[b] for b in replicas)
        givers = [b for b in replicas[1:] + replicas[:1] if racks[self.rack[b]] > 1]
        receivers = sorted(
            (b for b in self.eligible if self.rack[b] not in racks),
            key=lambda b: (self.per_topic[key[0], b], self.count(b), b),
        )
        for giver in givers:
            for receiver in receivers:
                if self.count(giver) > self.count(receiver):
                    self.move(key, giver, receiver)
                    return True
            for receiver in receivers:
                if (giver, receiver) in hopeless:
                    continue
                partner = self._swap_partner(key, giver, receiver)
                if partner is None:
                    hopeless.add((giver, receiver))
                    continue
                self.move(key, giver, receiver)
                self.move(partner, receiver, giver)
                return True
        return False

    def _swap_partner(self, key: PartitionKey, giver: int, receiver: int) -> PartitionKey | None:
        """A partition of `receiver`, without `giver`, whose span survives `giver` replacing
        `receiver`: `giver`'s rack is missing there or `receiver`'s repeats. Latest first:
        partitions are repaired in order, so the early ones have no rack to spare."""
        rack = self.rack
        fallback = None
        for other in reversed(self.holds[receiver]):
            replicas = self.layout[other]
            if other == key or giver in replicas:
                continue
            rest = [rack[b] for b in replicas if b != receiver]
            gains, keeps = rack[giver] not in rest, rack[receiver] in rest
            if gains and keeps:
                return other
            if (gains or keeps) and fallback is None:
                fallback = other
        return fallback

    # -- 4. preferred leaders -----------------------------------------------------------------

    def balance_leaders(self) -> None:
        """Spread preferred leaders by reordering sets. First to shares (floor or ceil of the
        mean, the ceil to the brokers leading the most): brokers above their share hand
        partitions they lead to replicas below theirs, by single reorders while any is left
        (receivers fewer givers reach first), then to a replica at a floor share that takes
        an unused ceil share, then along the shortest chain of reorders. If sets forbid those
        shares (a set of one replica pins its leader), a broker hands to one leading at least
        two fewer, while any chain allows: each hand-over lowers the sum of squared leader
        counts, and when none is left the spread is the most even the sets allow."""
        if not self.eligible:
            return
        for key, replicas in self.layout.items():
            self.leads[replicas[0]][key] = None
        share = balanced_shares({b: self.leading(b) for b in self.eligible}, len(self.layout))
        givers = sorted(self.eligible, key=lambda b: (share[b] - self.leading(b), b))
        givers = [b for b in givers if self.leading(b) > share[b]]
        reach = Counter(r for b in givers for r in self._followers(b))
        while True:
            over = [b for b in givers if self.leading(b) > share[b]]
            if not any(self._hand_over(b, share, reach, chain=False) for b in over) and not any(
                self._hand_over_lending(b, share, reach) or self._hand_over(b, share, reach)
                for b in over
            ):
                break
        while True:
            givers = sorted(self.eligible, key=lambda b: (-self.leading(b), b))
            least = self.leading(givers[-1])
            givers = [b for b in givers if self.leading(b) >= least + 2]
            if not any(self._even_out(b) for b in givers):
                return

    def leading(self, b: int) -> int:
        return len(self.leads[b])

    def _followers(self, b: int) -> set[int]:
        """The brokers following `b` in a partition it leads."""
        return {r for key in self.leads[b] for r in self.layout[key][1:]}

    def _hand_over_lending(self, giver: int, share: dict[int, int], reach: Counter[int]) -> bool:
        """Hand one lead of `giver` to a replica at a floor share, which takes the ceil share
        of a broker leading no more than the floor."""
        lender = unused_ceil_share(share, self.leading)
        if lender is None:
            return False
        floor = share[lender] - 1
        room = {b: self.leading(b) + (self.leading(b) == share[b] == floor) for b in share}
        receiver = self._hand_over(giver, room, reach, chain=False)
        if receiver is None:
            return False
        share[receiver] += 1
        share[lender] -= 1
        return True

    def _even_out(self, giver: int) -> bool:
        """Hand one lead of `giver` to a broker leading at least two fewer."""
        below = {b: self.leading(giver) - 1 for b in self.eligible}
        return self._hand_over(giver, below, Counter()) is not None

    def _hand_over(
        self, giver: int, share: Mapping[int, int], reach: Counter[int], *, chain: bool = True
    ) -> int | None:
        """Hand one lead of `giver` to a broker leading fewer than its `share` (the furthest
        below first, then the one the fewest givers `reach`) and return it: by one reorder,
        of a set whose data moves anyway first, else (if `chain`) along the shortest chain of
        reorders."""
        need = {b: len(self.leads[b]) - share[b] for b in self.eligible}
        options = [
            (need[r], reach[r], self.layout[key] == list(self.old[key]), r, key)
            for key in self.leads[giver]
            for r in self.layout[key][1:]
            if need[r] < 0
        ]
        if options:
            *_, receiver, key = min(options)
            self._lead(key, receiver)
            return receiver
        return self._hand_over_chain(giver, share) if chain else None

    def _hand_over_chain(self, giver: int, share: Mapping[int, int]) -> int | None:
        """Breadth-first over "leads a partition where r is a replica": the shortest chain of
        reorders from `giver` to a broker leading fewer than its `share`."""
        via: dict[int, tuple[int, PartitionKey]] = {}
        frontier = [giver]
        while frontier:
            reached = []
            for b in frontier:
                for key in self.leads[b]:
                    for r in self.layout[key][1:]:
                        if r != giver and r not in via:
                            via[r] = (b, key)
                            reached.append(r)
            found = [r for r in reached if self.leading(r) < share[r]]
            if found:
                receiver = min(found, key=lambda r: (self.leading(r) - share[r], r))
                hop = receiver
                while hop != giver:
                    previous, key = via[hop]
                    self._lead(key, hop)
                    hop = previous
                return receiver
            frontier = reached
        return None

    def _lead(self, key: PartitionKey, leader: int) -> None:
        """Reorder the set: `leader` first, the others in their order."""
        replicas = self.layout[key]
        del self.leads[replicas[0]][key]
        replicas.remove(leader)
        replicas.insert(0, leader)
        self.leads[leader][key] = None

    # -- the plan -----------------------------------------------------------------------------

    def result(self) -> RebalancePlan:
        layout = {key: tuple(replicas) for key, replicas in self.layout.items()}
        moves = tuple(
            Move(key[0], key[1], self.old[key], layout[key])
            for key in layout
            if layout[key] != self.old[key]
        )
        leaders = Counter(replicas[0] for replicas in layout.values())
        return RebalancePlan(
            moves,
            layout,
            {b: self.count(b) for b in self.eligible},
            {b: leaders[b] for b in self.eligible},
        )
