"""InternalOps: operations a broker starts itself, completed by callbacks (pure).

A client's operation is named by a positive token the runtime allocates, and its Completion
goes back to the runtime. An operation the node starts on its own behalf (a participant's
proposal answering a coordinator's peer request; a coordinator's proposal before it answers
a client) gets a negative token here, and its Completion is routed to the callback registered
with it instead (`route`), in the node's loop. Invariant: every internal token is completed at
most once (the host completes each waiter once); a callback that starts another operation or
completes a client's is fine, since `route` keeps draining until only client completions are
left.
"""

from __future__ import annotations

from collections.abc import Callable

from broker.core.host import GroupHost
from broker.core.rounds import Completion

Callback = Callable[[Completion], None]


class InternalOps:
    def __init__(self, host: GroupHost) -> None:
        self.host = host
        self._next = -1
        self._callbacks: dict[int, Callback] = {}

    def token(self, callback: Callback) -> int:
        """A fresh negative token whose completion runs `callback`."""
        token = self._next
        self._next -= 1
        self._callbacks[token] = callback
        return token

    def forget(self, token: int) -> None:
        self._callbacks.pop(token, None)

    def pending(self) -> int:
        return len(self._callbacks)

    def route(self, completions: list[Completion]) -> list[Completion]:
        """Run the callbacks of internal completions; the clients' completions, in order
        (with any a callback produced)."""
        out: list[Completion] = []
        while completions:
            for c in completions:
                if c.token >= 0:
                    out.append(c)
                    continue
                callback = self._callbacks.pop(c.token, None)
                if callback is not None:
                    callback(c)
            completions = self.host.take_completions()
        return out
