"""`sluice produce TOPIC [FILE]`: one record per line (or per `--delimiter`) of stdin or
FILE; exits 0 only once every record is acknowledged.

The topic (and `--partition`) are checked against a fresh metadata read before any input
is read: an unknown topic is exit 1, a partition out of range exit 2. Records are sent
without waiting (`send_nowait`) while a settling task checks their deliveries in input
order, so a failure names its record (`line N`) and how many records were acknowledged
before it; reading stops at the first failure, what was sent is given its delivery timeout
to settle, and the command exits 1.

Ctrl-C (SIGINT) or SIGTERM stops reading at once (input is read without blocking, see
`cli.produce_input`); what is in flight gets GRACE_S to settle, then the command says how
many records were acknowledged and how many not confirmed, and exits 128 + the signal's
number (130, 143). A second signal ends the grace at once.
"""

from __future__ import annotations

import functools
import os
import signal
from collections import deque
from dataclasses import dataclass
from typing import Annotated

import trio
import typer

from cli.common import DEFAULT_BOOTSTRAP, Bootstrap, Timeout, fail, run, usage
from cli.produce_input import RecordSplitter, open_input, parse_header, unescape
from consumers import BufferFull, Delivery, Producer, SluiceError
from consumers.offset_lookup import out_of_range

READ_BYTES = 1 << 16
YIELD_EVERY = 256
"""send_nowait() is the fast path (no checkpoint per record); let the loop run this often."""
GRACE_S = 2.0
"""Seconds records in flight get to settle after the first SIGINT or SIGTERM."""


@dataclass(frozen=True)
class Spec:
    """What to produce, as the command line says it."""

    topic: str
    path: str | None
    key_separator: bytes | None
    delimiter: bytes
    headers: tuple[tuple[str, bytes], ...] | None
    partition: int | None
    bootstrap: str
    timeout_s: float

    @property
    def unit(self) -> str:
        """What a record is called in messages: a line, unless --delimiter says otherwise."""
        return "line" if self.delimiter == b"\n" else "record"


@dataclass(frozen=True)
class Outcome:
    """The exit code and the message for stderr (None: nothing to say)."""

    code: int
    message: str | None = None


@dataclass(frozen=True)
class Failure:
    """The first record that failed: its number in the input (1-based), its error, and the
    records acknowledged before it."""

    ordinal: int
    error: SluiceError
    acked_before: int


class Tally:
    """The records sent, in input order, and what became of them. The pump appends to
    `window`; the settling task takes from its left as deliveries settle (counting
    `acked`), so `window` holds only records not yet checked."""

    def __init__(self) -> None:
        """Nothing sent yet."""
        self.window: deque[Delivery] = deque()
        self.sent = 0
        self.checked = 0
        self.acked = 0
        self.failure: Failure | None = None
        """The first failed record the settling task found (in input order)."""
        self.refused: tuple[int, SluiceError] | None = None
        """A record the producer refused at once (e.g. too large): nothing was sent after it."""
        self.input_done = False
        self.drained = trio.Event()
        self._more = trio.Event()

    def wake(self) -> None:
        """New records are in `window` (or the input ended): the settling task looks."""
        self._more.set()

    async def more(self) -> None:
        """Wait for `wake`."""
        await self._more.wait()
        self._more = trio.Event()

    def end_input(self) -> None:
        """Nothing more will be sent."""
        self.input_done = True
        self.wake()

    def acknowledged_now(self) -> int:
        """Records acknowledged so far: those counted in order, and those in `window`
        whose acknowledgement already arrived."""
        late = sum(1 for d in self.window if d.done and d.exception() is None)
        return self.acked + late


class Run:
    """The command's cancel scopes and the signal that stopped it, if one did."""

    def __init__(self) -> None:
        """Scopes not entered yet: a signal may cancel or bound them before they are."""
        self.input_scope = trio.CancelScope()
        """Checks, reading and sending: cancelled by a signal or the first failure."""
        self.drain_scope = trio.CancelScope()
        """Waiting for what was sent: bounded by GRACE_S after a signal."""
        self.signal: int | None = None


