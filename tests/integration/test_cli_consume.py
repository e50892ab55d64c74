"""`sluice consume` as a user types it, and the Consumer lookups it stands on, against one real
broker process shared by the module: `--offset` in every form (topic-wide and per partition,
`-o end -e` exiting at once, `-o -3` the last 3 of each partition, offsets past the end,
times to the record), `--exit-at-end` (with `--max-messages`, under read_committed and
read_uncommitted, in a group), `--format` templates and json, an unknown topic or partition
failing at once, an unreachable broker failing within `--timeout`; the library's
`partitions_for`, `beginning_offsets`, `end_offsets`, `offsets_for_times`, pause/resume and
`poll`'s two timeout names."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trio

from consumers import Consumer, UnknownTopicError, blocking
from consumers.consumer import OffsetAndTimestamp
from tests.support.harness import BrokerProcess, running_broker
from tests.support.sluice_cli import ROOT, run_sluice, sluice_command
from tests.support.wait import Lines, poll_records

Record = tuple[int, bytes | None]
"""(partition, value) of a record to produce."""

SPEC_TOPIC = "spec"
SPEC_COUNTS = (5, 3, 0)
"""Records in each partition of SPEC_TOPIC: a0..a4, b0..b2, none."""


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    with running_broker(tmp_path_factory.mktemp("consume") / "data-0") as b:
        yield b


def create(b: BrokerProcess, topic: str, partitions: int) -> None:
    with blocking.Admin(b.bootstrap) as admin:
        admin.create_topic(topic, partitions=partitions)


def produce(
    b: BrokerProcess,
    topic: str,
    records: Sequence[Record],
    *,
    key: bytes | None = None,
    timestamp: int | None = None,
) -> list[int]:
    """Produce and wait for every acknowledgement; the offsets given."""
    with blocking.Producer(b.bootstrap) as p:
        deliveries = [
            p.send(topic, value, key=key, partition=partition, timestamp=timestamp)
            for partition, value in records
        ]
        return [d.wait().offset for d in deliveries]


@pytest.fixture(scope="module")
def spec_topic(broker: BrokerProcess) -> str:
    create(broker, SPEC_TOPIC, len(SPEC_COUNTS))
    letters = "abc"
    produce(
        broker,
        SPEC_TOPIC,
        [(p, f"{letters[p]}{i}".encode()) for p, n in enumerate(SPEC_COUNTS) for i in range(n)],
    )
    return SPEC_TOPIC


def sluice(b: BrokerProcess, *args: str) -> subprocess.CompletedProcess[bytes]:
    return run_sluice(*args, bootstrap=b.bootstrap, timeout=60)


def ok_lines(b: BrokerProcess, *args: str) -> list[bytes]:
    r = sluice(b, "consume", *args)
    assert r.returncode == 0, (args, r.stderr)
    lines: list[bytes] = r.stdout.splitlines()
    return lines


def offsets(lines: list[bytes]) -> set[tuple[int, int]]:
    """(partition, offset) of lines printed with --format '%p:%o\\n'."""
    return {(int(p), int(o)) for p, o in (line.split(b":") for line in lines)}


# --------------------------------------------------------------------------- --offset


def test_offset_specs_as_typed(broker: BrokerProcess, spec_topic: str) -> None:
    every = {(p, o) for p, n in enumerate(SPEC_COUNTS) for o in range(n)}
    by_offset = ("-e", "--format", "%p:%o\n")
    # No --offset: from the beginning, as the library's auto_offset_reset.
    assert offsets(ok_lines(broker, spec_topic, *by_offset)) == every
    # The end with -e: at once, nothing printed.
    started = time.monotonic()
    r = sluice(broker, "consume", spec_topic, "-o", "end", "-e")
    assert (r.returncode, r.stdout) == (0, b""), r.stderr
    assert time.monotonic() - started < 10
    # The last 3 of each partition (fewer where fewer exist).
    last = offsets(ok_lines(broker, spec_topic, "-o", "-3", *by_offset))
    assert last == {(0, 2), (0, 3), (0, 4), (1, 0), (1, 1), (1, 2)}
    # An offset for all, the beginning for partition 1, past the end for partition 2.
    r = sluice(broker, "consume", spec_topic, "-o", "3", "-o", "1:start", "-o", "2:99", *by_offset)
    assert r.returncode == 0, r.stderr
    assert offsets(r.stdout.splitlines()) == {(0, 3), (0, 4), (1, 0), (1, 1), (1, 2)}
    assert b"spec[2]: offset 99 is past the end 0: waiting at the end" in r.stderr


def test_times_find_the_first_record_at_or_after_them(broker: BrokerProcess) -> None:
    """Early and late records share batches: the time finds the record, not its batch."""
    create(broker, "times", 2)
    early = int(time.time() * 1000) - 600_000
    late = early + 60_000
    produce(broker, "times", [(0, b"e0"), (0, b"e1"), (1, b"f0")], timestamp=early)
    produce(broker, "times", [(0, b"l0"), (1, b"m0"), (1, b"m1")], timestamp=late)
    cut = early + 30_000
    iso = datetime.fromtimestamp(cut / 1000, UTC).isoformat().replace("+00:00", "Z")
    lines = ok_lines(broker, "times", "-o", f"0:@{cut}", "-o", f"1:@{iso}", "-e", "--format",
                     "%p:%s:%T\n")  # fmt: skip
    assert sorted(lines) == [b"0:l0:%d" % late, b"1:m0:%d" % late, b"1:m1:%d" % late]

    async def lookups() -> None:
        async with Consumer(broker.bootstrap) as c:
            found = await c.offsets_for_times({("times", 0): cut, ("times", 1): early - 1})
            assert found == {
                ("times", 0): OffsetAndTimestamp(2, late),
                ("times", 1): OffsetAndTimestamp(0, early),
            }
            assert await c.offsets_for_times({("times", 0): late + 1}) == {("times", 0): None}

    trio.run(lookups)


# --------------------------------------------------------------------------- --exit-at-end


def test_max_messages_waits_for_more_unless_exit_at_end(broker: BrokerProcess) -> None:
    create(broker, "few", 1)
    produce(broker, "few", [(0, b"r%d" % i) for i in range(3)])
    assert ok_lines(broker, "few", "--max-messages", "10", "-e") == [b"r0", b"r1", b"r2"]
    env = {**os.environ, "SLUICE_BOOTSTRAP": broker.bootstrap}
    proc = subprocess.Popen(
        sluice_command("consume", "few", "--max-messages", "5"),
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        out = Lines(proc.stdout)
        out.wait_for("r2", timeout=30)
        assert proc.poll() is None, "exited with 3 of 5 records"
        produce(broker, "few", [(0, b"r3"), (0, b"r4"), (0, b"r5")])
        assert proc.wait(timeout=30) == 0
        assert out.lines == ["r0", "r1", "r2", "r3", "r4"]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def test_the_end_is_the_last_stable_offset_under_read_committed(broker: BrokerProcess) -> None:
    create(broker, "txn", 1)
    with blocking.Producer(broker.bootstrap, transactional_id="consume-txn") as p:
        with p.transaction():
            p.send("txn", b"c0", partition=0)
            p.send("txn", b"c1", partition=0)
        p.begin_transaction()
        p.send("txn", b"open", partition=0)
        p.flush()
        # Offsets: c0, c1, the commit marker, the open record: LSO 3, high watermark 4.
        assert ok_lines(broker, "txn", "-e") == [b"c0", b"c1"]
        assert ok_lines(broker, "txn", "-e", "--isolation", "read_uncommitted") == [
            b"c0",
            b"c1",
            b"open",
        ]
        tp = ("txn", 0)
        with blocking.Consumer(broker.bootstrap) as c:
            assert c.end_offsets([tp]) == {tp: 3}
            assert c.beginning_offsets([tp]) == {tp: 0}
        with blocking.Consumer(broker.bootstrap, isolation="read_uncommitted") as c:
            assert c.end_offsets([tp]) == {tp: 4}
        p.abort_transaction()


def test_group_reads_to_the_end_and_commits_offset_only_where_uncommitted(
    broker: BrokerProcess,
) -> None:
    create(broker, "grp", 2)
    produce(
        broker, "grp", [(0, b"g%d" % i) for i in range(4)] + [(1, b"h%d" % i) for i in range(3)]
    )
    by_offset = ("--group", "cg", "-e", "--format", "%p:%o\n")
    assert offsets(ok_lines(broker, "grp", "-o", "-2", *by_offset)) == {
        (0, 2),
        (0, 3),
        (1, 1),
        (1, 2),
    }
    with blocking.Admin(broker.bootstrap) as admin:
        d = admin.describe_group("cg")
        assert (d.state, d.members) == ("empty", ()), d
        assert {(o.partition, o.committed, o.lag) for o in d.offsets} == {(0, 4, 0), (1, 3, 0)}
    produce(broker, "grp", [(0, b"g4")])
    # Committed offsets win over --offset (as over auto.offset.reset).
    assert ok_lines(broker, "grp", "-o", "beginning", *by_offset) == [b"0:4"]


# --------------------------------------------------------------------------- --format


def test_templates_print_raw_bytes_and_json_keeps_its_shape(broker: BrokerProcess) -> None:
    create(broker, "fmt", 1)
    stamp = 1_796_608_800_123
    with blocking.Producer(broker.bootstrap) as p:
        p.send("fmt", b"hello", key=b"k1", headers=[("h", b"v"), ("i", b"")], timestamp=stamp)
        p.send("fmt", b"\xffbin", timestamp=stamp + 1)
        p.send("fmt", None, key=b"k3", timestamp=stamp + 2)
        p.flush()
    r = sluice(broker, "consume", "fmt", "-e", "--format",
               "%t|%p|%o|%T|%k|%K|%s|%S|%h|%%\\t\\n")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout == (
        b"fmt|0|0|1796608800123|k1|2|hello|5|h=v,i=|%\t\n"
        b"fmt|0|1|1796608800124||-1|\xffbin|4||%\t\n"
        b"fmt|0|2|1796608800125|k3|2||-1||%\t\n"
    )
    assert ok_lines(broker, "fmt", "-e", "--format", "%s,") == [b"hello,\xffbin,,"]
    first, second, _ = (
        json.loads(line) for line in ok_lines(broker, "fmt", "-e", "--format", "json")
    )
    assert first == {
        "topic": "fmt",
        "partition": 0,
        "offset": 0,
        "timestamp": stamp,
        "key": "k1",
        "value": "hello",
        "key_encoding": "utf-8",
        "value_encoding": "utf-8",
        "headers": [["h", "dg=="], ["i", ""]],
    }
    assert (second["key"], second["value"], second["value_encoding"]) == (
        None,
        "/2Jpbg==",
        "base64",
    )


# --------------------------------------------------------------------------- failures


def test_missing_topics_and_partitions_fail_at_once(broker: BrokerProcess, spec_topic: str) -> None:
    cases = [
        (("nope", "-e"), 1, b"sluice: UNKNOWN_TOPIC_OR_PARTITION: topic 'nope' does not exist\n"),
        ((spec_topic, "--partition", "7"), 2,
         b"sluice: partition 7 out of range: topic 'spec' has 3 partitions (0-2)\n"),
        ((spec_topic, "-o", "7:5"), 2,
         b"sluice: partition 7 out of range: topic 'spec' has 3 partitions (0-2)\n"),
    ]  # fmt: skip
    for args, code, message in cases:
        started = time.monotonic()
        r = sluice(broker, "consume", *args)
        assert (r.returncode, r.stderr, r.stdout) == (code, message, b""), args
        assert time.monotonic() - started < 10, args


def test_an_unreachable_broker_fails_within_the_timeout() -> None:
    started = time.monotonic()
    r = run_sluice("consume", "t", "--bootstrap", "127.0.0.1:1", "--timeout", "2", timeout=60)
    elapsed = time.monotonic() - started
    assert r.returncode == 1 and r.stderr.startswith(b"sluice: NETWORK_EXCEPTION"), r.stderr
    assert elapsed < 2 + 5, elapsed


# --------------------------------------------------------------------------- the library


async def test_lookups_pause_resume_and_poll(broker: BrokerProcess, spec_topic: str) -> None:
    tps = [(spec_topic, p) for p in range(3)]
    async with Consumer(broker.bootstrap) as c:
        assert await c.partitions_for(spec_topic) == [0, 1, 2]
        assert await c.beginning_offsets(tps) == dict.fromkeys(tps, 0)
        assert await c.end_offsets(tps) == dict(zip(tps, SPEC_COUNTS, strict=True))
        for missing in (
            c.partitions_for("nope"),
            c.end_offsets([("nope", 0)]),
            c.beginning_offsets([(spec_topic, 3)]),
            c.offsets_for_times({(spec_topic, 9): 0}),
        ):
            with trio.fail_after(5), pytest.raises(UnknownTopicError) as e:
                await missing
            assert not e.value.retriable, e.value
        with pytest.raises(TypeError):
            await c.poll(timeout=1.0, timeout_ms=1000)

        a, b = tps[0], tps[1]
        c.assign([a, b])
        c.pause([a])
        assert c.paused() == {a}
        got = await poll_records(c, SPEC_COUNTS[1])
        assert {(r.partition, r.offset) for r in got} == {(1, 0), (1, 1), (1, 2)}
        assert await c.poll(timeout_ms=300) == []  # partition 0's records are held back
        c.resume([a])
        got = await poll_records(c, SPEC_COUNTS[0])
        assert [r.value for r in got] == [b"a0", b"a1", b"a2", b"a3", b"a4"]
        text = repr(c)
        assert broker.bootstrap in text and "assigned=2 partitions" in text and "open" in text
    assert repr(c).endswith("closed>")


def test_blocking_poll_names_and_paused_partitions(broker: BrokerProcess, spec_topic: str) -> None:
    """Records the iteration took but did not yield yet are held back too while paused."""
    a, b = (spec_topic, 0), (spec_topic, 1)
    with blocking.Consumer(broker.bootstrap, max_poll_records=2) as c:
        c.assign([a, b])
        with pytest.raises(TypeError):
            c.poll(timeout=1.0, timeout_ms=1000)
        c.pause([b])
        first = next(iter(c))  # takes a0 and a1 from the loop, yields a0
        assert (first.partition, first.value) == (0, b"a0")
        c.resume([b])
        c.pause([a])
        deadline = time.monotonic() + 10

        def poll_until(count: int) -> list[bytes | None]:
            values: list[bytes | None] = []
            while len(values) < count and time.monotonic() < deadline:
                values += [r.value for r in c.poll(timeout_ms=500)]
            return values

        assert poll_until(SPEC_COUNTS[1]) == [b"b0", b"b1", b"b2"]
        assert c.poll(timeout_ms=300) == []  # a1 waits in the facade, a2.. in the loop
        c.resume([a])
        assert poll_until(SPEC_COUNTS[0] - 1) == [b"a1", b"a2", b"a3", b"a4"]


# --------------------------------------------------------------------------- a pipe into head


def test_a_pipe_into_head_ends_quietly(broker: BrokerProcess, tmp_path: Path) -> None:
    """`sluice consume t | head -3`: head exits after three lines while consume still has
    thousands to write; consume ends at once with exit 0 and nothing on stderr, alone and as a
    group member (which still commits what it printed: the group's offsets are set)."""
    create(broker, "piped", 1)
    produce(broker, "piped", [(0, b"%d" % i) for i in range(20_000)])
    consume = " ".join(sluice_command("consume", "piped"))
    for extra in ("", "--group piped-g"):
        err_path = tmp_path / "consume.err"
        script = f"{consume} {extra} 2>{err_path} | head -3; echo rc=${{PIPESTATUS[0]}}"
        r = subprocess.run(
            ["bash", "-c", script],
            cwd=ROOT,
            env={**os.environ, "SLUICE_BOOTSTRAP": broker.bootstrap},
            capture_output=True,
            timeout=60,
        )
        err = err_path.read_bytes()
        assert r.stdout.splitlines() == [b"0", b"1", b"2", b"rc=0"], (extra, r.stdout, err)
        assert err == b"", (extra, err)
    with blocking.Admin(broker.bootstrap) as admin:
        committed = admin.group_offsets("piped-g")
    assert committed.get(("piped", 0), 0) >= 3, committed
