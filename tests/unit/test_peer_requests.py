"""The pure peer-request core (`broker.core.peer_requests`): retries every retry_ticks, the
deadline, exactly one result per request whatever arrives twice, idempotent serving
(duplicates answered from a bounded cache), unknown kinds answered with an error, the local
path, sessions across restarts, and bounded memory on the responder."""

from __future__ import annotations

import pytest

from broker.core.peer_codec import (
    PEER_MESSAGE_BYTES,
    PEER_REQUEST,
    PEER_RESPONSE,
    PeerRequest,
    PeerResponse,
    decode_frame,
)
from broker.core.peer_requests import PING, Answer, Inbound, PeerRequests, PeerResult, ReplyKey
from broker.wire.errors import ErrorCode


def broker(node_id: int, session: int = 0, **options: int) -> PeerRequests:
    return PeerRequests(node_id, 100 + node_id, session or 1000 + node_id, **options)


def deliver(brokers: dict[int, PeerRequests], src: int, dst: int, frame: bytes) -> None:
    kind, body = decode_frame(frame)
    if kind == PEER_REQUEST:
        assert isinstance(body, PeerRequest)
        brokers[dst].on_request(src, body)
    else:
        assert kind == PEER_RESPONSE and isinstance(body, PeerResponse)
        brokers[dst].on_response(src, body)


def flush(brokers: dict[int, PeerRequests]) -> None:
    """Every frame to its destination, until nothing moves."""
    moved = True
    while moved:
        moved = False
        for src, b in brokers.items():
            moved |= b.run_local() > 0
            for dst, frame in b.take_outgoing():
                moved = True
                deliver(brokers, src, dst, frame)


class Counting:
    """A handler that counts its calls and answers with their number, or defers."""

    def __init__(self, defer: bool = False) -> None:
        self.calls: list[Inbound] = []
        self.defer = defer

    def __call__(self, req: Inbound) -> Answer | None:
        self.calls.append(req)
        return None if self.defer else Answer({"call": len(self.calls), "body": req.body})


def test_a_request_is_resent_every_retry_ticks_until_its_deadline() -> None:
    a = broker(1)
    cid = a.request(2, PING, "x", deadline_ticks=10, retry_ticks=3)
    sent = [len(a.take_outgoing())]
    for _ in range(12):
        a.tick()
        sent.append(len(a.take_outgoing()))
    assert [t for t, n in enumerate(sent) if n] == [0, 3, 6, 9]
    assert sum(sent) == 4 and a.stats.resent == 3
    [result] = a.take_results()
    assert (result.correlation_id, result.error) == (cid, ErrorCode.REQUEST_TIMED_OUT)
    assert not result.ok and a.pending() == 0
    assert a.take_results() == []


def test_an_answer_completes_a_request_once_and_duplicates_are_ignored() -> None:
    brokers = {1: broker(1), 2: broker(2)}
    a = brokers[1]
    cid = a.request(2, PING, [1, "two"], retry_ticks=1)
    frames = a.take_outgoing()
    a.tick()
    frames += a.take_outgoing()  # the resend: the peer gets the request twice
    assert len(frames) == 2
    for dst, frame in frames:
        deliver(brokers, 1, dst, frame)
    answers = brokers[2].take_outgoing()
    assert len(answers) == 2 and answers[0] == answers[1]  # the second from the cache
    assert brokers[2].stats.served == 1 and brokers[2].stats.duplicates == 1
    for _, frame in answers:
        deliver(brokers, 2, 1, frame)
    [result] = a.take_results()
    assert result == PeerResult(
        cid, 2, PING, ErrorCode.NONE, None,
        {"node_id": 2, "incarnation": 102, "kinds": [PING], "echo": [1, "two"]},
    )  # fmt: skip
    assert a.stats.stray_responses == 1
    for _ in range(200):
        a.tick()
    assert a.take_results() == [] and a.take_outgoing() == []  # nothing after completion


def test_a_late_answer_after_the_deadline_is_ignored() -> None:
    brokers = {1: broker(1), 2: broker(2)}
    a = brokers[1]
    a.request(2, PING, deadline_ticks=2)
    [(dst, frame)] = a.take_outgoing()
    a.tick()
    a.tick()
    assert [r.error for r in a.take_results()] == [ErrorCode.REQUEST_TIMED_OUT]
    deliver(brokers, 1, dst, frame)
    flush(brokers)
    assert a.take_results() == [] and a.stats.stray_responses == 1


