"""Large records against the disk's own sequential rate, with and without payload segments.

Run with `python -m tests.bench.large_bench` (`--help` for flags). A benchmark: it prints
figures and never asserts them. Rounds alternate, so the ratios hold while the disk's rate
drifts (this machine's disk gives a burst, then a lower sustained rate):
- `disk`: `--mib` MiB written in 1 MiB `os.write`s, each followed by `os.fdatasync`, in a file
  beside the brokers' data (the disk's sequential rate with an fsync per MiB);
- per mode, a fresh single broker (RF 1) and `sluice bench produce` of `--mib` MiB in
  `--record-size` records to a 1-partition topic; modes: `segments` (the default
  `external_payload_bytes`: payloads in append-only segment files) and `rocksdb`
  (`external_payload_bytes = 0`: payloads in RocksDB, which writes them twice).
Printed per round: MiB/s, the ratio to the disk round just before it, and the bytes the
broker process wrote to the disk per byte produced (/proc/PID/io).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from tests.bench.cluster_bench import sluice
from tests.support.harness import BrokerProcess

MODES: dict[str, dict[str, object]] = {
    "segments": {},
    "rocksdb": {"external_payload_bytes": 0},
}


def disk_rate(directory: Path, mib: int) -> float:
    """MiB/s of 1 MiB writes each followed by fdatasync."""
    chunk = os.urandom(1 << 20)
    path = directory / "disk-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        start = time.perf_counter()
        for _ in range(mib):
            os.write(fd, chunk)
            os.fdatasync(fd)
        elapsed = time.perf_counter() - start
    finally:
        os.close(fd)
        path.unlink()
    return mib / elapsed


def write_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def produce_rate(base: Path, mode: str, mib: int, record_size: int) -> tuple[float, float]:
    """(MiB/s produced, bytes written to disk per byte produced) on a fresh broker."""
    base.mkdir(parents=True, exist_ok=True)
    broker = BrokerProcess(base / mode, config=dict(MODES[mode]))
    broker.start()
    try:
        broker.wait_ready()
        assert broker.proc is not None
        before = write_bytes(broker.proc.pid)
        records = mib * (1 << 20) // record_size
        r = sluice(
            "bench", "produce",
            "--bootstrap", broker.bootstrap,
            "--topic", "large",
            "--partitions", "1",
            "--record-size", str(record_size),
            "--records", str(records),
        )  # fmt: skip
        written = write_bytes(broker.proc.pid) - before
        produced = records * record_size
        return r["records_per_s"] * record_size / (1 << 20), written / produced
    finally:
        broker.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--mib", type=int, default=600, help="MiB per run")
    ap.add_argument("--record-size", type=int, default=100 << 10)
    ap.add_argument("--modes", default="segments,rocksdb")
    args = ap.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    for m in modes:
        if m not in MODES:
            ap.error(f"unknown mode {m!r} (known: {', '.join(MODES)})")
    rates: dict[str, list[float]] = {m: [] for m in modes}
    ratios: dict[str, list[float]] = {m: [] for m in modes}
    disks: list[float] = []
    print(f"{args.record_size}-byte records, RF 1, {args.mib} MiB per run")
    with tempfile.TemporaryDirectory(dir=Path.cwd(), prefix=".large-bench-") as tmp:
        base = Path(tmp)
        for rnd in range(args.rounds):
            for mode in modes:
                disk = disk_rate(base, args.mib)
                disks.append(disk)
                rate, amplification = produce_rate(base / f"r{rnd}", mode, args.mib,
                                                   args.record_size)  # fmt: skip
                rates[mode].append(rate)
                ratios[mode].append(rate / disk)
                print(
                    f"round {rnd + 1} disk {disk:6.0f} MiB/s | {mode:8s} {rate:6.1f} MiB/s "
                    f"= {rate / disk:4.2f} of the disk; {amplification:4.2f} bytes written "
                    "per byte produced",
                    flush=True,
                )
    print(f"disk median {statistics.median(disks):.0f} MiB/s")
    for mode in modes:
        print(
            f"{mode:8s} median {statistics.median(rates[mode]):6.1f} MiB/s, "
            f"{statistics.median(ratios[mode]):4.2f} of the disk (aim: at least 0.5)"
        )


if __name__ == "__main__":
    main()
