"""FrameReader: frames from one socket, read only with room in a ByteBudget.

The client server and the peer network read through it. A frame's whole size is reserved
before any of its payload is read (all or nothing, as Kafka's memory pool): a connection
waiting for room holds at most the three bytes of a length prefix, so connections that wait
can never hold the room they wait for (half-read frames only ever wait for their sender,
and the caller's stall timeout ends those).

Reads are non-blocking `read`s on the socket, made while nothing else runs, so room taken
for one is never held across a wait; when the socket has nothing, the reader waits for it to
be readable holding no room (a quiet connection holds no budget). In the middle of a frame
it reads the frame's reserved rest. At a frame boundary:
- while the budget has room for a chunk and a largest frame, it takes that much, reads a
  chunk (several small frames at once, and maybe the start of a larger one), and gives back
  all but what it read plus the rest of the frame left incomplete (the common case: one
  system call, no trip through the scheduler when bytes are there);
- otherwise it peeks at the socket, reserves the first frame's size (waiting if it must),
  and reads at most that frame.

Bytes read stay held while they sit in the decoder; a frame returned by `next_buffered`
hands its bytes to the caller, who releases them (when the request is answered, or the peer
frame decoded and queued). `close` gives back what the reader still holds.

Frames above `LARGE_FRAME_BYTES` use the budget's large class, so large frames left
half-sent cannot take the room small requests need (see ByteBudget).
"""

from __future__ import annotations

import enum
import os
import socket

import trio

from broker.runtime.budget import ByteBudget
from broker.wire.frames import HEADER_BYTES, FrameDecoder

CHUNK_BYTES = 64 * 1024
LARGE_FRAME_BYTES = 64 * 1024
_YIELD_EVERY = 16
"""Reads in a row that found bytes at once before the reader lets other tasks run."""


class Received(enum.Enum):
    DATA = "data"
    EOF = "eof"
    TIMEOUT = "timeout"
    """No byte arrived in time (the wait for budget room is not counted)."""


class FrameReader:
    """Invariant: `held` = the decoder's buffered bytes + what the frame being received
    still lacks; that is what this reader holds of the budget (frames returned were handed
    over with their bytes)."""

    __slots__ = ("_fd", "_streak", "budget", "decoder", "held", "stream")

    def __init__(
        self, stream: trio.SocketStream, decoder: FrameDecoder, budget: ByteBudget
    ) -> None:
        self.stream = stream
        self.decoder = decoder
        self.budget = budget
        self._fd = stream.socket.fileno()
        self._streak = 0
        # Bytes a handshake read already, and the rest of a frame they begin.
        self.held = decoder.buffered_bytes + decoder.missing_after()
        budget.force(self.held)

    def next_buffered(self) -> bytes | None:
        """The next frame already received, or None. Raises the decoder's WireError when
        the framing is broken. The caller now holds `len(frame)` bytes of the budget."""
        frame = self.decoder.next_frame()
        if frame is not None:
            self.held -= len(frame) + HEADER_BYTES
            self.budget.release(HEADER_BYTES)
        return frame

    async def receive(self, timeout: float) -> Received:
        """Read what is there and the budget allows; when nothing is there, wait up to
        `timeout` for bytes (the wait for budget room is not counted). Call only with every
        complete frame taken out."""
        got = self._read_nowait()
        if got is not None:
            self._streak += 1
            if self._streak >= _YIELD_EVERY:  # a fast sender must not hold the loop
                self._streak = 0
                await trio.lowlevel.checkpoint()
            return got
        self._streak = 0
        with trio.move_on_after(timeout) as waited:
            await trio.lowlevel.wait_readable(self._fd)
        if waited.cancelled_caught:
            return Received.TIMEOUT
        got = self._read_nowait()
        if got is not None:
            return got
        return await self._receive_one_frame()

    def _read_nowait(self) -> Received | None:
        """A read of what is there, if the budget has room for it; None when the socket has
        nothing (or the budget is short: the careful path then)."""
        decoder = self.decoder
        missing = decoder.frame_missing
        if missing:
            data = self._read(min(CHUNK_BYTES, missing))
            return None if data is None else self._took(data, 0)
        budget = self.budget
        ahead = CHUNK_BYTES + decoder.max_frame_bytes
        if not budget.try_acquire(ahead, large=True):
            return None
        try:
            data = self._read(CHUNK_BYTES)
        except BaseException:
            budget.release(ahead)  # a reset: this room was never used
            raise
        if data is None:
            budget.release(ahead)
            return None
        need = len(data) + decoder.missing_after(data) if data else 0
        budget.release(ahead - need)
        return self._took(data, need)

    def _read(self, size: int) -> bytes | None:
        try:
            return os.read(self._fd, size)
        except BlockingIOError:
            return None
        except OSError as e:  # reset by the peer, and the like
            raise trio.BrokenResourceError(f"read failed: {e}") from e

    async def _receive_one_frame(self) -> Received:
        """Under memory pressure: reserve the next frame whole, then read at most it."""
        decoder = self.decoder
        budget = self.budget
        sock = self.stream.socket
        peeked = await sock.recv(CHUNK_BYTES, socket.MSG_PEEK)
        if not peeked:
            return Received.EOF
        prefix = decoder.buffered_bytes  # 0..3 bytes of a length prefix
        if prefix + len(peeked) < HEADER_BYTES:
            take = len(peeked)
            need = take
        else:
            first = HEADER_BYTES - prefix
            rest = decoder.missing_after(peeked[:first])
            need = first + rest  # the header's bytes and the whole payload (0 if bad)
            take = min(len(peeked), need)
        large = need > LARGE_FRAME_BYTES
        if need > budget.cap(large):
            budget.force(need)  # cannot happen with a valid config; never deadlock on it
        elif not budget.try_acquire(need, large=large):
            await budget.acquire(need, large=large)
        try:
            data = await sock.recv(take)
        except BaseException:
            budget.release(need)
            raise
        if len(data) < take:  # the peer went away in between
            budget.release(need - len(data))
            need = len(data)
        return self._took(data, need)

    def _took(self, data: bytes, reserved: int) -> Received:
        """`data` was read; `reserved` bytes were newly taken for it and its frame."""
        if not data:
            self.budget.release(reserved)
            return Received.EOF
        self.held += reserved
        self.decoder.receive_data(data)
        return Received.DATA

    def close(self) -> None:
        self.budget.release(self.held)
        self.held = 0
