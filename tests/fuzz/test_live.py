"""A live broker process survives structured fuzzing of its client and peer ports intact.

One bounded run of `tests.fuzz.live` (about 20,000 client frames and 5,000 peer frames over
8 + 4 connections; see that module for what is sent and checked): the broker keeps running,
its RSS stays under its baseline + `request_budget_bytes` + 64 MiB, a normal producer and an
ApiVersions probe are served throughout, every acknowledged record reads back unchanged at
its offset, a produce/fetch round trip works afterwards, it answers and closes exactly as its
own decoders say it must, lets go of closed connections and of their byte budgets, and logs
no error.

Environment: SLUICE_FUZZ_SEED (the seed, printed with the command that replays the run),
SLUICE_FUZZ_FRAMES (frames in all; `make soak` runs a million through the module's CLI).
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.fuzz.live import Options, run

SEED = int(os.environ.get("SLUICE_FUZZ_SEED", "20261205"))
FRAMES = int(os.environ.get("SLUICE_FUZZ_FRAMES", "15000"))


async def test_fuzz_live(tmp_path: Path) -> None:
    options = Options(
        seed=SEED,
        frames=FRAMES,
        connections=8,
        peer_connections=4,
        allow=frozenset(),
        progress_s=30.0 if FRAMES > 100_000 else 0.0,
    )
    report = await run(options, tmp_path)
    print(report.summary())
    assert report.ok, report.summary()
