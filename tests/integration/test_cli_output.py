"""The admin side of `sluice` as a user types it, against one real broker (shared by the
module; its `default_partitions` is 3, so the broker's defaults show): honest errors (the
code once, no wire path; what waiting cannot heal fails at once with exit 2), tables a
script can read (tab-separated when stdout is not a terminal), several topics per create or
delete, the broker's defaults when none are given, flags shown as flags in --help, shell
completion, and NETWORK_EXCEPTION from every admin command when no broker can be reached.
The Admin API's side of the same: defaults, milliseconds, refusals at once."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from cli.main import app
from consumers import (
    Admin,
    InvalidReplicationFactorError,
    InvalidTopicError,
    UnknownTopicError,
    blocking,
)
from consumers.admin import OffsetReset, OffsetResetSpec
from tests.support.harness import BrokerProcess, running_broker
from tests.support.sluice_cli import ROOT, run_sluice, sluice_command

RULE = "use 1-249 of ASCII letters, digits, '.', '_' and '-'"
AT_ONCE_S = 10.0
"""Well under the --timeout given: the command did not retry."""


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    with running_broker(
        tmp_path_factory.mktemp("cli-output") / "data-0", default_partitions=3
    ) as b:
        yield b


def sluice(broker: BrokerProcess, *args: str) -> subprocess.CompletedProcess[bytes]:
    return run_sluice(*args, bootstrap=broker.bootstrap)


def lines(data: bytes) -> list[str]:
    return data.decode().splitlines()


async def partition_counts(broker: BrokerProcess) -> dict[str, int]:
    async with Admin(broker.bootstrap, timeout_ms=10_000) as a:
        return {t.name: len(t.partitions) for t in await a.list_topics()}


# --------------------------------------------------------------------------- topics


async def test_create_several_topics_with_the_broker_defaults_and_list_them(
    broker: BrokerProcess,
) -> None:
    r = sluice(broker, "topic", "create", "d1", "d2")
    assert r.returncode == 0, r.stderr
    assert lines(r.stdout) == [
        "created topic d1: 3 partitions, replication factor 1",
        "created topic d2: 3 partitions, replication factor 1",
    ]
    assert {"d1": 3, "d2": 3}.items() <= (await partition_counts(broker)).items()
    # To a pipe: a header line, then tab-separated rows; no box drawing, nothing cut.
    r = sluice(broker, "topic", "list")
    assert r.returncode == 0, r.stderr
    listed = lines(r.stdout)
    assert listed[0] == "TOPIC\tPARTITIONS\tREPLICATION"
    assert "d1\t3\t1" in listed and "d2\t3\t1" in listed
    assert not set("│┃━─") & set(r.stdout.decode())
    r = sluice(broker, "topic", "describe", "d1")
    assert r.returncode == 0, r.stderr
    assert lines(r.stdout) == [
        "PARTITION\tLEADER\tREPLICAS\tLOG START\tHIGH WATERMARK",
        "0\t0\t0\t0\t0",
        "1\t0\t0\t0\t0",
        "2\t0\t0\t0\t0",
    ]


async def test_several_names_one_line_each_and_the_worst_exit_code(broker: BrokerProcess) -> None:
    r = sluice(broker, "topic", "create", "m1", "bad/", "m2", "--partitions", "2")
    assert r.returncode == 2, r.stderr  # one name was bad usage
    assert lines(r.stdout) == [
        "created topic m1: 2 partitions, replication factor 1",
        "created topic m2: 2 partitions, replication factor 1",
    ]
    assert lines(r.stderr) == [
        f"sluice: topic bad/: INVALID_TOPIC: invalid topic name 'bad/': {RULE}"
    ]
    assert {"m1": 2, "m2": 2}.items() <= (await partition_counts(broker)).items()
    r = sluice(broker, "topic", "delete", "m1", "nope", "m2")
    assert r.returncode == 1, r.stderr  # one topic did not exist: a failed operation
    assert lines(r.stdout) == ["deleted topic m1", "deleted topic m2"]
    assert lines(r.stderr) == ["sluice: topic nope: UNKNOWN_TOPIC_OR_PARTITION: no topic 'nope'"]
    left = await partition_counts(broker)
    assert "m1" not in left and "m2" not in left


async def test_a_replication_factor_above_the_cluster_fails_at_once(
    broker: BrokerProcess,
) -> None:
    started = time.monotonic()
    r = sluice(broker, "topic", "create", "r3", "--replication-factor", "3", "--timeout", "30")
    assert time.monotonic() - started < AT_ONCE_S
    assert r.returncode == 2
    assert r.stderr.decode() == (
        "sluice: INVALID_REPLICATION_FACTOR: replication factor 3 is above the 1 broker in "
        "the cluster\n"
    )
    assert "r3" not in await partition_counts(broker)


async def test_a_bad_topic_name_fails_at_once_without_a_wire_path(broker: BrokerProcess) -> None:
    started = time.monotonic()
    r = sluice(broker, "topic", "create", "a/b", "--timeout", "30")
    assert time.monotonic() - started < AT_ONCE_S
    assert r.returncode == 2
    assert r.stderr.decode() == f"sluice: INVALID_TOPIC: invalid topic name 'a/b': {RULE}\n"
    assert "a/b" not in await partition_counts(broker)


# --------------------------------------------------------------------------- the Admin API


async def test_admin_uses_the_broker_defaults_and_refuses_at_once(broker: BrokerProcess) -> None:
    async with Admin(broker.bootstrap, timeout_ms=30_000) as a:
        await a.create_topic("api-defaults")
        described = await a.describe_topic("api-defaults")
        assert (len(described.partitions), described.replication_factor) == (3, 1)
        await a.create_topic("api-two", partitions=2, timeout_s=20)  # the older name works
        assert len((await a.describe_topic("api-two")).partitions) == 2
        started = time.monotonic()
        with pytest.raises(InvalidReplicationFactorError) as rf:
            await a.create_topic("api-rf", replication_factor=2)
        assert not rf.value.retriable
        with pytest.raises(InvalidTopicError):
            await a.describe_topic("a b")
        with pytest.raises(UnknownTopicError) as gone:
            await a.delete_topic("api-nope")
        assert not gone.value.retriable
        spec = OffsetResetSpec(strategy="to_earliest", topics={"api-two": (5,)})
        with pytest.raises(UnknownTopicError, match=r"no partition 5 \(it has 2 partitions\)"):
            await a.reset_offsets_plan("g", spec)
        with pytest.raises(UnknownTopicError, match="no partition 9"):
            await a.reset_offsets("g", [OffsetReset("api-two", 9, None, 0)])
        assert time.monotonic() - started < AT_ONCE_S  # none of these was retried
        assert "api-rf" not in {t.name for t in await a.list_topics()}


def test_the_blocking_admin_has_the_same_defaults(broker: BrokerProcess) -> None:
    with blocking.Admin(broker.bootstrap, timeout_ms=20_000) as a:
        a.create_topic("blocking-defaults")
        assert len(a.describe_topic("blocking-defaults").partitions) == 3
        a.delete_topic("blocking-defaults", timeout_s=20)
        assert "blocking-defaults" not in {t.name for t in a.list_topics()}


# --------------------------------------------------------------------------- help, completion


def test_help_shows_flags_without_a_value_type() -> None:
    r = run_sluice("topic", "list", "--help")
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    assert "<bool>" not in out and "--json" in out
    json_line = next(line for line in out.splitlines() if "--json" in line)
    assert json_line.split("--json")[1].split()[0] == "Print", json_line


def test_shell_completion_answers() -> None:
    env = {**os.environ, "_SLUICE_COMPLETE": "complete_bash", "COMP_WORDS": "sluice to"}
    env["COMP_CWORD"] = "1"
    r = subprocess.run(sluice_command(), cwd=ROOT, env=env, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "topic" in r.stdout.decode().split(), r.stdout


# --------------------------------------------------------------------------- no broker


def test_no_broker_reachable_is_network_exception_once_the_timeout_passed() -> None:
    started = time.monotonic()
    r = run_sluice("topic", "list", "--bootstrap", "127.0.0.1:1", "--timeout", "2")
    took = time.monotonic() - started
    assert r.returncode == 1
    err = r.stderr.decode()
    assert err.startswith("sluice: NETWORK_EXCEPTION: no broker reachable: "), err
    assert err.count("NETWORK_EXCEPTION") == 1 and "connection refused" in err, err
    assert 1.5 < took < 20  # retried until --timeout, then given up


ADMIN_COMMANDS = [
    ["topic", "list"],
    ["topic", "create", "x"],
    ["topic", "create", "x", "y"],
    ["topic", "describe", "x"],
    ["topic", "alter", "x", "--partitions", "2"],
    ["topic", "delete", "x"],
    ["group", "list"],
    ["group", "describe", "g"],
    ["group", "reset-offsets", "g", "--topic", "t", "--to-earliest"],
    ["group", "delete", "g"],
    ["txn", "list"],
    ["txn", "describe", "t"],
    ["txn", "abort", "t"],
    ["cluster", "status"],
    ["leaders", "balance"],
    ["rebalance", "plan"],
    ["rebalance", "execute"],
    ["rebalance", "status"],
    ["rebalance", "cancel"],
    ["broker", "drain", "1"],
    ["broker", "undrain", "1"],
]


def test_every_admin_command_says_network_exception_when_no_broker_answers() -> None:
    """In this process (each command's whole run, a short --timeout) to keep it quick."""
    runner = CliRunner()
    for command in ADMIN_COMMANDS:
        args = [*command, "--bootstrap", "127.0.0.1:1", "--timeout", "0.3"]
        result = runner.invoke(app, args, env={"SLUICE_BOOTSTRAP": None})
        assert result.exit_code == 1, (command, result.output, result.exception)
        err = result.stderr
        if command[:2] == ["topic", "create"] and len(command) > 3:
            assert err.startswith("sluice: topic x: NETWORK_EXCEPTION: "), (command, err)
        else:
            assert err.startswith("sluice: NETWORK_EXCEPTION: "), (command, err)
        assert "NETWORK_EXCEPTION: NETWORK_EXCEPTION" not in err, (command, err)
        assert "[0]" not in err, (command, err)  # no wire field path