def produce(
    topic: Annotated[str, typer.Argument(metavar="TOPIC", help="Topic to write to.")],
    file: Annotated[
        str | None,
        typer.Argument(
            metavar="FILE",
            help="File to read records from; '-' or absent: stdin.",
            show_default=False,
        ),
    ] = None,
    key_separator: Annotated[
        str | None,
        typer.Option(
            "--key-separator",
            "-K",
            metavar="SEP",
            help="Split each record at the first SEP into key and value (escapes: \\t \\n "
            "\\r \\0 \\\\ \\xHH).",
        ),
    ] = None,
    delimiter: Annotated[
        str,
        typer.Option(
            "--delimiter",
            "-D",
            metavar="SEP",
            help="Record delimiter (same escapes). With the newline, a trailing \\r goes.",
        ),
    ] = "\\n",
    header: Annotated[
        list[str] | None,
        typer.Option(
            "--header", "-H", metavar="KEY=VALUE", help="A header on every record (repeatable)."
        ),
    ] = None,
    partition: Annotated[
        int | None,
        typer.Option(
            "--partition", "-p", min=0, metavar="N", help="Send every record to partition N."
        ),
    ] = None,
    bootstrap: Bootstrap = DEFAULT_BOOTSTRAP,
    timeout: Timeout = 30.0,
) -> None:
    """Write one record per line of stdin or FILE (the line without its newline is the
    value); exits 0 once every record is acknowledged."""
    spec = _spec(topic, file, key_separator, delimiter, header, partition, bootstrap, timeout)
    outcome = run(functools.partial(_main, spec))
    if outcome.code != 0:
        raise fail(outcome.message or "failed", outcome.code)


def _spec(
    topic: str,
    file: str | None,
    key_separator: str | None,
    delimiter: str,
    header: list[str] | None,
    partition: int | None,
    bootstrap: str,
    timeout: float,
) -> Spec:
    """The command line checked (bad usage: exit 2 before anything is read or sent)."""
    try:
        sep = None if key_separator is None else unescape(key_separator)
    except ValueError as e:
        raise usage(f"--key-separator: {e}") from None
    try:
        delim = unescape(delimiter)
    except ValueError as e:
        raise usage(f"--delimiter: {e}") from None
    if sep is not None and sep == delim:
        raise usage("--key-separator and --delimiter must differ")
    try:
        headers = tuple(parse_header(h) for h in header) if header else None
    except ValueError as e:
        raise usage(f"--header {e}") from None
    path = None if file in (None, "-") else file
    if path is not None and not os.access(path, os.R_OK):
        reason = "permission denied" if os.path.exists(path) else "no such file"
        raise usage(f"cannot read {path!r}: {reason}")
    return Spec(topic, path, sep, delim, headers, partition, bootstrap, max(timeout, 1.0))


async def _main(spec: Spec) -> Outcome:
    """Produce under a signal watcher; the outcome, never an exception for a failure."""
    state = Run()
    async with trio.open_nursery() as nursery:
        await nursery.start(_watch_signals, state)
        outcome = await _produce(spec, state, nursery)
        nursery.cancel_scope.cancel()
    return outcome


