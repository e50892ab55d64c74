"""The normal clients that run beside the fuzz, and the checks of the broker after it.

During the run: a normal idempotent producer (acks=all) keeps writing to the checked topic
(`live_producer`, after `preload`), every acknowledgement kept in an `AckLog`; a probe sends
ApiVersions on a connection of its own and must be answered within PROBE_TIMEOUT_S
(`probe`); the broker's RSS and open files are sampled (`sampler`, `rss_bytes`, `fd_count`,
`socket_count`, `cpu_seconds`). After it: every record acknowledged before or during the
run reads back with the same value at the same (partition, offset), nothing else is in the
checked topic and no value is there twice (`read_back`); a produce and fetch round trip
works (`round_trip`); the broker lets go of every closed connection within
SOCKETS_RELEASED_S (`sockets_released`) and of its byte budgets (`budgets_given_back`); it
logged no error (`log_errors`).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from array import array

import trio

from broker.wire.api import ApiKey
from broker.wire.errors import ErrorCode
from broker.wire.frames import FrameDecoder
from broker.wire.messages import ApiVersionsRequest
from broker.wire.protocol import decode_response, encode_request
from consumers import Admin, Consumer, ConsumerRecord, Producer
from consumers.errors import SluiceError
from tests.fuzz.stats import Stats
from tests.fuzz.target import CHECKED_PARTITIONS, CHECKED_TOPIC, RAFT_TOPIC, RESPONSE_LIMITS
from tests.support.harness import BrokerProcess

PROBE_INTERVAL_S = 0.05
PROBE_TIMEOUT_S = 10.0
SAMPLE_INTERVAL_S = 0.05
LIVE_RATE = 100
"""Records a second the normal producer writes during the fuzz."""
SOCKETS_RELEASED_S = 5.0
SOCKET_SLACK = 2
"""Sockets the broker may hold beyond its baseline after the run (a dial in progress to a
fake broker a heartbeat registered)."""
MAX_DETAILS = 40


class AckLog:
    """What a normal producer had acknowledged: value number -> (partition, offset), packed
    (9 bytes a record). Values are `prefix:number`, unique in the run."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix.encode()
        self.partition = array("b")
        self.offset = array("q")

    def value(self, i: int) -> bytes:
        return self.prefix + b":%d" % i

    def next_number(self) -> int:
        self.partition.append(-1)
        self.offset.append(-1)
        return len(self.offset) - 1

    def acked(self, i: int, partition: int, offset: int) -> None:
        self.partition[i] = partition
        self.offset[i] = offset

    def failed(self, i: int) -> None:
        self.partition[i] = -2  # the outcome is unknown: the record may or may not be there


async def preload(bootstrap: str, log: AckLog, n: int) -> None:
    async with Producer(bootstrap, linger_ms=5) as p:
        deliveries = []
        for _ in range(n):
            i = log.next_number()
            deliveries.append(
                (i, await p.send(CHECKED_TOPIC, log.value(i), partition=i % CHECKED_PARTITIONS))
            )
        await p.flush()
        for i, d in deliveries:
            md = d.result()
            log.acked(i, md.partition, md.offset)


async def live_producer(bootstrap: str, log: AckLog, stats: Stats, stop: trio.Event) -> None:
    """A normal idempotent producer writing one record at a time throughout the run, at most
    LIVE_RATE a second (each acknowledgement is a synced write the broker's loop waits for:
    flat out, it would halve the fuzz rate)."""
    async with Producer(bootstrap, linger_ms=1) as p:
        next_at = trio.current_time()
        while not stop.is_set():
            with trio.move_on_at(next_at):
                await stop.wait()
            next_at = max(next_at + 1 / LIVE_RATE, trio.current_time())
            i = log.next_number()
            try:
                md = await p.send_and_wait(
                    CHECKED_TOPIC, log.value(i), partition=i % CHECKED_PARTITIONS
                )
            except SluiceError as e:
                log.failed(i)
                stats.live_failed += 1
                stats.anomaly("producer-failed", f"record {i}: {type(e).__name__}: {e}")
                continue
            log.acked(i, md.partition, md.offset)
            stats.live_acked += 1


async def probe(host: str, port: int, stats: Stats, stop: trio.Event) -> None:
    """ApiVersions on a connection of its own, every PROBE_INTERVAL_S, each answered within
    PROBE_TIMEOUT_S (a normal client is served while the fuzz runs)."""
    stream = await trio.open_tcp_stream(host, port)
    decoder = FrameDecoder(RESPONSE_LIMITS)
    try:
        for corr in itertools.count(1):
            if stop.is_set():
                return
            started = trio.current_time()
            with trio.move_on_after(PROBE_TIMEOUT_S) as waited:
                await stream.send_all(encode_request(ApiVersionsRequest(), corr, "fuzz-probe"))
                frame = None
                while frame is None:
                    frame = decoder.next_frame()
                    if frame is None:
                        data = await stream.receive_some(1 << 16)
                        if not data:
                            stats.anomaly("probe", "the broker closed the probe's connection")
                            return
                        decoder.receive_data(data)
            if waited.cancelled_caught:
                stats.anomaly("probe", f"no ApiVersions answer within {PROBE_TIMEOUT_S} s")
                return
            assert frame is not None
            env = decode_response(frame, ApiKey.API_VERSIONS, RESPONSE_LIMITS)
            if env.correlation_id != corr or env.error is not ErrorCode.NONE:
                stats.anomaly("probe", f"bad answer {env}")
            stats.probe_sample(trio.current_time() - started)
            with trio.move_on_after(PROBE_INTERVAL_S):
                await stop.wait()
    finally:
        await trio.aclose_forcefully(stream)


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def socket_count(pid: int) -> int:
    """Open sockets of a process (listeners and connections)."""
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):  # closed meanwhile
            n += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
    return n