def test_answers_from_another_broker_or_session_are_ignored() -> None:
    a = broker(1, session=7)
    cid = a.request(2, PING)
    a.on_response(3, PeerResponse(7, cid, ErrorCode.NONE, None, "from 3"))
    a.on_response(2, PeerResponse(8, cid, ErrorCode.NONE, None, "another session"))
    a.on_response(2, PeerResponse(7, cid + 1, ErrorCode.NONE, None, "another id"))
    assert a.take_results() == [] and a.stats.stray_responses == 3
    a.on_response(2, PeerResponse(7, cid, ErrorCode.NONE, None, "right"))
    assert [r.body for r in a.take_results()] == ["right"]


def test_an_unknown_kind_is_answered_with_an_error() -> None:
    brokers = {1: broker(1), 2: broker(2)}
    cid = brokers[1].request(2, "no-such-kind", {"k": 1})
    flush(brokers)
    [result] = brokers[1].take_results()
    assert result.correlation_id == cid and result.error is ErrorCode.UNSUPPORTED_VERSION
    assert result.message is not None and "no-such-kind" in result.message
    assert brokers[2].stats.unknown_kinds == 1 and brokers[2].cached_answers() == 0


def test_a_deferred_answer_and_duplicates_while_it_is_open() -> None:
    brokers = {1: broker(1), 2: broker(2)}
    slow = Counting(defer=True)
    brokers[2].register("slow", slow)
    a = brokers[1]
    a.request(2, "slow", "job", retry_ticks=1)
    flush(brokers)
    for _ in range(3):
        a.tick()
        flush(brokers)  # resends arrive while the first copy is open: dropped
    assert len(slow.calls) == 1 and brokers[2].stats.duplicates == 3
    assert a.take_results() == []
    key = slow.calls[0].key
    assert brokers[2].answer(key, "done")
    assert not brokers[2].answer(key, "again")  # answered once
    flush(brokers)
    assert [(r.error, r.body) for r in a.take_results()] == [(ErrorCode.NONE, "done")]
    a.tick()
    flush(brokers)
    assert len(slow.calls) == 1


def test_the_local_path_goes_through_the_same_completion_path_never_inside_request() -> None:
    me = broker(1)
    handler = Counting()
    me.register("work", handler)
    cid = me.request(1, "work", ("a", b"b"))
    assert handler.calls == [] and me.take_results() == []  # nothing ran inside request()
    assert me.take_outgoing() == []  # no frame for a link
    assert me.has_work()
    assert me.run_local() == 2  # the request, then its answer
    [result] = me.take_results()
    assert result.correlation_id == cid and result.dst == 1
    assert result.body == {"call": 1, "body": ["a", b"b"]}  # as a peer would see it: decoded
    assert handler.calls[0].src == 1
    assert me.cached_answers() == 0 and not me.has_work()


def test_a_local_request_still_has_its_deadline() -> None:
    me = broker(1)
    me.register("never", Counting(defer=True))
    me.request(1, "never", deadline_ticks=3)
    me.run_local()
    for _ in range(3):
        me.tick()
    assert [r.error for r in me.take_results()] == [ErrorCode.REQUEST_TIMED_OUT]
    assert me.take_outgoing() == []  # never resent


def test_a_restarted_requester_is_never_answered_for_its_earlier_life() -> None:
    """Correlation ids restart at 1 with the process; the session keeps the responder's cache
    from answering the new life's request 1 with the old life's answer."""
    brokers = {1: broker(1, session=11), 2: broker(2)}
    assert brokers[1].request(2, PING, "first life") == 1
    flush(brokers)
    assert [r.body["echo"] for r in brokers[1].take_results()] == ["first life"]  # type: ignore[index]
    brokers[1] = broker(1, session=12)  # restarted
    assert brokers[1].request(2, PING, "second life") == 1
    flush(brokers)
    assert [r.body["echo"] for r in brokers[1].take_results()] == ["second life"]  # type: ignore[index]


def test_correlation_ids_count_up_and_never_repeat() -> None:
    a = broker(1)
    ids = [a.request(2 + i % 3, PING) for i in range(100)]
    assert ids == list(range(1, 101))


def test_the_duplicate_cache_is_bounded_per_source_in_entries_and_bytes_and_sources() -> None:
    b = broker(2, answers_per_peer=3, max_peers=2, answer_bytes_per_peer=1000)
    handler = Counting()
    b.register("work", handler)
    for cid in range(1, 6):
        b.on_request(1, PeerRequest(5, cid, "work", None))
    assert b.cached_answers() == 3
    b.on_request(1, PeerRequest(5, 5, "work", None))  # recent: from the cache
    assert len(handler.calls) == 5
    b.on_request(1, PeerRequest(5, 1, "work", None))  # evicted: served again (idempotent)
    assert len(handler.calls) == 6
    for src in (3, 4):
        b.on_request(src, PeerRequest(5, 1, "work", None))
    assert b.cached_answers() == 2  # source 1 was the least recently used of three
    b.on_request(3, PeerRequest(5, 2, "work", "x" * 600))
    b.on_request(3, PeerRequest(5, 3, "work", "y" * 600))
    assert b.cached_answers() == 2  # 1000 bytes of source 3 hold only its last answer
    b.on_request(3, PeerRequest(5, 4, "work", "z" * 2000))  # larger than the bound: not kept
    assert b.cached_answers() == 2
    calls = len(handler.calls)
    b.on_request(3, PeerRequest(5, 3, "work", "y" * 600))
    b.on_request(3, PeerRequest(5, 4, "work", "z" * 2000))
    assert len(handler.calls) == calls + 1
    assert len(b.take_outgoing()) == 14


