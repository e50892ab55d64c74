"""A user's script outside the repository, type-checked with `mypy --strict` against Sluice
installed as a user installs it (a built wheel, not this checkout): the package ships
`py.typed`, so calls into `consumers` are checked, not waved through as `Any`."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

from tests.support.sluice_cli import ROOT

GOOD = """
    from __future__ import annotations

    import trio

    import consumers
    from consumers import (
        Admin,
        Consumer,
        ConsumerRecord,
        Delivery,
        ErrorCode,
        NotEnoughReplicasError,
        OffsetAndTimestamp,
        Producer,
        RecordMetadata,
        SluiceError,
        TopicPartition,
        UnknownTopicError,
    )
    from consumers import blocking


    def on_done(d: Delivery) -> None:
        print(d.done)


    async def main(bootstrap: str) -> None:
        async with Admin(bootstrap, timeout_ms=5_000) as a:
            await a.create_topic("events")
            await a.create_topic("orders", partitions=4, replication_factor=1, timeout_ms=2_000)
        async with Producer(bootstrap, linger_ms=2, delivery_timeout_ms=10_000) as p:
            md: RecordMetadata = await p.send_and_wait(
                "events", b"v", key=b"k", headers=[("h", b"1")]
            )
            delivery = await p.send("events", b"w", partition=md.partition)
            delivery.add_done_callback(on_done)
            again: RecordMetadata = await delivery
            print(again.offset + 1)
        async with Consumer(bootstrap, group_id="g", auto_offset_reset="latest") as c:
            tp: TopicPartition = ("events", md.partition)
            c.assign([tp])
            starts: dict[TopicPartition, int] = await c.beginning_offsets([tp])
            ends: dict[TopicPartition, int] = await c.end_offsets([tp])
            found = await c.offsets_for_times({tp: 1_700_000_000_000})
            hit: OffsetAndTimestamp | None = found[tp]
            if hit is not None:
                c.seek(tp, hit.offset)
            c.pause([tp])
            c.resume([tp])
            records: list[ConsumerRecord] = await c.poll(timeout_ms=500, max_records=10)
            older: list[ConsumerRecord] = await c.poll(timeout=0.5)
            print(starts[tp] <= ends[tp], [r.value for r in records + older])


    def plain(bootstrap: str) -> None:
        with blocking.Producer(bootstrap) as p:
            d = p.send_nowait("events", b"x")
            print(d.wait().offset)
        with blocking.Consumer(bootstrap) as c:
            c.assign([("events", 0)])
            ends = c.end_offsets([("events", 0)])
            print(ends, c.poll(timeout_ms=100))
        admin = blocking.Admin(bootstrap)
        try:
            print([t.name for t in admin.list_topics()])
        finally:
            admin.close()


    try:
        trio.run(main, "127.0.0.1:9092")
        plain("127.0.0.1:9092")
    except UnknownTopicError as e:
        code: ErrorCode = e.code
        print(code.name, e.retriable)
    except (NotEnoughReplicasError, consumers.BrokerUnavailableError) as e:
        print(e.message)
    except SluiceError as e:
        print(repr(e))
"""

BAD = """
    from consumers import Consumer, Producer


    async def main() -> None:
        async with Producer("127.0.0.1:9092") as p:
            await p.send_and_wait("events", "a str, not bytes")
            md = await p.send_and_wait("events", b"v")
            print(md.offset + "1")
        async with Consumer("127.0.0.1:9092") as c:
            c.assign(["events"])
"""


def _copy_of_the_project(destination: Path) -> Path:
    """What a source distribution holds, copied out of the checkout: setuptools builds in the
    source tree (`build/`, `*.egg-info`), which must stay clean, and a stale `build/` there
    could put removed modules into the wheel."""
    destination.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, destination / name)
    for package in ("broker", "consumers", "cli"):
        shutil.copytree(
            ROOT / package, destination / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    return destination


def _install_as_a_user(target: Path) -> Path:
    """A fresh virtualenv holding Sluice built from this checkout as a wheel (not an editable
    install); the dependencies are visible through a path entry on this interpreter's
    site-packages. Returns the virtualenv's python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(target)], check=True)
    python = target / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    source = _copy_of_the_project(target.parent / "source")
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check"),
            *("--no-deps", "--no-build-isolation", "--target", site, str(source)),
        ],
        check=True,
        capture_output=True,
        cwd=target,
    )
    assert (Path(site) / "consumers" / "py.typed").is_file()
    (Path(site) / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def _mypy(python: Path, script: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            *(sys.executable, "-m", "mypy", "--strict", "--no-incremental"),
            *("--python-executable", str(python), script.name),
        ],
        cwd=script.parent,
        capture_output=True,
        text=True,
    )


def test_a_users_script_type_checks_against_the_installed_package(tmp_path: Path) -> None:
    python = _install_as_a_user(tmp_path / "venv")
    project = tmp_path / "user-project"
    project.mkdir()
    good = project / "app.py"
    good.write_text(textwrap.dedent(GOOD))
    r = _mypy(python, good)
    assert r.returncode == 0, r.stdout + r.stderr

    bad = project / "broken.py"
    bad.write_text(textwrap.dedent(BAD))
    r = _mypy(python, bad)
    assert r.returncode == 1, r.stdout + r.stderr
    out = r.stdout
    assert 'Argument 2 to "send_and_wait" of "Producer" has incompatible type "str"' in out, out
    assert 'Unsupported operand types for + ("int" and "str")' in out, out
    assert 'List item 0 has incompatible type "str"; expected "tuple[str, int]"' in out, out
    assert "import-untyped" not in out and "import-not-found" not in out, out