async def sockets_released(pid: int, baseline: int, stats: Stats) -> None:
    """Once every fuzz connection is closed, the broker must let go of them: its sockets
    return to what it held before the run (give or take SOCKET_SLACK) within
    SOCKETS_RELEASED_S. Polls /proc (there is no event to wait for)."""
    deadline = trio.current_time() + SOCKETS_RELEASED_S
    while (held := socket_count(pid)) > baseline + SOCKET_SLACK:
        if trio.current_time() >= deadline:
            stats.anomaly(
                "connections-held",
                f"the broker holds {held} sockets, {baseline} before the run, "
                f"{SOCKETS_RELEASED_S:.0f} s after every fuzz connection closed",
            )
            return
        await trio.sleep(0.1)


async def budgets_given_back(broker: BrokerProcess) -> str | None:
    """Once every connection is closed, the broker's request and peer byte budgets are back
    at zero (room taken and never given back would, over time, stop it reading at all)."""
    deadline = trio.current_time() + SOCKETS_RELEASED_S
    while True:
        st = await trio.to_thread.run_sync(broker.stats)
        held = (st["server"]["budget_in_use"], st["peers"]["budget_in_use"])
        if held == (0, 0):
            return None
        if trio.current_time() >= deadline:
            return (
                f"byte budgets not given back {SOCKETS_RELEASED_S:.0f} s after every "
                f"connection closed: requests {held[0]} bytes, peers {held[1]} bytes"
            )
        await trio.sleep(0.1)


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def sampler(pid: int, stats: Stats, stop: trio.Event) -> None:
    while not stop.is_set():
        try:
            stats.rss_peak = max(stats.rss_peak, rss_bytes(pid))
            stats.fds_peak = max(stats.fds_peak, fd_count(pid))
        except OSError:
            return  # the process is gone: the run's checks report it
        with trio.move_on_after(SAMPLE_INTERVAL_S):
            await stop.wait()


async def read_back(bootstrap: str, logs: list[AckLog]) -> list[str]:
    """Every acknowledged record at its (partition, offset) with its value; nothing foreign
    in the checked topic; no value twice."""
    problems: list[str] = []
    by_prefix = {log.prefix: log for log in logs}
    seen = {log.prefix: bytearray(len(log.offset)) for log in logs}
    async with Admin(bootstrap) as admin:
        ends = {
            p.partition: p.high_watermark
            for p in (await admin.describe_topic(CHECKED_TOPIC)).partitions
        }
    async with Consumer(bootstrap, fetch_max_wait_ms=100) as consumer:
        tps = [(CHECKED_TOPIC, p) for p in range(CHECKED_PARTITIONS)]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        positions = dict.fromkeys(range(CHECKED_PARTITIONS), 0)
        with trio.move_on_after(60) as reading:
            while any(positions[p] < (ends[p] or 0) for p in positions):
                for r in await consumer.poll(timeout=1.0):
                    positions[r.partition] = r.offset + 1
                    prefix, _, number = (r.value or b"").partition(b":")
                    log = by_prefix.get(prefix)
                    if log is None or not number.isdigit() or int(number) >= len(log.offset):
                        problems.append(f"foreign record at {r.partition}/{r.offset}: {r.value!r}")
                        continue
                    i = int(number)
                    if seen[prefix][i]:
                        problems.append(
                            f"{r.value!r} read twice (again at {r.partition}/{r.offset})"
                        )
                    seen[prefix][i] = 1
                    want = (log.partition[i], log.offset[i])
                    if want[0] >= 0 and want != (r.partition, r.offset):
                        problems.append(
                            f"{r.value!r} acknowledged at {want[0]}/{want[1]}, "
                            f"read at {r.partition}/{r.offset}"
                        )
        if reading.cancelled_caught:
            problems.append(f"read-back stalled at {positions}, high watermarks {ends}")
    for log in logs:
        lost = [
            i for i in range(len(log.offset)) if log.partition[i] >= 0 and not seen[log.prefix][i]
        ]
        if lost:
            i = lost[0]
            problems.append(
                f"{len(lost)} acknowledged {log.prefix.decode()} records lost, e.g. "
                f"{log.value(i)!r} at {log.partition[i]}/{log.offset[i]}"
            )
    return problems[:MAX_DETAILS]


async def round_trip(bootstrap: str) -> str | None:
    value = b"round-trip:%d" % time.time_ns()
    try:
        with trio.fail_after(60):
            async with Producer(bootstrap, linger_ms=0) as p:
                md = await p.send_and_wait(RAFT_TOPIC, value, partition=0)
            async with Consumer(bootstrap) as c:
                c.assign([(RAFT_TOPIC, 0)])
                c.seek((RAFT_TOPIC, 0), md.offset)
                records: list[ConsumerRecord] = []
                while not records:
                    records = await c.poll(timeout=1.0)
                got = records[0]
                if got.value != value:
                    return f"round trip read {got!r} at offset {md.offset}, wrote {value!r}"
    except (SluiceError, trio.TooSlowError) as e:
        return f"round trip failed: {type(e).__name__}: {e}"
    return None


def log_errors(text: str) -> list[str]:
    """The broker's ERROR lines (an exception it contained is still a bug)."""
    return [line for line in text.splitlines() if " ERROR " in line or " CRITICAL " in line]
