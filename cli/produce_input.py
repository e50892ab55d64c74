"""`sluice produce`'s input: separators with escapes, records cut from a byte stream, and
the input itself (stdin or a file) as a non-blocking Trio stream.

Reading never blocks the event loop, so Ctrl-C and SIGTERM are handled at once even while
stdin is an idle pipe or terminal: stdin is read through a duplicate of fd 0 wrapped in
`trio.lowlevel.FdStream` (non-blocking while open; the flag is restored when it closes). A
regular file, /dev/null and the like never make a read wait, so the same stream reads them
directly; a named pipe given as FILE is opened in a worker thread (opening it waits for a
writer) and then read like stdin.
"""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

__all__ = ["ESCAPES", "RecordSplitter", "open_input", "parse_header", "unescape"]

ESCAPES = {"t": b"\t", "n": b"\n", "r": b"\r", "0": b"\0", "\\": b"\\"}
"""Backslash escapes a separator may use, besides `\\xHH` (one byte, two hex digits)."""


def unescape(text: str) -> bytes:
    """`text` as UTF-8 bytes with its escapes turned into the bytes they name: `\\t` tab,
    `\\n` newline, `\\r` carriage return, `\\0` NUL, `\\\\` backslash, `\\xHH` the byte HH.
    Raises ValueError for an empty result, any other backslash sequence, or a lone
    backslash at the end."""
    out = bytearray()
    i = 0
    while i < len(text):
        c = text[i]
        if c != "\\":
            out += c.encode()
            i += 1
            continue
        code = text[i + 1 : i + 2]
        if code in ESCAPES:
            out += ESCAPES[code]
            i += 2
        elif code == "x" and _is_hex(text[i + 2 : i + 4]):
            out.append(int(text[i + 2 : i + 4], 16))
            i += 4
        else:
            shown = text[i : i + 4] if code == "x" else text[i : i + 2]
            raise ValueError(
                f"unknown escape '{shown}' in '{text}' (use \\t \\n \\r \\0 \\\\ or \\xHH)"
            )
    if not out:
        raise ValueError("must not be empty")
    return bytes(out)


def _is_hex(digits: str) -> bool:
    return len(digits) == 2 and all(d in "0123456789abcdefABCDEF" for d in digits)


def parse_header(item: str) -> tuple[str, bytes]:
    """`KEY=VALUE` as a record header (name, UTF-8 value); the value may be empty and may
    contain `=`. Raises ValueError without `=` or with an empty KEY."""
    name, found, value = item.partition("=")
    if not found or not name:
        raise ValueError(f"expects KEY=VALUE, got {item!r}")
    return name, value.encode()


class RecordSplitter:
    """Cuts a byte stream, fed in chunks of any size, into records at `delimiter` (which
    may span two chunks). With the newline delimiter a record's trailing carriage return is
    dropped (CRLF input from Windows tools). Records are bytes without their delimiter; an
    empty record between two delimiters is kept, the input's last record needs none."""

    def __init__(self, delimiter: bytes = b"\n") -> None:
        """A splitter at `delimiter` (non-empty bytes)."""
        if not delimiter:
            raise ValueError("the delimiter must not be empty")
        self.delimiter = delimiter
        self._strip_cr = delimiter == b"\n"
        self._rest = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        """The records `chunk` completes, in order (the unfinished tail is kept)."""
        data = self._rest + chunk if self._rest else chunk
        records = data.split(self.delimiter)
        self._rest = records.pop()
        if self._strip_cr and b"\r" in data:
            return [r[:-1] if r.endswith(b"\r") else r for r in records]
        return records

    def finish(self) -> list[bytes]:
        """At the end of the input: its last record if it did not end with the delimiter."""
        rest, self._rest = self._rest, b""
        if not rest:
            return []
        if self._strip_cr and rest.endswith(b"\r"):
            rest = rest[:-1]
        return [rest]


@asynccontextmanager
async def open_input(path: str | None) -> AsyncIterator[trio.lowlevel.FdStream]:
    """The input as a non-blocking stream: stdin when `path` is None or "-", else the file
    at `path`. Raises OSError when it cannot be opened."""
    if path is None or path == "-":
        fd = os.dup(0)
    elif stat.S_ISFIFO(os.stat(path).st_mode):
        fd = await trio.to_thread.run_sync(os.open, path, os.O_RDONLY, abandon_on_cancel=True)
    else:
        fd = os.open(path, os.O_RDONLY)
    stream = trio.lowlevel.FdStream(fd)
    try:
        yield stream
    finally:
        await stream.aclose()
