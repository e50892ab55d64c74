"""`sluice produce` as a user types it, against one real broker shared by the module: a file
argument, headers, a fixed partition, escaped separators and CRLF input read back with the
library Consumer; an unknown topic, a partition out of range and an unreachable broker
refused at once; an oversized line in the middle (its line number, the count before it, and
exactly those records in the topic); SIGINT and SIGTERM while stdin is an idle pipe (the
count printed is what a consumer reads back). Plus the library's partition check against
real metadata (a topic grown by alter_topic) and the blocking Delivery's callbacks."""

from __future__ import annotations

import array
import fcntl
import os
import re
import signal
import subprocess
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest
import trio

from consumers import Admin, Consumer, ConsumerRecord, blocking
from consumers.errors import UnknownTopicError
from tests.support.harness import BrokerProcess, running_broker
from tests.support.sluice_cli import ROOT, run_sluice, sluice_command
from tests.support.wait import poll_records, wait_until


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    with running_broker(tmp_path_factory.mktemp("cli-produce") / "data-0") as b:
        yield b


def create(b: BrokerProcess, topic: str, partitions: int, **config: str) -> None:
    async def go() -> None:
        async with Admin(b.bootstrap) as admin:
            await admin.create_topic(topic, partitions, 1, dict(config))

    trio.run(go)


def high_watermarks(b: BrokerProcess, topic: str) -> list[int | None]:
    async def go() -> list[int | None]:
        async with Admin(b.bootstrap) as admin:
            described = await admin.describe_topic(topic)
        return [p.high_watermark for p in described.partitions]

    return trio.run(go)


def read_back(b: BrokerProcess, topic: str, partitions: int, count: int) -> list[ConsumerRecord]:
    """At least `count` records of the topic (every partition), within 20 s."""

    async def go() -> list[ConsumerRecord]:
        async with Consumer(b.bootstrap) as c:
            c.assign([(topic, p) for p in range(partitions)])
            return await poll_records(c, count, timeout=20)

    return trio.run(go)


