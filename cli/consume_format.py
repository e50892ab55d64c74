"""How `sluice consume` prints records (`--format`): `text` (each value on its own line),
`json` (the contract's object per record) or a kcat-like template.

A template is any format containing `%`: `%s` value, `%k` key, `%S` value length, `%K` key
length (-1 for a null value or key), `%t` topic, `%p` partition, `%o` offset, `%T` timestamp
(ms since the epoch), `%h` headers (`name=value,name2=value2`), `%%` a percent sign; the
escapes `\\n`, `\\t`, `\\r`, `\\\\` and `\\0`; every other character as it is. Keys, values
and header values print as raw bytes, a null key or value as nothing, and nothing is added: a
template without a trailing `\\n` prints no newline (as kcat).

A format compiles once into a `Formatter`, which turns a whole chunk of records (one poll)
into the bytes of one write.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence

from consumers import ConsumerRecord

__all__ = ["FIELDS", "FormatError", "Formatter", "as_json", "formatter", "parse_template"]

Formatter = Callable[[Sequence[ConsumerRecord]], bytes]
"""Records -> the bytes printed for them."""

Field = Callable[[ConsumerRecord], bytes]


class FormatError(ValueError):
    """A `--format` that is neither text, json nor a valid template (bad usage)."""


def _length(data: bytes | None) -> bytes:
    return b"-1" if data is None else str(len(data)).encode()


def _headers(r: ConsumerRecord) -> bytes:
    return b",".join(name.encode() + b"=" + value for name, value in r.headers)


FIELDS: dict[str, Field] = {
    "s": lambda r: r.value or b"",
    "k": lambda r: r.key or b"",
    "S": lambda r: _length(r.value),
    "K": lambda r: _length(r.key),
    "t": lambda r: r.topic.encode(),
    "p": lambda r: str(r.partition).encode(),
    "o": lambda r: str(r.offset).encode(),
    "T": lambda r: str(r.timestamp).encode(),
    "h": _headers,
}
"""The template's %-fields."""

ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "0": "\0"}
KNOWN = " ".join(f"%{f}" for f in FIELDS) + " %%"


def parse_template(template: str) -> list[bytes | str]:
    """The template as literal bytes and field letters, in order (adjacent literals merged).
    FormatError for an unknown `%x` or a lone `%` at the end."""
    pieces: list[bytes | str] = []
    literal: list[str] = []
    i = 0
    while i < len(template):
        c = template[i]
        after = template[i + 1] if i + 1 < len(template) else None
        if c == "%":
            if after is None:
                raise FormatError("--format ends with a lone %: write %% for a percent sign")
            if after == "%":
                literal.append("%")
            elif after in FIELDS:
                pieces.extend(_flush(literal))
                pieces.append(after)
            else:
                raise FormatError(f"--format has an unknown field %{after} (known: {KNOWN})")
            i += 2
        elif c == "\\" and after in ESCAPES:
            literal.append(ESCAPES[after])
            i += 2
        else:
            literal.append(c)
            i += 1
    pieces.extend(_flush(literal))
    return pieces


def _flush(literal: list[str]) -> list[bytes]:
    """The literal gathered so far as bytes (the command line's own bytes kept), emptied."""
    if not literal:
        return []
    text = "".join(literal)
    literal.clear()
    return [text.encode("utf-8", "surrogateescape")]


def _template(template: str) -> Formatter:
    fields: list[Field] = []
    for piece in parse_template(template):
        fields.append(FIELDS[piece] if isinstance(piece, str) else _constant(piece))

    def render(records: Sequence[ConsumerRecord]) -> bytes:
        return b"".join([field(r) for r in records for field in fields])

    return render


def _constant(data: bytes) -> Field:
    return lambda _r: data


def _text(records: Sequence[ConsumerRecord]) -> bytes:
    return b"".join([(r.value or b"") + b"\n" for r in records])


def _text_or_b64(data: bytes | None) -> tuple[str | None, str]:
    if data is None:
        return None, "utf-8"
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(data).decode(), "base64"


def as_json(r: ConsumerRecord) -> str:
    """One record as the contract's JSON object: key and value as UTF-8 text when they decode,
    else base64 (said by `key_encoding` / `value_encoding`); header values in base64."""
    key, key_enc = _text_or_b64(r.key)
    value, value_enc = _text_or_b64(r.value)
    return json.dumps(
        {
            "topic": r.topic,
            "partition": r.partition,
            "offset": r.offset,
            "timestamp": r.timestamp,
            "key": key,
            "value": value,
            "key_encoding": key_enc,
            "value_encoding": value_enc,
            "headers": [[name, base64.b64encode(v).decode()] for name, v in r.headers],
        }
    )


def _json(records: Sequence[ConsumerRecord]) -> bytes:
    return "".join([as_json(r) + "\n" for r in records]).encode()


def formatter(spec: str) -> Formatter:
    """The Formatter of a `--format` value; FormatError when it is none of the three."""
    if spec == "text":
        return _text
    if spec == "json":
        return _json
    if "%" in spec:
        return _template(spec)
    raise FormatError(
        f"--format must be text, json or a template with %-fields (such as '%k=%s\\n'), "
        f"got {spec!r}"
    )
