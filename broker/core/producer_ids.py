"""ProducerIdAllocator: producer ids handed out from blocks the metadata log allocates.

Invariant: a producer id is handed out at most once in the cluster's life. The metadata
machine allocates blocks from one counter at apply, so no two blocks overlap; a broker hands
out ids only from a block it asked for in this incarnation and whose allocating entry it has
just applied at the position of its own proposal (a block replayed from the log after a
restart was handed out then, and is never used again).
"""

from __future__ import annotations

from broker.core.context import NodeContext
from broker.core.ids import ProposalKey, Purpose
from broker.core.metadata import cmd_alloc_producer_ids
from broker.wire.errors import ErrorCode

_KEY = ProposalKey(Purpose.PRODUCER_IDS)


class ProducerIdAllocator:
    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        self._next = 0
        self._end = 0
        self._waiting: list[tuple[int, int]] = []
        """(token, slot) of InitProducerId operations waiting for a block."""

    def request(self, token: int, slot: int) -> None:
        """A new producer id for operation (token, slot), completed now or once a block is
        allocated."""
        self._waiting.append((token, slot))
        self.serve()

    def cancel(self, token: int) -> None:
        self._waiting = [(t, s) for t, s in self._waiting if t != token]

    def serve(self) -> None:
        """Hand out ids to the waiting operations; ask for a block when they outrun it."""
        ctx = self.ctx
        while self._waiting and self._next < self._end:
            token, slot = self._waiting.pop(0)
            ctx.host.complete(token, slot, ErrorCode.NONE, None, self._next)
            self._next += 1
        mg = ctx.metadata_group
        if self._waiting and mg is not None and mg.serving():
            ctx.propose_own(_KEY, cmd_alloc_producer_ids(ctx.config.node_id))

    def on_block(self, position: tuple[int, int], start: int, count: int) -> None:
        """A block was applied at (index, term): it is this broker's only if that is where
        its own proposal stands."""
        if position == self.ctx.own.position(_KEY):
            self._next, self._end = start, start + count
