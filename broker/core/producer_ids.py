"""ProducerIdAllocator: any broker answers InitProducerId, from blocks the metadata log allocates.

Invariant: a producer id is handed out at most once in the cluster's life. The metadata
machine allocates blocks from one counter at apply, so no two blocks overlap; and each block
is handed to exactly one broker life, which hands its ids out once:
- the controller (the serving metadata leader) proposes a block for itself and uses it only
  if the allocating entry applies at the position (index, term) of its own proposal (a block
  replayed from the log after a restart was handed out then, and is never used again);
- any other broker asks the controller with a peer request (ALLOC_PRODUCER_IDS). The
  controller proposes a block for the asker and answers the request with it only if the entry
  applied at the index it proposed at has the term it proposed in (otherwise the proposal was
  lost to a new leader: an error answer, and the asker asks again). A peer request completes
  at most once per (session, correlation id) and the asker takes only the answer to the one
  request it has in flight, so a duplicated, late or resent answer, or one meant for an
  earlier life of the asker, never hands a block out twice. A request that is retried and
  served twice allocates two blocks: one is wasted, none is shared.
"""

from __future__ import annotations

from broker.core.context import NodeContext
from broker.core.controller import Controller
from broker.core.ids import ProposalKey, Purpose
from broker.core.machine import Applied
from broker.core.metadata import ProducerIdBlock, cmd_alloc_producer_ids
from broker.core.peer_requests import Answer, Inbound, PeerRequests, PeerResult, ReplyKey
from broker.core.raft import Entry
from broker.wire.errors import ErrorCode

ALLOC_PRODUCER_IDS = "alloc_producer_ids"
"""Peer request kind: a broker asks the controller for a block of producer ids."""
REQUEST_DEADLINE_TICKS = 40
REQUEST_RETRY_TICKS = 4

_KEY = ProposalKey(Purpose.PRODUCER_IDS)
_MAX_ID = (1 << 63) - 1


class ProducerIdAllocator:
    def __init__(self, ctx: NodeContext, controller: Controller) -> None:
        self.ctx = ctx
        self._controller = controller
        self._next = 0
        self._end = 0
        self._waiting: list[tuple[int, int]] = []
        """(token, slot) of InitProducerId operations waiting for a block."""
        self._peer: PeerRequests | None = None
        self._asking: int | None = None
        """Correlation id of this broker's one ALLOC_PRODUCER_IDS request in flight."""
        self._serving: dict[int, tuple[ReplyKey, int]] = {}
        """Controller side: index of a block proposed for a peer -> (its request, the term it
        was proposed in)."""

    def attach(self, peer: PeerRequests) -> None:
        """Serve and send ALLOC_PRODUCER_IDS through `peer` (the process's peer requests)."""
        self._peer = peer
        peer.register(ALLOC_PRODUCER_IDS, self._serve_peer)
        peer.listen(ALLOC_PRODUCER_IDS, self._on_block_answer)

    # -- the asking side ----------------------------------------------------------------------

    def request(self, token: int, slot: int) -> None:
        """A new producer id for operation (token, slot), completed now or once a block
        arrives."""
        self._waiting.append((token, slot))
        self.serve()

    def cancel(self, token: int) -> None:
        self._waiting = [(t, s) for t, s in self._waiting if t != token]

    def serve(self) -> None:
        """Hand out ids to the waiting operations; ask for a block when they outrun it: by
        proposing it (on the serving controller) or by asking the controller."""
        ctx = self.ctx
        while self._waiting and self._next < self._end:
            token, slot = self._waiting.pop(0)
            ctx.host.complete(token, slot, ErrorCode.NONE, None, self._next)
            self._next += 1
        if not self._waiting:
            return
        mg = ctx.metadata_group
        if mg is not None and mg.serving():
            ctx.propose_own(_KEY, cmd_alloc_producer_ids(ctx.config.node_id))
            return
        # Not serving as controller: the leader the metadata group names, else the last
        # heartbeat answer's; never ourselves (a stale view: wait for the log to say).
        controller = self._controller.controller_to_ask()
        peer = self._peer
        if peer is None or self._asking is not None or controller is None:
            return
        self._asking = peer.request(
            controller,
            ALLOC_PRODUCER_IDS,
            None,
            deadline_ticks=REQUEST_DEADLINE_TICKS,
            retry_ticks=REQUEST_RETRY_TICKS,
        )

    def _on_block_answer(self, result: PeerResult) -> None:
        if result.correlation_id != self._asking:
            return  # an earlier request's (this one supersedes it)
        self._asking = None
        block = _read_block(result.body) if result.ok else None
        if block is not None:
            self._next, self._end = block
        self.serve()

    def on_block(self, position: tuple[int, int], start: int, count: int) -> None:
        """A block was applied at (index, term): this broker's own only if that is where its
        own proposal stands."""
        if position == self.ctx.own.position(_KEY):
            self._next, self._end = start, start + count

    # -- the controller side ------------------------------------------------------------------

    def _serve_peer(self, req: Inbound) -> Answer | None:
        """Propose a block for the asking broker; answered once it applies (`applied`)."""
        ctx = self.ctx
        mg = ctx.metadata_group
        if mg is None or not mg.serving():
            return Answer(None, ErrorCode.NOT_CONTROLLER, "this broker is not the controller")
        index = ctx.host.propose(mg, cmd_alloc_producer_ids(req.src))
        if index is None:
            return Answer(None, ErrorCode.NOT_CONTROLLER, "the proposal was refused")
        self._serving[index] = (req.key, mg.raft.term)
        return None

    def applied(self, e: Entry, res: Applied) -> None:
        """Every metadata entry as it applies: answer the request whose block it allocates
        (or whose proposal it displaced)."""
        served = self._serving.pop(e.index, None)
        if served is None:
            return
        key, term = served
        value = res.value
        peer = self._peer
        if peer is None:
            return
        if term == e.term and res.error == ErrorCode.NONE and isinstance(value, ProducerIdBlock):
            peer.answer(key, {"start": value.start, "count": value.size})
        else:
            peer.answer(key, None, error=ErrorCode.NOT_CONTROLLER,
                        message="the proposal was lost to a new leader")  # fmt: skip

    def covered(self, index: int) -> None:
        """A metadata snapshot up to `index` was installed: the proposals it covers have an
        unknown outcome here; their askers ask again."""
        peer = self._peer
        for i in sorted(i for i in self._serving if i <= index):
            key, _ = self._serving.pop(i)
            if peer is not None:
                peer.answer(key, None, error=ErrorCode.NOT_CONTROLLER,
                            message="the proposal's outcome is unknown here")  # fmt: skip


def _read_block(body: object) -> tuple[int, int] | None:
    """(first id, end) of a well-formed block answer, else None."""
    if not isinstance(body, dict):
        return None
    start, count = body.get("start"), body.get("count")
    if type(start) is not int or type(count) is not int:
        return None
    if not (start >= 0 and count > 0 and start + count <= _MAX_ID):
        return None
    return start, start + count
