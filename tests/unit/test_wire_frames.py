"""Framing: round trips however the stream is split, bounds before buffering, linear cost."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.wire.errors import ErrorCode, WireError
from broker.wire.frames import HEADER_BYTES, FrameDecoder, encode_frame
from broker.wire.limits import Limits


def _drain(decoder: FrameDecoder) -> list[bytes]:
    frames = []
    while (frame := decoder.next_frame()) is not None:
        frames.append(frame)
    return frames


def test_encode_frame_prefixes_the_big_endian_length() -> None:
    assert encode_frame(b"abc") == b"\x00\x00\x00\x03abc"
    assert encode_frame(memoryview(b"xy")) == b"\x00\x00\x00\x02xy"
    with pytest.raises(ValueError):
        encode_frame(b"")


def test_one_frame_in_one_read() -> None:
    decoder = FrameDecoder()
    assert decoder.next_frame() is None
    decoder.receive_data(encode_frame(b"hello"))
    assert decoder.next_frame() == b"hello"
    assert decoder.next_frame() is None
    assert decoder.at_boundary


def test_byte_at_a_time() -> None:
    payloads = [b"a", b"bc" * 100, bytes(range(256)) * 3]
    stream = b"".join(encode_frame(p) for p in payloads)
    decoder = FrameDecoder()
    got: list[bytes] = []
    for i in range(len(stream)):
        decoder.receive_data(stream[i : i + 1])
        got.extend(_drain(decoder))
    assert got == payloads
    assert decoder.buffered_bytes == 0


def test_partial_frame_is_not_at_a_boundary() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(encode_frame(b"abcdef")[:7])
    assert decoder.next_frame() is None
    assert not decoder.at_boundary
    assert decoder.buffered_bytes == 3


@settings(max_examples=150, deadline=1000)
@given(
    st.lists(st.binary(min_size=1, max_size=300), max_size=12),
    st.lists(st.integers(min_value=1, max_value=97), min_size=1, max_size=20),
)
def test_any_split_of_the_stream_gives_the_same_frames(
    payloads: list[bytes], cuts: list[int]
) -> None:
    stream = b"".join(encode_frame(p) for p in payloads)
    decoder = FrameDecoder()
    got: list[bytes] = []
    pos = 0
    i = 0
    while pos < len(stream):
        step = cuts[i % len(cuts)]
        decoder.receive_data(memoryview(stream)[pos : pos + step])
        got.extend(_drain(decoder))
        pos += step
        i += 1
    assert got == payloads
    assert decoder.at_boundary


def test_zero_length_is_invalid_frame() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(b"\x00\x00\x00\x00")
    with pytest.raises(WireError) as info:
        decoder.next_frame()
    assert info.value.code is ErrorCode.INVALID_FRAME


def test_oversized_length_is_refused_before_its_payload_arrives() -> None:
    limits = Limits(max_frame_bytes=2048)
    decoder = FrameDecoder(limits)
    decoder.receive_data(encode_frame(b"ok"))
    decoder.receive_data(struct.pack(">I", 2049))  # the header alone, no payload
    assert decoder.next_frame() == b"ok"  # frames before the bad one are still served
    with pytest.raises(WireError) as info:
        decoder.next_frame()
    assert info.value.code is ErrorCode.FRAME_TOO_LARGE
    assert decoder.buffered_bytes == HEADER_BYTES  # only the header; no payload awaited
    # The decoder stays failed.
    with pytest.raises(WireError):
        decoder.next_frame()
    with pytest.raises(WireError):
        decoder.receive_data(b"more")


def test_a_declared_length_of_2_to_the_32_minus_1_is_refused_at_once() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(b"\xff\xff\xff\xff" + b"x" * 10)
    with pytest.raises(WireError) as info:
        decoder.next_frame()
    assert info.value.code is ErrorCode.FRAME_TOO_LARGE


def test_a_frame_of_exactly_max_frame_bytes_passes() -> None:
    limits = Limits(max_frame_bytes=1024)
    decoder = FrameDecoder(limits)
    decoder.receive_data(encode_frame(b"z" * 1024))
    assert decoder.next_frame() == b"z" * 1024


def test_memory_stays_bounded_by_one_frame_plus_one_read() -> None:
    limits = Limits(max_frame_bytes=4096)
    decoder = FrameDecoder(limits)
    frame = encode_frame(b"q" * 4000)
    stream = frame * 200
    read = 1500
    peak = 0
    count = 0
    for pos in range(0, len(stream), read):
        decoder.receive_data(stream[pos : pos + read])
        count += len(_drain(decoder))
        peak = max(peak, decoder.buffered_bytes)
    assert count == 200
    assert peak <= 4096 + HEADER_BYTES + read
    # The backing buffer is compacted too, not only the logical view.
    assert len(decoder._buf) <= 2 * (4096 + HEADER_BYTES + read) + 64 * 1024


def test_many_small_frames_in_one_read_are_linear() -> None:
    """50,000 frames in one buffer: with a quadratic buffer this takes minutes."""
    stream = encode_frame(b"x") * 50_000
    decoder = FrameDecoder()
    decoder.receive_data(stream)
    assert len(_drain(decoder)) == 50_000


class ConnectionPair:
    """Two ends joined by an in-memory pipe that delivers bytes in arbitrary chunks."""

    def __init__(self, chunk: int) -> None:
        self.chunk = chunk
        self.client = FrameDecoder()
        self.server = FrameDecoder()

    def send(self, to: FrameDecoder, data: bytes) -> list[bytes]:
        got: list[bytes] = []
        for pos in range(0, len(data), self.chunk):
            to.receive_data(data[pos : pos + self.chunk])
            got.extend(_drain(to))
        return got


@pytest.mark.parametrize("chunk", [1, 3, 4, 5, 4096])
def test_connection_pair_round_trip(chunk: int) -> None:
    pair = ConnectionPair(chunk)
    requests = [b"req-%d" % i * (i + 1) for i in range(20)]
    arrived = pair.send(pair.server, b"".join(encode_frame(r) for r in requests))
    assert arrived == requests
    responses = [b"resp:" + r for r in arrived]
    back = pair.send(pair.client, b"".join(encode_frame(r) for r in responses))
    assert back == responses
