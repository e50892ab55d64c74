"""Partition assignors of the group coordinator: pure, deterministic functions of their input.

An assignor maps (members and their subscriptions, partition count per topic, the current
assignment) to a target assignment. Every assignor here:

- returns one entry per member of `members` (an empty frozenset when it gets nothing), in
  member-id order;
- assigns every partition of every topic that exists in `partitions` and that some member
  subscribes to, to exactly one member subscribed to that topic; nothing else is assigned;
- is deterministic: the output depends only on the values of its input, never on dict or set
  iteration order, hashes of strings, a clock or randomness.

`current` is cleaned first (see `clean_current`): owners that are not members, topics that
no longer exist, partitions beyond the partition count and partitions of topics the owner no
longer subscribes to are dropped; a partition listed under several members stays with the
lowest member id only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

TopicPartition = tuple[str, int]
Assignment = dict[str, frozenset[TopicPartition]]


@dataclass(frozen=True)
class Subscription:
    """The topics a member subscribes to, already resolved (a pattern was matched by the caller)."""

    topics: frozenset[str]


class Assignor(Protocol):
    """Computes a target assignment; see the module docstring for what every assignor ensures."""

    name: str

    def assign(
        self,
        members: Mapping[str, Subscription],
        partitions: Mapping[str, int],
        current: Mapping[str, frozenset[TopicPartition]],
    ) -> Assignment: ...


def clean_current(
    members: Mapping[str, Subscription],
    partitions: Mapping[str, int],
    current: Mapping[str, frozenset[TopicPartition]],
) -> dict[str, set[TopicPartition]]:
    """The part of `current` an assignor may keep: one entry per member, each partition valid.

    A partition is kept under a member when the member is in `members`, subscribes to its
    topic, the topic exists and `0 <= partition < partitions[topic]`; a partition valid under
    several members is kept under the lowest member id only.
    """
    kept: dict[str, set[TopicPartition]] = {member: set() for member in sorted(members)}
    claimed: set[TopicPartition] = set()
    for member in sorted(current):
        subscription = members.get(member)
        if subscription is None:
            continue
        for tp in sorted(current[member]):
            topic, index = tp
            if (
                topic in subscription.topics
                and 0 <= index < partitions.get(topic, 0)
                and tp not in claimed
            ):
                claimed.add(tp)
                kept[member].add(tp)
    return kept


def _subscribed_topics(
    members: Mapping[str, Subscription], partitions: Mapping[str, int]
) -> dict[str, frozenset[str]]:
    """Each member's subscription restricted to topics that exist, by member id."""
    return {m: frozenset(t for t in members[m].topics if t in partitions) for m in sorted(members)}


def _frozen(assignment: Mapping[str, Iterable[TopicPartition]]) -> Assignment:
    return {member: frozenset(assignment[member]) for member in sorted(assignment)}


class RangeAssignor:
    """Kafka's range assignor; not sticky (ignores `current`).

    Per topic with P partitions and N subscribers sorted by member id, subscriber k (0-based)
    gets the contiguous range starting at k * (P // N) + min(k, P % N), of length P // N plus
    one if k < P % N: the first P mod N subscribers get one extra partition.
    """

    name = "range"

    def assign(
        self,
        members: Mapping[str, Subscription],
        partitions: Mapping[str, int],
        current: Mapping[str, frozenset[TopicPartition]],
    ) -> Assignment:
        topics_of = _subscribed_topics(members, partitions)
        result: dict[str, list[TopicPartition]] = {member: [] for member in topics_of}
        for topic in sorted({t for topics in topics_of.values() for t in topics}):
            subscribers = [m for m in topics_of if topic in topics_of[m]]
            base, extra = divmod(partitions[topic], len(subscribers))
            start = 0
            for k, member in enumerate(subscribers):
                length = base + (1 if k < extra else 0)
                result[member].extend((topic, i) for i in range(start, start + length))
                start += length
        return _frozen(result)


class UniformAssignor:
    """The uniform sticky assignor (the default).

    Eligible members are those subscribed to at least one existing topic. The subscriptions
    are *homogeneous* when all eligible members subscribe to the same existing topics.

    Homogeneous, P partitions over N eligible members (r = P mod N):
    - balanced: r members get P // N + 1 partitions, the others P // N;
    - sticky, and minimal in moves: the r larger quotas go to the members keeping the most of
      their (cleaned) current partitions (ties: lower member id), and each member keeps
      min(|current|, quota) of them. So the partitions that change owner, counting only those
      whose current owner is still eligible, number exactly `minimum_moves(current sizes, P)`
      = sum over members of max(0, |current| - quota), which no balanced assignment can beat.
      After one member joins a balanced group, that is the sum over the old members of
      max(0, |current| - new quota), and every moved partition goes to the joiner; after one
      member of a balanced group leaves, it is 0 (only the leaver's partitions move).

    Heterogeneous (greedy): every member first keeps its cleaned current partitions; each
    remaining partition, topics with fewer subscribers first, goes to the subscriber holding
    the fewest (ties: lower id); then, while some member A owns a partition of a topic that a
    member B subscribes to with |A| >= |B| + 2, one such partition moves from A to the least
    loaded such B (newly placed partitions move before kept ones). Guaranteed at the end
    (locally balanced): for every partition owned by A, every member subscribed to its topic
    holds at least |A| - 1 partitions. A kept partition moves only in such a balancing step.
    Not guaranteed: a minimal global max-min spread, or a bound on the moves of a join or leave
    (a balancing step can cascade through overlapping subscriptions).

    Both cases: a valid, locally balanced assignment covering every partition (for example
    this assignor's own output) is returned unchanged, so a stable group never moves.
    """

    name = "uniform"

    def assign(
        self,
        members: Mapping[str, Subscription],
        partitions: Mapping[str, int],
        current: Mapping[str, frozenset[TopicPartition]],
    ) -> Assignment:
        topics_of = _subscribed_topics(members, partitions)
        kept = clean_current(members, partitions, current)
        eligible = [m for m in topics_of if topics_of[m]]
        result: Mapping[str, Iterable[TopicPartition]]
        if len({topics_of[m] for m in eligible}) <= 1:
            result = _assign_homogeneous(eligible, topics_of, partitions, kept)
        else:
            result = _assign_heterogeneous(topics_of, partitions, kept)
        return _frozen(result)


