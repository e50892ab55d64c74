"""`sluice produce`'s input handling: separator escapes, headers, cutting a byte stream into
records (delimiters across chunk boundaries, CRLF), and reading stdin or a file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from cli.produce_input import RecordSplitter, open_input, parse_header, unescape


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("\\t", b"\t"),
        ("\\n", b"\n"),
        ("\\r\\n", b"\r\n"),
        ("\\0", b"\0"),
        ("\\\\", b"\\"),
        ("\\x1e", b"\x1e"),
        ("\\xFF", b"\xff"),
        ("\t", b"\t"),  # a real tab stays one
        ("::", b"::"),
        ("é|\\t", "é|".encode() + b"\t"),
    ],
)
def test_unescape_turns_escapes_into_their_bytes(text: str, expected: bytes) -> None:
    assert unescape(text) == expected


@pytest.mark.parametrize("text", ["", "\\", "\\q", "\\x", "\\x4", "\\xZZ", "a\\"])
def test_unescape_refuses_unknown_escapes_and_empty_separators(text: str) -> None:
    with pytest.raises(ValueError):
        unescape(text)


def test_parse_header_splits_at_the_first_equals_sign() -> None:
    assert parse_header("trace=abc=1") == ("trace", b"abc=1")
    assert parse_header("empty=") == ("empty", b"")
    assert parse_header("name=ünï") == ("name", "ünï".encode())
    for bad in ["novalue", "=value", ""]:
        with pytest.raises(ValueError):
            parse_header(bad)


def split_all(splitter: RecordSplitter, chunks: list[bytes]) -> list[bytes]:
    out: list[bytes] = []
    for chunk in chunks:
        out += splitter.feed(chunk)
    return out + splitter.finish()


def test_lines_keep_empty_records_and_need_no_final_newline() -> None:
    assert split_all(RecordSplitter(), [b"a\n\nb\nc"]) == [b"a", b"", b"b", b"c"]
    assert split_all(RecordSplitter(), [b"a\n", b"b\n"]) == [b"a", b"b"]
    assert split_all(RecordSplitter(), [b""]) == []


def test_crlf_loses_its_carriage_return_even_across_chunks() -> None:
    chunks = [b"one\r\ntw", b"o\r", b"\nthree\r\n", b"last\r"]
    assert split_all(RecordSplitter(), chunks) == [b"one", b"two", b"three", b"last"]
    # A carriage return inside a line is data.
    assert split_all(RecordSplitter(), [b"a\rb\n"]) == [b"a\rb"]


def test_other_delimiters_keep_carriage_returns_and_may_span_chunks() -> None:
    assert split_all(RecordSplitter(b";"), [b"a\r;b\n;c"]) == [b"a\r", b"b\n", b"c"]
    splitter = RecordSplitter(b"<>")
    assert split_all(splitter, [b"x<", b">y<", b">", b"z"]) == [b"x", b"y", b"z"]
    with pytest.raises(ValueError):
        RecordSplitter(b"")


def test_every_chunking_gives_the_same_records() -> None:
    data = b"k1\tv1\r\n\r\nk2\tv2\nlast"
    expected = [b"k1\tv1", b"", b"k2\tv2", b"last"]
    for size in range(1, len(data) + 1):
        chunks = [data[i : i + size] for i in range(0, len(data), size)]
        assert split_all(RecordSplitter(), chunks) == expected, size


async def read_all(path: str | None) -> bytes:
    out = b""
    async with open_input(path) as stream:
        while chunk := await stream.receive_some(4096):
            out += chunk
    return out


async def test_open_input_reads_a_file_and_stdin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = b"".join(b"line %d\n" % i for i in range(2000))
    path = tmp_path / "in.txt"
    path.write_bytes(data)
    assert await read_all(str(path)) == data

    read_fd, write_fd = os.pipe()
    saved = os.dup(0)
    try:
        os.dup2(read_fd, 0)
        async with trio.open_nursery() as nursery:
            result: list[bytes] = []

            async def reader() -> None:
                result.append(await read_all("-"))

            nursery.start_soon(reader)
            os.write(write_fd, b"a\nb\n")
            os.close(write_fd)
        assert result == [b"a\nb\n"]
        assert os.get_blocking(0), "fd 0 is left blocking, as it was"
    finally:
        os.dup2(saved, 0)
        os.close(saved)
        os.close(read_fd)
