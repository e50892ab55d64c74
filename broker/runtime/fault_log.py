"""FaultLog: how the runtime reports an unexpected exception it contained.

A connection, link or request that fails on an exception nobody planned for (a bug, a peer
doing what no correct broker does) is ended alone and reported here: the first exception of
each kind, per place, is logged with its traceback; later ones in one line with a count, so
a client repeating the same bad input cannot flood the log.
"""

from __future__ import annotations

import logging


class FaultLog:
    __slots__ = ("_log", "_seen", "count")

    def __init__(self, log: logging.Logger) -> None:
        self._log = log
        self._seen: set[str] = set()
        self.count = 0

    def report(self, where: str, error: BaseException) -> None:
        """`error` ended `where` (e.g. "client connection"); an ExceptionGroup is reported
        by the kinds of exception it holds."""
        self.count += 1
        if isinstance(error, BaseExceptionGroup):
            kinds = ",".join(sorted({type(e).__name__ for e in error.exceptions}))
        else:
            kinds = type(error).__name__
        key = f"{where}: {kinds}"
        if key in self._seen:
            self._log.warning("%s ended on an unexpected %s again (%d so far): %s",
                              where, kinds, self.count, error)  # fmt: skip
            return
        self._seen.add(key)
        self._log.error("%s ended on an unexpected %s", where, kinds, exc_info=error)