async def _watch_signals(state: Run, *, task_status: trio.TaskStatus[None]) -> None:
    """First SIGINT/SIGTERM: stop the input and bound the drain by GRACE_S; a second one
    ends the drain at once."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for signum in signals:
            if state.signal is None:
                state.signal = signum
                state.input_scope.cancel()
                grace_end = trio.current_time() + GRACE_S
                state.drain_scope.deadline = min(state.drain_scope.deadline, grace_end)
            else:
                state.drain_scope.cancel()


async def _produce(spec: Spec, state: Run, nursery: trio.Nursery) -> Outcome:
    """Open the producer, send everything, wait for it, close; the outcome."""
    async with Producer(spec.bootstrap, delivery_timeout_ms=spec.timeout_s * 1000) as p:
        tally = Tally()
        nursery.start_soon(_settle, tally, state)
        outcome = await _feed(p, spec, tally, state)
        with state.drain_scope:
            await tally.drained.wait()
        outcome = outcome or _verdict(spec, tally, state)
        stopping = outcome.code != 0
        try:
            await p.close(timeout_ms=0 if stopping else None)
        except SluiceError as e:
            if not stopping:
                outcome = Outcome(1, str(e))
    return outcome


async def _feed(p: Producer, spec: Spec, tally: Tally, state: Run) -> Outcome | None:
    """Check the target, then read and send until the input ends or is stopped; an outcome
    only when it failed before anything was sent."""
    with state.input_scope:
        try:
            refused = await _check_target(p, spec)
            if refused is not None:
                return refused
            async with open_input(spec.path) as stream:
                await _pump(stream, p, spec, tally)
        except SluiceError as e:
            return Outcome(1, str(e))
        except OSError as e:
            return Outcome(1, f"cannot read {spec.path or 'stdin'}: {e.strerror or e}")
        finally:
            tally.end_input()
    return None


async def _check_target(p: Producer, spec: Spec) -> Outcome | None:
    """Exit 2 for a partition the topic does not have (after a fresh metadata read);
    UnknownTopicError (exit 1) when the topic does not exist."""
    partitions = await p.partitions_for(spec.topic)
    if spec.partition is None or spec.partition < len(partitions):
        return None
    return Outcome(2, out_of_range(spec.topic, spec.partition, len(partitions)))


async def _pump(stream: trio.lowlevel.FdStream, p: Producer, spec: Spec, tally: Tally) -> None:
    """Read chunks, cut them into records and send those, until the input ends or a record
    is refused."""
    splitter = RecordSplitter(spec.delimiter)
    while True:
        chunk = await stream.receive_some(READ_BYTES)
        records = splitter.feed(chunk) if chunk else splitter.finish()
        if not await _send(records, p, spec, tally) or not chunk:
            return


async def _send(records: list[bytes], p: Producer, spec: Spec, tally: Tally) -> bool:
    """Send `records` in order (the hot path: no checkpoint per record); False once the
    producer refused one (noted in `tally`: nothing after it is sent)."""
    send_nowait = p.send_nowait
    topic, sep, headers, partition = spec.topic, spec.key_separator, spec.headers, spec.partition
    window = tally.window
    for record in records:
        key, value = None, record
        if sep is not None:
            k, found, v = record.partition(sep)
            if found:
                key, value = k, v
        try:
            try:
                d = send_nowait(topic, value, key=key, headers=headers, partition=partition)
            except BufferFull:
                d = await p.send(topic, value, key=key, headers=headers, partition=partition)
        except SluiceError as e:
            tally.refused = (tally.sent + 1, e)
            return False
        window.append(d)
        tally.sent += 1
        if tally.sent % YIELD_EVERY == 0:
            tally.wake()
            await trio.lowlevel.checkpoint()
    tally.wake()
    return True


async def _settle(tally: Tally, state: Run) -> None:
    """Check deliveries in input order as they settle; the first failure stops the input.
    Sets `tally.drained` once the input ended and every record sent has settled."""
    window = tally.window
    while True:
        if not window:
            if tally.input_done:
                tally.drained.set()
                return
            await tally.more()
            continue
        d = window[0]
        error = await _outcome(d) if not d.done else d.exception()
        window.popleft()
        tally.checked += 1
        if error is None:
            tally.acked += 1
        elif tally.failure is None:
            tally.failure = Failure(tally.checked, error, tally.acked)
            state.input_scope.cancel()


async def _outcome(d: Delivery) -> SluiceError | None:
    """Wait until `d` settles: None once acknowledged, else its error."""
    try:
        await d
    except SluiceError as e:
        return e
    return None


def _verdict(spec: Spec, tally: Tally, state: Run) -> Outcome:
    """The exit code and message once sending stopped and what was sent settled (or the
    grace after a signal ran out)."""
    if state.signal is not None:
        acked = tally.acknowledged_now()
        return Outcome(
            128 + state.signal,
            f"interrupted: {_records(acked)} acknowledged, {tally.sent - acked} not confirmed",
        )
    if tally.failure is not None:
        f = tally.failure
        after = tally.acked - f.acked_before
        return Outcome(1, _failed(spec, f.ordinal, f.error, f.acked_before, after))
    if tally.refused is not None:
        ordinal, error = tally.refused
        return Outcome(1, _failed(spec, ordinal, error, tally.acked, 0))
    return Outcome(0)


def _failed(spec: Spec, ordinal: int, error: SluiceError, before: int, after: int) -> str:
    """`line 1234: MESSAGE_TOO_LARGE: ...; 1233 records acknowledged before it`."""
    text = f"{spec.unit} {ordinal}: {error}; {_records(before)} acknowledged before it"
    return text + (f", {after} after it" if after else "")


def _records(n: int) -> str:
    return f"{n} record" if n == 1 else f"{n} records"
