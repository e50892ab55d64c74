"""`sluice consume`'s options without a broker: `--offset` specs (every form, partition scopes,
times, conflicts), where an offset or last-N spec starts in a log, `--format` templates (every
field and escape, raw bytes, no added newline, unknown fields), and the bad-usage exits (2)
the command gives before it connects."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from cli.consume import consume
from cli.consume_format import FormatError, formatter, parse_template
from cli.consume_offsets import (
    OffsetPlan,
    OffsetSpec,
    SpecError,
    parse_offsets,
    parse_spec,
    parse_time,
    target_offset,
)
from consumers import ConsumerRecord
from consumers.offset_lookup import out_of_range

NOBODY = "127.0.0.1:1"
runner = CliRunner()

# --------------------------------------------------------------------------- offset specs


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("beginning", OffsetSpec("beginning")),
        ("start", OffsetSpec("beginning")),
        ("EARLIEST", OffsetSpec("beginning")),
        ("end", OffsetSpec("end")),
        ("latest", OffsetSpec("end")),
        ("0", OffsetSpec("offset", 0)),
        ("1234", OffsetSpec("offset", 1234)),
        ("-3", OffsetSpec("last", 3)),
        ("@1796608800000", OffsetSpec("time", 1_796_608_800_000)),
        ("@2026-12-07T10:00:00Z", OffsetSpec("time", 1_796_637_600_000)),
        ("@2026-12-07T11:00:00+01:00", OffsetSpec("time", 1_796_637_600_000)),
        ("@2026-12-07T10:00:00.250Z", OffsetSpec("time", 1_796_637_600_250)),
        ("@2026-12-07", OffsetSpec("time", 1_796_601_600_000)),  # a date: UTC midnight
        ("@2026-12-07T10:00:00", OffsetSpec("time", 1_796_637_600_000)),  # no zone: UTC
    ],
)
def test_every_spec_form(text: str, spec: OffsetSpec) -> None:
    assert parse_spec(text) == spec


@pytest.mark.parametrize("text", ["", "begin", "+3", "1.5", "-", "@", "@yesterday", "@-5", "3:"])
def test_a_bad_spec_names_the_forms_expected(text: str) -> None:
    with pytest.raises(SpecError) as e:
        parse_spec(text)
    message = str(e.value)
    assert "expected" in message or "before 1970" in message, message
    if "expected" in message and not text.startswith("@"):
        assert all(form in message for form in ("beginning", "end", "-N", "@TIME", "P:SPEC"))


def test_parse_time_takes_epoch_ms_and_iso_and_refuses_before_1970() -> None:
    assert parse_time("0") == 0
    assert parse_time("1970-01-01T00:00:01Z") == 1000
    with pytest.raises(SpecError, match="before 1970"):
        parse_time("1969-12-31T23:59:59Z")


def test_partition_specs_win_over_the_topic_wide_one() -> None:
    plan = parse_offsets(["-5", "2:@1000", "0:beginning", "2:@1000"])
    assert plan.default == OffsetSpec("last", 5)
    assert plan.partitions == {2: OffsetSpec("time", 1000), 0: OffsetSpec("beginning")}
    assert [plan.spec_for(p) for p in range(4)] == [
        OffsetSpec("beginning"),
        OffsetSpec("last", 5),
        OffsetSpec("time", 1000),
        OffsetSpec("last", 5),
    ]
    assert plan and not OffsetPlan()
    assert parse_offsets([], from_beginning=True) == OffsetPlan(OffsetSpec("beginning"))
    assert parse_offsets(["start"], from_beginning=True).default == OffsetSpec("beginning")


@pytest.mark.parametrize(
    ("items", "from_beginning", "words"),
    [
        (["end", "-3"], False, "disagree"),
        (["end"], True, "--from-beginning"),
        (["1:end", "1:5"], False, "partition 1"),
    ],
)
def test_two_specs_for_the_same_partitions_are_refused(
    items: list[str], from_beginning: bool, words: str
) -> None:
    with pytest.raises(SpecError, match=words):
        parse_offsets(items, from_beginning=from_beginning)


def test_where_an_offset_or_last_n_starts_in_a_log_holding_10_to_50() -> None:
    assert target_offset(OffsetSpec("offset", 25), 10, 50) == (25, None)
    assert target_offset(OffsetSpec("offset", 50), 10, 50) == (50, None)  # the end: waits
    below, note = target_offset(OffsetSpec("offset", 3), 10, 50)
    assert below == 10 and note == "offset 3 is below the log start 10: reading from 10"
    past, note = target_offset(OffsetSpec("offset", 99), 10, 50)
    assert past == 50 and note == "offset 99 is past the end 50: waiting at the end"
    assert target_offset(OffsetSpec("last", 3), 10, 50) == (47, None)
    assert target_offset(OffsetSpec("last", 100), 10, 50) == (10, None)
    assert target_offset(OffsetSpec("last", 0), 10, 50) == (50, None)


def test_specs_print_as_typed() -> None:
    assert [str(parse_spec(s)) for s in ("start", "latest", "7", "-2")] == [
        "beginning",
        "end",
        "7",
        "-2",
    ]
    assert str(parse_spec("@2026-12-07T10:00:00Z")) == "@2026-12-07T10:00:00.000Z"


def test_out_of_range_message() -> None:
    assert out_of_range("t", 7, 3) == "partition 7 out of range: topic 't' has 3 partitions (0-2)"
    assert out_of_range("t", 1, 1) == "partition 1 out of range: topic 't' has 1 partition (0)"


# --------------------------------------------------------------------------- formats


def record(
    value: bytes | None = b"v\xff",
    key: bytes | None = b"k1",
    headers: tuple[tuple[str, bytes], ...] = (("a", b"1"), ("b", b"\x00x")),
) -> ConsumerRecord:
    return ConsumerRecord("t", 2, 41, key, value, headers, 1_796_608_800_123)


def test_every_template_field_and_escape() -> None:
    render = formatter("%t|%p|%o|%T|%k|%K|%s|%S|%h|%%|\\t\\r\\\\\\0|\\q\\n")
    assert render([record()]) == (
        b"t|2|41|1796608800123|k1|2|v\xff|2|a=1,b=\x00x|%|\t\r\\\x00|\\q\n"
    )


def test_null_key_and_value_print_empty_with_length_minus_one() -> None:
    render = formatter("[%k][%K][%s][%S][%h]\n")
    assert render([record(value=None, key=None, headers=())]) == b"[][-1][][-1][]\n"


def test_a_template_adds_no_newline_and_formats_a_chunk_at_once() -> None:
    render = formatter("%s,")
    assert render([record(b"a"), record(b"b"), record(b"c")]) == b"a,b,c,"
    assert formatter("%o\n")([]) == b""


def test_text_and_json_stay_as_the_contract_says() -> None:
    assert formatter("text")([record(b"a"), record(None)]) == b"a\n\n"
    (line,) = formatter("json")([record()]).splitlines()
    assert json.loads(line) == {
        "topic": "t",
        "partition": 2,
        "offset": 41,
        "timestamp": 1_796_608_800_123,
        "key": "k1",
        "value": "dv8=",
        "key_encoding": "utf-8",
        "value_encoding": "base64",
        "headers": [["a", "MQ=="], ["b", "AHg="]],
    }


def test_template_pieces_merge_literals() -> None:
    assert parse_template("a%%b%sc\\n") == [b"a%b", "s", b"c\n"]


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("%x", "unknown field %x"),
        ("%s %y\\n", "unknown field %y"),
        ("%s%", "lone %"),
        ("csv", "text, json or a template"),
    ],
)
def test_bad_formats_are_refused_naming_the_problem(spec: str, words: str) -> None:
    with pytest.raises(FormatError, match=words):
        formatter(spec)


# --------------------------------------------------------------------------- bad usage: exit 2


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["-o", "bogus"], "expected beginning"),
        (["-o", "end", "--from-beginning"], "disagree"),
        (["--partition", "0", "-o", "1:5"], "--partition 0 does not read"),
        (["--format", "%z"], "unknown field %z"),
        (["--format", "yaml"], "text, json or a template"),
        (["--isolation", "sometimes"], "--isolation"),
    ],
)
def test_bad_usage_exits_2_before_connecting(args: list[str], words: str) -> None:
    app = typer.Typer()
    app.command()(consume)
    result = runner.invoke(app, ["t", *args, "--bootstrap", NOBODY, "--timeout", "0"])
    assert result.exit_code == 2, (args, result.output)
    assert words in result.output, result.output


def test_a_bad_bootstrap_is_bad_usage() -> None:
    app = typer.Typer()
    app.command()(consume)
    result = runner.invoke(app, ["t", "--bootstrap", "host:port", "--timeout", "0"])
    assert result.exit_code == 2 and "--bootstrap: bad port" in result.output, result.output
