"""Honest admin errors without a broker: topic names checked before anything is sent (and
the broker's own wording of the same rule), messages that say a code once and no wire path,
replication factors that waiting cannot heal told apart from those it can, and the Admin's
durations in milliseconds with their older second-based names."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from broker.core.metadata import (
    BrokerInfo,
    MetadataMachine,
    cmd_create_topic,
    cmd_init,
    cmd_register_broker,
    cmd_set_alive,
)
from broker.wire.errors import ErrorCode
from broker.wire.limits import topic_name_problem
from cli.main import app
from consumers import (
    Admin,
    BrokerUnavailableError,
    InvalidGroupIdError,
    InvalidTopicError,
    SluiceError,
    blocking,
)
from consumers.admin import check_id, check_topic_name, id_problem, transactional_id_problem
from consumers.cluster import nested

RULE = "use 1-249 of ASCII letters, digits, '.', '_' and '-'"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("a/b", f"invalid topic name 'a/b': {RULE}"),
        ("a b", f"invalid topic name 'a b': {RULE}"),
        ("", f"invalid topic name '': {RULE}"),
        ("é", f"invalid topic name 'é': {RULE}"),
        (".", "invalid topic name '.': '.' and '..' are not allowed"),
        ("..", "invalid topic name '..': '.' and '..' are not allowed"),
        ("x" * 250, f"invalid topic name '{'x' * 60}...' (250 characters): {RULE}"),
    ],
)
def test_a_bad_topic_name_is_refused_before_sending_without_a_wire_path(
    name: str, message: str
) -> None:
    assert topic_name_problem(name) == message
    with pytest.raises(InvalidTopicError) as raised:
        check_topic_name(name)
    assert raised.value.message == message and not raised.value.retriable
    assert str(raised.value) == f"INVALID_TOPIC: {message}"


@pytest.mark.parametrize("name", ["orders", "a.b_c-D9", "...", "x" * 249])
def test_good_topic_names_pass(name: str) -> None:
    assert topic_name_problem(name) is None
    check_topic_name(name)


def test_an_error_says_its_code_once() -> None:
    inner = BrokerUnavailableError("cannot connect to 127.0.0.1:1: connection refused")
    assert str(inner) == "NETWORK_EXCEPTION: cannot connect to 127.0.0.1:1: connection refused"
    # A message that already starts with the code is not prefixed twice.
    again = BrokerUnavailableError(str(inner))
    assert str(again) == str(inner)
    # Nested in an error of the same code: without the code; of another code: with it.
    assert nested(inner, ErrorCode.NETWORK_EXCEPTION) == inner.message
    assert nested(inner, ErrorCode.REQUEST_TIMED_OUT) == str(inner)


def _three_brokers() -> MetadataMachine:
    m = MetadataMachine()
    m.apply(1, cmd_init("c"))
    for i in range(3):
        m.apply(2 + i, cmd_register_broker(BrokerInfo(i, 1, f"h{i}", 9092, f"h{i}", 19092, None)))
    return m


def test_too_few_brokers_alive_is_retriable_and_says_how_many_are() -> None:
    """Enough brokers registered, one failed: NOT_ENOUGH_REPLICAS (clients retry until their
    timeout), naming how many of the cluster's brokers are alive."""
    m = _three_brokers()
    m.apply(10, cmd_set_alive(2, False))
    result = m.apply(11, cmd_create_topic("t", 1, 3, {}))
    assert result.error is ErrorCode.NOT_ENOUGH_REPLICAS and result.error.retriable
    assert result.message == (
        "replication factor 3 needs 3 live brokers; 2 of the 3 in the cluster are alive"
    )


def test_the_admin_takes_milliseconds_and_its_older_seconds() -> None:
    assert Admin("127.0.0.1:1").timeout_ms == 30_000
    assert Admin("127.0.0.1:1", timeout_ms=2_500).timeout_ms == 2_500
    old = Admin("127.0.0.1:1", timeout_s=2.5)
    assert old.timeout_ms == 2_500 and old.timeout_s == 2.5
    with pytest.raises(TypeError, match="timeout_ms or timeout_s"):
        Admin("127.0.0.1:1", timeout_ms=1, timeout_s=1)
    with pytest.raises(TypeError):
        blocking.Admin("127.0.0.1:1", timeout_ms=1, timeout_s=1)


def test_the_admin_says_what_it_is() -> None:
    assert repr(Admin("127.0.0.1:1")) == "Admin(bootstrap='127.0.0.1:1', closed)"
    assert repr(blocking.Admin("127.0.0.1:1")) == "blocking Admin(bootstrap='127.0.0.1:1', closed)"


async def test_a_method_given_both_spellings_refuses_before_sending() -> None:
    async with Admin("127.0.0.1:1") as a:
        assert repr(a) == "Admin(bootstrap='127.0.0.1:1', open)"
        with pytest.raises(TypeError):
            await a.create_topic("t", timeout_ms=1_000, timeout_s=1)
        with pytest.raises(TypeError):
            await a.delete_topic("t", timeout_ms=1_000, timeout_s=1)
        with pytest.raises(TypeError):
            await a.elect_preferred_leaders(wait=True, poll_interval_ms=100, poll_s=0.1)
        with pytest.raises(TypeError):
            await a.wait_for_reassignments(timeout_ms=1, timeout_s=1)
        with pytest.raises(InvalidTopicError):
            await a.create_topic("a/b")  # checked before anything is sent


def test_the_blocking_admin_refuses_a_bad_name_at_once() -> None:
    with blocking.Admin("127.0.0.1:1") as a:
        with pytest.raises(SluiceError) as raised:
            a.create_topic("a/b", timeout_ms=60_000)
        assert isinstance(raised.value, InvalidTopicError)
        with pytest.raises(TypeError):
            a.delete_topic("t", timeout_ms=1, timeout_s=1)


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("", "group id must not be empty"),
        ("g\tx", "group id 'g\\tx' contains a control character"),
        ("g" * 256, f"group id '{'g' * 40}'... has 256 characters: use 1-255"),
        ("billing", None),
    ],
)
def test_group_ids_are_checked_before_sending(key: str, problem: str | None) -> None:
    assert id_problem(key) == problem
    if problem is None:
        check_id(key)
        return
    with pytest.raises(InvalidGroupIdError) as raised:
        check_id(key)
    assert str(raised.value) == f"INVALID_GROUP_ID: {problem}"
    assert transactional_id_problem(key) == problem.replace("group id", "transactional id")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["group", "describe", ""], "sluice: INVALID_GROUP_ID: group id must not be empty"),
        (["group", "delete", "a\x01"], "sluice: INVALID_GROUP_ID: group id 'a\\x01' contains"),
        (["txn", "abort", ""], "sluice: transactional id must not be empty"),
        (["topic", "describe", "a b"], "sluice: INVALID_TOPIC: invalid topic name 'a b': use"),
        (["topic", "delete", ".", "y/z"], "sluice: topic y/z: INVALID_TOPIC: invalid topic"),
        (["topic", "list", "--bootstrap", "h:port"], "sluice: --bootstrap: bad port in 'h:port'"),
    ],
)
def test_what_the_user_typed_wrong_is_bad_usage_at_once(args: list[str], message: str) -> None:
    """Exit 2 before any broker is asked (none listens at 127.0.0.1:1; a 60 s --timeout)."""
    full = [*args] if "--bootstrap" in args else [*args, "--bootstrap", "127.0.0.1:1"]
    result = CliRunner().invoke(app, [*full, "--timeout", "60"])
    assert result.exit_code == 2, (result.output, result.exception)
    assert message in result.stderr, result.stderr
