"""Valid inputs for the fuzzer to start from, built with the real encoders.

`ClientCorpus` draws valid requests of every API (the shapes `broker.wire.messages` accepts),
`PeerCorpus` valid peer frames: hellos (of this version, an older one without a version and a
newer one with more fields), Raft batches holding messages of all twelve types (entries,
configurations and snapshots consistent as `peer_codec` requires), broker heartbeats and
their acks, peer requests (PING and kinds nobody serves), responses, and a newer peer's frames
of kinds this version does not know. Both draw only from the RNG they are given.

What they name is chosen so that a *valid* request cannot damage what the live run checks:
writes (produce, create, delete) go to the fuzzer's own topics (`FUZZ_TOPICS`), reads may
also name the checked topics; the fuzzer re-checks every mutated input the same way
(`client_frames.py`, `peer_frames.py`), since a mutation can turn one name into another.
Consumer-group requests that change a group (heartbeats, commits, deletes) name only the
fuzzer's own groups and members (`FUZZ_GROUPS`, `FUZZ_MEMBERS`) and commit offsets only of
FUZZ_TOPICS partitions, so the groups, members and offsets the broker keeps stay few however
long the run; reads (find coordinator, offset fetch, list, describe) may name any group.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import cbor2

from broker.core.peer_codec import (
    HELLO,
    HELLO_OK,
    MAX_CORRELATION_ID,
    MAX_INDEX,
    PEER_FEATURES,
    PEER_PROTOCOL_VERSION,
    REQUEST_SHAPED_KINDS,
    BrokerHeartbeat,
    HeartbeatAck,
    Hello,
    PeerRequest,
    PeerResponse,
    encode_heartbeat,
    encode_heartbeat_ack,
    encode_hello,
    encode_peer_request,
    encode_peer_response,
    encode_raft,
    encode_reject,
)
from broker.core.peer_requests import PING
from broker.core.raft import ConfState, Entry, EntryKind, Message
from broker.core.raft.types import (
    AppendEntries,
    AppendResponse,
    ConfVouch,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    ReadIndexRequest,
    ReadIndexResponse,
    RequestVote,
    SnapshotMeta,
    SnapshotResponse,
    TimeoutNow,
    TransferLeader,
    VoteResponse,
)
from broker.wire.batch import Record, encode_batch
from broker.wire.errors import ErrorCode
from broker.wire.group_messages import (
    MAX_PATTERN,
    CommitPartition,
    CommitTopic,
    CoordinatorType,
    DeleteGroupsRequest,
    DescribeGroupsRequest,
    FindCoordinatorRequest,
    GroupHeartbeatRequest,
    ListGroupsRequest,
    OffsetCommitRequest,
    OffsetFetchRequest,
    to_topic_partitions,
)
from broker.wire.messages import (
    ApiVersionsRequest,
    CreateTopicsRequest,
    DeleteTopicsRequest,
    DescribeClusterRequest,
    FetchPartition,
    FetchRequest,
    FetchTopic,
    InitProducerIdRequest,
    IsolationLevel,
    ListOffsetsPartition,
    ListOffsetsRequest,
    ListOffsetsTopic,
    MetadataRequest,
    NewTopic,
    ProducePartition,
    ProduceRequest,
    ProduceTopic,
    Request,
)
from tests.fuzz.mutate import Node

FUZZ_TOPICS: tuple[str, ...] = tuple(f"fz-{i}" for i in range(8))
"""The only topics valid fuzz requests create, delete or write to (a small pool, so the
broker's state stays bounded however long the run)."""

MAX_FUZZ_PARTITIONS = 4
"""Most partitions a fuzz topic may have (and most replicas)."""

FUZZ_GROUPS: tuple[str, ...] = tuple(f"fz-group-{i}" for i in range(4))
"""The only consumer groups valid fuzz requests join, commit to or delete."""
FUZZ_MEMBERS: tuple[str, ...] = tuple(f"fz-member-{i}" for i in range(4))
"""The only member ids (and static instance ids) of valid fuzz heartbeats and commits."""
FUZZ_PATTERNS: tuple[str, ...] = ("fz-.*", "fz-[0-3]", "^fz-1$", "(", "a" * MAX_PATTERN)
"""Subscription patterns: matching some FUZZ_TOPICS, one that does not compile (answered
INVALID_REGULAR_EXPRESSION) and the longest allowed."""

Member = tuple[int, int]


def _term(r: random.Random) -> int:
    roll = r.random()
    if roll < 0.5:
        return r.randint(0, 8)
    if roll < 0.8:
        return r.randint(0, 10_000)
    return r.choice((2**31, 2**40, MAX_INDEX - 1, MAX_INDEX))


def _index(r: random.Random) -> int:
    roll = r.random()
    if roll < 0.4:
        return r.randint(0, 20)
    if roll < 0.8:
        return r.randint(0, 100_000)
    return r.choice((2**31, 2**40, MAX_INDEX - 64))


@dataclass(frozen=True, slots=True)
class ClientCorpus:
    """Valid requests. `read_topics` may be read (fetch, list offsets, metadata), only
    FUZZ_TOPICS are written. `park_topic` (partitions 0 and 1, little data) is where fetches
    that wait for more bytes than will ever come are parked."""

    rng: random.Random
    read_topics: tuple[str, ...]
    park_topic: str

    def request(self) -> Request:
        r = self.rng
        if r.random() < 0.3:  # consumer groups: 7 of the 16 APIs, 30% of the requests
            return r.choice(
                (
                    self.find_coordinator,
                    self.group_heartbeat,
                    self.group_heartbeat,
                    self.offset_commit,
                    self.offset_fetch,
                    self.list_groups,
                    self.describe_groups,
                    self.delete_groups,
                )
            )()
        return r.choice(
            (
                self.api_versions,
                self.metadata,
                self.create_topics,
                self.delete_topics,
                self.produce,
                self.produce,
                self.fetch,
                self.fetch,
                self.list_offsets,
                self.init_producer_id,
                self.describe_cluster,
            )
        )()

    def _any_topic(self) -> str:
        r = self.rng
        return r.choice(self.read_topics) if r.random() < 0.5 else r.choice(FUZZ_TOPICS)

    def api_versions(self) -> Request:
        return ApiVersionsRequest()

    def describe_cluster(self) -> Request:
        return DescribeClusterRequest()

    def metadata(self) -> Request:
        r = self.rng
        if r.random() < 0.3:
            return MetadataRequest(topics=None)
        names = {self._any_topic() for _ in range(r.randint(0, 3))}
        return MetadataRequest(topics=tuple(sorted(names)))

    def create_topics(self) -> Request:
        r = self.rng
        config = r.choice(({}, {"retention.ms": "-1"}, {"max.message.bytes": "4096"}))
        topic = NewTopic(
            name=r.choice(FUZZ_TOPICS),
            partitions=r.choice((-1, 1, 2)),
            replication_factor=r.choice((-1, 1, 1, 2)),
            config=config,
        )
        return CreateTopicsRequest(topics=(topic,), timeout_ms=r.randint(0, 2_000))

    def delete_topics(self) -> Request:
        r = self.rng
        return DeleteTopicsRequest(names=(r.choice(FUZZ_TOPICS),), timeout_ms=r.randint(0, 2_000))

    def batch(self) -> bytes:
        """A valid record batch: plain, or idempotent with drawn producer fields."""
        r = self.rng
        ts = r.randint(0, 2**41)
        records = [
            Record(
                key=r.choice((None, b"", r.randbytes(r.randint(1, 16)))),
                value=r.choice((None, r.randbytes(r.randint(0, 64)))),
                headers=(("h", b"v"),) if r.random() < 0.2 else (),
                timestamp=ts + r.randint(-1000, 1000),
            )
            for _ in range(r.randint(1, 5))
        ]
        if r.random() < 0.5:
            return encode_batch(records)
        return encode_batch(
            records,
            producer_id=r.choice((0, 1, r.randint(0, 2**40))),
            producer_epoch=r.choice((0, 1, 0x7FFF)),
            base_sequence=r.choice((0, 0, 1, 5, 2**31 - 1)),
        )

    def produce(self) -> Request:
        r = self.rng
        parts = tuple(
            ProducePartition(partition=p, batch=self.batch())
            for p in sorted(r.sample(range(MAX_FUZZ_PARTITIONS), r.randint(1, 2)))
        )
        return ProduceRequest(
            topics=(ProduceTopic(name=r.choice(FUZZ_TOPICS), partitions=parts),),
            timeout_ms=r.randint(100, 2_000),
            trace_context=r.choice((None, self.traceparent())),
        )

    def traceparent(self) -> str:
        """A valid W3C traceparent (sent only at PRODUCE v1: version 0 leaves it out)."""
        r = self.rng
        return f"00-{r.randrange(1, 1 << 128):032x}-{r.randrange(1, 1 << 64):016x}-01"

    def fetch(self) -> Request:
        r = self.rng
        parts = tuple(
            FetchPartition(
                partition=p,
                offset=r.choice((0, 0, 1, 100, r.randint(0, 5_000))),
                max_bytes=r.choice((1, 1024, 1 << 16, 1 << 20)),
            )
            for p in sorted(r.sample(range(MAX_FUZZ_PARTITIONS), r.randint(1, 3)))
        )
        if r.random() < 0.03:
            # Parked for its whole max wait (the fuzzer hangs up meanwhile). At most a minute,
            # on a topic with little data: the broker re-reads every parked fetch after each
            # round, so long ones over much data would pile up and take its whole CPU in a
            # long run (mutations still draw such fetches, rarely).
            part = FetchPartition(partition=r.randrange(2), offset=0, max_bytes=1 << 20)
            return FetchRequest(
                topics=(FetchTopic(name=self.park_topic, partitions=(part,)),),
                max_wait_ms=r.choice((5_000, 60_000)),
                min_bytes=2**31 - 1,
            )
        return FetchRequest(
            topics=(FetchTopic(name=self._any_topic(), partitions=parts),),
            max_wait_ms=r.choice((0, 0, 10, 100)),
            min_bytes=r.choice((0, 1, 1)),
            max_bytes=r.choice((1 << 10, 1 << 20, 50 << 20)),
            isolation=r.choice(tuple(IsolationLevel)),
        )

    def list_offsets(self) -> Request:
        r = self.rng
        parts = tuple(
            ListOffsetsPartition(partition=p, timestamp=r.choice((-2, -1, 0, r.randint(0, 2**41))))
            for p in sorted(r.sample(range(MAX_FUZZ_PARTITIONS), r.randint(1, 3)))
        )
        return ListOffsetsRequest(
            topics=(ListOffsetsTopic(name=self._any_topic(), partitions=parts),),
            isolation=r.choice(tuple(IsolationLevel)),
        )

    def init_producer_id(self) -> Request:
        r = self.rng
        if r.random() < 0.6:
            return InitProducerIdRequest()
        return InitProducerIdRequest(
            producer_id=r.randint(0, 2**40), producer_epoch=r.choice((0, 1, 0x7FFF))
        )

    # -- consumer groups ----------------------------------------------------------------------

    def _group(self) -> str:
        """A group to read about: mostly the fuzzer's own, sometimes one nobody made."""
        r = self.rng
        return r.choice(FUZZ_GROUPS) if r.random() < 0.8 else f"fz-nogroup-{r.randrange(4)}"

    def _fuzz_partitions(self, most: int) -> list[tuple[str, int]]:
        r = self.rng
        every = [(t, p) for t in FUZZ_TOPICS[:3] for p in range(MAX_FUZZ_PARTITIONS)]
        return r.sample(every, r.randint(0, most))

    def find_coordinator(self) -> Request:
        r = self.rng
        if r.random() < 0.1:  # a transactional id's coordinator (a later stage: any answer)
            return FindCoordinatorRequest(key="fz-tx", key_type=CoordinatorType.TRANSACTION)
        return FindCoordinatorRequest(key=self._group())

    def group_heartbeat(self) -> Request:
        """A member of a fuzz group joining (epoch 0), leaving (-1, -2) or heartbeating at an
        epoch that may be its own or not (then it is fenced: any answer is fine)."""
        r = self.rng
        topics = sorted({r.choice(FUZZ_TOPICS) for _ in range(r.randint(0, 3))})
        return GroupHeartbeatRequest(
            group_id=r.choice(FUZZ_GROUPS),
            member_id=r.choice(FUZZ_MEMBERS),
            member_epoch=r.choice((0, 0, 1, 2, -1, -2, r.randint(0, 50))),
            instance_id=r.choice((None, None, r.choice(FUZZ_MEMBERS))),
            client_host=r.choice((None, "127.0.0.1")),
            session_timeout_ms=r.choice((0, 6_000, 45_000)),
            topics=tuple(topics),
            pattern=r.choice((None, None, None, r.choice(FUZZ_PATTERNS))),
            assignor=r.choice((None, None, "uniform", "range", "fz-no-such-assignor")),
            owned=to_topic_partitions(self._fuzz_partitions(4)),
        )

    def offset_commit(self) -> Request:
        """A member's commit (its epoch may be stale) or an operator's (member "", epoch
        -1), of FUZZ_TOPICS partitions only."""
        r = self.rng
        if r.random() < 0.3:
            member, epoch = "", -1
        else:
            member, epoch = r.choice(FUZZ_MEMBERS), r.choice((0, 1, 2, r.randint(0, 50)))
        by_topic: dict[str, list[CommitPartition]] = {}
        for topic, partition in sorted(set(self._fuzz_partitions(3))):
            offset = r.choice((0, 1, r.randint(0, 10_000), 2**63 - 1))
            meta = r.choice((None, None, "", "fz-meta"))
            by_topic.setdefault(topic, []).append(
                CommitPartition(partition=partition, offset=offset, metadata=meta)
            )
        return OffsetCommitRequest(
            group_id=r.choice(FUZZ_GROUPS),
            member_id=member,
            member_epoch=epoch,
            topics=tuple(CommitTopic(topic=t, partitions=tuple(p)) for t, p in by_topic.items()),
        )

    def offset_fetch(self) -> Request:
        r = self.rng
        if r.random() < 0.4:
            return OffsetFetchRequest(group_id=self._group(), topics=None)
        tps = [(self._any_topic(), p) for p in range(r.randint(0, 2))]
        return OffsetFetchRequest(group_id=self._group(), topics=to_topic_partitions(tps))

    def list_groups(self) -> Request:
        return ListGroupsRequest()

    def describe_groups(self) -> Request:
        r = self.rng
        return DescribeGroupsRequest(
            group_ids=tuple(sorted({self._group() for _ in range(r.randint(0, 3))}))
        )

    def delete_groups(self) -> Request:
        r = self.rng
        return DeleteGroupsRequest(
            group_ids=tuple(sorted({r.choice(FUZZ_GROUPS) for _ in range(r.randint(1, 2))}))
        )


@dataclass(frozen=True, slots=True)
class PeerCorpus:
    """Valid peer frames (payloads without the length prefix, and as CBOR trees), as broker
    `me` would send them to broker `broker` over its link; Raft messages name `groups`."""

    rng: random.Random
    broker: Member
    """The attacked broker as a Raft member: (node id, incarnation)."""
    groups: tuple[int, ...]

    # -- hellos, heartbeats, other kinds -----------------------------------------------------

    def hello(self, me: Member, cluster_id: str | None = None) -> bytes:
        return encode_hello(Hello(cluster_id, me[0], me[1], "127.0.0.1:1", False), HELLO)

    def hello_old(self, me: Member) -> bytes:
        """An older broker's hello: no version, no features (version 0)."""
        return cbor2.dumps([HELLO, [None, me[0], me[1], "127.0.0.1:1", False]])

    def hello_newer(self, me: Member) -> bytes:
        """A newer broker's hello: a higher version, more features, fields we do not know."""
        r = self.rng
        version = PEER_PROTOCOL_VERSION + r.randint(1, 3)
        features = [*PEER_FEATURES, *(f"later-{i}" for i in range(r.randint(0, 3)))]
        extra = [r.choice((None, 7, "x", [1, 2])) for _ in range(r.randint(0, 3))]
        body = [None, me[0], me[1], "127.0.0.1:1", False, version, features, *extra]
        return cbor2.dumps([HELLO, body])

    # -- peer requests ------------------------------------------------------------------------

    def _value(self, depth: int = 0) -> object:
        """A small plain CBOR value."""
        r = self.rng
        which = r.randrange(8 if depth < 2 else 5)
        if which == 0:
            return None
        if which == 1:
            return r.randint(-(2**63), 2**64 - 1)
        if which == 2:
            return r.randbytes(r.randint(0, 64))
        if which == 3:
            return "".join(r.choice("abcdé-") for _ in range(r.randint(0, 16)))
        if which == 4:
            return r.random() < 0.5
        if which == 5:
            return r.uniform(-1e9, 1e9)
        if which == 6:
            return [self._value(depth + 1) for _ in range(r.randint(0, 4))]
        return {f"k{i}": self._value(depth + 1) for i in range(r.randint(0, 4))}

    def peer_request(self, session: int) -> bytes:
        """A PING or a request of a kind nobody serves, with a fresh correlation id."""
        r = self.rng
        kind = PING if r.random() < 0.6 else f"fz-{r.getrandbits(24):06x}"
        cid = r.randint(1, MAX_CORRELATION_ID)
        return encode_peer_request(PeerRequest(session, cid, kind, self._value()))

    def peer_response(self) -> bytes:
        """An answer to nothing the broker asked (it ignores it)."""
        r = self.rng
        error = r.choice((ErrorCode.NONE, ErrorCode.UNSUPPORTED_VERSION))
        cid = r.randint(1, MAX_CORRELATION_ID)
        message = r.choice((None, "fuzz"))
        return encode_peer_response(
            PeerResponse(r.getrandbits(63), cid, error, message, self._value())
        )

    def future_frame(self, session: int) -> bytes:
        """A frame of a kind this version does not know (a newer peer's), request-shaped
        (answered UNSUPPORTED_VERSION by a broker linked to a newer peer) or not."""
        r = self.rng
        if r.random() < 0.6:
            kind = r.choice(REQUEST_SHAPED_KINDS)
            body: object = [session, r.randint(1, MAX_CORRELATION_ID), self._value()]
        else:
            kind = r.choice((8, 9, 40, 130, 1000))
            body = self._value()
        return cbor2.dumps([kind, body])

    def heartbeat(self, me: Member) -> bytes:
        r = self.rng
        leaders = tuple(
            (g, _term(r), me[0]) for g in sorted(r.sample(self.groups, min(2, len(self.groups))))
        )
        caught = tuple((g, (me[0],), r.randint(0, 100)) for g, _, _ in leaders)
        return encode_heartbeat(
            BrokerHeartbeat(
                me[0], me[1], "127.0.0.1", 1, "127.0.0.1", 1, r.choice((None, "rack-a")),
                leaders if r.random() < 0.7 else (), caught if r.random() < 0.7 else (),
            )
        )  # fmt: skip

    def other(self, me: Member) -> bytes:
        """A frame of a kind the broker does not expect on an open link."""
        r = self.rng
        which = r.randrange(4)
        if which == 0:
            return encode_heartbeat_ack(HeartbeatAck(r.random() < 0.5, r.choice((None, 0, me[0]))))
        if which == 1:
            return encode_reject("fuzz")
        if which == 2:
            return encode_hello(Hello(None, me[0], me[1], "127.0.0.1:1", True), HELLO_OK)
        return cbor2.dumps([r.randint(6, 300), []])

    # -- Raft ---------------------------------------------------------------------------------

    def raft(self, me: Member) -> bytes:
        """A RAFT frame of 1-4 messages from `me` to the broker."""
        r = self.rng
        batch = [(r.choice(self.groups), self.message(me)) for _ in range(r.randint(1, 4))]
        return encode_raft(batch)

    def _conf(self, me: Member) -> ConfState:
        r = self.rng
        voters = {self.broker} if r.random() < 0.7 else set()
        if r.random() < 0.5:
            voters.add(me)
        learners = {(me[0], me[1] + 1)} if r.random() < 0.3 else set()
        return ConfState(frozenset(voters), frozenset(learners))

    def _entries(self, me: Member, prev_index: int, prev_term: int, term: int) -> list[Entry]:
        r = self.rng
        out: list[Entry] = []
        t = prev_term
        for i in range(r.randint(0, 4)):
            t = r.randint(t, term)
            kind = r.choice(tuple(EntryKind))
            conf = self._conf(me) if kind is EntryKind.CONF else None
            data = b"" if kind is EntryKind.NOOP else r.randbytes(r.randint(0, 48))
            out.append(Entry(prev_index + 1 + i, t, kind, data, conf))
        return out

    def message(self, me: Member) -> Message:
        """One valid Raft message of a drawn type from `me` to the broker."""
        r = self.rng
        dst = self.broker
        term = _term(r)
        kind = r.randrange(12)
        if kind == 0:
            prev_index = _index(r)
            prev_term = r.randint(0, term)
            entries = self._entries(me, prev_index, prev_term, term)
            commit = r.choice((0, prev_index, prev_index + len(entries), _index(r)))
            return AppendEntries(me, dst, term, prev_index, prev_term, entries, commit)
        if kind == 1:
            return AppendResponse(
                me, dst, term, _index(r), r.random() < 0.3, _index(r), r.randint(0, term)
            )
        if kind == 2:
            return Heartbeat(me, dst, term, _index(r), r.choice((None, b"", r.randbytes(8))))
        if kind == 3:
            return HeartbeatResponse(me, dst, term, r.choice((None, r.randbytes(8))))
        if kind == 4:
            return RequestVote(
                me, dst, term, _index(r), r.randint(0, term), r.random() < 0.5, r.random() < 0.2
            )
        if kind == 5:
            return VoteResponse(me, dst, term, r.random() < 0.5, r.random() < 0.5)
        if kind == 6:
            meta = SnapshotMeta(_index(r), r.randint(0, term), self._conf(me))
            total = r.randint(0, 4096)
            offset = r.randint(0, total)
            data = r.randbytes(r.randint(0, min(512, total - offset)))
            vouch = None
            if r.random() < 0.3:  # a member added after the snapshot
                vouch = ConfVouch(r.choice((meta.index + 1, _index(r))), self._conf(me))
            return InstallSnapshot(me, dst, term, meta, offset, data, total, vouch)
        if kind == 7:
            if r.random() < 0.1:  # a refusal
                return SnapshotResponse(me, dst, term, _index(r), 0, True)
            return SnapshotResponse(me, dst, term, _index(r), r.randint(0, 4096))
        if kind == 8:
            return TimeoutNow(me, dst, term)
        if kind == 9:
            return ReadIndexRequest(me, dst, term, r.randbytes(r.randint(0, 16)))
        if kind == 10:
            return ReadIndexResponse(me, dst, term, r.randbytes(r.randint(0, 16)), _index(r))
        return TransferLeader(me, dst, term, r.choice((dst, me)))


def tree(payload: bytes) -> Node:
    """The CBOR tree of a valid payload, for the mutator."""
    return cbor2.loads(payload)