def test_file_headers_partition_and_escaped_separators(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    """A file of CRLF lines with tab-separated keys, headers and --partition; then stdin
    ('-') cut at an escaped record delimiter."""
    create(broker, "kv", 3)
    path = tmp_path / "events.txt"
    path.write_bytes(b"user-1\tclicked\r\nuser-2\tbought\r\n\r\nno key here\r\n")
    r = run_sluice("produce", "kv", str(path), "-K", "\\t", "-H", "source=web",
                   "-H", "trace=a=b", "--partition", "2", bootstrap=broker.bootstrap)  # fmt: skip
    assert (r.returncode, r.stderr) == (0, b"")
    records = read_back(broker, "kv", 3, 4)
    assert [(x.partition, x.key, x.value) for x in records] == [
        (2, b"user-1", b"clicked"),
        (2, b"user-2", b"bought"),
        (2, None, b""),
        (2, None, b"no key here"),
    ]
    assert {x.headers for x in records} == {(("source", b"web"), ("trace", b"a=b"))}

    create(broker, "rs", 1)
    r = run_sluice("produce", "rs", "-", "-D", "\\x1e", "--key-separator", "=",
                   stdin=b"a=1\r\x1eb=2\nmore\x1ec", bootstrap=broker.bootstrap)  # fmt: skip
    assert (r.returncode, r.stderr) == (0, b"")
    records = read_back(broker, "rs", 1, 3)
    assert [(x.key, x.value, x.headers) for x in records] == [
        (b"a", b"1\r", ()),  # only the newline delimiter drops a carriage return
        (b"b", b"2\nmore", ()),
        (None, b"c", ()),
    ]


def test_unknown_topic_and_partition_out_of_range_are_refused_at_once(
    broker: BrokerProcess,
) -> None:
    create(broker, "three", 3)
    started = time.monotonic()
    r = run_sluice("produce", "three", "-p", "9", stdin=b"x\n", bootstrap=broker.bootstrap)
    assert r.returncode == 2, r.stderr
    assert r.stderr == b"sluice: partition 9 out of range: topic 'three' has 3 partitions (0-2)\n"
    r = run_sluice("produce", "missing", stdin=b"x\n", bootstrap=broker.bootstrap)
    assert r.returncode == 1, r.stderr
    assert r.stderr == b"sluice: UNKNOWN_TOPIC_OR_PARTITION: topic 'missing' does not exist\n"
    assert time.monotonic() - started < 15, "not after the 30 s default timeout"
    assert high_watermarks(broker, "three") == [0, 0, 0]


def test_an_unreachable_broker_is_a_network_exception() -> None:
    r = run_sluice("produce", "t", "--bootstrap", "127.0.0.1:1", "--timeout", "1", stdin=b"x\n")
    assert r.returncode == 1, r.stderr
    assert r.stderr.startswith(b"sluice: NETWORK_EXCEPTION: topic 't': no broker reachable")
    assert b"127.0.0.1:1" in r.stderr and b"UNKNOWN_TOPIC" not in r.stderr


def test_an_oversized_line_names_its_number_and_what_was_acknowledged(
    broker: BrokerProcess,
) -> None:
    create(broker, "small", 2, **{"max.message.bytes": "1024"})
    before = [b"line-%d" % i for i in range(1, 1234)]
    lines = [*before, b"x" * 2000, *(b"after-%d" % i for i in range(10))]
    r = run_sluice("produce", "small", stdin=b"\n".join(lines) + b"\n", bootstrap=broker.bootstrap)
    assert r.returncode == 1, r.stderr
    assert re.fullmatch(
        rb"sluice: line 1234: MESSAGE_TOO_LARGE: record of ~\d+ bytes is above the limit of"
        rb" 1024 bytes \(max.message.bytes of topic 'small'\); 1233 records acknowledged"
        rb" before it\n",
        r.stderr,
    ), r.stderr
    records = read_back(broker, "small", 2, 1233)
    assert sorted(x.value for x in records if x.value is not None) == sorted(before)
    assert sum(hw or 0 for hw in high_watermarks(broker, "small")) == 1233


def start_produce(broker: BrokerProcess, topic: str) -> subprocess.Popen[bytes]:
    """`sluice produce TOPIC` running, its stdin a pipe this test writes, stderr captured."""
    return subprocess.Popen(
        sluice_command("produce", topic),
        cwd=ROOT,
        env={**os.environ, "SLUICE_BOOTSTRAP": broker.bootstrap},
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_at_once_while_stdin_is_idle(
    broker: BrokerProcess, sig: signal.Signals, code: int
) -> None:
    topic = f"live-{sig.name.lower()}"
    create(broker, topic, 1)
    proc = start_produce(broker, topic)
    try:
        assert proc.stdin is not None and proc.stderr is not None
        proc.stdin.write(b"one\ntwo\nthree\n")
        proc.stdin.flush()  # ... and the pipe stays open: stdin is idle from here on
        records = read_back(broker, topic, 1, 3)
        started = time.monotonic()
        proc.send_signal(sig)
        assert proc.wait(timeout=5) == code
        assert time.monotonic() - started < 5
        stderr = proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()
    assert stderr == b"sluice: interrupted: 3 records acknowledged, 0 not confirmed\n"
    assert [x.value for x in records] == [b"one", b"two", b"three"]
    assert high_watermarks(broker, topic) == [3]


def unread_bytes(pipe: IO[bytes]) -> int:
    """Bytes written to `pipe` that its reader has not read yet (FIONREAD)."""
    count = array.array("i", [0])
    fcntl.ioctl(pipe.fileno(), termios.FIONREAD, count)
    return count[0]


def test_a_second_signal_ends_the_grace_at_once(broker: BrokerProcess) -> None:
    """Records in flight to a broker that stopped answering (SIGSTOP): the first SIGINT
    starts the grace for them (2 s), a second one exits at once, and the message counts the
    records acknowledged and those not confirmed."""
    topic = "second-signal"
    create(broker, topic, 1)
    proc = start_produce(broker, topic)
    stopped = False
    try:
        assert proc.stdin is not None and proc.stderr is not None
        proc.stdin.write(b"one\ntwo\n")
        proc.stdin.flush()
        read_back(broker, topic, 1, 2)  # both acknowledged (the producer saw the answers too)
        broker.kill(signal.SIGSTOP)
        stopped = True
        proc.stdin.write(b"three\nfour\n")
        proc.stdin.flush()
        stdin = proc.stdin
        wait_until(lambda: unread_bytes(stdin) == 0, "the producer read the lines", timeout=10)
        started = time.monotonic()
        # Trio folds a signal into one still pending: repeat SIGINT until the process is gone
        # (the first one read starts the grace, the next one read ends it).
        while proc.poll() is None and time.monotonic() - started < 5:
            proc.send_signal(signal.SIGINT)
            time.sleep(0.1)
        assert proc.wait(timeout=5) == 130
        assert time.monotonic() - started < 1.9  # the grace alone is 2 s
        stderr = proc.stderr.read()
    finally:
        if stopped:
            broker.kill(signal.SIGCONT)
        proc.kill()
        proc.wait()
    assert b"records acknowledged" in stderr and b"not confirmed" in stderr, stderr
    assert not stderr.endswith(b"0 not confirmed\n"), stderr


def test_library_routes_to_a_grown_partition_and_runs_blocking_callbacks(
    broker: BrokerProcess,
) -> None:
    """The blocking Producer cached 3 partitions; alter_topic grows the topic to 5: a record
    for partition 4 is routed after a fresh read, one for partition 9 fails for good. Done
    callbacks run in the producer's loop thread (at once in the caller's when settled)."""
    create(broker, "grow", 3)

    async def grow() -> None:
        async with Admin(broker.bootstrap) as admin:
            await admin.alter_topic("grow", partitions=5)

    # linger_ms=500: the record cannot settle before its callback is added, however slow
    # this thread is scheduled (an already settled one runs the callback in the caller's).
    with blocking.Producer(broker.bootstrap, linger_ms=500) as p:
        assert p.partitions_for("grow") == [0, 1, 2]
        trio.run(grow)
        called = threading.Event()
        threads: list[threading.Thread] = []

        def on_done(d: blocking.Delivery) -> None:
            threads.append(threading.current_thread())
            called.set()

        d = p.send_nowait("grow", b"v", partition=4)
        d.add_done_callback(on_done)
        md = d.wait()
        assert (md.partition, md.offset) == (4, 0)
        assert called.wait(5) and threads[0] is not threading.current_thread()
        d.add_done_callback(on_done)
        assert threads[-1] is threading.current_thread()
        assert repr(d) == "<Delivery topic='grow' partition=4 offset=0 acknowledged>"
        bad = p.send_nowait("grow", b"v", partition=9)
        with pytest.raises(UnknownTopicError) as raised:
            bad.wait()
        assert not raised.value.retriable and isinstance(bad.exception(), UnknownTopicError)
        with pytest.raises(UnknownTopicError):
            p.flush()