def minimum_moves(current_sizes: Iterable[int], total: int) -> int:
    """Fewest partitions that must leave their owners to balance `total` partitions.

    `current_sizes` are the numbers of valid partitions each of the N members holds now; a
    balanced assignment gives r = total mod N members total // N + 1 and the others
    total // N. Giving the larger quotas to the largest holders is optimal.
    """
    sizes = sorted(current_sizes, reverse=True)
    if not sizes:
        return 0
    base, extra = divmod(total, len(sizes))
    return sum(max(0, size - base - (1 if k < extra else 0)) for k, size in enumerate(sizes))


def _assign_homogeneous(
    eligible: list[str],
    topics_of: Mapping[str, frozenset[str]],
    partitions: Mapping[str, int],
    kept: Mapping[str, set[TopicPartition]],
) -> dict[str, list[TopicPartition]]:
    result: dict[str, list[TopicPartition]] = {member: [] for member in topics_of}
    if not eligible:
        return result
    topics = sorted(topics_of[eligible[0]])
    all_partitions = [(t, i) for t in topics for i in range(partitions[t])]
    base, extra = divmod(len(all_partitions), len(eligible))
    by_holding = sorted(eligible, key=lambda m: (-len(kept[m]), m))
    quota = {m: base + (1 if k < extra else 0) for k, m in enumerate(by_holding)}
    owned: set[TopicPartition] = set()
    for member in eligible:
        keep = sorted(kept[member])[: quota[member]]
        result[member].extend(keep)
        owned.update(keep)
    pool = iter(tp for tp in all_partitions if tp not in owned)
    for member in eligible:
        for _ in range(quota[member] - len(result[member])):
            result[member].append(next(pool))
    return result


def _assign_heterogeneous(
    topics_of: Mapping[str, frozenset[str]],
    partitions: Mapping[str, int],
    kept: Mapping[str, set[TopicPartition]],
) -> dict[str, set[TopicPartition]]:
    subscribers: dict[str, list[str]] = {}
    for member, topics in topics_of.items():
        for topic in topics:
            subscribers.setdefault(topic, []).append(member)
    owned: dict[str, set[TopicPartition]] = {m: set(kept[m]) for m in topics_of}
    placed: set[TopicPartition] = {tp for tps in kept.values() for tp in tps}
    newly_placed: set[TopicPartition] = set()

    def least_loaded(topic: str) -> str:
        return min(subscribers[topic], key=lambda m: (len(owned[m]), m))

    for topic in sorted(subscribers, key=lambda t: (len(subscribers[t]), t)):
        for index in range(partitions[topic]):
            tp = (topic, index)
            if tp not in placed:
                owned[least_loaded(topic)].add(tp)
                newly_placed.add(tp)

    while (move := _balancing_move(owned, least_loaded, newly_placed)) is not None:
        tp, source, target = move
        owned[source].remove(tp)
        owned[target].add(tp)
    return owned


def _balancing_move(
    owned: Mapping[str, set[TopicPartition]],
    least_loaded: Callable[[str], str],
    newly_placed: set[TopicPartition],
) -> tuple[TopicPartition, str, str] | None:
    """One partition to move from a member to a subscriber holding at least 2 fewer, if any.

    Each move lowers the sum of squared sizes by at least 2, so repeated moves terminate.
    """
    smallest = min((len(tps) for tps in owned.values()), default=0)
    for source in sorted(owned, key=lambda m: (-len(owned[m]), m)):
        if len(owned[source]) < smallest + 2:
            return None
        for topic in sorted({t for t, _ in owned[source]}):
            target = least_loaded(topic)
            if len(owned[source]) - len(owned[target]) >= 2:
                candidates = [tp for tp in owned[source] if tp[0] == topic]
                tp = max(candidates, key=lambda c: (c in newly_placed, c[1]))
                return tp, source, target
    return None


RANGE = RangeAssignor()
UNIFORM = UniformAssignor()
ASSIGNORS: dict[str, Assignor] = {UNIFORM.name: UNIFORM, RANGE.name: RANGE}
DEFAULT_ASSIGNOR = UNIFORM.name
