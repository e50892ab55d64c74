"""Framing: a 4-byte big-endian payload length, then the payload (sans-IO, like h11).

`encode_frame(payload)` returns the bytes to send. A `FrameDecoder` takes whatever the socket
delivered through `receive_data(data)` and hands back whole payloads from `next_frame()`, or
None while it needs more data. The shell's loop is:

    decoder.receive_data(await stream.receive_some(65536))
    while (payload := decoder.next_frame()) is not None:
        handle(payload)

Bounds: a declared length of 0 is INVALID_FRAME and one above `limits.max_frame_bytes` is
FRAME_TOO_LARGE; both are raised as soon as the 4 length bytes are available, before any of
the payload is waited for, so a caller that drains frames after every read holds at most one
frame (<= max_frame_bytes + 4) plus one read. After an error the decoder stays failed: every
later call raises the same error (the connection is to be closed).

Cost is linear in the bytes received, however the stream is split: the buffer is a bytearray
with a read offset; consumed bytes are dropped only when at least half of the buffer (and at
least `_COMPACT_BYTES`) is consumed, so each byte is moved a bounded number of times.
"""

from __future__ import annotations

import struct
from typing import NoReturn

from broker.wire.errors import ErrorCode, WireError
from broker.wire.limits import DEFAULT_LIMITS, MAX_FRAME_BYTES_CEILING, Limits

__all__ = ["HEADER_BYTES", "FrameDecoder", "encode_frame"]

HEADER_BYTES = 4
_LENGTH = struct.Struct(">I")
_COMPACT_BYTES = 64 * 1024


def encode_frame(payload: bytes | bytearray | memoryview) -> bytes:
    """The frame carrying `payload` (which must be 1 .. 2**32 - 1 bytes)."""
    size = len(payload)
    if not 0 < size <= MAX_FRAME_BYTES_CEILING:
        raise ValueError(f"a frame payload must be 1 .. {MAX_FRAME_BYTES_CEILING} bytes: {size}")
    return b"".join((_LENGTH.pack(size), payload))


class FrameDecoder:
    """Splits a byte stream into frame payloads. Not thread-safe; one per connection."""

    __slots__ = ("_buf", "_error", "_limits", "_need", "_start")

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self._limits = limits
        self._buf = bytearray()
        self._start = 0
        self._need = 0  # payload length of the frame being read; 0 while reading a header
        self._error: WireError | None = None

    @property
    def buffered_bytes(self) -> int:
        """Bytes received and not yet returned as (part of) a frame."""
        return len(self._buf) - self._start

    @property
    def at_boundary(self) -> bool:
        """True when no part of a frame is buffered, its length prefix included: an end of
        stream here is a clean close."""
        return self._need == 0 and self.buffered_bytes == 0

    @property
    def frame_bytes(self) -> int:
        """Declared payload length of the frame being received; 0 until its header is read
        (`next_frame` reads it)."""
        return self._need

    @property
    def frame_missing(self) -> int:
        """Bytes still to receive for the frame being received; 0 until its header is read."""
        if self._need == 0:
            return 0
        return max(0, self._need - (len(self._buf) - self._start))

    @property
    def max_frame_bytes(self) -> int:
        return self._limits.max_frame_bytes

    def missing_after(self, data: bytes | bytearray | memoryview = b"") -> int:
        """Bytes the frame left incomplete at the end of the stream would still lack after
        `receive_data(data)`: 0 when the stream would end at a frame boundary, inside a
        length prefix, or at a length out of bounds (which `next_frame` will reject). A
        reader uses it to reserve memory for a whole frame before reading its payload."""
        if self._error is not None:
            return 0
        start, need = self._start, self._need
        buffered = len(self._buf) - start
        if need and buffered + len(data) < need:
            return need - buffered - len(data)
        if need and buffered < need:
            blob: bytes | memoryview = memoryview(data)[need - buffered :]
        else:
            tail = start + need  # need is 0 unless the header of a complete frame was read
            blob = bytes(self._buf[tail:]) + bytes(data)
        pos, end_of_data, bound = 0, len(blob), self._limits.max_frame_bytes
        while end_of_data - pos >= HEADER_BYTES:
            size: int = _LENGTH.unpack_from(blob, pos)[0]
            if size == 0 or size > bound:
                return 0
            pos += HEADER_BYTES + size
            if pos > end_of_data:
                return pos - end_of_data
        return 0

    def set_limits(self, limits: Limits) -> None:
        """Bound the frames whose header is not read yet by `limits` (a handshake reads its
        first frame under tighter limits than the link that follows)."""
        self._limits = limits

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes read from the peer."""
        if self._error is not None:
            raise self._error
        self._buf += data

    def next_frame(self) -> bytes | None:
        """The next complete payload, or None when more data is needed."""
        if self._error is not None:
            raise self._error
        buf = self._buf
        start = self._start
        available = len(buf) - start
        need = self._need
        if need == 0:
            if available < HEADER_BYTES:
                self._compact()
                return None
            need = _LENGTH.unpack_from(buf, start)[0]
            if need == 0:
                self._fail(ErrorCode.INVALID_FRAME, "frame with a declared length of 0")
            if need > self._limits.max_frame_bytes:
                self._fail(
                    ErrorCode.FRAME_TOO_LARGE,
                    f"frame of {need} bytes exceeds the limit of {self._limits.max_frame_bytes}",
                )
            start += HEADER_BYTES
            available -= HEADER_BYTES
            self._start = start
            self._need = need
        if available < need:
            self._compact()
            return None
        payload = bytes(buf[start : start + need])
        self._start = start + need
        self._need = 0
        self._compact()
        return payload

    def _fail(self, code: ErrorCode, message: str) -> NoReturn:
        self._error = WireError(code, message)
        raise self._error

    def _compact(self) -> None:
        start = self._start
        if start == len(self._buf):
            self._buf.clear()
            self._start = 0
        elif start >= _COMPACT_BYTES and start * 2 >= len(self._buf):
            del self._buf[:start]
            self._start = 0
