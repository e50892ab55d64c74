"""The operator's side of consumer groups, without a real broker.

- The reset plan (`plan_reset`, pure): every strategy, every clamp to [log start, high
  watermark].
- `sluice group ...` and `sluice consume --group` argument checks: bad usage exits 2 before
  any broker is asked (the bootstrap names a closed port).
- Output: the JSON shapes of the contract and the tables.
- The Admin group calls against scripted fake brokers on local sockets: which requests go
  where and how answers and errors become results. These check the client's side of the wire
  contract only; the real coordinator is exercised in tests/integration/test_cli_group.py.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable

import pytest
import trio
import typer
from rich.console import Console
from typer.testing import CliRunner

from broker.wire.errors import ErrorCode
from broker.wire.group_messages import (
    ADMIN_EPOCH,
    CommittedOffset,
    DeleteGroupsRequest,
    DeleteGroupsResponse,
    DescribedGroup,
    DescribedMember,
    DescribeGroupsRequest,
    DescribeGroupsResponse,
    FindCoordinatorRequest,
    FindCoordinatorResponse,
    GroupResult,
    ListedGroup,
    ListGroupsRequest,
    ListGroupsResponse,
    OffsetCommitRequest,
    OffsetCommitResponse,
    OffsetFetchRequest,
    OffsetFetchResponse,
    PartitionError,
    TopicErrors,
    TopicPartitions,
)
from broker.wire.messages import (
    EARLIEST_TIMESTAMP,
    LATEST_TIMESTAMP,
    BrokerInfo,
    ListOffsetsPartitionResult,
    ListOffsetsRequest,
    ListOffsetsResponse,
    ListOffsetsTopicResult,
    MetadataRequest,
    MetadataResponse,
    PartitionInfo,
    Response,
    TopicInfo,
)
from broker.wire.protocol import RequestHeader
from cli import group as cli_group
from cli.consume import consume
from cli.group import (
    DRY_RUN,
    description_json,
    format_partitions,
    iso_ms,
    listing_json,
    parse_datetime,
    parse_topics,
    plan_json,
    print_description,
    print_listing,
    print_plan,
    reset_spec,
)
from consumers.admin import (
    Admin,
    GroupDescription,
    GroupListing,
    GroupPartitionOffset,
    MemberDescription,
    OffsetReset,
    OffsetResetSpec,
    plan_reset,
)
from consumers.cluster import TopicPartition
from consumers.errors import GroupIdNotFoundError, NonEmptyGroupError, UnknownTopicError
from tests.support.fake_broker import Send, closed_port, serve

# --------------------------------------------------------------------------- the plan (pure)

TP = ("t", 0)


def plan(spec: OffsetResetSpec, committed: int | None, at: int | None = None) -> int:
    """The new offset of TP under `spec`, its log holding offsets [10, 50)."""
    reset = plan_reset(
        spec, TP, committed=committed, log_start=10, high_watermark=50, offset_at_time=at
    )
    assert (reset.topic, reset.partition, reset.current) == ("t", 0, committed)
    assert 10 <= reset.new <= 50
    return reset.new


def spec(strategy: str, value: int | None = None) -> OffsetResetSpec:
    return OffsetResetSpec(strategy=strategy, topics={"t": ()}, value=value)  # type: ignore[arg-type]


def test_to_earliest_and_to_latest_ignore_the_committed_offset() -> None:
    for committed in (None, 10, 30, 50):
        assert plan(spec("to_earliest"), committed) == 10
        assert plan(spec("to_latest"), committed) == 50


def test_to_offset_is_clamped_to_the_log() -> None:
    assert plan(spec("to_offset", 25), 40) == 25
    assert plan(spec("to_offset", 0), None) == 10  # below the log start (retention removed it)
    assert plan(spec("to_offset", 10), None) == 10
    assert plan(spec("to_offset", 50), 20) == 50  # the high watermark: nothing left to read
    assert plan(spec("to_offset", 999), 20) == 50


def test_to_datetime_takes_the_brokers_offset_for_the_time_clamped() -> None:
    assert plan(spec("to_datetime", 1_700_000_000_000), 45, at=20) == 20
    # No record at or after the time: the broker answers the log end.
    assert plan(spec("to_datetime", 1_700_000_000_000), 45, at=50) == 50
    assert plan(spec("to_datetime", 0), None, at=3) == 10
    with pytest.raises(ValueError, match="offset at the time"):
        plan(spec("to_datetime", 0), None)


def test_shift_by_moves_from_the_committed_offset_or_the_log_start() -> None:
    assert plan(spec("shift_by", -5), 30) == 25
    assert plan(spec("shift_by", 5), 30) == 35
    assert plan(spec("shift_by", 0), 30) == 30
    assert plan(spec("shift_by", -100), 30) == 10
    assert plan(spec("shift_by", 100), 30) == 50
    assert plan(spec("shift_by", 3), None) == 13  # nothing committed: from the log start
    assert plan(spec("shift_by", -3), None) == 10
    # A committed offset outside the log (records deleted since) is brought back into it.
    assert plan(spec("shift_by", 0), 2) == 10


def test_an_empty_log_plans_its_only_offset() -> None:
    for s in (spec("to_earliest"), spec("to_offset", 7), spec("shift_by", -1)):
        assert plan_reset(s, TP, committed=None, log_start=0, high_watermark=0).new == 0
    with pytest.raises(ValueError, match="log start"):
        plan_reset(spec("to_latest"), TP, committed=None, log_start=5, high_watermark=4)


@pytest.mark.parametrize(
    ("strategy", "value", "topics", "match"),
    [
        ("to_offset", None, {"t": ()}, "needs value"),
        ("shift_by", None, {"t": ()}, "needs value"),
        ("to_datetime", None, {"t": ()}, "needs value"),
        ("to_earliest", 3, {"t": ()}, "takes no value"),
        ("to_offset", -1, {"t": ()}, ">= 0"),
        ("to_datetime", -1, {"t": ()}, ">= 0"),
        ("to_somewhere", None, {"t": ()}, "unknown reset strategy"),
        ("to_latest", None, {}, "no topic"),
        ("to_latest", None, {"t": (-1,)}, "negative partition"),
    ],
)
def test_reset_spec_refuses_what_it_cannot_mean(
    strategy: str, value: int | None, topics: dict[str, tuple[int, ...]], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        OffsetResetSpec(strategy=strategy, topics=topics, value=value)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- argument parsing


def usage_error(fn: Callable[[], object]) -> None:
    with pytest.raises(typer.Exit) as caught:
        fn()
    assert caught.value.exit_code == 2


def test_parse_topics() -> None:
    assert parse_topics(["t"]) == {"t": ()}
    assert parse_topics(["t:2,0", "u:1"]) == {"t": (0, 2), "u": (1,)}
    assert parse_topics(["t:2", "t:0,2"]) == {"t": (0, 2)}  # the union
    assert parse_topics(["t:2", "t"]) == {"t": ()}  # the whole topic wins, in either order
    assert parse_topics(["t", "t:2"]) == {"t": ()}
    for bad in (["t:"], ["t:x"], ["t:1,,2"], [":1"], ["t:-1"]):
        usage_error(lambda bad=bad: parse_topics(bad))  # type: ignore[misc]
    usage_error(lambda: parse_topics([]))


def test_parse_datetime_needs_a_zone() -> None:
    assert parse_datetime("2026-12-06T10:00:00Z") == 1_796_551_200_000
    assert parse_datetime("2026-12-06T11:00:00+01:00") == 1_796_551_200_000
    assert parse_datetime("2026-12-06T10:00:00.250Z") == 1_796_551_200_250
    for bad in ("2026-12-06T10:00:00", "yesterday", "", "1960-01-01T00:00:00Z"):
        usage_error(lambda bad=bad: parse_datetime(bad))  # type: ignore[misc]


def test_reset_spec_takes_exactly_one_strategy() -> None:
    assert reset_spec(["t"], to_earliest=True) == OffsetResetSpec(
        strategy="to_earliest", topics={"t": ()}
    )
    assert reset_spec(["t:1"], shift_by=-4) == OffsetResetSpec(
        strategy="shift_by", topics={"t": (1,)}, value=-4
    )
    assert reset_spec(["t"], to_offset=0).value == 0  # 0 is a value, not "absent"
    assert reset_spec(["t"], to_datetime="1970-01-01T00:00:01Z").value == 1000
    usage_error(lambda: reset_spec(["t"]))
    usage_error(lambda: reset_spec(["t"], to_earliest=True, to_latest=True))
    usage_error(lambda: reset_spec(["t"], to_offset=3, shift_by=1))
    usage_error(lambda: reset_spec([], to_latest=True))


runner = CliRunner()
NOBODY = "127.0.0.1:1"
"""No broker listens there: a command that got past its argument checks would exit 1."""


def test_group_commands_refuse_bad_usage_with_exit_2() -> None:
    cases = [
        ["reset-offsets", "g", "--topic", "t"],
        ["reset-offsets", "g", "--topic", "t", "--to-earliest", "--to-latest"],
        ["reset-offsets", "g", "--topic", "t", "--to-offset", "5", "--shift-by", "-1"],
        ["reset-offsets", "g", "--to-earliest"],
        ["reset-offsets", "g", "--topic", "t:a", "--to-earliest"],
        ["reset-offsets", "g", "--topic", "t", "--to-offset", "-1"],
        ["reset-offsets", "g", "--topic", "t", "--to-datetime", "2026-12-06T10:00:00"],
        ["reset-offsets", "--topic", "t", "--to-earliest"],
        ["describe"],
        ["delete"],
        ["list", "--no-such-option"],
    ]
    for args in cases:
        result = runner.invoke(cli_group.app, [*args, "--bootstrap", NOBODY, "--timeout", "0"])
        assert result.exit_code == 2, (args, result.output)


def test_shift_by_takes_a_negative_number() -> None:
    """`--shift-by -5` reads -5 as the option's value (not as an unknown option): the run
    gets as far as the broker, which is not there (exit 1)."""
    result = runner.invoke(
        cli_group.app,
        ["reset-offsets", "g", "--topic", "t", "--shift-by", "-5", "--bootstrap", NOBODY,
         "--timeout", "0"],
    )  # fmt: skip
    assert result.exit_code == 1, result.output


def test_consume_group_options_refuse_bad_usage_with_exit_2() -> None:
    app = typer.Typer()
    app.command()(consume)
    for args in (
        ["t", "--group", "g", "--partition", "0"],
        ["t", "--session-timeout-ms", "5000"],
        ["t", "--group", "g", "--session-timeout-ms", "0"],
    ):
        result = runner.invoke(app, [*args, "--bootstrap", NOBODY, "--timeout", "0"])
        assert result.exit_code == 2, (args, result.output)


# --------------------------------------------------------------------------- output

MEMBER = MemberDescription(
    member_id="m-1",
    instance_id="worker-1",
    client_id="sluice-cli",
    client_host="10.0.0.7",
    member_epoch=4,
    topics=("t",),
    pattern=None,
    assignment=(("t", 0), ("t", 2), ("u", 1)),
    revoking=(("t", 1),),
)
DESC = GroupDescription(
    group_id="g",
    state="reconciling",
    assignor="uniform",
    group_epoch=5,
    members=(MEMBER,),
    rebalance_reason="member m-2 left",
    rebalance_time_ms=1_796_551_200_000,
    offsets=(
        GroupPartitionOffset("t", 0, 7, 10, 3),
        GroupPartitionOffset("t", 1, None, 4, None),
    ),
)


def test_helpers() -> None:
    assert iso_ms(1_796_551_200_000) == "2026-12-06T10:00:00.000Z"
    assert iso_ms(None) is None
    assert format_partitions([("u", 1), ("t", 2), ("t", 0)]) == "t:0,2 u:1"
    assert format_partitions([]) == ""


def test_json_shapes() -> None:
    listed = [GroupListing("a", "stable", 2), GroupListing("b", "empty", 0)]
    assert json.loads(json.dumps(listing_json(listed))) == [
        {"group_id": "a", "state": "stable", "members": 2},
        {"group_id": "b", "state": "empty", "members": 0},
    ]
    d = json.loads(json.dumps(description_json(DESC)))
    assert {k: v for k, v in d.items() if k not in ("members", "offsets")} == {
        "group_id": "g",
        "state": "reconciling",
        "assignor": "uniform",
        "group_epoch": 5,
        "rebalance_reason": "member m-2 left",
        "rebalance_time_ms": 1_796_551_200_000,
    }
    (m,) = d["members"]
    assert {k: m[k] for k in ("member_id", "instance_id", "client_id", "client_host")} == {
        "member_id": "m-1",
        "instance_id": "worker-1",
        "client_id": "sluice-cli",
        "client_host": "10.0.0.7",
    }
    assert m["member_epoch"] == 4
    assert m["assignment"] == [
        {"topic": "t", "partition": 0},
        {"topic": "t", "partition": 2},
        {"topic": "u", "partition": 1},
    ]
    assert d["offsets"] == [
        {"topic": "t", "partition": 0, "committed": 7, "high_watermark": 10, "lag": 3},
        {"topic": "t", "partition": 1, "committed": None, "high_watermark": 4, "lag": None},
    ]
    resets = [OffsetReset("t", 0, 7, 2), OffsetReset("t", 1, None, 0)]
    assert plan_json("g", resets, executed=False) == {
        "group_id": "g",
        "executed": False,
        "offsets": [
            {"topic": "t", "partition": 0, "current": 7, "new": 2},
            {"topic": "t", "partition": 1, "current": None, "new": 0},
        ],
    }


def rendered(fn: Callable[[Console], None]) -> list[list[str]]:
    """What `fn` prints, as lines of whitespace-separated words (table borders dropped)."""
    out = io.StringIO()
    fn(Console(file=out, width=200, force_terminal=False))
    lines = []
    for line in out.getvalue().splitlines():
        words = [w for w in line.replace("│", " ").replace("┃", " ").split() if w]
        if words and not set("".join(words)) <= set("━─┏┓┗┛┡┩└┘┳┻╇┼╋┃│┴┬├┤"):
            lines.append(words)
    return lines


def words(text: str) -> list[str]:
    return text.split()


def test_describe_table() -> None:
    lines = rendered(lambda c: print_description(DESC, c))
    assert lines[0] == words("group g: reconciling, assignor uniform, epoch 5, 1 member")
    assert lines[1] == words("last rebalance: 2026-12-06T10:00:00.000Z (member m-2 left)")
    assert ["MEMBER", "INSTANCE", "CLIENT", "HOST", "EPOCH", "PARTITIONS"] in lines
    assert words("m-1 worker-1 sluice-cli 10.0.0.7 4 t:0,2 u:1 (revoking t:1)") in lines
    assert ["TOPIC", "PARTITION", "COMMITTED", "HIGH-WATERMARK", "LAG"] in lines
    assert ["t", "0", "7", "10", "3"] in lines
    assert ["t", "1", "-", "4", "-"] in lines
    empty = GroupDescription("e", "empty", "", 0, (), "", None, ())
    lines = rendered(lambda c: print_description(empty, c))
    assert lines[0] == words("group e: empty, assignor -, epoch 0, 0 members")
    assert not any(line[0] == "MEMBER" for line in lines)


def test_list_table_prints_ids_literally() -> None:
    groups = [GroupListing("team[bold]x[/bold]", "stable", 3), GroupListing("b", "empty", 0)]
    lines = rendered(lambda c: print_listing(groups, c))
    assert lines == [
        ["GROUP", "STATE", "MEMBERS"],
        ["team[bold]x[/bold]", "stable", "3"],
        ["b", "empty", "0"],
    ]


def test_plan_table() -> None:
    lines = rendered(lambda c: print_plan([OffsetReset("t", 0, None, 5)], c))
    assert lines == [["TOPIC", "PARTITION", "CURRENT", "NEW"], ["t", "0", "-", "5"]]
    assert "--execute" in DRY_RUN and DRY_RUN.startswith("dry run: nothing changed")


# --------------------------------------------------------------------------- Admin vs fakes


def member(member_id: str, assigned: dict[str, tuple[int, ...]]) -> DescribedMember:
    return DescribedMember(
        member_id=member_id,
        instance_id=None,
        client_id="c",
        client_host="127.0.0.1",
        member_epoch=3,
        topics=tuple(assigned),
        pattern=None,
        assignment=tuple(TopicPartitions(topic=t, partitions=ps) for t, ps in assigned.items()),
        revoking=(),
    )


class FakeCoordinator:
    """A scripted broker that leads every partition and coordinates every group.

    `logs`: topic -> per partition (log start, high watermark); `at_time`: LIST_OFFSETS'
    answer for a timestamp; `groups`: group id -> its description (absent: unknown);
    `committed`: group id -> offsets. It answers a group-level NOT_COORDINATOR to the next
    `not_coordinator` DESCRIBE_GROUPS, and records every request it gets in `asked`."""

    def __init__(self, node_id: int = 0) -> None:
        self.node_id = node_id
        self.ports: dict[int, int] = {}
        self.logs: dict[str, list[tuple[int, int]]] = {}
        self.at_time: dict[TopicPartition, int] = {}
        self.groups: dict[str, DescribedGroup] = {}
        self.listed: tuple[ListedGroup, ...] = ()
        self.committed: dict[str, dict[TopicPartition, int]] = {}
        self.not_coordinator = 0
        self.asked: list[object] = []

    async def start(self, nursery: trio.Nursery, others: dict[int, int] | None = None) -> str:
        port = await serve(nursery, self.handle)
        self.ports = {self.node_id: port, **(others or {})}
        return f"127.0.0.1:{port}"

    async def handle(self, header: RequestHeader, request: object, send: Send) -> None:
        self.asked.append(request)
        await send(header.correlation_id, ErrorCode.NONE, None, self.answer(request))

    def answer(self, request: object) -> Response:
        if isinstance(request, MetadataRequest):
            return self.metadata(request)
        if isinstance(request, FindCoordinatorRequest):
            port = self.ports[self.node_id]
            return FindCoordinatorResponse(
                node_id=self.node_id, host="127.0.0.1", port=port, partition=0
            )
        if isinstance(request, ListGroupsRequest):
            return ListGroupsResponse(groups=self.listed)
        if isinstance(request, DescribeGroupsRequest):
            return DescribeGroupsResponse(groups=tuple(self.describe(g) for g in request.group_ids))
        if isinstance(request, OffsetFetchRequest):
            offsets = self.committed.get(request.group_id, {})
            return OffsetFetchResponse(
                offsets=tuple(
                    CommittedOffset(topic=t, partition=p, offset=o)
                    for (t, p), o in sorted(offsets.items())
                )
            )
        if isinstance(request, ListOffsetsRequest):
            return self.list_offsets(request)
        if isinstance(request, OffsetCommitRequest):
            return self.commit(request)
        if isinstance(request, DeleteGroupsRequest):
            return DeleteGroupsResponse(groups=tuple(self.delete(g) for g in request.group_ids))
        raise AssertionError(f"unexpected {request!r}")

    def metadata(self, request: MetadataRequest) -> MetadataResponse:
        names = sorted(self.logs) if request.topics is None else request.topics
        topics = []
        for name in names:
            if name not in self.logs:
                topics.append(TopicInfo(name=name, error=ErrorCode.UNKNOWN_TOPIC_OR_PARTITION))
                continue
            parts = tuple(
                PartitionInfo(partition=p, leader=self.node_id, leader_term=1, replicas=(0,))
                for p in range(len(self.logs[name]))
            )
            topics.append(TopicInfo(name=name, partitions=parts, replication_factor=1))
        return MetadataResponse(
            cluster_id="c",
            controller=0,
            brokers=tuple(
                BrokerInfo(id=i, host="127.0.0.1", port=p) for i, p in sorted(self.ports.items())
            ),
            topics=tuple(topics),
        )

    def describe(self, group_id: str) -> DescribedGroup:
        if self.not_coordinator:
            self.not_coordinator -= 1
            return DescribedGroup(group_id=group_id, error=ErrorCode.NOT_COORDINATOR)
        return self.groups.get(group_id) or DescribedGroup(
            group_id=group_id, error=ErrorCode.GROUP_ID_NOT_FOUND
        )

    def list_offsets(self, request: ListOffsetsRequest) -> ListOffsetsResponse:
        results = []
        for t in request.topics:
            parts = []
            for p in t.partitions:
                start, high = self.logs[t.name][p.partition]
                if p.timestamp == EARLIEST_TIMESTAMP:
                    offset = start
                elif p.timestamp == LATEST_TIMESTAMP:
                    offset = high
                else:
                    offset = self.at_time.get((t.name, p.partition), high)
                parts.append(ListOffsetsPartitionResult(partition=p.partition, offset=offset))
            results.append(ListOffsetsTopicResult(name=t.name, partitions=tuple(parts)))
        return ListOffsetsResponse(topics=tuple(results))

    def commit(self, request: OffsetCommitRequest) -> OffsetCommitResponse:
        group = self.groups.get(request.group_id)
        busy = group is not None and bool(group.members)
        error = ErrorCode.NON_EMPTY_GROUP if busy else ErrorCode.NONE
        if not busy:
            offsets = self.committed.setdefault(request.group_id, {})
            for t in request.topics:
                for p in t.partitions:
                    offsets[(t.topic, p.partition)] = p.offset
        return OffsetCommitResponse(
            topics=tuple(
                TopicErrors(
                    topic=t.topic,
                    partitions=tuple(
                        PartitionError(partition=p.partition, error=error) for p in t.partitions
                    ),
                )
                for t in request.topics
            )
        )

    def delete(self, group_id: str) -> GroupResult:
        group = self.groups.get(group_id)
        if group is None:
            return GroupResult(group_id=group_id, error=ErrorCode.GROUP_ID_NOT_FOUND)
        if group.members:
            return GroupResult(group_id=group_id, error=ErrorCode.NON_EMPTY_GROUP)
        del self.groups[group_id]
        self.committed.pop(group_id, None)
        return GroupResult(group_id=group_id, error=ErrorCode.NONE)

    def count(self, kind: type) -> int:
        return sum(isinstance(r, kind) for r in self.asked)


async def test_list_groups_merges_every_broker_and_skips_one_that_is_down(
    nursery: trio.Nursery,
) -> None:
    a, b = FakeCoordinator(0), FakeCoordinator(1)
    a.listed = (ListedGroup(group_id="g2", state="stable", members=2),
                ListedGroup(group_id="g1", state="empty", members=0))  # fmt: skip
    b.listed = (ListedGroup(group_id="g1", state="empty", members=0),
                ListedGroup(group_id="g0", state="reconciling", members=1))  # fmt: skip
    down = await closed_port()
    b_port = await serve(nursery, b.handle)
    bootstrap = await a.start(nursery, {1: b_port, 2: down})
    b.ports = dict(a.ports)
    async with Admin(bootstrap, timeout_s=5) as admin:
        groups = await admin.list_groups()
    assert groups == [
        GroupListing("g0", "reconciling", 1),
        GroupListing("g1", "empty", 0),
        GroupListing("g2", "stable", 2),
    ]
    assert a.count(ListGroupsRequest) == 1 and b.count(ListGroupsRequest) == 1


async def test_describe_group_reports_members_offsets_and_lag(nursery: trio.Nursery) -> None:
    fake = FakeCoordinator()
    fake.logs = {"t": [(0, 10), (2, 7)], "other": [(0, 5)]}
    fake.groups["g"] = DescribedGroup(
        group_id="g",
        state="stable",
        assignor="range",
        group_epoch=6,
        members=(member("m-b", {"t": (1,)}), member("m-a", {"t": (0,)})),
        rebalance_reason="member m-b joined",
        rebalance_time_ms=-1,
    )
    fake.committed["g"] = {("t", 0): 4, ("gone", 0): 3}
    bootstrap = await fake.start(nursery)
    async with Admin(bootstrap, timeout_s=5) as admin:
        d = await admin.describe_group("g")
        assert await admin.group_offsets("g") == {("t", 0): 4, ("gone", 0): 3}
    assert (d.group_id, d.state, d.assignor, d.group_epoch) == ("g", "stable", "range", 6)
    assert d.rebalance_time_ms is None and d.rebalance_reason == "member m-b joined"
    assert [m.member_id for m in d.members] == ["m-a", "m-b"]
    assert d.members[1].assignment == (("t", 1),)
    assert d.offsets == (
        GroupPartitionOffset("gone", 0, 3, None, None),  # its topic was deleted
        GroupPartitionOffset("t", 0, 4, 10, 6),
        GroupPartitionOffset("t", 1, None, 7, None),
    )


async def test_describe_unknown_group_fails_at_once(nursery: trio.Nursery) -> None:
    fake = FakeCoordinator()
    bootstrap = await fake.start(nursery)
    async with Admin(bootstrap, timeout_s=5) as admin:
        with pytest.raises(GroupIdNotFoundError, match="no group 'nope'"):
            await admin.describe_group("nope")
    assert fake.count(DescribeGroupsRequest) == 1


async def test_a_group_level_not_coordinator_is_retried_after_finding_it_again(
    nursery: trio.Nursery,
) -> None:
    fake = FakeCoordinator()
    fake.groups["g"] = DescribedGroup(group_id="g", state="empty")
    fake.not_coordinator = 2
    bootstrap = await fake.start(nursery)
    async with Admin(bootstrap, timeout_s=5) as admin:
        assert (await admin.describe_group("g")).state == "empty"
    assert fake.count(DescribeGroupsRequest) == 3
    assert fake.count(FindCoordinatorRequest) == 3


async def test_reset_plan_then_execute_commits_as_an_operator(nursery: trio.Nursery) -> None:
    fake = FakeCoordinator()
    fake.logs = {"t": [(2, 10), (0, 4), (0, 9)]}
    fake.at_time = {("t", 0): 6, ("t", 2): 1}
    fake.groups["g"] = DescribedGroup(group_id="g", state="empty")
    fake.committed["g"] = {("t", 0): 8}
    bootstrap = await fake.start(nursery)
    async with Admin(bootstrap, timeout_s=5) as admin:
        shift = OffsetResetSpec(strategy="shift_by", topics={"t": (0, 1)}, value=-3)
        resets = await admin.reset_offsets_plan("g", shift)
        assert resets == [OffsetReset("t", 0, 8, 5), OffsetReset("t", 1, None, 0)]
        assert fake.count(OffsetCommitRequest) == 0  # planning changes nothing
        at = OffsetResetSpec(strategy="to_datetime", topics={"t": ()}, value=1_000)
        assert await admin.reset_offsets_plan("g", at) == [
            OffsetReset("t", 0, 8, 6),
            OffsetReset("t", 1, None, 4),  # nothing at or after the time: the log end
            OffsetReset("t", 2, None, 1),
        ]
        await admin.reset_offsets("g", resets)
        assert await admin.group_offsets("g") == {("t", 0): 5, ("t", 1): 0}
        # A group nobody has used yet: nothing committed, a plan all the same.
        fresh = await admin.reset_offsets_plan("new", OffsetResetSpec(
            strategy="to_latest", topics={"t": (2,)}))  # fmt: skip
        assert fresh == [OffsetReset("t", 2, None, 9)]
        with pytest.raises(UnknownTopicError, match="no partition 3,7"):
            await admin.reset_offsets_plan("g", OffsetResetSpec(
                strategy="to_earliest", topics={"t": (0, 3, 7)}))  # fmt: skip
        with pytest.raises(UnknownTopicError, match="no topic 'nope'"):
            await admin.reset_offsets_plan("g", OffsetResetSpec(
                strategy="to_earliest", topics={"nope": ()}))  # fmt: skip
    (commit,) = [r for r in fake.asked if isinstance(r, OffsetCommitRequest)]
    assert (commit.group_id, commit.member_id, commit.member_epoch) == ("g", "", ADMIN_EPOCH)
    assert [(p.partition, p.offset) for t in commit.topics for p in t.partitions] == [
        (0, 5),
        (1, 0),
    ]


async def test_reset_and_delete_refuse_a_group_with_members(nursery: trio.Nursery) -> None:
    fake = FakeCoordinator()
    fake.logs = {"t": [(0, 10)]}
    fake.groups["busy"] = DescribedGroup(
        group_id="busy",
        state="stable",
        members=(member("m-1", {"t": (0,)}), member("m-2", {})),
    )
    fake.groups["idle"] = DescribedGroup(group_id="idle", state="empty")
    fake.committed["idle"] = {("t", 0): 1}
    bootstrap = await fake.start(nursery)
    async with Admin(bootstrap, timeout_s=5) as admin:
        with pytest.raises(NonEmptyGroupError, match="2 live members"):
            await admin.reset_offsets("busy", [OffsetReset("t", 0, None, 0)])
        assert fake.count(OffsetCommitRequest) == 0
        with pytest.raises(NonEmptyGroupError, match="live members"):
            await admin.delete_group("busy")
        with pytest.raises(GroupIdNotFoundError, match="no group 'nope'"):
            await admin.delete_group("nope")
        await admin.delete_group("idle")
        assert "idle" not in fake.groups and await admin.group_offsets("idle") == {}