def test_open_requests_are_bounded_and_forgotten_after_open_ticks() -> None:
    b = broker(2, open_per_peer=2, open_ticks=5)
    slow = Counting(defer=True)
    b.register("slow", slow)
    for cid in (1, 2, 3):
        b.on_request(1, PeerRequest(5, cid, "slow", None))
    [(dst, frame)] = b.take_outgoing()
    _, refused = decode_frame(frame)
    assert isinstance(refused, PeerResponse)
    assert (dst, refused.correlation_id, refused.error) == (1, 3, ErrorCode.BACKPRESSURE)
    b.on_request(4, PeerRequest(5, 1, "slow", None))  # another source has its own room
    assert b.open_requests() == 3
    for _ in range(5):
        b.tick()
    assert b.open_requests() == 0 and b.stats.open_expired == 3
    assert not b.answer(slow.calls[0].key, "too late")
    assert b.take_outgoing() == []


def test_a_peer_without_peer_requests_is_refused_at_once() -> None:
    a = broker(1)
    pending = a.request(2, PING)
    a.peer_linked(2, serves=False)
    later = a.request(2, PING)
    results = a.take_results()
    assert [(r.correlation_id, r.error) for r in results] == [
        (pending, ErrorCode.UNSUPPORTED_VERSION),
        (later, ErrorCode.UNSUPPORTED_VERSION),
    ]
    a.peer_linked(2, serves=True)  # upgraded
    a.take_outgoing()
    a.request(2, PING)
    assert len(a.take_outgoing()) == 1


def test_too_large_bodies_and_answers_are_refused_with_a_code() -> None:
    brokers = {1: broker(1), 2: broker(2)}
    a = brokers[1]
    a.request(2, PING, b"x" * PEER_MESSAGE_BYTES)
    assert a.take_outgoing() == []
    assert [r.error for r in a.take_results()] == [ErrorCode.MESSAGE_TOO_LARGE]
    brokers[2].register("big", lambda req: Answer(b"y" * PEER_MESSAGE_BYTES))
    a.request(2, "big")
    flush(brokers)
    assert [r.error for r in a.take_results()] == [ErrorCode.MESSAGE_TOO_LARGE]


def test_a_failing_handler_is_answered_and_reported() -> None:
    brokers = {1: broker(1), 2: broker(2)}

    def broken(req: Inbound) -> Answer:
        raise KeyError("bug")

    brokers[2].register("broken", broken)
    brokers[2].register("unencodable", lambda req: Answer({1, 2}))
    brokers[1].request(2, "broken")
    brokers[1].request(2, "unencodable")
    flush(brokers)
    assert [r.error for r in brokers[1].take_results()] == [ErrorCode.UNKNOWN_SERVER_ERROR] * 2
    errors = brokers[2].take_handler_errors()
    assert [kind for kind, _ in errors] == ["broken", "unencodable"]
    assert isinstance(errors[0][1], KeyError)


def test_listeners_get_their_kinds_results_and_the_rest_go_to_the_owner() -> None:
    me = broker(1)
    me.register("work", Counting())
    heard: list[PeerResult] = []
    me.listen("work", heard.append)
    me.request(1, "work")
    ping = me.request(1, PING)
    me.run_local()
    rest = me.deliver_results()
    assert [r.kind for r in heard] == ["work"] and [r.correlation_id for r in rest] == [ping]


def test_bad_arguments_are_refused() -> None:
    a = broker(1)
    with pytest.raises(ValueError):
        a.request(2, "", None)
    with pytest.raises(ValueError):
        a.request(2, PING, deadline_ticks=0)
    with pytest.raises(ValueError, match="could not decode"):
        a.request(2, PING, {1, 2})  # a set: CBOR tags it, and peers refuse tags
    with pytest.raises(ValueError, match="cannot encode"):
        a.request(2, PING, object())
    with pytest.raises(ValueError):
        PeerRequests(1, 1, -1)
    assert isinstance(ReplyKey(1, 2, 3), ReplyKey)
