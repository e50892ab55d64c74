"""What tracing and metrics scraping cost the data path.

Run with `python -m tests.bench.tracing_bench` (`--help` lists the flags). A benchmark: it
prints figures and never asserts timing.

1. Tracing: `sluice bench produce` (its own process, 100-byte records, 4 partitions) against
   one broker (RF 1), with the broker and the client both configured only by the standard
   OTEL_* variables: tracing off (no variable), sampling 1% (`parentbased_traceidratio`, 0.01)
   and 100% (`parentbased_always_on`), every span exported over OTLP/HTTP to a real receiver
   (tests/support/otlp_receiver.py, in this process, decoding every export). The modes are
   alternated over `--rounds` rounds on fresh brokers; the figure is each mode's median
   records/s and its cost relative to tracing off.
2. Scraping: the same produce run with nothing scraping, and with `GET /metrics` every
   second (a Prometheus default is 15 s: this is 15 times as often) from a thread of this
   process; plus the scrape's own latency and size.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from tests.support.harness import BrokerProcess
from tests.support.otlp_receiver import OtlpReceiver, otlp_receiver
from tests.support.sluice_cli import sluice_command

ROOT = Path(__file__).resolve().parents[2]


def produce(bootstrap: str, records: int, env: dict[str, str]) -> float:
    """records/s of one `sluice bench produce` run."""
    done = subprocess.run(
        sluice_command(
            "bench", "produce", "--records", str(records), "--partitions", "4",
            "--replication-factor", "1", "--bootstrap", bootstrap, "--json",
        ),
        cwd=ROOT, env={**os.environ, **env}, capture_output=True, check=True,
    )  # fmt: skip
    return float(json.loads(done.stdout)["records_per_s"])


def tracing_env(receiver: OtlpReceiver, mode: str, service: str) -> dict[str, str]:
    if mode == "off":
        return {}
    env = {**receiver.env(service), "OTEL_BSP_SCHEDULE_DELAY": "1000"}
    if mode == "1%":
        env["OTEL_TRACES_SAMPLER"] = "parentbased_traceidratio"
        env["OTEL_TRACES_SAMPLER_ARG"] = "0.01"
    return env


def with_broker(base: Path, env: dict[str, str], run: Callable[[BrokerProcess], float]) -> float:
    broker = BrokerProcess(base, env=env)
    broker.start()
    try:
        broker.wait_ready()
        return run(broker)
    finally:
        broker.kill()


class Scraper:
    """GET /metrics every `every_s` seconds from a thread: latencies and sizes."""

    def __init__(self, url: str, every_s: float) -> None:
        self.url, self.every_s = url, every_s
        self.latencies: list[float] = []
        self.sizes: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            began = time.perf_counter()
            with urllib.request.urlopen(self.url, timeout=5) as answer:
                body = answer.read()
            self.latencies.append(time.perf_counter() - began)
            self.sizes.append(len(body))

    def __enter__(self) -> Scraper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=300_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--modes", default="off,1%,100%", help="tracing modes to compare (off, 1%%, 100%%)"
    )
    ap.add_argument("--no-scrape", action="store_true", help="skip the /metrics comparison")
    args = ap.parse_args()
    print(f"machine: {platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    modes = tuple(args.modes.split(","))
    figures: dict[str, list[float]] = {m: [] for m in modes}
    scraped: dict[str, list[float]] = {"none": [], "1 s": []}
    latencies: list[float] = []
    sizes: list[int] = []
    with otlp_receiver() as receiver, tempfile.TemporaryDirectory() as tmp:
        n = 0
        for r in range(args.rounds):
            for mode in modes if r % 2 == 0 else tuple(reversed(modes)):
                n += 1
                rate = with_broker(
                    Path(tmp) / f"t{n}",
                    tracing_env(receiver, mode, "sluice-broker"),
                    lambda b, m=mode: produce(
                        b.bootstrap, args.records, tracing_env(receiver, m, "bench")
                    ),
                )
                figures[mode].append(rate)
                print(f"round {r + 1} tracing {mode:>4}: {rate:,.0f} records/s", flush=True)
            for scrape in (
                () if args.no_scrape else ("none", "1 s") if r % 2 == 0 else ("1 s", "none")
            ):
                n += 1

                def run(b: BrokerProcess, scrape: str = scrape) -> float:
                    if scrape == "none":
                        return produce(b.bootstrap, args.records, {})
                    with Scraper(f"http://127.0.0.1:{b.http_port}/metrics", 1.0) as s:
                        rate = produce(b.bootstrap, args.records, {})
                    latencies.extend(s.latencies)
                    sizes.extend(s.sizes)
                    return rate

                rate = with_broker(Path(tmp) / f"s{n}", {}, run)
                scraped[scrape].append(rate)
                print(f"round {r + 1} scrape {scrape:>4}: {rate:,.0f} records/s", flush=True)
        spans = len(receiver.snapshot())
    base = statistics.median(figures[modes[0]])
    print(f"\nproduce, 100-byte records, {args.records:,} per run, medians of {args.rounds}:")
    for mode in modes:
        med = statistics.median(figures[mode])
        print(f"  tracing {mode:>4}: {med:,.0f} records/s ({(1 - med / base) * 100:+.1f}% cost)")
    print(f"  spans received: {spans:,}")
    if args.no_scrape:
        return
    none = statistics.median(scraped["none"])
    every = statistics.median(scraped["1 s"])
    print(
        f"  no scrape: {none:,.0f} records/s; /metrics every 1 s: {every:,.0f} records/s "
        f"({(1 - every / none) * 100:+.1f}% cost)"
    )
    if latencies:
        latencies.sort()
        print(
            f"  scrape: median {statistics.median(latencies) * 1000:.1f} ms, "
            f"max {latencies[-1] * 1000:.1f} ms, {statistics.median(sizes):,.0f} bytes, "
            f"{len(latencies)} scrapes"
        )


if __name__ == "__main__":
    main()
